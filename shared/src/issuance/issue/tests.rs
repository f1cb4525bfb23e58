use std::sync::atomic::Ordering;

use chrono::Duration;

use super::*;
use crate::issuance::domain::{Outcome, Place, RejectionReason};
use crate::testkit::{ManualClock, MemoryCatalog, MemoryLedger, MemoryQueue, QueueFault, new_campaign};

pub(super) type Service = Issuance<MemoryCatalog, MemoryLedger, MemoryQueue>;

/// A campaign of `quantity` of partner "p1", open from `opens_in` after the clock's start for an
/// hour (the rejection memory's tests use it too).
pub(super) async fn service(quantity: u32, opens_in: Duration) -> (Service, CampaignId, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::default());
    let catalog = MemoryCatalog::default();
    let ledger = MemoryLedger::default();
    let now = clock.now();
    let campaign = catalog
        .create("p1", &new_campaign(quantity, now + opens_in), u32::MAX)
        .await
        .unwrap();
    ledger.prime(&(&campaign).into()).await.unwrap();
    let service = Issuance::new(catalog, ledger, MemoryQueue::default()).with_clock(clock.clone());
    (service, campaign.id, clock)
}

pub(super) fn user(u: &str) -> UserId {
    UserId::parse(u).unwrap()
}

#[tokio::test]
async fn first_come_first_served_then_duplicate_then_sold_out() {
    let (s, id, _) = service(2, Duration::zero()).await;
    let first = s.issue("p1", id, &user("a")).await.unwrap();
    assert_eq!(first.rank, 1);
    match s.issue("p1", id, &user("a")).await {
        Err(IssuanceError::AlreadyIssued { place, state }) => {
            assert_eq!(place, Place::of(first.request_id, 1), "the first answer again");
            assert_eq!(state, Some(IssueState::Pending));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.issue("p1", id, &user("b")).await.unwrap().rank, 2);
    assert!(matches!(
        s.issue("p1", id, &user("c")).await,
        Err(IssuanceError::SoldOut)
    ));
    let sent = s.queue().sent.lock().unwrap();
    assert_eq!(sent.iter().map(|r| r.user_id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(sent[0].partner_id, "p1");
}

#[tokio::test]
async fn the_window_is_judged_by_the_clock() {
    let (s, id, clock) = service(2, Duration::minutes(5)).await;
    assert!(matches!(
        s.issue("p1", id, &user("a")).await,
        Err(IssuanceError::NotOpen)
    ));
    clock.advance(Duration::minutes(5));
    assert!(s.issue("p1", id, &user("a")).await.is_ok(), "open at its first instant");
    clock.advance(Duration::hours(1));
    let ended = s.issue("p1", id, &user("b")).await.unwrap_err();
    assert!(matches!(ended, IssuanceError::Ended) && !ended.is_transient());
}

#[tokio::test]
async fn a_failed_enqueue_gives_the_place_back_and_is_transient() {
    let (s, id, _) = service(1, Duration::zero()).await;
    s.queue().fail_with(QueueFault::Refuse);
    let err = s.issue("p1", id, &user("a")).await.unwrap_err();
    assert!(matches!(err, IssuanceError::Unavailable(_)) && err.is_transient());
    assert_eq!(s.ledger().reserved_count(id).await.unwrap(), 0);
    assert!(
        s.ledger().pending(id, 10).await.unwrap().is_empty(),
        "nothing left for recovery"
    );
    s.queue().fail_with(QueueFault::None);
    assert!(s.issue("p1", id, &user("a")).await.is_ok(), "the same user may retry");
}

#[tokio::test]
async fn an_unknown_send_outcome_is_accepted_and_keeps_the_place_pending() {
    let (s, id, _) = service(1, Duration::zero()).await;
    s.queue().fail_with(QueueFault::LoseResponse);
    let accepted = s.issue("p1", id, &user("a")).await.unwrap();
    let pending = s.ledger().pending(id, 10).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!((pending[0].request_id, pending[0].rank), (accepted.request_id, 1));
    s.queue().fail_with(QueueFault::None);
    assert!(
        matches!(s.issue("p1", id, &user("b")).await, Err(IssuanceError::SoldOut)),
        "the place was not sold twice"
    );
}

#[tokio::test]
async fn a_sent_message_clears_its_pending_record() {
    let (s, id, _) = service(2, Duration::zero()).await;
    s.issue("p1", id, &user("a")).await.unwrap();
    assert!(s.ledger().pending(id, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn other_partners_and_unknown_campaigns_are_not_found() {
    let (s, id, _) = service(1, Duration::zero()).await;
    assert!(matches!(
        s.issue("p2", id, &user("a")).await,
        Err(IssuanceError::CampaignNotFound)
    ));
    assert!(matches!(
        s.issue("p1", id + 1, &user("a")).await,
        Err(IssuanceError::CampaignNotFound)
    ));
    assert!(matches!(
        s.status("p2", id, &user("a")).await,
        Err(IssuanceError::CampaignNotFound)
    ));
    assert_eq!(s.ledger().reserved_count(id).await.unwrap(), 0);
}

#[tokio::test]
async fn an_unprimed_campaign_is_transient_not_a_guess() {
    let (s, _, clock) = service(1, Duration::zero()).await;
    let never_primed = new_campaign(1, clock.now());
    let other = s.catalog().create("p1", &never_primed, u32::MAX).await.unwrap();
    let err = s.issue("p1", other.id, &user("a")).await.unwrap_err();
    assert!(matches!(err, IssuanceError::Unprimed(_)) && err.is_transient());
}

#[tokio::test]
async fn the_issue_path_never_reads_the_catalog_for_a_primed_campaign() {
    let (s, id, _) = service(10, Duration::zero()).await;
    for i in 0..20 {
        let _ = s.issue("p1", id, &user(&format!("u{i}"))).await;
        let _ = s.issue("p2", id, &user(&format!("u{i}"))).await;
        let _ = s.status("p1", id, &user(&format!("u{i}"))).await;
    }
    assert_eq!(s.catalog().reads.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn unknown_ids_are_read_from_the_catalog_once_per_ttl() {
    let (s, id, _) = service(10, Duration::zero()).await;
    for _ in 0..20 {
        let _ = s.issue("p1", id + 7, &user("u")).await;
    }
    assert_eq!(s.catalog().reads.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn status_moves_from_none_to_pending_to_issued() {
    let (s, id, _) = service(1, Duration::zero()).await;
    assert_eq!(s.status("p1", id, &user("a")).await.unwrap(), IssueState::None);
    s.issue("p1", id, &user("a")).await.unwrap();
    assert_eq!(s.status("p1", id, &user("a")).await.unwrap(), IssueState::Pending);
    // The writer tells the ledger: the answer comes from Redis.
    s.ledger()
        .record_outcomes(id, &[(user("a"), Outcome::Issued { coupon_id: 77 })])
        .await
        .unwrap();
    assert_eq!(
        s.status("p1", id, &user("a")).await.unwrap(),
        IssueState::Issued { coupon_id: 77 }
    );
}

#[tokio::test]
async fn status_falls_back_to_the_catalog_for_what_redis_does_not_know() {
    let (s, id, _) = service(1, Duration::zero()).await;
    s.catalog().outcomes.lock().unwrap().extend([
        ((id, user("w")), Outcome::Issued { coupon_id: 5 }),
        ((id, user("r")), Outcome::Rejected(RejectionReason::OverQuantity)),
    ]);
    assert_eq!(
        s.status("p1", id, &user("w")).await.unwrap(),
        IssueState::Issued { coupon_id: 5 }
    );
    assert_eq!(
        s.status("p1", id, &user("r")).await.unwrap(),
        IssueState::Rejected(RejectionReason::OverQuantity)
    );
    // Redis down: a written outcome is still answered; an unknown one is a 503, not a guess.
    s.ledger().failing.store(true, Ordering::SeqCst);
    assert_eq!(
        s.status("p1", id, &user("w")).await.unwrap(),
        IssueState::Issued { coupon_id: 5 }
    );
    assert!(s.status("p1", id, &user("x")).await.unwrap_err().is_transient());
}

#[tokio::test]
async fn a_campaign_whose_state_left_redis_after_it_ended_is_ended_not_unavailable() {
    let (s, id, clock) = service(1, Duration::zero()).await;
    s.ledger().forget(id);
    let err = s.issue("p1", id, &user("a")).await.unwrap_err();
    assert!(
        matches!(err, IssuanceError::Unprimed(_)),
        "still open: an operator must act"
    );
    clock.advance(Duration::hours(2));
    assert!(matches!(s.issue("p1", id, &user("a")).await, Err(IssuanceError::Ended)));
    // The partner moves the end later: the cached end is not the answer any more.
    let later = crate::issuance::change::CampaignChange {
        issue_ends_at: Some(clock.now() + Duration::hours(1)),
        ..Default::default()
    };
    s.catalog().change("p1", id, &later, clock.now()).await.unwrap();
    let reopened = s.issue("p1", id, &user("a")).await;
    assert!(
        reopened.is_ok(),
        "open again: its state is rebuilt (the grace long past) and it sells, not ENDED: {reopened:?}"
    );
}

/// A campaign whose ledger state is lost sells again, exactly: after the grace, with nothing on
/// its way, the next request rebuilds it from the catalog's holders, and holders stay holders.
#[tokio::test]
async fn a_lost_campaign_is_rebuilt_after_the_grace_once_nothing_is_on_its_way() {
    let (s, id, clock) = service(3, Duration::zero()).await;
    s.issue("p1", id, &user("a")).await.unwrap();
    s.issue("p1", id, &user("b")).await.unwrap();
    // The writer recorded both; then Redis loses everything.
    for (i, u) in ["a", "b"].iter().enumerate() {
        let outcome = Outcome::Issued {
            coupon_id: 100 + i as u64,
        };
        s.catalog().outcomes.lock().unwrap().insert((id, user(u)), outcome);
    }
    s.ledger().forget(id);
    s.queue().in_flight.store(2, Ordering::SeqCst);

    let lost = s.issue("p1", id, &user("c")).await.unwrap_err();
    assert!(matches!(lost, IssuanceError::Unprimed(c) if c == id) && lost.is_transient());
    clock.advance(Duration::seconds(11));
    assert!(
        matches!(s.issue("p1", id, &user("c")).await, Err(IssuanceError::Unprimed(_))),
        "reservations on their way: not rebuilt yet"
    );
    s.queue().in_flight.store(0, Ordering::SeqCst);
    assert_eq!(
        s.issue("p1", id, &user("c")).await.unwrap().rank,
        3,
        "rebuilt, then sold"
    );
    assert!(matches!(
        s.issue("p1", id, &user("a")).await,
        Err(IssuanceError::AlreadyIssued { .. })
    ));
    assert!(matches!(
        s.issue("p1", id, &user("d")).await,
        Err(IssuanceError::SoldOut)
    ));
    assert_eq!(s.ledger().reserved_count(id).await.unwrap(), 3);
}

#[tokio::test]
async fn another_partner_cannot_trigger_a_rebuild() {
    let (s, id, clock) = service(3, Duration::zero()).await;
    s.ledger().forget(id);
    let _ = s.issue("p1", id, &user("a")).await;
    clock.advance(Duration::seconds(11));
    assert!(matches!(
        s.issue("p2", id, &user("a")).await,
        Err(IssuanceError::CampaignNotFound)
    ));
    assert_eq!(
        s.ledger().rules(id).await.unwrap(),
        None,
        "nothing rebuilt for a stranger"
    );
}
