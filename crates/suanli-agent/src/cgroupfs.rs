//! Where this process sits in the cgroup hierarchies: `/proc/self/mountinfo` and
//! `/proc/self/cgroup`, parsed by pure functions. Shared by `capacity` (quotas that limit the whole
//! machine as seen by the agent) and `local` (per-job cgroups).

use std::path::{Path, PathBuf};

/// One mounted cgroup hierarchy and this process's place in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hierarchy {
    /// `true` for the unified (v2) hierarchy.
    pub v2: bool,
    /// v1 controllers of this hierarchy (`memory`, `cpu`, `cpuacct`, `pids`, …); empty for v2.
    pub controllers: Vec<String>,
    /// Where it is mounted, e.g. `/sys/fs/cgroup/memory`.
    pub mount: PathBuf,
    /// This process's cgroup as a directory under the mount.
    pub own_dir: PathBuf,
}

impl Hierarchy {
    pub fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }

    /// `own_dir` and its ancestors up to the mount, nearest first.
    pub fn own_and_ancestors(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut dir = self.own_dir.clone();
        loop {
            out.push(dir.clone());
            if dir == self.mount || !dir.pop() || !dir.starts_with(&self.mount) {
                break;
            }
        }
        out
    }
}

/// A cgroup mount from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupMount {
    pub v2: bool,
    /// The mount's root inside the hierarchy (usually `/`).
    pub root: String,
    pub mount_point: PathBuf,
    /// v1 controllers named in the super options.
    pub controllers: Vec<String>,
}

/// Unescapes the octal escapes (`\040` for a space) that mountinfo uses.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let digits = &b[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let v = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses the cgroup and cgroup2 mounts out of `/proc/self/mountinfo`.
pub(crate) fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 5 || r.len() < 3 {
            continue;
        }
        let fstype = r[0];
        let v2 = match fstype {
            "cgroup2" => true,
            "cgroup" => false,
            _ => continue,
        };
        let controllers = if v2 {
            Vec::new()
        } else {
            r[2].split(',')
                .filter(|o| {
                    o.starts_with("name=")
                        || !(o.contains('=')
                            || matches!(
                                *o,
                                "rw" | "ro"
                                    | "xattr"
                                    | "noprefix"
                                    | "clone_children"
                                    | "cpuset_v2_mode"
                                    | "favordynmods"
                            ))
                })
                .map(str::to_owned)
                .collect()
        };
        out.push(CgroupMount {
            v2,
            root: unescape_mountinfo(l[3]),
            mount_point: PathBuf::from(unescape_mountinfo(l[4])),
            controllers,
        });
    }
    out
}

/// One line of `/proc/self/cgroup`: hierarchy id, controllers (empty for v2), path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Membership {
    pub id: u32,
    pub controllers: Vec<String>,
    pub path: String,
}

pub(crate) fn parse_proc_cgroup(text: &str) -> Vec<Membership> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let id = parts.next()?.parse().ok()?;
            let controllers = parts.next()?;
            let path = parts.next()?.to_owned();
            let controllers = controllers
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect();
            Some(Membership {
                id,
                controllers,
                path,
            })
        })
        .collect()
}

/// Joins a mount with a cgroup path, taking the mount's root into account.
fn own_dir(mount: &CgroupMount, path: &str) -> PathBuf {
    let rel = if mount.root != "/" {
        path.strip_prefix(mount.root.as_str()).unwrap_or(path)
    } else {
        path
    };
    let rel = rel.trim_start_matches('/');
    if rel.is_empty() {
        mount.mount_point.clone()
    } else {
        mount.mount_point.join(rel)
    }
}

