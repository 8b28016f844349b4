//! Migrations. Never edit one that has shipped: add a new one.
//!
//! The tables are the same on both databases; the few dialect differences (the transfer sequence
//! column, SQLite's rebuilds of `transfers` in migration 5 and of `holds` and `leases` in
//! migration 7, `postings` without a rowid) are written out per database in [`migration_sql`].

use crate::database::{Database, StoreError};

/// The schema, one entry per migration, in order. `{SEQ}` is the dialect's auto-incrementing key;
/// `{SQLITE}` and `{SQLITE_CHECKS}` are SQLite's own steps of migrations that change nothing on
/// PostgreSQL; `{WITHOUT_ROWID}` ends a table that SQLite stores without a rowid.
const MIGRATIONS: &[&str] = &[
    // 1: orgs, members, tokens, registry, pools, offers, ledger, leases, idempotency.
    r#"
CREATE TABLE orgs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('consumer', 'provider', 'operator')),
    consumer_type TEXT,
    zone TEXT NOT NULL,
    origin_region TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE TABLE members (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    name TEXT NOT NULL,
    email TEXT,
    role TEXT NOT NULL CHECK (role IN ('admin', 'member')),
    created_ms BIGINT NOT NULL
);
CREATE INDEX members_org ON members(org_id);
CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    member_id TEXT NOT NULL REFERENCES members(id),
    name TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL UNIQUE,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    revoked_ms BIGINT
);
CREATE INDEX api_tokens_org ON api_tokens(org_id);
CREATE TABLE accelerator_models (
    name TEXT PRIMARY KEY,
    vendor TEXT NOT NULL,
    memory_gib BIGINT NOT NULL CHECK (memory_gib > 0)
);
CREATE TABLE pools (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    name TEXT NOT NULL,
    zone TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX pools_org ON pools(org_id);
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    pool_id TEXT NOT NULL REFERENCES pools(id),
    name TEXT NOT NULL,
    cpus BIGINT NOT NULL CHECK (cpus >= 0),
    memory_mib BIGINT NOT NULL CHECK (memory_mib >= 0),
    accelerator_model TEXT,
    accelerators BIGINT NOT NULL CHECK (accelerators >= 0),
    partition_name TEXT,
    cpus_reserved BIGINT NOT NULL DEFAULT 0,
    memory_mib_reserved BIGINT NOT NULL DEFAULT 0,
    accelerators_reserved BIGINT NOT NULL DEFAULT 0,
    CHECK (cpus_reserved >= 0 AND cpus_reserved <= cpus),
    CHECK (memory_mib_reserved >= 0 AND memory_mib_reserved <= memory_mib),
    CHECK (accelerators_reserved >= 0 AND accelerators_reserved <= accelerators),
    UNIQUE (pool_id, name)
);
CREATE TABLE offers (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    pool_id TEXT NOT NULL REFERENCES pools(id),
    category TEXT NOT NULL,
    qualifier TEXT,
    accelerator_memory_gib BIGINT NOT NULL,
    cpus_per_unit BIGINT NOT NULL,
    memory_mib_per_unit BIGINT NOT NULL,
    price_micros_per_unit_hour BIGINT NOT NULL CHECK (price_micros_per_unit_hour > 0),
    min_units BIGINT NOT NULL,
    max_units BIGINT NOT NULL,
    valid_from_ms BIGINT NOT NULL,
    valid_until_ms BIGINT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('active', 'withdrawn')),
    created_ms BIGINT NOT NULL
);
CREATE INDEX offers_pool ON offers(pool_id);
CREATE INDEX offers_org ON offers(org_id);
CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    kind TEXT NOT NULL,
    debits_micros BIGINT NOT NULL DEFAULT 0 CHECK (debits_micros >= 0 AND debits_micros <= 4000000000000000000),
    credits_micros BIGINT NOT NULL DEFAULT 0 CHECK (credits_micros >= 0 AND credits_micros <= 4000000000000000000),
    UNIQUE (org_id, kind)
);
CREATE TABLE transfers (
    seq {SEQ},
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    debit_account_id TEXT NOT NULL REFERENCES accounts(id),
    credit_account_id TEXT NOT NULL REFERENCES accounts(id),
    amount_micros BIGINT NOT NULL CHECK (amount_micros > 0),
    debit_balance_after_micros BIGINT NOT NULL,
    credit_balance_after_micros BIGINT NOT NULL,
    hold_id TEXT,
    lease_id TEXT,
    external_ref TEXT,
    created_ms BIGINT NOT NULL,
    CHECK (debit_account_id <> credit_account_id)
);
CREATE INDEX transfers_debit ON transfers(debit_account_id, seq);
CREATE INDEX transfers_credit ON transfers(credit_account_id, seq);
CREATE TABLE holds (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    amount_micros BIGINT NOT NULL CHECK (amount_micros > 0),
    state TEXT NOT NULL CHECK (state IN ('pending', 'posted', 'voided')),
    posted_micros BIGINT NOT NULL DEFAULT 0,
    resolutions BIGINT NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL,
    resolved_ms BIGINT
);
CREATE TABLE leases (
    id TEXT PRIMARY KEY,
    consumer_org_id TEXT NOT NULL REFERENCES orgs(id),
    provider_org_id TEXT NOT NULL REFERENCES orgs(id),
    offer_id TEXT NOT NULL REFERENCES offers(id),
    pool_id TEXT NOT NULL REFERENCES pools(id),
    category TEXT NOT NULL,
    qualifier TEXT,
    zone TEXT NOT NULL,
    units BIGINT NOT NULL CHECK (units > 0),
    price_micros_per_unit_hour BIGINT NOT NULL,
    fee_bps BIGINT NOT NULL,
    duration_limit_s BIGINT NOT NULL,
    started_ms BIGINT NOT NULL,
    ends_ms BIGINT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('active', 'ended', 'cancelled', 'expired')),
    hold_id TEXT NOT NULL UNIQUE REFERENCES holds(id),
    ended_ms BIGINT,
    billed_seconds BIGINT,
    cost_micros BIGINT,
    fee_micros BIGINT
);
CREATE INDEX leases_consumer ON leases(consumer_org_id, started_ms);
CREATE INDEX leases_provider ON leases(provider_org_id, started_ms);
CREATE INDEX leases_active_ends ON leases(state, ends_ms);
CREATE TABLE lease_allocations (
    lease_id TEXT NOT NULL REFERENCES leases(id),
    node_id TEXT NOT NULL REFERENCES nodes(id),
    units BIGINT NOT NULL,
    cpus BIGINT NOT NULL,
    memory_mib BIGINT NOT NULL,
    accelerators BIGINT NOT NULL,
    PRIMARY KEY (lease_id, node_id)
);
CREATE TABLE idempotency_keys (
    org_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_sha256 TEXT NOT NULL,
    status BIGINT NOT NULL,
    body TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (org_id, idempotency_key)
);
"#,
    // 2: agents, jobs and their attempts, signed usage, logs; metered leases.
    r#"
