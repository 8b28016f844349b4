//! Transfers within a write transaction: balances checked and moved in memory, rows written once.
//!
//! Recording each transfer as it is made costs three statements (two conditional balance
//! `UPDATE`s and an `INSERT`; on PostgreSQL one statement of data-modifying CTEs that executes all
//! three), and a batch of transfers that share an account (the operator's external account takes
//! every deposit) updates that account's row once per transfer. A transaction instead keeps a
//! [`LedgerBuffer`]:
//!
//! - the first transfer that touches an account in the transaction reads its balance, on
//!   PostgreSQL with `FOR UPDATE`, so that another exchange process writing to the same database
//!   waits for this transaction instead of spending the same funds (the row lock the conditional
//!   `UPDATE` used to take, taken at the read);
//! - the funds check, the overflow check, both balances after and the transfer's sequence number
//!   are computed in memory;
//! - the rows are written when the transaction commits, at every savepoint boundary, and before
//!   any read of `accounts` or `transfers` in the transaction: each changed account once, with its
//!   final totals, and the transfers.
//!
//! A rollback (of the transaction or to a savepoint) forgets everything buffered and cached; the
//! next transfer reads the balances again. A [`Tx`] outside the writer (no batch) writes each
//! transfer through at once.
//!
//! Sequence numbers are taken before the row is written, so that a transfer's answer carries its
//! ledger position, and while the transfer's accounts are locked, so that positions follow the
//! order in which each account's balance changed, also across processes. On SQLite (the write
//! transaction holds the database's one write lock) it is the next after the table's largest,
//! read once per transaction. On PostgreSQL it comes from the table's sequence: with the locking
//! read of a new account, in the same statement; otherwise (every account already locked) from a
//! block of [`SEQ_BLOCK`] reserved after the last lock. Numbers reserved and not used are gaps, as
//! a rolled-back `nextval` already leaves.
//!
//! The flush differs by database: on PostgreSQL the changed accounts and the new transfers travel
//! as two JSON documents in one statement (one round trip, one prepared statement for any size);
//! on SQLite, where a statement costs no round trip, each is a small prepared statement.

use std::collections::{HashMap, VecDeque};

use suanli_core::ledger::{AccountKind, TransferKind};

use crate::database::{to_i64, Row, StoreError, Value};
use crate::ops::{account_org, TransferRow, Tx, TRANSFER_COLS};

/// What a transfer refers to besides its accounts: the hold it belongs to, the lease, the
/// external payment reference, the access request to a data product.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TransferRefs<'r> {
    pub hold_id: Option<&'r str>,
    pub lease_id: Option<&'r str>,
    pub external_ref: Option<&'r str>,
    pub access_request_id: Option<&'r str>,
}

/// The largest debits or credits total an account may reach (the schema's `CHECK`).
const MAX_TOTAL_MICROS: u64 = 4_000_000_000_000_000_000;

/// Sequence numbers reserved from PostgreSQL at a time.
const SEQ_BLOCK: i64 = 16;

/// An account's totals as the transaction sees them.
#[derive(Debug, Clone, Copy)]
struct Totals {
    debits: u64,
    credits: u64,
    /// Changed since the last flush (the account is then in `LedgerBuffer::changed`).
    unwritten: bool,
}

impl Totals {
    fn balance(self) -> i64 {
        // Both are at most MAX_TOTAL_MICROS, so neither conversion nor the difference overflows.
        self.credits as i64 - self.debits as i64
    }
}

/// The ledger state of one write transaction: see the module documentation.
#[derive(Debug, Default)]
pub struct LedgerBuffer {
    /// Totals of every account read or changed in the transaction.
    accounts: HashMap<String, Totals>,
    /// Accounts changed since the last flush, in the order first changed.
    changed: Vec<String>,
    /// Transfers not yet written, in sequence order.
    transfers: Vec<TransferRow>,
    /// SQLite: the next sequence number, once read in this transaction.
    next_seq: Option<i64>,
    /// PostgreSQL: sequence numbers reserved since the transaction last locked an account, not
    /// yet used.
    reserved_seqs: VecDeque<i64>,
}

