//! Suanli's HTTP server: axum routes under `/api/v1`, authentication, idempotency, the OpenAPI
//! document and the background services (lease expiry).
//!
//! Handlers are thin: parse and validate ([`extract`]), authenticate ([`auth`]: who the caller is;
//! what it may do is `suanli_core::decide::access`'s), run a read on a read connection or a write
//! as a job of the single writer ([`AppState::mutate`]), and answer with wire types ([`wire`]).
//! Business rules live in `suanli-core` (a refusal it decides answers as the store's would:
//! `From<Refusal> for ApiError`), SQL in `suanli-store`.
//!
//! - [`routes`]: one module per area (orgs, providers, market, ledger).
//! - [`openapi`]: the generated OpenAPI document.
//! - [`error`]: the one error type and the request id.

pub mod auth;
pub mod error;
pub mod extract;
pub mod openapi;
pub mod routes;
pub mod strict;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::Serialize;
use suanli_api::{ErrorCode, Zone};
use suanli_core::lease::EndReason;
use suanli_store::once::{Encoded, Key, Once};
use suanli_store::ops::OrgRow;
use suanli_store::{Location, Store, StoreError, Tx, WriterConfig};

use crate::error::{current_request_id, ApiError, REQUEST_ID};

/// Milliseconds since the Unix epoch (from `suanli-clock`, the one place the wall clock is read),
/// passed down to the core.
pub fn now_ms() -> i64 {
    suanli_clock::now_ms()
}

/// Settings of one exchange process.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub database: Location,
    pub fee_bps: u32,
    pub zones: Vec<Zone>,
    pub writer: WriterConfig,
    /// How often the expiry service looks for leases past their duration limit.
    pub expiry_interval: Duration,
    /// How often agents are asked to send a heartbeat.
    pub heartbeat_interval: Duration,
    /// Silence after which an agent is suspect.
    pub suspect_after: Duration,
    /// Silence after which an agent is lost and its attempts with it.
    pub lost_after: Duration,
    /// Bytes of a job's log the exchange keeps; past them a notice ends the log.
    pub max_log_bytes_per_job: u64,
    /// Where data products' bytes are kept.
    pub objects: suanli_objects::StoreConfig,
    /// How long a request for access awaits its owner's answer before its hold is voided.
    pub data_approval_timeout: Duration,
    /// What a version of a data product may hold.
    pub data_limits: suanli_core::decide::data::VersionLimits,
}

/// The zones of the Wuqing Beijing–Tianjin industrial new city: one core, several function zones.
pub fn default_zones() -> Vec<Zone> {
    let z = |id: &str, name: &str, kind: &str| Zone {
        id: id.into(),
        name: name.into(),
        kind: kind.into(),
    };
    vec![
        z(
            "wuqing-core",
            "科创先导区 Science and Innovation Pilot Zone",
            "core",
        ),
        z(
            "wuqing-devzone",
            "武清开发区 Wuqing Development Zone",
            "function",
        ),
        z(
            "jingqing-auto",
            "京清汽车产业园 Jing-Qing Automotive Park",
            "function",
        ),
        z(
            "precision-medicine",
            "精准医疗科技产业园 Precision Medicine Park",
            "function",
        ),
        z(
            "finance-district",
            "金融商务街区 Finance and Business District",
            "function",
        ),
    ]
}

impl ServerConfig {
    pub fn new(database: Location) -> Self {
        ServerConfig {
            fee_bps: 500,
            zones: default_zones(),
            writer: WriterConfig::default(),
            expiry_interval: Duration::from_millis(500),
            heartbeat_interval: Duration::from_secs(5),
            suspect_after: Duration::from_secs(15),
            lost_after: Duration::from_secs(60),
            max_log_bytes_per_job: 128 * 1024 * 1024,
            objects: default_objects(&database),
            data_approval_timeout: Duration::from_millis(
                suanli_core::decide::data::DEFAULT_APPROVAL_TIMEOUT_MS as u64,
            ),
            data_limits: suanli_core::decide::data::VersionLimits::default(),
            database,
        }
    }
}

