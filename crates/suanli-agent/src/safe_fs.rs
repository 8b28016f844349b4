//! Reading what a job left behind with the agent's privileges, without letting the job choose what
//! is read.
//!
//! The agent (often root) reads a job's outputs and logs on the job's behalf. Everything below a
//! job's directory is the job's to arrange: it can put a symbolic link at any component of a path,
//! a FIFO where a file is expected, or a hard link to a file it could not otherwise read. So a file
//! is opened from a directory descriptor, one component at a time, never following a symbolic link
//! (`O_NOFOLLOW` on every step), and kept only when it is a regular file with a single link and,
//! where the job runs as its own user, owned by that user. Nothing is resolved by path text, so
//! nothing the job renames between a check and a read changes what is read.

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{fstat, openat, FileType, Mode, OFlags};
use rustix::io::Errno;

/// Why a path below a job's directory was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// A symbolic link at some component of the path.
    Symlink,
    /// Not a regular file or a directory (a FIFO, a socket, a device).
    NotRegular(&'static str),
    /// A regular file with other hard links: it may be another's file.
    Linked,
    /// Owned by another user than the job's.
    NotOwned {
        uid: u32,
    },
    /// The path is absolute or climbs out (`..`).
    Outside,
    Missing,
    Io(String),
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Symlink => f.write_str("a symbolic link in its path (not followed)"),
            Refused::NotRegular(kind) => write!(f, "a {kind}, not a regular file"),
            Refused::Linked => f.write_str("a file with other hard links (it may be another's)"),
            Refused::NotOwned { uid } => {
                write!(f, "owned by uid {uid}, not by the job's user")
            }
            Refused::Outside => f.write_str("outside the job's directory"),
            Refused::Missing => f.write_str("not found"),
            Refused::Io(e) => write!(f, "unreadable: {e}"),
        }
    }
}

fn refusal(e: Errno) -> Refused {
    match e {
        // `O_NOFOLLOW` on a symbolic link: ELOOP; `O_DIRECTORY` on one: ENOTDIR or ELOOP.
        Errno::LOOP | Errno::MLINK => Refused::Symlink,
        Errno::NOENT => Refused::Missing,
        e => Refused::Io(e.to_string()),
    }
}

fn kind_name(t: FileType) -> &'static str {
    match t {
        FileType::Fifo => "FIFO",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Symlink => "symbolic link",
        FileType::Directory => "directory",
        _ => "special file",
    }
}

/// Opens a directory without following a symbolic link at its last component (the caller trusts
/// the path up to it: a job's directory, created by the agent).
pub fn open_dir(path: &Path) -> std::io::Result<OwnedFd> {
    Ok(openat(
        rustix::fs::CWD,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// One step down from `dir`: `name`, not followed if it is a symbolic link.
fn step(dir: impl AsFd, name: &OsStr, directory: bool) -> Result<OwnedFd, Refused> {
    let mut flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
    if directory {
        flags |= OFlags::DIRECTORY;
    } else {
        // Opening a FIFO must not wait for a writer.
        flags |= OFlags::NONBLOCK;
    }
    let dir = dir.as_fd();
    openat(dir, name, flags, Mode::empty()).map_err(|e| match e {
        // `O_DIRECTORY | O_NOFOLLOW` on a symbolic link answers ENOTDIR: say which it was.
        Errno::NOTDIR if directory => {
            match rustix::fs::statat(dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                    Refused::Symlink
                }
                Ok(st) => Refused::NotRegular(kind_name(FileType::from_raw_mode(st.st_mode))),
                Err(e) => refusal(e),
            }
        }
        e => refusal(e),
    })
}

/// The components of a relative path that stays below its root.
fn components(rel: &Path) -> Result<Vec<&OsStr>, Refused> {
    let mut out = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            _ => return Err(Refused::Outside),
        }
    }
    Ok(out)
}

/// What a file's metadata must be for the agent to read it.
fn check_file(fd: &OwnedFd, owner: Option<u32>) -> Result<rustix::fs::Stat, Refused> {
    let st = fstat(fd).map_err(refusal)?;
    let kind = FileType::from_raw_mode(st.st_mode);
    if kind != FileType::RegularFile {
        return Err(Refused::NotRegular(kind_name(kind)));
    }
    if st.st_nlink > 1 {
        return Err(Refused::Linked);
    }
    if let Some(uid) = owner {
        if st.st_uid != uid {
            return Err(Refused::NotOwned { uid: st.st_uid });
        }
    }
    Ok(st)
}

/// A regular file below a job's directory, opened for reading.
#[derive(Debug)]
pub struct Opened {
    pub file: File,
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
}

