//! Data products: who may list a dataset or a model, how versions are built and published, how
//! access is bought (at once, or held until the owner decides), and who may use which version
//! when. The vocabulary and field rules are in [`crate::data`].

mod access;

pub use access::*;

use super::{OrgKind, Refusal};
use crate::data::{self, AccessMode, Gating, Licence, ListingKind, ModelInfo, Price};
use crate::validate;

/// The longest description, per language.
pub const MAX_DESCRIPTION: usize = 8 * 1024;
/// The longest card (Markdown).
pub const MAX_CARD: usize = 256 * 1024;
/// The most tags a listing carries.
pub const MAX_TAGS: usize = 16;
/// How long a request for manual approval waits by default before its hold is voided: 7 days.
pub const DEFAULT_APPROVAL_TIMEOUT_MS: i64 = 7 * 86_400_000;

/// Who asks to list data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publisher {
    pub org_id: String,
    pub kind: OrgKind,
    /// Admitted by the operator as a data provider (any org may be; providers are).
    pub data_provider: bool,
}

/// A listing as its provider sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewListing {
    pub name: String,
    pub kind: ListingKind,
    pub title_zh: String,
    pub title_en: String,
    pub description_zh: String,
    pub description_en: String,
    pub tags: Vec<String>,
    pub card: String,
    pub licence: Licence,
    pub access: AccessMode,
    pub gating: Gating,
    pub price: Price,
    pub model: Option<ModelInfo>,
}

/// Decides listing `l` for `publisher`: every field checked, normalised as stored. `name_taken`:
/// another listing has the name already.
pub fn decide_listing(
    publisher: &Publisher,
    l: &NewListing,
    name_taken: bool,
) -> Result<NewListing, Refusal> {
    if publisher.kind != OrgKind::Provider && !publisher.data_provider {
        return Err(Refusal::Forbidden(
            "only providers and orgs the operator admitted as data providers list data".into(),
        ));
    }
    data::listing_name(&l.name).map_err(|why| Refusal::invalid("name", why))?;
    if name_taken {
        return Err(Refusal::Duplicate {
            field: "name",
            message: format!("a listing named {:?} exists already", l.name),
        });
    }
    let title = |field, v: &str| -> Result<String, Refusal> {
        if v.trim().is_empty() {
            return Ok(String::new());
        }
        validate::name(v).map_err(|why| Refusal::invalid(field, why))
    };
    let title_zh = title("title_zh", &l.title_zh)?;
    let title_en = title("title_en", &l.title_en)?;
    if title_zh.is_empty() && title_en.is_empty() {
        return Err(Refusal::invalid(
            "title_zh",
            "a listing needs a title in Chinese or English (or both)",
        ));
    }
    let long =
        |field, v: &str, max| data::long_text(v, max).map_err(|why| Refusal::invalid(field, why));
    let description_zh = long("description_zh", &l.description_zh, MAX_DESCRIPTION)?;
    let description_en = long("description_en", &l.description_en, MAX_DESCRIPTION)?;
    let card = long("card", &l.card, MAX_CARD)?;
    if l.tags.len() > MAX_TAGS {
        return Err(Refusal::invalid("tags", "at most 16 tags"));
    }
    let mut tags = Vec::with_capacity(l.tags.len());
    for t in &l.tags {
        let tag = validate::name(t).map_err(|why| Refusal::invalid("tags", why))?;
        if tag.chars().count() > 32 {
            return Err(Refusal::invalid("tags", "a tag is at most 32 characters"));
        }
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    let licence = l
        .licence
        .clone()
        .validated()
        .map_err(|(field, why)| Refusal::Invalid {
            field,
            message: why,
        })?;
    let price = l
        .price
        .validated()
        .map_err(|(field, why)| Refusal::invalid(field, why))?;
    let model = match (l.kind, &l.model) {
        (ListingKind::Dataset, Some(_)) => {
            return Err(Refusal::invalid(
                "model",
                "only a model listing describes a model",
            ))
        }
        (ListingKind::Dataset, None) => None,
        (ListingKind::Model, None) => {
            return Err(Refusal::invalid(
                "model",
                "a model listing says its framework, format and parameter count",
            ))
        }
        (ListingKind::Model, Some(m)) => {
            validate::slug(&m.framework).map_err(|why| Refusal::invalid("framework", why))?;
            validate::slug(&m.format).map_err(|why| Refusal::invalid("format", why))?;
            if m.parameters == 0 {
                return Err(Refusal::invalid("parameters", "must be more than 0"));
            }
            Some(ModelInfo {
                framework: m.framework.to_ascii_lowercase(),
                format: m.format.to_ascii_lowercase(),
                parameters: m.parameters,
            })
        }
    };
    Ok(NewListing {
        name: l.name.clone(),
        kind: l.kind,
        title_zh,
        title_en,
        description_zh,
        description_en,
        tags,
        card,
        licence,
        access: l.access,
        gating: l.gating,
        price,
        model,
    })
}

/// A version's life: files are added to a draft, which is published once every file is
/// uploaded and verified; a published version never changes, and may be deprecated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VersionState {
    Draft,
    Published,
    Deprecated,
}

