//! The local backend: each job a real child process of this machine, limited and watched.
//!
//! [`LocalBackend::start`] makes `root_dir/<attempt_id>/` the job directory, writes the uploaded
//! files into it, and spawns the wrapper shell (see `sandbox`) in its own process group with a
//! cleared environment. Limits come from a per-job cgroup (v2 or v1, see `cgroup`) when one can
//! be created, else from rlimits; bubblewrap sandboxes the job when installed; as root, jobs run
//! as `nobody`. A supervisor task per job enforces the wall-clock limit, carries out
//! cancellation (SIGTERM, then SIGKILL to every process of the job after a grace period),
//! samples usage, kills leftovers and removes the cgroup when the job ends, and publishes the
//! [`Outcome`]. Output goes to `stdout.log`/`stderr.log` and is tailed into [`LogChunk`]s.
//!
//! Files in the job directory: the job's own files, `stdout.log`, `stderr.log`, `.tmp/`
//! (`TMPDIR`), `attempt.json` (pid, start time, cgroup: what [`LocalBackend::reattach`] needs
//! after an agent restart) and `exit_code` (written by the wrapper when the job ends: the code,
//! then `phase setup|run`, then the shell's `times`).

mod cgroup;
mod job;
pub(crate) mod logs;
mod network;
pub(crate) mod procfs;
mod runner;
mod sandbox;

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fmt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::error::{Error, IoContext, Result};
pub use crate::job::{
    JobFile, JobLaunch, JobState, LogChunk, LogStream, Outcome, Usage, DEFAULT_PIDS_MAX,
};
use crate::safe_fs;
use cgroup::{CgroupSetup, JobCgroup};
pub(crate) use job::sleep_until_opt;
pub use job::RunningJob;
pub use logs::{LogLimits, MAX_CHUNK_BYTES};
pub use network::JobNetwork;
pub use runner::LocalRunner;
use sandbox::{Bubblewrap, Rlimits};

/// `PATH` of every job.
pub const JOB_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The job's own directory inside its attempt directory: its working directory and `HOME`, the
/// only place it may write, and where its outputs are collected from. Everything else in the
/// attempt directory (the logs, `attempt.json`) is the agent's, out of the job's reach: a job
/// cannot swap a file the agent opens for a link to another (issue 17).
pub const WORK_DIR: &str = "work";
/// Where the wrapper (running as the job's user, outside the sandbox) records how the job ended.
pub const STATUS_DIR: &str = "status";

/// The job's working directory inside an attempt directory.
pub fn work_dir(job_dir: &Path) -> PathBuf {
    job_dir.join(WORK_DIR)
}

/// Whether jobs run under bubblewrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UseBubblewrap {
    /// When installed and working here.
    #[default]
    Auto,
    /// Always; [`LocalBackend::new`] fails when bubblewrap is missing or does not work.
    Always,
    Never,
}

/// Whether limits come from per-job cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UseCgroups {
    /// When a writable cgroup hierarchy with the memory and pids controllers exists.
    #[default]
    Auto,
    /// Never: rlimits only.
    Never,
}

/// Which user jobs run as.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunAs {
    /// `nobody` when the agent runs as root, else the agent's own user.
    #[default]
    Auto,
    /// The agent's own user (as root: root, without capabilities when sandboxed).
    Current,
    /// A given user (the agent must be root to switch), e.g. one allowed to use `/dev/davinci*`.
    User { uid: u32, gid: u32 },
}

/// How the backend runs jobs.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    pub use_bubblewrap: UseBubblewrap,
    pub use_cgroups: UseCgroups,
    pub run_as: RunAs,
    /// How much of each job's output is forwarded (see [`logs::LogLimits`]).
    pub log_limits: logs::LogLimits,
    /// How jobs that ask for the network get it (see [`JobNetwork`]).
    pub job_network: JobNetwork,
    /// `slirp4netns` (default: found on `PATH` or in `/usr/bin`).
    pub slirp4netns_path: Option<PathBuf>,
    /// Paths jobs must not read, typically the agent's config and token directory. Under
    /// bubblewrap an empty tmpfs (directories) or `/dev/null` (files) covers each. Without
    /// bubblewrap only file permissions protect them (keep them `0700`/`0600`; as root, jobs
    /// run as `nobody` for that reason).
    pub hidden_paths: Vec<PathBuf>,
    /// Host paths under `/run` (hidden from jobs with every host socket in it: D-Bus, munge,
    /// container runtimes) that jobs may see after all, read-only (a socket the provider means
    /// them to use).
    pub exposed_paths: Vec<PathBuf>,
    /// Time between SIGTERM and SIGKILL when a job is cancelled or runs out of time.
    pub kill_grace: Duration,
    /// Capacity of each job's log channel, in chunks.
    pub log_channel_capacity: usize,
    /// The bubblewrap binary; found on `PATH` when `None`.
    pub bwrap_path: Option<PathBuf>,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            use_bubblewrap: UseBubblewrap::Auto,
            use_cgroups: UseCgroups::Auto,
            run_as: RunAs::Auto,
            log_limits: logs::LogLimits::default(),
            job_network: JobNetwork::Isolated,
            slirp4netns_path: None,
            hidden_paths: Vec::new(),
            exposed_paths: Vec::new(),
            kill_grace: Duration::from_secs(5),
            log_channel_capacity: 1024,
            bwrap_path: None,
        }
    }
}

