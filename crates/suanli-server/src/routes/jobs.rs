//! Jobs: what consumers run on their leases, their state and their logs.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use suanli_api::{
    CreateJobRequest, ErrorBody, Job, JobId, JobListParams, LeaseId, List, LogChunk, LogPage,
    LogParams, TaskSpec,
};
use suanli_core::decide::access::Action;
use suanli_core::decide::job::{decide_env_value, decide_task, TaskMeasure};
use suanli_core::job::JobState;
use suanli_store::jobs::NewJob;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, BodylessHash, IdPath, IdempotencyKey};
use crate::routes::{limit, name};
use crate::{now_ms, wire, AppState};

/// Largest uploaded working directory, decoded (the request body is limited to 1 MiB), and the
/// longest `setup` or `run` script: the market's (`suanli_core::decide::job`).
pub use suanli_core::decide::job::{MAX_SCRIPT_BYTES, MAX_WORKDIR_BYTES};

/// A path inside a job's directory: relative, no `..`, no control characters. Output paths are
/// shown to the consumer as file names, and sent by the provider's agent: no bidi controls, and
/// every part of the path has something visible.
pub fn relative_path(field: &str, p: &str) -> Result<(), ApiError> {
    let bad = p.is_empty()
        || p.len() > 255
        || p.starts_with('/')
        || p.split('/').any(|c| {
            c == ".."
                || (c.is_empty() && !p.ends_with('/'))
                || (!c.is_empty() && !suanli_core::validate::has_visible(c))
        })
        || p.chars().any(|c| {
            c.is_control()
                || suanli_core::validate::is_bidi_control(c)
                || matches!(c, '\u{2028}' | '\u{2029}')
        });
    if bad {
        return Err(ApiError::invalid(
            field,
            format!("{p:?} must be a relative path inside the job directory"),
        ));
    }
    Ok(())
}

/// Checks a task before it is queued: parses its names and paths here, and has the core decide
/// its sizes ([`decide_task`]) where each is met, so the first fault in the request is refused.
/// A task's name is normalised in place (see `suanli_core::validate::name`).
pub fn validate_task(task: &mut TaskSpec) -> Result<(), ApiError> {
    if let Some(n) = &task.name {
        task.name = Some(name("task.name", n)?);
    }
    if !suanli_core::validate::has_visible(&task.run) {
        return Err(ApiError::invalid(
            "task.run",
            "run holds the commands of the job",
        ));
    }
    decide_task(TaskMeasure::Scripts {
        run_bytes: task.run.len(),
        setup_bytes: task.setup.as_ref().map(String::len),
    })?;
    decide_task(TaskMeasure::EnvVars(task.env.len()))?;
    for (k, v) in &task.env {
        let ok_name = !k.is_empty()
            && k.len() <= 128
            && !k.starts_with(|c: char| c.is_ascii_digit())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok_name {
            return Err(ApiError::invalid(
                format!("task.env.{k}"),
                "variable names are letters, digits and _",
            ));
        }
        decide_env_value(k, v.len())?;
        if v.contains('\0') {
            return Err(ApiError::invalid(
                format!("task.env.{k}"),
                "values are at most 4 KiB, without NUL",
            ));
        }
    }
    let mut total = 0usize;
    for (i, f) in task.workdir.iter().enumerate() {
        relative_path(&format!("task.workdir[{i}].path"), &f.path)?;
        total += f.content_base64.len() / 4 * 3;
        if f.mode.is_some_and(|m| m > 0o7777) {
            return Err(ApiError::invalid(
                format!("task.workdir[{i}].mode"),
                "mode is Unix permission bits",
            ));
        }
    }
    decide_task(TaskMeasure::Workdir {
        bytes: total,
        files: task.workdir.len(),
    })?;
    for (i, o) in task.outputs.iter().enumerate() {
        relative_path(&format!("task.outputs[{i}]"), o)?;
    }
    decide_task(TaskMeasure::OutputPaths(task.outputs.len()))?;
    decide_task(TaskMeasure::TimeLimit(task.time_limit_s))?;
    Ok(())
}

