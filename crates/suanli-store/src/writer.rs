//! The single writer: one thread owns the write connection and group-commits batches of jobs.
//!
//! A batch first runs *optimistically*: its jobs one after another in one transaction, without
//! savepoints (a savepoint makes SQLite copy every page a job touches). If every job succeeds the
//! batch commits. If one fails (insufficient funds, capacity taken, a refusal), the whole
//! transaction is rolled back and the batch runs again with each job in a savepoint of its own, so
//! that the refused job leaves no trace while the others commit; jobs are therefore `Fn`, run at
//! most twice, and only the second run counts. After such a batch the next few start with
//! savepoints at once, so a stream of refusals costs no double work. Nobody hears back before the
//! batch's `COMMIT` has returned: a 2xx built from a job's result is durable. A batch holds what
//! queued while the previous commit was running, up to `max_batch`, so under load one fsync serves
//! many requests and with one client it costs nothing extra.

use std::sync::{Arc, RwLock};
use std::thread;

use suanli_core::quote::OfferBook;
use tokio::sync::{mpsc, oneshot};

use crate::backend::{Backend, StoreError};
use crate::ops::Tx;

type Deliver = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// A job: `run` may be called twice (optimistically, then in a savepoint) and keeps its last
/// result for `deliver`, which answers the submitter once the batch's fate is known.
struct Job {
    run: Box<dyn FnMut(&mut Tx<'_>) -> bool + Send>,
    deliver: Deliver,
}

/// Batches run with savepoints at once after a batch had to be run again.
const SAFE_BATCHES_AFTER_A_REFUSAL: u32 = 8;

/// Handle to the writer thread. Cloning shares the one writer.
#[derive(Clone)]
pub struct Writer {
    sender: mpsc::Sender<Job>,
}

/// Writer settings.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Most jobs in one transaction; 1 turns group commit off (one commit per request).
    pub max_batch: usize,
    /// Jobs that may wait for the writer before submitters are made to wait (backpressure).
    pub queue: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            max_batch: 1024,
            queue: 4096,
        }
    }
}

impl Writer {
    /// Starts the writer thread on `backend`. After each committed batch the offers of the pools it
    /// changed are re-read and put into `book`.
    pub fn start(
        mut backend: Box<dyn Backend>,
        book: Arc<RwLock<OfferBook>>,
        config: WriterConfig,
    ) -> Writer {
        let (sender, mut receiver) = mpsc::channel::<Job>(config.queue.max(1));
        let max_batch = config.max_batch.max(1);
        thread::Builder::new()
            .name("suanli-writer".into())
            .spawn(move || {
                let mut jobs: Vec<Job> = Vec::with_capacity(max_batch);
                let mut safe_batches = 0u32;
                while let Some(first) = receiver.blocking_recv() {
                    jobs.push(first);
                    while jobs.len() < max_batch {
                        match receiver.try_recv() {
                            Ok(job) => jobs.push(job),
                            Err(_) => break,
                        }
                    }
                    let optimistic = safe_batches == 0;
                    safe_batches = safe_batches.saturating_sub(1);
                    if !run_batch(backend.as_mut(), &mut jobs, &book, optimistic) {
                        safe_batches = SAFE_BATCHES_AFTER_A_REFUSAL;
                    }
                }
            })
            .expect("spawn the writer thread");
        Writer { sender }
    }

