//! `suanli data push DIR --listing NAME --version V [--publish]`: a directory's regular files
//! as a version of a listing.
//!
//! The version is created when missing; each file's SHA-256 is computed streaming from disk and
//! the file declared with its size; then its bytes go up in parts (64 MiB by default, a multiple
//! of 64 bytes) streamed from disk, each at the offset the exchange has received. Resuming is
//! the exchange's count: a file partly uploaded before (a push interrupted, a part whose answer
//! was lost) continues from its `received_bytes`, and a file verified already is not sent again,
//! so running the same push again finishes what an interrupted one left.

use std::collections::BTreeMap;
use std::io::{Seek as _, SeekFrom};
use std::time::Duration;

use anyhow::{bail, Context as _};
use futures::TryStreamExt as _;
use indicatif::ProgressBar;
use serde::Serialize;
use suanli_api as api;
use suanli_client::{read_exactly, ClientError};

use super::args::PushArgs;
use super::local::{bar, file_rows, open_regular, sha256_file, walk, LocalFile, MovedFile};
use super::{api_field, Bytes};
use crate::cli::render::{Output, Render, Text};
use crate::cli::{Ctx, Result};

/// A transport failure or a lost answer is retried this many times per file before giving up
/// (the next `push` goes on from where this one stopped).
const RETRIES: u32 = 3;

/// What `push` did, file by file.
#[derive(Debug, Serialize)]
pub(super) struct PushReport {
    pub listing: String,
    pub version: String,
    /// `draft`, `published` or `deprecated`, after the push.
    pub state: String,
    pub files: Vec<MovedFile>,
    /// Bytes sent by this run.
    pub sent_bytes: u64,
}

impl Render for PushReport {
    fn render(&self, text: &mut Text) {
        let rows = file_rows(&self.files);
        text.table(&["PATH", "SIZE", "SHA256", "STATUS"], &rows);
        text.line(&format!(
            "{}@{}: {} file(s), {} sent; {}",
            self.listing,
            self.version,
            self.files.len(),
            Bytes(self.sent_bytes),
            self.state
        ));
        if self.state == "draft" {
            text.note(&format!(
                "publish it with `suanli data publish {}@{}` (or push with --publish)",
                self.listing, self.version
            ));
        }
    }
}

/// A local file with its digest, and the exchange's record of it.
struct Planned {
    local: LocalFile,
    sha256: String,
    remote: api::DataFile,
}

pub(super) async fn push(ctx: &Ctx, args: PushArgs, o: &mut Output) -> Result {
    let client = &ctx.client;
    let (name, label) = (args.listing.as_str(), args.version.as_str());
    if ctx.key.len() > 200 {
        bail!("with push, --idempotency-key is at most 200 characters: it is extended per request");
    }
    suanli_core::data::version_label(label)
        .map_err(|why| anyhow::anyhow!("the version {label:?} {why}"))?;
    let files = walk(&args.dir)?;
    // A listing that is not there fails before anything is read.
    client.get_listing(name).await?;
    let versions = client.list_versions(name).await?.items;
    let existing = versions.into_iter().find(|v| v.version == label);

    let total: u64 = files.iter().map(|f| f.size).sum();
    let hashing = bar(!o.is_json(), total, "hashing");
    let mut hashed = Vec::with_capacity(files.len());
    for f in files {
        hashing.set_message(f.rel.clone());
        let (size, sha256) = sha256_file(f.abs.clone(), hashing.clone()).await?;
        if size != f.size {
            bail!("{} changed while it was read; push again", f.abs.display());
        }
        hashed.push((f, sha256));
    }
    hashing.finish_and_clear();

    let state = match &existing {
        None => {
            client
                .create_version(name, label, Some(&ctx.sub_key("version")))
                .await?
                .state
        }
        Some(v) => v.state.clone(),
    };
    let mut remote: BTreeMap<String, api::DataFile> = client
        .list_files(name, label)
        .await?
        .items
        .into_iter()
        .map(|f| (f.path.clone(), f))
        .collect();
    check_against(&hashed, &remote, label, &state)?;

    // Declare what the exchange does not have yet.
    let mut planned = Vec::with_capacity(hashed.len());
    for (i, (local, sha256)) in hashed.into_iter().enumerate() {
        let remote = match remote.remove(&local.rel) {
            Some(r) => r,
            None => {
                let request = api::AddFileRequest {
                    path: local.rel.clone(),
                    size: local.size,
                    sha256: sha256.clone(),
                };
                client
                    .add_file(
                        name,
                        label,
                        &request,
                        Some(&ctx.sub_key(&format!("file-{i}"))),
                    )
                    .await?
            }
        };
        planned.push(Planned {
            local,
            sha256,
            remote,
        });
    }

    let done: u64 = planned
        .iter()
        .map(|p| {
            if p.remote.verified {
                p.local.size
            } else {
                p.remote.received_bytes
            }
        })
        .sum();
    let progress = bar(!o.is_json(), total, "push");
    progress.set_position(done);
    progress.reset_eta();
    let mut report = PushReport {
        listing: name.to_owned(),
        version: label.to_owned(),
        state,
        files: Vec::with_capacity(planned.len()),
        sent_bytes: 0,
    };
    let mut before = 0;
    for p in &planned {
        let status = if p.remote.verified {
            "present"
        } else {
            progress.set_message(p.local.rel.clone());
            report.sent_bytes += upload(ctx, name, label, p, args.part_bytes, &progress, before)
                .await
                .with_context(|| format!("pushing {}", p.local.rel))?;
            if p.remote.received_bytes > 0 {
                "resumed"
            } else {
                "uploaded"
            }
        };
        before += p.local.size;
        report.files.push(MovedFile {
            path: p.local.rel.clone(),
            size: p.local.size,
            sha256: p.sha256.clone(),
            status,
            resumed_from: (status == "resumed").then_some(p.remote.received_bytes),
        });
    }
    progress.finish_and_clear();
    if args.publish && report.state == "draft" {
        report.state = client
            .publish_version(name, label, Some(&ctx.sub_key("publish")))
            .await?
            .state;
    }
    o.show(&report)
}

