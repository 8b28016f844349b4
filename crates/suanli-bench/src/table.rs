//! Turns the JSON lines of a run into the markdown table of docs/BENCHMARKS.md, with the goals.

use anyhow::Context;
use serde_json::Value;

/// 12345.6 → "12,346".
fn thousands(x: f64) -> String {
    let s = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn f(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

fn lat(v: &Value, key: &str) -> f64 {
    v.get("latency").map(|l| f(l, key)).unwrap_or(0.0)
}

fn ms(us: f64) -> String {
    if us < 1_000.0 {
        format!("{us:.0} µs")
    } else {
        format!("{:.1} ms", us / 1_000.0)
    }
}

fn yes(ok: bool) -> &'static str {
    if ok {
        "**met**"
    } else {
        "**missed**"
    }
}

pub fn print(path: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {path}"))?;
    let results: Vec<Value> = text
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let find = |bench: &str, backend: &str| {
        results.iter().find(|r| {
            r.get("bench").and_then(Value::as_str) == Some(bench)
                && r.get("backend")
                    .and_then(Value::as_str)
                    .is_none_or(|b| b == backend)
        })
    };
    let pgbench = find("pgbench", "postgres").map(|r| f(r, "rate_per_s"));
    let naive = find("purchases", "naive-sqlite").map(|r| f(r, "rate_per_s"));

    println!("| Benchmark | Setup | Throughput | p50 | p99 | Goal | Result |");
    println!("|---|---|---:|---:|---:|---|---|");
    if let Some(q) = find("quote", "") {
        let c = &q["candidates"];
        println!(
            "| Quote, 5 constraints | in-process `OfferBook`, {} live offers, {} quotes (median {} / max {} candidates) | — | {} | {} (max {}) | p99 ≤ 1 ms | {} |",
            thousands(f(q, "offers")),
            thousands(f(q, "quotes")),
            c["median"],
            c["max"],
            ms(lat(q, "p50_us")),
            ms(lat(q, "p99_us")),
            ms(lat(q, "max_us")),
            yes(lat(q, "p99_us") <= 1_000.0),
        );
    }
    for backend in ["sqlite", "naive-sqlite", "postgres"] {
        let Some(r) = find("purchases", backend) else {
            continue;
        };
        let rate = f(r, "rate_per_s");
        let setup = format!(
            "HTTP, {} connections, {}{}",
            r["connections"],
            match backend {
                "sqlite" => "SQLite WAL, group commit (WAL fsync per batch)".to_owned(),
                "naive-sqlite" => "SQLite, one commit per request (`max_batch: 1`)".to_owned(),
                _ => "PostgreSQL 15 (fsync on), group commit".to_owned(),
            },
            match r.get("non_201").and_then(Value::as_object) {
                Some(m) if !m.is_empty() => format!(", non-201: {}", Value::Object(m.clone())),
                _ => String::new(),
            }
        );
        let (goal, result) = match backend {
            "sqlite" => {
                let vs_pg = pgbench.map(|p| rate / p.max(1.0));
                let vs_naive = naive.map(|n| rate / n.max(1.0));
                let p99_ok = lat(r, "p99_us") <= 20_000.0;
                let ok =
                    vs_pg.is_some_and(|x| x >= 1.0) && vs_naive.is_some_and(|x| x >= 3.0) && p99_ok;
                (
                    "≥ pgbench, ≥ 3× naive, p99 ≤ 20 ms".to_owned(),
                    format!(
                        "{} ({} pgbench, {} naive, p99 {})",
                        yes(ok),
                        vs_pg
                            .map(|x| format!("{x:.2}×"))
                            .unwrap_or_else(|| "?".into()),
                        vs_naive
                            .map(|x| format!("{x:.2}×"))
                            .unwrap_or_else(|| "?".into()),
                        if p99_ok { "ok" } else { "too high" }
                    ),
                )
            }
            "naive-sqlite" => ("baseline (b)".to_owned(), "—".to_owned()),
            _ => (
                "informative".to_owned(),
                pgbench
                    .map(|p| format!("{:.2}× pgbench", rate / p.max(1.0)))
                    .unwrap_or_default(),
            ),
        };
        println!(
            "| Purchases (`POST /leases`) | {setup} | {}/s | {} | {} | {goal} | {result} |",
            thousands(rate),
            ms(lat(r, "p50_us")),
            ms(lat(r, "p99_us")),
        );
    }
    if let Some(r) = find("purchase_end", "sqlite") {
        println!(
            "| Purchase then end | HTTP, {} connections, SQLite, group commit; latency per request | {}/s pairs ({}/s requests) | {} | {} | informative | — |",
            r["connections"],
            thousands(f(r, "rate_per_s")),
            thousands(f(r, "purchases_per_s") + f(r, "ends_per_s")),
            ms(lat(r, "p50_us")),
            ms(lat(r, "p99_us")),
        );
    }
    if let Some(r) = find("pgbench", "postgres") {
        println!(
            "| pgbench single-row insert | PostgreSQL 15, fsync on, {} clients, `-j 2` | {}/s | {} | {} | baseline (a) | — |",
            r["clients"],
            thousands(f(r, "rate_per_s")),
            ms(lat(r, "p50_us")),
            ms(lat(r, "p99_us")),
        );
    }
    for backend in ["sqlite", "postgres"] {
        let Some(r) = find("ledger", backend) else {
            continue;
        };
        let rate = f(r, "rate_per_s");
        let goal = f(r, "goal_per_s");
        println!(
            "| Ledger transfers | `Store` writer, {} clients, {}, group commit{} | {}/s | {} | {} | ≥ {}/s | {} |",
            r["clients"],
            if backend == "sqlite" { "SQLite" } else { "PostgreSQL 15 (fsync on)" },
            r.get("pg_round_trip_us")
                .and_then(Value::as_f64)
                .map(|rt| format!(", round trip {rt:.0} µs"))
                .unwrap_or_default(),
            thousands(rate),
            ms(lat(r, "p50_us")),
            ms(lat(r, "p99_us")),
            thousands(goal),
            yes(rate >= goal),
        );
    }
    if let Some(r) = find("fsync", "disk") {
        println!(
            "| Disk: 4 KiB append + fdatasync | one thread | {}/s | {} | {} | context | — |",
            thousands(f(r, "rate_per_s")),
            ms(lat(r, "p50_us")),
            ms(lat(r, "p99_us")),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1_000.0), "1,000");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
    }
}