/// Opens `rel` below the directory `root` for reading: no symbolic link at any component, a
/// regular file with one link, owned by `owner` when given.
pub fn open_beneath(root: &OwnedFd, rel: &Path, owner: Option<u32>) -> Result<Opened, Refused> {
    let parts = components(rel)?;
    let Some((last, dirs)) = parts.split_last() else {
        return Err(Refused::Outside);
    };
    let mut dir: Option<OwnedFd> = None;
    for d in dirs {
        let next = match &dir {
            None => step(root, d, true)?,
            Some(fd) => step(fd, d, true)?,
        };
        dir = Some(next);
    }
    let fd = match &dir {
        None => step(root, last, false)?,
        Some(fd) => step(fd, last, false)?,
    };
    let st = check_file(&fd, owner)?;
    Ok(Opened {
        file: File::from(fd),
        size: st.st_size as u64,
        mode: st.st_mode & 0o777,
    })
}

/// What [`collect_beneath`] found: the files opened, and what was refused with why.
pub type Collected = (Vec<(PathBuf, Opened)>, Vec<(PathBuf, Refused)>);

/// Everything found at `rel` below `root`: the file itself, or every file below the directory,
/// each as [`open_beneath`] would open it. Refused entries are listed with why; at most
/// `max_files` files are opened.
pub fn collect_beneath(
    root: &OwnedFd,
    rel: &Path,
    owner: Option<u32>,
    max_files: usize,
) -> Collected {
    let (mut found, mut refused) = (Vec::new(), Vec::new());
    let parts = match components(rel) {
        Ok(p) if !p.is_empty() => p,
        _ => {
            refused.push((rel.to_owned(), Refused::Outside));
            return (found, refused);
        }
    };
    // Walk to the parent of the last component, then look at what the last one is.
    let mut dir: Option<OwnedFd> = None;
    let mut here = PathBuf::new();
    let (last, dirs) = parts.split_last().expect("not empty");
    for d in dirs {
        here.push(d);
        let next = match &dir {
            None => step(root, d, true),
            Some(fd) => step(fd, d, true),
        };
        match next {
            Ok(fd) => dir = Some(fd),
            Err(e) => {
                refused.push((rel.to_owned(), e));
                return (found, refused);
            }
        }
    }
    let parent = dir.unwrap_or_else(|| root.try_clone().expect("dup the root descriptor"));
    visit(
        &parent,
        last,
        here.join(last),
        owner,
        max_files,
        &mut found,
        &mut refused,
    );
    (found, refused)
}

/// Looks at `name` in `dir`: a directory is descended into, a file opened, anything else refused.
fn visit(
    dir: &OwnedFd,
    name: &OsStr,
    path: PathBuf,
    owner: Option<u32>,
    max_files: usize,
    found: &mut Vec<(PathBuf, Opened)>,
    refused: &mut Vec<(PathBuf, Refused)>,
) {
    if found.len() >= max_files {
        return;
    }
    let kind = match rustix::fs::statat(dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => FileType::from_raw_mode(st.st_mode),
        Err(e) => {
            refused.push((path, refusal(e)));
            return;
        }
    };
    match kind {
        FileType::Directory => {
            let sub = match step(dir, name, true) {
                Ok(fd) => fd,
                Err(e) => {
                    refused.push((path, e));
                    return;
                }
            };
            let entries = match rustix::fs::Dir::read_from(&sub) {
                Ok(d) => d,
                Err(e) => {
                    refused.push((path, refusal(e)));
                    return;
                }
            };
            let mut names: Vec<std::ffi::OsString> = entries
                .filter_map(Result::ok)
                .map(|e| {
                    use std::os::unix::ffi::OsStrExt;
                    OsStr::from_bytes(e.file_name().to_bytes()).to_owned()
                })
                .filter(|n| n != "." && n != "..")
                .collect();
            names.sort();
            for n in names {
                let child = path.join(&n);
                visit(&sub, &n, child, owner, max_files, found, refused);
            }
        }
        FileType::Symlink => refused.push((path, Refused::Symlink)),
        FileType::RegularFile => match step(dir, name, false) {
            Ok(fd) => match check_file(&fd, owner) {
                Ok(st) => found.push((
                    path,
                    Opened {
                        file: File::from(fd),
                        size: st.st_size as u64,
                        mode: st.st_mode & 0o777,
                    },
                )),
                Err(e) => refused.push((path, e)),
            },
            Err(e) => refused.push((path, e)),
        },
        other => refused.push((path, Refused::NotRegular(kind_name(other)))),
    }
}

/// Opens a file the agent keeps in a directory of its own (a log, a status file), refusing a
/// symbolic link or anything but a regular file there.
pub fn open_own_file(path: &Path) -> Result<File, Refused> {
    open_own(path, OFlags::RDONLY)
}

