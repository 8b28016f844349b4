//! The market's invariants beyond the ledger's own (see [`crate::ledger::check_invariants`]) and
//! capacity's (see [`crate::resource::check_reservations`]): how leases were settled, and how
//! much their jobs may have used. Pure: the store reads the facts, this checks them.

use std::collections::BTreeMap;

use crate::decide::purchase::Billing;
use crate::job::JobState;
use crate::lease::LeaseState;
use crate::ledger::HoldState;

/// A lease and its hold, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseFacts {
    pub id: String,
    pub units: u64,
    pub duration_limit_s: u64,
    pub ends_ms: i64,
    pub state: LeaseState,
    pub billing: Billing,
    pub metered_unit_ms: u64,
    pub ended_ms: Option<i64>,
    pub billed_unit_ms: Option<u64>,
    pub cost_micros: Option<u64>,
    pub fee_micros: Option<u64>,
    pub hold_micros: u64,
    pub hold_state: HoldState,
    pub posted_micros: u64,
}

/// A job, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFacts {
    pub id: String,
    pub lease_id: String,
    pub state: JobState,
    pub current_attempt_id: Option<String>,
    pub time_limit_s: u64,
    pub unit_ms: u64,
}

/// An attempt of a job, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptFacts {
    pub id: String,
    pub job_id: String,
    pub state: JobState,
    pub dispatched_ms: i64,
    pub unit_ms: u64,
}

/// Everything [`check`] reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MarketFacts {
    pub leases: Vec<LeaseFacts>,
    pub jobs: Vec<JobFacts>,
    pub attempts: Vec<AttemptFacts>,
}

/// Checks that every lease was settled once and right, and that no job was billed past its
/// lease, its time limit or its usage. Returns every violation found.
pub fn check(facts: &MarketFacts) -> Vec<String> {
    let mut found = Vec::new();
    let leases: BTreeMap<&str, &LeaseFacts> =
        facts.leases.iter().map(|l| (l.id.as_str(), l)).collect();
    for l in &facts.leases {
        check_lease(l, &mut found);
    }
    let mut attempts_of: BTreeMap<&str, Vec<&AttemptFacts>> = BTreeMap::new();
    for a in &facts.attempts {
        attempts_of.entry(a.job_id.as_str()).or_default().push(a);
    }
    let mut used_by_lease: BTreeMap<&str, u64> = BTreeMap::new();
    for job in &facts.jobs {
        let Some(lease) = leases.get(job.lease_id.as_str()) else {
            found.push(format!("job {} of an unknown lease", job.id));
            continue;
        };
        let attempts = attempts_of.remove(job.id.as_str()).unwrap_or_default();
        let open: Vec<&&AttemptFacts> = attempts.iter().filter(|a| !a.state.is_final()).collect();
        if open.len() > 1 {
            found.push(format!(
                "job {}: {} attempts run at once",
                job.id,
                open.len()
            ));
        }
        if let (Some(a), false) = (open.first(), job.state.is_final()) {
            if job.current_attempt_id.as_deref() != Some(a.id.as_str()) {
                found.push(format!(
                    "job {}: attempt {} runs but {:?} is current",
                    job.id, a.id, job.current_attempt_id
                ));
            }
        }
        let mut total = 0u64;
        for a in &attempts {
            let limit_ms =
                i64::try_from(job.time_limit_s.saturating_mul(1_000)).unwrap_or(i64::MAX);
            let end = a.dispatched_ms.saturating_add(limit_ms).min(lease.ends_ms);
            let bound = lease
                .units
                .saturating_mul((end - a.dispatched_ms).max(0) as u64);
            if a.unit_ms > bound {
                found.push(format!(
                    "attempt {}: {} unit-ms used, at most {bound} possible before its time limit \
                     and its lease's end",
                    a.id, a.unit_ms
                ));
            }
            total = total.saturating_add(a.unit_ms);
        }
        if total != job.unit_ms {
            found.push(format!(
                "job {}: {} unit-ms, its attempts {total}",
                job.id, job.unit_ms
            ));
        }
        *used_by_lease.entry(job.lease_id.as_str()).or_default() += job.unit_ms;
    }
    for (job_id, _) in attempts_of {
        found.push(format!("attempts of an unknown job {job_id}"));
    }
    for l in &facts.leases {
        let used = used_by_lease.get(l.id.as_str()).copied().unwrap_or(0);
        if l.metered_unit_ms > used {
            found.push(format!(
                "lease {}: metered {} unit-ms, its jobs used only {used}",
                l.id, l.metered_unit_ms
            ));
        }
    }
    found
}

