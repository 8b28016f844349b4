//! `suanli data …`: datasets and AI models. Listings (`list`, `show`, `create`), versions
//! (`push` uploads a directory as one, `publish`, `deprecate`), their files (`pull` downloads a
//! version), access (`request`, `requests`, `approve`, `deny`, `withdraw`), `entitlements` and
//! `revoke`, and the operator's `admit`. `push` and `pull` are in their own modules, with the
//! local side of both (directories, digests, progress bars) in [`local`].

pub mod args;
mod local;
mod pull;
mod push;

use anyhow::{bail, Context as _};
use serde::Serialize;
use suanli_api as api;
use suanli_client::{
    AccessRequestQuery, ClientError, EntitlementQuery, ListingQuery, RequestAnswer,
};

pub use args::DataCommand;
use args::{split_target, RequestArgs};

use super::format::{or_dash, yuan};
use super::render::{Output, Render, Row, Text};
use super::{id, Ctx, Result};

/// Sizes for people: `1.00 MiB`.
pub(super) use indicatif::HumanBytes as Bytes;

/// The field an API error names, if any.
fn api_field(e: &ClientError) -> Option<&str> {
    match e {
        ClientError::Api { body, .. } => body.field.as_deref(),
        _ => None,
    }
}

/// `NAME@VERSION`, both required.
fn name_and_version(text: &str) -> Result<(&str, &str)> {
    match split_target(text).map_err(anyhow::Error::msg)? {
        (name, Some(version)) => Ok((name, version)),
        (_, None) => bail!("{text:?}: name the version, as NAME@VERSION (e.g. traffic-2026@v1)"),
    }
}

pub(super) async fn data(ctx: &Ctx, command: DataCommand, o: &mut Output) -> Result {
    let client = &ctx.client;
    match command {
        DataCommand::List { kind, after, limit } => {
            let query = ListingQuery { kind, after, limit };
            o.show(&client.list_listings(&query).await?)
        }
        DataCommand::Show { name } => {
            let (listing, versions) =
                tokio::try_join!(client.get_listing(&name), client.list_versions(&name))?;
            o.show(&ListingView {
                listing,
                versions: versions.items,
            })
        }
        DataCommand::Create { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let request: api::CreateListingRequest = if file
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("json"))
            {
                serde_json::from_str(&text).map_err(anyhow::Error::new)
            } else {
                serde_yaml::from_str(&text).map_err(anyhow::Error::new)
            }
            .with_context(|| {
                format!(
                    "{} is not a listing file (see `suanli data create --help`)",
                    file.display()
                )
            })?;
            o.show(&client.create_listing(&request, ctx.key()).await?)
        }
        DataCommand::Push(args) => push::push(ctx, args, o).await,
        DataCommand::Pull(args) => pull::pull(ctx, args, o).await,
        DataCommand::Request(args) => request(ctx, args, o).await,
        DataCommand::Requests { state, limit } => {
            let query = AccessRequestQuery { state, limit };
            o.show(&client.list_access_requests(&query).await?)
        }
        DataCommand::Approve { id } => answer(ctx, &id, RequestAnswer::Approve, o).await,
        DataCommand::Deny { id } => answer(ctx, &id, RequestAnswer::Deny, o).await,
        DataCommand::Withdraw { id } => answer(ctx, &id, RequestAnswer::Withdraw, o).await,
        DataCommand::Entitlements { listing } => o.show(
            &client
                .list_entitlements(&EntitlementQuery { listing })
                .await?,
        ),
        DataCommand::Revoke { id } => o.show(&client.revoke_entitlement(&id, ctx.key()).await?),
        DataCommand::Publish { target } => {
            let (name, version) = name_and_version(&target)?;
            o.show(&client.publish_version(name, version, ctx.key()).await?)
        }
        DataCommand::Deprecate { target } => {
            let (name, version) = name_and_version(&target)?;
            o.show(&client.deprecate_version(name, version, ctx.key()).await?)
        }
        DataCommand::Admit { org_id, revoke } => {
            let org: api::OrgId = id(&org_id)?;
            let answer = client.set_data_provider(&org, !revoke, ctx.key()).await?;
            o.show(&Admission {
                org_id: org.as_str(),
                answer: &answer,
            })
        }
    }
}

