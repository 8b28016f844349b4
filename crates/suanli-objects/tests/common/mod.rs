//! Scenarios every backend must pass, and the helpers they share. Each scenario takes the store
//! and a way to see what an upload left behind that is not a part (staging files on the local
//! backend, incomplete multipart uploads on S3), which must always be nothing.

#![allow(dead_code)] // each test binary uses its own subset

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use suanli_objects::{verify_file, FileKey, HashState, Objects, ObjectsError, StoredPart, CHUNK};

pub const MIB: usize = 1024 * 1024;

/// Lists what an upload left under a file's prefix besides its parts.
pub type Leftovers<'a> = &'a (dyn Fn(FileKey) -> BoxFuture<'static, Vec<String>> + Sync);

/// A key unique to this process and call, so that scenarios can share a bucket.
pub fn key(name: &str) -> FileKey {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    FileKey::new(format!("{name}-{}-{n}", std::process::id())).unwrap()
}

/// A directory of its own under the system's temporary directory, empty, removed when dropped.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(key(&format!("suanli-objects-{name}")).as_str());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Deterministic bytes that do not repeat with any short period.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// `bytes` as a request body arriving in chunks of uneven sizes (1 byte to about 100 KiB).
pub fn body(bytes: &[u8]) -> BoxStream<'static, Result<Bytes, io::Error>> {
    let all = Bytes::copy_from_slice(bytes);
    let mut chunks = Vec::new();
    let (mut at, mut i) = (0, 0usize);
    while at < all.len() {
        let size = [1, 64 * 1024, 100_003, 4096, 63][i % 5].min(all.len() - at);
        chunks.push(Ok(all.slice(at..at + size)));
        at += size;
        i += 1;
    }
    stream::iter(chunks).boxed()
}

/// `bytes`, then the connection breaks.
pub fn broken_body(bytes: &[u8]) -> BoxStream<'static, Result<Bytes, io::Error>> {
    let fail = io::Error::new(io::ErrorKind::ConnectionReset, "client went away");
    body(bytes).chain(stream::iter([Err(fail)])).boxed()
}

/// `bytes`, then nothing ever again (a client that stalls).
pub fn stalled_body(bytes: &[u8]) -> BoxStream<'static, Result<Bytes, io::Error>> {
    body(bytes).chain(stream::pending()).boxed()
}

pub async fn collect(
    stream: impl futures::Stream<Item = Result<Bytes, ObjectsError>>,
) -> Result<Vec<u8>, ObjectsError> {
    stream
        .try_fold(Vec::new(), |mut all, b| async move {
            all.extend_from_slice(&b);
            Ok(all)
        })
        .await
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Polls `leftovers` until it is empty (a dropped upload is aborted in the background).
async fn assert_nothing_left(leftovers: Leftovers<'_>, file: &FileKey) {
    for _ in 0..100 {
        if leftovers(file.clone()).await.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("left behind: {:?}", leftovers(file.clone()).await);
}

/// Uploads a file in four parts (multipart, plain, multipart, a short last one), part 3 cut off
/// twice (once after a whole chunk had gone to the store, once before) and a third time by
/// dropping the request, resuming each time from the state string kept after part 2. The file
/// reads back whole, its digest is SHA-256's, and nothing else is left.
pub async fn resumed_upload(objects: &Objects, leftovers: Leftovers<'_>) {
    let file = key("resume");
    let lens = [CHUNK + MIB, 64 * 1000, 2 * CHUNK + MIB + 3 * 64, 777];
    let all = data(lens.iter().sum(), 1);
    let limit = 64 * MIB as u64;
    let mut db_state = HashState::new().encode(); // what the caller's database holds
    let mut at = 0;
    for (i, &len) in lens.iter().enumerate() {
        let part = i as u32 + 1;
        let bytes = &all[at..at + len];
        if part == 3 {
            for cut in [CHUNK + 3 * MIB, 100 * 1024] {
                let before = HashState::parse(&db_state).unwrap();
                let err = objects
                    .put_part(&file, part, &before, limit, broken_body(&bytes[..cut]))
                    .await
                    .unwrap_err();
                assert!(matches!(err, ObjectsError::Body(_)), "{err}");
                assert_eq!(
                    objects.list_parts(&file).await.unwrap(),
                    vec![lens[0] as u64, lens[1] as u64]
                );
                assert_nothing_left(leftovers, &file).await;
            }
            let before = HashState::parse(&db_state).unwrap();
            let dropped = tokio::time::timeout(
                Duration::from_secs(2),
                objects.put_part(
                    &file,
                    part,
                    &before,
                    limit,
                    stalled_body(&bytes[..CHUNK + MIB]),
                ),
            )
            .await;
            assert!(dropped.is_err(), "a stalled body never completes a part");
            assert_eq!(objects.list_parts(&file).await.unwrap().len(), 2);
            assert_nothing_left(leftovers, &file).await;
        }
        let before = HashState::parse(&db_state).unwrap();
        let stored: StoredPart = objects
            .put_part(&file, part, &before, limit, body(bytes))
            .await
            .unwrap();
        assert_eq!((stored.part, stored.len), (part, len as u64));
        assert_eq!(stored.state.len(), (at + len) as u64);
        db_state = stored.state.encode();
        at += len;
    }
    let digest = verify_file(&db_state, &sha256_hex(&all), all.len() as u64).unwrap();
    assert_eq!(digest.len, all.len() as u64);

    // Nothing may follow a part that is not a multiple of 64 bytes.
    let last = HashState::parse(&db_state).unwrap();
    let err = objects
        .put_part(&file, 5, &last, limit, body(&[0; 64]))
        .await
        .unwrap_err();
    assert!(matches!(err, ObjectsError::UnalignedPart { .. }), "{err}");

    let parts = objects.list_parts(&file).await.unwrap();
    assert_eq!(parts, lens.map(|l| l as u64).to_vec());
    let read = collect(objects.read(&file, &parts).await.unwrap())
        .await
        .unwrap();
    assert!(read == all, "the file reads back as uploaded");
    assert_nothing_left(leftovers, &file).await;
    assert_eq!(objects.delete(&file).await.unwrap(), 4);
    assert!(!objects.exists(&file).await.unwrap());
}

/// Ranged reads at and across every part boundary (and a few elsewhere) equal the same slice
/// of the original, over parts of several sizes including an empty one.
pub async fn ranged_reads(objects: &Objects) {
    let file = key("ranges");
    let lens = [64 * 3, 0, 64, CHUNK + 64 * 5, 1];
    let all = data(lens.iter().sum(), 2);
    let mut state = HashState::new();
    let mut at = 0;
    for (i, &len) in lens.iter().enumerate() {
        let stored = objects
            .put_part(
                &file,
                i as u32 + 1,
                &state,
                u64::MAX,
                body(&all[at..at + len]),
            )
            .await
            .unwrap();
        state = stored.state;
        at += len;
    }
    let parts: Vec<u64> = lens.iter().map(|&l| l as u64).collect();
    assert_eq!(objects.list_parts(&file).await.unwrap(), parts);
    let total = all.len() as u64;
    let mut edges = vec![0u64, 1, 100, 3000, total / 2, total - 2, total - 1, total];
    let mut offset = 0;
    for &len in &parts {
        offset += len;
        edges.extend([offset.saturating_sub(1), offset, (offset + 1).min(total)]);
    }
    edges.sort_unstable();
    edges.dedup();
    for (i, &start) in edges.iter().enumerate() {
        // every pair would be 400 reads; each start with a few ends is enough
        for &end in edges[i..].iter().step_by(3).chain(edges.last()) {
            let got = collect(objects.read_range(&file, &parts, start..end).await.unwrap())
                .await
                .unwrap();
            assert!(
                got == all[start as usize..end as usize],
                "range {start}..{end} differs"
            );
        }
    }
    let err = objects
        .read_range(&file, &parts, 0..total + 1)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ObjectsError::InvalidRange { .. }), "{err}");
    objects.delete(&file).await.unwrap();
}

