//! A seeded, deterministic simulation of the whole market, over the real core and the real store
//! (TigerBeetle's VOPR and FoundationDB's simulation are the models).
//!
//! One seed builds a market from nothing (orgs, pools, offers, money, agents) and drives it with
//! seeded batches of commands through the real writer: purchases racing for scarce capacity,
//! payments, lease ends, cancels and expiries, jobs that are dispatched, start, log, report usage
//! and end, agents that go silent, come back or are replaced, clock jumps, restarts of the store
//! between any two steps, and requests retried with their idempotency key. After every step it
//! checks the invariants (`check`). Everything random comes from the seed, and the clock is the
//! simulation's own, so a failing seed replays.

pub mod check;
pub mod cmd;
pub mod rng;
pub mod world;

use std::collections::BTreeMap;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use suanli_core::decide::OrgKind;
use suanli_store::once::Once;
use suanli_store::ops::{new_id, OrgRow};
use suanli_store::{Location, Store, StoreError, WriterConfig};

use crate::cmd::{Cmd, Outcome};
use crate::rng::Rng;
use crate::world::World;

/// Where a seed's market lives.
#[derive(Debug, Clone)]
pub enum Target {
    /// A fresh SQLite file in this directory (on tmpfs, syncs cost nothing).
    Sqlite(std::path::PathBuf),
    /// A fresh database on this PostgreSQL server (URL of a database to connect to first).
    Postgres(String),
}

/// Accepted and refused commands, by kind, and why they were refused.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub counts: BTreeMap<&'static str, (u64, u64)>,
    pub reasons: BTreeMap<(&'static str, String), u64>,
}

impl Tally {
    fn count(&mut self, kind: &'static str, accepted: bool) {
        let e = self.counts.entry(kind).or_default();
        if accepted {
            e.0 += 1;
        } else {
            e.1 += 1;
        }
    }

    fn refused(&mut self, kind: &'static str, why: &StoreError) {
        self.count(kind, false);
        // The refusal's kind and the start of its message, without the ids in it.
        let text = format!("{why:?}");
        let short: String = text
            .split(|c: char| c == '_' || c.is_ascii_digit())
            .next()
            .unwrap_or("")
            .chars()
            .take(70)
            .collect();
        *self.reasons.entry((kind, short)).or_default() += 1;
    }

    pub fn add(&mut self, other: &Tally) {
        for (k, (a, r)) in &other.counts {
            let e = self.counts.entry(k).or_default();
            e.0 += a;
            e.1 += r;
        }
        for (k, n) in &other.reasons {
            *self.reasons.entry(k.clone()).or_default() += n;
        }
    }
}

/// A seed that broke an invariant (or the store failed), at which step.
#[derive(Debug, Clone)]
pub struct Failure {
    pub seed: u64,
    pub step: u32,
    pub message: String,
}

/// Runs one seed for `steps` steps.
pub fn run_seed(seed: u64, steps: u32, target: &Target) -> Result<Tally, Failure> {
    let fail = |step: u32, message: String| Failure {
        seed,
        step,
        message,
    };
    let location = match target {
        Target::Sqlite(dir) => {
            let path = dir.join(format!("sim-{seed}-{}.db", std::process::id()));
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
            Location::Sqlite(path.to_string_lossy().into_owned())
        }
        Target::Postgres(url) => {
            Location::Postgres(fresh_database(url, seed).map_err(|e| fail(0, e))?)
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(0, format!("runtime: {e}")))?;
    let mut sim = Sim::new(seed, location.clone()).map_err(|e| fail(0, e.to_string()))?;
    let result = (1..=steps).try_for_each(|step| {
        sim.prepare().map_err(|e| fail(step, e.to_string()))?;
        runtime
            .block_on(sim.step())
            .map_err(|e| fail(step, e.to_string()))?;
        let world = &mut sim.world;
        let found = sim
            .store
            .read(|tx| check::violations(tx, world, step % 50 == 0 || step == steps))
            .map_err(|e| fail(step, format!("reading the invariants: {e}")))?;
        if found.is_empty() {
            Ok(())
        } else {
            Err(fail(step, found.join("\n")))
        }
    });
    drop(sim.store);
    if let (Ok(_), Location::Sqlite(path), None) =
        (&result, &location, std::env::var_os("SUANLI_SIM_KEEP"))
    {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path}{suffix}"));
        }
    }
    result.map(|()| sim.tally)
}

