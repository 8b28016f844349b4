//! Task files: a YAML description of a job and of the resources to buy for it, close to what
//! SkyPilot users write.
//!
//! ```yaml
//! name: train-resnet
//! resources:
//!   accelerators: H100:8      # MODEL[:COUNT]; a case-insensitive prefix of a registry name
//!   cpus: 16                  # total CPUs (the units of general and supercomputing classes)
//!   memory: 64                # GiB in all
//!   class: general            # general | intelligent[:MODEL] | supercomputing[:PARTITION]
//!   min_accelerator_memory: 80
//! zone: wuqing-core
//! max_price: 30               # yuan per unit-hour
//! duration: 2h                # the lease's duration limit
//! time_limit: 30m             # the job's wall-clock limit
//! restartable: false
//! network: false
//! env: {KEY: value}
//! workdir: ./src              # uploaded with the job (at most 512 KiB and 1000 files)
//! setup: pip install -r requirements.txt
//! run: python train.py
//! outputs: [results/]
//! ```
//!
//! [`Task::parse`] reads the YAML (unknown keys are errors); [`Task::spec`] makes the
//! [`api::TaskSpec`] that travels to the agent, packing the working directory; [`Task::need`] makes
//! the [`api::QuoteRequest`] to find offers, resolving short accelerator names against the
//! exchange's registry. Every error is a [`TaskError`], shown as `FILE:LINE:COL: field: message`:
//! serde_yaml's errors carry their position, and errors found after parsing point at the line of
//! their key, found by [`locate`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use suanli_api as api;

use crate::cli::{format_duration, parse_duration, parse_gib_to_mib, parse_money};

/// Most bytes of an uploaded working directory, as the exchange counts them.
pub const MAX_WORKDIR_BYTES: u64 = suanli_server::routes::jobs::MAX_WORKDIR_BYTES as u64;
/// Most files of an uploaded working directory.
pub const MAX_WORKDIR_FILES: usize = 1_000;
/// Directories never uploaded, at any depth.
pub const SKIPPED_DIRS: [&str; 3] = [".git", "target", "node_modules"];

/// A problem with a task file, at a place in it when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskError {
    /// The file as the user named it.
    pub file: String,
    /// Line and column, from 1.
    pub position: Option<(usize, usize)>,
    /// Dotted path of the key, e.g. `resources.accelerators`; empty for the whole file.
    pub field: String,
    pub message: String,
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        write!(f, ": ")?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for TaskError {}

/// A YAML scalar given as a number or a string (`duration: 7200` or `duration: 2h`), kept as text.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Scalar, D::Error> {
        struct ScalarVisitor;

        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, a number or a boolean")
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }
        }

        deserializer.deserialize_any(ScalarVisitor)
    }
}

/// What to buy: the `resources:` section.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// `MODEL[:COUNT]`, e.g. `H100-80G:8` or `h100:8`.
    #[serde(default)]
    pub accelerators: Option<String>,
    /// Total CPUs.
    #[serde(default)]
    pub cpus: Option<u64>,
    /// Total memory in GiB.
    #[serde(default)]
    pub memory: Option<Scalar>,
    /// `general`, `intelligent[:MODEL]` or `supercomputing[:PARTITION]`.
    #[serde(default)]
    pub class: Option<String>,
    /// Least memory of one accelerator, in GiB.
    #[serde(default)]
    pub min_accelerator_memory: Option<u32>,
}

/// A task file as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskFile {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub resources: Option<Resources>,
    #[serde(default)]
    pub zone: Option<String>,
    /// Yuan per unit-hour.
    #[serde(default)]
    pub max_price: Option<Scalar>,
    /// The lease's duration limit: `90s`, `30m`, `2h`, `1d` or seconds.
    #[serde(default)]
    pub duration: Option<Scalar>,
    /// The job's wall-clock limit, like `duration`.
    #[serde(default)]
    pub time_limit: Option<Scalar>,
    #[serde(default)]
    pub restartable: bool,
    #[serde(default)]
    pub network: bool,
    #[serde(default)]
    pub env: Option<BTreeMap<String, Scalar>>,
    /// Directory uploaded with the job, relative to the task file.
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    pub setup: Option<String>,
    pub run: String,
    #[serde(default)]
    pub outputs: Option<Vec<String>>,
}

/// What the exchange knows that a task file refers to.
#[derive(Debug, Clone, Copy)]
pub struct Catalog<'a> {
    pub models: &'a [api::AcceleratorModel],
    pub zones: &'a [api::Zone],
}

/// What to ask the exchange for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub quote: api::QuoteRequest,
    /// Units to buy: accelerators for the intelligent class, CPUs (cores) otherwise.
    pub units: u64,
}

