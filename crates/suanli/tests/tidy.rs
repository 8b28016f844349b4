//! Tidy tests: the shape of the code, checked like its behaviour (rust-analyzer's `tidy` is the
//! model). Each test names the rule it holds and, when it fails, what broke it and how to fix it.
//! ARCHITECTURE.md gives the reasons for each rule.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Source files may pass this many lines only with an entry in [`LONG_FILES`] saying why.
const MAX_LINES: usize = 800;

/// Files allowed past [`MAX_LINES`], each with the reason. An entry for a file that is no longer
/// long fails too, so the list stays true.
const LONG_FILES: &[(&str, &str)] = &[
    (
        "crates/suanli-store/src/sqlite.rs",
        "the SQLite backend: connection setup, the WAL buffer's VFS glue and the statement cache \
         belong together; its tests take a third of it",
    ),
    (
        "crates/suanli-agent/src/local/mod.rs",
        "the local backend's attempt lifecycle (start, re-attach, stop, sweep) with the tests that \
         run real sandboxed processes through it",
    ),
    (
        "crates/suanli-agent/src/slurm/mod.rs",
        "the Slurm backend's attempt lifecycle over sbatch/squeue/sacct with its tests against the \
         parsed outputs",
    ),
    (
        "crates/suanli/src/cli/task.rs",
        "the task file format: its parser, validation with a field path for every error, and the \
         tests of each error; one format, one file",
    ),
    (
        "crates/suanli-bench/src/jobs.rs",
        "the jobs benchmark drives a demo market, the real agent and real Slurm side by side; \
         the two peers' set-ups are long but one measurement",
    ),
    (
        "crates/suanli-client/src/lib.rs",
        "one typed method per API route; the client grows with the API and is read by route",
    ),
    (
        "crates/suanli-store/tests/conformance.rs",
        "the store conformance suite runs every case on SQLite and PostgreSQL; one suite per store \
         trait",
    ),
    (
        "crates/suanli-server/tests/hostile.rs",
        "the hostile-input run needs a valid request for every route of the OpenAPI document, \
         prepared in one market",
    ),
    (
        "crates/suanli/tests/agent_failures.rs",
        "each failure of a real agent (SIGKILL, SIGSTOP, lost exchange, slurmctld restart) is one \
         long scenario",
    ),
];

/// Crates `suanli-core` may depend on (transitively, normal dependencies): none of them does IO,
/// reads a clock or draws random numbers. Adding one means saying so here, after checking that.
const CORE_DEPENDENCIES: &[&str] = &[
    "suanli-core",
    "thiserror",
    "thiserror-impl",
    "proc-macro2",
    "quote",
    "syn",
    "unicode-ident",
    "unicode-normalization",
    "unicode-security",
    "unicode-script",
    "tinyvec",
    "tinyvec_macros",
];

/// What the core's own source must not name: IO, the clock, threads, the environment, randomness.
const CORE_FORBIDDEN: &[&str] = &[
    "std::fs",
    "std::net",
    "std::process",
    "std::thread",
    "std::env",
    "std::io::std",
    "SystemTime",
    "Instant",
    "UNIX_EPOCH",
    "rand::",
    "getrandom",
    "tokio",
];

/// Ways to read the wall clock. Only `crates/suanli-clock` may (ARCHITECTURE.md, "Time").
const CLOCK_READS: &[&str] = &[
    "SystemTime::now",
    "Utc::now",
    "Local::now",
    "OffsetDateTime::now",
];
const CLOCK_HOME: &str = "crates/suanli-clock/src/lib.rs";

/// The one crate allowed `unsafe` (its reasons are in its own docs).
const UNSAFE_HOME: &str = "crates/suanli-walbuf/";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the workspace root is two levels above this crate")
        .to_path_buf()
}

