//! Agents, jobs, attempts, signed usage and logs.
//!
//! Fencing: every report names an attempt; it is accepted only from the agent the attempt was
//! dispatched to, while the attempt is the job's current one and has not ended. Usage records are
//! counted once per (attempt, sequence number), and never past the lease's units × duration limit
//! or its hold.

use suanli_core::decide::job::{
    attempt_time_limit_s, decide_cancel, decide_create, fence_attempt, fence_job, JobLeaseSnapshot,
};
use suanli_core::decide::liveness::{
    decide_liveness, decide_registration, decide_report, AgentSeen, AgentState, Silence,
};
use suanli_core::job::{
    job_times, judge_usage, lease_room_unit_ms, next, JobEvent, JobState, LogCap, UsageWindow,
};
use suanli_core::lease::EndReason;

use crate::database::{to_i64, Row, StoreError, Value};
use crate::ops::{new_id, LeaseRow, NewNode, Tx};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRow {
    pub id: String,
    pub org_id: String,
    pub pool_id: String,
    pub name: String,
    pub public_key_hex: String,
    pub backend: String,
    pub isolation: String,
    pub version: String,
    pub state: AgentState,
    pub registered_ms: i64,
    pub last_seen_ms: i64,
    /// Usage records of this agent refused for claiming more than time allows.
    pub usage_refusals: u64,
    /// Why the last of them was refused.
    pub last_usage_refusal: Option<String>,
    /// Counts the agent's registrations: only the latest may report.
    pub generation: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAgent {
    pub org_id: String,
    pub name: String,
    pub zone: String,
    pub public_key_hex: String,
    pub backend: String,
    pub isolation: String,
    pub version: String,
    pub nodes: Vec<NewNode>,
    pub pool_id: Option<String>,
    /// The generation of the agent's own earlier registration when it registers again to report
    /// new capacity (kept); `None` for a start, which begins a new generation.
    pub renews: Option<u64>,
}

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

/// What became of a batch of usage records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageOutcome {
    /// Records counted now.
    pub accepted: u32,
    /// Records counted before (retries).
    pub duplicates: u32,
    /// Records refused for claiming more than time allows (now or before).
    pub refused: Vec<RefusedUsage>,
    /// The attempt's acknowledged use, in unit-milliseconds.
    pub unit_ms: u64,
}

/// A usage record refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedUsage {
    /// Its position in the batch.
    pub index: usize,
    pub seq: u64,
    pub reason: String,
}

/// A usage record whose signature the caller has verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedUsage {
    pub seq: u64,
    pub unit_ms: u64,
    pub cpu_ms: Option<u64>,
    pub peak_memory_mib: Option<u64>,
    pub signature_hex: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRow {
    pub seq: i64,
    pub attempt_id: String,
    pub stream: String,
    pub data: String,
    pub created_ms: i64,
}

/// What the liveness monitor did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MonitorOutcome {
    /// More than half of the agents went silent at once: the exchange suspects itself (a partition
    /// or a stall on its side) and declared nobody lost.
    pub self_suspected: bool,
    pub silent_agents: u64,
    pub live_agents: u64,
    pub newly_suspect: Vec<String>,
    pub newly_lost: Vec<String>,
    /// Jobs that went back to the queue (restartable) or ended lost.
    pub requeued_jobs: Vec<String>,
    pub lost_jobs: Vec<String>,
}

/// How long an agent has to report a dispatched attempt before it counts as never delivered.
pub const DISPATCH_GRACE_MS: i64 = 15_000;

const AGENT_COLS: &str =
    "id, org_id, pool_id, name, public_key_hex, backend, isolation, version, state, \
    registered_ms, last_seen_ms, usage_refusals, last_usage_refusal, generation";
const JOB_COLS: &str =
    "id, org_id, lease_id, pool_id, name, spec, state, restartable, current_attempt_id, \
    exit_code, reason, time_limit_s, created_ms, started_ms, ended_ms, unit_ms";
