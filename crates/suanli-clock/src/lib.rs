//! The one place Suanli reads the wall clock.
//!
//! The market's rules (`suanli-core`) never read the time: every decision takes `now_ms` as an
//! argument. The exchange, the store's identifiers, the agent and the CLI get that time here, so a
//! tidy test (`crates/suanli/tests/tidy.rs`) can hold the line that nothing else reads it, and a
//! simulation can drive the whole market with a clock of its own.
//!
//! Monotonic timers (`std::time::Instant`) for timeouts and measurements are not the market's
//! time and may be used anywhere.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The wall clock now.
pub fn now() -> SystemTime {
    SystemTime::now()
}

/// Time since the Unix epoch now (zero should the clock be set before 1970).
pub fn since_epoch() -> Duration {
    now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO)
}

/// Milliseconds since the Unix epoch now: the `now_ms` every rule of the market is given.
pub fn now_ms() -> i64 {
    i64::try_from(since_epoch().as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_readings_agree() {
        let before = now_ms();
        let epoch = since_epoch();
        let after = now_ms();
        assert!(before > 1_700_000_000_000, "the clock reads {before}");
        assert!(before <= after);
        let ms = i64::try_from(epoch.as_millis()).unwrap();
        assert!(before <= ms && ms <= after);
    }
}
