//! Buying: the market's `zones`, the `catalog` of every provider's offers, a `quote` (the ranked
//! offers that fit a need, and why the others do not) and `buy`.

use serde::Serialize;
use suanli_api as api;

use super::args::{format_duration, BuyArgs, CatalogArgs, GpuSpec, QuoteArgs};
use super::format::{price, yuan, yuan_arg};
use super::leases::lease_pairs;
use super::provider::unit_shape;
use super::render::{Output, Render, Row, Text};
use super::{id, Ctx, Result};
use crate::excluded;

pub(super) async fn zones(ctx: &Ctx, o: &mut Output) -> Result {
    o.show(&ctx.client.list_zones().await?)
}

pub(super) async fn catalog(ctx: &Ctx, args: CatalogArgs, o: &mut Output) -> Result {
    let params = api::CatalogParams {
        category: args.category,
        zone: args.zone,
        limit: args.limit,
    };
    o.show(&Catalog(&ctx.client.catalog(&params).await?))
}

pub(super) async fn quote(ctx: &Ctx, args: QuoteArgs, o: &mut Output) -> Result {
    let (accelerator_model, accelerators) = match args.gpus {
        Some(GpuSpec { model, count }) => (Some(model), count),
        None => (None, None),
    };
    let request = api::QuoteRequest {
        class: args.class,
        accelerator_model,
        accelerators,
        min_accelerator_memory_gib: args.min_gpu_memory_gib,
        cpus: args.cpus,
        memory_mib: args.memory_mib,
        units: args.units,
        zone: args.zone,
        max_price_micros_per_unit_hour: args.max_price_micros,
        duration_limit_s: args.duration_s,
        // Also without --explain: the details name what was left out and how to widen.
        excluded_limit: Some(if args.explain { 1000 } else { 200 }),
        limit: None,
    };
    let quote = ctx.client.quote(&request, ctx.key()).await?;
    o.show(&Quoted {
        quote: &quote,
        request: &request,
        explain: args.explain,
    })
}

pub(super) async fn buy(ctx: &Ctx, args: BuyArgs, o: &mut Output) -> Result {
    let request = api::PurchaseRequest {
        offer_id: id::<api::OfferId>(&args.offer_id)?.into_string(),
        units: args.units,
        duration_limit_s: args.duration_s,
        max_price_micros_per_unit_hour: args.max_price_micros,
        auto_end: false,
    };
    o.show(&Bought(&ctx.client.purchase(&request, ctx.key()).await?))
}

// --- rendering -----------------------------------------------------------------------------------

impl Row for api::Zone {
    const HEADER: &'static [&'static str] = &["ID", "NAME", "KIND"];

    fn row(&self) -> Vec<String> {
        vec![self.id.clone(), self.name.clone(), self.kind.clone()]
    }
}

/// The catalog: every provider's active offers.
#[derive(Serialize)]
#[serde(transparent)]
struct Catalog<'a>(&'a api::List<api::Offer>);

impl Render for Catalog<'_> {
    fn render(&self, text: &mut Text) {
        let rows: Vec<Vec<String>> = self
            .0
            .items
            .iter()
            .map(|offer| {
                vec![
                    offer.id.clone(),
                    offer.provider_name.clone(),
                    offer.class.clone(),
                    offer.zone.clone(),
                    price(offer.price_micros_per_unit_hour),
                    offer.units_available.to_string(),
                    unit_shape(offer),
                ]
            })
            .collect();
        text.table(
            &[
                "OFFER",
                "PROVIDER",
                "CLASS",
                "ZONE",
                "PRICE/UNIT-H",
                "UNITS FREE",
                "UNIT",
            ],
            &rows,
        );
    }
}

/// A quote, shown with what was asked, and the command that buys the best offer.
#[derive(Serialize)]
#[serde(transparent)]
struct Quoted<'a> {
    quote: &'a api::QuoteResponse,
    #[serde(skip)]
    request: &'a api::QuoteRequest,
    /// Whether to list the excluded offers one by one.
    #[serde(skip)]
    explain: bool,
}

impl Render for Quoted<'_> {
    fn render(&self, text: &mut Text) {
        let quote = self.quote;
        text.out.push_str(&quote_text(
            self.request,
            quote,
            self.explain,
            excluded::Asked::Flags,
        ));
        if let Some(top) = quote.offers.iter().min_by_key(|q| q.rank) {
            text.line(&format!(
                "buy the best with: suanli buy {} --units {} --duration {} --max-price {}",
                top.offer.id,
                top.units,
                format_duration(quote.duration_limit_s),
                yuan_arg(top.offer.price_micros_per_unit_hour)
            ));
        }
    }
}

/// A lease just bought, and how it is paid and ended.
#[derive(Serialize)]
#[serde(transparent)]
struct Bought<'a>(&'a api::Lease);

impl Render for Bought<'_> {
    fn render(&self, text: &mut Text) {
        let lease = self.0;
        text.pairs(&lease_pairs(lease));
        text.line("");
        text.line(&format!(
            "{} is held until the lease ends; you pay for the seconds used. End it with: \
             suanli end {}",
            yuan(lease.hold.amount_micros),
            lease.id
        ));
    }
}

/// The quote as people read it: the ranked offers and why the others were excluded.
pub(super) fn quote_text(
    request: &api::QuoteRequest,
    quote: &api::QuoteResponse,
    explain: bool,
    asked: excluded::Asked,
) -> String {
    let mut text = Text::default();
    text.line(&format!(
        "{} units for up to {}; TOTAL is price × units × duration, the most a lease can cost",
        quote.units,
        format_duration(quote.duration_limit_s)
    ));
    text.line("");
    if quote.offers.is_empty() {
        text.line("no offer fits");
    } else {
        let rows: Vec<Vec<String>> = quote
            .offers
            .iter()
            .map(|q| {
                vec![
                    q.rank.to_string(),
                    q.offer.id.clone(),
                    q.offer.provider_name.clone(),
                    q.offer.class.clone(),
                    q.offer.zone.clone(),
                    price(q.offer.price_micros_per_unit_hour),
                    q.offer.units_available.to_string(),
                    yuan(q.total_micros),
                ]
            })
            .collect();
        text.table(
            &[
                "RANK",
                "OFFER",
                "PROVIDER",
                "CLASS",
                "ZONE",
                "PRICE/UNIT-H",
                "UNITS FREE",
                "TOTAL",
            ],
            &rows,
        );
    }
    for line in excluded::lines(request, quote, asked) {
        text.line(&line);
    }
    if explain && !quote.excluded.is_empty() {
        text.line("");
        let rows: Vec<Vec<String>> = quote
            .excluded
            .iter()
            .map(|x| {
                vec![
                    x.offer_id.clone(),
                    x.provider_name.clone(),
                    x.class.clone(),
                    x.zone.clone(),
                    price(x.price_micros_per_unit_hour),
                    x.units_available.to_string(),
                    x.reason.clone(),
                ]
            })
            .collect();
        text.table(
            &[
                "EXCLUDED",
                "PROVIDER",
                "CLASS",
                "ZONE",
                "PRICE/UNIT-H",
                "UNITS FREE",
                "REASON",
            ],
            &rows,
        );
    }
    text.out
}
