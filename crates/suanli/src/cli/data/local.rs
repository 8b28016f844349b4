//! The local side of `push` and `pull`: the files of a directory (regular files only, opened
//! without following a link), their SHA-256 computed as they stream from disk, the place of a
//! version's file under a destination that it cannot leave, and the progress bars.

use std::io::{IsTerminal as _, Read as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context as _};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest as _, Sha256};

use crate::cli::Result;

/// A regular file under the directory pushed.
#[derive(Debug, Clone)]
pub(super) struct LocalFile {
    /// Its path under the directory, `/`-separated: its path in the version.
    pub rel: String,
    pub abs: PathBuf,
    pub size: u64,
}

/// Every regular file under `root`, by path. Symbolic links (never followed), other kinds of
/// files, names that are not UTF-8 or not valid in a version, and empty files are refused,
/// each named.
pub(super) fn walk(root: &Path) -> Result<Vec<LocalFile>> {
    let meta =
        std::fs::metadata(root).with_context(|| format!("cannot read {}", root.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", root.display());
    }
    let (mut files, mut links, mut odd, mut empty) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("cannot read {}", dir.display()))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let abs = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                bail!(
                    "{}: the name is not UTF-8; a version's paths are text",
                    abs.display()
                );
            };
            let rel = format!("{prefix}{name}");
            let kind = entry
                .file_type()
                .with_context(|| format!("cannot read {}", abs.display()))?;
            if kind.is_symlink() {
                links.push(abs.display().to_string());
            } else if kind.is_dir() {
                stack.push((abs, format!("{rel}/")));
            } else if kind.is_file() {
                suanli_core::data::file_path(&rel)
                    .map_err(|why| anyhow::anyhow!("{}: the path {rel:?} {why}", abs.display()))?;
                let size = entry
                    .metadata()
                    .with_context(|| format!("cannot read {}", abs.display()))?
                    .len();
                if size == 0 {
                    empty.push(rel.clone());
                }
                files.push(LocalFile { rel, abs, size });
            } else {
                odd.push(abs.display().to_string());
            }
        }
    }
    if !links.is_empty() {
        bail!(
            "push does not follow symbolic links; replace these with the files they point to, \
             or move them out of {}: {}",
            root.display(),
            links.join(", ")
        );
    }
    if !odd.is_empty() {
        bail!("only regular files can be pushed, not: {}", odd.join(", "));
    }
    if !empty.is_empty() {
        bail!(
            "the exchange takes files of at least one byte; these are empty: {}",
            empty.join(", ")
        );
    }
    if files.is_empty() {
        bail!("{} has no files to push", root.display());
    }
    files.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(files)
}

/// Opens `path` for reading, refusing a symbolic link (it is never followed) and anything but a
/// regular file.
pub(super) fn open_regular(path: &Path) -> Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .with_context(|| {
            format!(
                "cannot open {} (symbolic links are refused)",
                path.display()
            )
        })?;
    if !file.metadata()?.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    Ok(file)
}

/// Reads `len` bytes of `file` (all of it with `None`) into `hasher`, advancing `bar`. Returns
/// how many bytes were read. Blocking: call it from `spawn_blocking`.
pub(super) fn hash_into(
    mut file: std::fs::File,
    len: Option<u64>,
    hasher: &mut Sha256,
    bar: &ProgressBar,
) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut read = 0u64;
    loop {
        let want = match len {
            Some(len) => (len - read).min(buf.len() as u64) as usize,
            None => buf.len(),
        };
        if want == 0 {
            return Ok(read);
        }
        let n = file.read(&mut buf[..want])?;
        if n == 0 {
            return Ok(read);
        }
        hasher.update(&buf[..n]);
        read += n as u64;
        bar.inc(n as u64);
    }
}

/// The SHA-256 of a regular file, as 64 lower-case hex digits, and its size.
pub(super) async fn sha256_file(path: PathBuf, bar: ProgressBar) -> Result<(u64, String)> {
    tokio::task::spawn_blocking(move || -> Result<(u64, String)> {
        let file = open_regular(&path)?;
        let mut hasher = Sha256::new();
        let size = hash_into(file, None, &mut hasher, &bar)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Ok((size, hex(hasher)))
    })
    .await
    .context("hashing stopped")?
}

/// A finished digest as 64 lower-case hex digits.
pub(super) fn hex(hasher: Sha256) -> String {
    format!("{:x}", hasher.finalize())
}

