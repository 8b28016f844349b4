//! Pure readers of what the Slurm commands print, and writers of what they are given. Nothing
//! here runs a command; everything is tested on real outputs captured from Slurm 22.05.
//!
//! Only the long-stable text interfaces are used: `sbatch --parsable`, `squeue --format`,
//! `scontrol -o show job|node` (one `Key=Value` line per object) and `sacct --parsable2`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A Slurm job state (`JobState`, squeue's `%T`, sacct's `State`), by its base name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlurmState {
    Pending,
    Configuring,
    Running,
    Suspended,
    Completing,
    Completed,
    Failed,
    Cancelled,
    Timeout,
    NodeFail,
    Preempted,
    OutOfMemory,
    BootFail,
    Deadline,
    /// Held, requeued, resizing, signalling, staging out, …: not over, not running the task.
    Other,
}

impl SlurmState {
    /// Reads `RUNNING`, `CANCELLED by 0`, `CANCELLED+`, `OUT_OF_MEMORY`, `OOM`, ….
    pub fn parse(s: &str) -> SlurmState {
        let base = s
            .split([' ', '+'])
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        match base.as_str() {
            "PENDING" | "PD" => SlurmState::Pending,
            "CONFIGURING" | "CF" => SlurmState::Configuring,
            "RUNNING" | "R" => SlurmState::Running,
            "SUSPENDED" | "S" => SlurmState::Suspended,
            "COMPLETING" | "CG" => SlurmState::Completing,
            "COMPLETED" | "CD" => SlurmState::Completed,
            "FAILED" | "F" => SlurmState::Failed,
            "CANCELLED" | "CA" => SlurmState::Cancelled,
            "TIMEOUT" | "TO" => SlurmState::Timeout,
            "NODE_FAIL" | "NF" => SlurmState::NodeFail,
            "PREEMPTED" | "PR" => SlurmState::Preempted,
            "OUT_OF_MEMORY" | "OOM" => SlurmState::OutOfMemory,
            "BOOT_FAIL" | "BF" => SlurmState::BootFail,
            "DEADLINE" | "DL" => SlurmState::Deadline,
            _ => SlurmState::Other,
        }
    }

    /// Over for good: the job will not run (again) under this id.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            SlurmState::Completed
                | SlurmState::Failed
                | SlurmState::Cancelled
                | SlurmState::Timeout
                | SlurmState::NodeFail
                | SlurmState::Preempted
                | SlurmState::OutOfMemory
                | SlurmState::BootFail
                | SlurmState::Deadline
        )
    }

    /// The job holds its allocation (its time is billed).
    pub fn is_started(self) -> bool {
        matches!(
            self,
            SlurmState::Running | SlurmState::Suspended | SlurmState::Completing
        )
    }
}

/// Slurm durations: `MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`, `D-HH:MM:SS`, with an
/// optional fraction (`00:00:01.234`, from sacct's CPU times) which is dropped. `None` for
/// `UNLIMITED`, `INVALID`, `NOT_SET`, `Partition_Limit` and anything unreadable.
///
/// squeue's `%M` prints `M:SS` and `H:MM:SS`; scontrol's `RunTime` prints `HH:MM:SS` or
/// `D-HH:MM:SS`. A lone number is minutes, as in `--time`.
pub fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    let s = s.split('.').next()?;
    if s.is_empty() {
        return None;
    }
    let num = |t: &str| -> Option<u64> {
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (days, rest) = match s.split_once('-') {
        Some((d, r)) => (num(d)?, Some(r)),
        None => (0, None),
    };
    let secs = match rest {
        // D-HH[:MM[:SS]]
        Some(r) => {
            let p: Vec<&str> = r.split(':').collect();
            match p.as_slice() {
                [h] => num(h)? * 3600,
                [h, m] => num(h)? * 3600 + num(m)? * 60,
                [h, m, sec] => num(h)? * 3600 + num(m)? * 60 + num(sec)?,
                _ => return None,
            }
        }
        None => {
            let p: Vec<&str> = s.split(':').collect();
            match p.as_slice() {
                [m] => num(m)? * 60,
                [m, sec] => num(m)? * 60 + num(sec)?,
                [h, m, sec] => num(h)? * 3600 + num(m)? * 60 + num(sec)?,
                _ => return None,
            }
        }
    };
    days.checked_mul(86_400)?.checked_add(secs)
}

