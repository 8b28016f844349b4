//! `suanli agent`: a provider's agent in front of this machine.
//!
//! It connects outbound only. It registers the machine's measured capacity with an ed25519 key of
//! its own (created on first start in the state directory), then runs three loops: heartbeats
//! (which also tell it which attempts to stop), a long poll for work, and one supervisor per
//! attempt that starts the job on the local backend, streams its logs, reports signed usage every
//! few seconds and its final state. Every report is retried until the exchange answers; a report
//! the exchange refuses as stale means the attempt is no longer ours, and the job is stopped.
//! After a restart the agent finds its jobs again through the backend and carries on, or reports
//! how they ended.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};
use suanli_agent::capacity::{self, CapacityOverride, MachineCapacity};
use suanli_agent::local::{
    JobFile, JobLaunch, JobState as LocalState, LocalBackend, LocalOptions, LogStream, Outcome,
    Reattached, RunningJob, UseBubblewrap,
};
use suanli_api::{
    AgentLogChunk, Assignment, AttemptEvent, HeartbeatRequest, LogBatch, NodeSpec, PollRequest,
    RegisterAgentRequest, UsageBatch, UsageRecord,
};
use suanli_client::{Client, ClientError};
use tokio::sync::watch;

use crate::args::AgentArgs;

/// The agent's config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The exchange, e.g. `https://exchange.example` or `http://127.0.0.1:8080`.
    pub server: String,
    /// File holding the provider's API token (keep it 0600). Preferred over `token`.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub token: Option<String>,
    /// The agent's name (also its node's name).
    pub name: String,
    /// The zone the machine is in.
    pub zone: String,
    /// Where the agent keeps its key and what it knows of its attempts.
    pub state_dir: PathBuf,
    /// Where jobs get their directories (default `STATE_DIR/jobs`). Jobs run as `nobody` when the
    /// agent is root, so every directory on the way must allow search (o+x).
    #[serde(default)]
    pub jobs_dir: Option<PathBuf>,
    /// `local` (this machine's processes) or `slurm` (the cluster this login node submits to;
    /// see `[slurm]` and docs/SUPERCOMPUTING.md).
    #[serde(default = "default_backend")]
    pub backend: String,
    /// The Slurm backend's partitions, prices, accounts and polling.
    #[serde(default)]
    pub slurm: Option<crate::agent_slurm::SlurmSection>,
    /// Serve this existing pool of the provider instead of one named after the agent.
    #[serde(default)]
    pub pool_id: Option<String>,
    /// Explicit capacity; what is not given is measured.
    #[serde(default)]
    pub capacity: CapacityOverride,
    /// `auto` (bubblewrap when it works here), `always` or `never`.
    #[serde(default)]
    pub sandbox: UseBubblewrap,
    /// Seconds between usage reports of a running job.
    #[serde(default = "default_usage_interval")]
    pub usage_interval_s: u64,
    /// Hours a finished job's directory (its files, outputs and logs) is kept before the agent
    /// deletes it; 0 keeps them forever.
    #[serde(default = "default_keep_finished")]
    pub keep_finished_jobs_h: u64,
    /// More paths jobs must not see, besides the agent's own config, token and state: the
    /// exchange's data directory when it runs on this machine, other services' secrets.
    #[serde(default)]
    pub hide: Vec<PathBuf>,
    /// Paths under `/run` jobs may see after all (every host socket there is hidden from them
    /// otherwise), e.g. a socket the provider means jobs to use.
    #[serde(default)]
    pub expose: Vec<PathBuf>,
    /// MiB of a job's output forwarded to the exchange; past it only the last
    /// `log_tail_kib` of each stream is, when the job ends, after a notice of what was dropped.
    #[serde(default = "default_log_mib")]
    pub max_log_mib_per_job: u64,
    #[serde(default = "default_log_tail_kib")]
    pub log_tail_kib: u64,
    /// How jobs that ask for the network get it: `isolated` (their own namespace through
    /// slirp4netns, without the host's loopback or sockets; refused when slirp4netns cannot
    /// work here) or `host` (the host's, loopback services and abstract sockets included).
    #[serde(default)]
    pub network: suanli_agent::local::JobNetwork,
}

fn default_log_mib() -> u64 {
    64
}

fn default_log_tail_kib() -> u64 {
    256
}

impl AgentConfig {
    /// How much of each job's output is forwarded.
    pub(crate) fn log_limits(&self) -> suanli_agent::local::LogLimits {
        suanli_agent::local::LogLimits {
            max_bytes: self.max_log_mib_per_job.saturating_mul(1024 * 1024),
            tail_bytes: usize::try_from(self.log_tail_kib.saturating_mul(1024))
                .unwrap_or(usize::MAX),
        }
    }
}

fn default_keep_finished() -> u64 {
    24
}

fn default_backend() -> String {
    "local".into()
}

fn default_usage_interval() -> u64 {
    5
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<AgentConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let config: AgentConfig =
            toml::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
        match (config.backend.as_str(), &config.slurm) {
            ("local", None) => {}
            ("local", Some(_)) => bail!(
                "{}: [slurm] is set but backend is \"local\"; write backend = \"slurm\"",
                path.display()
            ),
            ("slurm", Some(section)) => section
                .validate()
                .with_context(|| format!("{}: [slurm]", path.display()))?,
            ("slurm", None) => bail!(
                "{}: backend = \"slurm\" needs a [slurm] section with the partitions sold",
                path.display()
            ),
            (other, _) => bail!("{}: backend {other:?} is local or slurm", path.display()),
        }
        Ok(config)
    }

    fn token(&self) -> Result<String> {
        match (&self.token_file, &self.token) {
            (Some(f), _) => {
                refuse_readable_by_others(f, "the token file")?;
                Ok(std::fs::read_to_string(f)
                    .with_context(|| format!("read the token file {}", f.display()))?
                    .trim()
                    .to_owned())
            }
            (None, Some(t)) => Ok(t.clone()),
            (None, None) => bail!("the config names no token_file (or token)"),
        }
    }
}

