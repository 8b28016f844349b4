//! What this machine really has: CPUs, memory and accelerators, as the agent will offer them.
//!
//! [`detect`] reads the kernel (cgroup quotas, `/proc/meminfo`) and asks the vendor tools
//! (`nvidia-smi`, `npu-smi`) when they are installed; a machine without them reports no
//! accelerators, never invented ones. The tools' outputs are parsed by pure functions
//! ([`parse_nvidia_smi`], [`parse_npu_smi`]) that map product names to the exchange's registry
//! names (`H100-80G`, `Ascend-910B`, …). [`apply_override`] lets the agent's config replace what
//! was detected (source `config`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cgroupfs;

/// How long a vendor tool may take before it is killed and ignored.
const TOOL_TIMEOUT: Duration = Duration::from_secs(15);

/// What this machine can offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineCapacity {
    pub hostname: String,
    pub cpus: u64,
    pub memory_mib: u64,
    pub accelerators: Vec<AcceleratorGroup>,
}

/// Identical accelerators of one model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceleratorGroup {
    /// Registry-style name, e.g. `H100-80G`, `A800-80G`, `Ascend-910B`.
    pub model: String,
    pub count: u64,
    pub memory_gib: u32,
    /// Where it was learnt: `nvidia-smi`, `npu-smi` or `config`.
    pub source: String,
}

/// Explicit values from the agent's config; `None` keeps what was detected.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityOverride {
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub cpus: Option<u64>,
    #[serde(default)]
    pub memory_mib: Option<u64>,
    /// Replaces every detected accelerator when present (an empty list offers none).
    #[serde(default)]
    pub accelerators: Option<Vec<AcceleratorConfig>>,
}

/// One accelerator group as written in the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceleratorConfig {
    pub model: String,
    pub count: u64,
    pub memory_gib: u32,
}

/// Detects this machine's capacity. Blocking (it reads files and may run the vendor tools, each
/// with a timeout); from async code use [`detect_async`].
pub fn detect() -> MachineCapacity {
    let mut accelerators = Vec::new();
    if let Some(out) = run_tool("nvidia-smi", &NVIDIA_SMI_DIRS, &NVIDIA_SMI_ARGS) {
        accelerators.extend(parse_nvidia_smi(&out));
    }
    if let Some(out) = run_tool("npu-smi", &NPU_SMI_DIRS, &["info"]) {
        accelerators.extend(parse_npu_smi(&out));
    }
    MachineCapacity {
        hostname: hostname(),
        cpus: detect_cpus(),
        memory_mib: detect_memory_mib(),
        accelerators,
    }
}

/// [`detect`] on tokio's blocking pool.
pub async fn detect_async() -> MachineCapacity {
    tokio::task::spawn_blocking(detect)
        .await
        .expect("capacity detection panicked")
}

/// Applies the config's explicit values to what was detected. Accelerators given in the config
/// replace the detected ones and carry source `config`.
pub fn apply_override(detected: MachineCapacity, config: &CapacityOverride) -> MachineCapacity {
    let mut out = detected;
    if let Some(h) = &config.hostname {
        out.hostname = h.clone();
    }
    if let Some(c) = config.cpus {
        out.cpus = c;
    }
    if let Some(m) = config.memory_mib {
        out.memory_mib = m;
    }
    if let Some(accs) = &config.accelerators {
        out.accelerators = accs
            .iter()
            .filter(|a| a.count > 0)
            .map(|a| AcceleratorGroup {
                model: a.model.clone(),
                count: a.count,
                memory_gib: a.memory_gib,
                source: "config".into(),
            })
            .collect();
    }
    out
}

fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| cgroupfs::read_trimmed(Path::new(p)).filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "localhost".into())
}

