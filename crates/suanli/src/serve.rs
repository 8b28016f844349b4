//! `suanli serve`: one exchange process.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{bail, Context, Result};
use suanli_api::Zone;
use suanli_server::{Bootstrap, ServerConfig};
use suanli_store::{Location, WriterConfig};

use crate::args::ServeArgs;

/// Parses `id=name:kind` zone flags.
pub fn parse_zones(flags: &[String]) -> Result<Vec<Zone>> {
    if flags.is_empty() {
        return Ok(suanli_server::default_zones());
    }
    flags
        .iter()
        .map(|f| {
            let (id, rest) = f
                .split_once('=')
                .context("zones are written ID=NAME:KIND")?;
            let (name, kind) = rest
                .rsplit_once(':')
                .context("zones are written ID=NAME:KIND")?;
            suanli_core::validate::slug(id).map_err(|m| anyhow::anyhow!("zone id {id:?} {m}"))?;
            if kind != "core" && kind != "function" {
                bail!("zone kind is core or function, not {kind:?}");
            }
            Ok(Zone {
                id: id.into(),
                name: name.into(),
                kind: kind.into(),
            })
        })
        .collect()
}

/// Where the data lives: PostgreSQL when a URL is given, else SQLite in the data directory.
pub fn location(data_dir: &Path, database_url: Option<&str>) -> Result<Location> {
    match database_url {
        Some(url) => Ok(Location::parse(url)),
        None => {
            private_dir(data_dir, "data directory")?;
            let path = data_dir.join("suanli.db");
            Ok(Location::Sqlite(path.to_string_lossy().into_owned()))
        }
    }
}

/// Creates `dir` (and its parents) readable by this user only, or checks that an existing one is:
/// the exchange's database holds every org's tasks, logs and token hashes, and a job on an agent
/// of the same machine running as another user must not read it. An existing directory that
/// others can read is refused, with the command that fixes it.
pub fn private_dir(dir: &Path, what: &str) -> Result<()> {
    if !dir.exists() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(dir)
            .with_context(|| format!("create the {what} {}", dir.display()))?;
        return Ok(());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir)
            .with_context(|| format!("stat the {what} {}", dir.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            bail!(
                "the {what} {} can be read by other users (mode {:o}); it holds secrets and every \
                 org's data. Make it private: chmod -R go-rwx {}",
                dir.display(),
                mode & 0o777,
                dir.display()
            );
        }
    }
    Ok(())
}

/// Writes a secret to a file only its owner can read.
pub fn write_secret(path: &Path, secret: &str) -> Result<()> {
    std::fs::write(path, format!("{secret}\n"))
        .with_context(|| format!("write {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

pub fn config(args: &ServeArgs) -> Result<ServerConfig> {
    if args.fee_bps > suanli_core::validate::MAX_FEE_BPS {
        bail!("--fee-bps is at most 10000 (100%)");
    }
    let mut config = ServerConfig::new(location(&args.data_dir, args.database_url.as_deref())?);
    config.fee_bps = args.fee_bps;
    config.zones = parse_zones(&args.zones)?;
    config.writer = WriterConfig {
        max_batch: args.max_batch.max(1),
        ..WriterConfig::default()
    };
    if args.agent_suspect_after_s == 0 || args.agent_lost_after_s <= args.agent_suspect_after_s {
        bail!("--agent-lost-after-s must be longer than --agent-suspect-after-s, which must be at least 1");
    }
    config.suspect_after = std::time::Duration::from_secs(args.agent_suspect_after_s);
    config.lost_after = std::time::Duration::from_secs(args.agent_lost_after_s);
    if args.max_log_mib_per_job == 0 {
        bail!("--max-log-mib-per-job is at least 1");
    }
    config.max_log_bytes_per_job = args.max_log_mib_per_job.saturating_mul(1024 * 1024);
    config.objects = match &args.objects {
        Some(spec) => suanli_objects::StoreConfig::parse(spec)
            .map_err(|e| anyhow::anyhow!("--objects: {e}"))?,
        None => suanli_objects::StoreConfig::in_data_dir(&args.data_dir),
    };
    if args.data_approval_days == 0 || args.data_approval_days > 365 {
        bail!("--data-approval-days is 1 to 365");
    }
    config.data_approval_timeout = std::time::Duration::from_secs(args.data_approval_days * 86_400);
    Ok(config)
}

pub async fn run(args: ServeArgs) -> Result<()> {
    let config = config(&args)?;
    let store_kind = config.database.kind();
    let (
        state,
        Bootstrap {
            operator,
            token_secret,
        },
    ) = suanli_server::start(config).await?;
    if let Some(secret) = token_secret {
        let path = args.data_dir.join("operator.token");
        if args.database_url.is_none() {
            write_secret(&path, &secret)?;
        }
        println!(
            "Created the operator org {} ({}).",
            operator.name, operator.id
        );
        println!(
            "Operator admin token (shown once{}):",
            if args.database_url.is_none() {
                format!(", also in {}", path.display())
            } else {
                String::new()
            }
        );
        println!("  {secret}");
    }
    let addr: SocketAddr = format!("{}:{}", args.bind, args.port)
        .parse()
        .context("--bind and --port")?;
    suanli_server::serve(state, addr, |bound| {
        println!(
            "Suanli exchange listening on http://{bound} (store: {store_kind}, fee {} bps)",
            args.fee_bps
        );
        tracing::info!(%bound, "listening");
    })
    .await
}
