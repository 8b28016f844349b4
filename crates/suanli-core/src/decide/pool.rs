//! Registering pools (a provider's capacity in a zone, as named nodes), by a provider's request or
//! by an agent's first registration, and which pool an agent's registration serves.
//!
//! What the database keeps on its own: a pool belongs to an org that exists (a foreign key), and
//! no two nodes of a pool share a name (a unique index, the backstop of [`decide_create_pool`]).
//! Only providers register pools and run agents ([`super::access`]). A registration's nodes, by a
//! provider or an agent: 1 to [`MAX_NODES_PER_POOL`], with capacity within bounds, names no two
//! of which look alike ([`NodeRules`]) and accelerator models the registry knows
//! ([`decide_models`]).
//!
//! The accelerator registry: a model added to it has 1 to [`MAX_ACCELERATOR_MEMORY_GIB`] GiB of
//! memory ([`decide_registry_model`]); a quote for a model asks for one it knows
//! ([`decide_quoted_model`]).

use std::collections::{BTreeMap, BTreeSet};

use super::{Item, ItemRefusal, Refusal};
use crate::validate::{name_key, MAX_NODES_PER_POOL};

/// Most CPUs a node may have.
pub const MAX_NODE_CPUS: u64 = 65_536;
/// Most memory a node (or an offer's unit) may have: 64 TiB.
pub const MAX_MEMORY_MIB: u64 = 64 * 1024 * 1024;
/// Most accelerators a node may have.
pub const MAX_NODE_ACCELERATORS: u64 = 1_024;

/// Most memory an accelerator model of the registry may have, in GiB.
pub const MAX_ACCELERATOR_MEMORY_GIB: u32 = 65_536;

/// Decides adding an accelerator model with `memory_gib` of memory to the registry: 1 to
/// [`MAX_ACCELERATOR_MEMORY_GIB`]. (A name the registry has already is refused by its unique
/// index.)
pub fn decide_registry_model(memory_gib: u32) -> Result<(), Refusal> {
    super::within(
        "memory_gib",
        u64::from(memory_gib),
        1,
        u64::from(MAX_ACCELERATOR_MEMORY_GIB),
    )
}

/// Which field of a quote named its accelerator model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelNamedIn {
    /// `class`, as `intelligent:<MODEL>`.
    Class,
    /// `accelerator_model` (with or without the class).
    AcceleratorModel,
}

impl ModelNamedIn {
    /// The field, as the API names it.
    pub fn field(self) -> &'static str {
        match self {
            ModelNamedIn::Class => "class",
            ModelNamedIn::AcceleratorModel => "accelerator_model",
        }
    }
}

/// Decides a quote's accelerator model, named in `named_in`, from the registry's memory for it
/// (`None`: the registry does not know it): a quote asks for a model the registry knows.
pub fn decide_quoted_model(
    named_in: ModelNamedIn,
    registry_memory_gib: Option<u32>,
) -> Result<(), Refusal> {
    match registry_memory_gib {
        Some(_) => Ok(()),
        None => Err(Refusal::invalid(
            named_in.field(),
            "unknown accelerator model; see /api/v1/accelerator-models",
        )),
    }
}

/// Who registers a pool's nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registrar {
    /// A provider's request: every node sells something.
    Provider,
    /// An agent's registration, with the capacity it measured: a drained or down node reports
    /// none, and stops being sold.
    Agent,
}

impl Registrar {
    /// The least CPUs and memory a node may have.
    pub fn min_capacity(self) -> u64 {
        match self {
            Registrar::Provider => 1,
            Registrar::Agent => 0,
        }
    }
}

/// A node as a registration describes it (its name as the API normalised it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeSpec<'a> {
    pub name: &'a str,
    pub cpus: u64,
    pub memory_mib: u64,
    pub accelerators: u64,
    pub accelerator_model: Option<&'a str>,
}

/// Decides how many nodes a registration may have: 1 to [`MAX_NODES_PER_POOL`].
pub fn decide_node_count(count: usize) -> Result<(), Refusal> {
    if count == 0 || count > MAX_NODES_PER_POOL {
        return Err(Refusal::invalid(
            "nodes",
            format!("a pool has 1 to {MAX_NODES_PER_POOL} nodes"),
        ));
    }
    Ok(())
}

/// The rules of a registration's nodes, decided one node at a time in the order given (the API
/// parses each node's fields around its turn, so the first fault in the request is the one
/// refused): no two names look alike, compared by [`name_key`] (case, width, invisible characters,
/// look-alike letters), since nodes are told apart by name; CPUs, memory and accelerators within
/// bounds; a node with accelerators names their model.
#[derive(Debug, Clone)]
pub struct NodeRules {
    min: u64,
    /// Each name's key, and the node that has it.
    names: BTreeMap<String, usize>,
}

