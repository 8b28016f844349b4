//! Data products: datasets and AI models listed with a licence and a price, published as
//! immutable versions of files, bought through requests for access that the ledger holds and
//! pays, and used under entitlements. The rules are `core::decide::data`'s; the bytes are in the
//! object store (`files`).

pub mod files;
pub mod wire;

use axum::extract::{FromRequestParts, RawPathParams, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use suanli_api::{
    AccessOutcomeBody, AccessRequestBody, CreateListingRequest, CreateVersionRequest,
    DataProviderRequest, EntitlementBody, ErrorBody, ErrorCode, List, Listing, OrgId,
    RequestAccessRequest, Version,
};
use suanli_core::data;
use suanli_core::decide::access::Action;
use suanli_core::decide::data::DEFAULT_APPROVAL_TIMEOUT_MS;
use suanli_store::ops::AccessRequest;
use suanli_store::StoreError;
use utoipa::IntoParams;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, BodylessHash, IdPath, IdempotencyKey};
use crate::routes::limit;
use crate::{now_ms, AppState, WriteOptions};

/// The path parameters of a data route: a listing's name, a version's label, a file's path, a
/// request's or an entitlement's id. A name or label that cannot exist names nothing (404, as a
/// missing one); a file path outside its version is refused with its field.
#[derive(Debug, Default)]
pub struct DataPath {
    pub listing: String,
    pub version: String,
    pub file: String,
    pub id: String,
}

impl<S: Send + Sync> FromRequestParts<S> for DataPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let raw = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| {
                ApiError::field(
                    ErrorCode::InvalidField,
                    "path",
                    "the path is not valid UTF-8",
                )
            })?;
        let mut p = DataPath::default();
        for (key, value) in raw.iter() {
            match key {
                "name" => {
                    data::listing_name(value).map_err(|_| ApiError::not_found("listing"))?;
                    p.listing = value.to_owned();
                }
                "version" => {
                    data::version_label(value).map_err(|_| ApiError::not_found("version"))?;
                    p.version = value.to_owned();
                }
                "path" => {
                    data::file_path(value).map_err(|why| ApiError::invalid("path", why))?;
                    p.file = value.to_owned();
                }
                "request_id" | "entitlement_id" => {
                    suanli_core::validate::id(value).map_err(|_| {
                        ApiError::not_found(if key == "request_id" {
                            "request"
                        } else {
                            "entitlement"
                        })
                    })?;
                    p.id = value.to_owned();
                }
                _ => {}
            }
        }
        Ok(p)
    }
}

/// Admits an org as a data provider, or stops admitting it (operator only). Providers list data
/// without it; any other org needs it.
#[utoipa::path(post, path = "/api/v1/orgs/{org_id}/data-provider", tag = "operator", security(("bearer" = [])),
    params(("org_id" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "retry key")),
    request_body = DataProviderRequest,
    responses((status = 200, body = DataProviderRequest), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn set_data_provider(
    State(state): State<AppState>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    IdPath(org_id): IdPath<OrgId>,
    body: ApiJson<DataProviderRequest>,
) -> Result<Response, ApiError> {
    caller.may(Action::AdmitOrg)?;
    let admitted = body.value.admitted;
    state
        .mutate(
            caller.org_id(),
            key,
            body.request_sha256,
            StatusCode::OK,
            move |tx| {
                tx.set_data_provider(org_id.get()?.as_str(), admitted)?;
                Ok(DataProviderRequest { admitted })
            },
        )
        .await
}

/// Lists a dataset or an AI model. It is seen by other orgs once a version is published.
#[utoipa::path(post, path = "/api/v1/data/listings", tag = "data", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "retry key")),
    request_body = CreateListingRequest,
    responses((status = 201, body = Listing), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_listing(
    State(state): State<AppState>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    body: ApiJson<CreateListingRequest>,
) -> Result<Response, ApiError> {
    let listing = wire::new_listing(body.value)?;
    let (org, fee_bps, now) = (caller.org.id.clone(), state.config.fee_bps, now_ms());
    state
        .mutate(
            caller.org_id(),
            key,
            body.request_sha256,
            StatusCode::CREATED,
            move |tx| {
                Ok(wire::listing(
                    &tx.create_listing(&org, &listing, fee_bps, now)?,
                ))
            },
        )
        .await
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListingParams {
    /// `dataset` or `model`.
    pub kind: Option<String>,
    /// The last name of the previous page.
    pub after: Option<String>,
    pub limit: Option<u32>,
}

/// Listings the caller can see (its own, and every other with a published version), by name.
#[utoipa::path(get, path = "/api/v1/data/listings", tag = "data", security(("bearer" = [])),
    params(ListingParams),
    responses((status = 200, body = List<Listing>), (status = 400, body = ErrorBody)))]
pub async fn list_listings(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<ListingParams>,
) -> Result<Json<List<Listing>>, ApiError> {
    let kind = params.kind.as_deref().map(wire::kind).transpose()?;
    let limit = limit(params.limit)?;
    let after = params.after.unwrap_or_default();
    if !after.is_empty() {
        data::listing_name(&after)
            .map_err(|why| ApiError::field(ErrorCode::InvalidQuery, "after", why))?;
    }
    let org = caller.org.id.clone();
    let rows = state
        .read(move |tx| tx.list_listings(&org, kind, &after, limit))
        .await?;
    Ok(Json(List {
        items: rows.iter().map(wire::listing).collect(),
    }))
}

/// One listing, with its card and licence.
#[utoipa::path(get, path = "/api/v1/data/listings/{name}", tag = "data", security(("bearer" = [])),
    params(("name" = String, Path)),
    responses((status = 200, body = Listing), (status = 404, body = ErrorBody)))]
