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

/// Whether `c` is a bidirectional formatting control: the embeddings and overrides
/// (U+202A–U+202E, among them the right-to-left override), the isolates (U+2066–U+2069) and the
/// marks (U+200E, U+200F, U+061C). They reorder what a reader sees, so a name holding one can show
/// as another ("Suanli\u{202E}rotarepO" reads "Suanli Operator" backwards).
pub fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}'
    )
}

/// Whether `c` is a default-ignorable code point (Unicode's `Default_Ignorable_Code_Point`):
/// drawn as nothing (zero-width space and joiners, word joiner, soft hyphen, variation selectors,
/// the BOM, Hangul fillers, tags).
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFF8}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// Characters no text of the exchange may hold: control characters (other than the newline
/// where `newline` allows it), line and paragraph separators, and bidi controls.
fn forbidden(c: char, newline: bool) -> Option<&'static str> {
    if c == '\n' && newline {
        return None;
    }
    if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
        return Some(if newline {
            "must not contain control characters other than newlines"
        } else {
            "must be one line without control characters"
        });
    }
    if is_bidi_control(c) {
        return Some("must not contain bidirectional controls (U+202A-U+202E, U+2066-U+2069, U+200E, U+200F, U+061C)");
    }
    None
}

/// Unicode normalisation form C, then trimmed of whitespace and invisible characters at both ends.
fn normalise(value: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let nfc: String = value.nfc().collect();
    nfc.trim_matches(|c: char| c.is_whitespace() || is_invisible(c))
        .to_owned()
}

/// A name shown to other orgs (org, pool, node, agent, member, token, job): normalised (NFC,
/// trimmed), 1..=MAX_NAME_LEN bytes, one line, no bidi controls, and something visible in it (a
/// name made of zero-width characters is as empty as one made of spaces). Returns the normalised
/// name, which is what is stored.
pub fn name(value: &str) -> Result<String, &'static str> {
    if let Some(why) = value.chars().find_map(|c| forbidden(c, false)) {
        return Err(why);
    }
    let name = normalise(value);
    if name.chars().all(|c| c.is_whitespace() || is_invisible(c)) {
        return Err("must not be empty (or made only of spaces and invisible characters)");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("is longer than 128 bytes");
    }
    Ok(name)
}

/// One line of free text (an external reference, an e-mail address): normalised like a name, at
/// most MAX_TEXT_LEN bytes, no control characters, no bidi controls; may be empty.
pub fn line(value: &str) -> Result<String, &'static str> {
    if let Some(why) = value.chars().find_map(|c| forbidden(c, false)) {
        return Err(why);
    }
    let line = normalise(value);
    if line.len() > MAX_TEXT_LEN {
        return Err("is longer than 512 bytes");
    }
    Ok(line)
}

/// Free text (a message, a description): at most MAX_TEXT_LEN bytes, no control characters other
/// than newlines, no bidi controls, and, unless empty, something visible in it; normalised to
/// NFC (not trimmed: it may be laid out).
pub fn text(value: &str) -> Result<String, &'static str> {
    use unicode_normalization::UnicodeNormalization;
    if let Some(why) = value.chars().find_map(|c| forbidden(c, true)) {
        return Err(why);
    }
    let text: String = value.nfc().collect();
    if text.len() > MAX_TEXT_LEN {
        return Err("is longer than 512 bytes");
    }
    if !text.is_empty() && !has_visible(&text) {
        return Err("must not be made only of spaces and invisible characters");
    }
    Ok(text)
}

/// Whether `value` has a character that is drawn (not whitespace, not invisible).
pub fn has_visible(value: &str) -> bool {
    value
        .chars()
        .any(|c| !c.is_whitespace() && !is_invisible(c) && !c.is_control())
}

/// An identifier made by the exchange (`lease_3f9a…`) as a client sends it back: 1 to 128 ASCII
/// letters, digits, `_`, `-` and `.`. Anything else cannot name an object.
pub fn id(value: &str) -> Result<(), &'static str> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err("is not an id: ids are 1 to 128 ASCII letters, digits, '_', '-' and '.'")
    }
}

/// An e-mail address: one line as [`line`] normalises it, with one `@` between a local part and
/// a domain, no spaces, at most 254 bytes.
pub fn email(value: &str) -> Result<String, &'static str> {
    let email = line(value)?;
    let well_formed = email.len() <= 254
        && !email.chars().any(char::is_whitespace)
        && matches!(email.split_once('@'), Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
    if well_formed {
        Ok(email)
    } else {
        Err("must be an e-mail address (name@domain)")
    }
}

