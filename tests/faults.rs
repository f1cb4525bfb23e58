//! Issuance under real faults: a Redis restarted from an older snapshot, paused or killed; a
//! MariaDB killed mid-batch; an SQS send that succeeds but reports an error; an issue API that
//! starts with MySQL stopped; a MariaDB killed under points writes. Each test that harms a service gets a private one
//! (`integration_tests::services`), so the shared stack other tests use is never touched.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use campaign_api::CampaignApi;
use fcfs_shared::adapters::mysql::MySqlStore;
use fcfs_shared::adapters::redis::{RedisIssueLedger, RedisSettings};
use fcfs_shared::adapters::sqs::SqsReservationQueue;
use fcfs_shared::config::Settings;
use fcfs_shared::issuance::Recovery;
use fcfs_shared::issuance::ports::IssueLedger;
use fcfs_shared::kernel::UserId;
use fcfs_shared::points::PointsService;
use fcfs_shared::points::domain::{EarnPoints, IdempotencyKey, UsePoints};
use fcfs_shared::testkit::gateway_request;
use integration_tests::services::{Persistence, PrivateMariaDb, PrivateRedis};
use integration_tests::{env, mysql, queue_with_dlq, receive, reply, reservations_in, sqs, sqs_event, unique};
use issue_api::IssueApi;
use issue_writer::IssueWriter;
use serde_json::{Value, json};

type Api = IssueApi<MySqlStore, RedisIssueLedger, SqsReservationQueue>;

/// One sale's world: a store, a ledger, a fresh queue pair and a partner.
struct Sale {
    store: MySqlStore,
    ledger: RedisIssueLedger,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    partner: String,
}

impl Sale {
    async fn new(store: MySqlStore, ledger: RedisIssueLedger) -> Self {
        let sqs = sqs().await;
        let (queue_url, _) = queue_with_dlq(&sqs, 5).await;
        Self {
            store,
            ledger,
            sqs,
            queue_url,
            partner: unique("faults"),
        }
    }

    fn api(&self) -> Api {
        self.api_with(SqsReservationQueue::new(self.sqs.clone(), &self.queue_url))
    }

    fn api_with(&self, queue: SqsReservationQueue) -> Api {
        IssueApi::new(self.store.clone(), self.ledger.clone(), queue)
    }

    fn writer(&self) -> IssueWriter<MySqlStore, RedisIssueLedger> {
        IssueWriter::new(self.store.clone(), self.ledger.clone(), 50)
    }

    async fn create_campaign(&self, quantity: u32) -> u64 {
        let api = CampaignApi::new(self.store.clone(), self.ledger.clone());
        let now = chrono::Utc::now();
        let body = json!({
            "name": "fault", "totalQuantity": quantity,
            "issueStartsAt": now - chrono::Duration::minutes(1), "issueEndsAt": now + chrono::Duration::hours(1),
            "couponExpiresAt": now + chrono::Duration::days(7), "discount": {"type": "AMOUNT", "value": 100}
        });
        let (status, created) = reply(
            api.handle(gateway_request(
                "POST",
                "/v1/campaigns",
                &[],
                body.to_string(),
                Some(&self.partner),
            ))
            .await,
        );
        assert_eq!(status, 201, "{created}");
        integration_tests::as_id(&created["campaignId"]).unwrap()
    }

    async fn issue(&self, api: &Api, campaign: u64, user: &str) -> (u16, Value) {
        let id = campaign.to_string();
        reply(
            api.handle(gateway_request(
                "POST",
                "/v1/campaigns/{campaignId}/issues",
                &[("campaignId", &id)],
                json!({"userId": user}).to_string(),
                Some(&self.partner),
            ))
            .await,
        )
    }

    async fn status(&self, api: &Api, campaign: u64, user: &str) -> Value {
        let id = campaign.to_string();
        reply(
            api.handle(gateway_request(
                "GET",
                "/v1/campaigns/{campaignId}/issues/{userId}",
                &[("campaignId", &id), ("userId", user)],
                "",
                Some(&self.partner),
            ))
            .await,
        )
        .1
    }