/// Which cgroup version limits jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CgroupVersion {
    #[serde(rename = "v2")]
    V2,
    #[serde(rename = "v1")]
    V1,
    #[serde(rename = "none")]
    None,
}

/// Which sandbox jobs run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxKind {
    Bubblewrap,
    None,
}

/// What enforces a job's memory, CPU and process limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitMechanism {
    Cgroup,
    Rlimit,
}

impl CgroupVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            CgroupVersion::V2 => "v2",
            CgroupVersion::V1 => "v1",
            CgroupVersion::None => "none",
        }
    }
}

impl SandboxKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxKind::Bubblewrap => "bubblewrap",
            SandboxKind::None => "none",
        }
    }
}

impl LimitMechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitMechanism::Cgroup => "cgroup",
            LimitMechanism::Rlimit => "rlimit",
        }
    }
}

/// What isolation is in force for jobs of this backend, as found when it was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsolationReport {
    pub cgroup: CgroupVersion,
    pub sandbox: SandboxKind,
    pub limits: LimitMechanism,
    /// The user jobs run as (`nobody`, `root`, …).
    pub user: String,
    /// The human summary (also what `Display` prints).
    pub summary: String,
    /// Caveats and why something is not in force.
    pub notes: Vec<String>,
}

impl fmt::Display for IsolationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary)
    }
}

/// What [`LocalBackend::reattach`] found.
#[derive(Debug)]
pub enum Reattached {
    /// Still running: wait on it or cancel it.
    Running(RunningJob),
    /// Over; its outcome as recorded.
    Finished(Outcome),
}

/// What `attempt.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AttemptRecord {
    pub attempt_id: String,
    pub pid: i32,
    pub pgid: i32,
    /// Field 22 of `/proc/<pid>/stat`: tells the wrapper from a later process with its pid.
    pub start_ticks: u64,
    pub started_at_ms: u64,
    pub deadline_ms: Option<u64>,
    pub time_limit_s: u64,
    pub memory_limit_mib: u64,
    pub cgroup: Option<JobCgroup>,
    pub sandbox: SandboxKind,
    pub user: String,
}

/// Which user the backend switches jobs to (`None`: it does not switch).
#[derive(Debug, Clone)]
struct JobUser {
    switch: Option<(u32, u32)>,
    name: String,
}

/// Runs jobs as local processes. Cheap to clone; clones share running jobs.
#[derive(Clone)]
pub struct LocalBackend {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    root: PathBuf,
    options: LocalOptions,
    cgroups: Option<CgroupSetup>,
    bwrap: Option<Bubblewrap>,
    prlimit: Option<PathBuf>,
    user: JobUser,
    report: IsolationReport,
    live: Mutex<HashMap<String, Weak<job::Shared>>>,
    counter: AtomicU64,
}

impl fmt::Debug for LocalBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalBackend")
            .field("root", &self.inner.root)
            .field("isolation", &self.inner.report.summary)
            .finish()
    }
}

pub(crate) fn now_ms() -> u64 {
    suanli_clock::since_epoch().as_millis() as u64
}

