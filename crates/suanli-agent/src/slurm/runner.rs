//! The Slurm backend as the agent's [`Runner`]: one node per Slurm node of the sold partitions
//! (re-read every `capacity_refresh_s`), one offer per partition at the config's terms, the
//! consumer org mapped to a Unix account, and each attempt a Slurm job followed through its phases
//! (pending with Slurm's reason, running, its end).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use suanli_api::{Assignment, CreateOfferRequest, NodeSpec};
use tokio::sync::{mpsc, watch};

use super::config::{PartitionConfig, SlurmSection};
use super::{
    lookup_account, Phase, SlurmBackend, SlurmJob, SlurmNode, SlurmOptions, SlurmSubmit,
    UnixAccount,
};
use crate::job::{JobLaunch, LogChunk, Outcome, Usage};
use crate::local::{work_dir, LogLimits};
use crate::runner::{
    decode_files, BoxFuture, Capacity, Found, Isolation, Job, Outputs, Progress, Resume, Runner,
};

/// The Slurm backend with the `[slurm]` config and the resolved accounts.
pub struct SlurmRunner {
    backend: SlurmBackend,
    config: SlurmSection,
    accounts: HashMap<String, UnixAccount>,
    default_account: Option<UnixAccount>,
}

impl SlurmRunner {
    /// Resolves the config's accounts and starts the Slurm backend with jobs in `jobs_dir`.
    pub async fn new(
        section: SlurmSection,
        jobs_dir: PathBuf,
        log_limits: LogLimits,
    ) -> Result<SlurmRunner> {
        let mut accounts = HashMap::new();
        for (org, name) in &section.accounts {
            accounts.insert(org.clone(), lookup_account(name).await?);
        }
        let default_account = match &section.default_account {
            Some(name) => Some(lookup_account(name).await?),
            None => None,
        };
        let mut options = SlurmOptions::new(
            jobs_dir,
            section.partitions.iter().map(|p| p.name.clone()).collect(),
        );
        options.allow_root = section.allow_root;
        options.poll_interval = Duration::from_secs(section.poll_interval_s.max(1));
        options.bin_dir = section.bin_dir.clone();
        options.log_limits = log_limits;
        let backend = SlurmBackend::new(options)
            .await
            .context("start the Slurm backend")?;
        for account in accounts.values().chain(&default_account) {
            backend.check_account(account)?;
        }
        Ok(SlurmRunner {
            backend,
            config: section,
            accounts,
            default_account,
        })
    }

    fn partition(&self, name: &str) -> Option<&PartitionConfig> {
        self.config.partitions.iter().find(|p| p.name == name)
    }

    /// The nodes of the sold partitions as Slurm describes them, and as they are registered:
    /// one per Slurm node; a node that does not take work is registered with nothing to sell.
    async fn read_nodes(&self) -> Result<(Vec<SlurmNode>, Vec<NodeSpec>)> {
        let nodes = self.backend.nodes().await?;
        if nodes.is_empty() {
            bail!(
                "Slurm lists no node in the partitions sold ({})",
                self.backend.options().partitions.join(", ")
            );
        }
        let specs = nodes.iter().map(|n| self.node_spec(n)).collect();
        Ok((nodes, specs))
    }

    fn node_spec(&self, n: &SlurmNode) -> NodeSpec {
        let p = self.partition(&n.partition);
        let gpu_model = p
            .filter(|p| p.gpus())
            .and_then(|p| p.accelerator_model.clone());
        let sell = |v: u64| if n.sellable { v } else { 0 };
        NodeSpec {
            name: n.name.clone(),
            cpus: sell(n.cpus),
            memory_mib: sell(n.memory_mib),
            accelerators: if gpu_model.is_some() { sell(n.gpus) } else { 0 },
            accelerator_model: gpu_model,
            partition: Some(n.partition.clone()),
        }
    }

