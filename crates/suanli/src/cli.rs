//! The `suanli` command line: clap definitions of every command, and [`run`], which executes the
//! commands that talk to an exchange through [`suanli_client`].
//!
//! Each command makes one API call and prints its answer as aligned plain-text tables for people,
//! or as pretty JSON with `--json`. Every command that sends a POST sends an idempotency key: a
//! fresh random one, or the one given with `--idempotency-key` so that scripts can retry safely.
//! Amounts are typed in yuan (`1000`, `12.5`) and shown as `¥12.500000`; durations are typed as
//! `90s`, `30m`, `2h`, `1d` or plain seconds. `serve`, `demo` and `agent` are declared here but
//! run by main.
//!
//! Jobs: `launch` reads a task file ([`task`]), quotes it, buys the best offer (failing over to the
//! next ones), queues the job and follows its output; `exec` runs another job on a lease; `logs`
//! reads or follows a job's output by long polling. These stream their output as it comes instead
//! of printing it at the end.

#[path = "task.rs"]
pub mod task;

use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;
use suanli_api as api;
use suanli_client::{Client, ClientError};
use suanli_core::money::{parse_yuan, SignedYuan, Yuan, MICROS_PER_YUAN};

use crate::args::{AgentArgs, DemoArgs, ServeArgs};
use crate::excluded;
use crate::profiles;

type Result<T = ()> = anyhow::Result<T>;

