//! Ids on the wire. Every id travels as a plain JSON string (and is a `string` in the OpenAPI
//! document); its types and the shape an id given from outside must have are
//! [`suanli_core::id`]'s, re-exported here so that a client needs no other crate to name them.
//!
//! The wire types keep their id fields as `String`: clients build requests from any text and read
//! the exchange's answers as they come (its ids are its own). The exchange parses every id a
//! request names into its type at the edge: a path's, a body's and a query's.

pub use suanli_core::id::{
    kind_of, AgentId, AttemptId, HoldId, Id, IdError, IdErrorReason, JobId, LeaseId, MemberId,
    NodeId, OfferId, OrgId, PoolId, TokenId,
};
