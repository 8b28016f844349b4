//! Benchmarks of jobs through the exchange and a real agent on this machine (local backend).
//!
//! Both start the real server in this process on 127.0.0.1:0 (SQLite in a temp dir), admit a
//! provider and spawn the real `suanli agent --config FILE` binary for it (its pool is this
//! machine), put a general offer on the agent's pool and fund a consumer. Then:
//!
//! - `jobs latency`: one lease of 1 unit (a lease runs one job at a time); N jobs `true` one after
//!   another, each submitted when the one before has ended (the agent is idle at submit). Per job:
//!   submit → `running` from the exchange's own timestamps (`created_at` → `attempts[0].started_at`),
//!   and, client side, submit → the job observed final (a long poll on its logs).
//! - `jobs throughput`: as many leases of 1 unit as the machine has CPUs, N jobs `true` spread
//!   round-robin over them, all submitted up front from a few tasks; done when every job is final
//!   and every lease ended (settled). Then the same N jobs through `sbatch` on a real single-node
//!   Slurm (`scripts/slurm.sh start`), done when `squeue` is empty, confirmed with `sacct -c`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use suanli_api::{
    CreateJobRequest, CreateOfferRequest, DepositRequest, Job, JobListParams, LogParams, OrgKind,
    PurchaseRequest, TaskSpec,
};
use suanli_client::Client;
use suanli_server::ServerConfig;
use suanli_store::Location;

use crate::purchases::admit;

