//! Money: integer micro-yuan (1 CNY = 1,000,000 micros), checked arithmetic, one rounding rule.
//!
//! Why micros: a vCPU sold at 0.036 CNY per hour costs 10 micros per second, so per-second billing of a
//! single vCPU is exact at realistic prices. Amounts are `u64` (up to 1.8e13 CNY); every product is
//! computed in `u128` and converted back with a check, so nothing overflows silently.
//!
//! The one rounding rule: **round down, in the payer's favour**, once, at the end of a computation.

use std::fmt;

/// Micros per whole yuan.
pub const MICROS_PER_YUAN: u64 = 1_000_000;
/// Seconds per hour, the denominator of every per-unit-hour price.
pub const SECONDS_PER_HOUR: u64 = 3_600;
/// Milliseconds per hour: metered use is counted in unit-milliseconds.
pub const MS_PER_HOUR: u64 = 3_600_000;
/// Basis points in one whole (100 %).
pub const BPS_PER_WHOLE: u64 = 10_000;

/// Arithmetic that would not fit in a `u64` of micros.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("amount overflows the largest representable amount")]
pub struct Overflow;

/// Cost of `units` for `seconds` at `price_micros_per_unit_hour`, rounded down to the micro.
pub fn cost_micros(
    price_micros_per_unit_hour: u64,
    units: u64,
    seconds: u64,
) -> Result<u64, Overflow> {
    let numerator = u128::from(price_micros_per_unit_hour)
        .checked_mul(u128::from(units))
        .and_then(|v| v.checked_mul(u128::from(seconds)))
        .ok_or(Overflow)?;
    u64::try_from(numerator / u128::from(SECONDS_PER_HOUR)).map_err(|_| Overflow)
}

/// Cost of `unit_ms` unit-milliseconds at `price_micros_per_unit_hour`, rounded down to the
/// micro: the one rounding of a lease's charge, made once, at its settlement.
pub fn cost_micros_of_unit_ms(
    price_micros_per_unit_hour: u64,
    unit_ms: u64,
) -> Result<u64, Overflow> {
    let numerator = u128::from(price_micros_per_unit_hour)
        .checked_mul(u128::from(unit_ms))
        .ok_or(Overflow)?;
    u64::try_from(numerator / u128::from(MS_PER_HOUR)).map_err(|_| Overflow)
}

/// The platform fee on `amount_micros` at `fee_bps`, rounded down (in the provider's favour).
pub fn fee_micros(amount_micros: u64, fee_bps: u32) -> u64 {
    let fee = u128::from(amount_micros) * u128::from(fee_bps) / u128::from(BPS_PER_WHOLE);
    // fee_bps <= 10_000 is validated at configuration time, so fee <= amount and fits.
    u64::try_from(fee)
        .unwrap_or(amount_micros)
        .min(amount_micros)
}

/// Formats micros as yuan with six decimals, e.g. `12.500000`.
pub struct Yuan(pub u64);

impl fmt::Display for Yuan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:06}",
            self.0 / MICROS_PER_YUAN,
            self.0 % MICROS_PER_YUAN
        )
    }
}

/// Formats a signed micro balance as yuan, e.g. `-3.000001`.
pub struct SignedYuan(pub i128);

impl fmt::Display for SignedYuan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let per = u128::from(MICROS_PER_YUAN);
        write!(f, "{sign}{}.{:06}", abs / per, abs % per)
    }
}

/// Parses a yuan amount such as `12`, `12.5` or `0.000001` into micros. At most six decimals.
pub fn parse_yuan(text: &str) -> Option<u64> {
    let text = text.trim();
    let (whole, frac) = match text.split_once('.') {
        Some((w, f)) => (w, f),
        None => (text, ""),
    };
    if whole.is_empty() && frac.is_empty() {
        return None;
    }
    if !whole.chars().all(|c| c.is_ascii_digit()) || !frac.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    if frac.len() > 6 {
        return None;
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut frac_micros: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    for _ in frac.len()..6 {
        frac_micros *= 10;
    }
    whole.checked_mul(MICROS_PER_YUAN)?.checked_add(frac_micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_rounds_down_and_is_exact_per_second() {
        // 0.036 CNY per vCPU-hour = 10 micros per second.
        assert_eq!(cost_micros(36_000, 1, 1), Ok(10));
        assert_eq!(cost_micros(36_000, 1, 3_600), Ok(36_000));
        // 1 micro per hour for one second rounds down to zero.
        assert_eq!(cost_micros(1, 1, 1), Ok(0));
        assert_eq!(cost_micros(7_200, 3, 1), Ok(6));
        assert_eq!(cost_micros(u64::MAX, u64::MAX, 2), Err(Overflow));
    }

    #[test]
    fn fee_never_exceeds_amount() {
        assert_eq!(fee_micros(1_000, 500), 50);
        assert_eq!(fee_micros(19, 500), 0);
        assert_eq!(fee_micros(u64::MAX, 10_000), u64::MAX);
    }

    #[test]
    fn yuan_round_trips() {
        assert_eq!(parse_yuan("12.5"), Some(12_500_000));
        assert_eq!(parse_yuan("0.000001"), Some(1));
        assert_eq!(parse_yuan(".5"), Some(500_000));
        assert_eq!(parse_yuan("1.0000001"), None);
        assert_eq!(parse_yuan("-1"), None);
        assert_eq!(parse_yuan(""), None);
        assert_eq!(Yuan(12_500_000).to_string(), "12.500000");
        assert_eq!(SignedYuan(-1).to_string(), "-0.000001");
    }
}