    /// The offers the agent's pool should have (`pool_id` left empty): one per partition, at the
    /// config's terms. Defaults come from every node of the partition, whatever its state, so
    /// that draining a node changes what is available, not the terms.
    fn wanted_offers(&self, nodes: &[SlurmNode]) -> Vec<CreateOfferRequest> {
        self.config
            .partitions
            .iter()
            .filter_map(|p| {
                let mine: Vec<&SlurmNode> =
                    nodes.iter().filter(|n| n.partition == p.name).collect();
                let per = |n: &SlurmNode| if p.gpus() { n.gpus } else { n.cpus };
                let cpus_per_unit = if p.gpus() {
                    p.cpus_per_unit.or_else(|| {
                        mine.iter()
                            .filter(|n| n.gpus > 0)
                            .map(|n| n.cpus / n.gpus)
                            .min()
                    })
                } else {
                    Some(1)
                };
                let memory = p.memory_mib_per_unit.or_else(|| {
                    mine.iter()
                        .filter(|n| per(n) > 0)
                        .map(|n| n.memory_mib / per(n))
                        .min()
                })?;
                Some(CreateOfferRequest {
                    pool_id: String::new(),
                    class: p.exchange_class(),
                    cpus_per_unit: Some(cpus_per_unit?.max(1)),
                    memory_mib_per_unit: memory.max(1),
                    price_micros_per_unit_hour: suanli_core::money::parse_yuan(
                        &p.price_per_unit_hour,
                    )?,
                    min_units: p.min_units,
                    max_units: p.max_units,
                    valid_from: None,
                    valid_until: None,
                })
            })
            .collect()
    }

    /// Where an assignment runs and as whom, or why it cannot.
    fn plan(&self, a: &Assignment) -> Result<(SlurmSubmitPlan, UnixAccount), String> {
        let (category, qualifier) = a.class.split_once(':').unwrap_or((a.class.as_str(), ""));
        let partition = match category {
            "supercomputing" => self.partition(qualifier),
            "intelligent" => self
                .config
                .partitions
                .iter()
                .find(|p| p.gpus() && p.accelerator_model.as_deref() == Some(qualifier)),
            _ => None,
        }
        .ok_or_else(|| {
            format!(
                "this Slurm agent sells no partition for class {:?}",
                a.class
            )
        })?;
        let account = self
            .accounts
            .get(&a.consumer_org_id)
            .or(self.default_account.as_ref())
            .cloned()
            .ok_or_else(|| {
                format!(
                    "no Unix account on this cluster is mapped to org {}; the provider maps orgs to accounts in [slurm.accounts]",
                    a.consumer_org_id
                )
            })?;
        let units = a.units.max(1);
        let cpus_per_task = (a.cpus / units).max(1);
        Ok((
            SlurmSubmitPlan {
                partition: partition.name.clone(),
                ntasks: units,
                cpus_per_task,
                gpus_per_task: u64::from(partition.gpus()),
                mem_per_cpu_mib: (a.memory_mib / (units * cpus_per_task)).max(1),
                slurm_account: partition.slurm_account.clone(),
                qos: partition.qos.clone(),
            },
            account,
        ))
    }

    /// Submits an assignment to Slurm.
    async fn submit(&self, a: &Assignment) -> Result<SlurmJob, String> {
        let plan = self.plan(a);
        let files = decode_files(a);
        let ((plan, account), files) = match (plan, files) {
            (Ok(p), Ok(f)) => (p, f),
            (Err(e), _) => return Err(e),
            (_, Err(e)) => return Err(format!("the working directory could not be unpacked: {e}")),
        };
        let launch = JobLaunch {
            attempt_id: a.attempt_id.clone(),
            setup: a.task.setup.clone(),
            run: a.task.run.clone(),
            env: a.task.env.clone().into_iter().collect(),
            files,
            cpus: a.cpus,
            memory_mib: a.memory_mib,
            pids_max: 0,
            time_limit_s: a.time_limit_s.max(1),
            network: true,
        };
        self.backend
            .submit(SlurmSubmit {
                launch,
                account,
                partition: plan.partition,
                ntasks: plan.ntasks,
                cpus_per_task: plan.cpus_per_task,
                gpus_per_task: plan.gpus_per_task,
                mem_per_cpu_mib: plan.mem_per_cpu_mib,
                slurm_account: plan.slurm_account,
                qos: plan.qos,
            })
            .await
            .map_err(|e| e.to_string())
    }

