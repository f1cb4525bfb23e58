//! `GradingRecords` on MySQL: orders, policies, runs and their step log, grades and rewards.
//!
//! A partition is graded from one aggregate over the covering index
//! `(partner_id, order_month, user_bucket, user_id, status, amount)`, then written in chunks of
//! [`CHUNK_USERS`] users, each chunk one short transaction: its grades (upserts), its rewards
//! (one `grade_rewards` row per user and kind: the unique key that makes a grant happen once),
//! the coupons and points those rewards grant, and the step's counters. The last chunk also marks
//! the step done and adds it to the run. Rows the live API writes (a campaign's counter, a
//! wallet) are locked for one chunk at most, in one order: campaigns by id, then wallets by user.

use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{MySql, QueryBuilder, Row, Transaction};

use super::points::{ER_DUP_ENTRY, ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT, error_number};
use super::{MySqlStore, unavailable, utc};
use crate::grading::GradingError;
use crate::grading::domain::{
    Month, Order, PartitionSummary, PartitionTask, Policy, Run, RunId, RunStatus, Tier, UserGrade, partition_buckets,
};
use crate::grading::ports::{GradingRecords, OrdersRecorded, PlannedRun};
use crate::kernel::Unavailable;
use crate::points::domain::DEFAULT_VALIDITY_DAYS;

/// Users per chunk transaction: a few thousand rows written, a few milliseconds of locks.
pub const CHUNK_USERS: usize = 1000;
/// Attempts of a chunk that lost a deadlock, waited out a lock, or met a grant another worker
/// committed first (it re-reads and skips those).
const CHUNK_ATTEMPTS: u32 = 4;

/// One multi-row `INSERT IGNORE` of orders, with the month and bucket grading reads them by; an
/// order id the partner has already is skipped.
fn order_insert(partner: &str, orders: &[Order]) -> QueryBuilder<MySql> {
    let mut insert = QueryBuilder::<MySql>::new(
        "INSERT IGNORE INTO orders (partner_id, order_id, user_id, amount, status, ordered_at, order_month, user_bucket) ",
    );
    insert.push_values(orders, |mut r, o| {
        r.push_bind(partner)
            .push_bind(&o.order_id)
            .push_bind(o.user_id.as_str())
            .push_bind(o.amount)
            .push_bind(o.status.as_str())
            .push_bind(o.ordered_at.naive_utc())
            .push_bind(o.month().number())
            .push_bind(o.bucket());
    });
    insert
}

