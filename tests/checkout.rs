//! Checkout holds over the runner's HTTP API with the real MariaDB behind it: a hundred orders
//! racing to hold one coupon, confirm and release racing, retries, a hold short of points, holds
//! ending while confirms arrive, holds racing uses and transfers on one wallet, and a runner
//! process killed between hold and confirm. Campaign and coupon rows are written straight into
//! MySQL, as the writer would have; everything under test goes through the API.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use fcfs_shared::adapters::mysql::MySqlStore;
use fcfs_shared::checkout::CheckoutService;
use futures_util::future::join_all;
use integration_tests::services::RunnerProcess;
use integration_tests::{PartnerApi, innodb_deadlocks, unique};
use serde_json::{Value, json};

/// These tests race hundreds of requests on a few rows: one at a time, so one test's load never
/// pushes another's requests past their deadline.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct World {
    _turn: tokio::sync::MutexGuard<'static, ()>,
    api: PartnerApi,
    base_url: String,
}

impl World {
    async fn new() -> Self {
        let turn = ONE_AT_A_TIME.lock().await;
        let api = PartnerApi::start("checkout", 16).await;
        let base_url = api.running.base_url.clone();
        Self {
            _turn: turn,
            api,
            base_url,
        }
    }

    /// For each of `users`, a SALE campaign row (AMOUNT 1,000 off) and an ISSUED coupon of it,
    /// valid until `expires_at`: their ids, in order.
    async fn coupons(&self, users: &[&str], expires_at: DateTime<Utc>) -> Vec<u64> {
        let mut ids = Vec::new();
        for (rank, user) in users.iter().enumerate() {
            ids.push(self.coupon(user, rank as u32 + 1, expires_at).await);
        }
        ids
    }

    async fn coupon(&self, user: &str, rank: u32, expires_at: DateTime<Utc>) -> u64 {
        let pool = &self.api.pool;
        let campaign = sqlx::query(
            "INSERT INTO campaigns (partner_id, name, total_quantity, issue_starts_at, issue_ends_at, coupon_expires_at, \
             discount_type, discount_value) VALUES (?, 'checkout test', 1000, ?, ?, ?, 'AMOUNT', 1000)",
        )
        .bind(&self.api.partner)
        .bind((Utc::now() - chrono::Duration::days(2)).naive_utc())
        .bind((Utc::now() - chrono::Duration::days(1)).naive_utc())
        .bind(expires_at.naive_utc())
        .execute(pool)
        .await
        .unwrap()
        .last_insert_id();
        sqlx::query(
            "INSERT INTO coupons (campaign_id, partner_id, user_id, status, issue_rank, request_id, issued_at, expires_at) \
             VALUES (?, ?, ?, 'ISSUED', ?, ?, ?, ?)",
        )
        .bind(campaign)
        .bind(&self.api.partner)
        .bind(user)
        .bind(rank)
        .bind(uuid::Uuid::new_v4().hyphenated().to_string())
        .bind((Utc::now() - chrono::Duration::hours(1)).naive_utc())
        .bind(expires_at.naive_utc())
        .execute(pool)
        .await
        .unwrap()
        .last_insert_id()
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>, key: Option<&str>) -> (u16, Value) {
        call(&self.api.http, &self.base_url, &self.api.key, method, path, body, key).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body), None).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None, None).await
    }

    async fn earn(&self, user: &str, amount: u64) {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/users/{user}/points/earn"),
                Some(json!({"amount": amount, "reason": "checkout test"})),
                Some(&unique("earn")),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }

    async fn balance(&self, user: &str) -> (u64, u64) {
        let (status, body) = self.get(&format!("/v1/users/{user}/points")).await;
        assert_eq!(status, 200, "{body}");
        (body["available"].as_u64().unwrap(), body["held"].as_u64().unwrap())
    }

    async fn coupon_status(&self, id: u64) -> String {
        let (status, body) = self.get(&format!("/v1/coupons/{id}")).await;
        assert_eq!(status, 200, "{body}");
        body["status"].as_str().unwrap().to_owned()
    }

    async fn movements(&self, user: &str) -> Vec<String> {
        let (status, body) = self.get(&format!("/v1/users/{user}/points/history?limit=100")).await;
        assert_eq!(status, 200, "{body}");
        let mut kinds: Vec<String> = body["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap_or_default().to_owned())
            .collect();
        kinds.reverse();
        kinds
    }

    async fn wallets_verify(&self) {
        let store = MySqlStore::new(self.api.pool.clone()).with_timeout(Duration::from_secs(60));
        let audit = store.verify_points(Some(&self.api.partner)).await.unwrap();
        assert!(audit.is_clean(), "{audit:?}");
    }

    /// The sweep the coupon-expiry function runs, against the same database.
    async fn sweep(&self) -> u64 {
        let store = MySqlStore::new(self.api.pool.clone()).with_timeout(Duration::from_secs(30));
        let service = CheckoutService::new(store.clone(), store.clone(), store);
        service.sweep_ended(100, Duration::from_secs(30)).await.unwrap().expired
    }
}

