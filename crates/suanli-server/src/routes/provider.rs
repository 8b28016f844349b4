//! Provider side: accelerator models, pools with their nodes, offers.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use suanli_api::{
    AcceleratorModel, CreateAcceleratorModelRequest, CreateOfferRequest, CreatePoolRequest,
    ErrorBody, List, Offer, OfferId, Pool, PoolId,
};
use suanli_core::decide::access::{self, Action};
use suanli_core::decide::offer::{self, OfferTermsRequest};
use suanli_core::decide::pool::{self, NodeRules, NodeSpec, Registrar};
use suanli_core::decide::purchase::OfferState;
use suanli_core::resource::ResourceClass;
use suanli_store::ops::{NewNode, NewOffer};
use suanli_store::StoreError;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiJson, BodylessHash, IdPath, IdempotencyKey, Named};
use crate::routes::{name, slug, zone};
use crate::{now_ms, wire, AppState};

/// The accelerator model registry.
#[utoipa::path(get, path = "/api/v1/accelerator-models", tag = "market", security(("bearer" = [])),
    responses((status = 200, body = List<AcceleratorModel>), (status = 401, body = ErrorBody)))]
pub async fn list_models(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<Json<List<AcceleratorModel>>, ApiError> {
    let models = state.read(|tx| tx.list_accelerator_models()).await?;
    Ok(Json(List {
        items: models
            .into_iter()
            .map(|(name, vendor, memory_gib)| AcceleratorModel {
                name,
                vendor,
                memory_gib,
            })
            .collect(),
    }))
}

/// Adds an accelerator model to the registry (operator only).
#[utoipa::path(post, path = "/api/v1/accelerator-models", tag = "operator", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "retry key")),
    request_body = CreateAcceleratorModelRequest,
    responses((status = 201, body = AcceleratorModel), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn add_model(
    State(state): State<AppState>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    body: ApiJson<CreateAcceleratorModelRequest>,
) -> Result<Response, ApiError> {
    caller.may(Action::ExtendRegistry)?;
    let mut req = body.value;
    slug("name", &req.name)?;
    req.vendor = name("vendor", &req.vendor)?;
    pool::decide_registry_model(req.memory_gib)?;
    state
        .mutate(
            caller.org_id(),
            key,
            body.request_sha256,
            StatusCode::CREATED,
            move |tx| {
                tx.add_accelerator_model(&req.name, &req.vendor, req.memory_gib)?;
                Ok(AcceleratorModel {
                    name: req.name.clone(),
                    vendor: req.vendor.clone(),
                    memory_gib: req.memory_gib,
                })
            },
        )
        .await
}

/// Registers a pool: the provider's capacity in a zone, as nodes.
#[utoipa::path(post, path = "/api/v1/pools", tag = "provider", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "retry key")),
    request_body = CreatePoolRequest,
    responses((status = 201, body = Pool), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn create_pool(
    State(state): State<AppState>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    body: ApiJson<CreatePoolRequest>,
) -> Result<Response, ApiError> {
    caller.may(Action::RegisterPool)?;
    let mut req = body.value;
    req.name = name("name", &req.name)?;
    zone(&state, "zone", &req.zone)?;
    let nodes = validate_nodes(&req.nodes, Registrar::Provider)?;
    let org = caller.org.id.clone();
    let now = now_ms();
    state
        .mutate(
            caller.org_id(),
            key,
            body.request_sha256,
            StatusCode::CREATED,
            move |tx| {
                check_models(tx, &nodes)?;
                Ok(wire::pool(
                    &tx.create_pool(&org, &req.name, &req.zone, &nodes, now)?,
                ))
            },
        )
        .await
}

/// The caller's pools.
#[utoipa::path(get, path = "/api/v1/pools", tag = "provider", security(("bearer" = [])),
    responses((status = 200, body = List<Pool>), (status = 401, body = ErrorBody)))]
pub async fn list_pools(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<List<Pool>>, ApiError> {
    let org = caller.org.id.clone();
    let pools = state.read(move |tx| tx.list_pools(&org)).await?;
    Ok(Json(List {
        items: pools.iter().map(wire::pool).collect(),
    }))
}

/// One of the caller's pools.
#[utoipa::path(get, path = "/api/v1/pools/{pool_id}", tag = "provider", security(("bearer" = [])),
    params(("pool_id" = String, Path)),
    responses((status = 200, body = Pool), (status = 404, body = ErrorBody)))]
