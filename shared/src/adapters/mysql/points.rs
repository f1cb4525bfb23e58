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

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::mysql::MySqlRow;
use sqlx::{MySql, MySqlConnection, QueryBuilder, Row};

use super::{ER_DUP_ENTRY, ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT, MySqlStore, error_number, unavailable, utc};

mod grants;
use crate::kernel::{Unavailable, UserId};
use crate::points::PointsError;
use crate::points::domain::{
    Allocation, Entry, HistoryQuery, IdempotencyKey, Lot, Movement, Operation, Outcome, Receipt, Refusal, TransactionId,
};
use crate::points::ledger::{
    self, Answer, CancelTarget, Locked, LotChange, Plan, PlannedEntry, Related, Side, WalletState,
};
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

/// A wallet row as a write locks it.
#[derive(Debug, Clone)]
struct Wallet {
    id: u64,
    user_id: String,
    state: WalletState,
}

fn lot_from(row: &MySqlRow) -> Result<Lot, sqlx::Error> {
    Ok(Lot {
        id: row.try_get("id")?,
        remaining: row.try_get("remaining")?,
        expires_at: utc(row.try_get("expires_at")?),
    })
}

/// One write's transaction, for one partner at one instant. Past the locking reads, the plan the
/// ledger made (entries, allocations, lots, the wallets, the key's record) is gathered in `batch`
/// and sent with the COMMIT as one multi-statement round trip: the wallet's lock is held for two
/// round trips, as in a bare `SELECT … FOR UPDATE` + `UPDATE`, and on a hot wallet every round
/// trip made under its lock is paid by every writer queued behind it. Ids the batch makes are
/// passed on in session variables (`@t`, the own principal entry; `@t2`, a transfer's receiving
/// side) and read back by its last statement.
struct Write<'t> {
    tx: &'t mut MySqlConnection,
    partner: &'t str,
    now: DateTime<Utc>,
    batch: String,
}

/// Values written into `Write::batch`, which cannot carry bind parameters: numbers and instants
/// formatted here, text only as hex (`_utf8mb4 X'…'`), so no value can end a literal.
fn text(value: &str) -> String {
    let mut hex = String::with_capacity(12 + 2 * value.len());
    hex.push_str("_utf8mb4 X'");
    for b in value.bytes() {
        hex.push_str(&format!("{b:02x}"));
    }
    hex.push('\'');
    hex
}

fn optional_text(value: Option<&str>) -> String {
    value.map_or_else(|| "NULL".to_owned(), text)
}

fn instant(at: DateTime<Utc>) -> String {
    format!("'{}'", at.naive_utc().format("%Y-%m-%d %H:%M:%S%.3f"))
}

/// The session variable holding the id of a side's principal entry.
fn principal_id(side: Side) -> &'static str {
    match side {
        Side::Own => "@t",
        Side::Receiver => "@t2",
    }
}