/// Suanli: an open exchange of compute power.
#[derive(Debug, Parser)]
#[command(name = "suanli", version, propagate_version = true)]
pub struct Cli {
    /// URL of the exchange [env: SUANLI_SERVER; else the profile's; else http://127.0.0.1:8080].
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "URL"
    )]
    pub server: Option<String>,
    /// API token [env: SUANLI_TOKEN; else the profile's].
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "SECRET"
    )]
    pub token: Option<String>,
    /// Profile of the config file to use [env: SUANLI_PROFILE; else its default_profile]. The file
    /// is $SUANLI_CONFIG, else $XDG_CONFIG_HOME/suanli/config.toml, else
    /// ~/.config/suanli/config.toml.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "NAME"
    )]
    pub profile: Option<String>,
    /// Print the response as JSON instead of tables.
    #[arg(long, global = true, help_heading = "Global options")]
    pub json: bool,
    /// Idempotency key of the request the command sends (default: a fresh random one). Repeat a
    /// command with the same key to retry it without doing it twice.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "KEY"
    )]
    pub idempotency_key: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the exchange's server.
    Serve(ServeArgs),
    /// Run a demo market and write profiles for its orgs.
    Demo(DemoArgs),
    /// Show the org and token you act as.
    Whoami,
    /// Check that the exchange answers (needs no token).
    Health,
    /// List the market's zones.
    Zones,
    /// Accelerator models of the registry.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Orgs of the exchange (operator).
    #[command(subcommand)]
    Org(OrgCommand),
    /// Record money paid in to an org from outside the exchange (operator).
    Deposit(DepositArgs),
    /// Record money paid out of an org (operator).
    Withdraw(WithdrawArgs),
    /// The ledger (operator).
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Members of your org.
    #[command(subcommand)]
    Member(MemberCommand),
    /// API tokens of your org.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Resource pools (provider).
    #[command(subcommand)]
    Pool(PoolCommand),
    /// Offers of your pools (provider).
    #[command(subcommand)]
    Offer(OfferCommand),
    /// Show what your org has earned from leases sold (provider).
    Earnings,
    /// Browse the active offers of every provider.
    Catalog(CatalogArgs),
    /// Rank the offers that fit a need, and say why the others do not.
    Quote(QuoteArgs),
    /// Buy units of an offer for up to a duration.
    Buy(BuyArgs),
    /// List your leases, bought and sold.
    Leases(LeasesArgs),
    /// One lease: show, end or cancel it.
    #[command(subcommand)]
    Lease(LeaseCommand),
    /// End an active lease and pay for what was used (same as `lease end`).
    End {
        #[arg(value_name = "LEASE_ID")]
        lease_id: String,
    },
    /// Run a task file: buy the best offer for it, run it as a job and follow its output.
    #[command(after_long_help = TASK_FILE_HELP)]
    Launch(LaunchArgs),
    /// Run another job on a lease you hold.
    Exec(ExecArgs),
    /// List your jobs, newest first.
    Jobs(JobsArgs),
    /// One job.
    #[command(subcommand)]
    Job(JobCommand),
    /// Show a job's output; -f follows it until the job ends.
    Logs(LogsArgs),
    /// List a job's output files, or download them with --dest.
    Outputs(OutputsArgs),
    /// Cancel a job (to cancel a lease: `suanli lease cancel LEASE_ID`).
    Cancel {
        #[arg(value_name = "JOB_ID")]
        job_id: String,
    },
    /// List your agents (provider; every agent for the operator).
    Agents,
    /// Run an agent in front of this machine.
    Agent(AgentArgs),
    /// Show your org's balance.
    Balance,
    /// Show your org's ledger lines.
    Statement(StatementArgs),
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// List the accelerator models.
    List,
    /// Add an accelerator model (operator).
    Add {
        /// Model name, as used in classes (e.g. H100-80G).
        #[arg(long)]
        name: String,
        #[arg(long)]
        vendor: String,
        /// Memory of one accelerator in GiB.
        #[arg(long, value_name = "GIB")]
        memory_gib: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create an org with its first admin; prints the admin's token once.
    Create(OrgCreateArgs),
    /// List the orgs.
    List,
    /// Show an org.
    Show {
        #[arg(value_name = "ORG_ID")]
        id: String,
    },
    /// Give an org a new name (operator): for an org whose name cannot be told apart from
    /// another's (`NAME UNIQUE` is `no` in `org list`).
    Rename {
        #[arg(value_name = "ORG_ID")]
        id: String,
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct OrgCreateArgs {
    #[arg(long)]
    pub name: String,
    #[arg(long, value_enum)]
    pub kind: OrgKindArg,
    /// Required for consumers.
    #[arg(long, value_enum)]
    pub consumer_type: Option<ConsumerTypeArg>,
    /// Zone the org is in (see `suanli zones`).
    #[arg(long)]
    pub zone: String,
    /// Where the org comes from, for statistics (e.g. tianjin, beijing).
    #[arg(long)]
    pub origin_region: String,
    /// Name of the first admin (default: admin).
    #[arg(long)]
    pub admin_name: Option<String>,
    #[arg(long)]
    pub admin_email: Option<String>,
    /// Also save the admin's token as this profile of the config file.
    #[arg(long, value_name = "PROFILE")]
    pub save_profile: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OrgKindArg {
    Consumer,
    Provider,
    Operator,
}

impl From<OrgKindArg> for api::OrgKind {
    fn from(kind: OrgKindArg) -> api::OrgKind {
        match kind {
            OrgKindArg::Consumer => api::OrgKind::Consumer,
            OrgKindArg::Provider => api::OrgKind::Provider,
            OrgKindArg::Operator => api::OrgKind::Operator,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConsumerTypeArg {
    Enterprise,
    #[value(name = "research_institute")]
    ResearchInstitute,
}

impl From<ConsumerTypeArg> for api::ConsumerType {
    fn from(kind: ConsumerTypeArg) -> api::ConsumerType {
        match kind {
            ConsumerTypeArg::Enterprise => api::ConsumerType::Enterprise,
            ConsumerTypeArg::ResearchInstitute => api::ConsumerType::ResearchInstitute,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    Admin,
    Member,
}

impl From<RoleArg> for api::Role {
    fn from(role: RoleArg) -> api::Role {
        match role {
            RoleArg::Admin => api::Role::Admin,
            RoleArg::Member => api::Role::Member,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SourceArg {
    Available,
    Earnings,
}

impl From<SourceArg> for api::WithdrawalSource {
    fn from(source: SourceArg) -> api::WithdrawalSource {
        match source {
            SourceArg::Available => api::WithdrawalSource::Available,
            SourceArg::Earnings => api::WithdrawalSource::Earnings,
        }
    }
}

#[derive(Debug, Args)]
pub struct DepositArgs {
    #[arg(value_name = "ORG_ID")]
    pub org_id: String,
    /// Amount in yuan, e.g. 1000 or 12.5.
    #[arg(value_name = "AMOUNT", value_parser = parse_amount)]
    pub amount_micros: u64,
    /// Reference of the payment outside the exchange (bank transfer, invoice).
    #[arg(long = "ref", value_name = "REF")]
    pub reference: String,
}

#[derive(Debug, Args)]
pub struct WithdrawArgs {
    #[arg(value_name = "ORG_ID")]
    pub org_id: String,
    /// Amount in yuan, e.g. 1000 or 12.5.
    #[arg(value_name = "AMOUNT", value_parser = parse_amount)]
    pub amount_micros: u64,
    /// Reference of the payment outside the exchange (bank transfer, invoice).
    #[arg(long = "ref", value_name = "REF")]
    pub reference: String,
    /// Which account pays.
    #[arg(long = "from", value_enum, default_value = "available")]
    pub source: SourceArg,
}

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Check the ledger's invariants; fails when one is violated.
    Check,
}

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// List the members.
    List,
    /// Add a member.
    Add {
        #[arg(long)]
        name: String,
        #[arg(long)]
        email: Option<String>,
        #[arg(long, value_enum)]
        role: RoleArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// List the tokens.
    List,
    /// Create a token; prints its secret once.
    Create {
        #[arg(long)]
        name: String,
        /// Member the token acts for (default: yours).
        #[arg(long = "member", value_name = "MEMBER_ID")]
        member_id: Option<String>,
        /// Lifetime in days (default: the exchange's, 90 days).
        #[arg(long, value_name = "N")]
        expires_in_days: Option<u64>,
        /// Also save the token as this profile of the config file.
        #[arg(long, value_name = "PROFILE")]
        save_profile: Option<String>,
    },
    /// Revoke a token.
    Revoke {
        #[arg(value_name = "TOKEN_ID")]
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// Register a pool of nodes.
    Create {
        #[arg(long)]
        name: String,
        /// Zone the pool is in (see `suanli zones`).
        #[arg(long)]
        zone: String,
        /// A node, as NAME:CPUS:MEMORY_GIB[:MODEL:COUNT][@PARTITION], e.g. gpu-01:96:1024:H100-80G:8
        /// or cn-01:64:256@batch. Repeat for more nodes.
        #[arg(long = "node", value_name = "SPEC", required = true, num_args = 1.., value_parser = parse_node_spec)]
        nodes: Vec<api::NodeSpec>,
    },
    /// List your pools.
    List,
    /// Show a pool and its nodes.
    Show {
        #[arg(value_name = "POOL_ID")]
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum OfferCommand {
    /// Offer units of a pool at a price.
    Create(OfferCreateArgs),
    /// List your offers.
    List,
    /// Show an offer.
    Show {
        #[arg(value_name = "OFFER_ID")]
        id: String,
    },
    /// Withdraw an offer from the market.
    Withdraw {
        #[arg(value_name = "OFFER_ID")]
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct OfferCreateArgs {
    #[arg(long = "pool", value_name = "POOL_ID")]
    pub pool_id: String,
    /// general, intelligent:<MODEL> or supercomputing:<PARTITION>.
    #[arg(long)]
    pub class: String,
    /// Price in yuan per unit-hour, e.g. 12.5.
    #[arg(long = "price", value_name = "YUAN_PER_UNIT_HOUR", value_parser = parse_money)]
    pub price_micros: u64,
    /// Memory per unit in GiB (e.g. 4 or 0.5).
    #[arg(long = "memory-gib-per-unit", value_name = "GIB", value_parser = parse_gib_to_mib)]
    pub memory_mib_per_unit: u64,
    /// CPUs per unit (default: 1 for general and supercomputing).
    #[arg(long, value_name = "N")]
    pub cpus_per_unit: Option<u64>,
    #[arg(long, value_name = "N")]
    pub min_units: Option<u64>,
    #[arg(long, value_name = "N")]
    pub max_units: Option<u64>,
    /// End of the offer, RFC 3339 (default: a year from now).
    #[arg(long, value_name = "RFC3339", value_parser = parse_rfc3339)]
    pub valid_until: Option<String>,
}

#[derive(Debug, Args)]
pub struct CatalogArgs {
    #[arg(long, value_parser = ["general", "intelligent", "supercomputing"])]
    pub category: Option<String>,
    /// Only offers in this zone.
    #[arg(long)]
    pub zone: Option<String>,
    /// At most this many offers.
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
}

#[derive(Debug, Args)]
pub struct QuoteArgs {
    /// general, intelligent[:MODEL] or supercomputing[:PARTITION].
    #[arg(long)]
    pub class: Option<String>,
    /// Accelerators as MODEL[:COUNT], e.g. H100-80G:8.
    #[arg(long, value_name = "MODEL[:COUNT]", value_parser = parse_gpus)]
    pub gpus: Option<GpuSpec>,
    /// Units (vCPUs, accelerators or cores) when not implied by the other options.
    #[arg(long, value_name = "N")]
    pub units: Option<u64>,
    /// Total CPUs.
    #[arg(long, value_name = "N")]
    pub cpus: Option<u64>,
    /// Total memory in GiB.
    #[arg(long = "memory-gib", value_name = "GIB", value_parser = parse_gib_to_mib)]
    pub memory_mib: Option<u64>,
    /// Least memory of one accelerator, in GiB.
    #[arg(long, value_name = "GIB")]
    pub min_gpu_memory_gib: Option<u32>,
    /// Only offers in this zone.
    #[arg(long)]
    pub zone: Option<String>,
    /// Highest price in yuan per unit-hour.
    #[arg(long = "max-price", value_name = "YUAN", value_parser = parse_money)]
    pub max_price_micros: Option<u64>,
    /// How long at most: 90s, 30m, 2h, 1d or seconds.
    #[arg(long = "duration", value_name = "DUR", value_parser = parse_duration)]
    pub duration_s: u64,
    /// Also list the excluded offers one by one, with the reason.
    #[arg(long)]
    pub explain: bool,
}

/// Accelerators asked for in a quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuSpec {
    pub model: String,
    pub count: Option<u64>,
}

#[derive(Debug, Args)]
pub struct BuyArgs {
    #[arg(value_name = "OFFER_ID")]
    pub offer_id: String,
    /// Units to buy: vCPUs, accelerators or cores, by the offer's category.
    #[arg(long, value_name = "N")]
    pub units: u64,
    /// How long at most: 90s, 30m, 2h, 1d or seconds. The lease is paid by the second used.
    #[arg(long = "duration", value_name = "DUR", value_parser = parse_duration)]
    pub duration_s: u64,
    /// Refuse to buy if the price is now above this, in yuan per unit-hour.
    #[arg(long = "max-price", value_name = "YUAN", value_parser = parse_money)]
    pub max_price_micros: Option<u64>,
}

#[derive(Debug, Args)]
pub struct LeasesArgs {
    #[arg(long, value_parser = ["active", "ended", "cancelled", "expired"])]
    pub state: Option<String>,
    /// consumer (leases bought) or provider (leases sold); default both.
    #[arg(long, value_parser = ["consumer", "provider"])]
    pub side: Option<String>,
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// Show a lease.
    Show {
        #[arg(value_name = "LEASE_ID")]
        id: String,
    },
    /// End an active lease and pay for what was used.
    End {
        #[arg(value_name = "LEASE_ID")]
        id: String,
    },
    /// Cancel an active lease.
    Cancel {
        #[arg(value_name = "LEASE_ID")]
        id: String,
    },
}

/// The task file's format, shown by `suanli launch --help`.
const TASK_FILE_HELP: &str = "\
Task file (YAML; only `run` is required, and `duration` and what to buy for launch):

  name: train-resnet
  resources:
    accelerators: H100:8        # MODEL[:COUNT]; a unique prefix of a model of
                                # `suanli models list`, any case
    cpus: 16                    # total CPUs: the units of general and
                                # supercomputing classes
    memory: 64                  # GiB in all
    class: general              # general | intelligent[:MODEL] |
                                # supercomputing[:PARTITION]
    min_accelerator_memory: 80  # GiB
  zone: wuqing-core
  max_price: 30                 # yuan per unit-hour
  duration: 2h                  # the lease's limit: 90s, 30m, 2h, 1d
  time_limit: 30m               # the job's wall-clock limit
  restartable: false            # may run again if its agent is lost
  network: false
  env: {KEY: value}
  workdir: ./src                # uploaded, relative to the task file: at most
                                # 512 KiB and 1000 files; .git, target and
                                # node_modules are skipped
  setup: |
    pip install -r requirements.txt
  run: |
    python train.py
  outputs: [results/]

launch quotes the task, shows the offers and asks before buying the best (unless --yes); if an
offer is gone or its pool has no agent, it buys the next one. The lease is paid by metered use
and ends with the job unless --keep. The exit status is 0 when the job succeeded.";

#[derive(Debug, Args)]
pub struct LaunchArgs {
    /// The task file (YAML): what to buy and what to run (format below).
    #[arg(value_name = "TASK.yaml")]
    pub task: PathBuf,
    /// Buy without asking for confirmation (needed without a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Keep the lease after the job ends, for more jobs with `suanli exec`; end it with
    /// `suanli end`. By default the lease ends (and is settled) when its job ends.
    #[arg(long)]
    pub keep: bool,
    /// Return once the job is queued instead of following its output.
    #[arg(long, short = 'd')]
    pub detach: bool,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    #[arg(value_name = "LEASE_ID")]
    pub lease_id: String,
    /// The task file to run (its resources, zone, max_price and duration are ignored).
    #[arg(
        value_name = "TASK.yaml",
        required_unless_present = "run",
        conflicts_with = "run"
    )]
    pub task: Option<PathBuf>,
    /// Shell commands to run instead of a task file.
    #[arg(long, value_name = "CMD")]
    pub run: Option<String>,
    /// Name of the job (default: the task file's `name`).
    #[arg(long)]
    pub name: Option<String>,
    /// Return once the job is queued instead of following its output.
    #[arg(long, short = 'd')]
    pub detach: bool,
}

#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Only the jobs of this lease.
    #[arg(long = "lease", value_name = "LEASE_ID")]
    pub lease_id: Option<String>,
    #[arg(long, value_parser = JOB_STATES)]
    pub state: Option<String>,
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
}

/// The states of a job.
pub const JOB_STATES: [&str; 8] = [
    "queued",
    "dispatched",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "timed_out",
    "lost",
];

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Show a job and its attempts.
    Show {
        #[arg(value_name = "JOB_ID")]
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct OutputsArgs {
    #[arg(value_name = "JOB_ID")]
    pub job_id: String,
    /// Download every output file into this directory (paths kept).
    #[arg(long, value_name = "DIR")]
    pub dest: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Follow the output until the job ends.
    #[arg(long, short = 'f')]
    pub follow: bool,
    #[arg(value_name = "JOB_ID")]
    pub job_id: String,
}

#[derive(Debug, Args)]
pub struct StatementArgs {
    /// Only lines after this position (the SEQ of the last line seen).
    #[arg(long, value_name = "SEQ")]
    pub after: Option<i64>,
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
}

// --- parsing helpers -----------------------------------------------------------------------------

/// A yuan amount such as `1000`, `12.5` or `0.000001`, in micros.
pub fn parse_money(text: &str) -> std::result::Result<u64, String> {
    parse_yuan(text).ok_or_else(|| {
        format!("{text:?} is not an amount in yuan: write e.g. 1000 or 12.5 (at most six decimals)")
    })
}

/// A yuan amount that must be more than zero.
pub fn parse_amount(text: &str) -> std::result::Result<u64, String> {
    match parse_money(text)? {
        0 => Err("the amount must be more than zero".to_owned()),
        micros => Ok(micros),
    }
}

/// A duration as `90s`, `30m`, `2h`, `1d` or plain seconds, in seconds; more than zero.
pub fn parse_duration(text: &str) -> std::result::Result<u64, String> {
    let bad = || format!("{text:?} is not a duration: write e.g. 90s, 30m, 2h, 1d or seconds");
    let text = text.trim();
    let (number, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c.to_ascii_lowercase()),
        _ => (text, 's'),
    };
    let per_unit: u64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return Err(bad()),
    };
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let seconds = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(per_unit))
        .ok_or_else(|| format!("{text:?} is too long a duration"))?;
    if seconds == 0 {
        return Err("the duration must be more than zero".to_owned());
    }
    Ok(seconds)
}

/// Seconds in the largest whole unit: `1d`, `2h`, `90m`, `45s`.
pub fn format_duration(seconds: u64) -> String {
    match seconds {
        0 => "0s".to_owned(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// GiB, whole or with up to six decimals that make whole MiB (`4`, `0.5`), in MiB.
pub fn parse_gib_to_mib(text: &str) -> std::result::Result<u64, String> {
    let bad = || format!("{text:?} is not an amount of GiB: write e.g. 256 or 0.5");
    let micro_gib = parse_yuan(text).ok_or_else(bad)?;
    let scaled = u128::from(micro_gib) * 1024;
    let per = u128::from(MICROS_PER_YUAN);
    if scaled % per != 0 {
        return Err(format!("{text:?} GiB is not a whole number of MiB"));
    }
    u64::try_from(scaled / per).map_err(|_| bad())
}

/// A node as `NAME:CPUS:MEMORY_GIB[:MODEL:COUNT][@PARTITION]`.
pub fn parse_node_spec(text: &str) -> std::result::Result<api::NodeSpec, String> {
    let usage =
        "write NAME:CPUS:MEMORY_GIB[:MODEL:COUNT][@PARTITION], e.g. gpu-01:96:1024:H100-80G:8 \
                 or cn-01:64:256@batch";
    let (rest, partition) = match text.split_once('@') {
        Some((rest, partition)) if !partition.is_empty() && !partition.contains(['@', ':']) => {
            (rest, Some(partition.to_owned()))
        }
        Some(_) => return Err(format!("{text:?}: bad partition; {usage}")),
        None => (text, None),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (name, cpus, memory, model) = match parts.as_slice() {
        [name, cpus, memory] => (*name, *cpus, *memory, None),
        [name, cpus, memory, model, count] => (*name, *cpus, *memory, Some((*model, *count))),
        _ => return Err(format!("{text:?}: {usage}")),
    };
    if name.is_empty() {
        return Err(format!("{text:?}: the node needs a name; {usage}"));
    }
    let cpus: u64 = cpus
        .parse()
        .map_err(|_| format!("{text:?}: CPUS must be a whole number, not {cpus:?}"))?;
    let memory_mib = parse_gib_to_mib(memory).map_err(|e| format!("{text:?}: MEMORY_GIB: {e}"))?;
    let (accelerator_model, accelerators) = match model {
        None => (None, 0),
        Some((model, count)) => {
            if model.is_empty() {
                return Err(format!("{text:?}: the accelerator model is empty; {usage}"));
            }
            let count: u64 = count
                .parse()
                .map_err(|_| format!("{text:?}: COUNT must be a whole number, not {count:?}"))?;
            (Some(model.to_owned()), count)
        }
    };
    Ok(api::NodeSpec {
        name: name.to_owned(),
        cpus,
        memory_mib,
        accelerator_model,
        accelerators,
        partition,
    })
}

/// Accelerators as `MODEL[:COUNT]`.
pub fn parse_gpus(text: &str) -> std::result::Result<GpuSpec, String> {
    let (model, count) = match text.split_once(':') {
        Some((model, count)) => {
            let count: u64 = count
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{text:?}: COUNT must be a whole number above zero"))?;
            (model, Some(count))
        }
        None => (text, None),
    };
    if model.is_empty() {
        return Err(format!("{text:?}: write MODEL[:COUNT], e.g. H100-80G:8"));
    }
    Ok(GpuSpec {
        model: model.to_owned(),
        count,
    })
}

/// An RFC 3339 time, checked and passed on as written.
pub fn parse_rfc3339(text: &str) -> std::result::Result<String, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|_| text.to_owned())
        .map_err(|e| format!("{text:?} is not an RFC 3339 time (e.g. 2026-01-31T00:00:00Z): {e}"))
}

/// A fresh idempotency key: `cli-` and 32 random hex digits.
pub fn fresh_idempotency_key() -> Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("cannot draw a random idempotency key: {e}"))?;
    let mut key = String::from("cli-");
    for byte in bytes {
        write!(key, "{byte:02x}")?;
    }
    Ok(key)
}

// --- output helpers ------------------------------------------------------------------------------

/// Micros as `¥12.500000`.
pub fn yuan(micros: u64) -> String {
    format!("¥{}", Yuan(micros))
}

/// Signed micros as `¥12.500000` or `-¥3.000001`.
pub fn signed_yuan(micros: i64) -> String {
    if micros < 0 {
        format!("-¥{}", SignedYuan(-i128::from(micros)))
    } else {
        format!("¥{}", SignedYuan(i128::from(micros)))
    }
}

/// A price as `¥12.500000/unit-h`.
pub fn price(micros_per_unit_hour: u64) -> String {
    format!("{}/unit-h", yuan(micros_per_unit_hour))
}

/// Micros as yuan for a command line: `12.5`, `1000`.
fn yuan_arg(micros: u64) -> String {
    let text = Yuan(micros).to_string();
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// MiB as `256GiB` when whole, else `1536MiB`.
fn memory(mib: u64) -> String {
    let gib = mib / 1024;
    if gib * 1024 == mib {
        format!("{gib}GiB")
    } else {
        format!("{mib}MiB")
    }
}

fn or_dash(value: Option<&str>) -> String {
    value.unwrap_or("-").to_owned()
}

/// Columns a terminal gives `text`: two for East Asian wide characters (CJK, Hangul, full-width
/// forms), one for the others.
pub fn display_width(text: &str) -> usize {
    text.chars()
        .map(|c| match u32::from(c) {
            0x1100..=0x115F
            | 0x2E80..=0x303E
            | 0x3041..=0x33FF
            | 0x3400..=0x4DBF
            | 0x4E00..=0x9FFF
            | 0xA000..=0xA4CF
            | 0xAC00..=0xD7A3
            | 0xF900..=0xFAFF
            | 0xFE30..=0xFE4F
            | 0xFF00..=0xFF60
            | 0xFFE0..=0xFFE6
            | 0x20000..=0x3FFFD => 2,
            _ => 1,
        })
        .sum()
}

/// An aligned table: a header row and rows, columns padded to their widest cell and two spaces
/// apart. `(none)` when there are no rows.
pub fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    if rows.is_empty() {
        return "(none)\n".to_owned();
    }
    let mut widths: Vec<usize> = header.iter().map(|h| display_width(h)).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(display_width(cell));
        }
    }
    let mut text = String::new();
    let mut push_row = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            text.push_str(cell);
            if i < last {
                let pad = width.saturating_sub(display_width(cell)) + 2;
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        text.push('\n');
    };
    push_row(header.to_vec());
    for row in rows {
        push_row(row.iter().map(String::as_str).collect());
    }
    text
}

/// Labels and values, one pair a line, values aligned.
pub fn render_pairs(pairs: &[(&str, String)]) -> String {
    let width = pairs
        .iter()
        .map(|(label, _)| display_width(label))
        .max()
        .unwrap_or(0);
    let mut text = String::new();
    for (label, value) in pairs {
        let pad = width - display_width(label) + 2;
        text.push_str(label);
        text.extend(std::iter::repeat_n(' ', pad));
        text.push_str(value);
        text.push('\n');
    }
    text
}

/// What a command prints: stdout, then notes on stderr.
#[derive(Debug, Default)]
struct Output {
    out: String,
    err: String,
}

impl Output {
    fn table(&mut self, header: &[&str], rows: &[Vec<String>]) {
        self.out.push_str(&render_table(header, rows));
    }

    fn pairs(&mut self, pairs: &[(&str, String)]) {
        self.out.push_str(&render_pairs(pairs));
    }

    fn line(&mut self, line: &str) {
        self.out.push_str(line);
        self.out.push('\n');
    }

    fn note(&mut self, line: &str) {
        self.err.push_str(line);
        self.err.push('\n');
    }

    fn json<T: Serialize>(&mut self, value: &T) -> Result {
        self.line(&serde_json::to_string_pretty(value)?);
        Ok(())
    }

    /// Writes what is pending now, before a command streams output of its own.
    fn flush(&mut self) -> Result {
        self.emit()?;
        self.out.clear();
        self.err.clear();
        Ok(())
    }

    /// Writes stdout then stderr; a closed stdout (`| head`) is not an error.
    fn emit(&self) -> Result {
        let mut stdout = std::io::stdout().lock();
        match stdout
            .write_all(self.out.as_bytes())
            .and_then(|()| stdout.flush())
        {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                return Err(e).context("cannot write to stdout")
            }
            _ => {}
        }
        let _ = std::io::stderr().write_all(self.err.as_bytes());
        Ok(())
    }
}

fn org_pairs(org: &api::Org) -> Vec<(&'static str, String)> {
    let mut pairs = vec![
        ("org", org.id.clone()),
        ("name", org.name.clone()),
        ("kind", org.kind.as_str().to_owned()),
    ];
    if let Some(consumer_type) = org.consumer_type {
        pairs.push(("consumer type", consumer_type.as_str().to_owned()));
    }
    pairs.extend([
        ("zone", org.zone.clone()),
        ("origin region", org.origin_region.clone()),
        ("created", org.created_at.clone()),
    ]);
    if !org.name_unique {
        pairs.push((
            "name unique",
            "no: shown with its id until renamed (suanli org rename)".to_owned(),
        ));
    }
    pairs
}

/// `active`, `revoked` or `expired`.
fn token_state(token: &api::ApiToken) -> &'static str {
    if token.revoked_at.is_some() {
        return "revoked";
    }
    match chrono::DateTime::parse_from_rfc3339(&token.expires_at) {
        Ok(expires) if expires <= chrono::Utc::now() => "expired",
        _ => "active",
    }
}

fn token_pairs(token: &api::ApiToken) -> Vec<(&'static str, String)> {
    vec![
        ("token", token.id.clone()),
        ("name", token.name.clone()),
        ("member", token.member_id.clone()),
        ("role", token.role.as_str().to_owned()),
        ("state", token_state(token).to_owned()),
        ("created", token.created_at.clone()),
        ("expires", token.expires_at.clone()),
    ]
}

fn member_pairs(member: &api::Member) -> Vec<(&'static str, String)> {
    vec![
        ("member", member.id.clone()),
        ("name", member.name.clone()),
        ("email", or_dash(member.email.as_deref())),
        ("role", member.role.as_str().to_owned()),
        ("created", member.created_at.clone()),
    ]
}

fn transfer_pairs(transfer: &api::Transfer) -> Vec<(&'static str, String)> {
    let mut pairs = vec![
        ("transfer", transfer.id.clone()),
        ("kind", transfer.kind.clone()),
        ("amount", yuan(transfer.amount_micros)),
        ("debit", transfer.debit_account_id.clone()),
        ("credit", transfer.credit_account_id.clone()),
    ];
    if let Some(reference) = &transfer.external_ref {
        pairs.push(("ref", reference.clone()));
    }
    pairs.push(("created", transfer.created_at.clone()));
    pairs
}

/// `8× H100-80G`, or `-` for none.
fn accelerators(model: Option<&str>, count: u64) -> String {
    match (model, count) {
        (_, 0) => "-".to_owned(),
        (Some(model), n) => format!("{n}× {model}"),
        (None, n) => n.to_string(),
    }
}

fn print_pool(o: &mut Output, pool: &api::Pool) {
    o.pairs(&[
        ("pool", pool.id.clone()),
        ("name", pool.name.clone()),
        ("zone", pool.zone.clone()),
        (
            "agent",
            if pool.agent_connected {
                "connected"
            } else {
                "none"
            }
            .to_owned(),
        ),
        ("created", pool.created_at.clone()),
    ]);
    o.line("");
    let rows: Vec<Vec<String>> = pool
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.id.clone(),
                n.name.clone(),
                format!("{}/{}", n.cpus_reserved, n.cpus),
                format!("{}/{}", memory(n.memory_mib_reserved), memory(n.memory_mib)),
                match &n.accelerator_model {
                    Some(model) if n.accelerators > 0 => {
                        format!("{}/{} {model}", n.accelerators_reserved, n.accelerators)
                    }
                    _ => "-".to_owned(),
                },
                or_dash(n.partition.as_deref()),
            ]
        })
        .collect();
    o.table(
        &[
            "NODE",
            "NAME",
            "CPUS USED",
            "MEMORY USED",
            "ACCELERATORS USED",
            "PARTITION",
        ],
        &rows,
    );
}

fn pool_row(pool: &api::Pool) -> Vec<String> {
    let cpus: u64 = pool.nodes.iter().map(|n| n.cpus).sum();
    let memory_mib: u64 = pool.nodes.iter().map(|n| n.memory_mib).sum();
    let mut models: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for node in &pool.nodes {
        if let Some(model) = &node.accelerator_model {
            *models.entry(model).or_default() += node.accelerators;
        }
    }
    let accel: Vec<String> = models
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(m, n)| accelerators(Some(m), *n))
        .collect();
    vec![
        pool.id.clone(),
        pool.name.clone(),
        pool.zone.clone(),
        pool.nodes.len().to_string(),
        cpus.to_string(),
        memory(memory_mib),
        if accel.is_empty() {
            "-".to_owned()
        } else {
            accel.join(", ")
        },
        if pool.agent_connected { "yes" } else { "no" }.to_owned(),
    ]
}

/// `1 CPU, 8GiB, 80GiB accelerator memory`.
fn unit_shape(offer: &api::Offer) -> String {
    let mut shape = format!(
        "{} CPU{}, {}",
        offer.cpus_per_unit,
        if offer.cpus_per_unit == 1 { "" } else { "s" },
        memory(offer.memory_mib_per_unit)
    );
    if offer.accelerator_memory_gib > 0 {
        write!(
            shape,
            ", {}GiB accelerator memory",
            offer.accelerator_memory_gib
        )
        .expect("writing to a String cannot fail");
    }
    shape
}

fn offer_pairs(offer: &api::Offer) -> Vec<(&'static str, String)> {
    vec![
        ("offer", offer.id.clone()),
        (
            "provider",
            format!("{} ({})", offer.provider_name, offer.org_id),
        ),
        ("pool", offer.pool_id.clone()),
        ("class", offer.class.clone()),
        ("category", offer.category.clone()),
        ("zone", offer.zone.clone()),
        ("price", price(offer.price_micros_per_unit_hour)),
        ("unit", unit_shape(offer)),
        (
            "units",
            format!(
                "{}–{} per lease, {} free",
                offer.min_units, offer.max_units, offer.units_available
            ),
        ),
        (
            "valid",
            format!("{} to {}", offer.valid_from, offer.valid_until),
        ),
        ("state", offer.state.clone()),
        ("created", offer.created_at.clone()),
    ]
}

fn lease_pairs(lease: &api::Lease) -> Vec<(&'static str, String)> {
    let mut pairs = vec![
        ("lease", lease.id.clone()),
        ("state", lease.state.clone()),
        ("offer", lease.offer_id.clone()),
        ("class", lease.class.clone()),
        ("zone", lease.zone.clone()),
        ("consumer", lease.consumer_org_id.clone()),
        ("provider", lease.provider_org_id.clone()),
        ("pool", lease.pool_id.clone()),
        ("units", lease.units.to_string()),
        ("price", price(lease.price_micros_per_unit_hour)),
        ("duration limit", format_duration(lease.duration_limit_s)),
        ("started", lease.started_at.clone()),
        ("ends", lease.ends_at.clone()),
    ];
    if let Some(ended) = &lease.ended_at {
        pairs.push(("ended", ended.clone()));
    }
    pairs.push(("billing", billing(lease)));
    if lease.billing == "metered" {
        pairs.push(("metered", unit_seconds(lease.metered_unit_ms)));
        if lease.cost_micros.is_none() {
            pairs.push(("cost so far", or_dash(metered_cost(lease).as_deref())));
        }
    }
    if let Some(billed) = lease.billed_unit_ms {
        pairs.push(("billed", unit_seconds(billed)));
    }
    if let Some(cost) = lease.cost_micros {
        pairs.push(("cost", yuan(cost)));
    }
    if let Some(fee) = lease.fee_micros {
        pairs.push(("fee", yuan(fee)));
    }
    if let Some(paid) = lease.provider_micros {
        pairs.push(("provider paid", yuan(paid)));
    }
    if let Some(released) = lease.released_micros {
        pairs.push(("released", yuan(released)));
    }
    let mut hold = format!(
        "{} {} ({})",
        lease.hold.id,
        yuan(lease.hold.amount_micros),
        lease.hold.state
    );
    if lease.hold.state == "posted" {
        write!(hold, ", charged {}", yuan(lease.hold.posted_micros))
            .expect("writing to a String cannot fail");
    }
    pairs.push(("hold", hold));
    let allocations: Vec<String> = lease
        .allocations
        .iter()
        .map(|a| format!("{}×{}", a.node_id, a.units))
        .collect();
    pairs.push((
        "nodes",
        if allocations.is_empty() {
            "-".to_owned()
        } else {
            allocations.join(", ")
        },
    ));
    pairs
}

/// `metered, ends with its last job`: how a lease is paid.
fn billing(lease: &api::Lease) -> String {
    let how = match lease.billing.as_str() {
        "metered" => "metered (the unit-seconds its jobs used)",
        "elapsed" => "elapsed (the lease's wall time)",
        other => other,
    };
    if lease.auto_end {
        format!("{how}, ends with its last job")
    } else {
        how.to_owned()
    }
}

/// What the metered use of a lease costs so far: unit-milliseconds × price, rounded down once.
fn metered_cost(lease: &api::Lease) -> Option<String> {
    suanli_core::money::cost_micros_of_unit_ms(
        lease.price_micros_per_unit_hour,
        lease.metered_unit_ms,
    )
    .ok()
    .map(yuan)
}

/// Unit-milliseconds as unit-seconds with three decimals: `12.345 unit-s`.
fn unit_seconds(unit_ms: u64) -> String {
    format!("{}.{:03} unit-s", unit_ms / 1_000, unit_ms % 1_000)
}

/// `1h 2m 3s` between two RFC 3339 times.
fn elapsed(from: &str, to: &str) -> Option<String> {
    let from = chrono::DateTime::parse_from_rfc3339(from).ok()?;
    let to = chrono::DateTime::parse_from_rfc3339(to).ok()?;
    let millis = u64::try_from((to - from).num_milliseconds()).ok()?;
    let seconds = millis / 1_000;
    let (h, m, s) = (seconds / 3_600, seconds / 60 % 60, seconds % 60);
    Some(match (h, m) {
        // A short job's own time, to the tenth: "0.1s", not "0s".
        (0, 0) => format!("{}.{}s", s, millis % 1_000 / 100),
        (0, _) => format!("{m}m {s}s"),
        _ => format!("{h}h {m}m {s}s"),
    })
}

fn job_row(job: &api::Job) -> Vec<String> {
    vec![
        job.id.clone(),
        job.name.clone(),
        job.state.clone(),
        job.lease_id.clone(),
        job.attempts
            .iter()
            .map(|a| a.number)
            .max()
            .map(|n| n.to_string())
            .unwrap_or_else(|| "-".to_owned()),
        job.exit_code
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".to_owned()),
        unit_seconds(job.unit_ms),
        or_dash(job.started_at.as_deref()),
        or_dash(job.ended_at.as_deref()),
    ]
}

const JOB_HEADER: [&str; 9] = [
    "ID", "NAME", "STATE", "LEASE", "ATTEMPT", "EXIT", "USE", "STARTED", "ENDED",
];

fn print_job(o: &mut Output, job: &api::Job) {
    let mut pairs = vec![
        ("job", job.id.clone()),
        ("name", job.name.clone()),
        ("state", job.state.clone()),
        ("lease", job.lease_id.clone()),
        (
            "restartable",
            if job.restartable { "yes" } else { "no" }.to_owned(),
        ),
    ];
    if let Some(code) = job.exit_code {
        pairs.push(("exit code", code.to_string()));
    }
    if let Some(reason) = &job.reason {
        pairs.push(("reason", reason.clone()));
    }
    pairs.push(("created", job.created_at.clone()));
    if let Some(started) = &job.started_at {
        pairs.push(("started", started.clone()));
    }
    if let Some(ended) = &job.ended_at {
        pairs.push(("ended", ended.clone()));
        if let Some(took) = job.started_at.as_deref().and_then(|s| elapsed(s, ended)) {
            pairs.push(("ran", took));
        }
    }
    pairs.push(("used", unit_seconds(job.unit_ms)));
    o.pairs(&pairs);
    o.line("");
    let rows: Vec<Vec<String>> = job
        .attempts
        .iter()
        .map(|a| {
            vec![
                a.id.clone(),
                a.number.to_string(),
                a.agent_id.clone(),
                a.state.clone(),
                a.exit_code
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".to_owned()),
                or_dash(a.reason.as_deref()),
                a.dispatched_at.clone(),
                or_dash(a.started_at.as_deref()),
                or_dash(a.ended_at.as_deref()),
                or_dash(a.backend_id.as_deref()),
            ]
        })
        .collect();
    o.table(
        &[
            "ATTEMPT",
            "#",
            "AGENT",
            "STATE",
            "EXIT",
            "REASON",
            "DISPATCHED",
            "STARTED",
            "ENDED",
            "BACKEND ID",
        ],
        &rows,
    );
}

// --- running -------------------------------------------------------------------------------------

/// What every command needs.
struct Ctx {
    client: Client,
    json: bool,
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
    )
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
        json,
        key,
        server: conn.server,
    };
    let mut output = Output::default();
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

