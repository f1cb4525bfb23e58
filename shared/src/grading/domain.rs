//! The grading rules, pure: months, orders, the user partition, tiers and runs.

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::kernel::{InvalidField, UserId};

/// Buckets a user id hashes into; a run's partitions are ranges of them, so any partition count
/// up to this works and a partition is an index range (`orders.user_bucket`).
pub const BUCKETS: u32 = 1024;
pub const DEFAULT_PARTITIONS: u32 = 64;
pub const MAX_ORDERS_PER_CALL: usize = 1000;
pub const MAX_TIERS: usize = 20;

/// The bucket of a user: FNV-1a of the id's bytes, modulo [`BUCKETS`]. Stable across processes,
/// machines and versions (it is stored with every order), unlike std's hasher.
pub fn user_bucket(user: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in user.as_bytes() {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % BUCKETS
}

/// The buckets `[first, last]` of partition `index` of `count`.
pub fn partition_buckets(index: u32, count: u32) -> (u32, u32) {
    let first = index * BUCKETS / count;
    let next = (index + 1) * BUCKETS / count;
    (first, next - 1)
}

/// A calendar month, `2026-10` on the wire, `202610` in the database. Valid by construction: the
/// fields are private, and every constructor checks or derives them from a real date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    year: i32,
    month: u32,
}

impl Month {
    pub fn parse(text: &str) -> Result<Self, InvalidField> {
        let bad = || InvalidField::new("month", "expected YYYY-MM (e.g. 2026-10)");
        let (y, m) = text.split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 {
            return Err(bad());
        }
        let year: i32 = crate::kernel::digits(y).ok_or_else(bad)?;
        let month: u32 = crate::kernel::digits(m).ok_or_else(bad)?;
        if !(2000..=9998).contains(&year) || !(1..=12).contains(&month) {
            return Err(bad());
        }
        Ok(Self { year, month })
    }

    pub fn of(at: DateTime<Utc>) -> Self {
        Self {
            year: at.year(),
            month: at.month(),
        }
    }

    /// The database's `YYYYMM`; `None` for a number that is no month (a corrupt row).
    pub fn from_number(n: i32) -> Option<Self> {
        let month = u32::try_from(n % 100).ok().filter(|m| (1..=12).contains(m))?;
        let year = n / 100;
        (0..=9999).contains(&year).then_some(Self { year, month })
    }

    pub fn number(self) -> i32 {
        self.year * 100 + self.month as i32
    }

    pub fn previous(self) -> Self {
        if self.month == 1 {
            Self {
                year: self.year - 1,
                month: 12,
            }
        } else {
            Self {
                year: self.year,
                month: self.month - 1,
            }
        }
    }

