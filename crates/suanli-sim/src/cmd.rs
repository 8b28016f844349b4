//! The commands the simulation sends, as data (so a retry can send one again), and how each runs
//! on the real store: through [`Tx::once`], exactly as the exchange's server runs a request.

use suanli_core::decide::OrgKind;
use suanli_core::job::JobState;
use suanli_core::lease::EndReason;
use suanli_core::ledger::AccountKind;
use suanli_core::resource::{Category, ResourceClass};
use suanli_store::jobs::{AttemptReport, NewAgent, NewJob, VerifiedUsage};
use suanli_store::once::{Encoded, Key, Once};
use suanli_store::ops::{new_id, NewNode, NewOffer, OrgRow, Purchase};
use suanli_store::{StoreError, Tx};

/// The platform's fee, in basis points.
pub const FEE_BPS: u32 = 500;
/// Silence before an agent is suspect, then lost.
pub const SUSPECT_MS: i64 = 30_000;
pub const LOST_MS: i64 = 120_000;
/// The exchange's cap on one job's logs (small, so that the cap is reached).
pub const MAX_LOG_BYTES: u64 = 64 * 1024;

/// A node as the simulation describes it: name, CPUs, memory.
pub type NodeSpec = (String, u64, u64);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    Org {
        kind: OrgKind,
        name: String,
    },
    Deposit {
        org: String,
        amount: u64,
        ext: String,
    },
    Withdraw {
        org: String,
        source: AccountKind,
        amount: u64,
        ext: String,
    },
    Pool {
        org: String,
        name: String,
        nodes: Vec<NodeSpec>,
    },
    Offer {
        org: String,
        pool: String,
        cpus_per_unit: u64,
        memory_mib_per_unit: u64,
        price: u64,
        min_units: u64,
        max_units: u64,
        from_ms: i64,
        until_ms: i64,
    },
    WithdrawOffer {
        org: String,
        offer: String,
    },
    Purchase {
        org: String,
        offer: String,
        units: u64,
        duration_s: u64,
        max_price: Option<u64>,
    },
    EndLease {
        org: String,
        lease: String,
        cancel: bool,
    },
    Expire,
    Agent {
        org: String,
        pool: Option<String>,
        key: String,
        renews: Option<u64>,
        nodes: Vec<NodeSpec>,
    },
    Heartbeat {
        org: String,
        agent: String,
        running: Vec<String>,
    },
    Job {
        org: String,
        lease: String,
        time_limit_s: Option<u64>,
        restartable: bool,
    },
    CancelJob {
        org: String,
        job: String,
    },
    Dispatch {
        org: String,
        agent: String,
    },
    Event {
        org: String,
        agent: String,
        attempt: String,
        state: JobState,
        started_ms: Option<i64>,
        ended_ms: Option<i64>,
    },
    Usage {
        org: String,
        agent: String,
        attempt: String,
        seq: u64,
        unit_ms: u64,
    },
    Logs {
        org: String,
        agent: String,
        attempt: String,
        seq: u64,
        bytes: usize,
    },
    Monitor {
        since_ms: i64,
    },
}

/// What a command returned, as far as the simulation's model needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Org(String),
    Payment,
    Pool(String),
    Offer(String),
    Withdrawn,
    Lease {
        id: String,
        provider: String,
        metered: bool,
    },
    Ended,
    Expired(Vec<String>),
    Agent {
        id: String,
        pool: String,
        generation: u64,
    },
    Heartbeat {
        stop: Vec<String>,
    },
    Job(String),
    JobCancelled,
    Dispatched(Vec<(String, String)>),
    Event(JobState),
    Usage {
        refused: usize,
    },
    Logs,
    Monitor {
        lost: Vec<String>,
    },
}