async fn request(ctx: &Ctx, args: RequestArgs, o: &mut Output) -> Result {
    let (name, version) = split_target(&args.target).map_err(anyhow::Error::msg)?;
    if !args.accept_licence {
        let listing = ctx.client.get_listing(name).await?;
        let mut terms = licence(&listing.licence);
        if let Some(text) = &listing.licence.text {
            terms.push_str(":\n\n");
            terms.push_str(text);
            terms.push('\n');
        }
        bail!(
            "{name} is under the licence {terms}\nRead it (`suanli data show {name}`) and accept \
             it with --accept-licence; access costs {}",
            price_text(&listing.price)
        );
    }
    let request = api::RequestAccessRequest {
        version: version.map(str::to_owned),
        accept_licence: true,
        purpose: args.purpose,
    };
    o.show(&ctx.client.request_access(name, &request, ctx.key()).await?)
}

async fn answer(ctx: &Ctx, request_id: &str, answer: RequestAnswer, o: &mut Output) -> Result {
    o.show(
        &ctx.client
            .answer_access_request(request_id, answer, ctx.key())
            .await?,
    )
}

// --- rendering -----------------------------------------------------------------------------------

/// `free`, `¥10.000000 per version`, `¥20.000000 per 30 days`.
fn price_text(p: &api::PriceBody) -> String {
    match (p.kind.as_str(), p.period_days) {
        ("free", _) => "free".to_owned(),
        ("per_version", _) => format!("{} per version", yuan(p.price_micros)),
        ("per_period", Some(days)) => format!("{} per {days} days", yuan(p.price_micros)),
        (kind, _) => format!("{} ({kind})", yuan(p.price_micros)),
    }
}

/// The SPDX id, or that the provider wrote its own terms.
fn licence(l: &api::LicenceBody) -> String {
    match (&l.spdx, &l.text) {
        (Some(spdx), _) => spdx.clone(),
        (None, Some(_)) => "of the provider's own terms".to_owned(),
        (None, None) => "-".to_owned(),
    }
}

/// `zh / en`, or whichever there is.
fn both(zh: &str, en: &str) -> String {
    match (zh.is_empty(), en.is_empty()) {
        (false, false) => format!("{zh} / {en}"),
        (false, true) => zh.to_owned(),
        (true, false) => en.to_owned(),
        (true, true) => "-".to_owned(),
    }
}

fn listing_pairs(l: &api::Listing) -> Vec<(&'static str, String)> {
    let mut pairs = vec![
        ("listing", l.name.clone()),
        ("kind", l.kind.clone()),
        ("title", both(&l.title_zh, &l.title_en)),
        ("provider", l.org_id.clone()),
        ("licence", licence(&l.licence)),
        ("price", price_text(&l.price)),
        ("access", l.access.clone()),
        ("gating", l.gating.clone()),
        ("tags", l.tags.join(", ")),
    ];
    if let Some(m) = &l.model {
        pairs.push((
            "model",
            format!("{} {}, {} parameters", m.framework, m.format, m.parameters),
        ));
    }
    pairs.push((
        "visible",
        if l.visible {
            "yes"
        } else {
            "no (no version published)"
        }
        .into(),
    ));
    pairs.push(("created", l.created_at.clone()));
    pairs
}

impl Render for api::Listing {
    fn render(&self, text: &mut Text) {
        text.pairs(&listing_pairs(self));
    }
}

impl Row for api::Listing {
    const HEADER: &'static [&'static str] = &[
        "NAME", "KIND", "TITLE", "LICENCE", "PRICE", "ACCESS", "GATING",
    ];

    fn row(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.kind.clone(),
            both(&self.title_zh, &self.title_en),
            licence(&self.licence),
            price_text(&self.price),
            self.access.clone(),
            self.gating.clone(),
        ]
    }
}

