//! The invariants, checked on the store after every step.

use suanli_store::{StoreError, Tx};

use crate::world::World;

/// Every invariant the market must keep, as read from the store now. Empty when all hold.
///
/// Money: conserved, no negative available balance, held = open holds, every hold resolved at
/// most once, from the accounts' totals (every step); `full` adds the ledger check's audit of
/// those totals against every transfer and posting (every 50 steps and at the end: it reads the
/// whole ledger, which would make a seed's cost grow with the square of its steps).
pub fn violations(
    tx: &mut Tx<'_>,
    world: &mut World,
    full: bool,
) -> Result<Vec<String>, StoreError> {
    let mut found = if full {
        tx.check_ledger()?
    } else {
        tx.check_balances()?
    };
    // Capacity never oversold, never leaked.
    found.extend(tx.check_capacity()?);
    // Settlements, jobs and usage: no lease billed past its limit or other than its usage, no
    // attempt billed past its time limit or its lease's end, no job running twice.
    let facts = tx.market_facts()?;
    found.extend(suanli_core::audit::check(&facts));

    // A retried request never took effect twice: the store has exactly the leases and payments
    // the simulation saw accepted once.
    if facts.leases.len() as u64 != world.purchases {
        found.push(format!(
            "{} leases stored, {} purchases accepted",
            facts.leases.len(),
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
    // A settlement, once made, never changes.
    for l in &facts.leases {
        let (Some(billed), Some(cost), Some(fee)) = (l.billed_unit_ms, l.cost_micros, l.fee_micros)
        else {
            continue;
        };
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
    Ok(found)
}
