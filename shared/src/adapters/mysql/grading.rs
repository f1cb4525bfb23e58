//! `GradingRecords` on MySQL: orders, policies, runs and their step log, grades and rewards.
//!
//! A partition is graded from one aggregate over the covering index
//! `(partner_id, order_month, user_bucket, user_id, status, amount)`; its chunks are written by
//! `grading::chunk::write_chunk`, each in one short transaction here (`chunks`), with the
//! coupons and points its rewards grant written by their own contexts' storage inside it.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{MySql, QueryBuilder, Row};

use super::{MySqlStore, unavailable, utc};
use crate::grading::GradingError;
use crate::grading::domain::{
    ChunkCount, GradeReward, GradedUser, Month, Order, PartitionTask, PartitionWork, Policy, RewardKind, Run, RunId,
    RunStatus, UserGrade, check_reward_campaign,
};
use crate::grading::ports::{GradingRecords, OrdersRecorded, PlannedRun};
use crate::issuance::ports::CampaignCatalog;
use crate::kernel::{Unavailable, UserId};
use crate::partners::domain::{Limit, admit};
use crate::points::domain::DEFAULT_VALIDITY_DAYS;
use crate::points::ports::PointRecords;

mod chunks;
mod orders;

/// One multi-row `INSERT IGNORE` of orders, with the month and bucket grading reads them by; an
/// order id the partner has already is skipped.
fn order_insert<'o>(partner: &str, orders: impl IntoIterator<Item = &'o Order>) -> QueryBuilder<MySql> {
    let mut insert = QueryBuilder::<MySql>::new(
        "INSERT IGNORE INTO orders (partner_id, order_id, user_id, amount, status, ordered_at, status_changed_at, order_month, user_bucket) ",
    );
    insert.push_values(orders, |mut r, o| {
        r.push_bind(partner)
            .push_bind(&o.order_id)
            .push_bind(o.user_id.as_str())
            .push_bind(o.amount)
            .push_bind(o.status.as_str())
            .push_bind(o.ordered_at.naive_utc())
            .push_bind(o.status_changed_at.naive_utc())
            .push_bind(o.month().number())
            .push_bind(o.bucket());
    });
    insert
}

fn stored_month(n: i32) -> Result<Month, sqlx::Error> {
    Month::from_number(n).ok_or_else(|| sqlx::Error::Decode(format!("grading month {n}").into()))
}

fn run_from_row(row: &sqlx::mysql::MySqlRow) -> Result<Run, sqlx::Error> {
    let started_at = utc(row.try_get("started_at")?);
    let finished_at: Option<DateTime<Utc>> = row.try_get::<Option<chrono::NaiveDateTime>, _>("finished_at")?.map(utc);
    Ok(Run {
        run_id: row.try_get("id")?,
        month: stored_month(row.try_get("month")?)?,
        status: RunStatus::parse(row.try_get::<&str, _>("status")?),
        partitions_done: row.try_get("partitions_done")?,
        partitions_total: row.try_get("partitions_total")?,
        users_graded: row.try_get("users_graded")?,
        rewards_granted: row.try_get("rewards_granted")?,
        started_at,
        finished_at,
        duration_ms: finished_at.map(|f| (f - started_at).num_milliseconds().max(0) as u64),
        pending_partitions: Vec::new(),
        partner_id: row.try_get("partner_id")?,
        dispatched: row.try_get::<i8, _>("dispatched")? != 0,
    })
}

/// A run's columns, as `run_from_row` reads them (a macro: `concat!` keeps the SQL a literal).
macro_rules! run_columns {
    () => {
        "id, partner_id, month, status, partitions_done, partitions_total, users_graded, \
         rewards_granted, started_at, finished_at, dispatched"
    };
}

#[async_trait]
impl GradingRecords for MySqlStore {
    async fn record_orders(
        &self,
        partner: &str,
        orders: &[Order],
        max_per_month: u64,
    ) -> Result<OrdersRecorded, GradingError> {
        self.timed(orders::record(self, partner, orders, max_per_month)).await
    }

