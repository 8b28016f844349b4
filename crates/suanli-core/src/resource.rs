//! Resource classes, accelerator models, nodes and what one unit of an offer needs from a node.

use std::fmt;
use std::str::FromStr;

/// The three compute categories of the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    /// 通用算力: vCPU-hours with memory.
    General,
    /// 智能算力: accelerator-hours of a named model.
    Intelligent,
    /// 超算算力: core-hours on a batch partition.
    Supercomputing,
}

impl Category {
    pub const ALL: [Category; 3] = [
        Category::General,
        Category::Intelligent,
        Category::Supercomputing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::General => "general",
            Category::Intelligent => "intelligent",
            Category::Supercomputing => "supercomputing",
        }
    }

    /// The name of one unit of this category, for people.
    pub fn unit_name(self) -> &'static str {
        match self {
            Category::General => "vCPU",
            Category::Intelligent => "accelerator",
            Category::Supercomputing => "core",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Category {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "general" => Ok(Category::General),
            "intelligent" => Ok(Category::Intelligent),
            "supercomputing" => Ok(Category::Supercomputing),
            _ => Err(()),
        }
    }
}

/// A resource class: what one unit of an offer is.
///
/// Written as `general`, `intelligent:<MODEL>` or `supercomputing:<PARTITION>`; a quote may also ask
/// for `intelligent` or `supercomputing` alone, meaning any model or partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceClass {
    pub category: Category,
    /// Accelerator model (intelligent) or batch partition (supercomputing).
    pub qualifier: Option<String>,
}

impl fmt::Display for ResourceClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.qualifier {
            Some(q) => write!(f, "{}:{}", self.category, q),
            None => write!(f, "{}", self.category),
        }
    }
}

impl FromStr for ResourceClass {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let (cat, qual) = match s.split_once(':') {
            Some((c, q)) => (c, Some(q)),
            None => (s, None),
        };
        let category: Category = cat.parse()?;
        match (category, qual) {
            (Category::General, Some(_)) => Err(()),
            (_, Some(q)) if q.is_empty() || q.len() > 64 => Err(()),
            (_, q) => Ok(ResourceClass {
                category,
                qualifier: q.map(str::to_owned),
            }),
        }
    }
}

/// An accelerator model of the registry, e.g. `H100-80G` with 80 GiB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceleratorModel {
    pub name: String,
    pub vendor: String,
    pub memory_gib: u32,
}

/// The models every fresh exchange knows; the operator can add more.
pub fn default_accelerator_models() -> Vec<AcceleratorModel> {
    let m = |name: &str, vendor: &str, memory_gib| AcceleratorModel {
        name: name.to_owned(),
        vendor: vendor.to_owned(),
        memory_gib,
    };
    vec![
        m("H100-80G", "NVIDIA", 80),
        m("H800-80G", "NVIDIA", 80),
        m("A800-80G", "NVIDIA", 80),
        m("A100-40G", "NVIDIA", 40),
        m("L40S-48G", "NVIDIA", 48),
        m("RTX4090-24G", "NVIDIA", 24),
        m("Ascend-910B", "Huawei", 64),
        m("Ascend-910B-32G", "Huawei", 32),
    ]
}

/// Free (or total) capacity of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capacity {
    pub cpus: u64,
    pub memory_mib: u64,
    pub accelerators: u64,
}

impl Capacity {
    pub fn checked_sub(self, other: Capacity) -> Option<Capacity> {
        Some(Capacity {
            cpus: self.cpus.checked_sub(other.cpus)?,
            memory_mib: self.memory_mib.checked_sub(other.memory_mib)?,
            accelerators: self.accelerators.checked_sub(other.accelerators)?,
        })
    }

    pub fn checked_mul(self, units: u64) -> Option<Capacity> {
        Some(Capacity {
            cpus: self.cpus.checked_mul(units)?,
            memory_mib: self.memory_mib.checked_mul(units)?,
            accelerators: self.accelerators.checked_mul(units)?,
        })
    }