/// CPUs: the cgroup CPU quota when one limits us (the tightest along our cgroup's ancestors),
/// else the CPUs this process may run on.
fn detect_cpus() -> u64 {
    let parallelism = std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1);
    let quota = cgroupfs::hierarchies()
        .iter()
        .filter(|h| h.v2 || h.has("cpu"))
        .flat_map(|h| h.own_and_ancestors().into_iter().map(move |d| (h.v2, d)))
        .filter_map(|(v2, dir)| {
            if v2 {
                parse_cpu_max(&cgroupfs::read_trimmed(&dir.join("cpu.max"))?)
            } else {
                let quota = cgroupfs::read_trimmed(&dir.join("cpu.cfs_quota_us"))?;
                let period = cgroupfs::read_trimmed(&dir.join("cpu.cfs_period_us"))?;
                quota_cpus(quota.parse().ok()?, period.parse().ok()?)
            }
        })
        .min();
    quota.map_or(parallelism, |q| q.min(parallelism)).max(1)
}

/// `cpu.max` (v2): `max 100000` (no limit) or `QUOTA PERIOD`.
pub(crate) fn parse_cpu_max(text: &str) -> Option<u64> {
    let mut it = text.split_whitespace();
    let quota = it.next()?;
    let period: i64 = it.next().unwrap_or("100000").parse().ok()?;
    quota_cpus(quota.parse().ok()?, period)
}

/// Whole CPUs granted by a CFS quota (rounded down, at least one); `None` when unlimited.
fn quota_cpus(quota: i64, period: i64) -> Option<u64> {
    (quota > 0 && period > 0).then(|| ((quota / period) as u64).max(1))
}

/// Memory: `MemTotal`, or the cgroup memory limit when lower.
fn detect_memory_mib() -> u64 {
    let total_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| parse_meminfo_total_kib(&t))
        .unwrap_or(0);
    let total = total_kib.saturating_mul(1024);
    let limit = cgroupfs::hierarchies()
        .iter()
        .filter(|h| h.v2 || h.has("memory"))
        .flat_map(|h| h.own_and_ancestors().into_iter().map(move |d| (h.v2, d)))
        .filter_map(|(v2, dir)| {
            let file = if v2 {
                "memory.max"
            } else {
                "memory.limit_in_bytes"
            };
            cgroupfs::read_trimmed(&dir.join(file))?.parse::<u64>().ok()
        })
        .min();
    let bytes = match limit {
        Some(l) if total == 0 || l < total => l,
        _ => total,
    };
    bytes / (1024 * 1024)
}