/// A parsed task file, with its source for error positions.
#[derive(Debug, Clone)]
pub struct Task {
    /// The file as the user named it.
    pub file: String,
    /// The directory `workdir` is relative to.
    pub dir: PathBuf,
    pub source: String,
    pub raw: TaskFile,
}

/// `message at line 3 column 5` → `message`: the position is shown in front instead.
fn strip_position(message: &str) -> String {
    let mut text = message.to_owned();
    while let Some(at) = text.find(" at line ") {
        let rest = &text[at + " at line ".len()..];
        let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
        let line_len = digits(rest);
        let after_line = &rest[line_len..];
        let Some(col_rest) = after_line.strip_prefix(" column ") else {
            break;
        };
        let col_len = digits(col_rest);
        if line_len == 0 || col_len == 0 {
            break;
        }
        let end = at + " at line ".len() + line_len + " column ".len() + col_len;
        text.replace_range(at..end, "");
    }
    text
}

/// The key of a YAML mapping line (`key: value`, `"key": value`), without indentation, and what
/// follows its colon.
fn split_key(line: &str) -> Option<(&str, &str)> {
    let line = line.trim_start();
    for quote in ['"', '\''] {
        if let Some(rest) = line.strip_prefix(quote) {
            let end = rest.find(quote)?;
            let value = rest[end + 1..].trim_start().strip_prefix(':')?;
            return Some((&rest[..end], value));
        }
    }
    let bytes = line.as_bytes();
    let colon = (0..bytes.len()).find(|&i| {
        bytes[i] == b':' && bytes.get(i + 1).is_none_or(|b| *b == b' ' || *b == b'\t')
    })?;
    let key = line[..colon].trim_end();
    (!key.is_empty() && !key.starts_with(['#', '-', '{', '['])).then_some((key, &line[colon + 1..]))
}

/// Where a key is in a block-style YAML document: the line and column (from 1) of the deepest key
/// of `path` found, each looked for among its parent's children (lines indented more than the
/// parent, at the indentation of the first of them). `None` when the first key is not there.
pub fn locate(source: &str, path: &[&str]) -> Option<(usize, usize)> {
    let lines: Vec<&str> = source.lines().collect();
    let mut start = 0;
    let mut parent_indent: Option<usize> = None;
    let mut found = None;
    for key in path {
        let mut child_indent = None;
        let mut hit = None;
        for (i, line) in lines.iter().enumerate().skip(start) {
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("---") {
                continue;
            }
            let indent = line.len() - trimmed.len();
            if parent_indent.is_some_and(|p| indent <= p) {
                break;
            }
            if indent != *child_indent.get_or_insert(indent) {
                continue;
            }
            if let Some((k, value)) = split_key(trimmed) {
                if k == *key {
                    hit = Some((i, indent, value.trim()));
                    break;
                }
            }
        }
        let Some((i, indent, value)) = hit else {
            break;
        };
        found = Some((i + 1, indent + 1));
        // Only a key with nothing after it (but a comment) has keys below it; a block scalar
        // (`run: |`) has text.
        if !(value.is_empty() || value.starts_with('#')) {
            break;
        }
        start = i + 1;
        parent_indent = Some(indent);
    }
    found
}

/// Accelerators as `MODEL[:COUNT]`.
fn parse_accelerators(text: &str) -> Result<(String, Option<u64>), String> {
    let usage = "write MODEL[:COUNT], e.g. H100-80G:8 or H100:8";
    let text = text.trim();
    let (model, count) = match text.split_once(':') {
        Some((model, count)) => {
            let count = count
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    format!("{text:?}: COUNT must be a whole number above zero; {usage}")
                })?;
            (model.trim(), Some(count))
        }
        None => (text, None),
    };
    if model.is_empty() || model.contains(char::is_whitespace) {
        return Err(format!("{text:?} is not an accelerator spec; {usage}"));
    }
    Ok((model.to_owned(), count))
}

/// The registry's name for `name`: an exact match, else the one model whose name starts with it,
/// ignoring case.
pub fn resolve_model(name: &str, models: &[api::AcceleratorModel]) -> Result<String, String> {
    let lower = name.to_lowercase();
    if let Some(m) = models.iter().find(|m| m.name.to_lowercase() == lower) {
        return Ok(m.name.clone());
    }
    let matches: Vec<&str> = models
        .iter()
        .filter(|m| m.name.to_lowercase().starts_with(&lower))
        .map(|m| m.name.as_str())
        .collect();
    match matches.as_slice() {
        [one] => Ok((*one).to_owned()),
        [] => {
            let known: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
            Err(format!(
                "unknown accelerator model {name:?}; the exchange's models are {}",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ))
        }
        many => Err(format!(
            "{name:?} is ambiguous: it could be {}; write the full name",
            many.join(" or ")
        )),
    }
}

