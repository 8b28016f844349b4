//! Failures with real processes: the real `suanli agent` binary killed, restarted and paused; the
//! exchange (the real `suanli serve`) killed under a running job; an agent lost while another
//! serves the same pool; and jobs that break their limits. Each test checks what the consumer and
//! the provider expect: the job's state and exit code, its attempts, the unit-seconds billed, the
//! lease's cost, the ledger, and that the agent serves other jobs afterwards.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use ed25519_dalek::{Signer, SigningKey};
use suanli_api::*;

/// Milliseconds the job took by its own clock: it writes `date +%s%3N` to `t0` when it starts
/// and to `t1` when it ends, in its job directory.
fn job_wall_ms(job_dir: &Path) -> u64 {
    let t0 = read_number(&job_dir.join("t0")).expect("the job wrote t0");
    let t1 = read_number(&job_dir.join("t1")).expect("the job wrote t1");
    assert!(t1 >= t0, "t0 {t0} t1 {t1}");
    t1 - t0
}

/// Waits (generously) until no process of the attempt is left.
async fn wait_processes_gone(attempt_id: &str) {
    for _ in 0..600 {
        if processes_of(attempt_id).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "processes of attempt {attempt_id} survive: {:?}",
        processes_of(attempt_id)
    );
}

/// The cgroup directories the backend recorded for a job (in its `attempt.json`).
fn cgroup_dirs(job_dir: &Path) -> Vec<std::path::PathBuf> {
    fn strings(v: &serde_json::Value, out: &mut Vec<std::path::PathBuf>) {
        match v {
            serde_json::Value::String(s) if s.starts_with('/') => out.push(s.into()),
            serde_json::Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
            serde_json::Value::Object(o) => o.values().for_each(|v| strings(v, out)),
            _ => {}
        }
    }
    let text = std::fs::read_to_string(job_dir.join("attempt.json")).unwrap();
    let record: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    strings(&record["cgroup"], &mut out);
    out
}

/// Shell: `wait_for FILE` waits (30 s at most) until FILE exists in the job directory.
const WAIT_FOR: &str =
    "wait_for() { i=0; while [ ! -e \"$1\" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; }; wait_for";

fn lines_in(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

fn is_open(j: &Job) -> bool {
    matches!(j.state.as_str(), "queued" | "dispatched" | "running")
}

/// Scenario 1: the agent is SIGKILLed mid-job and started again with the same config before the
/// exchange would declare it lost. The job ran on in its own process group; the new agent finds
/// it, follows it to the end and reports it once: one attempt, `succeeded`, and its unit-seconds
/// not counted twice. (What the consumer sees of its output: the next test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_reattaches_to_its_running_job_and_bills_it_once() {
    let dir = Scratch::new("suanli-fail-restart");
    let x = exchange(dir.path(), |c| {
        c.heartbeat_interval = Duration::from_secs(1);
        c.suspect_after = Duration::from_secs(10);
        c.lost_after = Duration::from_secs(60);
    })
    .await;
    let (_, provider, token) =
        admit(&x.operator, &x.base, "Local compute", OrgKind::Provider).await;
    let setup = agent_setup(dir.path(), &x.base, &token, "node-r", None);
    let mut agent_proc = AgentProcess::start(&setup);
    let agent = wait_for_agents(&provider, 1).await.remove(0);
    let offer = offer(&provider, &agent.pool_id).await;
    let units = 2;
    let (consumer, lease) =
        consumer_with_lease(&x.operator, &x.base, &offer.id, units, false).await;

    // The job waits for a `go` file (that the test creates once the agent is back), runs 1 s
    // more and ends; it times itself.
    let job = consumer
        .create_job(
            &lease.id,
            &task(&format!(
                "date +%s%3N > t0; {WAIT_FOR} go; sleep 1; date +%s%3N > t1"
            )),
            None,
        )
        .await
        .unwrap();
    let running = wait_job(&consumer, &job.id, |j| {
        j.state == "running" && j.unit_ms >= units * 1_000
    })
    .await;
    let attempt_id = running.attempts[0].id.clone();
    let job_dir = setup.jobs_dir.join(&attempt_id);
    let work = job_dir.join("work");

    agent_proc.sigkill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !processes_of(&attempt_id).is_empty(),
        "the job died with its agent"
    );
    let while_away = consumer.get_job(&job.id).await.unwrap();
    assert_eq!(while_away.state, "running", "{while_away:#?}");

    // Same config, same key: the same agent, which finds its job again.
    let _agent_proc = AgentProcess::start(&setup);
    let back = wait_job(&consumer, &job.id, |j| j.unit_ms > while_away.unit_ms).await;
    assert_eq!(back.state, "running");
    std::fs::write(work.join("go"), "").unwrap();
    let done = wait_job(&consumer, &job.id, |j| !is_open(j)).await;
    assert_eq!(done.state, "succeeded", "{done:#?}");
    assert_eq!(done.exit_code, Some(0));
    assert_eq!(done.attempts.len(), 1, "one attempt: {done:#?}");
    assert_eq!(done.attempts[0].id, attempt_id);
    assert_eq!(done.attempts[0].agent_id, agent.id, "the same agent");
    assert_eq!(done.attempts[0].state, "succeeded");
    let agents = provider.list_agents().await.unwrap().items;
    assert_eq!(agents.len(), 1, "the restart registered no second agent");

    // Not double counted, and not much lost: units × the job's own wall time, within two
    // seconds per unit either way (its start-up, a report cut short by the kill).
    let wall_ms = job_wall_ms(&work);
    assert!(
        done.unit_ms <= units * (wall_ms + 2_000),
        "{} unit-ms for {wall_ms} ms × {units} units: counted twice",
        done.unit_ms
    );
    assert!(
        done.unit_ms + units * 2_000 >= units * wall_ms,
        "{} unit-ms for {wall_ms} ms × {units} units: usage lost",
        done.unit_ms
    );

    still_serves(&consumer, &lease.id, "still-serving-after-restart").await;
    settle(&x.operator, &consumer, &lease.id).await;
}

