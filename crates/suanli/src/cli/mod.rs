//! The `suanli` command line: clap definitions of every command ([`args`]), and [`run`], which
//! executes the commands that talk to an exchange through [`suanli_client`].
//!
//! Each command makes one API call and prints its answer as aligned plain-text tables for people,
//! or as pretty JSON with `--json`: the answer is a value that is [`render::Render`], and
//! `o.show(&value)` prints one or the other. Every command that sends a POST sends an idempotency
//! key: a fresh random one, or the one given with `--idempotency-key` so that scripts can retry
//! safely. Amounts are typed in yuan (`1000`, `12.5`) and shown as `¥12.500000`; durations are
//! typed as `90s`, `30m`, `2h`, `1d` or plain seconds. `serve`, `demo` and `agent` are declared
//! here but run by main.
//!
//! The commands, by group: [`orgs`] (`whoami`, `health`, orgs, members, tokens), [`ledger`]
//! (deposits, withdrawals, balance, statement), [`provider`] (models, pools, offers, agents),
//! [`market`] (zones, catalog, quote, buy), [`leases`], [`jobs`], [`logs`] and [`data`]
//! (datasets and models: listings, `push` and `pull` of versions, access); [`format`] holds how
//! values, tables and pairs read.
//!
//! Jobs: `launch` reads a task file ([`task`]), quotes it, buys the best offer (failing over to the
//! next ones), queues the job and follows its output; `exec` runs another job on a lease; `logs`
//! reads or follows a job's output by long polling. These stream their output as it comes instead
//! of printing it at the end.

pub mod task;

mod args;
mod data;
mod format;
mod jobs;
mod leases;
mod ledger;
mod logs;
mod market;
mod orgs;
mod provider;
mod render;
#[cfg(test)]
mod tests;

use std::fmt::Write as _;

use anyhow::bail;
use suanli_api as api;
use suanli_client::{Client, ClientError};

pub use args::{format_duration, parse_duration, parse_gib_to_mib, parse_money, Cli, Command};
pub use format::price;

use args::{
    LeaseCommand, MemberCommand, ModelsCommand, OfferCommand, OrgCommand, PoolCommand, TokenCommand,
};
use render::Output;

use crate::profiles;

type Result<T = ()> = anyhow::Result<T>;

/// What every command needs.
struct Ctx {
    client: Client,
    key: String,
    server: String,
}

impl Ctx {
    fn key(&self) -> Option<&str> {
        Some(&self.key)
    }

    /// The key of one of several requests of a command: the command's key and a suffix, so that
    /// repeating the command with the same key repeats none of them.
    fn sub_key(&self, what: &str) -> String {
        format!("{}-{what}", self.key)
    }
}

/// An id typed on the command line, as the kind its argument names (`suanli lease show ID`): one
/// of another kind or shape is refused here, before any request, and says what it is instead
/// (`"job_…" is not a lease id: it is a job id`).
fn id<T: api::Id>(text: &str) -> Result<T> {
    T::parse(text).map_err(|e| anyhow::anyhow!("{text:?} {e}"))
}

/// Whether the command sends a POST that changes the exchange.
fn is_mutating(command: &Command) -> bool {
    matches!(
        command,
        Command::Models(ModelsCommand::Add { .. })
            | Command::Org(OrgCommand::Create(_) | OrgCommand::Rename { .. })
            | Command::Deposit(_)
            | Command::Withdraw(_)
            | Command::Member(MemberCommand::Add { .. })
            | Command::Token(TokenCommand::Create { .. } | TokenCommand::Revoke { .. })
            | Command::Pool(PoolCommand::Create { .. })
            | Command::Offer(OfferCommand::Create(_) | OfferCommand::Withdraw { .. })
            | Command::Buy(_)
            | Command::End { .. }
            | Command::Lease(LeaseCommand::End { .. } | LeaseCommand::Cancel { .. })
            | Command::Launch(_)
            | Command::Exec(_)
            | Command::Cancel { .. }
    ) || matches!(&command, Command::Data(data) if data.is_mutating())
}

