//! Conversions from store rows to wire types.

use chrono::{DateTime, SecondsFormat, Utc};
use suanli_api as api;
use suanli_store::ops::{
    AccountRow, LeaseRow, MemberRow, OfferRow, OrgRow, PoolRow, TokenRow, TransferRow,
};

/// Milliseconds since the epoch as RFC 3339 UTC with milliseconds.
pub fn time(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses an RFC 3339 time into milliseconds since the epoch.
pub fn parse_time(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

pub fn org(o: &OrgRow) -> api::Org {
    api::Org {
        id: o.id.clone(),
        name: o.name.clone(),
        kind: api_org_kind(o.kind),
        consumer_type: o
            .consumer_type
            .as_deref()
            .and_then(api::ConsumerType::parse),
        zone: o.zone.clone(),
        origin_region: o.origin_region.clone(),
        created_at: time(o.created_ms),
        name_unique: o.name_unique,
    }
}

pub fn member(m: &MemberRow) -> api::Member {
    api::Member {
        id: m.id.clone(),
        org_id: m.org_id.clone(),
        name: m.name.clone(),
        email: m.email.clone(),
        role: api::Role::parse(&m.role).unwrap_or(api::Role::Member),
        created_at: time(m.created_ms),
    }
}

pub fn token(t: &TokenRow) -> api::ApiToken {
    api::ApiToken {
        id: t.id.clone(),
        org_id: t.org_id.clone(),
        member_id: t.member_id.clone(),
        name: t.name.clone(),
        role: api::Role::parse(&t.role).unwrap_or(api::Role::Member),
        created_at: time(t.created_ms),
        expires_at: time(t.expires_ms),
        revoked_at: t.revoked_ms.map(time),
    }
}

pub fn pool(p: &PoolRow) -> api::Pool {
    api::Pool {
        id: p.id.clone(),
        org_id: p.org_id.clone(),
        name: p.name.clone(),
        zone: p.zone.clone(),
        agent_connected: p.agents_alive > 0,
        agents: p.agents,
        nodes: p
            .nodes
            .iter()
            .map(|n| api::Node {
                id: n.id.clone(),
                name: n.name.clone(),
                cpus: n.cpus,
                memory_mib: n.memory_mib,
                accelerator_model: n.accelerator_model.clone(),
                accelerators: n.accelerators,
                partition: n.partition.clone(),
                cpus_reserved: n.cpus_reserved,
                memory_mib_reserved: n.memory_mib_reserved,
                accelerators_reserved: n.accelerators_reserved,
            })
            .collect(),
        created_at: time(p.created_ms),
    }
}

pub fn offer(o: &OfferRow) -> api::Offer {
    use suanli_core::resource::Category;
    api::Offer {
        id: o.id.clone(),
        org_id: o.org_id.clone(),
        provider_name: o.provider_name.clone(),
        pool_id: o.pool_id.clone(),
        zone: o.zone.clone(),
        class: o.class.to_string(),
        category: o.class.category.as_str().into(),
        accelerator_model: (o.class.category == Category::Intelligent)
            .then(|| o.class.qualifier.clone())
            .flatten(),
        partition: (o.class.category == Category::Supercomputing)
            .then(|| o.class.qualifier.clone())
            .flatten(),
        accelerator_memory_gib: o.accelerator_memory_gib,
        cpus_per_unit: o.cpus_per_unit,
        memory_mib_per_unit: o.memory_mib_per_unit,
        price_micros_per_unit_hour: o.price_micros_per_unit_hour,
        min_units: o.min_units,
        max_units: o.max_units,
        valid_from: time(o.valid_from_ms),
        valid_until: time(o.valid_until_ms),
        state: o.state.as_str().into(),
        units_available: o.units_available,
        created_at: time(o.created_ms),
    }
}

pub fn lease(l: &LeaseRow) -> api::Lease {
    api::Lease {
        id: l.id.clone(),
        consumer_org_id: l.consumer_org_id.clone(),
        provider_org_id: l.provider_org_id.clone(),
        offer_id: l.offer_id.clone(),
        pool_id: l.pool_id.clone(),
        class: l.class.to_string(),
        zone: l.zone.clone(),
        units: l.units,
        price_micros_per_unit_hour: l.price_micros_per_unit_hour,
        duration_limit_s: l.duration_limit_s,
        started_at: time(l.started_ms),
        ends_at: time(l.ends_ms),
        state: l.state.as_str().into(),
        hold: api::Hold {
            id: l.hold.id.clone(),
            amount_micros: l.hold.amount_micros,
            state: l.hold.state.as_str().into(),
            posted_micros: l.hold.posted_micros,
        },
        billing: l.billing.as_str().into(),
        auto_end: l.auto_end,
        metered_unit_ms: l.metered_unit_ms,
        allocations: l
            .allocations
            .iter()
            .map(|(node_id, units)| api::LeaseAllocation {
                node_id: node_id.clone(),
                units: *units,
            })
            .collect(),
        ended_at: l.ended_ms.map(time),
        billed_unit_ms: l.billed_unit_ms,
        cost_micros: l.cost_micros,
        fee_micros: l.fee_micros,
        provider_micros: l
            .cost_micros
            .zip(l.fee_micros)
            .map(|(c, f)| c.saturating_sub(f)),
        released_micros: l
            .cost_micros
            .map(|c| l.hold.amount_micros.saturating_sub(c)),
    }
}

pub fn transfer(t: &TransferRow) -> api::Transfer {
    api::Transfer {
        id: t.id.clone(),
        kind: t.kind.clone(),
        debit_account_id: t.debit_account_id.clone(),
        credit_account_id: t.credit_account_id.clone(),
        amount_micros: t.amount_micros,
        hold_id: t.hold_id.clone(),
        lease_id: t.lease_id.clone(),
        external_ref: t.external_ref.clone(),
        access_request_id: t.access_request_id.clone(),
        created_at: time(t.created_ms),
    }
}

pub fn balance(org_id: &str, accounts: &[AccountRow]) -> api::Balance {
    use suanli_core::ledger::AccountKind;
    let of = |k: AccountKind| {
        accounts
            .iter()
            .find(|a| a.kind == k)
            .map(AccountRow::balance)
            .unwrap_or(0)
    };
    api::Balance {
        org_id: org_id.into(),
        available_micros: of(AccountKind::Available),
        held_micros: of(AccountKind::Held),
        earnings_micros: of(AccountKind::Earnings),
        accounts: accounts
            .iter()
            .map(|a| api::AccountBalance {
                id: a.id.clone(),
                kind: a.kind.as_str().into(),
                debits_micros: a.debits_micros,
                credits_micros: a.credits_micros,
                balance_micros: a.balance(),
            })
            .collect(),
    }
}

/// Statement lines for `org_id`: one line per movement on one of its accounts, with the balance
/// of that account after it.
pub fn statement_lines(
    accounts: &[AccountRow],
    transfers: &[TransferRow],
) -> Vec<api::StatementLine> {
    let mut lines = Vec::new();
    for t in transfers {
        for (account_id, direction, after) in [
            (&t.debit_account_id, "debit", t.debit_balance_after_micros),
            (
                &t.credit_account_id,
                "credit",
                t.credit_balance_after_micros,
            ),
        ] {
            if let Some(a) = accounts.iter().find(|a| &a.id == account_id) {
                lines.push(api::StatementLine {
                    seq: t.seq,
                    transfer_id: t.id.clone(),
                    created_at: time(t.created_ms),
                    kind: t.kind.clone(),
                    account_id: a.id.clone(),
                    account_kind: a.kind.as_str().into(),
                    direction: direction.into(),
                    amount_micros: t.amount_micros,
                    balance_micros: after,
                    lease_id: t.lease_id.clone(),
                    hold_id: t.hold_id.clone(),
                    external_ref: t.external_ref.clone(),
                    access_request_id: t.access_request_id.clone(),
                });
            }
        }
    }
    lines
}

pub fn agent(a: &suanli_store::jobs::AgentRow, config: &crate::ServerConfig) -> api::Agent {
    api::Agent {
        id: a.id.clone(),
        org_id: a.org_id.clone(),
        pool_id: a.pool_id.clone(),
        name: a.name.clone(),
        backend: a.backend.clone(),
        isolation: a.isolation.clone(),
        version: a.version.clone(),
        state: a.state.as_str().into(),
        registered_at: time(a.registered_ms),
        last_seen_at: time(a.last_seen_ms),
        heartbeat_interval_s: config.heartbeat_interval.as_secs(),
        suspect_after_s: config.suspect_after.as_secs(),
        lost_after_s: config.lost_after.as_secs(),
        usage_refusals: a.usage_refusals,
        generation: a.generation,
        last_usage_refusal: a.last_usage_refusal.clone(),
    }
}

pub fn job(j: &suanli_store::jobs::JobRow) -> api::Job {
    api::Job {
        id: j.id.clone(),
        org_id: j.org_id.clone(),
        lease_id: j.lease_id.clone(),
        name: j.name.clone(),
        state: j.state.as_str().into(),
        restartable: j.restartable,
        exit_code: j.exit_code,
        reason: j.reason.clone(),
        created_at: time(j.created_ms),
        started_at: j.started_ms.map(time),
        ended_at: j.ended_ms.map(time),
        unit_ms: j.unit_ms,
        attempts: j
            .attempts
            .iter()
            .map(|a| api::Attempt {
                id: a.id.clone(),
                number: a.number,
                agent_id: a.agent_id.clone(),
                state: a.state.as_str().into(),
                exit_code: a.exit_code,
                reason: a.reason.clone(),
                dispatched_at: time(a.dispatched_ms),
                started_at: a.started_ms.map(time),
                ended_at: a.ended_ms.map(time),
                backend_id: a.backend_id.clone(),
            })
            .collect(),
    }
}

/// An org's kind on the wire, from the core's.
pub fn api_org_kind(kind: suanli_core::decide::OrgKind) -> api::OrgKind {
    use suanli_core::decide::OrgKind as K;
    match kind {
        K::Consumer => api::OrgKind::Consumer,
        K::Provider => api::OrgKind::Provider,
        K::Operator => api::OrgKind::Operator,
    }
}

/// An org's kind in the core, from the wire's.
pub fn core_org_kind(kind: api::OrgKind) -> suanli_core::decide::OrgKind {
    use suanli_core::decide::OrgKind as K;
    match kind {
        api::OrgKind::Consumer => K::Consumer,
        api::OrgKind::Provider => K::Provider,
        api::OrgKind::Operator => K::Operator,
    }
}
