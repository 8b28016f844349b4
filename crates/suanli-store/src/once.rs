//! A command that takes effect once: its idempotency key, its effect and its stored answer in one
//! transaction of the writer.
//!
//! The same key with the same request gets the stored answer; with another request,
//! [`Once::KeyReused`]; concurrent requests with one key have one effect. Refusals are stored too,
//! so a retry sees the same answer; failures of the store itself are not, so a retry can succeed.
//! How a refused command leaves no trace (a savepoint, or failing the optimistic batch so the
//! writer runs it again in one; see [`crate::writer`]) stays inside the store: callers see none
//! of it.

use crate::database::StoreError;
use crate::ops::{StoredResponse, Tx};

/// What became of a command run once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Once {
    /// The answer to give: stored now, or earlier for the same key and request.
    Answer(StoredResponse),
    /// The key was used before with another request.
    KeyReused,
}

/// The command's identity for idempotency: the org, its key, and a digest of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key<'a> {
    pub org_id: &'a str,
    /// `None`: the command has no key, and its answer is not stored.
    pub key: Option<&'a str>,
    pub request_sha256: &'a str,
}

/// How a command's result becomes its answer (status and body), and the copy that is stored
/// when it differs (a secret shown once is not stored).
pub struct Encoded {
    pub status: u16,
    pub body: String,
    pub stored_body: Option<String>,
}

impl Tx<'_> {
    /// Runs `op` once for `key` at `now_ms` and answers with `encode`d result. A refusal from
    /// `op` leaves no trace of it and is encoded like a success; a failure of the store is
    /// returned as the error, and nothing is stored.
    pub fn once<T>(
        &mut self,
        key: &Key<'_>,
        now_ms: i64,
        op: impl FnOnce(&mut Tx<'_>) -> Result<T, StoreError>,
        encode: impl FnOnce(Result<T, StoreError>) -> Result<Encoded, StoreError>,
    ) -> Result<Once, StoreError> {
        if let Some(k) = key.key {
            if let Some(stored) = self.idempotent_response(key.org_id, k)? {
                if stored.request_sha256 != key.request_sha256 {
                    return Ok(Once::KeyReused);
                }
                return Ok(Once::Answer(stored));
            }
        }
        let dirty_before = self.dirty_pools.clone();
        // In an optimistic batch a refusal fails the job instead: the writer then runs the batch
        // again with savepoints, and this one within "op".
        let optimistic = self.optimistic;
        if !optimistic {
            self.savepoint("op")?;
        }
        let result = match op(self) {
            Ok(value) => {
                if !optimistic {
                    self.release("op")?;
                }
                Ok(value)
            }
            Err(StoreError::Database(m)) => return Err(StoreError::Database(m)),
            Err(StoreError::Corrupt(m)) => return Err(StoreError::Corrupt(m)),
            Err(refusal) if optimistic => return Err(refusal),
            Err(refusal) => {
                self.rollback_to("op")?;
                self.release("op")?;
                self.dirty_pools = dirty_before;
                Err(refusal)
            }
        };
        let encoded = encode(result)?;
        let answer = StoredResponse {
            request_sha256: key.request_sha256.to_owned(),
            status: encoded.status,
            body: encoded.body,
        };
        if let Some(k) = key.key {
            let stored = match encoded.stored_body {
                Some(body) => StoredResponse {
                    body,
                    ..answer.clone()
                },
                None => answer.clone(),
            };
            self.store_idempotent_response(key.org_id, k, &stored, now_ms)
                .map_err(|e| match e {
                    StoreError::Conflict(_) => {
                        StoreError::Database("idempotency key in flight".into())
                    }
                    e => e,
                })?;
        }
        Ok(Once::Answer(answer))
    }
}