/// Every Rust source file under `crates/`, as (path relative to the workspace, text).
fn sources() -> Vec<(String, String)> {
    let root = workspace();
    let mut out = Vec::new();
    let mut stack = vec![root.join("crates")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.push((rel, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    out.sort();
    assert!(out.len() > 50, "found only {} source files", out.len());
    out
}

/// A line without its `//` comment (a `//` inside a string literal is rare in this code; a line
/// cut short there can only hide a match, and the tests below look for code, not strings).
fn code_of(line: &str) -> &str {
    let trimmed = line.trim_start();
    if trimmed.starts_with("//") {
        return "";
    }
    match line.find("// ") {
        Some(at) if !line[..at].contains('"') => &line[..at],
        _ => line,
    }
}

/// The lines of `text` that are code and contain `needle`, as "path:line: text".
fn code_lines_with(path: &str, text: &str, needle: &str) -> Vec<String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| code_of(l).contains(needle))
        .map(|(i, l)| format!("{path}:{}: {}", i + 1, l.trim()))
        .collect()
}

#[test]
fn long_files_say_why() {
    let allowed: BTreeMap<&str, &str> = LONG_FILES.iter().copied().collect();
    let mut unexplained = Vec::new();
    let mut long = BTreeSet::new();
    for (path, text) in sources() {
        let lines = text.lines().count();
        if lines > MAX_LINES {
            long.insert(path.clone());
            if !allowed.contains_key(path.as_str()) {
                unexplained.push(format!("{path}: {lines} lines"));
            }
        }
    }
    assert!(
        unexplained.is_empty(),
        "source files past {MAX_LINES} lines hold two things: split them, or add an entry to \
         LONG_FILES in crates/suanli/tests/tidy.rs saying why not:\n{}",
        unexplained.join("\n")
    );
    let stale: Vec<&str> = allowed
        .keys()
        .filter(|p| !long.contains(**p))
        .copied()
        .collect();
    assert!(
        stale.is_empty(),
        "LONG_FILES lists files that are no longer past {MAX_LINES} lines (or no longer exist); \
         remove them: {stale:?}"
    );
    for (path, why) in LONG_FILES {
        assert!(
            why.len() > 40,
            "the reason for {path} says too little: {why:?}"
        );
    }
}

#[test]
fn only_suanli_walbuf_contains_unsafe() {
    let mut found = Vec::new();
    for (path, text) in sources() {
        if path.starts_with(UNSAFE_HOME) {
            continue;
        }
        // The needles are assembled so that this file does not match itself.
        let word = "unsafe";
        for after in [" {", " fn", " impl", " trait", " extern"] {
            found.extend(code_lines_with(&path, &text, &format!("{word}{after}")));
        }
        found.extend(code_lines_with(
            &path,
            &text,
            &format!("allow({word}_code)"),
        ));
    }
    assert!(
        found.is_empty(),
        "`unsafe` outside {UNSAFE_HOME} (the workspace forbids it; use a safe wrapper such as \
         rustix):\n{}",
        found.join("\n")
    );
    // The workspace's lint is what stops it at compile time; keep it there.
    let manifest = std::fs::read_to_string(workspace().join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains("unsafe_code = \"forbid\""),
        "the workspace's Cargo.toml must forbid unsafe_code"
    );
}

#[test]
fn the_wall_clock_is_read_in_one_place() {
    let mut found = Vec::new();
    for (path, text) in sources() {
        if path == CLOCK_HOME
            || path.contains("/tests/")
            || path.starts_with("crates/suanli-bench/")
        {
            // Tests and the benchmarks may time themselves; they are not the market.
            continue;
        }
        for read in CLOCK_READS {
            found.extend(code_lines_with(&path, &text, read));
        }
    }
    assert!(
        found.is_empty(),
        "the wall clock is read outside {CLOCK_HOME}; take the time from suanli_clock (or, in \
         suanli-core, as a `now_ms` argument):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_core_does_no_io_reads_no_clock_and_draws_no_random_numbers() {
    let mut found = Vec::new();
    for (path, text) in sources() {
        if !path.starts_with("crates/suanli-core/src/") {
            continue;
        }
        for needle in CORE_FORBIDDEN {
            found.extend(code_lines_with(&path, &text, needle));
        }
    }
    assert!(
        found.is_empty(),
        "suanli-core decides from data passed in; it must not do IO, read the clock or draw \
         random numbers:\n{}",
        found.join("\n")
    );

    let metadata = cargo_metadata();
    let deps = normal_dependencies_of(&metadata, "suanli-core");
    let allowed: BTreeSet<&str> = CORE_DEPENDENCIES.iter().copied().collect();
    let extra: Vec<&String> = deps
        .iter()
        .filter(|d| !allowed.contains(d.as_str()))
        .collect();
    assert!(
        extra.is_empty(),
        "suanli-core gained dependencies {extra:?}: the core must stay free of IO, clocks and \
         randomness. If they are, add them to CORE_DEPENDENCIES in crates/suanli/tests/tidy.rs"
    );
}

#[test]
fn the_declared_rust_version_is_the_one_the_build_needs() {
    let metadata = cargo_metadata();
    let manifest = std::fs::read_to_string(workspace().join("Cargo.toml")).unwrap();
    let declared = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .map(|v| v.trim_matches('"').to_owned())
        .expect("the workspace declares a rust-version");
    let declared_v = version(&declared);
    let packages = metadata["packages"].as_array().unwrap();
    let resolved: BTreeSet<&str> = metadata["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    let mut newer = Vec::new();
    for p in packages {
        if !resolved.contains(p["id"].as_str().unwrap()) {
            continue;
        }
        let name = p["name"].as_str().unwrap();
        match p["rust_version"].as_str() {
            Some(v) if version(v) > declared_v => {
                newer.push(format!(
                    "{name} {} needs {v}",
                    p["version"].as_str().unwrap()
                ));
            }
            _ => {}
        }
        // Every crate of the workspace declares the workspace's version, so that clippy's
        // incompatible_msrv lint (run by scripts/test.sh) checks the APIs each one uses.
        if name.starts_with("suanli") {
            assert_eq!(
                p["rust_version"].as_str(),
                Some(declared.as_str()),
                "{name} must inherit `rust-version.workspace = true`"
            );
        }
    }
    assert!(
        newer.is_empty(),
        "the workspace declares rust-version {declared}, but dependencies need newer:\n{}",
        newer.join("\n")
    );
}

fn version(v: &str) -> (u32, u32, u32) {
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

fn cargo_metadata() -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .current_dir(workspace())
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The names of the packages `name` depends on through normal (not dev or build) dependencies,
/// transitively, itself included.
fn normal_dependencies_of(metadata: &serde_json::Value, name: &str) -> BTreeSet<String> {
    let packages = metadata["packages"].as_array().unwrap();
    let name_of: BTreeMap<&str, &str> = packages
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let nodes: BTreeMap<&str, &serde_json::Value> = metadata["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let start = name_of
        .iter()
        .find(|(_, n)| **n == name)
        .map(|(id, _)| *id)
        .expect("the package is in the workspace");
    let mut seen = BTreeSet::new();
    let mut stack = vec![start];
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        for dep in nodes[id]["deps"].as_array().unwrap() {
            let normal = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].is_null());
            if normal {
                stack.push(dep["pkg"].as_str().unwrap());
            }
        }
    }
    seen.iter().map(|id| name_of[id].to_owned()).collect()
}
