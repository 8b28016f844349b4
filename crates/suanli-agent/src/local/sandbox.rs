//! How a job's command line is built: the wrapper shell, the rlimit prefix and bubblewrap.
//!
//! The process the backend spawns is always the wrapper, `/bin/sh -c WRAPPER suanli-wrapper
//! ATTEMPT DIR SETUP RUN [PREFIX…]`. It waits on a gate (one line on stdin) so that the backend
//! can move it into the job's cgroup before anything of the job runs, then runs `PREFIX… /bin/sh
//! -c SETUP` and `PREFIX… /bin/sh -c RUN`, and records how it ended in `DIR/exit_code`. The
//! prefix is the rlimit wrapper (when limits are not enforced by a cgroup) followed by
//! bubblewrap (when sandboxing). The wrapper stays outside the sandbox, as the sandbox's parent:
//! bubblewrap's `--die-with-parent` then ties the sandbox to the wrapper, not to the agent, so a
//! job survives an agent restart and dies with its wrapper.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::network::{JobNetwork, Slirp};

/// `argv[0]` of the wrapper, used to recognise it after an agent restart.
pub(crate) const WRAPPER_NAME: &str = "suanli-wrapper";

/// The wrapper script. `$1` attempt id (for recognition), `$2` status dir, `$3` setup (may be
/// empty), `$4` run, `$5` the deadline (Unix seconds; 0: none), `$6` the kill grace in seconds,
/// then the prefix. SIGTERM is remembered, not obeyed, so that the wrapper outlives its command
/// and records its status (its handler is reset in children by `exec`, so the job itself gets
/// SIGTERM normally). `set -C` makes the status file's creation exclusive: a job that planted a
/// symlink there makes the write fail instead of redirecting it.
///
/// The deadline is the job's own, not the agent's: a watchdog started by the wrapper (see
/// [`WATCHDOG`]) stops the job at its time limit whether or not an agent is there to do it (an
/// agent killed or gone for good must not leave a job running past its limit). It lives outside
/// the sandbox's pid namespace, where the job cannot see it.
pub(crate) const WRAPPER: &str = r#"trap 'suanli_stop=1' TERM INT HUP
read -r suanli_go || exit 125
exec </dev/null
suanli_dir=$2
suanli_setup=$3
suanli_run=$4
suanli_deadline=$5
suanli_grace=$6
shift 6
suanli_finish() {
  if [ "$suanli_deadline" -gt 0 ] && [ "$(date +%s)" -ge "$suanli_deadline" ]; then
    set -- timeout "$2"
  fi
  [ -z "$suanli_wd" ] || kill -USR1 "$suanli_wd" 2>/dev/null
  rm -f "$suanli_dir/.exit_code.tmp" 2>/dev/null
  set -C
  { echo "$2"; echo "phase $1"; times; } >"$suanli_dir/.exit_code.tmp" 2>/dev/null &&
    mv -f "$suanli_dir/.exit_code.tmp" "$suanli_dir/exit_code" 2>/dev/null
  exit "$2"
}
if [ "$suanli_deadline" -gt 0 ]; then
  /bin/sh -c "$SUANLI_WATCHDOG" suanli-watchdog $$ "$suanli_deadline" "$suanli_grace" "$suanli_dir" &
  suanli_wd=$!
fi
unset SUANLI_WATCHDOG
if [ -n "$suanli_setup" ]; then
  "$@" /bin/sh -c "$suanli_setup"
  suanli_code=$?
  [ "$suanli_code" -eq 0 ] || suanli_finish setup "$suanli_code"
  [ -z "$suanli_stop" ] || suanli_finish setup 143
fi
"$@" /bin/sh -c "$suanli_run"
suanli_finish run "$?"
"#;

/// The watchdog of a job's deadline: `$1` the wrapper's pid (also the job's process group),
/// `$2` the deadline (Unix seconds), `$3` the grace in seconds, `$4` the status dir. At the
/// deadline it sends SIGTERM to the job's process group (ignoring it itself), and after the grace
/// records the job as timed out and SIGKILLs the group, itself included. SIGUSR1 (from the
/// wrapper, done) ends it at once.
pub(crate) const WATCHDOG: &str = r#"trap '' TERM INT HUP
trap 'kill -KILL "$s" 2>/dev/null; exit 0' USR1
w=$1
while :; do
  now=$(date +%s)
  [ "$now" -lt "$2" ] || break
  sleep $(( $2 - now > 60 ? 60 : $2 - now )) &
  s=$!
  wait "$s"
  kill -0 "$w" 2>/dev/null || exit 0
