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

/// How many unit-seconds of a usage report may still be billed: the total never passes the lease's
/// units × duration limit, nor what the hold covers at the lease's price.
pub fn billable_unit_seconds(
    already_unit_seconds: u64,
    reported_unit_seconds: u64,
    units: u64,
    duration_limit_s: u64,
    hold_micros: u64,
    price_micros_per_unit_hour: u64,
) -> u64 {
    let by_limit = units.saturating_mul(duration_limit_s);
    // The most unit-seconds the hold pays for: floor(hold × 3600 / price).
    let by_hold = if price_micros_per_unit_hour == 0 {
        u64::MAX
    } else {
        u64::try_from(u128::from(hold_micros) * 3_600 / u128::from(price_micros_per_unit_hour))
            .unwrap_or(u64::MAX)
    };
    let cap = by_limit.min(by_hold);
    let room = cap.saturating_sub(already_unit_seconds);
    reported_unit_seconds.min(room)
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
        // 2 units for 60 s: at most 120 unit-seconds.
        assert_eq!(billable_unit_seconds(0, 50, 2, 60, u64::MAX, 3_600), 50);
        assert_eq!(billable_unit_seconds(100, 50, 2, 60, u64::MAX, 3_600), 20);
        assert_eq!(billable_unit_seconds(120, 5, 2, 60, u64::MAX, 3_600), 0);
        // A hold of 100 micros at 3600 micros per unit-hour pays 100 unit-seconds.
        assert_eq!(billable_unit_seconds(90, 50, 2, 60, 100, 3_600), 10);
    }
}
