//! The agent's config file (TOML): the exchange, the token, the agent's name, zone and state,
//! the backend (`local` or `slurm`) with its settings, and reporting.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::state::refuse_readable_by_others;
use crate::capacity::CapacityOverride;
use crate::local::{JobNetwork, LocalOptions, LogLimits, UseBubblewrap};
use crate::slurm::SlurmSection;

/// The agent's config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The exchange, e.g. `https://exchange.example` or `http://127.0.0.1:8080`.
    pub server: String,
    /// File holding the provider's API token (keep it 0600). Preferred over `token`.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub token: Option<String>,
    /// The agent's name (also its node's name).
    pub name: String,
    /// The zone the machine is in.
    pub zone: String,
    /// Where the agent keeps its key and what it knows of its attempts.
    pub state_dir: PathBuf,
    /// Where jobs get their directories (default `STATE_DIR/jobs`). Jobs run as `nobody` when the
    /// agent is root, so every directory on the way must allow search (o+x).
    #[serde(default)]
    pub jobs_dir: Option<PathBuf>,
    /// `local` (this machine's processes) or `slurm` (the cluster this login node submits to;
    /// see `[slurm]` and docs/SUPERCOMPUTING.md).
    #[serde(default = "default_backend")]
    pub backend: String,
    /// The Slurm backend's partitions, prices, accounts and polling.
    #[serde(default)]
    pub slurm: Option<SlurmSection>,
    /// Serve this existing pool of the provider instead of one named after the agent.
    #[serde(default)]
    pub pool_id: Option<String>,
    /// Explicit capacity; what is not given is measured.
    #[serde(default)]
    pub capacity: CapacityOverride,
    /// `auto` (bubblewrap when it works here), `always` or `never`.
    #[serde(default)]
    pub sandbox: UseBubblewrap,
    /// Seconds between usage reports of a running job.
    #[serde(default = "default_usage_interval")]
    pub usage_interval_s: u64,
    /// Hours a finished job's directory (its files, outputs and logs) is kept before the agent
    /// deletes it; 0 keeps them forever.
    #[serde(default = "default_keep_finished")]
    pub keep_finished_jobs_h: u64,
    /// More paths jobs must not see, besides the agent's own config, token and state: the
    /// exchange's data directory when it runs on this machine, other services' secrets.
    #[serde(default)]
    pub hide: Vec<PathBuf>,
    /// Paths under `/run` jobs may see after all (every host socket there is hidden from them
    /// otherwise), e.g. a socket the provider means jobs to use.
    #[serde(default)]
    pub expose: Vec<PathBuf>,
    /// MiB of a job's output forwarded to the exchange; past it only the last
    /// `log_tail_kib` of each stream is, when the job ends, after a notice of what was dropped.
    #[serde(default = "default_log_mib")]
    pub max_log_mib_per_job: u64,
    #[serde(default = "default_log_tail_kib")]
    pub log_tail_kib: u64,
    /// How jobs that ask for the network get it: `isolated` (their own namespace through
    /// slirp4netns, without the host's loopback or sockets; refused when slirp4netns cannot
    /// work here) or `host` (the host's, loopback services and abstract sockets included).
    #[serde(default)]
    pub network: JobNetwork,
}

fn default_log_mib() -> u64 {
    64
}

fn default_log_tail_kib() -> u64 {
    256
}

impl AgentConfig {
    /// How much of each job's output is forwarded.
    pub fn log_limits(&self) -> LogLimits {
        LogLimits {
            max_bytes: self.max_log_mib_per_job.saturating_mul(1024 * 1024),
            tail_bytes: usize::try_from(self.log_tail_kib.saturating_mul(1024))
                .unwrap_or(usize::MAX),
        }
    }
}

fn default_keep_finished() -> u64 {
    24
}

fn default_backend() -> String {
    "local".into()
}

fn default_usage_interval() -> u64 {
    5
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<AgentConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let config: AgentConfig =
            toml::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
        match (config.backend.as_str(), &config.slurm) {
            ("local", None) => {}
            ("local", Some(_)) => bail!(
                "{}: [slurm] is set but backend is \"local\"; write backend = \"slurm\"",
                path.display()
            ),
            ("slurm", Some(section)) => section
                .validate()
                .with_context(|| format!("{}: [slurm]", path.display()))?,
            ("slurm", None) => bail!(
                "{}: backend = \"slurm\" needs a [slurm] section with the partitions sold",
                path.display()
            ),
            (other, _) => bail!("{}: backend {other:?} is local or slurm", path.display()),
        }
        Ok(config)
    }

    pub(crate) fn token(&self) -> Result<String> {
        match (&self.token_file, &self.token) {
            (Some(f), _) => {
                refuse_readable_by_others(f, "the token file")?;
                Ok(std::fs::read_to_string(f)
                    .with_context(|| format!("read the token file {}", f.display()))?
                    .trim()
                    .to_owned())
            }
            (None, Some(t)) => Ok(t.clone()),
            (None, None) => bail!("the config names no token_file (or token)"),
        }
    }
}

impl AgentConfig {
    /// Where jobs get their directories: `jobs_dir`, by default `STATE_DIR/jobs`.
    pub fn jobs_dir(&self) -> PathBuf {
        self.jobs_dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("jobs"))
    }

    /// The local backend's options: the sandbox, the network, the log limits, and what jobs must
    /// not see (the config at `config_path`, the token, the agent's key and notes, `hide`).
    pub fn local_options(&self, config_path: PathBuf) -> LocalOptions {
        let mut hidden = vec![
            config_path,
            self.state_dir.join("agent.key"),
            self.state_dir.join("attempts"),
        ];
        hidden.extend(self.token_file.clone());
        hidden.extend(self.hide.iter().cloned());
        LocalOptions {
            use_bubblewrap: self.sandbox,
            hidden_paths: hidden,
            exposed_paths: self.expose.clone(),
            log_limits: self.log_limits(),
            job_network: self.network,
            ..LocalOptions::default()
        }
    }
}
