//! Identifiers as types: one newtype per kind of object the API names (`OrgId`, `LeaseId`, …), so
//! that a lease id cannot be passed where a job id is expected, and an id that reached a handler
//! was parsed at the edge.
//!
//! # The shape of an id
//!
//! The exchange makes every id with `suanli_store::ops::new_id(prefix)`: the kind's prefix, `_`,
//! then lowercase hex digits. Since November 2026 that is 27 digits (11 of the time in
//! milliseconds, 16 that count up within it: `lease_19ae4c0f3b2` + `a94c03d1e8f7b265`); before, it
//! was 16 random digits (`lease_a94c03d1e8f7b265`), and databases made then still hold such ids.
//! [`Id::parse`] accepts exactly these two shapes with the kind's prefix, and nothing else: an id
//! of another kind, another length, upper-case digits, or anything past the digits.
//!
//! Ids the exchange reads back from its own rows are wrapped with `from_stored`, unchecked: what it
//! stored it made itself, and refusing a stored id would make its object unreachable. Answers of
//! the exchange that a client decodes are likewise its own ids.
//!
//! Transfer ids (`tr_…`, earlier `tr_<seq>`) and account ids (`<org id>.<kind>`) are not here: no
//! request names them.
//!
//! Nothing here knows serde: on the wire (`suanli-api`) an id is a plain JSON string, parsed into
//! its type where the exchange receives it.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

/// How many hex digits follow the prefix: 16 (ids made before time-ordered ids) or 27 (time in
/// milliseconds, 11 digits, then 16).
pub const HEX_DIGITS: [usize; 2] = [16, 27];

/// What every id type does; generic code (path extractors, serde helpers) is written against it.
/// Each type also has the same functions as inherent methods, so callers need not import this.
pub trait Id: Sized + Clone + Eq + Ord + std::hash::Hash + fmt::Debug + fmt::Display {
    /// The prefix before `_` (`lease`).
    const PREFIX: &'static str;
    /// What the id names, in words (`lease`; `attempt` for `att_…`), as in "lease not found".
    const KIND: &'static str;

    /// Parses an id given from outside: refused unless it has the kind's prefix and shape.
    fn parse(s: &str) -> Result<Self, IdError>;
    /// [`Id::parse`] of an owned string, without copying it.
    fn parse_string(s: String) -> Result<Self, IdError>;
    /// An id the exchange stored or answered itself, wrapped without being checked again.
    fn from_stored(s: String) -> Self;
    fn as_str(&self) -> &str;
    fn into_string(self) -> String;
}

/// Why a text is not an id of the kind asked for. Its `Display` reads after the field's name:
/// "lease_id is not a lease id: it is a job id".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdError {
    /// The kind asked for (`lease`).
    pub kind: &'static str,
    /// That kind's prefix (`lease`).
    pub prefix: &'static str,
    pub reason: IdErrorReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdErrorReason {
    /// Nothing was given.
    Empty,
    /// A well-formed id of another kind (its kind, e.g. `job`).
    OtherKind(&'static str),
    /// Not the kind's prefix followed by `_`.
    WrongPrefix,
    /// The prefix, but not 16 or 27 lowercase hex digits after it.
    Malformed,
}

impl IdError {
    fn article(kind: &str) -> &'static str {
        match kind.as_bytes().first() {
            Some(b'a' | b'e' | b'i' | b'o' | b'u') => "an",
            _ => "a",
        }
    }
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, prefix) = (self.kind, self.prefix);
        write!(f, "is not {} {kind} id: ", IdError::article(kind))?;
        match self.reason {
            IdErrorReason::Empty => write!(f, "it is empty"),
            IdErrorReason::OtherKind(other) => {
                write!(f, "it is {} {other} id", IdError::article(other))
            }
            IdErrorReason::WrongPrefix => write!(f, "{kind} ids start with \"{prefix}_\""),
            IdErrorReason::Malformed => write!(
                f,
                "{kind} ids are \"{prefix}_\" and 16 or 27 lowercase hex digits"
            ),
        }
    }
}

impl std::error::Error for IdError {}

