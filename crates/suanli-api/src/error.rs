//! Error body and stable error codes. Status codes are mapped here and nowhere else.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Every error answer: a stable machine-readable `code`, a human `message`, the `field` at fault
/// when there is one, and the `request_id` to quote to the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub request_id: String,
}

macro_rules! error_codes {
    ($($variant:ident = ($code:literal, $status:literal)),* $(,)?) => {
        /// Stable error codes. Never renamed: clients match on them.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode { $($variant),* }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code),* }
            }

            /// The HTTP status this code is answered with.
            pub fn http_status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status),* }
            }

            pub fn parse(code: &str) -> Option<ErrorCode> {
                match code { $($code => Some(ErrorCode::$variant),)* _ => None }
            }
        }
    };
}

error_codes! {
    InvalidJson = ("invalid_json", 400),
    UnknownField = ("unknown_field", 400),
    MissingField = ("missing_field", 400),
    InvalidField = ("invalid_field", 400),
    InvalidQuery = ("invalid_query", 400),
    InvalidHeader = ("invalid_header", 400),
    UnsupportedMediaType = ("unsupported_media_type", 415),
    PayloadTooLarge = ("payload_too_large", 413),
    Unauthenticated = ("unauthenticated", 401),
    TokenInvalid = ("token_invalid", 401),
    TokenExpired = ("token_expired", 401),
    TokenRevoked = ("token_revoked", 401),
    Forbidden = ("forbidden", 403),
    NotFound = ("not_found", 404),
    RouteNotFound = ("route_not_found", 404),
    MethodNotAllowed = ("method_not_allowed", 405),
    Conflict = ("conflict", 409),
    CapacityUnavailable = ("capacity_unavailable", 409),
    OfferNotAvailable = ("offer_not_available", 409),
    LeaseNotActive = ("lease_not_active", 409),
    InsufficientFunds = ("insufficient_funds", 402),
    PriceAboveLimit = ("price_above_limit", 409),
    IdempotencyKeyReused = ("idempotency_key_reused", 422),
    IdempotencyKeyInFlight = ("idempotency_key_in_flight", 409),
    Overflow = ("amount_overflow", 422),
    StaleAttempt = ("stale_attempt", 409),
    JobNotActive = ("job_not_active", 409),
    InvalidSignature = ("invalid_signature", 400),
    UsageRefused = ("usage_refused", 422),
    AgentNotConnected = ("agent_not_connected", 409),
    AgentSuperseded = ("agent_superseded", 409),
    Unavailable = ("unavailable", 503),
    Internal = ("internal", 500),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_parse_back() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(
                seen.insert(code.as_str()),
                "duplicate code {}",
                code.as_str()
            );
            assert_eq!(ErrorCode::parse(code.as_str()), Some(*code));
            assert!((400..600).contains(&code.http_status()));
        }
    }
}