ALTER TABLE leases ADD COLUMN billing TEXT NOT NULL DEFAULT 'elapsed';
ALTER TABLE leases ADD COLUMN auto_end BIGINT NOT NULL DEFAULT 0;
ALTER TABLE leases ADD COLUMN metered_unit_seconds BIGINT NOT NULL DEFAULT 0;
CREATE TABLE agents (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    pool_id TEXT NOT NULL REFERENCES pools(id),
    name TEXT NOT NULL,
    public_key_hex TEXT NOT NULL,
    backend TEXT NOT NULL,
    isolation TEXT NOT NULL,
    version TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('alive', 'suspect', 'lost')),
    registered_ms BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    UNIQUE (org_id, public_key_hex)
);
CREATE INDEX agents_pool ON agents(pool_id);
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    lease_id TEXT NOT NULL REFERENCES leases(id),
    pool_id TEXT NOT NULL REFERENCES pools(id),
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    restartable BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    current_attempt_id TEXT,
    exit_code BIGINT,
    reason TEXT,
    time_limit_s BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    started_ms BIGINT,
    ended_ms BIGINT,
    unit_seconds BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX jobs_queue ON jobs(pool_id, state, created_ms);
CREATE INDEX jobs_org ON jobs(org_id, created_ms);
CREATE INDEX jobs_lease ON jobs(lease_id);
CREATE TABLE attempts (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES jobs(id),
    number BIGINT NOT NULL,
    agent_id TEXT NOT NULL REFERENCES agents(id),
    state TEXT NOT NULL,
    exit_code BIGINT,
    reason TEXT,
    backend_id TEXT,
    dispatched_ms BIGINT NOT NULL,
    started_ms BIGINT,
    ended_ms BIGINT,
    unit_seconds BIGINT NOT NULL DEFAULT 0,
    UNIQUE (job_id, number)
);
CREATE INDEX attempts_agent ON attempts(agent_id, state);
CREATE TABLE usage_records (
    attempt_id TEXT NOT NULL REFERENCES attempts(id),
    seq BIGINT NOT NULL,
    job_id TEXT NOT NULL,
    unit_seconds BIGINT NOT NULL,
    billed_unit_seconds BIGINT NOT NULL,
    cpu_ms BIGINT,
    peak_memory_mib BIGINT,
    signature_hex TEXT NOT NULL,
    received_ms BIGINT NOT NULL,
    PRIMARY KEY (attempt_id, seq)
);
CREATE TABLE job_logs (
    seq {SEQ},
    job_id TEXT NOT NULL,
    attempt_id TEXT NOT NULL,
    chunk_seq BIGINT NOT NULL,
    stream TEXT NOT NULL,
    data TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    UNIQUE (attempt_id, chunk_seq)
);
CREATE INDEX job_logs_job ON job_logs(job_id, seq);
"#,
    // 3: files a job left as its outputs.
    r#"
