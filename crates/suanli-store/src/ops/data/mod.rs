//! Data products, datasets and AI models: data providers, listings and versions (here), a
//! version's files and their uploads ([`files`]), access requests and entitlements ([`access`]).
//! Each command loads its snapshot, has [`suanli_core::decide::data`] decide, and applies the
//! plan with conditional updates.
//!
//! Tenants: a listing is shown to other orgs once one of its versions is published (or
//! deprecated), and a draft version only to its listing's owner; to everyone else both answer
//! exactly as missing ones do ([`StoreError::NotFound`] of `listing` or `version`).
//!
//! Commands that read a version's files and then change them or its state first lock the
//! version's row (a no-op `UPDATE`, which locks on PostgreSQL and needs the write lock SQLite's
//! writer holds anyway), so that what they decided on cannot change before they commit, also when
//! several exchange processes share one PostgreSQL.

use super::*;
use suanli_core::data::{AccessMode, Gating, Licence, ListingKind, ModelInfo, Price};
use suanli_core::decide::data::{
    self as rules, FileFacts, NewListing, Publisher, VersionSnapshot, VersionState,
};

mod access;
mod files;

pub use access::{AccessOutcome, AccessRequest, AccessRequestRow, EntitlementRow};
pub use files::{FileRow, NewFile, UploadPart};

/// A listing as stored, with whether other orgs see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListingRow {
    pub id: String,
    /// The owner: the data provider that listed it.
    pub org_id: String,
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
    /// A model's framework, format and parameter count; `None` for a dataset.
    pub model: Option<ModelInfo>,
    /// The exchange's fee when the listing was made, in basis points: what every sale of it pays.
    pub fee_bps: u32,
    pub created_ms: i64,
    /// One of its versions is published or deprecated: other orgs see it.
    pub visible: bool,
}

/// A version of a listing, with how many files and bytes it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRow {
    pub id: String,
    pub listing_id: String,
    pub label: String,
    pub state: VersionState,
    pub created_ms: i64,
    pub published_ms: Option<i64>,
    pub deprecated_ms: Option<i64>,
    pub files: u64,
    pub bytes: u64,
}

const LISTING_COLS: &str = "l.id, l.org_id, l.name, l.kind, l.title_zh, l.title_en, \
    l.description_zh, l.description_en, l.tags, l.card, l.licence, l.access_mode, l.gating, \
    l.price_kind, l.price_micros, l.period_days, l.model_framework, l.model_format, \
    l.model_parameters, l.fee_bps, l.created_ms, \
    CASE WHEN EXISTS (SELECT 1 FROM data_versions s WHERE s.listing_id = l.id \
    AND s.state <> 'draft') THEN 1 ELSE 0 END";

const VERSION_COLS: &str = "v.id, v.listing_id, v.label, v.state, v.created_ms, v.published_ms, \
    v.deprecated_ms, (SELECT COUNT(*) FROM data_files f WHERE f.version_id = v.id), \
    (SELECT CAST(COALESCE(SUM(f.size_bytes), 0) AS BIGINT) FROM data_files f \
    WHERE f.version_id = v.id)";

/// How a price is stored: its kind, amount and period.
pub(super) fn price_columns(p: Price) -> (&'static str, u64, Option<i64>) {
    match p {
        Price::Free => ("free", 0, None),
        Price::PerVersion { micros } => ("per-version", micros, None),
        Price::PerPeriod { micros, days } => ("per-period", micros, Some(i64::from(days))),
    }
}

/// A price from its kind, amount and period columns starting at `at`; anything else is corrupt.
pub(super) fn price_at(r: &Row, at: usize) -> Result<Price, StoreError> {
    let kind = r.str(at)?;
    let micros = r.u64(at + 1)?;
    let days = r.opt_u64(at + 2)?;
    let price = match (kind.as_str(), days) {
        ("free", None) if micros == 0 => Price::Free,
        ("per-version", None) => Price::PerVersion { micros },
        ("per-period", Some(days)) => Price::PerPeriod {
            micros,
            days: u32::try_from(days).map_err(|_| corrupt_price(&kind))?,
        },
        _ => return Err(corrupt_price(&kind)),
    };
    price.validated().map_err(|_| corrupt_price(&kind))
}