async fn call(
    http: &reqwest::Client,
    base_url: &str,
    api_key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    idempotency_key: Option<&str>,
) -> (u16, Value) {
    let mut req = http
        .request(method, format!("{base_url}{path}"))
        .header("X-API-KEY", api_key)
        .timeout(Duration::from_secs(30));
    if let Some(key) = idempotency_key {
        req = req.header("Idempotency-Key", key);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.expect("the runner answers");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn hold(user: &str, order: &str, coupon: Option<u64>, points: Option<u64>, ttl: u32) -> Value {
    let mut body = json!({"userId": user, "orderId": order, "orderAmount": 5_000, "ttlSeconds": ttl});
    if let Some(coupon) = coupon {
        body["couponId"] = json!(coupon.to_string());
    }
    if let Some(points) = points {
        body["points"] = json!(points);
    }
    body
}

fn hold_id(body: &Value) -> String {
    body["holdId"].as_str().expect("a hold id").to_owned()
}

fn counts(statuses: impl IntoIterator<Item = u16>) -> HashMap<u16, usize> {
    let mut counts = HashMap::new();
    for s in statuses {
        *counts.entry(s).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn a_hundred_orders_race_for_one_coupon_and_one_holds_it_then_confirm_and_release_race() {
    let world = World::new().await;
    let w = &world;
    let coupon = w.coupons(&["alice"], Utc::now() + chrono::Duration::days(1)).await[0];
    w.earn("alice", 10_000).await;
    let deadlocks = innodb_deadlocks(&w.api.pool).await;
    let answers = join_all((0..100).map(|i| {
        let body = hold("alice", &format!("order-{i}"), Some(coupon), Some(100), 600);
        async move { w.post("/v1/checkout/holds", body).await }
    }))
    .await;
    let by_status = counts(answers.iter().map(|(s, _)| *s));
    assert_eq!(by_status.get(&201), Some(&1), "{by_status:?}");
    assert_eq!(by_status.get(&409), Some(&99), "{by_status:?}");
    assert!(
        answers
            .iter()
            .filter(|(s, _)| *s == 409)
            .all(|(_, b)| b["error"] == "COUPON_HELD"),
        "the losers are told the coupon is held"
    );
    let (_, held) = answers.iter().find(|(s, _)| *s == 201).unwrap();
    assert_eq!(
        (
            held["discount"].as_u64(),
            held["points"].as_u64(),
            held["payable"].as_u64()
        ),
        (Some(1_000), Some(100), Some(3_900))
    );
    assert_eq!(w.coupon_status(coupon).await, "HELD");
    // Only the winner's points are held: the losers' were rolled back with their coupon.
    assert_eq!(w.balance("alice").await, (9_900, 100));
    let id = hold_id(held);
    // 50 retries of the winning hold: the same hold, answered 200, nothing more held.
    let order = held["orderId"].as_str().unwrap().to_owned();
    let retries = join_all((0..50).map(|_| {
        let body = hold("alice", &order, Some(coupon), Some(100), 600);
        async move { w.post("/v1/checkout/holds", body).await }
    }))
    .await;
    assert!(
        retries.iter().all(|(s, b)| *s == 200 && hold_id(b) == id),
        "{retries:?}"
    );
    assert_eq!(w.balance("alice").await, (9_900, 100));
    // Confirms and releases race, 50 of each: one settles it, every other answer names that.
    let settles = join_all((0..100).map(|i| {
        let path = format!(
            "/v1/checkout/holds/{id}/{}",
            if i % 2 == 0 { "confirm" } else { "release" }
        );
        async move { (i % 2 == 0, w.post(&path, json!({})).await) }
    }))
    .await;
    let confirmed = w.get(&format!("/v1/checkout/holds/{id}")).await.1["status"] == "CONFIRMED";
    for (is_confirm, (status, body)) in &settles {
        match (confirmed, is_confirm) {
            (true, true) | (false, false) => assert_eq!(*status, 200, "{body}"),
            (true, false) => assert_eq!((*status, body["error"].as_str()), (409, Some("HOLD_CONFIRMED"))),
            (false, true) => assert_eq!((*status, body["error"].as_str()), (409, Some("HOLD_RELEASED"))),
        }
    }
    if confirmed {
        assert_eq!(w.coupon_status(coupon).await, "USED");
        assert_eq!(w.balance("alice").await, (9_900, 0));
        assert_eq!(w.movements("alice").await, ["EARN", "USE"]);
        // A confirmed coupon's use can be cancelled as any use, by its order.
        let (status, body) = w
            .post(
                &format!("/v1/coupons/{coupon}/cancel-use"),
                json!({"userId": "alice", "orderId": order}),
            )
            .await;
        assert_eq!((status, body["status"].as_str()), (200, Some("ISSUED")), "{body}");
    } else {
        assert_eq!(w.coupon_status(coupon).await, "ISSUED");
        assert_eq!(w.balance("alice").await, (10_000, 0));
        assert_eq!(w.movements("alice").await, ["EARN", "USE", "USE_CANCEL"]);
    }
    assert_eq!(innodb_deadlocks(&w.api.pool).await, deadlocks, "no deadlock");
    w.wallets_verify().await;
}

#[tokio::test]
async fn a_hold_short_of_points_holds_nothing_and_a_held_coupon_is_not_used_in_one_step() {
    let world = World::new().await;
    let w = &world;
    let coupons = w.coupons(&["bob", "bob"], Utc::now() + chrono::Duration::days(1)).await;
    w.earn("bob", 10).await;
    let (status, body) = w
        .post(
            "/v1/checkout/holds",
            hold("bob", "o-short", Some(coupons[0]), Some(11), 600),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("INSUFFICIENT_POINTS")),
        "{body}"
    );
    assert_eq!(w.coupon_status(coupons[0]).await, "ISSUED");
    assert_eq!(w.balance("bob").await, (10, 0));
    assert_eq!(w.movements("bob").await, ["EARN"]);
    // Points past what the coupon leaves of the order: refused, nothing held either.
    let mut body = hold("bob", "o-over", Some(coupons[0]), Some(10), 600);
    body["orderAmount"] = json!(1_005);
    let (status, answer) = w.post("/v1/checkout/holds", body).await;
    assert_eq!((status, answer["field"].as_str()), (400, Some("points")), "{answer}");
    assert_eq!(w.coupon_status(coupons[0]).await, "ISSUED");
    assert_eq!(w.movements("bob").await, ["EARN"]);
    // A preview changes nothing.
    let (status, preview) = w
        .post(
            "/v1/checkout/preview",
            json!({"userId": "bob", "orderAmount": 5_000, "couponId": coupons[1].to_string(), "points": 10}),
        )
        .await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(
        (preview["discount"].as_u64(), preview["payable"].as_u64()),
        (Some(1_000), Some(3_990))
    );
    // Held, the coupon refuses a one-step use, and another user's coupon is not found.
    let (status, held) = w
        .post("/v1/checkout/holds", hold("bob", "o-1", Some(coupons[1]), None, 600))
        .await;
    assert_eq!(status, 201, "{held}");
    let (status, answer) = w
        .post(
            &format!("/v1/coupons/{}/use", coupons[1]),
            json!({"userId": "bob", "orderId": "o-2", "orderAmount": 100}),
        )
        .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (409, Some("COUPON_HELD")),
        "{answer}"
    );
    let (status, answer) = w
        .post("/v1/checkout/holds", hold("carol", "o-3", Some(coupons[0]), None, 600))
        .await;
    assert_eq!((status, answer["error"].as_str()), (404, Some("NOT_FOUND")), "{answer}");
    // The same order asked another way is refused; released, the order can be held anew.
    let (status, answer) = w
        .post("/v1/checkout/holds", hold("bob", "o-1", Some(coupons[1]), Some(1), 600))
        .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (409, Some("ORDER_HELD")),
        "{answer}"
    );
    let (status, _) = w
        .post(&format!("/v1/checkout/holds/{}/release", hold_id(&held)), json!({}))
        .await;
    assert_eq!(status, 200);
    let (status, again) = w
        .post("/v1/checkout/holds", hold("bob", "o-1", Some(coupons[1]), Some(1), 600))
        .await;
    assert_eq!(status, 201, "{again}");
    // A held use is settled by its hold only: a points cancel of it is refused.
    let held_use = again["pointsTransactionId"].as_str().unwrap();
    let (status, answer) = w
        .call(
            reqwest::Method::POST,
            &format!("/v1/points/transactions/{held_use}/cancel"),
            None,
            Some("cancel-held"),
        )
        .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (409, Some("NOT_CANCELLABLE")),
        "{answer}"
    );
    assert_eq!(w.balance("bob").await, (9, 1));
    for bad in [
        json!({"userId": "bob", "orderId": "o", "orderAmount": 1}),
        json!({"userId": "bob", "orderId": "o", "orderAmount": 1, "points": 1, "ttlSeconds": 29}),
        json!({"userId": "bob", "orderId": "o", "orderAmount": -1, "points": 1}),
    ] {
        let (status, answer) = w.post("/v1/checkout/holds", bad).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some("INVALID_REQUEST")),
            "{answer}"
        );
    }
    let (status, _) = w.post("/v1/checkout/holds/999999999999/confirm", json!({})).await;
    assert_eq!(status, 404);
    w.wallets_verify().await;
}