pub async fn get_listing(
    State(state): State<AppState>,
    caller: Caller,
    p: DataPath,
) -> Result<Json<Listing>, ApiError> {
    let org = caller.org.id.clone();
    let row = state
        .read(move |tx| tx.get_listing(&org, &p.listing))
        .await?;
    Ok(Json(wire::listing(&row)))
}

/// Starts a version (a draft, its owner's alone until published).
#[utoipa::path(post, path = "/api/v1/data/listings/{name}/versions", tag = "data", security(("bearer" = [])),
    params(("name" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "retry key")),
    request_body = CreateVersionRequest,
    responses((status = 201, body = Version), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_version(
    State(state): State<AppState>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    p: DataPath,
    body: ApiJson<CreateVersionRequest>,
) -> Result<Response, ApiError> {
    let (org, label, now) = (caller.org.id.clone(), body.value.version, now_ms());
    state
        .mutate(
            caller.org_id(),
            key,
            body.request_sha256,
            StatusCode::CREATED,
            move |tx| {
                let v = tx.create_version(&org, &p.listing, &label, now)?;
                Ok(wire::version(&p.listing, &v))
            },
        )
        .await
}

/// A listing's versions: published and deprecated ones, and its owner's drafts.
#[utoipa::path(get, path = "/api/v1/data/listings/{name}/versions", tag = "data", security(("bearer" = [])),
    params(("name" = String, Path)),
    responses((status = 200, body = List<Version>), (status = 404, body = ErrorBody)))]
pub async fn list_versions(
    State(state): State<AppState>,
    caller: Caller,
    p: DataPath,
) -> Result<Json<List<Version>>, ApiError> {
    let org = caller.org.id.clone();
    let listing = p.listing.clone();
    let rows = state
        .read(move |tx| tx.list_versions(&org, &listing))
        .await?;
    Ok(Json(List {
        items: rows.iter().map(|v| wire::version(&p.listing, v)).collect(),
    }))
}

