//! The checkout context's records on MySQL: `checkout_holds`, one row per hold. Every write is one
//! short READ COMMITTED transaction that locks, in the one global order, the hold row, then the
//! wallet (through `PointHolds`), then the coupon (through `CouponHolds`); a deadlock, a lock wait
//! past its limit or a racing insert of the same order starts it over. The rules
//! (`checkout::domain`) decide; this persists what they decided.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::mysql::MySqlRow;
use sqlx::{MySqlConnection, Row};

use super::{MySqlStore, tx_error, unavailable, utc};
use crate::checkout::CheckoutError;
use crate::checkout::domain::{
    Hold, HoldId, HoldStatus, PlaceHold, Placement, Settle, Settlement, decide_place, decide_settle, terms,
};
use crate::checkout::ports::CheckoutRecords;
use crate::coupons::ports::{CouponHolds, HoldCoupon};
use crate::kernel::{TxError, Unavailable};
use crate::points::ports::PointHolds;

/// Attempts of one checkout write when it conflicts with another.
const ATTEMPTS: u32 = 3;

const HOLD_COLUMNS: &str = "id, partner_id, user_id, order_id, request_hash, order_amount, coupon_id, discount, \
     points, points_transaction_id, status, expires_at, created_at, settled_at";

fn hold_from(row: &MySqlRow) -> Result<Hold, sqlx::Error> {
    let status: String = row.try_get("status")?;
    Ok(Hold {
        id: row.try_get("id")?,
        partner_id: row.try_get("partner_id")?,
        user_id: row.try_get("user_id")?,
        order_id: row.try_get("order_id")?,
        request_hash: row.try_get("request_hash")?,
        order_amount: row.try_get("order_amount")?,
        coupon_id: row.try_get("coupon_id")?,
        discount: row.try_get("discount")?,
        points: row.try_get("points")?,
        points_transaction: row.try_get("points_transaction_id")?,
        stored_status: HoldStatus::parse(&status)
            .ok_or_else(|| sqlx::Error::Decode(format!("hold status {status}").into()))?,
        expires_at: utc(row.try_get("expires_at")?),
        created_at: utc(row.try_get("created_at")?),
        settled_at: row.try_get::<Option<chrono::NaiveDateTime>, _>("settled_at")?.map(utc),
    })
}

/// Why a checkout transaction stopped short of its commit.
enum Stop {
    /// The rules refused: roll back, answer this.
    Refused(CheckoutError),
    Tx(TxError),
}

impl From<TxError> for Stop {
    fn from(e: TxError) -> Self {
        Self::Tx(e)
    }
}

impl From<sqlx::Error> for Stop {
    fn from(e: sqlx::Error) -> Self {
        Self::Tx(tx_error(e))
    }
}

impl From<CheckoutError> for Stop {
    fn from(e: CheckoutError) -> Self {
        Self::Refused(e)
    }
}

/// Gives back what the locked hold holds and ends it with `status` (RELEASED or EXPIRED).
async fn release(
    tx: &mut MySqlConnection,
    store: &MySqlStore,
    hold: &mut Hold,
    status: HoldStatus,
    now: DateTime<Utc>,
) -> Result<(), Stop> {
    if let Some(transaction) = hold.points_transaction {
        store.release_points_hold(tx, transaction, now).await?;
    }
    if let Some(coupon) = hold.coupon_id {
        store.release_coupon_hold(tx, coupon, hold.id).await?;
    }
    end(tx, hold, status, now).await
}

async fn end(tx: &mut MySqlConnection, hold: &mut Hold, status: HoldStatus, now: DateTime<Utc>) -> Result<(), Stop> {
    sqlx::query("UPDATE checkout_holds SET status = ?, settled_at = ? WHERE id = ?")
        .bind(status.as_str())
        .bind(now.naive_utc())
        .bind(hold.id)
        .execute(&mut *tx)
        .await?;
    hold.stored_status = status;
    hold.settled_at = Some(now);
    Ok(())
}

