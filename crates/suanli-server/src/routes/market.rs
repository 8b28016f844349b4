//! Consumer side: the catalog, quotes, purchases and leases.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use suanli_api::{
    CatalogParams, ErrorBody, ExcludedOffer, Lease, LeaseId, LeaseListParams, List, Offer, OfferId,
    PurchaseRequest, QuoteRequest, QuoteResponse, QuotedOffer,
};
use suanli_core::decide;
use suanli_core::decide::access::Action;
use suanli_core::decide::pool::ModelNamedIn;
use suanli_core::decide::purchase::PurchaseCommand;
use suanli_core::lease::EndReason;
use suanli_core::quote::{OfferView, Requirements};
use suanli_core::resource::Category;
use suanli_core::validate::{MAX_DURATION_S, MAX_UNITS};
use suanli_store::ops::{account_ids, Purchase};
use suanli_store::StoreError;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, BodylessHash, IdPath, IdempotencyKey, Named};
use crate::routes::{id, limit, range, slug, zone, MAX_MEMORY_MIB, MAX_PRICE_MICROS};
use crate::{now_ms, wire, AppState, WriteOptions};

/// An offer of the book as a wire offer.
pub fn offer_of_view(o: &OfferView) -> Offer {
    Offer {
        id: o.offer_id.clone(),
        org_id: o.provider_org_id.clone(),
        provider_name: o.provider_name.clone(),
        pool_id: o.pool_id.clone(),
        zone: o.zone.clone(),
        class: o.class.to_string(),
        category: o.class.category.as_str().into(),
        accelerator_model: (o.class.category == Category::Intelligent)
            .then(|| o.class.qualifier.clone())
            .flatten(),
        partition: (o.class.category == Category::Supercomputing)
            .then(|| o.class.qualifier.clone())
            .flatten(),
        accelerator_memory_gib: o.accelerator_memory_gib,
        cpus_per_unit: o.shape.cpus_per_unit,
        memory_mib_per_unit: o.shape.memory_mib_per_unit,
        price_micros_per_unit_hour: o.price_micros_per_unit_hour,
        min_units: o.min_units,
        max_units: o.max_units,
        valid_from: wire::time(o.valid_from_ms),
        valid_until: wire::time(o.valid_until_ms),
        state: "active".into(),
        units_available: o.units_available,
        created_at: wire::time(o.created_ms),
    }
}

/// The market's active offers, cheapest first (public to every org).
#[utoipa::path(get, path = "/api/v1/catalog/offers", tag = "market", security(("bearer" = [])),
    params(CatalogParams),
    responses((status = 200, body = List<Offer>), (status = 400, body = ErrorBody)))]
pub async fn catalog(
    State(state): State<AppState>,
    _caller: Caller,
    ApiQuery(params): ApiQuery<CatalogParams>,
) -> Result<Json<List<Offer>>, ApiError> {
    let category = params
        .category
        .as_deref()
        .map(|c| {
            c.parse::<Category>().map_err(|()| {
                ApiError::field(
                    suanli_api::ErrorCode::InvalidQuery,
                    "category",
                    "category is general, intelligent or supercomputing",
                )
            })
        })
        .transpose()?;
    if let Some(z) = &params.zone {
        zone(&state, "zone", z).map_err(|e| ApiError {
            code: suanli_api::ErrorCode::InvalidQuery,
            ..e
        })?;
    }
    let limit = limit(params.limit)? as usize;
    let now = now_ms();
    let book = state.store.book.read().unwrap_or_else(|p| p.into_inner());
    let mut offers: Vec<&OfferView> = book
        .live()
        .filter(|o| category.is_none_or(|c| o.class.category == c))
        .filter(|o| params.zone.as_deref().is_none_or(|z| o.zone == z))
        .filter(|o| now >= o.valid_from_ms && now < o.valid_until_ms)
        .collect();
    offers.sort_by(|a, b| {
        a.price_micros_per_unit_hour
            .cmp(&b.price_micros_per_unit_hour)
            .then_with(|| a.offer_id.cmp(&b.offer_id))
    });
    Ok(Json(List {
        items: offers.into_iter().take(limit).map(offer_of_view).collect(),
    }))
}

