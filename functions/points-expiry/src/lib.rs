//! The point expiry sweep on a schedule: the points context's `sweep_expired`, at most
//! `EXPIRY_CHUNK_LOTS` (≤ 1,000) lots per transaction, then `prune_keys` (Idempotency-Key
//! records past their retention, as many per transaction) with what is left of
//! `EXPIRY_BUDGET_SECS`.

use std::time::Duration;

use serde::Serialize;

use fcfs_shared::adapters::mysql::{self, MySqlStore};
use fcfs_shared::config::{Settings, StartupError};
use fcfs_shared::kernel::MAX_SWEEP_CHUNK;
use fcfs_shared::points::ports::PointRecords;
use fcfs_shared::points::{PointsError, PointsService, SweepSummary};

pub struct PointsExpiry<R> {
    points: PointsService<R>,
    chunk: u32,
    budget: Duration,
}

impl PointsExpiry<MySqlStore> {
    pub fn from_settings(settings: &Settings, sdk: &aws_config::SdkConfig) -> Result<Self, StartupError> {
        Ok(Self::new(
            PointsService::new(mysql::store_from(settings, sdk)?),
            settings.or("EXPIRY_CHUNK_LOTS", MAX_SWEEP_CHUNK)?,
            Duration::from_secs(settings.or("EXPIRY_BUDGET_SECS", 240)?),
        ))
    }
}

impl<R: PointRecords> PointsExpiry<R> {
    pub fn new(points: PointsService<R>, chunk: u32, budget: Duration) -> Self {
        Self { points, chunk, budget }
    }

    /// One sweep; the scheduled event's content does not matter.
    pub async fn handle(&self, _event: serde_json::Value) -> Result<ExpirySweep, PointsError> {
        let started = std::time::Instant::now();
        let lots = self.points.sweep_expired(self.chunk, self.budget).await?;
        let left = self.budget.saturating_sub(started.elapsed());
        let idempotency_records = self.points.prune_keys(self.chunk, left).await?;
        Ok(ExpirySweep {
            lots,
            idempotency_records,
        })
    }
}

/// What one run did: lots expired, then key records pruned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpirySweep {
    pub lots: SweepSummary,
    pub idempotency_records: SweepSummary,
}
