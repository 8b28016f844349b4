//! SQLite database: WAL mode, one writer connection and read-only readers.
//!
//! The writer's commits are made durable by an `fdatasync` of the WAL file run apart from the
//! commit (see [`SqliteDatabase::open_writer`]); readers and the checkpointer run with
//! `synchronous=FULL`.

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, ToSql};

use crate::database::{Database, Row, StoreError, Value};
use suanli_walbuf::{FRAME_HEADER_BYTES, WAL_HEADER_BYTES};

pub struct SqliteDatabase {
    conn: Connection,
    /// Statements rewritten for SQLite: rewriting is done once per statement.
    rewritten: Rewritten,
    /// The writer's checkpointer, stopped when the writer's connection is dropped.
    checkpointer: Option<Checkpointer>,
    /// The writer's WAL file, opened once and synced after each commit by [`Database::commit`]'s
    /// sync (an open descriptor syncs the file whatever happens to its name).
    wal: Option<std::sync::Arc<std::fs::File>>,
    /// `PRAGMA data_version` when [`Database::changed_by_others`] last read it.
    data_version: Option<i64>,
    /// A write transaction was begun and has not been committed or rolled back by us: should
    /// SQLite end it itself (see [`Database::transaction_broken`]), statements are refused until
    /// the rollback, instead of each committing on its own.
    in_write: bool,
}

impl Drop for SqliteDatabase {
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
///
/// A PASSIVE checkpoint never restarts the WAL: SQLite starts writing it from the beginning again
/// only when a write transaction begins on a fully checkpointed WAL, which under a steady load
/// never happens, so the WAL would grow without bound (hundreds of MiB a minute) and every commit
/// would append to new blocks of the file. Once the WAL holds [`RESTART_WAL_AT_BYTES`], the
/// checkpointer asks the writer to restart it (`restart_wanted`): between two batches the writer
/// runs a RESTART checkpoint, which copies the frames this thread has not copied yet, syncs,
/// and lets the next commit write from the start of the file, overwriting blocks already there.
///
/// The writer stops for that RESTART, so the checkpointer first makes it small
/// ([`Checkpointer::prepare_restart`]). A PASSIVE checkpoint syncs the database file only when it
/// copied the whole WAL, which under load it never does: the pages it copies stay dirty in the
/// kernel until the kernel writes them back, and the RESTART's sync of the database file would
/// write all of them while the writer waits (purchase benchmark: 20–58 ms stalls every ~0.7 s,
/// the requests' p99). So before asking, the checkpointer writes the database file's dirty pages
/// back itself, a slice at a time ([`write_back_paced`]), copies what was committed meanwhile and
/// writes that back too; the writer's RESTART then copies and syncs only the commits of the last
/// pass.
///
/// While the WAL grows, the checkpointer also zero-fills it ahead of the writer ([`WalPrefill`]),
/// so that the writer's syncs overwrite blocks the file already has instead of appending.
struct Checkpointer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    restart_wanted: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// How often the checkpointer copies the WAL back.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// WAL size after which the writer restarts the WAL. Each restart stops the writer while it
/// copies and syncs the commits of the checkpointer's last write-back pass (30–55 ms in the
/// purchase benchmark, whose WAL grows by ~70 MB/s), so the WAL is let grow to a size that keeps
/// restarts seconds apart under a heavy load (~4 s there). Under a lighter load SQLite restarts
/// the WAL by itself, with no stop, whenever the checkpointer has copied all of it.
const RESTART_WAL_AT_BYTES: i64 = 256 << 20;

/// The page size of new databases. Small pages suit the store's small rows: a batch of
/// transfers dirties a page in each of several indexes (one per account involved), and the WAL
/// receives every dirty page whole, so 1 KiB pages write a quarter of what 4 KiB pages write
/// (ledger benchmark: +30 % transfers/s; purchases unchanged). Existing databases keep theirs.
const PAGE_SIZE: u32 = 1024;

/// How long the writer's RESTART checkpoint waits for readers still reading the WAL before it
/// gives up until the next request, and how often it looks again meanwhile (SQLite's own busy
/// handler sleeps 1, 2, 5, 10 … ms, far longer than a reader's snapshot lasts).
const RESTART_WAIT: std::time::Duration = std::time::Duration::from_millis(20);
const RESTART_POLL: std::time::Duration = std::time::Duration::from_micros(100);

impl Checkpointer {
    /// `wal` is the writer's WAL file and its name as SQLite has it, to fill it ahead
    /// ([`WalPrefill`]); without it nothing is filled.
    fn start(
        path: &str,
        restart_at_bytes: i64,
        wal: Option<(String, std::sync::Arc<std::fs::File>)>,
    ) -> Result<Checkpointer, StoreError> {
        let conn = Connection::open(path).map_err(map_err)?;
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA busy_timeout=10000;")
            .map_err(map_err)?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let restart_wanted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, wanted) = (stop.clone(), restart_wanted.clone());
        let page_size: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(map_err)?;
        let restart_at = restart_at_bytes / page_size.max(512);
        let prefill =
            wal.map(|(wal_path, file)| WalPrefill::new(wal_path, file, page_size, restart_at));
        let db_file = std::fs::File::open(path)
            .map_err(|e| StoreError::Database(format!("open {path} to sync it: {e}")))?;
        std::thread::Builder::new()
            .name("suanli-checkpoint".into())
            .spawn(move || {
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(CHECKPOINT_EVERY);
                    match passive_checkpoint(&conn) {
                        Ok(frames) if frames >= restart_at => {
                            Self::prepare_restart(&conn, &db_file);
                            wanted.store(true, std::sync::atomic::Ordering::Relaxed);
                        }
                        Ok(frames) => {
                            if let Some(prefill) = &prefill {
                                prefill.ahead_of(frames);
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed; retrying"),
                    }
                }
            })
            .map_err(|e| StoreError::Database(format!("start the checkpointer: {e}")))?;
        Ok(Checkpointer {
            stop,
            restart_wanted,
        })
    }

