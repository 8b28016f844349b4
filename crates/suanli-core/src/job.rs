//! The job state machine: queued → dispatched → running → one final state, with attempts.
//!
//! A job is queued on a lease; an agent's poll dispatches it as a new **attempt**; the agent reports
//! the attempt running and then how it ended. An attempt whose agent is lost ends `lost`; a
//! restartable job then goes back to the queue for a new attempt. Only the current attempt may
//! change a job: reports naming an older attempt are refused (fencing).

/// A job's (and an attempt's) state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    Queued,
    Dispatched,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
    Lost,
}

impl JobState {
    pub const ALL: [JobState; 8] = [
        JobState::Queued,
        JobState::Dispatched,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
        JobState::TimedOut,
        JobState::Lost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Dispatched => "dispatched",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::TimedOut => "timed_out",
            JobState::Lost => "lost",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|j| j.as_str() == s)
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded
                | JobState::Failed
                | JobState::Cancelled
                | JobState::TimedOut
                | JobState::Lost
        )
    }
}

/// What can happen to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEvent {
    /// An agent took the job as a new attempt.
    Dispatch,
    /// The agent started it.
    Start,
    /// The agent reports how the attempt ended (a final state other than `Lost`).
    Finish(JobState),
    /// The consumer cancelled it, or its lease ended.
    Cancel,
    /// Its agent went silent past the lost time.
    AgentLost { restartable: bool },
}

/// A transition the state machine refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {} job cannot take {event:?}", from.as_str())]
pub struct InvalidTransition {
    pub from: JobState,
    pub event: JobEvent,
}

/// The job's next state.
pub fn next(from: JobState, event: JobEvent) -> Result<JobState, InvalidTransition> {
    use JobState::*;
    let bad = Err(InvalidTransition { from, event });
    match (from, event) {
        (Queued, JobEvent::Dispatch) => Ok(Dispatched),
        (Dispatched, JobEvent::Start) => Ok(Running),
        (Running, JobEvent::Start) => Ok(Running),
        (Dispatched | Running, JobEvent::Finish(s)) if s.is_final() && s != Lost => Ok(s),
        (Queued | Dispatched | Running, JobEvent::Cancel) => Ok(Cancelled),
        (Dispatched | Running, JobEvent::AgentLost { restartable: true }) => Ok(Queued),
        (Dispatched | Running, JobEvent::AgentLost { restartable: false }) => Ok(Lost),
        _ => bad,
    }
}

/// Clock skew allowed between an agent's clock and the exchange's: a report may claim usage up to
/// this much past the exchange's "now" (see [`UsageWindow::max_unit_ms`]).
pub const USAGE_CLOCK_SLACK_MS: i64 = 2_000;

/// The time an attempt may have run, which bounds the usage its agent may report: from the
/// exchange's dispatch of the attempt to the earliest of now, the attempt's time limit and its
/// lease's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageWindow {
    /// The lease's units: the attempt runs on all of them.
    pub units: u64,
    /// When the exchange dispatched the attempt (the agent cannot have started it earlier).
    pub dispatched_ms: i64,
    /// The job's time limit.
    pub time_limit_ms: u64,
    /// When the lease's duration limit passes.
    pub lease_ends_ms: i64,
}

impl UsageWindow {
    /// The latest instant the attempt can have run to, as of `now_ms`: `now_ms` plus the clock
    /// slack, but never past the attempt's time limit or the lease's end. Those two are the
    /// exchange's own instants, so the slack never extends them.
    pub fn end_ms(&self, now_ms: i64) -> i64 {
        let limit_ms = i64::try_from(self.time_limit_ms).unwrap_or(i64::MAX);
        now_ms
            .saturating_add(USAGE_CLOCK_SLACK_MS)
            .min(self.dispatched_ms.saturating_add(limit_ms))
            .min(self.lease_ends_ms)
    }

    /// The most unit-milliseconds the attempt can have used by `now_ms`.
    pub fn max_unit_ms(&self, now_ms: i64) -> u64 {
        let elapsed_ms = self
            .end_ms(now_ms)
            .saturating_sub(self.dispatched_ms)
            .max(0);
        self.units.saturating_mul(elapsed_ms as u64)
    }
}

/// A usage record claiming more than the attempt can have used by the time it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the record claims {claimed_unit_ms} unit-ms, bringing the attempt to {total_unit_ms}; by now \
     it can have used at most {bound_unit_ms} ({units} units × {elapsed_ms} ms since its dispatch, \
     {slack_ms} ms of clock skew allowed)"
)]
pub struct UsageRefusal {
    pub claimed_unit_ms: u64,
    /// The attempt's total with the record.
    pub total_unit_ms: u64,
    pub bound_unit_ms: u64,
    pub units: u64,
    pub elapsed_ms: u64,
    pub slack_ms: i64,
}

