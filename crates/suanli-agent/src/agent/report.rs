//! What the agent tells the exchange about an attempt: its state short of the end, signed usage
//! (saved before it is sent), its outputs and how it ended.

use std::path::Path;

use anyhow::{bail, Context, Result};
use base64::Engine;
use ed25519_dalek::Signer;
use suanli_api::{AttemptEvent, UsageBatch, UsageRecord};
use suanli_client::ClientError;

use super::shared::{is_stale, retry, Agent};
use super::state::{drop_note, hex, save_note, AttemptNote};
use crate::job::{JobState, Outcome};
use crate::runner::Outputs;

/// Tells the exchange how an attempt stands short of its end (`pending`, `running`); retried
/// while the exchange cannot be reached. Err when it refused the attempt.
pub(crate) async fn report_state(
    agent: &Agent,
    attempt_id: &str,
    state: &str,
    message: Option<String>,
    backend_id: Option<String>,
) -> Result<suanli_api::Job, ClientError> {
    let event = AttemptEvent {
        state: state.into(),
        exit_code: None,
        message,
        backend_id,
        started_ms: None,
        ended_ms: None,
    };
    retry(&format!("report {state}"), || {
        agent
            .client
            .attempt_event(&agent.agent_id, attempt_id, &event, None)
    })
    .await
}

/// Reports how a job ended: its last usage, its outputs (when there is a directory to collect
/// them from) and its end state. Outputs the agent refused to read are named in the job's reason.
pub(crate) async fn report_outcome(
    agent: &Agent,
    note: &mut AttemptNote,
    outcome: &Outcome,
    outputs: Option<&Outputs>,
    backend_id: Option<String>,
) {
    let u = outcome.usage;
    report_usage(agent, note, u.wall_ms, u.cpu_ms, u.peak_memory_mib).await;
    let mut message = outcome.message.clone();
    if let Some(at) = outputs {
        match upload_outputs(agent, note, at).await {
            Ok(refused) if refused.is_empty() => {}
            Ok(refused) => {
                let listed: Vec<String> = refused
                    .iter()
                    .take(10)
                    .map(|(path, why)| format!("{path} ({why})"))
                    .collect();
                let more = refused.len().saturating_sub(listed.len());
                message = format!(
                    "{message}; {} output(s) refused: {}{}",
                    refused.len(),
                    listed.join(", "),
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    }
                );
            }
            Err(e) => message = format!("{message}; outputs not collected: {e}"),
        }
    }
    finish_ran(agent, note, outcome, &message, backend_id).await;
}

/// Most output bytes collected from one job (the exchange keeps at most this much).
const MAX_OUTPUT_BYTES: u64 = 8 * 1024 * 1024;

/// Collects the task's output paths from the job's working directory (files, and directories
/// recursively) and sends them. The agent may be root and the directory is the job's: every file
/// is opened from a directory descriptor without following a symbolic link at any component,
/// and only regular files with one link owned by the job's user are read
/// ([`crate::safe_fs`]). Returns what was refused, and why.
async fn upload_outputs(
    agent: &Agent,
    note: &AttemptNote,
    at: &Outputs,
) -> Result<Vec<RefusedOutput>> {
    if note.outputs.is_empty() {
        return Ok(Vec::new());
    }
    let (dir, owner, paths) = (at.dir.clone(), at.owner, note.outputs.clone());
    let (files, refused) =
        tokio::task::spawn_blocking(move || collect_outputs(&dir, owner, &paths))
            .await
            .context("collecting outputs")??;
    // Batches of at most 4 MiB, under the exchange's body limit once encoded.
    let mut batch: Vec<suanli_api::WorkdirFile> = Vec::new();
    let mut batch_bytes = 0usize;
    let engine = base64::engine::general_purpose::STANDARD;
    for (i, (path, data, mode)) in files.iter().enumerate() {
        batch_bytes += data.len();
        batch.push(suanli_api::WorkdirFile {
            path: path.clone(),
            content_base64: engine.encode(data),
            mode: Some(*mode),
        });
        if batch_bytes >= 4 * 1024 * 1024 || i + 1 == files.len() {
            let body = suanli_api::OutputBatch {
                files: std::mem::take(&mut batch),
            };
            retry("send outputs", || {
                agent
                    .client
                    .outputs(&agent.agent_id, &note.attempt_id, &body)
            })
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            batch_bytes = 0;
        }
    }
    Ok(refused)
}

/// An output file read for sending: its path in the job's directory, its bytes and its mode.
type OutputFile = (String, Vec<u8>, u32);

/// An output the agent refused to read: its path and why.
type RefusedOutput = (String, String);

/// Reads the outputs named in `paths` below `dir` (blocking); see [`upload_outputs`].
fn collect_outputs(
    dir: &Path,
    owner: Option<u32>,
    paths: &[String],
) -> Result<(Vec<OutputFile>, Vec<RefusedOutput>)> {
    use std::io::Read;
    let root = crate::safe_fs::open_dir(dir)
        .with_context(|| format!("opening the job directory {}", dir.display()))?;
    let (mut files, mut refused) = (Vec::new(), Vec::new());
    let mut total = 0u64;
    for p in paths {
        let rel = Path::new(p.trim_end_matches('/'));
        let (found, no) = crate::safe_fs::collect_beneath(&root, rel, owner, 1_000);
        refused.extend(
            no.into_iter()
                .filter(|(_, why)| *why != crate::safe_fs::Refused::Missing)
                .map(|(path, why)| (path.to_string_lossy().into_owned(), why.to_string())),
        );
        for (path, opened) in found {
            total += opened.size;
            if total > MAX_OUTPUT_BYTES || files.len() >= 1_000 {
                bail!("the outputs are larger than 8 MiB or 1000 files");
            }
            let mut data = Vec::with_capacity(opened.size as usize);
            // Read no more than the size seen: the job may still be growing the file.
            opened
                .file
                .take(opened.size)
                .read_to_end(&mut data)
                .with_context(|| format!("reading output {}", path.display()))?;
            files.push((path.to_string_lossy().into_owned(), data, opened.mode));
        }
    }
    Ok((files, refused))
}

