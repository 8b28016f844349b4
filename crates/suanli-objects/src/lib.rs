//! The bytes of Suanli's data products (datasets and AI models) in an object store, through the
//! `object_store` crate: a directory of the local filesystem by default, or any S3-compatible
//! bucket ([`StoreConfig`]).
//!
//! A file is uploaded as consecutive **parts**, one request each, every part but the last a
//! multiple of 64 bytes long. Each part is its own object, `files/<file key>/<part number, ten
//! digits>`, so an upload cut off resumes from its last complete part. While a part streams in
//! it is hashed; the SHA-256 state after it ([`HashState`], a short string) goes back to the
//! caller, who stores it and passes it in with the next part, so the file's digest comes out of
//! one pass over its bytes across requests and restarts ([`verify_file`]).
//!
//! Nothing holds a file in memory: a part streams through bounded buffers
//! (`(IN_FLIGHT + 1) * CHUNK` bytes at most; a long part is a multipart upload of [`CHUNK`]s),
//! and reads stream ranged gets of at most [`WINDOW`] bytes each at the reader's pace.

mod config;
mod error;
mod hash;
mod layout;
mod read;
mod upload;

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore};

pub use config::{S3Config, StoreConfig};
pub use error::ObjectsError;
pub use hash::{verify_file, FileDigest, HashState, MAX_HASHED_LEN};
pub use layout::{map_range, FileKey, Segment, MAX_KEY_LEN};
pub use read::{ByteStream, WINDOW};
pub use upload::{StoredPart, CHUNK, IN_FLIGHT};

/// How long one request to an S3-compatible store may take, from connecting to the end of its
/// body. Bodies are at most [`CHUNK`] (uploads) or [`WINDOW`] (reads) bytes, so this bounds a
/// hung store without cutting a slow reader (who would need under 16 MiB in five minutes).
const S3_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// An object store holding files made of parts. Cheap to clone (the store is shared); every
/// method may be called concurrently, and the caller's database says which parts are complete.
/// Its methods run on a Tokio runtime (uploads and local reads use its tasks and blocking pool).
#[derive(Clone, Debug)]
pub struct Objects {
    store: Arc<dyn ObjectStore>,
    /// Set for the local backend, whose writes this crate makes durable itself.
    local: Option<Arc<LocalFileSystem>>,
}

impl Objects {
    /// Opens the configured store. The local backend's directory is made when missing; an S3
    /// bucket must exist (nothing is sent until the first request).
    pub fn open(config: &StoreConfig) -> Result<Self, ObjectsError> {
        match config {
            StoreConfig::Local { root } => {
                std::fs::create_dir_all(root)?;
                let local = Arc::new(LocalFileSystem::new_with_prefix(root)?);
                Ok(Self {
                    store: local.clone(),
                    local: Some(local),
                })
            }
            StoreConfig::S3(s3) => {
                let options = ClientOptions::new()
                    .with_allow_http(s3.allow_http)
                    .with_timeout(S3_REQUEST_TIMEOUT);
                let mut builder = AmazonS3Builder::new()
                    .with_bucket_name(&s3.bucket)
                    .with_region(&s3.region)
                    .with_access_key_id(&s3.access_key_id)
                    .with_secret_access_key(&s3.secret_access_key)
                    .with_client_options(options);
                if let Some(endpoint) = &s3.endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                if let Some(token) = &s3.session_token {
                    builder = builder.with_token(token);
                }
                Ok(Self::with_store(Arc::new(builder.build()?)))
            }
        }
    }

    /// Any `object_store` store (an in-memory one for tests, say). Writes are as durable as the
    /// store makes them.
    pub fn with_store(store: Arc<dyn ObjectStore>) -> Self {
        Self { store, local: None }
    }

