//! A SQLite VFS shim that hands each WAL commit to the kernel in one `pwrite(2)`.
//!
//! SQLite appends a commit to the WAL frame by frame, and each frame with two `pwrite`s: its
//! 24-byte header, then the page. A commit of the exchange's store dirties a few hundred 1 KiB
//! pages (one leaf per account or org in each of several indexes), so the writer made ~500
//! small `pwrite`s per commit, each through the kernel's whole buffered-write path: 20–30 % of
//! the writer thread's CPU in the purchase and ledger benchmarks. This shim wraps the default
//! (unix) VFS and, for WAL files only, gathers contiguous writes in memory and writes them at
//! once when a commit's last frame has been written. Main database files and journals pass
//! through untouched.
//!
//! # Why this is safe
//! Buffered bytes are the writer's uncommitted frames. Nobody may read them before the commit is
//! published, and SQLite publishes a commit only after the frames are written:
//! `sqlite3WalFrames` writes every frame, then appends them to the wal-index (shared memory) and
//! last writes the wal-index header, which is what other connections read. The buffer is
//! written to the file
//! - when the page of a frame whose header marks a commit (a non-zero "database size after
//!   commit" field) has been appended: before SQLite publishes the commit, and with the write's
//!   error, if any, returned to SQLite, which then fails and rolls back the transaction;
//! - before any other operation on that WAL file (read, sync, truncate, size, file control,
//!   close) and before a write that does not continue the buffered bytes (SQLite rewriting a
//!   frame in place, the WAL's header after a restart);
//! - on a memory barrier of the database's wal-index (`xShmBarrier`), which SQLite issues
//!   between the two copies of the wal-index header it writes to publish a commit: even if the
//!   commit mark were missed, no reader can see a commit before its frames are in the file;
//! - when any lock on the database's wal-index is released (`xShmLock` unlock), so a
//!   transaction that wrote frames and rolled back leaves nothing behind for a later writer to
//!   have overwritten.
//!
//! A buffer whose write fails is dropped: it belongs to the transaction the failure fails.
//! What the buffer changes is when bytes reach the page cache, never which bytes or in which
//! order. Durability is unchanged: the store syncs the WAL after a commit returns.
//!
//! The crate also has [`write_back`], the paced write-back the store's checkpointer uses before a
//! WAL restart (a system call the standard library does not offer), and [`append_zeros`], with
//! which the checkpointer fills a growing WAL file ahead of the writer under the lock that the
//! writer's own writes take.
//!
//! This is the workspace's only `unsafe` code. Each block states what it relies on.

use rusqlite::ffi;
use std::collections::HashMap;
use std::ffi::{c_int, c_void, CStr};
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

/// The name to open connections with (`Connection::open_with_flags_and_vfs`).
pub const VFS_NAME: &str = "suanli-walbuf";
const VFS_CNAME: &CStr = c"suanli-walbuf";

/// Size of the WAL file's header; frames start after it (SQLite's WAL format).
pub const WAL_HEADER_BYTES: u64 = 32;
/// Size of a frame's header, written by SQLite as one write before the frame's page.
pub const FRAME_HEADER_BYTES: u64 = 24;
const WAL_HEADER: i64 = WAL_HEADER_BYTES as i64;
const FRAME_HEADER: usize = FRAME_HEADER_BYTES as usize;
/// A buffer this large is written out even in the middle of a commit.
const FLUSH_AT: usize = 8 << 20;
/// The most the unix VFS's `xWrite` writes in one call: it masks the length to 17 bits
/// (`seekAndWriteFd`), so a larger write would be cut short and fail as a full disk.
const MAX_WRITE: usize = 0x1_f000;

static WAL_WRITES: AtomicU64 = AtomicU64::new(0);
static WAL_FLUSHES: AtomicU64 = AtomicU64::new(0);

