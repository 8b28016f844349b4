//! Orgs, members, tokens, zones and who-am-I.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use suanli_api::{
    ApiToken, ConsumerType, CreateMemberRequest, CreateOrgRequest, CreateOrgResponse,
    CreateTokenRequest, CreatedToken, ErrorBody, Health, List, Me, Member, MemberId, Org, OrgId,
    RenameOrgRequest, TokenId, Zone,
};
use suanli_core::decide::access::{self, Action};
use suanli_core::decide::org;
use suanli_store::ops::{new_id, OrgRow};
use suanli_store::StoreError;

use crate::auth::{new_secret, secret_sha256, Caller};
use crate::error::ApiError;
use crate::extract::{ApiJson, BodylessHash, IdPath, IdempotencyKey, Named};
use crate::routes::{email, id, name, slug, zone, DEFAULT_TOKEN_LIFETIME_MS};
use crate::{now_ms, wire, AppState, WriteOptions};

/// Liveness and the store in use. No token needed.
#[utoipa::path(get, path = "/api/v1/health", tag = "meta", responses((status = 200, body = Health)))]
pub async fn health(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    state.read(|tx| tx.count("orgs")).await?;
    Ok(Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        store: state.store.kind().into(),
    }))
}

/// The caller's org and token.
#[utoipa::path(get, path = "/api/v1/me", tag = "orgs", security(("bearer" = [])),
    responses((status = 200, body = Me), (status = 401, body = ErrorBody)))]
pub async fn me(caller: Caller) -> Json<Me> {
    Json(Me {
        org: wire::org(&caller.org),
        token: wire::token(&caller.token),
    })
}

/// The market's zones.
#[utoipa::path(get, path = "/api/v1/zones", tag = "orgs", security(("bearer" = [])),
    responses((status = 200, body = List<Zone>), (status = 401, body = ErrorBody)))]
pub async fn zones(State(state): State<AppState>, _caller: Caller) -> Json<List<Zone>> {
    Json(List {
        items: state.config.zones.clone(),
    })
}

/// Admits an org (operator only): creates it with its accounts, a first admin and that admin's token.
#[utoipa::path(post, path = "/api/v1/orgs", tag = "operator", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "retry key")),
    request_body = CreateOrgRequest,
    responses((status = 201, body = CreateOrgResponse), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn create_org(
    State(state): State<AppState>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    body: ApiJson<CreateOrgRequest>,
) -> Result<Response, ApiError> {
    caller.may(Action::AdmitOrg)?;
    let mut req = body.value;
    req.name = name("name", &req.name)?;
    zone(&state, "zone", &req.zone)?;
    slug("origin_region", &req.origin_region)?;
    org::decide_new_org_kind(wire::core_org_kind(req.kind), req.consumer_type.is_some())?;
    let admin_name = name("admin_name", req.admin_name.as_deref().unwrap_or("admin"))?;
    if let Some(address) = &req.admin_email {
        req.admin_email = Some(email("admin_email", address)?);
    }
    let now = now_ms();
    let secret = new_secret();
    let hash = secret_sha256(&secret);
    state
        .mutate_with(
            caller.org_id(),
            WriteOptions {
                redact: Some(crate::redact_secret),
                ..WriteOptions::default()
            },
            key,
            body.request_sha256,
            StatusCode::CREATED,
            move |tx| {
                let org = OrgRow {
                    id: new_id("org"),
                    name: req.name.clone(),
                    kind: crate::wire::core_org_kind(req.kind),
                    consumer_type: req
                        .consumer_type
                        .map(|c: ConsumerType| c.as_str().to_owned()),
                    zone: req.zone.clone(),
                    origin_region: req.origin_region.clone(),
                    created_ms: now,
                    name_unique: true,
                };
                let admin = tx.create_org(&org, &admin_name, req.admin_email.as_deref())?;
                let token = tx.create_token(
                    &org.id,
                    &admin.id,
                    "admin",
                    &hash,
                    now,
                    now + DEFAULT_TOKEN_LIFETIME_MS,
                )?;
                Ok(CreateOrgResponse {
                    org: wire::org(&org),
                    admin: wire::member(&admin),
                    token: CreatedToken {
                        token: wire::token(&token),
                        secret: secret.clone(),
                    },
                })
            },
        )
        .await
}

/// Renames an org (operator only): the remedy for an org whose name cannot be told apart from
/// another's. The new name must be free, compared as names are (ignoring case, width, spacing,
/// invisible characters and look-alike letters).
#[utoipa::path(post, path = "/api/v1/orgs/{org_id}/rename", tag = "operator", security(("bearer" = [])),
    params(("org_id" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "retry key")),
    request_body = RenameOrgRequest,
    responses((status = 200, body = Org), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn rename_org(
    State(state): State<AppState>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    IdPath(org_id): IdPath<OrgId>,
    body: ApiJson<RenameOrgRequest>,
) -> Result<Response, ApiError> {
    caller.may(Action::RenameOrg)?;
    let new_name = name("name", &body.value.name)?;
    state
        .mutate(
            caller.org_id(),
            key,
            body.request_sha256,
            StatusCode::OK,
            move |tx| {
                Ok(wire::org(
                    &tx.rename_org(org_id.get()?.as_str(), &new_name)?,
                ))
            },
        )
        .await
}

/// Orgs: every org for the operator, the caller's own org otherwise.
#[utoipa::path(get, path = "/api/v1/orgs", tag = "orgs", security(("bearer" = [])),
    responses((status = 200, body = List<Org>), (status = 401, body = ErrorBody)))]
