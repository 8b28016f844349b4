//! `suanli demo`: the exchange on 127.0.0.1 with SQLite, and a demo market created through the
//! real API: an operator, three providers (general, AI and supercomputing centers) with pools and
//! offers, and two funded consumers. Writes CLI profiles for every demo org.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use suanli_api::{
    ConsumerType, CreateOfferRequest, CreateOrgRequest, CreatePoolRequest, DepositRequest,
    NodeSpec, OrgKind,
};
use suanli_client::Client;

use crate::args::{DemoArgs, ServeArgs};
use crate::profiles::{self, Profile};

/// What the demo remembers between runs, in `DATA_DIR/demo.json` (mode 0600: it holds tokens).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DemoState {
    orgs: Vec<DemoOrg>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct DemoOrg {
    profile: String,
    org_id: String,
    name: String,
    kind: String,
    token: String,
}

fn node(
    name: &str,
    cpus: u64,
    memory_gib: u64,
    gpu: Option<(&str, u64)>,
    partition: Option<&str>,
) -> NodeSpec {
    NodeSpec {
        name: name.into(),
        cpus,
        memory_mib: memory_gib * 1024,
        accelerator_model: gpu.map(|(m, _)| m.to_owned()),
        accelerators: gpu.map(|(_, n)| n).unwrap_or(0),
        partition: partition.map(Into::into),
    }
}

fn offer(
    pool_id: &str,
    class: &str,
    cpus_per_unit: Option<u64>,
    memory_gib_per_unit: u64,
    yuan_per_unit_hour: f64,
    max_units: u64,
) -> CreateOfferRequest {
    CreateOfferRequest {
        pool_id: pool_id.into(),
        class: class.into(),
        cpus_per_unit,
        memory_mib_per_unit: memory_gib_per_unit * 1024,
        // Demo prices are written in yuan for reading; converted once, exactly, to micros.
        price_micros_per_unit_hour: (yuan_per_unit_hour * 1_000_000.0).round() as u64,
        min_units: None,
        max_units: Some(max_units),
        valid_from: None,
        valid_until: None,
    }
}

