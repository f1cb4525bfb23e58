//! The coupons context's storage of checkout holds (`CouponHolds`), inside the checkout
//! context's transaction: the coupon row locked, the coupon rules decide, the row and its history
//! written. Nothing here decides.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::MySqlConnection;

use super::super::{MySqlOutbox, MySqlStore, tx_error};
use super::{append_history, lock_coupon};
use crate::coupons::CouponError;
use crate::coupons::domain::{CouponId, decide_confirm_hold, decide_hold, releases};
use crate::coupons::ports::{CouponHolds, HoldCoupon};
use crate::events::catalog;
use crate::events::ports::Outbox;
use crate::kernel::TxError;

#[async_trait]
impl CouponHolds<MySqlConnection> for MySqlStore {
    async fn hold_coupon(
        &self,
        tx: &mut MySqlConnection,
        id: CouponId,
        hold: &HoldCoupon,
        now: DateTime<Utc>,
    ) -> Result<Result<u64, CouponError>, TxError> {
        let Some(coupon) = lock_coupon(tx, id).await.map_err(tx_error)? else {
            return Ok(Err(CouponError::NotFound));
        };
        let discount = match decide_hold(&coupon, &hold.partner, &hold.user, hold.order_amount, now) {
            Ok(discount) => discount,
            Err(refused) => return Ok(Err(refused)),
        };
        sqlx::query("UPDATE coupons SET hold_id = ?, held_order_id = ?, held_amount = ?, held_until = ? WHERE id = ?")
            .bind(hold.hold_id)
            .bind(&hold.order_id)
            .bind(hold.order_amount)
            .bind(hold.until.naive_utc())
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(tx_error)?;
        Ok(Ok(discount))
    }

    async fn confirm_coupon_hold(
        &self,
        tx: &mut MySqlConnection,
        id: CouponId,
        hold_id: u64,
        now: DateTime<Utc>,
    ) -> Result<Result<(), CouponError>, TxError> {
        let Some(coupon) = lock_coupon(tx, id).await.map_err(tx_error)? else {
            return Ok(Err(CouponError::NotFound));
        };
        let usage = match decide_confirm_hold(&coupon, hold_id, now) {
            Ok(usage) => usage,
            Err(refused) => return Ok(Err(refused)),
        };
        sqlx::query(
            "UPDATE coupons SET status = 'USED', used_at = ?, order_id = ?, order_amount = ?, discount_amount = ?, \
             hold_id = NULL, held_order_id = NULL, held_amount = NULL, held_until = NULL WHERE id = ?",
        )
        .bind(usage.used_at.naive_utc())
        .bind(&usage.order_id)
        .bind(usage.order_amount)
        .bind(usage.discount_amount)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(tx_error)?;
        append_history(tx, &coupon, "USE", &usage).await.map_err(tx_error)?;
        MySqlOutbox
            .append(tx, &[catalog::coupon_used(&coupon, &usage)])
            .await
            .map_err(TxError::Unavailable)?;
        Ok(Ok(()))
    }

    async fn release_coupon_hold(&self, tx: &mut MySqlConnection, id: CouponId, hold_id: u64) -> Result<(), TxError> {
        let coupon = lock_coupon(tx, id).await.map_err(tx_error)?;
        if !coupon.is_some_and(|c| releases(&c, hold_id)) {
            return Ok(());
        }
        sqlx::query("UPDATE coupons SET hold_id = NULL, held_order_id = NULL, held_amount = NULL, held_until = NULL WHERE id = ?")
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(tx_error)?;
        Ok(())
    }
}
