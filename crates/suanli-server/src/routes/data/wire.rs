//! Data products between the wire and the core: requests parsed into the core's types (a field
//! that names no known value is refused with its name), rows shown as wire types.

use suanli_api as api;
use suanli_core::data::{AccessMode, Gating, Licence, ListingKind, ModelInfo, Price};
use suanli_core::decide::data::{NewListing, RequestAction, RequestState};
use suanli_store::ops::{
    AccessOutcome, AccessRequestRow, EntitlementRow, FileRow, ListingRow, VersionRow,
};

use crate::error::ApiError;
use crate::wire::time;

fn one_of<T>(
    field: &str,
    value: &str,
    parse: fn(&str) -> Option<T>,
    known: &str,
) -> Result<T, ApiError> {
    parse(value).ok_or_else(|| ApiError::invalid(field, format!("{value:?} is not one of {known}")))
}

pub fn kind(value: &str) -> Result<ListingKind, ApiError> {
    one_of("kind", value, ListingKind::parse, "dataset, model")
}

pub fn request_state(value: &str) -> Result<RequestState, ApiError> {
    one_of(
        "state",
        value,
        RequestState::parse,
        "pending, approved, denied, withdrawn, expired",
    )
}

/// The price as the core reads it; amounts and periods are the core's to check.
pub fn price(p: &api::PriceBody) -> Result<Price, ApiError> {
    let no_period = || {
        if p.period_days.is_some() {
            Err(ApiError::invalid(
                "price.period_days",
                "only a per_period price has a period",
            ))
        } else {
            Ok(())
        }
    };
    match p.kind.as_str() {
        "free" => {
            no_period()?;
            if p.price_micros != 0 {
                return Err(ApiError::invalid(
                    "price.price_micros",
                    "a free listing has no price",
                ));
            }
            Ok(Price::Free)
        }
        "per_version" => {
            no_period()?;
            Ok(Price::PerVersion {
                micros: p.price_micros,
            })
        }
        "per_period" => Ok(Price::PerPeriod {
            micros: p.price_micros,
            days: p.period_days.ok_or_else(|| {
                ApiError::invalid("price.period_days", "a per_period price needs period_days")
            })?,
        }),
        other => Err(ApiError::invalid(
            "price.kind",
            format!("{other:?} is not one of free, per_version, per_period"),
        )),
    }
}

pub fn price_body(p: Price) -> api::PriceBody {
    match p {
        Price::Free => api::PriceBody {
            kind: "free".into(),
            price_micros: 0,
            period_days: None,
        },
        Price::PerVersion { micros } => api::PriceBody {
            kind: "per_version".into(),
            price_micros: micros,
            period_days: None,
        },
        Price::PerPeriod { micros, days } => api::PriceBody {
            kind: "per_period".into(),
            price_micros: micros,
            period_days: Some(days),
        },
    }
}

fn licence(l: &api::LicenceBody) -> Result<Licence, ApiError> {
    match (&l.spdx, &l.text) {
        (Some(id), None) => Ok(Licence::Spdx(id.clone())),
        (None, Some(text)) => Ok(Licence::Custom(text.clone())),
        _ => Err(ApiError::invalid(
            "licence",
            "give the licence as {\"spdx\": \"<SPDX id>\"} or as {\"text\": \"<terms>\"}, one of them",
        )),
    }
}

fn licence_body(l: &Licence) -> api::LicenceBody {
    match l {
        Licence::Spdx(id) => api::LicenceBody {
            spdx: Some(id.clone()),
            text: None,
        },
        Licence::Custom(text) => api::LicenceBody {
            spdx: None,
            text: Some(text.clone()),
        },
    }
}

