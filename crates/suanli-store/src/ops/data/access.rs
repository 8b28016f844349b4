//! Access to data products: requests (granted at once, or held until the owner decides), their
//! answers and expiry, entitlements, use and revocation.
//!
//! Money moves as it does for a purchase, through [`Tx::transfer_with`] and the `holds` table:
//! a paid request holds its price (`hold`: the buyer's available → held), and the hold ends
//! exactly once, conditional on it being pending: posted when access is granted (`settle`: held →
//! the owner's earnings, the price less the fee; `fee`: held → the operator's fees), voided when
//! the request is denied, withdrawn or expires (`release`: held → available). Every such transfer
//! names the hold and the access request (`transfers.access_request_id`); none names a lease.

use super::*;
use crate::batch_ledger::TransferRefs;
use suanli_core::decide::data::{
    accounts, decide_on_request, decide_request, decide_revoke, decide_use, AccessPlan,
    AccessSnapshot, Entitlement, RequestAction, RequestSnapshot, RequestState,
};
use suanli_core::decide::settle::Leg;

/// A request for access to a listing, as its buyer makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRequest {
    pub buyer_org_id: String,
    /// The listing's name.
    pub listing: String,
    /// The version asked for (required when the listing is sold per version).
    pub version: Option<String>,
    /// The buyer accepted the listing's licence.
    pub accept_licence: bool,
    /// What the data is for (required when the owner approves by hand).
    pub purpose: String,
    /// How long a request for the owner's approval waits before its hold is voided.
    pub approval_timeout_ms: i64,
    pub now_ms: i64,
}

/// A request for access as stored: what was asked, at which price, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRequestRow {
    pub id: String,
    pub listing_id: String,
    pub listing_name: String,
    pub owner_org_id: String,
    pub buyer_org_id: String,
    pub version: Option<String>,
    /// The listing's price when the request was made: what the buyer agreed to pay.
    pub price: Price,
    pub purpose: String,
    pub state: RequestState,
    /// The hold of the price; `None` for a free listing.
    pub hold_id: Option<String>,
    pub held_micros: u64,
    pub created_ms: i64,
    /// When a pending request expires; a request granted at once was decided when made.
    pub expires_ms: i64,
    pub decided_ms: Option<i64>,
}

/// Who may use which versions of a listing until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntitlementRow {
    pub id: String,
    /// Who holds it.
    pub org_id: String,
    pub listing_id: String,
    pub listing_name: String,
    pub owner_org_id: String,
    /// `None`: every version of the listing.
    pub version: Option<String>,
    pub from_ms: i64,
    /// `None`: for good.
    pub until_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
    /// The request that granted it.
    pub request_id: String,
    pub created_ms: i64,
}

impl EntitlementRow {
    /// The entitlement as the core's rules see it.
    pub fn rule(&self) -> Entitlement {
        Entitlement {
            version: self.version.clone(),
            from_ms: self.from_ms,
            until_ms: self.until_ms,
            revoked: self.revoked_ms.is_some(),
        }
    }
}

/// What a request, or an answer to one, came to: the request, and the entitlement it granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessOutcome {
    pub request: AccessRequestRow,
    pub entitlement: Option<EntitlementRow>,
}

const REQUEST_SELECT: &str = "SELECT r.id, r.listing_id, l.name, l.org_id, r.buyer_org_id, \
    r.version_label, r.price_kind, r.price_micros, r.period_days, r.purpose, r.state, r.hold_id, \
    h.amount_micros, r.created_ms, r.expires_ms, r.decided_ms FROM access_requests r \
    JOIN data_listings l ON l.id = r.listing_id LEFT JOIN holds h ON h.id = r.hold_id";

const ENTITLEMENT_SELECT: &str = "SELECT e.id, e.org_id, e.listing_id, l.name, l.org_id, \
    e.version_label, e.from_ms, e.until_ms, e.revoked_ms, e.request_id, e.created_ms \
    FROM entitlements e JOIN data_listings l ON l.id = e.listing_id";