/// Queues a job on one of the caller's leases. The lease's pool must be served by an agent.
#[utoipa::path(post, path = "/api/v1/leases/{lease_id}/jobs", tag = "jobs", security(("bearer" = [])),
    params(("lease_id" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "retry key")),
    request_body = CreateJobRequest,
    responses((status = 201, body = Job), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn create_job(
    State(state): State<AppState>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    IdPath(lease_id): IdPath<LeaseId>,
    body: ApiJson<CreateJobRequest>,
) -> Result<Response, ApiError> {
    caller.may(Action::RunJob)?;
    let mut task = body.value.task;
    validate_task(&mut task)?;
    let spec =
        serde_json::to_string(&task).map_err(|e| ApiError::invalid("task", e.to_string()))?;
    let org = caller.org.id.clone();
    let job_on = move |lease_id: &LeaseId| NewJob {
        org_id: org.clone(),
        lease_id: lease_id.to_string(),
        name: task.name.clone().unwrap_or_else(|| "job".into()),
        spec: spec.clone(),
        restartable: task.restartable,
        time_limit_s: task.time_limit_s,
    };
    let now = now_ms();
    let response = state
        .mutate(
            caller.org_id(),
            key,
            body.request_sha256,
            StatusCode::CREATED,
            move |tx| Ok(wire::job(&tx.create_job(&job_on(lease_id.get()?), now)?)),
        )
        .await?;
    state.work.notify_waiters();
    Ok(response)
}

/// The caller's jobs, newest first.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", security(("bearer" = [])), params(JobListParams),
    responses((status = 200, body = List<Job>), (status = 400, body = ErrorBody)))]
pub async fn list_jobs(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<JobListParams>,
) -> Result<Json<List<Job>>, ApiError> {
    if let Some(s) = &params.state {
        if JobState::parse(s).is_none() {
            return Err(ApiError::field(
                suanli_api::ErrorCode::InvalidQuery,
                "state",
                "unknown job state",
            ));
        }
    }
    if let Some(l) = &params.lease_id {
        crate::routes::query_id("lease_id", l)?;
    }
    let limit = limit(params.limit)?;
    let lease_id = match params.lease_id.as_deref().map(LeaseId::parse) {
        None => None,
        Some(Ok(lease_id)) => Some(lease_id),
        // No job is on what is no lease id: the answer the store gives for such a lease.
        Some(Err(_)) => return Ok(Json(List { items: Vec::new() })),
    };
    let org = caller.org.id.clone();
    let jobs = state
        .read(move |tx| {
            tx.list_jobs(
                &org,
                lease_id.as_ref().map(LeaseId::as_str),
                params.state.as_deref(),
                limit,
            )
        })
        .await?;
    Ok(Json(List {
        items: jobs.iter().map(wire::job).collect(),
    }))
}

/// One of the caller's jobs with its attempts.
#[utoipa::path(get, path = "/api/v1/jobs/{job_id}", tag = "jobs", security(("bearer" = [])),
    params(("job_id" = String, Path)), responses((status = 200, body = Job), (status = 404, body = ErrorBody)))]
pub async fn get_job(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(job_id): IdPath<JobId>,
) -> Result<Json<Job>, ApiError> {
    let org = caller.org.id.clone();
    let job = state
        .read(move |tx| tx.get_job(&org, job_id.get()?.as_str()))
        .await?;
    Ok(Json(wire::job(&job)))
}