/// Slurm's `ExitCode=CODE:SIGNAL`; a job killed by signal N reads as 128 + N, as in the shell.
pub fn parse_exit_code(s: &str) -> Option<i32> {
    let (code, signal) = s.trim().split_once(':')?;
    let code: i32 = code.parse().ok()?;
    let signal: i32 = signal.parse().ok()?;
    Some(if signal != 0 { 128 + signal } else { code })
}

/// The job id `sbatch --parsable` prints: `1234` or `1234;cluster`.
pub fn parse_sbatch_id(stdout: &str) -> Option<u64> {
    let line = stdout.lines().map(str::trim).find(|l| !l.is_empty())?;
    line.split(';').next()?.trim().parse().ok()
}

/// Why `sbatch` refused a job: its last `error:` line without the prefixes, e.g.
/// `Requested node configuration is not available`.
pub fn sbatch_error(stderr: &str) -> String {
    let line = stderr
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("sbatch failed without a message");
    let line = line.strip_prefix("sbatch: error: ").unwrap_or(line);
    line.strip_prefix("Batch job submission failed: ")
        .unwrap_or(line)
        .to_owned()
}

/// Whether a submission failure is the controller being away (try again later) rather than a
/// refusal of the job.
pub fn is_transient_error(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    [
        "unable to contact slurm controller",
        "slurm_persist_conn_open",
        "socket timed out",
        "connection refused",
        "slurmctld is busy",
        "resource temporarily unavailable",
        "communication connection failure",
        "zero bytes were transmitted or received",
        "try again",
    ]
    .iter()
    .any(|p| s.contains(p))
}

/// Pending reasons that will never clear by themselves: the job asks for something the
/// partition, account or QOS does not allow, or that no node has.
pub fn is_unrunnable_reason(reason: &str) -> bool {
    let r = reason.trim();
    r.starts_with("Partition")
        && (r.ends_with("Limit") || r == "PartitionConfig" || r == "PartitionInactive")
        || matches!(
            r,
            "BadConstraints"
                | "InvalidAccount"
                | "InvalidQOS"
                | "AccountNotAllowed"
                | "QOSNotAllowed"
                | "DependencyNeverSatisfied"
                | "AssocMaxJobsLimit"
                | "FrontEndDown"
        )
        || r.starts_with("QOSMax") && r.ends_with("PerJobLimit")
}

/// One line of `scontrol -o show …`: `Key=Value` pairs separated by spaces. A value with spaces
/// (`OS=Linux 6.1 #1 SMP`, `Reason=Not responding [root@…]`) keeps the words that follow it up to
/// the next `Key=`.
pub fn parse_kv_line(line: &str) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let mut last: Option<String> = None;
    for word in line.split_whitespace() {
        let key_like = word.split_once('=').filter(|(k, _)| {
            !k.is_empty()
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'/' | b':' | b'.'))
                && k.as_bytes()[0].is_ascii_alphabetic()
        });
        match key_like {
            Some((k, v)) => {
                out.insert(k.to_owned(), v.to_owned());
                last = Some(k.to_owned());
            }
            None => {
                if let Some(v) = last.as_ref().and_then(|k| out.get_mut(k)) {
                    v.push(' ');
                    v.push_str(word);
                }
            }
        }
    }
    out
}

/// A line of `squeue --noheader --format=` [`SQUEUE_FORMAT`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    pub job_id: u64,
    pub state: SlurmState,
    /// `%T` as printed, e.g. `PENDING`.
    pub state_text: String,
    /// Why it is pending (or `None`).
    pub reason: String,
    pub elapsed_s: u64,
    pub cpus: u64,
}

/// Job id, state, reason, time used, CPUs.
pub const SQUEUE_FORMAT: &str = "%i|%T|%r|%M|%C";

