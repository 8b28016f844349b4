//! One conformance story for every backend: SQLite in a temp dir by default, PostgreSQL when
//! `SUANLI_TEST_DATABASE_URL` names a server (each test then gets a fresh database on it).

use std::sync::Arc;

use suanli_core::decide::purchase::Billing;
use suanli_core::decide::OrgKind;
use suanli_core::lease::EndReason;
use suanli_core::ledger::{AccountKind, HoldState};
use suanli_core::resource::ResourceClass;
use suanli_store::ops::{account_id, new_id, NewNode, NewOffer, OrgRow, Purchase};
use suanli_store::{Database, Location, Store, StoreError, WriterConfig};

/// A fresh, empty store on the backend under test.
fn fresh_store() -> Arc<Store> {
    let location = match tokio::task::block_in_place(fresh_postgres_database) {
        Some(url) => Location::Postgres(url),
        None => {
            let dir = std::env::temp_dir().join(new_id("suanli-store-test"));
            std::fs::create_dir_all(&dir).unwrap();
            Location::Sqlite(dir.join("t.db").to_string_lossy().into_owned())
        }
    };
    open(location)
}

/// The URL of a new, empty database on the test PostgreSQL (`SUANLI_TEST_DATABASE_URL`), or
/// `None` when the tests run on SQLite.
fn fresh_postgres_database() -> Option<String> {
    let url = std::env::var("SUANLI_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())?;
    let name = new_id("t").replace('_', "");
    let mut admin =
        postgres::Client::connect(&url, postgres::NoTls).expect("connect to the test PostgreSQL");
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .expect("create a test database");
    let base = url.rsplit_once('/').map(|(b, _)| b).unwrap_or(&url);
    Some(format!("{base}/{name}"))
}

/// Opens a store on `location`, as another exchange process would.
fn open(location: Location) -> Arc<Store> {
    tokio::task::block_in_place(|| {
        Arc::new(Store::open(location, WriterConfig::default()).expect("open the store"))
    })
}

/// Reads off the async threads: the PostgreSQL client blocks.
fn read<R>(
    store: &Store,
    f: impl FnOnce(&mut suanli_store::Tx<'_>) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    tokio::task::block_in_place(|| store.read(f))
}

struct Market {
    store: Arc<Store>,
    consumer: String,
    provider: String,
    offer: String,
}

fn org(kind: &str, consumer_type: Option<&str>) -> OrgRow {
    // Org names are unique (under `name_key`): each test org is named after its id.
    let id = new_id("org");
    OrgRow {
        name: format!("{kind} org {id}"),
        id,
        kind: OrgKind::parse(kind).expect("a known org kind"),
        consumer_type: consumer_type.map(Into::into),
        zone: "wuqing-core".into(),
        origin_region: "tianjin".into(),
        created_ms: 0,
        name_unique: true,
    }
}

/// The market's one node: 128 CPUs, 1 TiB and 8 H100-80G.
fn gpu_node() -> NewNode {
    NewNode {
        name: "gpu-01".into(),
        cpus: 128,
        memory_mib: 1024 * 1024,
        accelerator_model: Some("H100-80G".into()),
        accelerators: 8,
        partition: None,
    }
}

/// An operator, a consumer with `funds` micros, a provider with one 8-GPU node and an offer at
/// 36 CNY per accelerator-hour (10,000 micros per second).
async fn market(funds: u64) -> Market {
    let store = fresh_store();
    let (consumer, provider, offer) = store
        .writer()
        .submit(move |tx| {
            tx.seed_accelerator_models(&[("H100-80G".into(), "NVIDIA".into(), 80)])?;
            let op = org("operator", None);
            tx.create_org(&op, "admin", None)?;
            let c = org("consumer", Some("enterprise"));
            tx.create_org(&c, "admin", None)?;
            let p = org("provider", None);
            tx.create_org(&p, "admin", None)?;
            let pool = tx.create_pool(&p.id, "gpu pool", "wuqing-core", &[gpu_node()], 0)?;
            let offer = tx.create_offer(
                &NewOffer {
                    org_id: p.id.clone(),
                    pool_id: pool.id.clone(),
                    class: "intelligent:H100-80G".parse::<ResourceClass>().unwrap(),
                    cpus_per_unit: 16,
                    memory_mib_per_unit: 128 * 1024,
                    price_micros_per_unit_hour: 36_000_000,
                    min_units: 1,
                    max_units: 8,
                    valid_from_ms: 0,
                    valid_until_ms: i64::MAX / 2,
                },
                0,
            )?;
            if funds > 0 {
                tx.deposit(&c.id, funds, "bank-1", 0)?;
            }
            Ok((c.id, p.id, offer.id))
        })
        .await
        .expect("set up the market");
    Market {
        store,
        consumer,
        provider,
        offer,
    }
}

fn purchase(m: &Market, units: u64, duration_s: u64, now_ms: i64) -> Purchase {
    Purchase {
        consumer_org_id: m.consumer.clone(),
        offer_id: m.offer.clone(),
        units,
        duration_limit_s: duration_s,
        max_price_micros_per_unit_hour: None,
        fee_bps: 500,
        now_ms,
        auto_end: false,
    }
}

/// Runs the purchase `p` in `store`'s writer.
async fn buy(store: &Store, p: Purchase) -> Result<suanli_store::ops::LeaseRow, StoreError> {
    store.writer().submit(move |tx| tx.purchase(&p)).await
}

fn assert_books_sound(store: &Store) {
    let violations = read(store, |tx| tx.check_ledger()).unwrap();
    assert!(
        violations.is_empty(),
        "ledger invariants violated: {violations:?}"
    );
}

fn balance(store: &Store, org: &str, kind: AccountKind) -> i64 {
    let org = org.to_owned();
    read(store, move |tx| tx.accounts_of(&org))
        .unwrap()
        .into_iter()
        .find(|a| a.kind == kind)
        .map(|a| a.balance())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purchase_and_end_settle_exactly() {
    let m = market(1_000_000_000).await;
    let p = purchase(&m, 2, 3_600, 1_000);
    let lease = buy(&m.store, p).await.unwrap();
    // Worst case: 2 accelerators × 36 CNY × 1 h.
    assert_eq!(lease.hold.amount_micros, 72_000_000);
    assert_eq!(lease.allocations.len(), 1);
    // What the purchase answers is what the store holds.
    let id = lease.id.clone();
    let stored = read(&m.store, move |tx| tx.get_lease(None, &id)).unwrap();
    assert_eq!(lease, stored);
    assert_eq!(
        balance(&m.store, &m.consumer, AccountKind::Held),
        72_000_000
    );
    assert_eq!(
        balance(&m.store, &m.consumer, AccountKind::Available),
        928_000_000
    );
    assert_eq!(
        m.store
            .book
            .read()
            .unwrap()
            .get(&m.offer)
            .unwrap()
            .units_available,
        6
    );
    assert_books_sound(&m.store);

    // End after 600.9 s: 600,900 ms × 2 units = 1,201,800 unit-ms at 10,000 micros per
    // unit-second cost 12,018,000 micros (the 0.9 s included), rounded once.
    let (org, id) = (m.consumer.clone(), lease.id.clone());
    let ended = m
        .store
        .writer()
        .submit(move |tx| tx.end_lease(Some(&org), &id, EndReason::Ended, 1_000 + 600_900))
        .await
        .unwrap();
    assert_eq!(ended.billed_unit_ms, Some(1_201_800));
    assert_eq!(ended.cost_micros, Some(12_018_000));
    assert_eq!(ended.fee_micros, Some(600_900));
    assert_eq!(ended.hold.state, HoldState::Posted);
    assert_eq!(
        balance(&m.store, &m.provider, AccountKind::Earnings),
        11_417_100
    );
    assert_eq!(balance(&m.store, &m.consumer, AccountKind::Held), 0);
    assert_eq!(
        balance(&m.store, &m.consumer, AccountKind::Available),
        987_982_000
    );
    assert_eq!(
        m.store
            .book
            .read()
            .unwrap()
            .get(&m.offer)
            .unwrap()
            .units_available,
        8
    );
    assert_books_sound(&m.store);

    // Ending again changes nothing.
    let (org, id) = (m.consumer.clone(), lease.id.clone());
    let again = m
        .store
        .writer()
        .submit(move |tx| tx.end_lease(Some(&org), &id, EndReason::Ended, 9_999_999))
        .await;
    assert!(
        matches!(again, Err(StoreError::LeaseNotActive(_))),
        "{again:?}"
    );
    assert_eq!(
        balance(&m.store, &m.provider, AccountKind::Earnings),
        11_417_100
    );
    assert_books_sound(&m.store);

    // The statement shows every movement with running balances.
    let org = m.consumer.clone();
    let lines = read(&m.store, move |tx| tx.statement(&org, 0, 100)).unwrap();
    let kinds: Vec<&str> = lines.iter().map(|t| t.kind.as_str()).collect();
    assert_eq!(kinds, ["deposit", "hold", "settle", "fee", "release"]);
    assert_eq!(
        lines.last().unwrap().credit_balance_after_micros,
        987_982_000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insufficient_funds_holds_nothing_and_reserves_nothing() {
    let m = market(1_000_000).await;
    let p = purchase(&m, 1, 3_600, 0);
    let err = buy(&m.store, p).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::InsufficientFunds {
                needed_micros: 36_000_000,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        balance(&m.store, &m.consumer, AccountKind::Available),
        1_000_000
    );
    assert_eq!(balance(&m.store, &m.consumer, AccountKind::Held), 0);
    let offer = m.offer.clone();
    let o = read(&m.store, move |tx| tx.get_offer(None, &offer)).unwrap();
    assert_eq!(
        o.units_available, 8,
        "a refused purchase reserves no capacity"
    );
    assert_books_sound(&m.store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_purchases_never_oversell() {
    let m = market(100_000_000_000).await;
    let mut handles = Vec::new();
    for i in 0..24 {
        let p = purchase(&m, 3, 60, i);
        let store = m.store.clone();
        handles.push(tokio::spawn(async move {
            store.writer().submit(move |tx| tx.purchase(&p)).await
        }));
    }
    let mut sold = 0;
    let mut refused = 0;
    for h in handles {
        match h.await.unwrap() {
            Ok(l) => sold += l.units,
            Err(StoreError::CapacityUnavailable) => refused += 1,
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!(sold, 6, "8 accelerators fit two leases of 3");
    assert_eq!(refused, 22);
    let org = m.provider.clone();
    let pools = read(&m.store, move |tx| tx.list_pools(&org)).unwrap();
    assert_eq!(pools[0].nodes[0].accelerators_reserved, 6);
    assert_eq!(
        balance(&m.store, &m.consumer, AccountKind::Held),
        2 * 3 * 600_000
    );
    assert_books_sound(&m.store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_bills_the_full_limit_and_tenants_are_isolated() {
    let m = market(1_000_000_000).await;
    let p = purchase(&m, 1, 60, 0);
    let lease = buy(&m.store, p).await.unwrap();
    let due = read(&m.store, |tx| tx.due_leases(59_999, 10)).unwrap();
    assert!(due.is_empty());
    let due = read(&m.store, |tx| tx.due_leases(60_000, 10)).unwrap();
    assert_eq!(due, vec![lease.id.clone()]);

    let (prov, id) = (m.provider.clone(), lease.id.clone());
    let refused = m
        .store
        .writer()
        .submit(move |tx| tx.end_lease(Some(&prov), &id, EndReason::Ended, 1))
        .await;
    assert!(
        matches!(refused, Err(StoreError::Forbidden(_))),
        "a provider cannot end the consumer's lease"
    );
    let id = lease.id.clone();
    let stranger = read(&m.store, move |tx| tx.get_lease(Some("org_nobody"), &id));
    assert_eq!(stranger.unwrap_err(), StoreError::NotFound("lease"));

    let id = lease.id.clone();
    let expired = m
        .store
        .writer()
        .submit(move |tx| tx.end_lease(None, &id, EndReason::Expired, 90_000))
        .await
        .unwrap();
    assert_eq!(expired.billed_unit_ms, Some(60_000));
    assert_eq!(expired.cost_micros, Some(600_000));
    assert_eq!(expired.ended_ms, Some(60_000));
    assert_books_sound(&m.store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_records_are_unique_per_org_and_key() {
    let m = market(0).await;
    let (org, other) = (m.consumer.clone(), m.provider.clone());
    let r = suanli_store::ops::StoredResponse {
        request_sha256: "h".into(),
        status: 201,
        body: "{}".into(),
    };
    let stored = r.clone();
    m.store
        .writer()
        .submit(move |tx| {
            tx.store_idempotent_response(&org, "k1", &r, 0)?;
            tx.store_idempotent_response(&other, "k1", &r, 0)?;
            tx.savepoint("dup")?;
            let dup = tx.store_idempotent_response(&org, "k1", &r, 0);
            tx.rollback_to("dup")?;
            assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
            Ok(())
        })
        .await
        .unwrap();
    let (org, other) = (m.consumer.clone(), m.provider.clone());
    assert_eq!(
        read(&m.store, move |tx| tx.idempotent_response(&org, "k1")).unwrap(),
        Some(stored.clone())
    );
    assert_eq!(
        read(&m.store, move |tx| tx.idempotent_response(&other, "k1")).unwrap(),
        Some(stored)
    );
    let org = m.consumer.clone();
    assert_eq!(
        read(&m.store, move |tx| tx.idempotent_response(&org, "k2")).unwrap(),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawals_cannot_overdraw_and_deposits_need_an_org() {
    let m = market(5_000_000).await;
    let org = m.consumer.clone();
    let err = m
        .store
        .writer()
        .submit(move |tx| tx.withdraw(&org, AccountKind::Available, 5_000_001, "out-1", 0))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InsufficientFunds { .. }));
    let org = m.consumer.clone();
    m.store
        .writer()
        .submit(move |tx| tx.withdraw(&org, AccountKind::Available, 5_000_000, "out-2", 0))
        .await
        .unwrap();
    assert_eq!(balance(&m.store, &m.consumer, AccountKind::Available), 0);
    let err = m
        .store
        .writer()
        .submit(|tx| tx.deposit("org_missing", 1, "x", 0))
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::NotFound("org"));
    assert_eq!(account_id("org_a", AccountKind::Held), "org_a.held");
    assert_books_sound(&m.store);
}

/// A job that records a deposit or a withdrawal.
type TransferJob = Box<
    dyn Fn(&mut suanli_store::Tx<'_>) -> Result<suanli_store::ops::TransferRow, StoreError> + Send,
>;

/// Issue 16: an operator reconciles bank statements by a payment's external reference, so an
/// org's deposits and withdrawals never share one (ignoring case); another org may use it, and a
/// refused request leaves the reference free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_reference_is_recorded_once_per_org() {
    let m = market(5_000_000).await;
    let submit = |f: TransferJob| m.store.writer().submit(f);
    let (c, p) = (m.consumer.clone(), m.provider.clone());
    let org = c.clone();
    // market() deposited with "bank-1".
    let err = submit(Box::new(move |tx| tx.deposit(&org, 1, "BANK-1", 0)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::Duplicate {
                field: "external_ref",
                ..
            }
        ),
        "{err:?}"
    );
    let org = c.clone();
    let err = submit(Box::new(move |tx| {
        tx.withdraw(&org, AccountKind::Available, 1, "bank-1", 0)
    }))
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::Duplicate { .. }), "{err:?}");
    // A refused withdrawal does not take its reference.
    let org = c.clone();
    let err = submit(Box::new(move |tx| {
        tx.withdraw(&org, AccountKind::Available, 9_000_000, "bank-9", 0)
    }))
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::InsufficientFunds { .. }));
    let org = c.clone();
    submit(Box::new(move |tx| {
        tx.withdraw(&org, AccountKind::Available, 1, "bank-9", 0)
    }))
    .await
    .unwrap();
    // Another org's reference space is its own.
    let org = p.clone();
    submit(Box::new(move |tx| tx.deposit(&org, 1, "bank-1", 0)))
        .await
        .unwrap();
    assert_eq!(balance(&m.store, &c, AccountKind::Available), 5_000_000 - 1);
    assert_books_sound(&m.store);
}

/// Issue 16: text the store cannot keep on one backend (NUL: PostgreSQL refuses it) is refused
/// alike on both, as invalid input, before any statement runs: a lookup does not turn into a
/// store failure on PostgreSQL and a "not found" on SQLite, and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_in_text_is_refused_alike_on_both_stores() {
    let m = market(5_000_000).await;
    let refused = |e: StoreError| {
        assert!(
            matches!(&e, StoreError::Invalid { field: "text", .. }),
            "{e:?}"
        );
    };
    refused(read(&m.store, |tx| tx.get_lease(None, "lease_x\u{0}")).unwrap_err());
    let org = m.consumer.clone();
    refused(
        m.store
            .writer()
            .submit(move |tx| tx.deposit(&org, 1, "ref\u{0}", 0))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        balance(&m.store, &m.consumer, AccountKind::Available),
        5_000_000
    );
    assert_books_sound(&m.store);
}

/// Issue 16: org names are unique under `name_key`; a rename must pick a free name too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn org_names_cannot_be_told_apart_so_they_are_unique() {
    let m = market(0).await;
    let mut first = org("consumer", Some("enterprise"));
    first.name = "Tianjin Robotics".into();
    let row = first.clone();
    m.store
        .writer()
        .submit(move |tx| tx.create_org(&row, "admin", None))
        .await
        .unwrap();
    for same in [
        "tianjin robotics",
        "TIANJIN  ROBOTICS",
        "Tianjin Rоbotics", // Cyrillic о
        "Tianjin\u{200B} Robotics",
    ] {
        let mut again = org("provider", None);
        again.name = same.into();
        let err = m
            .store
            .writer()
            .submit(move |tx| tx.create_org(&again, "admin", None))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::Duplicate { field: "name", message } if message.contains("Tianjin Robotics")),
            "{same:?}: {err:?}"
        );
    }
    let mut other = org("provider", None);
    other.name = "Tianjin Robotics Lab".into();
    let other_id = other.id.clone();
    let row = other.clone();
    m.store
        .writer()
        .submit(move |tx| tx.create_org(&row, "admin", None))
        .await
        .unwrap();
    // A rename to a taken name is refused; to a free one (or its own) it is done.
    let id = other_id.clone();
    let err = m
        .store
        .writer()
        .submit(move |tx| tx.rename_org(&id, "TIANJIN ROBOTICS"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Duplicate { field: "name", .. }),
        "{err:?}"
    );
    let id = other_id.clone();
    let renamed = m
        .store
        .writer()
        .submit(move |tx| tx.rename_org(&id, "Binhai Robotics"))
        .await
        .unwrap();
    assert_eq!(renamed.name, "Binhai Robotics");
    assert!(renamed.name_unique);
    let id = other_id.clone();
    m.store
        .writer()
        .submit(move |tx| tx.rename_org(&id, "binhai robotics"))
        .await
        .unwrap();
    let err = m
        .store
        .writer()
        .submit(|tx| tx.rename_org("org_missing", "Nobody"))
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::NotFound("org"));
}

/// One read sees one state: a batch committed between two of its queries is not half-seen (the
/// ledger check once reported a settlement's transfers without its account totals this way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_sees_one_state_while_the_writer_commits() {
    let m = market(5_000_000).await;
    let runtime = tokio::runtime::Handle::current();
    let (store, org) = (m.store.clone(), m.consumer.clone());
    let (before, after, violations) = read(&m.store, move |tx| {
        let before = tx.count("transfers")?;
        let deposited = runtime.block_on(
            store
                .writer()
                .submit(move |w| w.deposit(&org, 1_000, "mid-read", 0)),
        );
        assert!(deposited.is_ok(), "the deposit failed: {deposited:?}");
        Ok((before, tx.count("transfers")?, tx.check_ledger()?))
    })
    .unwrap();
    assert_eq!(before, after, "the read saw a commit made after it began");
    assert!(violations.is_empty(), "{violations:?}");
    // The deposit did commit: the next read sees it.
    assert_eq!(
        read(&m.store, |tx| tx.count("transfers")).unwrap(),
        before + 1
    );
    assert_books_sound(&m.store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_exchange_processes_on_one_database_never_oversell() {
    let m = market(100_000_000_000).await;
    let stores = two_processes(&m);
    let mut handles = Vec::new();
    for i in 0..20 {
        let store = stores[(i % 2) as usize].clone();
        let p = purchase(&m, 3, 60, i);
        handles.push(tokio::spawn(async move {
            store.writer().submit(move |tx| tx.purchase(&p)).await
        }));
    }
    let mut sold = 0;
    for h in handles {
        match h.await.unwrap() {
            Ok(l) => sold += l.units,
            Err(StoreError::CapacityUnavailable) => {}
            // Two SQLite writers wait on each other's lock; PostgreSQL may abort a lock cycle.
            // Either way nothing was applied, and the client may retry.
            Err(StoreError::Database(_)) => {}
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert!(sold <= 8, "sold {sold} of 8 accelerators");
    assert!(sold >= 3, "at least one purchase went through");
    let org = m.provider.clone();
    let pools = read(&m.store, move |tx| tx.list_pools(&org)).unwrap();
    assert_eq!(pools[0].nodes[0].accelerators_reserved, sold);
    assert_eq!(
        balance(&m.store, &m.consumer, AccountKind::Held),
        (sold / 3 * 3 * 600_000) as i64
    );
    assert_books_sound(&m.store);
}

/// Transfers are checked and applied in the writer's memory and written at a flush (see the store's
/// `batch_ledger`): from two exchange processes at once, no more withdrawals succeed than the
/// funds cover, every answer equals the row stored, ledger positions increase, and each
/// account's recorded balances-after chain from one transfer to the next. Half the requests
/// declare their accounts (`Writer::submit_with_accounts`: read, on PostgreSQL locked, for the
/// whole batch at once), one of them an id of no account; the other half do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transfers_chain_their_balances_and_positions() {
    let m = market(10_000_000).await;
    let stores = two_processes(&m);
    let operator = read(&m.store, |tx| tx.operator_org_id()).unwrap().unwrap();
    let mut handles = Vec::new();
    for i in 0..30 {
        let store = stores[(i % 2) as usize].clone();
        let org = m.consumer.clone();
        let declared = match i % 4 {
            0 | 1 => vec![
                account_id(&operator, AccountKind::External),
                account_id(&org, AccountKind::Available),
                "org_missing.available".to_owned(),
            ],
            _ => Vec::new(),
        };
        handles.push(tokio::spawn(async move {
            let mut answered = Vec::new();
            let mut withdrew = false;
            // A deposit, then a withdrawal; each retried while the two writers collide (nothing
            // of a failed batch was applied).
            for step in 0..2 {
                loop {
                    let org = org.clone();
                    let r = store
                        .writer()
                        .submit_with_accounts(declared.clone(), move |tx| {
                            if step == 0 {
                                tx.deposit(&org, 1 + i, &format!("in-{i}"), 0)
                            } else {
                                tx.withdraw(
                                    &org,
                                    AccountKind::Available,
                                    1_000_000,
                                    &format!("out-{i}"),
                                    0,
                                )
                            }
                        })
                        .await;
                    match r {
                        Ok(t) => {
                            withdrew |= step == 1;
                            answered.push(t);
                        }
                        Err(StoreError::Database(_)) => continue,
                        Err(StoreError::InsufficientFunds { .. }) if step == 1 => {}
                        Err(e) => panic!("unexpected error {e:?}"),
                    }
                    break;
                }
            }
            (answered, withdrew)
        }));
    }
    let (mut answered, mut withdrawals) = (Vec::new(), 0);
    for h in handles {
        let (t, withdrew) = h.await.unwrap();
        answered.extend(t);
        withdrawals += u64::from(withdrew);
    }
    // 10,000,000 + 465 micros cover exactly ten withdrawals of 1,000,000.
    assert_eq!(withdrawals, 10);
    let deposits: u64 = (1..=30).sum();
    assert_eq!(
        balance(&m.store, &m.consumer, AccountKind::Available),
        (deposits) as i64
    );
    let org = m.consumer.clone();
    let stored = read(&m.store, move |tx| tx.statement(&org, 0, 1_000)).unwrap();
    assert_eq!(
        stored.len(),
        1 + 30 + 10,
        "the funding, 30 deposits, 10 withdrawals"
    );
    assert!(stored.windows(2).all(|w| w[0].seq < w[1].seq));
    for t in &answered {
        assert_eq!(
            stored.iter().find(|s| s.id == t.id),
            Some(t),
            "answer = stored row"
        );
    }
    let available = account_id(&m.consumer, AccountKind::Available);
    let mut running = 0i64;
    for t in &stored {
        if t.credit_account_id == available {
            running += t.amount_micros as i64;
            assert_eq!(t.credit_balance_after_micros, running, "{t:?}");
        } else {
            assert_eq!(t.debit_account_id, available);
            running -= t.amount_micros as i64;
            assert_eq!(t.debit_balance_after_micros, running, "{t:?}");
        }
    }
    assert_eq!(running, deposits as i64);
    assert_books_sound(&m.store);
}

/// Within one writer transaction the pool's free capacity is read once and kept (SQLite; see
/// the store's `batch_nodes`): purchases after the first see what it took, a lease ended in the
/// same transaction gives its capacity back to the purchases after it, and the books and the
/// nodes' reservations agree with the database afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_taken_and_returned_within_a_batch_is_seen_by_the_next_purchase() {
    let m = market(100_000_000_000).await;
    let (p6, p4, p4_again) = (
        purchase(&m, 6, 60, 0),
        purchase(&m, 4, 60, 1),
        purchase(&m, 4, 60, 2),
    );
    let org = m.consumer.clone();
    let (first, refused, after_end, last) = m
        .store
        .writer()
        .submit(move |tx| {
            let first = tx.purchase(&p6)?;
            // 2 of 8 accelerators are left: 4 do not fit (refused before anything is written).
            let refused = tx.purchase(&p4).err();
            tx.end_lease(Some(&org), &first.id, EndReason::Ended, 10)?;
            // The 6 came back: 4 fit now, then 4 more, and the node is full.
            let after_end = tx.purchase(&p4)?;
            let last = tx.purchase(&p4_again)?;
            Ok((first, refused, after_end, last))
        })
        .await
        .unwrap();
    assert_eq!(refused, Some(StoreError::CapacityUnavailable));
    assert_eq!(first.allocations[0].1, 6);
    assert_eq!((after_end.units, last.units), (4, 4));
    let org = m.provider.clone();
    let pools = read(&m.store, move |tx| tx.list_pools(&org)).unwrap();
    assert_eq!(pools[0].nodes[0].accelerators_reserved, 8);
    // Full: one more accelerator is refused, in a transaction of its own.
    let p1 = purchase(&m, 1, 60, 3);
    let err = m
        .store
        .writer()
        .submit(move |tx| tx.purchase(&p1))
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::CapacityUnavailable);
    assert_books_sound(&m.store);
}

/// The market's store and a second one on the same database, as two exchange processes.
fn two_processes(m: &Market) -> [Arc<Store>; 2] {
    [m.store.clone(), open(m.store.location().clone())]
}

/// A small deterministic generator (xorshift64*) for the simulation below.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// Seeded simulation: random deposits, withdrawals, purchases, ends and expiries, with the ledger
/// invariants and an independent model of the consumer's money checked after every step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_operations_keep_the_books_and_the_model_in_step() {
    for seed in 1..=3u64 {
        let m = market(0).await;
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut now: i64 = 1_000;
        // The model: what the consumer should have, computed without the store.
        let mut available: i64 = 0;
        let mut active: Vec<(String, u64, i64, u64, u64)> = Vec::new(); // id, units, start, limit, hold
        let mut reserved: u64 = 0;
        for step in 0..120 {
            now += rng.below(120_000) as i64;
            let op = rng.below(10);
            let what = if op < 3 {
                let amount = 1 + rng.below(50_000_000);
                let org = m.consumer.clone();
                m.store
                    .writer()
                    .submit(move |tx| tx.deposit(&org, amount, &format!("sim-{step}"), now))
                    .await
                    .unwrap();
                available += amount as i64;
                format!("deposit {amount}")
            } else if op < 4 {
                let amount = 1 + rng.below(30_000_000);
                let org = m.consumer.clone();
                let r = m
                    .store
                    .writer()
                    .submit(move |tx| {
                        tx.withdraw(
                            &org,
                            AccountKind::Available,
                            amount,
                            &format!("sim-{step}"),
                            now,
                        )
                    })
                    .await;
                match r {
                    Ok(_) => available -= amount as i64,
                    Err(StoreError::InsufficientFunds { .. }) => {
                        assert!((amount as i64) > available)
                    }
                    Err(e) => panic!("seed {seed} step {step}: {e:?}"),
                }
                format!("withdraw {amount}")
            } else if op < 8 {
                let units = 1 + rng.below(4);
                let limit = 1 + rng.below(7_200);
                let hold = units * 10_000 * limit;
                let p = purchase(&m, units, limit, now);
                match m.store.writer().submit(move |tx| tx.purchase(&p)).await {
                    Ok(l) => {
                        assert_eq!(l.hold.amount_micros, hold);
                        let id = l.id.clone();
                        let stored = read(&m.store, move |tx| tx.get_lease(None, &id)).unwrap();
                        assert_eq!(l, stored, "seed {seed} step {step}: the answer is the row");
                        available -= hold as i64;
                        reserved += units;
                        active.push((l.id, units, now, limit, hold));
                    }
                    Err(StoreError::InsufficientFunds { .. }) => assert!((hold as i64) > available),
                    Err(StoreError::CapacityUnavailable) => assert!(reserved + units > 8),
                    Err(e) => panic!("seed {seed} step {step}: {e:?}"),
                }
                format!("buy {units}x{limit}s")
            } else if !active.is_empty() {
                let (id, units, start, limit, hold) =
                    active.remove(rng.below(active.len() as u64) as usize);
                let expired = now >= start + limit as i64 * 1_000;
                let reason = if expired {
                    EndReason::Expired
                } else {
                    EndReason::Ended
                };
                let (org, lid) = (m.consumer.clone(), id.clone());
                let l = m
                    .store
                    .writer()
                    .submit(move |tx| tx.end_lease(Some(&org), &lid, reason, now))
                    .await
                    .unwrap();
                // Units × elapsed milliseconds at 10 micros per unit-millisecond.
                let ms = ((now - start) as u64).min(limit * 1_000);
                let cost = units * 10 * ms;
                assert_eq!(l.cost_micros, Some(cost), "seed {seed} step {step}");
                available += (hold - cost) as i64;
                reserved -= units;
                format!("end {id}")
            } else {
                continue;
            };
            assert_books_sound(&m.store);
            assert_eq!(
                balance(&m.store, &m.consumer, AccountKind::Available),
                available,
                "seed {seed} step {step} after {what}"
            );
            let held: u64 = active.iter().map(|a| a.4).sum();
            assert_eq!(
                balance(&m.store, &m.consumer, AccountKind::Held),
                held as i64,
                "seed {seed} step {step}"
            );
            let org = m.provider.clone();
            let pools = read(&m.store, move |tx| tx.list_pools(&org)).unwrap();
            assert_eq!(
                pools[0].nodes[0].accelerators_reserved, reserved,
                "seed {seed} step {step}"
            );
        }
    }
}

/// A batch runs optimistically (no savepoints) and, when a job in it fails, again with a savepoint
/// per job: the failing jobs leave no trace, every other job's effect is there exactly once, and
/// no job runs more than twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_leaves_no_trace_and_the_rest_of_its_batch_commits() {
    let m = market(1_000_000).await;
    for round in 0..3 {
        let mut handles = Vec::new();
        let runs: Vec<Arc<std::sync::atomic::AtomicUsize>> =
            (0..30).map(|_| Arc::default()).collect();
        for (i, count) in runs.iter().enumerate() {
            let store = m.store.clone();
            let org = m.consumer.clone();
            let count = count.clone();
            handles.push(tokio::spawn(async move {
                store
                    .writer()
                    .submit(move |tx| {
                        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let r = suanli_store::ops::StoredResponse {
                            request_sha256: format!("{round}-{i}"),
                            status: 201,
                            body: "{}".into(),
                        };
                        tx.store_idempotent_response(&org, &format!("batch-{round}-{i}"), &r, 0)?;
                        // Every third job fails after it wrote.
                        if i % 3 == 0 {
                            return Err(StoreError::invalid("i", "refused on purpose"));
                        }
                        Ok(i)
                    })
                    .await
            }));
        }
        for (i, h) in handles.into_iter().enumerate() {
            match h.await.unwrap() {
                Ok(v) => assert!(i % 3 != 0 && v == i),
                Err(StoreError::Invalid { .. }) => assert_eq!(i % 3, 0),
                Err(e) => panic!("job {i}: {e:?}"),
            }
        }
        for (i, count) in runs.iter().enumerate() {
            let n = count.load(std::sync::atomic::Ordering::SeqCst);
            assert!((1..=2).contains(&n), "job {i} ran {n} times");
            let org = m.consumer.clone();
            let key = format!("batch-{round}-{i}");
            let stored = read(&m.store, move |tx| tx.idempotent_response(&org, &key)).unwrap();
            assert_eq!(stored.is_some(), i % 3 != 0, "job {i} of round {round}");
        }
    }
    assert_books_sound(&m.store);
}

/// On PostgreSQL the writer commits with `synchronous_commit=off` and makes the commit durable
/// with its sync: once the sync has returned (and the batch's requests are answered), the
/// server's WAL must be flushed past the batch's commit. (On SQLite the writer's unit tests check
/// that nobody is answered before the sync.)
#[test]
fn the_postgres_sync_flushes_the_wal_past_the_commit() {
    let Some(db_url) = fresh_postgres_database() else {
        return;
    };
    let mut writer = suanli_store::postgres::PostgresDatabase::connect_writer(&db_url).unwrap();
    let mut observer = postgres::Client::connect(&db_url, postgres::NoTls).unwrap();
    for _ in 0..20 {
        writer.begin_write().unwrap();
        suanli_store::Tx::new(&mut writer)
            .create_org(&org("consumer", Some("enterprise")), "admin", None)
            .unwrap();
        let written = writer
            .query("SELECT pg_current_wal_insert_lsn()::text", &[])
            .unwrap()[0]
            .str(0)
            .unwrap();
        let sync = writer
            .commit()
            .unwrap()
            .expect("the PostgreSQL writer makes commits durable apart");
        sync().unwrap();
        let flushed: bool = observer
            .query_one(
                "SELECT pg_current_wal_flush_lsn() >= $1::text::pg_lsn",
                &[&written],
            )
            .unwrap()
            .get(0);
        assert!(
            flushed,
            "the WAL was not flushed past {written} after the sync"
        );
    }
}

/// On PostgreSQL the writer survives losing its connections (here both are terminated, as by a
/// server restart or an administrator): the batch that meets the lost connection fails, later
/// ones connect again and commit, and everything answered with success is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_writer_connects_again_after_losing_its_connections() {
    let store = fresh_store();
    if store.kind() != "postgres" {
        return;
    }
    let Location::Postgres(url) = store.location().clone() else {
        unreachable!()
    };
    let create = |store: Arc<Store>| async move {
        let o = org("consumer", Some("enterprise"));
        let id = o.id.clone();
        store
            .writer()
            .submit(move |tx| tx.create_org(&o, "admin", None).map(|_| ()))
            .await
            .map(|()| id)
    };
    let mut created = vec![create(store.clone()).await.expect("a first org")];
    tokio::task::block_in_place(|| {
        let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let ended = admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .unwrap();
        assert!(
            ended.len() >= 2,
            "the writer's two connections were terminated"
        );
    });
    let mut failures = 0;
    for _ in 0..10 {
        match create(store.clone()).await {
            Ok(id) => created.push(id),
            Err(StoreError::Database(_)) => failures += 1,
            Err(e) => panic!("unexpected refusal: {e}"),
        }
    }
    assert!(
        failures <= 2,
        "{failures} of 10 writes failed after the reconnection"
    );
    assert!(created.len() >= 9);
    for id in &created {
        read(&store, |tx| tx.get_org(id)).expect("every acknowledged org is there");
    }
}