CREATE TABLE job_outputs (
    job_id TEXT NOT NULL REFERENCES jobs(id),
    attempt_id TEXT NOT NULL,
    path TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    content_base64 TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (job_id, path)
);
"#,
    // 4: dispatch asks, for every queued job, whether its lease is busy: answer from an index.
    r#"
CREATE INDEX jobs_lease_state ON jobs(lease_id, state);
"#,
    // 5: SQLite only ({SQLITE} below), see SQLITE_TRANSFERS_REBUILD.
    "{SQLITE}",
    // 6: an org's movements and a consumer's leases are found through postings, see POSTINGS.
    POSTINGS,
    // 7: SQLite only ({SQLITE_CHECKS} below), see SQLITE_STATE_CHECKS.
    "{SQLITE_CHECKS}",
    // 8: unique org names and payment references, see NAMES_AND_REFERENCES.
    NAMES_AND_REFERENCES,
    // 9: metered use in unit-milliseconds, and usage refused for outrunning time, see UNIT_MS.
    UNIT_MS,
    // 10: one live agent per identity: each registration starts a new generation, and the
    // exchange refuses reports of an older one (an agent started twice, or from a copied state
    // directory).
    "ALTER TABLE agents ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;",
    // 11: the exchange's cap on a job's log (`core::job::LogCap`): bytes kept from its start,
    // bytes dropped since, the notice that marks where, and each attempt's newest chunk.
    "ALTER TABLE jobs ADD COLUMN log_head_bytes BIGINT NOT NULL DEFAULT 0; \
     ALTER TABLE jobs ADD COLUMN log_dropped_bytes BIGINT NOT NULL DEFAULT 0; \
     ALTER TABLE jobs ADD COLUMN log_notice_seq BIGINT NOT NULL DEFAULT 0; \
     ALTER TABLE attempts ADD COLUMN log_chunk_seq BIGINT NOT NULL DEFAULT -1;",
    // 12: data products (datasets and models): listings, versions, files, access requests and
    // entitlements, see DATA_PRODUCTS.
    DATA_PRODUCTS,
];

/// Migration 12: datasets and AI models as listed, licensed, versioned products
/// (`suanli_core::data`, `suanli_core::decide::data`).
///
/// - `orgs.data_provider`: the operator admitted the org as a data provider (providers list data
///   without it).
/// - `data_listings`: a product, unique by name on the exchange; its terms are fixed at creation
///   (the price as `price_kind` `free`, `per-version` or `per-period` with `price_micros` and
///   `period_days`; the licence as `Licence::encode` writes it; tags as a JSON array of strings;
///   the model's framework, format and parameter count, NULL for a dataset; the exchange's fee
///   then). A listing is shown to other orgs once one of its versions is not a draft.
/// - `data_versions`: a listing's versions, labels unique per listing and never reused; `draft`,
///   then `published` (every file verified), then perhaps `deprecated`.
/// - `data_files`: a version's files, paths unique per version, each with its declared size and
///   SHA-256, whether its bytes were verified, and the progress of its upload (`received_bytes`,
///   `parts`, the object store's opaque `hash_state` of the bytes so far, and the `object_prefix`
///   under which its bytes are stored).
/// - `access_requests`: every request for access, granted at once (`approved` when made) or
///   awaiting the owner until `expires_ms`; the price the buyer agreed to, the hold of that price
///   (NULL when free), at most one `pending` per buyer and listing.
/// - `entitlements`: who may use which version (NULL: every version) from when until when (NULL:
///   for good), revoked or not, and the request that granted it.
/// - `transfers.access_request_id`: the request a transfer paid or released the price of, so
///   that a statement shows it (a data product's transfers have no lease).
///
/// State checks are comparisons, not `IN` lists (see [`SQLITE_STATE_CHECKS`]).
const DATA_PRODUCTS: &str = r#"
ALTER TABLE orgs ADD COLUMN data_provider BIGINT NOT NULL DEFAULT 0
    CHECK (data_provider = 0 OR data_provider = 1);