/// Data products' bytes by default: `objects/` beside the SQLite database, or under the
/// working directory with PostgreSQL (`suanli serve` names the data directory's).
pub fn default_objects(database: &Location) -> suanli_objects::StoreConfig {
    match database {
        Location::Sqlite(path) => suanli_objects::StoreConfig::in_data_dir(
            std::path::Path::new(path)
                .parent()
                .unwrap_or(std::path::Path::new(".")),
        ),
        _ => suanli_objects::StoreConfig::in_data_dir(std::path::Path::new(".")),
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub config: Arc<ServerConfig>,
    /// Wakes agents long-polling for work when a job is queued.
    pub work: Arc<tokio::sync::Notify>,
    /// Wakes readers long-polling a job's log when chunks arrive or a job ends.
    pub logs: Arc<tokio::sync::Notify>,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// When this process started: agents' silence is counted from here at the earliest.
    pub started_ms: i64,
    /// Authenticated callers by token hash (see [`auth::CallerCache`]).
    pub callers: Arc<auth::CallerCache>,
    /// Data products' bytes.
    pub objects: suanli_objects::Objects,
    /// One upload at a time per file in this process.
    pub upload_locks: Arc<routes::data::files::UploadLocks>,
}

/// What [`AppState::mutate_with`] does beyond a plain [`AppState::mutate`].
#[derive(Debug, Default)]
pub struct WriteOptions {
    /// The ledger accounts the write moves money on: the writer reads them for the whole batch
    /// at once (see `Writer::submit_with_accounts`).
    pub accounts: Vec<String>,
    /// Applied to a success before it is stored as the idempotent copy (secrets shown once).
    pub redact: Option<fn(&mut serde_json::Value)>,
}

/// Counters exported at `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub self_suspicions: std::sync::atomic::AtomicU64,
    pub agents_lost: std::sync::atomic::AtomicU64,
    pub jobs_requeued: std::sync::atomic::AtomicU64,
    pub jobs_lost: std::sync::atomic::AtomicU64,
    pub usage_records: std::sync::atomic::AtomicU64,
    pub usage_duplicates: std::sync::atomic::AtomicU64,
    /// Usage records refused for claiming more than time allows.
    pub usage_refused: std::sync::atomic::AtomicU64,
}

/// What a write job answered: fresh, replayed from the idempotency store, or a key reused with
/// another request.
/// Replaces secrets in the stored copy of a response: token secrets are shown once, never stored.
pub fn redact_secret(body: &mut serde_json::Value) {
    if let Some(obj) = body.get_mut("token").and_then(|t| t.as_object_mut()) {
        if obj.contains_key("secret") {
            obj.insert(
                "secret".into(),
                serde_json::Value::String("(shown once; create a new token)".into()),
            );
        }
    }
    if let Some(obj) = body.as_object_mut() {
        if obj.contains_key("secret") {
            obj.insert(
                "secret".into(),
                serde_json::Value::String("(shown once; create a new token)".into()),
            );
        }
    }
}

impl AppState {
    /// Runs a read on a read connection, off the async threads.
    pub async fn read<R, F>(&self, f: F) -> Result<R, ApiError>
    where
        F: FnOnce(&mut Tx<'_>) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.read(f))
            .await
            .map_err(|e| ApiError::new(ErrorCode::Internal, format!("read task failed: {e}")))?
            .map_err(ApiError::from)
    }

    /// Runs a write as one job of the writer and answers once it is durable.
    ///
    /// With an idempotency key, the check, the effect and the stored response are in the same
    /// transaction: the same key and body get the stored response, another body gets 422, and
    /// concurrent requests with one key have one effect. Refusals (4xx) are stored too, so a retry
    /// sees the same answer; failures of the store itself are not, so a retry can succeed.
    pub async fn mutate<T, F>(
        &self,
        org_id: &str,
        idempotency_key: Option<String>,
        request_sha256: String,
        status: StatusCode,
        f: F,
    ) -> Result<Response, ApiError>
    where
        T: Serialize,
        F: Fn(&mut Tx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.mutate_with(
            org_id,
            WriteOptions::default(),
            idempotency_key,
            request_sha256,
            status,
            f,
        )
        .await
    }

