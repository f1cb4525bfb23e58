//! The points context's use cases, over its port: any trigger (HTTP, a schedule) calls these.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::domain::{
    Balance, DEFAULT_VALIDITY_DAYS, EarnPoints, Entry, HistoryQuery, IdempotencyKey, Operation, Outcome, Receipt,
    TransactionId, TransferPoints, UsePoints,
};
use super::error::PointsError;
use super::ports::PointRecords;
use crate::kernel::{Clock, SystemClock, UserId, sweep_in_chunks};

pub use crate::kernel::SweepSummary;

/// A page of a wallet's history.
#[derive(Debug)]
pub struct HistoryPage {
    pub entries: Vec<Entry>,
    /// The last entry's id when more follow.
    pub next: Option<TransactionId>,
}

pub struct PointsService<R> {
    records: R,
    clock: Arc<dyn Clock>,
    default_validity_days: u32,
}

impl<R: PointRecords> PointsService<R> {
    pub fn new(records: R) -> Self {
        Self {
            records,
            clock: Arc::new(SystemClock),
            default_validity_days: DEFAULT_VALIDITY_DAYS,
        }
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Validity of earned points for partners without their own policy.
    pub fn with_default_validity_days(mut self, days: u32) -> Self {
        self.default_validity_days = days;
        self
    }

    pub fn records(&self) -> &R {
        &self.records
    }

    /// The clock's time at the database's precision (milliseconds), so an answer computed now
    /// equals the one read back later.
    pub fn now(&self) -> DateTime<Utc> {
        chrono::SubsecRound::trunc_subsecs(self.clock.now(), 3)
    }

    async fn apply(&self, partner: &str, key: &IdempotencyKey, operation: Operation) -> Result<Receipt, PointsError> {
        let applied = self.records.apply(partner, key, &operation, self.now()).await?;
        tracing::info!(
            partner_id = partner,
            idempotency_key = key.as_str(),
            replayed = applied.replayed,
            outcome = ?applied.outcome,
            "points write"
        );
        match applied.outcome {
            Outcome::Done(receipt) => Ok(receipt),
            Outcome::Refused(refusal) => Err(refusal.into()),
        }
    }

    pub async fn earn(
        &self,
        partner: &str,
        user: UserId,
        key: &IdempotencyKey,
        request: EarnPoints,
    ) -> Result<Receipt, PointsError> {
        let now = self.now();
        let request = request.validate(now)?;
        let expires_at = match request.expires_at {
            Some(at) => at,
            None => {
                let days = self.records.validity_days(partner).await?;
                now + chrono::Duration::days(i64::from(days.unwrap_or(self.default_validity_days)))
            }
        };
        self.apply(
            partner,
            key,
            Operation::Earn {
                user,
                request,
                expires_at,
            },
        )
        .await
    }

    pub async fn use_points(
        &self,
        partner: &str,
        user: UserId,
        key: &IdempotencyKey,
        request: UsePoints,
    ) -> Result<Receipt, PointsError> {
        let request = request.validate()?;
        self.apply(partner, key, Operation::Use { user, request }).await
    }

    pub async fn cancel(
        &self,
        partner: &str,
        transaction: TransactionId,
        key: &IdempotencyKey,
    ) -> Result<Receipt, PointsError> {
        self.apply(partner, key, Operation::Cancel { transaction }).await
    }

    pub async fn transfer(
        &self,
        partner: &str,
        key: &IdempotencyKey,
        request: TransferPoints,
    ) -> Result<Receipt, PointsError> {
        let request = request.validate()?;
        self.apply(partner, key, Operation::Transfer { request }).await
    }

    /// What the user can spend now (lots past their time never count, swept or not) and the next
    /// expiry dates.
    pub async fn balance(&self, partner: &str, user: &UserId) -> Result<Balance, PointsError> {
        let lots = self.records.lots(partner, user).await?;
        Ok(Balance::of(&lots, self.now()))
    }

    pub async fn history(
        &self,
        partner: &str,
        user: &UserId,
        query: &HistoryQuery,
    ) -> Result<HistoryPage, PointsError> {
        let mut entries = self.records.history(partner, user, query).await?;
        let next = if entries.len() > query.limit as usize {
            entries.truncate(query.limit as usize);
            entries.last().map(|e| e.transaction_id)
        } else {
            None
        };
        Ok(HistoryPage { entries, next })
    }

    /// Expires lots past their time, at most `chunk` (≤ 1,000) per transaction, until none is
    /// left or `budget` is spent.
    pub async fn sweep_expired(&self, chunk: u32, budget: Duration) -> Result<SweepSummary, PointsError> {
        let now = self.now();
        Ok(sweep_in_chunks("point expiry", chunk, budget, |lots| {
            self.records.expire_batch(now, lots)
        })
        .await?)
    }
}
