//! Context for the durable benchmarks: how fast this disk makes a small write durable, and the
//! summary of a `pgbench` run.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::stats::{ms, Latencies};

/// Appends 4 KiB and `fdatasync`s, in a loop for `seconds`: one durable commit's worth of I/O, the
/// ceiling of any one-commit-per-request design on this disk.
pub fn fsync(seconds: u64) -> anyhow::Result<serde_json::Value> {
    let dir = std::env::temp_dir().join(suanli_store::ops::new_id("suanli-bench-fsync"));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("probe");
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let block = vec![0x5au8; 4_096];
        let mut lat = Latencies::default();
        let end = Instant::now() + Duration::from_secs(seconds);
        while Instant::now() < end {
            let t = Instant::now();
            f.write_all(&block)?;
            f.sync_data()?;
            lat.record(t.elapsed());
        }
        anyhow::Ok(lat)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    let s = result?.summary();
    let rate = s.count as f64 / seconds as f64;
    println!(
        "fsync: {rate:.0} fdatasyncs/s of a 4 KiB append in {} (p50 {}, p99 {})",
        std::env::temp_dir().display(),
        ms(s.p50_us),
        ms(s.p99_us)
    );
    Ok(serde_json::json!({
        "bench": "fsync",
        "backend": "disk",
        "rate_per_s": rate.round(),
        "latency": s.json(),
    }))
}

/// Reads pgbench's report (`tps = …`, `latency average = … ms`) and its per-transaction logs
/// (`-l`: the third column is the latency in microseconds).
pub fn pgbench_summary(
    report: &str,
    logs: &[String],
    clients: usize,
) -> anyhow::Result<serde_json::Value> {
    let text = std::fs::read_to_string(report).with_context(|| format!("read {report}"))?;
    let number_after = |prefix: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
    };
    let tps = number_after("tps = ").context("no `tps = ` line in the pgbench report")?;
    let avg_ms = number_after("latency average = ");
    let mut lat = Latencies::default();
    for log in logs {
        let t = std::fs::read_to_string(log).with_context(|| format!("read {log}"))?;
        for line in t.lines() {
            if let Some(us) = line
                .split_whitespace()
                .nth(2)
                .and_then(|x| x.parse::<u64>().ok())
            {
                lat.record(Duration::from_micros(us));
            }
        }
    }
    let s = lat.summary();
    println!(
        "pgbench: {tps:.0} durable single-row inserts/s with {clients} clients; latency average {}, \
         p50 {}, p99 {} (from {} logged transactions)",
        avg_ms.map(|a| format!("{a:.2} ms")).unwrap_or_else(|| "?".into()),
        ms(s.p50_us),
        ms(s.p99_us),
        s.count
    );
    Ok(serde_json::json!({
        "bench": "pgbench",
        "backend": "postgres",
        "clients": clients,
        "rate_per_s": tps.round(),
        "latency_average_ms": avg_ms,
        "latency": s.json(),
    }))
}
