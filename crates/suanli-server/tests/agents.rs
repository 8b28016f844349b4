//! The agent protocol against a real server: registration, dispatch, fencing, signed and
//! de-duplicated usage, metered settlement, lost agents and the exchange's self-suspicion.
//! The agent side is driven by hand here, with a real ed25519 key; `suanli agent` itself is
//! tested end to end in the `suanli` crate.

mod common;

use std::time::Duration;

use common::{spawn_app, spawn_app_with, App, Org};
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{json, Value};
use suanli_api::*;
use suanli_client::Method;

struct FakeAgentKey(SigningKey);

impl FakeAgentKey {
    fn new(seed: u8) -> Self {
        FakeAgentKey(SigningKey::from_bytes(&[seed; 32]))
    }
    fn public_hex(&self) -> String {
        self.0
            .verifying_key()
            .to_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
    fn sign(&self, job: &str, attempt: &str, seq: u64, unit_ms: u64) -> String {
        let msg = usage_message(job, attempt, seq, unit_ms, Some(10), Some(64));
        self.0
            .sign(msg.as_bytes())
            .to_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

async fn post(org: &Org, path: &str, body: Value) -> (u16, Value) {
    org.client
        .raw(Method::POST, &format!("/api/v1{path}"), Some(body), None)
        .await
        .unwrap()
}

async fn register(provider: &Org, key: &FakeAgentKey, name: &str) -> Value {
    let (s, agent) = post(
        provider,
        "/agents",
        json!({
            "name": name, "zone": "wuqing-core", "public_key_hex": key.public_hex(), "backend": "local",
            "isolation": "test", "version": "0.1.0",
            "nodes": [{"name": name, "cpus": 8, "memory_mib": 16384}]
        }),
    )
    .await;
    assert_eq!(s, 201, "{agent}");
    agent
}

/// A provider whose agent registered, an offer of its pool at 3.6 CNY per vCPU-hour (1,000 micros
/// per vCPU-second), and a funded consumer.
async fn agent_market(app: &App) -> (Org, FakeAgentKey, Value, Offer, Org) {
    let provider = app.admit("Compute center", OrgKind::Provider).await;
    let key = FakeAgentKey::new(7);
    let agent = register(&provider, &key, "node-a").await;
    let offer = provider
        .client
        .create_offer(
            &CreateOfferRequest {
                pool_id: agent["pool_id"].as_str().unwrap().into(),
                class: "general".into(),
                cpus_per_unit: None,
                memory_mib_per_unit: 1024,
                price_micros_per_unit_hour: 3_600_000,
                min_units: None,
                max_units: Some(8),
                valid_from: None,
                valid_until: None,
            },
            None,
        )
        .await
        .unwrap();
    let consumer = app.admit("Lab", OrgKind::Consumer).await;
    app.fund(&consumer, 1_000).await;
    (provider, key, agent, offer, consumer)
}

async fn lease_and_job(
    consumer: &Org,
    offer: &Offer,
    auto_end: bool,
    restartable: bool,
) -> (Lease, Job) {
    let lease = consumer
        .client
        .purchase(
            &PurchaseRequest {
                offer_id: offer.id.clone(),
                units: 2,
                duration_limit_s: 600,
                max_price_micros_per_unit_hour: None,
                auto_end,
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(lease.billing, "metered");
    let (s, job) = post(
        consumer,
        &format!("/leases/{}/jobs", lease.id),
        json!({"task": {"name": "train", "run": "echo hi", "restartable": restartable}}),
    )
    .await;
    assert_eq!(s, 201, "{job}");
    (lease, serde_json::from_value(job).unwrap())
}

async fn poll_one(provider: &Org, agent_id: &str) -> Assignment {
    let (s, r) = post(
        provider,
        &format!("/agents/{agent_id}/poll"),
        json!({"wait_ms": 5000}),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    let r: PollResponse = serde_json::from_value(r).unwrap();
    assert_eq!(r.assignments.len(), 1, "one job was queued");
    r.assignments.into_iter().next().unwrap()
}

#[tokio::test]
async fn a_job_runs_is_metered_once_and_settles_its_lease() {
    let app = spawn_app().await;
    let (provider, key, agent, offer, consumer) = agent_market(&app).await;
    let agent_id = agent["id"].as_str().unwrap();
    let (lease, job) = lease_and_job(&consumer, &offer, true, false).await;
    assert_eq!(job.state, "queued");
    // Issue 16: the pool of a live agent says so (it said false while its agent was alive).
    let pool = provider
        .client
        .get_pool(agent["pool_id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!((pool.agent_connected, pool.agents), (true, 1));

    let a = poll_one(&provider, agent_id).await;
    assert_eq!(
        (a.job_id.as_str(), a.units, a.cpus),
        (job.id.as_str(), 2, 2)
    );
    assert_eq!(a.task.run, "echo hi");
    let base = format!("/agents/{agent_id}/attempts/{}", a.attempt_id);
    let (s, j) = post(
        &provider,
        &format!("{base}/events"),
        json!({"state": "running"}),
    )
    .await;
    assert_eq!((s, j["state"].as_str()), (200, Some("running")));

    // Usage in unit-milliseconds: 2 units can have used at most 2 × (time since dispatch + 2 s
    // of clock skew), so right after dispatch 2,500 unit-ms is plausible.
    let rec = |seq: u64, ums: u64| json!({"seq": seq, "unit_ms": ums, "cpu_ms": 10, "peak_memory_mib": 64, "signature_hex": key.sign(&job.id, &a.attempt_id, seq, ums)});
    let (s, ack) = post(
        &provider,
        &format!("{base}/usage"),
        json!({"records": [rec(1, 1_500), rec(2, 1_000)]}),
    )
    .await;
    assert_eq!(
        (s, ack["accepted"].as_u64(), ack["unit_ms"].as_u64()),
        (200, Some(2), Some(2_500)),
        "{ack}"
    );
    let (s, ack) = post(
        &provider,
        &format!("{base}/usage"),
        json!({"records": [rec(2, 1_000)]}),
    )
    .await;
    assert_eq!(
        (s, ack["duplicates"].as_u64(), ack["unit_ms"].as_u64()),
        (200, Some(1), Some(2_500)),
        "a retry is not counted twice"
    );
    // Issue 16: 1,000 unit-seconds claimed a moment after dispatch is refused, not capped, and
    // stays refused when sent again later; the agent is marked for the operator to see.
    let (s, e) = post(
        &provider,
        &format!("{base}/usage"),
        json!({"records": [rec(3, 1_000_000)]}),
    )
    .await;
    assert_eq!((s, e["code"].as_str()), (422, Some("usage_refused")), "{e}");
    assert_eq!(e["field"], "records[0].unit_ms");
    assert!(
        e["message"].as_str().unwrap().contains("not charged"),
        "{e}"
    );
    let (s, e) = post(
        &provider,
        &format!("{base}/usage"),
        json!({"records": [rec(3, 1_000_000), rec(4, 100)]}),
    )
    .await;
    assert_eq!((s, e["code"].as_str()), (422, Some("usage_refused")), "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("other 1 records were counted"),
        "{e}"
    );
    let (s, agents) = app
        .operator
        .raw(Method::GET, "/api/v1/agents", None, None)
        .await
        .unwrap();
    assert_eq!(s, 200);
    let seen = agents["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == agent["id"])
        .unwrap()
        .clone();
    assert_eq!(seen["usage_refusals"], 1, "{seen}");
    assert!(
        seen["last_usage_refusal"]
            .as_str()
            .unwrap()
            .contains("1000000 unit-ms"),
        "{seen}"
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("suanli_usage_refused_total 2"),
        "{metrics}"
    );
    // Market-wide metrics are the operator's: nobody else reads them.
    let anonymous = reqwest::get(format!("{}/metrics", app.base)).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let (s, _) = provider
        .client
        .raw(Method::GET, "/metrics", None, None)
        .await
        .unwrap();
    assert_eq!(s, 403);
    let mut forged = rec(5, 100);
    forged["unit_ms"] = json!(5000);
    let (s, e) = post(
        &provider,
        &format!("{base}/usage"),
        json!({"records": [forged]}),
    )
    .await;
    assert_eq!((s, e["code"].as_str()), (400, Some("invalid_signature")));
    let (s, _) = post(
        &provider,
        &format!("{base}/logs"),
        json!({"chunks": [{"seq": 1, "stream": "stdout", "data": "hi\n"}]}),
    )
    .await;
    assert_eq!(s, 200);

    let (s, j) = post(
        &provider,
        &format!("{base}/events"),
        json!({"state": "succeeded", "exit_code": 0}),
    )
    .await;
    assert_eq!(
        (s, j["state"].as_str(), j["unit_ms"].as_u64()),
        (200, Some("succeeded"), Some(2_600))
    );
    // Reports about an ended attempt are refused.
    let (s, e) = post(
        &provider,
        &format!("{base}/usage"),
        json!({"records": [rec(6, 1)]}),
    )
    .await;
    assert_eq!((s, e["code"].as_str()), (409, Some("stale_attempt")));

    // The lease ended with its last job and charged exactly the metered 2.6 unit-seconds (at
    // 1 micro per unit-ms), rounded once; every figure re-adds.
    let l = consumer.client.get_lease(&lease.id).await.unwrap();
    assert_eq!(l.state, "ended");
    assert_eq!(l.metered_unit_ms, 2_600);
    assert_eq!(l.billed_unit_ms, Some(2_600));
    assert_eq!(l.cost_micros, Some(2_600));
    assert_eq!(l.fee_micros, Some(130));
    assert_eq!(l.provider_micros, Some(2_470));
    assert_eq!(
        l.released_micros.unwrap() + l.cost_micros.unwrap(),
        l.hold.amount_micros
    );
    assert_eq!(
        provider.client.balance().await.unwrap().earnings_micros,
        2_470
    );
    let logs = consumer
        .client
        .raw(
            Method::GET,
            &format!("/api/v1/jobs/{}/logs", job.id),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(logs.1["chunks"][0]["data"], "hi\n");
    assert_eq!(logs.1["done"], true);
    // Another org sees neither the job nor its logs.
    let other = app.admit("Other", OrgKind::Consumer).await;
    let (s, _) = other
        .client
        .raw(
            Method::GET,
            &format!("/api/v1/jobs/{}/logs", job.id),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(s, 404);
    app.ledger_ok().await;
}

#[tokio::test]
async fn cancel_stops_the_attempt_at_the_next_heartbeat_and_refuses_its_usage() {
    let app = spawn_app().await;
    let (provider, key, agent, offer, consumer) = agent_market(&app).await;
    let agent_id = agent["id"].as_str().unwrap();
    let (lease, job) = lease_and_job(&consumer, &offer, false, false).await;
    let a = poll_one(&provider, agent_id).await;
    let base = format!("/agents/{agent_id}/attempts/{}", a.attempt_id);
    post(
        &provider,
        &format!("{base}/events"),
        json!({"state": "running"}),
    )
    .await;
    let (s, j) = consumer
        .client
        .raw(
            Method::POST,
            &format!("/api/v1/jobs/{}/cancel", job.id),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!((s, j["state"].as_str()), (200, Some("cancelled")));
    let (s, hb) = post(
        &provider,
        &format!("/agents/{agent_id}/heartbeat"),
        json!({"running": [a.attempt_id]}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(hb["stop"], json!([a.attempt_id]));
    let sig = key.sign(&job.id, &a.attempt_id, 1, 10);
    let (s, _) = post(&provider, &format!("{base}/usage"), json!({"records": [{"seq": 1, "unit_ms": 10, "cpu_ms": 10, "peak_memory_mib": 64, "signature_hex": sig}]})).await;
    assert_eq!(s, 409);
    // Ending the lease bills nothing: no usage was acknowledged.
    let l = consumer.client.end_lease(&lease.id, None).await.unwrap();
    assert_eq!(l.cost_micros, Some(0));
    assert_eq!(l.hold.state, "voided");
    app.ledger_ok().await;
}

#[tokio::test]
async fn a_silent_agent_is_lost_its_job_requeued_and_its_old_attempt_fenced() {
    let app = spawn_app_with(|c| {
        c.suspect_after = Duration::from_millis(500);
        c.lost_after = Duration::from_millis(1_500);
    })
    .await;
    let (provider, key, agent, offer, consumer) = agent_market(&app).await;
    let agent_id = agent["id"].as_str().unwrap();
    let (_lease, job) = lease_and_job(&consumer, &offer, false, true).await;
    let first = poll_one(&provider, agent_id).await;
    let base = format!("/agents/{agent_id}/attempts/{}", first.attempt_id);
    post(
        &provider,
        &format!("{base}/events"),
        json!({"state": "running"}),
    )
    .await;
    let sig = key.sign(&job.id, &first.attempt_id, 1, 700);
    let (s, _) = post(&provider, &format!("{base}/usage"), json!({"records": [{"seq": 1, "unit_ms": 700, "cpu_ms": 10, "peak_memory_mib": 64, "signature_hex": sig}]})).await;
    assert_eq!(s, 200);

    // Silence: the monitor declares the agent lost and the restartable job goes back to the queue.
    let mut j = Value::Null;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        j = consumer
            .client
            .raw(Method::GET, &format!("/api/v1/jobs/{}", job.id), None, None)
            .await
            .unwrap()
            .1;
        if j["state"] == "queued" {
            break;
        }
    }
    assert_eq!(j["state"], "queued", "{j}");
    assert_eq!(j["attempts"][0]["state"], "lost");
    let pool = provider
        .client
        .get_pool(agent["pool_id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(
        (pool.agent_connected, pool.agents),
        (false, 1),
        "a lost agent's pool is not connected"
    );
    assert_eq!(j["unit_ms"], 700, "acknowledged usage stays billed");

    // The agent comes back: its old attempt is refused and must stop; the job runs again.
    let (s, hb) = post(
        &provider,
        &format!("/agents/{agent_id}/heartbeat"),
        json!({"running": [first.attempt_id]}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(hb["stop"], json!([first.attempt_id]));
    let (s, e) = post(
        &provider,
        &format!("{base}/events"),
        json!({"state": "succeeded", "exit_code": 0}),
    )
    .await;
    assert_eq!((s, e["code"].as_str()), (409, Some("stale_attempt")));
    let second = poll_one(&provider, agent_id).await;
    assert_ne!(second.attempt_id, first.attempt_id);
    let j = consumer
        .client
        .raw(Method::GET, &format!("/api/v1/jobs/{}", job.id), None, None)
        .await
        .unwrap()
        .1;
    assert_eq!(j["attempts"].as_array().unwrap().len(), 2);
    let metrics = app.metrics().await;
    assert!(metrics.contains("suanli_agents_lost_total 1"), "{metrics}");
    assert!(
        metrics.contains("suanli_jobs_requeued_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn when_most_agents_fall_silent_at_once_the_exchange_suspects_itself() {
    let app = spawn_app_with(|c| {
        c.suspect_after = Duration::from_millis(400);
        c.lost_after = Duration::from_millis(1_000);
    })
    .await;
    let provider = app.admit("Center", OrgKind::Provider).await;
    let keys: Vec<FakeAgentKey> = (1..=3).map(FakeAgentKey::new).collect();
    let mut ids = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        ids.push(
            register(&provider, k, &format!("n{i}")).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // Only the first agent keeps sending heartbeats, for three lost-times.
    for _ in 0..30 {
        post(
            &provider,
            &format!("/agents/{}/heartbeat", ids[0]),
            json!({"running": []}),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let agents = provider
        .client
        .raw(Method::GET, "/api/v1/agents", None, None)
        .await
        .unwrap()
        .1;
    for a in agents["items"].as_array().unwrap() {
        assert_ne!(
            a["state"], "lost",
            "{a}: two of three agents silent at once must not be declared lost"
        );
    }
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("suanli_monitor_self_suspicions_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("suanli_agents_lost_total 0"), "{metrics}");
}

#[tokio::test]
async fn jobs_need_an_agent_served_lease_and_valid_tasks() {
    let app = spawn_app().await;
    let (_p, offer) = app.gpu_provider("No-agent center").await;
    let c = app.admit("C", OrgKind::Consumer).await;
    app.fund(&c, 10_000).await;
    let lease = c
        .client
        .purchase(&common::buy(&offer, 1, 600), None)
        .await
        .unwrap();
    assert_eq!(lease.billing, "elapsed");
    let (s, e) = post(
        &c,
        &format!("/leases/{}/jobs", lease.id),
        json!({"task": {"run": "true"}}),
    )
    .await;
    assert_eq!((s, e["field"].as_str()), (400, Some("lease_id")));
    for (task, field) in [
        (json!({"run": "  "}), "task.run"),
        (json!({"run": "x", "env": {"1BAD": "v"}}), "task.env.1BAD"),
        (
            json!({"run": "x", "workdir": [{"path": "../etc/passwd", "content_base64": ""}]}),
            "task.workdir[0].path",
        ),
        (json!({"run": "x", "outputs": ["/abs"]}), "task.outputs[0]"),
        (json!({"run": "x", "nope": 1}), "task.nope"),
    ] {
        let (s, e) = post(
            &c,
            &format!("/leases/{}/jobs", lease.id),
            json!({ "task": task }),
        )
        .await;
        assert_eq!((s, e["field"].as_str()), (400, Some(field)), "{e}");
    }
}

/// Issue 17: the exchange caps a job's log whatever an agent sends (here at 1,000 bytes: a head
/// of 750, a tail of 250). It keeps the head, a notice where it cut, the newest tail, and at the
/// job's end the final count; a batch sent again (its reply lost) neither comes back nor
/// counts twice. Every byte is kept or counted.
#[tokio::test]
async fn the_exchange_caps_a_jobs_log_keeping_its_head_and_its_tail() {
    let app = spawn_app_with(|c| c.max_log_bytes_per_job = 1_000).await;
    let (provider, _key, agent, offer, consumer) = agent_market(&app).await;
    let agent_id = agent["id"].as_str().unwrap();
    let (_lease, job) = lease_and_job(&consumer, &offer, true, false).await;
    let a = poll_one(&provider, agent_id).await;
    let base = format!("/agents/{agent_id}/attempts/{}", a.attempt_id);
    let (s, _) = post(
        &provider,
        &format!("{base}/events"),
        json!({"state": "running"}),
    )
    .await;
    assert_eq!(s, 200);
    // Twenty chunks of 100 bytes, in batches of five; the third batch twice.
    let chunk = |seq: u64| json!({"seq": seq, "stream": "stdout", "data": format!("{seq:03}{}\n", "x".repeat(96))});
    for batch in [1u64, 6, 11, 11, 16] {
        let chunks: Vec<Value> = (batch..batch + 5).map(chunk).collect();
        let (s, r) = post(
            &provider,
            &format!("{base}/logs"),
            json!({ "chunks": chunks }),
        )
        .await;
        assert_eq!(s, 200, "{r}");
    }
    let (s, _) = post(
        &provider,
        &format!("{base}/events"),
        json!({"state": "succeeded", "exit_code": 0}),
    )
    .await;
    assert_eq!(s, 200);
    let logs = consumer
        .client
        .job_logs(
            &job.id,
            &LogParams {
                after: Some(0),
                limit: Some(100),
                wait_ms: None,
            },
        )
        .await
        .unwrap();
    let seen: Vec<String> = logs
        .chunks
        .iter()
        .map(|c| match c.stream.as_str() {
            "stdout" => c.data[..3].to_string(),
            _ => c.data.clone(),
        })
        .collect();
    // Head: chunks 1–7 (700 bytes; the 8th would pass 750). Tail: the newest 250 bytes' worth,
    // chunks 19 and 20. Dropped: 8–18, 1,100 bytes.
    assert_eq!(
        &seen[..7],
        &["001", "002", "003", "004", "005", "006", "007"]
    );
    assert!(
        seen[7].contains("the first 700 bytes are above, 1100 bytes after them were dropped here"),
        "{}",
        seen[7]
    );
    assert_eq!(&seen[8..10], &["019", "020"]);
    assert!(
        seen[10].contains("it keeps the first 700 bytes and the last output; 1100 bytes"),
        "{}",
        seen[10]
    );
    assert_eq!(seen.len(), 11);
    assert!(logs.done);
}
