//! Benchmark 2: durable purchases through the HTTP API.
//!
//! Starts the real server in this process on 127.0.0.1:0 (SQLite in a temp dir with WAL, each
//! batch's WAL fsynced before it is answered, or a fresh PostgreSQL database), creates a market through the client (one
//! provider with one pool and one general offer, one funded consumer org per connection), then runs
//! `connections` tokio tasks, each with its own kept-alive HTTP/1.1 connection (the lean client in
//! `http1`, so that the load generator takes little of the CPUs the server is measured on, as
//! `pgbench` does), looping `POST /api/v1/leases` (one unit for 60 s) with a fresh
//! `Idempotency-Key` per request. Every 201 must carry the lease's id. Requests that complete during the
//! measured window (after a warm-up) count; only 201s count as purchases, anything else is reported
//! separately. With `--end`, each purchase is followed by `POST /leases/{id}/end` on the same
//! connection (the all-in lifecycle of a short job).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use suanli_api::{
    ConsumerType, CreateOfferRequest, CreateOrgRequest, CreatePoolRequest, DepositRequest,
    NodeSpec, OrgKind,
};
use suanli_client::Client;
use suanli_server::ServerConfig;
use suanli_store::{Location, WriterConfig};

use crate::http1;
use crate::stats::{ms, Latencies, WriterSample};

/// The part of a created lease the clients read.
#[derive(serde::Deserialize)]
struct Created {
    id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// SQLite with group commit (the default writer).
    Sqlite,
    /// PostgreSQL with group commit.
    Postgres,
    /// SQLite with one commit per request (`max_batch: 1`): the naive baseline.
    NaiveSqlite,
}

impl StoreKind {
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Sqlite => "sqlite",
            StoreKind::Postgres => "postgres",
            StoreKind::NaiveSqlite => "naive-sqlite",
        }
    }
}

pub struct Options {
    pub backend: StoreKind,
    pub seconds: u64,
    pub warmup_seconds: u64,
    pub connections: usize,
    pub nodes: usize,
    pub cpus_per_node: u64,
    pub end: bool,
    /// The group-committing writer's `max_batch` (not the naive baseline's).
    pub max_batch: usize,
    pub database_url: Option<String>,
}

/// Where the bench's database lives, and what to clean up afterwards.
pub struct Db {
    pub location: Location,
    pub url: Option<String>,
    pub dir: Option<std::path::PathBuf>,
}

impl Db {
    pub fn fresh(postgres: bool, database_url: Option<&str>, what: &str) -> anyhow::Result<Db> {
        if postgres {
            let admin = database_url.context(
                "--database-url (or SUANLI_BENCH_DATABASE_URL) is needed for PostgreSQL",
            )?;
            let url = crate::pg::fresh_database(admin, what)?;
            Ok(Db {
                location: Location::Postgres(url.clone()),
                url: Some(url),
                dir: None,
            })
        } else {
            let dir = std::env::temp_dir()
                .join(suanli_store::ops::new_id(&format!("suanli-bench-{what}")));
            std::fs::create_dir_all(&dir)?;
            let path = dir.join("bench.db").to_string_lossy().into_owned();
            Ok(Db {
                location: Location::Sqlite(path),
                url: None,
                dir: Some(dir),
            })
        }
    }