    /// Acts as the SQS event source until the queue stays empty: the writer's answers decide what
    /// is deleted. Returns how many invocations failed as a whole.
    async fn drain(&self, writer: &IssueWriter<MySqlStore, RedisIssueLedger>) -> usize {
        let deadline = Instant::now() + Duration::from_secs(120);
        let (mut idle, mut failed) = (0, 0);
        while idle < 2 {
            assert!(Instant::now() < deadline, "the queue did not drain within 120 s");
            let mut messages = Vec::new();
            while messages.len() < 500 {
                let got = receive(&self.sqs, &self.queue_url, 1).await;
                if got.is_empty() {
                    break;
                }
                messages.extend(got);
            }
            if messages.is_empty() {
                idle += 1;
                continue;
            }
            idle = 0;
            let keep: HashSet<String> = match writer.handle(sqs_event(&messages)).await {
                Ok((response, _)) => response
                    .batch_item_failures
                    .into_iter()
                    .map(|f| f.item_identifier)
                    .collect(),
                Err(_) => {
                    failed += 1;
                    continue;
                }
            };
            for m in messages.iter().filter(|m| !keep.contains(m.message_id().unwrap())) {
                self.sqs
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(m.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
        failed
    }

    async fn coupons(&self, campaign: u64) -> Vec<String> {
        sqlx::query_scalar("SELECT user_id FROM coupons WHERE campaign_id = ?")
            .bind(campaign)
            .fetch_all(self.store.pool().expect("a store made with MySqlStore::new"))
            .await
            .unwrap()
    }

    async fn rejections(&self, campaign: u64) -> Vec<(String, String)> {
        sqlx::query_as("SELECT user_id, reason FROM coupon_rejections WHERE campaign_id = ?")
            .bind(campaign)
            .fetch_all(self.store.pool().expect("a store made with MySqlStore::new"))
            .await
            .unwrap()
    }
}

/// Campaign ids of a private database start where no other test's do: they share Redis, whose
/// keys are named by campaign id.
async fn fresh_ids(pool: &sqlx::MySqlPool) {
    let start = 1_000_000_000_000 + u64::from(uuid::Uuid::new_v4().as_u128() as u32);
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER TABLE campaigns AUTO_INCREMENT = {start}"
    )))
    .execute(pool)
    .await
    .unwrap();
}