/// Refuses a secret (the provider's token, the agent's key) that users other than the agent's can
/// read: whoever reads it can act as the provider.
fn refuse_readable_by_others(path: &Path, what: &str) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path) {
            let mode = m.permissions().mode();
            if mode & 0o077 != 0 {
                bail!(
                    "{what} {} can be read by other users (mode {:o}); make it the agent's \
                     alone: chmod 600 {}",
                    path.display(),
                    mode & 0o777,
                    path.display()
                );
            }
        }
    }
    Ok(())
}

/// The agent's signing key, created once and kept in `state_dir/agent.key` (0600).
fn load_or_create_key(state_dir: &Path) -> Result<SigningKey> {
    let path = state_dir.join("agent.key");
    refuse_readable_by_others(&path, "the agent's key")?;
    if let Ok(text) = std::fs::read_to_string(&path) {
        let bytes = hex_decode(text.trim()).context("agent.key is not hex")?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("agent.key is not 32 bytes"))?;
        return Ok(SigningKey::from_bytes(&bytes));
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("random: {e}"))?;
    crate::serve::write_secret(&path, &hex(&seed))?;
    Ok(SigningKey::from_bytes(&seed))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// What the agent remembers about the attempts it started, so a restart can find them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AttemptNote {
    pub attempt_id: String,
    job_id: String,
    units: u64,
    usage_seq: u64,
    /// Unit-milliseconds reported so far.
    #[serde(default)]
    unit_ms_reported: u64,
    pub log_seq: u64,
    /// The task's output paths, collected when the job ends.
    #[serde(default)]
    outputs: Vec<String>,
    /// A usage record saved before it was sent and not yet acknowledged: sent again (same
    /// sequence number, counted once) before anything else, also after a restart.
    #[serde(default)]
    pending_usage: Option<UsageRecord>,
    /// The backend's id of the job (the Slurm job id), once it has one.
    #[serde(default)]
    pub backend_id: Option<String>,
    /// The attempt's wall-clock limit (enforced again after a restart).
    #[serde(default)]
    pub time_limit_s: u64,
    /// Whether the exchange was told the job runs.
    #[serde(default)]
    pub reported_running: bool,
}

impl AttemptNote {
    pub(crate) fn new(a: &Assignment) -> AttemptNote {
        AttemptNote {
            attempt_id: a.attempt_id.clone(),
            job_id: a.job_id.clone(),
            units: a.units,
            usage_seq: 0,
            unit_ms_reported: 0,
            log_seq: 0,
            outputs: a.task.outputs.clone(),
            pending_usage: None,
            backend_id: None,
            time_limit_s: a.time_limit_s,
            reported_running: false,
        }
    }
}

fn notes_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("attempts")
}

pub(crate) fn save_note(state_dir: &Path, note: &AttemptNote) {
    let path = notes_dir(state_dir).join(format!("{}.json", note.attempt_id));
    let tmp = path.with_extension("json.tmp");
    let ok = serde_json::to_vec(note)
        .ok()
        .and_then(|b| std::fs::write(&tmp, b).ok())
        .and_then(|()| std::fs::rename(&tmp, &path).ok());
    if ok.is_none() {
        tracing::warn!(attempt = %note.attempt_id, "could not save the attempt's note");
    }
}

fn drop_note(state_dir: &Path, attempt_id: &str) {
    let _ = std::fs::remove_file(notes_dir(state_dir).join(format!("{attempt_id}.json")));
    let _ = std::fs::remove_file(log_seq_path(state_dir, attempt_id));
}

/// The last log chunk number the exchange acknowledged for an attempt, kept apart from the note
/// because the log forwarder updates it after every batch.
fn log_seq_path(state_dir: &Path, attempt_id: &str) -> PathBuf {
    notes_dir(state_dir).join(format!("{attempt_id}.logseq"))
}

/// What the exchange acknowledged of an attempt's output: the last chunk number and the bytes of
/// stdout and stderr sent (so a restarted agent resumes the log files there).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LogProgress {
    pub seq: u64,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
}

pub(crate) fn saved_log_progress(state_dir: &Path, attempt_id: &str) -> LogProgress {
    let text = std::fs::read_to_string(log_seq_path(state_dir, attempt_id)).unwrap_or_default();
    let mut n = text
        .split_whitespace()
        .map(|v| v.parse::<u64>().unwrap_or(0));
    LogProgress {
        seq: n.next().unwrap_or(0),
        stdout_bytes: n.next().unwrap_or(0),
        stderr_bytes: n.next().unwrap_or(0),
    }
}

/// Where the agent runs jobs.
enum Backend {
    Local(LocalBackend),
    Slurm(Arc<crate::agent_slurm::SlurmSide>),
}

/// Shared state of the agent's loops.
pub(crate) struct Agent {
    pub client: Client,
    pub agent_id: String,
    pub pool_id: String,
    key: SigningKey,
    backend: Backend,
    pub state_dir: PathBuf,
    pub usage_interval: Duration,
    /// Attempts being supervised, with the switch that tells each to stop.
    pub running: Mutex<HashMap<String, watch::Sender<bool>>>,
    /// Set when the exchange refuses this agent's reports because its identity registered again
    /// (another agent with the same key and state): this one stops.
    superseded: std::sync::OnceLock<String>,
    stop: tokio::sync::Notify,
    /// The lock on the state directory, held while the agent runs.
    _state_lock: std::fs::File,
}

