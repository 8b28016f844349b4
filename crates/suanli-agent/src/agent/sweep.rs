//! Deleting the directories of jobs finished longer ago than the config keeps them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::shared::Agent;
use super::state::notes_dir;

/// Every ten minutes, deletes the directories of finished jobs last written more than `keep`
/// ago. A job the agent supervises, or has a note about, is never touched.
pub(crate) async fn sweep_loop(agent: Arc<Agent>, jobs_dir: PathBuf, keep: Duration) {
    loop {
        let mut busy: std::collections::HashSet<String> = agent
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        if let Ok(entries) = std::fs::read_dir(notes_dir(&agent.state_dir)) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(id) = name.strip_suffix(".json").or(name.strip_suffix(".logseq")) {
                    busy.insert(id.to_owned());
                }
            }
        }
        let dir = jobs_dir.clone();
        let removed = tokio::task::spawn_blocking(move || {
            sweep_job_dirs(&dir, &busy, keep, suanli_clock::now())
        })
        .await
        .unwrap_or_default();
        if !removed.is_empty() {
            tracing::info!(
                count = removed.len(),
                "deleted the directories of jobs finished more than {keep:?} ago"
            );
        }
        tokio::time::sleep(Duration::from_secs(600)).await;
    }
}

/// Deletes the job directories under `jobs_dir` not named in `busy` whose directory and log files
/// were last modified before `now - keep`; returns what it deleted.
fn sweep_job_dirs(
    jobs_dir: &Path,
    busy: &std::collections::HashSet<String>,
    keep: Duration,
    now: std::time::SystemTime,
) -> Vec<PathBuf> {
    let Some(cutoff) = now.checked_sub(keep) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(jobs_dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir() || busy.contains(&name) {
            continue;
        }
        let last = ["", "stdout.log", "stderr.log"]
            .iter()
            .filter_map(|f| std::fs::metadata(path.join(f)).ok()?.modified().ok())
            .max();
        if last.is_some_and(|t| t < cutoff) && std::fs::remove_dir_all(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_old_finished_job_directories_are_swept() {
        let root = std::env::temp_dir().join(format!("suanli-sweep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for name in [
            "old",
            "old-running",
            "old-noted",
            "fresh",
            "old-dir-new-log",
        ] {
            std::fs::create_dir_all(root.join(name)).unwrap();
            std::fs::write(root.join(name).join("stdout.log"), "out").unwrap();
        }
        std::fs::write(root.join("a-file"), "not a job").unwrap();
        let age = |path: PathBuf| {
            let ok = std::process::Command::new("touch")
                .args(["-d", "3 hours ago"])
                .arg(path)
                .status()
                .unwrap()
                .success();
            assert!(ok);
        };
        for name in ["old", "old-running", "old-noted"] {
            age(root.join(name).join("stdout.log"));
            age(root.join(name));
        }
        // A job whose directory is old but whose log is still being written is not finished.
        age(root.join("old-dir-new-log"));
        age(root.join("a-file"));
        let busy: std::collections::HashSet<String> =
            ["old-running".to_owned(), "old-noted".to_owned()].into();
        let removed = sweep_job_dirs(&root, &busy, Duration::from_secs(3600), suanli_clock::now());
        assert_eq!(removed, vec![root.join("old")]);
        for kept in [
            "old-running",
            "old-noted",
            "fresh",
            "old-dir-new-log",
            "a-file",
        ] {
            assert!(root.join(kept).exists(), "{kept}");
        }
        let _ = std::fs::remove_dir_all(&root);
    }
}
