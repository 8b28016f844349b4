//! What the simulation knows of the market it built, and how it picks the next command: mostly
//! ones that can succeed, so that every kind is accepted often enough for the invariants to be
//! tested by real effects, and the rest aimed at each refusal path.

use std::collections::BTreeMap;

use suanli_core::decide::OrgKind;
use suanli_core::job::JobState;
use suanli_core::ledger::AccountKind;

use suanli_store::StoreError;

use crate::cmd::{Cmd, NodeSpec, Outcome};
use crate::rng::Rng;

#[derive(Debug, Clone)]
pub struct LeaseM {
    pub id: String,
    pub consumer: String,
    pub provider: String,
    pub metered: bool,
    /// Known to have ended (the store decides; this only steers the picks).
    pub ended: bool,
}

#[derive(Debug, Clone)]
pub struct AgentM {
    pub id: String,
    pub org: String,
    pub pool: String,
    pub key: String,
    pub generation: u64,
    /// A silent agent sends nothing until it comes back.
    pub silent: bool,
    /// The nodes it last reported.
    pub nodes: Vec<NodeSpec>,
}

#[derive(Debug, Clone)]
pub struct AttemptM {
    pub id: String,
    pub job: String,
    pub agent: String,
    pub org: String,
    pub next_seq: u64,
    pub next_log_seq: u64,
    pub started_ms: Option<i64>,
    pub ended: bool,
}

/// The market as the simulation built it. The store decides what is true; this is what the
/// simulation picks its commands from, and the counts it checks the store against.
#[derive(Debug, Default)]
pub struct World {
    pub operator: String,
    pub consumers: Vec<String>,
    pub providers: Vec<String>,
    pub names: Vec<String>,
    pub pools: Vec<(String, String)>,
    /// (offer, org, max units, known to be withdrawn)
    pub offers: Vec<(String, String, u64, bool)>,
    pub leases: Vec<LeaseM>,
    pub agents: Vec<AgentM>,
    /// (job, org, lease, known to have ended)
    pub jobs: Vec<(String, String, String, bool)>,
    pub attempts: Vec<AttemptM>,
    pub ext_refs: Vec<(String, String)>,
    /// Commands sent with an idempotency key, with the key and the answer they got.
    pub keyed: Vec<(Cmd, String, String)>,
    pub purchases: u64,
    pub payments: u64,
    pub counter: u64,
    /// Settled leases as first seen: (billed unit-ms, cost, fee) must never change.
    pub settled: BTreeMap<String, (u64, u64, u64)>,
    /// The leases the last check found active: a lease leaves that state only in a step, so
    /// these and the leases bought since ([`World::checked_leases`] on) are the ones a step can
    /// have settled.
    pub checked_active: Vec<String>,
    /// How many of [`World::leases`] the last check knew.
    pub checked_leases: usize,
}

