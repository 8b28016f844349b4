//! Creating and cancelling jobs (and how much a task may carry), the time an attempt is given,
//! whose reports count (fencing), and what an agent's reports of an attempt may say: its state,
//! its usage, its logs and outputs, and how much one report may carry.

use super::purchase::Billing;
use super::{Item, ItemRefusal, Refusal};
use crate::job::{next, JobEvent, JobState};
use crate::lease::LeaseState;

/// What creating a job needs to know of its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobLeaseSnapshot {
    pub consumer_org_id: String,
    pub state: LeaseState,
    pub billing: Billing,
    pub ends_ms: i64,
}

/// Seconds left on a lease ending at `ends_ms`, at `now_ms` (whole seconds, rounded down).
pub fn remaining_s(ends_ms: i64, now_ms: i64) -> u64 {
    u64::try_from((ends_ms - now_ms).max(0) / 1_000).unwrap_or(0)
}

/// Decides creating a job by `org_id` on `lease` (`None`: no such lease) with the time limit it
/// asked for; returns the job's time limit in seconds: what was asked, or the lease's remaining
/// time, never more than that and at least a second.
pub fn decide_create(
    lease: Option<&JobLeaseSnapshot>,
    org_id: &str,
    time_limit_s: Option<u64>,
    now_ms: i64,
) -> Result<u64, Refusal> {
    // Another org's lease answers exactly as a missing one.
    let lease = lease
        .filter(|l| l.consumer_org_id == org_id)
        .ok_or(Refusal::NotFound("lease"))?;
    if lease.state.is_final() {
        return Err(Refusal::LeaseNotActive(lease.state));
    }
    if lease.billing != Billing::Metered {
        return Err(Refusal::invalid(
            "lease_id",
            "no agent serves this lease's pool, so jobs cannot run on it",
        ));
    }
    let remaining = remaining_s(lease.ends_ms, now_ms);
    if remaining == 0 {
        return Err(Refusal::LeaseEnding);
    }
    Ok(time_limit_s.unwrap_or(remaining).min(remaining).max(1))
}

/// Longest `setup` or `run` script of a task.
pub const MAX_SCRIPT_BYTES: usize = 64 * 1024;
/// Most environment variables of a task.
pub const MAX_ENV_VARS: usize = 256;
/// Longest value of a task's environment variable.
pub const MAX_ENV_VALUE_BYTES: usize = 4_096;
/// Largest working directory a task uploads, decoded.
pub const MAX_WORKDIR_BYTES: usize = 512 * 1024;
/// Most files of a task's working directory.
pub const MAX_WORKDIR_FILES: usize = 1_000;
/// Most output paths of a task.
pub const MAX_OUTPUT_PATHS: usize = 64;

/// A measure of a task the exchange bounds, as the API measured it from the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskMeasure {
    /// The lengths of its `run` and `setup` scripts: at most [`MAX_SCRIPT_BYTES`] each.
    Scripts {
        run_bytes: usize,
        setup_bytes: Option<usize>,
    },
    /// How many environment variables it sets: at most [`MAX_ENV_VARS`].
    EnvVars(usize),
    /// Its working directory's decoded size and files: at most [`MAX_WORKDIR_BYTES`] and
    /// [`MAX_WORKDIR_FILES`].
    Workdir { bytes: usize, files: usize },
    /// How many output paths it collects: at most [`MAX_OUTPUT_PATHS`].
    OutputPaths(usize),
    /// The time limit it asks for (`None`: its lease's remaining time): at least a second.
    TimeLimit(Option<u64>),
}

