//! Point uses under the wallet's row lock: uses per second on one hot wallet and spread over
//! 10,000 wallets, beside a bare `SELECT … FOR UPDATE` + `UPDATE` transaction on one wallet row
//! (the ceiling any write to one wallet has on this machine), all with the same connections.
//! Each use is the whole write: its Idempotency-Key's record, the wallet locked, its lots read,
//! the USE entry, the allocation, the lot and wallet updated, one transaction.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use fcfs_shared::adapters::mysql::{MySqlStore, connect, lock_retries};
use fcfs_shared::kernel::UserId;
use fcfs_shared::points::PointsService;
use fcfs_shared::points::domain::{IdempotencyKey, KEY_COUNTER_SHARDS, KEY_RETENTION_DAYS, UsePoints};
use sqlx::MySqlPool;

use crate::coupons::{WORKERS, rate};
use crate::stack::env;

pub const WALLETS: usize = 10_000;

pub struct PointsRun {
    pub yardstick: f64,
    pub hot: f64,
    pub spread: f64,
    pub lock_retries: u64,
}

/// `WALLETS` wallets (`u0` … ), each with one lot and its EARN entry, written in bulk and
/// consistent with what `verify_points` checks; u0 (the hot one) holds far more than a run spends.
/// The partner is a month old: its Idempotency-Key records of the days still kept are counted
/// (every shard of every day, 1,000 records each), as each write's admission reads them.
async fn fixture(pool: &MySqlPool, partner: &str) -> Result<()> {
    let today = chrono::Utc::now().date_naive();
    let days: Vec<(chrono::NaiveDate, u8)> = (1..=u64::from(KEY_RETENTION_DAYS))
        .flat_map(|ago| (0..KEY_COUNTER_SHARDS).map(move |shard| (today - chrono::Days::new(ago), shard)))
        .collect();
    let mut counts =
        sqlx::QueryBuilder::<sqlx::MySql>::new("INSERT INTO idempotency_counts (partner_id, day, shard, records) ");
    counts.push_values(&days, |mut row, (day, shard)| {
        row.push_bind(partner)
            .push_bind(day)
            .push_bind(shard)
            .push_bind(1_000u64);
    });
    counts.build().execute(pool).await?;
    for chunk in (0..WALLETS).collect::<Vec<_>>().chunks(5_000) {
        let mut insert = sqlx::QueryBuilder::<sqlx::MySql>::new(
            "INSERT INTO point_wallets (partner_id, user_id, balance, updated_at) ",
        );
        insert.push_values(chunk, |mut row, i| {
            row.push_bind(partner)
                .push_bind(format!("u{i}"))
                .push_bind(if *i == 0 { 1_000_000_000u64 } else { 1_000_000 })
                .push_bind(chrono::Utc::now().naive_utc());
        });
        insert.build().execute(pool).await?;
    }
    sqlx::query(
        "INSERT INTO point_transactions (wallet_id, partner_id, user_id, kind, amount, balance_after, reason, created_at) \
         SELECT id, partner_id, user_id, 'EARN', balance, balance, 'bench', NOW(3) FROM point_wallets WHERE partner_id = ?",
    )
    .bind(partner)
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO point_lots (wallet_id, transaction_id, amount, remaining, expires_at, created_at) \
         SELECT wallet_id, id, amount, amount, NOW(3) + INTERVAL 30 DAY, NOW(3) FROM point_transactions \
         WHERE partner_id = ? AND kind = 'EARN'",
    )
    .bind(partner)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn run(run: usize) -> Result<PointsRun> {
    let pool = connect(&env("DATABASE_URL")?, WORKERS as u32).await?;
    let partner = format!("bench-points-{}-{run}", uuid::Uuid::new_v4().simple());
    fixture(&pool, &partner).await?;
    let hot: u64 = sqlx::query_scalar("SELECT id FROM point_wallets WHERE partner_id = ? AND user_id = 'u0'")
        .bind(&partner)
        .fetch_one(&pool)
        .await?;

    // Yardstick: the hot wallet's row, locked and written, as bare as it gets. The write changes
    // the row (its `updated_at` moves a millisecond, back and forth): an UPDATE that leaves a row
    // as it was writes no redo log, so its COMMIT has nothing to make durable and is not a write's
    // ceiling. The balance is not touched, so the wallet still verifies.
    let yardstick = {
        let pool = pool.clone();
        rate(move |_, _| {
            let pool = pool.clone();
            async move {
                let mut tx = pool.begin().await?;
                sqlx::query("SELECT balance FROM point_wallets WHERE id = ? FOR UPDATE")
                    .bind(hot)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "UPDATE point_wallets SET updated_at = updated_at + \
                     INTERVAL IF(MICROSECOND(updated_at) DIV 1000 MOD 2 = 0, 1000, -1000) MICROSECOND WHERE id = ?",
                )
                .bind(hot)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }
        })
        .await?
    };

    let service = Arc::new(PointsService::new(
        MySqlStore::new(pool.clone()).with_timeout(Duration::from_secs(10)),
    ));
    let retries_before = lock_retries();
    let spend = |w: usize, n: u64| UsePoints {
        amount: 1,
        order_id: format!("o{w}-{n}").try_into().expect("an order id"),
        reason: None,
    };
    let key = move |scenario: &str, w: usize, n: u64| {
        IdempotencyKey::parse(Some(&format!("{scenario}-{run}-{w}-{n}"))).expect("a key")
    };

    // One hot wallet: every worker spends 1 point of u0 per use.
    let hot_rate = {
        let (service, partner) = (service.clone(), partner.clone());
        rate(move |w, n| {
            let (service, partner) = (service.clone(), partner.clone());
            async move {
                let user = UserId::parse("u0").expect("a user id");
                service
                    .use_points(&partner, user, &key("hot", w, n), spend(w, n))
                    .await?;
                Ok(())
            }
        })
        .await?
    };

    // 10,000 wallets: each worker walks its own share of them.
    let spread = {
        let (service, partner) = (service.clone(), partner.clone());
        rate(move |w, n| {
            let (service, partner) = (service.clone(), partner.clone());
            async move {
                let i = 1 + (n as usize * WORKERS + w) % (WALLETS - 1);
                let user = UserId::parse(&format!("u{i}")).expect("a user id");
                service
                    .use_points(&partner, user, &key("spread", w, n), spend(w, n))
                    .await?;
                Ok(())
            }
        })
        .await?
    };

    let audit = MySqlStore::new(pool.clone())
        .with_timeout(Duration::from_secs(120))
        .verify_points(Some(&partner))
        .await?;
    if !audit.is_clean() || audit.wallets != WALLETS as u64 {
        bail!("WRONG RESULT: the wallets do not verify after the run: {audit:?}");
    }
    Ok(PointsRun {
        yardstick,
        hot: hot_rate,
        spread,
        lock_retries: lock_retries() - retries_before,
    })
}
