//! The local backend with real processes: output, exit codes, limits, cancellation, sandboxing
//! and reattaching. No mocks; timeouts only guard against hangs.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;
use suanli_agent::local::{
    CgroupVersion, JobFile, JobLaunch, JobNetwork, JobState, LimitMechanism, LocalBackend,
    LocalOptions, LogStream, Reattached, SandboxKind, UseBubblewrap, UseCgroups, MAX_CHUNK_BYTES,
};
use suanli_agent::Error;

const MODES: [UseBubblewrap; 2] = [UseBubblewrap::Always, UseBubblewrap::Never];

#[tokio::test]
async fn success_with_output_and_files() {
    for mode in MODES {
        let b = backend(&format!("success-{mode:?}"), mode);
        let mut spec = JobLaunch::new(
            "ok-1",
            "echo hello; echo oops >&2; ./bin/show.sh; id -un; pwd; printf 'no newline'",
        );
        spec.files = vec![
            JobFile {
                path: "bin/show.sh".into(),
                data: b"#!/bin/sh\ncat data/input.txt\n".to_vec(),
                mode: 0o755,
            },
            JobFile {
                path: "data/input.txt".into(),
                data: b"from the upload\n".to_vec(),
                mode: 0o4644, // the setuid bit is dropped
            },
        ];
        let job = b.start(spec).await.unwrap();
        assert!(job.pid() > 1);
        let dir = job.job_dir().to_owned();
        let work = job.work_dir();
        let (outcome, logs) = finish(job).await;
        assert_eq!(outcome.state, JobState::Succeeded, "{outcome:?} {logs:?}");
        assert_eq!(outcome.exit_code, Some(0));
        let user = b.isolation().user;
        assert_eq!(
            logs.stdout,
            format!(
                "hello\nfrom the upload\n{user}\n{}\nno newline",
                work.display()
            )
        );
        assert_eq!(logs.stderr, "oops\n");
        assert!(
            logs.system.contains("exited with code 0"),
            "{}",
            logs.system
        );
        // The last chunk is the outcome; sequence numbers only grow.
        assert_eq!(logs.chunks.last().unwrap().stream, LogStream::System);
        assert!(logs.chunks.windows(2).all(|w| w[0].seq < w[1].seq));
        // The same output is in the files of the attempt directory, outside the job's own.
        assert_eq!(
            std::fs::read_to_string(dir.join("stdout.log")).unwrap(),
            logs.stdout
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("stderr.log")).unwrap(),
            "oops\n"
        );
        let mode_bits = std::fs::metadata(work.join("data/input.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode_bits & 0o7777, 0o644);
        assert!(std::fs::read_to_string(dir.join("status/exit_code"))
            .unwrap()
            .starts_with("0\nphase run\n"));
        assert!(outcome.usage.wall_ms > 0);
        assert!(outcome.usage.cpu_ms.is_some());
    }
}

#[tokio::test]
async fn non_zero_exit_and_setup_failure() {
    let b = backend("exit-codes", UseBubblewrap::Auto);

    let job = b
        .start(JobLaunch::new("fail-1", "echo before; exit 3"))
        .await
        .unwrap();
    let (outcome, logs) = finish(job).await;
    assert_eq!(outcome.state, JobState::Failed { exit_code: Some(3) });
    assert_eq!(outcome.exit_code, Some(3));
    assert!(
        outcome.message.contains("run failed with exit code 3"),
        "{}",
        outcome.message
    );
    assert_eq!(logs.stdout, "before\n");

    let mut spec = JobLaunch::new("setup-fail", "echo should-not-run");
    spec.setup = Some("echo preparing; exit 4".into());
    let (outcome, logs) = finish(b.start(spec).await.unwrap()).await;
    assert_eq!(outcome.state, JobState::Failed { exit_code: Some(4) });
    assert!(
        outcome.message.contains("setup failed with exit code 4"),
        "{}",
        outcome.message
    );
    assert_eq!(logs.stdout, "preparing\n");

    // A setup that works prepares the directory for the run; TMPDIR persists in between.
    let mut spec = JobLaunch::new("setup-ok", "cat prepared.txt \"$TMPDIR/t\"");
    spec.setup = Some("echo made > prepared.txt; echo tmp > \"$TMPDIR/t\"".into());
    let (outcome, logs) = finish(b.start(spec).await.unwrap()).await;
    assert_eq!(outcome.state, JobState::Succeeded, "{logs:?}");
    assert_eq!(logs.stdout, "made\ntmp\n");
}

#[tokio::test]
async fn bad_launches_are_refused() {
    let b = backend("refusals", UseBubblewrap::Never);
    for path in ["../escape", "/etc/passwd", "a/../../b"] {
        let mut spec = JobLaunch::new("bad-path", "true");
        spec.files = vec![JobFile {
            path: path.into(),
            data: vec![],
            mode: 0o644,
        }];
        let err = b.start(spec).await.unwrap_err();
        assert!(matches!(err, Error::InvalidJob(_)), "{path}: {err}");
        assert!(!b.root_dir().join("bad-path").exists());
    }
    assert!(matches!(
        b.start(JobLaunch::new("../x", "true")).await,
        Err(Error::InvalidJob(_))
    ));
    let (o, _) = finish(b.start(JobLaunch::new("once", "true")).await.unwrap()).await;
    assert_eq!(o.state, JobState::Succeeded);
    assert!(matches!(
        b.start(JobLaunch::new("once", "true")).await,
        Err(Error::AlreadyExists(_))
    ));
}

#[test]
fn a_job_root_the_job_user_cannot_reach_is_refused() {
    let private = private_dir("unreachable");
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let result = LocalBackend::new(private.join("jobs"), LocalOptions::default());
    let running_as_root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if running_as_root {
        let err = result.unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
        assert!(err.to_string().contains("cannot enter"), "{err}");
    } else {
        result.unwrap();
    }
}

#[tokio::test]
async fn cancel_kills_the_whole_tree() {
    for mode in MODES {
        let b = backend(&format!("cancel-{mode:?}"), mode);
        let mut job = b
            .start(JobLaunch::new(
                "tree",
                "sh -c 'sleep 100 & sleep 100 & echo started; wait'",
            ))
            .await
            .unwrap();
        wait_for_output(&mut job, "started").await;
        let pid = job.pid() as i32;
        let tree = descendants(pid);
        // wrapper → [bwrap → bwrap →] sh → sh → 2 × sleep
        assert!(tree.len() >= 4, "{tree:?}");
        tokio::time::timeout(PATIENCE, job.cancel()).await.unwrap();
        let (outcome, logs) = finish(job).await;
        assert_eq!(outcome.state, JobState::Cancelled, "{logs:?}");
        let survivors: Vec<_> = tree.iter().filter(|(p, t)| still_alive(*p, *t)).collect();
        assert!(survivors.is_empty(), "survivors: {survivors:?}");
        assert!(group_members(pid).is_empty());
        assert!(logs.system.contains("SIGTERM"), "{}", logs.system);
    }
}

#[tokio::test]
async fn a_job_ignoring_sigterm_is_killed_after_the_grace_period() {
    let b = backend_with(
        "grace",
        LocalOptions {
            kill_grace: Duration::from_secs(1),
            ..LocalOptions::default()
        },
    );
    let mut job = b
        .start(JobLaunch::new(
            "stubborn",
            "trap '' TERM; echo started; while :; do sleep 1; done",
        ))
        .await
        .unwrap();
    wait_for_output(&mut job, "started").await;
    let tree = descendants(job.pid() as i32);
    tokio::time::timeout(PATIENCE, job.cancel()).await.unwrap();
    let (outcome, logs) = finish(job).await;
    assert_eq!(outcome.state, JobState::Cancelled);
    assert!(logs.system.contains("SIGKILL"), "{}", logs.system);
    assert!(tree.iter().all(|(p, t)| !still_alive(*p, *t)));
}

#[tokio::test]
async fn time_limit_ends_the_job() {
    let b = backend("timeout", UseBubblewrap::Auto);
    let mut spec = JobLaunch::new("slow", "echo started; sleep 100");
    spec.time_limit_s = 1;
    let job = b.start(spec).await.unwrap();
    let pid = job.pid() as i32;
    let (outcome, logs) = finish(job).await;
    assert_eq!(outcome.state, JobState::TimedOut, "{logs:?}");
    assert!(outcome.message.contains("time limit of 1 s"));
    assert_eq!(logs.stdout, "started\n");
    assert!(group_members(pid).is_empty());
}

const ALLOCATE_300M: &str =
    "python3 -c \"b=bytearray(300*1024*1024); import time; time.sleep(1); print('allocated')\"";

#[tokio::test]
async fn memory_limit_is_enforced() {
    assert!(
        std::path::Path::new("/usr/bin/python3").exists(),
        "this test needs python3 in /usr/bin"
    );
    let b = backend("memory", UseBubblewrap::Auto);
    let report = b.isolation();
    let mut spec = JobLaunch::new("hog", ALLOCATE_300M);
    spec.memory_mib = 64;
    let (outcome, logs) = finish(b.start(spec).await.unwrap()).await;
    eprintln!("{outcome:?}\n{logs:?}");
    assert!(
        !logs.stdout.contains("allocated"),
        "the allocation succeeded"
    );
    match report.limits {
        LimitMechanism::Cgroup => {
            assert_eq!(outcome.state, JobState::OutOfMemory, "{outcome:?} {logs:?}");
            assert!(outcome.message.contains("64 MiB"));
            let peak = outcome.usage.peak_memory_mib.expect("peak from the cgroup");
            assert!(peak <= 64, "peak {peak} MiB above the limit");
        }
        // rlimit: the allocation is refused (MemoryError), so the job fails.
        LimitMechanism::Rlimit => {
            assert!(
                matches!(outcome.state, JobState::Failed { .. }),
                "{outcome:?}"
            )
        }
    }
    // This machine's cgroup v1 hierarchy is writable: here the cgroup must be what limits.
    if std::path::Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() {
        assert_eq!(report.cgroup, CgroupVersion::V1, "{report:?}");
    }
}

#[tokio::test]
async fn rlimit_fallback_enforces_memory_without_cgroups() {
    for mode in MODES {
        let b = backend_with(
            &format!("rlimit-{mode:?}"),
            LocalOptions {
                use_cgroups: UseCgroups::Never,
                use_bubblewrap: mode,
                ..LocalOptions::default()
            },
        );
        let report = b.isolation();
        assert_eq!(report.cgroup, CgroupVersion::None);
        assert_eq!(report.limits, LimitMechanism::Rlimit);
        let mut spec = JobLaunch::new("hog", ALLOCATE_300M);
        spec.memory_mib = 64;
        let (outcome, logs) = finish(b.start(spec).await.unwrap()).await;
        assert!(!logs.stdout.contains("allocated"));
        assert!(
            matches!(
                outcome.state,
                JobState::Failed { .. } | JobState::OutOfMemory
            ),
            "{outcome:?}"
        );
        assert!(logs.stderr.contains("MemoryError"), "{}", logs.stderr);

        // Usage is still metered (sampled from /proc and the shell's `times`).
        let spec = JobLaunch::new(
            "busy",
            "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; echo done",
        );
        let (outcome, logs) = finish(b.start(spec).await.unwrap()).await;
        assert_eq!(outcome.state, JobState::Succeeded, "{logs:?}");
        // Without a cgroup, CPU time comes from sampling /proc and the wrapper's `times`; under
        // bubblewrap the sandbox's init may reap the shell before either sees it, so a reading of
        // 0 happens on a loaded machine (seen in CI). What must hold is that usage is reported.
        assert!(outcome.usage.cpu_ms.is_some(), "{outcome:?}");
        assert!(outcome.usage.wall_ms > 0, "{outcome:?}");
    }
}

#[tokio::test]
async fn fork_bomb_is_bounded_and_the_backend_keeps_working() {
    let b = backend("forkbomb", UseBubblewrap::Auto);
    let mut spec = JobLaunch::new(
        "bomb",
        "b() { b | b & }; b; i=0; while [ $i -lt 300 ]; do sleep 31 & i=$((i+1)); done; sleep 3",
    );
    spec.pids_max = 64;
    spec.time_limit_s = 30;
    let job = b.start(spec).await.unwrap();
    let pid = job.pid() as i32;
    let dir = job.job_dir().to_owned();
    let (outcome, logs) = finish(job).await;
    eprintln!("{outcome:?}\n{}", logs.system);
    assert_ne!(outcome.state, JobState::Succeeded, "{logs:?}");
    assert!(
        logs.stderr.to_lowercase().contains("fork"),
        "{}",
        logs.stderr
    );
    // Nothing of the job survives: not in its process group, not in its cgroup.
    assert!(group_members(pid).is_empty());
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("attempt.json")).unwrap()).unwrap();
    if let Some(cg) = record["cgroup"].as_object() {
        for (k, v) in cg {
            if let Some(path) = v.as_str().filter(|_| k != "version") {
                assert!(
                    !std::path::Path::new(path).exists(),
                    "cgroup {path} left behind"
                );
            }
        }
    }
    let leftovers: Vec<i32> = all_pids()
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c == b"sleep\x0031\x00")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let (next, logs) = finish(
        b.start(JobLaunch::new("after-bomb", "echo fine"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(next.state, JobState::Succeeded, "{logs:?}");
    assert_eq!(logs.stdout, "fine\n");
}

#[tokio::test]
async fn hidden_paths_are_unreadable_in_the_sandbox() {
    let private = private_dir("hidden");
    let config = private.join("agent-config");
    std::fs::create_dir(&config).unwrap();
    // World-readable on purpose: only the sandbox keeps the job from it.
    std::fs::write(config.join("token"), "secret-token").unwrap();
    std::fs::set_permissions(config.join("token"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(private.join("control.txt"), "visible").unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o755)).unwrap();

    let b = backend_with(
        "hidden",
        LocalOptions {
            use_bubblewrap: UseBubblewrap::Always,
            hidden_paths: vec![config.clone()],
            ..LocalOptions::default()
        },
    );
    assert_eq!(b.isolation().sandbox, SandboxKind::Bubblewrap);
    let run = format!(
        "cat {c}/control.txt; echo; cat {t} && echo LEAKED; ls -A {d} | wc -l; \
         ls {root} | wc -l; touch /usr/x 2>/dev/null && echo WROTE-ROOT; true",
        c = private.display(),
        t = config.join("token").display(),
        d = config.display(),
        root = b.root_dir().display(),
    );
    // Another job's directory must not be visible either.
    finish(
        b.start(JobLaunch::new("neighbour", "echo mine > file"))
            .await
            .unwrap(),
    )
    .await;
    let (outcome, logs) = finish(b.start(JobLaunch::new("peek", run)).await.unwrap()).await;
    assert!(!logs.stdout.contains("LEAKED"), "{logs:?}");
    assert!(!logs.stdout.contains("secret-token"));
    assert!(!logs.stdout.contains("WROTE-ROOT"));
    let lines: Vec<&str> = logs.stdout.lines().collect();
    assert_eq!(lines[0], "visible", "{logs:?}");
    assert_eq!(lines[1], "0", "the hidden directory looks empty: {logs:?}");
    assert_eq!(
        lines[2], "1",
        "only the job's own directory is visible: {logs:?}"
    );
    assert!(matches!(
        outcome.state,
        JobState::Succeeded | JobState::Failed { .. }
    ));
}

#[tokio::test]
async fn without_sandbox_the_agent_secret_is_protected_by_permissions() {
    let private = private_dir("secret");
    let config = private.join("agent-config");
    std::fs::create_dir(&config).unwrap();
    std::fs::write(config.join("token"), "secret-token").unwrap();
    std::fs::set_permissions(config.join("token"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o755)).unwrap();

    let b = backend_with(
        "secret",
        LocalOptions {
            use_bubblewrap: UseBubblewrap::Never,
            hidden_paths: vec![config.clone()],
            ..LocalOptions::default()
        },
    );
    let report = b.isolation();
    assert_eq!(report.sandbox, SandboxKind::None);
    // We run as root here (as in CI): the job must not be root, or it could read the token.
    let running_as_root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if running_as_root {
        assert_eq!(report.user, "nobody", "{report:?}");
    }
    let run = format!(
        "id -u; cat {} && echo LEAKED",
        config.join("token").display()
    );
    let (outcome, logs) = finish(b.start(JobLaunch::new("peek", run)).await.unwrap()).await;
    assert!(
        !logs.stdout.contains("LEAKED") && !logs.stdout.contains("secret-token"),
        "{logs:?}"
    );
    assert!(logs.stderr.contains("Permission denied"), "{logs:?}");
    assert!(matches!(outcome.state, JobState::Failed { .. }));
    if running_as_root {
        assert_ne!(logs.stdout.lines().next(), Some("0"));
    }
}

#[tokio::test]
async fn reattach_after_the_handle_is_dropped() {
    let root_name = "reattach";
    let b = backend(root_name, UseBubblewrap::Auto);
    let mut job = b
        .start(JobLaunch::new(
            "long",
            "echo started; sleep 100 & sleep 100; echo never",
        ))
        .await
        .unwrap();
    wait_for_output(&mut job, "started").await;
    let pid = job.pid();
    let tree = descendants(pid as i32);
    drop(job);

    // A second backend on the same directory stands for the agent after a restart: it knows
    // the job only from its directory and /proc.
    let restarted = LocalBackend::new(
        b.root_dir().to_owned(),
        LocalOptions {
            kill_grace: Duration::from_secs(3),
            ..LocalOptions::default()
        },
    )
    .unwrap();
    assert!(restarted.reattach("never-started").await.unwrap().is_none());
    let Some(Reattached::Running(mut again)) = restarted.reattach("long").await.unwrap() else {
        panic!("the running job was not found");
    };
    assert_eq!(again.pid(), pid);
    let first = tokio::time::timeout(PATIENCE, again.logs().recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.stream, LogStream::System);
    assert!(first.data.contains("reattached"), "{first:?}");
    assert!(again.usage().wall_ms > 0);
    tokio::time::timeout(PATIENCE, again.cancel())
        .await
        .unwrap();
    let (outcome, _) = finish(again).await;
    assert_eq!(outcome.state, JobState::Cancelled);
    assert!(tree.iter().all(|(p, t)| !still_alive(*p, *t)), "{tree:?}");

    // The first backend's own handle comes back too, and a finished job reports its outcome.
    let (done, _) = finish(b.start(JobLaunch::new("short", "exit 7")).await.unwrap()).await;
    assert_eq!(done.exit_code, Some(7));
    let Some(Reattached::Finished(outcome)) = restarted.reattach("short").await.unwrap() else {
        panic!("a finished job should be reported finished");
    };
    assert_eq!(outcome.state, JobState::Failed { exit_code: Some(7) });
    let Some(Reattached::Finished(outcome)) = b.reattach("short").await.unwrap() else {
        panic!("in-process reattach of a finished job");
    };
    assert_eq!(outcome.exit_code, Some(7));
}

#[tokio::test]
async fn in_process_reattach_shares_the_supervisor() {
    let b = backend("reattach-local", UseBubblewrap::Never);
    let mut job = b
        .start(JobLaunch::new("j", "echo started; sleep 100"))
        .await
        .unwrap();
    wait_for_output(&mut job, "started").await;
    drop(job);
    let Some(Reattached::Running(again)) = b.reattach("j").await.unwrap() else {
        panic!("not found");
    };
    again.cancel().await;
    let (outcome, logs) = finish(again).await;
    assert_eq!(outcome.state, JobState::Cancelled, "{logs:?}");
}

#[tokio::test]
async fn large_output_is_chunked_and_never_blocks_the_job() {
    let b = backend_with(
        "chunks",
        LocalOptions {
            log_channel_capacity: 4,
            use_bubblewrap: UseBubblewrap::Never,
            ..LocalOptions::default()
        },
    );
    // Nobody reads the logs while this runs: the job must still finish (it writes to a file;
    // its output waits for the reader, in order, and nothing of it is dropped).
    let spec = JobLaunch::new(
        "loud",
        "seq 1 200000; head -c 200000 /dev/zero | tr '\\0' x",
    );
    let job = b.start(spec).await.unwrap();
    let dir = job.job_dir().to_owned();
    let exit = dir.join(suanli_agent::local::STATUS_DIR).join("exit_code");
    let ended = tokio::time::timeout(PATIENCE, async {
        while !exit.exists() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(ended.is_ok(), "the job waited for its logs to be read");
    let file = std::fs::read_to_string(dir.join("stdout.log")).unwrap();
    assert!(file.starts_with("1\n2\n") && file.ends_with("xxxx"));
    let (outcome, logs) = tokio::time::timeout(PATIENCE, finish(job)).await.unwrap();
    assert_eq!(outcome.state, JobState::Succeeded);
    assert_eq!(logs.stdout, file);
    // The job's own times: it ended when its wrapper wrote its exit record, not when its
    // output had been read.
    let exit_ms = std::fs::metadata(&exit)
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert_eq!(outcome.ended_at_ms, Some(exit_ms));
    assert_eq!(
        outcome.usage.wall_ms,
        exit_ms - outcome.started_at_ms.unwrap()
    );

    // Read as it comes, every chunk is at most 64 KiB and together they are the file.
    let b2 = backend_with(
        "chunks-read",
        LocalOptions {
            use_bubblewrap: UseBubblewrap::Never,
            log_channel_capacity: 100_000,
            ..LocalOptions::default()
        },
    );
    let spec = JobLaunch::new(
        "loud",
        "seq 1 200000; head -c 200000 /dev/zero | tr '\\0' x",
    );
    let (outcome, logs) = finish(b2.start(spec).await.unwrap()).await;
    assert_eq!(outcome.state, JobState::Succeeded);
    assert_eq!(logs.stdout, file);
    assert!(logs.chunks.iter().all(|c| c.data.len() <= MAX_CHUNK_BYTES));
    assert!(logs.chunks.len() > 4);
}

#[tokio::test]
async fn isolation_report_is_consistent() {
    let b = backend("report", UseBubblewrap::Auto);
    let r = b.isolation();
    assert_eq!(
        r.limits == LimitMechanism::Cgroup,
        r.cgroup != CgroupVersion::None
    );
    assert_eq!(r.to_string(), r.summary);
    assert!(r.summary.contains(&format!("jobs run as {}", r.user)));
    let json = serde_json::to_value(&r).unwrap();
    assert!(matches!(
        json["cgroup"].as_str(),
        Some("v1" | "v2" | "none")
    ));
    assert!(matches!(
        json["sandbox"].as_str(),
        Some("bubblewrap" | "none")
    ));
    assert!(matches!(json["limits"].as_str(), Some("cgroup" | "rlimit")));
    if bwrap_installed() {
        assert_eq!(r.sandbox, SandboxKind::Bubblewrap, "{r:?}");
    }
    let never = backend("report-never", UseBubblewrap::Never).isolation();
    assert_eq!(never.sandbox, SandboxKind::None);
    assert!(never.summary.contains("no sandbox"));
}

#[tokio::test]
async fn network_is_only_given_when_asked_and_is_the_jobs_own() {
    let b = backend("network", UseBubblewrap::Always);
    // Interfaces other than loopback, as the job sees them.
    let names = "awk 'NR > 2 && $1 != \"lo:\" { print $1 }' /proc/net/dev";
    let (_, closed) = finish(b.start(JobLaunch::new("no-net", names)).await.unwrap()).await;
    assert_eq!(closed.stdout.trim(), "", "{closed:?}");
    // Asked for: a namespace of its own, connected through slirp4netns (issue 17: the host's
    // would hand it the host's loopback services and abstract sockets).
    let mut spec = JobLaunch::new("net", names);
    spec.network = true;
    let (outcome, open) = finish(b.start(spec).await.unwrap()).await;
    assert_eq!(outcome.state, JobState::Succeeded, "{open:?}");
    assert_eq!(open.stdout.trim(), "tap0:", "{open:?}");
    assert!(b.isolation().summary.contains("through slirp4netns"));
    // A provider who says so shares the host's.
    let shared = backend_with(
        "network-host",
        LocalOptions {
            use_bubblewrap: UseBubblewrap::Always,
            job_network: JobNetwork::Host,
            ..LocalOptions::default()
        },
    );
    let host = std::fs::read_to_string("/proc/net/dev")
        .unwrap()
        .lines()
        .skip(2)
        .filter(|l| !l.trim_start().starts_with("lo:"))
        .count();
    let mut spec = JobLaunch::new("net", names);
    spec.network = true;
    let (_, open) = finish(shared.start(spec).await.unwrap()).await;
    assert_eq!(open.stdout.lines().count(), host, "{open:?}");
}

/// Without slirp4netns an isolated network cannot be made: a job asking for the network is
/// refused with the reason, never given the host's.
#[tokio::test]
async fn a_network_job_is_refused_where_no_network_of_its_own_can_be_made() {
    let b = backend_with(
        "network-none",
        LocalOptions {
            use_bubblewrap: UseBubblewrap::Always,
            slirp4netns_path: Some("/nonexistent/slirp4netns".into()),
            ..LocalOptions::default()
        },
    );
    let r = b.isolation();
    assert!(r.summary.contains("no network"), "{r:?}");
    let mut spec = JobLaunch::new("net", "echo ran");
    spec.network = true;
    let err = b.start(spec).await.unwrap_err().to_string();
    assert!(err.contains("run the job without network"), "{err}");
    let (outcome, _) = finish(b.start(JobLaunch::new("ok", "echo ran")).await.unwrap()).await;
    assert_eq!(outcome.state, JobState::Succeeded);
}

#[tokio::test]
async fn cgroup_limits_are_written_and_the_job_is_inside() {
    let b = backend("limits", UseBubblewrap::Auto);
    let report = b.isolation();
    if std::path::Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() {
        assert_eq!(report.cgroup, CgroupVersion::V1, "{report:?}");
    }
    if report.cgroup == CgroupVersion::None {
        panic!("no cgroup here: {report:?}");
    }
    let mut spec = JobLaunch::new("limited", "echo started; sleep 100");
    spec.cpus = 2;
    spec.memory_mib = 128;
    spec.pids_max = 100;
    let mut job = b.start(spec).await.unwrap();
    wait_for_output(&mut job, "started").await;
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(job.job_dir().join("attempt.json")).unwrap())
            .unwrap();
    let cg = &record["cgroup"];
    let read = |dir: &serde_json::Value, file: &str| {
        std::fs::read_to_string(std::path::Path::new(dir.as_str().unwrap()).join(file))
            .unwrap()
            .trim()
            .to_owned()
    };
    let procs_dir = match cg["version"].as_str() {
        Some("v1") => {
            assert_eq!(read(&cg["memory"], "memory.limit_in_bytes"), "134217728");
            assert_eq!(read(&cg["cpu"], "cpu.cfs_quota_us"), "200000");
            assert_eq!(read(&cg["pids"], "pids.max"), "100");
            cg["pids"].clone()
        }
        Some("v2") => {
            assert_eq!(read(&cg["dir"], "memory.max"), "134217728");
            assert_eq!(read(&cg["dir"], "cpu.max"), "200000 100000");
            assert_eq!(read(&cg["dir"], "pids.max"), "100");
            cg["dir"].clone()
        }
        other => panic!("unexpected cgroup record {other:?}"),
    };
    // The wrapper and everything below it (sandbox included) are in the cgroup.
    let members = read(&procs_dir, "cgroup.procs");
    let members: Vec<i32> = members.lines().map(|l| l.parse().unwrap()).collect();
    assert!(members.contains(&(job.pid() as i32)));
    for (p, _) in descendants(job.pid() as i32) {
        assert!(members.contains(&p), "{p} outside the cgroup {members:?}");
    }
    let usage = job.usage();
    assert!(
        usage.peak_memory_mib.is_some() && usage.cpu_ms.is_some(),
        "{usage:?}"
    );
    job.cancel().await;
    let (outcome, _) = finish(job).await;
    assert_eq!(outcome.state, JobState::Cancelled);
    assert!(!std::path::Path::new(procs_dir.as_str().unwrap()).exists());
}

#[tokio::test]
async fn daemonized_leftovers_die_with_the_job_cgroup() {
    let b = backend("daemon", UseBubblewrap::Never);
    assert_ne!(b.isolation().cgroup, CgroupVersion::None, "needs a cgroup");
    // A double fork plus setsid leaves both the process group and the process tree.
    let job = b
        .start(JobLaunch::new(
            "daemon",
            "(setsid sleep 101 &); echo started",
        ))
        .await
        .unwrap();
    let (outcome, logs) = finish(job).await;
    assert_eq!(outcome.state, JobState::Succeeded, "{logs:?}");
    let leftovers: Vec<i32> = all_pids()
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c == b"sleep\x00101\x00")
                && stat(*p).is_some_and(|s| s.3 != 'Z')
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_missing_bubblewrap_is_reported_or_refused() {
    let missing = || LocalOptions {
        bwrap_path: Some("/nonexistent/bwrap".into()),
        ..LocalOptions::default()
    };
    let err = LocalBackend::new(
        test_root("no-bwrap-always"),
        LocalOptions {
            use_bubblewrap: UseBubblewrap::Always,
            ..missing()
        },
    )
    .unwrap_err();
    assert!(matches!(err, Error::SandboxUnavailable(_)), "{err}");
    let auto = LocalBackend::new(test_root("no-bwrap-auto"), missing()).unwrap();
    let report = auto.isolation();
    assert_eq!(report.sandbox, SandboxKind::None);
    assert!(
        report.notes.iter().any(|n| n.contains("bubblewrap")),
        "{report:?}"
    );
}