#[tokio::test]
async fn holds_ending_while_confirms_arrive_end_confirmed_or_released_never_both() {
    let world = World::new().await;
    let w = &world;
    let users: Vec<String> = (0..12).map(|i| format!("edge-{i}")).collect();
    let names: Vec<&str> = users.iter().map(String::as_str).collect();
    let coupons = w.coupons(&names, Utc::now() + chrono::Duration::days(1)).await;
    for user in &users {
        w.earn(user, 100).await;
    }
    let mut holds = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let (status, body) = w
            .post(
                "/v1/checkout/holds",
                hold(user, &format!("edge-{i}"), Some(coupons[i]), Some(40), 30),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        holds.push(body);
    }
    // Confirms spread from a second before to 650 ms after each hold's end.
    let confirms = join_all(holds.iter().enumerate().map(|(i, body)| {
        let id = hold_id(body);
        let ends: DateTime<Utc> = body["expiresAt"].as_str().unwrap().parse().unwrap();
        let at = ends + chrono::Duration::milliseconds(i as i64 * 150 - 1_000);
        async move {
            let wait = (at - Utc::now()).to_std().unwrap_or_default();
            assert!(wait < Duration::from_secs(40), "a hold ends within its ttl");
            tokio::time::sleep(wait).await;
            w.post(&format!("/v1/checkout/holds/{id}/confirm"), json!({})).await
        }
    }))
    .await;
    w.sweep().await;
    let (mut confirmed, mut expired) = (0, 0);
    for (i, (status, answer)) in confirms.iter().enumerate() {
        let (_, now) = w.get(&format!("/v1/checkout/holds/{}", hold_id(&holds[i]))).await;
        let movements = w.movements(&users[i]).await;
        match *status {
            200 => {
                confirmed += 1;
                assert_eq!(now["status"], "CONFIRMED");
                assert_eq!(w.coupon_status(coupons[i]).await, "USED");
                assert_eq!(movements, ["EARN", "USE"]);
                assert_eq!(w.balance(&users[i]).await, (60, 0));
            }
            410 => {
                expired += 1;
                assert_eq!(answer["error"], "HOLD_EXPIRED");
                assert_eq!(now["status"], "EXPIRED");
                assert_eq!(w.coupon_status(coupons[i]).await, "ISSUED");
                assert_eq!(movements, ["EARN", "USE", "USE_CANCEL"]);
                assert_eq!(w.balance(&users[i]).await, (100, 0));
            }
            other => panic!("confirm {i} answered {other}: {answer}"),
        }
    }
    eprintln!("at the edge: {confirmed} confirmed, {expired} expired");
    assert!(
        confirmed > 0 && expired > 0,
        "the edge was crossed: {confirmed} / {expired}"
    );
    w.wallets_verify().await;
}

