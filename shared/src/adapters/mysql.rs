//! MySQL (Aurora MySQL in AWS, MariaDB locally): pool, migrations, and the issuance context's
//! campaign catalog and coupon book.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use sqlx::{MySql, QueryBuilder, Row};

use crate::config::{Settings, StartupError};
use crate::issuance::domain::{Campaign, CampaignId, Discount, DiscountType, NewCampaign, Reservation};
use crate::issuance::ports::{CampaignCatalog, ChunkRecord, CouponBook, MAX_CHUNK_ROWS};
use crate::kernel::{Unavailable, UserId};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Columns of one coupon row in the multi-row INSERT.
pub const COUPON_COLUMNS: usize = 8;
/// MySQL's limit on placeholders in one prepared statement.
pub const MAX_PLACEHOLDERS: usize = 65_535;
pub const MAX_ROWS_PER_INSERT: usize = MAX_PLACEHOLDERS / COUPON_COLUMNS;
// A chunk the writer hands over must fit in one INSERT.
const _: () = assert!(MAX_CHUNK_ROWS <= MAX_ROWS_PER_INSERT);

pub async fn connect(database_url: &str, max_connections: u32) -> Result<MySqlPool, sqlx::Error> {
    MySqlPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect(database_url)
        .await
}

/// The pool every function opens: `DATABASE_URL`, at most `DB_MAX_CONNECTIONS` (default 2, since
/// a Lambda instance serves one request at a time and Aurora's connection count is finite).
pub async fn connect_with(settings: &Settings) -> Result<MySqlPool, StartupError> {
    let url = settings.required("DATABASE_URL")?;
    let max = settings.or("DB_MAX_CONNECTIONS", 2)?;
    Ok(connect(&url, max).await.map_err(unavailable)?)
}

/// One multi-row INSERT of issued coupons for reservations whose coupons expire at `expires_at`
/// (at most `MAX_ROWS_PER_INSERT` rows). `ignore_duplicates`: rows already recorded for the same
/// (campaign, user) are skipped, which makes redelivery harmless.
pub fn coupon_insert<'a>(
    ignore_duplicates: bool,
    rows: impl IntoIterator<Item = &'a Reservation>,
    expires_at: NaiveDateTime,
) -> QueryBuilder<MySql> {
    let mut insert = QueryBuilder::<MySql>::new(if ignore_duplicates {
        "INSERT IGNORE INTO coupons (campaign_id, partner_id, user_id, status, issue_rank, request_id, issued_at, expires_at) "
    } else {
        "INSERT INTO coupons (campaign_id, partner_id, user_id, status, issue_rank, request_id, issued_at, expires_at) "
    });
    insert.push_values(rows, |mut row, r| {
        row.push_bind(r.campaign_id)
            .push_bind(&r.partner_id)
            .push_bind(r.user_id.as_str())
            .push_bind("ISSUED")
            .push_bind(r.rank)
            .push_bind(r.request_id.hyphenated().to_string())
            .push_bind(r.reserved_at.naive_utc())
            .push_bind(expires_at);
    });
    insert
}

