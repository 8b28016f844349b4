//! How values read in tables and pairs: money, prices, memory, unit-seconds; and the tables and
//! label/value pairs themselves, aligned by the columns a terminal gives each character.

use suanli_core::money::{SignedYuan, Yuan};

/// Micros as `¥12.500000`.
pub fn yuan(micros: u64) -> String {
    format!("¥{}", Yuan(micros))
}

/// Signed micros as `¥12.500000` or `-¥3.000001`.
pub fn signed_yuan(micros: i64) -> String {
    if micros < 0 {
        format!("-¥{}", SignedYuan(-i128::from(micros)))
    } else {
        format!("¥{}", SignedYuan(i128::from(micros)))
    }
}

/// A price as `¥12.500000/unit-h`.
pub fn price(micros_per_unit_hour: u64) -> String {
    format!("{}/unit-h", yuan(micros_per_unit_hour))
}

/// Micros as yuan for a command line: `12.5`, `1000`.
pub(super) fn yuan_arg(micros: u64) -> String {
    let text = Yuan(micros).to_string();
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// MiB as `256GiB` when whole, else `1536MiB`.
pub(super) fn memory(mib: u64) -> String {
    let gib = mib / 1024;
    if gib * 1024 == mib {
        format!("{gib}GiB")
    } else {
        format!("{mib}MiB")
    }
}

pub(super) fn or_dash(value: Option<&str>) -> String {
    value.unwrap_or("-").to_owned()
}

/// Columns a terminal gives `text`: two for East Asian wide characters (CJK, Hangul, full-width
/// forms), one for the others.
pub fn display_width(text: &str) -> usize {
    text.chars()
        .map(|c| match u32::from(c) {
            0x1100..=0x115F
            | 0x2E80..=0x303E
            | 0x3041..=0x33FF
            | 0x3400..=0x4DBF
            | 0x4E00..=0x9FFF
            | 0xA000..=0xA4CF
            | 0xAC00..=0xD7A3
            | 0xF900..=0xFAFF
            | 0xFE30..=0xFE4F
            | 0xFF00..=0xFF60
            | 0xFFE0..=0xFFE6
            | 0x20000..=0x3FFFD => 2,
            _ => 1,
        })
        .sum()
}

/// An aligned table: a header row and rows, columns padded to their widest cell and two spaces
/// apart. `(none)` when there are no rows.
pub fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    if rows.is_empty() {
        return "(none)\n".to_owned();
    }
    let mut widths: Vec<usize> = header.iter().map(|h| display_width(h)).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(display_width(cell));
        }
    }
    let mut text = String::new();
    let mut push_row = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            text.push_str(cell);
            if i < last {
                let pad = width.saturating_sub(display_width(cell)) + 2;
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        text.push('\n');
    };
    push_row(header.to_vec());
    for row in rows {
        push_row(row.iter().map(String::as_str).collect());
    }
    text
}

/// Labels and values, one pair a line, values aligned.
pub fn render_pairs(pairs: &[(&str, String)]) -> String {
    let width = pairs
        .iter()
        .map(|(label, _)| display_width(label))
        .max()
        .unwrap_or(0);
    let mut text = String::new();
    for (label, value) in pairs {
        let pad = width - display_width(label) + 2;
        text.push_str(label);
        text.extend(std::iter::repeat_n(' ', pad));
        text.push_str(value);
        text.push('\n');
    }
    text
}

/// Unit-milliseconds as unit-seconds with three decimals: `12.345 unit-s`.
pub(super) fn unit_seconds(unit_ms: u64) -> String {
    format!("{}.{:03} unit-s", unit_ms / 1_000, unit_ms % 1_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let text = render_table(
            &["ID", "PRICE"],
            &[
                vec!["off_1".into(), "¥1.000000".into()],
                vec!["o".into(), "¥12.000000".into()],
            ],
        );
        assert_eq!(text, "ID     PRICE\noff_1  ¥1.000000\no      ¥12.000000\n");
        assert_eq!(render_table(&["A"], &[]), "(none)\n");
        let text = render_table(
            &["NAME", "KIND"],
            &[vec!["武清 Wuqing".into(), "core".into()]],
        );
        assert_eq!(text, "NAME         KIND\n武清 Wuqing  core\n");
        assert_eq!(display_width("¥1× –"), 5);
        assert_eq!(
            render_pairs(&[("a", "1".into()), ("long", "2".into())]),
            "a     1\nlong  2\n"
        );
    }
}