/// Reads one working-directory tree into `files`, sorted by path.
fn pack_dir(
    root: &Path,
    dir: &Path,
    files: &mut Vec<api::WorkdirFile>,
    total: &mut u64,
    notes: &mut Vec<String>,
) -> Result<(), String> {
    let mut entries: Vec<std::fs::DirEntry> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let path = entry.path();
        let rel = path.strip_prefix(root).unwrap_or(&path);
        let Some(rel_text) = rel.to_str() else {
            return Err(format!("{} has a name that is not UTF-8", path.display()));
        };
        let rel_text = rel_text.replace(std::path::MAIN_SEPARATOR, "/");
        let file_type = entry
            .file_type()
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let metadata = if file_type.is_symlink() {
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => m,
                Ok(_) => {
                    notes.push(format!(
                        "workdir: skipped {rel_text}: a link to a directory"
                    ));
                    continue;
                }
                Err(_) => {
                    notes.push(format!("workdir: skipped {rel_text}: a broken link"));
                    continue;
                }
            }
        } else {
            entry
                .metadata()
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        };
        if metadata.is_dir() {
            let name = entry.file_name();
            if SKIPPED_DIRS.iter().any(|s| name == *s) {
                continue;
            }
            pack_dir(root, &path, files, total, notes)?;
            continue;
        }
        if !metadata.is_file() {
            notes.push(format!("workdir: skipped {rel_text}: not a regular file"));
            continue;
        }
        // The exchange counts whole base64 quanta: 3 bytes for each 4 characters.
        let counted = metadata.len().div_ceil(3) * 3;
        if counted > MAX_WORKDIR_BYTES {
            return Err(format!(
                "{rel_text} is {} bytes; the working directory is at most {} KiB in all",
                metadata.len(),
                MAX_WORKDIR_BYTES / 1024
            ));
        }
        *total += counted;
        if *total > MAX_WORKDIR_BYTES {
            return Err(format!(
                "the working directory is more than {} KiB (reached at {rel_text}); put large \
                 files elsewhere or list them in .git, target/ or node_modules/",
                MAX_WORKDIR_BYTES / 1024
            ));
        }
        if files.len() >= MAX_WORKDIR_FILES {
            return Err(format!(
                "the working directory has more than {MAX_WORKDIR_FILES} files"
            ));
        }
        let content =
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        files.push(api::WorkdirFile {
            path: rel_text,
            content_base64: base64::engine::general_purpose::STANDARD.encode(content),
            mode: file_mode(&metadata),
        });
    }
    Ok(())
}

#[cfg(unix)]
fn file_mode(metadata: &std::fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    Some(metadata.permissions().mode() & 0o7777)
}

#[cfg(not(unix))]
fn file_mode(_metadata: &std::fs::Metadata) -> Option<u32> {
    None
}