async fn execute(ctx: &Ctx, command: Command, o: &mut Output) -> Result {
    let client = &ctx.client;
    match command {
        Command::Serve(_) | Command::Demo(_) | Command::Agent(_) => {
            bail!("`serve`, `demo` and `agent` are run by main, not by cli::run")
        }
        Command::Whoami => {
            let me = client.me().await?;
            if ctx.json {
                return o.json(&me);
            }
            let mut pairs: Vec<(&str, String)> = org_pairs(&me.org)
                .into_iter()
                .filter(|(label, _)| *label != "created")
                .collect();
            pairs.extend([
                ("member", me.token.member_id.clone()),
                ("role", me.token.role.as_str().to_owned()),
                ("token", format!("{} ({})", me.token.id, me.token.name)),
                ("expires", me.token.expires_at.clone()),
                ("server", ctx.server.clone()),
            ]);
            o.pairs(&pairs);
        }
        Command::Health => {
            let health = client.health().await?;
            if ctx.json {
                return o.json(&health);
            }
            o.pairs(&[
                ("status", health.status),
                ("version", health.version),
                ("store", health.store),
                ("server", ctx.server.clone()),
            ]);
        }
        Command::Zones => {
            let zones = client.list_zones().await?;
            if ctx.json {
                return o.json(&zones);
            }
            let rows: Vec<Vec<String>> = zones
                .items
                .iter()
                .map(|z| vec![z.id.clone(), z.name.clone(), z.kind.clone()])
                .collect();
            o.table(&["ID", "NAME", "KIND"], &rows);
        }
        Command::Models(ModelsCommand::List) => {
            let models = client.list_accelerator_models().await?;
            if ctx.json {
                return o.json(&models);
            }
            let rows: Vec<Vec<String>> = models
                .items
                .iter()
                .map(|m| {
                    vec![
                        m.name.clone(),
                        m.vendor.clone(),
                        format!("{}GiB", m.memory_gib),
                    ]
                })
                .collect();
            o.table(&["NAME", "VENDOR", "MEMORY"], &rows);
        }
        Command::Models(ModelsCommand::Add {
            name,
            vendor,
            memory_gib,
        }) => {
            let request = api::CreateAcceleratorModelRequest {
                name,
                vendor,
                memory_gib,
            };
            let model = client.create_accelerator_model(&request, ctx.key()).await?;
            if ctx.json {
                return o.json(&model);
            }
            o.pairs(&[
                ("model", model.name),
                ("vendor", model.vendor),
                ("memory", format!("{}GiB", model.memory_gib)),
            ]);
        }
        Command::Org(OrgCommand::Create(args)) => org_create(ctx, args, o).await?,
        Command::Org(OrgCommand::List) => {
            let orgs = client.list_orgs().await?;
            if ctx.json {
                return o.json(&orgs);
            }
            let rows: Vec<Vec<String>> = orgs
                .items
                .iter()
                .map(|org| {
                    vec![
                        org.id.clone(),
                        org.name.clone(),
                        org.kind.as_str().to_owned(),
                        or_dash(org.consumer_type.map(|t| t.as_str())),
                        org.zone.clone(),
                        org.origin_region.clone(),
                        org.created_at.clone(),
                        if org.name_unique { "yes" } else { "no" }.to_owned(),
                    ]
                })
                .collect();
            o.table(
                &[
                    "ID",
                    "NAME",
                    "KIND",
                    "CONSUMER TYPE",
                    "ZONE",
                    "REGION",
                    "CREATED",
                    "NAME UNIQUE",
                ],
                &rows,
            );
        }
        Command::Org(OrgCommand::Show { id }) => {
            let org = client.get_org(&id).await?;
            if ctx.json {
                return o.json(&org);
            }
            o.pairs(&org_pairs(&org));
        }
        Command::Org(OrgCommand::Rename { id, name }) => {
            let request = api::RenameOrgRequest { name };
            let org = client.rename_org(&id, &request, ctx.key()).await?;
            if ctx.json {
                return o.json(&org);
            }
            o.pairs(&org_pairs(&org));
        }
        Command::Deposit(args) => {
            let request = api::DepositRequest {
                amount_micros: args.amount_micros,
                external_ref: args.reference,
            };
            let transfer = client.deposit(&args.org_id, &request, ctx.key()).await?;
            if ctx.json {
                return o.json(&transfer);
            }
            o.pairs(&transfer_pairs(&transfer));
        }
        Command::Withdraw(args) => {
            let request = api::WithdrawalRequest {
                amount_micros: args.amount_micros,
                external_ref: args.reference,
                source: args.source.into(),
            };
            let transfer = client.withdraw(&args.org_id, &request, ctx.key()).await?;
            if ctx.json {
                return o.json(&transfer);
            }
            o.pairs(&transfer_pairs(&transfer));
        }
        Command::Ledger(LedgerCommand::Check) => {
            let check = client.ledger_check().await?;
            if ctx.json {
                o.json(&check)?;
            } else {
                o.pairs(&[
                    ("ok", if check.ok { "yes" } else { "no" }.to_owned()),
                    ("accounts", check.accounts.to_string()),
                    ("transfers", check.transfers.to_string()),
                    ("holds pending", check.holds_pending.to_string()),
                ]);
                for violation in &check.violations {
                    o.line(&format!("violation: {violation}"));
                }
            }
            if !check.ok {
                bail!(
                    "the ledger check found {} violation(s)",
                    check.violations.len()
                );
            }
        }
        Command::Member(MemberCommand::List) => {
            let members = client.list_members().await?;
            if ctx.json {
                return o.json(&members);
            }
            let rows: Vec<Vec<String>> = members
                .items
                .iter()
                .map(|m| {
                    vec![
                        m.id.clone(),
                        m.name.clone(),
                        or_dash(m.email.as_deref()),
                        m.role.as_str().to_owned(),
                        m.created_at.clone(),
                    ]
                })
                .collect();
            o.table(&["ID", "NAME", "EMAIL", "ROLE", "CREATED"], &rows);
        }
        Command::Member(MemberCommand::Add { name, email, role }) => {
            let request = api::CreateMemberRequest {
                name,
                email,
                role: role.into(),
            };
            let member = client.create_member(&request, ctx.key()).await?;
            if ctx.json {
                return o.json(&member);
            }
            o.pairs(&member_pairs(&member));
        }
        Command::Token(TokenCommand::List) => {
            let tokens = client.list_tokens().await?;
            if ctx.json {
                return o.json(&tokens);
            }
            let rows: Vec<Vec<String>> = tokens
                .items
                .iter()
                .map(|t| {
                    vec![
                        t.id.clone(),
                        t.name.clone(),
                        t.member_id.clone(),
                        t.role.as_str().to_owned(),
                        token_state(t).to_owned(),
                        t.expires_at.clone(),
                    ]
                })
                .collect();
            o.table(&["ID", "NAME", "MEMBER", "ROLE", "STATE", "EXPIRES"], &rows);
        }
        Command::Token(TokenCommand::Create {
            name,
            member_id,
            expires_in_days,
            save_profile,
        }) => {
            let expires_in_s = match expires_in_days {
                Some(days) => Some(
                    days.checked_mul(86_400)
                        .context("--expires-in-days is too large")?,
                ),
                None => None,
            };
            let request = api::CreateTokenRequest {
                name,
                member_id,
                expires_in_s,
            };
            let created = client.create_token(&request, ctx.key()).await?;
            if ctx.json {
                o.json(&created)?;
            } else {
                let mut pairs = token_pairs(&created.token);
                pairs.push(("secret", created.secret.clone()));
                o.pairs(&pairs);
            }
            o.note("warning: the secret is shown only once; store it now.");
            if let Some(profile) = save_profile {
                let org = client
                    .with_token(Some(created.secret.clone()))
                    .me()
                    .await
                    .ok();
                save_profile_of(
                    ctx,
                    o,
                    &profile,
                    &created.secret,
                    org.as_ref()
                        .map(|me| (me.org.id.as_str(), me.org.name.as_str())),
                )?;
            }
        }
        Command::Token(TokenCommand::Revoke { id }) => {
            let token = client.revoke_token(&id, ctx.key()).await?;
            if ctx.json {
                return o.json(&token);
            }
            o.pairs(&token_pairs(&token));
        }
        Command::Pool(PoolCommand::Create { name, zone, nodes }) => {
            let request = api::CreatePoolRequest { name, zone, nodes };
            let pool = client.create_pool(&request, ctx.key()).await?;
            if ctx.json {
                return o.json(&pool);
            }
            print_pool(o, &pool);
        }
        Command::Pool(PoolCommand::List) => {
            let pools = client.list_pools().await?;
            if ctx.json {
                return o.json(&pools);
            }
            let rows: Vec<Vec<String>> = pools.items.iter().map(pool_row).collect();
            o.table(
                &[
                    "ID",
                    "NAME",
                    "ZONE",
                    "NODES",
                    "CPUS",
                    "MEMORY",
                    "ACCELERATORS",
                    "AGENT",
                ],
                &rows,
            );
        }
        Command::Pool(PoolCommand::Show { id }) => {
            let pool = client.get_pool(&id).await?;
            if ctx.json {
                return o.json(&pool);
            }
            print_pool(o, &pool);
        }
        Command::Offer(OfferCommand::Create(args)) => {
            let request = api::CreateOfferRequest {
                pool_id: args.pool_id,
                class: args.class,
                cpus_per_unit: args.cpus_per_unit,
                memory_mib_per_unit: args.memory_mib_per_unit,
                price_micros_per_unit_hour: args.price_micros,
                min_units: args.min_units,
                max_units: args.max_units,
                valid_from: None,
                valid_until: args.valid_until,
            };
            let offer = client.create_offer(&request, ctx.key()).await?;
            if ctx.json {
                return o.json(&offer);
            }
            o.pairs(&offer_pairs(&offer));
        }
        Command::Offer(OfferCommand::List) => {
            let offers = client.list_offers().await?;
            if ctx.json {
                return o.json(&offers);
            }
            let rows: Vec<Vec<String>> = offers
                .items
                .iter()
                .map(|offer| {
                    vec![
                        offer.id.clone(),
                        offer.pool_id.clone(),
                        offer.class.clone(),
                        offer.zone.clone(),
                        price(offer.price_micros_per_unit_hour),
                        offer.units_available.to_string(),
                        format!("{}–{}", offer.min_units, offer.max_units),
                        offer.state.clone(),
                        offer.valid_until.clone(),
                    ]
                })
                .collect();
            o.table(
                &[
                    "ID",
                    "POOL",
                    "CLASS",
                    "ZONE",
                    "PRICE/UNIT-H",
                    "UNITS FREE",
                    "PER LEASE",
                    "STATE",
                    "VALID UNTIL",
                ],
                &rows,
            );
        }
        Command::Offer(OfferCommand::Show { id }) => {
            let offer = client.get_offer(&id).await?;
            if ctx.json {
                return o.json(&offer);
            }
            o.pairs(&offer_pairs(&offer));
        }
        Command::Offer(OfferCommand::Withdraw { id }) => {
            let offer = client.withdraw_offer(&id, ctx.key()).await?;
            if ctx.json {
                return o.json(&offer);
            }
            o.pairs(&[("offer", offer.id), ("state", offer.state)]);
        }
        Command::Earnings => {
            let balance = client.balance().await?;
            if ctx.json {
                return o.json(&balance);
            }
            o.pairs(&[
                ("org", balance.org_id),
                ("earnings", signed_yuan(balance.earnings_micros)),
            ]);
        }
        Command::Catalog(args) => {
            let params = api::CatalogParams {
                category: args.category,
                zone: args.zone,
                limit: args.limit,
            };
            let offers = client.catalog(&params).await?;
            if ctx.json {
                return o.json(&offers);
            }
            let rows: Vec<Vec<String>> = offers
                .items
                .iter()
                .map(|offer| {
                    vec![
                        offer.id.clone(),
                        offer.provider_name.clone(),
                        offer.class.clone(),
                        offer.zone.clone(),
                        price(offer.price_micros_per_unit_hour),
                        offer.units_available.to_string(),
                        unit_shape(offer),
                    ]
                })
                .collect();
            o.table(
                &[
                    "OFFER",
                    "PROVIDER",
                    "CLASS",
                    "ZONE",
                    "PRICE/UNIT-H",
                    "UNITS FREE",
                    "UNIT",
                ],
                &rows,
            );
        }
        Command::Quote(args) => quote(ctx, args, o).await?,
        Command::Buy(args) => {
            let request = api::PurchaseRequest {
                offer_id: args.offer_id,
                units: args.units,
                duration_limit_s: args.duration_s,
                max_price_micros_per_unit_hour: args.max_price_micros,
                auto_end: false,
            };
            let lease = client.purchase(&request, ctx.key()).await?;
            if ctx.json {
                return o.json(&lease);
            }
            o.pairs(&lease_pairs(&lease));
            o.line("");
            o.line(&format!(
                "{} is held until the lease ends; you pay for the seconds used. End it with: \
                 suanli end {}",
                yuan(lease.hold.amount_micros),
                lease.id
            ));
        }
        Command::Leases(args) => {
            let params = api::LeaseListParams {
                state: args.state,
                side: args.side,
                limit: args.limit,
            };
            let leases = client.list_leases(&params).await?;
            if ctx.json {
                return o.json(&leases);
            }
            let rows: Vec<Vec<String>> = leases
                .items
                .iter()
                .map(|l| {
                    vec![
                        l.id.clone(),
                        l.state.clone(),
                        l.class.clone(),
                        l.zone.clone(),
                        l.units.to_string(),
                        price(l.price_micros_per_unit_hour),
                        l.billing.clone(),
                        if l.billing == "metered" {
                            unit_seconds(l.metered_unit_ms)
                        } else {
                            "-".to_owned()
                        },
                        l.started_at.clone(),
                        l.ended_at
                            .clone()
                            .unwrap_or_else(|| format!("(ends {})", l.ends_at)),
                        l.cost_micros.map(yuan).unwrap_or_else(|| "-".to_owned()),
                    ]
                })
                .collect();
            o.table(
                &[
                    "ID",
                    "STATE",
                    "CLASS",
                    "ZONE",
                    "UNITS",
                    "PRICE/UNIT-H",
                    "BILLING",
                    "METERED",
                    "STARTED",
                    "ENDED",
                    "COST",
                ],
                &rows,
            );
        }
        Command::Lease(LeaseCommand::Show { id }) => {
            let lease = client.get_lease(&id).await?;
            if ctx.json {
                return o.json(&lease);
            }
            o.pairs(&lease_pairs(&lease));
        }
        Command::End { lease_id: id } | Command::Lease(LeaseCommand::End { id }) => {
            let lease = client.end_lease(&id, ctx.key()).await?;
            if ctx.json {
                return o.json(&lease);
            }
            o.pairs(&lease_pairs(&lease));
        }
        Command::Lease(LeaseCommand::Cancel { id }) => {
            let lease = client.cancel_lease(&id, ctx.key()).await?;
            if ctx.json {
                return o.json(&lease);
            }
            o.pairs(&lease_pairs(&lease));
        }
        Command::Launch(args) => launch(ctx, args, o).await?,
        Command::Exec(args) => exec(ctx, args, o).await?,
        Command::Jobs(args) => {
            let params = api::JobListParams {
                lease_id: args.lease_id,
                state: args.state,
                limit: args.limit,
            };
            let jobs = client.list_jobs(&params).await?;
            if ctx.json {
                return o.json(&jobs);
            }
            let rows: Vec<Vec<String>> = jobs.items.iter().map(job_row).collect();
            o.table(&JOB_HEADER, &rows);
        }
        Command::Job(JobCommand::Show { id }) => {
            let job = client.get_job(&id).await?;
            if ctx.json {
                return o.json(&job);
            }
            print_job(o, &job);
        }
        Command::Logs(args) => logs(ctx, args, o).await?,
        Command::Outputs(args) => outputs(ctx, args, o).await?,
        Command::Cancel { job_id } => {
            let job = client.cancel_job(&job_id, ctx.key()).await?;
            if ctx.json {
                return o.json(&job);
            }
            let had_attempt = !job.attempts.is_empty();
            o.pairs(&[
                ("job", job.id),
                ("state", job.state),
                ("reason", or_dash(job.reason.as_deref())),
            ]);
            if had_attempt {
                o.note("its agent stops the job's processes at its next heartbeat");
            }
        }
        Command::Agents => {
            let agents = client.list_agents().await?;
            if ctx.json {
                return o.json(&agents);
            }
            let rows: Vec<Vec<String>> = agents
                .items
                .iter()
                .map(|a| {
                    vec![
                        a.id.clone(),
                        a.name.clone(),
                        a.pool_id.clone(),
                        a.state.clone(),
                        a.backend.clone(),
                        a.isolation.clone(),
                        a.last_seen_at.clone(),
                        a.usage_refusals.to_string(),
                    ]
                })
                .collect();
            o.table(
                &[
                    "ID",
                    "NAME",
                    "POOL",
                    "STATE",
                    "BACKEND",
                    "ISOLATION",
                    "LAST SEEN",
                    "USAGE REFUSED",
                ],
                &rows,
            );
            for a in agents.items.iter().filter(|a| a.usage_refusals > 0) {
                o.note(&format!(
                    "warning: agent {} ({}) claimed more usage than time allows {} time(s), never \
                     charged; last: {}",
                    a.id,
                    a.org_id,
                    a.usage_refusals,
                    a.last_usage_refusal.as_deref().unwrap_or("-")
                ));
            }
        }
        Command::Balance => {
            let balance = client.balance().await?;
            if ctx.json {
                return o.json(&balance);
            }
            o.pairs(&[
                ("org", balance.org_id.clone()),
                ("available", signed_yuan(balance.available_micros)),
                ("held", signed_yuan(balance.held_micros)),
                ("earnings", signed_yuan(balance.earnings_micros)),
            ]);
            o.line("");
            let rows: Vec<Vec<String>> = balance
                .accounts
                .iter()
                .map(|a| {
                    vec![
                        a.id.clone(),
                        a.kind.clone(),
                        yuan(a.debits_micros),
                        yuan(a.credits_micros),
                        signed_yuan(a.balance_micros),
                    ]
                })
                .collect();
            o.table(&["ACCOUNT", "KIND", "DEBITS", "CREDITS", "BALANCE"], &rows);
        }
        Command::Statement(args) => {
            let params = api::PageParams {
                limit: args.limit,
                after: args.after,
            };
            let statement = client.statement(&params).await?;
            if ctx.json {
                return o.json(&statement);
            }
            let rows: Vec<Vec<String>> = statement
                .lines
                .iter()
                .map(|l| {
                    let reference = l
                        .lease_id
                        .as_deref()
                        .or(l.external_ref.as_deref())
                        .or(l.hold_id.as_deref());
                    vec![
                        l.seq.to_string(),
                        l.created_at.clone(),
                        l.kind.clone(),
                        l.account_kind.clone(),
                        l.direction.clone(),
                        yuan(l.amount_micros),
                        signed_yuan(l.balance_micros),
                        or_dash(reference),
                    ]
                })
                .collect();
            o.table(
                &[
                    "SEQ",
                    "TIME",
                    "KIND",
                    "ACCOUNT",
                    "DIRECTION",
                    "AMOUNT",
                    "BALANCE",
                    "REFERENCE",
                ],
                &rows,
            );
            if let Some(next) = statement.next_after {
                o.line(&format!("more: suanli statement --after {next}"));
            }
        }
    }
    Ok(())
}