/// Where a version's file goes under `dest`: `dest/<path>`. The path is checked to stay inside
/// (relative, no `.`, `..` or empty part: the exchange refuses such paths, and this is checked
/// again), and its directories under `dest` are created, each a real directory: one that is a
/// symbolic link or a file is refused.
pub(super) fn place(dest: &Path, rel: &str) -> Result<PathBuf> {
    suanli_core::data::file_path(rel)
        .map_err(|why| anyhow::anyhow!("refusing the file path {rel:?}: it {why}"))?;
    let path = Path::new(rel);
    if !path.components().all(|c| matches!(c, Component::Normal(_))) {
        bail!(
            "refusing the file path {rel:?}: it would leave {}",
            dest.display()
        );
    }
    let mut at = dest.to_path_buf();
    let parts: Vec<Component> = path.components().collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => bail!(
                "{} is not a directory (a symbolic link or a file): refusing to write {rel:?} \
                 through it",
                at.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir(&at)
                .with_context(|| format!("cannot create {}", at.display()))?,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", at.display())),
        }
    }
    Ok(dest.join(path))
}

/// A bar of bytes moved (rate, ETA) on stderr, or a hidden one with `--json` or when stderr is
/// not a terminal.
pub(super) fn bar(visible: bool, total: u64, prefix: &'static str) -> ProgressBar {
    if !visible || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{prefix} [{bar:30}] {bytes}/{total_bytes}  {binary_bytes_per_sec}  ETA {eta}  {wide_msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(prefix);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "suanli-data-{name}-{}-{}",
            std::process::id(),
            suanli_clock::now_ms()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn walking_takes_regular_files_and_names_the_links() {
        let dir = scratch("walk");
        std::fs::create_dir_all(dir.join("b/c")).unwrap();
        std::fs::write(dir.join("a.txt"), "a").unwrap();
        std::fs::write(dir.join("b/c/d.bin"), "dd").unwrap();
        std::fs::write(dir.join("b/e"), "e").unwrap();
        let files = walk(&dir).unwrap();
        let rels: Vec<&str> = files.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(rels, ["a.txt", "b/c/d.bin", "b/e"]);
        assert_eq!(files[1].size, 2);
        std::os::unix::fs::symlink("/etc/passwd", dir.join("b/link")).unwrap();
        let err = walk(&dir).unwrap_err().to_string();
        assert!(
            err.contains("symbolic links") && err.contains("b/link"),
            "{err}"
        );
        std::fs::remove_file(dir.join("b/link")).unwrap();
        std::fs::write(dir.join("empty"), "").unwrap();
        let err = walk(&dir).unwrap_err().to_string();
        assert!(err.contains("empty: empty"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn places_stay_inside_the_destination() {
        let dir = scratch("place");
        assert_eq!(place(&dir, "x/y/z.bin").unwrap(), dir.join("x/y/z.bin"));
        assert!(dir.join("x/y").is_dir());
        for bad in ["../escape", "/abs", "a/../../b", "a//b", "./a", "a\\b"] {
            assert!(place(&dir, bad).is_err(), "{bad:?}");
        }
        std::os::unix::fs::symlink("/tmp", dir.join("out")).unwrap();
        let err = place(&dir, "out/f").unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn files_hash_as_they_stream() {
        let dir = scratch("hash");
        let path = dir.join("f");
        std::fs::write(&path, b"abc").unwrap();
        let (size, sha) = sha256_file(path.clone(), ProgressBar::hidden())
            .await
            .unwrap();
        assert_eq!(size, 3);
        assert_eq!(
            sha,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        std::os::unix::fs::symlink(&path, dir.join("l")).unwrap();
        assert!(open_regular(&dir.join("l")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// A file a push or a pull moved, as its report shows it.
#[derive(Debug, serde::Serialize)]
pub(super) struct MovedFile {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    /// `uploaded` or `downloaded`, `resumed` (from `resumed_from` bytes), or `present` (in place
    /// and verified before this run).
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_from: Option<u64>,
}

/// The report's table of `files`: path, size, the digest's first digits, what became of it.
pub(super) fn file_rows(files: &[MovedFile]) -> Vec<Vec<String>> {
    use super::Bytes;
    files
        .iter()
        .map(|f| {
            vec![
                f.path.clone(),
                Bytes(f.size).to_string(),
                f.sha256[..12].to_owned(),
                match f.resumed_from {
                    Some(at) => format!("resumed from {}", Bytes(at)),
                    None => f.status.to_owned(),
                },
            ]
        })
        .collect()
}
