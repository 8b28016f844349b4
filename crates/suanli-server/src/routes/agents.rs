//! The agent protocol. Agents connect outbound only: they register their measured capacity,
//! send heartbeats, long-poll for work, and report attempt states, logs and signed usage. Every
//! report names an attempt and is refused once that attempt is no longer current (fencing).

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ed25519_dalek::{Signature, VerifyingKey};
use suanli_api::{
    Agent, AgentId, AttemptEvent, AttemptId, ErrorBody, ErrorCode, HeartbeatRequest,
    HeartbeatResponse, List, LogBatch, PollRequest, PollResponse, PoolId, RegisterAgentRequest,
    UsageAck, UsageBatch,
};
use suanli_core::decide::access::{self, Action};
use suanli_core::decide::job::{decide_log_chunk, decide_report_size, ReportSize};
use suanli_core::decide::liveness::AgentState;
use suanli_core::decide::pool::{decide_agent_pool, Registrar};
use suanli_core::job::JobState;
use suanli_store::jobs::{AttemptReport, NewAgent, VerifiedUsage};
use suanli_store::{StoreError, Tx};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{AgentGeneration, ApiJson, IdPath, IdempotencyKey, Named, TwoIdPath};
use crate::routes::provider::{check_models, validate_nodes};
use crate::routes::{name, slug, text, zone};
use crate::{now_ms, wire, AppState};

/// The attempt a report names, checked where the store checks it: after the agent, so that a
/// report from no agent of the caller's answers 404 whatever attempt it names.
fn reported_attempt<'a>(
    tx: &mut Tx<'_>,
    org: &str,
    agent_id: &str,
    attempt_id: &'a Named<AttemptId>,
) -> Result<&'a str, StoreError> {
    match attempt_id.get() {
        Ok(attempt_id) => Ok(attempt_id.as_str()),
        Err(unknown) => {
            tx.get_agent(Some(org), agent_id)?;
            Err(unknown)
        }
    }
}

