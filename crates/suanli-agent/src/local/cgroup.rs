//! Per-job cgroups, v2 or v1.
//!
//! Each attempt gets its own cgroup under a `suanli` parent next to the agent's own cgroup:
//! v2 `…/suanli/<name>` with `memory.max`, `memory.swap.max`, `cpu.max`, `pids.max`; v1 one such
//! directory in each of the `memory`, `pids`, `cpu` and `cpuacct` hierarchies with
//! `memory.limit_in_bytes`, `cpu.cfs_quota_us`, `pids.max`. Usage is read back for metering
//! (v2 `memory.peak`, `cpu.stat usage_usec`; v1 `memory.max_usage_in_bytes`, `cpuacct.usage`) and
//! OOM kills are counted (v2 `memory.events oom_kill`; v1 `memory.oom_control oom_kill`).

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cgroupfs::{self, keyed_value, read_trimmed};

const PARENT: &str = "suanli";
const CFS_PERIOD_US: u64 = 100_000;

/// Where this agent may create per-job cgroups (the `suanli` parents).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CgroupSetup {
    V2 {
        parent: PathBuf,
        cpu: bool,
    },
    V1 {
        memory: PathBuf,
        pids: PathBuf,
        cpu: Option<PathBuf>,
        cpuacct: Option<PathBuf>,
    },
}

impl CgroupSetup {
    pub fn version(&self) -> &'static str {
        match self {
            CgroupSetup::V2 { .. } => "v2",
            CgroupSetup::V1 { .. } => "v1",
        }
    }

    /// The controllers that limit jobs, for the report.
    pub fn controllers(&self) -> Vec<&'static str> {
        let cpu = match self {
            CgroupSetup::V2 { cpu, .. } => *cpu,
            CgroupSetup::V1 { cpu, .. } => cpu.is_some(),
        };
        let mut c = vec!["memory"];
        if cpu {
            c.push("cpu");
        }
        c.push("pids");
        c
    }
}

