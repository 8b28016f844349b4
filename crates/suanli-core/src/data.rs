//! Data products: datasets and AI models, listed with a licence and a price, published as
//! immutable versions of files. This module holds the vocabulary and the field rules; the
//! decisions (who may publish, buy, approve, use) are in [`crate::decide::data`].

use crate::validate;

/// The two data categories of the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ListingKind {
    Dataset,
    Model,
}

impl ListingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ListingKind::Dataset => "dataset",
            ListingKind::Model => "model",
        }
    }

    pub fn parse(s: &str) -> Option<ListingKind> {
        match s {
            "dataset" => Some(ListingKind::Dataset),
            "model" => Some(ListingKind::Model),
            _ => None,
        }
    }
}

/// How a buyer may use the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AccessMode {
    /// The buyer downloads the files and mounts them into jobs anywhere.
    Download,
    /// The data never leaves its holder: jobs that use it run on the holder's own agents, without
    /// network, and only outputs the holder's policy releases leave.
    ComputeOnly,
}

impl AccessMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessMode::Download => "download",
            AccessMode::ComputeOnly => "compute-only",
        }
    }

    pub fn parse(s: &str) -> Option<AccessMode> {
        match s {
            "download" => Some(AccessMode::Download),
            "compute-only" => Some(AccessMode::ComputeOnly),
            _ => None,
        }
    }
}

/// Whether access is granted on request or by the owner's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Gating {
    Automatic,
    /// The owner approves or denies each request, which states its purpose.
    Manual,
}

impl Gating {
    pub fn as_str(self) -> &'static str {
        match self {
            Gating::Automatic => "automatic",
            Gating::Manual => "manual",
        }
    }

    pub fn parse(s: &str) -> Option<Gating> {
        match s {
            "automatic" => Some(Gating::Automatic),
            "manual" => Some(Gating::Manual),
            _ => None,
        }
    }
}

/// The longest access period a listing may sell: ten years.
pub const MAX_PERIOD_DAYS: u32 = 3_650;
const DAY_MS: i64 = 86_400_000;

/// What access costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Price {
    Free,
    /// Paid once per version: the buyer may use that version for good.
    PerVersion {
        micros: u64,
    },
    /// Paid per period: the buyer may use every version until the period ends.
    PerPeriod {
        micros: u64,
        days: u32,
    },
}

impl Price {
    /// Checks the amounts: a paid price is more than zero and at most what one transfer may
    /// move; a period is 1 to [`MAX_PERIOD_DAYS`] days.
    pub fn validated(self) -> Result<Price, (&'static str, &'static str)> {
        let amount_ok = |m: u64| m > 0 && m <= validate::MAX_TRANSFER_MICROS;
        match self {
            Price::Free => Ok(self),
            Price::PerVersion { micros } | Price::PerPeriod { micros, .. }
                if !amount_ok(micros) =>
            {
                Err((
                    "price_micros",
                    "must be more than 0 and at most 10^15 (a free listing has no price)",
                ))
            }
            Price::PerPeriod { days, .. } if days == 0 || days > MAX_PERIOD_DAYS => {
                Err(("period_days", "must be 1 to 3650 days"))
            }
            _ => Ok(self),
        }
    }

    pub fn micros(self) -> u64 {
        match self {
            Price::Free => 0,
            Price::PerVersion { micros } | Price::PerPeriod { micros, .. } => micros,
        }
    }

    /// The end of the access bought at `from_ms` (`None`: no end).
    pub fn access_until(self, from_ms: i64) -> Option<i64> {
        match self {
            Price::PerPeriod { days, .. } => Some(from_ms.saturating_add(i64::from(days) * DAY_MS)),
            Price::Free | Price::PerVersion { .. } => None,
        }
    }

    /// Whether what one buys is one version (true) or the listing's every version (false).
    pub fn per_version(self) -> bool {
        matches!(self, Price::PerVersion { .. })
    }
}

/// A listing's licence, shown before purchase and accepted by the buyer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Licence {
    /// A licence from the SPDX list, by its identifier (`Apache-2.0`, `CC-BY-4.0`).
    Spdx(String),
    /// The provider's own terms, as text.
    Custom(String),
}

/// SPDX identifiers of the licences data and models are published under. A licence not on the
/// list is published as the provider's own text.
pub const SPDX_IDS: &[&str] = &[
    "0BSD",
    "AFL-3.0",
    "AGPL-3.0-only",
    "AGPL-3.0-or-later",
    "Apache-2.0",
    "Artistic-2.0",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "BSL-1.0",
    "CC-BY-4.0",
    "CC-BY-NC-4.0",
    "CC-BY-NC-ND-4.0",
    "CC-BY-NC-SA-4.0",
    "CC-BY-ND-4.0",
    "CC-BY-SA-4.0",
    "CC0-1.0",
    "CDLA-Permissive-2.0",
    "CDLA-Sharing-1.0",
    "EPL-2.0",
    "GPL-2.0-only",
    "GPL-2.0-or-later",
    "GPL-3.0-only",
    "GPL-3.0-or-later",
    "ISC",
    "LGPL-2.1-only",
    "LGPL-2.1-or-later",
    "LGPL-3.0-only",
    "LGPL-3.0-or-later",
    "MIT",
    "MPL-2.0",
    "MulanPSL-2.0",
    "ODbL-1.0",
    "ODC-By-1.0",
    "OpenRAIL",
    "PDDL-1.0",
    "Unlicense",
    "Zlib",
];

