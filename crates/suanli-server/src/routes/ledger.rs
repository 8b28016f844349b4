//! Money: operator deposits and withdrawals, balances, statements and the ledger self-check.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use suanli_api::{
    Balance, DepositRequest, ErrorBody, LedgerCheck, OrgId, PageParams, Statement, Transfer,
    WithdrawalRequest, WithdrawalSource,
};
use suanli_core::decide::access::Action;
use suanli_core::decide::money::{self, Payment};
use suanli_core::ledger::AccountKind;
use suanli_store::ops::account_ids;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, IdPath, IdempotencyKey};
use crate::routes::{limit, line};
use crate::{now_ms, wire, AppState, WriteOptions};

/// The reference of a payment outside the exchange: one line, normalised, not empty. An org's
/// deposits and withdrawals never share one (the store refuses a second use).
fn external_ref(value: &str) -> Result<String, ApiError> {
    let value = line("external_ref", value)?;
    if value.is_empty() {
        return Err(ApiError::invalid(
            "external_ref",
            "external_ref names the payment outside the exchange",
        ));
    }
    Ok(value)
}

/// Records money received for an org (operator only): external → the org's available account.
/// An org's deposits and withdrawals never share an `external_ref` (compared ignoring case): a
/// second use is refused with 409 `conflict` on `external_ref`.
#[utoipa::path(post, path = "/api/v1/orgs/{org_id}/deposits", tag = "operator", security(("bearer" = [])),
    params(("org_id" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "retry key")),
    request_body = DepositRequest,
    responses((status = 201, body = Transfer), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn deposit(
    State(state): State<AppState>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    IdPath(org_id): IdPath<OrgId>,
    body: ApiJson<DepositRequest>,
) -> Result<Response, ApiError> {
    caller.may(Action::RecordDeposit)?;
    let req = body.value;
    money::decide_amount(req.amount_micros)?;
    let external_ref = external_ref(&req.external_ref)?;
    let now = now_ms();
    // No accounts to declare for an id that names no org: the deposit is refused before any.
    let accounts = org_id.get().map_or_else(
        |_| Vec::new(),
        |org| {
            account_ids(
                &money::accounts(org.as_str(), Payment::Deposit),
                caller.org_id(),
            )
        },
    );
    state
        .mutate_with(
            caller.org_id(),
            WriteOptions {
                accounts,
                ..WriteOptions::default()
            },
            key,
            body.request_sha256,
            StatusCode::CREATED,
            move |tx| {
                Ok(wire::transfer(&tx.deposit(
                    org_id.get()?.as_str(),
                    req.amount_micros,
                    &external_ref,
                    now,
                )?))
            },
        )
        .await
}

/// Pays money out of an org's available or earnings account (operator only).
#[utoipa::path(post, path = "/api/v1/orgs/{org_id}/withdrawals", tag = "operator", security(("bearer" = [])),
    params(("org_id" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "retry key")),
    request_body = WithdrawalRequest,
    responses((status = 201, body = Transfer), (status = 400, body = ErrorBody), (status = 402, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn withdraw(
    State(state): State<AppState>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    IdPath(org_id): IdPath<OrgId>,
    body: ApiJson<WithdrawalRequest>,
) -> Result<Response, ApiError> {
    caller.may(Action::RecordWithdrawal)?;
    let req = body.value;
    money::decide_amount(req.amount_micros)?;
    let external_ref = external_ref(&req.external_ref)?;
    let source = match req.source {
        WithdrawalSource::Available => AccountKind::Available,
        WithdrawalSource::Earnings => AccountKind::Earnings,
    };
    let now = now_ms();
    let accounts = org_id.get().map_or_else(
        |_| Vec::new(),
        |org| {
            account_ids(
                &money::accounts(org.as_str(), Payment::Withdrawal { source }),
                caller.org_id(),
            )
        },
    );
    state
        .mutate_with(
            caller.org_id(),
            WriteOptions {
                accounts,
                ..WriteOptions::default()
            },
            key,
            body.request_sha256,
            StatusCode::CREATED,
            move |tx| {
                Ok(wire::transfer(&tx.withdraw(
                    org_id.get()?.as_str(),
                    source,
                    req.amount_micros,
                    &external_ref,
                    now,
                )?))
            },
        )
        .await
}

/// The caller's balances: available, held in escrow, and earnings.
#[utoipa::path(get, path = "/api/v1/balance", tag = "ledger", security(("bearer" = [])),
    responses((status = 200, body = Balance), (status = 401, body = ErrorBody)))]
pub async fn balance(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Balance>, ApiError> {
    let org = caller.org.id.clone();
    let accounts = state.read(move |tx| tx.accounts_of(&org)).await?;
    Ok(Json(wire::balance(&caller.org.id, &accounts)))
}

/// Every movement on the caller's accounts, oldest first, with the running balance.
#[utoipa::path(get, path = "/api/v1/statement", tag = "ledger", security(("bearer" = [])),
    params(PageParams),
    responses((status = 200, body = Statement), (status = 400, body = ErrorBody)))]
pub async fn statement(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<Json<Statement>, ApiError> {
    let limit = limit(params.limit)?;
    let after = params.after.unwrap_or(0);
    let org = caller.org.id.clone();
    let (accounts, transfers) = state
        .read(move |tx| Ok((tx.accounts_of(&org)?, tx.statement(&org, after, limit)?)))
        .await?;
    let next_after = (transfers.len() == limit as usize)
        .then(|| transfers.last().map(|t| t.seq))
        .flatten();
    Ok(Json(Statement {
        org_id: caller.org.id.clone(),
        lines: wire::statement_lines(&accounts, &transfers),
        next_after,
    }))
}

/// Checks the ledger invariants over the whole book (operator only).
#[utoipa::path(get, path = "/api/v1/ledger/check", tag = "operator", security(("bearer" = [])),
    responses((status = 200, body = LedgerCheck), (status = 403, body = ErrorBody)))]
pub async fn check(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<LedgerCheck>, ApiError> {
    caller.may(Action::CheckLedger)?;
    let (violations, accounts, transfers, pending) = state
        .read(|tx| {
            let violations = tx.check_ledger()?;
            let pending = tx
                .ledger_snapshot()?
                .holds
                .iter()
                .filter(|h| h.3 == suanli_core::ledger::HoldState::Pending)
                .count();
            Ok((
                violations,
                tx.count("accounts")?,
                tx.count("transfers")?,
                pending as u64,
            ))
        })
        .await?;
    Ok(Json(LedgerCheck {
        ok: violations.is_empty(),
        accounts,
        transfers,
        holds_pending: pending,
        violations,
    }))
}