/// A purchase asks the database for the single node that should take the whole lease; that
/// must be the node the core's `place` picks from every node of the pool (least room left that
/// fits, ties by node id), or none when `place` has to spread the units over several nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_picks_the_node_placement_would_pick() {
    use suanli_core::resource::{place, Category, UnitShape};
    let store = fresh_store();
    let pool_id = store
        .writer()
        .submit(|tx| {
            let p = org("provider", None);
            tx.create_org(&p, "admin", None)?;
            let node = |name: &str,
                        cpus: u64,
                        memory_gib: u64,
                        model: Option<&str>,
                        acc: u64,
                        partition: Option<&str>| {
                NewNode {
                    name: name.into(),
                    cpus,
                    memory_mib: memory_gib * 1024,
                    accelerator_model: model.map(Into::into),
                    accelerators: acc,
                    partition: partition.map(Into::into),
                }
            };
            let nodes = [
                node("c-a", 8, 32, None, 0, None),
                node("c-b", 8, 32, None, 0, None),
                node("c-c", 16, 16, None, 0, None),
                node("c-d", 4, 64, None, 0, Some("debug")),
                node("c-e", 32, 64, None, 0, Some("long")),
                node("c-f", 2, 4, None, 0, Some("debug")),
                node("g-a", 64, 512, Some("H100-80G"), 8, Some("gpu")),
                node("g-b", 64, 512, Some("H100-80G"), 4, Some("gpu")),
                node("g-c", 32, 256, Some("A800-80G"), 4, None),
                node("g-d", 16, 512, Some("H100-80G"), 8, None),
            ];
            Ok(tx.create_pool(&p.id, "mixed", "wuqing-core", &nodes, 0)?.id)
        })
        .await
        .unwrap();
    let shapes = [
        (Category::General, 1, 1024, None),
        (Category::General, 2, 4096, None),
        (Category::General, 4, 2048, None),
        (Category::Intelligent, 8, 64 * 1024, Some("H100-80G")),
        (Category::Intelligent, 16, 32 * 1024, Some("H100-80G")),
        (Category::Intelligent, 4, 16 * 1024, Some("A800-80G")),
        (Category::Intelligent, 4, 16 * 1024, Some("Ascend-910B")),
        (Category::Supercomputing, 1, 2048, Some("debug")),
        (Category::Supercomputing, 1, 1024, None),
        (Category::Supercomputing, 2, 1024, Some("long")),
    ];
    let mut single = 0;
    for (category, cpus_per_unit, memory_mib_per_unit, qualifier) in shapes {
        let shape = UnitShape {
            category,
            cpus_per_unit,
            memory_mib_per_unit,
        };
        for units in 1..=40u64 {
            let pool = pool_id.clone();
            let (fast, all) = read(&store, move |tx| {
                Ok((
                    tx.best_single_node(&pool, &shape, qualifier, units)?,
                    tx.nodes_with_room(&pool, shape.per_unit())?,
                ))
            })
            .unwrap();
            let expected = place(&all, &shape, qualifier, units);
            match fast {
                Some(node) => {
                    single += 1;
                    assert_eq!(
                        place(std::slice::from_ref(&node), &shape, qualifier, units),
                        expected,
                        "{category:?} {qualifier:?} × {units}"
                    );
                }
                None => assert!(
                    expected.is_none_or(|a| a.len() > 1),
                    "{category:?} {qualifier:?} × {units}: placement fits one node, the query found none"
                ),
            }
        }
    }
    assert!(
        single > 50,
        "only {single} single-node placements were compared"
    );
}

