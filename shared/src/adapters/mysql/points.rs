//! The points context's records on MySQL.
//!
//! Locks: a write locks the wallet rows it changes, with their live lots, by one `SELECT … FOR
//! UPDATE` (never a shared lock first: two S locks upgrading to X is the deadlock the systems
//! before us hit); a transfer locks both wallets in ascending (partner, user) order, the one global
//! order. A wallet row is created before any transaction locks it, by an autocommitted `INSERT …
//! ON DUPLICATE KEY UPDATE` that holds no gap lock afterwards. Every change to a wallet's lots and
//! history happens under its wallet's lock. After the locking read, everything a write does goes
//! to the server in one multi-statement batch ending in `COMMIT` (see `Write`), so the lock is held
//! for two round trips. The expiry sweep takes wallets with `SKIP LOCKED` and never waits on a
//! write. Nothing waits on a network call inside a transaction.
//!
//! Idempotency: the key's record (the receipt or the refusal, in columns) is the transaction's
//! last insert, so the effect and its record commit together. A repeat of a committed request
//! runs into the key's unique index at its own commit, rolls its effect back and replays the
//! record; one racing a request still in flight waits on the uncommitted key row and does the
//! same once it commits. A lock wait on that row past the session's limit answers `InProgress`.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::mysql::MySqlRow;
use sqlx::{MySql, QueryBuilder, Row};

use super::{ER_DUP_ENTRY, ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT, MySqlStore, error_number, unavailable, utc};

mod audit;
mod grants;
mod holds;
mod sweep;
mod write;

pub use audit::{PointsAudit, WalletMismatch};
use sweep::expire_wallets;
use write::Write;

use crate::kernel::{Unavailable, UserId};
use crate::partners::domain::{Limit, admit};
use crate::points::PointsError;
use crate::points::domain::{
    Entry, HeldPoints, HistoryQuery, IdempotencyKey, Lot, Movement, Operation, Outcome, Receipt, Refusal,
    first_active_key_day, hold_ended, keys_expire_before,
};
use crate::points::ledger::{self, Answer};
use crate::points::ports::{Applied, PointRecords};

/// Attempts of one write when InnoDB picks it as a deadlock victim or a row lock wait times out.
const MAX_ATTEMPTS: u32 = 3;

/// Writes retried after a deadlock or lock-wait timeout, process-wide (the tests expect 0).
static LOCK_RETRIES: AtomicU64 = AtomicU64::new(0);

pub fn lock_retries() -> u64 {
    LOCK_RETRIES.load(Ordering::Relaxed)
}

/// How one attempt of a write ended short of committing.
enum Failed {
    /// Another request with this key committed first (or is committing): replay it.
    KeyTaken,
    /// The key's row stayed locked by a racing request past the lock-wait limit.
    KeyBusy,
    Db(sqlx::Error),
}

impl From<sqlx::Error> for Failed {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(e)
    }
}

fn lot_from(row: &MySqlRow) -> Result<Lot, sqlx::Error> {
    Ok(Lot {
        id: row.try_get("id")?,
        remaining: row.try_get("remaining")?,
        expires_at: utc(row.try_get("expires_at")?),
    })
}

/// How many Idempotency-Key records each partner made on the kept days before today, per
/// process. A write is admitted against the records of every kept day: up to 31 days of 16 shard
/// rows, read by every write, though only today's rows still change. So the earlier days' sum is
/// read once per partner and day and kept for at most an hour; a write that began before midnight
/// and commits after it is counted late, by at most that hour (the limit bounds what a partner
/// stores, and is checked outside the write's transaction anyway).
#[derive(Clone)]
pub(super) struct EarlierKeyRecords(moka::future::Cache<(String, chrono::NaiveDate), u64>);

impl EarlierKeyRecords {
    pub(super) fn new() -> Self {
        Self(
            moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(std::time::Duration::from_secs(3_600))
                .build(),
        )
    }
}

