//! The coupons context's records on MySQL: one coupon row locked per transaction (`SELECT … FOR
//! UPDATE`), the campaign read without a lock (its discount never changes), the history appended
//! in the same transaction; the expiry sweep in chunks that skip rows a use holds.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::mysql::MySqlRow;
use sqlx::{MySql, MySqlConnection, QueryBuilder, Row, Transaction};

use super::{MySqlOutbox, MySqlStore, unavailable, utc};
use crate::coupons::CouponError;
use crate::coupons::domain::{
    CancelDecision, CancelUse, Coupon, CouponHold, CouponId, CouponQuery, CouponStatus, Usage, UseCoupon, UseDecision,
    decide_cancel, decide_use,
};
use crate::coupons::ports::CouponRecords;
use crate::events::catalog;
use crate::events::ports::Outbox;
use crate::issuance::domain::{Discount, DiscountType};
use crate::kernel::{Unavailable, UserId};

mod holds;

const COUPON_COLUMNS: &str = "c.id, c.campaign_id, c.partner_id, c.user_id, c.status, c.issued_at, c.expires_at, \
     c.used_at, c.order_id, c.order_amount, c.discount_amount, c.hold_id, c.held_order_id, c.held_amount, c.held_until";
const CAMPAIGN_COLUMNS: &str = "k.name AS campaign_name, k.discount_type, k.discount_value";

/// A coupon from its row and its campaign's (`campaign_name`, `discount_type`, `discount_value`),
/// which may be the same joined row.
fn coupon_from_rows(row: &MySqlRow, campaign: &MySqlRow) -> Result<Coupon, sqlx::Error> {
    let status: String = row.try_get("status")?;
    let kind: String = campaign.try_get("discount_type")?;
    let used_at: Option<chrono::NaiveDateTime> = row.try_get("used_at")?;
    let usage = match used_at {
        Some(at) => Some(Usage {
            order_id: row.try_get::<Option<String>, _>("order_id")?.unwrap_or_default(),
            order_amount: row.try_get::<Option<u64>, _>("order_amount")?.unwrap_or_default(),
            discount_amount: row.try_get::<Option<u64>, _>("discount_amount")?.unwrap_or_default(),
            used_at: utc(at),
        }),
        None => None,
    };
    let hold = match row.try_get::<Option<u64>, _>("hold_id")? {
        Some(hold_id) => Some(CouponHold {
            hold_id,
            order_id: row.try_get::<Option<String>, _>("held_order_id")?.unwrap_or_default(),
            order_amount: row.try_get::<Option<u64>, _>("held_amount")?.unwrap_or_default(),
            until: row
                .try_get::<Option<chrono::NaiveDateTime>, _>("held_until")?
                .map(utc)
                .unwrap_or_default(),
        }),
        None => None,
    };
    Ok(Coupon {
        id: row.try_get("id")?,
        campaign_id: row.try_get("campaign_id")?,
        campaign_name: campaign.try_get("campaign_name")?,
        partner_id: row.try_get("partner_id")?,
        user_id: row.try_get("user_id")?,
        stored_status: CouponStatus::parse(&status)
            .map_err(|_| sqlx::Error::Decode(format!("coupon status {status}").into()))?,
        discount: Discount {
            kind: DiscountType::parse(&kind)
                .ok_or_else(|| sqlx::Error::Decode(format!("discount_type {kind}").into()))?,
            value: campaign.try_get("discount_value")?,
        },
        issued_at: utc(row.try_get("issued_at")?),
        expires_at: utc(row.try_get("expires_at")?),
        usage,
        hold,
    })
}

/// Locks the coupon row (nothing else: never the campaign, which every use of the campaign
/// shares) and reads its campaign without a lock; its discount never changes.
async fn lock_coupon(tx: &mut MySqlConnection, id: CouponId) -> Result<Option<Coupon>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COUPON_COLUMNS} FROM coupons c WHERE c.id = ? FOR UPDATE"
    ));
    let Some(row) = sqlx::query(sql).bind(id).fetch_optional(&mut *tx).await? else {
        return Ok(None);
    };
    let campaign =
        sqlx::query("SELECT name AS campaign_name, discount_type, discount_value FROM campaigns WHERE id = ?")
            .bind(row.try_get::<u64, _>("campaign_id")?)
            .fetch_one(&mut *tx)
            .await?;
    coupon_from_rows(&row, &campaign).map(Some)
}

