//! Grading's chunk tables on MySQL (`ChunkTables`), and the chunk transaction: begun here, written
//! by `grading::chunk::write_chunk` (grades, the rewards granted through issuance's and the points
//! ledger's storage, their records, the step), committed here, and started over when it lost a
//! deadlock, waited out a lock, or met a grant another worker committed first.

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{MySql, MySqlConnection, QueryBuilder};

use super::super::{MySqlOutbox, MySqlStore, tx_error, unavailable};
use crate::events::catalog;
use crate::events::ports::Outbox;
use crate::grading::GradingError;
use crate::grading::chunk::{ChunkStores, write_chunk};
use crate::grading::domain::{
    ChunkCount, GradedUser, Grant, Month, PartitionTask, PartitionWork, RewardKind, RewardRecord,
};
use crate::grading::ports::ChunkTables;
use crate::kernel::{TxError, UserId};

/// Attempts of a chunk that met a conflict (it re-reads and skips what others committed).
const CHUNK_ATTEMPTS: u32 = 4;

impl MySqlStore {
    pub(super) async fn write_chunk_retrying(
        &self,
        task: PartitionTask,
        work: &PartitionWork,
        users: &[GradedUser],
        last: Option<u64>,
    ) -> Result<ChunkCount, GradingError> {
        let stores = ChunkStores {
            grading: self,
            coupons: self,
            points: self,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut conn = self.db().await?.acquire().await.map_err(unavailable)?;
            // READ COMMITTED: the chunk's locking reads (wallets, their lots, a campaign's row)
            // lock the rows they find and no gap beside them. Concurrent chunks create wallets
            // and lots with interleaved ids, so under REPEATABLE READ one chunk's gap lock on
            // `point_lots` blocked another's insert of a lot into that gap and the two deadlocked
            // (measured: 53 restarts, 4 partitions failed, in one run of a million orders). Every
            // row a chunk decides on is read current under its owner row's lock anyway.
            sqlx::query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
                .execute(&mut *conn)
                .await
                .map_err(unavailable)?;
            let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(unavailable)?;
            match write_chunk(&mut *tx, &stores, task, work, users, last, Utc::now()).await {
                Ok(count) => {
                    tx.commit().await.map_err(unavailable)?;
                    return Ok(count);
                }
                Err(TxError::Conflict(e)) if attempt < CHUNK_ATTEMPTS => {
                    let _ = tx.rollback().await;
                    tracing::warn!(run = task.run_id, partition = task.partition, attempt, error = %e, "grading chunk started over");
                }
                Err(TxError::Conflict(e)) => {
                    return Err(GradingError::Unavailable(crate::kernel::Unavailable::new("mysql", e)));
                }
                Err(TxError::Unavailable(e)) => return Err(e.into()),
            }
        }
    }
}

#[async_trait]
impl ChunkTables<MySqlConnection> for MySqlStore {
    async fn record_grades(
        &self,
        tx: &mut MySqlConnection,
        task: PartitionTask,
        work: &PartitionWork,
        users: &[GradedUser],
        now: DateTime<Utc>,
    ) -> Result<(), TxError> {
        if users.is_empty() {
            return Ok(());
        }
        let mut grades = QueryBuilder::<MySql>::new(
            "INSERT INTO user_grades (partner_id, month, user_id, grade, paid_amount, run_id, graded_at) ",
        );
        grades.push_values(users, |mut row, g| {
            row.push_bind(&work.partner)
                .push_bind(work.month.number())
                .push_bind(g.user.as_str())
                .push_bind(g.grade())
                .push_bind(g.paid)
                .push_bind(task.run_id)
                .push_bind(now.naive_utc());
        });
        grades.push(
            " ON DUPLICATE KEY UPDATE grade = VALUES(grade), paid_amount = VALUES(paid_amount), \
             run_id = VALUES(run_id), graded_at = VALUES(graded_at)",
        );
        grades.build().execute(&mut *tx).await.map_err(tx_error)?;
        Ok(())
    }

