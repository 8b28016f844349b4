//! What the agent's tasks share: the client, the agent's identity, the runner and the attempts
//! being supervised; and how calls to the exchange are retried.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use suanli_client::{Client, ClientError};
use tokio::sync::watch;

use crate::runner::Runner;

/// Shared state of the agent's loops.
pub(crate) struct Agent {
    pub client: Client,
    pub agent_id: String,
    pub pool_id: String,
    pub key: SigningKey,
    pub runner: Arc<dyn Runner>,
    pub state_dir: PathBuf,
    pub usage_interval: Duration,
    /// Attempts being supervised, with the switch that tells each to stop.
    pub running: Mutex<HashMap<String, watch::Sender<bool>>>,
    /// Set when the exchange refuses this agent's reports because its identity registered again
    /// (another agent with the same key and state): this one stops.
    pub superseded: OnceLock<String>,
    pub stop: tokio::sync::Notify,
    /// The lock on the state directory, held while the agent runs.
    pub _state_lock: std::fs::File,
}

impl Agent {
    /// Notes `e` when it says this agent was superseded; true then.
    pub fn superseded_by(&self, e: &ClientError) -> bool {
        if e.code() != Some("agent_superseded") {
            return false;
        }
        let _ = self.superseded.set(e.to_string());
        self.stop.notify_waiters();
        true
    }

    /// The error an agent stops with once it was superseded.
    pub fn superseded_error(&self) -> anyhow::Error {
        anyhow::anyhow!(
            "this agent stops: {}. Another agent registered with the same identity (the same \
             config started twice, or a copied state directory); its jobs are that agent's now",
            self.superseded.get().map_or("superseded", String::as_str)
        )
    }

    /// Starts supervising an attempt: returns the switch that tells its supervisor to stop.
    pub fn track(&self, attempt_id: &str) -> watch::Receiver<bool> {
        let (stop_tx, stop_rx) = watch::channel(false);
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(attempt_id.to_owned(), stop_tx);
        stop_rx
    }

    /// The attempts being supervised.
    pub fn running_ids(&self) -> Vec<String> {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }
}

/// Retries a call while the exchange cannot be reached or is unavailable; gives up on a definite
/// answer. Backoff doubles up to 10 s.
pub(crate) async fn retry<T, F, Fut>(what: &str, mut f: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let mut delay = Duration::from_millis(200);
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e @ ClientError::Api { status, .. }) if status != 503 => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "{what}: exchange unreachable; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Whether the exchange refused a report because the attempt is no longer this agent's.
pub(crate) fn is_stale(e: &ClientError) -> bool {
    matches!(e.code(), Some("stale_attempt") | Some("not_found"))
}
