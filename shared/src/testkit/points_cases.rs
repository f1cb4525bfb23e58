//! One table of point scenarios for every backend of `PointRecords`: the unit tests run it on the
//! in-memory fake, an integration test on MySQL and the fake together, and both compare every
//! answer, the resulting lots and the history. Ids differ between backends, so a transcript names
//! entries and lots by their order of first appearance (`#1`, `L1`).

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::ManualClock;
use crate::kernel::UserId;
use crate::points::domain::{EarnPoints, HistoryQuery, IdempotencyKey, Receipt, TransferPoints, UsePoints};
use crate::points::ports::PointRecords;
use crate::points::{PointsError, PointsService};

/// One step of a scenario. Users are short names; the runner prefixes them per run.
#[derive(Debug, Clone, Copy)]
pub enum Step {
    Earn {
        user: &'static str,
        amount: u64,
        /// Days ahead; the partner's default validity (30 days here) when `None`.
        expires_in_days: Option<i64>,
    },
    Use {
        user: &'static str,
        amount: u64,
    },
    /// Cancels what step `step` made (its receipt's transaction).
    Cancel {
        step: usize,
    },
    /// Cancels a transaction of the same wallet's partner that another partner asks for.
    CancelAsStranger {
        step: usize,
    },
    Transfer {
        from: &'static str,
        to: &'static str,
        amount: u64,
    },
    /// Sends step `step` again with its idempotency key.
    Retry {
        step: usize,
    },
    /// Sends another request with step `step`'s idempotency key.
    ReuseKey {
        step: usize,
        user: &'static str,
    },
    Advance {
        days: i64,
    },
    /// Expires what is due, as the scheduled sweep does.
    Sweep,
}

/// What a step must answer: a balance after it (a transfer's sender's), or an error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Balance(u64),
    Error(&'static str),
    /// Steps that answer nothing (advance, sweep).
    Nothing,
}

pub struct Case {
    pub name: &'static str,
    pub users: &'static [&'static str],
    pub steps: &'static [(Step, Expect)],
}

use Expect::{Balance, Error, Nothing};
use Step::{Advance, Cancel, CancelAsStranger, Earn, Retry, ReuseKey, Sweep, Transfer, Use};

/// The scenarios: each rule of the ledger, its refusals, and idempotency.
pub const CASES: &[Case] = &[
    Case {
        name: "earn, use, refuse, cancel, cancel again, retries",
        users: &["a"],
        steps: &[
            (
                Earn {
                    user: "a",
                    amount: 10,
                    expires_in_days: None,
                },
                Balance(10),
            ),
            (Use { user: "a", amount: 4 }, Balance(6)),
            (Use { user: "a", amount: 7 }, Error("INSUFFICIENT_POINTS")),
            (Retry { step: 2 }, Error("INSUFFICIENT_POINTS")),
            (Cancel { step: 1 }, Balance(10)),
            (Cancel { step: 1 }, Error("NOT_CANCELLABLE")),
            (Cancel { step: 0 }, Error("NOT_CANCELLABLE")),
            (CancelAsStranger { step: 1 }, Error("TRANSACTION_NOT_FOUND")),
            (Retry { step: 1 }, Balance(6)),
            (ReuseKey { step: 1, user: "a" }, Error("IDEMPOTENCY_KEY_REUSED")),
            (Use { user: "a", amount: 10 }, Balance(0)),
        ],
    },
    Case {
        name: "first-expiring-first, and a cancel after a lot's time puts back only the live part",
        users: &["a"],
        steps: &[
            (
                Earn {
                    user: "a",
                    amount: 5,
                    expires_in_days: Some(10),
                },
                Balance(5),
            ),
            (
                Earn {
                    user: "a",
                    amount: 5,
                    expires_in_days: Some(3),
                },
                Balance(10),
            ),
            (
                Earn {
                    user: "a",
                    amount: 5,
                    expires_in_days: Some(20),
                },
                Balance(15),
            ),
            (Use { user: "a", amount: 8 }, Balance(7)),
            (Advance { days: 4 }, Nothing),
            (Cancel { step: 3 }, Balance(10)),
            (Use { user: "a", amount: 11 }, Error("INSUFFICIENT_POINTS")),
            (Use { user: "a", amount: 10 }, Balance(0)),
        ],
    },
    Case {
        name: "a write expires due lots first; the sweep expires the rest",
        users: &["a", "b"],
        steps: &[
            (
                Earn {
                    user: "a",
                    amount: 3,
                    expires_in_days: Some(1),
                },
                Balance(3),
            ),
            (
                Earn {
                    user: "a",
                    amount: 4,
                    expires_in_days: Some(2),
                },
                Balance(7),
            ),
            (
                Earn {
                    user: "b",
                    amount: 6,
                    expires_in_days: Some(1),
                },
                Balance(6),
            ),
            (Advance { days: 1 }, Nothing),
            (Use { user: "a", amount: 1 }, Balance(3)),
            (Advance { days: 5 }, Nothing),
            (Sweep, Nothing),
            (
                Earn {
                    user: "b",
                    amount: 2,
                    expires_in_days: None,
                },
                Balance(2),
            ),
        ],
    },
    Case {
        name: "transfers keep the sender's dates and join the receiver's lot of that date",
        users: &["a", "b"],
        steps: &[
            (
                Earn {
                    user: "a",
                    amount: 10,
                    expires_in_days: Some(5),
                },
                Balance(10),
            ),
            (
                Earn {
                    user: "a",
                    amount: 10,
                    expires_in_days: Some(9),
                },
                Balance(20),
            ),
            (
                Earn {
                    user: "b",
                    amount: 1,
                    expires_in_days: Some(5),
                },
                Balance(1),
            ),
            (
                Transfer {
                    from: "a",
                    to: "b",
                    amount: 15,
                },
                Balance(5),
            ),
            (
                Transfer {
                    from: "b",
                    to: "a",
                    amount: 12,
                },
                Balance(4),
            ),
            (Retry { step: 4 }, Balance(4)),
            (
                Transfer {
                    from: "b",
                    to: "a",
                    amount: 5,
                },
                Error("INSUFFICIENT_POINTS"),
            ),
            (Advance { days: 6 }, Nothing),
            (
                Transfer {
                    from: "a",
                    to: "b",
                    amount: 6,
                },
                Balance(0),
            ),
            (Cancel { step: 3 }, Error("NOT_CANCELLABLE")),
        ],
    },
    Case {
        name: "a user without a wallet",
        users: &["a", "b"],
        steps: &[
            (Use { user: "a", amount: 1 }, Error("INSUFFICIENT_POINTS")),
            (
                Transfer {
                    from: "a",
                    to: "b",
                    amount: 1,
                },
                Error("INSUFFICIENT_POINTS"),
            ),
            (
                Earn {
                    user: "b",
                    amount: 1,
                    expires_in_days: None,
                },
                Balance(1),
            ),
        ],
    },
];