    /// Runs `f` in the next batch and returns its result once the batch is durable.
    /// An `Err` from `f` rolls back everything `f` wrote.
    pub async fn submit<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        F: Fn(&mut Tx<'_>) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let slot: std::sync::Arc<std::sync::Mutex<Option<Result<R, StoreError>>>> =
            Default::default();
        let kept = slot.clone();
        let job = Job {
            run: Box::new(move |t: &mut Tx<'_>| {
                let result = f(t);
                let ok = result.is_ok();
                *kept.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
                ok
            }),
            deliver: Box::new(move |commit: Result<(), StoreError>| {
                let result = slot
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                    .unwrap_or_else(|| Err(StoreError::Backend("the batch failed".into())));
                let _ = tx.send(commit.and(result));
            }),
        };
        self.sender
            .send(job)
            .await
            .map_err(|_| StoreError::Backend("the writer has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Backend("the writer dropped the request".into()))?
    }
}

/// Runs and commits one batch, then answers every job. False when the optimistic run met a
/// failing job and the batch had to run again with savepoints.
fn run_batch(
    backend: &mut dyn Backend,
    jobs: &mut Vec<Job>,
    book: &Arc<RwLock<OfferBook>>,
    optimistic: bool,
) -> bool {
    let mut clean = true;
    let mut result = None;
    if optimistic {
        match run_optimistically(backend, jobs) {
            Some(done) => result = Some(done),
            None => clean = false,
        }
    }
    let (outcome, dirty) = match result {
        Some(done) => done,
        None => run_with_savepoints(backend, jobs),
    };
    if let Err(e) = &outcome {
        tracing::error!(error = %e, jobs = jobs.len(), "batch not committed; every job in it fails");
    } else if !dirty.is_empty() {
        refresh_book(backend, book, &dirty);
    }
    for job in jobs.drain(..) {
        (job.deliver)(outcome.clone());
    }
    clean
}

type BatchResult = (Result<(), StoreError>, std::collections::BTreeSet<String>);

/// Every job in one transaction without savepoints, then `COMMIT`. `None` (everything rolled
/// back) when a job failed or the transaction could not be used: run the batch again with
/// savepoints.
fn run_optimistically(backend: &mut dyn Backend, jobs: &mut [Job]) -> Option<BatchResult> {
    backend.begin_write().ok()?;
    let mut dirty = std::collections::BTreeSet::new();
    for job in jobs.iter_mut() {
        let mut tx = Tx::new(backend);
        tx.optimistic = true;
        let ok = (job.run)(&mut tx);
        dirty.append(&mut tx.dirty_pools);
        if !ok {
            let _ = backend.batch("ROLLBACK");
            return None;
        }
    }
    match backend.batch("COMMIT") {
        Ok(()) => Some((Ok(()), dirty)),
        Err(e) => {
            let _ = backend.batch("ROLLBACK");
            Some((Err(e), std::collections::BTreeSet::new()))
        }
    }
}

/// Each job in a savepoint of one transaction: a failing job leaves no trace, the others commit.
fn run_with_savepoints(backend: &mut dyn Backend, jobs: &mut [Job]) -> BatchResult {
    let mut dirty = std::collections::BTreeSet::new();
    let mut failure: Option<StoreError> = backend.begin_write().err();
    for job in jobs.iter_mut() {
        if failure.is_some() {
            // The transaction is unusable: the rest are answered without running.
            break;
        }
        let mut tx = Tx::new(backend);
        if let Err(e) = tx.savepoint("job") {
            failure = Some(e);
            break;
        }
        let ok = (job.run)(&mut tx);
        let pools = std::mem::take(&mut tx.dirty_pools);
        let end = if ok {
            tx.release("job")
        } else {
            tx.rollback_to("job").and_then(|()| tx.release("job"))
        };
        if let Err(e) = end {
            failure = Some(e);
        } else if ok {
            dirty.extend(pools);
        }
    }
    let outcome = match failure {
        Some(e) => {
            let _ = backend.batch("ROLLBACK");
            Err(e)
        }
        None => backend.batch("COMMIT").inspect_err(|_| {
            let _ = backend.batch("ROLLBACK");
        }),
    };
    let dirty = if outcome.is_ok() {
        dirty
    } else {
        Default::default()
    };
    (outcome, dirty)
}

/// Re-reads the offers of `pools` (their availability changed) into the book.
pub fn refresh_book(
    backend: &mut dyn Backend,
    book: &Arc<RwLock<OfferBook>>,
    pools: &std::collections::BTreeSet<String>,
) {
    match Tx::new(backend).offers_of_pools(Some(pools)) {
        Ok(offers) => {
            let mut book = book.write().unwrap_or_else(|p| p.into_inner());
            for o in offers {
                if o.state == "active" {
                    book.upsert(o.view());
                } else {
                    book.remove(&o.id);
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "could not refresh the offer book"),
    }
}
