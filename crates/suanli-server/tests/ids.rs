//! Issue 18: ids are typed and parsed at the edge. An id in a path that is not of its parameter's
//! kind or shape (another kind's id, the wrong length) names no object: it answers exactly as a
//! missing object of the kind does, without asking the store. Text that cannot be an id at all is
//! refused with 400 `invalid_field` and the parameter's name, as before. An id in a request body
//! that is not of its field's kind answers as the store answers for no such object (400 on the
//! field: "no such offer"), after the body's other errors, as before ids were typed.

mod common;

use common::{buy, spawn_app, Org};
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};
use suanli_api::*;
use suanli_client::Method;

/// An id of `prefix` as the exchange makes it, that names nothing.
fn missing(prefix: &str) -> String {
    format!("{prefix}_0190a5b2c3d4e5f60718293a4b5")
}

async fn call(org: &Org, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    org.client
        .raw(method, &format!("/api/v1{path}"), body, None)
        .await
        .unwrap()
}

/// Status, code, message and field of an error answer (the request id differs).
fn answer((status, body): &(u16, Value)) -> (u16, Value, Value, Value) {
    (
        *status,
        body["code"].clone(),
        body["message"].clone(),
        body["field"].clone(),
    )
}

#[tokio::test]
async fn a_path_id_of_another_kind_or_shape_answers_as_a_missing_object() {
    let app = spawn_app().await;
    let (provider, offer) = app.gpu_provider("Ids Provider").await;
    let consumer = app.admit("Ids Consumer", OrgKind::Consumer).await;
    let other = app.admit("Ids Other", OrgKind::Consumer).await;
    app.fund(&consumer, 1_000).await;
    let lease = consumer
        .client
        .purchase(&buy(&offer, 1, 3_600), None)
        .await
        .unwrap();

    // Another org's lease, a lease that does not exist, a job id, an offer id, ids of the wrong
    // length or case: all answer 404 "lease not found", alike.
    let foreign = answer(&call(&other, Method::GET, &format!("/leases/{}", lease.id), None).await);
    assert_eq!(
        foreign,
        (
            404,
            json!("not_found"),
            json!("lease not found"),
            Value::Null
        )
    );
    let tail = lease.id.strip_prefix("lease_").unwrap();
    for id in [
        missing("lease"),
        "lease_0000000000000000".to_owned(),
        missing("job"),
        offer.id.clone(),
        format!("lease_{}", &tail[1..]),
        format!("lease_{tail}0"),
        format!("lease_{}", tail.to_ascii_uppercase()),
        "lease_1".to_owned(),
        "lease".to_owned(),
        "x".to_owned(),
    ] {
        for (method, path) in [
            (Method::GET, format!("/leases/{id}")),
            (Method::POST, format!("/leases/{id}/end")),
            (Method::POST, format!("/leases/{id}/cancel")),
        ] {
            let got = answer(&call(&other, method, &path, None).await);
            assert_eq!(got, foreign, "{path}");
        }
    }
    // A job on a lease that is not one: the same 404.
    let task = json!({"task": {"run": "echo hi"}});
    let (s, e) = call(
        &consumer,
        Method::POST,
        &format!("/leases/{}/jobs", offer.id),
        Some(task),
    )
    .await;
    assert_eq!((s, e["code"].as_str()), (404, Some("not_found")));
    assert_eq!(e["message"], "lease not found");

    // Each kind answers with its own noun, as its store lookup does.
    for (path, what) in [
        (format!("/orgs/{}", missing("org")), "org"),
        (format!("/orgs/{}", lease.id), "org"),
        (format!("/pools/{}", offer.id), "pool"),
        (format!("/offers/{}", lease.id), "offer"),
        (format!("/jobs/{}", lease.id), "job"),
        (format!("/jobs/{}/logs", missing("att")), "job"),
        (format!("/jobs/{}/outputs", "job_1"), "job"),
        (format!("/jobs/{}/outputs/out.txt", "job_1"), "job"),
    ] {
        let (s, e) = call(&consumer, Method::GET, &path, None).await;
        assert_eq!(
            (s, e["code"].as_str(), e["message"].as_str()),
            (404, Some("not_found"), Some(&*format!("{what} not found"))),
            "{path}"
        );
    }
    let (s, e) = call(
        &consumer,
        Method::POST,
        &format!("/tokens/{}/revoke", missing("mem")),
        None,
    )
    .await;
    assert_eq!((s, e["message"].as_str()), (404, Some("token not found")));

    // Text that cannot be an id is refused as before: 400 with the parameter's name.
    let (s, e) = call(&consumer, Method::GET, "/leases/lease%201", None).await;
    assert_eq!(
        (s, e["code"].as_str(), e["field"].as_str()),
        (400, Some("invalid_field"), Some("lease_id"))
    );
    let (s, e) = call(
        &consumer,
        Method::GET,
        &format!("/jobs/{}", "9".repeat(300)),
        None,
    )
    .await;
    assert_eq!(
        (s, e["code"].as_str(), e["field"].as_str()),
        (400, Some("invalid_field"), Some("job_id"))
    );

    // The real ids still work, and nothing moved.
    assert_eq!(
        consumer.client.get_lease(&lease.id).await.unwrap().state,
        "active"
    );
    let _ = provider;
    app.ledger_ok().await;
}

