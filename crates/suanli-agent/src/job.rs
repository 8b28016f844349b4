//! What a job is, whichever backend runs it: what to run ([`JobLaunch`]), its output
//! ([`LogChunk`]), the resources it used ([`Usage`]) and how it ended ([`Outcome`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Default process limit of a job.
pub const DEFAULT_PIDS_MAX: u64 = 512;

/// One uploaded file of the job's working directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFile {
    /// Relative path inside the job directory; absolute paths and `..` are refused.
    pub path: String,
    pub data: Vec<u8>,
    /// Permission bits (`0o644`, `0o755`); setuid/setgid/sticky bits are dropped.
    pub mode: u32,
}

/// What to run. Limits of 0 mean "no limit".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobLaunch {
    /// Names the job directory: letters, digits, `.`, `_`, `-`; at most 128 characters.
    pub attempt_id: String,
    /// Runs first with `/bin/sh -c`; if it fails, the job fails with its exit code.
    pub setup: Option<String>,
    /// Runs with `/bin/sh -c` in the job directory.
    pub run: String,
    /// Added to the job's environment (which never inherits the agent's).
    pub env: BTreeMap<String, String>,
    pub files: Vec<JobFile>,
    pub cpus: u64,
    pub memory_mib: u64,
    pub pids_max: u64,
    /// Wall-clock limit for setup and run together, in seconds.
    pub time_limit_s: u64,
    /// Whether the job may use the network (only enforceable under bubblewrap).
    pub network: bool,
}

impl JobLaunch {
    /// A launch with default limits: 1 CPU, 1024 MiB, 512 processes, 1 hour, no network.
    pub fn new(attempt_id: impl Into<String>, run: impl Into<String>) -> Self {
        JobLaunch {
            attempt_id: attempt_id.into(),
            setup: None,
            run: run.into(),
            env: BTreeMap::new(),
            files: Vec::new(),
            cpus: 1,
            memory_mib: 1024,
            pids_max: DEFAULT_PIDS_MAX,
            time_limit_s: 3600,
            network: false,
        }
    }
}

/// Resources a job used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    pub cpu_ms: Option<u64>,
    pub peak_memory_mib: Option<u64>,
    pub wall_ms: u64,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum JobState {
    Succeeded,
    /// A non-zero exit (of setup or run); `None` when the status is unknown (the job ended
    /// while no agent watched it and left no record). A command killed by signal N reports
    /// 128 + N, as the shell does.
    Failed {
        exit_code: Option<i32>,
    },
    Cancelled,
    TimedOut,
    OutOfMemory,
}

/// The end of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub state: JobState,
    pub exit_code: Option<i32>,
    pub usage: Usage,
    pub message: String,
    /// When the job itself started and ended (Unix ms), when known: what the consumer is shown,
    /// however late the agent gets to report it.
    pub started_at_ms: Option<u64>,
    pub ended_at_ms: Option<u64>,
}

/// Which stream a chunk came from; `System` is the backend's own messages about the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
    System,
}

/// A piece of a job's output: one or more whole lines (a longer line is cut at 64 KiB).
/// `seq` counts every chunk of the job's handle across streams; a gap means chunks were dropped
/// because the receiver was not read (the files keep everything).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunk {
    pub seq: u64,
    pub stream: LogStream,
    pub data: String,
}
