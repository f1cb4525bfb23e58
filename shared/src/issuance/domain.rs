//! Issuance rules, pure: campaigns, their validation, the issue decision and the reservation
//! that carries an accepted request to the writer.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::kernel::{InvalidField, MAX_MONEY_AMOUNT, UserId, rfc3339, storable_instant, whole_number};

pub const MAX_TOTAL_QUANTITY: u32 = 10_000_000;
pub const MAX_NAME_CHARS: usize = 200;

pub type CampaignId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DiscountType {
    Amount,
    Percent,
}

impl DiscountType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Amount => "AMOUNT",
            Self::Percent => "PERCENT",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "AMOUNT" => Some(Self::Amount),
            "PERCENT" => Some(Self::Percent),
            _ => None,
        }
    }
}

/// What a campaign is for. A `SALE` campaign is issued first-come-first-served to callers; a
/// `REWARD` campaign is never on sale: its coupons are granted only by grading policies, so a
/// grant can never take a place a caller was promised (the sale's count lives in Redis, a grant's
/// in MySQL, and one campaign never has both).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum CampaignKind {
    #[default]
    Sale,
    Reward,
}

impl CampaignKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sale => "SALE",
            Self::Reward => "REWARD",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "SALE" => Some(Self::Sale),
            "REWARD" => Some(Self::Reward),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discount {
    #[serde(rename = "type")]
    pub kind: DiscountType,
    #[serde(deserialize_with = "whole_number")]
    pub value: u64,
}

/// A campaign as a partner asks for it (the `POST /v1/campaigns` body); `validate` before use.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewCampaign {
    pub name: String,
    #[serde(deserialize_with = "whole_number")]
    pub total_quantity: u32,
    #[serde(deserialize_with = "rfc3339")]
    pub issue_starts_at: DateTime<Utc>,
    #[serde(deserialize_with = "rfc3339")]
    pub issue_ends_at: DateTime<Utc>,
    #[serde(deserialize_with = "rfc3339")]
    pub coupon_expires_at: DateTime<Utc>,
    pub discount: Discount,
    /// `SALE` when absent.
    #[serde(default)]
    pub kind: CampaignKind,
}

impl NewCampaign {
    pub fn validate(self) -> Result<Self, InvalidField> {
        let name = campaign_name(&self.name)?;
        total_quantity(self.total_quantity)?;
        storable_instant("issueStartsAt", self.issue_starts_at)?;
        storable_instant("issueEndsAt", self.issue_ends_at)?;
        storable_instant("couponExpiresAt", self.coupon_expires_at)?;
        if self.issue_ends_at <= self.issue_starts_at {
            return Err(InvalidField::new("issueEndsAt", "must be after issueStartsAt"));
        }
        if self.coupon_expires_at < self.issue_ends_at {
            return Err(InvalidField::new("couponExpiresAt", "must not be before issueEndsAt"));
        }
        match self.discount.kind {
            DiscountType::Percent if !(1..=100).contains(&self.discount.value) => {
                return Err(InvalidField::new("discount.value", "a PERCENT discount must be 1-100"));
            }
            DiscountType::Amount if !(1..=MAX_MONEY_AMOUNT).contains(&self.discount.value) => {
                return Err(InvalidField::new(
                    "discount.value",
                    "an AMOUNT discount must be 1-1000000000000",
                ));
            }
            _ => {}
        }
        Ok(Self { name, ..self })
    }
}

/// A campaign's name as kept: trimmed, 1–200 characters.
pub fn campaign_name(raw: &str) -> Result<String, InvalidField> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(InvalidField::new("name", "must be 1-200 characters"));
    }
    Ok(name.to_owned())
}

/// A campaign's quantity: 1 to 10,000,000.
pub fn total_quantity(quantity: u32) -> Result<u32, InvalidField> {
    if !(1..=MAX_TOTAL_QUANTITY).contains(&quantity) {
        return Err(InvalidField::new("totalQuantity", "must be between 1 and 10000000"));
    }
    Ok(quantity)
}

