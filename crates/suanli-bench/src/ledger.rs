//! Benchmark 3: ledger transfers per second through the store's single writer with group commit.
//!
//! Opens the store directly (no HTTP), creates an operator org and one consumer org per client,
//! funds each consumer, then runs `clients` tokio tasks that each loop `Writer::submit` of one
//! transfer: alternately a deposit (operator external → consumer available, the hot external
//! account every client shares) and a withdrawal (consumer available → external, with the
//! conditional non-negative debit check). Each request is its own job, declaring its two accounts
//! as the server's deposit and withdrawal requests do (`Writer::submit_with_accounts`), and is
//! answered only once its batch is durable. Afterwards the ledger invariant checker must pass.

use std::sync::Arc;
use std::time::{Duration, Instant};

use suanli_core::ledger::{AccountKind, TransferKind};
use suanli_store::ops::{account_id, OrgRow};
use suanli_store::{Store, WriterConfig};

use crate::purchases::Db;
use crate::stats::{ms, Latencies, WriterSample};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

impl StoreKind {
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Sqlite => "sqlite",
            StoreKind::Postgres => "postgres",
        }
    }
}

pub struct Options {
    pub backend: StoreKind,
    pub seconds: u64,
    pub warmup_seconds: u64,
    pub clients: usize,
    pub max_batch: usize,
    pub database_url: Option<String>,
    /// Transfers per request: 1 is one transfer per submit; more is a client sending a batch of
    /// transfers in one request (as TigerBeetle's clients do), all or nothing.
    pub transfers_per_request: usize,
}

fn org(id: &str, kind: &str, now: i64) -> OrgRow {
    OrgRow {
        id: id.into(),
        name: id.into(),
        kind: suanli_core::decide::OrgKind::parse(kind).expect("a known org kind"),
        consumer_type: (kind == "consumer").then(|| "enterprise".into()),
        zone: "wuqing-core".into(),
        origin_region: "tianjin".into(),
        created_ms: now,
        name_unique: true,
    }
}

pub async fn run(o: &Options) -> anyhow::Result<serde_json::Value> {
    let db = Db::fresh(
        o.backend == StoreKind::Postgres,
        o.database_url.as_deref(),
        "ledger",
    )?;
    let result = run_on(o, &db).await;
    db.cleanup();
    result
}

