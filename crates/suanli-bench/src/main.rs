//! `suanli-bench`: benchmarks of the exchange core. Performance is measured here, not asserted in
//! tests; `scripts/bench.sh` runs everything and docs/BENCHMARKS.md records the figures.
//!
//! Each subcommand prints one human line and then one JSON line with the results.

/// The allocator of the `suanli` binary (see there), so that the in-process server is measured
/// as it runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod disk;
mod http1;
mod jobs;
mod ledger;
mod pg;
mod purchases;
mod quote;
mod stats;
mod table;

use std::io::Write;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "suanli-bench",
    about = "Benchmarks of the Suanli exchange core"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Quotes with five constraints over a synthetic market of live offers (in-process).
    Quote {
        #[arg(long, default_value_t = 100_000)]
        offers: usize,
        #[arg(long, default_value_t = 2_000)]
        quotes: usize,
        #[arg(long, default_value_t = 200)]
        warmup: usize,
        #[arg(long, default_value_t = 20_240_601)]
        seed: u64,
        /// Quotes (the first ones) that the diagnostic variants are also timed on.
        #[arg(long, default_value_t = 300)]
        diagnostic_quotes: usize,
    },
    /// Durable purchases through the HTTP API of an in-process server.
    Purchases {
        #[arg(long, value_enum, default_value = "sqlite")]
        backend: purchases::StoreKind,
        /// Measured seconds (after the warm-up).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 1)]
        warmup_seconds: u64,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Nodes in the provider's pool.
        #[arg(long, default_value_t = 64)]
        nodes: usize,
        /// CPUs of each node; each purchase takes one. The default's 524,288 units last ~90 s at
        /// 6,000 purchases/s (when they run out, purchases get 409s).
        #[arg(long, default_value_t = 8_192)]
        cpus_per_node: u64,
        /// End each lease right after buying it (purchase-then-end mix).
        #[arg(long)]
        end: bool,
        /// The group-committing writer's `max_batch` (the naive baseline always uses 1).
        #[arg(long, default_value_t = suanli_store::WriterConfig::default().max_batch)]
        max_batch: usize,
        /// PostgreSQL server to create a fresh database on, e.g. postgres://postgres@127.0.0.1:55432/postgres
        #[arg(long, env = "SUANLI_BENCH_DATABASE_URL")]
        database_url: Option<String>,
    },
    /// Ledger transfers per second through the store's writer (no HTTP).
    Ledger {
        #[arg(long, value_enum, default_value = "sqlite")]
        backend: ledger::StoreKind,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 1)]
        warmup_seconds: u64,
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// The writer's `max_batch` (1 turns group commit off).
        #[arg(long, default_value_t = suanli_store::WriterConfig::default().max_batch)]
        max_batch: usize,
        #[arg(long, env = "SUANLI_BENCH_DATABASE_URL")]
        database_url: Option<String>,
        /// Transfers per request (a client sending a batch of transfers at once).
        #[arg(long, default_value_t = 1)]
        transfers_per_request: usize,
    },
    /// How many 4 KiB append + fdatasync cycles per second the temp dir's disk does.
    Fsync {
        #[arg(long, default_value_t = 2)]
        seconds: u64,
    },
    /// Summarises a pgbench run: its report and its per-transaction logs (`-l`).
    PgbenchSummary {
        #[arg(long)]
        report: String,
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// The per-transaction log files.
        logs: Vec<String>,
    },
    /// Jobs through the exchange and the real `suanli agent` (local backend): submit → running
    /// latency, or throughput of trivial jobs side by side with a real single-node Slurm.
    Jobs {
        #[arg(value_enum)]
        which: jobs::Which,
        /// The `suanli` binary whose `agent` subcommand serves this machine.
        #[arg(long, default_value = "target/release/suanli")]
        suanli_bin: std::path::PathBuf,
        /// Measured jobs (default: 200 for latency, 1000 for throughput).
        #[arg(long)]
        jobs: Option<usize>,
        /// Latency: jobs run first and not counted.
        #[arg(long, default_value_t = 10)]
        warmup: usize,
        /// Throughput: leases of 1 unit (0: as many as this machine's CPUs).
        #[arg(long, default_value_t = 0)]
        leases: usize,
        /// Throughput: concurrent submitters (tasks for Suanli, threads for sbatch).
        #[arg(long, default_value_t = 4)]
        submitters: usize,
        /// Throughput: how often both sides look for the last job's end.
        #[arg(long, default_value_t = 100)]
        poll_ms: u64,
        /// Latency: pause between a job's end and the next submit.
        #[arg(long, default_value_t = 20)]
        gap_ms: u64,
        /// The agent's `sandbox` setting.
        #[arg(long, value_enum, default_value = "auto")]
        sandbox: jobs::Sandbox,
        /// Throughput: leave Slurm out.
        #[arg(long)]
        no_slurm: bool,
        /// Give up after this many seconds (each side).
        #[arg(long, default_value_t = 600)]
        timeout_s: u64,
    },
    /// Prints the markdown table of a file of result JSON lines.
    Table { results: String },
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Kept until the process exits: the in-process server's tasks are never shut down.
    let rt = runtime()?;
    let result = match cli.command {
        Command::Quote {
            offers,
            quotes,
            warmup,
            seed,
            diagnostic_quotes,
        } => quote::run(&quote::Options {
            offers,
            quotes,
            warmup,
            seed,
            diagnostic_quotes,
        })?,
        Command::Purchases {
            backend,
            seconds,
            warmup_seconds,
            connections,
            nodes,
            cpus_per_node,
            end,
            max_batch,
            database_url,
        } => {
            let o = purchases::Options {
                backend,
                seconds: seconds.max(1),
                warmup_seconds,
                connections: connections.max(1),
                nodes: nodes.max(1),
                cpus_per_node,
                end,
                max_batch,
                database_url,
            };
            rt.block_on(purchases::run(&o))?
        }
        Command::Ledger {
            backend,
            seconds,
            warmup_seconds,
            clients,
            max_batch,
            database_url,
            transfers_per_request,
        } => {
            let o = ledger::Options {
                transfers_per_request,
                backend,
                seconds: seconds.max(1),
                warmup_seconds,
                clients: clients.max(1),
                max_batch,
                database_url,
            };
            rt.block_on(ledger::run(&o))?
        }
        Command::Fsync { seconds } => disk::fsync(seconds.max(1))?,
        Command::PgbenchSummary {
            report,
            clients,
            logs,
        } => disk::pgbench_summary(&report, &logs, clients)?,
        Command::Jobs {
            which,
            suanli_bin,
            jobs,
            warmup,
            leases,
            submitters,
            poll_ms,
            gap_ms,
            sandbox,
            no_slurm,
            timeout_s,
        } => rt.block_on(jobs::run(&jobs::Options {
            which,
            suanli_bin,
            jobs,
            warmup,
            leases,
            submitters,
            poll_ms,
            gap_ms,
            sandbox,
            no_slurm,
            timeout_s,
        }))?,
        Command::Table { results } => {
            table::print(&results)?;
            jobs::print_table(&results)?;
            return Ok(());
        }
    };
    // Not `println!`: a closed pipe (`| head -1`) is not worth a panic.
    let _ = writeln!(std::io::stdout(), "{result}");
    // The in-process server and the writer threads are not shut down gracefully (and the runtime is
    // not dropped, which would wait for them): just leave.
    std::process::exit(0);
}