/// The key under which two names are the same name: compatibility-normalised (NFKC, so full-width
/// "Ｓｕａｎｌｉ" is "Suanli"), invisible characters removed, runs of whitespace made one space,
/// case-folded, and mapped to Unicode's confusable skeleton (UTS #39, so "Suanli Operаtor" with a
/// Cyrillic а is "Suanli Operator", and "rn" is "m"). Org names are unique under it.
pub fn name_key(value: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    use unicode_security::confusable_detection::skeleton;
    let visible: String = value
        .nfkc()
        .filter(|c| !is_invisible(*c))
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    // Folded before and after the skeleton: its prototypes are not all lower case.
    let folded = visible.to_lowercase();
    skeleton(&folded).collect::<String>().to_lowercase()
}

/// How an org's name is shown to other orgs: as it is when it is unique under [`name_key`]; with
/// its id when it is not (an org stored before names had to be unique, until the operator renames
/// it), so that no two providers ever look the same in the catalog.
pub fn shown_name(name: &str, unique: bool, org_id: &str) -> String {
    if unique {
        name.to_owned()
    } else {
        format!("{name} ({org_id})")
    }
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
        assert_eq!(
            name("Tianjin AI Center").as_deref(),
            Ok("Tianjin AI Center")
        );
        assert!(name("  ").is_err());
        assert!(name(&"x".repeat(129)).is_err());
        assert!(name("a\u{0}b").is_err());
        assert!(slug("wuqing-core").is_ok());
        assert!(slug("a b").is_err());
        assert!(text("line\nline").is_ok());
        assert!(line("line\nline").is_err());
        assert!(name("line\nline").is_err());
    }

    #[test]
    fn names_are_trimmed_and_composed() {
        // "é" as e + combining acute becomes the one code point U+00E9.
        assert_eq!(name("  Cafe\u{301} \u{200B}").as_deref(), Ok("Caf\u{E9}"));
        assert_eq!(line(" BANK-1 ").as_deref(), Ok("BANK-1"));
        assert_eq!(line("").as_deref(), Ok(""));
    }

    #[test]
    fn bidi_controls_and_invisible_names_are_refused() {
        for c in [
            '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}',
            '\u{2068}', '\u{2069}', '\u{200E}', '\u{200F}', '\u{061C}',
        ] {
            let spoof = format!("Suanli{c}rotarepO");
            assert!(name(&spoof).is_err(), "{c:?} in a name");
            assert!(line(&spoof).is_err(), "{c:?} in a line");
            assert!(text(&spoof).is_err(), "{c:?} in a text");
        }
        assert!(name("\u{200B}\u{200C}\u{200D}").is_err());
        assert!(name("\u{2060}\u{FEFF} \u{3164}").is_err());
        assert!(name("\u{2028}x").is_err());
        // Joiners inside a name are kept (some scripts need them).
        assert!(name("a\u{200D}b").is_ok());
    }

    #[test]
    fn a_name_that_is_not_unique_is_shown_with_its_id() {
        assert_eq!(shown_name("Tianjin AI", true, "org_1"), "Tianjin AI");
        assert_eq!(
            shown_name("Tianjin AI", false, "org_2"),
            "Tianjin AI (org_2)"
        );
    }

    #[test]
    fn ids_and_emails() {
        assert!(id("lease_3f9a0c").is_ok());
        for bad in [
            "",
            "a b",
            "x\u{0}",
            "\u{202E}x",
            "\u{200B}",
            "a/b",
            &"x".repeat(129),
        ] {
            assert!(id(bad).is_err(), "{bad:?}");
        }
        assert_eq!(email(" ada@example.com ").as_deref(), Ok("ada@example.com"));
        for bad in [
            "",
            "ada",
            "@x",
            "ada@",
            "a b@x",
            "a@b@c",
            "\u{200B}",
            "a\u{202E}@x",
        ] {
            assert!(email(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keys_see_through_case_width_spacing_and_confusables() {
        let key = name_key("Suanli Operator");
        for same in [
            "suanli operator",
            "SUANLI  OPERATOR",
            "Suanli Oper\u{0430}tor", // Cyrillic а
            "\u{FF33}uanli Operator", // full-width Ｓ
            "Sua\u{200B}nli Operator",
            "Suanli\u{00A0}Operator",
        ] {
            assert_eq!(name_key(same), key, "{same:?}");
        }
        assert_ne!(name_key("Suanli Operators"), key);
        assert_eq!(name_key("modern"), name_key("rnodern"));
        assert_eq!(name_key("天津超算中心"), name_key("天津超算中心"));
        assert_ne!(name_key("天津超算中心"), name_key("北京超算中心"));
    }
}
