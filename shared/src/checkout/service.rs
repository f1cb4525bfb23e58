//! The checkout context's use cases, over its ports: any trigger (HTTP, a schedule) calls these.

use std::sync::Arc;
use std::time::Duration;

use super::domain::{Hold, HoldId, PlaceHold, Preview, PreviewCheckout, Settle, preview};
use super::error::CheckoutError;
use super::ports::CheckoutRecords;
use crate::coupons::CouponError;
use crate::coupons::domain::decide_hold;
use crate::coupons::ports::CouponRecords;
use crate::kernel::{Clock, SweepSummary, SystemClock, sweep_in_chunks};
use crate::points::domain::Balance;
use crate::points::ports::PointRecords;

pub struct CheckoutService<H, C, P> {
    holds: H,
    coupons: C,
    points: P,
    clock: Arc<dyn Clock>,
}

impl<H: CheckoutRecords, C: CouponRecords, P: PointRecords> CheckoutService<H, C, P> {
    pub fn new(holds: H, coupons: C, points: P) -> Self {
        Self {
            holds,
            coupons,
            points,
            clock: Arc::new(SystemClock),
        }
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The clock's time at the database's precision (milliseconds), so an answer computed now
    /// equals the one a retry reads back.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::SubsecRound::trunc_subsecs(self.clock.now(), 3)
    }

    /// What would apply to the order now, from unlocked reads; nothing changes.
    pub async fn preview(&self, partner: &str, request: PreviewCheckout) -> Result<Preview, CheckoutError> {
        let request = request.validate()?;
        let now = self.now();
        let coupon = match request.coupon_id {
            Some(id) => {
                let decided = match self.coupons.find(id).await? {
                    Some(coupon) => decide_hold(&coupon, partner, &request.user_id, request.order_amount, now),
                    None => Err(CouponError::NotFound),
                };
                Some((id, decided.map_err(CheckoutError::from)))
            }
            None => None,
        };
        let lots = self.points.lots(partner, &request.user_id).await?;
        let held = self.points.holds(partner, &request.user_id).await?;
        let available = Balance::of(&lots, &held, now).available;
        Ok(preview(&request, coupon, available))
    }

    /// The hold (201), or the order's live hold asked the same way before (200).
    pub async fn place(&self, partner: &str, request: PlaceHold) -> Result<(Hold, bool), CheckoutError> {
        let request = request.validate()?;
        let placed = self.holds.place(partner, &request, self.now()).await;
        let outcome = match &placed {
            Ok((_, true)) => "held",
            Ok((_, false)) => "replayed",
            Err(e) if e.is_transient() => "unavailable",
            Err(_) => "refused",
        };
        metrics::counter!("fcfs_checkout_holds_total", "outcome" => outcome).increment(1);
        let (hold, created) = placed?;
        if created {
            tracing::info!(hold_id = hold.id, partner_id = partner, order_id = %hold.order_id, "checkout hold placed");
        }
        Ok((hold, created))
    }

    pub async fn get(&self, partner: &str, id: HoldId) -> Result<Hold, CheckoutError> {
        match self.holds.find(id).await? {
            Some(hold) if hold.partner_id == partner => Ok(hold),
            _ => Err(CheckoutError::HoldNotFound),
        }
    }

    pub async fn confirm(&self, partner: &str, id: HoldId) -> Result<Hold, CheckoutError> {
        self.settle(partner, id, Settle::Confirm).await
    }

    pub async fn release(&self, partner: &str, id: HoldId) -> Result<Hold, CheckoutError> {
        self.settle(partner, id, Settle::Release).await
    }

    async fn settle(&self, partner: &str, id: HoldId, asked: Settle) -> Result<Hold, CheckoutError> {
        let hold = self.holds.settle(partner, id, asked, self.now()).await?;
        tracing::info!(
            hold_id = id,
            partner_id = partner,
            ?asked,
            status = hold.stored_status.as_str(),
            "checkout hold settled"
        );
        Ok(hold)
    }

