//! `/proc` readers and signal sending, without `unsafe`: signals go through the shell's `kill`
//! builtin (`/bin/sh -c 'kill -s SIG -- PID… -PGID…'`), which is always present where jobs run.

use std::process::Stdio;

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, 100 on every Linux ABI).
pub(crate) const CLK_TCK: u64 = 100;

/// The fields of `/proc/<pid>/stat` the backend uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub pid: i32,
    pub comm: String,
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    pub utime: u64,
    pub stime: u64,
    pub cutime: u64,
    pub cstime: u64,
    pub starttime: u64,
}

impl ProcStat {
    /// Exited (zombie or dead): no longer runs, whatever `/proc` still shows.
    pub fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }

    /// CPU ticks of the process and of its waited-for children.
    pub fn total_ticks(&self) -> u64 {
        self.utime + self.stime + self.cutime + self.cstime
    }
}

/// Parses one `/proc/<pid>/stat` line. `comm` is in parentheses and may itself contain spaces
/// and parentheses, so the fields are counted from the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let comm = text[open + 1..close].to_owned();
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // rest[0] is field 3 (state); field N is rest[N - 3].
    let field = |n: usize| -> Option<&str> { rest.get(n - 3).copied() };
    let num = |n: usize| -> Option<u64> { field(n)?.parse().ok() };
    let inum = |n: usize| -> Option<i64> { field(n)?.parse().ok() };
    Some(ProcStat {
        pid,
        comm,
        state: field(3)?.chars().next()?,
        ppid: i32::try_from(inum(4)?).ok()?,
        pgrp: i32::try_from(inum(5)?).ok()?,
        utime: num(14)?,
        stime: num(15)?,
        cutime: u64::try_from(inum(16)?).unwrap_or(0),
        cstime: u64::try_from(inum(17)?).unwrap_or(0),
        starttime: num(22)?,
    })
}

pub(crate) fn read_stat(pid: i32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Every process visible in `/proc`.
pub(crate) fn all_stats() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let name = e.ok()?.file_name();
        let pid: i32 = name.to_str()?.parse().ok()?;
        read_stat(pid)
    })
    .collect()
}

/// The live descendants of `root` (not `root` itself), following parent links.
pub(crate) fn descendants(root: i32, stats: &[ProcStat]) -> Vec<i32> {
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for s in stats.iter().filter(|s| s.ppid == p && !s.is_dead()) {
            if !out.contains(&s.pid) && s.pid != root {
                out.push(s.pid);
                frontier.push(s.pid);
            }
        }
    }
    out
}

/// `argv` of a process.
pub(crate) fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `pid` still runs and is the process that started at `starttime` (not a reused pid).
pub(crate) fn alive(pid: i32, starttime: u64) -> bool {
    read_stat(pid).is_some_and(|s| !s.is_dead() && s.starttime == starttime)
}

/// Resident memory of a process in KiB.
pub(crate) fn rss_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        let v = l.strip_prefix("VmRSS:")?;
        v.split_whitespace().next()?.parse().ok()
    })
}

/// This process's effective uid, from `/proc/self/status`.
pub(crate) fn euid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                let ids = l.strip_prefix("Uid:")?;
                ids.split_whitespace().nth(1)?.parse().ok()
            })
        })
        .unwrap_or(u32::MAX)
}

/// Looks a user up in `/etc/passwd`: (uid, gid).
pub(crate) fn lookup_user(name: &str) -> Option<(u32, u32)> {
    parse_passwd(&std::fs::read_to_string("/etc/passwd").ok()?, name)
}

pub(crate) fn parse_passwd(text: &str, name: &str) -> Option<(u32, u32)> {
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[0] == name).then_some(())?;
        Some((f[2].parse().ok()?, f[3].parse().ok()?))
    })
}

/// The user name of a uid, for reports.
pub(crate) fn user_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() >= 3 && f[2] == uid.to_string()).then(|| f[0].to_owned())
            })
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// A signal target: one process or a whole process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Pid(i32),
    Group(i32),
}

/// Sends `sig` (`TERM`, `KILL`) to the targets; processes already gone are ignored.
pub(crate) async fn signal(sig: &str, targets: &[Target]) {
    let args: Vec<String> = targets
        .iter()
        .filter_map(|t| match *t {
            Target::Pid(p) if p > 1 => Some(p.to_string()),
            Target::Group(g) if g > 1 => Some(format!("-{g}")),
            _ => None,
        })
        .collect();
    if args.is_empty() {
        return;
    }
    let result = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg("kill -s \"$0\" -- \"$@\" 2>/dev/null")
        .arg(sig)
        .args(&args)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    if let Err(e) = result {
        tracing::warn!("sending SIG{sig}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_comm() {
        let line = "4242 (my (odd) prog) S 4200 4242 4242 0 -1 4194560 100 0 0 0 \
                    7 3 11 2 20 0 1 0 987654 10000000 300 18446744073709551615";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.pid, 4242);
        assert_eq!(s.comm, "my (odd) prog");
        assert_eq!(s.state, 'S');
        assert_eq!((s.ppid, s.pgrp), (4200, 4242));
        assert_eq!((s.utime, s.stime, s.cutime, s.cstime), (7, 3, 11, 2));
        assert_eq!(s.starttime, 987654);
        assert_eq!(s.total_ticks(), 23);
        assert!(!s.is_dead());
    }

    #[test]
    fn descendants_follow_parents() {
        let mk = |pid, ppid, state| ProcStat {
            pid,
            comm: "x".into(),
            state,
            ppid,
            pgrp: 1,
            utime: 0,
            stime: 0,
            cutime: 0,
            cstime: 0,
            starttime: 0,
        };
        let stats = vec![
            mk(10, 1, 'S'),
            mk(11, 10, 'S'),
            mk(12, 11, 'R'),
            mk(13, 10, 'Z'),
            mk(14, 1, 'S'),
        ];
        let mut d = descendants(10, &stats);
        d.sort();
        assert_eq!(d, vec![11, 12]);
    }

    #[test]
    fn passwd_lookup() {
        let t = "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
        assert_eq!(parse_passwd(t, "nobody"), Some((65534, 65534)));
        assert_eq!(parse_passwd(t, "nobod"), None);
        assert!(euid() != u32::MAX);
        let me = read_stat(std::process::id() as i32).unwrap();
        assert!(alive(me.pid, me.starttime));
        assert!(!alive(me.pid, me.starttime + 1));
    }
}
