//! Issue 17, "billing and time limits": real jobs on a real agent. Sub-second jobs are billed
//! what they used, to the millisecond, and what a lease is billed is the sum of its jobs' own
//! run times; a job's start and end are its own, however late its agent reports them.

#[allow(dead_code)]
mod common;

use std::time::Duration;

use common::{settle, task, wait_job, LocalMarket};
use suanli_api::*;

fn ms(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp_millis()
}

/// Every job of `jobs` billed exactly its own run time (one unit): `unit_ms` is its end less
/// its start, as the consumer sees them.
fn billed_its_own_time(job: &Job) -> u64 {
    let (start, end) = (
        ms(job.started_at.as_deref().unwrap()),
        ms(job.ended_at.as_deref().unwrap()),
    );
    assert_eq!(
        job.unit_ms,
        u64::try_from(end - start).unwrap(),
        "billed {} unit-ms for a job that ran from {start} to {end}: {job:#?}",
        job.unit_ms
    );
    job.unit_ms
}

/// Ten 0.9 s busy jobs on one lease were billed 0 (each rounded down to whole seconds). Now
/// each is billed its own time to the millisecond, and the lease the sum of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_sub_second_jobs_are_billed_the_time_they_used() {
    let m = LocalMarket::start("suanli-bill-short", |_| {}, "").await;
    // Issue 17: `pool list` showed AGENT "no" for the pool of a live agent.
    let listed = m.provider.get_pool(&m.pool_id).await.unwrap();
    assert!(listed.agent_connected, "{listed:#?}");
    let (x, consumer, lease) = (&m.x, &m.consumer, &m.lease);
    let busy = "end=$(( $(date +%s%N) + 900000000 )); \
                while [ \"$(date +%s%N)\" -lt \"$end\" ]; do :; done";
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(
            consumer
                .create_job(&lease.id, &task(busy), None)
                .await
                .unwrap()
                .id,
        );
    }
    let mut total = 0;
    for id in &ids {
        let job = wait_job(consumer, id, |j| {
            !matches!(j.state.as_str(), "queued" | "dispatched" | "running")
        })
        .await;
        assert_eq!(job.state, "succeeded", "{job:#?}");
        let used = billed_its_own_time(&job);
        assert!(used >= 900, "a 0.9 s job billed {used} unit-ms");
        total += used;
    }
    // The lease is billed the sum of its jobs' times (1 micro per unit-ms here), rounded once.
    let settled = settle(&x.operator, consumer, &lease.id).await;
    assert_eq!(settled.metered_unit_ms, total);
    assert!(settled.cost_micros.unwrap() >= 9_000);
}

/// A job of one second whose agent was stopped (SIGSTOP) for eight: before, the exchange took
/// the job's end from when the delayed report arrived (a 0.1 s job "ran 7s") and the agent
/// billed up to then. Now the job's own start and end are reported, and billed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_report_keeps_the_jobs_own_times() {
    let m = LocalMarket::start(
        "suanli-bill-late",
        |c| {
            c.suspect_after = Duration::from_secs(30);
            c.lost_after = Duration::from_secs(120);
        },
        "",
    )
    .await;
    let (x, consumer, lease, agent) = (&m.x, &m.consumer, &m.lease, &m.agent);
    let job = consumer
        .create_job(&lease.id, &task("sleep 1"), None)
        .await
        .unwrap();
    wait_job(consumer, &job.id, |j| j.state == "running").await;
    agent.signal("STOP");
    tokio::time::sleep(Duration::from_secs(8)).await;
    agent.signal("CONT");
    let done = wait_job(consumer, &job.id, |j| {
        !matches!(j.state.as_str(), "queued" | "dispatched" | "running")
    })
    .await;
    assert_eq!(done.state, "succeeded", "{done:#?}");
    let used = billed_its_own_time(&done);
    assert!(
        (1_000..4_000).contains(&used),
        "a 1 s job shown and billed as running {used} ms after its agent was stopped for 8 s"
    );
    // The attempt shows the same times as the job.
    assert_eq!(done.attempts[0].started_at, done.started_at);
    assert_eq!(done.attempts[0].ended_at, done.ended_at);
    settle(&x.operator, consumer, &lease.id).await;
}