done
kill -0 "$w" 2>/dev/null || exit 0
kill -TERM "-$w" 2>/dev/null
sleep "$3" &
s=$!
wait "$s"
kill -0 "$w" 2>/dev/null || exit 0
rm -f "$4/.exit_code.tmp" 2>/dev/null
set -C
{ echo 137; echo "phase timeout"; } >"$4/.exit_code.tmp" 2>/dev/null &&
  mv -f "$4/.exit_code.tmp" "$4/exit_code" 2>/dev/null
kill -KILL "-$w"
"#;

/// Sets rlimits without `prlimit`: `$1` KiB of address space, `$2` processes, `$3` CPU seconds
/// (0 = unchanged). dash names the process limit `-p`, bash `-u`.
const ULIMIT_SCRIPT: &str = r#"[ "$1" = 0 ] || ulimit -v "$1" || exit 126
[ "$2" = 0 ] || ulimit -p "$2" 2>/dev/null || ulimit -u "$2" || exit 126
[ "$3" = 0 ] || ulimit -t "$3" || exit 126
shift 3
exec "$@"
"#;

/// Rlimits for the fallback without cgroups; 0 is no limit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rlimits {
    pub address_space_bytes: u64,
    pub processes: u64,
    pub cpu_seconds: u64,
}

/// The rlimit prefix: `prlimit --as=… --nproc=… --cpu=… --`, or a `ulimit` shell.
pub(crate) fn rlimit_prefix(prlimit: Option<&Path>, l: Rlimits) -> Vec<OsString> {
    let mut v: Vec<OsString> = Vec::new();
    if l.address_space_bytes == 0 && l.processes == 0 && l.cpu_seconds == 0 {
        return v;
    }
    match prlimit {
        Some(p) => {
            v.push(p.into());
            if l.address_space_bytes > 0 {
                v.push(format!("--as={}", l.address_space_bytes).into());
            }
            if l.processes > 0 {
                v.push(format!("--nproc={}", l.processes).into());
            }
            if l.cpu_seconds > 0 {
                v.push(format!("--cpu={}", l.cpu_seconds).into());
            }
            v.push("--".into());
        }
        None => {
            v.extend(["/bin/sh", "-c", ULIMIT_SCRIPT, "suanli-limits"].map(OsString::from));
            v.push(l.address_space_bytes.div_ceil(1024).to_string().into());
            v.push(l.processes.to_string().into());
            v.push(l.cpu_seconds.to_string().into());
        }
    }
    v
}

/// What bubblewrap needs besides the job: what to hide and which devices to pass through.
#[derive(Debug, Clone)]
pub(crate) struct Bubblewrap {
    pub binary: PathBuf,
    /// Directories get an empty tmpfs over them, files `/dev/null`.
    pub hidden: Vec<PathBuf>,
    /// Paths under `/run` bound back, read-only, after `/run` is hidden.
    pub exposed: Vec<PathBuf>,
    /// Accelerator device nodes (`/dev/nvidia*`, `/dev/davinci*`, …) bound into the sandbox.
    pub devices: Vec<PathBuf>,
    /// How jobs that ask for the network get it, and what an isolated network needs here
    /// (`None`: not available, network jobs are refused).
    pub job_network: JobNetwork,
    pub slirp: Option<Slirp>,
}

/// Options common to the probe and to jobs: read-only root, minimal `/dev`, own `/proc` and
/// `/tmp`, every namespace unshared, no capabilities (a root job keeping its capabilities in the
/// sandbox's user namespace could unmount the tmpfs that hides a path), its own session.
fn common_args(v: &mut Vec<OsString>) {
    v.extend(["--ro-bind", "/", "/", "--dev", "/dev"].map(OsString::from));
    v.extend(["--proc", "/proc", "--tmpfs", "/tmp"].map(OsString::from));
}

/// The devices of a sandbox with its own network: `--dev` would mount a devpts, for which
/// bubblewrap nests a second user namespace, and slirp4netns could not join the network
/// namespace through it. The usual nodes, `/dev/shm` and the `/dev/fd` links; no terminals.
fn explicit_dev_args(v: &mut Vec<OsString>) {
    v.extend(["--ro-bind", "/", "/", "--tmpfs", "/dev"].map(OsString::from));
    for dev in ["null", "zero", "full", "random", "urandom", "tty"] {
        let path = format!("/dev/{dev}");
        v.extend(["--dev-bind".into(), path.clone().into(), path.into()]);
    }
    v.extend(["--tmpfs", "/dev/shm"].map(OsString::from));
    for (target, link) in [
        ("/proc/self/fd", "/dev/fd"),
        ("/proc/self/fd/0", "/dev/stdin"),
        ("/proc/self/fd/1", "/dev/stdout"),
        ("/proc/self/fd/2", "/dev/stderr"),
    ] {
        v.extend(["--symlink", target, link].map(OsString::from));
    }
    v.extend(["--proc", "/proc", "--tmpfs", "/tmp"].map(OsString::from));
}

