//! End to end with real processes: an exchange, the real `suanli agent` binary in front of this
//! machine running jobs as child processes, and a consumer buying, launching, following logs and
//! paying for metered use.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use suanli_api::*;

// Shared with the failure scenarios: the in-process exchange, the task and the job poll.
#[allow(dead_code)]
mod common;
use common::{exchange, task, wait_job, Exchange};
use suanli_client::{Client, Method};

struct AgentProcess {
    child: Child,
    config: PathBuf,
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_agent(dir: &Path, base: &str, token: &str, name: &str) -> AgentProcess {
    let state = dir.join(format!("agent-{name}"));
    std::fs::create_dir_all(&state).unwrap();
    let token_file = dir.join(format!("{name}.token"));
    common::write_private(&token_file, token);
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "server = \"{base}\"\ntoken_file = \"{}\"\nname = \"{name}\"\nzone = \"wuqing-core\"\nstate_dir = \"{}\"\nusage_interval_s = 1\n",
            token_file.display(),
            state.display()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_suanli"))
        .args(["agent", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .env("SUANLI_TOKEN", "must-not-leak-into-jobs")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start suanli agent");
    AgentProcess { child, config }
}

async fn admit(x: &Exchange, name: &str, kind: OrgKind) -> (String, Client, String) {
    let created = x
        .operator
        .create_org(
            &CreateOrgRequest {
                name: name.into(),
                kind,
                consumer_type: (kind == OrgKind::Consumer)
                    .then_some(ConsumerType::ResearchInstitute),
                zone: "wuqing-core".into(),
                origin_region: "tianjin".into(),
                admin_name: None,
                admin_email: None,
            },
            None,
        )
        .await
        .unwrap();
    let secret = created.token.secret.clone();
    (
        created.org.id,
        Client::new(x.base.clone(), Some(secret.clone())),
        secret,
    )
}

async fn wait_for_agent(provider: &Client) -> Agent {
    for _ in 0..300 {
        if let Some(a) = provider
            .list_agents()
            .await
            .unwrap()
            .items
            .into_iter()
            .next()
        {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the agent never registered");
}

async fn all_logs(c: &Client, job_id: &str) -> (String, String) {
    let (mut out, mut err) = (String::new(), String::new());
    let mut after = 0;
    loop {
        let page = c
            .job_logs(
                job_id,
                &LogParams {
                    after: Some(after),
                    limit: Some(1000),
                    wait_ms: Some(2000),
                },
            )
            .await
            .unwrap();
        for ch in &page.chunks {
            match ch.stream.as_str() {
                "stdout" => out.push_str(&ch.data),
                "stderr" => err.push_str(&ch.data),
                _ => {}
            }
        }
        after = page.next_after;
        if page.done {
            return (out, err);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_on_a_real_agent_and_are_paid_for_by_metered_use() {
    let dir = std::env::temp_dir().join(suanli_store::ops::new_id("suanli-agent-e2e"));
    std::fs::create_dir_all(&dir).unwrap();
    let x = exchange(&dir, |_| {}).await;
    let (_pid, provider, provider_token) = admit(&x, "Local compute", OrgKind::Provider).await;
    let agent_proc = start_agent(&dir, &x.base, &provider_token, "node-1");
    let agent = wait_for_agent(&provider).await;
    assert!(
        agent.isolation.contains("cgroup") || agent.isolation.contains("rlimit"),
        "{}",
        agent.isolation
    );
    let pool = provider.get_pool(&agent.pool_id).await.unwrap();
    let machine_cpus = std::thread::available_parallelism().unwrap().get() as u64;
    assert_eq!(
        pool.nodes[0].cpus, machine_cpus,
        "the agent reports this machine's real CPUs"
    );
    assert_eq!(
        pool.nodes[0].accelerators, 0,
        "no accelerator is invented on a machine without one"
    );
    let offer = provider
        .create_offer(
            &CreateOfferRequest {
                pool_id: agent.pool_id.clone(),
                class: "general".into(),
                cpus_per_unit: None,
                memory_mib_per_unit: 256,
                price_micros_per_unit_hour: 3_600_000,
                min_units: None,
                max_units: None,
                valid_from: None,
                valid_until: None,
            },
            None,
        )
        .await
        .unwrap();
    let (cid, consumer, _) = admit(&x, "Institute", OrgKind::Consumer).await;
    x.operator
        .deposit(
            &cid,
            &DepositRequest {
                amount_micros: 100_000_000,
                external_ref: "b".into(),
            },
            None,
        )
        .await
        .unwrap();
    let lease = consumer
        .purchase(
            &PurchaseRequest {
                offer_id: offer.id.clone(),
                units: 1,
                duration_limit_s: 600,
                max_price_micros_per_unit_hour: None,
                auto_end: false,
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(lease.billing, "metered");

    // Success with output on both streams; the agent's own environment does not leak.
    let job = consumer
        .create_job(
            &lease.id,
            &task("echo hello; echo oops >&2; echo token=${SUANLI_TOKEN:-none}; sleep 2"),
            None,
        )
        .await
        .unwrap();
    let (out, err) = all_logs(&consumer, &job.id).await;
    let done = wait_job(&consumer, &job.id, |j| j.state == "succeeded").await;
    assert_eq!(done.exit_code, Some(0));
    assert!(out.contains("hello"), "{out}");
    assert!(
        out.contains("token=none"),
        "the agent's environment leaked: {out}"
    );
    assert!(err.contains("oops"), "{err}");
    assert!(
        done.unit_ms >= 2_000,
        "a 2-second job was metered: {done:?}"
    );

    // Output files are collected when the job ends and readable by the job's org only.
    let with_outputs = CreateJobRequest {
        task: TaskSpec {
            run: "mkdir -p results/deep && echo 42 > results/answer.txt && echo x > results/deep/b.txt && echo no > other.txt".into(),
            outputs: vec!["results/".into()],
            ..TaskSpec::default()
        },
    };
    let oj = consumer
        .create_job(&lease.id, &with_outputs, None)
        .await
        .unwrap();
    wait_job(&consumer, &oj.id, |j| j.state == "succeeded").await;
    let files = consumer.list_outputs(&oj.id).await.unwrap();
    let paths: Vec<&str> = files.items.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["results/answer.txt", "results/deep/b.txt"]);
    assert_eq!(
        consumer
            .get_output(&oj.id, "results/answer.txt")
            .await
            .unwrap(),
        b"42\n"
    );
    let (_, stranger, _) = admit(&x, "Stranger", OrgKind::Consumer).await;
    assert_eq!(
        stranger.list_outputs(&oj.id).await.unwrap_err().status(),
        Some(404)
    );
    assert_eq!(
        stranger
            .get_output(&oj.id, "results/answer.txt")
            .await
            .unwrap_err()
            .status(),
        Some(404)
    );

    // A failing job reports its exit code.
    let failing = consumer
        .create_job(&lease.id, &task("exit 3"), None)
        .await
        .unwrap();
    let failed = wait_job(&consumer, &failing.id, |j| j.state == "failed").await;
    assert_eq!(failed.exit_code, Some(3));

    // Cancel stops a running job; the agent keeps serving others.
    let long = consumer
        .create_job(&lease.id, &task("sleep 300"), None)
        .await
        .unwrap();
    wait_job(&consumer, &long.id, |j| j.state == "running").await;
    let c = consumer.cancel_job(&long.id, None).await.unwrap();
    assert_eq!(c.state, "cancelled");
    let next = consumer
        .create_job(&lease.id, &task("echo still-serving"), None)
        .await
        .unwrap();
    let (out, _) = all_logs(&consumer, &next.id).await;
    assert!(out.contains("still-serving"));

    // Reading the agent's config or token from a job fails.
    let snoop = consumer
        .create_job(
            &lease.id,
            &task(&format!(
                "cat {} && echo READ-IT",
                agent_proc.config.display()
            )),
            None,
        )
        .await
        .unwrap();
    let (out, _) = all_logs(&consumer, &snoop.id).await;
    assert!(
        !out.contains("READ-IT") && !out.contains("token_file"),
        "a job read the agent's config: {out}"
    );

    // Ending the lease charges exactly the acknowledged unit-milliseconds.
    let ended = consumer.end_lease(&lease.id, None).await.unwrap();
    let metered = ended.metered_unit_ms;
    assert!(metered >= 2_000);
    // 1 micro per unit-millisecond.
    assert_eq!(ended.cost_micros, Some(metered));
    let check = x.operator.ledger_check().await.unwrap();
    assert!(check.ok, "{:?}", check.violations);
    drop(agent_proc);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_is_lost_and_the_consumer_pays_only_acknowledged_use() {
    let dir = std::env::temp_dir().join(suanli_store::ops::new_id("suanli-agent-lost"));
    std::fs::create_dir_all(&dir).unwrap();
    let x = exchange(&dir, |c| {
        c.suspect_after = Duration::from_secs(2);
        c.lost_after = Duration::from_secs(4);
    })
    .await;
    let (_pid, provider, token) = admit(&x, "Local compute", OrgKind::Provider).await;
    let mut agent_proc = start_agent(&dir, &x.base, &token, "node-k");
    let agent = wait_for_agent(&provider).await;
    let offer: Value = provider
        .raw(Method::POST, "/api/v1/offers", Some(json!({"pool_id": agent.pool_id, "class": "general", "memory_mib_per_unit": 256, "price_micros_per_unit_hour": 3_600_000})), None)
        .await
        .unwrap()
        .1;
    let (cid, consumer, _) = admit(&x, "Enterprise", OrgKind::Consumer).await;
    x.operator
        .deposit(
            &cid,
            &DepositRequest {
                amount_micros: 100_000_000,
                external_ref: "b".into(),
            },
            None,
        )
        .await
        .unwrap();
    let lease = consumer
        .purchase(
            &PurchaseRequest {
                offer_id: offer["id"].as_str().unwrap().into(),
                units: 1,
                duration_limit_s: 600,
                max_price_micros_per_unit_hour: None,
                auto_end: true,
            },
            None,
        )
        .await
        .unwrap();
    let job = consumer
        .create_job(&lease.id, &task("sleep 600"), None)
        .await
        .unwrap();
    let running = wait_job(&consumer, &job.id, |j| {
        j.state == "running" && j.unit_ms >= 1_000
    })
    .await;
    assert_eq!(running.attempts.len(), 1);
    // SIGKILL the agent: no goodbye, no more heartbeats.
    agent_proc.child.kill().unwrap();
    agent_proc.child.wait().unwrap();
    let lost = wait_job(&consumer, &job.id, |j| j.state == "lost").await;
    let l = consumer.get_lease(&lease.id).await.unwrap();
    assert_eq!(
        l.state, "ended",
        "the auto-ending lease settled when its only job was lost"
    );
    assert_eq!(l.metered_unit_ms, lost.unit_ms);
    assert_eq!(
        l.cost_micros,
        Some(lost.unit_ms),
        "the consumer pays only acknowledged usage"
    );
    assert!(x.operator.ledger_check().await.unwrap().ok);
    let _ = std::fs::remove_dir_all(&dir);
}
