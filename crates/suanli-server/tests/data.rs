//! Data products over HTTP against a real server and a real object store (the local backend
//! here; `suanli-objects`' own tests run the S3 backend against a real S3 server): a provider
//! lists a dataset, uploads a version in resumable parts and publishes it; an institute buys it
//! and downloads it in ranges until the owner revokes its access. Runs on SQLite, and on
//! PostgreSQL with `SUANLI_TEST_DATABASE_URL`.

mod common;

use common::{spawn_app, App, Org};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use suanli_api::OrgKind;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct Http {
    base: String,
    http: reqwest::Client,
}

impl Http {
    fn new(app: &App) -> Http {
        Http {
            base: format!("{}/api/v1", app.base),
            http: reqwest::Client::new(),
        }
    }

    async fn call(&self, org: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(org);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn put(&self, org: &str, path: &str, bytes: Vec<u8>) -> (u16, Value) {
        let resp = self
            .http
            .put(format!("{}{path}", self.base))
            .bearer_auth(org)
            .body(bytes)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn get_bytes(
        &self,
        org: &str,
        path: &str,
        range: Option<&str>,
    ) -> (u16, Vec<u8>, reqwest::header::HeaderMap) {
        let mut req = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(org);
        if let Some(r) = range {
            req = req.header("range", r);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (status, resp.bytes().await.unwrap().to_vec(), headers)
    }
}

fn listing(name: &str, price: Value, gating: &str) -> Value {
    json!({
        "name": name,
        "kind": "dataset",
        "title_zh": "北京交通流量数据集",
        "title_en": "Beijing traffic flows",
        "description_zh": "2026 年北京市道路交通流量。",
        "tags": ["交通", "traffic"],
        "card": "# 数据集\n",
        "licence": {"spdx": "CC-BY-4.0"},
        "access": "download",
        "gating": gating,
        "price": price,
    })
}

/// 1 MiB + 100 bytes of reproducible content.
fn content() -> Vec<u8> {
    (0..(1 << 20) + 100)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

async fn publish(h: &Http, p: &Org, name: &str, body: &[u8]) {
    let sha = hex(&Sha256::digest(body));
    let base = format!("/data/listings/{name}/versions");
    assert_eq!(
        h.call(&p.token, "POST", &base, Some(json!({"version": "v1"})))
            .await
            .0,
        201
    );
    let (s, file) = h
        .call(
            &p.token,
            "POST",
            &format!("{base}/v1/files"),
            Some(json!({"path": "data/flows.csv", "size": body.len(), "sha256": sha})),
        )
        .await;
    assert_eq!(s, 201, "{file}");
    let url = format!("{base}/v1/files/data/flows.csv");
    // Two parts: the first a multiple of 64 bytes, the last the rest.
    let cut = 512 * 1024;
    let (s, progress) = h
        .put(&p.token, &format!("{url}?offset=0"), body[..cut].to_vec())
        .await;
    assert_eq!(s, 200, "{progress}");
    assert_eq!(progress["received_bytes"], cut);
    assert_eq!(progress["verified"], false);
    // A part sent again at the old offset is refused and names where to resume.
    let (s, e) = h
        .put(&p.token, &format!("{url}?offset=0"), body[..cut].to_vec())
        .await;
    assert_eq!((s, e["field"].as_str()), (400, Some("offset")), "{e}");
    assert!(
        e["message"].as_str().unwrap().contains(&cut.to_string()),
        "{e}"
    );
    let (s, progress) = h
        .put(
            &p.token,
            &format!("{url}?offset={cut}"),
            body[cut..].to_vec(),
        )
        .await;
    assert_eq!(s, 200, "{progress}");
    assert_eq!(progress["verified"], true, "{progress}");
    let (s, v) = h
        .call(&p.token, "POST", &format!("{base}/v1/publish"), None)
        .await;
    assert_eq!((s, v["state"].as_str()), (200, Some("published")), "{v}");
}

#[tokio::test]
async fn a_dataset_is_published_in_parts_bought_and_downloaded_in_ranges_until_revoked() {
    let app = spawn_app().await;
    let h = Http::new(&app);
    let provider = app.admit("AI Center", OrgKind::Provider).await;
    let institute = app.admit("Institute", OrgKind::Consumer).await;
    app.fund(&institute, 100).await;
    let body = content();

    let (s, l) = h
        .call(
            &provider.token,
            "POST",
            "/data/listings",
            Some(listing(
                "traffic-2026",
                json!({"kind": "per_version", "price_micros": 10_000_000}),
                "automatic",
            )),
        )
        .await;
    assert_eq!(s, 201, "{l}");
    // Before a version is published, the listing is its owner's alone: as missing to others.
    let (s, e) = h
        .call(&institute.token, "GET", "/data/listings/traffic-2026", None)
        .await;
    assert_eq!((s, e["code"].as_str()), (404, Some("not_found")));
    let (_, missing) = h
        .call(
            &institute.token,
            "GET",
            "/data/listings/no-such-listing",
            None,
        )
        .await;
    assert_eq!(
        e["message"], missing["message"],
        "a draft reads exactly as a missing listing"
    );

    publish(&h, &provider, "traffic-2026", &body).await;
    let file = "/data/listings/traffic-2026/versions/v1/files/data/flows.csv";

    // No access yet: the bytes are refused.
    let (s, _, _) = h.get_bytes(&institute.token, file, None).await;
    assert_eq!(s, 403);
    // The licence must be accepted.
    let (s, e) = h
        .call(
            &institute.token,
            "POST",
            "/data/listings/traffic-2026/access",
            Some(json!({"version": "v1"})),
        )
        .await;
    assert_eq!(
        (s, e["field"].as_str()),
        (400, Some("accept_licence")),
        "{e}"
    );
    let (s, outcome) = h
        .call(
            &institute.token,
            "POST",
            "/data/listings/traffic-2026/access",
            Some(json!({"version": "v1", "accept_licence": true})),
        )
        .await;
    assert_eq!(s, 201, "{outcome}");
    assert_eq!(outcome["request"]["state"], "approved");
    let entitlement = outcome["entitlement"]["id"].as_str().unwrap().to_owned();
    // Paid once: 10 CNY from the institute, 9.5 to the provider, 0.5 to the operator.
    let balance = |org: &Org| {
        let c = org.client.clone();
        async move { c.balance().await.unwrap() }
    };
    assert_eq!(balance(&institute).await.available_micros, 90_000_000);
    assert_eq!(balance(&provider).await.earnings_micros, 9_500_000);
    app.ledger_ok().await;
    // The statement names the request each movement pays.
    let request = outcome["request"]["id"].as_str().unwrap();
    let (_, statement) = h.call(&institute.token, "GET", "/statement", None).await;
    let paid: Vec<&Value> = statement["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["access_request_id"] == request)
        .collect();
    assert!(
        paid.iter()
            .any(|l| l["kind"] == "hold" && l["amount_micros"] == 10_000_000),
        "{statement}"
    );

    // Whole, then in ranges across the part boundary; the ETag is the SHA-256.
    let (s, got, headers) = h.get_bytes(&institute.token, file, None).await;
    assert_eq!(s, 200);
    assert!(got == body, "the bytes downloaded are the bytes uploaded");
    assert_eq!(
        headers["etag"],
        format!("\"{}\"", hex(&Sha256::digest(&body))).as_str()
    );
    let cut = 512 * 1024;
    let (s, got, headers) = h
        .get_bytes(
            &institute.token,
            file,
            Some(&format!("bytes={}-{}", cut - 10, cut + 9)),
        )
        .await;
    assert_eq!(s, 206);
    assert_eq!(got, body[cut - 10..cut + 10]);
    assert_eq!(
        headers["content-range"],
        format!("bytes {}-{}/{}", cut - 10, cut + 9, body.len()).as_str()
    );
    let (s, got, _) = h.get_bytes(&institute.token, file, Some("bytes=-7")).await;
    assert_eq!((s, got.as_slice()), (206, &body[body.len() - 7..]));
    let (s, _, _) = h
        .get_bytes(&institute.token, file, Some("bytes=99999999-"))
        .await;
    assert_eq!(s, 400);

    // The owner revokes: the next range is refused.
    let (s, r) = h
        .call(
            &provider.token,
            "POST",
            &format!("/data/entitlements/{entitlement}/revoke"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let (s, _, _) = h.get_bytes(&institute.token, file, Some("bytes=0-9")).await;
    assert_eq!(s, 403);
    app.ledger_ok().await;
}

#[tokio::test]
async fn uploads_that_are_not_what_was_declared_keep_nothing_and_paths_stay_inside() {
    let app = spawn_app().await;
    let h = Http::new(&app);
    let provider = app.admit("AI Center", OrgKind::Provider).await;
    let stranger = app.admit("Other Provider", OrgKind::Provider).await;
    let consumer = app.admit("Enterprise", OrgKind::Consumer).await;
    let (s, e) = h
        .call(
            &consumer.token,
            "POST",
            "/data/listings",
            Some(listing("x-data", json!({"kind": "free"}), "automatic")),
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (403, Some("forbidden")), "{e}");
    // The operator admits the consumer as a data provider: now it may list.
    let (s, _) = h
        .call(
            &app.operator_token,
            "POST",
            &format!("/orgs/{}/data-provider", consumer.id),
            Some(json!({"admitted": true})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, e) = h
        .call(
            &consumer.token,
            "POST",
            "/data/listings",
            Some(listing("x-data", json!({"kind": "free"}), "automatic")),
        )
        .await;
    assert_eq!(s, 201, "{e}");

    assert_eq!(
        h.call(
            &provider.token,
            "POST",
            "/data/listings",
            Some(listing("models-v", json!({"kind": "free"}), "automatic"))
        )
        .await
        .0,
        201
    );
    let base = "/data/listings/models-v/versions";
    assert_eq!(
        h.call(
            &provider.token,
            "POST",
            base,
            Some(json!({"version": "v1"}))
        )
        .await
        .0,
        201
    );
    let files = format!("{base}/v1/files");
    for (path, field) in [
        ("../etc/passwd", "path"),
        ("/abs", "path"),
        ("a\u{0}b", "path"),
        ("a//b", "path"),
    ] {
        let (s, e) = h
            .call(
                &provider.token,
                "POST",
                &files,
                Some(json!({"path": path, "size": 1, "sha256": "a".repeat(64)})),
            )
            .await;
        assert_eq!(
            (s, e["field"].as_str()),
            (400, Some(field)),
            "{path:?}: {e}"
        );
    }
    // An empty file has no byte to send: verified as declared, or refused.
    let empty = hex(&Sha256::digest(b""));
    let (s, f) = h
        .call(
            &provider.token,
            "POST",
            &files,
            Some(json!({"path": "empty.txt", "size": 0, "sha256": empty})),
        )
        .await;
    assert_eq!((s, &f["verified"]), (201, &json!(true)), "{f}");
    let (s, e) = h
        .call(
            &provider.token,
            "POST",
            &files,
            Some(json!({"path": "empty2.txt", "size": 0, "sha256": "a".repeat(64)})),
        )
        .await;
    assert_eq!((s, e["field"].as_str()), (400, Some("sha256")), "{e}");
    let body = b"the declared bytes".to_vec();
    let wrong = hex(&Sha256::digest(b"other bytes of the same length"));
    let (s, _) = h
        .call(
            &provider.token,
            "POST",
            &files,
            Some(json!({"path": "w.txt", "size": body.len(), "sha256": wrong})),
        )
        .await;
    assert_eq!(s, 201);
    // Another org cannot send bytes to this draft: it reads as missing.
    let (s, _) = h
        .put(
            &stranger.token,
            &format!("{files}/w.txt?offset=0"),
            body.clone(),
        )
        .await;
    assert_eq!(s, 404);
    // More bytes than declared.
    let (s, e) = h
        .put(
            &provider.token,
            &format!("{files}/w.txt?offset=0"),
            vec![0; 100],
        )
        .await;
    assert_eq!((s, e["field"].as_str()), (400, Some("body")), "{e}");
    // The right size, the wrong digest: refused, nothing kept, the upload starts over.
    let (s, e) = h
        .put(
            &provider.token,
            &format!("{files}/w.txt?offset=0"),
            body.clone(),
        )
        .await;
    assert_eq!((s, e["field"].as_str()), (400, Some("sha256")), "{e}");
    let (_, listed) = h.call(&provider.token, "GET", &files, None).await;
    let w = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "w.txt")
        .unwrap();
    assert_eq!(
        (&w["received_bytes"], &w["verified"]),
        (&json!(0), &json!(false)),
        "{listed}"
    );
    // Nothing is published until every file is verified.
    let (s, e) = h
        .call(&provider.token, "POST", &format!("{base}/v1/publish"), None)
        .await;
    assert_eq!((s, e["field"].as_str()), (400, Some("files")), "{e}");
    // A bad range of an unknown file, a label that cannot exist: as missing.
    let (s, _) = h
        .call(
            &provider.token,
            "GET",
            "/data/listings/models-v/versions/..bad/files",
            None,
        )
        .await;
    assert_eq!(s, 404);
    app.ledger_ok().await;
}

#[tokio::test]
async fn manual_approval_holds_the_price_until_the_owner_answers() {
    let app = spawn_app().await;
    let h = Http::new(&app);
    let provider = app.admit("AI Center", OrgKind::Provider).await;
    let institute = app.admit("Institute", OrgKind::Consumer).await;
    app.fund(&institute, 50).await;
    let (s, _) = h
        .call(
            &provider.token,
            "POST",
            "/data/listings",
            Some(listing(
                "gated",
                json!({"kind": "per_period", "price_micros": 20_000_000, "period_days": 30}),
                "manual",
            )),
        )
        .await;
    assert_eq!(s, 201);
    publish(&h, &provider, "gated", &content()).await;
    let ask = json!({"accept_licence": true, "purpose": "交通规划研究"});
    let (s, o) = h
        .call(
            &institute.token,
            "POST",
            "/data/listings/gated/access",
            Some(ask.clone()),
        )
        .await;
    assert_eq!(s, 201, "{o}");
    assert_eq!(o["request"]["state"], "pending");
    assert_eq!(o["request"]["held_micros"], 20_000_000);
    let id = o["request"]["id"].as_str().unwrap().to_owned();
    let b = institute.client.balance().await.unwrap();
    assert_eq!(
        (b.available_micros, b.held_micros),
        (30_000_000, 20_000_000)
    );
    // One pending request at a time; the buyer cannot approve its own.
    assert_eq!(
        h.call(
            &institute.token,
            "POST",
            "/data/listings/gated/access",
            Some(ask.clone())
        )
        .await
        .0,
        409
    );
    assert_eq!(
        h.call(
            &institute.token,
            "POST",
            &format!("/data/requests/{id}/approve"),
            None
        )
        .await
        .0,
        403
    );
    // The owner sees it, and denies: the hold is released.
    let (_, list) = h
        .call(&provider.token, "GET", "/data/requests?state=pending", None)
        .await;
    assert_eq!(list["items"][0]["id"], id.as_str());
    let (s, d) = h
        .call(
            &provider.token,
            "POST",
            &format!("/data/requests/{id}/deny"),
            None,
        )
        .await;
    assert_eq!(
        (s, d["request"]["state"].as_str()),
        (200, Some("denied")),
        "{d}"
    );
    let b = institute.client.balance().await.unwrap();
    assert_eq!((b.available_micros, b.held_micros), (50_000_000, 0));
    // Answered once.
    assert_eq!(
        h.call(
            &provider.token,
            "POST",
            &format!("/data/requests/{id}/approve"),
            None
        )
        .await
        .0,
        403
    );
    // Asked again and approved: paid, entitled for 30 days.
    let (_, o) = h
        .call(
            &institute.token,
            "POST",
            "/data/listings/gated/access",
            Some(ask),
        )
        .await;
    let id = o["request"]["id"].as_str().unwrap().to_owned();
    let (s, a) = h
        .call(
            &provider.token,
            "POST",
            &format!("/data/requests/{id}/approve"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{a}");
    assert!(a["entitlement"]["until"].is_string(), "{a}");
    assert_eq!(
        provider.client.balance().await.unwrap().earnings_micros,
        19_000_000
    );
    let (s, got, _) = h
        .get_bytes(
            &institute.token,
            "/data/listings/gated/versions/v1/files/data/flows.csv",
            Some("bytes=0-3"),
        )
        .await;
    assert_eq!((s, got.len()), (206, 4));
    app.ledger_ok().await;
}
