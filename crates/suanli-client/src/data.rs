//! Data products: listings of datasets and AI models, their versions and files, requests for
//! access, entitlements, and the operator's admission of data providers.
//!
//! Files move as bytes, never as JSON: [`Client::upload_part`] streams one part of a file (from
//! any stream of bytes, or a reader through [`read_exactly`]) with its `Content-Length` at the
//! offset the exchange has received so far, and [`Client::download`] answers a [`Download`] whose
//! body is read a chunk at a time or as a stream, from a byte offset (`Range`) on. A listing's
//! name, a version's label and a file's path go into URLs percent-encoded, a path one segment at
//! a time (a `.`, `..` or empty segment is refused before anything is sent).

use bytes::Bytes;
use futures::{Stream, TryStream};
use reqwest::header;
use serde::Serialize;
use suanli_api::{
    AccessOutcomeBody, AccessRequestBody, AddFileRequest, CreateListingRequest,
    CreateVersionRequest, DataFile, DataProviderRequest, EntitlementBody, ErrorBody, List, Listing,
    OrgId, RequestAccessRequest, UploadProgress, Version,
};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::{describe, path_segment, Client, ClientError, IdRef, Method};

/// `GET /data/listings`'s query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ListingQuery {
    /// `dataset` or `model`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The last name of the previous page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// `GET /data/requests`'s query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AccessRequestQuery {
    /// `pending`, `approved`, `denied`, `withdrawn` or `expired`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// `GET /data/entitlements`'s query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EntitlementQuery {
    /// One listing's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listing: Option<String>,
}

/// An answer to a request for access: the owner approves or denies it, the buyer withdraws it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestAnswer {
    Approve,
    Deny,
    Withdraw,
}

impl RequestAnswer {
    /// The route's last segment.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestAnswer::Approve => "approve",
            RequestAnswer::Deny => "deny",
            RequestAnswer::Withdraw => "withdraw",
        }
    }
}

/// `/data/listings/{name}/versions/{version}`, both percent-encoded.
fn version_path(listing: &str, version: &str) -> Result<String, ClientError> {
    Ok(format!(
        "/data/listings/{}/versions/{}",
        path_segment(listing)?,
        path_segment(version)?
    ))
}

/// `…/files/{path}`: a file's path, each of its `/`-separated segments percent-encoded.
fn file_url_path(listing: &str, version: &str, file: &str) -> Result<String, ClientError> {
    let segments = file
        .split('/')
        .map(path_segment)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(format!(
        "{}/files/{}",
        version_path(listing, version)?,
        segments.join("/")
    ))
}

/// The error of a non-2xx answer: its [`ErrorBody`], or the text when it is not one.
fn error_of(status: u16, bytes: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(body) => ClientError::Api { status, body },
        Err(_) => ClientError::Decode(format!("HTTP {status}: {}", String::from_utf8_lossy(bytes))),
    }
}

/// Exactly `length` bytes of `reader`, as a stream of chunks of up to 256 KiB for
/// [`Client::upload_part`]; a reader that ends sooner makes the stream fail
/// (`UnexpectedEof`) rather than send a short part.
pub fn read_exactly<R>(reader: R, length: u64) -> impl Stream<Item = std::io::Result<Bytes>>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    const CHUNK: u64 = 256 * 1024;
    futures::stream::try_unfold((reader, length), |(mut reader, left)| async move {
        if left == 0 {
            return Ok(None);
        }
        let want = usize::try_from(left.min(CHUNK)).unwrap_or(CHUNK as usize);
        let mut buf = vec![0u8; want];
        let mut filled = 0;
        while filled < want {
            let n = reader.read(&mut buf[filled..]).await?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("the source ended {left} bytes before the part's end"),
                ));
            }
            filled += n;
        }
        Ok(Some((Bytes::from(buf), (reader, left - want as u64))))
    })
}

/// A file's bytes as the exchange answers them: the whole file (200) or a range of it (206).
#[derive(Debug)]
pub struct Download {
    /// 200 (the whole file) or 206 (a range).
    pub status: u16,
    /// Where in the file the body starts: the range's start for a 206, 0 for a 200.
    pub start: u64,
    /// The body's length (`Content-Length`), when the answer says it.
    pub length: Option<u64>,
    /// The whole file's size: from `Content-Range` for a 206, the body's length for a 200.
    pub size: Option<u64>,
    /// The file's SHA-256 (its `ETag`, unquoted).
    pub sha256: Option<String>,
    response: reqwest::Response,
}