impl MySqlStore {
    /// A committed record of `key`: its outcome if it was this request, `IdempotencyKeyReused`
    /// if another.
    async fn replay(
        &self,
        partner: &str,
        key: &IdempotencyKey,
        fingerprint: &str,
    ) -> Result<Option<Applied>, PointsError> {
        type Record = (
            String,
            Option<u64>,
            Option<u64>,
            Option<u64>,
            Option<u64>,
            Option<String>,
        );
        let row: Option<Record> = sqlx::query_as(
            "SELECT request_hash, transaction_id, balance, to_transaction_id, to_balance, refusal \
             FROM idempotency_keys WHERE partner_id = ? AND idempotency_key = ?",
        )
        .bind(partner)
        .bind(key.as_str())
        .fetch_optional(&self.db().await?)
        .await
        .map_err(unavailable)?;
        let Some((hash, transaction_id, balance, to_transaction_id, to_balance, refusal)) = row else {
            return Ok(None);
        };
        if hash != fingerprint {
            return Err(PointsError::IdempotencyKeyReused);
        }
        let corrupt = || Unavailable::new("mysql", format!("idempotency record of {} is incomplete", key.as_str()));
        let outcome = match (refusal, transaction_id, balance) {
            (Some(refusal), _, _) => Outcome::Refused(Refusal::parse(&refusal).ok_or_else(corrupt)?),
            (None, Some(transaction_id), Some(balance)) => Outcome::Done(Receipt {
                transaction_id,
                balance,
                to_transaction_id,
                to_balance,
            }),
            _ => return Err(corrupt().into()),
        };
        Ok(Some(Applied {
            outcome,
            replayed: true,
        }))
    }

    /// Creates the wallet if it is new, committed on its own: a later `FOR UPDATE` then finds a
    /// row and takes a record lock, never a gap lock two creators could deadlock on.
    async fn ensure_wallet(&self, partner: &str, user: &UserId, now: DateTime<Utc>) -> Result<(), Unavailable> {
        let pool = self.db().await?;
        let exists: Option<u64> =
            sqlx::query_scalar("SELECT id FROM point_wallets WHERE partner_id = ? AND user_id = ?")
                .bind(partner)
                .bind(user.as_str())
                .fetch_optional(&pool)
                .await
                .map_err(unavailable)?;
        if exists.is_none() {
            sqlx::query(
                "INSERT INTO point_wallets (partner_id, user_id, balance, updated_at) VALUES (?, ?, 0, ?) \
                 ON DUPLICATE KEY UPDATE id = id",
            )
            .bind(partner)
            .bind(user.as_str())
            .bind(now.naive_utc())
            .execute(&pool)
            .await
            .map_err(unavailable)?;
        }
        Ok(())
    }

