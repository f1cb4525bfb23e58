//! The points ledger's storage of checkout holds (`PointHolds`), inside the checkout context's
//! transaction: a hold is the ledger's USE, planned and persisted as any use is, with a
//! `point_holds` row until it is confirmed (the row goes) or released (the ledger's cancel). The
//! wallet is locked first every time, so a hold's confirm, its release and a write of the wallet
//! that releases it because it ended go one at a time.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::MySqlConnection;

use super::super::{MySqlOutbox, MySqlStore, tx_error, unavailable, utc};
use super::write::{WalletRef, Write};
use crate::coupons::domain::OrderId;
use crate::events::catalog;
use crate::events::domain::EventType;
use crate::events::ports::Outbox;
use crate::kernel::{TxError, Unavailable, UserId};
use crate::points::PointsError;
use crate::points::domain::{
    Allocation, HOLD_REASON, HeldPoints, Movement, Operation, TransactionId, UsePoints, hold_ended,
};
use crate::points::ledger::{self, Answer, CancelTarget, Locked};
use crate::points::ports::PointHolds;

fn write<'t>(tx: &'t mut MySqlConnection, partner: &'t str, now: DateTime<Utc>) -> Write<'t> {
    Write {
        tx,
        partner,
        now,
        batch: String::new(),
        statements: 0,
        // No key's record is counted by a hold: the checkout's order is its key.
        counter: (now.date_naive(), 0),
        unannounced: None,
    }
}

/// Releases every hold of the (locked) wallet that has ended at `now`: each the ledger's cancel
/// of its use, sent at once so the write that follows reads the wallet as it is after.
pub(super) async fn release_ended(write: &mut Write<'_>, wallet: u64, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
    // By the wallet's index only: a scan that wandered into other wallets' holds would lock rows
    // their own confirms are deleting (measured: a deadlock under 16 concurrent hold + confirm).
    let ended: Vec<u64> = sqlx::query_scalar(
        "SELECT transaction_id FROM point_holds FORCE INDEX (idx_point_holds_wallet) \
         WHERE wallet_id = ? AND expires_at <= ? FOR UPDATE",
    )
    .bind(wallet)
    .bind(now.naive_utc())
    .fetch_all(&mut *write.tx)
    .await?;
    for transaction in ended {
        release(write, wallet, transaction, now).await?;
    }
    Ok(())
}

/// The held use cancelled by the ledger's plan and its hold's row deleted, under the wallet's lock.
async fn release(
    write: &mut Write<'_>,
    wallet: u64,
    transaction: TransactionId,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let own = write
        .lock(WalletRef::Id(wallet))
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    // The hold releases what it holds: its own cancel, which no other cancel may make.
    let target = CancelTarget {
        held: false,
        ..write.target(transaction).await?
    };
    let locked = Locked {
        wallet: Some(own.state.clone()),
        receiver: None,
        target: Some(target),
    };
    let plan = ledger::plan(&Operation::Cancel { transaction }, locked, now);
    if let Answer::Done { .. } = plan.answer {
        write.unannounced = Some(Movement::UseCancel);
        write.persist(&plan, &own, None);
        write.unannounced = None;
    }
    write.queue(&format!("DELETE FROM point_holds WHERE transaction_id = {transaction}"));
    write.flush().await?;
    Ok(())
}

/// The wallet a held use belongs to, if it is still held (read before its wallet is locked; a
/// hold's wallet never changes).
async fn held_wallet(tx: &mut MySqlConnection, transaction: TransactionId) -> Result<Option<u64>, sqlx::Error> {
    sqlx::query_scalar("SELECT wallet_id FROM point_holds WHERE transaction_id = ?")
        .bind(transaction)
        .fetch_optional(&mut *tx)
        .await
}

/// Whether the held use is still held, read under its wallet's lock.
async fn still_held(tx: &mut MySqlConnection, transaction: TransactionId) -> Result<bool, sqlx::Error> {
    let row: Option<u64> =
        sqlx::query_scalar("SELECT transaction_id FROM point_holds WHERE transaction_id = ? FOR UPDATE")
            .bind(transaction)
            .fetch_optional(&mut *tx)
            .await?;
    Ok(row.is_some())
}

/// The wallet's held points, with what each drew (`PointRecords::holds`).
pub(super) async fn held_points(
    store: &MySqlStore,
    partner: &str,
    user: &UserId,
) -> Result<Vec<HeldPoints>, Unavailable> {
    type Row = (
        u64,
        u64,
        chrono::NaiveDateTime,
        Option<u64>,
        Option<u64>,
        Option<chrono::NaiveDateTime>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT h.transaction_id, h.amount, h.expires_at, a.lot_id, a.amount, l.expires_at \
         FROM point_wallets w JOIN point_holds h ON h.wallet_id = w.id \
         LEFT JOIN point_allocations a ON a.transaction_id = h.transaction_id \
         LEFT JOIN point_lots l ON l.id = a.lot_id \
         WHERE w.partner_id = ? AND w.user_id = ?",
    )
    .bind(partner)
    .bind(user.as_str())
    .fetch_all(&store.db().await?)
    .await
    .map_err(unavailable)?;
    let mut holds: BTreeMap<TransactionId, HeldPoints> = BTreeMap::new();
    for (transaction_id, amount, expires_at, lot, drawn, lot_expires_at) in rows {
        let hold = holds.entry(transaction_id).or_insert_with(|| HeldPoints {
            transaction_id,
            amount,
            expires_at: utc(expires_at),
            drawn: Vec::new(),
        });
        if let (Some(lot_id), Some(amount), Some(at)) = (lot, drawn, lot_expires_at) {
            hold.drawn.push(Allocation {
                lot_id,
                amount,
                expires_at: utc(at),
            });
        }
    }
    Ok(holds.into_values().collect())
}