    /// Releases holds past their end, up to `chunk` found per round (each released in its own
    /// short transaction), until none is left or `budget` is spent.
    pub async fn sweep_ended(&self, chunk: u32, budget: Duration) -> Result<SweepSummary, CheckoutError> {
        let now = self.now();
        Ok(sweep_in_chunks("checkout holds", chunk, budget, |rows| async move {
            let ended = self.holds.ended(now, rows).await?;
            for (partner, id) in &ended {
                match self.holds.settle(partner, *id, Settle::Release, now).await {
                    Ok(_) => {}
                    Err(CheckoutError::Unavailable(e)) => return Err(e),
                    Err(other) => tracing::warn!(hold_id = id, error = %other, "ended hold not released"),
                }
            }
            Ok(ended.len() as u64)
        })
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::Duration as Span;

    use super::*;
    use crate::checkout::domain::HoldStatus;
    use crate::coupons::domain::{CouponStatus, OrderId, UseCoupon};
    use crate::kernel::UserId;
    use crate::points::PointsService;
    use crate::points::domain::{EarnPoints, IdempotencyKey, Movement};
    use crate::testkit::{ManualClock, MemoryCheckout, MemoryCoupons, MemoryPoints, coupon_fixture};

    type Service = CheckoutService<Arc<MemoryCheckout>, Arc<MemoryCoupons>, Arc<MemoryPoints>>;

    struct World {
        clock: Arc<ManualClock>,
        memory: Arc<MemoryCheckout>,
        checkout: Service,
        points: PointsService<Arc<MemoryPoints>>,
    }

    /// Coupon 1 (AMOUNT 5, user "u", valid for a day) and `points` earned by "u", expiring in
    /// `points_minutes`.
    async fn world(points: u64, points_minutes: i64) -> World {
        let clock = Arc::new(ManualClock::default());
        let memory = Arc::new(MemoryCheckout::default());
        let now = clock.now();
        *memory.coupons.coupons.lock().unwrap() = vec![coupon_fixture(1, "p", "u", now + Span::days(1))];
        let points_service = PointsService::new(memory.points.clone()).with_clock(clock.clone());
        if points > 0 {
            let earn = EarnPoints {
                amount: points,
                reason: "r".into(),
                expires_at: Some(now + Span::minutes(points_minutes)),
            };
            points_service
                .earn("p", user(), &IdempotencyKey::parse(Some("e")).unwrap(), earn)
                .await
                .unwrap();
        }
        let checkout = CheckoutService::new(memory.clone(), memory.coupons.clone(), memory.points.clone())
            .with_clock(clock.clone());
        World {
            clock,
            memory,
            checkout,
            points: points_service,
        }
    }

    fn user() -> UserId {
        UserId::parse("u").unwrap()
    }

    fn hold(order: &str, coupon: Option<u64>, points: Option<u64>, ttl: Option<u32>) -> PlaceHold {
        PlaceHold {
            user_id: user(),
            order_id: OrderId::try_from(order.to_owned()).unwrap(),
            order_amount: 100,
            coupon_id: coupon,
            points,
            ttl_seconds: ttl,
        }
    }

    impl World {
        async fn coupon_status(&self) -> CouponStatus {
            let coupon = self.memory.coupons.coupons.lock().unwrap()[0].clone();
            coupon.status(self.checkout.now())
        }

        async fn balance(&self) -> (u64, u64) {
            let b = self.points.balance("p", &user()).await.unwrap();
            (b.available, b.held)
        }

        fn movements(&self) -> Vec<Movement> {
            self.memory
                .points
                .entries("p", "u")
                .iter()
                .map(|e| e.movement)
                .collect()
        }
    }

    #[tokio::test]
    async fn a_hold_takes_coupon_and_points_and_a_confirm_spends_them_as_a_use_does() {
        let w = world(50, 1_440).await;
        let (held, created) = w
            .checkout
            .place("p", hold("o1", Some(1), Some(30), None))
            .await
            .unwrap();
        assert!(created);
        assert_eq!((held.discount, held.points, held.payable()), (5, 30, 65));
        assert_eq!(w.coupon_status().await, CouponStatus::Held);
        assert_eq!(w.balance().await, (20, 30));
        // The held use is settled by the hold only, never by a points cancel.
        let cancel = w
            .points
            .cancel(
                "p",
                held.points_transaction.unwrap(),
                &IdempotencyKey::parse(Some("c")).unwrap(),
            )
            .await;
        assert!(matches!(cancel, Err(crate::points::PointsError::NotCancellable)));
        let confirmed = w.checkout.confirm("p", held.id).await.unwrap();
        assert_eq!(confirmed.stored_status, HoldStatus::Confirmed);
        assert_eq!(w.coupon_status().await, CouponStatus::Used);
        assert_eq!(w.balance().await, (20, 0));
        assert_eq!(w.movements(), vec![Movement::Earn, Movement::Use]);
        // Retries answer the settled state and change nothing.
        assert_eq!(w.checkout.confirm("p", held.id).await.unwrap(), confirmed);
        assert!(matches!(
            w.checkout.release("p", held.id).await,
            Err(CheckoutError::HoldConfirmed)
        ));
        let (again, created) = w
            .checkout
            .place("p", hold("o1", Some(1), Some(30), None))
            .await
            .unwrap();
        assert_eq!((again.id, created), (held.id, false));
        assert!(matches!(
            w.checkout.place("p", hold("o1", Some(1), Some(31), None)).await,
            Err(CheckoutError::OrderHeld)
        ));
        assert!(matches!(
            w.checkout.get("q", held.id).await,
            Err(CheckoutError::HoldNotFound)
        ));
    }

    #[tokio::test]
    async fn a_release_gives_both_back_and_the_order_can_be_held_again() {
        let w = world(50, 1_440).await;
        let (held, _) = w
            .checkout
            .place("p", hold("o1", Some(1), Some(30), None))
            .await
            .unwrap();
        assert!(matches!(
            w.checkout.place("p", hold("o2", Some(1), None, None)).await,
            Err(CheckoutError::Coupon(CouponError::Held))
        ));
        let use_it = UseCoupon {
            user_id: user(),
            order_id: OrderId::try_from("o3".to_owned()).unwrap(),
            order_amount: 10,
        };
        let one_step = crate::coupons::CouponService::new(w.memory.coupons.clone()).with_clock(w.clock.clone());
        assert!(matches!(
            one_step.use_coupon("p", 1, use_it).await,
            Err(CouponError::Held)
        ));
        let released = w.checkout.release("p", held.id).await.unwrap();
        assert_eq!(released.stored_status, HoldStatus::Released);
        assert!(matches!(
            w.checkout.confirm("p", held.id).await,
            Err(CheckoutError::HoldReleased)
        ));
        assert_eq!(w.coupon_status().await, CouponStatus::Issued);
        assert_eq!(w.balance().await, (50, 0));
        assert_eq!(w.movements(), vec![Movement::Earn, Movement::Use, Movement::UseCancel]);
        let (again, created) = w
            .checkout
            .place("p", hold("o1", Some(1), Some(30), None))
            .await
            .unwrap();
        assert!(created && again.id != held.id);
    }

    #[tokio::test]
    async fn coupon_and_points_are_held_together_or_not_at_all() {
        let w = world(10, 1_440).await;
        assert!(matches!(
            w.checkout.place("p", hold("o1", Some(1), Some(11), None)).await,
            Err(CheckoutError::InsufficientPoints)
        ));
        // Points past what the coupon leaves: the points were held before the coupon; both undone.
        let mut too_many = hold("o1", Some(1), Some(10), None);
        too_many.order_amount = 12;
        assert!(matches!(
            w.checkout.place("p", too_many).await,
            Err(CheckoutError::Invalid(f)) if f.field == "points"
        ));
        assert_eq!(w.coupon_status().await, CouponStatus::Issued);
        assert_eq!(w.balance().await, (10, 0));
        assert_eq!(w.movements(), vec![Movement::Earn]);
        assert!(w.memory.holds.lock().await.is_empty());
    }

    #[tokio::test]
    async fn an_ended_hold_reads_released_at_once_and_cannot_be_confirmed() {
        let w = world(50, 1_440).await;
        let (held, _) = w
            .checkout
            .place("p", hold("o1", Some(1), Some(30), Some(30)))
            .await
            .unwrap();
        w.clock.advance(Span::milliseconds(29_999));
        assert_eq!(w.coupon_status().await, CouponStatus::Held);
        w.clock.advance(Span::milliseconds(1));
        assert_eq!(
            w.checkout.get("p", held.id).await.unwrap().status(w.checkout.now()),
            HoldStatus::Expired
        );
        assert_eq!(w.coupon_status().await, CouponStatus::Issued);
        assert_eq!(w.balance().await, (50, 0), "released for every reader at once");
        assert!(matches!(
            w.checkout.confirm("p", held.id).await,
            Err(CheckoutError::HoldExpired)
        ));
        // A write of the wallet releases its part before it writes.
        let key = IdempotencyKey::parse(Some("u1")).unwrap();
        let spend = crate::points::domain::UsePoints {
            amount: 50,
            order_id: OrderId::try_from("o9".to_owned()).unwrap(),
            reason: None,
        };
        assert_eq!(w.points.use_points("p", user(), &key, spend).await.unwrap().balance, 0);
        let summary = w
            .checkout
            .sweep_ended(100, std::time::Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(summary.expired, 1);
        assert_eq!(
            w.checkout.get("p", held.id).await.unwrap().stored_status,
            HoldStatus::Expired
        );
        assert_eq!(
            w.movements(),
            vec![Movement::Earn, Movement::Use, Movement::UseCancel, Movement::Use]
        );
        assert_eq!(
            w.checkout
                .sweep_ended(100, std::time::Duration::from_secs(5))
                .await
                .unwrap()
                .expired,
            0
        );
    }

    #[tokio::test]
    async fn held_points_whose_lot_lapses_stay_held_and_expire_once_released() {
        let w = world(50, 10).await;
        let (held, _) = w
            .checkout
            .place("p", hold("o1", None, Some(30), Some(1_800)))
            .await
            .unwrap();
        w.clock.advance(Span::minutes(11));
        // The lot's time passed during the hold: what is held stays held, the rest is gone.
        assert_eq!(w.balance().await, (0, 30));
        let released = w.checkout.release("p", held.id).await.unwrap();
        assert_eq!(released.stored_status, HoldStatus::Released);
        assert_eq!(w.balance().await, (0, 0));
        // The lot's unheld 20 expire first, then the held 30 come back and expire at once.
        assert_eq!(
            w.movements(),
            vec![
                Movement::Earn,
                Movement::Use,
                Movement::Expire,
                Movement::UseCancel,
                Movement::Expire
            ]
        );
    }

    #[tokio::test]
    async fn a_preview_changes_nothing() {
        let w = world(50, 1_440).await;
        let request = crate::checkout::domain::PreviewCheckout {
            user_id: user(),
            order_amount: 100,
            coupon_id: Some(1),
            points: Some(20),
        };
        let seen = w.checkout.preview("p", request.clone()).await.unwrap();
        assert_eq!((seen.discount, seen.points.applied, seen.payable), (5, 20, 75));
        assert_eq!(w.coupon_status().await, CouponStatus::Issued);
        w.checkout.place("p", hold("o1", Some(1), None, None)).await.unwrap();
        let seen = w.checkout.preview("p", request).await.unwrap();
        assert_eq!(seen.coupon.unwrap().reason, Some("COUPON_HELD"));
    }
}
