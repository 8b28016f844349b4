//! The store trait: one narrow SQL connection interface, implemented by SQLite and PostgreSQL.
//!
//! Domain queries ([`crate::ops`]) are written once in the SQL both databases share (`$N`
//! parameters, `RETURNING`, `ON CONFLICT`); each backend owns its connection handling, its error
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
/// backends answer it alike. The server refuses NUL at its edge; this is the store's own guard.
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

impl Row {
    pub fn i64(&self, i: usize) -> i64 {
        self.opt_i64(i).unwrap_or(0)
    }
    pub fn opt_i64(&self, i: usize) -> Option<i64> {
        match &self.0[i] {
            Value::Int(v) => *v,
            Value::Text(Some(t)) => t.parse().ok(),
            Value::Text(None) => None,
        }
    }
    /// A non-negative integer column; negative values (never written) read as 0.
    pub fn u64(&self, i: usize) -> u64 {
        u64::try_from(self.i64(i)).unwrap_or(0)
    }
    pub fn opt_u64(&self, i: usize) -> Option<u64> {
        self.opt_i64(i).map(|v| u64::try_from(v).unwrap_or(0))
    }
    pub fn str(&self, i: usize) -> String {
        self.opt_str(i).unwrap_or_default()
    }
    pub fn opt_str(&self, i: usize) -> Option<String> {
        match &self.0[i] {
            Value::Text(v) => v.clone(),
            Value::Int(v) => v.map(|v| v.to_string()),
        }
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
    Backend(String),
}

impl StoreError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        StoreError::Invalid {
            field,
            message: message.into(),
        }
    }
}

/// A database connection. Implemented by [`crate::sqlite::SqliteBackend`] and
/// [`crate::postgres::PostgresBackend`].
pub trait Backend: Send {
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
    /// may not survive a crash; retries with the same idempotency key find out); a backend for
    /// which a failed sync means the process cannot go on safely stops it in `sync` itself.
    fn commit(&mut self) -> Result<Option<SyncFn>, StoreError> {
        self.batch("COMMIT").map(|()| None)
    }
    /// Whether another connection may have committed changes since this connection last asked;
    /// asked by the writer right after it began a write transaction. `true` where the backend
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

/// Makes a commit durable (see [`Backend::commit`]).
pub type SyncFn = Box<dyn FnOnce() -> Result<(), StoreError> + Send>;

/// Converts `i64` columns to `u64` values, refusing what does not fit.
pub fn to_i64(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Overflow)
}
