//! Domain operations over any [`Database`], written once in shared SQL.
//!
//! Writes run inside the writer's transaction (see [`crate::writer`]); every check that guards an
//! invariant is a conditional `UPDATE … WHERE <still true> RETURNING`, so it also holds when several
//! exchange processes write to one PostgreSQL: a concurrent purchase that took the capacity or the
//! funds first makes the update match no row, and the operation is refused and rolled back.

use std::collections::{BTreeSet, HashMap};

use suanli_core::decide::money::{self, Payment};
use suanli_core::decide::offer::{self, NewOfferSnapshot};
use suanli_core::decide::purchase::{self, Billing, OfferSnapshot, OfferState, PurchaseCommand};
use suanli_core::decide::settle::{self, LeaseSnapshot};
use suanli_core::decide::{AccountRef, OrgKind};
use suanli_core::lease::{EndReason, LeaseState, LeaseTerms};
use suanli_core::ledger::{
    check_invariants, AccountKind, AccountTotals, HoldState, HoldTotals, LedgerSnapshot,
    TransferKind,
};
use suanli_core::quote::OfferView;
use suanli_core::resource::{
    units_available, Capacity, Category, NodeFree, ResourceClass, UnitShape,
};

use crate::batch_ledger::LedgerBuffer;
use crate::batch_nodes::FreeNodes;
use crate::batch_offers::OfferTerms;
use crate::database::{to_i64, Database, Row, StoreError, Value};

mod data;
mod idempotency;
mod leases;
mod market;
mod orgs;
mod payments;

pub use data::{
    AccessOutcome, AccessRequest, AccessRequestRow, EntitlementRow, FileRow, ListingRow, NewFile,
    UploadPart, VersionRow,
};

/// A fresh identifier with a type prefix, e.g. `lease_19ac7f3e2b13f9a0c12d4e5b687`: the time in
/// milliseconds (11 hex digits), then 64 bits that are random for a thread's first identifier in a
/// millisecond and one more than the previous one after it (ULID's monotonic mode).
///
/// Time first, and counting up within a millisecond, so that the identifiers one thread makes
/// sort in the order it made them: new rows land on the last leaf page of every index on an id,
/// instead of in the middle of it, which splits pages and writes more of them per commit (the
/// writer makes every transfer's id). Identifiers need to be unique, not secret (token secrets
/// come from the OS source directly): the random start comes from a per-thread xorshift
/// generator seeded once from the OS, as a system call per identifier showed in the writer's
/// profile. Should the clock step back, the thread stays on its last millisecond.
pub fn new_id(prefix: &str) -> String {
    use std::cell::Cell;
    thread_local! {
        static RANDOM: Cell<u64> = Cell::new({
            let mut seed = [0u8; 8];
            getrandom::fill(&mut seed).expect("the OS random source is available");
            u64::from_le_bytes(seed) | 1
        });
        /// The last identifier's millisecond and 64 bits.
        static LAST: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    }
    let now = suanli_clock::since_epoch().as_millis() as u64;
    let random = || {
        RANDOM.with(|s| {
            let mut x = s.get();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            s.set(x);
            x
        })
    };
    let (last_ms, last_v) = LAST.with(Cell::get);
    let (ms, v) = if now > last_ms {
        (now, random())
    } else {
        match last_v.checked_add(1) {
            Some(next) => (last_ms, next),
            // 2^64 identifiers in one millisecond cannot happen; were it to, the next one moves on.
            None => (last_ms + 1, random()),
        }
    };
    LAST.with(|l| l.set((ms, v)));
    format!("{prefix}_{ms:011x}{v:016x}")
}

/// The id of an org's account of `kind`: deterministic, so no lookup is needed.
pub fn account_id(org_id: &str, kind: AccountKind) -> String {
    format!("{org_id}.{}", kind.as_str())
}