impl NodeRules {
    /// The rules for `count` nodes registered by `registrar`; refused for a count out of bounds
    /// ([`decide_node_count`]).
    pub fn new(registrar: Registrar, count: usize) -> Result<NodeRules, Refusal> {
        decide_node_count(count)?;
        Ok(NodeRules {
            min: registrar.min_capacity(),
            names: BTreeMap::new(),
        })
    }

    /// Decides node `index` (the nodes before it decided already).
    pub fn check(&mut self, index: usize, node: &NodeSpec<'_>) -> Result<(), ItemRefusal> {
        let refuse = |field, message| ItemRefusal {
            list: "nodes",
            item: Item::Index(index),
            field: Some(field),
            message,
        };
        match self.names.entry(name_key(node.name)) {
            std::collections::btree_map::Entry::Occupied(other) => {
                return Err(refuse(
                    "name",
                    format!(
                        "nodes[{index}] and nodes[{}] have the same name",
                        other.get()
                    ),
                ));
            }
            std::collections::btree_map::Entry::Vacant(free) => {
                free.insert(index);
            }
        }
        for (field, value, min, max) in [
            ("cpus", node.cpus, self.min, MAX_NODE_CPUS),
            ("memory_mib", node.memory_mib, self.min, MAX_MEMORY_MIB),
            ("accelerators", node.accelerators, 0, MAX_NODE_ACCELERATORS),
        ] {
            if value < min || value > max {
                return Err(refuse(
                    field,
                    format!("nodes[{index}].{field} must be between {min} and {max}"),
                ));
            }
        }
        if node.accelerators > 0 && node.accelerator_model.is_none() {
            return Err(refuse(
                "accelerator_model",
                "nodes with accelerators name their model".into(),
            ));
        }
        Ok(())
    }
}

/// The accelerator models `models` (each node's, in node order) name, each once, in the order
/// they first appear: what [`decide_models`] needs looked up in the registry. Looking them up in
/// this order may stop at the first the registry does not know.
pub fn models_to_look_up<'a>(models: &[Option<&'a str>]) -> Vec<&'a str> {
    let mut seen = BTreeSet::new();
    models
        .iter()
        .flatten()
        .copied()
        .filter(|m| seen.insert(*m))
        .collect()
}