impl LedgerBuffer {
    /// Forgets what the transaction buffered and read: it was rolled back, or what it kept may
    /// no longer be what the database holds.
    pub fn clear(&mut self) {
        self.accounts.clear();
        self.changed.clear();
        self.transfers.clear();
        self.next_seq = None;
        self.reserved_seqs.clear();
    }

    /// Keeps the totals of the accounts among `rows` (`id, debits, credits, NULL`, as the account
    /// reads return them) and returns the sequence numbers of the others (`NULL, …, seq`).
    fn keep_read(&mut self, rows: &[Row]) -> Result<Vec<i64>, StoreError> {
        let mut seqs = Vec::new();
        for r in rows {
            match r.opt_str(0)? {
                Some(id) => {
                    self.accounts.insert(
                        id,
                        Totals {
                            debits: r.u64(1)?,
                            credits: r.u64(2)?,
                            unwritten: false,
                        },
                    );
                }
                None => seqs.extend(r.opt_i64(3)?),
            }
        }
        Ok(seqs)
    }

    /// Accounts whose totals are kept.
    pub(crate) fn kept(&self) -> usize {
        self.accounts.len()
    }

    fn is_flushed(&self) -> bool {
        self.changed.is_empty() && self.transfers.is_empty()
    }
}

/// The locking read of one or two accounts on PostgreSQL, with the transfer's sequence number:
/// the count aggregates every locked row before the projection above it calls `nextval`, so the
/// number is taken after the locks.
macro_rules! locking_read {
    ($wanted:literal) => {
        concat!(
            "WITH l AS MATERIALIZED (SELECT id, debits_micros, credits_micros FROM accounts \
             WHERE ",
            $wanted,
            " FOR UPDATE) \
             SELECT id, debits_micros, credits_micros, NULL::bigint FROM l UNION ALL \
             SELECT NULL, NULL, NULL, nextval(pg_get_serial_sequence('transfers', 'seq')) \
             FROM (SELECT count(*) FROM l) AS locked"
        )
    };
}

/// The read of one or two accounts' totals by [`Tx::read_balances`] (chosen per transfer, so
/// fixed texts rather than formatted ones); the fourth column is the sequence number.
fn balances_sql(postgres: bool, two: bool) -> &'static str {
    match (postgres, two) {
        (true, true) => locking_read!("id IN ($1, $2)"),
        (true, false) => locking_read!("id = $1"),
        (false, true) => {
            "SELECT id, debits_micros, credits_micros, NULL FROM accounts WHERE id IN ($1, $2)"
        }
        (false, false) => {
            "SELECT id, debits_micros, credits_micros, NULL FROM accounts WHERE id = $1"
        }
    }
}

/// The read of the accounts a batch's jobs declared ([`Tx::read_accounts`]), given as a JSON
/// array of ids. On PostgreSQL it locks them in id order (so that two processes locking
/// overlapping sets cannot deadlock on them) and then, once every lock is held, takes `$reserve`
/// ledger positions for the batch's transfers, as [`locking_read!`] does for one transfer. The
/// count is a constant of the text, not a parameter: with a parameter PostgreSQL estimates 1,000
/// rows for `generate_series`, finds its generic plan dearer than a custom one and plans the
/// statement again at every execution (a third of its time).
macro_rules! lock_declared {
    ($reserve:literal) => {
        concat!(
            "WITH l AS MATERIALIZED (SELECT id, debits_micros, credits_micros \
             FROM accounts WHERE id = ANY(ARRAY(SELECT json_array_elements_text($1::text::json))) \
             ORDER BY id FOR UPDATE) \
             SELECT id, debits_micros, credits_micros, NULL::bigint FROM l UNION ALL \
             SELECT NULL, NULL, NULL, nextval(pg_get_serial_sequence('transfers', 'seq')) \
             FROM (SELECT count(*) FROM l) AS locked, generate_series(1, ",
            $reserve,
            ")"
        )
    };
}