#[tokio::test]
async fn holds_uses_and_transfers_racing_on_one_wallet_neither_deadlock_nor_lose_a_point() {
    let world = World::new().await;
    let w = &world;
    w.earn("dana", 1_000).await;
    w.earn("erin", 1_000).await;
    let deadlocks = innodb_deadlocks(&w.api.pool).await;
    let holds = join_all((0..20).map(|i| async move {
        w.post(
            "/v1/checkout/holds",
            hold("dana", &format!("race-{i}"), None, Some(10), 600),
        )
        .await
    }));
    let uses = join_all((0..20).map(|i| async move {
        w.call(
            reqwest::Method::POST,
            "/v1/users/dana/points/use",
            Some(json!({"amount": 5, "orderId": format!("use-{i}")})),
            Some(&format!("use-{i}")),
        )
        .await
    }));
    let transfers = join_all((0..20).map(|i| async move {
        let (from, to) = if i % 2 == 0 { ("dana", "erin") } else { ("erin", "dana") };
        w.call(
            reqwest::Method::POST,
            "/v1/points/transfers",
            Some(json!({"fromUserId": from, "toUserId": to, "amount": 7})),
            Some(&format!("transfer-{i}")),
        )
        .await
    }));
    let (holds, uses, transfers) = tokio::join!(holds, uses, transfers);
    assert!(holds.iter().all(|(s, _)| *s == 201), "{holds:?}");
    assert!(uses.iter().all(|(s, _)| *s == 201 || *s == 200), "{uses:?}");
    assert!(transfers.iter().all(|(s, _)| *s == 201), "{transfers:?}");
    // Half the holds confirmed, half released, racing a second round of uses.
    let settles = join_all(holds.iter().enumerate().map(|(i, (_, body))| {
        let path = format!(
            "/v1/checkout/holds/{}/{}",
            hold_id(body),
            if i % 2 == 0 { "confirm" } else { "release" }
        );
        async move { w.post(&path, json!({})).await }
    }));
    let more_uses = join_all((20..30).map(|i| async move {
        w.call(
            reqwest::Method::POST,
            "/v1/users/dana/points/use",
            Some(json!({"amount": 5, "orderId": format!("use-{i}")})),
            Some(&format!("use-{i}")),
        )
        .await
    }));
    let (settles, more_uses) = tokio::join!(settles, more_uses);
    assert!(settles.iter().all(|(s, _)| *s == 200), "{settles:?}");
    assert!(more_uses.iter().all(|(s, _)| *s == 201), "{more_uses:?}");
    // 1,000 − 10 confirmed holds × 10 − 30 uses × 5; the transfers cancel out.
    assert_eq!(w.balance("dana").await, (750, 0));
    assert_eq!(w.balance("erin").await, (1_000, 0));
    assert_eq!(innodb_deadlocks(&w.api.pool).await, deadlocks, "no deadlock");
    w.wallets_verify().await;
}

