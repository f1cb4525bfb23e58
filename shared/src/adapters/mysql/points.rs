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
use sqlx::mysql::{MySqlDatabaseError, MySqlRow};
use sqlx::{MySql, QueryBuilder, Row, Transaction};

use super::{MySqlStore, unavailable, utc};
use crate::kernel::{Unavailable, UserId};
use crate::points::PointsError;
use crate::points::domain::{
    Allocation, EarnPoints, Entry, HistoryQuery, IdempotencyKey, Lot, Movement, Operation, Outcome, Receipt, Refusal,
    TransactionId, TransferPoints, UsePoints, allocate, split_cancel,
};
use crate::points::ports::{Applied, PointRecords};

/// Attempts of one write when InnoDB picks it as a deadlock victim or a row lock wait times out.
const MAX_ATTEMPTS: u32 = 3;
pub(super) const ER_DUP_ENTRY: u16 = 1062;
pub(super) const ER_LOCK_WAIT_TIMEOUT: u16 = 1205;
pub(super) const ER_LOCK_DEADLOCK: u16 = 1213;

/// Writes retried after a deadlock or lock-wait timeout, process-wide (the tests expect 0).
static LOCK_RETRIES: AtomicU64 = AtomicU64::new(0);

pub fn lock_retries() -> u64 {
    LOCK_RETRIES.load(Ordering::Relaxed)
}

pub(super) fn error_number(e: &sqlx::Error) -> Option<u16> {
    e.as_database_error()?
        .try_downcast_ref::<MySqlDatabaseError>()
        .map(MySqlDatabaseError::number)
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

#[derive(Debug, Clone)]
struct Wallet {
    id: u64,
    user_id: String,
    balance: u64,
}

fn wallet_from(row: &MySqlRow) -> Result<Wallet, sqlx::Error> {
    Ok(Wallet {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        balance: row.try_get("balance")?,
    })
}

fn lot_from(row: &MySqlRow) -> Result<Lot, sqlx::Error> {
    Ok(Lot {
        id: row.try_get("id")?,
        remaining: row.try_get("remaining")?,
        expires_at: utc(row.try_get("expires_at")?),
    })
}

/// A lot's new remainder, and what expired of it in this write.
#[derive(Debug, Clone, Copy)]
struct LotChange {
    id: u64,
    remaining: u64,
    expired: u64,
    /// Points a transfer added to a lot of the same expiry (its amount grows with its remainder).
    added: u64,
}

/// A history entry to append (its id comes from the insert).
struct NewEntry<'a> {
    movement: Movement,
    amount: i64,
    balance_after: u64,
    reason: Option<&'a str>,
    order_id: Option<&'a str>,
    /// An SQL expression: an id, or a session variable the batch set.
    related: Option<&'a str>,
    lot_id: Option<u64>,
}

impl<'a> NewEntry<'a> {
    fn new(movement: Movement, amount: i64, balance_after: u64) -> Self {
        Self {
            movement,
            amount,
            balance_after,
            reason: None,
            order_id: None,
            related: None,
            lot_id: None,
        }
    }
}

/// One write's transaction, for one partner at one instant. Past the locking read, everything it
/// does (entries, allocations, lots, the wallet, the key's record) is gathered in `batch` and sent
/// with the COMMIT as one multi-statement round trip: the wallet's lock is held for two round
/// trips, as in a bare `SELECT … FOR UPDATE` + `UPDATE`, and on a hot wallet every round trip
/// made under its lock is paid by every writer queued behind it. Ids the batch makes are passed
/// on in session variables (`@t`, the write's entry; `@t2`, a transfer's receiving side) and
/// read back by its last statement.
struct Write<'t> {
    tx: &'t mut Transaction<'static, MySql>,
    partner: &'t str,
    now: DateTime<Utc>,
    batch: String,
}

