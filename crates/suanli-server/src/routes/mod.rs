//! Routes under `/api/v1`, one module per area.

pub mod agents;
pub mod data;
pub mod jobs;
pub mod ledger;
pub mod market;
pub mod orgs;
pub mod provider;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use suanli_core::validate;

use crate::error::ApiError;
use crate::AppState;

/// A token's lifetimes, a node's bounds and the highest price are the market's
/// (`suanli_core::decide`).
pub use suanli_core::decide::offer::MAX_PRICE_MICROS;
pub use suanli_core::decide::org::{DEFAULT_TOKEN_LIFETIME_MS, MAX_TOKEN_LIFETIME_MS};
pub use suanli_core::decide::pool::{MAX_MEMORY_MIB, MAX_NODE_CPUS};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/health", get(orgs::health))
        .route("/api/v1/openapi.json", get(crate::openapi::document))
        .route("/api/v1/me", get(orgs::me))
        .route("/api/v1/zones", get(orgs::zones))
        .route(
            "/api/v1/accelerator-models",
            get(provider::list_models).post(provider::add_model),
        )
        .route("/api/v1/orgs", get(orgs::list_orgs).post(orgs::create_org))
        .route("/api/v1/orgs/{org_id}", get(orgs::get_org))
        .route("/api/v1/orgs/{org_id}/rename", post(orgs::rename_org))
        .route("/api/v1/orgs/{org_id}/deposits", post(ledger::deposit))
        .route("/api/v1/orgs/{org_id}/withdrawals", post(ledger::withdraw))
        .route(
            "/api/v1/members",
            get(orgs::list_members).post(orgs::create_member),
        )
        .route(
            "/api/v1/tokens",
            get(orgs::list_tokens).post(orgs::create_token),
        )
        .route("/api/v1/tokens/{token_id}/revoke", post(orgs::revoke_token))
        .route(
            "/api/v1/pools",
            get(provider::list_pools).post(provider::create_pool),
        )
        .route("/api/v1/pools/{pool_id}", get(provider::get_pool))
        .route(
            "/api/v1/offers",
            get(provider::list_offers).post(provider::create_offer),
        )
        .route("/api/v1/offers/{offer_id}", get(provider::get_offer))
        .route(
            "/api/v1/offers/{offer_id}/withdraw",
            post(provider::withdraw_offer),
        )
        .route("/api/v1/catalog/offers", get(market::catalog))
        .route("/api/v1/quotes", post(market::quote))
        .route(
            "/api/v1/leases",
            get(market::list_leases).post(market::purchase),
        )
        .route("/api/v1/leases/{lease_id}", get(market::get_lease))
        .route("/api/v1/leases/{lease_id}/end", post(market::end_lease))
        .route(
            "/api/v1/leases/{lease_id}/cancel",
            post(market::cancel_lease),
        )
        .route("/api/v1/balance", get(ledger::balance))
        .route("/api/v1/statement", get(ledger::statement))
        .route("/api/v1/ledger/check", get(ledger::check))
        .route("/api/v1/leases/{lease_id}/jobs", post(jobs::create_job))
        .route("/api/v1/jobs", get(jobs::list_jobs))
        .route("/api/v1/jobs/{job_id}", get(jobs::get_job))
        .route("/api/v1/jobs/{job_id}/cancel", post(jobs::cancel_job))
        .route("/api/v1/jobs/{job_id}/logs", get(jobs::job_logs))
        .route("/api/v1/jobs/{job_id}/outputs", get(jobs::list_outputs))
        .route(
            "/api/v1/jobs/{job_id}/outputs/{*path}",
            get(jobs::get_output),
        )
        .route(
            "/api/v1/agents/{agent_id}/attempts/{attempt_id}/outputs",
            post(agents::outputs).layer(axum::extract::DefaultBodyLimit::max(
                agents::MAX_OUTPUT_BODY_BYTES,
            )),
        )
        .route(
            "/api/v1/agents",
            get(agents::list_agents).post(agents::register),
        )
        .route(
            "/api/v1/agents/{agent_id}/heartbeat",
            post(agents::heartbeat),
        )
        .route("/api/v1/agents/{agent_id}/poll", post(agents::poll))
        .route(
            "/api/v1/agents/{agent_id}/attempts/{attempt_id}/events",
            post(agents::event),
        )
        .route(
            "/api/v1/agents/{agent_id}/attempts/{attempt_id}/usage",
            post(agents::usage),
        )
        .route(
            "/api/v1/agents/{agent_id}/attempts/{attempt_id}/logs",
            post(agents::logs),
        )
        .route("/metrics", get(agents::metrics))
        .route(
            "/api/v1/orgs/{org_id}/data-provider",
            post(data::set_data_provider),
        )
        .route(
            "/api/v1/data/listings",
            get(data::list_listings).post(data::create_listing),
        )
        .route("/api/v1/data/listings/{name}", get(data::get_listing))
        .route(
            "/api/v1/data/listings/{name}/versions",
            get(data::list_versions).post(data::create_version),
        )
        .route(
            "/api/v1/data/listings/{name}/versions/{version}/publish",
            post(data::publish_version),
        )
        .route(
            "/api/v1/data/listings/{name}/versions/{version}/deprecate",
            post(data::deprecate_version),
        )
        .route(
            "/api/v1/data/listings/{name}/versions/{version}/files",
            get(data::files::list_files).post(data::files::add_file),
        )
        .route(
            "/api/v1/data/listings/{name}/versions/{version}/files/{*path}",
            get(data::files::download)
                // A part streams into the object store: no limit but the file's own size.
                .put(data::files::upload_part)
                .layer(DefaultBodyLimit::disable())
                .delete(data::files::restart_upload),
        )
        .route(
            "/api/v1/data/listings/{name}/access",
            post(data::request_access),
        )
        .route("/api/v1/data/requests", get(data::list_requests))
        .route(
            "/api/v1/data/requests/{request_id}/{action}",
            post(data::answer_request),
        )
        .route("/api/v1/data/entitlements", get(data::list_entitlements))
        .route(
            "/api/v1/data/entitlements/{entitlement_id}/revoke",
            post(data::revoke_entitlement),
        )
}