    /// Leaves the writer's RESTART only the commits of the last write-back pass to copy and sync
    /// (see [`Checkpointer`]). Only speed depends on it: the RESTART copies and syncs whatever is
    /// left, so a failure here is logged and nothing more.
    ///
    /// Writes the database file's dirty pages back, paced ([`write_back_paced`]), copies what was
    /// committed meanwhile and writes that back too. More rounds do not shrink what is left: on
    /// the benchmark's disk a pass writes back more slowly than commits dirty new pages (each
    /// round took 80–200 ms, and the RESTART after three rounds 32–57 ms), and every round
    /// writes the hot pages again.
    fn prepare_restart(conn: &Connection, db_file: &std::fs::File) {
        let prepared = write_back_paced(db_file)
            .and_then(|()| passive_checkpoint(conn).map_err(std::io::Error::other))
            .and_then(|_| write_back_paced(db_file));
        if let Err(e) = prepared {
            tracing::warn!(error = %e, "preparing the WAL restart failed; the restart does it all");
        }
    }
}

/// The slice of the database file written back at a time (see [`write_back_paced`]).
const WRITE_BACK_SLICE: u64 = 512 << 10;
/// A slice written back faster than this had nothing to write: no pause after it.
const WRITE_BACK_CLEAN: std::time::Duration = std::time::Duration::from_micros(50);

/// Writes the database file's dirty pages back to the disk a slice at a time, and after each
/// slice that had pages to write pauses for as long as it took.
///
/// Every sync of the WAL flushes the disk's write cache, and so waits for every write sent to
/// the disk before it. The pages copied back since the last restart are thousands of random
/// blocks (purchase benchmark: ~5,000 after 2 s); written by one `fdatasync` of the database
/// file they took 100–140 ms, and every WAL sync meanwhile, so every request, waited for them
/// (stalls of ~100 ms every ~2 s, the purchases' p99). Sent a slice at a time with pauses, a
/// WAL sync waits for one slice at most.
fn write_back_paced(db_file: &std::fs::File) -> std::io::Result<()> {
    let len = db_file.metadata()?.len();
    let mut offset = 0;
    while offset < len {
        write_back_then_pause(db_file, offset, WRITE_BACK_SLICE)?;
        offset += WRITE_BACK_SLICE;
    }
    Ok(())
}

/// Writes one slice of `file` back ([`suanli_walbuf::write_back`]) and, if it had pages to
/// write, pauses for as long as that took, so that WAL syncs get the disk in between.
fn write_back_then_pause(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<()> {
    let started = std::time::Instant::now();
    suanli_walbuf::write_back(file, offset, len)?;
    let took = started.elapsed();
    if took > WRITE_BACK_CLEAN {
        std::thread::sleep(took);
    }
    Ok(())
}

/// Zero-fills the writer's WAL file ahead of the writer while the WAL grows under load, as
/// PostgreSQL zero-fills each new WAL segment (`wal_init_zero`).
///
/// An `fdatasync` after appending to a file also writes the file's new size and blocks to the
/// file system's journal; on the benchmarks' disk it takes about twice as long as one after
/// overwriting blocks that were written before (`docs/BENCHMARKS.md`, runs W, X and Y). A WAL that has
/// been restarted is overwritten from its start, but a new one (a new database, or any after a
/// clean shutdown: closing the last connection deletes the WAL) is appended to until its first
/// restart, hundreds of MiB under load. Once the WAL holds [`PREFILL_FROM`] of the limit, every
/// checkpoint extends the file with zeros to four times what it holds, up to the limit (the
/// restart bound and a quarter more: the WAL keeps growing while a restart is prepared), at
/// most [`PREFILL_PER_CHECKPOINT`] at a time, each [`PREFILL_SLICE`] written back before the
/// next and paced as the database file's write-back is ([`write_back_then_pause`]), and synced
/// with the file's new size at the end. Under a light load the WAL never grows that far: SQLite restarts
/// it by itself.
struct WalPrefill {
    /// The WAL's path as SQLite names it (see [`suanli_walbuf::append_zeros`]).
    wal_path: String,
    /// The WAL file, to write back and sync what was filled.
    file: std::sync::Arc<std::fs::File>,
    /// Bytes of one frame: its header and a page.
    frame_bytes: u64,
    /// The file is filled up to this size at most.
    limit: u64,
}

/// The share of [`WalPrefill::limit`] the WAL must hold before it is filled ahead: 1/64
/// (~5 MiB in production).
const PREFILL_FROM: u64 = 64;
/// Most zeros added after one checkpoint: 16 MiB per [`CHECKPOINT_EVERY`] stays well ahead of
/// the heaviest load measured (the ledger benchmark's WAL grows by ~80 MB/s).
const PREFILL_PER_CHECKPOINT: u64 = 16 << 20;
/// Zeros written at a time, and written back before the next. A WAL sync waits for the slice
/// in flight: with 1 MiB slices the ledger benchmark's p99 went from ~3.8 to ~6.4 ms while the
/// WAL was filled; with 256 KiB it stayed at ~4 ms.
const PREFILL_SLICE: u64 = 256 << 10;

impl WalPrefill {
    /// For a WAL of `page_size` pages that is restarted once it holds `restart_at` frames.
    fn new(
        wal_path: String,
        file: std::sync::Arc<std::fs::File>,
        page_size: i64,
        restart_at: i64,
    ) -> WalPrefill {
        let frame_bytes = page_size.max(0) as u64 + FRAME_HEADER_BYTES;
        let frames = restart_at.max(0) as u64;
        WalPrefill {
            wal_path,
            file,
            frame_bytes,
            limit: WAL_HEADER_BYTES + frames.saturating_mul(frame_bytes).saturating_mul(5) / 4,
        }
    }

    /// After a checkpoint that found `frames` frames in the WAL: fills the file ahead of them.
    /// Only speed depends on it, so a failure is logged and nothing more.
    fn ahead_of(&self, frames: i64) {
        let used = WAL_HEADER_BYTES + (frames.max(0) as u64).saturating_mul(self.frame_bytes);
        if used < self.limit / PREFILL_FROM {
            return;
        }
        if let Err(e) = self.fill(used.saturating_mul(4).min(self.limit)) {
            tracing::warn!(error = %e, "zero-filling the WAL ahead of the writer failed");
        }
    }

    fn fill(&self, up_to: u64) -> std::io::Result<()> {
        let mut filled = 0;
        while filled < PREFILL_PER_CHECKPOINT {
            let (offset, len) = suanli_walbuf::append_zeros(&self.wal_path, up_to, PREFILL_SLICE)
                .map_err(std::io::Error::other)?;
            if len == 0 {
                break;
            }
            write_back_then_pause(&self.file, offset, len)?;
            filled += len;
        }
        if filled > 0 {
            self.file.sync_data()?;
        }
        Ok(())
    }
}

/// Runs a PASSIVE checkpoint; the number of frames in the WAL.
fn passive_checkpoint(conn: &Connection) -> rusqlite::Result<i64> {
    // (busy, frames in the WAL, frames checkpointed)
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1))
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
    StoreError::Database(e.to_string())
}

