//! `suanli data` against a real exchange, through the real binary: a provider lists a dataset
//! from a YAML file and pushes a directory of three files in small parts (one file half-uploaded
//! before, so the push resumes it); pushing again sends nothing; `--publish` publishes. A
//! consumer is refused the bytes until it accepts the licence and buys access, then pulls the
//! version and gets the same bytes; a truncated `.part` left by an interrupted pull is resumed,
//! a corrupted one fails the checksum and leaves no file; a revoked entitlement downloads
//! nothing more. Manual approval, symbolic links and the operator's admission go through too.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use futures::TryStreamExt as _;
use serde_json::Value;
use sha2::{Digest, Sha256};
use suanli_api::*;
use suanli_client::Client;
use suanli_server::ServerConfig;
use suanli_store::Location;

/// Parts of 256 KiB, so that a file of 1 MiB goes in several.
const PART: usize = 256 * 1024;

struct Exchange {
    base: String,
    operator: Client,
    operator_token: String,
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
    let operator_token = boot.token_secret.clone().unwrap();
    Exchange {
        operator: Client::new(base.clone(), boot.token_secret),
        base,
        operator_token,
    }
}

async fn admit(x: &Exchange, name: &str, kind: OrgKind) -> (String, Client, String) {
    let created = x
        .operator
        .create_org(
            &CreateOrgRequest {
                name: name.into(),
                kind,
                consumer_type: (kind == OrgKind::Consumer)
                    .then_some(ConsumerType::ResearchInstitute),
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

/// The CLI acting with `token`; stdin and stderr are not terminals, so no bar is drawn.
fn cli(base: &str, token: &str, dir: &Path, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_suanli"));
    command
        .args(["--server", base, "--token", token])
        .args(args)
        .current_dir(dir)
        .env("SUANLI_CONFIG", dir.join("no-config.toml"))
        .env("SUANLI_DATA_PART_BYTES", PART.to_string())
        .env_remove("SUANLI_SERVER")
        .env_remove("SUANLI_TOKEN")
        .env_remove("SUANLI_PROFILE")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn run(mut command: tokio::process::Command) -> (Output, String, String) {
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("the command finished")
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    eprintln!(
        "=== {:?}\n--- stdout\n{out}--- stderr\n{err}",
        output.status
    );
    (output, out, err)
}

/// Runs a command that must succeed with `--json`, and returns its answer.
async fn json(base: &str, token: &str, dir: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (output, out, err) = run(cli(base, token, dir, &all)).await;
    assert!(output.status.success(), "{args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

/// Runs a command that must fail; returns its stderr.
async fn fails(base: &str, token: &str, dir: &Path, args: &[&str]) -> String {
    let (output, _, err) = run(cli(base, token, dir, args)).await;
    assert!(!output.status.success(), "{args:?} succeeded");
    err
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `n` reproducible bytes.
fn content(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(suanli_store::ops::new_id("suanli-cli-data"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The status of each file in a push's or a pull's answer, by path.
fn statuses(answer: &Value) -> Vec<(String, String, Option<u64>)> {
    answer["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_owned(),
                f["status"].as_str().unwrap().to_owned(),
                f["resumed_from"].as_u64(),
            )
        })
        .collect()
}

const LISTING: &str = "\
name: traffic-2026
kind: dataset
title_zh: 北京交通流量数据集
title_en: Beijing traffic flows
tags: [交通, traffic]
card: |
  # Beijing traffic flows
  Hourly flows per road segment.
licence: {spdx: CC-BY-4.0}
access: download
gating: automatic
price: {kind: per_version, price_micros: 10000000}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_and_pull_a_dataset_through_the_cli_resuming_both_ways() {
    let dir = temp_dir();
    let x = exchange(&dir).await;
    let (_, provider, ptoken) = admit(&x, "AI Center", OrgKind::Provider).await;
    let (cid, _, ctoken) = admit(&x, "Institute", OrgKind::Consumer).await;
    x.operator
        .deposit(
            &cid,
            &DepositRequest {
                amount_micros: 100_000_000,
                external_ref: "bank-1".into(),
            },
            None,
        )
        .await
        .unwrap();
    let (base, p, c) = (x.base.as_str(), ptoken.as_str(), ctoken.as_str());

    std::fs::write(dir.join("listing.yaml"), LISTING).unwrap();
    let listing = json(base, p, &dir, &["data", "create", "--file", "listing.yaml"]).await;
    assert_eq!(listing["name"], "traffic-2026");
    assert_eq!(listing["visible"], false);

    // Three files; the largest goes in five parts.
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("flows/2026")).unwrap();
    let files = [
        ("README.md", b"# flows\n".to_vec()),
        ("flows/2026/01.csv", content((1 << 20) + 100, 1)),
        ("flows/segments.csv", content(300_007, 2)),
    ];
    for (path, bytes) in &files {
        std::fs::write(src.join(path), bytes).unwrap();
    }
    let big = &files[1].1;

    // An earlier push that stopped after one part of the large file.
    provider
        .create_version("traffic-2026", "v1", None)
        .await
        .unwrap();
    let request = AddFileRequest {
        path: files[1].0.into(),
        size: big.len() as u64,
        sha256: sha256(big),
    };
    provider
        .add_file("traffic-2026", "v1", &request, None)
        .await
        .unwrap();
    let first = provider
        .upload_part_bytes(
            "traffic-2026",
            "v1",
            files[1].0,
            0,
            big[..PART].to_vec(),
            None,
        )
        .await
        .unwrap();
    assert_eq!((first.received_bytes, first.verified), (PART as u64, false));
    // Discarded and sent again: the exchange counts from 0 after a restart.
    let restarted = provider
        .restart_upload("traffic-2026", "v1", files[1].0, None)
        .await
        .unwrap();
    assert_eq!(restarted.received_bytes, 0);
    let first = provider
        .upload_part_bytes(
            "traffic-2026",
            "v1",
            files[1].0,
            0,
            big[..PART].to_vec(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(first.received_bytes, PART as u64);

    let src_arg = src.to_str().unwrap();
    let push = [
        "data",
        "push",
        src_arg,
        "--listing",
        "traffic-2026",
        "--version",
        "v1",
    ];
    let pushed = json(base, p, &dir, &push).await;
    assert_eq!(
        statuses(&pushed),
        [
            ("README.md".into(), "uploaded".into(), None),
            (files[1].0.into(), "resumed".into(), Some(PART as u64)),
            (files[2].0.into(), "uploaded".into(), None),
        ]
    );
    let total: usize = files.iter().map(|(_, b)| b.len()).sum();
    assert_eq!(pushed["sent_bytes"], (total - PART) as u64);
    assert_eq!(pushed["state"], "draft");

    // Again, and with --publish: nothing is sent twice.
    let mut publish = push.to_vec();
    publish.push("--publish");
    for _ in 0..2 {
        let again = json(base, p, &dir, &publish).await;
        assert_eq!(again["sent_bytes"], 0, "{again}");
        assert!(statuses(&again).iter().all(|(_, s, _)| s == "present"));
        assert_eq!(again["state"], "published");
    }

    // The client reads a range as a stream; the ETag is the file's SHA-256.
    let range = provider
        .download(
            "traffic-2026",
            "v1",
            files[1].0,
            PART as u64 - 5,
            Some(PART as u64 + 5),
        )
        .await
        .unwrap();
    assert_eq!(
        (range.status, range.start, range.length, range.size),
        (206, PART as u64 - 5, Some(10), Some(big.len() as u64))
    );
    assert_eq!(range.sha256.as_deref(), Some(sha256(big).as_str()));
    let chunks: Vec<bytes::Bytes> = range.into_stream().try_collect().await.unwrap();
    assert_eq!(chunks.concat(), big[PART - 5..PART + 5]);

    // A directory with a symbolic link is refused, naming it.
    let linked = dir.join("linked");
    std::fs::create_dir_all(&linked).unwrap();
    std::fs::write(linked.join("ok.txt"), "ok").unwrap();
    std::os::unix::fs::symlink("/etc/hostname", linked.join("host")).unwrap();
    let err = fails(
        base,
        p,
        &dir,
        &[
            "data",
            "push",
            linked.to_str().unwrap(),
            "--listing",
            "traffic-2026",
            "--version",
            "v2",
        ],
    )
    .await;
    assert!(
        err.contains("symbolic links") && err.contains("host"),
        "{err}"
    );

    // The consumer sees it, with its licence and price, but has no access yet.
    let (output, out, _) = run(cli(base, c, &dir, &["data", "list"])).await;
    assert!(output.status.success());
    assert!(
        out.contains("traffic-2026") && out.contains("¥10.000000 per version"),
        "{out}"
    );
    let (output, out, _) = run(cli(base, c, &dir, &["data", "show", "traffic-2026"])).await;
    assert!(output.status.success());
    assert!(
        out.contains("CC-BY-4.0") && out.contains("Hourly flows") && out.contains("published"),
        "{out}"
    );
    let dest = dir.join("dest");
    let dest_arg = dest.to_str().unwrap();
    let err = fails(
        base,
        c,
        &dir,
        &["data", "pull", "traffic-2026", "--dest", dest_arg],
    )
    .await;
    assert!(err.contains("suanli data request"), "{err}");
    let err = fails(base, c, &dir, &["data", "request", "traffic-2026@v1"]).await;
    assert!(
        err.contains("CC-BY-4.0") && err.contains("--accept-licence"),
        "{err}"
    );
    let granted = json(
        base,
        c,
        &dir,
        &["data", "request", "traffic-2026@v1", "--accept-licence"],
    )
    .await;
    assert_eq!(granted["request"]["state"], "approved", "{granted}");
    let entitlement = granted["entitlement"]["id"].as_str().unwrap().to_owned();

    // The newest published version, every file verified and in place.
    let pulled = json(
        base,
        c,
        &dir,
        &["data", "pull", "traffic-2026", "--dest", dest_arg],
    )
    .await;
    assert_eq!(pulled["version"], "v1");
    assert!(
        statuses(&pulled).iter().all(|(_, s, _)| s == "downloaded"),
        "{pulled}"
    );
    for (path, bytes) in &files {
        assert!(std::fs::read(dest.join(path)).unwrap() == *bytes, "{path}");
    }

    // An interrupted pull left 300,000 good bytes in the .part: the rest is asked for.
    let target = dest.join(files[1].0);
    let part = dest.join(format!("{}.part", files[1].0));
    std::fs::remove_file(&target).unwrap();
    std::fs::write(&part, &big[..300_000]).unwrap();
    let resumed = json(
        base,
        c,
        &dir,
        &["data", "pull", "traffic-2026@v1", "--dest", dest_arg],
    )
    .await;
    assert_eq!(
        statuses(&resumed),
        [
            ("README.md".into(), "present".into(), None),
            (files[1].0.into(), "resumed".into(), Some(300_000)),
            (files[2].0.into(), "present".into(), None),
        ]
    );
    assert_eq!(resumed["received_bytes"], (big.len() - 300_000) as u64);
    assert!(std::fs::read(&target).unwrap() == *big);
    assert!(!part.exists());

    // A .part with wrong bytes: the whole file's checksum fails, and nothing is left.
    std::fs::remove_file(&target).unwrap();
    std::fs::write(&part, vec![0u8; 300_000]).unwrap();
    let err = fails(
        base,
        c,
        &dir,
        &["data", "pull", "traffic-2026@v1", "--dest", dest_arg],
    )
    .await;
    assert!(
        err.contains("checksum mismatch") && err.contains(files[1].0),
        "{err}"
    );
    assert!(!target.exists() && !part.exists());
    // A file in the way with other bytes is not overwritten.
    std::fs::write(&target, b"mine").unwrap();
    let err = fails(
        base,
        c,
        &dir,
        &["data", "pull", "traffic-2026@v1", "--dest", dest_arg],
    )
    .await;
    assert!(err.contains("move it away"), "{err}");
    assert_eq!(std::fs::read(&target).unwrap(), b"mine");
    std::fs::remove_file(&target).unwrap();
    json(
        base,
        c,
        &dir,
        &["data", "pull", "traffic-2026@v1", "--dest", dest_arg],
    )
    .await;
    assert!(std::fs::read(&target).unwrap() == *big);

    // The entitlement, listed and revoked: nothing more downloads.
    let listed = json(base, c, &dir, &["data", "entitlements"]).await;
    assert_eq!(listed["items"][0]["id"], entitlement.as_str());
    let revoked = json(base, p, &dir, &["data", "revoke", &entitlement]).await;
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    let other = dir.join("other");
    let err = fails(
        base,
        c,
        &dir,
        &[
            "data",
            "pull",
            "traffic-2026@v1",
            "--dest",
            other.to_str().unwrap(),
        ],
    )
    .await;
    assert!(err.contains("forbidden"), "{err}");

    // Manual approval: the request waits with its purpose, the owner approves it.
    let gated = LISTING
        .replace("traffic-2026", "gated-flows")
        .replace("gating: automatic", "gating: manual")
        .replace(
            "{kind: per_version, price_micros: 10000000}",
            "{kind: free}",
        );
    std::fs::write(dir.join("gated.json"), "not json").unwrap();
    let err = fails(base, p, &dir, &["data", "create", "--file", "gated.json"]).await;
    assert!(err.contains("not a listing file"), "{err}");
    std::fs::write(dir.join("gated.yaml"), gated).unwrap();
    json(base, p, &dir, &["data", "create", "--file", "gated.yaml"]).await;
    let one = dir.join("one");
    std::fs::create_dir_all(&one).unwrap();
    std::fs::write(one.join("a.csv"), "a,b\n1,2\n").unwrap();
    let v = json(
        base,
        p,
        &dir,
        &[
            "data",
            "push",
            one.to_str().unwrap(),
            "--listing",
            "gated-flows",
            "--version",
            "2026.1",
        ],
    )
    .await;
    assert_eq!(v["state"], "draft");
    let published = json(base, p, &dir, &["data", "publish", "gated-flows@2026.1"]).await;
    assert_eq!(published["state"], "published");
    let asked = json(
        base,
        c,
        &dir,
        &[
            "data",
            "request",
            "gated-flows",
            "--accept-licence",
            "--purpose",
            "交通规划研究",
        ],
    )
    .await;
    assert_eq!(asked["request"]["state"], "pending");
    let id = asked["request"]["id"].as_str().unwrap().to_owned();
    let pending = json(base, p, &dir, &["data", "requests", "--state", "pending"]).await;
    assert_eq!(pending["items"][0]["id"], id.as_str());
    assert_eq!(pending["items"][0]["purpose"], "交通规划研究");
    let approved = json(base, p, &dir, &["data", "approve", &id]).await;
    assert_eq!(approved["request"]["state"], "approved");
    let got = json(
        base,
        c,
        &dir,
        &[
            "data",
            "pull",
            "gated-flows",
            "--dest",
            other.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(got["version"], "2026.1");
    assert_eq!(std::fs::read(other.join("a.csv")).unwrap(), b"a,b\n1,2\n");
    let deprecated = json(base, p, &dir, &["data", "deprecate", "gated-flows@2026.1"]).await;
    assert_eq!(deprecated["state"], "deprecated");
    let err = fails(
        base,
        c,
        &dir,
        &[
            "data",
            "pull",
            "gated-flows",
            "--dest",
            other.to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        err.contains("no published version") && err.contains("deprecated"),
        "{err}"
    );

    // The operator admits the consumer as a data provider.
    let (output, out, _) = run(cli(base, &x.operator_token, &dir, &["data", "admit", &cid])).await;
    assert!(output.status.success());
    assert!(out.contains("is admitted as a data provider"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