async fn run_on(o: &Options, db: &Db) -> anyhow::Result<serde_json::Value> {
    let round_trip = match &db.url {
        Some(url) => Some(crate::pg::round_trip_us(url, 2_000)?),
        None => None,
    };
    let location = db.location.clone();
    let config = WriterConfig {
        max_batch: o.max_batch,
        ..WriterConfig::default()
    };
    let store =
        Arc::new(tokio::task::spawn_blocking(move || Store::open(location, config)).await??);
    let now = suanli_server::now_ms();
    let operator = "org_benchop".to_owned();
    let consumers: Vec<String> = (0..o.clients)
        .map(|i| format!("org_benchc{i:03}"))
        .collect();
    {
        let (op, cs) = (operator.clone(), consumers.clone());
        store
            .writer()
            .submit(move |tx| {
                tx.create_org(&org(&op, "operator", now), "admin", None)?;
                for c in &cs {
                    tx.create_org(&org(c, "consumer", now), "admin", None)?;
                    tx.transfer(
                        TransferKind::Deposit,
                        &account_id(&op, AccountKind::External),
                        &account_id(c, AccountKind::Available),
                        1_000_000_000,
                        None,
                        None,
                        Some("bench-funding"),
                        now,
                    )?;
                }
                Ok(())
            })
            .await?;
    }
    let external = Arc::new(account_id(&operator, AccountKind::External));

    let wal_before = db.url.as_deref().and_then(crate::pg::wal_syncs);
    let start = Instant::now();
    let warm_until = start + Duration::from_secs(o.warmup_seconds);
    let end = warm_until + Duration::from_secs(o.seconds);
    let sampler = tokio::spawn(WriterSample::between(warm_until, end));
    let mut tasks = Vec::with_capacity(o.clients);
    let per_request = o.transfers_per_request.max(1);
    for c in &consumers {
        let store = store.clone();
        let external = external.clone();
        let available = Arc::new(account_id(c, AccountKind::Available));
        tasks.push(tokio::spawn(async move {
            let mut lat = Latencies::with_capacity(65_536);
            let (mut in_window, mut total, mut failed) = (0u64, 0u64, 0u64);
            let mut first_error: Option<String> = None;
            let mut n = 0u64;
            let per_request = per_request;
            while Instant::now() < end {
                n += 1;
                let now = suanli_server::now_ms();
                let t = Instant::now();
                let (ext, avail) = (external.clone(), available.clone());
                // Odd requests start with a deposit, so that every withdrawal is covered; a
                // request of several transfers alternates within itself.
                let first_deposit = n % 2 == 1 || per_request > 1;
                // Declared, as the server's deposit and withdrawal requests declare theirs.
                let accounts = vec![(*external).clone(), (*available).clone()];
                let answer = store
                    .writer()
                    .submit_with_accounts(accounts, move |tx| {
                        for k in 0..per_request {
                            let deposit = (k % 2 == 0) == first_deposit;
                            let (kind, debit, credit, amount) = if deposit {
                                (TransferKind::Deposit, &*ext, &*avail, 1_000_000)
                            } else {
                                (TransferKind::Withdrawal, &*avail, &*ext, 500_000)
                            };
                            tx.transfer(
                                kind,
                                debit,
                                credit,
                                amount,
                                None,
                                None,
                                Some("bench"),
                                now,
                            )?;
                        }
                        Ok(())
                    })
                    .await;
                let done = Instant::now();
                match answer {
                    Ok(_) => {
                        total += per_request as u64;
                        if done >= warm_until && done <= end {
                            in_window += per_request as u64;
                            lat.record(done - t);
                        }
                    }
                    Err(e) => {
                        failed += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            (lat, in_window, total, failed, first_error)
        }));
    }
    let mut all = Latencies::default();
    let (mut in_window, mut total, mut failed) = (0u64, 0u64, 0u64);
    let mut first_error = None;
    for t in tasks {
        let (l, w, tot, f, e) = t.await?;
        all.extend(l);
        in_window += w;
        total += tot;
        failed += f;
        if first_error.is_none() {
            first_error = e;
        }
    }
    let wal_after = db.url.as_deref().and_then(crate::pg::wal_syncs);
    let sample = sampler.await?;
    let frames_per_op = sample.wal_pages_per(in_window);
    let cpu_note = sample.note(frames_per_op, "transfer");
    let cpu = sample.cpu;

    let s2 = store.clone();
    let (transfers_in_db, violations) = tokio::task::spawn_blocking(move || {
        s2.read(|tx| Ok((tx.count("transfers")?, tx.check_ledger()?)))
    })
    .await??;
    let expected_in_db = total + o.clients as u64;

    let rate = in_window as f64 / o.seconds as f64;
    let s = all.summary();
    let goal = match o.backend {
        StoreKind::Sqlite => 20_000.0,
        StoreKind::Postgres => 5_000.0,
    };
    let wal = match (wal_before, wal_after) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    println!(
        "ledger [{}]: {:.0} transfers/s over {} s with {} clients (goal >= {goal:.0}/s); per transfer p50 {}, \
         p99 {}, max {}; {failed} failed{}; transfers in db {transfers_in_db} (expected {expected_in_db}); \
         ledger check {}{}{}{cpu_note}",
        o.backend.name(),
        rate,
        o.seconds,
        o.clients,
        ms(s.p50_us),
        ms(s.p99_us),
        ms(s.max_us),
        first_error.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default(),
        if violations.is_empty() { "ok".to_owned() } else { format!("FAILED: {violations:?}") },
        round_trip.map(|r| format!("; PostgreSQL round trip {r:.0} us")).unwrap_or_default(),
        wal.map(|w| format!("; ~{w} WAL fsyncs in the run (warm-up included)")).unwrap_or_default(),
    );
    Ok(serde_json::json!({
        "bench": "ledger",
        "backend": o.backend.name(),
        "seconds": o.seconds,
        "warmup_seconds": o.warmup_seconds,
        "clients": o.clients,
        "transfers_per_request": per_request,
        "writer_max_batch": o.max_batch,
        "rate_per_s": rate.round(),
        "transfers_in_window": in_window,
        "transfers_total": total,
        "failed": failed,
        "first_error": first_error,
        "latency": s.json(),
        "transfers_in_db": transfers_in_db,
        "ledger_ok": violations.is_empty(),
        "pg_round_trip_us": round_trip.map(|r| r.round()),
        "wal_fsyncs_approx": wal,
        "cpu": cpu.json(),
        "wal_pages_per_op": frames_per_op.map(|f| (f * 10.0).round() / 10.0),
        "goal_per_s": goal,
        "goal_met": rate >= goal,
    }))
}