async fn append_history(
    tx: &mut MySqlConnection,
    coupon: &Coupon,
    action: &str,
    usage: &Usage,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO coupon_history (coupon_id, partner_id, user_id, action, order_id, order_amount, discount_amount, at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(coupon.id)
    .bind(&coupon.partner_id)
    .bind(&coupon.user_id)
    .bind(action)
    .bind(&usage.order_id)
    .bind(usage.order_amount)
    .bind(usage.discount_amount)
    .bind(usage.used_at.naive_utc())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A failure inside a use or cancel: a domain answer, or the database's.
enum Failed {
    Rule(CouponError),
    Db(sqlx::Error),
}

impl From<sqlx::Error> for Failed {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(e)
    }
}

impl From<Unavailable> for Failed {
    fn from(e: Unavailable) -> Self {
        Self::Rule(CouponError::Unavailable(e))
    }
}

impl From<CouponError> for Failed {
    fn from(e: CouponError) -> Self {
        Self::Rule(e)
    }
}

impl From<Failed> for CouponError {
    fn from(f: Failed) -> Self {
        match f {
            Failed::Rule(e) => e,
            Failed::Db(e) => CouponError::Unavailable(unavailable(e)),
        }
    }
}

impl MySqlStore {
    /// Runs `body` in one transaction under the store's deadline (`timed`): committed if it
    /// returns `Ok`, rolled back (dropped) otherwise.
    async fn in_transaction<T, F>(&self, body: F) -> Result<T, CouponError>
    where
        F: for<'t> FnOnce(
                &'t mut Transaction<'static, MySql>,
            )
                -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, Failed>> + Send + 't>>
            + Send,
        T: Send,
    {
        let run = async {
            let pool = self.db().await.map_err(CouponError::Unavailable)?;
            let mut tx = pool
                .begin()
                .await
                .map_err(|e| CouponError::Unavailable(unavailable(e)))?;
            let value = body(&mut tx).await?;
            tx.commit()
                .await
                .map_err(|e| CouponError::Unavailable(unavailable(e)))?;
            Ok(value)
        };
        self.timed(run).await
    }
}

