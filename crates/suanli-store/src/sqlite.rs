//! SQLite backend: WAL mode, one writer connection and read-only readers.
//!
//! The writer's commits are made durable by an `fdatasync` of the WAL file run apart from the
//! commit (see [`SqliteBackend::open_writer`]); readers and the checkpointer run with
//! `synchronous=FULL`.

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, ToSql};

use crate::backend::{Backend, Row, StoreError, Value};

pub struct SqliteBackend {
    conn: Connection,
    /// Statements rewritten for SQLite, by their shared text: rewriting is done once per statement.
    rewritten: std::collections::HashMap<String, String>,
    /// The writer's checkpointer, stopped when the writer's connection is dropped.
    _checkpointer: Option<Checkpointer>,
    /// The writer's WAL file, opened once and synced after each commit by [`Backend::commit`]'s
    /// sync (an open descriptor syncs the file whatever happens to its name).
    wal: Option<std::sync::Arc<std::fs::File>>,
}

impl Drop for SqliteBackend {
    fn drop(&mut self) {
        // Closing the last connection checkpoints the WAL and deletes it: with the database file
        // synced first.
        if self.wal.is_some() {
            let _ = self.conn.execute_batch("PRAGMA synchronous=FULL;");
        }
    }
}

/// Checkpoints the WAL into the database file from a connection of its own, so that the writer
/// never stops to copy pages and fsync the database file between two batches.
///
/// The writer runs with `wal_autocheckpoint=0`; this thread runs a PASSIVE checkpoint (it never
/// blocks the writer or readers, and copies only frames no reader still needs) every
/// [`CHECKPOINT_EVERY`]. Its connection is
/// `synchronous=FULL`, so the WAL is synced before pages are copied and the database file is
/// synced before the WAL may be reused: durability is what SQLite's own checkpoints give.
struct Checkpointer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// How often the checkpointer copies the WAL back.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(1000);

impl Checkpointer {
    fn start(path: &str) -> Result<Checkpointer, StoreError> {
        let conn = Connection::open(path).map_err(map_err)?;
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA busy_timeout=10000;")
            .map_err(map_err)?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("suanli-checkpoint".into())
            .spawn(move || {
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(CHECKPOINT_EVERY);
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(error = %e, "WAL checkpoint failed; retrying");
                    }
                }
            })
            .map_err(|e| StoreError::Backend(format!("start the checkpointer: {e}")))?;
        Ok(Checkpointer { stop })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Int(Some(v)) => ToSqlOutput::from(*v),
            Value::Text(Some(v)) => ToSqlOutput::from(v.as_str()),
            Value::Int(None) | Value::Text(None) => ToSqlOutput::from(rusqlite::types::Null),
        })
    }
}

fn map_err(e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(f, msg) = &e {
        if f.code == rusqlite::ErrorCode::ConstraintViolation {
            return match f.extended_code {
                rusqlite::ffi::SQLITE_CONSTRAINT_CHECK => StoreError::Overflow,
                _ => StoreError::Conflict(msg.clone().unwrap_or_else(|| "already exists".into())),
            };
        }
    }
    StoreError::Backend(e.to_string())
}

/// Rewrites `$N` parameters as SQLite's explicit `?N`.
fn numbered_parameters(sql: &str) -> String {
    sql.replace('$', "?")
}

