//! The single writer: one thread owns the write connection and group-commits batches of requests.
//!
//! A batch first runs *optimistically*: its requests one after another in one transaction, without
//! savepoints (a savepoint makes SQLite copy every page a request touches). If every request succeeds the
//! batch commits. If one fails (insufficient funds, capacity taken, a refusal), the whole
//! transaction is rolled back and the batch runs again with each request in a savepoint of its own, so
//! that the refused request leaves no trace while the others commit; requests are therefore `Fn`, run at
//! most twice, and only the second run counts. After such a batch the next few start with
//! savepoints at once, so a stream of refusals costs no double work. Nobody hears back before the
//! batch is durable: a 2xx built from a request's result is durable. A batch holds what queued while
//! the previous one ran, up to `max_batch`, so under load one fsync serves many requests and with
//! one client it costs nothing extra.
//!
//! A request whose statement breaks the transaction itself (a database error PostgreSQL will not go
//! past, or one after which SQLite has rolled the transaction back; see
//! [`Database::transaction_broken`], asked after every request) fails alone: its savepoint is rolled
//! back, or, when that cannot be done, the whole transaction is, and the batch runs again
//! without it. One bad request never fails the others of its batch.
//!
//! When the database's `COMMIT` leaves the sync to be done (SQLite, see [`Database::commit`]), a
//! second thread, the syncer, runs it while the writer executes the next batch, and answers the
//! batch's requests once it returned: the disk's latency is taken off the writer's path. Batches
//! are synced in commit order (one sync covers every batch committed before it). A failed sync
//! fails the requests of the batches it covered; SQLite's stops the process first (what the disk
//! holds is then unknown, and a restart recovers it).

use std::sync::{Arc, RwLock};
use std::thread;

use suanli_core::quote::OfferBook;
use tokio::sync::{mpsc, oneshot};

use crate::database::{Database, StoreError, SyncFn};
use crate::ops::{BatchMemory, Tx};