    async fn set_policy(&self, partner: &str, policy: &Policy) -> Result<(), GradingError> {
        self.timed(async {
            let pool = self.db().await?;
            // Each tier's campaign, through issuance's own catalog.
            for tier in &policy.tiers {
                if let Some(campaign) = tier.coupon_campaign_id {
                    check_reward_campaign(tier, partner, CampaignCatalog::get(self, campaign).await?.as_ref())?;
                }
            }
            let text = serde_json::to_string(policy).map_err(|e| Unavailable::new("mysql", e))?;
            sqlx::query(
                "INSERT INTO grading_policies (partner_id, policy, updated_at) VALUES (?, ?, ?) \
                 ON DUPLICATE KEY UPDATE policy = VALUES(policy), updated_at = VALUES(updated_at)",
            )
            .bind(partner)
            .bind(text)
            .bind(Utc::now().naive_utc())
            .execute(&pool)
            .await
            .map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn policy(&self, partner: &str) -> Result<Option<Policy>, Unavailable> {
        self.timed(async {
            let text: Option<String> = sqlx::query_scalar("SELECT policy FROM grading_policies WHERE partner_id = ?")
                .bind(partner)
                .fetch_optional(&self.db().await?)
                .await
                .map_err(unavailable)?;
            text.map(|t| serde_json::from_str(&t).map_err(|e| Unavailable::new("mysql", format!("stored policy: {e}"))))
                .transpose()
        })
        .await
    }

    async fn partners_with_policy(&self) -> Result<Vec<String>, Unavailable> {
        self.timed(async {
            sqlx::query_scalar("SELECT partner_id FROM grading_policies ORDER BY partner_id")
                .fetch_all(&self.db().await?)
                .await
                .map_err(unavailable)
        })
        .await
    }

    async fn plan_run(
        &self,
        partner: &str,
        month: Month,
        partitions: u32,
        policy: &Policy,
    ) -> Result<PlannedRun, Unavailable> {
        self.timed(async {
            let pool = self.db().await?;
            let mut tx = pool.begin().await.map_err(unavailable)?;
            let text = serde_json::to_string(policy).map_err(|e| Unavailable::new("mysql", e))?;
            let created = sqlx::query(
                "INSERT IGNORE INTO grading_runs (partner_id, month, status, partitions_total, policy, started_at) \
                 VALUES (?, ?, 'RUNNING', ?, ?, ?)",
            )
            .bind(partner)
            .bind(month.number())
            .bind(partitions)
            .bind(text)
            .bind(Utc::now().naive_utc())
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
            let is_new = created.rows_affected() == 1;
            if is_new {
                let run_id = created.last_insert_id();
                let mut steps = QueryBuilder::<MySql>::new("INSERT INTO grading_steps (run_id, partition_no) ");
                steps.push_values(0..partitions, |mut r, p| {
                    r.push_bind(run_id).push_bind(p);
                });
                steps.build().execute(&mut *tx).await.map_err(unavailable)?;
            }
            let row = sqlx::query(concat!(
                "SELECT ",
                run_columns!(),
                " FROM grading_runs WHERE partner_id = ? AND month = ?"
            ))
            .bind(partner)
            .bind(month.number())
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
            tx.commit().await.map_err(unavailable)?;
            Ok(PlannedRun {
                run: run_from_row(&row).map_err(unavailable)?,
                created: is_new,
            })
        })
        .await
    }

    async fn pending_partitions(&self, run: RunId) -> Result<Vec<u32>, Unavailable> {
        self.timed(async {
            sqlx::query_scalar(
                "SELECT partition_no FROM grading_steps WHERE run_id = ? AND done_at IS NULL ORDER BY partition_no",
            )
            .bind(run)
            .fetch_all(&self.db().await?)
            .await
            .map_err(unavailable)
        })
        .await
    }

    async fn mark_dispatched(&self, run: RunId) -> Result<(), Unavailable> {
        self.timed(async {
            sqlx::query("UPDATE grading_runs SET dispatched = 1 WHERE id = ?")
                .bind(run)
                .execute(&self.db().await?)
                .await
                .map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn run(&self, partner: &str, run: RunId) -> Result<Option<Run>, Unavailable> {
        self.timed(async {
            let row = sqlx::query(concat!(
                "SELECT ",
                run_columns!(),
                " FROM grading_runs WHERE id = ? AND partner_id = ?"
            ))
            .bind(run)
            .bind(partner)
            .fetch_optional(&self.db().await?)
            .await
            .map_err(unavailable)?;
            row.map(|r| run_from_row(&r).map_err(unavailable)).transpose()
        })
        .await
    }

    async fn partition(&self, task: PartitionTask) -> Result<Option<PartitionWork>, Unavailable> {
        let row = self
            .timed(async {
                sqlx::query(
                    "SELECT r.partner_id, r.month, r.policy, r.partitions_total, s.done_at \
                     FROM grading_runs r JOIN grading_steps s ON s.run_id = r.id \
                     WHERE r.id = ? AND s.partition_no = ?",
                )
                .bind(task.run_id)
                .bind(task.partition)
                .fetch_optional(&self.db().await?)
                .await
                .map_err(unavailable)
            })
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let partner: String = row.try_get("partner_id").map_err(unavailable)?;
        let policy_text: String = row.try_get("policy").map_err(unavailable)?;
        // The points context's own policy, through its port.
        let validity_days = self.validity_days(&partner).await?.unwrap_or(DEFAULT_VALIDITY_DAYS);
        Ok(Some(PartitionWork {
            month: stored_month(row.try_get("month").map_err(unavailable)?).map_err(unavailable)?,
            policy: serde_json::from_str(&policy_text)
                .map_err(|e| Unavailable::new("mysql", format!("stored policy: {e}")))?,
            partitions: row.try_get("partitions_total").map_err(unavailable)?,
            validity_days,
            done: row
                .try_get::<Option<chrono::NaiveDateTime>, _>("done_at")
                .map_err(unavailable)?
                .is_some(),
            partner,
        }))
    }

    async fn paid_totals(&self, work: &PartitionWork, buckets: (u32, u32)) -> Result<Vec<(UserId, u64)>, Unavailable> {
        // The aggregate, in the database, over the covering index; a consistent read, no locks.
        // Grouped in the index's order (a user is in one bucket, so the groups are the users'):
        // grouped by user alone across a range of buckets it took a temporary table and a sort,
        // about a quarter of its time. The users are put in order here instead.
        let totals: Vec<(String, u64)> = self
            .timed(async {
                sqlx::query_as(
                    "SELECT user_id, CAST(SUM(amount) AS UNSIGNED) FROM orders \
                     WHERE partner_id = ? AND order_month = ? AND user_bucket BETWEEN ? AND ? AND status = 'PAID' \
                     GROUP BY user_bucket, user_id",
                )
                .bind(&work.partner)
                .bind(work.month.number())
                .bind(buckets.0)
                .bind(buckets.1)
                .fetch_all(&self.db().await?)
                .await
                .map_err(unavailable)
            })
            .await?;
        let mut totals: Vec<(UserId, u64)> = totals
            .into_iter()
            .map(|(user, paid)| {
                let user = UserId::parse(&user).map_err(|e| Unavailable::new("mysql", format!("stored order: {e}")))?;
                Ok((user, paid))
            })
            .collect::<Result<_, Unavailable>>()?;
        // utf8mb4_bin orders by code point, as `UserId` (a String) does.
        totals.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(totals)
    }

    async fn record_chunk(
        &self,
        task: PartitionTask,
        work: &PartitionWork,
        users: &[GradedUser],
        last: Option<u64>,
    ) -> Result<ChunkCount, GradingError> {
        self.timed(self.write_chunk_retrying(task, work, users, last)).await
    }

    async fn user_grade(
        &self,
        partner: &str,
        user: &str,
        month: Option<Month>,
    ) -> Result<Option<UserGrade>, Unavailable> {
        self.timed(async {
            let pool = self.db().await?;
            let month = match month {
                Some(m) => m,
                None => {
                    let last: Option<i32> = sqlx::query_scalar(
                        "SELECT MAX(month) FROM grading_runs WHERE partner_id = ? AND status = 'DONE'",
                    )
                    .bind(partner)
                    .fetch_one(&pool)
                    .await
                    .map_err(unavailable)?;
                    match last {
                        Some(m) => stored_month(m).map_err(unavailable)?,
                        None => return Ok(None),
                    }
                }
            };
            let row: Option<(Option<String>, u64)> = sqlx::query_as(
                "SELECT grade, paid_amount FROM user_grades WHERE partner_id = ? AND month = ? AND user_id = ?",
            )
            .bind(partner)
            .bind(month.number())
            .bind(user)
            .fetch_optional(&pool)
            .await
            .map_err(unavailable)?;
            let (grade, paid_amount) = row.unwrap_or((None, 0));
            type RewardRow = (String, String, Option<u64>, Option<u64>, String);
            let rows: Vec<RewardRow> = sqlx::query_as(
                "SELECT kind, grade, reference_id, points, outcome FROM grade_rewards \
                 WHERE partner_id = ? AND month = ? AND user_id = ? ORDER BY kind",
            )
            .bind(partner)
            .bind(month.number())
            .bind(user)
            .fetch_all(&pool)
            .await
            .map_err(unavailable)?;
            let mut rewards = Vec::new();
            for (kind, grade, reference, points, outcome) in rows {
                let kind = RewardKind::parse(&kind)
                    .ok_or_else(|| Unavailable::new("mysql", format!("grade_rewards: kind {kind:?}")))?;
                rewards.push(GradeReward::from_record(kind, grade, reference, points, &outcome));
            }
            Ok(Some(UserGrade {
                user_id: user.to_owned(),
                month,
                grade,
                paid_amount,
                rewards,
            }))
        })
        .await
    }
}

/// Adds the call's new orders to the partner's month counters (rows locked in month order, held
/// to the commit, so concurrent calls of one partner and month count one after the other) and
/// runs `partners::domain::admit` on each month's total.
async fn count_orders(
    tx: &mut sqlx::MySqlConnection,
    partner: &str,
    new_by_month: &BTreeMap<i32, u64>,
    max_per_month: u64,
) -> Result<(), GradingError> {
    if new_by_month.is_empty() {
        return Ok(());
    }
    let mut add = QueryBuilder::<MySql>::new("INSERT INTO order_counts (partner_id, order_month, orders) ");
    add.push_values(new_by_month, |mut row, (month, new)| {
        row.push_bind(partner).push_bind(month).push_bind(new);
    });
    add.push(" ON DUPLICATE KEY UPDATE orders = orders + VALUES(orders)");
    add.build().execute(&mut *tx).await.map_err(unavailable)?;
    let mut read = QueryBuilder::<MySql>::new("SELECT orders FROM order_counts WHERE partner_id = ");
    read.push_bind(partner).push(" AND order_month IN (");
    let mut months = read.separated(", ");
    for month in new_by_month.keys() {
        months.push_bind(month);
    }
    read.push(")");
    let totals: Vec<u64> = read
        .build_query_scalar()
        .fetch_all(&mut *tx)
        .await
        .map_err(unavailable)?;
    for total in totals {
        admit(Limit::OrdersPerMonth, max_per_month, total)?;
    }
    Ok(())
}

/// A bulk load's month counters: the rows a chunk of one month added are that month's (a
/// generated month, the usual case); a chunk over several months has its months recounted.
async fn count_loaded(
    pool: &sqlx::MySqlPool,
    partner: &str,
    months: &BTreeSet<i32>,
    added: u64,
) -> Result<(), Unavailable> {
    if let (1, Some(month)) = (months.len(), months.first()) {
        sqlx::query(
            "INSERT INTO order_counts (partner_id, order_month, orders) VALUES (?, ?, ?) \
             ON DUPLICATE KEY UPDATE orders = orders + VALUES(orders)",
        )
        .bind(partner)
        .bind(month)
        .bind(added)
        .execute(pool)
        .await
        .map_err(unavailable)?;
        return Ok(());
    }
    if months.is_empty() {
        return Ok(());
    }
    let mut recount = QueryBuilder::<MySql>::new(
        "INSERT INTO order_counts (partner_id, order_month, orders) \
         SELECT partner_id, order_month, COUNT(*) FROM orders WHERE partner_id = ",
    );
    recount.push_bind(partner).push(" AND order_month IN (");
    let mut list = recount.separated(", ");
    for month in months {
        list.push_bind(month);
    }
    recount.push(") GROUP BY partner_id, order_month ON DUPLICATE KEY UPDATE orders = VALUES(orders)");
    recount.build().execute(pool).await.map_err(unavailable)?;
    Ok(())
}

/// Orders per bulk INSERT: 8 placeholders each, far below the 65,535 limit.
pub const LOAD_CHUNK: usize = 5_000;

impl MySqlStore {
    /// Loads generated orders fast (`fcfs-admin orders generate`, tests, the bench): one
    /// multi-row `INSERT IGNORE` of up to [`LOAD_CHUNK`] orders, autocommitted; an order id already
    /// there is skipped; no limit is applied (an operator's tool), and the month counters are
    /// recounted at the end. The rows inserted.
    pub async fn load_orders(&self, partner: &str, orders: &[Order]) -> Result<u64, Unavailable> {
        let pool = self.db().await?;
        let mut inserted = 0;
        for chunk in orders.chunks(LOAD_CHUNK) {
            let mut insert = order_insert(partner, chunk);
            let added = self
                .timed(async { insert.build().execute(&pool).await.map_err(unavailable) })
                .await?
                .rows_affected();
            inserted += added;
            let months: BTreeSet<i32> = chunk.iter().map(|o| o.month().number()).collect();
            self.timed(count_loaded(&pool, partner, &months, added)).await?;
        }
        Ok(inserted)
    }
}