/// Turns a quote request into core requirements, refusing unknown or contradictory constraints.
async fn requirements(state: &AppState, req: &QuoteRequest) -> Result<Requirements, ApiError> {
    range("duration_limit_s", req.duration_limit_s, 1, MAX_DURATION_S)?;
    let mut category = None;
    let mut qualifier = None;
    if let Some(class) = &req.class {
        let (cat, qual) = match class.split_once(':') {
            Some((c, q)) => (c, Some(q.to_owned())),
            None => (class.as_str(), None),
        };
        let cat: Category = cat.parse().map_err(|()| {
            ApiError::invalid(
                "class",
                "class is general, intelligent[:MODEL] or supercomputing[:PARTITION]",
            )
        })?;
        if cat == Category::General && qual.is_some() {
            return Err(ApiError::invalid(
                "class",
                "the general class has no qualifier",
            ));
        }
        if let Some(q) = &qual {
            slug("class", q)?;
        }
        category = Some(cat);
        qualifier = qual;
    }
    let wants_accelerators = req.accelerator_model.is_some()
        || req.accelerators.is_some()
        || req.min_accelerator_memory_gib.is_some();
    if wants_accelerators {
        match category {
            None => category = Some(Category::Intelligent),
            Some(Category::Intelligent) => {}
            Some(_) => {
                return Err(ApiError::invalid(
                    "class",
                    "accelerator constraints need the intelligent class",
                ))
            }
        }
    }
    if let Some(model) = &req.accelerator_model {
        slug("accelerator_model", model)?;
        if qualifier.as_deref().is_some_and(|q| q != model) {
            return Err(ApiError::invalid(
                "accelerator_model",
                "accelerator_model contradicts the class",
            ));
        }
        qualifier = Some(model.clone());
    }
    let category = category.unwrap_or(Category::General);
    if category == Category::Intelligent {
        if let Some(model) = qualifier.clone() {
            let named_in = if req.accelerator_model.is_some() {
                ModelNamedIn::AcceleratorModel
            } else {
                ModelNamedIn::Class
            };
            let memory_gib = state
                .read(move |tx| tx.accelerator_memory_gib(&model))
                .await?;
            decide::pool::decide_quoted_model(named_in, memory_gib)?;
        }
    }
    let units = match (category, req.units, req.accelerators, req.cpus) {
        (_, Some(u), Some(a), _) if u != a => {
            return Err(ApiError::invalid(
                "units",
                "units and accelerators disagree",
            ));
        }
        (_, Some(u), _, _) => u,
        (Category::Intelligent, None, Some(a), _) => a,
        (Category::Intelligent, None, None, _) => 1,
        (_, None, _, Some(c)) => c,
        (_, None, _, None) => {
            return Err(ApiError::invalid(
                "units",
                "say how many units (or cpus) you need",
            ));
        }
    };
    range("units", units, 1, MAX_UNITS)?;
    if let Some(c) = req.cpus {
        range("cpus", c, 1, MAX_UNITS * 1024)?;
    }
    if let Some(m) = req.memory_mib {
        range("memory_mib", m, 1, MAX_MEMORY_MIB * 1024)?;
    }
    if let Some(p) = req.max_price_micros_per_unit_hour {
        range("max_price_micros_per_unit_hour", p, 1, MAX_PRICE_MICROS)?;
    }
    if let Some(z) = &req.zone {
        zone(state, "zone", z)?;
    }
    Ok(Requirements {
        category: Some(category),
        qualifier,
        units,
        min_accelerator_memory_gib: req.min_accelerator_memory_gib,
        cpus: req.cpus,
        memory_mib: req.memory_mib,
        zone: req.zone.clone(),
        max_price_micros_per_unit_hour: req.max_price_micros_per_unit_hour,
        duration_s: req.duration_limit_s,
    })
}

/// Ranks the feasible offers for a consumer's requirements, cheapest total first, and says why
/// the other offers were excluded. No side effects.
#[utoipa::path(post, path = "/api/v1/quotes", tag = "market", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "accepted; a quote has no effect")),
    request_body = QuoteRequest,
    responses((status = 200, body = QuoteResponse), (status = 400, body = ErrorBody)))]