/// A request of a batch: `run` may be called twice (optimistically, then in a savepoint) and keeps
/// its last result; `deliver` answers the submitter with it once the batch's fate is known.
trait BatchRequest: Send {
    /// Runs the request; false when it failed (its effects must be undone).
    fn run(&mut self, tx: &mut Tx<'_>) -> bool;
    fn deliver(self: Box<Self>, commit: Result<(), StoreError>);
    /// Replaces the request's result with `error`: its effects were undone although it returned.
    fn fail(&mut self, error: StoreError);
    /// The request's error, when its last run failed.
    fn error(&self) -> Option<StoreError>;
    /// The ledger accounts the request declared it moves money on (see
    /// [`Writer::submit_with_accounts`]).
    fn accounts(&self) -> &[String];
}

type Request = Box<dyn BatchRequest>;

/// A submitted closure, its last result and who waits for it.
struct Submitted<F, R> {
    f: F,
    result: Option<Result<R, StoreError>>,
    reply: oneshot::Sender<Result<R, StoreError>>,
    accounts: Vec<String>,
}

impl<F, R> BatchRequest for Submitted<F, R>
where
    F: Fn(&mut Tx<'_>) -> Result<R, StoreError> + Send,
    R: Send,
{
    fn run(&mut self, tx: &mut Tx<'_>) -> bool {
        let result = (self.f)(tx);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn accounts(&self) -> &[String] {
        &self.accounts
    }

    fn fail(&mut self, error: StoreError) {
        self.result = Some(Err(error));
    }

    fn error(&self) -> Option<StoreError> {
        match &self.result {
            Some(Err(e)) => Some(e.clone()),
            _ => None,
        }
    }

    fn deliver(self: Box<Self>, commit: Result<(), StoreError>) {
        let result = self
            .result
            .unwrap_or_else(|| Err(StoreError::Database("the batch failed".into())));
        let _ = self.reply.send(commit.and(result));
    }
}

/// Batches run with savepoints at once after a batch had to be run again.
const SAFE_BATCHES_AFTER_A_REFUSAL: u32 = 8;

/// Handle to the writer thread. Cloning shares the one writer.
#[derive(Clone)]
pub struct Writer {
    sender: mpsc::Sender<Request>,
}

/// Writer settings.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Most requests in one transaction; 1 turns group commit off (one commit and one sync per
    /// request, each sync run before the next request: the naive baseline of the benchmarks).
    pub max_batch: usize,
    /// Requests that may wait for the writer before submitters are made to wait (backpressure).
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
    /// Starts the writer thread on `database`. After each committed batch the offers of the pools it
    /// changed are re-read and put into `book`.
    pub fn start(
        mut database: Box<dyn Database>,
        book: Arc<RwLock<OfferBook>>,
        config: WriterConfig,
    ) -> Writer {
        let (sender, mut receiver) = mpsc::channel::<Request>(config.queue.max(1));
        let max_batch = config.max_batch.max(1);
        // Batches committed and waiting for their sync; bounded, so the writer cannot run far
        // ahead of the disk.
        let (to_syncer, syncing) = std::sync::mpsc::sync_channel::<Synced>(4);
        thread::Builder::new()
            .name("suanli-sync".into())
            .spawn(move || sync_loop(syncing))
            .expect("spawn the syncer thread");
        thread::Builder::new()
            .name("suanli-writer".into())
            .spawn(move || {
                let mut requests: Vec<Request> = Vec::with_capacity(max_batch);
                let mut memory = BatchMemory::default();
                let mut safe_batches = 0u32;
                while let Some(first) = receiver.blocking_recv() {
                    requests.push(first);
                    while requests.len() < max_batch {
                        match receiver.try_recv() {
                            Ok(request) => requests.push(request),
                            Err(_) => break,
                        }
                    }
                    memory.batch_number += 1;
                    let optimistic = safe_batches == 0;
                    safe_batches = safe_batches.saturating_sub(1);
                    let syncer = (max_batch > 1).then_some(&to_syncer);
                    let batch = Batch {
                        database: database.as_mut(),
                        memory: &mut memory,
                        declared: declared_accounts(&requests),
                    };
                    if !run_batch(batch, &mut requests, &book, optimistic, syncer) {
                        safe_batches = SAFE_BATCHES_AFTER_A_REFUSAL;
                    }
                    database.after_batch();
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
        self.submit_with_accounts(Vec::new(), f).await
    }

    /// [`Writer::submit`] for a request that moves money on `accounts` (ids of ledger accounts).
    ///
    /// Before a batch's requests run, the writer reads every account its requests declared in one
    /// statement (on PostgreSQL locking them, in id order, and taking the batch's ledger
    /// positions after the locks; see [`crate::batch_ledger`]), instead of one statement (one
    /// round trip on PostgreSQL) for each request's first transfer. Declaring changes nothing but
    /// the speed: a request may move money on accounts it did not declare (they are read when first
    /// used), and a declared account it does not touch is only read (and on PostgreSQL locked
    /// until the batch ends); an unknown id is ignored.
    pub async fn submit_with_accounts<R, F>(
        &self,
        accounts: Vec<String>,
        f: F,
    ) -> Result<R, StoreError>
    where
        F: Fn(&mut Tx<'_>) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let rx = self.enqueue(accounts, f).await?;
        rx.await.map_err(|_| dropped())?
    }

    /// Queues one request; its answer comes on the receiver once its batch is durable.
    async fn enqueue<R, F>(
        &self,
        accounts: Vec<String>,
        f: F,
    ) -> Result<oneshot::Receiver<Result<R, StoreError>>, StoreError>
    where
        F: Fn(&mut Tx<'_>) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let request: Request = Box::new(Submitted {
            f,
            result: None,
            reply,
            accounts,
        });
        self.sender
            .send(request)
            .await
            .map_err(|_| StoreError::Database("the writer has stopped".into()))?;
        Ok(rx)
    }

    /// Queues every request of `requests`, in order, calls `queued` once they all are, then
    /// returns their results, each once its batch is durable. Requests queued while the writer is busy run as one
    /// batch (up to `max_batch`): the market simulation holds the writer with a request of its own,
    /// queues a seeded batch behind it and lets it go in `queued`.
    pub async fn submit_all<R, F>(
        &self,
        requests: Vec<F>,
        queued: impl FnOnce(),
    ) -> Vec<Result<R, StoreError>>
    where
        F: Fn(&mut Tx<'_>) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let mut replies = Vec::with_capacity(requests.len());
        for f in requests {
            replies.push(self.enqueue(Vec::new(), f).await);
        }
        queued();
        let mut results = Vec::with_capacity(replies.len());
        for reply in replies {
            results.push(match reply {
                Ok(rx) => rx.await.unwrap_or_else(|_| Err(dropped())),
                Err(e) => Err(e),
            });
        }
        results
    }
}

fn dropped() -> StoreError {
    StoreError::Database("the writer dropped the request".into())
}

/// Every account the requests declared, once each.
fn declared_accounts(requests: &[Request]) -> Vec<String> {
    let mut declared: Vec<String> = requests
        .iter()
        .flat_map(|j| j.accounts())
        .cloned()
        .collect();
    declared.sort_unstable();
    declared.dedup();
    declared
}

/// Runs and commits one batch, then answers every request. False when the optimistic run met a
/// failing request and the batch had to run again with savepoints.
fn run_batch(
    mut batch: Batch<'_>,
    requests: &mut Vec<Request>,
    book: &Arc<RwLock<OfferBook>>,
    optimistic: bool,
    syncer: Option<&std::sync::mpsc::SyncSender<Synced>>,
) -> bool {
    let mut clean = true;
    let mut result = None;
    if optimistic {
        match run_optimistically(&mut batch, requests) {
            Some(done) => result = Some(done),
            None => clean = false,
        }
    }
    let (outcome, dirty) = match result {
        Some(done) => done,
        None => loop {
            match run_with_savepoints(&mut batch, requests) {
                Savepointed::Done(done) => break done,
                // The request broke the transaction: it fails alone, the rest run again without it.
                Savepointed::Culprit(i) => {
                    let mut culprit = requests.remove(i);
                    let error = culprit.error().unwrap_or_else(broken);
                    tracing::warn!(error = %error, "a request broke its batch's transaction; the batch runs again without it");
                    culprit.fail(error.clone());
                    culprit.deliver(Err(error));
                    batch.declared = declared_accounts(requests);
                }
            }
        },
    };
    if let Err(e) = &outcome {
        tracing::error!(error = %e, requests = requests.len(), "batch not committed; every request in it fails");
    } else if !dirty.is_empty() {
        // After the commit the batch's kept free capacity is the database's (see
        // `crate::batch_nodes`): the book's availability is computed from it.
        refresh_book(batch.database, batch.memory, book, &dirty);
    }
    let done: Vec<Request> = std::mem::take(requests);
    match outcome {
        Ok(Some(sync)) => {
            let batch = Synced {
                sync,
                requests: done,
            };
            // Without a syncer (group commit off), or should it be gone: sync here, now.
            let unsent = match syncer {
                Some(s) => s.send(batch).err().map(|e| e.0),
                None => Some(batch),
            };
            if let Some(batch) = unsent {
                sync_and_answer(vec![batch]);
            }
        }
        Ok(None) => done.into_iter().for_each(|j| j.deliver(Ok(()))),
        Err(e) => done.into_iter().for_each(|j| j.deliver(Err(e.clone()))),
    }
    clean
}

/// The error of a request that returned although a statement of it broke the transaction.
fn broken() -> StoreError {
    StoreError::Database(
        "a statement of this request failed in the database; nothing of it was kept".into(),
    )
}

/// A committed batch waiting for its sync, and who to answer then.
struct Synced {
    sync: SyncFn,
    requests: Vec<Request>,
}

/// Runs the syncs of committed batches in order and answers their requests. Batches that queued
/// meanwhile share one sync: it covers everything committed before it started.
fn sync_loop(batches: std::sync::mpsc::Receiver<Synced>) {
    while let Ok(first) = batches.recv() {
        let mut waiting = vec![first];
        while let Ok(more) = batches.try_recv() {
            waiting.push(more);
        }
        sync_and_answer(waiting);
    }
}

/// Runs the last batch's sync (it covers the earlier ones) and answers every batch.
fn sync_and_answer(mut waiting: Vec<Synced>) {
    let Some(Synced { sync, requests }) = waiting.pop() else {
        return;
    };
    let outcome = sync();
    if let Err(e) = &outcome {
        // Committed, but not known to be durable: nobody may be told it succeeded.
        tracing::error!(error = %e, "a commit could not be made durable; its requests fail");
    }
    for batch in waiting {
        batch
            .requests
            .into_iter()
            .for_each(|j| j.deliver(outcome.clone()));
    }
    requests
        .into_iter()
        .for_each(|j| j.deliver(outcome.clone()));
}

type BatchResult = (
    Result<Option<SyncFn>, StoreError>,
    std::collections::BTreeSet<String>,
);

/// The writer's connection, what its open transaction keeps in memory, and the accounts the
/// batch's requests declared.
struct Batch<'a> {
    database: &'a mut dyn Database,
    memory: &'a mut BatchMemory,
    declared: Vec<String>,
}

impl Batch<'_> {
    /// Begins the transaction and reads the declared accounts (see
    /// [`Writer::submit_with_accounts`]). Declaring is only a speed-up: should the read fail (an
    /// id the database refuses), the transaction begins again without it.
    fn begin(&mut self) -> Result<(), StoreError> {
        self.begin_transaction()?;
        if self.declared.is_empty() {
            return Ok(());
        }
        let read = Tx::in_batch(self.database, self.memory).read_accounts(&self.declared);
        if let Err(e) = read {
            tracing::warn!(error = %e, "reading the batch's declared accounts failed; running it without");
            self.rollback();
            self.declared.clear();
            self.begin_transaction()?;
        }
        Ok(())
    }

    fn begin_transaction(&mut self) -> Result<(), StoreError> {
        if let Err(e) = self.database.begin_write() {
            self.memory.clear();
            return Err(e);
        }
        match self.database.changed_by_others() {
            Ok(changed) => {
                self.memory.begin(changed);
                Ok(())
            }
            Err(e) => {
                self.rollback();
                Err(e)
            }
        }
    }

    fn tx(&mut self) -> Tx<'_> {
        Tx::in_batch(self.database, self.memory)
    }

