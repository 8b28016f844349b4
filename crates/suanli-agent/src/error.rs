//! The crate's error type.

use std::io;
use std::path::PathBuf;

/// What can go wrong when preparing, starting or finding a job.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The launch request itself is unacceptable (bad attempt id, unsafe path, bad env name).
    #[error("invalid job: {0}")]
    InvalidJob(String),
    /// The job directory exists already: an attempt id is started once (use `reattach`).
    #[error("job directory {} already exists", .0.display())]
    AlreadyExists(PathBuf),
    /// Bubblewrap was required (`UseBubblewrap::Always`) but is missing or does not work here.
    #[error("bubblewrap required but unusable: {0}")]
    SandboxUnavailable(String),
    /// The backend cannot work with this configuration (e.g. the job user cannot reach the
    /// root directory, or a Slurm account does not exist).
    #[error("backend configuration: {0}")]
    Config(String),
    /// The job could not be started (nothing of it ran).
    #[error("starting the job: {0}")]
    Start(String),
    /// A job directory's `attempt.json` is unreadable or does not describe its attempt.
    #[error("bad attempt record: {0}")]
    BadRecord(String),
    /// A per-job cgroup could not be created or joined.
    #[error("cgroup: {0}")]
    Cgroup(String),
    /// Any other IO failure, with what was being done.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Wraps an `io::Error` with context.
pub(crate) trait IoContext<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: what(),
            source,
        })
    }
}
