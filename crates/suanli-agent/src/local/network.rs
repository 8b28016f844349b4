//! The network of a job that asks for one. Sharing the host's network namespace would hand the
//! job every host socket bubblewrap cannot hide by path: abstract Unix sockets (D-Bus, X11,
//! containerd's, any service's) and everything listening on the host's loopback (the exchange
//! itself, a database trusting local connections, slurmctld). So a job gets a network namespace
//! of its own, connected to the outside by `slirp4netns` (user-mode networking, as rootless
//! containers use it) with the host's loopback out of reach. A provider may instead share the
//! host's network (`network = "host"` in the agent's config), knowingly.
//!
//! The plumbing is a shell script between the wrapper and bubblewrap (see [`NET_SCRIPT`]):
//! bubblewrap reports the sandbox's pid (`--info-fd`) and waits (`--block-fd`) until
//! `slirp4netns` has configured the sandbox's `tap0`; nothing of the job runs before.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// How jobs that ask for the network get it (under bubblewrap; without a sandbox every job
/// shares the host's network).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobNetwork {
    /// A network namespace of the job's own, through `slirp4netns`: the internet and the
    /// host's network addresses, not its loopback nor any host socket. Network jobs are refused
    /// when `slirp4netns` is missing or cannot work here.
    #[default]
    Isolated,
    /// The host's network namespace: also its loopback services and abstract Unix sockets.
    Host,
}

