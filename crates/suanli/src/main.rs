//! The `suanli` binary: the exchange (`serve`, `demo`) and the CLI for operators, providers and
//! consumers.
//!
//! - [`args`]: arguments of `serve`, `demo` and `agent`; [`serve`], [`demo`]: running the exchange;
//!   [`agent`]: a provider's agent in front of this machine.
//! - [`cli`]: every API command, with tables for people and `--json` for scripts.
//! - [`profiles`]: the CLI's config file of named profiles (server URL and token).

/// mimalloc instead of glibc's malloc: in the purchase benchmark, allocation and free were ~10 %
/// of the writer thread's samples, and the same server with mimalloc did ~10 % more purchases
/// per second (docs/BENCHMARKS.md). The benchmark binary uses it too, so it measures this.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod agent;
mod args;
mod cli;
mod demo;
mod excluded;
mod profiles;
mod serve;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let default_level = match cli.command {
        cli::Command::Serve(_) | cli::Command::Demo(_) | cli::Command::Agent(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if matches!(
        cli.command,
        cli::Command::Serve(_) | cli::Command::Demo(_) | cli::Command::Agent(_)
    ) {
        // The exchange's database, its WAL, token files, the agent's key and notes: everything
        // these processes create is their user's alone, unless they open it up on purpose (a
        // job's directory, chmodded for the job's user).
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    }
    let result = match cli.command {
        cli::Command::Serve(args) => serve::run(args).await,
        cli::Command::Demo(args) => demo::run(args).await,
        cli::Command::Agent(args) => agent::run(args).await,
        _ => cli::run(cli).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