impl SqliteBackend {
    /// Opens (creating) the database at `path` for writing and migrates it.
    ///
    /// Migrations run with `synchronous=FULL`. Then the connection runs with `synchronous=OFF`:
    /// `COMMIT` appends the batch's pages to the WAL without waiting for the disk, and
    /// [`Backend::commit`] returns an `fdatasync` of the WAL file that the writer runs on another
    /// thread while it executes the next batch; a batch's requests are answered only after it.
    /// Nothing acknowledged depends on SQLite's own syncs: the WAL is a log of whole commits
    /// whose frames are checksummed in a chain, so after a crash SQLite recovers exactly the
    /// commits whose frames reached the disk, in order. Checkpoints (which copy the WAL into the
    /// database file and may let the WAL be reused) run on the checkpointer's `synchronous=FULL`
    /// connection, which syncs the WAL before and the database file after copying.
    pub fn open_writer(path: &str) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(map_err)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; \
             PRAGMA busy_timeout=10000; PRAGMA wal_autocheckpoint=0;",
        )
        .map_err(map_err)?;
        conn.set_prepared_statement_cache_capacity(128);
        let mut me = SqliteBackend {
            conn,
            rewritten: Default::default(),
            _checkpointer: None,
            wal: None,
        };
        crate::schema::migrate(&mut me)?;
        // Without a WAL file to sync (it exists once the database has been read in WAL mode),
        // commits stay synchronous=FULL and durable when they return.
        if let Ok(file) = std::fs::File::open(format!("{path}-wal")) {
            me.conn
                .execute_batch("PRAGMA synchronous=OFF;")
                .map_err(map_err)?;
            me.wal = Some(std::sync::Arc::new(file));
        }
        me._checkpointer = Some(Checkpointer::start(path)?);
        Ok(me)
    }

    /// Opens a read-only connection to a database the writer created.
    pub fn open_reader(path: &str) -> Result<Self, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(map_err)?;
        conn.execute_batch("PRAGMA busy_timeout=10000; PRAGMA query_only=ON;")
            .map_err(map_err)?;
        conn.set_prepared_statement_cache_capacity(128);
        Ok(SqliteBackend {
            conn,
            rewritten: Default::default(),
            _checkpointer: None,
            wal: None,
        })
    }
}

/// The SQLite form of a shared statement, rewritten once and then looked up.
fn rewrite<'a>(cache: &'a mut std::collections::HashMap<String, String>, sql: &str) -> &'a str {
    if !cache.contains_key(sql) {
        if cache.len() > 1_024 {
            cache.clear();
        }
        cache.insert(sql.to_owned(), numbered_parameters(sql));
    }
    &cache[sql]
}

impl Backend for SqliteBackend {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(rewrite(&mut self.rewritten, sql))
            .map_err(map_err)?;
        let n = stmt
            .execute(rusqlite::params_from_iter(params.iter()))
            .map_err(map_err)?;
        Ok(n as u64)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(rewrite(&mut self.rewritten, sql))
            .map_err(map_err)?;
        let columns = stmt.column_count();
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params.iter()))
            .map_err(map_err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(map_err)? {
            let mut values = Vec::with_capacity(columns);
            for i in 0..columns {
                values.push(match row.get_ref(i).map_err(map_err)? {
                    ValueRef::Null => Value::Int(None),
                    ValueRef::Integer(v) => Value::Int(Some(v)),
                    ValueRef::Real(v) => Value::Int(Some(v as i64)),
                    ValueRef::Text(t) => Value::Text(Some(String::from_utf8_lossy(t).into_owned())),
                    ValueRef::Blob(b) => Value::Text(Some(String::from_utf8_lossy(b).into_owned())),
                });
            }
            out.push(Row(values));
        }
        Ok(out)
    }

    fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        self.conn.execute_batch(sql).map_err(map_err)
    }

    fn begin_write(&mut self) -> Result<(), StoreError> {
        // IMMEDIATE takes the write lock up front, so a batch never fails half-way on a lock upgrade.
        self.batch("BEGIN IMMEDIATE")
    }

    fn commit(&mut self) -> Result<Option<crate::backend::SyncFn>, StoreError> {
        self.batch("COMMIT")?;
        let Some(wal) = self.wal.clone() else {
            return Ok(None);
        };
        Ok(Some(Box::new(move || {
            wal.sync_data()
                .map_err(|e| StoreError::Backend(format!("fdatasync of the WAL: {e}")))
        })))
    }
}
