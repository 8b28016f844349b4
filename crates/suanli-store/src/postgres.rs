//! PostgreSQL database over the synchronous `postgres` client.

use std::collections::HashMap;

use postgres::types::{ToSql, Type};
use postgres::{Client, NoTls, Statement};

use crate::database::{Database, Row, StoreError, Value};

pub struct PostgresDatabase {
    /// Always `Some` until dropped (see the `Drop` impl).
    client: Option<Client>,
    /// Prepared statements by SQL text: each costs a round trip to prepare, so prepare once.
    statements: HashMap<String, Statement>,
    /// The writer's second connection, which makes its commits durable (see
    /// [`PostgresDatabase::connect_writer`]); readers have none.
    syncer: Option<std::sync::Arc<std::sync::Mutex<SyncConnection>>>,
    /// Where to connect again when the connection was lost (the writer's).
    url: String,
    /// The writer's next transaction is already open: its `BEGIN` went with the last `COMMIT`.
    begun: bool,
    /// A statement failed since the transaction began or was last rolled back to a savepoint:
    /// PostgreSQL now refuses every statement of the transaction and would roll it back at
    /// `COMMIT` (see [`Database::transaction_broken`]).
    failed: bool,
}

/// The syncer's connection, and when it was made: a sync on it vouches only for commits made
/// after it was connected (see [`PostgresDatabase::connect_writer`]).
struct SyncConnection {
    client: Option<Client>,
    connected_at: std::time::Instant,
}

impl SyncConnection {
    fn open(url: &str) -> Result<SyncConnection, StoreError> {
        let mut client = Client::connect(url, NoTls).map_err(map_err)?;
        client
            .batch_execute("SET synchronous_commit = on")
            .map_err(map_err)?;
        Ok(SyncConnection {
            client: Some(client),
            connected_at: std::time::Instant::now(),
        })
    }

    /// Makes durable the commit that was sent at `committed_at`.
    fn sync(&mut self, url: &str, committed_at: std::time::Instant) -> Result<(), StoreError> {
        let lost = |why: String| StoreError::Database(format!("syncing the commit: {why}"));
        // A connection that is gone, or was made after the commit, cannot vouch for it:
        // PostgreSQL may have restarted in between and lost the commit.
        if !matches!(&self.client, Some(c) if !c.is_closed()) {
            self.reconnect(url);
            return Err(lost("the sync connection was lost".to_owned()));
        }
        if self.connected_at > committed_at {
            return Err(lost(
                "the sync connection was made after the commit".to_owned(),
            ));
        }
        let client = self.client.as_mut().expect("checked above");
        // A transactional message is WAL written under a transaction id, so the commit is one
        // PostgreSQL must flush (a transaction that wrote no WAL commits without a flush, even
        // with synchronous_commit=on); it waits until the WAL is flushed up to it.
        let synced = client
            .batch_execute("SELECT pg_logical_emit_message(true, 'suanli-sync', '')")
            .map_err(|e| lost(e.to_string()));
        if synced.is_err() {
            // Found lost by using it, before its client noticed.
            self.reconnect(url);
        }
        synced
    }

    /// Connects again at once, so that the commits sent from now on can be vouched for (should
    /// that fail, the next sync tries again).
    fn reconnect(&mut self, url: &str) {
        self.client = None;
        if let Ok(fresh) = SyncConnection::open(url) {
            *self = fresh;
        }
    }
}

fn map_err(e: postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        return match code {
            "23505" => StoreError::Conflict(db.message().to_owned()),
            "23514" | "22003" => StoreError::Overflow,
            _ => StoreError::Database(format!("{code}: {}", db.message())),
        };
    }
    StoreError::Database(e.to_string())
}

impl PostgresDatabase {
    /// Connects a reader to `url`.
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        let client = Client::connect(url, NoTls).map_err(map_err)?;
        Ok(PostgresDatabase {
            client: Some(client),
            statements: HashMap::new(),
            syncer: None,
            url: url.to_owned(),
            begun: false,
            failed: false,
        })
    }

    /// Connects the writer to `url` and brings the schema up to date.
    ///
    /// The writer commits with `synchronous_commit=off`: `COMMIT` makes the batch visible
    /// without waiting for PostgreSQL to flush its WAL, and [`Database::commit`] returns a sync
    /// that the writer's syncer thread runs on a second connection while the next batch
    /// executes: a tiny transaction that writes one WAL record (a logical decoding message,
    /// `suanli-sync`, which nothing reads) and commits with `synchronous_commit=on`. PostgreSQL flushes its WAL in order up to that commit's record,
    /// which comes after the batch's, so when it returns the batch is durable; the batch's
    /// requests are answered only then. Should the sync fail, those requests fail: the batch is
    /// committed but, if PostgreSQL itself went down, perhaps not durable.
    ///
    /// Lost connections are made again: the writer's before its next batch, the syncer's at the
    /// sync that found it lost. A sync vouches only for commits made while its connection was
    /// already open (had PostgreSQL restarted in between, that connection would have died with
    /// it), so the batches committed before a reconnection fail rather than being acknowledged
    /// on the word of a connection to a server that may have lost them.
    pub fn connect_writer(url: &str) -> Result<Self, StoreError> {
        let mut me = Self::connect(url)?;
        crate::schema::migrate(&mut me)?;
        me.syncer = Some(std::sync::Arc::new(std::sync::Mutex::new(
            SyncConnection::open(url)?,
        )));
        me.start_writer_session()?;
        Ok(me)
    }

    /// The writer's session setting: commits do not wait for the WAL flush (its syncer does).
    fn start_writer_session(&mut self) -> Result<(), StoreError> {
        self.batch("SET synchronous_commit = off")
    }

    /// Replaces a lost connection with a new one (the writer's settings included).
    fn reconnect(&mut self) -> Result<(), StoreError> {
        let client = Client::connect(&self.url, NoTls).map_err(map_err)?;
        close_off_thread(self.client.replace(client));
        self.statements.clear();
        if self.syncer.is_some() {
            self.start_writer_session()?;
        }
        Ok(())
    }

    fn client(&mut self) -> &mut Client {
        self.client.as_mut().expect("the client lives until drop")
    }

    /// Notes a failed statement (see [`PostgresDatabase::failed`]).
    fn noted<T>(&mut self, result: Result<T, postgres::Error>) -> Result<T, StoreError> {
        result.map_err(|e| {
            self.failed = true;
            map_err(e)
        })
    }

    fn prepare(&mut self, sql: &str) -> Result<Statement, StoreError> {
        if let Some(stmt) = self.statements.get(sql) {
            return Ok(stmt.clone());
        }
        let prepared = self.client().prepare(sql);
        let stmt = self.noted(prepared)?;
        self.statements.insert(sql.to_owned(), stmt.clone());
        Ok(stmt)
    }

    fn params(params: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
        params
            .iter()
            .map(|p| match p {
                Value::Int(v) => v as &(dyn ToSql + Sync),
                Value::Text(v) => v as &(dyn ToSql + Sync),
            })
            .collect()
    }
}