impl LocalBackend {
    /// Creates the backend: makes `root_dir` (mode 0711 when created: jobs may enter their own
    /// directory but not list the others), and probes what isolation works here (cgroups,
    /// bubblewrap, the job user). Blocking for a few milliseconds (it runs one sandboxed
    /// `/bin/true`). Fails if `UseBubblewrap::Always` cannot be honoured.
    pub fn new(root_dir: PathBuf, options: LocalOptions) -> Result<LocalBackend> {
        let mut notes = Vec::new();
        if !root_dir.is_absolute() {
            return Err(Error::Config(format!(
                "root directory {} must be absolute",
                root_dir.display()
            )));
        }
        if !root_dir.exists() {
            std::fs::create_dir_all(&root_dir)
                .context(|| format!("creating {}", root_dir.display()))?;
            std::fs::set_permissions(&root_dir, std::fs::Permissions::from_mode(0o711))
                .context(|| format!("chmod {}", root_dir.display()))?;
        }
        let root = std::fs::canonicalize(&root_dir)
            .context(|| format!("resolving {}", root_dir.display()))?;

        let euid = procfs::euid();
        let user = match &options.run_as {
            RunAs::Auto if euid == 0 => {
                let (uid, gid) = procfs::lookup_user("nobody").unwrap_or((65534, 65534));
                JobUser {
                    switch: Some((uid, gid)),
                    name: "nobody".into(),
                }
            }
            RunAs::Auto | RunAs::Current => JobUser {
                switch: None,
                name: procfs::user_name(euid),
            },
            RunAs::User { uid, gid } => {
                if euid != 0 && *uid != euid {
                    return Err(Error::Config(format!(
                        "running jobs as uid {uid} needs root (the agent is uid {euid})"
                    )));
                }
                JobUser {
                    switch: (*uid != euid).then_some((*uid, *gid)),
                    name: procfs::user_name(*uid),
                }
            }
        };
        if let Some((uid, gid)) = user.switch {
            check_traversable(&root, uid, gid, &user.name)?;
        }
        if user.switch.is_none() {
            notes.push(format!(
                "jobs run as the agent's own user ({}): only a sandbox keeps them from the \
                 agent's files",
                user.name
            ));
        }

        let cgroups = match options.use_cgroups {
            UseCgroups::Never => {
                notes.push("cgroups disabled by configuration".into());
                None
            }
            UseCgroups::Auto => {
                let probe = cgroup::probe();
                notes.extend(probe.notes);
                probe.setup
            }
        };

        let bwrap_binary = options
            .bwrap_path
            .clone()
            .or_else(|| crate::capacity::find_tool("bwrap", &["/usr/bin"]));
        let bwrap = match (options.use_bubblewrap, bwrap_binary) {
            (UseBubblewrap::Never, _) => None,
            (mode, None) => {
                if mode == UseBubblewrap::Always {
                    return Err(Error::SandboxUnavailable("bwrap is not installed".into()));
                }
                notes.push("bubblewrap not installed: jobs are not sandboxed".into());
                None
            }
            (mode, Some(binary)) => match Bubblewrap::probe(&binary, user.switch) {
                Ok(()) => {
                    let slirp = match options.job_network {
                        JobNetwork::Host => None,
                        JobNetwork::Isolated => {
                            let found = options.slirp4netns_path.clone().or_else(|| {
                                crate::capacity::find_tool("slirp4netns", &["/usr/bin"])
                            });
                            let uid = user.switch.map_or_else(procfs::euid, |(uid, _)| uid);
                            match network::probe_slirp(found, uid, &root) {
                                Ok(s) => Some(s),
                                Err(why) => {
                                    notes.push(format!(
                                        "jobs that ask for the network are refused: {why}"
                                    ));
                                    None
                                }
                            }
                        }
                    };
                    Some(Bubblewrap {
                        binary,
                        hidden: options.hidden_paths.clone(),
                        exposed: options.exposed_paths.clone(),
                        devices: sandbox::accelerator_devices(),
                        job_network: options.job_network,
                        slirp,
                    })
                }
                Err(e) if mode == UseBubblewrap::Always => {
                    return Err(Error::SandboxUnavailable(e));
                }
                Err(e) => {
                    notes.push(format!("bubblewrap does not work here ({e}): no sandbox"));
                    None
                }
            },
        };
        if bwrap.is_none() {
            for p in &options.hidden_paths {
                if let Ok(m) = std::fs::metadata(p) {
                    if m.permissions().mode() & 0o004 != 0 && user.switch.is_some() {
                        notes.push(format!(
                            "hidden path {} is world-readable and there is no sandbox: jobs \
                             can read it",
                            p.display()
                        ));
                    }
                }
            }
        }
        let prlimit = if cgroups.is_none() {
            crate::capacity::find_tool("prlimit", &["/usr/bin"])
        } else {
            None
        };

        let report = build_report(&cgroups, &bwrap, prlimit.is_some(), &user, &options, notes);
        tracing::info!("local backend at {}: {}", root.display(), report.summary);
        Ok(LocalBackend {
            inner: Arc::new(Inner {
                root,
                options,
                cgroups,
                bwrap,
                prlimit,
                user,
                report,
                live: Mutex::new(HashMap::new()),
                counter: AtomicU64::new(0),
            }),
        })
    }

    /// What isolation is in force.
    pub fn isolation(&self) -> IsolationReport {
        self.inner.report.clone()
    }

    /// The directory holding every job directory.
    pub fn root_dir(&self) -> &Path {
        &self.inner.root
    }

    /// The user jobs run as: whose files a job's outputs must be.
    pub fn job_uid(&self) -> u32 {
        self.inner
            .user
            .switch
            .map_or_else(procfs::euid, |(uid, _)| uid)
    }

    /// The job directory of an attempt (whether or not it exists).
    pub fn job_dir(&self, attempt_id: &str) -> Result<PathBuf> {
        validate_attempt_id(attempt_id)?;
        Ok(self.inner.root.join(attempt_id))
    }

