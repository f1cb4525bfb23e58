//! The coupons context's use cases, over its port: any trigger (HTTP, a schedule) calls these.

use std::sync::Arc;
use std::time::Duration;

use super::domain::{CancelUse, Coupon, CouponId, CouponQuery, Cursor, UseCoupon};
use super::error::CouponError;
use super::ports::CouponRecords;
use crate::kernel::{Clock, SweepSummary, SystemClock, UserId, sweep_in_chunks};

/// A page of a user's coupons.
#[derive(Debug)]
pub struct CouponPage {
    pub coupons: Vec<Coupon>,
    pub next: Option<Cursor>,
}

pub struct CouponService<R> {
    records: R,
    clock: Arc<dyn Clock>,
}

impl<R: CouponRecords> CouponService<R> {
    pub fn new(records: R) -> Self {
        Self {
            records,
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

    /// The partner's coupon (another partner's is "not found").
    pub async fn get(&self, partner: &str, id: CouponId) -> Result<Coupon, CouponError> {
        match self.records.find(id).await? {
            Some(coupon) if coupon.partner_id == partner => Ok(coupon),
            _ => Err(CouponError::NotFound),
        }
    }

    pub async fn list(&self, partner: &str, user: &UserId, query: &CouponQuery) -> Result<CouponPage, CouponError> {
        let mut coupons = self.records.list(partner, user, query, self.now()).await?;
        let next = if coupons.len() > query.limit as usize {
            coupons.truncate(query.limit as usize);
            coupons.last().map(Cursor::after)
        } else {
            None
        };
        Ok(CouponPage { coupons, next })
    }

    pub async fn use_coupon(&self, partner: &str, id: CouponId, request: UseCoupon) -> Result<Coupon, CouponError> {
        let request = request.validate()?;
        let used = self.records.use_coupon(id, partner, &request, self.now()).await;
        let outcome = match &used {
            Ok(_) => "used",
            Err(CouponError::NotFound) => "not_found",
            Err(CouponError::AlreadyUsed) => "already_used",
            Err(CouponError::Expired) => "expired",
            Err(CouponError::Held) => "held",
            Err(CouponError::NotUsed | CouponError::Invalid(_)) => "invalid",
            Err(CouponError::Unavailable(_)) => "unavailable",
        };
        metrics::counter!("fcfs_coupon_uses_total", "outcome" => outcome).increment(1);
        let coupon = used?;
        tracing::info!(
            coupon_id = id,
            partner_id = partner,
            order_id = request.order_id.as_str(),
            "coupon used"
        );
        Ok(coupon)
    }

    pub async fn cancel_use(&self, partner: &str, id: CouponId, request: CancelUse) -> Result<Coupon, CouponError> {
        let coupon = self.records.cancel_use(id, partner, &request, self.now()).await?;
        tracing::info!(
            coupon_id = id,
            partner_id = partner,
            order_id = request.order_id.as_str(),
            "coupon use cancelled"
        );
        Ok(coupon)
    }

    /// Marks expired coupons in chunks of at most `chunk` rows (one transaction each) until none
    /// is left or `budget` is spent.
    pub async fn sweep_expired(&self, chunk: u32, budget: Duration) -> Result<SweepSummary, CouponError> {
        let now = self.now();
        Ok(sweep_in_chunks("coupon expiry", chunk, budget, |rows| {
            self.records.expire_batch(now, rows)
        })
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::testkit::{MemoryCoupons as Memory, coupon_fixture};

    fn coupon(id: u64, user: &str, expires_at: DateTime<Utc>) -> Coupon {
        coupon_fixture(id, "p", user, expires_at)
    }

    #[tokio::test]
    async fn a_page_says_where_the_next_one_starts_and_the_last_says_none() {
        let later = Utc::now() + chrono::Duration::days(1);
        let memory = Memory::default();
        *memory.coupons.lock().unwrap() = (1..=5).map(|id| coupon(id, "u", later)).collect();
        let service = CouponService::new(memory);
        let user = UserId::parse("u").unwrap();
        let mut query = CouponQuery::parse([("limit", "2")]).unwrap();
        let mut pages = Vec::new();
        loop {
            let page = service.list("p", &user, &query).await.unwrap();
            pages.push(page.coupons.iter().map(|c| c.id).collect::<Vec<_>>());
            match page.next {
                Some(next) => query.cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(pages, vec![vec![5, 4], vec![3, 2], vec![1]]);
        assert!(service.list("other", &user, &query).await.unwrap().coupons.is_empty());
    }

    #[tokio::test]
    async fn the_sweep_works_in_chunks_of_at_most_a_thousand_until_none_is_left() {
        let past = Utc::now() - chrono::Duration::seconds(1);
        let memory = Memory::default();
        *memory.coupons.lock().unwrap() = (1..=2_500).map(|id| coupon(id, "u", past)).collect();
        let service = CouponService::new(memory);
        let summary = service.sweep_expired(50_000, Duration::from_secs(60)).await.unwrap();
        assert_eq!(
            (summary.expired, summary.chunks, summary.out_of_time),
            (2_500, 3, false)
        );
        assert_eq!(
            *service.records.batches.lock().unwrap(),
            vec![1_000; 3],
            "chunk clamped to 1,000"
        );
        // A spent budget stops it; the next run carries on.
        let summary = service.sweep_expired(10, Duration::ZERO).await.unwrap();
        assert!(summary.out_of_time && summary.chunks == 0);
    }

    #[tokio::test]
    async fn another_partners_coupon_is_not_found() {
        let memory = Memory::default();
        *memory.coupons.lock().unwrap() = vec![coupon(1, "u", Utc::now())];
        let service = CouponService::new(memory);
        assert!(service.get("p", 1).await.is_ok());
        assert!(matches!(service.get("q", 1).await, Err(CouponError::NotFound)));
        assert!(matches!(service.get("p", 2).await, Err(CouponError::NotFound)));
    }
}