/// Scenario 1, the consumer's view: what a job prints before, while and after its agent is
/// restarted all reaches the job's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_printed_across_an_agent_restart_reaches_the_consumer() {
    let dir = Scratch::new("suanli-fail-restart-logs");
    let x = exchange(dir.path(), |c| {
        c.heartbeat_interval = Duration::from_secs(1);
        c.suspect_after = Duration::from_secs(10);
        c.lost_after = Duration::from_secs(60);
    })
    .await;
    let (_, provider, token) =
        admit(&x.operator, &x.base, "Local compute", OrgKind::Provider).await;
    let setup = agent_setup(dir.path(), &x.base, &token, "node-l", None);
    let mut agent_proc = AgentProcess::start(&setup);
    let agent = wait_for_agents(&provider, 1).await.remove(0);
    let offer = offer(&provider, &agent.pool_id).await;
    let (consumer, lease) = consumer_with_lease(&x.operator, &x.base, &offer.id, 1, false).await;
    let job = consumer
        .create_job(
            &lease.id,
            &task(&format!(
                "for i in 1 2 3 4 5; do echo before-restart-$i; sleep 0.3; done; \
                 {WAIT_FOR} away; echo printed-while-the-agent-was-away; \
                 {WAIT_FOR} go; for i in 1 2 3 4 5 6 7 8; do echo after-restart-$i; sleep 0.3; done"
            )),
            None,
        )
        .await
        .unwrap();
    // Every line printed so far has reached the exchange.
    let mut seen = String::new();
    for _ in 0..600 {
        let page = consumer
            .job_logs(
                &job.id,
                &LogParams {
                    after: Some(0),
                    limit: Some(1000),
                    wait_ms: Some(1000),
                },
            )
            .await
            .unwrap();
        seen = page.chunks.iter().map(|c| c.data.as_str()).collect();
        if seen.contains("before-restart-5") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen.contains("before-restart-5"), "{seen:?}");
    let attempt_id = consumer.get_job(&job.id).await.unwrap().attempts[0]
        .id
        .clone();
    let job_dir = setup.jobs_dir.join(&attempt_id);
    let work = job_dir.join("work");

    agent_proc.sigkill();
    std::fs::write(work.join("away"), "").unwrap();
    for _ in 0..300 {
        if std::fs::read_to_string(job_dir.join("stdout.log"))
            .unwrap()
            .contains("printed-while-the-agent-was-away")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let away = consumer.get_job(&job.id).await.unwrap();
    let _agent_proc = AgentProcess::start(&setup);
    wait_job(&consumer, &job.id, |j| j.unit_ms > away.unit_ms).await;
    std::fs::write(work.join("go"), "").unwrap();
    let done = wait_job(&consumer, &job.id, |j| !is_open(j)).await;
    assert_eq!(done.state, "succeeded", "{done:#?}");
    assert_eq!(done.attempts.len(), 1);

    let (out, _, system) = all_logs(&consumer, &job.id).await;
    let on_disk = std::fs::read_to_string(job_dir.join("stdout.log")).unwrap();
    let expected: Vec<String> = (1..=5)
        .map(|i| format!("before-restart-{i}"))
        .chain(std::iter::once(
            "printed-while-the-agent-was-away".to_owned(),
        ))
        .chain((1..=8).map(|i| format!("after-restart-{i}")))
        .collect();
    let missing: Vec<&String> = expected
        .iter()
        .filter(|l| !out.contains(l.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "lines missing from the job's log: {missing:?}\nthe consumer saw stdout {out:?}, \
         system {system:?}\nthe job wrote {on_disk:?}"
    );
}

/// Scenario 2: the agent is paused (SIGSTOP) past the lost time. The exchange declares the job
/// lost (it is not restartable) and the consumer pays only the usage acknowledged before. When
/// the agent resumes (SIGCONT), the exchange tells it to stop its old attempt and refuses its
/// reports; the agent kills the orphan, and serves new jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_agent_is_lost_and_on_resume_stops_the_orphan_whose_reports_are_refused() {
    let dir = Scratch::new("suanli-fail-pause");
    let x = exchange(dir.path(), |c| {
        c.heartbeat_interval = Duration::from_secs(1);
        c.suspect_after = Duration::from_secs(1);
        c.lost_after = Duration::from_secs(4);
    })
    .await;
    let (_, provider, token) =
        admit(&x.operator, &x.base, "Local compute", OrgKind::Provider).await;
    let setup = agent_setup(dir.path(), &x.base, &token, "node-p", None);
    let agent_proc = AgentProcess::start(&setup);
    let agent = wait_for_agents(&provider, 1).await.remove(0);
    let offer = offer(&provider, &agent.pool_id).await;
    let (consumer, lease) = consumer_with_lease(&x.operator, &x.base, &offer.id, 1, true).await;

    // Appends a line to `ticks` in its job directory every 200 ms (for 60 s at most).
    let job = consumer
        .create_job(
            &lease.id,
            &task("i=0; while [ $i -lt 300 ]; do echo $i >> ticks; i=$((i+1)); sleep 0.2; done"),
            None,
        )
        .await
        .unwrap();
    let running = wait_job(&consumer, &job.id, |j| {
        j.state == "running" && j.unit_ms >= 1_000
    })
    .await;
    assert!(!running.restartable);
    let attempt_id = running.attempts[0].id.clone();
    let ticks = setup.jobs_dir.join(&attempt_id).join("work/ticks");

    agent_proc.signal("STOP");
    let lost = wait_job(&consumer, &job.id, |j| j.state == "lost").await;
    assert_eq!(lost.attempts.len(), 1, "not restartable: no new attempt");
    assert_eq!(lost.attempts[0].state, "lost");
    let l = consumer.get_lease(&lease.id).await.unwrap();
    assert_eq!(
        l.state, "ended",
        "the auto-ending lease settled with its job"
    );
    assert_eq!(l.metered_unit_ms, lost.unit_ms);
    assert_eq!(
        l.cost_micros,
        Some(lost.unit_ms),
        "the consumer pays only acknowledged usage"
    );
    // The orphan runs on while its agent is paused.
    let before = lines_in(&ticks);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        lines_in(&ticks) > before,
        "the job kept running while the agent was paused"
    );

    agent_proc.signal("CONT");
    // The agent learns that its attempt is over and stops it: every process of it ends and the
    // file stops growing.
    wait_processes_gone(&attempt_id).await;
    let after_stop = lines_in(&ticks);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(lines_in(&ticks), after_stop, "the orphan still writes");

    // The exchange answers a heartbeat naming the old attempt with `stop`.
    let hb = provider
        .heartbeat(
            &agent.id,
            &HeartbeatRequest {
                running: vec![attempt_id.clone()],
            },
        )
        .await
        .unwrap();
    assert_eq!(hb.stop, vec![attempt_id.clone()]);
    assert_eq!(hb.agent.state, "alive", "the resumed agent is alive again");

    // The old attempt's reports are refused: an end event and validly signed usage.
    let refused = provider
        .attempt_event(
            &agent.id,
            &attempt_id,
            &AttemptEvent {
                state: "succeeded".into(),
                exit_code: Some(0),
                message: None,
                backend_id: None,
                started_ms: None,
                ended_ms: None,
            },
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some("stale_attempt"), "{refused:?}");
    let key_hex = std::fs::read_to_string(setup.state_dir.join("agent.key")).unwrap();
    let key_bytes: Vec<u8> = (0..64)
        .step_by(2)
        .map(|i| u8::from_str_radix(&key_hex.trim()[i..i + 2], 16).unwrap())
        .collect();
    let key = SigningKey::from_bytes(&key_bytes.try_into().unwrap());
    let seq = 1_000;
    let message = usage_message(&job.id, &attempt_id, seq, 60_000, None, None);
    let usage = provider
        .usage(
            &agent.id,
            &attempt_id,
            &UsageBatch {
                records: vec![UsageRecord {
                    seq,
                    unit_ms: 60_000,
                    cpu_ms: None,
                    peak_memory_mib: None,
                    signature_hex: key
                        .sign(message.as_bytes())
                        .to_bytes()
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect(),
                }],
            },
        )
        .await
        .unwrap_err();
    assert_eq!(usage.code(), Some("stale_attempt"), "{usage:?}");

    // Nothing the orphan or its agent said after the loss changed the job or the bill.
    let after = consumer.get_job(&job.id).await.unwrap();
    assert_eq!(after.state, "lost");
    assert_eq!(after.attempts[0].state, "lost");
    assert_eq!(after.unit_ms, lost.unit_ms);
    assert_eq!(after.exit_code, None);
    let l2 = consumer.get_lease(&lease.id).await.unwrap();
    assert_eq!(l2.metered_unit_ms, l.metered_unit_ms);
    assert_eq!(l2.cost_micros, l.cost_micros);
    let (_, _, system) = all_logs(&consumer, &job.id).await;
    assert!(
        !system.contains("cancelled"),
        "the orphan's end reached the job's log: {system:?}"
    );
    settle(&x.operator, &consumer, &lease.id).await;

    // The agent serves new work.
    let lease2 = buy(&consumer, &offer.id, 1, false).await;
    still_serves(&consumer, &lease2.id, "still-serving-after-pause").await;
    settle(&x.operator, &consumer, &lease2.id).await;
}