struct Sim {
    rng: Rng,
    location: Location,
    store: Arc<Store>,
    world: World,
    tally: Tally,
    now_ms: i64,
    /// When the store last (re)started: the liveness monitor counts silence from there.
    started_ms: i64,
}

impl Sim {
    fn new(seed: u64, location: Location) -> Result<Sim, StoreError> {
        let store = Arc::new(Store::open(location.clone(), WriterConfig::default())?);
        let mut rng = Rng::new(seed);
        let now_ms = 1_780_000_000_000 + rng.range(0, 86_400_000) as i64;
        let operator = OrgRow {
            id: new_id("org"),
            name: "operator".into(),
            kind: OrgKind::Operator,
            consumer_type: None,
            zone: "wuqing-core".into(),
            origin_region: "tianjin".into(),
            created_ms: now_ms,
            name_unique: true,
        };
        let op = operator.clone();
        futures_block_on(
            store
                .writer()
                .submit(move |tx| tx.create_org(&op, "admin", None)),
        )?;
        Ok(Sim {
            rng,
            location,
            store,
            world: World {
                operator: operator.id,
                ..World::default()
            },
            tally: Tally::default(),
            now_ms,
            started_ms: now_ms,
        })
    }

    /// The start of a step, outside the runtime (opening a PostgreSQL store blocks): the clock
    /// moves, sometimes the store restarts or an agent goes silent or comes back.
    fn prepare(&mut self) -> Result<(), StoreError> {
        let rng = &mut self.rng;
        self.now_ms += rng.range(0, 4_000) as i64;
        if rng.chance(2) {
            // A clock jump: the exchange was paused, or its host slept.
            self.now_ms += rng.range(60, 7_200) as i64 * 1_000;
            self.tally.count("clock jump", true);
        }
        if rng.chance(1) {
            self.restart()?;
            self.tally.count("store restart", true);
        }
        if let Some(a) = {
            let rng = &mut self.rng;
            if rng.chance(3) && !self.world.agents.is_empty() {
                let i = rng.index(self.world.agents.len());
                Some(i)
            } else {
                None
            }
        } {
            let agent = &mut self.world.agents[a];
            agent.silent = !agent.silent;
        }
        Ok(())
    }

    /// The rest of a step: one seeded batch of commands runs through the writer.
    async fn step(&mut self) -> Result<(), StoreError> {
        let size = self.rng.range(1, 6) as usize;
        let mut batch: Vec<(Cmd, Option<String>, bool)> = Vec::with_capacity(size);
        // A market to act on first: a few orgs with money, a pool and an offer.
        if self.world.consumers.len() < 2 || self.world.providers.len() < 2 {
            let kind = if self.world.consumers.len() < 2 {
                OrgKind::Consumer
            } else {
                OrgKind::Provider
            };
            self.world.counter += 1;
            let name = format!("org-{}", self.world.counter);
            batch.push((Cmd::Org { kind, name }, None, false));
        }
        while batch.len() < size {
            // A retry of an earlier request with its idempotency key, or a new command.
            if self.rng.chance(5) && !self.world.keyed.is_empty() {
                let i = self.rng.index(self.world.keyed.len());
                let (cmd, key, _) = self.world.keyed[i].clone();
                batch.push((cmd, Some(key), true));
                continue;
            }
            let Some(cmd) = self.world.next(&mut self.rng, self.now_ms, self.started_ms) else {
                continue;
            };
            let key = self
                .rng
                .chance(40)
                .then(|| format!("key-{}", self.rng.next_u64()));
            batch.push((cmd, key, false));
        }
        self.run_batch(batch).await
    }