    /// How many whole units of `per_unit` fit in this capacity.
    pub fn units_of(self, per_unit: Capacity) -> u64 {
        let fit = |have: u64, need: u64| have.checked_div(need).unwrap_or(u64::MAX);
        fit(self.cpus, per_unit.cpus)
            .min(fit(self.memory_mib, per_unit.memory_mib))
            .min(fit(self.accelerators, per_unit.accelerators))
    }
}

/// What one unit of an offer takes from a node.
///
/// General: one vCPU and its memory. Intelligent: one accelerator with its CPUs and memory.
/// Supercomputing: one core and its memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnitShape {
    pub category: Category,
    pub cpus_per_unit: u64,
    pub memory_mib_per_unit: u64,
}

impl UnitShape {
    pub fn per_unit(&self) -> Capacity {
        Capacity {
            cpus: self.cpus_per_unit,
            memory_mib: self.memory_mib_per_unit,
            accelerators: u64::from(self.category == Category::Intelligent),
        }
    }
}

/// A node's free capacity as the placement sees it. `accelerator_model` is `None` on CPU-only nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFree {
    pub node_id: String,
    pub accelerator_model: Option<String>,
    /// Batch partition, for supercomputing nodes.
    pub partition: Option<String>,
    pub free: Capacity,
}

/// Units of a lease placed on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub node_id: String,
    pub units: u64,
    pub taken: Capacity,
}

/// Whether a node can host units of this shape at all. `qualifier` is the offer's accelerator model
/// (intelligent: required and must match) or partition (supercomputing: must match when given).
fn node_matches(node: &NodeFree, shape: &UnitShape, qualifier: Option<&str>) -> bool {
    match shape.category {
        Category::Intelligent => {
            qualifier.is_some() && node.accelerator_model.as_deref() == qualifier
        }
        Category::Supercomputing => qualifier.is_none() || node.partition.as_deref() == qualifier,
        Category::General => true,
    }
}

/// Units of `shape` free across `nodes` (see [`place`] for `model`).
pub fn units_available(nodes: &[NodeFree], shape: &UnitShape, model: Option<&str>) -> u64 {
    let per_unit = shape.per_unit();
    nodes
        .iter()
        .filter(|n| node_matches(n, shape, model))
        .map(|n| n.free.units_of(per_unit))
        .fold(0u64, u64::saturating_add)
}

/// A node's capacity, what is reserved on it, and the sum of the allocations of its active leases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReservation {
    pub node_id: String,
    pub capacity: Capacity,
    pub reserved: Capacity,
    pub allocated: Capacity,
}

/// Checks that capacity is never oversold and never leaks: what a node has reserved is exactly
/// what its active leases hold, and never more than it has. Returns every violation found.
pub fn check_reservations(nodes: &[NodeReservation]) -> Vec<String> {
    let mut violations = Vec::new();
    for n in nodes {
        if n.reserved != n.allocated {
            violations.push(format!(
                "node {}: reserved {:?} but its active leases hold {:?}",
                n.node_id, n.reserved, n.allocated
            ));
        }
        let r = n.reserved;
        let c = n.capacity;
        if r.cpus > c.cpus || r.memory_mib > c.memory_mib || r.accelerators > c.accelerators {
            violations.push(format!(
                "node {}: reserved {:?} exceeds its capacity {:?}",
                n.node_id, r, c
            ));
        }
    }
    violations
}

