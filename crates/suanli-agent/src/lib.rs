//! The provider side of Suanli on one machine: what the machine has, and running jobs on it.
//! The agent's loop against the exchange (`suanli agent`) lives elsewhere and drives this API.
//!
//! - [`capacity`]: the machine's real CPUs, memory and accelerators ([`capacity::detect`]; cgroup
//!   quotas, `/proc/meminfo`, `nvidia-smi`, `npu-smi`), with registry-style model names and a
//!   config override.
//! - [`local`]: the local backend. Each job is a real child process in its own directory and
//!   process group, limited by a per-job cgroup (v2 or v1; rlimits as the fallback), sandboxed by
//!   bubblewrap when available, run as `nobody` when the agent is root, with a cleared
//!   environment. Its handle ([`local::RunningJob`]) streams output, meters usage, cancels (the
//!   whole process tree) and waits for the [`local::Outcome`]; a restarted agent finds its jobs
//!   again with [`local::LocalBackend::reattach`].
//! - [`slurm`]: the Slurm backend for supercomputing centers: jobs become Slurm batch jobs run as
//!   mapped Unix accounts; capacity, states and usage come from Slurm's own commands.
//! - [`Error`]: the error type of both.
//!
//! Nothing here uses `unsafe`: signals go through the shell's `kill`, rlimits through `prlimit`,
//! and the user switch through `std`'s `CommandExt::uid`/`gid`.

pub mod capacity;
mod cgroupfs;
mod error;
pub mod local;
pub mod safe_fs;
pub mod slurm;

pub use error::{Error, Result};

/// Whether this process runs as root (effective uid 0): jobs then switch to another user.
pub fn running_as_root() -> bool {
    local::procfs::euid() == 0
}
