//! The invariants, checked on the store after every step.

use suanli_core::lease::LeaseState;
use suanli_core::ledger::HoldState;
use suanli_store::{StoreError, Tx};

use crate::world::World;

/// Every invariant the market must keep, as read from the store now. Empty when all hold.
///
/// Every step checks every invariant on everything a step can have changed; `full` (every 50
/// steps and at the end) checks them on everything the store holds. Without that split a seed's
/// cost would grow with the square of its steps, as each step re-read all the history before it.
///
/// - Money: conserved, no negative available balance, held = open holds, every hold resolved at
///   most once, from every account's totals and the holds that bear on them (every step); `full`
///   adds the ledger check's audit of those totals against every transfer and posting.
/// - Capacity: never oversold, never leaked, on every node (every step).
/// - Settlements and usage: no lease billed past its limit or other than its usage, no attempt
///   billed past its time limit or its lease's end, no job running twice. Every step checks the
///   leases active now, those active at the previous check and those bought since: a lease
///   changes only in a step, and only while active. `full` checks every lease, and that a
///   settlement once made never changed.
/// - A retried request never took effect twice: the store has exactly the leases and payments
///   the simulation saw accepted once (every step).
pub fn violations(
    tx: &mut Tx<'_>,
    world: &mut World,
    full: bool,
) -> Result<Vec<String>, StoreError> {
    let mut found = if full {
        tx.check_ledger()?
    } else {
        tx.check_open_balances()?
    };
    found.extend(tx.check_capacity()?);

    let scope: Option<Vec<String>> = (!full).then(|| {
        let mut ids = std::mem::take(&mut world.checked_active);
        ids.extend(
            world.leases[world.checked_leases..]
                .iter()
                .map(|l| l.id.clone()),
        );
        ids.sort();
        ids.dedup();
        ids
    });
    let facts = tx.market_facts(scope.as_deref())?;
    found.extend(suanli_core::audit::check(&facts));
    world.checked_leases = world.leases.len();
    world.checked_active = facts
        .leases
        .iter()
        .filter(|l| l.state == LeaseState::Active || l.hold_state == HoldState::Pending)
        .map(|l| l.id.clone())
        .collect();

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