/// Scenario 2, liveness: a paused agent sends nothing, so the exchange must not see it: its
/// last-seen time stands still and it turns suspect (the exchange's own handling of the long poll
/// the agent left pending is no sign of the agent's life).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_agent_is_not_seen_alive_through_its_pending_long_poll() {
    let dir = Scratch::new("suanli-fail-pause-seen");
    let x = exchange(dir.path(), |c| {
        c.heartbeat_interval = Duration::from_secs(1);
        c.suspect_after = Duration::from_secs(1);
        c.lost_after = Duration::from_secs(60);
    })
    .await;
    let (_, provider, token) =
        admit(&x.operator, &x.base, "Local compute", OrgKind::Provider).await;
    let setup = agent_setup(dir.path(), &x.base, &token, "node-s", None);
    let agent_proc = AgentProcess::start(&setup);
    wait_for_agents(&provider, 1).await;
    // Past its first heartbeat, the agent waits in its long poll.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    agent_proc.signal("STOP");
    // Whatever the agent had sent before it stopped has been handled by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let first = provider.list_agents().await.unwrap().items.remove(0);
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let later = provider.list_agents().await.unwrap().items.remove(0);
    agent_proc.signal("CONT");
    assert_eq!(
        (later.last_seen_at.as_str(), later.state.as_str()),
        (first.last_seen_at.as_str(), "suspect"),
        "a stopped agent was seen alive: {first:#?} then {later:#?}"
    );
}

