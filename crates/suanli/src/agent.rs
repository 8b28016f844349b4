//! `suanli agent`: a provider's agent in front of this machine. The agent itself, its loop against
//! the exchange and the local and Slurm runners, is `suanli_agent`; this reads the config, builds
//! the runner the config names and runs the agent with it.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
pub use suanli_agent::agent::AgentConfig;
use suanli_agent::local::LocalRunner;
use suanli_agent::runner::Runner;
use suanli_agent::slurm::SlurmRunner;

use crate::args::AgentArgs;

pub async fn run(args: AgentArgs) -> Result<()> {
    let config = AgentConfig::load(&args.config)?;
    run_with(config, args.config).await
}

/// Runs an agent from an already loaded config (`config_path` is hidden from jobs).
pub async fn run_with(config: AgentConfig, config_path: PathBuf) -> Result<()> {
    let prepared = suanli_agent::agent::prepare(config)?;
    let runner = runner(prepared.config(), config_path).await?;
    suanli_agent::agent::run(prepared, runner).await
}

/// The runner of the config's backend (`local` or `slurm`).
async fn runner(config: &AgentConfig, config_path: PathBuf) -> Result<Arc<dyn Runner>> {
    Ok(match config.backend.as_str() {
        "slurm" => {
            let section = config
                .slurm
                .clone()
                .context("backend = \"slurm\" needs a [slurm] section")?;
            Arc::new(SlurmRunner::new(section, config.jobs_dir(), config.log_limits()).await?)
        }
        _ => Arc::new(
            LocalRunner::new(
                config.jobs_dir(),
                config.local_options(config_path),
                &config.capacity,
                &config.name,
            )
            .await?,
        ),
    })
}
