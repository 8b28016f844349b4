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
    /// The best feasible offers, at most the requested number, cheapest first.
    pub candidates: Vec<Candidate>,
    /// How many offers are feasible in all.
    pub feasible: u64,
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

/// The fields a quote checks, packed without strings so that a scan touches little memory.
#[derive(Debug, Clone, Copy)]
struct Hot {
    live: bool,
    /// Index of the offer in the book's `offers`.
    offer: u32,
    price: u64,
    units_available: u64,
    min_units: u64,
    max_units: u64,
    cpus_per_unit: u64,
    memory_mib_per_unit: u64,
    accelerator_memory_gib: u32,
    valid_from_ms: i64,
    valid_until_ms: i64,
}

impl Hot {
    fn of(o: &OfferView, offer: u32) -> Hot {
        Hot {
            live: true,
            offer,
            price: o.price_micros_per_unit_hour,
            units_available: o.units_available,
            min_units: o.min_units,
            max_units: o.max_units,
            cpus_per_unit: o.shape.cpus_per_unit,
            memory_mib_per_unit: o.shape.memory_mib_per_unit,
            accelerator_memory_gib: o.accelerator_memory_gib,
            valid_from_ms: o.valid_from_ms,
            valid_until_ms: o.valid_until_ms,
        }
    }

    /// [`exclusion`] past the class and zone checks, which the bucket already answered.
    fn exclusion(&self, req: &Requirements, now_ms: i64) -> Option<ExclusionReason> {
        if now_ms < self.valid_from_ms || now_ms >= self.valid_until_ms {
            return Some(ExclusionReason::NotValidNow);
        }
        if req
            .min_accelerator_memory_gib
            .is_some_and(|m| self.accelerator_memory_gib < m)
        {
            return Some(ExclusionReason::AcceleratorMemory);
        }
        if req
            .max_price_micros_per_unit_hour
            .is_some_and(|p| self.price > p)
        {
            return Some(ExclusionReason::Price);
        }
        if req.units < self.min_units || req.units > self.max_units {
            return Some(ExclusionReason::UnitsOutOfRange);
        }
        if req
            .cpus
            .is_some_and(|c| self.cpus_per_unit.saturating_mul(req.units) < c)
        {
            return Some(ExclusionReason::Cpus);
        }
        if req
            .memory_mib
            .is_some_and(|m| self.memory_mib_per_unit.saturating_mul(req.units) < m)
        {
            return Some(ExclusionReason::Memory);
        }
        if self.units_available < req.units {
            return Some(ExclusionReason::Capacity);
        }
        None
    }
}

/// A bucket: the offers of one resource class in one zone, their checked fields stored
/// contiguously so that a scan reads memory in order.
#[derive(Debug, Clone)]
struct Bucket {
    category: Category,
    qualifier: String,
    zone: String,
    hot: Vec<Hot>,
    live: usize,
}

type BucketKey = (Category, String, String);

fn bucket_key(o: &OfferView) -> BucketKey {
    (
        o.class.category,
        o.class.qualifier.clone().unwrap_or_default(),
        o.zone.clone(),
    )
}

