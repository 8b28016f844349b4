//! The exchange the data tests run on, and what they share.

use std::sync::Arc;

use suanli_core::data::{AccessMode, Gating, Licence, ListingKind, Price};
use suanli_core::decide::data::{
    NewListing, RequestAction, VersionLimits, DEFAULT_APPROVAL_TIMEOUT_MS,
};
use suanli_core::decide::OrgKind;
use suanli_core::ledger::AccountKind;
use suanli_store::ops::{new_id, AccessOutcome, AccessRequest, NewFile, OrgRow};
use suanli_store::{Location, Store, StoreError, Tx, WriterConfig};

pub const DAY: i64 = 86_400_000;
pub const T0: i64 = 1_000_000;
pub const FEE_BPS: u32 = 500;

fn fresh_store() -> Arc<Store> {
    let location = match tokio::task::block_in_place(fresh_postgres_database) {
        Some(url) => Location::Postgres(url),
        None => {
            let dir = std::env::temp_dir().join(new_id("suanli-store-data-test"));
            std::fs::create_dir_all(&dir).unwrap();
            Location::Sqlite(dir.join("t.db").to_string_lossy().into_owned())
        }
    };
    tokio::task::block_in_place(|| {
        Arc::new(Store::open(location, WriterConfig::default()).expect("open the store"))
    })
}

/// A new, empty database on the test PostgreSQL (`SUANLI_TEST_DATABASE_URL`), or `None` on
/// SQLite.
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

fn org(kind: OrgKind) -> OrgRow {
    let id = new_id("org");
    OrgRow {
        name: format!("{} org {id}", kind.as_str()),
        id,
        kind,
        consumer_type: (kind == OrgKind::Consumer).then(|| "enterprise".into()),
        zone: "wuqing-core".into(),
        origin_region: "tianjin".into(),
        created_ms: 0,
        name_unique: true,
    }
}

/// An exchange with an operator, a provider (the data's owner), a buyer with `funds` and another
/// consumer with as much.
pub struct Ex {
    pub store: Arc<Store>,
    pub operator: String,
    pub provider: String,
    pub buyer: String,
    pub other: String,
}

impl Ex {
    pub async fn new(funds: u64) -> Ex {
        let store = fresh_store();
        let (operator, provider, buyer, other) = store
            .writer()
            .submit(move |tx| {
                let ids: Vec<String> = [
                    OrgKind::Operator,
                    OrgKind::Provider,
                    OrgKind::Consumer,
                    OrgKind::Consumer,
                ]
                .into_iter()
                .map(|kind| {
                    let o = org(kind);
                    tx.create_org(&o, "admin", None)?;
                    if kind == OrgKind::Consumer && funds > 0 {
                        tx.deposit(&o.id, funds, "bank-1", 0)?;
                    }
                    Ok(o.id)
                })
                .collect::<Result<_, StoreError>>()?;
                Ok((
                    ids[0].clone(),
                    ids[1].clone(),
                    ids[2].clone(),
                    ids[3].clone(),
                ))
            })
            .await
            .expect("set up the exchange");
        Ex {
            store,
            operator,
            provider,
            buyer,
            other,
        }
    }

    pub async fn write<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        F: Fn(&mut Tx<'_>) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        self.store.writer().submit(f).await
    }

    pub fn read<R>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        tokio::task::block_in_place(|| self.store.read(f))
    }

    pub async fn create_listing(&self, owner: &str, l: NewListing) -> Result<String, StoreError> {
        let owner = owner.to_owned();
        self.write(move |tx| tx.create_listing(&owner, &l, FEE_BPS, T0))
            .await
            .map(|l| l.name)
    }

    /// Version `label` of `listing` with one verified file, published.
    pub async fn publish(&self, listing: &str, label: &str) {
        let (p, l, v) = (self.provider.clone(), listing.to_owned(), label.to_owned());
        self.write(move |tx| {
            tx.create_version(&p, &l, &v, T0)?;
            tx.add_file(
                &p,
                &l,
                &v,
                &file("data.csv", 3),
                &VersionLimits::default(),
                T0,
            )?;
            tx.verify_file(&p, &l, &v, "data.csv", 3, &digest('a'), T0)?;
            tx.publish_version(&p, &l, &v, T0)
        })
        .await
        .expect("publish a version");
    }

    /// `buyer` asks for `listing` (at `version`) with `purpose`, declaring the accounts it may
    /// move money on, as the server does.
    pub async fn request(
        &self,
        buyer: &str,
        listing: &str,
        version: Option<&str>,
        purpose: &str,
        now_ms: i64,
    ) -> Result<AccessOutcome, StoreError> {
        let (b, l) = (buyer.to_owned(), listing.to_owned());
        let accounts = self.read(move |tx| tx.access_accounts(&b, &l)).unwrap();
        assert_eq!(accounts.len(), 4);
        let r = AccessRequest {
            buyer_org_id: buyer.into(),
            listing: listing.into(),
            version: version.map(Into::into),
            accept_licence: true,
            purpose: purpose.into(),
            approval_timeout_ms: DEFAULT_APPROVAL_TIMEOUT_MS,
            now_ms,
        };
        self.store
            .writer()
            .submit_with_accounts(accounts, move |tx| tx.request_access(&r))
            .await
    }

    pub async fn answer(
        &self,
        actor: Option<&str>,
        request_id: &str,
        action: RequestAction,
        now_ms: i64,
    ) -> Result<AccessOutcome, StoreError> {
        let id = request_id.to_owned();
        let accounts = self.read(|tx| tx.request_accounts(&id)).unwrap();
        let actor = actor.map(str::to_owned);
        self.store
            .writer()
            .submit_with_accounts(accounts, move |tx| {
                tx.answer_access_request(actor.as_deref(), &id, action, now_ms)
            })
            .await
    }

    pub fn balance(&self, org: &str, kind: AccountKind) -> i64 {
        self.read(|tx| tx.accounts_of(org))
            .unwrap()
            .into_iter()
            .find(|a| a.kind == kind)
            .map(|a| a.balance())
            .unwrap()
    }

    pub fn assert_books_sound(&self) {
        let violations = self.read(|tx| tx.check_ledger()).unwrap();
        assert!(
            violations.is_empty(),
            "ledger invariants violated: {violations:?}"
        );
    }

    pub fn count(&self, table: &'static str) -> u64 {
        self.read(|tx| tx.count(table)).unwrap()
    }
}

pub fn digest(c: char) -> String {
    c.to_string().repeat(64)
}

pub fn file(path: &str, size: u64) -> NewFile {
    NewFile {
        path: path.into(),
        size,
        sha256: digest('a'),
    }
}

pub fn dataset(name: &str, price: Price, gating: Gating) -> NewListing {
    NewListing {
        name: name.into(),
        kind: ListingKind::Dataset,
        title_zh: " 北京交通流量 ".into(),
        title_en: "Beijing traffic".into(),
        description_zh: "每 5 分钟一条。".into(),
        description_en: String::new(),
        tags: vec!["交通".into(), "traffic".into(), "交通".into()],
        card: "# 数据集\n".into(),
        licence: Licence::Spdx("cc-by-4.0".into()),
        access: AccessMode::Download,
        gating,
        price,
        model: None,
    }
}

pub fn field_of<T: std::fmt::Debug>(r: Result<T, StoreError>) -> &'static str {
    match r {
        Err(StoreError::Invalid { field, .. } | StoreError::Duplicate { field, .. }) => field,
        other => panic!("expected a refusal naming a field, got {other:?}"),
    }
}