    async fn rewards_given(
        &self,
        tx: &mut MySqlConnection,
        work: &PartitionWork,
        users: &[GradedUser],
    ) -> Result<HashSet<(UserId, RewardKind)>, TxError> {
        let mut lookup = QueryBuilder::<MySql>::new("SELECT user_id, kind FROM grade_rewards WHERE partner_id = ");
        lookup
            .push_bind(&work.partner)
            .push(" AND month = ")
            .push_bind(work.month.number())
            .push(" AND user_id IN (");
        let mut list = lookup.separated(", ");
        for g in users.iter().filter(|g| g.tier.is_some()) {
            list.push_bind(g.user.as_str());
        }
        lookup.push(")");
        let rows: Vec<(String, String)> = lookup.build_query_as().fetch_all(&mut *tx).await.map_err(tx_error)?;
        Ok(rows
            .into_iter()
            .filter_map(|(user, kind)| Some((UserId::parse(&user).ok()?, RewardKind::parse(&kind)?)))
            .collect())
    }

    async fn record_rewards(
        &self,
        tx: &mut MySqlConnection,
        work: &PartitionWork,
        rewards: &[RewardRecord],
        now: DateTime<Utc>,
    ) -> Result<(), TxError> {
        if rewards.is_empty() {
            return Ok(());
        }
        let mut insert = QueryBuilder::<MySql>::new(
            "INSERT INTO grade_rewards (partner_id, month, user_id, kind, grade, reference_id, points, outcome, granted_at) ",
        );
        insert.push_values(rewards, |mut row, r| {
            let points = match r.due.grant {
                Grant::Points(amount) => Some(amount),
                Grant::Coupon(_) => None,
            };
            row.push_bind(&work.partner)
                .push_bind(work.month.number())
                .push_bind(r.due.user.as_str())
                .push_bind(r.due.grant.kind().as_str())
                .push_bind(&r.due.grade)
                .push_bind(r.reference)
                .push_bind(points)
                .push_bind(r.outcome.as_str())
                .push_bind(now.naive_utc());
        });
        insert.build().execute(&mut *tx).await.map_err(tx_error)?;
        Ok(())
    }

    async fn count_step(
        &self,
        tx: &mut MySqlConnection,
        task: PartitionTask,
        count: ChunkCount,
        last: Option<u64>,
        now: DateTime<Utc>,
    ) -> Result<(), TxError> {
        sqlx::query(
            "UPDATE grading_steps SET rewards_granted = rewards_granted + ? WHERE run_id = ? AND partition_no = ?",
        )
        .bind(count.granted)
        .bind(task.run_id)
        .bind(task.partition)
        .execute(&mut *tx)
        .await
        .map_err(tx_error)?;
        let Some(users_graded) = last else {
            return Ok(());
        };
        let marked = sqlx::query(
            "UPDATE grading_steps SET done_at = ?, users_graded = ? WHERE run_id = ? AND partition_no = ? AND done_at IS NULL",
        )
        .bind(now.naive_utc())
        .bind(users_graded)
        .bind(task.run_id)
        .bind(task.partition)
        .execute(&mut *tx)
        .await
        .map_err(tx_error)?
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
            .bind(now.naive_utc())
            .bind(task.run_id)
            .execute(&mut *tx)
            .await
            .map_err(tx_error)?;
            // The step that finished the run announces it, in the same transaction.
            let (partner, month, done, total, users): (String, i32, u32, u32, u64) = sqlx::query_as(
                "SELECT partner_id, month, partitions_done, partitions_total, users_graded FROM grading_runs WHERE id = ?",
            )
            .bind(task.run_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(tx_error)?;
            if done >= total {
                let month = Month::from_number(month).map_or_else(|| month.to_string(), |m| m.to_string());
                let completed = catalog::grading_run_completed(&partner, task.run_id, &month, users, now);
                MySqlOutbox
                    .append(tx, &[completed])
                    .await
                    .map_err(TxError::Unavailable)?;
            }
        }
        Ok(())
    }
}
