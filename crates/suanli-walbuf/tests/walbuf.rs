//! The shim against real SQLite files: what other connections read, what the WAL file holds
//! on disk, and a writer that spills and rolls back.

use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "suanli-walbuf-{name}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn open_shim(path: &Path) -> Connection {
    let vfs = suanli_walbuf::register().unwrap();
    let conn = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), vfs).unwrap();
    conn.execute_batch(
        "PRAGMA page_size=1024; PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; \
         PRAGMA wal_autocheckpoint=0; PRAGMA busy_timeout=5000;",
    )
    .unwrap();
    conn
}

fn open_plain(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA busy_timeout=5000;").unwrap();
    conn
}

/// A fresh database in a directory of its own, opened through the shim, with the table `t`.
fn new_database(name: &str) -> (PathBuf, PathBuf, Connection) {
    let dir = scratch(name);
    let path = dir.join("db.sqlite");
    let conn = open_shim(&path);
    conn.execute_batch(
        "CREATE TABLE t (k INTEGER NOT NULL, v INTEGER NOT NULL); CREATE INDEX t_k ON t (k);",
    )
    .unwrap();
    (dir, path, conn)
}

fn integrity(conn: &Connection) -> String {
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

fn count_and_sum(conn: &Connection) -> (i64, i64) {
    conn.query_row("SELECT count(*), coalesce(sum(v), 0) FROM t", [], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .unwrap()
}

/// Writes `rows` rows in one transaction: random-ish keys spread over many index leaves.
fn commit_rows(conn: &mut Connection, first: i64, rows: i64) {
    let tx = conn.transaction().unwrap();
    for i in first..first + rows {
        tx.execute(
            "INSERT INTO t (k, v) VALUES (?1, ?2)",
            ((i * 7_919) % 1_000_003, i),
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

#[test]
fn every_commit_is_in_the_file_when_other_connections_see_it() {
    let (_, path, mut writer) = new_database("visible");
    // Readers through the default VFS read the WAL through their own file descriptors: they
    // can only see what reached the file. One checks after each commit; one reads all the time,
    // so that some of its reads start while a commit is being published.
    let reader = open_plain(&path);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (done, path) = (done.clone(), path.clone());
        std::thread::spawn(move || {
            let conn = open_plain(&path);
            let mut reads = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let (rows, sum) = conn
                    .query_row(
                        "SELECT count(*), coalesce(sum(v), 0), max(k) FROM t",
                        [],
                        |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
                    )
                    .expect("a read while commits are published");
                // Rows 0..rows were committed in order: any state a reader can see sums so.
                assert_eq!(sum, rows * (rows - 1) / 2, "{rows} rows");
                reads += 1;
            }
            reads
        })
    };
    let before = suanli_walbuf::stats();
    let (mut rows, mut sum) = (0i64, 0i64);
    for batch in 0..1_500 {
        let n = 1 + batch % 40;
        commit_rows(&mut writer, rows, n);
        sum += (rows..rows + n).sum::<i64>();
        rows += n;
        assert_eq!(count_and_sum(&reader), (rows, sum), "after batch {batch}");
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(watcher.join().unwrap() > 0);
    let after = suanli_walbuf::stats();
    let (asked, made) = (
        after.wal_writes - before.wal_writes,
        after.file_writes - before.file_writes,
    );
    // Two writes per frame were asked for; about one per commit was made. Other tests in this
    // process may add to both counters, never enough to close a gap this wide.
    assert!(asked > 800, "{asked} WAL writes asked for");
    assert!(made * 4 < asked, "{made} file writes for {asked} asked");
    assert_eq!(integrity(&reader), "ok");
}

#[test]
fn the_wal_on_disk_recovers_to_every_commit() {
    let (dir, path, mut writer) = new_database("recover");
    let (mut rows, mut sum) = (0i64, 0i64);
    for n in 1..60 {
        commit_rows(&mut writer, rows, n);
        sum += (rows..rows + n).sum::<i64>();
        rows += n;
    }
    // Copy the files while the writer keeps them open (no checkpoint has run: the database file
    // is nearly empty and everything is in the WAL). A fresh connection on the copy must
    // rebuild the wal-index from the WAL file alone, as after a crash.
    let copy = scratch("recover-copy");
    std::fs::copy(&path, copy.join("db.sqlite")).unwrap();
    std::fs::copy(dir.join("db.sqlite-wal"), copy.join("db.sqlite-wal")).unwrap();
    let recovered = open_plain(&copy.join("db.sqlite"));
    assert_eq!(count_and_sum(&recovered), (rows, sum));
    assert_eq!(integrity(&recovered), "ok");
}

#[test]
fn a_rolled_back_spill_leaves_nothing_for_a_later_writer_to_lose() {
    let (_, path, mut first) = new_database("spill");
    commit_rows(&mut first, 0, 100);
    // A tiny page cache makes a large transaction write (spill) uncommitted frames to the WAL
    // before it ends; this one then rolls back. Appending to a table of its own, it never reads
    // the spilled pages back, so the last spill is still in the shim's buffer at the rollback.
    first
        .execute_batch(
            "CREATE TABLE big (b BLOB NOT NULL); PRAGMA wal_checkpoint(TRUNCATE); \
             PRAGMA cache_size=10;",
        )
        .unwrap();
    {
        let tx = first.transaction().unwrap();
        for _ in 0..400 {
            tx.execute("INSERT INTO big (b) VALUES (zeroblob(500))", [])
                .unwrap();
        }
        tx.rollback().unwrap();
    }
    // A second connection of this process, through the shim too, commits more than the first
    // had spilled over the same part of the WAL; then the first commits again. Had the first
    // kept its last spilled frames (the shim writes them out when the first releases its
    // wal-index locks, or at the second's first wal-index barrier), it would write them over
    // the second's commit now.
    let mut second = open_shim(&path);
    second
        .execute_batch(
            "BEGIN; INSERT INTO big (b) SELECT zeroblob(3000) FROM t, t AS u LIMIT 400; \
             DELETE FROM big WHERE rowid > 300; COMMIT;",
        )
        .unwrap();
    commit_rows(&mut second, 100, 300);
    commit_rows(&mut first, 400, 50);
    drop(second);
    drop(first);
    let check = open_plain(&path);
    assert_eq!(count_and_sum(&check), (450, (0..450).sum::<i64>()));
    let big: i64 = check
        .query_row("SELECT count(*) FROM big WHERE length(b) = 3000", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(big, 300);
    assert_eq!(integrity(&check), "ok");
}

/// Paced write-back leaves a file's bytes as they were, covers ranges past its end, and refuses
/// offsets the system call cannot take.
#[test]
fn write_back_keeps_the_bytes_and_refuses_offsets_out_of_range() {
    use std::io::Write;
    let dir = scratch("write-back");
    let path = dir.join("f");
    let mut file = std::fs::File::create(&path).unwrap();
    let bytes: Vec<u8> = (0..3 * 4096 + 17).map(|i| (i % 251) as u8).collect();
    file.write_all(&bytes).unwrap();
    for offset in (0..16 * 1024).step_by(4096) {
        suanli_walbuf::write_back(&file, offset, 4096).unwrap();
    }
    file.sync_data().unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    if cfg!(target_os = "linux") {
        let e = suanli_walbuf::write_back(&file, u64::MAX, 4096).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn zeros_are_appended_only_past_the_frames_and_commits_land_over_them() {
    let (dir, path, mut writer) = new_database("zeros");
    let wal_path = format!("{}-wal", writer.path().unwrap());
    let wal_file = dir.join("db.sqlite-wal");
    let (mut rows, mut sum) = (0i64, 0i64);
    for n in 1..30 {
        commit_rows(&mut writer, rows, n);
        sum += (rows..rows + n).sum::<i64>();
        rows += n;
    }
    assert_eq!(
        suanli_walbuf::append_zeros(&format!("{wal_path}.other"), 1 << 30, 1 << 20),
        Ok((0, 0)),
        "a file nobody has open through the shim is left alone"
    );
    let frames = std::fs::read(&wal_file).unwrap();
    let end = frames.len() as u64;
    let up_to = end + (3 << 19);
    assert_eq!(
        suanli_walbuf::append_zeros(&wal_path, up_to, 1 << 20),
        Ok((end, 1 << 20))
    );
    assert_eq!(
        suanli_walbuf::append_zeros(&wal_path, up_to, 1 << 20),
        Ok((end + (1 << 20), 1 << 19)),
        "stops at up_to"
    );
    assert_eq!(
        suanli_walbuf::append_zeros(&wal_path, up_to, 1 << 20),
        Ok((up_to, 0))
    );
    let filled = std::fs::read(&wal_file).unwrap();
    assert_eq!(filled.len() as u64, up_to);
    assert_eq!(
        &filled[..frames.len()],
        &frames[..],
        "the frames are untouched"
    );
    assert!(filled[frames.len()..].iter().all(|&b| b == 0));
    // With a second connection through the shim, the first one's lock would not cover its writes.
    let second = open_shim(&path);
    assert_eq!(count_and_sum(&second), (rows, sum));
    assert_eq!(
        suanli_walbuf::append_zeros(&wal_path, up_to + 4096, 4096),
        Ok((0, 0))
    );
    drop(second);
    // Commits over the zeros; a crash then recovers every one of them and nothing else.
    for n in 1..30 {
        commit_rows(&mut writer, rows, n);
        sum += (rows..rows + n).sum::<i64>();
        rows += n;
    }
    assert_eq!(
        std::fs::metadata(&wal_file).unwrap().len(),
        up_to,
        "written over the zeros"
    );
    let copy = scratch("zeros-copy");
    std::fs::copy(&path, copy.join("db.sqlite")).unwrap();
    std::fs::copy(&wal_file, copy.join("db.sqlite-wal")).unwrap();
    let recovered = open_plain(&copy.join("db.sqlite"));
    assert_eq!(count_and_sum(&recovered), (rows, sum));
    assert_eq!(integrity(&recovered), "ok");
}