fn hex_bytes<const N: usize>(field: &str, s: &str) -> Result<[u8; N], ApiError> {
    let bad = || ApiError::invalid(field, format!("{field} is {N} bytes in hex"));
    if s.len() != N * 2 {
        return Err(bad());
    }
    let mut out = [0u8; N];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let text = std::str::from_utf8(chunk).map_err(|_| bad())?;
        out[i] = u8::from_str_radix(text, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// Registers an agent of the caller's provider org with the capacity it measured; a known key
/// re-attaches to its agent and pool, as a new generation (an older one's reports are refused
/// from then on). An agent reporting new capacity sends its own generation and keeps it.
#[utoipa::path(post, path = "/api/v1/agents", tag = "agents", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "retry key"),
        ("Suanli-Agent-Generation" = Option<u64>, Header, description = "the agent's own generation, when it registers again to report new capacity")),
    request_body = RegisterAgentRequest,
    responses((status = 201, body = Agent), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn register(
    State(state): State<AppState>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    AgentGeneration(generation): AgentGeneration,
    body: ApiJson<RegisterAgentRequest>,
) -> Result<Response, ApiError> {
    caller.may(Action::RunAgent)?;
    let mut req = body.value;
    req.name = name("name", &req.name)?;
    zone(&state, "zone", &req.zone)?;
    VerifyingKey::from_bytes(&hex_bytes::<32>("public_key_hex", &req.public_key_hex)?)
        .map_err(|_| ApiError::invalid("public_key_hex", "not an ed25519 public key"))?;
    if req.backend != "local" && req.backend != "slurm" {
        return Err(ApiError::invalid("backend", "backend is local or slurm"));
    }
    req.isolation = crate::routes::line("isolation", &req.isolation)?;
    if req.isolation.is_empty() {
        return Err(ApiError::invalid(
            "isolation",
            "isolation says how the agent isolates jobs",
        ));
    }
    slug("version", &req.version)?;
    if let Some(p) = &req.pool_id {
        crate::routes::id("pool_id", p)?;
    }
    // A pool id of another shape names no pool of the caller's: the store's answer for one.
    let pool_id = req
        .pool_id
        .as_deref()
        .map(|p| Named::<PoolId>::parse(p, StoreError::invalid("pool_id", "no such pool")));
    let asked = req.pool_id.clone();
    // An agent reports drained or down nodes with no capacity: they stop being sold.
    let nodes = validate_nodes(&req.nodes, Registrar::Agent)?;
    let agent = NewAgent {
        org_id: caller.org.id.clone(),
        name: req.name,
        zone: req.zone,
        public_key_hex: req.public_key_hex.to_ascii_lowercase(),
        backend: req.backend,
        isolation: req.isolation,
        version: req.version,
        nodes,
        pool_id: None,
        renews: generation,
    };
    let now = now_ms();
    let config = state.config.clone();
    state
        .mutate(
            caller.org_id(),
            key,
            body.request_sha256,
            StatusCode::CREATED,
            move |tx| {
                check_models(tx, &agent.nodes)?;
                let agent = match pool_id.as_ref().map(Named::get) {
                    None => agent.clone(),
                    Some(Ok(pool_id)) => NewAgent {
                        pool_id: Some(pool_id.to_string()),
                        ..agent.clone()
                    },
                    // An id of another shape names no pool: the core decides as for a missing
                    // one (a key registered already keeps its agent's pool, whatever pool_id
                    // says; a new key is refused).
                    Some(Err(_)) => {
                        let registered = tx
                            .list_agents(Some(&agent.org_id))?
                            .into_iter()
                            .find(|a| a.public_key_hex == agent.public_key_hex)
                            .map(|a| a.pool_id);
                        decide_agent_pool(
                            &agent.org_id,
                            registered.as_deref(),
                            Some((asked.as_deref().unwrap_or_default(), None)),
                        )?;
                        agent.clone()
                    }
                };
                Ok(wire::agent(&tx.register_agent(&agent, now)?, &config))
            },
        )
        .await
}

/// Agents: the caller's own (provider) or every agent (operator).
#[utoipa::path(get, path = "/api/v1/agents", tag = "agents", security(("bearer" = [])),
    responses((status = 200, body = List<Agent>), (status = 401, body = ErrorBody)))]
pub async fn list_agents(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<List<Agent>>, ApiError> {
    let org = (!access::reads_every_org(&caller.access())).then(|| caller.org.id.clone());
    let agents = state.read(move |tx| tx.list_agents(org.as_deref())).await?;
    Ok(Json(List {
        items: agents
            .iter()
            .map(|a| wire::agent(a, &state.config))
            .collect(),
    }))
}

/// A heartbeat: the attempts the agent runs; the answer names those it must stop.
#[utoipa::path(post, path = "/api/v1/agents/{agent_id}/heartbeat", tag = "agents", security(("bearer" = [])),
    params(("agent_id" = String, Path), ("Suanli-Agent-Generation" = Option<u64>, Header, description = "the generation this agent's registration answered; reports of an older one are refused")), request_body = HeartbeatRequest,
    responses((status = 200, body = HeartbeatResponse), (status = 404, body = ErrorBody)))]