/// Decides the nodes' accelerator models (`models`: each node's, in node order) against
/// `known`, those of them the registry has: refused at the first node whose model it does not
/// have.
pub fn decide_models(models: &[Option<&str>], known: &BTreeSet<&str>) -> Result<(), Refusal> {
    for (i, model) in models.iter().enumerate() {
        if let Some(model) = model {
            if !known.contains(model) {
                return Err(Refusal::invalid(
                    "nodes",
                    format!(
                        "nodes[{i}]: unknown accelerator model {model:?}; see \
                         /api/v1/accelerator-models"
                    ),
                ));
            }
        }
    }
    Ok(())
}

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

    fn node(name: &str) -> NodeSpec<'_> {
        NodeSpec {
            name,
            cpus: 8,
            memory_mib: 1024,
            accelerators: 0,
            accelerator_model: None,
        }
    }

    fn refused(index: usize, field: &'static str, message: &str) -> Result<(), ItemRefusal> {
        Err(ItemRefusal {
            list: "nodes",
            item: Item::Index(index),
            field: Some(field),
            message: message.into(),
        })
    }

    #[test]
    fn a_registration_has_1_to_the_most_nodes() {
        assert_eq!(decide_node_count(1), Ok(()));
        assert_eq!(decide_node_count(MAX_NODES_PER_POOL), Ok(()));
        for n in [0, MAX_NODES_PER_POOL + 1] {
            assert_eq!(
                decide_node_count(n),
                Err(Refusal::invalid(
                    "nodes",
                    format!("a pool has 1 to {MAX_NODES_PER_POOL} nodes")
                ))
            );
            assert!(NodeRules::new(Registrar::Agent, n).is_err());
        }
    }

    #[test]
    fn nodes_whose_names_look_alike_are_refused_at_the_later_one() {
        let mut rules = NodeRules::new(Registrar::Provider, 3).unwrap();
        assert_eq!(rules.check(0, &node("gpu-01")), Ok(()));
        assert_eq!(rules.check(1, &node("gpu-02")), Ok(()));
        // Case and a Cyrillic look-alike make no other name.
        assert_eq!(
            rules.check(2, &node("GPU-01")),
            refused(2, "name", "nodes[2] and nodes[0] have the same name")
        );
        let mut rules = NodeRules::new(Registrar::Provider, 2).unwrap();
        assert_eq!(rules.check(0, &node("node-a")), Ok(()));
        assert_eq!(
            rules.check(1, &node("n\u{43e}de-a")),
            refused(1, "name", "nodes[1] and nodes[0] have the same name")
        );
    }

    #[test]
    fn a_nodes_capacity_is_within_bounds_and_an_agent_may_report_none() {
        let empty = NodeSpec {
            cpus: 0,
            memory_mib: 0,
            ..node("n")
        };
        assert_eq!(
            NodeRules::new(Registrar::Agent, 1)
                .unwrap()
                .check(0, &empty),
            Ok(())
        );
        assert_eq!(
            NodeRules::new(Registrar::Provider, 1)
                .unwrap()
                .check(0, &empty),
            refused(0, "cpus", "nodes[0].cpus must be between 1 and 65536")
        );
        let cases = [
            (
                NodeSpec {
                    cpus: MAX_NODE_CPUS + 1,
                    ..node("n")
                },
                "cpus",
                format!("nodes[0].cpus must be between 1 and {MAX_NODE_CPUS}"),
            ),
            (
                NodeSpec {
                    memory_mib: 0,
                    ..node("n")
                },
                "memory_mib",
                format!("nodes[0].memory_mib must be between 1 and {MAX_MEMORY_MIB}"),
            ),
            (
                NodeSpec {
                    accelerators: 1_025,
                    accelerator_model: Some("h100"),
                    ..node("n")
                },
                "accelerators",
                "nodes[0].accelerators must be between 0 and 1024".into(),
            ),
            (
                NodeSpec {
                    accelerators: 8,
                    ..node("n")
                },
                "accelerator_model",
                "nodes with accelerators name their model".into(),
            ),
        ];
        for (spec, field, message) in cases {
            let mut rules = NodeRules::new(Registrar::Provider, 1).unwrap();
            assert_eq!(rules.check(0, &spec), refused(0, field, &message));
        }
        let gpus = NodeSpec {
            accelerators: 8,
            accelerator_model: Some("h100"),
            ..node("n")
        };
        let mut rules = NodeRules::new(Registrar::Provider, 1).unwrap();
        assert_eq!(rules.check(0, &gpus), Ok(()));
    }

    #[test]
    fn accelerator_models_are_the_registrys() {
        let models = [None, Some("h100"), Some("910b"), Some("h100"), Some("x9")];
        assert_eq!(models_to_look_up(&models), vec!["h100", "910b", "x9"]);
        let known: BTreeSet<&str> = ["h100", "910b"].into();
        assert_eq!(decide_models(&models[..4], &known), Ok(()));
        assert_eq!(decide_models(&[], &known), Ok(()));
        assert_eq!(
            decide_models(&models, &known),
            Err(Refusal::invalid(
                "nodes",
                "nodes[4]: unknown accelerator model \"x9\"; see /api/v1/accelerator-models"
            ))
        );
        // The first node with an unknown model is the one named.
        let only_some: BTreeSet<&str> = ["h100"].into();
        assert!(matches!(
            decide_models(&models, &only_some),
            Err(Refusal::Invalid { message, .. }) if message.starts_with("nodes[2]:")
        ));
    }

    #[test]
    fn a_registry_model_has_1_gib_to_64_tib() {
        assert_eq!(decide_registry_model(1), Ok(()));
        assert_eq!(decide_registry_model(MAX_ACCELERATOR_MEMORY_GIB), Ok(()));
        for gib in [0, MAX_ACCELERATOR_MEMORY_GIB + 1, u32::MAX] {
            assert_eq!(
                decide_registry_model(gib),
                Err(Refusal::invalid(
                    "memory_gib",
                    "memory_gib must be between 1 and 65536"
                ))
            );
        }
    }

    #[test]
    fn a_quote_names_a_model_the_registry_knows() {
        for named_in in [ModelNamedIn::Class, ModelNamedIn::AcceleratorModel] {
            assert_eq!(decide_quoted_model(named_in, Some(80)), Ok(()));
        }
        let unknown = "unknown accelerator model; see /api/v1/accelerator-models";
        assert_eq!(
            decide_quoted_model(ModelNamedIn::Class, None),
            Err(Refusal::invalid("class", unknown))
        );
        assert_eq!(
            decide_quoted_model(ModelNamedIn::AcceleratorModel, None),
            Err(Refusal::invalid("accelerator_model", unknown))
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