ALTER TABLE transfers ADD COLUMN access_request_id TEXT;
CREATE TABLE data_listings (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind = 'dataset' OR kind = 'model'),
    title_zh TEXT NOT NULL,
    title_en TEXT NOT NULL,
    description_zh TEXT NOT NULL,
    description_en TEXT NOT NULL,
    tags TEXT NOT NULL,
    card TEXT NOT NULL,
    licence TEXT NOT NULL,
    access_mode TEXT NOT NULL CHECK (access_mode = 'download' OR access_mode = 'compute-only'),
    gating TEXT NOT NULL CHECK (gating = 'automatic' OR gating = 'manual'),
    price_kind TEXT NOT NULL
        CHECK (price_kind = 'free' OR price_kind = 'per-version' OR price_kind = 'per-period'),
    price_micros BIGINT NOT NULL CHECK (price_micros >= 0),
    period_days BIGINT,
    model_framework TEXT,
    model_format TEXT,
    model_parameters BIGINT,
    fee_bps BIGINT NOT NULL CHECK (fee_bps >= 0 AND fee_bps <= 10000),
    created_ms BIGINT NOT NULL
);
CREATE INDEX data_listings_org ON data_listings(org_id, created_ms);
CREATE TABLE data_versions (
    id TEXT PRIMARY KEY,
    listing_id TEXT NOT NULL REFERENCES data_listings(id),
    label TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state = 'draft' OR state = 'published' OR state = 'deprecated'),
    created_ms BIGINT NOT NULL,
    published_ms BIGINT,
    deprecated_ms BIGINT,
    UNIQUE (listing_id, label)
);
CREATE TABLE data_files (
    version_id TEXT NOT NULL REFERENCES data_versions(id),
    path TEXT NOT NULL,
    size_bytes BIGINT NOT NULL CHECK (size_bytes >= 0),
    sha256 TEXT NOT NULL,
    verified BIGINT NOT NULL DEFAULT 0 CHECK (verified = 0 OR verified = 1),
    received_bytes BIGINT NOT NULL DEFAULT 0
        CHECK (received_bytes >= 0 AND received_bytes <= size_bytes),
    parts BIGINT NOT NULL DEFAULT 0 CHECK (parts >= 0),
    hash_state TEXT,
    object_prefix TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    verified_ms BIGINT,
    PRIMARY KEY (version_id, path)
);
CREATE TABLE access_requests (
    id TEXT PRIMARY KEY,
    listing_id TEXT NOT NULL REFERENCES data_listings(id),
    buyer_org_id TEXT NOT NULL REFERENCES orgs(id),
    version_label TEXT,
    price_kind TEXT NOT NULL
        CHECK (price_kind = 'free' OR price_kind = 'per-version' OR price_kind = 'per-period'),
    price_micros BIGINT NOT NULL CHECK (price_micros >= 0),
    period_days BIGINT,
    purpose TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state = 'pending' OR state = 'approved' OR state = 'denied'
        OR state = 'withdrawn' OR state = 'expired'),
    hold_id TEXT UNIQUE REFERENCES holds(id),
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    decided_ms BIGINT
);
CREATE INDEX access_requests_listing ON access_requests(listing_id, created_ms);
CREATE INDEX access_requests_buyer ON access_requests(buyer_org_id, created_ms);
CREATE INDEX access_requests_due ON access_requests(state, expires_ms);
CREATE UNIQUE INDEX access_requests_one_pending ON access_requests(listing_id, buyer_org_id)
    WHERE state = 'pending';
CREATE TABLE entitlements (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    listing_id TEXT NOT NULL REFERENCES data_listings(id),
    version_label TEXT,
    from_ms BIGINT NOT NULL,
    until_ms BIGINT,
    revoked_ms BIGINT,
    request_id TEXT NOT NULL REFERENCES access_requests(id),
    created_ms BIGINT NOT NULL
);
CREATE INDEX entitlements_org ON entitlements(org_id, listing_id);
CREATE INDEX entitlements_listing ON entitlements(listing_id, created_ms);
"#;

