//! A typed async client of Suanli's HTTP API (`/api/v1`), shared by the CLI and the tests.
//!
//! Layout: [`Client`] holds the server's base URL (e.g. `http://127.0.0.1:8080`), an optional bearer
//! token and a `reqwest` client; it has one method per endpoint, named after what it does
//! (`list_*`, `get_*`, `create_*`, verbs for the rest), taking and returning the wire types of
//! [`suanli_api`]. Every POST takes an `idempotency_key`, sent as the `Idempotency-Key` header when
//! given. Two private helpers do the work: `request` builds a request (URL, auth, key, body) and
//! `execute` sends it and turns the answer into a value or a [`ClientError`]. Ids that go into paths
//! are typed ([`IdRef`]: a [`suanli_api::LeaseId`] where a lease is named, or text) and
//! percent-encoded by [`path_segment`]. [`Client::raw`] sends arbitrary JSON and returns the
//! status and body undecoded, for tests of the API's edges. Data products' routes, whose files
//! stream as bytes, are in [`data`].

pub mod data;

use std::fmt;

use serde::de::DeserializeOwned;
use serde::Serialize;
use suanli_api::{
    AcceleratorModel, Agent, ApiToken, AttemptEvent, Balance, CatalogParams,
    CreateAcceleratorModelRequest, CreateJobRequest, CreateMemberRequest, CreateOfferRequest,
    CreateOrgRequest, CreateOrgResponse, CreatePoolRequest, CreateTokenRequest, CreatedToken,
    DepositRequest, ErrorBody, Health, HeartbeatRequest, HeartbeatResponse, Job, JobListParams,
    Lease, LeaseListParams, LedgerCheck, List, LogBatch, LogPage, LogParams, Me, Member, Offer,
    Org, PageParams, PollRequest, PollResponse, Pool, PurchaseRequest, QuoteRequest, QuoteResponse,
    RegisterAgentRequest, RenameOrgRequest, Statement, Transfer, UsageAck, UsageBatch,
    WithdrawalRequest, Zone, API_PREFIX, IDEMPOTENCY_KEY_HEADER,
};
use suanli_api::{AgentId, AttemptId, Id, JobId, LeaseId, OfferId, OrgId, PoolId, TokenId};

pub use data::{
    read_exactly, AccessRequestQuery, Download, EntitlementQuery, ListingQuery, RequestAnswer,
};
/// HTTP methods, for [`Client::raw`].
pub use reqwest::Method;

/// How long [`Client::new`]'s client waits for a TCP connection.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The exchange answered with an error body.
    #[error("{}", ApiErrorDisplay(.body))]
    Api { status: u16, body: ErrorBody },
    /// The request was not sent or no answer came back.
    #[error("{0}")]
    Transport(String),
    /// An answer came back that is not what the API promises.
    #[error("unexpected response: {0}")]
    Decode(String),
}

impl ClientError {
    /// The stable error code of an API error.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { body, .. } => Some(&body.code),
            _ => None,
        }
    }

    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// `code: message (field: x)`.
struct ApiErrorDisplay<'a>(&'a ErrorBody);

impl fmt::Display for ApiErrorDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.0.code, self.0.message)?;
        if let Some(field) = &self.0.field {
            write!(f, " (field: {field})")?;
        }
        Ok(())
    }
}

/// Percent-encodes one path segment: every byte outside `[A-Za-z0-9._-]` becomes `%XX`. Refuses the
/// empty segment and the dot segments `.` and `..`, which URL parsing would collapse.
pub fn path_segment(id: &str) -> Result<String, ClientError> {
    if id.is_empty() || id == "." || id == ".." {
        return Err(ClientError::Transport(format!(
            "request not sent: {id:?} is not a valid id"
        )));
    }
    let mut out = String::with_capacity(id.len());
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    Ok(out)
}