/// Decides one measure of a task being queued. The API measures a task's parts in the order it
/// parses them, so the first fault in the request is the one refused.
pub fn decide_task(measure: TaskMeasure) -> Result<(), Refusal> {
    match measure {
        TaskMeasure::Scripts {
            run_bytes,
            setup_bytes,
        } if run_bytes > MAX_SCRIPT_BYTES || setup_bytes.is_some_and(|s| s > MAX_SCRIPT_BYTES) => {
            Err(Refusal::invalid(
                "task.run",
                "setup and run are at most 64 KiB each",
            ))
        }
        TaskMeasure::EnvVars(n) if n > MAX_ENV_VARS => Err(Refusal::invalid(
            "task.env",
            "at most 256 environment variables",
        )),
        TaskMeasure::Workdir { bytes, files }
            if bytes > MAX_WORKDIR_BYTES || files > MAX_WORKDIR_FILES =>
        {
            Err(Refusal::invalid(
                "task.workdir",
                "the working directory is at most 512 KiB and 1000 files",
            ))
        }
        TaskMeasure::OutputPaths(n) if n > MAX_OUTPUT_PATHS => {
            Err(Refusal::invalid("task.outputs", "at most 64 output paths"))
        }
        TaskMeasure::TimeLimit(Some(0)) => Err(Refusal::invalid(
            "task.time_limit_s",
            "time_limit_s must be at least 1",
        )),
        _ => Ok(()),
    }
}

/// Decides the length of the value of a task's environment variable `name`: at most
/// [`MAX_ENV_VALUE_BYTES`]. (What the API refuses of its text besides, a NUL, it refuses alike.)
pub fn decide_env_value(name: &str, value_bytes: usize) -> Result<(), ItemRefusal> {
    if value_bytes > MAX_ENV_VALUE_BYTES {
        return Err(ItemRefusal {
            list: "task.env",
            item: Item::Key(name.to_owned()),
            field: None,
            message: "values are at most 4 KiB, without NUL".into(),
        });
    }
    Ok(())
}

/// Decides cancelling a job in `state`: only one that has not ended.
pub fn decide_cancel(state: JobState) -> Result<(), Refusal> {
    if state.is_final() {
        return Err(Refusal::JobNotActive(state));
    }
    Ok(())
}

/// Fencing, first half: a report about an attempt (`None`: unknown) counts only from the agent it
/// was dispatched to, and only while it has not ended.
pub fn fence_attempt(
    attempt: Option<(&str, JobState)>,
    reporting_agent_id: &str,
) -> Result<(), Refusal> {
    let (agent_id, state) =
        attempt.ok_or_else(|| Refusal::StaleAttempt("unknown attempt".into()))?;
    if agent_id != reporting_agent_id {
        return Err(Refusal::StaleAttempt(
            "the attempt belongs to another agent".into(),
        ));
    }
    if state.is_final() {
        return Err(Refusal::StaleAttempt(format!(
            "the attempt has ended ({})",
            state.as_str()
        )));
    }
    Ok(())
}

/// Fencing, second half: and only while it is its job's current attempt, of a job still running.
pub fn fence_job(
    current_attempt_id: Option<&str>,
    job_state: JobState,
    attempt_id: &str,
) -> Result<(), Refusal> {
    if current_attempt_id != Some(attempt_id) || job_state.is_final() {
        return Err(Refusal::StaleAttempt("the attempt was superseded".into()));
    }
    Ok(())
}

/// The time an attempt dispatched at `now_ms` is given: the job's limit, never past its lease's
/// end, at least a second.
pub fn attempt_time_limit_s(job_time_limit_s: u64, lease_ends_ms: i64, now_ms: i64) -> u64 {
    job_time_limit_s
        .min(remaining_s(lease_ends_ms, now_ms))
        .max(1)
}

/// What an agent's report of an attempt's state does to its job (fenced before: the attempt is
/// the job's current one and the job has not ended).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportPlan {
    /// The attempt waits in its backend's queue: the job stays dispatched and takes the report's
    /// message as its reason.
    Pending,
    /// The job (and its attempt) go to this state: `Running`, or how it ended.
    Move(JobState),
}