impl Agent {
    /// Notes `e` when it says this agent was superseded; true then.
    fn superseded_by(&self, e: &ClientError) -> bool {
        if e.code() != Some("agent_superseded") {
            return false;
        }
        let _ = self.superseded.set(e.to_string());
        self.stop.notify_waiters();
        true
    }
}

/// Takes the state directory's lock, so that the same agent is never started twice on one
/// machine (two agents with one identity would both re-attach to its jobs). A copied state
/// directory elsewhere is fenced by the exchange instead (see `Agent::generation`).
fn lock_state_dir(state_dir: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = state_dir.join("agent.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => bail!(
            "another agent is already running with the state directory {}: an agent's identity \
             (its key) may run once; stop the other one first",
            state_dir.display()
        ),
        Err(e) => bail!("lock {}: {e}", path.display()),
    }
}

/// Retries a call while the exchange cannot be reached or is unavailable; gives up on a definite
/// answer. Backoff doubles up to 10 s.
pub(crate) async fn retry<T, F, Fut>(what: &str, mut f: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let mut delay = Duration::from_millis(200);
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e @ ClientError::Api { status, .. }) if status != 503 => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "{what}: exchange unreachable; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

pub(crate) fn is_stale(e: &ClientError) -> bool {
    matches!(e.code(), Some("stale_attempt") | Some("not_found"))
}

pub async fn run(args: AgentArgs) -> Result<()> {
    let config = AgentConfig::load(&args.config)?;
    run_with(config, args.config).await
}

/// Runs an agent from an already loaded config (`config_path` is hidden from jobs).
pub async fn run_with(config: AgentConfig, config_path: PathBuf) -> Result<()> {
    std::fs::create_dir_all(notes_dir(&config.state_dir))
        .with_context(|| format!("create {}", config.state_dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Jobs run as another user must be able to pass through to their job directories
        // (search, not list); the key and the attempt notes stay the agent's alone.
        std::fs::set_permissions(&config.state_dir, std::fs::Permissions::from_mode(0o711))?;
        std::fs::set_permissions(
            notes_dir(&config.state_dir),
            std::fs::Permissions::from_mode(0o700),
        )?;
    }
    let state_lock = lock_state_dir(&config.state_dir)?;
    let token = config.token()?;
    let key = load_or_create_key(&config.state_dir)?;
    let client = Client::new(config.server.trim_end_matches('/').to_owned(), Some(token));
    let mut slurm_nodes = Vec::new();
    let (backend, summary, notes, nodes) = match config.backend.as_str() {
        "slurm" => {
            let side = crate::agent_slurm::SlurmSide::new(&config).await?;
            let (raw, nodes) = side.read_nodes().await?;
            slurm_nodes = raw;
            let summary = side.backend.summary();
            (Backend::Slurm(Arc::new(side)), summary, Vec::new(), nodes)
        }
        _ => {
            let measured = capacity::detect_async().await;
            let machine = capacity::apply_override(measured, &config.capacity);
            let mut hidden = vec![
                config_path,
                config.state_dir.join("agent.key"),
                config.state_dir.join("attempts"),
            ];
            hidden.extend(config.token_file.clone());
            hidden.extend(config.hide.iter().cloned());
            let options = LocalOptions {
                use_bubblewrap: config.sandbox,
                hidden_paths: hidden,
                exposed_paths: config.expose.clone(),
                log_limits: config.log_limits(),
                job_network: config.network,
                ..LocalOptions::default()
            };
            let jobs_dir = config
                .jobs_dir
                .clone()
                .unwrap_or_else(|| config.state_dir.join("jobs"));
            let backend =
                LocalBackend::new(jobs_dir, options).context("start the local backend")?;
            let isolation = backend.isolation();
            (
                Backend::Local(backend),
                isolation.summary.clone(),
                isolation.notes.clone(),
                vec![local_node(&config, &machine)],
            )
        }
    };
    let request = RegisterAgentRequest {
        name: config.name.clone(),
        zone: config.zone.clone(),
        public_key_hex: hex(&key.verifying_key().to_bytes()),
        backend: config.backend.clone(),
        isolation: summary.chars().take(500).collect(),
        version: env!("CARGO_PKG_VERSION").into(),
        nodes,
        pool_id: config.pool_id.clone(),
    };
    let registered = retry("register", || client.register_agent(&request, None))
        .await
        .context("register with the exchange")?;
    println!(
        "agent {} serving pool {} on {} ({}); isolation: {}",
        registered.id,
        registered.pool_id,
        config.server,
        nodes_text(&request.nodes),
        summary
    );
    for note in &notes {
        println!("  note: {note}");
    }
    if let Backend::Slurm(side) = &backend {
        side.sync_offers(&client, &registered.pool_id, &slurm_nodes)
            .await
            .context("publish the partitions' offers")?;
    }
    // Every report says which registration it comes from: a later one (the same identity started
    // elsewhere) fences this agent out.
    let client = client.with_agent_generation(registered.generation);
    let agent = Arc::new(Agent {
        client,
        agent_id: registered.id,
        pool_id: registered.pool_id,
        key,
        backend,
        state_dir: config.state_dir.clone(),
        usage_interval: Duration::from_secs(config.usage_interval_s.max(1)),
        running: Mutex::new(HashMap::new()),
        superseded: std::sync::OnceLock::new(),
        stop: tokio::sync::Notify::new(),
        _state_lock: state_lock,
    });
    if let Backend::Slurm(side) = &agent.backend {
        tokio::spawn(crate::agent_slurm::capacity_loop(
            agent.clone(),
            side.clone(),
            request,
        ));
    }
    reattach_all(&agent).await;
    if config.keep_finished_jobs_h > 0 {
        let jobs_dir = config
            .jobs_dir
            .clone()
            .unwrap_or_else(|| config.state_dir.join("jobs"));
        let keep = Duration::from_secs(config.keep_finished_jobs_h.saturating_mul(3600));
        tokio::spawn(sweep_loop(agent.clone(), jobs_dir, keep));
    }
    let heartbeat_every = Duration::from_secs(agent_heartbeat(&agent).await);
    tokio::spawn(heartbeat_loop(agent.clone(), heartbeat_every));
    poll_loop(agent).await
}

/// The error an agent stops with once it was superseded.
fn superseded_error(agent: &Agent) -> anyhow::Error {
    anyhow::anyhow!(
        "this agent stops: {}. Another agent registered with the same identity (the same \
         config started twice, or a copied state directory); its jobs are that agent's now",
        agent.superseded.get().map_or("superseded", String::as_str)
    )
}

/// Every ten minutes, deletes the directories of finished jobs last written more than `keep`
/// ago. A job the agent supervises, or has a note about, is never touched.
async fn sweep_loop(agent: Arc<Agent>, jobs_dir: PathBuf, keep: Duration) {
    loop {
        let mut busy: std::collections::HashSet<String> = agent
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        if let Ok(entries) = std::fs::read_dir(notes_dir(&agent.state_dir)) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(id) = name.strip_suffix(".json").or(name.strip_suffix(".logseq")) {
                    busy.insert(id.to_owned());
                }
            }
        }
        let dir = jobs_dir.clone();
        let removed = tokio::task::spawn_blocking(move || {
            sweep_job_dirs(&dir, &busy, keep, std::time::SystemTime::now())
        })
        .await
        .unwrap_or_default();
        if !removed.is_empty() {
            tracing::info!(
                count = removed.len(),
                "deleted the directories of jobs finished more than {keep:?} ago"
            );
        }
        tokio::time::sleep(Duration::from_secs(600)).await;
    }
}

