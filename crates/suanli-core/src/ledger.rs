//! Ledger rules: accounts, transfer kinds, holds and settlement arithmetic.
//!
//! The model is TigerBeetle's: transfers are immutable and move an amount from a debit account to a
//! credit account, so the books always sum to zero; balances are derived from them. A purchase moves
//! the worst case from the consumer's `available` account to its `held` account and records a
//! **hold**; at settlement the hold ends exactly once, **posted** (cost to the provider's earnings less
//! the fee, fee to the platform, remainder back to available) or **voided** (everything back).

use crate::money::{cost_micros, cost_micros_of_unit_ms, fee_micros, Overflow};

/// An account's role. Every org has `Available`, `Held` and `Earnings`; the operator also has
/// `Fees` (platform fee income) and `External` (the funding account mirroring money outside).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AccountKind {
    Available,
    Held,
    Earnings,
    Fees,
    External,
}

impl AccountKind {
    pub const ALL: [AccountKind; 5] = [
        AccountKind::Available,
        AccountKind::Held,
        AccountKind::Earnings,
        AccountKind::Fees,
        AccountKind::External,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::Available => "available",
            AccountKind::Held => "held",
            AccountKind::Earnings => "earnings",
            AccountKind::Fees => "fees",
            AccountKind::External => "external",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether the balance (credits − debits) must never go below zero. Only the external funding
    /// account may: it mirrors money that came in from outside.
    pub fn must_not_go_negative(self) -> bool {
        self != AccountKind::External
    }
}

/// Why a transfer was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransferKind {
    /// External → available: the operator records money received.
    Deposit,
    /// Available or earnings → external: money paid out.
    Withdrawal,
    /// Available → held: escrow for a purchase.
    Hold,
    /// Held → provider earnings: the cost less the fee.
    Settle,
    /// Held → operator fees.
    Fee,
    /// Held → available: the unused rest of a hold.
    Release,
}

impl TransferKind {
    pub const ALL: [TransferKind; 6] = [
        TransferKind::Deposit,
        TransferKind::Withdrawal,
        TransferKind::Hold,
        TransferKind::Settle,
        TransferKind::Fee,
        TransferKind::Release,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TransferKind::Deposit => "deposit",
            TransferKind::Withdrawal => "withdrawal",
            TransferKind::Hold => "hold",
            TransferKind::Settle => "settle",
            TransferKind::Fee => "fee",
            TransferKind::Release => "release",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A hold's life: pending until it ends, once, as posted (some or all of it charged) or voided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldState {
    Pending,
    Posted,
    Voided,
}

impl HoldState {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldState::Pending => "pending",
            HoldState::Posted => "posted",
            HoldState::Voided => "voided",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(HoldState::Pending),
            "posted" => Some(HoldState::Posted),
            "voided" => Some(HoldState::Voided),
            _ => None,
        }
    }
}

/// How a hold ends: the parts always add up to the hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settlement {
    /// Charged to the consumer: `provider_micros + fee_micros`.
    pub cost_micros: u64,
    pub fee_micros: u64,
    pub provider_micros: u64,
    /// Returned to the consumer's available balance.
    pub release_micros: u64,
}

impl Settlement {
    /// The state the hold ends in: voided when nothing was charged.
    pub fn hold_state(&self) -> HoldState {
        if self.cost_micros == 0 {
            HoldState::Voided
        } else {
            HoldState::Posted
        }
    }
}

/// Milliseconds billed for a lease that started at `started_ms` and ends at `ended_ms`, never
/// past the duration limit.
pub fn billable_ms(started_ms: i64, ended_ms: i64, duration_limit_s: u64) -> u64 {
    let elapsed_ms = ended_ms.saturating_sub(started_ms).max(0) as u64;
    elapsed_ms.min(duration_limit_s.saturating_mul(1_000))
}

/// The worst case a purchase holds: price × units × duration limit.
pub fn hold_amount(
    price_micros_per_unit_hour: u64,
    units: u64,
    duration_limit_s: u64,
) -> Result<u64, Overflow> {
    cost_micros(price_micros_per_unit_hour, units, duration_limit_s)
}