pub async fn heartbeat(
    State(state): State<AppState>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    IdPath(agent_id): IdPath<AgentId>,
    AgentGeneration(generation): AgentGeneration,
    body: ApiJson<HeartbeatRequest>,
) -> Result<Response, ApiError> {
    let running = body.value.running;
    decide_report_size(ReportSize::Heartbeat(running.len()))?;
    for (i, attempt) in running.iter().enumerate() {
        crate::routes::id(&format!("running[{i}]"), attempt)?;
    }
    // What is no attempt id is no current attempt of this agent's: it must stop, as an attempt
    // the store does not know must. The store is asked about the others only.
    let attempts: Vec<String> = running
        .iter()
        .filter_map(|a| AttemptId::parse(a).ok().map(AttemptId::into_string))
        .collect();
    let org = caller.org.id.clone();
    let now = now_ms();
    let config = state.config.clone();
    state
        .mutate(
            caller.org_id(),
            key,
            body.request_sha256,
            StatusCode::OK,
            move |tx| {
                let agent_id = agent_id.get()?.as_str();
                tx.check_generation(&org, agent_id, generation)?;
                let (agent, stop) = tx.heartbeat(&org, agent_id, &attempts, now)?;
                let stop: std::collections::HashSet<&str> =
                    stop.iter().map(String::as_str).collect();
                Ok(HeartbeatResponse {
                    // In the order the agent named them, as the store answers.
                    stop: running
                        .iter()
                        .filter(|a| AttemptId::parse(a).is_err() || stop.contains(a.as_str()))
                        .cloned()
                        .collect(),
                    agent: wire::agent(&agent, &config),
                })
            },
        )
        .await
}

/// Long-polls for work: returns as soon as jobs are queued on the agent's pool, or after `wait_ms`.
#[utoipa::path(post, path = "/api/v1/agents/{agent_id}/poll", tag = "agents", security(("bearer" = [])),
    params(("agent_id" = String, Path), ("Suanli-Agent-Generation" = Option<u64>, Header, description = "the generation this agent's registration answered; reports of an older one are refused")), request_body = PollRequest,
    responses((status = 200, body = PollResponse), (status = 404, body = ErrorBody)))]
pub async fn poll(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(agent_id): IdPath<AgentId>,
    AgentGeneration(generation): AgentGeneration,
    body: ApiJson<PollRequest>,
) -> Result<Json<PollResponse>, ApiError> {
    let wait = Duration::from_millis(body.value.wait_ms.min(30_000));
    let max = body.value.max.unwrap_or(8).clamp(1, 64);
    let deadline = tokio::time::Instant::now() + wait;
    let mut fresh = true;
    loop {
        let notified = state.work.notified();
        let (org, agent) = (caller.org.id.clone(), agent_id.clone());
        let now = now_ms();
        let first = std::mem::replace(&mut fresh, false);
        let dispatched = state
            .store
            .writer()
            .submit(move |tx| {
                let agent = agent.get()?.as_str();
                tx.check_generation(&org, agent, generation)?;
                tx.dispatch(&org, agent, max, now, first)
            })
            .await
            .map_err(ApiError::from)?;
        if !dispatched.is_empty() || tokio::time::Instant::now() >= deadline {
            let mut assignments = Vec::with_capacity(dispatched.len());
            for d in dispatched {
                let task = serde_json::from_str(&d.job.spec).map_err(|e| {
                    ApiError::new(
                        ErrorCode::Internal,
                        format!("stored task of {}: {e}", d.job.id),
                    )
                })?;
                assignments.push(suanli_api::Assignment {
                    attempt_id: d.attempt_id,
                    job_id: d.job.id.clone(),
                    lease_id: d.lease.id.clone(),
                    task,
                    units: d.lease.units,
                    cpus: d.cpus,
                    memory_mib: d.memory_mib,
                    accelerators: d.accelerators,
                    time_limit_s: d.time_limit_s,
                    node_ids: d.lease.allocations.iter().map(|(n, _)| n.clone()).collect(),
                    class: d.lease.class.to_string(),
                    consumer_org_id: d.lease.consumer_org_id.clone(),
                });
            }
            if !assignments.is_empty() {
                state.logs.notify_waiters();
            }
            return Ok(Json(PollResponse { assignments }));
        }
        let _ = tokio::time::timeout_at(
            deadline.min(tokio::time::Instant::now() + Duration::from_millis(1_000)),
            notified,
        )
        .await;
    }
}

/// An attempt's state: pending in its backend's queue (with the reason), running, or how it ended.
#[utoipa::path(post, path = "/api/v1/agents/{agent_id}/attempts/{attempt_id}/events", tag = "agents",
    security(("bearer" = [])), params(("agent_id" = String, Path), ("attempt_id" = String, Path), ("Suanli-Agent-Generation" = Option<u64>, Header, description = "the generation this agent's registration answered; reports of an older one are refused")),
    request_body = AttemptEvent,
    responses((status = 200, body = suanli_api::Job), (status = 409, body = ErrorBody)))]
