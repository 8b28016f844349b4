//! End to end on a real Slurm: an exchange, the real `suanli agent` binary with the Slurm
//! backend, a consumer who quotes core-hours, buys, runs jobs and pays exactly the metered
//! core-seconds Slurm recorded, and a provider paid less the fee. Also: a pending reason the
//! consumer sees, a job Slurm can never run (failed with Slurm's reason, hold released), an agent
//! killed mid-job that re-attaches without double counting, a consumer's cancel reaching Slurm,
//! and a drained node leaving the market and coming back.
//!
//! Without Slurm these tests say so and pass, unless `SUANLI_REQUIRE_SLURM=1` (set by
//! `scripts/test.sh`, which starts Slurm). They take turns on the one-node Slurm.

// Shared helpers: the in-process exchange, orgs, the agent process and the job poll.
#[allow(dead_code)]
mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use suanli_api::*;
use suanli_client::Client;

static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn slurm_or_skip(test: &str) -> bool {
    let up = std::process::Command::new("scontrol")
        .arg("ping")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("is UP"))
        .unwrap_or(false);
    if up {
        return true;
    }
    assert!(
        std::env::var("SUANLI_REQUIRE_SLURM").as_deref() != Ok("1"),
        "SUANLI_REQUIRE_SLURM=1 but Slurm does not answer: run scripts/slurm.sh start"
    );
    eprintln!("{test}: skipped, no Slurm here (scripts/slurm.sh start runs one)");
    false
}

/// `[[slurm.partitions]]` selling `partition` (`debug`, or `short` for one-minute jobs) at 3.6 CNY
/// per core-hour (1000 micros per core-second).
fn core_hours(partition: &str) -> String {
    format!(
        "[[slurm.partitions]]\nname = \"{partition}\"\nprice_per_unit_hour = \"3.6\"\nmemory_mib_per_unit = 100\n"
    )
}

/// Writes a Slurm agent's config selling `partitions` (TOML); every org's jobs run as `nobody`.
/// `top`: more top-level settings of the agent's config.
fn slurm_agent(dir: &Path, base: &str, token: &str, top: &str, partitions: &str) -> AgentSetup {
    let state_dir = dir.join("agent-hpc");
    let jobs_dir = Path::new("/var/tmp/suanli-slurm-e2e").join(dir.file_name().unwrap());
    std::fs::create_dir_all(&state_dir).unwrap();
    std::fs::create_dir_all(jobs_dir.parent().unwrap()).unwrap();
    let token_file = dir.join("hpc.token");
    common::write_private(&token_file, token);
    let config = dir.join("hpc.toml");
    let text = format!(
        r#"server = "{base}"
token_file = "{}"
name = "hpc-login"
zone = "wuqing-core"
state_dir = "{}"
jobs_dir = "{}"
backend = "slurm"
usage_interval_s = 1
{top}
[slurm]
allow_root = true
poll_interval_s = 1
capacity_refresh_s = 2
default_account = "nobody"

{partitions}"#,
        token_file.display(),
        state_dir.display(),
        jobs_dir.display(),
    );
    std::fs::write(&config, text).unwrap();
    AgentSetup {
        config,
        state_dir,
        jobs_dir,
    }
}