/// The real `suanli serve` on a fixed port with its data in `dir/exchange`, and its operator.
async fn serve_exchange(
    dir: &Path,
) -> (ServeProcess, std::path::PathBuf, u16, suanli_client::Client) {
    // The exchange makes its data directory itself (0700).
    let data_dir = dir.join("exchange");
    let port = free_port();
    let serve = ServeProcess::start(&data_dir, port);
    serve.wait_healthy().await;
    let operator_token = std::fs::read_to_string(data_dir.join("operator.token"))
        .unwrap()
        .trim()
        .to_owned();
    let operator = suanli_client::Client::new(serve.base.clone(), Some(operator_token));
    (serve, data_dir, port, operator)
}

/// Scenario 3: the exchange (the real `suanli serve`) is SIGKILLed while a job runs and started
/// again on the same port. The job runs on; the agent reconnects; the job ends `succeeded` with
/// one attempt, and its usage is neither lost nor counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_survives_an_exchange_killed_and_restarted_under_it() {
    let dir = Scratch::new("suanli-fail-exchange");
    let (mut serve, data_dir, port, operator) = serve_exchange(dir.path()).await;
    let base = serve.base.clone();
    let (_, provider, token) = admit(&operator, &base, "Local compute", OrgKind::Provider).await;
    let setup = agent_setup(dir.path(), &base, &token, "node-x", None);
    let _agent_proc = AgentProcess::start(&setup);
    let agent = wait_for_agents(&provider, 1).await.remove(0);
    let offer = offer(&provider, &agent.pool_id).await;
    let units = 1;
    let (consumer, lease) = consumer_with_lease(&operator, &base, &offer.id, units, false).await;

    // The job waits for a `go` file (created once the exchange is back) and runs 2 s more.
    let job = consumer
        .create_job(
            &lease.id,
            &task(&format!(
                "date +%s%3N > t0; {WAIT_FOR} go; sleep 2; date +%s%3N > t1; echo finished"
            )),
            None,
        )
        .await
        .unwrap();
    let running = wait_job(&consumer, &job.id, |j| {
        j.state == "running" && j.unit_ms >= 1_000
    })
    .await;
    let attempt_id = running.attempts[0].id.clone();
    let job_dir = setup.jobs_dir.join(&attempt_id);
    let work = job_dir.join("work");

    serve.sigkill();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(
        !processes_of(&attempt_id).is_empty(),
        "the job died with the exchange"
    );
    let serve = ServeProcess::start(&data_dir, port);
    serve.wait_healthy().await;
    // The agent reconnects: its usage reports arrive again.
    let back = wait_job(&consumer, &job.id, |j| j.unit_ms > running.unit_ms).await;
    assert_eq!(back.state, "running");
    std::fs::write(work.join("go"), "").unwrap();

    let done = wait_job(&consumer, &job.id, |j| !is_open(j)).await;
    assert_eq!(done.state, "succeeded", "{done:#?}");
    assert_eq!(done.exit_code, Some(0));
    assert_eq!(done.attempts.len(), 1, "dispatched twice: {done:#?}");
    assert_eq!(done.attempts[0].state, "succeeded");
    let wall_ms = job_wall_ms(&work);
    let expected = units * wall_ms;
    assert!(
        done.unit_ms.abs_diff(expected) <= 2_000 * units,
        "{} unit-ms billed for a job of {wall_ms} ms × {units} units",
        done.unit_ms
    );
    let (out, _, _) = all_logs(&consumer, &job.id).await;
    assert!(out.contains("finished"), "{out:?}");

    still_serves(&consumer, &lease.id, "still-serving-after-exchange-restart").await;
    settle(&operator, &consumer, &lease.id).await;
    drop(serve);
}

