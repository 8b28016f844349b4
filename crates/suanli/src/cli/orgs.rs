//! Who you are and the orgs of the exchange: `whoami`, `health`, `org`, `member` and `token`, and
//! saving a new token as a profile.

use anyhow::Context as _;
use serde::Serialize;
use suanli_api as api;

use super::args::{MemberCommand, OrgCommand, OrgCreateArgs, TokenCommand};
use super::format::or_dash;
use super::render::{Output, Render, Row, Text};
use super::{id, Ctx, Result};
use crate::profiles;

pub(super) async fn whoami(ctx: &Ctx, o: &mut Output) -> Result {
    let me = ctx.client.me().await?;
    o.show(&Whoami {
        me: &me,
        server: &ctx.server,
    })
}

pub(super) async fn health(ctx: &Ctx, o: &mut Output) -> Result {
    let health = ctx.client.health().await?;
    o.show(&Health {
        health: &health,
        server: &ctx.server,
    })
}

pub(super) async fn org(ctx: &Ctx, command: OrgCommand, o: &mut Output) -> Result {
    let client = &ctx.client;
    match command {
        OrgCommand::Create(args) => org_create(ctx, args, o).await,
        OrgCommand::List => o.show(&client.list_orgs().await?),
        OrgCommand::Show { id: org } => o.show(&client.get_org(&id::<api::OrgId>(&org)?).await?),
        OrgCommand::Rename { id: org, name } => {
            let org: api::OrgId = id(&org)?;
            let request = api::RenameOrgRequest { name };
            o.show(&client.rename_org(&org, &request, ctx.key()).await?)
        }
    }
}

pub(super) async fn member(ctx: &Ctx, command: MemberCommand, o: &mut Output) -> Result {
    let client = &ctx.client;
    match command {
        MemberCommand::List => o.show(&client.list_members().await?),
        MemberCommand::Add { name, email, role } => {
            let request = api::CreateMemberRequest {
                name,
                email,
                role: role.into(),
            };
            o.show(&client.create_member(&request, ctx.key()).await?)
        }
    }
}

pub(super) async fn token(ctx: &Ctx, command: TokenCommand, o: &mut Output) -> Result {
    let client = &ctx.client;
    match command {
        TokenCommand::List => o.show(&client.list_tokens().await?),
        TokenCommand::Create {
            name,
            member_id,
            expires_in_days,
            save_profile,
        } => {
            let expires_in_s = match expires_in_days {
                Some(days) => Some(
                    days.checked_mul(86_400)
                        .context("--expires-in-days is too large")?,
                ),
                None => None,
            };
            let member_id = match member_id {
                Some(m) => Some(id::<api::MemberId>(&m)?.into_string()),
                None => None,
            };
            let request = api::CreateTokenRequest {
                name,
                member_id,
                expires_in_s,
            };
            let created = client.create_token(&request, ctx.key()).await?;
            o.show(&created)?;
            o.note("warning: the secret is shown only once; store it now.");
            if let Some(profile) = save_profile {
                let org = client
                    .with_token(Some(created.secret.clone()))
                    .me()
                    .await
                    .ok();
                save_profile_of(
                    ctx,
                    o,
                    &profile,
                    &created.secret,
                    org.as_ref()
                        .map(|me| (me.org.id.as_str(), me.org.name.as_str())),
                )?;
            }
            Ok(())
        }
        TokenCommand::Revoke { id: token } => {
            let token: api::TokenId = id(&token)?;
            o.show(&client.revoke_token(&token, ctx.key()).await?)
        }
    }
}

async fn org_create(ctx: &Ctx, args: OrgCreateArgs, o: &mut Output) -> Result {
    let request = api::CreateOrgRequest {
        name: args.name,
        kind: args.kind.into(),
        consumer_type: args.consumer_type.map(Into::into),
        zone: args.zone,
        origin_region: args.origin_region,
        admin_name: args.admin_name,
        admin_email: args.admin_email,
    };
    let created = ctx.client.create_org(&request, ctx.key()).await?;
    o.show(&created)?;
    o.note("warning: the admin token's secret is shown only once; store it now.");
    if let Some(profile) = args.save_profile {
        save_profile_of(
            ctx,
            o,
            &profile,
            &created.token.secret,
            Some((&created.org.id, &created.org.name)),
        )?;
    }
    Ok(())
}

/// Saves a token as a profile for this server.
fn save_profile_of(
    ctx: &Ctx,
    o: &mut Output,
    name: &str,
    secret: &str,
    org: Option<(&str, &str)>,
) -> Result {
    let path = profiles::config_path();
    let profile = profiles::Profile {
        server: Some(ctx.server.clone()),
        token: Some(secret.to_owned()),
        org_id: org.map(|(id, _)| id.to_owned()),
        org_name: org.map(|(_, name)| name.to_owned()),
    };
    profiles::save_profiles(&path, &[(name.to_owned(), profile)], None)?;
    o.note(&format!(
        "saved profile {name:?} to {}; use it with --profile {name}",
        path.display()
    ));
    Ok(())
}

// --- rendering -----------------------------------------------------------------------------------

/// `whoami`'s answer, shown with the server it came from.
#[derive(Serialize)]
#[serde(transparent)]
struct Whoami<'a> {
    me: &'a api::Me,
    #[serde(skip)]
    server: &'a str,
}

