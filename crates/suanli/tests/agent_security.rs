//! Issue 17: a hostile consumer's job against the real agent on this machine. Nothing the agent
//! reads on a job's behalf may be opened with the agent's privileges by a path the job could have
//! influenced: outputs through symbolic links (at any component), hard links and FIFOs are
//! refused and named to the consumer; the logs stay in a place the job cannot write, so swapping
//! them for links before an agent restart ships nothing but the job's own output.

use std::time::Duration;

use suanli_api::*;

#[allow(dead_code)]
mod common;
use common::{
    admit, agent_setup, all_logs, consumer_with_lease, exchange, offer, task, wait_for_agents,
    wait_job, AgentProcess, Scratch,
};

/// The outputs attack: the job learns where the agent's secrets are (here: told; a real job reads
/// its mount table) and links them into its output folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_through_links_are_refused_and_named() {
    let dir = Scratch::new("suanli-sec-outputs");
    let x = exchange(dir.path(), |_| {}).await;
    let (_, provider, token) =
        admit(&x.operator, &x.base, "Local compute", OrgKind::Provider).await;
    let setup = agent_setup(dir.path(), &x.base, &token, "node-s", None);
    let _agent = AgentProcess::start(&setup);
    let agent = wait_for_agents(&provider, 1).await.remove(0);
    let offer = offer(&provider, &agent.pool_id).await;
    let (consumer, lease) = consumer_with_lease(&x.operator, &x.base, &offer.id, 1, false).await;

    let token_file = dir.path().join("node-s.token");
    let token_dir = dir.path();
    let run = format!(
        "mkdir -p out && echo fine > out/ok.txt && \
         ln -s {tokdir} out/tokdir && ln -s /etc out/etc && ln -s {tok} out/tok && \
         ln {tok} out/hard 2>/dev/null; mkfifo out/fifo; echo done",
        tokdir = token_dir.display(),
        tok = token_file.display()
    );
    let mut job = task(&run);
    job.task.outputs = vec![
        "out/tokdir/node-s.token".into(),
        "out/etc/shadow".into(),
        "out/tok".into(),
        "out/ok.txt".into(),
        "out/".into(),
    ];
    let job = consumer.create_job(&lease.id, &job, None).await.unwrap();
    let done = wait_job(&consumer, &job.id, |j| {
        !matches!(j.state.as_str(), "queued" | "dispatched" | "running")
    })
    .await;
    assert_eq!(done.state, "succeeded", "{done:#?}");
    let files = consumer.list_outputs(&job.id).await.unwrap();
    let paths: Vec<&str> = files.items.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        ["out/ok.txt"],
        "only the job's own file is collected"
    );
    for f in &files.items {
        let bytes = consumer.get_output(&job.id, &f.path).await.unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(&token),
            "the provider's token was delivered as an output"
        );
    }
    // The consumer is told what was refused, and why.
    let reason = done.reason.clone().unwrap_or_default();
    for refused in ["out/tokdir", "out/etc", "out/tok", "out/fifo"] {
        assert!(reason.contains(refused), "{refused} not named: {reason}");
    }
    assert!(reason.contains("symbolic link"), "{reason}");
}

/// The logs attack: the job replaces its log files with links to the agent's secrets, then the
/// agent restarts and re-attaches (it opens the logs again). The logs are the agent's, in a
/// directory the job can neither see (in the sandbox) nor write: the link is never made, and
/// nothing but the job's own output reaches the consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapped_log_files_ship_nothing_but_the_jobs_output_after_a_restart() {
    let mut m = common::LocalMarket::start(
        "suanli-sec-logs",
        |c| {
            c.heartbeat_interval = Duration::from_secs(1);
            c.suspect_after = Duration::from_secs(10);
            c.lost_after = Duration::from_secs(60);
        },
        "",
    )
    .await;
    let (consumer, lease, setup) = (m.consumer.clone(), m.lease.clone(), m.setup.clone());
    let token_file = m.dir.path().join("node-m.token");
    let run = format!(
        "for f in stdout.log stderr.log ../stdout.log ../stderr.log; do \
           ln -sf {tok} \"$SUANLI_JOB_DIR/$f\" 2>/dev/null && echo linked-$f; \
         done; echo before; i=0; while [ ! -e go ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; \
         echo after",
        tok = token_file.display()
    );
    let job = consumer
        .create_job(&lease.id, &task(&run), None)
        .await
        .unwrap();
    let running = wait_job(&consumer, &job.id, |j| j.state == "running").await;
    let attempt_dir = setup.jobs_dir.join(&running.attempts[0].id);
    for _ in 0..300 {
        if std::fs::read_to_string(attempt_dir.join("stdout.log"))
            .unwrap_or_default()
            .contains("before")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The agent's log files are still its own regular files.
    for f in ["stdout.log", "stderr.log"] {
        let meta = std::fs::symlink_metadata(attempt_dir.join(f)).unwrap();
        assert!(meta.file_type().is_file(), "{f} was replaced");
    }
    m.agent.sigkill();
    m.agent = AgentProcess::start(&setup);
    tokio::time::sleep(Duration::from_secs(2)).await;
    std::fs::write(attempt_dir.join("work/go"), "").unwrap();
    let done = wait_job(&consumer, &job.id, |j| {
        !matches!(j.state.as_str(), "queued" | "dispatched" | "running")
    })
    .await;
    assert_eq!(done.state, "succeeded", "{done:#?}");
    let (out, err, system) = all_logs(&consumer, &job.id).await;
    let everything = format!("{out}{err}{system}");
    assert!(
        !everything.contains(std::fs::read_to_string(&token_file).unwrap().trim()),
        "the provider's token reached the consumer's logs"
    );
    // Whatever the job did in its own view, the agent's files are its own, untouched.
    for f in ["stdout.log", "stderr.log"] {
        let meta = std::fs::symlink_metadata(attempt_dir.join(f)).unwrap();
        assert!(meta.file_type().is_file(), "{f} was replaced");
    }
    assert!(out.contains("before") && out.contains("after"), "{out:?}");
}