/// Migration 9: metered use is counted in unit-milliseconds end to end (a short job was billed
/// nothing when each report was floored to whole seconds), and a lease records the
/// unit-milliseconds it was billed, whichever way it is billed, so that its cost is
/// `floor(price × billed_unit_ms / 3,600,000)`: the one rounding, at settlement. Usage an agent
/// claimed beyond what time allows is refused and kept in `usage_refusals`, counted on its agent
/// for the operator to see.
const UNIT_MS: &str = r#"
ALTER TABLE leases RENAME COLUMN metered_unit_seconds TO metered_unit_ms;
UPDATE leases SET metered_unit_ms = metered_unit_ms * 1000;
ALTER TABLE leases RENAME COLUMN billed_seconds TO billed_unit_ms;
UPDATE leases SET billed_unit_ms = billed_unit_ms * units * 1000
    WHERE billing = 'elapsed' AND billed_unit_ms IS NOT NULL;
UPDATE leases SET billed_unit_ms = metered_unit_ms WHERE billing = 'metered' AND state <> 'active';
ALTER TABLE jobs RENAME COLUMN unit_seconds TO unit_ms;
UPDATE jobs SET unit_ms = unit_ms * 1000;
ALTER TABLE attempts RENAME COLUMN unit_seconds TO unit_ms;
UPDATE attempts SET unit_ms = unit_ms * 1000;
ALTER TABLE usage_records RENAME COLUMN unit_seconds TO unit_ms;
ALTER TABLE usage_records RENAME COLUMN billed_unit_seconds TO billed_unit_ms;
UPDATE usage_records SET unit_ms = unit_ms * 1000, billed_unit_ms = billed_unit_ms * 1000;
CREATE TABLE usage_refusals (
    attempt_id TEXT NOT NULL REFERENCES attempts(id),
    seq BIGINT NOT NULL,
    agent_id TEXT NOT NULL REFERENCES agents(id),
    job_id TEXT NOT NULL,
    claimed_unit_ms BIGINT NOT NULL,
    bound_unit_ms BIGINT NOT NULL,
    reason TEXT NOT NULL,
    received_ms BIGINT NOT NULL,
    PRIMARY KEY (attempt_id, seq)
);
CREATE INDEX usage_refusals_agent ON usage_refusals(agent_id, received_ms);
ALTER TABLE agents ADD COLUMN usage_refusals BIGINT NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN last_usage_refusal TEXT;
"#;

/// Migration 8: an org's name is unique under its key (`suanli_core::validate::name_key`: case,
/// width, spacing, invisible characters and look-alike letters do not tell two names apart), and
/// an org's deposits and withdrawals never share an external reference (its key is the
/// reference in lower case).
///
/// The keys are computed in Rust after the SQL ([`fill_names_and_references`]): the oldest org
/// with a name keeps it; a later org whose name has the same key is left without a key, its
/// name shown with its id to consumers until the operator renames it, and the migration reports
/// it in the log. References already used twice are reported the same way and left as they are
/// (the ledger is never rewritten); new ones are refused.
const NAMES_AND_REFERENCES: &str = r#"
ALTER TABLE orgs ADD COLUMN name_key TEXT;
CREATE UNIQUE INDEX orgs_name_key ON orgs(name_key);
CREATE TABLE external_refs (
    org_id TEXT NOT NULL REFERENCES orgs(id),
    ref_key TEXT NOT NULL,
    transfer_id TEXT NOT NULL,
    PRIMARY KEY (org_id, ref_key)
);
"#;

/// The key of an external reference: references are compared ignoring case.
pub fn external_ref_key(external_ref: &str) -> String {
    external_ref.to_lowercase()
}

