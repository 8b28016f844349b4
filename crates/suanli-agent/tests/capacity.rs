//! Capacity detection on this very machine.

use suanli_agent::capacity::{self, CapacityOverride};

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
        .unwrap_or(false)
}

#[tokio::test]
async fn detect_reports_this_machine() {
    let c = capacity::detect_async().await;
    eprintln!("{c:?}");
    assert!(c.cpus >= 1);
    assert!(c.memory_mib > 0);
    assert!(!c.hostname.is_empty());
    let meminfo_mib = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap()
        / 1024;
    assert!(c.memory_mib <= meminfo_mib);
    let parallelism = std::thread::available_parallelism().unwrap().get() as u64;
    assert!(c.cpus <= parallelism);
    // No vendor tool here, so no accelerator may be reported (never invented ones).
    if !on_path("nvidia-smi")
        && !on_path("npu-smi")
        && !std::path::Path::new("/usr/local/Ascend").exists()
    {
        assert!(c.accelerators.is_empty(), "{:?}", c.accelerators);
    }
    let overridden = capacity::apply_override(
        c.clone(),
        &CapacityOverride {
            memory_mib: Some(1024),
            ..CapacityOverride::default()
        },
    );
    assert_eq!(overridden.memory_mib, 1024);
    assert_eq!(overridden.cpus, c.cpus);
}
