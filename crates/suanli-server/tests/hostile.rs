//! Issue 16: every hostile input class, sent to every operation of the OpenAPI document that takes
//! a body, an id or a query parameter, on the store under test (SQLite; PostgreSQL when
//! `SUANLI_TEST_DATABASE_URL` names one). Each operation has a valid request in a prepared market
//! (sent last, it must succeed: the hostile variants are refused for what makes them hostile, not
//! for a missing offer). Every hostile variant must be refused with a 4xx, never a 2xx or a 5xx,
//! and the market must look the same after all of them as before.
//!
//! The classes: data after the JSON document, a second document, an array where an object is
//! expected (at every depth), a UTF-8 byte-order mark, NUL in any string, bidi controls and
//! invisible-only text in any string shown to another org, oversized and negative numbers, and
//! hostile path ids and query values (NUL, bidi, invisible, oversized numbers).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{spawn_app_at, App, Org};
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use suanli_api::*;

/// One operation's valid request.
struct Case {
    method: &'static str,
    /// The path with ids filled in.
    path: String,
    /// The ids in `path`, by parameter name, for hostile replacements.
    ids: Vec<(&'static str, String)>,
    token: String,
    body: Option<Value>,
    /// A valid query string for list operations.
    query: Option<String>,
}

/// String fields whose text is the consumer's own and passes through unchanged (a job's script,
/// its environment and its output): NUL is still refused there, bidi and invisible text are not.
fn exempt_from_text_rules(pointer: &str) -> bool {
    pointer.starts_with("/task/run")
        || pointer.starts_with("/task/setup")
        || pointer.starts_with("/task/env/")
        || (pointer.starts_with("/chunks/") && pointer.ends_with("/data"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct Market {
    app: App,
    consumer: Org,
    provider: Org,
    spare: Org,
    key: SigningKey,
    agent_id: String,
    attempt_id: String,
    job_id: String,
    lease_id: String,
    lease_to_end: String,
    lease_to_cancel: String,
    gpu_offer: String,
    offer_to_withdraw: String,
    cpu_pool: String,
    token_to_revoke: String,
    /// A request for access to a data listing, awaiting its owner's answer.
    data_request: String,
    /// The consumer's entitlement to `hostile-data`.
    entitlement: String,
}

async fn post(org: &Org, path: &str, body: Value) -> Value {
    let (s, v) = org
        .client
        .raw(
            suanli_client::Method::POST,
            &format!("/api/v1{path}"),
            Some(body),
            None,
        )
        .await
        .unwrap();
    assert!((200..300).contains(&s), "{path}: {s} {v}");
    v
}

async fn market(location: suanli_store::Location) -> Market {
    let app = spawn_app_at(location, |c| {
        // Nothing may change on its own while the hostile requests run.
        c.suspect_after = Duration::from_secs(3_600);
        c.lost_after = Duration::from_secs(7_200);
    })
    .await;
    let (provider, gpu) = app.gpu_provider("Hostile Test Provider").await;
    let consumer = app.admit("Hostile Test Consumer", OrgKind::Consumer).await;
    let spare = app.admit("Hostile Test Spare", OrgKind::Consumer).await;
    app.fund(&consumer, 10_000).await;
    let key = SigningKey::from_bytes(&[7; 32]);
    let agent = post(
        &provider,
        "/agents",
        json!({"name": "agent-1", "zone": "wuqing-core",
            "public_key_hex": hex(&key.verifying_key().to_bytes()), "backend": "local",
            "isolation": "test", "version": "0.1.0",
            "nodes": [{"name": "node-1", "cpus": 8, "memory_mib": 16384}]}),
    )
    .await;
    let agent_id = agent["id"].as_str().unwrap().to_owned();
    let agent_pool = agent["pool_id"].as_str().unwrap().to_owned();
    let metered = post(
        &provider,
        "/offers",
        json!({"pool_id": agent_pool, "class": "general", "memory_mib_per_unit": 1024,
            "price_micros_per_unit_hour": 3_600_000}),
    )
    .await;
    let cpu_pool = post(
        &provider,
        "/pools",
        json!({"name": "cpus", "zone": "wuqing-core",
            "nodes": [{"name": "cpu-1", "cpus": 64, "memory_mib": 65536}]}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let offer_to_withdraw = post(
        &provider,
        "/offers",
        json!({"pool_id": cpu_pool, "class": "general", "memory_mib_per_unit": 1024,
            "price_micros_per_unit_hour": 36_000}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let buy = |offer: &str, units: u64| json!({"offer_id": offer, "units": units, "duration_limit_s": 3_600});
    let lease_id = post(
        &consumer,
        "/leases",
        buy(metered["id"].as_str().unwrap(), 2),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let lease_to_end = post(&consumer, "/leases", buy(&gpu.id, 1)).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let lease_to_cancel = post(&consumer, "/leases", buy(&gpu.id, 1)).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let job_id = post(
        &consumer,
        &format!("/leases/{lease_id}/jobs"),
        json!({"task": {"name": "train", "run": "echo hi", "outputs": ["out.txt"]}}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let polled = post(
        &provider,
        &format!("/agents/{agent_id}/poll"),
        json!({"wait_ms": 1000}),
    )
    .await;
    let attempt_id = polled["assignments"][0]["attempt_id"]
        .as_str()
        .unwrap()
        .to_owned();
    post(
        &provider,
        &format!("/agents/{agent_id}/attempts/{attempt_id}/events"),
        json!({"state": "running"}),
    )
    .await;
    let token_to_revoke = post(&consumer, "/tokens", json!({"name": "to revoke"})).await["token"]
        ["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (data_request, entitlement) = data_market(&provider, &consumer).await;
    Market {
        data_request,
        entitlement,
        app,
        consumer,
        provider,
        spare,
        key,
        agent_id,
        attempt_id,
        job_id,
        lease_id,
        lease_to_end,
        lease_to_cancel,
        gpu_offer: gpu.id,
        offer_to_withdraw,
        cpu_pool,
        token_to_revoke,
    }
}

/// Uploads `body` as `path` of a draft, in one part.
async fn upload(org: &Org, draft: &str, path: &str, body: &[u8]) {
    let (s, v) = org
        .client
        .raw(
            suanli_client::Method::POST,
            &format!("/api/v1/data/listings/{draft}/files"),
            Some(json!({"path": path, "size": body.len(), "sha256": hex(&Sha256::digest(body))})),
            None,
        )
        .await
        .unwrap();
    assert_eq!(s, 201, "declare {draft}/{path}: {v}");
    if body.is_empty() {
        return;
    }
    let r = reqwest::Client::new()
        .put(format!(
            "{}/api/v1/data/listings/{draft}/files/{path}?offset=0",
            org.client.base_url()
        ))
        .bearer_auth(&org.token)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "upload {draft}/{path}");
}

/// Data products: `hostile-data` (free, granted at once) published as 2026.1 with `out.txt`,
/// which the consumer is entitled to; drafts 2026.2 (`out.txt` declared, awaiting the bytes the
/// valid PUT sends), 2026.3 (`out.txt` declared, for the DELETE) and 2026.4 (complete, for the
/// publish); `hostile-gated` (owner's approval) with the consumer's request pending.
async fn data_market(provider: &Org, consumer: &Org) -> (String, String) {
    let listing = |name: &str, gating: &str| {
        json!({"name": name, "kind": "dataset", "title_zh": "数据", "title_en": "Data",
            "licence": {"spdx": "MIT"}, "access": "download", "gating": gating,
            "price": {"kind": "free"}})
    };
    post(
        provider,
        "/data/listings",
        listing("hostile-data", "automatic"),
    )
    .await;
    post(
        provider,
        "/data/listings",
        listing("hostile-gated", "manual"),
    )
    .await;
    for (name, label) in [
        ("hostile-data", "2026.1"),
        ("hostile-data", "2026.2"),
        ("hostile-data", "2026.3"),
        ("hostile-data", "2026.4"),
        ("hostile-gated", "2026.1"),
    ] {
        post(
            provider,
            &format!("/data/listings/{name}/versions"),
            json!({"version": label}),
        )
        .await;
    }
    upload(
        provider,
        "hostile-data/versions/2026.1",
        "out.txt",
        b"published bytes",
    )
    .await;
    upload(
        provider,
        "hostile-data/versions/2026.4",
        "out.txt",
        b"ready to publish",
    )
    .await;
    upload(
        provider,
        "hostile-gated/versions/2026.1",
        "out.txt",
        b"gated bytes",
    )
    .await;
    // Declared only: the valid PUT sends `"hello"` (its JSON body), the DELETE starts over.
    for (label, body) in [
        ("2026.2", b"\"hello\"".as_slice()),
        ("2026.3", b"never sent".as_slice()),
    ] {
        let (s, v) = provider
            .client
            .raw(
                suanli_client::Method::POST,
                &format!("/api/v1/data/listings/hostile-data/versions/{label}/files"),
                Some(json!({"path": "out.txt", "size": body.len(), "sha256": hex(&Sha256::digest(body))})),
                None,
            )
            .await
            .unwrap();
        assert_eq!(s, 201, "{v}");
    }
    for name in ["hostile-data", "hostile-gated"] {
        post(
            provider,
            &format!("/data/listings/{name}/versions/2026.1/publish"),
            json!({}),
        )
        .await;
    }
    let granted = post(
        consumer,
        "/data/listings/hostile-data/access",
        json!({"version": "2026.1", "accept_licence": true}),
    )
    .await;
    let pending = post(
        consumer,
        "/data/listings/hostile-gated/access",
        json!({"accept_licence": true, "purpose": "research"}),
    )
    .await;
    (
        pending["request"]["id"].as_str().unwrap().to_owned(),
        granted["entitlement"]["id"].as_str().unwrap().to_owned(),
    )
}

/// One operation's valid request: `template` is its OpenAPI path; `ids` fill its id parameters
/// (an output's `{path}` is `out.txt`).
fn route(
    method: &'static str,
    template: &'static str,
    ids: &[(&'static str, &str)],
    token: &str,
    body: Option<Value>,
    query: Option<&str>,
) -> ((&'static str, &'static str), Case) {
    let mut path = template.replace("{path}", "out.txt");
    for (name, id) in ids {
        path = path.replace(&format!("{{{name}}}"), id);
    }
    let key = match method {
        "GET" => "get",
        "PUT" => "put",
        "DELETE" => "delete",
        _ => "post",
    };
    let case = Case {
        method,
        path,
        ids: ids.iter().map(|(n, id)| (*n, (*id).to_owned())).collect(),
        token: token.to_owned(),
        body,
        query: query.map(str::to_owned),
    };
    ((key, template), case)
}

/// Every operation's valid request, in the order their controls run (those that end something
/// last), keyed by (method, OpenAPI path).
fn cases(m: &Market) -> Vec<((&'static str, &'static str), Case)> {
    let (op, c, p) = (
        m.app.operator_token.as_str(),
        m.consumer.token.as_str(),
        m.provider.token.as_str(),
    );
    let (agent, attempt, job, lease) = (
        m.agent_id.as_str(),
        m.attempt_id.as_str(),
        m.job_id.as_str(),
        m.lease_id.as_str(),
    );
    let signed = {
        let message = usage_message(job, attempt, 1, 10, None, None);
        hex(&m.key.sign(message.as_bytes()).to_bytes())
    };
    let new_key = hex(&SigningKey::from_bytes(&[9; 32]).verifying_key().to_bytes());
    let consumer = [("org_id", m.consumer.id.as_str())];
    let two = [("agent_id", agent), ("attempt_id", attempt)];
    let on_job = [("job_id", job)];
    let data = [("name", "hostile-data")];
    let draft2 = [("name", "hostile-data"), ("version", "2026.2")];
    let get = |template, ids: &[(&'static str, &str)], token| {
        route("GET", template, ids, token, None, None)
    };
    let list = |template, token, query| route("GET", template, &[], token, None, Some(query));
    let post = |template, ids: &[(&'static str, &str)], token, body| {
        route("POST", template, ids, token, Some(body), None)
    };
    let end = |template, ids: &[(&'static str, &str)], token| {
        route("POST", template, ids, token, None, None)
    };
    vec![
        post(
            "/api/v1/orgs",
            &[],
            op,
            json!({"name": "Hostile Test New Org", "kind": "consumer",
            "consumer_type": "enterprise", "zone": "wuqing-core", "origin_region": "tianjin",
            "admin_name": "Ada", "admin_email": "ada@example.com"}),
        ),
        get("/api/v1/orgs", &[], op),
        get("/api/v1/orgs/{org_id}", &consumer, op),
        post(
            "/api/v1/orgs/{org_id}/rename",
            &[("org_id", m.spare.id.as_str())],
            op,
            json!({"name": "Hostile Test Renamed"}),
        ),
        post(
            "/api/v1/orgs/{org_id}/deposits",
            &consumer,
            op,
            json!({"amount_micros": 5, "external_ref": "ctl-deposit"}),
        ),
        post(
            "/api/v1/orgs/{org_id}/withdrawals",
            &consumer,
            op,
            json!({"amount_micros": 5, "external_ref": "ctl-withdrawal", "source": "available"}),
        ),
        get("/api/v1/members", &[], c),
        post(
            "/api/v1/members",
            &[],
            c,
            json!({"name": "Bo", "email": "bo@example.com", "role": "member"}),
        ),
        get("/api/v1/tokens", &[], c),
        post(
            "/api/v1/tokens",
            &[],
            c,
            json!({"name": "ci", "expires_in_s": 3600}),
        ),
        post(
            "/api/v1/accelerator-models",
            &[],
            op,
            json!({"name": "X9-96G", "vendor": "Test Vendor", "memory_gib": 96}),
        ),
        post(
            "/api/v1/pools",
            &[],
            p,
            json!({"name": "more", "zone": "wuqing-core",
            "nodes": [{"name": "n-1", "cpus": 4, "memory_mib": 4096}]}),
        ),
        get(
            "/api/v1/pools/{pool_id}",
            &[("pool_id", m.cpu_pool.as_str())],
            p,
        ),
        post(
            "/api/v1/offers",
            &[],
            p,
            json!({"pool_id": m.cpu_pool, "class": "general",
            "memory_mib_per_unit": 512, "price_micros_per_unit_hour": 40_000}),
        ),
        get(
            "/api/v1/offers/{offer_id}",
            &[("offer_id", m.gpu_offer.as_str())],
            c,
        ),
        list(
            "/api/v1/catalog/offers",
            c,
            "category=general&zone=wuqing-core&limit=10",
        ),
        post(
            "/api/v1/quotes",
            &[],
            c,
            json!({"class": "general", "cpus": 1, "zone": "wuqing-core", "duration_limit_s": 60}),
        ),
        post(
            "/api/v1/leases",
            &[],
            c,
            json!({"offer_id": m.gpu_offer, "units": 1, "duration_limit_s": 60}),
        ),
        list("/api/v1/leases", c, "side=consumer&state=active&limit=10"),
        get("/api/v1/leases/{lease_id}", &[("lease_id", lease)], c),
        list("/api/v1/statement", c, "after=0&limit=10"),
        get("/api/v1/agents", &[], p),
        post(
            "/api/v1/agents",
            &[],
            p,
            json!({"name": "agent-2", "zone": "wuqing-core",
            "public_key_hex": new_key, "backend": "local", "isolation": "bubblewrap",
            "version": "0.1.0", "nodes": [{"name": "node-2", "cpus": 2, "memory_mib": 2048}]}),
        ),
        post(
            "/api/v1/agents/{agent_id}/heartbeat",
            &[("agent_id", agent)],
            p,
            json!({"running": [attempt]}),
        ),
        post(
            "/api/v1/agents/{agent_id}/poll",
            &[("agent_id", agent)],
            p,
            json!({"wait_ms": 0, "max": 1}),
        ),
        post(
            "/api/v1/agents/{agent_id}/attempts/{attempt_id}/events",
            &two,
            p,
            json!({"state": "running", "message": "started on node-1", "backend_id": "local-1"}),
        ),
        post(
            "/api/v1/agents/{agent_id}/attempts/{attempt_id}/usage",
            &two,
            p,
            json!({"records": [{"seq": 1, "unit_ms": 10, "signature_hex": signed}]}),
        ),
        post(
            "/api/v1/agents/{agent_id}/attempts/{attempt_id}/logs",
            &two,
            p,
            json!({"chunks": [{"seq": 1, "stream": "stdout", "data": "hi\n"}]}),
        ),
        post(
            "/api/v1/agents/{agent_id}/attempts/{attempt_id}/outputs",
            &two,
            p,
            json!({"files": [{"path": "out.txt", "content_base64": "aGkK"}]}),
        ),
        route(
            "GET",
            "/api/v1/jobs",
            &[],
            c,
            None,
            Some(&format!("lease_id={lease}&state=running&limit=10")),
        ),
        get("/api/v1/jobs/{job_id}", &on_job, c),
        route(
            "GET",
            "/api/v1/jobs/{job_id}/logs",
            &on_job,
            c,
            None,
            Some("after=0&limit=10"),
        ),
        get("/api/v1/jobs/{job_id}/outputs", &on_job, c),
        get("/api/v1/jobs/{job_id}/outputs/{path}", &on_job, c),
        post(
            "/api/v1/leases/{lease_id}/jobs",
            &[("lease_id", lease)],
            c,
            json!({"task": {"name": "second", "run": "echo again", "env": {"SEED": "1"},
                "outputs": ["result.txt"], "time_limit_s": 60}}),
        ),
        // Data products (see `data_market`).
        post(
            "/api/v1/orgs/{org_id}/data-provider",
            &[("org_id", m.spare.id.as_str())],
            op,
            json!({"admitted": true}),
        ),
        post(
            "/api/v1/data/listings",
            &[],
            p,
            json!({"name": "hostile-new", "kind": "dataset", "title_zh": "新数据",
                "title_en": "New data", "description_zh": "描述", "description_en": "About it",
                "tags": ["交通"], "card": "# Card", "licence": {"spdx": "CC-BY-4.0"},
                "access": "download", "gating": "automatic",
                "price": {"kind": "per_period", "price_micros": 1_000_000, "period_days": 30}}),
        ),
        list("/api/v1/data/listings", c, "kind=dataset&after=aa&limit=10"),
        get("/api/v1/data/listings/{name}", &data, c),
        get("/api/v1/data/listings/{name}/versions", &data, c),
        post(
            "/api/v1/data/listings/{name}/versions",
            &data,
            p,
            json!({"version": "2026.9"}),
        ),
        get(
            "/api/v1/data/listings/{name}/versions/{version}/files",
            &[("name", "hostile-data"), ("version", "2026.1")],
            c,
        ),
        post(
            "/api/v1/data/listings/{name}/versions/{version}/files",
            &draft2,
            p,
            json!({"path": "more/new.txt", "size": 5,
                "sha256": "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"}),
        ),
        route(
            "PUT",
            "/api/v1/data/listings/{name}/versions/{version}/files/{path}",
            &draft2,
            p,
            // The part's bytes are this JSON text: `"hello"`, as declared.
            Some(json!("hello")),
            Some("offset=0"),
        ),
        route(
            "DELETE",
            "/api/v1/data/listings/{name}/versions/{version}/files/{path}",
            &[("name", "hostile-data"), ("version", "2026.3")],
            p,
            None,
            None,
        ),
        get(
            "/api/v1/data/listings/{name}/versions/{version}/files/{path}",
            &[("name", "hostile-data"), ("version", "2026.1")],
            c,
        ),
        post(
            "/api/v1/data/listings/{name}/access",
            &data,
            m.spare.token.as_str(),
            json!({"version": "2026.1", "accept_licence": true, "purpose": "research"}),
        ),
        list("/api/v1/data/requests", p, "state=pending&limit=10"),
        list("/api/v1/data/entitlements", c, "listing=hostile-data"),
        end(
            "/api/v1/data/listings/{name}/versions/{version}/publish",
            &[("name", "hostile-data"), ("version", "2026.4")],
            p,
        ),
        end(
            "/api/v1/data/requests/{request_id}/{action}",
            &[("request_id", m.data_request.as_str()), ("action", "deny")],
            p,
        ),
        end(
            "/api/v1/data/entitlements/{entitlement_id}/revoke",
            &[("entitlement_id", m.entitlement.as_str())],
            p,
        ),
        end(
            "/api/v1/data/listings/{name}/versions/{version}/deprecate",
            &[("name", "hostile-data"), ("version", "2026.1")],
            p,
        ),
        end("/api/v1/jobs/{job_id}/cancel", &on_job, c),
        end(
            "/api/v1/tokens/{token_id}/revoke",
            &[("token_id", m.token_to_revoke.as_str())],
            c,
        ),
        end(
            "/api/v1/offers/{offer_id}/withdraw",
            &[("offer_id", m.offer_to_withdraw.as_str())],
            p,
        ),
        end(
            "/api/v1/leases/{lease_id}/end",
            &[("lease_id", m.lease_to_end.as_str())],
            c,
        ),
        end(
            "/api/v1/leases/{lease_id}/cancel",
            &[("lease_id", m.lease_to_cancel.as_str())],
            c,
        ),
    ]
}

/// A hostile request.
struct Hostile {
    what: String,
    path: String,
    body: Option<Vec<u8>>,
}

/// Every string leaf and number leaf of `v`, as JSON pointers.
fn leaves(
    v: &Value,
    at: String,
    strings: &mut Vec<String>,
    numbers: &mut Vec<String>,
    objects: &mut Vec<String>,
) {
    match v {
        Value::String(_) => strings.push(at),
        Value::Number(_) => numbers.push(at),
        Value::Object(map) => {
            objects.push(at.clone());
            for (k, x) in map {
                leaves(x, format!("{at}/{k}"), strings, numbers, objects);
            }
        }
        Value::Array(items) => {
            for (i, x) in items.iter().enumerate() {
                leaves(x, format!("{at}/{i}"), strings, numbers, objects);
            }
        }
        _ => {}
    }
}

/// `body` with the value at `pointer` replaced by raw JSON text.
fn with_raw(body: &Value, pointer: &str, raw: &str) -> Vec<u8> {
    let mut b = body.clone();
    *b.pointer_mut(pointer).unwrap() = Value::String("\u{1}PLACEHOLDER\u{1}".into());
    serde_json::to_string(&b)
        .unwrap()
        .replace("\"\\u0001PLACEHOLDER\\u0001\"", raw)
        .into_bytes()
}

fn hostile_variants(case: &Case) -> Vec<Hostile> {
    let mut out = Vec::new();
    let path = match &case.query {
        Some(q) => format!("{}?{q}", case.path),
        None => case.path.clone(),
    };
    let body_bytes = case.body.as_ref().map(|b| serde_json::to_vec(b).unwrap());
    // Hostile ids in the path.
    for (name, id) in &case.ids {
        for (what, bad) in [
            ("NUL", format!("{id}%00")),
            ("bidi", format!("%E2%80%AE{id}")),
            ("invisible", "%E2%80%8B%E2%81%A0".to_owned()),
            ("oversized", "9".repeat(300)),
        ] {
            out.push(Hostile {
                what: format!("{what} in path {name}"),
                path: path.replacen(id.as_str(), &bad, 1),
                body: body_bytes.clone(),
            });
        }
    }
    // Hostile query values.
    if let Some(q) = &case.query {
        for pair in q.split('&') {
            let (k, v) = pair.split_once('=').unwrap();
            for (what, bad) in [
                ("NUL", format!("{v}%00")),
                ("bidi", format!("%E2%80%AE{v}")),
                ("invisible", "%E2%80%8B".to_owned()),
                // An oversized number for a number, an over-long value for a text.
                ("oversized", "9".repeat(300)),
            ] {
                let bad_q = q.replacen(pair, &format!("{k}={bad}"), 1);
                out.push(Hostile {
                    what: format!("{what} in query {k}"),
                    path: format!("{}?{bad_q}", case.path),
                    body: None,
                });
            }
        }
    }
    let Some(body) = &case.body else {
        return out;
    };
    let text = serde_json::to_string(body).unwrap();
    let mut structural = vec![
        ("trailing garbage", format!("{text} garbage").into_bytes()),
        ("a second document", format!("{text}{text}").into_bytes()),
        ("a second empty object", format!("{text} {{}}").into_bytes()),
        (
            "a byte-order mark",
            [b"\xEF\xBB\xBF".as_slice(), text.as_bytes()].concat(),
        ),
        ("a bare string", b"\"x\"".to_vec()),
    ];
    let (mut strings, mut numbers, mut objects) = (Vec::new(), Vec::new(), Vec::new());
    leaves(
        body,
        String::new(),
        &mut strings,
        &mut numbers,
        &mut objects,
    );
    // Every object, at every depth, as an array of its values (serde's field order).
    for pointer in &objects {
        let values: Vec<Value> = body
            .pointer(pointer)
            .unwrap()
            .as_object()
            .unwrap()
            .values()
            .cloned()
            .collect();
        let raw = serde_json::to_string(&values).unwrap();
        let bytes = if pointer.is_empty() {
            raw.into_bytes()
        } else {
            with_raw(body, pointer, &raw)
        };
        structural.push(("an array for an object", bytes));
    }
    for (what, bytes) in structural {
        out.push(Hostile {
            what: what.to_owned(),
            path: path.clone(),
            body: Some(bytes),
        });
    }
    for pointer in &strings {
        let s = body.pointer(pointer).unwrap().as_str().unwrap();
        let mut bad = vec![("NUL", format!("{s}\u{0}"))];
        if !exempt_from_text_rules(pointer) {
            bad.push(("right-to-left override", format!("\u{202E}{s}")));
            bad.push(("bidi isolate", format!("{s}\u{2067}x\u{2069}")));
            bad.push(("invisible-only text", "\u{200B}\u{200C}\u{2060}".to_owned()));
        }
        for (what, value) in bad {
            let mut b = body.clone();
            *b.pointer_mut(pointer).unwrap() = Value::String(value);
            out.push(Hostile {
                what: format!("{what} in {pointer}"),
                path: path.clone(),
                body: Some(serde_json::to_vec(&b).unwrap()),
            });
        }
    }
    for pointer in &numbers {
        for (what, raw) in [
            ("2^64", "18446744073709551616"),
            ("1e400", "1e400"),
            ("a negative number", "-1"),
            ("a fraction", "1.5"),
        ] {
            out.push(Hostile {
                what: format!("{what} in {pointer}"),
                path: path.clone(),
                body: Some(with_raw(body, pointer, raw)),
            });
        }
    }
    out
}

/// Sends a request as `token`; returns its status and body text.
async fn send(
    http: &reqwest::Client,
    base: &str,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Vec<u8>>,
) -> (u16, String) {
    let mut request = http
        .request(method.parse().unwrap(), format!("{base}{path}"))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// What the market looks like, through every org's eyes.
async fn snapshot(m: &Market) -> String {
    let http = reqwest::Client::new();
    let (op, c, p) = (&m.app.operator_token, &m.consumer.token, &m.provider.token);
    let logs = format!("/api/v1/jobs/{}/logs", m.job_id);
    let outputs = format!("/api/v1/jobs/{}/outputs", m.job_id);
    let reads = [
        (op, "/api/v1/orgs"),
        (op, "/api/v1/ledger/check"),
        (op, "/api/v1/balance"),
        (op, "/api/v1/statement?limit=1000"),
        (op, "/api/v1/accelerator-models"),
        (c, "/api/v1/balance"),
        (c, "/api/v1/statement?limit=1000"),
        (c, "/api/v1/leases?limit=1000"),
        (c, "/api/v1/jobs?limit=1000"),
        (c, "/api/v1/members"),
        (c, "/api/v1/tokens"),
        (c, logs.as_str()),
        (c, outputs.as_str()),
        (p, "/api/v1/pools"),
        (p, "/api/v1/offers"),
        // The agent's last heartbeat time moves only with accepted requests.
        (p, "/api/v1/agents"),
        (p, "/api/v1/leases?side=provider&limit=1000"),
        (&m.spare.token, "/api/v1/me"),
    ];
    let mut seen = String::new();
    for (token, path) in reads {
        let (_, text) = send(&http, &m.app.base, "GET", path, token, None).await;
        seen.push_str(&format!("{path}: {text}\n"));
    }
    seen
}

/// One store's answers to the hostile requests: (operation, what, status, code, field).
type Answers = Vec<(String, String, u16, String, String)>;

/// Runs every hostile variant of every operation against a fresh market on `location`, checks
/// that each is refused with a coded 4xx and changes nothing, and that the valid requests then
/// succeed. Returns the answers.
async fn hostile_run(location: suanli_store::Location) -> Answers {
    let m = market(location).await;
    let cases = cases(&m);
    let by_route: BTreeMap<(&str, &str), &Case> = cases.iter().map(|(k, c)| (*k, c)).collect();
    assert_eq!(by_route.len(), cases.len(), "a route has two cases");

    // Every operation of the OpenAPI document with a body, a path id or a query parameter has a
    // case: a new route cannot escape this test.
    let doc: Value = reqwest::get(format!("{}/api/v1/openapi.json", m.app.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut missing = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let takes_input = operation.get("requestBody").is_some()
                || operation["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["in"] == "path" || p["in"] == "query"));
            let key = (method.as_str(), path.as_str());
            if takes_input && !by_route.contains_key(&key) {
                missing.insert(format!("{method} {path}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "operations without a hostile case: {missing:?}"
    );

    let before = snapshot(&m).await;
    let http = reqwest::Client::new();
    let mut answers = Answers::new();
    let mut failures = Vec::new();
    for ((_, route), case) in &cases {
        for h in hostile_variants(case) {
            let (status, text) = send(
                &http,
                &m.app.base,
                case.method,
                &h.path,
                &case.token,
                h.body,
            )
            .await;
            let error: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if !(400..500).contains(&status) {
                failures.push(format!(
                    "{} {route} with {}: {status} {text}",
                    case.method, h.what
                ));
            } else if error["code"].as_str().is_none() || error["message"].as_str().is_none() {
                failures.push(format!(
                    "{route} with {}: not a coded error: {text}",
                    h.what
                ));
            }
            answers.push((
                format!("{} {route}", case.method),
                h.what,
                status,
                error["code"].as_str().unwrap_or_default().to_owned(),
                error["field"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} hostile requests were not refused with a coded 4xx:\n{}",
        failures.len(),
        answers.len(),
        failures.join("\n")
    );
    assert!(
        answers.len() > 500,
        "only {} hostile requests",
        answers.len()
    );
    let after = snapshot(&m).await;
    assert_eq!(before, after, "a refused request changed the market");

    // The valid requests succeed: the hostile ones were refused for what made them hostile.
    for ((_, route), case) in &cases {
        let path = match &case.query {
            Some(q) => format!("{}?{q}", case.path),
            None => case.path.clone(),
        };
        let body = case.body.as_ref().map(|b| serde_json::to_vec(b).unwrap());
        let (status, text) = send(&http, &m.app.base, case.method, &path, &case.token, body).await;
        assert!(
            (200..300).contains(&status),
            "the valid request to {} {route} failed: {status} {text}",
            case.method
        );
    }
    m.app.ledger_ok().await;
    answers
}

/// On SQLite, and on PostgreSQL too when `SUANLI_TEST_DATABASE_URL` names one: then both stores
/// must give every hostile request the same answer (status, code and field).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_input_is_refused_by_every_operation_and_changes_nothing() {
    let on_sqlite = hostile_run(common::sqlite_location()).await;
    if std::env::var("SUANLI_TEST_DATABASE_URL").is_ok_and(|u| !u.is_empty()) {
        let on_postgres = hostile_run(common::fresh_location()).await;
        assert_eq!(on_sqlite.len(), on_postgres.len());
        let differ: Vec<String> = on_sqlite
            .iter()
            .zip(&on_postgres)
            .filter(|(a, b)| a != b)
            .map(|(a, b)| format!("SQLite {a:?} / PostgreSQL {b:?}"))
            .collect();
        assert!(
            differ.is_empty(),
            "the stores answer differently:\n{}",
            differ.join("\n")
        );
    }
}

/// Reads one HTTP/1.1 response from `stream`: its status, its headers (lower case) and its body.
/// `None` when the server closed the connection before answering.
async fn read_response(
    stream: &mut tokio::net::TcpStream,
) -> Option<(u16, Vec<(String, String)>, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("the server answers within 5 s")
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((status, headers, body))
}

/// Issue 16: a request refused before its body was read (401, 415, an unknown route) left the
/// body on a connection the server then closed without saying so, and a keep-alive client's next
/// request on it failed ("Remote end closed connection without response"). The server says
/// `Connection: close` then; otherwise the connection must serve the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_with_a_body_does_not_break_a_keep_alive_client() {
    use tokio::io::AsyncWriteExt;
    let app = common::spawn_app().await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let body = r#"{"offer_id": "offer_1", "units": 1, "duration_limit_s": 60}"#;
    let token = &app.operator_token;
    let refused = [
        (
            "no token (401)",
            "POST /api/v1/leases".to_owned(),
            "application/json",
            String::new(),
            401,
        ),
        (
            "a wrong content type (415)",
            "POST /api/v1/quotes".to_owned(),
            "text/plain",
            format!("Authorization: Bearer {token}\r\n"),
            415,
        ),
        (
            "an unknown route (404)",
            "POST /api/v1/nowhere".to_owned(),
            "application/json",
            format!("Authorization: Bearer {token}\r\n"),
            404,
        ),
        (
            "a body that is not JSON (400, read)",
            "POST /api/v1/quotes".to_owned(),
            "application/json",
            format!("Authorization: Bearer {token}\r\n"),
            400,
        ),
    ];
    // A large body, of which the client has sent only the start when the answer comes (as a
    // client uploading it would): the server cannot drain the rest at once.
    let large = format!(
        "{{\"offer_id\": \"offer_1\", \"units\": 1, \"duration_limit_s\": 60, \"pad\": \"{}\"}}",
        "x".repeat(256 * 1024)
    );
    for (what, line, content_type, auth, expected) in refused {
        let read_first = expected == 400;
        let sent_body = if read_first {
            "{not json"
        } else {
            large.as_str()
        };
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "{line} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: {content_type}\r\n\
             Content-Length: {}\r\n\r\n",
            sent_body.len()
        );
        let split = if read_first { sent_body.len() } else { 1024 };
        stream.write_all(head.as_bytes()).await.unwrap();
        stream
            .write_all(&sent_body.as_bytes()[..split])
            .await
            .unwrap();
        let (status, headers, _) = read_response(&mut stream).await.expect(what);
        assert_eq!(status, expected, "{what}");
        let closes = headers
            .iter()
            .any(|(k, v)| k == "connection" && v.contains("close"));
        if read_first {
            assert!(
                !closes,
                "{what}: a body read to its end keeps the connection"
            );
        }
        let next = format!("GET /api/v1/health HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        if closes {
            // Said so: the client opens a new connection for its next request.
            let mut fresh = tokio::net::TcpStream::connect(&addr).await.unwrap();
            fresh.write_all(next.as_bytes()).await.unwrap();
            assert_eq!(
                read_response(&mut fresh).await.map(|r| r.0),
                Some(200),
                "{what}"
            );
        } else {
            // Not said: the client finishes its request and sends the next on this connection,
            // which must serve it.
            let rest = &sent_body.as_bytes()[split..];
            let sent = async {
                stream.write_all(rest).await?;
                stream.write_all(next.as_bytes()).await
            }
            .await;
            let answer = match sent {
                Ok(()) => read_response(&mut stream).await.map(|r| r.0),
                Err(_) => None,
            };
            assert_eq!(
                answer,
                Some(200),
                "{what}: the connection was closed without Connection: close"
            );
        }
    }
    // A pooling client (as python-requests is) gets every answer.
    let http = reqwest::Client::new();
    for _ in 0..3 {
        let s = http
            .post(format!("{}/api/v1/leases", app.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(s, 401);
        let s = http
            .post(format!("{}/api/v1/quotes", app.base))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(r#"{"cpus": 1, "duration_limit_s": 60}"#)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(s, 200);
    }
}