/// Creates the demo market through the API with the operator's token.
async fn seed(base: &str, operator_token: &str) -> Result<DemoState> {
    let op = Client::new(base, Some(operator_token.to_owned()));
    let me = op.me().await.context("the operator token works")?;
    let mut orgs = vec![DemoOrg {
        profile: "operator".into(),
        org_id: me.org.id.clone(),
        name: me.org.name.clone(),
        kind: "operator".into(),
        token: operator_token.into(),
    }];
    let admit = |profile: &str,
                 name: &str,
                 kind: OrgKind,
                 consumer_type: Option<ConsumerType>,
                 zone: &str,
                 origin: &str| {
        (
            profile.to_owned(),
            CreateOrgRequest {
                name: name.into(),
                kind,
                consumer_type,
                zone: zone.into(),
                origin_region: origin.into(),
                admin_name: Some("admin".into()),
                admin_email: None,
            },
        )
    };
    let requests = [
        admit(
            "general-center",
            "Wuqing General Compute Center 武清通用算力中心",
            OrgKind::Provider,
            None,
            "wuqing-devzone",
            "tianjin",
        ),
        admit(
            "ai-center",
            "Jingjin AI Compute Center 京津智算中心",
            OrgKind::Provider,
            None,
            "wuqing-core",
            "tianjin",
        ),
        admit(
            "hpc-center",
            "Tianjin Supercomputing Center (demo) 天津超算中心",
            OrgKind::Provider,
            None,
            "wuqing-core",
            "tianjin",
        ),
        admit(
            "enterprise",
            "Jingqing Autonomous Driving Co. 京清智驾科技",
            OrgKind::Consumer,
            Some(ConsumerType::Enterprise),
            "jingqing-auto",
            "beijing",
        ),
        admit(
            "institute",
            "Synthetic Biology Research Institute 合成生物研究院",
            OrgKind::Consumer,
            Some(ConsumerType::ResearchInstitute),
            "wuqing-core",
            "tianjin",
        ),
    ];
    for (profile, req) in requests {
        let key = format!("demo-org-{profile}");
        let created = op
            .create_org(&req, Some(&key))
            .await
            .with_context(|| format!("admit {}", req.name))?;
        orgs.push(DemoOrg {
            profile,
            org_id: created.org.id,
            name: created.org.name,
            kind: created.org.kind.as_str().into(),
            token: created.token.secret,
        });
    }
    let client_of = |profile: &str| {
        let org = orgs
            .iter()
            .find(|o| o.profile == profile)
            .expect("admitted above");
        Client::new(base, Some(org.token.clone()))
    };

    // General compute: this very machine, through a real agent (started by `run`), which
    // registers its pool and capacity; its offer is published once the agent is up.

    // Intelligent compute: H100 servers in the core zone; A800 and Ascend servers in the
    // development zone.
    let ai = client_of("ai-center");
    let core_pool = ai
        .create_pool(
            &CreatePoolRequest {
                name: "h100-cluster".into(),
                zone: "wuqing-core".into(),
                nodes: vec![
                    node("gpu-01", 128, 1024, Some(("H100-80G", 8)), None),
                    node("gpu-02", 128, 1024, Some(("H100-80G", 8)), None),
                ],
            },
            Some("demo-pool-h100"),
        )
        .await?;
    ai.create_offer(
        &offer(
            &core_pool.id,
            "intelligent:H100-80G",
            Some(16),
            128,
            28.0,
            16,
        ),
        Some("demo-offer-h100"),
    )
    .await?;
    let dev_pool = ai
        .create_pool(
            &CreatePoolRequest {
                name: "mixed-accelerators".into(),
                zone: "wuqing-devzone".into(),
                nodes: vec![
                    node("a800-01", 96, 768, Some(("A800-80G", 8)), None),
                    node("npu-01", 192, 1536, Some(("Ascend-910B", 8)), None),
                ],
            },
            Some("demo-pool-mixed"),
        )
        .await?;
    ai.create_offer(
        &offer(&dev_pool.id, "intelligent:A800-80G", Some(12), 96, 19.5, 8),
        Some("demo-offer-a800"),
    )
    .await?;
    ai.create_offer(
        &offer(
            &dev_pool.id,
            "intelligent:Ascend-910B",
            Some(24),
            192,
            16.0,
            8,
        ),
        Some("demo-offer-910b"),
    )
    .await?;

    // Supercomputing: a batch partition of eight 64-core nodes, sold by the core-hour.
    let hpc = client_of("hpc-center");
    let nodes = (1..=8)
        .map(|i| node(&format!("cn{i:03}"), 64, 256, None, Some("batch")))
        .collect();
    let pool = hpc
        .create_pool(
            &CreatePoolRequest {
                name: "batch-cluster".into(),
                zone: "wuqing-core".into(),
                nodes,
            },
            Some("demo-pool-hpc"),
        )
        .await?;
    hpc.create_offer(
        &offer(&pool.id, "supercomputing:batch", None, 4, 0.03, 512),
        Some("demo-offer-hpc"),
    )
    .await?;

    // Fund the consumers.
    for (profile, yuan, reference) in [
        ("enterprise", 100_000u64, "demo-bank-0001"),
        ("institute", 50_000, "demo-bank-0002"),
    ] {
        let org = orgs
            .iter()
            .find(|o| o.profile == profile)
            .expect("admitted above");
        op.deposit(
            &org.org_id,
            &DepositRequest {
                amount_micros: yuan * 1_000_000,
                external_ref: reference.into(),
            },
            Some(&format!("demo-deposit-{profile}")),
        )
        .await?;
    }
    Ok(DemoState { orgs })
}

fn write_state(path: &Path, state: &DemoState) -> Result<()> {
    crate::serve::write_secret(path, &serde_json::to_string_pretty(state)?)
}

/// The general center's agent: a real `suanli agent` on this machine, in this process.
async fn start_local_agent(base: &str, data_dir: &Path, token: &str) -> Result<PathBuf> {
    let dir = data_dir.join("agent");
    std::fs::create_dir_all(&dir)?;
    let dir = dir.canonicalize()?;
    let token_file = dir.join("provider.token");
    crate::serve::write_secret(&token_file, token)?;
    // Jobs run as nobody when the demo runs as root: their directories must be reachable by it,
    // which a data directory under a private home may not be.
    let tag = path_tag(&dir);
    let jobs_dir = std::env::temp_dir().join(format!("suanli-demo-jobs-{tag:016x}"));
    let state_dir = dir.join("state");
    let config_path = dir.join("agent.toml");
    let text = format!(
        "# The demo's local agent (general center). See docs/PROVIDERS.md.\n\
         server = \"{base}\"\ntoken_file = \"{}\"\nname = \"demo-local\"\nzone = \"wuqing-devzone\"\n\
         state_dir = \"{}\"\njobs_dir = \"{}\"\n\
         # The exchange's data directory (its database, every org's tokens): jobs never see it.\n\
         hide = [\"{}\"]\n",
        token_file.display(),
        state_dir.display(),
        jobs_dir.display(),
        data_dir.canonicalize()?.display()
    );
    spawn_agent(&config_path, text, "local")?;
    Ok(config_path)
}