#[tokio::test]
async fn a_runner_killed_between_hold_and_confirm_leaves_a_hold_that_ends_and_gives_everything_back() {
    let world = World::new().await;
    let w = &world;
    let coupon = w.coupons(&["fay"], Utc::now() + chrono::Duration::days(1)).await[0];
    w.earn("fay", 500).await;
    let mut process = RunnerProcess::spawn(&[]).await;
    let (status, held) = call(
        &w.api.http,
        &process.base_url(),
        &w.api.key,
        reqwest::Method::POST,
        "/v1/checkout/holds",
        Some(hold("fay", "o-killed", Some(coupon), Some(200), 30)),
        None,
    )
    .await;
    assert_eq!(status, 201, "{held}: {}", process.log_tail(20));
    process.kill();
    assert_eq!(w.coupon_status(coupon).await, "HELD");
    assert_eq!(w.balance("fay").await, (300, 200));
    let ends: DateTime<Utc> = held["expiresAt"].as_str().unwrap().parse().unwrap();
    tokio::time::sleep((ends - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(50)).await;
    // Every read sees it released at its end, before anything wrote it so.
    let id = hold_id(&held);
    assert_eq!(w.get(&format!("/v1/checkout/holds/{id}")).await.1["status"], "EXPIRED");
    assert_eq!(w.coupon_status(coupon).await, "ISSUED");
    assert_eq!(w.balance("fay").await, (500, 0));
    let (status, answer) = w.post(&format!("/v1/checkout/holds/{id}/confirm"), json!({})).await;
    assert_eq!((status, answer["error"].as_str()), (410, Some("HOLD_EXPIRED")));
    assert_eq!(w.sweep().await, 1);
    assert_eq!(w.movements("fay").await, ["EARN", "USE", "USE_CANCEL"]);
    // The coupon is free again for another order.
    let (status, body) = w
        .post("/v1/checkout/holds", hold("fay", "o-next", Some(coupon), None, 600))
        .await;
    assert_eq!(status, 201, "{body}");
    w.wallets_verify().await;
}
