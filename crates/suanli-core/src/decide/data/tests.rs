use super::*;
use crate::decide::settle::Leg;
use crate::ledger::TransferKind;

const DAY: i64 = 86_400_000;

fn provider() -> Publisher {
    Publisher {
        org_id: "org_p".into(),
        kind: OrgKind::Provider,
        data_provider: false,
    }
}

fn dataset() -> NewListing {
    NewListing {
        name: "beijing-traffic-2026".into(),
        kind: ListingKind::Dataset,
        title_zh: "  北京交通流量数据集 ".into(),
        title_en: String::new(),
        description_zh: "2026 年北京市道路交通流量。\n每 5 分钟一条。".into(),
        description_en: String::new(),
        tags: vec!["交通".into(), "traffic".into(), "交通".into()],
        card: "# 数据集\n\n| 列 | 含义 |\n|---|---|\n".into(),
        licence: Licence::Spdx("cc-by-4.0".into()),
        access: AccessMode::Download,
        gating: Gating::Automatic,
        price: Price::PerVersion { micros: 10_000_000 },
        model: None,
    }
}

fn refused_field(r: Result<impl std::fmt::Debug, Refusal>) -> &'static str {
    match r {
        Err(Refusal::Invalid { field, .. } | Refusal::Duplicate { field, .. }) => field,
        other => panic!("expected a refusal naming a field, got {other:?}"),
    }
}

#[test]
fn a_listing_is_normalised_and_checked_field_by_field() {
    let l = decide_listing(&provider(), &dataset(), false).unwrap();
    assert_eq!(l.title_zh, "北京交通流量数据集");
    assert_eq!(l.tags, ["交通", "traffic"]);
    assert_eq!(l.licence, Licence::Spdx("CC-BY-4.0".into()));

    let consumer = Publisher {
        kind: OrgKind::Consumer,
        ..provider()
    };
    assert!(matches!(
        decide_listing(&consumer, &dataset(), false),
        Err(Refusal::Forbidden(_))
    ));
    let admitted = Publisher {
        data_provider: true,
        ..consumer
    };
    assert!(decide_listing(&admitted, &dataset(), false).is_ok());

    assert_eq!(
        refused_field(decide_listing(&provider(), &dataset(), true)),
        "name"
    );
    let cases: Vec<(NewListing, &str)> = vec![
        (
            NewListing {
                name: "Big Data".into(),
                ..dataset()
            },
            "name",
        ),
        (
            NewListing {
                title_zh: " ".into(),
                ..dataset()
            },
            "title_zh",
        ),
        (
            NewListing {
                title_en: "a\u{202e}b".into(),
                ..dataset()
            },
            "title_en",
        ),
        (
            NewListing {
                description_en: "x".repeat(MAX_DESCRIPTION + 1),
                ..dataset()
            },
            "description_en",
        ),
        (
            NewListing {
                card: "a\0b".into(),
                ..dataset()
            },
            "card",
        ),
        (
            NewListing {
                tags: vec!["t".into(); 17],
                ..dataset()
            },
            "tags",
        ),
        (
            NewListing {
                tags: vec!["長".repeat(33)],
                ..dataset()
            },
            "tags",
        ),
        (
            NewListing {
                licence: Licence::Spdx("GPL-9".into()),
                ..dataset()
            },
            "licence",
        ),
        (
            NewListing {
                licence: Licence::Custom("\u{200b}".into()),
                ..dataset()
            },
            "licence_text",
        ),
        (
            NewListing {
                price: Price::PerVersion { micros: 0 },
                ..dataset()
            },
            "price_micros",
        ),
        (
            NewListing {
                price: Price::PerPeriod { micros: 1, days: 0 },
                ..dataset()
            },
            "period_days",
        ),
        (
            NewListing {
                model: Some(ModelInfo {
                    framework: "pytorch".into(),
                    format: "safetensors".into(),
                    parameters: 1,
                }),
                ..dataset()
            },
            "model",
        ),
        (
            NewListing {
                kind: ListingKind::Model,
                ..dataset()
            },
            "model",
        ),
        (
            NewListing {
                kind: ListingKind::Model,
                model: Some(ModelInfo {
                    framework: "py torch".into(),
                    format: "gguf".into(),
                    parameters: 1,
                }),
                ..dataset()
            },
            "framework",
        ),
        (
            NewListing {
                kind: ListingKind::Model,
                model: Some(ModelInfo {
                    framework: "pytorch".into(),
                    format: "gguf".into(),
                    parameters: 0,
                }),
                ..dataset()
            },
            "parameters",
        ),
    ];
    for (listing, field) in cases {
        assert_eq!(
            refused_field(decide_listing(&provider(), &listing, false)),
            field,
            "{listing:?}"
        );
    }
}