/// [`lock_declared!`] reserving at least `wanted` positions (at most 1,024; a batch that needs
/// more reserves them as it goes, still after its locks).
fn lock_declared_sql(wanted: usize) -> &'static str {
    match wanted {
        0..=16 => lock_declared!("16"),
        17..=64 => lock_declared!("64"),
        65..=256 => lock_declared!("256"),
        _ => lock_declared!("1024"),
    }
}
/// `CROSS JOIN` keeps `json_each` the outer loop, one primary-key lookup per id: as
/// `id IN (SELECT value FROM json_each($1))`, SQLite built a temporary b-tree of the ids first,
/// opening a temporary database at every batch (~40 % of the read).
const READ_DECLARED_SQLITE: &str = "SELECT a.id, a.debits_micros, a.credits_micros, NULL \
     FROM json_each($1) AS j CROSS JOIN accounts AS a ON a.id = j.value";

/// SQLite's flush: one prepared statement per changed account and per transfer (statements cost
/// no round trip there; multi-row forms measured no faster).
const UPDATE_ACCOUNT: &str =
    "UPDATE accounts SET debits_micros = $2, credits_micros = $3 WHERE id = $1";

impl<'a> Tx<'a> {
    /// Moves `amount` from `debit` to `credit`. The debit account must keep a non-negative balance
    /// unless it is an external account. Checked and applied in memory (see the module
    /// documentation); the rows are written by the next flush.
    #[allow(clippy::too_many_arguments)]
    pub fn transfer(
        &mut self,
        kind: TransferKind,
        debit: &str,
        credit: &str,
        amount: u64,
        hold_id: Option<&str>,
        lease_id: Option<&str>,
        external_ref: Option<&str>,
        now_ms: i64,
    ) -> Result<TransferRow, StoreError> {
        let refs = TransferRefs {
            hold_id,
            lease_id,
            external_ref,
            access_request_id: None,
        };
        self.transfer_with(kind, debit, credit, amount, refs, now_ms)
    }

    /// [`Tx::transfer`] with every reference a transfer may carry (a data product's access
    /// request among them).
    pub(crate) fn transfer_with(
        &mut self,
        kind: TransferKind,
        debit: &str,
        credit: &str,
        amount: u64,
        refs: TransferRefs<'_>,
        now_ms: i64,
    ) -> Result<TransferRow, StoreError> {
        let TransferRefs {
            hold_id,
            lease_id,
            external_ref,
            access_request_id,
        } = refs;
        if amount == 0 {
            return Err(StoreError::invalid(
                "amount_micros",
                "must be greater than zero",
            ));
        }
        if debit == credit {
            return Err(StoreError::invalid(
                "account",
                "a transfer moves money between two different accounts",
            ));
        }
        to_i64(amount)?;
        let locked_seq = self.read_balances(debit, credit)?;
        let buf = self.memory.ledger();
        let (d, c) = (buf.accounts[debit], buf.accounts[credit]);
        // Whether the debited account may go negative is the core's rule (only the operator's
        // external account, which stands for the world outside, may).
        let guarded = debit
            .rsplit_once('.')
            .and_then(|(_, kind)| AccountKind::parse(kind))
            .is_none_or(AccountKind::must_not_go_negative);
        if guarded && d.balance() < amount as i64 {
            return Err(StoreError::InsufficientFunds {
                needed_micros: amount,
                available_micros: d.balance(),
            });
        }
        let add = |total: u64| {
            total
                .checked_add(amount)
                .filter(|t| *t <= MAX_TOTAL_MICROS)
                .ok_or(StoreError::Overflow)
        };
        let d = Totals {
            debits: add(d.debits)?,
            unwritten: true,
            ..d
        };
        let c = Totals {
            credits: add(c.credits)?,
            unwritten: true,
            ..c
        };
        let seq = match locked_seq {
            Some(seq) => seq,
            None => self.next_transfer_seq()?,
        };
        let buf = self.memory.ledger();
        for (id, totals) in [(debit, d), (credit, c)] {
            if let Some(t) = buf.accounts.get_mut(id) {
                if !t.unwritten {
                    buf.changed.push(id.to_owned());
                }
                *t = totals;
            }
        }
        let row = TransferRow {
            seq,
            id: crate::ops::new_id("tr"),
            kind: kind.as_str().into(),
            debit_account_id: debit.into(),
            credit_account_id: credit.into(),
            amount_micros: amount,
            debit_balance_after_micros: d.balance(),
            credit_balance_after_micros: c.balance(),
            hold_id: hold_id.map(Into::into),
            lease_id: lease_id.map(Into::into),
            external_ref: external_ref.map(Into::into),
            created_ms: now_ms,
            access_request_id: access_request_id.map(Into::into),
        };
        buf.transfers.push(row.clone());
        if self.memory.writes_through() {
            self.flush_ledger()?;
        }
        Ok(row)
    }

