//! Suanli's store: the durable system of record on SQLite (default) or PostgreSQL.
//!
//! - [`database`]: the store trait ([`Database`]): a narrow SQL connection interface, its values,
//!   rows and errors.
//! - [`sqlite`], [`postgres`]: the two implementations; [`schema`]: their migrations.
//! - [`ops`]: every domain read and write, written once over any database, with the conditional
//!   updates that keep capacity and money invariants under concurrency.
//! - [`audit`]: capacity and settlement audits (the simulation's invariants).
//! - [`jobs`]: agents, jobs and attempts with fencing, signed usage and logs.
//! - [`once`]: a command with its idempotency key, effect and stored answer in one transaction.
//! - [`writer`]: the single writer thread with group commit.
//! - [`Store`]: opens a database from a URL and hands out the writer and read connections.
//!
//! This crate knows nothing of HTTP or JSON.

pub mod audit;
mod batch_ledger;
mod batch_nodes;
mod batch_offers;
pub mod database;
pub mod jobs;
pub mod once;
pub mod ops;
pub mod postgres;
pub mod schema;
pub mod sqlite;
pub mod writer;

use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Duration;

use suanli_core::quote::OfferBook;

pub use database::{Database, StoreError, Value};
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

    fn open_writer(&self) -> Result<Box<dyn Database>, StoreError> {
        Ok(match self {
            Location::Sqlite(path) => Box::new(sqlite::SqliteDatabase::open_writer(path)?),
            Location::Postgres(url) => Box::new(postgres::PostgresDatabase::connect_writer(url)?),
        })
    }

    fn open_reader(&self) -> Result<Box<dyn Database>, StoreError> {
        Ok(match self {
            Location::Sqlite(path) => Box::new(sqlite::SqliteDatabase::open_reader(path)?),
            Location::Postgres(url) => Box::new(postgres::PostgresDatabase::connect(url)?),
        })
    }
}

/// The open store: the writer, a pool of read connections and the in-memory offer book.
pub struct Store {
    location: Location,
    writer: Writer,
    readers: Readers,
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
            readers: Readers::default(),
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

    /// Runs `f` on a read connection, in one read-only transaction, so that all its queries see
    /// one state of the database: a read of several tables (the ledger check, a statement and
    /// its balance) never sees half of a batch committed between two of its queries (blocking:
    /// call from a blocking context).
    pub fn read<R>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let (mut conn, pooled) = self.readers.take(&self.location)?;
        let (result, ended) = match conn.begin_read() {
            Ok(()) => {
                let read = f(&mut Tx::new(conn.as_mut()));
                // Only reads were made: ending the transaction either way keeps nothing.
                let ended = conn.batch(if read.is_ok() { "COMMIT" } else { "ROLLBACK" });
                (read, ended)
            }
            Err(e) => (Err(e.clone()), Err(e)),
        };
        // A connection that failed at the database level, or is still in the transaction, is
        // dropped, not reused.
        let healthy = ended.is_ok() && !matches!(result, Err(StoreError::Database(_)));
        let result = result.and_then(|r| ended.map(|()| r));
        if pooled {
            self.readers.give_back(conn, healthy);
        }
        result
    }
}

/// Read connections kept open at most: more than the CPUs can use, few enough that the pool
/// never has to open and close connections under load (a new connection costs a PostgreSQL
/// database process, or SQLite's schema parse and statement preparation, each time).
const READERS: usize = 16;

/// How long a read waits for a pooled connection before it opens one of its own, which it closes
/// afterwards (so that a read made while holding another can never wait forever).
const READER_WAIT: Duration = Duration::from_millis(250);

/// The pool of read connections: at most [`READERS`] open, reused; a read waits for one.
#[derive(Default)]
struct Readers {
    pool: Mutex<ReaderPool>,
    freed: Condvar,
}

#[derive(Default)]
struct ReaderPool {
    idle: Vec<Box<dyn Database>>,
    /// Pooled connections open, idle or in use.
    open: usize,
}

impl Readers {
    /// A connection, and whether it belongs to the pool (else it is closed after use).
    fn take(&self, location: &Location) -> Result<(Box<dyn Database>, bool), StoreError> {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        let mut waited = false;
        loop {
            if let Some(conn) = pool.idle.pop() {
                return Ok((conn, true));
            }
            if pool.open < READERS {
                pool.open += 1;
                drop(pool);
                return match location.open_reader() {
                    Ok(conn) => Ok((conn, true)),
                    Err(e) => {
                        self.give_back_slot();
                        Err(e)
                    }
                };
            }
            if waited {
                drop(pool);
                return Ok((location.open_reader()?, false));
            }
            pool = self
                .freed
                .wait_timeout(pool, READER_WAIT)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            waited = true;
        }
    }

    fn give_back(&self, conn: Box<dyn Database>, healthy: bool) {
        if healthy {
            let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            pool.idle.push(conn);
            drop(pool);
            self.freed.notify_one();
        } else {
            drop(conn);
            self.give_back_slot();
        }
    }

    fn give_back_slot(&self) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        pool.open -= 1;
        drop(pool);
        self.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;

    use super::*;

    /// With every pooled connection in use, one more read still completes (on a connection of
    /// its own, closed afterwards), and the pool keeps exactly [`READERS`] connections.
    #[test]
    fn reads_share_a_bounded_pool_and_never_wait_forever() {
        let dir = std::env::temp_dir().join(ops::new_id("suanli-readers"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.db").to_string_lossy().into_owned();
        let store = Arc::new(Store::open(Location::Sqlite(path), WriterConfig::default()).unwrap());
        let all_held = Arc::new(Barrier::new(READERS + 1));
        let release = Arc::new(Barrier::new(READERS + 1));
        let holders: Vec<_> = (0..READERS)
            .map(|_| {
                let (store, all_held, release) = (store.clone(), all_held.clone(), release.clone());
                std::thread::spawn(move || {
                    store
                        .read(|tx| {
                            all_held.wait();
                            release.wait();
                            tx.list_orgs()
                        })
                        .unwrap()
                })
            })
            .collect();
        all_held.wait();
        let orgs = store.read(|tx| tx.list_orgs()).unwrap();
        assert!(orgs.is_empty());
        release.wait();
        for h in holders {
            h.join().unwrap();
        }
        let pool = store.readers.pool.lock().unwrap();
        assert_eq!(pool.open, READERS);
        assert_eq!(pool.idle.len(), READERS);
        drop(pool);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