    pub fn next(self) -> Self {
        if self.month == 12 {
            Self {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Self {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    /// The first instant of the month (UTC).
    pub fn start(self) -> DateTime<Utc> {
        // Every month is valid; only the month after chrono's last year has no date, and it
        // starts after every instant.
        NaiveDate::from_ymd_opt(self.year, self.month, 1).map_or(DateTime::<Utc>::MAX_UTC, |day| {
            Utc.from_utc_datetime(&day.and_time(NaiveTime::MIN))
        })
    }

    /// Whether the month is over at `now` (UTC): only then are its orders all in, and a grading
    /// run of it final.
    pub fn has_ended(self, now: DateTime<Utc>) -> bool {
        self.next().start() <= now
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl Serialize for Month {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum OrderStatus {
    Paid,
    Cancelled,
    Refunded,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Paid => "PAID",
            Self::Cancelled => "CANCELLED",
            Self::Refunded => "REFUNDED",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Paid, Self::Cancelled, Self::Refunded]
            .into_iter()
            .find(|s| s.as_str() == text)
    }

    /// A paid order may be cancelled or refunded; neither is ever undone.
    fn may_become(self, next: Self) -> bool {
        self == Self::Paid && next != Self::Paid
    }
}

/// An order as a partner sends it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderInput {
    pub order_id: String,
    pub user_id: String,
    #[serde(deserialize_with = "crate::kernel::whole_number")]
    pub amount: u64,
    pub status: OrderStatus,
    #[serde(deserialize_with = "order_time")]
    pub ordered_at: DateTime<Utc>,
    /// When the order took this status (a refund's time); `orderedAt` if absent.
    #[serde(default, deserialize_with = "optional_order_time")]
    pub status_changed_at: Option<DateTime<Utc>>,
}

fn optional_order_time<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    order_time(deserializer).map(Some)
}

/// An RFC 3339 date-time (`T` between date and time) written in a year from 2000 to 9998: the
/// contract's pattern, checked on the text (its UTC instant may fall a day outside those years).
fn order_time<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
    use serde::de::{Error, Unexpected};
    let text = String::deserialize(deserializer)?;
    let expected = &"an RFC 3339 date-time such as 2026-10-05T10:00:00Z, in a year from 2000 to 9998";
    let year = text.get(..4).and_then(|y| y.parse::<u32>().ok());
    if !matches!(text.as_bytes().get(10), Some(b'T' | b't')) || !year.is_some_and(|y| (2000..=9998).contains(&y)) {
        return Err(D::Error::invalid_value(Unexpected::Str(&text), expected));
    }
    DateTime::parse_from_rfc3339(&text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|_| D::Error::invalid_value(Unexpected::Str(&text), expected))
}

/// The most an order may be worth.
pub const MAX_ORDER_AMOUNT: u64 = crate::kernel::MAX_MONEY_AMOUNT;

/// A valid order of a partner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub order_id: String,
    pub user_id: UserId,
    pub amount: u64,
    pub status: OrderStatus,
    /// Milliseconds, as MySQL keeps them, so a resent order compares equal.
    pub ordered_at: DateTime<Utc>,
    /// When it took `status` (milliseconds; never before `ordered_at`).
    pub status_changed_at: DateTime<Utc>,
}

/// What an order sent under an id does to the one recorded under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderChange {
    /// Nothing is recorded under the id: record it.
    New,
    /// The same order and status, or the same status sent again later: nothing changes.
    Unchanged,
    /// A later status change the order may take (PAID → CANCELLED or REFUNDED): record it.
    Apply,
    /// A status older than the recorded one (a retry or a reordered delivery): the newer stays.
    Stale,
    /// Another user, amount or order time, a change no order may take (out of CANCELLED or
    /// REFUNDED), or two statuses at the same instant: refused.
    Conflict,
}

impl Order {
    /// How `self`, sent now, relates to what is recorded under its id.
    pub fn change_from(&self, recorded: Option<&Order>) -> OrderChange {
        let Some(recorded) = recorded else {
            return OrderChange::New;
        };
        let same_facts = self.user_id == recorded.user_id
            && self.amount == recorded.amount
            && self.ordered_at == recorded.ordered_at;
        if !same_facts {
            return OrderChange::Conflict;
        }
        use std::cmp::Ordering::{Equal, Greater, Less};
        match (
            self.status_changed_at.cmp(&recorded.status_changed_at),
            self.status == recorded.status,
        ) {
            (Equal, true) => OrderChange::Unchanged,
            (Equal, false) => OrderChange::Conflict,
            (Less, _) if self.status.may_become(recorded.status) || self.status == recorded.status => {
                OrderChange::Stale
            }
            (Less, _) => OrderChange::Conflict,
            (Greater, true) => OrderChange::Unchanged,
            (Greater, false) if recorded.status.may_become(self.status) => OrderChange::Apply,
            (Greater, false) => OrderChange::Conflict,
        }
    }
}

impl Order {
    pub fn bucket(&self) -> u32 {
        user_bucket(self.user_id.as_str())
    }

    pub fn month(&self) -> Month {
        Month::of(self.ordered_at)
    }
}

/// Why one order of a call is refused: its index in the call and the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidOrder {
    pub index: usize,
    pub field: &'static str,
    pub reason: String,
}

