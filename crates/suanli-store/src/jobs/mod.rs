//! Agents, jobs, attempts, signed usage, logs and outputs: the store's side (load, decide in
//! `suanli_core::decide`, apply) of everything an agent and a job's consumer do.
//!
//! - this module: the job and attempt rows; creating, listing, cancelling and ending jobs.
//! - `agents`: registration, heartbeats (with attempts that never reached their agent), the
//!   liveness monitor.
//! - `dispatch`: handing queued jobs to agents as attempts, fencing, and attempt reports.
//! - `usage`: signed usage, logs within their cap, and outputs.
//!
//! Fencing: every report names an attempt; it is accepted only from the agent the attempt was
//! dispatched to, while the attempt is the job's current one and has not ended. Usage records are
//! counted once per (attempt, sequence number), and never past the lease's units × duration limit
//! or its hold.

use suanli_core::decide::job::{decide_cancel, decide_create, JobLeaseSnapshot};
use suanli_core::job::JobState;
use suanli_core::lease::EndReason;

use crate::database::{to_i64, Row, StoreError, Value};
use crate::ops::{new_id, Tx};

mod agents;
mod dispatch;
mod usage;

pub use agents::{AgentRow, MonitorOutcome, NewAgent};
pub use dispatch::{AttemptReport, Dispatched};
pub use suanli_core::decide::liveness::DISPATCH_GRACE_MS;
pub use usage::{LogRow, RefusedUsage, UsageOutcome, VerifiedUsage};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRow {
    pub id: String,
    pub job_id: String,
    pub number: u32,
    pub agent_id: String,
    pub state: JobState,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub backend_id: Option<String>,
    pub dispatched_ms: i64,
    pub started_ms: Option<i64>,
    pub ended_ms: Option<i64>,
    /// Metered use acknowledged, in unit-milliseconds.
    pub unit_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRow {
    pub id: String,
    pub org_id: String,
    pub lease_id: String,
    pub pool_id: String,
    pub name: String,
    /// The task as JSON text; the store does not look inside.
    pub spec: String,
    pub state: JobState,
    pub restartable: bool,
    pub current_attempt_id: Option<String>,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub time_limit_s: u64,
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub ended_ms: Option<i64>,
    /// Metered use acknowledged, in unit-milliseconds.
    pub unit_ms: u64,
    pub attempts: Vec<AttemptRow>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    pub org_id: String,
    pub lease_id: String,
    pub name: String,
    pub spec: String,
    pub restartable: bool,
    pub time_limit_s: Option<u64>,
}

const JOB_COLS: &str =
    "id, org_id, lease_id, pool_id, name, spec, state, restartable, current_attempt_id, \
    exit_code, reason, time_limit_s, created_ms, started_ms, ended_ms, unit_ms";

const ATTEMPT_COLS: &str = "id, job_id, number, agent_id, state, exit_code, reason, backend_id, \
    dispatched_ms, started_ms, ended_ms, unit_ms";

fn job_row(r: &Row) -> Result<JobRow, StoreError> {
    Ok(JobRow {
        id: r.str(0)?,
        org_id: r.str(1)?,
        lease_id: r.str(2)?,
        pool_id: r.str(3)?,
        name: r.str(4)?,
        spec: r.str(5)?,
        state: r.parsed(6, JobState::parse)?,
        restartable: r.i64(7)? != 0,
        current_attempt_id: r.opt_str(8)?,
        exit_code: r.opt_i64(9)?.map(|c| c as i32),
        reason: r.opt_str(10)?,
        time_limit_s: r.u64(11)?,
        created_ms: r.i64(12)?,
        started_ms: r.opt_i64(13)?,
        ended_ms: r.opt_i64(14)?,
        unit_ms: r.u64(15)?,
        attempts: Vec::new(),
    })
}

fn attempt_row(r: &Row) -> Result<AttemptRow, StoreError> {
    Ok(AttemptRow {
        id: r.str(0)?,
        job_id: r.str(1)?,
        number: r.u32(2)?,
        agent_id: r.str(3)?,
        state: r.parsed(4, JobState::parse)?,
        exit_code: r.opt_i64(5)?.map(|c| c as i32),
        reason: r.opt_str(6)?,
        backend_id: r.opt_str(7)?,
        dispatched_ms: r.i64(8)?,
        started_ms: r.opt_i64(9)?,
        ended_ms: r.opt_i64(10)?,
        unit_ms: r.u64(11)?,
    })
}

fn stale(why: &str) -> StoreError {
    StoreError::StaleAttempt(why.to_owned())
}

impl Tx<'_> {
    fn job(&mut self, job_id: &str) -> Result<JobRow, StoreError> {
        let rows = self.b.query(
            &format!("SELECT {JOB_COLS} FROM jobs WHERE id = $1"),
            &[job_id.into()],
        )?;
        let mut job = rows
            .first()
            .map(job_row)
            .transpose()?
            .ok_or(StoreError::NotFound("job"))?;
        job.attempts = self
            .b
            .query(
                &format!("SELECT {ATTEMPT_COLS} FROM attempts WHERE job_id = $1 ORDER BY number"),
                &[job_id.into()],
            )?
            .iter()
            .map(attempt_row)
            .collect::<Result<_, StoreError>>()?;
        Ok(job)
    }

    /// The job an attempt belongs to.
    pub fn job_of_attempt(&mut self, attempt_id: &str) -> Result<String, StoreError> {
        let rows = self.b.query(
            "SELECT job_id FROM attempts WHERE id = $1",
            &[attempt_id.into()],
        )?;
        rows.first()
            .map(|r| r.str(0))
            .transpose()?
            .ok_or_else(|| stale("unknown attempt"))
    }

    /// How many jobs are in each state.
    pub fn count_jobs_by_state(&mut self) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = self
            .b
            .query("SELECT state, COUNT(*) FROM jobs GROUP BY state", &[])?;
        rows.iter()
            .map(|r| Ok((r.str(0)?, r.u64(1)?)))
            .collect::<Result<_, StoreError>>()
    }

    /// A job of `org_id`.
    pub fn get_job(&mut self, org_id: &str, job_id: &str) -> Result<JobRow, StoreError> {
        let job = self.job(job_id)?;
        if job.org_id != org_id {
            return Err(StoreError::NotFound("job"));
        }
        Ok(job)
    }

    pub fn list_jobs(
        &mut self,
        org_id: &str,
        lease_id: Option<&str>,
        state: Option<&str>,
        limit: u32,
    ) -> Result<Vec<JobRow>, StoreError> {
        let ids = self.b.query(
            "SELECT id FROM jobs WHERE org_id = $1 AND ($2 = '' OR lease_id = $2) AND ($3 = '' OR state = $3) \
             ORDER BY created_ms DESC, id LIMIT $4",
            &[org_id.into(), lease_id.unwrap_or("").into(), state.unwrap_or("").into(), i64::from(limit).into()],
        )?;
        ids.iter().map(|r| self.job(&r.str(0)?)).collect()
    }

    /// Queues a job on one of the consumer's active leases whose pool an agent serves.
    pub fn create_job(&mut self, j: &NewJob, now_ms: i64) -> Result<JobRow, StoreError> {
        let lease = match self.get_lease(Some(&j.org_id), &j.lease_id) {
            Ok(lease) => Some(lease),
            Err(StoreError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let snapshot = lease.as_ref().map(|l| JobLeaseSnapshot {
            consumer_org_id: l.consumer_org_id.clone(),
            state: l.state,
            billing: l.billing,
            ends_ms: l.ends_ms,
        });
        let time_limit_s = decide_create(snapshot.as_ref(), &j.org_id, j.time_limit_s, now_ms)?;
        let Some(lease) = lease else {
            unreachable!("the decision refuses a job on no lease")
        };
        let id = new_id("job");
        self.b.execute(
            &format!(
                "INSERT INTO jobs ({JOB_COLS}) VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7, NULL, NULL, NULL, $8, $9, \
                 NULL, NULL, 0)"
            ),
            &[
                (&id).into(),
                (&j.org_id).into(),
                (&lease.id).into(),
                (&lease.pool_id).into(),
                (&j.name).into(),
                (&j.spec).into(),
                i64::from(j.restartable).into(),
                Value::from(to_i64(time_limit_s)?),
                now_ms.into(),
            ],
        )?;
        self.job(&id)
    }

    /// Cancels a job of `org_id`. A running attempt is told to stop at the agent's next heartbeat;
    /// usage it reports after this is refused.
    pub fn cancel_job(
        &mut self,
        org_id: &str,
        job_id: &str,
        now_ms: i64,
    ) -> Result<JobRow, StoreError> {
        let job = self.get_job(org_id, job_id)?;
        decide_cancel(job.state)?;
        self.cancel_one(&job, "cancelled by the consumer", now_ms)?;
        self.job(job_id)
    }

    fn cancel_one(&mut self, job: &JobRow, reason: &str, now_ms: i64) -> Result<(), StoreError> {
        if let Some(attempt_id) = &job.current_attempt_id {
            self.b.execute(
                "UPDATE attempts SET state = 'cancelled', reason = $2, ended_ms = $3 \
                 WHERE id = $1 AND state IN ('dispatched', 'running')",
                &[attempt_id.into(), reason.into(), now_ms.into()],
            )?;
        }
        self.finish_job(
            &job.id,
            JobState::Cancelled,
            None,
            Some(reason),
            None,
            now_ms,
        )
    }

    /// Cancels every job of a lease that has not ended (the lease is ending).
    pub fn cancel_jobs_of_lease(
        &mut self,
        lease_id: &str,
        reason: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let open = self.b.query(
            "SELECT id FROM jobs WHERE lease_id = $1 AND state IN ('queued', 'dispatched', 'running')",
            &[lease_id.into()],
        )?;
        for r in open {
            let job = self.job(&r.str(0)?)?;
            if let Some(attempt_id) = &job.current_attempt_id {
                self.b.execute(
                    "UPDATE attempts SET state = 'cancelled', reason = $2, ended_ms = $3 \
                     WHERE id = $1 AND state IN ('dispatched', 'running')",
                    &[attempt_id.into(), reason.into(), now_ms.into()],
                )?;
            }
            self.b.execute(
                "UPDATE jobs SET state = 'cancelled', reason = $2, ended_ms = $3 WHERE id = $1",
                &[(&job.id).into(), reason.into(), now_ms.into()],
            )?;
        }
        Ok(())
    }

    /// Ends a job in `to` (its attempt already ended), closes its log if it was capped, and ends
    /// its lease if that ends with its jobs and none is left.
    fn finish_job(
        &mut self,
        job_id: &str,
        to: JobState,
        exit_code: Option<i32>,
        reason: Option<&str>,
        ended_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.b.execute(
            "UPDATE jobs SET state = $2, exit_code = $3, reason = $4, ended_ms = $5 WHERE id = $1",
            &[
                job_id.into(),
                to.as_str().into(),
                exit_code.map(i64::from).into(),
                reason.into(),
                ended_ms.unwrap_or(now_ms).into(),
            ],
        )?;
        self.close_capped_log(job_id, now_ms)?;
        let job = self.job(job_id)?;
        self.maybe_auto_end(&job.lease_id, now_ms)
    }

    /// Ends an auto-ending lease once none of its jobs is left to run.
    fn maybe_auto_end(&mut self, lease_id: &str, now_ms: i64) -> Result<(), StoreError> {
        let lease = self.get_lease(None, lease_id)?;
        if !lease.auto_end || lease.state.is_final() {
            return Ok(());
        }
        let open = self.b.query(
            "SELECT COUNT(*) FROM jobs WHERE lease_id = $1 AND state IN ('queued', 'dispatched', 'running')",
            &[lease_id.into()],
        )?;
        if open.first().map(|r| r.i64(0)).transpose()?.unwrap_or(0) == 0 {
            self.end_lease(None, lease_id, EndReason::Ended, now_ms)?;
        }
        Ok(())
    }
}