/// Registers the VFS with SQLite (once per process); returns its name.
pub fn register() -> Result<&'static str, String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            // SAFETY: `sqlite3_vfs_find(NULL)` returns the default VFS, which SQLite keeps for
            // the life of the process; it is only read here. The copy keeps every method and
            // `pAppData` of the default (its methods find their state there, not through the
            // VFS's address), so only `xOpen`, the file size and the name are replaced. The copy
            // is leaked: SQLite keeps a pointer to a registered VFS for the process's life.
            unsafe {
                let default = ffi::sqlite3_vfs_find(ptr::null());
                if default.is_null() {
                    return Err("SQLite has no default VFS".to_string());
                }
                if DEFAULT_VFS.set(default as usize).is_err() {
                    return Err("the WAL-buffering VFS was registered twice".to_string());
                }
                let mut vfs: ffi::sqlite3_vfs = ptr::read(default);
                vfs.pNext = ptr::null_mut();
                vfs.zName = VFS_CNAME.as_ptr();
                vfs.szOsFile = std::mem::offset_of!(ShimFile, inner) as c_int + (*default).szOsFile;
                vfs.xOpen = Some(x_open);
                let vfs = Box::into_raw(Box::new(vfs));
                match ffi::sqlite3_vfs_register(vfs, 0) {
                    ffi::SQLITE_OK => Ok(()),
                    rc => Err(format!("sqlite3_vfs_register failed with {rc}")),
                }
            }
        })
        .clone()
        .map(|()| VFS_NAME)
}

/// What the shim did so far in this process, over all its WAL files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Writes SQLite asked for.
    pub wal_writes: u64,
    /// Writes made to the files.
    pub file_writes: u64,
}

/// The counters of [`Stats`].
pub fn stats() -> Stats {
    Stats {
        wal_writes: WAL_WRITES.load(Ordering::Relaxed),
        file_writes: WAL_FLUSHES.load(Ordering::Relaxed),
    }
}

/// The default VFS's address, set once by [`register`].
static DEFAULT_VFS: OnceLock<usize> = OnceLock::new();

/// What SQLite allocates for a file of this VFS: the shim's fields, then the default VFS's file.
#[repr(C)]
struct ShimFile {
    base: ffi::sqlite3_file,
    /// WAL files: the buffer (an `Arc` turned into a raw pointer); null for other files.
    wal: *const WalBuf,
    /// WAL and main database files: the buffers of the database's WAL files (an `Arc`).
    group: *const Group,
    /// The default VFS's file; it continues past this struct for that VFS's `szOsFile` bytes.
    inner: ffi::sqlite3_file,
}

/// One WAL file's pending bytes.
struct WalBuf {
    state: Mutex<Pending>,
}

struct Pending {
    /// The default VFS's open WAL file; null once it is closed.
    file: *mut ffi::sqlite3_file,
    /// File offset of `data[0]`.
    start: i64,
    data: Vec<u8>,
    /// The last write was the header of a commit frame: write out after its page.
    commit_next: bool,
}

// SAFETY: `file` is used only while the mutex is held, and SQLite keeps it open until `x_close`
// clears it under that mutex. The unix VFS's file methods may be called from any thread.
unsafe impl Send for Pending {}

/// The WAL buffers of one database (all connections of this process), so that the database
/// file's wal-index barrier and unlock can write them out.
#[derive(Default)]
struct Group {
    wals: Mutex<Vec<Arc<WalBuf>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing here panics while holding a lock; if something did, the data is still whole.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Every database's group, by the path of its WAL file as SQLite names it.
fn groups() -> MutexGuard<'static, HashMap<String, Weak<Group>>> {
    static GROUPS: OnceLock<Mutex<HashMap<String, Weak<Group>>>> = OnceLock::new();
    lock(GROUPS.get_or_init(Default::default))
}

/// The group of the WAL file at `wal_path`.
fn group(wal_path: &str) -> Arc<Group> {
    let mut groups = groups();
    if let Some(g) = groups.get(wal_path).and_then(Weak::upgrade) {
        return g;
    }
    groups.retain(|_, g| g.strong_count() > 0);
    let g = Arc::new(Group::default());
    groups.insert(wal_path.to_string(), Arc::downgrade(&g));
    g
}

impl Group {
    /// Writes out every WAL buffer of the database. Its callers cannot report a failure, and
    /// need not: a failed buffer is dropped with the transaction it belongs to (see the crate
    /// docs), and a committed one was written when its commit frame was.
    fn flush_all(&self) {
        for wal in lock(&self.wals).iter() {
            let _ = lock(&wal.state).flush();
        }
    }
}