/// Migration 8's data step: the keys of the orgs' names and of the references already used.
fn fill_names_and_references(b: &mut dyn Database) -> Result<(), StoreError> {
    let orgs = b.query("SELECT id, name FROM orgs ORDER BY created_ms, id", &[])?;
    let mut holders: std::collections::HashMap<String, String> = Default::default();
    for r in &orgs {
        let (id, name) = (r.str(0)?, r.str(1)?);
        let key = suanli_core::validate::name_key(&name);
        if let Some(first) = holders.get(&key) {
            tracing::warn!(
                org = %id, name = %name, same_as = %first,
                "migration 8: this org's name cannot be told apart from an older org's; it is shown \
                 with its id until the operator renames it (POST /api/v1/orgs/{{id}}/rename)"
            );
            continue;
        }
        b.execute(
            "UPDATE orgs SET name_key = $2 WHERE id = $1",
            &[id.as_str().into(), key.as_str().into()],
        )?;
        holders.insert(key, id);
    }
    let refs = b.query(
        "SELECT a.org_id, t.external_ref, t.id FROM transfers t \
         JOIN accounts a ON a.id = CASE WHEN t.kind = 'deposit' THEN t.credit_account_id \
         ELSE t.debit_account_id END \
         WHERE t.kind IN ('deposit', 'withdrawal') AND t.external_ref IS NOT NULL ORDER BY t.seq",
        &[],
    )?;
    for r in &refs {
        let (org, reference, transfer) = (r.str(0)?, r.str(1)?, r.str(2)?);
        let added = b.execute(
            "INSERT INTO external_refs (org_id, ref_key, transfer_id) VALUES ($1, $2, $3) \
             ON CONFLICT (org_id, ref_key) DO NOTHING",
            &[
                org.as_str().into(),
                external_ref_key(&reference).into(),
                transfer.as_str().into(),
            ],
        )?;
        if added == 0 {
            tracing::warn!(
                org = %org, external_ref = %reference, transfer = %transfer,
                "migration 8: this reference was recorded more than once for this org before \
                 references had to be unique; the ledger keeps both transfers"
            );
        }
    }
    Ok(())
}

/// Migration 7 on SQLite: `holds` and `leases` with their state checks written as comparisons.
///
/// SQLite evaluates `state IN ('a', 'b', 'c')` (more than two constants) by building a temporary
/// index of the list every time a statement checks it: ~4 µs of every insert into each table, or
/// ~8 µs of a purchase's ~55 µs in the writer. `state = 'a' OR state = 'b' OR …` accepts the same
/// values with a few comparisons.
///
/// SQLite cannot change a constraint in place: each table is rebuilt with the same columns,
/// defaults, keys, references and rows, and `leases`'s indexes are made again (its consumer index
/// went in migration 6). Other tables reference both by name, so the references hold once the
/// new tables have the old names (migrations run with foreign keys off on SQLite, see
/// [`migrate_up_to`]). PostgreSQL checks `IN` lists without such a cost; its tables
/// stay as they are.
const SQLITE_STATE_CHECKS: &str = r#"
CREATE TABLE holds_rebuilt (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    amount_micros BIGINT NOT NULL CHECK (amount_micros > 0),
    state TEXT NOT NULL CHECK (state = 'pending' OR state = 'posted' OR state = 'voided'),
    posted_micros BIGINT NOT NULL DEFAULT 0,
    resolutions BIGINT NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL,
    resolved_ms BIGINT
);
INSERT INTO holds_rebuilt (id, org_id, amount_micros, state, posted_micros, resolutions,
    created_ms, resolved_ms)
SELECT id, org_id, amount_micros, state, posted_micros, resolutions, created_ms, resolved_ms
FROM holds ORDER BY rowid;
DROP TABLE holds;
ALTER TABLE holds_rebuilt RENAME TO holds;
CREATE TABLE leases_rebuilt (
    id TEXT PRIMARY KEY,
    consumer_org_id TEXT NOT NULL REFERENCES orgs(id),
    provider_org_id TEXT NOT NULL REFERENCES orgs(id),
    offer_id TEXT NOT NULL REFERENCES offers(id),
    pool_id TEXT NOT NULL REFERENCES pools(id),
    category TEXT NOT NULL,
    qualifier TEXT,
    zone TEXT NOT NULL,
    units BIGINT NOT NULL CHECK (units > 0),
    price_micros_per_unit_hour BIGINT NOT NULL,
    fee_bps BIGINT NOT NULL,
    duration_limit_s BIGINT NOT NULL,
    started_ms BIGINT NOT NULL,
    ends_ms BIGINT NOT NULL,
    state TEXT NOT NULL CHECK (state = 'active' OR state = 'ended' OR state = 'cancelled'
        OR state = 'expired'),
    hold_id TEXT NOT NULL UNIQUE REFERENCES holds(id),
    ended_ms BIGINT,
    billed_seconds BIGINT,
    cost_micros BIGINT,
    fee_micros BIGINT,
    billing TEXT NOT NULL DEFAULT 'elapsed',
    auto_end BIGINT NOT NULL DEFAULT 0,
    metered_unit_seconds BIGINT NOT NULL DEFAULT 0
);
INSERT INTO leases_rebuilt (id, consumer_org_id, provider_org_id, offer_id, pool_id, category,
    qualifier, zone, units, price_micros_per_unit_hour, fee_bps, duration_limit_s, started_ms,
    ends_ms, state, hold_id, ended_ms, billed_seconds, cost_micros, fee_micros, billing, auto_end,
    metered_unit_seconds)
