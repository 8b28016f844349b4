//! Ending a lease: who may, what it is billed, and the legs that settle its hold, exactly once.

use super::purchase::Billing;
use super::{AccountRef, Refusal};
use crate::lease::{EndReason, LeaseState, LeaseTerms};
use crate::ledger::{AccountKind, Settlement, TransferKind};

/// What ending a lease needs to know of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSnapshot {
    pub consumer_org_id: String,
    pub provider_org_id: String,
    pub state: LeaseState,
    pub terms: LeaseTerms,
    pub fee_bps: u32,
    pub billing: Billing,
    /// The acknowledged usage of its jobs so far (metered leases).
    pub metered_unit_ms: u64,
}

/// One transfer out of the consumer's held account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leg {
    pub kind: TransferKind,
    pub debit: AccountRef,
    pub credit: AccountRef,
    pub amount_micros: u64,
}

/// What ending the lease does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndPlan {
    pub state: LeaseState,
    pub ended_ms: i64,
    pub billed_unit_ms: u64,
    pub settlement: Settlement,
    /// The transfers that settle the hold, in this order; legs of zero are left out.
    pub legs: Vec<Leg>,
    /// Whether the lease's unfinished jobs are cancelled (metered leases run jobs). Its capacity
    /// always goes back to the pool.
    pub cancel_jobs: bool,
}

/// Decides ending `lease` for `reason` at `now_ms`. `actor` is the org asking (`None`: the
/// exchange's expiry service). Another org's lease reads as missing; the provider may see its
/// lease but not end it.
pub fn decide_end(
    lease: &LeaseSnapshot,
    actor: Option<&str>,
    reason: EndReason,
    now_ms: i64,
) -> Result<EndPlan, Refusal> {
    if let Some(org) = actor {
        if org != lease.consumer_org_id && org != lease.provider_org_id {
            return Err(Refusal::NotFound("lease"));
        }
        if org != lease.consumer_org_id {
            return Err(Refusal::Forbidden(
                "only the consumer that bought a lease ends it".into(),
            ));
        }
    }
    if lease.state.is_final() {
        return Err(Refusal::LeaseNotActive(lease.state));
    }
    let terms = &lease.terms;
    let (billed_unit_ms, settlement) = match lease.billing {
        // The consumer pays the acknowledged usage of its jobs, never more than the hold.
        Billing::Metered => (
            lease.metered_unit_ms,
            terms.settle_unit_ms(lease.metered_unit_ms, lease.fee_bps),
        ),
        Billing::Elapsed => terms.settle_at(now_ms, reason, lease.fee_bps),
    };
    let ended_ms = if reason == EndReason::Expired {
        terms.ends_at_ms()
    } else {
        now_ms
    };
    let held = AccountRef::org(&lease.consumer_org_id, AccountKind::Held);
    let legs = [
        (
            TransferKind::Settle,
            AccountRef::org(&lease.provider_org_id, AccountKind::Earnings),
            settlement.provider_micros,
        ),
        (
            TransferKind::Fee,
            AccountRef::Operator(AccountKind::Fees),
            settlement.fee_micros,
        ),
        (
            TransferKind::Release,
            AccountRef::org(&lease.consumer_org_id, AccountKind::Available),
            settlement.release_micros,
        ),
    ]
    .into_iter()
    .filter(|(_, _, amount)| *amount > 0)
    .map(|(kind, credit, amount_micros)| Leg {
        kind,
        debit: held.clone(),
        credit,
        amount_micros,
    })
    .collect();
    Ok(EndPlan {
        state: reason.final_state(),
        ended_ms,
        billed_unit_ms,
        settlement,
        legs,
        cancel_jobs: lease.billing == Billing::Metered,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(billing: Billing) -> LeaseSnapshot {
        LeaseSnapshot {
            consumer_org_id: "org_c".into(),
            provider_org_id: "org_p".into(),
            state: LeaseState::Active,
            terms: LeaseTerms {
                units: 2,
                price_micros_per_unit_hour: 3_600_000,
                duration_limit_s: 60,
                started_ms: 0,
                hold_micros: 120_000,
            },
            fee_bps: 1_000,
            billing,
            metered_unit_ms: 30_000,
        }
    }

    #[test]
    fn the_legs_add_up_to_the_hold_and_go_where_they_belong() {
        let plan = decide_end(
            &lease(Billing::Elapsed),
            Some("org_c"),
            EndReason::Ended,
            15_000,
        )
        .unwrap();
        assert_eq!(plan.billed_unit_ms, 30_000);
        assert_eq!(plan.settlement.cost_micros, 30_000);
        let total: u64 = plan.legs.iter().map(|l| l.amount_micros).sum();
        assert_eq!(total, 120_000);
        assert_eq!(
            plan.legs[0].credit,
            AccountRef::org("org_p", AccountKind::Earnings)
        );
        assert_eq!(plan.legs[0].amount_micros, 27_000);
        assert_eq!(plan.legs[1].credit, AccountRef::Operator(AccountKind::Fees));
        assert_eq!(plan.legs[1].amount_micros, 3_000);
        assert_eq!(plan.legs[2].amount_micros, 90_000);
        assert!(plan
            .legs
            .iter()
            .all(|l| l.debit == AccountRef::org("org_c", AccountKind::Held)));
        assert!(!plan.cancel_jobs);
        assert_eq!(plan.state, LeaseState::Ended);
    }

    #[test]
    fn metered_leases_bill_their_usage_and_expiry_ends_at_the_limit() {
        let plan = decide_end(&lease(Billing::Metered), None, EndReason::Expired, 90_000).unwrap();
        assert_eq!(plan.billed_unit_ms, 30_000);
        assert_eq!(plan.ended_ms, 60_000);
        assert!(plan.cancel_jobs);
        let elapsed =
            decide_end(&lease(Billing::Elapsed), None, EndReason::Expired, 90_000).unwrap();
        assert_eq!(elapsed.billed_unit_ms, 120_000);
        assert_eq!(
            elapsed.legs.len(),
            2,
            "nothing is released, so no release leg"
        );
    }

    #[test]
    fn only_the_consumer_ends_an_active_lease() {
        let l = lease(Billing::Elapsed);
        assert!(matches!(
            decide_end(&l, Some("org_p"), EndReason::Ended, 1),
            Err(Refusal::Forbidden(_))
        ));
        assert_eq!(
            decide_end(&l, Some("org_x"), EndReason::Ended, 1),
            Err(Refusal::NotFound("lease"))
        );
        let ended = LeaseSnapshot {
            state: LeaseState::Expired,
            ..l
        };
        assert_eq!(
            decide_end(&ended, None, EndReason::Expired, 1),
            Err(Refusal::LeaseNotActive(LeaseState::Expired))
        );
    }
}
