//! A version's files: declared with their size and SHA-256, uploaded as parts that stream into
//! the object store (resumable: a part is sent at the offset the exchange has; hashed once, as
//! it arrives), verified when the last byte is in, and read back in ranges by those entitled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::TryStreamExt;
use serde::Deserialize;
use suanli_api::{AddFileRequest, DataFile, ErrorBody, ErrorCode, List, UploadProgress};
use suanli_objects::{FileKey, HashState, ObjectsError};
use suanli_store::ops::{NewFile, UploadPart};
use utoipa::IntoParams;

use super::{wire, DataPath};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, BodylessHash, IdempotencyKey};
use crate::{now_ms, AppState};

/// The SHA-256 of no bytes.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Declares a file of a draft: its path, size and SHA-256. Its bytes follow (`PUT`).
#[utoipa::path(post, path = "/api/v1/data/listings/{name}/versions/{version}/files", tag = "data", security(("bearer" = [])),
    params(("name" = String, Path), ("version" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "retry key")),
    request_body = AddFileRequest,
    responses((status = 201, body = DataFile), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn add_file(
    State(state): State<AppState>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    p: DataPath,
    body: ApiJson<AddFileRequest>,
) -> Result<Response, ApiError> {
    let req = body.value;
    let file = NewFile {
        path: req.path,
        size: req.size,
        sha256: req.sha256,
    };
    let (org, limits, now) = (caller.org.id.clone(), state.config.data_limits, now_ms());
    state
        .mutate(
            caller.org_id(),
            key,
            body.request_sha256,
            StatusCode::CREATED,
            move |tx| {
                let mut row = tx.add_file(&org, &p.listing, &p.version, &file, &limits, now)?;
                if row.size == 0 {
                    // No byte will follow: an empty file is verified as declared, or refused.
                    row = tx.verify_file(
                        &org,
                        &p.listing,
                        &p.version,
                        &row.path,
                        0,
                        EMPTY_SHA256,
                        now,
                    )?;
                }
                Ok(wire::file(&row))
            },
        )
        .await
}

/// A version's files with their sizes and digests (a draft's only to its owner).
#[utoipa::path(get, path = "/api/v1/data/listings/{name}/versions/{version}/files", tag = "data", security(("bearer" = [])),
    params(("name" = String, Path), ("version" = String, Path)),
    responses((status = 200, body = List<DataFile>), (status = 404, body = ErrorBody)))]
