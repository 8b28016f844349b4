//! A running job: its handle and the supervisor task that watches it to the end.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::cgroup::JobCgroup;
use super::logs::{self, LogSink};
use super::procfs::{self, Target};
use super::{now_ms, AttemptRecord};
use crate::job::{JobState, LogChunk, LogStream, Outcome, Usage};

/// How often usage is sampled while the job runs.
const SAMPLE_EVERY: Duration = Duration::from_millis(500);
/// How often a job that is not our child is looked for in `/proc`.
const POLL_EVERY: Duration = Duration::from_millis(200);

/// What the handle and the supervisor share.
pub(crate) struct Shared {
    pub attempt_id: String,
    pub job_dir: PathBuf,
    pub pid: i32,
    pub start_ticks: u64,
    /// When the job started, on the monotonic clock (back-dated for a reattached job).
    pub started: Instant,
    /// When the job started (Unix ms), as its record says.
    pub started_at_ms: u64,
    pub time_limit_s: u64,
    pub memory_limit_mib: u64,
    pub cgroup: Option<JobCgroup>,
    pub grace: Duration,
    pub sink: Arc<LogSink>,
    cancel: watch::Sender<bool>,
    outcome: watch::Sender<Option<Outcome>>,
    usage: Mutex<Sampled>,
}

/// Usage seen so far (maxima), and the final usage once the job is over.
#[derive(Default)]
struct Sampled {
    cpu_ms: Option<u64>,
    peak_bytes: Option<u64>,
    done: Option<Usage>,
}

fn max_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

