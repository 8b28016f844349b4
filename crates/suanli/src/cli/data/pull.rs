//! `suanli data pull NAME[@VERSION] --dest DIR`: a version's files into a directory, each
//! verified against its SHA-256 before it appears under its own name.
//!
//! A file streams into `DIR/<path>.part`; when every byte is in and the digest of the whole file
//! matches, the `.part` is synced and renamed to `DIR/<path>`, so a file under its final name is
//! always whole and verified. Resuming is the client's: a `.part` left by an interrupted pull is
//! hashed as it is and the rest asked for with a `Range` from its length. A digest that does not
//! match deletes the `.part` and fails; a file already in place with the right digest is kept.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use indicatif::ProgressBar;
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use suanli_api as api;
use suanli_client::ClientError;
use tokio::io::{AsyncSeekExt as _, AsyncWriteExt as _};

use super::args::{split_target, PullArgs};
use super::local::{bar, file_rows, hash_into, hex, open_regular, place, MovedFile};
use super::Bytes;
use crate::cli::render::{Output, Render, Text};
use crate::cli::{Ctx, Result};

/// A connection lost mid-file is picked up again this many times before giving up (the next
/// `pull` goes on from the `.part`).
const RETRIES: u32 = 3;

#[derive(Debug, Serialize)]
pub(super) struct PullReport {
    pub listing: String,
    pub version: String,
    pub dest: String,
    pub files: Vec<MovedFile>,
    /// Bytes downloaded by this run.
    pub received_bytes: u64,
}

impl Render for PullReport {
    fn render(&self, text: &mut Text) {
        let rows = file_rows(&self.files);
        text.table(&["PATH", "SIZE", "SHA256", "STATUS"], &rows);
        text.line(&format!(
            "{}@{} in {}: {} file(s) verified, {} downloaded",
            self.listing,
            self.version,
            self.dest,
            self.files.len(),
            Bytes(self.received_bytes)
        ));
    }
}

/// The newest published version of a listing.
pub(super) async fn newest_published(ctx: &Ctx, name: &str) -> Result<String> {
    let versions = ctx.client.list_versions(name).await?.items;
    let newest = versions
        .iter()
        .filter(|v| v.state == "published")
        .max_by(|a, b| {
            (a.published_at.as_deref(), &a.created_at)
                .cmp(&(b.published_at.as_deref(), &b.created_at))
        });
    match newest {
        Some(v) => Ok(v.version.clone()),
        None => {
            let others: Vec<String> = versions
                .iter()
                .map(|v| format!("{} ({})", v.version, v.state))
                .collect();
            bail!(
                "{name} has no published version{}; name one with {name}@VERSION",
                if others.is_empty() {
                    String::new()
                } else {
                    format!(" (it has {})", others.join(", "))
                }
            )
        }
    }
}

/// One file to fetch: where it goes and what is there already.
struct Target {
    file: api::DataFile,
    path: PathBuf,
    part: PathBuf,
    /// Bytes of the `.part` kept from an earlier pull.
    have: u64,
}

