//! The market's rules as the API answers them: who may send what, an org's kind, a token's
//! lifetime, a pool's nodes, a task's and a report's sizes. Each refusal is decided by
//! `suanli_core::decide`; here, that the API answers each with its status, code, field and
//! message, and that the first fault of a request with several is the one refused.

mod common;

use common::{spawn_app, App, Org};
use serde_json::{json, Value};
use suanli_api::*;
use suanli_client::{Client, Method};

/// A request's answer: status, and the error's code, field and message (`None`s for a success).
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: u16,
    code: Option<String>,
    field: Option<String>,
    message: Option<String>,
}

async fn send(client: &Client, method: Method, path: &str, body: Option<Value>) -> Answer {
    let (status, body) = client.raw(method, path, body, None).await.unwrap();
    let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
    Answer {
        status,
        code: (status >= 400).then(|| text("code")).flatten(),
        field: (status >= 400).then(|| text("field")).flatten(),
        message: (status >= 400).then(|| text("message")).flatten(),
    }
}

fn refused(status: u16, code: &str, field: Option<&str>, message: &str) -> Answer {
    Answer {
        status,
        code: Some(code.into()),
        field: field.map(str::to_owned),
        message: Some(message.into()),
    }
}

fn forbidden(message: &str) -> Answer {
    refused(403, "forbidden", None, message)
}

fn invalid(field: &str, message: &str) -> Answer {
    refused(400, "invalid_field", Some(field), message)
}

fn post(path: &str) -> (Method, String) {
    (Method::POST, format!("/api/v1{path}"))
}

fn get(path: &str) -> (Method, String) {
    (Method::GET, format!("/api/v1{path}"))
}

async fn check(client: &Client, (method, path): (Method, String), body: Value, want: Answer) {
    let body = (method == Method::POST).then_some(body);
    let got = send(client, method.clone(), &path, body).await;
    assert_eq!(got, want, "{method} {path}");
}

fn org_body(kind: &str, consumer_type: Option<&str>) -> Value {
    json!({"name": format!("{kind} {consumer_type:?}"), "kind": kind, "consumer_type": consumer_type,
        "zone": "wuqing-core", "origin_region": "tianjin"})
}

fn node(name: &str) -> Value {
    json!({"name": name, "cpus": 8, "memory_mib": 16384})
}

fn pool(nodes: Vec<Value>) -> Value {
    json!({"name": "p", "zone": "wuqing-core", "nodes": nodes})
}

fn agent(key_hex: &str, pool_id: Option<&str>, nodes: Vec<Value>) -> Value {
    json!({"name": "a", "zone": "wuqing-core", "public_key_hex": key_hex, "backend": "local",
        "isolation": "test", "version": "0.1.0", "pool_id": pool_id, "nodes": nodes})
}

fn task(task: Value) -> Value {
    json!({ "task": task })
}

/// A member of `org` who is no admin, with a token of its own.
async fn member_of(app: &App, org: &Org) -> Client {
    let (s, member) = org
        .client
        .raw(
            Method::POST,
            "/api/v1/members",
            Some(json!({"name": "m", "role": "member"})),
            None,
        )
        .await
        .unwrap();
    assert_eq!(s, 201, "{member}");
    let (s, token) = org
        .client
        .raw(
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": "m", "member_id": member["id"]})),
            None,
        )
        .await
        .unwrap();
    assert_eq!(s, 201, "{token}");
    Client::new(
        app.base.clone(),
        Some(token["secret"].as_str().unwrap().into()),
    )
}