/// Splits a hold for `unit_ms` unit-milliseconds of use, rounding the cost once (down). The
/// charge never exceeds the hold.
pub fn settle(
    hold_micros: u64,
    price_micros_per_unit_hour: u64,
    unit_ms: u64,
    fee_bps: u32,
) -> Settlement {
    let cost = cost_micros_of_unit_ms(price_micros_per_unit_hour, unit_ms)
        .unwrap_or(hold_micros)
        .min(hold_micros);
    let fee = fee_micros(cost, fee_bps);
    Settlement {
        cost_micros: cost,
        fee_micros: fee,
        provider_micros: cost - fee,
        release_micros: hold_micros - cost,
    }
}

/// One account's totals, as read back from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountTotals {
    pub account_id: String,
    pub org_id: String,
    pub kind: AccountKind,
    pub debits_micros: u64,
    pub credits_micros: u64,
}

impl AccountTotals {
    pub fn balance(&self) -> i128 {
        i128::from(self.credits_micros) - i128::from(self.debits_micros)
    }
}

/// What the invariant checker reads: every account, every hold, and the sums over all transfers.
#[derive(Debug, Clone, Default)]
pub struct LedgerSnapshot {
    pub accounts: Vec<AccountTotals>,
    /// (hold id, org id, amount, state, number of times it was resolved)
    pub holds: Vec<HoldTotals>,
    pub transfer_amount_sum: u128,
    /// Sums recomputed from the transfers, per account id: (debits, credits).
    pub recomputed: Vec<(String, u128, u128)>,
    /// Transfers missing the posting of their debit or their credit account (an account's
    /// movements are found through its postings).
    pub transfers_without_postings: u64,
    /// Postings that name no side of a transfer.
    pub postings_without_transfer: u64,
}

/// A hold as the checks read it: (hold id, org id, amount, state, number of times it was resolved).
pub type HoldTotals = (String, String, u64, HoldState, u64);

/// Checks the ledger invariants; returns every violation found, empty when the books are sound.
pub fn check_invariants(s: &LedgerSnapshot) -> Vec<String> {
    let mut violations = check_balances(&s.accounts, &s.holds);
    let debits: u128 = s.accounts.iter().map(|a| u128::from(a.debits_micros)).sum();
    if debits != s.transfer_amount_sum {
        violations.push(format!(
            "account debits {debits} != sum of transfer amounts {}",
            s.transfer_amount_sum
        ));
    }
    for (account_id, d, c) in &s.recomputed {
        match s.accounts.iter().find(|a| &a.account_id == account_id) {
            Some(a) if u128::from(a.debits_micros) == *d && u128::from(a.credits_micros) == *c => {}
            Some(a) => violations.push(format!(
                "account {account_id}: stored totals {}/{} differ from transfers {d}/{c}",
                a.debits_micros, a.credits_micros
            )),
            None => violations.push(format!("transfers name unknown account {account_id}")),
        }
    }
    if s.transfers_without_postings != 0 {
        violations.push(format!(
            "{} transfers lack a posting on their debit or credit account",
            s.transfers_without_postings
        ));
    }
    if s.postings_without_transfer != 0 {
        violations.push(format!(
            "{} postings name no side of a transfer",
            s.postings_without_transfer
        ));
    }
    violations
}

