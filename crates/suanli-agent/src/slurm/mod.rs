//! The Slurm backend: an agent on a cluster's login node turns Suanli attempts into Slurm batch
//! jobs and reads capacity, states and usage from Slurm itself.
//!
//! It drives the Slurm command-line tools (`sbatch --parsable`, `squeue --format`, `scontrol -o`,
//! `scancel`, `sacct --parsable2`), whose text interfaces have been stable across Slurm releases,
//! rather than slurmrestd, whose REST schema changes with every plugin version (ARCHITECTURE.md
//! says more). [`parse`] reads and writes those texts without running anything.
//!
//! - Capacity: [`SlurmBackend::nodes`] lists the nodes of the partitions sold, with CPUs, memory,
//!   GPUs and whether they take work (drained, down or failing nodes do not).
//! - Jobs: [`SlurmBackend::submit`] makes `jobs_dir/<attempt_id>/` (the uploaded files, the batch
//!   script, `stdout.log`, `stderr.log`, `.tmp/`), owned by the Unix account the job runs as,
//!   and submits it with `sbatch` run as that account. One watcher asks `squeue` about every
//!   watched job at once per poll interval, so the controller sees one query however many jobs
//!   run. Each [`SlurmJob`] follows its job through pending (with Slurm's reason), running
//!   (Slurm's elapsed time) and its end, which it reads from `scontrol show job`, else from
//!   `sacct` (slurmdbd), else from `sacct -c` (the job-completion log). It streams the output
//!   files, enforces the attempt's time limit within a poll interval (Slurm's own limit is
//!   minute-grained and rounded up), cancels a job that can never start, and cancels with
//!   `scancel`.
//! - Restarts: a job is found again by its Slurm id ([`SlurmBackend::attach`]) or, when the agent
//!   died before it saved the id, by its job name `suanli-<attempt_id>` ([`SlurmBackend::find`]).
//!   While slurmctld is down the watcher keeps asking and nothing is concluded.
//!
//! The backend never runs a job as root: it refuses to start as root unless allowed, and refuses
//! accounts with uid 0.

mod config;
pub mod parse;
mod runner;

use std::collections::HashMap;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::io::AsyncSeekExt;
use tokio::sync::{mpsc, watch};

use crate::error::{Error, IoContext, Result};
use crate::job::{JobLaunch, JobState, LogChunk, LogStream, Outcome, Usage};
use crate::local::logs::{tail, LogSink};
use crate::local::sleep_until_opt;
use crate::local::{procfs, safe_relative, validate_launch, JOB_PATH};
use parse::{JobRecord, QueueEntry, SlurmState};

pub use config::{PartitionConfig, SlurmSection};
pub use runner::SlurmRunner;

/// How the backend is set up.
#[derive(Debug, Clone)]
pub struct SlurmOptions {
    /// Where job directories go: a file system the compute nodes mount at the same path.
    pub jobs_dir: PathBuf,
    /// The partitions sold, in order of preference (a node in several is sold in the first).
    pub partitions: Vec<String>,
    /// Whether the agent may run as root (jobs still never do).
    pub allow_root: bool,
    /// How often the watcher asks `squeue` about the jobs.
    pub poll_interval: Duration,
    /// Where the Slurm commands are; found on `PATH` when `None`.
    pub bin_dir: Option<PathBuf>,
    /// Capacity of each job's log channel, in chunks.
    pub log_channel_capacity: usize,
    /// How much of each job's output is forwarded.
    pub log_limits: crate::local::LogLimits,
}

impl SlurmOptions {
    pub fn new(jobs_dir: impl Into<PathBuf>, partitions: Vec<String>) -> Self {
        SlurmOptions {
            jobs_dir: jobs_dir.into(),
            partitions,
            allow_root: false,
            poll_interval: Duration::from_secs(1),
            bin_dir: None,
            log_channel_capacity: 1024,
            log_limits: crate::local::LogLimits::default(),
        }
    }
}

/// A Unix account jobs run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixAccount {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// Looks an account up through NSS (`getent passwd`, so LDAP and SSSD accounts are found),
/// falling back to `/etc/passwd`. Refuses root and any uid 0.
pub async fn lookup_account(name: &str) -> Result<UnixAccount> {
    let bad = |why: String| Error::Config(format!("Unix account {name:?}: {why}"));
    if name.is_empty() || name.starts_with('-') || name.contains([':', '/', '\0', ' ']) {
        return Err(bad("not a valid account name".into()));
    }
    let out = tokio::process::Command::new("getent")
        .args(["passwd", name])
        .stdin(Stdio::null())
        .output()
        .await;
    let parsed = match out {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            procfs::parse_passwd(&text, name)
        }
        _ => procfs::lookup_user(name),
    };
    let (uid, gid) = parsed.ok_or_else(|| bad("no such account".into()))?;
    if uid == 0 {
        return Err(bad("jobs never run as root".into()));
    }
    Ok(UnixAccount {
        name: name.to_owned(),
        uid,
        gid,
    })
}