pub async fn event(
    State(state): State<AppState>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    TwoIdPath(agent_id, attempt_id): TwoIdPath<AgentId, AttemptId>,
    AgentGeneration(generation): AgentGeneration,
    body: ApiJson<AttemptEvent>,
) -> Result<Response, ApiError> {
    let mut ev = body.value;
    // `pending`: the backend holds the job in its queue (a Slurm job waiting for resources);
    // the job stays dispatched and its reason tells the consumer why.
    let new_state = if ev.state == "pending" {
        Some(JobState::Dispatched)
    } else {
        JobState::parse(&ev.state)
            .filter(|s| *s == JobState::Running || (s.is_final() && *s != JobState::Lost))
    }
    .ok_or_else(|| {
        ApiError::invalid(
            "state",
            "state is pending, running, succeeded, failed, cancelled or timed_out",
        )
    })?;
    if let Some(m) = &ev.message {
        ev.message = Some(text("message", m)?);
    }
    if let Some(b) = &ev.backend_id {
        slug("backend_id", b)?;
    }
    let org = caller.org.id.clone();
    let now = now_ms();
    let response = state
        .mutate(
            caller.org_id(),
            key,
            body.request_sha256,
            StatusCode::OK,
            move |tx| {
                let agent_id = agent_id.get()?.as_str();
                tx.check_generation(&org, agent_id, generation)?;
                let attempt_id = reported_attempt(tx, &org, agent_id, &attempt_id)?;
                let job = tx.attempt_event(
                    &org,
                    agent_id,
                    attempt_id,
                    &AttemptReport {
                        state: new_state,
                        exit_code: ev.exit_code,
                        message: ev.message.as_deref(),
                        backend_id: ev.backend_id.as_deref(),
                        started_ms: ev.started_ms,
                        ended_ms: ev.ended_ms,
                    },
                    now,
                )?;
                Ok(wire::job(&job))
            },
        )
        .await?;
    state.logs.notify_waiters();
    // An ended job frees its lease for the next queued job.
    state.work.notify_waiters();
    Ok(response)
}