impl Shared {
    pub fn new(
        job_dir: PathBuf,
        record: &AttemptRecord,
        grace: Duration,
        sink: LogSink,
    ) -> Arc<Self> {
        let elapsed = Duration::from_millis(now_ms().saturating_sub(record.started_at_ms));
        let now = Instant::now();
        Arc::new(Shared {
            attempt_id: record.attempt_id.clone(),
            job_dir,
            pid: record.pid,
            start_ticks: record.start_ticks,
            started: now.checked_sub(elapsed).unwrap_or(now),
            started_at_ms: record.started_at_ms,
            time_limit_s: record.time_limit_s,
            memory_limit_mib: record.memory_limit_mib,
            cgroup: record.cgroup.clone(),
            grace,
            sink: Arc::new(sink),
            cancel: watch::channel(false).0,
            outcome: watch::channel(None).0,
            usage: Mutex::new(Sampled::default()),
        })
    }

    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome.borrow().clone()
    }

    /// Time the job has run: until now, or until its exit record was written when it is over
    /// already (ended while its agent was stopped or busy: its own end, not when it was noticed).
    fn wall_ms(&self) -> u64 {
        let running = self.started.elapsed().as_millis() as u64;
        let ended = std::fs::symlink_metadata(exit_file(&self.job_dir))
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64);
        match ended {
            Some(e) if e >= self.started_at_ms => running.min(e - self.started_at_ms),
            _ => running,
        }
    }

    /// Whether the wrapper itself still runs (and is ours, not a reused pid).
    fn wrapper_alive(&self) -> bool {
        procfs::alive(self.pid, self.start_ticks)
    }

    /// Every live process of the job. With a cgroup its members are authoritative (a job cannot
    /// leave its cgroup); without one, the members of the job's process group. While the wrapper
    /// lives, also its descendants (which covers a sandbox's own session).
    fn job_pids(&self, stats: &[procfs::ProcStat]) -> Vec<i32> {
        let dead = |pid: i32| {
            stats
                .iter()
                .find(|s| s.pid == pid)
                .is_none_or(procfs::ProcStat::is_dead)
        };
        let mut pids: Vec<i32> = match &self.cgroup {
            Some(cg) => cg.pids().into_iter().filter(|&p| !dead(p)).collect(),
            None => self.group_members(stats),
        };
        if self.wrapper_alive() {
            pids.push(self.pid);
            pids.extend(procfs::descendants(self.pid, stats));
        }
        pids.sort_unstable();
        pids.dedup();
        pids.retain(|&p| p > 1 && p != std::process::id() as i32);
        pids
    }

    /// Live members of the job's process group (its id is the wrapper's pid).
    fn group_members(&self, stats: &[procfs::ProcStat]) -> Vec<i32> {
        stats
            .iter()
            .filter(|s| s.pgrp == self.pid && !s.is_dead())
            .map(|s| s.pid)
            .collect()
    }

    /// Updates the usage maxima.
    fn sample(&self) {
        let (cpu, peak) = match &self.cgroup {
            Some(cg) => (cg.cpu_ms(), max_opt(cg.peak_bytes(), cg.current_bytes())),
            None => {
                let stats = procfs::all_stats();
                let pids = self.job_pids(&stats);
                if pids.is_empty() {
                    (None, None)
                } else {
                    let ticks: u64 = stats
                        .iter()
                        .filter(|s| pids.contains(&s.pid))
                        .map(procfs::ProcStat::total_ticks)
                        .sum();
                    let rss: u64 = pids.iter().filter_map(|&p| procfs::rss_kib(p)).sum();
                    (Some(ticks * 1000 / procfs::CLK_TCK), Some(rss * 1024))
                }
            }
        };
        let mut u = self.usage.lock().expect("usage poisoned");
        u.cpu_ms = max_opt(u.cpu_ms, cpu);
        u.peak_bytes = max_opt(u.peak_bytes, peak);
    }

    pub fn usage(&self) -> Usage {
        if let Some(done) = self.usage.lock().expect("usage poisoned").done {
            return done;
        }
        if self.cgroup.is_some() {
            self.sample();
        }
        let u = self.usage.lock().expect("usage poisoned");
        u.done.unwrap_or(Usage {
            cpu_ms: u.cpu_ms,
            peak_memory_mib: u.peak_bytes.map(|b| b.div_ceil(1024 * 1024)),
            wall_ms: self.wall_ms(),
        })
    }

    /// SIGTERM to every process of the job except bubblewrap's own (which would answer by
    /// SIGKILLing its sandbox at once, leaving the job no grace).
    async fn terminate(&self) {
        let stats = procfs::all_stats();
        let targets: Vec<Target> = self
            .job_pids(&stats)
            .into_iter()
            .filter(|p| {
                stats
                    .iter()
                    .find(|s| s.pid == *p)
                    .is_some_and(|s| s.comm != "bwrap")
            })
            .map(Target::Pid)
            .collect();
        procfs::signal("TERM", &targets).await;
    }

    /// SIGKILL to every process of the job until none is left. Each round kills all processes
    /// seen; a fork bomb's new children are bounded by `pids.max` and die in the next round.
    async fn kill_everything(&self) {
        if let Some(cg) = &self.cgroup {
            cg.kill_switch();
        }
        for round in 0..200u64 {
            let stats = procfs::all_stats();
            let pids = self.job_pids(&stats);
            if pids.is_empty() {
                return;
            }
            let mut targets: Vec<Target> = pids.into_iter().map(Target::Pid).collect();
            // The group id cannot have been reused while the group has members.
            if self.cgroup.is_none() && !self.group_members(&stats).is_empty() {
                targets.push(Target::Group(self.pid));
            }
            procfs::signal("KILL", &targets).await;
            tokio::time::sleep(Duration::from_millis((5 * (round + 1)).min(100))).await;
        }
        tracing::warn!(
            "attempt {}: processes survive SIGKILL (uninterruptible sleep?)",
            self.attempt_id
        );
    }
}

/// Kills whatever is left in a cgroup and removes it (a start that failed half-way, or a job
/// that ended while no agent watched it).
pub(crate) async fn kill_cgroup_and_remove(cg: &JobCgroup) {
    cg.kill_switch();
    for round in 0..100u64 {
        let pids: Vec<Target> = cg.pids().into_iter().map(Target::Pid).collect();
        if pids.is_empty() {
            break;
        }
        procfs::signal("KILL", &pids).await;
        tokio::time::sleep(Duration::from_millis((5 * (round + 1)).min(100))).await;
    }
    remove_cgroup(cg).await;
}