impl OrderInput {
    pub fn validate(self, index: usize) -> Result<Order, InvalidOrder> {
        let bad = |field: &'static str, reason: &str| InvalidOrder {
            index,
            field,
            reason: reason.to_owned(),
        };
        let id_ok = !self.order_id.is_empty()
            && self.order_id.len() <= 64
            && self.order_id.bytes().all(|b| b.is_ascii_graphic());
        if !id_ok {
            return Err(bad("orderId", "1-64 visible ASCII characters"));
        }
        let user_id = UserId::parse(&self.user_id).map_err(|e| bad("userId", &e.reason))?;
        if self.amount > MAX_ORDER_AMOUNT {
            return Err(bad("amount", "at most 1,000,000,000,000"));
        }
        let millis = |at: DateTime<Utc>, field: &'static str| {
            DateTime::from_timestamp_millis(at.timestamp_millis()).ok_or_else(|| bad(field, "out of range"))
        };
        let ordered_at = millis(self.ordered_at, "orderedAt")?;
        let status_changed_at = millis(self.status_changed_at.unwrap_or(ordered_at), "statusChangedAt")?;
        if status_changed_at < ordered_at {
            return Err(bad("statusChangedAt", "not before orderedAt"));
        }
        Ok(Order {
            order_id: self.order_id,
            user_id,
            amount: self.amount,
            status: self.status,
            ordered_at,
            status_changed_at,
        })
    }
}

/// One grade of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tier {
    pub grade: String,
    pub min_amount: u64,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::kernel::id_text::optional"
    )]
    pub coupon_campaign_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points: Option<u64>,
}

/// A partner's tiers, highest `minAmount` first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub tiers: Vec<Tier>,
}

/// Most points one grade may grant (as one earn may).
pub const MAX_GRADE_POINTS: u64 = 1_000_000_000;

impl Policy {
    /// Checked and ordered highest tier first.
    pub fn validate(mut self) -> Result<Self, InvalidField> {
        if self.tiers.is_empty() || self.tiers.len() > MAX_TIERS {
            return Err(InvalidField::new("tiers", "1 to 20 tiers"));
        }
        let mut grades = std::collections::HashSet::new();
        let mut amounts = std::collections::HashSet::new();
        for tier in &self.tiers {
            let ok = !tier.grade.is_empty()
                && tier.grade.len() <= 32
                && tier
                    .grade
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !ok {
                return Err(InvalidField::new(
                    "tiers.grade",
                    "1-32 characters: letters, digits, _ and -",
                ));
            }
            if !grades.insert(tier.grade.clone()) {
                return Err(InvalidField::new("tiers.grade", "each grade once"));
            }
            if !amounts.insert(tier.min_amount) {
                return Err(InvalidField::new("tiers.minAmount", "each minAmount once"));
            }
            if tier.min_amount > MAX_ORDER_AMOUNT * 1000 {
                return Err(InvalidField::new("tiers.minAmount", "too large"));
            }
            if tier.coupon_campaign_id == Some(0) {
                return Err(InvalidField::new(
                    "tiers.couponCampaignId",
                    "a campaign id is at least 1",
                ));
            }
            if matches!(tier.points, Some(p) if p == 0 || p > MAX_GRADE_POINTS) {
                return Err(InvalidField::new("tiers.points", "1 to 1,000,000,000"));
            }
        }
        self.tiers.sort_by_key(|t| std::cmp::Reverse(t.min_amount));
        Ok(self)
    }

    /// The tier a paid total earns: the highest whose `minAmount` it reaches.
    pub fn tier_for(&self, paid: u64) -> Option<&Tier> {
        self.tiers.iter().find(|t| paid >= t.min_amount)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RunStatus {
    Running,
    Done,
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "RUNNING",
            Self::Done => "DONE",
            Self::Failed => "FAILED",
        }
    }

    pub fn parse(text: &str) -> Self {
        match text {
            "DONE" => Self::Done,
            "FAILED" => Self::Failed,
            _ => Self::Running,
        }
    }
}

pub type RunId = u64;

