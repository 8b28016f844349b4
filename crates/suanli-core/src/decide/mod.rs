//! The market's decisions: for each state-changing command, a pure function from a typed snapshot
//! of what the command needs, the command and `now_ms` to either what to do (the effects, with
//! the accounts, pools and rows they touch) or a typed [`Refusal`].
//!
//! The store loads the snapshot, calls the decision, and applies what it returns; it keeps no rule
//! of its own beyond the database's constraints (which also hold when several exchange processes
//! share one PostgreSQL: a conditional update that matches no row is the same refusal, decided
//! again on fresher data).
//!
//! - [`access`]: who may send which command (the operator's, a provider's, a consumer's, an org
//!   admin's) and which orgs and offers a caller may read.
//! - [`purchase`]: who may buy, the command's bounds (units, duration, price limit), the offer's
//!   window, unit bounds and price limit, the hold.
//! - [`settle`]: who may end a lease, metered or elapsed billing, the legs of the settlement.
//! - [`money`]: deposits and withdrawals (their amount's bounds), recorded once per external
//!   reference.
//! - [`offer`]: publishing offers (CPUs per unit by category, memory, price and unit bounds, the
//!   validity window) and withdrawing them.
//! - [`org`]: admitting and renaming orgs (names unique under their key, a consumer's type, one
//!   operator), tokens for an org's members (their lifetime), revoking them once.
//! - [`pool`]: a pool's nodes (how many, their capacity, named apart, known accelerator models),
//!   which pool an agent's registration serves, the registry's models (their memory) and a
//!   quote's model (one the registry knows).
//! - [`job`]: creating and cancelling jobs (a task's sizes), the time an attempt is given,
//!   fencing, and what an agent may report of an attempt (its state, usage while the lease lasts,
//!   logs, outputs within their cap, and how much one report carries).
//! - [`liveness`]: agents that went silent and what becomes of their attempts' jobs, when the
//!   exchange suspects itself instead, attempts that never reached their agent, and which
//!   registration of an agent may report.
//!
//! Rules that are only the database's constraints (a unique index, a foreign key, a CHECK) stay
//! there; each module's documentation names the ones its commands meet.

pub mod access;
pub mod data;
pub mod job;
pub mod liveness;
pub mod money;
pub mod offer;
pub mod org;
pub mod pool;
pub mod purchase;
pub mod settle;

use crate::lease::LeaseState;
use crate::ledger::AccountKind;

/// Why a command is refused. Each maps to one stable error code at the API's edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The object is missing, or belongs to another org (tenants are isolated: both read alike).
    NotFound(&'static str),
    /// A field of the command is unacceptable.
    Invalid {
        field: &'static str,
        message: String,
    },
    /// Something recorded once is recorded already.
    Duplicate {
        field: &'static str,
        message: String,
    },
    /// The caller may not do this.
    Forbidden(String),
    /// The offer cannot be bought now.
    OfferNotAvailable(String),
    /// The offer's price is above the buyer's limit.
    PriceAboveLimit {
        price_micros: u64,
        limit_micros: u64,
    },
    /// Not enough free capacity for the units asked.
    CapacityUnavailable,
    /// The lease has ended already.
    LeaseNotActive(LeaseState),
    /// The lease has less than a second left.
    LeaseEnding,
    /// The job has ended already.
    JobNotActive(crate::job::JobState),
    /// A report about an attempt that is not current (fencing).
    StaleAttempt(String),
    /// An agent's registration or report from a process another start of its identity replaced.
    Superseded {
        agent_id: String,
        current: u64,
        reported: u64,
    },
    /// An amount would overflow the ledger.
    Overflow,
}

impl Refusal {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Refusal {
        Refusal::Invalid {
            field,
            message: message.into(),
        }
    }
}

/// Decides that a command's number `value` in `field` is within `min..=max`, as every such bound
/// reads at the API: `<field> must be between <min> and <max>`.
pub(crate) fn within(field: &'static str, value: u64, min: u64, max: u64) -> Result<(), Refusal> {
    if value < min || value > max {
        return Err(Refusal::invalid(
            field,
            format!("{field} must be between {min} and {max}"),
        ));
    }
    Ok(())
}