    /// Writes the buffered ledger rows, then commits; rolls back on failure.
    fn commit(&mut self) -> Result<Option<SyncFn>, StoreError> {
        let outcome = self
            .tx()
            .flush_ledger()
            .and_then(|()| self.database.commit());
        match outcome {
            Ok(_) => self.memory.committed(),
            Err(_) => self.rollback(),
        }
        outcome
    }

    fn rollback(&mut self) {
        self.memory.clear();
        let _ = self.database.batch("ROLLBACK");
    }
}

/// Every request in one transaction without savepoints, then `COMMIT`. `None` (everything rolled
/// back) when a request failed, broke the transaction, or the transaction could not be used: run the
/// batch again with savepoints.
fn run_optimistically(batch: &mut Batch<'_>, requests: &mut [Request]) -> Option<BatchResult> {
    batch.begin().ok()?;
    let mut dirty = std::collections::BTreeSet::new();
    for request in requests.iter_mut() {
        let mut tx = batch.tx();
        tx.optimistic = true;
        let ok = request.run(&mut tx);
        dirty.append(&mut tx.dirty_pools);
        if !ok || batch.database.transaction_broken() {
            batch.rollback();
            return None;
        }
    }
    match batch.commit() {
        Ok(sync) => Some((Ok(sync), dirty)),
        Err(e) => Some((Err(e), std::collections::BTreeSet::new())),
    }
}