/// A run as `GET /v1/grading/runs/{runId}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    #[serde(with = "crate::kernel::id_text")]
    pub run_id: RunId,
    pub month: Month,
    pub status: RunStatus,
    pub partitions_done: u32,
    pub partitions_total: u32,
    pub users_graded: u64,
    pub rewards_granted: u64,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<u64>,
    /// Partitions not graded yet: in flight, or stuck (their message went to the grading DLQ).
    /// Asking for the run's month again sends each of them again.
    pub pending_partitions: Vec<u32>,
    #[serde(skip)]
    pub partner_id: String,
    /// Whether the partitions' messages were all sent (a run whose planner died before is
    /// dispatched again by the next request for its month).
    #[serde(skip)]
    pub dispatched: bool,
}

/// One partition's message on the grading queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionTask {
    pub run_id: RunId,
    pub partition: u32,
}

/// What grading one partition did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionSummary {
    /// The step was done already (a redelivered message).
    pub skipped: bool,
    pub users_graded: u64,
    pub rewards_granted: u64,
    pub chunks: u32,
    /// Coupons a tier's campaign had no quantity left for.
    pub coupons_refused: u64,
}

/// Users per chunk transaction: a few thousand rows written, a few milliseconds of locks.
pub const CHUNK_USERS: usize = 1000;

/// A user of a partition, graded: what they paid in the month and the tier it reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GradedUser {
    pub user: UserId,
    pub paid: u64,
    pub tier: Option<Tier>,
}

impl GradedUser {
    pub fn grade(&self) -> Option<&str> {
        self.tier.as_ref().map(|t| t.grade.as_str())
    }
}

/// Each user's paid total graded by `policy`, in the order given.
pub fn grade_users(totals: Vec<(UserId, u64)>, policy: &Policy) -> Vec<GradedUser> {
    totals
        .into_iter()
        .map(|(user, paid)| GradedUser {
            tier: policy.tier_for(paid).cloned(),
            user,
            paid,
        })
        .collect()
}

/// What a tier grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RewardKind {
    Coupon,
    Points,
}

impl RewardKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Coupon => "COUPON",
            Self::Points => "POINTS",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Coupon, Self::Points].into_iter().find(|k| k.as_str() == raw)
    }
}

/// A reward a graded user is owed and has not been given yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewardDue {
    pub user: UserId,
    pub grade: String,
    pub grant: Grant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// One coupon of the campaign.
    Coupon(u64),
    Points(u64),
}

impl Grant {
    pub fn kind(self) -> RewardKind {
        match self {
            Self::Coupon(_) => RewardKind::Coupon,
            Self::Points(_) => RewardKind::Points,
        }
    }
}

/// The rewards of `users` not in `given` (user, kind): what a chunk grants. A grant happens once
/// per user, month and kind, however often a partition is graded.
pub fn rewards_due(users: &[GradedUser], given: &std::collections::HashSet<(UserId, RewardKind)>) -> Vec<RewardDue> {
    let mut due = Vec::new();
    for user in users {
        let Some(tier) = &user.tier else { continue };
        let grants = [
            tier.coupon_campaign_id.map(Grant::Coupon),
            tier.points.map(Grant::Points),
        ];
        for grant in grants.into_iter().flatten() {
            if !given.contains(&(user.user.clone(), grant.kind())) {
                due.push(RewardDue {
                    user: user.user.clone(),
                    grade: tier.grade.clone(),
                    grant,
                });
            }
        }
    }
    due
}

/// How a reward ended: the grant's answer (`GRANTED`, or why a coupon was not: `ALREADY_HELD`,
/// `SOLD_OUT`, `NO_CAMPAIGN`, `ON_SALE`). Points are always granted.
pub type RewardOutcome = crate::issuance::domain::CouponGrant;

/// A reward as its record keeps it: what was due and how it ended; `reference` is the campaign of
/// a coupon, the EARN entry of points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewardRecord {
    pub due: RewardDue,
    pub outcome: RewardOutcome,
    pub reference: Option<u64>,
}

/// What one chunk's records add to its step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChunkCount {
    pub granted: u64,
    /// Coupons a campaign had no quantity left for.
    pub refused: u64,
}

