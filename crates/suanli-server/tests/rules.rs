//! The market's rules as the API answers them: who may send what, an org's kind, a token's
//! lifetime, a pool's nodes, a task's and a report's sizes, an offer's terms and window, a
//! purchase's and a payment's bounds, the accelerator registry's models. Each refusal is decided
//! by `suanli_core::decide`; here, that the API answers each with its status, code, field and
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

/// How much and when, one case a line: `CLIENT ROUTE {FIELDS} => ANSWER`. CLIENT is o(perator),
/// p(rovider) or c(onsumer); ROUTE's valid request gets FIELDS set over it (`now+Nd`: N days from
/// now; `_path`: another path); ANSWER is `ok` (any 2xx), `!MESSAGE` (403 `forbidden`) or
/// `FIELD: MESSAGE` (400 `invalid_field`). Cases run in order; `#` starts a comment.
const HOW_MUCH_AND_WHEN: &str = r#"
# An offer: CPUs per unit by category, memory, price, units, then the window.
p gpu-offer {"cpus_per_unit": null} => cpus_per_unit: intelligent offers say how many CPUs come with each accelerator
p offer {"cpus_per_unit": 2} => cpus_per_unit: one unit of general or supercomputing capacity is one CPU
p offer {"class": "supercomputing:cpu", "cpus_per_unit": 0} => cpus_per_unit: one unit of general or supercomputing capacity is one CPU
p gpu-offer {"cpus_per_unit": 0} => cpus_per_unit: cpus_per_unit must be between 1 and 1024
p gpu-offer {"cpus_per_unit": 1025} => cpus_per_unit: cpus_per_unit must be between 1 and 1024
p offer {"memory_mib_per_unit": 0} => memory_mib_per_unit: memory_mib_per_unit must be between 1 and 67108864
p offer {"memory_mib_per_unit": 67108865} => memory_mib_per_unit: memory_mib_per_unit must be between 1 and 67108864
p offer {"price_micros_per_unit_hour": 0} => price_micros_per_unit_hour: price_micros_per_unit_hour must be between 1 and 1000000000000
p offer {"price_micros_per_unit_hour": 1000000000001} => price_micros_per_unit_hour: price_micros_per_unit_hour must be between 1 and 1000000000000
p offer {"min_units": 0} => min_units: min_units must be between 1 and 1000000
p offer {"min_units": 1000001} => min_units: min_units must be between 1 and 1000000
p offer {"min_units": 5, "max_units": 4} => max_units: max_units must be between 5 and 1000000
p offer {"max_units": 1000001} => max_units: max_units must be between 1 and 1000000
p offer {"valid_from": "now+2d", "valid_until": "now+1d"} => valid_until: valid_until must be after valid_from and in the future
p offer {"valid_from": "2090-01-01T00:00:00Z", "valid_until": "2090-01-01T00:00:00Z"} => valid_until: valid_until must be after valid_from and in the future
p offer {"valid_until": "2000-01-01T00:00:00Z"} => valid_until: valid_until must be after valid_from and in the future
p offer {"valid_until": "now+3662d"} => valid_until: valid_until is more than ten years away
# By default an offer is valid for a year after valid_from.
p offer {"valid_from": "now+3360d"} => valid_until: valid_until is more than ten years away
p offer {"valid_from": "yesterday"} => valid_from: valid_from is not an RFC 3339 time
p offer {"pool_id": "not an id"} => pool_id: pool_id is not an id: ids are 1 to 128 ASCII letters, digits, '_', '-' and '.'
# The first fault is refused: the class's text, CPUs, memory, price, the least units, the most, the
# times' text, the window, the pool id's text, then the pool and its model.
p offer {"class": "general:x", "cpus_per_unit": 2} => class: class is general, intelligent:<MODEL> or supercomputing:<PARTITION>
p offer {"cpus_per_unit": 2, "memory_mib_per_unit": 0} => cpus_per_unit: one unit of general or supercomputing capacity is one CPU
p gpu-offer {"cpus_per_unit": 0, "memory_mib_per_unit": 0} => cpus_per_unit: cpus_per_unit must be between 1 and 1024
p offer {"memory_mib_per_unit": 0, "price_micros_per_unit_hour": 0} => memory_mib_per_unit: memory_mib_per_unit must be between 1 and 67108864
p offer {"price_micros_per_unit_hour": 0, "min_units": 0} => price_micros_per_unit_hour: price_micros_per_unit_hour must be between 1 and 1000000000000
p offer {"min_units": 0, "max_units": 0} => min_units: min_units must be between 1 and 1000000
p offer {"max_units": 0, "valid_from": "yesterday"} => max_units: max_units must be between 1 and 1000000
p offer {"valid_from": "yesterday", "valid_until": "tomorrow"} => valid_from: valid_from is not an RFC 3339 time
p offer {"valid_from": "2000-01-01T00:00:00Z", "valid_until": "tomorrow"} => valid_until: valid_until is not an RFC 3339 time
p offer {"valid_until": "2000-01-01T00:00:00Z", "pool_id": "not an id"} => valid_until: valid_until must be after valid_from and in the future
p offer {"valid_until": "2100-01-01T00:00:00Z", "pool_id": "pool_missing"} => valid_until: valid_until is more than ten years away
p gpu-offer {"cpus_per_unit": 1025, "class": "intelligent:X-9"} => cpus_per_unit: cpus_per_unit must be between 1 and 1024
# Each bound itself is accepted.
p gpu-offer {"cpus_per_unit": 1} => ok
p gpu-offer {"cpus_per_unit": 1024} => ok
p offer {"class": "supercomputing:cpu", "cpus_per_unit": 1, "memory_mib_per_unit": 1, "price_micros_per_unit_hour": 1} => ok
p offer {"memory_mib_per_unit": 67108864, "price_micros_per_unit_hour": 1000000000000} => ok
p offer {"min_units": 1000000, "max_units": 1000000} => ok
p offer {"min_units": 3, "max_units": 3} => ok
p offer {"valid_from": "2000-01-01T00:00:00Z", "valid_until": "now+1d"} => ok
p offer {"valid_until": "now+3650d"} => ok
p offer {"valid_from": "now+3250d"} => ok

