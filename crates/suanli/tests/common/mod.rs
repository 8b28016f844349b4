//! Helpers for end-to-end tests with real processes: an exchange (in-process or the real
//! `suanli serve`), the real `suanli agent` binary, orgs, leases and waiting on jobs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use suanli_api::*;
use suanli_client::Client;
use suanli_server::ServerConfig;
use suanli_store::Location;

/// A test's scratch directory under the system temp dir (mode 0755, so that jobs running as
/// `nobody` can pass through it), removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(prefix: &str) -> Scratch {
        let dir = std::env::temp_dir().join(suanli_store::ops::new_id(prefix));
        std::fs::create_dir_all(&dir).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct Exchange {
    pub base: String,
    pub operator: Client,
}

/// An exchange in this process, on SQLite in `dir`, with `adjust` applied to its config.
pub async fn exchange(dir: &Path, adjust: impl FnOnce(&mut ServerConfig)) -> Exchange {
    let mut config = ServerConfig::new(Location::Sqlite(
        dir.join("x.db").to_string_lossy().into_owned(),
    ));
    adjust(&mut config);
    let (state, boot) = suanli_server::start(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(suanli_server::serve_on(listener, state));
    Exchange {
        operator: Client::new(base.clone(), boot.token_secret),
        base,
    }
}

/// The real `suanli serve` as a child process (killed when dropped).
pub struct ServeProcess {
    pub child: Child,
    pub base: String,
}

impl ServeProcess {
    pub fn start(data_dir: &Path, port: u16) -> ServeProcess {
        let child = Command::new(env!("CARGO_BIN_EXE_suanli"))
            .args(["serve", "--data-dir"])
            .arg(data_dir)
            .args(["--port", &port.to_string()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start suanli serve");
        ServeProcess {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// SIGKILL: no shutdown path runs.
    pub fn sigkill(&mut self) {
        self.child.kill().expect("SIGKILL the exchange");
        self.child.wait().expect("reap the exchange");
    }

    pub async fn wait_healthy(&self) {
        let anon = Client::new(self.base.clone(), None);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if anon.health().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the exchange at {} did not become healthy", self.base);
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where an agent keeps its state, and its job directories.
#[derive(Clone)]
pub struct AgentSetup {
    pub config: PathBuf,
    pub state_dir: PathBuf,
    pub jobs_dir: PathBuf,
}

/// Writes an agent's config (and token file) under `dir`, reporting usage every second.
/// `pool_id`: serve that existing pool.
pub fn agent_setup(
    dir: &Path,
    base: &str,
    token: &str,
    name: &str,
    pool_id: Option<&str>,
) -> AgentSetup {
    agent_setup_with(dir, base, token, name, pool_id, 1)
}

/// [`agent_setup`] reporting usage every `usage_interval_s` seconds.
pub fn agent_setup_with(
    dir: &Path,
    base: &str,
    token: &str,
    name: &str,
    pool_id: Option<&str>,
    usage_interval_s: u64,
) -> AgentSetup {
    let state_dir = dir.join(format!("agent-{name}"));
    std::fs::create_dir_all(&state_dir).unwrap();
    let jobs_dir = dir.join(format!("jobs-{name}"));
    let token_file = dir.join(format!("{name}.token"));
    write_private(&token_file, token);
    let config = dir.join(format!("{name}.toml"));
    let mut text = format!(
        "server = \"{base}\"\ntoken_file = \"{}\"\nname = \"{name}\"\nzone = \"wuqing-core\"\n\
         state_dir = \"{}\"\njobs_dir = \"{}\"\nusage_interval_s = {usage_interval_s}\n",
        token_file.display(),
        state_dir.display(),
        jobs_dir.display(),
    );
    if let Some(p) = pool_id {
        text.push_str(&format!("pool_id = \"{p}\"\n"));
    }
    std::fs::write(&config, text).unwrap();
    AgentSetup {
        config,
        state_dir,
        jobs_dir,
    }
}

/// Writes a secret only its owner can read (the agent refuses a token file others can read).
pub fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The real `suanli agent` binary as a child process (SIGKILLed when dropped).
pub struct AgentProcess {
    pub child: Child,
}

impl AgentProcess {
    pub fn start(setup: &AgentSetup) -> AgentProcess {
        let child = Command::new(env!("CARGO_BIN_EXE_suanli"))
            .args(["agent", "--config"])
            .arg(&setup.config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start suanli agent");
        AgentProcess { child }
    }

    /// SIGKILL: no goodbye; its jobs run on in their own process groups.
    pub fn sigkill(&mut self) {
        self.child.kill().expect("SIGKILL the agent");
        self.child.wait().expect("reap the agent");
    }

    /// Sends a signal by name (`STOP`, `CONT`) with `kill(1)`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Admits an org; returns its id, a client with its admin token, and the token.
pub async fn admit(
    operator: &Client,
    base: &str,
    name: &str,
    kind: OrgKind,
) -> (String, Client, String) {
    let created = operator
        .create_org(
            &CreateOrgRequest {
                name: name.into(),
                kind,
                consumer_type: (kind == OrgKind::Consumer)
                    .then_some(ConsumerType::ResearchInstitute),
                zone: "wuqing-core".into(),
                origin_region: "tianjin".into(),
                admin_name: None,
                admin_email: None,
            },
            None,
        )
        .await
        .unwrap();
    let secret = created.token.secret.clone();
    (
        created.org.id,
        Client::new(base.to_owned(), Some(secret.clone())),
        secret,
    )
}

/// Waits until the provider has `n` agents; returns them in registration order.
pub async fn wait_for_agents(provider: &Client, n: usize) -> Vec<Agent> {
    let mut seen = Vec::new();
    for _ in 0..600 {
        // The exchange may be restarting: errors are retried like an empty answer.
        if let Ok(list) = provider.list_agents().await {
            seen = list.items;
            if seen.len() >= n {
                return seen;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("expected {n} agents, saw {seen:#?}");
}

/// An offer on `pool_id`: 256 MiB per unit, 1000 micros per unit-second.
pub async fn offer(provider: &Client, pool_id: &str) -> Offer {
    provider
        .create_offer(
            &CreateOfferRequest {
                pool_id: pool_id.into(),
                class: "general".into(),
                cpus_per_unit: None,
                memory_mib_per_unit: 256,
                price_micros_per_unit_hour: 3_600_000,
                min_units: None,
                max_units: None,
                valid_from: None,
                valid_until: None,
            },
            None,
        )
        .await
        .unwrap()
}

/// A consumer with money and a metered lease of `units` on `offer`.
pub async fn consumer_with_lease(
    operator: &Client,
    base: &str,
    offer_id: &str,
    units: u64,
    auto_end: bool,
) -> (Client, Lease) {
    let (cid, consumer, _) = admit(operator, base, "Institute", OrgKind::Consumer).await;
    operator
        .deposit(
            &cid,
            &DepositRequest {
                amount_micros: 100_000_000,
                external_ref: "bank-1".into(),
            },
            None,
        )
        .await
        .unwrap();
    let lease = buy(&consumer, offer_id, units, auto_end).await;
    (consumer, lease)
}

pub async fn buy(consumer: &Client, offer_id: &str, units: u64, auto_end: bool) -> Lease {
    let lease = consumer
        .purchase(
            &PurchaseRequest {
                offer_id: offer_id.into(),
                units,
                duration_limit_s: 600,
                max_price_micros_per_unit_hour: None,
                auto_end,
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(lease.billing, "metered");
    lease
}

pub fn task(run: &str) -> CreateJobRequest {
    CreateJobRequest {
        task: TaskSpec {
            name: Some("t".into()),
            run: run.into(),
            ..TaskSpec::default()
        },
    }
}

/// Polls a job until `done` holds (errors, e.g. while the exchange restarts, are retried).
pub async fn wait_job(c: &Client, job_id: &str, done: impl Fn(&Job) -> bool) -> Job {
    let mut last = None;
    for _ in 0..1200 {
        if let Ok(j) = c.get_job(job_id).await {
            if done(&j) {
                return j;
            }
            last = Some(j);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {job_id} did not reach the expected state: {last:#?}");
}

/// Every log chunk of a job until it is done: (stdout, stderr, system).
pub async fn all_logs(c: &Client, job_id: &str) -> (String, String, String) {
    let (mut out, mut err, mut sys) = (String::new(), String::new(), String::new());
    let mut after = 0;
    loop {
        let page = c
            .job_logs(
                job_id,
                &LogParams {
                    after: Some(after),
                    limit: Some(1000),
                    wait_ms: Some(2000),
                },
            )
            .await
            .unwrap();
        for ch in &page.chunks {
            match ch.stream.as_str() {
                "stdout" => out.push_str(&ch.data),
                "stderr" => err.push_str(&ch.data),
                _ => sys.push_str(&ch.data),
            }
        }
        after = page.next_after;
        if page.done {
            return (out, err, sys);
        }
    }
}

/// Runs `echo <word>` on the lease and checks it succeeds with the word in its output: the
/// agent still serves.
pub async fn still_serves(consumer: &Client, lease_id: &str, word: &str) {
    let job = consumer
        .create_job(lease_id, &task(&format!("echo {word}")), None)
        .await
        .unwrap();
    let done = wait_job(consumer, &job.id, |j| {
        !matches!(j.state.as_str(), "queued" | "dispatched" | "running")
    })
    .await;
    assert_eq!(done.state, "succeeded", "{done:#?}");
    let (out, _, _) = all_logs(consumer, &job.id).await;
    assert!(out.contains(word), "{out:?}");
}

/// Reads a number the job wrote into a file of its directory.
pub fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The live processes of an attempt: every process of a job has `SUANLI_ATTEMPT_ID` in its
/// environment (the wrapper, the sandbox and the job's own processes).
pub fn processes_of(attempt_id: &str) -> Vec<i32> {
    let needle = format!("SUANLI_ATTEMPT_ID={attempt_id}");
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(environ) = std::fs::read(e.path().join("environ")) else {
                continue;
            };
            if environ.split(|b| *b == 0).any(|v| v == needle.as_bytes()) {
                out.push(pid);
            }
        }
    }
    out
}

/// Ends the lease (unless it has ended already) and checks what the consumer pays: exactly the
/// unit-seconds its jobs were acknowledged, at 1000 micros each; and that the ledger balances.
/// Returns the settled lease.
pub async fn settle(operator: &Client, consumer: &Client, lease_id: &str) -> Lease {
    let lease = consumer.get_lease(lease_id).await.unwrap();
    let lease = if lease.state == "active" {
        consumer.end_lease(lease_id, None).await.unwrap()
    } else {
        lease
    };
    let jobs = consumer
        .list_jobs(&JobListParams {
            lease_id: Some(lease_id.into()),
            state: None,
            limit: Some(1000),
        })
        .await
        .unwrap()
        .items;
    let acknowledged: u64 = jobs.iter().map(|j| j.unit_ms).sum();
    assert_eq!(
        lease.metered_unit_ms, acknowledged,
        "the lease meters what its jobs were acknowledged: {lease:#?} {jobs:#?}"
    );
    assert_eq!(lease.billed_unit_ms, Some(acknowledged), "{lease:#?}");
    // 1,000 micros per unit-second is 1 micro per unit-millisecond.
    assert_eq!(
        lease.cost_micros,
        Some(acknowledged),
        "the consumer pays exactly the acknowledged unit-milliseconds: {lease:#?}"
    );
    let check = operator.ledger_check().await.unwrap();
    assert!(check.ok, "{:?}", check.violations);
    lease
}

/// The usual market of an agent test: an exchange (with `adjust` applied), a provider whose real
/// agent runs on this machine (its config ending with `agent_extra`), an offer of its pool, and a
/// funded consumer holding a lease of one unit.
#[allow(dead_code)] // not every test file uses it
pub struct LocalMarket {
    pub dir: Scratch,
    pub x: Exchange,
    pub provider: Client,
    pub setup: AgentSetup,
    pub agent: AgentProcess,
    pub pool_id: String,
    pub consumer: Client,
    pub lease: Lease,
}

#[allow(dead_code)]
impl LocalMarket {
    pub async fn start(
        prefix: &str,
        adjust: impl FnOnce(&mut ServerConfig),
        agent_extra: &str,
    ) -> LocalMarket {
        let dir = Scratch::new(prefix);
        let x = exchange(dir.path(), adjust).await;
        let (_, provider, token) =
            admit(&x.operator, &x.base, "Local compute", OrgKind::Provider).await;
        let setup = agent_setup(dir.path(), &x.base, &token, "node-m", None);
        let mut text = std::fs::read_to_string(&setup.config).unwrap();
        text.push_str(agent_extra);
        std::fs::write(&setup.config, text).unwrap();
        let agent = AgentProcess::start(&setup);
        let pool_id = wait_for_agents(&provider, 1).await.remove(0).pool_id;
        let offer = offer(&provider, &pool_id).await;
        let (consumer, lease) =
            consumer_with_lease(&x.operator, &x.base, &offer.id, 1, false).await;
        LocalMarket {
            dir,
            x,
            provider,
            setup,
            agent,
            pool_id,
            consumer,
            lease,
        }
    }
}