/// [`open_own_file`] for reading and writing (a log whose read part the agent frees on disk);
/// read-only when the agent may not write it (a Slurm job's log, owned by its account, with the
/// agent not root).
pub fn open_own_file_rw(path: &Path) -> Result<File, Refused> {
    open_own(path, OFlags::RDWR)
}

fn open_own(path: &Path, access: OFlags) -> Result<File, Refused> {
    let open = |access: OFlags| {
        openat(
            rustix::fs::CWD,
            path,
            access | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
            Mode::empty(),
        )
    };
    let fd = match open(access) {
        Err(Errno::ACCESS | Errno::PERM | Errno::ROFS) if access == OFlags::RDWR => {
            open(OFlags::RDONLY)
        }
        other => other,
    }
    .map_err(refusal)?;
    let st = fstat(&fd).map_err(refusal)?;
    let kind = FileType::from_raw_mode(st.st_mode);
    if kind != FileType::RegularFile {
        return Err(Refused::NotRegular(kind_name(kind)));
    }
    // Back to blocking reads (the flag only kept a FIFO from blocking the open).
    rustix::fs::fcntl_setfl(&fd, OFlags::empty()).map_err(refusal)?;
    Ok(File::from(fd))
}

/// Reads a small file the agent keeps in a directory of its own, as [`open_own_file`] opens it.
pub fn read_own_file(path: &Path, max_bytes: u64) -> Result<String, Refused> {
    use std::io::Read;
    let file = open_own_file(path)?;
    let mut text = String::new();
    file.take(max_bytes)
        .read_to_string(&mut text)
        .map_err(|e| Refused::Io(e.to_string()))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::unix::fs::symlink;

    use super::*;

    fn tree() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "suanli-safefs-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("job/out/sub")).unwrap();
        std::fs::create_dir_all(dir.join("secret")).unwrap();
        std::fs::write(dir.join("secret/agent.key"), "KEY").unwrap();
        std::fs::write(dir.join("job/out/a.txt"), "a").unwrap();
        std::fs::write(dir.join("job/out/sub/b.txt"), "bb").unwrap();
        dir
    }

    fn read(o: Opened) -> String {
        let mut s = String::new();
        let mut f = o.file;
        f.read_to_string(&mut s).unwrap();
        s
    }

    #[test]
    fn a_job_cannot_make_the_agent_read_through_a_link() {
        let dir = tree();
        let job = dir.join("job");
        // The attack of issue 17: a directory symlink inside the outputs, a file symlink, a
        // hard link, a FIFO.
        symlink(dir.join("secret"), job.join("out/keydir")).unwrap();
        symlink(dir.join("secret/agent.key"), job.join("out/key")).unwrap();
        std::fs::hard_link(dir.join("secret/agent.key"), job.join("out/hard")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            job.join("out/fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let root = open_dir(&job).unwrap();
        assert_eq!(
            read(open_beneath(&root, Path::new("out/a.txt"), None).unwrap()),
            "a"
        );
        for (rel, why) in [
            ("out/keydir/agent.key", Refused::Symlink),
            ("out/key", Refused::Symlink),
            ("out/hard", Refused::Linked),
            ("out/fifo", Refused::NotRegular("FIFO")),
            ("../secret/agent.key", Refused::Outside),
            ("/etc/passwd", Refused::Outside),
            ("out/none", Refused::Missing),
        ] {
            assert_eq!(
                open_beneath(&root, Path::new(rel), None).unwrap_err(),
                why,
                "{rel}"
            );
        }
        let (found, refused) = collect_beneath(&root, Path::new("out"), None, 100);
        let names: Vec<String> = found
            .iter()
            .map(|(p, _)| p.to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["out/a.txt", "out/sub/b.txt"]);
        let refused: Vec<(String, Refused)> = refused
            .into_iter()
            .map(|(p, r)| (p.to_string_lossy().into_owned(), r))
            .collect();
        assert_eq!(
            refused,
            [
                ("out/fifo".to_owned(), Refused::NotRegular("FIFO")),
                ("out/hard".to_owned(), Refused::Linked),
                ("out/key".to_owned(), Refused::Symlink),
                ("out/keydir".to_owned(), Refused::Symlink),
            ]
        );
        // Files of another owner are refused when the job has its own user.
        let me = rustix::process::geteuid().as_raw();
        assert!(open_beneath(&root, Path::new("out/a.txt"), Some(me)).is_ok());
        assert_eq!(
            open_beneath(&root, Path::new("out/a.txt"), Some(me + 1)).unwrap_err(),
            Refused::NotOwned { uid: me }
        );
        // The agent's own files: no symlink there either.
        assert_eq!(read_own_file(&job.join("out/a.txt"), 10).unwrap(), "a");
        assert_eq!(
            read_own_file(&job.join("out/key"), 10).unwrap_err(),
            Refused::Symlink
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
