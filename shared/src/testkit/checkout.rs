//! Checkout holds in memory: the hold rows as a list, the coupon and the points through their
//! contexts' in-memory `CouponHolds` and `PointHolds`, every decision by the checkout, coupon and
//! ledger rules the MySQL records run. A write that is refused midway restores the coupons and
//! wallets it touched, as a rolled-back transaction does.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{MemoryCoupons, MemoryPoints};
use crate::checkout::CheckoutError;
use crate::checkout::domain::{
    Hold, HoldId, HoldStatus, PlaceHold, Placement, Settle, Settlement, decide_place, decide_settle, terms,
};
use crate::checkout::ports::CheckoutRecords;
use crate::coupons::CouponError;
use crate::coupons::domain::{
    CancelUse, Coupon, CouponHold, CouponId, CouponQuery, UseCoupon, decide_confirm_hold, decide_hold, releases,
};
use crate::coupons::ports::{CouponHolds, CouponRecords, HoldCoupon};
use crate::kernel::{TxError, Unavailable, UserId};
use crate::points::PointsError;
use crate::points::domain::{Entry, HeldPoints, HistoryQuery, IdempotencyKey, Lot, Operation};
use crate::points::ports::{Applied, PointHolds, PointRecords};

#[derive(Default)]
pub struct MemoryCheckout {
    /// One checkout write at a time, as the hold row's lock makes them.
    pub holds: tokio::sync::Mutex<Vec<Hold>>,
    pub coupons: Arc<MemoryCoupons>,
    pub points: Arc<MemoryPoints>,
}

impl MemoryCheckout {
    fn snapshot(&self) -> (Vec<Coupon>, super::Tables) {
        (
            self.coupons.coupons.lock().unwrap().clone(),
            self.points.state.lock().unwrap().clone(),
        )
    }

    fn restore(&self, (coupons, tables): (Vec<Coupon>, super::Tables)) {
        *self.coupons.coupons.lock().unwrap() = coupons;
        *self.points.state.lock().unwrap() = tables;
    }

    async fn release(&self, hold: &mut Hold, status: HoldStatus, now: DateTime<Utc>) -> Result<(), TxError> {
        if let Some(transaction) = hold.points_transaction {
            self.points.release_points_hold(&mut (), transaction, now).await?;
        }
        if let Some(coupon) = hold.coupon_id {
            self.coupons.release_coupon_hold(&mut (), coupon, hold.id).await?;
        }
        hold.stored_status = status;
        hold.settled_at = Some(now);
        Ok(())
    }

    async fn confirm(&self, hold: &mut Hold, now: DateTime<Utc>) -> Result<(), CheckoutError> {
        if let Some(transaction) = hold.points_transaction
            && !self.points.confirm_points_hold(&mut (), transaction).await?
        {
            return Err(CheckoutError::HoldExpired);
        }
        if let Some(coupon) = hold.coupon_id
            && self
                .coupons
                .confirm_coupon_hold(&mut (), coupon, hold.id, now)
                .await?
                .is_err()
        {
            return Err(CheckoutError::HoldExpired);
        }
        hold.stored_status = HoldStatus::Confirmed;
        hold.settled_at = Some(now);
        Ok(())
    }

    async fn place_in(
        &self,
        holds: &mut Vec<Hold>,
        partner: &str,
        request: &PlaceHold,
        now: DateTime<Utc>,
    ) -> Result<(Hold, bool), CheckoutError> {
        let fingerprint = request.fingerprint();
        let live = holds.iter().position(|h| {
            h.partner_id == partner
                && h.order_id == request.order_id.as_str()
                && matches!(h.stored_status, HoldStatus::Pending | HoldStatus::Confirmed)
        });
        match decide_place(live.map(|i| &holds[i]), &fingerprint, now)? {
            Placement::Replay => return Ok((holds[live.unwrap_or_default()].clone(), false)),
            Placement::ReleaseEndedThenPlace => {
                let mut ended = holds[live.unwrap_or_default()].clone();
                self.release(&mut ended, HoldStatus::Expired, now).await?;
                holds[live.unwrap_or_default()] = ended;
            }
            Placement::Place => {}
        }
        let id = holds.len() as HoldId + 1;
        let expires_at = request.expires_at(now);
        let points = request.points.unwrap_or(0);
        let points_transaction = match request.points {
            Some(amount) => Some(
                self.points
                    .hold_points(
                        &mut (),
                        partner,
                        &request.user_id,
                        amount,
                        &request.order_id,
                        expires_at,
                        now,
                    )
                    .await??,
            ),
            None => None,
        };
        let discount = match request.coupon_id {
            Some(coupon) => {
                let hold = HoldCoupon {
                    hold_id: id,
                    partner: partner.to_owned(),
                    user: request.user_id.clone(),
                    order_id: request.order_id.as_str().to_owned(),
                    order_amount: request.order_amount,
                    until: expires_at,
                };
                self.coupons.hold_coupon(&mut (), coupon, &hold, now).await??
            }
            None => 0,
        };
        let terms = terms(request.order_amount, discount, points)?;
        let hold = Hold::placed(id, partner, request, terms, points_transaction, now);
        holds.push(hold.clone());
        Ok((hold, true))
    }
}

