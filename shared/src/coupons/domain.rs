//! Coupon rules, pure: a coupon's status as a reader sees it, what a use or a cancel does to a
//! locked coupon, the discount an order gets, and the list's keyset cursor.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::error::CouponError;
use crate::issuance::domain::{CampaignId, Discount, DiscountType};
use crate::kernel::{DEFAULT_PAGE, InvalidField, UserId, page_limit, storable_instant, whole_number};

pub type CouponId = u64;

pub const MAX_ORDER_ID_CHARS: usize = 128;
/// An order amount above this is refused (it would also overflow a percentage).
pub const MAX_ORDER_AMOUNT: u64 = crate::kernel::MAX_MONEY_AMOUNT;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CouponStatus {
    Issued,
    /// Held for an order being paid (a checkout hold): neither usable nor holdable by another.
    Held,
    Used,
    Expired,
}

impl CouponStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Issued => "ISSUED",
            Self::Held => "HELD",
            Self::Used => "USED",
            Self::Expired => "EXPIRED",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidField> {
        match raw {
            "ISSUED" => Ok(Self::Issued),
            "HELD" => Ok(Self::Held),
            "USED" => Ok(Self::Used),
            "EXPIRED" => Ok(Self::Expired),
            _ => Err(InvalidField::new("status", "must be ISSUED, HELD, USED or EXPIRED")),
        }
    }
}

/// An order that spent a coupon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    pub order_id: String,
    pub order_amount: u64,
    pub discount_amount: u64,
    pub used_at: DateTime<Utc>,
}

/// The checkout hold a coupon is held by, as its row records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CouponHold {
    pub hold_id: u64,
    pub order_id: String,
    pub order_amount: u64,
    /// The hold's end: from then on the coupon reads as if it were not held.
    pub until: DateTime<Utc>,
}

impl CouponHold {
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        now < self.until
    }
}

/// A coupon as stored, with its campaign's name and discount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coupon {
    pub id: CouponId,
    pub campaign_id: CampaignId,
    pub campaign_name: String,
    pub partner_id: String,
    pub user_id: String,
    /// What the row says; readers go by [`Coupon::status`].
    pub stored_status: CouponStatus,
    pub discount: Discount,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub usage: Option<Usage>,
    /// The checkout hold its row names, live or lapsed (a lapsed one changes nothing).
    pub hold: Option<CouponHold>,
}

impl Coupon {
    /// A used coupon stays USED; a held one is HELD until its hold ends (even past the coupon's
    /// own time: a hold keeps what it held until it is confirmed or released); otherwise a coupon
    /// past its time is EXPIRED whether or not the sweep has marked it yet.
    pub fn status(&self, now: DateTime<Utc>) -> CouponStatus {
        if self.usage.is_some() {
            CouponStatus::Used
        } else if self.live_hold(now).is_some() {
            CouponStatus::Held
        } else if self.stored_status == CouponStatus::Expired || now >= self.expires_at {
            CouponStatus::Expired
        } else {
            CouponStatus::Issued
        }
    }

    /// The hold that holds it now, if any.
    pub fn live_hold(&self, now: DateTime<Utc>) -> Option<&CouponHold> {
        self.hold.as_ref().filter(|h| self.usage.is_none() && h.is_live(now))
    }

    /// The partner's coupon held by this user; anything else is "not found".
    pub fn owned_by(&self, partner: &str, user: &UserId) -> bool {
        self.partner_id == partner && self.user_id == user.as_str()
    }
}

/// AMOUNT: the value, at most the order; PERCENT: that share of the order, rounded down.
pub fn discount_amount(discount: &Discount, order_amount: u64) -> u64 {
    match discount.kind {
        DiscountType::Amount => discount.value.min(order_amount),
        DiscountType::Percent => {
            let share = u128::from(order_amount) * u128::from(discount.value.min(100)) / 100;
            share as u64
        }
    }
}

/// A partner's order reference: 1–128 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OrderId(String);

impl TryFrom<String> for OrderId {
    type Error = InvalidField;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        if raw.is_empty() || raw.len() > MAX_ORDER_ID_CHARS || !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidField::new("orderId", "must be 1-128 visible ASCII characters"));
        }
        Ok(Self(raw))
    }
}

