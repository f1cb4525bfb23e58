//! `EventRelay`: sequencing, signed per-partner deliveries in batches, types passed over, backoff,
//! pause and replay, a hanging endpoint beside a prompt one, the bus, pruning.

use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Duration as Span;
use serde_json::Value;

use super::{POST_TIMEOUT, World, event, url};
use crate::events::catalog;
use crate::events::domain::{EventType, MAX_EVENTS_PER_DELIVERY};
use crate::events::ports::{EventLog, Webhooks};
use crate::events::relay::EVENTBRIDGE_CURSOR;
use crate::events::signature::{self, SignatureError};
use crate::testkit::{Answer, Post};

/// The sequences a POST carried, in its order.
fn sequences(post: &Post) -> Vec<u64> {
    let body: Value = serde_json::from_str(&post.body).unwrap();
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["sequence"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_committed_event_is_sequenced_and_delivered_signed_with_the_partners_current_secret() {
    let w = World::new();
    let secret = w.register("p", &EventType::ALL).await;
    let now = w.now();
    w.events
        .append([catalog::coupon_issued("p", 41, 7, "u1", now, now + Span::days(1), now)]);
    let summary = w.round().await;
    assert_eq!(
        (summary.sequenced, summary.deliveries, summary.delivered_events),
        (1, 1, 1)
    );
    assert_eq!(w.events.sequences(), vec![(1, Some(1))]);
    let posts = w.transport.posts();
    assert_eq!(posts.len(), 1);
    let post = &posts[0];
    assert_eq!(post.url, url("p"));
    assert!(post.signature.starts_with(&format!("t={},v1=", now.timestamp())));
    assert_eq!(
        signature::verify(&secret, &post.signature, &post.body, now.timestamp(), 300),
        Ok(())
    );
    assert_eq!(
        signature::verify("whsec_other", &post.signature, &post.body, now.timestamp(), 300),
        Err(SignatureError::Mismatch)
    );
    let body: Value = serde_json::from_str(&post.body).unwrap();
    let sent = &body["events"][0];
    assert_eq!(sent["id"], "evt_1");
    assert_eq!(sent["type"], "coupon.issued");
    assert_eq!(sent["partnerId"], "p");
    assert_eq!(sent["sequence"], 1);
    assert_eq!(sent["data"]["couponId"], "41");
    let delivery = w.delivery("p").await;
    assert_eq!((delivery.delivered_through, delivery.attempts), (1, 0));
    assert_eq!(w.events.leased_until("p"), None, "the lease ends with the delivery");

    // Nothing new: nothing sent again.
    w.round().await;
    assert_eq!(w.transport.posts().len(), 1);

    // After a rotation only the new secret verifies.
    let rotated = w.service.rotate_secret("p").await.unwrap();
    w.append("p", EventType::CouponUsed, 1);
    w.round().await;
    let post = w.transport.posts().pop().unwrap();
    assert_eq!(sequences(&post), vec![2]);
    let verify = |s: &str| signature::verify(s, &post.signature, &post.body, now.timestamp(), 300);
    assert_eq!(verify(&rotated), Ok(()));
    assert_eq!(verify(&secret), Err(SignatureError::Mismatch));
}

#[tokio::test]
async fn only_subscribed_types_are_sent_but_the_position_moves_past_the_others() {
    let w = World::new();
    w.register("p", &[EventType::CouponIssued]).await;
    let now = w.now();
    w.events.append([
        event("p", EventType::CouponIssued, 1, now),
        event("p", EventType::CouponUsed, 2, now),
        event("p", EventType::CouponIssued, 3, now),
        event("p", EventType::CouponUsed, 4, now),
    ]);
    let summary = w.round().await;
    assert_eq!((summary.deliveries, summary.delivered_events), (1, 2));
    let posts = w.transport.posts();
    assert_eq!(posts.len(), 1);
    assert_eq!(sequences(&posts[0]), vec![1, 3]);
    assert_eq!(w.delivery("p").await.delivered_through, 4);

    // A batch with nothing subscribed sends nothing and still moves on.
    w.append("p", EventType::PointsEarned, 3);
    let summary = w.round().await;
    assert_eq!((summary.deliveries, summary.delivered_events), (0, 0));
    assert_eq!(w.transport.posts().len(), 1);
    assert_eq!(w.delivery("p").await.delivered_through, 7);
}

#[tokio::test]
async fn a_backlog_goes_in_posts_of_at_most_a_hundred_in_sequence_order_and_only_the_partners_own() {
    let w = World::new();
    w.register("p", &[EventType::PointsEarned]).await;
    let now = w.now();
    for n in 0..250 {
        w.events.append([event("p", EventType::PointsEarned, n, now)]);
        if n % 10 == 0 {
            w.events.append([event("q", EventType::PointsEarned, n, now)]);
        }
    }
    let summary = w.round().await;
    assert_eq!((summary.deliveries, summary.delivered_events), (1, 250));
    let posts = w.transport.posts();
    let sizes: Vec<usize> = posts.iter().map(|p| sequences(p).len()).collect();
    assert_eq!(sizes, vec![MAX_EVENTS_PER_DELIVERY, MAX_EVENTS_PER_DELIVERY, 50]);
    let sent: Vec<u64> = posts.iter().flat_map(sequences).collect();
    let expected: Vec<u64> = w
        .events
        .partner_events("p", 0, 1000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.sequence)
        .collect();
    assert_eq!(expected.len(), 250);
    assert_eq!(sent, expected);
    assert!(sent.windows(2).all(|pair| pair[0] < pair[1]));
    assert_eq!(w.delivery("p").await.delivered_through, *expected.last().unwrap());
}

#[tokio::test]
async fn a_failing_endpoint_backs_off_then_pauses_after_the_retry_period_and_a_replay_resumes_it() {
    let w = World::new();
    w.register("p", &[EventType::CouponUsed]).await;
    w.append("p", EventType::CouponUsed, 1);
    w.transport.answer(Answer::Status(500));
    let started = w.now();

    let summary = w.round().await;
    assert_eq!(
        (summary.deliveries, summary.failed_deliveries, summary.paused),
        (0, 1, 0)
    );
    let d = w.delivery("p").await;
    assert_eq!((d.delivered_through, d.attempts), (0, 1));
    assert_eq!(d.failing_since, Some(started));
    assert_eq!(d.last_error.as_deref(), Some("the endpoint answered 500"));
    let wait = d.next_attempt_at - w.now();
    assert!(wait >= Span::seconds(1) && wait <= Span::milliseconds(1250), "{wait}");
    assert_eq!(w.events.leased_until("p"), None);

    // Not due before its next attempt.
    w.round().await;
    assert_eq!(w.transport.posts().len(), 1);

    w.clock.advance(Span::seconds(2));
    w.round().await;
    assert_eq!(w.transport.posts().len(), 2);
    let d = w.delivery("p").await;
    assert_eq!((d.attempts, d.failing_since), (2, Some(started)));
    let wait = d.next_attempt_at - w.now();
    assert!(wait >= Span::seconds(2) && wait <= Span::milliseconds(2500), "{wait}");

    // Failing for the whole retry period (24 h): paused, and never due again by itself.
    w.clock.advance(Span::hours(24));
    let summary = w.round().await;
    assert_eq!((summary.failed_deliveries, summary.paused), (1, 1));
    let d = w.delivery("p").await;
    assert_eq!((d.attempts, d.paused_at), (3, Some(w.now())));
    assert_eq!(
        w.events.due(w.now() + Span::days(30), 10).await.unwrap(),
        Vec::<String>::new()
    );
    w.clock.advance(Span::days(1));
    w.round().await;
    assert_eq!(w.transport.posts().len(), 3);

    // The endpoint is back; an operator replays from before the event.
    w.transport.answer(Answer::Ok);
    assert_eq!(w.service.replay("p", started - Span::minutes(1)).await.unwrap(), 0);
    let d = w.delivery("p").await;
    assert_eq!(
        (d.attempts, d.paused_at, d.failing_since, d.last_error),
        (0, None, None, None)
    );
    let summary = w.round().await;
    assert_eq!((summary.deliveries, summary.delivered_events), (1, 1));
    assert_eq!(w.transport.posts().len(), 4);
    assert_eq!(w.delivery("p").await.delivered_through, 1);
}

#[tokio::test]
async fn a_replay_re_sends_from_the_first_event_at_or_after_since() {
    let w = World::new();
    w.register("p", &[EventType::CouponUsed]).await;
    let t = w.now();
    w.events.append([
        event("p", EventType::CouponUsed, 1, t - Span::hours(3)),
        event("q", EventType::CouponUsed, 2, t - Span::hours(2)),
        event("p", EventType::CouponUsed, 3, t - Span::hours(1)),
        event("p", EventType::CouponUsed, 4, t),
    ]);
    w.round().await;
    assert_eq!(w.delivery("p").await.delivered_through, 4);
    assert_eq!(w.service.replay("p", t - Span::hours(2)).await.unwrap(), 2);
    w.round().await;
    let post = w.transport.posts().pop().unwrap();
    assert_eq!(sequences(&post), vec![3, 4]);
    // A `since` after every event resumes after the last sequence: nothing re-sent.
    assert_eq!(w.service.replay("p", t + Span::hours(1)).await.unwrap(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_endpoint_does_not_hold_back_another_partners_delivery() {
    let w = World::new();
    // The slow partner is due first, so it is started first.
    w.register("slow", &[EventType::CouponUsed]).await;
    w.clock.advance(Span::milliseconds(1));
    w.register("fast", &[EventType::CouponUsed]).await;
    w.transport.answer_url(&url("slow"), Answer::Hang);
    w.append("slow", EventType::CouponUsed, 1);
    w.append("fast", EventType::CouponUsed, 1);
    w.events.sequence(100).await.unwrap();
    assert_eq!(
        w.events.due(w.now(), 10).await.unwrap(),
        vec!["slow".to_owned(), "fast".to_owned()]
    );
    let begun = tokio::time::Instant::now();
    let relay = w.relay.clone();
    let run = tokio::spawn(async move { relay.run(Duration::ZERO).await });

    let fast_done = tokio::time::timeout(Duration::from_secs(1), async {
        while w.delivery("fast").await.delivered_through != 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    assert!(fast_done.is_ok(), "the prompt partner's delivery waited");
    assert!(begun.elapsed() < POST_TIMEOUT);
    assert_eq!(w.transport.in_flight(), 1, "the slow POST is still in flight");
    assert_eq!(w.transport.posts_to(&url("slow")).len(), 1);
    assert!(!run.is_finished());
    assert!(w.events.leased_until("slow").is_some());
    assert_eq!(w.delivery("slow").await.attempts, 0);

    let summary = tokio::time::timeout(POST_TIMEOUT * 2, run).await.unwrap().unwrap();
    assert!(begun.elapsed() >= POST_TIMEOUT);
    assert_eq!((summary.deliveries, summary.failed_deliveries), (1, 1));
    let slow = w.delivery("slow").await;
    assert_eq!((slow.delivered_through, slow.attempts), (0, 1));
    assert_eq!(slow.last_error.as_deref(), Some("no answer within the deadline"));
    assert_eq!(w.events.leased_until("slow"), None);
}

#[tokio::test]
async fn the_bus_gets_every_event_once_and_its_cursor_follows() {
    let w = World::new();
    w.append("p", EventType::CouponIssued, 2);
    w.append("q", EventType::PointsEarned, 1);
    let summary = w.round().await;
    assert_eq!(summary.published, 3);
    let published = w.bus.published();
    assert_eq!(published.len(), 1);
    let seen: Vec<(u64, &str)> = published[0]
        .iter()
        .map(|e| (e.sequence, e.partner_id.as_str()))
        .collect();
    assert_eq!(seen, vec![(1, "p"), (2, "p"), (3, "q")]);
    assert_eq!(w.events.cursor(EVENTBRIDGE_CURSOR).await.unwrap(), 3);

    let summary = w.round().await;
    assert_eq!(summary.published, 0);
    assert_eq!(w.bus.published().len(), 1);

    w.append("q", EventType::PointsUsed, 1);
    w.round().await;
    let published = w.bus.published();
    assert_eq!(published.len(), 2);
    assert_eq!(published[1].iter().map(|e| e.sequence).collect::<Vec<_>>(), vec![4]);
    assert_eq!(w.events.cursor(EVENTBRIDGE_CURSOR).await.unwrap(), 4);
}

#[tokio::test]
async fn a_failing_bus_holds_back_its_cursor_only_and_webhooks_still_deliver() {
    let w = World::new();
    w.register("p", &[EventType::CouponIssued]).await;
    w.bus.failing.store(true, Ordering::SeqCst);
    w.append("p", EventType::CouponIssued, 2);
    let summary = w.round().await;
    assert_eq!(
        (summary.published, summary.deliveries, summary.delivered_events),
        (0, 1, 2)
    );
    assert_eq!(w.transport.posts().len(), 1);
    assert_eq!(w.events.cursor(EVENTBRIDGE_CURSOR).await.unwrap(), 0);
    assert!(w.bus.published().is_empty());

    w.bus.failing.store(false, Ordering::SeqCst);
    let summary = w.round().await;
    assert_eq!(summary.published, 2);
    let published = w.bus.published();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].iter().map(|e| e.sequence).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(w.events.cursor(EVENTBRIDGE_CURSOR).await.unwrap(), 2);
    assert_eq!(w.transport.posts().len(), 1, "nothing re-sent to the webhook");
}

#[tokio::test]
async fn pruning_removes_sequenced_events_older_than_the_retention_only() {
    let w = World::new();
    let now = w.now();
    w.events.append([
        event("p", EventType::CouponUsed, 1, now - Span::days(8)),
        event("p", EventType::CouponUsed, 2, now - Span::days(6)),
        event(
            "q",
            EventType::CouponUsed,
            3,
            now - Span::days(7) - Span::milliseconds(1),
        ),
    ]);
    let summary = w.round().await;
    assert_eq!((summary.sequenced, summary.pruned), (3, 2));
    let left: Vec<u64> = w
        .events
        .all_events(0, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.sequence)
        .collect();
    assert_eq!(left, vec![2]);

    // An unsequenced row is never pruned, however old (the relay has yet to hand it on).
    w.events
        .append([event("p", EventType::CouponUsed, 4, now - Span::days(30))]);
    assert_eq!(w.events.prune(now, 1000).await.unwrap(), 1);
    assert_eq!(w.events.rows(), 1);
    assert_eq!(w.events.sequences(), vec![(4, None)]);
}

#[tokio::test]
async fn a_repeated_once_key_records_one_event_and_sequences_follow_ids() {
    let w = World::new();
    let now = w.now();
    let issued = catalog::coupon_issued("p", 1, 7, "u", now, now + Span::days(1), now);
    w.events.append([issued.clone(), issued]);
    w.events.append([event("p", EventType::CouponUsed, 1, now)]);
    assert_eq!(w.events.sequence(1).await.unwrap(), 1);
    assert_eq!(w.events.sequences(), vec![(1, Some(1)), (2, None)]);
    assert_eq!(w.events.sequence(1000).await.unwrap(), 1);
    assert_eq!(w.events.sequence(1000).await.unwrap(), 0);
    assert_eq!(w.events.last_sequence().await.unwrap(), 2);
}

#[tokio::test]
async fn a_lease_is_taken_only_when_free_and_only_its_holder_writes() {
    let w = World::new();
    w.register("p", &[EventType::CouponUsed]).await;
    // Ten events, so the partner stays due past position 9.
    for n in 1..=10 {
        w.append("p", EventType::CouponUsed, n);
    }
    w.events.sequence(100).await.unwrap();
    let now = w.now();
    let (_, state) = w.events.lease("p", now, now + Span::minutes(1)).await.unwrap().unwrap();
    assert!(
        w.events
            .lease("p", now, now + Span::minutes(1))
            .await
            .unwrap()
            .is_none()
    );
    assert!(w.events.due(now, 10).await.unwrap().is_empty(), "leased: not due");
    // A lapsed lease can be taken again.
    let later = now + Span::minutes(1);
    assert!(
        w.events
            .lease("p", later, later + Span::minutes(1))
            .await
            .unwrap()
            .is_some()
    );
    // Only the lease's holder writes: the first lease's holder lost it when it lapsed.
    let held = later + Span::minutes(1);
    let mut ahead = state.clone();
    ahead.delivered_through = 9;
    assert!(!w.events.settle("p", now + Span::minutes(1), &ahead).await.unwrap());
    assert_eq!(w.delivery("p").await.delivered_through, state.delivered_through);
    assert!(w.events.renew("p", held, held + Span::minutes(1)).await.unwrap());
    assert!(w.events.settle("p", held + Span::minutes(1), &ahead).await.unwrap());
    assert_eq!(w.delivery("p").await.delivered_through, 9);
    assert_eq!(w.events.due(now, 10).await.unwrap(), vec!["p".to_owned()]);
    // A replay ends any lease: a relay delivering meanwhile writes nothing over it.
    let (_, during) = w.events.lease("p", now, held).await.unwrap().unwrap();
    assert!(w.events.rewind("p", 2, now).await.unwrap());
    assert!(!w.events.settle("p", held, &during).await.unwrap());
    assert_eq!(w.delivery("p").await.delivered_through, 2);
    assert!(w.events.lease("nobody", now, later).await.unwrap().is_none());
}

/// A registered partner with nothing to deliver is not due: an idle relay sleeps between rounds
/// instead of leasing, reading and settling in a tight loop (it did: about 10 000 leases in
/// 300 ms here, before `due` asked for a pending event).
#[tokio::test]
async fn an_idle_relay_with_a_registered_partner_sleeps_between_rounds() {
    let w = World::new();
    w.register("p", &[EventType::CouponUsed]).await;
    let run = Duration::from_millis(300);
    let summary = tokio::time::timeout(run * 10, w.relay.run(run)).await.unwrap();
    assert_eq!(summary.deliveries, 0);
    // Idle is 200 ms: a relay that sleeps when idle leases at most once per round.
    let leases = w.events.lease_calls.load(Ordering::SeqCst);
    assert!(leases <= 5, "{leases} leases in {run:?} with nothing to deliver");
}

/// A secret sealed under another key (a lost or replaced key) is that partner's failure: it backs
/// off and is retried like a failing endpoint, while every other partner is delivered.
#[tokio::test]
async fn a_secret_that_does_not_open_backs_its_partner_off_and_others_are_delivered() {
    let w = World::new();
    w.register("bad", &EventType::ALL).await;
    w.register("good", &EventType::ALL).await;
    w.events
        .replace_secret("bad", b"sealed under another key", w.now())
        .await
        .unwrap();
    w.append("bad", EventType::CouponUsed, 1);
    w.append("good", EventType::CouponUsed, 2);
    w.round().await;
    assert_eq!(
        w.transport.posts_to(&url("good")).len(),
        1,
        "the other partner is delivered"
    );
    assert!(w.transport.posts_to(&url("bad")).is_empty(), "nothing unsigned is sent");
    let bad = w.delivery("bad").await;
    assert_eq!((bad.delivered_through, bad.attempts), (0, 1));
    assert!(bad.next_attempt_at > w.now(), "backed off: not due again at once");
    assert!(
        bad.last_error
            .as_deref()
            .unwrap_or("")
            .contains("signing secret could not be opened"),
        "{:?}",
        bad.last_error
    );
    assert_eq!(w.events.leased_until("bad"), None, "the failed attempt ends its lease");
}