/// Publishes a draft once every file is uploaded and verified; it never changes after.
#[utoipa::path(post, path = "/api/v1/data/listings/{name}/versions/{version}/publish", tag = "data", security(("bearer" = [])),
    params(("name" = String, Path), ("version" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "retry key")),
    responses((status = 200, body = Version), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn publish_version(
    State(state): State<AppState>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    BodylessHash(hash): BodylessHash,
    p: DataPath,
) -> Result<Response, ApiError> {
    let (org, now) = (caller.org.id.clone(), now_ms());
    state
        .mutate(caller.org_id(), key, hash, StatusCode::OK, move |tx| {
            let v = tx.publish_version(&org, &p.listing, &p.version, now)?;
            Ok(wire::version(&p.listing, &v))
        })
        .await
}

/// Deprecates a published version: it stays usable by those entitled to it.
#[utoipa::path(post, path = "/api/v1/data/listings/{name}/versions/{version}/deprecate", tag = "data", security(("bearer" = [])),
    params(("name" = String, Path), ("version" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "retry key")),
    responses((status = 200, body = Version), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn deprecate_version(
    State(state): State<AppState>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    BodylessHash(hash): BodylessHash,
    p: DataPath,
) -> Result<Response, ApiError> {
    let (org, now) = (caller.org.id.clone(), now_ms());
    state
        .mutate(caller.org_id(), key, hash, StatusCode::OK, move |tx| {
            let v = tx.deprecate_version(&org, &p.listing, &p.version, now)?;
            Ok(wire::version(&p.listing, &v))
        })
        .await
}

/// Requests access to a listing (to a version when it is sold per version): granted at once and
/// paid (automatic gating), or held until the owner decides (manual gating; the price is held,
/// and released if the owner denies, the buyer withdraws or no one answers in time).
#[utoipa::path(post, path = "/api/v1/data/listings/{name}/access", tag = "data", security(("bearer" = [])),
    params(("name" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "retry key")),
    request_body = RequestAccessRequest,
    responses((status = 201, body = AccessOutcomeBody), (status = 400, body = ErrorBody), (status = 402, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn request_access(
    State(state): State<AppState>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    p: DataPath,
    body: ApiJson<RequestAccessRequest>,
) -> Result<Response, ApiError> {
    let mut req = body.value;
    if let Some(v) = &req.version {
        data::version_label(v).map_err(|why| ApiError::invalid("version", why))?;
    }
    // Shown to the owner whether or not it decides by hand.
    req.purpose = crate::routes::text("purpose", &req.purpose)?;
    let buyer = caller.org.id.clone();
    let accounts = {
        let (buyer, listing) = (buyer.clone(), p.listing.clone());
        state
            .read(move |tx| tx.access_accounts(&buyer, &listing))
            .await?
    };
    let request = AccessRequest {
        buyer_org_id: buyer,
        listing: p.listing,
        version: req.version,
        accept_licence: req.accept_licence,
        purpose: req.purpose,
        approval_timeout_ms: state
            .config
            .data_approval_timeout
            .as_millis()
            .try_into()
            .unwrap_or(DEFAULT_APPROVAL_TIMEOUT_MS),
        now_ms: now_ms(),
    };
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
            move |tx| Ok(wire::outcome(&tx.request_access(&request)?)),
        )
        .await
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RequestParams {
    /// `pending`, `approved`, `denied`, `withdrawn` or `expired`.
    pub state: Option<String>,
    pub limit: Option<u32>,
}

/// Requests the caller made, and requests to its listings, the newest first.
#[utoipa::path(get, path = "/api/v1/data/requests", tag = "data", security(("bearer" = [])),
    params(RequestParams),
    responses((status = 200, body = List<AccessRequestBody>), (status = 400, body = ErrorBody)))]
pub async fn list_requests(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<RequestParams>,
) -> Result<Json<List<AccessRequestBody>>, ApiError> {
    let filter = params
        .state
        .as_deref()
        .map(wire::request_state)
        .transpose()?;
    let limit = limit(params.limit)?;
    let org = caller.org.id.clone();
    let rows = state
        .read(move |tx| tx.list_access_requests(&org, filter, limit))
        .await?;
    Ok(Json(List {
        items: rows.iter().map(wire::request).collect(),
    }))
}

/// Answers a pending request: its listing's owner approves (the buyer pays, less the fee) or
/// denies (the hold is released); its buyer withdraws it (released too). Decided once.
#[utoipa::path(post, path = "/api/v1/data/requests/{request_id}/{action}", tag = "data", security(("bearer" = [])),
    params(("request_id" = String, Path), ("action" = String, Path, description = "approve, deny or withdraw"),
        ("Idempotency-Key" = Option<String>, Header, description = "retry key")),
    responses((status = 200, body = AccessOutcomeBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn answer_request(
    State(state): State<AppState>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    BodylessHash(hash): BodylessHash,
    p: DataPath,
    RawAction(action): RawAction,
) -> Result<Response, ApiError> {
    let org = caller.org.id.clone();
    let accounts = {
        let id = p.id.clone();
        let org = org.clone();
        // Another org's request reads as missing before anything is declared to the writer.
        state
            .read(move |tx| {
                tx.get_access_request(&org, &id)?;
                tx.request_accounts(&id)
            })
            .await?
    };
    let now = now_ms();
    state
        .mutate_with(
            caller.org_id(),
            WriteOptions {
                accounts,
                ..WriteOptions::default()
            },
            key,
            hash,
            StatusCode::OK,
            move |tx| {
                Ok(wire::outcome(&tx.answer_access_request(
                    Some(&org),
                    &p.id,
                    action,
                    now,
                )?))
            },
        )
        .await
}

/// The answer named by the route's last part.
pub struct RawAction(pub suanli_core::decide::data::RequestAction);

impl<S: Send + Sync> FromRequestParts<S> for RawAction {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let last = parts.uri.path().rsplit('/').next().unwrap_or_default();
        wire::action(last).map(RawAction).ok_or_else(|| {
            ApiError::new(
                ErrorCode::RouteNotFound,
                "no such route; see /api/v1/openapi.json",
            )
        })
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EntitlementParams {
    /// One listing's name.
    pub listing: Option<String>,
}

/// The caller's entitlements: which versions of which listings it may use until when.
#[utoipa::path(get, path = "/api/v1/data/entitlements", tag = "data", security(("bearer" = [])),
    params(EntitlementParams),
    responses((status = 200, body = List<EntitlementBody>), (status = 400, body = ErrorBody)))]
pub async fn list_entitlements(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<EntitlementParams>,
) -> Result<Json<List<EntitlementBody>>, ApiError> {
    if let Some(l) = &params.listing {
        data::listing_name(l)
            .map_err(|why| ApiError::field(ErrorCode::InvalidQuery, "listing", why))?;
    }
    let org = caller.org.id.clone();
    let rows = state
        .read(move |tx| tx.entitlements(&org, params.listing.as_deref()))
        .await?;
    Ok(Json(List {
        items: rows.iter().map(wire::entitlement).collect(),
    }))
}

/// Revokes an entitlement to one of the caller's listings: its holder may use nothing more of it,
/// from the next request on (a download in progress is refused its next range).
#[utoipa::path(post, path = "/api/v1/data/entitlements/{entitlement_id}/revoke", tag = "data", security(("bearer" = [])),
    params(("entitlement_id" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "retry key")),
    responses((status = 200, body = EntitlementBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke_entitlement(
    State(state): State<AppState>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    BodylessHash(hash): BodylessHash,
    p: DataPath,
) -> Result<Response, ApiError> {
    let (org, now) = (caller.org.id.clone(), now_ms());
    state
        .mutate(caller.org_id(), key, hash, StatusCode::OK, move |tx| {
            Ok(wire::entitlement(&tx.revoke_entitlement(&org, &p.id, now)?))
        })
        .await
}

/// Voids the holds of requests no owner answered in time. Runs forever, as the lease expiry
/// service does; a sweep that fails is retried at the next tick.
pub async fn expire_requests(state: AppState) {
    let mut tick = tokio::time::interval(state.config.expiry_interval);
    loop {
        tick.tick().await;
        let now = now_ms();
        let due = match state.read(move |tx| tx.due_access_requests(now, 100)).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e.message, "reading overdue access requests failed");
                continue;
            }
        };
        for id in due {
            let accounts = {
                let id = id.clone();
                match state.read(move |tx| tx.request_accounts(&id)).await {
                    Ok(a) => a,
                    Err(_) => continue,
                }
            };
            let result = state
                .store
                .writer()
                .submit_with_accounts(accounts, move |tx| {
                    match tx.answer_access_request(
                        None,
                        &id,
                        suanli_core::decide::data::RequestAction::Expire,
                        now,
                    ) {
                        // Answered meanwhile: nothing to expire.
                        Err(StoreError::Forbidden(_)) => Ok(()),
                        other => other.map(|_| ()),
                    }
                })
                .await;
            if let Err(e) = result {
                tracing::warn!(error = %e, "expiring an access request failed");
            }
        }
    }
}