impl Cmd {
    /// The kind of command, for the acceptance table.
    pub fn kind(&self) -> &'static str {
        match self {
            Cmd::Org { .. } => "create org",
            Cmd::Deposit { .. } => "deposit",
            Cmd::Withdraw { .. } => "withdrawal",
            Cmd::Pool { .. } => "create pool",
            Cmd::Offer { .. } => "create offer",
            Cmd::WithdrawOffer { .. } => "withdraw offer",
            Cmd::Purchase { .. } => "purchase",
            Cmd::EndLease { cancel: false, .. } => "end lease",
            Cmd::EndLease { cancel: true, .. } => "cancel lease",
            Cmd::Expire => "expire leases",
            Cmd::Agent { renews: None, .. } => "agent register",
            Cmd::Agent { .. } => "agent renew",
            Cmd::Heartbeat { .. } => "agent heartbeat",
            Cmd::Job { .. } => "create job",
            Cmd::CancelJob { .. } => "cancel job",
            Cmd::Dispatch { .. } => "agent poll/dispatch",
            Cmd::Event { .. } => "agent event",
            Cmd::Usage { .. } => "agent usage",
            Cmd::Logs { .. } => "agent logs",
            Cmd::Monitor { .. } => "monitor (suspect/lost)",
        }
    }

    /// The org on whose behalf the command is sent (its idempotency keys are the org's).
    pub fn org<'a>(&'a self, operator: &'a str) -> &'a str {
        match self {
            Cmd::Org { .. } | Cmd::Expire | Cmd::Monitor { .. } => operator,
            Cmd::Deposit { .. } | Cmd::Withdraw { .. } => operator,
            Cmd::Pool { org, .. }
            | Cmd::Offer { org, .. }
            | Cmd::WithdrawOffer { org, .. }
            | Cmd::Purchase { org, .. }
            | Cmd::EndLease { org, .. }
            | Cmd::Agent { org, .. }
            | Cmd::Heartbeat { org, .. }
            | Cmd::Job { org, .. }
            | Cmd::CancelJob { org, .. }
            | Cmd::Dispatch { org, .. }
            | Cmd::Event { org, .. }
            | Cmd::Usage { org, .. }
            | Cmd::Logs { org, .. } => org,
        }
    }

    /// Runs the command once under `key` (`None`: no idempotency key) at `now_ms`. Returns the
    /// answer, and what the command returned when it ran now (not for a stored answer).
    pub fn run(
        &self,
        tx: &mut Tx<'_>,
        operator: &str,
        key: Option<&str>,
        now_ms: i64,
    ) -> Result<(Once, Option<Result<Outcome, StoreError>>), StoreError> {
        let request = format!("{self:?}");
        let key = Key {
            org_id: self.org(operator),
            key,
            request_sha256: &request,
        };
        let mut ran = None;
        let once = tx.once(
            &key,
            now_ms,
            |tx| self.apply(tx, now_ms),
            |result| {
                let encoded = match &result {
                    Ok(outcome) => Encoded {
                        status: 200,
                        body: format!("{outcome:?}"),
                        stored_body: None,
                    },
                    Err(refusal) => Encoded {
                        status: 409,
                        body: format!("{refusal:?}"),
                        stored_body: None,
                    },
                };
                ran = Some(result);
                Ok(encoded)
            },
        )?;
        Ok((once, ran))
    }

    fn apply(&self, tx: &mut Tx<'_>, now_ms: i64) -> Result<Outcome, StoreError> {
        Ok(match self {
            Cmd::Org { kind, name } => {
                let row = OrgRow {
                    id: new_id("org"),
                    name: name.clone(),
                    kind: *kind,
                    consumer_type: (*kind == OrgKind::Consumer).then(|| "enterprise".into()),
                    zone: "wuqing-core".into(),
                    origin_region: "tianjin".into(),
                    created_ms: now_ms,
                    name_unique: true,
                };
                tx.create_org(&row, "admin", None)?;
                Outcome::Org(row.id)
            }
            Cmd::Deposit { org, amount, ext } => {
                tx.deposit(org, *amount, ext, now_ms)?;
                Outcome::Payment
            }
            Cmd::Withdraw {
                org,
                source,
                amount,
                ext,
            } => {
                tx.withdraw(org, *source, *amount, ext, now_ms)?;
                Outcome::Payment
            }
            Cmd::Pool { org, name, nodes } => {
                let pool = tx.create_pool(org, name, "wuqing-core", &new_nodes(nodes), now_ms)?;
                Outcome::Pool(pool.id)
            }
            Cmd::Offer {
                org,
                pool,
                cpus_per_unit,
                memory_mib_per_unit,
                price,
                min_units,
                max_units,
                from_ms,
                until_ms,
            } => {
                let offer = tx.create_offer(
                    &NewOffer {
                        org_id: org.clone(),
                        pool_id: pool.clone(),
                        class: ResourceClass {
                            category: Category::General,
                            qualifier: None,
                        },
                        cpus_per_unit: *cpus_per_unit,
                        memory_mib_per_unit: *memory_mib_per_unit,
                        price_micros_per_unit_hour: *price,
                        min_units: *min_units,
                        max_units: *max_units,
                        valid_from_ms: *from_ms,
                        valid_until_ms: *until_ms,
                    },
                    now_ms,
                )?;
                Outcome::Offer(offer.id)
            }
            Cmd::WithdrawOffer { org, offer } => {
                tx.withdraw_offer(org, offer)?;
                Outcome::Withdrawn
            }
            Cmd::Purchase {
                org,
                offer,
                units,
                duration_s,
                max_price,
            } => {
                let lease = tx.purchase(&Purchase {
                    consumer_org_id: org.clone(),
                    offer_id: offer.clone(),
                    units: *units,
                    duration_limit_s: *duration_s,
                    max_price_micros_per_unit_hour: *max_price,
                    fee_bps: FEE_BPS,
                    now_ms,
                    auto_end: false,
                })?;
                Outcome::Lease {
                    id: lease.id,
                    provider: lease.provider_org_id,
                    metered: lease.billing == suanli_core::decide::purchase::Billing::Metered,
                }
            }
            Cmd::EndLease { org, lease, cancel } => {
                let reason = if *cancel {
                    EndReason::Cancelled
                } else {
                    EndReason::Ended
                };
                tx.end_lease(Some(org), lease, reason, now_ms)?;
                Outcome::Ended
            }
            Cmd::Expire => {
                // As the exchange's expiry service: every lease past its limit, one by one.
                let due = tx.due_leases(now_ms, 256)?;
                for id in &due {
                    tx.end_lease(None, id, EndReason::Expired, now_ms)?;
                }
                Outcome::Expired(due)
            }
            Cmd::Agent {
                org,
                pool,
                key,
                renews,
                nodes,
            } => {
                let agent = tx.register_agent(
                    &NewAgent {
                        org_id: org.clone(),
                        name: format!("agent {key}"),
                        zone: "wuqing-core".into(),
                        public_key_hex: key.clone(),
                        backend: "local".into(),
                        isolation: "sandbox".into(),
                        version: "sim".into(),
                        nodes: new_nodes(nodes),
                        pool_id: pool.clone(),
                        renews: *renews,
                    },
                    now_ms,
                )?;
                Outcome::Agent {
                    id: agent.id,
                    pool: agent.pool_id,
                    generation: agent.generation,
                }
            }
            Cmd::Heartbeat {
                org,
                agent,
                running,
            } => {
                let (_, stop) = tx.heartbeat(org, agent, running, now_ms)?;
                Outcome::Heartbeat { stop }
            }
            Cmd::Job {
                org,
                lease,
                time_limit_s,
                restartable,
            } => {
                let job = tx.create_job(
                    &NewJob {
                        org_id: org.clone(),
                        lease_id: lease.clone(),
                        name: "sim job".into(),
                        spec: "{}".into(),
                        restartable: *restartable,
                        time_limit_s: *time_limit_s,
                    },
                    now_ms,
                )?;
                Outcome::Job(job.id)
            }
            Cmd::CancelJob { org, job } => {
                tx.cancel_job(org, job, now_ms)?;
                Outcome::JobCancelled
            }
            Cmd::Dispatch { org, agent } => {
                let dispatched = tx.dispatch(org, agent, 4, now_ms, true)?;
                Outcome::Dispatched(
                    dispatched
                        .into_iter()
                        .map(|d| (d.attempt_id, d.job.id))
                        .collect(),
                )
            }
            Cmd::Event {
                org,
                agent,
                attempt,
                state,
                started_ms,
                ended_ms,
            } => {
                let job = tx.attempt_event(
                    org,
                    agent,
                    attempt,
                    &AttemptReport {
                        state: *state,
                        exit_code: match state {
                            JobState::Succeeded => Some(0),
                            JobState::Failed => Some(1),
                            _ => None,
                        },
                        message: None,
                        backend_id: None,
                        started_ms: *started_ms,
                        ended_ms: *ended_ms,
                    },
                    now_ms,
                )?;
                Outcome::Event(job.state)
            }
            Cmd::Usage {
                org,
                agent,
                attempt,
                seq,
                unit_ms,
            } => {
                let out = tx.record_usage(
                    org,
                    agent,
                    attempt,
                    &[VerifiedUsage {
                        seq: *seq,
                        unit_ms: *unit_ms,
                        cpu_ms: None,
                        peak_memory_mib: None,
                        signature_hex: "00".into(),
                    }],
                    now_ms,
                )?;
                Outcome::Usage {
                    refused: out.refused.len(),
                }
            }
            Cmd::Logs {
                org,
                agent,
                attempt,
                seq,
                bytes,
            } => {
                let chunk = (*seq, "stdout".to_owned(), "x".repeat(*bytes));
                tx.append_logs(org, agent, attempt, &[chunk], MAX_LOG_BYTES, now_ms)?;
                Outcome::Logs
            }
            Cmd::Monitor { since_ms } => {
                let out = tx.monitor_agents(now_ms, SUSPECT_MS, LOST_MS, *since_ms)?;
                Outcome::Monitor {
                    lost: out.newly_lost,
                }
            }
        })
    }
}

fn new_nodes(nodes: &[NodeSpec]) -> Vec<NewNode> {
    nodes
        .iter()
        .map(|(name, cpus, memory_mib)| NewNode {
            name: name.clone(),
            cpus: *cpus,
            memory_mib: *memory_mib,
            accelerator_model: None,
            accelerators: 0,
            partition: None,
        })
        .collect()
}