impl Pending {
    /// Writes the pending bytes to the file. On failure they are dropped (see the crate docs).
    fn flush(&mut self) -> c_int {
        if self.data.is_empty() || self.file.is_null() {
            return ffi::SQLITE_OK;
        }
        WAL_FLUSHES.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `file` is the default VFS's open WAL file, used under the mutex (see `Pending`).
        let rc = unsafe { write_at(self.file, &self.data, self.start) };
        self.data.clear();
        self.commit_next = false;
        rc
    }
}

/// Writes `bytes` at `offset` of `file` with the default VFS's `xWrite`, in writes of at most
/// [`MAX_WRITE`] bytes; stops at the first that fails and returns its code.
///
/// # Safety
/// `file` must be a default VFS file that is open, used under its buffer's lock (see `Pending`).
unsafe fn write_at(file: *mut ffi::sqlite3_file, bytes: &[u8], mut offset: i64) -> c_int {
    for chunk in bytes.chunks(MAX_WRITE) {
        // SAFETY: per the contract; the chunk is valid for its length (under `MAX_WRITE`, so
        // it fits a `c_int`) for the call.
        let rc = unsafe {
            match (*(*file).pMethods).xWrite {
                Some(write) => write(file, chunk.as_ptr().cast(), chunk.len() as c_int, offset),
                None => ffi::SQLITE_IOERR_WRITE,
            }
        };
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        offset += chunk.len() as i64;
    }
    ffi::SQLITE_OK
}

/// The default VFS's file inside a shim file.
///
/// # Safety
/// `f` must be a file opened by [`x_open`].
unsafe fn inner(f: *mut ffi::sqlite3_file) -> *mut ffi::sqlite3_file {
    // SAFETY: per the contract, `f` points to a `ShimFile`.
    unsafe { ptr::addr_of_mut!((*f.cast::<ShimFile>()).inner) }
}

/// Writes out `f`'s own pending bytes if it is a WAL file.
///
/// # Safety
/// `f` must be a file opened by [`x_open`] and not yet closed.
unsafe fn flush_own(f: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: per the contract; `wal` is null or an `Arc` kept alive until `x_close`.
    unsafe {
        let wal = (*f.cast::<ShimFile>()).wal;
        if wal.is_null() {
            return ffi::SQLITE_OK;
        }
        lock(&(*wal).state).flush()
    }
}

/// Calls the default VFS's method `$m` on the inner file of `$f`, or returns `$none` if that
/// file has no such method.
macro_rules! delegate {
    ($f:expr, $m:ident, $none:expr $(, $arg:expr)*) => {{
        // SAFETY: the caller's `$f` is a file opened by `x_open`, so its inner file is open and
        // has the default VFS's methods.
        unsafe {
            let inner = inner($f);
            match (*(*inner).pMethods).$m {
                Some(method) => method(inner $(, $arg)*),
                None => $none,
            }
        }
    }};
}

/// [`delegate!`] on a file whose own pending bytes (if it is a WAL file) are written out first:
/// every operation on a WAL file but `xWrite` and `xClose` (see the crate docs).
macro_rules! flush_then_delegate {
    ($f:expr, $m:ident, $none:expr $(, $arg:expr)*) => {{
        // SAFETY: SQLite calls the shim's methods on files `x_open` opened.
        let rc = unsafe { flush_own($f) };
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        delegate!($f, $m, $none $(, $arg)*)
    }};
}