    /// Starts a job. Returns once the job's process runs inside its limits; the returned handle
    /// streams its logs, reports usage, cancels and waits. Dropping the handle does not stop the
    /// job (the backend keeps supervising it; [`LocalBackend::reattach`] gives a new handle).
    pub async fn start(&self, mut spec: JobLaunch) -> Result<RunningJob> {
        validate_launch(&spec)?;
        let inner = &self.inner;
        let job_dir = inner.root.join(&spec.attempt_id);

        let prepared = {
            let job_dir = job_dir.clone();
            let files = std::mem::take(&mut spec.files);
            let owner = inner.user.switch;
            tokio::task::spawn_blocking(move || prepare_job_dir(&job_dir, &files, owner))
                .await
                .map_err(|e| Error::Start(format!("preparing the job directory: {e}")))??
        };
        match self.spawn(&spec, &job_dir, prepared).await {
            Ok(job) => Ok(job),
            Err(e) => {
                let dir = job_dir.clone();
                let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
                Err(e)
            }
        }
    }

    async fn spawn(
        &self,
        spec: &JobLaunch,
        job_dir: &Path,
        prepared: Prepared,
    ) -> Result<RunningJob> {
        let inner = &self.inner;
        let memory_bytes = spec.memory_mib.saturating_mul(1024 * 1024);
        let work = work_dir(job_dir);
        // The sandbox first: a job it cannot run (network refused here) costs nothing more.
        let sandbox = match &inner.bwrap {
            Some(b) => Some((
                b,
                b.prefix(&inner.root, &work, &job_dir.join(STATUS_DIR), spec.network)
                    .map_err(Error::Start)?,
            )),
            None => None,
        };

        // The cgroup exists, with its limits, before the process does.
        let cgroup = match &inner.cgroups {
            Some(setup) => {
                let name = format!(
                    "{}.{:x}{:x}",
                    spec.attempt_id,
                    now_ms(),
                    inner.counter.fetch_add(1, Ordering::Relaxed)
                );
                let limits = cgroup::Limits {
                    memory_bytes: (spec.memory_mib > 0).then_some(memory_bytes),
                    cpus: (spec.cpus > 0).then_some(spec.cpus),
                    pids: (spec.pids_max > 0).then_some(spec.pids_max),
                };
                Some(
                    setup
                        .create_job(&name, &limits)
                        .map_err(|e| Error::Cgroup(format!("creating the job's cgroup: {e}")))?,
                )
            }
            None => None,
        };

        let mut prefix: Vec<OsString> = Vec::new();
        if cgroup.is_none() {
            prefix.extend(sandbox::rlimit_prefix(
                inner.prlimit.as_deref(),
                Rlimits {
                    address_space_bytes: if spec.memory_mib > 0 { memory_bytes } else { 0 },
                    processes: spec.pids_max,
                    cpu_seconds: spec.time_limit_s.saturating_mul(spec.cpus.max(1)),
                },
            ));
        }
        if let Some((b, sandbox)) = &sandbox {
            // The network script, when there is one, comes first: the rlimits are the job's.
            let script = sandbox
                .iter()
                .position(|a| a == b.binary.as_os_str())
                .unwrap_or(0);
            prefix.splice(0..0, sandbox[..script].iter().cloned());
            prefix.extend(sandbox[script..].iter().cloned());
        }

        // The job's own deadline, enforced by the wrapper's watchdog even with no agent about;
        // a second after the agent's own, which acts first while it is there.
        let deadline_s = if spec.time_limit_s > 0 {
            (now_ms() + spec.time_limit_s.saturating_mul(1000)).div_ceil(1000) + 1
        } else {
            0
        };
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(sandbox::WRAPPER)
            .arg(sandbox::WRAPPER_NAME)
            .arg(&spec.attempt_id)
            .arg(job_dir.join(STATUS_DIR))
            .arg(spec.setup.as_deref().unwrap_or(""))
            .arg(&spec.run)
            .arg(deadline_s.to_string())
            .arg(inner.options.kill_grace.as_secs().max(1).to_string())
            .args(&prefix)
            .env_clear()
            .envs(job_env(spec, &work))
            // The wrapper's watchdog; unset before anything of the job runs.
            .env("SUANLI_WATCHDOG", sandbox::WATCHDOG)
            .current_dir(&work)
            .stdin(Stdio::piped())
            .stdout(Stdio::from(prepared.stdout_w))
            .stderr(Stdio::from(prepared.stderr_w))
            .process_group(0)
            .kill_on_drop(false);
        if let Some((uid, gid)) = inner.user.switch {
            cmd.uid(uid).gid(gid);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                if let Some(cg) = &cgroup {
                    let _ = cg.remove();
                }
                return Err(Error::Io {
                    context: "spawning the job".into(),
                    source: e,
                });
            }
        };
        let pid = child.id().unwrap_or(0);

