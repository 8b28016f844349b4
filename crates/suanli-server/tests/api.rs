//! The HTTP API end to end: a real server, a fresh database per test, the real client.

mod common;

use common::{buy, spawn_app};
use serde_json::json;
use suanli_api::*;
use suanli_client::{Client, ClientError};

fn code(e: &ClientError) -> &str {
    e.code().unwrap_or("<no code>")
}

#[tokio::test]
async fn quote_buy_end_settles_exactly_and_statement_shows_it() {
    let app = spawn_app().await;
    let (provider, offer) = app.gpu_provider("AI center").await;
    let consumer = app.admit("Enterprise", OrgKind::Consumer).await;
    app.fund(&consumer, 1_000).await;

    let quote = consumer
        .client
        .quote(
            &QuoteRequest {
                accelerator_model: Some("H100-80G".into()),
                accelerators: Some(4),
                duration_limit_s: 3_600,
                ..QuoteRequest::default()
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(quote.offers.len(), 1);
    assert_eq!(quote.offers[0].offer.id, offer.id);
    assert_eq!(quote.offers[0].total_micros, 144_000_000);

    let lease = consumer
        .client
        .purchase(&buy(&offer, 4, 3_600), Some("buy-1"))
        .await
        .unwrap();
    assert_eq!(lease.state, "active");
    assert_eq!(lease.hold.amount_micros, 144_000_000);
    let bal = consumer.client.balance().await.unwrap();
    assert_eq!(bal.available_micros, 856_000_000);
    assert_eq!(bal.held_micros, 144_000_000);

    // The provider sees the lease it sold; the quote now sees 4 accelerators left.
    let sold = provider
        .client
        .list_leases(&LeaseListParams {
            side: Some("provider".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(sold.items.len(), 1);
    let offer_now = consumer.client.get_offer(&offer.id).await.unwrap();
    assert_eq!(offer_now.units_available, 4);

    let ended = consumer
        .client
        .end_lease(&lease.id, Some("end-1"))
        .await
        .unwrap();
    assert_eq!(ended.state, "ended");
    // 4 units × the elapsed milliseconds, at 10 micros per unit-ms, rounded once.
    let billed = ended.billed_unit_ms.unwrap();
    assert_eq!(billed % 4, 0, "4 units × whole milliseconds");
    let cost = billed * 10;
    assert_eq!(ended.provider_micros, Some(cost - cost * 500 / 10_000));
    assert_eq!(
        ended.released_micros.unwrap() + cost,
        ended.hold.amount_micros
    );
    assert_eq!(ended.cost_micros, Some(cost));
    assert_eq!(ended.fee_micros, Some(cost * 500 / 10_000));
    let bal = consumer.client.balance().await.unwrap();
    assert_eq!(bal.available_micros, 1_000_000_000 - cost as i64);
    assert_eq!(bal.held_micros, 0);
    let earned = provider.client.balance().await.unwrap();
    assert_eq!(earned.earnings_micros, (cost - cost * 500 / 10_000) as i64);

    let statement = consumer
        .client
        .statement(&PageParams::default())
        .await
        .unwrap();
    let available: Vec<(&str, i64)> = statement
        .lines
        .iter()
        .filter(|l| l.account_kind == "available")
        .map(|l| (l.kind.as_str(), l.balance_micros))
        .collect();
    assert_eq!(available[0], ("deposit", 1_000_000_000));
    assert_eq!(available[1], ("hold", 856_000_000));
    assert_eq!(available.last().unwrap().1, 1_000_000_000 - cost as i64);
    app.ledger_ok().await;
}

#[tokio::test]
async fn purchase_refusals_hold_nothing() {
    let app = spawn_app().await;
    let (_p, offer) = app.gpu_provider("AI center").await;
    let poor = app.admit("Poor", OrgKind::Consumer).await;
    app.fund(&poor, 10).await;
    let e = poor
        .client
        .purchase(&buy(&offer, 1, 3_600), None)
        .await
        .unwrap_err();
    assert_eq!(code(&e), "insufficient_funds");
    assert_eq!(e.status(), Some(402));
    let rich = app.admit("Rich", OrgKind::Consumer).await;
    app.fund(&rich, 100_000).await;
    rich.client
        .purchase(&buy(&offer, 8, 60), None)
        .await
        .unwrap();
    let e = rich
        .client
        .purchase(&buy(&offer, 1, 60), None)
        .await
        .unwrap_err();
    assert_eq!(code(&e), "capacity_unavailable");
    assert_eq!(e.status(), Some(409));
    let bal = rich.client.balance().await.unwrap();
    assert_eq!(
        bal.held_micros,
        8 * 600_000,
        "only the first lease holds money"
    );
    let e = rich
        .client
        .purchase(
            &PurchaseRequest {
                max_price_micros_per_unit_hour: Some(1),
                ..buy(&offer, 1, 60)
            },
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), "price_above_limit");
    let e = poor
        .client
        .purchase(&buy(&offer, 9, 60), None)
        .await
        .unwrap_err();
    assert_eq!(
        (code(&e), e.to_string().contains("units")),
        ("invalid_field", true)
    );
    app.ledger_ok().await;
}

#[tokio::test]
async fn idempotency_replays_refuses_other_bodies_and_has_one_effect_under_concurrency() {
    let app = spawn_app().await;
    let (_p, offer) = app.gpu_provider("AI center").await;
    let c = app.admit("Consumer", OrgKind::Consumer).await;
    app.fund(&c, 10_000).await;
    let first = c
        .client
        .purchase(&buy(&offer, 1, 600), Some("k-1"))
        .await
        .unwrap();
    let again = c
        .client
        .purchase(&buy(&offer, 1, 600), Some("k-1"))
        .await
        .unwrap();
    assert_eq!(
        first, again,
        "the same key and body answer the stored response"
    );
    let e = c
        .client
        .purchase(&buy(&offer, 2, 600), Some("k-1"))
        .await
        .unwrap_err();
    assert_eq!(
        (code(&e), e.status()),
        ("idempotency_key_reused", Some(422))
    );

    let mut handles = Vec::new();
    for _ in 0..16 {
        let client = c.client.clone();
        let req = buy(&offer, 1, 600);
        handles.push(tokio::spawn(async move {
            client.purchase(&req, Some("k-2")).await
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for h in handles {
        ids.insert(h.await.unwrap().unwrap().id);
    }
    assert_eq!(
        ids.len(),
        1,
        "sixteen concurrent requests with one key made one lease"
    );
    let leases = c
        .client
        .list_leases(&LeaseListParams::default())
        .await
        .unwrap();
    assert_eq!(leases.items.len(), 2);

    // Refusals are replayed too; keys are per org.
    let other = app.admit("Other", OrgKind::Consumer).await;
    let e1 = other
        .client
        .purchase(&buy(&offer, 1, 600), Some("k-1"))
        .await
        .unwrap_err();
    let e2 = other
        .client
        .purchase(&buy(&offer, 1, 600), Some("k-1"))
        .await
        .unwrap_err();
    assert_eq!(code(&e1), "insufficient_funds");
    assert_eq!(format!("{e1:?}"), format!("{e2:?}"));
    app.ledger_ok().await;
}

#[tokio::test]
async fn another_orgs_objects_answer_like_missing_ones() {
    let app = spawn_app().await;
    let (provider, offer) = app.gpu_provider("AI center").await;
    let a = app.admit("A", OrgKind::Consumer).await;
    let b = app.admit("B", OrgKind::Consumer).await;
    app.fund(&a, 1_000).await;
    let lease = a.client.purchase(&buy(&offer, 1, 600), None).await.unwrap();

    let foreign = b.client.get_lease(&lease.id).await.unwrap_err();
    let missing = b
        .client
        .get_lease("lease_0000000000000000")
        .await
        .unwrap_err();
    answered_alike(&foreign, &missing, 404);
    let e = b.client.end_lease(&lease.id, None).await.unwrap_err();
    assert_eq!(e.status(), Some(404));
    assert!(b
        .client
        .list_leases(&LeaseListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());
    let e = b.client.get_org(&a.id).await.unwrap_err();
    assert_eq!(e.status(), Some(404));
    let pools = provider.client.list_pools().await.unwrap();
    let e = b.client.get_pool(&pools.items[0].id).await.unwrap_err();
    assert_eq!(e.status(), Some(404));
    let st = b.client.statement(&PageParams::default()).await.unwrap();
    assert!(st.lines.is_empty());
    // The provider may end nothing of the consumer's.
    let e = provider
        .client
        .end_lease(&lease.id, None)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403));
    // Issue 16: a job on another org's lease answered 400 "no such lease"; it is a 404, the
    // same as for a lease that does not exist.
    let task = CreateJobRequest {
        task: TaskSpec {
            run: "echo hi".into(),
            ..TaskSpec::default()
        },
    };
    let foreign = b
        .client
        .create_job(&lease.id, &task, None)
        .await
        .unwrap_err();
    let missing = b
        .client
        .create_job("lease_0000000000000000", &task, None)
        .await
        .unwrap_err();
    answered_alike(&foreign, &missing, 404);
    assert_eq!(code(&foreign), "not_found");
}

/// Both errors are API answers with `status` and the same code, message and field: another
/// org's object answers exactly like a missing one.
fn answered_alike(foreign: &ClientError, missing: &ClientError, status: u16) {
    let (
        ClientError::Api {
            status: s1,
            body: b1,
        },
        ClientError::Api {
            status: s2,
            body: b2,
        },
    ) = (foreign, missing)
    else {
        panic!("expected API errors: {foreign:?} {missing:?}");
    };
    assert_eq!(
        (s1, &b1.code, &b1.message, &b1.field),
        (s2, &b2.code, &b2.message, &b2.field)
    );
    assert_eq!(*s1, status);
}

#[tokio::test]
async fn tokens_missing_invalid_revoked_or_expired_are_refused() {
    let app = spawn_app().await;
    let c = app.admit("C", OrgKind::Consumer).await;
    let anon = Client::new(app.base.clone(), None);
    assert_eq!(code(&anon.me().await.unwrap_err()), "unauthenticated");
    let bad = Client::new(app.base.clone(), Some("sk_nope".into()));
    assert_eq!(code(&bad.me().await.unwrap_err()), "token_invalid");
    let created = c
        .client
        .create_token(
            &CreateTokenRequest {
                name: "ci".into(),
                member_id: None,
                expires_in_s: Some(60),
            },
            None,
        )
        .await
        .unwrap();
    let second = Client::new(app.base.clone(), Some(created.secret.clone()));
    assert_eq!(second.me().await.unwrap().org.id, c.id);
    let listed = c.client.list_tokens().await.unwrap();
    assert!(listed.items.iter().any(|t| t.id == created.token.id));
    c.client
        .revoke_token(&created.token.id, None)
        .await
        .unwrap();
    assert_eq!(code(&second.me().await.unwrap_err()), "token_revoked");

    // An expired token: written straight into the store with a past expiry.
    let org = c.id.clone();
    let store = app.state.store.clone();
    let member = c.client.list_members().await.unwrap().items[0].id.clone();
    let secret = suanli_server::auth::new_secret();
    let hash = suanli_server::auth::secret_sha256(&secret);
    store
        .writer()
        .submit(move |tx| tx.create_token(&org, &member, "old", &hash, 0, 1))
        .await
        .unwrap();
    let old = Client::new(app.base.clone(), Some(secret));
    assert_eq!(code(&old.me().await.unwrap_err()), "token_expired");

    // Members cannot manage tokens; consumers cannot admit orgs.
    let e = c
        .client
        .create_org(
            &CreateOrgRequest {
                name: "x".into(),
                kind: OrgKind::Provider,
                consumer_type: None,
                zone: "wuqing-core".into(),
                origin_region: "tianjin".into(),
                admin_name: None,
                admin_email: None,
            },
            None,
        )
        .await
        .unwrap_err();
    assert_eq!((code(&e), e.status()), ("forbidden", Some(403)));
}

#[tokio::test]
async fn bad_input_gets_stable_codes_and_fields_never_5xx() {
    let app = spawn_app().await;
    let (provider, offer) = app.gpu_provider("AI center").await;
    let c = app.admit("C", OrgKind::Consumer).await;
    let raw = |body: &str, ct: &str, path: &str, client: &Client| {
        let (url, token) = (
            format!("{}/api/v1{path}", app.base),
            client.token().map(str::to_owned),
        );
        let (body, ct) = (body.to_owned(), ct.to_owned());
        async move {
            let resp = reqwest::Client::new()
                .post(url)
                .header("content-type", ct)
                .bearer_auth(token.unwrap_or_default())
                .body(body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let body: serde_json::Value = resp.json().await.unwrap();
            (
                status,
                body["code"].as_str().unwrap_or_default().to_owned(),
                body["field"].as_str().map(str::to_owned),
            )
        }
    };
    let json = "application/json";
    type Case<'a> = (&'a str, &'a str, &'a str, u16, &'a str, Option<&'a str>);
    let cases: Vec<Case> = vec![
        ("{", json, "/leases", 400, "invalid_json", None),
        ("[]", json, "/leases", 400, "invalid_json", None),
        (
            r#"{"offer_id":"x","units":1,"duration_limit_s":60,"extra":1}"#,
            json,
            "/leases",
            400,
            "unknown_field",
            Some("extra"),
        ),
        (
            r#"{"offer_id":"x","units":1}"#,
            json,
            "/leases",
            400,
            "missing_field",
            Some("duration_limit_s"),
        ),
        (
            r#"{"offer_id":"x","units":-1,"duration_limit_s":60}"#,
            json,
            "/leases",
            400,
            "invalid_field",
            Some("units"),
        ),
        (
            r#"{"offer_id":"x","units":99999999999999999999999,"duration_limit_s":60}"#,
            json,
            "/leases",
            400,
            "invalid_field",
            Some("units"),
        ),
        (
            r#"{"offer_id":"x","units":0,"duration_limit_s":60}"#,
            json,
            "/leases",
            400,
            "invalid_field",
            Some("units"),
        ),
        (
            r#"{"offer_id":"x","units":1,"duration_limit_s":60}"#,
            "text/plain",
            "/leases",
            415,
            "unsupported_media_type",
            None,
        ),
        (
            r#"{"offer_id":"nope","units":1,"duration_limit_s":60}"#,
            json,
            "/leases",
            400,
            "invalid_field",
            Some("offer_id"),
        ),
        (
            r#"{"duration_limit_s":60,"class":"quantum"}"#,
            json,
            "/quotes",
            400,
            "invalid_field",
            Some("class"),
        ),
        (
            r#"{"duration_limit_s":60,"accelerator_model":"NoSuchGPU"}"#,
            json,
            "/quotes",
            400,
            "invalid_field",
            Some("accelerator_model"),
        ),
        (
            r#"{"duration_limit_s":0,"units":1}"#,
            json,
            "/quotes",
            400,
            "invalid_field",
            Some("duration_limit_s"),
        ),
        (
            r#"{"duration_limit_s":60,"units":1,"zone":"moon"}"#,
            json,
            "/quotes",
            400,
            "invalid_field",
            Some("zone"),
        ),
    ];
    for (body, ct, path, status, code, field) in cases {
        let got = raw(body, ct, path, &c.client).await;
        assert_eq!(
            got,
            (status, code.to_owned(), field.map(str::to_owned)),
            "POST {path} {body}"
        );
    }
    // Over-long names, zero and overflowing amounts, unknown models in pools.
    let long = "x".repeat(200);
    let got = raw(
        &json!({"name": long, "zone": "wuqing-core", "nodes": []}).to_string(),
        json,
        "/pools",
        &provider.client,
    )
    .await;
    assert_eq!(got, (400, "invalid_field".into(), Some("name".into())));
    let got = raw(r#"{"name":"p","zone":"wuqing-core","nodes":[{"name":"n","cpus":1,"memory_mib":1,"accelerator_model":"Nope","accelerators":1}]}"#, json, "/pools", &provider.client).await;
    assert_eq!(got, (400, "invalid_field".into(), Some("nodes".into())));
    let dep = format!("/orgs/{}/deposits", c.id);
    let got = raw(
        r#"{"amount_micros":0,"external_ref":"r"}"#,
        json,
        &dep,
        &app.operator,
    )
    .await;
    assert_eq!(
        got,
        (400, "invalid_field".into(), Some("amount_micros".into()))
    );
    let got = raw(
        r#"{"amount_micros":18446744073709551616,"external_ref":"r"}"#,
        json,
        &dep,
        &app.operator,
    )
    .await;
    assert_eq!(
        got,
        (400, "invalid_field".into(), Some("amount_micros".into()))
    );
    let got = raw(r#"{"pool_id":"x","class":"intelligent:H100-80G","cpus_per_unit":1,"memory_mib_per_unit":1,"price_micros_per_unit_hour":18446744073709551615}"#, json, "/offers", &provider.client).await;
    assert_eq!(
        got,
        (
            400,
            "invalid_field".into(),
            Some("price_micros_per_unit_hour".into())
        )
    );
    // A purchase whose worst case overflows nothing but exceeds any balance is refused cleanly.
    app.fund(&c, 1).await;
    let e = c
        .client
        .purchase(&buy(&offer, 8, 366 * 24 * 3600), None)
        .await
        .unwrap_err();
    assert_eq!(code(&e), "insufficient_funds");
    // Unknown routes and methods answer JSON errors.
    let (status, body) = c
        .client
        .raw(reqwest::Method::GET, "/api/v1/nowhere", None, None)
        .await
        .unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("route_not_found"))
    );
    let (status, body) = c
        .client
        .raw(reqwest::Method::DELETE, "/api/v1/leases", None, None)
        .await
        .unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
    let (status, body) = c
        .client
        .raw(reqwest::Method::GET, "/api/v1/leases?limit=0", None, None)
        .await
        .unwrap();
    assert_eq!(
        (status, body["code"].as_str(), body["field"].as_str()),
        (400, Some("invalid_query"), Some("limit"))
    );
    let (status, body) = c
        .client
        .raw(reqwest::Method::GET, "/api/v1/leases?bogus=1", None, None)
        .await
        .unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_query"))
    );
    app.ledger_ok().await;
}

#[tokio::test]
async fn leases_expire_and_settle_in_full_on_their_own() {
    let app = spawn_app().await;
    let (_p, offer) = app.gpu_provider("AI center").await;
    let c = app.admit("C", OrgKind::Consumer).await;
    app.fund(&c, 100).await;
    let lease = c.client.purchase(&buy(&offer, 1, 1), None).await.unwrap();
    let mut state = String::new();
    for _ in 0..100 {
        let l = c.client.get_lease(&lease.id).await.unwrap();
        state = l.state.clone();
        if state == "expired" {
            assert_eq!(l.billed_unit_ms, Some(1_000));
            assert_eq!(l.cost_micros, Some(10_000));
            assert_eq!(l.hold.state, "posted");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(state, "expired");
    let e = c.client.end_lease(&lease.id, None).await.unwrap_err();
    assert_eq!(code(&e), "lease_not_active");
    app.ledger_ok().await;
}

#[tokio::test]
async fn openapi_document_lists_every_route() {
    let app = spawn_app().await;
    let anon = Client::new(app.base.clone(), None);
    let (status, doc) = anon
        .raw(reqwest::Method::GET, "/api/v1/openapi.json", None, None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/v1/quotes",
        "/api/v1/leases",
        "/api/v1/leases/{lease_id}/end",
        "/api/v1/orgs/{org_id}/deposits",
        "/api/v1/statement",
    ] {
        assert!(
            paths.contains_key(p),
            "{p} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    let health = anon.health().await.unwrap();
    assert_eq!(health.status, "ok");
}