#[async_trait]
impl CouponRecords for MySqlStore {
    async fn find(&self, id: CouponId) -> Result<Option<Coupon>, Unavailable> {
        self.timed(async {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {COUPON_COLUMNS}, {CAMPAIGN_COLUMNS} FROM coupons c JOIN campaigns k ON k.id = c.campaign_id \
                 WHERE c.id = ?"
            )))
            .bind(id)
            .fetch_optional(&self.db().await?)
            .await
            .map_err(unavailable)?;
            row.as_ref()
                .map(|r| coupon_from_rows(r, r))
                .transpose()
                .map_err(unavailable)
        })
        .await
    }

    async fn list(
        &self,
        partner: &str,
        user: &UserId,
        query: &CouponQuery,
        now: DateTime<Utc>,
    ) -> Result<Vec<Coupon>, Unavailable> {
        let mut sql = QueryBuilder::<MySql>::new(format!(
            "SELECT {COUPON_COLUMNS}, {CAMPAIGN_COLUMNS} FROM coupons c JOIN campaigns k ON k.id = c.campaign_id \
             WHERE c.partner_id = "
        ));
        sql.push_bind(partner)
            .push(" AND c.user_id = ")
            .push_bind(user.as_str());
        if let Some(campaign) = query.campaign_id {
            sql.push(" AND c.campaign_id = ").push_bind(campaign);
        }
        let now = now.naive_utc();
        match query.status {
            None => {}
            Some(CouponStatus::Used) => {
                sql.push(" AND c.status = 'USED'");
            }
            Some(CouponStatus::Issued) => {
                sql.push(" AND c.status = 'ISSUED' AND c.expires_at > ")
                    .push_bind(now)
                    .push(" AND (c.held_until IS NULL OR c.held_until <= ")
                    .push_bind(now)
                    .push(")");
            }
            Some(CouponStatus::Held) => {
                sql.push(" AND c.status = 'ISSUED' AND c.held_until > ").push_bind(now);
            }
            Some(CouponStatus::Expired) => {
                sql.push(" AND c.status <> 'USED' AND (c.status = 'EXPIRED' OR c.expires_at <= ")
                    .push_bind(now)
                    .push(") AND (c.held_until IS NULL OR c.held_until <= ")
                    .push_bind(now)
                    .push(")");
            }
        }
        if let Some(cursor) = query.cursor {
            // Spelled out rather than a row comparison, so the (partner, user, issued_at, id)
            // index serves it as a range.
            let at = cursor.issued_at.naive_utc();
            sql.push(" AND (c.issued_at < ")
                .push_bind(at)
                .push(" OR (c.issued_at = ")
                .push_bind(at)
                .push(" AND c.id < ")
                .push_bind(cursor.id)
                .push("))");
        }
        sql.push(" ORDER BY c.issued_at DESC, c.id DESC LIMIT ")
            .push_bind(query.limit + 1);
        self.timed(async {
            let rows = sql.build().fetch_all(&self.db().await?).await.map_err(unavailable)?;
            rows.iter()
                .map(|r| coupon_from_rows(r, r))
                .collect::<Result<_, _>>()
                .map_err(unavailable)
        })
        .await
    }

    async fn use_coupon(
        &self,
        id: CouponId,
        partner: &str,
        request: &UseCoupon,
        now: DateTime<Utc>,
    ) -> Result<Coupon, CouponError> {
        let (partner, request) = (partner.to_owned(), request.clone());
        self.in_transaction(move |tx| {
            Box::pin(async move {
                let mut coupon = lock_coupon(tx, id).await?.ok_or(CouponError::NotFound)?;
                let UseDecision::Apply { discount_amount } = decide_use(&coupon, &partner, &request, now)? else {
                    return Ok(coupon);
                };
                let usage = Usage {
                    order_id: request.order_id.as_str().to_owned(),
                    order_amount: request.order_amount,
                    discount_amount,
                    used_at: now,
                };
                sqlx::query(
                    "UPDATE coupons SET status = 'USED', used_at = ?, order_id = ?, order_amount = ?, discount_amount = ?, \
                     hold_id = NULL, held_order_id = NULL, held_amount = NULL, held_until = NULL WHERE id = ?",
                )
                .bind(now.naive_utc())
                .bind(&usage.order_id)
                .bind(usage.order_amount)
                .bind(usage.discount_amount)
                .bind(id)
                .execute(&mut **tx)
                .await?;
                append_history(tx, &coupon, "USE", &usage).await?;
                MySqlOutbox.append(tx, &[catalog::coupon_used(&coupon, &usage)]).await?;
                coupon.stored_status = CouponStatus::Used;
                coupon.usage = Some(usage);
                Ok(coupon)
            })
        })
        .await
    }

    async fn cancel_use(
        &self,
        id: CouponId,
        partner: &str,
        request: &CancelUse,
        now: DateTime<Utc>,
    ) -> Result<Coupon, CouponError> {
        let (partner, request) = (partner.to_owned(), request.clone());
        self.in_transaction(move |tx| {
            Box::pin(async move {
                let mut coupon = lock_coupon(tx, id).await?.ok_or(CouponError::NotFound)?;
                let last_cancel: Option<String> = if coupon.usage.is_none() {
                    sqlx::query_scalar(
                        "SELECT IF(action = 'CANCEL_USE', order_id, NULL) FROM coupon_history \
                         WHERE coupon_id = ? ORDER BY id DESC LIMIT 1",
                    )
                    .bind(id)
                    .fetch_optional(&mut **tx)
                    .await?
                    .flatten()
                } else {
                    None
                };
                if decide_cancel(&coupon, &partner, &request, last_cancel.as_deref())? == CancelDecision::AlreadyDone {
                    return Ok(coupon);
                }
                let Some(used) = coupon.usage.take() else {
                    return Err(CouponError::NotUsed.into());
                };
                sqlx::query(
                    "UPDATE coupons SET status = 'ISSUED', used_at = NULL, order_id = NULL, order_amount = NULL, \
                     discount_amount = NULL WHERE id = ?",
                )
                .bind(id)
                .execute(&mut **tx)
                .await?;
                MySqlOutbox
                    .append(tx, &[catalog::coupon_use_cancelled(&coupon, &used.order_id, now)])
                    .await?;
                append_history(tx, &coupon, "CANCEL_USE", &Usage { used_at: now, ..used }).await?;
                coupon.stored_status = CouponStatus::Issued;
                Ok(coupon)
            })
        })
        .await
    }

    async fn expire_batch(&self, now: DateTime<Utc>, max_rows: u32) -> Result<u64, Unavailable> {
        let result = self
            .in_transaction(move |tx| {
                Box::pin(async move {
                    let expiring: Vec<(u64, String, u64, String, NaiveDateTime)> = sqlx::query_as(
                        "SELECT id, partner_id, campaign_id, user_id, expires_at FROM coupons \
                         WHERE status = 'ISSUED' AND expires_at <= ? \
                         AND (held_until IS NULL OR held_until <= ?) \
                         ORDER BY expires_at, id LIMIT ? FOR UPDATE SKIP LOCKED",
                    )
                    .bind(now.naive_utc())
                    .bind(now.naive_utc())
                    .bind(max_rows)
                    .fetch_all(&mut **tx)
                    .await?;
                    if expiring.is_empty() {
                        return Ok(0);
                    }
                    let ids: Vec<u64> = expiring.iter().map(|(id, ..)| *id).collect();
                    let events: Vec<_> = expiring
                        .iter()
                        .map(|(id, partner, campaign, user, expires_at)| {
                            catalog::coupon_expired(partner, *id, *campaign, user, utc(*expires_at), now)
                        })
                        .collect();
                    MySqlOutbox.append(tx, &events).await?;
                    let mut update = QueryBuilder::<MySql>::new("UPDATE coupons SET status = 'EXPIRED' WHERE id IN (");
                    let mut list = update.separated(", ");
                    for id in &ids {
                        list.push_bind(id);
                    }
                    update.push(")");
                    let done = update.build().execute(&mut **tx).await?;
                    Ok(done.rows_affected())
                })
            })
            .await;
        result.map_err(|e| match e {
            CouponError::Unavailable(u) => u,
            other => Unavailable::new("mysql", other),
        })
    }
}
