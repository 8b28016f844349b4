//! Crash test: the real `suanli serve` under concurrent client load (purchases, deposits,
//! idempotent retries, lease ends) is killed with SIGKILL at random moments and restarted. After
//! each restart every acknowledged write is present, the ledger invariants hold, and retried
//! requests return their original answers.
//!
//! The seed is printed; `SUANLI_CRASH_SEED=<seed>` replays a run, `SUANLI_CRASH_ROUNDS` sets the
//! number of kills (default 20).

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use suanli_client::{Client, ClientError, Method};

/// A small deterministic generator (xorshift64*), so a seed replays the same choices.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Server {
    child: Child,
    base: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_server(data_dir: &Path, port: u16) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_suanli"))
        .args(["serve", "--data-dir"])
        .arg(data_dir)
        .args(["--port", &port.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start suanli serve");
    Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

/// A client whose requests give up after 20 s. A request caught by the kill once hung here with
/// every task parked and no socket left open (a connection's end never reached its waiter); a
/// request left unanswered has an unknown outcome anyway, as a transport error has, and after the
/// restart a timeout fails the test with a message instead of hanging it.
fn client(base: &str, token: Option<String>) -> Client {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(20))
        .build()
        .expect("an HTTP client");
    Client::with_http(base.to_owned(), token, http)
}

async fn wait_healthy(base: &str) {
    let anon = client(base, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if anon.health().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the server at {base} did not become healthy");
}

fn kill(server: &mut Server) {
    // SIGKILL: no shutdown path runs.
    server.child.kill().expect("SIGKILL the server");
    server.child.wait().expect("reap the server");
}

/// One request the load sent, with its answer when one arrived.
#[derive(Clone, Debug)]
struct Sent {
    org: String,
    path: String,
    body: Option<Value>,
    key: String,
    /// `None`: no answer (the server died in flight), so the effect is unknown until retried.
    answer: Option<(u16, Value)>,
}

async fn send(client: &Client, path: &str, body: Option<Value>, key: &str) -> Option<(u16, Value)> {
    match client.raw(Method::POST, path, body, Some(key)).await {
        Ok(answer) => Some(answer),
        Err(ClientError::Transport(_)) | Err(ClientError::Decode(_)) => None,
        Err(e) => panic!("unexpected client error {e:?}"),
    }
}

/// Removes the request id from a body: it names the request, not the answer.
fn without_request_id(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("request_id");
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let seed: u64 = std::env::var("SUANLI_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let mut b = [0u8; 8];
            getrandom::fill(&mut b).unwrap();
            u64::from_le_bytes(b) | 1
        });
    let rounds: usize = std::env::var("SUANLI_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    println!("crash test seed {seed} ({rounds} rounds); replay with SUANLI_CRASH_SEED={seed}");
    let mut rng = Rng(seed);

    let dir: PathBuf = std::env::temp_dir().join(format!("suanli-crash-{seed}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // The exchange refuses a data directory other users can read.
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let port = free_port();
    let mut server = start_server(&dir, port);
    let base = server.base.clone();
    wait_healthy(&base).await;
    let operator_token = std::fs::read_to_string(dir.join("operator.token"))
        .unwrap()
        .trim()
        .to_owned();
    let operator = client(&base, Some(operator_token));

    // The market: one provider with a pool big enough that capacity rarely runs out, an offer, and
    // three consumers.
    let admit = |name: &str, kind: &str| {
        let mut body =
            json!({"name": name, "kind": kind, "zone": "wuqing-core", "origin_region": "tianjin"});
        if kind == "consumer" {
            body["consumer_type"] = json!("enterprise");
        }
        body
    };
    let (s, provider) = operator
        .raw(
            Method::POST,
            "/api/v1/orgs",
            Some(admit("P", "provider")),
            Some("setup-p"),
        )
        .await
        .unwrap();
    assert_eq!(s, 201);
    let provider_client = client(
        &base,
        Some(provider["token"]["secret"].as_str().unwrap().to_owned()),
    );
    let nodes: Vec<Value> = (0..4)
        .map(|i| json!({"name": format!("n{i}"), "cpus": 512, "memory_mib": 4_194_304}))
        .collect();
    let (s, pool) = provider_client
        .raw(
            Method::POST,
            "/api/v1/pools",
            Some(json!({"name": "pool", "zone": "wuqing-core", "nodes": nodes})),
            Some("setup-pool"),
        )
        .await
        .unwrap();
    assert_eq!(s, 201, "{pool}");
    let (s, offer) = provider_client
        .raw(
            Method::POST,
            "/api/v1/offers",
            Some(json!({"pool_id": pool["id"], "class": "general", "memory_mib_per_unit": 1024, "price_micros_per_unit_hour": 3_600_000})),
            Some("setup-offer"),
        )
        .await
        .unwrap();
    assert_eq!(s, 201, "{offer}");
    let offer_id = offer["id"].as_str().unwrap().to_owned();
    let mut consumers: Vec<(String, Client)> = Vec::new();
    for i in 0..3 {
        let (s, c) = operator
            .raw(
                Method::POST,
                "/api/v1/orgs",
                Some(admit(&format!("C{i}"), "consumer")),
                Some(&format!("setup-c{i}")),
            )
            .await
            .unwrap();
        assert_eq!(s, 201);
        consumers.push((
            c["org"]["id"].as_str().unwrap().to_owned(),
            client(
                &base,
                Some(c["token"]["secret"].as_str().unwrap().to_owned()),
            ),
        ));
    }

    let log: Arc<Mutex<Vec<Sent>>> = Arc::new(Mutex::new(Vec::new()));
    for round in 0..rounds {
        // Load: four workers send a random mix until the kill.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut workers = Vec::new();
        for w in 0..4 {
            let mut wrng = Rng(rng.next() | 1);
            let consumers: Vec<(String, Client)> = consumers.clone();
            let operator = operator.clone();
            let offer_id = offer_id.clone();
            let log = log.clone();
            let stop = stop.clone();
            let prefix = format!("r{round}w{w}");
            workers.push(tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let key = format!("{prefix}-{n}");
                    let (org, client) = &consumers[wrng.below(consumers.len() as u64) as usize];
                    let choice = wrng.below(10);
                    let (who, path, body) = if choice < 2 {
                        let amount = 1_000_000 + wrng.below(10_000_000);
                        (
                            "operator".to_owned(),
                            format!("/api/v1/orgs/{org}/deposits"),
                            Some(json!({"amount_micros": amount, "external_ref": key})),
                        )
                    } else if choice < 7 {
                        let units = 1 + wrng.below(4);
                        (
                            org.clone(),
                            "/api/v1/leases".to_owned(),
                            Some(json!({"offer_id": offer_id, "units": units, "duration_limit_s": 30 + wrng.below(600)})),
                        )
                    } else if choice < 9 {
                        // End one of this consumer's acknowledged leases (it may already be ended).
                        let lease = {
                            let log = log.lock().unwrap();
                            let mine: Vec<String> = log
                                .iter()
                                .filter(|s| &s.org == org && s.path == "/api/v1/leases")
                                .filter_map(|s| s.answer.as_ref().filter(|a| a.0 == 201).map(|a| a.1["id"].as_str().unwrap().to_owned()))
                                .collect();
                            (!mine.is_empty()).then(|| mine[wrng.below(mine.len() as u64) as usize].clone())
                        };
                        match lease {
                            Some(id) => (org.clone(), format!("/api/v1/leases/{id}/end"), None),
                            None => continue,
                        }
                    } else {
                        // Retry an earlier request with its key and body, as a client would.
                        let earlier = {
                            let log = log.lock().unwrap();
                            (!log.is_empty()).then(|| log[wrng.below(log.len() as u64) as usize].clone())
                        };
                        let Some(e) = earlier else { continue };
                        let c = if e.org == "operator" { &operator } else { &consumers.iter().find(|c| c.0 == e.org).unwrap().1 };
                        if let Some(answer) = send(c, &e.path, e.body.clone(), &e.key).await {
                            if let Some(original) = &e.answer {
                                assert_eq!(
                                    (answer.0, without_request_id(answer.1.clone())),
                                    (original.0, without_request_id(original.1.clone())),
                                    "a retry of {} {} answered differently",
                                    e.path,
                                    e.key
                                );
                            }
                        }
                        continue;
                    };
                    let c = if who == "operator" { &operator } else { client };
                    let answer = send(c, &path, body.clone(), &key).await;
                    if let Some((status, body)) = &answer {
                        assert!(*status < 500 || *status == 503, "{path} answered {status}: {body}");
                    }
                    log.lock().unwrap().push(Sent { org: who, path, body, key, answer });
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(30 + rng.below(300))).await;
        kill(&mut server);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in workers {
            w.await.expect("a load worker panicked");
        }
        server = start_server(&dir, port);
        wait_healthy(&base).await;

        // Every acknowledged write is there, and retries answer as before.
        let sent = log.lock().unwrap().clone();
        let client_of = |org: &str| -> Client {
            if org == "operator" {
                operator.clone()
            } else {
                consumers.iter().find(|c| c.0 == org).unwrap().1.clone()
            }
        };
        let mut resolved: Vec<Sent> = Vec::with_capacity(sent.len());
        for s in sent {
            let c = client_of(&s.org);
            let again = send(&c, &s.path, s.body.clone(), &s.key)
                .await
                .expect("the restarted server answers");
            assert!(
                again.0 < 500,
                "{} {} answered {} after restart: {}",
                s.path,
                s.key,
                again.0,
                again.1
            );
            if let Some(original) = &s.answer {
                assert_eq!(
                    (again.0, without_request_id(again.1.clone())),
                    (original.0, without_request_id(original.1.clone())),
                    "round {round}: the retry of acknowledged {} {} changed its answer",
                    s.path,
                    s.key
                );
            }
            if s.path == "/api/v1/leases" && again.0 == 201 {
                let id = again.1["id"].as_str().unwrap();
                let (st, lease) = c
                    .raw(Method::GET, &format!("/api/v1/leases/{id}"), None, None)
                    .await
                    .unwrap();
                assert_eq!(st, 200, "acknowledged lease {id} is missing after restart");
                assert_eq!(lease["id"], again.1["id"]);
            }
            resolved.push(Sent {
                answer: Some(again),
                ..s
            });
        }
        // Acknowledged deposits are on the statements, exactly once each.
        let mut transfers_by_org: HashMap<String, Vec<String>> = HashMap::new();
        for (org, c) in &consumers {
            let mut after = 0i64;
            loop {
                let (st, page) = c
                    .raw(
                        Method::GET,
                        &format!("/api/v1/statement?after={after}&limit=1000"),
                        None,
                        None,
                    )
                    .await
                    .unwrap();
                assert_eq!(st, 200);
                for line in page["lines"].as_array().unwrap() {
                    transfers_by_org
                        .entry(org.clone())
                        .or_default()
                        .push(line["transfer_id"].as_str().unwrap().to_owned());
                }
                match page["next_after"].as_i64() {
                    Some(a) => after = a,
                    None => break,
                }
            }
        }
        for s in resolved.iter().filter(|s| s.path.ends_with("/deposits")) {
            let (status, body) = s.answer.as_ref().unwrap();
            if *status == 201 {
                let org = s.path.split('/').nth(4).unwrap();
                let id = body["id"].as_str().unwrap();
                let n = transfers_by_org
                    .get(org)
                    .map(|t| t.iter().filter(|t| *t == id).count())
                    .unwrap_or(0);
                assert_eq!(n, 1, "deposit {id} appears {n} times on the statement");
            }
        }
        *log.lock().unwrap() = resolved;
        let (st, check) = operator
            .raw(Method::GET, "/api/v1/ledger/check", None, None)
            .await
            .unwrap();
        assert_eq!(st, 200);
        assert_eq!(
            check["ok"],
            json!(true),
            "round {round}: ledger invariants violated after restart: {check}"
        );
    }
    let acknowledged = log
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.answer.as_ref().is_some_and(|a| a.0 < 300))
        .count();
    assert!(acknowledged > 0, "the load made no successful request");
    println!("{rounds} kills survived; {acknowledged} acknowledged writes checked");
    kill(&mut server);
    let _ = std::fs::remove_dir_all(&dir);
}
