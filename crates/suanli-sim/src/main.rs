//! `suanli-sim`: runs seeds of the market simulation and prints what each kind of command did.
//!
//! ```text
//! suanli-sim --seeds 0..1000 --steps 1000            # SQLite files under /dev/shm
//! suanli-sim --seed 42 --steps 1000                   # replay one seed
//! suanli-sim --seeds 0..50 --database-url postgres://postgres@127.0.0.1:5432/postgres
//! ```

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use clap::Parser;
use suanli_sim::{run_seed, Failure, Tally, Target};

#[derive(Debug, Parser)]
#[command(about = "A seeded, deterministic simulation of the whole market")]
struct Args {
    /// One seed to run (replays a failure).
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// A range of seeds, `A..B` (B excluded).
    #[arg(long, default_value = "0..100")]
    seeds: String,
    /// Steps per seed; each step is one batch of 1 to 6 commands.
    #[arg(long, default_value_t = 1000)]
    steps: u32,
    /// Run on this PostgreSQL server (a fresh database per seed) instead of SQLite.
    #[arg(long)]
    database_url: Option<String>,
    /// Where SQLite files go (tmpfs: syncs cost nothing).
    #[arg(long, default_value = "/dev/shm")]
    dir: PathBuf,
    /// Seeds run at once.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Fail unless every kind of command was accepted at least this percentage of the time
    /// (so the invariants are not kept trivially by refusals).
    #[arg(long, default_value_t = 0)]
    min_accepted_percent: u64,
    /// Also print why commands were refused, by kind.
    #[arg(long)]
    reasons: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let seeds: Vec<u64> = match args.seed {
        Some(s) => vec![s],
        None => match args.seeds.split_once("..") {
            Some((a, b)) => match (a.parse::<u64>(), b.parse::<u64>()) {
                (Ok(a), Ok(b)) if a < b => (a..b).collect(),
                _ => return usage(&args.seeds),
            },
            None => return usage(&args.seeds),
        },
    };
    let target = match &args.database_url {
        Some(url) => Target::Postgres(url.clone()),
        None => Target::Sqlite(args.dir.clone()),
    };
    let started = Instant::now();
    let next = AtomicU64::new(0);
    let tally = Mutex::new(Tally::default());
    let passed = AtomicU64::new(0);
    let failures: Mutex<Vec<Failure>> = Mutex::new(Vec::new());
    let seeds = Arc::new(seeds);
    std::thread::scope(|scope| {
        for _ in 0..args.threads.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst) as usize;
                let Some(&seed) = seeds.get(i) else { break };
                if !failures.lock().unwrap().is_empty() {
                    break;
                }
                match run_seed(seed, args.steps, &target) {
                    Ok(t) => {
                        tally.lock().unwrap().add(&t);
                        passed.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(f) => failures.lock().unwrap().push(f),
                }
            });
        }
    });
    let tally = tally.into_inner().unwrap();
    let failures = failures.into_inner().unwrap();
    let store = if args.database_url.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let ran = passed.load(Ordering::SeqCst);
    println!(
        "{ran} seed(s) × {} steps on {store} in {:.1} s",
        args.steps,
        started.elapsed().as_secs_f64()
    );
    println!(
        "{:<26} {:>10} {:>10} {:>9}",
        "command", "accepted", "refused", "accepted"
    );
    let mut low = Vec::new();
    for (kind, (a, r)) in &tally.counts {
        let pct = (a * 100).checked_div(a + r).unwrap_or(0);
        println!("{kind:<26} {a:>10} {r:>10} {pct:>8}%");
        if pct < args.min_accepted_percent {
            low.push(*kind);
        }
    }
    if args.reasons {
        println!("\n{:<26} {:>8}  refused because", "command", "times");
        for ((kind, why), n) in &tally.reasons {
            println!("{kind:<26} {n:>8}  {why}");
        }
    }
    if let Some(f) = failures.first() {
        eprintln!(
            "\nseed {} failed at step {}:\n{}",
            f.seed, f.step, f.message
        );
        let db = match &args.database_url {
            Some(url) => format!(" --database-url {url}"),
            None => String::new(),
        };
        eprintln!(
            "replay: cargo run --release -p suanli-sim -- --seed {} --steps {}{db}",
            f.seed, f.step
        );
        return std::process::ExitCode::FAILURE;
    }
    if !low.is_empty() {
        eprintln!(
            "\nthese kinds were accepted less than {}% of the time: {low:?}",
            args.min_accepted_percent
        );
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}

fn usage(seeds: &str) -> std::process::ExitCode {
    eprintln!("--seeds takes A..B with A < B, not {seeds:?}");
    std::process::ExitCode::from(2)
}
