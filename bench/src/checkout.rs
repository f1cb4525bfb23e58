//! Checkout holds: holds and confirms per second over many coupons and wallets (each a hold of a
//! coupon and points, then its confirm: two transactions, each locking the hold row, a wallet and
//! a coupon), beside the bare `SELECT … FOR UPDATE` + `UPDATE` on one row measured in the same run.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use fcfs_shared::adapters::mysql::{MySqlStore, connect};
use fcfs_shared::checkout::CheckoutService;
use fcfs_shared::checkout::domain::PlaceHold;
use fcfs_shared::coupons::domain::OrderId;
use fcfs_shared::kernel::UserId;
use fcfs_shared::points::domain::IdempotencyKey;
use fcfs_shared::points::ports::{PointGrant, PointGrants};

use crate::coupons::{WORKERS, bare_row_rate, fixture, rate};
use crate::stack::env;

/// Coupons (and wallets, one per coupon's user) made for a run: more than 3 s can use.
const MANY: usize = 8_000;

pub struct CheckoutRun {
    pub yardstick: f64,
    pub holds: f64,
}

pub async fn run(run: usize) -> Result<CheckoutRun> {
    let pool = connect(&env("DATABASE_URL")?, WORKERS as u32).await?;
    let partner = format!("bench-checkout-{}-{run}", uuid::Uuid::new_v4().simple());
    let (_, ids) = fixture(&pool, &partner, MANY).await?;
    let store = MySqlStore::new(pool.clone()).with_timeout(Duration::from_secs(30));
    // 1,000 points for each coupon's user, granted 1,000 wallets per transaction.
    let now = chrono::Utc::now();
    for chunk in (0..MANY).collect::<Vec<_>>().chunks(1_000) {
        let grants: Vec<PointGrant> = chunk
            .iter()
            .map(|i| PointGrant {
                user: UserId::parse(&format!("u{i}")).expect("a user id"),
                key: IdempotencyKey::parse(Some(&format!("bench-grant-{i}"))).expect("a key"),
                amount: 1_000,
                reason: "bench".into(),
                expires_at: now + chrono::Duration::days(30),
            })
            .collect();
        let mut tx = pool.begin().await?;
        if let Err(e) = store.grant_points(&mut tx, &partner, &grants, now).await {
            bail!("granting the bench's points failed: {e}");
        }
        tx.commit().await?;
    }

    let yardstick = bare_row_rate(&pool, ids[0]).await?;

    let service = Arc::new(CheckoutService::new(store.clone(), store.clone(), store));
    let ids = Arc::new(ids);
    let holds = {
        let (service, partner, ids) = (service.clone(), partner.clone(), ids.clone());
        rate(move |w, n| {
            let (service, partner, ids) = (service.clone(), partner.clone(), ids.clone());
            async move {
                let i = n as usize * WORKERS + w;
                let Some(&coupon) = ids.get(i) else {
                    bail!("ran out of coupons: raise MANY");
                };
                let request = PlaceHold {
                    user_id: UserId::parse(&format!("u{i}")).expect("a user id"),
                    order_id: OrderId::try_from(format!("o{i}")).expect("an order id"),
                    order_amount: 10_000,
                    coupon_id: Some(coupon),
                    points: Some(300),
                    ttl_seconds: None,
                };
                let (hold, _) = service.place(&partner, request).await?;
                service.confirm(&partner, hold.id).await?;
                Ok(())
            }
        })
        .await?
    };
    let audit = MySqlStore::new(pool.clone())
        .with_timeout(Duration::from_secs(120))
        .verify_points(Some(&partner))
        .await?;
    if !audit.is_clean() || audit.holds != 0 {
        bail!("WRONG RESULT: the bench's wallets do not verify: {audit:?}");
    }
    Ok(CheckoutRun { yardstick, holds })
}