/// `data show`: a listing, its versions, its licence's text, descriptions and card.
#[derive(Serialize)]
struct ListingView {
    #[serde(flatten)]
    listing: api::Listing,
    versions: Vec<api::Version>,
}

impl Render for ListingView {
    fn render(&self, text: &mut Text) {
        let l = &self.listing;
        text.pairs(&listing_pairs(l));
        text.line("");
        api::List {
            items: self.versions.clone(),
        }
        .render(text);
        for (label, body) in [
            ("Licence", l.licence.text.as_deref().unwrap_or_default()),
            ("描述", l.description_zh.as_str()),
            ("Description", l.description_en.as_str()),
            ("Card", l.card.as_str()),
        ] {
            if !body.trim().is_empty() {
                text.line("");
                text.line(&format!("{label}:"));
                text.line(body.trim_end());
            }
        }
    }
}

impl Render for api::Version {
    fn render(&self, text: &mut Text) {
        text.pairs(&[
            ("listing", self.listing.clone()),
            ("version", self.version.clone()),
            ("state", self.state.clone()),
            ("files", self.files.to_string()),
            ("size", Bytes(self.bytes).to_string()),
            ("created", self.created_at.clone()),
            ("published", or_dash(self.published_at.as_deref())),
            ("deprecated", or_dash(self.deprecated_at.as_deref())),
        ]);
    }
}

impl Row for api::Version {
    const HEADER: &'static [&'static str] =
        &["VERSION", "STATE", "FILES", "SIZE", "CREATED", "PUBLISHED"];

    fn row(&self) -> Vec<String> {
        vec![
            self.version.clone(),
            self.state.clone(),
            self.files.to_string(),
            Bytes(self.bytes).to_string(),
            self.created_at.clone(),
            or_dash(self.published_at.as_deref()),
        ]
    }
}

fn request_pairs(r: &api::AccessRequestBody) -> Vec<(&'static str, String)> {
    vec![
        ("request", r.id.clone()),
        ("listing", r.listing.clone()),
        ("version", or_dash(r.version.as_deref())),
        ("buyer", r.buyer_org_id.clone()),
        ("owner", r.owner_org_id.clone()),
        ("price", price_text(&r.price)),
        (
            "purpose",
            or_dash(Some(r.purpose.as_str()).filter(|p| !p.is_empty())),
        ),
        ("state", r.state.clone()),
        ("held", yuan(r.held_micros)),
        ("created", r.created_at.clone()),
        ("decided", or_dash(r.decided_at.as_deref())),
    ]
}

fn entitlement_pairs(e: &api::EntitlementBody) -> Vec<(&'static str, String)> {
    vec![
        ("entitlement", e.id.clone()),
        ("listing", e.listing.clone()),
        (
            "version",
            e.version.clone().unwrap_or_else(|| "every version".into()),
        ),
        ("org", e.org_id.clone()),
        ("from", e.from.clone()),
        (
            "until",
            e.until.clone().unwrap_or_else(|| "for good".into()),
        ),
        ("revoked", or_dash(e.revoked_at.as_deref())),
    ]
}

impl Render for api::AccessOutcomeBody {
    fn render(&self, text: &mut Text) {
        let r = &self.request;
        text.pairs(&request_pairs(r));
        if let Some(e) = &self.entitlement {
            text.line("");
            text.pairs(&entitlement_pairs(e));
        }
        if r.state == "pending" {
            text.note(&format!(
                "the owner approves or denies; {} is held until then, or until {} (withdraw \
                 with `suanli data withdraw {}`)",
                yuan(r.held_micros),
                r.expires_at,
                r.id
            ));
        }
    }
}

impl Row for api::AccessRequestBody {
    const HEADER: &'static [&'static str] = &[
        "ID", "LISTING", "VERSION", "BUYER", "PRICE", "STATE", "HELD", "PURPOSE", "CREATED",
    ];

    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.listing.clone(),
            or_dash(self.version.as_deref()),
            self.buyer_org_id.clone(),
            price_text(&self.price),
            self.state.clone(),
            yuan(self.held_micros),
            or_dash(Some(self.purpose.as_str()).filter(|p| !p.is_empty())),
            self.created_at.clone(),
        ]
    }
}

