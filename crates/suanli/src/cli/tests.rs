//! The command line: its values parse, and its commands parse to what [`run`](super::run) runs.

use std::path::PathBuf;

use clap::Parser as _;
use suanli_api as api;

use super::args::*;
use super::format::{price, signed_yuan, yuan, yuan_arg};
use super::{fresh_idempotency_key, id, is_mutating};

#[test]
fn durations_parse_and_format() {
    assert_eq!(parse_duration("90s"), Ok(90));
    assert_eq!(parse_duration("30m"), Ok(1_800));
    assert_eq!(parse_duration("2h"), Ok(7_200));
    assert_eq!(parse_duration("1d"), Ok(86_400));
    assert_eq!(parse_duration("3600"), Ok(3_600));
    assert_eq!(parse_duration(" 2H "), Ok(7_200));
    for bad in ["", "h", "2x", "-1h", "1.5h", "0", "0m", "2hh"] {
        assert!(parse_duration(bad).is_err(), "{bad:?}");
    }
    assert!(parse_duration("99999999999999999999d").is_err());
    assert_eq!(format_duration(90), "90s");
    assert_eq!(format_duration(5_400), "90m");
    assert_eq!(format_duration(7_200), "2h");
    assert_eq!(format_duration(172_800), "2d");
    for seconds in [1, 59, 60, 3_599, 3_600, 86_400, 90_000] {
        assert_eq!(parse_duration(&format_duration(seconds)), Ok(seconds));
    }
}

#[test]
fn amounts_are_yuan() {
    assert_eq!(parse_amount("1000"), Ok(1_000_000_000));
    assert_eq!(parse_amount("12.5"), Ok(12_500_000));
    assert_eq!(parse_money("0"), Ok(0));
    let err = parse_amount("0").unwrap_err();
    assert!(err.contains("more than zero"), "{err}");
    for bad in ["", "abc", "-5", "1.2345678", "1,5", "99999999999999999999"] {
        let err = parse_amount(bad).unwrap_err();
        assert!(err.contains("not an amount in yuan"), "{bad:?}: {err}");
    }
    assert_eq!(yuan(12_500_000), "¥12.500000");
    assert_eq!(signed_yuan(-3_000_001), "-¥3.000001");
    assert_eq!(price(36_000), "¥0.036000/unit-h");
    assert_eq!(yuan_arg(12_500_000), "12.5");
    assert_eq!(yuan_arg(1_000_000_000), "1000");
    assert_eq!(yuan_arg(0), "0");
    assert_eq!(parse_money(&yuan_arg(36_000)), Ok(36_000));
}

