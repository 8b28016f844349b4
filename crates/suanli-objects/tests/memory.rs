//! Memory stays flat with size: a 256 MiB file, generated as it is sent, is uploaded in two
//! parts and read back (whole, and 64 MiB across the parts) on the local backend, and the
//! process's peak resident set (VmHWM, /proc/self/status) grows by at most 64 MiB, a quarter of
//! the file. Its own binary, so that no other test shares the process while it measures.

mod common;

use std::io::Write;
use std::time::Instant;

use bytes::Bytes;
use futures::stream::{self, BoxStream};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use suanli_objects::{FileKey, HashState, Objects, StoreConfig};

const MIB: u64 = 1024 * 1024;
const PART: u64 = 128 * MIB;
const GEN_CHUNK: u64 = 64 * 1024;

/// The bytes `range` of the generated file, in chunks made as they are asked for. Byte `i` of
/// the file depends only on `i`, so any range can be made again to check a read.
fn generated(range: std::ops::Range<u64>) -> BoxStream<'static, Result<Bytes, std::io::Error>> {
    let first = range.start / GEN_CHUNK;
    let last = range.end.div_ceil(GEN_CHUNK);
    stream::iter(first..last)
        .map(move |k| {
            let mut x = (k + 1).wrapping_mul(0x9e3779b97f4a7c15) | 1;
            let mut chunk = Vec::with_capacity(GEN_CHUNK as usize);
            for _ in 0..GEN_CHUNK / 8 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.extend_from_slice(&x.to_le_bytes());
            }
            let start = k * GEN_CHUNK;
            let from = range.start.max(start) - start;
            let to = range.end.min(start + GEN_CHUNK) - start;
            Ok(Bytes::from(chunk).slice(from as usize..to as usize))
        })
        .boxed()
}

async fn sha256_of<E: std::fmt::Debug>(
    mut s: impl futures::Stream<Item = Result<Bytes, E>> + Unpin,
) -> ([u8; 32], u64) {
    let (mut h, mut n) = (Sha256::new(), 0u64);
    while let Some(b) = s.next().await {
        let b = b.unwrap();
        n += b.len() as u64;
        h.update(&b);
    }
    (h.finalize().into(), n)
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} not in /proc/self/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Resets VmHWM to the current resident set (Linux 4.0+), so the peak measured is this phase's.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

async fn upload_and_read(objects: &Objects, file: &FileKey, total: u64) -> f64 {
    let started = Instant::now();
    let mut state = HashState::new();
    let mut at = 0;
    let mut number = 1;
    while at < total {
        let end = (at + PART).min(total);
        let stored = objects
            .put_part(file, number, &state, PART, generated(at..end))
            .await
            .unwrap();
        state = stored.state;
        at = end;
        number += 1;
    }
    let (want, _) = sha256_of(generated(0..total)).await;
    assert_eq!(
        state.finish().sha256,
        want,
        "the digest carried across parts"
    );
    let parts = objects.list_parts(file).await.unwrap();
    let (got, n) = sha256_of(objects.read(file, &parts).await.unwrap()).await;
    assert_eq!((got, n), (want, total), "the file reads back as generated");
    let range = total / 2 - total / 8 - 3..total / 2 + total / 8 + 5;
    let (want, _) = sha256_of(generated(range.clone())).await;
    let (got, n) = sha256_of(
        objects
            .read_range(file, &parts, range.clone())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (got, n),
        (want, range.end - range.start),
        "a range across the parts"
    );
    started.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_flat_with_size() {
    let dir = common::TempDir::new("memory");
    let objects = Objects::open(&StoreConfig::local(dir.path().join("objects"))).unwrap();
    // Warm up the runtime, the blocking pool and the allocator with a 16 MiB file first.
    let warm = FileKey::new("warm").unwrap();
    upload_and_read(&objects, &warm, 16 * MIB).await;
    objects.delete(&warm).await.unwrap();

    let reset = reset_peak();
    let rss_before = status_kib("VmRSS:");
    let peak_before = status_kib("VmHWM:");
    let file = FileKey::new("big").unwrap();
    let total = 256 * MIB;
    let secs = upload_and_read(&objects, &file, total).await;
    let peak_after = status_kib("VmHWM:");
    let growth_mib = (peak_after - peak_before.min(rss_before)) as f64 / 1024.0;
    let _ = writeln!(
        std::io::stderr(),
        "memory: 256 MiB up in two parts, read whole and a 64 MiB range across them in {secs:.1}s; VmRSS \
         before {:.1} MiB, VmHWM before {:.1} MiB (reset: {reset}), after {:.1} MiB: peak grew \
         {growth_mib:.1} MiB",
        rss_before as f64 / 1024.0,
        peak_before as f64 / 1024.0,
        peak_after as f64 / 1024.0,
    );
    assert!(
        growth_mib <= 64.0,
        "peak RSS grew {growth_mib:.1} MiB moving a 256 MiB file: something buffers it"
    );
    assert_eq!(objects.delete(&file).await.unwrap(), 2);

    // The measurement sees memory that is really held: 128 MiB touched raises the peak.
    let held = vec![1u8; 128 * MIB as usize];
    let peak_held = status_kib("VmHWM:");
    assert!(held.iter().step_by(4096).all(|&b| b == 1));
    assert!(
        peak_held >= peak_after + 100 * 1024,
        "VmHWM did not see 128 MiB held ({peak_after} -> {peak_held} KiB)"
    );
}