# A purchase: units, duration and price limit, in that order, then the offer's own bounds.
c lease {"units": 0} => units: units must be between 1 and 1000000
c lease {"units": 1000001} => units: units must be between 1 and 1000000
c lease {"duration_limit_s": 0} => duration_limit_s: duration_limit_s must be between 1 and 31622400
c lease {"duration_limit_s": 31622401} => duration_limit_s: duration_limit_s must be between 1 and 31622400
c lease {"max_price_micros_per_unit_hour": 0} => max_price_micros_per_unit_hour: max_price_micros_per_unit_hour must be between 1 and 1000000000000
c lease {"max_price_micros_per_unit_hour": 1000000000001} => max_price_micros_per_unit_hour: max_price_micros_per_unit_hour must be between 1 and 1000000000000
c lease {"units": 1000000} => units: this offer sells 1 to 8 units per lease
p lease {"units": 0} => !buying capacity is for consumer orgs
c lease {"offer_id": "not an id", "units": 0} => offer_id: offer_id is not an id: ids are 1 to 128 ASCII letters, digits, '_', '-' and '.'
c lease {"units": 0, "duration_limit_s": 0} => units: units must be between 1 and 1000000
c lease {"duration_limit_s": 0, "max_price_micros_per_unit_hour": 0} => duration_limit_s: duration_limit_s must be between 1 and 31622400
c lease {"max_price_micros_per_unit_hour": 0, "offer_id": "offer_missing"} => max_price_micros_per_unit_hour: max_price_micros_per_unit_hour must be between 1 and 1000000000000
c lease {"units": 9, "max_price_micros_per_unit_hour": 1} => units: this offer sells 1 to 8 units per lease
c lease {"duration_limit_s": 1, "max_price_micros_per_unit_hour": 1000000000000} => ok
c lease {"duration_limit_s": 31622400, "max_price_micros_per_unit_hour": 36000000} => ok

# A payment's amount, before its reference's text and its org.
o deposit {"amount_micros": 0} => amount_micros: amount_micros must be between 1 and 1000000000000000
o deposit {"amount_micros": 1000000000000001} => amount_micros: amount_micros must be between 1 and 1000000000000000
o deposit {"amount_micros": 0, "external_ref": ""} => amount_micros: amount_micros must be between 1 and 1000000000000000
o deposit {"external_ref": ""} => external_ref: external_ref names the payment outside the exchange
o deposit {"amount_micros": 0, "_path": "/orgs/org_missing/deposits"} => amount_micros: amount_micros must be between 1 and 1000000000000000
c deposit {"amount_micros": 0} => !recording deposits is for operator orgs
o deposit {"external_ref": "d1"} => ok
o deposit {"amount_micros": 1000000000000000, "external_ref": "d2"} => ok
o withdrawal {"amount_micros": 0} => amount_micros: amount_micros must be between 1 and 1000000000000000
o withdrawal {"amount_micros": 1000000000000001} => amount_micros: amount_micros must be between 1 and 1000000000000000
o withdrawal {"amount_micros": 0, "external_ref": ""} => amount_micros: amount_micros must be between 1 and 1000000000000000
o withdrawal {"external_ref": ""} => external_ref: external_ref names the payment outside the exchange
o withdrawal {"amount_micros": 0, "_path": "/orgs/org_missing/withdrawals"} => amount_micros: amount_micros must be between 1 and 1000000000000000
c withdrawal {"amount_micros": 0} => !recording withdrawals is for operator orgs
o withdrawal {"external_ref": "w1"} => ok
o withdrawal {"amount_micros": 1000000000000000, "external_ref": "w2"} => ok

