//! A points write that waits out a row lock is told apart by where it waited: on its own
//! idempotency key's row, a request with the same key is in flight (409 `IN_PROGRESS`); anywhere
//! else (a gap another transaction locked beside the wallet's lots, perhaps a neighbouring
//! wallet's write, perhaps another partner's) it is a lock conflict, retried and then a transient
//! 503, never `IN_PROGRESS`. Real MariaDB, a second connection holding the locks, sessions that
//! wait one second for a row lock.

use std::time::Duration;

use chrono::{SubsecRound, Utc};
use fcfs_shared::adapters::mysql::MySqlStore;
use fcfs_shared::kernel::UserId;
use fcfs_shared::points::domain::{EarnPoints, IdempotencyKey};
use fcfs_shared::points::{PointsError, PointsService};
use integration_tests::{env, mysql, unique};
use sqlx::mysql::MySqlPoolOptions;
use sqlx::{Connection, MySqlConnection};

fn earn(amount: u64) -> EarnPoints {
    EarnPoints {
        amount,
        reason: "locks".into(),
        expires_at: None,
    }
}

fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::parse(Some(k)).unwrap()
}

/// A store whose sessions wait one second for a row lock, and a deadline long enough for every
/// retry, so the answer is the store's verdict, not its deadline.
async fn service() -> PointsService<MySqlStore> {
    let pool = MySqlPoolOptions::new()
        .max_connections(4)
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::query("SET SESSION innodb_lock_wait_timeout = 1")
                    .execute(conn)
                    .await?;
                Ok(())
            })
        })
        .connect(&env("DATABASE_URL"))
        .await
        .expect("MySQL answers at DATABASE_URL");
    PointsService::new(MySqlStore::new(pool).with_timeout(Duration::from_secs(30)))
}

#[tokio::test]
async fn a_lock_wait_is_in_progress_only_on_the_keys_own_row() {
    let points = service().await;
    let partner = unique("locks");
    let user = UserId::parse("holder").unwrap();
    points
        .earn(&partner, user.clone(), &key("first"), earn(5))
        .await
        .unwrap();
    let pool = mysql().await;
    let wallet: u64 = sqlx::query_scalar("SELECT id FROM point_wallets WHERE partner_id = ? AND user_id = ?")
        .bind(&partner)
        .bind(user.as_str())
        .fetch_one(&pool)
        .await
        .unwrap();
    let mut other = MySqlConnection::connect(&env("DATABASE_URL")).await.unwrap();

    // Another transaction locks the lots of every later wallet, and with them the gap where this
    // wallet's next lot goes: the earn's batch waits on it.
    let mut held = other.begin().await.unwrap();
    sqlx::query("SELECT id FROM point_lots WHERE wallet_id > ? FOR UPDATE")
        .bind(wallet)
        .fetch_all(&mut *held)
        .await
        .unwrap();
    let answer = points.earn(&partner, user.clone(), &key("gap"), earn(7)).await;
    assert!(
        matches!(answer, Err(PointsError::Unavailable(_))),
        "a lock conflict is transient: {answer:?}"
    );
    held.rollback().await.unwrap();
    let retried = points.earn(&partner, user.clone(), &key("gap"), earn(7)).await.unwrap();
    assert_eq!(retried.balance, 12, "the retry with the key has the one effect");

    // Another request with the same key, not committed yet: this one is in progress.
    let mut racing = other.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO idempotency_keys (partner_id, idempotency_key, request_hash, created_at) VALUES (?, ?, ?, ?)",
    )
    .bind(&partner)
    .bind("raced")
    .bind("a racing request")
    .bind(Utc::now().trunc_subsecs(3).naive_utc())
    .execute(&mut *racing)
    .await
    .unwrap();
    let answer = points.earn(&partner, user.clone(), &key("raced"), earn(1)).await;
    assert!(matches!(answer, Err(PointsError::InProgress)), "{answer:?}");
    racing.rollback().await.unwrap();
    let balance = points.balance(&partner, &user).await.unwrap();
    assert_eq!(balance.balance, 12, "neither refused write changed anything");
}
