//! Bearer-token authentication. Tokens are random secrets; the store keeps only their SHA-256.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use suanli_api::{ErrorCode, OrgKind, Role};
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

/// The authenticated caller: its org and the token it used.
#[derive(Debug, Clone)]
pub struct Caller {
    pub org: OrgRow,
    pub token: TokenRow,
}

impl Caller {
    pub fn kind(&self) -> OrgKind {
        OrgKind::parse(&self.org.kind).unwrap_or(OrgKind::Consumer)
    }

    pub fn org_id(&self) -> &str {
        &self.org.id
    }

    pub fn require_kind(&self, kinds: &[OrgKind], what: &str) -> Result<(), ApiError> {
        if kinds.contains(&self.kind()) {
            Ok(())
        } else {
            let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
            Err(ApiError::forbidden(format!(
                "{what} is for {} orgs",
                names.join(" and ")
            )))
        }
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        if Role::parse(&self.token.role) == Some(Role::Admin) {
            Ok(())
        } else {
            Err(ApiError::forbidden("this needs an admin of the org"))
        }
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
        state
            .read(move |tx| tx.caller_by_token_hash(&hash))
            .await
            .and_then(|caller| match caller {
                Some((token, org)) => {
                    if token.revoked_ms.is_some() {
                        Err(ApiError::new(
                            ErrorCode::TokenRevoked,
                            "the token was revoked",
                        ))
                    } else if token.expires_ms <= now {
                        Err(ApiError::new(
                            ErrorCode::TokenExpired,
                            "the token has expired",
                        ))
                    } else {
                        Ok(Caller { org, token })
                    }
                }
                None => Err(ApiError::new(
                    ErrorCode::TokenInvalid,
                    "the token is not valid",
                )),
            })
    }
}