/// What a write answers once the batch has told it the ids it made.
enum Answer {
    Refused(Refusal),
    Done { balance: u64, to_balance: Option<u64> },
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

impl Write<'_> {
    /// Locks the wallet row and its lots with points left (`FOR UPDATE`: a locking read sees the
    /// latest committed rows, whatever the transaction read before). Unordered: `allocate` orders
    /// them, and a sort in the database would cost the lock holder time.
    async fn lock(&mut self, wallet: WalletRef<'_>) -> Result<Option<(Wallet, Vec<Lot>)>, sqlx::Error> {
        let select = "SELECT w.id, w.user_id, w.balance, l.id AS lot_id, l.remaining, l.expires_at \
                      FROM point_wallets w LEFT JOIN point_lots l ON l.wallet_id = w.id AND l.remaining > 0";
        let rows = match wallet {
            WalletRef::Owner(user) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "{select} WHERE w.partner_id = ? AND w.user_id = ? FOR UPDATE"
                )))
                .bind(self.partner)
                .bind(user)
                .fetch_all(&mut **self.tx)
                .await?
            }
            WalletRef::Id(id) => {
                sqlx::query(sqlx::AssertSqlSafe(format!("{select} WHERE w.id = ? FOR UPDATE")))
                    .bind(id)
                    .fetch_all(&mut **self.tx)
                    .await?
            }
        };
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let wallet = wallet_from(first)?;
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
        Ok(Some((wallet, lots)))
    }

    fn queue(&mut self, statement: &str) {
        self.batch.push_str(statement);
        self.batch.push_str(";\n");
    }

    /// Lots past their time lose what is left of them: an EXPIRE entry each, queued before
    /// anything else this write does (so the history reads in order and the balance it answers is
    /// what is spendable).
    fn expire_due(&mut self, wallet: &mut Wallet, lots: &mut Vec<Lot>, changes: &mut Vec<LotChange>) {
        let due: Vec<Lot> = lots.iter().filter(|l| l.is_due(self.now)).copied().collect();
        lots.retain(|l| !l.is_due(self.now));
        let mut entries = Vec::new();
        for lot in due {
            wallet.balance -= lot.remaining;
            changes.push(LotChange {
                id: lot.id,
                remaining: 0,
                expired: lot.remaining,
                added: 0,
            });
            entries.push(NewEntry {
                lot_id: Some(lot.id),
                ..NewEntry::new(Movement::Expire, -(lot.remaining as i64), wallet.balance)
            });
        }
        self.append(wallet, &entries);
    }

    /// Queues entries, in order; `LAST_INSERT_ID()` is then the first one's id.
    fn append(&mut self, wallet: &Wallet, entries: &[NewEntry<'_>]) {
        if entries.is_empty() {
            return;
        }
        let rows: Vec<String> = entries
            .iter()
            .map(|e| {
                format!(
                    "({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {})",
                    wallet.id,
                    text(self.partner),
                    text(&wallet.user_id),
                    text(e.movement.as_str()),
                    e.amount,
                    e.balance_after,
                    optional_text(e.reason),
                    optional_text(e.order_id),
                    e.related.unwrap_or("NULL"),
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

    /// Queues the write's own entry and keeps its id in `variable`.
    fn append_as(&mut self, variable: &str, wallet: &Wallet, entry: &NewEntry<'_>) {
        self.append(wallet, std::slice::from_ref(entry));
        self.queue(&format!("SET {variable} = LAST_INSERT_ID()"));
    }

    fn allocate_to(&mut self, transaction: &str, drawn: &[Allocation]) {
        let rows: Vec<String> = drawn
            .iter()
            .map(|a| format!("({transaction}, {}, {})", a.lot_id, a.amount))
            .collect();
        self.queue(&format!(
            "INSERT INTO point_allocations (transaction_id, lot_id, amount) VALUES {}",
            rows.join(", ")
        ));
    }

    /// Queues the wallet's new balance and its lots' changes.
    fn save(&mut self, wallet: &Wallet, changes: &[LotChange]) {
        let changes = merge(changes);
        if changes.is_empty() {
            self.queue(&format!(
                "UPDATE point_wallets SET balance = {}, updated_at = {} WHERE id = {}",
                wallet.balance,
                instant(self.now),
                wallet.id
            ));
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
        // Two single-table statements: in one batch they cost no round trip more, and MariaDB runs
        // them faster than one multi-table UPDATE.
        self.queue(&format!(
            "UPDATE point_lots SET {added}remaining = CASE id{remaining} END, \
             expired = expired + CASE id{expired} ELSE 0 END WHERE id IN ({})",
            ids.join(", ")
        ));
        self.queue(&format!(
            "UPDATE point_wallets SET balance = {}, updated_at = {} WHERE id = {}",
            wallet.balance,
            instant(self.now),
            wallet.id
        ));
    }

    /// Sends the batch with the key's record and the COMMIT: the effect and its record commit
    /// together or not at all. The only unique key the batch can collide on is the key's own, so
    /// "duplicate" means a request with the key committed first (the server runs nothing after
    /// the failed statement, and the transaction is rolled back).
    async fn commit(mut self, key: &IdempotencyKey, fingerprint: &str, answer: Answer) -> Result<Outcome, Failed> {
        // Session variables outlive a batch on its connection: only those this batch set are read.
        let null = || "NULL".to_owned();
        let (transaction, balance, to_transaction, to_balance, refusal) = match &answer {
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
            text(key.as_str()),
            text(fingerprint),
            instant(self.now)
        );
        self.queue(&record);
        self.queue("COMMIT");
        self.queue(&format!(
            "SELECT CAST({transaction} AS CHAR) AS t, CAST({to_transaction} AS CHAR) AS t2"
        ));
        let batch = std::mem::take(&mut self.batch);
        let sent = sqlx::raw_sql(sqlx::AssertSqlSafe(batch))
            .fetch_all(&mut **self.tx)
            .await;
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

    async fn earn(
        &mut self,
        user: &UserId,
        request: &EarnPoints,
        expires_at: DateTime<Utc>,
    ) -> Result<Answer, sqlx::Error> {
        let (mut wallet, mut lots) = self
            .lock(WalletRef::Owner(user.as_str()))
            .await?
            .ok_or(sqlx::Error::RowNotFound)?;
        let mut changes = Vec::new();
        self.expire_due(&mut wallet, &mut lots, &mut changes);
        wallet.balance += request.amount;
        let entry = NewEntry {
            reason: Some(&request.reason),
            ..NewEntry::new(Movement::Earn, request.amount as i64, wallet.balance)
        };
        self.append_as("@t", &wallet, &entry);
        self.queue(&format!(
            "INSERT INTO point_lots (wallet_id, transaction_id, amount, remaining, expires_at, created_at) \
             VALUES ({}, @t, {}, {}, {}, {})",
            wallet.id,
            request.amount,
            request.amount,
            instant(expires_at),
            instant(self.now)
        ));
        self.save(&wallet, &changes);
        Ok(Answer::Done {
            balance: wallet.balance,
            to_balance: None,
        })
    }

    async fn use_points(&mut self, user: &UserId, request: &UsePoints) -> Result<Answer, sqlx::Error> {
        let Some((mut wallet, mut lots)) = self.lock(WalletRef::Owner(user.as_str())).await? else {
            return Ok(Answer::Refused(Refusal::InsufficientPoints));
        };
        // Refused before anything is queued: a refusal changes nothing.
        let Some(drawn) = allocate(&lots, request.amount, self.now) else {
            return Ok(Answer::Refused(Refusal::InsufficientPoints));
        };
        let mut changes = Vec::new();
        self.expire_due(&mut wallet, &mut lots, &mut changes);
        wallet.balance -= request.amount;
        let entry = NewEntry {
            reason: request.reason.as_deref(),
            order_id: Some(request.order_id.as_str()),
            ..NewEntry::new(Movement::Use, -(request.amount as i64), wallet.balance)
        };
        self.append_as("@t", &wallet, &entry);
        changes.extend(draw(&lots, &drawn));
        self.allocate_to("@t", &drawn);
        self.save(&wallet, &changes);
        Ok(Answer::Done {
            balance: wallet.balance,
            to_balance: None,
        })
    }

    /// `owner`: the transaction's wallet and partner, read before this transaction began (they
    /// never change).
    async fn cancel(
        &mut self,
        transaction: TransactionId,
        owner: Option<(u64, String)>,
    ) -> Result<Answer, sqlx::Error> {
        let Some((wallet_id, _)) = owner.filter(|(_, p)| p == self.partner) else {
            return Ok(Answer::Refused(Refusal::TransactionNotFound));
        };
        let (mut wallet, mut lots) = self
            .lock(WalletRef::Id(wallet_id))
            .await?
            .ok_or(sqlx::Error::RowNotFound)?;
        let (kind, amount, cancelled_by): (String, i64, Option<u64>) =
            sqlx::query_as("SELECT kind, amount, cancelled_by FROM point_transactions WHERE id = ? FOR UPDATE")
                .bind(transaction)
                .fetch_one(&mut **self.tx)
                .await?;
        if kind != Movement::Use.as_str() || cancelled_by.is_some() {
            return Ok(Answer::Refused(Refusal::NotCancellable));
        }
        let used = amount.unsigned_abs();
        let drawn: Vec<(u64, u64, u64, chrono::NaiveDateTime)> = sqlx::query_as(
            "SELECT a.lot_id, a.amount, l.remaining, l.expires_at FROM point_allocations a \
             JOIN point_lots l ON l.id = a.lot_id WHERE a.transaction_id = ? FOR UPDATE",
        )
        .bind(transaction)
        .fetch_all(&mut **self.tx)
        .await?;
        let mut changes = Vec::new();
        self.expire_due(&mut wallet, &mut lots, &mut changes);
        let allocations: Vec<Allocation> = drawn
            .iter()
            .map(|&(lot_id, amount, _, expires_at)| Allocation {
                lot_id,
                amount,
                expires_at: utc(expires_at),
            })
            .collect();
        let (back, lapsed) = split_cancel(&allocations, self.now);
        // What each drawn lot holds now, after the expiry above.
        let remaining_of = |lot: u64| {
            changes
                .iter()
                .rev()
                .find(|c: &&LotChange| c.id == lot)
                .map(|c| c.remaining)
                .or_else(|| drawn.iter().find(|d| d.0 == lot).map(|d| d.2))
                .unwrap_or(0)
        };
        let lapsed_changes: Vec<LotChange> = lapsed
            .iter()
            .map(|a| LotChange {
                id: a.lot_id,
                remaining: remaining_of(a.lot_id),
                expired: a.amount,
                added: 0,
            })
            .collect();
        let back_changes: Vec<LotChange> = back
            .iter()
            .map(|a| LotChange {
                id: a.lot_id,
                remaining: remaining_of(a.lot_id) + a.amount,
                expired: 0,
                added: 0,
            })
            .collect();
        wallet.balance += used;
        let related = transaction.to_string();
        let entry = NewEntry {
            related: Some(&related),
            ..NewEntry::new(Movement::UseCancel, used as i64, wallet.balance)
        };
        self.append_as("@t", &wallet, &entry);
        let mut lapsed_entries = Vec::new();
        for a in &lapsed {
            wallet.balance -= a.amount;
            lapsed_entries.push(NewEntry {
                lot_id: Some(a.lot_id),
                related: Some("@t"),
                ..NewEntry::new(Movement::Expire, -(a.amount as i64), wallet.balance)
            });
        }
        changes.extend(lapsed_changes);
        changes.extend(back_changes);
        self.append(&wallet, &lapsed_entries);
        self.queue(&format!(
            "UPDATE point_transactions SET cancelled_by = @t WHERE id = {transaction}"
        ));
        self.save(&wallet, &changes);
        Ok(Answer::Done {
            balance: wallet.balance,
            to_balance: None,
        })
    }

    async fn transfer(&mut self, request: &TransferPoints) -> Result<Answer, sqlx::Error> {
        let (from, to) = (request.from_user_id.as_str(), request.to_user_id.as_str());
        // The global order: ascending user id within the partner (the unique key's order).
        let (first, second) = if from < to { (from, to) } else { (to, from) };
        let first = self.lock(WalletRef::Owner(first)).await?;
        let second = self.lock(WalletRef::Owner(second)).await?;
        let (sender, receiver) = if from < to { (first, second) } else { (second, first) };
        let Some((mut sender, mut sender_lots)) = sender else {
            return Ok(Answer::Refused(Refusal::InsufficientPoints));
        };
        let (mut receiver, mut receiver_lots) = receiver.ok_or(sqlx::Error::RowNotFound)?;
        let Some(drawn) = allocate(&sender_lots, request.amount, self.now) else {
            return Ok(Answer::Refused(Refusal::InsufficientPoints));
        };
        let (mut sender_changes, mut receiver_changes) = (Vec::new(), Vec::new());
        self.expire_due(&mut sender, &mut sender_lots, &mut sender_changes);
        self.expire_due(&mut receiver, &mut receiver_lots, &mut receiver_changes);
        sender.balance -= request.amount;
        receiver.balance += request.amount;
        let out = NewEntry::new(Movement::TransferOut, -(request.amount as i64), sender.balance);
        self.append_as("@t", &sender, &out);
        let into = NewEntry {
            related: Some("@t"),
            ..NewEntry::new(Movement::TransferIn, request.amount as i64, receiver.balance)
        };
        self.append_as("@t2", &receiver, &into);
        self.queue("UPDATE point_transactions SET related_id = @t2 WHERE id = @t");
        // The receiver's lots keep the sender's expiry dates: what is drawn per date joins the
        // receiver's live lot of that date, or makes a new one (so transfers back and forth do not
        // pile up lots every later write of the wallet reads under its lock).
        let mut by_date: BTreeMap<DateTime<Utc>, u64> = BTreeMap::new();
        for a in &drawn {
            *by_date.entry(a.expires_at).or_default() += a.amount;
        }
        let mut new_lots = Vec::new();
        for (expires_at, amount) in by_date {
            match receiver_lots.iter().find(|l| l.expires_at == expires_at) {
                Some(lot) => receiver_changes.push(LotChange {
                    id: lot.id,
                    remaining: lot.remaining + amount,
                    expired: 0,
                    added: amount,
                }),
                None => new_lots.push(format!(
                    "({}, @t2, {amount}, {amount}, {}, {})",
                    receiver.id,
                    instant(expires_at),
                    instant(self.now)
                )),
            }
        }
        if !new_lots.is_empty() {
            self.queue(&format!(
                "INSERT INTO point_lots (wallet_id, transaction_id, amount, remaining, expires_at, created_at) VALUES {}",
                new_lots.join(", ")
            ));
        }
        sender_changes.extend(draw(&sender_lots, &drawn));
        self.allocate_to("@t", &drawn);
        self.save(&sender, &sender_changes);
        self.save(&receiver, &receiver_changes);
        Ok(Answer::Done {
            balance: sender.balance,
            to_balance: Some(receiver.balance),
        })
    }
}

/// Which wallet to lock.
#[derive(Clone, Copy)]
enum WalletRef<'a> {
    Owner(&'a str),
    Id(u64),
}

/// One change per lot: its last remainder and everything that expired of it (a lot can expire in
/// this write and then lapse again in a cancel; a CASE takes only its first match).
fn merge(changes: &[LotChange]) -> Vec<LotChange> {
    let mut merged: Vec<LotChange> = Vec::with_capacity(changes.len());
    for c in changes {
        match merged.iter_mut().find(|m| m.id == c.id) {
            Some(m) => {
                m.remaining = c.remaining;
                m.expired += c.expired;
                m.added += c.added;
            }
            None => merged.push(*c),
        }
    }
    merged
}

/// The lots' new remainders after `drawn` is taken from them.
fn draw(lots: &[Lot], drawn: &[Allocation]) -> Vec<LotChange> {
    drawn
        .iter()
        .filter_map(|a| {
            lots.iter().find(|l| l.id == a.lot_id).map(|l| LotChange {
                id: l.id,
                remaining: l.remaining - a.amount,
                expired: 0,
                added: 0,
            })
        })
        .collect()
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
        let answer = match operation {
            Operation::Earn {
                user,
                request,
                expires_at,
            } => write.earn(user, request, *expires_at).await?,
            Operation::Use { user, request } => write.use_points(user, request).await?,
            Operation::Cancel { transaction } => write.cancel(*transaction, owner).await?,
            Operation::Transfer { request } => write.transfer(request).await?,
        };
        let outcome = write.commit(key, fingerprint, answer).await?;
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
    let mut due = QueryBuilder::<MySql>::new("SELECT id, wallet_id, remaining FROM point_lots WHERE wallet_id IN (");
    let mut ids = due.separated(", ");
    for (id, ..) in &locked {
        ids.push_bind(id);
    }
    due.push(") AND remaining > 0 AND expires_at <= ")
        .push_bind(now.naive_utc())
        .push(" ORDER BY wallet_id, expires_at, id LIMIT ")
        .push_bind(max_lots);
    let lots: Vec<(u64, u64, u64)> = due.build_query_as().fetch_all(&mut *tx).await?;
    if lots.is_empty() {
        return Ok((0, locked_ids));
    }
    let mut balances: BTreeMap<u64, (String, String, u64)> =
        locked.into_iter().map(|(id, p, u, b)| (id, (p, u, b))).collect();
    let mut history = QueryBuilder::<MySql>::new(
        "INSERT INTO point_transactions (wallet_id, partner_id, user_id, kind, amount, balance_after, lot_id, created_at) ",
    );
    let mut entries = Vec::with_capacity(lots.len());
    for &(lot, wallet, remaining) in &lots {
        let (partner, user, balance) = balances.get_mut(&wallet).expect("a locked wallet");
        *balance -= remaining;
        entries.push((wallet, partner.clone(), user.clone(), remaining, *balance, lot));
    }
    history.push_values(&entries, |mut row, (wallet, partner, user, remaining, balance, lot)| {
        row.push_bind(wallet)
            .push_bind(partner)
            .push_bind(user)
            .push_bind(Movement::Expire.as_str())
            .push_bind(-(*remaining as i64))
            .push_bind(balance)
            .push_bind(lot)
            .push_bind(now.naive_utc());
    });
    history.build().execute(&mut *tx).await?;
    let mut expire =
        QueryBuilder::<MySql>::new("UPDATE point_lots SET expired = expired + remaining, remaining = 0 WHERE id IN (");
    let mut ids = expire.separated(", ");
    for (lot, ..) in &lots {
        ids.push_bind(lot);
    }
    expire.push(")");
    expire.build().execute(&mut *tx).await?;
    let touched: HashSet<u64> = lots.iter().map(|l| l.1).collect();
    let mut update = QueryBuilder::<MySql>::new("UPDATE point_wallets SET balance = CASE id");
    for (id, (_, _, balance)) in balances.iter().filter(|(id, _)| touched.contains(id)) {
        update.push(" WHEN ").push_bind(id).push(" THEN ").push_bind(balance);
    }
    update
        .push(" END, updated_at = ")
        .push_bind(now.naive_utc())
        .push(" WHERE id IN (");
    let mut ids = update.separated(", ");
    for id in &touched {
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

    #[test]
    fn one_change_per_lot_keeps_the_last_remainder_and_every_expiry() {
        let change = |id, remaining, expired| LotChange {
            id,
            remaining,
            expired,
            added: 0,
        };
        let merged = merge(&[change(1, 0, 5), change(2, 3, 0), change(1, 0, 2)]);
        let view: Vec<_> = merged.iter().map(|c| (c.id, c.remaining, c.expired)).collect();
        assert_eq!(view, vec![(1, 0, 7), (2, 3, 0)]);
    }
}