        // The wrapper now blocks on its gate: move it into the cgroup, record it, release it.
        let started = async {
            if let Some(cg) = &cgroup {
                cg.add_pid(pid)
                    .map_err(|e| Error::Cgroup(format!("moving pid {pid} into the cgroup: {e}")))?;
            }
            let start_ticks = procfs::read_stat(pid as i32)
                .map(|s| s.starttime)
                .ok_or_else(|| Error::Start(format!("job process {pid} vanished")))?;
            let started_at_ms = now_ms();
            let record = AttemptRecord {
                attempt_id: spec.attempt_id.clone(),
                pid: pid as i32,
                pgid: pid as i32,
                start_ticks,
                started_at_ms,
                deadline_ms: (spec.time_limit_s > 0)
                    .then(|| started_at_ms.saturating_add(spec.time_limit_s.saturating_mul(1000))),
                time_limit_s: spec.time_limit_s,
                memory_limit_mib: spec.memory_mib,
                cgroup: cgroup.clone(),
                sandbox: if inner.bwrap.is_some() {
                    SandboxKind::Bubblewrap
                } else {
                    SandboxKind::None
                },
                user: inner.user.name.clone(),
            };
            write_record(job_dir, &record).await?;
            let mut gate = child
                .stdin
                .take()
                .ok_or_else(|| Error::Start("no stdin pipe to the job".into()))?;
            gate.write_all(b"go\n")
                .await
                .context(|| "releasing the job".into())?;
            drop(gate);
            Ok::<_, Error>(record)
        }
        .await;
        let record = match started {
            Ok(r) => r,
            Err(e) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                if let Some(cg) = &cgroup {
                    job::kill_cgroup_and_remove(cg).await;
                }
                return Err(e);
            }
        };

        let (tx, rx) = mpsc::channel(inner.options.log_channel_capacity.max(2));
        let shared = job::Shared::new(
            job_dir.to_owned(),
            &record,
            inner.options.kill_grace,
            logs::LogSink::with_limits(tx, self.inner.options.log_limits),
        );
        let files = (
            tokio::fs::File::from_std(prepared.stdout_r),
            tokio::fs::File::from_std(prepared.stderr_r),
        );
        let deadline = (spec.time_limit_s > 0)
            .then(|| {
                tokio::time::Instant::now().checked_add(Duration::from_secs(spec.time_limit_s))
            })
            .flatten();
        let handle = job::launch(shared, job::Waiter::Child(child), deadline, files, rx);
        self.register(&spec.attempt_id, &handle);
        Ok(handle)
    }

    fn register(&self, attempt_id: &str, job: &RunningJob) {
        let mut live = self.inner.live.lock().expect("registry poisoned");
        live.retain(|_, w| w.strong_count() > 0);
        live.insert(attempt_id.to_owned(), Arc::downgrade(job.shared()));
    }

    /// Finds an attempt's job after the handle was dropped or the agent restarted.
    ///
    /// `Ok(None)` when the attempt was never started here. A running job (checked in `/proc`:
    /// the recorded pid, its start time and its command line must match, so a reused pid is not
    /// mistaken for it) comes back as a handle that polls `/proc` (it is not our child after a
    /// restart) and can be cancelled; its log stream starts at the current end of the log files
    /// (earlier output is in them). A finished job comes back with the outcome the wrapper
    /// recorded in `exit_code`, and its cgroup is cleaned up.
    pub async fn reattach(&self, attempt_id: &str) -> Result<Option<Reattached>> {
        self.reattach_from(attempt_id, None).await
    }

    /// [`LocalBackend::reattach`], with the log stream resuming at the given byte offsets of
    /// `stdout.log` and `stderr.log` (what the caller had already forwarded) instead of their
    /// current end, so that output written while nobody watched is not skipped.
    pub async fn reattach_from(
        &self,
        attempt_id: &str,
        offsets: Option<(u64, u64)>,
    ) -> Result<Option<Reattached>> {
        validate_attempt_id(attempt_id)?;
        let job_dir = self.inner.root.join(attempt_id);

        let in_process = {
            let live = self.inner.live.lock().expect("registry poisoned");
            live.get(attempt_id).and_then(Weak::upgrade)
        };
        if let Some(shared) = in_process {
            if let Some(outcome) = shared.outcome() {
                return Ok(Some(Reattached::Finished(outcome)));
            }
            let (tx, rx) = mpsc::channel(self.inner.options.log_channel_capacity.max(2));
            shared.sink.replace(tx);
            shared.sink.system("a new handle was attached to this job");
            return Ok(Some(Reattached::Running(RunningJob::new(shared, rx))));
        }

        let record_path = job_dir.join("attempt.json");
        let text = match safe_fs::read_own_file(&record_path, 1024 * 1024) {
            Ok(t) => t,
            Err(safe_fs::Refused::Missing) => return Ok(None),
            Err(e) => return Err(Error::BadRecord(format!("{}: {e}", record_path.display()))),
        };
        let mut record: AttemptRecord = serde_json::from_str(&text)
            .map_err(|e| Error::BadRecord(format!("{}/attempt.json: {e}", job_dir.display())))?;
        if record.attempt_id != attempt_id || record.pgid != record.pid || record.pid <= 1 {
            return Err(Error::BadRecord(format!(
                "{}/attempt.json does not describe this attempt",
                job_dir.display()
            )));
        }
        if record.cgroup.as_ref().is_some_and(|c| !c.is_plausible()) {
            tracing::warn!(
                "{}/attempt.json names an implausible cgroup; ignoring it",
                job_dir.display()
            );
            record.cgroup = None;
        }

        let pid = record.pid;
        let argv = procfs::cmdline(pid);
        let is_wrapper = procfs::alive(pid, record.start_ticks)
            && argv.get(3).map(String::as_str) == Some(sandbox::WRAPPER_NAME)
            && argv.get(4).map(String::as_str) == Some(attempt_id)
            && record.cgroup.as_ref().is_none_or(|c| c.contains(pid));

        if is_wrapper {
            let (out_at, err_at) = match offsets {
                Some((o, e)) => (Some(o), Some(e)),
                None => (None, None),
            };
            let (stdout_r, stdout_len) = open_at(&job_dir.join("stdout.log"), out_at).await?;
            let (stderr_r, stderr_len) = open_at(&job_dir.join("stderr.log"), err_at).await?;
            let (tx, rx) = mpsc::channel(self.inner.options.log_channel_capacity.max(2));
            let shared = job::Shared::new(
                job_dir.clone(),
                &record,
                self.inner.options.kill_grace,
                logs::LogSink::resumed(
                    tx,
                    self.inner.options.log_limits,
                    offsets.map_or(0, |(o, e)| o.saturating_add(e)),
                ),
            );
            shared.sink.system(if offsets.is_some() {
                format!("reattached to the running job (pid {pid}); output resumes where it was last sent")
            } else {
                format!(
                    "reattached to the running job (pid {pid}); earlier output is in stdout.log \
                     ({stdout_len} bytes) and stderr.log ({stderr_len} bytes)"
                )
            });
            let deadline = record.deadline_ms.and_then(|d| {
                tokio::time::Instant::now()
                    .checked_add(Duration::from_millis(d.saturating_sub(now_ms())))
            });
            let handle = job::launch(
                shared,
                job::Waiter::Poll,
                deadline,
                (stdout_r, stderr_r),
                rx,
            );
            self.register(attempt_id, &handle);
            return Ok(Some(Reattached::Running(handle)));
        }

        Ok(Some(Reattached::Finished(
            job::finished_while_away(&job_dir, &record).await,
        )))
    }
}

