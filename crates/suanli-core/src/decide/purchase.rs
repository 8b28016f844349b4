//! Buying units of an offer: who may, when, how many, at what price, and the hold it takes.

use super::offer::MAX_PRICE_MICROS;
use super::{within, AccountRef, OrgKind, Refusal};
use crate::lease::LeaseTerms;
use crate::ledger::{hold_amount, AccountKind};
use crate::resource::{place, Allocation, NodeFree, UnitShape};
use crate::validate::{MAX_DURATION_S, MAX_UNITS};

/// Whether an offer can still be bought (a withdrawn one never again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferState {
    Active,
    Withdrawn,
}

impl OfferState {
    pub fn as_str(self) -> &'static str {
        match self {
            OfferState::Active => "active",
            OfferState::Withdrawn => "withdrawn",
        }
    }

    pub fn parse(s: &str) -> Option<OfferState> {
        match s {
            "active" => Some(OfferState::Active),
            "withdrawn" => Some(OfferState::Withdrawn),
            _ => None,
        }
    }
}

/// How a lease is billed when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Billing {
    /// The signed usage its jobs reported (pools an agent serves).
    Metered,
    /// Units × the time it was held (pools no agent serves).
    Elapsed,
}

impl Billing {
    pub fn as_str(self) -> &'static str {
        match self {
            Billing::Metered => "metered",
            Billing::Elapsed => "elapsed",
        }
    }

    pub fn parse(s: &str) -> Option<Billing> {
        match s {
            "metered" => Some(Billing::Metered),
            "elapsed" => Some(Billing::Elapsed),
            _ => None,
        }
    }
}

/// What the purchase needs to know of the offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferSnapshot {
    pub state: OfferState,
    pub valid_from_ms: i64,
    pub valid_until_ms: i64,
    pub min_units: u64,
    pub max_units: u64,
    pub price_micros_per_unit_hour: u64,
    /// Whether an agent serves the offer's pool.
    pub agent_served: bool,
}

/// The buyer's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurchaseCommand {
    pub units: u64,
    pub duration_limit_s: u64,
    pub max_price_micros_per_unit_hour: Option<u64>,
}

/// What a purchase does when it is accepted, before placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurchasePlan {
    pub hold_micros: u64,
    pub terms: LeaseTerms,
    pub billing: Billing,
    /// The hold moves the price from the first account to the second.
    pub hold_from: AccountRef,
    pub hold_to: AccountRef,
}

/// The accounts a purchase by `buyer_id` moves money on (declared to the writer before it runs):
/// the hold goes from the first to the second.
pub fn accounts(buyer_id: &str) -> [AccountRef; 2] {
    [
        AccountRef::org(buyer_id, AccountKind::Available),
        AccountRef::org(buyer_id, AccountKind::Held),
    ]
}

/// Decides a purchase command's own bounds, before its offer is loaded, in this order (the first
/// fault is the one refused): 1 to [`MAX_UNITS`] units, a duration limit of 1 to
/// [`MAX_DURATION_S`] seconds, and a price limit, when it has one, of 1 to [`MAX_PRICE_MICROS`]
/// per unit-hour. The offer's own bounds are [`decide`]'s.
pub fn decide_command(cmd: &PurchaseCommand) -> Result<(), Refusal> {
    within("units", cmd.units, 1, MAX_UNITS)?;
    within("duration_limit_s", cmd.duration_limit_s, 1, MAX_DURATION_S)?;
    if let Some(limit) = cmd.max_price_micros_per_unit_hour {
        within("max_price_micros_per_unit_hour", limit, 1, MAX_PRICE_MICROS)?;
    }
    Ok(())
}