unsafe extern "C" fn x_open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    f: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let Some(&default) = DEFAULT_VFS.get() else {
        return ffi::SQLITE_CANTOPEN;
    };
    let default = default as *mut ffi::sqlite3_vfs;
    let shim = f.cast::<ShimFile>();
    // SAFETY: SQLite passes `szOsFile` bytes at `f`, suitably aligned, for this file; the shim's
    // fields come first, the default VFS's file (its `szOsFile` bytes) after them. `name` is
    // null or a NUL-terminated path, as the default VFS's `xOpen` expects.
    unsafe {
        ptr::addr_of_mut!((*shim).base.pMethods).write(ptr::null());
        ptr::addr_of_mut!((*shim).wal).write(ptr::null());
        ptr::addr_of_mut!((*shim).group).write(ptr::null());
        let inner = ptr::addr_of_mut!((*shim).inner);
        ptr::addr_of_mut!((*inner).pMethods).write(ptr::null());
        let Some(open) = (*default).xOpen else {
            return ffi::SQLITE_CANTOPEN;
        };
        let rc = open(default, name, inner, flags, out_flags);
        if (*inner).pMethods.is_null() {
            return if rc == ffi::SQLITE_OK {
                ffi::SQLITE_CANTOPEN
            } else {
                rc
            };
        }
        if rc == ffi::SQLITE_OK && !name.is_null() {
            let path = CStr::from_ptr(name).to_string_lossy();
            if flags & ffi::SQLITE_OPEN_WAL != 0 {
                let g = group(&path);
                let wal = Arc::new(WalBuf {
                    state: Mutex::new(Pending {
                        file: inner,
                        start: 0,
                        data: Vec::new(),
                        commit_next: false,
                    }),
                });
                lock(&g.wals).push(wal.clone());
                (*shim).wal = Arc::into_raw(wal);
                (*shim).group = Arc::into_raw(g);
            } else if flags & ffi::SQLITE_OPEN_MAIN_DB != 0 {
                (*shim).group = Arc::into_raw(group(&format!("{path}-wal")));
            }
        }
        // Set even when the open failed with the inner file open: SQLite then calls `xClose`.
        (*shim).base.pMethods = &IO_METHODS;
        rc
    }
}

static IO_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: Some(x_shm_map),
    xShmLock: Some(x_shm_lock),
    xShmBarrier: Some(x_shm_barrier),
    xShmUnmap: Some(x_shm_unmap),
    xFetch: Some(x_fetch),
    xUnfetch: Some(x_unfetch),
};

unsafe extern "C" fn x_close(f: *mut ffi::sqlite3_file) -> c_int {
    let shim = f.cast::<ShimFile>();
    let mut rc = ffi::SQLITE_OK;
    // SAFETY: `f` was opened by `x_open`; `wal` and `group` are null or `Arc`s it made, each
    // taken back here exactly once (the fields are cleared).
    unsafe {
        let group = std::mem::replace(&mut (*shim).group, ptr::null());
        let group = (!group.is_null()).then(|| Arc::from_raw(group));
        let wal = std::mem::replace(&mut (*shim).wal, ptr::null());
        if !wal.is_null() {
            let wal = Arc::from_raw(wal);
            {
                let mut state = lock(&wal.state);
                rc = state.flush();
                state.file = ptr::null_mut();
            }
            if let Some(g) = &group {
                lock(&g.wals).retain(|w| !Arc::ptr_eq(w, &wal));
            }
        }
    }
    let closed = delegate!(f, xClose, ffi::SQLITE_OK);
    if rc == ffi::SQLITE_OK {
        closed
    } else {
        rc
    }
}

unsafe extern "C" fn x_read(
    f: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    n: c_int,
    off: i64,
) -> c_int {
    flush_then_delegate!(f, xRead, ffi::SQLITE_IOERR_READ, buf, n, off)
}