pub fn parse_squeue_line(line: &str) -> Option<QueueEntry> {
    let p: Vec<&str> = line.trim().split('|').collect();
    let [id, state, reason, used, cpus] = p.as_slice() else {
        return None;
    };
    Some(QueueEntry {
        job_id: id.trim().parse().ok()?,
        state: SlurmState::parse(state),
        state_text: state.trim().to_owned(),
        reason: reason.trim().to_owned(),
        elapsed_s: parse_duration(used).unwrap_or(0),
        cpus: cpus.trim().parse().unwrap_or(0),
    })
}

/// How a job ended (or stands), from `scontrol show job` or `sacct`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    pub job_id: u64,
    pub state: SlurmState,
    pub state_text: String,
    pub reason: String,
    pub exit_code: Option<i32>,
    /// Seconds the job held its allocation (`RunTime`, `Elapsed`).
    pub elapsed_s: u64,
    /// CPUs allocated (`NumCPUs`, `AllocCPUS`).
    pub cpus: u64,
    /// GPUs allocated, from the `TRES`/`AllocTRES` `gres/gpu=` entry.
    pub gpus: u64,
    pub nodes: String,
    /// When the job started and ended (Unix seconds; the backend runs Slurm's tools with
    /// `SLURM_TIME_FORMAT=%s`), when Slurm says.
    pub started_s: Option<u64>,
    pub ended_s: Option<u64>,
}

/// A time of Slurm's printed as Unix seconds (`Unknown`, `None`, or 0 when there is none).
fn epoch_s(t: &str) -> Option<u64> {
    t.trim().parse::<u64>().ok().filter(|&s| s > 0)
}

/// Reads `scontrol -o show job ID`.
pub fn parse_scontrol_job(line: &str) -> Option<JobRecord> {
    let kv = parse_kv_line(line);
    let get = |k: &str| kv.get(k).map(String::as_str).unwrap_or("");
    let state_text = get("JobState").to_owned();
    Some(JobRecord {
        job_id: get("JobId").parse().ok()?,
        state: SlurmState::parse(&state_text),
        state_text,
        reason: get("Reason").to_owned(),
        exit_code: parse_exit_code(get("ExitCode")),
        elapsed_s: parse_duration(get("RunTime")).unwrap_or(0),
        cpus: get("NumCPUs").parse().unwrap_or(0),
        gpus: job_gpus(&kv),
        nodes: get("NodeList").to_owned(),
        started_s: epoch_s(get("StartTime")),
        ended_s: epoch_s(get("EndTime")),
    })
}

/// GPUs of a job: the allocated `gres/gpu` in `TRES` when the site accounts for it
/// (`AccountingStorageTRES=gres/gpu`), else what was asked: `TresPerJob`, `TresPerNode` ×
/// nodes or `TresPerTask` × tasks (`gres:gpu:2`, `gres:gpu:a100:2`, also `gres/gpu:2`).
fn job_gpus(kv: &BTreeMap<String, String>) -> u64 {
    let get = |k: &str| kv.get(k).map(String::as_str).unwrap_or("");
    let allocated = tres_gpus(get("TRES"));
    if allocated > 0 {
        return allocated;
    }
    let per = |k: &str| -> u64 {
        get(k)
            .split(',')
            .filter(|e| e.starts_with("gres:gpu") || e.starts_with("gres/gpu"))
            .filter_map(|e| e.rsplit([':', '=']).next()?.parse::<u64>().ok())
            .sum()
    };
    let count = |k: &str| get(k).parse::<u64>().unwrap_or(1);
    let job = per("TresPerJob");
    if job > 0 {
        return job;
    }
    let node = per("TresPerNode");
    if node > 0 {
        return node * count("NumNodes");
    }
    per("TresPerTask") * count("NumTasks")
}

/// The fields [`parse_sacct_line`] reads, for `sacct --parsable2 --noheader --format=`.
pub const SACCT_FORMAT: &str =
    "JobID,State,ExitCode,Elapsed,AllocCPUS,AllocTRES,NodeList,Start,End";
/// The same for the job-completion log (`sacct -c`), which has no TRES.
pub const SACCT_JOBCOMP_FORMAT: &str = "JobID,State,ExitCode,Elapsed,AllocCPUS,NodeList,Start,End";