SELECT id, consumer_org_id, provider_org_id, offer_id, pool_id, category, qualifier, zone, units,
    price_micros_per_unit_hour, fee_bps, duration_limit_s, started_ms, ends_ms, state, hold_id,
    ended_ms, billed_seconds, cost_micros, fee_micros, billing, auto_end, metered_unit_seconds
FROM leases ORDER BY rowid;
DROP TABLE leases;
ALTER TABLE leases_rebuilt RENAME TO leases;
CREATE INDEX leases_provider ON leases(provider_org_id, started_ms);
CREATE INDEX leases_active_ends ON leases(state, ends_ms);
"#;

/// Migration 6: `postings`, one row per org and transfer that moved money on its accounts,
/// keyed by (org, position), instead of an index on each side of `transfers` and one on a lease's
/// consumer.
///
/// - Each of those indexes was ordered by account or org: a commit of many orgs' purchases put an
///   entry into another leaf of each for every org, and a hold into two of the account indexes
///   (the org's `available` range and its `held` range are far apart once they hold thousands of
///   entries). Every such leaf is a dirty page (a WAL frame, written and synced), and a leaf that
///   fills in the middle of a tree splits into its neighbours and its parent.
/// - A posting is appended at the end of its org's range: a purchase adds one entry, to its org's
///   last leaf, where it added three to three leaves.
/// - An org's statement reads its range from a position on, in order; a consumer's leases are
///   those of the hold transfers in its range, newest first (every lease has exactly one, written
///   in the lease's own transaction).
/// - On SQLite the table has no rowid: the key is the whole row, as an index entry is.
const POSTINGS: &str = r#"
CREATE TABLE postings (
    org_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (org_id, seq)
){WITHOUT_ROWID};
INSERT INTO postings (org_id, seq)
SELECT a.org_id, t.seq FROM transfers t JOIN accounts a ON a.id = t.debit_account_id
UNION
SELECT a.org_id, t.seq FROM transfers t JOIN accounts a ON a.id = t.credit_account_id;
DROP INDEX transfers_debit;
DROP INDEX transfers_credit;
DROP INDEX leases_consumer;
"#;

/// Migration 5 on SQLite: `transfers` without `AUTOINCREMENT`, and its account indexes without
/// the sequence column.
///
/// - The writer assigns every transfer's position itself (the next after the largest, under the
///   write lock) and transfers are never deleted, so `AUTOINCREMENT` guarded nothing; it cost a
///   read and a write of `sqlite_sequence` per inserted row and one more WAL page per commit.
/// - `seq` is the rowid, which SQLite appends to every index entry: `(debit_account_id, seq)`
///   stored it twice. An index on the account alone has the same order (ties by rowid) and serves
///   the same queries with smaller entries, so fewer page splits.
///
/// SQLite cannot drop `AUTOINCREMENT` in place: the table is rebuilt with the same columns,
/// constraints and rows (nothing references it), in the migration's transaction. PostgreSQL's
/// `BIGSERIAL` and its indexes stay as they are.
const SQLITE_TRANSFERS_REBUILD: &str = r#"
CREATE TABLE transfers_rebuilt (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    debit_account_id TEXT NOT NULL REFERENCES accounts(id),
    credit_account_id TEXT NOT NULL REFERENCES accounts(id),
    amount_micros BIGINT NOT NULL CHECK (amount_micros > 0),
    debit_balance_after_micros BIGINT NOT NULL,
    credit_balance_after_micros BIGINT NOT NULL,
    hold_id TEXT,
    lease_id TEXT,
    external_ref TEXT,
    created_ms BIGINT NOT NULL,
    CHECK (debit_account_id <> credit_account_id)
);
INSERT INTO transfers_rebuilt (seq, id, kind, debit_account_id, credit_account_id, amount_micros,
    debit_balance_after_micros, credit_balance_after_micros, hold_id, lease_id, external_ref,
    created_ms)
