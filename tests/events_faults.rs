//! Partner events (issue 28) under faults, and the flash sale's events: "afterwards every
//! committed effect's event delivered at least once, none for an uncommitted one, duplicates only
//! with the same id"; "exactly N coupon.issued events, one per coupon, and one coupon.rejected per
//! rejection row; none for a rolled-back chunk".
//!
//! - The relay killed mid-delivery: an `fcfs-runner` process (its own MariaDB, so no other relay
//!   can touch its partner's lease) SIGKILLed while a POST to a hanging endpoint is in flight; a
//!   second process delivers everything once the killed relay's lease lapses.
//! - MariaDB killed mid-write: the writer's batch on a private MariaDB, the server SIGKILLed once
//!   the first chunks commit, restarted, the rest redelivered; checked by SQL joins at the crash
//!   point and at the end.
//! - The flash sale through the runner: 2,000 coupons, more users than coupons, forged
//!   reservations the writer rejects; the events by SQL and as the receiver got them.
//! - A chunk's packed events recorded twice (a redelivery): the sequencer expands each packed row
//!   in its place, every event once.
//!
//! The receiver is `tests/support/webhook_receiver.rs`; signatures are checked by the independent
//! verifier (`tests/support/verify_webhook.py`). Every wait has a deadline.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use campaign_api::CampaignApi;
use chrono::{SecondsFormat, Utc};
use fcfs_shared::adapters::mysql::MySqlStore;
use fcfs_shared::adapters::redis::RedisIssueLedger;
use fcfs_shared::adapters::sqs::SqsReservationQueue;
use fcfs_shared::issuance::domain::Reservation;
use fcfs_shared::kernel::UserId;
use fcfs_shared::testkit::gateway_request;
use futures_util::StreamExt;
use integration_tests::services::{PrivateMariaDb, RunnerProcess};
use integration_tests::webhook_receiver::{Mode, WebhookReceiver, verify_with_python};
use integration_tests::{
    api_key, env, mysql, queue_with_dlq, receive, reply, reservations_in, runner_config, sequence_events, serve, sqs,
    sqs_event, unique,
};
use issue_api::IssueApi;
use issue_writer::IssueWriter;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A partner talking to a runner over HTTP with its key.
#[derive(Clone)]
struct Partner {
    id: String,
    key: String,
    base: String,
    http: reqwest::Client,
}