/// Judges one usage record that arrived at `now_ms`: an attempt's metered usage never exceeds
/// what [`UsageWindow::max_unit_ms`] allows at the time it is reported. A record that would take
/// the attempt past it is refused (and must never be charged); late records from an agent that
/// was away are accepted as long as the total stays within the bound. Returns how much of the
/// record is billed: all of it, unless the lease's own cap (`lease_room_unit_ms`, see
/// [`lease_room_unit_ms`]) is smaller.
pub fn judge_usage(
    window: &UsageWindow,
    attempt_total_unit_ms: u64,
    claimed_unit_ms: u64,
    lease_room_unit_ms: u64,
    now_ms: i64,
) -> Result<u64, UsageRefusal> {
    let bound = window.max_unit_ms(now_ms);
    let total = attempt_total_unit_ms.saturating_add(claimed_unit_ms);
    if total > bound {
        return Err(UsageRefusal {
            claimed_unit_ms,
            total_unit_ms: total,
            bound_unit_ms: bound,
            units: window.units,
            elapsed_ms: window
                .end_ms(now_ms)
                .saturating_sub(window.dispatched_ms)
                .max(0) as u64,
            slack_ms: USAGE_CLOCK_SLACK_MS,
        });
    }
    Ok(claimed_unit_ms.min(lease_room_unit_ms))
}

/// How many more unit-milliseconds a lease may bill: its total never passes its units × duration
/// limit, nor what the hold covers at the lease's price (`floor(hold × 3,600,000 / price)`).
/// Attempts within their [`UsageWindow`] stay under the first; the second differs from it by
/// less than one micro-yuan's worth (the hold is rounded down).
pub fn lease_room_unit_ms(
    lease_metered_unit_ms: u64,
    units: u64,
    duration_limit_s: u64,
    hold_micros: u64,
    price_micros_per_unit_hour: u64,
) -> u64 {
    let by_limit = units.saturating_mul(duration_limit_s).saturating_mul(1_000);
    let by_hold = if price_micros_per_unit_hour == 0 {
        u64::MAX
    } else {
        u64::try_from(
            u128::from(hold_micros) * u128::from(crate::money::MS_PER_HOUR)
                / u128::from(price_micros_per_unit_hour),
        )
        .unwrap_or(u64::MAX)
    };
    by_limit.min(by_hold).saturating_sub(lease_metered_unit_ms)
}

/// A job's own start and end as its agent saw them (Unix ms), kept within what the exchange
/// knows: not before the attempt was dispatched, not after `now_ms` (an agent's clock may be
/// off), the end not before the start. A report delayed by retries (of the job's logs, of the
/// exchange) then still says how long the job itself ran.
pub fn job_times(
    dispatched_ms: i64,
    started_ms: Option<i64>,
    ended_ms: Option<i64>,
    now_ms: i64,
) -> (Option<i64>, Option<i64>) {
    let now = now_ms.max(dispatched_ms);
    let clamp = |t: i64| t.clamp(dispatched_ms, now);
    let started = started_ms.map(clamp);
    let ended = ended_ms.map(|e| clamp(e).max(started.unwrap_or(dispatched_ms)));
    (started, ended)
}

/// The exchange's cap on one job's log. A job keeps its first `head` bytes; past them the
/// exchange keeps only the latest `tail` bytes, behind one notice that says how many bytes were
/// dropped there, so a consumer always sees how the job began and how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogCap {
    /// Bytes kept from the start of the log.
    pub head: u64,
    /// Bytes kept from its end once the head is full.
    pub tail: u64,
}

impl LogCap {
    /// The most a tail keeps, whatever the cap.
    pub const MAX_TAIL: u64 = 256 * 1024;

    /// Splits a cap of `max_bytes` per job: a quarter (at most [`LogCap::MAX_TAIL`]) for the tail.
    pub fn new(max_bytes: u64) -> LogCap {
        let tail = (max_bytes / 4).min(Self::MAX_TAIL);
        LogCap {
            head: max_bytes - tail,
            tail,
        }
    }

    /// Whether a chunk of `len` bytes still fits the head that holds `head_bytes`.
    pub fn fits_head(&self, head_bytes: u64, len: u64) -> bool {
        head_bytes.saturating_add(len) <= self.head
    }

