//! The events' rules: the types, the envelope a partner receives, what an event of each effect
//! carries, and how a failing endpoint's deliveries back off and pause.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Every type of event a partner can receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "coupon.issued")]
    CouponIssued,
    #[serde(rename = "coupon.rejected")]
    CouponRejected,
    #[serde(rename = "coupon.used")]
    CouponUsed,
    #[serde(rename = "coupon.use_cancelled")]
    CouponUseCancelled,
    #[serde(rename = "coupon.expired")]
    CouponExpired,
    #[serde(rename = "points.earned")]
    PointsEarned,
    #[serde(rename = "points.used")]
    PointsUsed,
    #[serde(rename = "points.use_cancelled")]
    PointsUseCancelled,
    #[serde(rename = "points.expired")]
    PointsExpired,
    #[serde(rename = "points.transferred")]
    PointsTransferred,
    #[serde(rename = "grading.run_completed")]
    GradingRunCompleted,
}

impl EventType {
    pub const ALL: [Self; 11] = [
        Self::CouponIssued,
        Self::CouponRejected,
        Self::CouponUsed,
        Self::CouponUseCancelled,
        Self::CouponExpired,
        Self::PointsEarned,
        Self::PointsUsed,
        Self::PointsUseCancelled,
        Self::PointsExpired,
        Self::PointsTransferred,
        Self::GradingRunCompleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::CouponIssued => "coupon.issued",
            Self::CouponRejected => "coupon.rejected",
            Self::CouponUsed => "coupon.used",
            Self::CouponUseCancelled => "coupon.use_cancelled",
            Self::CouponExpired => "coupon.expired",
            Self::PointsEarned => "points.earned",
            Self::PointsUsed => "points.used",
            Self::PointsUseCancelled => "points.use_cancelled",
            Self::PointsExpired => "points.expired",
            Self::PointsTransferred => "points.transferred",
            Self::GradingRunCompleted => "grading.run_completed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == raw)
    }
}

/// An event as an effect's transaction records it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub partner_id: String,
    pub kind: EventType,
    /// What the event is about (a coupon id, a user): kept for operators' queries.
    pub subject: String,
    /// For an event that happens once per subject (an issue, a rejection): a repeat of the
    /// effect (a redelivered message) records no second event.
    pub once_key: Option<String>,
    pub occurred_at: DateTime<Utc>,
    pub data: Value,
}

/// An event as a partner receives it (webhook, pull, EventBridge's `Detail`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Unique: the consumer's key to drop a duplicate delivery.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub partner_id: String,
    pub occurred_at: String,
    /// Increasing per partner in commit order (with gaps): the pull API's `after`.
    pub sequence: u64,
    pub data: Value,
}

impl Event {
    /// The envelope of the outbox row `row_id`, sequenced `sequence`.
    pub fn from_record(
        row_id: u64,
        sequence: u64,
        kind: EventType,
        partner_id: String,
        occurred_at: DateTime<Utc>,
        data: Value,
    ) -> Self {
        Self {
            id: format!("evt_{row_id}"),
            kind,
            partner_id,
            occurred_at: instant(occurred_at),
            sequence,
            data,
        }
    }
}

/// Instants in events: RFC 3339, UTC, milliseconds.
pub fn instant(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A partner's webhook registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub partner_id: String,
    pub url: String,
    /// The types delivered; the others are passed over (the pull API still has them).
    pub events: Vec<EventType>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Where a partner's deliveries stand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Every event up to this sequence was delivered (or passed over).
    pub delivered_through: u64,
    /// The first failure of the current run of failures.
    pub failing_since: Option<DateTime<Utc>>,
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    pub paused_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// Why one POST did not deliver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryFailure {
    #[error("the endpoint answered {0}")]
    Status(u16),
    #[error("no answer within the deadline")]
    Timeout,
    /// The URL's host resolves to an address deliveries may not reach.
    #[error("refused address: {0}")]
    Refused(String),
    #[error("could not connect: {0}")]
    Connect(String),
    /// The partner's signing secret could not be opened (sealed under another key, a corrupt row,
    /// the key unreadable): nothing can be signed, so the attempt fails and backs off like any
    /// other, rather than holding a delivery slot every round.
    #[error("the signing secret could not be opened: {0}")]
    Unsigned(String),
}

/// Why a webhook URL cannot be registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlProblem {
    /// Not a URL deliveries could use anywhere (not absolute http(s), no host, a user name,
    /// too long): a bad request.
    Malformed(String),
    /// A well-formed URL this deployment refuses to deliver to (plain http, a non-public address).
    Refused(String),
}

/// How deliveries back off: doubling from `first`, capped at `max`, with up to a quarter of
/// jitter; after `give_up` of failures they pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub first: Duration,
    pub max: Duration,
    pub give_up: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            first: Duration::seconds(1),
            max: Duration::minutes(10),
            give_up: Duration::hours(24),
        }
    }
}

/// What a delivery attempt leaves behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterAttempt {
    Delivered(Delivery),
    RetryLater(Delivery),
    /// Failing for `give_up`: deliveries pause until a replay (an alert names the partner).
    Paused(Delivery),
}

/// The state after delivering through `through` (`Ok`) or failing at `now`. `jitter` in [0, 1).
pub fn after_attempt(
    before: &Delivery,
    outcome: Result<u64, &DeliveryFailure>,
    now: DateTime<Utc>,
    policy: RetryPolicy,
    jitter: f64,
) -> AfterAttempt {
    match outcome {
        Ok(through) => AfterAttempt::Delivered(Delivery {
            delivered_through: through.max(before.delivered_through),
            failing_since: None,
            attempts: 0,
            next_attempt_at: now,
            paused_at: None,
            last_error: None,
        }),
        Err(failure) => {
            let failing_since = before.failing_since.unwrap_or(now);
            let attempts = before.attempts.saturating_add(1);
            let doubled = policy
                .first
                .checked_mul(
                    1_i32
                        .checked_shl(attempts.saturating_sub(1).min(20))
                        .unwrap_or(i32::MAX),
                )
                .unwrap_or(policy.max)
                .min(policy.max);
            let jittered = doubled + Duration::milliseconds((doubled.num_milliseconds() as f64 * 0.25 * jitter) as i64);
            let state = Delivery {
                delivered_through: before.delivered_through,
                failing_since: Some(failing_since),
                attempts,
                next_attempt_at: now + jittered,
                paused_at: None,
                last_error: Some(failure.to_string()),
            };
            if now - failing_since >= policy.give_up {
                AfterAttempt::Paused(Delivery {
                    paused_at: Some(now),
                    ..state
                })
            } else {
                AfterAttempt::RetryLater(state)
            }
        }
    }
}

/// The most events one delivery carries.
pub const MAX_EVENTS_PER_DELIVERY: usize = 100;

/// The body of one delivery: `{"events": [...]}`, in sequence.
pub fn delivery_body(events: &[Event]) -> String {
    json!({ "events": events }).to_string()
}