use crate::stats::{ms, Latencies, Summary};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Which {
    /// Submit → running of one job at a time on an idle agent.
    Latency,
    /// N trivial jobs through the exchange and the agent, then the same through Slurm.
    Throughput,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sandbox {
    /// Bubblewrap when it works here (the agent's default).
    Auto,
    Never,
}

pub struct Options {
    pub which: Which,
    pub suanli_bin: PathBuf,
    /// Measured jobs (200 for latency, 1,000 for throughput when not given).
    pub jobs: Option<usize>,
    /// Latency: jobs run first and not counted.
    pub warmup: usize,
    /// Throughput: leases (0: as many as the machine's CPUs).
    pub leases: usize,
    /// Throughput: concurrent submitters (tasks for Suanli, threads for `sbatch`).
    pub submitters: usize,
    /// How often the throughput benchmark looks for the end (both sides).
    pub poll_ms: u64,
    /// Latency: pause between a job's end and the next submit.
    pub gap_ms: u64,
    pub sandbox: Sandbox,
    /// Throughput: leave Slurm out.
    pub no_slurm: bool,
    /// Give up after this long (each side).
    pub timeout_s: u64,
}

/// 3.6 CNY per unit-hour: 1,000 micros per unit-second, so metered costs are easy to check.
const PRICE_MICROS_PER_UNIT_HOUR: u64 = 3_600_000;

pub async fn run(o: &Options) -> anyhow::Result<Value> {
    let dir = std::env::temp_dir().join(suanli_store::ops::new_id("suanli-bench-jobs"));
    std::fs::create_dir_all(&dir)?;
    #[cfg(unix)]
    {
        // Jobs run as `nobody` when the agent is root: their directories must be reachable.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    }
    let result = match Market::start(o, &dir).await {
        Ok(mut market) => {
            let r = match o.which {
                Which::Latency => latency(o, &market).await,
                Which::Throughput => throughput(o, &market, &dir).await,
            };
            let r = r.map_err(|e| market.explain(e));
            market.stop_agent();
            r
        }
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_dir_all(&dir);
    result
}

// ------------------------------------------------------------------------------ the market

struct Market {
    base: String,
    operator: Client,
    consumer: Client,
    consumer_secret: String,
    offer_id: String,
    agent: Child,
    agent_log: PathBuf,
    isolation: String,
    isolation_full: String,
    node_cpus: u64,
}

impl Drop for Market {
    fn drop(&mut self) {
        self.stop_agent();
    }
}

impl Market {
    async fn start(o: &Options, dir: &Path) -> anyhow::Result<Market> {
        let bin = &o.suanli_bin;
        if !bin.is_file() {
            bail!(
                "{} not found: build it with `cargo build --release -p suanli` or pass --suanli-bin",
                bin.display()
            );
        }
        let config = ServerConfig::new(Location::Sqlite(
            dir.join("exchange.db").to_string_lossy().into_owned(),
        ));
        let (state, boot) = suanli_server::start(config)
            .await
            .context("start the server")?;
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let base = format!("http://{}", listener.local_addr()?);
        tokio::spawn(suanli_server::serve_on(listener, state));
        let operator = Client::new(base.clone(), boot.token_secret.clone());

        // The provider and its agent: the real binary, this machine's measured capacity.
        let (_, provider_secret) = admit(&operator, "Bench Provider", OrgKind::Provider).await?;
        let provider = Client::new(base.clone(), Some(provider_secret.clone()));
        let token_file = dir.join("provider.token");
        write_private(&token_file, &provider_secret)?;
        let config_file = dir.join("agent.toml");
        let sandbox = match o.sandbox {
            Sandbox::Auto => "auto",
            Sandbox::Never => "never",
        };
        std::fs::write(
            &config_file,
            format!(
                "server = \"{base}\"\ntoken_file = \"{}\"\nname = \"bench-node\"\nzone = \"wuqing-core\"\n\
                 state_dir = \"{}\"\njobs_dir = \"{}\"\nsandbox = \"{sandbox}\"\nusage_interval_s = 5\n",
                token_file.display(),
                dir.join("agent").display(),
                dir.join("jobs").display(),
            ),
        )?;
        let agent_log = dir.join("agent.log");
        let agent = Command::new(bin)
            .args(["agent", "--config"])
            .arg(&config_file)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&agent_log)?)
            .spawn()
            .with_context(|| format!("start {} agent", bin.display()))?;
        let mut market = Market {
            base: base.clone(),
            operator,
            consumer: Client::new(base.clone(), None),
            consumer_secret: String::new(),
            offer_id: String::new(),
            agent,
            agent_log,
            isolation: String::new(),
            isolation_full: String::new(),
            node_cpus: 0,
        };
        let registered = async {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Some(a) = provider.list_agents().await?.items.into_iter().next() {
                    return Ok(a);
                }
                if let Ok(Some(status)) = market.agent.try_wait() {
                    bail!("the agent exited ({status}) before registering");
                }
                if Instant::now() > deadline {
                    bail!("the agent did not register within 60 s");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        .await;
        let agent = registered.map_err(|e| market.explain(e))?;
        market.isolation = short_isolation(&agent.isolation);
        market.isolation_full = agent.isolation.clone();
        let pool = provider.get_pool(&agent.pool_id).await?;
        market.node_cpus = pool.nodes.first().map(|n| n.cpus).unwrap_or(1);
        let offer = provider
            .create_offer(
                &CreateOfferRequest {
                    pool_id: agent.pool_id.clone(),
                    class: "general".into(),
                    cpus_per_unit: None,
                    memory_mib_per_unit: 256,
                    price_micros_per_unit_hour: PRICE_MICROS_PER_UNIT_HOUR,
                    min_units: None,
                    max_units: None,
                    valid_from: None,
                    valid_until: None,
                },
                None,
            )
            .await
            .context("create the offer")?;
        market.offer_id = offer.id;
        let (consumer_id, consumer_secret) =
            admit(&market.operator, "Bench Consumer", OrgKind::Consumer).await?;
        market
            .operator
            .deposit(
                &consumer_id,
                &DepositRequest {
                    amount_micros: 1_000_000_000,
                    external_ref: "bench".into(),
                },
                None,
            )
            .await
            .context("fund the consumer")?;
        market.consumer = Client::new(base, Some(consumer_secret.clone()));
        market.consumer_secret = consumer_secret;
        Ok(market)
    }

    /// A client of the consumer with a connection of its own.
    fn consumer_client(&self) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .timeout(Duration::from_secs(60))
            .build()?;
        Ok(Client::with_http(
            self.base.clone(),
            Some(self.consumer_secret.clone()),
            http,
        ))
    }

    async fn lease(&self, key: &str) -> anyhow::Result<String> {
        let lease = self
            .consumer
            .purchase(
                &PurchaseRequest {
                    offer_id: self.offer_id.clone(),
                    units: 1,
                    duration_limit_s: 3_600,
                    max_price_micros_per_unit_hour: None,
                    auto_end: false,
                },
                Some(key),
            )
            .await
            .context("buy a lease")?;
        if lease.billing != "metered" {
            bail!(
                "the lease is billed {:?}, not metered: no agent serves the pool",
                lease.billing
            );
        }
        Ok(lease.id)
    }

    /// Adds the end of the agent's stderr to an error.
    fn explain(&self, e: anyhow::Error) -> anyhow::Error {
        let log = std::fs::read_to_string(&self.agent_log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(10).collect();
        if tail.is_empty() {
            e
        } else {
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            e.context(format!("agent stderr (last lines):\n{}", tail.join("\n")))
        }
    }

    fn stop_agent(&mut self) {
        if let Ok(None) = self.agent.try_wait() {
            let _ = self.agent.kill();
            let _ = self.agent.wait();
        }
    }
}

/// `cgroup v1 + bubblewrap` from the agent's long isolation summary.
fn short_isolation(s: &str) -> String {
    let limits = if s.contains("cgroup v2") {
        "cgroup v2"
    } else if s.contains("cgroup v1") {
        "cgroup v1"
    } else if s.contains("rlimit") {
        "rlimits"
    } else {
        "no limits"
    };
    if s.contains("sandbox bubblewrap") {
        format!("{limits} + bubblewrap")
    } else {
        limits.to_owned()
    }
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

fn trivial_job() -> CreateJobRequest {
    CreateJobRequest {
        task: TaskSpec {
            name: Some("true".into()),
            run: "true".into(),
            ..TaskSpec::default()
        },
    }
}

/// Waits until a job is final, with long polls on its logs (answered as soon as it ends).
async fn wait_final(c: &Client, job_id: &str, deadline: Instant) -> anyhow::Result<()> {
    let mut after = 0;
    loop {
        let page = c
            .job_logs(
                job_id,
                &LogParams {
                    after: Some(after),
                    limit: Some(1_000),
                    wait_ms: Some(10_000),
                },
            )
            .await
            .with_context(|| format!("follow job {job_id}"))?;
        after = page.next_after;
        if page.done {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("job {job_id} did not end in time (state {})", page.state);
        }
    }
}

// ------------------------------------------------------------------------------ timestamps

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2026-11-27T17:26:00.123Z` (or without fraction or zone, as `sacct` prints local times) →
/// milliseconds since the epoch (the zone is ignored: only differences are used).
fn epoch_ms(s: &str) -> Option<i64> {
    let s = s.trim().trim_end_matches('Z');
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.split(':').map(|x| x.parse::<i64>().ok());
    let (h, mi, se) = (t.next()??, t.next()??, t.next()??);
    let frac_ms = if frac.is_empty() {
        0
    } else {
        let digits: String = frac
            .chars()
            .take_while(char::is_ascii_digit)
            .chain("000".chars())
            .take(3)
            .collect();
        digits.parse::<i64>().ok()?
    };
    Some((days_from_civil(y, mo, da) * 86_400 + h * 3_600 + mi * 60 + se) * 1_000 + frac_ms)
}

/// The exchange's view of one job, in ms since the epoch.
#[derive(Debug, Clone, Copy)]
struct JobTimes {
    created: i64,
    dispatched: i64,
    running: i64,
    ended: i64,
}

fn job_times(j: &Job) -> Option<JobTimes> {
    let a = j.attempts.first()?;
    Some(JobTimes {
        created: epoch_ms(&j.created_at)?,
        dispatched: epoch_ms(&a.dispatched_at)?,
        running: epoch_ms(a.started_at.as_deref()?)?,
        ended: epoch_ms(a.ended_at.as_deref().or(j.ended_at.as_deref())?)?,
    })
}

fn record_ms(l: &mut Latencies, from: i64, to: i64) {
    l.record(Duration::from_millis(u64::try_from(to - from).unwrap_or(0)));
}

fn p(s: &Summary) -> String {
    format!("p50 {} / p99 {}", ms(s.p50_us), ms(s.p99_us))
}

// ------------------------------------------------------------------------------ CPU accounting

/// Busy and total ticks of the whole machine (`/proc/stat`), and CPU ticks of the agent
/// (itself, and the children it reaped: the jobs).
#[derive(Debug, Clone, Copy, Default)]
struct Ticks {
    machine_busy: u64,
    machine_total: u64,
    agent_self: u64,
    agent_children: u64,
    at: Option<Instant>,
}

fn pid_ticks(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    Some((f.get(11)? + f.get(12)?, f.get(13)? + f.get(14)?))
}

impl Ticks {
    fn now(agent_pid: Option<u32>) -> Ticks {
        let mut t = Ticks {
            at: Some(Instant::now()),
            ..Ticks::default()
        };
        if let Some(line) = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| s.lines().next().map(str::to_owned))
        {
            let v: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .map(|x| x.parse().unwrap_or(0))
                .collect();
            // user nice system idle iowait irq softirq steal (guest time is inside user).
            let total: u64 = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            t.machine_total = total;
            t.machine_busy = total.saturating_sub(idle);
        }
        if let Some((own, children)) = agent_pid.and_then(pid_ticks) {
            t.agent_self = own;
            t.agent_children = children;
        }
        t
    }

    /// Average cores used between two samples (ticks are 1/100 s).
    fn since(&self, before: &Ticks) -> Value {
        let wall = match (self.at, before.at) {
            (Some(a), Some(b)) => (a - b).as_secs_f64().max(1e-9),
            _ => return Value::Null,
        };
        let cores =
            |a: u64, b: u64| ((a.saturating_sub(b)) as f64 / 100.0 / wall * 100.0).round() / 100.0;
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get() as f64)
            .unwrap_or(1.0);
        let busy_share = (self.machine_busy.saturating_sub(before.machine_busy)) as f64
            / (self.machine_total.saturating_sub(before.machine_total)).max(1) as f64;
        json!({
            "machine_busy_cores": (busy_share * cpus * 100.0).round() / 100.0,
            "agent_cores": cores(self.agent_self, before.agent_self),
            "agent_jobs_cores": cores(self.agent_children, before.agent_children),
        })
    }
}

// ------------------------------------------------------------------------------ latency

async fn latency(o: &Options, m: &Market) -> anyhow::Result<Value> {
    let n = o.jobs.unwrap_or(200).max(1);
    let lease = m.lease("bench-latency-lease").await?;
    let c = m.consumer_client()?;
    let deadline = Instant::now() + Duration::from_secs(o.timeout_s);
    let mut to_running = Latencies::with_capacity(n);
    let mut to_dispatched = Latencies::with_capacity(n);
    let mut dispatched_to_running = Latencies::with_capacity(n);
    let mut running_to_ended = Latencies::with_capacity(n);
    let mut submit_call = Latencies::with_capacity(n);
    let mut to_final_client = Latencies::with_capacity(n);
    let mut not_succeeded: BTreeMap<String, u64> = BTreeMap::new();
    let mut cpu = (Ticks::default(), Ticks::default());
    for i in 0..o.warmup + n {
        let measured = i >= o.warmup;
        if i == o.warmup {
            cpu.0 = Ticks::now(Some(m.agent.id()));
        }
        let t0 = Instant::now();
        let job = c
            .create_job(&lease, &trivial_job(), Some(&format!("bench-latency-{i}")))
            .await
            .context("submit a job")?;
        let t_created = t0.elapsed();
        wait_final(&c, &job.id, deadline).await?;
        let t_final = t0.elapsed();
        let j = c.get_job(&job.id).await?;
        if j.state != "succeeded" {
            *not_succeeded.entry(j.state.clone()).or_default() += 1;
        }
        if measured {
            submit_call.record(t_created);
            to_final_client.record(t_final);
            let t =
                job_times(&j).with_context(|| format!("job {} lacks timestamps: {j:?}", j.id))?;
            record_ms(&mut to_running, t.created, t.running);
            record_ms(&mut to_dispatched, t.created, t.dispatched);
            record_ms(&mut dispatched_to_running, t.dispatched, t.running);
            record_ms(&mut running_to_ended, t.running, t.ended);
        }
        if o.gap_ms > 0 {
            tokio::time::sleep(Duration::from_millis(o.gap_ms)).await;
        }
    }
    cpu.1 = Ticks::now(Some(m.agent.id()));
    let ended = m
        .consumer
        .end_lease(&lease, Some("bench-latency-end"))
        .await?;
    let check = m.operator.ledger_check().await.context("ledger check")?;
    let s = to_running.summary();
    let (d, dr, re, sc, cf) = (
        to_dispatched.summary(),
        dispatched_to_running.summary(),
        running_to_ended.summary(),
        submit_call.summary(),
        to_final_client.summary(),
    );
    let failed: u64 = not_succeeded.values().sum();
    println!(
        "job_latency [local, {}]: submit → running over {n} jobs `true` (after {} warm-up): p50 {}, p99 {}, max {} \
         (exchange timestamps, ms resolution; goal p50 ≤ 50 ms: {}); of which queued → dispatched {}, dispatched → running {}; \
         running → ended {}; client: POST {}, submit → observed final {} (max {}); {failed} not succeeded{}; \
         lease ended, cost {} µCNY for {} unit-ms; ledger check {}; CPU {}",
        m.isolation,
        o.warmup,
        ms(s.p50_us),
        ms(s.p99_us),
        ms(s.max_us),
        if s.p50_us <= 50_000 { "met" } else { "missed" },
        p(&d),
        p(&dr),
        p(&re),
        p(&sc),
        p(&cf),
        ms(cf.max_us),
        if failed > 0 { format!(" {not_succeeded:?}") } else { String::new() },
        ended.cost_micros.unwrap_or(0),
        ended.metered_unit_ms,
        if check.ok { "ok" } else { "FAILED" },
        cpu.1.since(&cpu.0),
    );
    Ok(json!({
        "bench": "job_latency",
        "backend": "local",
        "isolation": m.isolation,
        "isolation_full": m.isolation_full,
        "jobs": n,
        "warmup": o.warmup,
        "gap_ms": o.gap_ms,
        "latency": s.json(),
        "queued_to_dispatched": d.json(),
        "dispatched_to_running": dr.json(),
        "running_to_ended": re.json(),
        "submit_call": sc.json(),
        "submit_to_observed_final": cf.json(),
        "not_succeeded": not_succeeded,
        "lease_cost_micros": ended.cost_micros,
        "lease_metered_unit_ms": ended.metered_unit_ms,
        "ledger_ok": check.ok,
        "cpu": cpu.1.since(&cpu.0),
        "goal_p50_us": 50_000,
    }))
}

// ------------------------------------------------------------------------------ throughput

async fn open_jobs(c: &Client) -> anyhow::Result<bool> {
    // States only move forward, so checking them in this order cannot miss a job.
    for state in ["queued", "dispatched", "running"] {
        let page = c
            .list_jobs(&JobListParams {
                lease_id: None,
                state: Some(state.into()),
                limit: Some(1),
            })
            .await?;
        if !page.items.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

async fn throughput(o: &Options, m: &Market, dir: &Path) -> anyhow::Result<Value> {
    let n = o.jobs.unwrap_or(1_000).max(1);
    let machine_cpus = std::thread::available_parallelism()
        .map(|x| x.get())
        .unwrap_or(1);
    let leases_n = if o.leases == 0 {
        machine_cpus
    } else {
        o.leases
    };
    let submitters = o.submitters.max(1);
    let mut leases = Vec::with_capacity(leases_n);
    for i in 0..leases_n {
        leases.push(m.lease(&format!("bench-tp-lease-{i}")).await?);
    }
    let poll = Duration::from_millis(o.poll_ms.max(1));
    let deadline = Instant::now() + Duration::from_secs(o.timeout_s);

    // Suanli: every job submitted up front, round-robin over the leases, from a few tasks.
    let cpu0 = Ticks::now(Some(m.agent.id()));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(submitters);
    for s in 0..submitters {
        let c = m.consumer_client()?;
        let leases = leases.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            let mut lat = Latencies::with_capacity(n / submitters + 1);
            for i in (s..n).step_by(submitters) {
                let t = Instant::now();
                let job = c
                    .create_job(
                        &leases[i % leases.len()],
                        &trivial_job(),
                        Some(&format!("bench-tp-{i}")),
                    )
                    .await
                    .with_context(|| format!("submit job {i}"))?;
                lat.record(t.elapsed());
                ids.push((i, job.id));
            }
            anyhow::Ok((ids, lat))
        }));
    }
    let mut ids: Vec<(usize, String)> = Vec::with_capacity(n);
    let mut submit_lat = Latencies::with_capacity(n);
    for t in tasks {
        let (i, l) = t.await??;
        ids.extend(i);
        submit_lat.extend(l);
    }
    let submitted = start.elapsed();
    while open_jobs(&m.consumer).await? {
        if Instant::now() > deadline {
            bail!("the jobs did not all end within {} s", o.timeout_s);
        }
        tokio::time::sleep(poll).await;
    }
    let all_final = start.elapsed();
    let mut ends = Vec::with_capacity(leases.len());
    for (i, lease) in leases.iter().enumerate() {
        let c = m.consumer_client()?;
        let lease = lease.clone();
        ends.push(tokio::spawn(async move {
            c.end_lease(&lease, Some(&format!("bench-tp-end-{i}")))
                .await
                .context("end a lease")
        }));
    }
    let mut ended = Vec::with_capacity(leases.len());
    for e in ends {
        ended.push(e.await??);
    }
    let settled = start.elapsed();
    let cpu = Ticks::now(Some(m.agent.id())).since(&cpu0);
    let suanli_rate = n as f64 / settled.as_secs_f64();

    // Checks, outside the measured time: every job succeeded, the metered cost is what the jobs'
    // acknowledged use says, the ledger balances.
    ids.sort();
    let mut jobs: Vec<Job> = Vec::with_capacity(n);
    for chunk in ids.chunks(n.div_ceil(submitters)) {
        let c = m.consumer_client()?;
        let chunk: Vec<String> = chunk.iter().map(|(_, id)| id.clone()).collect();
        let got = tokio::spawn(async move {
            let mut out = Vec::with_capacity(chunk.len());
            for id in chunk {
                out.push(c.get_job(&id).await?);
            }
            anyhow::Ok(out)
        });
        jobs.extend(got.await??);
    }
    let mut states: BTreeMap<String, u64> = BTreeMap::new();
    let mut use_per_lease: HashMap<String, u64> = HashMap::new();
    for j in &jobs {
        *states.entry(j.state.clone()).or_default() += 1;
        *use_per_lease.entry(j.lease_id.clone()).or_default() += j.unit_ms;
    }
    let succeeded = states.get("succeeded").copied().unwrap_or(0);
    let mut cost_ok = true;
    let mut total_cost = 0u64;
    let mut metered_total = 0u64;
    for l in &ended {
        let expected_use = use_per_lease.get(&l.id).copied().unwrap_or(0);
        let expected_cost = l.metered_unit_ms * PRICE_MICROS_PER_UNIT_HOUR / 3_600_000;
        cost_ok &= l.state == "ended"
            && l.metered_unit_ms == expected_use
            && l.cost_micros == Some(expected_cost);
        total_cost += l.cost_micros.unwrap_or(0);
        metered_total += l.metered_unit_ms;
    }
    let check = m.operator.ledger_check().await.context("ledger check")?;

    // Per job, from the exchange's timestamps: where the time of a job goes, and how long a lease
    // (a slot) stays idle between the end of one job and the dispatch of the next.
    let mut queued = Latencies::with_capacity(n);
    let mut start_lat = Latencies::with_capacity(n);
    let mut run_lat = Latencies::with_capacity(n);
    let mut slot_gap = Latencies::with_capacity(n);
    let mut per_lease: HashMap<&str, Vec<JobTimes>> = HashMap::new();
    for j in &jobs {
        if let Some(t) = job_times(j) {
            record_ms(&mut queued, t.created, t.dispatched);
            record_ms(&mut start_lat, t.dispatched, t.running);
            record_ms(&mut run_lat, t.running, t.ended);
            per_lease.entry(j.lease_id.as_str()).or_default().push(t);
        }
    }
    for times in per_lease.values_mut() {
        times.sort_by_key(|t| t.dispatched);
        for w in times.windows(2) {
            record_ms(&mut slot_gap, w[0].ended, w[1].dispatched);
        }
    }
    let (sq, ss, sr, sg, sl) = (
        queued.summary(),
        start_lat.summary(),
        run_lat.summary(),
        slot_gap.summary(),
        submit_lat.summary(),
    );
    let suanli = json!({
        "jobs": n,
        "leases": leases_n,
        "submitters": submitters,
        "isolation": m.isolation,
        "isolation_full": m.isolation_full,
        "node_cpus": m.node_cpus,
        "submitted_s": round3(submitted.as_secs_f64()),
        "all_final_s": round3(all_final.as_secs_f64()),
        "settled_s": round3(settled.as_secs_f64()),
        "jobs_per_s": round1(suanli_rate),
        "states": states,
        "metered_unit_ms": metered_total,
        "cost_micros": total_cost,
        "cost_ok": cost_ok,
        "ledger_ok": check.ok,
        "submit_call": sl.json(),
        "queued_to_dispatched": sq.json(),
        "dispatched_to_running": ss.json(),
        "running_to_ended": sr.json(),
        "lease_idle_between_jobs": sg.json(),
        "cpu": cpu,
    });

    // Slurm: the same jobs through sbatch, from as many threads.
    let slurm = if o.no_slurm {
        json!({"skipped": "--no-slurm"})
    } else {
        let work = dir.join("slurm");
        std::fs::create_dir_all(&work)?;
        let (threads, timeout) = (submitters, o.timeout_s);
        match tokio::task::spawn_blocking(move || slurm_run(n, threads, &work, poll, timeout))
            .await?
        {
            Ok(v) => v,
            Err(e) => json!({"error": format!("{e:#}")}),
        }
    };
    let slurm_rate = slurm.get("jobs_per_s").and_then(Value::as_f64);
    let ratio = slurm_rate.map(|s| round2(suanli_rate / s.max(1e-9)));
    let goal_met = ratio.is_some_and(|r| r >= 5.0) && succeeded == n as u64 && check.ok && cost_ok;
    println!(
        "jobs_throughput [local, {}]: Suanli {n} jobs `true` on {leases_n} leases of 1 unit ({submitters} submitters): \
         {suanli_rate:.1} jobs/s (submitted in {:.2} s, all final at {:.2} s, leases settled at {:.2} s); \
         states {states:?}; metered {metered_total} unit-ms, cost {total_cost} µCNY ({}); ledger check {}; \
         per job: POST {}, queued → dispatched {}, dispatched → running {}, running → ended {}, a lease idle between jobs {}; CPU {cpu} \
         || Slurm: {} || ratio {} (goal ≥ 5×: {})",
        m.isolation,
        submitted.as_secs_f64(),
        all_final.as_secs_f64(),
        settled.as_secs_f64(),
        if cost_ok { "matches the jobs' use" } else { "MISMATCH" },
        if check.ok { "ok" } else { "FAILED" },
        p(&sl),
        p(&sq),
        p(&ss),
        p(&sr),
        p(&sg),
        describe_slurm(&slurm),
        ratio.map(|r| format!("{r:.2}×")).unwrap_or_else(|| "?".into()),
        if goal_met { "met" } else { "missed" },
    );
    Ok(json!({
        "bench": "jobs_throughput",
        "backend": "local",
        "jobs": n,
        "rate_per_s": round1(suanli_rate),
        "latency": sl.json(),
        "suanli": suanli,
        "slurm": slurm,
        "ratio": ratio,
        "goal_ratio": 5.0,
        "goal_met": goal_met,
    }))
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

// ------------------------------------------------------------------------------ Slurm

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn queued_ids() -> anyhow::Result<Vec<String>> {
    Ok(output(Command::new("squeue").args(["-h", "-o", "%i"]))?
        .split_whitespace()
        .map(str::to_owned)
        .collect())
}

fn slurm_run(
    n: usize,
    threads: usize,
    work: &Path,
    poll: Duration,
    timeout_s: u64,
) -> anyhow::Result<Value> {
    let ping = output(Command::new("scontrol").arg("ping"))
        .context("Slurm is not reachable (scripts/slurm.sh start)")?;
    if !ping.contains("UP") {
        bail!("slurmctld is not up: {}", ping.trim());
    }
    let nodes = output(Command::new("sinfo").args(["-h", "-o", "%N %c %T"]))?;
    let version = output(Command::new("sbatch").arg("--version"))?;
    let config = output(Command::new("scontrol").args(["show", "config"]))?;
    let sched = config
        .lines()
        .find(|l| l.starts_with("SchedulerParameters"))
        .and_then(|l| l.split_once('='))
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty() && *v != "(null)")
        .unwrap_or("defaults")
        .to_owned();
    // Nothing of an earlier run may still be in the queue.
    let wait_until = Instant::now() + Duration::from_secs(60);
    while !queued_ids()?.is_empty() {
        if Instant::now() > wait_until {
            bail!("Slurm's queue is not empty: other jobs are queued");
        }
        std::thread::sleep(poll);
    }
    let deadline = Instant::now() + Duration::from_secs(timeout_s);
    let start = Instant::now();
    let results: Vec<anyhow::Result<(Vec<String>, Latencies)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut ids = Vec::new();
                    let mut lat = Latencies::with_capacity(n / threads + 1);
                    for _ in (t..n).step_by(threads) {
                        let s = Instant::now();
                        let out = output(
                            Command::new("sbatch")
                                .arg("--parsable")
                                .arg("-D")
                                .arg(work)
                                .args(["-o", "/dev/null", "--wrap", "true"]),
                        )?;
                        lat.record(s.elapsed());
                        let id = out.trim().split(';').next().unwrap_or("").to_owned();
                        if id.is_empty() {
                            bail!("sbatch printed no job id");
                        }
                        ids.push(id);
                    }
                    Ok((ids, lat))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a thread panicked")))
            })
            .collect()
    });
    let mut ids = Vec::with_capacity(n);
    let mut sbatch_lat = Latencies::with_capacity(n);
    for r in results {
        let (i, l) = r?;
        ids.extend(i);
        sbatch_lat.extend(l);
    }
    let submitted = start.elapsed();
    loop {
        let q = queued_ids()?;
        if q.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "Slurm's queue still held {} jobs after {timeout_s} s",
                q.len()
            );
        }
        std::thread::sleep(poll);
    }
    let done = start.elapsed();
    let rate = n as f64 / done.as_secs_f64();

    // Confirmation: the jobcomp file (`sacct -c`) lists every job, with its state and times. Its
    // `Submit` column shows the start time there (22.05); `Eligible` is the submit time (no
    // dependencies or holds here).
    let ours: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let mut states: BTreeMap<String, u64> = BTreeMap::new();
    let mut wait = Latencies::with_capacity(n);
    let mut run = Latencies::with_capacity(n);
    let mut confirmed = 0usize;
    let mut confirm_error = None;
    for _ in 0..50 {
        match output(Command::new("sacct").args([
            "-c",
            "-n",
            "-P",
            "-o",
            "JobID,State,ExitCode,Eligible,Start,End",
        ])) {
            Ok(text) => {
                states.clear();
                wait = Latencies::with_capacity(n);
                run = Latencies::with_capacity(n);
                let mut seen = HashSet::new();
                for line in text.lines() {
                    let f: Vec<&str> = line.split('|').collect();
                    if f.len() < 6 || !ours.contains(f[0]) || !seen.insert(f[0]) {
                        continue;
                    }
                    *states.entry(f[1].to_owned()).or_default() += 1;
                    if let (Some(s), Some(b), Some(e)) =
                        (epoch_ms(f[3]), epoch_ms(f[4]), epoch_ms(f[5]))
                    {
                        record_ms(&mut wait, s, b);
                        record_ms(&mut run, b, e);
                    }
                }
                confirmed = seen.len();
                confirm_error = None;
                if confirmed == n {
                    break;
                }
            }
            Err(e) => confirm_error = Some(format!("{e:#}")),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (sl, sw, sr) = (sbatch_lat.summary(), wait.summary(), run.summary());
    Ok(json!({
        "jobs": n,
        "threads": threads,
        "version": version.trim(),
        "scheduler_parameters": sched,
        "node": nodes.trim(),
        "submitted_s": round3(submitted.as_secs_f64()),
        "queue_empty_s": round3(done.as_secs_f64()),
        "jobs_per_s": round3(rate),
        "job_ids": ids.len(),
        "confirmed_by_sacct": confirmed,
        "states": states,
        "confirm_error": confirm_error,
        "sbatch_call": sl.json(),
        "submit_to_start_1s_resolution": sw.json(),
        "start_to_end_1s_resolution": sr.json(),
    }))
}

fn describe_slurm(v: &Value) -> String {
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        return format!("not measured: {e}");
    }
    if let Some(e) = v.get("skipped").and_then(Value::as_str) {
        return format!("skipped ({e})");
    }
    let lat = |k: &str| {
        let l = &v[k];
        format!(
            "p50 {} / p99 {}",
            ms(l["p50_us"].as_u64().unwrap_or(0)),
            ms(l["p99_us"].as_u64().unwrap_or(0))
        )
    };
    format!(
        "{} jobs `sbatch --wrap true` ({} threads, {}, SchedulerParameters {}): {} jobs/s (submitted in {} s, queue empty at {} s); \
         sacct -c confirms {} of them: {}; per job: sbatch {}, submit → start {} and start → end {} (1 s resolution)",
        v["jobs"],
        v["threads"],
        v["version"].as_str().unwrap_or("?"),
        v["scheduler_parameters"].as_str().unwrap_or("?"),
        v["jobs_per_s"],
        v["submitted_s"],
        v["queue_empty_s"],
        v["confirmed_by_sacct"],
        v["states"],
        lat("sbatch_call"),
        lat("submit_to_start_1s_resolution"),
        lat("start_to_end_1s_resolution"),
    )
}

// ------------------------------------------------------------------------------ table rows

fn us(v: &Value, k: &str) -> String {
    let x = v
        .get(k)
        .and_then(|l| l.get("p50_us"))
        .and_then(Value::as_u64);
    x.map(|x| format!("{:.1} ms", x as f64 / 1000.0))
        .unwrap_or_else(|| "—".into())
}

fn us99(v: &Value, k: &str) -> String {
    let x = v
        .get(k)
        .and_then(|l| l.get("p99_us"))
        .and_then(Value::as_u64);
    x.map(|x| format!("{:.1} ms", x as f64 / 1000.0))
        .unwrap_or_else(|| "—".into())
}

/// The jobs rows of the markdown table (same columns as `table::print`).
pub fn print_table(path: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {path}"))?;
    let results: Vec<Value> = text
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let find = |bench: &str| {
        results
            .iter()
            .find(|r| r.get("bench").and_then(Value::as_str) == Some(bench))
    };
    if let Some(r) = find("job_latency") {
        let p50 = r["latency"]["p50_us"].as_u64().unwrap_or(u64::MAX);
        println!(
            "| Job submit → running | local backend, real `suanli agent` ({}), 1 lease of 1 unit, {} jobs `true` one at a time; exchange timestamps (ms) | — | {} | {} | p50 ≤ 50 ms | {} |",
            r["isolation"].as_str().unwrap_or("?"),
            r["jobs"],
            us(r, "latency"),
            us99(r, "latency"),
            if p50 <= 50_000 { "**met**" } else { "**missed**" },
        );
    }
    let throughput = results
        .iter()
        .filter(|r| r.get("bench").and_then(Value::as_str) == Some("jobs_throughput"));
    for r in throughput {
        let s = &r["suanli"];
        let ratio = r["ratio"].as_f64();
        println!(
            "| {} trivial jobs, Suanli | {} leases of 1 unit, {} submitters, until every lease is settled; ledger {}, cost {}; latency of `POST …/jobs` | {:.1} jobs/s | {} | {} | ≥ 5× Slurm | {} |",
            r["jobs"],
            s["leases"],
            s["submitters"],
            if s["ledger_ok"].as_bool() == Some(true) { "ok" } else { "FAILED" },
            if s["cost_ok"].as_bool() == Some(true) { "ok" } else { "MISMATCH" },
            s["jobs_per_s"].as_f64().unwrap_or(0.0),
            us(s, "submit_call"),
            us99(s, "submit_call"),
            match ratio {
                Some(x) if r["goal_met"].as_bool() == Some(true) => format!("**met** ({x:.2}×)"),
                Some(x) => format!("**missed** ({x:.2}×)"),
                None => "not compared (no Slurm figure)".into(),
            },
        );
        let sl = &r["slurm"];
        if let Some(rate) = sl["jobs_per_s"].as_f64() {
            println!(
                "| {} trivial jobs, Slurm | single-node Slurm ({}, SchedulerParameters: {}), `sbatch --wrap true` from {} threads, until `squeue` is empty; latency of `sbatch` | {rate:.2} jobs/s | {} | {} | baseline | — |",
                sl["jobs"],
                sl["version"].as_str().unwrap_or("?"),
                sl["scheduler_parameters"].as_str().unwrap_or("?"),
                sl["threads"],
                us(sl, "sbatch_call"),
                us99(sl, "sbatch_call"),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::epoch_ms;

    #[test]
    fn timestamps_parse_to_epoch_ms() {
        assert_eq!(epoch_ms("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(epoch_ms("1970-01-02T00:00:01.5Z"), Some(86_401_500));
        assert_eq!(
            epoch_ms("2026-11-27T17:26:00.123Z"),
            Some(1_795_800_360_123)
        );
        // `sacct` prints local times without a zone or fraction.
        assert_eq!(epoch_ms("2000-03-01T00:00:00"), Some(951_868_800_000));
        assert_eq!(epoch_ms("not a time"), None);
    }
}
