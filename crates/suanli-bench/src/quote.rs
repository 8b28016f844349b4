//! Benchmark 1: quotes over a synthetic city market of live offers, in-process on the core's
//! [`OfferBook`] (no HTTP, no database).
//!
//! The market is generated deterministically (xorshift, fixed seed): ~60 % general offers, ~30 %
//! intelligent offers over six accelerator models, ~10 % supercomputing offers over three batch
//! partitions, spread over the five default zones with realistic prices, shapes, availability
//! (some sold out) and validity windows (some expired or not yet valid). Each quote carries five
//! constraints: class (category and model or partition), zone, maximum price, minimum accelerator
//! memory / total memory / total CPUs, and a number of units that the offer must have available.

use std::collections::HashMap;
use std::time::Instant;

use suanli_core::quote::{exclusion, OfferBook, OfferView, Requirements};
use suanli_core::resource::{Category, ResourceClass, UnitShape};

use crate::stats::{CpuSample, Latencies, XorShift};

/// Accelerator models of the market with memory (GiB) and a typical price (micros per
/// accelerator-hour).
const MODELS: [(&str, u32, u64); 6] = [
    ("H100-80G", 80, 32_000_000),
    ("H800-80G", 80, 28_000_000),
    ("A800-80G", 80, 18_000_000),
    ("A100-40G", 40, 12_000_000),
    ("L40S-48G", 48, 7_000_000),
    ("Ascend-910B", 64, 14_000_000),
];

const PARTITIONS: [&str; 3] = ["hpc-std", "hpc-fat", "hpc-long"];

/// Zone weights (percent): the core zone is the busiest.
const ZONE_WEIGHTS: [u64; 5] = [30, 25, 20, 15, 10];

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

pub struct Options {
    pub offers: usize,
    pub quotes: usize,
    pub warmup: usize,
    pub seed: u64,
    pub diagnostic_quotes: usize,
}

fn zone_ids() -> Vec<String> {
    suanli_server::default_zones()
        .into_iter()
        .map(|z| z.id)
        .collect()
}

fn weighted_zone<'a>(rng: &mut XorShift, zones: &'a [String]) -> &'a str {
    let mut x = rng.below(100);
    for (z, w) in zones.iter().zip(ZONE_WEIGHTS) {
        if x < w {
            return z;
        }
        x -= w;
    }
    &zones[0]
}

/// Prices spread ±40 % around `base`.
fn around(rng: &mut XorShift, base: u64) -> u64 {
    base * rng.range(60, 140) / 100
}

/// A deterministic market of `n` live offers.
pub fn market(n: usize, seed: u64, now_ms: i64) -> Vec<OfferView> {
    let zones = zone_ids();
    let mut rng = XorShift::new(seed);
    let providers = (n / 200).max(1) as u64;
    (0..n)
        .map(|_| {
            let provider = rng.below(providers);
            let zone = weighted_zone(&mut rng, &zones).to_owned();
            let roll = rng.below(100);
            let (class, shape, mem_gib, price, max_units, available) = if roll < 60 {
                let class = ResourceClass {
                    category: Category::General,
                    qualifier: None,
                };
                let shape = UnitShape {
                    category: Category::General,
                    cpus_per_unit: 1,
                    memory_mib_per_unit: *rng.pick(&[2_048, 4_096, 8_192]),
                };
                let avail = if rng.chance(15) {
                    0
                } else {
                    rng.range(1, 4_096)
                };
                (
                    class,
                    shape,
                    0,
                    around(&mut rng, 100_000),
                    *rng.pick(&[64, 256, 1_024]),
                    avail,
                )
            } else if roll < 90 {
                let (model, mem, base) = *rng.pick(&MODELS);
                let class = ResourceClass {
                    category: Category::Intelligent,
                    qualifier: Some(model.into()),
                };
                let shape = UnitShape {
                    category: Category::Intelligent,
                    cpus_per_unit: *rng.pick(&[8, 12, 16]),
                    memory_mib_per_unit: *rng.pick(&[64, 96, 128]) * 1_024,
                };
                let avail = if rng.chance(20) { 0 } else { rng.range(1, 64) };
                (
                    class,
                    shape,
                    mem,
                    around(&mut rng, base),
                    *rng.pick(&[8, 16, 64]),
                    avail,
                )
            } else {
                let partition = *rng.pick(&PARTITIONS);
                let class = ResourceClass {
                    category: Category::Supercomputing,
                    qualifier: Some(partition.into()),
                };
                let shape = UnitShape {
                    category: Category::Supercomputing,
                    cpus_per_unit: 1,
                    memory_mib_per_unit: *rng.pick(&[2_048, 4_096]),
                };
                let avail = if rng.chance(10) {
                    0
                } else {
                    rng.range(64, 20_000)
                };
                (
                    class,
                    shape,
                    0,
                    around(&mut rng, 50_000),
                    *rng.pick(&[1_024, 8_192, 65_536]),
                    avail,
                )
            };
            let valid_from_ms = if rng.chance(2) {
                now_ms + rng.range(1, 7) as i64 * DAY_MS // not yet valid
            } else {
                now_ms - rng.range(0, 30) as i64 * DAY_MS - rng.below(DAY_MS as u64) as i64
            };
            let valid_until_ms = if rng.chance(3) {
                now_ms - rng.range(1, 48) as i64 * HOUR_MS // expired, not yet swept
            } else {
                now_ms + rng.range(1, 90 * 24) as i64 * HOUR_MS
            };
            OfferView {
                offer_id: format!("offer_{:016x}", rng.next_u64()),
                provider_org_id: format!("org_p{provider:05}"),
                provider_name: format!("Provider {provider}"),
                pool_id: format!("pool_p{provider:05}_{zone}"),
                zone,
                class,
                shape,
                accelerator_memory_gib: mem_gib,
                price_micros_per_unit_hour: price.max(1),
                min_units: 1,
                max_units,
                valid_from_ms,
                valid_until_ms: valid_until_ms.max(valid_from_ms + 1),
                units_available: available,
                created_ms: valid_from_ms,
            }
        })
        .collect()
}