/// Within one transaction (one batch of the writer), a purchase sees what the jobs before it did
/// to its offer: an agent registered on the pool meters the next lease, and a withdrawn offer
/// sells nothing more (the writer keeps offer terms for a batch; see `batch_offers`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_sees_its_offer_as_changed_earlier_in_the_same_transaction() {
    let m = market(1_000_000_000).await;
    let (p1, p2, p3) = (
        purchase(&m, 1, 60, 1_000),
        purchase(&m, 1, 60, 1_001),
        purchase(&m, 1, 60, 1_002),
    );
    let (provider, offer) = (m.provider.clone(), m.offer.clone());
    let (first, second, third) = m
        .store
        .writer()
        .submit(move |tx| {
            let first = tx.purchase(&p1)?;
            let pool_id = tx.get_offer(None, &offer)?.pool_id;
            tx.register_agent(
                &suanli_store::jobs::NewAgent {
                    org_id: provider.clone(),
                    name: "agent-1".into(),
                    zone: "wuqing-core".into(),
                    public_key_hex: "ab".repeat(32),
                    backend: "local".into(),
                    isolation: "process".into(),
                    version: "test".into(),
                    nodes: vec![gpu_node()],
                    pool_id: Some(pool_id),
                    renews: None,
                },
                1_000,
            )?;
            let second = tx.purchase(&p2)?;
            tx.withdraw_offer(&provider, &offer)?;
            let third = tx.purchase(&p3);
            Ok((first, second, third))
        })
        .await
        .unwrap();
    assert!(
        first.billing != Billing::Metered,
        "no agent served the pool at the first purchase"
    );
    assert!(
        second.billing == Billing::Metered,
        "the agent registered before the second purchase"
    );
    assert!(
        matches!(third, Err(StoreError::OfferNotAvailable(_))),
        "a withdrawn offer sold: {third:?}"
    );
    assert_books_sound(&m.store);
}