async fn org_create(ctx: &Ctx, args: OrgCreateArgs, o: &mut Output) -> Result {
    let request = api::CreateOrgRequest {
        name: args.name,
        kind: args.kind.into(),
        consumer_type: args.consumer_type.map(Into::into),
        zone: args.zone,
        origin_region: args.origin_region,
        admin_name: args.admin_name,
        admin_email: args.admin_email,
    };
    let created = ctx.client.create_org(&request, ctx.key()).await?;
    if ctx.json {
        o.json(&created)?;
    } else {
        let mut pairs = org_pairs(&created.org);
        pairs.extend([
            (
                "admin",
                format!("{} ({})", created.admin.id, created.admin.name),
            ),
            ("token", created.token.token.id.clone()),
            ("secret", created.token.secret.clone()),
        ]);
        o.pairs(&pairs);
    }
    o.note("warning: the admin token's secret is shown only once; store it now.");
    if let Some(profile) = args.save_profile {
        save_profile_of(
            ctx,
            o,
            &profile,
            &created.token.secret,
            Some((&created.org.id, &created.org.name)),
        )?;
    }
    Ok(())
}

/// Saves a token as a profile for this server.
fn save_profile_of(
    ctx: &Ctx,
    o: &mut Output,
    name: &str,
    secret: &str,
    org: Option<(&str, &str)>,
) -> Result {
    let path = profiles::config_path();
    let profile = profiles::Profile {
        server: Some(ctx.server.clone()),
        token: Some(secret.to_owned()),
        org_id: org.map(|(id, _)| id.to_owned()),
        org_name: org.map(|(_, name)| name.to_owned()),
    };
    profiles::save_profiles(&path, &[(name.to_owned(), profile)], None)?;
    o.note(&format!(
        "saved profile {name:?} to {}; use it with --profile {name}",
        path.display()
    ));
    Ok(())
}

