//! Listings, versions and files: fields, visibility, publication.

use suanli_core::data::{Gating, Licence, ListingKind, ModelInfo, Price};
use suanli_core::decide::data::{NewListing, VersionLimits, VersionState};
use suanli_store::ops::UploadPart;
use suanli_store::{StoreError, Tx};

use crate::harness::{dataset, digest, field_of, file, Ex, FEE_BPS, T0};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_are_checked_field_by_field_and_only_data_providers_list() {
    let ex = Ex::new(0).await;
    let price = Price::PerVersion { micros: 1_000_000 };
    let name = ex
        .create_listing(&ex.provider, dataset("traffic", price, Gating::Automatic))
        .await
        .unwrap();
    let p = ex.provider.clone();
    let stored = ex.read(|tx| tx.get_listing(&p, &name)).unwrap();
    assert_eq!(stored.title_zh, "北京交通流量");
    assert_eq!(stored.tags, ["交通", "traffic"]);
    assert_eq!(stored.licence, Licence::Spdx("CC-BY-4.0".into()));
    assert_eq!(
        (stored.price, stored.fee_bps, stored.visible),
        (price, FEE_BPS, false)
    );

    let bad = |f: fn(&mut NewListing)| {
        let mut l = dataset("other-name", Price::Free, Gating::Automatic);
        f(&mut l);
        l
    };
    for (listing, field) in [
        (dataset("traffic", Price::Free, Gating::Automatic), "name"),
        (bad(|l| l.name = "Big Data".into()), "name"),
        (
            bad(|l| {
                l.title_zh = " ".into();
                l.title_en = String::new();
            }),
            "title_zh",
        ),
        (bad(|l| l.card = "a\u{7}b".into()), "card"),
        (bad(|l| l.tags = vec!["t".into(); 17]), "tags"),
        (
            bad(|l| l.licence = Licence::Spdx("GPL-9".into())),
            "licence",
        ),
        (
            bad(|l| l.licence = Licence::Custom("\u{200b}".into())),
            "licence_text",
        ),
        (
            bad(|l| l.price = Price::PerPeriod { micros: 1, days: 0 }),
            "period_days",
        ),
        (bad(|l| l.kind = ListingKind::Model), "model"),
    ] {
        let shown = format!("{listing:?}");
        assert_eq!(
            field_of(ex.create_listing(&ex.provider, listing).await),
            field,
            "{shown}"
        );
    }
    assert_eq!(ex.count("data_listings"), 1);

    // A model says what it is, and reads back so.
    let model = NewListing {
        kind: ListingKind::Model,
        model: Some(ModelInfo {
            framework: "PyTorch".into(),
            format: "safetensors".into(),
            parameters: 7_000_000_000,
        }),
        ..dataset("llm-7b", Price::Free, Gating::Manual)
    };
    let name = ex.create_listing(&ex.provider, model).await.unwrap();
    let p = ex.provider.clone();
    let stored = ex.read(|tx| tx.get_listing(&p, &name)).unwrap();
    assert_eq!(stored.model.unwrap().framework, "pytorch");

    // A consumer lists data once the operator admitted it, and no longer after.
    let l = || dataset("consumer-data", Price::Free, Gating::Automatic);
    assert!(matches!(
        ex.create_listing(&ex.buyer, l()).await,
        Err(StoreError::Forbidden(_))
    ));
    let b = ex.buyer.clone();
    ex.write(move |tx| tx.set_data_provider(&b, true))
        .await
        .unwrap();
    let b = ex.buyer.clone();
    assert!(ex.read(|tx| tx.is_data_provider(&b)).unwrap());
    ex.create_listing(&ex.buyer, l()).await.unwrap();
    let b = ex.buyer.clone();
    ex.write(move |tx| tx.set_data_provider(&b, false))
        .await
        .unwrap();
    assert!(matches!(
        ex.create_listing(&ex.buyer, dataset("more", Price::Free, Gating::Automatic))
            .await,
        Err(StoreError::Forbidden(_))
    ));
    assert_eq!(
        ex.write(|tx| tx.set_data_provider("org_missing", true))
            .await,
        Err(StoreError::NotFound("org"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drafts_answer_other_orgs_exactly_like_missing_ones() {
    let ex = Ex::new(100_000_000).await;
    let price = Price::PerVersion { micros: 1_000_000 };
    let name = ex
        .create_listing(&ex.provider, dataset("traffic", price, Gating::Automatic))
        .await
        .unwrap();
    let (p, o) = (ex.provider.clone(), ex.other.clone());
    let p2 = p.clone();
    ex.write(move |tx| tx.create_version(&p2, "traffic", "v1", T0))
        .await
        .unwrap();

    // Only a draft: the listing is the owner's alone.
    let missing = ex
        .read(|tx| tx.get_listing(&o, "no-such-listing"))
        .unwrap_err();
    assert_eq!(missing, StoreError::NotFound("listing"));
    assert_eq!(
        ex.read(|tx| tx.get_listing(&o, &name)).unwrap_err(),
        missing
    );
    assert_eq!(
        ex.read(|tx| tx.list_versions(&o, &name)).unwrap_err(),
        missing
    );
    assert!(ex
        .read(|tx| tx.list_listings(&o, None, "", 100))
        .unwrap()
        .is_empty());
    let mine = ex.read(|tx| tx.list_listings(&p, None, "", 100)).unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(
        ex.request(&ex.other, &name, Some("v1"), "", T0)
            .await
            .unwrap_err(),
        missing
    );
    let o2 = o.clone();
    assert_eq!(
        ex.write(move |tx| tx.create_version(&o2, "traffic", "v2", T0))
            .await
            .unwrap_err(),
        missing
    );

    // v1 published, v2 a draft: v2 reads as missing to others, in every way.
    let p2 = p.clone();
    ex.write(move |tx| {
        let p = &p2;
        tx.add_file(
            p,
            "traffic",
            "v1",
            &file("a.csv", 3),
            &VersionLimits::default(),
            T0,
        )?;
        tx.verify_file(p, "traffic", "v1", "a.csv", 3, &digest('a'), T0)?;
        tx.publish_version(p, "traffic", "v1", T0)?;
        tx.create_version(p, "traffic", "v2", T0)
    })
    .await
    .unwrap();
    assert!(ex.read(|tx| tx.get_listing(&o, &name)).unwrap().visible);
    let missing = ex.read(|tx| tx.get_version(&o, &name, "v9")).unwrap_err();
    assert_eq!(missing, StoreError::NotFound("version"));
    assert_eq!(
        ex.read(|tx| tx.get_version(&o, &name, "v2")).unwrap_err(),
        missing
    );
    assert_eq!(
        ex.read(|tx| tx.list_files(&o, &name, "v2")).unwrap_err(),
        missing
    );
    assert_eq!(
        ex.read(|tx| tx.may_use(&o, &name, "v2", T0)).unwrap_err(),
        missing
    );
    let labels = |viewer: &str| -> Vec<String> {
        ex.read(|tx| tx.list_versions(viewer, &name))
            .unwrap()
            .into_iter()
            .map(|v| v.label)
            .collect()
    };
    assert_eq!(labels(&o), ["v1"]);
    assert_eq!(labels(&p), ["v1", "v2"]);
    assert_eq!(
        ex.request(&ex.other, &name, Some("v2"), "", T0)
            .await
            .unwrap_err(),
        missing
    );
    for label in ["v2", "v9"] {
        let o = o.clone();
        let add = ex
            .write(move |tx| {
                tx.add_file(
                    &o,
                    "traffic",
                    label,
                    &file("b", 1),
                    &VersionLimits::default(),
                    T0,
                )
            })
            .await;
        assert_eq!(add.unwrap_err(), missing, "{label}");
    }
    ex.assert_books_sound();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_is_published_only_once_every_file_is_verified() {
    let ex = Ex::new(0).await;
    ex.create_listing(
        &ex.provider,
        dataset("traffic", Price::Free, Gating::Automatic),
    )
    .await
    .unwrap();
    let p = ex.provider.clone();
    let w = |f: fn(&mut Tx<'_>, &str) -> Result<String, StoreError>| {
        let p = p.clone();
        ex.write(move |tx| f(tx, &p))
    };
    let limits = VersionLimits::default();
    w(|tx, p| {
        tx.create_version(p, "traffic", "v1", T0)?;
        let f = tx.add_file(
            p,
            "traffic",
            "v1",
            &file("data/a.csv", 10),
            &VersionLimits::default(),
            T0,
        )?;
        assert!(f.object_prefix.starts_with("file_") && !f.object_prefix.contains('/'));
        tx.add_file(
            p,
            "traffic",
            "v1",
            &file("data/empty", 0),
            &VersionLimits::default(),
            T0,
        )?;
        Ok(f.path)
    })
    .await
    .unwrap();
    let add = |path: &'static str, size| {
        let p = p.clone();
        ex.write(move |tx| tx.add_file(&p, "traffic", "v1", &file(path, size), &limits, T0))
    };
    assert_eq!(field_of(add("data/a.csv", 1).await), "path");
    assert_eq!(field_of(add("data", 1).await), "path");
    assert_eq!(field_of(add("../x", 1).await), "path");
    assert_eq!(field_of(add("big", 65 << 30).await), "size");

    let publish = || w(|tx, p| tx.publish_version(p, "traffic", "v1", T0).map(|v| v.label));
    assert_eq!(field_of(publish().await), "files");

    // Parts: each recorded where the upload was; a stale one loses; none past the size.
    let part = |expected: u64, bytes: u64, state: &'static str| {
        let p = p.clone();
        ex.write(move |tx| {
            let part = UploadPart {
                expected_received_bytes: expected,
                bytes,
                hash_state: state.into(),
            };
            tx.record_upload_part(&p, "traffic", "v1", "data/a.csv", &part)
        })
    };
    let f = part(0, 4, "s1").await.unwrap();
    assert_eq!(
        (f.received_bytes, f.parts, f.hash_state.as_deref()),
        (4, 1, Some("s1"))
    );
    assert!(matches!(
        part(0, 4, "s1'").await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(field_of(part(4, 7, "s2").await), "size");
    assert_eq!(field_of(part(4, 0, "s2").await), "bytes");
    let f = part(4, 6, "s2").await.unwrap();
    assert_eq!((f.received_bytes, f.parts, f.verified), (10, 2, false));

    // The bytes must be what was declared; nothing is verified otherwise.
    let verify = |size: u64, sha: char| {
        let p = p.clone();
        ex.write(move |tx| {
            tx.verify_file(&p, "traffic", "v1", "data/a.csv", size, &digest(sha), T0)
        })
    };
    assert_eq!(field_of(verify(9, 'a').await), "size");
    assert_eq!(field_of(verify(10, 'b').await), "sha256");
    let restarted = w(|tx, p| {
        tx.restart_upload(p, "traffic", "v1", "data/a.csv")
            .map(|f| format!("{}/{}/{:?}", f.received_bytes, f.parts, f.hash_state))
    });
    assert_eq!(restarted.await.unwrap(), "0/0/None");
    let f = verify(10, 'a').await.unwrap();
    assert!(f.verified && f.hash_state.is_none() && f.received_bytes == 10);
    assert!(matches!(
        part(10, 1, "s3").await,
        Err(StoreError::Forbidden(_))
    ));

    // One file left.
    match publish().await {
        Err(StoreError::Invalid {
            field: "files",
            message,
        }) => {
            assert!(message.contains("data/empty"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    let p2 = p.clone();
    ex.write(move |tx| tx.verify_file(&p2, "traffic", "v1", "data/empty", 0, &digest('a'), T0))
        .await
        .unwrap();
    assert_eq!(publish().await.unwrap(), "v1");
    let o = ex.other.clone();
    let files = ex.read(|tx| tx.list_files(&o, "traffic", "v1")).unwrap();
    assert_eq!(files.len(), 2);
    let v = ex.read(|tx| tx.get_version(&o, "traffic", "v1")).unwrap();
    assert_eq!(
        (v.state, v.files, v.bytes),
        (VersionState::Published, 2, 10)
    );

    // Published: frozen, then deprecated once.
    assert!(matches!(
        add("late", 1).await,
        Err(StoreError::Forbidden(_))
    ));
    assert!(matches!(publish().await, Err(StoreError::Forbidden(_))));
    let deprecate = || {
        w(|tx, p| {
            tx.deprecate_version(p, "traffic", "v1", T0 + 1)
                .map(|v| v.label)
        })
    };
    assert_eq!(deprecate().await.unwrap(), "v1");
    assert!(matches!(deprecate().await, Err(StoreError::Forbidden(_))));
    let v = ex.read(|tx| tx.get_version(&o, "traffic", "v1")).unwrap();
    assert_eq!(
        (v.state, v.deprecated_ms),
        (VersionState::Deprecated, Some(T0 + 1))
    );
    assert_eq!(
        field_of(w(|tx, p| tx.create_version(p, "traffic", "v1", T0).map(|v| v.label)).await),
        "version"
    );
}
