//! The sale heals itself: a campaign whose Redis state is lost mid-sale — `FLUSHALL`, or its keys
//! evicted under `maxmemory` — sells again without an operator, exactly. The runner serves
//! template.yaml in-process on a private Redis (so flushing it touches no other test) and a queue
//! pair of its own; the heal's grace is shortened to half a second.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use integration_tests::services::{Persistence, PrivateRedis};
use integration_tests::{PartnerApi, queue_with_dlq, runner_config, serve, sqs};
use serde_json::{Value, json};

const QUANTITY: u64 = 100;

async fn post(api: &PartnerApi, path: &str, body: Value) -> (u16, Value) {
    let res = api
        .http
        .post(format!("{}{path}", api.running.base_url))
        .header("X-API-KEY", &api.key)
        .json(&body)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("the runner answers");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn sale_on_private_redis(redis: &PrivateRedis) -> (PartnerApi, u64) {
    let (queue, dlq) = queue_with_dlq(&sqs().await, 30).await;
    let config = runner_config(&[
        ("REDIS_URL", redis.url()),
        ("ISSUE_QUEUE_URL", queue),
        ("ISSUE_DLQ_URL", dlq),
        ("ISSUE_HEAL_GRACE_MS", "500".to_owned()),
        ("DB_MAX_CONNECTIONS", "8".to_owned()),
    ]);
    let api = PartnerApi::on("healing", serve(config).await).await;
    let now = chrono::Utc::now();
    let (status, created) = post(
        &api,
        "/v1/campaigns",
        json!({"name": "heals", "totalQuantity": QUANTITY,
            "issueStartsAt": now - chrono::Duration::minutes(1), "issueEndsAt": now + chrono::Duration::hours(1),
            "couponExpiresAt": now + chrono::Duration::days(7), "discount": {"type": "AMOUNT", "value": 100}}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    (api, integration_tests::as_id(&created["campaignId"]).unwrap())
}

async fn coupons(api: &PartnerApi, campaign: u64) -> Vec<String> {
    sqlx::query_scalar("SELECT user_id FROM coupons WHERE campaign_id = ?")
        .bind(campaign)
        .fetch_all(&api.pool)
        .await
        .unwrap()
}

/// Issues to `users` one after another until each has an answer other than 503 (or 60 s pass):
/// each user's final status, and how many 503s were seen.
async fn issue_all(api: &PartnerApi, campaign: u64, users: &[String]) -> (BTreeMap<String, u16>, u32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut answers, mut unavailable) = (BTreeMap::new(), 0);
    for user in users {
        loop {
            let (status, body) = post(
                api,
                &format!("/v1/campaigns/{campaign}/issues"),
                json!({"userId": user}),
            )
            .await;
            if status != 503 {
                answers.insert(user.clone(), status);
                break;
            }
            unavailable += 1;
            assert!(
                body["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(&format!("campaign {campaign}"))),
                "a 503 names the campaign: {body}"
            );
            assert!(
                Instant::now() < deadline,
                "{user} still answered 503 after 60 s: {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    (answers, unavailable)
}

/// Waits (at most 60 s) until MySQL holds `expected` coupons of the campaign.
async fn written(api: &PartnerApi, campaign: u64, expected: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let holders = coupons(api, campaign).await;
        if holders.len() >= expected {
            return holders;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {expected} coupons written after 60 s",
            holders.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// After the loss: the first users (holders) again, then newcomers. Holders are refused as
/// holders (no second place), exactly the rest of the quantity is sold, every 202 is written.
async fn resume_exactly(api: &PartnerApi, campaign: u64, before: usize) {
    let users: Vec<String> = (0..QUANTITY as usize + 40).map(|i| format!("u{i}")).collect();
    let (answers, unavailable) = issue_all(api, campaign, &users).await;
    eprintln!("after the loss: {unavailable} answers of 503 before the sale resumed");
    let held_before: HashSet<&String> = users[..before].iter().collect();
    for user in &held_before {
        assert_eq!(answers[*user], 409, "{user} held a place before the loss: {answers:?}");
    }
    let accepted: Vec<&String> = answers.iter().filter(|(_, s)| **s == 202).map(|(u, _)| u).collect();
    assert_eq!(accepted.len(), QUANTITY as usize - before, "{answers:?}");
    assert!(answers.values().all(|s| [202, 409, 410].contains(s)), "{answers:?}");
    let holders = written(api, campaign, QUANTITY as usize).await;
    let distinct: HashSet<&String> = holders.iter().collect();
    assert_eq!((holders.len(), distinct.len()), (QUANTITY as usize, QUANTITY as usize));
    assert!(accepted.iter().all(|u| distinct.contains(u)), "every 202 ends ISSUED");
}

/// A sale on `redis` whose first 40 places are taken and written: the state a loss then meets.
async fn forty_places_written(redis: &PrivateRedis) -> (PartnerApi, u64, usize) {
    let (api, campaign) = sale_on_private_redis(redis).await;
    let first: Vec<String> = (0..40).map(|i| format!("u{i}")).collect();
    let (answers, _) = issue_all(&api, campaign, &first).await;
    assert!(answers.values().all(|s| *s == 202), "{answers:?}");
    written(&api, campaign, first.len()).await;
    (api, campaign, first.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_whose_redis_is_flushed_resumes_by_itself_exactly() {
    let redis = PrivateRedis::start(Persistence::None).await;
    let (api, campaign, before) = forty_places_written(&redis).await;

    let mut conn = redis.connection(Duration::from_secs(2)).await;
    let () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    resume_exactly(&api, campaign, before).await;
    api.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_whose_keys_are_evicted_under_maxmemory_resumes_by_itself_exactly() {
    let redis = PrivateRedis::start(Persistence::None).await;
    let (api, campaign, before) = forty_places_written(&redis).await;

    // A memory limit and a policy that evicts any key (ElastiCache's default evicts keys with a
    // TTL, which every ledger key has): write until one of the campaign's keys is gone.
    let mut conn = redis.connection(Duration::from_secs(2)).await;
    let used: String = redis::cmd("INFO").arg("memory").query_async(&mut conn).await.unwrap();
    let used: u64 = used
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(used + 2_000_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-random")
        .query_async(&mut conn)
        .await
        .unwrap();
    let keys = ["rules", "users", "count"].map(|k| format!("cpn:{{{campaign}}}:{k}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut junk = 0u64;
    loop {
        let present: u64 = redis::cmd("EXISTS").arg(&keys).query_async(&mut conn).await.unwrap();
        if present < keys.len() as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "none of {keys:?} evicted after {junk} junk keys"
        );
        let mut pipe = redis::pipe();
        for _ in 0..200 {
            junk += 1;
            pipe.cmd("SET")
                .arg(format!("junk:{junk}"))
                .arg(vec![b'x'; 1024])
                .arg("EX")
                .arg(3600)
                .ignore();
        }
        let () = pipe.query_async(&mut conn).await.unwrap();
    }
    // Room again (as a cache that scaled up), the junk and the limit gone.
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(0)
        .query_async(&mut conn)
        .await
        .unwrap();
    let present: u64 = redis::cmd("EXISTS").arg(&keys).query_async(&mut conn).await.unwrap();
    eprintln!(
        "evicted after {junk} junk keys: {} of the campaign's 3 keys left",
        present
    );
    resume_exactly(&api, campaign, before).await;
    api.running.stop().await.unwrap();
}
