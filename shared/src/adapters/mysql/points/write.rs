//! One points write on MySQL: the locking reads, then the ledger's plan persisted in one
//! multi-statement batch with the key's record and the COMMIT (see `Write`).

use chrono::{DateTime, NaiveDate, Utc};
use futures_util::TryStreamExt;
use sqlx::Either;
use sqlx::{MySqlConnection, Row};

use super::super::events;
use super::{ER_DUP_ENTRY, ER_LOCK_WAIT_TIMEOUT, Failed, error_number, utc};
use crate::events::catalog;
use crate::points::domain::{Allocation, Lot, Movement, Operation, Outcome, Receipt, TransactionId};
use crate::points::ledger::{Answer, CancelTarget, Locked, LotChange, Plan, PlannedEntry, Related, Side, WalletState};

/// A wallet row as a write locks it.
#[derive(Debug, Clone)]
pub(super) struct Wallet {
    pub(super) id: u64,
    user_id: String,
    pub(super) state: WalletState,
    /// The earliest end of the wallet's held points, if any are held.
    pub(super) first_hold_end: Option<DateTime<Utc>>,
}

/// One write's transaction, for one partner at one instant. Past the locking reads, the plan the
/// ledger made (entries, allocations, lots, the wallets, the key's record) is gathered in `batch`
/// and sent with the COMMIT as one multi-statement round trip: the wallet's lock is held for two
/// round trips, as in a bare `SELECT … FOR UPDATE` + `UPDATE`, and on a hot wallet every round
/// trip made under its lock is paid by every writer queued behind it. Ids the batch makes are
/// passed on in session variables (`@t`, the own principal entry; `@t2`, a transfer's receiving
/// side) and read back by its last statement.
pub(super) struct Write<'t> {
    pub(super) tx: &'t mut MySqlConnection,
    pub(super) partner: &'t str,
    pub(super) now: DateTime<Utc>,
    pub(super) batch: String,
    /// Statements queued in `batch` so far.
    pub(super) statements: usize,
    /// The counter row (UTC day, shard) the key's record is counted in; it exists (see
    /// `MySqlStore::admit_key`), so counting takes a record lock and no gap lock.
    pub(super) counter: (NaiveDate, u8),
    /// A movement this write announces no event of: a checkout hold's USE (announced when the
    /// hold is confirmed) and its release's cancel (nothing was announced to take back).
    pub(super) unannounced: Option<Movement>,
}

