//! Purchases, leases and their settlement: load, decide in the core, apply.

use super::*;

impl Tx<'_> {
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
}
