//! Reading a byte range of a file: the range mapped onto its parts, each piece a ranged get,
//! streamed in order at the pace of whoever consumes it.

use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryStreamExt};
use object_store::{GetOptions, GetRange, GetResultPayload, ObjectStore};

use crate::{map_range, FileKey, ObjectsError};

/// The bytes of a read, in order; an error ends it.
pub type ByteStream = BoxStream<'static, Result<Bytes, ObjectsError>>;

/// The most bytes one ranged get asks for. A part's piece longer than this is read with
/// several, one after the other, so that no single request has to outlast a slow reader.
pub const WINDOW: u64 = 16 * 1024 * 1024;

/// The size of each read from a local file (object_store's own is 8 KiB, a thread hop each).
const FILE_CHUNK: u64 = 256 * 1024;

/// One ranged get: bytes `range` of part `part`.
type Window = (u32, Range<u64>);

/// See [`crate::Objects::read_range`].
pub(crate) async fn read_range(
    store: Arc<dyn ObjectStore>,
    file: &FileKey,
    parts: &[u64],
    range: Range<u64>,
) -> Result<ByteStream, ObjectsError> {
    let mut windows = Vec::new();
    for segment in map_range(parts, range)? {
        let mut start = segment.range.start;
        while start < segment.range.end {
            let end = segment.range.end.min(start.saturating_add(WINDOW));
            windows.push((segment.part, start..end));
            start = end;
        }
    }
    let mut windows = windows.into_iter();
    let Some(first) = windows.next() else {
        return Ok(stream::empty().boxed());
    };
    // The first get is made now, so that a missing part or a store that does not answer is an
    // error before the caller has sent anything; the others when the reader reaches them.
    let first = open(Arc::clone(&store), file.clone(), first).await?;
    let file = file.clone();
    let rest = stream::iter(windows)
        .then(move |window| open(Arc::clone(&store), file.clone(), window))
        .try_flatten();
    Ok(first.chain(rest).boxed())
}

/// Starts one ranged get; its stream yields exactly the window's bytes or ends in an error.
async fn open(
    store: Arc<dyn ObjectStore>,
    file: FileKey,
    (part, range): Window,
) -> Result<ByteStream, ObjectsError> {
    let path = file.part_path(part);
    let expected = range.end - range.start;
    let wrong_length = |file: &FileKey| ObjectsError::PartLength {
        file: file.as_str().to_owned(),
        part,
    };
    let options = GetOptions {
        range: Some(GetRange::Bounded(range.clone())),
        ..GetOptions::default()
    };
    let got = match store.get_opts(&path, options).await {
        Ok(got) => got,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(ObjectsError::MissingPart {
                file: file.as_str().to_owned(),
                part,
            })
        }
        Err(e) => {
            // A range past the part's end is the part being shorter than the caller said.
            return match store.head(&path).await {
                Ok(meta) if meta.size < range.end => Err(wrong_length(&file)),
                _ => Err(e.into()),
            };
        }
    };
    if got.range != range {
        return Err(wrong_length(&file));
    }
    let bytes: ByteStream = match got.payload {
        GetResultPayload::File(handle, _) => file_chunks(handle, range.clone()),
        GetResultPayload::Stream(s) => s.map_err(ObjectsError::from).boxed(),
    };
    Ok(exactly(bytes, expected, wrong_length(&file)))
}

/// Reads `range` of a local file in [`FILE_CHUNK`]s, each on the blocking pool.
fn file_chunks(file: std::fs::File, range: Range<u64>) -> ByteStream {
    let first = (file, range.start, false);
    stream::try_unfold(first, move |(mut file, at, sought)| async move {
        if at >= range.end {
            return Ok(None);
        }
        let want = (range.end - at).min(FILE_CHUNK);
        let read = tokio::task::spawn_blocking(move || {
            if !sought {
                file.seek(SeekFrom::Start(at))?;
            }
            let mut buf = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
            (&mut file).take(want).read_to_end(&mut buf)?;
            Ok::<_, io::Error>((file, buf))
        });
        let (file, buf) = read.await.map_err(io::Error::from)??;
        if buf.is_empty() {
            return Ok(None); // shorter than asked: `exactly` says so
        }
        let next = at + buf.len() as u64;
        Ok(Some((Bytes::from(buf), (file, next, true))))
    })
    .boxed()
}

/// Passes `inner` on, and ends it with `short` when it ends before or runs past `expected`
/// bytes.
fn exactly(inner: ByteStream, expected: u64, short: ObjectsError) -> ByteStream {
    let start = (inner, 0u64, Some(short));
    stream::unfold(start, move |(mut inner, seen, short)| async move {
        let short_now = short?; // `None`: an error was already yielded; the stream is over
        match inner.next().await {
            Some(Ok(bytes)) => {
                let seen = seen + bytes.len() as u64;
                if seen > expected {
                    return Some((Err(short_now), (inner, seen, None)));
                }
                Some((Ok(bytes), (inner, seen, Some(short_now))))
            }
            Some(Err(e)) => Some((Err(e), (inner, seen, None))),
            None if seen == expected => None,
            None => Some((Err(short_now), (inner, seen, None))),
        }
    })
    .boxed()
}
