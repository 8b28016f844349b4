//! Buying access to a listing, and who may use which version when: a request is granted at once
//! (held and paid in one step) or held until the owner decides; every path ends its hold once.

use crate::data::{Gating, Price};
use crate::decide::settle::Leg;
use crate::decide::{AccountRef, Refusal};
use crate::ledger::{AccountKind, TransferKind};
use crate::money::fee_micros;
use crate::validate;

use super::VersionState;

/// What a request for access needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessSnapshot {
    pub owner_org_id: String,
    pub price: Price,
    pub gating: Gating,
    pub fee_bps: u32,
    /// The version asked for, if any, and its state (`None` when it does not exist or is a draft
    /// of another org: both read as missing).
    pub version: Option<(String, VersionState)>,
    /// A request of the buyer's is awaiting the owner's decision already.
    pub pending_request: bool,
    /// The buyer's entitlement now, if any: which version (`None`: every version) and until
    /// when (`None`: for good).
    pub entitlement: Option<Entitlement>,
}

/// Who may use which versions until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entitlement {
    /// `None`: every version of the listing.
    pub version: Option<String>,
    pub from_ms: i64,
    pub until_ms: Option<i64>,
    pub revoked: bool,
}

impl Entitlement {
    /// Whether it lets its holder use `version` at `now_ms`.
    pub fn covers(&self, version: &str, now_ms: i64) -> bool {
        !self.revoked
            && self.version.as_deref().is_none_or(|v| v == version)
            && self.until_ms.is_none_or(|until| now_ms < until)
    }
}

/// What a request for access does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessPlan {
    /// Access now: the entitlement, and the legs that pay for it (hold, then settle and fee),
    /// none for a free listing.
    Grant {
        entitlement: Entitlement,
        legs: Vec<Leg>,
    },
    /// The owner decides: the price is held until then, or until `expires_ms`.
    Await { hold: Option<Leg>, expires_ms: i64 },
}

/// The hold of `amount` from the buyer's available balance.
fn hold_leg(buyer: &str, amount: u64) -> Leg {
    Leg {
        kind: TransferKind::Hold,
        debit: AccountRef::org(buyer, AccountKind::Available),
        credit: AccountRef::org(buyer, AccountKind::Held),
        amount_micros: amount,
    }
}

/// The legs that pay the owner `amount` out of the buyer's held balance, less the fee.
fn pay_legs(buyer: &str, owner: &str, amount: u64, fee_bps: u32) -> Vec<Leg> {
    let fee = fee_micros(amount, fee_bps);
    let held = AccountRef::org(buyer, AccountKind::Held);
    [
        (
            TransferKind::Settle,
            AccountRef::org(owner, AccountKind::Earnings),
            amount - fee,
        ),
        (
            TransferKind::Fee,
            AccountRef::Operator(AccountKind::Fees),
            fee,
        ),
    ]
    .into_iter()
    .filter(|(_, _, amount)| *amount > 0)
    .map(|(kind, credit, amount_micros)| Leg {
        kind,
        debit: held.clone(),
        credit,
        amount_micros,
    })
    .collect()
}

/// The entitlement a purchase at `now_ms` gives.
fn entitlement_for(s: &AccessSnapshot, now_ms: i64) -> Entitlement {
    // A period bought while one runs extends it rather than overlapping it.
    let from_ms = match (&s.entitlement, s.price) {
        (Some(e), Price::PerPeriod { .. }) if e.covers_any(now_ms) => e.until_ms.unwrap_or(now_ms),
        _ => now_ms,
    };
    Entitlement {
        version: if s.price.per_version() {
            s.version.as_ref().map(|(label, _)| label.clone())
        } else {
            None
        },
        from_ms: now_ms,
        until_ms: s.price.access_until(from_ms),
        revoked: false,
    }
}

impl Entitlement {
    fn covers_any(&self, now_ms: i64) -> bool {
        !self.revoked && self.until_ms.is_none_or(|until| now_ms < until)
    }
}