/// The quote as people read it: the ranked offers and why the others were excluded.
fn quote_text(
    request: &api::QuoteRequest,
    quote: &api::QuoteResponse,
    explain: bool,
    asked: excluded::Asked,
) -> String {
    let mut o = Output::default();
    o.line(&format!(
        "{} units for up to {}; TOTAL is price × units × duration, the most a lease can cost",
        quote.units,
        format_duration(quote.duration_limit_s)
    ));
    o.line("");
    if quote.offers.is_empty() {
        o.line("no offer fits");
    } else {
        let rows: Vec<Vec<String>> = quote
            .offers
            .iter()
            .map(|q| {
                vec![
                    q.rank.to_string(),
                    q.offer.id.clone(),
                    q.offer.provider_name.clone(),
                    q.offer.class.clone(),
                    q.offer.zone.clone(),
                    price(q.offer.price_micros_per_unit_hour),
                    q.offer.units_available.to_string(),
                    yuan(q.total_micros),
                ]
            })
            .collect();
        o.table(
            &[
                "RANK",
                "OFFER",
                "PROVIDER",
                "CLASS",
                "ZONE",
                "PRICE/UNIT-H",
                "UNITS FREE",
                "TOTAL",
            ],
            &rows,
        );
    }
    for line in excluded::lines(request, quote, asked) {
        o.line(&line);
    }
    if explain && !quote.excluded.is_empty() {
        o.line("");
        let rows: Vec<Vec<String>> = quote
            .excluded
            .iter()
            .map(|x| {
                vec![
                    x.offer_id.clone(),
                    x.provider_name.clone(),
                    x.class.clone(),
                    x.zone.clone(),
                    price(x.price_micros_per_unit_hour),
                    x.units_available.to_string(),
                    x.reason.clone(),
                ]
            })
            .collect();
        o.table(
            &[
                "EXCLUDED",
                "PROVIDER",
                "CLASS",
                "ZONE",
                "PRICE/UNIT-H",
                "UNITS FREE",
                "REASON",
            ],
            &rows,
        );
    }
    o.out
}

