//! What providers sell and run: accelerator `models` of the registry, `pool`s of nodes, `offer`s
//! of their units, and `agents`.

use std::fmt::Write as _;

use serde::Serialize;
use suanli_api as api;

use super::args::{ModelsCommand, OfferCommand, PoolCommand};
use super::format::{memory, or_dash, price};
use super::render::{Output, Render, Row, Text};
use super::{id, Ctx, Result};

pub(super) async fn models(ctx: &Ctx, command: ModelsCommand, o: &mut Output) -> Result {
    let client = &ctx.client;
    match command {
        ModelsCommand::List => o.show(&client.list_accelerator_models().await?),
        ModelsCommand::Add {
            name,
            vendor,
            memory_gib,
        } => {
            let request = api::CreateAcceleratorModelRequest {
                name,
                vendor,
                memory_gib,
            };
            o.show(&client.create_accelerator_model(&request, ctx.key()).await?)
        }
    }
}

pub(super) async fn pool(ctx: &Ctx, command: PoolCommand, o: &mut Output) -> Result {
    let client = &ctx.client;
    match command {
        PoolCommand::Create { name, zone, nodes } => {
            let request = api::CreatePoolRequest { name, zone, nodes };
            o.show(&client.create_pool(&request, ctx.key()).await?)
        }
        PoolCommand::List => o.show(&client.list_pools().await?),
        PoolCommand::Show { id: pool } => {
            o.show(&client.get_pool(&id::<api::PoolId>(&pool)?).await?)
        }
    }
}

pub(super) async fn offer(ctx: &Ctx, command: OfferCommand, o: &mut Output) -> Result {
    let client = &ctx.client;
    match command {
        OfferCommand::Create(args) => {
            let request = api::CreateOfferRequest {
                pool_id: id::<api::PoolId>(&args.pool_id)?.into_string(),
                class: args.class,
                cpus_per_unit: args.cpus_per_unit,
                memory_mib_per_unit: args.memory_mib_per_unit,
                price_micros_per_unit_hour: args.price_micros,
                min_units: args.min_units,
                max_units: args.max_units,
                valid_from: None,
                valid_until: args.valid_until,
            };
            o.show(&client.create_offer(&request, ctx.key()).await?)
        }
        OfferCommand::List => o.show(&client.list_offers().await?),
        OfferCommand::Show { id: offer } => {
            o.show(&client.get_offer(&id::<api::OfferId>(&offer)?).await?)
        }
        OfferCommand::Withdraw { id: offer } => {
            let offer: api::OfferId = id(&offer)?;
            o.show(&Withdrawn(&client.withdraw_offer(&offer, ctx.key()).await?))
        }
    }
}

pub(super) async fn agents(ctx: &Ctx, o: &mut Output) -> Result {
    o.show(&ctx.client.list_agents().await?)
}

// --- rendering -----------------------------------------------------------------------------------

impl Render for api::AcceleratorModel {
    fn render(&self, text: &mut Text) {
        text.pairs(&[
            ("model", self.name.clone()),
            ("vendor", self.vendor.clone()),
            ("memory", format!("{}GiB", self.memory_gib)),
        ]);
    }
}

impl Row for api::AcceleratorModel {
    const HEADER: &'static [&'static str] = &["NAME", "VENDOR", "MEMORY"];

    fn row(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.vendor.clone(),
            format!("{}GiB", self.memory_gib),
        ]
    }
}

/// A pool and its nodes.
impl Render for api::Pool {
    fn render(&self, text: &mut Text) {
        text.pairs(&[
            ("pool", self.id.clone()),
            ("name", self.name.clone()),
            ("zone", self.zone.clone()),
            (
                "agent",
                if self.agent_connected {
                    "connected"
                } else {
                    "none"
                }
                .to_owned(),
            ),
            ("created", self.created_at.clone()),
        ]);
        text.line("");
        let rows: Vec<Vec<String>> = self
            .nodes
            .iter()
            .map(|n| {
                vec![
                    n.id.clone(),
                    n.name.clone(),
                    format!("{}/{}", n.cpus_reserved, n.cpus),
                    format!("{}/{}", memory(n.memory_mib_reserved), memory(n.memory_mib)),
                    match &n.accelerator_model {
                        Some(model) if n.accelerators > 0 => {
                            format!("{}/{} {model}", n.accelerators_reserved, n.accelerators)
                        }
                        _ => "-".to_owned(),
                    },
                    or_dash(n.partition.as_deref()),
                ]
            })
            .collect();
        text.table(
            &[
                "NODE",
                "NAME",
                "CPUS USED",
                "MEMORY USED",
                "ACCELERATORS USED",
                "PARTITION",
            ],
            &rows,
        );
    }
}