/// Runs a command, true when it succeeds (false when it cannot even start).
fn command_ok(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn slurm_answers() -> bool {
    std::process::Command::new("scontrol")
        .arg("ping")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("is UP"))
}

/// The supercomputing center's Slurm agent (`--with-slurm`): sells the local Slurm's default
/// partition. Returns the partition, or `None` (having said why and how to fix it) when there is
/// no Slurm to use.
async fn start_slurm_agent(base: &str, data_dir: &Path, token: &str) -> Result<Option<String>> {
    const INSTALL: &str =
        "sudo apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge";
    if !command_ok("sinfo", &["--version"]) {
        println!(
            "--with-slurm: Slurm is not installed here. Install and start a single-node Slurm with"
        );
        println!("  {INSTALL}");
        println!("  sudo scripts/slurm.sh start");
        println!("then run the demo again with --with-slurm. Going on without it.");
        return Ok(None);
    }
    if !slurm_answers() {
        let script = Path::new("scripts/slurm.sh");
        if suanli_agent::running_as_root() && script.exists() {
            println!("--with-slurm: starting a single-node Slurm (scripts/slurm.sh start)");
            if !command_ok("scripts/slurm.sh", &["start"]) {
                println!("--with-slurm: scripts/slurm.sh start failed; going on without Slurm");
                return Ok(None);
            }
        } else {
            println!("--with-slurm: Slurm is installed but its controller does not answer.");
            println!("  Start it (as root, from the repository): sudo scripts/slurm.sh start");
            println!("Going on without it.");
            return Ok(None);
        }
    }
    let out = std::process::Command::new("scontrol")
        .args(["-o", "show", "partition"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let partitions: Vec<(String, bool)> = text
        .lines()
        .map(suanli_agent::slurm::parse::parse_kv_line)
        .filter_map(|kv| {
            Some((
                kv.get("PartitionName")?.clone(),
                kv.get("Default").is_some_and(|d| d == "YES"),
            ))
        })
        .collect();
    let Some(partition) = partitions
        .iter()
        .find(|(_, default)| *default)
        .or(partitions.first())
        .map(|(p, _)| p.clone())
    else {
        println!("--with-slurm: this Slurm has no partition; going on without it");
        return Ok(None);
    };
    let dir = data_dir.join("slurm-agent");
    std::fs::create_dir_all(&dir)?;
    let dir = dir.canonicalize()?;
    let token_file = dir.join("provider.token");
    crate::serve::write_secret(&token_file, token)?;
    let jobs_dir =
        std::env::temp_dir().join(format!("suanli-demo-slurm-jobs-{:016x}", path_tag(&dir)));
    // As root the agent must be allowed to run as root; jobs run as nobody. Otherwise jobs run
    // as the user running the demo (the agent cannot submit as anyone else).
    let (allow_root, account) = if suanli_agent::running_as_root() {
        (true, "nobody".to_owned())
    } else {
        (
            false,
            std::env::var("USER").unwrap_or_else(|_| "nobody".into()),
        )
    };
    let config_path = dir.join("agent.toml");
    let text = format!(
        "# The demo's Slurm agent (supercomputing center). See docs/SUPERCOMPUTING.md.\n\
         server = \"{base}\"\ntoken_file = \"{}\"\nname = \"demo-slurm\"\nzone = \"wuqing-core\"\n\
         state_dir = \"{}\"\njobs_dir = \"{}\"\nbackend = \"slurm\"\n\n\
         [slurm]\nallow_root = {allow_root}\ndefault_account = \"{account}\"\n\n\
         [[slurm.partitions]]\nname = \"{partition}\"\nprice_per_unit_hour = \"0.04\"\n",
        token_file.display(),
        dir.join("state").display(),
        jobs_dir.display()
    );
    spawn_agent(&config_path, text, "Slurm")?;
    // Wait until its offer is published, so the guide's commands work at once.
    let hpc = Client::new(base, Some(token.to_owned()));
    let class = format!("supercomputing:{partition}");
    for _ in 0..300 {
        let live = hpc
            .list_agents()
            .await?
            .items
            .iter()
            .any(|a| a.backend == "slurm");
        if live
            && hpc
                .list_offers()
                .await?
                .items
                .iter()
                .any(|o| o.class == class && o.state == "active")
        {
            return Ok(Some(partition));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    bail!("the demo's Slurm agent did not publish its offer (see its messages above)")
}

/// Writes an agent's config and runs the agent in this process.
fn spawn_agent(config_path: &Path, text: String, what: &'static str) -> Result<()> {
    std::fs::write(config_path, text)?;
    let config = crate::agent::AgentConfig::load(config_path)?;
    let path = config_path.to_owned();
    tokio::spawn(async move {
        if let Err(e) = crate::agent::run_with(config, path).await {
            eprintln!("the demo's {what} agent stopped: {e:#}");
        }
    });
    Ok(())
}

/// A stable tag for a directory, to name its jobs directory under the temp dir.
fn path_tag(dir: &Path) -> u64 {
    dir.to_string_lossy()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
}

/// Waits for the general center's agent and publishes its offer once.
async fn agent_pool(base: &str, token: &str) -> Result<suanli_api::Pool> {
    let general = Client::new(base, Some(token.to_owned()));
    for _ in 0..300 {
        if let Some(agent) = general.list_agents().await?.items.into_iter().next() {
            let pool = general.get_pool(&agent.pool_id).await?;
            if general
                .list_offers()
                .await?
                .items
                .iter()
                .all(|o| o.pool_id != pool.id)
            {
                let node = &pool.nodes[0];
                let per_cpu_gib = (node.memory_mib / node.cpus.max(1) / 1024).clamp(1, 4);
                let o = offer(&pool.id, "general", None, per_cpu_gib, 0.05, node.cpus);
                general.create_offer(&o, Some("demo-offer-local")).await?;
            }
            return Ok(pool);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    bail!("the demo's local agent did not register")
}

pub async fn run(args: DemoArgs) -> Result<()> {
    if args.fresh && args.data_dir.exists() {
        std::fs::remove_dir_all(&args.data_dir)
            .with_context(|| format!("remove {}", args.data_dir.display()))?;
    }
    let serve_args = ServeArgs {
        data_dir: args.data_dir.clone(),
        database_url: None,
        bind: "127.0.0.1".into(),
        port: args.port,
        fee_bps: 500,
        max_batch: 1024,
        zones: Vec::new(),
        agent_suspect_after_s: 15,
        agent_lost_after_s: 60,
        max_log_mib_per_job: 128,
        objects: None,
        data_approval_days: 7,
    };
    let config = crate::serve::config(&serve_args)?;
    let db_path = match &config.database {
        suanli_store::Location::Sqlite(p) => p.clone(),
        suanli_store::Location::Postgres(u) => u.clone(),
    };
    let (state, boot) = suanli_server::start(config).await?;
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], args.port)))
        .await
        .with_context(|| format!("port {} is taken; pass --port", args.port))?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(suanli_server::serve_on(listener, state));
    let base = format!("http://{addr}");
    let state_path = args.data_dir.join("demo.json");
    let demo = match (boot.token_secret, state_path.exists()) {
        (Some(secret), _) => {
            let demo = seed(&base, &secret)
                .await
                .context("create the demo market")?;
            write_state(&state_path, &demo)?;
            println!("Created a new demo market in {}.", args.data_dir.display());
            demo
        }
        (None, true) => {
            let text = std::fs::read_to_string(&state_path)?;
            println!(
                "Reopened the demo market in {} (pass --fresh to start over).",
                args.data_dir.display()
            );
            serde_json::from_str(&text).context("read demo.json")?
        }
        (None, false) => bail!(
            "{} holds an exchange that the demo did not create; pass --fresh or another --data-dir",
            args.data_dir.display()
        ),
    };
    let general_token = demo
        .orgs
        .iter()
        .find(|o| o.profile == "general-center")
        .map(|o| o.token.clone())
        .context("demo.json names the general center")?;
    let agent_config = start_local_agent(&base, &args.data_dir, &general_token).await?;
    let local_pool = agent_pool(&base, &general_token).await?;
    let slurm_partition = if args.with_slurm {
        let hpc_token = demo
            .orgs
            .iter()
            .find(|o| o.profile == "hpc-center")
            .map(|o| o.token.clone())
            .context("demo.json names the supercomputing center")?;
        start_slurm_agent(&base, &args.data_dir, &hpc_token).await?
    } else {
        None
    };
    let profiles: Vec<(String, Profile)> = demo
        .orgs
        .iter()
        .map(|o| {
            (
                o.profile.clone(),
                Profile {
                    server: Some(base.clone()),
                    token: Some(o.token.clone()),
                    org_id: Some(o.org_id.clone()),
                    org_name: Some(o.name.clone()),
                },
            )
        })
        .collect();
    let config_path = profiles::config_path();
    profiles::save_profiles(&config_path, &profiles, Some("enterprise"))?;
    print_guide(
        &base,
        &db_path,
        &config_path,
        &demo,
        &local_pool,
        &agent_config,
        slurm_partition.as_deref(),
    );
    if args.setup_only {
        return Ok(());
    }
    println!("Serving until Ctrl-C. Data survives a restart; `suanli demo --fresh` starts over.");
    tokio::select! {
        r = server => { r??; }
        _ = tokio::signal::ctrl_c() => { println!("stopped"); }
    }
    Ok(())
}

fn print_guide(
    base: &str,
    db_path: &str,
    config_path: &Path,
    demo: &DemoState,
    pool: &suanli_api::Pool,
    agent_config: &Path,
    slurm_partition: Option<&str>,
) {
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| {
            let cwd = std::env::current_dir().ok()?;
            Some(
                p.strip_prefix(&cwd)
                    .map(|r| format!("./{}", r.display()))
                    .unwrap_or_else(|_| p.display().to_string()),
            )
        })
        .unwrap_or_else(|| "suanli".into());
    println!();
    println!("Suanli demo exchange   {base}");
    println!("  API                  {base}/api/v1   (OpenAPI: {base}/api/v1/openapi.json)");
    println!("  store                SQLite, {db_path}");
    println!(
        "  CLI profiles         {} (default: enterprise)",
        config_path.display()
    );
    println!();
    let width = demo
        .orgs
        .iter()
        .map(|o| o.profile.len())
        .max()
        .unwrap_or(8)
        .max(8);
    println!(
        "  {:<width$}  {:<9}  {:<20}  ORG",
        "PROFILE", "KIND", "ORG ID"
    );
    for o in &demo.orgs {
        println!(
            "  {:<width$}  {:<9}  {:<20}  {}",
            o.profile, o.kind, o.org_id, o.name
        );
    }
    println!();
    println!("Tokens are in the profiles (and in demo.json); use one directly with");
    println!("  curl -H \"Authorization: Bearer $TOKEN\" {base}/api/v1/me");
    println!();
    let node = &pool.nodes[0];
    println!(
        "general-center runs a live agent on this machine (pool {}): {} CPUs, {} MiB, {} accelerators,",
        pool.id, node.cpus, node.memory_mib, node.accelerators
    );
    println!(
        "  as measured; config {}. Jobs on its offer run here for real.",
        agent_config.display()
    );
    match slurm_partition {
        Some(p) => {
            println!(
                "hpc-center runs a live Slurm agent: it sells partition {p} of this machine's Slurm"
            );
            println!(
                "  (supercomputing:{p}, 0.04 CNY per core-hour); jobs there become Slurm jobs (see squeue)."
            );
            println!(
                "ai-center has no live agent, nor hpc-center's batch partition: their capacity is what"
            );
            println!("they registered, and their leases reserve it without running jobs.");
        }
        None => {
            println!(
                "ai-center and hpc-center have no live agent: their capacity is what they registered,"
            );
            println!(
                "and their leases reserve it without running jobs (suanli demo --with-slurm makes"
            );
            println!("hpc-center sell this machine's Slurm through a real Slurm agent).");
        }
    }
    println!();
    println!("Try it from another terminal (alias suanli={exe}):");
    println!("  suanli launch examples/hello.yaml --yes          # quote, buy, run on the live agent, follow logs");
    println!("  suanli catalog                                   # every offer, cheapest first");
    println!("  suanli quote --gpus H100-80G:8 --duration 2h     # ranked offers and exclusions");
    println!("  suanli buy OFFER_ID --units 8 --duration 2h      # hold escrow, reserve, lease");
    println!("  suanli leases");
    println!(
        "  suanli end LEASE_ID                              # settle the time used, rounded once"
    );
    println!("  suanli balance && suanli statement");
    println!("  suanli --profile ai-center earnings");
    println!(
        "  suanli --profile institute quote --class supercomputing:batch --cpus 256 --duration 6h"
    );
    if slurm_partition.is_some() {
        println!("  suanli --profile institute launch examples/slurm.yaml --yes   # a real Slurm job, billed core-seconds");
    }
    println!("  suanli --profile operator ledger check");
    println!();
}