/// The invariants that need only the accounts' totals and the holds: money is conserved (total
/// debits equal total credits), no balance that must not go negative is, every org's held
/// balance is its open holds, and every hold ended at most once. [`check_invariants`] adds the
/// checks of the totals against the transfers themselves.
pub fn check_balances(accounts: &[AccountTotals], holds: &[HoldTotals]) -> Vec<String> {
    let mut violations = Vec::new();
    let debits: u128 = accounts.iter().map(|a| u128::from(a.debits_micros)).sum();
    let credits: u128 = accounts.iter().map(|a| u128::from(a.credits_micros)).sum();
    if debits != credits {
        violations.push(format!("total debits {debits} != total credits {credits}"));
    }
    let mut open: std::collections::BTreeMap<&str, u128> = std::collections::BTreeMap::new();
    for h in holds.iter().filter(|h| h.3 == HoldState::Pending) {
        *open.entry(h.1.as_str()).or_default() += u128::from(h.2);
    }
    for a in accounts {
        if a.kind.must_not_go_negative() && a.balance() < 0 {
            violations.push(format!(
                "account {} ({}) is negative: {}",
                a.account_id,
                a.kind.as_str(),
                a.balance()
            ));
        }
        if a.kind == AccountKind::Held {
            let open = open.get(a.org_id.as_str()).copied().unwrap_or(0);
            if a.balance() != open as i128 {
                violations.push(format!(
                    "org {}: held balance {} != sum of open holds {open}",
                    a.org_id,
                    a.balance()
                ));
            }
        }
    }
    for (id, _, _, state, resolutions) in holds {
        let expected = u64::from(*state != HoldState::Pending);
        if *resolutions != expected {
            violations.push(format!(
                "hold {id} in state {} was resolved {resolutions} times",
                state.as_str()
            ));
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn settlement_splits_exactly() {
        // 4 units at 1 CNY/unit-hour for up to 1 hour: hold 4 CNY; used 30 min.
        let hold = hold_amount(1_000_000, 4, 3_600).unwrap();
        assert_eq!(hold, 4_000_000);
        let s = settle(hold, 1_000_000, 4 * 1_800_000, 500);
        assert_eq!(s.cost_micros, 2_000_000);
        assert_eq!(s.fee_micros, 100_000);
        assert_eq!(s.provider_micros, 1_900_000);
        assert_eq!(s.release_micros, 2_000_000);
        assert_eq!(s.hold_state(), HoldState::Posted);
        assert_eq!(
            settle(hold, 1_000_000, 0, 500).hold_state(),
            HoldState::Voided
        );
    }

    #[test]
    fn billable_time_is_capped_by_the_limit() {
        assert_eq!(billable_ms(0, 59_999, 100), 59_999);
        assert_eq!(billable_ms(0, 500_000, 100), 100_000);
        assert_eq!(billable_ms(10, 0, 100), 0);
    }

    /// Issue 16: usage is counted in unit-milliseconds and the cost is rounded once, at the
    /// end; a short job is billed what it used, not the nothing that whole seconds gave it.
    #[test]
    fn short_use_is_billed_and_rounded_once() {
        // 1 unit at 3.6 CNY/unit-hour is 1 micro per millisecond.
        assert_eq!(settle(3_600_000, 3_600_000, 999, 0).cost_micros, 999);
        // At 0.036 CNY/unit-hour, 10 micros a second: 250 ms of 3 units is 7.5 micros, billed 7
        // once, where rounding each 250 ms record would have billed 2 × 3 = 6 for three records.
        let price = 36_000;
        assert_eq!(settle(1_000, price, 3 * 250, 0).cost_micros, 7);
        assert_eq!(cost_micros_of_unit_ms(price, 750), Ok(7));
    }

    proptest! {
        #[test]
        fn settlement_parts_always_add_up(
            price in 0u64..10_000_000_000,
            units in 1u64..10_000,
            limit in 1u64..10_000_000,
            used_ms in 0u64..20_000_000_000,
            fee_bps in 0u32..=10_000,
        ) {
            if let Ok(hold) = hold_amount(price, units, limit) {
                let s = settle(hold, price, units * used_ms.min(limit * 1_000), fee_bps);
                prop_assert_eq!(s.cost_micros + s.release_micros, hold);
                prop_assert_eq!(s.provider_micros + s.fee_micros, s.cost_micros);
                prop_assert!(s.cost_micros <= hold);
            }
        }
    }

    #[test]
    fn checker_finds_violations() {
        let acct = |id: &str, kind, d, c| AccountTotals {
            account_id: id.into(),
            org_id: "org_a".into(),
            kind,
            debits_micros: d,
            credits_micros: c,
        };
        let mut s = LedgerSnapshot {
            accounts: vec![
                acct("ext", AccountKind::External, 100, 0),
                acct("av", AccountKind::Available, 40, 100),
                acct("hd", AccountKind::Held, 0, 40),
            ],
            holds: vec![("h1".into(), "org_a".into(), 40, HoldState::Pending, 0)],
            transfer_amount_sum: 140,
            recomputed: vec![("av".into(), 40, 100)],
            transfers_without_postings: 0,
            postings_without_transfer: 0,
        };
        assert!(
            check_invariants(&s).is_empty(),
            "{:?}",
            check_invariants(&s)
        );
        s.holds[0].3 = HoldState::Posted;
        assert_eq!(check_invariants(&s).len(), 2);
        s.accounts[1].debits_micros = 200;
        let before = check_invariants(&s).len();
        assert!(before >= 3);
        s.transfers_without_postings = 1;
        assert_eq!(check_invariants(&s).len(), before + 1);
        s.postings_without_transfer = 2;
        let violations = check_invariants(&s);
        assert_eq!(violations.len(), before + 2);
        assert!(
            violations.iter().any(|v| v.contains("2 postings")),
            "{violations:?}"
        );
    }
}