impl From<OrderId> for String {
    fn from(id: OrderId) -> Self {
        id.0
    }
}

impl OrderId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `POST /v1/coupons/{couponId}/use`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UseCoupon {
    pub user_id: UserId,
    pub order_id: OrderId,
    #[serde(deserialize_with = "whole_number")]
    pub order_amount: u64,
}

impl UseCoupon {
    pub fn validate(self) -> Result<Self, InvalidField> {
        if self.order_amount > MAX_ORDER_AMOUNT {
            return Err(InvalidField::new("orderAmount", "must be at most 1,000,000,000,000"));
        }
        Ok(self)
    }
}

/// `POST /v1/coupons/{couponId}/cancel-use`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CancelUse {
    pub user_id: UserId,
    pub order_id: OrderId,
}

/// What a use does to the locked coupon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UseDecision {
    /// Spend it with this discount.
    Apply { discount_amount: u64 },
    /// This order already spent it: answer as the first time, change nothing.
    AlreadyDone,
}

pub fn decide_use(
    coupon: &Coupon,
    partner: &str,
    request: &UseCoupon,
    now: DateTime<Utc>,
) -> Result<UseDecision, CouponError> {
    if !coupon.owned_by(partner, &request.user_id) {
        return Err(CouponError::NotFound);
    }
    match (&coupon.usage, coupon.status(now)) {
        (Some(usage), _) if usage.order_id == request.order_id.as_str() => Ok(UseDecision::AlreadyDone),
        (Some(_), _) => Err(CouponError::AlreadyUsed),
        (None, CouponStatus::Held) => Err(CouponError::Held),
        (None, CouponStatus::Expired) => Err(CouponError::Expired),
        (None, _) => Ok(UseDecision::Apply {
            discount_amount: discount_amount(&coupon.discount, request.order_amount),
        }),
    }
}

/// Why a coupon cannot be applied to an order now (a preview's answer, a hold's refusal).
pub fn applicable(coupon: &Coupon, partner: &str, user: &UserId, now: DateTime<Utc>) -> Result<(), CouponError> {
    if !coupon.owned_by(partner, user) {
        return Err(CouponError::NotFound);
    }
    match coupon.status(now) {
        CouponStatus::Issued => Ok(()),
        CouponStatus::Held => Err(CouponError::Held),
        CouponStatus::Used => Err(CouponError::AlreadyUsed),
        CouponStatus::Expired => Err(CouponError::Expired),
    }
}

/// A checkout hold on the locked coupon: the discount it gives the order, or why not. A lapsed
/// hold of another order is overwritten.
pub fn decide_hold(
    coupon: &Coupon,
    partner: &str,
    user: &UserId,
    order_amount: u64,
    now: DateTime<Utc>,
) -> Result<u64, CouponError> {
    applicable(coupon, partner, user, now)?;
    Ok(discount_amount(&coupon.discount, order_amount))
}

/// What a hold's confirm makes of the locked coupon: its use by the hold's order, with the
/// discount the hold gave. Only the hold that holds it confirms it (the checkout context checked
/// the hold's time under the hold's lock, with the same `now`).
pub fn decide_confirm_hold(coupon: &Coupon, hold_id: u64, now: DateTime<Utc>) -> Result<Usage, CouponError> {
    match &coupon.hold {
        Some(hold) if hold.hold_id == hold_id && coupon.usage.is_none() => Ok(Usage {
            order_id: hold.order_id.clone(),
            order_amount: hold.order_amount,
            discount_amount: discount_amount(&coupon.discount, hold.order_amount),
            used_at: now,
        }),
        _ => Err(CouponError::Held),
    }
}

/// What a cancel does to the locked coupon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelDecision {
    /// Give it back (it reads ISSUED, or EXPIRED if its time passed meanwhile).
    Revert,
    /// This order's use was already cancelled: answer again, change nothing.
    AlreadyDone,
}