impl Write<'_> {
    /// Locks the wallet row and its lots with points left (`FOR UPDATE`: a locking read sees the
    /// latest committed rows, whatever the transaction read before). Unordered: the ledger orders
    /// them, and a sort in the database would cost the lock holder time.
    async fn lock(&mut self, wallet: WalletRef<'_>) -> Result<Option<Wallet>, sqlx::Error> {
        let select = "SELECT w.id, w.user_id, w.balance, l.id AS lot_id, l.remaining, l.expires_at \
                      FROM point_wallets w LEFT JOIN point_lots l ON l.wallet_id = w.id AND l.remaining > 0";
        let rows = match wallet {
            WalletRef::Owner(user) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "{select} WHERE w.partner_id = ? AND w.user_id = ? FOR UPDATE"
                )))
                .bind(self.partner)
                .bind(user)
                .fetch_all(&mut *self.tx)
                .await?
            }
            WalletRef::Id(id) => {
                sqlx::query(sqlx::AssertSqlSafe(format!("{select} WHERE w.id = ? FOR UPDATE")))
                    .bind(id)
                    .fetch_all(&mut *self.tx)
                    .await?
            }
        };
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let mut lots = Vec::with_capacity(rows.len());
        for row in &rows {
            if let Some(id) = row.try_get::<Option<u64>, _>("lot_id")? {
                lots.push(Lot {
                    id,
                    remaining: row.try_get("remaining")?,
                    expires_at: utc(row.try_get("expires_at")?),
                });
            }
        }
        Ok(Some(Wallet {
            id: first.try_get("id")?,
            user_id: first.try_get("user_id")?,
            state: WalletState {
                balance: first.try_get("balance")?,
                lots,
            },
        }))
    }

    /// The entry a cancel names and what it drew, locked (its wallet is locked first).
    async fn target(&mut self, transaction: TransactionId) -> Result<CancelTarget, sqlx::Error> {
        let (kind, amount, cancelled_by): (String, i64, Option<u64>) =
            sqlx::query_as("SELECT kind, amount, cancelled_by FROM point_transactions WHERE id = ? FOR UPDATE")
                .bind(transaction)
                .fetch_one(&mut *self.tx)
                .await?;
        let drawn: Vec<(u64, u64, u64, chrono::NaiveDateTime)> = sqlx::query_as(
            "SELECT a.lot_id, a.amount, l.remaining, l.expires_at FROM point_allocations a \
             JOIN point_lots l ON l.id = a.lot_id WHERE a.transaction_id = ? FOR UPDATE",
        )
        .bind(transaction)
        .fetch_all(&mut *self.tx)
        .await?;
        Ok(CancelTarget {
            movement: Movement::parse(&kind)
                .ok_or_else(|| sqlx::Error::Decode(format!("point movement {kind}").into()))?,
            amount: amount.unsigned_abs(),
            cancelled: cancelled_by.is_some(),
            drawn: drawn
                .into_iter()
                .map(|(lot_id, amount, remaining, expires_at)| {
                    let allocation = Allocation {
                        lot_id,
                        amount,
                        expires_at: utc(expires_at),
                    };
                    (allocation, remaining)
                })
                .collect(),
        })
    }

    fn queue(&mut self, statement: &str) {
        self.batch.push_str(statement);
        self.batch.push_str(";\n");
    }

    /// Queues entries of one wallet, in order, in one multi-row INSERT.
    fn append(&mut self, wallet: &Wallet, entries: &[&PlannedEntry], made: &[Side]) {
        if entries.is_empty() {
            return;
        }
        let rows: Vec<String> = entries
            .iter()
            .map(|e| {
                let related = match e.related {
                    Some(Related::Transaction(id)) => id.to_string(),
                    Some(Related::Principal(side)) if made.contains(&side) => principal_id(side).to_owned(),
                    // Linked once that entry is made (`persist`).
                    Some(Related::Principal(_)) | None => "NULL".to_owned(),
                };
                format!(
                    "({}, {}, {}, {}, {}, {}, {}, {}, {related}, {}, {})",
                    wallet.id,
                    text(self.partner),
                    text(&wallet.user_id),
                    text(e.movement.as_str()),
                    e.amount,
                    e.balance_after,
                    optional_text(e.reason.as_deref()),
                    optional_text(e.order_id.as_deref()),
                    e.lot_id.map_or_else(|| "NULL".to_owned(), |id| id.to_string()),
                    instant(self.now)
                )
            })
            .collect();
        self.queue(&format!(
            "INSERT INTO point_transactions (wallet_id, partner_id, user_id, kind, amount, balance_after, reason, \
             order_id, related_id, lot_id, created_at) VALUES {}",
            rows.join(", ")
        ));
    }

    /// Queues everything `plan` writes. `receiver`: a transfer's receiving wallet.
    fn persist(&mut self, plan: &Plan, own: &Wallet, receiver: Option<&Wallet>) {
        let wallet_of = |side: Side| match side {
            Side::Own => own,
            Side::Receiver => receiver.unwrap_or(own),
        };
        // Runs of entries up to each principal go in one INSERT; a principal alone, its id kept.
        let mut made: Vec<Side> = Vec::new();
        let mut run: Vec<&PlannedEntry> = Vec::new();
        for entry in &plan.entries {
            if run.first().is_some_and(|first| first.side != entry.side) {
                self.append(wallet_of(run[0].side), &run, &made);
                run.clear();
            }
            if entry.principal {
                self.append(wallet_of(run.first().map_or(entry.side, |e| e.side)), &run, &made);
                run.clear();
                self.append(wallet_of(entry.side), &[entry], &made);
                self.queue(&format!("SET {} = LAST_INSERT_ID()", principal_id(entry.side)));
                made.push(entry.side);
            } else {
                run.push(entry);
            }
        }
        if let Some(first) = run.first() {
            self.append(wallet_of(first.side), &run, &made);
        }
        // A principal that points at one made after it (a transfer's sending side).
        let mut seen: Vec<Side> = Vec::new();
        for entry in plan.entries.iter().filter(|e| e.principal) {
            if let Some(Related::Principal(side)) = entry.related
                && !seen.contains(&side)
            {
                self.queue(&format!(
                    "UPDATE point_transactions SET related_id = {} WHERE id = {}",
                    principal_id(side),
                    principal_id(entry.side)
                ));
            }
            seen.push(entry.side);
        }
        if !plan.new_lots.is_empty() {
            let rows: Vec<String> = plan
                .new_lots
                .iter()
                .map(|l| {
                    format!(
                        "({}, {}, {}, {}, {}, {})",
                        wallet_of(l.side).id,
                        principal_id(l.side),
                        l.amount,
                        l.amount,
                        instant(l.expires_at),
                        instant(self.now)
                    )
                })
                .collect();
            self.queue(&format!(
                "INSERT INTO point_lots (wallet_id, transaction_id, amount, remaining, expires_at, created_at) VALUES {}",
                rows.join(", ")
            ));
        }
        if !plan.drawn.is_empty() {
            let rows: Vec<String> = plan
                .drawn
                .iter()
                .map(|a| format!("(@t, {}, {})", a.lot_id, a.amount))
                .collect();
            self.queue(&format!(
                "INSERT INTO point_allocations (transaction_id, lot_id, amount) VALUES {}",
                rows.join(", ")
            ));
        }
        if let Some(cancelled) = plan.cancels {
            self.queue(&format!(
                "UPDATE point_transactions SET cancelled_by = @t WHERE id = {cancelled}"
            ));
        }
        self.save_lots(&plan.lots);
        for (side, balance) in &plan.balances {
            self.queue(&format!(
                "UPDATE point_wallets SET balance = {balance}, updated_at = {} WHERE id = {}",
                instant(self.now),
                wallet_of(*side).id
            ));
        }
    }

    /// Queues the lots' changes: one statement, a CASE per column. In one batch it costs no round
    /// trip more than one per lot would, and MariaDB runs it faster than a multi-table UPDATE.
    fn save_lots(&mut self, changes: &[LotChange]) {
        if changes.is_empty() {
            return;
        }
        let remaining: String = changes
            .iter()
            .map(|c| format!(" WHEN {} THEN {}", c.id, c.remaining))
            .collect();
        let expired: String = changes
            .iter()
            .map(|c| format!(" WHEN {} THEN {}", c.id, c.expired))
            .collect();
        // CASE needs at least one WHEN: the amount clause only when a transfer added to a lot.
        let added: String = changes
            .iter()
            .filter(|c| c.added > 0)
            .map(|c| format!(" WHEN {} THEN {}", c.id, c.added))
            .collect();
        let added = if added.is_empty() {
            String::new()
        } else {
            format!("amount = amount + CASE id{added} ELSE 0 END, ")
        };
        let ids: Vec<String> = changes.iter().map(|c| c.id.to_string()).collect();
        self.queue(&format!(
            "UPDATE point_lots SET {added}remaining = CASE id{remaining} END, \
             expired = expired + CASE id{expired} ELSE 0 END WHERE id IN ({})",
            ids.join(", ")
        ));
    }

    /// Sends the batch with the key's record and the COMMIT: the effect and its record commit
    /// together or not at all. The only unique key the batch can collide on is the key's own, so
    /// "duplicate" means a request with the key committed first (the server runs nothing after
    /// the failed statement, and the transaction is rolled back).
    async fn commit(mut self, key: &str, fingerprint: &str, answer: Answer) -> Result<Outcome, Failed> {
        self.queue_key(key, fingerprint, answer);
        self.queue("COMMIT");
        // Session variables outlive a batch on its connection: only those this batch set are read.
        let (transaction, to_transaction) = match answer {
            Answer::Refused(_) => ("NULL", "NULL"),
            Answer::Done { to_balance: None, .. } => ("@t", "NULL"),
            Answer::Done { .. } => ("@t", "@t2"),
        };
        self.queue(&format!(
            "SELECT CAST({transaction} AS CHAR) AS t, CAST({to_transaction} AS CHAR) AS t2"
        ));
        let batch = std::mem::take(&mut self.batch);
        let sent = sqlx::raw_sql(sqlx::AssertSqlSafe(batch)).fetch_all(&mut *self.tx).await;
        let rows = sent.map_err(|e| match error_number(&e) {
            Some(ER_DUP_ENTRY) => Failed::KeyTaken,
            Some(ER_LOCK_WAIT_TIMEOUT) => Failed::KeyBusy,
            _ => Failed::Db(e),
        })?;
        let id = |column: &str| -> Result<Option<u64>, Failed> {
            let text: Option<String> = match rows.last() {
                Some(row) => row.try_get(column)?,
                None => None,
            };
            Ok(text.and_then(|t| t.parse().ok()))
        };
        Ok(match answer {
            Answer::Refused(r) => Outcome::Refused(r),
            Answer::Done { balance, to_balance } => Outcome::Done(Receipt {
                transaction_id: id("t")?.ok_or(Failed::Db(sqlx::Error::RowNotFound))?,
                balance,
                to_transaction_id: id("t2")?,
                to_balance,
            }),
        })
    }

    /// Queues the key's record (the receipt or the refusal, in columns): the transaction's last
    /// insert, so the effect and its record commit together.
    fn queue_key(&mut self, key: &str, fingerprint: &str, answer: Answer) {
        let null = || "NULL".to_owned();
        let (transaction, balance, to_transaction, to_balance, refusal) = match answer {
            Answer::Refused(r) => (null(), null(), null(), null(), text(r.as_str())),
            Answer::Done {
                balance,
                to_balance: None,
            } => ("@t".to_owned(), balance.to_string(), null(), null(), null()),
            Answer::Done {
                balance,
                to_balance: Some(to),
            } => (
                "@t".to_owned(),
                balance.to_string(),
                "@t2".to_owned(),
                to.to_string(),
                null(),
            ),
        };
        let record = format!(
            "INSERT INTO idempotency_keys (partner_id, idempotency_key, request_hash, transaction_id, balance, \
             to_transaction_id, to_balance, refusal, created_at) VALUES ({}, {}, {}, {transaction}, {balance}, \
             {to_transaction}, {to_balance}, {refusal}, {})",
            text(self.partner),
            text(key),
            text(fingerprint),
            instant(self.now)
        );
        self.queue(&record);
    }

    /// Locks what `operation` names, in the one global order: a transfer's two wallets by
    /// ascending user id within the partner (the unique key's order); a cancel's wallet, then
    /// its entry. `owner`: a cancelled entry's wallet and partner, read before this transaction
    /// began (they never change).
    async fn lock_for(
        &mut self,
        operation: &Operation,
        owner: Option<(u64, String)>,
    ) -> Result<(Locked, Option<Wallet>, Option<Wallet>), sqlx::Error> {
        let mut locked = Locked::default();
        let (own, receiver) = match operation {
            Operation::Earn { user, .. } | Operation::Use { user, .. } => {
                (self.lock(WalletRef::Owner(user.as_str())).await?, None)
            }
            Operation::Cancel { transaction } => match owner.filter(|(_, p)| p == self.partner) {
                Some((wallet_id, _)) => {
                    let own = self.lock(WalletRef::Id(wallet_id)).await?;
                    locked.target = Some(self.target(*transaction).await?);
                    (own, None)
                }
                None => (None, None),
            },
            Operation::Transfer { request } => {
                let (from, to) = (request.from_user_id.as_str(), request.to_user_id.as_str());
                let (first, second) = if from < to { (from, to) } else { (to, from) };
                let first = self.lock(WalletRef::Owner(first)).await?;
                let second = self.lock(WalletRef::Owner(second)).await?;
                if from < to { (first, second) } else { (second, first) }
            }
        };
        locked.wallet = own.as_ref().map(|w| w.state.clone());
        locked.receiver = receiver.as_ref().map(|w| w.state.clone());
        Ok((locked, own, receiver))
    }
}