pub async fn list_files(
    State(state): State<AppState>,
    caller: Caller,
    p: DataPath,
) -> Result<Json<List<DataFile>>, ApiError> {
    let org = caller.org.id.clone();
    let rows = state
        .read(move |tx| tx.list_files(&org, &p.listing, &p.version))
        .await?;
    Ok(Json(List {
        items: rows.iter().map(wire::file).collect(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PartParams {
    /// Where this part starts: the bytes the exchange has received of the file so far.
    pub offset: u64,
}

/// One upload at a time per file in this process: two parts sent at once to one offset would
/// both be written to the same part object before the database picks one.
#[derive(Default)]
pub struct UploadLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl UploadLocks {
    fn of(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Forget the locks no upload holds (only the map refers to them).
        map.retain(|_, l| Arc::strong_count(l) > 1);
        map.entry(key.to_owned()).or_default().clone()
    }
}

fn objects_error(e: ObjectsError) -> ApiError {
    match e {
        ObjectsError::PartTooLarge { limit } => ApiError::field(
            ErrorCode::PayloadTooLarge,
            "body",
            format!(
                "the part is longer than its Content-Length or the file's remaining {limit} bytes"
            ),
        ),
        ObjectsError::Body(e) => ApiError::invalid("body", format!("the body was cut off: {e}")),
        other => {
            tracing::error!(error = %other, "object store");
            ApiError::new(
                ErrorCode::Unavailable,
                "the object store failed; send the part again",
            )
        }
    }
}

/// Sends a part of a declared file's bytes, at `offset` (the bytes received so far; a file
/// interrupted resumes there). Every part but the last is a multiple of 64 bytes. The part is
/// hashed as it streams in; when the last byte is in, the file is verified against its declared
/// size and SHA-256: a mismatch keeps nothing and the upload starts over.
#[utoipa::path(put, path = "/api/v1/data/listings/{name}/versions/{version}/files/{path}", tag = "data", security(("bearer" = [])),
    params(("name" = String, Path), ("version" = String, Path), ("path" = String, Path), PartParams,
        ("Idempotency-Key" = Option<String>, Header, description = "retry key")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = UploadProgress), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn upload_part(
    State(state): State<AppState>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    p: DataPath,
    ApiQuery(params): ApiQuery<PartParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let length: u64 = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            ApiError::field(
                ErrorCode::InvalidHeader,
                "content-length",
                "a part is sent with its Content-Length",
            )
        })?;
    let org = caller.org.id.clone();
    // One upload of a file at a time in this process (see `UploadLocks`), then only the owner of
    // a draft sends bytes, where the exchange has them up to: decided before any byte is stored.
    let lock = state
        .upload_locks
        .of(&format!("{}\n{}\n{}", p.listing, p.version, p.file));
    let _guard = lock.lock().await;
    let file = {
        let (org, p) = (
            org.clone(),
            (p.listing.clone(), p.version.clone(), p.file.clone()),
        );
        state
            .read(move |tx| tx.file_to_upload(&org, &p.0, &p.1, &p.2))
            .await?
    };
    suanli_core::decide::data::decide_part(
        file.size,
        file.received_bytes,
        file.verified,
        params.offset,
        length,
    )?;
    let before = match &file.hash_state {
        Some(s) => HashState::parse(s).map_err(objects_error)?,
        None => HashState::new(),
    };
    let object = FileKey::new(file.object_prefix.clone()).map_err(objects_error)?;
    let part_number = u32::try_from(file.parts + 1)
        .map_err(|_| ApiError::invalid("offset", "the file has too many parts"))?;
    let stored = state
        .objects
        .put_part(
            &object,
            part_number,
            &before,
            length,
            body.into_data_stream(),
        )
        .await
        .map_err(objects_error)?;
    if stored.len != length {
        return Err(ApiError::invalid(
            "body",
            format!("{} bytes arrived, Content-Length said {length}", stored.len),
        ));
    }
    let received = params.offset + stored.len;
    // The whole file's digest comes out of the state; nothing stored is read again.
    let digest = (received == file.size).then(|| stored.state.finish());
    let matches = digest
        .as_ref()
        .is_none_or(|d| d.hex() == file.sha256 && d.len == file.size);
    let part = UploadPart {
        expected_received_bytes: params.offset,
        bytes: stored.len,
        hash_state: stored.state.encode(),
    };
    let hash = crate::extract::request_hash_of(&[
        "PUT",
        &p.listing,
        &p.version,
        &p.file,
        &params.offset.to_string(),
        &part.hash_state,
    ]);
    let now = now_ms();
    let (listing, label, path) = (p.listing.clone(), p.version.clone(), p.file.clone());
    let sha = digest.as_ref().map(|d| d.hex());
    let response = state
        .mutate(caller.org_id(), key, hash, StatusCode::OK, move |tx| {
            let mut row = tx.record_upload_part(&org, &listing, &label, &path, &part)?;
            if let (Some(sha), true) = (&sha, matches) {
                row =
                    tx.verify_file(&org, &listing, &label, &path, row.received_bytes, sha, now)?;
            }
            Ok(UploadProgress {
                path: row.path.clone(),
                size: row.size,
                received_bytes: row.received_bytes,
                verified: row.verified,
            })
        })
        .await?;
    if matches {
        return Ok(response);
    }
    // Every byte is in and they are not the declared ones: keep nothing, start over.
    let (listing, label, path, org) = (p.listing, p.version, p.file, caller.org.id.clone());
    let digest = digest.expect("a mismatch is of a whole file");
    state
        .store
        .writer()
        .submit(move |tx| tx.restart_upload(&org, &listing, &label, &path).map(|_| ()))
        .await
        .map_err(ApiError::from)?;
    let _ = state.objects.delete(&object).await;
    Err(ApiError::invalid(
        "sha256",
        format!(
            "the {} bytes received have SHA-256 {}, {} was declared: nothing was kept; upload the \
             file again from offset 0",
            digest.len,
            digest.hex(),
            file.sha256
        ),
    ))
}

/// Discards what was received of a draft's file, to upload it again from offset 0.
#[utoipa::path(delete, path = "/api/v1/data/listings/{name}/versions/{version}/files/{path}", tag = "data", security(("bearer" = [])),
    params(("name" = String, Path), ("version" = String, Path), ("path" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "retry key")),
    responses((status = 200, body = DataFile), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn restart_upload(
    State(state): State<AppState>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    BodylessHash(hash): BodylessHash,
    p: DataPath,
) -> Result<Response, ApiError> {
    let org = caller.org.id.clone();
    let response = {
        let p = (p.listing.clone(), p.version.clone(), p.file.clone());
        state
            .mutate(caller.org_id(), key, hash, StatusCode::OK, move |tx| {
                Ok(wire::file(&tx.restart_upload(&org, &p.0, &p.1, &p.2)?))
            })
            .await?
    };
    let org = caller.org.id.clone();
    if let Ok(file) = state
        .read(move |tx| tx.get_file(&org, &p.listing, &p.version, &p.file))
        .await
    {
        if let Ok(object) = FileKey::new(file.object_prefix) {
            let _ = state.objects.delete(&object).await;
        }
    }
    Ok(response)
}

/// The parsed `Range` header: one range of bytes, `bytes=A-B`, `bytes=A-` or `bytes=-N`.
fn range(headers: &HeaderMap, size: u64) -> Result<Option<std::ops::Range<u64>>, ApiError> {
    let Some(value) = headers.get(header::RANGE) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::field(
            ErrorCode::InvalidHeader,
            "range",
            format!("one range of bytes within the file's {size}: bytes=START-END, bytes=START- or bytes=-LAST"),
        )
    };
    let spec = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("bytes="))
        .ok_or_else(bad)?;
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let number = |s: &str| s.trim().parse::<u64>().map_err(|_| bad());
    let r = match (a.trim().is_empty(), b.trim().is_empty()) {
        (false, false) => number(a)?..number(b)?.saturating_add(1).min(size),
        (false, true) => number(a)?..size,
        (true, false) => size.saturating_sub(number(b)?)..size,
        (true, true) => return Err(bad()),
    };
    if r.start >= r.end || r.start >= size {
        return Err(bad());
    }
    Ok(Some(r))
}

/// A file's bytes (all, or one `Range`), to its owner and to orgs entitled to its version now:
/// checked on every request, so an entitlement revoked or run out mid-download refuses the
/// next range. Streams; `ETag` is the file's SHA-256.
#[utoipa::path(get, path = "/api/v1/data/listings/{name}/versions/{version}/files/{path}", tag = "data", security(("bearer" = [])),
    params(("name" = String, Path), ("version" = String, Path), ("path" = String, Path)),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn download(
    State(state): State<AppState>,
    caller: Caller,
    p: DataPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (org, now) = (caller.org.id.clone(), now_ms());
    let file = state
        .read(move |tx| {
            tx.may_use(&org, &p.listing, &p.version, now)?;
            tx.get_file(&org, &p.listing, &p.version, &p.file)
        })
        .await?;
    if !file.verified {
        return Err(ApiError::not_found("file"));
    }
    let object = FileKey::new(file.object_prefix.clone()).map_err(objects_error)?;
    let parts = state
        .objects
        .list_parts(&object)
        .await
        .map_err(objects_error)?;
    if parts.iter().sum::<u64>() != file.size {
        tracing::error!(file = %file.object_prefix, "the stored parts do not add up to the file");
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            "the file's bytes are not all in the object store",
        ));
    }
    let wanted = range(&headers, file.size)?;
    let r = wanted.clone().unwrap_or(0..file.size);
    let stream = state
        .objects
        .read_range(&object, &parts, r.clone())
        .await
        .map_err(objects_error)?
        .map_err(std::io::Error::other);
    let mut response = Body::from_stream(stream).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(r.end - r.start));
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", file.sha256)) {
        h.insert(header::ETAG, etag);
    }
    if wanted.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        if let Ok(v) =
            HeaderValue::from_str(&format!("bytes {}-{}/{}", r.start, r.end - 1, file.size))
        {
            response.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(response)
}
