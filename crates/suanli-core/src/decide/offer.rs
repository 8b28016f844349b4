//! Publishing and withdrawing offers.
//!
//! An offer's terms are decided at the edge before its pool is loaded ([`decide_terms`], then
//! [`decide_window`] once the request's times are parsed), its pool and accelerator model when it
//! is published ([`decide_offer`]).

use super::pool::MAX_MEMORY_MIB;
use super::{within, Refusal};
use crate::resource::{Category, ResourceClass};
use crate::validate::MAX_UNITS;

/// Most CPUs one unit of an offer comes with.
pub const MAX_CPUS_PER_UNIT: u64 = 1_024;
/// Highest price per unit-hour (of an offer, and of a buyer's limit): one million yuan.
pub const MAX_PRICE_MICROS: u64 = 1_000_000 * 1_000_000;
/// How long an offer is valid when its request does not say: a year from `valid_from`.
pub const DEFAULT_VALIDITY_MS: i64 = 365 * 24 * 3_600_000;
/// How far ahead of now an offer's `valid_until` may be: ten years (of 366 days).
pub const MAX_VALID_AHEAD_MS: i64 = 10 * 366 * 24 * 3_600_000;

/// An offer's terms as its request gives them (`None`: not given).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfferTermsRequest {
    pub cpus_per_unit: Option<u64>,
    pub memory_mib_per_unit: u64,
    pub price_micros_per_unit_hour: u64,
    pub min_units: Option<u64>,
    pub max_units: Option<u64>,
}

/// An offer's terms, decided: what is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfferTerms {
    pub cpus_per_unit: u64,
    pub memory_mib_per_unit: u64,
    pub price_micros_per_unit_hour: u64,
    pub min_units: u64,
    pub max_units: u64,
}

/// Decides the terms of an offer of `category`, in this order (the first fault is the one
/// refused): CPUs per unit (an intelligent offer says how many come with each accelerator, 1 to
/// [`MAX_CPUS_PER_UNIT`]; a unit of general or supercomputing capacity is one CPU, the default),
/// memory per unit (1 to [`MAX_MEMORY_MIB`]), the price per unit-hour (1 to
/// [`MAX_PRICE_MICROS`]), the least units a lease buys (1 to [`MAX_UNITS`], by default 1) and the
/// most (from the least to [`MAX_UNITS`], by default [`MAX_UNITS`]).
pub fn decide_terms(category: Category, req: &OfferTermsRequest) -> Result<OfferTerms, Refusal> {
    let cpus_per_unit = match (category, req.cpus_per_unit) {
        (Category::Intelligent, Some(c)) => c,
        (Category::Intelligent, None) => {
            return Err(Refusal::invalid(
                "cpus_per_unit",
                "intelligent offers say how many CPUs come with each accelerator",
            ))
        }
        (_, None | Some(1)) => 1,
        (_, Some(_)) => {
            return Err(Refusal::invalid(
                "cpus_per_unit",
                "one unit of general or supercomputing capacity is one CPU",
            ))
        }
    };
    within("cpus_per_unit", cpus_per_unit, 1, MAX_CPUS_PER_UNIT)?;
    within(
        "memory_mib_per_unit",
        req.memory_mib_per_unit,
        1,
        MAX_MEMORY_MIB,
    )?;
    within(
        "price_micros_per_unit_hour",
        req.price_micros_per_unit_hour,
        1,
        MAX_PRICE_MICROS,
    )?;
    let min_units = req.min_units.unwrap_or(1);
    within("min_units", min_units, 1, MAX_UNITS)?;
    let max_units = req.max_units.unwrap_or(MAX_UNITS);
    within("max_units", max_units, min_units, MAX_UNITS)?;
    Ok(OfferTerms {
        cpus_per_unit,
        memory_mib_per_unit: req.memory_mib_per_unit,
        price_micros_per_unit_hour: req.price_micros_per_unit_hour,
        min_units,
        max_units,
    })
}

/// When an offer can be bought: from `valid_from_ms` until (not including) `valid_until_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidityWindow {
    pub valid_from_ms: i64,
    pub valid_until_ms: i64,
}

