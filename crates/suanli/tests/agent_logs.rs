//! Issue 17, "logs must not vanish": real jobs on a real agent, printing fast, steadily, and a
//! line before a burst. Batches fit what the exchange accepts, nothing is dropped for want of
//! room, a job's log is capped (by the provider's agent and by the exchange) behind a notice that
//! says how many bytes were dropped and where, the last lines always arrive, and the provider's
//! disk holds a bounded part of the log file.

#[allow(dead_code)]
mod common;

use common::{all_logs, LocalMarket};
use suanli_api::*;

/// A market whose exchange keeps `exchange_cap` bytes of a job's log (when given) and whose
/// agent's config ends with `agent_extra`.
async fn market(name: &str, exchange_cap: Option<u64>, agent_extra: &str) -> LocalMarket {
    LocalMarket::start(
        name,
        |c| {
            if let Some(cap) = exchange_cap {
                c.max_log_bytes_per_job = cap;
            }
        },
        agent_extra,
    )
    .await
}

/// Runs `script`, following its log live as a consumer would; the job must succeed.
async fn run(m: &LocalMarket, script: &str) -> (Job, String, String, String) {
    let mut spec = common::task(script);
    spec.task.time_limit_s = Some(300);
    let job = m
        .consumer
        .create_job(&m.lease.id, &spec, None)
        .await
        .unwrap();
    let (out, err, sys) = all_logs(&m.consumer, &job.id).await;
    let done = common::wait_job(&m.consumer, &job.id, |j| {
        !matches!(j.state.as_str(), "queued" | "dispatched" | "running")
    })
    .await;
    assert_eq!(done.state, "succeeded", "{done:#?}\n{sys}");
    (done, out, err, sys)
}

/// The number just before `marker` in `text` (e.g. "123 bytes of stdout were dropped").
fn number_before(text: &str, marker: &str) -> u64 {
    let at = text
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker:?} in {text:?}"));
    let digits: String = text[..at]
        .trim_end()
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    digits.parse().unwrap()
}

/// 100 MB printed as fast as the machine goes: before, 0 bytes reached the consumer (batches the
/// exchange refused) and `stdout.log` grew without limit. Now: the first 8 MiB (the provider's
/// cap here), a notice, the dropped count, and the last 256 KiB, ending with the last line; every
/// byte printed is either delivered or counted as dropped; the log file's disk blocks stay
/// bounded while its size is the whole output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_printing_100_mb_delivers_its_head_a_count_and_its_last_lines() {
    let m = market("suanli-logs-100mb", None, "max_log_mib_per_job = 8\n").await;
    let (done, out, _, sys) = run(
        &m,
        "echo FIRST-LINE; yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c 100000000; \
             echo LAST-LINE",
    )
    .await;
    let printed = "FIRST-LINE\n".len() as u64 + 100_000_000 + "LAST-LINE\n".len() as u64;
    assert!(out.starts_with("FIRST-LINE\n0123456789"), "{}", &out[..40]);
    // `head -c` cut the last line short; the job's own last line follows it.
    assert!(out.ends_with("LAST-LINE\n"));
    assert!(
        sys.contains("passed its log limit of 8388608 bytes"),
        "{sys}"
    );
    let dropped = number_before(&sys, "bytes of stdout were dropped");
    assert_eq!(
        out.len() as u64 + dropped,
        printed,
        "every byte is delivered or counted as dropped"
    );
    assert!(out.len() <= 8 * 1024 * 1024 + 256 * 1024 + 64 * 1024);
    assert!(out.len() >= 8 * 1024 * 1024 - 64 * 1024);
    // On the provider's disk: the file has the job's whole output, its blocks a bounded part.
    use std::os::unix::fs::MetadataExt;
    let log = m
        .setup
        .jobs_dir
        .join(&done.attempts[0].id)
        .join("stdout.log");
    let meta = std::fs::metadata(&log).unwrap();
    assert_eq!(meta.len(), printed);
    assert!(
        meta.blocks() * 512 < 32 * 1024 * 1024,
        "stdout.log holds {} bytes on disk",
        meta.blocks() * 512
    );
}

