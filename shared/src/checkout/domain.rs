//! Checkout rules, pure: what a preview or a hold may ask, what an order pays with a coupon's
//! discount and points, a hold's status as a reader sees it, and what a confirm or a release does
//! to a locked hold. The MySQL records and the in-memory fake both run these.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::CheckoutError;
use crate::coupons::CouponError;
use crate::coupons::domain::{CouponId, MAX_ORDER_AMOUNT, OrderId};
use crate::kernel::{InvalidField, UserId, optional_whole_number, whole_number};
use crate::points::domain::MAX_AMOUNT as MAX_POINTS;

pub type HoldId = u64;

/// A hold lasts from 30 s (a payment page) to 30 minutes (3-D Secure and a slow bank); 15 by default.
pub const MIN_HOLD_SECONDS: u32 = 30;
pub const MAX_HOLD_SECONDS: u32 = 1_800;
pub const DEFAULT_HOLD_SECONDS: u32 = 900;

fn order_amount_in_range(amount: u64) -> Result<u64, InvalidField> {
    if amount > MAX_ORDER_AMOUNT {
        return Err(InvalidField::new("orderAmount", "must be at most 1,000,000,000,000"));
    }
    Ok(amount)
}

fn points_in_range(points: Option<u64>) -> Result<Option<u64>, InvalidField> {
    match points {
        Some(p) if !(1..=MAX_POINTS).contains(&p) => Err(InvalidField::new(
            "points",
            "must be a whole number from 1 to 1,000,000,000",
        )),
        other => Ok(other),
    }
}

/// `POST /v1/checkout/preview`: nothing is locked or changed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PreviewCheckout {
    pub user_id: UserId,
    #[serde(deserialize_with = "whole_number")]
    pub order_amount: u64,
    #[serde(default, deserialize_with = "crate::kernel::id_text::present")]
    pub coupon_id: Option<CouponId>,
    #[serde(default, deserialize_with = "optional_whole_number")]
    pub points: Option<u64>,
}

impl PreviewCheckout {
    pub fn validate(self) -> Result<Self, InvalidField> {
        order_amount_in_range(self.order_amount)?;
        points_in_range(self.points)?;
        Ok(self)
    }
}

/// `POST /v1/checkout/holds`: idempotent by `orderId` (one live hold per order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PlaceHold {
    pub user_id: UserId,
    pub order_id: OrderId,
    #[serde(deserialize_with = "whole_number")]
    pub order_amount: u64,
    #[serde(
        default,
        deserialize_with = "crate::kernel::id_text::present",
        serialize_with = "crate::kernel::id_text::optional::serialize"
    )]
    pub coupon_id: Option<CouponId>,
    #[serde(default, deserialize_with = "optional_whole_number")]
    pub points: Option<u64>,
    #[serde(default, deserialize_with = "optional_whole_number")]
    pub ttl_seconds: Option<u32>,
}

impl PlaceHold {
    pub fn validate(self) -> Result<Self, InvalidField> {
        order_amount_in_range(self.order_amount)?;
        points_in_range(self.points)?;
        if self.coupon_id.is_none() && self.points.is_none() {
            return Err(InvalidField::new("couponId", "a hold needs a couponId, points or both"));
        }
        if let Some(ttl) = self.ttl_seconds
            && !(MIN_HOLD_SECONDS..=MAX_HOLD_SECONDS).contains(&ttl)
        {
            return Err(InvalidField::new("ttlSeconds", "must be from 30 to 1,800"));
        }
        Ok(self)
    }

    /// When a hold placed at `now` ends.
    pub fn expires_at(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + chrono::Duration::seconds(i64::from(self.ttl_seconds.unwrap_or(DEFAULT_HOLD_SECONDS)))
    }

