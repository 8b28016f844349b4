//! Extractors that turn every malformed request into an [`ApiError`] with a stable code and field.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use suanli_api::ErrorCode;

use crate::error::ApiError;

/// A JSON body: `application/json`, valid JSON, no unknown fields, every field well-typed.
/// Also keeps the SHA-256 of the request (method, path, body) for idempotency.
pub struct ApiJson<T> {
    pub value: T,
    pub request_sha256: String,
}

fn request_hash(method: &str, path: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(method.as_bytes());
    h.update(b" ");
    h.update(path.as_bytes());
    h.update(b"\n");
    h.update(body);
    hex(&h.finalize())
}

pub fn hex(bytes: &[u8]) -> String {
    // Per request (the token's hash, the body's hash): no `format!` per byte.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Maps a serde_json error at `path` to a code: unknown field, missing field or invalid field.
fn json_error(path: String, e: &serde_json::Error) -> ApiError {
    let msg = e.to_string();
    let field = if path == "." { None } else { Some(path) };
    let clean = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
    if e.is_syntax() || e.is_eof() {
        return ApiError::new(
            ErrorCode::InvalidJson,
            format!("the body is not valid JSON: {clean}"),
        );
    }
    if let Some(rest) = clean.strip_prefix("unknown field `") {
        // The path already ends at the unknown field.
        let name = rest.split('`').next().unwrap_or_default();
        return ApiError::field(
            ErrorCode::UnknownField,
            field.unwrap_or_else(|| name.to_owned()),
            clean,
        );
    }
    if let Some(rest) = clean.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or_default();
        let full = match &field {
            Some(p) => format!("{p}.{name}"),
            None => name.to_owned(),
        };
        return ApiError::field(ErrorCode::MissingField, full, clean);
    }
    match field {
        Some(f) => ApiError::field(ErrorCode::InvalidField, f, clean),
        None => ApiError::new(ErrorCode::InvalidJson, clean),
    }
}

/// Parses a JSON body with field paths in errors.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        json_error(path, e.inner())
    })?;
    Ok(value)
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let mime = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        if mime != "application/json"
            && !(mime.starts_with("application/") && mime.ends_with("+json"))
        {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        let method = req.method().as_str().to_owned();
        let path = req.uri().path().to_owned();
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(ErrorCode::PayloadTooLarge, "the body is larger than 1 MiB")
            } else {
                ApiError::new(
                    ErrorCode::InvalidJson,
                    format!("the body could not be read: {e}"),
                )
            }
        })?;
        let value = parse_json(&bytes)?;
        Ok(ApiJson {
            value,
            request_sha256: request_hash(&method, &path, &bytes),
        })
    }
}

/// The request hash of a POST without a body (end, cancel, revoke, withdraw).
pub struct BodylessHash(pub String);

impl<S: Send + Sync> FromRequestParts<S> for BodylessHash {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(BodylessHash(request_hash(
            parts.method.as_str(),
            parts.uri.path(),
            b"",
        )))
    }
}

/// Query parameters with unknown or ill-typed ones refused.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded_parse(query));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|e| {
                let path = e.path().to_string();
                let msg = e.inner().to_string();
                let field = if path == "." {
                    msg.split('`').nth(1).map(str::to_owned)
                } else {
                    Some(path)
                };
                ApiError {
                    code: ErrorCode::InvalidQuery,
                    message: msg,
                    field,
                }
            })
    }
}

fn form_urlencoded_parse(query: &str) -> form_urlencoded::Parse<'_> {
    form_urlencoded::parse(query.as_bytes())
}

/// The optional `Idempotency-Key` header: 1 to 255 visible ASCII characters.
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Some(v) = parts.headers.get(suanli_api::IDEMPOTENCY_KEY_HEADER) else {
            return Ok(IdempotencyKey(None));
        };
        let bad = || {
            ApiError::field(
                ErrorCode::InvalidHeader,
                "Idempotency-Key",
                "the idempotency key must be 1 to 255 visible ASCII characters",
            )
        };
        let s = v.to_str().map_err(|_| bad())?;
        if s.is_empty() || s.len() > 255 || !s.bytes().all(|b| (0x21..0x7f).contains(&b)) {
            return Err(bad());
        }
        Ok(IdempotencyKey(Some(s.to_owned())))
    }
}

/// The one id in a route's path, with malformed ones refused as JSON errors.
pub struct IdPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(id) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|e| {
                    ApiError::field(
                        ErrorCode::InvalidField,
                        "id",
                        format!("bad id in the path: {e}"),
                    )
                })?;
        Ok(IdPath(id))
    }
}

/// Two ids in a route's path (agent and attempt).
pub struct TwoIdPath(pub String, pub String);

impl<S: Send + Sync> FromRequestParts<S> for TwoIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path((a, b)) =
            axum::extract::Path::<(String, String)>::from_request_parts(parts, state)
                .await
                .map_err(|e| {
                    ApiError::field(
                        ErrorCode::InvalidField,
                        "id",
                        format!("bad id in the path: {e}"),
                    )
                })?;
        Ok(TwoIdPath(a, b))
    }
}

#[cfg(test)]
mod tests {
    use super::hex;

    #[test]
    fn hex_is_lowercase_two_digits_per_byte() {
        assert_eq!(hex(&[]), "");
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff, 0x10]), "000fa5ff10");
        // SHA-256 of "abc" (FIPS 180-2, appendix B.1).
        use sha2::Digest;
        assert_eq!(
            hex(&sha2::Sha256::digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
