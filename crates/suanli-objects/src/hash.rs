//! SHA-256 whose state outlives a request: a file is hashed part by part, in one pass over its
//! bytes, and the state between parts is a short string the caller keeps in its database.
//!
//! The state is SHA-256's eight chaining words after the last whole 64-byte block, the number
//! of bytes hashed, and the bytes past the last whole block (fewer than 64; none between parts,
//! whose lengths are multiples of 64). The blocks go through `sha2`'s own compression function
//! (`sha2::compress256`, using SHA-NI where the CPU has it), and [`HashState::finish`] adds
//! the standard padding, so the digest is exactly `sha2::Sha256`'s.

use std::fmt;
use std::str::FromStr;

use sha2::digest::consts::U64;
use sha2::digest::generic_array::GenericArray;

use crate::ObjectsError;

/// SHA-256's initial chaining words (FIPS 180-4, 5.3.3).
const H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// The longest input SHA-256 takes: its length in bits must fit 64 bits.
pub const MAX_HASHED_LEN: u64 = (1 << 61) - 1;

/// What a state string starts with; a new encoding gets a new prefix.
const PREFIX: &str = "sha256:v1:";

/// Blocks handed to the compression function at once (copied into an aligned batch first).
const BATCH: usize = 32;

type Block = GenericArray<u8, U64>;

/// The SHA-256 state after some prefix of a file. Cloning it and feeding both clones the same
/// bytes gives the same digest; encoding it with [`HashState::encode`] and parsing it back with
/// [`HashState::parse`] gives an equal state, so hashing goes on across requests and process
/// restarts without reading again what was hashed.
#[derive(Clone)]
pub struct HashState {
    words: [u32; 8],
    len: u64,
    /// The first `len % 64` bytes are the input past the last whole block; the rest is unused.
    tail: [u8; 64],
}

impl Default for HashState {
    fn default() -> Self {
        Self::new()
    }
}

impl PartialEq for HashState {
    fn eq(&self, other: &Self) -> bool {
        self.words == other.words && self.len == other.len && self.tail() == other.tail()
    }
}

impl Eq for HashState {}

impl fmt::Debug for HashState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

impl HashState {
    /// The state of an empty file.
    pub fn new() -> Self {
        Self {
            words: H0,
            len: 0,
            tail: [0; 64],
        }
    }

    /// The number of bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was hashed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the bytes hashed so far are whole 64-byte blocks: only then may another part
    /// follow (a part that is not a multiple of 64 bytes long is a file's last).
    pub fn is_block_aligned(&self) -> bool {
        self.len.is_multiple_of(64)
    }

    fn tail(&self) -> &[u8] {
        &self.tail[..(self.len % 64) as usize]
    }

    /// Hashes `data` after what was hashed so far. Refuses (and changes nothing) when the total
    /// would pass [`MAX_HASHED_LEN`].
    pub fn update(&mut self, mut data: &[u8]) -> Result<(), ObjectsError> {
        let new_len = u64::try_from(data.len())
            .ok()
            .and_then(|n| self.len.checked_add(n))
            .filter(|&n| n <= MAX_HASHED_LEN)
            .ok_or(ObjectsError::FileTooLong)?;
        let have = (self.len % 64) as usize;
        self.len = new_len;
        if have > 0 {
            let take = (64 - have).min(data.len());
            self.tail[have..have + take].copy_from_slice(&data[..take]);
            data = &data[take..];
            if have + take < 64 {
                return Ok(());
            }
            let block = *Block::from_slice(&self.tail);
            sha2::compress256(&mut self.words, &[block]);
        }
        let whole = data.len() - data.len() % 64;
        compress(&mut self.words, &data[..whole]);
        let rest = &data[whole..];
        self.tail[..rest.len()].copy_from_slice(rest);
        Ok(())
    }

    /// The digest of everything hashed so far (the state itself is unchanged, so more may be
    /// hashed after). Equal to `sha2::Sha256::digest` of the same bytes.
    pub fn finish(&self) -> FileDigest {
        let mut words = self.words;
        let tail = self.tail();
        let mut last = [0u8; 128];
        last[..tail.len()].copy_from_slice(tail);
        last[tail.len()] = 0x80;
        // The bit length goes into the last 8 bytes of one block, or of two when the tail
        // leaves fewer than 9 bytes free in its own.
        let blocks = if tail.len() < 56 { 1 } else { 2 };
        let end = blocks * 64;
        last[end - 8..end].copy_from_slice(&(self.len * 8).to_be_bytes());
        compress(&mut words, &last[..end]);
        let mut sha256 = [0u8; 32];
        for (out, word) in sha256.chunks_exact_mut(4).zip(words) {
            out.copy_from_slice(&word.to_be_bytes());
        }
        FileDigest {
            sha256,
            len: self.len,
        }
    }