/// A node of a sold partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlurmNode {
    pub name: String,
    /// The sold partition it is offered in.
    pub partition: String,
    pub cpus: u64,
    pub memory_mib: u64,
    pub gpus: u64,
    /// Up and taking work; a drained, down or failing node is not sold.
    pub sellable: bool,
    /// Slurm's state and reason, for the agent's log.
    pub state: String,
    pub reason: String,
}

/// An attempt to run as a Slurm job.
#[derive(Debug, Clone)]
pub struct SlurmSubmit {
    /// The task: attempt id, setup, run, environment, files, time limit (`cpus`, `memory_mib`,
    /// `pids_max` and `network` are the local backend's and not used here).
    pub launch: JobLaunch,
    pub account: UnixAccount,
    pub partition: String,
    pub ntasks: u64,
    pub cpus_per_task: u64,
    pub gpus_per_task: u64,
    pub mem_per_cpu_mib: u64,
    /// Slurm account and QOS to charge (`--account`, `--qos`).
    pub slurm_account: Option<String>,
    pub qos: Option<String>,
}

/// Where an attempt's Slurm job stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Submitted; Slurm has not been asked yet.
    Submitted,
    /// Waiting in the queue, with Slurm's reason (`Resources`, `Priority`, …).
    Pending { reason: String },
    /// Holding its allocation for `elapsed_s` seconds.
    Running { elapsed_s: u64 },
    /// Over.
    Finished(Box<Outcome>),
}

/// What the watcher last saw of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Observed {
    Queue(QueueEntry),
    /// squeue answered and does not list it any more.
    Gone,
}

/// Why the agent cancelled a job.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Why {
    Asked,
    TimeLimit,
    Unrunnable(String),
}

/// Runs jobs through Slurm. Cheap to clone; clones share the watcher.
#[derive(Clone)]
pub struct SlurmBackend {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SlurmBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlurmBackend")
            .field("version", &self.inner.version)
            .field("options", &self.inner.options)
            .finish()
    }
}

struct Inner {
    options: SlurmOptions,
    agent_is_root: bool,
    version: String,
    watched: Mutex<HashMap<u64, watch::Sender<Option<Observed>>>>,
}

/// Files of a job directory that belong to the backend.
const SCRIPT: &str = ".suanli-job.sh";
/// How long one Slurm command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a reason that never clears must last before the job is cancelled for it.
const UNRUNNABLE_GRACE: Duration = Duration::from_secs(5);

/// How long a submission keeps retrying while the controller cannot be reached.
const SUBMIT_PATIENCE: Duration = Duration::from_secs(120);

impl SlurmBackend {
    /// Checks the set-up (not root unless allowed, Slurm answering, the partitions existing,
    /// the jobs directory usable) and starts the watcher.
    pub async fn new(options: SlurmOptions) -> Result<SlurmBackend> {
        let agent_is_root = procfs::euid() == 0;
        if agent_is_root && !options.allow_root {
            return Err(Error::Config(
                "the Slurm backend does not run as root: run the agent as a service account, or \
                 set allow_root = true in [slurm] (jobs still run as the mapped accounts, never root)"
                    .into(),
            ));
        }
        if options.partitions.is_empty() {
            return Err(Error::Config("no partition to sell".into()));
        }
        let v = run_command(
            &options,
            agent_is_root,
            "sinfo",
            &["--version".into()],
            None,
        )
        .await?;
        if !v.ok {
            return Err(Error::Config(format!(
                "sinfo --version: {}",
                v.stderr.trim()
            )));
        }
        let version = v.stdout.trim().to_owned();
        let show = ["-o".into(), "show".into(), "partition".into()];
        let parts = run_command(&options, agent_is_root, "scontrol", &show, None).await?;
        if !parts.ok {
            return Err(Error::Config(format!(
                "Slurm does not answer (scontrol show partition): {}",
                parts.stderr.trim()
            )));
        }
        let known: Vec<String> = parts
            .stdout
            .lines()
            .filter_map(|l| parse::parse_kv_line(l).get("PartitionName").cloned())
            .collect();
        for p in &options.partitions {
            if !known.contains(p) {
                return Err(Error::Config(format!(
                    "partition {p:?} is not a partition of this cluster (it has: {})",
                    known.join(", ")
                )));
            }
        }
        std::fs::create_dir_all(&options.jobs_dir)
            .context(|| format!("creating {}", options.jobs_dir.display()))?;
        // Job accounts must pass through to their own directories; they cannot list others'.
        std::fs::set_permissions(&options.jobs_dir, std::fs::Permissions::from_mode(0o711))
            .context(|| format!("chmod {}", options.jobs_dir.display()))?;
        let backend = SlurmBackend {
            inner: Arc::new(Inner {
                options,
                agent_is_root,
                version,
                watched: Mutex::new(HashMap::new()),
            }),
        };
        tokio::spawn(watch_loop(Arc::downgrade(&backend.inner)));
        Ok(backend)
    }

    /// Whether jobs can run as `account`: as root the agent switches to any account; otherwise
    /// only to its own (it has no other way to submit as someone else).
    pub fn check_account(&self, account: &UnixAccount) -> Result<()> {
        let me = procfs::euid();
        if self.inner.agent_is_root || account.uid == me {
            return Ok(());
        }
        Err(Error::Config(format!(
            "the agent runs as {} (not root), so it can only submit jobs as itself, not as {}: \
             map orgs to {} or run the agent as root with allow_root = true",
            procfs::user_name(me),
            account.name,
            procfs::user_name(me)
        )))
    }

