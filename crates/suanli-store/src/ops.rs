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
    check_balances, check_invariants, AccountKind, AccountTotals, HoldState, HoldTotals,
    LedgerSnapshot, TransferKind,
};
use suanli_core::quote::OfferView;
use suanli_core::resource::{
    units_available, Capacity, Category, NodeFree, ResourceClass, UnitShape,
};

use crate::batch_ledger::LedgerBuffer;
use crate::batch_nodes::FreeNodes;
use crate::batch_offers::OfferTerms;
use crate::database::{to_i64, Database, Row, StoreError, Value};

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
    debit_balance_after_micros, credit_balance_after_micros, hold_id, lease_id, external_ref, created_ms";

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

    // ---------------------------------------------------------------- orgs, members, tokens

    /// Refuses `name` for `org_id` when another org's name has the same key
    /// (`suanli_core::validate::name_key`); returns the key.
    fn free_name_key(&mut self, org_id: &str, name: &str) -> Result<String, StoreError> {
        let key = suanli_core::validate::name_key(name);
        let rows = self.b.query(
            "SELECT id, name FROM orgs WHERE name_key = $1",
            &[key.as_str().into()],
        )?;
        if let Some(r) = rows.iter().find(|r| r.str(0).is_ok_and(|id| id != org_id)) {
            return Err(StoreError::Duplicate {
                field: "name",
                message: format!(
                    "an org named {:?} already exists; names are compared ignoring case, width, \
                     spacing, invisible characters and look-alike letters",
                    r.str(1)?
                ),
            });
        }
        Ok(key)
    }

    /// Creates an org with its accounts and first admin member; returns them. Its name must not
    /// be another org's under `name_key` (refused with [`StoreError::Duplicate`]).
    pub fn create_org(
        &mut self,
        org: &OrgRow,
        admin_name: &str,
        admin_email: Option<&str>,
    ) -> Result<MemberRow, StoreError> {
        let key = self.free_name_key(&org.id, &org.name)?;
        self.b.execute(
            &format!("INSERT INTO orgs ({ORG_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"),
            &[
                (&org.id).into(),
                (&org.name).into(),
                org.kind.as_str().into(),
                org.consumer_type.clone().into(),
                (&org.zone).into(),
                (&org.origin_region).into(),
                org.created_ms.into(),
                key.into(),
            ],
        )?;
        for &kind in org.kind.accounts() {
            self.b.execute(
                "INSERT INTO accounts (id, org_id, kind) VALUES ($1, $2, $3)",
                &[
                    account_id(&org.id, kind).into(),
                    (&org.id).into(),
                    kind.as_str().into(),
                ],
            )?;
        }
        self.create_member(&org.id, admin_name, admin_email, "admin", org.created_ms)
    }

    pub fn create_member(
        &mut self,
        org_id: &str,
        name: &str,
        email: Option<&str>,
        role: &str,
        now_ms: i64,
    ) -> Result<MemberRow, StoreError> {
        let m = MemberRow {
            id: new_id("mem"),
            org_id: org_id.into(),
            name: name.into(),
            email: email.map(Into::into),
            role: role.into(),
            created_ms: now_ms,
        };
        self.b.execute(
            "INSERT INTO members (id, org_id, name, email, role, created_ms) VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                (&m.id).into(),
                (&m.org_id).into(),
                (&m.name).into(),
                m.email.clone().into(),
                (&m.role).into(),
                now_ms.into(),
            ],
        )?;
        Ok(m)
    }

    pub fn get_org(&mut self, org_id: &str) -> Result<OrgRow, StoreError> {
        if let Memory::Batch(m) = &self.memory {
            if let Some(org) = m.orgs.committed.get(org_id) {
                return Ok(org.clone());
            }
        }
        let rows = self.b.query(
            &format!("SELECT {ORG_COLS} FROM orgs WHERE id = $1"),
            &[org_id.into()],
        )?;
        let org = rows
            .first()
            .map(org_row)
            .transpose()?
            .ok_or(StoreError::NotFound("org"))?;
        if let Memory::Batch(m) = &mut self.memory {
            m.orgs.read_uncommitted.insert(org.id.clone(), org.clone());
        }
        Ok(org)
    }

    /// Renames an org (the operator's remedy for names that cannot be told apart). The new name
    /// must be free under `name_key`. The writer's kept copy of the org is dropped and the offer
    /// book re-reads the org's offers, which show the provider's name.
    pub fn rename_org(&mut self, org_id: &str, name: &str) -> Result<OrgRow, StoreError> {
        self.get_org(org_id)?;
        let key = self.free_name_key(org_id, name)?;
        self.b.execute(
            "UPDATE orgs SET name = $2, name_key = $3 WHERE id = $1",
            &[org_id.into(), name.into(), key.into()],
        )?;
        if let Memory::Batch(m) = &mut self.memory {
            m.orgs.committed.remove(org_id);
            m.orgs.read_uncommitted.remove(org_id);
        }
        let pools = self
            .b
            .query("SELECT id FROM pools WHERE org_id = $1", &[org_id.into()])?;
        for p in &pools {
            self.dirty_pools.insert(p.str(0)?);
        }
        self.get_org(org_id)
    }

    pub fn list_orgs(&mut self) -> Result<Vec<OrgRow>, StoreError> {
        let rows = self.b.query(
            &format!("SELECT {ORG_COLS} FROM orgs ORDER BY created_ms, id"),
            &[],
        )?;
        rows.iter().map(org_row).collect::<Result<_, StoreError>>()
    }

    /// The operator org, which owns the fee and external accounts.
    pub fn operator_org_id(&mut self) -> Result<Option<String>, StoreError> {
        let rows = self.b.query(
            "SELECT id FROM orgs WHERE kind = 'operator' ORDER BY created_ms, id LIMIT 1",
            &[],
        )?;
        rows.first().map(|r| r.str(0)).transpose()
    }

    pub fn get_member(&mut self, org_id: &str, member_id: &str) -> Result<MemberRow, StoreError> {
        let rows = self.b.query(
            "SELECT id, org_id, name, email, role, created_ms FROM members WHERE id = $1 AND org_id = $2",
            &[member_id.into(), org_id.into()],
        )?;
        rows.first()
            .map(member_row)
            .transpose()?
            .ok_or(StoreError::NotFound("member"))
    }

    pub fn list_members(&mut self, org_id: &str) -> Result<Vec<MemberRow>, StoreError> {
        let rows = self.b.query(
            "SELECT id, org_id, name, email, role, created_ms FROM members WHERE org_id = $1 ORDER BY created_ms, id",
            &[org_id.into()],
        )?;
        rows.iter()
            .map(member_row)
            .collect::<Result<_, StoreError>>()
    }

    pub fn create_token(
        &mut self,
        org_id: &str,
        member_id: &str,
        name: &str,
        secret_sha256: &str,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<TokenRow, StoreError> {
        let member = self.get_member(org_id, member_id)?;
        let t = TokenRow {
            id: new_id("tok"),
            org_id: org_id.into(),
            member_id: member_id.into(),
            name: name.into(),
            role: member.role,
            created_ms: now_ms,
            expires_ms,
            revoked_ms: None,
        };
        self.b.execute(
            "INSERT INTO api_tokens (id, org_id, member_id, name, secret_sha256, created_ms, expires_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                (&t.id).into(),
                org_id.into(),
                member_id.into(),
                name.into(),
                secret_sha256.into(),
                now_ms.into(),
                expires_ms.into(),
            ],
        )?;
        Ok(t)
    }

    const TOKEN_SELECT: &'static str = "SELECT t.id, t.org_id, t.member_id, t.name, m.role, \
        t.created_ms, t.expires_ms, t.revoked_ms FROM api_tokens t JOIN members m ON m.id = t.member_id";

    /// The token whose secret hashes to `secret_sha256` (revoked or expired ones included) with
    /// its org, in one query: what authenticating a request reads.
    pub fn caller_by_token_hash(
        &mut self,
        secret_sha256: &str,
    ) -> Result<Option<(TokenRow, OrgRow)>, StoreError> {
        let rows = self.b.query(
            "SELECT t.id, t.org_id, t.member_id, t.name, m.role, t.created_ms, t.expires_ms, \
             t.revoked_ms, o.id, o.name, o.kind, o.consumer_type, o.zone, o.origin_region, \
             o.created_ms, o.name_key FROM api_tokens t JOIN members m ON m.id = t.member_id \
             JOIN orgs o ON o.id = t.org_id WHERE t.secret_sha256 = $1",
            &[secret_sha256.into()],
        )?;
        rows.first()
            .map(|r| Ok((token_row(r)?, org_row_at(r, 8)?)))
            .transpose()
    }

    pub fn get_token(&mut self, org_id: &str, token_id: &str) -> Result<TokenRow, StoreError> {
        let rows = self.b.query(
            &format!("{} WHERE t.id = $1 AND t.org_id = $2", Self::TOKEN_SELECT),
            &[token_id.into(), org_id.into()],
        )?;
        rows.first()
            .map(token_row)
            .transpose()?
            .ok_or(StoreError::NotFound("token"))
    }

    pub fn list_tokens(&mut self, org_id: &str) -> Result<Vec<TokenRow>, StoreError> {
        let rows = self.b.query(
            &format!(
                "{} WHERE t.org_id = $1 ORDER BY t.created_ms, t.id",
                Self::TOKEN_SELECT
            ),
            &[org_id.into()],
        )?;
        rows.iter()
            .map(token_row)
            .collect::<Result<_, StoreError>>()
    }

    /// Revokes a token (idempotent: revoking twice keeps the first time).
    pub fn revoke_token(
        &mut self,
        org_id: &str,
        token_id: &str,
        now_ms: i64,
    ) -> Result<TokenRow, StoreError> {
        self.b.execute(
            "UPDATE api_tokens SET revoked_ms = $3 WHERE id = $1 AND org_id = $2 AND revoked_ms IS NULL",
            &[token_id.into(), org_id.into(), now_ms.into()],
        )?;
        self.get_token(org_id, token_id)
    }

    // ---------------------------------------------------------------- accelerator models

    pub fn list_accelerator_models(&mut self) -> Result<Vec<(String, String, u32)>, StoreError> {
        let rows = self.b.query(
            "SELECT name, vendor, memory_gib FROM accelerator_models ORDER BY name",
            &[],
        )?;
        rows.iter()
            .map(|r| Ok((r.str(0)?, r.str(1)?, r.u32(2)?)))
            .collect::<Result<_, StoreError>>()
    }

    pub fn accelerator_memory_gib(&mut self, model: &str) -> Result<Option<u32>, StoreError> {
        let rows = self.b.query(
            "SELECT memory_gib FROM accelerator_models WHERE name = $1",
            &[model.into()],
        )?;
        rows.first().map(|r| r.u32(0)).transpose()
    }

    /// Adds a model; an existing name is a conflict.
    pub fn add_accelerator_model(
        &mut self,
        name: &str,
        vendor: &str,
        memory_gib: u32,
    ) -> Result<(), StoreError> {
        self.b.execute(
            "INSERT INTO accelerator_models (name, vendor, memory_gib) VALUES ($1, $2, $3)",
            &[name.into(), vendor.into(), i64::from(memory_gib).into()],
        )?;
        Ok(())
    }

    /// Adds the models that are not yet known, leaving existing ones as the operator set them.
    pub fn seed_accelerator_models(
        &mut self,
        models: &[(String, String, u32)],
    ) -> Result<(), StoreError> {
        for (name, vendor, mem) in models {
            self.b.execute(
                "INSERT INTO accelerator_models (name, vendor, memory_gib) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO NOTHING",
                &[name.into(), vendor.into(), i64::from(*mem).into()],
            )?;
        }
        Ok(())
    }

    // ---------------------------------------------------------------- pools and offers

    pub fn create_pool(
        &mut self,
        org_id: &str,
        name: &str,
        zone: &str,
        nodes: &[NewNode],
        now_ms: i64,
    ) -> Result<PoolRow, StoreError> {
        let pool_id = new_id("pool");
        self.b.execute(
            "INSERT INTO pools (id, org_id, name, zone, created_ms) VALUES ($1, $2, $3, $4, $5)",
            &[
                (&pool_id).into(),
                org_id.into(),
                name.into(),
                zone.into(),
                now_ms.into(),
            ],
        )?;
        for n in nodes {
            self.b.execute(
                &format!("INSERT INTO nodes ({NODE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, 0, 0)"),
                &[
                    new_id("node").into(),
                    (&pool_id).into(),
                    (&n.name).into(),
                    int(n.cpus)?,
                    int(n.memory_mib)?,
                    n.accelerator_model.clone().into(),
                    int(n.accelerators)?,
                    n.partition.clone().into(),
                ],
            )
            .map_err(|e| match e {
                StoreError::Conflict(_) => StoreError::invalid("nodes", format!("node name {:?} is used twice", n.name)),
                e => e,
            })?;
        }
        self.dirty_pools.insert(pool_id.clone());
        self.nodes_changed(&pool_id);
        self.get_pool(Some(org_id), &pool_id)
    }

    pub fn nodes_of_pool(&mut self, pool_id: &str) -> Result<Vec<NodeRow>, StoreError> {
        let rows = self.b.query(
            &format!("SELECT {NODE_COLS} FROM nodes WHERE pool_id = $1 ORDER BY name, id"),
            &[pool_id.into()],
        )?;
        rows.iter().map(node_row).collect::<Result<_, StoreError>>()
    }

    /// The node [`place`] would choose to hold all `units` of `shape` on its own (the one with the
    /// least room left that fits them, ties by node id), found by the database: the same rule in
    /// SQL, so that a purchase reads one node row instead of every node of the pool. `None` when
    /// no single node fits them (placement then spreads them over several).
    pub fn best_single_node(
        &mut self,
        pool_id: &str,
        shape: &UnitShape,
        qualifier: Option<&str>,
        units: u64,
    ) -> Result<Option<NodeFree>, StoreError> {
        let (model, partition) = match shape.category {
            Category::Intelligent => match qualifier {
                Some(model) => (Some(model), None),
                // No model: no node matches (see `place`).
                None => return Ok(None),
            },
            Category::Supercomputing => (None, qualifier),
            Category::General => (None, None),
        };
        let per_unit = shape.per_unit();
        // Units of `per_unit` a node's free capacity holds, as `Capacity::units_of` counts them
        // (a dimension a unit does not use never limits it); ids in byte order, as Rust sorts.
        let by_id = if self.b.kind() == "postgres" {
            "id COLLATE \"C\""
        } else {
            "id"
        };
        let rows = self.b.query(
            &format!(
                "SELECT id, accelerator_model, partition_name, free_cpus, free_memory_mib, \
                 free_accelerators, fit FROM (SELECT id, accelerator_model, partition_name, \
                 free_cpus, free_memory_mib, free_accelerators, \
                 CASE WHEN fit_cpus <= fit_memory AND fit_cpus <= fit_accelerators THEN fit_cpus \
                 WHEN fit_memory <= fit_accelerators THEN fit_memory ELSE fit_accelerators END AS fit \
                 FROM (SELECT id, accelerator_model, partition_name, \
                 cpus - cpus_reserved AS free_cpus, memory_mib - memory_mib_reserved AS free_memory_mib, \
                 accelerators - accelerators_reserved AS free_accelerators, \
                 CASE WHEN CAST($2 AS BIGINT) = 0 THEN {MAX} ELSE (cpus - cpus_reserved) / CAST($2 AS BIGINT) END AS fit_cpus, \
                 CASE WHEN CAST($3 AS BIGINT) = 0 THEN {MAX} ELSE (memory_mib - memory_mib_reserved) / CAST($3 AS BIGINT) END AS fit_memory, \
                 CASE WHEN CAST($4 AS BIGINT) = 0 THEN {MAX} ELSE (accelerators - accelerators_reserved) / CAST($4 AS BIGINT) END AS fit_accelerators \
                 FROM nodes WHERE pool_id = $1 AND (CAST($6 AS TEXT) IS NULL OR accelerator_model = CAST($6 AS TEXT)) \
                 AND (CAST($7 AS TEXT) IS NULL OR partition_name = CAST($7 AS TEXT))) AS free) AS fits \
                 WHERE fit >= CAST($5 AS BIGINT) ORDER BY fit, {by_id} LIMIT 1",
                MAX = i64::MAX
            ),
            &[
                pool_id.into(),
                int(per_unit.cpus)?,
                int(per_unit.memory_mib)?,
                int(per_unit.accelerators)?,
                int(units)?,
                model.into(),
                partition.into(),
            ],
        )?;
        rows.first().map(node_free).transpose()
    }

    /// The nodes of a pool with room for at least one unit needing `per_unit`, as placement sees
    /// them (full nodes cannot take part in a placement, so they are not read).
    pub fn nodes_with_room(
        &mut self,
        pool_id: &str,
        per_unit: Capacity,
    ) -> Result<Vec<NodeFree>, StoreError> {
        let rows = self.b.query(
            "SELECT id, accelerator_model, partition_name, cpus - cpus_reserved, \
             memory_mib - memory_mib_reserved, accelerators - accelerators_reserved FROM nodes \
             WHERE pool_id = $1 AND cpus - cpus_reserved >= $2 AND memory_mib - memory_mib_reserved >= $3 \
             AND accelerators - accelerators_reserved >= $4",
            &[
                pool_id.into(),
                int(per_unit.cpus)?,
                int(per_unit.memory_mib)?,
                int(per_unit.accelerators)?,
            ],
        )?;
        rows.iter()
            .map(node_free)
            .collect::<Result<_, StoreError>>()
    }

    /// A pool; with `org_id`, only if that org owns it.
    pub fn get_pool(&mut self, org_id: Option<&str>, pool_id: &str) -> Result<PoolRow, StoreError> {
        let rows = self.b.query(
            "SELECT id, org_id, name, zone, created_ms FROM pools WHERE id = $1",
            &[pool_id.into()],
        )?;
        let r = rows.first().ok_or(StoreError::NotFound("pool"))?;
        let owner = r.str(1)?;
        if org_id.is_some_and(|o| o != owner) {
            return Err(StoreError::NotFound("pool"));
        }
        let agents = self.b.query(
            "SELECT state FROM agents WHERE pool_id = $1",
            &[pool_id.into()],
        )?;
        Ok(PoolRow {
            id: r.str(0)?,
            org_id: r.str(1)?,
            name: r.str(2)?,
            zone: r.str(3)?,
            created_ms: r.i64(4)?,
            nodes: self.nodes_of_pool(pool_id)?,
            agents: agents.len() as u64,
            agents_alive: agents
                .iter()
                .filter(|a| a.str(0).is_ok_and(|s| s == "alive"))
                .count() as u64,
        })
    }

    pub fn list_pools(&mut self, org_id: &str) -> Result<Vec<PoolRow>, StoreError> {
        let ids = self.b.query(
            "SELECT id FROM pools WHERE org_id = $1 ORDER BY created_ms, id",
            &[org_id.into()],
        )?;
        ids.iter()
            .map(|r| self.get_pool(Some(org_id), &r.str(0)?))
            .collect()
    }

    pub fn create_offer(&mut self, o: &NewOffer, now_ms: i64) -> Result<OfferRow, StoreError> {
        let pool = match self.get_pool(Some(&o.org_id), &o.pool_id) {
            Ok(pool) => Some(pool),
            Err(StoreError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let registry_memory_gib = match (o.class.category, &o.class.qualifier) {
            (Category::Intelligent, Some(model)) => self.accelerator_memory_gib(model)?,
            _ => None,
        };
        let snapshot = NewOfferSnapshot {
            pool_is_own: pool.is_some(),
            registry_memory_gib,
        };
        let accelerator_memory_gib = offer::decide_offer(&snapshot, &o.class)?;
        let Some(pool) = pool else {
            unreachable!("the decision refuses an offer on no pool of the org's")
        };
        let id = new_id("offer");
        self.b.execute(
            "INSERT INTO offers (id, org_id, pool_id, category, qualifier, accelerator_memory_gib, \
             cpus_per_unit, memory_mib_per_unit, price_micros_per_unit_hour, min_units, max_units, \
             valid_from_ms, valid_until_ms, state, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'active', $14)",
            &[
                (&id).into(),
                (&o.org_id).into(),
                (&o.pool_id).into(),
                o.class.category.as_str().into(),
                o.class.qualifier.clone().into(),
                i64::from(accelerator_memory_gib).into(),
                int(o.cpus_per_unit)?,
                int(o.memory_mib_per_unit)?,
                int(o.price_micros_per_unit_hour)?,
                int(o.min_units)?,
                int(o.max_units)?,
                o.valid_from_ms.into(),
                o.valid_until_ms.into(),
                now_ms.into(),
            ],
        )?;
        self.dirty_pools.insert(pool.id.clone());
        self.get_offer(Some(&o.org_id), &id)
    }

    fn with_availability(
        &mut self,
        mut offers: Vec<OfferRow>,
    ) -> Result<Vec<OfferRow>, StoreError> {
        let mut cache: Vec<(String, Vec<NodeFree>)> = Vec::new();
        for o in &mut offers {
            if !cache.iter().any(|(p, _)| p == &o.pool_id) {
                // The writer's copy of the pool's free capacity, where its transaction keeps one
                // (exact for the transaction, and after its commit; see `crate::batch_nodes`).
                let nodes = match self.kept_free_nodes_if_read(&o.pool_id) {
                    Some(kept) => kept,
                    None => self
                        .nodes_of_pool(&o.pool_id)?
                        .iter()
                        .map(NodeRow::free)
                        .collect(),
                };
                cache.push((o.pool_id.clone(), nodes));
            }
            let nodes = &cache
                .iter()
                .find(|(p, _)| p == &o.pool_id)
                .expect("cached above")
                .1;
            o.units_available = if o.state == OfferState::Active {
                units_available(nodes, &o.shape(), o.class.qualifier.as_deref())
            } else {
                0
            };
        }
        Ok(offers)
    }

    /// An offer's row, without computing its availability.
    pub(crate) fn offer_terms(&mut self, offer_id: &str) -> Result<OfferRow, StoreError> {
        let rows = self.b.query(
            &format!(
                "SELECT {OFFER_COLS} FROM offers o JOIN pools p ON p.id = o.pool_id JOIN orgs g ON g.id = o.org_id \
                 WHERE o.id = $1"
            ),
            &[offer_id.into()],
        )?;
        rows.first()
            .map(offer_row)
            .transpose()?
            .ok_or(StoreError::NotFound("offer"))
    }

    /// An offer; with `org_id`, only if that org owns it.
    pub fn get_offer(
        &mut self,
        org_id: Option<&str>,
        offer_id: &str,
    ) -> Result<OfferRow, StoreError> {
        let rows = self.b.query(
            &format!("SELECT {OFFER_COLS} FROM offers o JOIN pools p ON p.id = o.pool_id JOIN orgs g ON g.id = o.org_id WHERE o.id = $1"),
            &[offer_id.into()],
        )?;
        let offer = rows
            .first()
            .map(offer_row)
            .transpose()?
            .ok_or(StoreError::NotFound("offer"))?;
        if org_id.is_some_and(|o| o != offer.org_id) {
            return Err(StoreError::NotFound("offer"));
        }
        Ok(self.with_availability(vec![offer])?.remove(0))
    }

    pub fn list_offers(&mut self, org_id: &str) -> Result<Vec<OfferRow>, StoreError> {
        let rows = self.b.query(
            &format!(
                "SELECT {OFFER_COLS} FROM offers o JOIN pools p ON p.id = o.pool_id JOIN orgs g ON g.id = o.org_id \
                 WHERE o.org_id = $1 ORDER BY o.created_ms, o.id"
            ),
            &[org_id.into()],
        )?;
        let offers = rows
            .iter()
            .map(offer_row)
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.with_availability(offers)
    }

    /// Offers of the given pools (all active offers when `pool_ids` is `None`), with availability.
    pub fn offers_of_pools(
        &mut self,
        pool_ids: Option<&BTreeSet<String>>,
    ) -> Result<Vec<OfferRow>, StoreError> {
        let mut offers = Vec::new();
        match pool_ids {
            None => {
                let rows = self.b.query(
                    &format!(
                        "SELECT {OFFER_COLS} FROM offers o JOIN pools p ON p.id = o.pool_id JOIN orgs g ON g.id = o.org_id \
                         WHERE o.state = 'active' ORDER BY o.pool_id, o.id"
                    ),
                    &[],
                )?;
                for r in &rows {
                    offers.push(offer_row(r)?);
                }
            }
            Some(ids) => {
                for pool_id in ids {
                    let rows = self.b.query(
                        &format!(
                            "SELECT {OFFER_COLS} FROM offers o JOIN pools p ON p.id = o.pool_id JOIN orgs g ON g.id = o.org_id \
                             WHERE o.pool_id = $1 ORDER BY o.id"
                        ),
                        &[pool_id.into()],
                    )?;
                    for r in &rows {
                        offers.push(offer_row(r)?);
                    }
                }
            }
        }
        self.with_availability(offers)
    }

    pub fn withdraw_offer(&mut self, org_id: &str, offer_id: &str) -> Result<OfferRow, StoreError> {
        let offer = match self.get_offer(None, offer_id) {
            Ok(offer) => Some(offer),
            Err(StoreError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        offer::decide_withdraw(offer.as_ref().map(|o| o.org_id.as_str()), org_id)?;
        let Some(offer) = offer else {
            unreachable!("the decision refuses withdrawing no offer")
        };
        self.b.execute(
            "UPDATE offers SET state = 'withdrawn' WHERE id = $1",
            &[offer_id.into()],
        )?;
        self.offers_changed();
        self.dirty_pools.insert(offer.pool_id);
        self.get_offer(Some(org_id), offer_id)
    }

    // ---------------------------------------------------------------- ledger

    /// The id of an account a decision names.
    fn account_of(&mut self, account: &AccountRef) -> Result<String, StoreError> {
        match account {
            AccountRef::Org(org_id, kind) => Ok(account_id(org_id, *kind)),
            AccountRef::Operator(kind) => self.operator_account(*kind),
        }
    }

    fn operator_account(&mut self, kind: AccountKind) -> Result<String, StoreError> {
        let op = self
            .operator_org_id()?
            .ok_or_else(|| StoreError::Database("the exchange has no operator org".into()))?;
        Ok(account_id(&op, kind))
    }

    /// Refuses `external_ref` when one of `org_id`'s deposits or withdrawals already used it
    /// (compared ignoring case): an operator reconciles bank statements by that reference, so a
    /// payment is recorded once. Retrying a request is what the idempotency key is for.
    /// The transfer one of `org_id`'s deposits or withdrawals recorded under `external_ref`
    /// (compared ignoring case), if any.
    fn recorded_external_ref(
        &mut self,
        org_id: &str,
        external_ref: &str,
    ) -> Result<Option<String>, StoreError> {
        let rows = self.b.query(
            "SELECT transfer_id FROM external_refs WHERE org_id = $1 AND ref_key = $2",
            &[
                org_id.into(),
                crate::schema::external_ref_key(external_ref).into(),
            ],
        )?;
        rows.first().map(|r| r.str(0)).transpose()
    }

    /// Records a deposit or a withdrawal as [`money::decide_payment`] decides it.
    fn payment(
        &mut self,
        org_id: &str,
        payment: Payment,
        amount: u64,
        external_ref: &str,
        now_ms: i64,
    ) -> Result<TransferRow, StoreError> {
        let org = match self.get_org(org_id) {
            Ok(org) => Some(org),
            Err(StoreError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let recorded = match &org {
            Some(_) => self.recorded_external_ref(org_id, external_ref)?,
            None => None,
        };
        let plan = money::decide_payment(
            org.as_ref().map(|o| o.id.as_str()),
            payment,
            amount,
            external_ref,
            recorded.as_deref(),
        )?;
        let (debit, credit) = (
            self.account_of(&plan.debit)?,
            self.account_of(&plan.credit)?,
        );
        let t = self.transfer(
            plan.kind,
            &debit,
            &credit,
            plan.amount_micros,
            None,
            None,
            Some(external_ref),
            now_ms,
        )?;
        self.keep_external_ref(org_id, external_ref, &t.id)?;
        Ok(t)
    }

    fn keep_external_ref(
        &mut self,
        org_id: &str,
        external_ref: &str,
        transfer_id: &str,
    ) -> Result<(), StoreError> {
        self.b.execute(
            "INSERT INTO external_refs (org_id, ref_key, transfer_id) VALUES ($1, $2, $3)",
            &[
                org_id.into(),
                crate::schema::external_ref_key(external_ref).into(),
                transfer_id.into(),
            ],
        )?;
        Ok(())
    }

    /// Records money received for `org_id` from outside: external → available. The reference
    /// must be new for the org (see [`Tx::check_external_ref`]).
    pub fn deposit(
        &mut self,
        org_id: &str,
        amount: u64,
        external_ref: &str,
        now_ms: i64,
    ) -> Result<TransferRow, StoreError> {
        self.payment(org_id, Payment::Deposit, amount, external_ref, now_ms)
    }

    pub fn withdraw(
        &mut self,
        org_id: &str,
        source: AccountKind,
        amount: u64,
        external_ref: &str,
        now_ms: i64,
    ) -> Result<TransferRow, StoreError> {
        self.payment(
            org_id,
            Payment::Withdrawal { source },
            amount,
            external_ref,
            now_ms,
        )
    }

    pub fn accounts_of(&mut self, org_id: &str) -> Result<Vec<AccountRow>, StoreError> {
        self.flush_ledger()?;
        let rows = self.b.query(
            "SELECT id, org_id, kind, debits_micros, credits_micros FROM accounts WHERE org_id = $1 ORDER BY id",
            &[org_id.into()],
        )?;
        rows.iter()
            .map(account_row)
            .collect::<Result<_, StoreError>>()
    }

    /// Movements on `org_id`'s accounts after ledger position `after`, oldest first.
    pub fn statement(
        &mut self,
        org_id: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<TransferRow>, StoreError> {
        self.flush_ledger()?;
        let rows = self.b.query(
            &format!(
                "SELECT {TRANSFER_COLS} FROM transfers WHERE seq IN (\
                 SELECT seq FROM postings WHERE org_id = $1 AND seq > $2 ORDER BY seq LIMIT $3) \
                 ORDER BY seq"
            ),
            &[org_id.into(), after.into(), i64::from(limit).into()],
        )?;
        rows.iter()
            .map(transfer_row)
            .collect::<Result<_, StoreError>>()
    }

    /// Reads everything the invariant checker needs, in one consistent view when called inside a
    /// transaction.
    /// Every account's totals and every hold.
    fn ledger_balances(&mut self) -> Result<(Vec<AccountTotals>, Vec<HoldTotals>), StoreError> {
        self.flush_ledger()?;
        let accounts = self
            .b
            .query(
                "SELECT id, org_id, kind, debits_micros, credits_micros FROM accounts ORDER BY id",
                &[],
            )?
            .iter()
            .map(|r| {
                let a = account_row(r)?;
                Ok(AccountTotals {
                    account_id: a.id,
                    org_id: a.org_id,
                    kind: a.kind,
                    debits_micros: a.debits_micros,
                    credits_micros: a.credits_micros,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        let holds = self
            .b
            .query(
                "SELECT id, org_id, amount_micros, state, resolutions FROM holds ORDER BY id",
                &[],
            )?
            .iter()
            .map(|r| {
                Ok((
                    r.str(0)?,
                    r.str(1)?,
                    r.u64(2)?,
                    r.parsed(3, HoldState::parse)?,
                    r.u64(4)?,
                ))
            })
            .collect::<Result<_, StoreError>>()?;
        Ok((accounts, holds))
    }

    /// The ledger invariants that need only the accounts and the holds (see
    /// [`suanli_core::ledger::check_balances`]): cheap enough to run after every step of a
    /// simulation, where [`Tx::check_ledger`] also reads every transfer.
    pub fn check_balances(&mut self) -> Result<Vec<String>, StoreError> {
        let (accounts, holds) = self.ledger_balances()?;
        Ok(check_balances(&accounts, &holds))
    }

    pub fn ledger_snapshot(&mut self) -> Result<LedgerSnapshot, StoreError> {
        let (accounts, holds) = self.ledger_balances()?;
        let sum = self.b.query(
            "SELECT CAST(COALESCE(SUM(amount_micros), 0) AS BIGINT) FROM transfers",
            &[],
        )?;
        // From the transfers alone, in one pass over each side, not through the postings the
        // statement uses: the postings are checked against the transfers below.
        let recomputed = self
            .b
            .query(
                "SELECT a.id, CAST(COALESCE(d.s, 0) AS BIGINT), CAST(COALESCE(c.s, 0) AS BIGINT) \
                 FROM accounts a \
                 LEFT JOIN (SELECT debit_account_id AS id, SUM(amount_micros) AS s FROM transfers \
                 GROUP BY debit_account_id) d ON d.id = a.id \
                 LEFT JOIN (SELECT credit_account_id AS id, SUM(amount_micros) AS s FROM transfers \
                 GROUP BY credit_account_id) c ON c.id = a.id \
                 ORDER BY a.id",
                &[],
            )?
            .iter()
            .map(|r| Ok((r.str(0)?, u128::from(r.u64(1)?), u128::from(r.u64(2)?))))
            .collect::<Result<_, StoreError>>()?;
        let postings = self.b.query(
            "SELECT \
             (SELECT COUNT(*) FROM transfers t \
              JOIN accounts d ON d.id = t.debit_account_id JOIN accounts c ON c.id = t.credit_account_id \
              WHERE NOT EXISTS (SELECT 1 FROM postings p WHERE p.org_id = d.org_id AND p.seq = t.seq) \
              OR NOT EXISTS (SELECT 1 FROM postings p WHERE p.org_id = c.org_id AND p.seq = t.seq)), \
             (SELECT COUNT(*) FROM postings p WHERE NOT EXISTS (SELECT 1 FROM transfers t \
              JOIN accounts d ON d.id = t.debit_account_id JOIN accounts c ON c.id = t.credit_account_id \
              WHERE t.seq = p.seq AND (d.org_id = p.org_id OR c.org_id = p.org_id)))",
            &[],
        )?;
        Ok(LedgerSnapshot {
            accounts,
            holds,
            transfer_amount_sum: sum
                .first()
                .map(|r| Ok::<_, StoreError>(u128::from(r.u64(0)?)))
                .transpose()?
                .unwrap_or(0),
            recomputed,
            transfers_without_postings: postings
                .first()
                .map(|r| r.u64(0))
                .transpose()?
                .unwrap_or(0),
            postings_without_transfer: postings.first().map(|r| r.u64(1)).transpose()?.unwrap_or(0),
        })
    }

    /// Runs the ledger invariant checker over the current state.
    pub fn check_ledger(&mut self) -> Result<Vec<String>, StoreError> {
        Ok(check_invariants(&self.ledger_snapshot()?))
    }

    pub fn count(&mut self, table: &'static str) -> Result<u64, StoreError> {
        self.flush_ledger()?;
        let rows = self
            .b
            .query(&format!("SELECT COUNT(*) FROM {table}"), &[])?;
        Ok(rows.first().map(|r| r.u64(0)).transpose()?.unwrap_or(0))
    }

    // ---------------------------------------------------------------- purchase and settlement

    /// Buys `units` of an offer: hold, capacity and lease in one step, or nothing.
    pub fn purchase(&mut self, p: &Purchase) -> Result<LeaseRow, StoreError> {
        let org = self.get_org(&p.consumer_org_id)?;
        // The offer's terms, and whether an agent serves its pool: pools an agent serves bill the
        // signed usage of the jobs run on them.
        let terms = match self.purchase_terms(&p.offer_id) {
            Err(StoreError::NotFound(_)) => None,
            other => Some(other?),
        };
        let snapshot = terms.as_ref().map(|(offer, agent_served)| OfferSnapshot {
            state: offer.state,
            valid_from_ms: offer.valid_from_ms,
            valid_until_ms: offer.valid_until_ms,
            min_units: offer.min_units,
            max_units: offer.max_units,
            price_micros_per_unit_hour: offer.price_micros_per_unit_hour,
            agent_served: *agent_served,
        });
        let command = PurchaseCommand {
            units: p.units,
            duration_limit_s: p.duration_limit_s,
            max_price_micros_per_unit_hour: p.max_price_micros_per_unit_hour,
        };
        let plan = purchase::decide((&org.id, org.kind), snapshot.as_ref(), &command, p.now_ms)?;
        let Some((offer, _)) = terms else {
            unreachable!("the decision refuses a purchase of no offer")
        };
        let hold_micros = plan.hold_micros;
        let (shape, qualifier) = (offer.shape(), offer.class.qualifier.as_deref());
        let allocations = match self.kept_free_nodes(&offer.pool_id)? {
            // The writer on SQLite: the pool's free capacity as this transaction keeps it.
            Some(nodes) => purchase::place_units(nodes, &shape, qualifier, p.units)?,
            None => {
                // Usually one node takes the whole lease: ask the database for the best such
                // node instead of reading every node of the pool; otherwise spread over several.
                let nodes =
                    match self.best_single_node(&offer.pool_id, &shape, qualifier, p.units)? {
                        Some(node) => vec![node],
                        None => self.nodes_with_room(&offer.pool_id, shape.per_unit())?,
                    };
                purchase::place_units(&nodes, &shape, qualifier, p.units)?
            }
        };
        // Capacity first (in node order, the same order every writer uses), then money.
        for a in &allocations {
            let n = self.b.execute(
                "UPDATE nodes SET cpus_reserved = cpus_reserved + $2, \
                 memory_mib_reserved = memory_mib_reserved + $3, \
                 accelerators_reserved = accelerators_reserved + $4 \
                 WHERE id = $1 AND cpus_reserved + $2 <= cpus AND memory_mib_reserved + $3 <= memory_mib \
                 AND accelerators_reserved + $4 <= accelerators",
                &[
                    (&a.node_id).into(),
                    int(a.taken.cpus)?,
                    int(a.taken.memory_mib)?,
                    int(a.taken.accelerators)?,
                ],
            )?;
            if n != 1 {
                return Err(StoreError::CapacityUnavailable);
            }
        }
        self.reserved_on(&offer.pool_id, &allocations);
        let lease_id = new_id("lease");
        let hold_id = new_id("hold");
        let (from, to) = (
            self.account_of(&plan.hold_from)?,
            self.account_of(&plan.hold_to)?,
        );
        self.transfer(
            TransferKind::Hold,
            &from,
            &to,
            hold_micros,
            Some(&hold_id),
            Some(&lease_id),
            None,
            p.now_ms,
        )?;
        self.b.execute(
            "INSERT INTO holds (id, org_id, amount_micros, state, created_ms) VALUES ($1, $2, $3, 'pending', $4)",
            &[(&hold_id).into(), (&org.id).into(), int(hold_micros)?, p.now_ms.into()],
        )?;
        let terms = plan.terms;
        self.b.execute(
            "INSERT INTO leases (id, consumer_org_id, provider_org_id, offer_id, pool_id, category, qualifier, \
             zone, units, price_micros_per_unit_hour, fee_bps, duration_limit_s, started_ms, ends_ms, state, hold_id, \
             billing, auto_end) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 'active', $15, $16, $17)",
            &[
                (&lease_id).into(),
                (&org.id).into(),
                (&offer.org_id).into(),
                (&offer.id).into(),
                (&offer.pool_id).into(),
                offer.class.category.as_str().into(),
                offer.class.qualifier.clone().into(),
                (&offer.zone).into(),
                int(p.units)?,
                int(offer.price_micros_per_unit_hour)?,
                i64::from(p.fee_bps).into(),
                int(p.duration_limit_s)?,
                p.now_ms.into(),
                terms.ends_at_ms().into(),
                (&hold_id).into(),
                plan.billing.as_str().into(),
                i64::from(p.auto_end).into(),
            ],
        )?;
        for a in &allocations {
            self.b.execute(
                "INSERT INTO lease_allocations (lease_id, node_id, units, cpus, memory_mib, accelerators) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    (&lease_id).into(),
                    (&a.node_id).into(),
                    int(a.units)?,
                    int(a.taken.cpus)?,
                    int(a.taken.memory_mib)?,
                    int(a.taken.accelerators)?,
                ],
            )?;
        }
        self.dirty_pools.insert(offer.pool_id.clone());
        // The lease as `get_lease` would read it back (a conformance test checks they agree),
        // without reading it back.
        Ok(LeaseRow {
            id: lease_id,
            consumer_org_id: org.id.clone(),
            provider_org_id: offer.org_id.clone(),
            offer_id: offer.id.clone(),
            pool_id: offer.pool_id.clone(),
            class: offer.class.clone(),
            zone: offer.zone.clone(),
            units: p.units,
            price_micros_per_unit_hour: offer.price_micros_per_unit_hour,
            fee_bps: p.fee_bps,
            duration_limit_s: p.duration_limit_s,
            started_ms: p.now_ms,
            ends_ms: terms.ends_at_ms(),
            state: LeaseState::Active,
            hold: HoldRow {
                id: hold_id,
                org_id: org.id,
                amount_micros: hold_micros,
                state: HoldState::Pending,
                posted_micros: 0,
            },
            ended_ms: None,
            billed_unit_ms: None,
            cost_micros: None,
            fee_micros: None,
            billing: plan.billing,
            auto_end: p.auto_end,
            metered_unit_ms: 0,
            allocations: allocations
                .iter()
                .map(|a| (a.node_id.clone(), a.units))
                .collect(),
        })
    }

    /// A lease; with `org_id`, only if that org bought or sold it.
    pub fn get_lease(
        &mut self,
        org_id: Option<&str>,
        lease_id: &str,
    ) -> Result<LeaseRow, StoreError> {
        let rows = self.b.query(
            &format!("SELECT {LEASE_COLS} FROM leases l JOIN holds h ON h.id = l.hold_id WHERE l.id = $1"),
            &[lease_id.into()],
        )?;
        let mut lease = rows
            .first()
            .map(lease_row)
            .transpose()?
            .ok_or(StoreError::NotFound("lease"))?;
        if let Some(org) = org_id {
            if lease.consumer_org_id != org && lease.provider_org_id != org {
                return Err(StoreError::NotFound("lease"));
            }
        }
        lease.allocations = self
            .b
            .query(
                "SELECT node_id, units FROM lease_allocations WHERE lease_id = $1 ORDER BY node_id",
                &[lease_id.into()],
            )?
            .iter()
            .map(|r| Ok((r.str(0)?, r.u64(1)?)))
            .collect::<Result<_, StoreError>>()?;
        Ok(lease)
    }

    /// Leases bought (`consumer`), sold (`provider`) or both (`None`) by an org, newest first:
    /// a consumer's in the order it bought them (its holds' ledger positions), a provider's by
    /// their start, then id. An org is a consumer or a provider, never both, so `None` lists one
    /// side.
    ///
    /// A consumer's leases are those of the hold transfers into its `held` account, found through
    /// its postings from the newest (see migration 6): no index on the lease's consumer, which
    /// cost every purchase a dirty page.
    pub fn list_leases(
        &mut self,
        org_id: &str,
        side: Option<&str>,
        state: Option<&str>,
        limit: u32,
    ) -> Result<Vec<LeaseRow>, StoreError> {
        let state = state.unwrap_or("");
        let mut rows = Vec::new();
        if side != Some("provider") {
            self.flush_ledger()?;
            let held = account_id(org_id, AccountKind::Held);
            rows = self.b.query(
                &format!(
                    "SELECT {LEASE_COLS} FROM postings p JOIN transfers t ON t.seq = p.seq \
                     JOIN leases l ON l.id = t.lease_id JOIN holds h ON h.id = l.hold_id \
                     WHERE p.org_id = $1 AND t.kind = 'hold' AND t.credit_account_id = $4 \
                     AND l.consumer_org_id = $1 AND ($2 = '' OR l.state = $2) \
                     ORDER BY p.seq DESC LIMIT $3"
                ),
                &[
                    org_id.into(),
                    state.into(),
                    i64::from(limit).into(),
                    held.as_str().into(),
                ],
            )?;
        }
        if side != Some("consumer") && rows.len() < limit as usize {
            let left = limit as usize - rows.len();
            rows.extend(self.b.query(
                &format!(
                    "SELECT {LEASE_COLS} FROM leases l JOIN holds h ON h.id = l.hold_id \
                     WHERE l.provider_org_id = $1 AND ($2 = '' OR l.state = $2) \
                     ORDER BY l.started_ms DESC, l.id LIMIT $3"
                ),
                &[org_id.into(), state.into(), (left as i64).into()],
            )?);
        }
        let mut leases: Vec<LeaseRow> = rows
            .iter()
            .map(lease_row)
            .collect::<Result<_, StoreError>>()?;
        for l in &mut leases {
            l.allocations = self
                .b
                .query(
                    "SELECT node_id, units FROM lease_allocations WHERE lease_id = $1 ORDER BY node_id",
                    &[(&l.id).into()],
                )?
                .iter()
                .map(|r| Ok((r.str(0)?, r.u64(1)?)))
                .collect::<Result<_, StoreError>>()?;
        }
        Ok(leases)
    }

    /// Active leases whose duration limit has passed at `now_ms`.
    pub fn due_leases(&mut self, now_ms: i64, limit: u32) -> Result<Vec<String>, StoreError> {
        let rows = self.b.query(
            "SELECT id FROM leases WHERE state = 'active' AND ends_ms <= $1 ORDER BY ends_ms, id LIMIT $2",
            &[now_ms.into(), i64::from(limit).into()],
        )?;
        rows.iter()
            .map(|r| r.str(0))
            .collect::<Result<_, StoreError>>()
    }

    /// Ends a lease and settles it, exactly once: the state change is conditional on the lease being
    /// active, so a retry or a racing expiry finds it ended and changes nothing.
    /// `org_id` is the consumer ending it; `None` for the expiry service.
    pub fn end_lease(
        &mut self,
        org_id: Option<&str>,
        lease_id: &str,
        reason: EndReason,
        now_ms: i64,
    ) -> Result<LeaseRow, StoreError> {
        let lease = self.get_lease(None, lease_id)?;
        let snapshot = LeaseSnapshot {
            consumer_org_id: lease.consumer_org_id.clone(),
            provider_org_id: lease.provider_org_id.clone(),
            state: lease.state,
            terms: LeaseTerms {
                units: lease.units,
                price_micros_per_unit_hour: lease.price_micros_per_unit_hour,
                duration_limit_s: lease.duration_limit_s,
                started_ms: lease.started_ms,
                hold_micros: lease.hold.amount_micros,
            },
            fee_bps: lease.fee_bps,
            billing: lease.billing,
            metered_unit_ms: lease.metered_unit_ms,
        };
        let plan = settle::decide_end(&snapshot, org_id, reason, now_ms)?;
        if plan.cancel_jobs {
            self.cancel_jobs_of_lease(lease_id, "the lease ended", now_ms)?;
        }
        let (s, billed_unit_ms, ended_ms) = (plan.settlement, plan.billed_unit_ms, plan.ended_ms);
        let n = self.b.execute(
            "UPDATE leases SET state = $2, ended_ms = $3, billed_unit_ms = $4, cost_micros = $5, fee_micros = $6 \
             WHERE id = $1 AND state = 'active'",
            &[
                lease_id.into(),
                plan.state.as_str().into(),
                ended_ms.into(),
                int(billed_unit_ms)?,
                int(s.cost_micros)?,
                int(s.fee_micros)?,
            ],
        )?;
        if n != 1 {
            return Err(StoreError::LeaseNotActive("ended".into()));
        }
        let n = self.b.execute(
            "UPDATE holds SET state = $2, posted_micros = $3, resolutions = resolutions + 1, resolved_ms = $4 \
             WHERE id = $1 AND state = 'pending'",
            &[(&lease.hold.id).into(), s.hold_state().as_str().into(), int(s.cost_micros)?, now_ms.into()],
        )?;
        if n != 1 {
            return Err(StoreError::Database(format!(
                "hold {} of an active lease is not pending",
                lease.hold.id
            )));
        }
        // Capacity back to the pool, in node order.
        let allocs = self.b.query(
            "SELECT node_id, cpus, memory_mib, accelerators FROM lease_allocations WHERE lease_id = $1 ORDER BY node_id",
            &[lease_id.into()],
        )?;
        for a in &allocs {
            self.b.execute(
                "UPDATE nodes SET cpus_reserved = cpus_reserved - $2, memory_mib_reserved = memory_mib_reserved - $3, \
                 accelerators_reserved = accelerators_reserved - $4 WHERE id = $1",
                &[a.0[0].clone(), a.0[1].clone(), a.0[2].clone(), a.0[3].clone()],
            )?;
        }
        self.nodes_changed(&lease.pool_id);
        for leg in &plan.legs {
            let (debit, credit) = (self.account_of(&leg.debit)?, self.account_of(&leg.credit)?);
            self.transfer(
                leg.kind,
                &debit,
                &credit,
                leg.amount_micros,
                Some(&lease.hold.id),
                Some(lease_id),
                None,
                now_ms,
            )?;
        }
        self.dirty_pools.insert(lease.pool_id.clone());
        self.get_lease(None, lease_id)
    }

    // ---------------------------------------------------------------- idempotency

    pub fn idempotent_response(
        &mut self,
        org_id: &str,
        key: &str,
    ) -> Result<Option<StoredResponse>, StoreError> {
        let rows = self.b.query(
            "SELECT request_sha256, status, body FROM idempotency_keys WHERE org_id = $1 AND idempotency_key = $2",
            &[org_id.into(), key.into()],
        )?;
        rows.first()
            .map(|r| {
                Ok(StoredResponse {
                    request_sha256: r.str(0)?,
                    status: u16::try_from(r.u64(1)?).map_err(|_| {
                        StoreError::Corrupt("a stored response's status is not a status".into())
                    })?,
                    body: r.str(2)?,
                })
            })
            .transpose()
    }

    pub fn store_idempotent_response(
        &mut self,
        org_id: &str,
        key: &str,
        response: &StoredResponse,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.b.execute(
            "INSERT INTO idempotency_keys (org_id, idempotency_key, request_sha256, status, body, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                org_id.into(),
                key.into(),
                (&response.request_sha256).into(),
                i64::from(response.status).into(),
                (&response.body).into(),
                now_ms.into(),
            ],
        )?;
        Ok(())
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
