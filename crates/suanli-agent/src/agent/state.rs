//! What the agent keeps in its state directory: its key, its lock, and a note per attempt it
//! started (with the log progress the exchange acknowledged), so that a restart can find them.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use suanli_api::{Assignment, UsageRecord};

/// Refuses a secret (the provider's token, the agent's key) that users other than the agent's can
/// read: whoever reads it can act as the provider.
pub(crate) fn refuse_readable_by_others(path: &Path, what: &str) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path) {
            let mode = m.permissions().mode();
            if mode & 0o077 != 0 {
                bail!(
                    "{what} {} can be read by other users (mode {:o}); make it the agent's \
                     alone: chmod 600 {}",
                    path.display(),
                    mode & 0o777,
                    path.display()
                );
            }
        }
    }
    Ok(())
}

/// The agent's signing key, created once and kept in `state_dir/agent.key` (0600).
pub(crate) fn load_or_create_key(state_dir: &Path) -> Result<SigningKey> {
    let path = state_dir.join("agent.key");
    refuse_readable_by_others(&path, "the agent's key")?;
    if let Ok(text) = std::fs::read_to_string(&path) {
        let bytes = hex_decode(text.trim()).context("agent.key is not hex")?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("agent.key is not 32 bytes"))?;
        return Ok(SigningKey::from_bytes(&bytes));
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("random: {e}"))?;
    write_secret(&path, &hex(&seed))?;
    Ok(SigningKey::from_bytes(&seed))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// What the agent remembers about the attempts it started, so a restart can find them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AttemptNote {
    pub attempt_id: String,
    pub job_id: String,
    pub units: u64,
    pub usage_seq: u64,
    /// Unit-milliseconds reported so far.
    #[serde(default)]
    pub unit_ms_reported: u64,
    pub log_seq: u64,
    /// The task's output paths, collected when the job ends.
    #[serde(default)]
    pub outputs: Vec<String>,
    /// A usage record saved before it was sent and not yet acknowledged: sent again (same
    /// sequence number, counted once) before anything else, also after a restart.
    #[serde(default)]
    pub pending_usage: Option<UsageRecord>,
    /// The backend's id of the job (its process id, its Slurm job id), once it has one.
    #[serde(default)]
    pub backend_id: Option<String>,
    /// The attempt's wall-clock limit (enforced again after a restart).
    #[serde(default)]
    pub time_limit_s: u64,
    /// Whether the exchange was told the job runs.
    #[serde(default)]
    pub reported_running: bool,
}

impl AttemptNote {
    pub(crate) fn new(a: &Assignment) -> AttemptNote {
        AttemptNote {
            attempt_id: a.attempt_id.clone(),
            job_id: a.job_id.clone(),
            units: a.units,
            usage_seq: 0,
            unit_ms_reported: 0,
            log_seq: 0,
            outputs: a.task.outputs.clone(),
            pending_usage: None,
            backend_id: None,
            time_limit_s: a.time_limit_s,
            reported_running: false,
        }
    }
}

pub(crate) fn notes_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("attempts")
}

pub(crate) fn save_note(state_dir: &Path, note: &AttemptNote) {
    let path = notes_dir(state_dir).join(format!("{}.json", note.attempt_id));
    let tmp = path.with_extension("json.tmp");
    let ok = serde_json::to_vec(note)
        .ok()
        .and_then(|b| std::fs::write(&tmp, b).ok())
        .and_then(|()| std::fs::rename(&tmp, &path).ok());
    if ok.is_none() {
        tracing::warn!(attempt = %note.attempt_id, "could not save the attempt's note");
    }
}

pub(crate) fn drop_note(state_dir: &Path, attempt_id: &str) {
    let _ = std::fs::remove_file(notes_dir(state_dir).join(format!("{attempt_id}.json")));
    let _ = std::fs::remove_file(log_seq_path(state_dir, attempt_id));
}

/// The last log chunk number the exchange acknowledged for an attempt, kept apart from the note
/// because the log forwarder updates it after every batch.
pub(crate) fn log_seq_path(state_dir: &Path, attempt_id: &str) -> PathBuf {
    notes_dir(state_dir).join(format!("{attempt_id}.logseq"))
}

/// What the exchange acknowledged of an attempt's output: the last chunk number and the bytes of
/// stdout and stderr sent (so a restarted agent resumes the log files there).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LogProgress {
    pub seq: u64,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
}

pub(crate) fn saved_log_progress(state_dir: &Path, attempt_id: &str) -> LogProgress {
    let text = std::fs::read_to_string(log_seq_path(state_dir, attempt_id)).unwrap_or_default();
    let mut n = text
        .split_whitespace()
        .map(|v| v.parse::<u64>().unwrap_or(0));
    LogProgress {
        seq: n.next().unwrap_or(0),
        stdout_bytes: n.next().unwrap_or(0),
        stderr_bytes: n.next().unwrap_or(0),
    }
}

/// Writes a secret to a new file only the agent's user may read (0600).
fn write_secret(path: &Path, secret: &str) -> Result<()> {
    std::fs::write(path, format!("{secret}\n"))
        .with_context(|| format!("write {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// Takes the state directory's lock, so that the same agent is never started twice on one
/// machine (two agents with one identity would both re-attach to its jobs). A copied state
/// directory elsewhere is fenced by the exchange instead (see `Agent::generation`).
pub(crate) fn lock_state_dir(state_dir: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = state_dir.join("agent.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => bail!(
            "another agent is already running with the state directory {}: an agent's identity \
             (its key) may run once; stop the other one first",
            state_dir.display()
        ),
        Err(e) => bail!("lock {}: {e}", path.display()),
    }
}