/// What migration 6 changes the reads of: both sides' statements, and the lease lists (ids and
/// states, newest first).
fn postings_views(
    m: &Market,
) -> (
    Vec<suanli_store::ops::TransferRow>,
    Vec<String>,
    Vec<String>,
) {
    let (consumer, provider) = (m.consumer.clone(), m.provider.clone());
    read(&m.store, move |tx| {
        let mut lines = tx.statement(&consumer, 0, 100)?;
        lines.extend(tx.statement(&provider, 0, 100)?);
        let leases = |tx: &mut suanli_store::Tx<'_>, org: &str, side| {
            tx.list_leases(org, side, None, 100).map(|ls| {
                ls.iter()
                    .map(|l| format!("{} {}", l.id, l.state.as_str()))
                    .collect::<Vec<_>>()
            })
        };
        let bought = leases(tx, &consumer, None)?;
        assert_eq!(bought, leases(tx, &consumer, Some("consumer"))?);
        assert!(leases(tx, &consumer, Some("provider"))?.is_empty());
        let sold = leases(tx, &provider, None)?;
        assert!(leases(tx, &provider, Some("consumer"))?.is_empty());
        Ok((lines, bought, sold))
    })
    .unwrap()
}

/// A database made before migration 6 (transfers indexed by account, leases by consumer) gets a
/// posting for each side of every transfer: its books stay sound, and its statements and lease
/// lists read the same afterwards; new purchases are posted and listed first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_6_posts_every_earlier_transfer() {
    let m = market(1_000_000_000).await;
    let mut bought = Vec::new();
    for (units, at) in [(1, 1_000), (2, 2_000), (1, 3_000)] {
        let p = purchase(&m, units, 3_600, at);
        let lease = buy(&m.store, p).await.unwrap();
        bought.push(lease.id);
    }
    let (org, id) = (m.consumer.clone(), bought[1].clone());
    m.store
        .writer()
        .submit(move |tx| tx.end_lease(Some(&org), &id, EndReason::Ended, 60_000))
        .await
        .unwrap();
    let before = postings_views(&m);
    // Newest first, with the ended lease's state.
    assert_eq!(before.1.len(), 3);
    assert!(before.1[0].starts_with(&bought[2]), "{:?}", before.1);
    assert_eq!(before.1[1], format!("{} ended", bought[1]));
    assert_eq!(before.2, before.1);
    assert_books_sound(&m.store);

    // Take the database back to how it was without migration 6 (which then runs again), and
    // open it again.
    let location = m.store.location().clone();
    let Market {
        store,
        consumer,
        provider,
        offer,
    } = m;
    drop(store);
    let undo = "DROP TABLE postings; \
        CREATE INDEX transfers_debit ON transfers(debit_account_id); \
        CREATE INDEX transfers_credit ON transfers(credit_account_id); \
        CREATE INDEX leases_consumer ON leases(consumer_org_id, started_ms); \
        DELETE FROM schema_migrations WHERE version = 6";
    tokio::task::block_in_place(|| match &location {
        suanli_store::Location::Sqlite(path) => rusqlite::Connection::open(path)
            .unwrap()
            .execute_batch(undo)
            .unwrap(),
        suanli_store::Location::Postgres(url) => postgres::Client::connect(url, postgres::NoTls)
            .unwrap()
            .batch_execute(undo)
            .unwrap(),
    });
    let m = Market {
        store: open(location),
        consumer,
        provider,
        offer,
    };
    assert_books_sound(&m.store);
    assert_eq!(postings_views(&m), before);
    // One posting per org and transfer: the deposit (operator → consumer), three holds (within
    // the consumer), the ended lease's cost and fee (consumer → provider, consumer → operator)
    // and its release (within the consumer).
    let postings = read(&m.store, |tx| {
        Ok((tx.count("postings")?, tx.count("transfers")?))
    })
    .unwrap();
    assert_eq!(postings, (2 + 3 + 2 + 2 + 1, 1 + 3 + 3));

    let p = purchase(&m, 1, 3_600, 70_000);
    let newest = buy(&m.store, p).await.unwrap();
    let after = postings_views(&m);
    assert_eq!(after.1.len(), 4);
    assert_eq!(after.1[0], format!("{} active", newest.id));
    assert_eq!(after.1[1..], before.1[..]);
    // The hold moves money between two of the consumer's accounts: one line.
    assert_eq!(after.0.len(), before.0.len() + 1);
    assert_books_sound(&m.store);
}