impl Partner {
    async fn new(prefix: &str, base: &str) -> Self {
        let id = unique(prefix);
        Self {
            key: api_key(&id).await,
            id,
            base: base.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// The same partner on another runner.
    fn on(&self, base: &str) -> Self {
        Self {
            base: base.to_owned(),
            ..self.clone()
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
        idem: Option<String>,
    ) -> reqwest::Result<(u16, Value)> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("X-API-KEY", &self.key)
            .timeout(Duration::from_secs(30))
            .json(&body);
        if let Some(key) = idem {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        self.send(method, path, body, None)
            .await
            .unwrap_or_else(|e| panic!("{path}: the runner answers: {e}"))
    }

    /// A new webhook registration for `events`: its secret.
    async fn register(&self, url: &str, events: &[&str]) -> String {
        let (status, body) = self
            .call(
                reqwest::Method::PUT,
                "/v1/webhooks",
                json!({"url": url, "events": events}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["secret"].as_str().unwrap_or_else(|| panic!("{body}")).to_owned()
    }

    /// A points earn with an Idempotency-Key of its own: the transaction id, or the transport
    /// error when the runner did not answer (killed under the request).
    async fn try_earn(&self, user: &str, amount: u64) -> Result<String, String> {
        match self
            .send(
                reqwest::Method::POST,
                &format!("/v1/users/{user}/points/earn"),
                json!({"amount": amount, "reason": "events faults"}),
                Some(unique("idem")),
            )
            .await
        {
            Ok((201, body)) => Ok(id_of(&body["transactionId"])),
            Ok((status, body)) => panic!("earn for {user}: {status} {body}"),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn earn(&self, user: &str, amount: u64) -> String {
        self.try_earn(user, amount)
            .await
            .unwrap_or_else(|e| panic!("earn for {user}: {e}"))
    }
}

/// An id as the API and the events carry it (a decimal string; a JSON integer is read too).
fn id_of(value: &Value) -> String {
    match value {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => panic!("not an id: {other}"),
    }
}

fn rfc3339(at: chrono::DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Every delivery so far is signed with `secret` (the independent verifier says so) and carries
/// only `partner`'s events, in sequence.
fn assert_deliveries_signed(receiver: &WebhookReceiver, secret: &str, partner: &str) {
    let deliveries = receiver.deliveries();
    assert!(!deliveries.is_empty());
    for delivery in &deliveries {
        assert!(
            verify_with_python(secret, delivery),
            "the independent verifier refuses {:?} on {}",
            delivery.signature(),
            String::from_utf8_lossy(&delivery.body)
        );
        let events = delivery.events();
        assert!((1..=100).contains(&events.len()));
        let sequences: Vec<u64> = events.iter().map(|e| e["sequence"].as_u64().unwrap()).collect();
        assert!(sequences.windows(2).all(|w| w[0] < w[1]), "in sequence: {sequences:?}");
        assert!(events.iter().all(|e| e["partnerId"] == partner));
    }
}

/// Every repeated arrival of an id carries the very envelope of its first arrival. How many
/// repeats there were.
fn assert_duplicates_identical(receiver: &WebhookReceiver) -> usize {
    let mut by_id: HashMap<String, Value> = HashMap::new();
    let mut duplicates = 0;
    for (event, _, _) in receiver.events() {
        let id = event["id"].as_str().expect("an id").to_owned();
        match by_id.get(&id) {
            Some(first) => {
                duplicates += 1;
                assert_eq!(first, &event, "a duplicate of {id} differs from its first arrival");
            }
            None => {
                by_id.insert(id, event);
            }
        }
    }
    duplicates
}

/// The partner's recorded events, as their envelope ids (`evt_<row id>`), by type.
async fn recorded_events(pool: &sqlx::MySqlPool, partner: &str) -> BTreeMap<String, String> {
    sequence_events(pool).await;
    let rows: Vec<(u64, String)> = sqlx::query_as("SELECT id, type FROM partner_events WHERE partner_id = ?")
        .bind(partner)
        .fetch_all(pool)
        .await
        .unwrap();
    rows.into_iter().map(|(id, kind)| (format!("evt_{id}"), kind)).collect()
}

/// How a campaign's rows and its partner's issue events stand, by SQL.
#[derive(Debug, PartialEq, Eq)]
struct IssueAccount {
    coupons: i64,
    issued_events: i64,
    /// Distinct `couponId`s among the coupon.issued events.
    issued_event_coupons: i64,
    /// (coupon, event) pairs agreeing on coupon id, campaign and user.
    issued_matched: i64,
    rejections: i64,
    rejected_events: i64,
    /// Distinct (campaignId, userId) among the coupon.rejected events.
    rejected_event_subjects: i64,
    /// (rejection row, event) pairs agreeing on campaign, user, request id and reason.
    rejected_matched: i64,
    /// The partner's events of any other type.
    other_events: i64,
}

impl IssueAccount {
    async fn of(pool: &sqlx::MySqlPool, partner: &str, campaign: u64) -> Self {
        sequence_events(pool).await;
        let count = |sql: &'static str, binds: Vec<String>| {
            let pool = pool.clone();
            async move {
                let mut query = sqlx::query_scalar::<_, i64>(sql);
                for b in binds {
                    query = query.bind(b);
                }
                query.fetch_one(&pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
            }
        };
        let (p, c) = (partner.to_owned(), campaign.to_string());
        Self {
            coupons: count("SELECT COUNT(*) FROM coupons WHERE campaign_id = ?", vec![c.clone()]).await,
            issued_events: count(
                "SELECT COUNT(*) FROM partner_events WHERE partner_id = ? AND type = 'coupon.issued'",
                vec![p.clone()],
            )
            .await,
            issued_event_coupons: count(
                "SELECT COUNT(DISTINCT JSON_VALUE(data, '$.couponId')) FROM partner_events \
                 WHERE partner_id = ? AND type = 'coupon.issued'",
                vec![p.clone()],
            )
            .await,
            issued_matched: count(
                "SELECT COUNT(*) FROM coupons c JOIN \
                 (SELECT JSON_VALUE(data, '$.couponId') AS coupon_id, JSON_VALUE(data, '$.campaignId') AS campaign_id, \
                  JSON_VALUE(data, '$.userId') AS user_id FROM partner_events \
                  WHERE partner_id = ? AND type = 'coupon.issued') e \
                 ON e.coupon_id = CAST(c.id AS CHAR) AND e.campaign_id = CAST(c.campaign_id AS CHAR) \
                 AND e.user_id = c.user_id \
                 WHERE c.campaign_id = ?",
                vec![p.clone(), c.clone()],
            )
            .await,
            rejections: count(
                "SELECT COUNT(*) FROM coupon_rejections WHERE campaign_id = ?",
                vec![c.clone()],
            )
            .await,
            rejected_events: count(
                "SELECT COUNT(*) FROM partner_events WHERE partner_id = ? AND type = 'coupon.rejected'",
                vec![p.clone()],
            )
            .await,
            rejected_event_subjects: count(
                "SELECT COUNT(DISTINCT JSON_VALUE(data, '$.campaignId'), JSON_VALUE(data, '$.userId')) \
                 FROM partner_events WHERE partner_id = ? AND type = 'coupon.rejected'",
                vec![p.clone()],
            )
            .await,
            rejected_matched: count(
                "SELECT COUNT(*) FROM coupon_rejections r JOIN \
                 (SELECT JSON_VALUE(data, '$.campaignId') AS campaign_id, JSON_VALUE(data, '$.userId') AS user_id, \
                  JSON_VALUE(data, '$.requestId') AS request_id, JSON_VALUE(data, '$.reason') AS reason \
                  FROM partner_events WHERE partner_id = ? AND type = 'coupon.rejected') e \
                 ON e.campaign_id = CAST(r.campaign_id AS CHAR) AND e.user_id = r.user_id \
                 AND e.request_id = r.request_id AND e.reason = r.reason \
                 WHERE r.campaign_id = ?",
                vec![p.clone(), c],
            )
            .await,
            other_events: count(
                "SELECT COUNT(*) FROM partner_events WHERE partner_id = ? \
                 AND type NOT IN ('coupon.issued', 'coupon.rejected')",
                vec![p],
            )
            .await,
        }
    }

    /// Exactly one coupon.issued per coupon row and one coupon.rejected per rejection row, each
    /// agreeing with its row, and no event without its row: equal counts, and the join pairs
    /// them off one to one (the events' subjects are distinct).
    fn assert_one_event_per_row(&self, when: &str) {
        assert_eq!(
            (self.issued_events, self.issued_event_coupons, self.issued_matched),
            (self.coupons, self.coupons, self.coupons),
            "{when}: one coupon.issued per coupon row, none for a coupon that does not exist: {self:?}"
        );
        assert_eq!(
            (
                self.rejected_events,
                self.rejected_event_subjects,
                self.rejected_matched
            ),
            (self.rejections, self.rejections, self.rejections),
            "{when}: one coupon.rejected per rejection row, none without one: {self:?}"
        );
        assert_eq!(self.other_events, 0, "{when}: {self:?}");
    }
}

/// Waits until `check` holds, at most `deadline`; panics naming `what` with the last state.
async fn wait_for<T: std::fmt::Debug>(what: &str, deadline: Duration, mut check: impl AsyncFnMut() -> (bool, T)) -> T {
    let until = Instant::now() + deadline;
    loop {
        let (done, state) = check().await;
        if done {
            return state;
        }
        assert!(
            Instant::now() < until,
            "{what}: not within {deadline:?}; last: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn envs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

// ---------------------------------------------------------------------------------------------
// The relay killed mid-delivery
// ---------------------------------------------------------------------------------------------

/// A runner process relays to an endpoint that takes its POSTs and never answers; it is SIGKILLed
/// while one is in flight (its lease held, no bookkeeping done) and while clients are still
/// earning points through it. A second process, with the endpoint answering 200, delivers nothing
/// while the dead relay's lease lasts (one POST's deadline + 5 s) and everything after it:
/// every committed earn's event at least once, the POST that died arriving again with the same
/// envelopes, and no event for an earn that did not commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_killed_mid_delivery_delivers_every_committed_event_after_its_lease() {
    let started = Instant::now();
    // Its own MariaDB: the runner processes' relays are the only ones that see this partner.
    let db = PrivateMariaDb::start().await;
    let pool = fcfs_shared::adapters::mysql::connect(&db.url(), 4).await.unwrap();
    let sqs = sqs().await;
    let (issue_queue, issue_dlq) = queue_with_dlq(&sqs, 5).await;
    let (grading_queue, _) = queue_with_dlq(&sqs, 30).await;
    let timeout_ms: u64 = 1000;
    // A lease covers one POST: its deadline and 5 s more (renewed per batch).
    let lease = Duration::from_millis(timeout_ms) + Duration::from_secs(5);
    let url = db.url();
    let timeout = timeout_ms.to_string();
    let envs = envs(&[
        ("DATABASE_URL", url.as_str()),
        ("ISSUE_QUEUE_URL", issue_queue.as_str()),
        ("ISSUE_DLQ_URL", issue_dlq.as_str()),
        ("GRADING_QUEUE_URL", grading_queue.as_str()),
        ("WEBHOOK_ALLOW_LOOPBACK", "true"),
        ("WEBHOOK_TIMEOUT_MS", timeout.as_str()),
        ("WEBHOOK_MAX_BACKOFF_SECONDS", "1"),
        ("FCFS_SCHEDULE_START_NOW", "EventRelayFunction"),
    ]);
    let mut first = RunnerProcess::spawn(&envs).await;
    let receiver = WebhookReceiver::start().await;
    let partner = Partner::new("evfault-relay", &first.base_url()).await;
    let secret = partner.register(&receiver.url, &["points.earned"]).await;

    // Delivered before the fault: five earns.
    for i in 0..5 {
        partner.earn(&format!("a-{i}"), 10 + i).await;
    }
    receiver.wait_for_delivered(5, Duration::from_secs(60)).await;

    // The endpoint hangs from now on; clients keep earning through the first process until it dies.
    receiver.set_mode(Mode::Hang);
    let confirmed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let unanswered = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut earners = Vec::new();
    for c in 0..4 {
        let (partner, confirmed, unanswered, stop) =
            (partner.clone(), confirmed.clone(), unanswered.clone(), stop.clone());
        earners.push(tokio::spawn(async move {
            for j in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match partner.try_earn(&format!("b-{c}-{j}"), 1).await {
                    Ok(tx) => confirmed.lock().unwrap().push(tx),
                    Err(e) => {
                        // The process died under the request: its outcome is unknown to the client.
                        unanswered.lock().unwrap().push(e);
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    // Some earns commit while the endpoint hangs, then the next POST that reaches it is the one
    // in flight when the process is SIGKILLed (its deadline is 1 s: the kill comes within ms).
    wait_for("earns while the endpoint hangs", Duration::from_secs(30), async || {
        let n = confirmed.lock().unwrap().len();
        (n >= 20, n)
    })
    .await;
    let posts_before = receiver.deliveries().len();
    receiver
        .wait_until(Duration::from_secs(30), |d| d.len() > posts_before)
        .await
        .unwrap_or_else(|d| panic!("no POST reached the hanging endpoint ({} in all)", d.len()));
    first.kill();
    let killed_at = Instant::now();
    stop.store(true, Ordering::Relaxed);
    for earner in earners {
        earner.await.unwrap();
    }
    let in_flight = receiver.deliveries()[posts_before..].to_vec();
    assert_eq!(in_flight.len(), 1, "one POST in flight at the kill");
    let in_flight_ids: BTreeSet<String> = in_flight[0]
        .events()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    let in_flight_last = in_flight[0]
        .events()
        .iter()
        .filter_map(|e| e["sequence"].as_u64())
        .max()
        .unwrap();

    // The killed relay holds the partner's lease, and did no bookkeeping for the POST it died in.
    let (leased_until, delivered_through): (Option<chrono::NaiveDateTime>, u64) =
        sqlx::query_as("SELECT leased_until, delivered_through FROM webhook_endpoints WHERE partner_id = ?")
            .bind(&partner.id)
            .fetch_one(&pool)
            .await
            .unwrap();
    let leased_until = leased_until.expect("the killed relay's lease is held").and_utc();
    let lease_left = (leased_until - Utc::now()).to_std().unwrap_or_else(|_| {
        panic!("the lease ({leased_until}) had already lapsed at the kill: the POST was not in flight")
    });
    assert!(lease_left <= lease, "lease {lease_left:?} beyond {lease:?}");
    assert!(
        delivered_through < in_flight_last,
        "the in-flight POST's events are not recorded as delivered ({delivered_through} ≥ {in_flight_last})"
    );
    let confirmed_at_kill = confirmed.lock().unwrap().clone();
    let unanswered = unanswered.lock().unwrap().clone();
    eprintln!(
        "killed with a POST of {} events in flight; {} earns confirmed while hanging, {} requests cut off; \
         lease left {lease_left:.1?}",
        in_flight_ids.len(),
        confirmed_at_kill.len(),
        unanswered.len()
    );

    // The endpoint answers again; a second process serves, and more is earned through it while
    // the dead relay's lease runs.
    receiver.set_mode(Mode::Ok);
    let second = RunnerProcess::spawn(&envs).await;
    let partner = partner.on(&second.base_url());
    for i in 0..5 {
        partner.earn(&format!("c-{i}"), 100 + i).await;
    }

    // Nothing is delivered before the lease lapses; everything soon after.
    let recorded = recorded_events(&pool, &partner.id).await;
    receiver
        .wait_for_delivered(recorded.len(), lease_left + Duration::from_secs(60))
        .await;
    // The first POST answered 200 after the one that died (the endpoint hung until the restart).
    let resumed = receiver.deliveries()[posts_before + 1..]
        .iter()
        .find(|d| d.answered == Some(200))
        .map(|d| d.arrived)
        .expect("a delivery after the restart");
    let resumed_after = resumed.saturating_duration_since(killed_at);
    eprintln!("deliveries resumed {resumed_after:.1?} after the kill (lease left then: {lease_left:.1?})");
    assert!(
        resumed_after + Duration::from_millis(500) >= lease_left,
        "delivered {resumed_after:?} after the kill, before the lease ({lease_left:?}) lapsed"
    );
    assert!(
        resumed_after <= lease_left + Duration::from_secs(30),
        "deliveries resumed only {resumed_after:?} after the kill (lease {lease_left:?})"
    );

    // By SQL: one points.earned event per EARN transaction, and none for anything else (an earn
    // cut off by the kill has both or neither).
    let earns: BTreeSet<String> =
        sqlx::query_scalar::<_, u64>("SELECT id FROM point_transactions WHERE partner_id = ? AND kind = 'EARN'")
            .bind(&partner.id)
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .map(|id| id.to_string())
            .collect();
    let event_transactions: Vec<String> = sqlx::query_scalar(
        "SELECT JSON_VALUE(data, '$.transactionId') FROM partner_events WHERE partner_id = ? AND type = 'points.earned'",
    )
    .bind(&partner.id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(event_transactions.len(), earns.len(), "one event per earn");
    assert_eq!(
        event_transactions.iter().cloned().collect::<BTreeSet<_>>(),
        earns,
        "every committed earn has its event, no event without its earn"
    );
    assert_eq!(recorded.len(), earns.len());
    assert!(recorded.values().all(|kind| kind == "points.earned"));
    for tx in &confirmed_at_kill {
        assert!(earns.contains(tx), "a confirmed earn {tx} is committed");
    }

    // Every recorded event delivered (answered 200) at least once, nothing else delivered; the
    // POST that died arrived again with the same envelopes.
    let recorded = recorded_events(&pool, &partner.id).await;
    let delivered: BTreeSet<String> = receiver.delivered_ids().into_keys().collect();
    assert_eq!(
        delivered,
        recorded.keys().cloned().collect::<BTreeSet<_>>(),
        "delivered = recorded"
    );
    let delivered_tx: BTreeSet<String> = receiver
        .delivered_events()
        .iter()
        .map(|e| id_of(&e["data"]["transactionId"]))
        .collect();
    assert_eq!(delivered_tx, earns, "each committed earn's event delivered");
    assert!(
        in_flight_ids.is_subset(&delivered),
        "the in-flight POST's events delivered later"
    );
    let duplicates = assert_duplicates_identical(&receiver);
    assert!(
        duplicates >= in_flight_ids.len(),
        "the in-flight events arrived again ({duplicates} repeats)"
    );
    assert_deliveries_signed(&receiver, &secret, &partner.id);
    eprintln!(
        "{} events delivered in {} POSTs ({duplicates} repeated arrivals, all identical); test took {:.1?}",
        delivered.len(),
        receiver.deliveries().len(),
        started.elapsed()
    );
    drop(second);
}

// ---------------------------------------------------------------------------------------------
// MariaDB killed mid-write
// ---------------------------------------------------------------------------------------------

type Api = IssueApi<MySqlStore, RedisIssueLedger, SqsReservationQueue>;

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

/// Acts as the SQS event source until the queue stays empty: the writer's answers decide what
/// is deleted. How many invocations failed as a whole.
async fn drain(sqs: &aws_sdk_sqs::Client, queue: &str, writer: &IssueWriter<MySqlStore, RedisIssueLedger>) -> usize {
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut idle, mut failed) = (0, 0);
    while idle < 2 {
        assert!(Instant::now() < deadline, "the queue did not drain within 120 s");
        let mut messages = Vec::new();
        while messages.len() < 500 {
            let got = receive(sqs, queue, 1).await;
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
            sqs.delete_message()
                .queue_url(queue)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    failed
}

/// The users holding a coupon of the campaign, as `db` sees them.
async fn coupon_holders<'e>(db: impl sqlx::Executor<'e, Database = sqlx::MySql>, campaign: u64) -> HashSet<String> {
    sqlx::query_scalar("SELECT user_id FROM coupons WHERE campaign_id = ?")
        .bind(campaign)
        .fetch_all(db)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// The users named by the partner's coupon.issued events as the connection sees them, in rows of
/// their own or packed (before the sequencer expands them).
async fn issued_event_users(db: &mut sqlx::MySqlConnection, partner: &str) -> Vec<String> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT type, data FROM partner_events WHERE partner_id = ? AND type IN ('coupon.issued', 'packed')",
    )
    .bind(partner)
    .fetch_all(db)
    .await
    .unwrap();
    let mut users = Vec::new();
    for (kind, data) in rows {
        let data: Value = serde_json::from_str(&data).unwrap();
        let issued = if kind == "packed" {
            data.as_array()
                .expect("a packed row holds an array")
                .iter()
                .filter(|e| e["type"] == "coupon.issued")
                .map(|e| e["data"].clone())
                .collect()
        } else {
            vec![data]
        };
        users.extend(issued.iter().filter_map(|d| d["userId"].as_str().map(str::to_owned)));
    }
    users
}

/// The users of a message's reservations (one, or a pack), in its order.
fn users_in(message: &aws_sdk_sqs::types::Message) -> Vec<String> {
    let body = message.body().unwrap_or_default();
    let pack: Vec<Reservation> = serde_json::from_str(body)
        .or_else(|_| serde_json::from_str(body).map(|r: Reservation| vec![r]))
        .expect("a reservation message");
    pack.into_iter().map(|r| r.user_id.as_str().to_owned()).collect()
}

/// The writer records a sale's reservations (real ones from the issue API, and forged ones it must
/// reject: ranks beyond the quantity, and more valid ranks than places) on a private MariaDB that
/// is SIGKILLed once the first chunks commit, restarted, and the rest redelivered. Right after the
/// restart, and again at the end: one coupon.issued per coupon row, one coupon.rejected per
/// rejection row, no event for a coupon of a chunk that died uncommitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_killed_mid_write_leaves_one_event_per_committed_row() {
    const QUANTITY: u32 = 1_000;
    const INVALID: u32 = 60;
    const OVER: u32 = 60;
    let started = Instant::now();
    let mut db = PrivateMariaDb::start().await;
    let pool = fcfs_shared::adapters::mysql::connect(&db.url(), 6).await.unwrap();
    fresh_ids(&pool).await;
    let store = MySqlStore::new(pool.clone()).with_timeout(Duration::from_secs(5));
    let ledger = RedisIssueLedger::new(&env("REDIS_URL")).unwrap();
    let sqs = sqs().await;
    let (queue, _) = queue_with_dlq(&sqs, 5).await;
    let partner = unique("evfault-db");

    let now = Utc::now();
    let (status, created) = reply(
        CampaignApi::new(store.clone(), ledger.clone())
            .handle(gateway_request(
                "POST",
                "/v1/campaigns",
                &[],
                json!({
                    "name": "events-db-fault", "totalQuantity": QUANTITY,
                    "issueStartsAt": rfc3339(now - chrono::Duration::minutes(1)),
                    "issueEndsAt": rfc3339(now + chrono::Duration::hours(1)),
                    "couponExpiresAt": rfc3339(now + chrono::Duration::days(7)),
                    "discount": {"type": "AMOUNT", "value": 100}
                })
                .to_string(),
                Some(&partner),
            ))
            .await,
    );
    assert_eq!(status, 201, "{created}");
    let campaign: u64 = id_of(&created["campaignId"]).parse().unwrap();

    // The sale: every place taken through the issue API.
    let api: Arc<Api> = Arc::new(IssueApi::new(
        store.clone(),
        ledger.clone(),
        SqsReservationQueue::new(sqs.clone(), &queue),
    ));
    let statuses: Vec<u16> = futures_util::stream::iter(0..QUANTITY)
        .map(|i| {
            let (api, partner) = (api.clone(), partner.clone());
            async move {
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
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 202), "every place taken: {statuses:?}");

    // Forged reservations on the same queue: ranks beyond the quantity (INVALID_RANK), and valid
    // ranks for users Redis never admitted, more than the places left (OVER_QUANTITY).
    let forged: Vec<Reservation> = (0..INVALID)
        .map(|i| (format!("f-invalid-{i}"), QUANTITY + 1 + i))
        .chain((0..OVER).map(|i| (format!("f-over-{i}"), 1 + i)))
        .map(|(user, rank)| {
            Reservation::new(
                uuid::Uuid::now_v7(),
                campaign,
                &partner,
                UserId::parse(&user).unwrap(),
                rank,
                Utc::now(),
            )
        })
        .collect();
    for pack in forged.chunks(10) {
        sqs.send_message()
            .queue_url(&queue)
            .message_body(serde_json::to_string(pack).unwrap())
            .send()
            .await
            .expect("the forged reservations are queued");
    }
    let total = (QUANTITY + INVALID + OVER) as usize;

    // One delivery of everything, in chunks of 50, two at a time.
    let mut messages = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while reservations_in(&messages) < total {
        assert!(
            Instant::now() < deadline,
            "only {} of {total} reservations arrived",
            reservations_in(&messages)
        );
        messages.extend(receive(&sqs, &queue, 1).await);
    }
    // A chunk held mid-transaction, deterministically: the pack with f-invalid-0 goes to the middle
    // of the delivery, and another connection holds, uncommitted, a rejection row for that user.
    // That chunk inserts its coupons and its events (one packed outbox row), then waits on the
    // rejection's key, the last row it writes, until the database is killed under it. It holds no
    // counter row while it inserts, so the chunk in flight beside it (the one before or the one
    // after; the writer answers chunks in order, two at a time, and starts no other while the
    // held one waits) may commit before the kill or die with it.
    let blocked_user = "f-invalid-0";
    let at = messages
        .iter()
        .position(|m| m.body().unwrap_or_default().contains(&format!("\"{blocked_user}\"")))
        .expect("the forged pack arrived");
    let pack = messages.remove(at);
    messages.insert(messages.len() / 2, pack);
    // The held chunk's users: the writer records one campaign's reservations in delivery order,
    // 50 to a chunk.
    let delivered: Vec<String> = messages.iter().flat_map(users_in).collect();
    let held_chunk: HashSet<String> = delivered
        .chunks(50)
        .find(|chunk| chunk.iter().any(|u| u == blocked_user))
        .expect("the held chunk")
        .iter()
        .cloned()
        .collect();
    let mut blocker = <sqlx::MySqlConnection as sqlx::Connection>::connect(&db.url())
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut blocker).await.unwrap();
    sqlx::query(
        "INSERT INTO coupon_rejections (campaign_id, partner_id, user_id, request_id, issue_rank, reserved_at, reason) \
         VALUES (?, 'blocker', ?, UUID(), 0, UTC_TIMESTAMP(3), 'INVALID_RANK')",
    )
    .bind(campaign)
    .bind(blocked_user)
    .execute(&mut blocker)
    .await
    .unwrap();
    // Reads what is not committed yet, to see the held chunk's rows.
    let mut dirty = <sqlx::MySqlConnection as sqlx::Connection>::connect(&db.url())
        .await
        .unwrap();
    sqlx::query("SET SESSION TRANSACTION ISOLATION LEVEL READ UNCOMMITTED")
        .execute(&mut dirty)
        .await
        .unwrap();

    let writer = Arc::new(IssueWriter::new(store.clone(), ledger.clone(), 50).with_parallel_chunks(2));
    let batch = {
        let writer = writer.clone();
        let event = sqs_event(&messages);
        tokio::spawn(async move { writer.handle(event).await })
    };
    // The store gives a chunk 5 s: the kill comes as soon as the held chunk has written all it
    // can: its coupons and an event naming each of them. Its rejection rows come next, and cannot
    // pass the held key.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (committed, held_users, held_events) = loop {
        let dirty_users = coupon_holders(&mut dirty, campaign).await;
        let dirty_events = issued_event_users(&mut dirty, &partner).await;
        let committed = coupon_holders(&pool, campaign).await;
        let held_users: BTreeSet<String> = dirty_users
            .into_iter()
            .filter(|u| held_chunk.contains(u) && !committed.contains(u))
            .collect();
        let held_events = dirty_events.iter().filter(|u| held_users.contains(*u)).count();
        if !held_users.is_empty() && held_events == held_users.len() {
            break (committed, held_users, held_events);
        }
        assert!(
            Instant::now() < deadline,
            "the chunk with {blocked_user} was never seen waiting on its rejection's key \
             ({} coupons, {held_events} events uncommitted)",
            held_users.len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    db.kill();
    drop(dirty);
    drop(blocker);
    assert!(!committed.is_empty(), "chunks committed before the held one");
    let outcome = batch.await.unwrap();
    let failed = match &outcome {
        Ok((response, _)) => format!(
            "{} of {} messages to deliver again",
            response.batch_item_failures.len(),
            messages.len()
        ),
        Err(e) => format!("the whole batch failed: {e}"),
    };
    assert!(
        !matches!(&outcome, Ok((response, _)) if response.batch_item_failures.is_empty()),
        "the batch outlived the database: {outcome:?}"
    );
    db.restart().await;

    // At the crash point: the committed chunks' rows, each with its event (those seen committed
    // before the kill, and the chunk beside the held one if it committed in between), and nothing
    // of the held chunk: none of its users holds a coupon, no event names them.
    let at_crash = IssueAccount::of(&pool, &partner, campaign).await;
    let kept = coupon_holders(&pool, campaign).await;
    eprintln!(
        "killed with {} coupons seen committed ({} more committed before the kill) and a chunk of {} coupons \
         and {held_events} of their events uncommitted ({failed}); after the restart: {at_crash:?}",
        committed.len(),
        kept.len().saturating_sub(committed.len()),
        held_users.len(),
    );
    assert!(
        committed.is_subset(&kept),
        "every coupon seen committed survives the crash"
    );
    assert!(at_crash.coupons < i64::from(QUANTITY), "{at_crash:?}");
    at_crash.assert_one_event_per_row("right after the crash");
    let held: Vec<&str> = held_chunk.iter().map(String::as_str).collect();
    let mut holding = sqlx::QueryBuilder::<sqlx::MySql>::new("SELECT COUNT(*) FROM coupons WHERE campaign_id = ");
    holding.push_bind(campaign).push(" AND user_id IN (");
    let mut list = holding.separated(", ");
    for u in &held {
        list.push_bind(*u);
    }
    holding.push(")");
    let still: i64 = holding.build_query_scalar().fetch_one(&pool).await.unwrap();
    let mut naming = sqlx::QueryBuilder::<sqlx::MySql>::new("SELECT COUNT(*) FROM partner_events WHERE partner_id = ");
    naming
        .push_bind(&partner)
        .push(" AND JSON_VALUE(data, '$.userId') IN (");
    let mut list = naming.separated(", ");
    for u in &held {
        list.push_bind(*u);
    }
    naming.push(")");
    let named: i64 = naming.build_query_scalar().fetch_one(&pool).await.unwrap();
    assert_eq!(
        (still, named),
        (0, 0),
        "nothing of the chunk that died uncommitted: no coupon, no event"
    );

    // The messages it could not write come back; the event source delivers them.
    assert_eq!(drain(&sqs, &queue, &writer).await, 0);
    let end = IssueAccount::of(&pool, &partner, campaign).await;
    eprintln!("after redelivery: {end:?}; test took {:.1?}", started.elapsed());
    end.assert_one_event_per_row("after redelivery");
    assert_eq!(end.coupons, i64::from(QUANTITY), "the campaign is full: {end:?}");
    assert_eq!(end.rejections, i64::from(INVALID + OVER), "{end:?}");

    // Every reservation ended as exactly one of a coupon or a rejection, and the reasons are
    // what the forgeries earn: INVALID_RANK for the ranks beyond the quantity, OVER_QUANTITY for
    // the valid ranks past the last place.
    let coupons = coupon_holders(&pool, campaign).await;
    let rejections: HashMap<String, String> =
        sqlx::query_as::<_, (String, String)>("SELECT user_id, reason FROM coupon_rejections WHERE campaign_id = ?")
            .bind(campaign)
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert!(coupons.iter().all(|u| !rejections.contains_key(u)));
    assert_eq!(coupons.len() + rejections.len(), total);
    let reasons: BTreeMap<&str, usize> = rejections.values().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.as_str()).or_default() += 1;
        m
    });
    assert_eq!(
        reasons,
        BTreeMap::from([("INVALID_RANK", INVALID as usize), ("OVER_QUANTITY", OVER as usize)])
    );
    assert!(
        (0..INVALID).all(|i| rejections.get(&format!("f-invalid-{i}")).map(String::as_str) == Some("INVALID_RANK"))
    );
}

// ---------------------------------------------------------------------------------------------
// The flash sale through the runner
// ---------------------------------------------------------------------------------------------

/// A sale of 2,000 coupons through the runner (2,400 users ask), plus forged reservations on its
/// issue queue that the writer rejects (ranks beyond the quantity while the sale runs; valid ranks
/// once it is full). In `partner_events`: exactly one coupon.issued per coupon row and one
/// coupon.rejected per rejection row; the partner's webhook receives exactly those events' ids,
/// each at least once, signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flash_sale_has_one_event_per_coupon_and_per_rejection_all_delivered() {
    const QUANTITY: u32 = 2_000;
    const USERS: u32 = 2_400;
    const INVALID: u32 = 20;
    const OVER: u32 = 10;
    let started = Instant::now();
    let sqs = sqs().await;
    let (issue_queue, issue_dlq) = queue_with_dlq(&sqs, 5).await;
    let (grading_queue, _) = queue_with_dlq(&sqs, 30).await;
    let running = serve(runner_config(&[
        ("ISSUE_QUEUE_URL", issue_queue.clone()),
        ("ISSUE_DLQ_URL", issue_dlq),
        ("GRADING_QUEUE_URL", grading_queue),
        ("WEBHOOK_ALLOW_LOOPBACK", "true".into()),
    ]))
    .await;
    let partner = Partner::new("evfault-sale", &running.base_url).await;
    let receiver = WebhookReceiver::start().await;
    let secret = partner
        .register(&receiver.url, &["coupon.issued", "coupon.rejected"])
        .await;
    let pool = mysql().await;

    let now = Utc::now();
    let (status, created) = partner
        .call(
            reqwest::Method::POST,
            "/v1/campaigns",
            json!({
                "name": "events-sale", "totalQuantity": QUANTITY,
                "issueStartsAt": rfc3339(now - chrono::Duration::minutes(1)),
                "issueEndsAt": rfc3339(now + chrono::Duration::hours(1)),
                "couponExpiresAt": rfc3339(now + chrono::Duration::days(7)),
                "discount": {"type": "AMOUNT", "value": 100}
            }),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let campaign: u64 = id_of(&created["campaignId"]).parse().unwrap();

    let forge = |user: String, rank: u32| {
        let r = Reservation::new(
            uuid::Uuid::now_v7(),
            campaign,
            &partner.id,
            UserId::parse(&user).unwrap(),
            rank,
            Utc::now(),
        );
        serde_json::to_string(&r).unwrap()
    };
    let send = |body: String| {
        let (sqs, queue) = (sqs.clone(), issue_queue.clone());
        async move {
            sqs.send_message()
                .queue_url(queue)
                .message_body(body)
                .send()
                .await
                .expect("a forged reservation is queued");
        }
    };

    // The sale; the INVALID_RANK forgeries go onto the queue while it runs.
    let sale_started = Instant::now();
    let sale = {
        let partner = partner.clone();
        tokio::spawn(async move {
            futures_util::stream::iter(0..USERS)
                .map(|i| {
                    let partner = partner.clone();
                    async move {
                        let (status, body) = partner
                            .call(
                                reqwest::Method::POST,
                                &format!("/v1/campaigns/{campaign}/issues"),
                                json!({"userId": format!("s{i}")}),
                            )
                            .await;
                        assert!(matches!(status, 202 | 410), "{status} {body}");
                        (format!("s{i}"), status)
                    }
                })
                .buffer_unordered(48)
                .collect::<Vec<_>>()
                .await
        })
    };
    for i in 0..INVALID {
        send(forge(format!("f-invalid-{i}"), QUANTITY + 1 + i)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answers = sale.await.unwrap();
    let accepted: HashSet<String> = answers
        .iter()
        .filter(|(_, s)| *s == 202)
        .map(|(u, _)| u.clone())
        .collect();
    eprintln!(
        "{USERS} users asked in {:.1?}: {} accepted, {} sold out",
        sale_started.elapsed(),
        accepted.len(),
        answers.len() - accepted.len()
    );
    assert_eq!(accepted.len(), QUANTITY as usize);

    // Every place written; then forged valid ranks, which find the campaign full.
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .bind(campaign)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    wait_for("every place written", Duration::from_secs(180), async || {
        let (coupons, rejections) = (
            count("SELECT COUNT(*) FROM coupons WHERE campaign_id = ?").await,
            count("SELECT COUNT(*) FROM coupon_rejections WHERE campaign_id = ?").await,
        );
        (
            coupons == i64::from(QUANTITY) && rejections == i64::from(INVALID),
            (coupons, rejections),
        )
    })
    .await;
    for i in 0..OVER {
        send(forge(format!("f-over-{i}"), 1 + i)).await;
    }
    wait_for(
        "the over-quantity forgeries rejected",
        Duration::from_secs(60),
        async || {
            let rejections = count("SELECT COUNT(*) FROM coupon_rejections WHERE campaign_id = ?").await;
            (rejections == i64::from(INVALID + OVER), rejections)
        },
    )
    .await;
    let written_in = sale_started.elapsed();

    // By SQL: one event per row.
    let account = IssueAccount::of(&pool, &partner.id, campaign).await;
    account.assert_one_event_per_row("after the sale");
    assert_eq!(
        (account.coupons, account.rejections),
        (i64::from(QUANTITY), i64::from(INVALID + OVER)),
        "{account:?}"
    );
    let holders = coupon_holders(&pool, campaign).await;
    assert_eq!(holders, accepted, "every 202 holds a coupon, nobody else does");
    let reasons: Vec<(String, String)> =
        sqlx::query_as("SELECT user_id, reason FROM coupon_rejections WHERE campaign_id = ? ORDER BY user_id")
            .bind(campaign)
            .fetch_all(&pool)
            .await
            .unwrap();
    for (user, reason) in &reasons {
        let expected = if user.starts_with("f-invalid-") {
            "INVALID_RANK"
        } else {
            assert!(user.starts_with("f-over-"), "{user}");
            "OVER_QUANTITY"
        };
        assert_eq!(reason, expected, "{user}");
    }

    // Delivered: exactly the recorded ids, each at least once.
    let recorded = recorded_events(&pool, &partner.id).await;
    assert_eq!(recorded.len(), (QUANTITY + INVALID + OVER) as usize);
    receiver
        .wait_for_delivered(recorded.len(), Duration::from_secs(120))
        .await;
    let delivered_in = sale_started.elapsed();
    // A moment for anything beyond them to show up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let delivered: BTreeSet<String> = receiver.delivered_ids().into_keys().collect();
    assert_eq!(
        delivered,
        recorded.keys().cloned().collect::<BTreeSet<_>>(),
        "the receiver got exactly the recorded events"
    );
    assert_eq!(
        receiver.seen_ids(),
        delivered,
        "nothing arrived that was not delivered in the end"
    );
    let events = receiver.delivered_events();
    let issued_coupons: BTreeSet<String> = events
        .iter()
        .filter(|e| e["type"] == "coupon.issued")
        .map(|e| id_of(&e["data"]["couponId"]))
        .collect();
    let coupon_ids: BTreeSet<String> = sqlx::query_scalar::<_, u64>("SELECT id FROM coupons WHERE campaign_id = ?")
        .bind(campaign)
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .map(|id| id.to_string())
        .collect();
    assert_eq!(issued_coupons, coupon_ids, "one delivered coupon.issued per coupon");
    let rejected_users: BTreeSet<String> = events
        .iter()
        .filter(|e| e["type"] == "coupon.rejected")
        .map(|e| e["data"]["userId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        rejected_users,
        reasons.iter().map(|(u, _)| u.clone()).collect::<BTreeSet<_>>(),
        "one delivered coupon.rejected per rejection row"
    );
    let duplicates = assert_duplicates_identical(&receiver);
    assert_deliveries_signed(&receiver, &secret, &partner.id);
    eprintln!(
        "{} events ({} coupons, {} rejections): written {written_in:.1?}, delivered {delivered_in:.1?} after the sale \
         began, in {} POSTs ({duplicates} repeated arrivals); test took {:.1?}",
        recorded.len(),
        coupon_ids.len(),
        reasons.len(),
        receiver.deliveries().len(),
        started.elapsed()
    );
    let _ = running.stop().await;
}

/// A chunk recorded twice (a redelivery whose first commit's answer was lost) packs its events
/// twice: the sequencer expands each packed row in its place among the other rows, its events
/// in their order and consecutive, and skips the repeated ones (`once_key`), leaving gaps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_packed_chunk_expands_in_place_with_each_event_once() {
    use fcfs_shared::adapters::mysql::MySqlOutbox;
    use fcfs_shared::events::domain::{EventType, NewEvent};
    use fcfs_shared::events::ports::Outbox;

    let pool = mysql().await;
    let (chunked, beside) = (unique("pack-chunk"), unique("pack-beside"));
    let event = |partner: &str, n: u32| NewEvent {
        partner_id: partner.to_owned(),
        kind: EventType::CouponIssued,
        subject: n.to_string(),
        once_key: Some(format!("test.packed:{partner}:{n}")),
        occurred_at: Utc::now(),
        data: json!({ "n": n }),
    };
    let chunk: Vec<NewEvent> = (0..40).map(|n| event(&chunked, n)).collect();
    let mut again = chunk.clone();
    again.push(event(&chunked, 40));
    // In commit order: the chunk, a single event of another partner, the chunk again with one
    // more event, another single.
    for events in [chunk, vec![event(&beside, 0)], again, vec![event(&beside, 1)]] {
        let mut tx = pool.begin().await.unwrap();
        MySqlOutbox.append(&mut tx, &events).await.unwrap();
        tx.commit().await.unwrap();
    }
    sequence_events(&pool).await;

    let rows: Vec<(String, String, String, Option<u64>, String)> = sqlx::query_as(
        "SELECT partner_id, type, subject, sequence, data FROM partner_events \
         WHERE partner_id IN (?, ?) ORDER BY sequence",
    )
    .bind(&chunked)
    .bind(&beside)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        rows.iter()
            .all(|(_, kind, _, sequence, _)| kind == "coupon.issued" && sequence.is_some()),
        "only sequenced events of their own type are left: {rows:?}"
    );
    let order: Vec<String> = rows.iter().map(|(p, _, s, _, _)| format!("{}{s}", &p[..6])).collect();
    let expected: Vec<String> = (0..40)
        .map(|n| format!("pack-c{n}"))
        .chain(["pack-b0".to_owned(), "pack-c40".to_owned(), "pack-b1".to_owned()])
        .collect();
    assert_eq!(order, expected, "each event once, in the rows' commit order");
    for (_, _, subject, _, data) in &rows {
        assert_eq!(serde_json::from_str::<Value>(data).unwrap()["n"].to_string(), *subject);
    }
    let sequences: Vec<u64> = rows.iter().map(|r| r.3.unwrap()).collect();
    assert!(
        sequences[..40].windows(2).all(|w| w[1] == w[0] + 1),
        "a packed row's events are consecutive: {sequences:?}"
    );
    // The repeat's 40 events were given sequences too, and skipped: its one new event comes 41
    // after the single before it, unless another test's events were sequenced between.
    assert!(sequences[41] > sequences[40] + 40, "{sequences:?}");
}