unsafe extern "C" fn x_write(
    f: *mut ffi::sqlite3_file,
    buf: *const c_void,
    n: c_int,
    off: i64,
) -> c_int {
    // SAFETY: SQLite calls this on a file `x_open` opened; `wal` is null or alive until
    // `x_close`; `buf` holds `n` bytes for the call.
    let wal = unsafe { (*f.cast::<ShimFile>()).wal };
    if wal.is_null() || n <= 0 {
        return delegate!(f, xWrite, ffi::SQLITE_IOERR_WRITE, buf, n, off);
    }
    // SAFETY: as above; `buf` holds `n` bytes for the call.
    let (wal, bytes) = unsafe {
        (
            &*wal,
            std::slice::from_raw_parts(buf.cast::<u8>(), n as usize),
        )
    };
    WAL_WRITES.fetch_add(1, Ordering::Relaxed);
    let mut state = lock(&wal.state);
    if !state.data.is_empty() && off != state.start + state.data.len() as i64 {
        let rc = state.flush();
        if rc != ffi::SQLITE_OK {
            return rc;
        }
    }
    if state.data.is_empty() {
        state.start = off;
    }
    state.data.extend_from_slice(bytes);
    if bytes.len() == FRAME_HEADER && off >= WAL_HEADER {
        // Bytes 4..8 of a frame header: the database's size in pages after the commit that
        // this frame ends, or zero if it ends none.
        state.commit_next = bytes[4..8] != [0, 0, 0, 0];
        return ffi::SQLITE_OK;
    }
    if state.commit_next || state.data.len() >= FLUSH_AT {
        return state.flush();
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_truncate(f: *mut ffi::sqlite3_file, size: i64) -> c_int {
    flush_then_delegate!(f, xTruncate, ffi::SQLITE_IOERR_TRUNCATE, size)
}

unsafe extern "C" fn x_sync(f: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    flush_then_delegate!(f, xSync, ffi::SQLITE_IOERR_FSYNC, flags)
}

unsafe extern "C" fn x_file_size(f: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    flush_then_delegate!(f, xFileSize, ffi::SQLITE_IOERR_FSTAT, size)
}

unsafe extern "C" fn x_lock(f: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    delegate!(f, xLock, ffi::SQLITE_IOERR_LOCK, level)
}

unsafe extern "C" fn x_unlock(f: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    delegate!(f, xUnlock, ffi::SQLITE_IOERR_UNLOCK, level)
}

unsafe extern "C" fn x_check_reserved_lock(f: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    delegate!(
        f,
        xCheckReservedLock,
        ffi::SQLITE_IOERR_CHECKRESERVEDLOCK,
        out
    )
}

unsafe extern "C" fn x_file_control(
    f: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    flush_then_delegate!(f, xFileControl, ffi::SQLITE_NOTFOUND, op, arg)
}

unsafe extern "C" fn x_sector_size(f: *mut ffi::sqlite3_file) -> c_int {
    delegate!(f, xSectorSize, 4096)
}

unsafe extern "C" fn x_device_characteristics(f: *mut ffi::sqlite3_file) -> c_int {
    delegate!(f, xDeviceCharacteristics, 0)
}

unsafe extern "C" fn x_shm_map(
    f: *mut ffi::sqlite3_file,
    page: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    delegate!(
        f,
        xShmMap,
        ffi::SQLITE_IOERR_SHMMAP,
        page,
        size,
        extend,
        out
    )
}

/// The database's WAL buffers, if `f` is a main database or WAL file.
///
/// # Safety
/// `f` must be a file opened by [`x_open`] and not yet closed.
unsafe fn group_of<'a>(f: *mut ffi::sqlite3_file) -> Option<&'a Group> {
    // SAFETY: per the contract; `group` is null or an `Arc` kept alive until `x_close`.
    unsafe {
        let group = (*f.cast::<ShimFile>()).group;
        (!group.is_null()).then(|| &*group)
    }
}

unsafe extern "C" fn x_shm_lock(
    f: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    if flags & ffi::SQLITE_SHM_UNLOCK != 0 {
        // SAFETY: SQLite calls this on a file `x_open` opened.
        if let Some(group) = unsafe { group_of(f) } {
            // Whatever is left belongs to a transaction that did not commit.
            group.flush_all();
        }
    }
    delegate!(f, xShmLock, ffi::SQLITE_IOERR_SHMLOCK, offset, n, flags)
}

unsafe extern "C" fn x_shm_barrier(f: *mut ffi::sqlite3_file) {
    // SAFETY: SQLite calls this on a file `x_open` opened.
    if let Some(group) = unsafe { group_of(f) } {
        group.flush_all();
    }
    delegate!(f, xShmBarrier, ())
}

unsafe extern "C" fn x_shm_unmap(f: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    delegate!(f, xShmUnmap, ffi::SQLITE_OK, delete)
}

unsafe extern "C" fn x_fetch(
    f: *mut ffi::sqlite3_file,
    off: i64,
    n: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // Without a memory map (the default VFS maps only database files), the answer is null and
    // SQLite reads the page instead.
    // SAFETY: SQLite passes a valid pointer for the answer.
    unsafe { out.write(ptr::null_mut()) };
    flush_then_delegate!(f, xFetch, ffi::SQLITE_OK, off, n, out)
}

unsafe extern "C" fn x_unfetch(f: *mut ffi::sqlite3_file, off: i64, p: *mut c_void) -> c_int {
    delegate!(f, xUnfetch, ffi::SQLITE_OK, off, p)
}

/// Appends up to `most` zero bytes to the WAL file at `wal_path` (the path SQLite gives it:
/// the database's path as `sqlite3_db_filename` returns it, plus `-wal`), stopping at `up_to`
/// bytes; returns the offset and the length of what it appended (a length of 0 when the file is
/// that long already, or when no connection of this process has it open through this VFS).
///
/// This is how a WAL file is made ready ahead of its writer, as PostgreSQL zero-fills each new
/// WAL segment (`wal_init_zero`): a sync after appending to a file must also write the file's
/// new size and blocks to the file system's journal, and on the disk the benchmarks run on an
/// `fdatasync` after an append takes about twice as long as one after overwriting blocks that were
/// written before (`docs/BENCHMARKS.md`, runs W, X and Y). Zeros are never taken for frames: a frame whose
/// header says page 0, or whose salt or checksum does not continue the chain, ends the log when
/// SQLite recovers it, as the stale frames left behind after a restart do.
///
/// The zeros are written through the file SQLite has open, holding its buffer's lock, at the
/// file's end as it is then: SQLite's own writes take that lock too, so the zeros can only land
/// past every byte SQLite has written, and whatever SQLite writes there later (its buffered
/// frames included) lands over them. With more than one such connection open on the file it
/// does nothing: its lock would not cover the others' writes.
pub fn append_zeros(wal_path: &str, up_to: u64, most: u64) -> Result<(u64, u64), String> {
    let Some(group) = groups().get(wal_path).and_then(Weak::upgrade) else {
        return Ok((0, 0));
    };
    let wal = {
        let wals = lock(&group.wals);
        match wals.as_slice() {
            [only] => only.clone(),
            _ => return Ok((0, 0)),
        }
    };
    let state = lock(&wal.state);
    if state.file.is_null() {
        return Ok((0, 0));
    }
    let file = state.file;
    let mut size: i64 = 0;
    // SAFETY: `file` is the default VFS's open WAL file, used under its buffer's lock (see
    // `Pending`); `size` is valid for the call. This thread is not SQLite's: the unix VFS's
    // `xFileSize` is an `fstat` and its `xWrite` a `pwrite` (it is built with `USE_PREAD` on
    // Linux and macOS), neither of which moves a shared file offset, so a read SQLite makes
    // meanwhile on its own thread reads where it asked.
    let rc = unsafe {
        match (*(*file).pMethods).xFileSize {
            Some(file_size) => file_size(file, &mut size),
            None => ffi::SQLITE_IOERR_FSTAT,
        }
    };
    if rc != ffi::SQLITE_OK {
        return Err(format!("the WAL file's size: SQLite error {rc}"));
    }
    let start = u64::try_from(size).map_err(|_| format!("a WAL file of {size} bytes"))?;
    let len = up_to.saturating_sub(start).min(most);
    static ZEROS: [u8; 256 << 10] = [0; 256 << 10];
    let mut written = 0u64;
    while written < len {
        let n = (len - written).min(ZEROS.len() as u64) as usize;
        let offset = i64::try_from(start + written).map_err(|_| "a WAL file past 8 EiB")?;
        // SAFETY: as above.
        let rc = unsafe { write_at(file, &ZEROS[..n], offset) };
        if rc != ffi::SQLITE_OK {
            return Err(format!(
                "zeros at {offset} of the WAL file: SQLite error {rc}"
            ));
        }
        written += n as u64;
    }
    Ok((start, written))
}

/// Writes the dirty pages of `file` between `offset` and `offset + len` to the disk and waits
/// for those writes, as `sync_file_range(2)` with `WAIT_BEFORE | WRITE | WAIT_AFTER` does.
///
/// This is *not* a sync: it neither flushes the disk's write cache nor writes metadata, so it
/// makes nothing durable. It lets a caller send a large file's dirty pages to the disk a slice at
/// a time, so that another file's syncs do not queue behind all of them at once; a sync of the
/// file afterwards is what makes them durable (and then has little left to write). On systems
/// without `sync_file_range` it does nothing and the later sync writes everything.
pub fn write_back(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
        };
        let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER;
        // SAFETY: `sync_file_range` reads no memory of ours; the descriptor is open for as long
        // as `file` is borrowed, and the offsets were checked to fit its `off64_t` arguments.
        let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, flags) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
    Ok(())
}