/// Scenarios 1 and 3 together: the exchange is down when the agent reports usage, and the agent
/// is restarted before the exchange is back. The report it could not deliver is still billed
/// (the agent saved it before sending, to send it again): the job's unit-seconds match its run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_pending_when_the_agent_restarts_is_still_billed() {
    let dir = Scratch::new("suanli-fail-pending-usage");
    let (mut serve, data_dir, port, operator) = serve_exchange(dir.path()).await;
    let base = serve.base.clone();
    let (_, provider, token) = admit(&operator, &base, "Local compute", OrgKind::Provider).await;
    let usage_interval_s = 3;
    let setup = agent_setup_with(dir.path(), &base, &token, "node-u", None, usage_interval_s);
    let mut agent_proc = AgentProcess::start(&setup);
    let agent = wait_for_agents(&provider, 1).await.remove(0);
    let offer = offer(&provider, &agent.pool_id).await;
    let units = 2;
    let (consumer, lease) = consumer_with_lease(&operator, &base, &offer.id, units, false).await;
    let job = consumer
        .create_job(
            &lease.id,
            &task(&format!(
                "date +%s%3N > t0; {WAIT_FOR} go; sleep 1; date +%s%3N > t1"
            )),
            None,
        )
        .await
        .unwrap();
    let running = wait_job(&consumer, &job.id, |j| {
        j.state == "running" && j.unit_ms >= units * 1_000
    })
    .await;
    let attempt_id = running.attempts[0].id.clone();
    let job_dir = setup.jobs_dir.join(&attempt_id);
    let work = job_dir.join("work");

    // The exchange goes down; the agent's next usage report cannot be delivered; then the agent
    // is killed too.
    serve.sigkill();
    tokio::time::sleep(Duration::from_secs(usage_interval_s + 2)).await;
    agent_proc.sigkill();
    let serve = ServeProcess::start(&data_dir, port);
    serve.wait_healthy().await;
    let _agent_proc = AgentProcess::start(&setup);
    wait_job(&consumer, &job.id, |j| j.unit_ms > running.unit_ms).await;
    std::fs::write(work.join("go"), "").unwrap();
    let done = wait_job(&consumer, &job.id, |j| !is_open(j)).await;
    assert_eq!(done.state, "succeeded", "{done:#?}");
    assert_eq!(done.attempts.len(), 1);
    let wall_ms = job_wall_ms(&work);
    let expected = units * wall_ms;
    assert!(
        done.unit_ms.abs_diff(expected) <= 2_000 * units,
        "{} unit-ms billed for a job of {wall_ms} ms × {units} units (expected about \
         {expected}): the report pending at the restart was never sent",
        done.unit_ms
    );
    settle(&operator, &consumer, &lease.id).await;
    drop(serve);
}