/// Which wallet to lock.
#[derive(Clone, Copy)]
enum WalletRef<'a> {
    Owner(&'a str),
    Id(u64),
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
        };
        let (locked, own, receiver) = write.lock_for(operation, owner).await?;
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

    /// Wallets, lots and history that disagree: the `fcfs-admin points verify` check. Every
    /// wallet's balance must equal the sum of its lots' remainders and the sum of its history;
    /// every lot's amount must equal what is left, what expired, and what uses and transfers
    /// not cancelled drew from it.
    pub async fn verify_points(&self, partner: Option<&str>) -> Result<PointsAudit, Unavailable> {
        let pool = self.db().await?;
        let scope = if partner.is_some() {
            "w.partner_id = ?"
        } else {
            "? IS NULL"
        };
        let wallets: (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM point_wallets w WHERE {scope}"
        )))
        .bind(partner)
        .fetch_one(&pool)
        .await
        .map_err(unavailable)?;
        // Both sums per wallet, each from its own index (lots by wallet, history by wallet).
        let off: Vec<(u64, String, String, u64, i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT w.id, w.partner_id, w.user_id, w.balance, \
             CAST((SELECT COALESCE(SUM(l.remaining), 0) FROM point_lots l WHERE l.wallet_id = w.id) AS SIGNED) AS lots, \
             CAST((SELECT COALESCE(SUM(t.amount), 0) FROM point_transactions t WHERE t.wallet_id = w.id) AS SIGNED) \
             AS history FROM point_wallets w WHERE {scope} HAVING w.balance <> lots OR w.balance <> history \
             ORDER BY w.id LIMIT 100"
        )))
        .bind(partner)
        .fetch_all(&pool)
        .await
        .map_err(unavailable)?;
        let off_allocations: Vec<(u64,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT l.id FROM point_lots l JOIN point_wallets w ON w.id = l.wallet_id \
             LEFT JOIN (SELECT a.lot_id, SUM(a.amount) AS drawn FROM point_allocations a \
                        JOIN point_transactions t ON t.id = a.transaction_id \
                        WHERE t.cancelled_by IS NULL GROUP BY a.lot_id) d ON d.lot_id = l.id \
             WHERE {scope} AND l.amount <> l.remaining + l.expired + COALESCE(d.drawn, 0) ORDER BY l.id LIMIT 100"
        )))
        .bind(partner)
        .fetch_all(&pool)
        .await
        .map_err(unavailable)?;
        Ok(PointsAudit {
            wallets: wallets.0 as u64,
            wallets_off: off
                .into_iter()
                .map(
                    |(wallet_id, partner_id, user_id, balance, lots, history)| WalletMismatch {
                        wallet_id,
                        partner_id,
                        user_id,
                        balance,
                        lots,
                        history,
                    },
                )
                .collect(),
            lots_not_allocations: off_allocations.into_iter().map(|(id,)| id).collect(),
        })
    }
}