/// Signed usage of an attempt. Each record's signature is checked against the agent's key; a
/// record already counted (same sequence number) is acknowledged again but not counted twice.
/// A record that would take the attempt past what time allows (its units × the time since its
/// dispatch, bounded by its time limit and its lease's end, with 2 s of clock skew) is refused
/// with 422 `usage_refused`, never charged, and counted against the agent for the operator to
/// see; the batch's other records are counted.
#[utoipa::path(post, path = "/api/v1/agents/{agent_id}/attempts/{attempt_id}/usage", tag = "agents",
    security(("bearer" = [])), params(("agent_id" = String, Path), ("attempt_id" = String, Path), ("Suanli-Agent-Generation" = Option<u64>, Header, description = "the generation this agent's registration answered; reports of an older one are refused")),
    request_body = UsageBatch,
    responses((status = 200, body = UsageAck), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    TwoIdPath(agent_id, attempt_id): TwoIdPath<AgentId, AttemptId>,
    AgentGeneration(generation): AgentGeneration,
    body: ApiJson<UsageBatch>,
) -> Result<Json<UsageAck>, ApiError> {
    let records = body.value.records;
    decide_report_size(ReportSize::Usage(records.len()))?;
    let (org, id, att) = (caller.org.id.clone(), agent_id.clone(), attempt_id.clone());
    let (agent, job_id) = state
        .read(move |tx| {
            let agent = tx.get_agent(Some(&org), id.get()?.as_str())?;
            let job = tx.job_of_attempt(att.get()?.as_str())?;
            Ok((agent, job))
        })
        .await?;
    // The read found both: they are ids of their kinds.
    let (agent_id, attempt_id) = (agent_id.get()?.clone(), attempt_id.get()?.clone());
    let key = VerifyingKey::from_bytes(&hex_bytes::<32>("public_key_hex", &agent.public_key_hex)?)
        .map_err(|_| ApiError::new(ErrorCode::Internal, "stored agent key is invalid"))?;
    let mut verified = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        let field = format!("records[{i}].signature_hex");
        let sig = Signature::from_bytes(&hex_bytes::<64>(&field, &r.signature_hex)?);
        let message = suanli_api::usage_message(
            &job_id,
            attempt_id.as_str(),
            r.seq,
            r.unit_ms,
            r.cpu_ms,
            r.peak_memory_mib,
        );
        key.verify_strict(message.as_bytes(), &sig).map_err(|_| {
            ApiError::field(
                ErrorCode::InvalidSignature,
                field,
                "the signature does not match the agent's key",
            )
        })?;
        if r.seq == 0 || r.seq > i64::MAX as u64 {
            return Err(ApiError::invalid(
                format!("records[{i}].seq"),
                format!("records[{i}].seq must be between 1 and {}", i64::MAX),
            ));
        }
        if r.unit_ms > i64::MAX as u64 {
            return Err(ApiError::invalid(
                format!("records[{i}].unit_ms"),
                format!("records[{i}].unit_ms must be at most {}", i64::MAX),
            ));
        }
        verified.push(VerifiedUsage {
            seq: r.seq,
            unit_ms: r.unit_ms,
            cpu_ms: r.cpu_ms,
            peak_memory_mib: r.peak_memory_mib,
            signature_hex: r.signature_hex.clone(),
        });
    }
    let org = caller.org.id.clone();
    let now = now_ms();
    let outcome = state
        .store
        .writer()
        .submit(move |tx| {
            tx.check_generation(&org, agent_id.as_str(), generation)?;
            tx.record_usage(&org, agent_id.as_str(), attempt_id.as_str(), &verified, now)
        })
        .await
        .map_err(ApiError::from)?;
    state
        .metrics
        .usage_records
        .fetch_add(u64::from(outcome.accepted), Ordering::Relaxed);
    state
        .metrics
        .usage_duplicates
        .fetch_add(u64::from(outcome.duplicates), Ordering::Relaxed);
    if let Some(first) = outcome.refused.first() {
        state
            .metrics
            .usage_refused
            .fetch_add(outcome.refused.len() as u64, Ordering::Relaxed);
        tracing::warn!(agent = %caller.org.id, seq = first.seq, reason = %first.reason, "usage refused: claimed more than time allows");
        let others = if outcome.accepted + outcome.duplicates > 0 {
            format!(
                "; the batch's other {} records were counted",
                outcome.accepted + outcome.duplicates
            )
        } else {
            String::new()
        };
        return Err(ApiError::field(
            ErrorCode::UsageRefused,
            format!("records[{}].unit_ms", first.index),
            format!(
                "usage refused and not charged (seq {}): {}{others}",
                first.seq, first.reason
            ),
        ));
    }
    Ok(Json(UsageAck {
        accepted: outcome.accepted,
        duplicates: outcome.duplicates,
        unit_ms: outcome.unit_ms,
    }))
}

/// Output of an attempt.
#[utoipa::path(post, path = "/api/v1/agents/{agent_id}/attempts/{attempt_id}/logs", tag = "agents",
    security(("bearer" = [])), params(("agent_id" = String, Path), ("attempt_id" = String, Path), ("Suanli-Agent-Generation" = Option<u64>, Header, description = "the generation this agent's registration answered; reports of an older one are refused")),
    request_body = LogBatch,
    responses((status = 200, description = "stored"), (status = 409, body = ErrorBody)))]