fn check_lease(l: &LeaseFacts, found: &mut Vec<String>) {
    let limit_unit_ms = l
        .units
        .saturating_mul(l.duration_limit_s)
        .saturating_mul(1_000);
    if l.metered_unit_ms > limit_unit_ms {
        found.push(format!(
            "lease {}: metered {} unit-ms past its limit {limit_unit_ms}",
            l.id, l.metered_unit_ms
        ));
    }
    if !l.state.is_final() {
        if l.hold_state != HoldState::Pending || l.ended_ms.is_some() {
            found.push(format!(
                "active lease {} has a resolved hold or an end",
                l.id
            ));
        }
        return;
    }
    let (Some(billed), Some(cost), Some(fee)) = (l.billed_unit_ms, l.cost_micros, l.fee_micros)
    else {
        found.push(format!("ended lease {} lacks its settlement", l.id));
        return;
    };
    if billed > limit_unit_ms {
        found.push(format!(
            "lease {}: billed {billed} unit-ms past its limit {limit_unit_ms}",
            l.id
        ));
    }
    if cost > l.hold_micros || fee > cost {
        found.push(format!(
            "lease {}: cost {cost} (fee {fee}) against a hold of {}",
            l.id, l.hold_micros
        ));
    }
    if l.hold_state == HoldState::Pending || l.posted_micros != cost {
        found.push(format!(
            "lease {}: hold {} posted {} for a cost of {cost}",
            l.id,
            l.hold_state.as_str(),
            l.posted_micros
        ));
    }
    if l.billing == Billing::Metered && billed != l.metered_unit_ms {
        found.push(format!(
            "metered lease {}: billed {billed} unit-ms, its jobs used {}",
            l.id, l.metered_unit_ms
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> LeaseFacts {
        LeaseFacts {
            id: "l".into(),
            units: 2,
            duration_limit_s: 10,
            ends_ms: 10_000,
            state: LeaseState::Ended,
            billing: Billing::Metered,
            metered_unit_ms: 4_000,
            ended_ms: Some(5_000),
            billed_unit_ms: Some(4_000),
            cost_micros: Some(40),
            fee_micros: Some(2),
            hold_micros: 200,
            hold_state: HoldState::Posted,
            posted_micros: 40,
        }
    }

    fn market() -> MarketFacts {
        MarketFacts {
            leases: vec![lease()],
            jobs: vec![JobFacts {
                id: "j".into(),
                lease_id: "l".into(),
                state: JobState::Succeeded,
                current_attempt_id: Some("a".into()),
                time_limit_s: 5,
                unit_ms: 4_000,
            }],
            attempts: vec![AttemptFacts {
                id: "a".into(),
                job_id: "j".into(),
                state: JobState::Succeeded,
                dispatched_ms: 0,
                unit_ms: 4_000,
            }],
        }
    }

    #[test]
    fn a_sound_market_passes_and_each_break_is_found() {
        assert_eq!(check(&market()), Vec::<String>::new());
        let mut m = market();
        m.leases[0].billed_unit_ms = Some(3_000);
        assert_eq!(check(&m).len(), 1, "billed less than its jobs used");
        let mut m = market();
        m.attempts[0].unit_ms = 10_001;
        m.jobs[0].unit_ms = 10_001;
        assert!(check(&m).iter().any(|v| v.contains("at most 10000")));
        let mut m = market();
        m.leases[0].posted_micros = 80;
        assert_eq!(check(&m).len(), 1);
        let mut m = market();
        m.leases[0].metered_unit_ms = 5_000;
        m.leases[0].billed_unit_ms = Some(5_000);
        assert!(check(&m).iter().any(|v| v.contains("used only 4000")));
        let mut m = market();
        m.attempts.push(AttemptFacts {
            id: "b".into(),
            state: JobState::Running,
            ..m.attempts[0].clone()
        });
        m.attempts.push(AttemptFacts {
            id: "c".into(),
            state: JobState::Running,
            unit_ms: 0,
            ..m.attempts[0].clone()
        });
        m.attempts[1].unit_ms = 0;
        assert!(check(&m)
            .iter()
            .any(|v| v.contains("2 attempts run at once")));
    }
}