/// Opens a log file at `offset` (at most its length), or at its end; returns the position. The
/// logs are the agent's, in a directory the job cannot write; they are still opened without
/// following a link, and only as regular files.
async fn open_at(path: &Path, offset: Option<u64>) -> Result<(tokio::fs::File, u64)> {
    let f = safe_fs::open_own_file_rw(path)
        .map_err(|e| Error::BadRecord(format!("{}: {e}", path.display())))?;
    let mut f = tokio::fs::File::from_std(f);
    let len = f
        .seek(std::io::SeekFrom::End(0))
        .await
        .context(|| format!("seeking {}", path.display()))?;
    let at = offset.map_or(len, |o| o.min(len));
    f.seek(std::io::SeekFrom::Start(at))
        .await
        .context(|| format!("seeking {}", path.display()))?;
    Ok((f, at))
}

async fn write_record(job_dir: &Path, record: &AttemptRecord) -> Result<()> {
    let json = serde_json::to_vec_pretty(record).expect("record serialises");
    let tmp = job_dir.join(".attempt.json.tmp");
    let _ = tokio::fs::remove_file(&tmp).await;
    let mut f = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)
        .await
        .context(|| format!("writing {}", tmp.display()))?;
    f.write_all(&json)
        .await
        .context(|| format!("writing {}", tmp.display()))?;
    f.sync_all()
        .await
        .context(|| format!("syncing {}", tmp.display()))?;
    tokio::fs::rename(&tmp, job_dir.join("attempt.json"))
        .await
        .context(|| format!("renaming {}", tmp.display()))
}

/// Log files opened before the job starts: the write ends become the job's stdout/stderr, the
/// read ends are tailed (by descriptor, so a job deleting the files changes nothing).
struct Prepared {
    stdout_w: std::fs::File,
    stderr_w: std::fs::File,
    stdout_r: std::fs::File,
    stderr_r: std::fs::File,
}

fn validate_attempt_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidJob(format!(
            "attempt id {id:?}: use 1-128 letters, digits, '.', '_' or '-', not starting with '.'"
        )))
    }
}

/// A safe relative path inside the job directory.
pub(crate) fn safe_relative(path: &str) -> Result<PathBuf> {
    let bad = |why: &str| Error::InvalidJob(format!("file path {path:?}: {why}"));
    if path.is_empty() || path.contains('\0') {
        return Err(bad("empty or contains NUL"));
    }
    let p = Path::new(path);
    if p.is_absolute() {
        return Err(bad("absolute paths are not allowed"));
    }
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            Component::ParentDir => return Err(bad("'..' is not allowed")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(bad("absolute paths are not allowed"))
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(bad("names no file"));
    }
    Ok(out)
}