pub async fn migrate(pool: &MySqlPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

fn unavailable(e: sqlx::Error) -> Unavailable {
    Unavailable::new("mysql", e)
}

fn utc(naive: NaiveDateTime) -> DateTime<Utc> {
    naive.and_utc()
}

#[derive(Clone)]
pub struct MySqlStore {
    pool: MySqlPool,
}

impl MySqlStore {
    pub fn new(pool: MySqlPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// Users holding a coupon of the campaign: what Redis is rebuilt from.
    pub async fn holders(&self, id: CampaignId) -> Result<Vec<String>, Unavailable> {
        sqlx::query_scalar("SELECT user_id FROM coupons WHERE campaign_id = ?")
            .bind(id)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)
    }

    pub async fn campaign_ids(&self) -> Result<Vec<CampaignId>, Unavailable> {
        sqlx::query_scalar("SELECT id FROM campaigns ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)
    }
}

const CAMPAIGN_COLUMNS: &str = "id, partner_id, name, total_quantity, issue_starts_at, issue_ends_at, \
     coupon_expires_at, discount_type, discount_value, created_at";

fn campaign_from_row(row: &sqlx::mysql::MySqlRow) -> Result<Campaign, sqlx::Error> {
    let kind: String = row.try_get("discount_type")?;
    Ok(Campaign {
        id: row.try_get("id")?,
        partner_id: row.try_get("partner_id")?,
        name: row.try_get("name")?,
        total_quantity: row.try_get("total_quantity")?,
        issue_starts_at: utc(row.try_get("issue_starts_at")?),
        issue_ends_at: utc(row.try_get("issue_ends_at")?),
        coupon_expires_at: utc(row.try_get("coupon_expires_at")?),
        discount: Discount {
            kind: DiscountType::parse(&kind)
                .ok_or_else(|| sqlx::Error::Decode(format!("discount_type {kind}").into()))?,
            value: row.try_get("discount_value")?,
        },
        created_at: utc(row.try_get("created_at")?),
    })
}

#[async_trait]
impl CampaignCatalog for MySqlStore {
    async fn create(&self, partner_id: &str, c: &NewCampaign) -> Result<Campaign, Unavailable> {
        let id = sqlx::query(
            "INSERT INTO campaigns (partner_id, name, total_quantity, issue_starts_at, issue_ends_at, \
             coupon_expires_at, discount_type, discount_value) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(partner_id)
        .bind(&c.name)
        .bind(c.total_quantity)
        .bind(c.issue_starts_at.naive_utc())
        .bind(c.issue_ends_at.naive_utc())
        .bind(c.coupon_expires_at.naive_utc())
        .bind(c.discount.kind.as_str())
        .bind(c.discount.value)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?
        .last_insert_id();
        self.get(id)
            .await?
            .ok_or_else(|| Unavailable::new("mysql", format!("campaign {id} vanished after insert")))
    }

    async fn discard(&self, id: CampaignId) -> Result<(), Unavailable> {
        sqlx::query("DELETE FROM campaigns WHERE id = ? AND issued_count = 0")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn get(&self, id: CampaignId) -> Result<Option<Campaign>, Unavailable> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE id = ?"));
        let row = sqlx::query(sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(campaign_from_row).transpose().map_err(unavailable)
    }

    async fn issued_count(&self, id: CampaignId) -> Result<u64, Unavailable> {
        let count: Option<u32> = sqlx::query_scalar("SELECT issued_count FROM campaigns WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(count.unwrap_or(0).into())
    }

    async fn coupon_of(&self, id: CampaignId, user: &UserId) -> Result<Option<u64>, Unavailable> {
        sqlx::query_scalar("SELECT id FROM coupons WHERE campaign_id = ? AND user_id = ?")
            .bind(id)
            .bind(user.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)
    }
}

#[async_trait]
impl CouponBook for MySqlStore {
    async fn record(&self, chunk: &[Reservation]) -> Result<ChunkRecord, Unavailable> {
        assert!(
            chunk.len() <= MAX_ROWS_PER_INSERT,
            "chunk exceeds the placeholder limit"
        );
        let mut by_campaign: BTreeMap<CampaignId, Vec<usize>> = BTreeMap::new();
        for (i, r) in chunk.iter().enumerate() {
            by_campaign.entry(r.campaign_id).or_default().push(i);
        }
        let mut tx = self.pool.begin().await.map_err(unavailable)?;

        let mut lookup = QueryBuilder::<MySql>::new("SELECT id, coupon_expires_at FROM campaigns WHERE id IN (");
        let mut ids = lookup.separated(", ");
        for id in by_campaign.keys() {
            ids.push_bind(*id);
        }
        lookup.push(")");
        let expiry: HashMap<CampaignId, NaiveDateTime> = lookup
            .build_query_as::<(CampaignId, NaiveDateTime)>()
            .fetch_all(&mut *tx)
            .await
            .map_err(unavailable)?
            .into_iter()
            .collect();

        let mut record = ChunkRecord::default();
        // Campaigns in ascending id order: concurrent writers lock their counter rows in one order.
        for (campaign_id, positions) in &by_campaign {
            let Some(expires_at) = expiry.get(campaign_id) else {
                record.rejected.extend(positions);
                continue;
            };
            let mut rows: Vec<&Reservation> = positions.iter().map(|&i| &chunk[i]).collect();
            // Key order inside the statement keeps concurrent inserts from deadlocking on gap locks.
            rows.sort_by(|a, b| a.user_id.cmp(&b.user_id));
            let inserted = coupon_insert(true, rows, *expires_at)
                .build()
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?
                .rows_affected();
            if inserted > 0 {
                sqlx::query("UPDATE campaigns SET issued_count = issued_count + ? WHERE id = ?")
                    .bind(inserted)
                    .bind(campaign_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
            }
            record.inserted += inserted;
        }
        tx.commit().await.map_err(unavailable)?;
        record.rejected.sort_unstable();
        Ok(record)
    }
}
