//! Quotes: which live offers meet a consumer's requirements, ranked by total price, and why the
//! others were excluded. The [`OfferBook`] indexes offers by resource class so that a quote only
//! scans the offers of the classes it asks for.

use std::collections::{BTreeMap, HashMap};

use crate::money::{cost_micros, Overflow};
use crate::resource::{Category, ResourceClass, UnitShape};

/// An offer as the quote sees it: terms plus the units its pool can still supply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferView {
    pub offer_id: String,
    pub provider_org_id: String,
    /// The provider's name, for people reading a quote.
    pub provider_name: String,
    pub pool_id: String,
    pub zone: String,
    pub class: ResourceClass,
    pub shape: UnitShape,
    /// Memory of one accelerator, 0 for offers without accelerators.
    pub accelerator_memory_gib: u32,
    pub price_micros_per_unit_hour: u64,
    pub min_units: u64,
    pub max_units: u64,
    pub valid_from_ms: i64,
    pub valid_until_ms: i64,
    pub units_available: u64,
    pub created_ms: i64,
}

/// What a consumer needs. `units` counts the category's unit: vCPUs, accelerators or cores.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Requirements {
    pub category: Option<Category>,
    /// Accelerator model or partition; `None` accepts any.
    pub qualifier: Option<String>,
    pub units: u64,
    pub min_accelerator_memory_gib: Option<u32>,
    /// Total CPUs the lease must bring (for accelerator leases: across all accelerators).
    pub cpus: Option<u64>,
    /// Total memory the lease must bring.
    pub memory_mib: Option<u64>,
    pub zone: Option<String>,
    pub max_price_micros_per_unit_hour: Option<u64>,
    pub duration_s: u64,
}

/// Why an offer was not proposed. Checked in this order; the first that applies is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExclusionReason {
    Category,
    Model,
    Zone,
    NotValidNow,
    AcceleratorMemory,
    Price,
    UnitsOutOfRange,
    Cpus,
    Memory,
    Capacity,
}

impl ExclusionReason {
    pub const ALL: [ExclusionReason; 10] = [
        ExclusionReason::Category,
        ExclusionReason::Model,
        ExclusionReason::Zone,
        ExclusionReason::NotValidNow,
        ExclusionReason::AcceleratorMemory,
        ExclusionReason::Price,
        ExclusionReason::UnitsOutOfRange,
        ExclusionReason::Cpus,
        ExclusionReason::Memory,
        ExclusionReason::Capacity,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ExclusionReason::Category => "category",
            ExclusionReason::Model => "model",
            ExclusionReason::Zone => "zone",
            ExclusionReason::NotValidNow => "not_valid_now",
            ExclusionReason::AcceleratorMemory => "accelerator_memory",
            ExclusionReason::Price => "price",
            ExclusionReason::UnitsOutOfRange => "units_out_of_range",
            ExclusionReason::Cpus => "cpus",
            ExclusionReason::Memory => "memory",
            ExclusionReason::Capacity => "capacity",
        }
    }
}

/// One feasible offer with its price for the requested units and duration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub offer_index: usize,
    pub total_micros: u64,
}

/// The answer to a quote: feasible offers cheapest first, then excluded offers with reasons.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QuoteOutcome {
    pub candidates: Vec<Candidate>,
    /// Excluded offers (index, reason), at most the requested limit, matching classes first.
    pub excluded: Vec<(usize, ExclusionReason)>,
    /// Every excluded offer counted by reason, also those beyond the limit.
    pub excluded_counts: BTreeMap<ExclusionReason, u64>,
}

/// Invalid requirements.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequirementsError {
    #[error("units must be at least 1")]
    ZeroUnits,
    #[error("duration must be at least 1 second")]
    ZeroDuration,
    #[error("the price of this request overflows")]
    Overflow,
}

impl From<Overflow> for RequirementsError {
    fn from(_: Overflow) -> Self {
        RequirementsError::Overflow
    }
}

/// Checks `offer` against `req` at `now_ms`; `None` when it is feasible.
pub fn exclusion(offer: &OfferView, req: &Requirements, now_ms: i64) -> Option<ExclusionReason> {
    if req.category.is_some_and(|c| c != offer.class.category) {
        return Some(ExclusionReason::Category);
    }
    if let Some(q) = &req.qualifier {
        if offer.class.qualifier.as_deref() != Some(q.as_str()) {
            return Some(ExclusionReason::Model);
        }
    }
    if let Some(z) = &req.zone {
        if &offer.zone != z {
            return Some(ExclusionReason::Zone);
        }
    }
    if now_ms < offer.valid_from_ms || now_ms >= offer.valid_until_ms {
        return Some(ExclusionReason::NotValidNow);
    }
    if let Some(m) = req.min_accelerator_memory_gib {
        if offer.accelerator_memory_gib < m {
            return Some(ExclusionReason::AcceleratorMemory);
        }
    }
    if let Some(p) = req.max_price_micros_per_unit_hour {
        if offer.price_micros_per_unit_hour > p {
            return Some(ExclusionReason::Price);
        }
    }
    if req.units < offer.min_units || req.units > offer.max_units {
        return Some(ExclusionReason::UnitsOutOfRange);
    }
    if let Some(c) = req.cpus {
        if offer.shape.cpus_per_unit.saturating_mul(req.units) < c {
            return Some(ExclusionReason::Cpus);
        }
    }
    if let Some(m) = req.memory_mib {
        if offer.shape.memory_mib_per_unit.saturating_mul(req.units) < m {
            return Some(ExclusionReason::Memory);
        }
    }
    if offer.units_available < req.units {
        return Some(ExclusionReason::Capacity);
    }
    None
}

