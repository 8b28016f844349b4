//! SQLite backend: WAL mode, `synchronous=FULL`, one writer connection and read-only readers.

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, ToSql};

use crate::backend::{Backend, Row, StoreError, Value};

pub struct SqliteBackend {
    conn: Connection,
    /// Statements rewritten for SQLite, by their shared text: rewriting is done once per statement.
    rewritten: std::collections::HashMap<String, String>,
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
    pub fn open_writer(path: &str) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(map_err)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; \
             PRAGMA busy_timeout=10000;",
        )
        .map_err(map_err)?;
        conn.set_prepared_statement_cache_capacity(128);
        let mut me = SqliteBackend {
            conn,
            rewritten: Default::default(),
        };
        crate::schema::migrate(&mut me)?;
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
}