    async fn run_batch(
        &mut self,
        batch: Vec<(Cmd, Option<String>, bool)>,
    ) -> Result<(), StoreError> {
        let writer = self.store.writer().clone();
        // Hold the writer with a request of our own, queue the batch behind it, then let it go: the
        // batch runs as one (the writer takes what queued while it was busy).
        let (release, released) = mpsc::channel::<()>();
        let released = Mutex::new(released);
        let (held_tx, held_rx) = tokio::sync::oneshot::channel::<()>();
        let held_tx = Mutex::new(Some(held_tx));
        let blocker = tokio::spawn({
            let writer = writer.clone();
            async move {
                writer
                    .submit(move |_| {
                        if let Some(t) = held_tx.lock().ok().and_then(|mut t| t.take()) {
                            let _ = t.send(());
                        }
                        let _ = released
                            .lock()
                            .map(|r| r.recv_timeout(Duration::from_secs(30)));
                        Ok(())
                    })
                    .await
            }
        });
        // The writer runs the blocker on its own thread; a writer that stopped drops it unsent.
        held_rx
            .await
            .map_err(|_| StoreError::Database("the writer stopped before the batch".into()))?;
        let operator = self.world.operator.clone();
        let now = self.now_ms;
        let jobs: Vec<_> = batch
            .iter()
            .map(|(cmd, key, _)| {
                let (cmd, key, operator) = (cmd.clone(), key.clone(), operator.clone());
                move |tx: &mut suanli_store::Tx<'_>| cmd.run(tx, &operator, key.as_deref(), now)
            })
            .collect();
        let results = writer
            .submit_all(jobs, move || {
                let _ = release.send(());
            })
            .await;
        blocker
            .await
            .map_err(|e| StoreError::Database(format!("blocker: {e}")))??;
        for ((cmd, key, retry), result) in batch.into_iter().zip(results) {
            let (once, ran) = result?;
            let kind = if retry {
                "retry with the same key"
            } else {
                cmd.kind()
            };
            match (once, ran) {
                (Once::KeyReused, _) => {
                    // Keys are random: a reuse is a bug of the simulation or of the store.
                    return Err(StoreError::Database(format!(
                        "key {key:?} reported reused for {cmd:?}"
                    )));
                }
                (Once::Answer(answer), ran) => {
                    if retry {
                        let first = self
                            .world
                            .keyed
                            .iter()
                            .find(|(c, k, _)| c == &cmd && Some(k) == key.as_ref())
                            .map(|(_, _, body)| body.clone());
                        if ran.is_some() || first.as_ref() != Some(&answer.body) {
                            return Err(StoreError::Database(format!(
                                "a retry of {cmd:?} with key {key:?} ran again or answered \
                                 differently: first {first:?}, now {:?}",
                                answer.body
                            )));
                        }
                        self.tally.count(kind, true);
                        continue;
                    }
                    if let Some(k) = key {
                        self.world.keyed.push((cmd.clone(), k, answer.body.clone()));
                    }
                    match ran {
                        Some(Ok(outcome)) => {
                            let refused_usage =
                                matches!(outcome, Outcome::Usage { refused } if refused > 0);
                            self.tally.count(kind, !refused_usage);
                            self.world.learn(&cmd, &outcome);
                        }
                        Some(Err(refusal)) => {
                            self.tally.refused(kind, &refusal);
                            self.world.learn_refusal(&cmd, &refusal);
                        }
                        None => {
                            return Err(StoreError::Database(format!(
                                "{cmd:?} answered from a stored response it never had"
                            )))
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Stops the store and opens it again, as after a crash between two requests (a 2xx was
    /// durable, so nothing answered may be lost).
    fn restart(&mut self) -> Result<(), StoreError> {
        let store = std::mem::replace(
            &mut self.store,
            Arc::new(Store::open(self.location.clone(), WriterConfig::default())?),
        );
        drop(store);
        self.started_ms = self.now_ms;
        Ok(())
    }
}

/// Runs a future to completion on a throwaway runtime (set-up, outside the steps).
fn futures_block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(f)
}

/// A new, empty database on the PostgreSQL server at `url`, for one seed.
fn fresh_database(url: &str, seed: u64) -> Result<String, String> {
    let name = format!("suanli_sim_{seed}_{}", std::process::id());
    let failed = |e: postgres::Error| match e.as_db_error() {
        Some(db) => format!("{url}: {}", db.message()),
        None => format!("{url}: {e}"),
    };
    let mut client = postgres::Client::connect(url, postgres::NoTls).map_err(failed)?;
    // One statement per call: several in one are one transaction, which CREATE DATABASE refuses.
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
        .map_err(failed)?;
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .map_err(failed)?;
    let base = url.rsplit_once('/').map_or(url, |(base, _)| base);
    Ok(format!("{base}/{name}"))
}