/// Decides `buyer`'s request for access to a listing (to `version` when one is named; a listing
/// priced per version needs one). `accepted_licence`: the buyer accepted the licence shown.
/// `purpose` is required when the owner approves by hand.
pub fn decide_request(
    s: &AccessSnapshot,
    buyer: &str,
    accepted_licence: bool,
    purpose: &str,
    approval_timeout_ms: i64,
    now_ms: i64,
) -> Result<AccessPlan, Refusal> {
    if buyer == s.owner_org_id {
        return Err(Refusal::Forbidden(
            "an owner has access to its own listing already".into(),
        ));
    }
    match (&s.version, s.price.per_version()) {
        (Some((_, state)), _) if !state.visible() => return Err(Refusal::NotFound("version")),
        (None, true) => {
            return Err(Refusal::invalid(
                "version",
                "this listing is sold per version: name the version to buy",
            ))
        }
        _ => {}
    }
    if !accepted_licence {
        return Err(Refusal::invalid(
            "accept_licence",
            "read the listing's licence and accept it to request access",
        ));
    }
    if s.pending_request {
        return Err(Refusal::Duplicate {
            field: "listing",
            message: "a request of yours awaits the owner's decision already".into(),
        });
    }
    let wanted = s.version.as_ref().map(|(label, _)| label.as_str());
    if let Some(e) = &s.entitlement {
        let covered = match wanted {
            Some(v) => e.covers(v, now_ms),
            None => e.version.is_none() && e.covers_any(now_ms),
        };
        // A period may be bought ahead; anything else is had already.
        if covered && !matches!(s.price, Price::PerPeriod { .. }) {
            return Err(Refusal::Duplicate {
                field: "listing",
                message: "you have access already".into(),
            });
        }
    }
    let price = s.price.micros();
    match s.gating {
        Gating::Automatic => {
            let mut legs = Vec::new();
            if price > 0 {
                legs.push(hold_leg(buyer, price));
                legs.extend(pay_legs(buyer, &s.owner_org_id, price, s.fee_bps));
            }
            Ok(AccessPlan::Grant {
                entitlement: entitlement_for(s, now_ms),
                legs,
            })
        }
        Gating::Manual => {
            let purpose =
                validate::text(purpose).map_err(|why| Refusal::invalid("purpose", why))?;
            if purpose.trim().is_empty() {
                return Err(Refusal::invalid(
                    "purpose",
                    "the owner approves requests by hand: say what the data is for",
                ));
            }
            Ok(AccessPlan::Await {
                hold: (price > 0).then(|| hold_leg(buyer, price)),
                expires_ms: now_ms.saturating_add(approval_timeout_ms),
            })
        }
    }
}

/// A request awaiting the owner, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSnapshot {
    pub buyer_org_id: String,
    /// The version asked for (`None`: the listing).
    pub version: Option<String>,
    /// The listing's price when the request was made: what the buyer agreed to pay.
    pub price: Price,
    pub state: RequestState,
    pub expires_ms: i64,
    /// The amount held for it (0: free).
    pub held_micros: u64,
}

/// A request's life: pending until approved, denied, withdrawn by its buyer or expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestState {
    Pending,
    Approved,
    Denied,
    Withdrawn,
    Expired,
}

impl RequestState {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Pending => "pending",
            RequestState::Approved => "approved",
            RequestState::Denied => "denied",
            RequestState::Withdrawn => "withdrawn",
            RequestState::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<RequestState> {
        match s {
            "pending" => Some(RequestState::Pending),
            "approved" => Some(RequestState::Approved),
            "denied" => Some(RequestState::Denied),
            "withdrawn" => Some(RequestState::Withdrawn),
            "expired" => Some(RequestState::Expired),
            _ => None,
        }
    }
}

/// What is done with a pending request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestAction {
    Approve,
    Deny,
    Withdraw,
    /// The exchange's sweep: no answer in time.
    Expire,
}

/// What deciding a request does: its new state, the legs (pay the owner on approval, release the
/// hold otherwise), and on approval the entitlement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPlan {
    pub state: RequestState,
    pub legs: Vec<Leg>,
    pub entitlement: Option<Entitlement>,
}

