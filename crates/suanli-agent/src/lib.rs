//! The provider side of Suanli: the agent (`suanli agent`) and running jobs on this machine or
//! on the cluster it submits to.
//!
//! - [`agent`]: the agent's loop against the exchange: registration, heartbeats, the long poll,
//!   and one supervisor per attempt reporting its state, signed usage, logs, outputs and end.
//! - [`runner`]: the one interface the loop drives a backend through ([`runner::Runner`], and
//!   [`runner::Job`] for each job it runs); the local and the Slurm backend implement it.
//! - [`job`]: what a job is, whichever backend runs it: what to run, its output, its use, its end.
//! - [`capacity`]: the machine's real CPUs, memory and accelerators ([`capacity::detect`]; cgroup
//!   quotas, `/proc/meminfo`, `nvidia-smi`, `npu-smi`), with registry-style model names and a
//!   config override.
//! - [`local`]: the local backend. Each job is a real child process in its own directory and
//!   process group, limited by a per-job cgroup (v2 or v1; rlimits as the fallback), sandboxed by
//!   bubblewrap when available, run as `nobody` when the agent is root, with a cleared
//!   environment. Its handle ([`local::RunningJob`]) streams output, meters usage, cancels (the
//!   whole process tree) and waits for the [`job::Outcome`]; a restarted agent finds its jobs
//!   again with [`local::LocalBackend::reattach`]. [`local::LocalRunner`] is its runner.
//! - [`slurm`]: the Slurm backend for supercomputing centers: jobs become Slurm batch jobs run as
//!   mapped Unix accounts; capacity, states and usage come from Slurm's own commands.
//!   [`slurm::SlurmRunner`] is its runner, with the `[slurm]` config ([`slurm::SlurmSection`]).
//! - [`Error`]: the error type of both backends.
//!
//! Only [`agent`] talks to the exchange; the backends and their runners say what to report.
//! Nothing here uses `unsafe`: signals go through the shell's `kill`, rlimits through `prlimit`,
//! and the user switch through `std`'s `CommandExt::uid`/`gid`.

pub mod agent;
pub mod capacity;
mod cgroupfs;
mod error;
pub mod job;
pub mod local;
pub mod runner;
pub mod safe_fs;
pub mod slurm;

pub use error::{Error, Result};

/// Whether this process runs as root (effective uid 0): jobs then switch to another user.
pub fn running_as_root() -> bool {
    local::procfs::euid() == 0
}
