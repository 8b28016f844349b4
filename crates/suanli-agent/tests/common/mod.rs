//! Helpers shared by the integration tests: real processes, generous timeouts, no mocks.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use suanli_agent::local::{
    LocalBackend, LocalOptions, LogChunk, LogStream, Outcome, RunningJob, UseBubblewrap,
};

/// Generous bound for anything that should end; only there to turn a hang into a failure.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// A fresh directory for one test's jobs, under `/tmp` so that `nobody` can enter it.
pub fn test_root(name: &str) -> PathBuf {
    let base = Path::new("/tmp/suanli-agent-tests");
    std::fs::create_dir_all(base).unwrap();
    remove_earlier_runs(base, name);
    base.join(format!("{name}-{}", std::process::id()))
}

/// A directory outside `/tmp` (which bubblewrap replaces), for files jobs must not read. Not under
/// the build directory either: a checkout may itself live under `/tmp`.
pub fn private_dir(name: &str) -> PathBuf {
    let base = Path::new("/var/tmp/suanli-agent-tests");
    std::fs::create_dir_all(base).unwrap();
    let dir = base.join(format!("suanli-agent-{name}-{}", std::process::id()));
    remove_earlier_runs(dir.parent().unwrap(), &format!("suanli-agent-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Removes `NAME-PID` directories left by earlier runs of the tests.
fn remove_earlier_runs(base: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let file_name = e.file_name();
        let Some(rest) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(name))
            .and_then(|r| r.strip_prefix('-'))
        else {
            continue;
        };
        if rest.bytes().all(|b| b.is_ascii_digit()) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

pub fn bwrap_installed() -> bool {
    ["/usr/bin/bwrap", "/usr/local/bin/bwrap", "/bin/bwrap"]
        .iter()
        .any(|p| Path::new(p).exists())
}

/// A backend; `bwrap: Always` fails loudly when bubblewrap is missing.
pub fn backend(name: &str, bwrap: UseBubblewrap) -> LocalBackend {
    backend_with(
        name,
        LocalOptions {
            use_bubblewrap: bwrap,
            kill_grace: Duration::from_secs(3),
            ..LocalOptions::default()
        },
    )
}

pub fn backend_with(name: &str, options: LocalOptions) -> LocalBackend {
    if options.use_bubblewrap == UseBubblewrap::Always {
        assert!(
            bwrap_installed(),
            "these tests need bubblewrap: apt-get install -y bubblewrap"
        );
    }
    let b = LocalBackend::new(test_root(name), options).expect("backend");
    eprintln!("isolation: {}", b.isolation());
    for n in &b.isolation().notes {
        eprintln!("  note: {n}");
    }
    b
}

/// Everything a finished job said, per stream.
#[derive(Debug, Default)]
pub struct Collected {
    pub stdout: String,
    pub stderr: String,
    pub system: String,
    pub chunks: Vec<LogChunk>,
}

/// Waits for the job while draining its logs.
pub async fn finish(mut job: RunningJob) -> (Outcome, Collected) {
    let mut logs = job.take_logs();
    let collector = tokio::spawn(async move {
        let mut c = Collected::default();
        while let Some(chunk) = logs.recv().await {
            match chunk.stream {
                LogStream::Stdout => c.stdout.push_str(&chunk.data),
                LogStream::Stderr => c.stderr.push_str(&chunk.data),
                LogStream::System => c.system.push_str(&chunk.data),
            }
            c.chunks.push(chunk);
        }
        c
    });
    let outcome = tokio::time::timeout(PATIENCE, job.wait())
        .await
        .expect("job did not end in time");
    let collected = tokio::time::timeout(PATIENCE, collector)
        .await
        .expect("log stream did not end")
        .unwrap();
    (outcome, collected)
}

/// Reads log chunks until one of `stream` contains `needle`.
pub async fn wait_for_output(job: &mut RunningJob, needle: &str) -> String {
    let mut seen = String::new();
    tokio::time::timeout(PATIENCE, async {
        while let Some(chunk) = job.logs().recv().await {
            seen.push_str(&chunk.data);
            if seen.contains(needle) {
                return;
            }
        }
        panic!("log ended before {needle:?}; saw {seen:?}");
    })
    .await
    .unwrap_or_else(|_| panic!("no {needle:?} in time; saw {seen:?}"));
    seen
}

/// `(pid, ppid, pgrp, state, starttime)` of a process.
pub fn stat(pid: i32) -> Option<(i32, i32, i32, char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let close = text.rfind(')')?;
    let f: Vec<&str> = text[close + 2..].split_whitespace().collect();
    Some((
        pid,
        f[1].parse().ok()?,
        f[2].parse().ok()?,
        f[0].chars().next()?,
        f[19].parse().ok()?,
    ))
}

pub fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Live processes of a process group.
pub fn group_members(pgid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&p| stat(p).is_some_and(|s| s.2 == pgid && s.3 != 'Z'))
        .collect()
}

/// Live descendants of a process, with their start times.
pub fn descendants(root: i32) -> Vec<(i32, u64)> {
    let stats: Vec<_> = all_pids().into_iter().filter_map(stat).collect();
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for s in stats.iter().filter(|s| s.1 == p && s.3 != 'Z') {
            out.push((s.0, s.4));
            frontier.push(s.0);
        }
    }
    out
}

/// Whether the process that had `starttime` still runs.
pub fn still_alive(pid: i32, starttime: u64) -> bool {
    stat(pid).is_some_and(|s| s.4 == starttime && s.3 != 'Z')
}