    /// After an agent restart: follows the attempt's Slurm job again (by the id in its note, else
    /// by its job name), or says that it never reached Slurm.
    async fn find_again(&self, at: Resume<'_>) -> Found {
        let mut id = at.backend_id.and_then(|s| s.parse::<u64>().ok());
        if id.is_none() {
            for _ in 0..10 {
                match self.backend.find(at.attempt_id).await {
                    Ok(found) => {
                        id = found;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "looking for the attempt's Slurm job failed; retrying");
                        tokio::time::sleep(Duration::from_secs(3)).await;
                    }
                }
            }
        }
        let Some(id) = id else {
            return Found::Gone(
                "the job never reached Slurm (the agent stopped while submitting it)".into(),
            );
        };
        let limit = if at.time_limit_s > 0 {
            at.time_limit_s
        } else {
            u64::MAX / 2
        };
        let job = self
            .backend
            .attach(at.attempt_id, id, limit, Some(at.log_offsets));
        println!("re-attached to attempt {} (Slurm job {id})", at.attempt_id);
        Found::Running(Box::new(FollowedJob::new(job)))
    }
}

struct SlurmSubmitPlan {
    partition: String,
    ntasks: u64,
    cpus_per_task: u64,
    gpus_per_task: u64,
    mem_per_cpu_mib: u64,
    slurm_account: Option<String>,
    qos: Option<String>,
}

impl Runner for SlurmRunner {
    fn isolation(&self) -> Isolation {
        Isolation {
            summary: self.backend.summary(),
            notes: Vec::new(),
        }
    }

    fn capacity(&self) -> BoxFuture<'_, Result<Capacity>> {
        Box::pin(async move {
            let (raw, nodes) = self.read_nodes().await?;
            Ok(Capacity {
                nodes,
                offers: Some(self.wanted_offers(&raw)),
            })
        })
    }

    fn capacity_refresh(&self) -> Option<Duration> {
        Some(Duration::from_secs(self.config.capacity_refresh_s.max(1)))
    }

    fn start<'a>(&'a self, a: &'a Assignment) -> BoxFuture<'a, Result<Box<dyn Job>, String>> {
        Box::pin(async move {
            let job = self.submit(a).await?;
            Ok(Box::new(FollowedJob::new(job)) as Box<dyn Job>)
        })
    }

    fn reattach<'a>(&'a self, attempt: Resume<'a>) -> BoxFuture<'a, Found> {
        Box::pin(self.find_again(attempt))
    }
}

/// An attempt's Slurm job as the loop follows it: its phases (pending with Slurm's reason,
/// running, finished) and usage (Slurm's elapsed time, never past the attempt's limit).
struct FollowedJob {
    job: SlurmJob,
    phase: watch::Receiver<Phase>,
}

impl FollowedJob {
    fn new(job: SlurmJob) -> FollowedJob {
        let phase = job.watch();
        FollowedJob { job, phase }
    }
}

impl Job for FollowedJob {
    fn backend_id(&self) -> String {
        self.job.slurm_id().to_string()
    }

    fn queued(&self) -> Option<String> {
        // The exchange hears at once that the job reached Slurm (and its id).
        Some(format!("submitted to Slurm as job {}", self.job.slurm_id()))
    }

    fn take_logs(&mut self) -> mpsc::Receiver<LogChunk> {
        self.job.take_logs()
    }

    fn progress(&mut self) -> Progress {
        match self.phase.borrow_and_update().clone() {
            Phase::Submitted => Progress::Queued,
            Phase::Pending { reason } => Progress::Pending(format!(
                "Slurm job {} is pending: {reason}",
                self.job.slurm_id()
            )),
            Phase::Running { .. } => Progress::Running,
            Phase::Finished(o) => Progress::Finished(*o),
        }
    }

    fn changed(&mut self) -> BoxFuture<'_, bool> {
        Box::pin(async move { self.phase.changed().await.is_ok() })
    }

    fn finished(&self) -> BoxFuture<'_, Outcome> {
        Box::pin(self.job.finished())
    }

    fn usage(&self) -> Usage {
        // Slurm's elapsed time only: what Slurm says of CPU and memory comes with the end.
        Usage {
            cpu_ms: None,
            peak_memory_mib: None,
            ..self.job.usage()
        }
    }

    fn cancel(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.job.cancel())
    }

    fn outputs(&self) -> Outputs {
        // The agent made the work directory and gave it to the job's account: whose files the
        // outputs must be.
        let dir = work_dir(self.job.job_dir());
        let owner = std::fs::symlink_metadata(&dir)
            .ok()
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m));
        Outputs { dir, owner }
    }
}
