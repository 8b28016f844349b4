//! Limits shared by every entry point ("put a limit on everything").

/// Longest name (org, pool, node, offer, token) in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Longest free text (external references, descriptions) in bytes.
pub const MAX_TEXT_LEN: usize = 512;
/// Longest duration limit of a lease: one year.
pub const MAX_DURATION_S: u64 = 366 * 24 * 3_600;
/// Most nodes in one pool registration.
pub const MAX_NODES_PER_POOL: usize = 4_096;
/// Largest single deposit or withdrawal: one billion yuan.
pub const MAX_TRANSFER_MICROS: u64 = 1_000_000_000 * 1_000_000;
/// Most units of one lease.
pub const MAX_UNITS: u64 = 1_000_000;
/// Highest platform fee: 100 %.
pub const MAX_FEE_BPS: u32 = 10_000;

/// A name: 1..=MAX_NAME_LEN bytes, no control characters, not only whitespace.
pub fn name(value: &str) -> Result<(), &'static str> {
    if value.trim().is_empty() {
        return Err("must not be empty");
    }
    if value.len() > MAX_NAME_LEN {
        return Err("is longer than 128 bytes");
    }
    if value.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    Ok(())
}

/// Free text: at most MAX_TEXT_LEN bytes, no control characters other than newlines.
pub fn text(value: &str) -> Result<(), &'static str> {
    if value.len() > MAX_TEXT_LEN {
        return Err("is longer than 512 bytes");
    }
    if value.chars().any(|c| c.is_control() && c != '\n') {
        return Err("must not contain control characters");
    }
    Ok(())
}

/// An identifier-like token (zone, region, model, partition): ASCII letters, digits, `-`, `_`, `.`.
pub fn slug(value: &str) -> Result<(), &'static str> {
    if value.is_empty() || value.len() > 64 {
        return Err("must be 1 to 64 characters");
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err("may only contain ASCII letters, digits, '-', '_' and '.'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_hold() {
        assert!(name("Tianjin AI Center").is_ok());
        assert!(name("  ").is_err());
        assert!(name(&"x".repeat(129)).is_err());
        assert!(name("a\u{0}b").is_err());
        assert!(slug("wuqing-core").is_ok());
        assert!(slug("a b").is_err());
        assert!(text("line\nline").is_ok());
    }
}
