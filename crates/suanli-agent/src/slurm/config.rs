//! `[slurm]` of an agent's config (`backend = "slurm"`): the partitions sold, their classes, prices
//! and limits, and the Unix accounts consumer orgs' jobs run as.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::Deserialize;

/// `[slurm]` of the agent's config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmSection {
    /// Let the agent run as root (jobs still never do). Off by default: run it as a service
    /// account instead.
    #[serde(default)]
    pub allow_root: bool,
    /// Seconds between the watcher's `squeue` calls (one call for all jobs).
    #[serde(default = "default_poll")]
    pub poll_interval_s: u64,
    /// Seconds between reads of the nodes (`scontrol show node`); changes are registered.
    #[serde(default = "default_refresh")]
    pub capacity_refresh_s: u64,
    /// Where `sbatch`, `squeue`, … are, when not on the agent's `PATH`.
    #[serde(default)]
    pub bin_dir: Option<PathBuf>,
    /// The Unix account of consumer orgs not in `accounts`; without it such jobs are refused.
    #[serde(default)]
    pub default_account: Option<String>,
    /// Consumer org id → Unix account its jobs run as.
    #[serde(default)]
    pub accounts: BTreeMap<String, String>,
    /// The partitions sold.
    pub partitions: Vec<PartitionConfig>,
}

fn default_poll() -> u64 {
    1
}

fn default_refresh() -> u64 {
    30
}

/// `[[slurm.partitions]]`: a partition sold, its class, price and limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionConfig {
    pub name: String,
    /// `supercomputing` (core-hours, the default) or `intelligent` (accelerator-hours of the
    /// partition's GPUs, which `accelerator_model` names in the exchange's registry).
    #[serde(default = "default_class")]
    pub class: String,
    #[serde(default)]
    pub accelerator_model: Option<String>,
    /// CNY per unit-hour (core-hour or accelerator-hour), e.g. `"0.05"`.
    pub price_per_unit_hour: String,
    /// Memory per unit; default: the smallest node's memory per CPU (or per GPU).
    #[serde(default)]
    pub memory_mib_per_unit: Option<u64>,
    /// CPUs per unit: 1 for core-hours; for GPUs, default the smallest node's CPUs per GPU.
    #[serde(default)]
    pub cpus_per_unit: Option<u64>,
    #[serde(default)]
    pub min_units: Option<u64>,
    #[serde(default)]
    pub max_units: Option<u64>,
    /// Slurm account (`--account`) and QOS (`--qos`) the jobs are charged to.
    #[serde(default)]
    pub slurm_account: Option<String>,
    #[serde(default)]
    pub qos: Option<String>,
}

fn default_class() -> String {
    "supercomputing".into()
}

impl PartitionConfig {
    pub(crate) fn gpus(&self) -> bool {
        self.class == "intelligent"
    }

    /// The exchange class its offer sells.
    pub(crate) fn exchange_class(&self) -> String {
        match (&self.accelerator_model, self.gpus()) {
            (Some(model), true) => format!("intelligent:{model}"),
            _ => format!("supercomputing:{}", self.name),
        }
    }
}

impl SlurmSection {
    /// Checks what can be checked without Slurm.
    pub fn validate(&self) -> Result<()> {
        if self.partitions.is_empty() {
            bail!("[slurm] sells no partition: add [[slurm.partitions]]");
        }
        let mut seen = std::collections::BTreeSet::new();
        for p in &self.partitions {
            if !seen.insert(&p.name) {
                bail!("partition {:?} is listed twice", p.name);
            }
            match (p.class.as_str(), &p.accelerator_model) {
                ("supercomputing", _) => {}
                ("intelligent", Some(_)) => {}
                ("intelligent", None) => bail!(
                    "partition {:?}: an intelligent partition names its accelerator_model",
                    p.name
                ),
                (other, _) => bail!(
                    "partition {:?}: class {other:?} is supercomputing or intelligent",
                    p.name
                ),
            }
            if suanli_core::money::parse_yuan(&p.price_per_unit_hour).is_none() {
                bail!(
                    "partition {:?}: price_per_unit_hour {:?} is not an amount of yuan",
                    p.name,
                    p.price_per_unit_hour
                );
            }
        }
        for account in self.accounts.values().chain(&self.default_account) {
            if account == "root" {
                bail!("jobs never run as root: map orgs to other accounts");
            }
        }
        Ok(())
    }
}
