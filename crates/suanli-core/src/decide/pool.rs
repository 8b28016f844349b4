//! Registering pools (a provider's capacity in a zone, as named nodes), by a provider's request or
//! by an agent's first registration, and which pool an agent's registration serves.
//!
//! What the database keeps on its own: a pool belongs to an org that exists (a foreign key), and
//! no two nodes of a pool share a name (a unique index, the backstop of [`decide_create_pool`]).
//! Only providers register pools; the API checks that, as it authenticates the caller.

use super::Refusal;

/// Decides registering a pool with nodes named `node_names` (in the order given): no two of its
/// nodes share a name, since an agent's later registration finds its nodes by name. Refuses at
/// the first name given again.
pub fn decide_create_pool<'a>(
    node_names: impl IntoIterator<Item = &'a str>,
) -> Result<(), Refusal> {
    let mut seen = std::collections::BTreeSet::new();
    for name in node_names {
        if !seen.insert(name) {
            return Err(Refusal::invalid(
                "nodes",
                format!("node name {name:?} is used twice"),
            ));
        }
    }
    Ok(())
}

/// The pool an agent's registration serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentPool {
    /// The pool its identity registered with before: an agent never moves (what it asks is not
    /// looked at).
    Registered(String),
    /// The existing pool of its org it asked for.
    Asked(String),
    /// A new pool of its own, made of the nodes it measured.
    New,
}

/// Decides the pool of a registration of org `org_id` by an agent whose identity served
/// `registered` before (`None`: a new identity), which asked for the pool `asked` with its owner
/// (`None` as the owner: no such pool): a known identity keeps its pool; a new one gets the pool
/// it asked for if its org owns it (another org's pool reads as missing), or a new pool.
pub fn decide_agent_pool(
    org_id: &str,
    registered: Option<&str>,
    asked: Option<(&str, Option<&str>)>,
) -> Result<AgentPool, Refusal> {
    match (registered, asked) {
        (Some(pool_id), _) => Ok(AgentPool::Registered(pool_id.to_owned())),
        (None, Some((pool_id, Some(owner)))) if owner == org_id => {
            Ok(AgentPool::Asked(pool_id.to_owned()))
        }
        (None, Some(_)) => Err(Refusal::invalid("pool_id", "no such pool")),
        (None, None) => Ok(AgentPool::New),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pools_nodes_have_names_of_their_own() {
        assert_eq!(decide_create_pool(["n1", "n2", "N1"]), Ok(()));
        assert_eq!(decide_create_pool([]), Ok(()));
        assert_eq!(
            decide_create_pool(["n1", "n2", "n2", "n1"]),
            Err(Refusal::invalid("nodes", "node name \"n2\" is used twice"))
        );
    }

    #[test]
    fn an_agent_keeps_its_pool_or_takes_its_orgs() {
        assert_eq!(
            decide_agent_pool("org_p", Some("pool_a"), Some(("pool_b", Some("org_q")))),
            Ok(AgentPool::Registered("pool_a".into()))
        );
        assert_eq!(
            decide_agent_pool("org_p", None, Some(("pool_b", Some("org_p")))),
            Ok(AgentPool::Asked("pool_b".into()))
        );
        assert_eq!(decide_agent_pool("org_p", None, None), Ok(AgentPool::New));
        for asked in [("pool_b", Some("org_q")), ("pool_b", None)] {
            assert_eq!(
                decide_agent_pool("org_p", None, Some(asked)),
                Err(Refusal::invalid("pool_id", "no such pool"))
            );
        }
    }
}
