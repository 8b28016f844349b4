//! The Slurm backend against a real single-node Slurm (`scripts/slurm.sh start`): success and
//! usage reconciled with Slurm's own record, non-zero exit, cancel, time limit, requests Slurm
//! refuses or can never run, an agent restart mid-job, a slurmctld restart mid-job, and capacity
//! with a drained node.
//!
//! Without Slurm these tests say so and pass, unless `SUANLI_REQUIRE_SLURM=1` (set by
//! `scripts/test.sh`, which starts Slurm) makes a missing Slurm a failure. They take turns: they
//! share one node and one controller, which one of them restarts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use suanli_agent::local::{JobFile, JobLaunch, JobState, LogStream, Outcome};
use suanli_agent::slurm::parse::{parse_duration, parse_exit_code};
use suanli_agent::slurm::{
    lookup_account, Phase, SlurmBackend, SlurmJob, SlurmOptions, SlurmSubmit,
};
use suanli_agent::Error;

static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const PATIENCE: Duration = Duration::from_secs(180);

fn slurm_up() -> bool {
    std::process::Command::new("scontrol")
        .arg("ping")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("is UP"))
        .unwrap_or(false)
}

/// Whether to run: Slurm answers, or its absence is a failure when required.
fn slurm_or_skip(test: &str) -> bool {
    if slurm_up() {
        return true;
    }
    assert!(
        std::env::var("SUANLI_REQUIRE_SLURM").as_deref() != Ok("1"),
        "SUANLI_REQUIRE_SLURM=1 but Slurm does not answer: run scripts/slurm.sh start"
    );
    eprintln!("{test}: skipped, no Slurm here (scripts/slurm.sh start runs one)");
    false
}