# The registry's models: the name's and the vendor's text, then the memory.
o model {"memory_gib": 0} => memory_gib: memory_gib must be between 1 and 65536
o model {"memory_gib": 65537} => memory_gib: memory_gib must be between 1 and 65536
o model {"name": "X 1", "memory_gib": 0} => name: name may only contain ASCII letters, digits, '-', '_' and '.'
o model {"vendor": "", "memory_gib": 0} => vendor: vendor must not be empty (or made only of spaces and invisible characters)
o model {"name": "X1", "memory_gib": 1} => ok
o model {"name": "X2", "memory_gib": 65536} => ok

# A quote's model is the registry's: after the duration and the class's and model's text, before
# the units.
c quote {"class": "intelligent:X-9"} => class: unknown accelerator model; see /api/v1/accelerator-models
c quote {"accelerator_model": "X-9"} => accelerator_model: unknown accelerator model; see /api/v1/accelerator-models
c quote {"class": "intelligent:X-9", "accelerator_model": "X-9"} => accelerator_model: unknown accelerator model; see /api/v1/accelerator-models
c quote {"class": "intelligent:X-9", "duration_limit_s": 0} => duration_limit_s: duration_limit_s must be between 1 and 31622400
c quote {"class": "intelligent:X-9", "accelerator_model": "Y-9"} => accelerator_model: accelerator_model contradicts the class
c quote {"accelerator_model": "X-9", "units": 0} => accelerator_model: unknown accelerator model; see /api/v1/accelerator-models
c quote {"class": "intelligent:X-9", "units": 2, "accelerators": 3} => class: unknown accelerator model; see /api/v1/accelerator-models
c quote {"accelerator_model": "H100-80G"} => ok
c quote {"class": "intelligent:X2"} => ok
c quote {"class": "intelligent"} => ok
"#;

#[tokio::test]
async fn how_much_and_when() {
    let app = spawn_app().await;
    let consumer = app.admit("Consumer", OrgKind::Consumer).await;
    let (provider, offer) = app.gpu_provider("Provider").await;
    app.fund(&consumer, 400_000).await;
    let (p, pool) = (&provider.id, &offer.pool_id);
    let routes = json!({
        "offer": ["/offers", {"pool_id": pool, "class": "general", "memory_mib_per_unit": 1024,
            "price_micros_per_unit_hour": 1_000_000}],
        "gpu-offer": ["/offers", {"pool_id": pool, "class": "intelligent:H100-80G",
            "cpus_per_unit": 16, "memory_mib_per_unit": 1024, "price_micros_per_unit_hour": 1}],
        "lease": ["/leases", {"offer_id": offer.id, "units": 1, "duration_limit_s": 60}],
        "deposit": [format!("/orgs/{p}/deposits"), {"amount_micros": 1, "external_ref": "r"}],
        "withdrawal": [format!("/orgs/{p}/withdrawals"), {"amount_micros": 1, "external_ref": "r"}],
        "model": ["/accelerator-models", {"name": "X1", "vendor": "v", "memory_gib": 1}],
        "quote": ["/quotes", {"duration_limit_s": 60}],
    });
    let now = chrono::Utc::now();
    let lines = HOW_MUCH_AND_WHEN.lines().map(str::trim);
    for line in lines.filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (request, answer) = line.split_once(" => ").expect(line);
        let mut words = request.splitn(3, ' ');
        let (who, route, fields) = (words.next(), words.next(), words.next());
        let client = match who {
            Some("o") => &app.operator,
            Some("p") => &provider.client,
            _ => &consumer.client,
        };
        let route = &routes[route.expect(line)];
        let (mut path, mut body) = (route[0].as_str().unwrap().to_owned(), route[1].clone());
        let fields: Value = serde_json::from_str(fields.expect(line)).expect(line);
        for (k, v) in fields.as_object().expect(line) {
            match v.as_str().and_then(|v| v.strip_prefix("now+")) {
                _ if k == "_path" => path = v.as_str().expect(line).to_owned(),
                Some(days) => {
                    let days = days.trim_end_matches('d').parse().expect(line);
                    body[k] = (now + chrono::Duration::days(days)).to_rfc3339().into();
                }
                None => body[k] = v.clone(),
            }
        }
        let got = send(client, Method::POST, &format!("/api/v1{path}"), Some(body)).await;
        match answer.split_once(": ") {
            _ if answer == "ok" => assert!((200..300).contains(&got.status), "{line}: {got:?}"),
            _ if answer.starts_with('!') => assert_eq!(got, forbidden(&answer[1..]), "{line}"),
            Some((field, message)) => assert_eq!(got, invalid(field, message), "{line}"),
            None => panic!("{line}: no answer"),
        }
    }
}