pub(crate) fn parse_meminfo_total_kib(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix("MemTotal:")?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

const NVIDIA_SMI_ARGS: [&str; 2] = [
    "--query-gpu=name,memory.total",
    "--format=csv,noheader,nounits",
];
const NVIDIA_SMI_DIRS: [&str; 2] = ["/usr/bin", "/usr/local/nvidia/bin"];
const NPU_SMI_DIRS: [&str; 3] = [
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/local/Ascend/driver/tools",
];

/// Finds a tool on `PATH` or in its usual directories.
pub(crate) fn find_tool(name: &str, extra_dirs: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra_dirs.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs a vendor tool with a timeout; its stdout when it exits 0.
fn run_tool(name: &str, dirs: &[&str], args: &[&str]) -> Option<String> {
    let path = find_tool(name, dirs)?;
    let mut child = Command::new(&path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| tracing::warn!("{}: {e}", path.display()))
        .ok()?;
    let mut stdout = child.stdout.take()?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + TOOL_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                tracing::warn!("{} did not answer in time; ignoring it", path.display());
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let out = reader.join().unwrap_or_default();
    match status {
        Some(st) if st.success() => Some(out),
        Some(st) => {
            tracing::info!("{} failed ({st}); no accelerators from it", path.display());
            None
        }
        None => None,
    }
}

/// Marketing memory sizes (GiB) that tools report a little under.
const NOMINAL_GIB: [u32; 28] = [
    1, 2, 3, 4, 6, 8, 10, 11, 12, 16, 20, 22, 24, 32, 40, 48, 64, 80, 94, 96, 128, 141, 144, 180,
    192, 256, 288, 384,
];

/// The nominal size of a device reporting `mib` MiB: the smallest marketing size not more than
/// 3% below and at most 15% above what is reported (drivers and ECC reserve some memory),
/// else the GiB rounded.
pub fn nominal_gib(mib: u64) -> u32 {
    let gib = mib as f64 / 1024.0;
    NOMINAL_GIB
        .iter()
        .copied()
        .find(|&n| f64::from(n) >= gib * 0.97 && f64::from(n) <= gib * 1.15)
        .unwrap_or(gib.round() as u32)
}

/// Known NVIDIA families and their usual memory (GiB).
const NVIDIA_FAMILIES: [(&str, u32); 22] = [
    ("GH200", 96),
    ("GB200", 186),
    ("B200", 180),
    ("H200", 141),
    ("H100", 80),
    ("H800", 80),
    ("H20", 96),
    ("A800", 80),
    ("A100", 80),
    ("A40", 48),
    ("A30", 24),
    ("A10G", 24),
    ("A10", 24),
    ("L40S", 48),
    ("L40", 48),
    ("L20", 48),
    ("L4", 24),
    ("V100S", 32),
    ("V100", 32),
    ("T4", 16),
    ("P100", 16),
    ("P40", 24),
];

/// A size written in a product name: `80GB`, `40G`.
fn size_token(t: &str) -> Option<u32> {
    let digits = t.strip_suffix("GB").or_else(|| t.strip_suffix('G'))?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Maps an NVIDIA product name (and its `memory.total` in MiB, when known) to a registry name
/// and the memory in GiB: `NVIDIA H100 80GB HBM3` → (`H100-80G`, 80),
/// `NVIDIA GeForce RTX 4090` → (`RTX4090-24G`, 24). Unknown products get a sanitised name from
/// the product and the memory, e.g. `NVIDIA-XYZ-48G`.
pub fn nvidia_registry_name(product: &str, memory_mib: Option<u64>) -> (String, u32) {
    let upper = product.trim().to_ascii_uppercase();
    let tokens: Vec<&str> = upper
        .split(|c: char| c.is_whitespace() || c == '-' || c == '_')
        .filter(|t| !t.is_empty())
        .collect();
    let named_gib = tokens.iter().find_map(|t| size_token(t));
    let measured_gib = memory_mib.filter(|&m| m > 0).map(nominal_gib);

    let family: Option<(String, u32)> = if let Some(i) = tokens.iter().position(|t| *t == "RTX") {
        // GeForce/workstation RTX: the model follows (`RTX 4090`, `RTX 4090 D`, `RTX A6000`).
        let mut model = String::from("RTX");
        for t in tokens.iter().skip(i + 1) {
            if size_token(t).is_some() || matches!(*t, "LAPTOP" | "GPU" | "GENERATION") {
                break;
            }
            model.push_str(t);
        }
        let default = match model.as_str() {
            "RTX4090" | "RTX4090D" | "RTX3090" | "RTX3090TI" | "RTXA5000" => 24,
            "RTX5090" => 32,
            "RTXA6000" | "RTX6000ADA" => 48,
            "RTX4080" | "RTX4080SUPER" => 16,
            _ => 0,
        };
        (model.len() > 3).then_some((model, default))
    } else {
        NVIDIA_FAMILIES.iter().find_map(|(name, gib)| {
            tokens
                .iter()
                .any(|t| t == name)
                .then(|| ((*name).to_owned(), *gib))
        })
    };

    let pick_gib = |default: u32| -> u32 {
        if let Some(n) = named_gib {
            return n;
        }
        match (measured_gib, default) {
            (Some(m), 0) => m,
            // The family's usual size unless the device clearly has another (H100 NVL: 94 GiB).
            (Some(m), d) if (f64::from(m) - f64::from(d)).abs() > f64::from(d) * 0.1 => m,
            (_, d) => d,
        }
    };

    match family {
        Some((model, default)) => {
            let gib = pick_gib(default);
            (format!("{model}-{gib}G"), gib)
        }
        None => {
            let gib = pick_gib(0);
            let base: Vec<String> = product
                .split(|c: char| !c.is_ascii_alphanumeric())
                .filter(|t| !t.is_empty() && size_token(&t.to_ascii_uppercase()).is_none())
                .map(str::to_owned)
                .collect();
            let base = if base.is_empty() {
                "GPU".to_owned()
            } else {
                base.join("-")
            };
            if gib == 0 {
                (base, 0)
            } else {
                (format!("{base}-{gib}G"), gib)
            }
        }
    }
}

/// Adds one device to the groups, keeping first-seen order.
fn add_device(groups: &mut Vec<AcceleratorGroup>, model: String, memory_gib: u32, source: &str) {
    if let Some(g) = groups
        .iter_mut()
        .find(|g| g.model == model && g.memory_gib == memory_gib)
    {
        g.count += 1;
    } else {
        groups.push(AcceleratorGroup {
            model,
            count: 1,
            memory_gib,
            source: source.into(),
        });
    }
}

/// Parses `nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits`: one
/// `NAME, MIB` line per GPU.
pub fn parse_nvidia_smi(output: &str) -> Vec<AcceleratorGroup> {
    let mut groups = Vec::new();
    for line in output.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (name, mem) = match line.rsplit_once(',') {
            Some((n, m)) => (n.trim(), m.trim()),
            None => (line, ""),
        };
        if name.is_empty() || name.contains("NVIDIA-SMI has failed") {
            continue;
        }
        let mib = mem
            .trim_end_matches("MiB")
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|&m| m > 0);
        let (model, gib) = nvidia_registry_name(name, mib);
        add_device(&mut groups, model, gib, "nvidia-smi");
    }
    groups
}

/// Maps an Ascend chip name and its HBM (MiB) to a registry name: 910B* with 64 GiB →
/// `Ascend-910B`, with 32 GiB → `Ascend-910B-32G`; others `Ascend-<chip>-<GiB>G`.
pub fn ascend_registry_name(chip: &str, memory_mib: u64) -> (String, u32) {
    let gib = nominal_gib(memory_mib);
    let chip: String = chip
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_uppercase();
    if chip.starts_with("910B") {
        if gib == 64 {
            return ("Ascend-910B".into(), gib);
        }
        return (format!("Ascend-910B-{gib}G"), gib);
    }
    (format!("Ascend-{chip}-{gib}G"), gib)
}

/// Parses the table of `npu-smi info`. Each NPU has a name row (`| 0  910B3 | OK | …`) followed
/// by one row per chip (`| 0 | 0000:C1:00.0 | 0  0 / 0  3373 / 65536 |`); each chip row is one
/// device whose memory is the total of the last `used / total` pair (HBM where the card has it,
/// else the chip's memory). The process table below is ignored.
pub fn parse_npu_smi(output: &str) -> Vec<AcceleratorGroup> {
    let mut groups = Vec::new();
    if !output.contains("npu-smi") {
        return groups;
    }
    let mut current: Option<String> = None;
    for line in output.lines() {
        let line = line.trim();
        if !line.starts_with('|') {
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if cells.len() < 3 {
            continue;
        }
        let first: Vec<&str> = cells[0].split_whitespace().collect();
        if first.is_empty() || first[0].parse::<u32>().is_err() {
            if cells[0].contains("Process") || cells[1].contains("Process") {
                current = None;
            }
            continue;
        }
        let is_bus_id = cells[1].contains(':') && cells[1].contains('.');
        if is_bus_id {
            // A chip row of the NPU named above.
            let Some(chip) = &current else { continue };
            let total = cells[2]
                .rsplit_once('/')
                .and_then(|(_, t)| t.split_whitespace().next())
                .and_then(|t| t.parse::<u64>().ok());
            if let Some(total) = total.filter(|&t| t > 0) {
                let (model, gib) = ascend_registry_name(chip, total);
                add_device(&mut groups, model, gib, "npu-smi");
            }
        } else if first.len() >= 2
            && first[1].parse::<u64>().is_err()
            && cells[1].chars().all(|c| c.is_ascii_alphabetic())
            && !cells[1].is_empty()
        {
            // A name row: `NPU  Name | Health | …`.
            current = Some(first[1].to_owned());
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(groups: &[AcceleratorGroup]) -> Vec<(String, u64, u32)> {
        groups
            .iter()
            .map(|g| (g.model.clone(), g.count, g.memory_gib))
            .collect()
    }

    #[test]
    fn nvidia_names_map_to_registry() {
        let cases = [
            ("NVIDIA H100 80GB HBM3", Some(81559), "H100-80G"),
            ("NVIDIA H100 PCIe", Some(81559), "H100-80G"),
            ("NVIDIA H100 NVL", Some(95830), "H100-94G"),
            ("NVIDIA A800-SXM4-80GB", Some(81920), "A800-80G"),
            ("NVIDIA A100-SXM4-40GB", Some(40960), "A100-40G"),
            ("NVIDIA A100 80GB PCIe", Some(81920), "A100-80G"),
            ("NVIDIA GeForce RTX 4090", Some(24564), "RTX4090-24G"),
            ("NVIDIA GeForce RTX 4090 D", Some(24564), "RTX4090D-24G"),
            ("NVIDIA L40S", Some(46068), "L40S-48G"),
            ("NVIDIA L40S", None, "L40S-48G"),
            ("NVIDIA H800", Some(81559), "H800-80G"),
            ("NVIDIA H20", Some(97871), "H20-96G"),
            ("NVIDIA H200", Some(143771), "H200-141G"),
            ("Tesla V100-SXM2-32GB", Some(32768), "V100-32G"),
            ("Tesla T4", Some(15360), "T4-16G"),
            ("NVIDIA XYZ", Some(46068), "NVIDIA-XYZ-48G"),
            ("NVIDIA XYZ 48GB", None, "NVIDIA-XYZ-48G"),
        ];
        for (product, mib, want) in cases {
            assert_eq!(nvidia_registry_name(product, mib).0, want, "{product}");
        }
    }

    #[test]
    fn nvidia_smi_output_is_grouped() {
        let out = "\
NVIDIA H100 80GB HBM3, 81559
NVIDIA H100 80GB HBM3, 81559
NVIDIA H100 80GB HBM3, 81559
NVIDIA H100 80GB HBM3, 81559
NVIDIA GeForce RTX 4090, 24564
";
        let g = parse_nvidia_smi(out);
        assert_eq!(
            names(&g),
            vec![("H100-80G".into(), 4, 80), ("RTX4090-24G".into(), 1, 24)]
        );
        assert!(g.iter().all(|g| g.source == "nvidia-smi"));

        let a800 = "NVIDIA A800-SXM4-80GB, 81920\n".repeat(8);
        assert_eq!(
            names(&parse_nvidia_smi(&a800)),
            vec![("A800-80G".into(), 8, 80)]
        );
        assert_eq!(parse_nvidia_smi(""), vec![]);
        assert_eq!(
            parse_nvidia_smi(
                "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."
            ),
            vec![]
        );
        // memory.total may be unavailable.
        assert_eq!(
            names(&parse_nvidia_smi("NVIDIA L40S, [N/A]\n")),
            vec![("L40S-48G".into(), 1, 48)]
        );
    }

    const NPU_910B: &str = "\
+------------------------------------------------------------------------------------------------+
| npu-smi 23.0.6                   Version: 23.0.6                                               |
+---------------------------+---------------+----------------------------------------------------+
| NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|
| Chip                      | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |
+===========================+===============+====================================================+
| 0     910B3               | OK            | 96.6        36                0    / 0             |
| 0                         | 0000:C1:00.0  | 0           0    / 0          3373 / 65536         |
+===========================+===============+====================================================+
| 1     910B3               | OK            | 89.0        35                0    / 0             |
| 0                         | 0000:C2:00.0  | 0           0    / 0          3370 / 65536         |
+===========================+===============+====================================================+
| 2     910B3               | OK            | 91.2        36                0    / 0             |
| 0                         | 0000:81:00.0  | 0           0    / 0          3369 / 65536         |
+===========================+===============+====================================================+
| 3     910B4               | Warning       | 90.4        37                0    / 0             |
| 0                         | 0000:82:00.0  | 0           0    / 0          3368 / 32768         |
+===========================+===============+====================================================+
+---------------------------+---------------+----------------------------------------------------+
| NPU     Chip              | Process id    | Process name             | Process memory(MB)      |
+===========================+===============+====================================================+
| 0       0                 | 2211839       | python3                  | 2711                    |
| No running processes found in NPU 1                                                            |
+===========================+===============+====================================================+
";

    const NPU_310P_DUO: &str = "\
+--------------------------------------------------------------------------------------------------------+
| npu-smi 23.0.0                                   Version: 23.0.0                                       |
+-------------------------------+-----------------+------------------------------------------------------+
| NPU     Name                  | Health          | Power(W)     Temp(C)           Hugepages-Usage(page) |
| Chip    Device                | Bus-Id          | AICore(%)    Memory-Usage(MB)                        |
+===============================+=================+======================================================+
| 8       310P3                 | OK              | NA           45                0     / 0             |
| 0       0                     | 0000:82:00.0    | 0            1782 / 44280                            |
| 1       1                     | 0000:82:00.0    | 0            1618 / 43693                            |
+===============================+=================+======================================================+
";

    #[test]
    fn npu_smi_tables() {
        let g = parse_npu_smi(NPU_910B);
        assert_eq!(
            names(&g),
            vec![
                ("Ascend-910B".into(), 3, 64),
                ("Ascend-910B-32G".into(), 1, 32)
            ]
        );
        assert!(g.iter().all(|g| g.source == "npu-smi"));
        assert_eq!(
            names(&parse_npu_smi(NPU_310P_DUO)),
            vec![("Ascend-310P3-48G".into(), 2, 48)]
        );
        assert_eq!(parse_npu_smi("command not found"), vec![]);
    }

    #[test]
    fn quotas_and_meminfo() {
        assert_eq!(parse_cpu_max("max 100000"), None);
        assert_eq!(parse_cpu_max("200000 100000"), Some(2));
        assert_eq!(parse_cpu_max("150000 100000"), Some(1));
        assert_eq!(parse_cpu_max("50000 100000"), Some(1));
        assert_eq!(quota_cpus(-1, 100000), None);
        assert_eq!(
            parse_meminfo_total_kib("MemTotal:       24683656 kB\nMemFree: 1 kB\n"),
            Some(24683656)
        );
        assert_eq!(nominal_gib(81559), 80);
        assert_eq!(nominal_gib(65536), 64);
        assert_eq!(nominal_gib(46068), 48);
    }

    #[test]
    fn config_overrides_detection() {
        let detected = MachineCapacity {
            hostname: "h".into(),
            cpus: 16,
            memory_mib: 64_000,
            accelerators: vec![AcceleratorGroup {
                model: "H100-80G".into(),
                count: 8,
                memory_gib: 80,
                source: "nvidia-smi".into(),
            }],
        };
        let same = apply_override(detected.clone(), &CapacityOverride::default());
        assert_eq!(same, detected);
        let cfg: CapacityOverride = serde_json::from_str(
            r#"{"cpus": 12, "accelerators": [{"model": "H100-80G", "count": 6, "memory_gib": 80}]}"#,
        )
        .unwrap();
        let out = apply_override(detected, &cfg);
        assert_eq!(out.cpus, 12);
        assert_eq!(out.memory_mib, 64_000);
        assert_eq!(out.accelerators.len(), 1);
        assert_eq!(out.accelerators[0].count, 6);
        assert_eq!(out.accelerators[0].source, "config");
    }
}