/// The ids of the accounts a decision names, the operator's under `operator_id` (to declare them
/// to the writer: see [`crate::writer::Writer::submit_with_accounts`]).
pub fn account_ids(accounts: &[AccountRef], operator_id: &str) -> Vec<String> {
    accounts
        .iter()
        .map(|a| match a {
            AccountRef::Org(org_id, kind) => account_id(org_id, *kind),
            AccountRef::Operator(kind) => account_id(operator_id, *kind),
        })
        .collect()
}

/// The org of an account id made by [`account_id`] (an account kind has no dot).
pub fn account_org(account_id: &str) -> &str {
    account_id
        .rsplit_once('.')
        .map_or(account_id, |(org, _)| org)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgRow {
    pub id: String,
    pub name: String,
    pub kind: OrgKind,
    pub consumer_type: Option<String>,
    pub zone: String,
    pub origin_region: String,
    pub created_ms: i64,
    /// False for an org stored before names had to be unique whose name another, older org
    /// holds (see schema migration 8): until the operator renames it, it is shown with its id.
    pub name_unique: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRow {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub email: Option<String>,
    pub role: String,
    pub created_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub id: String,
    pub org_id: String,
    pub member_id: String,
    pub name: String,
    pub role: String,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub revoked_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    pub id: String,
    pub pool_id: String,
    pub name: String,
    pub cpus: u64,
    pub memory_mib: u64,
    pub accelerator_model: Option<String>,
    pub accelerators: u64,
    pub partition: Option<String>,
    pub cpus_reserved: u64,
    pub memory_mib_reserved: u64,
    pub accelerators_reserved: u64,
}

impl NodeRow {
    pub fn free(&self) -> NodeFree {
        NodeFree {
            node_id: self.id.clone(),
            accelerator_model: self.accelerator_model.clone(),
            partition: self.partition.clone(),
            free: Capacity {
                cpus: self.cpus.saturating_sub(self.cpus_reserved),
                memory_mib: self.memory_mib.saturating_sub(self.memory_mib_reserved),
                accelerators: self.accelerators.saturating_sub(self.accelerators_reserved),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRow {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub zone: String,
    pub created_ms: i64,
    pub nodes: Vec<NodeRow>,
    /// Agents registered on the pool, and how many of them the monitor holds alive.
    pub agents: u64,
    pub agents_alive: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNode {
    pub name: String,
    pub cpus: u64,
    pub memory_mib: u64,
    pub accelerator_model: Option<String>,
    pub accelerators: u64,
    pub partition: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferRow {
    pub id: String,
    pub org_id: String,
    pub pool_id: String,
    pub zone: String,
    pub class: ResourceClass,
    pub accelerator_memory_gib: u32,
    pub cpus_per_unit: u64,
    pub memory_mib_per_unit: u64,
    pub price_micros_per_unit_hour: u64,
    pub min_units: u64,
    pub max_units: u64,
    pub valid_from_ms: i64,
    pub valid_until_ms: i64,
    pub state: OfferState,
    pub created_ms: i64,
    pub provider_name: String,
    pub units_available: u64,
}

impl OfferRow {
    pub fn shape(&self) -> UnitShape {
        UnitShape {
            category: self.class.category,
            cpus_per_unit: self.cpus_per_unit,
            memory_mib_per_unit: self.memory_mib_per_unit,
        }
    }

    pub fn view(&self) -> OfferView {
        OfferView {
            offer_id: self.id.clone(),
            provider_org_id: self.org_id.clone(),
            provider_name: self.provider_name.clone(),
            pool_id: self.pool_id.clone(),
            zone: self.zone.clone(),
            class: self.class.clone(),
            shape: self.shape(),
            accelerator_memory_gib: self.accelerator_memory_gib,
            price_micros_per_unit_hour: self.price_micros_per_unit_hour,
            min_units: self.min_units,
            max_units: self.max_units,
            valid_from_ms: self.valid_from_ms,
            valid_until_ms: self.valid_until_ms,
            units_available: self.units_available,
            created_ms: self.created_ms,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOffer {
    pub org_id: String,
    pub pool_id: String,
    pub class: ResourceClass,
    pub cpus_per_unit: u64,
    pub memory_mib_per_unit: u64,
    pub price_micros_per_unit_hour: u64,
    pub min_units: u64,
    pub max_units: u64,
    pub valid_from_ms: i64,
    pub valid_until_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldRow {
    pub id: String,
    pub org_id: String,
    pub amount_micros: u64,
    pub state: HoldState,
    pub posted_micros: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    pub id: String,
    pub consumer_org_id: String,
    pub provider_org_id: String,
    pub offer_id: String,
    pub pool_id: String,
    pub class: ResourceClass,
    pub zone: String,
    pub units: u64,
    pub price_micros_per_unit_hour: u64,
    pub fee_bps: u32,
    pub duration_limit_s: u64,
    pub started_ms: i64,
    pub ends_ms: i64,
    pub state: LeaseState,
    pub hold: HoldRow,
    pub ended_ms: Option<i64>,
    /// Unit-milliseconds billed at settlement (elapsed: units × elapsed ms; metered: the
    /// acknowledged use); the cost is `floor(price × billed_unit_ms / 3,600,000)`.
    pub billed_unit_ms: Option<u64>,
    pub cost_micros: Option<u64>,
    pub fee_micros: Option<u64>,
    /// Billed on the signed usage of its jobs (pool with an agent) or on elapsed time.
    pub billing: Billing,
    /// Ends when its last job ends.
    pub auto_end: bool,
    /// Metered use acknowledged so far, in unit-milliseconds.
    pub metered_unit_ms: u64,
    pub allocations: Vec<(String, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purchase {
    pub consumer_org_id: String,
    pub offer_id: String,
    pub units: u64,
    pub duration_limit_s: u64,
    pub max_price_micros_per_unit_hour: Option<u64>,
    pub fee_bps: u32,
    pub now_ms: i64,
    pub auto_end: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRow {
    pub id: String,
    pub org_id: String,
    pub kind: AccountKind,
    pub debits_micros: u64,
    pub credits_micros: u64,
}

impl AccountRow {
    pub fn balance(&self) -> i64 {
        self.credits_micros as i64 - self.debits_micros as i64
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferRow {
    pub seq: i64,
    pub id: String,
    pub kind: String,
    pub debit_account_id: String,
    pub credit_account_id: String,
    pub amount_micros: u64,
    pub debit_balance_after_micros: i64,
    pub credit_balance_after_micros: i64,
    pub hold_id: Option<String>,
    pub lease_id: Option<String>,
    pub external_ref: Option<String>,
    pub created_ms: i64,
    /// The access request to a data product whose price it held, paid or released.
    pub access_request_id: Option<String>,
}

/// A stored idempotent response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub request_sha256: String,
    pub status: u16,
    pub body: String,
}

/// An open transaction (writer) or a read connection (readers).
pub struct Tx<'a> {
    pub(crate) b: &'a mut dyn Database,
    /// What the transaction keeps in memory: its unwritten ledger rows and, in the writer, the
    /// pools' free capacity.
    pub(crate) memory: Memory<'a>,
    /// Pools whose capacity or offers changed; the writer refreshes the offer book after commit.
    pub dirty_pools: BTreeSet<String>,
    /// The writer runs this job without a savepoint of its own: any `Err` it returns makes the
    /// writer roll the whole batch back and run it again with a savepoint per job. A job that
    /// would otherwise roll back part of its own work (a refusal kept as an idempotent answer)
    /// returns its refusal as an `Err` instead when this is set.
    pub optimistic: bool,
}

/// What a writer transaction keeps in memory across its jobs: the ledger rows not yet written
/// and the accounts' totals ([`crate::batch_ledger`]), the free capacity of the pools it placed
/// on ([`crate::batch_nodes`]), the terms of the offers it sold from ([`crate::batch_offers`])
/// and the orgs it read ([`OrgCache`]).
///
/// Forgotten (but for committed orgs) when a transaction rolls back, also to a savepoint. When a
/// transaction commits, what it kept is what the database holds; the next transaction keeps it
/// if nobody else committed meanwhile ([`crate::database::Database::changed_by_others`]: on
/// SQLite, where the writer holds the database's one write lock and `PRAGMA data_version` tells
/// whether another connection committed) and forgets it otherwise (always on PostgreSQL, whose
/// writer must lock what it reads). Each batch then reads its accounts, its pool's nodes and
/// its offers once if another process wrote, instead of once per batch (~110 µs of a purchase
/// batch's writer time).
#[derive(Debug, Default)]
pub(crate) struct BatchMemory {
    ledger: LedgerBuffer,
    free_nodes: FreeNodes,
    offer_terms: OfferTerms,
    orgs: OrgCache,
    /// The last transaction committed, and what is kept is what the database held then.
    as_committed: bool,
    /// Which batch of the writer runs (counted from 1), for tests.
    pub(crate) batch_number: u64,
}

impl BatchMemory {
    /// Most accounts, pools and offers kept from one transaction to the next.
    const MOST_KEPT: usize = 100_000;

    /// Forgets what transactions read and buffered: the transaction rolled back.
    pub(crate) fn clear(&mut self) {
        self.ledger.clear();
        self.free_nodes.clear();
        self.offer_terms.clear();
        self.orgs.read_uncommitted.clear();
        self.as_committed = false;
    }

    /// A writer transaction began: keeps what the last one left if it committed and
    /// `changed_by_others` is false, and forgets it otherwise.
    pub(crate) fn begin(&mut self, changed_by_others: bool) {
        let kept = self.ledger.kept() + self.free_nodes.kept() + self.offer_terms.kept();
        if !self.as_committed || changed_by_others || kept > Self::MOST_KEPT {
            self.clear();
        }
        self.as_committed = false;
    }

    /// The transaction committed (its ledger rows were flushed before the `COMMIT`): what it
    /// read and wrote is now what the database holds.
    pub(crate) fn committed(&mut self) {
        let read = std::mem::take(&mut self.orgs.read_uncommitted);
        if self.orgs.committed.len() + read.len() > OrgCache::MOST {
            self.orgs.committed.clear();
        }
        self.orgs.committed.extend(read);
        self.as_committed = true;
    }
}

/// Orgs the writer read, so that a purchase does not read its org's row again (it was ~4 % of
/// the writer's time per purchase). An org row never changes and is never deleted, in any
/// process, so a committed row stays true; a row read in a transaction may have been created in
/// it, and is kept only once that transaction commits (a rollback forgets it).
#[derive(Debug, Default)]
struct OrgCache {
    committed: HashMap<String, OrgRow>,
    read_uncommitted: HashMap<String, OrgRow>,
}

impl OrgCache {
    /// Orgs kept at most; past it the cache starts again.
    const MOST: usize = 100_000;
}

/// Where a [`Tx`] keeps its memory.
pub(crate) enum Memory<'a> {
    /// A transaction of the writer: ledger rows are buffered until a flush.
    Batch(&'a mut BatchMemory),
    /// Anything else: each transfer is written at once, and no free capacity is kept.
    WriteThrough(Box<LedgerBuffer>),
}

impl Memory<'_> {
    pub(crate) fn ledger(&mut self) -> &mut LedgerBuffer {
        match self {
            Memory::Batch(m) => &mut m.ledger,
            Memory::WriteThrough(b) => b,
        }
    }

    pub(crate) fn free_nodes(&mut self) -> Option<&mut FreeNodes> {
        match self {
            Memory::Batch(m) => Some(&mut m.free_nodes),
            Memory::WriteThrough(_) => None,
        }
    }

    pub(crate) fn offer_terms(&mut self) -> Option<&mut OfferTerms> {
        match self {
            Memory::Batch(m) => Some(&mut m.offer_terms),
            Memory::WriteThrough(_) => None,
        }
    }

    pub(crate) fn writes_through(&self) -> bool {
        matches!(self, Memory::WriteThrough(_))
    }

    fn clear(&mut self) {
        match self {
            Memory::Batch(m) => m.clear(),
            Memory::WriteThrough(b) => b.clear(),
        }
    }
}

const ORG_COLS: &str = "id, name, kind, consumer_type, zone, origin_region, created_ms, name_key";
const NODE_COLS: &str = "id, pool_id, name, cpus, memory_mib, accelerator_model, accelerators, \
    partition_name, cpus_reserved, memory_mib_reserved, accelerators_reserved";
const OFFER_COLS: &str = "o.id, o.org_id, o.pool_id, p.zone, o.category, o.qualifier, \
    o.accelerator_memory_gib, o.cpus_per_unit, o.memory_mib_per_unit, o.price_micros_per_unit_hour, \
    o.min_units, o.max_units, o.valid_from_ms, o.valid_until_ms, o.state, o.created_ms, g.name, \
    g.name_key";
const LEASE_COLS: &str = "l.id, l.consumer_org_id, l.provider_org_id, l.offer_id, l.pool_id, \
    l.category, l.qualifier, l.zone, l.units, l.price_micros_per_unit_hour, l.fee_bps, \
    l.duration_limit_s, l.started_ms, l.ends_ms, l.state, h.id, h.org_id, h.amount_micros, h.state, \
    h.posted_micros, l.ended_ms, l.billed_unit_ms, l.cost_micros, l.fee_micros, l.billing, l.auto_end, \
    l.metered_unit_ms";
pub(crate) const TRANSFER_COLS: &str = "seq, id, kind, debit_account_id, credit_account_id, amount_micros, \
    debit_balance_after_micros, credit_balance_after_micros, hold_id, lease_id, external_ref, created_ms, \
    access_request_id";

fn org_row(r: &Row) -> Result<OrgRow, StoreError> {
    org_row_at(r, 0)
}

/// An org from the [`ORG_COLS`] starting at column `at`.
fn org_row_at(r: &Row, at: usize) -> Result<OrgRow, StoreError> {
    Ok(OrgRow {
        id: r.str(at)?,
        name: r.str(at + 1)?,
        kind: r.parsed(at + 2, OrgKind::parse)?,
        consumer_type: r.opt_str(at + 3)?,
        zone: r.str(at + 4)?,
        origin_region: r.str(at + 5)?,
        created_ms: r.i64(at + 6)?,
        name_unique: r.opt_str(at + 7)?.is_some(),
    })
}

/// A node as placement sees it, from `id, accelerator_model, partition_name` and its free CPUs,
/// memory and accelerators.
pub(crate) fn node_free(r: &Row) -> Result<NodeFree, StoreError> {
    Ok(NodeFree {
        node_id: r.str(0)?,
        accelerator_model: r.opt_str(1)?,
        partition: r.opt_str(2)?,
        free: Capacity {
            cpus: r.u64(3)?,
            memory_mib: r.u64(4)?,
            accelerators: r.u64(5)?,
        },
    })
}

fn node_row(r: &Row) -> Result<NodeRow, StoreError> {
    Ok(NodeRow {
        id: r.str(0)?,
        pool_id: r.str(1)?,
        name: r.str(2)?,
        cpus: r.u64(3)?,
        memory_mib: r.u64(4)?,
        accelerator_model: r.opt_str(5)?,
        accelerators: r.u64(6)?,
        partition: r.opt_str(7)?,
        cpus_reserved: r.u64(8)?,
        memory_mib_reserved: r.u64(9)?,
        accelerators_reserved: r.u64(10)?,
    })
}

fn offer_row(r: &Row) -> Result<OfferRow, StoreError> {
    Ok(OfferRow {
        id: r.str(0)?,
        org_id: r.str(1)?,
        pool_id: r.str(2)?,
        zone: r.str(3)?,
        class: ResourceClass {
            category: r.parsed(4, |s| s.parse::<Category>().ok())?,
            qualifier: r.opt_str(5)?,
        },
        accelerator_memory_gib: r.u32(6)?,
        cpus_per_unit: r.u64(7)?,
        memory_mib_per_unit: r.u64(8)?,
        price_micros_per_unit_hour: r.u64(9)?,
        min_units: r.u64(10)?,
        max_units: r.u64(11)?,
        valid_from_ms: r.i64(12)?,
        valid_until_ms: r.i64(13)?,
        state: r.parsed(14, OfferState::parse)?,
        created_ms: r.i64(15)?,
        provider_name: suanli_core::validate::shown_name(
            &r.str(16)?,
            r.opt_str(17)?.is_some(),
            &r.str(1)?,
        ),
        units_available: 0,
    })
}

fn lease_row(r: &Row) -> Result<LeaseRow, StoreError> {
    Ok(LeaseRow {
        id: r.str(0)?,
        consumer_org_id: r.str(1)?,
        provider_org_id: r.str(2)?,
        offer_id: r.str(3)?,
        pool_id: r.str(4)?,
        class: ResourceClass {
            category: r.parsed(5, |s| s.parse::<Category>().ok())?,
            qualifier: r.opt_str(6)?,
        },
        zone: r.str(7)?,
        units: r.u64(8)?,
        price_micros_per_unit_hour: r.u64(9)?,
        fee_bps: r.u32(10)?,
        duration_limit_s: r.u64(11)?,
        started_ms: r.i64(12)?,
        ends_ms: r.i64(13)?,
        state: r.parsed(14, LeaseState::parse)?,
        hold: HoldRow {
            id: r.str(15)?,
            org_id: r.str(16)?,
            amount_micros: r.u64(17)?,
            state: r.parsed(18, HoldState::parse)?,
            posted_micros: r.u64(19)?,
        },
        ended_ms: r.opt_i64(20)?,
        billed_unit_ms: r.opt_u64(21)?,
        cost_micros: r.opt_u64(22)?,
        fee_micros: r.opt_u64(23)?,
        billing: r.parsed(24, Billing::parse)?,
        auto_end: r.i64(25)? != 0,
        metered_unit_ms: r.u64(26)?,
        allocations: Vec::new(),
    })
}

fn transfer_row(r: &Row) -> Result<TransferRow, StoreError> {
    Ok(TransferRow {
        seq: r.i64(0)?,
        id: r.str(1)?,
        kind: r.str(2)?,
        debit_account_id: r.str(3)?,
        credit_account_id: r.str(4)?,
        amount_micros: r.u64(5)?,
        debit_balance_after_micros: r.i64(6)?,
        credit_balance_after_micros: r.i64(7)?,
        hold_id: r.opt_str(8)?,
        lease_id: r.opt_str(9)?,
        external_ref: r.opt_str(10)?,
        created_ms: r.i64(11)?,
        access_request_id: r.opt_str(12)?,
    })
}

fn account_row(r: &Row) -> Result<AccountRow, StoreError> {
    Ok(AccountRow {
        id: r.str(0)?,
        org_id: r.str(1)?,
        kind: r.parsed(2, AccountKind::parse)?,
        debits_micros: r.u64(3)?,
        credits_micros: r.u64(4)?,
    })
}

fn int(v: u64) -> Result<Value, StoreError> {
    Ok(Value::from(to_i64(v)?))
}

impl<'a> Tx<'a> {
    /// A transaction or read connection of its own: transfers are written as they are made.
    pub fn new(b: &'a mut dyn Database) -> Self {
        Tx {
            b,
            memory: Memory::WriteThrough(Box::default()),
            dirty_pools: BTreeSet::new(),
            optimistic: false,
        }
    }

    /// A job of the writer's batch: transfers are buffered in `memory` across the batch's jobs
    /// until the next flush (a savepoint boundary, a read of the ledger, the commit), and pools'
    /// free capacity is kept there.
    pub(crate) fn in_batch(b: &'a mut dyn Database, memory: &'a mut BatchMemory) -> Self {
        Tx {
            b,
            memory: Memory::Batch(memory),
            dirty_pools: BTreeSet::new(),
            optimistic: false,
        }
    }

    pub fn database_kind(&self) -> &'static str {
        self.b.kind()
    }

    /// The writer's batch this transaction belongs to; `None` outside the writer.
    #[cfg(test)]
    pub(crate) fn batch_number(&self) -> Option<u64> {
        match &self.memory {
            Memory::Batch(m) => Some(m.batch_number),
            Memory::WriteThrough(_) => None,
        }
    }

    /// Buffered transfers are written first, so that a rollback to the savepoint undoes exactly
    /// what came after it.
    pub fn savepoint(&mut self, name: &str) -> Result<(), StoreError> {
        self.flush_ledger()?;
        self.b.batch(&format!("SAVEPOINT {name}"))
    }

    pub fn release(&mut self, name: &str) -> Result<(), StoreError> {
        self.flush_ledger()?;
        self.b.batch(&format!("RELEASE SAVEPOINT {name}"))
    }

    /// Also forgets what the transaction kept in memory: it is read again after it.
    pub fn rollback_to(&mut self, name: &str) -> Result<(), StoreError> {
        self.memory.clear();
        self.b.batch(&format!("ROLLBACK TO SAVEPOINT {name}"))
    }
}

fn member_row(r: &Row) -> Result<MemberRow, StoreError> {
    Ok(MemberRow {
        id: r.str(0)?,
        org_id: r.str(1)?,
        name: r.str(2)?,
        email: r.opt_str(3)?,
        role: r.str(4)?,
        created_ms: r.i64(5)?,
    })
}

fn token_row(r: &Row) -> Result<TokenRow, StoreError> {
    Ok(TokenRow {
        id: r.str(0)?,
        org_id: r.str(1)?,
        member_id: r.str(2)?,
        name: r.str(3)?,
        role: r.str(4)?,
        created_ms: r.i64(5)?,
        expires_ms: r.i64(6)?,
        revoked_ms: r.opt_i64(7)?,
    })
}

#[cfg(test)]
mod tests {
    use super::{account_id, account_org, new_id};
    use suanli_core::ledger::AccountKind;

    /// Every account kind's id leads back to its org, whatever the org id looks like.
    #[test]
    fn an_account_id_leads_back_to_its_org() {
        for org in [new_id("org"), "org.with.dots".to_owned(), String::new()] {
            for kind in AccountKind::ALL {
                assert_eq!(account_org(&account_id(&org, kind)), org);
            }
        }
    }

    /// One thread's identifiers sort in the order it made them (many fall in one millisecond),
    /// and no two threads make the same one.
    #[test]
    fn identifiers_sort_in_the_order_a_thread_made_them_and_never_repeat() {
        let made: Vec<Vec<String>> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..4)
                .map(|_| s.spawn(|| (0..20_000).map(|_| new_id("tr")).collect::<Vec<_>>()))
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        for ids in &made {
            assert!(
                ids.windows(2).all(|w| w[0] < w[1]),
                "out of order in one thread"
            );
            assert!(ids.iter().all(|id| id.len() == "tr_".len() + 27));
        }
        let all: std::collections::HashSet<&String> = made.iter().flatten().collect();
        assert_eq!(all.len(), 4 * 20_000);
    }
}
