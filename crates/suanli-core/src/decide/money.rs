//! Deposits and withdrawals: money entering and leaving the exchange, once per external reference.

use super::{within, AccountRef, Refusal};
use crate::ledger::{AccountKind, TransferKind};
use crate::validate::MAX_TRANSFER_MICROS;

/// A payment the operator records: a deposit into an org's available balance, or a withdrawal
/// from one of its accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payment {
    Deposit,
    Withdrawal { source: AccountKind },
}

/// The transfer a payment makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentPlan {
    pub kind: TransferKind,
    pub debit: AccountRef,
    pub credit: AccountRef,
    pub amount_micros: u64,
}

/// The accounts a payment for `org_id` moves money between (declared to the writer before it
/// runs): debit, then credit.
pub fn accounts(org_id: &str, payment: Payment) -> [AccountRef; 2] {
    let outside = AccountRef::Operator(AccountKind::External);
    match payment {
        Payment::Deposit => [outside, AccountRef::org(org_id, AccountKind::Available)],
        Payment::Withdrawal { source } => [AccountRef::org(org_id, source), outside],
    }
}

/// Decides a payment's amount, before its org is loaded: 1 to [`MAX_TRANSFER_MICROS`].
pub fn decide_amount(amount_micros: u64) -> Result<(), Refusal> {
    within("amount_micros", amount_micros, 1, MAX_TRANSFER_MICROS)
}

/// Decides a payment for `org_id` (`None` when there is no such org). `recorded_as` is the
/// transfer already recorded under the same external reference for this org, if any: a bank
/// statement's line is recorded once (a retry of the same request goes through its idempotency
/// key instead). Whether the source holds the amount is the ledger's own constraint, applied as
/// the transfer posts.
pub fn decide_payment(
    org_id: Option<&str>,
    payment: Payment,
    amount_micros: u64,
    external_ref: &str,
    recorded_as: Option<&str>,
) -> Result<PaymentPlan, Refusal> {
    let org_id = org_id.ok_or(Refusal::NotFound("org"))?;
    if let Some(transfer) = recorded_as {
        return Err(Refusal::Duplicate {
            field: "external_ref",
            message: format!(
                "external_ref {external_ref:?} is already recorded for this org (transfer \
                 {transfer}); a payment is recorded once (to retry a request, send it again with \
                 the same Idempotency-Key)"
            ),
        });
    }
    if amount_micros == 0 {
        return Err(Refusal::invalid(
            "amount_micros",
            "the amount must be positive",
        ));
    }
    let [debit, credit] = accounts(org_id, payment);
    Ok(PaymentPlan {
        kind: match payment {
            Payment::Deposit => TransferKind::Deposit,
            Payment::Withdrawal { .. } => TransferKind::Withdrawal,
        },
        debit,
        credit,
        amount_micros,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payment_moves_one_micro_yuan_to_a_billion_yuan() {
        assert_eq!(decide_amount(1), Ok(()));
        assert_eq!(decide_amount(MAX_TRANSFER_MICROS), Ok(()));
        for amount in [0, MAX_TRANSFER_MICROS + 1, u64::MAX] {
            assert_eq!(
                decide_amount(amount),
                Err(Refusal::invalid(
                    "amount_micros",
                    "amount_micros must be between 1 and 1000000000000000"
                ))
            );
        }
    }

    #[test]
    fn a_payment_moves_between_the_outside_and_the_org_once() {
        let d = decide_payment(Some("org_a"), Payment::Deposit, 5, "bank-1", None).unwrap();
        assert_eq!(d.debit, AccountRef::Operator(AccountKind::External));
        assert_eq!(d.credit, AccountRef::org("org_a", AccountKind::Available));
        let w = decide_payment(
            Some("org_a"),
            Payment::Withdrawal {
                source: AccountKind::Earnings,
            },
            5,
            "bank-2",
            None,
        )
        .unwrap();
        assert_eq!(w.debit, AccountRef::org("org_a", AccountKind::Earnings));
        assert!(matches!(
            decide_payment(Some("org_a"), Payment::Deposit, 5, "bank-1", Some("tr_1")),
            Err(Refusal::Duplicate {
                field: "external_ref",
                ..
            })
        ));
        assert_eq!(
            decide_payment(None, Payment::Deposit, 5, "x", None),
            Err(Refusal::NotFound("org"))
        );
        assert!(decide_payment(Some("org_a"), Payment::Deposit, 0, "x", None).is_err());
    }
}
