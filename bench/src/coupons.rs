//! Coupon use under its row lock: uses per second over many coupons, and locking attempts per
//! second on one hot coupon, beside a bare `SELECT … FOR UPDATE` + `UPDATE` transaction on one row
//! (the ceiling any hot-row write has on this machine), all with the same number of connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use fcfs_shared::adapters::mysql::{MySqlStore, connect};
use fcfs_shared::coupons::CouponError;
use fcfs_shared::coupons::CouponService;
use fcfs_shared::coupons::domain::{CancelUse, OrderId, UseCoupon};
use fcfs_shared::kernel::UserId;
use sqlx::MySqlPool;

use crate::stack::env;

/// Concurrent workers, each with its own connection, in every scenario.
pub const WORKERS: usize = 16;
const SECONDS: Duration = Duration::from_secs(3);
const MANY: usize = 30_000;

pub struct CouponRun {
    pub yardstick: f64,
    pub many: f64,
    pub hot: f64,
}

pub async fn fixture(pool: &MySqlPool, partner: &str, users: usize) -> Result<(u64, Vec<u64>)> {
    let expires = (chrono::Utc::now() + chrono::Duration::days(7)).naive_utc();
    let campaign = sqlx::query(
        "INSERT INTO campaigns (partner_id, name, total_quantity, issue_starts_at, issue_ends_at, coupon_expires_at, \
         discount_type, discount_value) VALUES (?, 'bench coupons', 10000000, NOW(3), NOW(3), ?, 'PERCENT', 10)",
    )
    .bind(partner)
    .bind(expires)
    .execute(pool)
    .await?
    .last_insert_id();
    for chunk in (0..users).collect::<Vec<_>>().chunks(5_000) {
        let mut insert = sqlx::QueryBuilder::<sqlx::MySql>::new(
            "INSERT INTO coupons (campaign_id, partner_id, user_id, status, issue_rank, request_id, issued_at, expires_at) ",
        );
        insert.push_values(chunk, |mut row, i| {
            row.push_bind(campaign)
                .push_bind(partner)
                .push_bind(format!("u{i}"))
                .push_bind("ISSUED")
                .push_bind(*i as u32 + 1)
                .push_bind(uuid::Uuid::new_v4().hyphenated().to_string())
                .push_bind(chrono::Utc::now().naive_utc())
                .push_bind(expires);
        });
        insert.build().execute(pool).await?;
    }
    let ids: Vec<u64> = sqlx::query_scalar("SELECT id FROM coupons WHERE campaign_id = ? ORDER BY issue_rank")
        .bind(campaign)
        .fetch_all(pool)
        .await?;
    Ok((campaign, ids))
}

/// Runs `op(worker, n)` on `WORKERS` tasks for `SECONDS`; operations per second.
pub async fn rate<F, Fut>(op: F) -> Result<f64>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (op, stop, done) = (op.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    op(w, n).await?;
                    n += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, anyhow::Error>(())
            })
        })
        .collect();
    tokio::time::sleep(SECONDS).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// The yardstick: coupon `id`'s row, locked and updated per transaction, as bare as it gets, on
/// `WORKERS` connections; put back as it was after.
pub async fn bare_row_rate(pool: &MySqlPool, id: u64) -> Result<f64> {
    let rate = {
        let pool = pool.clone();
        rate(move |_, n| {
            let pool = pool.clone();
            async move {
                let mut tx = pool.begin().await?;
                sqlx::query("SELECT id FROM coupons WHERE id = ? FOR UPDATE")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE coupons SET order_amount = ? WHERE id = ?")
                    .bind(n)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }
        })
        .await?
    };
    sqlx::query("UPDATE coupons SET order_amount = NULL WHERE id = ?")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(rate)
}

pub async fn run(run: usize) -> Result<CouponRun> {
    let pool = connect(&env("DATABASE_URL")?, WORKERS as u32).await?;
    let partner = format!("bench-coupons-{}-{run}", uuid::Uuid::new_v4().simple());
    let (_, hot_ids) = fixture(&pool, &partner, 1).await?;
    let hot = hot_ids[0];

    let yardstick = bare_row_rate(&pool, hot).await?;

    let service = Arc::new(CouponService::new(
        MySqlStore::new(pool.clone()).with_timeout(Duration::from_secs(10)),
    ));
    let user = |i: usize| UserId::parse(&format!("u{i}")).expect("a user id");
    let order = |w: usize, n: u64| OrderId::try_from(format!("o{w}-{n}")).expect("an order id");

    // Many coupons: every worker spends its own share, one use (a write and a history row) each.
    let (_, ids) = fixture(&pool, &partner, MANY).await?;
    let ids = Arc::new(ids);
    let many = {
        let (service, partner, ids) = (service.clone(), partner.clone(), ids.clone());
        rate(move |w, n| {
            let (service, partner, ids) = (service.clone(), partner.clone(), ids.clone());
            async move {
                let i = n as usize * WORKERS + w;
                let Some(&id) = ids.get(i) else {
                    bail!("ran out of coupons: raise MANY");
                };
                let request = UseCoupon {
                    user_id: user(i),
                    order_id: order(w, n),
                    order_amount: 10_000,
                };
                service.use_coupon(&partner, id, request).await?;
                Ok(())
            }
        })
        .await?
    };

    // One hot coupon: every worker tries to use it with its own order; the one that gets it
    // gives it back. Each attempt is a locking transaction; a success writes twice.
    let hot_rate = {
        let (service, partner) = (service.clone(), partner.clone());
        rate(move |w, n| {
            let (service, partner) = (service.clone(), partner.clone());
            async move {
                let request = UseCoupon {
                    user_id: user(0),
                    order_id: order(w, n),
                    order_amount: 10_000,
                };
                match service.use_coupon(&partner, hot, request).await {
                    Ok(_) => {
                        let cancel = CancelUse {
                            user_id: user(0),
                            order_id: order(w, n),
                        };
                        service.cancel_use(&partner, hot, cancel).await?;
                    }
                    Err(CouponError::AlreadyUsed) => {}
                    Err(e) => return Err(e.into()),
                }
                Ok(())
            }
        })
        .await?
    };
    let (uses,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM coupon_history WHERE coupon_id = ? AND action = 'USE'")
        .bind(hot)
        .fetch_one(&pool)
        .await?;
    let (cancels,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM coupon_history WHERE coupon_id = ? AND action = 'CANCEL_USE'")
            .bind(hot)
            .fetch_one(&pool)
            .await?;
    if uses != cancels && uses != cancels + 1 {
        bail!("WRONG RESULT: the hot coupon's history has {uses} uses and {cancels} cancels");
    }
    Ok(CouponRun {
        yardstick,
        many,
        hot: hot_rate,
    })
}
