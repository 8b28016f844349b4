//! Every scenario against a real S3-compatible server, when `SUANLI_TEST_S3` names one
//! (`s3://BUCKET?endpoint=http://127.0.0.1:PORT&region=us-east-1`, keys in
//! `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`; `scripts/s3.sh start` runs one). Without it each
//! test says so on the terminal and passes, unless `SUANLI_REQUIRE_S3=1` (set by
//! scripts/test.sh), when it fails.

mod common;

use std::io::Write;

use common::*;
use futures::FutureExt;
use suanli_objects::{FileKey, Objects, S3Config, StoreConfig};

/// The store under test, or `None` (said on the real stderr, past the test harness's capture).
fn s3(test: &str) -> Option<(Objects, S3Config)> {
    let Ok(config) = std::env::var("SUANLI_TEST_S3") else {
        assert!(
            std::env::var("SUANLI_REQUIRE_S3").as_deref() != Ok("1"),
            "SUANLI_REQUIRE_S3=1 but SUANLI_TEST_S3 is not set: run scripts/s3.sh start"
        );
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: SUANLI_TEST_S3 is not set (scripts/s3.sh start DIR PORT, then \
             SUANLI_TEST_S3='s3://suanli-test?endpoint=http://127.0.0.1:PORT&region=us-east-1')"
        );
        return None;
    };
    let config = StoreConfig::parse(&config).expect("SUANLI_TEST_S3 parses");
    let StoreConfig::S3(s3) = &config else {
        panic!("SUANLI_TEST_S3 must be an s3:// configuration");
    };
    Some((Objects::open(&config).unwrap(), s3.clone()))
}

/// Multipart uploads in progress under the file's prefix (S3's ListMultipartUploads; the test
/// server takes it unsigned): an aborted part leaves none.
fn incomplete_uploads(
    s3: &S3Config,
) -> impl Fn(FileKey) -> futures::future::BoxFuture<'static, Vec<String>> + Sync {
    let endpoint = s3
        .endpoint
        .clone()
        .expect("the test server has an endpoint");
    let bucket = s3.bucket.clone();
    let client = reqwest::Client::new();
    move |file: FileKey| {
        let url = format!(
            "{endpoint}/{bucket}?uploads&prefix=files/{}/",
            file.as_str()
        );
        let request = client.get(url).send();
        async move {
            let response = request.await.unwrap().error_for_status().unwrap();
            let xml = response.text().await.unwrap();
            xml.split("<Upload>")
                .skip(1)
                .map(|upload| upload.split("</Upload>").next().unwrap_or("").to_owned())
                .collect()
        }
        .boxed()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumed_upload_on_s3() {
    let Some((objects, s3)) = s3("resumed_upload_on_s3") else {
        return;
    };
    resumed_upload(&objects, &incomplete_uploads(&s3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranged_reads_on_s3() {
    let Some((objects, _)) = s3("ranged_reads_on_s3") else {
        return;
    };
    ranged_reads(&objects).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_limit_on_s3() {
    let Some((objects, s3)) = s3("over_the_limit_on_s3") else {
        return;
    };
    over_the_limit(&objects, &incomplete_uploads(&s3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_what_is_not_there_on_s3() {
    let Some((objects, _)) = s3("reads_of_what_is_not_there_on_s3") else {
        return;
    };
    reads_of_what_is_not_there(&objects).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_is_a_typed_error() {
    let Some((_, s3)) = s3("a_missing_bucket_is_a_typed_error") else {
        return;
    };
    let missing = Objects::open(&StoreConfig::S3(S3Config {
        bucket: "suanli-no-such-bucket".into(),
        ..s3
    }))
    .unwrap();
    let file = key("nobucket");
    let err = missing
        .put_part(&file, 1, &Default::default(), 100, body(&[1; 10]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, suanli_objects::ObjectsError::Store(_)),
        "{err}"
    );
    assert!(missing.exists(&file).await.is_err());
}

/// The check above is not vacuous: an upload started and not finished is seen, under its own
/// prefix only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leftover_check_sees_an_incomplete_upload() {
    use object_store::ObjectStore;
    let Some((_, s3)) = s3("the_leftover_check_sees_an_incomplete_upload") else {
        return;
    };
    let store = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(&s3.bucket)
        .with_region(&s3.region)
        .with_endpoint(s3.endpoint.clone().unwrap())
        .with_allow_http(true)
        .with_access_key_id(&s3.access_key_id)
        .with_secret_access_key(&s3.secret_access_key)
        .build()
        .unwrap();
    let (file, other) = (key("leftover"), key("leftover"));
    let path = object_store::path::Path::from(format!("files/{}/0000000001", file.as_str()));
    let mut upload = store.put_multipart(&path).await.unwrap();
    upload.put_part(vec![0u8; 100].into()).await.unwrap();
    let check = incomplete_uploads(&s3);
    assert_eq!(check(file.clone()).await.len(), 1);
    assert!(check(other).await.is_empty());
    upload.abort().await.unwrap();
    assert!(check(file).await.is_empty());
}