/// Starts the real agent from `setup`, as `uid` when given (the test runs as root); killed when
/// dropped.
fn start_agent_as(setup: &common::AgentSetup, uid: Option<u32>) -> AgentProcess {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_suanli"));
    cmd.args(["agent", "--config"])
        .arg(&setup.config)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit());
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    AgentProcess {
        child: cmd.spawn().expect("start suanli agent"),
    }
}

/// Issue 17: the exchange's data directory (its database holds every org's tasks, logs and token
/// hashes) and the host's sockets (munge: a job could submit to the local Slurm unbilled; D-Bus)
/// are hidden from jobs by the sandbox, whatever user the agent runs as. As an unprivileged user
/// the agent runs jobs as itself, where file permissions protect nothing: only the sandbox does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_see_neither_the_exchanges_data_nor_host_sockets() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::fs::{chown, PermissionsExt};
    // What a network job must not reach: an abstract Unix socket (D-Bus, X11 and many services
    // listen on one) and a service on the host's loopback (the exchange, a database trusting
    // local connections). What it may: the host's network address, as from any other machine.
    let abstract_name = format!("suanli-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(&abstract_name).unwrap();
    let _abstract = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    let tcp = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = tcp.local_addr().unwrap().port();
    let host_ip = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|u| u.connect("192.0.2.1:9").and(u.local_addr()))
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified());
    let net_probe = format!(
        "python3 -c '\nimport socket\ndef c(f, a):\n    s = socket.socket(f); s.settimeout(5)\n    \
         try:\n        s.connect(a); return \"REACHED\"\n    except OSError:\n        return \
         \"refused\"\nprint(\"abstract\", c(socket.AF_UNIX, \"\\0{abstract_name}\"))\n\
         print(\"loopback\", c(socket.AF_INET, (\"127.0.0.1\", {port})))\n\
         print(\"host\", c(socket.AF_INET, (\"{host}\", {port})))\n'",
        host = host_ip.map(|i| i.to_string()).unwrap_or_else(|| "127.0.0.1".into()),
    );
    if rustix_is_root() {
        for agent_uid in [None, Some(65534u32)] {
            let dir = Scratch::new("suanli-sec-hide");
            let x = exchange(dir.path(), |_| {}).await;
            let (_, provider, token) =
                admit(&x.operator, &x.base, "Local compute", OrgKind::Provider).await;
            let setup = agent_setup(dir.path(), &x.base, &token, "node-h", None);
            // A data directory like the demo's: the agent's user owns it, 0700.
            let data = dir.path().join("exchange-data");
            std::fs::create_dir(&data).unwrap();
            std::fs::write(data.join("suanli.db"), "SECRET-DB").unwrap();
            let mut config = std::fs::read_to_string(&setup.config).unwrap();
            config.push_str(&format!(
                "sandbox = \"always\"\nhide = [\"{}\"]\n",
                data.display()
            ));
            std::fs::write(&setup.config, config).unwrap();
            if let Some(uid) = agent_uid {
                std::fs::create_dir(&setup.jobs_dir).unwrap();
                for p in [
                    &setup.jobs_dir,
                    &data,
                    &data.join("suanli.db"),
                    &setup.state_dir,
                    &dir.path().join("node-h.token"),
                    &setup.config,
                ] {
                    chown(p, Some(uid), Some(uid)).unwrap();
                }
            }
            for p in [&data, &setup.state_dir] {
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700)).unwrap();
            }
            let agent_proc = start_agent_as(&setup, agent_uid);
            let agent = wait_for_agents(&provider, 1).await.remove(0);
            assert!(
                agent.isolation.contains("bubblewrap"),
                "the sandbox is in force: {}",
                agent.isolation
            );
            let offer = offer(&provider, &agent.pool_id).await;
            let (consumer, lease) =
                consumer_with_lease(&x.operator, &x.base, &offer.id, 1, false).await;
            let run = format!(
                "cat {db} 2>/dev/null; ls {data} 2>/dev/null | grep -q suanli && echo DB-LISTED; \
                 for s in /run/munge/munge.socket.2 /run/dbus/system_bus_socket; do \
                   test -S $s && echo SOCKET-$s; done; \
                 find /run -type s 2>/dev/null | sed 's/^/FOUND-/'; echo checked",
                db = data.join("suanli.db").display(),
                data = data.display()
            );
            let job = consumer
                .create_job(&lease.id, &task(&run), None)
                .await
                .unwrap();
            let done = wait_job(&consumer, &job.id, |j| {
                !matches!(j.state.as_str(), "queued" | "dispatched" | "running")
            })
            .await;
            let (out, _, _) = all_logs(&consumer, &job.id).await;
            assert_eq!(done.state, "succeeded", "{done:#?} {out}");
            assert!(out.contains("checked"), "{out}");
            for leak in ["SECRET-DB", "DB-LISTED", "SOCKET-", "FOUND-"] {
                assert!(
                    !out.contains(leak),
                    "agent as {agent_uid:?}: a job saw {leak}: {out}"
                );
            }
            // A job with the network: its own, without the host's loopback or sockets.
            let mut spec = task(&net_probe);
            spec.task.network = true;
            let job = consumer.create_job(&lease.id, &spec, None).await.unwrap();
            let done = wait_job(&consumer, &job.id, |j| {
                !matches!(j.state.as_str(), "queued" | "dispatched" | "running")
            })
            .await;
            let (out, err, _) = all_logs(&consumer, &job.id).await;
            assert_eq!(done.state, "succeeded", "{done:#?} {out} {err}");
            assert!(
                out.contains("abstract refused"),
                "agent as {agent_uid:?}: {out}"
            );
            assert!(
                out.contains("loopback refused"),
                "agent as {agent_uid:?}: {out}"
            );
            if host_ip.is_some() {
                assert!(
                    out.contains("host REACHED"),
                    "agent as {agent_uid:?}: {out} {err}"
                );
            }
            drop(agent_proc);
        }
    }
}