/// Decides `action` on request `r` of a listing owned by `owner` by `actor` (`None`: the
/// exchange's sweep) at `now_ms`. The owner approves and denies; the buyer withdraws; the sweep
/// expires what no one answered in time. Every path ends the hold exactly once.
pub fn decide_on_request(
    r: &RequestSnapshot,
    owner_org_id: &str,
    fee_bps: u32,
    actor: Option<&str>,
    action: RequestAction,
    now_ms: i64,
) -> Result<RequestPlan, Refusal> {
    let is_owner = actor == Some(owner_org_id);
    let is_buyer = actor == Some(r.buyer_org_id.as_str());
    if actor.is_some() && !is_owner && !is_buyer {
        return Err(Refusal::NotFound("request"));
    }
    match (action, actor) {
        (RequestAction::Approve | RequestAction::Deny, _) if !is_owner => {
            return Err(Refusal::Forbidden(
                "only the listing's owner approves or denies a request".into(),
            ))
        }
        (RequestAction::Withdraw, _) if !is_buyer => {
            return Err(Refusal::Forbidden(
                "only the buyer withdraws its request".into(),
            ))
        }
        (RequestAction::Expire, Some(_)) => {
            return Err(Refusal::Forbidden("requests expire by themselves".into()))
        }
        _ => {}
    }
    if r.state != RequestState::Pending {
        return Err(Refusal::Forbidden(format!(
            "the request is {} already",
            r.state.as_str()
        )));
    }
    // An answer after the deadline is too late: the sweep voids the hold, whoever comes first.
    let late = now_ms >= r.expires_ms;
    if late && matches!(action, RequestAction::Approve | RequestAction::Deny) {
        return Err(Refusal::Forbidden(
            "the request expired before it was answered; its hold is void".into(),
        ));
    }
    if action == RequestAction::Expire && !late {
        return Err(Refusal::Forbidden("the request has time left".into()));
    }
    let buyer = r.buyer_org_id.as_str();
    let release = || {
        (r.held_micros > 0)
            .then(|| Leg {
                kind: TransferKind::Release,
                debit: AccountRef::org(buyer, AccountKind::Held),
                credit: AccountRef::org(buyer, AccountKind::Available),
                amount_micros: r.held_micros,
            })
            .into_iter()
            .collect()
    };
    Ok(match action {
        RequestAction::Approve => RequestPlan {
            state: RequestState::Approved,
            legs: pay_legs(buyer, owner_org_id, r.held_micros, fee_bps),
            // The access runs from the approval: a period is not spent waiting for it.
            entitlement: Some(Entitlement {
                version: if r.price.per_version() {
                    r.version.clone()
                } else {
                    None
                },
                from_ms: now_ms,
                until_ms: r.price.access_until(now_ms),
                revoked: false,
            }),
        },
        RequestAction::Deny => RequestPlan {
            state: RequestState::Denied,
            legs: release(),
            entitlement: None,
        },
        RequestAction::Withdraw => RequestPlan {
            state: RequestState::Withdrawn,
            legs: release(),
            entitlement: None,
        },
        RequestAction::Expire => RequestPlan {
            state: RequestState::Expired,
            legs: release(),
            entitlement: None,
        },
    })
}

/// Decides whether `org` may use `version` (in state `state`) of a listing owned by `owner` at
/// `now_ms`, given its entitlements. The owner always may; a draft is the owner's alone and
/// reads as missing to everyone else; a revoked or expired entitlement gives nothing.
pub fn decide_use(
    owner_org_id: &str,
    org: &str,
    version: &str,
    state: VersionState,
    entitlements: &[Entitlement],
    now_ms: i64,
) -> Result<(), Refusal> {
    if org == owner_org_id {
        return Ok(());
    }
    if !state.visible() {
        return Err(Refusal::NotFound("version"));
    }
    if entitlements.iter().any(|e| e.covers(version, now_ms)) {
        return Ok(());
    }
    let why = if entitlements.iter().any(|e| e.revoked) {
        "your access to this listing was revoked"
    } else if entitlements
        .iter()
        .any(|e| e.until_ms.is_some_and(|u| now_ms >= u))
    {
        "your access period has ended; buy another"
    } else {
        "you have no access to this version; request it first"
    };
    Err(Refusal::Forbidden(why.into()))
}

/// Decides the owner revoking an entitlement (`actor` must own the listing). What was paid is
/// not returned by revocation itself; a refund is a transfer of its own.
pub fn decide_revoke(owner_org_id: &str, actor: &str, e: &Entitlement) -> Result<(), Refusal> {
    if actor != owner_org_id {
        return Err(Refusal::NotFound("entitlement"));
    }
    if e.revoked {
        return Err(Refusal::Forbidden(
            "the entitlement is revoked already".into(),
        ));
    }
    Ok(())
}

/// The accounts a request can move money between, declared to the writer before it runs.
pub fn accounts(buyer: &str, owner: &str) -> [AccountRef; 4] {
    [
        AccountRef::org(buyer, AccountKind::Available),
        AccountRef::org(buyer, AccountKind::Held),
        AccountRef::org(owner, AccountKind::Earnings),
        AccountRef::Operator(AccountKind::Fees),
    ]
}
