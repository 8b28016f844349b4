//! One supervisor per attempt: it starts the job on the runner (or takes over a job found again
//! after a restart), tells the exchange where the job stands, forwards its output, reports signed
//! usage every few seconds, stops the job when the exchange says so or refuses the attempt, and
//! reports its outputs and end.

use std::sync::Arc;

use suanli_api::Assignment;
use suanli_client::ClientError;
use tokio::sync::watch;

use super::logs::start_forwarder;
use super::report::{finish, forget, report_outcome, report_state, report_usage};
use super::shared::{is_stale, Agent};
use super::state::{notes_dir, save_note, saved_log_progress, AttemptNote};
use crate::job::JobState;
use crate::runner::{Found, Job, Progress, Resume};

/// Starts a new attempt on the runner, tells the exchange, and supervises it.
pub(crate) async fn supervise_new(agent: Arc<Agent>, a: Assignment, stop: watch::Receiver<bool>) {
    let mut note = AttemptNote::new(&a);
    save_note(&agent.state_dir, &note);
    let job = match agent.runner.start(&a).await {
        Ok(job) => job,
        Err(message) => {
            finish(&agent, &mut note, "failed", None, &message, None).await;
            return;
        }
    };
    let id = job.backend_id();
    note.backend_id = Some(id.clone());
    save_note(&agent.state_dir, &note);
    // A job that runs at once is reported running; a queued one pending, with where it waits.
    let queued = job.queued();
    let state = if queued.is_some() {
        "pending"
    } else {
        "running"
    };
    match report_state(&agent, &a.attempt_id, state, queued.clone(), Some(id)).await {
        Ok(_) => {
            note.reported_running = queued.is_none();
            supervise(agent, job, note, stop, false).await
        }
        Err(e) => {
            tracing::warn!(attempt = %a.attempt_id, error = %e, "the exchange refused the attempt: stopping its job");
            job.cancel().await;
            forget(&agent, &a.attempt_id);
        }
    }
}

/// Follows a job to its end: where it stands goes to the exchange (pending with its reason,
/// running), and its output and usage are forwarded, until it ends or the exchange stops it.
async fn supervise(
    agent: Arc<Agent>,
    mut job: Box<dyn Job>,
    mut note: AttemptNote,
    mut stop: watch::Receiver<bool>,
    resumed: bool,
) {
    let forwarder = start_forwarder(&agent, job.take_logs(), &note, resumed);
    let backend_id = Some(job.backend_id());
    let mut tick = tokio::time::interval(agent.usage_interval);
    tick.tick().await;
    let mut stopped = false;
    let mut last_pending = String::new();
    let outcome = loop {
        match job.progress() {
            Progress::Finished(o) => break o,
            Progress::Pending(message) if !note.reported_running && message != last_pending => {
                last_pending = message.clone();
                let sent = report_state(
                    &agent,
                    &note.attempt_id,
                    "pending",
                    Some(message),
                    backend_id.clone(),
                )
                .await;
                if let Err(e) = sent {
                    if is_stale(&e) && !stopped {
                        stopped = true;
                        job.cancel().await;
                    }
                }
            }
            Progress::Running if !note.reported_running => {
                let refused = report_running(&agent, &mut note, backend_id.clone())
                    .await
                    .is_err();
                if refused && !stopped {
                    stopped = true;
                    job.cancel().await;
                }
            }
            _ => {}
        }
        tokio::select! {
            more = job.changed() => {
                if !more {
                    break job.finished().await;
                }
            }
            changed = stop.changed(), if !stopped => {
                if changed.is_err() || *stop.borrow() {
                    stopped = true;
                    job.cancel().await;
                }
            }
            _ = tick.tick() => {
                let u = job.usage();
                if !report_usage(&agent, &mut note, u.wall_ms, u.cpu_ms, u.peak_memory_mib).await && !stopped {
                    stopped = true;
                    job.cancel().await;
                }
            }
        }
    };
    // Every chunk has been sent once the outcome is known; let the forwarder drain them.
    if let Ok(last) = forwarder.await {
        note.log_seq = last;
    }
    // A job that ran between two looks was never seen running: it started all the same.
    if !note.reported_running && (outcome.usage.wall_ms > 0 || outcome.state == JobState::Succeeded)
    {
        let _ = report_running(&agent, &mut note, backend_id.clone()).await;
    }
    let outputs = job.outputs();
    report_outcome(&agent, &mut note, &outcome, Some(&outputs), backend_id).await;
}

/// Tells the exchange the job runs. Err when the exchange refused the attempt.
async fn report_running(
    agent: &Agent,
    note: &mut AttemptNote,
    backend_id: Option<String>,
) -> Result<(), ClientError> {
    report_state(agent, &note.attempt_id, "running", None, backend_id).await?;
    note.reported_running = true;
    save_note(&agent.state_dir, note);
    Ok(())
}

/// After a restart: finds the attempts this agent had started and supervises them again, or
/// reports how they ended while it was away.
pub(crate) async fn reattach_all(agent: &Arc<Agent>) {
    let Ok(entries) = std::fs::read_dir(notes_dir(&agent.state_dir)) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(text) = std::fs::read(entry.path()) else {
            continue;
        };
        let Ok(mut note) = serde_json::from_slice::<AttemptNote>(&text) else {
            continue;
        };
        let progress = saved_log_progress(&agent.state_dir, &note.attempt_id);
        let resume = Resume {
            attempt_id: &note.attempt_id,
            backend_id: note.backend_id.as_deref(),
            time_limit_s: note.time_limit_s,
            log_offsets: (progress.stdout_bytes, progress.stderr_bytes),
        };
        match agent.runner.reattach(resume).await {
            Found::Running(job) => {
                note.backend_id = Some(job.backend_id());
                // A job that ran at once was reported running when it started.
                if job.queued().is_none() {
                    note.reported_running = true;
                }
                let stop = agent.track(&note.attempt_id);
                tokio::spawn(supervise(agent.clone(), job, note, stop, true));
            }
            Found::Finished { outcome, outputs } => {
                report_outcome(agent, &mut note, &outcome, outputs.as_ref(), None).await;
            }
            Found::Gone(message) => {
                finish(agent, &mut note, "failed", None, &message, None).await;
            }
        }
    }
}