/// Decides an agent's report that the current attempt of a job in `job_state` is now `reported`:
/// pending (`Dispatched`) only while the job is dispatched; running or ended as the job's state
/// machine allows; never `Lost` nor `Queued` (the exchange decides those, not the agent).
pub fn decide_attempt_report(
    job_state: JobState,
    reported: JobState,
) -> Result<ReportPlan, Refusal> {
    if reported == JobState::Dispatched {
        if job_state != JobState::Dispatched {
            return Err(Refusal::invalid(
                "state",
                format!("a {} job cannot be pending", job_state.as_str()),
            ));
        }
        return Ok(ReportPlan::Pending);
    }
    let event = match reported {
        JobState::Running => JobEvent::Start,
        s if s.is_final() && s != JobState::Lost => JobEvent::Finish(s),
        s => {
            return Err(Refusal::invalid(
                "state",
                format!("an agent cannot report {}", s.as_str()),
            ))
        }
    };
    next(job_state, event)
        .map(ReportPlan::Move)
        .map_err(|e| Refusal::invalid("state", e.to_string()))
}

/// Fencing of usage, beyond the attempt's: usage counts only while the attempt's lease (in
/// `lease_state`) has not ended, since its hold is settled by then.
pub fn fence_usage(lease_state: LeaseState) -> Result<(), Refusal> {
    if lease_state.is_final() {
        return Err(Refusal::StaleAttempt("the lease has ended".into()));
    }
    Ok(())
}

/// Fencing of logs, looser than [`fence_attempt`]: an attempt's log chunks (`None`: an unknown
/// attempt) count from the agent it was dispatched to, also after the attempt ended (its last
/// lines arrive after its end), but not once the exchange declared it lost (an orphan's output
/// never mixes into the job's log).
pub fn fence_logs(
    attempt: Option<(&str, JobState)>,
    reporting_agent_id: &str,
) -> Result<(), Refusal> {
    let (agent_id, state) =
        attempt.ok_or_else(|| Refusal::StaleAttempt("unknown attempt".into()))?;
    if agent_id != reporting_agent_id || state == JobState::Lost {
        return Err(Refusal::StaleAttempt(
            "the attempt is not this agent's".into(),
        ));
    }
    Ok(())
}

/// Most attempts one heartbeat names.
pub const MAX_HEARTBEAT_ATTEMPTS: usize = 10_000;
/// Most usage records one report carries (and it carries at least one).
pub const MAX_USAGE_RECORDS: usize = 1_000;
/// Most log chunks one report carries.
pub const MAX_LOG_CHUNKS: usize = 1_000;
/// Largest log chunk.
pub const MAX_LOG_CHUNK_BYTES: usize = 256 * 1024;
/// Most output files one report carries.
pub const MAX_OUTPUT_FILES: usize = 1_000;
/// Most output bytes a job keeps.
pub const MAX_OUTPUT_BYTES_PER_JOB: u64 = 8 * 1024 * 1024;

/// What an agent's report carries, counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportSize {
    /// The attempts a heartbeat says the agent runs: at most [`MAX_HEARTBEAT_ATTEMPTS`].
    Heartbeat(usize),
    /// Usage records: 1 to [`MAX_USAGE_RECORDS`].
    Usage(usize),
    /// Log chunks: at most [`MAX_LOG_CHUNKS`].
    Logs(usize),
    /// Output files: at most [`MAX_OUTPUT_FILES`].
    Outputs(usize),
}

/// Decides how much one report of an agent carries.
pub fn decide_report_size(size: ReportSize) -> Result<(), Refusal> {
    match size {
        ReportSize::Heartbeat(n) if n > MAX_HEARTBEAT_ATTEMPTS => {
            Err(Refusal::invalid("running", "at most 10000 attempts"))
        }
        ReportSize::Usage(n) if n == 0 || n > MAX_USAGE_RECORDS => {
            Err(Refusal::invalid("records", "send 1 to 1000 records"))
        }
        ReportSize::Logs(n) if n > MAX_LOG_CHUNKS => {
            Err(Refusal::invalid("chunks", "at most 1000 chunks"))
        }
        ReportSize::Outputs(n) if n > MAX_OUTPUT_FILES => {
            Err(Refusal::invalid("files", "at most 1000 files"))
        }
        _ => Ok(()),
    }
}