impl ChunkCount {
    pub fn of(records: &[RewardRecord]) -> Self {
        Self {
            granted: records.iter().filter(|r| r.outcome == RewardOutcome::Granted).count() as u64,
            refused: records.iter().filter(|r| r.outcome == RewardOutcome::SoldOut).count() as u64,
        }
    }
}

/// What a partition's worker needs of its run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionWork {
    pub partner: String,
    pub month: Month,
    pub policy: Policy,
    pub partitions: u32,
    /// The partner's validity of earned points, in days.
    pub validity_days: u32,
    /// The step is done (a redelivered message).
    pub done: bool,
}

impl PartitionWork {
    /// The idempotency key of a user's points reward of this run: one EARN per (run, user).
    pub fn points_key(run: RunId, user: &UserId) -> crate::points::domain::IdempotencyKey {
        #[allow(
            clippy::expect_used,
            reason = "a user id (1-64 of A-Z a-z 0-9 _ . : -) and a u64 run id make at most 93 visible ASCII characters, within a key's 128"
        )]
        crate::points::domain::IdempotencyKey::parse(Some(&format!("grading-{run}-{}", user.as_str())))
            .expect("a run id and a user id make a valid key")
    }

    pub fn points_reason(&self, grade: &str) -> String {
        format!("grade {grade} for {}", self.month)
    }
}

/// A tier's coupons come from a `REWARD` campaign of the partner, never from one on sale: a grant
/// can then never take a place the sale promised a caller.
pub fn check_reward_campaign(
    tier: &Tier,
    partner: &str,
    campaign: Option<&crate::issuance::domain::Campaign>,
) -> Result<(), super::GradingError> {
    use crate::issuance::domain::CampaignKind;
    let campaign_id = tier.coupon_campaign_id.unwrap_or_default();
    match campaign {
        Some(c) if c.partner_id == partner && c.kind == CampaignKind::Reward => Ok(()),
        Some(c) if c.partner_id == partner => Err(super::GradingError::NotRewardCampaign {
            grade: tier.grade.clone(),
            campaign_id,
        }),
        _ => Err(super::GradingError::UnknownCampaign {
            grade: tier.grade.clone(),
            campaign_id,
        }),
    }
}

/// A user's grade for a month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserGrade {
    pub user_id: String,
    pub month: Month,
    pub grade: Option<String>,
    pub paid_amount: u64,
    /// What the grade granted, and what it could not (a coupon of a campaign with none left:
    /// `SOLD_OUT`), coupons first.
    pub rewards: Vec<GradeReward>,
}

/// A reward of a user's grade as its record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GradeReward {
    /// `COUPON` or `POINTS`.
    pub kind: &'static str,
    pub grade: String,
    /// The campaign a coupon was granted from.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::kernel::id_text::optional::serialize"
    )]
    pub campaign_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points: Option<u64>,
    /// The points' EARN entry in the user's history.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::kernel::id_text::optional::serialize"
    )]
    pub transaction_id: Option<u64>,
    /// `GRANTED`, or why a coupon was not: `ALREADY_HELD`, `SOLD_OUT`, `NO_CAMPAIGN`, `ON_SALE`.
    pub outcome: String,
}

impl GradeReward {
    /// From a reward record's columns: its kind, grade, reference (a coupon's campaign, the
    /// points' EARN entry), points and outcome.
    pub fn from_record(
        kind: RewardKind,
        grade: String,
        reference: Option<u64>,
        points: Option<u64>,
        outcome: &str,
    ) -> Self {
        let (campaign_id, transaction_id) = match kind {
            RewardKind::Coupon => (reference, None),
            RewardKind::Points => (None, reference),
        };
        Self {
            kind: kind.as_str(),
            grade,
            campaign_id,
            points,
            transaction_id,
            outcome: outcome.to_owned(),
        }
    }
}