/// Places `units` on `nodes`, deterministically.
///
/// Prefers the single node that fits all units with the least room left (best fit, ties by node id),
/// so that multi-accelerator leases stay on one machine; otherwise fills nodes in order of most free
/// units first. `None` when the units do not fit.
pub fn place(
    nodes: &[NodeFree],
    shape: &UnitShape,
    model: Option<&str>,
    units: u64,
) -> Option<Vec<Allocation>> {
    if units == 0 {
        return None;
    }
    let per_unit = shape.per_unit();
    let mut candidates: Vec<(u64, &NodeFree)> = nodes
        .iter()
        .filter(|n| node_matches(n, shape, model))
        .map(|n| (n.free.units_of(per_unit), n))
        .filter(|(fit, _)| *fit > 0)
        .collect();
    let alloc = |node: &NodeFree, units: u64| -> Option<Allocation> {
        Some(Allocation {
            node_id: node.node_id.clone(),
            units,
            taken: per_unit.checked_mul(units)?,
        })
    };
    if let Some((_, node)) = candidates
        .iter()
        .filter(|(fit, _)| *fit >= units)
        .min_by(|(fa, na), (fb, nb)| fa.cmp(fb).then_with(|| na.node_id.cmp(&nb.node_id)))
    {
        return Some(vec![alloc(node, units)?]);
    }
    candidates.sort_by(|(fa, na), (fb, nb)| fb.cmp(fa).then_with(|| na.node_id.cmp(&nb.node_id)));
    let mut left = units;
    let mut out = Vec::new();
    for (fit, node) in candidates {
        let take = fit.min(left);
        out.push(alloc(node, take)?);
        left -= take;
        if left == 0 {
            return Some(out);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, model: Option<&str>, cpus: u64, mem: u64, acc: u64) -> NodeFree {
        NodeFree {
            node_id: id.into(),
            accelerator_model: model.map(Into::into),
            partition: None,
            free: Capacity {
                cpus,
                memory_mib: mem,
                accelerators: acc,
            },
        }
    }

    #[test]
    fn reservations_must_match_active_leases_and_fit() {
        let cap = |cpus| Capacity {
            cpus,
            memory_mib: 1024,
            accelerators: 0,
        };
        let ok = NodeReservation {
            node_id: "n".into(),
            capacity: cap(8),
            reserved: cap(4),
            allocated: cap(4),
        };
        assert!(check_reservations(std::slice::from_ref(&ok)).is_empty());
        let leaked = NodeReservation {
            allocated: cap(2),
            ..ok.clone()
        };
        assert_eq!(check_reservations(&[leaked]).len(), 1);
        let oversold = NodeReservation {
            reserved: cap(9),
            allocated: cap(9),
            ..ok
        };
        assert_eq!(check_reservations(&[oversold]).len(), 1);
    }

    #[test]
    fn class_parses_and_prints() {
        let c: ResourceClass = "intelligent:H100-80G".parse().unwrap();
        assert_eq!(c.category, Category::Intelligent);
        assert_eq!(c.to_string(), "intelligent:H100-80G");
        assert!("general:x".parse::<ResourceClass>().is_err());
        assert!("quantum".parse::<ResourceClass>().is_err());
        assert!("intelligent:".parse::<ResourceClass>().is_err());
    }

    #[test]
    fn placement_prefers_one_node_then_spreads() {
        let shape = UnitShape {
            category: Category::Intelligent,
            cpus_per_unit: 8,
            memory_mib_per_unit: 64,
        };
        let nodes = vec![
            node("a", Some("H100-80G"), 64, 1024, 8),
            node("b", Some("H100-80G"), 32, 1024, 4),
            node("c", Some("A800-80G"), 64, 1024, 8),
        ];
        assert_eq!(units_available(&nodes, &shape, Some("H100-80G")), 12);
        let one = place(&nodes, &shape, Some("H100-80G"), 4).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].node_id, "b", "best fit picks the tighter node");
        let spread = place(&nodes, &shape, Some("H100-80G"), 10).unwrap();
        assert_eq!(spread.iter().map(|a| a.units).sum::<u64>(), 10);
        assert_eq!(spread[0].node_id, "a");
        assert_eq!(
            spread[0].taken,
            Capacity {
                cpus: 64,
                memory_mib: 512,
                accelerators: 8
            }
        );
        assert!(place(&nodes, &shape, Some("H100-80G"), 13).is_none());
        assert!(place(&nodes, &shape, Some("H100-80G"), 0).is_none());
    }

    #[test]
    fn general_units_are_limited_by_memory_too() {
        let shape = UnitShape {
            category: Category::General,
            cpus_per_unit: 1,
            memory_mib_per_unit: 4096,
        };
        let nodes = vec![node("a", None, 16, 16 * 1024, 0)];
        assert_eq!(units_available(&nodes, &shape, None), 4);
    }
}