/// Decides a purchase by `buyer` (its id and kind) of `offer` (`None`: no such offer) at `now_ms`.
pub fn decide(
    buyer: (&str, OrgKind),
    offer: Option<&OfferSnapshot>,
    cmd: &PurchaseCommand,
    now_ms: i64,
) -> Result<PurchasePlan, Refusal> {
    let (buyer_id, buyer_kind) = buyer;
    if buyer_kind != OrgKind::Consumer {
        return Err(Refusal::Forbidden("only consumer orgs buy capacity".into()));
    }
    let offer = offer.ok_or_else(|| Refusal::invalid("offer_id", "no such offer"))?;
    if offer.state != OfferState::Active {
        return Err(Refusal::OfferNotAvailable("the offer was withdrawn".into()));
    }
    if now_ms < offer.valid_from_ms || now_ms >= offer.valid_until_ms {
        return Err(Refusal::OfferNotAvailable(
            "the offer is outside its validity window".into(),
        ));
    }
    if cmd.units < offer.min_units || cmd.units > offer.max_units {
        return Err(Refusal::invalid(
            "units",
            format!(
                "this offer sells {} to {} units per lease",
                offer.min_units, offer.max_units
            ),
        ));
    }
    if let Some(limit) = cmd.max_price_micros_per_unit_hour {
        if offer.price_micros_per_unit_hour > limit {
            return Err(Refusal::PriceAboveLimit {
                price_micros: offer.price_micros_per_unit_hour,
                limit_micros: limit,
            });
        }
    }
    let hold_micros = hold_amount(
        offer.price_micros_per_unit_hour,
        cmd.units,
        cmd.duration_limit_s,
    )
    .map_err(|_| Refusal::Overflow)?;
    if hold_micros == 0 {
        return Err(Refusal::invalid(
            "duration_limit_s",
            "the lease would cost nothing; buy a longer duration",
        ));
    }
    if i64::try_from(hold_micros).is_err() {
        return Err(Refusal::Overflow);
    }
    let [from, to] = accounts(buyer_id);
    Ok(PurchasePlan {
        hold_micros,
        terms: LeaseTerms {
            units: cmd.units,
            price_micros_per_unit_hour: offer.price_micros_per_unit_hour,
            duration_limit_s: cmd.duration_limit_s,
            started_ms: now_ms,
            hold_micros,
        },
        billing: if offer.agent_served {
            Billing::Metered
        } else {
            Billing::Elapsed
        },
        hold_from: from,
        hold_to: to,
    })
}

