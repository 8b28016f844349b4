//! Extractors that turn every malformed request into an [`ApiError`] with a stable code and field.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use suanli_api::{
    AgentId, AttemptId, ErrorCode, Id, JobId, LeaseId, OfferId, OrgId, PoolId, TokenId,
};
use suanli_store::StoreError;

use crate::error::ApiError;
use crate::strict::Strict;

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

/// The request hash of a request whose body is too large to hash twice (a part of a file): its
/// parts, as the handler measured them, one per line.
pub fn request_hash_of(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update(b"\n");
    }
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

/// Parses a JSON body: exactly one JSON object (at every depth, an object where the API expects
/// one), nothing after it but whitespace, no NUL in any string. Errors say which field is wrong and
/// how, in the API's terms (see [`describe`]), never in Rust's.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.starts_with(b"\xEF\xBB\xBF") {
        return Err(ApiError::new(
            ErrorCode::InvalidJson,
            "the body starts with a UTF-8 byte-order mark (EF BB BF); send the JSON document \
             without it",
        ));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            ErrorCode::InvalidJson,
            "the body is empty; send a JSON object",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(Strict(&mut de)).map_err(|e| {
        let path = e.path().to_string();
        json_error(&path, e.inner())
    })?;
    // The document must be all there is: a purchase followed by `garbage` or by a second
    // document is not a purchase.
    de.end().map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidJson,
            "the body has data after its JSON document; send exactly one JSON object",
        )
    })?;
    Ok(value)
}

/// Maps a serde_json error at `path` (`.` for the whole body) to a code, a field and a message.
fn json_error(path: &str, e: &serde_json::Error) -> ApiError {
    let full = e.to_string();
    // serde_json appends the position; it helps with syntax, not with a field's value.
    let msg = full.split(" at line ").next().unwrap_or(&full);
    if e.is_syntax() || e.is_eof() || e.is_io() {
        return ApiError::new(
            ErrorCode::InvalidJson,
            format!(
                "the body is not valid JSON: {} (line {}, column {})",
                syntax(msg),
                e.line(),
                e.column()
            ),
        );
    }
    let field = (path != ".").then(|| path.to_owned());
    match describe(field.as_deref(), msg) {
        Described::Unknown(name) => ApiError::field(
            ErrorCode::UnknownField,
            field.unwrap_or_else(|| name.clone()),
            format!("unknown field {name:?}; see the API's OpenAPI document for the fields"),
        ),
        Described::Missing(name) => {
            let full = match &field {
                Some(p) => format!("{p}.{name}"),
                None => name,
            };
            ApiError::field(
                ErrorCode::MissingField,
                full.clone(),
                format!("{full} is required"),
            )
        }
        Described::Invalid(message) => match field {
            Some(f) => ApiError::field(ErrorCode::InvalidField, f, message),
            None => ApiError::new(ErrorCode::InvalidJson, message),
        },
    }
}

/// serde_json's syntax messages in a client's terms.
fn syntax(msg: &str) -> String {
    match msg {
        "expected value" => "expected a JSON value".into(),
        "trailing characters" => "data after the JSON document".into(),
        "recursion limit exceeded" => "the document nests too deeply".into(),
        "number out of range" => "a number is out of range".into(),
        m if m.starts_with("EOF while parsing") => "the body ends before the document does".into(),
        m if m.starts_with("control character") => {
            "a string holds a raw control character; escape it (\\n, \\u0001)".into()
        }
        m if m.starts_with("lone leading surrogate") || m.contains("surrogate") => {
            "a string holds an unpaired UTF-16 surrogate escape".into()
        }
        m => m.into(),
    }
}

enum Described {
    Unknown(String),
    Missing(String),
    Invalid(String),
}