/// Scenario 4: a restartable job's agent (A) is killed for good while a second agent (B) serves
/// the same pool. Once A is lost the job is queued again and runs as attempt 2 on B; the consumer
/// pays attempt 1's acknowledged usage plus attempt 2's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restartable_job_of_a_lost_agent_runs_again_on_another_agent_of_the_pool() {
    let dir = Scratch::new("suanli-fail-failover");
    let x = exchange(dir.path(), |c| {
        c.heartbeat_interval = Duration::from_secs(1);
        c.suspect_after = Duration::from_secs(1);
        c.lost_after = Duration::from_secs(3);
    })
    .await;
    let (_, provider, token) =
        admit(&x.operator, &x.base, "Local compute", OrgKind::Provider).await;
    let setup_a = agent_setup(dir.path(), &x.base, &token, "node-a", None);
    let mut agent_a_proc = AgentProcess::start(&setup_a);
    let agent_a = wait_for_agents(&provider, 1).await.remove(0);
    let offer = offer(&provider, &agent_a.pool_id).await;
    let units = 1;
    let (consumer, lease) =
        consumer_with_lease(&x.operator, &x.base, &offer.id, units, false).await;

    let mut spec =
        task("date +%s%3N > t0; sleep 4; date +%s%3N > t1; echo done-on-$SUANLI_ATTEMPT_ID");
    spec.task.restartable = true;
    let job = consumer.create_job(&lease.id, &spec, None).await.unwrap();
    let running = wait_job(&consumer, &job.id, |j| {
        j.state == "running" && j.unit_ms >= 1_000
    })
    .await;
    assert_eq!(running.attempts[0].agent_id, agent_a.id);
    let attempt_1 = running.attempts[0].id.clone();

    // B joins A's pool, then A dies for good.
    let setup_b = agent_setup(
        dir.path(),
        &x.base,
        &token,
        "node-b",
        Some(&agent_a.pool_id),
    );
    let _agent_b_proc = AgentProcess::start(&setup_b);
    let agents = wait_for_agents(&provider, 2).await;
    let agent_b = agents.iter().find(|a| a.id != agent_a.id).unwrap().clone();
    assert_eq!(agent_b.pool_id, agent_a.pool_id);
    agent_a_proc.sigkill();
    // Nothing of attempt 1 arrives any more.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let attempt_1_usage = consumer.get_job(&job.id).await.unwrap().unit_ms;
    assert!(attempt_1_usage >= 1_000);

    let done = wait_job(&consumer, &job.id, |j| !is_open(j) && j.attempts.len() >= 2).await;
    assert_eq!(done.state, "succeeded", "{done:#?}");
    assert_eq!(done.exit_code, Some(0));
    assert_eq!(done.attempts.len(), 2, "{done:#?}");
    assert_eq!(done.attempts[0].id, attempt_1);
    assert_eq!(done.attempts[0].state, "lost");
    assert_eq!(done.attempts[0].agent_id, agent_a.id);
    assert_eq!(done.attempts[1].state, "succeeded");
    assert_eq!(done.attempts[1].agent_id, agent_b.id);
    let attempt_2 = done.attempts[1].id.clone();
    let (out, _, _) = all_logs(&consumer, &job.id).await;
    assert!(out.contains(&format!("done-on-{attempt_2}")), "{out:?}");
    assert!(
        !out.contains(&format!("done-on-{attempt_1}")),
        "the orphan's output reached the job's log: {out:?}"
    );

    // Attempt 2 is billed for its own run on B: units × its milliseconds (+1 s for its
    // start-up).
    let wall_2 = job_wall_ms(&setup_b.jobs_dir.join(&attempt_2).join("work"));
    let attempt_2_usage = done.unit_ms - attempt_1_usage;
    assert!(
        attempt_2_usage >= units * wall_2 && attempt_2_usage <= units * (wall_2 + 1_000),
        "attempt 2 ran {wall_2} ms × {units} units and was billed {attempt_2_usage} unit-ms \
         (job {}, attempt 1 {attempt_1_usage})",
        done.unit_ms
    );

    still_serves(&consumer, &lease.id, "b-still-serving").await;
    let settled = settle(&x.operator, &consumer, &lease.id).await;
    assert!(settled.metered_unit_ms >= attempt_1_usage + attempt_2_usage);
    // Attempt 1's orphan had nobody to stop it; it ends on its own.
    wait_processes_gone(&attempt_1).await;

    // A comes back: it finds attempt 1 over, its reports are refused and change nothing, and
    // it cleans up after it (its note, its cgroup).
    let job_dir_1 = setup_a.jobs_dir.join(&attempt_1);
    let cgroups_1 = cgroup_dirs(&job_dir_1);
    let note_1 = setup_a
        .state_dir
        .join("attempts")
        .join(format!("{attempt_1}.json"));
    assert!(note_1.exists(), "A's note of attempt 1 is gone");
    let _agent_a_again = AgentProcess::start(&setup_a);
    for _ in 0..600 {
        if !note_1.exists() && cgroups_1.iter().all(|d| !d.exists()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !note_1.exists(),
        "the returned agent never settled attempt 1"
    );
    let left: Vec<_> = cgroups_1.iter().filter(|d| d.exists()).collect();
    assert!(left.is_empty(), "attempt 1's cgroups are left: {left:?}");
    let after = consumer.get_job(&job.id).await.unwrap();
    assert_eq!(
        (after.state.as_str(), after.unit_ms, after.attempts.len()),
        ("succeeded", done.unit_ms, 2),
        "{after:#?}"
    );
    assert_eq!(after.attempts[0].state, "lost");
    let check = x.operator.ledger_check().await.unwrap();
    assert!(check.ok, "{:?}", check.violations);
}

