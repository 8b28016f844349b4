//! Access: granted at once or held until answered, funds, periods, revocation.

use suanli_core::data::{Gating, Price};
use suanli_core::decide::data::{RequestAction, RequestState, DEFAULT_APPROVAL_TIMEOUT_MS};
use suanli_core::ledger::AccountKind;
use suanli_store::ops::AccessOutcome;
use suanli_store::StoreError;

use crate::harness::{dataset, field_of, Ex, DAY, T0};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_access_pays_the_owner_less_the_fee_at_once() {
    let ex = Ex::new(100_000_000).await;
    let price = Price::PerVersion { micros: 10_000_000 };
    let name = ex
        .create_listing(&ex.provider, dataset("traffic", price, Gating::Automatic))
        .await
        .unwrap();
    ex.publish(&name, "v1").await;
    let fees_before = ex.balance(&ex.operator, AccountKind::Fees);

    let got = ex
        .request(&ex.buyer, &name, Some("v1"), "", T0)
        .await
        .unwrap();
    assert_eq!(got.request.state, RequestState::Approved);
    assert_eq!(got.request.held_micros, 10_000_000);
    let e = got.entitlement.clone().unwrap();
    assert_eq!(
        (e.version.as_deref(), e.until_ms, e.from_ms),
        (Some("v1"), None, T0)
    );
    assert_eq!(ex.balance(&ex.buyer, AccountKind::Available), 90_000_000);
    assert_eq!(ex.balance(&ex.buyer, AccountKind::Held), 0);
    assert_eq!(ex.balance(&ex.provider, AccountKind::Earnings), 9_500_000);
    assert_eq!(
        ex.balance(&ex.operator, AccountKind::Fees) - fees_before,
        500_000
    );

    // The hold was posted once, and each transfer names the hold and the request, no lease.
    let hold_id = got.request.hold_id.clone().unwrap();
    let b = ex.buyer.clone();
    let statement = ex.read(|tx| tx.statement(&b, 0, 100)).unwrap();
    let of_request: Vec<_> = statement
        .iter()
        .filter(|t| t.access_request_id.as_deref() == Some(got.request.id.as_str()))
        .collect();
    let kinds: Vec<&str> = of_request.iter().map(|t| t.kind.as_str()).collect();
    assert_eq!(kinds, ["hold", "settle", "fee"]);
    let paid: u64 = of_request[1..].iter().map(|t| t.amount_micros).sum();
    assert_eq!(
        paid, of_request[0].amount_micros,
        "the hold is paid out whole, once"
    );
    assert!(of_request
        .iter()
        .all(|t| t.hold_id.as_deref() == Some(hold_id.as_str()) && t.lease_id.is_none()));
    ex.assert_books_sound();

    // Had already; per version: a later version is not covered.
    assert_eq!(
        field_of(ex.request(&ex.buyer, &name, Some("v1"), "", T0).await),
        "listing"
    );
    assert_eq!(
        field_of(ex.request(&ex.buyer, &name, None, "", T0).await),
        "version"
    );
    assert!(matches!(
        ex.request(&ex.provider, &name, Some("v1"), "", T0).await,
        Err(StoreError::Forbidden(_))
    ));
    ex.publish(&name, "v2").await;
    let b = ex.buyer.clone();
    assert_eq!(
        ex.read(|tx| tx.may_use(&b, &name, "v1", T0 + DAY))
            .unwrap()
            .label,
        "v1"
    );
    assert!(matches!(
        ex.read(|tx| tx.may_use(&b, &name, "v2", T0 + DAY)),
        Err(StoreError::Forbidden(_))
    ));
    let p = ex.provider.clone();
    ex.read(|tx| tx.may_use(&p, &name, "v2", T0)).unwrap();
    ex.assert_books_sound();

    // A free listing moves no money and opens every version.
    let free = ex
        .create_listing(
            &ex.provider,
            dataset("free-data", Price::Free, Gating::Automatic),
        )
        .await
        .unwrap();
    ex.publish(&free, "v1").await;
    let transfers = ex.count("transfers");
    let got = ex
        .request(&ex.buyer, &free, Some("v1"), "", T0)
        .await
        .unwrap();
    assert_eq!((got.request.hold_id, got.request.held_micros), (None, 0));
    assert_eq!(got.entitlement.unwrap().version, None);
    assert_eq!(ex.count("transfers"), transfers);
    ex.assert_books_sound();
}