/// What `verify_points` found (at most 100 of each kind).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PointsAudit {
    pub wallets: u64,
    /// Wallets whose balance is not Σ lot remainders or not Σ history amounts.
    pub wallets_off: Vec<WalletMismatch>,
    /// Lots whose amount is not remaining + expired + what live uses and transfers drew.
    pub lots_not_allocations: Vec<u64>,
}

impl PointsAudit {
    pub fn is_clean(&self) -> bool {
        self.wallets_off.is_empty() && self.lots_not_allocations.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WalletMismatch {
    pub wallet_id: u64,
    pub partner_id: String,
    pub user_id: String,
    pub balance: u64,
    /// Σ remaining of its lots.
    pub lots: i64,
    /// Σ amount of its history.
    pub history: i64,
}

impl MySqlStore {
    /// `PointRecords::apply`, without its deadline.
    async fn apply_untimed(
        &self,
        partner: &str,
        key: &IdempotencyKey,
        operation: &Operation,
        now: DateTime<Utc>,
    ) -> Result<Applied, PointsError> {
        // No look-up of the key first: that would cost every request a round trip for the sake of
        // the rare retry, and the key's insert at commit catches every repeat anyway (the repeat's
        // own effect is then rolled back and the first outcome replayed).
        let fingerprint = operation.fingerprint();
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
    ) -> Result<Applied, PointsError> {
        self.timed(self.apply_untimed(partner, key, operation, now)).await
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
}

/// Expires the due lots of those of `wallets` no write holds (skipped, not waited for: the
/// sweep never waits on a live write, so it cannot deadlock with one), at most `max_lots`.
async fn expire_wallets(
    pool: &sqlx::MySqlPool,
    wallets: &[u64],
    now: DateTime<Utc>,
    max_lots: u32,
) -> Result<(u64, HashSet<u64>), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut lock =
        QueryBuilder::<MySql>::new("SELECT id, partner_id, user_id, balance FROM point_wallets WHERE id IN (");
    let mut ids = lock.separated(", ");
    for id in wallets {
        ids.push_bind(id);
    }
    lock.push(") ORDER BY id FOR UPDATE SKIP LOCKED");
    let locked: Vec<(u64, String, String, u64)> = lock.build_query_as().fetch_all(&mut *tx).await?;
    let locked_ids: HashSet<u64> = locked.iter().map(|w| w.0).collect();
    if locked.is_empty() {
        return Ok((0, locked_ids));
    }
    let mut due =
        QueryBuilder::<MySql>::new("SELECT id, wallet_id, remaining, expires_at FROM point_lots WHERE wallet_id IN (");
    let mut ids = due.separated(", ");
    for (id, ..) in &locked {
        ids.push_bind(id);
    }
    due.push(") AND remaining > 0 AND expires_at <= ")
        .push_bind(now.naive_utc())
        .push(" ORDER BY wallet_id, expires_at, id LIMIT ")
        .push_bind(max_lots);
    let lots: Vec<(u64, u64, u64, chrono::NaiveDateTime)> = due.build_query_as().fetch_all(&mut *tx).await?;
    if lots.is_empty() {
        return Ok((0, locked_ids));
    }
    let mut by_wallet: BTreeMap<u64, Vec<Lot>> = BTreeMap::new();
    for &(id, wallet, remaining, expires_at) in &lots {
        by_wallet.entry(wallet).or_default().push(Lot {
            id,
            remaining,
            expires_at: utc(expires_at),
        });
    }
    // The ledger's own expiry, wallet by wallet: what every write does first.
    let owners: BTreeMap<u64, (String, String, u64)> =
        locked.into_iter().map(|(id, p, u, b)| (id, (p, u, b))).collect();
    let mut entries: Vec<(u64, PlannedEntry)> = Vec::with_capacity(lots.len());
    let mut changes: Vec<LotChange> = Vec::with_capacity(lots.len());
    let mut balances: Vec<(u64, u64)> = Vec::with_capacity(by_wallet.len());
    for (wallet, due) in &by_wallet {
        let (_, _, balance) = owners[wallet];
        let (expiring, expired, after) = ledger::expire(Side::Own, balance, due);
        entries.extend(expiring.into_iter().map(|e| (*wallet, e)));
        changes.extend(expired);
        balances.push((*wallet, after));
    }
    let mut history = QueryBuilder::<MySql>::new(
        "INSERT INTO point_transactions (wallet_id, partner_id, user_id, kind, amount, balance_after, lot_id, created_at) ",
    );
    history.push_values(&entries, |mut row, (wallet, entry)| {
        let (partner, user, _) = &owners[wallet];
        row.push_bind(wallet)
            .push_bind(partner)
            .push_bind(user)
            .push_bind(entry.movement.as_str())
            .push_bind(entry.amount)
            .push_bind(entry.balance_after)
            .push_bind(entry.lot_id)
            .push_bind(now.naive_utc());
    });
    history.build().execute(&mut *tx).await?;
    let mut expire = QueryBuilder::<MySql>::new("UPDATE point_lots SET remaining = 0, expired = expired + CASE id");
    for c in &changes {
        expire
            .push(" WHEN ")
            .push_bind(c.id)
            .push(" THEN ")
            .push_bind(c.expired);
    }
    expire.push(" END WHERE id IN (");
    let mut ids = expire.separated(", ");
    for c in &changes {
        ids.push_bind(c.id);
    }
    expire.push(")");
    expire.build().execute(&mut *tx).await?;
    let mut update = QueryBuilder::<MySql>::new("UPDATE point_wallets SET balance = CASE id");
    for (id, balance) in &balances {
        update.push(" WHEN ").push_bind(id).push(" THEN ").push_bind(balance);
    }
    update
        .push(" END, updated_at = ")
        .push_bind(now.naive_utc())
        .push(" WHERE id IN (");
    let mut ids = update.separated(", ");
    for (id, _) in &balances {
        ids.push_bind(id);
    }
    update.push(")");
    update.build().execute(&mut *tx).await?;
    tx.commit().await?;
    Ok((lots.len() as u64, locked_ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_literals_cannot_end_a_string() {
        assert_eq!(text("a'b\\c"), "_utf8mb4 X'6127625c63'");
        assert_eq!(text(""), "_utf8mb4 X''");
        assert_eq!(text("ü;"), "_utf8mb4 X'c3bc3b'");
        for hostile in ["'); DROP TABLE point_wallets; --", "\\'", "\u{0}", "X'00'"] {
            let literal = text(hostile);
            let hex = literal
                .strip_prefix("_utf8mb4 X'")
                .and_then(|l| l.strip_suffix('\''))
                .unwrap();
            assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "{literal}");
        }
        assert_eq!(optional_text(None), "NULL");
        let at = DateTime::from_timestamp_millis(1_795_420_000_123).unwrap();
        assert_eq!(instant(at), "'2026-11-23 07:46:40.123'");
    }
}