/// Turns serde's data errors ("invalid type: floating point `1.8e19`, expected u64") into what a
/// client can act on ("amount_micros must be a whole number from 0 to …"). `field` is `None` for
/// the body itself.
fn describe(field: Option<&str>, msg: &str) -> Described {
    let subject = field.unwrap_or("the body");
    let quoted = |rest: &str| rest.split('`').nth(1).unwrap_or_default().to_owned();
    if let Some(rest) = msg.strip_prefix("unknown field ") {
        return Described::Unknown(quoted(rest));
    }
    if let Some(rest) = msg.strip_prefix("missing field ") {
        return Described::Missing(quoted(rest));
    }
    if let Some(rest) = msg.strip_prefix("duplicate field ") {
        return Described::Invalid(format!("{} is given more than once", quoted(rest)));
    }
    if let Some(rest) = msg.strip_prefix("unknown variant ") {
        let got = quoted(rest);
        let allowed: Vec<&str> = rest
            .split_once("expected ")
            .map(|(_, list)| list.split('`').skip(1).step_by(2).collect())
            .unwrap_or_default();
        return Described::Invalid(format!(
            "{subject} must be one of {}; {got:?} is not",
            allowed.join(", ")
        ));
    }
    if msg == crate::strict::NUL_MESSAGE {
        return Described::Invalid(format!("{subject} {msg}"));
    }
    for (prefix, kind) in [("invalid type: ", "type"), ("invalid value: ", "value")] {
        let Some(rest) = msg.strip_prefix(prefix) else {
            continue;
        };
        let Some((got, expected)) = rest.rsplit_once(", expected ") else {
            continue;
        };
        let (want, integral) = expected_in_words(expected);
        let got = got_in_words(got, integral);
        let subject = if field.is_none() && want == "an object" {
            "the body must be a JSON object".to_owned()
        } else {
            format!("{subject} must be {want}")
        };
        return Described::Invalid(if kind == "value" && integral {
            format!("{subject}; {got} is out of range")
        } else {
            format!("{subject}, not {got}")
        });
    }
    if let Some(rest) = msg.strip_prefix("invalid length ") {
        let n = rest.split(',').next().unwrap_or_default();
        return Described::Invalid(format!("{subject} has the wrong length ({n})"));
    }
    // Our own checks' messages are already in the API's terms.
    Described::Invalid(match field {
        Some(f) => format!("{f}: {msg}"),
        None => msg.to_owned(),
    })
}

/// What serde says it expected, in words; true when it is an integer type.
fn expected_in_words(expected: &str) -> (String, bool) {
    let range = |min: i128, max: i128| (format!("a whole number from {min} to {max}"), true);
    match expected {
        "u8" => range(0, u8::MAX.into()),
        "u16" => range(0, u16::MAX.into()),
        "u32" => range(0, u32::MAX.into()),
        "u64" => range(0, u64::MAX.into()),
        "i8" => range(i8::MIN.into(), i8::MAX.into()),
        "i16" => range(i16::MIN.into(), i16::MAX.into()),
        "i32" => range(i32::MIN.into(), i32::MAX.into()),
        "i64" => range(i64::MIN.into(), i64::MAX.into()),
        "f32" | "f64" => ("a number".into(), false),
        "a boolean" => ("true or false".into(), false),
        "a string" | "a borrowed string" | "a char" => ("a string".into(), false),
        "a sequence" => ("an array".into(), false),
        "a map" => ("an object".into(), false),
        "unit" => ("null".into(), false),
        e if e.starts_with("struct ") || e.starts_with("a map") => ("an object".into(), false),
        e if e.starts_with("enum ") || e.contains("variant") => {
            ("one of the documented values".into(), false)
        }
        e if e.starts_with("a tuple") || e.starts_with("tuple") || e.starts_with("an array") => {
            ("an array".into(), false)
        }
        e => (e.to_owned(), false),
    }
}

