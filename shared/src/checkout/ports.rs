//! What the checkout context needs from the outside: the hold records. The coupon and the points
//! a hold holds are the coupons' and the points' contexts' own (`CouponHolds`, `PointHolds`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::domain::{Hold, HoldId, PlaceHold, Settle};
use super::error::CheckoutError;
use crate::kernel::Unavailable;

#[async_trait]
pub trait CheckoutRecords: Send + Sync {
    /// In one short transaction, locking the hold row, then the wallet, then the coupon (the one
    /// lock order of every checkout write): the order's live hold is answered again if it was
    /// asked the same way (`OrderHeld` if not) and released first if it has ended; otherwise the
    /// hold is made, its points held (`PointHolds`), its coupon held (`CouponHolds`) and the terms
    /// checked (`domain::terms`), all or nothing. The hold, and whether this call made it.
    async fn place(
        &self,
        partner: &str,
        request: &PlaceHold,
        now: DateTime<Utc>,
    ) -> Result<(Hold, bool), CheckoutError>;

    /// The hold, whoever's it is (the caller checks the partner).
    async fn find(&self, id: HoldId) -> Result<Option<Hold>, Unavailable>;

    /// In one short transaction: lock the hold, decide with `domain::decide_settle`, and confirm
    /// or release its points and coupon through their contexts' ports. The hold after.
    async fn settle(&self, partner: &str, id: HoldId, asked: Settle, now: DateTime<Utc>)
    -> Result<Hold, CheckoutError>;

    /// Up to `max` holds still PENDING past their end, oldest end first: (partner, hold).
    async fn ended(&self, now: DateTime<Utc>, max: u32) -> Result<Vec<(String, HoldId)>, Unavailable>;
}