impl World {
    fn fresh(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}-{}", self.counter)
    }

    fn org_of_kind(&self, rng: &mut Rng, kind: OrgKind) -> Option<String> {
        match kind {
            OrgKind::Consumer => rng.pick(&self.consumers).cloned(),
            OrgKind::Provider => rng.pick(&self.providers).cloned(),
            OrgKind::Operator => Some(self.operator.clone()),
        }
    }

    /// Any org: mostly of `kind`, sometimes another.
    fn mostly(&self, rng: &mut Rng, kind: OrgKind, percent: u64) -> Option<String> {
        if rng.chance(percent) {
            self.org_of_kind(rng, kind)
        } else {
            let other = if kind == OrgKind::Consumer {
                OrgKind::Provider
            } else {
                OrgKind::Consumer
            };
            self.org_of_kind(rng, other)
        }
    }

    fn nodes(&mut self, rng: &mut Rng) -> Vec<NodeSpec> {
        (0..rng.range(1, 3))
            .map(|_| {
                let name = self.fresh("node");
                (name, rng.range(2, 32), rng.range(2, 64) * 1024)
            })
            .collect()
    }

    /// The next command, or `None` when its kind has nothing to act on yet.
    pub fn next(&mut self, rng: &mut Rng, now_ms: i64, since_ms: i64) -> Option<Cmd> {
        // Kinds and their weights.
        const WEIGHTS: [u64; 20] = [3, 8, 5, 3, 5, 2, 14, 5, 2, 3, 2, 2, 5, 8, 2, 8, 10, 6, 3, 2];
        let kind = rng.weighted(&WEIGHTS);
        Some(match kind {
            0 => {
                // A market of a dozen orgs at most, now and then one more: the checks read
                // every account after every step.
                if self.consumers.len() + self.providers.len() >= 12 && !rng.chance(5) {
                    return None;
                }
                let kind = if rng.chance(50) {
                    OrgKind::Consumer
                } else {
                    OrgKind::Provider
                };
                // Now and then a name taken already (refused: names are unique).
                let name = match rng.pick(&self.names) {
                    Some(taken) if rng.chance(10) => taken.clone(),
                    _ => self.fresh("org"),
                };
                Cmd::Org { kind, name }
            }
            1 => {
                let org = self.mostly(rng, OrgKind::Consumer, 85)?;
                Cmd::Deposit {
                    amount: rng.range(1, 200) * 100_000,
                    ext: self.ext_ref(rng, &org),
                    org,
                }
            }
            2 => {
                let (org, source) = if rng.chance(60) {
                    (
                        self.org_of_kind(rng, OrgKind::Consumer)?,
                        AccountKind::Available,
                    )
                } else {
                    (
                        self.org_of_kind(rng, OrgKind::Provider)?,
                        AccountKind::Earnings,
                    )
                };
                Cmd::Withdraw {
                    amount: rng.range(1, 30) * 10_000,
                    ext: self.ext_ref(rng, &org),
                    org,
                    source,
                }
            }
            3 => {
                if self.pools.len() >= 8 && !rng.chance(5) {
                    return None;
                }
                let org = self.mostly(rng, OrgKind::Provider, 95)?;
                let name = self.fresh("pool");
                Cmd::Pool {
                    org,
                    name,
                    nodes: self.nodes(rng),
                }
            }
            4 => {
                if self.offers.iter().filter(|o| !o.3).count() >= 8 && !rng.chance(5) {
                    return None;
                }
                let (pool, owner) = rng.pick(&self.pools)?.clone();
                let org = if rng.chance(90) {
                    owner
                } else {
                    self.org_of_kind(rng, OrgKind::Provider)?
                };
                let from_ms = now_ms - rng.range(0, 60_000) as i64
                    + if rng.chance(10) { 3_600_000 } else { 0 };
                Cmd::Offer {
                    org,
                    pool,
                    cpus_per_unit: rng.range(1, 4),
                    memory_mib_per_unit: rng.range(1, 4) * 1024,
                    price: rng.range(1, 5_000) * 1_000,
                    min_units: 1,
                    max_units: rng.range(1, 6),
                    from_ms,
                    until_ms: from_ms + rng.range(600, 86_400) as i64 * 1_000,
                }
            }
            5 => {
                let (offer, owner, _, _) = self.offer(rng)?;
                let org = if rng.chance(85) {
                    owner
                } else {
                    self.org_of_kind(rng, OrgKind::Provider)?
                };
                Cmd::WithdrawOffer { org, offer }
            }
            6 => {
                let org = self.mostly(rng, OrgKind::Consumer, 95)?;
                let (offer, _, max_units, _) = self.offer(rng)?;
                let too_many = u64::from(rng.chance(10));
                Cmd::Purchase {
                    org,
                    offer,
                    units: rng.range(1, max_units + too_many),
                    duration_s: rng.range(1, 120) * 60,
                    max_price: rng.chance(15).then(|| rng.range(1, 5_000) * 1_000),
                }
            }
            7 | 8 => {
                let lease = self.lease(rng, |_| true)?;
                let org = match rng.range(0, 19) {
                    0 => lease.provider.clone(),
                    1 => self.org_of_kind(rng, OrgKind::Consumer)?,
                    _ => lease.consumer.clone(),
                };
                Cmd::EndLease {
                    org,
                    lease: lease.id,
                    cancel: kind == 8,
                }
            }
            9 => Cmd::Expire,
            10 => {
                // A new agent for a pool (or with a pool of its own), or a copy of an agent's
                // state directory started elsewhere (same key, new generation).
                if let (true, Some(a)) = (rng.chance(30), rng.pick(&self.agents)) {
                    let a = a.clone();
                    Cmd::Agent {
                        org: a.org,
                        pool: None,
                        key: a.key,
                        renews: None,
                        nodes: Vec::new(),
                    }
                } else {
                    if self.agents.len() >= 6 && !rng.chance(5) {
                        return None;
                    }
                    let (pool, org) = rng.pick(&self.pools)?.clone();
                    let key = self.fresh("key");
                    Cmd::Agent {
                        org,
                        pool: Some(pool),
                        key,
                        renews: None,
                        nodes: Vec::new(),
                    }
                }
            }
            11 => {
                // An agent reports its capacity again: new nodes, or fewer CPUs on one it has.
                let a = rng.pick(&self.agents)?.clone();
                // The nodes it reported, one of them changed, sometimes one more.
                let mut nodes = a.nodes.clone();
                if let Some(i) = (!nodes.is_empty()).then(|| rng.index(nodes.len())) {
                    nodes[i].1 = rng.range(1, 32);
                }
                if nodes.is_empty() || rng.chance(20) {
                    nodes.extend(self.nodes(rng).into_iter().take(1));
                }
                Cmd::Agent {
                    org: a.org,
                    pool: None,
                    key: a.key,
                    renews: Some(if rng.chance(90) {
                        a.generation
                    } else {
                        a.generation.saturating_sub(1)
                    }),
                    nodes,
                }
            }
            12 => {
                let a = self.live_agent(rng)?;
                let running = self
                    .attempts
                    .iter()
                    .filter(|t| t.agent == a.id && !t.ended)
                    .map(|t| t.id.clone())
                    .collect();
                Cmd::Heartbeat {
                    org: a.org,
                    agent: a.id,
                    running,
                }
            }
            13 => {
                let lease = self.lease(rng, |l| l.metered)?;
                let org = if rng.chance(95) {
                    lease.consumer
                } else {
                    self.org_of_kind(rng, OrgKind::Consumer)?
                };
                Cmd::Job {
                    org,
                    lease: lease.id,
                    time_limit_s: rng.chance(70).then(|| rng.range(1, 3_600)),
                    restartable: rng.chance(50),
                }
            }
            14 => {
                let open: Vec<&(String, String, String, bool)> =
                    self.jobs.iter().filter(|j| !j.3).collect();
                let (job, org, _, _) = match (rng.chance(90), open.is_empty()) {
                    (true, false) => open[rng.index(open.len())].clone(),
                    _ => rng.pick(&self.jobs)?.clone(),
                };
                Cmd::CancelJob { org, job }
            }
            15 => {
                let a = self.live_agent(rng)?;
                Cmd::Dispatch {
                    org: a.org,
                    agent: a.id,
                }
            }
            16 => {
                let t = self.open_attempt(rng)?;
                let (state, started_ms, ended_ms) = match t.started_ms {
                    None if rng.chance(80) => (JobState::Running, Some(now_ms), None),
                    started => {
                        let state = match rng.range(0, 9) {
                            0 => JobState::Failed,
                            1 => JobState::Cancelled,
                            _ => JobState::Succeeded,
                        };
                        (state, started.or(Some(now_ms)), Some(now_ms))
                    }
                };
                Cmd::Event {
                    org: t.org,
                    agent: t.agent,
                    attempt: t.id,
                    state,
                    started_ms,
                    ended_ms,
                }
            }
            17 => {
                let t = self.open_attempt(rng)?;
                // Usage for the time since it started (sometimes more than time allows, which
                // the exchange refuses), or a record sent again.
                let elapsed = t.started_ms.map_or(0, |s| (now_ms - s).max(0) as u64);
                let unit_ms = if rng.chance(10) {
                    elapsed * 8 + 60_000
                } else {
                    rng.range(0, elapsed.max(1))
                };
                let seq = if rng.chance(10) && t.next_seq > 1 {
                    t.next_seq - 1
                } else {
                    t.next_seq
                };
                if let Some(m) = self.attempts.iter_mut().find(|m| m.id == t.id) {
                    m.next_seq = m.next_seq.max(seq + 1);
                }
                Cmd::Usage {
                    org: t.org,
                    agent: t.agent,
                    attempt: t.id,
                    seq,
                    unit_ms,
                }
            }
            18 => {
                let t = self.open_attempt(rng)?;
                if let Some(m) = self.attempts.iter_mut().find(|m| m.id == t.id) {
                    m.next_log_seq += 1;
                }
                Cmd::Logs {
                    org: t.org,
                    agent: t.agent,
                    attempt: t.id,
                    seq: t.next_log_seq,
                    bytes: rng.range(1, 24 * 1024) as usize,
                }
            }
            _ => Cmd::Monitor { since_ms },
        })
    }

    fn ext_ref(&mut self, rng: &mut Rng, org: &str) -> String {
        let used: Vec<&String> = self
            .ext_refs
            .iter()
            .filter(|(o, _)| o == org)
            .map(|(_, r)| r)
            .collect();
        if !used.is_empty() && rng.chance(8) {
            // A bank line recorded already (refused), sometimes in other letters' case.
            let r = used[rng.index(used.len())].clone();
            return if rng.chance(50) { r.to_uppercase() } else { r };
        }
        let r = self.fresh("bank");
        self.ext_refs.push((org.to_owned(), r.clone()));
        r
    }

    /// An offer: mostly one not known to be withdrawn, sometimes any.
    fn offer(&self, rng: &mut Rng) -> Option<(String, String, u64, bool)> {
        let open: Vec<&(String, String, u64, bool)> = self.offers.iter().filter(|o| !o.3).collect();
        if rng.chance(90) && !open.is_empty() {
            return Some(open[rng.index(open.len())].clone());
        }
        rng.pick(&self.offers).cloned()
    }

    /// A lease: mostly one not known to have ended (and matching `want`), sometimes any.
    fn lease(&self, rng: &mut Rng, want: impl Fn(&LeaseM) -> bool) -> Option<LeaseM> {
        let open: Vec<&LeaseM> = self.leases.iter().filter(|l| !l.ended && want(l)).collect();
        if rng.chance(90) && !open.is_empty() {
            return Some(open[rng.index(open.len())].clone());
        }
        rng.pick(&self.leases).cloned()
    }

    fn live_agent(&self, rng: &mut Rng) -> Option<AgentM> {
        let live: Vec<&AgentM> = self.agents.iter().filter(|a| !a.silent).collect();
        if live.is_empty() {
            return None;
        }
        Some(live[rng.index(live.len())].clone())
    }

    fn open_attempt(&self, rng: &mut Rng) -> Option<AttemptM> {
        let open: Vec<&AttemptM> = self
            .attempts
            .iter()
            .filter(|t| !t.ended && self.agents.iter().any(|a| a.id == t.agent && !a.silent))
            .collect();
        if open.is_empty() {
            return None;
        }
        Some(open[rng.index(open.len())].clone())
    }

    /// Learns from what a command returned.
    pub fn learn(&mut self, cmd: &Cmd, outcome: &Outcome) {
        match (cmd, outcome) {
            (Cmd::Org { kind, name }, Outcome::Org(id)) => {
                self.names.push(name.clone());
                match kind {
                    OrgKind::Consumer => self.consumers.push(id.clone()),
                    OrgKind::Provider => self.providers.push(id.clone()),
                    OrgKind::Operator => {}
                }
            }
            (Cmd::Deposit { .. } | Cmd::Withdraw { .. }, Outcome::Payment) => self.payments += 1,
            (Cmd::Pool { org, .. }, Outcome::Pool(id)) => {
                self.pools.push((id.clone(), org.clone()))
            }
            (Cmd::Offer { org, max_units, .. }, Outcome::Offer(id)) => {
                self.offers
                    .push((id.clone(), org.clone(), *max_units, false))
            }
            (Cmd::WithdrawOffer { offer, .. }, Outcome::Withdrawn) => {
                if let Some(o) = self.offers.iter_mut().find(|o| o.0 == *offer) {
                    o.3 = true;
                }
            }
            (
                Cmd::Purchase { org, .. },
                Outcome::Lease {
                    id,
                    provider,
                    metered,
                },
            ) => {
                self.purchases += 1;
                self.leases.push(LeaseM {
                    id: id.clone(),
                    consumer: org.clone(),
                    provider: provider.clone(),
                    metered: *metered,
                    ended: false,
                });
            }
            (
                Cmd::Agent {
                    org, key, nodes, ..
                },
                Outcome::Agent {
                    id,
                    pool,
                    generation,
                },
            ) => match self.agents.iter_mut().find(|a| a.id == *id) {
                Some(a) => {
                    a.generation = *generation;
                    a.silent = false;
                    if !nodes.is_empty() {
                        a.nodes = nodes.clone();
                    }
                }
                None => self.agents.push(AgentM {
                    id: id.clone(),
                    org: org.clone(),
                    pool: pool.clone(),
                    key: key.clone(),
                    generation: *generation,
                    silent: false,
                    nodes: nodes.clone(),
                }),
            },
            (Cmd::EndLease { lease, .. }, Outcome::Ended) => self.lease_ended(lease),
            (Cmd::Expire, Outcome::Expired(ids)) => {
                for id in ids.clone() {
                    self.lease_ended(&id);
                }
            }
            (Cmd::Job { org, lease, .. }, Outcome::Job(id)) => {
                self.jobs
                    .push((id.clone(), org.clone(), lease.clone(), false))
            }
            (Cmd::CancelJob { job, .. }, Outcome::JobCancelled) => self.job_ended(job),
            (Cmd::Dispatch { org, agent }, Outcome::Dispatched(list)) => {
                for (attempt, job) in list {
                    self.attempts.push(AttemptM {
                        id: attempt.clone(),
                        job: job.clone(),
                        agent: agent.clone(),
                        org: org.clone(),
                        next_seq: 1,
                        next_log_seq: 1,
                        started_ms: None,
                        ended: false,
                    });
                }
            }
            (
                Cmd::Event {
                    attempt,
                    state,
                    started_ms,
                    ..
                },
                Outcome::Event(_),
            ) => {
                if let Some(t) = self.attempts.iter_mut().find(|t| t.id == *attempt) {
                    if *state == JobState::Running {
                        t.started_ms = *started_ms;
                    }
                    if state.is_final() {
                        t.ended = true;
                    }
                }
            }
            (Cmd::Heartbeat { .. }, Outcome::Heartbeat { stop }) => {
                for id in stop {
                    if let Some(t) = self.attempts.iter_mut().find(|t| t.id == *id) {
                        t.ended = true;
                    }
                }
            }
            _ => {}
        }
    }

    fn lease_ended(&mut self, id: &str) {
        if let Some(l) = self.leases.iter_mut().find(|l| l.id == id) {
            l.ended = true;
        }
        for j in self.jobs.iter_mut().filter(|j| j.2 == id) {
            j.3 = true;
        }
    }

    fn job_ended(&mut self, id: &str) {
        if let Some(j) = self.jobs.iter_mut().find(|j| j.0 == id) {
            j.3 = true;
        }
    }

    /// Learns that a command was refused: leases and jobs that have ended, attempts the exchange
    /// no longer knows as current.
    pub fn learn_refusal(&mut self, cmd: &Cmd, refusal: &StoreError) {
        match (cmd, refusal) {
            (
                Cmd::EndLease { lease, .. } | Cmd::Job { lease, .. },
                StoreError::LeaseNotActive(_),
            ) => self.lease_ended(&lease.clone()),
            (Cmd::CancelJob { job, .. }, StoreError::JobNotActive(_)) => {
                self.job_ended(&job.clone())
            }
            _ => {}
        }
        if let Cmd::Event { attempt, .. } | Cmd::Usage { attempt, .. } | Cmd::Logs { attempt, .. } =
            cmd
        {
            if let Some(t) = self.attempts.iter_mut().find(|t| t.id == *attempt) {
                t.ended = true;
            }
        }
    }
}