impl Render for Whoami<'_> {
    fn render(&self, text: &mut Text) {
        let me = self.me;
        let mut pairs: Vec<(&str, String)> = org_pairs(&me.org)
            .into_iter()
            .filter(|(label, _)| *label != "created")
            .collect();
        pairs.extend([
            ("member", me.token.member_id.clone()),
            ("role", me.token.role.as_str().to_owned()),
            ("token", format!("{} ({})", me.token.id, me.token.name)),
            ("expires", me.token.expires_at.clone()),
            ("server", self.server.to_owned()),
        ]);
        text.pairs(&pairs);
    }
}

/// `health`'s answer, shown with the server it came from.
#[derive(Serialize)]
#[serde(transparent)]
struct Health<'a> {
    health: &'a api::Health,
    #[serde(skip)]
    server: &'a str,
}

impl Render for Health<'_> {
    fn render(&self, text: &mut Text) {
        text.pairs(&[
            ("status", self.health.status.clone()),
            ("version", self.health.version.clone()),
            ("store", self.health.store.clone()),
            ("server", self.server.to_owned()),
        ]);
    }
}

impl Render for api::Org {
    fn render(&self, text: &mut Text) {
        text.pairs(&org_pairs(self));
    }
}

impl Row for api::Org {
    const HEADER: &'static [&'static str] = &[
        "ID",
        "NAME",
        "KIND",
        "CONSUMER TYPE",
        "ZONE",
        "REGION",
        "CREATED",
        "NAME UNIQUE",
    ];

    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.name.clone(),
            self.kind.as_str().to_owned(),
            or_dash(self.consumer_type.map(|t| t.as_str())),
            self.zone.clone(),
            self.origin_region.clone(),
            self.created_at.clone(),
            if self.name_unique { "yes" } else { "no" }.to_owned(),
        ]
    }
}

/// A new org, its first admin and the admin's token with its secret.
impl Render for api::CreateOrgResponse {
    fn render(&self, text: &mut Text) {
        let mut pairs = org_pairs(&self.org);
        pairs.extend([
            ("admin", format!("{} ({})", self.admin.id, self.admin.name)),
            ("token", self.token.token.id.clone()),
            ("secret", self.token.secret.clone()),
        ]);
        text.pairs(&pairs);
    }
}

impl Render for api::Member {
    fn render(&self, text: &mut Text) {
        text.pairs(&[
            ("member", self.id.clone()),
            ("name", self.name.clone()),
            ("email", or_dash(self.email.as_deref())),
            ("role", self.role.as_str().to_owned()),
            ("created", self.created_at.clone()),
        ]);
    }
}

impl Row for api::Member {
    const HEADER: &'static [&'static str] = &["ID", "NAME", "EMAIL", "ROLE", "CREATED"];

    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.name.clone(),
            or_dash(self.email.as_deref()),
            self.role.as_str().to_owned(),
            self.created_at.clone(),
        ]
    }
}

impl Render for api::ApiToken {
    fn render(&self, text: &mut Text) {
        text.pairs(&token_pairs(self));
    }
}

impl Row for api::ApiToken {
    const HEADER: &'static [&'static str] = &["ID", "NAME", "MEMBER", "ROLE", "STATE", "EXPIRES"];

    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.name.clone(),
            self.member_id.clone(),
            self.role.as_str().to_owned(),
            token_state(self).to_owned(),
            self.expires_at.clone(),
        ]
    }
}

/// A new token with its secret.
impl Render for api::CreatedToken {
    fn render(&self, text: &mut Text) {
        let mut pairs = token_pairs(&self.token);
        pairs.push(("secret", self.secret.clone()));
        text.pairs(&pairs);
    }
}

fn org_pairs(org: &api::Org) -> Vec<(&'static str, String)> {
    let mut pairs = vec![
        ("org", org.id.clone()),
        ("name", org.name.clone()),
        ("kind", org.kind.as_str().to_owned()),
    ];
    if let Some(consumer_type) = org.consumer_type {
        pairs.push(("consumer type", consumer_type.as_str().to_owned()));
    }
    pairs.extend([
        ("zone", org.zone.clone()),
        ("origin region", org.origin_region.clone()),
        ("created", org.created_at.clone()),
    ]);
    if !org.name_unique {
        pairs.push((
            "name unique",
            "no: shown with its id until renamed (suanli org rename)".to_owned(),
        ));
    }
    pairs
}

/// `active`, `revoked` or `expired`.
fn token_state(token: &api::ApiToken) -> &'static str {
    if token.revoked_at.is_some() {
        return "revoked";
    }
    let now = chrono::DateTime::<chrono::Utc>::from(suanli_clock::now());
    match chrono::DateTime::parse_from_rfc3339(&token.expires_at) {
        Ok(expires) if expires <= now => "expired",
        _ => "active",
    }
}

fn token_pairs(token: &api::ApiToken) -> Vec<(&'static str, String)> {
    vec![
        ("token", token.id.clone()),
        ("name", token.name.clone()),
        ("member", token.member_id.clone()),
        ("role", token.role.as_str().to_owned()),
        ("state", token_state(token).to_owned()),
        ("created", token.created_at.clone()),
        ("expires", token.expires_at.clone()),
    ]
}