#[derive(Debug, Clone, PartialEq)]
pub struct Campaign {
    pub id: CampaignId,
    pub partner_id: String,
    pub name: String,
    pub total_quantity: u32,
    pub issue_starts_at: DateTime<Utc>,
    pub issue_ends_at: DateTime<Utc>,
    pub coupon_expires_at: DateTime<Utc>,
    pub discount: Discount,
    pub kind: CampaignKind,
    pub created_at: DateTime<Utc>,
    /// Issues no new places while set (`PATCH … {"paused": true}`); places taken stay.
    pub paused: bool,
}

/// What the issue script needs to decide alone, in one round trip: with the owner among them,
/// the issue path never asks MySQL whose campaign it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueRules {
    pub campaign_id: CampaignId,
    pub partner_id: String,
    pub total_quantity: u32,
    pub issue_starts_at: DateTime<Utc>,
    pub issue_ends_at: DateTime<Utc>,
    pub coupon_expires_at: DateTime<Utc>,
    pub kind: CampaignKind,
    pub paused: bool,
}

impl IssueRules {
    /// When the campaign's issue state may leave Redis: a day after its coupons expire (status
    /// answers, reconcile), and never less than a day from `now` (a campaign created with dates in
    /// the past still answers ENDED for a while).
    pub fn state_expires_at(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.coupon_expires_at.max(now) + chrono::Duration::days(1)
    }
}

impl From<&Campaign> for IssueRules {
    fn from(c: &Campaign) -> Self {
        Self {
            campaign_id: c.id,
            partner_id: c.partner_id.clone(),
            total_quantity: c.total_quantity,
            issue_starts_at: c.issue_starts_at,
            issue_ends_at: c.issue_ends_at,
            coupon_expires_at: c.coupon_expires_at,
            kind: c.kind,
            paused: c.paused,
        }
    }
}

/// The issue script's answer for one (campaign, user).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueDecision {
    /// The user now holds the `rank`-th reservation.
    Reserved {
        rank: u32,
    },
    /// The user already holds a place, taken by this request.
    AlreadyIssued(Place),
    /// The partner paused the campaign: no new places (a holder still gets its answer).
    Paused,
    SoldOut,
    /// Issuance starts at `opens_at`: until then the answer cannot change, so an instance may
    /// repeat it from memory.
    NotOpen {
        opens_at: DateTime<Utc>,
    },
    Ended,
    /// The campaign belongs to another partner.
    NotOwner,
    /// A `REWARD` campaign: only grading grants its coupons.
    NotOnSale,
    /// Redis holds no rules for the campaign (an unknown id, never primed, or Redis lost its
    /// state): only the catalog can tell which.
    Unprimed,
}

/// The request that took a user's place, and its rank: what a repeated request is answered with.
/// A place rebuilt by `fcfs-admin reconcile --repair` from a coupon alone knows neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Place {
    pub request_id: Option<uuid::Uuid>,
    pub rank: Option<u32>,
}

impl Place {
    pub fn of(request_id: uuid::Uuid, rank: u32) -> Self {
        Self {
            request_id: Some(request_id),
            rank: Some(rank),
        }
    }

    /// As Redis's users hash holds it, user → `"<request id> <rank>"` (the issue script writes the
    /// same). Only the request id is compared when a place is given back.
    pub fn encode(&self) -> String {
        match (self.request_id, self.rank) {
            (Some(request), Some(rank)) => format!("{request} {rank}"),
            (Some(request), None) => request.to_string(),
            _ => "restored".to_owned(),
        }
    }

    /// Also reads the older forms: a bare request id, and `restored`.
    pub fn decode(raw: &str) -> Self {
        let mut parts = raw.split(' ');
        Self {
            request_id: parts.next().and_then(|r| uuid::Uuid::parse_str(r).ok()),
            rank: parts.next().and_then(|r| r.parse().ok()),
        }
    }
}

/// A coupon MySQL recorded, with the request that won it: a holder to put back when Redis has
/// lost a campaign's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub user_id: String,
    pub coupon_id: u64,
    pub place: Place,
}

