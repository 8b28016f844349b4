//! The store trait: one narrow SQL connection interface, implemented by SQLite and PostgreSQL.
//!
//! Domain queries ([`crate::ops`]) are written once in the SQL both databases share (`$N`
//! parameters, `RETURNING`, `ON CONFLICT`); each database owns its connection handling, its error
//! mapping and its migrations.

/// A bound parameter or a read column. Typed nulls, because PostgreSQL checks parameter types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Int(Option<i64>),
    Text(Option<String>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(Some(v))
    }
}
impl From<Option<i64>> for Value {
    fn from(v: Option<i64>) -> Self {
        Value::Int(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(Some(v.to_owned()))
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(Some(v))
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(Some(v.clone()))
    }
}
impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Self {
        Value::Text(v)
    }
}
impl From<Option<&str>> for Value {
    fn from(v: Option<&str>) -> Self {
        Value::Text(v.map(str::to_owned))
    }
}

/// Refuses a text parameter holding NUL, which PostgreSQL cannot store (SQLite would): both
/// databases answer it alike. The server refuses NUL at its edge; this is the store's own guard.
pub(crate) fn refuse_nul(params: &[Value]) -> Result<(), StoreError> {
    let nul = params
        .iter()
        .any(|p| matches!(p, Value::Text(Some(t)) if t.as_bytes().contains(&0)));
    if nul {
        return Err(StoreError::invalid(
            "text",
            "text must not contain the NUL character (U+0000)",
        ));
    }
    Ok(())
}

/// A result row: columns in select order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row(pub Vec<Value>);

/// Decoding fails closed: a NULL where the schema allows none, text where a number belongs or a
/// negative count is [`StoreError::Corrupt`], never a default that would be taken for data.
impl Row {
    fn corrupt(&self, i: usize, what: &str) -> StoreError {
        StoreError::Corrupt(format!(
            "column {i} holds {:?}, expected {what}",
            self.0.get(i)
        ))
    }
    fn value(&self, i: usize) -> Result<&Value, StoreError> {
        self.0
            .get(i)
            .ok_or_else(|| StoreError::Corrupt(format!("the row has no column {i}")))
    }
    pub fn i64(&self, i: usize) -> Result<i64, StoreError> {
        self.opt_i64(i)?
            .ok_or_else(|| self.corrupt(i, "an integer"))
    }
    pub fn opt_i64(&self, i: usize) -> Result<Option<i64>, StoreError> {
        match self.value(i)? {
            Value::Int(v) => Ok(*v),
            Value::Text(Some(t)) => t
                .parse()
                .map(Some)
                .map_err(|_| self.corrupt(i, "an integer")),
            Value::Text(None) => Ok(None),
        }
    }
    /// A non-negative integer column.
    pub fn u64(&self, i: usize) -> Result<u64, StoreError> {
        u64::try_from(self.i64(i)?).map_err(|_| self.corrupt(i, "a non-negative integer"))
    }
    pub fn opt_u64(&self, i: usize) -> Result<Option<u64>, StoreError> {
        self.opt_i64(i)?
            .map(|v| u64::try_from(v).map_err(|_| self.corrupt(i, "a non-negative integer")))
            .transpose()
    }
    /// A non-negative integer column that fits `u32`.
    pub fn u32(&self, i: usize) -> Result<u32, StoreError> {
        u32::try_from(self.u64(i)?).map_err(|_| self.corrupt(i, "an integer below 2^32"))
    }
    pub fn str(&self, i: usize) -> Result<String, StoreError> {
        self.opt_str(i)?.ok_or_else(|| self.corrupt(i, "text"))
    }
    pub fn opt_str(&self, i: usize) -> Result<Option<String>, StoreError> {
        Ok(match self.value(i)? {
            Value::Text(v) => v.clone(),
            Value::Int(v) => v.map(|v| v.to_string()),
        })
    }
    /// A text column holding one of an enum's names, parsed by `parse`.
    pub fn parsed<T>(
        &self,
        i: usize,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<T, StoreError> {
        let text = self.str(i)?;
        parse(&text).ok_or_else(|| self.corrupt(i, "a known state or kind"))
    }
}

/// Failures of the store, and the business outcomes its operations refuse with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("insufficient funds: {needed_micros} micros needed, {available_micros} available")]
    InsufficientFunds {
        needed_micros: u64,
        available_micros: i64,
    },
    #[error("the requested capacity is no longer available")]
    CapacityUnavailable,
    #[error("offer is not available: {0}")]
    OfferNotAvailable(String),
    #[error("lease is not active (it is {0})")]
    LeaseNotActive(String),
    #[error("the offer's price {price_micros} is above the limit {limit_micros}")]
    PriceAboveLimit {
        price_micros: u64,
        limit_micros: u64,
    },
    #[error("{message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// Something that must be unique already exists: `field` of the request says what.
    #[error("{message}")]
    Duplicate {
        field: &'static str,
        message: String,
    },
    #[error("{0}")]
    Forbidden(String),
    /// An agent's report from a registration its identity has since replaced (fencing).
    #[error("{0}")]
    Superseded(String),
    /// A report about an attempt that is no longer current (fencing).
    #[error("stale attempt: {0}")]
    StaleAttempt(String),
    #[error("the job has ended ({0})")]
    JobNotActive(String),
    #[error("amount overflows")]
    Overflow,
    #[error("database error: {0}")]
    Database(String),
    /// A stored row that does not decode: an unknown state, a NULL where none may be. Reads fail
    /// closed on it rather than guess.
    #[error("stored data does not decode: {0}")]
    Corrupt(String),
}