/// One agent for the limit tests: exchange, provider, agent, offer, consumer with a 1-unit
/// (256 MiB) lease.
struct LimitsSetup {
    _dir: Scratch,
    x: Exchange,
    _agent: AgentProcess,
    consumer: suanli_client::Client,
    lease: Lease,
}

async fn limits_setup(prefix: &str) -> LimitsSetup {
    let dir = Scratch::new(prefix);
    let x = exchange(dir.path(), |_| {}).await;
    let (_, provider, token) =
        admit(&x.operator, &x.base, "Local compute", OrgKind::Provider).await;
    let setup = agent_setup(dir.path(), &x.base, &token, "node-l", None);
    let agent_proc = AgentProcess::start(&setup);
    let agent = wait_for_agents(&provider, 1).await.remove(0);
    let offer = offer(&provider, &agent.pool_id).await;
    let (consumer, lease) = consumer_with_lease(&x.operator, &x.base, &offer.id, 1, false).await;
    LimitsSetup {
        _dir: dir,
        x,
        _agent: agent_proc,
        consumer,
        lease,
    }
}

/// Scenario 5a: a job past its time limit is stopped and ends `timed_out`, billed for about its
/// limit; the agent runs the next job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_its_time_limit_ends_timed_out() {
    let s = limits_setup("suanli-fail-time").await;
    let mut spec = task("echo started; sleep 60");
    spec.task.time_limit_s = Some(2);
    let job = s
        .consumer
        .create_job(&s.lease.id, &spec, None)
        .await
        .unwrap();
    let done = wait_job(&s.consumer, &job.id, |j| !is_open(j)).await;
    assert_eq!(done.state, "timed_out", "{done:#?}");
    assert_eq!(done.attempts.len(), 1);
    assert_eq!(done.attempts[0].state, "timed_out");
    assert!(
        done.reason
            .as_deref()
            .is_some_and(|r| r.contains("time limit")),
        "{done:#?}"
    );
    // Billed up to its 2 s limit (the exchange refuses use past an attempt's time limit, so the
    // agent never reports the kill grace), not for the 60 s it asked.
    assert!(
        (1_000..=2_000).contains(&done.unit_ms),
        "{} unit-ms for a 2 s limit",
        done.unit_ms
    );
    let attempt_id = done.attempts[0].id.clone();
    wait_processes_gone(&attempt_id).await;
    still_serves(&s.consumer, &s.lease.id, "ok").await;
    settle(&s.x.operator, &s.consumer, &s.lease.id).await;
}