/// Rewrites `$N` parameters as SQLite's explicit `?N`.
fn numbered_parameters(sql: &str) -> String {
    sql.replace('$', "?")
}

impl SqliteDatabase {
    /// Opens (creating) the database at `path` for writing and migrates it.
    ///
    /// Migrations run with `synchronous=FULL`. Then the connection runs with
    /// `synchronous=NORMAL`, under which a WAL-mode `COMMIT` appends the batch's pages to the WAL
    /// without waiting for the disk, and [`Database::commit`] returns an `fdatasync` of the WAL
    /// file that the writer runs on another thread while it executes the next batch; a batch's
    /// requests are answered only after it. Nothing acknowledged depends on a sync at commit: the
    /// WAL is a log of whole commits whose frames are checksummed in a chain, so after a crash
    /// SQLite recovers exactly the commits whose frames reached the disk, in order. NORMAL (not
    /// OFF) keeps the syncs that order the WAL's reuse: the WAL is synced before a checkpoint
    /// copies it and the database file after, and the WAL's new header is synced before frames
    /// are written over old ones after a restart (with OFF, a power cut could leave new frames
    /// behind an old header, and recovery would bring back old pages). Checkpoints run on the
    /// checkpointer's `synchronous=FULL` connection, restarts on this one (see [`Checkpointer`]).
    pub fn open_writer(path: &str) -> Result<Self, StoreError> {
        Self::open_writer_restarting_at(path, RESTART_WAL_AT_BYTES)
    }