pub async fn quote(
    State(state): State<AppState>,
    _caller: Caller,
    _key: IdempotencyKey,
    body: ApiJson<QuoteRequest>,
) -> Result<Json<QuoteResponse>, ApiError> {
    let req = body.value;
    let excluded_limit = match req.excluded_limit {
        None => 50,
        Some(v) if v <= 1000 => v as usize,
        Some(_) => {
            return Err(ApiError::invalid(
                "excluded_limit",
                "excluded_limit is at most 1000",
            ))
        }
    };
    let limit = match req.limit {
        None => 50,
        Some(v) if (1..=1000).contains(&v) => v as usize,
        Some(_) => return Err(ApiError::invalid("limit", "limit is between 1 and 1000")),
    };
    let requirements = requirements(&state, &req).await?;
    let now = now_ms();
    let book = state.store.book.read().unwrap_or_else(|p| p.into_inner());
    let outcome = book
        .quote_top(&requirements, now, limit, excluded_limit)
        .map_err(|e| ApiError::new(suanli_api::ErrorCode::Overflow, e.to_string()))?;
    Ok(Json(QuoteResponse {
        units: requirements.units,
        duration_limit_s: requirements.duration_s,
        feasible: outcome.feasible,
        offers: outcome
            .candidates
            .iter()
            .enumerate()
            .map(|(i, c)| QuotedOffer {
                rank: i as u32 + 1,
                offer: offer_of_view(book.offer(c.offer_index)),
                units: requirements.units,
                total_micros: c.total_micros,
            })
            .collect(),
        excluded: outcome
            .excluded
            .iter()
            .map(|(i, reason)| {
                let o = book.offer(*i);
                ExcludedOffer {
                    offer_id: o.offer_id.clone(),
                    provider_org_id: o.provider_org_id.clone(),
                    provider_name: o.provider_name.clone(),
                    class: o.class.to_string(),
                    zone: o.zone.clone(),
                    price_micros_per_unit_hour: o.price_micros_per_unit_hour,
                    units_available: o.units_available,
                    reason: reason.as_str().into(),
                }
            })
            .collect(),
        excluded_counts: outcome
            .excluded_counts
            .iter()
            .map(|(r, n)| (r.as_str().to_owned(), *n))
            .collect(),
        quoted_at: wire::time(now),
    }))
}

/// Buys units of an offer for up to a duration: holds the worst case, reserves the capacity and
/// creates the lease, all or nothing.
#[utoipa::path(post, path = "/api/v1/leases", tag = "market", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "retry key")),
    request_body = PurchaseRequest,
    responses((status = 201, body = Lease), (status = 400, body = ErrorBody), (status = 402, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn purchase(
    State(state): State<AppState>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    body: ApiJson<PurchaseRequest>,
) -> Result<Response, ApiError> {
    caller.may(Action::BuyCapacity)?;
    let req = body.value;
    id("offer_id", &req.offer_id)?;
    decide::purchase::decide_command(&PurchaseCommand {
        units: req.units,
        duration_limit_s: req.duration_limit_s,
        max_price_micros_per_unit_hour: req.max_price_micros_per_unit_hour,
    })?;
    // An offer id of another shape names no offer: the core's answer for a purchase of none.
    let offer_id = Named::<OfferId>::parse(
        &req.offer_id,
        StoreError::invalid("offer_id", "no such offer"),
    );
    let (consumer, fee_bps, now) = (caller.org.id.clone(), state.config.fee_bps, now_ms());
    let purchase_of = move |offer_id: &OfferId| Purchase {
        consumer_org_id: consumer.clone(),
        offer_id: offer_id.to_string(),
        units: req.units,
        duration_limit_s: req.duration_limit_s,
        max_price_micros_per_unit_hour: req.max_price_micros_per_unit_hour,
        fee_bps,
        now_ms: now,
        auto_end: req.auto_end,
    };
    let accounts = account_ids(
        &decide::purchase::accounts(caller.org_id()),
        caller.org_id(),
    );
    state
        .mutate_with(
            caller.org_id(),
            WriteOptions {
                accounts,
                ..WriteOptions::default()
            },
            key,
            body.request_sha256,
            StatusCode::CREATED,
            move |tx| Ok(wire::lease(&tx.purchase(&purchase_of(offer_id.get()?))?)),
        )
        .await
}

/// Leases the caller bought (the newest purchase first) or sold (the newest start first).
#[utoipa::path(get, path = "/api/v1/leases", tag = "market", security(("bearer" = [])),
    params(LeaseListParams),
    responses((status = 200, body = List<Lease>), (status = 400, body = ErrorBody)))]
