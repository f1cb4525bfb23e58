//! What each effect's event says: one constructor per event type, called by the storage of the
//! context whose transaction makes the effect (and by nothing else), so an event's shape is
//! written once. The `data` fields are the contract of `docs/openapi.yaml`'s `webhooks`; ids are
//! decimal strings, as everywhere in the API.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::domain::{EventType, NewEvent, instant};
use crate::coupons::domain::{Coupon, Usage};
use crate::issuance::domain::{RejectionReason, Reservation};
use crate::points::domain::Movement;
use crate::points::ledger::{PlannedEntry, Related};

fn event(
    partner: &str,
    kind: EventType,
    subject: String,
    once: bool,
    at: DateTime<Utc>,
    data: serde_json::Value,
) -> NewEvent {
    NewEvent {
        partner_id: partner.to_owned(),
        kind,
        once_key: once.then(|| format!("{}:{subject}", kind.as_str())),
        subject,
        occurred_at: at,
        data,
    }
}

/// A coupon recorded (by the writer, or granted by grading); once per coupon, however often its
/// message is delivered.
pub fn coupon_issued(
    partner: &str,
    coupon_id: u64,
    campaign_id: u64,
    user_id: &str,
    issued_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    at: DateTime<Utc>,
) -> NewEvent {
    event(
        partner,
        EventType::CouponIssued,
        coupon_id.to_string(),
        true,
        at,
        json!({
            "couponId": coupon_id.to_string(),
            "campaignId": campaign_id.to_string(),
            "userId": user_id,
            "issuedAt": instant(issued_at),
            "expiresAt": instant(expires_at),
        }),
    )
}

/// A reservation the writer refused; once per (campaign, user), as its rejection row.
pub fn coupon_rejected(r: &Reservation, reason: RejectionReason, at: DateTime<Utc>) -> NewEvent {
    event(
        &r.partner_id,
        EventType::CouponRejected,
        format!("{}:{}", r.campaign_id, r.user_id.as_str()),
        true,
        at,
        json!({
            "campaignId": r.campaign_id.to_string(),
            "userId": r.user_id.as_str(),
            "requestId": r.request_id.hyphenated().to_string(),
            "reason": reason.as_str(),
        }),
    )
}

pub fn coupon_used(coupon: &Coupon, usage: &Usage) -> NewEvent {
    event(
        &coupon.partner_id,
        EventType::CouponUsed,
        coupon.id.to_string(),
        false,
        usage.used_at,
        json!({
            "couponId": coupon.id.to_string(),
            "campaignId": coupon.campaign_id.to_string(),
            "userId": coupon.user_id,
            "orderId": usage.order_id,
            "orderAmount": usage.order_amount,
            "discountAmount": usage.discount_amount,
            "usedAt": instant(usage.used_at),
        }),
    )
}

pub fn coupon_use_cancelled(coupon: &Coupon, order_id: &str, at: DateTime<Utc>) -> NewEvent {
    event(
        &coupon.partner_id,
        EventType::CouponUseCancelled,
        coupon.id.to_string(),
        false,
        at,
        json!({
            "couponId": coupon.id.to_string(),
            "campaignId": coupon.campaign_id.to_string(),
            "userId": coupon.user_id,
            "orderId": order_id,
            "cancelledAt": instant(at),
        }),
    )
}

/// A coupon the expiry sweep marked EXPIRED; once per coupon.
pub fn coupon_expired(
    partner: &str,
    coupon_id: u64,
    campaign_id: u64,
    user_id: &str,
    expires_at: DateTime<Utc>,
    at: DateTime<Utc>,
) -> NewEvent {
    event(
        partner,
        EventType::CouponExpired,
        coupon_id.to_string(),
        true,
        at,
        json!({
            "couponId": coupon_id.to_string(),
            "campaignId": campaign_id.to_string(),
            "userId": user_id,
            "expiresAt": instant(expires_at),
        }),
    )
}

/// The event of a ledger entry of `user`'s wallet (`counterpart`: the other wallet of a
/// transfer), with the session variables its ids are set from (`own`: this side's principal
/// entry; `other`: the receiving side's): none for a transfer's receiving entry, which the
/// sending entry's `points.transferred` names.
pub fn ledger_entry(
    partner: &str,
    entry: &PlannedEntry,
    user: &str,
    counterpart: Option<&str>,
    own: &'static str,
    other: &'static str,
    at: DateTime<Utc>,
) -> Option<(NewEvent, Vec<(&'static str, &'static str)>)> {
    let amount = entry.amount.unsigned_abs();
    let id = |ids: Vec<(&'static str, &'static str)>| if entry.principal { ids } else { Vec::new() };
    let cancelled = match entry.related {
        Some(Related::Transaction(t)) => json!(t.to_string()),
        _ => serde_json::Value::Null,
    };
    Some(match entry.movement {
        Movement::Earn => (
            points_entry(
                partner,
                EventType::PointsEarned,
                user,
                amount,
                entry.balance_after,
                json!({ "reason": entry.reason }),
                at,
            ),
            id(vec![("transactionId", own)]),
        ),
        Movement::Use => (
            points_entry(
                partner,
                EventType::PointsUsed,
                user,
                amount,
                entry.balance_after,
                json!({ "orderId": entry.order_id }),
                at,
            ),
            id(vec![("transactionId", own)]),
        ),
        Movement::UseCancel => (
            points_entry(
                partner,
                EventType::PointsUseCancelled,
                user,
                amount,
                entry.balance_after,
                json!({ "cancelledTransactionId": cancelled }),
                at,
            ),
            id(vec![("transactionId", own)]),
        ),
        Movement::Expire => (
            points_entry(
                partner,
                EventType::PointsExpired,
                user,
                amount,
                entry.balance_after,
                json!({ "lotId": entry.lot_id.map(|l| l.to_string()) }),
                at,
            ),
            Vec::new(),
        ),
        Movement::TransferOut => (
            points_transferred(partner, user, counterpart.unwrap_or_default(), amount, at),
            id(vec![("transactionId", own), ("toTransactionId", other)]),
        ),
        Movement::TransferIn => return None,
    })
}

/// A points ledger entry the partner sees, by its movement. The entry's own id is not known
/// until its insert: the storage sets `transactionId` (and a transfer's `toTransactionId`) in
/// the same statement.
pub fn points_entry(
    partner: &str,
    kind: EventType,
    user_id: &str,
    amount: u64,
    balance_after: u64,
    extra: serde_json::Value,
    at: DateTime<Utc>,
) -> NewEvent {
    let mut data = json!({ "userId": user_id, "amount": amount, "balanceAfter": balance_after });
    if let (Some(data), serde_json::Value::Object(extra)) = (data.as_object_mut(), extra) {
        data.extend(extra);
    }
    event(partner, kind, user_id.to_owned(), false, at, data)
}

pub fn points_transferred(partner: &str, from: &str, to: &str, amount: u64, at: DateTime<Utc>) -> NewEvent {
    event(
        partner,
        EventType::PointsTransferred,
        from.to_owned(),
        false,
        at,
        json!({ "fromUserId": from, "toUserId": to, "amount": amount }),
    )
}

/// A grading run that finished; once per run.
pub fn grading_run_completed(partner: &str, run_id: u64, month: &str, users: u64, at: DateTime<Utc>) -> NewEvent {
    event(
        partner,
        EventType::GradingRunCompleted,
        run_id.to_string(),
        true,
        at,
        json!({ "runId": run_id.to_string(), "month": month, "users": users }),
    )
}