pub(crate) fn validate_launch(spec: &JobLaunch) -> Result<()> {
    validate_attempt_id(&spec.attempt_id)?;
    if spec.run.trim().is_empty() {
        return Err(Error::InvalidJob("run command is empty".into()));
    }
    for s in spec.setup.iter().chain(std::iter::once(&spec.run)) {
        if s.contains('\0') {
            return Err(Error::InvalidJob("commands may not contain NUL".into()));
        }
    }
    for (k, v) in &spec.env {
        let name_ok = !k.is_empty()
            && !k.as_bytes()[0].is_ascii_digit()
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !name_ok || v.contains('\0') {
            return Err(Error::InvalidJob(format!(
                "environment variable {k:?}: invalid name or value"
            )));
        }
    }
    for f in &spec.files {
        safe_relative(&f.path)?;
    }
    Ok(())
}

/// The job's whole environment: the agent's own never leaks into it. `job_dir` is the job's
/// working directory.
fn job_env(spec: &JobLaunch, job_dir: &Path) -> BTreeMap<String, OsString> {
    let mut env: BTreeMap<String, OsString> = BTreeMap::new();
    env.insert("PATH".into(), JOB_PATH.into());
    env.insert("HOME".into(), job_dir.into());
    env.insert("TMPDIR".into(), job_dir.join(".tmp").into());
    env.insert("LANG".into(), "C.UTF-8".into());
    for (k, v) in &spec.env {
        env.insert(k.clone(), v.into());
    }
    env.insert("SUANLI_JOB_DIR".into(), job_dir.into());
    env.insert("SUANLI_ATTEMPT_ID".into(), spec.attempt_id.clone().into());
    env
}

/// Creates the attempt directory (blocking): the job's `work` directory with the uploaded files
/// and `.tmp`, owned by the job's user; `status`, where the wrapper records the exit; and the
/// log files, which stay the agent's (the job writes them through the descriptors it is given).
fn prepare_job_dir(
    job_dir: &Path,
    files: &[JobFile],
    owner: Option<(u32, u32)>,
) -> Result<Prepared> {
    match std::fs::create_dir(job_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Error::AlreadyExists(job_dir.to_owned()))
        }
        Err(e) => {
            return Err(Error::Io {
                context: format!("creating {}", job_dir.display()),
                source: e,
            })
        }
    }
    let result = (|| {
        // The job's user passes through to its own directories; it can list or change nothing here.
        let mode = if owner.is_some() { 0o711 } else { 0o700 };
        std::fs::set_permissions(job_dir, std::fs::Permissions::from_mode(mode))
            .context(|| format!("chmod {}", job_dir.display()))?;
        let work = work_dir(job_dir);
        for dir in [work.clone(), job_dir.join(STATUS_DIR)] {
            std::fs::create_dir(&dir).context(|| format!("creating {}", dir.display()))?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .context(|| format!("chmod {}", dir.display()))?;
        }
        std::fs::create_dir(work.join(".tmp")).context(|| "creating .tmp".into())?;
        for f in files {
            let rel = safe_relative(&f.path)?;
            let dest = work.join(&rel);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)
                    .context(|| format!("creating the directory of {}", f.path))?;
            }
            let mode = f.mode & 0o777;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&dest)
                .and_then(|mut file| std::io::Write::write_all(&mut file, &f.data))
                .context(|| format!("writing {}", f.path))?;
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))
                .context(|| format!("chmod {}", f.path))?;
        }
        if let Some((uid, gid)) = owner {
            chown_tree(&work, uid, gid)?;
            chown_tree(&job_dir.join(STATUS_DIR), uid, gid)?;
        }
        let open_log = |name: &str| -> Result<(std::fs::File, std::fs::File)> {
            let path = job_dir.join(name);
            let w = std::fs::OpenOptions::new()
                .append(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .context(|| format!("creating {}", path.display()))?;
            // Read, and written only to free what was read (see `logs::tail`).
            let r = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .context(|| format!("opening {}", path.display()))?;
            Ok((w, r))
        };
        let (stdout_w, stdout_r) = open_log("stdout.log")?;
        let (stderr_w, stderr_r) = open_log("stderr.log")?;
        Ok(Prepared {
            stdout_w,
            stderr_w,
            stdout_r,
            stderr_r,
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(job_dir);
    }
    result
}

pub(crate) fn chown_tree(dir: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid))
        .context(|| format!("chown {}", dir.display()))?;
    for entry in std::fs::read_dir(dir).context(|| format!("listing {}", dir.display()))? {
        let entry = entry.context(|| format!("listing {}", dir.display()))?;
        let path = entry.path();
        let ft = entry
            .file_type()
            .context(|| format!("stat {}", path.display()))?;
        if ft.is_dir() {
            chown_tree(&path, uid, gid)?;
        } else {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid))
                .context(|| format!("chown {}", path.display()))?;
        }
    }
    Ok(())
}