/// A listing as the core decides it: the enumerations parsed here, every other rule the core's.
pub fn new_listing(r: api::CreateListingRequest) -> Result<NewListing, ApiError> {
    Ok(NewListing {
        kind: kind(&r.kind)?,
        access: one_of(
            "access",
            &r.access,
            AccessMode::parse,
            "download, compute-only",
        )?,
        gating: one_of("gating", &r.gating, Gating::parse, "automatic, manual")?,
        price: price(&r.price)?,
        licence: licence(&r.licence)?,
        model: r.model.map(|m| ModelInfo {
            framework: m.framework,
            format: m.format,
            parameters: m.parameters,
        }),
        name: r.name,
        title_zh: r.title_zh,
        title_en: r.title_en,
        description_zh: r.description_zh,
        description_en: r.description_en,
        tags: r.tags,
        card: r.card,
    })
}

pub fn listing(l: &ListingRow) -> api::Listing {
    api::Listing {
        id: l.id.clone(),
        name: l.name.clone(),
        org_id: l.org_id.clone(),
        kind: l.kind.as_str().into(),
        title_zh: l.title_zh.clone(),
        title_en: l.title_en.clone(),
        description_zh: l.description_zh.clone(),
        description_en: l.description_en.clone(),
        tags: l.tags.clone(),
        card: l.card.clone(),
        licence: licence_body(&l.licence),
        access: l.access.as_str().into(),
        gating: l.gating.as_str().into(),
        price: price_body(l.price),
        model: l.model.as_ref().map(|m| api::ModelBody {
            framework: m.framework.clone(),
            format: m.format.clone(),
            parameters: m.parameters,
        }),
        fee_bps: l.fee_bps,
        visible: l.visible,
        created_at: time(l.created_ms),
    }
}

pub fn version(listing: &str, v: &VersionRow) -> api::Version {
    api::Version {
        id: v.id.clone(),
        listing: listing.to_owned(),
        version: v.label.clone(),
        state: v.state.as_str().into(),
        files: v.files,
        bytes: v.bytes,
        created_at: time(v.created_ms),
        published_at: v.published_ms.map(time),
        deprecated_at: v.deprecated_ms.map(time),
    }
}

pub fn file(f: &FileRow) -> api::DataFile {
    api::DataFile {
        path: f.path.clone(),
        size: f.size,
        sha256: f.sha256.clone(),
        verified: f.verified,
        received_bytes: f.received_bytes,
    }
}

pub fn request(r: &AccessRequestRow) -> api::AccessRequestBody {
    api::AccessRequestBody {
        id: r.id.clone(),
        listing: r.listing_name.clone(),
        owner_org_id: r.owner_org_id.clone(),
        buyer_org_id: r.buyer_org_id.clone(),
        version: r.version.clone(),
        price: price_body(r.price),
        purpose: r.purpose.clone(),
        state: r.state.as_str().into(),
        held_micros: if r.state == RequestState::Pending {
            r.held_micros
        } else {
            0
        },
        created_at: time(r.created_ms),
        expires_at: time(r.expires_ms),
        decided_at: r.decided_ms.map(time),
    }
}

pub fn entitlement(e: &EntitlementRow) -> api::EntitlementBody {
    api::EntitlementBody {
        id: e.id.clone(),
        org_id: e.org_id.clone(),
        listing: e.listing_name.clone(),
        version: e.version.clone(),
        from: time(e.from_ms),
        until: e.until_ms.map(time),
        revoked_at: e.revoked_ms.map(time),
        request_id: e.request_id.clone(),
    }
}

pub fn outcome(o: &AccessOutcome) -> api::AccessOutcomeBody {
    api::AccessOutcomeBody {
        request: request(&o.request),
        entitlement: o.entitlement.as_ref().map(entitlement),
    }
}

/// The answers to a request, by the last part of their route.
pub fn action(name: &str) -> Option<RequestAction> {
    match name {
        "approve" => Some(RequestAction::Approve),
        "deny" => Some(RequestAction::Deny),
        "withdraw" => Some(RequestAction::Withdraw),
        _ => None,
    }
}