    /// Reads the totals of whichever of the two accounts the transaction has not seen yet (on
    /// PostgreSQL locking their rows until it ends). A missing account is `NotFound`.
    ///
    /// On PostgreSQL, when it locked a row, it also returns the transfer's sequence number, taken
    /// once every lock is held and in the same round trip: a transfer's position must come after
    /// that of every transfer another process committed on the same accounts, so it may only be
    /// taken after the locks (the numbers reserved before are then of no use to it, and dropped).
    fn read_balances(&mut self, debit: &str, credit: &str) -> Result<Option<i64>, StoreError> {
        let buf = self.memory.ledger();
        let missing: Vec<&str> = [debit, credit]
            .into_iter()
            .filter(|id| !buf.accounts.contains_key(*id))
            .collect();
        if missing.is_empty() {
            return Ok(None);
        }
        let postgres = self.b.kind() == "postgres";
        let sql = balances_sql(postgres, missing.len() == 2);
        let params: Vec<Value> = missing.iter().map(|id| (*id).into()).collect();
        let rows = self.b.query(sql, &params)?;
        let buf = self.memory.ledger();
        let seq = buf.keep_read(&rows)?.pop();
        if missing.iter().any(|id| !buf.accounts.contains_key(*id)) {
            return Err(StoreError::NotFound("account"));
        }
        if postgres {
            buf.reserved_seqs.clear();
            if seq.is_none() {
                return Err(StoreError::Database(
                    "no transfer sequence number came back".into(),
                ));
            }
        }
        Ok(seq)
    }

    /// Reads the totals of every account of `ids` the transaction has not seen yet, in one
    /// statement; on PostgreSQL also locks them and reserves ledger positions after the locks
    /// (see [`crate::writer::Writer::submit_with_accounts`]). Ids of no account are ignored.
    /// `ids` come sorted, each once (the writer's `declared_accounts`): PostgreSQL locks them in
    /// that order, and SQLite's join returns one row per id.
    pub(crate) fn read_accounts(&mut self, ids: &[String]) -> Result<(), StoreError> {
        let buf = self.memory.ledger();
        let missing: Vec<&String> = ids
            .iter()
            .filter(|id| !buf.accounts.contains_key(*id))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let list = serde_json::to_string(&missing)
            .map_err(|e| StoreError::Database(format!("encode account ids: {e}")))?;
        let postgres = self.b.kind() == "postgres";
        let rows = if postgres {
            // About one transfer per declared account; more are reserved when needed.
            self.b
                .query(lock_declared_sql(missing.len()), &[list.into()])?
        } else {
            self.b.query(READ_DECLARED_SQLITE, &[list.into()])?
        };
        let buf = self.memory.ledger();
        let mut seqs = buf.keep_read(&rows)?;
        if postgres {
            // Numbers reserved before these locks may not serve transfers after them.
            seqs.sort_unstable();
            buf.reserved_seqs.clear();
            buf.reserved_seqs.extend(seqs);
        }
        Ok(())
    }