/// The provider's published offer for `class`, once the agent has created it.
async fn published(consumer: &Client, class: &str) -> Offer {
    for _ in 0..600 {
        if let Ok(list) = consumer
            .catalog(&CatalogParams {
                category: class.split(':').next().map(Into::into),
                ..CatalogParams::default()
            })
            .await
        {
            if let Some(o) = list
                .items
                .into_iter()
                .find(|o| o.class == class && o.units_available > 0)
            {
                return o;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no offer for {class} appeared");
}

struct Market {
    _dir: Scratch,
    x: Exchange,
    provider: Client,
    consumer: Client,
    agent: AgentProcess,
    setup: AgentSetup,
}

async fn market(name: &str, partitions: &str) -> Market {
    market_with(name, "", partitions).await
}

async fn market_with(name: &str, top: &str, partitions: &str) -> Market {
    let dir = Scratch::new(name);
    let x = exchange(dir.path(), |_| {}).await;
    let (_, provider, provider_token) =
        admit(&x.operator, &x.base, "HPC Center", OrgKind::Provider).await;
    let (cid, consumer, _) = admit(&x.operator, &x.base, "Institute", OrgKind::Consumer).await;
    x.operator
        .deposit(
            &cid,
            &DepositRequest {
                amount_micros: 100_000_000,
                external_ref: "bank-1".into(),
            },
            None,
        )
        .await
        .unwrap();
    let setup = slurm_agent(dir.path(), &x.base, &provider_token, top, partitions);
    let agent = AgentProcess::start(&setup);
    let agents = wait_for_agents(&provider, 1).await;
    assert_eq!(agents[0].backend, "slurm");
    assert!(
        agents[0].isolation.contains("slurm"),
        "{}",
        agents[0].isolation
    );
    Market {
        _dir: dir,
        x,
        provider,
        consumer,
        agent,
        setup,
    }
}

async fn buy_core_hours(
    consumer: &Client,
    offer_id: &str,
    units: u64,
    duration_limit_s: u64,
) -> Lease {
    consumer
        .purchase(
            &PurchaseRequest {
                offer_id: offer_id.into(),
                units,
                duration_limit_s,
                max_price_micros_per_unit_hour: None,
                auto_end: true,
            },
            None,
        )
        .await
        .unwrap()
}

async fn finished(consumer: &Client, job_id: &str) -> Job {
    wait_job(consumer, job_id, |j| {
        !matches!(j.state.as_str(), "queued" | "dispatched" | "running")
    })
    .await
}

/// Slurm's record from the job-completion log: (state, elapsed seconds, allocated CPUs).
fn slurm_record(id: &str) -> (String, u64, u64) {
    let out = std::process::Command::new("sacct")
        .args([
            "-c",
            "-j",
            id,
            "-P",
            "-n",
            "-o",
            "JobID,State,Elapsed,AllocCPUS",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{id}|")))
        .unwrap_or_else(|| panic!("sacct -c has no line for job {id}: {text:?}"));
    let f: Vec<&str> = line.split('|').collect();
    let elapsed = suanli_agent::slurm::parse::parse_duration(f[2]).unwrap();
    (f[1].to_owned(), elapsed, f[3].parse().unwrap())
}

async fn ended_lease(consumer: &Client, lease_id: &str) -> Lease {
    for _ in 0..300 {
        let l = consumer.get_lease(lease_id).await.unwrap();
        if l.state != "active" {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("lease {lease_id} did not end with its job");
}

#[tokio::test]
async fn consumer_pays_exactly_the_core_seconds_slurm_recorded() {
    let _turn = TURN.lock().await;
    if !slurm_or_skip("consumer_pays_exactly_the_core_seconds_slurm_recorded") {
        return;
    }
    let m = market("slurm-e2e", &core_hours("debug")).await;
    let offer = published(&m.consumer, "supercomputing:debug").await;
    assert_eq!(offer.partition.as_deref(), Some("debug"));
    assert_eq!(offer.price_micros_per_unit_hour, 3_600_000);

    // A quote for core-hours on the partition finds the agent's offer.
    let quote = m
        .consumer
        .quote(
            &QuoteRequest {
                class: Some("supercomputing:debug".into()),
                units: Some(2),
                duration_limit_s: 600,
                ..QuoteRequest::default()
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        quote.offers.first().map(|q| q.offer.id.as_str()),
        Some(offer.id.as_str()),
        "{quote:#?}"
    );

    // Another user of the center holds the whole node for a while: the consumer's job waits in
    // Slurm's queue, and the consumer sees Slurm's reason.
    let outside = std::process::Command::new("sbatch")
        .args([
            "--parsable",
            "-p",
            "debug",
            "-n",
            "2",
            "--mem-per-cpu=100",
            "-o",
            "/dev/null",
            "--wrap",
            "sleep 5",
        ])
        .output()
        .unwrap();
    assert!(outside.status.success(), "{outside:?}");
    let lease = buy_core_hours(&m.consumer, &offer.id, 2, 600).await;
    let job = m
        .consumer
        .create_job(
            &lease.id,
            &task("echo \"hello from $(id -un) on $SLURM_JOB_PARTITION\"; sleep 4"),
            None,
        )
        .await
        .unwrap();
    let pending = wait_job(&m.consumer, &job.id, |j| {
        j.state == "dispatched"
            && j.reason
                .as_deref()
                .is_some_and(|r| r.contains("pending: Resources"))
    })
    .await;
    let slurm_id = pending.attempts[0]
        .backend_id
        .clone()
        .expect("the Slurm job id is on the attempt");
    let done = finished(&m.consumer, &job.id).await;
    assert_eq!(done.state, "succeeded", "{done:#?}");
    assert_eq!(done.exit_code, Some(0));
    let (out, _, system) = all_logs(&m.consumer, &job.id).await;
    assert_eq!(out, "hello from nobody on debug\n");
    assert!(
        system.contains(&format!("Slurm job {slurm_id} submitted")),
        "{system}"
    );
    assert!(
        !done.reason.clone().unwrap_or_default().contains("pending"),
        "the pending reason is gone once it ran: {done:#?}"
    );

    // The bill is Slurm's own record: allocated CPUs × elapsed seconds (in unit-ms), at 1000
    // micros per unit-second.
    let lease = ended_lease(&m.consumer, &lease.id).await;
    let (state, elapsed, cpus) = slurm_record(&slurm_id);
    assert_eq!(state, "COMPLETED");
    assert_eq!(cpus, 2);
    assert!(elapsed >= 4, "{elapsed}");
    assert_eq!(lease.metered_unit_ms, cpus * elapsed * 1_000, "{lease:#?}");
    assert_eq!(lease.cost_micros, Some(cpus * elapsed * 1_000));
    let fee = lease.fee_micros.unwrap();
    assert_eq!(
        fee,
        cpus * elapsed * 1_000 * 500 / 10_000,
        "5% fee, rounded down"
    );
    let provider = m.provider.balance().await.unwrap();
    assert_eq!(
        provider.earnings_micros as u64,
        lease.cost_micros.unwrap() - fee,
        "the provider is paid the cost less the fee"
    );
    let consumer = m.consumer.balance().await.unwrap();
    assert_eq!(consumer.held_micros, 0, "every hold ended");
    assert_eq!(
        consumer.available_micros as u64,
        100_000_000 - lease.cost_micros.unwrap()
    );
    let check = m.x.operator.ledger_check().await.unwrap();
    assert!(check.ok, "{:?}", check.violations);
}

#[tokio::test]
async fn a_job_slurm_can_never_run_fails_with_its_reason_and_costs_nothing() {
    let _turn = TURN.lock().await;
    if !slurm_or_skip("a_job_slurm_can_never_run_fails_with_its_reason_and_costs_nothing") {
        return;
    }
    let m = market("slurm-never", &core_hours("short")).await;
    let offer = published(&m.consumer, "supercomputing:short").await;
    // Ten minutes on a partition whose jobs may run one.
    let lease = buy_core_hours(&m.consumer, &offer.id, 1, 600).await;
    assert!(m.consumer.balance().await.unwrap().held_micros > 0);
    let job = m
        .consumer
        .create_job(&lease.id, &task("echo never"), None)
        .await
        .unwrap();
    let done = finished(&m.consumer, &job.id).await;
    assert_eq!(done.state, "failed", "{done:#?}");
    let reason = done.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("Slurm cannot run this job (PartitionTimeLimit)"),
        "{reason}"
    );
    let lease = ended_lease(&m.consumer, &lease.id).await;
    assert_eq!(lease.metered_unit_ms, 0);
    assert_eq!(lease.cost_micros, Some(0));
    let b = m.consumer.balance().await.unwrap();
    assert_eq!(
        (b.held_micros, b.available_micros),
        (0, 100_000_000),
        "the hold is released whole"
    );
}

#[tokio::test]
async fn an_agent_killed_mid_job_reattaches_and_bills_once() {
    let _turn = TURN.lock().await;
    if !slurm_or_skip("an_agent_killed_mid_job_reattaches_and_bills_once") {
        return;
    }
    let mut m = market("slurm-restart", &core_hours("debug")).await;
    let offer = published(&m.consumer, "supercomputing:debug").await;
    let lease = buy_core_hours(&m.consumer, &offer.id, 1, 600).await;
    let job = m
        .consumer
        .create_job(&lease.id, &task("echo before; sleep 6; echo after"), None)
        .await
        .unwrap();
    let running = wait_job(&m.consumer, &job.id, |j| {
        j.state == "running" && j.unit_ms >= 1_000
    })
    .await;
    let slurm_id = running.attempts[0].backend_id.clone().unwrap();
    m.agent.sigkill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    m.agent = AgentProcess::start(&m.setup);
    let done = finished(&m.consumer, &job.id).await;
    assert_eq!(done.state, "succeeded", "{done:#?}");
    assert_eq!(
        done.attempts.len(),
        1,
        "the same attempt, not a rerun: {done:#?}"
    );
    let (out, _, _) = all_logs(&m.consumer, &job.id).await;
    assert!(
        out.contains("before\n") && out.ends_with("after\n"),
        "{out:?}"
    );
    let lease = ended_lease(&m.consumer, &lease.id).await;
    let (state, elapsed, cpus) = slurm_record(&slurm_id);
    assert_eq!(state, "COMPLETED");
    assert_eq!(
        lease.metered_unit_ms,
        cpus * elapsed * 1_000,
        "counted once: {lease:#?}"
    );
    assert_eq!(lease.cost_micros, Some(cpus * elapsed * 1_000));
}

#[tokio::test]
async fn a_cancelled_job_is_scancelled_and_never_billed_past_slurms_record() {
    let _turn = TURN.lock().await;
    if !slurm_or_skip("a_cancelled_job_is_scancelled_and_never_billed_past_slurms_record") {
        return;
    }
    let m = market("slurm-cancel", &core_hours("debug")).await;
    let offer = published(&m.consumer, "supercomputing:debug").await;
    let lease = buy_core_hours(&m.consumer, &offer.id, 1, 600).await;
    let job = m
        .consumer
        .create_job(&lease.id, &task("echo started; sleep 300"), None)
        .await
        .unwrap();
    let running = wait_job(&m.consumer, &job.id, |j| {
        j.state == "running" && j.unit_ms >= 2_000
    })
    .await;
    let slurm_id = running.attempts[0].backend_id.clone().unwrap();
    m.consumer.cancel_job(&job.id, None).await.unwrap();
    let done = finished(&m.consumer, &job.id).await;
    assert_eq!(done.state, "cancelled", "{done:#?}");
    // The agent hears of the cancel with its next heartbeat and runs scancel.
    let mut state = String::new();
    for _ in 0..300 {
        let out = std::process::Command::new("squeue")
            .args(["-h", "--states=all", "-o", "%T", "-j", &slurm_id])
            .output()
            .unwrap();
        state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if state == "CANCELLED" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state, "CANCELLED", "Slurm job {slurm_id} was not cancelled");
    let lease = ended_lease(&m.consumer, &lease.id).await;
    assert!(lease.metered_unit_ms >= 2_000, "{lease:#?}");
    // Billing stops when the consumer cancels; Slurm's record runs until the agent's scancel a
    // heartbeat later. The consumer never pays for more than Slurm recorded.
    let (_, elapsed, cpus) = slurm_record(&slurm_id);
    assert!(
        lease.metered_unit_ms <= cpus * elapsed * 1_000,
        "{lease:#?} vs {cpus} × {elapsed}"
    );
    let check = m.x.operator.ledger_check().await.unwrap();
    assert!(check.ok, "{:?}", check.violations);
}

#[tokio::test]
async fn a_drained_node_stops_being_sold_and_comes_back() {
    let _turn = TURN.lock().await;
    if !slurm_or_skip("a_drained_node_stops_being_sold_and_comes_back") {
        return;
    }
    let m = market("slurm-drain", &core_hours("debug")).await;
    let offer = published(&m.consumer, "supercomputing:debug").await;
    let pool = m.provider.get_pool(&offer.pool_id).await.unwrap();
    let node = pool.nodes[0].name.clone();
    let free = |consumer: Client, offer_id: String| async move {
        consumer.get_offer(&offer_id).await.unwrap().units_available
    };
    let before = free(m.consumer.clone(), offer.id.clone()).await;
    assert!(before >= 1);
    let scontrol = |state: &str| {
        let ok = std::process::Command::new("scontrol")
            .args([
                "update",
                &format!("NodeName={node}"),
                &format!("State={state}"),
                "Reason=suanli-e2e",
            ])
            .status()
            .unwrap()
            .success();
        assert!(ok, "scontrol update {state}");
    };
    scontrol("DRAIN");
    let mut now = before;
    for _ in 0..300 {
        now = free(m.consumer.clone(), offer.id.clone()).await;
        if now == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    scontrol("RESUME");
    assert_eq!(now, 0, "a drained node is not sold");
    for _ in 0..300 {
        now = free(m.consumer.clone(), offer.id.clone()).await;
        if now == before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(now, before, "the resumed node is sold again");
}

/// GPU-hours of a partition whose node declares GPUs as GRES (`scripts/slurm.sh` declares two
/// stand-in devices): the job gets one through Slurm and pays GPUs × Slurm's elapsed seconds.
#[tokio::test]
async fn gpu_hours_on_a_gres_partition() {
    let _turn = TURN.lock().await;
    if !slurm_or_skip("gpu_hours_on_a_gres_partition") {
        return;
    }
    let gres = std::process::Command::new("sinfo")
        .args(["-h", "-p", "gpu", "-o", "%G"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    if !gres.starts_with("gpu:") {
        assert!(
            std::env::var("SUANLI_REQUIRE_SLURM").as_deref() != Ok("1"),
            "this Slurm has no gpu partition with GPU GRES (scripts/slurm.sh start declares one)"
        );
        eprintln!("gpu_hours_on_a_gres_partition: skipped, no gpu partition with GRES here");
        return;
    }
    let m = market(
        "slurm-gpu",
        "[[slurm.partitions]]\nname = \"gpu\"\nclass = \"intelligent\"\naccelerator_model = \"A800-80G\"\nprice_per_unit_hour = \"3.6\"\n",
    )
    .await;
    let offer = published(&m.consumer, "intelligent:A800-80G").await;
    assert_eq!(offer.units_available, 2, "two GPUs: {offer:#?}");
    assert_eq!(offer.cpus_per_unit, 1, "the node's CPUs per GPU");
    let lease = buy_core_hours(&m.consumer, &offer.id, 1, 600).await;
    let job = m
        .consumer
        .create_job(
            &lease.id,
            &task("echo \"gpus: $CUDA_VISIBLE_DEVICES\"; sleep 2"),
            None,
        )
        .await
        .unwrap();
    let done = finished(&m.consumer, &job.id).await;
    assert_eq!(done.state, "succeeded", "{done:#?}");
    let slurm_id = done.attempts[0].backend_id.clone().unwrap();
    let (out, _, system) = all_logs(&m.consumer, &job.id).await;
    assert_eq!(out, "gpus: 0\n", "Slurm gave the job one GPU");
    assert!(system.contains("1 GPU(s)"), "{system}");
    let record = std::process::Command::new("scontrol")
        .args(["-o", "show", "job", &slurm_id])
        .output()
        .unwrap();
    let record =
        suanli_agent::slurm::parse::parse_scontrol_job(&String::from_utf8_lossy(&record.stdout))
            .unwrap();
    assert_eq!(record.gpus, 1);
    let lease = ended_lease(&m.consumer, &lease.id).await;
    assert_eq!(
        lease.metered_unit_ms,
        record.gpus * record.elapsed_s * 1_000,
        "{lease:#?}"
    );
    assert_eq!(
        lease.cost_micros,
        Some(record.gpus * record.elapsed_s * 1_000)
    );
}

/// Issue 17, logs on the Slurm backend: a job printing 40 MB fast past the provider's 4 MiB cap
/// delivers its first line, a notice, the count of what was dropped and its last lines; every
/// byte is delivered or counted.
#[tokio::test]
async fn a_slurm_job_printing_fast_keeps_its_head_a_count_and_its_last_lines() {
    let _turn = TURN.lock().await;
    if !slurm_or_skip("a_slurm_job_printing_fast_keeps_its_head_a_count_and_its_last_lines") {
        return;
    }
    let m = market_with(
        "slurm-logs",
        "max_log_mib_per_job = 4\n",
        &core_hours("debug"),
    )
    .await;
    let offer = published(&m.consumer, "supercomputing:debug").await;
    let lease = buy_core_hours(&m.consumer, &offer.id, 1, 600).await;
    let job = m
        .consumer
        .create_job(
            &lease.id,
            &task("echo FIRST-LINE; yes 0123456789 | head -c 40000000; echo LAST-LINE"),
            None,
        )
        .await
        .unwrap();
    let done = finished(&m.consumer, &job.id).await;
    assert_eq!(done.state, "succeeded", "{done:#?}");
    let (out, _, sys) = all_logs(&m.consumer, &job.id).await;
    assert!(
        out.starts_with("FIRST-LINE\n0123456789\n"),
        "{}",
        &out[..30]
    );
    assert!(out.ends_with("LAST-LINE\n"));
    assert!(
        sys.contains("passed its log limit of 4194304 bytes"),
        "{sys}"
    );
    let at = sys.find("bytes of stdout were dropped").expect("a count");
    let dropped: u64 = sys[..at]
        .trim_end()
        .rsplit(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(out.len() as u64 + dropped, 11 + 40_000_000 + 10);
}