fn run_from_row(row: &sqlx::mysql::MySqlRow) -> Result<Run, sqlx::Error> {
    let started_at = utc(row.try_get("started_at")?);
    let finished_at: Option<DateTime<Utc>> = row.try_get::<Option<chrono::NaiveDateTime>, _>("finished_at")?.map(utc);
    Ok(Run {
        run_id: row.try_get("id")?,
        month: Month::from_number(row.try_get("month")?),
        status: RunStatus::parse(row.try_get::<&str, _>("status")?),
        partitions_done: row.try_get("partitions_done")?,
        partitions_total: row.try_get("partitions_total")?,
        users_graded: row.try_get("users_graded")?,
        rewards_granted: row.try_get("rewards_granted")?,
        started_at,
        finished_at,
        duration_ms: finished_at.map(|f| (f - started_at).num_milliseconds().max(0) as u64),
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

/// A chunk attempt that must start over (after a rollback).
enum ChunkFailure {
    Retry(sqlx::Error),
    Fatal(GradingError),
}

impl From<sqlx::Error> for ChunkFailure {
    fn from(e: sqlx::Error) -> Self {
        match error_number(&e) {
            Some(ER_DUP_ENTRY | ER_LOCK_DEADLOCK | ER_LOCK_WAIT_TIMEOUT) => Self::Retry(e),
            _ => Self::Fatal(GradingError::Unavailable(unavailable(e))),
        }
    }
}

/// One user of a partition and what their tier grants.
struct Graded<'p> {
    user: String,
    paid: u64,
    tier: Option<&'p Tier>,
}

impl MySqlStore {
    async fn chunk(
        &self,
        run: &RunContext,
        task: PartitionTask,
        users: &[Graded<'_>],
        last: bool,
        summary: &mut PartitionSummary,
    ) -> Result<(), GradingError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let pool = self.db().await?;
            let mut tx = pool.begin().await.map_err(unavailable)?;
            match self.write_chunk(&mut tx, run, task, users, last, summary).await {
                Ok(counted) => {
                    tx.commit().await.map_err(unavailable)?;
                    summary.rewards_granted += counted.granted;
                    summary.coupons_refused += counted.refused;
                    summary.chunks += 1;
                    return Ok(());
                }
                Err(ChunkFailure::Retry(e)) if attempt < CHUNK_ATTEMPTS => {
                    let _ = tx.rollback().await;
                    tracing::warn!(run = task.run_id, partition = task.partition, attempt, error = %e, "grading chunk retried");
                }
                Err(ChunkFailure::Retry(e)) => return Err(GradingError::Unavailable(unavailable(e))),
                Err(ChunkFailure::Fatal(e)) => return Err(e),
            }
        }
    }

    async fn write_chunk(
        &self,
        tx: &mut Transaction<'_, MySql>,
        run: &RunContext,
        task: PartitionTask,
        users: &[Graded<'_>],
        last: bool,
        summary: &PartitionSummary,
    ) -> Result<Counted, ChunkFailure> {
        let now = Utc::now().naive_utc();
        let month = run.month.number();
        let mut counted = Counted::default();
        if !users.is_empty() {
            let mut grades = QueryBuilder::<MySql>::new(
                "INSERT INTO user_grades (partner_id, month, user_id, grade, paid_amount, run_id, graded_at) ",
            );
            grades.push_values(users, |mut row, g| {
                row.push_bind(&run.partner)
                    .push_bind(month)
                    .push_bind(&g.user)
                    .push_bind(g.tier.map(|t| t.grade.as_str()))
                    .push_bind(g.paid)
                    .push_bind(task.run_id)
                    .push_bind(now);
            });
            grades.push(
                " ON DUPLICATE KEY UPDATE grade = VALUES(grade), paid_amount = VALUES(paid_amount), \
                 run_id = VALUES(run_id), graded_at = VALUES(graded_at)",
            );
            grades.build().execute(&mut **tx).await?;
            counted = self.grant(tx, run, users, now).await?;
        }
        sqlx::query(
            "UPDATE grading_steps SET rewards_granted = rewards_granted + ? WHERE run_id = ? AND partition_no = ?",
        )
        .bind(counted.granted)
        .bind(task.run_id)
        .bind(task.partition)
        .execute(&mut **tx)
        .await?;
        if last {
            let marked = sqlx::query(
                "UPDATE grading_steps SET done_at = ?, users_graded = ? WHERE run_id = ? AND partition_no = ? AND done_at IS NULL",
            )
            .bind(now)
            .bind(summary.users_graded)
            .bind(task.run_id)
            .bind(task.partition)
            .execute(&mut **tx)
            .await?
            .rows_affected();
            if marked == 1 {
                // The status and finish time read the count before this step's increment.
                sqlx::query(
                    "UPDATE grading_runs r JOIN grading_steps s ON s.run_id = r.id AND s.partition_no = ? \
                     SET r.status = IF(r.partitions_done + 1 >= r.partitions_total, 'DONE', r.status), \
                         r.finished_at = IF(r.partitions_done + 1 >= r.partitions_total, ?, r.finished_at), \
                         r.partitions_done = r.partitions_done + 1, \
                         r.users_graded = r.users_graded + s.users_graded, \
                         r.rewards_granted = r.rewards_granted + s.rewards_granted \
                     WHERE r.id = ?",
                )
                .bind(task.partition)
                .bind(now)
                .bind(task.run_id)
                .execute(&mut **tx)
                .await?;
            }
        }
        Ok(counted)
    }

    /// The chunk's rewards not granted yet: a `grade_rewards` row per user and kind (a duplicate
    /// key means another worker granted it meanwhile: the chunk starts over and skips it), then
    /// the coupons (campaigns locked in id order, capped at their quantity) and the points (wallets
    /// locked in user order: one EARN entry, one lot, the balance).
    async fn grant(
        &self,
        tx: &mut Transaction<'_, MySql>,
        run: &RunContext,
        users: &[Graded<'_>],
        now: chrono::NaiveDateTime,
    ) -> Result<Counted, ChunkFailure> {
        let month = run.month.number();
        let eligible: Vec<&Graded> = users
            .iter()
            .filter(|g| {
                g.tier
                    .is_some_and(|t| t.coupon_campaign_id.is_some() || t.points.is_some())
            })
            .collect();
        let mut counted = Counted::default();
        if eligible.is_empty() {
            return Ok(counted);
        }
        let mut lookup = QueryBuilder::<MySql>::new("SELECT user_id, kind FROM grade_rewards WHERE partner_id = ");
        lookup
            .push_bind(&run.partner)
            .push(" AND month = ")
            .push_bind(month)
            .push(" AND user_id IN (");
        let mut list = lookup.separated(", ");
        for g in &eligible {
            list.push_bind(&g.user);
        }
        lookup.push(")");
        let granted: HashSet<(String, String)> = lookup
            .build_query_as::<(String, String)>()
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .collect();
        let owed = |g: &Graded, kind: &str| !granted.contains(&(g.user.clone(), kind.to_owned()));

        // Coupons, by campaign in id order.
        let mut by_campaign: BTreeMap<u64, Vec<&Graded>> = BTreeMap::new();
        for g in &eligible {
            if let Some(campaign) = g.tier.and_then(|t| t.coupon_campaign_id)
                && owed(g, "COUPON")
            {
                by_campaign.entry(campaign).or_default().push(g);
            }
        }
        let mut rewards: Vec<Reward> = Vec::new();
        for (campaign, winners) in &by_campaign {
            let row = sqlx::query(
                "SELECT total_quantity, issued_count, coupon_expires_at FROM campaigns WHERE id = ? AND partner_id = ? FOR UPDATE",
            )
            .bind(campaign)
            .bind(&run.partner)
            .fetch_optional(&mut **tx)
            .await?;
            let Some(row) = row else {
                for g in winners {
                    rewards.push((g.user.clone(), "COUPON", grade(g), Some(*campaign), None, "NO_CAMPAIGN"));
                }
                continue;
            };
            let total: u32 = row.try_get("total_quantity")?;
            let issued: u32 = row.try_get("issued_count")?;
            let expires: chrono::NaiveDateTime = row.try_get("coupon_expires_at")?;
            let room = total.saturating_sub(issued) as usize;
            let (given, refused) = winners.split_at(room.min(winners.len()));
            let mut inserted = 0;
            let requests: Vec<String> = given
                .iter()
                .map(|_| uuid::Uuid::new_v4().hyphenated().to_string())
                .collect();
            if !given.is_empty() {
                let mut insert = QueryBuilder::<MySql>::new(
                    "INSERT IGNORE INTO coupons (campaign_id, partner_id, user_id, status, issue_rank, request_id, issued_at, expires_at) ",
                );
                insert.push_values(given.iter().zip(&requests).enumerate(), |mut r, (i, (g, request))| {
                    r.push_bind(campaign)
                        .push_bind(&run.partner)
                        .push_bind(&g.user)
                        .push_bind("ISSUED")
                        .push_bind(issued + i as u32 + 1)
                        .push_bind(request)
                        .push_bind(now)
                        .push_bind(expires);
                });
                inserted = insert.build().execute(&mut **tx).await?.rows_affected();
                sqlx::query("UPDATE campaigns SET issued_count = issued_count + ? WHERE id = ?")
                    .bind(inserted)
                    .bind(campaign)
                    .execute(&mut **tx)
                    .await?;
            }
            // INSERT IGNORE skipped users who already held one of the campaign's coupons: their
            // row carries another request id.
            let mut holders = HashSet::new();
            if inserted < given.len() as u64 {
                let mut q = QueryBuilder::<MySql>::new("SELECT user_id, request_id FROM coupons WHERE campaign_id = ");
                q.push_bind(campaign).push(" AND user_id IN (");
                let mut list = q.separated(", ");
                for g in given {
                    list.push_bind(&g.user);
                }
                q.push(")");
                let ours: HashSet<&str> = requests.iter().map(String::as_str).collect();
                holders = q
                    .build_query_as::<(String, String)>()
                    .fetch_all(&mut **tx)
                    .await?
                    .into_iter()
                    .filter(|(_, request)| !ours.contains(request.as_str()))
                    .map(|(user, _)| user)
                    .collect();
            }
            for g in given {
                let outcome = if holders.contains(&g.user) {
                    "ALREADY_HELD"
                } else {
                    "GRANTED"
                };
                if outcome == "GRANTED" {
                    counted.granted += 1;
                }
                rewards.push((g.user.clone(), "COUPON", grade(g), Some(*campaign), None, outcome));
            }
            for g in refused {
                counted.refused += 1;
                rewards.push((g.user.clone(), "COUPON", grade(g), Some(*campaign), None, "SOLD_OUT"));
            }
        }

        // Points, wallets in user order (the chunk is sorted by user id).
        let points: Vec<(&Graded, u64)> = eligible
            .iter()
            .filter_map(|g| Some((*g, g.tier?.points?)))
            .filter(|(g, _)| owed(g, "POINTS"))
            .collect();
        if !points.is_empty() {
            let mut ensure =
                QueryBuilder::<MySql>::new("INSERT INTO point_wallets (partner_id, user_id, balance, updated_at) ");
            ensure.push_values(&points, |mut r, (g, _)| {
                r.push_bind(&run.partner)
                    .push_bind(&g.user)
                    .push_bind(0u64)
                    .push_bind(now);
            });
            ensure.push(" ON DUPLICATE KEY UPDATE id = id");
            ensure.build().execute(&mut **tx).await?;
            let mut lock =
                QueryBuilder::<MySql>::new("SELECT user_id, id, balance FROM point_wallets WHERE partner_id = ");
            lock.push_bind(&run.partner).push(" AND user_id IN (");
            let mut list = lock.separated(", ");
            for (g, _) in &points {
                list.push_bind(&g.user);
            }
            lock.push(") ORDER BY user_id FOR UPDATE");
            let wallets: HashMap<String, (u64, u64)> = lock
                .build_query_as::<(String, u64, u64)>()
                .fetch_all(&mut **tx)
                .await?
                .into_iter()
                .map(|(user, id, balance)| (user, (id, balance)))
                .collect();
            let mut entries = QueryBuilder::<MySql>::new(
                "INSERT INTO point_transactions (wallet_id, partner_id, user_id, kind, amount, balance_after, reason, created_at) ",
            );
            entries.push_values(&points, |mut r, (g, amount)| {
                let (id, balance) = wallets[&g.user];
                r.push_bind(id)
                    .push_bind(&run.partner)
                    .push_bind(&g.user)
                    .push_bind("EARN")
                    .push_bind(*amount as i64)
                    .push_bind(balance + amount)
                    .push_bind(format!("grade {} for {}", grade(g), run.month))
                    .push_bind(now);
            });
            let first = entries.build().execute(&mut **tx).await?.last_insert_id();
            // The wallets are locked: every entry of theirs from `first` on is one of these.
            let mut read =
                QueryBuilder::<MySql>::new("SELECT wallet_id, id, amount FROM point_transactions WHERE id >= ");
            read.push_bind(first).push(" AND wallet_id IN (");
            let mut list = read.separated(", ");
            for (g, _) in &points {
                list.push_bind(wallets[&g.user].0);
            }
            read.push(")");
            let made: Vec<(u64, u64, i64)> = read.build_query_as().fetch_all(&mut **tx).await?;
            let expires = now + chrono::Duration::days(i64::from(run.validity_days));
            let mut lots = QueryBuilder::<MySql>::new(
                "INSERT INTO point_lots (wallet_id, transaction_id, amount, remaining, expires_at, created_at) ",
            );
            lots.push_values(&made, |mut r, (wallet, transaction, amount)| {
                r.push_bind(wallet)
                    .push_bind(transaction)
                    .push_bind(*amount as u64)
                    .push_bind(*amount as u64)
                    .push_bind(expires)
                    .push_bind(now);
            });
            lots.build().execute(&mut **tx).await?;
            let by_wallet: HashMap<u64, u64> = made.iter().map(|(w, t, _)| (*w, *t)).collect();
            // One statement for every wallet: CASE by id.
            let mut update = QueryBuilder::<MySql>::new("UPDATE point_wallets SET updated_at = ");
            update.push_bind(now).push(", balance = balance + CASE id");
            for (g, amount) in &points {
                update
                    .push(" WHEN ")
                    .push_bind(wallets[&g.user].0)
                    .push(" THEN ")
                    .push_bind(*amount);
            }
            update.push(" END WHERE id IN (");
            let mut list = update.separated(", ");
            for (g, _) in &points {
                list.push_bind(wallets[&g.user].0);
            }
            update.push(")");
            update.build().execute(&mut **tx).await?;
            for (g, amount) in &points {
                counted.granted += 1;
                let transaction = by_wallet.get(&wallets[&g.user].0).copied();
                rewards.push((
                    g.user.clone(),
                    "POINTS",
                    grade(g),
                    transaction,
                    Some(*amount),
                    "GRANTED",
                ));
            }
        }
        if !rewards.is_empty() {
            let mut insert = QueryBuilder::<MySql>::new(
                "INSERT INTO grade_rewards (partner_id, month, user_id, kind, grade, reference_id, points, outcome, granted_at) ",
            );
            insert.push_values(&rewards, |mut r, (user, kind, grade, reference, points, outcome)| {
                r.push_bind(&run.partner)
                    .push_bind(month)
                    .push_bind(user)
                    .push_bind(*kind)
                    .push_bind(grade)
                    .push_bind(*reference)
                    .push_bind(*points)
                    .push_bind(*outcome)
                    .push_bind(now);
            });
            insert.build().execute(&mut **tx).await?;
        }
        Ok(counted)
    }
}

/// A `grade_rewards` row: user, kind, grade, reference (campaign or EARN entry), points, outcome.
type Reward = (String, &'static str, String, Option<u64>, Option<u64>, &'static str);

fn grade(g: &Graded) -> String {
    g.tier.map(|t| t.grade.clone()).unwrap_or_default()
}

#[derive(Default)]
struct Counted {
    granted: u64,
    refused: u64,
}

/// What a worker needs of its run.
struct RunContext {
    partner: String,
    month: Month,
    policy: Policy,
    partitions: u32,
    validity_days: u32,
}

#[async_trait]
impl GradingRecords for MySqlStore {
    async fn record_orders(&self, partner: &str, orders: &[Order]) -> Result<OrdersRecorded, GradingError> {
        self.timed(async {
            let pool = self.db().await?;
            let mut tx = pool.begin().await.map_err(unavailable)?;
            let inserted = order_insert(partner, orders)
                .build()
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?
                .rows_affected() as usize;
            let distinct: HashSet<&str> = orders.iter().map(|o| o.order_id.as_str()).collect();
            if inserted < distinct.len() {
                // Some were there: each must be the same order, or the whole call is refused.
                let mut read = QueryBuilder::<MySql>::new(
                    "SELECT order_id, user_id, amount, status, ordered_at FROM orders WHERE partner_id = ",
                );
                read.push_bind(partner).push(" AND order_id IN (");
                let mut list = read.separated(", ");
                for id in &distinct {
                    list.push_bind(*id);
                }
                read.push(")");
                let stored: HashMap<String, (String, u64, String, chrono::NaiveDateTime)> = read
                    .build_query_as::<(String, String, u64, String, chrono::NaiveDateTime)>()
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(unavailable)?
                    .into_iter()
                    .map(|(id, user, amount, status, at)| (id, (user, amount, status, at)))
                    .collect();
                for o in orders {
                    let same = stored.get(&o.order_id).is_some_and(|(user, amount, status, at)| {
                        user == o.user_id.as_str()
                            && *amount == o.amount
                            && status == o.status.as_str()
                            && *at == o.ordered_at.naive_utc()
                    });
                    if !same {
                        let _ = tx.rollback().await;
                        return Err(GradingError::OrderConflict(o.order_id.clone()));
                    }
                }
            }
            tx.commit().await.map_err(unavailable)?;
            Ok(OrdersRecorded {
                recorded: inserted,
                unchanged: orders.len() - inserted,
            })
        })
        .await
    }

    async fn set_policy(&self, partner: &str, policy: &Policy) -> Result<(), GradingError> {
        self.timed(async {
            let pool = self.db().await?;
            for tier in &policy.tiers {
                if let Some(campaign) = tier.coupon_campaign_id {
                    let found: Option<u64> =
                        sqlx::query_scalar("SELECT id FROM campaigns WHERE id = ? AND partner_id = ?")
                            .bind(campaign)
                            .bind(partner)
                            .fetch_optional(&pool)
                            .await
                            .map_err(unavailable)?;
                    if found.is_none() {
                        return Err(GradingError::UnknownCampaign {
                            grade: tier.grade.clone(),
                            campaign_id: campaign,
                        });
                    }
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

    async fn grade_partition(&self, task: PartitionTask) -> Result<PartitionSummary, GradingError> {
        // No overall deadline: each statement and chunk has the store's own (`timed` per call).
        let pool = self.db().await?;
        let row = self
            .timed(async {
                sqlx::query(
                    "SELECT r.partner_id, r.month, r.policy, r.partitions_total, s.done_at, \
                     (SELECT validity_days FROM point_policies p WHERE p.partner_id = r.partner_id) AS validity_days \
                     FROM grading_runs r JOIN grading_steps s ON s.run_id = r.id \
                     WHERE r.id = ? AND s.partition_no = ?",
                )
                .bind(task.run_id)
                .bind(task.partition)
                .fetch_optional(&pool)
                .await
                .map_err(unavailable)
            })
            .await?;
        let Some(row) = row else {
            tracing::warn!(
                run = task.run_id,
                partition = task.partition,
                "no such run or step: message dropped"
            );
            return Ok(PartitionSummary {
                skipped: true,
                ..PartitionSummary::default()
            });
        };
        if row
            .try_get::<Option<chrono::NaiveDateTime>, _>("done_at")
            .map_err(unavailable)?
            .is_some()
        {
            return Ok(PartitionSummary {
                skipped: true,
                ..PartitionSummary::default()
            });
        }
        let policy_text: String = row.try_get("policy").map_err(unavailable)?;
        let run = RunContext {
            partner: row.try_get("partner_id").map_err(unavailable)?,
            month: Month::from_number(row.try_get("month").map_err(unavailable)?),
            policy: serde_json::from_str(&policy_text)
                .map_err(|e| Unavailable::new("mysql", format!("stored policy: {e}")))?,
            partitions: row.try_get("partitions_total").map_err(unavailable)?,
            validity_days: row
                .try_get::<Option<u32>, _>("validity_days")
                .map_err(unavailable)?
                .unwrap_or(DEFAULT_VALIDITY_DAYS),
        };
        let (first, last) = partition_buckets(task.partition, run.partitions);
        // The aggregate, in the database, over the covering index; a consistent read, no locks.
        let totals: Vec<(String, u64)> = self
            .timed(async {
                sqlx::query_as(
                    "SELECT user_id, CAST(SUM(amount) AS UNSIGNED) FROM orders \
                     WHERE partner_id = ? AND order_month = ? AND user_bucket BETWEEN ? AND ? AND status = 'PAID' \
                     GROUP BY user_id ORDER BY user_id",
                )
                .bind(&run.partner)
                .bind(run.month.number())
                .bind(first)
                .bind(last)
                .fetch_all(&pool)
                .await
                .map_err(unavailable)
            })
            .await?;
        let graded: Vec<Graded> = totals
            .into_iter()
            .map(|(user, paid)| Graded {
                tier: run.policy.tier_for(paid),
                user,
                paid,
            })
            .collect();
        let mut summary = PartitionSummary {
            users_graded: graded.len() as u64,
            ..PartitionSummary::default()
        };
        let chunks: Vec<&[Graded]> = if graded.is_empty() {
            vec![&[]]
        } else {
            graded.chunks(CHUNK_USERS).collect()
        };
        let count = chunks.len();
        for (i, chunk) in chunks.into_iter().enumerate() {
            self.timed(self.chunk(&run, task, chunk, i + 1 == count, &mut summary))
                .await?;
        }
        Ok(summary)
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
                        Some(m) => Month::from_number(m),
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
            Ok(Some(UserGrade {
                user_id: user.to_owned(),
                month,
                grade,
                paid_amount,
            }))
        })
        .await
    }
}

/// Orders per bulk INSERT: 8 placeholders each, far below the 65,535 limit.
pub const LOAD_CHUNK: usize = 5_000;

impl MySqlStore {
    /// Loads generated orders fast (`fcfs-admin orders generate`, tests, the bench): one
    /// multi-row `INSERT IGNORE` of up to [`LOAD_CHUNK`] orders, autocommitted; an order id already
    /// there is skipped. The rows inserted.
    pub async fn load_orders(&self, partner: &str, orders: &[Order]) -> Result<u64, Unavailable> {
        let pool = self.db().await?;
        let mut inserted = 0;
        for chunk in orders.chunks(LOAD_CHUNK) {
            let mut insert = order_insert(partner, chunk);
            inserted += self
                .timed(async { insert.build().execute(&pool).await.map_err(unavailable) })
                .await?
                .rows_affected();
        }
        Ok(inserted)
    }
}