/// Decides an offer's validity window at `now_ms` from the times its request gives (`None`: not
/// given; `valid_from` defaults to now, `valid_until` to [`DEFAULT_VALIDITY_MS`] after
/// `valid_from`): `valid_until` is after `valid_from` and in the future, and at most
/// [`MAX_VALID_AHEAD_MS`] from now. A window that started in the past is accepted.
pub fn decide_window(
    valid_from_ms: Option<i64>,
    valid_until_ms: Option<i64>,
    now_ms: i64,
) -> Result<ValidityWindow, Refusal> {
    let valid_from_ms = valid_from_ms.unwrap_or(now_ms);
    let valid_until_ms =
        valid_until_ms.unwrap_or_else(|| valid_from_ms.saturating_add(DEFAULT_VALIDITY_MS));
    if valid_until_ms <= valid_from_ms || valid_until_ms <= now_ms {
        return Err(Refusal::invalid(
            "valid_until",
            "valid_until must be after valid_from and in the future",
        ));
    }
    if valid_until_ms > now_ms.saturating_add(MAX_VALID_AHEAD_MS) {
        return Err(Refusal::invalid(
            "valid_until",
            "valid_until is more than ten years away",
        ));
    }
    Ok(ValidityWindow {
        valid_from_ms,
        valid_until_ms,
    })
}

/// What publishing an offer needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOfferSnapshot {
    /// Whether the pool exists and belongs to the publishing org (another org's pool reads as
    /// missing).
    pub pool_is_own: bool,
    /// The accelerator registry's memory for the class's model, when it names one the registry
    /// knows.
    pub registry_memory_gib: Option<u32>,
}

/// Decides publishing an offer of `class`: returns the accelerator memory the offer advertises
/// (0 for classes without accelerators).
pub fn decide_offer(snapshot: &NewOfferSnapshot, class: &ResourceClass) -> Result<u32, Refusal> {
    if !snapshot.pool_is_own {
        return Err(Refusal::invalid("pool_id", "no such pool"));
    }
    match (class.category, &class.qualifier) {
        (Category::Intelligent, Some(model)) => snapshot.registry_memory_gib.ok_or_else(|| {
            Refusal::invalid("class", format!("unknown accelerator model {model:?}"))
        }),
        (Category::Intelligent, None) => Err(Refusal::invalid(
            "class",
            "intelligent offers name an accelerator model",
        )),
        _ => Ok(0),
    }
}

