//! Suanli's wire types: every request and response body of the HTTP API under `/api/v1`, the stable
//! error codes and their HTTP statuses. Serde and OpenAPI schemas only: this crate knows nothing of
//! the store or the server, so the client, the CLI, the agent and the tests share it.
//!
//! Conventions: money is integer micro-yuan in fields ending `_micros`; times are RFC 3339 strings in
//! UTC in fields ending `_at`; durations are seconds in fields ending `_s`. Requests reject unknown
//! fields. Ids are strings on the wire; their types are in [`ids`].

pub mod data;
pub mod error;
pub mod ids;
pub mod jobs;
pub mod types;

pub use data::*;
pub use error::{ErrorBody, ErrorCode};
pub use ids::{
    AgentId, AttemptId, HoldId, Id, IdError, JobId, LeaseId, MemberId, NodeId, OfferId, OrgId,
    PoolId, TokenId,
};
pub use jobs::*;
pub use types::*;

/// The API's path prefix.
pub const API_PREFIX: &str = "/api/v1";
/// Header carrying the idempotency key of a POST.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// Header carrying the request id, on every response.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// The registration generation an agent's reports come from (see `Agent::generation`).
pub const AGENT_GENERATION_HEADER: &str = "suanli-agent-generation";