/// An id of kind `T` as a method names it in a path: the typed id ([`LeaseId`] for a lease), or
/// text, sent as it is for the exchange to check (an id read from a file, a test's missing id).
///
/// ```no_run
/// # async fn f(client: suanli_client::Client, lease: suanli_api::LeaseId) -> Result<(), suanli_client::ClientError> {
/// client.get_lease(&lease).await?;
/// client.get_lease("lease_0190a5b2c3d4e5f60718293a4b5").await?;
/// # Ok(()) }
/// ```
///
/// A typed id of another kind does not compile:
///
/// ```compile_fail
/// # async fn f(client: suanli_client::Client, job: suanli_api::JobId) {
/// client.get_lease(&job).await;
/// # }
/// ```
pub trait IdRef<T> {
    fn id_str(&self) -> &str;
}

impl<T: Id> IdRef<T> for str {
    fn id_str(&self) -> &str {
        self
    }
}

impl<T: Id> IdRef<T> for String {
    fn id_str(&self) -> &str {
        self
    }
}

macro_rules! typed_id_refs {
    ($($ty:ty),*) => {
        $(impl IdRef<$ty> for $ty {
            fn id_str(&self) -> &str {
                self.as_str()
            }
        })*
    };
}

typed_id_refs!(OrgId, TokenId, PoolId, OfferId, LeaseId, JobId, AgentId, AttemptId);

/// Describes a `reqwest` error with its causes, e.g. `error sending request …: connection refused`.
fn describe(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `/agents/{agent}/attempts/{attempt}/{leaf}`, both ids percent-encoded.
fn attempt_path(agent_id: &str, attempt_id: &str, leaf: &str) -> Result<String, ClientError> {
    Ok(format!(
        "/agents/{}/attempts/{}/{leaf}",
        path_segment(agent_id)?,
        path_segment(attempt_id)?
    ))
}

/// Client of one exchange, acting with one token (or none).
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
    /// Sent as `Suanli-Agent-Generation` by an agent's client (see [`Client::with_agent_generation`]).
    agent_generation: Option<u64>,
}

impl Client {
    /// A client of the exchange at `base_url` (scheme, host and port, e.g. `http://127.0.0.1:8080`;
    /// a trailing `/` is ignored), authenticating with `token` when given.
    ///
    /// The `reqwest` client has a connect timeout ([`CONNECT_TIMEOUT`]) but no overall timeout:
    /// long polls ([`Client::poll`], [`Client::job_logs`] with `wait_ms`) legitimately last up to
    /// their wait plus the server's latency.
    pub fn new(base_url: impl Into<String>, token: Option<String>) -> Client {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Client::with_http(base_url, token, http)
    }

    /// Like [`Client::new`], with a `reqwest` client of the caller's (timeouts, pools). An overall
    /// timeout shorter than a long poll's wait (up to 30 s) makes long polls fail.
    pub fn with_http(
        base_url: impl Into<String>,
        token: Option<String>,
        http: reqwest::Client,
    ) -> Client {
        let mut base = base_url.into();
        while base.ends_with('/') {
            base.pop();
        }
        Client {
            base,
            token,
            http,
            agent_generation: None,
        }
    }

    /// The same client, saying with every request which registration of an agent it speaks
    /// for: the exchange refuses the reports of an older one (`agent_superseded`).
    pub fn with_agent_generation(&self, generation: u64) -> Client {
        Client {
            agent_generation: Some(generation),
            ..self.clone()
        }
    }