    /// The state as a string of at most 221 ASCII characters, for the caller's database:
    /// `sha256:v1:<bytes hashed, decimal>:<the 8 chaining words, 64 lowercase hex digits>:<the
    /// bytes past the last whole block, lowercase hex, empty between parts>`.
    pub fn encode(&self) -> String {
        let mut s = format!("{PREFIX}{}:", self.len);
        for w in self.words {
            s.push_str(&format!("{w:08x}"));
        }
        s.push(':');
        s.push_str(&hex(self.tail()));
        s
    }

    /// Parses what [`HashState::encode`] wrote, strictly: anything else (a wrong prefix, upper
    /// case, a tail whose length is not the byte count modulo 64, a count past
    /// [`MAX_HASHED_LEN`]) is [`ObjectsError::InvalidState`].
    pub fn parse(s: &str) -> Result<Self, ObjectsError> {
        let bad = ObjectsError::InvalidState;
        let rest = s.strip_prefix(PREFIX).ok_or(bad("not a sha256:v1 state"))?;
        let mut fields = rest.split(':');
        let (Some(len), Some(words), Some(tail), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(bad("not three fields"));
        };
        let canonical = len == "0" || (!len.starts_with('0') && !len.is_empty());
        if !canonical || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("the byte count is not a decimal number"));
        }
        let len: u64 = len
            .parse()
            .ok()
            .filter(|&n| n <= MAX_HASHED_LEN)
            .ok_or(bad("the byte count is too large"))?;
        let words_bytes = unhex(words).ok_or(bad("the words are not lowercase hex"))?;
        let words_bytes: [u8; 32] = words_bytes.try_into().map_err(|_| bad("not eight words"))?;
        let tail = unhex(tail).ok_or(bad("the tail is not lowercase hex"))?;
        if tail.len() as u64 != len % 64 {
            return Err(bad("the tail's length is not the byte count modulo 64"));
        }
        let mut state = Self::new();
        for (w, b) in state.words.iter_mut().zip(words_bytes.chunks_exact(4)) {
            *w = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        }
        state.len = len;
        state.tail[..tail.len()].copy_from_slice(&tail);
        Ok(state)
    }
}

impl fmt::Display for HashState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

impl FromStr for HashState {
    type Err = ObjectsError;
    fn from_str(s: &str) -> Result<Self, ObjectsError> {
        Self::parse(s)
    }
}

/// Runs the compression function over whole blocks, `BATCH` at a time.
fn compress(words: &mut [u32; 8], data: &[u8]) {
    let mut batch = [Block::default(); BATCH];
    for group in data.chunks(64 * BATCH) {
        let n = group.len() / 64;
        for (slot, block) in batch.iter_mut().zip(group.chunks_exact(64)) {
            slot.copy_from_slice(block);
        }
        sha2::compress256(words, &batch[..n]);
    }
}

/// A finished file: its SHA-256 and its length in bytes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FileDigest {
    /// The SHA-256 of the file's bytes.
    pub sha256: [u8; 32],
    /// The file's length in bytes.
    pub len: u64,
}

impl FileDigest {
    /// The SHA-256 as 64 lowercase hex digits.
    pub fn hex(&self) -> String {
        hex(&self.sha256)
    }

    /// `Ok` exactly when the file is `expected_len` bytes long with SHA-256 `expected_sha256`
    /// (64 hex digits, either case); [`ObjectsError::Mismatch`] when not, and
    /// [`ObjectsError::InvalidDigest`] when `expected_sha256` is not a SHA-256 in hex.
    pub fn check(&self, expected_sha256: &str, expected_len: u64) -> Result<(), ObjectsError> {
        let expected = expected_sha256.to_ascii_lowercase();
        let bytes = unhex(&expected).ok_or(ObjectsError::InvalidDigest)?;
        if bytes.len() != 32 {
            return Err(ObjectsError::InvalidDigest);
        }
        if bytes == self.sha256 && expected_len == self.len {
            return Ok(());
        }
        Err(ObjectsError::Mismatch {
            expected,
            expected_len,
            actual: self.hex(),
            actual_len: self.len,
        })
    }
}

