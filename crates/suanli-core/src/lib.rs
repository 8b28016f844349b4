//! Suanli's pure core: money, resource classes, placement, quotes, ledger rules and the lease.
//!
//! Nothing here does IO, reads a clock or draws random numbers: time (`now_ms`) and identifiers are
//! arguments, so every function is deterministic and testable on its own. The store persists what
//! these functions decide; the server feeds them the current time.
//!
//! - [`money`]: integer micro-yuan and the one rounding rule.
//! - [`resource`]: categories, resource classes, accelerator models, node capacity and placement.
//! - [`quote`]: the offer book and the ranking of feasible offers.
//! - [`ledger`]: account and transfer kinds, holds, settlement and the invariant checker.
//! - [`lease`]: lease states and how a lease is settled when it ends.
//! - [`job`]: the job state machine with attempts, and the cap on billable usage.
//! - [`validate`]: limits on names and strings shared by every entry point.
//! - [`audit`]: the market's invariants over settlements, jobs and usage (the simulation checks
//!   them after every step).
//! - [`decide`]: every state-changing command's rule, from a snapshot to effects or a refusal.

pub mod audit;
pub mod data;
pub mod decide;
pub mod id;
pub mod job;
pub mod lease;
pub mod ledger;
pub mod money;
pub mod quote;
pub mod resource;
pub mod validate;