type ClassKey = (Category, String);

fn class_key(class: &ResourceClass) -> ClassKey {
    (class.category, class.qualifier.clone().unwrap_or_default())
}

/// Live offers indexed by resource class.
#[derive(Debug, Default, Clone)]
pub struct OfferBook {
    offers: Vec<OfferView>,
    live: Vec<bool>,
    position: HashMap<String, usize>,
    buckets: BTreeMap<ClassKey, Vec<usize>>,
    live_count: usize,
}

impl OfferBook {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.live_count
    }

    pub fn is_empty(&self) -> bool {
        self.live_count == 0
    }

    pub fn offer(&self, index: usize) -> &OfferView {
        &self.offers[index]
    }

    pub fn get(&self, offer_id: &str) -> Option<&OfferView> {
        let i = *self.position.get(offer_id)?;
        self.live[i].then(|| &self.offers[i])
    }

    /// Inserts an offer or replaces its terms and availability.
    pub fn upsert(&mut self, offer: OfferView) {
        if let Some(&i) = self.position.get(&offer.offer_id) {
            if class_key(&self.offers[i].class) == class_key(&offer.class) {
                if !self.live[i] {
                    self.live[i] = true;
                    self.live_count += 1;
                }
                self.offers[i] = offer;
                return;
            }
            self.remove(&offer.offer_id);
            self.position.remove(&offer.offer_id);
        }
        let i = self.offers.len();
        self.buckets
            .entry(class_key(&offer.class))
            .or_default()
            .push(i);
        self.position.insert(offer.offer_id.clone(), i);
        self.offers.push(offer);
        self.live.push(true);
        self.live_count += 1;
    }

    /// Every live offer, in insertion order.
    pub fn live(&self) -> impl Iterator<Item = &OfferView> {
        self.offers
            .iter()
            .zip(&self.live)
            .filter(|(_, live)| **live)
            .map(|(o, _)| o)
    }

    /// Sets the units available of one offer, if it is in the book.
    pub fn set_units_available(&mut self, offer_id: &str, units: u64) {
        if let Some(&i) = self.position.get(offer_id) {
            self.offers[i].units_available = units;
        }
    }

    /// Takes an offer out of the book (withdrawn or expired).
    pub fn remove(&mut self, offer_id: &str) {
        if let Some(&i) = self.position.get(offer_id) {
            if self.live[i] {
                self.live[i] = false;
                self.live_count -= 1;
            }
        }
    }

    /// Ranks the live offers for `req`. Feasible offers are sorted by total price, then price per
    /// unit-hour, then offer id, so that equal prices always come out in the same order.
    pub fn quote(
        &self,
        req: &Requirements,
        now_ms: i64,
        excluded_limit: usize,
    ) -> Result<QuoteOutcome, RequirementsError> {
        if req.units == 0 {
            return Err(RequirementsError::ZeroUnits);
        }
        if req.duration_s == 0 {
            return Err(RequirementsError::ZeroDuration);
        }
        let mut out = QuoteOutcome::default();
        let matches_class = |key: &ClassKey| {
            req.category.is_none_or(|c| c == key.0)
                && req.qualifier.as_deref().is_none_or(|q| q == key.1)
        };
        let mut others: Vec<&Vec<usize>> = Vec::new();
        for (key, indices) in &self.buckets {
            if !matches_class(key) {
                others.push(indices);
                continue;
            }
            for &i in indices {
                if !self.live[i] {
                    continue;
                }
                let offer = &self.offers[i];
                match exclusion(offer, req, now_ms) {
                    None => {
                        let total = cost_micros(
                            offer.price_micros_per_unit_hour,
                            req.units,
                            req.duration_s,
                        )?;
                        out.candidates.push(Candidate {
                            offer_index: i,
                            total_micros: total,
                        });
                    }
                    Some(reason) => {
                        *out.excluded_counts.entry(reason).or_default() += 1;
                        if out.excluded.len() < excluded_limit {
                            out.excluded.push((i, reason));
                        }
                    }
                }
            }
        }
        for indices in others {
            for &i in indices {
                if !self.live[i] {
                    continue;
                }
                let reason =
                    exclusion(&self.offers[i], req, now_ms).unwrap_or(ExclusionReason::Category);
                *out.excluded_counts.entry(reason).or_default() += 1;
                if out.excluded.len() < excluded_limit {
                    out.excluded.push((i, reason));
                }
            }
        }
        out.candidates.sort_by(|a, b| {
            let (oa, ob) = (&self.offers[a.offer_index], &self.offers[b.offer_index]);
            a.total_micros
                .cmp(&b.total_micros)
                .then(
                    oa.price_micros_per_unit_hour
                        .cmp(&ob.price_micros_per_unit_hour),
                )
                .then_with(|| oa.offer_id.cmp(&ob.offer_id))
        });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(id: &str, class: &str, zone: &str, price: u64, avail: u64) -> OfferView {
        let class: ResourceClass = class.parse().unwrap();
        let intelligent = class.category == Category::Intelligent;
        OfferView {
            offer_id: id.into(),
            provider_org_id: "org_p".into(),
            provider_name: "Provider".into(),
            pool_id: "pool_1".into(),
            zone: zone.into(),
            shape: UnitShape {
                category: class.category,
                cpus_per_unit: if intelligent { 16 } else { 1 },
                memory_mib_per_unit: if intelligent { 131072 } else { 4096 },
            },
            class,
            accelerator_memory_gib: if intelligent { 80 } else { 0 },
            price_micros_per_unit_hour: price,
            min_units: 1,
            max_units: 64,
            valid_from_ms: 0,
            valid_until_ms: 1_000_000,
            units_available: avail,
            created_ms: 0,
        }
    }

    fn ids(book: &OfferBook, out: &QuoteOutcome) -> Vec<String> {
        out.candidates
            .iter()
            .map(|c| book.offer(c.offer_index).offer_id.clone())
            .collect()
    }

    #[test]
    fn ranks_by_total_then_id_and_explains_exclusions() {
        let mut book = OfferBook::new();
        book.upsert(offer("o3", "intelligent:H100-80G", "core", 20_000_000, 8));
        book.upsert(offer("o1", "intelligent:H100-80G", "core", 20_000_000, 8));
        book.upsert(offer("o2", "intelligent:H100-80G", "core", 18_000_000, 8));
        book.upsert(offer("o4", "intelligent:H100-80G", "east", 1_000_000, 8));
        book.upsert(offer("o5", "intelligent:H100-80G", "core", 1_000_000, 2));
        book.upsert(offer("o6", "intelligent:A800-80G", "core", 1_000_000, 8));
        book.upsert(offer("o7", "general", "core", 1_000, 64));
        book.upsert(offer("o8", "intelligent:H100-80G", "core", 90_000_000, 8));
        let req = Requirements {
            category: Some(Category::Intelligent),
            qualifier: Some("H100-80G".into()),
            units: 4,
            zone: Some("core".into()),
            max_price_micros_per_unit_hour: Some(50_000_000),
            duration_s: 3_600,
            ..Requirements::default()
        };
        let out = book.quote(&req, 10, 100).unwrap();
        assert_eq!(ids(&book, &out), ["o2", "o1", "o3"]);
        assert_eq!(out.candidates[0].total_micros, 72_000_000);
        let reasons: HashMap<_, _> = out
            .excluded
            .iter()
            .map(|(i, r)| (book.offer(*i).offer_id.clone(), *r))
            .collect();
        assert_eq!(reasons["o4"], ExclusionReason::Zone);
        assert_eq!(reasons["o5"], ExclusionReason::Capacity);
        assert_eq!(reasons["o6"], ExclusionReason::Model);
        assert_eq!(reasons["o7"], ExclusionReason::Category);
        assert_eq!(reasons["o8"], ExclusionReason::Price);
        assert_eq!(out.excluded_counts.values().sum::<u64>(), 5);
    }

    #[test]
    fn removed_offers_are_not_quoted_and_limit_caps_listing() {
        let mut book = OfferBook::new();
        for i in 0..10 {
            book.upsert(offer(&format!("o{i}"), "general", "core", 1_000 + i, 0));
        }
        book.upsert(offer("live", "general", "core", 5_000, 32));
        let req = Requirements {
            units: 4,
            duration_s: 60,
            ..Requirements::default()
        };
        let out = book.quote(&req, 10, 3).unwrap();
        assert_eq!(ids(&book, &out), ["live"]);
        assert_eq!(out.excluded.len(), 3);
        assert_eq!(out.excluded_counts[&ExclusionReason::Capacity], 10);
        book.remove("live");
        assert_eq!(book.len(), 10);
        assert!(book.quote(&req, 10, 3).unwrap().candidates.is_empty());
        assert!(book.get("live").is_none());
        assert_eq!(
            book.quote(&Requirements { units: 0, ..req }, 0, 0),
            Err(RequirementsError::ZeroUnits)
        );
    }

    #[test]
    fn validity_window_and_memory_constraints_apply() {
        let mut book = OfferBook::new();
        book.upsert(offer("o1", "general", "core", 1_000, 64));
        let req = Requirements {
            units: 8,
            memory_mib: Some(8 * 4096 + 1),
            duration_s: 60,
            ..Requirements::default()
        };
        let out = book.quote(&req, 10, 10).unwrap();
        assert_eq!(out.excluded[0].1, ExclusionReason::Memory);
        let out = book
            .quote(
                &Requirements {
                    memory_mib: None,
                    ..req
                },
                2_000_000,
                10,
            )
            .unwrap();
        assert_eq!(out.excluded[0].1, ExclusionReason::NotValidNow);
    }
}
