//! The job commands of the `suanli` binary against a real exchange, with the agent's side driven
//! by hand (a real ed25519 key): `launch` fails over past an offer whose pool has no agent, uploads
//! the working directory, streams stdout, stderr and system lines, and reports the metered cost;
//! `launch --keep --detach`, `exec`, `logs`, `jobs`, `job show`, `cancel`, `lease end` and
//! `leases` work on the lease it kept; `launch` refuses to buy without a terminal or `--yes`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey};
use suanli_api::*;
use suanli_client::Client;
use suanli_server::ServerConfig;
use suanli_store::Location;

struct Exchange {
    base: String,
    operator: Client,
}

async fn exchange(dir: &Path) -> Exchange {
    let config = ServerConfig::new(Location::Sqlite(
        dir.join("x.db").to_string_lossy().into_owned(),
    ));
    let (state, boot) = suanli_server::start(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(suanli_server::serve_on(listener, state));
    Exchange {
        operator: Client::new(base.clone(), boot.token_secret),
        base,
    }
}

async fn admit(x: &Exchange, name: &str, kind: OrgKind) -> (String, Client, String) {
    let created = x
        .operator
        .create_org(
            &CreateOrgRequest {
                name: name.into(),
                kind,
                consumer_type: (kind == OrgKind::Consumer).then_some(ConsumerType::Enterprise),
                zone: "wuqing-core".into(),
                origin_region: "tianjin".into(),
                admin_name: None,
                admin_email: None,
            },
            None,
        )
        .await
        .unwrap();
    let secret = created.token.secret.clone();
    (
        created.org.id,
        Client::new(x.base.clone(), Some(secret.clone())),
        secret,
    )
}

fn general_offer(pool_id: &str, price_micros: u64) -> CreateOfferRequest {
    CreateOfferRequest {
        pool_id: pool_id.into(),
        class: "general".into(),
        cpus_per_unit: None,
        memory_mib_per_unit: 1024,
        price_micros_per_unit_hour: price_micros,
        min_units: None,
        max_units: None,
        valid_from: None,
        valid_until: None,
    }
}

/// A pool of one node of 8 CPUs and 16 GiB.
fn cpu_pool(name: &str, node: &str) -> CreatePoolRequest {
    CreatePoolRequest {
        name: name.into(),
        zone: "wuqing-core".into(),
        nodes: vec![NodeSpec {
            name: node.into(),
            cpus: 8,
            memory_mib: 16_384,
            accelerator_model: None,
            accelerators: 0,
            partition: None,
        }],
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The agent's side of the protocol, by hand.
struct FakeAgent {
    client: Client,
    id: String,
    key: SigningKey,
}

impl FakeAgent {
    async fn next_assignment(&self) -> Assignment {
        for _ in 0..30 {
            let mut answer = self
                .client
                .poll(
                    &self.id,
                    &PollRequest {
                        wait_ms: 2_000,
                        max: Some(1),
                    },
                )
                .await
                .unwrap();
            if let Some(a) = answer.assignments.pop() {
                return a;
            }
        }
        panic!("no assignment came");
    }

    async fn event(&self, a: &Assignment, state: &str, exit_code: Option<i32>) -> Job {
        let event = AttemptEvent {
            state: state.into(),
            exit_code,
            message: None,
            backend_id: None,
            started_ms: None,
            ended_ms: None,
        };
        self.client
            .attempt_event(&self.id, &a.attempt_id, &event, None)
            .await
            .unwrap()
    }

    async fn output(&self, a: &Assignment, chunks: &[(&str, &str)]) {
        let batch = LogBatch {
            chunks: chunks
                .iter()
                .enumerate()
                .map(|(i, (stream, data))| AgentLogChunk {
                    seq: i as u64 + 1,
                    stream: (*stream).into(),
                    data: (*data).into(),
                })
                .collect(),
        };
        self.client
            .logs(&self.id, &a.attempt_id, &batch)
            .await
            .unwrap();
    }

    async fn usage(&self, a: &Assignment, unit_ms: u64) -> UsageAck {
        let message = usage_message(&a.job_id, &a.attempt_id, 1, unit_ms, None, None);
        let record = UsageRecord {
            seq: 1,
            unit_ms,
            cpu_ms: None,
            peak_memory_mib: None,
            signature_hex: hex(&self.key.sign(message.as_bytes()).to_bytes()),
        };
        self.client
            .usage(
                &self.id,
                &a.attempt_id,
                &UsageBatch {
                    records: vec![record],
                },
            )
            .await
            .unwrap()
    }
}

/// Runs the CLI as the consumer; stdin is not a terminal.
fn cli(base: &str, token: &str, dir: &Path, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_suanli"));
    command
        .args(["--server", base, "--token", token])
        .args(args)
        .current_dir(dir)
        .env("SUANLI_CONFIG", dir.join("no-config.toml"))
        .env_remove("SUANLI_SERVER")
        .env_remove("SUANLI_TOKEN")
        .env_remove("SUANLI_PROFILE")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    command
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn run(mut command: tokio::process::Command) -> (Output, String, String) {
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the command finished")
        .unwrap();
    let (out, err) = text(&output);
    eprintln!(
        "=== {:?}\n--- stdout\n{out}--- stderr\n{err}",
        output.status
    );
    (output, out, err)
}

/// The word after `prefix` in `text`, where a prefix starting with a newline also matches at the
/// start.
fn word_after(text: &str, prefix: &str) -> String {
    let text = format!("\n{text}");
    let at = text
        .find(prefix)
        .unwrap_or_else(|| panic!("{prefix:?} in {text}"));
    text[at + prefix.len()..]
        .split(|c: char| c.is_whitespace() || c == ':' || c == ';')
        .next()
        .unwrap()
        .to_owned()
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(suanli_store::ops::new_id("suanli-cli-task"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_exec_logs_and_cancel_through_the_cli() {
    let dir = temp_dir();
    let x = exchange(&dir).await;
    let (_, provider, _) = admit(&x, "Local compute", OrgKind::Provider).await;
    let (cid, consumer, token) = admit(&x, "Driving Co", OrgKind::Consumer).await;
    x.operator
        .deposit(
            &cid,
            &DepositRequest {
                amount_micros: 1_000_000_000,
                external_ref: "bank-1".into(),
            },
            None,
        )
        .await
        .unwrap();

    let key = SigningKey::from_bytes(&[7; 32]);
    let agent = provider
        .register_agent(
            &RegisterAgentRequest {
                name: "fake-1".into(),
                zone: "wuqing-core".into(),
                public_key_hex: hex(&key.verifying_key().to_bytes()),
                backend: "local".into(),
                isolation: "test".into(),
                version: "0.1.0".into(),
                nodes: vec![NodeSpec {
                    name: "n1".into(),
                    cpus: 8,
                    memory_mib: 16_384,
                    accelerator_model: None,
                    accelerators: 0,
                    partition: None,
                }],
                pool_id: None,
            },
            None,
        )
        .await
        .unwrap();
    let fake = FakeAgent {
        client: provider.clone(),
        id: agent.id.clone(),
        key,
    };
    // 3.6 yuan per unit-hour: 1,000 micros per unit-second.
    let metered = provider
        .create_offer(&general_offer(&agent.pool_id, 3_600_000), None)
        .await
        .unwrap();
    // A cheaper offer on a pool that no agent serves: ranked first, bought, cancelled, skipped.
    let bare = provider
        .create_pool(&cpu_pool("bare", "b1"), None)
        .await
        .unwrap();
    let cheap = provider
        .create_offer(&general_offer(&bare.id, 1_000_000), None)
        .await
        .unwrap();

    std::fs::create_dir_all(dir.join("src/data")).unwrap();
    std::fs::write(dir.join("src/data/input.txt"), "42\n").unwrap();
    std::fs::create_dir_all(dir.join("src/.git")).unwrap();
    std::fs::write(dir.join("src/.git/HEAD"), "ref").unwrap();
    std::fs::write(
        dir.join("task.yaml"),
        "name: train\nresources:\n  cpus: 2\n  memory: 2\nzone: wuqing-core\nmax_price: 5\n\
         duration: 10m\ntime_limit: 5m\nenv: {SEED: 1}\nworkdir: ./src\nrun: |\n  cat data/input.txt\n",
    )
    .unwrap();

    // Without a terminal and without --yes, nothing is bought.
    let (status, _, err) = run(cli(&x.base, &token, &dir, &["launch", "task.yaml"])).await;
    assert!(!status.status.success());
    assert!(err.contains("--yes"), "{err}");

    // A bad task file is reported at its line before anything is bought.
    std::fs::write(
        dir.join("bad.yaml"),
        "resources:\n  cpus: 2\nduration: soon\nrun: x\n",
    )
    .unwrap();
    let (status, _, err) = run(cli(&x.base, &token, &dir, &["launch", "bad.yaml", "--yes"])).await;
    assert!(!status.status.success());
    assert!(err.contains("bad.yaml:3:1: duration: "), "{err}");
    let leases = consumer
        .list_leases(&LeaseListParams::default())
        .await
        .unwrap();
    assert!(leases.items.is_empty(), "nothing was bought: {leases:?}");

    // Launch: the cheap offer has no agent, so its lease is cancelled and the next is bought.
    let launch = tokio::spawn(run(cli(
        &x.base,
        &token,
        &dir,
        &["launch", "task.yaml", "--yes"],
    )));
    let a = fake.next_assignment().await;
    assert_eq!(a.units, 2);
    assert_eq!(a.task.name.as_deref(), Some("train"));
    assert_eq!(a.task.env["SEED"], "1");
    assert_eq!(a.task.time_limit_s, Some(300));
    let paths: Vec<&str> = a.task.workdir.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        ["data/input.txt"],
        "the .git directory is not uploaded"
    );
    fake.event(&a, "running", None).await;
    fake.output(
        &a,
        &[
            ("system", "setup done"),
            ("stdout", "42\n"),
            ("stderr", "warning: slow disk\n"),
        ],
    )
    .await;
    // 2 units, reported right after dispatch: at most 2 × 2 s of clock skew can have been used.
    assert_eq!(fake.usage(&a, 3_500).await.unit_ms, 3_500);
    fake.event(&a, "succeeded", Some(0)).await;
    let (status, out, err) = launch.await.unwrap();
    assert!(status.status.success(), "{out}\n{err}");
    assert!(
        out.contains(&cheap.id) && out.contains(&metered.id),
        "the quote: {out}"
    );
    assert!(out.contains("42\n"), "{out}");
    assert!(err.contains("has no agent to run jobs; its lease"), "{err}");
    assert!(err.contains("[suanli] setup done"), "{err}");
    assert!(err.contains("warning: slow disk"), "{err}");
    assert!(err.contains("succeeded with exit code 0"), "{err}");
    assert!(err.contains("job used 3.500 unit-s (¥0.003500)"), "{err}");
    assert!(err.contains("ended: cost ¥0.003500"), "{err}");
    let lease_id = word_after(&out, "\nlease ");
    let lease = consumer.get_lease(&lease_id).await.unwrap();
    assert_eq!(
        (lease.state.as_str(), lease.offer_id.as_str()),
        ("ended", metered.id.as_str())
    );
    assert_eq!(lease.cost_micros, Some(3_500));
    assert_eq!(lease.billed_unit_ms, Some(3_500));

    // launch --keep --detach returns once the job is queued; the lease stays.
    let (status, out, err) = run(cli(
        &x.base,
        &token,
        &dir,
        &["launch", "task.yaml", "--yes", "--keep", "--detach"],
    ))
    .await;
    assert!(status.status.success(), "{out}\n{err}");
    let kept = word_after(&out, "\nlease ");
    let first = word_after(&out, "\njob ");
    assert!(out.contains(&format!("suanli logs -f {first}")), "{out}");
    let a = fake.next_assignment().await;
    assert_eq!(a.job_id, first);
    fake.event(&a, "running", None).await;
    fake.output(&a, &[("stdout", "partial")]).await;
    fake.event(&a, "failed", Some(3)).await;

    // logs prints the output; jobs and job show list the job.
    let (status, out, _) = run(cli(&x.base, &token, &dir, &["logs", &first])).await;
    assert!(status.status.success());
    assert_eq!(out, "partial");
    let (_, out, _) = run(cli(&x.base, &token, &dir, &["jobs", "--lease", &kept])).await;
    assert!(out.starts_with("ID "), "{out}");
    assert!(out.contains(&first) && out.contains("failed"), "{out}");
    let (_, out, _) = run(cli(&x.base, &token, &dir, &["job", "show", &first])).await;
    assert!(
        out.contains("exit code") && out.contains(&a.attempt_id),
        "{out}"
    );

    // exec --run follows a job on the kept lease; a failed job makes the command fail.
    let exec = tokio::spawn(run(cli(
        &x.base,
        &token,
        &dir,
        &["exec", &kept, "--run", "exit 4"],
    )));
    let a = fake.next_assignment().await;
    assert_eq!(a.task.run, "exit 4");
    fake.event(&a, "running", None).await;
    fake.event(&a, "failed", Some(4)).await;
    let (status, _, err) = exec.await.unwrap();
    assert_eq!(status.status.code(), Some(1), "{err}");
    assert!(err.contains("failed with exit code 4"), "{err}");
    assert!(
        err.contains(&format!("lease {kept} is still active")),
        "{err}"
    );

    // cancel cancels a job, not a lease.
    let (_, out, _) = run(cli(
        &x.base,
        &token,
        &dir,
        &["exec", &kept, "--run", "sleep 100", "--detach"],
    ))
    .await;
    let job = word_after(&out, "\njob ");
    let (status, out, _) = run(cli(&x.base, &token, &dir, &["cancel", &job])).await;
    assert!(status.status.success());
    assert!(out.contains("cancelled"), "{out}");
    assert_eq!(
        consumer.get_lease(&kept).await.unwrap().state,
        "active",
        "the lease is kept"
    );

    // Leases show how they are billed; `lease end` ends one.
    let (_, out, _) = run(cli(&x.base, &token, &dir, &["leases"])).await;
    assert!(out.contains("BILLING") && out.contains("metered"), "{out}");
    let (status, out, _) = run(cli(&x.base, &token, &dir, &["lease", "end", &kept])).await;
    assert!(status.status.success());
    assert!(
        out.contains("metered (the unit-seconds its jobs used)"),
        "{out}"
    );
    assert_eq!(consumer.get_lease(&kept).await.unwrap().state, "ended");

    // The provider sees its agent.
    let provider_token = provider.token().unwrap().to_owned();
    let (_, out, _) = run(cli(&x.base, &provider_token, &dir, &["agents"])).await;
    assert!(out.contains(&agent.id) && out.contains("alive"), "{out}");

    std::fs::remove_dir_all(&dir).ok();
}

/// Issue 17: "excluded: 4 category" said neither what the offers were nor how to see them. The
/// quote now names them, per reason, with the option that widens the search.
#[tokio::test]
async fn a_quote_says_what_it_left_out_and_how_to_widen() {
    let dir = temp_dir();
    let x = exchange(&dir).await;
    let (_, provider, _) = admit(&x, "Local compute", OrgKind::Provider).await;
    let (_, _, token) = admit(&x, "Driving Co", OrgKind::Consumer).await;
    let pool = provider
        .create_pool(&cpu_pool("cpu", "c1"), None)
        .await
        .unwrap();
    for price in [1_000_000, 2_000_000] {
        provider
            .create_offer(&general_offer(&pool.id, price), None)
            .await
            .unwrap();
    }
    let (status, out, _) = run(cli(
        &x.base,
        &token,
        &dir,
        &["quote", "--class", "intelligent", "--duration", "1h"],
    ))
    .await;
    assert!(status.status.success());
    assert!(out.contains("no offer fits"), "{out}");
    assert!(out.contains("excluded 2 offers:"), "{out}");
    assert!(
        out.contains(
            "2 of another category than intelligent (general ×2): to see them, ask for their \
             category with --class or leave --class out"
        ),
        "{out}"
    );
    let (_, out, _) = run(cli(
        &x.base,
        &token,
        &dir,
        &[
            "quote",
            "--class",
            "general",
            "--units",
            "2",
            "--duration",
            "1h",
            "--max-price",
            "0.5",
        ],
    ))
    .await;
    assert!(
        out.contains(
            "2 above your max price of ¥0.500000/unit-h, the cheapest of them at \
             ¥1.000000/unit-h: raise --max-price"
        ),
        "{out}"
    );
}