    /// Admits one more key record for the partner (`partners::domain::admit` over the counts of the
    /// days still kept, read without a lock: concurrent writes may pass the limit together, by at
    /// most their number) and makes sure the counter row this write adds to exists, committed on
    /// its own. Past the limit a committed key still replays: `Some` is its answer.
    async fn admit_key(
        &self,
        partner: &str,
        key: &IdempotencyKey,
        fingerprint: &str,
        now: DateTime<Utc>,
        records_allowed: u64,
    ) -> Result<Option<Applied>, PointsError> {
        let pool = self.db().await?;
        let (day, shard) = (now.date_naive(), key.counter_shard());
        let earlier = self.earlier_key_records(&pool, partner, now).await?;
        let (today, ready): (u64, i64) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(records), 0) AS UNSIGNED), CAST(COALESCE(MAX(shard = ?), 0) AS SIGNED) \
             FROM idempotency_counts WHERE partner_id = ? AND day = ?",
        )
        .bind(shard)
        .bind(partner)
        .bind(day)
        .fetch_one(&pool)
        .await
        .map_err(unavailable)?;
        let active = earlier.saturating_add(today);
        if let Err(refused) = admit(Limit::IdempotencyRecords, records_allowed, active.saturating_add(1)) {
            return match self.replay(partner, key, fingerprint).await? {
                Some(applied) => Ok(Some(applied)),
                None => Err(refused.into()),
            };
        }
        if ready == 0 {
            sqlx::query("INSERT IGNORE INTO idempotency_counts (partner_id, day, shard, records) VALUES (?, ?, ?, 0)")
                .bind(partner)
                .bind(day)
                .bind(shard)
                .execute(&pool)
                .await
                .map_err(unavailable)?;
        }
        Ok(None)
    }

    /// The partner's records of the kept days before today's, from this process's memory after
    /// the first write of the day (see `EarlierKeyRecords`).
    async fn earlier_key_records(
        &self,
        pool: &sqlx::MySqlPool,
        partner: &str,
        now: DateTime<Utc>,
    ) -> Result<u64, PointsError> {
        let remembered = (partner.to_owned(), now.date_naive());
        if let Some(records) = self.earlier_key_records.0.get(&remembered).await {
            return Ok(records);
        }
        let records: u64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(records), 0) AS UNSIGNED) FROM idempotency_counts \
             WHERE partner_id = ? AND day >= ? AND day < ?",
        )
        .bind(partner)
        .bind(first_active_key_day(now))
        .bind(now.date_naive())
        .fetch_one(pool)
        .await
        .map_err(unavailable)?;
        self.earlier_key_records.0.insert(remembered, records).await;
        Ok(records)
    }

    /// One attempt: the operation and its key's record in one transaction.
    async fn attempt(
        &self,
        partner: &str,
        key: &IdempotencyKey,
        fingerprint: &str,
        operation: &Operation,
        now: DateTime<Utc>,
    ) -> Result<Outcome, Failed> {
        let pool = self
            .db()
            .await
            .map_err(|e| Failed::Db(sqlx::Error::Protocol(e.to_string())))?;
        let owner: Option<(u64, String)> = match operation {
            Operation::Cancel { transaction } => {
                sqlx::query_as("SELECT wallet_id, partner_id FROM point_transactions WHERE id = ?")
                    .bind(transaction)
                    .fetch_optional(&pool)
                    .await?
            }
            _ => None,
        };
        let mut tx = pool.begin().await?;
        let mut write = Write {
            tx: &mut tx,
            partner,
            now,
            batch: String::new(),
            statements: 0,
            counter: (now.date_naive(), key.counter_shard()),
            unannounced: None,
        };
        let (mut locked, mut own, mut receiver) = write.lock_for(operation, owner.clone()).await?;
        // Points held by a hold that has ended are the wallet's again before it writes.
        let ended: Vec<u64> = [own.as_ref(), receiver.as_ref()]
            .into_iter()
            .flatten()
            .filter(|w| w.first_hold_end.is_some_and(|end| hold_ended(end, now)))
            .map(|w| w.id)
            .collect();
        if !ended.is_empty() {
            for wallet in ended {
                holds::release_ended(&mut write, wallet, now).await?;
            }
            (locked, own, receiver) = write.lock_for(operation, owner).await?;
        }
        let plan = ledger::plan(operation, locked, now);
        if let Answer::Done { to_balance, .. } = plan.answer {
            // Both wallets an earn or a transfer writes to were created before this transaction.
            let own = own.as_ref().ok_or(sqlx::Error::RowNotFound)?;
            if to_balance.is_some() && receiver.is_none() {
                return Err(Failed::Db(sqlx::Error::RowNotFound));
            }
            write.persist(&plan, own, receiver.as_ref());
        }
        let outcome = write.commit(key.as_str(), fingerprint, plan.answer).await?;
        // The batch committed; this only tells the connection so (a no-op on the server).
        tx.commit().await?;
        Ok(outcome)
    }

    /// Sets the partner's default validity of earned points (`fcfs-admin points policy`).
    pub async fn set_validity_days(&self, partner: &str, days: u32) -> Result<(), Unavailable> {
        sqlx::query(
            "INSERT INTO point_policies (partner_id, validity_days) VALUES (?, ?) \
             ON DUPLICATE KEY UPDATE validity_days = VALUES(validity_days)",
        )
        .bind(partner)
        .bind(days)
        .execute(&self.db().await?)
        .await
        .map_err(unavailable)?;
        Ok(())
    }
}