/// Validates a name field (see `suanli_core::validate::name`); returns it normalised, as stored.
pub fn name(field: &str, value: &str) -> Result<String, ApiError> {
    validate::name(value).map_err(|m| ApiError::invalid(field, format!("{field} {m}")))
}

/// Validates a free-text field that may span lines; returns it normalised.
pub fn text(field: &str, value: &str) -> Result<String, ApiError> {
    validate::text(value).map_err(|m| ApiError::invalid(field, format!("{field} {m}")))
}

/// Validates an id sent back by a client (see `suanli_core::validate::id`).
pub fn id(field: &str, value: &str) -> Result<(), ApiError> {
    validate::id(value).map_err(|m| ApiError::invalid(field, format!("{field} {m}")))
}

/// Validates an id in a query string.
pub fn query_id(field: &str, value: &str) -> Result<(), ApiError> {
    validate::id(value).map_err(|m| {
        ApiError::field(
            suanli_api::ErrorCode::InvalidQuery,
            field,
            format!("{field} {m}"),
        )
    })
}

/// Validates an e-mail address; returns it normalised.
pub fn email(field: &str, value: &str) -> Result<String, ApiError> {
    validate::email(value).map_err(|m| ApiError::invalid(field, format!("{field} {m}")))
}

/// Validates a one-line text field (references, e-mail addresses); returns it normalised.
pub fn line(field: &str, value: &str) -> Result<String, ApiError> {
    validate::line(value).map_err(|m| ApiError::invalid(field, format!("{field} {m}")))
}

/// Validates an identifier-like field.
pub fn slug(field: &str, value: &str) -> Result<(), ApiError> {
    validate::slug(value).map_err(|m| ApiError::invalid(field, format!("{field} {m}")))
}

/// Validates an integer in `min..=max`.
pub fn range(field: &str, value: u64, min: u64, max: u64) -> Result<(), ApiError> {
    if value < min || value > max {
        return Err(ApiError::invalid(
            field,
            format!("{field} must be between {min} and {max}"),
        ));
    }
    Ok(())
}

/// The page size of a list: default 100, at most 1000.
pub fn limit(value: Option<u32>) -> Result<u32, ApiError> {
    match value {
        None => Ok(100),
        Some(v) if (1..=1000).contains(&v) => Ok(v),
        Some(_) => Err(ApiError::field(
            suanli_api::ErrorCode::InvalidQuery,
            "limit",
            "limit must be between 1 and 1000",
        )),
    }
}

/// Checks that a zone is one of the market's zones.
pub fn zone(state: &AppState, field: &str, value: &str) -> Result<(), ApiError> {
    if state.config.zones.iter().any(|z| z.id == value) {
        Ok(())
    } else {
        let known: Vec<&str> = state.config.zones.iter().map(|z| z.id.as_str()).collect();
        Err(ApiError::invalid(
            field,
            format!("unknown zone {value:?}; zones are {}", known.join(", ")),
        ))
    }
}