/// How the sandbox's network is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Net {
    None,
    Host,
    /// Its own namespace, configured by slirp4netns once bubblewrap says its pid (`--info-fd
    /// 3`) and before the job runs (`--block-fd 4`).
    Slirp,
}

fn tail_args(v: &mut Vec<OsString>, net: Net) {
    v.push("--unshare-all".into());
    match net {
        Net::None => {}
        Net::Host => v.push("--share-net".into()),
        Net::Slirp => v.extend(["--info-fd", "3", "--block-fd", "4"].map(OsString::from)),
    }
    v.extend(
        [
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
            "--",
        ]
        .map(OsString::from),
    );
}

impl Bubblewrap {
    /// The prefix that runs a command in the sandbox with `job_dir` as its only writable place.
    /// `root_dir` (every job's directory) is hidden, then the job's own directory bound back.
    ///
    /// With `network`, the prefix starts with [`NET_SCRIPT`](super::network::NET_SCRIPT) when
    /// the network is isolated (`fifo_dir`: a directory of the attempt's the job cannot see);
    /// `Err` when network jobs are refused here.
    pub fn prefix(
        &self,
        root_dir: &Path,
        job_dir: &Path,
        fifo_dir: &Path,
        network: bool,
    ) -> Result<Vec<OsString>, String> {
        let net = match (network, self.job_network, &self.slirp) {
            (false, _, _) => Net::None,
            (true, JobNetwork::Host, _) => Net::Host,
            (true, JobNetwork::Isolated, Some(_)) => Net::Slirp,
            (true, JobNetwork::Isolated, None) => {
                return Err(
                    "this provider's agent cannot give a job a network of its own \
                            (slirp4netns is missing or cannot work there), and does not share \
                            its host's: run the job without network"
                        .into(),
                )
            }
        };
        let mut v: Vec<OsString> = Vec::new();
        if let (Net::Slirp, Some(slirp)) = (net, &self.slirp) {
            v.extend(slirp.prefix(fifo_dir));
        }
        v.push(self.binary.clone().into());
        if net == Net::Slirp {
            explicit_dev_args(&mut v);
        } else {
            common_args(&mut v);
        }
        for dev in &self.devices {
            v.extend([
                "--dev-bind-try".into(),
                dev.clone().into(),
                dev.clone().into(),
            ]);
        }
        v.extend(["--tmpfs".into(), root_dir.into()]);
        // Every host socket: `/run` holds D-Bus, munge (a job could submit to the local Slurm,
        // unbilled), container runtimes, systemd's; `/tmp`'s (X11) are already a private
        // tmpfs. The resolver's directory comes back, for DNS where resolv.conf points there.
        v.extend(["--tmpfs".into(), "/run".into()]);
        for keep in [Path::new("/run/systemd/resolve")]
            .into_iter()
            .chain(self.exposed.iter().map(PathBuf::as_path))
        {
            v.extend([
                "--ro-bind-try".into(),
                keep.as_os_str().to_owned(),
                keep.as_os_str().to_owned(),
            ]);
        }
        for h in &self.hidden {
            match std::fs::metadata(h) {
                Ok(m) if m.is_dir() => v.extend(["--tmpfs".into(), h.clone().into()]),
                Ok(_) => v.extend(["--ro-bind".into(), "/dev/null".into(), h.clone().into()]),
                Err(_) => {}
            }
        }
        if let (
            Net::Slirp,
            Some(Slirp {
                resolv_conf: Some(conf),
                ..
            }),
        ) = (net, &self.slirp)
        {
            // The host's resolver is on its loopback, out of the job's reach: slirp4netns's.
            v.extend([
                "--ro-bind".into(),
                conf.clone().into(),
                "/etc/resolv.conf".into(),
            ]);
        }
        v.extend([
            "--bind".into(),
            job_dir.into(),
            job_dir.into(),
            "--chdir".into(),
            job_dir.into(),
        ]);
        tail_args(&mut v, net);
        Ok(v)
    }