    /// Given the sizes of the chunks kept behind the notice, newest first, how many to keep:
    /// the newest chunks whose sizes add up to at most the tail, and always the newest one (a
    /// chunk is at most a batch, so the last words of a job are never lost to the cap).
    pub fn tail_keeps(&self, sizes_newest_first: &[u64]) -> usize {
        let mut total = 0u64;
        let mut keep = 0;
        for &len in sizes_newest_first {
            total = total.saturating_add(len);
            if keep > 0 && total > self.tail {
                break;
            }
            keep += 1;
        }
        keep
    }

    /// The last words of a capped log, once its job ended (a reader that followed the log live
    /// saw the notice before the count was final).
    pub fn summary(head_bytes: u64, dropped: u64) -> String {
        format!(
            "[suanli] this job's log passed the exchange's cap: it keeps the first {head_bytes} \
             bytes and the last output; {dropped} bytes between them were dropped\n"
        )
    }

    /// The notice that stands where the exchange stopped keeping a job's log, after its first
    /// `head_bytes`.
    pub fn notice(head_bytes: u64, dropped: u64) -> String {
        format!(
            "[suanli] this job's log passed the exchange's cap: the first {head_bytes} bytes are \
             above, {dropped} bytes after them were dropped here, and the last output follows\n"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobState::*;

    #[test]
    fn happy_path_and_refusals() {
        assert_eq!(next(Queued, JobEvent::Dispatch), Ok(Dispatched));
        assert_eq!(next(Dispatched, JobEvent::Start), Ok(Running));
        assert_eq!(next(Running, JobEvent::Finish(Succeeded)), Ok(Succeeded));
        assert_eq!(next(Running, JobEvent::Finish(TimedOut)), Ok(TimedOut));
        assert!(next(Running, JobEvent::Finish(Lost)).is_err());
        assert!(next(Running, JobEvent::Finish(Running)).is_err());
        assert!(next(Succeeded, JobEvent::Cancel).is_err());
        assert!(next(Queued, JobEvent::Start).is_err());
        assert_eq!(next(Queued, JobEvent::Cancel), Ok(Cancelled));
        assert_eq!(
            next(Running, JobEvent::AgentLost { restartable: true }),
            Ok(Queued)
        );
        assert_eq!(
            next(Dispatched, JobEvent::AgentLost { restartable: false }),
            Ok(Lost)
        );
        for s in JobState::ALL {
            assert_eq!(JobState::parse(s.as_str()), Some(s));
            if s.is_final() {
                assert!(next(s, JobEvent::Dispatch).is_err(), "{s:?} is final");
            }
        }
    }

    #[test]
    fn usage_never_bills_past_limit_or_hold() {
        // 2 units for 60 s: at most 120,000 unit-ms.
        let room = |used, hold, price| lease_room_unit_ms(used, 2, 60, hold, price);
        assert_eq!(room(0, u64::MAX, 3_600), 120_000);
        assert_eq!(room(100_000, u64::MAX, 3_600), 20_000);
        assert_eq!(room(120_000, u64::MAX, 3_600), 0);
        // A hold of 100 micros at 3,600 micros per unit-hour pays 100,000 unit-ms.
        assert_eq!(room(90_000, 100, 3_600), 10_000);
    }

    fn window() -> UsageWindow {
        UsageWindow {
            units: 2,
            dispatched_ms: 10_000,
            time_limit_ms: 60_000,
            lease_ends_ms: 50_000,
        }
    }

    /// The case: 1,000 unit-seconds claimed 0.01 s after a 2-unit attempt started.
    #[test]
    fn a_claim_faster_than_time_is_refused() {
        let w = window();
        let e = judge_usage(&w, 0, 1_000_000, u64::MAX, 10_010).unwrap_err();
        assert_eq!(e.bound_unit_ms, 2 * 2_010);
        assert_eq!(e.total_unit_ms, 1_000_000);
        assert!(e.to_string().contains("at most 4020"), "{e}");
        // 10^9 unit-seconds is refused, not capped.
        assert!(judge_usage(&w, 0, 1_000_000_000_000, u64::MAX, 30_000).is_err());
        // Within the bound: counted in full.
        assert_eq!(judge_usage(&w, 0, 4_020, u64::MAX, 10_010), Ok(4_020));
        // The lease's end bounds it, whatever the slack: 2 × 40 s.
        assert_eq!(w.max_unit_ms(1_000_000), 80_000);
        // Before dispatch (a clock far behind): only the slack.
        assert_eq!(w.max_unit_ms(0), 0);
    }

    proptest::proptest! {
        /// An honest agent (usage = units × time since it started the attempt, started at or
        /// after dispatch, reported late or not, in any number of records) is never refused.
        #[test]
        fn honest_reports_are_always_accepted(
            units in 1u64..64,
            start_delay_ms in 0i64..5_000,
            limit_s in 1u64..3_600,
            lease_s in 1u64..7_200,
            reports in proptest::collection::vec((0i64..7_200_000, 0i64..600_000), 1..20),
        ) {
            let w = UsageWindow {
                units,
                dispatched_ms: 1_000_000,
                time_limit_ms: limit_s * 1_000,
                lease_ends_ms: 1_000_000 + i64::try_from(lease_s * 1_000).unwrap(),
            };
            let started = w.dispatched_ms + start_delay_ms;
            // The agent stops the job at its limit or the lease's end.
            let stop = (started + i64::try_from(w.time_limit_ms).unwrap()).min(w.lease_ends_ms);
            let mut measured_to: Vec<(i64, i64)> = reports
                .iter()
                .map(|(at, late)| ((started + at).min(stop.max(started)), *late))
                .collect();
            measured_to.sort();
            let mut total = 0u64;
            for (measured_at, late_ms) in measured_to {
                let used = units * u64::try_from(measured_at - started).unwrap();
                let claim = used - total;
                // Sent when measured, or later (the agent was away).
                let now = measured_at + late_ms;
                let billed = judge_usage(&w, total, claim, u64::MAX, now);
                proptest::prop_assert_eq!(billed, Ok(claim));
                total = used;
            }
        }

        /// Whatever is claimed, what is accepted never exceeds units × the time since dispatch
        /// (plus the slack), the time limit or the lease's end, at the moment it is accepted.
        #[test]
        fn accepted_usage_never_outruns_time(
            units in 1u64..64,
            limit_s in 1u64..3_600,
            lease_s in 1u64..7_200,
            claims in proptest::collection::vec((0u64..10_000_000_000, 0i64..8_000_000), 1..30),
        ) {
            let w = UsageWindow {
                units,
                dispatched_ms: 5_000,
                time_limit_ms: limit_s * 1_000,
                lease_ends_ms: 5_000 + i64::try_from(lease_s * 1_000).unwrap(),
            };
            let mut total = 0u64;
            let mut now = 0i64;
            for (claim, step) in claims {
                now += step;
                if let Ok(billed) = judge_usage(&w, total, claim, u64::MAX, now) {
                    total += billed;
                }
                let elapsed = (now + USAGE_CLOCK_SLACK_MS)
                    .min(w.dispatched_ms + i64::try_from(w.time_limit_ms).unwrap())
                    .min(w.lease_ends_ms)
                    - w.dispatched_ms;
                proptest::prop_assert!(total <= units * u64::try_from(elapsed.max(0)).unwrap());
                proptest::prop_assert!(total <= units * limit_s * 1_000);
            }
        }
    }

    #[test]
    fn log_cap_keeps_head_and_newest_tail() {
        let cap = LogCap::new(1_000);
        assert_eq!(
            cap,
            LogCap {
                head: 750,
                tail: 250
            }
        );
        let big = LogCap::new(128 << 20);
        assert_eq!(big.tail, LogCap::MAX_TAIL);
        assert_eq!(big.head + big.tail, 128 << 20);
        assert!(cap.fits_head(700, 50));
        assert!(!cap.fits_head(700, 51));
        assert_eq!(cap.tail_keeps(&[100, 100, 100]), 2);
        assert_eq!(cap.tail_keeps(&[250, 1]), 1);
        // The newest chunk stays even when it alone passes the tail.
        assert_eq!(cap.tail_keeps(&[900, 1]), 1);
        assert_eq!(cap.tail_keeps(&[]), 0);
        assert!(LogCap::notice(750, 12_345).contains("first 750 bytes are above, 12345 bytes"));
        assert!(LogCap::summary(750, 9).contains("first 750 bytes and the last output; 9 bytes"));
        assert_eq!(LogCap::new(0), LogCap { head: 0, tail: 0 });
    }

    #[test]
    fn job_times_stay_between_dispatch_and_now() {
        // As reported when plausible.
        assert_eq!(
            job_times(1_000, Some(1_100), Some(1_200), 9_000),
            (Some(1_100), Some(1_200))
        );
        // A clock ahead or behind is held to what the exchange saw.
        assert_eq!(
            job_times(1_000, Some(500), Some(20_000), 9_000),
            (Some(1_000), Some(9_000))
        );
        // An end before the start is the start.
        assert_eq!(
            job_times(1_000, Some(5_000), Some(2_000), 9_000),
            (Some(5_000), Some(5_000))
        );
        assert_eq!(job_times(1_000, None, None, 9_000), (None, None));
        assert_eq!(
            job_times(1_000, None, Some(500), 9_000),
            (None, Some(1_000))
        );
    }
}