/// Reads a line of `sacct -P -n -o` [`SACCT_FORMAT`] (or [`SACCT_JOBCOMP_FORMAT`]). Job steps
/// (`1234.batch`) are skipped: only the allocation's own line counts.
pub fn parse_sacct_line(line: &str) -> Option<JobRecord> {
    let p: Vec<&str> = line.trim().split('|').collect();
    let (id, state, exit, elapsed, cpus, tres, nodes, start, end) = match p.as_slice() {
        [id, state, exit, elapsed, cpus, tres, nodes, start, end] => {
            (id, state, exit, elapsed, cpus, *tres, nodes, *start, *end)
        }
        [id, state, exit, elapsed, cpus, nodes, start, end] => {
            (id, state, exit, elapsed, cpus, "", nodes, *start, *end)
        }
        _ => return None,
    };
    let job_id: u64 = id.trim().parse().ok()?;
    Some(JobRecord {
        job_id,
        state: SlurmState::parse(state),
        state_text: state.trim().to_owned(),
        reason: String::new(),
        exit_code: parse_exit_code(exit),
        elapsed_s: parse_duration(elapsed).unwrap_or(0),
        cpus: cpus.trim().parse().unwrap_or(0),
        gpus: tres_gpus(tres),
        nodes: nodes.trim().to_owned(),
        started_s: epoch_s(start),
        ended_s: epoch_s(end),
    })
}

/// GPUs in a TRES string: `cpu=2,mem=2G,node=1,gres/gpu=4,gres/gpu:a100=4` → 4.
pub fn tres_gpus(tres: &str) -> u64 {
    tres.split(',')
        .filter_map(|e| e.split_once('='))
        .find(|(k, _)| *k == "gres/gpu")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// A node as `scontrol -o show node` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub name: String,
    pub partitions: Vec<String>,
    pub cpus: u64,
    pub memory_mib: u64,
    pub gpus: u64,
    /// `IDLE`, `MIXED`, `ALLOCATED`, `IDLE+DRAIN`, `DOWN*+NOT_RESPONDING`, ….
    pub state: String,
    pub reason: String,
}

impl NodeRecord {
    /// Whether new work may be sold on it: up and taking jobs (not drained, draining, down,
    /// failing, in maintenance, rebooting or powered down).
    pub fn sellable(&self) -> bool {
        let up = self.state.to_ascii_uppercase();
        let mut parts = up.split('+');
        let first = parts.next().unwrap_or("");
        // A trailing `*` on the base state means "not responding".
        let responding = !first.contains('*');
        let base = first.trim_end_matches(['*', '~', '#', '!', '%', '$', '@', '^', '-']);
        let base_ok = matches!(
            base,
            "IDLE" | "MIXED" | "ALLOCATED" | "COMPLETING" | "ALLOC" | "MIX"
        );
        let bad_flag = parts.any(|f| {
            matches!(
                f,
                "DRAIN"
                    | "DRAINING"
                    | "DRAINED"
                    | "DOWN"
                    | "FAIL"
                    | "FAILING"
                    | "MAINTENANCE"
                    | "MAINT"
                    | "NOT_RESPONDING"
                    | "POWERED_DOWN"
                    | "POWERING_DOWN"
                    | "POWER_DOWN"
                    | "REBOOT_REQUESTED"
                    | "REBOOT_ISSUED"
                    | "INVALID_REG"
                    | "RESERVED"
            )
        });
        base_ok && !bad_flag && responding
    }
}

/// Reads `scontrol -o show node` (one node per line).
pub fn parse_scontrol_nodes(text: &str) -> Vec<NodeRecord> {
    text.lines()
        .filter(|l| l.starts_with("NodeName="))
        .filter_map(|l| {
            let kv = parse_kv_line(l);
            let get = |k: &str| kv.get(k).map(String::as_str).unwrap_or("");
            let cpus = get("CPUEfctv")
                .parse()
                .or_else(|_| get("CPUTot").parse())
                .unwrap_or(0);
            Some(NodeRecord {
                name: kv.get("NodeName")?.clone(),
                partitions: get("Partitions")
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect(),
                cpus,
                memory_mib: get("RealMemory").parse().unwrap_or(0),
                gpus: gres_gpus(get("Gres")),
                state: get("State").to_owned(),
                reason: get("Reason").to_owned(),
            })
        })
        .collect()
}