    pub fn cleanup(&self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[derive(Default)]
struct TaskResult {
    latencies: Latencies,
    purchases_in_window: u64,
    ends_in_window: u64,
    purchases_total: u64,
    ends_total: u64,
    other_statuses: BTreeMap<String, u64>,
    sample_error: Option<String>,
}

impl TaskResult {
    fn other(&mut self, what: String, detail: impl FnOnce() -> String) {
        *self.other_statuses.entry(what).or_default() += 1;
        if self.sample_error.is_none() {
            self.sample_error = Some(detail());
        }
    }
}

/// Admits an org as the operator: its id and its admin token.
pub(crate) async fn admit(
    operator: &Client,
    name: &str,
    kind: OrgKind,
) -> anyhow::Result<(String, String)> {
    let created = operator
        .create_org(
            &CreateOrgRequest {
                name: name.into(),
                kind,
                consumer_type: (kind == OrgKind::Consumer).then_some(ConsumerType::Enterprise),
                zone: "wuqing-core".into(),
                origin_region: "tianjin".into(),
                admin_name: None,
                admin_email: None,
            },
            None,
        )
        .await
        .with_context(|| format!("admit {name}"))?;
    Ok((created.org.id, created.token.secret))
}

pub async fn run(o: &Options) -> anyhow::Result<serde_json::Value> {
    let db = Db::fresh(
        o.backend == StoreKind::Postgres,
        o.database_url.as_deref(),
        "purchases",
    )?;
    let result = run_on(o, &db).await;
    db.cleanup();
    result
}

async fn run_on(o: &Options, db: &Db) -> anyhow::Result<serde_json::Value> {
    let mut config = ServerConfig::new(db.location.clone());
    // The bench moves no data products; their directory stays out of the working directory.
    config.objects = suanli_objects::StoreConfig::local(
        std::env::temp_dir().join(suanli_store::ops::new_id("suanli-bench-objects")),
    );
    config.writer = WriterConfig {
        max_batch: if o.backend == StoreKind::NaiveSqlite {
            1
        } else {
            o.max_batch
        },
        ..WriterConfig::default()
    };
    let writer = config.writer;
    let (state, boot) = suanli_server::start(config)
        .await
        .context("start the server")?;
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    let base = format!("http://{addr}");
    tokio::spawn(suanli_server::serve_on(listener, state.clone()));
    let operator = Client::new(base.clone(), boot.token_secret.clone());

    // The market: one provider, one pool, one general offer; one funded consumer per connection.
    let (_, provider_secret) = admit(&operator, "Bench Provider", OrgKind::Provider).await?;
    let provider = Client::new(base.clone(), Some(provider_secret));
    let nodes = (0..o.nodes)
        .map(|i| NodeSpec {
            name: format!("node-{i:03}"),
            cpus: o.cpus_per_node,
            memory_mib: o.cpus_per_node * 2_048,
            accelerator_model: None,
            accelerators: 0,
            partition: None,
        })
        .collect();
    let pool = provider
        .create_pool(
            &CreatePoolRequest {
                name: "bench".into(),
                zone: "wuqing-core".into(),
                nodes,
            },
            None,
        )
        .await
        .context("create the pool")?;
    let offer = provider
        .create_offer(
            &CreateOfferRequest {
                pool_id: pool.id,
                class: "general".into(),
                cpus_per_unit: None,
                memory_mib_per_unit: 2_048,
                price_micros_per_unit_hour: 100_000,
                min_units: None,
                max_units: Some(1_024),
                valid_from: None,
                valid_until: None,
            },
            None,
        )
        .await
        .context("create the offer")?;
    let mut consumers = Vec::with_capacity(o.connections);
    for i in 0..o.connections {
        let (id, secret) =
            admit(&operator, &format!("Bench Consumer {i}"), OrgKind::Consumer).await?;
        operator
            .deposit(
                &id,
                &DepositRequest {
                    amount_micros: 10_000_000_000,
                    external_ref: "bench".into(),
                },
                None,
            )
            .await
            .context("fund a consumer")?;
        consumers.push(secret);
    }

    let body: Arc<[u8]> = serde_json::to_vec(
        &serde_json::json!({"offer_id": offer.id, "units": 1, "duration_limit_s": 60}),
    )?
    .into();
    let wal_before = db.url.as_deref().and_then(crate::pg::wal_syncs);
    let sessions_before = db.url.as_deref().and_then(crate::pg::sessions);
    let start = Instant::now();
    let warm_until = start + Duration::from_secs(o.warmup_seconds);
    let end = warm_until + Duration::from_secs(o.seconds);
    let sampler = tokio::spawn(WriterSample::between(warm_until, end));
    let mut tasks = Vec::with_capacity(o.connections);
    for (i, secret) in consumers.into_iter().enumerate() {
        let mut conn = http1::Conn::connect(addr, &secret).await?;
        let body = body.clone();
        let with_end = o.end;
        tasks.push(tokio::spawn(async move {
            let mut r = TaskResult {
                latencies: Latencies::with_capacity(32_768),
                ..TaskResult::default()
            };
            let mut n = 0u64;
            let mut key = String::new();
            let mut path = String::new();
            while Instant::now() < end {
                n += 1;
                key.clear();
                write!(key, "bench-{i}-{n}").expect("writing to a String");
                let t = Instant::now();
                let answer = conn.post("/api/v1/leases", &key, &body).await;
                let done = Instant::now();
                let in_window = done >= warm_until && done <= end;
                let lease_id = match answer {
                    Ok(a) if a.status == 201 => match serde_json::from_slice::<Created>(a.body) {
                        Ok(created) => {
                            r.purchases_total += 1;
                            if in_window {
                                r.purchases_in_window += 1;
                                r.latencies.record(done - t);
                            }
                            Some(created.id)
                        }
                        Err(e) => {
                            r.other("purchase 201 without a lease".into(), || {
                                format!(
                                    "purchase: 201 with {e}: {}",
                                    String::from_utf8_lossy(a.body)
                                )
                            });
                            None
                        }
                    },
                    Ok(a) => {
                        let status = a.status;
                        r.other(format!("purchase {status}"), || {
                            format!(
                                "purchase HTTP {status}: {}",
                                String::from_utf8_lossy(a.body)
                            )
                        });
                        None
                    }
                    Err(e) => {
                        r.other("purchase transport".into(), || format!("purchase: {e:#}"));
                        if conn.reconnect().await.is_err() {
                            break;
                        }
                        None
                    }
                };
                if let (true, Some(id)) = (with_end, lease_id) {
                    path.clear();
                    write!(path, "/api/v1/leases/{id}/end").expect("writing to a String");
                    key.push_str("-end");
                    let t = Instant::now();
                    let answer = conn.post(&path, &key, b"").await;
                    let done = Instant::now();
                    match answer {
                        Ok(a) if a.status == 200 => {
                            r.ends_total += 1;
                            if done >= warm_until && done <= end {
                                r.ends_in_window += 1;
                                r.latencies.record(done - t);
                            }
                        }
                        Ok(a) => {
                            let status = a.status;
                            r.other(format!("end {status}"), || {
                                format!("end HTTP {status}: {}", String::from_utf8_lossy(a.body))
                            });
                        }
                        Err(e) => {
                            r.other("end transport".into(), || format!("end: {e:#}"));
                            if conn.reconnect().await.is_err() {
                                break;
                            }
                        }
                    }
                }
            }
            r
        }));
    }
    let mut all = TaskResult::default();
    for t in tasks {
        let r = t.await?;
        all.latencies.extend(r.latencies);
        all.purchases_in_window += r.purchases_in_window;
        all.ends_in_window += r.ends_in_window;
        all.purchases_total += r.purchases_total;
        all.ends_total += r.ends_total;
        for (k, v) in r.other_statuses {
            *all.other_statuses.entry(k).or_default() += v;
        }
        if all.sample_error.is_none() {
            all.sample_error = r.sample_error;
        }
    }
    let wal_after = db.url.as_deref().and_then(crate::pg::wal_syncs);
    let sessions = db
        .url
        .as_deref()
        .and_then(crate::pg::sessions)
        .zip(sessions_before)
        .map(|(after, before)| after - before - 1);
    let sample = sampler.await?;
    let frames_per_op = sample.wal_pages_per(all.purchases_in_window + all.ends_in_window);
    let cpu_note = sample.note(frames_per_op, "request");
    let cpu = sample.cpu;

    // Cross-checks: every 201 is a lease in the database, and the ledger balances.
    let store = state.store.clone();
    let leases_in_db =
        tokio::task::spawn_blocking(move || store.read(|tx| tx.count("leases"))).await??;
    let check = operator.ledger_check().await.context("ledger check")?;

    let secs = o.seconds as f64;
    let rate = all.purchases_in_window as f64 / secs;
    let s = all.latencies.summary();
    let others: u64 = all.other_statuses.values().sum();
    let wal = match (wal_before, wal_after) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let bench = if o.end { "purchase_end" } else { "purchases" };
    let what = if o.end {
        "purchase+end pairs"
    } else {
        "purchases"
    };
    let pairs_rate = all.ends_in_window as f64 / secs;
    println!(
        "{bench} [{}]: {:.0} {what}/s over {} s with {} connections{}; per request p50 {}, p99 {}, max {}; \
         {others} non-201 answers{}; leases in db {leases_in_db} (= {} 201s); ledger check {}{}{}{cpu_note}",
        o.backend.name(),
        if o.end { pairs_rate } else { rate },
        o.seconds,
        o.connections,
        if o.end { format!(" ({rate:.0} purchases/s + {pairs_rate:.0} ends/s)") } else { String::new() },
        ms(s.p50_us),
        ms(s.p99_us),
        ms(s.max_us),
        all.sample_error.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default(),
        all.purchases_total,
        if check.ok { "ok" } else { "FAILED" },
        wal.map(|w| format!("; ~{w} WAL fsyncs in the run (warm-up included)"))
            .unwrap_or_default(),
        sessions
            .map(|n| format!("; {n} PostgreSQL connections opened during the run"))
            .unwrap_or_default(),
    );
    Ok(serde_json::json!({
        "bench": bench,
        "backend": o.backend.name(),
        "seconds": o.seconds,
        "warmup_seconds": o.warmup_seconds,
        "connections": o.connections,
        "writer_max_batch": writer.max_batch,
        "rate_per_s": (if o.end { pairs_rate } else { rate }).round(),
        "purchases_per_s": rate.round(),
        "ends_per_s": pairs_rate.round(),
        "purchases_in_window": all.purchases_in_window,
        "purchases_total": all.purchases_total,
        "ends_total": all.ends_total,
        "latency": s.json(),
        "non_201": all.other_statuses,
        "sample_error": all.sample_error,
        "leases_in_db": leases_in_db,
        "ledger_ok": check.ok,
        "wal_fsyncs_approx": wal,
        "pg_connections_opened": sessions,
        "cpu": cpu.json(),
        "wal_pages_per_op": frames_per_op.map(|f| (f * 10.0).round() / 10.0),
        "goal_p99_us": 20_000,
    }))
}
