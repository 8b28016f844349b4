//! The invariants, checked on the store after every step: each returns what it found wrong.

use std::collections::BTreeMap;

use suanli_core::decide::purchase::Billing;
use suanli_core::ledger::HoldState;
use suanli_store::{StoreError, Tx};

use crate::world::World;

/// Every invariant the market must keep, as read from the store now. Empty when all hold.
pub fn violations(tx: &mut Tx<'_>, world: &mut World) -> Result<Vec<String>, StoreError> {
    // Money conserved, double entry, no negative available balance, held = open holds, every
    // hold resolved at most once (the ledger's own check).
    let mut found = tx.check_ledger()?;
    // Capacity never oversold, never leaked.
    found.extend(tx.check_capacity()?);

    // A retried request never took effect twice: the store has exactly the leases and payments
    // the simulation saw accepted once.
    let leases = tx.count("leases")?;
    if leases != world.purchases {
        found.push(format!(
            "{leases} leases stored, {} purchases accepted",
            world.purchases
        ));
    }
    let payments = tx.count("external_refs")?;
    if payments != world.payments {
        found.push(format!(
            "{payments} payments recorded, {} accepted",
            world.payments
        ));
    }

    if std::env::var_os("SIM_LEDGERONLY").is_some() {
        return Ok(found);
    }
    let mut by_id = BTreeMap::new();
    for org in &world.consumers {
        for l in tx.list_leases(org, Some("consumer"), None, 100_000)? {
            by_id.insert(l.id.clone(), l);
        }
    }
    if by_id.len() as u64 != world.purchases {
        found.push(format!(
            "the consumers list {} leases, {} purchases accepted",
            by_id.len(),
            world.purchases
        ));
    }
    for l in by_id.values() {
        let limit_unit_ms = l.units * l.duration_limit_s * 1_000;
        if l.metered_unit_ms > limit_unit_ms {
            found.push(format!(
                "lease {}: metered {} unit-ms past its limit {limit_unit_ms}",
                l.id, l.metered_unit_ms
            ));
        }
        if !l.state.is_final() {
            if l.hold.state != HoldState::Pending || l.ended_ms.is_some() {
                found.push(format!(
                    "active lease {} has a resolved hold or an end",
                    l.id
                ));
            }
            continue;
        }
        let (Some(billed), Some(cost), Some(fee)) = (l.billed_unit_ms, l.cost_micros, l.fee_micros)
        else {
            found.push(format!("ended lease {} lacks its settlement", l.id));
            continue;
        };
        if billed > limit_unit_ms {
            found.push(format!(
                "lease {}: billed {billed} unit-ms past its limit {limit_unit_ms}",
                l.id
            ));
        }
        if cost > l.hold.amount_micros || fee > cost {
            found.push(format!(
                "lease {}: cost {cost} (fee {fee}) against a hold of {}",
                l.id, l.hold.amount_micros
            ));
        }
        if l.hold.state == HoldState::Pending || l.hold.posted_micros != cost {
            found.push(format!(
                "lease {}: hold {:?} posted {} for a cost of {cost}",
                l.id, l.hold.state, l.hold.posted_micros
            ));
        }
        if l.billing == Billing::Metered && billed != l.metered_unit_ms {
            found.push(format!(
                "metered lease {}: billed {billed} unit-ms, its jobs used {}",
                l.id, l.metered_unit_ms
            ));
        }
        match world.settled.get(&l.id) {
            None => {
                world.settled.insert(l.id.clone(), (billed, cost, fee));
            }
            Some(&first) if first != (billed, cost, fee) => found.push(format!(
                "lease {}: settled as {first:?}, now reads {:?}",
                l.id,
                (billed, cost, fee)
            )),
            Some(_) => {}
        }
    }

    for org in &world.consumers {
        let mut per_lease: BTreeMap<String, u64> = BTreeMap::new();
        for job in tx.list_jobs(org, None, None, 100_000)? {
            let Some(lease) = by_id.get(&job.lease_id) else {
                found.push(format!("job {} of an unknown lease", job.id));
                continue;
            };
            let open: Vec<_> = job
                .attempts
                .iter()
                .filter(|a| !a.state.is_final())
                .collect();
            if open.len() > 1 {
                found.push(format!(
                    "job {}: {} attempts running at once",
                    job.id,
                    open.len()
                ));
            }
            if let Some(a) = open.first() {
                if !job.state.is_final() && job.current_attempt_id.as_deref() != Some(&a.id) {
                    found.push(format!(
                        "job {}: attempt {} runs but {:?} is current",
                        job.id, a.id, job.current_attempt_id
                    ));
                }
            }
            let mut total = 0;
            for a in &job.attempts {
                let limit_ms = i64::try_from(job.time_limit_s * 1_000).unwrap_or(i64::MAX);
                let end = (a.dispatched_ms + limit_ms).min(lease.ends_ms);
                let bound = lease.units * (end - a.dispatched_ms).max(0) as u64;
                if a.unit_ms > bound {
                    found.push(format!(
                        "attempt {}: {} unit-ms used, at most {bound} possible before its time \
                         limit and its lease's end",
                        a.id, a.unit_ms
                    ));
                }
                total += a.unit_ms;
            }
            if total != job.unit_ms {
                found.push(format!(
                    "job {}: {} unit-ms, its attempts {total}",
                    job.id, job.unit_ms
                ));
            }
            *per_lease.entry(job.lease_id.clone()).or_default() += job.unit_ms;
        }
        for (lease_id, used) in per_lease {
            let lease = &by_id[&lease_id];
            if used < lease.metered_unit_ms {
                found.push(format!(
                    "lease {lease_id}: metered {} unit-ms, its jobs used only {used}",
                    lease.metered_unit_ms
                ));
            }
        }
    }
    Ok(found)
}