/// GPUs in a node's `Gres=`: `gpu:4`, `gpu:a100:4(S:0-1)`, `gpu:a100:2,gpu:v100:2` → 4;
/// `(null)` → 0.
pub fn gres_gpus(gres: &str) -> u64 {
    gres.split(',')
        .filter(|g| g.starts_with("gpu"))
        .filter_map(|g| {
            let g = g.split('(').next().unwrap_or(g);
            g.rsplit(':').next()?.parse::<u64>().ok()
        })
        .sum()
}

/// Quotes a string for `/bin/sh` (single quotes; `'` becomes `'\''`).
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// What a Suanli attempt asks of Slurm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRequest {
    pub attempt_id: String,
    pub partition: String,
    /// Tasks: one per unit bought (core, or accelerator).
    pub ntasks: u64,
    pub cpus_per_task: u64,
    /// GPUs per task (0 for CPU partitions).
    pub gpus_per_task: u64,
    /// Memory per allocated CPU, in MiB.
    pub mem_per_cpu_mib: u64,
    /// The attempt's wall-clock limit; Slurm's (minute-grained) limit is rounded up from it.
    pub time_limit_s: u64,
    pub job_dir: String,
    /// Slurm account (`--account`) and QOS to charge, when the site wants one.
    pub account: Option<String>,
    pub qos: Option<String>,
}

/// The job name Suanli gives an attempt's Slurm job (how a restarted agent finds it again).
pub fn job_name(attempt_id: &str) -> String {
    format!("suanli-{attempt_id}")
}

/// `sbatch` arguments for a request (the script path comes last).
pub fn sbatch_args(r: &BatchRequest, script: &str) -> Vec<String> {
    let minutes = r.time_limit_s.div_ceil(60).max(1);
    let mut a = vec![
        "--parsable".to_owned(),
        format!("--job-name={}", job_name(&r.attempt_id)),
        format!("--comment=suanli attempt {}", r.attempt_id),
        format!("--partition={}", r.partition),
        format!("--ntasks={}", r.ntasks.max(1)),
        format!("--cpus-per-task={}", r.cpus_per_task.max(1)),
        format!("--mem-per-cpu={}M", r.mem_per_cpu_mib.max(1)),
        format!("--time={minutes}"),
        format!("--chdir={}/{}", r.job_dir, crate::local::WORK_DIR),
        format!("--output={}/stdout.log", r.job_dir),
        format!("--error={}/stderr.log", r.job_dir),
        "--no-requeue".to_owned(),
        "--export=ALL".to_owned(),
    ];
    if r.gpus_per_task > 0 {
        a.push(format!("--gpus-per-task={}", r.gpus_per_task));
    }
    if let Some(acct) = &r.account {
        a.push(format!("--account={acct}"));
    }
    if let Some(q) = &r.qos {
        a.push(format!("--qos={q}"));
    }
    a.push(script.to_owned());
    a
}

