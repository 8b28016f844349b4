//! Handing queued jobs to agents as attempts, fencing, and what agents report of attempts.

use suanli_core::decide::job::{
    attempt_time_limit_s, decide_attempt_report, fence_attempt, fence_job, ReportPlan,
};
use suanli_core::decide::liveness::AgentState;
use suanli_core::job::{job_times, next, JobEvent, JobState};

use super::{attempt_row, AttemptRow, JobRow, Tx, ATTEMPT_COLS};
use crate::database::{Row, StoreError, Value};
use crate::ops::{new_id, LeaseRow};

/// A job handed to an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatched {
    pub job: JobRow,
    pub attempt_id: String,
    pub lease: LeaseRow,
    pub time_limit_s: u64,
    pub cpus: u64,
    pub memory_mib: u64,
    pub accelerators: u64,
}

/// What an agent reports of an attempt: its new state and how it got there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptReport<'a> {
    /// `Dispatched` (pending in the backend's queue), `Running` or how it ended.
    pub state: JobState,
    pub exit_code: Option<i32>,
    pub message: Option<&'a str>,
    pub backend_id: Option<&'a str>,
    /// The job's own start and end, by the agent's clock (see `core::job::job_times`).
    pub started_ms: Option<i64>,
    pub ended_ms: Option<i64>,
}

