//! Money: `deposit` and `withdraw` (operator), `ledger check`, and an org's `balance`,
//! `earnings` and `statement`.

use anyhow::bail;
use serde::Serialize;
use suanli_api as api;

use super::args::{DepositArgs, LedgerCommand, StatementArgs, WithdrawArgs};
use super::format::{or_dash, signed_yuan, yuan};
use super::render::{Output, Render, Text};
use super::{id, Ctx, Result};

pub(super) async fn deposit(ctx: &Ctx, args: DepositArgs, o: &mut Output) -> Result {
    let client = &ctx.client;
    let request = api::DepositRequest {
        amount_micros: args.amount_micros,
        external_ref: args.reference,
    };
    let org: api::OrgId = id(&args.org_id)?;
    let transfer = client.deposit(&org, &request, ctx.key()).await?;
    o.show(&transfer)
}

pub(super) async fn withdraw(ctx: &Ctx, args: WithdrawArgs, o: &mut Output) -> Result {
    let client = &ctx.client;
    let request = api::WithdrawalRequest {
        amount_micros: args.amount_micros,
        external_ref: args.reference,
        source: args.source.into(),
    };
    let org: api::OrgId = id(&args.org_id)?;
    let transfer = client.withdraw(&org, &request, ctx.key()).await?;
    o.show(&transfer)
}

pub(super) async fn ledger(ctx: &Ctx, command: LedgerCommand, o: &mut Output) -> Result {
    match command {
        LedgerCommand::Check => {
            let check = ctx.client.ledger_check().await?;
            o.show(&check)?;
            if !check.ok {
                bail!(
                    "the ledger check found {} violation(s)",
                    check.violations.len()
                );
            }
            Ok(())
        }
    }
}

pub(super) async fn balance(ctx: &Ctx, o: &mut Output) -> Result {
    o.show(&ctx.client.balance().await?)
}

pub(super) async fn earnings(ctx: &Ctx, o: &mut Output) -> Result {
    o.show(&Earnings(&ctx.client.balance().await?))
}

pub(super) async fn statement(ctx: &Ctx, args: StatementArgs, o: &mut Output) -> Result {
    let params = api::PageParams {
        limit: args.limit,
        after: args.after,
    };
    o.show(&ctx.client.statement(&params).await?)
}

// --- rendering -----------------------------------------------------------------------------------

impl Render for api::Transfer {
    fn render(&self, text: &mut Text) {
        let mut pairs = vec![
            ("transfer", self.id.clone()),
            ("kind", self.kind.clone()),
            ("amount", yuan(self.amount_micros)),
            ("debit", self.debit_account_id.clone()),
            ("credit", self.credit_account_id.clone()),
        ];
        if let Some(reference) = &self.external_ref {
            pairs.push(("ref", reference.clone()));
        }
        pairs.push(("created", self.created_at.clone()));
        text.pairs(&pairs);
    }
}

impl Render for api::LedgerCheck {
    fn render(&self, text: &mut Text) {
        text.pairs(&[
            ("ok", if self.ok { "yes" } else { "no" }.to_owned()),
            ("accounts", self.accounts.to_string()),
            ("transfers", self.transfers.to_string()),
            ("holds pending", self.holds_pending.to_string()),
        ]);
        for violation in &self.violations {
            text.line(&format!("violation: {violation}"));
        }
    }
}

/// The balance, with its accounts.
impl Render for api::Balance {
    fn render(&self, text: &mut Text) {
        text.pairs(&[
            ("org", self.org_id.clone()),
            ("available", signed_yuan(self.available_micros)),
            ("held", signed_yuan(self.held_micros)),
            ("earnings", signed_yuan(self.earnings_micros)),
        ]);
        text.line("");
        let rows: Vec<Vec<String>> = self
            .accounts
            .iter()
            .map(|a| {
                vec![
                    a.id.clone(),
                    a.kind.clone(),
                    yuan(a.debits_micros),
                    yuan(a.credits_micros),
                    signed_yuan(a.balance_micros),
                ]
            })
            .collect();
        text.table(&["ACCOUNT", "KIND", "DEBITS", "CREDITS", "BALANCE"], &rows);
    }
}

/// The balance, shown as what a provider has earned.
#[derive(Serialize)]
#[serde(transparent)]
struct Earnings<'a>(&'a api::Balance);

impl Render for Earnings<'_> {
    fn render(&self, text: &mut Text) {
        text.pairs(&[
            ("org", self.0.org_id.clone()),
            ("earnings", signed_yuan(self.0.earnings_micros)),
        ]);
    }
}

impl Render for api::Statement {
    fn render(&self, text: &mut Text) {
        let rows: Vec<Vec<String>> = self
            .lines
            .iter()
            .map(|l| {
                let reference = l
                    .lease_id
                    .as_deref()
                    .or(l.access_request_id.as_deref())
                    .or(l.external_ref.as_deref())
                    .or(l.hold_id.as_deref());
                vec![
                    l.seq.to_string(),
                    l.created_at.clone(),
                    l.kind.clone(),
                    l.account_kind.clone(),
                    l.direction.clone(),
                    yuan(l.amount_micros),
                    signed_yuan(l.balance_micros),
                    or_dash(reference),
                ]
            })
            .collect();
        text.table(
            &[
                "SEQ",
                "TIME",
                "KIND",
                "ACCOUNT",
                "DIRECTION",
                "AMOUNT",
                "BALANCE",
                "REFERENCE",
            ],
            &rows,
        );
        if let Some(next) = self.next_after {
            text.line(&format!("more: suanli statement --after {next}"));
        }
    }
}