impl Download {
    /// The body's next chunk; `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, ClientError> {
        self.response
            .chunk()
            .await
            .map_err(|e| ClientError::Transport(describe(&e)))
    }

    /// The body as a stream of chunks.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, ClientError>> {
        futures::stream::try_unfold(self, |mut d| async move {
            Ok(d.chunk().await?.map(|bytes| (bytes, d)))
        })
    }
}

/// `bytes A-B/SIZE` of a `Content-Range`: (A, SIZE).
fn content_range(value: &str) -> Option<(u64, u64)> {
    let (range, size) = value.strip_prefix("bytes ")?.split_once('/')?;
    let (start, _) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, size.trim().parse().ok()?))
}

impl Client {
    /// `POST /orgs/{id}/data-provider` (operator): admits an org as a data provider
    /// (`admitted: true`) or stops admitting it.
    pub async fn set_data_provider(
        &self,
        org_id: &(impl IdRef<OrgId> + ?Sized),
        admitted: bool,
        idempotency_key: Option<&str>,
    ) -> Result<DataProviderRequest, ClientError> {
        let path = format!("/orgs/{}/data-provider", path_segment(org_id.id_str())?);
        self.post(&path, &DataProviderRequest { admitted }, idempotency_key)
            .await
    }

    /// `POST /data/listings`: lists a dataset or a model (others see it once a version is
    /// published).
    pub async fn create_listing(
        &self,
        request: &CreateListingRequest,
        idempotency_key: Option<&str>,
    ) -> Result<Listing, ClientError> {
        self.post("/data/listings", request, idempotency_key).await
    }

    /// `GET /data/listings`: the caller's listings and every other with a published version, by
    /// name.
    pub async fn list_listings(&self, query: &ListingQuery) -> Result<List<Listing>, ClientError> {
        self.get_query("/data/listings", query).await
    }

    /// `GET /data/listings/{name}`, with its card and licence.
    pub async fn get_listing(&self, name: &str) -> Result<Listing, ClientError> {
        self.get(&format!("/data/listings/{}", path_segment(name)?))
            .await
    }

    /// `POST /data/listings/{name}/versions`: a draft version, its owner's alone until published.
    pub async fn create_version(
        &self,
        listing: &str,
        version: &str,
        idempotency_key: Option<&str>,
    ) -> Result<Version, ClientError> {
        let path = format!("/data/listings/{}/versions", path_segment(listing)?);
        let request = CreateVersionRequest {
            version: version.to_owned(),
        };
        self.post(&path, &request, idempotency_key).await
    }

    /// `GET /data/listings/{name}/versions`: published and deprecated ones, and the owner's
    /// drafts.
    pub async fn list_versions(&self, listing: &str) -> Result<List<Version>, ClientError> {
        self.get(&format!(
            "/data/listings/{}/versions",
            path_segment(listing)?
        ))
        .await
    }

    /// `POST …/versions/{version}/publish`: once every file is uploaded and verified.
    pub async fn publish_version(
        &self,
        listing: &str,
        version: &str,
        idempotency_key: Option<&str>,
    ) -> Result<Version, ClientError> {
        let path = format!("{}/publish", version_path(listing, version)?);
        self.post_empty(&path, idempotency_key).await
    }

    /// `POST …/versions/{version}/deprecate`: those entitled to it keep using it.
    pub async fn deprecate_version(
        &self,
        listing: &str,
        version: &str,
        idempotency_key: Option<&str>,
    ) -> Result<Version, ClientError> {
        let path = format!("{}/deprecate", version_path(listing, version)?);
        self.post_empty(&path, idempotency_key).await
    }

    /// `POST …/versions/{version}/files`: declares a file of a draft with its size and SHA-256;
    /// its bytes follow with [`Client::upload_part`].
    pub async fn add_file(
        &self,
        listing: &str,
        version: &str,
        request: &AddFileRequest,
        idempotency_key: Option<&str>,
    ) -> Result<DataFile, ClientError> {
        let path = format!("{}/files", version_path(listing, version)?);
        self.post(&path, request, idempotency_key).await
    }

    /// `GET …/versions/{version}/files`: the files with their sizes, digests and how much of
    /// each was received.
    pub async fn list_files(
        &self,
        listing: &str,
        version: &str,
    ) -> Result<List<DataFile>, ClientError> {
        self.get(&format!("{}/files", version_path(listing, version)?))
            .await
    }

