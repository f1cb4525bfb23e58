//! The rejection memory, through the issue use case on the in-memory fakes: a "failing" ledger
//! proves an answer came without Redis.

use std::sync::atomic::Ordering;

use chrono::Duration;

use super::super::tests::{Service, service, user};
use crate::issuance::IssueState;
use crate::issuance::domain::Place;
use crate::issuance::error::IssuanceError;
use crate::issuance::ports::IssueLedger;

const BOUND: Duration = Duration::milliseconds(1000);

fn redis_down(s: &Service, down: bool) {
    s.ledger().failing.store(down, Ordering::SeqCst);
}

#[tokio::test]
async fn sold_out_is_repeated_without_redis_for_at_most_its_bound() {
    let (s, id, clock) = service(1, Duration::zero()).await;
    s.issue("p1", id, &user("a")).await.unwrap();
    assert!(matches!(
        s.issue("p1", id, &user("b")).await,
        Err(IssuanceError::SoldOut)
    ));
    redis_down(&s, true);
    assert!(
        matches!(s.issue("p1", id, &user("c")).await, Err(IssuanceError::SoldOut)),
        "from memory"
    );
    clock.advance(BOUND - Duration::milliseconds(1));
    assert!(
        matches!(s.issue("p1", id, &user("c")).await, Err(IssuanceError::SoldOut)),
        "still within the bound"
    );
    clock.advance(Duration::milliseconds(1));
    assert!(
        matches!(s.issue("p1", id, &user("c")).await, Err(IssuanceError::Unavailable(_))),
        "past the bound Redis is asked again"
    );
}

#[tokio::test]
async fn a_place_given_back_is_offered_again_after_the_bound() {
    let (s, id, clock) = service(1, Duration::zero()).await;
    let first = s.issue("p1", id, &user("a")).await.unwrap();
    assert!(matches!(
        s.issue("p1", id, &user("b")).await,
        Err(IssuanceError::SoldOut)
    ));
    // A compensation gives the place back (its message was certainly not sent).
    assert!(s.ledger().release(id, &user("a"), first.request_id).await.unwrap());
    assert!(matches!(
        s.issue("p1", id, &user("b")).await,
        Err(IssuanceError::SoldOut)
    ));
    clock.advance(BOUND);
    assert_eq!(s.issue("p1", id, &user("b")).await.unwrap().rank, 1);
}

#[tokio::test]
async fn not_open_is_never_repeated_past_the_start() {
    let opens_in = Duration::milliseconds(300);
    let (s, id, clock) = service(1, opens_in).await;
    assert!(matches!(
        s.issue("p1", id, &user("a")).await,
        Err(IssuanceError::NotOpen)
    ));
    redis_down(&s, true);
    assert!(
        matches!(s.issue("p1", id, &user("a")).await, Err(IssuanceError::NotOpen)),
        "from memory"
    );
    redis_down(&s, false);
    clock.advance(opens_in);
    assert_eq!(
        s.issue("p1", id, &user("a")).await.unwrap().rank,
        1,
        "open at its first instant, though the bound has not passed"
    );
}

#[tokio::test]
async fn ended_is_repeated_then_asked_again() {
    let (s, id, clock) = service(1, Duration::zero()).await;
    clock.advance(Duration::hours(2));
    assert!(matches!(s.issue("p1", id, &user("a")).await, Err(IssuanceError::Ended)));
    redis_down(&s, true);
    assert!(
        matches!(s.issue("p1", id, &user("a")).await, Err(IssuanceError::Ended)),
        "from memory"
    );
    clock.advance(BOUND);
    assert!(matches!(
        s.issue("p1", id, &user("a")).await,
        Err(IssuanceError::Unavailable(_))
    ));
}

#[tokio::test]
async fn another_partner_is_never_answered_from_memory() {
    let (s, id, _) = service(1, Duration::zero()).await;
    s.issue("p1", id, &user("a")).await.unwrap();
    assert!(matches!(
        s.issue("p1", id, &user("b")).await,
        Err(IssuanceError::SoldOut)
    ));
    assert!(matches!(
        s.issue("p2", id, &user("b")).await,
        Err(IssuanceError::CampaignNotFound)
    ));
}

/// The memory's documented cost, and the setting that removes it.
#[tokio::test]
async fn a_holder_retrying_within_the_bound_hears_sold_out_unless_the_memory_is_off() {
    for (bound, holder_gets_first_answer) in [
        (std::time::Duration::from_secs(1), false),
        (std::time::Duration::ZERO, true),
    ] {
        let (s, id, _) = service(1, Duration::zero()).await;
        let s = s.with_rejection_memory(bound);
        let first = s.issue("p1", id, &user("a")).await.unwrap();
        assert!(matches!(
            s.issue("p1", id, &user("b")).await,
            Err(IssuanceError::SoldOut)
        ));
        match s.issue("p1", id, &user("a")).await {
            Err(IssuanceError::AlreadyIssued { place, state }) => {
                assert!(holder_gets_first_answer, "bound {bound:?}");
                assert_eq!(place, Place::of(first.request_id, 1));
                assert_eq!(state, Some(IssueState::Pending));
            }
            Err(IssuanceError::SoldOut) => assert!(!holder_gets_first_answer, "bound {bound:?}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            s.status("p1", id, &user("a")).await.unwrap(),
            IssueState::Pending,
            "the status route stays exact"
        );
    }
}

#[test]
fn the_bound_is_at_most_one_second() {
    let memory = super::RejectionMemory::new(std::time::Duration::from_secs(5));
    assert_eq!(memory.bound, super::MAX_REJECTION_MEMORY);
}