/// A manual listing sold per period, and a buyer whose request for it is pending.
async fn pending(ex: &Ex, name: &str, now_ms: i64) -> AccessOutcome {
    let got = ex
        .request(&ex.buyer, name, None, "交通规划研究", now_ms)
        .await
        .unwrap();
    assert_eq!(got.request.state, RequestState::Pending);
    assert_eq!(got.request.expires_ms, now_ms + DEFAULT_APPROVAL_TIMEOUT_MS);
    assert_eq!(got.entitlement, None);
    assert_eq!(ex.balance(&ex.buyer, AccountKind::Held), 2_000_000);
    assert_eq!(ex.balance(&ex.buyer, AccountKind::Available), 98_000_000);
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_access_holds_until_answered_and_every_answer_ends_the_hold_once() {
    let ex = Ex::new(100_000_000).await;
    let price = Price::PerPeriod {
        micros: 2_000_000,
        days: 30,
    };
    let name = ex
        .create_listing(&ex.provider, dataset("traffic", price, Gating::Manual))
        .await
        .unwrap();
    ex.publish(&name, "v1").await;
    assert_eq!(
        field_of(ex.request(&ex.buyer, &name, None, " ", T0).await),
        "purpose"
    );

    // Denied: the hold is voided and the money is back.
    let r = pending(&ex, &name, T0).await.request;
    assert_eq!(
        field_of(ex.request(&ex.buyer, &name, None, "again", T0).await),
        "listing"
    );
    let (b, p, o) = (ex.buyer.clone(), ex.provider.clone(), ex.other.clone());
    assert!(matches!(
        ex.answer(Some(&b), &r.id, RequestAction::Approve, T0).await,
        Err(StoreError::Forbidden(_))
    ));
    assert_eq!(
        ex.answer(Some(&o), &r.id, RequestAction::Deny, T0)
            .await
            .unwrap_err(),
        StoreError::NotFound("request")
    );
    assert_eq!(
        ex.read(|tx| tx.get_access_request(&o, &r.id)).unwrap_err(),
        StoreError::NotFound("request")
    );
    let denied = ex
        .answer(Some(&p), &r.id, RequestAction::Deny, T0 + 1)
        .await
        .unwrap();
    assert_eq!(
        (denied.request.state, denied.request.decided_ms),
        (RequestState::Denied, Some(T0 + 1))
    );
    assert_eq!(ex.balance(&b, AccountKind::Available), 100_000_000);
    assert_eq!(ex.balance(&b, AccountKind::Held), 0);
    assert!(matches!(
        ex.answer(Some(&p), &r.id, RequestAction::Approve, T0 + 2)
            .await,
        Err(StoreError::Forbidden(_))
    ));
    ex.assert_books_sound();

    // Withdrawn by the buyer (the owner cannot).
    let r = pending(&ex, &name, T0).await.request;
    assert!(matches!(
        ex.answer(Some(&p), &r.id, RequestAction::Withdraw, T0)
            .await,
        Err(StoreError::Forbidden(_))
    ));
    let withdrawn = ex
        .answer(Some(&b), &r.id, RequestAction::Withdraw, T0)
        .await
        .unwrap();
    assert_eq!(withdrawn.request.state, RequestState::Withdrawn);
    assert_eq!(ex.balance(&b, AccountKind::Available), 100_000_000);
    ex.assert_books_sound();

    // No answer in time: the sweep expires it and voids the hold; a late approval is refused.
    let r = pending(&ex, &name, T0).await.request;
    let deadline = r.expires_ms;
    assert!(matches!(
        ex.answer(None, &r.id, RequestAction::Expire, deadline - 1)
            .await,
        Err(StoreError::Forbidden(_))
    ));
    let swept = ex
        .write(move |tx| tx.expire_access_requests(deadline - 1, 10))
        .await
        .unwrap();
    assert!(swept.is_empty());
    assert_eq!(
        ex.read(|tx| tx.due_access_requests(deadline, 10)).unwrap(),
        std::slice::from_ref(&r.id)
    );
    let swept = ex
        .write(move |tx| tx.expire_access_requests(deadline, 10))
        .await
        .unwrap();
    assert_eq!(swept.len(), 1);
    assert_eq!(swept[0].state, RequestState::Expired);
    assert_eq!(ex.balance(&b, AccountKind::Available), 100_000_000);
    assert!(matches!(
        ex.answer(Some(&p), &r.id, RequestAction::Approve, deadline)
            .await,
        Err(StoreError::Forbidden(_))
    ));
    let again = ex
        .write(move |tx| tx.expire_access_requests(deadline + DAY, 10))
        .await
        .unwrap();
    assert!(again.is_empty());
    ex.assert_books_sound();

    // Approved: the held price is paid out, the period runs from the approval.
    let fees_before = ex.balance(&ex.operator, AccountKind::Fees);
    let r = pending(&ex, &name, T0).await.request;
    let approved = ex
        .answer(Some(&p), &r.id, RequestAction::Approve, T0 + DAY)
        .await
        .unwrap();
    assert_eq!(approved.request.state, RequestState::Approved);
    let e = approved.entitlement.unwrap();
    assert_eq!(
        (e.version, e.from_ms, e.until_ms),
        (None, T0 + DAY, Some(T0 + 31 * DAY))
    );
    assert_eq!(ex.balance(&b, AccountKind::Held), 0);
    assert_eq!(ex.balance(&b, AccountKind::Available), 98_000_000);
    assert_eq!(ex.balance(&p, AccountKind::Earnings), 1_900_000);
    assert_eq!(
        ex.balance(&ex.operator, AccountKind::Fees) - fees_before,
        100_000
    );
    for action in [RequestAction::Approve, RequestAction::Deny] {
        assert!(matches!(
            ex.answer(Some(&p), &r.id, action, T0 + DAY).await,
            Err(StoreError::Forbidden(_))
        ));
    }
    assert_eq!(ex.balance(&p, AccountKind::Earnings), 1_900_000);

    // Each party lists the requests it is party to; a stranger none.
    let listed = |org: &str, state| {
        ex.read(|tx| tx.list_access_requests(org, state, 100))
            .unwrap()
            .len()
    };
    assert_eq!(
        (listed(&b, None), listed(&p, None), listed(&o, None)),
        (4, 4, 0)
    );
    assert_eq!(listed(&p, Some(RequestState::Expired)), 1);
    ex.assert_books_sound();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insufficient_funds_are_refused_with_nothing_written() {
    let ex = Ex::new(1_000_000).await;
    let price = Price::PerVersion { micros: 10_000_000 };
    for (name, gating) in [
        ("auto-data", Gating::Automatic),
        ("manual-data", Gating::Manual),
    ] {
        ex.create_listing(&ex.provider, dataset(name, price, gating))
            .await
            .unwrap();
        ex.publish(name, "v1").await;
    }
    let tables = [
        "access_requests",
        "entitlements",
        "holds",
        "transfers",
        "postings",
    ];
    let counts = |ex: &Ex| tables.map(|t| ex.count(t));
    let before = counts(&ex);
    for name in ["auto-data", "manual-data"] {
        match ex
            .request(&ex.buyer, name, Some("v1"), "research", T0)
            .await
        {
            Err(StoreError::InsufficientFunds {
                needed_micros: 10_000_000,
                available_micros: 1_000_000,
            }) => {}
            other => panic!("{name}: {other:?}"),
        }
    }
    assert_eq!(counts(&ex), before);
    assert_eq!(ex.balance(&ex.buyer, AccountKind::Available), 1_000_000);
    assert_eq!(ex.balance(&ex.buyer, AccountKind::Held), 0);
    ex.assert_books_sound();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_period_covers_every_version_until_it_ends_and_revocation_ends_it() {
    let ex = Ex::new(100_000_000).await;
    let price = Price::PerPeriod {
        micros: 3_000_000,
        days: 30,
    };
    let name = ex
        .create_listing(&ex.provider, dataset("traffic", price, Gating::Automatic))
        .await
        .unwrap();
    ex.publish(&name, "v1").await;
    ex.publish(&name, "v2").await;
    let first = ex.request(&ex.buyer, &name, None, "", T0).await.unwrap();
    let e = first.entitlement.unwrap();
    assert_eq!(
        (e.version.as_deref(), e.until_ms),
        (None, Some(T0 + 30 * DAY))
    );
    let (b, p, o) = (ex.buyer.clone(), ex.provider.clone(), ex.other.clone());
    let may = |at: i64, label: &'static str| ex.read(|tx| tx.may_use(&b, &name, label, at));
    may(T0, "v1").unwrap();
    may(T0 + 30 * DAY - 1, "v2").unwrap();
    match may(T0 + 30 * DAY, "v1") {
        Err(StoreError::Forbidden(why)) => assert!(why.contains("ended"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        ex.read(|tx| tx.may_use(&o, &name, "v1", T0)),
        Err(StoreError::Forbidden(_))
    ));

    // Bought ahead at day 10: the new period runs on from the first one's end.
    let second = ex
        .request(&ex.buyer, &name, None, "", T0 + 10 * DAY)
        .await
        .unwrap();
    let e2 = second.entitlement.unwrap();
    assert_eq!(e2.until_ms, Some(T0 + 60 * DAY));
    may(T0 + 45 * DAY, "v2").unwrap();
    assert_eq!(ex.balance(&b, AccountKind::Available), 94_000_000);
    assert_eq!(ex.balance(&p, AccountKind::Earnings), 5_700_000);

    // Both sides see the entitlements; a stranger none; only the owner revokes, once.
    let seen = |org: &str| {
        ex.read(|tx| tx.entitlements(org, Some(&name)))
            .unwrap()
            .len()
    };
    assert_eq!((seen(&b), seen(&p), seen(&o)), (2, 2, 0));
    let revoke = |actor: String, id: String| {
        ex.write(move |tx| tx.revoke_entitlement(&actor, &id, T0 + 11 * DAY))
    };
    assert_eq!(
        revoke(b.clone(), e2.id.clone()).await.unwrap_err(),
        StoreError::NotFound("entitlement")
    );
    for id in [&e.id, &e2.id] {
        let r = revoke(p.clone(), id.clone()).await.unwrap();
        assert_eq!(r.revoked_ms, Some(T0 + 11 * DAY));
    }
    assert!(matches!(
        revoke(p.clone(), e2.id.clone()).await,
        Err(StoreError::Forbidden(_))
    ));
    match may(T0 + 12 * DAY, "v1") {
        Err(StoreError::Forbidden(why)) => assert!(why.contains("revoked"), "{why}"),
        other => panic!("{other:?}"),
    }
    // Revoked access may be bought again; the money already paid stays paid.
    let third = ex
        .request(&ex.buyer, &name, None, "", T0 + 12 * DAY)
        .await
        .unwrap();
    assert_eq!(third.entitlement.unwrap().until_ms, Some(T0 + 42 * DAY));
    may(T0 + 12 * DAY, "v1").unwrap();
    assert_eq!(ex.balance(&b, AccountKind::Available), 91_000_000);
    ex.assert_books_sound();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_retried_with_its_key_is_paid_once_and_a_refusal_stays_the_answer() {
    use suanli_store::once::{Encoded, Key, Once};
    use suanli_store::ops::AccessRequest;

    let ex = Ex::new(15_000_000).await;
    let price = Price::PerVersion { micros: 10_000_000 };
    let name = ex
        .create_listing(&ex.provider, dataset("traffic", price, Gating::Automatic))
        .await
        .unwrap();
    ex.publish(&name, "v1").await;
    ex.publish(&name, "v2").await;
    let run = |key: &'static str, version: &'static str| {
        let (buyer, listing) = (ex.buyer.clone(), name.clone());
        ex.write(move |tx| {
            let r = AccessRequest {
                buyer_org_id: buyer.clone(),
                listing: listing.clone(),
                version: Some(version.into()),
                accept_licence: true,
                purpose: String::new(),
                approval_timeout_ms: DEFAULT_APPROVAL_TIMEOUT_MS,
                now_ms: T0,
            };
            let key = Key {
                org_id: &buyer,
                key: Some(key),
                request_sha256: version,
            };
            let encode = |result: Result<AccessOutcome, StoreError>| {
                Ok(Encoded {
                    status: if result.is_ok() { 200 } else { 409 },
                    body: format!("{:?}", result.map(|o| o.request.id)),
                    stored_body: None,
                })
            };
            match tx.once(&key, T0, |tx| tx.request_access(&r), encode)? {
                Once::Answer(answer) => Ok((answer.status, answer.body)),
                Once::KeyReused => Ok((422, String::new())),
            }
        })
    };
    let first = run("k1", "v1").await.unwrap();
    assert_eq!(first.0, 200);
    assert_eq!(run("k1", "v1").await.unwrap(), first);
    assert_eq!(run("k1", "v2").await.unwrap().0, 422);
    assert_eq!(ex.balance(&ex.buyer, AccountKind::Available), 5_000_000);
    // Too little left for v2: refused, nothing written, and the refusal is the key's answer
    // even once the funds are there.
    let refused = run("k2", "v2").await.unwrap();
    assert_eq!(refused.0, 409);
    assert!(refused.1.contains("InsufficientFunds"), "{}", refused.1);
    let b = ex.buyer.clone();
    ex.write(move |tx| tx.deposit(&b, 20_000_000, "bank-2", T0))
        .await
        .unwrap();
    assert_eq!(run("k2", "v2").await.unwrap(), refused);
    assert_eq!(run("k3", "v2").await.unwrap().0, 200);
    assert_eq!(ex.balance(&ex.buyer, AccountKind::Available), 15_000_000);
    assert_eq!(ex.balance(&ex.provider, AccountKind::Earnings), 19_000_000);
    ex.assert_books_sound();
}