    /// `PUT …/files/{path}?offset=N`: one part of a declared file's bytes, streamed from `body`
    /// with `length` as its `Content-Length`. `offset` is what the exchange has received of the
    /// file so far ([`DataFile::received_bytes`]); every part but the last is a multiple of 64
    /// bytes. A part at another offset is refused (400, field `offset`) and changes nothing: ask
    /// [`Client::list_files`] where to resume. The answer says whether the file is now complete
    /// and verified.
    #[allow(clippy::too_many_arguments)]
    pub async fn upload_part<S>(
        &self,
        listing: &str,
        version: &str,
        file: &str,
        offset: u64,
        length: u64,
        body: S,
        idempotency_key: Option<&str>,
    ) -> Result<UploadProgress, ClientError>
    where
        S: TryStream + Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        Bytes: From<S::Ok>,
    {
        let path = file_url_path(listing, version, file)?;
        let builder = self
            .request::<()>(Method::PUT, &path, None, idempotency_key)
            .query(&[("offset", offset)])
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_LENGTH, length)
            .body(reqwest::Body::wrap_stream(body));
        self.execute(builder).await
    }

    /// [`Client::upload_part`] of bytes in memory.
    pub async fn upload_part_bytes(
        &self,
        listing: &str,
        version: &str,
        file: &str,
        offset: u64,
        bytes: impl Into<Bytes>,
        idempotency_key: Option<&str>,
    ) -> Result<UploadProgress, ClientError> {
        let bytes: Bytes = bytes.into();
        let length = bytes.len() as u64;
        let body = futures::stream::iter([Ok::<Bytes, std::io::Error>(bytes)]);
        self.upload_part(
            listing,
            version,
            file,
            offset,
            length,
            body,
            idempotency_key,
        )
        .await
    }

    /// `DELETE …/files/{path}`: discards what was received of a draft's file, to upload it again
    /// from offset 0.
    pub async fn restart_upload(
        &self,
        listing: &str,
        version: &str,
        file: &str,
        idempotency_key: Option<&str>,
    ) -> Result<DataFile, ClientError> {
        let path = file_url_path(listing, version, file)?;
        self.execute(self.request::<()>(Method::DELETE, &path, None, idempotency_key))
            .await
    }

    /// `GET …/files/{path}`: a file's bytes from byte `start` on (a `Range` when `start > 0` or
    /// `end` is given; `end` exclusive). To its owner and to orgs entitled to the version now:
    /// the exchange checks on every request. The body streams ([`Download::chunk`],
    /// [`Download::into_stream`]); [`Download::start`] says where it begins in the file.
    pub async fn download(
        &self,
        listing: &str,
        version: &str,
        file: &str,
        start: u64,
        end: Option<u64>,
    ) -> Result<Download, ClientError> {
        let path = file_url_path(listing, version, file)?;
        let mut builder = self.request::<()>(Method::GET, &path, None, None);
        match end {
            Some(end) if end <= start => {
                return Err(ClientError::Transport(format!(
                    "request not sent: the range {start}..{end} is empty"
                )))
            }
            Some(end) => {
                builder = builder.header(header::RANGE, format!("bytes={start}-{}", end - 1));
            }
            None if start > 0 => builder = builder.header(header::RANGE, format!("bytes={start}-")),
            None => {}
        }
        let response = builder
            .send()
            .await
            .map_err(|e| ClientError::Transport(describe(&e)))?;
        let status = response.status().as_u16();
        if !response.status().is_success() {
            let bytes = response
                .bytes()
                .await
                .map_err(|e| ClientError::Transport(describe(&e)))?;
            return Err(error_of(status, &bytes));
        }
        let headers = response.headers();
        let text = |name: header::HeaderName| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let length = text(header::CONTENT_LENGTH).and_then(|v| v.parse().ok());
        let sha256 = text(header::ETAG).map(|v| v.trim_matches('"').to_owned());
        let (start, size) = match status {
            206 => {
                let value = text(header::CONTENT_RANGE).unwrap_or_default();
                let (at, size) = content_range(&value).ok_or_else(|| {
                    ClientError::Decode(format!("HTTP 206 with Content-Range {value:?}"))
                })?;
                if at != start {
                    return Err(ClientError::Decode(format!(
                        "asked for bytes from {start}, the answer starts at {at}"
                    )));
                }
                (at, Some(size))
            }
            _ => (0, length),
        };
        Ok(Download {
            status,
            start,
            length,
            size,
            sha256,
            response,
        })
    }

    /// `POST /data/listings/{name}/access`: asks for access (to a version, when the listing is
    /// sold per version); granted at once with automatic gating, else pending with its price
    /// held until the owner answers.
    pub async fn request_access(
        &self,
        listing: &str,
        request: &RequestAccessRequest,
        idempotency_key: Option<&str>,
    ) -> Result<AccessOutcomeBody, ClientError> {
        let path = format!("/data/listings/{}/access", path_segment(listing)?);
        self.post(&path, request, idempotency_key).await
    }

    /// `GET /data/requests`: the caller's requests and those to its listings, newest first.
    pub async fn list_access_requests(
        &self,
        query: &AccessRequestQuery,
    ) -> Result<List<AccessRequestBody>, ClientError> {
        self.get_query("/data/requests", query).await
    }

    /// `POST /data/requests/{id}/{approve|deny|withdraw}`: answers a pending request, once.
    pub async fn answer_access_request(
        &self,
        request_id: &str,
        answer: RequestAnswer,
        idempotency_key: Option<&str>,
    ) -> Result<AccessOutcomeBody, ClientError> {
        let path = format!(
            "/data/requests/{}/{}",
            path_segment(request_id)?,
            answer.as_str()
        );
        self.post_empty(&path, idempotency_key).await
    }

    /// `GET /data/entitlements`: which versions of which listings the caller may use until when.
    pub async fn list_entitlements(
        &self,
        query: &EntitlementQuery,
    ) -> Result<List<EntitlementBody>, ClientError> {
        self.get_query("/data/entitlements", query).await
    }

    /// `POST /data/entitlements/{id}/revoke`: the holder may use nothing more of the listing,
    /// from its next request on.
    pub async fn revoke_entitlement(
        &self,
        entitlement_id: &str,
        idempotency_key: Option<&str>,
    ) -> Result<EntitlementBody, ClientError> {
        let path = format!(
            "/data/entitlements/{}/revoke",
            path_segment(entitlement_id)?
        );
        self.post_empty(&path, idempotency_key).await
    }
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;

    use super::*;

    #[test]
    fn data_paths_are_encoded_segment_by_segment() {
        assert_eq!(
            file_url_path("traffic-2026", "v1", "data/a b.csv").unwrap(),
            "/data/listings/traffic-2026/versions/v1/files/data/a%20b.csv"
        );
        for bad in ["../etc", "a//b", "a/./b", "a/"] {
            assert!(file_url_path("l", "v", bad).is_err(), "{bad:?}");
        }
        assert!(version_path("l", "..").is_err());
        assert_eq!(content_range("bytes 10-19/100"), Some((10, 100)));
        assert_eq!(content_range("bytes */100"), None);
    }

    #[test]
    fn uploads_carry_offset_length_and_key() {
        let client = Client::new("http://127.0.0.1:8080", Some("sk".into()));
        let path = file_url_path("l", "v1", "x.bin").unwrap();
        let request = client
            .request::<()>(Method::PUT, &path, None, Some("k"))
            .query(&[("offset", 128u64)])
            .header(header::CONTENT_LENGTH, 64u64)
            .build()
            .unwrap();
        assert_eq!(
            request.url().as_str(),
            "http://127.0.0.1:8080/api/v1/data/listings/l/versions/v1/files/x.bin?offset=128"
        );
        assert_eq!(request.headers()["content-length"], "64");
        assert_eq!(request.headers()["idempotency-key"], "k");
        let query = ListingQuery {
            kind: Some("model".into()),
            ..ListingQuery::default()
        };
        let request = client
            .request::<()>(Method::GET, "/data/listings", None, None)
            .query(&query)
            .build()
            .unwrap();
        assert_eq!(
            request.url().as_str(),
            "http://127.0.0.1:8080/api/v1/data/listings?kind=model"
        );
    }

    #[tokio::test]
    async fn read_exactly_takes_the_length_and_fails_when_the_source_is_short() {
        let source: &[u8] = &[7u8; 600_000];
        let chunks: Vec<Bytes> = read_exactly(source, 300_000).try_collect().await.unwrap();
        assert_eq!(chunks.iter().map(Bytes::len).sum::<usize>(), 300_000);
        assert_eq!(chunks[0].len(), 256 * 1024);
        let short: &[u8] = &[1u8; 10];
        let err = read_exactly(short, 11)
            .try_collect::<Vec<Bytes>>()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        let none: Vec<Bytes> = read_exactly(short, 0).try_collect().await.unwrap();
        assert!(none.is_empty());
    }
}