impl MySqlStore {
    /// `PointRecords::apply`, without its deadline.
    async fn apply_untimed(
        &self,
        partner: &str,
        key: &IdempotencyKey,
        operation: &Operation,
        now: DateTime<Utc>,
        records_allowed: u64,
    ) -> Result<Applied, PointsError> {
        // No look-up of the key first: that would cost every request a round trip for the sake of
        // the rare retry, and the key's insert at commit catches every repeat anyway (the repeat's
        // own effect is then rolled back and the first outcome replayed).
        let fingerprint = operation.fingerprint();
        if let Some(replayed) = self.admit_key(partner, key, &fingerprint, now, records_allowed).await? {
            return Ok(replayed);
        }
        match operation {
            Operation::Earn { user, .. } => self.ensure_wallet(partner, user, now).await?,
            Operation::Transfer { request } => self.ensure_wallet(partner, &request.to_user_id, now).await?,
            Operation::Use { .. } | Operation::Cancel { .. } => {}
        }
        for attempt in 1..=MAX_ATTEMPTS {
            match self.attempt(partner, key, &fingerprint, operation, now).await {
                Ok(outcome) => {
                    return Ok(Applied {
                        outcome,
                        replayed: false,
                    });
                }
                Err(Failed::KeyTaken) => {
                    return self
                        .replay(partner, key, &fingerprint)
                        .await?
                        .ok_or(PointsError::InProgress);
                }
                Err(Failed::KeyBusy) => return Err(PointsError::InProgress),
                Err(Failed::Db(e))
                    if attempt < MAX_ATTEMPTS
                        && matches!(error_number(&e), Some(ER_LOCK_DEADLOCK | ER_LOCK_WAIT_TIMEOUT)) =>
                {
                    LOCK_RETRIES.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("fcfs_points_lock_retries_total").increment(1);
                    tracing::warn!(attempt, error = %e, partner_id = partner, "points write retried after a lock conflict");
                }
                Err(Failed::Db(e)) => {
                    if matches!(error_number(&e), Some(ER_LOCK_DEADLOCK | ER_LOCK_WAIT_TIMEOUT)) {
                        metrics::counter!("fcfs_points_lock_failures_total").increment(1);
                        tracing::error!(attempts = attempt, error = %e, partner_id = partner, "points write failed on lock conflicts");
                    }
                    return Err(PointsError::Unavailable(unavailable(e)));
                }
            }
        }
        unreachable!("the last attempt returns")
    }
}

#[async_trait]
impl PointRecords for MySqlStore {
    /// Everything (wallet creation, every attempt, the replay of a key taken) within one store
    /// deadline: a cut-off attempt rolls back, and a retry with the key finds what committed.
    async fn apply(
        &self,
        partner: &str,
        key: &IdempotencyKey,
        operation: &Operation,
        now: DateTime<Utc>,
        records_allowed: u64,
    ) -> Result<Applied, PointsError> {
        self.timed(self.apply_untimed(partner, key, operation, now, records_allowed))
            .await
    }

    async fn validity_days(&self, partner: &str) -> Result<Option<u32>, Unavailable> {
        self.timed(async {
            sqlx::query_scalar("SELECT validity_days FROM point_policies WHERE partner_id = ?")
                .bind(partner)
                .fetch_optional(&self.db().await?)
                .await
                .map_err(unavailable)
        })
        .await
    }

    async fn lots(&self, partner: &str, user: &UserId) -> Result<Vec<Lot>, Unavailable> {
        self.timed(async {
            sqlx::query(
                "SELECT l.id, l.remaining, l.expires_at FROM point_wallets w \
                 JOIN point_lots l ON l.wallet_id = w.id \
                 WHERE w.partner_id = ? AND w.user_id = ? AND l.remaining > 0 ORDER BY l.expires_at, l.id",
            )
            .bind(partner)
            .bind(user.as_str())
            .fetch_all(&self.db().await?)
            .await
            .map_err(unavailable)?
            .iter()
            .map(lot_from)
            .collect::<Result<_, _>>()
            .map_err(unavailable)
        })
        .await
    }

    async fn holds(&self, partner: &str, user: &UserId) -> Result<Vec<HeldPoints>, Unavailable> {
        self.timed(holds::held_points(self, partner, user)).await
    }

