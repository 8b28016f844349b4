//! Pools, nodes and offers, with their availability.

use super::*;
use suanli_core::decide::pool;

impl Tx<'_> {
    // ---------------------------------------------------------------- pools and offers

    /// Registers a pool of `org_id` with its nodes ([`pool::decide_create_pool`]: no two share a
    /// name; the unique index on a pool's node names is the backstop).
    pub fn create_pool(
        &mut self,
        org_id: &str,
        name: &str,
        zone: &str,
        nodes: &[NewNode],
        now_ms: i64,
    ) -> Result<PoolRow, StoreError> {
        pool::decide_create_pool(nodes.iter().map(|n| n.name.as_str()))?;
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
            )?;
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

    pub(super) fn with_availability(
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
}