impl VersionState {
    pub fn as_str(self) -> &'static str {
        match self {
            VersionState::Draft => "draft",
            VersionState::Published => "published",
            VersionState::Deprecated => "deprecated",
        }
    }

    pub fn parse(s: &str) -> Option<VersionState> {
        match s {
            "draft" => Some(VersionState::Draft),
            "published" => Some(VersionState::Published),
            "deprecated" => Some(VersionState::Deprecated),
            _ => None,
        }
    }

    /// Whether buyers see it (a draft is its owner's alone).
    pub fn visible(self) -> bool {
        self != VersionState::Draft
    }
}

/// The exchange's limits on what a version holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionLimits {
    pub max_file_bytes: u64,
    pub max_files: usize,
    pub max_version_bytes: u64,
}

impl Default for VersionLimits {
    /// 64 GiB a file, 10,000 files and 1 TiB a version.
    fn default() -> Self {
        VersionLimits {
            max_file_bytes: 64 << 30,
            max_files: 10_000,
            max_version_bytes: 1 << 40,
        }
    }
}

/// A file of a version as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFacts {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    /// Whether its bytes were received and matched its size and digest.
    pub verified: bool,
}

/// What a command on a version needs of it. `owner_org_id` is its listing's provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionSnapshot {
    pub owner_org_id: String,
    pub state: VersionState,
    pub files: Vec<FileFacts>,
}

/// Decides a new version `label` of a listing owned by `owner` for `actor`; `label_taken`: the
/// listing has a version so labelled (a draft included: labels are never reused).
pub fn decide_new_version(
    owner_org_id: &str,
    actor: &str,
    label: &str,
    label_taken: bool,
) -> Result<(), Refusal> {
    if actor != owner_org_id {
        return Err(Refusal::NotFound("listing"));
    }
    data::version_label(label).map_err(|why| Refusal::invalid("version", why))?;
    if label_taken {
        return Err(Refusal::Duplicate {
            field: "version",
            message: format!(
                "version {label:?} exists already; versions never change, publish a new one"
            ),
        });
    }
    Ok(())
}

/// The refusal for anything but the owner touching a draft, and for changing what is published.
fn owned_draft(v: &VersionSnapshot, actor: &str) -> Result<(), Refusal> {
    if actor != v.owner_org_id {
        return Err(Refusal::NotFound("version"));
    }
    if v.state != VersionState::Draft {
        return Err(Refusal::Forbidden(format!(
            "the version is {}: a published version never changes; publish a new one",
            v.state.as_str()
        )));
    }
    Ok(())
}

/// Decides declaring a file in a draft: its path, size and SHA-256. The bytes follow; the
/// version is published only when every file's bytes matched.
pub fn decide_add_file(
    v: &VersionSnapshot,
    actor: &str,
    file: &FileFacts,
    limits: &VersionLimits,
) -> Result<(), Refusal> {
    owned_draft(v, actor)?;
    data::file_path(&file.path).map_err(|why| Refusal::invalid("path", why))?;
    data::sha256_hex(&file.sha256).map_err(|why| Refusal::invalid("sha256", why))?;
    if v.files.iter().any(|f| f.path == file.path) {
        return Err(Refusal::Duplicate {
            field: "path",
            message: format!("the version has a file {:?} already", file.path),
        });
    }
    // A file and a directory of the same name cannot both be (`a` and `a/b`).
    let clash = v.files.iter().find(|f| {
        f.path.starts_with(&format!("{}/", file.path))
            || file.path.starts_with(&format!("{}/", f.path))
    });
    if let Some(other) = clash {
        return Err(Refusal::invalid(
            "path",
            format!(
                "{:?} is both a file and a directory with {:?}",
                file.path, other.path
            ),
        ));
    }
    if file.size > limits.max_file_bytes {
        return Err(Refusal::invalid(
            "size",
            format!("a file is at most {} bytes here", limits.max_file_bytes),
        ));
    }
    if v.files.len() >= limits.max_files {
        return Err(Refusal::invalid(
            "path",
            format!("a version holds at most {} files", limits.max_files),
        ));
    }
    let total = v
        .files
        .iter()
        .map(|f| f.size)
        .sum::<u64>()
        .saturating_add(file.size);
    if total > limits.max_version_bytes {
        return Err(Refusal::invalid(
            "size",
            format!("a version holds at most {} bytes", limits.max_version_bytes),
        ));
    }
    Ok(())
}

