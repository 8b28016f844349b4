//! The one error type of the crate.

/// Everything that can go wrong storing or reading a data product's bytes. Each variant says
/// whose fault it is: the caller's input (`Config`, `InvalidKey`, `InvalidPartNumber`,
/// `InvalidState`, `InvalidDigest`, `UnalignedPart`, `PartTooLarge`, `FileTooLong`,
/// `InvalidRange`), the uploading client's body (`Body`), what is stored (`MissingPart`,
/// `PartLength`, `Corrupt`, `Mismatch`), or the store itself (`Store`, `Io`). Nothing in this
/// crate panics on bad input; every failure is one of these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectsError {
    /// The store's configuration string or settings are not usable.
    #[error("object store configuration: {0}")]
    Config(String),
    /// A file key must be 1 to 128 ASCII letters, digits, `-` or `_`.
    #[error("file key {0:?} is not 1 to 128 ASCII letters, digits, '-' or '_'")]
    InvalidKey(String),
    /// Part numbers start at 1.
    #[error("part numbers start at 1")]
    InvalidPartNumber,
    /// A hash state string that this crate did not write (or that was altered).
    #[error("hash state is malformed: {0}")]
    InvalidState(&'static str),
    /// An expected SHA-256 that is not 64 hexadecimal digits.
    #[error("the expected SHA-256 is not 64 hexadecimal digits")]
    InvalidDigest,
    /// A part may follow only parts whose lengths are multiples of 64 bytes: only the last part
    /// of a file may be shorter. `len` is the file's length before the refused part.
    #[error(
        "a part follows one whose length is not a multiple of 64 bytes (the file has {len} bytes \
         so far); only the last part may be"
    )]
    UnalignedPart {
        /// The file's length before the refused part.
        len: u64,
    },
    /// The part's body passed the caller's limit; nothing was stored.
    #[error("the part is longer than its limit of {limit} bytes")]
    PartTooLarge {
        /// The limit the caller gave.
        limit: u64,
    },
    /// The file would pass SHA-256's longest input (2^61 - 1 bytes).
    #[error("the file would be longer than SHA-256 can hash")]
    FileTooLong,
    /// The uploading client's body failed or was cut; nothing of the part was stored.
    #[error("the part's body failed: {0}")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A read range that is empty-ended backwards or reaches past the file's end.
    #[error("range {start}..{end} is not within the file's {len} bytes")]
    InvalidRange {
        /// First byte asked for.
        start: u64,
        /// One past the last byte asked for.
        end: u64,
        /// The file's length (the sum of its parts' lengths).
        len: u64,
    },
    /// A part that should be stored is not.
    #[error("part {part} of file {file} is missing")]
    MissingPart {
        /// The file's key.
        file: String,
        /// The part's number.
        part: u32,
    },
    /// A stored part does not have the length the caller gave for it (a read reached past its
    /// end, or it returned other bytes than asked for).
    #[error("part {part} of file {file} does not have the length given for it")]
    PartLength {
        /// The file's key.
        file: String,
        /// The part's number.
        part: u32,
    },
    /// Something under a file's prefix that this crate did not write.
    #[error("stored object {0} is not a part of a file")]
    Corrupt(String),
    /// A finished file's digest or length is not the one expected.
    #[error(
        "the file's SHA-256 {actual} over {actual_len} bytes is not the expected {expected} over \
         {expected_len} bytes"
    )]
    Mismatch {
        /// The expected SHA-256, lowercase hex.
        expected: String,
        /// The expected length.
        expected_len: u64,
        /// The SHA-256 of what was uploaded, lowercase hex.
        actual: String,
        /// The length of what was uploaded.
        actual_len: u64,
    },
    /// The object store failed (network, permissions, a missing bucket, ...).
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// The local filesystem failed where this crate touches it itself (making the root
    /// directory, syncing, removing a file's directory).
    #[error("local object store: {0}")]
    Io(#[from] std::io::Error),
}