    /// The ledger position of the next transfer (see the module documentation).
    fn next_transfer_seq(&mut self) -> Result<i64, StoreError> {
        if self.b.kind() == "postgres" {
            if self.memory.ledger().reserved_seqs.is_empty() {
                let rows = self.b.query(
                    &format!(
                        "SELECT nextval(pg_get_serial_sequence('transfers', 'seq')) \
                         FROM generate_series(1, {SEQ_BLOCK})"
                    ),
                    &[],
                )?;
                let mut seqs: Vec<i64> = rows
                    .iter()
                    .map(|r| r.i64(0))
                    .collect::<Result<_, StoreError>>()?;
                seqs.sort_unstable();
                self.memory.ledger().reserved_seqs.extend(seqs);
            }
            return self
                .memory
                .ledger()
                .reserved_seqs
                .pop_front()
                .ok_or_else(|| {
                    StoreError::Database("no transfer sequence number reserved".into())
                });
        }
        let next = match self.memory.ledger().next_seq {
            Some(next) => next,
            None => {
                let rows = self
                    .b
                    .query("SELECT COALESCE(MAX(seq), 0) FROM transfers", &[])?;
                rows.first().map(|r| r.i64(0)).transpose()?.unwrap_or(0) + 1
            }
        };
        self.memory.ledger().next_seq = Some(next + 1);
        Ok(next)
    }