/// Decides the bytes received for a declared file: they are kept only if their size and digest
/// are the declared ones.
pub fn decide_upload(
    v: &VersionSnapshot,
    actor: &str,
    path: &str,
    received_size: u64,
    received_sha256: &str,
) -> Result<(), Refusal> {
    owned_draft(v, actor)?;
    let file = v
        .files
        .iter()
        .find(|f| f.path == path)
        .ok_or(Refusal::NotFound("file"))?;
    if received_size != file.size {
        return Err(Refusal::invalid(
            "size",
            format!(
                "{received_size} bytes received for {path:?}, {} declared; nothing was kept",
                file.size
            ),
        ));
    }
    if received_sha256 != file.sha256 {
        return Err(Refusal::invalid(
            "sha256",
            format!(
                "the bytes received for {path:?} have SHA-256 {received_sha256}, {} was declared; \
                 nothing was kept",
                file.sha256
            ),
        ));
    }
    Ok(())
}

/// Decides a part of a file's bytes, sent at `offset` with `length` bytes (before any is
/// stored): the file is not complete yet, the part starts where the bytes received so far end
/// (an upload resumes there), fits in what the file has left, and, unless it is the last, is a
/// multiple of 64 bytes (the digest goes on from one part to the next in whole blocks).
pub fn decide_part(
    size: u64,
    received: u64,
    verified: bool,
    offset: u64,
    length: u64,
) -> Result<(), Refusal> {
    if verified || received >= size {
        return Err(Refusal::Forbidden(
            "the file is uploaded and verified already".into(),
        ));
    }
    if offset != received {
        return Err(Refusal::invalid(
            "offset",
            format!("the exchange has {received} bytes of this file: send the part at offset {received}"),
        ));
    }
    if length == 0 {
        return Err(Refusal::invalid("body", "a part has at least one byte"));
    }
    let left = size - received;
    if length > left {
        return Err(Refusal::invalid(
            "body",
            format!("the part has {length} bytes, the file {left} left of its declared {size}"),
        ));
    }
    if length < left && !length.is_multiple_of(64) {
        return Err(Refusal::invalid(
            "body",
            "every part but the last is a multiple of 64 bytes",
        ));
    }
    Ok(())
}

/// Decides publishing a draft: it has files, and every one of them was uploaded and verified.
pub fn decide_publish(v: &VersionSnapshot, actor: &str) -> Result<(), Refusal> {
    owned_draft(v, actor)?;
    if v.files.is_empty() {
        return Err(Refusal::invalid(
            "files",
            "a version needs at least one file",
        ));
    }
    let missing: Vec<&str> = v
        .files
        .iter()
        .filter(|f| !f.verified)
        .map(|f| f.path.as_str())
        .collect();
    if !missing.is_empty() {
        let shown: Vec<&str> = missing.iter().take(5).copied().collect();
        return Err(Refusal::invalid(
            "files",
            format!(
                "{} file(s) not uploaded yet: {}{}",
                missing.len(),
                shown.join(", "),
                if missing.len() > 5 { ", …" } else { "" }
            ),
        ));
    }
    Ok(())
}

/// Decides deprecating a published version: buyers are told to move on; it stays usable by
/// those entitled to it.
pub fn decide_deprecate(v: &VersionSnapshot, actor: &str) -> Result<(), Refusal> {
    if actor != v.owner_org_id {
        return Err(Refusal::NotFound("version"));
    }
    match v.state {
        VersionState::Published => Ok(()),
        VersionState::Draft => Err(Refusal::Forbidden(
            "a draft is not published; there is nothing to deprecate".into(),
        )),
        VersionState::Deprecated => Err(Refusal::Forbidden(
            "the version is deprecated already".into(),
        )),
    }
}

#[cfg(test)]
mod tests;