    /// `slurm 22.05.8`, as `sinfo --version` says.
    pub fn version(&self) -> &str {
        &self.inner.version
    }

    /// One line for the exchange's agent list.
    pub fn summary(&self) -> String {
        format!(
            "{} via the CLI; partitions {}; jobs run as mapped Unix accounts, never root",
            self.inner.version,
            self.inner.options.partitions.join(", ")
        )
    }

    pub fn options(&self) -> &SlurmOptions {
        &self.inner.options
    }

    /// An attempt's job directory.
    pub fn job_dir(&self, attempt_id: &str) -> PathBuf {
        self.inner.options.jobs_dir.join(attempt_id)
    }

    /// Runs a Slurm command (see [`run_command`]).
    async fn run(
        &self,
        program: &str,
        args: &[String],
        user: Option<(&UnixAccount, &Path)>,
    ) -> Result<CommandOutput> {
        run_command(
            &self.inner.options,
            self.inner.agent_is_root,
            program,
            args,
            user,
        )
        .await
    }

    /// The nodes of the sold partitions, as Slurm describes them now.
    pub async fn nodes(&self) -> Result<Vec<SlurmNode>> {
        let out = self
            .run(
                "scontrol",
                &["-o".into(), "show".into(), "node".into()],
                None,
            )
            .await?;
        if !out.ok {
            return Err(Error::Start(format!(
                "scontrol show node: {}",
                out.stderr.trim()
            )));
        }
        let sold = &self.inner.options.partitions;
        Ok(parse::parse_scontrol_nodes(&out.stdout)
            .into_iter()
            .filter_map(|n| {
                let partition = sold.iter().find(|p| n.partitions.contains(p))?.clone();
                Some(SlurmNode {
                    sellable: n.sellable(),
                    name: n.name,
                    partition,
                    cpus: n.cpus,
                    memory_mib: n.memory_mib,
                    gpus: n.gpus,
                    state: n.state,
                    reason: n.reason,
                })
            })
            .collect())
    }

