//! `after_attempt`: doubling from `first` capped at `max`, up to a quarter of jitter on top, a
//! pause exactly when the failures have lasted `give_up`, and a success that never moves back.

use chrono::Duration as Span;

use super::t0;
use crate::events::domain::{AfterAttempt, Delivery, DeliveryFailure, RetryPolicy, after_attempt};

fn fresh() -> Delivery {
    Delivery {
        delivered_through: 5,
        failing_since: None,
        attempts: 0,
        next_attempt_at: t0(),
        paused_at: None,
        last_error: None,
    }
}

fn retry_later(after: AfterAttempt) -> Delivery {
    match after {
        AfterAttempt::RetryLater(d) => d,
        other => panic!("expected RetryLater, got {other:?}"),
    }
}

const FAILED: DeliveryFailure = DeliveryFailure::Status(503);

#[test]
fn waits_double_from_first_up_to_max() {
    let policy = RetryPolicy::default();
    let mut state = fresh();
    let mut waits = Vec::new();
    for _ in 0..13 {
        state = retry_later(after_attempt(&state, Err(&FAILED), t0(), policy, 0.0));
        waits.push((state.next_attempt_at - t0()).num_seconds());
    }
    assert_eq!(waits, vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600, 600]);
    assert_eq!(state.attempts, 13);
    assert_eq!(state.failing_since, Some(t0()));
    assert_eq!(state.delivered_through, 5);
    assert_eq!(state.last_error.as_deref(), Some("the endpoint answered 503"));
}

#[test]
fn a_huge_attempt_count_neither_overflows_nor_passes_max() {
    let policy = RetryPolicy::default();
    for attempts in [20, 21, 31, 32, 64, u32::MAX - 1, u32::MAX] {
        let before = Delivery {
            attempts,
            failing_since: Some(t0()),
            ..fresh()
        };
        let after = retry_later(after_attempt(&before, Err(&FAILED), t0(), policy, 0.0));
        assert_eq!(after.next_attempt_at - t0(), policy.max, "attempts {attempts}");
        assert_eq!(after.attempts, attempts.saturating_add(1));
    }
}

#[test]
fn jitter_adds_at_most_a_quarter() {
    let policy = RetryPolicy::default();
    let first =
        |jitter| retry_later(after_attempt(&fresh(), Err(&FAILED), t0(), policy, jitter)).next_attempt_at - t0();
    assert_eq!(first(0.0), Span::seconds(1));
    assert_eq!(first(0.5), Span::milliseconds(1125));
    assert_eq!(first(0.999_999), Span::milliseconds(1249));
    // At the cap too: max plus at most a quarter of it.
    let capped = Delivery {
        attempts: 30,
        failing_since: Some(t0()),
        ..fresh()
    };
    let wait = retry_later(after_attempt(&capped, Err(&FAILED), t0(), policy, 0.999_999)).next_attempt_at - t0();
    assert!(wait > policy.max && wait < policy.max + policy.max / 4, "{wait}");
}

#[test]
fn failures_pause_exactly_when_they_have_lasted_give_up() {
    let policy = RetryPolicy::default();
    let failing = Delivery {
        attempts: 40,
        failing_since: Some(t0()),
        ..fresh()
    };
    let just_before = t0() + policy.give_up - Span::milliseconds(1);
    let d = retry_later(after_attempt(
        &failing,
        Err(&DeliveryFailure::Timeout),
        just_before,
        policy,
        0.0,
    ));
    assert_eq!(d.paused_at, None);
    let at = t0() + policy.give_up;
    match after_attempt(&failing, Err(&DeliveryFailure::Timeout), at, policy, 0.0) {
        AfterAttempt::Paused(d) => {
            assert_eq!(d.paused_at, Some(at));
            assert_eq!(d.failing_since, Some(t0()));
            assert_eq!(d.attempts, 41);
            assert_eq!(d.delivered_through, 5);
            assert_eq!(d.last_error.as_deref(), Some("no answer within the deadline"));
        }
        other => panic!("expected Paused, got {other:?}"),
    }
    // The first failure starts the period, whatever came before.
    let d = retry_later(after_attempt(&fresh(), Err(&FAILED), at, policy, 0.0));
    assert_eq!(d.failing_since, Some(at));
}

#[test]
fn a_success_clears_the_failures_and_never_moves_the_position_back() {
    let policy = RetryPolicy::default();
    let failing = Delivery {
        attempts: 3,
        failing_since: Some(t0()),
        last_error: Some("x".into()),
        ..fresh()
    };
    let now = t0() + Span::minutes(1);
    for (through, expected) in [(9, 9), (2, 5)] {
        match after_attempt(&failing, Ok(through), now, policy, 0.7) {
            AfterAttempt::Delivered(d) => assert_eq!(
                d,
                Delivery {
                    delivered_through: expected,
                    failing_since: None,
                    attempts: 0,
                    next_attempt_at: now,
                    paused_at: None,
                    last_error: None,
                }
            ),
            other => panic!("expected Delivered, got {other:?}"),
        }
    }
}