/// A deterministic stream of quotes with five constraints each, in the market's category mix.
pub fn requests(n: usize, seed: u64) -> Vec<Requirements> {
    let zones = zone_ids();
    let mut rng = XorShift::new(seed ^ 0x9e37_79b9_7f4a_7c15);
    (0..n)
        .map(|_| {
            let zone = Some(weighted_zone(&mut rng, &zones).to_owned());
            let duration_s = 3_600 * *rng.pick(&[1, 8, 24]);
            let roll = rng.below(100);
            if roll < 60 {
                let units = *rng.pick(&[4, 8, 16, 32, 64]);
                Requirements {
                    category: Some(Category::General),
                    qualifier: None,
                    units,
                    memory_mib: Some(units * 4_096),
                    zone,
                    max_price_micros_per_unit_hour: Some(rng.range(80_000, 130_000)),
                    duration_s,
                    ..Requirements::default()
                }
            } else if roll < 90 {
                let (model, mem, base) = *rng.pick(&MODELS);
                Requirements {
                    category: Some(Category::Intelligent),
                    qualifier: Some(model.into()),
                    units: *rng.pick(&[1, 2, 4, 8]),
                    min_accelerator_memory_gib: Some(mem),
                    zone,
                    max_price_micros_per_unit_hour: Some(base * 11 / 10),
                    duration_s,
                    ..Requirements::default()
                }
            } else {
                let units = *rng.pick(&[64, 256, 1_024]);
                Requirements {
                    category: Some(Category::Supercomputing),
                    qualifier: Some((*rng.pick(&PARTITIONS)).into()),
                    units,
                    cpus: Some(units),
                    zone,
                    max_price_micros_per_unit_hour: Some(rng.range(40_000, 60_000)),
                    duration_s,
                    ..Requirements::default()
                }
            }
        })
        .collect()
}