    /// Writes what the transaction buffered: every changed account's totals, then the transfers
    /// and their postings.
    /// Called before commit, at savepoint boundaries and before SQL reads the ledger.
    pub(crate) fn flush_ledger(&mut self) -> Result<(), StoreError> {
        let buf = self.memory.ledger();
        if buf.is_flushed() {
            return Ok(());
        }
        let changed = std::mem::take(&mut buf.changed);
        let transfers = std::mem::take(&mut buf.transfers);
        let mut accounts: Vec<(&str, Totals)> = Vec::with_capacity(changed.len());
        for id in &changed {
            if let Some(t) = buf.accounts.get_mut(id) {
                t.unwritten = false;
                accounts.push((id.as_str(), *t));
            }
        }
        if self.b.kind() == "postgres" {
            return flush_in_one_statement(self.b, &accounts, &transfers);
        }
        for (id, t) in &accounts {
            let n = self.b.execute(
                UPDATE_ACCOUNT,
                &[
                    (*id).into(),
                    to_i64(t.debits)?.into(),
                    to_i64(t.credits)?.into(),
                ],
            )?;
            if n != 1 {
                return Err(StoreError::Database(format!(
                    "account {id} was not written"
                )));
            }
        }
        let insert = format!(
            "INSERT INTO transfers ({TRANSFER_COLS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        );
        for t in &transfers {
            self.b.execute(
                &insert,
                &[
                    t.seq.into(),
                    (&t.id).into(),
                    t.kind.as_str().into(),
                    (&t.debit_account_id).into(),
                    (&t.credit_account_id).into(),
                    to_i64(t.amount_micros)?.into(),
                    t.debit_balance_after_micros.into(),
                    t.credit_balance_after_micros.into(),
                    t.hold_id.clone().into(),
                    t.lease_id.clone().into(),
                    t.external_ref.clone().into(),
                    t.created_ms.into(),
                    t.access_request_id.clone().into(),
                ],
            )?;
            let (debit_org, credit_org) = posted_orgs(t);
            match credit_org {
                None => self.b.execute(
                    "INSERT INTO postings (org_id, seq) VALUES ($1, $2)",
                    &[debit_org.into(), t.seq.into()],
                )?,
                Some(credit_org) => self.b.execute(
                    "INSERT INTO postings (org_id, seq) VALUES ($1, $3), ($2, $3)",
                    &[debit_org.into(), credit_org.into(), t.seq.into()],
                )?,
            };
        }
        Ok(())
    }
}

/// The orgs a transfer is posted to: its debit account's, and its credit account's when that is
/// another org (a hold moves money between two accounts of one org: one posting).
fn posted_orgs(t: &TransferRow) -> (&str, Option<&str>) {
    let debit = account_org(&t.debit_account_id);
    let credit = account_org(&t.credit_account_id);
    (debit, (credit != debit).then_some(credit))
}

/// PostgreSQL's flush: the accounts' totals and the transfers as two JSON arrays, written by one
/// statement of three data-modifying CTEs (the transfers and their postings, from one reading of
/// the transfers' array), so a flush of any size is one round trip and one prepared statement.
fn flush_in_one_statement(
    b: &mut dyn crate::database::Database,
    accounts: &[(&str, Totals)],
    transfers: &[TransferRow],
) -> Result<(), StoreError> {
    let accounts_json = serde_json::Value::Array(
        accounts
            .iter()
            .map(|(id, t)| serde_json::json!({"id": id, "d": t.debits, "c": t.credits}))
            .collect(),
    );
    let mut postings = 0;
    let transfers_json = serde_json::Value::Array(
        transfers
            .iter()
            .map(|t| {
                let (debit_org, credit_org) = posted_orgs(t);
                postings += 1 + i64::from(credit_org.is_some());
                serde_json::json!({
                    "debit_org": debit_org,
                    "credit_org": credit_org,
                    "seq": t.seq,
                    "id": t.id,
                    "kind": t.kind,
                    "debit_account_id": t.debit_account_id,
                    "credit_account_id": t.credit_account_id,
                    "amount_micros": t.amount_micros,
                    "debit_balance_after_micros": t.debit_balance_after_micros,
                    "credit_balance_after_micros": t.credit_balance_after_micros,
                    "hold_id": t.hold_id,
                    "lease_id": t.lease_id,
                    "external_ref": t.external_ref,
                    "created_ms": t.created_ms,
                    "access_request_id": t.access_request_id,
                })
            })
            .collect(),
    );
    let rows = b.query(
        &format!(
            "WITH a AS (UPDATE accounts SET debits_micros = v.d, credits_micros = v.c \
             FROM json_to_recordset($1::text::json) AS v(id text, d bigint, c bigint) \
             WHERE accounts.id = v.id RETURNING 1), \
             r AS (SELECT * FROM json_to_recordset($2::text::json) AS r(seq bigint, id text, \
             kind text, debit_account_id text, credit_account_id text, amount_micros bigint, \
             debit_balance_after_micros bigint, credit_balance_after_micros bigint, hold_id text, \
             lease_id text, external_ref text, created_ms bigint, access_request_id text, \
             debit_org text, credit_org text)), \
             t AS (INSERT INTO transfers ({TRANSFER_COLS}) SELECT {TRANSFER_COLS} FROM r \
             RETURNING 1), \
             p AS (INSERT INTO postings (org_id, seq) SELECT x.org_id, r.seq FROM r \
             CROSS JOIN LATERAL (VALUES (r.debit_org), (r.credit_org)) AS x(org_id) \
             WHERE x.org_id IS NOT NULL RETURNING 1) \
             SELECT (SELECT count(*) FROM a), (SELECT count(*) FROM t), (SELECT count(*) FROM p)"
        ),
        &[
            accounts_json.to_string().into(),
            transfers_json.to_string().into(),
        ],
    )?;
    let written = rows
        .first()
        .map(|r| Ok::<_, StoreError>((r.i64(0)?, r.i64(1)?, r.i64(2)?)))
        .transpose()?;
    let expected = (accounts.len() as i64, transfers.len() as i64, postings);
    if written != Some(expected) {
        return Err(StoreError::Database(format!(
            "a ledger flush wrote {written:?} of {expected:?} accounts, transfers and postings"
        )));
    }
    Ok(())
}