/// `last_cancelled_order`: the order of the coupon's latest cancel in its history, if the latest
/// entry is a cancel; it makes a repeated cancel answer as the first.
pub fn decide_cancel(
    coupon: &Coupon,
    partner: &str,
    request: &CancelUse,
    last_cancelled_order: Option<&str>,
) -> Result<CancelDecision, CouponError> {
    if !coupon.owned_by(partner, &request.user_id) {
        return Err(CouponError::NotFound);
    }
    match &coupon.usage {
        Some(usage) if usage.order_id == request.order_id.as_str() => Ok(CancelDecision::Revert),
        None if last_cancelled_order == Some(request.order_id.as_str()) => Ok(CancelDecision::AlreadyDone),
        _ => Err(CouponError::NotUsed),
    }
}

/// Whether releasing hold `hold_id` changes the coupon: only while the coupon still names it
/// (once it ended, another order may have held or used the coupon; then nothing is given back).
pub fn releases(coupon: &Coupon, hold_id: u64) -> bool {
    coupon.hold.as_ref().is_some_and(|h| h.hold_id == hold_id)
}

/// Where a page of a user's coupons (newest first: `issued_at` then id, descending) resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub issued_at: DateTime<Utc>,
    pub id: CouponId,
}

impl Cursor {
    pub fn after(coupon: &Coupon) -> Self {
        Self {
            issued_at: coupon.issued_at,
            id: coupon.id,
        }
    }

    /// Opaque to clients: URL-safe base64 of `millis.id`.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}.{}", self.issued_at.timestamp_millis(), self.id))
    }

    pub fn decode(raw: &str) -> Result<Self, InvalidField> {
        let invalid = || InvalidField::new("cursor", "is not a cursor this API returned");
        let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        let (millis, id) = text.split_once('.').ok_or_else(invalid)?;
        let issued_at = DateTime::from_timestamp_millis(millis.parse().map_err(|_| invalid())?).ok_or_else(invalid)?;
        Ok(Self {
            // Bound to what MySQL's DATETIME holds: the query binds it, and sqlx's encoder panics on
            // a year it cannot encode (a crafted cursor answered 502 before).
            issued_at: storable_instant("cursor", issued_at).map_err(|_| invalid())?,
            id: crate::kernel::digits(id).ok_or_else(invalid)?,
        })
    }
}

/// `GET /v1/users/{userId}/coupons` query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CouponQuery {
    pub status: Option<CouponStatus>,
    pub campaign_id: Option<CampaignId>,
    pub limit: u32,
    pub cursor: Option<Cursor>,
}

