//! Partners are bounded: a partner at its limit of live campaigns is answered 422
//! `LIMIT_EXCEEDED` through the real API (runner, MariaDB, Redis) while another partner is
//! unaffected; limits are set with `fcfs-admin limits`; concurrent creates cannot pass the limit
//! together.

use integration_tests::{PartnerApi, unique};
use serde_json::{Value, json};

fn campaign_body(name: &str) -> Value {
    let now = chrono::Utc::now();
    json!({
        "name": name, "totalQuantity": 10,
        "issueStartsAt": now - chrono::Duration::minutes(1), "issueEndsAt": now + chrono::Duration::hours(1),
        "couponExpiresAt": now + chrono::Duration::days(7), "discount": {"type": "AMOUNT", "value": 100}
    })
}

/// POSTs `body` to `path` of the runner with the partner's `key` (and `extra` headers): the
/// status and the JSON body (null if none).
async fn post(api: &PartnerApi, key: &str, path: &str, extra: &[(&str, &str)], body: &Value) -> (u16, Value) {
    let mut request = api
        .http
        .post(format!("{}{path}", api.running.base_url))
        .header("X-API-KEY", key)
        .json(body)
        .timeout(std::time::Duration::from_secs(30));
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let res = request.send().await.expect("the runner answers");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn create(api: &PartnerApi, key: &str, name: &str) -> (u16, Value) {
    post(api, key, "/v1/campaigns", &[], &campaign_body(name)).await
}

/// `fcfs-admin limits …` against the stack's database: its exit code and stdout.
fn admin_limits(args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(integration_tests::services::workspace_binary("fcfs-admin"))
        .arg("limits")
        .args(args)
        .output()
        .expect("fcfs-admin runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code(), text + &String::from_utf8_lossy(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_past_its_live_campaigns_is_refused_while_another_is_not() {
    let api = PartnerApi::start("limited", 4).await;
    let (code, out) = admin_limits(&["set", "--partner", &api.partner, "--live-campaigns", "2"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("\"liveCampaigns\": 2"), "{out}");
    for i in 0..2 {
        let (status, body) = create(&api, &api.key, &format!("c{i}")).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = create(&api, &api.key, "one too many").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        (&body["error"], &body["field"]),
        (&json!("LIMIT_EXCEEDED"), &json!("liveCampaigns")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap_or_default().contains("at most 2"),
        "{body}"
    );

    let other = unique("unlimited");
    let other_key = integration_tests::api_key(&other).await;
    let (status, body) = create(&api, &other_key, "another partner's").await;
    assert_eq!(status, 201, "another partner is unaffected: {body}");

    let (code, out) = admin_limits(&["set", "--partner", &api.partner, "--live-campaigns", "default"]);
    assert_eq!(code, Some(0), "{out}");
    let (status, body) = create(&api, &api.key, "after the reset").await;
    assert_eq!(status, 201, "back to the default: {body}");
    let (code, out) = admin_limits(&["set", "--partner", "no such!", "--live-campaigns", "1"]);
    assert_ne!(code, Some(0), "a malformed partner id is refused: {out}");
    api.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_cannot_pass_the_limit_together() {
    let api = PartnerApi::start("racing", 8).await;
    let (code, out) = admin_limits(&["set", "--partner", &api.partner, "--live-campaigns", "3"]);
    assert_eq!(code, Some(0), "{out}");
    let names: Vec<String> = (0..8).map(|i| format!("r{i}")).collect();
    let answers = futures_util::future::join_all(names.iter().map(|name| create(&api, &api.key, name))).await;
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    let refused = answers
        .iter()
        .filter(|(s, b)| *s == 422 && b["error"] == "LIMIT_EXCEEDED")
        .count();
    assert_eq!((created, refused), (3, 5), "{answers:?}");
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM campaigns WHERE partner_id = ?")
        .bind(&api.partner)
        .fetch_one(&api.pool)
        .await
        .unwrap();
    assert_eq!(stored, 3);
    api.running.stop().await.unwrap();
}

async fn post_orders(api: &PartnerApi, key: &str, ids: std::ops::Range<u32>) -> (u16, Value) {
    let at = "2026-10-05T10:00:00Z";
    let orders: Vec<Value> = ids
        .map(|i| json!({"orderId": format!("o{i}"), "userId": "u1", "amount": 1000, "status": "PAID", "orderedAt": at}))
        .collect();
    post(api, key, "/v1/orders", &[], &json!({ "orders": orders })).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_past_its_orders_of_a_month_records_nothing_of_the_call() {
    let api = PartnerApi::start("orders-limited", 4).await;
    let (code, out) = admin_limits(&["set", "--partner", &api.partner, "--orders-per-month", "5"]);
    assert_eq!(code, Some(0), "{out}");
    let (status, body) = post_orders(&api, &api.key, 0..4).await;
    assert_eq!((status, &body["recorded"]), (200, &json!(4)), "{body}");
    let (status, body) = post_orders(&api, &api.key, 2..6).await;
    assert_eq!(status, 422, "4 + 2 new > 5: {body}");
    assert_eq!(
        (&body["error"], &body["field"]),
        (&json!("LIMIT_EXCEEDED"), &json!("ordersPerMonth")),
        "{body}"
    );
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE partner_id = ?")
        .bind(&api.partner)
        .fetch_one(&api.pool)
        .await
        .unwrap();
    assert_eq!(stored, 4, "nothing of the refused call is recorded");
    let (status, body) = post_orders(&api, &api.key, 0..5).await;
    assert_eq!(
        (status, &body["recorded"], &body["unchanged"]),
        (200, &json!(1), &json!(4)),
        "resent orders count once: {body}"
    );
    let other = integration_tests::api_key(&unique("orders-unlimited")).await;
    let (status, body) = post_orders(&api, &other, 0..10).await;
    assert_eq!(
        (status, &body["recorded"]),
        (200, &json!(10)),
        "another partner is unaffected: {body}"
    );
    api.running.stop().await.unwrap();
}

async fn earn(api: &PartnerApi, key: &str, idempotency_key: &str) -> (u16, Value) {
    let body = json!({"amount": 10, "reason": "limits"});
    post(
        api,
        key,
        "/v1/users/u1/points/earn",
        &[("Idempotency-Key", idempotency_key)],
        &body,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_past_its_idempotency_records_is_refused_but_its_retries_replay() {
    let api = PartnerApi::start("keys-limited", 4).await;
    let (code, out) = admin_limits(&["set", "--partner", &api.partner, "--idempotency-records", "2"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("\"idempotencyRecords\": 2"), "{out}");
    let (status, first) = earn(&api, &api.key, "k1").await;
    assert_eq!(status, 201, "{first}");
    let (status, body) = earn(&api, &api.key, "k2").await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = earn(&api, &api.key, "k3").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        (&body["error"], &body["field"]),
        (&json!("LIMIT_EXCEEDED"), &json!("idempotencyRecords")),
        "{body}"
    );
    assert_eq!(earn(&api, &api.key, "k1").await, (201, first), "a retry still replays");
    let other = integration_tests::api_key(&unique("keys-unlimited")).await;
    let (status, body) = earn(&api, &other, "k3").await;
    assert_eq!(status, 201, "another partner is unaffected: {body}");
    let balance: Option<u64> =
        sqlx::query_scalar("SELECT balance FROM point_wallets WHERE partner_id = ? AND user_id = 'u1'")
            .bind(&api.partner)
            .fetch_optional(&api.pool)
            .await
            .unwrap();
    assert_eq!(balance, Some(20), "the refused write changed nothing");
    api.running.stop().await.unwrap();
}

/// A write is admitted against the records of every kept day: yesterday's count, though the
/// function reads it once a day and then remembers it; a day past retention counts no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_the_earlier_kept_days_count_against_the_limit() {
    use fcfs_shared::points::domain::KEY_RETENTION_DAYS;
    let api = PartnerApi::start("keys-earlier", 4).await;
    let (code, out) = admin_limits(&["set", "--partner", &api.partner, "--idempotency-records", "5"]);
    assert_eq!(code, Some(0), "{out}");
    let today = chrono::Utc::now().date_naive();
    for (days_ago, records) in [(1, 3u64), (u64::from(KEY_RETENTION_DAYS) + 1, 100)] {
        sqlx::query("INSERT INTO idempotency_counts (partner_id, day, shard, records) VALUES (?, ?, 0, ?)")
            .bind(&api.partner)
            .bind(today - chrono::Days::new(days_ago))
            .bind(records)
            .execute(&api.pool)
            .await
            .unwrap();
    }
    for k in ["k1", "k2"] {
        let (status, body) = earn(&api, &api.key, k).await;
        assert_eq!(status, 201, "3 earlier and {k}'s within 5: {body}");
    }
    let (status, body) = earn(&api, &api.key, "k3").await;
    assert_eq!(status, 422, "3 earlier, 2 today and k3's are 6: {body}");
    assert_eq!(body["field"], json!("idempotencyRecords"), "{body}");
    api.running.stop().await.unwrap();
}

/// Records are counted per UTC day and pruned by the expiry sweep once their retention is over;
/// then the partner may write again. The service's clock is set back, so the sweep deletes only
/// records older than any other test's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_records_past_their_retention_are_pruned_and_count_no_more() {
    use fcfs_shared::adapters::mysql::MySqlStore;
    use fcfs_shared::partners::domain::LimitOverrides;
    use fcfs_shared::partners::ports::PartnerLimitStore;
    use fcfs_shared::points::domain::{EarnPoints, IdempotencyKey, KEY_RETENTION_DAYS};
    use fcfs_shared::points::{PointsError, PointsService};
    use std::sync::Arc;

    let api = PartnerApi::start("keys-pruned", 4).await;
    let store = MySqlStore::new(api.pool.clone()).with_timeout(std::time::Duration::from_secs(20));
    let two = LimitOverrides {
        idempotency_records: Some(2),
        ..LimitOverrides::default()
    };
    store.set_overrides(&api.partner, two).await.unwrap();
    let retention = chrono::Duration::days(i64::from(KEY_RETENTION_DAYS));
    let clock = Arc::new(fcfs_shared::testkit::ManualClock::at(
        chrono::Utc::now() - retention - retention,
    ));
    let points = PointsService::new(store.clone())
        .with_clock(clock.clone())
        .with_limits(Arc::new(store));
    let user = fcfs_shared::kernel::UserId::parse("u1").unwrap();
    let key = |k: &str| IdempotencyKey::parse(Some(k)).unwrap();
    let request = || EarnPoints {
        amount: 1,
        reason: "r".into(),
        expires_at: None,
    };
    for k in ["k1", "k2"] {
        points
            .earn(&api.partner, user.clone(), &key(k), request())
            .await
            .unwrap();
    }
    assert!(matches!(
        points.earn(&api.partner, user.clone(), &key("k3"), request()).await,
        Err(PointsError::LimitExceeded(_))
    ));
    let kept = |pool: sqlx::MySqlPool, partner: String| async move {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM idempotency_keys WHERE partner_id = ?")
            .bind(partner)
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    clock.advance(retention);
    points
        .prune_keys(1_000, std::time::Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(
        kept(api.pool.clone(), api.partner.clone()).await,
        2,
        "kept through the retention"
    );

    clock.advance(chrono::Duration::days(1));
    let pruned = points.prune_keys(1, std::time::Duration::from_secs(20)).await.unwrap();
    assert!(
        pruned.expired >= 2 && pruned.chunks >= 3,
        "one record per chunk: {pruned:?}"
    );
    assert_eq!(kept(api.pool.clone(), api.partner.clone()).await, 0);
    let counted: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM idempotency_counts WHERE partner_id = ?")
        .bind(&api.partner)
        .fetch_one(&api.pool)
        .await
        .unwrap();
    assert_eq!(counted, 0, "the counts of days past retention go with them");
    points
        .earn(&api.partner, user.clone(), &key("k3"), request())
        .await
        .expect("the partner may write again");
    let receipt = points.earn(&api.partner, user, &key("k1"), request()).await.unwrap();
    assert_eq!(receipt.balance, 4, "a pruned key is a new request");
    api.running.stop().await.unwrap();
}