/// A line, then a burst of 20 MB of control characters (each six bytes once encoded in JSON,
/// the worst case for a batch's size): under the cap, every byte arrives, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_then_a_burst_arrives_whole() {
    let m = market("suanli-logs-burst", None, "").await;
    let (_, out, err, sys) = run(
        &m,
        "echo FIRST-LINE; echo to-stderr >&2; head -c 20000000 /dev/zero | tr '\\0' '\\001'; \
             echo; echo LAST-LINE",
    )
    .await;
    assert!(out.starts_with("FIRST-LINE\n\u{1}"));
    assert!(out.ends_with("\u{1}\nLAST-LINE\n"));
    assert_eq!(
        out.len(),
        "FIRST-LINE\n".len() + 20_000_000 + 1 + "LAST-LINE\n".len()
    );
    assert_eq!(out.bytes().filter(|b| *b == 1).count(), 20_000_000);
    assert_eq!(err, "to-stderr\n");
    assert!(!sys.contains("dropped"), "{sys}");
}

/// Steady output for a minute (about 30 MB): before, 61 KB of 90 MB arrived. Now every line
/// arrives, once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_output_for_a_minute_arrives_whole() {
    let m = market("suanli-logs-steady", None, "").await;
    let (_, out, _, sys) = run(
        &m,
        "pad=$(head -c 50000 /dev/zero | tr '\\0' x); i=0; \
             while [ $i -lt 600 ]; do printf 'tick %05d %s\\n' $i \"$pad\"; i=$((i+1)); \
             sleep 0.1; done; echo LAST-LINE",
    )
    .await;
    let ticks: Vec<&str> = out.lines().filter(|l| l.starts_with("tick ")).collect();
    assert_eq!(ticks.len(), 600, "{sys}");
    for (i, line) in ticks.iter().enumerate() {
        assert!(line.starts_with(&format!("tick {i:05} xxx")), "line {i}");
        assert_eq!(line.len(), 11 + 50_000);
    }
    assert!(out.ends_with("\nLAST-LINE\n"));
    assert!(!sys.contains("dropped"), "{sys}");
}

/// The exchange's own cap (here 1 MiB) holds whatever the provider's agent sends: it keeps the
/// first 768 KiB, a notice with the bytes it dropped, and the last 256 KiB, which end with the
/// job's last line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exchanges_cap_keeps_the_head_a_count_and_the_tail() {
    let m = market("suanli-logs-xcap", Some(1024 * 1024), "").await;
    let (done, live, _, live_sys) = run(&m, "echo FIRST-LINE; seq 1 1000000; echo LAST-LINE").await;
    let printed: u64 = "FIRST-LINE\n".len() as u64
        + (1..=1_000_000u64)
            .map(|i| i.to_string().len() as u64 + 1)
            .sum::<u64>()
        + "LAST-LINE\n".len() as u64;
    // A reader that followed the log live saw it begin and end, and the final count last.
    assert!(live.starts_with("FIRST-LINE\n1\n2\n3\n"));
    assert!(live.ends_with("999999\n1000000\nLAST-LINE\n"));
    let final_count = number_before(&live_sys, "bytes between them were dropped");
    // Read after the job ended: the head, the notice, the tail; every byte kept or counted.
    let (out, _, sys) = all_logs(&m.consumer, &done.id).await;
    assert!(out.starts_with("FIRST-LINE\n1\n2\n3\n"));
    assert!(out.ends_with("999999\n1000000\nLAST-LINE\n"));
    let dropped = number_before(&sys, "bytes after them were dropped");
    assert_eq!(dropped, final_count);
    assert_eq!(out.len() as u64 + dropped, printed);
    assert!(out.len() as u64 <= 1024 * 1024 + 64 * 1024, "{}", out.len());
    // The notice stands where the log was cut: after the head, before the tail.
    let logs = m
        .consumer
        .job_logs(
            &done.id,
            &LogParams {
                after: Some(0),
                limit: Some(1000),
                wait_ms: None,
            },
        )
        .await
        .unwrap();
    let notice = logs
        .chunks
        .iter()
        .position(|c| c.stream == "system" && c.data.contains("passed the exchange's cap"))
        .unwrap();
    let head: usize = logs.chunks[..notice]
        .iter()
        .filter(|c| c.stream == "stdout")
        .map(|c| c.data.len())
        .sum();
    assert!(head <= 768 * 1024 && head > 700 * 1024, "{head}");
    assert!(logs.chunks[notice + 1..]
        .iter()
        .any(|c| c.data.contains("LAST-LINE")));
}