/// The exchange's files of the version against the directory's: what it has must be what the
/// directory has (a declared file never changes, and none is removed from a version), and a
/// version past its draft is complete.
fn check_against(
    local: &[(LocalFile, String)],
    remote: &BTreeMap<String, api::DataFile>,
    label: &str,
    state: &str,
) -> Result {
    let mut differ = Vec::new();
    for (f, sha256) in local {
        if let Some(r) = remote.get(&f.rel) {
            if r.size != f.size || &r.sha256 != sha256 {
                differ.push(f.rel.clone());
            }
        }
    }
    if !differ.is_empty() {
        bail!(
            "version {label} has these files with other contents (a declared file never \
             changes; push to a new version): {}",
            differ.join(", ")
        );
    }
    let extra: Vec<&str> = remote
        .keys()
        .filter(|path| !local.iter().any(|(f, _)| &f.rel == *path))
        .map(String::as_str)
        .collect();
    if !extra.is_empty() {
        bail!(
            "version {label} has files that are not in the directory (files are never removed \
             from a version; push to a new version): {}",
            extra.join(", ")
        );
    }
    if state != "draft" && local.len() != remote.len() {
        bail!("version {label} is {state}: it never changes; push to a new version");
    }
    Ok(())
}

/// Whether a failed part is worth asking the exchange where the file stands, and going on: the
/// part was not taken at that offset (another upload moved on, or the answer to this one was
/// lost), or it never arrived.
fn resumable(e: &ClientError) -> bool {
    matches!(e, ClientError::Transport(_))
        || e.status() == Some(409)
        || (e.status() == Some(400) && api_field(e) == Some("offset"))
}

/// Sends the rest of one file, part by part from disk, from what the exchange has received;
/// returns the bytes sent. `before`: the bytes of the files before it, for the bar.
async fn upload(
    ctx: &Ctx,
    name: &str,
    label: &str,
    p: &Planned,
    part_bytes: u64,
    progress: &ProgressBar,
    before: u64,
) -> Result<u64> {
    let client = &ctx.client;
    let (path, size) = (p.local.rel.as_str(), p.local.size);
    let mut received = p.remote.received_bytes;
    let (mut sent, mut retries) = (0, 0);
    while received < size {
        let length = part_bytes.min(size - received);
        let mut file = open_regular(&p.local.abs)?;
        if file.metadata()?.len() != size {
            bail!(
                "{} changed since it was hashed; push again",
                p.local.abs.display()
            );
        }
        file.seek(SeekFrom::Start(received))?;
        let counter = progress.clone();
        let body = read_exactly(tokio::fs::File::from_std(file), length)
            .inspect_ok(move |chunk| counter.inc(chunk.len() as u64));
        match client
            .upload_part(name, label, path, received, length, body, None)
            .await
        {
            Ok(answer) => {
                sent += length;
                received = answer.received_bytes;
                if answer.verified {
                    break;
                }
            }
            Err(e) if api_field(&e) == Some("sha256") => bail!(
                "the exchange received {size} bytes whose SHA-256 is not {}: the file changed \
                 while it was pushed. Nothing of it was kept; run push again ({e})",
                p.sha256
            ),
            Err(e) if resumable(&e) && retries < RETRIES => {
                retries += 1;
                if matches!(e, ClientError::Transport(_)) {
                    tokio::time::sleep(Duration::from_millis(500 * u64::from(retries))).await;
                }
                let now = client
                    .list_files(name, label)
                    .await?
                    .items
                    .into_iter()
                    .find(|f| f.path == path)
                    .with_context(|| format!("the version no longer lists {path}"))?;
                if now.verified {
                    break;
                }
                received = now.received_bytes;
            }
            Err(e) if resumable(&e) => {
                return Err(anyhow::Error::new(e).context(
                    "the upload stopped; run the same push again to resume where the exchange is",
                ))
            }
            Err(e) => return Err(e.into()),
        }
        progress.set_position(before + received);
    }
    progress.set_position(before + size);
    Ok(sent)
}