/// The writer remembers the orgs it read only once their transaction has committed: an org
/// created and read by a job that fails is gone with it, and one that commits is found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_org_read_by_a_failed_job_is_not_remembered() {
    let store = fresh_store();
    for commits in [false, true] {
        let made = org("consumer", Some("research_institute"));
        let id = made.id.clone();
        let outcome = store
            .writer()
            .submit(move |tx| {
                tx.create_org(&made, "admin", None)?;
                assert_eq!(tx.get_org(&made.id)?.id, made.id);
                if commits {
                    Ok(())
                } else {
                    Err(StoreError::Conflict("failed on purpose".into()))
                }
            })
            .await;
        assert_eq!(outcome.is_ok(), commits, "{outcome:?}");
        let looked = store.writer().submit(move |tx| tx.get_org(&id)).await;
        match looked {
            Ok(found) => assert!(commits, "a rolled-back org was found: {found:?}"),
            Err(StoreError::NotFound("org")) => assert!(!commits, "a committed org was lost"),
            Err(e) => panic!("{e:?}"),
        }
    }
}

/// A writer keeps what its last transaction read (balances, free capacity, offer terms) for the
/// next one only while no other exchange process writes: each of these steps alternates between
/// two processes on one database, and each sees the other's deposit, purchase and withdrawal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_sees_what_another_process_committed_since_its_last_batch() {
    let m = market(1_000_000_000).await;
    let [a, b] = two_processes(&m);
    let hour = |units: u64, at: i64| purchase(&m, units, 3_600, at);
    // One accelerator-hour holds 36 CNY.
    buy(&a, hour(1, 1_000)).await.unwrap();
    let consumer = m.consumer.clone();
    b.writer()
        .submit(move |tx| tx.deposit(&consumer, 5_000_000, "bank-2", 2_000))
        .await
        .unwrap();
    buy(&b, hour(2, 3_000)).await.unwrap();
    buy(&a, hour(1, 4_000)).await.unwrap();
    for store in [&a, &b] {
        assert_eq!(
            balance(store, &m.consumer, AccountKind::Available),
            1_000_000_000 + 5_000_000 - 4 * 36_000_000
        );
        assert_eq!(
            balance(store, &m.consumer, AccountKind::Held),
            4 * 36_000_000
        );
        assert_books_sound(store);
    }
    // Four of the node's eight accelerators are left: B takes them, A finds none; B ends that
    // lease, and A finds them again.
    let last = buy(&b, hour(4, 5_000)).await.unwrap();
    let refused = buy(&a, hour(1, 6_000)).await;
    assert!(
        matches!(refused, Err(StoreError::CapacityUnavailable)),
        "{refused:?}"
    );
    let consumer = m.consumer.clone();
    b.writer()
        .submit(move |tx| tx.end_lease(Some(&consumer), &last.id, EndReason::Ended, 6_500))
        .await
        .unwrap();
    buy(&a, hour(4, 7_000)).await.unwrap();
    // B withdraws the offer: A can no longer buy from it.
    let (provider, offer) = (m.provider.clone(), m.offer.clone());
    b.writer()
        .submit(move |tx| tx.withdraw_offer(&provider, &offer))
        .await
        .unwrap();
    let refused = buy(&a, hour(1, 8_000)).await;
    assert!(
        matches!(refused, Err(StoreError::OfferNotAvailable(_))),
        "{refused:?}"
    );
    assert_books_sound(&a);
}