    /// [`AppState::mutate`] with [`WriteOptions`].
    pub async fn mutate_with<T, F>(
        &self,
        org_id: &str,
        options: WriteOptions,
        idempotency_key: Option<String>,
        request_sha256: String,
        status: StatusCode,
        f: F,
    ) -> Result<Response, ApiError>
    where
        T: Serialize,
        F: Fn(&mut Tx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let WriteOptions { accounts, redact } = options;
        let org_id = org_id.to_owned();
        let request_id = current_request_id();
        let now = now_ms();
        let outcome = self
            .store
            .writer()
            .submit_with_accounts(accounts, move |tx| {
                let key = Key {
                    org_id: &org_id,
                    key: idempotency_key.as_deref(),
                    request_sha256: &request_sha256,
                };
                tx.once(&key, now, &f, |result| match result {
                    Ok(value) => {
                        let failed = |e: serde_json::Error| {
                            StoreError::Database(format!("encode response: {e}"))
                        };
                        // Straight to text, unless a secret must be cut out of the stored copy.
                        let (body, stored_body) = match redact {
                            None => (serde_json::to_string(&value).map_err(failed)?, None),
                            Some(redact) => {
                                let mut json = serde_json::to_value(&value).map_err(failed)?;
                                let fresh = serde_json::to_string(&json).map_err(failed)?;
                                redact(&mut json);
                                (fresh, Some(serde_json::to_string(&json).map_err(failed)?))
                            }
                        };
                        Ok(Encoded {
                            status: status.as_u16(),
                            body,
                            stored_body,
                        })
                    }
                    Err(refusal) => {
                        let err = ApiError::from(refusal);
                        let mut body = err.body();
                        body.request_id = request_id.clone();
                        let body = serde_json::to_string(&body)
                            .map_err(|e| StoreError::Database(format!("encode error: {e}")))?;
                        Ok(Encoded {
                            status: err.code.http_status(),
                            body,
                            stored_body: None,
                        })
                    }
                })
            })
            .await
            .map_err(ApiError::from)?;
        match outcome {
            Once::KeyReused => Err(ApiError::field(
                ErrorCode::IdempotencyKeyReused,
                "Idempotency-Key",
                "this idempotency key was used with a different request",
            )),
            Once::Answer(stored) => {
                let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
                let mut response = (status, stored.body).into_response();
                response.headers_mut().insert(
                    axum::http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                Ok(response)
            }
        }
    }
}

async fn request_id_layer(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(suanli_api::REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| suanli_store::ops::new_id("req"));
    let mut response = REQUEST_ID.scope(id.clone(), next.run(req)).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        response
            .headers_mut()
            .insert(suanli_api::REQUEST_ID_HEADER, v);
    }
    response
}

/// A request body that notes when it was read to its end (see [`close_unread_bodies`]).
struct TrackedBody {
    inner: axum::body::Body,
    read_to_end: Arc<std::sync::atomic::AtomicBool>,
}

