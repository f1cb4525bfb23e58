//! `WebhookService`: registration (secret once, replace keeps secret and position, URL problems),
//! secret rotation, removal, and the pull API.

use chrono::Duration as Span;

use super::{World, event, request, t0, url};
use crate::events::EventsError;
use crate::events::domain::{EventType, UrlProblem};
use crate::events::ports::{EventLog, SecretBox, Webhooks};
use crate::events::service::{PullQuery, RegisterWebhook};
use crate::events::signature::SECRET_PREFIX;
use crate::testkit::PlainSecrets;

#[tokio::test]
async fn a_new_registration_answers_its_secret_once_and_a_replacement_keeps_secret_position_and_creation() {
    let w = World::new();
    let (view, secret) = w
        .service
        .register("p", request("p", &[EventType::CouponIssued]))
        .await
        .unwrap();
    let secret = secret.unwrap();
    assert!(secret.starts_with(SECRET_PREFIX), "{secret}");
    assert!(secret.len() > SECRET_PREFIX.len() + 40, "{secret}");
    let sealed = w.events.sealed_secret("p").await.unwrap().unwrap();
    assert_ne!(sealed, secret.as_bytes(), "the stored secret is sealed");
    assert_eq!(PlainSecrets.open(&sealed).await.unwrap(), secret);
    assert_eq!(view.registration.url, url("p"));
    assert_eq!(view.registration.events, vec![EventType::CouponIssued]);
    assert_eq!(
        (view.registration.created_at, view.registration.updated_at),
        (t0(), t0())
    );
    assert_eq!(view.delivery.delivered_through, 0);
    assert_eq!(view.delivery.next_attempt_at, t0());

    // The relay moved the position to 7 meanwhile.
    let mut moved = view.delivery.clone();
    moved.delivered_through = 7;
    let held = t0() + Span::minutes(1);
    w.events.lease("p", t0(), held).await.unwrap().unwrap();
    assert!(w.events.settle("p", held, &moved).await.unwrap());
    w.clock.advance(Span::minutes(5));
    let replacement = RegisterWebhook {
        url: "https://p.example/other".into(),
        events: vec![EventType::PointsEarned, EventType::CouponUsed],
    };
    let (view, secret) = w.service.register("p", replacement).await.unwrap();
    assert_eq!(secret, None, "a replaced registration never shows a secret again");
    assert_eq!(w.events.sealed_secret("p").await.unwrap().unwrap(), sealed);
    assert_eq!(view.registration.url, "https://p.example/other");
    assert_eq!(
        view.registration.events,
        vec![EventType::PointsEarned, EventType::CouponUsed]
    );
    assert_eq!(view.registration.created_at, t0());
    assert_eq!(view.registration.updated_at, t0() + Span::minutes(5));
    assert_eq!(view.delivery.delivered_through, 7);
}

