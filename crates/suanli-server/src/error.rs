//! The one error type of the HTTP layer. Status codes come from [`ErrorCode::http_status`]; the full
//! cause goes to the log, a stable code, a message and the field at fault go to the client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use suanli_api::{ErrorBody, ErrorCode};
use suanli_core::decide::{ItemRefusal, Refusal};
use suanli_store::StoreError;

tokio::task_local! {
    /// The id of the request being served, set by the request-id middleware.
    pub static REQUEST_ID: String;
}

/// The current request's id, or `-` outside a request.
pub fn current_request_id() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| "-".into())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            field: None,
        }
    }

    pub fn field(code: ErrorCode, field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            field: Some(field.into()),
        }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::field(ErrorCode::InvalidField, field, message)
    }

    pub fn not_found(what: &str) -> Self {
        ApiError::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::Forbidden, message)
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code.as_str().into(),
            message: self.message.clone(),
            field: self.field.clone(),
            request_id: current_request_id(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.code == ErrorCode::Internal || self.code == ErrorCode::Unavailable {
            tracing::error!(code = self.code.as_str(), message = %self.message, request_id = %current_request_id(), "request failed");
        }
        let mut body = self.body();
        if self.code == ErrorCode::Internal {
            // The cause is in the log; the client gets the request id to quote.
            body.message = "internal error".into();
        }
        (self.status(), axum::Json(body)).into_response()
    }
}

/// A refusal the core decided before the store was asked: answered exactly as the same refusal
/// from the store is.
impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        ApiError::from(StoreError::from(r))
    }
}

/// A refusal of one item of the request: `invalid_field` on the item's field.
impl From<ItemRefusal> for ApiError {
    fn from(r: ItemRefusal) -> Self {
        ApiError::invalid(r.path(), r.message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::not_found(what),
            StoreError::Conflict(m) => {
                ApiError::new(ErrorCode::Conflict, format!("already exists: {m}"))
            }
            StoreError::InsufficientFunds { .. } => {
                ApiError::new(ErrorCode::InsufficientFunds, e.to_string())
            }
            StoreError::CapacityUnavailable => {
                ApiError::new(ErrorCode::CapacityUnavailable, e.to_string())
            }
            StoreError::OfferNotAvailable(_) => {
                ApiError::field(ErrorCode::OfferNotAvailable, "offer_id", e.to_string())
            }
            StoreError::LeaseNotActive(_) => {
                ApiError::new(ErrorCode::LeaseNotActive, e.to_string())
            }
            StoreError::PriceAboveLimit { .. } => ApiError::field(
                ErrorCode::PriceAboveLimit,
                "max_price_micros_per_unit_hour",
                e.to_string(),
            ),
            StoreError::Invalid { field, message } => ApiError::invalid(field, message),
            StoreError::Duplicate { field, message } => {
                ApiError::field(ErrorCode::Conflict, field, message)
            }
            StoreError::Forbidden(m) => ApiError::forbidden(m),
            StoreError::StaleAttempt(_) => ApiError::new(ErrorCode::StaleAttempt, e.to_string()),
            StoreError::Superseded(m) => ApiError::new(ErrorCode::AgentSuperseded, m),
            StoreError::JobNotActive(_) => ApiError::new(ErrorCode::JobNotActive, e.to_string()),
            StoreError::Overflow => ApiError::new(
                ErrorCode::Overflow,
                "the amount overflows what the ledger can hold",
            ),
            StoreError::Corrupt(m) => {
                tracing::error!(error = %m, request_id = %current_request_id(), "stored data does not decode");
                ApiError::new(
                    ErrorCode::Internal,
                    "stored data could not be read; the operator has been told",
                )
            }
            StoreError::Database(m) => {
                tracing::error!(error = %m, request_id = %current_request_id(), "store failure");
                ApiError::new(
                    ErrorCode::Unavailable,
                    "the store is unavailable; retry with the same idempotency key",
                )
            }
        }
    }
}
