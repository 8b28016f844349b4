//! PostgreSQL helpers. The synchronous `postgres` client runs its own runtime and panics when
//! created or dropped on a thread that drives tokio tasks, so every call here runs on a thread of
//! its own.

use std::time::Instant;

use anyhow::Context;

fn on_thread<R: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<R> + Send + 'static,
) -> anyhow::Result<R> {
    std::thread::spawn(f)
        .join()
        .map_err(|_| anyhow::anyhow!("the PostgreSQL helper thread panicked"))?
}

fn connect(url: &str) -> anyhow::Result<postgres::Client> {
    postgres::Client::connect(url, postgres::NoTls).with_context(|| format!("connect to {url}"))
}

/// Creates a fresh database on the server of `admin_url` and returns its URL.
pub fn fresh_database(admin_url: &str, prefix: &str) -> anyhow::Result<String> {
    let name = suanli_store::ops::new_id(prefix).replace('_', "");
    let (url, n) = (admin_url.to_owned(), name.clone());
    on_thread(move || {
        connect(&url)?.batch_execute(&format!("CREATE DATABASE {n}"))?;
        Ok(())
    })?;
    let base = admin_url
        .rsplit_once('/')
        .map(|(b, _)| b)
        .unwrap_or(admin_url);
    Ok(format!("{base}/{name}"))
}

/// WAL fsyncs the server has done so far (`pg_stat_wal.wal_sync`, PostgreSQL 14+). Backends report
/// their counters about once a second, so deltas over a run of several seconds are approximate.
pub fn wal_syncs(url: &str) -> Option<i64> {
    let url = url.to_owned();
    on_thread(move || {
        let row = connect(&url)?.query_one("SELECT wal_sync FROM pg_stat_wal", &[])?;
        Ok(row.get::<_, i64>(0))
    })
    .ok()
}

/// Mean time of a `SELECT 1` round trip on one connection, in microseconds.
pub fn round_trip_us(url: &str, n: u32) -> anyhow::Result<f64> {
    let url = url.to_owned();
    on_thread(move || {
        let mut c = connect(&url)?;
        let stmt = c.prepare("SELECT 1")?;
        for _ in 0..100 {
            c.query_one(&stmt, &[])?;
        }
        let t = Instant::now();
        for _ in 0..n {
            c.query_one(&stmt, &[])?;
        }
        Ok(t.elapsed().as_secs_f64() * 1e6 / f64::from(n.max(1)))
    })
}

/// Sessions (connections) opened to the database of `url` so far (`pg_stat_database.sessions`,
/// PostgreSQL 14+), counting the one this call opens.
pub fn sessions(url: &str) -> Option<i64> {
    let url = url.to_owned();
    on_thread(move || {
        let row = connect(&url)?.query_one(
            "SELECT sessions FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )?;
        Ok(row.get::<_, i64>(0))
    })
    .ok()
}
