//! Audits of what the store holds, beyond the ledger check: capacity against the leases holding
//! it, and the facts [`suanli_core::audit::check`] checks settlements and usage on. The market
//! simulation runs them after every step; they read everything, so they are for checks, not for
//! requests.

use suanli_core::audit::{AttemptFacts, JobFacts, LeaseFacts, MarketFacts};
use suanli_core::decide::purchase::Billing;
use suanli_core::job::JobState;
use suanli_core::lease::LeaseState;
use suanli_core::ledger::HoldState;
use suanli_core::resource::{check_reservations, Capacity, NodeReservation};

use crate::database::{Row, StoreError};
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

    /// Every lease with its hold, every job and every attempt, for [`suanli_core::audit::check`].
    pub fn market_facts(&mut self) -> Result<MarketFacts, StoreError> {
        let leases = self
            .b
            .query(
                "SELECT l.id, l.units, l.duration_limit_s, l.ends_ms, l.state, l.billing, \
                 l.metered_unit_ms, l.ended_ms, l.billed_unit_ms, l.cost_micros, l.fee_micros, \
                 h.amount_micros, h.state, h.posted_micros \
                 FROM leases l JOIN holds h ON h.id = l.hold_id ORDER BY l.id",
                &[],
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
                "SELECT id, lease_id, state, current_attempt_id, time_limit_s, unit_ms FROM jobs \
                 ORDER BY id",
                &[],
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
                "SELECT id, job_id, state, dispatched_ms, unit_ms FROM attempts ORDER BY id",
                &[],
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
