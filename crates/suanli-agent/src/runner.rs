//! The one interface between the agent's loop (the `agent` module) and where jobs run.
//!
//! A [`Runner`] is an execution backend as the loop sees it: what it sells ([`Capacity`]), how
//! jobs are isolated, starting an assignment's job and finding a job again after an agent
//! restart. Each job it starts or finds is a [`Job`]: its output, where it stands
//! ([`Progress`]), its use so far, cancelling it, its end and where its outputs are. The local
//! backend (`local::LocalRunner`) and the Slurm backend (`slurm::SlurmRunner`) implement both;
//! the loop holds an `Arc<dyn Runner>` and never asks which backend it has.
//!
//! Nothing here talks to the exchange: runners say what to report, the loop reports it.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use base64::Engine;
use suanli_api::{Assignment, CreateOfferRequest, NodeSpec};
use tokio::sync::mpsc;

use crate::job::{JobFile, LogChunk, Outcome, Usage};

/// A future a runner or job returns (trait objects cannot have `async fn`s).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An execution backend as the agent's loop drives it.
pub trait Runner: Send + Sync {
    /// How jobs are isolated here: a summary for the exchange and notes for the provider.
    fn isolation(&self) -> Isolation;

    /// What is for sale now: the nodes to register and, when this runner keeps them, the offers
    /// the agent's pool must have.
    fn capacity(&self) -> BoxFuture<'_, anyhow::Result<Capacity>>;

    /// How often [`Runner::capacity`] is read again and registered when it changed; `None`: it
    /// is read once, at start.
    fn capacity_refresh(&self) -> Option<Duration>;

    /// Starts an assignment's job. Err says why it cannot run: the attempt fails with that.
    fn start<'a>(&'a self, a: &'a Assignment) -> BoxFuture<'a, Result<Box<dyn Job>, String>>;

    /// After an agent restart: finds the job of an attempt the agent had started.
    fn reattach<'a>(&'a self, attempt: Resume<'a>) -> BoxFuture<'a, Found>;
}

/// A job a [`Runner`] started or found again, as the loop supervises it.
pub trait Job: Send + Sync {
    /// The backend's id of the job (its process id, its Slurm job id), told to the exchange.
    fn backend_id(&self) -> String;

    /// The message of the `pending` report the exchange gets once the job was queued rather than
    /// started (Slurm's "submitted as job N"); `None` when it runs at once and the exchange is
    /// told `running` as soon as it started (also, after a restart, that it was told so).
    fn queued(&self) -> Option<String>;

    /// The job's output (stdout, stderr and the backend's notes), closed once the job is over and
    /// all of it was read; a later call gets a closed receiver.
    fn take_logs(&mut self) -> mpsc::Receiver<LogChunk>;

    /// Where the job stands now.
    fn progress(&mut self) -> Progress;

    /// Waits until [`Job::progress`] may have changed; false when it never will again (then
    /// [`Job::finished`] says how the job ended). Safe to drop before it completes.
    fn changed(&mut self) -> BoxFuture<'_, bool>;

    /// Waits for the job's end.
    fn finished(&self) -> BoxFuture<'_, Outcome>;

    /// Use so far, as usage reports count it.
    fn usage(&self) -> Usage;

    /// Stops the job; its end is then `cancelled` (unless it had ended already).
    fn cancel(&self) -> BoxFuture<'_, ()>;

    /// Where the job's outputs are collected from once it is over, and whose they must be.
    fn outputs(&self) -> Outputs;
}

/// Where a job stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Queued, nothing known yet.
    Queued,
    /// Waiting to run; the message says why (told to the exchange as `pending` when it changes).
    Pending(String),
    /// Running.
    Running,
    /// Over.
    Finished(Outcome),
}

/// How a runner isolates jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Isolation {
    /// One line, registered with the exchange (its first 500 characters).
    pub summary: String,
    /// What the provider should know (printed at start).
    pub notes: Vec<String>,
}

/// What a runner sells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capacity {
    /// The nodes registered with the exchange.
    pub nodes: Vec<NodeSpec>,
    /// The offers the agent's pool must have (their `pool_id` is left for the loop to fill in),
    /// when the runner decides them; `None` leaves the pool's offers to the provider.
    pub offers: Option<Vec<CreateOfferRequest>>,
}

/// What the agent noted of an attempt it had started, to find its job again.
#[derive(Debug, Clone, Copy)]
pub struct Resume<'a> {
    pub attempt_id: &'a str,
    /// The backend's id of the job, when it had one.
    pub backend_id: Option<&'a str>,
    /// The attempt's wall-clock limit in seconds (0: none noted).
    pub time_limit_s: u64,
    /// Bytes of stdout and stderr the exchange already has: the output resumes there.
    pub log_offsets: (u64, u64),
}

/// What [`Runner::reattach`] found.
pub enum Found {
    /// The job, still followed: supervise it.
    Running(Box<dyn Job>),
    /// The job ended while the agent was away.
    Finished {
        outcome: Outcome,
        outputs: Option<Outputs>,
    },
    /// Nothing is left of it; the attempt fails with this message.
    Gone(String),
}

/// Where a job's outputs are: its working directory, and the user its files must belong to (the
/// job's own; `None` reads any owner's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outputs {
    pub dir: PathBuf,
    pub owner: Option<u32>,
}

/// The files of an assignment's working directory, decoded.
pub fn decode_files(a: &Assignment) -> Result<Vec<JobFile>, String> {
    a.task
        .workdir
        .iter()
        .map(|f| {
            let data = base64::engine::general_purpose::STANDARD
                .decode(&f.content_base64)
                .map_err(|e| format!("{}: {e}", f.path))?;
            Ok(JobFile {
                path: f.path.clone(),
                data,
                mode: f.mode.unwrap_or(0o644),
            })
        })
        .collect()
}