/// Values written into `Write::batch`, which cannot carry bind parameters: numbers and instants
/// formatted here, text only as hex (`_utf8mb4 X'…'`), so no value can end a literal.
fn text(value: &str) -> String {
    let mut hex = String::with_capacity(12 + 2 * value.len());
    hex.push_str("_utf8mb4 X'");
    // Digit by digit rather than `format!` per byte: the batch is built while the wallet is locked.
    for b in value.bytes() {
        for nibble in [b >> 4, b & 0x0f] {
            // A nibble is always a hex digit: the fallback is never taken.
            hex.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
        }
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
    pub(super) async fn lock(&mut self, wallet: WalletRef<'_>) -> Result<Option<Wallet>, sqlx::Error> {
        let select = "SELECT w.id, w.user_id, w.balance, l.id AS lot_id, l.remaining, l.expires_at, \
                      (SELECT MIN(h.expires_at) FROM point_holds h WHERE h.wallet_id = w.id) AS first_hold_end \
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
            first_hold_end: first
                .try_get::<Option<chrono::NaiveDateTime>, _>("first_hold_end")?
                .map(utc),
        }))
    }

    /// The entry a cancel names and what it drew, locked (its wallet is locked first).
    pub(super) async fn target(&mut self, transaction: TransactionId) -> Result<CancelTarget, sqlx::Error> {
        let (kind, amount, cancelled_by, held): (String, i64, Option<u64>, i64) = sqlx::query_as(
            "SELECT kind, amount, cancelled_by, \
             CAST(EXISTS (SELECT 1 FROM point_holds h WHERE h.transaction_id = t.id) AS SIGNED) AS held \
             FROM point_transactions t WHERE id = ? FOR UPDATE",
        )
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
            held: held != 0,
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

    pub(super) fn queue(&mut self, statement: &str) {
        self.statements += 1;
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
    pub(super) fn persist(&mut self, plan: &Plan, own: &Wallet, receiver: Option<&Wallet>) {
        let wallet_of = |side: Side| match side {
            Side::Own => own,
            Side::Receiver => receiver.unwrap_or(own),
        };
        // Runs of entries up to each principal go in one INSERT; a principal alone, its id kept.
        let mut made: Vec<Side> = Vec::new();
        let mut run: Vec<&PlannedEntry> = Vec::new();
        for entry in &plan.entries {
            if let Some(first) = run.first().filter(|first| first.side != entry.side) {
                self.append(wallet_of(first.side), &run, &made);
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
        self.announce(plan, own, receiver);
        self.save_lots(&plan.lots);
        for (side, balance) in &plan.balances {
            self.queue(&format!(
                "UPDATE point_wallets SET balance = {balance}, updated_at = {} WHERE id = {}",
                instant(self.now),
                wallet_of(*side).id
            ));
        }
    }

    /// Queues the events of the plan's entries (`events::catalog::ledger_entry`), after the
    /// entries, so their ids are set.
    fn announce(&mut self, plan: &Plan, own: &Wallet, receiver: Option<&Wallet>) {
        let user_of = |side: Side| match side {
            Side::Own => own.user_id.as_str(),
            Side::Receiver => receiver.unwrap_or(own).user_id.as_str(),
        };
        let other = |side: Side| match side {
            Side::Own => Side::Receiver,
            Side::Receiver => Side::Own,
        };
        let events: Vec<_> = plan
            .entries
            .iter()
            .filter(|e| Some(e.movement) != self.unannounced)
            .filter_map(|e| {
                catalog::ledger_entry(
                    self.partner,
                    e,
                    user_of(e.side),
                    receiver.map(|_| user_of(other(e.side))),
                    principal_id(e.side),
                    principal_id(other(e.side)),
                    self.now,
                )
            })
            .collect();
        if let Some(statement) = events::append_statement(&events, text) {
            self.queue(&statement);
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
        // The counters a change adds to, each only when a lot adds to it (CASE needs at least one
        // WHEN, and a use's lot expires nothing: every clause left out is work the server skips
        // while the wallet is locked).
        let add_to = |column: &str, by: fn(&LotChange) -> u64| {
            let whens: String = changes
                .iter()
                .filter(|c| by(c) > 0)
                .map(|c| format!(" WHEN {} THEN {}", c.id, by(c)))
                .collect();
            if whens.is_empty() {
                String::new()
            } else {
                format!(", {column} = {column} + CASE id{whens} ELSE 0 END")
            }
        };
        let (added, expired) = (add_to("amount", |c| c.added), add_to("expired", |c| c.expired));
        let ids: Vec<String> = changes.iter().map(|c| c.id.to_string()).collect();
        self.queue(&format!(
            "UPDATE point_lots SET remaining = CASE id{remaining} END{added}{expired} WHERE id IN ({})",
            ids.join(", ")
        ));
    }

    /// Sends what is queued without committing (a write inside a transaction that goes on, another
    /// context's or one releasing ended holds before its own write): the id of the own principal
    /// entry the batch made, if it made one.
    pub(super) async fn flush(&mut self) -> Result<Option<TransactionId>, sqlx::Error> {
        if self.batch.is_empty() {
            return Ok(None);
        }
        // Session variables outlive a batch on its connection: only what this one set is read.
        let batch = format!(
            "SET @t = NULL;\n{}SELECT CAST(@t AS CHAR) AS t",
            std::mem::take(&mut self.batch)
        );
        self.statements = 0;
        let mut results = sqlx::raw_sql(sqlx::AssertSqlSafe(batch)).fetch_many(&mut *self.tx);
        let mut last = None;
        while let Some(item) = results.try_next().await? {
            if let Either::Right(row) = item {
                last = Some(row);
            }
        }
        drop(results);
        let made: Option<String> = match last {
            Some(row) => row.try_get("t")?,
            None => None,
        };
        Ok(made.and_then(|t| t.parse().ok()))
    }

    /// Sends the batch with the key's record and the COMMIT: the effect and its record commit
    /// together or not at all. The only unique key the batch can collide on is the key's own, so
    /// "duplicate" means a request with the key committed first (the server runs nothing after
    /// the failed statement, and the transaction is rolled back).
    pub(super) async fn commit(mut self, key: &str, fingerprint: &str, answer: Answer) -> Result<Outcome, Failed> {
        let (day, shard) = self.counter;
        // Before the key's row, so a lock wait on the key's row stays the last statement's.
        self.queue(&format!(
            "UPDATE idempotency_counts SET records = records + 1 WHERE partner_id = {} AND day = '{day}' AND shard = {shard}",
            text(self.partner)
        ));
        let key_statement = self.statements;
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
        // Statements are counted as the server finishes them, so a lock-wait timeout names its
        // statement: on the key's row it is a racing request with this key (`KeyBusy`); anywhere
        // else (a lot or an entry inserted into a gap another transaction locked, a neighbouring
        // wallet's write perhaps) it is a lock conflict like any other, retried, then a 503.
        let mut results = sqlx::raw_sql(sqlx::AssertSqlSafe(batch)).fetch_many(&mut *self.tx);
        let (mut finished, mut rows) = (0, Vec::new());
        let failed = loop {
            match results.try_next().await {
                Ok(Some(Either::Left(_))) => finished += 1,
                Ok(Some(Either::Right(row))) => rows.push(row),
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        drop(results);
        if let Some(e) = failed {
            return Err(match error_number(&e) {
                Some(ER_DUP_ENTRY) => Failed::KeyTaken,
                Some(ER_LOCK_WAIT_TIMEOUT) if finished == key_statement => Failed::KeyBusy,
                _ => Failed::Db(e),
            });
        }
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
    pub(super) async fn lock_for(
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
pub(super) enum WalletRef<'a> {
    Owner(&'a str),
    Id(u64),
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