    fn open_writer_restarting_at(path: &str, restart_at_bytes: i64) -> Result<Self, StoreError> {
        // Through the WAL-buffering VFS: a commit's frames reach the WAL file in one write
        // instead of two per page (see `suanli_walbuf`).
        let vfs = suanli_walbuf::register().map_err(StoreError::Database)?;
        let conn = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), vfs)
            .map_err(map_err)?;
        // Before anything is written: a database's page size is fixed once it has a table.
        conn.execute_batch(&format!("PRAGMA page_size={PAGE_SIZE};"))
            .map_err(map_err)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; \
             PRAGMA busy_timeout=10000; PRAGMA wal_autocheckpoint=0;",
        )
        .map_err(map_err)?;
        conn.set_prepared_statement_cache_capacity(128);
        let mut me = SqliteDatabase {
            conn,
            rewritten: Default::default(),
            checkpointer: None,
            wal: None,
            data_version: None,
            in_write: false,
        };
        crate::schema::migrate(&mut me)?;
        // Without a WAL file to sync (it exists once the database has been read in WAL mode),
        // commits stay synchronous=FULL and durable when they return.
        if let Ok(file) = std::fs::File::open(format!("{path}-wal")) {
            me.conn
                .execute_batch("PRAGMA synchronous=NORMAL;")
                .map_err(map_err)?;
            me.wal = Some(std::sync::Arc::new(file));
        }
        // The WAL's name as SQLite has it: the database's full path, plus `-wal`.
        let wal = match (&me.wal, me.conn.path()) {
            (Some(file), Some(db)) if !db.is_empty() => Some((format!("{db}-wal"), file.clone())),
            _ => None,
        };
        me.checkpointer = Some(Checkpointer::start(path, restart_at_bytes, wal)?);
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
        Ok(SqliteDatabase {
            conn,
            rewritten: Default::default(),
            checkpointer: None,
            wal: None,
            data_version: None,
            in_write: false,
        })
    }

    /// Checkpoints what is left of the WAL and lets the next commit write it from its start
    /// (see [`Checkpointer`]). With `synchronous=NORMAL` the checkpoint syncs the WAL before
    /// copying and the database file after; SQLite syncs the WAL's new header before the first
    /// frame written after the restart. Readers still reading the WAL make it give up after
    /// [`RESTART_WAIT`]; the checkpointer asks again later.
    fn restart_wal(&mut self) {
        fn poll(attempt: i32) -> bool {
            std::thread::sleep(RESTART_POLL);
            (attempt as u128) * RESTART_POLL.as_micros() < RESTART_WAIT.as_micros()
        }
        let _ = self.conn.busy_handler(Some(poll));
        match self
            .conn
            .query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0))
        {
            Ok(0) => {}
            Ok(_) => tracing::debug!("WAL restart postponed: readers still use it"),
            Err(e) => tracing::warn!(error = %e, "WAL restart failed; retrying later"),
        }
        let _ = self.conn.busy_timeout(std::time::Duration::from_secs(10));
    }
}

/// Statements in their SQLite form, by the address and length of their shared text, with that
/// text. Hashing the text itself (a few hundred bytes, twice per statement) was 2 % of the
/// writer's time in the purchase benchmark; the statements are mostly `&'static str`s, whose
/// address does not change. A statement built at run time may reuse an address, so a hit is
/// checked against the text.
#[derive(Default)]
struct Rewritten(std::collections::HashMap<(usize, usize), (String, String)>);

/// The SQLite form of a shared statement, rewritten once and then looked up.
fn rewrite<'a>(cache: &'a mut Rewritten, sql: &str) -> &'a str {
    let key = (sql.as_ptr() as usize, sql.len());
    let known = matches!(cache.0.get(&key), Some((text, _)) if text == sql);
    if !known {
        if cache.0.len() > 1_024 {
            cache.0.clear();
        }
        cache
            .0
            .insert(key, (sql.to_owned(), numbered_parameters(sql)));
    }
    &cache.0[&key].1
}

impl SqliteDatabase {
    /// Refuses statements once SQLite has ended the write transaction we began.
    fn check_transaction(&mut self) -> Result<(), StoreError> {
        if self.transaction_broken() {
            return Err(StoreError::Database(
                "SQLite rolled the transaction back after an error; nothing more runs in it".into(),
            ));
        }
        Ok(())
    }
}

impl Database for SqliteDatabase {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, StoreError> {
        self.check_transaction()?;
        crate::database::refuse_nul(params)?;
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
        self.check_transaction()?;
        crate::database::refuse_nul(params)?;
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
        let ends = sql == "ROLLBACK" || sql.starts_with("COMMIT");
        if !ends {
            self.check_transaction()?;
        }
        let result = self.conn.execute_batch(sql).map_err(map_err);
        if ends {
            self.in_write = false;
        }
        result
    }

    /// SQLite has ended the transaction when the connection is back in autocommit mode.
    fn transaction_broken(&mut self) -> bool {
        self.in_write && self.conn.is_autocommit()
    }

    fn begin_write(&mut self) -> Result<(), StoreError> {
        // IMMEDIATE takes the write lock up front, so a batch never fails half-way on a lock upgrade.
        self.batch("BEGIN IMMEDIATE")?;
        self.in_write = true;
        Ok(())
    }

