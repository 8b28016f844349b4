//! Data products on the wire: datasets and AI models, their versions and files, requests for
//! access and the entitlements they grant.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A listing's licence: an SPDX identifier, or the provider's own terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LicenceBody {
    /// An SPDX identifier (`Apache-2.0`, `CC-BY-4.0`, `MIT`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spdx: Option<String>,
    /// The provider's own terms, shown before purchase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// What access costs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceBody {
    /// `free`, `per_version` (paid once per version, used for good) or `per_period` (paid per
    /// period, every version while it runs).
    pub kind: String,
    #[serde(default)]
    pub price_micros: u64,
    /// The period, for `per_period`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_days: Option<u32>,
}

/// What a model listing says of its model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelBody {
    /// `pytorch`, `onnx`, `mindspore`, …
    pub framework: String,
    /// `safetensors`, `gguf`, `onnx`, …
    pub format: String,
    pub parameters: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateListingRequest {
    /// How buyers and task files name it (`traffic-2026`): 2 to 64 lower-case ASCII letters,
    /// digits, `-`, `_`, `.`; unique on the exchange.
    pub name: String,
    /// `dataset` or `model`.
    pub kind: String,
    #[serde(default)]
    pub title_zh: String,
    #[serde(default)]
    pub title_en: String,
    #[serde(default)]
    pub description_zh: String,
    #[serde(default)]
    pub description_en: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// The card, in Markdown.
    #[serde(default)]
    pub card: String,
    pub licence: LicenceBody,
    /// `download` or `compute-only`.
    pub access: String,
    /// `automatic` or `manual`.
    pub gating: String,
    pub price: PriceBody,
    /// Required for a model, absent for a dataset.
    #[serde(default)]
    pub model: Option<ModelBody>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Listing {
    pub id: String,
    pub name: String,
    /// The data provider that listed it.
    pub org_id: String,
    pub kind: String,
    pub title_zh: String,
    pub title_en: String,
    pub description_zh: String,
    pub description_en: String,
    pub tags: Vec<String>,
    pub card: String,
    pub licence: LicenceBody,
    pub access: String,
    pub gating: String,
    pub price: PriceBody,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelBody>,
    /// The exchange's fee on every sale of it, in basis points.
    pub fee_bps: u32,
    /// Other orgs see it: one of its versions is published.
    pub visible: bool,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVersionRequest {
    /// `v1`, `2026.12`, `1.0.0-rc1`: 1 to 64 ASCII letters, digits, `-`, `_`, `.`; never reused.
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Version {
    pub id: String,
    pub listing: String,
    pub version: String,
    /// `draft` (its owner's alone), `published` or `deprecated`.
    pub state: String,
    pub files: u64,
    pub bytes: u64,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecated_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddFileRequest {
    /// Relative, `/`-separated, inside the version.
    pub path: String,
    pub size: u64,
    /// SHA-256 of the file: 64 lower-case hex digits. The bytes are kept only if they match.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DataFile {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    /// Its bytes were received and matched.
    pub verified: bool,
    /// How many of its bytes were received (an upload resumes from here).
    pub received_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestAccessRequest {
    /// The version to buy (required when the listing is sold per version).
    #[serde(default)]
    pub version: Option<String>,
    /// The buyer read the licence and accepts it.
    #[serde(default)]
    pub accept_licence: bool,
    /// What the data is for (required when the owner approves by hand).
    #[serde(default)]
    pub purpose: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AccessRequestBody {
    pub id: String,
    pub listing: String,
    pub owner_org_id: String,
    pub buyer_org_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The price the buyer agreed to.
    pub price: PriceBody,
    pub purpose: String,
    /// `pending`, `approved`, `denied`, `withdrawn` or `expired`.
    pub state: String,
    /// The amount held for it while pending (0: free).
    pub held_micros: u64,
    pub created_at: String,
    /// When a pending request's hold is voided if no one answers.
    pub expires_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EntitlementBody {
    pub id: String,
    pub org_id: String,
    pub listing: String,
    /// `None`: every version of the listing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub from: String,
    /// `None`: for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    pub request_id: String,
}

/// A request for access and what it granted at once, if anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AccessOutcomeBody {
    pub request: AccessRequestBody,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entitlement: Option<EntitlementBody>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DataProviderRequest {
    /// Admit (true) or stop admitting (false) the org as a data provider.
    pub admitted: bool,
}

/// An upload's progress after a part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UploadProgress {
    pub path: String,
    pub size: u64,
    pub received_bytes: u64,
    /// Every byte arrived and matched the declared size and SHA-256.
    pub verified: bool,
}