pub async fn get_pool(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(pool_id): IdPath<PoolId>,
) -> Result<Json<Pool>, ApiError> {
    let org = caller.org.id.clone();
    let pool = state
        .read(move |tx| tx.get_pool(Some(&org), pool_id.get()?.as_str()))
        .await?;
    Ok(Json(wire::pool(&pool)))
}

/// Publishes an offer: a resource class on one of the caller's pools at a price per unit-hour.
#[utoipa::path(post, path = "/api/v1/offers", tag = "provider", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "retry key")),
    request_body = CreateOfferRequest,
    responses((status = 201, body = Offer), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn create_offer(
    State(state): State<AppState>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    body: ApiJson<CreateOfferRequest>,
) -> Result<Response, ApiError> {
    caller.may(Action::PublishOffer)?;
    let req = body.value;
    let class: ResourceClass = req.class.parse().map_err(|()| {
        ApiError::invalid(
            "class",
            "class is general, intelligent:<MODEL> or supercomputing:<PARTITION>",
        )
    })?;
    if let Some(q) = &class.qualifier {
        slug("class", q)?;
    }
    let terms = offer::decide_terms(
        class.category,
        &OfferTermsRequest {
            cpus_per_unit: req.cpus_per_unit,
            memory_mib_per_unit: req.memory_mib_per_unit,
            price_micros_per_unit_hour: req.price_micros_per_unit_hour,
            min_units: req.min_units,
            max_units: req.max_units,
        },
    )?;
    let now = now_ms();
    let parse = |field: &str, v: &Option<String>| -> Result<Option<i64>, ApiError> {
        v.as_deref()
            .map(|s| {
                crate::wire::parse_time(s).ok_or_else(|| {
                    ApiError::invalid(field, format!("{field} is not an RFC 3339 time"))
                })
            })
            .transpose()
    };
    let valid_from_ms = parse("valid_from", &req.valid_from)?;
    let valid_until_ms = parse("valid_until", &req.valid_until)?;
    let window = offer::decide_window(valid_from_ms, valid_until_ms, now)?;
    crate::routes::id("pool_id", &req.pool_id)?;
    // A pool id of another shape names no pool of the caller's: the core's answer for one.
    let pool_id =
        Named::<PoolId>::parse(&req.pool_id, StoreError::invalid("pool_id", "no such pool"));
    let org = caller.org.id.clone();
    let offer_on = move |pool_id: &PoolId| NewOffer {
        org_id: org.clone(),
        pool_id: pool_id.to_string(),
        class: class.clone(),
        cpus_per_unit: terms.cpus_per_unit,
        memory_mib_per_unit: terms.memory_mib_per_unit,
        price_micros_per_unit_hour: terms.price_micros_per_unit_hour,
        min_units: terms.min_units,
        max_units: terms.max_units,
        valid_from_ms: window.valid_from_ms,
        valid_until_ms: window.valid_until_ms,
    };
    state
        .mutate(
            caller.org_id(),
            key,
            body.request_sha256,
            StatusCode::CREATED,
            move |tx| {
                Ok(wire::offer(
                    &tx.create_offer(&offer_on(pool_id.get()?), now)?,
                ))
            },
        )
        .await
}

/// The caller's offers, withdrawn ones included.
#[utoipa::path(get, path = "/api/v1/offers", tag = "provider", security(("bearer" = [])),
    responses((status = 200, body = List<Offer>), (status = 401, body = ErrorBody)))]