pub(super) async fn pull(ctx: &Ctx, args: PullArgs, o: &mut Output) -> Result {
    let (name, version) = split_target(&args.target).map_err(anyhow::Error::msg)?;
    let version = match version {
        Some(v) => v.to_owned(),
        None => newest_published(ctx, name).await?,
    };
    let files = ctx.client.list_files(name, &version).await?.items;
    for f in &files {
        let part = format!("{}.part", f.path);
        if files.iter().any(|g| g.path == part) {
            bail!(
                "{name}@{version} has both {:?} and {part:?}: pull keeps a partial download of \
                 the first under the second's name and cannot tell them apart",
                f.path
            );
        }
    }
    let dest = &args.dest;
    std::fs::create_dir_all(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    let mut report = PullReport {
        listing: name.to_owned(),
        version: version.clone(),
        dest: dest.display().to_string(),
        files: Vec::with_capacity(files.len()),
        received_bytes: 0,
    };
    let mut targets = Vec::new();
    for file in files {
        let path = place(dest, &file.path)?;
        let part = path.with_file_name(format!(
            "{}.part",
            path.file_name().unwrap_or_default().to_string_lossy()
        ));
        if is_in_place(&path, &file).await? {
            report.files.push(MovedFile {
                path: file.path.clone(),
                size: file.size,
                sha256: file.sha256.clone(),
                status: "present",
                resumed_from: None,
            });
            continue;
        }
        let have = match std::fs::symlink_metadata(&part) {
            Ok(m) if m.is_file() => m.len().min(file.size),
            Ok(_) => bail!("{} is not a regular file: remove it", part.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", part.display())),
        };
        targets.push(Target {
            file,
            path,
            part,
            have,
        });
    }
    let total: u64 = targets.iter().map(|t| t.file.size).sum();
    let progress = bar(!o.is_json(), total, "pull");
    progress.set_position(targets.iter().map(|t| t.have).sum());
    progress.reset_eta();
    let mut before = 0;
    for t in &targets {
        progress.set_message(t.file.path.clone());
        let (got, resumed) = fetch(ctx, name, &version, t, &progress, before).await?;
        report.received_bytes += got;
        before += t.file.size;
        report.files.push(MovedFile {
            path: t.file.path.clone(),
            size: t.file.size,
            sha256: t.file.sha256.clone(),
            status: if resumed { "resumed" } else { "downloaded" },
            resumed_from: resumed.then_some(t.have),
        });
    }
    progress.finish_and_clear();
    report.files.sort_by(|a, b| a.path.cmp(&b.path));
    o.show(&report)
}

/// Whether the file is in place already with the version's digest. A file there with other
/// bytes is not overwritten: pull refuses, naming it.
async fn is_in_place(path: &Path, file: &api::DataFile) -> Result<bool> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        Ok(m) if !m.is_file() => bail!(
            "{} is in the way and is not a regular file: remove it",
            path.display()
        ),
        Ok(m) if m.len() != file.size => {}
        Ok(_) => {
            let (_, sha256) =
                super::local::sha256_file(path.to_path_buf(), ProgressBar::hidden()).await?;
            if sha256 == file.sha256 {
                return Ok(true);
            }
        }
    }
    bail!(
        "{} exists and is not the version's {:?} (SHA-256 {}): move it away, or pull into \
         another directory",
        path.display(),
        file.path,
        file.sha256
    )
}

