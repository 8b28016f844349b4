//! Agents that went silent: suspect first, then lost (their attempts with them), unless so many
//! went silent at once that the exchange suspects itself instead (a partition on its side); and
//! which registration of an agent's identity may report (one identity, one agent).

use super::Refusal;

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
}