    async fn history(&self, partner: &str, user: &UserId, query: &HistoryQuery) -> Result<Vec<Entry>, Unavailable> {
        let mut sql = QueryBuilder::<MySql>::new(
            "SELECT t.id, t.kind, t.amount, t.balance_after, t.reason, t.order_id, t.related_id, t.cancelled_by, \
             t.created_at FROM point_wallets w JOIN point_transactions t ON t.wallet_id = w.id WHERE w.partner_id = ",
        );
        sql.push_bind(partner)
            .push(" AND w.user_id = ")
            .push_bind(user.as_str());
        if let Some(before) = query.before {
            sql.push(" AND t.id < ").push_bind(before);
        }
        sql.push(" ORDER BY t.id DESC LIMIT ").push_bind(query.limit + 1);
        self.timed(async {
            let rows = sql.build().fetch_all(&self.db().await?).await.map_err(unavailable)?;
            rows.iter()
                .map(|row| {
                    let kind: String = row.try_get("kind")?;
                    Ok(Entry {
                        transaction_id: row.try_get("id")?,
                        movement: Movement::parse(&kind)
                            .ok_or_else(|| sqlx::Error::Decode(format!("point movement {kind}").into()))?,
                        amount: row.try_get("amount")?,
                        balance_after: row.try_get("balance_after")?,
                        reason: row.try_get("reason")?,
                        order_id: row.try_get("order_id")?,
                        related_transaction_id: row.try_get("related_id")?,
                        cancelled_by: row.try_get("cancelled_by")?,
                        created_at: utc(row.try_get("created_at")?),
                    })
                })
                .collect::<Result<_, sqlx::Error>>()
                .map_err(unavailable)
        })
        .await
    }

    /// Short only when nothing is left to expire but lots of wallets a write holds (those are
    /// skipped, and their writes expire them anyway): the sweep stops on a short chunk.
    async fn expire_batch(&self, now: DateTime<Utc>, max_lots: u32) -> Result<u64, Unavailable> {
        self.timed(async {
            let pool = self.db().await?;
            let mut expired = 0;
            let mut held: Vec<u64> = Vec::new();
            while expired < u64::from(max_lots) {
                let left = max_lots - expired as u32;
                // Candidates, read outside the transaction: its snapshot must start after its locks.
                let mut candidates = QueryBuilder::<MySql>::new("SELECT wallet_id FROM point_lots WHERE due_at <= ");
                candidates.push_bind(now.naive_utc());
                if !held.is_empty() {
                    candidates.push(" AND wallet_id NOT IN (");
                    let mut ids = candidates.separated(", ");
                    for id in &held {
                        ids.push_bind(id);
                    }
                    candidates.push(")");
                }
                candidates.push(" ORDER BY due_at LIMIT ").push_bind(left);
                let wallets: std::collections::BTreeSet<u64> = candidates
                    .build_query_scalar()
                    .fetch_all(&pool)
                    .await
                    .map_err(unavailable)?
                    .into_iter()
                    .collect();
                if wallets.is_empty() {
                    break;
                }
                let wallets: Vec<u64> = wallets.into_iter().collect();
                let (done, locked) = expire_wallets(&pool, &wallets, now, left).await.map_err(unavailable)?;
                expired += done;
                held.extend(wallets.iter().filter(|w| !locked.contains(w)));
            }
            Ok(expired)
        })
        .await
    }

    /// Oldest first by `created_at`'s index. The counts of days before the first kept one go in
    /// the same transaction (a few rows per partner and day).
    async fn prune_keys(&self, now: DateTime<Utc>, max_records: u32) -> Result<u64, Unavailable> {
        self.timed(async {
            let mut tx = self.db().await?.begin().await.map_err(unavailable)?;
            let deleted = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < ? ORDER BY created_at LIMIT ?")
                .bind(keys_expire_before(now).naive_utc())
                .bind(max_records)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?
                .rows_affected();
            sqlx::query("DELETE FROM idempotency_counts WHERE day < ?")
                .bind(first_active_key_day(now))
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            tx.commit().await.map_err(unavailable)?;
            Ok(deleted)
        })
        .await
    }
}