/// Packs a working directory: every regular file under `dir` (links to files followed), but
/// [`SKIPPED_DIRS`], within [`MAX_WORKDIR_BYTES`] and [`MAX_WORKDIR_FILES`]. Returns the files
/// and notes about what was skipped.
pub fn pack_workdir(dir: &Path) -> Result<(Vec<api::WorkdirFile>, Vec<String>), String> {
    let metadata =
        std::fs::metadata(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    if !metadata.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    let (mut files, mut total, mut notes) = (Vec::new(), 0, Vec::new());
    pack_dir(dir, dir, &mut files, &mut total, &mut notes)?;
    Ok((files, notes))
}

impl Task {
    /// Reads and parses a task file.
    pub fn load(path: &Path) -> Result<Task, TaskError> {
        let file = path.display().to_string();
        let source = std::fs::read_to_string(path).map_err(|e| TaskError {
            file: file.clone(),
            position: None,
            field: String::new(),
            message: format!("cannot read the task file: {e}"),
        })?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Task::parse(&file, &dir, &source)
    }

    /// Parses `source`, the task file `file` whose `workdir` is relative to `dir`.
    pub fn parse(file: &str, dir: &Path, source: &str) -> Result<Task, TaskError> {
        let raw: TaskFile = serde_yaml::from_str(source).map_err(|e| {
            let position = e.location().map(|l| (l.line(), l.column()));
            // serde_yaml puts the key's path in front of the message: `resources.cpus: invalid …`.
            let message = strip_position(&e.to_string());
            let (field, message) = match message.split_once(": ") {
                Some((path, rest))
                    if !path.is_empty()
                        && !path.contains(' ')
                        && path
                            .chars()
                            .all(|c| c.is_alphanumeric() || "._[]-".contains(c)) =>
                {
                    (path.to_owned(), rest.to_owned())
                }
                _ => (String::new(), message),
            };
            TaskError {
                file: file.to_owned(),
                position,
                field,
                message,
            }
        })?;
        Ok(Task {
            file: file.to_owned(),
            dir: dir.to_path_buf(),
            source: source.to_owned(),
            raw,
        })
    }

    /// An error about the key at `path`, placed at its line.
    pub fn error_at(&self, path: &[&str], message: impl Into<String>) -> TaskError {
        TaskError {
            file: self.file.clone(),
            position: locate(&self.source, path).or(Some((1, 1))),
            field: path.join("."),
            message: message.into(),
        }
    }

    /// Whether the file says what to buy (ignored when the lease exists already).
    pub fn says_what_to_buy(&self) -> bool {
        let r = &self.raw;
        r.resources.is_some() || r.zone.is_some() || r.max_price.is_some() || r.duration.is_some()
    }

    /// The job's wall-clock limit in seconds.
    fn time_limit_s(&self) -> Result<Option<u64>, TaskError> {
        self.raw
            .time_limit
            .as_ref()
            .map(|t| parse_duration(&t.0).map_err(|e| self.error_at(&["time_limit"], e)))
            .transpose()
    }

    /// The lease's duration limit in seconds.
    fn duration_s(&self) -> Result<u64, TaskError> {
        match &self.raw.duration {
            Some(d) => parse_duration(&d.0).map_err(|e| self.error_at(&["duration"], e)),
            None => Err(TaskError {
                file: self.file.clone(),
                position: None,
                field: "duration".into(),
                message: "say how long the lease may last at most, e.g. `duration: 2h`".into(),
            }),
        }
    }

    /// What runs: the task for the agent, with the working directory packed, checked as the
    /// exchange will check it. Also returns notes about skipped files.
    pub fn spec(&self) -> Result<(api::TaskSpec, Vec<String>), TaskError> {
        let r = &self.raw;
        let (workdir, notes) = match &r.workdir {
            Some(w) => {
                let dir = self.dir.join(w);
                pack_workdir(&dir).map_err(|e| self.error_at(&["workdir"], e))?
            }
            None => (Vec::new(), Vec::new()),
        };
        let spec = api::TaskSpec {
            name: r.name.clone(),
            setup: r.setup.clone(),
            run: r.run.clone(),
            env: r
                .env
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.0.clone()))
                .collect(),
            workdir,
            outputs: r.outputs.clone().unwrap_or_default(),
            network: r.network,
            restartable: r.restartable,
            time_limit_s: self.time_limit_s()?,
        };
        let mut checked = spec.clone();
        if let Err(e) = suanli_server::routes::jobs::validate_task(&mut checked) {
            let field = e.field.as_deref().unwrap_or("task");
            let field = field.strip_prefix("task.").unwrap_or(field);
            let mut path: Vec<&str> = field
                .split('.')
                .map(|p| p.split('[').next().unwrap_or(p))
                .collect();
            if path.first() == Some(&"time_limit_s") {
                path[0] = "time_limit";
            }
            if path.first() == Some(&"task") {
                path.clear();
            }
            let message = e
                .message
                .strip_prefix(&format!("task.{field} "))
                .map(str::to_owned)
                .unwrap_or(e.message);
            return Err(self.error_at(&path, message));
        }
        Ok((spec, notes))
    }

    /// What to buy: the quote request for the exchange, with short accelerator names resolved
    /// and the zone checked against `catalog`.
    pub fn need(&self, catalog: Catalog<'_>) -> Result<Need, TaskError> {
        let res = self.raw.resources.clone().unwrap_or_default();
        let duration_limit_s = self.duration_s()?;
        if let Some(limit) = self.time_limit_s()? {
            if limit > duration_limit_s {
                return Err(self.error_at(
                    &["time_limit"],
                    format!(
                        "the job may not run longer than the lease ({})",
                        format_duration(duration_limit_s)
                    ),
                ));
            }
        }
        let (mut category, mut qualifier) =
            match &res.class {
                None => (None, None),
                Some(class) => {
                    let (cat, qual) = match class.split_once(':') {
                        Some((c, q)) => (c.trim(), Some(q.trim().to_owned())),
                        None => (class.trim(), None),
                    };
                    let here = ["resources", "class"];
                    match cat {
                        "general" | "intelligent" | "supercomputing" => {}
                        _ => return Err(self.error_at(
                            &here,
                            "class is general, intelligent[:MODEL] or supercomputing[:PARTITION]",
                        )),
                    }
                    if cat == "general" && qual.is_some() {
                        return Err(self.error_at(&here, "the general class has no qualifier"));
                    }
                    if qual.as_deref() == Some("") {
                        return Err(self.error_at(&here, "the qualifier after ':' is empty"));
                    }
                    let qual = match (cat, qual) {
                        ("intelligent", Some(model)) => Some(
                            resolve_model(&model, catalog.models)
                                .map_err(|e| self.error_at(&here, e))?,
                        ),
                        (_, qual) => qual,
                    };
                    (Some(cat), qual)
                }
            };
        let mut accelerator_model = None;
        let mut accelerators = None;
        if let Some(spec) = &res.accelerators {
            let here = ["resources", "accelerators"];
            let (model, count) = parse_accelerators(spec).map_err(|e| self.error_at(&here, e))?;
            let model =
                resolve_model(&model, catalog.models).map_err(|e| self.error_at(&here, e))?;
            match category {
                None | Some("intelligent") => category = Some("intelligent"),
                Some(other) => {
                    return Err(self.error_at(
                        &here,
                        format!("accelerators need the intelligent class, not {other}"),
                    ))
                }
            }
            if let Some(q) = &qualifier {
                if *q != model {
                    return Err(self.error_at(
                        &here,
                        format!("{model} contradicts the class intelligent:{q}"),
                    ));
                }
            }
            qualifier = Some(model.clone());
            accelerator_model = Some(model);
            accelerators = count;
        }
        if res.min_accelerator_memory.is_some() {
            match category {
                None | Some("intelligent") => category = Some("intelligent"),
                Some(other) => {
                    return Err(self.error_at(
                        &["resources", "min_accelerator_memory"],
                        format!("accelerator memory needs the intelligent class, not {other}"),
                    ))
                }
            }
        }
        let category = category.unwrap_or("general");
        let units = match (category, accelerators, res.cpus) {
            ("intelligent", Some(n), _) => n,
            ("intelligent", None, _) => 1,
            (_, _, Some(cpus)) => cpus,
            (_, _, None) => {
                return Err(self.error_at(
                    &["resources", "cpus"],
                    format!(
                        "say how many CPUs you need (the units of the {category} class), e.g. \
                         `cpus: 16`, or ask for accelerators"
                    ),
                ))
            }
        };
        if res.cpus == Some(0) {
            return Err(self.error_at(&["resources", "cpus"], "cpus must be at least 1"));
        }
        let memory_mib = match &res.memory {
            Some(m) => match parse_gib_to_mib(&m.0) {
                Ok(0) => {
                    return Err(
                        self.error_at(&["resources", "memory"], "memory must be more than zero")
                    )
                }
                Ok(mib) => Some(mib),
                Err(e) => return Err(self.error_at(&["resources", "memory"], e)),
            },
            None => None,
        };
        if let Some(zone) = &self.raw.zone {
            if !catalog.zones.is_empty() && !catalog.zones.iter().any(|z| z.id == *zone) {
                let known: Vec<&str> = catalog.zones.iter().map(|z| z.id.as_str()).collect();
                return Err(self.error_at(
                    &["zone"],
                    format!("unknown zone {zone:?}; zones are {}", known.join(", ")),
                ));
            }
        }
        let max_price = match &self.raw.max_price {
            Some(p) => match parse_money(&p.0) {
                Ok(0) => return Err(self.error_at(&["max_price"], "max_price must be above 0")),
                Ok(micros) => Some(micros),
                Err(e) => return Err(self.error_at(&["max_price"], e)),
            },
            None => None,
        };
        let class = match (category, &qualifier) {
            (cat, Some(q)) => format!("{cat}:{q}"),
            (cat, None) => cat.to_owned(),
        };
        Ok(Need {
            quote: api::QuoteRequest {
                class: Some(class),
                accelerator_model,
                accelerators,
                min_accelerator_memory_gib: res.min_accelerator_memory,
                cpus: res.cpus,
                memory_mib,
                units: Some(units),
                zone: self.raw.zone.clone(),
                max_price_micros_per_unit_hour: max_price,
                duration_limit_s,
                excluded_limit: None,
                limit: None,
            },
            units,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn models() -> Vec<api::AcceleratorModel> {
        [
            ("H100-80G", 80),
            ("H800-80G", 80),
            ("A800-80G", 80),
            ("A100-40G", 40),
        ]
        .iter()
        .map(|(name, gib)| api::AcceleratorModel {
            name: (*name).to_owned(),
            vendor: "NVIDIA".into(),
            memory_gib: *gib,
        })
        .collect()
    }

    fn zones() -> Vec<api::Zone> {
        ["wuqing-core", "wuqing-south"]
            .iter()
            .map(|id| api::Zone {
                id: (*id).to_owned(),
                name: (*id).to_owned(),
                kind: "core".into(),
            })
            .collect()
    }

    fn parse(source: &str) -> Result<Task, TaskError> {
        Task::parse("task.yaml", Path::new("."), source)
    }

    fn need_of(source: &str) -> Result<Need, TaskError> {
        let (models, zones) = (models(), zones());
        parse(source)?.need(Catalog {
            models: &models,
            zones: &zones,
        })
    }

    const FULL: &str = "\
name: train-resnet
resources:
  accelerators: H100:8     # short name
  cpus: 16
  memory: 64
  min_accelerator_memory: 80
zone: wuqing-core
max_price: 30
duration: 2h
time_limit: 30m
restartable: true
network: false
env: {KEY: value, PORT: 8080, DEBUG: true}
setup: |
  pip install -r requirements.txt
run: |
  python train.py
outputs: [results/]
";

    #[test]
    fn a_full_task_file_makes_a_quote_and_a_spec() {
        let need = need_of(FULL).unwrap();
        assert_eq!(need.units, 8);
        assert_eq!(
            need.quote,
            api::QuoteRequest {
                class: Some("intelligent:H100-80G".into()),
                accelerator_model: Some("H100-80G".into()),
                accelerators: Some(8),
                min_accelerator_memory_gib: Some(80),
                cpus: Some(16),
                memory_mib: Some(64 * 1024),
                units: Some(8),
                zone: Some("wuqing-core".into()),
                max_price_micros_per_unit_hour: Some(30_000_000),
                duration_limit_s: 7_200,
                excluded_limit: None,
                limit: None,
            }
        );
        let (spec, notes) = parse(FULL).unwrap().spec().unwrap();
        assert!(notes.is_empty());
        assert_eq!(spec.name.as_deref(), Some("train-resnet"));
        assert_eq!(
            spec.setup.as_deref(),
            Some("pip install -r requirements.txt\n")
        );
        assert_eq!(spec.run, "python train.py\n");
        assert_eq!(spec.env["KEY"], "value");
        assert_eq!(spec.env["PORT"], "8080");
        assert_eq!(spec.env["DEBUG"], "true");
        assert_eq!(spec.outputs, ["results/"]);
        assert!(spec.restartable && !spec.network);
        assert_eq!(spec.time_limit_s, Some(1_800));
        assert!(spec.workdir.is_empty());
    }

    #[test]
    fn general_tasks_buy_cpus() {
        let need =
            need_of("resources:\n  cpus: 4\n  memory: 0.5\nduration: 90s\nrun: echo hi\n").unwrap();
        assert_eq!(need.units, 4);
        assert_eq!(need.quote.class.as_deref(), Some("general"));
        assert_eq!(need.quote.memory_mib, Some(512));
        assert_eq!(need.quote.duration_limit_s, 90);
        assert_eq!(need.quote.accelerator_model, None);

        let need = need_of(
            "resources:\n  class: supercomputing:batch\n  cpus: 64\nduration: 7200\nrun: srun x\n",
        )
        .unwrap();
        assert_eq!(need.units, 64);
        assert_eq!(need.quote.class.as_deref(), Some("supercomputing:batch"));
        assert_eq!(need.quote.duration_limit_s, 7_200);

        let need =
            need_of("resources:\n  class: intelligent:a800\nduration: 1d\nrun: x\n").unwrap();
        assert_eq!(need.units, 1);
        assert_eq!(need.quote.class.as_deref(), Some("intelligent:A800-80G"));
    }

    #[test]
    fn durations_are_checked() {
        for (text, seconds) in [("90s", 90), ("30m", 1_800), ("2h", 7_200), ("1d", 86_400)] {
            let need = need_of(&format!(
                "resources: {{cpus: 1}}\nduration: {text}\nrun: x\n"
            ))
            .unwrap();
            assert_eq!(need.quote.duration_limit_s, seconds, "{text}");
        }
        let err = need_of("resources:\n  cpus: 1\nduration: 2 hours\nrun: x\n").unwrap_err();
        assert_eq!(err.position, Some((3, 1)));
        assert_eq!(err.field, "duration");
        assert!(err.message.contains("is not a duration"), "{err}");
        let err = need_of("resources:\n  cpus: 1\nrun: x\n").unwrap_err();
        assert_eq!(err.field, "duration");
        assert!(err
            .to_string()
            .starts_with("task.yaml: duration: say how long"));
        let err =
            need_of("resources:\n  cpus: 1\nduration: 1h\ntime_limit: 2h\nrun: x\n").unwrap_err();
        assert_eq!(
            (err.position, err.field.as_str()),
            (Some((4, 1)), "time_limit")
        );
        let err = parse("time_limit: 0\nrun: x\n")
            .unwrap()
            .spec()
            .unwrap_err();
        assert_eq!(err.position, Some((1, 1)));
        assert_eq!(err.field, "time_limit");
    }

    #[test]
    fn accelerator_specs_resolve_or_point_at_their_line() {
        let ok = |spec: &str| {
            need_of(&format!(
                "resources:\n  accelerators: {spec}\nduration: 1h\nrun: x\n"
            ))
        };
        let n = ok("H100-80G:8").unwrap();
        assert_eq!(
            (n.quote.accelerator_model.as_deref(), n.units),
            (Some("H100-80G"), 8)
        );
        assert_eq!(ok("h100-80g").unwrap().units, 1);
        assert_eq!(
            ok("a1:2").unwrap().quote.accelerator_model.as_deref(),
            Some("A100-40G")
        );
        for (spec, wanted) in [
            ("H:8", "ambiguous"),
            ("H100:0", "above zero"),
            ("H100:x", "above zero"),
            ("V100:1", "unknown accelerator model"),
            ("':8'", "not an accelerator spec"),
        ] {
            let err = ok(spec).unwrap_err();
            assert_eq!(err.position, Some((2, 3)), "{spec}: {err}");
            assert_eq!(err.field, "resources.accelerators");
            assert!(err.message.contains(wanted), "{spec}: {err}");
            assert!(
                err.to_string()
                    .starts_with("task.yaml:2:3: resources.accelerators: "),
                "{err}"
            );
        }
        let err =
            need_of("resources:\n  class: general\n  accelerators: H100:1\nduration: 1h\nrun: x\n")
                .unwrap_err();
        assert_eq!(err.position, Some((3, 3)));
        let err = need_of(
            "resources:\n  class: intelligent:A800\n  accelerators: H100:1\nduration: 1h\nrun: x\n",
        )
        .unwrap_err();
        assert!(err.message.contains("contradicts"), "{err}");
        let err = need_of("resources:\n    class: quantum\nduration: 1h\nrun: x\n").unwrap_err();
        assert_eq!(err.position, Some((2, 5)));
        assert_eq!(
            resolve_model("H100", &[]).unwrap_err(),
            "unknown accelerator model \"H100\"; the exchange's models are none"
        );
    }

    #[test]
    fn semantic_errors_point_at_their_key() {
        let err = need_of("run: x\nduration: 1h\nzone: mars\nresources: {cpus: 1}\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "task.yaml:3:1: zone: unknown zone \"mars\"; zones are wuqing-core, wuqing-south"
        );
        let err = need_of("run: x\nduration: 1h\n").unwrap_err();
        assert_eq!(err.field, "resources.cpus");
        assert_eq!(err.position, Some((1, 1)));
        let err = need_of("run: x\nduration: 1h\nresources:\n  memory: 8\n").unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.position),
            ("resources.cpus", Some((3, 1)))
        );
        let err =
            need_of("run: x\nduration: 1h\nresources: {cpus: 2}\nmax_price: cheap\n").unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.position),
            ("max_price", Some((4, 1)))
        );
        let err = parse("run: x\nenv:\n  GOOD: 1\n  BAD-NAME: 2\n")
            .unwrap()
            .spec()
            .unwrap_err();
        assert_eq!(err.position, Some((4, 3)), "{err}");
        assert_eq!(err.field, "env.BAD-NAME");
        let err = parse("run: x\noutputs:\n  - ../escape\n")
            .unwrap()
            .spec()
            .unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.position),
            ("outputs", Some((2, 1)))
        );
        let err = parse("run: '  '\n").unwrap().spec().unwrap_err();
        assert_eq!((err.field.as_str(), err.position), ("run", Some((1, 1))));
    }

    #[test]
    fn yaml_errors_carry_their_position_and_path() {
        let err = parse("name: x\nresources:\n  cpus: many\nrun: x\n").unwrap_err();
        assert_eq!(err.position, Some((3, 9)), "{err}");
        assert_eq!(err.field, "resources.cpus");
        assert!(err.message.starts_with("invalid type"), "{err}");
        assert!(!err.message.contains("line"), "{err}");

        let err = parse("run: x\ngpus: 8\n").unwrap_err();
        assert_eq!(err.position, Some((2, 1)), "{err}");
        assert!(err.message.contains("unknown field `gpus`"), "{err}");
        assert!(
            err.to_string().starts_with("task.yaml:2:1: unknown field"),
            "{err}"
        );

        let err = parse("resources:\n  gpus: 8\nrun: x\n").unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.position),
            ("resources", Some((2, 3))),
            "{err}"
        );

        let err = parse("name: x\n").unwrap_err();
        assert!(err.message.contains("missing field `run`"), "{err}");

        let err = parse("run: [unclosed\n").unwrap_err();
        assert!(err.position.is_some(), "{err}");

        let err = parse("run: x\nenv:\n  A: [1]\n").unwrap_err();
        assert_eq!(err.field, "env.A", "{err}");
        assert_eq!(err.position.map(|p| p.0), Some(3), "{err}");
    }

    #[test]
    fn keys_are_located_by_indentation() {
        let source = "\
# a comment
name: x
resources:   # what to buy
  # cpus: 2 in a comment
  memory: 8
  cpus: 4
setup: |
  cpus: not a key
  zone: nor this
run: \"x\"
\"zone\": here
env:
    cpus: 1
";
        assert_eq!(locate(source, &["name"]), Some((2, 1)));
        assert_eq!(locate(source, &["resources", "cpus"]), Some((6, 3)));
        assert_eq!(locate(source, &["resources", "memory"]), Some((5, 3)));
        assert_eq!(locate(source, &["zone"]), Some((11, 1)));
        assert_eq!(locate(source, &["env", "cpus"]), Some((13, 5)));
        // Not there: the deepest parent found, or nothing.
        assert_eq!(locate(source, &["resources", "class"]), Some((3, 1)));
        assert_eq!(locate(source, &["setup", "cpus"]), Some((7, 1)));
        assert_eq!(locate(source, &["outputs"]), None);
        assert_eq!(split_key("a: b"), Some(("a", " b")));
        assert_eq!(split_key("a:b"), None);
        assert_eq!(split_key("a:"), Some(("a", "")));
        assert_eq!(split_key("'x y': 1"), Some(("x y", " 1")));
        assert_eq!(split_key("- a: 1"), None);
        assert_eq!(strip_position("bad at line 3 column 9"), "bad");
        assert_eq!(
            strip_position("a at line 1 column 2, b at line 3 column 4"),
            "a, b"
        );
    }

    fn temp_dir(name: &str) -> PathBuf {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).unwrap();
        let suffix: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let dir = std::env::temp_dir().join(format!("suanli-task-{name}-{suffix}"));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn workdirs_are_packed_with_modes_and_limits() {
        let root = temp_dir("pack");
        let src = root.join("src");
        std::fs::create_dir_all(src.join("pkg")).unwrap();
        std::fs::create_dir_all(src.join(".git")).unwrap();
        std::fs::create_dir_all(src.join("target/debug")).unwrap();
        std::fs::create_dir_all(src.join("web/node_modules/x")).unwrap();
        std::fs::write(src.join("train.py"), "print('hi')\n").unwrap();
        std::fs::write(src.join("pkg/run.sh"), "#!/bin/sh\necho run\n").unwrap();
        std::fs::write(src.join(".git/HEAD"), "ref").unwrap();
        std::fs::write(src.join("target/debug/big"), "bin").unwrap();
        std::fs::write(src.join("web/node_modules/x/i.js"), "1").unwrap();
        std::fs::write(src.join("web/app.js"), "2").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                src.join("pkg/run.sh"),
                std::fs::Permissions::from_mode(0o755),
            )
            .unwrap();
            std::fs::set_permissions(src.join("train.py"), std::fs::Permissions::from_mode(0o644))
                .unwrap();
        }
        let yaml = "workdir: ./src\nrun: python train.py\n";
        std::fs::write(root.join("task.yaml"), yaml).unwrap();
        let task = Task::load(&root.join("task.yaml")).unwrap();
        let (spec, notes) = task.spec().unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        let paths: Vec<&str> = spec.workdir.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["pkg/run.sh", "train.py", "web/app.js"]);
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&spec.workdir[1].content_base64)
            .unwrap();
        assert_eq!(decoded, b"print('hi')\n");
        #[cfg(unix)]
        {
            assert_eq!(spec.workdir[0].mode, Some(0o755));
            assert_eq!(spec.workdir[1].mode, Some(0o644));
        }

        // A file over the limit is refused, pointing at `workdir`.
        let big = vec![b'x'; MAX_WORKDIR_BYTES as usize + 1];
        std::fs::write(src.join("weights.bin"), &big).unwrap();
        let err = task.spec().unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.position),
            ("workdir", Some((1, 1)))
        );
        assert!(err.message.contains("weights.bin"), "{err}");
        std::fs::remove_file(src.join("weights.bin")).unwrap();

        // So are many files that are too much together.
        for i in 0..3 {
            std::fs::write(
                src.join(format!("part{i}.bin")),
                vec![b'y'; MAX_WORKDIR_BYTES as usize / 3],
            )
            .unwrap();
        }
        let err = task.spec().unwrap_err();
        assert!(err.message.contains("more than 512 KiB"), "{err}");
        for i in 0..3 {
            std::fs::remove_file(src.join(format!("part{i}.bin"))).unwrap();
        }

        // And more than 1000 files.
        std::fs::create_dir_all(src.join("many")).unwrap();
        for i in 0..=MAX_WORKDIR_FILES {
            std::fs::write(src.join(format!("many/{i}")), "").unwrap();
        }
        let err = task.spec().unwrap_err();
        assert!(err.message.contains("more than 1000 files"), "{err}");
        std::fs::remove_dir_all(src.join("many")).unwrap();

        // A workdir that is not there.
        let missing = Task::parse("t.yaml", &root, "run: x\nworkdir: nope\n").unwrap();
        let err = missing.spec().unwrap_err();
        assert_eq!(err.position, Some((2, 1)));
        assert!(err.message.contains("cannot read"), "{err}");

        std::fs::remove_dir_all(&root).unwrap();
    }
}