/// The decision rule the Redis script implements, as plain code: the in-memory ledger used by unit
/// tests runs exactly this, so the script and the tests agree on one specification.
pub fn decide(
    rules: &IssueRules,
    partner: &str,
    now: DateTime<Utc>,
    held: Option<Place>,
    reserved: u32,
) -> IssueDecision {
    if rules.partner_id != partner {
        IssueDecision::NotOwner
    } else if rules.kind == CampaignKind::Reward {
        IssueDecision::NotOnSale
    } else if now < rules.issue_starts_at {
        IssueDecision::NotOpen {
            opens_at: rules.issue_starts_at,
        }
    } else if now >= rules.issue_ends_at {
        IssueDecision::Ended
    } else if let Some(place) = held {
        IssueDecision::AlreadyIssued(place)
    } else if rules.paused {
        IssueDecision::Paused
    } else if reserved >= rules.total_quantity {
        IssueDecision::SoldOut
    } else {
        IssueDecision::Reserved { rank: reserved + 1 }
    }
}

/// The reservation message format this build writes. A writer accepts any version it can read:
/// fields a newer build adds are ignored, so messages survive a rolling deploy in either order.
pub const RESERVATION_SCHEMA_VERSION: u32 = 1;

fn first_schema_version() -> u32 {
    1
}

/// One accepted request on its way from the issue API to the writer (the SQS message body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reservation {
    /// Absent in messages written before versions existed: those are version 1.
    #[serde(default = "first_schema_version")]
    pub schema_version: u32,
    pub request_id: uuid::Uuid,
    pub campaign_id: CampaignId,
    pub partner_id: String,
    pub user_id: UserId,
    pub rank: u32,
    pub reserved_at: DateTime<Utc>,
}

impl Reservation {
    pub fn new(
        request_id: uuid::Uuid,
        campaign_id: CampaignId,
        partner_id: &str,
        user_id: UserId,
        rank: u32,
        reserved_at: DateTime<Utc>,
    ) -> Self {
        Self {
            schema_version: RESERVATION_SCHEMA_VERSION,
            request_id,
            campaign_id,
            partner_id: partner_id.to_owned(),
            user_id,
            rank,
            reserved_at,
        }
    }
}

/// Why a delivered reservation cannot be recorded at all: a field no issue API writes. The message
/// alone is failed (and, redelivered, reaches the DLQ); the rest of its delivery is recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidReservation {
    pub field: &'static str,
    pub reason: &'static str,
}

impl Reservation {
    /// The checks that need no campaign: every field within what the issue API writes and what
    /// the database stores. The campaign's own terms (owner, kind, window, quantity) are `allot`'s.
    pub fn check(&self) -> Result<(), InvalidReservation> {
        let bad = |field, reason| Err(InvalidReservation { field, reason });
        if self.schema_version == 0 {
            return bad("schemaVersion", "versions start at 1");
        }
        if self.request_id.is_nil() {
            return bad("requestId", "the nil UUID is no request");
        }
        if self.campaign_id == 0 {
            return bad("campaignId", "campaign ids start at 1");
        }
        if !crate::kernel::is_partner_id(&self.partner_id) {
            return bad("partnerId", "1-64 letters, digits, '.', '_' or '-'");
        }
        if self.rank == 0 {
            return bad("rank", "ranks start at 1");
        }
        if crate::kernel::storable_instant("reservedAt", self.reserved_at).is_err() {
            return bad("reservedAt", "outside what the database stores (years 1000-9999)");
        }
        Ok(())
    }
}

/// A place Redis handed out whose message is not known to be on the queue yet. The reserve script
/// records it in the same atomic step as the decision, so a process that dies before sending
/// leaves it behind for recovery instead of losing the place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingReservation {
    pub request_id: uuid::Uuid,
    pub user_id: UserId,
    pub rank: u32,
    pub reserved_at: DateTime<Utc>,
}

/// Why the writer kept a reservation without a coupon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RejectionReason {
    /// The campaign already holds `totalQuantity` coupons: Redis handed out more places than it
    /// has (a failover lost reservations, or a place was sold twice after a lost send response).
    OverQuantity,
    /// The message names a partner that does not own the campaign.
    PartnerMismatch,
    /// The campaign is a `REWARD` campaign, which Redis never hands places of: a forged message.
    NotOnSale,
    /// Reserved outside the campaign's issue window, which Redis never accepts: a forged message.
    OutsideWindow,
    /// A rank beyond the campaign's quantity, which Redis never hands out: a forged message.
    InvalidRank,
}