/// Live offers indexed by resource class and zone. A quote scans only the buckets of the class
/// and zone it asks for, over a packed array of the fields it checks; the other buckets are
/// counted whole (their reason is the class or the zone, for every offer in them).
#[derive(Debug, Default, Clone)]
pub struct OfferBook {
    offers: Vec<OfferView>,
    /// Where each offer's checked fields are: (bucket, slot).
    slots: Vec<(u32, u32)>,
    position: HashMap<String, usize>,
    index: BTreeMap<BucketKey, u32>,
    buckets: Vec<Bucket>,
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
        self.hot(i).live.then(|| &self.offers[i])
    }

    fn hot(&self, i: usize) -> &Hot {
        let (b, slot) = self.slots[i];
        &self.buckets[b as usize].hot[slot as usize]
    }

    fn hot_mut(&mut self, i: usize) -> &mut Hot {
        let (b, slot) = self.slots[i];
        &mut self.buckets[b as usize].hot[slot as usize]
    }

    fn bucket_of(&mut self, key: BucketKey) -> u32 {
        if let Some(b) = self.index.get(&key) {
            return *b;
        }
        let id = self.buckets.len() as u32;
        self.buckets.push(Bucket {
            category: key.0,
            qualifier: key.1.clone(),
            zone: key.2.clone(),
            hot: Vec::new(),
            live: 0,
        });
        self.index.insert(key, id);
        id
    }

    /// Inserts an offer or replaces its terms and availability.
    pub fn upsert(&mut self, offer: OfferView) {
        let key = bucket_key(&offer);
        if let Some(&i) = self.position.get(&offer.offer_id) {
            if bucket_key(&self.offers[i]) == key {
                if !self.hot(i).live {
                    self.buckets[self.slots[i].0 as usize].live += 1;
                    self.live_count += 1;
                }
                *self.hot_mut(i) = Hot::of(&offer, i as u32);
                self.offers[i] = offer;
                return;
            }
            self.remove(&offer.offer_id);
            self.position.remove(&offer.offer_id);
        }
        let i = self.offers.len();
        let bucket = self.bucket_of(key);
        let b = &mut self.buckets[bucket as usize];
        b.hot.push(Hot::of(&offer, i as u32));
        b.live += 1;
        self.slots.push((bucket, (b.hot.len() - 1) as u32));
        self.position.insert(offer.offer_id.clone(), i);
        self.offers.push(offer);
        self.live_count += 1;
    }

    /// Every live offer, in insertion order.
    pub fn live(&self) -> impl Iterator<Item = &OfferView> {
        self.offers
            .iter()
            .enumerate()
            .filter(|(i, _)| self.hot(*i).live)
            .map(|(_, o)| o)
    }

    /// Sets the units available of one offer, if it is in the book.
    pub fn set_units_available(&mut self, offer_id: &str, units: u64) {
        if let Some(&i) = self.position.get(offer_id) {
            self.offers[i].units_available = units;
            self.hot_mut(i).units_available = units;
        }
    }

    /// Takes an offer out of the book (withdrawn or expired).
    pub fn remove(&mut self, offer_id: &str) {
        if let Some(&i) = self.position.get(offer_id) {
            if self.hot(i).live {
                self.hot_mut(i).live = false;
                self.buckets[self.slots[i].0 as usize].live -= 1;
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
        self.quote_top(req, now_ms, usize::MAX, excluded_limit)
    }

    /// [`OfferBook::quote`], keeping only the `candidate_limit` best feasible offers (all are
    /// counted in `feasible`): selecting the best is linear, sorting them all is not.
    pub fn quote_top(
        &self,
        req: &Requirements,
        now_ms: i64,
        candidate_limit: usize,
        excluded_limit: usize,
    ) -> Result<QuoteOutcome, RequirementsError> {
        if req.units == 0 {
            return Err(RequirementsError::ZeroUnits);
        }
        if req.duration_s == 0 {
            return Err(RequirementsError::ZeroDuration);
        }
        // Every candidate has the same units and duration, so ranking by price per unit-hour is
        // ranking by total; the total is computed once per candidate, checked for overflow.
        let mut out = QuoteOutcome::default();
        let mut whole: Vec<(usize, ExclusionReason)> = Vec::new();
        for (b, bucket) in self.buckets.iter().enumerate() {
            if bucket.live == 0 {
                continue;
            }
            let reason = if req.category.is_some_and(|c| c != bucket.category) {
                Some(ExclusionReason::Category)
            } else if req
                .qualifier
                .as_deref()
                .is_some_and(|q| q != bucket.qualifier)
            {
                Some(ExclusionReason::Model)
            } else if req.zone.as_deref().is_some_and(|z| z != bucket.zone) {
                Some(ExclusionReason::Zone)
            } else {
                None
            };
            if let Some(r) = reason {
                *out.excluded_counts.entry(r).or_default() += bucket.live as u64;
                whole.push((b, r));
                continue;
            }
            for h in &bucket.hot {
                if !h.live {
                    continue;
                }
                match h.exclusion(req, now_ms) {
                    None => out.candidates.push(Candidate {
                        offer_index: h.offer as usize,
                        total_micros: h.price,
                    }),
                    Some(reason) => {
                        *out.excluded_counts.entry(reason).or_default() += 1;
                        if out.excluded.len() < excluded_limit {
                            out.excluded.push((h.offer as usize, reason));
                        }
                    }
                }
            }
        }
        // List offers of the buckets counted whole, after the informative exclusions.
        'listing: for (b, reason) in whole {
            for h in &self.buckets[b].hot {
                if out.excluded.len() >= excluded_limit {
                    break 'listing;
                }
                if h.live {
                    out.excluded.push((h.offer as usize, reason));
                }
            }
        }
        out.feasible = out.candidates.len() as u64;
        let rank = |a: &Candidate, b: &Candidate| {
            a.total_micros.cmp(&b.total_micros).then_with(|| {
                self.offers[a.offer_index]
                    .offer_id
                    .cmp(&self.offers[b.offer_index].offer_id)
            })
        };
        if out.candidates.len() > candidate_limit {
            if candidate_limit == 0 {
                out.candidates.clear();
            } else {
                out.candidates
                    .select_nth_unstable_by(candidate_limit - 1, rank);
                out.candidates.truncate(candidate_limit);
            }
        }
        out.candidates.sort_unstable_by(rank);
        for c in &mut out.candidates {
            c.total_micros = cost_micros(c.total_micros, req.units, req.duration_s)?;
        }
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

    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn arb_offer() -> impl Strategy<Value = OfferView> {
            (
                0usize..3,
                0usize..3,
                0usize..3,
                1u64..50,
                0u64..20,
                1u64..4,
                1u64..30,
                0i64..3,
            )
                .prop_map(|(cat, q, zone, price, avail, min, max, window)| {
                    let class = match cat {
                        0 => "general".to_owned(),
                        1 => format!("intelligent:M{q}"),
                        _ => format!("supercomputing:p{q}"),
                    };
                    let mut o = offer(
                        "x",
                        &class,
                        ["core", "east", "west"][zone],
                        price * 1_000,
                        avail,
                    );
                    o.min_units = min;
                    o.max_units = min + max;
                    o.accelerator_memory_gib = 40 * (1 + q as u32);
                    o.valid_from_ms = window * 100;
                    o
                })
        }

        proptest! {
            /// The indexed quote answers exactly what checking every offer one by one answers.
            #[test]
            fn indexed_quote_equals_brute_force(
                offers in proptest::collection::vec(arb_offer(), 0..60),
                removed in proptest::collection::vec(0usize..60, 0..10),
                cat in proptest::option::of(0usize..3),
                q in proptest::option::of(0usize..3),
                zone in proptest::option::of(0usize..4),
                units in 1u64..10,
                max_price in proptest::option::of(1u64..50),
                min_mem in proptest::option::of(0u32..200),
                now in 0i64..400,
            ) {
                let mut book = OfferBook::new();
                for (i, mut o) in offers.into_iter().enumerate() {
                    o.offer_id = format!("o{i:03}");
                    book.upsert(o);
                }
                for r in removed {
                    book.remove(&format!("o{r:03}"));
                }
                let category = cat.map(|c| Category::ALL[c]);
                let req = Requirements {
                    category,
                    qualifier: q.filter(|_| category.is_some_and(|c| c != Category::General)).map(|q| {
                        if category == Some(Category::Intelligent) { format!("M{q}") } else { format!("p{q}") }
                    }),
                    units,
                    min_accelerator_memory_gib: min_mem,
                    zone: zone.map(|z| ["core", "east", "west", "moon"][z].to_owned()),
                    max_price_micros_per_unit_hour: max_price.map(|p| p * 1_000),
                    duration_s: 3_600,
                    ..Requirements::default()
                };
                let out = book.quote(&req, now, usize::MAX).unwrap();
                let mut expected: Vec<(u64, String)> = Vec::new();
                let mut counts: BTreeMap<ExclusionReason, u64> = BTreeMap::new();
                for o in book.live() {
                    match exclusion(o, &req, now) {
                        None => expected.push((cost_micros(o.price_micros_per_unit_hour, units, 3_600).unwrap(), o.offer_id.clone())),
                        Some(r) => *counts.entry(r).or_default() += 1,
                    }
                }
                expected.sort();
                let got: Vec<(u64, String)> = out
                    .candidates
                    .iter()
                    .map(|c| (c.total_micros, book.offer(c.offer_index).offer_id.clone()))
                    .collect();
                let top = book.quote_top(&req, now, 3, 0).unwrap();
                let top_ids: Vec<(u64, String)> = top
                    .candidates
                    .iter()
                    .map(|c| (c.total_micros, book.offer(c.offer_index).offer_id.clone()))
                    .collect();
                prop_assert_eq!(&top_ids[..], &expected[..expected.len().min(3)]);
                prop_assert_eq!(top.feasible, expected.len() as u64);
                prop_assert_eq!(got, expected);
                prop_assert_eq!(&out.excluded_counts, &counts);
                for (i, r) in &out.excluded {
                    prop_assert_eq!(exclusion(book.offer(*i), &req, now), Some(*r));
                }
            }
        }
    }
}