impl Row for api::Pool {
    const HEADER: &'static [&'static str] = &[
        "ID",
        "NAME",
        "ZONE",
        "NODES",
        "CPUS",
        "MEMORY",
        "ACCELERATORS",
        "AGENT",
    ];

    fn row(&self) -> Vec<String> {
        let cpus: u64 = self.nodes.iter().map(|n| n.cpus).sum();
        let memory_mib: u64 = self.nodes.iter().map(|n| n.memory_mib).sum();
        let mut models: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
        for node in &self.nodes {
            if let Some(model) = &node.accelerator_model {
                *models.entry(model).or_default() += node.accelerators;
            }
        }
        let accel: Vec<String> = models
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(m, n)| accelerators(Some(m), *n))
            .collect();
        vec![
            self.id.clone(),
            self.name.clone(),
            self.zone.clone(),
            self.nodes.len().to_string(),
            cpus.to_string(),
            memory(memory_mib),
            if accel.is_empty() {
                "-".to_owned()
            } else {
                accel.join(", ")
            },
            if self.agent_connected { "yes" } else { "no" }.to_owned(),
        ]
    }
}

/// `8× H100-80G`, or `-` for none.
fn accelerators(model: Option<&str>, count: u64) -> String {
    match (model, count) {
        (_, 0) => "-".to_owned(),
        (Some(model), n) => format!("{n}× {model}"),
        (None, n) => n.to_string(),
    }
}

impl Render for api::Offer {
    fn render(&self, text: &mut Text) {
        text.pairs(&[
            ("offer", self.id.clone()),
            (
                "provider",
                format!("{} ({})", self.provider_name, self.org_id),
            ),
            ("pool", self.pool_id.clone()),
            ("class", self.class.clone()),
            ("category", self.category.clone()),
            ("zone", self.zone.clone()),
            ("price", price(self.price_micros_per_unit_hour)),
            ("unit", unit_shape(self)),
            (
                "units",
                format!(
                    "{}–{} per lease, {} free",
                    self.min_units, self.max_units, self.units_available
                ),
            ),
            (
                "valid",
                format!("{} to {}", self.valid_from, self.valid_until),
            ),
            ("state", self.state.clone()),
            ("created", self.created_at.clone()),
        ]);
    }
}

/// A row of `offer list`: your own offers (the catalog shows everyone's its own way).
impl Row for api::Offer {
    const HEADER: &'static [&'static str] = &[
        "ID",
        "POOL",
        "CLASS",
        "ZONE",
        "PRICE/UNIT-H",
        "UNITS FREE",
        "PER LEASE",
        "STATE",
        "VALID UNTIL",
    ];

    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.pool_id.clone(),
            self.class.clone(),
            self.zone.clone(),
            price(self.price_micros_per_unit_hour),
            self.units_available.to_string(),
            format!("{}–{}", self.min_units, self.max_units),
            self.state.clone(),
            self.valid_until.clone(),
        ]
    }
}

/// `1 CPU, 8GiB, 80GiB accelerator memory`.
pub(super) fn unit_shape(offer: &api::Offer) -> String {
    let mut shape = format!(
        "{} CPU{}, {}",
        offer.cpus_per_unit,
        if offer.cpus_per_unit == 1 { "" } else { "s" },
        memory(offer.memory_mib_per_unit)
    );
    if offer.accelerator_memory_gib > 0 {
        write!(
            shape,
            ", {}GiB accelerator memory",
            offer.accelerator_memory_gib
        )
        .expect("writing to a String cannot fail");
    }
    shape
}

/// A withdrawn offer: its id and state.
#[derive(Serialize)]
#[serde(transparent)]
struct Withdrawn<'a>(&'a api::Offer);

impl Render for Withdrawn<'_> {
    fn render(&self, text: &mut Text) {
        text.pairs(&[
            ("offer", self.0.id.clone()),
            ("state", self.0.state.clone()),
        ]);
    }
}

/// The agents, and a warning for each that claimed more usage than time allows.
impl Render for api::List<api::Agent> {
    fn render(&self, text: &mut Text) {
        let rows: Vec<Vec<String>> = self
            .items
            .iter()
            .map(|a| {
                vec![
                    a.id.clone(),
                    a.name.clone(),
                    a.pool_id.clone(),
                    a.state.clone(),
                    a.backend.clone(),
                    a.isolation.clone(),
                    a.last_seen_at.clone(),
                    a.usage_refusals.to_string(),
                ]
            })
            .collect();
        text.table(
            &[
                "ID",
                "NAME",
                "POOL",
                "STATE",
                "BACKEND",
                "ISOLATION",
                "LAST SEEN",
                "USAGE REFUSED",
            ],
            &rows,
        );
        for a in self.items.iter().filter(|a| a.usage_refusals > 0) {
            text.note(&format!(
                "warning: agent {} ({}) claimed more usage than time allows {} time(s), never \
                 charged; last: {}",
                a.id,
                a.org_id,
                a.usage_refusals,
                a.last_usage_refusal.as_deref().unwrap_or("-")
            ));
        }
    }
}
