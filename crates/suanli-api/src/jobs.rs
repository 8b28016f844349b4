//! Jobs and agents on the wire: what a consumer runs on a lease, and the outbound protocol by
//! which a provider's agent registers its capacity, takes work, and reports state, logs and signed
//! usage.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::types::NodeSpec;

/// One file of a job's uploaded working directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkdirFile {
    /// Relative path inside the job directory; no `..`, not absolute.
    pub path: String,
    /// File content, base64 (standard alphabet, with padding).
    pub content_base64: String,
    /// Unix permission bits, e.g. 420 (0o644) or 493 (0o755).
    #[serde(default)]
    pub mode: Option<u32>,
}

/// What to run: the part of a task file that travels to the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    #[serde(default)]
    pub name: Option<String>,
    /// Shell commands run once before `run`; a failure fails the job.
    #[serde(default)]
    pub setup: Option<String>,
    /// Shell commands of the job.
    pub run: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The uploaded working directory (small: at most 4 MiB in all).
    #[serde(default)]
    pub workdir: Vec<WorkdirFile>,
    /// Relative paths (files or directories) to collect when the job ends.
    #[serde(default)]
    pub outputs: Vec<String>,
    /// Whether the job may use the network (default: no).
    #[serde(default)]
    pub network: bool,
    /// Whether a job whose agent was lost may run again as a new attempt.
    #[serde(default)]
    pub restartable: bool,
    /// Wall-clock limit of one attempt in seconds; default and maximum: the lease's remaining time.
    #[serde(default)]
    pub time_limit_s: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJobRequest {
    pub task: TaskSpec,
}

/// One try at running a job. Each has its own id; the agent must name it in every report, and
/// reports for an attempt that is no longer current are refused (fencing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Attempt {
    pub id: String,
    pub number: u32,
    pub agent_id: String,
    /// `dispatched`, `running`, `succeeded`, `failed`, `cancelled`, `timed_out` or `lost`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub dispatched_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// Backend job id (Slurm job id) when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Job {
    pub id: String,
    pub org_id: String,
    pub lease_id: String,
    pub name: String,
    /// `queued`, `dispatched`, `running`, `succeeded`, `failed`, `cancelled`, `timed_out` or `lost`.
    pub state: String,
    pub restartable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// Metered use acknowledged so far, in unit-milliseconds (units × milliseconds).
    pub unit_ms: u64,
    pub attempts: Vec<Attempt>,
}

/// A piece of a job's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogChunk {
    /// Position in the job's log; pass as `after` to read on.
    pub seq: i64,
    pub attempt_id: String,
    /// `stdout`, `stderr` or `system`.
    pub stream: String,
    pub data: String,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogPage {
    pub chunks: Vec<LogChunk>,
    /// Pass as `after` for the next page.
    pub next_after: i64,
    /// True when the job has ended and every chunk has been read.
    pub done: bool,
    /// The job's state when the page was read.
    pub state: String,
}

/// Paging of a job's log; `wait_ms` long-polls for new chunks (at most 30 s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, IntoParams, Default)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogParams {
    #[serde(default)]
    pub after: Option<i64>,
    #[serde(default)]
    pub limit: Option<u32>,
    #[serde(default)]
    pub wait_ms: Option<u64>,
}

/// Filters of the job list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, IntoParams, Default)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct JobListParams {
    #[serde(default)]
    pub lease_id: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub limit: Option<u32>,
}

// ------------------------------------------------------------------------------------ agents