impl Tx<'_> {
    /// The attempt and its job if `agent_id` may still report on it.
    pub(super) fn fence(
        &mut self,
        agent_id: &str,
        attempt_id: &str,
    ) -> Result<(AttemptRow, JobRow), StoreError> {
        let rows = self.b.query(
            &format!("SELECT {ATTEMPT_COLS} FROM attempts WHERE id = $1"),
            &[attempt_id.into()],
        )?;
        let attempt = rows.first().map(attempt_row).transpose()?;
        fence_attempt(
            attempt.as_ref().map(|a| (a.agent_id.as_str(), a.state)),
            agent_id,
        )?;
        let Some(attempt) = attempt else {
            unreachable!("fencing refuses an unknown attempt")
        };
        let job = self.job(&attempt.job_id)?;
        fence_job(job.current_attempt_id.as_deref(), job.state, attempt_id)?;
        Ok((attempt, job))
    }

    /// Hands queued jobs of the agent's pool to the agent, each as a new attempt. A lease runs one
    /// job at a time, with all of the lease's resources: the next job of a lease is dispatched when
    /// the one before it has ended.
    pub fn dispatch(
        &mut self,
        org_id: &str,
        agent_id: &str,
        max: u32,
        now_ms: i64,
        fresh_request: bool,
    ) -> Result<Vec<Dispatched>, StoreError> {
        // Only a request that just arrived proves the agent alive: the re-checks of a pending long
        // poll must not, or a paused agent would look alive for as long as its poll lasts.
        let agent = if fresh_request {
            self.touch_agent(org_id, agent_id, now_ms)?
        } else {
            self.get_agent(Some(org_id), agent_id)?
        };
        if agent.state != AgentState::Alive {
            // Nothing goes to an agent the monitor already doubts.
            return Ok(Vec::new());
        }
        let queued = self.b.query(
            "SELECT j.id, j.lease_id FROM jobs j JOIN leases l ON l.id = j.lease_id \
             WHERE j.pool_id = $1 AND j.state = 'queued' AND l.state = 'active' \
             AND NOT EXISTS (SELECT 1 FROM jobs b WHERE b.lease_id = j.lease_id AND b.state IN ('dispatched', 'running')) \
             ORDER BY j.created_ms, j.id LIMIT $2",
            &[(&agent.pool_id).into(), i64::from(max).saturating_mul(8).into()],
        )?;
        let mut out = Vec::new();
        let mut leases_taken = std::collections::BTreeSet::new();
        for r in queued {
            if out.len() >= max as usize || !leases_taken.insert(r.str(1)?) {
                continue;
            }
            let job = self.job(&r.str(0)?)?;
            next(job.state, JobEvent::Dispatch).map_err(|e| StoreError::Conflict(e.to_string()))?;
            let attempt_id = new_id("att");
            let number = job.attempts.len() as i64 + 1;
            let n = self.b.execute(
                "UPDATE jobs SET state = 'dispatched', attempts = attempts + 1, current_attempt_id = $2 \
                 WHERE id = $1 AND state = 'queued'",
                &[(&job.id).into(), (&attempt_id).into()],
            )?;
            if n != 1 {
                continue;
            }
            self.b.execute(
                &format!(
                    "INSERT INTO attempts ({ATTEMPT_COLS}) VALUES ($1, $2, $3, $4, 'dispatched', NULL, NULL, NULL, $5, \
                     NULL, NULL, 0)"
                ),
                &[(&attempt_id).into(), (&job.id).into(), number.into(), agent_id.into(), now_ms.into()],
            )?;
            let lease = self.get_lease(None, &job.lease_id)?;
            let sums = self.b.query(
                "SELECT CAST(COALESCE(SUM(cpus), 0) AS BIGINT), CAST(COALESCE(SUM(memory_mib), 0) AS BIGINT), \
                 CAST(COALESCE(SUM(accelerators), 0) AS BIGINT) FROM lease_allocations WHERE lease_id = $1",
                &[(&lease.id).into()],
            )?;
            let s = sums
                .first()
                .cloned()
                .unwrap_or(Row(vec![Value::Int(Some(0)); 3]));
            out.push(Dispatched {
                time_limit_s: attempt_time_limit_s(job.time_limit_s, lease.ends_ms, now_ms),
                job: self.job(&job.id)?,
                attempt_id,
                cpus: s.u64(0)?,
                memory_mib: s.u64(1)?,
                accelerators: s.u64(2)?,
                lease,
            });
        }
        Ok(out)
    }

    /// An agent's report of how an attempt goes: pending in its backend's queue (`Dispatched`,
    /// with the reason as `message`), running, or how it ended.
    pub fn attempt_event(
        &mut self,
        org_id: &str,
        agent_id: &str,
        attempt_id: &str,
        report: &AttemptReport<'_>,
        now_ms: i64,
    ) -> Result<JobRow, StoreError> {
        let AttemptReport {
            state: new_state,
            exit_code,
            message,
            backend_id,
            ..
        } = *report;
        self.touch_agent(org_id, agent_id, now_ms)?;
        let (attempt, job) = self.fence(agent_id, attempt_id)?;
        // The job's own times (its agent's), within the attempt's dispatch and now.
        let (own_start, own_end) = job_times(
            attempt.dispatched_ms,
            report.started_ms,
            report.ended_ms,
            now_ms,
        );
        let to = match decide_attempt_report(job.state, new_state)? {
            ReportPlan::Pending => {
                // Pending in the backend's queue: the job waits; its reason says why.
                self.b.execute(
                    "UPDATE attempts SET reason = $2, backend_id = COALESCE($3, backend_id) WHERE id = $1",
                    &[attempt_id.into(), message.into(), backend_id.into()],
                )?;
                self.b.execute(
                    "UPDATE jobs SET reason = $2 WHERE id = $1",
                    &[(&job.id).into(), message.into()],
                )?;
                return self.job(&job.id);
            }
            ReportPlan::Move(to) => to,
        };
        let started = own_start.unwrap_or(now_ms);
        if to == JobState::Running {
            self.b.execute(
                "UPDATE attempts SET state = 'running', started_ms = COALESCE(started_ms, $2), \
                 backend_id = COALESCE($3, backend_id) WHERE id = $1",
                &[attempt_id.into(), started.into(), backend_id.into()],
            )?;
            // A reason left from waiting in the backend's queue no longer applies.
            self.b.execute(
                "UPDATE attempts SET reason = NULL WHERE id = $1 AND state = 'running'",
                &[attempt_id.into()],
            )?;
            self.b.execute(
                "UPDATE jobs SET state = 'running', started_ms = COALESCE(started_ms, $2), reason = NULL WHERE id = $1",
                &[(&job.id).into(), started.into()],
            )?;
        } else {
            // The job's own start, when its agent says, replaces when its `running` report
            // arrived (and the job's, when that was this attempt's).
            let ended = own_end.unwrap_or(now_ms);
            if let Some(start) = own_start {
                self.b.execute(
                    "UPDATE jobs SET started_ms = $2 WHERE id = $1 \
                     AND (started_ms IS NULL OR started_ms = $3)",
                    &[
                        (&job.id).into(),
                        start.into(),
                        attempt.started_ms.unwrap_or(-1).into(),
                    ],
                )?;
            }
            self.b.execute(
                "UPDATE attempts SET state = $2, exit_code = $3, reason = $4, ended_ms = $5, \
                 backend_id = COALESCE($6, backend_id), \
                 started_ms = COALESCE($7, started_ms) WHERE id = $1",
                &[
                    (&attempt.id).into(),
                    to.as_str().into(),
                    exit_code.map(i64::from).into(),
                    message.into(),
                    ended.into(),
                    backend_id.into(),
                    own_start.into(),
                ],
            )?;
            self.finish_job(&job.id, to, exit_code, message, Some(ended), now_ms)?;
        }
        self.job(&job.id)
    }
}
