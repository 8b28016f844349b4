//! A version's files: declared (path, size, SHA-256) in a draft, their bytes received in parts,
//! then verified against what was declared. The bytes themselves are in the object store; the
//! store keeps where (`object_prefix`), how far an upload got, and the object store's opaque
//! state of the digest so far, so that an upload resumes where it stopped.

use super::*;
use suanli_core::decide::data::VersionLimits;

/// A file declared in a draft: its bytes follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFile {
    pub path: String,
    pub size: u64,
    /// 64 lower-case hex digits.
    pub sha256: String,
}

/// A part of a file's bytes, received and stored in the object store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadPart {
    /// The bytes received before this part, as the uploader read them: the part is recorded only
    /// if no other upload of the file moved on meanwhile.
    pub expected_received_bytes: u64,
    /// The part's length (at least one byte).
    pub bytes: u64,
    /// The object store's state of the SHA-256 over every byte received so far, this part's
    /// included (opaque here).
    pub hash_state: String,
}

/// A file of a version, with its upload's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRow {
    pub version_id: String,
    pub path: String,
    pub size: u64,
    pub sha256: String,
    /// Its bytes were received and matched the declared size and digest.
    pub verified: bool,
    pub received_bytes: u64,
    pub parts: u64,
    /// The object store's state of the digest of the bytes received (`None` before the first
    /// part and once verified).
    pub hash_state: Option<String>,
    /// Where the object store keeps the file's bytes: the file's key there (one path segment,
    /// `file_` and hex digits), under which its parts are stored and no other file's are.
    pub object_prefix: String,
    pub created_ms: i64,
    pub verified_ms: Option<i64>,
}

const FILE_COLS: &str = "version_id, path, size_bytes, sha256, verified, received_bytes, parts, \
    hash_state, object_prefix, created_ms, verified_ms";

fn file_row(r: &Row) -> Result<FileRow, StoreError> {
    Ok(FileRow {
        version_id: r.str(0)?,
        path: r.str(1)?,
        size: r.u64(2)?,
        sha256: r.str(3)?,
        verified: r.i64(4)? != 0,
        received_bytes: r.u64(5)?,
        parts: r.u64(6)?,
        hash_state: r.opt_str(7)?,
        object_prefix: r.str(8)?,
        created_ms: r.i64(9)?,
        verified_ms: r.opt_i64(10)?,
    })
}