fn rustix_is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// Issue 17: `suanli.db` and its WAL were created 0644 in a 0755 directory, so a job on the
/// demo's own agent read the whole database. The data directory is 0700 and every file in it
/// 0600; the exchange refuses to start on a data directory others can read, and says how to fix it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exchanges_files_are_its_own_and_an_open_data_directory_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Scratch::new("suanli-sec-files");
    let data = dir.path().join("data");
    let port = common::free_port();
    let serve = common::ServeProcess::start(&data, port);
    serve.wait_healthy().await;
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&data), 0o700);
    for f in ["suanli.db", "suanli.db-wal", "operator.token"] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    drop(serve);

    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_suanli"))
        .args(["serve", "--data-dir"])
        .arg(&open)
        .args(["--port", &common::free_port().to_string()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("can be read by other users") && err.contains("chmod -R go-rwx"),
        "{err}"
    );
    assert!(!open.join("suanli.db").exists(), "nothing was created");
}

/// Issue 17: starting the same agent config twice, or from a copied state directory, gave two
/// live agents with one identity, both re-attaching to the running job: the consumer saw its
/// lines twice. The same state directory is locked (the second start is refused at once); a copy
/// elsewhere registers a new generation and the exchange fences the first out, which stops with
/// a clear message. Every line of the job reaches the consumer once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_identity_runs_as_one_agent() {
    let dir = Scratch::new("suanli-sec-twice");
    let x = exchange(dir.path(), |c| {
        c.heartbeat_interval = Duration::from_secs(1);
    })
    .await;
    let (_, provider, token) =
        admit(&x.operator, &x.base, "Local compute", OrgKind::Provider).await;
    let setup = agent_setup(dir.path(), &x.base, &token, "node-d", None);
    let first = std::process::Command::new(env!("CARGO_BIN_EXE_suanli"))
        .args(["agent", "--config"])
        .arg(&setup.config)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let agent = wait_for_agents(&provider, 1).await.remove(0);
    assert_eq!(agent.generation, 1);

    // The same config again, on this machine: refused at once.
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_suanli"))
        .args(["agent", "--config"])
        .arg(&setup.config)
        .output()
        .unwrap();
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("another agent is already running"), "{err}");

    let offer = offer(&provider, &agent.pool_id).await;
    let (consumer, lease) = consumer_with_lease(&x.operator, &x.base, &offer.id, 1, false).await;
    let job = consumer
        .create_job(
            &lease.id,
            &task("for i in $(seq 1 30); do echo line-$i; sleep 0.2; done"),
            None,
        )
        .await
        .unwrap();
    wait_job(&consumer, &job.id, |j| j.state == "running").await;

    // A copy of the state directory (the same key, the same notes of running attempts) under
    // another config: a second holder of the identity, on the same jobs. It registers a new
    // generation; the first is fenced out and stops; the copy follows the job to its end.
    let copy_state = dir.path().join("agent-copy");
    copy_dir(&setup.state_dir, &copy_state);
    let copy_config = dir.path().join("copy.toml");
    let text = std::fs::read_to_string(&setup.config).unwrap().replace(
        &setup.state_dir.display().to_string(),
        &copy_state.display().to_string(),
    );
    std::fs::write(&copy_config, text).unwrap();
    // Killed when dropped, should an assertion below fail.
    let _copy = AgentProcess {
        child: std::process::Command::new(env!("CARGO_BIN_EXE_suanli"))
            .args(["agent", "--config"])
            .arg(&copy_config)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    };
    let out = tokio::task::spawn_blocking(move || first.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(!out.status.success(), "the superseded agent stops");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Another agent registered with the same identity"),
        "{err}"
    );
    let agents = provider.list_agents().await.unwrap().items;
    assert_eq!(agents.len(), 1, "one identity, one agent");
    assert!(agents[0].generation >= 2);

    // The job ends (its own process group ran on); each line reached the consumer once.
    let done = wait_job(&consumer, &job.id, |j| {
        !matches!(j.state.as_str(), "queued" | "dispatched" | "running")
    })
    .await;
    assert_eq!(done.state, "succeeded", "{done:#?}");
    let (out, _, _) = all_logs(&consumer, &job.id).await;
    // Nothing lost; and once the first agent was fenced out only one agent shipped the output.
    // (A few lines from before the switch may come twice, as after any agent restart: the copy
    // resumes from the progress its notes had.)
    for i in 1..=30 {
        let line = format!("line-{i}\n");
        let seen = out.matches(&line).count();
        assert!(seen >= 1, "{line:?} was lost: {out:?}");
        if i > 20 {
            assert_eq!(seen, 1, "{line:?} came {seen} times: {out:?}");
        }
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&src, &dst);
        } else if entry.file_name() != "agent.lock" {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// Issue 17: with its agent killed, a job with a 15 s limit ran 37 s and was billed 38 unit-s.
/// The job's own watchdog (started by its wrapper, outside the sandbox, not the agent) stops it at
/// its limit whether or not an agent is there; when the agent returns it reports the job
/// `timed_out`, billed no more than its limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_stops_at_its_time_limit_while_its_agent_is_gone() {
    let mut m = common::LocalMarket::start(
        "suanli-sec-deadline",
        |c| {
            c.heartbeat_interval = Duration::from_secs(1);
            c.suspect_after = Duration::from_secs(30);
            c.lost_after = Duration::from_secs(120);
        },
        "",
    )
    .await;
    let (consumer, lease) = (m.consumer.clone(), m.lease.clone());
    let mut spec = task("trap '' TERM; echo started; sleep 120; echo never");
    spec.task.time_limit_s = Some(3);
    let job = consumer.create_job(&lease.id, &spec, None).await.unwrap();
    let running = wait_job(&consumer, &job.id, |j| j.state == "running").await;
    let attempt_id = running.attempts[0].id.clone();
    m.agent.sigkill();
    // No agent: the limit (3 s) passes, then the kill grace (5 s); the job ignores SIGTERM.
    let mut gone = false;
    for _ in 0..200 {
        if common::processes_of(&attempt_id).is_empty() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !gone {
        for pid in common::processes_of(&attempt_id) {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            eprintln!("left: {pid} {:?} {stat}", String::from_utf8_lossy(&cmd));
        }
    }
    assert!(gone, "the job ran on past its limit with its agent gone");
    m.agent = AgentProcess::start(&m.setup);
    let done = wait_job(&consumer, &job.id, |j| {
        !matches!(j.state.as_str(), "queued" | "dispatched" | "running")
    })
    .await;
    assert_eq!(done.state, "timed_out", "{done:#?}");
    assert!(
        done.unit_ms <= 3_000,
        "billed {} unit-ms for a 3 s limit",
        done.unit_ms
    );
    let (out, _, _) = all_logs(&consumer, &job.id).await;
    assert!(!out.contains("never"), "{out:?}");
}
