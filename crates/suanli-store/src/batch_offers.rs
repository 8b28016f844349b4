//! The terms of the offers a write transaction sells from, read once per transaction.
//!
//! Every purchase reads its offer's terms (offers joined with their pool and provider) and
//! whether an agent serves the offer's pool (its leases are then metered): two statements, ~6 %
//! of the writer's time in the purchase benchmark, where a batch's purchases all buy from one
//! offer. On SQLite the writer's transaction holds the database's one write lock, so nobody else
//! changes an offer while it runs: the first purchase from an offer in a transaction reads them,
//! and the purchases after it in the same batch use that copy. Every write that could change a
//! copy drops all of them: withdrawing an offer, registering an agent, and any rollback (new
//! offers and pools are in no copy yet; pools, orgs and agents are never deleted, and no offer
//! term but its state is ever updated).
//!
//! On PostgreSQL other exchange processes may withdraw an offer while the transaction runs, so
//! there each purchase reads them and nothing is kept.

use std::collections::HashMap;

use crate::database::StoreError;
use crate::ops::{OfferRow, Tx};

/// Offer terms and "an agent serves the pool", by offer id, as this transaction read them.
#[derive(Debug, Default)]
pub struct OfferTerms {
    offers: HashMap<String, (OfferRow, bool)>,
}

impl OfferTerms {
    /// Forgets every offer: the transaction was rolled back, or another process may have written
    /// (see `BatchMemory`).
    pub fn clear(&mut self) {
        self.offers.clear();
    }

    /// Offers whose terms are kept.
    pub(crate) fn kept(&self) -> usize {
        self.offers.len()
    }
}

impl Tx<'_> {
    /// The terms of `offer_id` and whether an agent serves its pool; kept for the rest of the
    /// transaction where that is sound (see the module documentation).
    pub(crate) fn purchase_terms(
        &mut self,
        offer_id: &str,
    ) -> Result<(OfferRow, bool), StoreError> {
        if let Some(kept) = self.kept_offers().and_then(|c| c.offers.get(offer_id)) {
            return Ok(kept.clone());
        }
        let offer = self.offer_terms(offer_id)?;
        let metered = self.pool_has_agent(&offer.pool_id)?;
        if let Some(kept) = self.kept_offers() {
            kept.offers
                .insert(offer_id.to_owned(), (offer.clone(), metered));
        }
        Ok((offer, metered))
    }

    /// Where this transaction keeps offer terms: only the writer's, only on SQLite.
    fn kept_offers(&mut self) -> Option<&mut OfferTerms> {
        if self.b.kind() != "sqlite" {
            return None;
        }
        self.memory.offer_terms()
    }

    /// Drops every kept offer: an offer was withdrawn or an agent registered.
    pub(crate) fn offers_changed(&mut self) {
        if let Some(cache) = self.memory.offer_terms() {
            cache.clear();
        }
    }
}
