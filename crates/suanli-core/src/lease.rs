//! The lease: units of an offer bought for a duration limit, and how it ends.

use crate::ledger::{billable_ms, settle, Settlement};

/// A lease's state. `Active` until it ends once, by the consumer (`Ended`, `Cancelled`) or by its
/// duration limit passing (`Expired`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    Active,
    Ended,
    Cancelled,
    Expired,
}

impl LeaseState {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseState::Active => "active",
            LeaseState::Ended => "ended",
            LeaseState::Cancelled => "cancelled",
            LeaseState::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(LeaseState::Active),
            "ended" => Some(LeaseState::Ended),
            "cancelled" => Some(LeaseState::Cancelled),
            "expired" => Some(LeaseState::Expired),
            _ => None,
        }
    }

    pub fn is_final(self) -> bool {
        self != LeaseState::Active
    }
}

/// How a consumer or the clock ends a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    Ended,
    Cancelled,
    Expired,
}

impl EndReason {
    pub fn final_state(self) -> LeaseState {
        match self {
            EndReason::Ended => LeaseState::Ended,
            EndReason::Cancelled => LeaseState::Cancelled,
            EndReason::Expired => LeaseState::Expired,
        }
    }
}

/// The terms a lease was bought at, enough to settle it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTerms {
    pub units: u64,
    pub price_micros_per_unit_hour: u64,
    pub duration_limit_s: u64,
    pub started_ms: i64,
    pub hold_micros: u64,
}

impl LeaseTerms {
    /// When the duration limit passes.
    pub fn ends_at_ms(&self) -> i64 {
        let limit_ms =
            i64::try_from(self.duration_limit_s.saturating_mul(1_000)).unwrap_or(i64::MAX);
        self.started_ms.saturating_add(limit_ms)
    }

    /// Settles the lease ending at `now_ms` on its elapsed time (leases without an agent):
    /// units × elapsed milliseconds, capped by the limit; returns the unit-milliseconds billed
    /// and the settlement. An expiry always bills the full limit, even when it is noticed late.
    pub fn settle_at(&self, now_ms: i64, reason: EndReason, fee_bps: u32) -> (u64, Settlement) {
        let end_ms = match reason {
            EndReason::Expired => self.ends_at_ms(),
            _ => now_ms.min(self.ends_at_ms()),
        };
        let unit_ms =
            self.units
                .saturating_mul(billable_ms(self.started_ms, end_ms, self.duration_limit_s));
        (unit_ms, self.settle_unit_ms(unit_ms, fee_bps))
    }

    /// Settles the lease on `unit_ms` of metered use (leases whose jobs an agent ran).
    pub fn settle_unit_ms(&self, unit_ms: u64, fee_bps: u32) -> Settlement {
        settle(
            self.hold_micros,
            self.price_micros_per_unit_hour,
            unit_ms,
            fee_bps,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_end_never_bills_past_the_limit() {
        let t = LeaseTerms {
            units: 2,
            price_micros_per_unit_hour: 3_600,
            duration_limit_s: 60,
            started_ms: 1_000,
            hold_micros: 120,
        };
        assert_eq!(t.ends_at_ms(), 61_000);
        let (unit_ms, s) = t.settle_at(10_000_000, EndReason::Ended, 500);
        assert_eq!(unit_ms, 2 * 60_000);
        assert_eq!(s.cost_micros, 120);
        assert_eq!(s.release_micros, 0);
        // 10.5 s of 2 units at 1 micro per unit-second: 21 micros, the half second included.
        let (unit_ms, s) = t.settle_at(11_500, EndReason::Cancelled, 0);
        assert_eq!(unit_ms, 21_000);
        assert_eq!(s.cost_micros, 21);
        assert_eq!(s.release_micros, 99);
        assert_eq!(t.settle_at(1_000, EndReason::Expired, 0).0, 2 * 60_000);
    }
}