fn corrupt_price(kind: &str) -> StoreError {
    StoreError::Corrupt(format!("a stored {kind:?} price does not decode"))
}

fn listing_row(r: &Row) -> Result<ListingRow, StoreError> {
    let tags: Vec<String> = serde_json::from_str(&r.str(8)?)
        .map_err(|e| StoreError::Corrupt(format!("a listing's tags do not decode: {e}")))?;
    let licence = r.parsed(10, Licence::decode)?;
    let model = match (r.opt_str(16)?, r.opt_str(17)?, r.opt_u64(18)?) {
        (None, None, None) => None,
        (Some(framework), Some(format), Some(parameters)) => Some(ModelInfo {
            framework,
            format,
            parameters,
        }),
        _ => {
            return Err(StoreError::Corrupt(
                "a listing's model is described in part".into(),
            ))
        }
    };
    Ok(ListingRow {
        id: r.str(0)?,
        org_id: r.str(1)?,
        name: r.str(2)?,
        kind: r.parsed(3, ListingKind::parse)?,
        title_zh: r.str(4)?,
        title_en: r.str(5)?,
        description_zh: r.str(6)?,
        description_en: r.str(7)?,
        tags,
        card: r.str(9)?,
        licence,
        access: r.parsed(11, AccessMode::parse)?,
        gating: r.parsed(12, Gating::parse)?,
        price: price_at(r, 13)?,
        model,
        fee_bps: r.u32(19)?,
        created_ms: r.i64(20)?,
        visible: r.i64(21)? != 0,
    })
}

fn version_row(r: &Row) -> Result<VersionRow, StoreError> {
    Ok(VersionRow {
        id: r.str(0)?,
        listing_id: r.str(1)?,
        label: r.str(2)?,
        state: r.parsed(3, VersionState::parse)?,
        created_ms: r.i64(4)?,
        published_ms: r.opt_i64(5)?,
        deprecated_ms: r.opt_i64(6)?,
        files: r.u64(7)?,
        bytes: r.u64(8)?,
    })
}