impl RejectionReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OverQuantity => "OVER_QUANTITY",
            Self::PartnerMismatch => "PARTNER_MISMATCH",
            Self::NotOnSale => "NOT_ON_SALE",
            Self::OutsideWindow => "OUTSIDE_WINDOW",
            Self::InvalidRank => "INVALID_RANK",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "OVER_QUANTITY" => Some(Self::OverQuantity),
            "PARTNER_MISMATCH" => Some(Self::PartnerMismatch),
            "NOT_ON_SALE" => Some(Self::NotOnSale),
            "OUTSIDE_WINDOW" => Some(Self::OutsideWindow),
            "INVALID_RANK" => Some(Self::InvalidRank),
            _ => None,
        }
    }
}

/// What the writer made of a user's reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Issued { coupon_id: u64 },
    Rejected(RejectionReason),
}

/// How one campaign's share of a chunk is written (`allot`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Allotment<'a> {
    /// Reservations that become coupons, in order of acceptance.
    pub issue: Vec<&'a Reservation>,
    /// Users who already hold a coupon (a redelivery), or repeated inside the chunk.
    pub duplicates: Vec<&'a Reservation>,
    pub rejected: Vec<(&'a Reservation, RejectionReason)>,
}

/// What the writer's guard knows of a campaign (`allot`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CampaignTerms<'a> {
    pub owner: &'a str,
    pub kind: CampaignKind,
    pub total_quantity: u32,
    pub issue_starts_at: DateTime<Utc>,
    pub issue_ends_at: DateTime<Utc>,
}

impl CampaignTerms<'_> {
    /// Why Redis could not have handed out this place, if it could not: each message is judged on
    /// its own, by the same terms `decide` applies (the window at Redis's millisecond).
    pub fn refusal(&self, r: &Reservation) -> Option<RejectionReason> {
        let at = r.reserved_at.timestamp_millis();
        if r.partner_id != self.owner {
            Some(RejectionReason::PartnerMismatch)
        } else if self.kind == CampaignKind::Reward {
            Some(RejectionReason::NotOnSale)
        } else if at < self.issue_starts_at.timestamp_millis() || at >= self.issue_ends_at.timestamp_millis() {
            Some(RejectionReason::OutsideWindow)
        } else if r.rank == 0 || r.rank > self.total_quantity {
            Some(RejectionReason::InvalidRank)
        } else {
            None
        }
    }
}

/// Whether a campaign's share of a chunk (`share` reservations, repeats and refusals counted)
/// could take more places than `room` leaves. Only then does `allot` need the users who already
/// hold a coupon, and its allotment depend on the room: a share that cannot overflow gets the same
/// allotment from the same terms whatever the room, so it may be written before the campaign's
/// counter row is locked, as long as the terms are the same and it still cannot overflow then.
pub fn could_overflow(share: usize, room: u32) -> bool {
    share > room as usize
}

/// The database's guard, as a pure rule: of one campaign's reservations, those Redis could have
/// accepted (`CampaignTerms::refusal`) of users without a coupon get one, in Redis's order of
/// acceptance (rank, then time), while `room` (quantity minus coupons written) lasts; the rest are
/// rejected, never dropped.
pub fn allot<'a>(
    reservations: &[&'a Reservation],
    terms: &CampaignTerms<'_>,
    written: &std::collections::HashSet<&str>,
    room: u32,
) -> Allotment<'a> {
    let mut allotment = Allotment::default();
    let mut candidates: Vec<&Reservation> = Vec::with_capacity(reservations.len());
    for &r in reservations {
        if let Some(reason) = terms.refusal(r) {
            allotment.rejected.push((r, reason));
        } else if written.contains(r.user_id.as_str()) {
            allotment.duplicates.push(r);
        } else {
            candidates.push(r);
        }
    }
    candidates.sort_by(|a, b| (a.rank, a.reserved_at, &a.user_id).cmp(&(b.rank, b.reserved_at, &b.user_id)));
    let mut seen = std::collections::HashSet::new();
    let mut room = room as usize;
    for r in candidates {
        if !seen.insert(r.user_id.as_str()) {
            allotment.duplicates.push(r);
        } else if room > 0 {
            room -= 1;
            allotment.issue.push(r);
        } else {
            allotment.rejected.push((r, RejectionReason::OverQuantity));
        }
    }
    allotment
}

