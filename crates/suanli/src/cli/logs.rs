//! Job output: `logs` reads or follows it by long polling, and [`follow_logs`] follows it for
//! `launch` and `exec`. Output is written as it comes, not through [`Output`]: stdout and stderr
//! to theirs, the exchange's and the agent's own lines to stderr, or JSON lines with `--json`.

use std::io::Write as _;

use anyhow::{bail, Context as _};
use suanli_api as api;
use suanli_client::{Client, ClientError};

use super::args::LogsArgs;
use super::render::Output;
use super::{id, Ctx, Result};

/// Writes log chunks as they come: stdout to stdout, stderr to stderr, the exchange's and the
/// agent's own messages (`system`) to stderr as `[suanli] …` lines.
#[derive(Debug, Default)]
struct LogPrinter {
    /// The last byte written to either stream was not a newline.
    mid_line: bool,
}

impl LogPrinter {
    fn print(&mut self, chunks: &[api::LogChunk]) -> std::io::Result<()> {
        let mut stdout = std::io::stdout().lock();
        let mut stderr = std::io::stderr().lock();
        for chunk in chunks {
            if chunk.data.is_empty() {
                continue;
            }
            match chunk.stream.as_str() {
                "stdout" => stdout.write_all(chunk.data.as_bytes())?,
                "stderr" => {
                    stdout.flush()?;
                    stderr.write_all(chunk.data.as_bytes())?;
                }
                _ => {
                    stdout.flush()?;
                    if self.mid_line {
                        stderr.write_all(b"\n")?;
                    }
                    for line in chunk.data.trim_end_matches('\n').lines() {
                        writeln!(stderr, "[suanli] {line}")?;
                    }
                    self.mid_line = false;
                    continue;
                }
            }
            self.mid_line = !chunk.data.ends_with('\n');
        }
        stdout.flush()?;
        stderr.flush()
    }
}

/// Writes log chunks as JSON lines.
fn print_json_chunks(chunks: &[api::LogChunk]) -> Result {
    let mut stdout = std::io::stdout().lock();
    for chunk in chunks {
        writeln!(stdout, "{}", serde_json::to_string(chunk)?)?;
    }
    stdout.flush()?;
    Ok(())
}

/// Whether a failed call is worth repeating: no answer, or the exchange is unavailable.
fn is_transient(err: &ClientError) -> bool {
    matches!(err, ClientError::Transport(_)) || err.status().is_some_and(|s| s >= 500)
}

/// Long-polls a job's output until the job has ended and all of it is read, printing it when
/// `print`. Transient failures are retried a few times; Ctrl-C stops following (not the job).
/// Returns the job's final state.
pub(super) async fn follow_logs(client: &Client, job_id: &str, print: bool) -> Result<String> {
    let mut after = 0;
    let mut failures = 0u32;
    let mut printer = LogPrinter::default();
    loop {
        let params = api::LogParams {
            after: Some(after),
            limit: None,
            wait_ms: Some(20_000),
        };
        let page = tokio::select! {
            page = client.job_logs(job_id, &params) => page,
            _ = tokio::signal::ctrl_c() => bail!(
                "stopped following; job {job_id} goes on: `suanli logs -f {job_id}` follows it \
                 again, `suanli cancel {job_id}` cancels it"
            ),
        };
        let page = match page {
            Ok(page) => page,
            Err(e) if is_transient(&e) && failures < 5 => {
                failures += 1;
                eprintln!("[suanli] {e}; trying again");
                tokio::time::sleep(std::time::Duration::from_secs(1 << failures)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        failures = 0;
        if print {
            if let Err(e) = printer.print(&page.chunks) {
                bail!(
                    "cannot write the job's output ({e}); job {job_id} goes on: `suanli logs -f \
                     {job_id}` follows it again"
                );
            }
        }
        after = page.next_after;
        if page.done {
            return Ok(page.state);
        }
    }
}

pub(super) async fn logs(ctx: &Ctx, args: LogsArgs, o: &mut Output) -> Result {
    let client = &ctx.client;
    let job: api::JobId = id(&args.job_id)?;
    o.flush()?;
    let mut after = 0;
    let mut printer = LogPrinter::default();
    let mut failures = 0u32;
    loop {
        let params = api::LogParams {
            after: Some(after),
            limit: None,
            wait_ms: args.follow.then_some(20_000),
        };
        let page = tokio::select! {
            page = client.job_logs(&job, &params) => page,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let page = match page {
            Ok(page) => page,
            Err(e) if args.follow && is_transient(&e) && failures < 5 => {
                failures += 1;
                eprintln!("[suanli] {e}; trying again");
                tokio::time::sleep(std::time::Duration::from_secs(1 << failures)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        failures = 0;
        if o.is_json() {
            print_json_chunks(&page.chunks)?;
        } else if let Err(e) = printer.print(&page.chunks) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(e).context("cannot write the job's output");
        }
        after = page.next_after;
        if page.done || (!args.follow && page.chunks.is_empty()) {
            if !page.done && !o.is_json() {
                o.note(&format!(
                    "[suanli] job {} is {}; `suanli logs -f {}` follows it",
                    args.job_id, page.state, args.job_id
                ));
            }
            return Ok(());
        }
    }
}
