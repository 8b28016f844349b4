//! How a file's parts are named in the store, and how a byte range of the file maps onto them.

use std::ops::Range;

use object_store::path::Path;

use crate::ObjectsError;

/// The longest file key.
pub const MAX_KEY_LEN: usize = 128;

/// A file's name in the store: 1 to [`MAX_KEY_LEN`] ASCII letters, digits, `-` or `_` (an id
/// from the caller's database), so that it is one path segment everywhere, unescaped. Its parts
/// are the objects `files/<key>/<part number, 10 digits>`.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct FileKey(String);

impl FileKey {
    /// The key, when it is one ([`ObjectsError::InvalidKey`] when not).
    pub fn new(key: impl Into<String>) -> Result<Self, ObjectsError> {
        let key = key.into();
        let ok = (1..=MAX_KEY_LEN).contains(&key.len())
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(key))
        } else {
            Err(ObjectsError::InvalidKey(key))
        }
    }

    /// The key as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The prefix under which all the file's parts are.
    pub(crate) fn prefix(&self) -> Path {
        Path::from(format!("files/{}", self.0))
    }

    /// Where part `part` (from 1) is stored. Ten digits sort in numeric order.
    pub(crate) fn part_path(&self, part: u32) -> Path {
        Path::from(format!("files/{}/{part:010}", self.0))
    }
}

/// Parses the last segment of a part's path back into its number: exactly ten digits, not 0.
pub(crate) fn part_number(name: &str) -> Option<u32> {
    if name.len() != 10 || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok().filter(|&n| n > 0)
}

/// A piece of a read: bytes `range` of part `part` (numbered from 1).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Segment {
    /// The part's number, from 1.
    pub part: u32,
    /// The bytes of the part, relative to the part's start; never empty.
    pub range: Range<u64>,
}

/// Maps bytes `range` of a file whose parts (1, 2, …) have lengths `parts` onto the parts: the
/// segments, in order, whose bytes concatenated are exactly the file's bytes in `range`. Parts
/// the range does not touch, and empty parts, give no segment; an empty range gives none.
/// [`ObjectsError::InvalidRange`] when the range ends before it starts or past the file's end
/// (or the lengths add up past `u64`, or there are more than `u32::MAX` parts).
pub fn map_range(parts: &[u64], range: Range<u64>) -> Result<Vec<Segment>, ObjectsError> {
    let total = parts
        .iter()
        .try_fold(0u64, |sum, &len| sum.checked_add(len))
        .filter(|_| u32::try_from(parts.len()).is_ok());
    let invalid = ObjectsError::InvalidRange {
        start: range.start,
        end: range.end,
        len: total.unwrap_or(u64::MAX),
    };
    let Some(total) = total else {
        return Err(invalid);
    };
    if range.start > range.end || range.end > total {
        return Err(invalid);
    }
    let mut segments = Vec::new();
    if range.is_empty() {
        return Ok(segments);
    }
    let mut offset = 0u64;
    for (number, &len) in (1u32..).zip(parts) {
        let (start, end) = (offset, offset + len);
        offset = end;
        if end <= range.start || len == 0 {
            continue;
        }
        if start >= range.end {
            break;
        }
        segments.push(Segment {
            part: number,
            range: range.start.max(start) - start..range.end.min(end) - start,
        });
    }
    Ok(segments)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keys() {
        for good in ["a", "fil_01HZX-abc", &"k".repeat(MAX_KEY_LEN)] {
            assert_eq!(FileKey::new(good).unwrap().as_str(), good);
        }
        for bad in [
            "",
            "a/b",
            "..",
            "a.b",
            "a b",
            "é",
            &"k".repeat(MAX_KEY_LEN + 1),
        ] {
            assert!(matches!(
                FileKey::new(bad),
                Err(ObjectsError::InvalidKey(_))
            ));
        }
        let k = FileKey::new("f1").unwrap();
        assert_eq!(k.part_path(7).as_ref(), "files/f1/0000000007");
        assert_eq!(k.prefix().as_ref(), "files/f1");
        assert_eq!(part_number("0000000007"), Some(7));
        assert_eq!(part_number(&format!("{:010}", u32::MAX)), Some(u32::MAX));
        for bad in ["0000000000", "7", "000000000a", "9999999999", "00000000007"] {
            assert_eq!(part_number(bad), None, "{bad}");
        }
    }

    #[test]
    fn ranges_across_boundaries() {
        let parts = [64, 0, 128, 10];
        assert_eq!(map_range(&parts, 0..0).unwrap(), vec![]);
        assert_eq!(
            map_range(&parts, 60..70).unwrap(),
            vec![
                Segment {
                    part: 1,
                    range: 60..64
                },
                Segment {
                    part: 3,
                    range: 0..6
                }
            ]
        );
        assert_eq!(
            map_range(&parts, 64..202).unwrap(),
            vec![
                Segment {
                    part: 3,
                    range: 0..128
                },
                Segment {
                    part: 4,
                    range: 0..10
                }
            ]
        );
        assert!(matches!(
            map_range(&parts, 0..203),
            Err(ObjectsError::InvalidRange { len: 202, .. })
        ));
        #[allow(clippy::reversed_empty_ranges)]
        let backwards = 5..4;
        assert!(map_range(&parts, backwards).is_err());
        assert!(map_range(&[u64::MAX, 1], 0..1).is_err());
    }

    proptest! {
        /// The segments' bytes, cut from each part, are the file's bytes in the range.
        #[test]
        fn segments_concatenate_to_the_slice(
            lens in proptest::collection::vec(0u64..50, 0..8),
            a in any::<u64>(),
            b in any::<u64>(),
        ) {
            let file: Vec<u8> = (0..lens.iter().sum::<u64>()).map(|i| i as u8).collect();
            let total = file.len() as u64;
            let (mut start, mut end) = (a % (total + 1), b % (total + 1));
            if start > end {
                std::mem::swap(&mut start, &mut end);
            }
            let mut parts = Vec::new();
            let mut offset = 0usize;
            for &len in &lens {
                parts.push(&file[offset..offset + len as usize]);
                offset += len as usize;
            }
            let mut got = Vec::new();
            for s in map_range(&lens, start..end).unwrap() {
                prop_assert!(!s.range.is_empty());
                let part = parts[(s.part - 1) as usize];
                got.extend_from_slice(&part[s.range.start as usize..s.range.end as usize]);
            }
            prop_assert_eq!(&got[..], &file[start as usize..end as usize]);
        }
    }
}