pub fn run(o: &Options) -> anyhow::Result<serde_json::Value> {
    let now = suanli_server::now_ms();
    let t = Instant::now();
    let mut book = OfferBook::new();
    for offer in market(o.offers, o.seed, now) {
        book.upsert(offer);
    }
    let build_ms = t.elapsed().as_secs_f64() * 1_000.0;
    let reqs = requests(o.quotes, o.seed);
    let excluded_limit = 50; // the HTTP API's default

    for r in reqs.iter().cycle().take(o.warmup) {
        std::hint::black_box(book.quote_top(r, now, 50, excluded_limit)?);
    }

    let mut all = Latencies::with_capacity(reqs.len());
    let mut by_category: Vec<(Category, Latencies)> = Category::ALL
        .iter()
        .map(|&c| (c, Latencies::default()))
        .collect();
    let mut candidates: Vec<usize> = Vec::with_capacity(reqs.len());
    let cpu_before = CpuSample::now("main");
    for r in &reqs {
        let t = Instant::now();
        let out = book.quote_top(r, now, 50, excluded_limit)?;
        let took = t.elapsed();
        all.record(took);
        if let Some((_, l)) = by_category.iter_mut().find(|(c, _)| Some(*c) == r.category) {
            l.record(took);
        }
        candidates.push(out.candidates.len());
        std::hint::black_box(&out);
    }
    // Share of the wall time this process got a CPU (1.0: it was never descheduled).
    let cpu_share = CpuSample::now("main").since(&cpu_before).process_cores;
    // Diagnostics over the first `diag` quotes (they cost as much again, so not all of them):
    // 1. the same quotes, also turning every candidate into the wire offer the HTTP answer lists;
    let diag = &reqs[..reqs.len().min(o.diagnostic_quotes)];
    let mut wire = Latencies::with_capacity(diag.len());
    for r in diag {
        let t = Instant::now();
        let out = book.quote_top(r, now, 50, excluded_limit)?;
        let offers: Vec<suanli_api::Offer> = out
            .candidates
            .iter()
            .map(|c| suanli_server::routes::market::offer_of_view(book.offer(c.offer_index)))
            .collect();
        wire.record(t.elapsed());
        std::hint::black_box(offers);
    }
    // 2. the floor of a full scan: `exclusion()` on every live offer, nothing recorded;
    let mut scan = Latencies::with_capacity(diag.len());
    for r in diag {
        let t = Instant::now();
        let feasible = book
            .live()
            .filter(|v| exclusion(v, r, now).is_none())
            .count();
        scan.record(t.elapsed());
        std::hint::black_box(feasible);
    }
    // 3. the same quotes on a book that holds only the requested class's offers (what a quote
    //    costs when the offers of other classes are not visited one by one).
    let mut by_class: HashMap<(Category, Option<String>), OfferBook> = HashMap::new();
    for v in book.live() {
        by_class
            .entry((v.class.category, v.class.qualifier.clone()))
            .or_default()
            .upsert(v.clone());
    }
    let mut class_only = Latencies::with_capacity(diag.len());
    for r in diag {
        let b = by_class.get(&(r.category.unwrap_or(Category::General), r.qualifier.clone()));
        let t = Instant::now();
        if let Some(b) = b {
            std::hint::black_box(b.quote(r, now, excluded_limit)?);
        }
        class_only.record(t.elapsed());
    }

    let s = all.summary();
    let w = wire.summary();
    let sc = scan.summary();
    let co = class_only.summary();
    let mut sorted = candidates.clone();
    sorted.sort_unstable();
    let mean_candidates = sorted.iter().sum::<usize>() as f64 / sorted.len().max(1) as f64;
    let median_candidates = sorted.get(sorted.len() / 2).copied().unwrap_or(0);
    let max_candidates = sorted.last().copied().unwrap_or(0);
    let zero = sorted.iter().filter(|&&c| c == 0).count();
    let per_cat: serde_json::Map<String, serde_json::Value> = by_category
        .iter()
        .filter(|(_, l)| l.len() > 0)
        .map(|(c, l)| (c.as_str().to_owned(), l.summary().json()))
        .collect();
    let mut counts = [0usize; 3];
    for i in 0..book.len() {
        counts[match book.offer(i).class.category {
            Category::General => 0,
            Category::Intelligent => 1,
            Category::Supercomputing => 2,
        }] += 1;
    }
    println!(
        "quote: {} live offers ({} general / {} intelligent / {} supercomputing), {} quotes with 5 constraints: \
         p50 {} us, p99 {} us, max {} us (goal p99 <= 1000 us); candidates median {}, mean {:.0}, max {}, \
         {} quotes with none; CPU share {}; diagnostics over {} quotes: p99 with wire offers {} us, \
         full-scan floor p50/p99 {}/{} us, class-only book p50/p99 {}/{} us",
        book.len(),
        counts[0],
        counts[1],
        counts[2],
        s.count,
        s.p50_us,
        s.p99_us,
        s.max_us,
        median_candidates,
        mean_candidates,
        max_candidates,
        zero,
        cpu_share.map(|c| c.to_string()).unwrap_or_else(|| "?".into()),
        diag.len(),
        w.p99_us,
        sc.p50_us,
        sc.p99_us,
        co.p50_us,
        co.p99_us,
    );
    Ok(serde_json::json!({
        "bench": "quote",
        "offers": book.len(),
        "offers_by_category": {"general": counts[0], "intelligent": counts[1], "supercomputing": counts[2]},
        "book_build_ms": (build_ms * 10.0).round() / 10.0,
        "quotes": s.count,
        "warmup": o.warmup,
        "excluded_limit": excluded_limit,
        "latency": s.json(),
        "latency_by_category": per_cat,
        "cpu_share": cpu_share,
        "diagnostic_quotes": diag.len(),
        "latency_with_wire_offers": w.json(),
        "latency_full_scan_floor": sc.json(),
        "latency_class_only_book": co.json(),
        "candidates": {"median": median_candidates, "mean": (mean_candidates * 10.0).round() / 10.0,
                       "max": max_candidates, "quotes_with_none": zero},
        "goal_p99_us": 1000,
        "goal_met": s.p99_us <= 1000,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn market_has_the_city_mix_and_quotes_five_constraints() {
        let offers = market(10_000, 7, 1_000_000_000_000);
        let share = |c: Category| {
            offers.iter().filter(|o| o.class.category == c).count() * 100 / offers.len()
        };
        assert!((55..=65).contains(&share(Category::General)));
        assert!((25..=35).contains(&share(Category::Intelligent)));
        assert!((7..=13).contains(&share(Category::Supercomputing)));
        assert_eq!(
            offers,
            market(10_000, 7, 1_000_000_000_000),
            "deterministic"
        );
        for r in requests(500, 7) {
            let fourth = r.min_accelerator_memory_gib.is_some() as u8
                + r.memory_mib.is_some() as u8
                + r.cpus.is_some() as u8;
            assert!(r.category.is_some() && r.zone.is_some());
            assert!(r.max_price_micros_per_unit_hour.is_some() && r.units > 0);
            assert_eq!(fourth, 1, "{r:?}");
        }
    }
}
