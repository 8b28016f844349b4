//! The agent's Slurm side (`backend = "slurm"`): the `[slurm]` config section, the nodes it
//! registers (read from Slurm, refreshed as they change), the offers it keeps in line with the
//! config's prices and limits, and the supervision of attempts run as Slurm jobs.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use suanli_agent::local::{JobLaunch, JobState as LocalState};
use suanli_agent::slurm::{
    lookup_account, Phase, SlurmBackend, SlurmJob, SlurmNode, SlurmOptions, SlurmSubmit,
    UnixAccount,
};
use suanli_api::{Assignment, CreateOfferRequest, NodeSpec, RegisterAgentRequest};
use suanli_client::Client;
use tokio::sync::watch;

use crate::agent::{
    decode_files, finish, forget, is_stale, report_outcome, report_state, report_usage, retry,
    save_note, saved_log_progress, start_forwarder, Agent, AgentConfig, AttemptNote, OutputsAt,
};

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
    fn gpus(&self) -> bool {
        self.class == "intelligent"
    }

    /// The exchange class its offer sells.
    fn exchange_class(&self) -> String {
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

/// The Slurm backend with the config and the resolved accounts.
pub struct SlurmSide {
    pub backend: SlurmBackend,
    pub config: SlurmSection,
    accounts: HashMap<String, UnixAccount>,
    default_account: Option<UnixAccount>,
}

impl SlurmSide {
    pub async fn new(config: &AgentConfig) -> Result<SlurmSide> {
        let section = config
            .slurm
            .clone()
            .context("backend = \"slurm\" needs a [slurm] section")?;
        let mut accounts = HashMap::new();
        for (org, name) in &section.accounts {
            accounts.insert(org.clone(), lookup_account(name).await?);
        }
        let default_account = match &section.default_account {
            Some(name) => Some(lookup_account(name).await?),
            None => None,
        };
        let mut options = SlurmOptions::new(
            config
                .jobs_dir
                .clone()
                .unwrap_or_else(|| config.state_dir.join("jobs")),
            section.partitions.iter().map(|p| p.name.clone()).collect(),
        );
        options.allow_root = section.allow_root;
        options.poll_interval = Duration::from_secs(section.poll_interval_s.max(1));
        options.bin_dir = section.bin_dir.clone();
        options.log_limits = config.log_limits();
        let backend = SlurmBackend::new(options)
            .await
            .context("start the Slurm backend")?;
        for account in accounts.values().chain(&default_account) {
            backend.check_account(account)?;
        }
        Ok(SlurmSide {
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
    pub async fn read_nodes(&self) -> Result<(Vec<SlurmNode>, Vec<NodeSpec>)> {
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

    /// The offers this agent's pool should have: one per partition, at the config's terms.
    /// Defaults come from every node of the partition, whatever its state, so that draining a
    /// node changes what is available, not the terms.
    fn wanted_offers(&self, pool_id: &str, nodes: &[SlurmNode]) -> Vec<CreateOfferRequest> {
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
                    pool_id: pool_id.to_owned(),
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

    /// Brings the pool's offers in line with the config: keeps offers with the same terms,
    /// withdraws the others, creates what is missing.
    pub async fn sync_offers(
        &self,
        client: &Client,
        pool_id: &str,
        nodes: &[SlurmNode],
    ) -> Result<()> {
        let wanted = self.wanted_offers(pool_id, nodes);
        let existing: Vec<_> = client
            .list_offers()
            .await?
            .items
            .into_iter()
            .filter(|o| o.pool_id == pool_id && o.state == "active")
            .collect();
        let same = |o: &suanli_api::Offer, w: &CreateOfferRequest| {
            o.class == w.class
                && Some(o.cpus_per_unit) == w.cpus_per_unit
                && o.memory_mib_per_unit == w.memory_mib_per_unit
                && o.price_micros_per_unit_hour == w.price_micros_per_unit_hour
                && w.min_units.is_none_or(|m| m == o.min_units)
                && w.max_units.is_none_or(|m| m == o.max_units)
        };
        for o in &existing {
            if !wanted.iter().any(|w| same(o, w)) {
                client.withdraw_offer(&o.id, None).await?;
                println!("withdrew offer {} ({}): the config changed", o.id, o.class);
            }
        }
        for w in &wanted {
            if !existing.iter().any(|o| same(o, w)) {
                let o = client.create_offer(w, None).await?;
                println!(
                    "offering {} at {} per unit-hour (offer {})",
                    o.class,
                    crate::cli::yuan(o.price_micros_per_unit_hour),
                    o.id
                );
            }
        }
        Ok(())
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

/// Re-reads the nodes every `capacity_refresh_s` and registers them again when they changed
/// (a drained node stops being sold; a resumed one is sold again).
pub async fn capacity_loop(
    agent: Arc<Agent>,
    side: Arc<SlurmSide>,
    mut request: RegisterAgentRequest,
) {
    let every = Duration::from_secs(side.config.capacity_refresh_s.max(1));
    loop {
        tokio::time::sleep(every).await;
        let (raw, nodes) = match side.read_nodes().await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "reading the nodes from Slurm failed; the exchange keeps the last ones");
                continue;
            }
        };
        if nodes == request.nodes {
            continue;
        }
        for n in &nodes {
            match request.nodes.iter().find(|o| o.name == n.name) {
                Some(o) if o.cpus > 0 && n.cpus == 0 => {
                    println!("node {} no longer takes work: not sold", n.name)
                }
                Some(o) if o.cpus == 0 && n.cpus > 0 => {
                    println!("node {} is back: sold again", n.name)
                }
                _ => {}
            }
        }
        request.nodes = nodes;
        match retry("register", || agent.client.register_agent(&request, None)).await {
            Ok(_) => {
                if let Err(e) = side.sync_offers(&agent.client, &agent.pool_id, &raw).await {
                    tracing::warn!(error = %e, "updating the offers failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "the exchange refused the new capacity"),
        }
    }
}

/// Submits a new attempt to Slurm and supervises it.
pub async fn supervise_new(
    agent: Arc<Agent>,
    side: Arc<SlurmSide>,
    a: Assignment,
    stop: watch::Receiver<bool>,
) {
    let mut note = AttemptNote::new(&a);
    save_note(&agent.state_dir, &note);
    let plan = side.plan(&a);
    let files = decode_files(&a);
    let ((plan, account), files) = match (plan, files) {
        (Ok(p), Ok(f)) => (p, f),
        (Err(e), _) => {
            finish(&agent, &mut note, "failed", None, &e, None).await;
            return;
        }
        (_, Err(e)) => {
            let m = format!("the working directory could not be unpacked: {e}");
            finish(&agent, &mut note, "failed", None, &m, None).await;
            return;
        }
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
    let submitted = side
        .backend
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
        .await;
    let job = match submitted {
        Ok(job) => job,
        Err(e) => {
            finish(&agent, &mut note, "failed", None, &e.to_string(), None).await;
            return;
        }
    };
    let id = job.slurm_id().to_string();
    note.backend_id = Some(id.clone());
    save_note(&agent.state_dir, &note);
    // The exchange hears at once that the job reached Slurm (and its id).
    let message = Some(format!("submitted to Slurm as job {id}"));
    match report_state(&agent, &a.attempt_id, "pending", message, Some(id)).await {
        Ok(_) => supervise(agent, job, note, stop, false).await,
        Err(e) => {
            tracing::warn!(attempt = %a.attempt_id, error = %e, "the exchange refused the attempt: cancelling its Slurm job");
            job.cancel().await;
            forget(&agent, &a.attempt_id);
        }
    }
}

/// Follows an attempt's Slurm job to its end: pending reasons and the start go to the exchange,
/// output and usage (Slurm's elapsed time × the lease's units) are forwarded.
async fn supervise(
    agent: Arc<Agent>,
    mut job: SlurmJob,
    mut note: AttemptNote,
    mut stop: watch::Receiver<bool>,
    resumed: bool,
) {
    let forwarder = start_forwarder(&agent, job.take_logs(), &note, resumed);
    let backend_id = Some(job.slurm_id().to_string());
    let mut phase = job.watch();
    let mut tick = tokio::time::interval(agent.usage_interval);
    tick.tick().await;
    let mut stopped = false;
    let mut last_reason = String::new();
    let outcome = loop {
        let now = phase.borrow_and_update().clone();
        match now {
            Phase::Finished(o) => break *o,
            Phase::Pending { reason } if !note.reported_running && reason != last_reason => {
                let message = Some(format!("Slurm job {} is pending: {reason}", job.slurm_id()));
                last_reason = reason;
                let sent = report_state(
                    &agent,
                    &note.attempt_id,
                    "pending",
                    message,
                    backend_id.clone(),
                )
                .await;
                if let Err(e) = sent {
                    if is_stale(&e) && !stopped {
                        stopped = true;
                        job.cancel().await;
                    }
                }
            }
            Phase::Running { .. } if !note.reported_running => {
                let refused = report_running(&agent, &mut note, backend_id.clone())
                    .await
                    .is_err();
                if refused && !stopped {
                    stopped = true;
                    job.cancel().await;
                }
            }
            _ => {}
        }
        tokio::select! {
            changed = phase.changed() => {
                if changed.is_err() {
                    break job.finished().await;
                }
            }
            changed = stop.changed(), if !stopped => {
                if changed.is_err() || *stop.borrow() {
                    stopped = true;
                    job.cancel().await;
                }
            }
            _ = tick.tick() => {
                let u = job.usage();
                if !report_usage(&agent, &mut note, u.wall_ms, None, None).await && !stopped {
                    stopped = true;
                    job.cancel().await;
                }
            }
        }
    };
    if let Ok(last) = forwarder.await {
        note.log_seq = last;
    }
    conclude(&agent, &mut note, &outcome, job.job_dir(), backend_id).await;
}

/// Tells the exchange the job runs. Err when the exchange refused the attempt.
async fn report_running(
    agent: &Agent,
    note: &mut AttemptNote,
    backend_id: Option<String>,
) -> Result<(), suanli_client::ClientError> {
    report_state(agent, &note.attempt_id, "running", None, backend_id).await?;
    note.reported_running = true;
    save_note(&agent.state_dir, note);
    Ok(())
}

/// Reports the last usage, the outputs and the end.
async fn conclude(
    agent: &Agent,
    note: &mut AttemptNote,
    outcome: &suanli_agent::local::Outcome,
    job_dir: &std::path::Path,
    backend_id: Option<String>,
) {
    // A job that ran between two polls was never seen running: it started all the same.
    if !note.reported_running
        && (outcome.usage.wall_ms > 0 || outcome.state == LocalState::Succeeded)
    {
        let _ = report_running(agent, note, backend_id.clone()).await;
    }
    // The agent made the work directory and gave it to the job's account: whose files the
    // outputs must be.
    let work = suanli_agent::local::work_dir(job_dir);
    let owner = std::fs::symlink_metadata(&work)
        .ok()
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m));
    let outputs = OutputsAt { dir: &work, owner };
    report_outcome(agent, note, outcome, Some(outputs), backend_id).await;
}

/// After an agent restart: follows the attempt's Slurm job again (by the id in its note, else
/// by its job name), or reports that it is gone.
pub async fn reattach(agent: &Arc<Agent>, side: &Arc<SlurmSide>, mut note: AttemptNote) {
    let mut id = note
        .backend_id
        .as_deref()
        .and_then(|s| s.parse::<u64>().ok());
    if id.is_none() {
        for _ in 0..10 {
            match side.backend.find(&note.attempt_id).await {
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
        finish(
            agent,
            &mut note,
            "failed",
            None,
            "the job never reached Slurm (the agent stopped while submitting it)",
            None,
        )
        .await;
        return;
    };
    let progress = saved_log_progress(&agent.state_dir, &note.attempt_id);
    let limit = if note.time_limit_s > 0 {
        note.time_limit_s
    } else {
        u64::MAX / 2
    };
    let job = side.backend.attach(
        &note.attempt_id,
        id,
        limit,
        Some((progress.stdout_bytes, progress.stderr_bytes)),
    );
    note.backend_id = Some(id.to_string());
    println!(
        "re-attached to attempt {} (Slurm job {id})",
        note.attempt_id
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    agent
        .running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(note.attempt_id.clone(), stop_tx);
    tokio::spawn(supervise(agent.clone(), job, note, stop_rx, true));
}
