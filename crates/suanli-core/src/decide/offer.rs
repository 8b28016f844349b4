//! Publishing and withdrawing offers.

use super::Refusal;
use crate::resource::{Category, ResourceClass};

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