impl RewardRecord {
    pub fn view(&self) -> GradeReward {
        let points = match self.due.grant {
            Grant::Points(amount) => Some(amount),
            Grant::Coupon(_) => None,
        };
        GradeReward::from_record(
            self.due.grant.kind(),
            self.due.grade.clone(),
            self.reference,
            points,
            self.outcome.as_str(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_cover_every_bucket_once_for_any_count() {
        for count in [1, 2, 3, 7, 64, 100, 1024] {
            let mut next = 0;
            for p in 0..count {
                let (first, last) = partition_buckets(p, count);
                assert_eq!(first, next, "count {count} partition {p}");
                assert!(last >= first);
                next = last + 1;
            }
            assert_eq!(next, BUCKETS);
        }
    }

    #[test]
    fn the_bucket_is_stable_and_spreads_users() {
        // Fixed values: the bucket is stored with every order and must never change.
        assert_eq!(user_bucket(""), 0x811c_9dc5 % BUCKETS);
        assert_eq!(user_bucket("u1"), user_bucket("u1"));
        let mut counts = vec![0u32; 64];
        for i in 0..64_000 {
            let (first, _) = (user_bucket(&format!("user-{i}")), ());
            counts[(first * 64 / BUCKETS) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (700..1300).contains(c)), "{counts:?}");
    }

    #[test]
    fn months_parse_and_step() {
        let m = Month::parse("2026-10").unwrap();
        assert_eq!(m.number(), 202610);
        assert_eq!(m.to_string(), "2026-10");
        assert_eq!(Month::parse("2026-01").unwrap().previous().to_string(), "2025-12");
        assert_eq!(Month::parse("2026-12").unwrap().next().to_string(), "2027-01");
        assert_eq!(m.start().to_rfc3339(), "2026-10-01T00:00:00+00:00");
        for bad in ["2026-13", "2026-1", "26-10", "2026/10", "", "2026-00"] {
            assert!(Month::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_policy_grades_from_the_highest_tier_and_refuses_ambiguity() {
        let tier = |g: &str, min| Tier {
            grade: g.into(),
            min_amount: min,
            coupon_campaign_id: None,
            points: None,
        };
        let policy = Policy {
            tiers: vec![tier("SILVER", 100), tier("VIP", 1000), tier("BASIC", 0)],
        }
        .validate()
        .unwrap();
        assert_eq!(policy.tier_for(5000).unwrap().grade, "VIP");
        assert_eq!(policy.tier_for(1000).unwrap().grade, "VIP");
        assert_eq!(policy.tier_for(999).unwrap().grade, "SILVER");
        assert_eq!(policy.tier_for(0).unwrap().grade, "BASIC");
        let dup = Policy {
            tiers: vec![tier("A", 1), tier("B", 1)],
        };
        assert_eq!(dup.validate().unwrap_err().field, "tiers.minAmount");
        assert!(Policy { tiers: vec![] }.validate().is_err());
        let no_basic = Policy {
            tiers: vec![tier("VIP", 1000)],
        }
        .validate()
        .unwrap();
        assert!(no_basic.tier_for(10).is_none());
    }

    #[test]
    fn a_month_ends_at_the_first_instant_of_the_next() {
        let october = Month::parse("2026-10").unwrap();
        let at = |t: &str| t.parse::<DateTime<Utc>>().unwrap();
        assert!(!october.has_ended(at("2026-10-31T23:59:59.999Z")));
        assert!(october.has_ended(at("2026-11-01T00:00:00Z")));
        assert!(!Month::parse("2026-12").unwrap().has_ended(at("2026-12-03T00:00:00Z")));
    }

    #[test]
    fn an_order_may_be_cancelled_or_refunded_once_and_a_stale_change_never_wins() {
        use OrderChange::*;
        use OrderStatus::{Cancelled, Paid, Refunded};
        let at = |t: &str| t.parse::<DateTime<Utc>>().unwrap();
        let order = |status: OrderStatus, changed: &str| Order {
            order_id: "o-1".into(),
            user_id: UserId::parse("u1").unwrap(),
            amount: 5_000,
            status,
            ordered_at: at("2026-10-05T10:00:00Z"),
            status_changed_at: at(changed),
        };
        let paid = order(Paid, "2026-10-05T10:00:00Z");
        let refunded = order(Refunded, "2026-10-20T09:00:00Z");
        assert_eq!(paid.change_from(None), New);
        assert_eq!(paid.change_from(Some(&paid)), Unchanged);
        assert_eq!(refunded.change_from(Some(&paid)), Apply);
        assert_eq!(order(Cancelled, "2026-10-06T00:00:00Z").change_from(Some(&paid)), Apply);
        assert_eq!(refunded.change_from(Some(&refunded)), Unchanged, "a retried refund");
        assert_eq!(
            paid.change_from(Some(&refunded)),
            Stale,
            "the payment arriving after its refund"
        );
        assert_eq!(
            order(Refunded, "2026-10-21T00:00:00Z").change_from(Some(&refunded)),
            Unchanged
        );
        assert_eq!(
            order(Paid, "2026-10-22T00:00:00Z").change_from(Some(&refunded)),
            Conflict,
            "never un-refunded"
        );
        assert_eq!(
            order(Cancelled, "2026-10-22T00:00:00Z").change_from(Some(&refunded)),
            Conflict
        );
        assert_eq!(
            order(Cancelled, "2026-10-20T09:00:00Z").change_from(Some(&refunded)),
            Conflict,
            "same instant"
        );
        assert_eq!(
            order(Cancelled, "2026-10-10T00:00:00Z").change_from(Some(&refunded)),
            Conflict,
            "two endings"
        );
        let mut other = refunded.clone();
        other.amount = 4_000;
        assert_eq!(other.change_from(Some(&paid)), Conflict, "facts never change");
    }

    #[test]
    fn orders_are_checked_field_by_field() {
        let input = |id: &str, user: &str| OrderInput {
            order_id: id.into(),
            user_id: user.into(),
            amount: 10,
            status: OrderStatus::Paid,
            ordered_at: "2026-10-05T10:00:00.123456Z".parse().unwrap(),
            status_changed_at: None,
        };
        let order = input("o-1", "u1").validate(0).unwrap();
        assert_eq!(order.ordered_at.to_rfc3339(), "2026-10-05T10:00:00.123+00:00");
        assert_eq!(
            order.status_changed_at, order.ordered_at,
            "a status is as old as the order unless said"
        );
        let mut early = input("o-2", "u1");
        early.status_changed_at = Some("2026-10-05T09:59:59Z".parse().unwrap());
        assert_eq!(early.validate(0).unwrap_err().field, "statusChangedAt");
        assert_eq!(order.month().to_string(), "2026-10");
        assert_eq!(input("", "u1").validate(3).unwrap_err().field, "orderId");
        assert_eq!(input("o 1", "u1").validate(3).unwrap_err().index, 3);
        assert_eq!(input("o1", "").validate(0).unwrap_err().field, "userId");
    }

    #[test]
    fn an_order_time_is_judged_by_the_year_it_is_written_in() {
        let parse = |at: &str| {
            serde_json::from_value::<OrderInput>(serde_json::json!({
                "orderId": "o", "userId": "u", "amount": 1.0, "status": "PAID", "orderedAt": at
            }))
        };
        let early = parse("2000-01-01T00:30:00+01:00").unwrap();
        assert_eq!(Month::of(early.ordered_at).to_string(), "1999-12");
        for refused in [
            "1999-12-31T23:00:00-05:00",
            "9999-01-01T00:00:00Z",
            "2026-10-05 10:00:00Z",
        ] {
            assert!(parse(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn a_stored_month_that_is_no_month_is_refused_not_a_panic_later() {
        assert_eq!(
            Month::from_number(202610).map(|m| m.to_string()).as_deref(),
            Some("2026-10")
        );
        for corrupt in [202600, 202613, -202610, 0, i32::MAX, i32::MIN, 99_999_912] {
            assert_eq!(Month::from_number(corrupt), None, "{corrupt}");
        }
        let last = Month::from_number(999_912).unwrap();
        assert!(last.next().start() > last.start());
    }
}