/// Spends what the locked hold holds. A part its context no longer holds (the hold ended at the
/// edge and a write of the wallet or the coupon released it first) makes the whole confirm a
/// `HoldExpired`, rolled back: never confirmed and released both.
async fn confirm(
    tx: &mut MySqlConnection,
    store: &MySqlStore,
    hold: &mut Hold,
    now: DateTime<Utc>,
) -> Result<(), Stop> {
    if let Some(transaction) = hold.points_transaction
        && !store.confirm_points_hold(tx, transaction).await?
    {
        return Err(Stop::Refused(CheckoutError::HoldExpired));
    }
    if let Some(coupon) = hold.coupon_id
        && store.confirm_coupon_hold(tx, coupon, hold.id, now).await?.is_err()
    {
        return Err(Stop::Refused(CheckoutError::HoldExpired));
    }
    end(tx, hold, HoldStatus::Confirmed, now).await
}

async fn place_once(
    tx: &mut MySqlConnection,
    store: &MySqlStore,
    partner: &str,
    request: &PlaceHold,
    now: DateTime<Utc>,
) -> Result<(Hold, bool), Stop> {
    let fingerprint = request.fingerprint();
    let live = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {HOLD_COLUMNS} FROM checkout_holds WHERE partner_id = ? AND live_order_id = ? FOR UPDATE"
    )))
    .bind(partner)
    .bind(request.order_id.as_str())
    .fetch_optional(&mut *tx)
    .await?
    .map(|row| hold_from(&row))
    .transpose()?;
    match decide_place(live.as_ref(), &fingerprint, now)? {
        Placement::Replay => return Ok((live.ok_or(sqlx::Error::RowNotFound)?, false)),
        Placement::ReleaseEndedThenPlace => {
            let mut ended = live.ok_or(sqlx::Error::RowNotFound)?;
            release(tx, store, &mut ended, HoldStatus::Expired, now).await?;
        }
        Placement::Place => {}
    }
    let expires_at = request.expires_at(now);
    let points = request.points.unwrap_or(0);
    let made = sqlx::query(
        "INSERT INTO checkout_holds (partner_id, user_id, order_id, request_hash, order_amount, coupon_id, discount, \
         points, status, expires_at, created_at) VALUES (?, ?, ?, ?, ?, ?, 0, ?, 'PENDING', ?, ?)",
    )
    .bind(partner)
    .bind(request.user_id.as_str())
    .bind(request.order_id.as_str())
    .bind(&fingerprint)
    .bind(request.order_amount)
    .bind(request.coupon_id)
    .bind(points)
    .bind(expires_at.naive_utc())
    .bind(now.naive_utc())
    .execute(&mut *tx)
    .await?;
    let id = made.last_insert_id();
    let points_transaction = match request.points {
        Some(amount) => Some(
            store
                .hold_points(
                    tx,
                    partner,
                    &request.user_id,
                    amount,
                    &request.order_id,
                    expires_at,
                    now,
                )
                .await?
                .map_err(CheckoutError::from)?,
        ),
        None => None,
    };
    let discount = match request.coupon_id {
        Some(coupon) => {
            let hold = HoldCoupon {
                hold_id: id,
                partner: partner.to_owned(),
                user: request.user_id.clone(),
                order_id: request.order_id.as_str().to_owned(),
                order_amount: request.order_amount,
                until: expires_at,
            };
            store
                .hold_coupon(tx, coupon, &hold, now)
                .await?
                .map_err(CheckoutError::from)?
        }
        None => 0,
    };
    let terms = terms(request.order_amount, discount, points).map_err(CheckoutError::from)?;
    sqlx::query("UPDATE checkout_holds SET discount = ?, points_transaction_id = ? WHERE id = ?")
        .bind(terms.discount)
        .bind(points_transaction)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let hold = Hold::placed(id, partner, request, terms, points_transaction, now);
    Ok((hold, true))
}

