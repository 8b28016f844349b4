//! Arguments of the commands that run the exchange itself (`serve`, `demo`).

use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Directory for the SQLite database (ignored with --database-url).
    #[arg(long, env = "SUANLI_DATA_DIR", default_value = ".suanli")]
    pub data_dir: PathBuf,
    /// PostgreSQL URL (postgres://…); default is SQLite in --data-dir.
    #[arg(long, env = "SUANLI_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Address to listen on.
    #[arg(long, env = "SUANLI_BIND", default_value = "127.0.0.1")]
    pub bind: String,
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "SUANLI_PORT", default_value_t = 8080)]
    pub port: u16,
    /// Platform fee in basis points (500 = 5%).
    #[arg(long, env = "SUANLI_FEE_BPS", default_value_t = 500)]
    pub fee_bps: u32,
    /// Most requests per group commit; 1 commits every request on its own.
    #[arg(long, default_value_t = 1024)]
    pub max_batch: usize,
    /// Seconds without a heartbeat after which an agent is suspect.
    #[arg(long, default_value_t = 15)]
    pub agent_suspect_after_s: u64,
    /// Seconds without a heartbeat after which an agent is lost, and its running attempts with it.
    #[arg(long, default_value_t = 60)]
    pub agent_lost_after_s: u64,
    /// MiB of each job's log the exchange keeps: past them it keeps the job's last output
    /// behind a notice of how much was dropped.
    #[arg(long, default_value_t = 128)]
    pub max_log_mib_per_job: u64,
    /// Zones of the market, as id=name:kind (kind is core or function). Default: the Wuqing
    /// industrial new city's core zone and function zones.
    #[arg(long = "zone", value_name = "ID=NAME:KIND")]
    pub zones: Vec<String>,
    /// Where datasets' and models' files are kept: file:///ABSOLUTE/PATH, or an S3-compatible
    /// bucket as s3://BUCKET?endpoint=URL&region=REGION (keys from AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY). Default: objects/ in --data-dir.
    #[arg(long, env = "SUANLI_OBJECTS")]
    pub objects: Option<String>,
    /// Days a request for access awaits the owner's answer before its hold is voided.
    #[arg(long, default_value_t = 7)]
    pub data_approval_days: u64,
}

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Directory for the demo's database and state.
    #[arg(long, env = "SUANLI_DATA_DIR", default_value = ".suanli/demo")]
    pub data_dir: PathBuf,
    /// Port to listen on.
    #[arg(long, env = "SUANLI_PORT", default_value_t = 8080)]
    pub port: u16,
    /// Throw away the demo's data and start a new market.
    #[arg(long)]
    pub fresh: bool,
    /// Create the market, print how to use it, and exit instead of serving.
    #[arg(long)]
    pub setup_only: bool,
    /// Make the supercomputing center real: a Slurm agent sells this machine's Slurm (started
    /// with scripts/slurm.sh when installed and run as root; the demo says how otherwise).
    #[arg(long)]
    pub with_slurm: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// The agent's config file (TOML): server, token file, name, zone, state directory, backend,
    /// capacity overrides. See docs/PROVIDERS.md.
    #[arg(long, env = "SUANLI_AGENT_CONFIG")]
    pub config: PathBuf,
}