async fn quote(ctx: &Ctx, args: QuoteArgs, o: &mut Output) -> Result {
    let (accelerator_model, accelerators) = match args.gpus {
        Some(GpuSpec { model, count }) => (Some(model), count),
        None => (None, None),
    };
    let request = api::QuoteRequest {
        class: args.class,
        accelerator_model,
        accelerators,
        min_accelerator_memory_gib: args.min_gpu_memory_gib,
        cpus: args.cpus,
        memory_mib: args.memory_mib,
        units: args.units,
        zone: args.zone,
        max_price_micros_per_unit_hour: args.max_price_micros,
        duration_limit_s: args.duration_s,
        // Also without --explain: the details name what was left out and how to widen.
        excluded_limit: Some(if args.explain { 1000 } else { 200 }),
        limit: None,
    };
    let quote = ctx.client.quote(&request, ctx.key()).await?;
    if ctx.json {
        return o.json(&quote);
    }
    o.out.push_str(&quote_text(
        &request,
        &quote,
        args.explain,
        excluded::Asked::Flags,
    ));
    if let Some(top) = quote.offers.iter().min_by_key(|q| q.rank) {
        o.line(&format!(
            "buy the best with: suanli buy {} --units {} --duration {} --max-price {}",
            top.offer.id,
            top.units,
            format_duration(quote.duration_limit_s),
            yuan_arg(top.offer.price_micros_per_unit_hour)
        ));
    }
    Ok(())
}

// --- jobs ----------------------------------------------------------------------------------------

/// Error codes on which `launch` tries the next ranked offer.
const FAILOVER_CODES: [&str; 3] = [
    "capacity_unavailable",
    "offer_not_available",
    "price_above_limit",
];

/// Asks a yes/no question on the terminal; no unless the answer starts with `y`.
async fn confirm(question: String) -> Result<bool> {
    tokio::task::spawn_blocking(move || -> Result<bool> {
        let mut stderr = std::io::stderr().lock();
        write!(stderr, "{question} [y/N] ")?;
        stderr.flush()?;
        let mut answer = String::new();
        std::io::stdin()
            .read_line(&mut answer)
            .context("cannot read the answer")?;
        Ok(answer.trim().to_lowercase().starts_with('y'))
    })
    .await
    .context("the confirmation prompt failed")?
}

async fn launch(ctx: &Ctx, args: LaunchArgs, o: &mut Output) -> Result {
    let client = &ctx.client;
    if !args.yes && !std::io::stdin().is_terminal() {
        bail!(
            "launch buys a lease and asks first: run it on a terminal, or pass --yes to buy \
             without asking"
        );
    }
    if ctx.key.len() > 160 {
        bail!(
            "with launch, --idempotency-key is at most 160 characters: it is extended per request"
        );
    }
    let task = task::Task::load(&args.task)?;
    let (spec, notes) = task.spec()?;
    for note in notes {
        o.note(&format!("[suanli] {note}"));
    }
    let (models, zones) = tokio::try_join!(client.list_accelerator_models(), client.list_zones())?;
    let need = task.need(task::Catalog {
        models: &models.items,
        zones: &zones.items,
    })?;
    let request = api::QuoteRequest {
        excluded_limit: Some(200),
        ..need.quote.clone()
    };
    let quote = client.quote(&request, Some(&ctx.sub_key("quote"))).await?;
    let mut table = quote_text(&request, &quote, false, excluded::Asked::TaskFile);
    table.push('\n');
    if ctx.json {
        o.err.push_str(&table);
    } else {
        o.out.push_str(&table);
    }
    let mut offers: Vec<&api::QuotedOffer> = quote.offers.iter().collect();
    offers.sort_by_key(|q| q.rank);
    let Some(best) = offers.first() else {
        bail!(
            "no offer fits {}: loosen its resources, zone or max_price (`suanli quote --explain` \
             lists every offer with the reason it was excluded)",
            task.file
        );
    };
    if !args.yes {
        o.flush()?;
        let mut question = format!(
            "Buy {} units of {} from {} at {} for up to {} (at most {}, held until the lease \
             ends; you pay for what the job uses)",
            best.units,
            best.offer.class,
            best.offer.provider_name,
            price(best.offer.price_micros_per_unit_hour),
            format_duration(quote.duration_limit_s),
            yuan(best.total_micros),
        );
        if offers.len() > 1 {
            question.push_str(", or the next offers if it is gone");
        }
        question.push('?');
        if !confirm(question).await? {
            bail!("nothing was bought");
        }
    }

    // Buy the best offer, failing over to the next ranked ones.
    let mut bought = None;
    for (i, q) in offers.iter().enumerate() {
        let request = api::PurchaseRequest {
            offer_id: q.offer.id.clone(),
            units: q.units,
            duration_limit_s: quote.duration_limit_s,
            // Never more than the quoted price, which is within the task's max_price.
            max_price_micros_per_unit_hour: Some(q.offer.price_micros_per_unit_hour),
            auto_end: !args.keep,
        };
        let key = ctx.sub_key(&format!("buy-{}", q.offer.id));
        let skipped = match client.purchase(&request, Some(&key)).await {
            Ok(lease) if lease.billing != "metered" => {
                // No agent serves the pool: jobs cannot run there.
                let key = ctx.sub_key(&format!("cancel-{}", lease.id));
                let cancelled = client.cancel_lease(&lease.id, Some(&key)).await?;
                format!(
                    "offer {} has no agent to run jobs; its lease {} was cancelled ({})",
                    q.offer.id,
                    cancelled.id,
                    yuan(cancelled.cost_micros.unwrap_or(0))
                )
            }
            Ok(lease) => {
                bought = Some(lease);
                break;
            }
            Err(e) if e.code().is_some_and(|c| FAILOVER_CODES.contains(&c)) => {
                format!("offer {} ({}): {e}", q.offer.id, q.offer.provider_name)
            }
            Err(e) => return Err(e.into()),
        };
        let next = if i + 1 < offers.len() {
            "; trying the next offer"
        } else {
            ""
        };
        o.note(&format!("[suanli] {skipped}{next}"));
        o.flush()?;
    }
    let Some(lease) = bought else {
        bail!(
            "none of the {} offer(s) that fit could run the job; no lease is left open",
            offers.len()
        );
    };
    if !ctx.json {
        o.line(&format!(
            "lease {}: {} units of {} in {} at {}, for up to {}",
            lease.id,
            lease.units,
            lease.class,
            lease.zone,
            price(lease.price_micros_per_unit_hour),
            format_duration(lease.duration_limit_s)
        ));
        o.line(&format!(
            "  {}",
            if lease.auto_end {
                "ends when its job ends".to_owned()
            } else {
                format!(
                    "kept after the job: run more with `suanli exec {0}`, end it with `suanli end {0}`",
                    lease.id
                )
            }
        ));
    }
    let request = api::CreateJobRequest { task: spec };
    let job = match client
        .create_job(&lease.id, &request, Some(&ctx.sub_key("job")))
        .await
    {
        Ok(job) => job,
        Err(e) => {
            if args.keep {
                return Err(anyhow::Error::new(e).context(format!(
                    "the job could not be queued; lease {0} is still yours (end it with `suanli \
                     end {0}`)",
                    lease.id
                )));
            }
            let ended = client.end_lease(&lease.id, Some(&ctx.sub_key("end"))).await;
            let what = match ended {
                Ok(l) => format!(
                    "lease {} was ended ({})",
                    l.id,
                    yuan(l.cost_micros.unwrap_or(0))
                ),
                Err(end_err) => format!(
                    "lease {0} could not be ended ({end_err}): end it with `suanli end {0}`",
                    lease.id
                ),
            };
            return Err(
                anyhow::Error::new(e).context(format!("the job could not be queued; {what}"))
            );
        }
    };
    follow_job(ctx, o, &lease, job, args.detach).await
}