impl Tx<'_> {
    // ---------------------------------------------------------------- data providers

    /// Admits (`true`) or no longer admits (`false`) an org as a data provider, which lets an org
    /// that is not a provider list data; the operator's call. Listings it made stay as they are.
    /// An org that does not exist is [`StoreError::NotFound`].
    pub fn set_data_provider(&mut self, org_id: &str, admitted: bool) -> Result<(), StoreError> {
        let n = self.b.execute(
            "UPDATE orgs SET data_provider = $2 WHERE id = $1",
            &[org_id.into(), i64::from(admitted).into()],
        )?;
        if n != 1 {
            return Err(StoreError::NotFound("org"));
        }
        Ok(())
    }

    /// Whether the operator admitted `org_id` as a data provider ([`StoreError::NotFound`] for
    /// no such org).
    pub fn is_data_provider(&mut self, org_id: &str) -> Result<bool, StoreError> {
        let rows = self.b.query(
            "SELECT data_provider FROM orgs WHERE id = $1",
            &[org_id.into()],
        )?;
        let row = rows.first().ok_or(StoreError::NotFound("org"))?;
        Ok(row.i64(0)? != 0)
    }

    // ---------------------------------------------------------------- listings

    /// Lists data for `org_id` as [`rules::decide_listing`] decides (a provider, or an org the
    /// operator admitted; every field checked and normalised; the name unique on the exchange),
    /// with the exchange's fee now (`fee_bps`), which every sale of the listing pays. The listing
    /// has no version yet: no other org sees it until one is published.
    pub fn create_listing(
        &mut self,
        org_id: &str,
        listing: &NewListing,
        fee_bps: u32,
        now_ms: i64,
    ) -> Result<ListingRow, StoreError> {
        let org = self.get_org(org_id)?;
        let publisher = Publisher {
            org_id: org.id.clone(),
            kind: org.kind,
            data_provider: self.is_data_provider(org_id)?,
        };
        let taken = self.listing_by_name(&listing.name)?.is_some();
        let l = rules::decide_listing(&publisher, listing, taken)?;
        let id = new_id("listing");
        let tags = serde_json::to_string(&l.tags)
            .map_err(|e| StoreError::Database(format!("encode tags: {e}")))?;
        let (price_kind, price_micros, period_days) = price_columns(l.price);
        let parameters = match &l.model {
            Some(m) => Some(i64::try_from(m.parameters).map_err(|_| {
                StoreError::invalid("parameters", "must be at most 9223372036854775807")
            })?),
            None => None,
        };
        let inserted = self.b.execute(
            "INSERT INTO data_listings (id, org_id, name, kind, title_zh, title_en, \
             description_zh, description_en, tags, card, licence, access_mode, gating, price_kind, \
             price_micros, period_days, model_framework, model_format, model_parameters, fee_bps, \
             created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
             $16, $17, $18, $19, $20, $21)",
            &[
                (&id).into(),
                org_id.into(),
                (&l.name).into(),
                l.kind.as_str().into(),
                (&l.title_zh).into(),
                (&l.title_en).into(),
                (&l.description_zh).into(),
                (&l.description_en).into(),
                tags.into(),
                (&l.card).into(),
                l.licence.encode().into(),
                l.access.as_str().into(),
                l.gating.as_str().into(),
                price_kind.into(),
                int(price_micros)?,
                period_days.into(),
                l.model.as_ref().map(|m| m.framework.clone()).into(),
                l.model.as_ref().map(|m| m.format.clone()).into(),
                parameters.into(),
                i64::from(fee_bps).into(),
                now_ms.into(),
            ],
        );
        match inserted {
            // Another exchange process listed the name first: the unique index is the backstop.
            Err(StoreError::Conflict(_)) => {
                return Err(StoreError::Duplicate {
                    field: "name",
                    message: format!("a listing named {:?} exists already", l.name),
                })
            }
            other => other?,
        };
        self.listing_by_id(&id)
    }

    /// The listing named `name`, whoever may see it.
    pub(super) fn listing_by_name(&mut self, name: &str) -> Result<Option<ListingRow>, StoreError> {
        let rows = self.b.query(
            &format!("SELECT {LISTING_COLS} FROM data_listings l WHERE l.name = $1"),
            &[name.into()],
        )?;
        rows.first().map(listing_row).transpose()
    }

    pub(super) fn listing_by_id(&mut self, id: &str) -> Result<ListingRow, StoreError> {
        let rows = self.b.query(
            &format!("SELECT {LISTING_COLS} FROM data_listings l WHERE l.id = $1"),
            &[id.into()],
        )?;
        rows.first()
            .map(listing_row)
            .transpose()?
            .ok_or(StoreError::NotFound("listing"))
    }

    /// The listing named `name` as `viewer` sees it: its owner always; any other org once it is
    /// visible. Otherwise [`StoreError::NotFound`], exactly as for a name no listing has.
    pub fn get_listing(&mut self, viewer: &str, name: &str) -> Result<ListingRow, StoreError> {
        match self.listing_by_name(name)? {
            Some(l) if l.org_id == viewer || l.visible => Ok(l),
            _ => Err(StoreError::NotFound("listing")),
        }
    }

    /// The listings `viewer` sees (every visible one and its own), by name after `after` (`""`:
    /// from the first), at most `limit`; of one kind when `kind` is given.
    pub fn list_listings(
        &mut self,
        viewer: &str,
        kind: Option<ListingKind>,
        after: &str,
        limit: u32,
    ) -> Result<Vec<ListingRow>, StoreError> {
        let rows = self.b.query(
            &format!(
                "SELECT {LISTING_COLS} FROM data_listings l WHERE l.name > $2 \
                 AND ($3 = '' OR l.kind = $3) AND (l.org_id = $1 OR EXISTS (SELECT 1 \
                 FROM data_versions s WHERE s.listing_id = l.id AND s.state <> 'draft')) \
                 ORDER BY l.name LIMIT $4"
            ),
            &[
                viewer.into(),
                after.into(),
                kind.map_or("", ListingKind::as_str).into(),
                i64::from(limit).into(),
            ],
        )?;
        rows.iter().map(listing_row).collect()
    }

    // ---------------------------------------------------------------- versions

    /// The version `label` of `listing_id`, whoever may see it.
    pub(super) fn version_of(
        &mut self,
        listing_id: &str,
        label: &str,
    ) -> Result<Option<VersionRow>, StoreError> {
        let rows = self.b.query(
            &format!(
                "SELECT {VERSION_COLS} FROM data_versions v WHERE v.listing_id = $1 AND v.label = $2"
            ),
            &[listing_id.into(), label.into()],
        )?;
        rows.first().map(version_row).transpose()
    }

    /// The version `label` of `listing` as `viewer` sees it: a draft only its owner sees, and to
    /// anyone else it is [`StoreError::NotFound`], exactly as a label no version has.
    pub(super) fn version_for(
        &mut self,
        viewer: &str,
        listing: &ListingRow,
        label: &str,
    ) -> Result<VersionRow, StoreError> {
        match self.version_of(&listing.id, label)? {
            Some(v) if v.state.visible() || listing.org_id == viewer => Ok(v),
            _ => Err(StoreError::NotFound("version")),
        }
    }

    /// The listing and its version `label` as the owner sees them, for a command on the version
    /// (the decision answers anyone else; a version no one has is [`StoreError::NotFound`]).
    pub(super) fn listing_and_version(
        &mut self,
        actor: &str,
        listing: &str,
        label: &str,
    ) -> Result<(ListingRow, VersionRow), StoreError> {
        let l = self.get_listing(actor, listing)?;
        let v = self
            .version_of(&l.id, label)?
            .ok_or(StoreError::NotFound("version"))?;
        Ok((l, v))
    }

    /// Locks the version's row until the transaction ends (see the module documentation).
    pub(super) fn lock_version(&mut self, version_id: &str) -> Result<(), StoreError> {
        let n = self.b.execute(
            "UPDATE data_versions SET state = state WHERE id = $1",
            &[version_id.into()],
        )?;
        if n != 1 {
            return Err(StoreError::NotFound("version"));
        }
        Ok(())
    }

    /// The state of version `version_id` as it is now.
    fn version_state(&mut self, version_id: &str) -> Result<VersionState, StoreError> {
        self.b
            .query(
                "SELECT state FROM data_versions WHERE id = $1",
                &[version_id.into()],
            )?
            .first()
            .map(|r| r.parsed(0, VersionState::parse))
            .transpose()?
            .ok_or(StoreError::NotFound("version"))
    }

    /// What a decision on version `version_id` of a listing owned by `owner_org_id` needs: its
    /// state and files (only the file at `path` when one is named: deciding on one file's upload
    /// reads no other), read after [`Tx::lock_version`].
    pub(super) fn version_snapshot(
        &mut self,
        owner_org_id: &str,
        version_id: &str,
        path: Option<&str>,
    ) -> Result<VersionSnapshot, StoreError> {
        let state = self.version_state(version_id)?;
        let rows = self.b.query(
            "SELECT path, size_bytes, sha256, verified FROM data_files WHERE version_id = $1 \
             AND ($2 = '' OR path = $2) ORDER BY path",
            &[version_id.into(), path.unwrap_or("").into()],
        )?;
        let files = rows
            .iter()
            .map(|r| {
                Ok(FileFacts {
                    path: r.str(0)?,
                    size: r.u64(1)?,
                    sha256: r.str(2)?,
                    verified: r.i64(3)? != 0,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(VersionSnapshot {
            owner_org_id: owner_org_id.to_owned(),
            state,
            files,
        })
    }

    /// Starts version `label` of `listing` as a draft, as [`rules::decide_new_version`] decides:
    /// the listing's owner only (anyone else is answered as if the listing were missing), a label
    /// the listing never had.
    pub fn create_version(
        &mut self,
        actor: &str,
        listing: &str,
        label: &str,
        now_ms: i64,
    ) -> Result<VersionRow, StoreError> {
        let l = self.get_listing(actor, listing)?;
        let taken = self.version_of(&l.id, label)?.is_some();
        rules::decide_new_version(&l.org_id, actor, label, taken)?;
        let id = new_id("ver");
        let inserted = self.b.execute(
            "INSERT INTO data_versions (id, listing_id, label, state, created_ms) \
             VALUES ($1, $2, $3, 'draft', $4)",
            &[(&id).into(), (&l.id).into(), label.into(), now_ms.into()],
        );
        match inserted {
            Err(StoreError::Conflict(_)) => {
                return Err(StoreError::Duplicate {
                    field: "version",
                    message: format!(
                        "version {label:?} exists already; versions never change, publish a new one"
                    ),
                })
            }
            other => other?,
        };
        self.version_of(&l.id, label)?
            .ok_or(StoreError::NotFound("version"))
    }

    /// Version `label` of `listing` as `viewer` sees it (drafts its owner's alone).
    pub fn get_version(
        &mut self,
        viewer: &str,
        listing: &str,
        label: &str,
    ) -> Result<VersionRow, StoreError> {
        let l = self.get_listing(viewer, listing)?;
        self.version_for(viewer, &l, label)
    }

    /// The versions of `listing` `viewer` sees (drafts only to the owner), oldest first.
    pub fn list_versions(
        &mut self,
        viewer: &str,
        listing: &str,
    ) -> Result<Vec<VersionRow>, StoreError> {
        let l = self.get_listing(viewer, listing)?;
        let rows = self.b.query(
            &format!(
                "SELECT {VERSION_COLS} FROM data_versions v WHERE v.listing_id = $1 \
                 AND (CAST($2 AS BIGINT) = 1 OR v.state <> 'draft') ORDER BY v.created_ms, v.id"
            ),
            &[(&l.id).into(), i64::from(l.org_id == viewer).into()],
        )?;
        rows.iter().map(version_row).collect()
    }

    /// Publishes a draft, as [`rules::decide_publish`] decides: the owner's, with at least one
    /// file and every file verified. From then on the version never changes, and the listing is
    /// shown to other orgs.
    pub fn publish_version(
        &mut self,
        actor: &str,
        listing: &str,
        label: &str,
        now_ms: i64,
    ) -> Result<VersionRow, StoreError> {
        let (l, v) = self.listing_and_version(actor, listing, label)?;
        self.lock_version(&v.id)?;
        let snapshot = self.version_snapshot(&l.org_id, &v.id, None)?;
        rules::decide_publish(&snapshot, actor)?;
        let n = self.b.execute(
            "UPDATE data_versions SET state = 'published', published_ms = $2 \
             WHERE id = $1 AND state = 'draft'",
            &[(&v.id).into(), now_ms.into()],
        )?;
        if n != 1 {
            return Err(StoreError::Database(format!(
                "version {} changed under its lock",
                v.id
            )));
        }
        self.version_of(&l.id, label)?
            .ok_or(StoreError::NotFound("version"))
    }

    /// Deprecates a published version, as [`rules::decide_deprecate`] decides: buyers are told to
    /// move on; whoever is entitled to it may still use it.
    pub fn deprecate_version(
        &mut self,
        actor: &str,
        listing: &str,
        label: &str,
        now_ms: i64,
    ) -> Result<VersionRow, StoreError> {
        let (l, v) = self.listing_and_version(actor, listing, label)?;
        self.lock_version(&v.id)?;
        // Deprecating reads no file.
        let snapshot = VersionSnapshot {
            owner_org_id: l.org_id.clone(),
            state: self.version_state(&v.id)?,
            files: Vec::new(),
        };
        rules::decide_deprecate(&snapshot, actor)?;
        let n = self.b.execute(
            "UPDATE data_versions SET state = 'deprecated', deprecated_ms = $2 \
             WHERE id = $1 AND state = 'published'",
            &[(&v.id).into(), now_ms.into()],
        )?;
        if n != 1 {
            return Err(StoreError::Database(format!(
                "version {} changed under its lock",
                v.id
            )));
        }
        self.version_of(&l.id, label)?
            .ok_or(StoreError::NotFound("version"))
    }
}