/// Waits until Redis answers again (a restarted server: the first call on the old connection
/// fails, the ledger reconnects behind it).
async fn reachable(ledger: &RedisIssueLedger) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = ledger.reserved_count(0).await {
        assert!(Instant::now() < deadline, "the ledger did not reconnect: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn fast_fail(url: &str) -> RedisIssueLedger {
    RedisIssueLedger::with_settings(
        url,
        RedisSettings {
            response_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_millis(300),
            ..RedisSettings::default()
        },
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_from_an_older_snapshot_never_over_issues() {
    const QUANTITY: u32 = 60;
    let mut redis = PrivateRedis::start(Persistence::None).await;
    let sale = Sale::new(MySqlStore::new(mysql().await), fast_fail(&redis.url())).await;
    let campaign = sale.create_campaign(QUANTITY).await;
    let api = sale.api();
    for i in 0..20 {
        assert_eq!(sale.issue(&api, campaign, &format!("early{i}")).await.0, 202);
    }
    let snapshot = redis.snapshot().await;
    for i in 0..20 {
        assert_eq!(sale.issue(&api, campaign, &format!("late{i}")).await.0, 202);
    }
    assert_eq!(sale.drain(&sale.writer()).await, 0);
    assert_eq!(sale.coupons(campaign).await.len(), 40);

    // A failover to a replica that had not seen the last 20 reservations.
    redis.restart_from(&snapshot).await;
    reachable(&sale.ledger).await;
    assert_eq!(sale.ledger.reserved_count(campaign).await.unwrap(), 20);
    // The sale goes on until Redis says sold out: it hands out 40 more places, 20 too many.
    let mut accepted = Vec::new();
    for i in 0..100 {
        let user = format!("after{i}");
        match sale.issue(&api, campaign, &user).await {
            (202, _) => accepted.push(user),
            (410, body) => assert_eq!(body["error"], "SOLD_OUT"),
            (status, body) => panic!("unexpected {status}: {body}"),
        }
    }
    assert_eq!(accepted.len(), 40, "Redis believed 40 places were left");
    assert_eq!(sale.drain(&sale.writer()).await, 0);

    let coupons = sale.coupons(campaign).await;
    let distinct: HashSet<&String> = coupons.iter().collect();
    assert_eq!(coupons.len(), QUANTITY as usize, "MySQL holds exactly the quantity");
    assert_eq!(distinct.len(), coupons.len());
    let rejections = sale.rejections(campaign).await;
    assert_eq!(rejections.len(), 20, "the surplus is kept, not dropped");
    assert!(rejections.iter().all(|(_, reason)| reason == "OVER_QUANTITY"));
    let counts = sale.store.counts(campaign).await.unwrap();
    assert_eq!((counts.issued_count, counts.rejected_count), (60, 20));
    // The last accepted (highest ranks) are the ones refused, and they are told so.
    let rejected = &rejections[0].0;
    assert!(
        accepted[20..].contains(rejected),
        "{rejected} was among the latest accepted"
    );
    let answer = sale.status(&api, campaign, rejected).await;
    assert_eq!(
        (answer["status"].as_str(), answer["reason"].as_str()),
        (Some("REJECTED"), Some("OVER_QUANTITY"))
    );
    let issued = sale.status(&api, campaign, "late3").await;
    assert_eq!(
        issued["status"], "ISSUED",
        "a coupon Redis forgot is answered from MySQL"
    );
}

/// Reports an error for every call after it was sent and answered: the message is on the queue,
/// the caller cannot know it.
#[derive(Debug)]
struct LoseResponses;

impl aws_sdk_sqs::config::Intercept for LoseResponses {
    fn name(&self) -> &'static str {
        "LoseResponses"
    }

    fn read_after_transmit(
        &self,
        _context: &aws_sdk_sqs::config::interceptors::BeforeDeserializationInterceptorContextRef<'_>,
        _components: &aws_sdk_sqs::config::RuntimeComponents,
        _cfg: &mut aws_sdk_sqs::config::ConfigBag,
    ) -> Result<(), aws_sdk_sqs::error::BoxError> {
        Err("the response was lost (test)".into())
    }
}

#[tokio::test]
async fn a_send_that_succeeds_but_reports_an_error_is_written_once() {
    let sale = Sale::new(
        MySqlStore::new(mysql().await),
        RedisIssueLedger::new(&env("REDIS_URL")).unwrap(),
    )
    .await;
    let campaign = sale.create_campaign(1).await;
    let lossy = aws_sdk_sqs::Client::from_conf(sale.sqs.config().to_builder().interceptor(LoseResponses).build());
    let api = sale.api_with(SqsReservationQueue::new(lossy, &sale.queue_url));
    let (status, body) = sale.issue(&api, campaign, "lost-answer").await;
    assert_eq!(status, 202, "an unknown outcome is not a failure to undo: {body}");
    assert_eq!(
        sale.issue(&api, campaign, "second").await.0,
        410,
        "the place was not given back and sold again"
    );
    assert_eq!(
        sale.ledger.pending(campaign, 10).await.unwrap().len(),
        1,
        "kept for recovery"
    );
    // Recovery (no grace here) sends it again: two messages for one place.
    let recovery = Recovery::new(
        sale.ledger.clone(),
        SqsReservationQueue::new(sale.sqs.clone(), &sale.queue_url),
    )
    .with_grace(Duration::ZERO);
    let summary = recovery.run().await.unwrap();
    assert!(summary.resent >= 1, "{summary:?}");
    assert!(sale.ledger.pending(campaign, 10).await.unwrap().is_empty());
    assert_eq!(sale.drain(&sale.writer()).await, 0);
    assert_eq!(sale.coupons(campaign).await, ["lost-answer"], "written once");
    assert_eq!(sale.status(&api, campaign, "lost-answer").await["status"], "ISSUED");
    assert_eq!(sale.ledger.reserved_count(campaign).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_or_killed_answers_503_within_the_deadline_and_holds_nothing() {
    let mut redis = PrivateRedis::start(Persistence::AppendOnlyAlways).await;
    let sale = Sale::new(MySqlStore::new(mysql().await), fast_fail(&redis.url())).await;
    let campaign = sale.create_campaign(10).await;
    let api = sale.api();
    assert_eq!(sale.issue(&api, campaign, "before").await.0, 202);

    // Hung: the connection is open, nothing answers.
    redis.pause();
    let started = Instant::now();
    let (status, body) = sale.issue(&api, campaign, "while-paused").await;
    let took = started.elapsed();
    assert_eq!((status, body["error"].as_str()), (503, Some("UNAVAILABLE")), "{body}");
    assert!(
        took < Duration::from_secs(3),
        "a hung Redis took {took:?}, not a clean 503"
    );
    redis.resume();

    // Gone: connections refused.
    redis.kill();
    let started = Instant::now();
    assert_eq!(sale.issue(&api, campaign, "while-down").await.0, 503);
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    redis.restart().await;
    reachable(&sale.ledger).await;

    // Every acknowledged write survived (AOF). The request that met a dead server holds nothing.
    // The one that met a hung server is an unknown outcome: its script may have run late (after
    // its own release, which went on a new connection), and then its place is pending, so
    // recovery delivers it; either way nothing is lost or sold twice.
    let held: HashSet<String> = sale.ledger.holders(campaign).await.unwrap().into_keys().collect();
    assert!(held.contains("before") && !held.contains("while-down"), "{held:?}");
    let pending: HashSet<String> = sale
        .ledger
        .pending(campaign, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.user_id.as_str().to_owned())
        .collect();
    assert!(
        held.iter().all(|u| u == "before" || pending.contains(u)),
        "a place beyond the accepted one is pending: {held:?} / {pending:?}"
    );
    assert_eq!(
        sale.issue(&api, campaign, "while-down").await.0,
        202,
        "the retry succeeds"
    );
    let recovery = Recovery::new(
        sale.ledger.clone(),
        SqsReservationQueue::new(sale.sqs.clone(), &sale.queue_url),
    )
    .with_grace(Duration::ZERO);
    assert_eq!(recovery.run().await.unwrap().resent, pending.len());
    assert_eq!(sale.drain(&sale.writer()).await, 0);
    let coupons: HashSet<String> = sale.coupons(campaign).await.into_iter().collect();
    let mut expected = held.clone();
    expected.insert("while-down".into());
    assert_eq!(coupons, expected, "every held place became a coupon");
    assert_eq!(
        sale.ledger.reserved_count(campaign).await.unwrap(),
        coupons.len() as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_killed_mid_batch_loses_and_doubles_nothing() {
    const USERS: usize = 1_500;
    let mut db = PrivateMariaDb::start().await;
    let pool = fcfs_shared::adapters::mysql::connect(&db.url(), 4).await.unwrap();
    fresh_ids(&pool).await;
    let store = MySqlStore::new(pool).with_timeout(Duration::from_secs(5));
    let sale = Sale::new(store, RedisIssueLedger::new(&env("REDIS_URL")).unwrap()).await;
    let campaign = sale.create_campaign(USERS as u32).await;
    let api = Arc::new(sale.api());
    let mut calls = Vec::new();
    for i in 0..USERS {
        let api = api.clone();
        let partner = sale.partner.clone();
        calls.push(tokio::spawn(async move {
            let id = campaign.to_string();
            reply(
                api.handle(gateway_request(
                    "POST",
                    "/v1/campaigns/{campaignId}/issues",
                    &[("campaignId", &id)],
                    json!({"userId": format!("m{i}")}).to_string(),
                    Some(&partner),
                ))
                .await,
            )
            .0
        }));
    }
    for call in calls {
        assert_eq!(call.await.unwrap(), 202);
    }

    // One delivery of everything, in chunks of 50; the database dies once the first chunks commit.
    // The 1,500 concurrent requests were sent packed, several reservations to a message.
    let mut messages = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while reservations_in(&messages) < USERS {
        assert!(
            Instant::now() < deadline,
            "only {} reservations arrived",
            reservations_in(&messages)
        );
        messages.extend(receive(&sale.sqs, &sale.queue_url, 1).await);
    }
    let writer = Arc::new(sale.writer());
    let batch = {
        let writer = writer.clone();
        let event = sqs_event(&messages);
        tokio::spawn(async move { writer.handle(event).await })
    };
    let watcher = fcfs_shared::adapters::mysql::connect(&db.url(), 1).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let written: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM coupons")
            .fetch_one(&watcher)
            .await
            .unwrap();
        if written > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no chunk committed within 30 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    db.kill();
    let outcome = batch.await.unwrap();
    let failed = match &outcome {
        Ok((response, _)) => response.batch_item_failures.len(),
        Err(_) => USERS,
    };
    assert!(failed > 0, "the batch outlived the database: {outcome:?}");
    db.restart().await;

    // The messages it could not write come back (visibility 5 s); the event source delivers them.
    assert_eq!(sale.drain(&writer).await, 0);
    let coupons = sale.coupons(campaign).await;
    let distinct: HashSet<&String> = coupons.iter().collect();
    assert_eq!(
        (coupons.len(), distinct.len()),
        (USERS, USERS),
        "nothing lost, nothing doubled"
    );
    let counts = sale.store.counts(campaign).await.unwrap();
    assert_eq!(counts.issued_count, USERS as u64, "the counter matches the rows");
    assert_eq!(sale.ledger.reserved_count(campaign).await.unwrap(), USERS as u64);
}

#[tokio::test]
async fn the_issue_api_starts_and_issues_with_mysql_stopped() {
    let mut db = PrivateMariaDb::start().await;
    let pool = fcfs_shared::adapters::mysql::connect(&db.url(), 2).await.unwrap();
    fresh_ids(&pool).await;
    let sale = Sale::new(MySqlStore::new(pool), RedisIssueLedger::new(&env("REDIS_URL")).unwrap()).await;
    let campaign = sale.create_campaign(5).await;
    db.kill();

    // The deployed constructor, with the database gone.
    let settings = Settings::new(
        HashMap::<String, String>::from([
            ("DATABASE_URL".into(), db.url()),
            ("REDIS_URL".into(), env("REDIS_URL")),
            ("ISSUE_QUEUE_URL".into(), sale.queue_url.clone()),
            ("MYSQL_TIMEOUT_MS".into(), "1000".into()),
        ])
        .into_iter()
        .collect(),
    );
    let sdk = fcfs_shared::config::aws_sdk_config().await;
    let api = IssueApi::from_settings(&settings, &sdk)
        .await
        .expect("starts without MySQL");
    let (status, body) = sale.issue(&api, campaign, "no-mysql").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(sale.issue(&api, campaign, "no-mysql").await.0, 409);
    assert_eq!(sale.status(&api, campaign, "no-mysql").await["status"], "PENDING");
    // What only MySQL can answer is a clean 503.
    let (status, _) = sale.issue(&api, campaign + 1_000_000, "x").await;
    assert_eq!(status, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_process_killed_mid_sale_loses_no_place() {
    use integration_tests::services::RunnerProcess;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    let sqs = sqs().await;
    let (queue_url, _) = queue_with_dlq(&sqs, 5).await;
    // The runner's API, writer poller and recovery schedule all use this queue; recovery runs
    // every second and re-sends places pending for more than 3 s.
    let envs: Vec<(String, String)> = [
        ("ISSUE_QUEUE_URL", queue_url.as_str()),
        ("FCFS_SCHEDULE_RATE_SECS", "1"),
        ("RECOVERY_GRACE_SECS", "3"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let partner = unique("killed");
    let key = integration_tests::api_key(&partner).await;
    let http = reqwest::Client::new();
    let mut runner = RunnerProcess::spawn(&envs).await;
    let now = chrono::Utc::now();
    let created: Value = http
        .post(format!("{}/v1/campaigns", runner.base_url()))
        .header("X-API-KEY", &key)
        .json(&json!({
            "name": "killed", "totalQuantity": 100_000,
            "issueStartsAt": now - chrono::Duration::minutes(1), "issueEndsAt": now + chrono::Duration::hours(1),
            "couponExpiresAt": now + chrono::Duration::days(7), "discount": {"type": "AMOUNT", "value": 100}
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let campaign = integration_tests::as_id(&created["campaignId"]).unwrap_or_else(|| panic!("{created}"));

    // 100 clients issue as fast as they can; the process is killed under them.
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..100 {
        let (http, key, accepted, stop) = (http.clone(), key.clone(), accepted.clone(), stop.clone());
        let url = format!("{}/v1/campaigns/{campaign}/issues", runner.base_url());
        clients.push(tokio::spawn(async move {
            for j in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let user = format!("k{c}-{j}");
                let sent = http
                    .post(&url)
                    .header("X-API-KEY", &key)
                    .json(&json!({"userId": user}))
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                match sent {
                    Ok(res) if res.status() == 202 => accepted.lock().unwrap().push(user),
                    Ok(res) => panic!("unexpected {} before the kill", res.status()),
                    // The process is gone: this caller never learns its outcome.
                    Err(_) => break,
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while accepted.lock().unwrap().len() < 300 {
        assert!(
            Instant::now() < deadline,
            "the sale did not get going:\n{}",
            runner.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    runner.kill();
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let accepted = accepted.lock().unwrap().clone();
    let ledger = RedisIssueLedger::new(&env("REDIS_URL")).unwrap();
    let stranded = ledger.pending(campaign, usize::MAX).await.unwrap().len();
    let reserved = ledger.reserved_count(campaign).await.unwrap();
    eprintln!(
        "killed with {} accepted, {reserved} places reserved, {stranded} pending (taken, message not known to be sent)",
        accepted.len()
    );
    assert!(
        stranded > 0,
        "the kill left no place without a message: the test proved nothing"
    );

    let restarted = Instant::now();
    let _runner = RunnerProcess::spawn(&envs).await;
    let pool = mysql().await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let pending = ledger.pending(campaign, usize::MAX).await.unwrap().len();
        let issued: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM coupons WHERE campaign_id = ?")
            .bind(campaign)
            .fetch_one(&pool)
            .await
            .unwrap();
        if pending == 0 && issued as u64 == reserved {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not recovered within 120 s: {pending} pending, {issued} issued of {reserved} reserved"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "recovered {stranded} stranded places in {:.1?} after the restart",
        restarted.elapsed()
    );
    let written: HashSet<String> = sqlx::query_scalar("SELECT user_id FROM coupons WHERE campaign_id = ?")
        .bind(campaign)
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let missing: Vec<&String> = accepted.iter().filter(|u| !written.contains(*u)).collect();
    assert!(missing.is_empty(), "callers told 202 without a coupon: {missing:?}");
    assert_eq!(
        ledger.reserved_count(campaign).await.unwrap(),
        written.len() as u64,
        "Redis reserved = MySQL issued"
    );
}

/// A key store that is paused or down must not lock a partner out: the authorizer fails (API
/// Gateway's AUTHORIZER_CONFIGURATION_ERROR, which it does not cache; the template's gateway
/// response makes it 503 UNAVAILABLE with Retry-After) within its deadline, and as soon as the store is back
/// the same key is allowed, with no cached Deny in the way. Through a runner process that serves
/// the template's API Gateway (its authorizer cache included, `ReauthorizeEvery` 300 s) with the
/// key table on a private DynamoDB Local the test pauses (SIGSTOP) and kills.
#[tokio::test]
async fn a_key_store_outage_answers_503_fast_and_caches_no_deny() {
    use integration_tests::services::{PrivateDynamoDb, RunnerProcess};

    let mut store = PrivateDynamoDb::start().await;
    let dynamo = store.client().await;
    let table = unique("keys");
    dynamo
        .create_table()
        .table_name(&table)
        .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
        .attribute_definitions(
            aws_sdk_dynamodb::types::AttributeDefinition::builder()
                .attribute_name("keyHash")
                .attribute_type(aws_sdk_dynamodb::types::ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            aws_sdk_dynamodb::types::KeySchemaElement::builder()
                .attribute_name("keyHash")
                .key_type(aws_sdk_dynamodb::types::KeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("create table: {e:?}\n{}", store.log_tail(20)));
    let keys = fcfs_shared::adapters::dynamodb::DynamoApiKeys::new(dynamo, &table);
    let new_key = async || {
        let (secret, _) = fcfs_shared::keys::create_key(&keys, &unique("outage"), None, chrono::Utc::now())
            .await
            .unwrap();
        secret.expose().to_owned()
    };
    let (paused_key, killed_key) = (new_key().await, new_key().await);

    let envs = [
        ("AWS_ENDPOINT_URL_DYNAMODB".to_owned(), store.endpoint()),
        ("API_KEYS_TABLE".to_owned(), table.clone()),
    ];
    let runner = RunnerProcess::spawn(&envs).await;
    let http = reqwest::Client::new();
    // A route the campaign function answers without MySQL: 400 from it means the request passed
    // the authorizer; API Gateway's own answers are 401/403/503 with its error type header.
    let call = async |key: &str| {
        let started = Instant::now();
        let response = http
            .post(format!("{}/v1/campaigns", runner.base_url()))
            .header("X-API-KEY", key)
            .header("content-type", "application/json")
            .body("{}")
            .timeout(Duration::from_secs(15))
            .send()
            .await
            .unwrap_or_else(|e| panic!("no answer: {e}\n{}", runner.log_tail(30)));
        let status = response.status().as_u16();
        let error_type = response
            .headers()
            .get("x-amzn-errortype")
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        (status, error_type, started.elapsed())
    };
    let deadline = authorizer::MAX_LOOKUP_TIMEOUT * 2;

    // Paused: the lookup times out.
    store.pause();
    let (status, error_type, took) = call(&paused_key).await;
    assert_eq!(status, 503, "{error_type:?}\n{}", runner.log_tail(20));
    assert!(took < deadline, "a paused key store held the request {took:?}");
    eprintln!("key store paused: 503 after {took:?}");
    store.resume();
    let (status, error_type, _) = call(&paused_key).await;
    assert_eq!(status, 400, "allowed at once after the store came back: {error_type:?}");

    // Down: the connection is refused.
    store.kill();
    let (status, _, took) = call(&killed_key).await;
    assert_eq!(status, 503);
    assert!(took < deadline, "a dead key store held the request {took:?}");
    eprintln!("key store down: 503 after {took:?}");
    store.restart().await;
    let allowed = wait_until(Duration::from_secs(30), async || call(&killed_key).await.0 == 400).await;
    assert!(
        allowed,
        "the key was not allowed after the store restarted\n{}",
        runner.log_tail(20)
    );
    // Nothing else decided it meanwhile: a key the store never knew is still refused.
    let (status, _, _) = call(&format!("fcfs_{}", "A".repeat(43))).await;
    assert_eq!(status, 403);
}

/// Polls `check` every 200 ms until it holds or `deadline` passes.
async fn wait_until(deadline: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let started = Instant::now();
    loop {
        if check().await {
            return true;
        }
        if started.elapsed() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A points write's effect and its Idempotency-Key commit together or not at all: MariaDB killed
/// while 200 uses of one wallet are in flight leaves each either committed with its key or not at
/// all. Every client that saw a 503 (its outcome unknown: the kill may have come after the
/// commit) retries with its key, as the contract tells it to, and ends with exactly one effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_killed_mid_points_writes_leaves_one_effect_per_key() {
    const USES: usize = 200;
    let mut db = PrivateMariaDb::start().await;
    let pool = fcfs_shared::adapters::mysql::connect(&db.url(), 8).await.unwrap();
    let points = Arc::new(PointsService::new(
        MySqlStore::new(pool).with_timeout(Duration::from_secs(2)),
    ));
    let partner = unique("points-fault");
    let alice = UserId::parse("alice").unwrap();
    let seed = EarnPoints {
        amount: 1_000,
        reason: "seed".into(),
        expires_at: None,
    };
    points
        .earn(
            &partner,
            alice.clone(),
            &IdempotencyKey::parse(Some("seed")).unwrap(),
            seed,
        )
        .await
        .unwrap();

    let calls: Vec<_> = (0..USES)
        .map(|i| {
            let (points, partner, alice) = (points.clone(), partner.clone(), alice.clone());
            tokio::spawn(async move {
                let key = IdempotencyKey::parse(Some(&format!("use-{i}"))).unwrap();
                let deadline = Instant::now() + Duration::from_secs(90);
                let mut unknown = 0;
                loop {
                    let request = UsePoints {
                        amount: 1,
                        order_id: format!("order-{i}").try_into().unwrap(),
                        reason: None,
                    };
                    match points.use_points(&partner, alice.clone(), &key, request).await {
                        Ok(receipt) => return (receipt, unknown),
                        Err(e) if e.is_transient() && Instant::now() < deadline => {
                            unknown += 1;
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(e) => panic!("use {i}: {e}"),
                    }
                }
            })
        })
        .collect();

    // Kill it once some uses committed and the rest are in flight.
    let watcher = fcfs_shared::adapters::mysql::connect(&db.url(), 1).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let committed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM point_transactions WHERE kind = 'USE'")
            .fetch_one(&watcher)
            .await
            .unwrap();
        if committed >= 20 {
            break;
        }
        assert!(Instant::now() < deadline, "no use committed within 30 s");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    drop(watcher);
    db.kill();
    db.restart().await;

    let mut receipts = Vec::new();
    let mut unknown = 0;
    for call in calls {
        let (receipt, retries) = call.await.unwrap();
        receipts.push(receipt);
        unknown += retries;
    }
    eprintln!("{unknown} answers were 503 and retried with their key");
    assert!(unknown > 0, "the kill hit no write in flight: the test proved nothing");
    let ids: HashSet<u64> = receipts.iter().map(|r| r.transaction_id).collect();
    assert_eq!(ids.len(), USES, "one transaction per key");
    let balances: HashSet<u64> = receipts.iter().map(|r| r.balance).collect();
    assert_eq!(balances.len(), USES, "each use saw its own balance: {balances:?}");

    let pool = fcfs_shared::adapters::mysql::connect(&db.url(), 1).await.unwrap();
    let used: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM point_transactions WHERE kind = 'USE'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(used, USES as i64, "every key has exactly one effect");
    let store = MySqlStore::new(pool);
    let balance = points.balance(&partner, &alice).await.unwrap().balance;
    assert_eq!(balance, 1_000 - USES as u64);
    let audit = store.verify_points(Some(&partner)).await.unwrap();
    assert!(audit.is_clean(), "{audit:?}");
}