/// Removes a cgroup, retrying while the kernel finishes tearing down its last processes.
async fn remove_cgroup(cg: &JobCgroup) {
    let mut last = None;
    for _ in 0..100 {
        match cg.remove() {
            Ok(()) => return,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if let Some(e) = last {
        tracing::warn!("could not remove cgroup {:?}: {e}", cg.dirs());
    }
}

/// How the backend waits for the wrapper to end.
pub(crate) enum Waiter {
    /// Our child: reaped by tokio, with its exit status.
    Child(tokio::process::Child),
    /// Not our child (the agent restarted): polled in `/proc`; no exit status.
    Poll,
}

impl Waiter {
    async fn wait(&mut self, shared: &Shared) -> Option<ExitStatus> {
        match self {
            Waiter::Child(child) => child.wait().await.ok(),
            Waiter::Poll => {
                while shared.wrapper_alive() {
                    tokio::time::sleep(POLL_EVERY).await;
                }
                None
            }
        }
    }
}

/// Why the backend stopped a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    Cancelled,
    TimedOut,
}

/// What the wrapper wrote to `exit_code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExitRecord {
    pub code: i32,
    pub setup_failed: bool,
    /// The job's own watchdog stopped it at its deadline (phase `timeout`).
    pub timed_out: bool,
    /// CPU time of the wrapper's children (the shell's `times`), in ms.
    pub children_cpu_ms: Option<u64>,
}

/// `0m1.250000s` (dash) or `0m1.250s` (bash) → ms.
fn parse_shell_time(t: &str) -> Option<u64> {
    let (m, s) = t.strip_suffix('s')?.split_once('m')?;
    let minutes: u64 = m.parse().ok()?;
    let seconds: f64 = s.parse().ok()?;
    Some(minutes * 60_000 + (seconds * 1000.0).round() as u64)
}

pub(crate) fn parse_exit_record(text: &str) -> Option<ExitRecord> {
    let mut lines = text.lines();
    let code: i32 = lines.next()?.trim().parse().ok()?;
    let phase = lines.next().and_then(|l| l.strip_prefix("phase "));
    // `times`: the shell's own times, then its children's.
    let times: Vec<&str> = lines.collect();
    let children_cpu_ms = times.get(1).and_then(|l| {
        let mut it = l.split_whitespace();
        Some(parse_shell_time(it.next()?)? + parse_shell_time(it.next()?)?)
    });
    Some(ExitRecord {
        code,
        setup_failed: phase == Some("setup") && code != 0,
        timed_out: phase == Some("timeout"),
        children_cpu_ms,
    })
}

/// Reads `status/exit_code`, written by the wrapper as the job's user: never through a link.
async fn read_exit_record(job_dir: &Path) -> Option<ExitRecord> {
    let path = exit_file(job_dir);
    let text = tokio::task::spawn_blocking(move || crate::safe_fs::read_own_file(&path, 4096))
        .await
        .ok()?
        .ok()?;
    parse_exit_record(&text)
}

fn exit_file(job_dir: &Path) -> PathBuf {
    job_dir.join(super::STATUS_DIR).join("exit_code")
}

/// Starts the tailers and the supervisor; the handle for the caller.
pub(crate) fn launch(
    shared: Arc<Shared>,
    waiter: Waiter,
    deadline: Option<tokio::time::Instant>,
    files: (tokio::fs::File, tokio::fs::File),
    logs_rx: mpsc::Receiver<LogChunk>,
) -> RunningJob {
    let (done_tx, done_rx) = watch::channel(false);
    let tailers = vec![
        tokio::spawn(logs::tail(
            files.0,
            LogStream::Stdout,
            shared.sink.clone(),
            done_rx.clone(),
        )),
        tokio::spawn(logs::tail(
            files.1,
            LogStream::Stderr,
            shared.sink.clone(),
            done_rx,
        )),
    ];
    let cancel_rx = shared.cancel.subscribe();
    tokio::spawn(supervise(
        shared.clone(),
        waiter,
        deadline,
        cancel_rx,
        tailers,
        done_tx,
    ));
    RunningJob::new(shared, logs_rx)
}