/// The longest custom licence text.
pub const MAX_LICENCE_TEXT: usize = 64 * 1024;

impl Licence {
    /// An SPDX identifier from [`SPDX_IDS`] (case as SPDX writes it, matched without regard to
    /// case), or custom text: one to [`MAX_LICENCE_TEXT`] bytes with something visible.
    pub fn validated(self) -> Result<Licence, (&'static str, String)> {
        match self {
            Licence::Spdx(id) => SPDX_IDS
                .iter()
                .find(|known| known.eq_ignore_ascii_case(id.trim()))
                .map(|known| Licence::Spdx((*known).to_owned()))
                .ok_or_else(|| {
                    (
                        "licence",
                        format!(
                            "{id:?} is not an SPDX identifier the exchange knows (e.g. Apache-2.0, \
                             CC-BY-4.0, MIT); publish other terms as the licence's text"
                        ),
                    )
                }),
            Licence::Custom(text) => {
                let text = long_text(&text, MAX_LICENCE_TEXT)
                    .map_err(|why| ("licence_text", why.to_owned()))?;
                if text.is_empty() {
                    return Err(("licence_text", "must not be empty".into()));
                }
                Ok(Licence::Custom(text))
            }
        }
    }

    /// The stored form: `spdx:<id>` or the text itself after `text:`.
    pub fn encode(&self) -> String {
        match self {
            Licence::Spdx(id) => format!("spdx:{id}"),
            Licence::Custom(text) => format!("text:{text}"),
        }
    }

    pub fn decode(s: &str) -> Option<Licence> {
        if let Some(id) = s.strip_prefix("spdx:") {
            Some(Licence::Spdx(id.to_owned()))
        } else {
            s.strip_prefix("text:")
                .map(|text| Licence::Custom(text.to_owned()))
        }
    }
}

/// Free text longer than [`validate::text`] allows (a description, a card, a licence): no
/// control characters other than newlines and tabs, no bidi controls, NFC, at most `max` bytes,
/// and, unless empty, something visible.
pub fn long_text(value: &str, max: usize) -> Result<String, &'static str> {
    use unicode_normalization::UnicodeNormalization;
    if value
        .chars()
        .any(|c| (c.is_control() && c != '\n' && c != '\t') || validate::is_bidi_control(c))
    {
        return Err(
            "must not contain control characters (other than newlines and tabs) or bidi controls",
        );
    }
    let text: String = value.nfc().collect();
    if text.len() > max {
        return Err("is too long");
    }
    if !text.is_empty() && !validate::has_visible(&text) {
        return Err("must not be made only of spaces and invisible characters");
    }
    Ok(text)
}

/// A listing's name, how buyers and task files name it (`traffic-2026@v1`): 2 to 64 lower-case
/// ASCII letters, digits, `-`, `_` and `.`, starting with a letter or digit. Unique on the
/// exchange.
pub fn listing_name(value: &str) -> Result<(), &'static str> {
    let ok = (2..=64).contains(&value.len())
        && value.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
        && value.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err("must be 2 to 64 lower-case ASCII letters, digits, '-', '_' and '.', starting with a letter or digit")
    }
}

/// A version's label (`v1`, `2026.12`, `1.0.0-rc1`): 1 to 64 ASCII letters, digits, `-`, `_`
/// and `.`, starting with a letter or digit (so `name@label` reads one way).
pub fn version_label(value: &str) -> Result<(), &'static str> {
    let ok = (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && value.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err("must be 1 to 64 ASCII letters, digits, '-', '_' and '.', starting with a letter or digit")
    }
}

/// `NAME` or `NAME@VERSION`, as task files and `suanli data pull` name data.
pub fn parse_reference(value: &str) -> Result<(&str, Option<&str>), &'static str> {
    let (name, version) = match value.split_once('@') {
        Some((name, version)) => (name, Some(version)),
        None => (value, None),
    };
    listing_name(name)?;
    if let Some(v) = version {
        version_label(v)?;
    }
    Ok((name, version))
}

/// The longest path of a file in a version, in bytes.
pub const MAX_PATH_LEN: usize = 1_024;
/// The deepest a file may sit in a version.
pub const MAX_PATH_DEPTH: usize = 32;

