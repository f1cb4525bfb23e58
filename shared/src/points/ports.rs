//! What the points context needs from the outside: the wallet records.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::domain::{Entry, HistoryQuery, IdempotencyKey, Lot, Operation, Outcome};
use super::error::PointsError;
use crate::kernel::{Unavailable, UserId};

/// An applied write's answer, and whether it was replayed from an earlier request with the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub outcome: Outcome,
    pub replayed: bool,
}

#[async_trait]
pub trait PointRecords: Send + Sync {
    /// Applies `operation` for `partner` in one transaction with the record of `key`: the rules
    /// (`domain::allocate`, `domain::split_cancel`) decide under the lock of the wallet rows it
    /// changes; lots past their time are expired first; the outcome, refusals included, commits
    /// with the key. A key already committed replays its outcome (`IdempotencyKeyReused` if it
    /// was another request's); one still in flight makes this call wait for it, or answer
    /// `InProgress` past the lock-wait limit. Never two effects for one key.
    async fn apply(
        &self,
        partner: &str,
        key: &IdempotencyKey,
        operation: &Operation,
        now: DateTime<Utc>,
    ) -> Result<Applied, PointsError>;

    /// The partner's default validity of earned points, in days, if it has its own.
    async fn validity_days(&self, partner: &str) -> Result<Option<u32>, Unavailable>;

    /// The wallet's lots with points left (none for a user without a wallet).
    async fn lots(&self, partner: &str, user: &UserId) -> Result<Vec<Lot>, Unavailable>;

    /// The wallet's history, newest first, below `query.before`, at most `query.limit` + 1 entries
    /// (so the caller knows whether there is a next page).
    async fn history(&self, partner: &str, user: &UserId, query: &HistoryQuery) -> Result<Vec<Entry>, Unavailable>;

    /// Expires up to `max_lots` lots past their time in one short transaction, skipping wallets a
    /// write holds; how many lots it expired.
    async fn expire_batch(&self, now: DateTime<Utc>, max_lots: u32) -> Result<u64, Unavailable>;
}