/// Sleeps until `at`, or forever when there is none (a `select!` arm that may be off).
pub(crate) async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn supervise(
    shared: Arc<Shared>,
    mut waiter: Waiter,
    deadline: Option<tokio::time::Instant>,
    mut cancel_rx: watch::Receiver<bool>,
    tailers: Vec<JoinHandle<()>>,
    done_tx: watch::Sender<bool>,
) {
    let mut reason: Option<StopReason> = None;
    let mut kill_at: Option<tokio::time::Instant> = None;
    let mut killed = false;
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    let status = loop {
        let stop = tokio::select! {
            st = waiter.wait(&shared) => break st,
            _ = sleep_until_opt(deadline), if reason.is_none() && deadline.is_some() => {
                Some(StopReason::TimedOut)
            }
            changed = cancel_rx.changed(), if reason.is_none() => {
                let wanted = changed.is_ok() && *cancel_rx.borrow_and_update();
                wanted.then_some(StopReason::Cancelled)
            }
            _ = sleep_until_opt(kill_at), if kill_at.is_some() && !killed => {
                killed = true;
                shared.sink.system(format!(
                    "still running {} s after SIGTERM: sending SIGKILL",
                    shared.grace.as_secs_f32()
                ));
                shared.kill_everything().await;
                None
            }
            _ = tick.tick() => {
                shared.sample();
                None
            }
        };
        if let Some(r) = stop {
            reason = Some(r);
            shared.sink.system(match r {
                StopReason::Cancelled => "cancelled: sending SIGTERM to the job".to_owned(),
                StopReason::TimedOut => format!(
                    "time limit of {} s reached: sending SIGTERM to the job",
                    shared.time_limit_s
                ),
            });
            shared.sample();
            shared.terminate().await;
            kill_at = Some(tokio::time::Instant::now() + shared.grace);
        }
    };

    // The wrapper is gone: when it ended (its exit record is the last thing it wrote), its
    // last usage, then kill what it left behind. The outcome is decided now, not once the
    // output is delivered: a job's time is its own, however long its logs take to send.
    let now = now_ms();
    let ended_at_ms = exit_mtime_ms(&shared.job_dir)
        .await
        .filter(|t| (shared.started_at_ms..=now).contains(t))
        .unwrap_or(now);
    shared.sample();
    shared.kill_everything().await;
    shared.sample();
    let record = read_exit_record(&shared.job_dir).await;
    let outcome = conclude(&shared, status, record, reason, killed, ended_at_ms);
    shared.usage.lock().expect("usage poisoned").done = Some(outcome.usage);
    let _ = done_tx.send(true);
    for t in tailers {
        let _ = t.await;
    }
    if let Some(cg) = &shared.cgroup {
        remove_cgroup(cg).await;
    }
    shared.sink.flush_kept().await;
    shared.sink.system(outcome.message.clone());
    shared.sink.close();
    shared.outcome.send_replace(Some(outcome));
}

/// When the wrapper wrote the job's exit record (Unix ms).
async fn exit_mtime_ms(job_dir: &Path) -> Option<u64> {
    tokio::fs::symlink_metadata(exit_file(job_dir))
        .await
        .ok()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
}