/// Decides log chunk `index` of a report: of a stream the exchange keeps (`stdout`, `stderr`, or
/// `system`, the agent's own notes), numbered from 1, at most [`MAX_LOG_CHUNK_BYTES`] of data.
pub fn decide_log_chunk(
    index: usize,
    stream: &str,
    seq: u64,
    data_bytes: usize,
) -> Result<(), ItemRefusal> {
    if !matches!(stream, "stdout" | "stderr" | "system")
        || seq == 0
        || data_bytes > MAX_LOG_CHUNK_BYTES
    {
        return Err(ItemRefusal {
            list: "chunks",
            item: Item::Index(index),
            field: None,
            message: "stream is stdout, stderr or system; seq from 1; data at most 256 KiB".into(),
        });
    }
    Ok(())
}

/// Decides storing output `files` (path, size in bytes; a path sent again replaces the file,
/// the later of two in one batch too) of a job that keeps `kept` (path, size): the job keeps at
/// most `max_total_bytes` of outputs in all. Returns what it keeps after them.
pub fn decide_outputs(
    kept: &[(String, u64)],
    files: &[(&str, u64)],
    max_total_bytes: u64,
) -> Result<u64, Refusal> {
    let mut after: std::collections::BTreeMap<&str, u64> = kept
        .iter()
        .map(|(path, size)| (path.as_str(), *size))
        .collect();
    for &(path, size) in files {
        after.insert(path, size);
    }
    let total = after
        .values()
        .try_fold(0u64, |sum, &size| sum.checked_add(size));
    match total {
        Some(total) if total <= max_total_bytes => Ok(total),
        _ => Err(Refusal::invalid(
            "files",
            format!("a job keeps at most {max_total_bytes} bytes of outputs"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> JobLeaseSnapshot {
        JobLeaseSnapshot {
            consumer_org_id: "org_c".into(),
            state: LeaseState::Active,
            billing: Billing::Metered,
            ends_ms: 60_000,
        }
    }

    #[test]
    fn a_job_gets_the_time_it_asks_within_its_lease() {
        assert_eq!(decide_create(Some(&lease()), "org_c", Some(10), 0), Ok(10));
        assert_eq!(decide_create(Some(&lease()), "org_c", None, 0), Ok(60));
        assert_eq!(
            decide_create(Some(&lease()), "org_c", Some(600), 30_500),
            Ok(29)
        );
        assert_eq!(decide_create(Some(&lease()), "org_c", Some(0), 0), Ok(1));
        assert_eq!(
            decide_create(Some(&lease()), "org_c", None, 59_500),
            Err(Refusal::LeaseEnding)
        );
    }

    #[test]
    fn every_refusal() {
        assert_eq!(
            decide_create(Some(&lease()), "org_x", None, 0),
            Err(Refusal::NotFound("lease"))
        );
        assert_eq!(
            decide_create(None, "org_c", None, 0),
            Err(Refusal::NotFound("lease"))
        );
        let ended = JobLeaseSnapshot {
            state: LeaseState::Ended,
            ..lease()
        };
        assert_eq!(
            decide_create(Some(&ended), "org_c", None, 0),
            Err(Refusal::LeaseNotActive(LeaseState::Ended))
        );
        let elapsed = JobLeaseSnapshot {
            billing: Billing::Elapsed,
            ..lease()
        };
        assert!(matches!(
            decide_create(Some(&elapsed), "org_c", None, 0),
            Err(Refusal::Invalid {
                field: "lease_id",
                ..
            })
        ));
        assert_eq!(
            decide_cancel(JobState::Succeeded),
            Err(Refusal::JobNotActive(JobState::Succeeded))
        );
        assert_eq!(decide_cancel(JobState::Running), Ok(()));
        assert_eq!(attempt_time_limit_s(600, 10_000, 0), 10);
        assert_eq!(fence_attempt(Some(("ag", JobState::Running)), "ag"), Ok(()));
        assert!(fence_attempt(Some(("ag", JobState::Running)), "other").is_err());
        assert!(fence_attempt(Some(("ag", JobState::Lost)), "ag").is_err());
        assert!(fence_attempt(None, "ag").is_err());
        assert_eq!(fence_job(Some("a1"), JobState::Running, "a1"), Ok(()));
        assert!(fence_job(Some("a2"), JobState::Running, "a1").is_err());
        assert!(fence_job(Some("a1"), JobState::Cancelled, "a1").is_err());
    }

    #[test]
    fn an_agent_reports_what_the_state_machine_allows() {
        use JobState::*;
        assert_eq!(
            decide_attempt_report(Dispatched, Dispatched),
            Ok(ReportPlan::Pending)
        );
        assert_eq!(
            decide_attempt_report(Dispatched, Running),
            Ok(ReportPlan::Move(Running))
        );
        assert_eq!(
            decide_attempt_report(Running, Running),
            Ok(ReportPlan::Move(Running))
        );
        assert_eq!(
            decide_attempt_report(Running, Succeeded),
            Ok(ReportPlan::Move(Succeeded))
        );
        assert_eq!(
            decide_attempt_report(Dispatched, Failed),
            Ok(ReportPlan::Move(Failed))
        );
        assert_eq!(
            decide_attempt_report(Running, Dispatched),
            Err(Refusal::invalid("state", "a running job cannot be pending"))
        );
        for s in [Lost, Queued] {
            assert_eq!(
                decide_attempt_report(Running, s),
                Err(Refusal::invalid(
                    "state",
                    format!("an agent cannot report {}", s.as_str())
                ))
            );
        }
        // A transition the state machine refuses (fencing lets no ended job through, so this is
        // the machine's own word).
        assert!(matches!(
            decide_attempt_report(Queued, Running),
            Err(Refusal::Invalid { field: "state", .. })
        ));
    }

    #[test]
    fn usage_and_logs_are_fenced() {
        assert_eq!(fence_usage(LeaseState::Active), Ok(()));
        assert_eq!(
            fence_usage(LeaseState::Ended),
            Err(Refusal::StaleAttempt("the lease has ended".into()))
        );
        assert_eq!(fence_logs(Some(("ag", JobState::Running)), "ag"), Ok(()));
        // An ended attempt's last lines still count; a lost one's do not.
        assert_eq!(fence_logs(Some(("ag", JobState::Succeeded)), "ag"), Ok(()));
        let not_its = Err(Refusal::StaleAttempt(
            "the attempt is not this agent's".into(),
        ));
        assert_eq!(fence_logs(Some(("ag", JobState::Lost)), "ag"), not_its);
        assert_eq!(fence_logs(Some(("ag", JobState::Running)), "x"), not_its);
        assert_eq!(
            fence_logs(None, "ag"),
            Err(Refusal::StaleAttempt("unknown attempt".into()))
        );
    }

    #[test]
    fn a_task_carries_so_much_and_no_more() {
        use TaskMeasure::*;
        let fits = [
            Scripts {
                run_bytes: MAX_SCRIPT_BYTES,
                setup_bytes: Some(MAX_SCRIPT_BYTES),
            },
            Scripts {
                run_bytes: 1,
                setup_bytes: None,
            },
            EnvVars(MAX_ENV_VARS),
            Workdir {
                bytes: MAX_WORKDIR_BYTES,
                files: MAX_WORKDIR_FILES,
            },
            OutputPaths(MAX_OUTPUT_PATHS),
            TimeLimit(None),
            TimeLimit(Some(1)),
        ];
        for m in fits {
            assert_eq!(decide_task(m), Ok(()), "{m:?}");
        }
        let scripts = Err(Refusal::invalid(
            "task.run",
            "setup and run are at most 64 KiB each",
        ));
        assert_eq!(
            decide_task(Scripts {
                run_bytes: MAX_SCRIPT_BYTES + 1,
                setup_bytes: None
            }),
            scripts
        );
        assert_eq!(
            decide_task(Scripts {
                run_bytes: 1,
                setup_bytes: Some(MAX_SCRIPT_BYTES + 1)
            }),
            scripts
        );
        assert_eq!(
            decide_task(EnvVars(257)),
            Err(Refusal::invalid(
                "task.env",
                "at most 256 environment variables"
            ))
        );
        let workdir = Err(Refusal::invalid(
            "task.workdir",
            "the working directory is at most 512 KiB and 1000 files",
        ));
        assert_eq!(
            decide_task(Workdir {
                bytes: MAX_WORKDIR_BYTES + 1,
                files: 1
            }),
            workdir
        );
        assert_eq!(
            decide_task(Workdir {
                bytes: 0,
                files: 1_001
            }),
            workdir
        );
        assert_eq!(
            decide_task(OutputPaths(65)),
            Err(Refusal::invalid("task.outputs", "at most 64 output paths"))
        );
        assert_eq!(
            decide_task(TimeLimit(Some(0))),
            Err(Refusal::invalid(
                "task.time_limit_s",
                "time_limit_s must be at least 1"
            ))
        );
        assert_eq!(decide_env_value("PATH", MAX_ENV_VALUE_BYTES), Ok(()));
        let refused = decide_env_value("PATH", MAX_ENV_VALUE_BYTES + 1).unwrap_err();
        assert_eq!(refused.path(), "task.env.PATH");
        assert_eq!(refused.message, "values are at most 4 KiB, without NUL");
    }

    #[test]
    fn a_report_carries_so_much_and_no_more() {
        use ReportSize::*;
        for size in [
            Heartbeat(0),
            Heartbeat(10_000),
            Usage(1),
            Usage(1_000),
            Logs(0),
            Logs(1_000),
            Outputs(0),
            Outputs(1_000),
        ] {
            assert_eq!(decide_report_size(size), Ok(()), "{size:?}");
        }
        assert_eq!(
            decide_report_size(Heartbeat(10_001)),
            Err(Refusal::invalid("running", "at most 10000 attempts"))
        );
        for n in [0, 1_001] {
            assert_eq!(
                decide_report_size(Usage(n)),
                Err(Refusal::invalid("records", "send 1 to 1000 records"))
            );
        }
        assert_eq!(
            decide_report_size(Logs(1_001)),
            Err(Refusal::invalid("chunks", "at most 1000 chunks"))
        );
        assert_eq!(
            decide_report_size(Outputs(1_001)),
            Err(Refusal::invalid("files", "at most 1000 files"))
        );
    }

    #[test]
    fn a_log_chunk_is_of_a_kept_stream_numbered_and_bounded() {
        for stream in ["stdout", "stderr", "system"] {
            assert_eq!(decide_log_chunk(0, stream, 1, MAX_LOG_CHUNK_BYTES), Ok(()));
        }
        for (stream, seq, bytes) in [
            ("stdin", 1, 0),
            ("", 1, 0),
            ("stdout", 0, 0),
            ("stdout", 1, MAX_LOG_CHUNK_BYTES + 1),
        ] {
            let refused = decide_log_chunk(7, stream, seq, bytes).unwrap_err();
            assert_eq!(refused.path(), "chunks[7]");
            assert_eq!(
                refused.message,
                "stream is stdout, stderr or system; seq from 1; data at most 256 KiB"
            );
        }
    }

    #[test]
    fn a_job_keeps_outputs_up_to_its_cap_and_a_path_sent_again_replaces_itself() {
        let kept = [("a".to_owned(), 60), ("b".to_owned(), 30)];
        assert_eq!(decide_outputs(&kept, &[("c", 10)], 100), Ok(100));
        assert_eq!(decide_outputs(&kept, &[("a", 10)], 100), Ok(40));
        assert_eq!(decide_outputs(&[], &[("a", 90), ("a", 5)], 10), Ok(5));
        assert_eq!(decide_outputs(&kept, &[], 100), Ok(90));
        let over = Err(Refusal::invalid(
            "files",
            "a job keeps at most 100 bytes of outputs",
        ));
        assert_eq!(decide_outputs(&kept, &[("c", 11)], 100), over);
        assert_eq!(
            decide_outputs(&kept, &[("c", u64::MAX)], u64::MAX),
            Err(Refusal::invalid(
                "files",
                format!("a job keeps at most {} bytes of outputs", u64::MAX)
            ))
        );
    }
}