    /// Stores part `part` (from 1) of `file` from `body`, hashing it after `before` (the state
    /// the previous part returned; [`HashState::new`] for part 1), and returns the part's
    /// length and the state after it.
    ///
    /// - **All or nothing.** `Ok` means the part is stored whole and durable (on the local
    ///   backend, the file and its directories are synced). On any `Err` (the body failed or
    ///   was cut: [`ObjectsError::Body`]; it passed `limit` bytes:
    ///   [`ObjectsError::PartTooLarge`]; the store failed) nothing of the part is left: a
    ///   multipart upload is aborted before returning, and a plain `put` is atomic. If the
    ///   future is dropped midway, the multipart upload is aborted in the background.
    /// - **Resumable.** A part stored again replaces the old one atomically, so after an error
    ///   the caller sends the same part again with the same `before`.
    /// - **Bounded memory**, whatever the part's length; the body is read once.
    /// - Refused before reading anything: part 0 ([`ObjectsError::InvalidPartNumber`]) and a
    ///   `before` that is not a multiple of 64 bytes ([`ObjectsError::UnalignedPart`]: only a
    ///   file's last part may be shorter, so nothing may follow it).
    pub async fn put_part<S, E>(
        &self,
        file: &FileKey,
        part: u32,
        before: &HashState,
        limit: u64,
        body: S,
    ) -> Result<StoredPart, ObjectsError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        upload::put_part(self, file, part, before, limit, body).await
    }

    /// Streams bytes `range` of `file`, whose parts 1, 2, … have lengths `parts` (as the
    /// caller recorded them, or from [`Objects::list_parts`]). The range is mapped onto the
    /// parts with [`map_range`] and each piece read with ranged gets, in order.
    ///
    /// Errors known before the first byte are returned here: a range outside the file
    /// ([`ObjectsError::InvalidRange`]), a missing first part ([`ObjectsError::MissingPart`]).
    /// Later ones end the stream, which then yields nothing more: a missing part, a part
    /// shorter than given ([`ObjectsError::PartLength`]), the store failing. The stream
    /// yields exactly `range.end - range.start` bytes when it ends without an error.
    pub async fn read_range(
        &self,
        file: &FileKey,
        parts: &[u64],
        range: Range<u64>,
    ) -> Result<ByteStream, ObjectsError> {
        read::read_range(Arc::clone(&self.store), file, parts, range).await
    }

    /// Streams the whole of `file`, whose parts have lengths `parts`; as
    /// [`Objects::read_range`] over all of it.
    pub async fn read(&self, file: &FileKey, parts: &[u64]) -> Result<ByteStream, ObjectsError> {
        let len = parts
            .iter()
            .try_fold(0u64, |sum, &len| sum.checked_add(len))
            .unwrap_or(u64::MAX);
        self.read_range(file, parts, 0..len).await
    }

    /// The lengths of the stored parts of `file`, part 1 first; empty when none is stored.
    /// [`ObjectsError::MissingPart`] when the stored numbers have a gap (a part 3 without a
    /// part 2), and [`ObjectsError::Corrupt`] for an object under the file's prefix that is not
    /// a part. Parts being uploaded at the same moment may or may not be listed.
    pub async fn list_parts(&self, file: &FileKey) -> Result<Vec<u64>, ObjectsError> {
        let prefix = file.prefix();
        let mut found = Vec::new();
        let mut listing = self.store.list(Some(&prefix));
        while let Some(meta) = listing.next().await {
            let meta = meta?;
            let number = meta
                .location
                .prefix_match(&prefix)
                .map(|rest| rest.collect::<Vec<_>>())
                .and_then(|rest| match rest.as_slice() {
                    [name] => layout::part_number(name.as_ref()),
                    _ => None,
                })
                .ok_or_else(|| ObjectsError::Corrupt(meta.location.to_string()))?;
            found.push((number, meta.size));
        }
        found.sort_unstable();
        let mut lengths = Vec::with_capacity(found.len());
        for (expected, (number, size)) in (1u32..).zip(found) {
            if number != expected {
                return Err(ObjectsError::MissingPart {
                    file: file.as_str().to_owned(),
                    part: expected,
                });
            }
            lengths.push(size);
        }
        Ok(lengths)
    }

    /// Whether any part of `file` is stored.
    pub async fn exists(&self, file: &FileKey) -> Result<bool, ObjectsError> {
        let prefix = file.prefix();
        let mut listing = self.store.list(Some(&prefix));
        match listing.next().await {
            Some(meta) => meta.map(|_| true).map_err(Into::into),
            None => Ok(false),
        }
    }

    /// Deletes every part of `file` (an abandoned draft, a deleted version) and returns how
    /// many there were; deleting a file with no parts is `Ok(0)`. On the local backend the
    /// file's directory goes too, with whatever an upload killed mid-part left in it. Parts
    /// being uploaded at the same moment may survive: stop uploads first.
    pub async fn delete(&self, file: &FileKey) -> Result<usize, ObjectsError> {
        let prefix = file.prefix();
        let locations = self
            .store
            .list(Some(&prefix))
            .map_ok(|meta| meta.location)
            .boxed();
        let deleted: Vec<Path> = self.store.delete_stream(locations).try_collect().await?;
        if let Some(local) = &self.local {
            let dir = local.path_to_filesystem(&prefix)?;
            let removed = tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(dir) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            });
            removed.await.map_err(std::io::Error::from)??;
        }
        Ok(deleted.len())
    }

    /// On the local backend, makes the object at `path` durable: the file, its directory and
    /// the one above (a new file's directory is new too). Elsewhere nothing to do.
    async fn sync_local(&self, path: &Path) -> Result<(), ObjectsError> {
        let Some(local) = &self.local else {
            return Ok(());
        };
        let file = local.path_to_filesystem(path)?;
        let synced = tokio::task::spawn_blocking(move || {
            std::fs::File::open(&file)?.sync_all()?;
            for dir in file.ancestors().skip(1).take(2) {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok::<(), std::io::Error>(())
        });
        synced.await.map_err(std::io::Error::from)??;
        Ok(())
    }
}
