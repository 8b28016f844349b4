//! The agent's loop against the exchange (`suanli agent`): a provider's agent in front of this
//! machine or cluster, driving one [`Runner`] (the local or the Slurm backend).
//!
//! It connects outbound only. It registers the runner's capacity with an ed25519 key of its own
//! (created on first start in the state directory), then runs three loops: heartbeats (which also
//! tell it which attempts to stop), a long poll for work, and one supervisor per attempt that
//! starts the job on the runner, streams its logs, reports signed usage every few seconds and its
//! final state. Every report is retried until the exchange answers; a report the exchange refuses
//! as stale means the attempt is no longer ours, and the job is stopped. After a restart the agent
//! finds its jobs again through the runner and carries on, or reports how they ended. A runner
//! that keeps the pool's offers (Slurm) has them brought in line at start and whenever its
//! capacity, re-read every so often, changes.
//!
//! - [`config`]: the config file; `state`: the key, the lock and the attempts' notes;
//!   `shared`: what the loops share.
//! - `supervise`: the supervisor of an attempt; `report` and `logs`: what it sends.
//! - `offers`: the nodes and offers; `sweep`: old job directories.
//!
//! Start with [`prepare`], build the runner, then [`run`].

pub mod config;
mod logs;
mod offers;
mod report;
mod shared;
mod state;
mod supervise;
mod sweep;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ed25519_dalek::SigningKey;
use suanli_api::{HeartbeatRequest, PollRequest, RegisterAgentRequest};
use suanli_client::{Client, ClientError};

use crate::runner::Runner;
pub use config::AgentConfig;
use shared::{retry, Agent};
use state::{hex, load_or_create_key, lock_state_dir, notes_dir};

/// An agent ready to build its runner: its state directory made and locked, its token and key
/// read. Separate from [`run`] so that a second agent on the same state directory stops at the
/// lock before its runner touches anything.
pub struct Prepared {
    config: AgentConfig,
    client: Client,
    key: SigningKey,
    state_lock: std::fs::File,
}

impl Prepared {
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }
}