async fn exec(ctx: &Ctx, args: ExecArgs, o: &mut Output) -> Result {
    let client = &ctx.client;
    let spec = match (&args.task, args.run) {
        (Some(path), _) => {
            let task = task::Task::load(path)?;
            if task.says_what_to_buy() {
                o.note(&format!(
                    "[suanli] {}: resources, zone, max_price and duration are ignored: the job runs \
                     on lease {}",
                    task.file, args.lease_id
                ));
            }
            let (mut spec, notes) = task.spec()?;
            for note in notes {
                o.note(&format!("[suanli] {note}"));
            }
            if args.name.is_some() {
                spec.name = args.name;
            }
            spec
        }
        (None, Some(run)) => api::TaskSpec {
            name: args.name,
            run,
            ..api::TaskSpec::default()
        },
        (None, None) => bail!("give a task file or --run 'COMMANDS'"),
    };
    let lease = client.get_lease(&args.lease_id).await?;
    let job = client
        .create_job(&lease.id, &api::CreateJobRequest { task: spec }, ctx.key())
        .await?;
    follow_job(ctx, o, &lease, job, args.detach).await
}

/// After a job is queued: prints its id, then (unless `detach`) follows its output until it ends
/// and says how it ended and what it cost. Fails unless the job succeeded.
async fn follow_job(
    ctx: &Ctx,
    o: &mut Output,
    lease: &api::Lease,
    job: api::Job,
    detach: bool,
) -> Result {
    let client = &ctx.client;
    if detach {
        if ctx.json {
            return o.json(&serde_json::json!({ "lease": lease, "job": job }));
        }
        o.line(&format!("job {} queued on lease {}", job.id, lease.id));
        o.line(&format!("  follow it: suanli logs -f {}", job.id));
        o.line(&format!("  cancel it: suanli cancel {}", job.id));
        return Ok(());
    }
    if !ctx.json {
        o.line(&format!(
            "job {} queued on lease {}; following its output (Ctrl-C stops following, not the job)",
            job.id, lease.id
        ));
    }
    o.flush()?;
    follow_logs(client, &job.id, !ctx.json).await?;
    let job = client.get_job(&job.id).await?;
    let lease = client.get_lease(&lease.id).await?;
    if ctx.json {
        o.json(&serde_json::json!({ "lease": lease, "job": job }))?;
    } else {
        for line in job_summary(&job, &lease) {
            o.note(&format!("[suanli] {line}"));
        }
    }
    if job.state != "succeeded" {
        bail!("job {} {}", job.id, job_outcome(&job));
    }
    Ok(())
}

/// `failed with exit code 3 (reason)`, `succeeded`.
fn job_outcome(job: &api::Job) -> String {
    let mut text = job.state.replace('_', " ");
    if let Some(code) = job.exit_code {
        write!(text, " with exit code {code}").expect("writing to a String cannot fail");
    }
    if let Some(reason) = &job.reason {
        write!(text, " ({reason})").expect("writing to a String cannot fail");
    }
    text
}

/// How a job ended and what it cost.
fn job_summary(job: &api::Job, lease: &api::Lease) -> Vec<String> {
    let mut first = format!("job {} {}", job.id, job_outcome(job));
    if let (Some(started), Some(ended)) = (&job.started_at, &job.ended_at) {
        if let Some(took) = elapsed(started, ended) {
            write!(first, " after {took}").expect("writing to a String cannot fail");
        }
    }
    let job_cost =
        suanli_core::money::cost_micros_of_unit_ms(lease.price_micros_per_unit_hour, job.unit_ms)
            .map(yuan)
            .unwrap_or_else(|_| "-".to_owned());
    let mut lines = vec![
        first,
        format!("job used {} ({job_cost})", unit_seconds(job.unit_ms)),
    ];
    lines.push(match lease.cost_micros {
        Some(cost) => format!("lease {} {}: cost {}", lease.id, lease.state, yuan(cost)),
        None if lease.billing == "metered" => format!(
            "lease {0} is still active: {1} so far ({2}); end it with `suanli end {0}`",
            lease.id,
            or_dash(metered_cost(lease).as_deref()),
            unit_seconds(lease.metered_unit_ms)
        ),
        None => format!(
            "lease {0} is still active; end it with `suanli end {0}`",
            lease.id
        ),
    });
    lines
}

/// Writes log chunks as they come: stdout to stdout, stderr to stderr, the exchange's and the
/// agent's own messages (`system`) to stderr as `[suanli] …` lines.
#[derive(Debug, Default)]
struct LogPrinter {
    /// The last byte written to either stream was not a newline.
    mid_line: bool,
}

impl LogPrinter {
    fn print(&mut self, chunks: &[api::LogChunk]) -> std::io::Result<()> {
        let mut stdout = std::io::stdout().lock();
        let mut stderr = std::io::stderr().lock();
        for chunk in chunks {
            if chunk.data.is_empty() {
                continue;
            }
            match chunk.stream.as_str() {
                "stdout" => stdout.write_all(chunk.data.as_bytes())?,
                "stderr" => {
                    stdout.flush()?;
                    stderr.write_all(chunk.data.as_bytes())?;
                }
                _ => {
                    stdout.flush()?;
                    if self.mid_line {
                        stderr.write_all(b"\n")?;
                    }
                    for line in chunk.data.trim_end_matches('\n').lines() {
                        writeln!(stderr, "[suanli] {line}")?;
                    }
                    self.mid_line = false;
                    continue;
                }
            }
            self.mid_line = !chunk.data.ends_with('\n');
        }
        stdout.flush()?;
        stderr.flush()
    }
}

/// Writes log chunks as JSON lines.
fn print_json_chunks(chunks: &[api::LogChunk]) -> Result {
    let mut stdout = std::io::stdout().lock();
    for chunk in chunks {
        writeln!(stdout, "{}", serde_json::to_string(chunk)?)?;
    }
    stdout.flush()?;
    Ok(())
}

/// Whether a failed call is worth repeating: no answer, or the exchange is unavailable.
fn is_transient(err: &ClientError) -> bool {
    matches!(err, ClientError::Transport(_)) || err.status().is_some_and(|s| s >= 500)
}