/// Cancels a job; its agent stops the process tree at its next heartbeat.
#[utoipa::path(post, path = "/api/v1/jobs/{job_id}/cancel", tag = "jobs", security(("bearer" = [])),
    params(("job_id" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "retry key")),
    responses((status = 200, body = Job), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn cancel_job(
    State(state): State<AppState>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    BodylessHash(hash): BodylessHash,
    IdPath(job_id): IdPath<JobId>,
) -> Result<Response, ApiError> {
    let org = caller.org.id.clone();
    let now = now_ms();
    let response = state
        .mutate(caller.org_id(), key, hash, StatusCode::OK, move |tx| {
            Ok(wire::job(&tx.cancel_job(
                &org,
                job_id.get()?.as_str(),
                now,
            )?))
        })
        .await?;
    state.logs.notify_waiters();
    // A cancelled job frees its lease for the next queued job.
    state.work.notify_waiters();
    Ok(response)
}

/// A job's output after position `after`; with `wait_ms`, waits for new output (long poll).
#[utoipa::path(get, path = "/api/v1/jobs/{job_id}/logs", tag = "jobs", security(("bearer" = [])),
    params(("job_id" = String, Path), LogParams),
    responses((status = 200, body = LogPage), (status = 404, body = ErrorBody)))]
pub async fn job_logs(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(job_id): IdPath<JobId>,
    ApiQuery(params): ApiQuery<LogParams>,
) -> Result<Json<LogPage>, ApiError> {
    let limit = limit(params.limit)?;
    let after = params.after.unwrap_or(0);
    let wait = Duration::from_millis(params.wait_ms.unwrap_or(0).min(30_000));
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // Register for wake-ups before reading, so nothing that lands in between is missed.
        let notified = state.logs.notified();
        let (org, id) = (caller.org.id.clone(), job_id.clone());
        let (job, logs) = state
            .read(move |tx| tx.job_logs(&org, id.get()?.as_str(), after, limit))
            .await?;
        let finished = job.state.is_final();
        if !logs.is_empty() || finished || tokio::time::Instant::now() >= deadline {
            let next_after = logs.last().map(|l| l.seq).unwrap_or(after);
            return Ok(Json(LogPage {
                done: finished && logs.len() < limit as usize,
                next_after,
                state: job.state.as_str().into(),
                chunks: logs
                    .into_iter()
                    .map(|l| LogChunk {
                        seq: l.seq,
                        attempt_id: l.attempt_id,
                        stream: l.stream,
                        data: l.data,
                        created_at: wire::time(l.created_ms),
                    })
                    .collect(),
            }));
        }
        let _ = tokio::time::timeout_at(
            deadline.min(tokio::time::Instant::now() + Duration::from_millis(500)),
            notified,
        )
        .await;
    }
}

/// The files a job left in its output paths.
#[utoipa::path(get, path = "/api/v1/jobs/{job_id}/outputs", tag = "jobs", security(("bearer" = [])),
    params(("job_id" = String, Path)),
    responses((status = 200, body = List<suanli_api::OutputFile>), (status = 404, body = ErrorBody)))]
pub async fn list_outputs(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(job_id): IdPath<JobId>,
) -> Result<Json<List<suanli_api::OutputFile>>, ApiError> {
    let org = caller.org.id.clone();
    let files = state
        .read(move |tx| tx.list_outputs(&org, job_id.get()?.as_str()))
        .await?;
    Ok(Json(List {
        items: files
            .into_iter()
            .map(|(path, size_bytes)| suanli_api::OutputFile { path, size_bytes })
            .collect(),
    }))
}

/// One output file of a job, as bytes.
#[utoipa::path(get, path = "/api/v1/jobs/{job_id}/outputs/{path}", tag = "jobs", security(("bearer" = [])),
    params(("job_id" = String, Path), ("path" = String, Path)),
    responses((status = 200, description = "the file's bytes", content_type = "application/octet-stream"),
        (status = 404, body = ErrorBody)))]
pub async fn get_output(
    State(state): State<AppState>,
    caller: Caller,
    crate::extract::IdAndFilePath(job_id, path): crate::extract::IdAndFilePath<JobId>,
) -> Result<Response, ApiError> {
    use axum::response::IntoResponse;
    use base64::Engine;
    let org = caller.org.id.clone();
    let content = state
        .read(move |tx| tx.get_output(&org, job_id.get()?.as_str(), &path))
        .await?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(content)
        .map_err(|e| {
            ApiError::new(
                suanli_api::ErrorCode::Internal,
                format!("stored output: {e}"),
            )
        })?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        bytes,
    )
        .into_response())
}