#[tokio::test]
async fn a_malformed_url_is_invalid_a_refused_one_is_refused_and_neither_registers() {
    let w = World::new();
    w.vetting
        .refuse(&url("bad"), UrlProblem::Malformed("must be an absolute URL".into()));
    w.vetting
        .refuse(&url("private"), UrlProblem::Refused("resolves to 10.0.0.1".into()));
    match w
        .service
        .register("bad", request("bad", &[EventType::CouponIssued]))
        .await
    {
        Err(EventsError::Invalid(field)) => {
            assert_eq!(field.field, "url");
            assert_eq!(field.reason, "must be an absolute URL");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    match w
        .service
        .register("private", request("private", &[EventType::CouponIssued]))
        .await
    {
        Err(EventsError::UrlRefused(why)) => assert_eq!(why, "resolves to 10.0.0.1"),
        other => panic!("expected UrlRefused, got {other:?}"),
    }
    // The request's own checks come first: no types, a repeated type, an overlong URL.
    for (events, field) in [
        (vec![], "events"),
        (vec![EventType::CouponUsed, EventType::CouponUsed], "events"),
    ] {
        match w.service.register("p", request("p", &events)).await {
            Err(EventsError::Invalid(f)) => assert_eq!(f.field, field),
            other => panic!("expected Invalid {field}, got {other:?}"),
        }
    }
    let long = RegisterWebhook {
        url: format!("https://p.example/{}", "a".repeat(2048)),
        events: vec![EventType::CouponUsed],
    };
    assert!(matches!(
        w.service.register("p", long).await,
        Err(EventsError::Invalid(f)) if f.field == "url"
    ));
    for partner in ["bad", "private", "p"] {
        assert!(matches!(w.service.view(partner).await, Err(EventsError::NotRegistered)));
    }
}

#[tokio::test]
async fn a_registration_starts_after_the_last_sequence_so_earlier_events_are_not_delivered() {
    let w = World::new();
    w.append("p", EventType::CouponIssued, 2);
    w.round().await;
    assert_eq!(w.events.last_sequence().await.unwrap(), 2);
    w.register("p", &[EventType::CouponIssued]).await;
    assert_eq!(w.delivery("p").await.delivered_through, 2);
    w.events.append([event("p", EventType::CouponIssued, 99, w.now())]);
    let summary = w.round().await;
    assert_eq!((summary.deliveries, summary.delivered_events), (1, 1));
    let posts = w.transport.posts();
    assert_eq!(posts.len(), 1);
    let body: serde_json::Value = serde_json::from_str(&posts[0].body).unwrap();
    let sequences: Vec<u64> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(sequences, vec![3]);
    assert_eq!(body["events"][0]["data"]["n"], 99);
}

#[tokio::test]
async fn a_rotated_secret_replaces_the_old_and_removal_ends_the_registration() {
    let w = World::new();
    let first = w.register("p", &[EventType::CouponIssued]).await;
    let second = w.service.rotate_secret("p").await.unwrap();
    assert!(second.starts_with(SECRET_PREFIX));
    assert_ne!(first, second);
    let sealed = w.events.sealed_secret("p").await.unwrap().unwrap();
    assert_eq!(PlainSecrets.open(&sealed).await.unwrap(), second);
    w.service.remove("p").await.unwrap();
    assert!(matches!(w.service.view("p").await, Err(EventsError::NotRegistered)));
    assert!(matches!(w.service.remove("p").await, Err(EventsError::NotRegistered)));
    assert!(matches!(
        w.service.rotate_secret("p").await,
        Err(EventsError::NotRegistered)
    ));
    assert!(matches!(
        w.service.replay("p", t0()).await,
        Err(EventsError::NotRegistered)
    ));
}

#[tokio::test]
async fn pull_pages_through_the_partners_sequenced_events_and_next_stays_put_at_the_end() {
    let w = World::new();
    let now = w.now();
    // p gets sequences 1, 3, 4, 6, 7; q gets 2 and 5.
    for (n, partner) in ["p", "q", "p", "p", "q", "p", "p"].into_iter().enumerate() {
        w.events
            .append([event(partner, EventType::PointsEarned, n as u64, now)]);
    }
    assert_eq!(w.events.sequence(1000).await.unwrap(), 7);
    // Not yet sequenced: not pulled.
    w.events.append([event("p", EventType::PointsEarned, 100, now)]);
    let page = |after, limit| {
        let w = &w;
        async move {
            let page = w.service.pull("p", PullQuery { after, limit }).await.unwrap();
            let sequences: Vec<u64> = page.events.iter().map(|e| e.sequence).collect();
            (sequences, page.next)
        }
    };
    assert_eq!(page(0, 2).await, (vec![1, 3], 3));
    assert_eq!(page(3, 2).await, (vec![4, 6], 6));
    assert_eq!(page(6, 2).await, (vec![7], 7));
    assert_eq!(page(7, 2).await, (vec![], 7));
    assert_eq!(page(50, 100).await, (vec![], 50));
    assert_eq!(page(0, 100).await, (vec![1, 3, 4, 6, 7], 7));
    let q = w.service.pull("q", PullQuery { after: 0, limit: 100 }).await.unwrap();
    assert_eq!(q.events.iter().map(|e| e.sequence).collect::<Vec<_>>(), vec![2, 5]);
    assert!(q.events.iter().all(|e| e.partner_id == "q"));
    assert_eq!(q.events[0].id, "evt_2");
    let first = &w
        .service
        .pull("p", PullQuery { after: 0, limit: 1 })
        .await
        .unwrap()
        .events[0];
    assert_eq!(first.kind, EventType::PointsEarned);
    assert_eq!(first.occurred_at, "2026-03-01T12:00:00.000Z");
    assert_eq!(first.data, serde_json::json!({ "n": 0 }));
}

#[test]
fn the_pull_query_takes_after_and_limit_only_within_bounds() {
    let parse = |pairs: &[(&'static str, &'static str)]| PullQuery::parse(pairs.iter().copied());
    assert_eq!(parse(&[]).unwrap(), PullQuery { after: 0, limit: 100 });
    assert_eq!(
        parse(&[("after", "42"), ("limit", "1000")]).unwrap(),
        PullQuery { after: 42, limit: 1000 }
    );
    assert_eq!(parse(&[("limit", "1")]).unwrap(), PullQuery { after: 0, limit: 1 });
    assert_eq!(parse(&[("after", "18446744073709551615")]).unwrap().after, u64::MAX);
    for (pairs, field) in [
        (&[("limit", "0")][..], "limit"),
        (&[("limit", "1001")], "limit"),
        (&[("limit", "")], "limit"),
        (&[("limit", "1e2")], "limit"),
        (&[("limit", "99999999999")], "limit"),
        (&[("after", "-1")], "after"),
        (&[("after", "+1")], "after"),
        (&[("after", " 1")], "after"),
        (&[("after", "")], "after"),
        (&[("after", "0x10")], "after"),
        (&[("after", "18446744073709551616")], "after"),
        (&[("cursor", "1")], "query"),
        (&[("after", "1"), ("Limit", "5")], "query"),
    ] {
        match parse(pairs) {
            Err(e) => assert_eq!(e.field, field, "{pairs:?}"),
            Ok(q) => panic!("{pairs:?} parsed as {q:?}"),
        }
    }
}