#[tokio::test]
async fn a_body_id_of_another_kind_answers_as_a_missing_object() {
    let app = spawn_app().await;
    let (provider, offer) = app.gpu_provider("Ids Provider").await;
    let consumer = app.admit("Ids Consumer", OrgKind::Consumer).await;
    app.fund(&consumer, 1_000).await;
    let pool = provider.client.list_pools().await.unwrap().items[0]
        .id
        .clone();

    let refused = |(s, e): (u16, Value), field: &str, message: &str, why: &str| {
        assert_eq!(
            (
                s,
                e["code"].as_str(),
                e["field"].as_str(),
                e["message"].as_str()
            ),
            (400, Some("invalid_field"), Some(field), Some(message)),
            "{why}"
        );
    };
    let purchase =
        |offer_id: &str| json!({"offer_id": offer_id, "units": 1, "duration_limit_s": 60});
    // As for an offer that does not exist: 400 on offer_id, "no such offer".
    for offer_id in [
        missing("offer"),
        pool.clone(),
        "offer_1".to_owned(),
        "o".to_owned(),
    ] {
        refused(
            call(
                &consumer,
                Method::POST,
                "/leases",
                Some(purchase(&offer_id)),
            )
            .await,
            "offer_id",
            "no such offer",
            &offer_id,
        );
    }
    // The body's other errors come first, as they did when the store was asked.
    let (s, e) = call(
        &consumer,
        Method::POST,
        "/leases",
        Some(json!({"offer_id": pool, "units": 0, "duration_limit_s": 60})),
    )
    .await;
    assert_eq!((s, e["field"].as_str()), (400, Some("units")));
    // Text that cannot be an id is refused as before.
    let (s, e) = call(
        &consumer,
        Method::POST,
        "/leases",
        Some(purchase("offer 1")),
    )
    .await;
    assert_eq!((s, e["field"].as_str()), (400, Some("offer_id")));
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .starts_with("offer_id is not an id"),
        "{e}"
    );

    let offer_on = |pool_id: &str| {
        json!({"pool_id": pool_id, "class": "general", "memory_mib_per_unit": 1024,
            "price_micros_per_unit_hour": 36_000})
    };
    for pool_id in [missing("pool"), offer.id.clone(), "pool_1".to_owned()] {
        refused(
            call(&provider, Method::POST, "/offers", Some(offer_on(&pool_id))).await,
            "pool_id",
            "no such pool",
            &pool_id,
        );
    }
    for member_id in [missing("mem"), consumer.id.clone(), "mem_1".to_owned()] {
        refused(
            call(
                &consumer,
                Method::POST,
                "/tokens",
                Some(json!({"name": "t", "member_id": member_id})),
            )
            .await,
            "member_id",
            "no such member",
            &member_id,
        );
    }
    // An idempotency key's stored answer comes first, and a refusal is stored under its key,
    // as when the store refused.
    let (s, _) = consumer
        .client
        .raw(
            Method::POST,
            "/api/v1/leases",
            Some(purchase("offer_1")),
            Some("buy-ids-1"),
        )
        .await
        .unwrap();
    assert_eq!(s, 400);
    let (s, e) = consumer
        .client
        .raw(
            Method::POST,
            "/api/v1/leases",
            Some(purchase(&offer.id)),
            Some("buy-ids-1"),
        )
        .await
        .unwrap();
    assert_eq!(
        (s, e["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    // The real ids still buy.
    let (s, _) = call(
        &consumer,
        Method::POST,
        "/leases",
        Some(purchase(&offer.id)),
    )
    .await;
    assert_eq!(s, 201);
    app.ledger_ok().await;
}

#[tokio::test]
async fn agents_and_attempts_answer_as_for_missing_ones() {
    let app = spawn_app().await;
    let (provider, _) = app.gpu_provider("Ids Provider").await;
    let consumer = app.admit("Ids Consumer", OrgKind::Consumer).await;
    app.fund(&consumer, 1_000).await;
    let key = SigningKey::from_bytes(&[7; 32]);
    let public_key_hex: String = key
        .verifying_key()
        .to_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let (s, agent) = call(
        &provider,
        Method::POST,
        "/agents",
        Some(json!({"name": "agent-1", "zone": "wuqing-core",
            "public_key_hex": public_key_hex, "backend": "local", "isolation": "test",
            "version": "0.1.0", "nodes": [{"name": "node-1", "cpus": 8, "memory_mib": 16384}]})),
    )
    .await;
    assert_eq!(s, 201, "{agent}");
    let agent_id = agent["id"].as_str().unwrap().to_owned();
    let (_, offer) = call(
        &provider,
        Method::POST,
        "/offers",
        Some(json!({"pool_id": agent["pool_id"], "class": "general",
            "memory_mib_per_unit": 1024, "price_micros_per_unit_hour": 3_600_000})),
    )
    .await;
    let lease = consumer
        .client
        .purchase(
            &PurchaseRequest {
                offer_id: offer["id"].as_str().unwrap().into(),
                units: 1,
                duration_limit_s: 3_600,
                max_price_micros_per_unit_hour: None,
                auto_end: false,
            },
            None,
        )
        .await
        .unwrap();
    let job = consumer
        .client
        .create_job(
            &lease.id,
            &CreateJobRequest {
                task: TaskSpec {
                    run: "echo hi".into(),
                    ..TaskSpec::default()
                },
            },
            None,
        )
        .await
        .unwrap();
    let (_, polled) = call(
        &provider,
        Method::POST,
        &format!("/agents/{agent_id}/poll"),
        Some(json!({"wait_ms": 1000})),
    )
    .await;
    let attempt_id = polled["assignments"][0]["attempt_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(polled["assignments"][0]["job_id"], json!(job.id));

    // An attempt that is not one: stale, as an attempt the store does not know is.
    let event = json!({"state": "running"});
    let unknown = answer(
        &call(
            &provider,
            Method::POST,
            &format!("/agents/{agent_id}/attempts/{}/events", missing("att")),
            Some(event.clone()),
        )
        .await,
    );
    assert_eq!(
        (unknown.0, unknown.1.as_str()),
        (409, Some("stale_attempt"))
    );
    for bad in [job.id.as_str(), "att_1", "att"] {
        let got = answer(
            &call(
                &provider,
                Method::POST,
                &format!("/agents/{agent_id}/attempts/{bad}/events"),
                Some(event.clone()),
            )
            .await,
        );
        assert_eq!(got, unknown, "{bad}");
    }
    // A missing agent is looked up before the attempt, as the store does: 404 whatever attempt.
    for path in [
        format!("/agents/{}/attempts/att_1/events", missing("agent")),
        format!("/agents/{}/attempts/att_1/logs", missing("agent")),
        format!(
            "/agents/{}/attempts/{}/events",
            missing("agent"),
            missing("att")
        ),
        format!("/agents/agent-1/attempts/{attempt_id}/events"),
    ] {
        let body = if path.ends_with("logs") {
            json!({"chunks": []})
        } else {
            event.clone()
        };
        let (s, e) = call(&provider, Method::POST, &path, Some(body)).await;
        assert_eq!(
            (s, e["message"].as_str()),
            (404, Some("agent not found")),
            "{path}"
        );
    }
    // An agent that is not one: 404 "agent not found", as a missing agent.
    for bad in [missing("agent"), lease.id.clone(), "agent-1".to_owned()] {
        let (s, e) = call(
            &provider,
            Method::POST,
            &format!("/agents/{bad}/poll"),
            Some(json!({"wait_ms": 0})),
        )
        .await;
        assert_eq!(
            (s, e["code"].as_str(), e["message"].as_str()),
            (404, Some("not_found"), Some("agent not found")),
            "{bad}"
        );
    }

    // A heartbeat naming what is not an attempt id tells the agent to stop it, in the order
    // given, with the unknown attempts; the current one goes on.
    let unknown_attempt = missing("att");
    let (s, hb) = call(
        &provider,
        Method::POST,
        &format!("/agents/{agent_id}/heartbeat"),
        Some(json!({"running": ["att_1", attempt_id, unknown_attempt, "job_1"]})),
    )
    .await;
    assert_eq!(s, 200, "{hb}");
    assert_eq!(hb["stop"], json!(["att_1", unknown_attempt, "job_1"]));

    // A new key naming a pool that is not one: no such pool. A key registered already keeps its
    // agent's pool whatever pool_id says, as before.
    let register = |key: &SigningKey, pool_id: &str| {
        let public_key_hex: String = key
            .verifying_key()
            .to_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        json!({"name": "agent-1", "zone": "wuqing-core", "public_key_hex": public_key_hex,
            "backend": "local", "isolation": "test", "version": "0.1.0", "pool_id": pool_id,
            "nodes": [{"name": "node-1", "cpus": 8, "memory_mib": 16384}]})
    };
    let (s, e) = call(
        &provider,
        Method::POST,
        "/agents",
        Some(register(&SigningKey::from_bytes(&[8; 32]), "pool-1")),
    )
    .await;
    assert_eq!(
        (s, e["field"].as_str(), e["message"].as_str()),
        (400, Some("pool_id"), Some("no such pool"))
    );
    let (s, again) = call(
        &provider,
        Method::POST,
        "/agents",
        Some(register(&key, "pool-1")),
    )
    .await;
    assert_eq!(s, 201, "{again}");
    assert_eq!(
        (&again["id"], &again["pool_id"]),
        (&agent["id"], &agent["pool_id"])
    );

    // The job list of a lease that is not one is empty, as for a lease with no jobs; text that
    // cannot be an id is refused.
    let jobs = consumer
        .client
        .list_jobs(&JobListParams {
            lease_id: Some("lease_1".into()),
            ..JobListParams::default()
        })
        .await
        .unwrap();
    assert!(jobs.items.is_empty());
    let jobs = consumer
        .client
        .list_jobs(&JobListParams {
            lease_id: Some(lease.id.clone()),
            ..JobListParams::default()
        })
        .await
        .unwrap();
    assert_eq!(jobs.items.len(), 1);
    let e = consumer
        .client
        .list_jobs(&JobListParams {
            lease_id: Some("lease 1".into()),
            ..JobListParams::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("invalid_query"));
}

/// The typed client takes typed ids or text; a typed id of another kind does not compile.
#[tokio::test]
async fn the_client_takes_typed_ids() {
    let app = spawn_app().await;
    let (_provider, offer) = app.gpu_provider("Ids Provider").await;
    let consumer = app.admit("Ids Consumer", OrgKind::Consumer).await;
    app.fund(&consumer, 1_000).await;
    let lease = consumer
        .client
        .purchase(&buy(&offer, 1, 3_600), None)
        .await
        .unwrap();
    let typed = LeaseId::parse(&lease.id).unwrap();
    assert_eq!(consumer.client.get_lease(&typed).await.unwrap().id, typed);
    let offer_id = OfferId::parse(&offer.id).unwrap();
    assert_eq!(
        consumer.client.get_offer(&offer_id).await.unwrap().id,
        offer_id
    );
    let ended = consumer.client.end_lease(&typed, None).await.unwrap();
    assert_eq!(ended.state, "ended");
}