const ATTEMPT_COLS: &str = "id, job_id, number, agent_id, state, exit_code, reason, backend_id, \
    dispatched_ms, started_ms, ended_ms, unit_ms";

fn agent_row(r: &Row) -> Result<AgentRow, StoreError> {
    Ok(AgentRow {
        id: r.str(0)?,
        org_id: r.str(1)?,
        pool_id: r.str(2)?,
        name: r.str(3)?,
        public_key_hex: r.str(4)?,
        backend: r.str(5)?,
        isolation: r.str(6)?,
        version: r.str(7)?,
        state: r.parsed(8, AgentState::parse)?,
        registered_ms: r.i64(9)?,
        last_seen_ms: r.i64(10)?,
        usage_refusals: r.u64(11)?,
        last_usage_refusal: r.opt_str(12)?,
        generation: r.u64(13)?,
    })
}

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
    /// Whether any agent serves `pool_id` (its leases are then billed on metered usage).
    pub fn pool_has_agent(&mut self, pool_id: &str) -> Result<bool, StoreError> {
        let rows = self.b.query(
            "SELECT COUNT(*) FROM agents WHERE pool_id = $1",
            &[pool_id.into()],
        )?;
        Ok(rows.first().map(|r| r.i64(0)).transpose()?.unwrap_or(0) > 0)
    }

    /// Registers an agent, or re-registers it (same org and key): it gets the same id and pool, and
    /// the pool's nodes take the capacity it measured. Capacity already sold is never taken back:
    /// a node reports at least what is reserved on it.
    pub fn register_agent(&mut self, a: &NewAgent, now_ms: i64) -> Result<AgentRow, StoreError> {
        let existing = self.b.query(
            &format!("SELECT {AGENT_COLS} FROM agents WHERE org_id = $1 AND public_key_hex = $2"),
            &[(&a.org_id).into(), (&a.public_key_hex).into()],
        )?;
        let pool_id = match (existing.first().map(agent_row).transpose()?, &a.pool_id) {
            (Some(agent), _) => agent.pool_id,
            (None, Some(pool_id)) => {
                self.get_pool(Some(&a.org_id), pool_id)
                    .map_err(|e| match e {
                        StoreError::NotFound(_) => StoreError::invalid("pool_id", "no such pool"),
                        e => e,
                    })?;
                pool_id.clone()
            }
            (None, None) => {
                self.create_pool(&a.org_id, &a.name, &a.zone, &a.nodes, now_ms)?
                    .id
            }
        };
        let current = self.nodes_of_pool(&pool_id)?;
        for n in &a.nodes {
            match current.iter().find(|c| c.name == n.name) {
                Some(c) => {
                    self.b.execute(
                        "UPDATE nodes SET cpus = $2, memory_mib = $3, accelerator_model = $4, accelerators = $5, \
                         partition_name = $6 WHERE id = $1",
                        &[
                            (&c.id).into(),
                            Value::from(to_i64(n.cpus.max(c.cpus_reserved))?),
                            Value::from(to_i64(n.memory_mib.max(c.memory_mib_reserved))?),
                            n.accelerator_model.clone().into(),
                            Value::from(to_i64(n.accelerators.max(c.accelerators_reserved))?),
                            n.partition.clone().into(),
                        ],
                    )?;
                }
                None => {
                    self.b.execute(
                        "INSERT INTO nodes (id, pool_id, name, cpus, memory_mib, accelerator_model, accelerators, \
                         partition_name, cpus_reserved, memory_mib_reserved, accelerators_reserved) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, 0, 0)",
                        &[
                            new_id("node").into(),
                            (&pool_id).into(),
                            (&n.name).into(),
                            Value::from(to_i64(n.cpus)?),
                            Value::from(to_i64(n.memory_mib)?),
                            n.accelerator_model.clone().into(),
                            Value::from(to_i64(n.accelerators)?),
                            n.partition.clone().into(),
                        ],
                    )?;
                }
            }
        }
        self.nodes_changed(&pool_id);
        self.dirty_pools.insert(pool_id.clone());
        let id = match existing.first() {
            Some(r) => {
                let id = r.str(0)?;
                let current = agent_row(r)?.generation;
                let next = decide_registration(&id, Some(current), a.renews)?;
                self.b.execute(
                    "UPDATE agents SET name = $2, backend = $3, isolation = $4, version = $5, state = 'alive', \
                     last_seen_ms = $6, generation = $7 WHERE id = $1",
                    &[
                        (&id).into(),
                        (&a.name).into(),
                        (&a.backend).into(),
                        (&a.isolation).into(),
                        (&a.version).into(),
                        now_ms.into(),
                        Value::from(to_i64(next)?),
                    ],
                )?;
                id
            }
            None => {
                let id = new_id("agent");
                self.b.execute(
                    &format!("INSERT INTO agents ({AGENT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'alive', $9, $9, 0, NULL, 1)"),
                    &[
                        (&id).into(),
                        (&a.org_id).into(),
                        (&pool_id).into(),
                        (&a.name).into(),
                        (&a.public_key_hex).into(),
                        (&a.backend).into(),
                        (&a.isolation).into(),
                        (&a.version).into(),
                        now_ms.into(),
                    ],
                )?;
                id
            }
        };
        // Leases on the pool are metered from now on (see `crate::batch_offers`).
        self.offers_changed();
        self.get_agent(Some(&a.org_id), &id)
    }

    /// An agent; with `org_id`, only if that org owns it.
    pub fn get_agent(
        &mut self,
        org_id: Option<&str>,
        agent_id: &str,
    ) -> Result<AgentRow, StoreError> {
        let rows = self.b.query(
            &format!("SELECT {AGENT_COLS} FROM agents WHERE id = $1"),
            &[agent_id.into()],
        )?;
        let agent = rows
            .first()
            .map(agent_row)
            .transpose()?
            .ok_or(StoreError::NotFound("agent"))?;
        if org_id.is_some_and(|o| o != agent.org_id) {
            return Err(StoreError::NotFound("agent"));
        }
        Ok(agent)
    }

    pub fn list_agents(&mut self, org_id: Option<&str>) -> Result<Vec<AgentRow>, StoreError> {
        let rows = self.b.query(
            &format!("SELECT {AGENT_COLS} FROM agents WHERE ($1 = '' OR org_id = $1) ORDER BY registered_ms, id"),
            &[org_id.unwrap_or("").into()],
        )?;
        rows.iter()
            .map(agent_row)
            .collect::<Result<_, StoreError>>()
    }

    /// Marks an agent seen now: alive again if it was suspect or lost.
    /// Refuses a report from an agent whose identity registered again since it did itself (the
    /// same agent started twice, or from a copied state directory): `generation` is what its
    /// registration answered. `None` (a client that does not say) is not checked.
    pub fn check_generation(
        &mut self,
        org_id: &str,
        agent_id: &str,
        generation: Option<u64>,
    ) -> Result<(), StoreError> {
        let Some(g) = generation else {
            return Ok(());
        };
        let agent = self.get_agent(Some(org_id), agent_id)?;
        Ok(decide_report(agent_id, agent.generation, Some(g))?)
    }

    pub fn touch_agent(
        &mut self,
        org_id: &str,
        agent_id: &str,
        now_ms: i64,
    ) -> Result<AgentRow, StoreError> {
        let n = self.b.execute(
            "UPDATE agents SET last_seen_ms = $3, state = 'alive' WHERE id = $1 AND org_id = $2",
            &[agent_id.into(), org_id.into(), now_ms.into()],
        )?;
        if n != 1 {
            return Err(StoreError::NotFound("agent"));
        }
        self.get_agent(Some(org_id), agent_id)
    }

    /// A heartbeat: the agent is alive; of the attempts it says it runs, those it must stop.
    pub fn heartbeat(
        &mut self,
        org_id: &str,
        agent_id: &str,
        running: &[String],
        now_ms: i64,
    ) -> Result<(AgentRow, Vec<String>), StoreError> {
        let agent = self.touch_agent(org_id, agent_id, now_ms)?;
        let mut stop = Vec::new();
        for attempt_id in running {
            if self.fence(agent_id, attempt_id).is_err() {
                stop.push(attempt_id.clone());
            }
        }
        // An attempt dispatched long ago that the agent does not run never reached it (the poll's
        // answer was lost): it never ran, so its job goes back to the queue as a new attempt.
        let unseen = self.b.query(
            "SELECT id, job_id FROM attempts WHERE agent_id = $1 AND state = 'dispatched' AND dispatched_ms < $2",
            &[agent_id.into(), (now_ms - DISPATCH_GRACE_MS).into()],
        )?;
        for r in unseen {
            let (attempt_id, job_id) = (r.str(0)?, r.str(1)?);
            if running.contains(&attempt_id) {
                continue;
            }
            self.b.execute(
                "UPDATE attempts SET state = 'lost', reason = 'the assignment never reached the agent', ended_ms = $2 \
                 WHERE id = $1 AND state = 'dispatched'",
                &[(&attempt_id).into(), now_ms.into()],
            )?;
            self.b.execute(
                "UPDATE jobs SET state = 'queued', current_attempt_id = NULL WHERE id = $1 AND current_attempt_id = $2 \
                 AND state = 'dispatched'",
                &[job_id.into(), attempt_id.into()],
            )?;
        }
        Ok((agent, stop))
    }

    /// The attempt and its job if `agent_id` may still report on it.
    fn fence(
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
        if new_state == JobState::Dispatched {
            // Pending in the backend's queue: the job waits; its reason says why.
            if job.state != JobState::Dispatched {
                return Err(StoreError::invalid(
                    "state",
                    format!("a {} job cannot be pending", job.state.as_str()),
                ));
            }
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
        let event = match new_state {
            JobState::Running => JobEvent::Start,
            s if s.is_final() && s != JobState::Lost => JobEvent::Finish(s),
            s => {
                return Err(StoreError::invalid(
                    "state",
                    format!("an agent cannot report {}", s.as_str()),
                ))
            }
        };
        let to = next(job.state, event).map_err(|e| StoreError::invalid("state", e.to_string()))?;
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

    /// Ends a log that passed the exchange's cap with the final count of what was dropped (the
    /// notice at the cut counted only what was dropped until then, as a live reader saw it).
    fn close_capped_log(&mut self, job_id: &str, now_ms: i64) -> Result<(), StoreError> {
        let rows = self.b.query(
            "SELECT log_head_bytes, log_dropped_bytes, log_notice_seq FROM jobs WHERE id = $1",
            &[job_id.into()],
        )?;
        let Some(r) = rows.first() else {
            return Ok(());
        };
        if r.i64(2)? == 0 {
            return Ok(());
        }
        // One per job: keyed by the job's id where an attempt's would be.
        self.b.execute(
            "INSERT INTO job_logs (job_id, attempt_id, chunk_seq, stream, data, created_ms) \
             VALUES ($1, $1, -2, 'system', $2, $3) ON CONFLICT (attempt_id, chunk_seq) DO NOTHING",
            &[
                job_id.into(),
                LogCap::summary(r.u64(0)?, r.u64(1)?).into(),
                now_ms.into(),
            ],
        )?;
        Ok(())
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

    /// Counts signed usage of an attempt (signatures verified by the caller), once per sequence
    /// number. Each record is judged by `suanli_core::job::judge_usage`: one that would take the
    /// attempt past what time allows (its units × the time since its dispatch, bounded by its
    /// time limit and its lease's end, with the clock slack) is refused, never charged, kept in
    /// `usage_refusals` and counted against the agent; a refused sequence number stays refused
    /// when sent again. The lease's cap (`lease_room_unit_ms`) bounds the rest.
    pub fn record_usage(
        &mut self,
        org_id: &str,
        agent_id: &str,
        attempt_id: &str,
        records: &[VerifiedUsage],
        now_ms: i64,
    ) -> Result<UsageOutcome, StoreError> {
        self.touch_agent(org_id, agent_id, now_ms)?;
        let (attempt, job) = self.fence(agent_id, attempt_id)?;
        let mut lease = self.get_lease(None, &job.lease_id)?;
        if lease.state.is_final() {
            return Err(stale("the lease has ended"));
        }
        let window = UsageWindow {
            units: lease.units,
            dispatched_ms: attempt.dispatched_ms,
            time_limit_ms: job.time_limit_s.saturating_mul(1_000),
            lease_ends_ms: lease.ends_ms,
        };
        let mut out = UsageOutcome {
            unit_ms: attempt.unit_ms,
            ..UsageOutcome::default()
        };
        for (index, r) in records.iter().enumerate() {
            let seen = self.b.query(
                "SELECT 'counted', '' FROM usage_records WHERE attempt_id = $1 AND seq = $2 \
                 UNION ALL SELECT 'refused', reason FROM usage_refusals WHERE attempt_id = $1 AND seq = $2",
                &[attempt_id.into(), Value::from(to_i64(r.seq)?)],
            )?;
            if let Some(row) = seen.first() {
                if row.str(0)? == "counted" {
                    out.duplicates += 1;
                } else {
                    out.refused.push(RefusedUsage {
                        index,
                        seq: r.seq,
                        reason: row.str(1)?,
                    });
                }
                continue;
            }
            let room = lease_room_unit_ms(
                lease.metered_unit_ms,
                lease.units,
                lease.duration_limit_s,
                lease.hold.amount_micros,
                lease.price_micros_per_unit_hour,
            );
            let billable = match judge_usage(&window, out.unit_ms, r.unit_ms, room, now_ms) {
                Ok(billable) => billable,
                Err(refusal) => {
                    let reason = refusal.to_string();
                    self.b.execute(
                        "INSERT INTO usage_refusals (attempt_id, seq, agent_id, job_id, claimed_unit_ms, \
                         bound_unit_ms, reason, received_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                        &[
                            attempt_id.into(),
                            Value::from(to_i64(r.seq)?),
                            agent_id.into(),
                            (&job.id).into(),
                            Value::from(to_i64(r.unit_ms)?),
                            Value::from(to_i64(refusal.bound_unit_ms)?),
                            reason.as_str().into(),
                            now_ms.into(),
                        ],
                    )?;
                    self.b.execute(
                        "UPDATE agents SET usage_refusals = usage_refusals + 1, last_usage_refusal = $2 \
                         WHERE id = $1",
                        &[agent_id.into(), reason.as_str().into()],
                    )?;
                    out.refused.push(RefusedUsage {
                        index,
                        seq: r.seq,
                        reason,
                    });
                    continue;
                }
            };
            self.b.execute(
                "INSERT INTO usage_records (attempt_id, seq, job_id, unit_ms, billed_unit_ms, cpu_ms, \
                 peak_memory_mib, signature_hex, received_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    attempt_id.into(),
                    Value::from(to_i64(r.seq)?),
                    (&job.id).into(),
                    Value::from(to_i64(r.unit_ms)?),
                    Value::from(to_i64(billable)?),
                    r.cpu_ms.map(to_i64).transpose()?.into(),
                    r.peak_memory_mib.map(to_i64).transpose()?.into(),
                    (&r.signature_hex).into(),
                    now_ms.into(),
                ],
            )?;
            out.accepted += 1;
            // The attempt's total is what it claimed (the bound is on what it claims); what is
            // billed is capped by the lease.
            out.unit_ms += r.unit_ms;
            lease.metered_unit_ms += billable;
            let b = Value::from(to_i64(billable)?);
            self.b.execute(
                "UPDATE attempts SET unit_ms = unit_ms + $2 WHERE id = $1",
                &[attempt_id.into(), Value::from(to_i64(r.unit_ms)?)],
            )?;
            self.b.execute(
                "UPDATE jobs SET unit_ms = unit_ms + $2 WHERE id = $1",
                &[(&job.id).into(), b.clone()],
            )?;
            self.b.execute(
                "UPDATE leases SET metered_unit_ms = metered_unit_ms + $2 WHERE id = $1",
                &[(&lease.id).into(), b],
            )?;
        }
        Ok(out)
    }

    /// Appends an attempt's log chunks (repeats ignored). Refused for attempts that are no longer
    /// current, so an orphan's output never mixes into the job's log.
    ///
    /// A job's log is capped at `max_bytes` ([`LogCap`]): once its head is full, one notice marks
    /// the place and only the newest tail is kept behind it, the notice counting what was dropped.
    /// Chunks past the cap are acknowledged all the same, so the agent does not send them again.
    pub fn append_logs(
        &mut self,
        org_id: &str,
        agent_id: &str,
        attempt_id: &str,
        chunks: &[(u64, String, String)],
        max_bytes: u64,
        now_ms: i64,
    ) -> Result<u32, StoreError> {
        self.touch_agent(org_id, agent_id, now_ms)?;
        let rows = self.b.query(
            &format!("SELECT {ATTEMPT_COLS} FROM attempts WHERE id = $1"),
            &[attempt_id.into()],
        )?;
        let attempt = rows
            .first()
            .map(attempt_row)
            .transpose()?
            .ok_or_else(|| stale("unknown attempt"))?;
        if attempt.agent_id != agent_id || attempt.state == JobState::Lost {
            return Err(stale("the attempt is not this agent's"));
        }
        let job_id = attempt.job_id.as_str();
        let kept = self.b.query(
            "SELECT j.log_head_bytes, j.log_dropped_bytes, j.log_notice_seq, a.log_chunk_seq \
             FROM jobs j, attempts a WHERE j.id = $1 AND a.id = $2",
            &[job_id.into(), attempt_id.into()],
        )?;
        let Some(k) = kept.first() else {
            return Err(stale("unknown attempt"));
        };
        let (mut head_bytes, mut dropped, mut notice_seq) = (k.u64(0)?, k.u64(1)?, k.i64(2)?);
        let mut newest_chunk = k.i64(3)?;
        let cap = LogCap::new(max_bytes);
        let mut stored = 0;
        for (seq, stream, data) in chunks {
            let seq = to_i64(*seq)?;
            let len = data.len() as u64;
            if notice_seq == 0 && !cap.fits_head(head_bytes, len) {
                // The head is full: the notice goes here, once per job.
                self.b.execute(
                    "INSERT INTO job_logs (job_id, attempt_id, chunk_seq, stream, data, created_ms) \
                     VALUES ($1, $2, -1, 'system', $3, $4)",
                    &[
                        job_id.into(),
                        attempt_id.into(),
                        LogCap::notice(head_bytes, 0).into(),
                        now_ms.into(),
                    ],
                )?;
                let r = self.b.query(
                    "SELECT seq FROM job_logs WHERE attempt_id = $1 AND chunk_seq = -1",
                    &[attempt_id.into()],
                )?;
                notice_seq = r.first().map(|r| r.i64(0)).transpose()?.unwrap_or(0);
            }
            if notice_seq != 0 && seq <= newest_chunk {
                // Behind the notice a chunk may have been dropped already: never take it twice.
                continue;
            }
            let n = self.b.execute(
                "INSERT INTO job_logs (job_id, attempt_id, chunk_seq, stream, data, created_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (attempt_id, chunk_seq) DO NOTHING",
                &[
                    job_id.into(),
                    attempt_id.into(),
                    Value::from(seq),
                    stream.as_str().into(),
                    data.as_str().into(),
                    now_ms.into(),
                ],
            )?;
            if n > 0 && notice_seq == 0 {
                head_bytes += len;
            }
            newest_chunk = newest_chunk.max(seq);
            stored += n as u32;
        }
        if notice_seq != 0 {
            // Keep only the newest tail behind the notice; count what goes.
            let tail = self.b.query(
                "SELECT seq, data FROM job_logs WHERE job_id = $1 AND seq > $2 ORDER BY seq DESC",
                &[job_id.into(), notice_seq.into()],
            )?;
            let sizes: Vec<u64> = tail
                .iter()
                .map(|r| r.str(1).map(|d| d.len() as u64))
                .collect::<Result<_, StoreError>>()?;
            let keep = cap.tail_keeps(&sizes);
            if keep < tail.len() {
                let gone: u64 = sizes[keep..].iter().sum();
                let newest_gone = tail[keep].i64(0)?;
                self.b.execute(
                    "DELETE FROM job_logs WHERE job_id = $1 AND seq > $2 AND seq <= $3",
                    &[job_id.into(), notice_seq.into(), newest_gone.into()],
                )?;
                dropped += gone;
                self.b.execute(
                    "UPDATE job_logs SET data = $2 WHERE seq = $1",
                    &[
                        notice_seq.into(),
                        LogCap::notice(head_bytes, dropped).into(),
                    ],
                )?;
            }
        }
        self.b.execute(
            "UPDATE jobs SET log_head_bytes = $2, log_dropped_bytes = $3, log_notice_seq = $4 \
             WHERE id = $1",
            &[
                job_id.into(),
                Value::from(to_i64(head_bytes)?),
                Value::from(to_i64(dropped)?),
                notice_seq.into(),
            ],
        )?;
        self.b.execute(
            "UPDATE attempts SET log_chunk_seq = $2 WHERE id = $1",
            &[attempt_id.into(), newest_chunk.into()],
        )?;
        Ok(stored)
    }

    /// Stores output files of an attempt (a file sent again replaces itself). Only the current
    /// attempt of a job that has not ended may send them, and a job keeps at most
    /// `max_total_bytes` of outputs.
    #[allow(clippy::too_many_arguments)]
    pub fn put_outputs(
        &mut self,
        org_id: &str,
        agent_id: &str,
        attempt_id: &str,
        files: &[(String, u64, String)],
        max_total_bytes: u64,
        now_ms: i64,
    ) -> Result<u32, StoreError> {
        self.touch_agent(org_id, agent_id, now_ms)?;
        let (_, job) = self.fence(agent_id, attempt_id)?;
        for (path, size, content) in files {
            self.b.execute(
                "DELETE FROM job_outputs WHERE job_id = $1 AND path = $2",
                &[(&job.id).into(), path.into()],
            )?;
            self.b.execute(
                "INSERT INTO job_outputs (job_id, attempt_id, path, size_bytes, content_base64, created_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    (&job.id).into(),
                    attempt_id.into(),
                    path.into(),
                    Value::from(to_i64(*size)?),
                    content.into(),
                    now_ms.into(),
                ],
            )?;
        }
        let total = self.b.query(
            "SELECT CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) FROM job_outputs WHERE job_id = $1",
            &[(&job.id).into()],
        )?;
        if total.first().map(|r| r.u64(0)).transpose()?.unwrap_or(0) > max_total_bytes {
            return Err(StoreError::invalid(
                "files",
                format!("a job keeps at most {max_total_bytes} bytes of outputs"),
            ));
        }
        Ok(files.len() as u32)
    }

    /// The output files of a job of `org_id`: (path, size).
    pub fn list_outputs(
        &mut self,
        org_id: &str,
        job_id: &str,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        self.get_job(org_id, job_id)?;
        let rows = self.b.query(
            "SELECT path, size_bytes FROM job_outputs WHERE job_id = $1 ORDER BY path",
            &[job_id.into()],
        )?;
        rows.iter()
            .map(|r| Ok((r.str(0)?, r.u64(1)?)))
            .collect::<Result<_, StoreError>>()
    }

    /// One output file of a job of `org_id`, base64.
    pub fn get_output(
        &mut self,
        org_id: &str,
        job_id: &str,
        path: &str,
    ) -> Result<String, StoreError> {
        self.get_job(org_id, job_id)?;
        let rows = self.b.query(
            "SELECT content_base64 FROM job_outputs WHERE job_id = $1 AND path = $2",
            &[job_id.into(), path.into()],
        )?;
        rows.first()
            .map(|r| r.str(0))
            .transpose()?
            .ok_or(StoreError::NotFound("output"))
    }

    /// A job's log after position `after`.
    pub fn job_logs(
        &mut self,
        org_id: &str,
        job_id: &str,
        after: i64,
        limit: u32,
    ) -> Result<(JobRow, Vec<LogRow>), StoreError> {
        let job = self.get_job(org_id, job_id)?;
        let rows = self.b.query(
            "SELECT seq, attempt_id, stream, data, created_ms FROM job_logs WHERE job_id = $1 AND seq > $2 \
             ORDER BY seq LIMIT $3",
            &[job_id.into(), after.into(), i64::from(limit).into()],
        )?;
        let logs = rows
            .iter()
            .map(|r| {
                Ok(LogRow {
                    seq: r.i64(0)?,
                    attempt_id: r.str(1)?,
                    stream: r.str(2)?,
                    data: r.str(3)?,
                    created_ms: r.i64(4)?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok((job, logs))
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

    /// The liveness monitor: agents silent past `suspect_ms` become suspect, past `lost_ms` lost,
    /// and their attempts lost — unless more than half of the (at least two) agents went silent at
    /// once, in which case the exchange suspects itself and declares nobody lost. Silence is counted
    /// from `since_ms` at the earliest (this process's start), so a restarted exchange gives agents
    /// time to reconnect.
    pub fn monitor_agents(
        &mut self,
        now_ms: i64,
        suspect_ms: i64,
        lost_ms: i64,
        since_ms: i64,
    ) -> Result<MonitorOutcome, StoreError> {
        let agents: Vec<AgentSeen> = self
            .list_agents(None)?
            .into_iter()
            .map(|a| AgentSeen {
                id: a.id,
                state: a.state,
                last_seen_ms: a.last_seen_ms,
            })
            .collect();
        let silence = Silence {
            suspect_ms,
            lost_ms,
            since_ms,
        };
        let plan = decide_liveness(&agents, silence, now_ms);
        let mut out = MonitorOutcome {
            silent_agents: plan.silent_agents,
            live_agents: plan.live_agents,
            self_suspected: plan.self_suspected,
            ..MonitorOutcome::default()
        };
        for id in &plan.to_suspect {
            self.b.execute(
                "UPDATE agents SET state = 'suspect' WHERE id = $1 AND state = 'alive'",
                &[id.into()],
            )?;
            out.newly_suspect.push(id.clone());
        }
        for id in plan.to_lose {
            self.b.execute(
                "UPDATE agents SET state = 'lost' WHERE id = $1",
                &[(&id).into()],
            )?;
            out.newly_lost.push(id.clone());
            let attempts = self.b.query(
                "SELECT id, job_id FROM attempts WHERE agent_id = $1 AND state IN ('dispatched', 'running')",
                &[(&id).into()],
            )?;
            for r in attempts {
                let (attempt_id, job_id) = (r.str(0)?, r.str(1)?);
                self.b.execute(
                    "UPDATE attempts SET state = 'lost', reason = 'the agent went silent', ended_ms = $2 WHERE id = $1",
                    &[(&attempt_id).into(), now_ms.into()],
                )?;
                let job = self.job(&job_id)?;
                if job.current_attempt_id.as_deref() != Some(attempt_id.as_str())
                    || job.state.is_final()
                {
                    continue;
                }
                match next(
                    job.state,
                    JobEvent::AgentLost {
                        restartable: job.restartable,
                    },
                ) {
                    Ok(JobState::Queued) => {
                        self.b.execute(
                            "UPDATE jobs SET state = 'queued', current_attempt_id = NULL WHERE id = $1",
                            &[(&job.id).into()],
                        )?;
                        out.requeued_jobs.push(job.id);
                    }
                    Ok(_) => {
                        self.finish_job(
                            &job.id,
                            JobState::Lost,
                            None,
                            Some("the agent went silent"),
                            None,
                            now_ms,
                        )?;
                        out.lost_jobs.push(job.id);
                    }
                    Err(_) => {}
                }
            }
        }
        Ok(out)
    }
}