pub async fn logs(
    State(state): State<AppState>,
    caller: Caller,
    TwoIdPath(agent_id, attempt_id): TwoIdPath<AgentId, AttemptId>,
    AgentGeneration(generation): AgentGeneration,
    body: ApiJson<LogBatch>,
) -> Result<Response, ApiError> {
    let chunks = body.value.chunks;
    decide_report_size(ReportSize::Logs(chunks.len()))?;
    let max_log_bytes = state.config.max_log_bytes_per_job;
    let mut rows = Vec::with_capacity(chunks.len());
    for (i, c) in chunks.into_iter().enumerate() {
        decide_log_chunk(i, &c.stream, c.seq, c.data.len())?;
        rows.push((c.seq, c.stream, c.data));
    }
    let org = caller.org.id.clone();
    let now = now_ms();
    let stored = state
        .store
        .writer()
        .submit(move |tx| {
            let agent_id = agent_id.get()?.as_str();
            tx.check_generation(&org, agent_id, generation)?;
            let attempt_id = reported_attempt(tx, &org, agent_id, &attempt_id)?;
            tx.append_logs(&org, agent_id, attempt_id, &rows, max_log_bytes, now)
        })
        .await
        .map_err(ApiError::from)?;
    state.logs.notify_waiters();
    Ok(Json(serde_json::json!({ "stored": stored })).into_response())
}

/// Largest body of one outputs upload.
pub const MAX_OUTPUT_BODY_BYTES: usize = 12 * 1024 * 1024;
/// Most output bytes a job keeps: the market's (`suanli_core::decide::job`).
pub use suanli_core::decide::job::MAX_OUTPUT_BYTES_PER_JOB;

/// Output files of an attempt, collected by the agent when the job ended (before it reports the
/// end). Kept with the job, readable by the job's org only.
#[utoipa::path(post, path = "/api/v1/agents/{agent_id}/attempts/{attempt_id}/outputs", tag = "agents",
    security(("bearer" = [])), params(("agent_id" = String, Path), ("attempt_id" = String, Path), ("Suanli-Agent-Generation" = Option<u64>, Header, description = "the generation this agent's registration answered; reports of an older one are refused")),
    request_body = suanli_api::OutputBatch,
    responses((status = 200, description = "stored"), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn outputs(
    State(state): State<AppState>,
    caller: Caller,
    TwoIdPath(agent_id, attempt_id): TwoIdPath<AgentId, AttemptId>,
    AgentGeneration(generation): AgentGeneration,
    body: ApiJson<suanli_api::OutputBatch>,
) -> Result<Response, ApiError> {
    use base64::Engine;
    let files = body.value.files;
    decide_report_size(ReportSize::Outputs(files.len()))?;
    let mut rows = Vec::with_capacity(files.len());
    for (i, f) in files.into_iter().enumerate() {
        crate::routes::jobs::relative_path(&format!("files[{i}].path"), &f.path)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&f.content_base64)
            .map_err(|e| {
                ApiError::invalid(
                    format!("files[{i}].content_base64"),
                    format!("not base64: {e}"),
                )
            })?;
        rows.push((f.path, bytes.len() as u64, f.content_base64));
    }
    let org = caller.org.id.clone();
    let now = now_ms();
    let stored = state
        .store
        .writer()
        .submit(move |tx| {
            let agent_id = agent_id.get()?.as_str();
            tx.check_generation(&org, agent_id, generation)?;
            let attempt_id = reported_attempt(tx, &org, agent_id, &attempt_id)?;
            tx.put_outputs(
                &org,
                agent_id,
                attempt_id,
                &rows,
                MAX_OUTPUT_BYTES_PER_JOB,
                now,
            )
        })
        .await
        .map_err(ApiError::from)?;
    Ok(Json(serde_json::json!({ "stored": stored })).into_response())
}