/// What a backend made of a case: every answer, then each user's lots and history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transcript {
    pub answers: Vec<String>,
    /// Per user: lots as `L<n> remaining@expiry`, entries as `#<n> KIND amount balance ...`.
    pub wallets: Vec<(String, Vec<String>, Vec<String>)>,
}

/// Names ids by their order of first appearance.
#[derive(Default)]
struct Names(HashMap<(char, u64), usize>);

impl Names {
    fn of(&mut self, kind: char, id: u64) -> String {
        let next = self.0.len() + 1;
        let n = *self.0.entry((kind, id)).or_insert(next);
        format!("{kind}{n}")
    }
}

fn code(e: &PointsError) -> &'static str {
    match e {
        PointsError::Invalid(_) => "INVALID",
        PointsError::InsufficientPoints => "INSUFFICIENT_POINTS",
        PointsError::NotCancellable => "NOT_CANCELLABLE",
        PointsError::TransactionNotFound => "TRANSACTION_NOT_FOUND",
        PointsError::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
        PointsError::InProgress => "IN_PROGRESS",
        PointsError::LimitExceeded(_) => "LIMIT_EXCEEDED",
        PointsError::Unavailable(_) => "UNAVAILABLE",
    }
}

/// Runs `case` for `partner` (its users prefixed with `run`, so runs never share a wallet) on
/// `records`, the clock starting at `start`; panics, naming the step, where an answer is not the
/// expected one.
pub async fn run_case<R: PointRecords>(
    records: R,
    case: &Case,
    partner: &str,
    run: &str,
    start: DateTime<Utc>,
) -> Transcript {
    let clock = Arc::new(ManualClock::at(start));
    let points = PointsService::new(records)
        .with_clock(clock.clone())
        .with_default_validity_days(30);
    let stranger = format!("{partner}-stranger");
    let user = |name: &str| UserId::parse(&format!("{run}-{name}")).expect("a valid user id");
    let key = |i: usize| IdempotencyKey::parse(Some(&format!("{run}-{i}"))).expect("a valid key");
    let mut receipts: Vec<Option<Receipt>> = Vec::new();
    let mut names = Names::default();
    let mut answers = Vec::new();
    for (i, (step, expect)) in case.steps.iter().enumerate() {
        let (step, i_key) = match *step {
            Retry { step } => (case.steps[step].0, step),
            other => (other, i),
        };
        let answer: Option<Result<Receipt, PointsError>> = match step {
            Earn {
                user: who,
                amount,
                expires_in_days,
            } => {
                let request = EarnPoints {
                    amount,
                    reason: format!("step {i_key}"),
                    expires_at: expires_in_days.map(|d| points.now() + chrono::Duration::days(d)),
                };
                Some(points.earn(partner, user(who), &key(i_key), request).await)
            }
            Use { user: who, amount } => {
                let request = UsePoints {
                    amount,
                    order_id: format!("order-{i_key}").try_into().expect("a valid order id"),
                    reason: None,
                };
                Some(points.use_points(partner, user(who), &key(i_key), request).await)
            }
            ReuseKey { step, user: who } => {
                let request = UsePoints {
                    amount: 1,
                    order_id: "another".to_owned().try_into().expect("a valid order id"),
                    reason: None,
                };
                Some(points.use_points(partner, user(who), &key(step), request).await)
            }
            Cancel { step } | CancelAsStranger { step } => {
                let made = receipts[step].as_ref().expect("the step cancelled made a transaction");
                let asking = if matches!(step_at(case, i), CancelAsStranger { .. }) {
                    stranger.as_str()
                } else {
                    partner
                };
                Some(points.cancel(asking, made.transaction_id, &key(i)).await)
            }
            Transfer { from, to, amount } => {
                let request = TransferPoints {
                    from_user_id: user(from),
                    to_user_id: user(to),
                    amount,
                };
                Some(points.transfer(partner, &key(i_key), request).await)
            }
            Advance { days } => {
                clock.advance(chrono::Duration::days(days));
                None
            }
            Sweep => {
                // The count is not compared: on a shared database the sweep also meets others' lots.
                points
                    .sweep_expired(1_000, std::time::Duration::from_secs(30))
                    .await
                    .expect("the sweep runs");
                None
            }
            Retry { .. } => unreachable!("a retry names the step it repeats"),
        };
        let got = match &answer {
            None => Nothing,
            Some(Ok(r)) => Balance(r.balance),
            Some(Err(e)) => Error(code(e)),
        };
        assert_eq!(got, *expect, "{}: step {i} ({:?})", case.name, case.steps[i].0);
        answers.push(match &answer {
            None => "-".to_owned(),
            Some(Ok(r)) => format!(
                "{} balance {} to {:?} {:?}",
                names.of('#', r.transaction_id),
                r.balance,
                r.to_transaction_id.map(|t| names.of('#', t)),
                r.to_balance
            ),
            Some(Err(e)) => code(e).to_owned(),
        });
        receipts.push(answer.and_then(Result::ok));
    }
    let mut wallets = Vec::new();
    for name in case.users {
        let who = user(name);
        let lots = points.records().lots(partner, &who).await.expect("lots read");
        let lots: Vec<String> = lots
            .iter()
            .map(|l| {
                format!(
                    "{} {}@{}",
                    names.of('L', l.id),
                    l.remaining,
                    l.expires_at.timestamp_millis()
                )
            })
            .collect();
        let query = HistoryQuery {
            limit: 100,
            before: None,
        };
        let history = points
            .records()
            .history(partner, &who, &query)
            .await
            .expect("history read");
        let history: Vec<String> = history
            .iter()
            .rev()
            .map(|e| {
                format!(
                    "{} {:?} {} {} {:?} {:?} {:?} {:?}",
                    names.of('#', e.transaction_id),
                    e.movement,
                    e.amount,
                    e.balance_after,
                    e.reason,
                    e.order_id,
                    e.related_transaction_id.map(|t| names.of('#', t)),
                    e.cancelled_by.map(|t| names.of('#', t)),
                )
            })
            .collect();
        let balance = points.balance(partner, &who).await.expect("balance read");
        let mut shown = lots;
        shown.push(format!("balance {} expiring {:?}", balance.balance, balance.expiring));
        wallets.push(((*name).to_owned(), shown, history));
    }
    Transcript { answers, wallets }
}

fn step_at(case: &Case, i: usize) -> Step {
    case.steps[i].0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::MemoryPoints;

    #[tokio::test]
    async fn every_case_answers_as_expected_on_the_fake() {
        let start = DateTime::from_timestamp_millis(1_800_000_000_000).unwrap();
        for case in CASES {
            let transcript = run_case(MemoryPoints::default(), case, "p", "r", start).await;
            assert_eq!(transcript.answers.len(), case.steps.len());
        }
    }
}
