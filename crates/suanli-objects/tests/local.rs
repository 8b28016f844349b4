//! Every scenario on the local backend (a directory), and what only it has: the staging files a
//! killed upload leaves and what `delete` does with them.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use futures::FutureExt;
use suanli_objects::{FileKey, HashState, Objects, ObjectsError, StoreConfig};

fn open(name: &str) -> (Objects, PathBuf, TempDir) {
    let dir = TempDir::new(name);
    let root = dir.path().join("objects");
    let config = StoreConfig::parse(&format!("file://{}", root.display())).unwrap();
    (Objects::open(&config).unwrap(), root, dir)
}

/// Anything in the file's directory that is not a part: object_store stages a part as
/// `<part>#<n>` and renames it when complete.
fn staging_files(
    root: &Path,
) -> impl Fn(FileKey) -> futures::future::BoxFuture<'static, Vec<String>> + Sync {
    let root = root.to_owned();
    move |file: FileKey| {
        let dir = root.join("files").join(file.as_str());
        async move {
            match std::fs::read_dir(&dir) {
                Ok(entries) => entries
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|name| name.contains('#'))
                    .collect(),
                Err(_) => Vec::new(),
            }
        }
        .boxed()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumed_upload_on_local() {
    let (objects, root, _dir) = open("resume");
    resumed_upload(&objects, &staging_files(&root)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranged_reads_on_local() {
    let (objects, _, _dir) = open("ranges");
    ranged_reads(&objects).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_limit_on_local() {
    let (objects, root, _dir) = open("limit");
    over_the_limit(&objects, &staging_files(&root)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_what_is_not_there_on_local() {
    let (objects, _, _dir) = open("missing");
    reads_of_what_is_not_there(&objects).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_clears_what_a_killed_upload_left_and_strays_are_corrupt() {
    let (objects, root, _dir) = open("strays");
    let file = key("strays");
    objects
        .put_part(&file, 1, &HashState::new(), 100, body(&[7; 64]))
        .await
        .unwrap();
    let dir = root.join("files").join(file.as_str());
    // A process killed mid-part leaves object_store's staging file; it is not a part.
    std::fs::write(dir.join("0000000002#1"), b"half a part").unwrap();
    assert_eq!(objects.list_parts(&file).await.unwrap(), vec![64]);
    std::fs::write(dir.join("notes.txt"), b"not ours").unwrap();
    let err = objects.list_parts(&file).await.unwrap_err();
    assert!(matches!(err, ObjectsError::Corrupt(_)), "{err}");
    assert_eq!(objects.delete(&file).await.unwrap(), 2);
    assert!(
        !dir.exists(),
        "the file's directory goes, staging files and all"
    );
    assert!(!objects.exists(&file).await.unwrap());
}

#[test]
fn the_default_store_is_under_the_data_directory() {
    let dir = TempDir::new("default");
    let data_dir = dir.path();
    let config = StoreConfig::in_data_dir(data_dir);
    assert_eq!(config, StoreConfig::local(data_dir.join("objects")));
    Objects::open(&config).unwrap();
    assert!(data_dir.join("objects").is_dir(), "made when missing");
}

/// The server holds these across awaits in axum handlers: the futures, the read stream and the
/// error must be `Send` (and the error `Sync + 'static`, for `anyhow` and `?`).
#[test]
fn futures_streams_and_errors_are_send() {
    fn send<T: Send>(_: &T) {}
    fn error<E: std::error::Error + Send + Sync + 'static>() {}
    error::<ObjectsError>();
    let objects = Objects::with_store(std::sync::Arc::new(object_store::memory::InMemory::new()));
    let file = FileKey::new("f").unwrap();
    let start = HashState::new();
    send(&objects.put_part(&file, 1, &start, 10, body(b"x")));
    send(&objects.read_range(&file, &[1], 0..1));
    send(&objects.list_parts(&file));
    send(&objects.delete(&file));
    send(&objects.exists(&file));
}

/// Any `object_store` store works through `with_store` (an in-memory one here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranged_reads_in_memory() {
    let objects = Objects::with_store(std::sync::Arc::new(object_store::memory::InMemory::new()));
    ranged_reads(&objects).await;
    reads_of_what_is_not_there(&objects).await;
}