/// Long-polls a job's output until the job has ended and all of it is read, printing it when
/// `print`. Transient failures are retried a few times; Ctrl-C stops following (not the job).
/// Returns the job's final state.
async fn follow_logs(client: &Client, job_id: &str, print: bool) -> Result<String> {
    let mut after = 0;
    let mut failures = 0u32;
    let mut printer = LogPrinter::default();
    loop {
        let params = api::LogParams {
            after: Some(after),
            limit: None,
            wait_ms: Some(20_000),
        };
        let page = tokio::select! {
            page = client.job_logs(job_id, &params) => page,
            _ = tokio::signal::ctrl_c() => bail!(
                "stopped following; job {job_id} goes on: `suanli logs -f {job_id}` follows it \
                 again, `suanli cancel {job_id}` cancels it"
            ),
        };
        let page = match page {
            Ok(page) => page,
            Err(e) if is_transient(&e) && failures < 5 => {
                failures += 1;
                eprintln!("[suanli] {e}; trying again");
                tokio::time::sleep(std::time::Duration::from_secs(1 << failures)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        failures = 0;
        if print {
            if let Err(e) = printer.print(&page.chunks) {
                bail!(
                    "cannot write the job's output ({e}); job {job_id} goes on: `suanli logs -f \
                     {job_id}` follows it again"
                );
            }
        }
        after = page.next_after;
        if page.done {
            return Ok(page.state);
        }
    }
}

async fn outputs(ctx: &Ctx, args: OutputsArgs, o: &mut Output) -> Result {
    let files = ctx.client.list_outputs(&args.job_id).await?;
    if ctx.json && args.dest.is_none() {
        return o.json(&files);
    }
    if let Some(dest) = &args.dest {
        for f in &files.items {
            // The exchange only keeps relative paths inside the job directory; check again here.
            let rel = std::path::Path::new(&f.path);
            if rel.is_absolute()
                || rel
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                anyhow::bail!("refusing the output path {:?}", f.path);
            }
            let target = dest.join(rel);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let bytes = ctx.client.get_output(&args.job_id, &f.path).await?;
            std::fs::write(&target, bytes)?;
            o.line(&format!("{}  ({} bytes)", target.display(), f.size_bytes));
        }
        return Ok(());
    }
    if files.items.is_empty() {
        o.note("the job left no output files (its task's outputs: paths, collected when it ends)");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = files
        .items
        .iter()
        .map(|f| vec![f.path.clone(), f.size_bytes.to_string()])
        .collect();
    o.table(&["PATH", "BYTES"], &rows);
    Ok(())
}

async fn logs(ctx: &Ctx, args: LogsArgs, o: &mut Output) -> Result {
    let client = &ctx.client;
    o.flush()?;
    let mut after = 0;
    let mut printer = LogPrinter::default();
    let mut failures = 0u32;
    loop {
        let params = api::LogParams {
            after: Some(after),
            limit: None,
            wait_ms: args.follow.then_some(20_000),
        };
        let page = tokio::select! {
            page = client.job_logs(&args.job_id, &params) => page,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let page = match page {
            Ok(page) => page,
            Err(e) if args.follow && is_transient(&e) && failures < 5 => {
                failures += 1;
                eprintln!("[suanli] {e}; trying again");
                tokio::time::sleep(std::time::Duration::from_secs(1 << failures)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        failures = 0;
        if ctx.json {
            print_json_chunks(&page.chunks)?;
        } else if let Err(e) = printer.print(&page.chunks) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(e).context("cannot write the job's output");
        }
        after = page.next_after;
        if page.done || (!args.follow && page.chunks.is_empty()) {
            if !page.done && !ctx.json {
                o.note(&format!(
                    "[suanli] job {} is {}; `suanli logs -f {}` follows it",
                    args.job_id, page.state, args.job_id
                ));
            }
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_format() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("30m"), Ok(1_800));
        assert_eq!(parse_duration("2h"), Ok(7_200));
        assert_eq!(parse_duration("1d"), Ok(86_400));
        assert_eq!(parse_duration("3600"), Ok(3_600));
        assert_eq!(parse_duration(" 2H "), Ok(7_200));
        for bad in ["", "h", "2x", "-1h", "1.5h", "0", "0m", "2hh"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert!(parse_duration("99999999999999999999d").is_err());
        assert_eq!(format_duration(90), "90s");
        assert_eq!(format_duration(5_400), "90m");
        assert_eq!(format_duration(7_200), "2h");
        assert_eq!(format_duration(172_800), "2d");
        for seconds in [1, 59, 60, 3_599, 3_600, 86_400, 90_000] {
            assert_eq!(parse_duration(&format_duration(seconds)), Ok(seconds));
        }
    }

    #[test]
    fn amounts_are_yuan() {
        assert_eq!(parse_amount("1000"), Ok(1_000_000_000));
        assert_eq!(parse_amount("12.5"), Ok(12_500_000));
        assert_eq!(parse_money("0"), Ok(0));
        let err = parse_amount("0").unwrap_err();
        assert!(err.contains("more than zero"), "{err}");
        for bad in ["", "abc", "-5", "1.2345678", "1,5", "99999999999999999999"] {
            let err = parse_amount(bad).unwrap_err();
            assert!(err.contains("not an amount in yuan"), "{bad:?}: {err}");
        }
        assert_eq!(yuan(12_500_000), "¥12.500000");
        assert_eq!(signed_yuan(-3_000_001), "-¥3.000001");
        assert_eq!(price(36_000), "¥0.036000/unit-h");
        assert_eq!(yuan_arg(12_500_000), "12.5");
        assert_eq!(yuan_arg(1_000_000_000), "1000");
        assert_eq!(yuan_arg(0), "0");
        assert_eq!(parse_money(&yuan_arg(36_000)), Ok(36_000));
    }

    #[test]
    fn node_specs_parse() {
        let node = parse_node_spec("gpu-01:96:1024:H100-80G:8").unwrap();
        assert_eq!(
            node,
            api::NodeSpec {
                name: "gpu-01".into(),
                cpus: 96,
                memory_mib: 1024 * 1024,
                accelerator_model: Some("H100-80G".into()),
                accelerators: 8,
                partition: None,
            }
        );
        let node = parse_node_spec("cn-01:64:256@batch").unwrap();
        assert_eq!(node.partition.as_deref(), Some("batch"));
        assert_eq!(
            (node.cpus, node.memory_mib, node.accelerators),
            (64, 256 * 1024, 0)
        );
        assert_eq!(node.accelerator_model, None);
        let node = parse_node_spec("g:8:0.5:A800:2@p1").unwrap();
        assert_eq!(
            (node.memory_mib, node.partition.as_deref()),
            (512, Some("p1"))
        );
        for bad in [
            "",
            "n",
            "n:1",
            ":1:1",
            "n:x:1",
            "n:1:x",
            "n:1:1:M",
            "n:1:1::2",
            "n:1:1:M:x",
            "n:1:1@",
            "n:1:1@a@b",
            "n:1:1:M:2:3",
        ] {
            assert!(parse_node_spec(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn gpus_and_memory_parse() {
        assert_eq!(
            parse_gpus("H100-80G:8"),
            Ok(GpuSpec {
                model: "H100-80G".into(),
                count: Some(8)
            })
        );
        assert_eq!(
            parse_gpus("A800"),
            Ok(GpuSpec {
                model: "A800".into(),
                count: None
            })
        );
        for bad in ["", ":8", "H100:", "H100:0", "H100:x"] {
            assert!(parse_gpus(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_gib_to_mib("256"), Ok(256 * 1024));
        assert_eq!(parse_gib_to_mib("0.5"), Ok(512));
        assert!(parse_gib_to_mib("0.0001").is_err());
        assert!(parse_gib_to_mib("x").is_err());
        assert!(parse_rfc3339("2026-01-31T00:00:00Z").is_ok());
        assert!(parse_rfc3339("2026-01-31").is_err());
    }

    #[test]
    fn tables_align() {
        let text = render_table(
            &["ID", "PRICE"],
            &[
                vec!["off_1".into(), "¥1.000000".into()],
                vec!["o".into(), "¥12.000000".into()],
            ],
        );
        assert_eq!(text, "ID     PRICE\noff_1  ¥1.000000\no      ¥12.000000\n");
        assert_eq!(render_table(&["A"], &[]), "(none)\n");
        let text = render_table(
            &["NAME", "KIND"],
            &[vec!["武清 Wuqing".into(), "core".into()]],
        );
        assert_eq!(text, "NAME         KIND\n武清 Wuqing  core\n");
        assert_eq!(display_width("¥1× –"), 5);
        assert_eq!(
            render_pairs(&[("a", "1".into()), ("long", "2".into())]),
            "a     1\nlong  2\n"
        );
    }

    #[test]
    fn the_command_line_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();

        let cli = Cli::try_parse_from([
            "suanli",
            "--json",
            "pool",
            "create",
            "--name",
            "p",
            "--zone",
            "z",
            "--node",
            "a:1:1",
            "b:2:2@x",
            "--node",
            "c:3:3:M:1",
        ])
        .unwrap();
        assert!(cli.json);
        match cli.command {
            Command::Pool(PoolCommand::Create { nodes, .. }) => assert_eq!(nodes.len(), 3),
            other => panic!("{other:?}"),
        }

        let cli = Cli::try_parse_from([
            "suanli",
            "quote",
            "--gpus",
            "H100-80G:8",
            "--duration",
            "2h",
            "--max-price",
            "12.5",
        ])
        .unwrap();
        match cli.command {
            Command::Quote(q) => {
                assert_eq!(
                    (q.duration_s, q.max_price_micros),
                    (7_200, Some(12_500_000))
                );
                assert_eq!(q.gpus.map(|g| g.count), Some(Some(8)));
            }
            other => panic!("{other:?}"),
        }

        let cli = Cli::try_parse_from([
            "suanli",
            "withdraw",
            "org_1",
            "12.5",
            "--ref",
            "r",
            "--from",
            "earnings",
            "--idempotency-key",
            "k1",
        ])
        .unwrap();
        assert_eq!(cli.idempotency_key.as_deref(), Some("k1"));
        assert!(is_mutating(&cli.command));
        match cli.command {
            Command::Withdraw(w) => {
                assert_eq!(
                    (w.amount_micros, w.source),
                    (12_500_000, SourceArg::Earnings)
                )
            }
            other => panic!("{other:?}"),
        }

        let cli = Cli::try_parse_from([
            "suanli",
            "org",
            "create",
            "--name",
            "n",
            "--kind",
            "consumer",
            "--consumer-type",
            "research_institute",
            "--zone",
            "z",
            "--origin-region",
            "tianjin",
        ])
        .unwrap();
        assert!(is_mutating(&cli.command));
        assert!(!is_mutating(
            &Cli::try_parse_from(["suanli", "leases"]).unwrap().command
        ));

        assert!(
            Cli::try_parse_from(["suanli", "deposit", "org_1", "1.2345678", "--ref", "r"]).is_err()
        );
        assert!(Cli::try_parse_from(["suanli", "buy", "off_1", "--units", "1"]).is_err());
    }

    #[test]
    fn job_commands_parse() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("suanli").chain(args.iter().copied()))
        };
        match parse(&["launch", "t.yaml", "-y", "--keep", "-d"])
            .unwrap()
            .command
        {
            Command::Launch(a) => {
                assert_eq!(a.task, PathBuf::from("t.yaml"));
                assert!(a.yes && a.keep && a.detach);
            }
            other => panic!("{other:?}"),
        }
        match parse(&["exec", "lease_1", "--run", "echo hi", "--name", "n"])
            .unwrap()
            .command
        {
            Command::Exec(a) => {
                assert_eq!(
                    (a.lease_id.as_str(), a.run.as_deref(), a.task),
                    ("lease_1", Some("echo hi"), None)
                );
                assert_eq!(a.name.as_deref(), Some("n"));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["exec", "lease_1", "t.yaml"]).is_ok());
        assert!(parse(&["exec", "lease_1"]).is_err(), "a task or --run");
        assert!(parse(&["exec", "lease_1", "t.yaml", "--run", "x"]).is_err());
        match parse(&["logs", "-f", "job_1"]).unwrap().command {
            Command::Logs(a) => assert!(a.follow && a.job_id == "job_1"),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["jobs", "--lease", "l", "--state", "timed_out"]).is_ok());
        assert!(parse(&["jobs", "--state", "done"]).is_err());
        assert!(parse(&["job", "show", "job_1"]).is_ok());
        for mutating in [
            &["cancel", "job_1"][..],
            &["lease", "cancel", "lease_1"],
            &["lease", "end", "lease_1"],
            &["end", "lease_1"],
            &["launch", "t.yaml"],
            &["exec", "lease_1", "--run", "x"],
        ] {
            assert!(
                is_mutating(&parse(mutating).unwrap().command),
                "{mutating:?}"
            );
        }
        for reading in [
            &["jobs"][..],
            &["job", "show", "j"],
            &["logs", "j"],
            &["agents"],
            &["lease", "show", "l"],
        ] {
            assert!(
                !is_mutating(&parse(reading).unwrap().command),
                "{reading:?}"
            );
        }
        match parse(&["agent", "--config", "a.toml"]).unwrap().command {
            Command::Agent(a) => assert_eq!(a.config, PathBuf::from("a.toml")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn job_outcomes_and_costs_read_well() {
        let lease: api::Lease = serde_json::from_value(serde_json::json!({
            "id": "lease_1", "consumer_org_id": "c", "provider_org_id": "p", "offer_id": "o",
            "pool_id": "pool", "class": "general", "zone": "z", "units": 2,
            "price_micros_per_unit_hour": 3_600_000, "duration_limit_s": 600,
            "started_at": "2026-01-01T00:00:00Z", "ends_at": "2026-01-01T00:10:00Z",
            "state": "active",
            "hold": {"id": "h", "amount_micros": 1_200_000, "state": "pending", "posted_micros": 0},
            "billing": "metered", "auto_end": false, "metered_unit_ms": 90_500,
            "allocations": []
        }))
        .unwrap();
        let job: api::Job = serde_json::from_value(serde_json::json!({
            "id": "job_1", "org_id": "c", "lease_id": "lease_1", "name": "n", "state": "timed_out",
            "restartable": false, "exit_code": 137, "reason": "time limit",
            "created_at": "2026-01-01T00:00:00Z", "started_at": "2026-01-01T00:00:01Z",
            "ended_at": "2026-01-01T01:02:04Z", "unit_ms": 60_250, "attempts": []
        }))
        .unwrap();
        assert_eq!(
            job_outcome(&job),
            "timed out with exit code 137 (time limit)"
        );
        assert_eq!(
            job_summary(&job, &lease),
            [
                "job job_1 timed out with exit code 137 (time limit) after 1h 2m 3s",
                "job used 60.250 unit-s (¥0.060250)",
                "lease lease_1 is still active: ¥0.090500 so far (90.500 unit-s); end it with \
                 `suanli end lease_1`",
            ]
        );
        let pairs = lease_pairs(&lease);
        let get = |label: &str| {
            pairs
                .iter()
                .find(|(l, _)| *l == label)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            get("billing").as_deref(),
            Some("metered (the unit-seconds its jobs used)")
        );
        assert_eq!(get("metered").as_deref(), Some("90.500 unit-s"));
        assert_eq!(get("cost so far").as_deref(), Some("¥0.090500"));
        assert_eq!(
            elapsed("2026-01-01T00:00:00Z", "2026-01-01T00:00:59Z").as_deref(),
            Some("59.0s")
        );
        assert_eq!(
            elapsed("2026-01-01T00:00:00.000Z", "2026-01-01T00:00:00.137Z").as_deref(),
            Some("0.1s")
        );
        assert_eq!(
            elapsed("2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z").as_deref(),
            Some("1m 0s")
        );
        assert_eq!(elapsed("x", "2026-01-01T00:01:00Z"), None);
    }

    #[test]
    fn idempotency_keys_are_fresh() {
        let a = fresh_idempotency_key().unwrap();
        let b = fresh_idempotency_key().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 32);
        assert!(a.starts_with("cli-"));
    }
}