/// Decoding fails closed: a lease whose stored billing mode or state this version does not know
/// (written by a newer version, or by hand) is an error when read, never taken for a default
/// (before, an unknown billing read as elapsed and an unknown state as active).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_that_does_not_decode_is_an_error_not_a_default() {
    let m = market(1_000_000_000).await;
    let lease = buy(&m.store, purchase(&m, 1, 60, 0)).await.unwrap();
    let mut raw = tokio::task::block_in_place(|| -> Box<dyn Database> {
        match m.store.location() {
            Location::Sqlite(path) => {
                Box::new(suanli_store::sqlite::SqliteDatabase::open_writer(path).unwrap())
            }
            Location::Postgres(url) => {
                Box::new(suanli_store::postgres::PostgresDatabase::connect(url).unwrap())
            }
        }
    });
    let corrupt = |raw: &mut Box<dyn Database>, sql: &str| {
        tokio::task::block_in_place(|| raw.execute(sql, &[lease.id.as_str().into()])).unwrap()
    };
    assert_eq!(
        corrupt(
            &mut raw,
            "UPDATE leases SET billing = 'hourly' WHERE id = $1"
        ),
        1
    );
    let id = lease.id.clone();
    let read_back = read(&m.store, move |tx| tx.get_lease(None, &id));
    assert!(
        matches!(read_back, Err(StoreError::Corrupt(ref m)) if m.contains("hourly")),
        "{read_back:?}"
    );
    // Ending it refuses too, rather than settling it as elapsed time.
    let id = lease.id.clone();
    let ended = m
        .store
        .writer()
        .submit(move |tx| tx.end_lease(None, &id, EndReason::Ended, 1_000))
        .await;
    assert!(matches!(ended, Err(StoreError::Corrupt(_))), "{ended:?}");

    corrupt(
        &mut raw,
        "UPDATE leases SET billing = 'elapsed' WHERE id = $1",
    );
    if matches!(m.store.location(), Location::Sqlite(_)) {
        // SQLite can be told to skip CHECK constraints; a state outside them must not read as
        // active either.
        tokio::task::block_in_place(|| raw.batch("PRAGMA ignore_check_constraints = ON")).unwrap();
        corrupt(&mut raw, "UPDATE leases SET state = 'paused' WHERE id = $1");
        let id = lease.id.clone();
        let read_back = read(&m.store, move |tx| tx.get_lease(None, &id));
        assert!(
            matches!(read_back, Err(StoreError::Corrupt(ref m)) if m.contains("paused")),
            "{read_back:?}"
        );
    }
}