pub async fn list_orgs(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<List<Org>>, ApiError> {
    if !access::reads_every_org(&caller.access()) {
        return Ok(Json(List {
            items: vec![wire::org(&caller.org)],
        }));
    }
    let orgs = state.read(|tx| tx.list_orgs()).await?;
    Ok(Json(List {
        items: orgs.iter().map(wire::org).collect(),
    }))
}

/// One org: the caller's own, or any for the operator.
#[utoipa::path(get, path = "/api/v1/orgs/{org_id}", tag = "orgs", security(("bearer" = [])),
    params(("org_id" = String, Path)),
    responses((status = 200, body = Org), (status = 404, body = ErrorBody)))]
pub async fn get_org(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(org_id): IdPath<OrgId>,
) -> Result<Json<Org>, ApiError> {
    access::decide_read_org(&caller.access(), org_id.get().ok().map(OrgId::as_str))?;
    let org = state
        .read(move |tx| tx.get_org(org_id.get()?.as_str()))
        .await?;
    Ok(Json(wire::org(&org)))
}

/// Members of the caller's org.
#[utoipa::path(get, path = "/api/v1/members", tag = "orgs", security(("bearer" = [])),
    responses((status = 200, body = List<Member>), (status = 401, body = ErrorBody)))]
pub async fn list_members(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<List<Member>>, ApiError> {
    let org = caller.org.id.clone();
    let members = state.read(move |tx| tx.list_members(&org)).await?;
    Ok(Json(List {
        items: members.iter().map(wire::member).collect(),
    }))
}

/// Adds a member to the caller's org (admins only).
#[utoipa::path(post, path = "/api/v1/members", tag = "orgs", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "retry key")),
    request_body = CreateMemberRequest,
    responses((status = 201, body = Member), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn create_member(
    State(state): State<AppState>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    body: ApiJson<CreateMemberRequest>,
) -> Result<Response, ApiError> {
    caller.may(Action::AddMember)?;
    let mut req = body.value;
    req.name = name("name", &req.name)?;
    if let Some(address) = &req.email {
        req.email = Some(email("email", address)?);
    }
    let org = caller.org.id.clone();
    let now = now_ms();
    state
        .mutate(
            caller.org_id(),
            key,
            body.request_sha256,
            StatusCode::CREATED,
            move |tx| {
                let m = tx.create_member(
                    &org,
                    &req.name,
                    req.email.as_deref(),
                    req.role.as_str(),
                    now,
                )?;
                Ok(wire::member(&m))
            },
        )
        .await
}

/// Tokens of the caller's org (never their secrets).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "orgs", security(("bearer" = [])),
    responses((status = 200, body = List<ApiToken>), (status = 401, body = ErrorBody)))]
pub async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<List<ApiToken>>, ApiError> {
    caller.may(Action::ListTokens)?;
    let org = caller.org.id.clone();
    let tokens = state.read(move |tx| tx.list_tokens(&org)).await?;
    Ok(Json(List {
        items: tokens.iter().map(wire::token).collect(),
    }))
}

/// Creates a token for a member of the caller's org (admins only). The secret is shown once.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "orgs", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "retry key")),
    request_body = CreateTokenRequest,
    responses((status = 201, body = CreatedToken), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    body: ApiJson<CreateTokenRequest>,
) -> Result<Response, ApiError> {
    caller.may(Action::CreateToken)?;
    let mut req = body.value;
    req.name = name("name", &req.name)?;
    let lifetime_ms = org::decide_token_lifetime(req.expires_in_s)?;
    if let Some(m) = &req.member_id {
        id("member_id", m)?;
    }
    let org = caller.org.id.clone();
    // A member id of another shape names no member: the store's answer for one (which the
    // closure turns into `no such member`).
    let member = match &req.member_id {
        Some(m) => Named::<MemberId>::parse(m, StoreError::NotFound("member")),
        None => Named::known(MemberId::from_stored(caller.token.member_id.clone())),
    };
    let now = now_ms();
    let secret = new_secret();
    let hash = secret_sha256(&secret);
    state
        .mutate_with(
            caller.org_id(),
            WriteOptions {
                redact: Some(crate::redact_secret),
                ..WriteOptions::default()
            },
            key,
            body.request_sha256,
            StatusCode::CREATED,
            move |tx| {
                let t = member
                    .get()
                    .and_then(|member| {
                        tx.create_token(
                            &org,
                            member.as_str(),
                            &req.name,
                            &hash,
                            now,
                            now + lifetime_ms,
                        )
                    })
                    .map_err(|e| match e {
                        suanli_store::StoreError::NotFound(_) => {
                            suanli_store::StoreError::invalid("member_id", "no such member")
                        }
                        e => e,
                    })?;
                Ok(CreatedToken {
                    token: wire::token(&t),
                    secret: secret.clone(),
                })
            },
        )
        .await
}

/// Revokes a token of the caller's org (admins only). Revoking twice keeps the first time.
#[utoipa::path(post, path = "/api/v1/tokens/{token_id}/revoke", tag = "orgs", security(("bearer" = [])),
    params(("token_id" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "retry key")),
    responses((status = 200, body = ApiToken), (status = 404, body = ErrorBody)))]
pub async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    BodylessHash(hash): BodylessHash,
    IdPath(token_id): IdPath<TokenId>,
) -> Result<Response, ApiError> {
    caller.may(Action::RevokeToken)?;
    let org = caller.org.id.clone();
    let now = now_ms();
    let answer = state
        .mutate(caller.org_id(), key, hash, StatusCode::OK, move |tx| {
            Ok(wire::token(&tx.revoke_token(
                &org,
                token_id.get()?.as_str(),
                now,
            )?))
        })
        .await;
    // Whatever the answer (a failure may still have committed), no request that starts from now
    // on is authenticated by what was read before.
    state.callers.clear();
    answer
}