impl Render for api::EntitlementBody {
    fn render(&self, text: &mut Text) {
        text.pairs(&entitlement_pairs(self));
    }
}

impl Row for api::EntitlementBody {
    const HEADER: &'static [&'static str] = &[
        "ID", "LISTING", "VERSION", "ORG", "FROM", "UNTIL", "REVOKED",
    ];

    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.listing.clone(),
            self.version.clone().unwrap_or_else(|| "all".into()),
            self.org_id.clone(),
            self.from.clone(),
            self.until.clone().unwrap_or_else(|| "-".into()),
            or_dash(self.revoked_at.as_deref()),
        ]
    }
}

/// The operator's answer to `admit`, shown with the org it is about.
#[derive(Serialize)]
struct Admission<'a> {
    #[serde(skip)]
    org_id: &'a str,
    #[serde(flatten)]
    answer: &'a api::DataProviderRequest,
}

impl Render for Admission<'_> {
    fn render(&self, text: &mut Text) {
        text.line(&format!(
            "{} {} a data provider",
            self.org_id,
            if self.answer.admitted {
                "is admitted as"
            } else {
                "is no longer admitted as"
            }
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::args::{parse_part_bytes, split_target};
    use super::*;

    #[test]
    fn targets_and_part_sizes_parse() {
        assert_eq!(split_target("traffic"), Ok(("traffic", None)));
        assert_eq!(split_target("traffic@v1"), Ok(("traffic", Some("v1"))));
        for bad in ["", "@v1", "t@", "t@v@1"] {
            assert!(split_target(bad).is_err(), "{bad:?}");
        }
        assert!(name_and_version("traffic").is_err());
        assert_eq!(parse_part_bytes("262144"), Ok(262_144));
        for bad in ["0", "63", "100", "x", "-64"] {
            assert!(parse_part_bytes(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn data_commands_parse() {
        use clap::Parser as _;

        use crate::cli::{is_mutating, Cli, Command};
        let cli = Cli::try_parse_from([
            "suanli",
            "data",
            "push",
            "ds",
            "--listing",
            "traffic",
            "--version",
            "v1",
            "--publish",
        ])
        .unwrap();
        assert!(is_mutating(&cli.command));
        let Command::Data(DataCommand::Push(push)) = cli.command else {
            panic!("{:?}", cli.command);
        };
        assert_eq!(
            (push.listing.as_str(), push.version.as_str()),
            ("traffic", "v1")
        );
        assert!(push.publish);
        let cli =
            Cli::try_parse_from(["suanli", "data", "pull", "traffic@v1", "--dest", "d"]).unwrap();
        assert!(!is_mutating(&cli.command));
        assert!(Cli::try_parse_from(["suanli", "data", "push", "ds", "--listing", "t"]).is_err());
        assert!(Cli::try_parse_from([
            "suanli",
            "data",
            "push",
            "ds",
            "--listing",
            "t",
            "--version",
            "v",
            "--part-bytes",
            "100",
        ])
        .is_err());
    }

    #[test]
    fn prices_and_licences_read() {
        let price = |kind: &str, micros, days| api::PriceBody {
            kind: kind.into(),
            price_micros: micros,
            period_days: days,
        };
        assert_eq!(price_text(&price("free", 0, None)), "free");
        assert_eq!(
            price_text(&price("per_version", 10_000_000, None)),
            "¥10.000000 per version"
        );
        assert_eq!(
            price_text(&price("per_period", 20_000_000, Some(30))),
            "¥20.000000 per 30 days"
        );
        let own = api::LicenceBody {
            spdx: None,
            text: Some("terms".into()),
        };
        assert_eq!(licence(&own), "of the provider's own terms");
        assert_eq!(both("交通", ""), "交通");
    }
}