/// Whether `rest` is what follows `prefix_` in an id the exchange made.
fn is_hex_tail(rest: &str) -> bool {
    HEX_DIGITS.contains(&rest.len())
        && rest
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The kind of a well-formed id of any kind (`job` for `job_…`), if it is one.
pub fn kind_of(s: &str) -> Option<&'static str> {
    let (prefix, rest) = s.split_once('_')?;
    let kind = KINDS.iter().find(|(p, _)| *p == prefix)?.1;
    is_hex_tail(rest).then_some(kind)
}

/// Checks `s` against the shape of an id with `prefix` (see the module's documentation).
fn check(s: &str, prefix: &'static str, kind: &'static str) -> Result<(), IdError> {
    let error = |reason| IdError {
        kind,
        prefix,
        reason,
    };
    if s.is_empty() {
        return Err(error(IdErrorReason::Empty));
    }
    match s.strip_prefix(prefix).and_then(|r| r.strip_prefix('_')) {
        Some(rest) if is_hex_tail(rest) => Ok(()),
        Some(_) => Err(error(IdErrorReason::Malformed)),
        None => Err(error(match kind_of(s) {
            Some(other) => IdErrorReason::OtherKind(other),
            None => IdErrorReason::WrongPrefix,
        })),
    }
}

macro_rules! ids {
    ($($(#[$doc:meta])* $name:ident = ($prefix:literal, $kind:literal);)*) => {
        /// Every kind of id: (prefix, kind).
        pub const KINDS: &[(&str, &str)] = &[$(($prefix, $kind)),*];

        $(
            $(#[$doc])*
            #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
            pub struct $name(String);

            impl $name {
                pub const PREFIX: &'static str = $prefix;
                pub const KIND: &'static str = $kind;

                /// Parses an id given from outside (see [`Id::parse`]).
                pub fn parse(s: &str) -> Result<Self, IdError> {
                    check(s, $prefix, $kind)?;
                    Ok($name(s.to_owned()))
                }

                /// An id the exchange stored or answered itself, unchecked (see
                /// [`Id::from_stored`]).
                pub fn from_stored(s: impl Into<String>) -> Self {
                    $name(s.into())
                }

                pub fn as_str(&self) -> &str {
                    &self.0
                }

                pub fn into_string(self) -> String {
                    self.0
                }
            }

            impl Id for $name {
                const PREFIX: &'static str = $prefix;
                const KIND: &'static str = $kind;

                fn parse(s: &str) -> Result<Self, IdError> {
                    $name::parse(s)
                }

                fn parse_string(s: String) -> Result<Self, IdError> {
                    check(&s, $prefix, $kind)?;
                    Ok($name(s))
                }

                fn from_stored(s: String) -> Self {
                    $name(s)
                }

                fn as_str(&self) -> &str {
                    &self.0
                }

                fn into_string(self) -> String {
                    self.0
                }
            }

            impl fmt::Display for $name {
                fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str(&self.0)
                }
            }

            impl AsRef<str> for $name {
                fn as_ref(&self) -> &str {
                    &self.0
                }
            }

            impl Borrow<str> for $name {
                fn borrow(&self) -> &str {
                    &self.0
                }
            }

            impl FromStr for $name {
                type Err = IdError;

                fn from_str(s: &str) -> Result<Self, IdError> {
                    $name::parse(s)
                }
            }

            impl TryFrom<&str> for $name {
                type Error = IdError;

                fn try_from(s: &str) -> Result<Self, IdError> {
                    $name::parse(s)
                }
            }

            impl TryFrom<String> for $name {
                type Error = IdError;

                fn try_from(s: String) -> Result<Self, IdError> {
                    <$name as Id>::parse_string(s)
                }
            }

            impl From<$name> for String {
                fn from(id: $name) -> String {
                    id.0
                }
            }

            impl PartialEq<str> for $name {
                fn eq(&self, other: &str) -> bool {
                    self.0 == other
                }
            }

            impl PartialEq<&str> for $name {
                fn eq(&self, other: &&str) -> bool {
                    self.0 == *other
                }
            }

            impl PartialEq<String> for $name {
                fn eq(&self, other: &String) -> bool {
                    &self.0 == other
                }
            }

            impl PartialEq<$name> for str {
                fn eq(&self, other: &$name) -> bool {
                    self == other.0
                }
            }

            impl PartialEq<$name> for &str {
                fn eq(&self, other: &$name) -> bool {
                    *self == other.0
                }
            }

            impl PartialEq<$name> for String {
                fn eq(&self, other: &$name) -> bool {
                    *self == other.0
                }
            }
        )*
    };
}

ids! {
    /// An org: `org_…`.
    OrgId = ("org", "org");
    /// A member of an org: `mem_…`.
    MemberId = ("mem", "member");
    /// An API token (its id, never its secret): `tok_…`.
    TokenId = ("tok", "token");
    /// A provider's pool: `pool_…`.
    PoolId = ("pool", "pool");
    /// A node of a pool: `node_…`.
    NodeId = ("node", "node");
    /// An offer: `offer_…`.
    OfferId = ("offer", "offer");
    /// A lease: `lease_…`.
    LeaseId = ("lease", "lease");
    /// A lease's escrow hold: `hold_…`.
    HoldId = ("hold", "hold");
    /// A job: `job_…`.
    JobId = ("job", "job");
    /// One attempt at running a job: `att_…`.
    AttemptId = ("att", "attempt");
    /// A provider's agent: `agent_…`.
    AgentId = ("agent", "agent");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// An id as `new_id` makes it today: 11 hex digits of milliseconds, then 16.
    fn made(prefix: &str, ms: u64, v: u64) -> String {
        format!("{prefix}_{ms:011x}{v:016x}")
    }

    #[test]
    fn ids_the_exchange_makes_parse() {
        for (prefix, _) in KINDS {
            for (ms, v) in [(1_764_000_000_000, 0), (1, u64::MAX), (0xfff_ffff_ffff, 42)] {
                let id = made(prefix, ms, v);
                assert_eq!(id.len(), prefix.len() + 1 + 27);
                assert_eq!(kind_of(&id).map(|_| ()), Some(()), "{id}");
            }
        }
        let id = made("lease", 1_764_000_000_000, 0x0123_4567_89ab_cdef);
        let lease = LeaseId::parse(&id).unwrap();
        assert_eq!(lease.as_str(), id);
        assert_eq!(lease.to_string(), id);
        assert_eq!(lease, id.as_str());
        assert_eq!(id, lease);
        assert_eq!(lease.clone().into_string(), id);
        assert_eq!(LeaseId::try_from(id.clone()).unwrap(), lease);
        assert_eq!(id.parse::<LeaseId>().unwrap(), lease);
        // Ids made before time-ordered ids: 16 random hex digits.
        for old in [
            "lease_0000000000000000",
            "att_a94c03d1e8f7b265",
            "org_ffffffffffffffff",
        ] {
            assert!(kind_of(old).is_some(), "{old}");
        }
        assert!(LeaseId::parse("lease_0000000000000000").is_ok());
        assert!(AttemptId::parse("att_a94c03d1e8f7b265").is_ok());
        assert!(OrgId::parse("org_ffffffffffffffff").is_ok());
    }

    #[test]
    fn every_kind_has_its_own_prefix() {
        let mut seen = HashMap::new();
        for (prefix, kind) in KINDS {
            assert!(seen.insert(*prefix, *kind).is_none(), "{prefix} twice");
            assert!(!prefix.contains('_') && !prefix.is_empty());
        }
        assert_eq!(AttemptId::PREFIX, "att");
        assert_eq!(AttemptId::KIND, "attempt");
        assert_eq!(<MemberId as Id>::KIND, "member");
    }

    #[test]
    fn the_wrong_prefix_is_refused() {
        let job = made("job", 1_764_000_000_000, 7);
        let e = LeaseId::parse(&job).unwrap_err();
        assert_eq!(e.reason, IdErrorReason::OtherKind("job"));
        assert_eq!(e.to_string(), "is not a lease id: it is a job id");
        let e = OrgId::parse(&made("offer", 1, 2)).unwrap_err();
        assert_eq!(e.to_string(), "is not an org id: it is an offer id");
        let tail = "0190a5b2c3d4e5f60718293a4b5";
        for bad in [
            format!("leases_{tail}"),
            format!("Lease_{tail}"),
            format!("LEASE_{tail}"),
            format!("lease{tail}"),
            format!("lease-{tail}"),
            format!("_{tail}"),
            format!(" lease_{tail}"),
            tail.to_owned(),
            "lease".to_owned(),
            "l".to_owned(),
        ] {
            let e = LeaseId::parse(&bad).unwrap_err();
            assert_eq!(e.reason, IdErrorReason::WrongPrefix, "{bad:?}");
            assert_eq!(
                e.to_string(),
                "is not a lease id: lease ids start with \"lease_\""
            );
        }
        // A well-formed id of no kind is a wrong prefix, not another kind.
        let e = JobId::parse(&format!("bank_{tail}")).unwrap_err();
        assert_eq!(e.reason, IdErrorReason::WrongPrefix);
    }

    #[test]
    fn the_wrong_length_or_characters_are_refused() {
        let ok = "0190a5b2c3d4e5f60718293a4b5";
        assert!(LeaseId::parse(&format!("lease_{ok}")).is_ok());
        for tail in [
            "",
            "0",
            "000000000000000",              // 15
            "00000000000000000",            // 17
            "0190a5b2c3d4e5f60718293a4b",   // 26
            "0190a5b2c3d4e5f60718293a4b5c", // 28
            "0190A5B2C3D4E5F60718293A4B5",  // upper case
            "0190a5b2c3d4e5f60718293a4bg",  // not hex
            "0190a5b2c3d4e5f60718293a4b-",
            "0190a5b2c3d4e5f60718293a4b.",
            "0190a5b2c3d4e5f60718293a4b_",
            "0190a5b2c3d4e5f6_718293a4b5",
            "0190a5b2c3d4e5f60718293a4b\0",
            "0190a5b2c3d4e5f60718293a4bé",
            "0190a5b2c3d4e5f6071829\u{202e}3a4b5",
            " 0190a5b2c3d4e5f60718293a4b5",
            "0190a5b2c3d4e5f60718293a4b5 ",
            "0190a5b2c3d4e5f60718293a4b5/x",
        ] {
            let bad = format!("lease_{tail}");
            let e = LeaseId::parse(&bad).unwrap_err();
            assert_eq!(e.reason, IdErrorReason::Malformed, "{bad:?}");
            assert_eq!(
                e.to_string(),
                "is not a lease id: lease ids are \"lease_\" and 16 or 27 lowercase hex digits"
            );
            assert!(kind_of(&bad).is_none(), "{bad:?}");
        }
        let e = AgentId::parse(&"9".repeat(300)).unwrap_err();
        assert_eq!(e.reason, IdErrorReason::WrongPrefix);
    }

    #[test]
    fn empty_is_refused() {
        let e = OfferId::parse("").unwrap_err();
        assert_eq!(e.reason, IdErrorReason::Empty);
        assert_eq!(e.to_string(), "is not an offer id: it is empty");
        assert!(<TokenId as Id>::parse_string(String::new()).is_err());
        assert!("".parse::<PoolId>().is_err());
        assert!(kind_of("").is_none());
    }

    #[test]
    fn stored_ids_are_taken_as_they_are() {
        // The exchange's own rows (and test fixtures written straight to a store) may hold ids of
        // any shape: wrapping them never fails and never changes them.
        for stored in ["org_a", "lease_1", "", "anything at all"] {
            let id = OrgId::from_stored(stored);
            assert_eq!(id.as_str(), stored);
            assert_eq!(<OrgId as Id>::from_stored(stored.to_owned()), id);
        }
    }

    #[test]
    fn ids_compare_and_hash_as_their_text() {
        use std::collections::HashSet;
        let a = JobId::parse("job_0000000000000001").unwrap();
        let b = JobId::parse("job_0000000000000002").unwrap();
        assert!(a < b);
        let set: HashSet<JobId> = [a.clone(), b.clone()].into_iter().collect();
        // `Borrow<str>`: a set of ids is looked up by text.
        assert!(set.contains("job_0000000000000001"));
        assert_eq!(format!("{a:?}"), "JobId(\"job_0000000000000001\")");
        assert_eq!(String::from(a), "job_0000000000000001");
    }
}
