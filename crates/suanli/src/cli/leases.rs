//! `leases` and `lease show|end|cancel` (and `end`): leases bought and sold, and how a lease is
//! paid.

use std::fmt::Write as _;

use suanli_api as api;

use super::args::{format_duration, LeaseCommand, LeasesArgs};
use super::format::{or_dash, price, unit_seconds, yuan};
use super::render::{Output, Render, Row, Text};
use super::{id, Ctx, Result};

pub(super) async fn list(ctx: &Ctx, args: LeasesArgs, o: &mut Output) -> Result {
    let params = api::LeaseListParams {
        state: args.state,
        side: args.side,
        limit: args.limit,
    };
    o.show(&ctx.client.list_leases(&params).await?)
}

pub(super) async fn lease(ctx: &Ctx, command: LeaseCommand, o: &mut Output) -> Result {
    match command {
        LeaseCommand::Show { id: lease } => {
            o.show(&ctx.client.get_lease(&id::<api::LeaseId>(&lease)?).await?)
        }
        LeaseCommand::End { id: lease } => end(ctx, &lease, o).await,
        LeaseCommand::Cancel { id: lease } => {
            let lease: api::LeaseId = id(&lease)?;
            o.show(&ctx.client.cancel_lease(&lease, ctx.key()).await?)
        }
    }
}

/// `end` and `lease end`.
pub(super) async fn end(ctx: &Ctx, lease: &str, o: &mut Output) -> Result {
    let lease: api::LeaseId = id(lease)?;
    o.show(&ctx.client.end_lease(&lease, ctx.key()).await?)
}

// --- rendering -----------------------------------------------------------------------------------

impl Render for api::Lease {
    fn render(&self, text: &mut Text) {
        text.pairs(&lease_pairs(self));
    }
}

impl Row for api::Lease {
    const HEADER: &'static [&'static str] = &[
        "ID",
        "STATE",
        "CLASS",
        "ZONE",
        "UNITS",
        "PRICE/UNIT-H",
        "BILLING",
        "METERED",
        "STARTED",
        "ENDED",
        "COST",
    ];

    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.state.clone(),
            self.class.clone(),
            self.zone.clone(),
            self.units.to_string(),
            price(self.price_micros_per_unit_hour),
            self.billing.clone(),
            if self.billing == "metered" {
                unit_seconds(self.metered_unit_ms)
            } else {
                "-".to_owned()
            },
            self.started_at.clone(),
            self.ended_at
                .clone()
                .unwrap_or_else(|| format!("(ends {})", self.ends_at)),
            self.cost_micros.map(yuan).unwrap_or_else(|| "-".to_owned()),
        ]
    }
}

pub(super) fn lease_pairs(lease: &api::Lease) -> Vec<(&'static str, String)> {
    let mut pairs = vec![
        ("lease", lease.id.clone()),
        ("state", lease.state.clone()),
        ("offer", lease.offer_id.clone()),
        ("class", lease.class.clone()),
        ("zone", lease.zone.clone()),
        ("consumer", lease.consumer_org_id.clone()),
        ("provider", lease.provider_org_id.clone()),
        ("pool", lease.pool_id.clone()),
        ("units", lease.units.to_string()),
        ("price", price(lease.price_micros_per_unit_hour)),
        ("duration limit", format_duration(lease.duration_limit_s)),
        ("started", lease.started_at.clone()),
        ("ends", lease.ends_at.clone()),
    ];
    if let Some(ended) = &lease.ended_at {
        pairs.push(("ended", ended.clone()));
    }
    pairs.push(("billing", billing(lease)));
    if lease.billing == "metered" {
        pairs.push(("metered", unit_seconds(lease.metered_unit_ms)));
        if lease.cost_micros.is_none() {
            pairs.push(("cost so far", or_dash(metered_cost(lease).as_deref())));
        }
    }
    if let Some(billed) = lease.billed_unit_ms {
        pairs.push(("billed", unit_seconds(billed)));
    }
    if let Some(cost) = lease.cost_micros {
        pairs.push(("cost", yuan(cost)));
    }
    if let Some(fee) = lease.fee_micros {
        pairs.push(("fee", yuan(fee)));
    }
    if let Some(paid) = lease.provider_micros {
        pairs.push(("provider paid", yuan(paid)));
    }
    if let Some(released) = lease.released_micros {
        pairs.push(("released", yuan(released)));
    }
    let mut hold = format!(
        "{} {} ({})",
        lease.hold.id,
        yuan(lease.hold.amount_micros),
        lease.hold.state
    );
    if lease.hold.state == "posted" {
        write!(hold, ", charged {}", yuan(lease.hold.posted_micros))
            .expect("writing to a String cannot fail");
    }
    pairs.push(("hold", hold));
    let allocations: Vec<String> = lease
        .allocations
        .iter()
        .map(|a| format!("{}×{}", a.node_id, a.units))
        .collect();
    pairs.push((
        "nodes",
        if allocations.is_empty() {
            "-".to_owned()
        } else {
            allocations.join(", ")
        },
    ));
    pairs
}

/// `metered, ends with its last job`: how a lease is paid.
fn billing(lease: &api::Lease) -> String {
    let how = match lease.billing.as_str() {
        "metered" => "metered (the unit-seconds its jobs used)",
        "elapsed" => "elapsed (the lease's wall time)",
        other => other,
    };
    if lease.auto_end {
        format!("{how}, ends with its last job")
    } else {
        how.to_owned()
    }
}

/// What the metered use of a lease costs so far: unit-milliseconds × price, rounded down once.
pub(super) fn metered_cost(lease: &api::Lease) -> Option<String> {
    suanli_core::money::cost_micros_of_unit_ms(
        lease.price_micros_per_unit_hour,
        lease.metered_unit_ms,
    )
    .ok()
    .map(yuan)
}
