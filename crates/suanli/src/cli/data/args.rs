//! The arguments of `suanli data …`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// Parts of 64 MiB: large enough to move at full speed, small enough to resume cheaply.
pub const DEFAULT_PART_BYTES: u64 = 64 << 20;

/// The listing file's format, shown by `suanli data create --help`.
const LISTING_FILE_HELP: &str = "\
Listing file (YAML, or JSON when its name ends in .json):

  name: traffic-2026            # 2-64 of a-z 0-9 - _ . ; unique on the exchange
  kind: dataset                 # dataset | model
  title_zh: 北京交通流量数据集
  title_en: Beijing traffic flows
  description_zh: 2026 年北京市道路交通流量。
  description_en: Road traffic flows of Beijing in 2026.
  tags: [交通, traffic]
  card: |                       # Markdown
    # Beijing traffic flows
  licence: {spdx: CC-BY-4.0}    # or {text: \"the provider's own terms\"}
  access: download              # download | compute-only
  gating: automatic             # automatic | manual (the owner approves)
  price: {kind: per_version, price_micros: 10000000}
                                # free | per_version | per_period (with
                                # period_days); 1 yuan = 1000000 micros
  model: {framework: pytorch, format: safetensors, parameters: 7000000}
                                # models only";

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// List the datasets and models you can see (yours, and every published one).
    List {
        #[arg(long, value_parser = ["dataset", "model"])]
        kind: Option<String>,
        /// Start after this name (the last of the previous page).
        #[arg(long, value_name = "NAME")]
        after: Option<String>,
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
    },
    /// Show a listing: its card, licence, price and versions.
    Show {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// List a dataset or a model from a listing file (data provider).
    #[command(after_long_help = LISTING_FILE_HELP)]
    Create {
        /// The listing file (format below).
        #[arg(long, value_name = "LISTING.yaml")]
        file: PathBuf,
    },
    /// Upload a directory as a version of a listing (resumes an interrupted push).
    #[command(disable_version_flag = true)]
    Push(PushArgs),
    /// Download a version into a directory, verified (resumes an interrupted pull).
    Pull(PullArgs),
    /// Ask for access to a listing (paid, or held until its owner answers).
    Request(RequestArgs),
    /// Requests for access: yours, and those to your listings, newest first.
    Requests {
        #[arg(long, value_parser = ["pending", "approved", "denied", "withdrawn", "expired"])]
        state: Option<String>,
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
    },
    /// Approve a pending request to one of your listings: the buyer pays and may use it.
    Approve {
        #[arg(value_name = "REQUEST_ID")]
        id: String,
    },
    /// Deny a pending request to one of your listings: its hold is released.
    Deny {
        #[arg(value_name = "REQUEST_ID")]
        id: String,
    },
    /// Withdraw your pending request: its hold is released.
    Withdraw {
        #[arg(value_name = "REQUEST_ID")]
        id: String,
    },
    /// Your entitlements: which versions of which listings you may use, until when.
    Entitlements {
        /// Only this listing's.
        #[arg(long, value_name = "NAME")]
        listing: Option<String>,
    },
    /// Revoke an entitlement to one of your listings.
    Revoke {
        #[arg(value_name = "ENTITLEMENT_ID")]
        id: String,
    },
    /// Publish a version whose files are all uploaded; it never changes after.
    Publish {
        #[arg(value_name = "NAME@VERSION")]
        target: String,
    },
    /// Deprecate a published version (those entitled to it keep it).
    Deprecate {
        #[arg(value_name = "NAME@VERSION")]
        target: String,
    },
    /// Admit an org as a data provider, or stop admitting it with --revoke (operator).
    Admit {
        #[arg(value_name = "ORG_ID")]
        org_id: String,
        #[arg(long)]
        revoke: bool,
    },
}

impl DataCommand {
    /// Whether the command sends a request that changes the exchange.
    pub fn is_mutating(&self) -> bool {
        !matches!(
            self,
            DataCommand::List { .. }
                | DataCommand::Show { .. }
                | DataCommand::Pull(_)
                | DataCommand::Requests { .. }
                | DataCommand::Entitlements { .. }
        )
    }
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The directory: its regular files, by their paths under it (symbolic links are refused).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// The listing's name.
    #[arg(long, value_name = "NAME")]
    pub listing: String,
    /// The version's label (created when missing), e.g. v1 or 2026.12.
    #[arg(long, value_name = "V")]
    pub version: String,
    /// Publish the version once every file is uploaded.
    #[arg(long)]
    pub publish: bool,
    /// Bytes per part, a multiple of 64 (for tests).
    #[arg(long, hide = true, env = "SUANLI_DATA_PART_BYTES", value_parser = parse_part_bytes,
        default_value_t = DEFAULT_PART_BYTES)]
    pub part_bytes: u64,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// The listing, and a version (default: the newest published one).
    #[arg(value_name = "NAME[@VERSION]")]
    pub target: String,
    /// The directory the files go into, by their paths in the version.
    #[arg(long, value_name = "DIR")]
    pub dest: PathBuf,
}

#[derive(Debug, Args)]
pub struct RequestArgs {
    /// The listing, and the version (needed when it is sold per version).
    #[arg(value_name = "NAME[@VERSION]")]
    pub target: String,
    /// You read the listing's licence (`suanli data show NAME`) and accept it.
    #[arg(long)]
    pub accept_licence: bool,
    /// What the data is for (needed when the owner approves by hand).
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub purpose: String,
}

/// A part size: a multiple of 64 bytes, at least 64.
pub fn parse_part_bytes(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(n) if n >= 64 && n % 64 == 0 => Ok(n),
        _ => Err(format!(
            "{text:?} is not a part size: a multiple of 64 bytes, at least 64"
        )),
    }
}

/// `NAME[@VERSION]`.
pub fn split_target(text: &str) -> Result<(&str, Option<&str>), String> {
    let (name, version) = match text.split_once('@') {
        Some((name, version)) => (name, Some(version)),
        None => (text, None),
    };
    if name.is_empty() || version.is_some_and(|v| v.is_empty() || v.contains('@')) {
        return Err(format!(
            "{text:?} names no listing: write NAME or NAME@VERSION, e.g. traffic-2026@v1"
        ));
    }
    Ok((name, version))
}