/// How a run with savepoints ended.
enum Savepointed {
    /// Committed (or failed as a whole, for a reason no one request caused).
    Done(BatchResult),
    /// The request at this index broke the transaction beyond its savepoint; everything was rolled
    /// back.
    Culprit(usize),
}

/// Each request in a savepoint of one transaction: a failing request leaves no trace, the others commit.
fn run_with_savepoints(batch: &mut Batch<'_>, requests: &mut [Request]) -> Savepointed {
    let mut dirty = std::collections::BTreeSet::new();
    let mut failure: Option<StoreError> = batch.begin().err();
    for (i, request) in requests.iter_mut().enumerate() {
        if failure.is_some() {
            // The transaction is unusable: the rest are answered without running.
            break;
        }
        let mut tx = batch.tx();
        if let Err(e) = tx.savepoint("request") {
            failure = Some(e);
            break;
        }
        let ran_ok = request.run(&mut tx);
        let pools = std::mem::take(&mut tx.dirty_pools);
        // A request that returned although one of its statements broke the transaction failed.
        let ok = ran_ok && !batch.database.transaction_broken();
        // Whether the request's work is kept; an `Err` when the transaction is beyond repair.
        let end = if ok {
            match batch.tx().release("request") {
                Ok(()) if !batch.database.transaction_broken() => Ok(true),
                Ok(()) => Err(broken()),
                // Its savepoint could not be kept (the ledger rows it buffered could not be
                // written): undo the request, if the transaction still can be.
                Err(e) => undo_job(batch).map(|()| {
                    request.fail(e);
                    false
                }),
            }
        } else {
            undo_job(batch).map(|()| {
                if ran_ok {
                    request.fail(broken());
                }
                false
            })
        };
        match end {
            Ok(true) => dirty.extend(pools),
            Ok(false) => {}
            Err(_) => {
                // Nothing of the transaction can be trusted: roll it all back and let the batch
                // run again without this request.
                batch.rollback();
                return Savepointed::Culprit(i);
            }
        }
    }
    let outcome = match failure {
        Some(e) => {
            batch.rollback();
            Err(e)
        }
        None => batch.commit(),
    };
    let dirty = if outcome.is_ok() {
        dirty
    } else {
        Default::default()
    };
    Savepointed::Done((outcome, dirty))
}

/// Rolls back to the request's savepoint and releases it; an `Err` when the transaction is still
/// (or now) unusable.
fn undo_job(batch: &mut Batch<'_>) -> Result<(), StoreError> {
    let mut tx = batch.tx();
    tx.rollback_to("request")
        .and_then(|()| tx.release("request"))?;
    if batch.database.transaction_broken() {
        return Err(broken());
    }
    Ok(())
}

/// Re-reads the offers of `pools` (their availability changed) into the book, with `memory`, the
/// memory of the transaction that just committed.
fn refresh_book(
    database: &mut dyn Database,
    memory: &mut BatchMemory,
    book: &Arc<RwLock<OfferBook>>,
    pools: &std::collections::BTreeSet<String>,
) {
    match Tx::in_batch(database, memory).offers_of_pools(Some(pools)) {
        Ok(offers) => {
            let mut book = book.write().unwrap_or_else(|p| p.into_inner());
            for o in offers {
                if o.state == suanli_core::decide::purchase::OfferState::Active {
                    book.upsert(o.view());
                } else {
                    book.remove(&o.id);
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "could not refresh the offer book"),
    }
}

#[cfg(test)]
mod tests;
