//! The local backend as the agent's [`Runner`]: this machine as measured is its one node, each
//! attempt a sandboxed process tree that runs at once, its outputs the job user's files.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use suanli_api::{Assignment, NodeSpec};
use tokio::sync::mpsc;

use super::{work_dir, LocalBackend, LocalOptions, Reattached, RunningJob};
use crate::capacity::{self, CapacityOverride, MachineCapacity};
use crate::job::{JobLaunch, LogChunk, Outcome, Usage};
use crate::runner::{
    decode_files, BoxFuture, Capacity, Found, Isolation, Job, Outputs, Progress, Resume, Runner,
};

/// The local backend with the node it registers.
pub struct LocalRunner {
    backend: LocalBackend,
    node: NodeSpec,
}

impl LocalRunner {
    /// Measures this machine (`overrides` win), and starts the local backend with jobs in
    /// `jobs_dir`; the machine is registered as one node named `name`.
    pub async fn new(
        jobs_dir: PathBuf,
        options: LocalOptions,
        overrides: &CapacityOverride,
        name: &str,
    ) -> Result<LocalRunner> {
        let measured = capacity::detect_async().await;
        let machine = capacity::apply_override(measured, overrides);
        let backend = LocalBackend::new(jobs_dir, options).context("start the local backend")?;
        let node = local_node(name, &machine);
        Ok(LocalRunner { backend, node })
    }

    /// Where a job that ended while the agent was away left its outputs.
    fn outputs_of(&self, attempt_id: &str) -> Option<Outputs> {
        let dir = self.backend.job_dir(attempt_id).ok()?;
        Some(Outputs {
            dir: work_dir(&dir),
            owner: Some(self.backend.job_uid()),
        })
    }
}

/// The one node of a local agent: this machine as measured. A machine with several
/// accelerator models reports the largest group.
fn local_node(name: &str, m: &MachineCapacity) -> NodeSpec {
    let gpu = m.accelerators.iter().max_by_key(|a| a.count);
    if let Some(g) = gpu {
        println!("accelerators: {}× {} ({})", g.count, g.model, g.source);
    }
    NodeSpec {
        name: name.to_owned(),
        cpus: m.cpus.max(1),
        memory_mib: m.memory_mib.max(1),
        accelerator_model: gpu.map(|g| g.model.clone()),
        accelerators: gpu.map(|g| g.count).unwrap_or(0),
        partition: None,
    }
}

impl Runner for LocalRunner {
    fn isolation(&self) -> Isolation {
        let report = self.backend.isolation();
        Isolation {
            summary: report.summary,
            notes: report.notes,
        }
    }

    fn capacity(&self) -> BoxFuture<'_, Result<Capacity>> {
        let capacity = Capacity {
            nodes: vec![self.node.clone()],
            offers: None,
        };
        Box::pin(async move { Ok(capacity) })
    }

    fn capacity_refresh(&self) -> Option<Duration> {
        None
    }

    fn start<'a>(&'a self, a: &'a Assignment) -> BoxFuture<'a, Result<Box<dyn Job>, String>> {
        Box::pin(async move {
            let files = decode_files(a)
                .map_err(|e| format!("the working directory could not be unpacked: {e}"))?;
            let launch = JobLaunch {
                attempt_id: a.attempt_id.clone(),
                setup: a.task.setup.clone(),
                run: a.task.run.clone(),
                env: a.task.env.clone().into_iter().collect::<BTreeMap<_, _>>(),
                files,
                cpus: a.cpus.max(1),
                memory_mib: a.memory_mib.max(64),
                pids_max: 512,
                time_limit_s: a.time_limit_s.max(1),
                network: a.task.network,
            };
            let job = self
                .backend
                .start(launch)
                .await
                .map_err(|e| format!("the job could not start: {e}"))?;
            Ok(Box::new(LocalJob::new(job, self.backend.job_uid())) as Box<dyn Job>)
        })
    }

    fn reattach<'a>(&'a self, at: Resume<'a>) -> BoxFuture<'a, Found> {
        Box::pin(async move {
            match self
                .backend
                .reattach_from(at.attempt_id, Some(at.log_offsets))
                .await
            {
                Ok(Some(Reattached::Running(job))) => {
                    println!(
                        "re-attached to attempt {} (pid {})",
                        at.attempt_id,
                        job.pid()
                    );
                    Found::Running(Box::new(LocalJob::new(job, self.backend.job_uid())))
                }
                Ok(Some(Reattached::Finished(outcome))) => Found::Finished {
                    outcome,
                    outputs: self.outputs_of(at.attempt_id),
                },
                Ok(None) | Err(_) => {
                    Found::Gone("the job was gone when the agent restarted".into())
                }
            }
        })
    }
}

/// A local job as the loop supervises it: running from its start until its outcome.
struct LocalJob {
    job: RunningJob,
    /// The user the job runs as: whose files its outputs must be.
    owner: u32,
    /// The outcome, once [`Job::changed`] saw it.
    outcome: Option<Outcome>,
}

impl LocalJob {
    fn new(job: RunningJob, owner: u32) -> LocalJob {
        LocalJob {
            job,
            owner,
            outcome: None,
        }
    }
}

impl Job for LocalJob {
    fn backend_id(&self) -> String {
        self.job.pid().to_string()
    }

    fn queued(&self) -> Option<String> {
        None
    }

    fn take_logs(&mut self) -> mpsc::Receiver<LogChunk> {
        self.job.take_logs()
    }

    fn progress(&mut self) -> Progress {
        match &self.outcome {
            Some(o) => Progress::Finished(o.clone()),
            None => Progress::Running,
        }
    }

    fn changed(&mut self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let outcome = self.job.finished().await;
            self.outcome = Some(outcome);
            true
        })
    }

    fn finished(&self) -> BoxFuture<'_, Outcome> {
        Box::pin(self.job.finished())
    }

    fn usage(&self) -> Usage {
        self.job.usage()
    }

    fn cancel(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.job.cancel())
    }

    fn outputs(&self) -> Outputs {
        Outputs {
            dir: self.job.work_dir(),
            owner: Some(self.owner),
        }
    }
}
