//! The expiry sweep on a schedule: the coupons context's `sweep_expired`, in chunks of
//! `EXPIRY_CHUNK_ROWS` (at most 1,000) per transaction, within `EXPIRY_BUDGET_SECS`; then the
//! checkout holds past their end released (`CheckoutService::sweep_ended`, each hold its own
//! transaction) within the same budget. Both are what reads already see: the sweep only writes it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fcfs_shared::adapters::mysql::{self, MySqlStore};
use fcfs_shared::checkout::CheckoutService;
use fcfs_shared::checkout::ports::CheckoutRecords;
use fcfs_shared::config::{Settings, StartupError};
use fcfs_shared::coupons::ports::CouponRecords;
use fcfs_shared::coupons::{CouponError, CouponService, SweepSummary};
use fcfs_shared::kernel::{MAX_SWEEP_CHUNK, Unavailable};
use fcfs_shared::points::ports::PointRecords;
use serde::Serialize;

/// What one run did: the coupons' sweep (its fields at the top, as before holds existed) and the
/// holds'.
#[derive(Debug, Serialize)]
pub struct ExpirySummary {
    #[serde(flatten)]
    pub coupons: SweepSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holds: Option<SweepSummary>,
}

/// The release of ended checkout holds, whatever stores serve it.
#[async_trait]
pub trait HoldSweep: Send + Sync {
    async fn sweep(&self, chunk: u32, budget: Duration) -> Result<SweepSummary, Unavailable>;
}

#[async_trait]
impl<H: CheckoutRecords, C: CouponRecords, P: PointRecords> HoldSweep for CheckoutService<H, C, P> {
    async fn sweep(&self, chunk: u32, budget: Duration) -> Result<SweepSummary, Unavailable> {
        self.sweep_ended(chunk, budget)
            .await
            .map_err(|e| Unavailable::new("checkout", e))
    }
}

/// Ended holds released per round: each in its own short transaction.
const HOLDS_PER_ROUND: u32 = 100;

pub struct CouponExpiry<R> {
    coupons: CouponService<R>,
    holds: Option<Arc<dyn HoldSweep>>,
    chunk: u32,
    budget: Duration,
}

impl CouponExpiry<MySqlStore> {
    pub fn from_settings(settings: &Settings, sdk: &aws_config::SdkConfig) -> Result<Self, StartupError> {
        let store = mysql::store_from(settings, sdk)?;
        let holds = CheckoutService::new(store.clone(), store.clone(), store.clone());
        Ok(Self::new(
            CouponService::new(store),
            settings.or("EXPIRY_CHUNK_ROWS", MAX_SWEEP_CHUNK)?,
            Duration::from_secs(settings.or("EXPIRY_BUDGET_SECS", 240)?),
        )
        .with_holds(Arc::new(holds)))
    }
}

impl<R: CouponRecords> CouponExpiry<R> {
    pub fn new(coupons: CouponService<R>, chunk: u32, budget: Duration) -> Self {
        Self {
            coupons,
            holds: None,
            chunk,
            budget,
        }
    }

    pub fn with_holds(mut self, holds: Arc<dyn HoldSweep>) -> Self {
        self.holds = Some(holds);
        self
    }

    /// One sweep; the scheduled event's content does not matter.
    pub async fn handle(&self, _event: serde_json::Value) -> Result<ExpirySummary, CouponError> {
        let started = std::time::Instant::now();
        let coupons = self.coupons.sweep_expired(self.chunk, self.budget).await?;
        let holds = match &self.holds {
            Some(holds) => {
                let left = self.budget.saturating_sub(started.elapsed());
                Some(holds.sweep(HOLDS_PER_ROUND, left).await?)
            }
            None => None,
        };
        Ok(ExpirySummary { coupons, holds })
    }
}
