//! The writer's tests: batches, refusals, broken transactions, the syncer.
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::*;
use crate::database::{Row, Value};

/// A connection whose commits are durable only once their sync has run (slowly).
struct SlowSync {
    synced: Arc<AtomicUsize>,
}

impl Database for SlowSync {
    fn kind(&self) -> &'static str {
        "test"
    }
    fn execute(&mut self, _: &str, _: &[Value]) -> Result<u64, StoreError> {
        Ok(1)
    }
    fn query(&mut self, _: &str, _: &[Value]) -> Result<Vec<Row>, StoreError> {
        Ok(Vec::new())
    }
    fn batch(&mut self, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
    fn commit(&mut self) -> Result<Option<SyncFn>, StoreError> {
        let synced = self.synced.clone();
        Ok(Some(Box::new(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            synced.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })))
    }
}

/// A store on SQLite in a temp dir, or on a fresh database of the PostgreSQL that
/// `SUANLI_TEST_DATABASE_URL` names.
fn real_store() -> crate::Store {
    let location = match std::env::var("SUANLI_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        Some(url) => {
            let name = crate::ops::new_id("w").replace('_', "");
            let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            admin
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .unwrap();
            let base = url.rsplit_once('/').map(|(b, _)| b).unwrap_or(&url);
            crate::Location::Postgres(format!("{base}/{name}"))
        }
        None => {
            let dir = std::env::temp_dir().join(crate::ops::new_id("suanli-writer-test"));
            std::fs::create_dir_all(&dir).unwrap();
            crate::Location::Sqlite(dir.join("t.db").to_string_lossy().into_owned())
        }
    };
    crate::Store::open(location, WriterConfig::default()).unwrap()
}

fn org(name: &str) -> crate::ops::OrgRow {
    crate::ops::OrgRow {
        id: crate::ops::new_id("org"),
        name: name.into(),
        kind: suanli_core::decide::OrgKind::Consumer,
        consumer_type: Some("enterprise".into()),
        zone: "wuqing-core".into(),
        origin_region: "tianjin".into(),
        created_ms: 0,
        name_unique: true,
    }
}

/// Regression test for issue 16: on PostgreSQL one request with an id the database could
/// not store failed its whole batch, and with it other tenants' purchases. A request whose
/// statement breaks the transaction (PostgreSQL refuses everything after an error; SQLite
/// rolls the transaction back on some errors, and later statements would commit one by one)
/// must fail alone, even when it ignores the error; so must a request that declares an account
/// id the database refuses. The others of its batch commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_that_breaks_the_transaction_fails_alone_and_the_batch_commits() {
    let store = Arc::new(tokio::task::block_in_place(real_store));
    let writer = store.writer().clone();
    let existing = org("existing org");
    let kept = existing.clone();
    writer
        .submit(move |tx| tx.create_org(&kept, "admin", None).map(|_| ()))
        .await
        .unwrap();
    // Hold the writer in one request while the others queue up behind it: they form one batch.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let released = std::sync::Mutex::new(released);
    let holding = Arc::new(AtomicBool::new(false));
    let held = holding.clone();
    let blocker = tokio::spawn({
        let writer = writer.clone();
        async move {
            writer
                .submit(move |_| {
                    held.store(true, Ordering::SeqCst);
                    let _ = released
                        .lock()
                        .unwrap()
                        .recv_timeout(std::time::Duration::from_secs(20));
                    Ok(())
                })
                .await
        }
    });
    while !holding.load(Ordering::SeqCst) {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let mut good = Vec::new();
    let mut spawn_good = |name: String, declared: Vec<String>| {
        let writer = writer.clone();
        let row = org(&name);
        good.push((
            row.id.clone(),
            tokio::spawn(async move {
                writer
                    .submit_with_accounts(declared, move |tx| {
                        tx.create_org(&row, "admin", None)?;
                        Ok(tx.batch_number())
                    })
                    .await
            }),
        ));
    };
    let pause = || tokio::time::sleep(std::time::Duration::from_millis(20));
    spawn_good("good 0".into(), Vec::new());
    pause().await;
    spawn_good("good 1".into(), Vec::new());
    pause().await;
    // The bad request: it writes, then makes the database raise an error that breaks the
    // transaction, ignores it, and returns as if all went well.
    let bad_org = org("bad");
    let bad_id = bad_org.id.clone();
    let bad = tokio::spawn({
        let writer = writer.clone();
        let existing_id = existing.id.clone();
        async move {
            writer
                .submit(move |tx| {
                    tx.create_org(&bad_org, "admin", None)?;
                    let number = tx.batch_number();
                    let breaking = if tx.database_kind() == "sqlite" {
                        // A constraint failure under OR ROLLBACK ends SQLite's transaction.
                        format!(
                            "INSERT OR ROLLBACK INTO orgs (id, name, kind, zone, origin_region, \
                             created_ms) VALUES ('{existing_id}', 'x', 'consumer', 'z', 'r', 0)"
                        )
                    } else {
                        "SELECT 1 / 0".to_owned()
                    };
                    let _ignored = tx.b.execute(&breaking, &[]);
                    Ok(number)
                })
                .await
        }
    });
    pause().await;
    spawn_good("good 2".into(), Vec::new());
    pause().await;
    // Declares an account id PostgreSQL cannot store (NUL); declaring is only a speed-up.
    spawn_good("good 3".into(), vec!["org_x\u{0}.available".into()]);
    pause().await;
    spawn_good("good 4".into(), Vec::new());
    pause().await;
    release.send(()).unwrap();
    blocker.await.unwrap().unwrap();
    let bad = bad.await.unwrap();
    assert!(
        bad.is_err(),
        "the request that broke the transaction failed: {bad:?}"
    );
    let mut batches = Vec::new();
    for (id, handle) in good {
        let number = handle
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("a good request of the batch failed: {e}"));
        batches.push(number.expect("ran in the writer"));
        let found = tokio::task::block_in_place(|| store.read(|tx| tx.get_org(&id)));
        assert!(found.is_ok(), "org {id} was committed");
    }
    // All the good requests ran in one batch, the one the bad request was in.
    assert!(batches.len() >= 2);
    assert!(batches.iter().all(|b| *b == batches[0]), "{batches:?}");
    let lost = tokio::task::block_in_place(|| store.read(|tx| tx.get_org(&bad_id)));
    assert!(
        matches!(lost, Err(StoreError::NotFound(_))),
        "nothing of the bad request was kept: {lost:?}"
    );
    // The writer goes on.
    let after = org("after");
    writer
        .submit(move |tx| tx.create_org(&after, "admin", None).map(|_| ()))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_hears_back_before_their_batch_is_synced() {
    let synced = Arc::new(AtomicUsize::new(0));
    let writer = Writer::start(
        Box::new(SlowSync {
            synced: synced.clone(),
        }),
        Arc::new(RwLock::new(OfferBook::new())),
        WriterConfig::default(),
    );
    let ran = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for i in 0..20u32 {
        let (writer, synced, ran) = (writer.clone(), synced.clone(), ran.clone());
        let in_job = synced.clone();
        handles.push(tokio::spawn(async move {
            let seen_at_run = writer
                .submit(move |_| {
                    ran.store(true, Ordering::SeqCst);
                    Ok(in_job.load(Ordering::SeqCst))
                })
                .await
                .unwrap();
            // Answered only after a sync that started after this request's batch committed.
            assert!(
                synced.load(Ordering::SeqCst) > seen_at_run,
                "request {i} answered before its batch was synced"
            );
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    assert!(ran.load(Ordering::SeqCst));
}