fn outcome_state(o: &Outcome) -> (&'static str, Option<i32>) {
    match &o.state {
        JobState::Succeeded => ("succeeded", Some(0)),
        JobState::Failed { exit_code } => ("failed", *exit_code),
        JobState::Cancelled => ("cancelled", o.exit_code),
        JobState::TimedOut => ("timed_out", o.exit_code),
        JobState::OutOfMemory => ("failed", o.exit_code),
    }
}

/// Reports usage up to `wall_ms`: units × milliseconds, the difference since the last report,
/// signed; never past the attempt's time limit (the exchange refuses use beyond what time
/// allows, and a job killed at its limit used no more than it). False when the exchange refused
/// the attempt as stale.
pub(crate) async fn report_usage(
    agent: &Agent,
    note: &mut AttemptNote,
    wall_ms: u64,
    cpu_ms: Option<u64>,
    peak: Option<u64>,
) -> bool {
    if !send_pending_usage(agent, note).await {
        return false;
    }
    let wall_ms = match note.time_limit_s {
        0 => wall_ms,
        limit_s => wall_ms.min(limit_s.saturating_mul(1_000)),
    };
    let total = note.units.saturating_mul(wall_ms);
    let delta = total.saturating_sub(note.unit_ms_reported);
    if delta == 0 {
        return true;
    }
    let seq = note.usage_seq + 1;
    let message =
        suanli_api::usage_message(&note.job_id, &note.attempt_id, seq, delta, cpu_ms, peak);
    let record = UsageRecord {
        seq,
        unit_ms: delta,
        cpu_ms,
        peak_memory_mib: peak,
        signature_hex: hex(&agent.key.sign(message.as_bytes()).to_bytes()),
    };
    // The record is saved before it is sent: after a restart it is sent again with the same
    // sequence number, and the exchange counts it once.
    note.usage_seq = seq;
    note.unit_ms_reported = total;
    note.pending_usage = Some(record);
    save_note(&agent.state_dir, note);
    send_pending_usage(agent, note).await
}

/// Sends the saved, unacknowledged usage record if there is one. False when the exchange refused
/// the attempt as stale.
async fn send_pending_usage(agent: &Agent, note: &mut AttemptNote) -> bool {
    let Some(record) = note.pending_usage.clone() else {
        return true;
    };
    let batch = UsageBatch {
        records: vec![record],
    };
    let sent = retry("report usage", || {
        agent
            .client
            .usage(&agent.agent_id, &note.attempt_id, &batch)
    })
    .await;
    match sent {
        Err(e) if is_stale(&e) => false,
        other => {
            if let Err(e) = other {
                tracing::warn!(error = %e, "usage refused");
            }
            note.pending_usage = None;
            save_note(&agent.state_dir, note);
            true
        }
    }
}

/// Reports how an attempt ended (retried until the exchange answers) and forgets it.
pub(crate) async fn finish(
    agent: &Agent,
    note: &mut AttemptNote,
    state: &str,
    exit_code: Option<i32>,
    message: &str,
    backend_id: Option<String>,
) {
    let event = AttemptEvent {
        state: state.into(),
        exit_code,
        message: Some(message.chars().take(500).collect::<String>()).filter(|m| !m.is_empty()),
        backend_id,
        started_ms: None,
        ended_ms: None,
    };
    send_end(agent, note, event).await;
}

/// [`finish`] for a job that ran: with its own start and end, which the consumer sees however
/// late this report arrives.
async fn finish_ran(
    agent: &Agent,
    note: &mut AttemptNote,
    outcome: &Outcome,
    message: &str,
    backend_id: Option<String>,
) {
    let (state, exit_code) = outcome_state(outcome);
    let ms = |t: Option<u64>| t.and_then(|t| i64::try_from(t).ok());
    let event = AttemptEvent {
        state: state.into(),
        exit_code,
        message: Some(message.chars().take(500).collect::<String>()).filter(|m| !m.is_empty()),
        backend_id,
        started_ms: ms(outcome.started_at_ms),
        ended_ms: ms(outcome.ended_at_ms),
    };
    send_end(agent, note, event).await;
}

async fn send_end(agent: &Agent, note: &mut AttemptNote, event: AttemptEvent) {
    let key = format!("{}-end", note.attempt_id);
    match retry("report the end", || {
        agent
            .client
            .attempt_event(&agent.agent_id, &note.attempt_id, &event, Some(&key))
    })
    .await
    {
        Ok(job) => {
            tracing::info!(attempt = %note.attempt_id, job = %job.id, state = %job.state, "attempt ended")
        }
        Err(e) => {
            tracing::warn!(attempt = %note.attempt_id, error = %e, "the exchange refused the end report")
        }
    }
    forget(agent, &note.attempt_id);
}

pub(crate) fn forget(agent: &Agent, attempt_id: &str) {
    agent
        .running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(attempt_id);
    drop_note(&agent.state_dir, attempt_id);
}