/// A part over the caller's limit is refused, before and after the upload went multipart, and
/// leaves nothing; so does every refusal made before reading.
pub async fn over_the_limit(objects: &Objects, leftovers: Leftovers<'_>) {
    let file = key("limit");
    let start = HashState::new();
    for (limit, len) in [
        (MIB as u64, 2 * MIB),
        ((CHUNK + MIB) as u64, CHUNK + 2 * MIB),
    ] {
        let err = objects
            .put_part(&file, 1, &start, limit, body(&data(len, 3)))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ObjectsError::PartTooLarge { limit: l } if l == limit),
            "{err}"
        );
        assert!(!objects.exists(&file).await.unwrap());
        assert_nothing_left(leftovers, &file).await;
    }
    // Exactly the limit is fine.
    let ok = objects
        .put_part(&file, 1, &start, 640, body(&data(640, 3)))
        .await
        .unwrap();
    assert_eq!(ok.len, 640);
    assert!(matches!(
        objects.put_part(&file, 0, &start, 640, body(&[])).await,
        Err(ObjectsError::InvalidPartNumber)
    ));
    assert_eq!(objects.delete(&file).await.unwrap(), 1);
    assert_eq!(objects.delete(&file).await.unwrap(), 0);
    assert!(!objects.exists(&file).await.unwrap());
}

/// What a read says when the store does not hold what the caller thinks it does.
pub async fn reads_of_what_is_not_there(objects: &Objects) {
    let file = key("missing");
    assert_eq!(objects.list_parts(&file).await.unwrap(), Vec::<u64>::new());
    let err = objects.read(&file, &[10]).await.err().unwrap();
    assert!(
        matches!(err, ObjectsError::MissingPart { part: 1, .. }),
        "{err}"
    );
    // Part 1 stored, part 2 not: the error comes in the stream, after part 1's bytes.
    let one = data(128, 4);
    objects
        .put_part(&file, 1, &HashState::new(), 1000, body(&one))
        .await
        .unwrap();
    let err = collect(objects.read(&file, &[128, 5]).await.unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ObjectsError::MissingPart { part: 2, .. }),
        "{err}"
    );
    // Part 1 said to be longer than it is.
    let err = match objects.read(&file, &[200]).await {
        Ok(stream) => collect(stream).await.unwrap_err(),
        Err(e) => e,
    };
    assert!(
        matches!(err, ObjectsError::PartLength { part: 1, .. }),
        "{err}"
    );
    // Part 3 without part 2.
    let state = HashState::new();
    objects
        .put_part(&file, 3, &state, 1000, body(&one))
        .await
        .unwrap();
    let err = objects.list_parts(&file).await.unwrap_err();
    assert!(
        matches!(err, ObjectsError::MissingPart { part: 2, .. }),
        "{err}"
    );
    assert_eq!(objects.delete(&file).await.unwrap(), 2);
}