/// What granting one of a campaign's coupons as a reward did for one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CouponGrant {
    Granted,
    /// The user already held one of the campaign's coupons.
    AlreadyHeld,
    /// The campaign holds `totalQuantity` coupons.
    SoldOut,
    /// No such campaign of the partner.
    NoCampaign,
    /// A `SALE` campaign: its places are the sale's, never a grant's.
    OnSale,
}

impl CouponGrant {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Granted => "GRANTED",
            Self::AlreadyHeld => "ALREADY_HELD",
            Self::SoldOut => "SOLD_OUT",
            Self::NoCampaign => "NO_CAMPAIGN",
            Self::OnSale => "ON_SALE",
        }
    }
}

/// A campaign as a reward grant finds it under its counter row's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantableCampaign<'a> {
    pub owner: &'a str,
    pub kind: CampaignKind,
    /// Quantity minus coupons written.
    pub room: u32,
}

/// The database's guard for rewards: a `REWARD` campaign of `partner` gives one coupon to each of
/// `users` who holds none, in the order given, while the room lasts; every user gets an answer.
pub fn grant_coupons(
    campaign: Option<GrantableCampaign<'_>>,
    partner: &str,
    users: &[&str],
    holders: &std::collections::HashSet<&str>,
) -> Vec<CouponGrant> {
    let Some(campaign) = campaign.filter(|c| c.owner == partner) else {
        return vec![CouponGrant::NoCampaign; users.len()];
    };
    if campaign.kind != CampaignKind::Reward {
        return vec![CouponGrant::OnSale; users.len()];
    }
    let mut room = campaign.room;
    let mut seen = std::collections::HashSet::new();
    users
        .iter()
        .map(|user| {
            if holders.contains(user) || !seen.insert(*user) {
                CouponGrant::AlreadyHeld
            } else if room == 0 {
                CouponGrant::SoldOut
            } else {
                room -= 1;
                CouponGrant::Granted
            }
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum IssueStatus {
    Pending,
    Issued,
    /// Redis accepted the request but the database refused it (see `RejectionReason`).
    Rejected,
    None,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn rules() -> IssueRules {
        let now = Utc::now();
        IssueRules {
            campaign_id: 1,
            partner_id: "p".into(),
            total_quantity: 2,
            issue_starts_at: now - Duration::hours(1),
            issue_ends_at: now + Duration::hours(1),
            coupon_expires_at: now + Duration::days(1),
            kind: CampaignKind::Sale,
            paused: false,
        }
    }

    #[test]
    fn decision_order_window_then_duplicate_then_stock() {
        let r = rules();
        let now = Utc::now();
        let held = Place::of(uuid::Uuid::now_v7(), 2);
        assert_eq!(decide(&r, "other", now, None, 0), IssueDecision::NotOwner);
        assert_eq!(
            decide(&r, "p", r.issue_starts_at - Duration::seconds(1), None, 0),
            IssueDecision::NotOpen {
                opens_at: r.issue_starts_at
            }
        );
        assert_eq!(decide(&r, "p", r.issue_ends_at, None, 0), IssueDecision::Ended);
        assert_eq!(decide(&r, "p", now, Some(held), 2), IssueDecision::AlreadyIssued(held));
        let paused = IssueRules {
            paused: true,
            ..r.clone()
        };
        assert_eq!(decide(&paused, "p", now, None, 0), IssueDecision::Paused);
        assert_eq!(
            decide(&paused, "p", now, Some(held), 0),
            IssueDecision::AlreadyIssued(held),
            "a holder still gets its answer"
        );
        assert_eq!(decide(&r, "p", now, None, 2), IssueDecision::SoldOut);
        assert_eq!(decide(&r, "p", now, None, 1), IssueDecision::Reserved { rank: 2 });
        let reward = IssueRules {
            kind: CampaignKind::Reward,
            ..r.clone()
        };
        assert_eq!(decide(&reward, "other", now, None, 0), IssueDecision::NotOwner);
        assert_eq!(decide(&reward, "p", now, None, 0), IssueDecision::NotOnSale);
    }

    #[test]
    fn a_place_reads_back_as_stored_and_older_forms_still_read() {
        let request = uuid::Uuid::now_v7();
        let place = Place::of(request, 17);
        assert_eq!(place.encode(), format!("{request} 17"));
        assert_eq!(Place::decode(&place.encode()), place);
        let bare = Place::decode(&request.to_string());
        assert_eq!((bare.request_id, bare.rank), (Some(request), None));
        assert_eq!(bare.encode(), request.to_string());
        assert_eq!(Place::decode("restored"), Place::default());
        assert_eq!(Place::default().encode(), "restored");
    }

    fn reservation(user: &str, partner: &str, rank: u32) -> Reservation {
        Reservation::new(
            uuid::Uuid::now_v7(),
            1,
            partner,
            UserId::parse(user).unwrap(),
            rank,
            Utc::now(),
        )
    }

    #[test]
    fn allot_caps_at_the_room_in_order_of_acceptance_and_rejects_the_rest() {
        let (a, b, c, d) = (
            reservation("a", "p", 3),
            reservation("b", "p", 1),
            reservation("c", "p", 2),
            reservation("d", "p", 4),
        );
        let forged = reservation("e", "intruder", 5);
        let again = reservation("b", "p", 9);
        let done = reservation("w", "p", 1);
        let written = std::collections::HashSet::from(["w"]);
        let all = [&a, &b, &c, &d, &forged, &again, &done];
        let terms = terms(CampaignKind::Sale);
        let allotment = allot(&all, &terms, &written, 2);
        let users = |rs: &[&Reservation]| rs.iter().map(|r| r.user_id.as_str().to_owned()).collect::<Vec<_>>();
        assert_eq!(users(&allotment.issue), ["b", "c"], "lowest ranks first");
        let mut duplicates = users(&allotment.duplicates);
        duplicates.sort();
        assert_eq!(duplicates, ["b", "w"]);
        let rejected: Vec<_> = allotment
            .rejected
            .iter()
            .map(|(r, why)| (r.user_id.as_str(), *why))
            .collect();
        assert_eq!(
            rejected,
            [
                ("e", RejectionReason::PartnerMismatch),
                ("a", RejectionReason::OverQuantity),
                ("d", RejectionReason::OverQuantity)
            ]
        );
        assert_eq!(
            allot(&all, &terms, &written, 0).issue.len(),
            0,
            "a full campaign takes nobody"
        );
        let reward = allot(
            &[&b],
            &self::terms(CampaignKind::Reward),
            &std::collections::HashSet::new(),
            5,
        );
        assert_eq!(reward.rejected, vec![(&b, RejectionReason::NotOnSale)]);
    }

    #[test]
    fn a_share_that_cannot_overflow_gets_one_allotment_whatever_the_room() {
        let (a, b, forged, again) = (
            reservation("a", "p", 2),
            reservation("b", "p", 1),
            reservation("e", "intruder", 3),
            reservation("b", "p", 4),
        );
        let share = [&a, &b, &forged, &again];
        let terms = terms(CampaignKind::Sale);
        let none = std::collections::HashSet::new();
        assert!(could_overflow(share.len(), 3));
        assert!(!could_overflow(share.len(), 4));
        let at_the_edge = allot(&share, &terms, &none, 4);
        for room in [5, 100, u32::MAX] {
            assert!(!could_overflow(share.len(), room));
            assert_eq!(allot(&share, &terms, &none, room), at_the_edge, "room {room}");
        }
        assert_eq!(at_the_edge.issue, vec![&b, &a]);
        assert_eq!(at_the_edge.duplicates, vec![&again]);
        // Below the share's size the room can decide: one place less leaves someone out here.
        assert_ne!(allot(&share, &terms, &none, 1), at_the_edge);
    }

    fn terms(kind: CampaignKind) -> CampaignTerms<'static> {
        let now = Utc::now();
        CampaignTerms {
            owner: "p",
            kind,
            total_quantity: 10,
            issue_starts_at: now - Duration::hours(1),
            issue_ends_at: now + Duration::hours(1),
        }
    }

    #[test]
    fn a_place_redis_could_not_have_handed_out_is_rejected_with_its_reason() {
        let terms = terms(CampaignKind::Sale);
        let at = |r: Reservation, reserved_at| Reservation { reserved_at, ..r };
        let ms = Duration::milliseconds(1);
        let cases = [
            (reservation("a", "p", 1), None),
            (reservation("a", "p", 10), None),
            (at(reservation("a", "p", 1), terms.issue_starts_at), None),
            (at(reservation("a", "p", 1), terms.issue_ends_at - ms), None),
            (reservation("a", "q", 1), Some(RejectionReason::PartnerMismatch)),
            (reservation("a", "p", 11), Some(RejectionReason::InvalidRank)),
            (
                at(reservation("a", "p", 1), terms.issue_starts_at - ms),
                Some(RejectionReason::OutsideWindow),
            ),
            (
                at(reservation("a", "p", 1), terms.issue_ends_at),
                Some(RejectionReason::OutsideWindow),
            ),
            (
                at(reservation("a", "p", 1), terms.issue_ends_at + Duration::days(400)),
                Some(RejectionReason::OutsideWindow),
            ),
        ];
        for (r, expected) in cases {
            assert_eq!(terms.refusal(&r), expected, "{r:?}");
            let allotment = allot(&[&r], &terms, &std::collections::HashSet::new(), 5);
            assert_eq!(allotment.rejected.first().map(|(_, why)| *why), expected);
            assert_eq!(allotment.issue.len(), usize::from(expected.is_none()));
        }
    }

    #[test]
    fn a_reservation_no_issue_api_writes_is_refused_field_by_field() {
        let good = reservation("a", "p", 1);
        assert_eq!(good.check(), Ok(()));
        let far = DateTime::<Utc>::from_timestamp_millis(3_093_527_980_800_000).unwrap();
        let field = |r: Reservation| r.check().map_err(|e| e.field);
        assert_eq!(
            field(Reservation {
                schema_version: 0,
                ..good.clone()
            }),
            Err("schemaVersion")
        );
        assert_eq!(
            field(Reservation {
                schema_version: 7,
                ..good.clone()
            }),
            Ok(()),
            "newer versions are read"
        );
        assert_eq!(
            field(Reservation {
                request_id: uuid::Uuid::nil(),
                ..good.clone()
            }),
            Err("requestId")
        );
        assert_eq!(
            field(Reservation {
                campaign_id: 0,
                ..good.clone()
            }),
            Err("campaignId")
        );
        for partner in ["", "a b", &"p".repeat(65), "é"] {
            assert_eq!(
                field(Reservation {
                    partner_id: partner.into(),
                    ..good.clone()
                }),
                Err("partnerId")
            );
        }
        assert_eq!(
            field(Reservation {
                rank: 0,
                ..good.clone()
            }),
            Err("rank")
        );
        assert_eq!(
            field(Reservation {
                reserved_at: far,
                ..good.clone()
            }),
            Err("reservedAt")
        );
    }

    #[test]
    fn a_reward_grant_gives_a_reward_campaigns_room_in_order_and_never_a_sale_place() {
        use std::collections::HashSet;
        let reward = |room| GrantableCampaign {
            owner: "p",
            kind: CampaignKind::Reward,
            room,
        };
        let holders = HashSet::from(["b"]);
        assert_eq!(
            grant_coupons(Some(reward(2)), "p", &["a", "b", "c", "a", "d"], &holders),
            [
                CouponGrant::Granted,
                CouponGrant::AlreadyHeld,
                CouponGrant::Granted,
                CouponGrant::AlreadyHeld,
                CouponGrant::SoldOut
            ]
        );
        let sale = GrantableCampaign {
            kind: CampaignKind::Sale,
            ..reward(5)
        };
        assert_eq!(grant_coupons(Some(sale), "p", &["a"], &holders), [CouponGrant::OnSale]);
        assert_eq!(
            grant_coupons(Some(reward(5)), "q", &["a"], &holders),
            [CouponGrant::NoCampaign]
        );
        assert_eq!(
            grant_coupons(None, "p", &["a", "c"], &holders),
            [CouponGrant::NoCampaign; 2]
        );
    }

    fn campaign() -> NewCampaign {
        let now = Utc::now();
        NewCampaign {
            name: " Black Friday ".into(),
            total_quantity: 1000,
            issue_starts_at: now,
            issue_ends_at: now + Duration::hours(1),
            coupon_expires_at: now + Duration::days(30),
            discount: Discount {
                kind: DiscountType::Percent,
                value: 10,
            },
            kind: CampaignKind::Sale,
        }
    }

    #[test]
    fn campaign_validation_names_the_field() {
        assert_eq!(campaign().validate().unwrap().name, "Black Friday");
        let field = |c: NewCampaign| c.validate().unwrap_err().field;
        assert_eq!(
            field(NewCampaign {
                total_quantity: 0,
                ..campaign()
            }),
            "totalQuantity"
        );
        assert_eq!(
            field(NewCampaign {
                total_quantity: 10_000_001,
                ..campaign()
            }),
            "totalQuantity"
        );
        let c = campaign();
        assert_eq!(
            field(NewCampaign {
                issue_ends_at: c.issue_starts_at,
                ..c.clone()
            }),
            "issueEndsAt"
        );
        assert_eq!(
            field(NewCampaign {
                coupon_expires_at: c.issue_starts_at,
                ..c.clone()
            }),
            "couponExpiresAt"
        );
        assert_eq!(
            field(NewCampaign {
                name: "  ".into(),
                ..c.clone()
            }),
            "name"
        );
        let pct = Discount {
            kind: DiscountType::Percent,
            value: 101,
        };
        assert_eq!(
            field(NewCampaign {
                discount: pct,
                ..c.clone()
            }),
            "discount.value"
        );
        // An amount JavaScript could not hold exactly is refused, as any amount above an order's.
        for (value, valid) in [
            (MAX_MONEY_AMOUNT, true),
            (MAX_MONEY_AMOUNT + 1, false),
            (u64::MAX, false),
        ] {
            let amount = NewCampaign {
                discount: Discount {
                    kind: DiscountType::Amount,
                    value,
                },
                ..c.clone()
            };
            assert_eq!(amount.validate().is_ok(), valid, "{value}");
        }
        // Valid RFC 3339, but MySQL's DATETIME cannot hold it: refused before any write.
        assert_eq!(
            field(NewCampaign {
                issue_starts_at: "0001-01-01T00:00:00Z".parse().unwrap(),
                ..c.clone()
            }),
            "issueStartsAt"
        );
    }

    #[test]
    fn reservation_message_shape() {
        let json = serde_json::json!({
            "requestId": "0190a3c4-0000-7000-8000-000000000000", "campaignId": 42, "partnerId": "p",
            "userId": "u1", "rank": 7, "reservedAt": "2026-11-23T00:00:00Z"
        });
        let r: Reservation = serde_json::from_value(json.clone()).unwrap();
        assert_eq!((r.campaign_id, r.rank, r.user_id.as_str()), (42, 7, "u1"));
        assert_eq!(serde_json::to_value(&r).unwrap()["userId"], "u1");
        assert_eq!(r.schema_version, 1, "messages from before versions are version 1");
        assert_eq!(
            serde_json::to_value(&r).unwrap()["schemaVersion"],
            RESERVATION_SCHEMA_VERSION
        );
        // A newer writer's message: extra fields are ignored, so a rolling deploy loses nothing.
        let mut newer = json;
        newer["schemaVersion"] = 2.into();
        newer["surprise"] = 1.into();
        assert_eq!(serde_json::from_value::<Reservation>(newer).unwrap().rank, 7);
        let mut bad_user = serde_json::to_value(&r).unwrap();
        bad_user["userId"] = "x".repeat(65).into();
        assert!(serde_json::from_value::<Reservation>(bad_user).is_err());
    }
}