#[tokio::test]
async fn who_may_send_what_and_read_which() {
    let app = spawn_app().await;
    let consumer = app.admit("Consumer", OrgKind::Consumer).await;
    let (provider, offer) = app.gpu_provider("Provider").await;
    let (c, p) = (&consumer.client, &provider.client);
    let op = |what: &str| forbidden(&format!("{what} is for operator orgs"));
    let money = json!({"amount_micros": 1, "external_ref": "r"});
    let cases = [
        (
            c,
            post("/orgs"),
            org_body("provider", None),
            op("admitting orgs"),
        ),
        (
            p,
            post(&format!("/orgs/{}/rename", consumer.id)),
            json!({"name": "x"}),
            op("renaming orgs"),
        ),
        (
            c,
            post("/accelerator-models"),
            json!({"name": "X1", "vendor": "v", "memory_gib": 8}),
            op("extending the accelerator registry"),
        ),
        (
            p,
            post(&format!("/orgs/{}/deposits", consumer.id)),
            money.clone(),
            op("recording deposits"),
        ),
        (
            p,
            post(&format!("/orgs/{}/withdrawals", consumer.id)),
            money,
            op("recording withdrawals"),
        ),
        (
            c,
            get("/ledger/check"),
            Value::Null,
            op("checking the ledger"),
        ),
        (
            p,
            (Method::GET, "/metrics".into()),
            Value::Null,
            op("reading the exchange's metrics"),
        ),
        (
            c,
            post("/pools"),
            pool(vec![node("n")]),
            forbidden("registering pools is for provider orgs"),
        ),
        (
            app_operator(&app),
            post("/offers"),
            json!({"pool_id": "pool_x", "class": "general", "memory_mib_per_unit": 1,
                "price_micros_per_unit_hour": 1}),
            forbidden("publishing offers is for provider orgs"),
        ),
        (
            c,
            post("/agents"),
            agent(&"0".repeat(64), None, vec![node("n")]),
            forbidden("running agents is for provider orgs"),
        ),
        (
            p,
            post("/leases"),
            json!({"offer_id": offer.id, "units": 1, "duration_limit_s": 60}),
            forbidden("buying capacity is for consumer orgs"),
        ),
        (
            p,
            post("/leases/lease_x/jobs"),
            task(json!({"run": "true"})),
            forbidden("running jobs is for consumer orgs"),
        ),
        // Another org reads like a missing one; so does another org's withdrawn offer.
        (
            c,
            get(&format!("/orgs/{}", provider.id)),
            Value::Null,
            refused(404, "not_found", None, "org not found"),
        ),
    ];
    for (client, route, body, want) in cases {
        check(client, route, body, want).await;
    }
    let (s, _) = p
        .raw(
            Method::POST,
            &format!("/api/v1/offers/{}/withdraw", offer.id),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(s, 200);
    let offer_path = get(&format!("/offers/{}", offer.id));
    check(
        c,
        offer_path.clone(),
        Value::Null,
        refused(404, "not_found", None, "offer not found"),
    )
    .await;
    let own = send(p, Method::GET, &offer_path.1, None).await;
    assert_eq!(own.status, 200);
    let any = send(
        &app.operator,
        Method::GET,
        &format!("/api/v1/orgs/{}", provider.id),
        None,
    )
    .await;
    assert_eq!(any.status, 200);

    // Members and tokens are an admin's, of any kind of org.
    let admin_only = || forbidden("this needs an admin of the org");
    for org in [&consumer, &provider] {
        let member = member_of(&app, org).await;
        let cases = [
            (post("/members"), json!({"name": "n", "role": "member"})),
            (get("/tokens"), Value::Null),
            (post("/tokens"), json!({"name": "t"})),
            (post("/tokens/tok_x/revoke"), Value::Null),
        ];
        for (route, body) in cases {
            check(&member, route, body, admin_only()).await;
        }
        // What any member may do, it does.
        assert_eq!(
            send(&member, Method::GET, "/api/v1/members", None)
                .await
                .status,
            200
        );
    }
}

fn app_operator(app: &App) -> &Client {
    &app.operator
}

#[tokio::test]
async fn an_orgs_kind_and_a_tokens_lifetime() {
    let app = spawn_app().await;
    let o = &app.operator;
    let cases = [
        (
            org_body("consumer", None),
            invalid(
                "consumer_type",
                "consumer orgs are an enterprise or a research_institute",
            ),
        ),
        (
            org_body("provider", Some("enterprise")),
            invalid("consumer_type", "only consumer orgs have a consumer_type"),
        ),
        (
            org_body("operator", Some("enterprise")),
            invalid("consumer_type", "only consumer orgs have a consumer_type"),
        ),
        (
            org_body("operator", None),
            invalid("kind", "the exchange has exactly one operator org"),
        ),
        // A bad admin name is parsed after the kind is decided.
        (
            json!({"name": "x", "kind": "operator", "zone": "wuqing-core", "origin_region": "tianjin",
                "admin_name": ""}),
            invalid("kind", "the exchange has exactly one operator org"),
        ),
    ];
    for (body, want) in cases {
        check(o, post("/orgs"), body, want).await;
    }
    let lifetime = || {
        invalid(
            "expires_in_s",
            "expires_in_s must be between 60 seconds and one year",
        )
    };
    for s in [0u64, 59, 366 * 24 * 3_600 + 1, u64::MAX] {
        check(
            o,
            post("/tokens"),
            json!({"name": "t", "expires_in_s": s}),
            lifetime(),
        )
        .await;
    }
    for s in [60u64, 366 * 24 * 3_600] {
        let got = send(
            o,
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": "t", "expires_in_s": s})),
        )
        .await;
        assert_eq!(got.status, 201, "{s}");
    }
}

#[tokio::test]
async fn a_pools_nodes() {
    let app = spawn_app().await;
    let provider = app.admit("Provider", OrgKind::Provider).await;
    let p = &provider.client;
    let gpus = |name: &str, model: Option<&str>| json!({"name": name, "cpus": 8, "memory_mib": 16384, "accelerators": 8, "accelerator_model": model});
    let cases = [
        (vec![], invalid("nodes", "a pool has 1 to 4096 nodes")),
        (
            vec![node("n"); 4_097],
            invalid("nodes", "a pool has 1 to 4096 nodes"),
        ),
        (
            vec![node("gpu-01"), node("GPU-01")],
            invalid("nodes[1].name", "nodes[1] and nodes[0] have the same name"),
        ),
        (
            vec![node("a"), node("b"), node("\u{430}")],
            invalid("nodes[2].name", "nodes[2] and nodes[0] have the same name"),
        ),
        (
            vec![json!({"name": "n", "cpus": 0, "memory_mib": 1})],
            invalid("nodes[0].cpus", "nodes[0].cpus must be between 1 and 65536"),
        ),
        (
            vec![json!({"name": "n", "cpus": 1, "memory_mib": 0})],
            invalid(
                "nodes[0].memory_mib",
                "nodes[0].memory_mib must be between 1 and 67108864",
            ),
        ),
        (
            vec![
                json!({"name": "n", "cpus": 1, "memory_mib": 1, "accelerators": 1025, "accelerator_model": "H100-80G"}),
            ],
            invalid(
                "nodes[0].accelerators",
                "nodes[0].accelerators must be between 0 and 1024",
            ),
        ),
        (
            vec![gpus("n", None)],
            invalid(
                "nodes[0].accelerator_model",
                "nodes with accelerators name their model",
            ),
        ),
        (
            vec![
                gpus("n", Some("H100-80G")),
                gpus("m", Some("X-9")),
                gpus("o", Some("Y-9")),
            ],
            invalid(
                "nodes",
                "nodes[1]: unknown accelerator model \"X-9\"; see /api/v1/accelerator-models",
            ),
        ),
        // The first fault in the request is refused: a node's rules after its name, before its
        // model's and partition's text, and before the next node.
        (
            vec![json!({"name": "n", "cpus": 0, "memory_mib": 1}), node("N")],
            invalid("nodes[0].cpus", "nodes[0].cpus must be between 1 and 65536"),
        ),
        (
            vec![node("n"), json!({"name": "N", "cpus": 0, "memory_mib": 1})],
            invalid("nodes[1].name", "nodes[1] and nodes[0] have the same name"),
        ),
        (
            vec![
                node("n"),
                node(""),
                json!({"name": "m", "cpus": 0, "memory_mib": 1}),
            ],
            invalid(
                "nodes[1].name",
                "nodes[1].name must not be empty (or made only of spaces and invisible characters)",
            ),
        ),
        (
            vec![
                json!({"name": "n", "cpus": 0, "memory_mib": 1, "accelerator_model": "bad model"}),
            ],
            invalid("nodes[0].cpus", "nodes[0].cpus must be between 1 and 65536"),
        ),
        (
            vec![
                json!({"name": "n", "cpus": 1, "memory_mib": 1, "accelerator_model": "bad model", "accelerators": 1}),
            ],
            invalid(
                "nodes[0].accelerator_model",
                "nodes[0].accelerator_model may only contain ASCII letters, digits, '-', '_' and '.'",
            ),
        ),
        (
            vec![
                json!({"name": "n", "cpus": 1, "memory_mib": 1, "accelerator_model": "Nope", "accelerators": 1}),
                node("n"),
            ],
            invalid("nodes[1].name", "nodes[1] and nodes[0] have the same name"),
        ),
    ];
    for (nodes, want) in cases {
        check(p, post("/pools"), pool(nodes), want).await;
    }
    let ok = send(
        p,
        Method::POST,
        "/api/v1/pools",
        Some(pool(vec![gpus("n", Some("H100-80G")), node("m")])),
    )
    .await;
    assert_eq!(ok.status, 201);

    // An agent may report a node with nothing to sell; its models are the registry's too.
    let key = "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29";
    let drained = json!({"name": "n", "cpus": 0, "memory_mib": 0});
    let unknown = invalid(
        "nodes",
        "nodes[0]: unknown accelerator model \"X-9\"; see /api/v1/accelerator-models",
    );
    check(
        p,
        post("/agents"),
        agent(key, None, vec![gpus("n", Some("X-9"))]),
        unknown,
    )
    .await;
    // A new key asking for what is no pool id is refused; a known key keeps its pool.
    let no_pool = invalid("pool_id", "no such pool");
    check(
        p,
        post("/agents"),
        agent(key, Some("no-pool"), vec![drained.clone()]),
        no_pool,
    )
    .await;
    let first = send(
        p,
        Method::POST,
        "/api/v1/agents",
        Some(agent(key, None, vec![drained.clone()])),
    )
    .await;
    assert_eq!(first.status, 201, "{first:?}");
    let again = send(
        p,
        Method::POST,
        "/api/v1/agents",
        Some(agent(key, Some("no-pool"), vec![drained])),
    )
    .await;
    assert_eq!(again.status, 201, "{again:?}");
}

#[tokio::test]
async fn how_much_a_task_and_a_report_carry() {
    let app = spawn_app().await;
    let consumer = app.admit("Consumer", OrgKind::Consumer).await;
    let provider = app.admit("Provider", OrgKind::Provider).await;
    let c = &consumer.client;
    let env = |n: usize, len: usize| -> Value {
        (0..n)
            .map(|i| (format!("V{i}"), Value::String("x".repeat(len))))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let files = |n: usize, len: usize| -> Value {
        (0..n)
            .map(|i| json!({"path": format!("f{i}"), "content_base64": "A".repeat(len)}))
            .collect()
    };
    let big = "x".repeat(64 * 1024 + 1);
    let cases = [
        (
            json!({"run": big}),
            invalid("task.run", "setup and run are at most 64 KiB each"),
        ),
        (
            json!({"run": "true", "setup": big}),
            invalid("task.run", "setup and run are at most 64 KiB each"),
        ),
        (
            json!({"run": "true", "env": env(257, 1)}),
            invalid("task.env", "at most 256 environment variables"),
        ),
        (
            json!({"run": "true", "env": env(1, 4097)}),
            invalid("task.env.V0", "values are at most 4 KiB, without NUL"),
        ),
        (
            json!({"run": "true", "env": {"1A": "x".repeat(5000)}}),
            invalid("task.env.1A", "variable names are letters, digits and _"),
        ),
        (
            json!({"run": "true", "workdir": files(1_001, 0)}),
            invalid(
                "task.workdir",
                "the working directory is at most 512 KiB and 1000 files",
            ),
        ),
        (
            json!({"run": "true", "workdir": files(2, 360_000)}),
            invalid(
                "task.workdir",
                "the working directory is at most 512 KiB and 1000 files",
            ),
        ),
        (
            json!({"run": "true", "outputs": (0..65).map(|i| format!("o{i}")).collect::<Vec<_>>()}),
            invalid("task.outputs", "at most 64 output paths"),
        ),
        (
            json!({"run": "true", "time_limit_s": 0}),
            invalid("task.time_limit_s", "time_limit_s must be at least 1"),
        ),
        // Sizes are decided where the request meets them: a script's before a variable's name.
        (
            json!({"run": big, "env": {"1A": "x"}}),
            invalid("task.run", "setup and run are at most 64 KiB each"),
        ),
        (
            json!({"run": "true", "env": env(257, 1), "time_limit_s": 0}),
            invalid("task.env", "at most 256 environment variables"),
        ),
        (
            json!({"run": "true", "outputs": ["/abs"], "time_limit_s": 0}),
            invalid(
                "task.outputs[0]",
                "\"/abs\" must be a relative path inside the job directory",
            ),
        ),
    ];
    for (t, want) in cases {
        check(c, post("/leases/lease_x/jobs"), task(t), want).await;
    }

    let p = &provider.client;
    let attempt = "/agents/agent_x/attempts/att_x";
    let chunk = |stream: &str, seq: u64, len: usize| json!({"seq": seq, "stream": stream, "data": "x".repeat(len)});
    let bad_chunk = |i: usize| {
        invalid(
            &format!("chunks[{i}]"),
            "stream is stdout, stderr or system; seq from 1; data at most 256 KiB",
        )
    };
    let cases = [
        (
            post("/agents/agent_x/heartbeat"),
            json!({"running": vec!["x"; 10_001]}),
            invalid("running", "at most 10000 attempts"),
        ),
        (
            post(&format!("{attempt}/usage")),
            json!({"records": []}),
            invalid("records", "send 1 to 1000 records"),
        ),
        (
            post(&format!("{attempt}/usage")),
            json!({"records": vec![json!({"seq": 1, "unit_ms": 1, "signature_hex": ""}); 1_001]}),
            invalid("records", "send 1 to 1000 records"),
        ),
        (
            post(&format!("{attempt}/logs")),
            json!({"chunks": vec![chunk("stdout", 1, 0); 1_001]}),
            invalid("chunks", "at most 1000 chunks"),
        ),
        (
            post(&format!("{attempt}/logs")),
            json!({"chunks": [chunk("stdout", 1, 0), chunk("stdin", 2, 0)]}),
            bad_chunk(1),
        ),
        (
            post(&format!("{attempt}/logs")),
            json!({"chunks": [chunk("stdout", 0, 0)]}),
            bad_chunk(0),
        ),
        (
            post(&format!("{attempt}/logs")),
            json!({"chunks": [chunk("system", 1, 256 * 1024 + 1)]}),
            bad_chunk(0),
        ),
        (
            post(&format!("{attempt}/outputs")),
            json!({"files": files(1_001, 0)}),
            invalid("files", "at most 1000 files"),
        ),
    ];
    for (route, body, want) in cases {
        check(p, route, body, want).await;
    }
}
