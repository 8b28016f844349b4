//! Audits of what the store holds, beyond the ledger check: capacity against the leases holding
//! it, and the facts [`suanli_core::audit::check`] checks settlements and usage on. The market
//! simulation runs them after every step; they scan whole tables, so they are for checks, not for
//! requests.

use suanli_core::audit::{AttemptFacts, JobFacts, LeaseFacts, MarketFacts};
use suanli_core::decide::purchase::Billing;
use suanli_core::job::JobState;
use suanli_core::lease::LeaseState;
use suanli_core::ledger::{check_balances, AccountKind, AccountTotals, HoldState};
use suanli_core::resource::{check_reservations, Capacity, NodeReservation};

use crate::database::{Row, StoreError, Value};
use crate::ops::Tx;

impl Tx<'_> {
    /// Checks capacity as the ledger check checks money: every node's reservations are exactly
    /// the allocations of its active leases, within its capacity. Returns every violation.
    pub fn check_capacity(&mut self) -> Result<Vec<String>, StoreError> {
        let rows = self.b.query(
            "SELECT n.id, n.cpus, n.memory_mib, n.accelerators, \
             n.cpus_reserved, n.memory_mib_reserved, n.accelerators_reserved, \
             CAST(COALESCE(SUM(a.cpus), 0) AS BIGINT), CAST(COALESCE(SUM(a.memory_mib), 0) AS BIGINT), \
             CAST(COALESCE(SUM(a.accelerators), 0) AS BIGINT) \
             FROM nodes n LEFT JOIN (SELECT x.* FROM lease_allocations x JOIN leases l ON l.id = x.lease_id \
             WHERE l.state = 'active') a ON a.node_id = n.id \
             GROUP BY n.id, n.cpus, n.memory_mib, n.accelerators, n.cpus_reserved, n.memory_mib_reserved, \
             n.accelerators_reserved ORDER BY n.id",
            &[],
        )?;
        let capacity = |r: &Row, at: usize| -> Result<Capacity, StoreError> {
            Ok(Capacity {
                cpus: r.u64(at)?,
                memory_mib: r.u64(at + 1)?,
                accelerators: r.u64(at + 2)?,
            })
        };
        let nodes = rows
            .iter()
            .map(|r| {
                Ok(NodeReservation {
                    node_id: r.str(0)?,
                    capacity: capacity(r, 1)?,
                    reserved: capacity(r, 4)?,
                    allocated: capacity(r, 7)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(check_reservations(&nodes))
    }

    /// [`check_balances`] over every account and the holds that bear on it: the open ones, and
    /// any closed one not resolved exactly once. A closed hold resolved once adds nothing to the
    /// held balances and passes the per-hold check, so leaving it out changes no verdict; it is
    /// what keeps this check's cost flat as the ledger grows (the full ledger check,
    /// [`Tx::check_ledger`], reads everything).
    pub fn check_open_balances(&mut self) -> Result<Vec<String>, StoreError> {
        let accounts = self
            .b
            .query(
                "SELECT id, org_id, kind, debits_micros, credits_micros FROM accounts",
                &[],
            )?
            .iter()
            .map(|r| {
                Ok(AccountTotals {
                    account_id: r.str(0)?,
                    org_id: r.str(1)?,
                    kind: r.parsed(2, AccountKind::parse)?,
                    debits_micros: r.u64(3)?,
                    credits_micros: r.u64(4)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let holds = self
            .b
            .query(
                "SELECT id, org_id, amount_micros, state, resolutions FROM holds \
                 WHERE state = 'pending' OR resolutions <> 1",
                &[],
            )?
            .iter()
            .map(|r| {
                Ok((
                    r.str(0)?,
                    r.str(1)?,
                    r.u64(2)?,
                    r.parsed(3, HoldState::parse)?,
                    r.u64(4)?,
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(check_balances(&accounts, &holds))
    }

    /// The facts [`suanli_core::audit::check`] checks: of every lease (`also` = `None`), or of
    /// the active leases and those named in `also`, with their jobs and the jobs' attempts.
    /// Everything a lease's check reads is the lease's own: its hold, its jobs, their attempts.
    pub fn market_facts(&mut self, also: Option<&[String]>) -> Result<MarketFacts, StoreError> {
        // The leases in scope, as a condition on `l` (the same text in each query below).
        let (scope, params): (String, Vec<Value>) = match also {
            None => ("1 = 1".into(), Vec::new()),
            Some(ids) => {
                let mut scope = "l.state = 'active'".to_string();
                if !ids.is_empty() {
                    scope.push_str(" OR l.id IN (");
                    // Numbered parameters: PostgreSQL has no `?` (SQLite reads `$N` as `?N`).
                    let params: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
                    scope.push_str(&params.join(", "));
                    scope.push(')');
                }
                (
                    scope,
                    ids.iter().map(|id| Value::from(id.as_str())).collect(),
                )
            }
        };
        let leases = self
            .b
            .query(
                &format!(
                    "SELECT l.id, l.units, l.duration_limit_s, l.ends_ms, l.state, l.billing, \
                     l.metered_unit_ms, l.ended_ms, l.billed_unit_ms, l.cost_micros, l.fee_micros, \
                     h.amount_micros, h.state, h.posted_micros \
                     FROM leases l JOIN holds h ON h.id = l.hold_id WHERE {scope}"
                ),
                &params,
            )?
            .iter()
            .map(|r| {
                Ok(LeaseFacts {
                    id: r.str(0)?,
                    units: r.u64(1)?,
                    duration_limit_s: r.u64(2)?,
                    ends_ms: r.i64(3)?,
                    state: r.parsed(4, LeaseState::parse)?,
                    billing: r.parsed(5, Billing::parse)?,
                    metered_unit_ms: r.u64(6)?,
                    ended_ms: r.opt_i64(7)?,
                    billed_unit_ms: r.opt_u64(8)?,
                    cost_micros: r.opt_u64(9)?,
                    fee_micros: r.opt_u64(10)?,
                    hold_micros: r.u64(11)?,
                    hold_state: r.parsed(12, HoldState::parse)?,
                    posted_micros: r.u64(13)?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        let jobs = self
            .b
            .query(
                &format!(
                    "SELECT j.id, j.lease_id, j.state, j.current_attempt_id, j.time_limit_s, \
                     j.unit_ms FROM jobs j JOIN leases l ON l.id = j.lease_id WHERE {scope}"
                ),
                &params,
            )?
            .iter()
            .map(|r| {
                Ok(JobFacts {
                    id: r.str(0)?,
                    lease_id: r.str(1)?,
                    state: r.parsed(2, JobState::parse)?,
                    current_attempt_id: r.opt_str(3)?,
                    time_limit_s: r.u64(4)?,
                    unit_ms: r.u64(5)?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        let attempts = self
            .b
            .query(
                &format!(
                    "SELECT a.id, a.job_id, a.state, a.dispatched_ms, a.unit_ms FROM attempts a \
                     JOIN jobs j ON j.id = a.job_id JOIN leases l ON l.id = j.lease_id \
                     WHERE {scope}"
                ),
                &params,
            )?
            .iter()
            .map(|r| {
                Ok(AttemptFacts {
                    id: r.str(0)?,
                    job_id: r.str(1)?,
                    state: r.parsed(2, JobState::parse)?,
                    dispatched_ms: r.i64(3)?,
                    unit_ms: r.u64(4)?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(MarketFacts {
            leases,
            jobs,
            attempts,
        })
    }
}