fn file(path: &str, size: u64, verified: bool) -> FileFacts {
    FileFacts {
        path: path.into(),
        size,
        sha256: "ab".repeat(32),
        verified,
    }
}

fn draft(files: Vec<FileFacts>) -> VersionSnapshot {
    VersionSnapshot {
        owner_org_id: "org_p".into(),
        state: VersionState::Draft,
        files,
    }
}

#[test]
fn versions_take_files_until_published_and_never_after() {
    let limits = VersionLimits {
        max_file_bytes: 100,
        max_files: 2,
        max_version_bytes: 150,
    };
    assert_eq!(decide_new_version("org_p", "org_p", "v1", false), Ok(()));
    assert_eq!(
        refused_field(decide_new_version("org_p", "org_p", "v1", true)),
        "version"
    );
    assert_eq!(
        refused_field(decide_new_version("org_p", "org_p", "../v1", false)),
        "version"
    );
    assert_eq!(
        decide_new_version("org_p", "org_x", "v1", false),
        Err(Refusal::NotFound("listing"))
    );

    let v = draft(vec![file("data/a.csv", 60, false)]);
    assert_eq!(
        decide_add_file(&v, "org_p", &file("data/b.csv", 60, false), &limits),
        Ok(())
    );
    assert_eq!(
        decide_add_file(&v, "org_x", &file("b", 1, false), &limits),
        Err(Refusal::NotFound("version"))
    );
    for (f, field) in [
        (file("../etc/passwd", 1, false), "path"),
        (file("/abs", 1, false), "path"),
        (file("data/a.csv", 1, false), "path"),
        (file("data", 1, false), "path"),
        (file("data/a.csv/x", 1, false), "path"),
        (file("big", 101, false), "size"),
        (file("c", 91, false), "size"),
        (
            FileFacts {
                sha256: "XYZ".into(),
                ..file("d", 1, false)
            },
            "sha256",
        ),
    ] {
        assert_eq!(
            refused_field(decide_add_file(&v, "org_p", &f, &limits)),
            field,
            "{f:?}"
        );
    }
    let full = draft(vec![file("a", 1, true), file("b", 1, true)]);
    assert_eq!(
        refused_field(decide_add_file(
            &full,
            "org_p",
            &file("c", 1, false),
            &limits
        )),
        "path"
    );

    // Uploads are kept only when they are what was declared.
    assert_eq!(
        decide_upload(&v, "org_p", "data/a.csv", 60, &"ab".repeat(32)),
        Ok(())
    );
    assert_eq!(
        refused_field(decide_upload(
            &v,
            "org_p",
            "data/a.csv",
            59,
            &"ab".repeat(32)
        )),
        "size"
    );
    assert_eq!(
        refused_field(decide_upload(
            &v,
            "org_p",
            "data/a.csv",
            60,
            &"cd".repeat(32)
        )),
        "sha256"
    );
    assert_eq!(
        decide_upload(&v, "org_p", "nope", 60, &"ab".repeat(32)),
        Err(Refusal::NotFound("file"))
    );

    // Published only when complete; then frozen.
    assert_eq!(
        refused_field(decide_publish(&draft(vec![]), "org_p")),
        "files"
    );
    let half = draft(vec![file("a", 1, true), file("b", 1, false)]);
    match decide_publish(&half, "org_p") {
        Err(Refusal::Invalid {
            field: "files",
            message,
        }) => assert!(
            message.contains("1 file(s) not uploaded yet: b"),
            "{message}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(decide_publish(&full, "org_p"), Ok(()));
    let published = VersionSnapshot {
        state: VersionState::Published,
        ..full
    };
    assert!(matches!(
        decide_publish(&published, "org_p"),
        Err(Refusal::Forbidden(_))
    ));
    assert!(matches!(
        decide_add_file(&published, "org_p", &file("z", 1, false), &limits),
        Err(Refusal::Forbidden(_))
    ));
    assert!(matches!(
        decide_upload(&published, "org_p", "a", 1, &"ab".repeat(32)),
        Err(Refusal::Forbidden(_))
    ));
    assert_eq!(decide_deprecate(&published, "org_p"), Ok(()));
    assert_eq!(
        decide_deprecate(&published, "org_x"),
        Err(Refusal::NotFound("version"))
    );
    assert!(decide_deprecate(&half, "org_p").is_err());
}

fn snapshot(price: Price, gating: Gating) -> AccessSnapshot {
    AccessSnapshot {
        owner_org_id: "org_p".into(),
        price,
        gating,
        fee_bps: 500,
        version: Some(("v1".into(), VersionState::Published)),
        pending_request: false,
        entitlement: None,
    }
}

fn sum(legs: &[Leg], kind: TransferKind) -> u64 {
    legs.iter()
        .filter(|l| l.kind == kind)
        .map(|l| l.amount_micros)
        .sum()
}

#[test]
fn automatic_access_holds_and_pays_at_once() {
    let s = snapshot(Price::PerVersion { micros: 1_000_000 }, Gating::Automatic);
    let AccessPlan::Grant { entitlement, legs } =
        decide_request(&s, "org_c", true, "", DEFAULT_APPROVAL_TIMEOUT_MS, 5).unwrap()
    else {
        panic!("automatic gating grants")
    };
    assert_eq!(entitlement.version.as_deref(), Some("v1"));
    assert_eq!(entitlement.until_ms, None);
    assert_eq!(sum(&legs, TransferKind::Hold), 1_000_000);
    assert_eq!(sum(&legs, TransferKind::Settle), 950_000);
    assert_eq!(sum(&legs, TransferKind::Fee), 50_000);
    assert_eq!(
        legs[0].kind,
        TransferKind::Hold,
        "held before it is paid out"
    );
    assert!(entitlement.covers("v1", 5) && !entitlement.covers("v2", 5));

    let free = snapshot(Price::Free, Gating::Automatic);
    let AccessPlan::Grant { entitlement, legs } =
        decide_request(&free, "org_c", true, "", DEFAULT_APPROVAL_TIMEOUT_MS, 5).unwrap()
    else {
        panic!()
    };
    assert!(legs.is_empty());
    assert_eq!(
        entitlement.version, None,
        "a free listing opens every version"
    );

    // Refusals.
    assert_eq!(
        refused_field(decide_request(&s, "org_c", false, "", 1, 5)),
        "accept_licence"
    );
    assert!(matches!(
        decide_request(&s, "org_p", true, "", 1, 5),
        Err(Refusal::Forbidden(_))
    ));
    let no_version = AccessSnapshot {
        version: None,
        ..s.clone()
    };
    assert_eq!(
        refused_field(decide_request(&no_version, "org_c", true, "", 1, 5)),
        "version"
    );
    let a_draft = AccessSnapshot {
        version: Some(("v2".into(), VersionState::Draft)),
        ..s.clone()
    };
    assert_eq!(
        decide_request(&a_draft, "org_c", true, "", 1, 5),
        Err(Refusal::NotFound("version"))
    );
    let owned = AccessSnapshot {
        entitlement: Some(entitlement_of(Some("v1"), None)),
        ..s.clone()
    };
    assert_eq!(
        refused_field(decide_request(&owned, "org_c", true, "", 1, 5)),
        "listing"
    );
}

fn entitlement_of(version: Option<&str>, until_ms: Option<i64>) -> Entitlement {
    Entitlement {
        version: version.map(str::to_owned),
        from_ms: 0,
        until_ms,
        revoked: false,
    }
}

#[test]
fn a_period_bought_ahead_extends_the_running_one() {
    let s = AccessSnapshot {
        entitlement: Some(entitlement_of(None, Some(10 * DAY))),
        ..snapshot(
            Price::PerPeriod {
                micros: 7,
                days: 30,
            },
            Gating::Automatic,
        )
    };
    let AccessPlan::Grant { entitlement, .. } =
        decide_request(&s, "org_c", true, "", 1, 4 * DAY).unwrap()
    else {
        panic!()
    };
    assert_eq!(entitlement.until_ms, Some(40 * DAY));
    assert_eq!(entitlement.version, None);
    // After the running one ended, a new period starts now.
    let AccessPlan::Grant { entitlement, .. } =
        decide_request(&s, "org_c", true, "", 1, 12 * DAY).unwrap()
    else {
        panic!()
    };
    assert_eq!(entitlement.until_ms, Some(42 * DAY));
}

#[test]
fn manual_access_holds_until_the_owner_decides_and_every_path_ends_the_hold_once() {
    let s = snapshot(
        Price::PerPeriod {
            micros: 2_000_000,
            days: 30,
        },
        Gating::Manual,
    );
    assert_eq!(
        refused_field(decide_request(&s, "org_c", true, "  ", 1, 5)),
        "purpose"
    );
    let AccessPlan::Await { hold, expires_ms } = decide_request(
        &s,
        "org_c",
        true,
        "交通规划研究",
        DEFAULT_APPROVAL_TIMEOUT_MS,
        5,
    )
    .unwrap() else {
        panic!("manual gating waits")
    };
    assert_eq!(hold.unwrap().amount_micros, 2_000_000);
    assert_eq!(expires_ms, 5 + 7 * DAY);
    let pending = AccessSnapshot {
        pending_request: true,
        ..s.clone()
    };
    assert_eq!(
        refused_field(decide_request(&pending, "org_c", true, "again", 1, 5)),
        "listing"
    );

    let r = RequestSnapshot {
        buyer_org_id: "org_c".into(),
        version: None,
        price: s.price,
        state: RequestState::Pending,
        expires_ms,
        held_micros: 2_000_000,
    };
    let on =
        |actor: Option<&str>, action, now| decide_on_request(&r, "org_p", 500, actor, action, now);

    let approved = on(Some("org_p"), RequestAction::Approve, DAY).unwrap();
    assert_eq!(approved.state, RequestState::Approved);
    assert_eq!(
        sum(&approved.legs, TransferKind::Settle) + sum(&approved.legs, TransferKind::Fee),
        2_000_000
    );
    assert_eq!(sum(&approved.legs, TransferKind::Release), 0);
    let e = approved.entitlement.unwrap();
    assert_eq!(
        (e.from_ms, e.until_ms),
        (DAY, Some(31 * DAY)),
        "the period runs from the approval"
    );

    for (actor, action, state) in [
        (Some("org_p"), RequestAction::Deny, RequestState::Denied),
        (
            Some("org_c"),
            RequestAction::Withdraw,
            RequestState::Withdrawn,
        ),
    ] {
        let plan = on(actor, action, DAY).unwrap();
        assert_eq!(plan.state, state);
        assert_eq!(sum(&plan.legs, TransferKind::Release), 2_000_000);
        assert_eq!(plan.legs.len(), 1);
        assert_eq!(plan.entitlement, None);
    }
    // Only the right party does each; strangers see nothing.
    assert!(matches!(
        on(Some("org_c"), RequestAction::Approve, DAY),
        Err(Refusal::Forbidden(_))
    ));
    assert!(matches!(
        on(Some("org_p"), RequestAction::Withdraw, DAY),
        Err(Refusal::Forbidden(_))
    ));
    assert_eq!(
        on(Some("org_x"), RequestAction::Deny, DAY),
        Err(Refusal::NotFound("request"))
    );
    assert!(matches!(
        on(Some("org_p"), RequestAction::Expire, 8 * DAY),
        Err(Refusal::Forbidden(_))
    ));
    // No answer in time: the sweep voids the hold, and a late approval is refused.
    assert!(on(None, RequestAction::Expire, expires_ms - 1).is_err());
    let expired = on(None, RequestAction::Expire, expires_ms).unwrap();
    assert_eq!(sum(&expired.legs, TransferKind::Release), 2_000_000);
    assert!(on(Some("org_p"), RequestAction::Approve, expires_ms).is_err());
    // Decided once.
    let done = RequestSnapshot {
        state: RequestState::Denied,
        ..r.clone()
    };
    assert!(decide_on_request(
        &done,
        "org_p",
        500,
        Some("org_p"),
        RequestAction::Approve,
        DAY
    )
    .is_err());
    assert!(decide_on_request(&done, "org_p", 500, None, RequestAction::Expire, 9 * DAY).is_err());
}

#[test]
fn use_needs_a_live_entitlement_to_a_visible_version() {
    let per_version = [entitlement_of(Some("v1"), None)];
    assert_eq!(
        decide_use(
            "org_p",
            "org_c",
            "v1",
            VersionState::Published,
            &per_version,
            5
        ),
        Ok(())
    );
    assert_eq!(
        decide_use(
            "org_p",
            "org_c",
            "v1",
            VersionState::Deprecated,
            &per_version,
            5
        ),
        Ok(())
    );
    assert!(decide_use(
        "org_p",
        "org_c",
        "v2",
        VersionState::Published,
        &per_version,
        5
    )
    .is_err());
    assert_eq!(
        decide_use("org_p", "org_c", "v3", VersionState::Draft, &per_version, 5),
        Err(Refusal::NotFound("version"))
    );
    assert_eq!(
        decide_use("org_p", "org_p", "v3", VersionState::Draft, &[], 5),
        Ok(())
    );
    let period = [entitlement_of(None, Some(DAY))];
    assert_eq!(
        decide_use(
            "org_p",
            "org_c",
            "v9",
            VersionState::Published,
            &period,
            DAY - 1
        ),
        Ok(())
    );
    match decide_use(
        "org_p",
        "org_c",
        "v9",
        VersionState::Published,
        &period,
        DAY,
    ) {
        Err(Refusal::Forbidden(why)) => assert!(why.contains("ended"), "{why}"),
        other => panic!("{other:?}"),
    }
    let revoked = [Entitlement {
        revoked: true,
        ..entitlement_of(None, None)
    }];
    match decide_use("org_p", "org_c", "v1", VersionState::Published, &revoked, 5) {
        Err(Refusal::Forbidden(why)) => assert!(why.contains("revoked"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(decide_revoke("org_p", "org_p", &per_version[0]), Ok(()));
    assert_eq!(
        decide_revoke("org_p", "org_c", &per_version[0]),
        Err(Refusal::NotFound("entitlement"))
    );
    assert!(decide_revoke("org_p", "org_p", &revoked[0]).is_err());
}

#[test]
fn parts_resume_where_the_bytes_end_and_fill_the_file_exactly() {
    assert_eq!(decide_part(200, 0, false, 0, 128), Ok(()));
    assert_eq!(
        decide_part(200, 128, false, 128, 72),
        Ok(()),
        "the last part may be short"
    );
    assert_eq!(refused_field(decide_part(200, 128, false, 0, 64)), "offset");
    assert_eq!(refused_field(decide_part(200, 0, false, 0, 100)), "body");
    assert_eq!(refused_field(decide_part(200, 0, false, 0, 201)), "body");
    assert_eq!(refused_field(decide_part(200, 0, false, 0, 0)), "body");
    assert!(matches!(
        decide_part(200, 200, true, 200, 1),
        Err(Refusal::Forbidden(_))
    ));
}