pub async fn list_offers(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<List<Offer>>, ApiError> {
    let org = caller.org.id.clone();
    let offers = state.read(move |tx| tx.list_offers(&org)).await?;
    Ok(Json(List {
        items: offers.iter().map(wire::offer).collect(),
    }))
}

/// One offer: any active offer of the market, or one of the caller's own in any state.
#[utoipa::path(get, path = "/api/v1/offers/{offer_id}", tag = "market", security(("bearer" = [])),
    params(("offer_id" = String, Path)),
    responses((status = 200, body = Offer), (status = 404, body = ErrorBody)))]
pub async fn get_offer(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(offer_id): IdPath<OfferId>,
) -> Result<Json<Offer>, ApiError> {
    let offer = state
        .read(move |tx| tx.get_offer(None, offer_id.get()?.as_str()))
        .await?;
    access::decide_read_offer(
        &caller.access(),
        &offer.org_id,
        offer.state == OfferState::Active,
    )?;
    Ok(Json(wire::offer(&offer)))
}

/// Withdraws one of the caller's offers: it is no longer quoted or sold; running leases go on.
#[utoipa::path(post, path = "/api/v1/offers/{offer_id}/withdraw", tag = "provider", security(("bearer" = [])),
    params(("offer_id" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "retry key")),
    responses((status = 200, body = Offer), (status = 404, body = ErrorBody)))]
pub async fn withdraw_offer(
    State(state): State<AppState>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    BodylessHash(hash): BodylessHash,
    IdPath(offer_id): IdPath<OfferId>,
) -> Result<Response, ApiError> {
    let org = caller.org.id.clone();
    state
        .mutate(caller.org_id(), key, hash, StatusCode::OK, move |tx| {
            Ok(wire::offer(
                &tx.withdraw_offer(&org, offer_id.get()?.as_str())?,
            ))
        })
        .await
}

/// Parses node specs (pool registration and agent registration alike) and decides them by the
/// core's rules for `registrar`'s nodes ([`NodeRules`]), node by node: each node's name is
/// parsed before its rules are decided, its accelerator model and partition after.
pub fn validate_nodes(
    specs: &[suanli_api::NodeSpec],
    registrar: Registrar,
) -> Result<Vec<NewNode>, ApiError> {
    let mut rules = NodeRules::new(registrar, specs.len())?;
    let mut nodes = Vec::with_capacity(specs.len());
    for (i, n) in specs.iter().enumerate() {
        let f = |x: &str| format!("nodes[{i}].{x}");
        let node_name = name(&f("name"), &n.name)?;
        rules.check(
            i,
            &NodeSpec {
                name: &node_name,
                cpus: n.cpus,
                memory_mib: n.memory_mib,
                accelerators: n.accelerators,
                accelerator_model: n.accelerator_model.as_deref(),
            },
        )?;
        if let Some(m) = &n.accelerator_model {
            slug(&f("accelerator_model"), m)?;
        }
        if let Some(p) = &n.partition {
            slug(&f("partition"), p)?;
        }
        nodes.push(NewNode {
            name: node_name,
            cpus: n.cpus,
            memory_mib: n.memory_mib,
            accelerator_model: n.accelerator_model.clone(),
            accelerators: n.accelerators,
            partition: n.partition.clone(),
        });
    }
    Ok(nodes)
}

/// Loads which of the nodes' accelerator models the registry has and decides them
/// ([`pool::decide_models`]): refused at the first node whose model it does not have.
pub fn check_models(
    tx: &mut suanli_store::Tx<'_>,
    nodes: &[NewNode],
) -> Result<(), suanli_store::StoreError> {
    let models: Vec<Option<&str>> = nodes
        .iter()
        .map(|n| n.accelerator_model.as_deref())
        .collect();
    let mut known = std::collections::BTreeSet::new();
    for model in pool::models_to_look_up(&models) {
        if tx.accelerator_memory_gib(model)?.is_none() {
            // The decision refuses at this model's first node; no later model can change that.
            break;
        }
        known.insert(model);
    }
    Ok(pool::decide_models(&models, &known)?)
}