impl From<suanli_core::decide::Refusal> for StoreError {
    fn from(r: suanli_core::decide::Refusal) -> Self {
        use suanli_core::decide::Refusal;
        match r {
            Refusal::NotFound(what) => StoreError::NotFound(what),
            Refusal::Invalid { field, message } => StoreError::Invalid { field, message },
            Refusal::Duplicate { field, message } => StoreError::Duplicate { field, message },
            Refusal::Forbidden(m) => StoreError::Forbidden(m),
            Refusal::OfferNotAvailable(m) => StoreError::OfferNotAvailable(m),
            Refusal::PriceAboveLimit {
                price_micros,
                limit_micros,
            } => StoreError::PriceAboveLimit {
                price_micros,
                limit_micros,
            },
            Refusal::CapacityUnavailable => StoreError::CapacityUnavailable,
            Refusal::LeaseNotActive(state) => StoreError::LeaseNotActive(state.as_str().into()),
            Refusal::LeaseEnding => StoreError::LeaseNotActive("ending".into()),
            Refusal::StaleAttempt(m) => StoreError::StaleAttempt(m),
            Refusal::JobNotActive(state) => StoreError::JobNotActive(state.as_str().into()),
            Refusal::Superseded {
                agent_id,
                current,
                reported,
            } => StoreError::Superseded(format!(
                "agent {agent_id} registered again (generation {current}) after this one \
                 (generation {reported}): two agents share its identity; this one must stop"
            )),
            Refusal::Overflow => StoreError::Overflow,
        }
    }
}

impl StoreError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        StoreError::Invalid {
            field,
            message: message.into(),
        }
    }
}

/// A database connection. Implemented by [`crate::sqlite::SqliteDatabase`] and
/// [`crate::postgres::PostgresDatabase`].
pub trait Database: Send {
    /// `sqlite` or `postgres`.
    fn kind(&self) -> &'static str;
    /// Runs one statement with `$N` parameters; returns the rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, StoreError>;
    /// Runs one query with `$N` parameters.
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError>;
    /// Runs statements without parameters (transaction control, migrations).
    fn batch(&mut self, sql: &str) -> Result<(), StoreError>;
    /// Starts a read-only transaction: every query in it sees one snapshot.
    fn begin_read(&mut self) -> Result<(), StoreError> {
        self.batch("BEGIN")
    }
    /// Starts a write transaction.
    fn begin_write(&mut self) -> Result<(), StoreError> {
        self.batch("BEGIN")
    }
    /// Commits the write transaction. `None`: it is durable now. `Some(sync)`: it is durable
    /// once `sync` has returned `Ok` (the writer runs it on another thread while the next batch
    /// executes, and answers the batch's requests only then). A sync covers every commit made
    /// before it on this connection. When it fails the batch's requests fail (the commit may or
    /// may not survive a crash; retries with the same idempotency key find out); a database for
    /// which a failed sync means the process cannot go on safely stops it in `sync` itself.
    fn commit(&mut self) -> Result<Option<SyncFn>, StoreError> {
        self.batch("COMMIT").map(|()| None)
    }
    /// Whether another connection may have committed changes since this connection last asked;
    /// asked by the writer right after it began a write transaction. `true` where the database
    /// cannot tell: the writer then reads again what it kept from its earlier transactions.
    fn changed_by_others(&mut self) -> Result<bool, StoreError> {
        Ok(true)
    }
    /// Whether the write transaction this connection began can no longer commit what was done in
    /// it: SQLite ended it (it rolls a transaction back itself on some errors: a full disk, an
    /// I/O error, a statement `OR ROLLBACK`; later statements would then commit one by one), or
    /// on PostgreSQL a statement failed and the transaction was not rolled back to a savepoint
    /// since (PostgreSQL refuses every later statement and turns `COMMIT` into a rollback, without
    /// an error). The writer asks after every job, so that a job that met such an error (and even
    /// one that ignored it) fails alone, and never commits a batch in that state.
    fn transaction_broken(&mut self) -> bool {
        false
    }
    /// Upkeep the writer runs between two batches, after the last batch's sync went to the
    /// syncer: the batch's requests are answered meanwhile, only the next batch waits for it.
    fn after_batch(&mut self) {}
}

/// Makes a commit durable (see [`Database::commit`]).
pub type SyncFn = Box<dyn FnOnce() -> Result<(), StoreError> + Send>;

/// Converts `i64` columns to `u64` values, refusing what does not fit.
pub fn to_i64(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Overflow)
}

#[cfg(test)]
mod row_tests {
    use super::*;

    #[test]
    fn decoding_fails_closed() {
        let row = Row(vec![
            Value::Int(None),
            Value::Text(None),
            Value::Int(Some(-1)),
            Value::Text(Some("12x".into())),
            Value::Text(Some("active".into())),
            Value::Int(Some(1 << 40)),
        ]);
        assert!(matches!(row.i64(0), Err(StoreError::Corrupt(_))));
        assert_eq!(row.opt_i64(0), Ok(None));
        assert!(matches!(row.str(1), Err(StoreError::Corrupt(_))));
        assert_eq!(row.opt_str(1), Ok(None));
        assert!(matches!(row.u64(2), Err(StoreError::Corrupt(_))));
        assert!(matches!(row.opt_u64(2), Err(StoreError::Corrupt(_))));
        assert!(matches!(row.i64(3), Err(StoreError::Corrupt(_))));
        assert!(matches!(row.u32(5), Err(StoreError::Corrupt(_))));
        assert_eq!(row.u64(5), Ok(1 << 40));
        assert!(matches!(row.i64(9), Err(StoreError::Corrupt(_))));
        let known = |s: &str| (s == "active").then_some(1);
        assert_eq!(row.parsed(4, known), Ok(1));
        assert!(matches!(row.parsed(3, known), Err(StoreError::Corrupt(_))));
    }
}