async fn settle_once(
    tx: &mut MySqlConnection,
    store: &MySqlStore,
    partner: &str,
    id: HoldId,
    asked: Settle,
    now: DateTime<Utc>,
) -> Result<Hold, Stop> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {HOLD_COLUMNS} FROM checkout_holds WHERE id = ? FOR UPDATE"
    )))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let mut hold = match row.map(|r| hold_from(&r)).transpose()? {
        Some(hold) if hold.partner_id == partner => hold,
        _ => return Err(Stop::Refused(CheckoutError::HoldNotFound)),
    };
    match decide_settle(&hold, asked, now)? {
        Settlement::Confirm => confirm(tx, store, &mut hold, now).await?,
        Settlement::Release(status) => release(tx, store, &mut hold, status, now).await?,
        Settlement::AlreadyDone => {}
    }
    Ok(hold)
}

impl MySqlStore {
    /// A READ COMMITTED connection: the locking reads lock the rows they find and no gap beside
    /// them, so two orders' holds inserted side by side do not deadlock on a gap.
    async fn checkout_connection(&self) -> Result<sqlx::pool::PoolConnection<sqlx::MySql>, Unavailable> {
        let mut conn = self.db().await?.acquire().await.map_err(unavailable)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
            .execute(&mut *conn)
            .await
            .map_err(unavailable)?;
        Ok(conn)
    }
}

/// Runs `$once` (an async fn taking the transaction first) in a transaction, committed if it
/// returns `Ok`, started over on a conflict, rolled back on a refusal.
macro_rules! checkout_transaction {
    ($store:expr, $once:ident ( $($arg:expr),* )) => {{
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut conn = $store.checkout_connection().await?;
            let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(unavailable)?;
            match $once(&mut *tx, $store, $($arg),*).await {
                Ok(value) => {
                    tx.commit().await.map_err(unavailable)?;
                    break Ok(value);
                }
                Err(Stop::Refused(e)) => break Err(e),
                Err(Stop::Tx(TxError::Conflict(e))) if attempt < ATTEMPTS => {
                    tracing::warn!(attempt, error = %e, "checkout write started over");
                }
                Err(Stop::Tx(e)) => break Err(CheckoutError::from(e)),
            }
        }
    }};
}

#[async_trait]
impl CheckoutRecords for MySqlStore {
    async fn place(
        &self,
        partner: &str,
        request: &PlaceHold,
        now: DateTime<Utc>,
    ) -> Result<(Hold, bool), CheckoutError> {
        self.timed(async { checkout_transaction!(self, place_once(partner, request, now)) })
            .await
    }

    async fn find(&self, id: HoldId) -> Result<Option<Hold>, Unavailable> {
        self.timed(async {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {HOLD_COLUMNS} FROM checkout_holds WHERE id = ?"
            )))
            .bind(id)
            .fetch_optional(&self.db().await?)
            .await
            .map_err(unavailable)?;
            row.map(|r| hold_from(&r)).transpose().map_err(unavailable)
        })
        .await
    }

    async fn settle(
        &self,
        partner: &str,
        id: HoldId,
        asked: Settle,
        now: DateTime<Utc>,
    ) -> Result<Hold, CheckoutError> {
        self.timed(async { checkout_transaction!(self, settle_once(partner, id, asked, now)) })
            .await
    }

    async fn ended(&self, now: DateTime<Utc>, max: u32) -> Result<Vec<(String, HoldId)>, Unavailable> {
        self.timed(async {
            sqlx::query_as(
                "SELECT partner_id, id FROM checkout_holds WHERE status = 'PENDING' AND expires_at <= ? \
                 ORDER BY expires_at, id LIMIT ?",
            )
            .bind(now.naive_utc())
            .bind(max)
            .fetch_all(&self.db().await?)
            .await
            .map_err(unavailable)
        })
        .await
    }
}
