//! Test helpers: a real server on 127.0.0.1:0 with a fresh database, driven by the real client.

#![allow(dead_code)]

use std::net::SocketAddr;

use suanli_api::*;
use suanli_client::Client;
use suanli_server::{AppState, ServerConfig};
use suanli_store::Location;

pub struct App {
    pub base: String,
    pub operator: Client,
    /// The operator's token secret (for requests the typed client does not make).
    pub operator_token: String,
    pub state: AppState,
}

/// A fresh database: SQLite in a temp dir, or a new database on `SUANLI_TEST_DATABASE_URL`.
pub fn fresh_location() -> Location {
    match std::env::var("SUANLI_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => {
            let name = suanli_store::ops::new_id("t").replace('_', "");
            let u = url.clone();
            let n = name.clone();
            std::thread::spawn(move || {
                let mut admin = postgres::Client::connect(&u, postgres::NoTls)
                    .expect("connect to the test PostgreSQL");
                admin
                    .batch_execute(&format!("CREATE DATABASE {n}"))
                    .expect("create a test database");
            })
            .join()
            .unwrap();
            let base = url.rsplit_once('/').map(|(b, _)| b).unwrap_or(&url);
            Location::Postgres(format!("{base}/{name}"))
        }
        _ => sqlite_location(),
    }
}

/// A fresh SQLite database in a temp dir.
pub fn sqlite_location() -> Location {
    let dir = std::env::temp_dir().join(suanli_store::ops::new_id("suanli-api-test"));
    std::fs::create_dir_all(&dir).unwrap();
    Location::Sqlite(dir.join("t.db").to_string_lossy().into_owned())
}

pub async fn spawn_app() -> App {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut ServerConfig)) -> App {
    spawn_app_at(fresh_location(), adjust).await
}

pub async fn spawn_app_at(location: Location, adjust: impl FnOnce(&mut ServerConfig)) -> App {
    let mut config = ServerConfig::new(location);
    config.objects = suanli_objects::StoreConfig::local(
        std::env::temp_dir().join(suanli_store::ops::new_id("suanli-test-objects")),
    );
    config.expiry_interval = std::time::Duration::from_millis(100);
    adjust(&mut config);
    let (state, boot) = suanli_server::start(config)
        .await
        .expect("start the server");
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let router = suanli_server::router(state.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let base = format!("http://{addr}");
    let operator_token = boot
        .token_secret
        .clone()
        .expect("a fresh store's operator token");
    let operator = Client::new(base.clone(), boot.token_secret);
    App {
        base,
        operator,
        operator_token,
        state,
    }
}

pub struct Org {
    pub id: String,
    pub client: Client,
    /// Its admin's token secret (for requests the typed client does not make).
    pub token: String,
}

impl App {
    pub async fn admit(&self, name: &str, kind: OrgKind) -> Org {
        let consumer_type = (kind == OrgKind::Consumer).then_some(ConsumerType::Enterprise);
        let created = self
            .operator
            .create_org(
                &CreateOrgRequest {
                    name: name.into(),
                    kind,
                    consumer_type,
                    zone: "wuqing-core".into(),
                    origin_region: "tianjin".into(),
                    admin_name: None,
                    admin_email: None,
                },
                None,
            )
            .await
            .expect("admit an org");
        Org {
            id: created.org.id,
            client: Client::new(self.base.clone(), Some(created.token.secret.clone())),
            token: created.token.secret,
        }
    }

    pub async fn fund(&self, org: &Org, yuan: u64) {
        self.operator
            .deposit(
                &org.id,
                &DepositRequest {
                    amount_micros: yuan * 1_000_000,
                    // A payment is recorded once per reference: each deposit has its own.
                    external_ref: suanli_store::ops::new_id("bank"),
                },
                None,
            )
            .await
            .expect("deposit");
    }

    /// A provider with one node of 8 H100s and an offer at 36 CNY per accelerator-hour.
    pub async fn gpu_provider(&self, name: &str) -> (Org, Offer) {
        let p = self.admit(name, OrgKind::Provider).await;
        let pool = p
            .client
            .create_pool(
                &CreatePoolRequest {
                    name: "gpus".into(),
                    zone: "wuqing-core".into(),
                    nodes: vec![NodeSpec {
                        name: "gpu-01".into(),
                        cpus: 128,
                        memory_mib: 1024 * 1024,
                        accelerator_model: Some("H100-80G".into()),
                        accelerators: 8,
                        partition: None,
                    }],
                },
                None,
            )
            .await
            .expect("create a pool");
        let offer = p
            .client
            .create_offer(
                &CreateOfferRequest {
                    pool_id: pool.id,
                    class: "intelligent:H100-80G".into(),
                    cpus_per_unit: Some(16),
                    memory_mib_per_unit: 128 * 1024,
                    price_micros_per_unit_hour: 36_000_000,
                    min_units: None,
                    max_units: Some(8),
                    valid_from: None,
                    valid_until: None,
                },
                None,
            )
            .await
            .expect("create an offer");
        (p, offer)
    }

    /// `GET /metrics` as the operator (it answers nobody else).
    pub async fn metrics(&self) -> String {
        let response = reqwest::Client::new()
            .get(format!("{}/metrics", self.base))
            .bearer_auth(&self.operator_token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    pub async fn ledger_ok(&self) {
        let check = self.operator.ledger_check().await.expect("ledger check");
        assert!(check.ok, "ledger invariants: {:?}", check.violations);
    }
}

pub fn buy(offer: &Offer, units: u64, duration_limit_s: u64) -> PurchaseRequest {
    PurchaseRequest {
        offer_id: offer.id.clone(),
        units,
        duration_limit_s,
        max_price_micros_per_unit_hour: None,
        auto_end: false,
    }
}