/// What serde says it got (`integer \`-1\``, `floating point \`1.8e19\``, `sequence`), in words.
fn got_in_words(got: &str, integral: bool) -> String {
    let inner = got.split('`').nth(1);
    if got.starts_with("floating point") {
        return if integral {
            "a number with a fraction or beyond that range".into()
        } else {
            inner.unwrap_or("a number").to_owned()
        };
    }
    if got.starts_with("integer") {
        return inner.unwrap_or("a number").to_owned();
    }
    if let Some(s) = got.strip_prefix("string ") {
        return format!("the string {s}");
    }
    if got.starts_with("boolean") {
        return inner.unwrap_or("a boolean").to_owned();
    }
    match got {
        "sequence" => "an array".into(),
        "map" => "an object".into(),
        "unit value" | "null" | "Option value" => "null".into(),
        other => other.to_owned(),
    }
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
        serde_path_to_error::deserialize(Strict(de))
            .map(ApiQuery)
            .map_err(|e| {
                let path = e.path().to_string();
                let msg = e.inner().to_string();
                let field = (path != ".").then_some(path);
                let (field, message) = match describe(field.as_deref(), &msg) {
                    Described::Unknown(name) => (
                        Some(name.clone()),
                        format!("unknown query parameter {name:?}"),
                    ),
                    Described::Missing(name) => (
                        Some(name.clone()),
                        format!("query parameter {name} is required"),
                    ),
                    Described::Invalid(m) => (field, m),
                };
                ApiError {
                    code: ErrorCode::InvalidQuery,
                    message,
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

/// The optional `Suanli-Agent-Generation` header of an agent's report: a whole number.
pub struct AgentGeneration(pub Option<u64>);

impl<S: Send + Sync> FromRequestParts<S> for AgentGeneration {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Some(v) = parts.headers.get(suanli_api::AGENT_GENERATION_HEADER) else {
            return Ok(AgentGeneration(None));
        };
        v.to_str()
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .map(|g| AgentGeneration(Some(g)))
            .ok_or_else(|| {
                ApiError::field(
                    ErrorCode::InvalidHeader,
                    suanli_api::AGENT_GENERATION_HEADER,
                    "the agent generation is the whole number its registration answered",
                )
            })
    }
}

/// An id a request names, parsed at the edge as a `T` (`Named<LeaseId>`), or text that is no id
/// of its kind (another kind's id, the wrong length or case): that names no object, and
/// [`Named::get`] answers then exactly what the store answers for a missing object of the kind.
///
/// Handlers call `get` where the store would have looked the id up (first thing in the store's
/// closure), so that a request answers as it did when the store was asked about any text: its
/// other errors first (403, a bad field), an idempotency key's stored answer first, and the
/// refusal stored under the key like any other.
#[derive(Debug, Clone)]
pub struct Named<T>(Result<T, StoreError>);

impl<T: Id> Named<T> {
    /// `text` as a `T`, or `unknown` (what the store answers when nothing has that id).
    pub fn parse(text: &str, unknown: StoreError) -> Named<T> {
        Named(T::parse(text).map_err(|_| unknown))
    }

    /// An id known to be of its kind (the caller's own, read from the store).
    pub fn known(id: T) -> Named<T> {
        Named(Ok(id))
    }

    /// The typed id, or the answer for no such object.
    pub fn get(&self) -> Result<&T, StoreError> {
        self.0.as_ref().map_err(Clone::clone)
    }
}

impl<T: PathId> Named<T> {
    fn from_path(text: String) -> Named<T> {
        Named(T::parse_string(text).map_err(|_| T::unknown()))
    }
}

/// An id type a route's path names (`LeaseId` in `/leases/{lease_id}`), with what the store
/// answers for an id of the kind that nothing has.
pub trait PathId: Id {
    /// A missing object of the kind: 404 "lease not found".
    fn unknown() -> StoreError {
        StoreError::NotFound(Self::KIND)
    }
}

impl PathId for OrgId {}
impl PathId for TokenId {}
impl PathId for PoolId {}
impl PathId for OfferId {}
impl PathId for LeaseId {}
impl PathId for JobId {}
impl PathId for AgentId {}

/// Fencing refuses every report about an attempt the store does not know: 409 `stale_attempt`.
impl PathId for AttemptId {
    fn unknown() -> StoreError {
        StoreError::StaleAttempt("unknown attempt".into())
    }
}

/// Checks the characters of an id taken from a route's path. Ids are made by the exchange
/// (`lease_3f9a…`): ASCII letters, digits, `_`, `-` and `.`, at most 128 bytes. Anything else
/// (NUL, `/`, spaces, other scripts) cannot name an object, and is refused here with 400
/// `invalid_field` and the parameter's name, before any store sees it, so that both stores answer
/// it alike.
fn path_text(field: &str, id: &str) -> Result<(), ApiError> {
    suanli_core::validate::id(id)
        .map_err(|m| ApiError::field(ErrorCode::InvalidField, field, format!("{field} {m}")))
}

/// The name of a route's path parameter, for errors (`lease_id` in `/leases/{lease_id}`).
fn path_param_names(parts: &Parts) -> Vec<String> {
    parts
        .extensions
        .get::<axum::extract::MatchedPath>()
        .map(|m| {
            m.as_str()
                .split('/')
                .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
                .map(|s| s.trim_start_matches('*').to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn bad_path(e: impl std::fmt::Display) -> ApiError {
    ApiError::field(
        ErrorCode::InvalidField,
        "id",
        format!("the path could not be read: {e}"),
    )
}

/// The one id in a route's path, parsed as a `T` (`IdPath<LeaseId>`): text that cannot be an id
/// is refused here with 400 `invalid_field`; text of another kind or shape is kept as a
/// [`Named`] that answers "not found" where the store is asked.
pub struct IdPath<T>(pub Named<T>);

impl<S: Send + Sync, T: PathId> FromRequestParts<S> for IdPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(id) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(bad_path)?;
        let names = path_param_names(parts);
        let name = names.first().map(String::as_str).unwrap_or("id");
        path_text(name, &id)?;
        Ok(IdPath(Named::from_path(id)))
    }
}

/// A route's two path parameters, with their names (for errors).
async fn two_path_params<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
) -> Result<([String; 2], String, String), ApiError> {
    let axum::extract::Path((a, b)) =
        axum::extract::Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(bad_path)?;
    let names = path_param_names(parts);
    let name = |i: usize| names.get(i).cloned().unwrap_or_else(|| "id".to_owned());
    Ok(([name(0), name(1)], a, b))
}

/// Two ids in a route's path (agent and attempt), each as [`IdPath`] takes one.
pub struct TwoIdPath<A, B>(pub Named<A>, pub Named<B>);

impl<S: Send + Sync, A: PathId, B: PathId> FromRequestParts<S> for TwoIdPath<A, B> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let ([first, second], a, b) = two_path_params(parts, state).await?;
        path_text(&first, &a)?;
        path_text(&second, &b)?;
        Ok(TwoIdPath(Named::from_path(a), Named::from_path(b)))
    }
}

/// A job id (as [`IdPath`] takes it) and an output's file path (`/jobs/{job_id}/outputs/{*path}`):
/// the path is refused when it holds NUL or another control character, or is longer than 1024
/// bytes.
pub struct IdAndFilePath<T>(pub Named<T>, pub String);

impl<S: Send + Sync, T: PathId> FromRequestParts<S> for IdAndFilePath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let ([first, _], id, path) = two_path_params(parts, state).await?;
        path_text(&first, &id)?;
        if path.is_empty() || path.len() > 1024 || path.chars().any(char::is_control) {
            return Err(ApiError::field(
                ErrorCode::InvalidField,
                "path",
                "path must be 1 to 1024 bytes without control characters",
            ));
        }
        Ok(IdAndFilePath(Named::from_path(id), path))
    }
}

