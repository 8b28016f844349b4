//! Request and response bodies.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// What an org is on the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrgKind {
    Consumer,
    Provider,
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

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "consumer" => Some(OrgKind::Consumer),
            "provider" => Some(OrgKind::Provider),
            "operator" => Some(OrgKind::Operator),
            _ => None,
        }
    }
}

/// The kind of a consumer org.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConsumerType {
    Enterprise,
    ResearchInstitute,
}

impl ConsumerType {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsumerType::Enterprise => "enterprise",
            ConsumerType::ResearchInstitute => "research_institute",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "enterprise" => Some(ConsumerType::Enterprise),
            "research_institute" => Some(ConsumerType::ResearchInstitute),
            _ => None,
        }
    }
}

/// A member's role within its org.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Manages members and tokens, and everything a member can do.
    Admin,
    /// Uses the org's capabilities (buy, offer, …) but cannot manage members or tokens.
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Role::Admin),
            "member" => Some(Role::Member),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Org {
    pub id: String,
    pub name: String,
    pub kind: OrgKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_type: Option<ConsumerType>,
    pub zone: String,
    /// Where the org comes from, for statistics (e.g. `tianjin`, `beijing`).
    pub origin_region: String,
    pub created_at: String,
    /// Names are unique, compared ignoring case, width, spacing, invisible characters and
    /// look-alike letters. False only for an org admitted before that rule whose name an older
    /// org holds: consumers see it with its id until the operator renames it
    /// (`POST /orgs/{org_id}/rename`).
    pub name_unique: bool,
}

/// A new name for an org (operator only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameOrgRequest {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrgRequest {
    pub name: String,
    pub kind: OrgKind,
    /// Required for consumers.
    #[serde(default)]
    pub consumer_type: Option<ConsumerType>,
    pub zone: String,
    pub origin_region: String,
    /// Name of the first admin member; defaults to "admin".
    #[serde(default)]
    pub admin_name: Option<String>,
    #[serde(default)]
    pub admin_email: Option<String>,
}