/// Checks that the job user can reach `root` (search permission on it and every ancestor):
/// otherwise every job would fail to enter its directory.
fn check_traversable(root: &Path, uid: u32, gid: u32, name: &str) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    for dir in root.ancestors() {
        let m = std::fs::metadata(dir).context(|| format!("stat {}", dir.display()))?;
        let mode = m.mode();
        let ok = if m.uid() == uid {
            mode & 0o100 != 0
        } else if m.gid() == gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !ok {
            return Err(Error::Config(format!(
                "jobs run as {name}, who cannot enter {} (mode {:o}) on the way to the job \
                 root {}: put the job root elsewhere or allow search (o+x) on it",
                dir.display(),
                mode & 0o7777,
                root.display()
            )));
        }
    }
    Ok(())
}

fn build_report(
    cgroups: &Option<CgroupSetup>,
    bwrap: &Option<Bubblewrap>,
    prlimit: bool,
    user: &JobUser,
    options: &LocalOptions,
    mut notes: Vec<String>,
) -> IsolationReport {
    let (cgroup, limits) = match cgroups {
        Some(CgroupSetup::V2 { .. }) => (CgroupVersion::V2, LimitMechanism::Cgroup),
        Some(CgroupSetup::V1 { .. }) => (CgroupVersion::V1, LimitMechanism::Cgroup),
        None => (CgroupVersion::None, LimitMechanism::Rlimit),
    };
    let limits_text = match cgroups {
        Some(c) => format!(
            "limits by cgroup {} ({}), usage metered from the cgroup",
            c.version(),
            c.controllers().join(", ")
        ),
        None => {
            notes.push(
                "rlimits are weaker than a cgroup: memory is capped per process (address \
                 space), the process cap counts every process of the job user, CPU share is \
                 not capped (only CPU seconds), usage is sampled from /proc"
                    .into(),
            );
            if user.switch.is_none() && procfs::euid() == 0 {
                notes.push("the process cap does not apply to root".into());
            }
            format!(
                "limits by rlimit via {} (address space, processes, CPU seconds)",
                if prlimit { "prlimit" } else { "ulimit" }
            )
        }
    };
    let sandbox = if bwrap.is_some() {
        SandboxKind::Bubblewrap
    } else {
        SandboxKind::None
    };
    let sandbox_text = match bwrap {
        Some(b) => format!(
            "sandbox bubblewrap (read-only root, private /tmp and /dev, own pid/ipc/uts/net \
             namespaces, {}, /run and its sockets hidden, no capabilities, other jobs' directories \
             hidden{})",
            match (b.job_network, &b.slirp) {
                (network::JobNetwork::Host, _) => {
                    "network when the job asks: the host's, its loopback and abstract sockets included"
                }
                (network::JobNetwork::Isolated, Some(_)) => {
                    "network when the job asks: its own, through slirp4netns, without the \
                     host's loopback"
                }
                (network::JobNetwork::Isolated, None) => "no network",
            },
            if b.hidden.is_empty() {
                String::new()
            } else {
                format!(", {} agent path(s) hidden", b.hidden.len())
            }
        ),
        None => {
            notes.push(
                "without a sandbox jobs see the host's files (file permissions protect the \
                 agent's) and share its network"
                    .into(),
            );
            if !options.hidden_paths.is_empty() {
                notes.push(format!(
                    "{} hidden path(s) are protected by file permissions only",
                    options.hidden_paths.len()
                ));
            }
            "no sandbox".to_owned()
        }
    };
    let summary = format!(
        "{limits_text}; {sandbox_text}; jobs run as {} in their own process group",
        user.name
    );
    IsolationReport {
        cgroup,
        sandbox,
        limits,
        user: user.name.clone(),
        summary,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_ids_are_checked() {
        assert!(safe_relative("a/b.txt").is_ok());
        assert_eq!(safe_relative("./a//b").unwrap(), PathBuf::from("a/b"));
        for bad in ["", "/etc/passwd", "../x", "a/../../x", ".", "a\0b"] {
            assert!(safe_relative(bad).is_err(), "{bad:?}");
        }
        assert!(validate_attempt_id("att-1.2_x").is_ok());
        for bad in ["", ".", "..", ".hidden", "a/b", "a b", &"x".repeat(129)] {
            assert!(validate_attempt_id(bad).is_err(), "{bad:?}");
        }
        let mut spec = JobLaunch::new("a1", "true");
        spec.env.insert("BAD-NAME".into(), "x".into());
        assert!(validate_launch(&spec).is_err());
    }

    #[test]
    fn env_is_rebuilt() {
        let mut spec = JobLaunch::new("a1", "true");
        spec.env.insert("FOO".into(), "bar".into());
        spec.env.insert("SUANLI_ATTEMPT_ID".into(), "forged".into());
        let env = job_env(&spec, Path::new("/jobs/a1"));
        let keys: Vec<&str> = env.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "FOO",
                "HOME",
                "LANG",
                "PATH",
                "SUANLI_ATTEMPT_ID",
                "SUANLI_JOB_DIR",
                "TMPDIR"
            ]
        );
        assert_eq!(env["SUANLI_ATTEMPT_ID"], "a1");
        assert_eq!(env["TMPDIR"], "/jobs/a1/.tmp");
    }
}