/// An agent announcing itself and the capacity it really has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterAgentRequest {
    pub name: String,
    pub zone: String,
    /// The agent's ed25519 public key, hex: usage records must be signed with its private key.
    pub public_key_hex: String,
    /// `local` or `slurm`.
    pub backend: String,
    /// The isolation in force for jobs, in words (cgroups, sandbox, user).
    pub isolation: String,
    pub version: String,
    /// The machine(s) behind the agent, as measured.
    pub nodes: Vec<NodeSpec>,
    /// Attach to this existing pool of the provider (a pool id, `pool_…`) instead of creating one.
    #[serde(default)]
    pub pool_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Agent {
    pub id: String,
    pub org_id: String,
    pub pool_id: String,
    pub name: String,
    pub backend: String,
    pub isolation: String,
    pub version: String,
    /// `alive`, `suspect` or `lost`.
    pub state: String,
    pub registered_at: String,
    pub last_seen_at: String,
    pub heartbeat_interval_s: u64,
    pub suspect_after_s: u64,
    pub lost_after_s: u64,
    /// Usage records of this agent refused for claiming more than time allows (never charged).
    pub usage_refusals: u64,
    /// Counts the registrations of this agent's identity. The agent sends the one its
    /// registration answered as `Suanli-Agent-Generation` with every report; a report of an older
    /// generation (the same agent started twice, or from a copied state directory) is refused
    /// with 409 `agent_superseded`.
    pub generation: u64,
    /// Why the last of them was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_usage_refusal: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    /// Attempts the agent is running right now. The answer tells the agent to stop whatever is
    /// not a current attempt of its own, text that is no attempt id included.
    pub running: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatResponse {
    /// Attempts the agent must stop now: cancelled, lost, superseded or unknown.
    pub stop: Vec<String>,
    pub agent: Agent,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PollRequest {
    /// How long to wait for work, at most 30,000 ms.
    #[serde(default)]
    pub wait_ms: u64,
    /// At most this many assignments (default 8).
    #[serde(default)]
    pub max: Option<u32>,
}

/// Work for an agent: one attempt of a job, with the resources of its lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Assignment {
    pub attempt_id: String,
    pub job_id: String,
    pub lease_id: String,
    pub task: TaskSpec,
    pub units: u64,
    pub cpus: u64,
    pub memory_mib: u64,
    pub accelerators: u64,
    /// Wall-clock limit of this attempt.
    pub time_limit_s: u64,
    /// Node ids of the lease's allocations.
    pub node_ids: Vec<String>,
    /// The lease's resource class (`supercomputing:<PARTITION>` tells a Slurm agent where to run).
    #[serde(default)]
    pub class: String,
    /// The consumer org, which a Slurm agent maps to a Unix account.
    #[serde(default)]
    pub consumer_org_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PollResponse {
    pub assignments: Vec<Assignment>,
}

/// A change of an attempt's state, reported by its agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttemptEvent {
    /// `pending` (waiting in the backend's queue; `message` says why), `running`, `succeeded`,
    /// `failed`, `cancelled` or `timed_out`.
    pub state: String,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub backend_id: Option<String>,
    /// When the job itself started, by the agent's clock (Unix ms); with `running` or the end.
    /// The exchange keeps it between the attempt's dispatch and now.
    #[serde(default)]
    pub started_ms: Option<i64>,
    /// When the job itself ended (Unix ms), with the end: a report delayed by retries still
    /// shows how long the job ran.
    #[serde(default)]
    pub ended_ms: Option<i64>,
}

/// Metered use of one attempt over one interval, signed by the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageRecord {
    /// 1, 2, 3, … per attempt; a repeated sequence number is a retry and counted once.
    pub seq: u64,
    /// Use since the attempt's previous record, in unit-milliseconds (units × milliseconds).
    /// The attempt's total may never exceed its units × the time since the exchange dispatched
    /// it (bounded by its time limit and its lease's end), with 2 s of clock skew allowed: a
    /// record beyond that is refused with `usage_refused` and never charged.
    pub unit_ms: u64,
    #[serde(default)]
    pub cpu_ms: Option<u64>,
    #[serde(default)]
    pub peak_memory_mib: Option<u64>,
    /// ed25519 signature (hex) of [`usage_message`] by the agent's key.
    pub signature_hex: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageBatch {
    pub records: Vec<UsageRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UsageAck {
    /// Records counted now.
    pub accepted: u32,
    /// Records already counted before (retries).
    pub duplicates: u32,
    /// Unit-milliseconds of the attempt acknowledged in all.
    pub unit_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentLogChunk {
    /// 1, 2, 3, … per attempt; repeats are ignored.
    pub seq: u64,
    /// `stdout`, `stderr` or `system`.
    pub stream: String,
    pub data: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogBatch {
    pub chunks: Vec<AgentLogChunk>,
}

/// A file a job left in one of its output paths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OutputFile {
    pub path: String,
    pub size_bytes: u64,
}

/// Output files an agent collected from a job's directory when it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputBatch {
    pub files: Vec<WorkdirFile>,
}

/// The exact bytes an agent signs for a usage record (v2: use in unit-milliseconds).
pub fn usage_message(
    job_id: &str,
    attempt_id: &str,
    seq: u64,
    unit_ms: u64,
    cpu_ms: Option<u64>,
    peak_memory_mib: Option<u64>,
) -> String {
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    format!(
        "suanli-usage-v2|{job_id}|{attempt_id}|{seq}|{unit_ms}|{}|{}",
        opt(cpu_ms),
        opt(peak_memory_mib)
    )
}