fn request_row(r: &Row) -> Result<AccessRequestRow, StoreError> {
    let hold_id = r.opt_str(11)?;
    let held_micros = match (&hold_id, r.opt_u64(12)?) {
        (None, None) => 0,
        (Some(_), Some(amount)) => amount,
        _ => {
            return Err(StoreError::Corrupt(
                "an access request names a hold that does not exist".into(),
            ))
        }
    };
    Ok(AccessRequestRow {
        id: r.str(0)?,
        listing_id: r.str(1)?,
        listing_name: r.str(2)?,
        owner_org_id: r.str(3)?,
        buyer_org_id: r.str(4)?,
        version: r.opt_str(5)?,
        price: price_at(r, 6)?,
        purpose: r.str(9)?,
        state: r.parsed(10, RequestState::parse)?,
        hold_id,
        held_micros,
        created_ms: r.i64(13)?,
        expires_ms: r.i64(14)?,
        decided_ms: r.opt_i64(15)?,
    })
}

fn entitlement_row(r: &Row) -> Result<EntitlementRow, StoreError> {
    Ok(EntitlementRow {
        id: r.str(0)?,
        org_id: r.str(1)?,
        listing_id: r.str(2)?,
        listing_name: r.str(3)?,
        owner_org_id: r.str(4)?,
        version: r.opt_str(5)?,
        from_ms: r.i64(6)?,
        until_ms: r.opt_i64(7)?,
        revoked_ms: r.opt_i64(8)?,
        request_id: r.str(9)?,
        created_ms: r.i64(10)?,
    })
}

/// Of an org's entitlements to a listing, the one that bears on a new request for `wanted` (a
/// version, or the listing): the live one covering it that runs longest, if any (a period bought
/// ahead runs on from its end).
fn covering(held: Vec<Entitlement>, wanted: Option<&str>, now_ms: i64) -> Option<Entitlement> {
    held.into_iter()
        .filter(|e| match wanted {
            Some(version) => e.covers(version, now_ms),
            None => e.version.is_none() && !e.revoked && e.until_ms.is_none_or(|u| now_ms < u),
        })
        .max_by_key(|e| e.until_ms.unwrap_or(i64::MAX))
}

