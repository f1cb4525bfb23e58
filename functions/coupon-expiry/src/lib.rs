//! The expiry sweep on a schedule: the coupons context's `sweep_expired`, in chunks of
//! `EXPIRY_CHUNK_ROWS` (at most 1,000) per transaction, within `EXPIRY_BUDGET_SECS`.

use std::time::Duration;

use fcfs_shared::adapters::mysql::{self, MySqlStore};
use fcfs_shared::config::{Settings, StartupError};
use fcfs_shared::coupons::ports::CouponRecords;
use fcfs_shared::coupons::{CouponError, CouponService, SweepSummary};
use fcfs_shared::kernel::MAX_SWEEP_CHUNK;

pub struct CouponExpiry<R> {
    coupons: CouponService<R>,
    chunk: u32,
    budget: Duration,
}

impl CouponExpiry<MySqlStore> {
    pub fn from_settings(settings: &Settings, sdk: &aws_config::SdkConfig) -> Result<Self, StartupError> {
        Ok(Self::new(
            CouponService::new(mysql::store_from(settings, sdk)?),
            settings.or("EXPIRY_CHUNK_ROWS", MAX_SWEEP_CHUNK)?,
            Duration::from_secs(settings.or("EXPIRY_BUDGET_SECS", 240)?),
        ))
    }
}

impl<R: CouponRecords> CouponExpiry<R> {
    pub fn new(coupons: CouponService<R>, chunk: u32, budget: Duration) -> Self {
        Self { coupons, chunk, budget }
    }

    /// One sweep; the scheduled event's content does not matter.
    pub async fn handle(&self, _event: serde_json::Value) -> Result<SweepSummary, CouponError> {
        self.coupons.sweep_expired(self.chunk, self.budget).await
    }
}
