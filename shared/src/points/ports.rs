//! What the points context needs from the outside: the wallet records.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::domain::{
    EarnPoints, Entry, HeldPoints, HistoryQuery, IdempotencyKey, Lot, Operation, Outcome, TransactionId,
};
use super::error::PointsError;
use crate::coupons::domain::OrderId;
use crate::kernel::{TxError, Unavailable, UserId};

/// Points another context grants (a grading reward): an EARN with the ledger's own rules, under
/// an idempotency key of the granting context's choosing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointGrant {
    pub user: UserId,
    pub key: IdempotencyKey,
    pub amount: u64,
    pub reason: String,
    pub expires_at: DateTime<Utc>,
}

impl PointGrant {
    /// The EARN this grant is, as the ledger plans it and the key's record fingerprints it.
    pub fn operation(&self) -> Operation {
        Operation::Earn {
            user: self.user.clone(),
            request: EarnPoints {
                amount: self.amount,
                reason: self.reason.clone(),
                expires_at: Some(self.expires_at),
            },
            expires_at: self.expires_at,
        }
    }
}

/// EARNs granted by another context inside its own transaction `Tx` (a grading chunk), so they
/// commit or roll back with the grant's record there. Only the points context's storage writes
/// wallets, lots, history and idempotency keys; this is how others ask it to.
#[async_trait]
pub trait PointGrants<Tx: Send>: Send + Sync {
    /// Each grant an EARN (`points::ledger::earn`: due lots expired first, one entry, one lot)
    /// with its key's record; wallets locked in user order. A grant whose key is recorded
    /// already changes nothing again. The EARN entry of each grant, in the order given.
    async fn grant_points(
        &self,
        tx: &mut Tx,
        partner: &str,
        grants: &[PointGrant],
        now: DateTime<Utc>,
    ) -> Result<Vec<TransactionId>, TxError>;
}

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
    /// `InProgress` past the lock-wait limit. Never two effects for one key. A new record is
    /// counted in its UTC day; one that would take the partner's records still kept
    /// (`domain::first_active_key_day` on) past `records_allowed` is `LimitExceeded`, and nothing
    /// is written (a committed key still replays).
    async fn apply(
        &self,
        partner: &str,
        key: &IdempotencyKey,
        operation: &Operation,
        now: DateTime<Utc>,
        records_allowed: u64,
    ) -> Result<Applied, PointsError>;

    /// The partner's default validity of earned points, in days, if it has its own.
    async fn validity_days(&self, partner: &str) -> Result<Option<u32>, Unavailable>;

    /// The wallet's lots with points left (none for a user without a wallet).
    async fn lots(&self, partner: &str, user: &UserId) -> Result<Vec<Lot>, Unavailable>;

    /// The wallet's points held by checkout holds (ended or not, until released or confirmed).
    async fn holds(&self, partner: &str, user: &UserId) -> Result<Vec<HeldPoints>, Unavailable>;

    /// The wallet's history, newest first, below `query.before`, at most `query.limit` + 1 entries
    /// (so the caller knows whether there is a next page).
    async fn history(&self, partner: &str, user: &UserId, query: &HistoryQuery) -> Result<Vec<Entry>, Unavailable>;

    /// Expires up to `max_lots` lots past their time in one short transaction, skipping wallets a
    /// write holds; how many lots it expired.
    async fn expire_batch(&self, now: DateTime<Utc>, max_lots: u32) -> Result<u64, Unavailable>;

    /// Deletes up to `max_records` key records made before `domain::keys_expire_before(now)`,
    /// oldest first, in one short transaction, and the counts of days before
    /// `domain::first_active_key_day(now)`; how many records it deleted.
    async fn prune_keys(&self, now: DateTime<Utc>, max_records: u32) -> Result<u64, Unavailable>;
}

/// Points held for an order being paid, inside the checkout context's transaction `Tx`: a hold is
/// a USE (`points::ledger::plan`, first-expiring-first) recorded as held until the hold ends;
/// confirmed, the USE stays; released, it is cancelled as a use's cancel is (what drew from lots
/// whose time passed meanwhile expires at once). A hold past its end is released by the next write
/// of its wallet, whichever it is. Only the points context's storage writes wallets, lots, entries
/// and held points; this is how checkout asks it to. The outer error is the transaction's (start
/// over, or unavailable); the inner one the ledger's answer.
#[async_trait]
pub trait PointHolds<Tx: Send>: Send + Sync {
    /// Locks the user's wallet (its ended holds released first) and holds `amount` of it for
    /// `order` until `until`: the held USE entry, or `InsufficientPoints` (nothing written).
    #[allow(clippy::too_many_arguments)]
    async fn hold_points(
        &self,
        tx: &mut Tx,
        partner: &str,
        user: &UserId,
        amount: u64,
        order: &OrderId,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Result<TransactionId, PointsError>, TxError>;

    /// Under the wallet's lock: the held USE becomes a plain use. `false` when it is no longer
    /// held (an ended hold a write of the wallet released).
    async fn confirm_points_hold(&self, tx: &mut Tx, transaction: TransactionId) -> Result<bool, TxError>;

    /// Under the wallet's lock: the held USE cancelled, if it is still held.
    async fn release_points_hold(
        &self,
        tx: &mut Tx,
        transaction: TransactionId,
        now: DateTime<Utc>,
    ) -> Result<(), TxError>;
}