    /// SHA-256 (hex) of the request as asked: a retry of the order's hold must ask the same.
    pub fn fingerprint(&self) -> String {
        let asked = serde_json::json!(["hold", self]);
        Sha256::digest(asked.to_string().as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// What an order pays once a hold's coupon and points apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    pub discount: u64,
    pub points: u64,
    pub payable: u64,
}

/// Points pay at most what is left after the coupon's discount.
pub fn terms(order_amount: u64, discount: u64, points: u64) -> Result<Terms, InvalidField> {
    let left = order_amount.saturating_sub(discount);
    if points > left {
        return Err(InvalidField::new(
            "points",
            "must be at most the order amount left after the coupon's discount",
        ));
    }
    Ok(Terms {
        discount,
        points,
        payable: left - points,
    })
}

/// Why a coupon or points would not apply, as a preview answers it (the code the hold would be
/// refused with).
pub fn refusal_code(e: &CheckoutError) -> &'static str {
    match e {
        CheckoutError::Coupon(CouponError::AlreadyUsed) => "ALREADY_USED",
        CheckoutError::Coupon(CouponError::Held) => "COUPON_HELD",
        CheckoutError::Coupon(CouponError::Expired) => "EXPIRED",
        CheckoutError::Coupon(_) => "NOT_FOUND",
        CheckoutError::InsufficientPoints => "INSUFFICIENT_POINTS",
        _ => "INVALID_REQUEST",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CouponPreview {
    #[serde(with = "crate::kernel::id_text")]
    pub coupon_id: CouponId,
    pub applicable: bool,
    pub discount: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PointsPreview {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested: Option<u64>,
    pub available: u64,
    /// The most this order could use: the available points, at most what is left after the coupon.
    pub usable: u64,
    /// What the asked points would take off (0 when the hold would refuse them).
    pub applied: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

/// What would apply now: the answer of `POST /v1/checkout/preview`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Preview {
    pub order_amount: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coupon: Option<CouponPreview>,
    pub points: PointsPreview,
    pub discount: u64,
    pub payable: u64,
}

/// `coupon`: the coupon asked for and its discount, or why it would not apply; `available`: the
/// user's spendable points now.
pub fn preview(
    request: &PreviewCheckout,
    coupon: Option<(CouponId, Result<u64, CheckoutError>)>,
    available: u64,
) -> Preview {
    let coupon = coupon.map(|(coupon_id, decided)| match decided {
        Ok(discount) => CouponPreview {
            coupon_id,
            applicable: true,
            discount,
            reason: None,
        },
        Err(e) => CouponPreview {
            coupon_id,
            applicable: false,
            discount: 0,
            reason: Some(refusal_code(&e)),
        },
    });
    let discount = coupon.as_ref().map_or(0, |c| c.discount);
    let left = request.order_amount.saturating_sub(discount);
    let usable = available.min(left);
    let reason = match request.points {
        Some(asked) if asked > available => Some("INSUFFICIENT_POINTS"),
        Some(asked) if asked > left => Some("INVALID_REQUEST"),
        _ => None,
    };
    let applied = if reason.is_some() {
        0
    } else {
        request.points.unwrap_or(0)
    };
    Preview {
        order_amount: request.order_amount,
        coupon,
        points: PointsPreview {
            requested: request.points,
            available,
            usable,
            applied,
            reason,
        },
        discount,
        payable: left - applied,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HoldStatus {
    Pending,
    Confirmed,
    Released,
    /// Ended before a confirm: released by its end.
    Expired,
}

impl HoldStatus {
    const ALL: [Self; 4] = [Self::Pending, Self::Confirmed, Self::Released, Self::Expired];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Confirmed => "CONFIRMED",
            Self::Released => "RELEASED",
            Self::Expired => "EXPIRED",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

/// A hold as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub id: HoldId,
    pub partner_id: String,
    pub user_id: String,
    pub order_id: String,
    pub request_hash: String,
    pub order_amount: u64,
    pub coupon_id: Option<CouponId>,
    pub discount: u64,
    pub points: u64,
    /// The points' held USE entry.
    pub points_transaction: Option<u64>,
    /// What the row says; readers go by [`Hold::status`].
    pub stored_status: HoldStatus,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub settled_at: Option<DateTime<Utc>>,
}

impl Hold {
    /// The hold `request` makes at `now`, as both stores record it.
    pub fn placed(
        id: HoldId,
        partner: &str,
        request: &PlaceHold,
        terms: Terms,
        points_transaction: Option<u64>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id,
            partner_id: partner.to_owned(),
            user_id: request.user_id.as_str().to_owned(),
            order_id: request.order_id.as_str().to_owned(),
            request_hash: request.fingerprint(),
            order_amount: request.order_amount,
            coupon_id: request.coupon_id,
            discount: terms.discount,
            points: terms.points,
            points_transaction,
            stored_status: HoldStatus::Pending,
            expires_at: request.expires_at(now),
            created_at: now,
            settled_at: None,
        }
    }

    /// A pending hold past its end reads EXPIRED at once, before the sweep marks it.
    pub fn status(&self, now: DateTime<Utc>) -> HoldStatus {
        match self.stored_status {
            HoldStatus::Pending if now >= self.expires_at => HoldStatus::Expired,
            stored => stored,
        }
    }

    pub fn payable(&self) -> u64 {
        self.order_amount.saturating_sub(self.discount + self.points)
    }
}

/// What a hold request does, given the order's live hold (locked) if it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Make the hold.
    Place,
    /// The order's hold has ended unsettled: release it, then make the new one.
    ReleaseEndedThenPlace,
    /// The same request made this hold: answer it again, change nothing.
    Replay,
}

/// `fingerprint`: the request's ([`PlaceHold::fingerprint`]).
pub fn decide_place(live: Option<&Hold>, fingerprint: &str, now: DateTime<Utc>) -> Result<Placement, CheckoutError> {
    match live {
        None => Ok(Placement::Place),
        Some(hold) if hold.status(now) == HoldStatus::Expired => Ok(Placement::ReleaseEndedThenPlace),
        Some(hold) if hold.request_hash == fingerprint => Ok(Placement::Replay),
        Some(_) => Err(CheckoutError::OrderHeld),
    }
}

/// What a client asks of a hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    Confirm,
    Release,
}

/// What a confirm or a release does to the locked hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Spend what it holds.
    Confirm,
    /// Give back what it holds; the hold ends with this status (RELEASED, or EXPIRED when its
    /// time had passed: a release after the end does what the sweep would).
    Release(HoldStatus),
    /// Settled that way already: answer as the first time, change nothing.
    AlreadyDone,
}

pub fn decide_settle(hold: &Hold, asked: Settle, now: DateTime<Utc>) -> Result<Settlement, CheckoutError> {
    match (asked, hold.status(now)) {
        (Settle::Confirm, HoldStatus::Pending) => Ok(Settlement::Confirm),
        (Settle::Confirm, HoldStatus::Confirmed) => Ok(Settlement::AlreadyDone),
        (Settle::Confirm, HoldStatus::Released) => Err(CheckoutError::HoldReleased),
        (Settle::Confirm, HoldStatus::Expired) => Err(CheckoutError::HoldExpired),
        (Settle::Release, HoldStatus::Pending) => Ok(Settlement::Release(HoldStatus::Released)),
        (Settle::Release, HoldStatus::Expired) if hold.stored_status == HoldStatus::Pending => {
            Ok(Settlement::Release(HoldStatus::Expired))
        }
        (Settle::Release, HoldStatus::Released | HoldStatus::Expired) => Ok(Settlement::AlreadyDone),
        (Settle::Release, HoldStatus::Confirmed) => Err(CheckoutError::HoldConfirmed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn hold(status: HoldStatus) -> Hold {
        Hold {
            id: 1,
            partner_id: "p".into(),
            user_id: "u".into(),
            order_id: "o".into(),
            request_hash: String::new(),
            order_amount: 1_000,
            coupon_id: Some(7),
            discount: 100,
            points: 50,
            points_transaction: Some(9),
            stored_status: status,
            expires_at: at(60),
            created_at: at(0),
            settled_at: None,
        }
    }

    #[test]
    fn a_hold_is_settled_once_and_its_end_decides_at_the_edge() {
        let pending = hold(HoldStatus::Pending);
        assert_eq!(pending.payable(), 850);
        assert_eq!(
            decide_settle(&pending, Settle::Confirm, at(59)).unwrap(),
            Settlement::Confirm
        );
        // At its end exactly, it has ended: a confirm is refused, a release is what the sweep does.
        assert!(matches!(
            decide_settle(&pending, Settle::Confirm, at(60)),
            Err(CheckoutError::HoldExpired)
        ));
        assert_eq!(pending.status(at(60)), HoldStatus::Expired);
        assert_eq!(
            decide_settle(&pending, Settle::Release, at(60)).unwrap(),
            Settlement::Release(HoldStatus::Expired)
        );
        assert_eq!(
            decide_settle(&pending, Settle::Release, at(1)).unwrap(),
            Settlement::Release(HoldStatus::Released)
        );
        let confirmed = hold(HoldStatus::Confirmed);
        assert_eq!(
            decide_settle(&confirmed, Settle::Confirm, at(99)).unwrap(),
            Settlement::AlreadyDone
        );
        assert!(matches!(
            decide_settle(&confirmed, Settle::Release, at(1)),
            Err(CheckoutError::HoldConfirmed)
        ));
        for ended in [HoldStatus::Released, HoldStatus::Expired] {
            assert_eq!(
                decide_settle(&hold(ended), Settle::Release, at(1)).unwrap(),
                Settlement::AlreadyDone
            );
        }
        assert!(matches!(
            decide_settle(&hold(HoldStatus::Released), Settle::Confirm, at(1)),
            Err(CheckoutError::HoldReleased)
        ));
        assert!(matches!(
            decide_settle(&hold(HoldStatus::Expired), Settle::Confirm, at(1)),
            Err(CheckoutError::HoldExpired)
        ));
    }

    #[test]
    fn an_order_has_one_live_hold_and_a_retry_gets_it_again() {
        let mut live = hold(HoldStatus::Pending);
        live.request_hash = "h".into();
        assert_eq!(decide_place(None, "h", at(0)).unwrap(), Placement::Place);
        assert_eq!(decide_place(Some(&live), "h", at(1)).unwrap(), Placement::Replay);
        assert!(matches!(
            decide_place(Some(&live), "other", at(1)),
            Err(CheckoutError::OrderHeld)
        ));
        assert_eq!(
            decide_place(Some(&live), "other", at(60)).unwrap(),
            Placement::ReleaseEndedThenPlace
        );
        live.stored_status = HoldStatus::Confirmed;
        assert_eq!(decide_place(Some(&live), "h", at(99)).unwrap(), Placement::Replay);
    }

    #[test]
    fn points_pay_at_most_what_the_coupon_leaves() {
        assert_eq!(
            terms(1_000, 300, 700).unwrap(),
            Terms {
                discount: 300,
                points: 700,
                payable: 0
            }
        );
        assert_eq!(terms(1_000, 300, 701).unwrap_err().field, "points");
        assert_eq!(terms(100, 500, 0).unwrap().payable, 0, "a discount above the order");
    }

    #[test]
    fn requests_are_checked() {
        let place = |body: serde_json::Value| {
            serde_json::from_value::<PlaceHold>(body)
                .map_err(|e| e.to_string())
                .and_then(|p| p.validate().map_err(|e| e.field.to_owned()))
        };
        let ok = place(serde_json::json!({"userId": "u", "orderId": "o", "orderAmount": 10, "couponId": "3"})).unwrap();
        assert_eq!((ok.coupon_id, ok.expires_at(at(0))), (Some(3), at(900)));
        for (body, field) in [
            (
                serde_json::json!({"userId": "u", "orderId": "o", "orderAmount": 10}),
                "couponId",
            ),
            (
                serde_json::json!({"userId": "u", "orderId": "o", "orderAmount": 10, "points": 0}),
                "points",
            ),
            (
                serde_json::json!({"userId": "u", "orderId": "o", "orderAmount": 10, "points": 1, "ttlSeconds": 29}),
                "ttlSeconds",
            ),
            (
                serde_json::json!({"userId": "u", "orderId": "o", "orderAmount": 10, "points": 1, "ttlSeconds": 1801}),
                "ttlSeconds",
            ),
            (
                serde_json::json!({"userId": "u", "orderId": "o", "orderAmount": 1_000_000_000_001_u64, "points": 1}),
                "orderAmount",
            ),
        ] {
            assert_eq!(place(body).unwrap_err(), field);
        }
        let a = place(serde_json::json!({"userId": "u", "orderId": "o", "orderAmount": 10, "points": 1})).unwrap();
        let b = place(serde_json::json!({"userId": "u", "orderId": "o", "orderAmount": 10, "points": 2})).unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
    }

    #[test]
    fn a_preview_says_what_would_apply_and_why_not() {
        let request = |points| PreviewCheckout {
            user_id: UserId::parse("u").unwrap(),
            order_amount: 1_000,
            coupon_id: Some(7),
            points,
        };
        let seen = preview(&request(Some(200)), Some((7, Ok(300))), 500);
        assert_eq!((seen.discount, seen.points.applied, seen.payable), (300, 200, 500));
        assert_eq!(seen.points.usable, 500);
        let held = preview(
            &request(None),
            Some((7, Err(CheckoutError::Coupon(CouponError::Held)))),
            5_000,
        );
        assert_eq!(held.coupon.as_ref().unwrap().reason, Some("COUPON_HELD"));
        assert_eq!((held.discount, held.points.usable, held.payable), (0, 1_000, 1_000));
        let short = preview(&request(Some(600)), Some((7, Ok(300))), 500);
        assert_eq!((short.points.reason, short.payable), (Some("INSUFFICIENT_POINTS"), 700));
    }
}
