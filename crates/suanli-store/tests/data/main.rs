//! Data products in the store: listings, versions, files, access and entitlements, on SQLite in a
//! temp dir by default and on PostgreSQL when `SUANLI_TEST_DATABASE_URL` names a server (each
//! test then gets a fresh database on it), as the conformance suite does.

mod access;
mod harness;
mod listings;