    /// The same exchange, acting with another token.
    pub fn with_token(&self, token: Option<String>) -> Client {
        Client {
            base: self.base.clone(),
            token,
            http: self.http.clone(),
            agent_generation: self.agent_generation,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Builds a request to `path` under the API prefix, with the token and the idempotency key.
    fn request<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        idempotency_key: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let url = format!("{}{API_PREFIX}{path}", self.base);
        let mut builder = self.http.request(method, url);
        if let Some(token) = &self.token {
            builder = builder.bearer_auth(token);
        }
        if let Some(key) = idempotency_key {
            builder = builder.header(IDEMPOTENCY_KEY_HEADER, key);
        }
        if let Some(g) = self.agent_generation {
            builder = builder.header(suanli_api::AGENT_GENERATION_HEADER, g);
        }
        match body {
            Some(value) => builder.json(value),
            None => builder,
        }
    }

    /// Sends a request and decodes a 2xx answer as `T`, any other as an [`ErrorBody`].
    async fn execute<T: DeserializeOwned>(
        &self,
        builder: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let response = builder
            .send()
            .await
            .map_err(|e| ClientError::Transport(describe(&e)))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ClientError::Transport(describe(&e)))?;
        if status.is_success() {
            serde_json::from_slice(&bytes).map_err(|e| {
                ClientError::Decode(format!(
                    "HTTP {}: {e}: {}",
                    status.as_u16(),
                    String::from_utf8_lossy(&bytes)
                ))
            })
        } else {
            match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(body) => Err(ClientError::Api {
                    status: status.as_u16(),
                    body,
                }),
                Err(_) => Err(ClientError::Decode(format!(
                    "HTTP {}: {}",
                    status.as_u16(),
                    String::from_utf8_lossy(&bytes)
                ))),
            }
        }
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.execute(self.request::<()>(Method::GET, path, None, None))
            .await
    }

    async fn get_query<T: DeserializeOwned, Q: Serialize>(
        &self,
        path: &str,
        query: &Q,
    ) -> Result<T, ClientError> {
        self.execute(
            self.request::<()>(Method::GET, path, None, None)
                .query(query),
        )
        .await
    }

    async fn post<T: DeserializeOwned, B: Serialize>(
        &self,
        path: &str,
        body: &B,
        idempotency_key: Option<&str>,
    ) -> Result<T, ClientError> {
        self.execute(self.request(Method::POST, path, Some(body), idempotency_key))
            .await
    }

    /// A POST without a body (end, cancel, revoke, withdraw).
    async fn post_empty<T: DeserializeOwned>(
        &self,
        path: &str,
        idempotency_key: Option<&str>,
    ) -> Result<T, ClientError> {
        self.execute(self.request::<()>(Method::POST, path, None, idempotency_key))
            .await
    }

    /// Sends `body` (if any) to `path` and returns the status and the body as JSON, whatever the
    /// status. `path` is taken from the server's root, so it includes the API prefix (e.g.
    /// `/api/v1/orgs`). An empty body is `null`; a body that is not JSON is returned as a string.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        idempotency_key: Option<&str>,
    ) -> Result<(u16, serde_json::Value), ClientError> {
        let mut builder = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            builder = builder.bearer_auth(token);
        }
        if let Some(key) = idempotency_key {
            builder = builder.header(IDEMPOTENCY_KEY_HEADER, key);
        }
        if let Some(body) = &body {
            builder = builder.json(body);
        }
        let response = builder
            .send()
            .await
            .map_err(|e| ClientError::Transport(describe(&e)))?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ClientError::Transport(describe(&e)))?;
        if bytes.is_empty() {
            return Ok((status, serde_json::Value::Null));
        }
        let value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
        });
        Ok((status, value))
    }

    // --- the exchange -------------------------------------------------------------------------

    /// `GET /health`, without authentication.
    pub async fn health(&self) -> Result<Health, ClientError> {
        self.execute(
            self.with_token(None)
                .request::<()>(Method::GET, "/health", None, None),
        )
        .await
    }

    /// `GET /me`: the caller's org and token.
    pub async fn me(&self) -> Result<Me, ClientError> {
        self.get("/me").await
    }

    /// `GET /zones`.
    pub async fn list_zones(&self) -> Result<List<Zone>, ClientError> {
        self.get("/zones").await
    }

    /// `GET /accelerator-models`.
    pub async fn list_accelerator_models(&self) -> Result<List<AcceleratorModel>, ClientError> {
        self.get("/accelerator-models").await
    }

    /// `POST /accelerator-models` (operator).
    pub async fn create_accelerator_model(
        &self,
        request: &CreateAcceleratorModelRequest,
        idempotency_key: Option<&str>,
    ) -> Result<AcceleratorModel, ClientError> {
        self.post("/accelerator-models", request, idempotency_key)
            .await
    }

    // --- orgs and money (operator) ------------------------------------------------------------

    /// `POST /orgs`: a new org, its first admin and that admin's token.
    pub async fn create_org(
        &self,
        request: &CreateOrgRequest,
        idempotency_key: Option<&str>,
    ) -> Result<CreateOrgResponse, ClientError> {
        self.post("/orgs", request, idempotency_key).await
    }

    /// `GET /orgs`.
    pub async fn list_orgs(&self) -> Result<List<Org>, ClientError> {
        self.get("/orgs").await
    }

    /// `GET /orgs/{id}`.
    pub async fn get_org(&self, org_id: &(impl IdRef<OrgId> + ?Sized)) -> Result<Org, ClientError> {
        self.get(&format!("/orgs/{}", path_segment(org_id.id_str())?))
            .await
    }

    /// `POST /orgs/{id}/rename` (operator): a new, unique name for an org.
    pub async fn rename_org(
        &self,
        org_id: &(impl IdRef<OrgId> + ?Sized),
        request: &RenameOrgRequest,
        idempotency_key: Option<&str>,
    ) -> Result<Org, ClientError> {
        let path = format!("/orgs/{}/rename", path_segment(org_id.id_str())?);
        self.post(&path, request, idempotency_key).await
    }

    /// `POST /orgs/{id}/deposits`: money paid in from outside the exchange.
    pub async fn deposit(
        &self,
        org_id: &(impl IdRef<OrgId> + ?Sized),
        request: &DepositRequest,
        idempotency_key: Option<&str>,
    ) -> Result<Transfer, ClientError> {
        let path = format!("/orgs/{}/deposits", path_segment(org_id.id_str())?);
        self.post(&path, request, idempotency_key).await
    }

    /// `POST /orgs/{id}/withdrawals`: money paid out of the exchange.
    pub async fn withdraw(
        &self,
        org_id: &(impl IdRef<OrgId> + ?Sized),
        request: &WithdrawalRequest,
        idempotency_key: Option<&str>,
    ) -> Result<Transfer, ClientError> {
        let path = format!("/orgs/{}/withdrawals", path_segment(org_id.id_str())?);
        self.post(&path, request, idempotency_key).await
    }

    /// `GET /ledger/check`: the ledger's self-check.
    pub async fn ledger_check(&self) -> Result<LedgerCheck, ClientError> {
        self.get("/ledger/check").await
    }

    // --- members and tokens -------------------------------------------------------------------

    /// `GET /members` of the caller's org.
    pub async fn list_members(&self) -> Result<List<Member>, ClientError> {
        self.get("/members").await
    }

    /// `POST /members`.
    pub async fn create_member(
        &self,
        request: &CreateMemberRequest,
        idempotency_key: Option<&str>,
    ) -> Result<Member, ClientError> {
        self.post("/members", request, idempotency_key).await
    }

    /// `GET /tokens` of the caller's org.
    pub async fn list_tokens(&self) -> Result<List<ApiToken>, ClientError> {
        self.get("/tokens").await
    }

    /// `POST /tokens`: a new token and its secret, shown only in this answer.
    pub async fn create_token(
        &self,
        request: &CreateTokenRequest,
        idempotency_key: Option<&str>,
    ) -> Result<CreatedToken, ClientError> {
        self.post("/tokens", request, idempotency_key).await
    }

    /// `POST /tokens/{id}/revoke`.
    pub async fn revoke_token(
        &self,
        token_id: &(impl IdRef<TokenId> + ?Sized),
        idempotency_key: Option<&str>,
    ) -> Result<ApiToken, ClientError> {
        let path = format!("/tokens/{}/revoke", path_segment(token_id.id_str())?);
        self.post_empty(&path, idempotency_key).await
    }

    // --- providers ----------------------------------------------------------------------------

    /// `POST /pools`.
    pub async fn create_pool(
        &self,
        request: &CreatePoolRequest,
        idempotency_key: Option<&str>,
    ) -> Result<Pool, ClientError> {
        self.post("/pools", request, idempotency_key).await
    }

    /// `GET /pools` of the caller's org.
    pub async fn list_pools(&self) -> Result<List<Pool>, ClientError> {
        self.get("/pools").await
    }

    /// `GET /pools/{id}`.
    pub async fn get_pool(
        &self,
        pool_id: &(impl IdRef<PoolId> + ?Sized),
    ) -> Result<Pool, ClientError> {
        self.get(&format!("/pools/{}", path_segment(pool_id.id_str())?))
            .await
    }

    /// `POST /offers`.
    pub async fn create_offer(
        &self,
        request: &CreateOfferRequest,
        idempotency_key: Option<&str>,
    ) -> Result<Offer, ClientError> {
        self.post("/offers", request, idempotency_key).await
    }

    /// `GET /offers` of the caller's org.
    pub async fn list_offers(&self) -> Result<List<Offer>, ClientError> {
        self.get("/offers").await
    }

    /// `GET /offers/{id}`.
    pub async fn get_offer(
        &self,
        offer_id: &(impl IdRef<OfferId> + ?Sized),
    ) -> Result<Offer, ClientError> {
        self.get(&format!("/offers/{}", path_segment(offer_id.id_str())?))
            .await
    }

    /// `POST /offers/{id}/withdraw`.
    pub async fn withdraw_offer(
        &self,
        offer_id: &(impl IdRef<OfferId> + ?Sized),
        idempotency_key: Option<&str>,
    ) -> Result<Offer, ClientError> {
        let path = format!("/offers/{}/withdraw", path_segment(offer_id.id_str())?);
        self.post_empty(&path, idempotency_key).await
    }

    // --- consumers ----------------------------------------------------------------------------

    /// `GET /catalog/offers`: the active offers of every provider.
    pub async fn catalog(&self, params: &CatalogParams) -> Result<List<Offer>, ClientError> {
        self.get_query("/catalog/offers", params).await
    }

    /// `POST /quotes`: the offers that fit a need, ranked, and why the others do not.
    pub async fn quote(
        &self,
        request: &QuoteRequest,
        idempotency_key: Option<&str>,
    ) -> Result<QuoteResponse, ClientError> {
        self.post("/quotes", request, idempotency_key).await
    }

    /// `POST /leases`: buys units of an offer.
    pub async fn purchase(
        &self,
        request: &PurchaseRequest,
        idempotency_key: Option<&str>,
    ) -> Result<Lease, ClientError> {
        self.post("/leases", request, idempotency_key).await
    }

    /// `GET /leases`, bought and sold.
    pub async fn list_leases(&self, params: &LeaseListParams) -> Result<List<Lease>, ClientError> {
        self.get_query("/leases", params).await
    }

    /// `GET /leases/{id}`.
    pub async fn get_lease(
        &self,
        lease_id: &(impl IdRef<LeaseId> + ?Sized),
    ) -> Result<Lease, ClientError> {
        self.get(&format!("/leases/{}", path_segment(lease_id.id_str())?))
            .await
    }

    /// `POST /leases/{id}/end`: ends an active lease and settles it.
    pub async fn end_lease(
        &self,
        lease_id: &(impl IdRef<LeaseId> + ?Sized),
        idempotency_key: Option<&str>,
    ) -> Result<Lease, ClientError> {
        let path = format!("/leases/{}/end", path_segment(lease_id.id_str())?);
        self.post_empty(&path, idempotency_key).await
    }

    /// `POST /leases/{id}/cancel`.
    pub async fn cancel_lease(
        &self,
        lease_id: &(impl IdRef<LeaseId> + ?Sized),
        idempotency_key: Option<&str>,
    ) -> Result<Lease, ClientError> {
        let path = format!("/leases/{}/cancel", path_segment(lease_id.id_str())?);
        self.post_empty(&path, idempotency_key).await
    }

    /// `GET /balance` of the caller's org.
    pub async fn balance(&self) -> Result<Balance, ClientError> {
        self.get("/balance").await
    }

    /// `GET /statement`: the caller's ledger lines, a page at a time.
    pub async fn statement(&self, params: &PageParams) -> Result<Statement, ClientError> {
        self.get_query("/statement", params).await
    }

    // --- jobs ---------------------------------------------------------------------------------

    /// `POST /leases/{id}/jobs`: queues a job on one of the caller's leases.
    pub async fn create_job(
        &self,
        lease_id: &(impl IdRef<LeaseId> + ?Sized),
        request: &CreateJobRequest,
        idempotency_key: Option<&str>,
    ) -> Result<Job, ClientError> {
        let path = format!("/leases/{}/jobs", path_segment(lease_id.id_str())?);
        self.post(&path, request, idempotency_key).await
    }

    /// `GET /jobs`: the caller's jobs, newest first.
    pub async fn list_jobs(&self, params: &JobListParams) -> Result<List<Job>, ClientError> {
        self.get_query("/jobs", params).await
    }

    /// `GET /jobs/{id}`, with its attempts.
    pub async fn get_job(&self, job_id: &(impl IdRef<JobId> + ?Sized)) -> Result<Job, ClientError> {
        self.get(&format!("/jobs/{}", path_segment(job_id.id_str())?))
            .await
    }

    /// `POST /jobs/{id}/cancel`.
    pub async fn cancel_job(
        &self,
        job_id: &(impl IdRef<JobId> + ?Sized),
        idempotency_key: Option<&str>,
    ) -> Result<Job, ClientError> {
        let path = format!("/jobs/{}/cancel", path_segment(job_id.id_str())?);
        self.post_empty(&path, idempotency_key).await
    }

    /// `GET /jobs/{id}/logs`: output after `params.after`; with `wait_ms`, a long poll.
    pub async fn job_logs(
        &self,
        job_id: &(impl IdRef<JobId> + ?Sized),
        params: &LogParams,
    ) -> Result<LogPage, ClientError> {
        let path = format!("/jobs/{}/logs", path_segment(job_id.id_str())?);
        self.get_query(&path, params).await
    }

    // --- agents -------------------------------------------------------------------------------

    /// `POST /agents`: an agent announcing itself and its capacity.
    pub async fn register_agent(
        &self,
        request: &RegisterAgentRequest,
        idempotency_key: Option<&str>,
    ) -> Result<Agent, ClientError> {
        self.post("/agents", request, idempotency_key).await
    }

    /// `GET /agents`: the caller's agents (every agent, for the operator).
    pub async fn list_agents(&self) -> Result<List<Agent>, ClientError> {
        self.get("/agents").await
    }

    /// `POST /agents/{id}/heartbeat`: the attempts running; the answer names those to stop.
    pub async fn heartbeat(
        &self,
        agent_id: &(impl IdRef<AgentId> + ?Sized),
        request: &HeartbeatRequest,
    ) -> Result<HeartbeatResponse, ClientError> {
        let path = format!("/agents/{}/heartbeat", path_segment(agent_id.id_str())?);
        self.post(&path, request, None).await
    }

    /// `POST /agents/{id}/poll`: long-polls for work for up to `request.wait_ms` (at most 30 s);
    /// the call itself may last a few seconds longer.
    pub async fn poll(
        &self,
        agent_id: &(impl IdRef<AgentId> + ?Sized),
        request: &PollRequest,
    ) -> Result<PollResponse, ClientError> {
        let path = format!("/agents/{}/poll", path_segment(agent_id.id_str())?);
        self.post(&path, request, None).await
    }

    /// `POST /agents/{id}/attempts/{attempt}/events`: an attempt's new state.
    pub async fn attempt_event(
        &self,
        agent_id: &(impl IdRef<AgentId> + ?Sized),
        attempt_id: &(impl IdRef<AttemptId> + ?Sized),
        event: &AttemptEvent,
        idempotency_key: Option<&str>,
    ) -> Result<Job, ClientError> {
        let path = attempt_path(agent_id.id_str(), attempt_id.id_str(), "events")?;
        self.post(&path, event, idempotency_key).await
    }

    /// `POST /agents/{id}/attempts/{attempt}/usage`: signed usage records; a record sent again
    /// (same `seq`) is acknowledged but counted once.
    pub async fn usage(
        &self,
        agent_id: &(impl IdRef<AgentId> + ?Sized),
        attempt_id: &(impl IdRef<AttemptId> + ?Sized),
        batch: &UsageBatch,
    ) -> Result<UsageAck, ClientError> {
        let path = attempt_path(agent_id.id_str(), attempt_id.id_str(), "usage")?;
        self.post(&path, batch, None).await
    }

    /// `POST /agents/{id}/attempts/{attempt}/logs`: output of an attempt; chunks sent again
    /// (same `seq`) are ignored. The answer is `{"stored": N}`.
    pub async fn logs(
        &self,
        agent_id: &(impl IdRef<AgentId> + ?Sized),
        attempt_id: &(impl IdRef<AttemptId> + ?Sized),
        batch: &LogBatch,
    ) -> Result<serde_json::Value, ClientError> {
        let path = attempt_path(agent_id.id_str(), attempt_id.id_str(), "logs")?;
        self.post(&path, batch, None).await
    }

    /// `POST /agents/{id}/attempts/{attempt}/outputs`: files a job left in its output paths.
    pub async fn outputs(
        &self,
        agent_id: &(impl IdRef<AgentId> + ?Sized),
        attempt_id: &(impl IdRef<AttemptId> + ?Sized),
        batch: &suanli_api::OutputBatch,
    ) -> Result<serde_json::Value, ClientError> {
        let path = attempt_path(agent_id.id_str(), attempt_id.id_str(), "outputs")?;
        self.post(&path, batch, None).await
    }

    /// `GET /jobs/{id}/outputs`: the files a job left.
    pub async fn list_outputs(
        &self,
        job_id: &(impl IdRef<JobId> + ?Sized),
    ) -> Result<List<suanli_api::OutputFile>, ClientError> {
        self.get(&format!("/jobs/{}/outputs", path_segment(job_id.id_str())?))
            .await
    }

    /// `GET /jobs/{id}/outputs/{path}`: one output file's bytes.
    pub async fn get_output(
        &self,
        job_id: &(impl IdRef<JobId> + ?Sized),
        file: &str,
    ) -> Result<Vec<u8>, ClientError> {
        let segments: Result<Vec<String>, ClientError> =
            file.split('/').map(path_segment).collect();
        let path = format!(
            "/jobs/{}/outputs/{}",
            path_segment(job_id.id_str())?,
            segments?.join("/")
        );
        let response = self
            .request::<()>(Method::GET, &path, None, None)
            .send()
            .await
            .map_err(|e| ClientError::Transport(describe(&e)))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ClientError::Transport(describe(&e)))?;
        if status.is_success() {
            return Ok(bytes.to_vec());
        }
        match serde_json::from_slice::<suanli_api::ErrorBody>(&bytes) {
            Ok(body) => Err(ClientError::Api {
                status: status.as_u16(),
                body,
            }),
            Err(_) => Err(ClientError::Decode(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&bytes)
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(path_segment("org_01H-x.y").unwrap(), "org_01H-x.y");
        assert_eq!(path_segment("a/b c").unwrap(), "a%2Fb%20c");
        assert_eq!(path_segment("?#%").unwrap(), "%3F%23%25");
        assert_eq!(path_segment("é").unwrap(), "%C3%A9");
        for bad in ["", ".", ".."] {
            assert!(
                matches!(path_segment(bad), Err(ClientError::Transport(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn api_errors_display_code_message_and_field() {
        let mut body = ErrorBody {
            code: "invalid_field".into(),
            message: "must be positive".into(),
            field: Some("units".into()),
            request_id: "req_1".into(),
        };
        let err = ClientError::Api {
            status: 400,
            body: body.clone(),
        };
        assert_eq!(
            err.to_string(),
            "invalid_field: must be positive (field: units)"
        );
        assert_eq!(err.code(), Some("invalid_field"));
        assert_eq!(err.status(), Some(400));
        body.field = None;
        let err = ClientError::Api { status: 400, body };
        assert_eq!(err.to_string(), "invalid_field: must be positive");
        assert_eq!(
            ClientError::Decode("x".into()).to_string(),
            "unexpected response: x"
        );
    }

    #[test]
    fn requests_carry_auth_key_body_and_query() {
        let client = Client::new("http://127.0.0.1:8080/", Some("sk_test".into()));
        assert_eq!(client.base_url(), "http://127.0.0.1:8080");

        let quote = QuoteRequest {
            duration_limit_s: 60,
            ..QuoteRequest::default()
        };
        let request = client
            .request(Method::POST, "/quotes", Some(&quote), Some("key-1"))
            .build()
            .unwrap();
        assert_eq!(
            request.url().as_str(),
            "http://127.0.0.1:8080/api/v1/quotes"
        );
        assert_eq!(request.headers()["authorization"], "Bearer sk_test");
        assert_eq!(request.headers()["idempotency-key"], "key-1");
        assert_eq!(request.headers()["content-type"], "application/json");
        let body: QuoteRequest =
            serde_json::from_slice(request.body().and_then(|b| b.as_bytes()).unwrap()).unwrap();
        assert_eq!(body, quote);

        let path = format!("/leases/{}/end", path_segment("l/1").unwrap());
        let request = client
            .request::<()>(Method::POST, &path, None, None)
            .build()
            .unwrap();
        assert_eq!(
            request.url().as_str(),
            "http://127.0.0.1:8080/api/v1/leases/l%2F1/end"
        );
        assert!(request.body().is_none());

        let params = LeaseListParams {
            state: Some("active".into()),
            side: None,
            limit: Some(5),
        };
        let request = client
            .with_token(None)
            .request::<()>(Method::GET, "/leases", None, None)
            .query(&params)
            .build()
            .unwrap();
        assert_eq!(
            request.url().as_str(),
            "http://127.0.0.1:8080/api/v1/leases?state=active&limit=5"
        );
        assert!(request.headers().get("authorization").is_none());
        assert!(request.headers().get("idempotency-key").is_none());
    }

    #[test]
    fn job_and_agent_paths_are_encoded() {
        assert_eq!(
            attempt_path("agt_1", "att/2", "usage").unwrap(),
            "/agents/agt_1/attempts/att%2F2/usage"
        );
        assert!(attempt_path("agt_1", "..", "logs").is_err());
        let client = Client::new("http://127.0.0.1:8080", None);
        let params = LogParams {
            after: Some(42),
            limit: None,
            wait_ms: Some(20_000),
        };
        let request = client
            .request::<()>(Method::GET, "/jobs/job_1/logs", None, None)
            .query(&params)
            .build()
            .unwrap();
        assert_eq!(
            request.url().as_str(),
            "http://127.0.0.1:8080/api/v1/jobs/job_1/logs?after=42&wait_ms=20000"
        );
        assert!(request.timeout().is_none());
    }
}