#[test]
fn node_specs_parse() {
    let node = parse_node_spec("gpu-01:96:1024:H100-80G:8").unwrap();
    assert_eq!(
        node,
        api::NodeSpec {
            name: "gpu-01".into(),
            cpus: 96,
            memory_mib: 1024 * 1024,
            accelerator_model: Some("H100-80G".into()),
            accelerators: 8,
            partition: None,
        }
    );
    let node = parse_node_spec("cn-01:64:256@batch").unwrap();
    assert_eq!(node.partition.as_deref(), Some("batch"));
    assert_eq!(
        (node.cpus, node.memory_mib, node.accelerators),
        (64, 256 * 1024, 0)
    );
    assert_eq!(node.accelerator_model, None);
    let node = parse_node_spec("g:8:0.5:A800:2@p1").unwrap();
    assert_eq!(
        (node.memory_mib, node.partition.as_deref()),
        (512, Some("p1"))
    );
    for bad in [
        "",
        "n",
        "n:1",
        ":1:1",
        "n:x:1",
        "n:1:x",
        "n:1:1:M",
        "n:1:1::2",
        "n:1:1:M:x",
        "n:1:1@",
        "n:1:1@a@b",
        "n:1:1:M:2:3",
    ] {
        assert!(parse_node_spec(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn gpus_and_memory_parse() {
    assert_eq!(
        parse_gpus("H100-80G:8"),
        Ok(GpuSpec {
            model: "H100-80G".into(),
            count: Some(8)
        })
    );
    assert_eq!(
        parse_gpus("A800"),
        Ok(GpuSpec {
            model: "A800".into(),
            count: None
        })
    );
    for bad in ["", ":8", "H100:", "H100:0", "H100:x"] {
        assert!(parse_gpus(bad).is_err(), "{bad:?}");
    }
    assert_eq!(parse_gib_to_mib("256"), Ok(256 * 1024));
    assert_eq!(parse_gib_to_mib("0.5"), Ok(512));
    assert!(parse_gib_to_mib("0.0001").is_err());
    assert!(parse_gib_to_mib("x").is_err());
    assert!(parse_rfc3339("2026-01-31T00:00:00Z").is_ok());
    assert!(parse_rfc3339("2026-01-31").is_err());
}

#[test]
fn the_command_line_parses() {
    use clap::CommandFactory;
    Cli::command().debug_assert();

    let cli = Cli::try_parse_from([
        "suanli",
        "--json",
        "pool",
        "create",
        "--name",
        "p",
        "--zone",
        "z",
        "--node",
        "a:1:1",
        "b:2:2@x",
        "--node",
        "c:3:3:M:1",
    ])
    .unwrap();
    assert!(cli.json);
    match cli.command {
        Command::Pool(PoolCommand::Create { nodes, .. }) => assert_eq!(nodes.len(), 3),
        other => panic!("{other:?}"),
    }

    let cli = Cli::try_parse_from([
        "suanli",
        "quote",
        "--gpus",
        "H100-80G:8",
        "--duration",
        "2h",
        "--max-price",
        "12.5",
    ])
    .unwrap();
    match cli.command {
        Command::Quote(q) => {
            assert_eq!(
                (q.duration_s, q.max_price_micros),
                (7_200, Some(12_500_000))
            );
            assert_eq!(q.gpus.map(|g| g.count), Some(Some(8)));
        }
        other => panic!("{other:?}"),
    }

    let cli = Cli::try_parse_from([
        "suanli",
        "withdraw",
        "org_1",
        "12.5",
        "--ref",
        "r",
        "--from",
        "earnings",
        "--idempotency-key",
        "k1",
    ])
    .unwrap();
    assert_eq!(cli.idempotency_key.as_deref(), Some("k1"));
    assert!(is_mutating(&cli.command));
    match cli.command {
        Command::Withdraw(w) => {
            assert_eq!(
                (w.amount_micros, w.source),
                (12_500_000, SourceArg::Earnings)
            )
        }
        other => panic!("{other:?}"),
    }

    let cli = Cli::try_parse_from([
        "suanli",
        "org",
        "create",
        "--name",
        "n",
        "--kind",
        "consumer",
        "--consumer-type",
        "research_institute",
        "--zone",
        "z",
        "--origin-region",
        "tianjin",
    ])
    .unwrap();
    assert!(is_mutating(&cli.command));
    assert!(!is_mutating(
        &Cli::try_parse_from(["suanli", "leases"]).unwrap().command
    ));

    assert!(
        Cli::try_parse_from(["suanli", "deposit", "org_1", "1.2345678", "--ref", "r"]).is_err()
    );
    assert!(Cli::try_parse_from(["suanli", "buy", "off_1", "--units", "1"]).is_err());
}

#[test]
fn job_commands_parse() {
    let parse =
        |args: &[&str]| Cli::try_parse_from(std::iter::once("suanli").chain(args.iter().copied()));
    match parse(&["launch", "t.yaml", "-y", "--keep", "-d"])
        .unwrap()
        .command
    {
        Command::Launch(a) => {
            assert_eq!(a.task, PathBuf::from("t.yaml"));
            assert!(a.yes && a.keep && a.detach);
        }
        other => panic!("{other:?}"),
    }
    match parse(&["exec", "lease_1", "--run", "echo hi", "--name", "n"])
        .unwrap()
        .command
    {
        Command::Exec(a) => {
            assert_eq!(
                (a.lease_id.as_str(), a.run.as_deref(), a.task),
                ("lease_1", Some("echo hi"), None)
            );
            assert_eq!(a.name.as_deref(), Some("n"));
        }
        other => panic!("{other:?}"),
    }
    assert!(parse(&["exec", "lease_1", "t.yaml"]).is_ok());
    assert!(parse(&["exec", "lease_1"]).is_err(), "a task or --run");
    assert!(parse(&["exec", "lease_1", "t.yaml", "--run", "x"]).is_err());
    match parse(&["logs", "-f", "job_1"]).unwrap().command {
        Command::Logs(a) => assert!(a.follow && a.job_id == "job_1"),
        other => panic!("{other:?}"),
    }
    assert!(parse(&["jobs", "--lease", "l", "--state", "timed_out"]).is_ok());
    assert!(parse(&["jobs", "--state", "done"]).is_err());
    assert!(parse(&["job", "show", "job_1"]).is_ok());
    for mutating in [
        &["cancel", "job_1"][..],
        &["lease", "cancel", "lease_1"],
        &["lease", "end", "lease_1"],
        &["end", "lease_1"],
        &["launch", "t.yaml"],
        &["exec", "lease_1", "--run", "x"],
    ] {
        assert!(
            is_mutating(&parse(mutating).unwrap().command),
            "{mutating:?}"
        );
    }
    for reading in [
        &["jobs"][..],
        &["job", "show", "j"],
        &["logs", "j"],
        &["agents"],
        &["lease", "show", "l"],
    ] {
        assert!(
            !is_mutating(&parse(reading).unwrap().command),
            "{reading:?}"
        );
    }
    match parse(&["agent", "--config", "a.toml"]).unwrap().command {
        Command::Agent(a) => assert_eq!(a.config, PathBuf::from("a.toml")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn idempotency_keys_are_fresh() {
    let a = fresh_idempotency_key().unwrap();
    let b = fresh_idempotency_key().unwrap();
    assert_ne!(a, b);
    assert_eq!(a.len(), 4 + 32);
    assert!(a.starts_with("cli-"));
}

#[test]
fn ids_typed_on_the_command_line_are_of_their_kind() {
    let lease = "lease_0190a5b2c3d4e5f60718293a4b5";
    assert_eq!(id::<api::LeaseId>(lease).unwrap().as_str(), lease);
    assert_eq!(
        id::<api::LeaseId>("job_0190a5b2c3d4e5f60718293a4b5")
            .unwrap_err()
            .to_string(),
        "\"job_0190a5b2c3d4e5f60718293a4b5\" is not a lease id: it is a job id"
    );
    assert_eq!(
        id::<api::JobId>("j").unwrap_err().to_string(),
        "\"j\" is not a job id: job ids start with \"job_\""
    );
    assert!(id::<api::OrgId>("org_1").is_err());
    // Ids made before ids were time-ordered are ids still.
    assert!(id::<api::OrgId>("org_a94c03d1e8f7b265").is_ok());
}
