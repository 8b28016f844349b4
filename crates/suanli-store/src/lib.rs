//! Suanli's store: the durable system of record on SQLite (default) or PostgreSQL.
//!
//! - [`backend`]: the store trait ([`Backend`]): a narrow SQL connection interface, its values,
//!   rows and errors.
//! - [`sqlite`], [`postgres`]: the two implementations; [`schema`]: their migrations.
//! - [`ops`]: every domain read and write, written once over any backend, with the conditional
//!   updates that keep capacity and money invariants under concurrency.
//! - [`jobs`]: agents, jobs and attempts with fencing, signed usage and logs.
//! - [`writer`]: the single writer thread with group commit.
//! - [`Store`]: opens a backend from a URL and hands out the writer and read connections.
//!
//! This crate knows nothing of HTTP or JSON.

pub mod backend;
pub mod jobs;
pub mod ops;
pub mod postgres;
pub mod schema;
pub mod sqlite;
pub mod writer;

use std::sync::{Arc, Mutex, RwLock};

use suanli_core::quote::OfferBook;

pub use backend::{Backend, StoreError, Value};
pub use ops::Tx;
pub use writer::{Writer, WriterConfig};

/// Where the data lives: `sqlite://PATH` (or a plain path) or `postgres://…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Sqlite(String),
    Postgres(String),
}

impl Location {
    pub fn parse(url: &str) -> Location {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Location::Postgres(url.to_owned())
        } else {
            Location::Sqlite(url.strip_prefix("sqlite://").unwrap_or(url).to_owned())
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Location::Sqlite(_) => "sqlite",
            Location::Postgres(_) => "postgres",
        }
    }

    fn open_writer(&self) -> Result<Box<dyn Backend>, StoreError> {
        Ok(match self {
            Location::Sqlite(path) => Box::new(sqlite::SqliteBackend::open_writer(path)?),
            Location::Postgres(url) => Box::new(postgres::PostgresBackend::connect_writer(url)?),
        })
    }

    fn open_reader(&self) -> Result<Box<dyn Backend>, StoreError> {
        Ok(match self {
            Location::Sqlite(path) => Box::new(sqlite::SqliteBackend::open_reader(path)?),
            Location::Postgres(url) => Box::new(postgres::PostgresBackend::connect(url)?),
        })
    }
}

/// The open store: the writer, a pool of read connections and the in-memory offer book.
pub struct Store {
    location: Location,
    writer: Writer,
    readers: Mutex<Vec<Box<dyn Backend>>>,
    /// Live offers with their availability, kept current by the writer after each commit.
    pub book: Arc<RwLock<OfferBook>>,
}

impl Store {
    /// Opens (creating and migrating) the store and loads the offer book.
    pub fn open(location: Location, config: WriterConfig) -> Result<Store, StoreError> {
        let mut writer_conn = location.open_writer()?;
        let book = Arc::new(RwLock::new(OfferBook::new()));
        {
            let offers = Tx::new(writer_conn.as_mut()).offers_of_pools(None)?;
            let mut b = book.write().unwrap_or_else(|p| p.into_inner());
            for o in offers {
                b.upsert(o.view());
            }
        }
        let writer = Writer::start(writer_conn, book.clone(), config);
        Ok(Store {
            location,
            writer,
            readers: Mutex::new(Vec::new()),
            book,
        })
    }

    pub fn kind(&self) -> &'static str {
        self.location.kind()
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// Runs `f` on a read connection (blocking: call from a blocking context).
    pub fn read<R>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let conn = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut conn = match conn {
            Some(c) => c,
            None => self.location.open_reader()?,
        };
        let result = f(&mut Tx::new(conn.as_mut()));
        // A connection that failed at the database level is dropped, not reused.
        if !matches!(result, Err(StoreError::Backend(_))) {
            let mut pool = self.readers.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < 16 {
                pool.push(conn);
            }
        }
        result
    }
}