/// Decides the outcome from what is known when the wrapper has ended.
fn conclude(
    shared: &Shared,
    status: Option<ExitStatus>,
    record: Option<ExitRecord>,
    reason: Option<StopReason>,
    killed: bool,
    ended_at_ms: u64,
) -> Outcome {
    let oom_kills = shared.cgroup.as_ref().map_or(0, JobCgroup::oom_kills);
    // Kernels before 4.13 (v1) do not count OOM kills: a SIGKILLed job that hit its limit.
    let limit_hit = shared.cgroup.as_ref().is_some_and(|c| c.limit_hits() > 0);
    let mut usage = {
        let u = shared.usage.lock().expect("usage poisoned");
        Usage {
            cpu_ms: u.cpu_ms,
            peak_memory_mib: u.peak_bytes.map(|b| b.div_ceil(1024 * 1024)),
            wall_ms: ended_at_ms.saturating_sub(shared.started_at_ms),
        }
    };
    if shared.cgroup.is_none() {
        usage.cpu_ms = max_opt(
            usage.cpu_ms,
            record.as_ref().and_then(|r| r.children_cpu_ms),
        );
    }
    let exit_code = match status {
        Some(st) => st.code().or_else(|| st.signal().map(|s| 128 + s)),
        None => record.as_ref().map(|r| r.code),
    };
    // The record's phase is trusted only when it agrees with the real exit status.
    let setup_failed = record
        .as_ref()
        .is_some_and(|r| r.setup_failed && Some(r.code) == exit_code);
    // Stopped at its deadline by its own watchdog (while no agent watched, or first).
    let reason = reason.or_else(|| {
        record
            .as_ref()
            .is_some_and(|r| r.timed_out)
            .then_some(StopReason::TimedOut)
    });
    let limit = shared.memory_limit_mib;
    let near_limit = limit > 0 && usage.peak_memory_mib.is_some_and(|p| p * 10 >= limit * 9);

    let (state, message) = match reason {
        Some(StopReason::Cancelled) => (
            JobState::Cancelled,
            if killed {
                "cancelled (killed after the grace period)".to_owned()
            } else {
                "cancelled".to_owned()
            },
        ),
        Some(StopReason::TimedOut) => (
            JobState::TimedOut,
            format!("time limit of {} s exceeded", shared.time_limit_s),
        ),
        None if oom_kills > 0 || (exit_code == Some(137) && (near_limit || limit_hit)) => (
            JobState::OutOfMemory,
            format!(
                "out of memory: the job exceeded its {limit} MiB limit{}",
                if oom_kills > 0 {
                    format!(" ({oom_kills} process(es) killed by the kernel)")
                } else {
                    String::new()
                }
            ),
        ),
        None if exit_code == Some(0) => (JobState::Succeeded, "run exited with code 0".to_owned()),
        None => {
            let what = if setup_failed { "setup" } else { "run" };
            let message = match (exit_code, status.and_then(|s| s.signal())) {
                (_, Some(sig)) => format!("the job's wrapper was killed by signal {sig}"),
                (Some(c), None) if c > 128 && c < 160 => {
                    format!(
                        "{what} failed with exit code {c} (killed by signal {})",
                        c - 128
                    )
                }
                (Some(c), None) => format!("{what} failed with exit code {c}"),
                (None, None) => "the job ended while no agent watched it and left no exit \
                                 status"
                    .to_owned(),
            };
            (JobState::Failed { exit_code }, message)
        }
    };
    Outcome {
        state,
        exit_code,
        usage,
        message,
        started_at_ms: Some(shared.started_at_ms),
        ended_at_ms: Some(ended_at_ms),
    }
}

/// The outcome of a job that ended while no agent watched it; cleans up its cgroup.
pub(crate) async fn finished_while_away(job_dir: &Path, record: &AttemptRecord) -> Outcome {
    let shared = Shared::new(
        job_dir.to_owned(),
        record,
        Duration::ZERO,
        LogSink::new(mpsc::channel(1).0),
    );
    // Its end is when its exit record was written; without one, unknown (and no time billed).
    let ended_ms = exit_mtime_ms(job_dir).await;
    if let Some(cg) = &shared.cgroup {
        if cg.exists() {
            shared.sample();
        }
    }
    let exit = read_exit_record(job_dir).await;
    let mut outcome = conclude(
        &shared,
        None,
        exit,
        None,
        false,
        ended_ms.unwrap_or(record.started_at_ms),
    );
    outcome.ended_at_ms = ended_ms;
    if let Some(cg) = &shared.cgroup {
        if cg.exists() {
            kill_cgroup_and_remove(cg).await;
        }
    }
    outcome
}

/// A handle on a running job. Dropping it leaves the job running under the backend's watch.
#[derive(Debug)]
pub struct RunningJob {
    shared: Arc<Shared>,
    logs: mpsc::Receiver<LogChunk>,
    outcome: watch::Receiver<Option<Outcome>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("attempt_id", &self.attempt_id)
            .field("pid", &self.pid)
            .finish()
    }
}

