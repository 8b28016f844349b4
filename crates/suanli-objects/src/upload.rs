//! Storing one part of a file: streamed through bounded buffers, hashed on the way, all or
//! nothing.

use std::io;
use std::pin::pin;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStore, PutPayload, PutPayloadMut};
use tokio::task::JoinSet;

use crate::{FileKey, HashState, Objects, ObjectsError};

/// The size of each request a long part is sent in (S3's smallest multipart part). A part no
/// longer than this is one plain `put`; a longer one a multipart upload of such chunks.
pub const CHUNK: usize = 5 * 1024 * 1024;

/// Chunks of one part being sent at once. With the one being filled, a part holds at most
/// `(IN_FLIGHT + 1) * CHUNK` bytes of memory (15 MiB), whatever its length.
pub const IN_FLIGHT: usize = 2;

/// What storing a part left: its number, its length, and the hash state after it, which the
/// caller keeps (as [`HashState::encode`]) and passes in with the next part.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StoredPart {
    /// The part's number, from 1.
    pub part: u32,
    /// The part's length in bytes.
    pub len: u64,
    /// The hash state of the file after this part.
    pub state: HashState,
}

/// A multipart upload in progress. Dropped unfinished (the request's future was dropped), it
/// aborts the upload in the background; every error path of [`put_part`] aborts it first
/// and waits, so that an `Err` leaves nothing behind.
struct Multipart {
    upload: Option<Box<dyn MultipartUpload>>,
    tasks: JoinSet<object_store::Result<()>>,
}

impl Multipart {
    async fn start(store: &dyn ObjectStore, path: &Path) -> Result<Self, ObjectsError> {
        Ok(Self {
            upload: Some(store.put_multipart(path).await?),
            tasks: JoinSet::new(),
        })
    }

    /// Sends a chunk once fewer than [`IN_FLIGHT`] are on their way.
    async fn send(&mut self, chunk: PutPayload) -> Result<(), ObjectsError> {
        self.wait(IN_FLIGHT - 1).await?;
        if let Some(upload) = &mut self.upload {
            self.tasks.spawn(upload.put_part(chunk));
        }
        Ok(())
    }

    /// Waits until at most `max` chunks are on their way; the first failure is returned.
    async fn wait(&mut self, max: usize) -> Result<(), ObjectsError> {
        while self.tasks.len() > max {
            match self.tasks.join_next().await {
                Some(joined) => joined.map_err(io::Error::from)??,
                None => break,
            }
        }
        Ok(())
    }

    async fn complete(&mut self) -> Result<(), ObjectsError> {
        self.wait(0).await?;
        if let Some(upload) = &mut self.upload {
            upload.complete().await?;
        }
        self.upload = None;
        Ok(())
    }

    async fn abort(mut self) {
        self.tasks.shutdown().await;
        if let Some(mut upload) = self.upload.take() {
            // The part's error is what the caller hears; an abort that fails leaves an
            // incomplete multipart upload, invisible as an object, for the bucket's lifecycle
            // rule (AbortIncompleteMultipartUpload) to clear.
            let _ = upload.abort().await;
        }
    }
}

impl Drop for Multipart {
    fn drop(&mut self) {
        if let Some(mut upload) = self.upload.take() {
            self.tasks.abort_all();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = upload.abort().await;
                });
            }
        }
    }
}

/// See [`Objects::put_part`].
pub(crate) async fn put_part<S, E>(
    objects: &Objects,
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
    if part == 0 {
        return Err(ObjectsError::InvalidPartNumber);
    }
    if !before.is_block_aligned() {
        return Err(ObjectsError::UnalignedPart { len: before.len() });
    }
    let path = file.part_path(part);
    let store = objects.store.as_ref();
    let mut body = pin!(body);
    let mut state = before.clone();
    let mut len = 0u64;
    let mut buffer = PutPayloadMut::new();
    let mut multipart: Option<Multipart> = None;
    let sent = async {
        while let Some(item) = body.next().await {
            let mut bytes = item.map_err(|e| ObjectsError::Body(e.into()))?;
            len = u64::try_from(bytes.len())
                .ok()
                .and_then(|n| len.checked_add(n))
                .filter(|&n| n <= limit)
                .ok_or(ObjectsError::PartTooLarge { limit })?;
            state.update(&bytes)?;
            while !bytes.is_empty() {
                let room = CHUNK - buffer.content_length();
                if bytes.len() < room {
                    buffer.push(bytes);
                    break;
                }
                buffer.push(bytes.split_to(room));
                let chunk = std::mem::take(&mut buffer).freeze();
                let upload = match &mut multipart {
                    Some(upload) => upload,
                    None => multipart.insert(Multipart::start(store, &path).await?),
                };
                upload.send(chunk).await?;
            }
        }
        let rest = std::mem::take(&mut buffer).freeze();
        match &mut multipart {
            None => {
                store.put(&path, rest).await?;
            }
            Some(upload) => {
                if rest.content_length() > 0 {
                    upload.send(rest).await?;
                }
                upload.complete().await?;
            }
        }
        Ok::<(), ObjectsError>(())
    }
    .await;
    if let Err(e) = sent {
        if let Some(upload) = multipart {
            upload.abort().await;
        }
        return Err(e);
    }
    objects.sync_local(&path).await?;
    Ok(StoredPart { part, len, state })
}