/// Prometheus text metrics: agents and jobs by state, and the monitor's counters. Market-wide
/// figures: the operator's token only (Prometheus sends it with `authorization:
/// credentials_file`).
pub async fn metrics(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.may(Action::ReadMetrics)?;
    let (agents, jobs) = state
        .read(|tx| {
            let agents = tx.list_agents(None)?;
            let jobs = tx.count_jobs_by_state()?;
            Ok((agents, jobs))
        })
        .await?;
    let mut out = String::new();
    out.push_str("# HELP suanli_agents Agents by state.\n# TYPE suanli_agents gauge\n");
    for state in [AgentState::Alive, AgentState::Suspect, AgentState::Lost] {
        let n = agents.iter().filter(|a| a.state == state).count();
        let s = state.as_str();
        out.push_str(&format!("suanli_agents{{state=\"{s}\"}} {n}\n"));
    }
    out.push_str("# HELP suanli_jobs Jobs by state.\n# TYPE suanli_jobs gauge\n");
    for s in JobState::ALL {
        let n = jobs
            .iter()
            .find(|(k, _)| k == s.as_str())
            .map(|(_, n)| *n)
            .unwrap_or(0);
        out.push_str(&format!("suanli_jobs{{state=\"{}\"}} {n}\n", s.as_str()));
    }
    let m = &state.metrics;
    for (name, help, v) in [
        (
            "suanli_monitor_self_suspicions_total",
            "Times more than half of the agents went silent at once and nobody was declared lost.",
            &m.self_suspicions,
        ),
        (
            "suanli_agents_lost_total",
            "Agents declared lost.",
            &m.agents_lost,
        ),
        (
            "suanli_jobs_requeued_total",
            "Restartable jobs re-queued after their agent was lost.",
            &m.jobs_requeued,
        ),
        (
            "suanli_jobs_lost_total",
            "Jobs that ended lost with their agent.",
            &m.jobs_lost,
        ),
        (
            "suanli_usage_records_total",
            "Usage records counted.",
            &m.usage_records,
        ),
        (
            "suanli_usage_duplicates_total",
            "Usage records received again and not counted twice.",
            &m.usage_duplicates,
        ),
        (
            "suanli_usage_refused_total",
            "Usage records refused (never charged) for claiming more than time allows.",
            &m.usage_refused,
        ),
    ] {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
            v.load(Ordering::Relaxed)
        ));
    }
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
        .into_response())
}

/// Watches agents' heartbeats: suspect, then lost (their attempts lost, restartable jobs queued
/// again), unless the exchange itself looks like the one that went silent.
pub async fn monitor_service(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_suspecting = false;
    loop {
        tick.tick().await;
        let now = now_ms();
        let suspect = state.config.suspect_after.as_millis() as i64;
        let lost = state.config.lost_after.as_millis() as i64;
        let since = state.started_ms;
        let outcome = match state
            .store
            .writer()
            .submit(move |tx| tx.monitor_agents(now, suspect, lost, since))
            .await
        {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "monitor: could not check agents");
                continue;
            }
        };
        if outcome.self_suspected {
            if !was_suspecting {
                state
                    .metrics
                    .self_suspicions
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    silent = outcome.silent_agents,
                    live = outcome.live_agents,
                    "more than half of the agents went silent at once: suspecting a partition or a stall on the \
                     exchange's side; no agent is declared lost"
                );
            }
            was_suspecting = true;
            continue;
        }
        was_suspecting = false;
        for a in &outcome.newly_suspect {
            tracing::warn!(agent = %a, "agent is suspect: no heartbeat");
        }
        for a in &outcome.newly_lost {
            tracing::warn!(agent = %a, "agent is lost: its running attempts are lost");
        }
        state
            .metrics
            .agents_lost
            .fetch_add(outcome.newly_lost.len() as u64, Ordering::Relaxed);
        state
            .metrics
            .jobs_requeued
            .fetch_add(outcome.requeued_jobs.len() as u64, Ordering::Relaxed);
        state
            .metrics
            .jobs_lost
            .fetch_add(outcome.lost_jobs.len() as u64, Ordering::Relaxed);
        if !outcome.requeued_jobs.is_empty() || !outcome.lost_jobs.is_empty() {
            state.work.notify_waiters();
        }
        if !outcome.requeued_jobs.is_empty() || !outcome.lost_jobs.is_empty() {
            state.logs.notify_waiters();
        }
    }
}
