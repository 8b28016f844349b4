//! Agents that went silent: suspect first, then lost (their attempts with them, their jobs back
//! to the queue or lost), unless so many went silent at once that the exchange suspects itself
//! instead (a partition on its side); attempts a heartbeat shows never reached their agent; and
//! which registration of an agent's identity may report (one identity, one agent).

use super::Refusal;
use crate::job::{next, JobEvent, JobState};

/// An agent's standing with the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentState {
    Alive,
    Suspect,
    Lost,
}

impl AgentState {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Alive => "alive",
            AgentState::Suspect => "suspect",
            AgentState::Lost => "lost",
        }
    }

    pub fn parse(s: &str) -> Option<AgentState> {
        match s {
            "alive" => Some(AgentState::Alive),
            "suspect" => Some(AgentState::Suspect),
            "lost" => Some(AgentState::Lost),
            _ => None,
        }
    }
}

/// Decides an agent's registration: a new identity starts at generation 1, a start of a known
/// one begins the next generation (fencing out the previous process), and a renewal (new
/// capacity from the same process) keeps its generation, unless another start superseded it.
pub fn decide_registration(
    agent_id: &str,
    current: Option<u64>,
    renews: Option<u64>,
) -> Result<u64, Refusal> {
    match (current, renews) {
        (None, _) => Ok(1),
        (Some(current), None) => Ok(current + 1),
        (Some(current), Some(g)) if g == current => Ok(current),
        (Some(current), Some(g)) => Err(Refusal::Superseded {
            agent_id: agent_id.to_owned(),
            current,
            reported: g,
        }),
    }
}

/// Decides whether a report from an agent process of generation `reported` (`None`: an agent too
/// old to say) counts: only the latest registration's.
pub fn decide_report(agent_id: &str, current: u64, reported: Option<u64>) -> Result<(), Refusal> {
    match reported {
        Some(g) if g != current => Err(Refusal::Superseded {
            agent_id: agent_id.to_owned(),
            current,
            reported: g,
        }),
        _ => Ok(()),
    }
}

/// What the monitor knows of one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSeen {
    pub id: String,
    pub state: AgentState,
    pub last_seen_ms: i64,
}

/// How long silence may last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Silence {
    /// Silent longer than this: suspect.
    pub suspect_ms: i64,
    /// Silent longer than this: lost.
    pub lost_ms: i64,
    /// Silence counts from here at the earliest (this exchange process's start), so a restarted
    /// exchange gives its agents time to reconnect.
    pub since_ms: i64,
}

/// What the monitor does this round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LivenessPlan {
    pub silent_agents: u64,
    pub live_agents: u64,
    /// More than half of at least two agents went silent: nobody is declared anything.
    pub self_suspected: bool,
    pub to_lose: Vec<String>,
    pub to_suspect: Vec<String>,
}

/// Decides the round at `now_ms` over the agents not yet lost.
pub fn decide_liveness(agents: &[AgentSeen], silence: Silence, now_ms: i64) -> LivenessPlan {
    let agents: Vec<&AgentSeen> = agents
        .iter()
        .filter(|a| a.state != AgentState::Lost)
        .collect();
    let silent_for = |a: &AgentSeen| now_ms - a.last_seen_ms.max(silence.since_ms);
    let silent: Vec<&AgentSeen> = agents
        .iter()
        .copied()
        .filter(|a| silent_for(a) > silence.suspect_ms)
        .collect();
    let mut plan = LivenessPlan {
        silent_agents: silent.len() as u64,
        live_agents: (agents.len() - silent.len()) as u64,
        ..LivenessPlan::default()
    };
    if agents.len() >= 2 && silent.len() * 2 > agents.len() {
        plan.self_suspected = true;
        return plan;
    }
    for a in silent {
        if silent_for(a) > silence.lost_ms {
            plan.to_lose.push(a.id.clone());
        } else if a.state == AgentState::Alive {
            plan.to_suspect.push(a.id.clone());
        }
    }
    plan
}

/// How long an agent has to report a dispatched attempt before it counts as never delivered.
pub const DISPATCH_GRACE_MS: i64 = 15_000;

/// The reason an attempt that never reached its agent ends with.
pub const UNDELIVERED_REASON: &str = "the assignment never reached the agent";

/// The reason the attempts (and the jobs that do not go back to the queue) of a lost agent end
/// with.
pub const SILENT_REASON: &str = "the agent went silent";

/// An attempt dispatched to an agent that has not reported it running yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatchedAttempt {
    pub id: String,
    pub job_id: String,
    pub dispatched_ms: i64,
}

/// Decides, at a heartbeat at `now_ms` in which an agent says it runs `running`, which of its
/// `dispatched` attempts never reached it (the poll's answer was lost): those dispatched more
/// than [`DISPATCH_GRACE_MS`] ago that it does not run. They never ran: each is lost (with
/// [`UNDELIVERED_REASON`]) and its job goes back to the queue as a new attempt, while it is still
/// that job's dispatched attempt.
pub fn undelivered<'a>(
    dispatched: &'a [DispatchedAttempt],
    running: &[String],
    now_ms: i64,
) -> Vec<&'a DispatchedAttempt> {
    dispatched
        .iter()
        .filter(|a| a.dispatched_ms < now_ms - DISPATCH_GRACE_MS && !running.contains(&a.id))
        .collect()
}

/// What the monitor knows of the job of an attempt that a lost agent had open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOfLostAttempt {
    pub state: JobState,
    pub current_attempt_id: Option<String>,
    pub restartable: bool,
}

