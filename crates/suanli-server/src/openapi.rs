//! The OpenAPI document, generated from the handlers' annotations and the wire types.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::data::{self, files};
use crate::routes::{agents, jobs, ledger, market, orgs, provider};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Suanli compute power exchange", description = "Quote, buy and settle compute capacity. Money is integer micro-yuan (`*_micros`)."),
    paths(
        orgs::health, orgs::me, orgs::zones, orgs::create_org, orgs::list_orgs, orgs::get_org,
        orgs::rename_org,
        orgs::list_members, orgs::create_member, orgs::list_tokens, orgs::create_token, orgs::revoke_token,
        provider::list_models, provider::add_model, provider::create_pool, provider::list_pools, provider::get_pool,
        provider::create_offer, provider::list_offers, provider::get_offer, provider::withdraw_offer,
        market::catalog, market::quote, market::purchase, market::list_leases, market::get_lease,
        market::end_lease, market::cancel_lease,
        ledger::deposit, ledger::withdraw, ledger::balance, ledger::statement, ledger::check,
        jobs::create_job, jobs::list_jobs, jobs::get_job, jobs::cancel_job, jobs::job_logs,
        jobs::list_outputs, jobs::get_output, agents::outputs,
        agents::register, agents::list_agents, agents::heartbeat, agents::poll, agents::event,
        agents::usage, agents::logs,
        data::set_data_provider, data::create_listing, data::list_listings, data::get_listing,
        data::create_version, data::list_versions, data::publish_version, data::deprecate_version,
        files::add_file, files::list_files, files::upload_part, files::restart_upload,
        files::download, data::request_access, data::list_requests, data::answer_request,
        data::list_entitlements, data::revoke_entitlement,
    ),
    modifiers(&BearerAuth),
    tags((name = "market", description = "catalog, quotes, purchases and leases"),
         (name = "provider", description = "pools and offers"),
         (name = "operator", description = "admission, deposits, withdrawals, registry"),
         (name = "ledger", description = "balances and statements"),
         (name = "jobs", description = "jobs on leases, their attempts and logs"),
         (name = "agents", description = "the outbound protocol of providers' agents"),
         (name = "data", description = "datasets and AI models: listings, versions, files, access"),
         (name = "orgs", description = "orgs, members, tokens"),
         (name = "meta", description = "health and this document"))
)]
pub struct ApiDoc;

/// Serves the OpenAPI document.
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