impl Tx<'_> {
    /// The ids of the accounts a request by `buyer` for listing `listing` may move money on, to
    /// declare to the writer ([`crate::writer::Writer::submit_with_accounts`]); none when there
    /// is no such listing (the request is then refused and moves nothing).
    pub fn access_accounts(
        &mut self,
        buyer: &str,
        listing: &str,
    ) -> Result<Vec<String>, StoreError> {
        let owner = self.listing_by_name(listing)?.map(|l| l.org_id);
        self.declared_accounts(buyer, owner)
    }

    /// The ids of the accounts an answer to request `request_id` may move money on (see
    /// [`Tx::access_accounts`]).
    pub fn request_accounts(&mut self, request_id: &str) -> Result<Vec<String>, StoreError> {
        match self.request_by_id(request_id)? {
            Some(r) => self.declared_accounts(&r.buyer_org_id, Some(r.owner_org_id)),
            None => Ok(Vec::new()),
        }
    }

    fn declared_accounts(
        &mut self,
        buyer: &str,
        owner: Option<String>,
    ) -> Result<Vec<String>, StoreError> {
        match (owner, self.operator_org_id()?) {
            (Some(owner), Some(operator)) => Ok(account_ids(&accounts(buyer, &owner), &operator)),
            _ => Ok(Vec::new()),
        }
    }

    fn request_by_id(&mut self, id: &str) -> Result<Option<AccessRequestRow>, StoreError> {
        let rows = self
            .b
            .query(&format!("{REQUEST_SELECT} WHERE r.id = $1"), &[id.into()])?;
        rows.first().map(request_row).transpose()
    }

    fn entitlement_by_id(&mut self, id: &str) -> Result<Option<EntitlementRow>, StoreError> {
        let rows = self.b.query(
            &format!("{ENTITLEMENT_SELECT} WHERE e.id = $1"),
            &[id.into()],
        )?;
        rows.first().map(entitlement_row).transpose()
    }

    /// Every entitlement `org_id` was granted to a listing, revoked and ended ones included.
    fn entitlement_rules(
        &mut self,
        org_id: &str,
        listing_id: &str,
    ) -> Result<Vec<Entitlement>, StoreError> {
        let rows = self.b.query(
            &format!("{ENTITLEMENT_SELECT} WHERE e.org_id = $1 AND e.listing_id = $2"),
            &[org_id.into(), listing_id.into()],
        )?;
        rows.iter()
            .map(|r| Ok(entitlement_row(r)?.rule()))
            .collect()
    }

    /// Moves one leg of a request's money, naming its hold and the request.
    fn post_leg(
        &mut self,
        leg: &Leg,
        hold_id: &str,
        request_id: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let (debit, credit) = (self.account_of(&leg.debit)?, self.account_of(&leg.credit)?);
        let refs = TransferRefs {
            hold_id: Some(hold_id),
            access_request_id: Some(request_id),
            ..TransferRefs::default()
        };
        self.transfer_with(leg.kind, &debit, &credit, leg.amount_micros, refs, now_ms)?;
        Ok(())
    }

    /// Holds a request's price: the hold leg, then the pending hold it belongs to.
    fn hold_price(
        &mut self,
        leg: &Leg,
        buyer: &str,
        request_id: &str,
        now_ms: i64,
    ) -> Result<String, StoreError> {
        let hold_id = new_id("hold");
        self.post_leg(leg, &hold_id, request_id, now_ms)?;
        self.b.execute(
            "INSERT INTO holds (id, org_id, amount_micros, state, created_ms) \
             VALUES ($1, $2, $3, 'pending', $4)",
            &[
                (&hold_id).into(),
                buyer.into(),
                int(leg.amount_micros)?,
                now_ms.into(),
            ],
        )?;
        Ok(hold_id)
    }

    /// Ends a request's hold, exactly once: posted (`posted_micros` paid out) or voided.
    fn end_hold(
        &mut self,
        hold_id: &str,
        state: HoldState,
        posted_micros: u64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let n = self.b.execute(
            "UPDATE holds SET state = $2, posted_micros = $3, resolutions = resolutions + 1, \
             resolved_ms = $4 WHERE id = $1 AND state = 'pending'",
            &[
                hold_id.into(),
                state.as_str().into(),
                int(posted_micros)?,
                now_ms.into(),
            ],
        )?;
        if n != 1 {
            return Err(StoreError::Database(format!(
                "hold {hold_id} of a pending access request is not pending"
            )));
        }
        Ok(())
    }

    fn grant(
        &mut self,
        org_id: &str,
        listing_id: &str,
        e: &Entitlement,
        request_id: &str,
        now_ms: i64,
    ) -> Result<EntitlementRow, StoreError> {
        let id = new_id("ent");
        self.b.execute(
            "INSERT INTO entitlements (id, org_id, listing_id, version_label, from_ms, until_ms, \
             revoked_ms, request_id, created_ms) VALUES ($1, $2, $3, $4, $5, $6, NULL, $7, $8)",
            &[
                (&id).into(),
                org_id.into(),
                listing_id.into(),
                e.version.clone().into(),
                e.from_ms.into(),
                e.until_ms.into(),
                request_id.into(),
                now_ms.into(),
            ],
        )?;
        self.entitlement_by_id(&id)?
            .ok_or(StoreError::NotFound("entitlement"))
    }

    /// Requests access to a listing, as [`decide_request`] decides: a listing (and version)
    /// the buyer sees, not its own, the licence accepted, no request of the buyer's awaiting the
    /// owner, no access had already (a period may be bought ahead: it runs on from the current
    /// one's end). With automatic gating access is granted now: the price is held and paid out
    /// at once (the owner's earnings the price less the listing's fee, the operator's fees the
    /// fee) and the entitlement recorded; with manual gating the request awaits the owner, its
    /// price held, until `approval_timeout_ms` from now. Money short is
    /// [`StoreError::InsufficientFunds`], and nothing is written.
    ///
    /// The purpose is kept as normalised text; with automatic gating one that is not acceptable
    /// text is not kept (nobody reads it to decide).
    pub fn request_access(&mut self, r: &AccessRequest) -> Result<AccessOutcome, StoreError> {
        let buyer = self.get_org(&r.buyer_org_id)?.id;
        let listing = self.get_listing(&buyer, &r.listing)?;
        let version = match &r.version {
            Some(label) => {
                let v = self.version_for(&buyer, &listing, label)?;
                Some((v.label, v.state))
            }
            None => None,
        };
        let pending_request = !self
            .b
            .query(
                "SELECT 1 FROM access_requests WHERE listing_id = $1 AND buyer_org_id = $2 \
                 AND state = 'pending'",
                &[(&listing.id).into(), buyer.as_str().into()],
            )?
            .is_empty();
        let held = self.entitlement_rules(&buyer, &listing.id)?;
        let wanted = version.as_ref().map(|(label, _)| label.as_str());
        let snapshot = AccessSnapshot {
            owner_org_id: listing.org_id.clone(),
            price: listing.price,
            gating: listing.gating,
            fee_bps: listing.fee_bps,
            entitlement: covering(held, wanted, r.now_ms),
            version,
            pending_request,
        };
        let plan = decide_request(
            &snapshot,
            &buyer,
            r.accept_licence,
            &r.purpose,
            r.approval_timeout_ms,
            r.now_ms,
        )?;
        let purpose = suanli_core::validate::text(&r.purpose).unwrap_or_default();
        let id = new_id("areq");
        let now_ms = r.now_ms;
        let entitlement = match plan {
            AccessPlan::Grant { entitlement, legs } => {
                let (hold, pay): (Vec<Leg>, Vec<Leg>) =
                    legs.into_iter().partition(|l| l.kind == TransferKind::Hold);
                let hold_id = match hold.as_slice() {
                    [] if pay.is_empty() => None,
                    [leg] => Some(self.hold_price(leg, &buyer, &id, now_ms)?),
                    _ => {
                        return Err(StoreError::Database(
                            "a grant's legs are not one hold and its payment".into(),
                        ))
                    }
                };
                self.insert_request(&id, &listing, r, &purpose, hold_id.as_deref(), None)?;
                if let Some(hold_id) = &hold_id {
                    for leg in &pay {
                        self.post_leg(leg, hold_id, &id, now_ms)?;
                    }
                    let paid = pay.iter().map(|l| l.amount_micros).sum();
                    self.end_hold(hold_id, HoldState::Posted, paid, now_ms)?;
                }
                Some(self.grant(&buyer, &listing.id, &entitlement, &id, now_ms)?)
            }
            AccessPlan::Await { hold, expires_ms } => {
                let hold_id = match &hold {
                    Some(leg) => Some(self.hold_price(leg, &buyer, &id, now_ms)?),
                    None => None,
                };
                let pending = Some(expires_ms);
                self.insert_request(&id, &listing, r, &purpose, hold_id.as_deref(), pending)?;
                None
            }
        };
        let request = self
            .request_by_id(&id)?
            .ok_or(StoreError::NotFound("request"))?;
        Ok(AccessOutcome {
            request,
            entitlement,
        })
    }

    /// Records request `id`: awaiting the owner until `pending_until` when given, otherwise
    /// approved when made.
    fn insert_request(
        &mut self,
        id: &str,
        listing: &ListingRow,
        r: &AccessRequest,
        purpose: &str,
        hold_id: Option<&str>,
        pending_until: Option<i64>,
    ) -> Result<(), StoreError> {
        let (price_kind, price_micros, period_days) = price_columns(listing.price);
        let (state, expires_ms, decided_ms) = match pending_until {
            Some(expires_ms) => (RequestState::Pending, expires_ms, None),
            None => (RequestState::Approved, r.now_ms, Some(r.now_ms)),
        };
        let inserted = self.b.execute(
            "INSERT INTO access_requests (id, listing_id, buyer_org_id, version_label, price_kind, \
             price_micros, period_days, purpose, state, hold_id, created_ms, expires_ms, \
             decided_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            &[
                id.into(),
                (&listing.id).into(),
                (&r.buyer_org_id).into(),
                r.version.clone().into(),
                price_kind.into(),
                int(price_micros)?,
                period_days.into(),
                purpose.into(),
                state.as_str().into(),
                hold_id.into(),
                r.now_ms.into(),
                expires_ms.into(),
                decided_ms.into(),
            ],
        );
        match inserted {
            // Another exchange process recorded a pending request of the buyer's first: one
            // pending request per buyer and listing is the unique index's backstop.
            Err(StoreError::Conflict(_)) => Err(StoreError::Duplicate {
                field: "listing",
                message: "a request of yours awaits the owner's decision already".into(),
            }),
            other => other.map(|_| ()),
        }
    }

    /// Answers a pending request, as [`decide_on_request`] decides: the owner approves (the
    /// held price is paid out: the owner's earnings less the fee, the operator's fees; the
    /// entitlement runs from now) or denies, the buyer withdraws (`actor` is the org answering;
    /// `None` is the exchange's expiry, see [`Tx::expire_access_requests`]). Every path but
    /// approval voids the hold. A request is answered once: the state change is conditional on
    /// it being pending, so a retry or a racing answer changes nothing and is refused.
    pub fn answer_access_request(
        &mut self,
        actor: Option<&str>,
        request_id: &str,
        action: RequestAction,
        now_ms: i64,
    ) -> Result<AccessOutcome, StoreError> {
        let request = self
            .request_by_id(request_id)?
            .ok_or(StoreError::NotFound("request"))?;
        let listing = self.listing_by_id(&request.listing_id)?;
        self.answer(&request, &listing, actor, action, now_ms)?
            .ok_or_else(|| StoreError::Forbidden("the request was answered meanwhile".into()))
    }

    /// Decides and applies an answer; `None` when another answer was recorded since `request`
    /// was read (nothing was written).
    fn answer(
        &mut self,
        request: &AccessRequestRow,
        listing: &ListingRow,
        actor: Option<&str>,
        action: RequestAction,
        now_ms: i64,
    ) -> Result<Option<AccessOutcome>, StoreError> {
        let snapshot = RequestSnapshot {
            buyer_org_id: request.buyer_org_id.clone(),
            version: request.version.clone(),
            price: request.price,
            state: request.state,
            expires_ms: request.expires_ms,
            held_micros: request.held_micros,
        };
        let plan = decide_on_request(
            &snapshot,
            &listing.org_id,
            listing.fee_bps,
            actor,
            action,
            now_ms,
        )?;
        let n = self.b.execute(
            "UPDATE access_requests SET state = $2, decided_ms = $3 \
             WHERE id = $1 AND state = 'pending'",
            &[
                (&request.id).into(),
                plan.state.as_str().into(),
                now_ms.into(),
            ],
        )?;
        if n != 1 {
            return Ok(None);
        }
        match &request.hold_id {
            Some(hold_id) => {
                for leg in &plan.legs {
                    self.post_leg(leg, hold_id, &request.id, now_ms)?;
                }
                let (state, posted) = match plan.state {
                    RequestState::Approved => (HoldState::Posted, request.held_micros),
                    _ => (HoldState::Voided, 0),
                };
                self.end_hold(hold_id, state, posted, now_ms)?;
            }
            None if plan.legs.is_empty() => {}
            None => {
                return Err(StoreError::Database(format!(
                    "access request {} moves money but holds none",
                    request.id
                )))
            }
        }
        let entitlement = match &plan.entitlement {
            Some(e) => Some(self.grant(
                &request.buyer_org_id,
                &request.listing_id,
                e,
                &request.id,
                now_ms,
            )?),
            None => None,
        };
        let request = self
            .request_by_id(&request.id)?
            .ok_or(StoreError::NotFound("request"))?;
        Ok(Some(AccessOutcome {
            request,
            entitlement,
        }))
    }

    /// Pending requests whose time to be answered has passed at `now_ms`, the oldest deadline
    /// first.
    pub fn due_access_requests(
        &mut self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let rows = self.b.query(
            "SELECT id FROM access_requests WHERE state = 'pending' AND expires_ms <= $1 \
             ORDER BY expires_ms, id LIMIT $2",
            &[now_ms.into(), i64::from(limit).into()],
        )?;
        rows.iter().map(|r| r.str(0)).collect()
    }

    /// The exchange's sweep: expires up to `limit` pending requests nobody answered in time and
    /// voids their holds, each as [`decide_on_request`] decides. A request answered meanwhile
    /// (by another exchange process) is left as it is. Returns the requests it expired.
    pub fn expire_access_requests(
        &mut self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<AccessRequestRow>, StoreError> {
        let mut expired = Vec::new();
        for id in self.due_access_requests(now_ms, limit)? {
            let Some(request) = self.request_by_id(&id)? else {
                continue;
            };
            let listing = self.listing_by_id(&request.listing_id)?;
            match self.answer(&request, &listing, None, RequestAction::Expire, now_ms) {
                Ok(Some(outcome)) => expired.push(outcome.request),
                // Answered since it was found due: nothing was written for it.
                Ok(None) | Err(StoreError::Forbidden(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(expired)
    }

    /// A request as `viewer` sees it: its buyer's and its listing's owner's; to anyone else
    /// [`StoreError::NotFound`].
    pub fn get_access_request(
        &mut self,
        viewer: &str,
        request_id: &str,
    ) -> Result<AccessRequestRow, StoreError> {
        match self.request_by_id(request_id)? {
            Some(r) if r.buyer_org_id == viewer || r.owner_org_id == viewer => Ok(r),
            _ => Err(StoreError::NotFound("request")),
        }
    }

    /// The requests `org_id` made and those made to its listings, newest first; in `state` only
    /// when given.
    pub fn list_access_requests(
        &mut self,
        org_id: &str,
        state: Option<RequestState>,
        limit: u32,
    ) -> Result<Vec<AccessRequestRow>, StoreError> {
        let rows = self.b.query(
            &format!(
                "{REQUEST_SELECT} WHERE (r.buyer_org_id = $1 OR l.org_id = $1) \
                 AND ($2 = '' OR r.state = $2) ORDER BY r.created_ms DESC, r.id DESC LIMIT $3"
            ),
            &[
                org_id.into(),
                state.map_or("", RequestState::as_str).into(),
                i64::from(limit).into(),
            ],
        )?;
        rows.iter().map(request_row).collect()
    }

    /// The entitlements `org_id` holds and those granted on its listings (revoked and ended
    /// ones included), newest first; to the listing named `listing` only when given.
    pub fn entitlements(
        &mut self,
        org_id: &str,
        listing: Option<&str>,
    ) -> Result<Vec<EntitlementRow>, StoreError> {
        let rows = self.b.query(
            &format!(
                "{ENTITLEMENT_SELECT} WHERE (e.org_id = $1 OR l.org_id = $1) \
                 AND ($2 = '' OR l.name = $2) ORDER BY e.created_ms DESC, e.id DESC"
            ),
            &[org_id.into(), listing.unwrap_or("").into()],
        )?;
        rows.iter().map(entitlement_row).collect()
    }

    /// Whether `org_id` may use version `label` of `listing` at `now_ms`, as [`decide_use`]
    /// decides: the owner always; anyone else with a live entitlement that covers it (a
    /// deprecated version too). Returns the version; a listing or a version the org does not
    /// see is [`StoreError::NotFound`], and no access (none, ended or revoked) is
    /// [`StoreError::Forbidden`] saying which.
    pub fn may_use(
        &mut self,
        org_id: &str,
        listing: &str,
        label: &str,
        now_ms: i64,
    ) -> Result<VersionRow, StoreError> {
        let (l, v) = self.listing_and_version(org_id, listing, label)?;
        let held = self.entitlement_rules(org_id, &l.id)?;
        decide_use(&l.org_id, org_id, label, v.state, &held, now_ms)?;
        Ok(v)
    }

    /// Revokes an entitlement, as [`decide_revoke`] decides: its listing's owner, once (the
    /// change is conditional on it not being revoked). What was paid stays paid; a refund is a
    /// transfer of its own.
    pub fn revoke_entitlement(
        &mut self,
        actor: &str,
        entitlement_id: &str,
        now_ms: i64,
    ) -> Result<EntitlementRow, StoreError> {
        let e = self
            .entitlement_by_id(entitlement_id)?
            .ok_or(StoreError::NotFound("entitlement"))?;
        decide_revoke(&e.owner_org_id, actor, &e.rule())?;
        let n = self.b.execute(
            "UPDATE entitlements SET revoked_ms = $2 WHERE id = $1 AND revoked_ms IS NULL",
            &[entitlement_id.into(), now_ms.into()],
        )?;
        if n != 1 {
            return Err(StoreError::Forbidden(
                "the entitlement is revoked already".into(),
            ));
        }
        self.entitlement_by_id(entitlement_id)?
            .ok_or(StoreError::NotFound("entitlement"))
    }
}