/// Downloads one file into its `.part` from what is there, verifies the whole, and renames it
/// into place. Returns the bytes downloaded, and whether it went on from the `.part` (not if
/// the exchange sent the whole file again).
async fn fetch(
    ctx: &Ctx,
    name: &str,
    version: &str,
    t: &Target,
    progress: &ProgressBar,
    before: u64,
) -> Result<(u64, bool)> {
    let size = t.file.size;
    // What the .part holds is hashed as it is: the digest goes on from there.
    let mut hasher = Sha256::new();
    let mut have = 0;
    if t.have > 0 {
        let (file, keep) = (open_regular(&t.part)?, t.have);
        let (read, kept) = tokio::task::spawn_blocking(move || {
            let mut h = Sha256::new();
            hash_into(file, Some(keep), &mut h, &ProgressBar::hidden()).map(|n| (n, h))
        })
        .await
        .context("hashing stopped")?
        .with_context(|| format!("cannot read {}", t.part.display()))?;
        (have, hasher) = (read, kept);
    }
    let mut out = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&t.part)
        .await
        .with_context(|| format!("cannot write {}", t.part.display()))?;
    out.set_len(have).await?;
    let (mut got, mut retries, mut restarted) = (0, 0, false);
    while have < size {
        out.seek(std::io::SeekFrom::Start(have)).await?;
        match receive(
            ctx,
            name,
            version,
            t,
            have,
            &mut out,
            &mut hasher,
            progress,
            before,
        )
        .await
        {
            Ok(n) => {
                got += n.bytes;
                restarted |= n.at != have + n.bytes;
                have = n.at;
                if n.at < size {
                    // The body ended early: ask for the rest.
                    retries += 1;
                }
            }
            Err(Failed::Transport(e, n)) => {
                got += n.bytes;
                restarted |= n.at != have + n.bytes;
                have = n.at;
                retries += 1;
                if retries > RETRIES {
                    out.sync_all().await?;
                    return Err(anyhow::Error::new(e).context(format!(
                        "downloading {} stopped at {have} of {size} bytes; run the same pull \
                         again to resume from {}",
                        t.file.path,
                        t.part.display()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(500 * u64::from(retries))).await;
            }
            Err(Failed::Other(e)) => return Err(e),
        }
        if retries > RETRIES {
            bail!(
                "downloading {} stopped at {have} of {size} bytes; run the same pull again",
                t.file.path
            );
        }
    }
    out.sync_all().await?;
    drop(out);
    let sha256 = hex(hasher);
    if sha256 != t.file.sha256 {
        let _ = std::fs::remove_file(&t.part);
        bail!(
            "checksum mismatch for {}: the {size} bytes received have SHA-256 {sha256}, the \
             version lists {}. The partial download {} was deleted and nothing was put in place; \
             run pull again",
            t.file.path,
            t.file.sha256,
            t.part.display()
        );
    }
    std::fs::rename(&t.part, &t.path)
        .with_context(|| format!("cannot rename {} into place", t.part.display()))?;
    if let Some(parent) = t.path.parent() {
        // The rename itself made durable.
        if let Ok(dir) = std::fs::File::open(parent) {
            let _ = dir.sync_all();
        }
    }
    Ok((got, t.have > 0 && !restarted))
}

/// Where a request for bytes left off.
struct Progress {
    /// The bytes in the `.part` now.
    at: u64,
    /// Bytes received by this request.
    bytes: u64,
}

enum Failed {
    /// The connection failed: what was received is kept, and the rest asked for again.
    Transport(ClientError, Progress),
    Other(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failed {
    fn from(e: E) -> Failed {
        Failed::Other(e.into())
    }
}

/// One request for the file's bytes from `have` on, appended to the `.part` and hashed.
#[allow(clippy::too_many_arguments)]
async fn receive(
    ctx: &Ctx,
    name: &str,
    version: &str,
    t: &Target,
    mut have: u64,
    out: &mut tokio::fs::File,
    hasher: &mut Sha256,
    progress: &ProgressBar,
    before: u64,
) -> std::result::Result<Progress, Failed> {
    let size = t.file.size;
    let path = &t.file.path;
    let mut download = match ctx.client.download(name, version, path, have, None).await {
        Ok(d) => d,
        Err(e @ ClientError::Transport(_)) => {
            return Err(Failed::Transport(e, Progress { at: have, bytes: 0 }))
        }
        Err(e) if e.status() == Some(403) => {
            return Err(Failed::Other(anyhow::Error::new(e).context(format!(
                "{name}@{version} is not yours to download; ask for access with `suanli data \
                 request {name}@{version} --accept-licence`"
            ))))
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(etag) = &download.sha256 {
        if etag != &t.file.sha256 {
            return Err(Failed::Other(anyhow::anyhow!(
                "the exchange serves {path} with SHA-256 {etag}, the version lists {}",
                t.file.sha256
            )));
        }
    }
    if download.start != have {
        // The whole file came back instead of the range: start the .part over.
        *hasher = Sha256::new();
        out.set_len(0).await?;
        out.seek(std::io::SeekFrom::Start(0)).await?;
        have = 0;
    }
    let mut bytes = 0;
    loop {
        let chunk = match download.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                out.flush().await?;
                return Err(Failed::Transport(e, Progress { at: have, bytes }));
            }
        };
        let n = chunk.len() as u64;
        if have + n > size {
            return Err(Failed::Other(anyhow::anyhow!(
                "the exchange sent more than the {size} bytes of {path}"
            )));
        }
        out.write_all(&chunk).await?;
        hasher.update(&chunk);
        have += n;
        bytes += n;
        progress.set_position(before + have);
    }
    out.flush().await?;
    Ok(Progress { at: have, bytes })
}