#[async_trait]
impl PointHolds<MySqlConnection> for MySqlStore {
    async fn hold_points(
        &self,
        tx: &mut MySqlConnection,
        partner: &str,
        user: &UserId,
        amount: u64,
        order: &OrderId,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Result<TransactionId, PointsError>, TxError> {
        let mut write = write(tx, partner, now);
        let Some(wallet) = write.lock(WalletRef::Owner(user.as_str())).await.map_err(tx_error)? else {
            return Ok(Err(PointsError::InsufficientPoints));
        };
        // Its holds that have ended are released first, as before any write of a wallet.
        let own = if wallet.first_hold_end.is_some_and(|end| hold_ended(end, now)) {
            release_ended(&mut write, wallet.id, now).await.map_err(tx_error)?;
            write
                .lock(WalletRef::Id(wallet.id))
                .await
                .map_err(tx_error)?
                .ok_or_else(|| tx_error(sqlx::Error::RowNotFound))?
        } else {
            wallet
        };
        let operation = Operation::Use {
            user: user.clone(),
            request: UsePoints {
                amount,
                order_id: order.clone(),
                reason: Some(HOLD_REASON.to_owned()),
            },
        };
        let locked = Locked {
            wallet: Some(own.state.clone()),
            ..Locked::default()
        };
        let plan = ledger::plan(&operation, locked, now);
        if let Answer::Refused(refusal) = plan.answer {
            return Ok(Err(refusal.into()));
        }
        write.unannounced = Some(Movement::Use);
        write.persist(&plan, &own, None);
        write.queue(&format!(
            "INSERT INTO point_holds (transaction_id, wallet_id, amount, expires_at) VALUES (@t, {}, {amount}, '{}')",
            own.id,
            until.naive_utc().format("%Y-%m-%d %H:%M:%S%.3f")
        ));
        let made = write.flush().await.map_err(tx_error)?;
        made.map(Ok)
            .ok_or_else(|| TxError::Unavailable(Unavailable::new("mysql", "a held use left no entry")))
    }

    async fn confirm_points_hold(&self, tx: &mut MySqlConnection, transaction: TransactionId) -> Result<bool, TxError> {
        let Some(wallet) = held_wallet(tx, transaction).await.map_err(tx_error)? else {
            return Ok(false);
        };
        sqlx::query("SELECT id FROM point_wallets WHERE id = ? FOR UPDATE")
            .bind(wallet)
            .execute(&mut *tx)
            .await
            .map_err(tx_error)?;
        if !still_held(tx, transaction).await.map_err(tx_error)? {
            return Ok(false);
        }
        sqlx::query("DELETE FROM point_holds WHERE transaction_id = ?")
            .bind(transaction)
            .execute(&mut *tx)
            .await
            .map_err(tx_error)?;
        // The use is the partner's to hear of now, as a one-step use would have been.
        let (partner, user, amount, balance_after, order_id): (String, String, i64, u64, Option<String>) =
            sqlx::query_as(
                "SELECT partner_id, user_id, amount, balance_after, order_id FROM point_transactions WHERE id = ?",
            )
            .bind(transaction)
            .fetch_one(&mut *tx)
            .await
            .map_err(tx_error)?;
        let mut used = catalog::points_entry(
            &partner,
            EventType::PointsUsed,
            &user,
            amount.unsigned_abs(),
            balance_after,
            serde_json::json!({ "orderId": order_id }),
            Utc::now(),
        );
        if let Some(data) = used.data.as_object_mut() {
            data.insert("transactionId".to_owned(), transaction.to_string().into());
        }
        MySqlOutbox.append(tx, &[used]).await.map_err(TxError::Unavailable)?;
        Ok(true)
    }

    async fn release_points_hold(
        &self,
        tx: &mut MySqlConnection,
        transaction: TransactionId,
        now: DateTime<Utc>,
    ) -> Result<(), TxError> {
        let Some(wallet) = held_wallet(tx, transaction).await.map_err(tx_error)? else {
            return Ok(());
        };
        let partner: String = sqlx::query_scalar("SELECT partner_id FROM point_wallets WHERE id = ?")
            .bind(wallet)
            .fetch_one(&mut *tx)
            .await
            .map_err(tx_error)?;
        let mut write = write(tx, &partner, now);
        write.lock(WalletRef::Id(wallet)).await.map_err(tx_error)?;
        if still_held(&mut *write.tx, transaction).await.map_err(tx_error)? {
            release(&mut write, wallet, transaction, now).await.map_err(tx_error)?;
        }
        Ok(())
    }
}