    /// Runs `/bin/true` in a sandbox as the job user: `Err` with bubblewrap's complaint if it
    /// cannot work here (e.g. unprivileged user namespaces are disabled).
    pub fn probe(binary: &Path, user: Option<(u32, u32)>) -> Result<(), String> {
        use std::os::unix::process::CommandExt;
        let mut v: Vec<OsString> = Vec::new();
        common_args(&mut v);
        tail_args(&mut v, Net::None);
        let mut cmd = Command::new(binary);
        cmd.args(&v)
            .arg("/bin/true")
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((uid, gid)) = user {
            cmd.uid(uid).gid(gid);
        }
        match cmd.output() {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(format!(
                "{} failed ({}): {}",
                binary.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => Err(format!("{}: {e}", binary.display())),
        }
    }
}

/// Accelerator device nodes present on this machine.
pub(crate) fn accelerator_devices() -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir("/dev") else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = dir
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let wanted = name.starts_with("nvidia")
                || name.starts_with("davinci")
                || matches!(name.as_str(), "devmm_svm" | "hisi_hdc" | "kfd");
            wanted.then(|| Path::new("/dev").join(name))
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(v: &[OsString]) -> Vec<String> {
        v.iter().map(|s| s.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn prefixes() {
        let l = Rlimits {
            address_space_bytes: 64 << 20,
            processes: 64,
            cpu_seconds: 10,
        };
        assert_eq!(
            strs(&rlimit_prefix(Some(Path::new("/usr/bin/prlimit")), l)),
            vec![
                "/usr/bin/prlimit",
                "--as=67108864",
                "--nproc=64",
                "--cpu=10",
                "--"
            ]
        );
        let sh = strs(&rlimit_prefix(None, l));
        assert_eq!(sh[..2], ["/bin/sh", "-c"]);
        assert_eq!(sh[4..], ["65536", "64", "10"]);

        let b = Bubblewrap {
            binary: "/usr/bin/bwrap".into(),
            hidden: vec!["/nonexistent-suanli-hidden".into(), "/etc".into()],
            exposed: vec!["/run/munge".into()],
            devices: vec![],
            job_network: JobNetwork::Host,
            slirp: None,
        };
        let a = strs(
            &b.prefix(
                Path::new("/var/lib/suanli/jobs"),
                Path::new("/var/lib/suanli/jobs/a1"),
                Path::new("/var/lib/suanli/jobs/a1/status"),
                false,
            )
            .unwrap(),
        );
        let joined = a.join(" ");
        assert!(
            joined.starts_with("/usr/bin/bwrap --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp")
        );
        assert!(joined.contains(
            "--tmpfs /var/lib/suanli/jobs --tmpfs /run --ro-bind-try /run/systemd/resolve \
             /run/systemd/resolve --ro-bind-try /run/munge /run/munge --tmpfs /etc --bind \
             /var/lib/suanli/jobs/a1 /var/lib/suanli/jobs/a1 --chdir /var/lib/suanli/jobs/a1"
        ));
        assert!(!joined.contains("nonexistent"));
        assert!(joined.ends_with("--unshare-all --die-with-parent --new-session --cap-drop ALL --"));
        let host = |b: &Bubblewrap| {
            b.prefix(Path::new("/r"), Path::new("/r/a"), Path::new("/r/s"), true)
                .map(|p| strs(&p).join(" "))
        };
        assert!(host(&b).unwrap().contains("--unshare-all --share-net"));
        // Isolated: under the network script, bubblewrap waits for slirp4netns, and the
        // host's network is never shared.
        let isolated = Bubblewrap {
            job_network: JobNetwork::Isolated,
            slirp: Some(Slirp {
                binary: "/usr/bin/slirp4netns".into(),
                resolv_conf: Some("/r/.resolv.conf".into()),
            }),
            ..b.clone()
        };
        let net = host(&isolated).unwrap();
        assert!(net.starts_with("/bin/sh -c "), "{net}");
        assert!(net.contains(
            "suanli-net /usr/bin/slirp4netns /r/s /usr/bin/bwrap --ro-bind / / --tmpfs /dev"
        ));
        assert!(net.contains("--ro-bind /r/.resolv.conf /etc/resolv.conf"));
        assert!(net.contains("--unshare-all --info-fd 3 --block-fd 4 --die-with-parent"));
        assert!(!net.contains("--share-net") && !net.contains("--dev /dev"));
        // Without slirp4netns an isolated network job is refused, not given the host's.
        let refused = Bubblewrap {
            slirp: None,
            ..isolated
        };
        assert!(host(&refused).unwrap_err().contains("without network"));
    }
}