impl http_body::Body for TrackedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        if let std::task::Poll::Ready(None) = polled {
            this.read_to_end
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A request refused before its body was read (401, 415, 413, an unknown route) leaves the
/// body's bytes on the connection, so the server cannot read the next request from it and
/// closes it after answering. It says so with `Connection: close`: a keep-alive client then
/// opens a new connection for its next request instead of failing on a closed one. A body read
/// to its end keeps the connection.
async fn close_unread_bodies(req: Request, next: Next) -> Response {
    use http_body::Body as _;
    let (parts, body) = req.into_parts();
    if body.is_end_stream() {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let read_to_end = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let body = axum::body::Body::new(TrackedBody {
        inner: body,
        read_to_end: read_to_end.clone(),
    });
    let mut response = next.run(Request::from_parts(parts, body)).await;
    if !read_to_end.load(std::sync::atomic::Ordering::Relaxed) {
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            HeaderValue::from_static("close"),
        );
    }
    response
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    routes::router()
        .fallback(|| async {
            ApiError::new(
                ErrorCode::RouteNotFound,
                "no such route; see /api/v1/openapi.json",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                "this route does not take this method",
            )
        })
        .layer(DefaultBodyLimit::max(1024 * 1024))
        .layer(axum::middleware::from_fn(request_id_layer))
        .layer(axum::middleware::from_fn(close_unread_bodies))
        .with_state(state)
}

/// The operator org created on first start, with its admin token secret (shown once).
pub struct Bootstrap {
    pub operator: OrgRow,
    pub token_secret: Option<String>,
}

/// Opens the store, makes sure the registry and an operator exist, and starts the background
/// services. Returns the state for [`router`].
pub async fn start(config: ServerConfig) -> anyhow::Result<(AppState, Bootstrap)> {
    let location = config.database.clone();
    let writer_config = config.writer;
    let store = tokio::task::spawn_blocking(move || Store::open(location, writer_config)).await??;
    let objects = suanli_objects::Objects::open(&config.objects)?;
    let state = AppState {
        objects,
        upload_locks: Arc::default(),
        store: Arc::new(store),
        config: Arc::new(config),
        work: Arc::new(tokio::sync::Notify::new()),
        logs: Arc::new(tokio::sync::Notify::new()),
        metrics: Arc::new(Metrics::default()),
        started_ms: now_ms(),
        callers: Arc::new(auth::CallerCache::default()),
    };
    let models: Vec<(String, String, u32)> = suanli_core::resource::default_accelerator_models()
        .into_iter()
        .map(|m| (m.name, m.vendor, m.memory_gib))
        .collect();
    let zone = state
        .config
        .zones
        .first()
        .map(|z| z.id.clone())
        .unwrap_or_else(|| "default".into());
    let now = now_ms();
    let (operator, token_secret) = state
        .store
        .writer()
        .submit(move |tx| {
            tx.seed_accelerator_models(&models)?;
            if let Some(id) = tx.operator_org_id()? {
                return Ok((tx.get_org(&id)?, None));
            }
            let org = OrgRow {
                id: suanli_store::ops::new_id("org"),
                name: "Suanli Operator".into(),
                kind: suanli_core::decide::OrgKind::Operator,
                consumer_type: None,
                zone: zone.clone(),
                origin_region: "local".into(),
                created_ms: now,
                name_unique: true,
            };
            let admin = tx.create_org(&org, "operator-admin", None)?;
            let secret = auth::new_secret();
            tx.create_token(
                &org.id,
                &admin.id,
                "bootstrap",
                &auth::secret_sha256(&secret),
                now,
                now + routes::MAX_TOKEN_LIFETIME_MS,
            )?;
            Ok((org, Some(secret)))
        })
        .await?;
    tokio::spawn(expiry_service(state.clone()));
    tokio::spawn(routes::agents::monitor_service(state.clone()));
    tokio::spawn(routes::data::expire_requests(state.clone()));
    Ok((
        state,
        Bootstrap {
            operator,
            token_secret,
        },
    ))
}

/// Serves `state` on `addr` until the process ends. Returns the bound address via `on_bound`.
pub async fn serve(
    state: AppState,
    addr: SocketAddr,
    on_bound: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    on_bound(listener.local_addr()?);
    axum::serve(listener, router(state)).await?;
    Ok(())
}

/// Serves `state` on an already bound listener until the process ends.
pub async fn serve_on(listener: tokio::net::TcpListener, state: AppState) -> std::io::Result<()> {
    axum::serve(listener, router(state)).await
}

/// Ends leases whose duration limit has passed, settling them in full. Runs forever; a lease
/// settled by the consumer in the meantime is skipped (the end is conditional on it being active).
async fn expiry_service(state: AppState) {
    let mut tick = tokio::time::interval(state.config.expiry_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = now_ms();
        let due = match state.read(move |tx| tx.due_leases(now, 256)).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e.message, "expiry: could not list due leases");
                continue;
            }
        };
        for lease_id in due {
            let result = state
                .store
                .writer()
                .submit(move |tx| tx.end_lease(None, &lease_id, EndReason::Expired, now))
                .await;
            match result {
                Ok(l) => {
                    tracing::info!(lease = %l.id, cost_micros = l.cost_micros.unwrap_or(0), "lease expired and settled")
                }
                Err(StoreError::LeaseNotActive(_)) => {}
                Err(e) => tracing::warn!(error = %e, "expiry: could not settle a lease"),
            }
        }
    }
}
