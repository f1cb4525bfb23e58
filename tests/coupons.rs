//! Coupon use, cancel, list and expiry over the runner's HTTP API with the real MariaDB behind it:
//! one coupon pressed by many orders at once, retries, a thousand users at once, the sweep under
//! live uses, and pagination. Fixtures (campaigns, coupons) are written straight into MySQL, as the
//! writer would have; everything under test goes through the API.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use fcfs_shared::adapters::mysql::MySqlStore;
use fcfs_shared::coupons::CouponService;
use integration_tests::{PartnerApi, innodb_deadlocks};
use serde_json::{Value, json};

/// These tests load one MariaDB hard (100,000 rows, hundreds of concurrent transactions): one at a
/// time, so a test's pool never waits past its deadline behind another test's load.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct World {
    _turn: Option<tokio::sync::MutexGuard<'static, ()>>,
    api: PartnerApi,
}

impl std::ops::Deref for World {
    type Target = PartnerApi;
    fn deref(&self) -> &PartnerApi {
        &self.api
    }
}

impl World {
    /// A world that waits its turn (see `ONE_AT_A_TIME`).
    async fn new() -> Self {
        let turn = ONE_AT_A_TIME.lock().await;
        let mut world = Self::beside().await;
        world._turn = Some(turn);
        world
    }

    /// A second world inside a test that already has its turn.
    async fn beside() -> Self {
        Self {
            _turn: None,
            api: PartnerApi::start("coupons", 16).await,
        }
    }

    /// A campaign row (AMOUNT 1,000 off) whose coupons expire at `expires_at`.
    async fn campaign(&self, expires_at: DateTime<Utc>) -> u64 {
        sqlx::query(
            "INSERT INTO campaigns (partner_id, name, total_quantity, issue_starts_at, issue_ends_at, coupon_expires_at, \
             discount_type, discount_value) VALUES (?, 'coupon test', 10000000, ?, ?, ?, 'AMOUNT', 1000)",
        )
        .bind(&self.partner)
        .bind((Utc::now() - chrono::Duration::days(2)).naive_utc())
        .bind((Utc::now() - chrono::Duration::days(1)).naive_utc())
        .bind(expires_at.naive_utc())
        .execute(&self.pool)
        .await
        .unwrap()
        .last_insert_id()
    }

    /// Coupons of `campaign` for `users`, as the writer records them; their ids by user, in order.
    async fn coupons(&self, campaign: u64, users: &[String], expires_at: DateTime<Utc>) -> Vec<u64> {
        let issued_at = (Utc::now() - chrono::Duration::hours(1)).naive_utc();
        for (chunk_no, chunk) in users.chunks(5_000).enumerate() {
            let mut insert = sqlx::QueryBuilder::<sqlx::MySql>::new(
                "INSERT INTO coupons (campaign_id, partner_id, user_id, status, issue_rank, request_id, issued_at, expires_at) ",
            );
            insert.push_values(chunk.iter().enumerate(), |mut row, (i, user)| {
                row.push_bind(campaign)
                    .push_bind(&self.partner)
                    .push_bind(user)
                    .push_bind("ISSUED")
                    .push_bind((chunk_no * 5_000 + i + 1) as u32)
                    .push_bind(uuid::Uuid::new_v4().hyphenated().to_string())
                    .push_bind(issued_at)
                    .push_bind(expires_at.naive_utc());
            });
            insert.build().execute(&self.pool).await.unwrap();
        }
        let rows: Vec<(String, u64)> = sqlx::query_as("SELECT user_id, id FROM coupons WHERE campaign_id = ?")
            .bind(campaign)
            .fetch_all(&self.pool)
            .await
            .unwrap();
        let by_user: std::collections::HashMap<_, _> = rows.into_iter().collect();
        users.iter().map(|u| by_user[u]).collect()
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.running.base_url))
            .header("X-API-KEY", &self.key)
            .timeout(Duration::from_secs(30));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.expect("the runner answers");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn use_coupon(&self, id: u64, user: &str, order: &str, amount: u64) -> (u16, Value) {
        let body = json!({"userId": user, "orderId": order, "orderAmount": amount});
        self.call(reqwest::Method::POST, &format!("/v1/coupons/{id}/use"), Some(body))
            .await
    }

    async fn cancel(&self, id: u64, user: &str, order: &str) -> (u16, Value) {
        let body = json!({"userId": user, "orderId": order});
        self.call(
            reqwest::Method::POST,
            &format!("/v1/coupons/{id}/cancel-use"),
            Some(body),
        )
        .await
    }

    async fn history(&self, id: u64) -> Vec<(String, String)> {
        sqlx::query_as("SELECT action, order_id FROM coupon_history WHERE coupon_id = ? ORDER BY id")
            .bind(id)
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }

    async fn deadlocks(&self) -> u64 {
        innodb_deadlocks(&self.pool).await
    }
}