#[async_trait]
impl CheckoutRecords for MemoryCheckout {
    async fn place(
        &self,
        partner: &str,
        request: &PlaceHold,
        now: DateTime<Utc>,
    ) -> Result<(Hold, bool), CheckoutError> {
        let mut holds = self.holds.lock().await;
        let (before, rows) = (self.snapshot(), holds.clone());
        let placed = self.place_in(&mut holds, partner, request, now).await;
        if placed.is_err() {
            self.restore(before);
            *holds = rows;
        }
        placed
    }

    async fn find(&self, id: HoldId) -> Result<Option<Hold>, Unavailable> {
        Ok(self.holds.lock().await.iter().find(|h| h.id == id).cloned())
    }

    async fn settle(
        &self,
        partner: &str,
        id: HoldId,
        asked: Settle,
        now: DateTime<Utc>,
    ) -> Result<Hold, CheckoutError> {
        let mut holds = self.holds.lock().await;
        let Some(index) = holds.iter().position(|h| h.id == id && h.partner_id == partner) else {
            return Err(CheckoutError::HoldNotFound);
        };
        let mut hold = holds[index].clone();
        let before = self.snapshot();
        let settled = match decide_settle(&hold, asked, now)? {
            Settlement::Confirm => self.confirm(&mut hold, now).await,
            Settlement::Release(status) => self.release(&mut hold, status, now).await.map_err(CheckoutError::from),
            Settlement::AlreadyDone => Ok(()),
        };
        if let Err(e) = settled {
            self.restore(before);
            return Err(e);
        }
        holds[index] = hold.clone();
        Ok(hold)
    }

    async fn ended(&self, now: DateTime<Utc>, max: u32) -> Result<Vec<(String, HoldId)>, Unavailable> {
        let holds = self.holds.lock().await;
        let mut ended: Vec<&Hold> = holds
            .iter()
            .filter(|h| h.stored_status == HoldStatus::Pending && h.expires_at <= now)
            .collect();
        ended.sort_by_key(|h| (h.expires_at, h.id));
        Ok(ended
            .into_iter()
            .take(max as usize)
            .map(|h| (h.partner_id.clone(), h.id))
            .collect())
    }
}

/// Coupons held in memory: the coupon rules decide, the coupon row changes as the MySQL records
/// change it.
#[async_trait]
impl CouponHolds<()> for MemoryCoupons {
    async fn hold_coupon(
        &self,
        _: &mut (),
        id: CouponId,
        hold: &HoldCoupon,
        now: DateTime<Utc>,
    ) -> Result<Result<u64, CouponError>, TxError> {
        let mut coupons = self.coupons.lock().unwrap();
        let Some(coupon) = coupons.iter_mut().find(|c| c.id == id) else {
            return Ok(Err(CouponError::NotFound));
        };
        Ok(
            decide_hold(coupon, &hold.partner, &hold.user, hold.order_amount, now).inspect(|_| {
                coupon.hold = Some(CouponHold {
                    hold_id: hold.hold_id,
                    order_id: hold.order_id.clone(),
                    order_amount: hold.order_amount,
                    until: hold.until,
                });
            }),
        )
    }

    async fn confirm_coupon_hold(
        &self,
        _: &mut (),
        id: CouponId,
        hold_id: u64,
        now: DateTime<Utc>,
    ) -> Result<Result<(), CouponError>, TxError> {
        let mut coupons = self.coupons.lock().unwrap();
        let Some(coupon) = coupons.iter_mut().find(|c| c.id == id) else {
            return Ok(Err(CouponError::NotFound));
        };
        Ok(decide_confirm_hold(coupon, hold_id, now).map(|usage| {
            coupon.usage = Some(usage);
            coupon.stored_status = crate::coupons::domain::CouponStatus::Used;
            coupon.hold = None;
        }))
    }