/// The batch script: the task's environment, then setup (a failure ends the job with its code)
/// and run, each with `/bin/sh -c` in the job directory.
pub fn batch_script(
    attempt_id: &str,
    job_dir: &str,
    env: &BTreeMap<String, String>,
    setup: Option<&str>,
    run: &str,
) -> String {
    let mut s = String::from("#!/bin/sh\n");
    let _ = writeln!(s, "# Suanli attempt {attempt_id}; written by the agent.");
    let _ = writeln!(s, "cd {} || exit 1", sh_quote(job_dir));
    let _ = writeln!(s, "export SUANLI_JOB_DIR={}", sh_quote(job_dir));
    let _ = writeln!(s, "export SUANLI_ATTEMPT_ID={}", sh_quote(attempt_id));
    let _ = writeln!(s, "export TMPDIR={}", sh_quote(&format!("{job_dir}/.tmp")));
    for (k, v) in env {
        let _ = writeln!(s, "export {k}={}", sh_quote(v));
    }
    if let Some(setup) = setup.filter(|s| !s.trim().is_empty()) {
        let _ = writeln!(s, "/bin/sh -c {}", sh_quote(setup));
        s.push_str("rc=$?\nif [ $rc -ne 0 ]; then echo \"suanli: setup failed with exit code $rc\" >&2; exit $rc; fi\n");
    }
    let _ = writeln!(s, "exec /bin/sh -c {}", sh_quote(run));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from Slurm 22.05.8 (Debian 12) on this machine.
    const JOB: &str = "JobId=2182 JobName=suanli-att1 UserId=nobody(65534) GroupId=root(0) MCS_label=N/A Priority=4294899578 Nice=0 Account=(null) QOS=(null) JobState=FAILED Reason=NonZeroExitCode Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=3:0 RunTime=00:00:02 TimeLimit=00:01:00 TimeMin=N/A SubmitTime=2026-11-27T19:26:56 EligibleTime=2026-11-27T19:26:56 AccrueTime=2026-11-27T19:26:56 StartTime=1796655172 EndTime=1796655174 Deadline=N/A SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-27T19:26:59 Scheduler=Main Partition=debug AllocNode:Sid=localhost:1915 ReqNodeList=(null) ExcNodeList=(null) NodeList=vm BatchHost=vm NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,mem=100M,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryCPU=100M MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) Command=/var/tmp/st/j.sh WorkDir=/var/tmp/st StdErr=/var/tmp/st/err.log StdIn=/dev/null StdOut=/var/tmp/st/out.log Power= ";
    const NODE: &str = "NodeName=vm Arch=x86_64 CoresPerSocket=2  CPUAlloc=0 CPUEfctv=2 CPUTot=2 CPULoad=0.98 AvailableFeatures=(null) ActiveFeatures=(null) Gres=(null) NodeAddr=127.0.0.1 NodeHostName=vm Version=22.05.8 OS=Linux 6.18.44-fc-v782 #1 SMP PREEMPT_DYNAMIC @0  RealMemory=24105 AllocMem=0 FreeMem=23078 Sockets=1 Boards=1 State=IDLE ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A Partitions=debug  BootTime=2026-11-27T16:20:12 SlurmdStartTime=2026-11-27T19:26:53 LastBusyTime=2026-11-27T19:26:54 CfgTRES=cpu=2,mem=24105M,billing=2 AllocTRES= CapWatts=n/a CurrentWatts=0 AveWatts=0 ExtSensorsJoules=n/s ExtSensorsWatts=0 ExtSensorsTemp=n/s";

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0:02"), Some(2));
        assert_eq!(parse_duration("1:02:03"), Some(3723));
        assert_eq!(parse_duration("00:00:02"), Some(2));
        assert_eq!(parse_duration("2-01:00:00"), Some(2 * 86_400 + 3600));
        assert_eq!(parse_duration("1-02"), Some(86_400 + 7200));
        assert_eq!(parse_duration("1-02:03"), Some(86_400 + 7200 + 180));
        assert_eq!(parse_duration("30"), Some(1800));
        assert_eq!(parse_duration("00:00:01.234"), Some(1));
        assert_eq!(parse_duration("UNLIMITED"), None);
        assert_eq!(parse_duration("INVALID"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("1:2:3:4"), None);
    }

    #[test]
    fn states_and_exit_codes() {
        assert_eq!(SlurmState::parse("CANCELLED by 0"), SlurmState::Cancelled);
        assert_eq!(SlurmState::parse("CANCELLED+"), SlurmState::Cancelled);
        assert_eq!(SlurmState::parse("OUT_OF_MEMORY"), SlurmState::OutOfMemory);
        assert_eq!(SlurmState::parse("NODE_FAIL"), SlurmState::NodeFail);
        assert_eq!(SlurmState::parse("REQUEUE_HOLD"), SlurmState::Other);
        assert!(SlurmState::Timeout.is_terminal());
        assert!(SlurmState::Preempted.is_terminal());
        assert!(!SlurmState::Completing.is_terminal());
        assert!(SlurmState::Completing.is_started());
        assert!(!SlurmState::Pending.is_started());
        assert_eq!(parse_exit_code("3:0"), Some(3));
        assert_eq!(parse_exit_code("0:15"), Some(143));
        assert_eq!(parse_exit_code("0:0"), Some(0));
        assert_eq!(parse_exit_code("x"), None);
    }

    #[test]
    fn sbatch_output_and_errors() {
        assert_eq!(parse_sbatch_id("2182\n"), Some(2182));
        assert_eq!(parse_sbatch_id("2182;ci\n"), Some(2182));
        assert_eq!(parse_sbatch_id(""), None);
        assert_eq!(
            sbatch_error("sbatch: error: Batch job submission failed: Requested node configuration is not available\n"),
            "Requested node configuration is not available"
        );
        assert_eq!(
            sbatch_error("sbatch: error: invalid partition specified: nosuch\nsbatch: error: Batch job submission failed: Invalid partition name specified\n"),
            "Invalid partition name specified"
        );
        assert!(is_transient_error("sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)"));
        assert!(!is_transient_error(
            "Batch job submission failed: Invalid partition name specified"
        ));
    }

    #[test]
    fn unrunnable_reasons() {
        for r in [
            "PartitionTimeLimit",
            "PartitionNodeLimit",
            "PartitionConfig",
            "BadConstraints",
            "InvalidQOS",
            "QOSMaxCpuPerJobLimit",
        ] {
            assert!(is_unrunnable_reason(r), "{r}");
        }
        for r in [
            "Resources",
            "Priority",
            "None",
            "ReqNodeNotAvail",
            "PartitionDown",
            "BeginTime",
            "QOSMaxCpuPerUserLimit",
        ] {
            assert!(!is_unrunnable_reason(r), "{r}");
        }
    }

    #[test]
    fn scontrol_job_line() {
        let j = parse_scontrol_job(JOB).unwrap();
        assert_eq!(j.job_id, 2182);
        assert_eq!(j.state, SlurmState::Failed);
        assert_eq!(j.reason, "NonZeroExitCode");
        assert_eq!(j.exit_code, Some(3));
        assert_eq!(j.elapsed_s, 2);
        assert_eq!(
            (j.started_s, j.ended_s),
            (Some(1796655172), Some(1796655174))
        );
        assert_eq!(j.cpus, 1);
        assert_eq!(j.gpus, 0);
        assert_eq!(j.nodes, "vm");
        // GPUs asked per task, as Slurm 22.05 shows them without gres/gpu accounting.
        let gpu_job = JOB.replace("NumTasks=1", "NumTasks=2").replace(
            "Partition=debug",
            "Partition=gpu TresPerTask=gres:gpu:1 MemPerTres=gres:gpu:100",
        );
        assert_eq!(parse_scontrol_job(&gpu_job).unwrap().gpus, 2);
        let per_node = JOB.replace("NumNodes=1", "NumNodes=2 TresPerNode=gres:gpu:a100:4");
        assert_eq!(parse_scontrol_job(&per_node).unwrap().gpus, 8);
        let accounted = JOB.replace("billing=1", "billing=1,gres/gpu=3");
        assert_eq!(parse_scontrol_job(&accounted).unwrap().gpus, 3);
        let kv = parse_kv_line(JOB);
        assert_eq!(kv["AllocNode:Sid"], "localhost:1915");
        assert_eq!(kv["CPUs/Task"], "1");
        assert_eq!(kv["Power"], "");
    }

    #[test]
    fn scontrol_node_lines() {
        let nodes = parse_scontrol_nodes(NODE);
        assert_eq!(nodes.len(), 1);
        let n = &nodes[0];
        assert_eq!(n.name, "vm");
        assert_eq!(n.partitions, vec!["debug".to_owned()]);
        assert_eq!((n.cpus, n.memory_mib, n.gpus), (2, 24105, 0));
        assert!(n.sellable());
        assert_eq!(
            parse_kv_line(NODE)["OS"],
            "Linux 6.18.44-fc-v782 #1 SMP PREEMPT_DYNAMIC @0"
        );
        let drained = NODE.replace(
            "State=IDLE",
            "State=IDLE+DRAIN Reason=maintenance [root@2026-11-27T19:00:00]",
        );
        let d = &parse_scontrol_nodes(&drained)[0];
        assert!(!d.sellable());
        assert_eq!(d.reason, "maintenance [root@2026-11-27T19:00:00]");
        for (state, ok) in [
            ("MIXED", true),
            ("ALLOCATED", true),
            ("DOWN*", false),
            ("IDLE*", false),
            ("DOWN+NOT_RESPONDING", false),
            ("DRAINED", false),
            ("MIXED+DRAIN", false),
            ("IDLE+POWERED_DOWN", false),
            ("IDLE+CLOUD", true),
        ] {
            let n = NodeRecord {
                state: state.into(),
                ..n.clone()
            };
            assert_eq!(n.sellable(), ok, "{state}");
        }
        assert_eq!(gres_gpus("gpu:a100:4(S:0-1)"), 4);
        assert_eq!(gres_gpus("gpu:a100:2,gpu:v100:2"), 4);
        assert_eq!(gres_gpus("gpu:8"), 8);
        assert_eq!(gres_gpus("(null)"), 0);
    }

    #[test]
    fn squeue_and_sacct_lines() {
        let q = parse_squeue_line("2182|PENDING|Resources|0:00|2").unwrap();
        assert_eq!(
            (q.job_id, q.state, q.reason.as_str(), q.elapsed_s, q.cpus),
            (2182, SlurmState::Pending, "Resources", 0, 2)
        );
        assert!(parse_squeue_line("garbage").is_none());
        let s = parse_sacct_line("2182|FAILED|3:0|00:00:02|1|vm|1796655172|1796655174").unwrap();
        assert_eq!(
            (s.state, s.exit_code, s.elapsed_s, s.cpus),
            (SlurmState::Failed, Some(3), 2, 1)
        );
        assert_eq!(
            (s.started_s, s.ended_s),
            (Some(1796655172), Some(1796655174))
        );
        let s = parse_sacct_line(
            "77|COMPLETED|0:0|00:01:00|8|billing=8,cpu=8,gres/gpu=2,mem=16G,node=1|gpu01|Unknown|Unknown",
        )
        .unwrap();
        assert_eq!((s.elapsed_s, s.cpus, s.gpus), (60, 8, 2));
        assert_eq!((s.started_s, s.ended_s), (None, None));
        assert!(parse_sacct_line("77.batch|COMPLETED|0:0|00:01:00|8||gpu01|1|2").is_none());
    }

    #[test]
    fn sbatch_arguments_and_script() {
        let r = BatchRequest {
            attempt_id: "att_1".into(),
            partition: "debug".into(),
            ntasks: 4,
            cpus_per_task: 1,
            gpus_per_task: 0,
            mem_per_cpu_mib: 2048,
            time_limit_s: 61,
            job_dir: "/shared/jobs/att_1".into(),
            account: Some("suanli".into()),
            qos: None,
        };
        let a = sbatch_args(&r, "/shared/jobs/att_1/.suanli-job.sh");
        assert!(a.contains(&"--ntasks=4".to_owned()));
        assert!(
            a.contains(&"--time=2".to_owned()),
            "61 s rounds up to 2 minutes"
        );
        assert!(a.contains(&"--mem-per-cpu=2048M".to_owned()));
        assert!(a.contains(&"--account=suanli".to_owned()));
        assert!(a.contains(&"--job-name=suanli-att_1".to_owned()));
        assert!(!a.iter().any(|x| x.starts_with("--gpus")));
        assert_eq!(a.last().unwrap(), "/shared/jobs/att_1/.suanli-job.sh");
        let g = sbatch_args(
            &BatchRequest {
                gpus_per_task: 1,
                ..r
            },
            "s",
        );
        assert!(g.contains(&"--gpus-per-task=1".to_owned()));

        let env = BTreeMap::from([("GREETING".to_owned(), "it's".to_owned())]);
        let s = batch_script("att_1", "/j", &env, Some("make"), "echo 'hi'");
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(s.contains("export GREETING='it'\\''s'\n"));
        assert!(s.contains("/bin/sh -c 'make'\n"));
        assert!(s.contains("exec /bin/sh -c 'echo '\\''hi'\\'''\n"));
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(batch_script(
                "a",
                "/",
                &env,
                None,
                "printf '%s' \"$GREETING\"",
            ))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "it's");
    }
}
