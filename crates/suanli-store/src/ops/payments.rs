//! Deposits, withdrawals, statements and the ledger check.

use super::*;

impl Tx<'_> {
    // ---------------------------------------------------------------- ledger

    /// The id of an account a decision names.
    pub(super) fn account_of(&mut self, account: &AccountRef) -> Result<String, StoreError> {
        match account {
            AccountRef::Org(org_id, kind) => Ok(account_id(org_id, *kind)),
            AccountRef::Operator(kind) => self.operator_account(*kind),
        }
    }

    pub(super) fn operator_account(&mut self, kind: AccountKind) -> Result<String, StoreError> {
        let op = self
            .operator_org_id()?
            .ok_or_else(|| StoreError::Database("the exchange has no operator org".into()))?;
        Ok(account_id(&op, kind))
    }

    /// Refuses `external_ref` when one of `org_id`'s deposits or withdrawals already used it
    /// (compared ignoring case): an operator reconciles bank statements by that reference, so a
    /// payment is recorded once. Retrying a request is what the idempotency key is for.
    /// The transfer one of `org_id`'s deposits or withdrawals recorded under `external_ref`
    /// (compared ignoring case), if any.
    pub(super) fn recorded_external_ref(
        &mut self,
        org_id: &str,
        external_ref: &str,
    ) -> Result<Option<String>, StoreError> {
        let rows = self.b.query(
            "SELECT transfer_id FROM external_refs WHERE org_id = $1 AND ref_key = $2",
            &[
                org_id.into(),
                crate::schema::external_ref_key(external_ref).into(),
            ],
        )?;
        rows.first().map(|r| r.str(0)).transpose()
    }

    /// Records a deposit or a withdrawal as [`money::decide_payment`] decides it.
    pub(super) fn payment(
        &mut self,
        org_id: &str,
        payment: Payment,
        amount: u64,
        external_ref: &str,
        now_ms: i64,
    ) -> Result<TransferRow, StoreError> {
        let org = match self.get_org(org_id) {
            Ok(org) => Some(org),
            Err(StoreError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let recorded = match &org {
            Some(_) => self.recorded_external_ref(org_id, external_ref)?,
            None => None,
        };
        let plan = money::decide_payment(
            org.as_ref().map(|o| o.id.as_str()),
            payment,
            amount,
            external_ref,
            recorded.as_deref(),
        )?;
        let (debit, credit) = (
            self.account_of(&plan.debit)?,
            self.account_of(&plan.credit)?,
        );
        let t = self.transfer(
            plan.kind,
            &debit,
            &credit,
            plan.amount_micros,
            None,
            None,
            Some(external_ref),
            now_ms,
        )?;
        self.keep_external_ref(org_id, external_ref, &t.id)?;
        Ok(t)
    }

    pub(super) fn keep_external_ref(
        &mut self,
        org_id: &str,
        external_ref: &str,
        transfer_id: &str,
    ) -> Result<(), StoreError> {
        self.b.execute(
            "INSERT INTO external_refs (org_id, ref_key, transfer_id) VALUES ($1, $2, $3)",
            &[
                org_id.into(),
                crate::schema::external_ref_key(external_ref).into(),
                transfer_id.into(),
            ],
        )?;
        Ok(())
    }

    /// Records money received for `org_id` from outside: external → available. The reference
    /// must be new for the org (see [`Tx::check_external_ref`]).
    pub fn deposit(
        &mut self,
        org_id: &str,
        amount: u64,
        external_ref: &str,
        now_ms: i64,
    ) -> Result<TransferRow, StoreError> {
        self.payment(org_id, Payment::Deposit, amount, external_ref, now_ms)
    }

    pub fn withdraw(
        &mut self,
        org_id: &str,
        source: AccountKind,
        amount: u64,
        external_ref: &str,
        now_ms: i64,
    ) -> Result<TransferRow, StoreError> {
        self.payment(
            org_id,
            Payment::Withdrawal { source },
            amount,
            external_ref,
            now_ms,
        )
    }

    pub fn accounts_of(&mut self, org_id: &str) -> Result<Vec<AccountRow>, StoreError> {
        self.flush_ledger()?;
        let rows = self.b.query(
            "SELECT id, org_id, kind, debits_micros, credits_micros FROM accounts WHERE org_id = $1 ORDER BY id",
            &[org_id.into()],
        )?;
        rows.iter()
            .map(account_row)
            .collect::<Result<_, StoreError>>()
    }

    /// Movements on `org_id`'s accounts after ledger position `after`, oldest first.
    pub fn statement(
        &mut self,
        org_id: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<TransferRow>, StoreError> {
        self.flush_ledger()?;
        let rows = self.b.query(
            &format!(
                "SELECT {TRANSFER_COLS} FROM transfers WHERE seq IN (\
                 SELECT seq FROM postings WHERE org_id = $1 AND seq > $2 ORDER BY seq LIMIT $3) \
                 ORDER BY seq"
            ),
            &[org_id.into(), after.into(), i64::from(limit).into()],
        )?;
        rows.iter()
            .map(transfer_row)
            .collect::<Result<_, StoreError>>()
    }

    /// Reads everything the invariant checker needs, in one consistent view when called inside a
    /// transaction.
    /// Every account's totals and every hold.
    pub(super) fn ledger_balances(
        &mut self,
    ) -> Result<(Vec<AccountTotals>, Vec<HoldTotals>), StoreError> {
        self.flush_ledger()?;
        let accounts = self
            .b
            .query(
                "SELECT id, org_id, kind, debits_micros, credits_micros FROM accounts ORDER BY id",
                &[],
            )?
            .iter()
            .map(|r| {
                let a = account_row(r)?;
                Ok(AccountTotals {
                    account_id: a.id,
                    org_id: a.org_id,
                    kind: a.kind,
                    debits_micros: a.debits_micros,
                    credits_micros: a.credits_micros,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        let holds = self
            .b
            .query(
                "SELECT id, org_id, amount_micros, state, resolutions FROM holds ORDER BY id",
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
            .collect::<Result<_, StoreError>>()?;
        Ok((accounts, holds))
    }

    pub fn ledger_snapshot(&mut self) -> Result<LedgerSnapshot, StoreError> {
        let (accounts, holds) = self.ledger_balances()?;
        let sum = self.b.query(
            "SELECT CAST(COALESCE(SUM(amount_micros), 0) AS BIGINT) FROM transfers",
            &[],
        )?;
        // From the transfers alone, in one pass over each side, not through the postings the
        // statement uses: the postings are checked against the transfers below.
        let recomputed = self
            .b
            .query(
                "SELECT a.id, CAST(COALESCE(d.s, 0) AS BIGINT), CAST(COALESCE(c.s, 0) AS BIGINT) \
                 FROM accounts a \
                 LEFT JOIN (SELECT debit_account_id AS id, SUM(amount_micros) AS s FROM transfers \
                 GROUP BY debit_account_id) d ON d.id = a.id \
                 LEFT JOIN (SELECT credit_account_id AS id, SUM(amount_micros) AS s FROM transfers \
                 GROUP BY credit_account_id) c ON c.id = a.id \
                 ORDER BY a.id",
                &[],
            )?
            .iter()
            .map(|r| Ok((r.str(0)?, u128::from(r.u64(1)?), u128::from(r.u64(2)?))))
            .collect::<Result<_, StoreError>>()?;
        let postings = self.b.query(
            "SELECT \
             (SELECT COUNT(*) FROM transfers t \
              JOIN accounts d ON d.id = t.debit_account_id JOIN accounts c ON c.id = t.credit_account_id \
              WHERE NOT EXISTS (SELECT 1 FROM postings p WHERE p.org_id = d.org_id AND p.seq = t.seq) \
              OR NOT EXISTS (SELECT 1 FROM postings p WHERE p.org_id = c.org_id AND p.seq = t.seq)), \
             (SELECT COUNT(*) FROM postings p WHERE NOT EXISTS (SELECT 1 FROM transfers t \
              JOIN accounts d ON d.id = t.debit_account_id JOIN accounts c ON c.id = t.credit_account_id \
              WHERE t.seq = p.seq AND (d.org_id = p.org_id OR c.org_id = p.org_id)))",
            &[],
        )?;
        Ok(LedgerSnapshot {
            accounts,
            holds,
            transfer_amount_sum: sum
                .first()
                .map(|r| Ok::<_, StoreError>(u128::from(r.u64(0)?)))
                .transpose()?
                .unwrap_or(0),
            recomputed,
            transfers_without_postings: postings
                .first()
                .map(|r| r.u64(0))
                .transpose()?
                .unwrap_or(0),
            postings_without_transfer: postings.first().map(|r| r.u64(1)).transpose()?.unwrap_or(0),
        })
    }

    /// Runs the ledger invariant checker over the current state.
    pub fn check_ledger(&mut self) -> Result<Vec<String>, StoreError> {
        Ok(check_invariants(&self.ledger_snapshot()?))
    }

    pub fn count(&mut self, table: &'static str) -> Result<u64, StoreError> {
        self.flush_ledger()?;
        let rows = self
            .b
            .query(&format!("SELECT COUNT(*) FROM {table}"), &[])?;
        Ok(rows.first().map(|r| r.u64(0)).transpose()?.unwrap_or(0))
    }
}