    fn commit(&mut self) -> Result<Option<crate::database::SyncFn>, StoreError> {
        if self.transaction_broken() {
            self.in_write = false;
            return Err(StoreError::Database(
                "SQLite rolled the transaction back after an error; it cannot commit".into(),
            ));
        }
        self.batch("COMMIT")?;
        let Some(wal) = self.wal.clone() else {
            return Ok(None);
        };
        Ok(Some(Box::new(move || {
            if let Err(e) = wal.sync_data() {
                // After a failed fsync the kernel may have dropped the dirty pages: what the disk
                // holds is unknown, and going on could acknowledge lost writes. Stop; a restart
                // recovers what is on disk.
                tracing::error!(error = %e, "fdatasync of the WAL failed; stopping the process");
                eprintln!("suanli: fdatasync of the WAL failed ({e}); stopping");
                std::process::abort();
            }
            Ok(())
        })))
    }

    /// SQLite changes `PRAGMA data_version` for a connection whenever another connection (of
    /// this process or another) committed to the database.
    fn changed_by_others(&mut self) -> Result<bool, StoreError> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(map_err)?;
        let changed = self.data_version != Some(version);
        self.data_version = Some(version);
        Ok(changed)
    }

    /// Restarts the WAL when the checkpointer asked for it (see [`Checkpointer`]): here, not in
    /// [`Database::commit`], so that the batch just committed is synced and answered while the
    /// restart runs.
    fn after_batch(&mut self) {
        if let Some(c) = &self.checkpointer {
            if c.restart_wanted
                .swap(false, std::sync::atomic::Ordering::Relaxed)
            {
                self.restart_wal();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A statement is found by its text's address, and a new text at an old address is not
    /// taken for the old one.
    #[test]
    fn a_rewritten_statement_is_checked_against_its_text() {
        let mut cache = Rewritten::default();
        let mut text = String::from("UPDATE t SET a = $2 WHERE id = $1");
        assert_eq!(
            rewrite(&mut cache, &text),
            "UPDATE t SET a = ?2 WHERE id = ?1"
        );
        let address = text.as_ptr();
        text.replace_range(.., "UPDATE t SET b = $1 WHERE id = $2");
        assert_eq!(
            text.as_ptr(),
            address,
            "the same address, another statement"
        );
        assert_eq!(
            rewrite(&mut cache, &text),
            "UPDATE t SET b = ?1 WHERE id = ?2"
        );
        let copy = text.clone();
        assert_eq!(
            rewrite(&mut cache, &copy),
            "UPDATE t SET b = ?1 WHERE id = ?2"
        );
    }

    /// A connection to a new database in a new directory, with foreign keys on and the
    /// migrations up to `version` applied, as an older exchange left it.
    fn migrated_up_to(version: i64) -> (std::path::PathBuf, SqliteDatabase) {
        let dir = std::env::temp_dir().join(crate::ops::new_id("suanli-migrate"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.db").to_string_lossy().into_owned();
        let mut b = SqliteDatabase {
            conn: Connection::open(&path).unwrap(),
            rewritten: Default::default(),
            checkpointer: None,
            wal: None,
            data_version: None,
            in_write: false,
        };
        b.batch("PRAGMA foreign_keys=ON").unwrap();
        crate::schema::migrate_up_to(&mut b, version).unwrap();
        (dir, b)
    }

    /// The names of `table`'s indexes, in order.
    fn indexes_of(b: &mut SqliteDatabase, table: &str) -> Vec<String> {
        b.query(
            "SELECT name FROM sqlite_schema WHERE tbl_name = $1 AND type = 'index' ORDER BY name",
            &[table.into()],
        )
        .unwrap()
        .iter()
        .map(|r| r.str(0).unwrap())
        .collect()
    }

    /// Issue 16: a database made before names had to be unique may hold two orgs whose names
    /// cannot be told apart, and a reference recorded twice. Migration 8 keeps the oldest org's
    /// name as it is and leaves the later one without a key (shown with its id until renamed);
    /// the ledger is not rewritten; new duplicates are refused.
    #[test]
    fn migration_8_keys_names_and_references_and_leaves_old_duplicates_to_the_operator() {
        let (dir, mut b) = migrated_up_to(7);
        b.batch(
            "INSERT INTO orgs VALUES ('org_o', 'Suanli Operator', 'operator', NULL, 'z', 'r', 0), \
             ('org_a', 'Tianjin AI', 'provider', NULL, 'z', 'r', 1), \
             ('org_b', 'TIANJIN  AI', 'provider', NULL, 'z', 'r', 2), \
             ('org_c', 'Binhai Labs', 'consumer', 'enterprise', 'z', 'r', 3); \
             INSERT INTO accounts (id, org_id, kind, debits_micros, credits_micros) VALUES \
             ('org_o.external', 'org_o', 'external', 300, 0), \
             ('org_c.available', 'org_c', 'available', 0, 300); \
             INSERT INTO transfers (seq, id, kind, debit_account_id, credit_account_id, \
             amount_micros, debit_balance_after_micros, credit_balance_after_micros, hold_id, \
             lease_id, external_ref, created_ms) VALUES \
             (1, 'tr_1', 'deposit', 'org_o.external', 'org_c.available', 100, -100, 100, NULL, NULL, 'B-1', 0), \
             (2, 'tr_2', 'deposit', 'org_o.external', 'org_c.available', 200, -300, 300, NULL, NULL, 'b-1', 0);",
        )
        .unwrap();
        crate::schema::migrate_up_to(&mut b, 8).unwrap();
        let keys = b
            .query("SELECT id, name_key FROM orgs ORDER BY id", &[])
            .unwrap();
        let keyed: Vec<(String, bool)> = keys
            .iter()
            .map(|r| (r.str(0).unwrap(), r.opt_str(1).unwrap().is_some()))
            .collect();
        assert_eq!(
            keyed,
            [
                ("org_a".to_owned(), true),
                ("org_b".to_owned(), false),
                ("org_c".to_owned(), true),
                ("org_o".to_owned(), true),
            ]
        );
        let mut tx = crate::ops::Tx::new(&mut b);
        let shown = tx.get_org("org_b").unwrap();
        assert!(!shown.name_unique);
        assert!(tx.get_org("org_a").unwrap().name_unique);
        // The two deposits stay; the reference is taken by the first.
        assert_eq!(tx.count("transfers").unwrap(), 2);
        let refs = b
            .query(
                "SELECT org_id, ref_key, transfer_id FROM external_refs",
                &[],
            )
            .unwrap();
        assert_eq!(refs.len(), 1);
        assert_eq!(
            (
                refs[0].str(0).unwrap(),
                refs[0].str(1).unwrap(),
                refs[0].str(2).unwrap()
            ),
            ("org_c".into(), "b-1".into(), "tr_1".into())
        );
        // The operator renames the later org; then both are unique.
        let mut tx = crate::ops::Tx::new(&mut b);
        let renamed = tx.rename_org("org_b", "Tianjin AI Cloud").unwrap();
        assert!(renamed.name_unique);
        drop(dir);
    }

    /// A database made before migration 5 keeps every transfer, its positions and its
    /// constraints when `transfers` is rebuilt without `AUTOINCREMENT`, and new transfers follow.
    #[test]
    fn migration_5_rebuilds_transfers_without_losing_a_row() {
        let (dir, mut b) = migrated_up_to(4);
        b.batch(
            "INSERT INTO orgs VALUES ('org_o', 'o', 'operator', NULL, 'z', 'r', 0), \
             ('org_c', 'c', 'consumer', 'enterprise', 'z', 'r', 0); \
             INSERT INTO accounts (id, org_id, kind, debits_micros, credits_micros) VALUES \
             ('org_o.external', 'org_o', 'external', 700, 0), \
             ('org_c.available', 'org_c', 'available', 0, 700);",
        )
        .unwrap();
        let insert = "INSERT INTO transfers (seq, id, kind, debit_account_id, credit_account_id, \
             amount_micros, debit_balance_after_micros, credit_balance_after_micros, hold_id, \
             lease_id, external_ref, created_ms) VALUES ($1, $2, 'deposit', 'org_o.external', \
             'org_c.available', $3, $4, $5, NULL, NULL, 'ref', 0)";
        for (seq, amount, after) in [(1i64, 300i64, 300i64), (7, 400, 700)] {
            let id = format!("tr_{seq}");
            b.execute(
                insert,
                &[
                    seq.into(),
                    id.as_str().into(),
                    amount.into(),
                    (-after).into(),
                    after.into(),
                ],
            )
            .unwrap();
        }
        let before = b
            .query(
                "SELECT seq, id, amount_micros FROM transfers ORDER BY seq",
                &[],
            )
            .unwrap();
        let sequence = "SELECT count(*) FROM sqlite_sequence WHERE name = 'transfers'";
        assert_eq!(b.query(sequence, &[]).unwrap()[0].i64(0).unwrap(), 1);

        crate::schema::migrate_up_to(&mut b, 5).unwrap();

        let after = b
            .query(
                "SELECT seq, id, amount_micros FROM transfers ORDER BY seq",
                &[],
            )
            .unwrap();
        assert_eq!(after, before);
        assert_eq!(b.query(sequence, &[]).unwrap()[0].i64(0).unwrap(), 0);
        let table_sql = b
            .query(
                "SELECT sql FROM sqlite_schema WHERE name = 'transfers'",
                &[],
            )
            .unwrap()[0]
            .str(0)
            .unwrap();
        assert!(!table_sql.contains("AUTOINCREMENT"), "{table_sql}");
        assert_eq!(
            indexes_of(&mut b, "transfers"),
            [
                "sqlite_autoindex_transfers_1",
                "transfers_credit",
                "transfers_debit"
            ]
        );
        // The constraints came along: a duplicate id, a zero amount and an unknown account fail.
        for (seq, id, amount, debit) in [
            (8i64, "tr_1", 5i64, "org_o.external"),
            (8, "tr_8", 0, "org_o.external"),
            (8, "tr_8", 5, "org_x.external"),
        ] {
            let bad = insert.replace("'org_o.external'", &format!("'{debit}'"));
            assert!(b
                .execute(
                    &bad,
                    &[seq.into(), id.into(), amount.into(), 0.into(), 0.into()]
                )
                .is_err());
        }
        b.execute(
            insert,
            &[8i64.into(), "tr_8".into(), 5i64.into(), 0.into(), 0.into()],
        )
        .unwrap();
        let check = b.query("PRAGMA integrity_check", &[]).unwrap()[0]
            .str(0)
            .unwrap();
        assert_eq!(check, "ok");
        assert!(b.query("PRAGMA foreign_key_check", &[]).unwrap().is_empty());
        drop(b);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A database made before migration 7 keeps every hold and lease, with their keys,
    /// references and indexes, when both tables are rebuilt with their state checks written as
    /// comparisons; the checks and references still refuse what they refused, and foreign keys
    /// are on again afterwards.
    #[test]
    fn migration_7_rebuilds_holds_and_leases_without_losing_a_row() {
        let (dir, mut b) = migrated_up_to(6);
        let lease = |id: &str, state: &str, hold: &str| {
            format!(
                "INSERT INTO leases (id, consumer_org_id, provider_org_id, offer_id, pool_id, \
                 category, qualifier, zone, units, price_micros_per_unit_hour, fee_bps, \
                 duration_limit_s, started_ms, ends_ms, state, hold_id) VALUES ('{id}', 'org_c', \
                 'org_p', 'offer_1', 'pool_1', 'general', NULL, 'z', 1, 100, 500, 60, 0, 60000, \
                 '{state}', '{hold}')"
            )
        };
        b.batch(&format!(
            "INSERT INTO orgs VALUES ('org_c', 'c', 'consumer', 'enterprise', 'z', 'r', 0), \
             ('org_p', 'p', 'provider', NULL, 'z', 'r', 0); \
             INSERT INTO pools (id, org_id, name, zone, created_ms) VALUES ('pool_1', 'org_p', 'p', 'z', 0); \
             INSERT INTO nodes (id, pool_id, name, cpus, memory_mib, accelerator_model, accelerators, \
             partition_name) VALUES ('node_1', 'pool_1', 'n', 8, 1024, NULL, 0, NULL); \
             INSERT INTO offers (id, org_id, pool_id, category, qualifier, accelerator_memory_gib, \
             cpus_per_unit, memory_mib_per_unit, price_micros_per_unit_hour, min_units, max_units, \
             valid_from_ms, valid_until_ms, state, created_ms) VALUES ('offer_1', 'org_p', 'pool_1', \
             'general', NULL, 0, 1, 128, 100, 1, 8, 0, 99999999, 'active', 0); \
             INSERT INTO holds (id, org_id, amount_micros, state, created_ms) VALUES \
             ('hold_1', 'org_c', 100, 'pending', 0), ('hold_2', 'org_c', 50, 'posted', 1); \
             {}; {}; \
             INSERT INTO lease_allocations VALUES ('lease_1', 'node_1', 1, 1, 128, 0);",
            lease("lease_1", "active", "hold_1"),
            lease("lease_2", "ended", "hold_2"),
        ))
        .unwrap();
        let rows = |b: &mut SqliteDatabase| {
            (
                b.query("SELECT * FROM holds ORDER BY id", &[]).unwrap(),
                b.query("SELECT * FROM leases ORDER BY id", &[]).unwrap(),
            )
        };
        let before = rows(&mut b);
        assert_eq!((before.0.len(), before.1.len()), (2, 2));

        crate::schema::migrate(&mut b).unwrap();

        assert_eq!(rows(&mut b), before);
        for table in ["holds", "leases"] {
            let sql = b
                .query(
                    "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = $1",
                    &[table.into()],
                )
                .unwrap()[0]
                .str(0)
                .unwrap();
            assert!(!sql.contains(" IN (") && sql.contains("state = "), "{sql}");
        }
        assert_eq!(
            indexes_of(&mut b, "leases"),
            [
                "leases_active_ends",
                "leases_provider",
                "sqlite_autoindex_leases_1",
                "sqlite_autoindex_leases_2"
            ]
        );
        assert_eq!(
            b.query("PRAGMA foreign_keys", &[]).unwrap()[0]
                .i64(0)
                .unwrap(),
            1
        );
        assert!(b.query("PRAGMA foreign_key_check", &[]).unwrap().is_empty());
        let check = b.query("PRAGMA integrity_check", &[]).unwrap()[0]
            .str(0)
            .unwrap();
        assert_eq!(check, "ok");
        // What the constraints refused before, they still refuse.
        for bad in [
            "INSERT INTO holds (id, org_id, amount_micros, state, created_ms) \
             VALUES ('hold_3', 'org_c', 10, 'lost', 0)"
                .to_owned(),
            "INSERT INTO holds (id, org_id, amount_micros, state, created_ms) \
             VALUES ('hold_3', 'org_x', 10, 'pending', 0)"
                .to_owned(),
            lease("lease_3", "active", "hold_x"),
            lease("lease_3", "gone", "hold_1"),
            lease("lease_3", "active", "hold_1"),
            "UPDATE leases SET state = 'gone' WHERE id = 'lease_1'".to_owned(),
            "DELETE FROM leases WHERE id = 'lease_1'".to_owned(),
        ] {
            assert!(b.batch(&bad).is_err(), "{bad}");
        }
        b.batch(&format!(
            "INSERT INTO holds (id, org_id, amount_micros, state, created_ms) \
             VALUES ('hold_3', 'org_c', 10, 'pending', 2); {}; \
             UPDATE leases SET state = 'expired' WHERE id = 'lease_1'",
            lease("lease_3", "cancelled", "hold_3")
        ))
        .unwrap();
        drop(b);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Commits `n` batches of eight ~1 KiB rows into `scratch`, each synced as the writer's are.
    fn commit_scratch(w: &mut SqliteDatabase, n: usize) -> i64 {
        let body = "x".repeat(900);
        for _ in 0..n {
            w.begin_write().unwrap();
            for _ in 0..8 {
                w.execute(
                    "INSERT INTO scratch (body) VALUES ($1)",
                    &[body.as_str().into()],
                )
                .unwrap();
            }
            let sync = w
                .commit()
                .unwrap()
                .expect("the writer syncs the WAL itself");
            sync().unwrap();
            w.after_batch();
        }
        8 * n as i64
    }

    /// Once the WAL has grown, the checkpointer extends it with zeros ahead of the writer; the
    /// writer's commits land over them, and a crash recovers exactly the committed rows (the
    /// zeros end the log as stale frames do).
    #[test]
    fn the_wal_is_zero_filled_ahead_of_the_writer_and_recovers_over_the_zeros() {
        let dir = std::env::temp_dir().join(format!("suanli-fill-{}", crate::ops::new_id("t")));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.db").to_string_lossy().into_owned();
        let wal_path = format!("{path}-wal");
        // A 4 MiB bound: the WAL is filled ahead once it holds ~84 KB.
        let mut w = SqliteDatabase::open_writer_restarting_at(&path, 4 << 20).unwrap();
        w.batch("CREATE TABLE scratch (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
            .unwrap();
        let mut rows = commit_scratch(&mut w, 40);
        // How much of the file SQLite uses: frames are counted by a checkpoint of our own.
        let other = Connection::open(&path).unwrap();
        let frames: u64 = other
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
            .unwrap();
        let used = WAL_HEADER_BYTES + frames * (1024 + FRAME_HEADER_BYTES);
        assert!(used > 100_000, "the WAL holds {used} bytes");
        // Nothing is written meanwhile, so only the checkpointer can make the file longer.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let filled = loop {
            let len = std::fs::metadata(&wal_path).unwrap().len();
            if len >= 4 * used || std::time::Instant::now() > deadline {
                break len;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert!(
            filled >= 4 * used,
            "the WAL file is {filled} bytes for {used} bytes of frames"
        );
        let wal = std::fs::read(&wal_path).unwrap();
        assert!(
            wal[used as usize..].iter().all(|&b| b == 0),
            "the WAL past its frames is not zeros"
        );
        // More commits land over the zeros; then a crash: the files copied as they are.
        rows += commit_scratch(&mut w, 40);
        let copy = dir.join("copy.db").to_string_lossy().into_owned();
        std::fs::copy(&path, &copy).unwrap();
        std::fs::copy(&wal_path, format!("{copy}-wal")).unwrap();
        let recovered = Connection::open(&copy).unwrap();
        let count: i64 = recovered
            .query_row("SELECT count(*) FROM scratch", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, rows);
        let check: String = recovered
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        drop((recovered, other, w));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Under a steady stream of commits the WAL is restarted instead of growing with everything
    /// written, and nothing committed is lost on the way.
    #[test]
    fn the_wal_stays_bounded_under_steady_writes() {
        let dir = std::env::temp_dir().join(format!("suanli-wal-{}", crate::ops::new_id("t")));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.db").to_string_lossy().into_owned();
        let restart_at = 256 << 10;
        let mut w = SqliteDatabase::open_writer_restarting_at(&path, restart_at).unwrap();
        w.batch("CREATE TABLE scratch (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
            .unwrap();
        let (mut written, mut largest_wal) = (0u64, 0u64);
        let mut rows = 0i64;
        // 8 MiB in 1,000 commits with a pause after each, so the checkpointer (every 100 ms)
        // runs many times while they happen.
        while written < 8 << 20 {
            rows += commit_scratch(&mut w, 1);
            written += 8 * 1024;
            let wal = std::fs::metadata(format!("{path}-wal")).unwrap().len();
            largest_wal = largest_wal.max(wal);
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(
            largest_wal < 2 << 20,
            "the WAL grew to {largest_wal} bytes for {written} bytes written"
        );
        let count = w.query("SELECT count(*) FROM scratch", &[]).unwrap()[0]
            .i64(0)
            .unwrap();
        assert_eq!(count, rows);
        drop(w);
        let reader = SqliteDatabase::open_reader(&path).unwrap();
        let check = reader
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
            .unwrap();
        assert_eq!(check, "ok");
        let count: i64 = reader
            .conn
            .query_row("SELECT count(*) FROM scratch", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, rows);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