SELECT seq, id, kind, debit_account_id, credit_account_id, amount_micros,
    debit_balance_after_micros, credit_balance_after_micros, hold_id, lease_id, external_ref,
    created_ms
FROM transfers ORDER BY seq;
DROP TABLE transfers;
ALTER TABLE transfers_rebuilt RENAME TO transfers;
CREATE INDEX transfers_debit ON transfers(debit_account_id);
CREATE INDEX transfers_credit ON transfers(credit_account_id);
"#;

/// The migration text for `database_kind`.
pub fn migration_sql(database_kind: &str, index: usize) -> String {
    let postgres = database_kind == "postgres";
    let pick = |on_postgres: &'static str, on_sqlite: &'static str| {
        if postgres {
            on_postgres
        } else {
            on_sqlite
        }
    };
    MIGRATIONS[index]
        .replace("{SQLITE_CHECKS}", pick("SELECT 1;", SQLITE_STATE_CHECKS))
        .replace("{SQLITE}", pick("SELECT 1;", SQLITE_TRANSFERS_REBUILD))
        .replace(
            "{SEQ}",
            pick("BIGSERIAL PRIMARY KEY", "INTEGER PRIMARY KEY AUTOINCREMENT"),
        )
        .replace("{WITHOUT_ROWID}", pick("", " WITHOUT ROWID"))
}

/// Applies every migration not yet applied, each in its own transaction.
pub fn migrate(b: &mut dyn Database) -> Result<(), StoreError> {
    migrate_up_to(b, MIGRATIONS.len() as i64)
}

/// Applies the migrations not yet applied up to version `last` (tests start from older schemas).
pub(crate) fn migrate_up_to(b: &mut dyn Database, last: i64) -> Result<(), StoreError> {
    b.batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_ms BIGINT NOT NULL)",
    )?;
    // PostgreSQL: several exchange processes may start at once against one database. SQLite: a
    // migration may rebuild a table others reference, which SQLite's procedure for schema
    // changes does with foreign keys off (they cannot be turned off inside a transaction);
    // `apply` checks them before each commit.
    let mut keys_were = 0;
    match b.kind() {
        "postgres" => b.batch("SELECT pg_advisory_lock(7261636)")?,
        _ => {
            keys_were = b
                .query("PRAGMA foreign_keys", &[])?
                .first()
                .map(|r| r.i64(0))
                .transpose()?
                .unwrap_or(0);
            b.batch("PRAGMA foreign_keys=OFF")?;
        }
    }
    let result = (|| {
        // Every migration not yet recorded, in order (a test takes one back to run it again).
        let applied: std::collections::BTreeSet<i64> = b
            .query("SELECT version FROM schema_migrations", &[])?
            .iter()
            .map(|r| r.i64(0))
            .collect::<Result<_, StoreError>>()?;
        for (i, _) in MIGRATIONS.iter().enumerate() {
            let version = i as i64 + 1;
            if applied.contains(&version) || version > last {
                continue;
            }
            apply(b, i, version)?;
        }
        Ok(())
    })();
    match b.kind() {
        "postgres" => b.batch("SELECT pg_advisory_unlock(7261636)")?,
        _ => b.batch(&format!("PRAGMA foreign_keys={keys_were}"))?,
    }
    result
}

/// Applies migration `index` (version `version`) in a transaction of its own; on SQLite, commits
/// only if no foreign key is violated afterwards.
fn apply(b: &mut dyn Database, index: usize, version: i64) -> Result<(), StoreError> {
    b.begin_write()?;
    let step = b
        .batch(&migration_sql(b.kind(), index))
        .and_then(|()| {
            if b.kind() != "sqlite" {
                return Ok(());
            }
            let violations = b.query("PRAGMA foreign_key_check", &[])?;
            match violations.first() {
                None => Ok(()),
                Some(r) => Err(StoreError::Database(format!(
                    "migration {version} would leave {} foreign key violations (first in {})",
                    violations.len(),
                    r.str(0)?
                ))),
            }
        })
        .and_then(|()| match version {
            8 => fill_names_and_references(b),
            _ => Ok(()),
        })
        .and_then(|()| {
            b.execute(
                "INSERT INTO schema_migrations (version, applied_ms) VALUES ($1, 0)",
                &[version.into()],
            )
            .map(|_| ())
        });
    match step {
        Ok(()) => b.batch("COMMIT"),
        Err(e) => {
            let _ = b.batch("ROLLBACK");
            Err(e)
        }
    }
}
