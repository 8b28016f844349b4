//! What the agent sells: its nodes as the exchange shows them, the pool's offers kept in line with
//! what the runner wants, and capacity registered again when it changes.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use suanli_api::{CreateOfferRequest, NodeSpec, RegisterAgentRequest};
use suanli_client::Client;
use suanli_core::money::Yuan;

use super::shared::{retry, Agent};

/// Brings the pool's offers in line with `wanted` (whose `pool_id` this fills in): keeps offers
/// with the same terms, withdraws the others, creates what is missing.
pub(crate) async fn sync_offers(
    client: &Client,
    pool_id: &str,
    mut wanted: Vec<CreateOfferRequest>,
) -> Result<()> {
    for w in &mut wanted {
        w.pool_id = pool_id.to_owned();
    }
    let existing: Vec<_> = client
        .list_offers()
        .await?
        .items
        .into_iter()
        .filter(|o| o.pool_id == pool_id && o.state == "active")
        .collect();
    let same = |o: &suanli_api::Offer, w: &CreateOfferRequest| {
        o.class == w.class
            && Some(o.cpus_per_unit) == w.cpus_per_unit
            && o.memory_mib_per_unit == w.memory_mib_per_unit
            && o.price_micros_per_unit_hour == w.price_micros_per_unit_hour
            && w.min_units.is_none_or(|m| m == o.min_units)
            && w.max_units.is_none_or(|m| m == o.max_units)
    };
    for o in &existing {
        if !wanted.iter().any(|w| same(o, w)) {
            client.withdraw_offer(&o.id, None).await?;
            println!("withdrew offer {} ({}): the config changed", o.id, o.class);
        }
    }
    for w in &wanted {
        if !existing.iter().any(|o| same(o, w)) {
            let o = client.create_offer(w, None).await?;
            println!(
                "offering {} at ¥{} per unit-hour (offer {})",
                o.class,
                Yuan(o.price_micros_per_unit_hour),
                o.id
            );
        }
    }
    Ok(())
}

/// Re-reads the runner's capacity every `every` and registers it again when the nodes changed (a
/// drained node stops being sold; a resumed one is sold again), then updates the offers.
pub(crate) async fn capacity_loop(
    agent: Arc<Agent>,
    every: Duration,
    mut request: RegisterAgentRequest,
) {
    loop {
        tokio::time::sleep(every).await;
        let capacity = match agent.runner.capacity().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "reading the nodes failed; the exchange keeps the last ones");
                continue;
            }
        };
        let nodes = capacity.nodes;
        if nodes == request.nodes {
            continue;
        }
        for n in &nodes {
            match request.nodes.iter().find(|o| o.name == n.name) {
                Some(o) if o.cpus > 0 && n.cpus == 0 => {
                    println!("node {} no longer takes work: not sold", n.name)
                }
                Some(o) if o.cpus == 0 && n.cpus > 0 => {
                    println!("node {} is back: sold again", n.name)
                }
                _ => {}
            }
        }
        request.nodes = nodes;
        match retry("register", || agent.client.register_agent(&request, None)).await {
            Ok(_) => {
                if let Some(offers) = capacity.offers {
                    if let Err(e) = sync_offers(&agent.client, &agent.pool_id, offers).await {
                        tracing::warn!(error = %e, "updating the offers failed");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "the exchange refused the new capacity"),
        }
    }
}

/// The nodes, for people: `vm (2 CPUs, 24105 MiB, 8× H100-80G) @debug`.
pub(crate) fn nodes_text(nodes: &[NodeSpec]) -> String {
    nodes
        .iter()
        .map(|n| {
            let acc = n
                .accelerator_model
                .as_ref()
                .map(|m| format!(", {}× {m}", n.accelerators))
                .unwrap_or_default();
            let part = n
                .partition
                .as_ref()
                .map(|p| format!(" @{p}"))
                .unwrap_or_default();
            let idle = if n.cpus == 0 { ", not taking work" } else { "" };
            format!(
                "{} ({} CPUs, {} MiB{acc}{idle}){part}",
                n.name, n.cpus, n.memory_mib
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}