impl RunningJob {
    pub(crate) fn new(shared: Arc<Shared>, logs: mpsc::Receiver<LogChunk>) -> Self {
        let outcome = shared.outcome.subscribe();
        RunningJob {
            shared,
            logs,
            outcome,
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The wrapper's pid, which is also the job's process group id.
    pub fn pid(&self) -> u32 {
        self.shared.pid as u32
    }

    pub fn attempt_id(&self) -> &str {
        &self.shared.attempt_id
    }

    /// The attempt directory: the agent's files (logs, record) and the job's `work` directory.
    pub fn job_dir(&self) -> &Path {
        &self.shared.job_dir
    }

    /// The job's working directory, where its outputs are.
    pub fn work_dir(&self) -> PathBuf {
        super::work_dir(&self.shared.job_dir)
    }

    /// The job's output as it comes; the channel ends (`None`) after the job's last chunk, a
    /// `System` chunk with the outcome's message. Chunks are dropped (never the job blocked) when
    /// the channel is full; read it concurrently with `wait`. A later handle for the same job
    /// (from `reattach`) takes the stream over from this one.
    pub fn logs(&mut self) -> &mut mpsc::Receiver<LogChunk> {
        &mut self.logs
    }

    /// Takes the log receiver (e.g. into its own task); `logs()` is then empty.
    pub fn take_logs(&mut self) -> mpsc::Receiver<LogChunk> {
        std::mem::replace(&mut self.logs, mpsc::channel(1).1)
    }

    /// Usage so far (from the cgroup, else sampled from `/proc`); final once the job is over.
    pub fn usage(&self) -> Usage {
        self.shared.usage()
    }

    /// The outcome, once the job is over.
    pub fn try_outcome(&self) -> Option<Outcome> {
        self.outcome.borrow().clone()
    }

    /// Stops the job: SIGTERM to its processes, SIGKILL to all that remain after the grace
    /// period (with a cgroup: every process in it, so nothing escapes by changing its process
    /// group). Returns once the job is over; [`RunningJob::wait`] then reports `Cancelled`
    /// (unless it had ended already).
    pub async fn cancel(&self) {
        self.shared.cancel.send_replace(true);
        let mut rx = self.outcome.clone();
        let _ = rx.wait_for(Option::is_some).await;
    }

    /// Waits for the job to end, keeping the handle (so that it can still be cancelled meanwhile).
    pub async fn finished(&self) -> Outcome {
        let mut rx = self.outcome.clone();
        let outcome = rx.wait_for(Option::is_some).await.map(|o| (*o).clone());
        match outcome {
            Ok(o) => o.expect("checked by wait_for"),
            Err(_) => Outcome {
                state: JobState::Failed { exit_code: None },
                exit_code: None,
                usage: self.shared.usage(),
                message: "the job's supervisor stopped (runtime shut down)".into(),
                started_at_ms: Some(self.shared.started_at_ms),
                ended_at_ms: None,
            },
        }
    }

    /// Waits for the job to end. Every log chunk has been sent by then.
    pub async fn wait(mut self) -> Outcome {
        match self.outcome.wait_for(Option::is_some).await {
            Ok(o) => (*o).clone().expect("checked by wait_for"),
            Err(_) => Outcome {
                state: JobState::Failed { exit_code: None },
                exit_code: None,
                usage: self.shared.usage(),
                message: "the job's supervisor stopped (runtime shut down)".into(),
                started_at_ms: Some(self.shared.started_at_ms),
                ended_at_ms: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_records() {
        let dash = "3\nphase setup\n0m0.000000s 0m0.004000s\n0m1.250000s 0m0.060000s\n";
        assert_eq!(
            parse_exit_record(dash),
            Some(ExitRecord {
                code: 3,
                setup_failed: true,
                timed_out: false,
                children_cpu_ms: Some(1310),
            })
        );
        let watchdog = parse_exit_record("137\nphase timeout\n").unwrap();
        assert!(watchdog.timed_out && !watchdog.setup_failed);
        let bash = "0\nphase run\n0m0.002s 0m0.000s\n1m2.500s 0m0.000s\n";
        let r = parse_exit_record(bash).unwrap();
        assert_eq!(
            (r.code, r.setup_failed, r.children_cpu_ms),
            (0, false, Some(62_500))
        );
        assert_eq!(parse_exit_record("143\n").unwrap().children_cpu_ms, None);
        assert_eq!(parse_exit_record("garbage"), None);
    }
}