/// Verifies a finished file from the state stored after its last part: returns its digest when
/// it is `expected_len` bytes long with SHA-256 `expected_sha256`, and a typed error when the
/// state is malformed, the expectation is not a SHA-256, or they differ. Reads nothing stored:
/// the state carries the whole file's hash.
pub fn verify_file(
    last_state: &str,
    expected_sha256: &str,
    expected_len: u64,
) -> Result<FileDigest, ObjectsError> {
    let digest = HashState::parse(last_state)?.finish();
    digest.check(expected_sha256, expected_len)?;
    Ok(digest)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Lowercase hex only, an even number of digits.
fn unhex(s: &str) -> Option<Vec<u8>> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.as_bytes()
        .chunks_exact(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sha2::{Digest, Sha256};

    fn reference(data: &[u8]) -> [u8; 32] {
        Sha256::digest(data).into()
    }

    #[test]
    fn known_answers() {
        assert_eq!(
            HashState::new().finish().hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut s = HashState::new();
        s.update(b"abc").unwrap();
        assert_eq!(
            s.finish().hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn every_length_around_the_padding_edges() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for n in 0..data.len() {
            let mut s = HashState::new();
            s.update(&data[..n]).unwrap();
            assert_eq!(s.finish().sha256, reference(&data[..n]), "length {n}");
        }
    }

    #[test]
    fn parse_refuses_what_encode_never_writes() {
        let mut s = HashState::new();
        s.update(&[1; 70]).unwrap();
        let good = s.encode();
        assert_eq!(HashState::parse(&good).unwrap(), s);
        let bad = [
            String::new(),
            good.replace("sha256:v1:", "sha256:v2:"),
            good.replace(":70:", ":71:"),
            good.replace(":70:", ":070:"),
            good.replace(":70:", "::"),
            good.to_ascii_uppercase(),
            format!("{good}00"),
            format!("{good}:"),
            good[..good.len() - 2].to_owned(),
            format!("sha256:v1:{}:{}:", u64::MAX, "0".repeat(64)),
            format!("sha256:v1:64:{}:", "0".repeat(62)),
        ];
        for b in bad {
            assert!(
                matches!(HashState::parse(&b), Err(ObjectsError::InvalidState(_))),
                "{b:?}"
            );
        }
    }

    #[test]
    fn too_long_is_refused_and_changes_nothing() {
        let mut s = HashState::parse(&format!(
            "sha256:v1:{}:{}:",
            MAX_HASHED_LEN - 63,
            "0".repeat(64)
        ))
        .unwrap();
        let before = s.clone();
        assert!(matches!(s.update(&[0; 64]), Err(ObjectsError::FileTooLong)));
        assert_eq!(s, before);
        s.update(&[0; 63]).unwrap();
        assert_eq!(s.len(), MAX_HASHED_LEN);
    }

    #[test]
    fn check_and_verify() {
        let mut s = HashState::new();
        s.update(b"abc").unwrap();
        let hex = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let d = verify_file(&s.encode(), hex, 3).unwrap();
        assert_eq!(d.len, 3);
        verify_file(&s.encode(), &hex.to_ascii_uppercase(), 3).unwrap();
        assert!(matches!(
            verify_file(&s.encode(), hex, 4),
            Err(ObjectsError::Mismatch { actual_len: 3, .. })
        ));
        assert!(matches!(
            verify_file(&s.encode(), &hex.replace('b', "c"), 3),
            Err(ObjectsError::Mismatch { .. })
        ));
        assert!(matches!(
            verify_file(&s.encode(), "abc", 3),
            Err(ObjectsError::InvalidDigest)
        ));
        assert!(matches!(
            verify_file("nonsense", hex, 3),
            Err(ObjectsError::InvalidState(_))
        ));
    }

    proptest! {
        /// Any split of any input, each piece hashed in a state that went through its string
        /// form (as between two requests), gives `sha2::Sha256`'s digest.
        #[test]
        fn arbitrary_splits_through_strings_match_sha2(
            data in proptest::collection::vec(any::<u8>(), 0..2000),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (data.len() + 1)).collect();
            cuts.push(0);
            cuts.push(data.len());
            cuts.sort_unstable();
            let mut state = HashState::new().encode();
            for w in cuts.windows(2) {
                let mut s = HashState::parse(&state).unwrap();
                s.update(&data[w[0]..w[1]]).unwrap();
                state = s.encode();
            }
            let s = HashState::parse(&state).unwrap();
            prop_assert_eq!(s.len(), data.len() as u64);
            prop_assert_eq!(s.finish().sha256, reference(&data));
        }

        /// Parts of whole blocks leave no tail: the state between parts is words and a count.
        #[test]
        fn block_aligned_parts_leave_no_tail(blocks in 0usize..40, extra in 0usize..64) {
            let data: Vec<u8> = (0..blocks * 64 + extra).map(|i| (i % 251) as u8).collect();
            let mut s = HashState::new();
            s.update(&data[..blocks * 64]).unwrap();
            prop_assert!(s.is_block_aligned());
            prop_assert!(s.encode().ends_with(':'));
            s.update(&data[blocks * 64..]).unwrap();
            prop_assert_eq!(s.is_block_aligned(), extra == 0);
            prop_assert_eq!(s.finish().sha256, reference(&data));
        }
    }
}