/// Combines the mounts with the memberships into hierarchies (pure).
pub(crate) fn hierarchies_from(mounts: &[CgroupMount], members: &[Membership]) -> Vec<Hierarchy> {
    let mut out = Vec::new();
    for m in members {
        if m.id == 0 && m.controllers.is_empty() {
            if let Some(mount) = mounts.iter().find(|x| x.v2) {
                out.push(Hierarchy {
                    v2: true,
                    controllers: Vec::new(),
                    mount: mount.mount_point.clone(),
                    own_dir: own_dir(mount, &m.path),
                });
            }
            continue;
        }
        // A v1 hierarchy is found by its exact controller set.
        let found = mounts.iter().find(|x| {
            !x.v2
                && x.controllers.len() == m.controllers.len()
                && m.controllers.iter().all(|c| x.controllers.contains(c))
        });
        if let Some(mount) = found {
            out.push(Hierarchy {
                v2: false,
                controllers: m.controllers.clone(),
                mount: mount.mount_point.clone(),
                own_dir: own_dir(mount, &m.path),
            });
        }
    }
    out
}

/// This process's cgroup hierarchies, read from `/proc/self`.
pub(crate) fn hierarchies() -> Vec<Hierarchy> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    hierarchies_from(&parse_mountinfo(&mountinfo), &parse_proc_cgroup(&cgroup))
}

/// Reads a file of one value, trimmed.
pub(crate) fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Reads a `key value` line from a flat-keyed file (`memory.events`, `cpu.stat`, `oom_control`).
pub(crate) fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()? == key).then_some(())?;
        it.next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
";
    const HYBRID_CGROUP: &str = "\
9:name=systemd:/
8:pids:/
4:memory:/process_api/1ea2
2:cpuacct:/
1:cpu:/
0::/
";

    #[test]
    fn hybrid_v1_hierarchies() {
        let mounts = parse_mountinfo(HYBRID_MOUNTINFO);
        assert_eq!(mounts.len(), 6);
        assert_eq!(mounts[4].controllers, vec!["name=systemd"]);
        let h = hierarchies_from(&mounts, &parse_proc_cgroup(HYBRID_CGROUP));
        let mem = h.iter().find(|h| h.has("memory")).unwrap();
        assert_eq!(
            mem.own_dir,
            PathBuf::from("/sys/fs/cgroup/memory/process_api/1ea2")
        );
        assert_eq!(
            mem.own_and_ancestors(),
            vec![
                PathBuf::from("/sys/fs/cgroup/memory/process_api/1ea2"),
                PathBuf::from("/sys/fs/cgroup/memory/process_api"),
                PathBuf::from("/sys/fs/cgroup/memory"),
            ]
        );
        let pids = h.iter().find(|h| h.has("pids")).unwrap();
        assert_eq!(pids.own_dir, PathBuf::from("/sys/fs/cgroup/pids"));
        let v2 = h.iter().find(|h| h.v2).unwrap();
        assert_eq!(v2.mount, PathBuf::from("/sys/fs/cgroup/unified"));
    }

    #[test]
    fn comounted_cpu_cpuacct_and_pure_v2() {
        let mounts = parse_mountinfo(
            "30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
             28 22 0:24 /docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n",
        );
        let h = hierarchies_from(
            &mounts,
            &parse_proc_cgroup("3:cpu,cpuacct:/x/y\n5:memory:/docker/abc\n"),
        );
        assert_eq!(h.len(), 2);
        assert!(h[0].has("cpu") && h[0].has("cpuacct"));
        assert_eq!(
            h[0].own_dir,
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/x/y")
        );
        assert_eq!(h[1].own_dir, PathBuf::from("/sys/fs/cgroup/memory"));

        let v2 = parse_mountinfo(
            "25 22 0:23 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n",
        );
        let h = hierarchies_from(
            &v2,
            &parse_proc_cgroup("0::/system.slice/suanli-agent.service\n"),
        );
        assert_eq!(
            h,
            vec![Hierarchy {
                v2: true,
                controllers: vec![],
                mount: PathBuf::from("/sys/fs/cgroup"),
                own_dir: PathBuf::from("/sys/fs/cgroup/system.slice/suanli-agent.service"),
            }]
        );
    }

    #[test]
    fn escapes_and_keyed_values() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
        assert_eq!(unescape_mountinfo(r"/a\b"), r"/a\b");
        let events = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\n";
        assert_eq!(keyed_value(events, "oom_kill"), Some(2));
        assert_eq!(keyed_value(events, "oom"), Some(3));
        assert_eq!(keyed_value(events, "nope"), None);
    }
}