/// A refusal of one item of a list or map the command carries (a pool's node, a log chunk, an
/// environment variable): the API names its field `list[index].field` (or `list.key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemRefusal {
    /// The list's field in the command.
    pub list: &'static str,
    /// Which of its items.
    pub item: Item,
    /// The item's own field at fault (`None`: the item as a whole).
    pub field: Option<&'static str>,
    pub message: String,
}

/// An item of a list (by its index) or of a map (by its key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Index(usize),
    Key(String),
}

impl ItemRefusal {
    /// The field at fault, as the API names it: `nodes[3].cpus`, `chunks[0]`, `task.env.PATH`.
    pub fn path(&self) -> String {
        let item = match &self.item {
            Item::Index(i) => format!("{}[{i}]", self.list),
            Item::Key(k) => format!("{}.{k}", self.list),
        };
        match self.field {
            Some(field) => format!("{item}.{field}"),
            None => item,
        }
    }
}

/// The kind of an org: what it may do on the market.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OrgKind {
    /// Buys capacity and runs jobs (an enterprise or a research institute).
    Consumer,
    /// Connects capacity through agents and sells it.
    Provider,
    /// Runs the exchange: admits orgs, records payments, collects fees.
    Operator,
}

impl OrgKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OrgKind::Consumer => "consumer",
            OrgKind::Provider => "provider",
            OrgKind::Operator => "operator",
        }
    }

    /// The accounts an org of this kind has: every org its available, held and earnings; the
    /// operator also the platform's fees and the outside world (deposits come from it).
    pub fn accounts(self) -> &'static [AccountKind] {
        match self {
            OrgKind::Operator => &[
                AccountKind::Available,
                AccountKind::Held,
                AccountKind::Earnings,
                AccountKind::Fees,
                AccountKind::External,
            ],
            _ => &[
                AccountKind::Available,
                AccountKind::Held,
                AccountKind::Earnings,
            ],
        }
    }

    pub fn parse(s: &str) -> Option<OrgKind> {
        match s {
            "consumer" => Some(OrgKind::Consumer),
            "provider" => Some(OrgKind::Provider),
            "operator" => Some(OrgKind::Operator),
            _ => None,
        }
    }
}

/// An account a decision touches: an org's own, or the operator's (fees, the outside world).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AccountRef {
    Org(String, AccountKind),
    Operator(AccountKind),
}

impl AccountRef {
    pub fn org(org_id: &str, kind: AccountKind) -> AccountRef {
        AccountRef::Org(org_id.to_owned(), kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_kinds_round_trip_and_unknown_ones_do_not_parse() {
        for k in [OrgKind::Consumer, OrgKind::Provider, OrgKind::Operator] {
            assert_eq!(OrgKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(OrgKind::parse("Consumer"), None);
        assert_eq!(OrgKind::parse(""), None);
    }

    #[test]
    fn a_bound_takes_its_ends_and_names_them_when_it_refuses() {
        assert_eq!(within("units", 1, 1, 4), Ok(()));
        assert_eq!(within("units", 4, 1, 4), Ok(()));
        for v in [0, 5, u64::MAX] {
            assert_eq!(
                within("units", v, 1, 4),
                Err(Refusal::invalid("units", "units must be between 1 and 4"))
            );
        }
    }

    #[test]
    fn an_item_refusal_names_its_field_as_the_api_does() {
        let at = |item, field| ItemRefusal {
            list: "nodes",
            item,
            field,
            message: String::new(),
        };
        assert_eq!(at(Item::Index(3), Some("cpus")).path(), "nodes[3].cpus");
        assert_eq!(at(Item::Index(0), None).path(), "nodes[0]");
        assert_eq!(at(Item::Key("PATH".into()), None).path(), "nodes.PATH");
    }
}