fn jobs_dir(name: &str) -> PathBuf {
    let base = Path::new("/var/tmp/suanli-slurm-tests");
    std::fs::create_dir_all(base).unwrap();
    let dir = base.join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

async fn backend(name: &str) -> SlurmBackend {
    let mut o = SlurmOptions::new(jobs_dir(name), vec!["debug".into(), "short".into()]);
    o.allow_root = true;
    o.poll_interval = Duration::from_millis(300);
    SlurmBackend::new(o).await.expect("Slurm backend")
}

fn attempt(name: &str) -> String {
    format!(
        "{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    )
}

async fn submit(
    b: &SlurmBackend,
    launch: JobLaunch,
    partition: &str,
    ntasks: u64,
) -> Result<SlurmJob, Error> {
    submit_with_memory(b, launch, partition, ntasks, 100).await
}

async fn submit_with_memory(
    b: &SlurmBackend,
    launch: JobLaunch,
    partition: &str,
    ntasks: u64,
    mem_per_cpu_mib: u64,
) -> Result<SlurmJob, Error> {
    b.submit(SlurmSubmit {
        launch,
        account: lookup_account("nobody").await.unwrap(),
        partition: partition.into(),
        ntasks,
        cpus_per_task: 1,
        gpus_per_task: 0,
        mem_per_cpu_mib,
        slurm_account: None,
        qos: None,
    })
    .await
}

#[derive(Debug, Default)]
struct Logs {
    stdout: String,
    stderr: String,
    system: String,
}

async fn finish(mut job: SlurmJob) -> (Outcome, Logs) {
    let mut rx = job.take_logs();
    let collect = tokio::spawn(async move {
        let mut logs = Logs::default();
        while let Some(c) = rx.recv().await {
            match c.stream {
                LogStream::Stdout => logs.stdout.push_str(&c.data),
                LogStream::Stderr => logs.stderr.push_str(&c.data),
                LogStream::System => {
                    logs.system.push_str(&c.data);
                    logs.system.push('\n');
                }
            }
        }
        logs
    });
    let outcome = tokio::time::timeout(PATIENCE, job.finished())
        .await
        .expect("job ends");
    let logs = tokio::time::timeout(PATIENCE, collect)
        .await
        .expect("logs end")
        .unwrap();
    (outcome, logs)
}

async fn wait_running(job: &mut SlurmJob) {
    tokio::time::timeout(PATIENCE, async {
        loop {
            match job.changed().await {
                Phase::Running { .. } => return,
                Phase::Finished(o) => panic!("ended before running: {o:?}"),
                _ => {}
            }
        }
    })
    .await
    .expect("job runs");
}

/// Slurm's own record of a finished job from the job-completion log: (state, exit code,
/// elapsed seconds, allocated CPUs).
fn slurm_record(id: u64) -> (String, Option<i32>, u64, u64) {
    let out = std::process::Command::new("sacct")
        .args([
            "-c",
            "-j",
            &id.to_string(),
            "-P",
            "-n",
            "-o",
            "JobID,State,ExitCode,Elapsed,AllocCPUS",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{id}|")))
        .unwrap_or_else(|| panic!("sacct -c has no line for job {id}: {text:?}"));
    let f: Vec<&str> = line.split('|').collect();
    (
        f[1].to_owned(),
        parse_exit_code(f[2]),
        parse_duration(f[3]).unwrap(),
        f[4].parse().unwrap(),
    )
}

#[tokio::test]
async fn job_runs_as_the_account_and_usage_matches_slurm() {
    let _turn = TURN.lock().await;
    if !slurm_or_skip("job_runs_as_the_account_and_usage_matches_slurm") {
        return;
    }
    let b = backend("ok").await;
    assert!(b.version().contains("slurm"), "{}", b.version());
    let mut launch = JobLaunch::new(
        attempt("ok"),
        "cat in/data.txt; id -un; echo \"$GREETING\"; echo warn >&2; sleep 2",
    );
    launch.setup = Some("echo setting up".into());
    launch.env.insert("GREETING".into(), "it's here".into());
    launch.files = vec![JobFile {
        path: "in/data.txt".into(),
        data: b"uploaded\n".to_vec(),
        mode: 0o644,
    }];
    let job = submit(&b, launch, "debug", 2).await.unwrap();
    let id = job.slurm_id();
    let (outcome, logs) = finish(job).await;
    assert_eq!(outcome.state, JobState::Succeeded, "{outcome:?} {logs:?}");
    assert_eq!(outcome.exit_code, Some(0));
    assert_eq!(logs.stdout, "setting up\nuploaded\nnobody\nit's here\n");
    assert_eq!(logs.stderr, "warn\n");
    assert!(
        logs.system.contains(&format!(
            "Slurm job {id} submitted to partition debug as nobody"
        )),
        "{}",
        logs.system
    );
    assert!(logs.system.contains("COMPLETED"), "{}", logs.system);
    // What Suanli bills (tasks × Slurm's elapsed seconds) is what Slurm recorded.
    let (state, code, elapsed, cpus) = slurm_record(id);
    assert_eq!((state.as_str(), code), ("COMPLETED", Some(0)));
    assert_eq!(cpus, 2, "two tasks of one CPU");
    assert!(elapsed >= 2, "slept 2 s, Slurm says {elapsed}");
    assert_eq!(outcome.usage.wall_ms, elapsed * 1000);
    assert_eq!(2 * outcome.usage.wall_ms / 1000, cpus * elapsed);
}

#[tokio::test]
async fn non_zero_exit_and_failed_setup() {
    let _turn = TURN.lock().await;
    if !slurm_or_skip("non_zero_exit_and_failed_setup") {
        return;
    }
    let b = backend("exit").await;
    let job = submit(
        &b,
        JobLaunch::new(attempt("exit3"), "echo before; exit 3"),
        "debug",
        1,
    )
    .await
    .unwrap();
    let id = job.slurm_id();
    let (outcome, logs) = finish(job).await;
    assert_eq!(
        outcome.state,
        JobState::Failed { exit_code: Some(3) },
        "{outcome:?}"
    );
    assert_eq!(logs.stdout, "before\n");
    assert!(outcome.message.contains("FAILED"), "{}", outcome.message);
    assert_eq!(slurm_record(id).1, Some(3));

    let mut launch = JobLaunch::new(attempt("setup"), "echo never");
    launch.setup = Some("exit 7".into());
    let (outcome, logs) = finish(submit(&b, launch, "debug", 1).await.unwrap()).await;
    assert_eq!(outcome.state, JobState::Failed { exit_code: Some(7) });
    assert_eq!(logs.stdout, "");
    assert!(
        logs.stderr.contains("setup failed with exit code 7"),
        "{}",
        logs.stderr
    );
}

#[tokio::test]
async fn cancel_and_time_limit() {
    let _turn = TURN.lock().await;
    if !slurm_or_skip("cancel_and_time_limit") {
        return;
    }
    let b = backend("cancel").await;
    let mut job = submit(
        &b,
        JobLaunch::new(attempt("cancel"), "echo started; sleep 120"),
        "debug",
        1,
    )
    .await
    .unwrap();
    wait_running(&mut job).await;
    job.cancel().await;
    let id = job.slurm_id();
    let (outcome, _) = finish(job).await;
    assert_eq!(outcome.state, JobState::Cancelled, "{outcome:?}");
    assert!(outcome.usage.wall_ms < 120_000);
    assert_eq!(slurm_record(id).0, "CANCELLED");

    // Slurm's own limit is whole minutes; the attempt's 3 s are enforced by the backend.
    let mut launch = JobLaunch::new(attempt("limit"), "sleep 120");
    launch.time_limit_s = 3;
    let (outcome, logs) = finish(submit(&b, launch, "debug", 1).await.unwrap()).await;
    assert_eq!(outcome.state, JobState::TimedOut, "{outcome:?}");
    assert_eq!(outcome.usage.wall_ms, 3_000, "never billed past the limit");
    assert!(
        logs.system.contains("time limit of 3 s reached"),
        "{}",
        logs.system
    );
}

#[tokio::test]
async fn requests_slurm_refuses_or_can_never_run() {
    let _turn = TURN.lock().await;
    if !slurm_or_skip("requests_slurm_refuses_or_can_never_run") {
        return;
    }
    let b = backend("refused").await;
    // More memory than any node has: sbatch refuses, nothing runs.
    let att = attempt("toobig");
    let err = submit_with_memory(
        &b,
        JobLaunch::new(att.clone(), "true"),
        "debug",
        1,
        100_000_000,
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("Slurm refused the job"), "{text}");
    assert!(
        text.contains("Requested node configuration is not available"),
        "{text}"
    );

    // More CPUs than the partition has: Slurm accepts it, but it would pend forever.
    let job = submit(&b, JobLaunch::new(attempt("toowide"), "true"), "debug", 512)
        .await
        .unwrap();
    let (outcome, _) = finish(job).await;
    assert_eq!(
        outcome.state,
        JobState::Failed { exit_code: None },
        "{outcome:?}"
    );
    assert!(
        outcome.message.contains("PartitionConfig"),
        "{}",
        outcome.message
    );

    // Longer than the partition allows: Slurm accepts it but it would pend forever.
    let mut launch = JobLaunch::new(attempt("toolong"), "true");
    launch.time_limit_s = 3_600;
    let job = submit(&b, launch, "short", 1).await.unwrap();
    let (outcome, logs) = finish(job).await;
    assert_eq!(
        outcome.state,
        JobState::Failed { exit_code: None },
        "{outcome:?}"
    );
    assert!(
        outcome.message.contains("PartitionTimeLimit"),
        "{}",
        outcome.message
    );
    assert!(
        logs.system.contains("PartitionTimeLimit"),
        "{}",
        logs.system
    );
    assert_eq!(outcome.usage.wall_ms, 0);

    // A partition the agent does not sell is refused before Slurm is asked.
    let err = submit(&b, JobLaunch::new(attempt("other"), "true"), "nosuch", 1)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidJob(_)), "{err}");
}

#[tokio::test]
async fn a_restarted_agent_finds_its_job_again() {
    let _turn = TURN.lock().await;
    if !slurm_or_skip("a_restarted_agent_finds_its_job_again") {
        return;
    }
    let dir = jobs_dir("reattach");
    let options = || {
        let mut o = SlurmOptions::new(dir.clone(), vec!["debug".into()]);
        o.allow_root = true;
        o.poll_interval = Duration::from_millis(300);
        o
    };
    let att = attempt("reattach");
    let first = SlurmBackend::new(options()).await.unwrap();
    let mut job = submit(
        &first,
        JobLaunch::new(att.clone(), "echo one; sleep 3; echo two"),
        "debug",
        1,
    )
    .await
    .unwrap();
    wait_running(&mut job).await;
    let id = job.slurm_id();
    // The agent dies: its handle and backend are gone, the Slurm job is not.
    drop(job);
    drop(first);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = SlurmBackend::new(options()).await.unwrap();
    assert_eq!(
        second.find(&att).await.unwrap(),
        Some(id),
        "found by its job name"
    );
    // It had forwarded "one\n" (4 bytes) of stdout before dying.
    let (outcome, logs) = finish(second.attach(&att, id, 3_600, Some((4, 0)))).await;
    assert_eq!(outcome.state, JobState::Succeeded, "{outcome:?}");
    assert_eq!(logs.stdout, "two\n");
    assert_eq!(outcome.usage.wall_ms / 1000, slurm_record(id).2);
}

fn slurmctld_pid() -> Option<i32> {
    std::fs::read_to_string("/run/slurmctld.pid")
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[tokio::test]
async fn jobs_survive_a_slurmctld_restart() {
    let _turn = TURN.lock().await;
    if !slurm_or_skip("jobs_survive_a_slurmctld_restart") {
        return;
    }
    let Some(pid) = slurmctld_pid() else {
        eprintln!("no /run/slurmctld.pid: this Slurm is not ours to restart; skipped");
        return;
    };
    let b = backend("ctld").await;
    let mut job = submit(
        &b,
        JobLaunch::new(attempt("ctld"), "echo a; sleep 6; echo b"),
        "debug",
        1,
    )
    .await
    .unwrap();
    wait_running(&mut job).await;
    let id = job.slurm_id();
    // Stop the controller mid-job, keep it down for a few polls, start it again.
    assert!(std::process::Command::new("kill")
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success());
    for _ in 0..100 {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !matches!(job.phase(), Phase::Finished(_)),
        "nothing is concluded while Slurm is away"
    );
    assert!(std::process::Command::new("slurmctld")
        .status()
        .unwrap()
        .success());
    let (outcome, logs) = finish(job).await;
    assert_eq!(outcome.state, JobState::Succeeded, "{outcome:?} {logs:?}");
    assert_eq!(logs.stdout, "a\nb\n", "output once, nothing lost");
    let (state, _, elapsed, _) = slurm_record(id);
    assert_eq!(state, "COMPLETED");
    assert_eq!(outcome.usage.wall_ms / 1000, elapsed);
    assert_eq!(
        logs.system.matches("COMPLETED").count(),
        1,
        "{}",
        logs.system
    );
}

#[tokio::test]
async fn capacity_comes_from_slurm_and_drained_nodes_are_not_sold() {
    let _turn = TURN.lock().await;
    if !slurm_or_skip("capacity_comes_from_slurm_and_drained_nodes_are_not_sold") {
        return;
    }
    let b = backend("nodes").await;
    let nodes = b.nodes().await.unwrap();
    assert!(!nodes.is_empty());
    let node = nodes[0].clone();
    assert_eq!(
        node.partition, "debug",
        "a node in two sold partitions is sold in the first"
    );
    assert!(node.cpus >= 1 && node.memory_mib >= 1, "{node:?}");
    assert!(node.sellable, "{node:?}");
    let scontrol = |args: &[&str]| {
        assert!(std::process::Command::new("scontrol")
            .args(args)
            .status()
            .unwrap()
            .success());
    };
    scontrol(&[
        "update",
        &format!("NodeName={}", node.name),
        "State=DRAIN",
        "Reason=suanli-test",
    ]);
    let drained = b
        .nodes()
        .await
        .unwrap()
        .into_iter()
        .find(|n| n.name == node.name)
        .unwrap();
    scontrol(&["update", &format!("NodeName={}", node.name), "State=RESUME"]);
    assert!(!drained.sellable, "{drained:?}");
    assert!(drained.reason.starts_with("suanli-test"), "{drained:?}");
    // Resumed, it is sold again (Slurm may take a moment to say so).
    let mut back = false;
    for _ in 0..100 {
        back = b
            .nodes()
            .await
            .unwrap()
            .iter()
            .any(|n| n.name == node.name && n.sellable);
        if back {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "the resumed node is sold again");
}

#[tokio::test]
async fn root_is_refused_unless_allowed_and_jobs_never_run_as_root() {
    if !slurm_or_skip("root_is_refused_unless_allowed_and_jobs_never_run_as_root") {
        return;
    }
    assert!(lookup_account("root").await.is_err());
    assert!(lookup_account("no-such-user-here").await.is_err());
    if suanli_agent::running_as_root() {
        let o = SlurmOptions::new(jobs_dir("root"), vec!["debug".into()]);
        let err = SlurmBackend::new(o).await.unwrap_err();
        assert!(err.to_string().contains("allow_root"), "{err}");
    }
}
