//! A flash sale through the whole issuance path with Redis as ElastiCache Serverless serves it: a
//! 3-master cluster that speaks only TLS and announces its nodes by hostname
//! (`REDIS_TLS_CLUSTER_URL`, its private CA in `REDIS_TLS_CA_FILE`). The runner serves
//! template.yaml in-process with only the environment changed (`REDIS_URL`, `REDIS_CLUSTER`), as
//! a deployment would set it: the issue API decides on the cluster, SQS carries, the writer
//! (the runner's poller) records in MySQL. Its own test binary, so the sale is the only load.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fcfs_shared::issuance::ports::IssueLedger;
use integration_tests::{RedisDeployment, api_key, env, mysql, queue_with_dlq, runner_config, serve, sqs, unique};
use serde_json::{Value, json};

const QUANTITY: usize = 200;
const USERS: usize = 500;
const CALLS: usize = 2_000;
/// Requests in flight at once (callers each waiting for their answer).
const IN_FLIGHT: usize = 200;

async fn post(http: &reqwest::Client, url: &str, key: &str, body: Value) -> (u16, Value) {
    let res = http
        .post(url)
        .header("X-API-KEY", key)
        .json(&body)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap_or_else(|e| panic!("the runner answers POST {url}: {e}"));
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flash_sale_is_exact_on_a_tls_cluster_announcing_hostnames() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let cluster = RedisDeployment::TlsCluster;
    // A queue of its own: the runner's poller drains it, and no other runner sees this sale.
    let (queue_url, _) = queue_with_dlq(&sqs().await, 30).await;
    let running = serve(runner_config(&[
        ("REDIS_URL", cluster.url()),
        ("REDIS_CLUSTER", "true".to_owned()),
        ("REDIS_TLS_CA_FILE", env("REDIS_TLS_CA_FILE")),
        ("ISSUE_QUEUE_URL", queue_url),
        ("DB_MAX_CONNECTIONS", "8".to_owned()),
    ]))
    .await;
    let partner = unique("serverless");
    let key = api_key(&partner).await;
    let http = reqwest::Client::new();

    let now = chrono::Utc::now();
    let (status, created) = post(
        &http,
        &format!("{}/v1/campaigns", running.base_url),
        &key,
        json!({
            "name": "serverless", "totalQuantity": QUANTITY,
            "issueStartsAt": now - chrono::Duration::minutes(1), "issueEndsAt": now + chrono::Duration::hours(1),
            "couponExpiresAt": now + chrono::Duration::days(7), "discount": {"type": "AMOUNT", "value": 100}
        }),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let campaign =
        integration_tests::as_id(&created["campaignId"]).unwrap_or_else(|| panic!("a campaign id: {created}"));
    // The runner primed the TLS cluster, not the Redis the other tests' functions use.
    let ledger = cluster.ledger(Duration::from_secs(10));
    assert!(
        ledger.rules(campaign).await.unwrap().is_some(),
        "rules on the TLS cluster"
    );
    let single = RedisDeployment::Single.ledger(Duration::from_secs(10));
    assert!(single.rules(campaign).await.unwrap().is_none(), "nothing on REDIS_URL");

    // 2,000 requests of 500 users for 200 places, 200 at a time; users interleave, so each user's
    // tries compete with everyone else's.
    let started = Instant::now();
    let url = format!("{}/v1/campaigns/{campaign}/issues", running.base_url);
    let gate = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut calls = Vec::with_capacity(CALLS);
    for i in 0..CALLS {
        let user = format!("user-{}", (i * 7919) % USERS);
        let (http, url, key, gate) = (http.clone(), url.clone(), key.clone(), gate.clone());
        calls.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.expect("the gate stays open");
            let answer = post(&http, &url, &key, json!({ "userId": user })).await;
            (user, answer)
        }));
    }
    let mut winners = HashSet::new();
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    for call in calls {
        let (user, (status, body)) = call.await.unwrap();
        *statuses.entry(status).or_default() += 1;
        match status {
            202 => assert!(winners.insert(user), "a user got two 202s"),
            409 => assert_eq!(body["error"], "ALREADY_ISSUED"),
            410 => assert_eq!(body["error"], "SOLD_OUT"),
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    let issue_time = started.elapsed();
    assert_eq!(statuses.get(&202).copied(), Some(QUANTITY), "{statuses:?}");
    assert_eq!(statuses.values().sum::<usize>(), CALLS);

    // The runner's poller hands the reservations to the writer: exactly the winners, once each.
    let pool = mysql().await;
    let drain_started = Instant::now();
    let deadline = drain_started + Duration::from_secs(120);
    loop {
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM coupons WHERE campaign_id = ?")
            .bind(campaign)
            .fetch_one(&pool)
            .await
            .unwrap();
        if rows as usize >= QUANTITY {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {rows} of {QUANTITY} coupons written within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let drain_time = drain_started.elapsed();
    let view: Value = http
        .get(format!("{}/v1/campaigns/{campaign}", running.base_url))
        .header("X-API-KEY", &key)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (view["issued"].as_u64(), view["reserved"].as_u64()),
        (Some(QUANTITY as u64), Some(QUANTITY as u64)),
        "{view}"
    );
    // Stopping waits for batches in flight, so nothing is written after the count below.
    running.stop().await.expect("the runner stops");
    let users: Vec<String> = sqlx::query_scalar("SELECT user_id FROM coupons WHERE campaign_id = ?")
        .bind(campaign)
        .fetch_all(&pool)
        .await
        .unwrap();
    let distinct: HashSet<String> = users.iter().cloned().collect();
    assert_eq!(users.len(), QUANTITY, "exactly the quantity in MySQL");
    assert_eq!(
        distinct, winners,
        "the coupons went to exactly the users who got 202, once each"
    );
    let issued: u32 = sqlx::query_scalar("SELECT issued_count FROM campaigns WHERE id = ?")
        .bind(campaign)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(issued as usize, QUANTITY, "the campaign's count of written coupons");

    // The cluster's own account agrees: the quantity held, by exactly the winners.
    assert_eq!(ledger.reserved_count(campaign).await.unwrap(), QUANTITY as u64);
    let holders: HashSet<String> = ledger.holders(campaign).await.unwrap().into_keys().collect();
    assert_eq!(holders, winners);
    eprintln!(
        "flash sale (Redis as ElastiCache Serverless: TLS cluster by hostname): {CALLS} calls in {issue_time:.2?} \
         ({:.0} calls/s, {IN_FLIGHT} in flight); {QUANTITY} coupons written {drain_time:.2?} later; {statuses:?}",
        CALLS as f64 / issue_time.as_secs_f64(),
    );
}