/// Decides withdrawing an offer: only its own org may, and another org's offer reads as missing.
/// Withdrawing a withdrawn offer changes nothing and is not an error (a retry finds it done).
pub fn decide_withdraw(offer_org_id: Option<&str>, actor_org_id: &str) -> Result<(), Refusal> {
    match offer_org_id {
        Some(owner) if owner == actor_org_id => Ok(()),
        _ => Err(Refusal::NotFound("offer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(category: Category, qualifier: Option<&str>) -> ResourceClass {
        ResourceClass {
            category,
            qualifier: qualifier.map(str::to_owned),
        }
    }

    #[test]
    fn intelligent_offers_name_a_known_model() {
        let known = NewOfferSnapshot {
            pool_is_own: true,
            registry_memory_gib: Some(80),
        };
        assert_eq!(
            decide_offer(&known, &class(Category::Intelligent, Some("H100"))),
            Ok(80)
        );
        assert_eq!(decide_offer(&known, &class(Category::General, None)), Ok(0));
        let unknown = NewOfferSnapshot {
            registry_memory_gib: None,
            ..known.clone()
        };
        assert!(matches!(
            decide_offer(&unknown, &class(Category::Intelligent, Some("X1"))),
            Err(Refusal::Invalid { field: "class", .. })
        ));
        assert!(matches!(
            decide_offer(&known, &class(Category::Intelligent, None)),
            Err(Refusal::Invalid { field: "class", .. })
        ));
        let foreign = NewOfferSnapshot {
            pool_is_own: false,
            ..known
        };
        assert!(matches!(
            decide_offer(&foreign, &class(Category::General, None)),
            Err(Refusal::Invalid {
                field: "pool_id",
                ..
            })
        ));
    }

    fn terms() -> OfferTermsRequest {
        OfferTermsRequest {
            cpus_per_unit: None,
            memory_mib_per_unit: 1024,
            price_micros_per_unit_hour: 1_000_000,
            min_units: None,
            max_units: None,
        }
    }

    fn refused(field: &'static str, message: &str) -> Result<OfferTerms, Refusal> {
        Err(Refusal::invalid(field, message))
    }

    #[test]
    fn an_offers_terms_default_and_keep_their_bounds() {
        assert_eq!(
            decide_terms(Category::General, &terms()),
            Ok(OfferTerms {
                cpus_per_unit: 1,
                memory_mib_per_unit: 1024,
                price_micros_per_unit_hour: 1_000_000,
                min_units: 1,
                max_units: MAX_UNITS,
            })
        );
        let edges = OfferTermsRequest {
            cpus_per_unit: Some(MAX_CPUS_PER_UNIT),
            memory_mib_per_unit: MAX_MEMORY_MIB,
            price_micros_per_unit_hour: MAX_PRICE_MICROS,
            min_units: Some(MAX_UNITS),
            max_units: Some(MAX_UNITS),
        };
        assert_eq!(
            decide_terms(Category::Intelligent, &edges),
            Ok(OfferTerms {
                cpus_per_unit: MAX_CPUS_PER_UNIT,
                memory_mib_per_unit: MAX_MEMORY_MIB,
                price_micros_per_unit_hour: MAX_PRICE_MICROS,
                min_units: MAX_UNITS,
                max_units: MAX_UNITS,
            })
        );
        let low = OfferTermsRequest {
            cpus_per_unit: Some(1),
            memory_mib_per_unit: 1,
            price_micros_per_unit_hour: 1,
            min_units: Some(3),
            max_units: Some(3),
        };
        for category in [Category::General, Category::Supercomputing] {
            let decided = decide_terms(category, &low).unwrap();
            assert_eq!((decided.cpus_per_unit, decided.min_units), (1, 3));
        }
        assert_eq!(
            decide_terms(Category::Intelligent, &low).map(|t| t.cpus_per_unit),
            Ok(1)
        );
    }

    #[test]
    fn every_term_refuses_on_its_own() {
        let with = |f: fn(&mut OfferTermsRequest)| {
            let mut t = terms();
            f(&mut t);
            t
        };
        let one_cpu = "one unit of general or supercomputing capacity is one CPU";
        let cpus = "cpus_per_unit must be between 1 and 1024";
        let memory = "memory_mib_per_unit must be between 1 and 67108864";
        let price = "price_micros_per_unit_hour must be between 1 and 1000000000000";
        let min = "min_units must be between 1 and 1000000";
        let cases = [
            (
                Category::Intelligent,
                terms(),
                refused(
                    "cpus_per_unit",
                    "intelligent offers say how many CPUs come with each accelerator",
                ),
            ),
            (
                Category::General,
                with(|t| t.cpus_per_unit = Some(2)),
                refused("cpus_per_unit", one_cpu),
            ),
            (
                Category::Supercomputing,
                with(|t| t.cpus_per_unit = Some(0)),
                refused("cpus_per_unit", one_cpu),
            ),
            (
                Category::Intelligent,
                with(|t| t.cpus_per_unit = Some(0)),
                refused("cpus_per_unit", cpus),
            ),
            (
                Category::Intelligent,
                with(|t| t.cpus_per_unit = Some(MAX_CPUS_PER_UNIT + 1)),
                refused("cpus_per_unit", cpus),
            ),
            (
                Category::General,
                with(|t| t.memory_mib_per_unit = 0),
                refused("memory_mib_per_unit", memory),
            ),
            (
                Category::General,
                with(|t| t.memory_mib_per_unit = MAX_MEMORY_MIB + 1),
                refused("memory_mib_per_unit", memory),
            ),
            (
                Category::General,
                with(|t| t.price_micros_per_unit_hour = 0),
                refused("price_micros_per_unit_hour", price),
            ),
            (
                Category::General,
                with(|t| t.price_micros_per_unit_hour = MAX_PRICE_MICROS + 1),
                refused("price_micros_per_unit_hour", price),
            ),
            (
                Category::General,
                with(|t| t.min_units = Some(0)),
                refused("min_units", min),
            ),
            (
                Category::General,
                with(|t| t.min_units = Some(MAX_UNITS + 1)),
                refused("min_units", min),
            ),
            (
                Category::General,
                with(|t| {
                    t.min_units = Some(5);
                    t.max_units = Some(4);
                }),
                refused("max_units", "max_units must be between 5 and 1000000"),
            ),
            (
                Category::General,
                with(|t| t.max_units = Some(MAX_UNITS + 1)),
                refused("max_units", "max_units must be between 1 and 1000000"),
            ),
            // The first fault is refused: CPUs, memory, price, the least units, the most.
            (
                Category::General,
                with(|t| {
                    t.cpus_per_unit = Some(2);
                    t.memory_mib_per_unit = 0;
                }),
                refused("cpus_per_unit", one_cpu),
            ),
            (
                Category::Intelligent,
                with(|t| {
                    t.cpus_per_unit = Some(0);
                    t.memory_mib_per_unit = 0;
                }),
                refused("cpus_per_unit", cpus),
            ),
            (
                Category::General,
                with(|t| {
                    t.memory_mib_per_unit = 0;
                    t.price_micros_per_unit_hour = 0;
                }),
                refused("memory_mib_per_unit", memory),
            ),
            (
                Category::General,
                with(|t| {
                    t.price_micros_per_unit_hour = 0;
                    t.min_units = Some(0);
                }),
                refused("price_micros_per_unit_hour", price),
            ),
            (
                Category::General,
                with(|t| {
                    t.min_units = Some(0);
                    t.max_units = Some(0);
                }),
                refused("min_units", min),
            ),
        ];
        for (category, request, want) in cases {
            assert_eq!(decide_terms(category, &request), want, "{request:?}");
        }
    }

    const DAY: i64 = 24 * 3_600_000;

    #[test]
    fn an_offers_window_defaults_to_a_year_from_now() {
        let now = 1_000 * DAY;
        let window = |from, until| ValidityWindow {
            valid_from_ms: from,
            valid_until_ms: until,
        };
        assert_eq!(
            decide_window(None, None, now),
            Ok(window(now, now + DEFAULT_VALIDITY_MS))
        );
        assert_eq!(
            decide_window(Some(now + DAY), None, now),
            Ok(window(now + DAY, now + DAY + DEFAULT_VALIDITY_MS))
        );
        // Started in the past, ending a millisecond from now, or as far ahead as may be.
        assert_eq!(
            decide_window(Some(0), Some(now + 1), now),
            Ok(window(0, now + 1))
        );
        assert_eq!(
            decide_window(None, Some(now + MAX_VALID_AHEAD_MS), now),
            Ok(window(now, now + MAX_VALID_AHEAD_MS))
        );
        assert_eq!(
            decide_window(
                Some(now + MAX_VALID_AHEAD_MS - DEFAULT_VALIDITY_MS),
                None,
                now
            ),
            Ok(window(
                now + MAX_VALID_AHEAD_MS - DEFAULT_VALIDITY_MS,
                now + MAX_VALID_AHEAD_MS
            ))
        );
    }

    #[test]
    fn an_offers_window_ends_after_it_starts_in_the_next_ten_years() {
        let now = 1_000 * DAY;
        let after = Err(Refusal::invalid(
            "valid_until",
            "valid_until must be after valid_from and in the future",
        ));
        let ten_years = Err(Refusal::invalid(
            "valid_until",
            "valid_until is more than ten years away",
        ));
        let cases = [
            (Some(now + 2 * DAY), Some(now + DAY), after.clone()),
            (Some(now + DAY), Some(now + DAY), after.clone()),
            (None, Some(now), after.clone()),
            (None, Some(now - DAY), after.clone()),
            (Some(0), Some(now), after.clone()),
            (None, Some(now + MAX_VALID_AHEAD_MS + 1), ten_years.clone()),
            // The default end is a year after a start nine and a half years away.
            (
                Some(now + MAX_VALID_AHEAD_MS - DAY),
                None,
                ten_years.clone(),
            ),
            // A window that ends before it starts is that, however far away.
            (Some(i64::MAX), Some(i64::MAX - 1), after.clone()),
            (Some(i64::MAX), None, after),
            (None, Some(i64::MAX), ten_years),
        ];
        for (from, until, want) in cases {
            assert_eq!(decide_window(from, until, now), want, "{from:?} {until:?}");
        }
    }

    #[test]
    fn only_the_owner_withdraws() {
        assert_eq!(decide_withdraw(Some("org_p"), "org_p"), Ok(()));
        assert_eq!(
            decide_withdraw(Some("org_p"), "org_q"),
            Err(Refusal::NotFound("offer"))
        );
        assert_eq!(
            decide_withdraw(None, "org_p"),
            Err(Refusal::NotFound("offer"))
        );
    }
}