/// A file's path within its version: relative, `/`-separated, each part 1 to 255 bytes and not
/// `.` or `..`, no backslash, no control character (NUL included), no bidi control, in NFC (a
/// path that normalises differently is refused rather than changed, so that two files can never
/// collide), at most [`MAX_PATH_LEN`] bytes and [`MAX_PATH_DEPTH`] parts.
pub fn file_path(value: &str) -> Result<(), &'static str> {
    use unicode_normalization::{is_nfc, UnicodeNormalization};
    if value.is_empty() {
        return Err("must not be empty");
    }
    if value.len() > MAX_PATH_LEN {
        return Err("is longer than 1024 bytes");
    }
    if value.starts_with('/') {
        return Err("must be relative to the version (no leading '/')");
    }
    if value
        .chars()
        .any(|c| c.is_control() || validate::is_bidi_control(c))
    {
        return Err("must not contain control characters (NUL included) or bidi controls");
    }
    if value.contains('\\') {
        return Err("must separate directories with '/', not '\\'");
    }
    if !is_nfc(value) || value.nfc().collect::<String>() != value {
        return Err("must be in Unicode NFC");
    }
    let parts: Vec<&str> = value.split('/').collect();
    if parts.len() > MAX_PATH_DEPTH {
        return Err("is nested deeper than 32 directories");
    }
    for part in parts {
        match part {
            "" => return Err("must not have empty parts ('//' or a trailing '/')"),
            "." | ".." => return Err("must not have '.' or '..' parts"),
            p if !validate::has_visible(p) => {
                return Err("must not have parts made only of spaces and invisible characters")
            }
            p if p.len() > 255 => return Err("has a part longer than 255 bytes"),
            _ => {}
        }
    }
    Ok(())
}

/// A SHA-256 digest as 64 lower-case hex digits.
pub fn sha256_hex(value: &str) -> Result<(), &'static str> {
    if value.len() == 64
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err("must be a SHA-256 digest: 64 lower-case hex digits")
    }
}

/// What a model listing says of the model.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelInfo {
    /// `pytorch`, `onnx`, `mindspore`, … (a slug).
    pub framework: String,
    /// `safetensors`, `gguf`, `onnx`, … (a slug).
    pub format: String,
    pub parameters: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_inside_the_version_only() {
        for ok in [
            "a",
            "data/train.csv",
            "数据/训练集.parquet",
            "a/b/c/d.bin",
            ".hidden",
            "a..b",
        ] {
            assert_eq!(file_path(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a/",
            "a\0b",
            "a\\b",
            "a\nb",
            "a\u{202e}b",
            "\u{200b}\u{2060}",
            "a/ /b",
            "e\u{301}.txt",
        ] {
            assert!(file_path(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(file_path(&["a"; 32].join("/")).is_ok());
        assert!(file_path(&["a"; 33].join("/")).is_err());
        assert!(file_path(&"x".repeat(256)).is_err());
        assert!(file_path(&"x".repeat(255)).is_ok());
    }

    #[test]
    fn names_versions_and_references() {
        assert_eq!(listing_name("traffic-2026"), Ok(()));
        assert!(listing_name("Traffic").is_err());
        assert!(listing_name("-x").is_err());
        assert!(listing_name("x").is_err());
        assert!(listing_name("a@b").is_err());
        assert_eq!(version_label("1.0.0-rc1"), Ok(()));
        assert!(version_label(".1").is_err());
        assert!(version_label("").is_err());
        assert!(version_label("v 1").is_err());
        assert_eq!(parse_reference("llm-7b@v2"), Ok(("llm-7b", Some("v2"))));
        assert_eq!(parse_reference("llm-7b"), Ok(("llm-7b", None)));
        assert!(parse_reference("llm-7b@").is_err());
        assert!(parse_reference("llm-7b@v1@v2").is_err());
    }

    #[test]
    fn prices_and_periods() {
        assert_eq!(Price::Free.validated(), Ok(Price::Free));
        assert!(Price::PerVersion { micros: 0 }.validated().is_err());
        assert!(Price::PerPeriod { micros: 5, days: 0 }.validated().is_err());
        assert!(Price::PerPeriod {
            micros: 5,
            days: 3_651
        }
        .validated()
        .is_err());
        let p = Price::PerPeriod {
            micros: 5,
            days: 30,
        };
        assert_eq!(p.access_until(1_000), Some(1_000 + 30 * 86_400_000));
        assert_eq!(Price::PerVersion { micros: 5 }.access_until(1_000), None);
        assert!(Price::PerVersion { micros: 5 }.per_version());
    }

    #[test]
    fn licences() {
        assert_eq!(
            Licence::Spdx("apache-2.0".into()).validated(),
            Ok(Licence::Spdx("Apache-2.0".into()))
        );
        assert!(Licence::Spdx("Apache-9".into()).validated().is_err());
        assert!(Licence::Custom(" \u{200b} ".into()).validated().is_err());
        assert!(Licence::Custom(String::new()).validated().is_err());
        let own = Licence::Custom("研究使用，不得转售。\nResearch use only.".into());
        assert_eq!(own.clone().validated(), Ok(own.clone()));
        assert_eq!(Licence::decode(&own.encode()), Some(own));
        assert_eq!(Licence::decode("MIT"), None);
        assert!(sha256_hex(&"a".repeat(64)).is_ok());
        assert!(sha256_hex(&"A".repeat(64)).is_err());
        assert!(sha256_hex(&"a".repeat(63)).is_err());
    }
}
