//! Creating and cancelling jobs, the time an attempt is given, and whose reports count (fencing).

use super::purchase::Billing;
use super::Refusal;
use crate::job::JobState;
use crate::lease::LeaseState;

/// What creating a job needs to know of its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobLeaseSnapshot {
    pub consumer_org_id: String,
    pub state: LeaseState,
    pub billing: Billing,
    pub ends_ms: i64,
}

/// Seconds left on a lease ending at `ends_ms`, at `now_ms` (whole seconds, rounded down).
pub fn remaining_s(ends_ms: i64, now_ms: i64) -> u64 {
    u64::try_from((ends_ms - now_ms).max(0) / 1_000).unwrap_or(0)
}

/// Decides creating a job by `org_id` on `lease` (`None`: no such lease) with the time limit it
/// asked for; returns the job's time limit in seconds: what was asked, or the lease's remaining
/// time, never more than that and at least a second.
pub fn decide_create(
    lease: Option<&JobLeaseSnapshot>,
    org_id: &str,
    time_limit_s: Option<u64>,
    now_ms: i64,
) -> Result<u64, Refusal> {
    // Another org's lease answers exactly as a missing one.
    let lease = lease
        .filter(|l| l.consumer_org_id == org_id)
        .ok_or(Refusal::NotFound("lease"))?;
    if lease.state.is_final() {
        return Err(Refusal::LeaseNotActive(lease.state));
    }
    if lease.billing != Billing::Metered {
        return Err(Refusal::invalid(
            "lease_id",
            "no agent serves this lease's pool, so jobs cannot run on it",
        ));
    }
    let remaining = remaining_s(lease.ends_ms, now_ms);
    if remaining == 0 {
        return Err(Refusal::LeaseEnding);
    }
    Ok(time_limit_s.unwrap_or(remaining).min(remaining).max(1))
}

/// Decides cancelling a job in `state`: only one that has not ended.
pub fn decide_cancel(state: JobState) -> Result<(), Refusal> {
    if state.is_final() {
        return Err(Refusal::JobNotActive(state));
    }
    Ok(())
}

/// Fencing, first half: a report about an attempt (`None`: unknown) counts only from the agent it
/// was dispatched to, and only while it has not ended.
pub fn fence_attempt(
    attempt: Option<(&str, JobState)>,
    reporting_agent_id: &str,
) -> Result<(), Refusal> {
    let (agent_id, state) =
        attempt.ok_or_else(|| Refusal::StaleAttempt("unknown attempt".into()))?;
    if agent_id != reporting_agent_id {
        return Err(Refusal::StaleAttempt(
            "the attempt belongs to another agent".into(),
        ));
    }
    if state.is_final() {
        return Err(Refusal::StaleAttempt(format!(
            "the attempt has ended ({})",
            state.as_str()
        )));
    }
    Ok(())
}

/// Fencing, second half: and only while it is its job's current attempt, of a job still running.
pub fn fence_job(
    current_attempt_id: Option<&str>,
    job_state: JobState,
    attempt_id: &str,
) -> Result<(), Refusal> {
    if current_attempt_id != Some(attempt_id) || job_state.is_final() {
        return Err(Refusal::StaleAttempt("the attempt was superseded".into()));
    }
    Ok(())
}

/// The time an attempt dispatched at `now_ms` is given: the job's limit, never past its lease's
/// end, at least a second.
pub fn attempt_time_limit_s(job_time_limit_s: u64, lease_ends_ms: i64, now_ms: i64) -> u64 {
    job_time_limit_s
        .min(remaining_s(lease_ends_ms, now_ms))
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> JobLeaseSnapshot {
        JobLeaseSnapshot {
            consumer_org_id: "org_c".into(),
            state: LeaseState::Active,
            billing: Billing::Metered,
            ends_ms: 60_000,
        }
    }

    #[test]
    fn a_job_gets_the_time_it_asks_within_its_lease() {
        assert_eq!(decide_create(Some(&lease()), "org_c", Some(10), 0), Ok(10));
        assert_eq!(decide_create(Some(&lease()), "org_c", None, 0), Ok(60));
        assert_eq!(
            decide_create(Some(&lease()), "org_c", Some(600), 30_500),
            Ok(29)
        );
        assert_eq!(decide_create(Some(&lease()), "org_c", Some(0), 0), Ok(1));
        assert_eq!(
            decide_create(Some(&lease()), "org_c", None, 59_500),
            Err(Refusal::LeaseEnding)
        );
    }

    #[test]
    fn every_refusal() {
        assert_eq!(
            decide_create(Some(&lease()), "org_x", None, 0),
            Err(Refusal::NotFound("lease"))
        );
        assert_eq!(
            decide_create(None, "org_c", None, 0),
            Err(Refusal::NotFound("lease"))
        );
        let ended = JobLeaseSnapshot {
            state: LeaseState::Ended,
            ..lease()
        };
        assert_eq!(
            decide_create(Some(&ended), "org_c", None, 0),
            Err(Refusal::LeaseNotActive(LeaseState::Ended))
        );
        let elapsed = JobLeaseSnapshot {
            billing: Billing::Elapsed,
            ..lease()
        };
        assert!(matches!(
            decide_create(Some(&elapsed), "org_c", None, 0),
            Err(Refusal::Invalid {
                field: "lease_id",
                ..
            })
        ));
        assert_eq!(
            decide_cancel(JobState::Succeeded),
            Err(Refusal::JobNotActive(JobState::Succeeded))
        );
        assert_eq!(decide_cancel(JobState::Running), Ok(()));
        assert_eq!(attempt_time_limit_s(600, 10_000, 0), 10);
        assert_eq!(fence_attempt(Some(("ag", JobState::Running)), "ag"), Ok(()));
        assert!(fence_attempt(Some(("ag", JobState::Running)), "other").is_err());
        assert!(fence_attempt(Some(("ag", JobState::Lost)), "ag").is_err());
        assert!(fence_attempt(None, "ag").is_err());
        assert_eq!(fence_job(Some("a1"), JobState::Running, "a1"), Ok(()));
        assert!(fence_job(Some("a2"), JobState::Running, "a1").is_err());
        assert!(fence_job(Some("a1"), JobState::Cancelled, "a1").is_err());
    }
}