pub async fn list_leases(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<LeaseListParams>,
) -> Result<Json<List<Lease>>, ApiError> {
    if let Some(s) = &params.state {
        if suanli_core::lease::LeaseState::parse(s).is_none() {
            return Err(ApiError::field(
                suanli_api::ErrorCode::InvalidQuery,
                "state",
                "state is active, ended, cancelled or expired",
            ));
        }
    }
    if let Some(s) = &params.side {
        if s != "consumer" && s != "provider" {
            return Err(ApiError::field(
                suanli_api::ErrorCode::InvalidQuery,
                "side",
                "side is consumer or provider",
            ));
        }
    }
    let limit = limit(params.limit)?;
    let org = caller.org.id.clone();
    let leases = state
        .read(move |tx| {
            tx.list_leases(&org, params.side.as_deref(), params.state.as_deref(), limit)
        })
        .await?;
    Ok(Json(List {
        items: leases.iter().map(wire::lease).collect(),
    }))
}

/// One lease the caller bought or sold.
#[utoipa::path(get, path = "/api/v1/leases/{lease_id}", tag = "market", security(("bearer" = [])),
    params(("lease_id" = String, Path)),
    responses((status = 200, body = Lease), (status = 404, body = ErrorBody)))]
pub async fn get_lease(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(lease_id): IdPath<LeaseId>,
) -> Result<Json<Lease>, ApiError> {
    let org = caller.org.id.clone();
    let lease = state
        .read(move |tx| tx.get_lease(Some(&org), lease_id.get()?.as_str()))
        .await?;
    Ok(Json(wire::lease(&lease)))
}

async fn end(
    state: AppState,
    caller: Caller,
    key: Option<String>,
    hash: String,
    lease_id: Named<LeaseId>,
    reason: EndReason,
) -> Result<Response, ApiError> {
    let org = caller.org.id.clone();
    let now = now_ms();
    state
        .mutate(caller.org_id(), key, hash, StatusCode::OK, move |tx| {
            Ok(wire::lease(&tx.end_lease(
                Some(&org),
                lease_id.get()?.as_str(),
                reason,
                now,
            )?))
        })
        .await
}

/// Ends a lease now and settles it: its billed unit-milliseconds (units × elapsed milliseconds,
/// or the metered use its jobs' agent reported) at the lease's price are charged, rounded down
/// once; the provider is paid less the fee, the rest of the hold is released.
#[utoipa::path(post, path = "/api/v1/leases/{lease_id}/end", tag = "market", security(("bearer" = [])),
    params(("lease_id" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "retry key")),
    responses((status = 200, body = Lease), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn end_lease(
    State(state): State<AppState>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    BodylessHash(hash): BodylessHash,
    IdPath(lease_id): IdPath<LeaseId>,
) -> Result<Response, ApiError> {
    end(state, caller, key, hash, lease_id, EndReason::Ended).await
}

/// Cancels a lease: settled like an end, recorded as cancelled.
#[utoipa::path(post, path = "/api/v1/leases/{lease_id}/cancel", tag = "market", security(("bearer" = [])),
    params(("lease_id" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "retry key")),
    responses((status = 200, body = Lease), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn cancel_lease(
    State(state): State<AppState>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    BodylessHash(hash): BodylessHash,
    IdPath(lease_id): IdPath<LeaseId>,
) -> Result<Response, ApiError> {
    end(state, caller, key, hash, lease_id, EndReason::Cancelled).await
}