/// What probing found: a usable setup, and why not when there is none.
pub(crate) struct Probe {
    pub setup: Option<CgroupSetup>,
    pub notes: Vec<String>,
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    std::fs::write(path, value)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// Creates `dir` (if needed) and checks that a child cgroup can be created and removed in it.
fn prepare_parent(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = dir.join(format!("probe-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir(&probe);
    std::fs::create_dir(&probe)?;
    std::fs::remove_dir(&probe)
}

/// Finds where per-job cgroups can be made: v2 when the unified hierarchy has the memory and
/// pids controllers, else v1 when the memory and pids hierarchies are writable.
pub(crate) fn probe() -> Probe {
    let hierarchies = cgroupfs::hierarchies();
    let mut notes = Vec::new();

    if let Some(h) = hierarchies.iter().find(|h| h.v2) {
        let available = read_trimmed(&h.own_dir.join("cgroup.controllers")).unwrap_or_default();
        let has = |c: &str| available.split_whitespace().any(|x| x == c);
        if has("memory") && has("pids") {
            match prepare_v2(&h.own_dir, &h.mount, has("cpu")) {
                Ok(setup) => {
                    return Probe {
                        setup: Some(setup),
                        notes,
                    }
                }
                Err(e) => notes.push(format!(
                    "cgroup v2 at {} unusable: {e}",
                    h.own_dir.display()
                )),
            }
        } else if hierarchies.iter().all(|h| h.v2) {
            notes.push(format!(
                "cgroup v2 at {} lacks the memory/pids controllers (has: {})",
                h.own_dir.display(),
                if available.is_empty() {
                    "none"
                } else {
                    &available
                }
            ));
        }
    }

    let find = |c: &str| hierarchies.iter().find(|h| !h.v2 && h.has(c));
    let (Some(memory), Some(pids)) = (find("memory"), find("pids")) else {
        if hierarchies.iter().any(|h| !h.v2) {
            notes.push("cgroup v1 lacks the memory or pids hierarchy".into());
        } else if hierarchies.is_empty() {
            notes.push("no cgroup hierarchy is mounted".into());
        }
        return Probe { setup: None, notes };
    };
    let memory_parent = memory.own_dir.join(PARENT);
    let pids_parent = pids.own_dir.join(PARENT);
    for dir in [&memory_parent, &pids_parent] {
        if let Err(e) = prepare_parent(dir) {
            notes.push(format!("cgroup v1 not writable at {}: {e}", dir.display()));
            return Probe { setup: None, notes };
        }
    }
    let optional = |c: &str| {
        let dir = find(c)?.own_dir.join(PARENT);
        match prepare_parent(&dir) {
            Ok(()) => Some(dir),
            Err(e) => {
                tracing::warn!("cgroup v1 {c} not writable at {}: {e}", dir.display());
                None
            }
        }
    };
    let cpu = optional("cpu");
    let cpuacct = optional("cpuacct");
    if cpu.is_none() {
        notes.push("cgroup v1 cpu controller unavailable: CPU use is not capped".into());
    }
    Probe {
        setup: Some(CgroupSetup::V1 {
            memory: memory_parent,
            pids: pids_parent,
            cpu,
            cpuacct,
        }),
        notes,
    }
}

/// Prepares `own/suanli` on v2 with the controllers enabled for its children.
///
/// The v2 "no internal processes" rule forbids enabling controllers for children of a cgroup
/// that holds processes (except the root). When the agent is alone in its cgroup (a systemd unit
/// with `Delegate=yes`), it moves itself into a leaf `own/agent` first, as container runtimes do.
fn prepare_v2(own: &Path, mount: &Path, cpu: bool) -> io::Result<CgroupSetup> {
    let mut controllers = vec!["memory", "pids"];
    if cpu {
        controllers.push("cpu");
    }
    let enable = |dir: &Path| -> io::Result<()> {
        let control = dir.join("cgroup.subtree_control");
        let enabled = read_trimmed(&control).unwrap_or_default();
        for c in &controllers {
            if !enabled.split_whitespace().any(|x| x == *c) {
                write(&control, &format!("+{c}"))?;
            }
        }
        Ok(())
    };
    if let Err(e) = enable(own) {
        let procs = read_trimmed(&own.join("cgroup.procs")).unwrap_or_default();
        let me = std::process::id().to_string();
        let only_me = procs.lines().all(|p| p.trim() == me);
        if own == mount || !only_me {
            return Err(io::Error::new(
                e.kind(),
                format!("{e} (run the agent in a delegated cgroup of its own)"),
            ));
        }
        let leaf = own.join("agent");
        std::fs::create_dir_all(&leaf)?;
        write(&leaf.join("cgroup.procs"), &me)?;
        enable(own)?;
    }
    let parent = own.join(PARENT);
    std::fs::create_dir_all(&parent)?;
    enable(&parent)?;
    prepare_parent(&parent)?;
    Ok(CgroupSetup::V2 { parent, cpu })
}

/// Limits written into a job's cgroup; `None` is no limit.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Limits {
    pub memory_bytes: Option<u64>,
    pub cpus: Option<u64>,
    pub pids: Option<u64>,
}

/// One job's cgroup (persisted in `attempt.json` so a restarted agent finds it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "version")]
pub(crate) enum JobCgroup {
    #[serde(rename = "v2")]
    V2 { dir: PathBuf },
    #[serde(rename = "v1")]
    V1 {
        memory: PathBuf,
        pids: PathBuf,
        cpu: Option<PathBuf>,
        cpuacct: Option<PathBuf>,
    },
}

impl CgroupSetup {
    /// Creates the job's cgroup `name` with its limits.
    pub fn create_job(&self, name: &str, limits: &Limits) -> io::Result<JobCgroup> {
        let cg = match self {
            CgroupSetup::V2 { parent, .. } => JobCgroup::V2 {
                dir: parent.join(name),
            },
            CgroupSetup::V1 {
                memory,
                pids,
                cpu,
                cpuacct,
            } => JobCgroup::V1 {
                memory: memory.join(name),
                pids: pids.join(name),
                cpu: cpu.as_ref().map(|d| d.join(name)),
                cpuacct: cpuacct.as_ref().map(|d| d.join(name)),
            },
        };
        let mut created = Vec::new();
        let result = (|| {
            for d in cg.dirs() {
                std::fs::create_dir(d)?;
                created.push(d.to_owned());
            }
            cg.set_limits(limits)
        })();
        if let Err(e) = result {
            for d in created.iter().rev() {
                let _ = std::fs::remove_dir(d);
            }
            return Err(e);
        }
        Ok(cg)
    }
}

impl JobCgroup {
    /// The distinct directories (v1 `cpu` and `cpuacct` may be one hierarchy).
    pub fn dirs(&self) -> Vec<&Path> {
        let mut out: Vec<&Path> = Vec::new();
        let all: Vec<&Path> = match self {
            JobCgroup::V2 { dir } => vec![dir],
            JobCgroup::V1 {
                memory,
                pids,
                cpu,
                cpuacct,
            } => [Some(memory), Some(pids), cpu.as_ref(), cpuacct.as_ref()]
                .into_iter()
                .flatten()
                .map(PathBuf::as_path)
                .collect(),
        };
        for d in all {
            if !out.contains(&d) {
                out.push(d);
            }
        }
        out
    }

    fn set_limits(&self, limits: &Limits) -> io::Result<()> {
        match self {
            JobCgroup::V2 { dir } => {
                if let Some(b) = limits.memory_bytes {
                    write(&dir.join("memory.max"), &b.to_string())?;
                    if dir.join("memory.swap.max").exists() {
                        write(&dir.join("memory.swap.max"), "0")?;
                    }
                    // On OOM kill the whole job, not just its largest process.
                    let _ = write(&dir.join("memory.oom.group"), "1");
                }
                if let Some(c) = limits.cpus {
                    if dir.join("cpu.max").exists() {
                        write(
                            &dir.join("cpu.max"),
                            &format!("{} {CFS_PERIOD_US}", c.saturating_mul(CFS_PERIOD_US)),
                        )?;
                    }
                }
                if let Some(p) = limits.pids {
                    write(&dir.join("pids.max"), &p.to_string())?;
                }
            }
            JobCgroup::V1 {
                memory, pids, cpu, ..
            } => {
                if let Some(b) = limits.memory_bytes {
                    write(&memory.join("memory.limit_in_bytes"), &b.to_string())?;
                    // With swap accounting, memory + swap gets the same limit (no swapping out).
                    let memsw = memory.join("memory.memsw.limit_in_bytes");
                    if memsw.exists() {
                        let _ = write(&memsw, &b.to_string());
                    }
                }
                if let (Some(c), Some(cpu)) = (limits.cpus, cpu) {
                    write(&cpu.join("cpu.cfs_period_us"), &CFS_PERIOD_US.to_string())?;
                    write(
                        &cpu.join("cpu.cfs_quota_us"),
                        &(c * CFS_PERIOD_US).to_string(),
                    )?;
                }
                if let Some(p) = limits.pids {
                    write(&pids.join("pids.max"), &p.to_string())?;
                }
            }
        }
        Ok(())
    }

    /// Moves a process (all its threads) into the job's cgroup.
    pub fn add_pid(&self, pid: u32) -> io::Result<()> {
        for d in self.dirs() {
            write(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// The processes in the cgroup.
    pub fn pids(&self) -> Vec<i32> {
        let mut out = Vec::new();
        for d in self.dirs() {
            if let Ok(text) = std::fs::read_to_string(d.join("cgroup.procs")) {
                for p in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    if !out.contains(&p) {
                        out.push(p);
                    }
                }
            }
        }
        out
    }

    /// Whether `pid` is a member, per `/proc/<pid>/cgroup`.
    pub fn contains(&self, pid: i32) -> bool {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
            return false;
        };
        let suffix = match self {
            JobCgroup::V2 { dir } | JobCgroup::V1 { memory: dir, .. } => dir
                .file_name()
                .map(|n| format!("/{PARENT}/{}", n.to_string_lossy()))
                .unwrap_or_default(),
        };
        !suffix.is_empty() && text.lines().any(|l| l.ends_with(&suffix))
    }

    pub fn exists(&self) -> bool {
        self.dirs().iter().any(|d| d.exists())
    }

    /// CPU time used, in milliseconds.
    pub fn cpu_ms(&self) -> Option<u64> {
        match self {
            JobCgroup::V2 { dir } => {
                let stat = std::fs::read_to_string(dir.join("cpu.stat")).ok()?;
                keyed_value(&stat, "usage_usec").map(|us| us / 1000)
            }
            JobCgroup::V1 { cpuacct, .. } => {
                let ns: u64 = read_trimmed(&cpuacct.as_ref()?.join("cpuacct.usage"))?
                    .parse()
                    .ok()?;
                Some(ns / 1_000_000)
            }
        }
    }

    /// The highest memory use seen, in bytes (when the kernel records it).
    pub fn peak_bytes(&self) -> Option<u64> {
        let file = match self {
            JobCgroup::V2 { dir } => dir.join("memory.peak"),
            JobCgroup::V1 { memory, .. } => memory.join("memory.max_usage_in_bytes"),
        };
        read_trimmed(&file)?.parse().ok()
    }

    /// The memory in use now, in bytes.
    pub fn current_bytes(&self) -> Option<u64> {
        let file = match self {
            JobCgroup::V2 { dir } => dir.join("memory.current"),
            JobCgroup::V1 { memory, .. } => memory.join("memory.usage_in_bytes"),
        };
        read_trimmed(&file)?.parse().ok()
    }

    /// How many processes the kernel's OOM killer killed in this cgroup.
    pub fn oom_kills(&self) -> u64 {
        match self {
            JobCgroup::V2 { dir } => std::fs::read_to_string(dir.join("memory.events"))
                .ok()
                .and_then(|t| keyed_value(&t, "oom_kill"))
                .unwrap_or(0),
            JobCgroup::V1 { memory, .. } => {
                std::fs::read_to_string(memory.join("memory.oom_control"))
                    .ok()
                    .and_then(|t| keyed_value(&t, "oom_kill"))
                    .unwrap_or(0)
            }
        }
    }

    /// How often the memory limit was hit (v1 `memory.failcnt`, v2 `memory.events max`).
    pub fn limit_hits(&self) -> u64 {
        match self {
            JobCgroup::V2 { dir } => std::fs::read_to_string(dir.join("memory.events"))
                .ok()
                .and_then(|t| keyed_value(&t, "max"))
                .unwrap_or(0),
            JobCgroup::V1 { memory, .. } => read_trimmed(&memory.join("memory.failcnt"))
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
        }
    }

    /// v2 `cgroup.kill` (kernel 5.14+): SIGKILL to every process at once. `false` when absent.
    pub fn kill_switch(&self) -> bool {
        match self {
            JobCgroup::V2 { dir } => {
                let f = dir.join("cgroup.kill");
                f.exists() && write(&f, "1").is_ok()
            }
            JobCgroup::V1 { .. } => false,
        }
    }

    /// Removes the (empty) cgroup directories. Fails with `EBUSY` while processes remain.
    pub fn remove(&self) -> io::Result<()> {
        let mut first_err = None;
        for d in self.dirs() {
            match std::fs::remove_dir(d) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Checks a record read back from disk: every directory must be a child of a `suanli`
    /// parent inside a mounted cgroup hierarchy, all with the same name. Guards against a job
    /// that rewrote its `attempt.json` to make the agent kill processes elsewhere.
    pub fn is_plausible(&self) -> bool {
        let mounts: Vec<PathBuf> = cgroupfs::parse_mountinfo(
            &std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
        )
        .into_iter()
        .map(|m| m.mount_point)
        .collect();
        let dirs = self.dirs();
        let name = dirs.first().and_then(|d| d.file_name());
        dirs.iter().all(|d| {
            let ok_parent = d
                .parent()
                .and_then(Path::file_name)
                .is_some_and(|n| n == PARENT);
            let no_dots = d.components().all(|c| {
                matches!(
                    c,
                    std::path::Component::RootDir | std::path::Component::Normal(_)
                )
            });
            ok_parent
                && no_dots
                && d.file_name() == name
                && mounts.iter().any(|m| d.starts_with(m) && d != m)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_dirs_dedupe_and_plausibility() {
        let cg = JobCgroup::V1 {
            memory: "/sys/fs/cgroup/memory/a/suanli/j1".into(),
            pids: "/sys/fs/cgroup/pids/suanli/j1".into(),
            cpu: Some("/sys/fs/cgroup/cpu,cpuacct/suanli/j1".into()),
            cpuacct: Some("/sys/fs/cgroup/cpu,cpuacct/suanli/j1".into()),
        };
        assert_eq!(cg.dirs().len(), 3);
        let json = serde_json::to_string(&cg).unwrap();
        assert!(json.contains("\"version\":\"v1\""));
        assert_eq!(serde_json::from_str::<JobCgroup>(&json).unwrap(), cg);

        let evil = JobCgroup::V2 {
            dir: "/sys/fs/cgroup".into(),
        };
        assert!(!evil.is_plausible());
        let evil = JobCgroup::V2 {
            dir: "/sys/fs/cgroup/suanli/../x".into(),
        };
        assert!(!evil.is_plausible());
        let evil = JobCgroup::V2 {
            dir: "/tmp/suanli/x".into(),
        };
        assert!(!evil.is_plausible());
    }
}