/// Scenario 5b: a job allocating far beyond its lease's memory (1 unit × 256 MiB) ends `failed`
/// with what the backend saw; the agent runs the next job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_beyond_its_memory_ends_failed() {
    let s = limits_setup("suanli-fail-memory").await;
    let job = s
        .consumer
        .create_job(
            &s.lease.id,
            &task(
                "python3 -c 'b = bytearray(1024 * 1024 * 1024); print(len(b))' && echo ALLOCATED",
            ),
            None,
        )
        .await
        .unwrap();
    let done = wait_job(&s.consumer, &job.id, |j| !is_open(j)).await;
    let (out, err, system) = all_logs(&s.consumer, &job.id).await;
    eprintln!(
        "memory job: state {} exit {:?} reason {:?}; stderr {err:?}; system {system:?}",
        done.state, done.exit_code, done.reason
    );
    assert_eq!(done.state, "failed", "{done:#?} {out:?} {err:?}");
    assert!(!out.contains("ALLOCATED"), "1 GiB fit in 256 MiB: {out:?}");
    let code = done.exit_code.expect("the exit code is reported");
    assert_ne!(code, 0);
    let reason = done.reason.clone().unwrap_or_default();
    // The backend says why: the kernel killed it at the cgroup's limit (out of memory, 137), or
    // the address-space rlimit made the allocation fail (MemoryError, exit 1).
    assert!(
        reason.contains("out of memory") || err.contains("MemoryError"),
        "the job's report does not say it ran out of memory: exit {code}, reason {reason:?}, \
         stderr {err:?}"
    );
    assert_eq!(done.attempts[0].state, "failed");
    assert_eq!(done.attempts[0].exit_code, Some(code));
    still_serves(&s.consumer, &s.lease.id, "ok").await;
    settle(&s.x.operator, &s.consumer, &s.lease.id).await;
}

/// Scenario 5c: a fork bomb under the default process limit ends (failed, or timed out at its
/// small limit), every process of it is gone, and the agent runs `echo ok` next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_ends_and_the_agent_runs_the_next_job() {
    let s = limits_setup("suanli-fail-forkbomb").await;
    let mut spec = task("bomb() { bomb | bomb; }; bomb");
    spec.task.time_limit_s = Some(5);
    let job = s
        .consumer
        .create_job(&s.lease.id, &spec, None)
        .await
        .unwrap();
    let done = wait_job(&s.consumer, &job.id, |j| !is_open(j)).await;
    eprintln!(
        "fork bomb: state {} exit {:?} reason {:?}",
        done.state, done.exit_code, done.reason
    );
    assert!(
        done.state == "failed" || done.state == "timed_out",
        "{done:#?}"
    );
    assert_eq!(done.attempts.len(), 1);
    wait_processes_gone(&done.attempts[0].id).await;
    still_serves(&s.consumer, &s.lease.id, "ok").await;
    settle(&s.x.operator, &s.consumer, &s.lease.id).await;
}