/// Places the plan's units on the pool's free `nodes` (node order, the order every writer takes
/// capacity in), or refuses when they do not fit.
pub fn place_units(
    nodes: &[NodeFree],
    shape: &UnitShape,
    qualifier: Option<&str>,
    units: u64,
) -> Result<Vec<Allocation>, Refusal> {
    let mut allocations =
        place(nodes, shape, qualifier, units).ok_or(Refusal::CapacityUnavailable)?;
    allocations.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    Ok(allocations)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer() -> OfferSnapshot {
        OfferSnapshot {
            state: OfferState::Active,
            valid_from_ms: 1_000,
            valid_until_ms: 10_000,
            min_units: 1,
            max_units: 4,
            price_micros_per_unit_hour: 3_600_000,
            agent_served: true,
        }
    }

    fn cmd(units: u64) -> PurchaseCommand {
        PurchaseCommand {
            units,
            duration_limit_s: 60,
            max_price_micros_per_unit_hour: None,
        }
    }

    #[test]
    fn a_consumer_buys_within_the_window_and_bounds() {
        let plan = decide(("org_c", OrgKind::Consumer), Some(&offer()), &cmd(2), 1_000).unwrap();
        assert_eq!(plan.hold_micros, 2 * 60_000);
        assert_eq!(plan.billing, Billing::Metered);
        assert_eq!(plan.terms.ends_at_ms(), 61_000);
        assert_eq!(
            plan.hold_from,
            AccountRef::org("org_c", AccountKind::Available)
        );
        assert_eq!(plan.hold_to, AccountRef::org("org_c", AccountKind::Held));
    }

    #[test]
    fn every_rule_refuses_on_its_own() {
        let c = ("org_c", OrgKind::Consumer);
        assert!(matches!(
            decide(("org_p", OrgKind::Provider), Some(&offer()), &cmd(1), 2_000),
            Err(Refusal::Forbidden(_))
        ));
        assert!(matches!(
            decide(c, None, &cmd(1), 2_000),
            Err(Refusal::Invalid {
                field: "offer_id",
                ..
            })
        ));
        let withdrawn = OfferSnapshot {
            state: OfferState::Withdrawn,
            ..offer()
        };
        assert!(matches!(
            decide(c, Some(&withdrawn), &cmd(1), 2_000),
            Err(Refusal::OfferNotAvailable(_))
        ));
        // The window is [from, until).
        assert!(decide(c, Some(&offer()), &cmd(1), 999).is_err());
        assert!(decide(c, Some(&offer()), &cmd(1), 9_999).is_ok());
        assert!(decide(c, Some(&offer()), &cmd(1), 10_000).is_err());
        assert!(matches!(
            decide(c, Some(&offer()), &cmd(5), 2_000),
            Err(Refusal::Invalid { field: "units", .. })
        ));
        assert!(matches!(
            decide(c, Some(&offer()), &cmd(0), 2_000),
            Err(Refusal::Invalid { field: "units", .. })
        ));
        let limited = PurchaseCommand {
            max_price_micros_per_unit_hour: Some(3_599_999),
            ..cmd(1)
        };
        assert_eq!(
            decide(c, Some(&offer()), &limited, 2_000),
            Err(Refusal::PriceAboveLimit {
                price_micros: 3_600_000,
                limit_micros: 3_599_999
            })
        );
        let free = PurchaseCommand {
            duration_limit_s: 0,
            ..cmd(1)
        };
        assert!(matches!(
            decide(c, Some(&offer()), &free, 2_000),
            Err(Refusal::Invalid {
                field: "duration_limit_s",
                ..
            })
        ));
        let huge = PurchaseCommand {
            duration_limit_s: u64::MAX,
            ..cmd(4)
        };
        assert_eq!(
            decide(c, Some(&offer()), &huge, 2_000),
            Err(Refusal::Overflow)
        );
    }

    #[test]
    fn a_command_keeps_the_exchanges_bounds() {
        let edges = [
            PurchaseCommand {
                units: 1,
                duration_limit_s: 1,
                max_price_micros_per_unit_hour: Some(1),
            },
            PurchaseCommand {
                units: MAX_UNITS,
                duration_limit_s: MAX_DURATION_S,
                max_price_micros_per_unit_hour: Some(MAX_PRICE_MICROS),
            },
            cmd(2),
        ];
        for c in edges {
            assert_eq!(decide_command(&c), Ok(()), "{c:?}");
        }
        let units = Refusal::invalid("units", "units must be between 1 and 1000000");
        let duration = Refusal::invalid(
            "duration_limit_s",
            "duration_limit_s must be between 1 and 31622400",
        );
        let limit = Refusal::invalid(
            "max_price_micros_per_unit_hour",
            "max_price_micros_per_unit_hour must be between 1 and 1000000000000",
        );
        let with = |units, duration_limit_s, limit| PurchaseCommand {
            units,
            duration_limit_s,
            max_price_micros_per_unit_hour: limit,
        };
        let cases = [
            (with(0, 60, None), units.clone()),
            (with(MAX_UNITS + 1, 60, None), units.clone()),
            (with(1, 0, None), duration.clone()),
            (with(1, MAX_DURATION_S + 1, None), duration.clone()),
            (with(1, 60, Some(0)), limit.clone()),
            (with(1, 60, Some(MAX_PRICE_MICROS + 1)), limit.clone()),
            // The first fault is refused: units, the duration, the price limit.
            (with(0, 0, Some(0)), units),
            (with(1, 0, Some(0)), duration),
            (with(1, 1, Some(0)), limit),
        ];
        for (c, want) in cases {
            assert_eq!(decide_command(&c), Err(want), "{c:?}");
        }
    }

    #[test]
    fn a_pool_without_an_agent_bills_elapsed_time() {
        let o = OfferSnapshot {
            agent_served: false,
            ..offer()
        };
        let plan = decide(("org_c", OrgKind::Consumer), Some(&o), &cmd(1), 2_000).unwrap();
        assert_eq!(plan.billing, Billing::Elapsed);
    }
}
