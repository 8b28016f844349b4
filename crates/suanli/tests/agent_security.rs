//! Issue 17: a hostile consumer's job against the real agent on this machine. Nothing the agent
//! reads on a job's behalf may be opened with the agent's privileges by a path the job could have
//! influenced: outputs through symbolic links (at any component), hard links and FIFOs are
//! refused and named to the consumer; the logs stay in a place the job cannot write, so swapping
//! them for links before an agent restart ships nothing but the job's own output.

use std::time::Duration;

use suanli_api::*;

#[allow(dead_code)]
mod common;
use common::{
    admit, agent_setup, all_logs, consumer_with_lease, exchange, offer, task, wait_for_agents,
    wait_job, AgentProcess, Scratch,
};

/// The outputs attack: the job learns where the agent's secrets are (here: told; a real job reads
/// its mount table) and links them into its output folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_through_links_are_refused_and_named() {
    let dir = Scratch::new("suanli-sec-outputs");
    let x = exchange(dir.path(), |_| {}).await;
    let (_, provider, token) =
        admit(&x.operator, &x.base, "Local compute", OrgKind::Provider).await;
    let setup = agent_setup(dir.path(), &x.base, &token, "node-s", None);
    let _agent = AgentProcess::start(&setup);
    let agent = wait_for_agents(&provider, 1).await.remove(0);
    let offer = offer(&provider, &agent.pool_id).await;
    let (consumer, lease) = consumer_with_lease(&x.operator, &x.base, &offer.id, 1, false).await;

    let token_file = dir.path().join("node-s.token");
    let token_dir = dir.path();
    let run = format!(
        "mkdir -p out && echo fine > out/ok.txt && \
         ln -s {tokdir} out/tokdir && ln -s /etc out/etc && ln -s {tok} out/tok && \
         ln {tok} out/hard 2>/dev/null; mkfifo out/fifo; echo done",
        tokdir = token_dir.display(),
        tok = token_file.display()
    );
    let mut job = task(&run);
    job.task.outputs = vec![
        "out/tokdir/node-s.token".into(),
        "out/etc/shadow".into(),
        "out/tok".into(),
        "out/ok.txt".into(),
        "out/".into(),
    ];
    let job = consumer.create_job(&lease.id, &job, None).await.unwrap();
    let done = wait_job(&consumer, &job.id, |j| {
        !matches!(j.state.as_str(), "queued" | "dispatched" | "running")
    })
    .await;
    assert_eq!(done.state, "succeeded", "{done:#?}");
    let files = consumer.list_outputs(&job.id).await.unwrap();
    let paths: Vec<&str> = files.items.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        ["out/ok.txt"],
        "only the job's own file is collected"
    );
    for f in &files.items {
        let bytes = consumer.get_output(&job.id, &f.path).await.unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(&token),
            "the provider's token was delivered as an output"
        );
    }
    // The consumer is told what was refused, and why.
    let reason = done.reason.clone().unwrap_or_default();
    for refused in ["out/tokdir", "out/etc", "out/tok", "out/fifo"] {
        assert!(reason.contains(refused), "{refused} not named: {reason}");
    }
    assert!(reason.contains("symbolic link"), "{reason}");
}

/// The logs attack: the job replaces its log files with links to the agent's secrets, then the
/// agent restarts and re-attaches (it opens the logs again). The logs are the agent's, in a
/// directory the job can neither see (in the sandbox) nor write: the link is never made, and
/// nothing but the job's own output reaches the consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapped_log_files_ship_nothing_but_the_jobs_output_after_a_restart() {
    let dir = Scratch::new("suanli-sec-logs");
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

    let token_file = dir.path().join("node-l.token");
    let run = format!(
        "for f in stdout.log stderr.log ../stdout.log ../stderr.log; do \
           ln -sf {tok} \"$SUANLI_JOB_DIR/$f\" 2>/dev/null && echo linked-$f; \
         done; echo before; i=0; while [ ! -e go ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; \
         echo after",
        tok = token_file.display()
    );
    let job = consumer
        .create_job(&lease.id, &task(&run), None)
        .await
        .unwrap();
    let running = wait_job(&consumer, &job.id, |j| j.state == "running").await;
    let attempt_dir = setup.jobs_dir.join(&running.attempts[0].id);
    for _ in 0..300 {
        if std::fs::read_to_string(attempt_dir.join("stdout.log"))
            .unwrap_or_default()
            .contains("before")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The agent's log files are still its own regular files.
    for f in ["stdout.log", "stderr.log"] {
        let meta = std::fs::symlink_metadata(attempt_dir.join(f)).unwrap();
        assert!(meta.file_type().is_file(), "{f} was replaced");
    }
    agent_proc.sigkill();
    let _agent_again = AgentProcess::start(&setup);
    tokio::time::sleep(Duration::from_secs(2)).await;
    std::fs::write(attempt_dir.join("work/go"), "").unwrap();
    let done = wait_job(&consumer, &job.id, |j| {
        !matches!(j.state.as_str(), "queued" | "dispatched" | "running")
    })
    .await;
    assert_eq!(done.state, "succeeded", "{done:#?}");
    let (out, err, system) = all_logs(&consumer, &job.id).await;
    let everything = format!("{out}{err}{system}");
    assert!(
        !everything.contains(&token),
        "the provider's token reached the consumer's logs"
    );
    // Whatever the job did in its own view, the agent's files are its own, untouched.
    for f in ["stdout.log", "stderr.log"] {
        let meta = std::fs::symlink_metadata(attempt_dir.join(f)).unwrap();
        assert!(meta.file_type().is_file(), "{f} was replaced");
    }
    assert!(out.contains("before") && out.contains("after"), "{out:?}");
}