/// Deletes the job directories under `jobs_dir` not named in `busy` whose directory and log files
/// were last modified before `now - keep`; returns what it deleted.
fn sweep_job_dirs(
    jobs_dir: &Path,
    busy: &std::collections::HashSet<String>,
    keep: Duration,
    now: std::time::SystemTime,
) -> Vec<PathBuf> {
    let Some(cutoff) = now.checked_sub(keep) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(jobs_dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir() || busy.contains(&name) {
            continue;
        }
        let last = ["", "stdout.log", "stderr.log"]
            .iter()
            .filter_map(|f| std::fs::metadata(path.join(f)).ok()?.modified().ok())
            .max();
        if last.is_some_and(|t| t < cutoff) && std::fs::remove_dir_all(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

/// The nodes, for people: `vm (2 CPUs, 24105 MiB, 8× H100-80G) @debug`.
fn nodes_text(nodes: &[NodeSpec]) -> String {
    nodes
        .iter()
        .map(|n| {
            let acc = n
                .accelerator_model
                .as_ref()
                .map(|m| format!(", {}× {m}", n.accelerators))
                .unwrap_or_default();
            let part = n
                .partition
                .as_ref()
                .map(|p| format!(" @{p}"))
                .unwrap_or_default();
            let idle = if n.cpus == 0 { ", not taking work" } else { "" };
            format!(
                "{} ({} CPUs, {} MiB{acc}{idle}){part}",
                n.name, n.cpus, n.memory_mib
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The one node of a local agent: this machine as measured. A machine with several
/// accelerator models reports the largest group.
fn local_node(config: &AgentConfig, m: &MachineCapacity) -> NodeSpec {
    let gpu = m.accelerators.iter().max_by_key(|a| a.count);
    if let Some(g) = gpu {
        println!("accelerators: {}× {} ({})", g.count, g.model, g.source);
    }
    NodeSpec {
        name: config.name.clone(),
        cpus: m.cpus.max(1),
        memory_mib: m.memory_mib.max(1),
        accelerator_model: gpu.map(|g| g.model.clone()),
        accelerators: gpu.map(|g| g.count).unwrap_or(0),
        partition: None,
    }
}

/// The heartbeat interval the exchange asks for (first heartbeat).
async fn agent_heartbeat(agent: &Agent) -> u64 {
    match agent
        .client
        .heartbeat(
            &agent.agent_id,
            &HeartbeatRequest {
                running: running_ids(agent),
            },
        )
        .await
    {
        Ok(r) => r.agent.heartbeat_interval_s.max(1),
        Err(_) => 5,
    }
}

fn running_ids(agent: &Agent) -> Vec<String> {
    agent
        .running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .keys()
        .cloned()
        .collect()
}

async fn heartbeat_loop(agent: Arc<Agent>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let request = HeartbeatRequest {
            running: running_ids(&agent),
        };
        match agent.client.heartbeat(&agent.agent_id, &request).await {
            Ok(r) => {
                for attempt in r.stop {
                    tracing::warn!(attempt = %attempt, "the exchange says this attempt is over: stopping it");
                    if let Some(stop) = agent
                        .running
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(&attempt)
                    {
                        stop.send_replace(true);
                    }
                }
            }
            Err(e) if agent.superseded_by(&e) => return,
            Err(e) => tracing::warn!(error = %e, "heartbeat failed; jobs keep running"),
        }
    }
}

async fn poll_loop(agent: Arc<Agent>) -> Result<()> {
    let mut delay = Duration::from_millis(200);
    loop {
        if agent.superseded.get().is_some() {
            return Err(superseded_error(&agent));
        }
        let request = PollRequest {
            wait_ms: 20_000,
            max: Some(16),
        };
        let polled = tokio::select! {
            p = agent.client.poll(&agent.agent_id, &request) => p,
            () = agent.stop.notified() => return Err(superseded_error(&agent)),
        };
        match polled {
            Ok(r) => {
                delay = Duration::from_millis(200);
                for a in r.assignments {
                    let (stop_tx, stop_rx) = watch::channel(false);
                    agent
                        .running
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(a.attempt_id.clone(), stop_tx);
                    tokio::spawn(supervise_new(agent.clone(), a, stop_rx));
                }
            }
            Err(e) if agent.superseded_by(&e) => return Err(superseded_error(&agent)),
            Err(
                e @ ClientError::Api {
                    status: 401 | 403 | 404,
                    ..
                },
            ) => {
                bail!("the exchange refused this agent: {e}");
            }
            Err(e) => {
                tracing::warn!(error = %e, "poll failed; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

pub(crate) fn decode_files(a: &Assignment) -> Result<Vec<JobFile>, String> {
    a.task
        .workdir
        .iter()
        .map(|f| {
            let data = base64::engine::general_purpose::STANDARD
                .decode(&f.content_base64)
                .map_err(|e| format!("{}: {e}", f.path))?;
            Ok(JobFile {
                path: f.path.clone(),
                data,
                mode: f.mode.unwrap_or(0o644),
            })
        })
        .collect()
}

async fn supervise_new(agent: Arc<Agent>, a: Assignment, stop: watch::Receiver<bool>) {
    let local = match &agent.backend {
        Backend::Local(local) => local.clone(),
        Backend::Slurm(side) => {
            let side = side.clone();
            return crate::agent_slurm::supervise_new(agent, side, a, stop).await;
        }
    };
    let mut note = AttemptNote::new(&a);
    save_note(&agent.state_dir, &note);
    let launch = match decode_files(&a) {
        Ok(files) => JobLaunch {
            attempt_id: a.attempt_id.clone(),
            setup: a.task.setup.clone(),
            run: a.task.run.clone(),
            env: a.task.env.clone().into_iter().collect::<BTreeMap<_, _>>(),
            files,
            cpus: a.cpus.max(1),
            memory_mib: a.memory_mib.max(64),
            pids_max: 512,
            time_limit_s: a.time_limit_s.max(1),
            network: a.task.network,
        },
        Err(e) => {
            finish(
                &agent,
                &mut note,
                "failed",
                None,
                &format!("the working directory could not be unpacked: {e}"),
                None,
            )
            .await;
            return;
        }
    };
    match local.start(launch).await {
        Ok(job) => {
            let backend_id = Some(job.pid().to_string());
            match report_state(&agent, &a.attempt_id, "running", None, backend_id).await {
                Ok(_) => supervise(agent, job, note, stop, false).await,
                Err(e) => {
                    tracing::warn!(attempt = %a.attempt_id, error = %e, "the exchange refused the attempt: stopping it");
                    job.cancel().await;
                    forget(&agent, &a.attempt_id);
                }
            }
        }
        Err(e) => {
            finish(
                &agent,
                &mut note,
                "failed",
                None,
                &format!("the job could not start: {e}"),
                None,
            )
            .await
        }
    }
}

/// Watches a running job until it ends or the exchange stops it, forwarding logs and usage.
async fn supervise(
    agent: Arc<Agent>,
    mut job: RunningJob,
    mut note: AttemptNote,
    mut stop: watch::Receiver<bool>,
    resumed: bool,
) {
    let forwarder = start_forwarder(&agent, job.take_logs(), &note, resumed);
    let mut tick = tokio::time::interval(agent.usage_interval);
    tick.tick().await;
    let mut stopped = false;
    let outcome = loop {
        tokio::select! {
            o = job.finished() => break o,
            changed = stop.changed(), if !stopped => {
                if changed.is_err() || *stop.borrow() {
                    stopped = true;
                    job.cancel().await;
                }
            }
            _ = tick.tick() => {
                if !report_usage(&agent, &mut note, job.usage().wall_ms, job.usage().cpu_ms, job.usage().peak_memory_mib).await {
                    stopped = true;
                    job.cancel().await;
                }
            }
        }
    };
    // Every chunk has been sent once the outcome is known; let the forwarder drain them.
    if let Ok(last) = forwarder.await {
        note.log_seq = last;
    }
    let work = job.work_dir();
    let owner = match &agent.backend {
        Backend::Local(local) => local.job_uid(),
        Backend::Slurm(_) => unreachable!("Slurm attempts are supervised in agent_slurm"),
    };
    let outputs = OutputsAt {
        dir: &work,
        owner: Some(owner),
    };
    report_outcome(&agent, &mut note, &outcome, Some(outputs), None).await;
}

/// Tells the exchange how an attempt stands short of its end (`pending`, `running`); retried
/// while the exchange cannot be reached. Err when it refused the attempt.
pub(crate) async fn report_state(
    agent: &Agent,
    attempt_id: &str,
    state: &str,
    message: Option<String>,
    backend_id: Option<String>,
) -> Result<suanli_api::Job, ClientError> {
    let event = AttemptEvent {
        state: state.into(),
        exit_code: None,
        message,
        backend_id,
        started_ms: None,
        ended_ms: None,
    };
    retry(&format!("report {state}"), || {
        agent
            .client
            .attempt_event(&agent.agent_id, attempt_id, &event, None)
    })
    .await
}

/// Where a job's outputs are: its working directory, and the user its files must belong to (the
/// job's own; `None` reads any owner's).
pub(crate) struct OutputsAt<'a> {
    pub dir: &'a Path,
    pub owner: Option<u32>,
}

/// Reports how a job ended: its last usage, its outputs (when there is a directory to collect
/// them from) and its end state. Outputs the agent refused to read are named in the job's reason.
pub(crate) async fn report_outcome(
    agent: &Agent,
    note: &mut AttemptNote,
    outcome: &Outcome,
    outputs: Option<OutputsAt<'_>>,
    backend_id: Option<String>,
) {
    let u = outcome.usage;
    report_usage(agent, note, u.wall_ms, u.cpu_ms, u.peak_memory_mib).await;
    let mut message = outcome.message.clone();
    if let Some(at) = outputs {
        match upload_outputs(agent, note, &at).await {
            Ok(refused) if refused.is_empty() => {}
            Ok(refused) => {
                let listed: Vec<String> = refused
                    .iter()
                    .take(10)
                    .map(|(path, why)| format!("{path} ({why})"))
                    .collect();
                let more = refused.len().saturating_sub(listed.len());
                message = format!(
                    "{message}; {} output(s) refused: {}{}",
                    refused.len(),
                    listed.join(", "),
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    }
                );
            }
            Err(e) => message = format!("{message}; outputs not collected: {e}"),
        }
    }
    finish_ran(agent, note, outcome, &message, backend_id).await;
}

/// Forwards an attempt's output to the exchange from where it was left; the task returns the
/// last chunk number sent once the job's output is closed and drained.
pub(crate) fn start_forwarder(
    agent: &Arc<Agent>,
    mut logs: tokio::sync::mpsc::Receiver<suanli_agent::local::LogChunk>,
    note: &AttemptNote,
    resumed: bool,
) -> tokio::task::JoinHandle<u64> {
    let mut progress = saved_log_progress(&agent.state_dir, &note.attempt_id);
    progress.seq = progress.seq.max(note.log_seq);
    if resumed {
        // The agent that died may have had one batch (at most 200 chunks) acknowledged after it
        // last wrote its progress: number this agent's chunks past any it could have used, so
        // that none is mistaken for a repeat. The output of that batch may then appear twice;
        // none is lost.
        progress.seq += 1_000;
    }
    let agent = agent.clone();
    let attempt_id = note.attempt_id.clone();
    tokio::spawn(async move { forward_logs(agent, attempt_id, &mut logs, progress).await })
}

/// Most output bytes collected from one job (the exchange keeps at most this much).
const MAX_OUTPUT_BYTES: u64 = 8 * 1024 * 1024;

/// Collects the task's output paths from the job's working directory (files, and directories
/// recursively) and sends them. The agent may be root and the directory is the job's: every file
/// is opened from a directory descriptor without following a symbolic link at any component,
/// and only regular files with one link owned by the job's user are read
/// (`suanli_agent::safe_fs`). Returns what was refused, and why.
async fn upload_outputs(
    agent: &Agent,
    note: &AttemptNote,
    at: &OutputsAt<'_>,
) -> Result<Vec<RefusedOutput>> {
    if note.outputs.is_empty() {
        return Ok(Vec::new());
    }
    let (dir, owner, paths) = (at.dir.to_owned(), at.owner, note.outputs.clone());
    let (files, refused) =
        tokio::task::spawn_blocking(move || collect_outputs(&dir, owner, &paths))
            .await
            .context("collecting outputs")??;
    // Batches of at most 4 MiB, under the exchange's body limit once encoded.
    let mut batch: Vec<suanli_api::WorkdirFile> = Vec::new();
    let mut batch_bytes = 0usize;
    let engine = base64::engine::general_purpose::STANDARD;
    for (i, (path, data, mode)) in files.iter().enumerate() {
        batch_bytes += data.len();
        batch.push(suanli_api::WorkdirFile {
            path: path.clone(),
            content_base64: engine.encode(data),
            mode: Some(*mode),
        });
        if batch_bytes >= 4 * 1024 * 1024 || i + 1 == files.len() {
            let body = suanli_api::OutputBatch {
                files: std::mem::take(&mut batch),
            };
            retry("send outputs", || {
                agent
                    .client
                    .outputs(&agent.agent_id, &note.attempt_id, &body)
            })
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            batch_bytes = 0;
        }
    }
    Ok(refused)
}

/// An output file read for sending: its path in the job's directory, its bytes and its mode.
type OutputFile = (String, Vec<u8>, u32);

/// An output the agent refused to read: its path and why.
type RefusedOutput = (String, String);

/// Reads the outputs named in `paths` below `dir` (blocking); see [`upload_outputs`].
fn collect_outputs(
    dir: &Path,
    owner: Option<u32>,
    paths: &[String],
) -> Result<(Vec<OutputFile>, Vec<RefusedOutput>)> {
    use std::io::Read;
    let root = suanli_agent::safe_fs::open_dir(dir)
        .with_context(|| format!("opening the job directory {}", dir.display()))?;
    let (mut files, mut refused) = (Vec::new(), Vec::new());
    let mut total = 0u64;
    for p in paths {
        let rel = Path::new(p.trim_end_matches('/'));
        let (found, no) = suanli_agent::safe_fs::collect_beneath(&root, rel, owner, 1_000);
        refused.extend(
            no.into_iter()
                .filter(|(_, why)| *why != suanli_agent::safe_fs::Refused::Missing)
                .map(|(path, why)| (path.to_string_lossy().into_owned(), why.to_string())),
        );
        for (path, opened) in found {
            total += opened.size;
            if total > MAX_OUTPUT_BYTES || files.len() >= 1_000 {
                bail!("the outputs are larger than 8 MiB or 1000 files");
            }
            let mut data = Vec::with_capacity(opened.size as usize);
            // Read no more than the size seen: the job may still be growing the file.
            opened
                .file
                .take(opened.size)
                .read_to_end(&mut data)
                .with_context(|| format!("reading output {}", path.display()))?;
            files.push((path.to_string_lossy().into_owned(), data, opened.mode));
        }
    }
    Ok((files, refused))
}

fn outcome_state(o: &Outcome) -> (&'static str, Option<i32>) {
    match &o.state {
        LocalState::Succeeded => ("succeeded", Some(0)),
        LocalState::Failed { exit_code } => ("failed", *exit_code),
        LocalState::Cancelled => ("cancelled", o.exit_code),
        LocalState::TimedOut => ("timed_out", o.exit_code),
        LocalState::OutOfMemory => ("failed", o.exit_code),
    }
}

/// Reports usage up to `wall_ms`: units × milliseconds, the difference since the last report,
/// signed; never past the attempt's time limit (the exchange refuses use beyond what time
/// allows, and a job killed at its limit used no more than it). False when the exchange refused
/// the attempt as stale.
pub(crate) async fn report_usage(
    agent: &Agent,
    note: &mut AttemptNote,
    wall_ms: u64,
    cpu_ms: Option<u64>,
    peak: Option<u64>,
) -> bool {
    if !send_pending_usage(agent, note).await {
        return false;
    }
    let wall_ms = match note.time_limit_s {
        0 => wall_ms,
        limit_s => wall_ms.min(limit_s.saturating_mul(1_000)),
    };
    let total = note.units.saturating_mul(wall_ms);
    let delta = total.saturating_sub(note.unit_ms_reported);
    if delta == 0 {
        return true;
    }
    let seq = note.usage_seq + 1;
    let message =
        suanli_api::usage_message(&note.job_id, &note.attempt_id, seq, delta, cpu_ms, peak);
    let record = UsageRecord {
        seq,
        unit_ms: delta,
        cpu_ms,
        peak_memory_mib: peak,
        signature_hex: hex(&agent.key.sign(message.as_bytes()).to_bytes()),
    };
    // The record is saved before it is sent: after a restart it is sent again with the same
    // sequence number, and the exchange counts it once.
    note.usage_seq = seq;
    note.unit_ms_reported = total;
    note.pending_usage = Some(record);
    save_note(&agent.state_dir, note);
    send_pending_usage(agent, note).await
}

/// Sends the saved, unacknowledged usage record if there is one. False when the exchange refused
/// the attempt as stale.
async fn send_pending_usage(agent: &Agent, note: &mut AttemptNote) -> bool {
    let Some(record) = note.pending_usage.clone() else {
        return true;
    };
    let batch = UsageBatch {
        records: vec![record],
    };
    let sent = retry("report usage", || {
        agent
            .client
            .usage(&agent.agent_id, &note.attempt_id, &batch)
    })
    .await;
    match sent {
        Err(e) if is_stale(&e) => false,
        other => {
            if let Err(e) = other {
                tracing::warn!(error = %e, "usage refused");
            }
            note.pending_usage = None;
            save_note(&agent.state_dir, note);
            true
        }
    }
}

/// Most encoded bytes of log chunks in one request (the exchange takes bodies up to 1 MiB; one
/// chunk of 64 KiB encodes to at most 384 KiB).
const MAX_LOG_BATCH_BYTES: usize = 512 * 1024;

/// Sends the job's output in batches; returns the last sequence number sent.
pub(crate) async fn forward_logs(
    agent: Arc<Agent>,
    attempt_id: String,
    logs: &mut tokio::sync::mpsc::Receiver<suanli_agent::local::LogChunk>,
    start: LogProgress,
) -> u64 {
    let offset = start.seq;
    let mut last = offset;
    let mut pending = start;
    let mut batch: Vec<AgentLogChunk> = Vec::new();
    let mut batch_bytes = 0usize;
    loop {
        let more = tokio::select! {
            chunk = logs.recv() => chunk,
            _ = tokio::time::sleep(Duration::from_millis(100)), if !batch.is_empty() => None,
        };
        let closed = more.is_none() && batch.is_empty();
        if let Some(c) = more {
            // The backend numbers chunks from 0; the exchange from 1.
            last = offset + c.seq + 1;
            pending.seq = last;
            match c.stream {
                LogStream::Stdout => pending.stdout_bytes += c.data.len() as u64,
                LogStream::Stderr => pending.stderr_bytes += c.data.len() as u64,
                LogStream::System => {}
            }
            let chunk = AgentLogChunk {
                seq: last,
                stream: match c.stream {
                    LogStream::Stdout => "stdout",
                    LogStream::Stderr => "stderr",
                    LogStream::System => "system",
                }
                .into(),
                data: c.data,
            };
            // What the chunk weighs in the request once encoded (JSON escapes control
            // characters six times over): batches stay under the exchange's 1 MiB body limit.
            batch_bytes += serde_json::to_string(&chunk.data).map_or(0, |t| t.len()) + 64;
            batch.push(chunk);
            if batch.len() < 200 && batch_bytes < MAX_LOG_BATCH_BYTES {
                continue;
            }
        }
        if !batch.is_empty() {
            batch_bytes = 0;
            let chunks = LogBatch {
                chunks: std::mem::take(&mut batch),
            };
            let sent = retry("send logs", || {
                agent.client.logs(&agent.agent_id, &attempt_id, &chunks)
            })
            .await;
            match sent {
                Ok(_) => {
                    // Remembered, so that a restarted agent numbers its chunks after these and
                    // resumes the log files where these end.
                    let line = format!(
                        "{} {} {}",
                        pending.seq, pending.stdout_bytes, pending.stderr_bytes
                    );
                    let _ = std::fs::write(log_seq_path(&agent.state_dir, &attempt_id), line);
                }
                Err(e) if is_stale(&e) => return last,
                Err(e) => {
                    tracing::warn!(attempt = %attempt_id, error = %e, "the exchange refused a batch of logs")
                }
            }
            continue;
        }
        if closed {
            return last;
        }
    }
}

/// Reports how an attempt ended (retried until the exchange answers) and forgets it.
pub(crate) async fn finish(
    agent: &Agent,
    note: &mut AttemptNote,
    state: &str,
    exit_code: Option<i32>,
    message: &str,
    backend_id: Option<String>,
) {
    let event = AttemptEvent {
        state: state.into(),
        exit_code,
        message: Some(message.chars().take(500).collect::<String>()).filter(|m| !m.is_empty()),
        backend_id,
        started_ms: None,
        ended_ms: None,
    };
    send_end(agent, note, event).await;
}

/// [`finish`] for a job that ran: with its own start and end, which the consumer sees however
/// late this report arrives.
async fn finish_ran(
    agent: &Agent,
    note: &mut AttemptNote,
    outcome: &Outcome,
    message: &str,
    backend_id: Option<String>,
) {
    let (state, exit_code) = outcome_state(outcome);
    let ms = |t: Option<u64>| t.and_then(|t| i64::try_from(t).ok());
    let event = AttemptEvent {
        state: state.into(),
        exit_code,
        message: Some(message.chars().take(500).collect::<String>()).filter(|m| !m.is_empty()),
        backend_id,
        started_ms: ms(outcome.started_at_ms),
        ended_ms: ms(outcome.ended_at_ms),
    };
    send_end(agent, note, event).await;
}

async fn send_end(agent: &Agent, note: &mut AttemptNote, event: AttemptEvent) {
    let key = format!("{}-end", note.attempt_id);
    match retry("report the end", || {
        agent
            .client
            .attempt_event(&agent.agent_id, &note.attempt_id, &event, Some(&key))
    })
    .await
    {
        Ok(job) => {
            tracing::info!(attempt = %note.attempt_id, job = %job.id, state = %job.state, "attempt ended")
        }
        Err(e) => {
            tracing::warn!(attempt = %note.attempt_id, error = %e, "the exchange refused the end report")
        }
    }
    forget(agent, &note.attempt_id);
}

pub(crate) fn forget(agent: &Agent, attempt_id: &str) {
    agent
        .running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(attempt_id);
    drop_note(&agent.state_dir, attempt_id);
}

/// After a restart: finds the attempts this agent had started and supervises them again, or
/// reports how they ended while it was away.
async fn reattach_all(agent: &Arc<Agent>) {
    let Ok(entries) = std::fs::read_dir(notes_dir(&agent.state_dir)) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(text) = std::fs::read(entry.path()) else {
            continue;
        };
        let Ok(mut note) = serde_json::from_slice::<AttemptNote>(&text) else {
            continue;
        };
        let local = match &agent.backend {
            Backend::Local(local) => local,
            Backend::Slurm(side) => {
                crate::agent_slurm::reattach(agent, side, note).await;
                continue;
            }
        };
        let progress = saved_log_progress(&agent.state_dir, &note.attempt_id);
        let offsets = Some((progress.stdout_bytes, progress.stderr_bytes));
        match local.reattach_from(&note.attempt_id, offsets).await {
            Ok(Some(Reattached::Running(job))) => {
                println!(
                    "re-attached to attempt {} (pid {})",
                    note.attempt_id,
                    job.pid()
                );
                let (stop_tx, stop_rx) = watch::channel(false);
                agent
                    .running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(note.attempt_id.clone(), stop_tx);
                tokio::spawn(supervise(agent.clone(), job, note, stop_rx, true));
            }
            Ok(Some(Reattached::Finished(outcome))) => {
                let work = local
                    .job_dir(&note.attempt_id)
                    .ok()
                    .map(|d| suanli_agent::local::work_dir(&d));
                let outputs = work.as_deref().map(|dir| OutputsAt {
                    dir,
                    owner: Some(local.job_uid()),
                });
                report_outcome(agent, &mut note, &outcome, outputs, None).await;
            }
            Ok(None) | Err(_) => {
                finish(
                    agent,
                    &mut note,
                    "failed",
                    None,
                    "the job was gone when the agent restarted",
                    None,
                )
                .await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_old_finished_job_directories_are_swept() {
        let root = std::env::temp_dir().join(format!("suanli-sweep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for name in [
            "old",
            "old-running",
            "old-noted",
            "fresh",
            "old-dir-new-log",
        ] {
            std::fs::create_dir_all(root.join(name)).unwrap();
            std::fs::write(root.join(name).join("stdout.log"), "out").unwrap();
        }
        std::fs::write(root.join("a-file"), "not a job").unwrap();
        let age = |path: PathBuf| {
            let ok = std::process::Command::new("touch")
                .args(["-d", "3 hours ago"])
                .arg(path)
                .status()
                .unwrap()
                .success();
            assert!(ok);
        };
        for name in ["old", "old-running", "old-noted"] {
            age(root.join(name).join("stdout.log"));
            age(root.join(name));
        }
        // A job whose directory is old but whose log is still being written is not finished.
        age(root.join("old-dir-new-log"));
        age(root.join("a-file"));
        let busy: std::collections::HashSet<String> =
            ["old-running".to_owned(), "old-noted".to_owned()].into();
        let removed = sweep_job_dirs(
            &root,
            &busy,
            Duration::from_secs(3600),
            std::time::SystemTime::now(),
        );
        assert_eq!(removed, vec![root.join("old")]);
        for kept in [
            "old-running",
            "old-noted",
            "fresh",
            "old-dir-new-log",
            "a-file",
        ] {
            assert!(root.join(kept).exists(), "{kept}");
        }
        let _ = std::fs::remove_dir_all(&root);
    }
}