    /// Writes the job directory and submits the job. A job Slurm refuses (bad partition, over
    /// a limit) is `Error::Start` with Slurm's reason; nothing of it runs.
    pub async fn submit(&self, s: SlurmSubmit) -> Result<SlurmJob> {
        validate_launch(&s.launch)?;
        if !self.inner.options.partitions.contains(&s.partition) {
            return Err(Error::InvalidJob(format!(
                "partition {:?} is not sold by this agent",
                s.partition
            )));
        }
        if s.account.uid == 0 {
            return Err(Error::InvalidJob("jobs never run as root".into()));
        }
        self.check_account(&s.account)?;
        let job_dir = self.job_dir(&s.launch.attempt_id);
        let script_text = parse::batch_script(
            &s.launch.attempt_id,
            &crate::local::work_dir(&job_dir).to_string_lossy(),
            &s.launch.env,
            s.launch.setup.as_deref(),
            &s.launch.run,
        );
        let owner = self
            .inner
            .agent_is_root
            .then_some((s.account.uid, s.account.gid));
        let files = s.launch.files.clone();
        let dir = job_dir.clone();
        tokio::task::spawn_blocking(move || prepare_dir(&dir, &files, &script_text, owner))
            .await
            .map_err(|e| Error::Start(format!("preparing the job directory: {e}")))??;
        let request = parse::BatchRequest {
            attempt_id: s.launch.attempt_id.clone(),
            partition: s.partition.clone(),
            ntasks: s.ntasks,
            cpus_per_task: s.cpus_per_task,
            gpus_per_task: s.gpus_per_task,
            mem_per_cpu_mib: s.mem_per_cpu_mib,
            time_limit_s: s.launch.time_limit_s,
            job_dir: job_dir.to_string_lossy().into_owned(),
            account: s.slurm_account.clone(),
            qos: s.qos.clone(),
        };
        let args = parse::sbatch_args(&request, &job_dir.join(SCRIPT).to_string_lossy());
        let deadline = tokio::time::Instant::now() + SUBMIT_PATIENCE;
        let mut delay = Duration::from_millis(500);
        let id = loop {
            let out = self
                .run("sbatch", &args, Some((&s.account, &job_dir)))
                .await?;
            if out.ok {
                break parse::parse_sbatch_id(&out.stdout).ok_or_else(|| {
                    Error::Start(format!("sbatch printed no job id: {:?}", out.stdout))
                })?;
            }
            if parse::is_transient_error(&out.stderr) && tokio::time::Instant::now() < deadline {
                tracing::warn!(error = %out.stderr.trim(), "sbatch: the controller is away; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
                continue;
            }
            return Err(Error::Start(format!(
                "Slurm refused the job: {}",
                parse::sbatch_error(&out.stderr)
            )));
        };
        let job = self.attach(&s.launch.attempt_id, id, s.launch.time_limit_s, None);
        job.shared.sink.system(format!(
            "Slurm job {id} submitted to partition {} as {} ({} task(s) × {} CPU(s))",
            s.partition,
            s.account.name,
            s.ntasks.max(1),
            s.cpus_per_task.max(1)
        ));
        Ok(job)
    }

    /// The Slurm job of an attempt, by its job name, if Slurm still knows it.
    pub async fn find(&self, attempt_id: &str) -> Result<Option<u64>> {
        let out = self
            .run(
                "squeue",
                &[
                    format!("--name={}", parse::job_name(attempt_id)),
                    "--states=all".into(),
                    "--noheader".into(),
                    "--format=%i".into(),
                ],
                None,
            )
            .await?;
        if !out.ok {
            return Err(Error::Start(format!("squeue: {}", out.stderr.trim())));
        }
        Ok(out.stdout.lines().find_map(|l| l.trim().parse().ok()))
    }

    /// Follows an attempt's Slurm job `slurm_id` (after submitting it, or after an agent
    /// restart). `offsets` are the bytes of stdout and stderr already forwarded.
    pub fn attach(
        &self,
        attempt_id: &str,
        slurm_id: u64,
        time_limit_s: u64,
        offsets: Option<(u64, u64)>,
    ) -> SlurmJob {
        let (tx, rx) = mpsc::channel(self.inner.options.log_channel_capacity.max(1));
        let already = offsets.map_or(0, |(o, e)| o.saturating_add(e));
        let sink = Arc::new(LogSink::resumed(tx, self.inner.options.log_limits, already));
        let (observed_tx, observed_rx) = watch::channel(None);
        self.inner
            .watched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(slurm_id, observed_tx);
        let (phase_tx, phase_rx) = watch::channel(Phase::Submitted);
        let shared = Arc::new(JobShared {
            slurm_id,
            attempt_id: attempt_id.to_owned(),
            job_dir: self.job_dir(attempt_id),
            time_limit_s: time_limit_s.max(1),
            why: Mutex::new(None),
            sink,
        });
        let (done_tx, done_rx) = watch::channel(false);
        let (out_at, err_at) = offsets.unwrap_or((0, 0));
        let tailers = vec![
            tokio::spawn(follow(
                shared.job_dir.join("stdout.log"),
                out_at,
                LogStream::Stdout,
                shared.sink.clone(),
                done_rx.clone(),
            )),
            tokio::spawn(follow(
                shared.job_dir.join("stderr.log"),
                err_at,
                LogStream::Stderr,
                shared.sink.clone(),
                done_rx,
            )),
        ];
        tokio::spawn(drive(
            self.clone(),
            shared.clone(),
            observed_rx,
            phase_tx,
            done_tx,
            tailers,
        ));
        SlurmJob {
            backend: self.clone(),
            shared,
            logs: Some(rx),
            phase: phase_rx,
        }
    }

    async fn scancel(&self, slurm_id: u64) {
        let mut delay = Duration::from_millis(500);
        for _ in 0..20 {
            match self.run("scancel", &[slurm_id.to_string()], None).await {
                Ok(o) if o.ok => return,
                Ok(o) if o.stderr.contains("Invalid job id") => return,
                Ok(o) => {
                    tracing::warn!(job = slurm_id, error = %o.stderr.trim(), "scancel failed; retrying")
                }
                Err(e) => tracing::warn!(job = slurm_id, error = %e, "scancel failed; retrying"),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    /// How a finished job ended: `scontrol show job` while the controller remembers it, then
    /// `sacct` (slurmdbd), then `sacct -c` (the job-completion log). `None` when no source
    /// knows the job; an error when Slurm could not be asked.
    async fn record(&self, slurm_id: u64) -> Result<Option<JobRecord>> {
        let id = slurm_id.to_string();
        let out = self
            .run(
                "scontrol",
                &["-o".into(), "show".into(), "job".into(), id.clone()],
                None,
            )
            .await?;
        if out.ok {
            if let Some(r) = out.stdout.lines().find_map(parse::parse_scontrol_job) {
                return Ok(Some(r));
            }
        } else if !out.stderr.contains("Invalid job id") {
            return Err(Error::Start(format!(
                "scontrol show job: {}",
                out.stderr.trim()
            )));
        }
        for (jobcomp, format) in [
            (false, parse::SACCT_FORMAT),
            (true, parse::SACCT_JOBCOMP_FORMAT),
        ] {
            let mut args = vec![
                "-j".to_owned(),
                id.clone(),
                "--allocations".into(),
                "--parsable2".into(),
                "--noheader".into(),
                format!("--format={format}"),
            ];
            if jobcomp {
                args.insert(0, "--completion".into());
            }
            if let Ok(o) = self.run("sacct", &args, None).await {
                if let Some(r) = o
                    .stdout
                    .lines()
                    .filter_map(parse::parse_sacct_line)
                    .rfind(|r| r.job_id == slurm_id)
                {
                    return Ok(Some(r));
                }
            }
        }
        Ok(None)
    }
}

/// Runs a Slurm command (as `user` when given and the agent is root) with a clean environment
/// and a time limit.
async fn run_command(
    o: &SlurmOptions,
    agent_is_root: bool,
    program: &str,
    args: &[String],
    user: Option<(&UnixAccount, &Path)>,
) -> Result<CommandOutput> {
    let path = match &o.bin_dir {
        Some(dir) => format!("{}:{JOB_PATH}", dir.display()),
        None => JOB_PATH.to_owned(),
    };
    let exe = o
        .bin_dir
        .as_ref()
        .map(|d| d.join(program))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(program));
    let mut cmd = tokio::process::Command::new(&exe);
    cmd.args(args)
        .env_clear()
        .env("PATH", path)
        .env("LANG", "C.UTF-8")
        // The agent reads times as Unix seconds (a job's own start and end, whatever the
        // controller's zone); a job (sbatch passes this environment on) sees Slurm's usual ones.
        .env(
            "SLURM_TIME_FORMAT",
            if program == "sbatch" {
                "standard"
            } else {
                "%s"
            },
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some((account, home)) = user {
        cmd.env("USER", &account.name)
            .env("LOGNAME", &account.name)
            .env("HOME", home)
            .current_dir(home);
        if agent_is_root {
            cmd.uid(account.uid).gid(account.gid);
        }
    }
    let out = tokio::time::timeout(COMMAND_TIMEOUT, cmd.output())
        .await
        .map_err(|_| Error::Start(format!("{program} took longer than {COMMAND_TIMEOUT:?}")))?
        .context(|| format!("running {}", exe.display()))?;
    Ok(CommandOutput {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

struct CommandOutput {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Creates the attempt directory (blocking): the job's `work` directory (its working directory,
/// the uploaded files, `.tmp`) owned by the job's account; the batch script and the two log files
/// (Slurm opens them as the account) owned by it too, but in a directory that stays the agent's,
/// so that the job cannot swap one for a link to another file.
fn prepare_dir(
    job_dir: &Path,
    files: &[crate::local::JobFile],
    script: &str,
    owner: Option<(u32, u32)>,
) -> Result<()> {
    for f in files {
        safe_relative(&f.path)?;
    }
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
    // The account passes through to its own files; it can list or change nothing here.
    let mode = if owner.is_some() { 0o711 } else { 0o700 };
    std::fs::set_permissions(job_dir, std::fs::Permissions::from_mode(mode))
        .context(|| format!("chmod {}", job_dir.display()))?;
    let work = crate::local::work_dir(job_dir);
    std::fs::create_dir(&work).context(|| format!("creating {}", work.display()))?;
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o700))
        .context(|| format!("chmod {}", work.display()))?;
    std::fs::create_dir(work.join(".tmp")).context(|| "creating .tmp".into())?;
    let write = |path: &Path, data: &[u8], mode: u32| -> Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .context(|| format!("creating the directory of {}", path.display()))?;
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .and_then(|mut file| std::io::Write::write_all(&mut file, data))
            .context(|| format!("writing {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .context(|| format!("chmod {}", path.display()))
    };
    for f in files {
        write(&work.join(safe_relative(&f.path)?), &f.data, f.mode & 0o777)?;
    }
    let own_files = [
        (job_dir.join(SCRIPT), script.as_bytes(), 0o700),
        (job_dir.join("stdout.log"), b"".as_slice(), 0o600),
        (job_dir.join("stderr.log"), b"".as_slice(), 0o600),
    ];
    for (path, data, mode) in &own_files {
        write(path, data, *mode)?;
    }
    if let Some((uid, gid)) = owner {
        crate::local::chown_tree(&work, uid, gid)?;
        for (path, _, _) in &own_files {
            std::os::unix::fs::lchown(path, Some(uid), Some(gid))
                .context(|| format!("chown {}", path.display()))?;
        }
    }
    Ok(())
}

/// Asks `squeue` about every watched job once per poll interval.
async fn watch_loop(inner: Weak<Inner>) {
    let mut failing = false;
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let backend = SlurmBackend { inner: strong };
        let interval = backend.inner.options.poll_interval;
        let ids: Vec<u64> = {
            let mut w = backend
                .inner
                .watched
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            w.retain(|_, tx| tx.receiver_count() > 0);
            w.keys().copied().collect()
        };
        if !ids.is_empty() {
            match poll_queue(&backend, &ids).await {
                Ok(seen) => {
                    if failing {
                        tracing::info!("Slurm answers again");
                        failing = false;
                    }
                    let w = backend
                        .inner
                        .watched
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    for id in &ids {
                        let now = match seen.get(id) {
                            Some(e) => Observed::Queue(e.clone()),
                            None => Observed::Gone,
                        };
                        if let Some(tx) = w.get(id) {
                            tx.send_if_modified(|v| {
                                if v.as_ref() == Some(&now) {
                                    false
                                } else {
                                    *v = Some(now.clone());
                                    true
                                }
                            });
                        }
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "squeue failed; jobs are left as they are until Slurm answers");
                    }
                    failing = true;
                }
            }
        }
        drop(backend);
        tokio::time::sleep(interval).await;
    }
}

async fn poll_queue(backend: &SlurmBackend, ids: &[u64]) -> Result<HashMap<u64, QueueEntry>> {
    let list = ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    let out = backend
        .run(
            "squeue",
            &[
                format!("--jobs={list}"),
                "--states=all".into(),
                "--noheader".into(),
                format!("--format={}", parse::SQUEUE_FORMAT),
            ],
            None,
        )
        .await?;
    if !out.ok {
        // squeue refuses a list made only of ids it has forgotten: that is an answer.
        if out.stderr.contains("Invalid job id") {
            return Ok(HashMap::new());
        }
        return Err(Error::Start(format!("squeue: {}", out.stderr.trim())));
    }
    Ok(out
        .stdout
        .lines()
        .filter_map(parse::parse_squeue_line)
        .map(|e| (e.job_id, e))
        .collect())
}

/// Follows one output file from `offset` until the job is over: it may appear only when the
/// job starts.
async fn follow(
    path: PathBuf,
    offset: u64,
    stream: LogStream,
    sink: Arc<LogSink>,
    mut done: watch::Receiver<bool>,
) {
    let mut file = loop {
        let finished = *done.borrow_and_update();
        // The log is the job's account's file, in the agent's directory: never followed
        // through a link, only a regular file.
        match crate::safe_fs::open_own_file_rw(&path) {
            Ok(f) => break tokio::fs::File::from_std(f),
            Err(crate::safe_fs::Refused::Missing) if !finished => {}
            Err(crate::safe_fs::Refused::Missing) => return,
            Err(why) => {
                sink.system(format!("{} is not read: {why}", path.display()));
                return;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = done.changed() => {}
        }
    };
    if offset > 0 && file.seek(std::io::SeekFrom::Start(offset)).await.is_err() {
        sink.system(format!("could not resume {stream:?} at byte {offset}"));
    }
    tail(file, stream, sink, done).await;
}

struct JobShared {
    slurm_id: u64,
    attempt_id: String,
    job_dir: PathBuf,
    time_limit_s: u64,
    why: Mutex<Option<Why>>,
    sink: Arc<LogSink>,
}

impl JobShared {
    /// Records why the agent cancels, unless a reason is recorded already.
    fn set_why(&self, why: Why) -> bool {
        let mut w = self.why.lock().unwrap_or_else(|p| p.into_inner());
        if w.is_some() {
            return false;
        }
        *w = Some(why);
        true
    }

    fn why(&self) -> Option<Why> {
        self.why.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Follows one job: publishes its phase, enforces the time limit, cancels what can never run,
/// and concludes from Slurm's record once the job is over.
async fn drive(
    backend: SlurmBackend,
    job: Arc<JobShared>,
    mut observed: watch::Receiver<Option<Observed>>,
    phase: watch::Sender<Phase>,
    done: watch::Sender<bool>,
    tailers: Vec<tokio::task::JoinHandle<()>>,
) {
    let mut last_reason = String::new();
    let mut running_seen = false;
    // When Slurm first gave a reason that never clears: Slurm may show one for a moment right
    // after submission, so the job is cancelled only when it persists.
    let mut unrunnable_since: Option<tokio::time::Instant> = None;
    loop {
        let now = observed.borrow_and_update().clone();
        let unrunnable = matches!(&now, Some(Observed::Queue(e))
            if !e.state.is_started() && !e.state.is_terminal() && parse::is_unrunnable_reason(&e.reason));
        if !unrunnable {
            unrunnable_since = None;
        }
        match now {
            None => {}
            Some(Observed::Gone) => break,
            Some(Observed::Queue(e)) if e.state.is_terminal() => break,
            Some(Observed::Queue(e)) if e.state.is_started() => {
                if !running_seen {
                    running_seen = true;
                    job.sink
                        .system(format!("Slurm job {} is running", job.slurm_id));
                }
                phase.send_replace(Phase::Running {
                    elapsed_s: e.elapsed_s,
                });
                if e.elapsed_s >= job.time_limit_s && job.set_why(Why::TimeLimit) {
                    job.sink.system(format!(
                        "time limit of {} s reached: cancelling Slurm job {}",
                        job.time_limit_s, job.slurm_id
                    ));
                    let b = backend.clone();
                    let id = job.slurm_id;
                    tokio::spawn(async move { b.scancel(id).await });
                }
            }
            Some(Observed::Queue(e)) => {
                let reason = if e.reason.is_empty() || e.reason == "None" {
                    e.state_text.clone()
                } else {
                    e.reason.clone()
                };
                if reason != last_reason {
                    job.sink.system(format!(
                        "Slurm job {} is {}: {reason}",
                        job.slurm_id,
                        e.state_text.to_ascii_lowercase()
                    ));
                    last_reason = reason.clone();
                }
                phase.send_replace(Phase::Pending {
                    reason: reason.clone(),
                });
                if unrunnable {
                    let since = *unrunnable_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() >= UNRUNNABLE_GRACE
                        && job.set_why(Why::Unrunnable(e.reason.clone()))
                    {
                        let b = backend.clone();
                        let id = job.slurm_id;
                        tokio::spawn(async move { b.scancel(id).await });
                    }
                }
            }
        }
        // Wake on the next observation, or when an unrunnable reason has lasted long enough.
        let recheck = unrunnable_since.map(|t| t + UNRUNNABLE_GRACE);
        tokio::select! {
            changed = observed.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            _ = sleep_until_opt(recheck) => {}
        }
    }
    let record = conclude(&backend, &job).await;
    let outcome = outcome_of(&job, record.as_ref());
    let _ = done.send(true);
    for t in tailers {
        let _ = t.await;
    }
    job.sink.flush_kept().await;
    job.sink.system(outcome.message.clone());
    job.sink.close();
    backend
        .inner
        .watched
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&job.slurm_id);
    phase.send_replace(Phase::Finished(Box::new(outcome)));
}

/// Slurm's record of a finished job; waits while Slurm cannot be asked (a restarting
/// controller), and gives up only when every source answered that it does not know the job.
async fn conclude(backend: &SlurmBackend, job: &JobShared) -> Option<JobRecord> {
    let mut unknown = 0;
    let mut delay = Duration::from_millis(500);
    loop {
        match backend.record(job.slurm_id).await {
            Ok(Some(r)) if r.state.is_terminal() => return Some(r),
            Ok(Some(_)) => {}
            Ok(None) => {
                unknown += 1;
                if unknown >= 5 {
                    return None;
                }
            }
            Err(e) => {
                tracing::warn!(job = job.slurm_id, error = %e, "reading the job's end from Slurm failed; retrying")
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

/// The attempt's outcome from Slurm's record and what the agent did to the job.
fn outcome_of(job: &JobShared, record: Option<&JobRecord>) -> Outcome {
    let Some(r) = record else {
        return Outcome {
            state: JobState::Failed { exit_code: None },
            exit_code: None,
            usage: Usage::default(),
            message: format!(
                "Slurm has no record of job {} (not in the queue, its accounting or its completion log)",
                job.slurm_id
            ),
            started_at_ms: None,
            ended_at_ms: None,
        };
    };
    let billed_s = r.elapsed_s.min(job.time_limit_s);
    let usage = Usage {
        cpu_ms: None,
        peak_memory_mib: None,
        wall_ms: billed_s * 1_000,
    };
    let code = r.exit_code;
    let detail = format!(
        "Slurm job {} {} (exit code {}) on {} after {} s with {} CPU(s){}",
        r.job_id,
        r.state_text,
        code.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
        if r.nodes.is_empty() || r.nodes == "(null)" {
            "no node"
        } else {
            &r.nodes
        },
        r.elapsed_s,
        r.cpus,
        if r.gpus > 0 {
            format!(", {} GPU(s)", r.gpus)
        } else {
            String::new()
        }
    );
    let (state, message) = match (job.why(), r.state) {
        (Some(Why::Unrunnable(reason)), SlurmState::Cancelled) => (
            JobState::Failed { exit_code: None },
            format!("Slurm cannot run this job ({reason}); it was cancelled before it started. {detail}"),
        ),
        (Some(Why::TimeLimit), SlurmState::Cancelled | SlurmState::Timeout) => (
            JobState::TimedOut,
            format!("time limit of {} s reached. {detail}", job.time_limit_s),
        ),
        (Some(Why::Asked), SlurmState::Cancelled) => (JobState::Cancelled, format!("cancelled. {detail}")),
        (_, SlurmState::Completed) => (JobState::Succeeded, detail),
        (_, SlurmState::Failed) => (JobState::Failed { exit_code: code }, detail),
        (_, SlurmState::Cancelled) => (
            JobState::Cancelled,
            format!("cancelled in Slurm, not by Suanli. {detail}"),
        ),
        (_, SlurmState::Timeout | SlurmState::Deadline) => (JobState::TimedOut, detail),
        (_, SlurmState::OutOfMemory) => (JobState::OutOfMemory, format!("out of memory. {detail}")),
        (_, _) => (JobState::Failed { exit_code: code }, detail),
    };
    let exit_code = match state {
        JobState::Succeeded => Some(0),
        _ => code,
    };
    Outcome {
        state,
        exit_code,
        usage,
        message,
        started_at_ms: r.started_s.map(|s| s * 1_000),
        ended_at_ms: r.ended_s.map(|s| s * 1_000),
    }
}

/// An attempt's Slurm job: its phase, output, usage, cancel and end.
pub struct SlurmJob {
    backend: SlurmBackend,
    shared: Arc<JobShared>,
    logs: Option<mpsc::Receiver<LogChunk>>,
    phase: watch::Receiver<Phase>,
}

impl std::fmt::Debug for SlurmJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlurmJob")
            .field("slurm_id", &self.shared.slurm_id)
            .field("attempt_id", &self.shared.attempt_id)
            .finish()
    }
}

impl SlurmJob {
    pub fn slurm_id(&self) -> u64 {
        self.shared.slurm_id
    }

    pub fn job_dir(&self) -> &Path {
        &self.shared.job_dir
    }

    /// The job's output chunks (stdout, stderr and the backend's own notes); closed once the
    /// job is over and every byte has been read.
    pub fn take_logs(&mut self) -> mpsc::Receiver<LogChunk> {
        self.logs.take().unwrap_or_else(|| mpsc::channel(1).1)
    }

    /// A receiver of the job's phase, to wait on changes.
    pub fn watch(&self) -> watch::Receiver<Phase> {
        self.phase.clone()
    }

    /// Where the job stands now.
    pub fn phase(&self) -> Phase {
        self.phase.borrow().clone()
    }

    /// Waits for the next change of phase (returns at once when it is over).
    pub async fn changed(&mut self) -> Phase {
        if !matches!(*self.phase.borrow(), Phase::Finished(_)) {
            let _ = self.phase.changed().await;
        }
        self.phase.borrow_and_update().clone()
    }

    /// Use so far: Slurm's elapsed time, never past the time limit.
    pub fn usage(&self) -> Usage {
        match &*self.phase.borrow() {
            Phase::Running { elapsed_s } => Usage {
                cpu_ms: None,
                peak_memory_mib: None,
                wall_ms: (*elapsed_s).min(self.shared.time_limit_s) * 1_000,
            },
            Phase::Finished(o) => o.usage,
            _ => Usage::default(),
        }
    }

    /// Cancels the job (`scancel`); its end is then reported as cancelled.
    pub async fn cancel(&self) {
        if matches!(*self.phase.borrow(), Phase::Finished(_)) {
            return;
        }
        self.shared.set_why(Why::Asked);
        self.shared
            .sink
            .system(format!("cancelling Slurm job {}", self.shared.slurm_id));
        self.backend.scancel(self.shared.slurm_id).await;
    }

    /// Waits for the end.
    pub async fn finished(&self) -> Outcome {
        let mut rx = self.phase.clone();
        loop {
            if let Phase::Finished(o) = &*rx.borrow_and_update() {
                return (**o).clone();
            }
            if rx.changed().await.is_err() {
                return Outcome {
                    state: JobState::Failed { exit_code: None },
                    exit_code: None,
                    usage: Usage::default(),
                    message: "the backend stopped following the job".into(),
                    started_at_ms: None,
                    ended_at_ms: None,
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(limit: u64, why: Option<Why>) -> JobShared {
        let (tx, _rx) = mpsc::channel(1);
        JobShared {
            slurm_id: 7,
            attempt_id: "att".into(),
            job_dir: PathBuf::from("/j"),
            time_limit_s: limit,
            why: Mutex::new(why),
            sink: Arc::new(LogSink::new(tx)),
        }
    }

    fn record(state: &str, exit: &str, elapsed: u64) -> JobRecord {
        JobRecord {
            job_id: 7,
            state: SlurmState::parse(state),
            state_text: state.into(),
            reason: String::new(),
            exit_code: parse::parse_exit_code(exit),
            elapsed_s: elapsed,
            cpus: 2,
            gpus: 0,
            nodes: "n1".into(),
            started_s: Some(1_000),
            ended_s: Some(1_000 + elapsed),
        }
    }

    #[test]
    fn slurm_states_map_to_outcomes() {
        let cases: Vec<(Option<Why>, &str, &str, JobState)> = vec![
            (None, "COMPLETED", "0:0", JobState::Succeeded),
            (
                None,
                "FAILED",
                "3:0",
                JobState::Failed { exit_code: Some(3) },
            ),
            (None, "CANCELLED by 0", "0:15", JobState::Cancelled),
            (Some(Why::Asked), "CANCELLED", "0:15", JobState::Cancelled),
            (
                Some(Why::TimeLimit),
                "CANCELLED",
                "0:15",
                JobState::TimedOut,
            ),
            (None, "TIMEOUT", "0:0", JobState::TimedOut),
            (None, "DEADLINE", "0:0", JobState::TimedOut),
            (None, "OUT_OF_MEMORY", "0:125", JobState::OutOfMemory),
            (
                None,
                "NODE_FAIL",
                "0:0",
                JobState::Failed { exit_code: Some(0) },
            ),
            (
                None,
                "PREEMPTED",
                "0:15",
                JobState::Failed {
                    exit_code: Some(143),
                },
            ),
            (
                Some(Why::Unrunnable("PartitionTimeLimit".into())),
                "CANCELLED",
                "0:0",
                JobState::Failed { exit_code: None },
            ),
            // The job ended by itself before the cancel landed: its own end counts.
            (Some(Why::Asked), "COMPLETED", "0:0", JobState::Succeeded),
        ];
        for (why, state, exit, want) in cases {
            let o = outcome_of(&shared(100, why.clone()), Some(&record(state, exit, 5)));
            assert_eq!(o.state, want, "{why:?} {state}");
            assert!(
                o.message.contains(state.split(' ').next().unwrap()),
                "{}",
                o.message
            );
        }
        let o = outcome_of(&shared(100, None), Some(&record("NODE_FAIL", "0:0", 5)));
        assert!(o.message.contains("NODE_FAIL"));
    }

    #[test]
    fn usage_is_slurms_elapsed_capped_at_the_limit() {
        let o = outcome_of(&shared(100, None), Some(&record("COMPLETED", "0:0", 42)));
        assert_eq!(o.usage.wall_ms, 42_000);
        let o = outcome_of(
            &shared(10, Some(Why::TimeLimit)),
            Some(&record("CANCELLED", "0:15", 12)),
        );
        assert_eq!(o.usage.wall_ms, 10_000);
        let o = outcome_of(&shared(10, None), None);
        assert_eq!(o.usage.wall_ms, 0);
        assert!(matches!(o.state, JobState::Failed { exit_code: None }));
    }
}