impl CouponQuery {
    /// From the query string's parameters; unknown ones are refused, so a typo is not ignored.
    pub fn parse<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, InvalidField> {
        let mut query = Self {
            status: None,
            campaign_id: None,
            limit: DEFAULT_PAGE,
            cursor: None,
        };
        for (name, value) in params {
            match name {
                "status" => query.status = Some(CouponStatus::parse(value)?),
                "campaignId" => {
                    query.campaign_id = Some(
                        value
                            .parse()
                            .map_err(|_| InvalidField::new("campaignId", "must be a campaign id"))?,
                    )
                }
                "limit" => query.limit = page_limit(value)?,
                "cursor" => query.cursor = Some(Cursor::decode(value)?),
                _ => return Err(InvalidField::new("query", format!("unknown parameter {name}"))),
            }
        }
        Ok(query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coupon(now: DateTime<Utc>) -> Coupon {
        Coupon {
            id: 7,
            campaign_id: 1,
            campaign_name: "c".into(),
            partner_id: "p".into(),
            user_id: "u".into(),
            stored_status: CouponStatus::Issued,
            discount: Discount {
                kind: DiscountType::Percent,
                value: 15,
            },
            issued_at: now - chrono::Duration::days(1),
            expires_at: now + chrono::Duration::days(1),
            usage: None,
            hold: None,
        }
    }

    fn use_by(order: &str, amount: u64) -> UseCoupon {
        UseCoupon {
            user_id: UserId::parse("u").unwrap(),
            order_id: OrderId::try_from(order.to_owned()).unwrap(),
            order_amount: amount,
        }
    }

    #[test]
    fn discounts_follow_the_campaign() {
        let amount = Discount {
            kind: DiscountType::Amount,
            value: 1000,
        };
        assert_eq!(discount_amount(&amount, 700), 700);
        assert_eq!(discount_amount(&amount, 5000), 1000);
        let percent = Discount {
            kind: DiscountType::Percent,
            value: 15,
        };
        assert_eq!(discount_amount(&percent, 999), 149);
        assert_eq!(discount_amount(&percent, MAX_ORDER_AMOUNT), 150_000_000_000);
    }

    #[test]
    fn a_use_applies_once_per_order_and_refuses_others() {
        let now = Utc::now();
        let mut c = coupon(now);
        assert_eq!(
            decide_use(&c, "p", &use_by("o1", 1000), now).unwrap(),
            UseDecision::Apply { discount_amount: 150 }
        );
        c.usage = Some(Usage {
            order_id: "o1".into(),
            order_amount: 1000,
            discount_amount: 150,
            used_at: now,
        });
        assert_eq!(
            decide_use(&c, "p", &use_by("o1", 1), now).unwrap(),
            UseDecision::AlreadyDone
        );
        assert!(matches!(
            decide_use(&c, "p", &use_by("o2", 1), now),
            Err(CouponError::AlreadyUsed)
        ));
        assert!(matches!(
            decide_use(&c, "other", &use_by("o1", 1), now),
            Err(CouponError::NotFound)
        ));
        // Used stays used past its expiry.
        assert_eq!(c.status(now + chrono::Duration::days(2)), CouponStatus::Used);
    }

    #[test]
    fn an_expired_coupon_is_refused_whatever_its_stored_status() {
        let now = Utc::now();
        let c = coupon(now);
        let later = c.expires_at;
        assert_eq!(c.status(later), CouponStatus::Expired);
        assert!(matches!(
            decide_use(&c, "p", &use_by("o", 1), later),
            Err(CouponError::Expired)
        ));
    }

    #[test]
    fn a_cancel_reverts_the_orders_use_once() {
        let now = Utc::now();
        let mut c = coupon(now);
        let cancel = |order: &str| CancelUse {
            user_id: UserId::parse("u").unwrap(),
            order_id: OrderId::try_from(order.to_owned()).unwrap(),
        };
        assert!(matches!(
            decide_cancel(&c, "p", &cancel("o1"), None),
            Err(CouponError::NotUsed)
        ));
        assert_eq!(
            decide_cancel(&c, "p", &cancel("o1"), Some("o1")).unwrap(),
            CancelDecision::AlreadyDone
        );
        c.usage = Some(Usage {
            order_id: "o1".into(),
            order_amount: 10,
            discount_amount: 1,
            used_at: now,
        });
        assert_eq!(
            decide_cancel(&c, "p", &cancel("o1"), None).unwrap(),
            CancelDecision::Revert
        );
        assert!(matches!(
            decide_cancel(&c, "p", &cancel("o2"), None),
            Err(CouponError::NotUsed)
        ));
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_a_400() {
        let now = DateTime::from_timestamp_millis(1_795_420_000_123).unwrap();
        let cursor = Cursor { issued_at: now, id: 42 };
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
        let far = |millis: i64| URL_SAFE_NO_PAD.encode(format!("{millis}.1"));
        let (year_99999, year_minus_1) = (far(3_093_527_980_800_000), far(-62_198_755_200_000));
        for bad in [
            "",
            "!!",
            &URL_SAFE_NO_PAD.encode("x.1"),
            &URL_SAFE_NO_PAD.encode("1"),
            &year_99999,
            &year_minus_1,
        ] {
            assert_eq!(Cursor::decode(bad).unwrap_err().field, "cursor");
        }
    }

    #[test]
    fn queries_are_checked() {
        let q = CouponQuery::parse([("status", "USED"), ("limit", "100"), ("campaignId", "3")]).unwrap();
        assert_eq!(
            (q.status, q.limit, q.campaign_id),
            (Some(CouponStatus::Used), 100, Some(3))
        );
        assert_eq!(CouponQuery::parse([]).unwrap().limit, 50);
        for (name, value) in [
            ("limit", "0"),
            ("limit", "101"),
            ("status", "x"),
            ("campaignId", "-1"),
            ("x", "1"),
        ] {
            assert!(CouponQuery::parse([(name, value)]).is_err(), "{name}={value}");
        }
    }
}