#[cfg(test)]
mod tests {
    use super::{hex, parse_json};
    use suanli_api::{CreatePoolRequest, DepositRequest, ErrorCode, PurchaseRequest, QuoteRequest};

    fn refused<T: serde::de::DeserializeOwned>(body: &str) -> crate::error::ApiError {
        match parse_json::<T>(body.as_bytes()) {
            Ok(_) => panic!("{body:?} was accepted"),
            Err(e) => e,
        }
    }

    #[test]
    fn one_object_and_nothing_after_it() {
        let ok = r#"{"amount_micros": 5, "external_ref": "B-1"}"#;
        assert!(parse_json::<DepositRequest>(ok.as_bytes()).is_ok());
        assert!(parse_json::<DepositRequest>(format!(" {ok} \r\n\t").as_bytes()).is_ok());
        for trailing in [" garbage", " {}", "{}", " 1", "x", ",", " \u{0}"] {
            let e = refused::<DepositRequest>(&format!("{ok}{trailing}"));
            assert_eq!(e.code, ErrorCode::InvalidJson, "{trailing:?}");
            assert!(
                e.message.contains("after its JSON document"),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn arrays_are_not_objects_at_any_depth() {
        let e = refused::<DepositRequest>(r#"[1000000, "ref"]"#);
        assert_eq!(e.code, ErrorCode::InvalidJson);
        assert_eq!(e.message, "the body must be a JSON object, not an array");
        let e = refused::<PurchaseRequest>(r#"["offer_1", 1, 60]"#);
        assert_eq!(e.code, ErrorCode::InvalidJson);
        let e = refused::<CreatePoolRequest>(
            r#"{"name": "p", "zone": "z", "nodes": [["n", 1, 1024]]}"#,
        );
        assert_eq!(e.code, ErrorCode::InvalidField);
        assert_eq!(e.field.as_deref(), Some("nodes[0]"));
        assert_eq!(e.message, "nodes[0] must be an object, not an array");
        let e = refused::<DepositRequest>("5");
        assert_eq!(e.message, "the body must be a JSON object, not 5");
    }

    #[test]
    fn messages_speak_the_apis_language() {
        let e = refused::<DepositRequest>(
            r#"{"amount_micros": 18446744073709551616, "external_ref": "B"}"#,
        );
        assert_eq!(e.field.as_deref(), Some("amount_micros"));
        assert_eq!(
            e.message,
            "amount_micros must be a whole number from 0 to 18446744073709551615, not a number \
             with a fraction or beyond that range"
        );
        let e = refused::<DepositRequest>(r#"{"amount_micros": -1, "external_ref": "B"}"#);
        assert_eq!(
            e.message,
            "amount_micros must be a whole number from 0 to 18446744073709551615; -1 is out of range"
        );
        let e = refused::<DepositRequest>(r#"{"amount_micros": "5", "external_ref": "B"}"#);
        assert_eq!(
            e.message,
            "amount_micros must be a whole number from 0 to 18446744073709551615, not the string \"5\""
        );
        let e = refused::<QuoteRequest>(r#"{"duration_limit_s": 60, "limit": 4294967296}"#);
        assert_eq!(e.field.as_deref(), Some("limit"));
        assert!(e.message.contains("from 0 to 4294967295"), "{}", e.message);
        let e = refused::<DepositRequest>(r#"{"amount_micros": 5}"#);
        assert_eq!(e.code, ErrorCode::MissingField);
        assert_eq!(e.message, "external_ref is required");
        let e = refused::<DepositRequest>(r#"{"amount_micros": 5, "external_ref": "B", "x": 1}"#);
        assert_eq!(e.code, ErrorCode::UnknownField);
        assert_eq!(e.field.as_deref(), Some("x"));
        let e = refused::<suanli_api::WithdrawalRequest>(
            r#"{"amount_micros": 5, "external_ref": "B", "source": "vault"}"#,
        );
        assert_eq!(e.field.as_deref(), Some("source"));
        assert_eq!(
            e.message,
            "source must be one of available, earnings; \"vault\" is not"
        );
        for body in ["", "  ", "{", "{\"amount_micros\": 5,}", "\u{FEFF}{}"] {
            let e = refused::<DepositRequest>(body);
            assert_eq!(e.code, ErrorCode::InvalidJson, "{body:?}");
            for rust in ["struct", "expected value", "EOF", "u64", "floating point"] {
                assert!(!e.message.contains(rust), "{body:?}: {}", e.message);
            }
        }
        let e =
            refused::<DepositRequest>("\u{FEFF}{\"amount_micros\": 5, \"external_ref\": \"B\"}");
        assert!(e.message.contains("byte-order mark"), "{}", e.message);
    }

    #[test]
    fn nul_is_refused_in_any_string() {
        let e = refused::<PurchaseRequest>(
            r#"{"offer_id": "offer_1\u0000", "units": 1, "duration_limit_s": 60}"#,
        );
        assert_eq!(e.code, ErrorCode::InvalidField);
        assert_eq!(e.field.as_deref(), Some("offer_id"));
        assert_eq!(
            e.message,
            "offer_id must not contain the NUL character (U+0000)"
        );
    }

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