impl Tx<'_> {
    fn file_of(&mut self, version_id: &str, path: &str) -> Result<FileRow, StoreError> {
        let rows = self.b.query(
            &format!("SELECT {FILE_COLS} FROM data_files WHERE version_id = $1 AND path = $2"),
            &[version_id.into(), path.into()],
        )?;
        rows.first()
            .map(file_row)
            .transpose()?
            .ok_or(StoreError::NotFound("file"))
    }

    /// The version of the file at `path`, once the core found that `actor` may upload to it:
    /// the owner, to a draft, a declared file. [`rules::decide_upload`] is asked with the file's
    /// own declared size and digest, which it accepts; a refusal is one of those rules.
    fn upload_target(
        &mut self,
        actor: &str,
        listing: &str,
        label: &str,
        path: &str,
    ) -> Result<VersionRow, StoreError> {
        let (l, v) = self.listing_and_version(actor, listing, label)?;
        let snapshot = self.version_snapshot(&l.org_id, &v.id, Some(path))?;
        let (size, sha256) = snapshot
            .files
            .first()
            .map_or((0, String::new()), |f| (f.size, f.sha256.clone()));
        rules::decide_upload(&snapshot, actor, path, size, &sha256)?;
        Ok(v)
    }

    /// A file `actor` may send bytes of now (its owner, to a draft, a declared file), with its
    /// upload's progress: asked before any byte is stored.
    pub fn file_to_upload(
        &mut self,
        actor: &str,
        listing: &str,
        label: &str,
        path: &str,
    ) -> Result<FileRow, StoreError> {
        let v = self.upload_target(actor, listing, label, path)?;
        self.file_of(&v.id, path)
    }

    /// Declares a file of a draft, as [`rules::decide_add_file`] decides (the owner's draft; a
    /// path inside the version, new to it and neither a file's directory nor under a file; a
    /// SHA-256; within `limits`). Its bytes are then uploaded under its `object_prefix`, a key
    /// made for it.
    pub fn add_file(
        &mut self,
        actor: &str,
        listing: &str,
        label: &str,
        file: &NewFile,
        limits: &VersionLimits,
        now_ms: i64,
    ) -> Result<FileRow, StoreError> {
        let (l, v) = self.listing_and_version(actor, listing, label)?;
        self.lock_version(&v.id)?;
        let snapshot = self.version_snapshot(&l.org_id, &v.id, None)?;
        let facts = FileFacts {
            path: file.path.clone(),
            size: file.size,
            sha256: file.sha256.clone(),
            verified: false,
        };
        rules::decide_add_file(&snapshot, actor, &facts, limits)?;
        // One path segment of ASCII letters, digits and `_`, new to the exchange: what the
        // object store takes as a file's key (`suanli_objects::FileKey`).
        let prefix = new_id("file");
        let inserted = self.b.execute(
            &format!(
                "INSERT INTO data_files ({FILE_COLS}) \
                 VALUES ($1, $2, $3, $4, 0, 0, 0, NULL, $5, $6, NULL)"
            ),
            &[
                (&v.id).into(),
                (&file.path).into(),
                int(file.size)?,
                (&file.sha256).into(),
                prefix.into(),
                now_ms.into(),
            ],
        );
        match inserted {
            Err(StoreError::Conflict(_)) => {
                return Err(StoreError::Duplicate {
                    field: "path",
                    message: format!("the version has a file {:?} already", file.path),
                })
            }
            other => other?,
        };
        self.file_of(&v.id, &file.path)
    }

    /// Records a part of a file's bytes received into the object store: only if the upload is
    /// where the uploader read it (`expected_received_bytes`: of two concurrent uploads of one
    /// file, one wins and the other is [`StoreError::Conflict`]), the file is not verified, and
    /// the bytes stay within its declared size. Keeps the object store's new digest state.
    pub fn record_upload_part(
        &mut self,
        actor: &str,
        listing: &str,
        label: &str,
        path: &str,
        part: &UploadPart,
    ) -> Result<FileRow, StoreError> {
        let v = self.upload_target(actor, listing, label, path)?;
        if part.bytes == 0 {
            return Err(StoreError::invalid(
                "bytes",
                "a part carries at least one byte",
            ));
        }
        let n = self.b.execute(
            "UPDATE data_files SET received_bytes = received_bytes + $4, parts = parts + 1, \
             hash_state = $5 WHERE version_id = $1 AND path = $2 AND received_bytes = $3 \
             AND verified = 0 AND received_bytes + $4 <= size_bytes",
            &[
                (&v.id).into(),
                path.into(),
                int(part.expected_received_bytes)?,
                int(part.bytes)?,
                (&part.hash_state).into(),
            ],
        )?;
        let file = self.file_of(&v.id, path)?;
        if n == 1 {
            return Ok(file);
        }
        Err(if file.verified {
            StoreError::Forbidden(format!(
                "{path:?} was received and verified already; nothing more is taken"
            ))
        } else if file.received_bytes != part.expected_received_bytes {
            StoreError::Conflict(format!(
                "{} bytes of {path:?} were received, not {}: another upload of the file moved on; \
                 resume from {}",
                file.received_bytes, part.expected_received_bytes, file.received_bytes
            ))
        } else {
            StoreError::invalid(
                "size",
                format!(
                    "{path:?} was declared with {} bytes; {} received and {} more would pass it",
                    file.size, file.received_bytes, part.bytes
                ),
            )
        })
    }

    /// Starts a file's upload again from its first byte (after a verification refused what was
    /// received, or to abandon a half-done upload): the owner's draft, a file not yet verified.
    pub fn restart_upload(
        &mut self,
        actor: &str,
        listing: &str,
        label: &str,
        path: &str,
    ) -> Result<FileRow, StoreError> {
        let v = self.upload_target(actor, listing, label, path)?;
        let n = self.b.execute(
            "UPDATE data_files SET received_bytes = 0, parts = 0, hash_state = NULL \
             WHERE version_id = $1 AND path = $2 AND verified = 0",
            &[(&v.id).into(), path.into()],
        )?;
        if n != 1 {
            return Err(StoreError::Forbidden(format!(
                "{path:?} was received and verified already"
            )));
        }
        self.file_of(&v.id, path)
    }

    /// Marks a file verified once its bytes are in the object store, as [`rules::decide_upload`]
    /// decides: what was received (`received_size` bytes with digest `received_sha256`, as the
    /// object store measured them) is exactly what was declared. The digest state is then
    /// dropped. Verifying a verified file again with the same bytes changes nothing.
    #[allow(clippy::too_many_arguments)]
    pub fn verify_file(
        &mut self,
        actor: &str,
        listing: &str,
        label: &str,
        path: &str,
        received_size: u64,
        received_sha256: &str,
        now_ms: i64,
    ) -> Result<FileRow, StoreError> {
        let (l, v) = self.listing_and_version(actor, listing, label)?;
        let snapshot = self.version_snapshot(&l.org_id, &v.id, Some(path))?;
        rules::decide_upload(&snapshot, actor, path, received_size, received_sha256)?;
        self.b.execute(
            "UPDATE data_files SET verified = 1, verified_ms = $3, received_bytes = size_bytes, \
             hash_state = NULL WHERE version_id = $1 AND path = $2 AND verified = 0",
            &[(&v.id).into(), path.into(), now_ms.into()],
        )?;
        self.file_of(&v.id, path)
    }

    /// The files of version `label` of `listing` as `viewer` sees them (a draft's only to its
    /// owner), by path.
    pub fn list_files(
        &mut self,
        viewer: &str,
        listing: &str,
        label: &str,
    ) -> Result<Vec<FileRow>, StoreError> {
        let v = self.get_version(viewer, listing, label)?;
        let rows = self.b.query(
            &format!("SELECT {FILE_COLS} FROM data_files WHERE version_id = $1 ORDER BY path"),
            &[(&v.id).into()],
        )?;
        rows.iter().map(file_row).collect()
    }

    /// One file of version `label` of `listing` as `viewer` sees it.
    pub fn get_file(
        &mut self,
        viewer: &str,
        listing: &str,
        label: &str,
        path: &str,
    ) -> Result<FileRow, StoreError> {
        let v = self.get_version(viewer, listing, label)?;
        self.file_of(&v.id, path)
    }
}
