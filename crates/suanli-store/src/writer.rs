//! The single writer: one thread owns the write connection and group-commits batches of jobs.
//!
//! Each job runs inside a savepoint of the batch's transaction, so a refused job (insufficient funds,
//! capacity taken) leaves no trace while the others in the batch commit. Nobody hears back before the
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
type Job = Box<dyn FnOnce(&mut Tx<'_>) -> (bool, Deliver) + Send>;

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
                while let Some(first) = receiver.blocking_recv() {
                    jobs.push(first);
                    while jobs.len() < max_batch {
                        match receiver.try_recv() {
                            Ok(job) => jobs.push(job),
                            Err(_) => break,
                        }
                    }
                    run_batch(backend.as_mut(), &mut jobs, &book);
                }
            })
            .expect("spawn the writer thread");
        Writer { sender }
    }

    /// Runs `f` in the next batch and returns its result once the batch is durable.
    /// An `Err` from `f` rolls back everything `f` wrote.
    pub async fn submit<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&mut Tx<'_>) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |t: &mut Tx<'_>| {
            let result = f(t);
            let ok = result.is_ok();
            let deliver: Deliver = Box::new(move |commit: Result<(), StoreError>| {
                let _ = tx.send(commit.and(result));
            });
            (ok, deliver)
        });
        self.sender
            .send(job)
            .await
            .map_err(|_| StoreError::Backend("the writer has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Backend("the writer dropped the request".into()))?
    }
}

fn run_batch(backend: &mut dyn Backend, jobs: &mut Vec<Job>, book: &Arc<RwLock<OfferBook>>) {
    let mut delivers: Vec<Deliver> = Vec::with_capacity(jobs.len());
    let mut dirty = std::collections::BTreeSet::new();
    let mut failure: Option<StoreError> = backend.begin_write().err();
    for job in jobs.drain(..) {
        if failure.is_some() {
            // The transaction is unusable: answer the rest without running them.
            let (_, deliver) = job(&mut Tx::new(&mut NoBackend));
            delivers.push(deliver);
            continue;
        }
        let mut tx = Tx::new(backend);
        if let Err(e) = tx.savepoint("job") {
            failure = Some(e);
            let (_, deliver) = job(&mut Tx::new(&mut NoBackend));
            delivers.push(deliver);
            continue;
        }
        let (ok, deliver) = job(&mut tx);
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
        delivers.push(deliver);
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
    if let Err(e) = &outcome {
        tracing::error!(error = %e, jobs = delivers.len(), "batch not committed; every job in it fails");
    } else if !dirty.is_empty() {
        refresh_book(backend, book, &dirty);
    }
    for deliver in delivers {
        deliver(outcome.clone());
    }
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

/// Stands in for the connection when a batch has already failed, so that the remaining jobs fail
/// without touching the database.
struct NoBackend;

impl Backend for NoBackend {
    fn kind(&self) -> &'static str {
        "none"
    }
    fn execute(&mut self, _: &str, _: &[crate::backend::Value]) -> Result<u64, StoreError> {
        Err(StoreError::Backend("the batch failed".into()))
    }
    fn query(
        &mut self,
        _: &str,
        _: &[crate::backend::Value],
    ) -> Result<Vec<crate::backend::Row>, StoreError> {
        Err(StoreError::Backend("the batch failed".into()))
    }
    fn batch(&mut self, _: &str) -> Result<(), StoreError> {
        Err(StoreError::Backend("the batch failed".into()))
    }
}