/// Makes the state directory (the key and the attempts' notes the agent's alone, job directories
/// reachable by jobs run as another user), takes its lock, reads the token and the key (created
/// on first start).
pub fn prepare(config: AgentConfig) -> Result<Prepared> {
    std::fs::create_dir_all(notes_dir(&config.state_dir))
        .with_context(|| format!("create {}", config.state_dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Jobs run as another user must be able to pass through to their job directories
        // (search, not list); the key and the attempt notes stay the agent's alone.
        std::fs::set_permissions(&config.state_dir, std::fs::Permissions::from_mode(0o711))?;
        std::fs::set_permissions(
            notes_dir(&config.state_dir),
            std::fs::Permissions::from_mode(0o700),
        )?;
    }
    let state_lock = lock_state_dir(&config.state_dir)?;
    let token = config.token()?;
    let key = load_or_create_key(&config.state_dir)?;
    let client = Client::new(config.server.trim_end_matches('/').to_owned(), Some(token));
    Ok(Prepared {
        config,
        client,
        key,
        state_lock,
    })
}

/// Runs the agent with `runner` until it is refused or superseded.
pub async fn run(prepared: Prepared, runner: Arc<dyn Runner>) -> Result<()> {
    let Prepared {
        config,
        client,
        key,
        state_lock,
    } = prepared;
    let isolation = runner.isolation();
    let capacity = runner.capacity().await?;
    let request = RegisterAgentRequest {
        name: config.name.clone(),
        zone: config.zone.clone(),
        public_key_hex: hex(&key.verifying_key().to_bytes()),
        backend: config.backend.clone(),
        isolation: isolation.summary.chars().take(500).collect(),
        version: env!("CARGO_PKG_VERSION").into(),
        nodes: capacity.nodes,
        pool_id: config.pool_id.clone(),
    };
    let registered = retry("register", || client.register_agent(&request, None))
        .await
        .context("register with the exchange")?;
    println!(
        "agent {} serving pool {} on {} ({}); isolation: {}",
        registered.id,
        registered.pool_id,
        config.server,
        offers::nodes_text(&request.nodes),
        isolation.summary
    );
    for note in &isolation.notes {
        println!("  note: {note}");
    }
    if let Some(offers) = capacity.offers {
        offers::sync_offers(&client, &registered.pool_id, offers)
            .await
            .context("publish the partitions' offers")?;
    }
    // Every report says which registration it comes from: a later one (the same identity started
    // elsewhere) fences this agent out.
    let client = client.with_agent_generation(registered.generation);
    let agent = Arc::new(Agent {
        client,
        agent_id: registered.id,
        pool_id: registered.pool_id,
        key,
        runner,
        state_dir: config.state_dir.clone(),
        usage_interval: Duration::from_secs(config.usage_interval_s.max(1)),
        running: Mutex::new(HashMap::new()),
        superseded: std::sync::OnceLock::new(),
        stop: tokio::sync::Notify::new(),
        _state_lock: state_lock,
    });
    if let Some(every) = agent.runner.capacity_refresh() {
        tokio::spawn(offers::capacity_loop(agent.clone(), every, request));
    }
    supervise::reattach_all(&agent).await;
    if config.keep_finished_jobs_h > 0 {
        let keep = Duration::from_secs(config.keep_finished_jobs_h.saturating_mul(3600));
        tokio::spawn(sweep::sweep_loop(agent.clone(), config.jobs_dir(), keep));
    }
    let heartbeat_every = Duration::from_secs(agent_heartbeat(&agent).await);
    tokio::spawn(heartbeat_loop(agent.clone(), heartbeat_every));
    poll_loop(agent).await
}

/// The heartbeat interval the exchange asks for (first heartbeat).
async fn agent_heartbeat(agent: &Agent) -> u64 {
    match agent
        .client
        .heartbeat(
            &agent.agent_id,
            &HeartbeatRequest {
                running: agent.running_ids(),
            },
        )
        .await
    {
        Ok(r) => r.agent.heartbeat_interval_s.max(1),
        Err(_) => 5,
    }
}

async fn heartbeat_loop(agent: Arc<Agent>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let request = HeartbeatRequest {
            running: agent.running_ids(),
        };
        match agent.client.heartbeat(&agent.agent_id, &request).await {
            Ok(r) => {
                for attempt in r.stop {
                    tracing::warn!(attempt = %attempt, "the exchange says this attempt is over: stopping it");
                    if let Some(stop) = agent
                        .running
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(&attempt)
                    {
                        stop.send_replace(true);
                    }
                }
            }
            Err(e) if agent.superseded_by(&e) => return,
            Err(e) => tracing::warn!(error = %e, "heartbeat failed; jobs keep running"),
        }
    }
}

async fn poll_loop(agent: Arc<Agent>) -> Result<()> {
    let mut delay = Duration::from_millis(200);
    loop {
        if agent.superseded.get().is_some() {
            return Err(agent.superseded_error());
        }
        let request = PollRequest {
            wait_ms: 20_000,
            max: Some(16),
        };
        let polled = tokio::select! {
            p = agent.client.poll(&agent.agent_id, &request) => p,
            () = agent.stop.notified() => return Err(agent.superseded_error()),
        };
        match polled {
            Ok(r) => {
                delay = Duration::from_millis(200);
                for a in r.assignments {
                    let stop = agent.track(&a.attempt_id);
                    tokio::spawn(supervise::supervise_new(agent.clone(), a, stop));
                }
            }
            Err(e) if agent.superseded_by(&e) => return Err(agent.superseded_error()),
            Err(
                e @ ClientError::Api {
                    status: 401 | 403 | 404,
                    ..
                },
            ) => {
                bail!("the exchange refused this agent: {e}");
            }
            Err(e) => {
                tracing::warn!(error = %e, "poll failed; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}