    async fn release_coupon_hold(&self, _: &mut (), id: CouponId, hold_id: u64) -> Result<(), TxError> {
        if let Some(coupon) = self.coupons.lock().unwrap().iter_mut().find(|c| c.id == id)
            && releases(coupon, hold_id)
        {
            coupon.hold = None;
        }
        Ok(())
    }
}

/// A fake shared by the checkout fake and a service (`Arc<MemoryCoupons>`) answers as itself.
#[async_trait]
impl CouponRecords for Arc<MemoryCoupons> {
    async fn find(&self, id: CouponId) -> Result<Option<Coupon>, Unavailable> {
        self.as_ref().find(id).await
    }

    async fn list(
        &self,
        partner: &str,
        user: &UserId,
        query: &CouponQuery,
        now: DateTime<Utc>,
    ) -> Result<Vec<Coupon>, Unavailable> {
        self.as_ref().list(partner, user, query, now).await
    }

    async fn use_coupon(
        &self,
        id: CouponId,
        partner: &str,
        request: &UseCoupon,
        now: DateTime<Utc>,
    ) -> Result<Coupon, CouponError> {
        self.as_ref().use_coupon(id, partner, request, now).await
    }

    async fn cancel_use(
        &self,
        id: CouponId,
        partner: &str,
        request: &CancelUse,
        now: DateTime<Utc>,
    ) -> Result<Coupon, CouponError> {
        self.as_ref().cancel_use(id, partner, request, now).await
    }

    async fn expire_batch(&self, now: DateTime<Utc>, max_rows: u32) -> Result<u64, Unavailable> {
        self.as_ref().expire_batch(now, max_rows).await
    }
}

/// A fake shared by the checkout fake and a service (`Arc<MemoryPoints>`) answers as itself.
#[async_trait]
impl PointRecords for Arc<MemoryPoints> {
    async fn apply(
        &self,
        partner: &str,
        key: &IdempotencyKey,
        operation: &Operation,
        now: DateTime<Utc>,
        records_allowed: u64,
    ) -> Result<Applied, PointsError> {
        self.as_ref().apply(partner, key, operation, now, records_allowed).await
    }

    async fn validity_days(&self, partner: &str) -> Result<Option<u32>, Unavailable> {
        self.as_ref().validity_days(partner).await
    }

    async fn lots(&self, partner: &str, user: &UserId) -> Result<Vec<Lot>, Unavailable> {
        self.as_ref().lots(partner, user).await
    }

    async fn holds(&self, partner: &str, user: &UserId) -> Result<Vec<HeldPoints>, Unavailable> {
        self.as_ref().holds(partner, user).await
    }

    async fn history(&self, partner: &str, user: &UserId, query: &HistoryQuery) -> Result<Vec<Entry>, Unavailable> {
        self.as_ref().history(partner, user, query).await
    }

    async fn expire_batch(&self, now: DateTime<Utc>, max_lots: u32) -> Result<u64, Unavailable> {
        self.as_ref().expire_batch(now, max_lots).await
    }

    async fn prune_keys(&self, now: DateTime<Utc>, max_records: u32) -> Result<u64, Unavailable> {
        self.as_ref().prune_keys(now, max_records).await
    }
}

/// The checkout fake shared with the test that inspects it (`Arc<MemoryCheckout>`) answers as itself.
#[async_trait]
impl CheckoutRecords for Arc<MemoryCheckout> {
    async fn place(
        &self,
        partner: &str,
        request: &PlaceHold,
        now: DateTime<Utc>,
    ) -> Result<(Hold, bool), CheckoutError> {
        self.as_ref().place(partner, request, now).await
    }

    async fn find(&self, id: HoldId) -> Result<Option<Hold>, Unavailable> {
        self.as_ref().find(id).await
    }

    async fn settle(
        &self,
        partner: &str,
        id: HoldId,
        asked: Settle,
        now: DateTime<Utc>,
    ) -> Result<Hold, CheckoutError> {
        self.as_ref().settle(partner, id, asked, now).await
    }

    async fn ended(&self, now: DateTime<Utc>, max: u32) -> Result<Vec<(String, HoldId)>, Unavailable> {
        self.as_ref().ended(now, max).await
    }
}