fn week() -> DateTime<Utc> {
    Utc::now() + chrono::Duration::days(7)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_coupon_pressed_by_100_orders_at_once_is_used_once() {
    let world = Arc::new(World::new().await);
    let campaign = world.campaign(week()).await;
    let id = world.coupons(campaign, &["alice".into()], week()).await[0];
    let deadlocks = world.deadlocks().await;
    let calls = (0..100).map(|i| {
        let world = world.clone();
        tokio::spawn(async move { world.use_coupon(id, "alice", &format!("order-{i}"), 5000).await })
    });
    let answers: Vec<(u16, Value)> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let ok: Vec<_> = answers.iter().filter(|(s, _)| *s == 200).collect();
    assert_eq!(ok.len(), 1, "{answers:?}");
    assert_eq!(
        answers
            .iter()
            .filter(|(s, b)| *s == 409 && b["error"] == "ALREADY_USED")
            .count(),
        99
    );
    let (_, used) = ok[0];
    assert_eq!(
        (used["status"].as_str(), used["discountAmount"].as_u64()),
        (Some("USED"), Some(1000))
    );
    assert_eq!(world.history(id).await.len(), 1);
    assert_eq!(world.deadlocks().await, deadlocks, "no deadlock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_retries_of_one_use_answer_alike_and_use_it_once() {
    let world = Arc::new(World::new().await);
    let campaign = world.campaign(week()).await;
    let id = world.coupons(campaign, &["bob".into()], week()).await[0];
    let calls = (0..50).map(|_| {
        let world = world.clone();
        tokio::spawn(async move { world.use_coupon(id, "bob", "order-1", 700).await })
    });
    let answers: Vec<(u16, Value)> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let distinct: Vec<_> = answers.iter().filter(|a| *a != &answers[0]).collect();
    assert!(distinct.is_empty(), "first {:?}, differing {distinct:?}", answers[0]);
    assert_eq!(answers[0].0, 200);
    assert_eq!(answers[0].1["discountAmount"], 700);
    assert_eq!(world.history(id).await, vec![("USE".into(), "order-1".into())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_cancel_and_use_again_by_another_order_keep_one_story() {
    let world = World::new().await;
    let campaign = world.campaign(week()).await;
    let id = world.coupons(campaign, &["carol".into()], week()).await[0];
    assert_eq!(world.cancel(id, "carol", "a").await.0, 409, "not used yet");
    assert_eq!(world.use_coupon(id, "carol", "a", 10_000).await.0, 200);
    let (status, cancelled) = world.cancel(id, "carol", "a").await;
    assert_eq!((status, cancelled["status"].as_str()), (200, Some("ISSUED")));
    assert!(cancelled.get("orderId").is_none(), "{cancelled}");
    assert_eq!(
        world.cancel(id, "carol", "a").await,
        (200, cancelled.clone()),
        "a cancel is idempotent"
    );
    assert_eq!(world.use_coupon(id, "carol", "b", 300).await.0, 200);
    assert_eq!(world.cancel(id, "carol", "a").await.1["error"], "NOT_USED");
    let (_, got) = world
        .call(reqwest::Method::GET, &format!("/v1/coupons/{id}"), None)
        .await;
    assert_eq!(
        (
            got["status"].as_str(),
            got["orderId"].as_str(),
            got["discountAmount"].as_u64()
        ),
        (Some("USED"), Some("b"), Some(300))
    );
    assert_eq!(
        world.history(id).await,
        [("USE", "a"), ("CANCEL_USE", "a"), ("USE", "b")].map(|(x, o)| (x.to_owned(), o.to_owned()))
    );
    // Another user's, or another partner's, coupon is simply not found.
    assert_eq!(world.use_coupon(id, "mallory", "c", 1).await.1["error"], "NOT_FOUND");
    let other = World::beside().await;
    assert_eq!(
        other
            .call(reqwest::Method::GET, &format!("/v1/coupons/{id}"), None)
            .await
            .0,
        404
    );
    assert_eq!(other.cancel(id, "carol", "b").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_users_use_their_own_coupons_at_once() {
    let world = Arc::new(World::new().await);
    let campaign = world.campaign(week()).await;
    let users: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();
    let ids = world.coupons(campaign, &users, week()).await;
    let deadlocks = world.deadlocks().await;
    // 64 clients in flight, as a checkout fleet would send them.
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let calls = users.into_iter().zip(ids).map(|(user, id)| {
        let (world, gate) = (world.clone(), gate.clone());
        tokio::spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            world.use_coupon(id, &user, &format!("order-of-{user}"), 2000).await.0
        })
    });
    let statuses: Vec<u16> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(
        statuses.iter().all(|s| *s == 200),
        "{:?}",
        statuses.iter().filter(|s| **s != 200).collect::<Vec<_>>()
    );
    assert_eq!(world.deadlocks().await, deadlocks, "no deadlock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_coupons_are_refused_at_once_and_the_sweep_keeps_uses_going() {
    let world = Arc::new(World::new().await);
    // Past its time but not swept: EXPIRED on every read, refused on use.
    let past = Utc::now() - chrono::Duration::minutes(1);
    let stale = world.campaign(past).await;
    let id = world.coupons(stale, &["dave".into()], past).await[0];
    let (_, got) = world
        .call(reqwest::Method::GET, &format!("/v1/coupons/{id}"), None)
        .await;
    assert_eq!(got["status"], "EXPIRED");
    let (status, refused) = world.use_coupon(id, "dave", "o", 1).await;
    assert_eq!((status, refused["error"].as_str()), (410, Some("EXPIRED")));

    // 100,000 expired coupons swept while 1,000 live ones are used.
    let users: Vec<String> = (0..100_000).map(|i| format!("gone-{i}")).collect();
    let expired_campaign = world.campaign(past).await;
    world.coupons(expired_campaign, &users, past).await;
    let live_campaign = world.campaign(week()).await;
    let live_users: Vec<String> = (0..1000).map(|i| format!("live-{i}")).collect();
    let live_ids = world.coupons(live_campaign, &live_users, week()).await;

    let sweep = {
        let pool = world.pool.clone();
        tokio::spawn(async move {
            let service = CouponService::new(MySqlStore::new(pool).with_timeout(Duration::from_secs(20)));
            service.sweep_expired(1000, Duration::from_secs(240)).await
        })
    };
    let gate = Arc::new(tokio::sync::Semaphore::new(16));
    let uses = live_users.into_iter().zip(live_ids).map(|(user, id)| {
        let (world, gate) = (world.clone(), gate.clone());
        tokio::spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            let started = Instant::now();
            let status = world.use_coupon(id, &user, "o", 100).await.0;
            (status, started.elapsed())
        })
    });
    let results: Vec<(u16, Duration)> = futures_util::future::join_all(uses)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let summary = sweep.await.unwrap().expect("the sweep finishes");
    assert!(results.iter().all(|(s, _)| *s == 200), "uses failed during the sweep");
    let mut latencies: Vec<Duration> = results.iter().map(|(_, d)| *d).collect();
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    eprintln!(
        "sweep: {} coupons in {} chunks, {} ms; concurrent uses: 1000, p99 {p99:?}",
        summary.expired, summary.chunks, summary.duration_ms
    );
    assert!(summary.expired >= 100_000 && summary.chunks >= 100, "{summary:?}");
    let (left,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM coupons WHERE campaign_id = ? AND status <> 'EXPIRED'")
        .bind(expired_campaign)
        .fetch_one(&world.pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
    let (_, list) = world
        .call(reqwest::Method::GET, "/v1/users/gone-7/coupons?status=EXPIRED", None)
        .await;
    assert_eq!(list["coupons"].as_array().map(Vec::len), Some(1), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_100_walk_250_coupons_without_a_gap_or_a_repeat() {
    let world = World::new().await;
    let mut expected = Vec::new();
    for _ in 0..250 {
        let campaign = world.campaign(week()).await;
        expected.push(world.coupons(campaign, &["erin".into()], week()).await[0]);
    }
    // Newest first: same issue time here, so by id, descending.
    expected.reverse();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = Vec::new();
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/users/erin/coupons?limit=100&cursor={c}"),
            None => "/v1/users/erin/coupons?limit=100".to_owned(),
        };
        let (status, page) = world.call(reqwest::Method::GET, &path, None).await;
        assert_eq!(status, 200, "{page}");
        let ids: Vec<u64> = page["coupons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| integration_tests::as_id(&c["couponId"]).unwrap())
            .collect();
        pages.push(ids.len());
        seen.extend(ids);
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(pages.len() < 10, "pagination does not end");
    }
    assert_eq!(pages, vec![100, 100, 50]);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 250, "no repeat");
    assert_eq!(seen, expected, "no gap, newest first");
    let (status, bad) = world
        .call(reqwest::Method::GET, "/v1/users/erin/coupons?limit=101", None)
        .await;
    assert_eq!((status, bad["field"].as_str()), (400, Some("limit")));
    // "zzz" is no cursor at all; the others are well-formed cursors whose instant (year 99999, year
    // -1) MySQL's DATETIME cannot hold: binding one panicked the function (a 502) before.
    for cursor in ["zzz", "MzA5MzUyNzk4MDgwMDAwMC4x", "LTYyMTk4NzU1MjAwMDAwLjE"] {
        let (status, bad) = world
            .call(
                reqwest::Method::GET,
                &format!("/v1/users/erin/coupons?cursor={cursor}"),
                None,
            )
            .await;
        assert_eq!((status, bad["field"].as_str()), (400, Some("cursor")), "{cursor}");
    }
}
