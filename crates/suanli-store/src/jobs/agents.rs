//! Agents: registration (which pool, which generation), heartbeats, and the liveness monitor.

use suanli_core::decide::liveness::{
    decide_liveness, decide_lost_attempt, decide_registration, decide_report, undelivered,
    AgentSeen, AgentState, DispatchedAttempt, JobOfLostAttempt, LostJob, Silence, SILENT_REASON,
    UNDELIVERED_REASON,
};
use suanli_core::decide::pool::{decide_agent_pool, AgentPool};
use suanli_core::job::JobState;

use super::Tx;
use crate::database::{to_i64, Row, StoreError, Value};
use crate::ops::{new_id, NewNode};

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

const AGENT_COLS: &str =
    "id, org_id, pool_id, name, public_key_hex, backend, isolation, version, state, \
    registered_ms, last_seen_ms, usage_refusals, last_usage_refusal, generation";

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
    /// a node reports at least what is reserved on it. Which pool it serves is
    /// [`decide_agent_pool`]'s, which generation it is [`decide_registration`]'s.
    pub fn register_agent(&mut self, a: &NewAgent, now_ms: i64) -> Result<AgentRow, StoreError> {
        let existing = self
            .b
            .query(
                &format!(
                    "SELECT {AGENT_COLS} FROM agents WHERE org_id = $1 AND public_key_hex = $2"
                ),
                &[(&a.org_id).into(), (&a.public_key_hex).into()],
            )?
            .first()
            .map(agent_row)
            .transpose()?;
        let asked = match &a.pool_id {
            Some(pool_id) => {
                let owner = self
                    .b
                    .query("SELECT org_id FROM pools WHERE id = $1", &[pool_id.into()])?
                    .first()
                    .map(|r| r.str(0))
                    .transpose()?;
                Some((pool_id.as_str(), owner))
            }
            None => None,
        };
        let pool = decide_agent_pool(
            &a.org_id,
            existing.as_ref().map(|e| e.pool_id.as_str()),
            asked.as_ref().map(|(id, owner)| (*id, owner.as_deref())),
        )?;
        let (id, current) = match &existing {
            Some(e) => (e.id.clone(), Some(e.generation)),
            None => (new_id("agent"), None),
        };
        let generation = decide_registration(&id, current, a.renews)?;
        let pool_id = match pool {
            AgentPool::Registered(pool_id) | AgentPool::Asked(pool_id) => pool_id,
            AgentPool::New => {
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
        if existing.is_some() {
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
                    Value::from(to_i64(generation)?),
                ],
            )?;
        } else {
            self.b.execute(
                &format!("INSERT INTO agents ({AGENT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'alive', $9, $9, 0, NULL, $10)"),
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
                    Value::from(to_i64(generation)?),
                ],
            )?;
        }
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

    /// Marks an agent seen now: alive again if it was suspect or lost.
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
        // Attempts dispatched long ago that the agent does not run never reached it.
        let dispatched = self
            .b
            .query(
                "SELECT id, job_id, dispatched_ms FROM attempts WHERE agent_id = $1 AND state = 'dispatched'",
                &[agent_id.into()],
            )?
            .iter()
            .map(|r| {
                Ok(DispatchedAttempt {
                    id: r.str(0)?,
                    job_id: r.str(1)?,
                    dispatched_ms: r.i64(2)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        for gone in undelivered(&dispatched, running, now_ms) {
            self.b.execute(
                "UPDATE attempts SET state = 'lost', reason = $3, ended_ms = $2 \
                 WHERE id = $1 AND state = 'dispatched'",
                &[(&gone.id).into(), now_ms.into(), UNDELIVERED_REASON.into()],
            )?;
            // Back to the queue only while it is still the job's dispatched attempt.
            self.b.execute(
                "UPDATE jobs SET state = 'queued', current_attempt_id = NULL WHERE id = $1 AND current_attempt_id = $2 \
                 AND state = 'dispatched'",
                &[(&gone.job_id).into(), (&gone.id).into()],
            )?;
        }
        Ok((agent, stop))
    }

    /// The liveness monitor: agents silent past `suspect_ms` become suspect, past `lost_ms` lost,
    /// and their attempts lost — unless more than half of the (at least two) agents went silent at
    /// once, in which case the exchange suspects itself and declares nobody lost. Silence is counted
    /// from `since_ms` at the earliest (this process's start), so a restarted exchange gives agents
    /// time to reconnect ([`decide_liveness`]). A job whose current attempt is lost goes back to
    /// the queue or ends lost ([`decide_lost_attempt`]).
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
            // The attempts it had open are lost with it.
            let attempts = self.b.query(
                "SELECT id, job_id FROM attempts WHERE agent_id = $1 AND state IN ('dispatched', 'running')",
                &[(&id).into()],
            )?;
            for r in attempts {
                let (attempt_id, job_id) = (r.str(0)?, r.str(1)?);
                self.b.execute(
                    "UPDATE attempts SET state = 'lost', reason = $3, ended_ms = $2 WHERE id = $1",
                    &[(&attempt_id).into(), now_ms.into(), SILENT_REASON.into()],
                )?;
                let job = self.job(&job_id)?;
                let seen = JobOfLostAttempt {
                    state: job.state,
                    current_attempt_id: job.current_attempt_id,
                    restartable: job.restartable,
                };
                match decide_lost_attempt(&attempt_id, &seen) {
                    Some(LostJob::Requeue) => {
                        self.b.execute(
                            "UPDATE jobs SET state = 'queued', current_attempt_id = NULL WHERE id = $1",
                            &[(&job.id).into()],
                        )?;
                        out.requeued_jobs.push(job.id);
                    }
                    Some(LostJob::Lose) => {
                        self.finish_job(
                            &job.id,
                            JobState::Lost,
                            None,
                            Some(SILENT_REASON),
                            None,
                            now_ms,
                        )?;
                        out.lost_jobs.push(job.id);
                    }
                    None => {}
                }
            }
        }
        Ok(out)
    }
}
