//! Bearer-token authentication. Tokens are random secrets; the store keeps only their SHA-256.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use suanli_api::ErrorCode;
use suanli_core::decide::access::{self, Action};
use suanli_store::ops::{OrgRow, TokenRow};

use crate::error::ApiError;
use crate::extract::hex;
use crate::AppState;

/// Prefix of every token secret, so that leaked tokens are easy to recognise and scan for.
pub const TOKEN_PREFIX: &str = "sk_";

/// A new token secret: 32 random bytes.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    format!("{TOKEN_PREFIX}{}", hex(&bytes))
}

pub fn secret_sha256(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// How long a token read from the database may answer for it without being read again. Within
/// one exchange process a revocation takes effect at once (it clears the cache); this bounds how
/// long another process writing to the same PostgreSQL may still accept a token it revoked.
const CALLER_CACHE_TTL_MS: i64 = 1_000;

/// Tokens kept at most; a full cache starts afresh.
const CALLER_CACHE_MAX: usize = 10_000;

/// Callers by token hash, read from the database at most once per [`CALLER_CACHE_TTL_MS`]: every
/// request authenticates, and the read (a query on a pooled connection, handed to a blocking
/// thread) was the largest cost of a request outside the writer. Only valid tokens are kept, and
/// each use still checks the expiry against the clock. Orgs and members are never changed after
/// creation; the one change that matters, a revocation, clears the cache ([`CallerCache::clear`]),
/// and a read that began before the clear is not kept (the generation check), so a token revoked
/// through this process is refused by every request that starts after the revocation answered.
#[derive(Debug, Default)]
pub struct CallerCache {
    inner: std::sync::Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    /// Bumped by every clear.
    generation: u64,
    /// Token hash → the caller and when it was read.
    callers: std::collections::HashMap<String, (Caller, i64)>,
}

impl CallerCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The caller for `hash` if read less than the TTL ago, and the generation to pass to
    /// [`CallerCache::keep`] after reading it from the database otherwise.
    fn get(&self, hash: &str, now_ms: i64) -> Result<Caller, u64> {
        let inner = self.lock();
        match inner.callers.get(hash) {
            Some((caller, read_ms)) if now_ms.saturating_sub(*read_ms) < CALLER_CACHE_TTL_MS => {
                Ok(caller.clone())
            }
            _ => Err(inner.generation),
        }
    }

    /// Keeps `caller`, read at `now_ms`, unless the cache was cleared since `generation`.
    fn keep(&self, hash: String, caller: &Caller, now_ms: i64, generation: u64) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if inner.callers.len() >= CALLER_CACHE_MAX {
            inner.callers.clear();
        }
        inner.callers.insert(hash, (caller.clone(), now_ms));
    }

    /// Forgets every token: one was revoked.
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.callers.clear();
    }
}

/// The authenticated caller: its org and the token it used.
#[derive(Debug, Clone)]
pub struct Caller {
    pub org: OrgRow,
    pub token: TokenRow,
}

impl Caller {
    pub fn org_id(&self) -> &str {
        &self.org.id
    }

    /// The caller as the core's access rules see it: its org, the org's kind and the token's role.
    pub fn access(&self) -> access::Caller<'_> {
        access::Caller {
            org_id: &self.org.id,
            kind: self.org.kind,
            role: access::Role::parse(&self.token.role),
        }
    }

    /// Whether the caller may send `action` ([`access::decide_access`]); 403 `forbidden` if not.
    pub fn may(&self, action: Action) -> Result<(), ApiError> {
        access::decide_access(&self.access(), action).map_err(ApiError::from)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthenticated,
                "send an API token: Authorization: Bearer <token>",
            )
        })?;
        let value = header.to_str().map_err(|_| {
            ApiError::new(
                ErrorCode::TokenInvalid,
                "the Authorization header is not valid ASCII",
            )
        })?;
        let secret = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::TokenInvalid,
                    "use the Bearer scheme: Authorization: Bearer <token>",
                )
            })?;
        if secret.len() > 256 {
            return Err(ApiError::new(
                ErrorCode::TokenInvalid,
                "the token is not valid",
            ));
        }
        let hash = secret_sha256(secret);
        let now = crate::now_ms();
        // A kept caller, or one read now (and the cache generation its read began in).
        let (caller, read_in) = match state.callers.get(&hash, now) {
            Ok(caller) => (caller, None),
            Err(generation) => {
                let key = hash.clone();
                let (token, org) = state
                    .read(move |tx| tx.caller_by_token_hash(&key))
                    .await?
                    .ok_or_else(|| {
                        ApiError::new(ErrorCode::TokenInvalid, "the token is not valid")
                    })?;
                (Caller { org, token }, Some(generation))
            }
        };
        if caller.token.revoked_ms.is_some() {
            return Err(ApiError::new(
                ErrorCode::TokenRevoked,
                "the token was revoked",
            ));
        }
        if caller.token.expires_ms <= now {
            return Err(ApiError::new(
                ErrorCode::TokenExpired,
                "the token has expired",
            ));
        }
        if let Some(generation) = read_in {
            state.callers.keep(hash, &caller, now, generation);
        }
        Ok(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(id: &str) -> Caller {
        Caller {
            org: OrgRow {
                id: "org_a".into(),
                name: "a".into(),
                kind: suanli_core::decide::OrgKind::Consumer,
                consumer_type: Some("enterprise".into()),
                zone: "z".into(),
                origin_region: "r".into(),
                created_ms: 0,
                name_unique: true,
            },
            token: TokenRow {
                id: id.into(),
                org_id: "org_a".into(),
                member_id: "mem_a".into(),
                name: "t".into(),
                role: "admin".into(),
                created_ms: 0,
                expires_ms: i64::MAX,
                revoked_ms: None,
            },
        }
    }

    /// A kept caller answers until the TTL has passed, then the token is read again.
    #[test]
    fn a_kept_caller_answers_for_its_ttl_only() {
        let cache = CallerCache::default();
        let generation = cache.get("h", 1_000).unwrap_err();
        cache.keep("h".into(), &caller("tok_1"), 1_000, generation);
        let hit = cache.get("h", 1_000 + CALLER_CACHE_TTL_MS - 1).unwrap();
        assert_eq!(hit.token.id, "tok_1");
        assert!(cache.get("h", 1_000 + CALLER_CACHE_TTL_MS).is_err());
        assert!(cache.get("other", 1_000).is_err());
    }

    /// A clear (a revocation) forgets every caller, and a read that began before it is not kept:
    /// it may have seen the token before the revocation committed.
    #[test]
    fn a_read_begun_before_a_clear_is_not_kept() {
        let cache = CallerCache::default();
        let before = cache.get("h", 0).unwrap_err();
        cache.keep("h".into(), &caller("tok_1"), 0, before);
        let racing = cache.get("h2", 0).unwrap_err();
        cache.clear();
        assert!(cache.get("h", 1).is_err(), "cleared");
        cache.keep("h2".into(), &caller("tok_2"), 1, racing);
        assert!(cache.get("h2", 1).is_err(), "a read from before the clear");
        let after = cache.get("h2", 2).unwrap_err();
        cache.keep("h2".into(), &caller("tok_2"), 2, after);
        assert_eq!(cache.get("h2", 2).unwrap().token.id, "tok_2");
    }
}