impl Database for PostgresDatabase {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, StoreError> {
        crate::database::refuse_nul(params)?;
        let stmt = self.prepare(sql)?;
        let result = self.client().execute(&stmt, &Self::params(params));
        self.noted(result)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError> {
        crate::database::refuse_nul(params)?;
        let stmt = self.prepare(sql)?;
        let result = self.client().query(&stmt, &Self::params(params));
        let rows = self.noted(result)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut values = Vec::with_capacity(row.len());
            for (i, col) in row.columns().iter().enumerate() {
                let v = match *col.type_() {
                    Type::INT8 => Value::Int(row.try_get::<_, Option<i64>>(i).map_err(map_err)?),
                    Type::INT4 => Value::Int(
                        row.try_get::<_, Option<i32>>(i)
                            .map_err(map_err)?
                            .map(i64::from),
                    ),
                    Type::INT2 => Value::Int(
                        row.try_get::<_, Option<i16>>(i)
                            .map_err(map_err)?
                            .map(i64::from),
                    ),
                    Type::BOOL => Value::Int(
                        row.try_get::<_, Option<bool>>(i)
                            .map_err(map_err)?
                            .map(i64::from),
                    ),
                    _ => Value::Text(row.try_get::<_, Option<String>>(i).map_err(map_err)?),
                };
                values.push(v);
            }
            out.push(Row(values));
        }
        Ok(out)
    }

    fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        let result = self.client().batch_execute(sql);
        let ok = result.is_ok();
        self.noted(result)?;
        // A rollback (to a savepoint, or of the whole transaction) clears the failure; so does
        // a new transaction.
        if ok && (sql.starts_with("ROLLBACK") || sql.starts_with("BEGIN")) {
            self.failed = false;
        }
        Ok(())
    }

    fn transaction_broken(&mut self) -> bool {
        self.failed
    }

    fn begin_read(&mut self) -> Result<(), StoreError> {
        // READ COMMITTED would give every statement a snapshot of its own.
        self.batch("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    }

    fn begin_write(&mut self) -> Result<(), StoreError> {
        if std::mem::take(&mut self.begun) && !self.client().is_closed() {
            self.failed = false;
            return Ok(());
        }
        if self.client().is_closed() {
            // The connection was lost (a PostgreSQL restart, a terminated database): the batch
            // that met it failed; this one gets a new connection.
            tracing::warn!("the writer's PostgreSQL connection was lost; connecting again");
            self.reconnect()?;
        }
        self.batch("BEGIN")
    }

    /// The writer's `COMMIT` carries the next transaction's `BEGIN` (one round trip fewer per
    /// batch; [`Database::begin_write`] then finds it open). Until then the connection is idle in
    /// an empty transaction: under READ COMMITTED it has no snapshot and no transaction id, so it
    /// holds back neither vacuum nor anybody's locks. Should the `BEGIN` fail after the `COMMIT`
    /// went through, the batch is reported failed although committed, as when the answer to a
    /// `COMMIT` is lost: retries with the same idempotency key find what it did.
    fn commit(&mut self) -> Result<Option<crate::database::SyncFn>, StoreError> {
        // Taken before: a connection made after this instant cannot vouch for the commit.
        let committed_at = std::time::Instant::now();
        if self.failed {
            // PostgreSQL would answer this `COMMIT` with a rollback, and no error.
            return Err(StoreError::Database(
                "a statement of the transaction failed; it cannot commit".into(),
            ));
        }
        let Some(syncer) = self.syncer.clone() else {
            self.batch("COMMIT")?;
            return Ok(None);
        };
        self.batch("COMMIT; BEGIN")?;
        self.begun = true;
        let url = self.url.clone();
        Ok(Some(Box::new(move || {
            syncer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .sync(&url, committed_at)
        })))
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        close_off_thread((self.client.take(), self.syncer.take()));
    }
}

/// Closes connections on a thread of their own: the synchronous client blocks on its own runtime
/// when closed, which panics inside an async runtime.
fn close_off_thread<T: Send + 'static>(connections: T) {
    let _ = std::thread::Builder::new()
        .name("pg-close".into())
        .spawn(move || drop(connections));
}
