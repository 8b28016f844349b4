//! The command line's definitions: [`Cli`] and its subcommands for clap, and the parsers of the
//! values typed on it (amounts in yuan, durations, GiB, nodes, accelerators, times).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use suanli_api as api;
use suanli_core::money::{parse_yuan, MICROS_PER_YUAN};

pub use super::data::DataCommand;
use crate::args::{AgentArgs, DemoArgs, ServeArgs};

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
    /// Datasets and AI models: list, publish, push and pull them, ask for and grant access.
    #[command(subcommand)]
    Data(DataCommand),
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