/// A fresh idempotency key: `cli-` and 32 random hex digits.
fn fresh_idempotency_key() -> Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("cannot draw a random idempotency key: {e}"))?;
    let mut key = String::from("cli-");
    for byte in bytes {
        write!(key, "{byte:02x}")?;
    }
    Ok(key)
}

/// Runs every command but `serve`, `demo` and `agent`, which main runs.
pub async fn run(cli: Cli) -> Result {
    let Cli {
        server,
        token,
        profile,
        json,
        idempotency_key,
        command,
    } = cli;
    if matches!(
        command,
        Command::Serve(_) | Command::Demo(_) | Command::Agent(_)
    ) {
        bail!("`serve`, `demo` and `agent` are run by main, not by cli::run");
    }
    let conn = profiles::resolve(&profiles::Flags {
        server,
        token,
        profile,
    })?;
    if !matches!(command, Command::Health) {
        conn.require_token()?;
    }
    let mutating = is_mutating(&command);
    let key = match idempotency_key {
        Some(key) => key,
        None => fresh_idempotency_key()?,
    };
    let ctx = Ctx {
        client: Client::new(conn.server.clone(), conn.token.clone()),
        key,
        server: conn.server,
    };
    let mut output = Output::new(json);
    let result = match execute(&ctx, command, &mut output).await {
        Err(err) if mutating && matches!(err.downcast_ref(), Some(ClientError::Transport(_))) => {
            Err(anyhow::anyhow!(
                "{err}\nnote: the exchange may or may not have done it; repeat the command with \
                 --idempotency-key {} to retry safely",
                ctx.key
            ))
        }
        other => other,
    };
    output.emit()?;
    result
}

/// Runs one command: each group's module makes its calls and shows the answer on `o`.
async fn execute(ctx: &Ctx, command: Command, o: &mut Output) -> Result {
    match command {
        Command::Serve(_) | Command::Demo(_) | Command::Agent(_) => {
            bail!("`serve`, `demo` and `agent` are run by main, not by cli::run")
        }
        Command::Whoami => orgs::whoami(ctx, o).await,
        Command::Health => orgs::health(ctx, o).await,
        Command::Org(command) => orgs::org(ctx, command, o).await,
        Command::Member(command) => orgs::member(ctx, command, o).await,
        Command::Token(command) => orgs::token(ctx, command, o).await,
        Command::Deposit(args) => ledger::deposit(ctx, args, o).await,
        Command::Withdraw(args) => ledger::withdraw(ctx, args, o).await,
        Command::Ledger(command) => ledger::ledger(ctx, command, o).await,
        Command::Balance => ledger::balance(ctx, o).await,
        Command::Earnings => ledger::earnings(ctx, o).await,
        Command::Statement(args) => ledger::statement(ctx, args, o).await,
        Command::Models(command) => provider::models(ctx, command, o).await,
        Command::Pool(command) => provider::pool(ctx, command, o).await,
        Command::Offer(command) => provider::offer(ctx, command, o).await,
        Command::Agents => provider::agents(ctx, o).await,
        Command::Zones => market::zones(ctx, o).await,
        Command::Catalog(args) => market::catalog(ctx, args, o).await,
        Command::Quote(args) => market::quote(ctx, args, o).await,
        Command::Buy(args) => market::buy(ctx, args, o).await,
        Command::Leases(args) => leases::list(ctx, args, o).await,
        Command::Lease(command) => leases::lease(ctx, command, o).await,
        Command::End { lease_id } => leases::end(ctx, &lease_id, o).await,
        Command::Launch(args) => jobs::launch(ctx, args, o).await,
        Command::Exec(args) => jobs::exec(ctx, args, o).await,
        Command::Jobs(args) => jobs::list(ctx, args, o).await,
        Command::Job(command) => jobs::job(ctx, command, o).await,
        Command::Cancel { job_id } => jobs::cancel(ctx, &job_id, o).await,
        Command::Outputs(args) => jobs::outputs(ctx, args, o).await,
        Command::Logs(args) => logs::logs(ctx, args, o).await,
        Command::Data(command) => data::data(ctx, command, o).await,
    }
}
