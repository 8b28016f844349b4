//! The free capacity of the pools a write transaction places leases on, read once per transaction.
//!
//! A purchase places its units with [`suanli_core::resource::place`] over the free capacity of
//! its pool's nodes. On SQLite the writer's transaction holds the database's one write lock, so
//! nobody else changes a node while it runs: the first purchase on a pool in a transaction reads
//! every node's free capacity once, and the purchases after it in the same batch place on that
//! copy, which each reservation keeps exact. (Read per purchase, that scan of the pool was a
//! quarter of the writer's time in the purchase benchmark.) Every other write to a pool's nodes —
//! a lease's end returning capacity, an agent's capacity report, a new pool — drops the pool's
//! copy, as does any rollback. The conditional reservation `UPDATE` still guards every
//! reservation.
//!
//! On PostgreSQL other exchange processes may change a node while the transaction runs (nodes
//! are locked only by the reservation itself), so there each purchase asks the database for its
//! node ([`Tx::best_single_node`]) and nothing is kept.

use std::collections::HashMap;

use suanli_core::resource::{Allocation, NodeFree};

use crate::database::StoreError;
use crate::ops::Tx;

/// Free capacity by pool, as this transaction last read or changed it.
#[derive(Debug, Default)]
pub struct FreeNodes {
    pools: HashMap<String, Vec<NodeFree>>,
}

impl FreeNodes {
    /// Forgets every pool: the transaction was rolled back, or another process may have written
    /// (see `BatchMemory`).
    pub fn clear(&mut self) {
        self.pools.clear();
    }

    /// Pools whose free capacity is kept.
    pub(crate) fn kept(&self) -> usize {
        self.pools.len()
    }
}

impl Tx<'_> {
    /// The free capacity of every node of `pool_id`, read on the first use in the transaction;
    /// `None` where none is kept (on PostgreSQL, and outside the writer's transactions; see the
    /// module documentation).
    pub(crate) fn kept_free_nodes(
        &mut self,
        pool_id: &str,
    ) -> Result<Option<&[NodeFree]>, StoreError> {
        if self.b.kind() != "sqlite" {
            return Ok(None);
        }
        let Some(cache) = self.memory.free_nodes() else {
            return Ok(None);
        };
        if !cache.pools.contains_key(pool_id) {
            let nodes = self.b.query(
                "SELECT id, accelerator_model, partition_name, cpus - cpus_reserved, \
                 memory_mib - memory_mib_reserved, accelerators - accelerators_reserved \
                 FROM nodes WHERE pool_id = $1",
                &[pool_id.into()],
            )?;
            cache.pools.insert(
                pool_id.to_owned(),
                nodes
                    .iter()
                    .map(crate::ops::node_free)
                    .collect::<Result<_, StoreError>>()?,
            );
        }
        Ok(Some(&cache.pools[pool_id]))
    }

    /// A copy of the kept free capacity of `pool_id`, if the transaction read it (nothing is
    /// read here).
    pub(crate) fn kept_free_nodes_if_read(&mut self, pool_id: &str) -> Option<Vec<NodeFree>> {
        self.memory
            .free_nodes()
            .and_then(|c| c.pools.get(pool_id))
            .cloned()
    }

    /// Takes reserved `allocations` off the kept free capacity of `pool_id`.
    pub(crate) fn reserved_on(&mut self, pool_id: &str, allocations: &[Allocation]) {
        let Some(nodes) = self
            .memory
            .free_nodes()
            .and_then(|c| c.pools.get_mut(pool_id))
        else {
            return;
        };
        for a in allocations {
            if let Some(n) = nodes.iter_mut().find(|n| n.node_id == a.node_id) {
                n.free.cpus = n.free.cpus.saturating_sub(a.taken.cpus);
                n.free.memory_mib = n.free.memory_mib.saturating_sub(a.taken.memory_mib);
                n.free.accelerators = n.free.accelerators.saturating_sub(a.taken.accelerators);
            }
        }
    }

    /// Drops the kept free capacity of `pool_id`: its nodes changed otherwise than by a purchase.
    pub(crate) fn nodes_changed(&mut self, pool_id: &str) {
        if let Some(cache) = self.memory.free_nodes() {
            cache.pools.remove(pool_id);
        }
    }
}