/// A new org with its first admin and that admin's token. The token secret is shown only here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreateOrgResponse {
    pub org: Org,
    pub admin: Member,
    pub token: CreatedToken,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Member {
    pub id: String,
    pub org_id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub role: Role,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMemberRequest {
    pub name: String,
    #[serde(default)]
    pub email: Option<String>,
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    pub name: String,
    /// The member the token acts for (a member id, `mem_…`); defaults to the caller's member.
    #[serde(default)]
    pub member_id: Option<String>,
    /// Lifetime in seconds; default 90 days, at most one year.
    #[serde(default)]
    pub expires_in_s: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApiToken {
    pub id: String,
    pub org_id: String,
    pub member_id: String,
    pub name: String,
    pub role: Role,
    pub created_at: String,
    pub expires_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

/// A token and its secret. The exchange keeps only a hash: the secret cannot be shown again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    pub token: ApiToken,
    pub secret: String,
}

/// Who the caller is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Me {
    pub org: Org,
    pub token: ApiToken,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Zone {
    pub id: String,
    pub name: String,
    /// `core` or `function`.
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DepositRequest {
    pub amount_micros: u64,
    /// Reference of the payment outside the exchange (bank transfer number, invoice).
    pub external_ref: String,
}

/// Which account a withdrawal pays out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum WithdrawalSource {
    #[default]
    Available,
    Earnings,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WithdrawalRequest {
    pub amount_micros: u64,
    pub external_ref: String,
    #[serde(default)]
    pub source: WithdrawalSource,
}

/// An immutable movement of money between two accounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Transfer {
    pub id: String,
    pub kind: String,
    pub debit_account_id: String,
    pub credit_account_id: String,
    pub amount_micros: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_ref: Option<String>,
    /// The request for access to a data product the transfer pays or releases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_request_id: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AcceleratorModel {
    pub name: String,
    pub vendor: String,
    pub memory_gib: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAcceleratorModelRequest {
    pub name: String,
    pub vendor: String,
    pub memory_gib: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub name: String,
    pub cpus: u64,
    pub memory_mib: u64,
    /// Model of the node's accelerators, from the registry; absent on CPU-only nodes.
    #[serde(default)]
    pub accelerator_model: Option<String>,
    #[serde(default)]
    pub accelerators: u64,
    /// Batch partition the node belongs to (supercomputing pools).
    #[serde(default)]
    pub partition: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePoolRequest {
    pub name: String,
    pub zone: String,
    pub nodes: Vec<NodeSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Node {
    pub id: String,
    pub name: String,
    pub cpus: u64,
    pub memory_mib: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accelerator_model: Option<String>,
    pub accelerators: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    pub cpus_reserved: u64,
    pub memory_mib_reserved: u64,
    pub accelerators_reserved: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Pool {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub zone: String,
    /// Whether an agent serving this pool is alive (heard from within the monitor's suspect
    /// time): its jobs can run now. A pool registered by hand and never served by an agent has
    /// the capacity the provider registered and bills leases on elapsed time.
    pub agent_connected: bool,
    /// Agents registered on this pool (alive, suspect or lost).
    pub agents: u64,
    pub nodes: Vec<Node>,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOfferRequest {
    /// One of the caller's pools (a pool id, `pool_…`).
    pub pool_id: String,
    /// `general`, `intelligent:<MODEL>` or `supercomputing:<PARTITION>`.
    pub class: String,
    /// CPUs per unit: 1 for general and supercomputing (the default), per accelerator otherwise.
    #[serde(default)]
    pub cpus_per_unit: Option<u64>,
    pub memory_mib_per_unit: u64,
    pub price_micros_per_unit_hour: u64,
    #[serde(default)]
    pub min_units: Option<u64>,
    #[serde(default)]
    pub max_units: Option<u64>,
    /// RFC 3339; defaults to now.
    #[serde(default)]
    pub valid_from: Option<String>,
    /// RFC 3339; defaults to one year after `valid_from`.
    #[serde(default)]
    pub valid_until: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Offer {
    pub id: String,
    pub org_id: String,
    /// The provider's name.
    pub provider_name: String,
    pub pool_id: String,
    pub zone: String,
    pub class: String,
    pub category: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accelerator_model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    pub accelerator_memory_gib: u32,
    pub cpus_per_unit: u64,
    pub memory_mib_per_unit: u64,
    pub price_micros_per_unit_hour: u64,
    pub min_units: u64,
    pub max_units: u64,
    pub valid_from: String,
    pub valid_until: String,
    /// `active` or `withdrawn`.
    pub state: String,
    pub units_available: u64,
    pub created_at: String,
}

/// What a consumer needs. Give a `class`, or constraints, or both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct QuoteRequest {
    /// `general`, `intelligent`, `intelligent:<MODEL>`, `supercomputing` or `supercomputing:<PARTITION>`.
    #[serde(default)]
    pub class: Option<String>,
    /// Accelerator model; implies the intelligent category.
    #[serde(default)]
    pub accelerator_model: Option<String>,
    /// Number of accelerators; implies the intelligent category.
    #[serde(default)]
    pub accelerators: Option<u64>,
    #[serde(default)]
    pub min_accelerator_memory_gib: Option<u32>,
    /// Total CPUs; for general and supercomputing also the number of units when `units` is absent.
    #[serde(default)]
    pub cpus: Option<u64>,
    /// Total memory in MiB.
    #[serde(default)]
    pub memory_mib: Option<u64>,
    /// Units of the category (vCPUs, accelerators, cores) when not implied by the fields above.
    #[serde(default)]
    pub units: Option<u64>,
    #[serde(default)]
    pub zone: Option<String>,
    #[serde(default)]
    pub max_price_micros_per_unit_hour: Option<u64>,
    pub duration_limit_s: u64,
    /// How many excluded offers to list (default 50, at most 1000); all are counted.
    #[serde(default)]
    pub excluded_limit: Option<u32>,
    /// How many feasible offers to list, best first (default 50, at most 1000); all are counted.
    #[serde(default)]
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QuotedOffer {
    pub rank: u32,
    pub offer: Offer,
    pub units: u64,
    /// Worst-case price: price × units × duration limit.
    pub total_micros: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ExcludedOffer {
    pub offer_id: String,
    pub provider_org_id: String,
    pub provider_name: String,
    pub class: String,
    pub zone: String,
    pub price_micros_per_unit_hour: u64,
    pub units_available: u64,
    /// `category`, `model`, `zone`, `not_valid_now`, `accelerator_memory`, `price`,
    /// `units_out_of_range`, `cpus`, `memory` or `capacity`.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QuoteResponse {
    pub units: u64,
    pub duration_limit_s: u64,
    /// How many offers are feasible in all; `offers` lists the best `limit` of them.
    pub feasible: u64,
    pub offers: Vec<QuotedOffer>,
    pub excluded: Vec<ExcludedOffer>,
    pub excluded_counts: BTreeMap<String, u64>,
    pub quoted_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurchaseRequest {
    /// The offer to buy from (an offer id, `offer_…`).
    pub offer_id: String,
    pub units: u64,
    pub duration_limit_s: u64,
    /// Refuse the purchase if the offer's price is now above this.
    #[serde(default)]
    pub max_price_micros_per_unit_hour: Option<u64>,
    /// End the lease (and settle it) when its last job ends, as `suanli launch` does.
    #[serde(default)]
    pub auto_end: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Hold {
    pub id: String,
    pub amount_micros: u64,
    /// `pending`, `posted` or `voided`.
    pub state: String,
    /// What was charged out of the hold when it was posted.
    pub posted_micros: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LeaseAllocation {
    pub node_id: String,
    pub units: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Lease {
    pub id: String,
    pub consumer_org_id: String,
    pub provider_org_id: String,
    pub offer_id: String,
    pub pool_id: String,
    pub class: String,
    pub zone: String,
    pub units: u64,
    pub price_micros_per_unit_hour: u64,
    pub duration_limit_s: u64,
    pub started_at: String,
    pub ends_at: String,
    /// `active`, `ended`, `cancelled` or `expired`.
    pub state: String,
    pub hold: Hold,
    /// `elapsed` (wall time of the lease, for pools without an agent) or `metered` (the signed
    /// usage its jobs' agent reported).
    pub billing: String,
    /// Ends when its last job ends.
    pub auto_end: bool,
    /// Metered use acknowledged so far, in unit-milliseconds (metered leases).
    pub metered_unit_ms: u64,
    pub allocations: Vec<LeaseAllocation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// Unit-milliseconds billed when the lease ended: units × elapsed milliseconds (`elapsed`)
    /// or the acknowledged use (`metered`). The settlement's figures re-add:
    /// `cost_micros = floor(price_micros_per_unit_hour × billed_unit_ms / 3,600,000)` (rounded
    /// once), `cost_micros = provider_micros + fee_micros`, and
    /// `hold.amount_micros = cost_micros + released_micros`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billed_unit_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_micros: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fee_micros: Option<u64>,
    /// What the provider was paid: the cost less the fee.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_micros: Option<u64>,
    /// What went back to the consumer's available balance: the hold less the cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_micros: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AccountBalance {
    pub id: String,
    pub kind: String,
    pub debits_micros: u64,
    pub credits_micros: u64,
    /// Credits minus debits.
    pub balance_micros: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Balance {
    pub org_id: String,
    pub available_micros: i64,
    pub held_micros: i64,
    pub earnings_micros: i64,
    pub accounts: Vec<AccountBalance>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StatementLine {
    /// Position in the ledger; pass as `after` to page on.
    pub seq: i64,
    pub transfer_id: String,
    pub created_at: String,
    pub kind: String,
    pub account_id: String,
    pub account_kind: String,
    /// `debit` or `credit` of this org's account.
    pub direction: String,
    pub amount_micros: u64,
    /// The account's balance after this movement.
    pub balance_micros: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_ref: Option<String>,
    /// The request for access to a data product the movement pays or releases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_request_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Statement {
    pub org_id: String,
    pub lines: Vec<StatementLine>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<i64>,
}

/// Paging of list endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, IntoParams, Default)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// At most this many items (default 100, at most 1000).
    #[serde(default)]
    pub limit: Option<u32>,
    /// Only items after this position (the `seq` of the last item seen).
    #[serde(default)]
    pub after: Option<i64>,
}

/// Filters of the lease list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, IntoParams, Default)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LeaseListParams {
    /// `active`, `ended`, `cancelled` or `expired`.
    #[serde(default)]
    pub state: Option<String>,
    /// `consumer` (leases bought) or `provider` (leases sold); default both.
    #[serde(default)]
    pub side: Option<String>,
    #[serde(default)]
    pub limit: Option<u32>,
}

/// Filters of the public offer catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, IntoParams, Default)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CatalogParams {
    /// `general`, `intelligent` or `supercomputing`.
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub zone: Option<String>,
    #[serde(default)]
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub version: String,
    pub store: String,
}

/// The ledger's self-check, for the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LedgerCheck {
    pub ok: bool,
    pub accounts: u64,
    pub transfers: u64,
    pub holds_pending: u64,
    pub violations: Vec<String>,
}

/// List wrapper, so that lists can grow paging fields without breaking clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct List<T> {
    pub items: Vec<T>,
}