/// The script that gives a sandbox its network. `$1` the `slirp4netns` binary, `$2` a private
/// directory for the FIFOs (the attempt's status directory, which the job cannot see), then
/// bubblewrap's command line, which carries `--info-fd 3 --block-fd 4`. It exits with the
/// sandbox's status, or 126 (and says why on stderr, which is the job's log) when the network
/// could not be set up; the sandbox then never runs. SIGTERM is remembered, not obeyed (as the
/// wrapper does): the job's own processes get it and have their grace. The info FIFO stays open
/// to the end: bubblewrap may still be writing the rest of its JSON after the line with the pid,
/// and would die of SIGPIPE if nobody could read it.
pub(crate) const NET_SCRIPT: &str = r#"trap 'suanli_sig=1' TERM INT HUP
s=$1; d=$2; shift 2
f="$d/.net.$$"
rm -f "$f.i" "$f.g" "$f.r" "$f.e"
mkfifo -m 600 "$f.i" "$f.g" "$f.r" || exit 126
"$@" 3>"$f.i" 4<"$f.g" &
b=$!
exec 6<"$f.i" 7>"$f.g"
p=
while read -r l <&6; do
  case $l in *child-pid*) p=${l##*:}; p=${p%%,*}; p=$(echo $p); break ;; esac
done
n=
r=
if [ -n "$p" ]; then
  u=
  [ "$(readlink "/proc/$p/ns/user")" = "$(readlink /proc/self/ns/user)" ] || u="--userns-path=/proc/$p/ns/user"
  "$s" --configure --mtu=65520 --disable-host-loopback --enable-seccomp $u --ready-fd=9 "$p" tap0 9>"$f.r" 7>&- </dev/null >/dev/null 2>"$f.e" &
  n=$!
  exec 8<"$f.r"
  r=$(head -c1 <&8)
  exec 8<&-
fi
rm -f "$f.i" "$f.g" "$f.r"
if [ "$r" != 1 ]; then
  kill -KILL "$b" 2>/dev/null
  echo "[suanli] the job's network could not be set up: $(head -c 500 "$f.e" 2>/dev/null)" >&2
  rm -f "$f.e"
  wait "$b" 2>/dev/null
  [ -z "$n" ] || { kill "$n" 2>/dev/null; wait "$n" 2>/dev/null; }
  exit 126
fi
rm -f "$f.e"
echo go >&7
exec 7>&-
while :; do
  wait "$b"; c=$?
  kill -0 "$b" 2>/dev/null || break
done
kill "$n" 2>/dev/null
wait "$n" 2>/dev/null
exit "$c"
"#;

/// What an isolated network needs here, found when the backend starts.
#[derive(Debug, Clone)]
pub(crate) struct Slirp {
    pub binary: PathBuf,
    /// A `resolv.conf` naming slirp4netns's resolver, bound over the host's in the sandbox,
    /// when the host's resolver listens on its loopback (systemd-resolved's 127.0.0.53), which
    /// the job cannot reach.
    pub resolv_conf: Option<PathBuf>,
}

impl Slirp {
    /// The prefix that runs bubblewrap under [`NET_SCRIPT`]; `fifo_dir` is private to the
    /// attempt and hidden from the job.
    pub fn prefix(&self, fifo_dir: &Path) -> Vec<OsString> {
        vec![
            "/bin/sh".into(),
            "-c".into(),
            NET_SCRIPT.into(),
            "suanli-net".into(),
            self.binary.clone().into(),
            fifo_dir.into(),
        ]
    }
}

/// Finds what an isolated network needs: `slirp4netns`, and `/dev/net/tun` usable by the job's
/// user (its usual mode is 0666). `Err` says what is missing and how to fix it.
pub(crate) fn probe_slirp(
    binary: Option<PathBuf>,
    job_uid: u32,
    root: &Path,
) -> Result<Slirp, String> {
    use std::os::unix::fs::MetadataExt;
    let binary = binary.ok_or(
        "slirp4netns is not installed (apt-get install slirp4netns), or set network = \"host\" \
         to share the host's network with jobs",
    )?;
    if !binary.is_file() {
        return Err(format!("{} does not exist", binary.display()));
    }
    let tun = std::fs::metadata("/dev/net/tun")
        .map_err(|e| format!("/dev/net/tun: {e} (slirp4netns needs the tun device)"))?;
    let usable =
        tun.mode() & 0o006 == 0o006 || (tun.uid() == job_uid && tun.mode() & 0o600 == 0o600);
    if !usable && job_uid != 0 {
        return Err(format!(
            "/dev/net/tun is mode {:o}: jobs cannot open it (chmod 0666 /dev/net/tun, its usual \
             mode), or set network = \"host\"",
            tun.mode() & 0o777
        ));
    }
    let resolv_conf = match loopback_resolver_conf(
        &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    ) {
        None => None,
        Some(text) => {
            let path = root.join(".resolv.conf");
            write_public(&path, &text).map_err(|e| format!("writing {}: {e}", path.display()))?;
            Some(path)
        }
    };
    Ok(Slirp {
        binary,
        resolv_conf,
    })
}

/// A resolver config for the sandbox when the host's names a loopback resolver: slirp4netns's
/// (10.0.2.3, which forwards to the host's), keeping the rest (search domains, options).
fn loopback_resolver_conf(host: &str) -> Option<String> {
    let loopback = |addr: &str| addr.starts_with("127.") || addr == "::1";
    let servers: Vec<&str> = host
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .map(str::trim)
        .collect();
    if !servers.iter().any(|s| loopback(s)) {
        return None;
    }
    let mut out =
        String::from("# written by suanli-agent: slirp4netns's resolver\nnameserver 10.0.2.3\n");
    for line in host.lines() {
        let t = line.trim();
        if !t.starts_with("nameserver") && !t.is_empty() && !t.starts_with('#') {
            out.push_str(t);
            out.push('\n');
        }
    }
    Some(out)
}

/// Writes a file every user may read (the sandbox binds it as the job's user).
fn write_public(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loopback_resolver_is_replaced_by_slirps() {
        assert_eq!(loopback_resolver_conf("nameserver 10.1.1.1\n"), None);
        assert_eq!(
            loopback_resolver_conf(
                "# stub\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch example.cn\n"
            )
            .as_deref(),
            Some(
                "# written by suanli-agent: slirp4netns's resolver\nnameserver 10.0.2.3\n\
                 options edns0 trust-ad\nsearch example.cn\n"
            )
        );
    }

    #[test]
    fn the_prefix_runs_bubblewrap_under_the_script() {
        let s = Slirp {
            binary: "/usr/bin/slirp4netns".into(),
            resolv_conf: None,
        };
        let p: Vec<String> = s
            .prefix(Path::new("/j/a/status"))
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(p[..2], ["/bin/sh", "-c"]);
        assert_eq!(
            p[3..],
            ["suanli-net", "/usr/bin/slirp4netns", "/j/a/status"]
        );
    }
}
