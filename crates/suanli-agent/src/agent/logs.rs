//! Forwarding a job's output to the exchange in numbered batches, resumable after a restart.

use std::sync::Arc;
use std::time::Duration;

use suanli_api::{AgentLogChunk, LogBatch};

use super::shared::{is_stale, retry, Agent};
use super::state::{log_seq_path, saved_log_progress, AttemptNote, LogProgress};
use crate::job::{LogChunk, LogStream};

/// Most encoded bytes of log chunks in one request (the exchange takes bodies up to 1 MiB; one
/// chunk of 64 KiB encodes to at most 384 KiB).
const MAX_LOG_BATCH_BYTES: usize = 512 * 1024;

/// Sends the job's output in batches; returns the last sequence number sent.
async fn forward_logs(
    agent: Arc<Agent>,
    attempt_id: String,
    logs: &mut tokio::sync::mpsc::Receiver<LogChunk>,
    start: LogProgress,
) -> u64 {
    let offset = start.seq;
    let mut last = offset;
    let mut pending = start;
    let mut batch: Vec<AgentLogChunk> = Vec::new();
    let mut batch_bytes = 0usize;
    loop {
        let more = tokio::select! {
            chunk = logs.recv() => chunk,
            _ = tokio::time::sleep(Duration::from_millis(100)), if !batch.is_empty() => None,
        };
        let closed = more.is_none() && batch.is_empty();
        if let Some(c) = more {
            // The backend numbers chunks from 0; the exchange from 1.
            last = offset + c.seq + 1;
            pending.seq = last;
            match c.stream {
                LogStream::Stdout => pending.stdout_bytes += c.data.len() as u64,
                LogStream::Stderr => pending.stderr_bytes += c.data.len() as u64,
                LogStream::System => {}
            }
            let chunk = AgentLogChunk {
                seq: last,
                stream: match c.stream {
                    LogStream::Stdout => "stdout",
                    LogStream::Stderr => "stderr",
                    LogStream::System => "system",
                }
                .into(),
                data: c.data,
            };
            // What the chunk weighs in the request once encoded (JSON escapes control
            // characters six times over): batches stay under the exchange's 1 MiB body limit.
            batch_bytes += serde_json::to_string(&chunk.data).map_or(0, |t| t.len()) + 64;
            batch.push(chunk);
            if batch.len() < 200 && batch_bytes < MAX_LOG_BATCH_BYTES {
                continue;
            }
        }
        if !batch.is_empty() {
            batch_bytes = 0;
            let chunks = LogBatch {
                chunks: std::mem::take(&mut batch),
            };
            let sent = retry("send logs", || {
                agent.client.logs(&agent.agent_id, &attempt_id, &chunks)
            })
            .await;
            match sent {
                Ok(_) => {
                    // Remembered, so that a restarted agent numbers its chunks after these and
                    // resumes the log files where these end.
                    let line = format!(
                        "{} {} {}",
                        pending.seq, pending.stdout_bytes, pending.stderr_bytes
                    );
                    let _ = std::fs::write(log_seq_path(&agent.state_dir, &attempt_id), line);
                }
                Err(e) if is_stale(&e) => return last,
                Err(e) => {
                    tracing::warn!(attempt = %attempt_id, error = %e, "the exchange refused a batch of logs")
                }
            }
            continue;
        }
        if closed {
            return last;
        }
    }
}

/// Forwards an attempt's output to the exchange from where it was left; the task returns the
/// last chunk number sent once the job's output is closed and drained.
pub(crate) fn start_forwarder(
    agent: &Arc<Agent>,
    mut logs: tokio::sync::mpsc::Receiver<LogChunk>,
    note: &AttemptNote,
    resumed: bool,
) -> tokio::task::JoinHandle<u64> {
    let mut progress = saved_log_progress(&agent.state_dir, &note.attempt_id);
    progress.seq = progress.seq.max(note.log_seq);
    if resumed {
        // The agent that died may have had one batch (at most 200 chunks) acknowledged after it
        // last wrote its progress: number this agent's chunks past any it could have used, so
        // that none is mistaken for a repeat. The output of that batch may then appear twice;
        // none is lost.
        progress.seq += 1_000;
    }
    let agent = agent.clone();
    let attempt_id = note.attempt_id.clone();
    tokio::spawn(async move { forward_logs(agent, attempt_id, &mut logs, progress).await })
}
