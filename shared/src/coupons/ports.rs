//! What the coupons context needs from the outside: the coupon records.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::domain::{CancelUse, Coupon, CouponId, CouponQuery, UseCoupon};
use super::error::CouponError;
use crate::kernel::{TxError, Unavailable, UserId};

#[async_trait]
pub trait CouponRecords: Send + Sync {
    /// The coupon, whoever holds it (the caller checks ownership).
    async fn find(&self, id: CouponId) -> Result<Option<Coupon>, Unavailable>;

    /// The user's coupons of this partner matching `query`, newest first, at most `query.limit`
    /// (+1, so the caller knows whether there is a next page). `now` decides what is expired.
    async fn list(
        &self,
        partner: &str,
        user: &UserId,
        query: &CouponQuery,
        now: DateTime<Utc>,
    ) -> Result<Vec<Coupon>, Unavailable>;

    /// In one short transaction: lock the coupon row, decide with `domain::decide_use`, apply and
    /// record it in the history. The coupon as it is after.
    async fn use_coupon(
        &self,
        id: CouponId,
        partner: &str,
        request: &UseCoupon,
        now: DateTime<Utc>,
    ) -> Result<Coupon, CouponError>;

    /// The same for a cancel (`domain::decide_cancel`).
    async fn cancel_use(
        &self,
        id: CouponId,
        partner: &str,
        request: &CancelUse,
        now: DateTime<Utc>,
    ) -> Result<Coupon, CouponError>;

    /// Marks up to `max_rows` ISSUED coupons past their time as EXPIRED in one transaction,
    /// skipping rows a use holds; how many it marked.
    async fn expire_batch(&self, now: DateTime<Utc>, max_rows: u32) -> Result<u64, Unavailable>;
}

/// A coupon to hold for an order being paid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldCoupon {
    pub hold_id: u64,
    pub partner: String,
    pub user: UserId,
    pub order_id: String,
    pub order_amount: u64,
    pub until: DateTime<Utc>,
}

/// Coupons held for orders, inside the checkout context's transaction `Tx`: only the coupons
/// context's storage writes coupons and their history; this is how checkout asks it to. Each call
/// locks the coupon row. The outer error is the transaction's (start over, or unavailable); the
/// inner one the coupon rules' answer.
#[async_trait]
pub trait CouponHolds<Tx: Send>: Send + Sync {
    /// `domain::decide_hold`, and the hold recorded on the coupon: the discount it gives.
    async fn hold_coupon(
        &self,
        tx: &mut Tx,
        id: CouponId,
        hold: &HoldCoupon,
        now: DateTime<Utc>,
    ) -> Result<Result<u64, CouponError>, TxError>;

    /// `domain::decide_confirm_hold`: the coupon USED by the hold's order, in its history.
    async fn confirm_coupon_hold(
        &self,
        tx: &mut Tx,
        id: CouponId,
        hold_id: u64,
        now: DateTime<Utc>,
    ) -> Result<Result<(), CouponError>, TxError>;

    /// The hold taken off the coupon, if the coupon still names it.
    async fn release_coupon_hold(&self, tx: &mut Tx, id: CouponId, hold_id: u64) -> Result<(), TxError>;
}