/// What becomes of a job whose current attempt was lost with its agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostJob {
    /// A restartable job goes back to the queue, to run as a new attempt.
    Requeue,
    /// Any other ends lost (with [`SILENT_REASON`]).
    Lose,
}

/// Decides, for an attempt `attempt_id` that was open (dispatched or running) on an agent the
/// monitor declared lost, and is lost with it, what becomes of its `job`: nothing when the
/// attempt is no longer the job's current one or the job has ended (only the attempt ends);
/// otherwise what the job's state machine says of `AgentLost`.
pub fn decide_lost_attempt(attempt_id: &str, job: &JobOfLostAttempt) -> Option<LostJob> {
    if job.current_attempt_id.as_deref() != Some(attempt_id) || job.state.is_final() {
        return None;
    }
    match next(
        job.state,
        JobEvent::AgentLost {
            restartable: job.restartable,
        },
    ) {
        Ok(JobState::Queued) => Some(LostJob::Requeue),
        Ok(_) => Some(LostJob::Lose),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str, state: AgentState, last_seen_ms: i64) -> AgentSeen {
        AgentSeen {
            id: id.into(),
            state,
            last_seen_ms,
        }
    }

    const S: Silence = Silence {
        suspect_ms: 10,
        lost_ms: 100,
        since_ms: 0,
    };

    #[test]
    fn one_identity_reports_through_its_latest_registration() {
        assert_eq!(decide_registration("a", None, None), Ok(1));
        assert_eq!(decide_registration("a", Some(3), None), Ok(4));
        assert_eq!(decide_registration("a", Some(3), Some(3)), Ok(3));
        assert_eq!(
            decide_registration("a", Some(4), Some(3)),
            Err(Refusal::Superseded {
                agent_id: "a".into(),
                current: 4,
                reported: 3
            })
        );
        assert_eq!(decide_report("a", 4, None), Ok(()));
        assert_eq!(decide_report("a", 4, Some(4)), Ok(()));
        assert!(decide_report("a", 4, Some(3)).is_err());
    }

    #[test]
    fn silence_makes_an_agent_suspect_then_lost() {
        let agents = [
            agent("a", AgentState::Alive, 1_000),
            agent("b", AgentState::Alive, 985),
            agent("c", AgentState::Suspect, 880),
            agent("d", AgentState::Alive, 1_000),
            agent("e", AgentState::Lost, 0),
        ];
        let plan = decide_liveness(&agents, S, 1_000);
        assert!(!plan.self_suspected);
        assert_eq!(plan.to_suspect, ["b"]);
        assert_eq!(plan.to_lose, ["c"]);
        assert_eq!((plan.silent_agents, plan.live_agents), (2, 2));
    }

    #[test]
    fn when_most_go_silent_at_once_the_exchange_suspects_itself() {
        let agents = [
            agent("a", AgentState::Alive, 0),
            agent("b", AgentState::Alive, 0),
            agent("c", AgentState::Alive, 1_000),
        ];
        let plan = decide_liveness(&agents, S, 1_000);
        assert!(plan.self_suspected);
        assert!(plan.to_lose.is_empty() && plan.to_suspect.is_empty());
        // One agent alone is judged on its own.
        let plan = decide_liveness(&agents[..1], S, 1_000);
        assert_eq!(plan.to_lose, ["a"]);
        // Silence counts from the exchange's start at the earliest.
        let restarted = Silence { since_ms: 950, ..S };
        let plan = decide_liveness(&agents[..1], restarted, 1_000);
        assert_eq!(plan.to_suspect, ["a"]);
    }

    #[test]
    fn an_attempt_never_reported_past_the_grace_never_reached_its_agent() {
        let dispatched = [
            DispatchedAttempt {
                id: "old".into(),
                job_id: "job_old".into(),
                dispatched_ms: 0,
            },
            DispatchedAttempt {
                id: "old_but_running".into(),
                job_id: "job_old_but_running".into(),
                dispatched_ms: 0,
            },
            DispatchedAttempt {
                id: "at_the_grace".into(),
                job_id: "job_at_the_grace".into(),
                dispatched_ms: 20_000 - DISPATCH_GRACE_MS,
            },
            DispatchedAttempt {
                id: "new".into(),
                job_id: "job_new".into(),
                dispatched_ms: 19_000,
            },
        ];
        let gone = undelivered(&dispatched, &["old_but_running".to_owned()], 20_000);
        assert_eq!(gone, [&dispatched[0]]);
        assert!(undelivered(&dispatched, &[], 0).is_empty());
    }

    #[test]
    fn a_lost_agents_current_attempts_requeue_or_lose_their_jobs() {
        let job = |state, current: Option<&str>, restartable| JobOfLostAttempt {
            state,
            current_attempt_id: current.map(str::to_owned),
            restartable,
        };
        assert_eq!(
            decide_lost_attempt("a1", &job(JobState::Running, Some("a1"), true)),
            Some(LostJob::Requeue)
        );
        assert_eq!(
            decide_lost_attempt("a1", &job(JobState::Dispatched, Some("a1"), false)),
            Some(LostJob::Lose)
        );
        // Not the current attempt, or the job ended: only the attempt is lost.
        assert_eq!(
            decide_lost_attempt("a1", &job(JobState::Running, Some("a2"), true)),
            None
        );
        assert_eq!(
            decide_lost_attempt("a1", &job(JobState::Running, None, true)),
            None
        );
        assert_eq!(
            decide_lost_attempt("a1", &job(JobState::Cancelled, Some("a1"), true)),
            None
        );
        // A queued job has no attempt out; were one named current, the machine refuses.
        assert_eq!(
            decide_lost_attempt("a1", &job(JobState::Queued, Some("a1"), true)),
            None
        );
    }
}
