//! Partner events (issue 28) through the runner, over HTTP only, against the contract: every event
//! type produced by its real operation and delivered to a local receiver, each delivery's signature
//! checked by an independent verifier (`tests/support/verify_webhook.py`, Python's stdlib, not the
//! project's signing code), the pull API answering the same envelopes by sequence; SSRF refusals;
//! an endpoint answering 500 for a while then 200 (everything delivered, duplicates only with the
//! same id); a hanging endpoint that does not slow another partner's deliveries; and the webhook
//! routes' lifecycle (GET, PUT again, rotate-secret, DELETE).
//!
//! Each test starts its own runner (which runs the relay) with private queues, and uses partners of
//! its own. The runner gets `WEBHOOK_ALLOW_LOOPBACK=true` (the receiver is on 127.0.0.1 over plain
//! http) except where the test says otherwise; the retry and deadline knobs
//! (`WEBHOOK_MAX_BACKOFF_SECONDS`, `WEBHOOK_TIMEOUT_MS`) are set where a test needs them short.
//! Nothing here uses `fcfs_shared::events`: the tests hold the implementation to the contract.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use integration_tests::webhook_receiver::{Mode, WebhookReceiver, verify_with_python};
use integration_tests::{api_key, mysql, queue_with_dlq, runner_config, serve, sqs, unique};
use serde_json::{Value, json};

const ALL_TYPES: [&str; 11] = [
    "coupon.issued",
    "coupon.rejected",
    "coupon.used",
    "coupon.use_cancelled",
    "coupon.expired",
    "points.earned",
    "points.used",
    "points.use_cancelled",
    "points.expired",
    "points.transferred",
    "grading.run_completed",
];

/// Deliveries happen "within a few seconds" of the commit; these bounds leave room for a loaded
/// 2-core machine, and every wait has one.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(60);

/// A runner of the test's own: private issue and grading queues, `env` over the defaults.
struct Stack {
    running: local_runner::Running,
    env: Vec<(String, String)>,
    issue_queue: String,
    http: reqwest::Client,
}

impl Stack {
    async fn start(extra: &[(&str, &str)]) -> Self {
        let sqs = sqs().await;
        let (issue_queue, _) = queue_with_dlq(&sqs, 5).await;
        let (grading_queue, _) = queue_with_dlq(&sqs, 30).await;
        let mut env: Vec<(String, String)> = vec![
            ("ISSUE_QUEUE_URL".into(), issue_queue.clone()),
            ("GRADING_QUEUE_URL".into(), grading_queue),
            ("WEBHOOK_ALLOW_LOOPBACK".into(), "true".into()),
            // The tests of this file run at once, each with a runner whose relay delivers any
            // partner's events (one database): one backoff cap for all, so a relay of another
            // test never parks this test's failing partner for minutes.
            ("WEBHOOK_MAX_BACKOFF_SECONDS".into(), "2".into()),
        ];
        for (name, value) in extra {
            env.retain(|(n, _)| n != name);
            env.push(((*name).to_owned(), (*value).to_owned()));
        }
        let running = serve(config(&env)).await;
        Self {
            running,
            env,
            issue_queue,
            http: reqwest::Client::new(),
        }
    }

    async fn partner(&self, prefix: &str) -> Partner {
        let id = unique(prefix);
        Partner {
            key: api_key(&id).await,
            id,
            base: self.running.base_url.clone(),
            http: self.http.clone(),
        }
    }

    /// Runs one of the template's scheduled functions once now, as `fcfs-runner --invoke` does,
    /// with this stack's environment.
    async fn invoke(&self, function: &str) -> Value {
        let app = local_runner::LocalApp::load(&config(&self.env))
            .await
            .expect("the runner loads");
        tokio::time::timeout(Duration::from_secs(120), app.invoke_schedule(function))
            .await
            .unwrap_or_else(|_| panic!("{function} did not return within 120 s"))
            .unwrap_or_else(|e| panic!("{function}: {e}"))
    }
}

fn config(env: &[(String, String)]) -> local_runner::RunnerConfig {
    let pairs: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    runner_config(&pairs)
}

/// A partner with its key, talking to the runner over HTTP.
struct Partner {
    id: String,
    key: String,
    base: String,
    http: reqwest::Client,
}

impl Partner {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>, idem: Option<&str>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("X-API-KEY", &self.key)
            .timeout(Duration::from_secs(30));
        if let Some(key) = idem {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the runner answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(if text.is_empty() {
                Value::Null
            } else {
                Value::String(text)
            }),
        )
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body), None).await
    }

    /// A points write, with an Idempotency-Key of its own.
    async fn points(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body), Some(&unique("idem")))
            .await
    }

    async fn register(&self, url: &str, events: &[&str]) -> (u16, Value) {
        self.call(
            reqwest::Method::PUT,
            "/v1/webhooks",
            Some(json!({"url": url, "events": events})),
            None,
        )
        .await
    }

    /// A new registration: its secret.
    async fn registered(&self, url: &str, events: &[&str]) -> String {
        let (status, body) = self.register(url, events).await;
        assert_eq!(status, 201, "{body}");
        let secret = body["secret"]
            .as_str()
            .unwrap_or_else(|| panic!("no secret: {body}"))
            .to_owned();
        assert_secret(&secret);
        secret
    }

    async fn earn(&self, user: &str, amount: u64) -> Value {
        let (status, body) = self
            .points(
                &format!("/v1/users/{user}/points/earn"),
                json!({"amount": amount, "reason": "events test"}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }

    /// Every event of the pull API after `after`, page by page (`limit` each): the envelopes, and
    /// the `next` of every page.
    async fn pull_all(&self, after: u64, limit: u32) -> Vec<Value> {
        let mut after = after;
        let mut all = Vec::new();
        for _ in 0..10_000 {
            let (status, page) = self.get(&format!("/v1/events?after={after}&limit={limit}")).await;
            assert_eq!(status, 200, "{page}");
            let events = page["events"].as_array().unwrap_or_else(|| panic!("{page}")).clone();
            let next = page["next"].as_u64().unwrap_or_else(|| panic!("no next: {page}"));
            assert!(events.len() <= limit as usize, "{page}");
            match events.last() {
                None => {
                    assert_eq!(next, after, "an empty page's next is `after`: {page}");
                    return all;
                }
                Some(last) => {
                    assert_eq!(
                        Some(next),
                        last["sequence"].as_u64(),
                        "next is the last sequence: {page}"
                    );
                    assert!(next > after, "{page}");
                }
            }
            all.extend(events);
            after = next;
        }
        panic!("the pull API never ran out of pages");
    }
}

fn assert_secret(secret: &str) {
    let rest = secret.strip_prefix("whsec_").unwrap_or_else(|| panic!("{secret}"));
    assert_eq!(rest.len(), 43, "32 bytes of base64url without padding: {secret}");
    assert!(
        rest.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{secret}"
    );
}

/// An id as the contract's `data` carries it (a JSON integer; a decimal string is read too, so a
/// change of that representation fails the OpenAPI document, not these tests).
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

/// The envelope's own rules, whatever the type.
fn assert_envelope(event: &Value, partner: &str) {
    let id = event["id"].as_str().unwrap_or_else(|| panic!("{event}"));
    assert!(
        id.strip_prefix("evt_")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
        "{event}"
    );
    assert!(
        ALL_TYPES.contains(&event["type"].as_str().unwrap_or_default()),
        "{event}"
    );
    assert_eq!(event["partnerId"], json!(partner), "{event}");
    assert!(event["sequence"].as_u64().is_some_and(|s| s > 0), "{event}");
    let at = event["occurredAt"].as_str().unwrap_or_default();
    assert!(
        chrono::DateTime::parse_from_rfc3339(at).is_ok() && at.ends_with('Z') && at.len() == 24,
        "occurredAt in UTC with millis: {event}"
    );
    assert!(event["data"].is_object(), "{event}");
    let keys: BTreeSet<&str> = event.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["id", "type", "partnerId", "occurredAt", "sequence", "data"]),
        "{event}"
    );
}

/// Every delivery so far: a POST of JSON `{"events":[…]}` (1..100, in sequence) whose signature
/// the independent verifier accepts with `secret`.
fn assert_deliveries_signed(receiver: &WebhookReceiver, secret: &str, partner: &str) {
    let deliveries = receiver.deliveries();
    assert!(!deliveries.is_empty());
    for delivery in &deliveries {
        assert!(
            delivery
                .header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "{:?}",
            delivery.headers
        );
        let signature = delivery
            .signature()
            .unwrap_or_else(|| panic!("no X-FCFS-Signature: {:?}", delivery.headers));
        assert!(signature.starts_with("t="), "{signature}");
        assert!(
            verify_with_python(secret, delivery),
            "the independent verifier refuses {signature} on {}",
            String::from_utf8_lossy(&delivery.body)
        );
        let events = delivery.events();
        assert!(
            (1..=100).contains(&events.len()),
            "{}",
            String::from_utf8_lossy(&delivery.body)
        );
        let body = delivery.json();
        let members: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(members, ["events"]);
        let sequences: Vec<u64> = events.iter().map(|e| e["sequence"].as_u64().unwrap()).collect();
        assert!(sequences.windows(2).all(|w| w[0] < w[1]), "in sequence: {sequences:?}");
        for event in &events {
            assert_envelope(event, partner);
        }
    }
}

/// Two arrivals of one id carry the same envelope.
fn assert_duplicates_identical(receiver: &WebhookReceiver) -> usize {
    let mut by_id: HashMap<String, Value> = HashMap::new();
    let mut duplicates = 0;
    for (event, _, _) in receiver.events() {
        let id = event["id"].as_str().unwrap().to_owned();
        match by_id.get(&id) {
            Some(first) => {
                duplicates += 1;
                assert_eq!(first, &event, "a duplicate differs from the first arrival of {id}");
            }
            None => {
                by_id.insert(id, event);
            }
        }
    }
    duplicates
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

fn one_of<'a>(events: &'a [Value], kind: &str, pred: impl Fn(&Value) -> bool) -> &'a Value {
    let found: Vec<&Value> = of_type(events, kind).into_iter().filter(|e| pred(&e["data"])).collect();
    assert_eq!(found.len(), 1, "one {kind} expected: {found:#?}");
    found[0]
}

fn data_keys(event: &Value) -> BTreeSet<String> {
    event["data"].as_object().unwrap().keys().cloned().collect()
}

fn keys(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

async fn wait_issued(partner: &Partner, campaign: &str, user: &str) -> String {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = partner.get(&format!("/v1/campaigns/{campaign}/issues/{user}")).await;
        assert_eq!(status, 200, "{body}");
        match body["status"].as_str() {
            Some("ISSUED") => return id_of(&body["couponId"]),
            Some("PENDING") | Some("NONE") => {}
            _ => panic!("{user}: {body}"),
        }
        assert!(Instant::now() < until, "{user} not issued within 60 s: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_type_is_delivered_signed_and_pulled_by_sequence() {
    let stack = Stack::start(&[]).await;
    let partner = stack.partner("events-all").await;
    let receiver = WebhookReceiver::start().await;
    let secret = partner.registered(&receiver.url, &ALL_TYPES).await;

    // coupon.issued, then .used, .use_cancelled and .expired of the same coupon: a flash campaign
    // whose coupons expire 25 s from now.
    let now = Utc::now();
    let expires = now + chrono::Duration::seconds(25);
    let (status, campaign) = partner
        .post(
            "/v1/campaigns",
            json!({
                "name": "events", "totalQuantity": 10,
                "issueStartsAt": rfc3339(now - chrono::Duration::minutes(1)), "issueEndsAt": rfc3339(expires),
                "couponExpiresAt": rfc3339(expires), "discount": {"type": "AMOUNT", "value": 500}
            }),
        )
        .await;
    assert_eq!(status, 201, "{campaign}");
    let campaign_id = id_of(&campaign["campaignId"]);
    let (status, accepted) = partner
        .post(
            &format!("/v1/campaigns/{campaign_id}/issues"),
            json!({"userId": "u-issued"}),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let coupon_id = wait_issued(&partner, &campaign_id, "u-issued").await;

    // coupon.rejected: a reservation no issue API hands out (a rank beyond the quantity), put on the
    // runner's issue queue; the writer keeps it as an INVALID_RANK rejection.
    let forged_request = uuid::Uuid::now_v7();
    let forged = fcfs_shared::issuance::domain::Reservation::new(
        forged_request,
        campaign_id.parse().unwrap(),
        &partner.id,
        fcfs_shared::kernel::UserId::parse("u-forged").unwrap(),
        1001,
        Utc::now(),
    );
    sqs()
        .await
        .send_message()
        .queue_url(&stack.issue_queue)
        .message_body(serde_json::to_string(&forged).unwrap())
        .send()
        .await
        .expect("the forged reservation is queued");

    // coupon.used and coupon.use_cancelled.
    let (status, used) = partner
        .post(
            &format!("/v1/coupons/{coupon_id}/use"),
            json!({"userId": "u-issued", "orderId": "order-c1", "orderAmount": 30000}),
        )
        .await;
    assert_eq!(status, 200, "{used}");
    let (status, cancelled) = partner
        .post(
            &format!("/v1/coupons/{coupon_id}/cancel-use"),
            json!({"userId": "u-issued", "orderId": "order-c1"}),
        )
        .await;
    assert_eq!(status, 200, "{cancelled}");

    // points.earned, .used, .use_cancelled, .transferred.
    let earned = partner.earn("u-p1", 1000).await;
    let (status, points_used) = partner
        .points(
            "/v1/users/u-p1/points/use",
            json!({"amount": 300, "orderId": "order-p1"}),
        )
        .await;
    assert_eq!(status, 201, "{points_used}");
    let use_tx = id_of(&points_used["transactionId"]);
    let (status, points_cancelled) = partner
        .points(&format!("/v1/points/transactions/{use_tx}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200, "{points_cancelled}");
    let (status, transferred) = partner
        .points(
            "/v1/points/transfers",
            json!({"fromUserId": "u-p1", "toUserId": "u-p2", "amount": 100}),
        )
        .await;
    assert_eq!(status, 201, "{transferred}");

    // points.expired: a lot of 50 whose time is moved into the past, swept by points-expiry.
    partner.earn("u-p3", 50).await;
    let pool = mysql().await;
    let lapsed = sqlx::query(
        "UPDATE point_lots l JOIN point_wallets w ON w.id = l.wallet_id \
         SET l.expires_at = UTC_TIMESTAMP(3) - INTERVAL 1 SECOND WHERE w.partner_id = ? AND w.user_id = 'u-p3'",
    )
    .bind(&partner.id)
    .execute(&pool)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(lapsed, 1);
    let lot_id: u64 = sqlx::query_scalar(
        "SELECT l.id FROM point_lots l JOIN point_wallets w ON w.id = l.wallet_id WHERE w.partner_id = ? AND w.user_id = 'u-p3'",
    )
    .bind(&partner.id)
    .fetch_one(&pool)
    .await
    .unwrap();
    eprintln!("points-expiry: {}", stack.invoke("PointsExpiryFunction").await);

    // grading.run_completed: two users' paid orders of a past month, graded with one tier.
    let (status, body) = partner
        .call(
            reqwest::Method::PUT,
            "/v1/grading/policy",
            Some(json!({"tiers": [{"grade": "BASIC", "minAmount": 0, "points": 10}]})),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = partner
        .post(
            "/v1/orders",
            json!({"orders": [
                {"orderId": "g-1", "userId": "u-g1", "amount": 1000, "status": "PAID", "orderedAt": "2026-10-10T10:00:00Z"},
                {"orderId": "g-2", "userId": "u-g2", "amount": 2000, "status": "PAID", "orderedAt": "2026-10-11T10:00:00Z"}
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, run) = partner.post("/v1/grading/runs", json!({"month": "2026-10"})).await;
    assert_eq!(status, 202, "{run}");
    let run_id = id_of(&run["runId"]);

    // coupon.expired: once the coupon's time has passed, the sweep.
    let wait = (expires - Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(1);
    tokio::time::sleep(wait).await;
    eprintln!("coupon-expiry: {}", stack.invoke("CouponExpiryFunction").await);

    let delivered = receiver
        .wait_for_events("every type", Duration::from_secs(180), |events| {
            ALL_TYPES.iter().all(|t| events.iter().any(|e| e["type"] == *t))
        })
        .await;
    assert_deliveries_signed(&receiver, &secret, &partner.id);
    let duplicates = assert_duplicates_identical(&receiver);
    eprintln!(
        "{} events in {} deliveries ({duplicates} duplicates)",
        delivered.len(),
        receiver.deliveries().len()
    );

    // Each type's data, as the contract lists it.
    let issued = one_of(&delivered, "coupon.issued", |d| id_of(&d["couponId"]) == coupon_id);
    assert_eq!(
        data_keys(issued),
        keys(&["couponId", "campaignId", "userId", "issuedAt", "expiresAt"])
    );
    assert_eq!(
        (id_of(&issued["data"]["campaignId"]), &issued["data"]["userId"]),
        (campaign_id.clone(), &json!("u-issued"))
    );
    assert_eq!(issued["data"]["expiresAt"], json!(rfc3339(expires)), "{issued}");

    let rejected = one_of(&delivered, "coupon.rejected", |d| d["userId"] == "u-forged");
    assert_eq!(
        data_keys(rejected),
        keys(&["campaignId", "userId", "requestId", "reason"])
    );
    assert_eq!(
        (&rejected["data"]["reason"], &rejected["data"]["requestId"]),
        (&json!("INVALID_RANK"), &json!(forged_request.hyphenated().to_string())),
        "{rejected}"
    );

    let coupon_used = one_of(&delivered, "coupon.used", |d| id_of(&d["couponId"]) == coupon_id);
    assert_eq!(
        data_keys(coupon_used),
        keys(&[
            "couponId",
            "campaignId",
            "userId",
            "orderId",
            "orderAmount",
            "discountAmount",
            "usedAt"
        ])
    );
    assert_eq!(
        (
            &coupon_used["data"]["orderId"],
            &coupon_used["data"]["orderAmount"],
            &coupon_used["data"]["discountAmount"]
        ),
        (&json!("order-c1"), &json!(30000), &json!(500)),
        "{coupon_used}"
    );
    let coupon_cancelled = one_of(&delivered, "coupon.use_cancelled", |d| {
        id_of(&d["couponId"]) == coupon_id
    });
    assert_eq!(
        data_keys(coupon_cancelled),
        keys(&["couponId", "campaignId", "userId", "orderId", "cancelledAt"])
    );
    assert_eq!(coupon_cancelled["data"]["orderId"], "order-c1");
    let coupon_expired = one_of(&delivered, "coupon.expired", |d| id_of(&d["couponId"]) == coupon_id);
    assert_eq!(
        data_keys(coupon_expired),
        keys(&["couponId", "campaignId", "userId", "expiresAt"])
    );
    // One subject's events keep their order.
    let seq = |e: &Value| e["sequence"].as_u64().unwrap();
    assert!(
        seq(issued) < seq(coupon_used)
            && seq(coupon_used) < seq(coupon_cancelled)
            && seq(coupon_cancelled) < seq(coupon_expired),
        "the coupon's events in order: {issued} {coupon_used} {coupon_cancelled} {coupon_expired}"
    );

    let earn_tx = id_of(&earned["transactionId"]);
    let points_earned = one_of(&delivered, "points.earned", |d| id_of(&d["transactionId"]) == earn_tx);
    assert!(
        keys(&["userId", "transactionId", "amount", "balanceAfter"]).is_subset(&data_keys(points_earned))
            && data_keys(points_earned).is_subset(&keys(&[
                "userId",
                "transactionId",
                "amount",
                "balanceAfter",
                "reason"
            ])),
        "{points_earned}"
    );
    assert_eq!(
        (
            &points_earned["data"]["userId"],
            &points_earned["data"]["amount"],
            &points_earned["data"]["balanceAfter"]
        ),
        (&json!("u-p1"), &json!(1000), &json!(1000))
    );
    let p_used = one_of(&delivered, "points.used", |d| id_of(&d["transactionId"]) == use_tx);
    assert_eq!(
        (
            &p_used["data"]["amount"],
            &p_used["data"]["balanceAfter"],
            &p_used["data"]["orderId"]
        ),
        (&json!(300), &json!(700), &json!("order-p1"))
    );
    let cancel_tx = id_of(&points_cancelled["transactionId"]);
    let p_cancelled = one_of(&delivered, "points.use_cancelled", |d| {
        id_of(&d["transactionId"]) == cancel_tx
    });
    assert_eq!(
        data_keys(p_cancelled),
        keys(&[
            "userId",
            "transactionId",
            "cancelledTransactionId",
            "amount",
            "balanceAfter"
        ])
    );
    assert_eq!(id_of(&p_cancelled["data"]["cancelledTransactionId"]), use_tx);
    assert_eq!(
        (&p_cancelled["data"]["amount"], &p_cancelled["data"]["balanceAfter"]),
        (&json!(300), &json!(1000))
    );
    let transfer_tx = id_of(&transferred["transactionId"]);
    let p_transferred = one_of(&delivered, "points.transferred", |d| {
        id_of(&d["transactionId"]) == transfer_tx
    });
    assert_eq!(
        data_keys(p_transferred),
        keys(&["fromUserId", "toUserId", "transactionId", "toTransactionId", "amount"])
    );
    assert_eq!(
        id_of(&p_transferred["data"]["toTransactionId"]),
        id_of(&transferred["toTransactionId"])
    );
    assert_eq!(
        (
            &p_transferred["data"]["fromUserId"],
            &p_transferred["data"]["toUserId"],
            &p_transferred["data"]["amount"]
        ),
        (&json!("u-p1"), &json!("u-p2"), &json!(100))
    );
    let p_expired = one_of(&delivered, "points.expired", |d| d["userId"] == "u-p3");
    assert_eq!(
        data_keys(p_expired),
        keys(&["userId", "amount", "balanceAfter", "lotId"])
    );
    assert_eq!(
        (
            &p_expired["data"]["amount"],
            &p_expired["data"]["balanceAfter"],
            id_of(&p_expired["data"]["lotId"])
        ),
        (&json!(50), &json!(0), lot_id.to_string())
    );
    let completed = one_of(&delivered, "grading.run_completed", |d| id_of(&d["runId"]) == run_id);
    assert_eq!(data_keys(completed), keys(&["runId", "month", "users"]));
    assert_eq!(
        (&completed["data"]["month"], &completed["data"]["users"]),
        (&json!("2026-10"), &json!(2))
    );
    // The grading rewards are points.earned events too (one per user).
    let rewards = of_type(&delivered, "points.earned")
        .into_iter()
        .filter(|e| e["data"]["userId"] == "u-g1" || e["data"]["userId"] == "u-g2")
        .count();
    assert_eq!(rewards, 2);

    // The pull API answers the same envelopes by sequence (pages of 3 and of 1,000 alike).
    let pulled = partner.pull_all(0, 3).await;
    assert_eq!(pulled, partner.pull_all(0, 1000).await);
    let sequences: Vec<u64> = pulled.iter().map(seq).collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?}");
    let pulled_by_id: BTreeMap<String, &Value> = pulled
        .iter()
        .map(|e| (e["id"].as_str().unwrap().to_owned(), e))
        .collect();
    assert_eq!(pulled_by_id.len(), pulled.len(), "ids are unique");
    for event in &delivered {
        assert_eq!(
            Some(&event),
            pulled_by_id.get(event["id"].as_str().unwrap()),
            "delivered as pulled"
        );
    }
    // Every type was registered, so every event pulled is delivered (once the relay caught up).
    receiver.wait_for_delivered(pulled.len(), DELIVERY_DEADLINE).await;
    let delivered_ids: BTreeSet<String> = receiver.delivered_ids().into_keys().collect();
    assert_eq!(delivered_ids, pulled_by_id.keys().cloned().collect::<BTreeSet<_>>());
    // `after` skips what came before it.
    let middle = sequences[sequences.len() / 2];
    assert_eq!(
        partner.pull_all(middle, 1000).await,
        pulled.iter().filter(|e| seq(e) > middle).cloned().collect::<Vec<_>>()
    );
    let _ = stack.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_urls_to_non_public_addresses_are_refused() {
    let receiver = WebhookReceiver::start().await;
    let port = receiver.port;

    // As on AWS: no loopback, https only. Its relay stays off: it would take the leases of the
    // other tests' partners (the same database) and find their loopback receivers refused.
    let aws = Stack::start(&[("WEBHOOK_ALLOW_LOOPBACK", "false"), ("FCFS_SCHEDULE_START_NOW", "")]).await;
    let partner = aws.partner("events-ssrf").await;
    let refused = [
        "http://169.254.169.254/".to_owned(),
        "http://10.0.0.1/".to_owned(),
        format!("http://localhost:{port}/hooks"),
        // https, so the address alone is what is refused.
        "https://169.254.169.254/latest/meta-data/".to_owned(),
        "https://10.0.0.1/".to_owned(),
        "https://192.168.1.1/".to_owned(),
        "https://172.16.0.1/".to_owned(),
        "https://100.64.0.1/".to_owned(),
        "https://0.0.0.0/".to_owned(),
        "https://224.0.0.1/".to_owned(),
        "https://192.0.2.1/".to_owned(),
        "https://198.18.0.1/".to_owned(),
        "https://[::1]/".to_owned(),
        "https://[fe80::1]/".to_owned(),
        "https://[fd00::1]/".to_owned(),
        "https://[::ffff:127.0.0.1]/".to_owned(),
        format!("https://127.0.0.1:{port}/hooks"),
        // A name that resolves to 127.0.0.1.
        format!("https://localhost:{port}/hooks"),
        // A name that does not resolve (.invalid never does, RFC 6761).
        "https://no-such-host.invalid/".to_owned(),
    ];
    for url in &refused {
        let (status, body) = partner.register(url, &["coupon.issued"]).await;
        assert_eq!(
            (status, body["error"].as_str(), body["field"].as_str()),
            (422, Some("WEBHOOK_URL_REFUSED"), Some("url")),
            "{url}: {body}"
        );
    }
    let (status, body) = partner.get("/v1/webhooks").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("NOT_FOUND")),
        "nothing stored: {body}"
    );

    // Malformed bodies are 400 naming the field.
    let long = format!("https://example.com/{}", "a".repeat(2048));
    let bad: Vec<(Value, &str)> = vec![
        (json!({"url": "ftp://example.com/", "events": ["coupon.issued"]}), "url"),
        (json!({"url": "not a url", "events": ["coupon.issued"]}), "url"),
        (json!({"url": long, "events": ["coupon.issued"]}), "url"),
        (json!({"events": ["coupon.issued"]}), "url"),
        (json!({"url": "https://example.com/"}), "events"),
        (json!({"url": "https://example.com/", "events": []}), "events"),
        (
            json!({"url": "https://example.com/", "events": ["coupon.nope"]}),
            "events",
        ),
        (
            json!({"url": "https://example.com/", "events": ["coupon.issued", "coupon.issued"]}),
            "events",
        ),
        (
            json!({"url": "https://example.com/", "events": ["coupon.issued"], "extra": 1}),
            "extra",
        ),
    ];
    for (body, field) in bad {
        let (status, answer) = partner
            .call(reqwest::Method::PUT, "/v1/webhooks", Some(body.clone()), None)
            .await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some("INVALID_REQUEST")),
            "{body}: {answer}"
        );
        assert!(
            answer["field"].as_str().is_some_and(|f| f.starts_with(field)),
            "{body}: field {field} expected: {answer}"
        );
    }
    let _ = aws.running.stop().await;

    // The local setting allows loopback over plain http, and nothing else that is not public.
    let local = Stack::start(&[("WEBHOOK_ALLOW_LOOPBACK", "true")]).await;
    let partner = local.partner("events-ssrf-local").await;
    for url in [
        "http://169.254.169.254/",
        "http://10.0.0.1/",
        "https://192.168.1.1/",
        "http://[fe80::1]/",
    ] {
        let (status, body) = partner.register(url, &["coupon.issued"]).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (422, Some("WEBHOOK_URL_REFUSED")),
            "{url}: {body}"
        );
    }
    partner
        .registered(&format!("http://localhost:{port}/hooks"), &["coupon.issued"])
        .await;
    let _ = local.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failing_for_a_while_gets_every_event_once_it_answers() {
    // Short backoff, so that 20 s of failures are many attempts.
    let stack = Stack::start(&[("WEBHOOK_MAX_BACKOFF_SECONDS", "2"), ("WEBHOOK_TIMEOUT_MS", "2000")]).await;
    let partner = stack.partner("events-500").await;
    let receiver = WebhookReceiver::start_in(Mode::Fail).await;
    let secret = partner.registered(&receiver.url, &["points.earned"]).await;

    let mut transactions = BTreeSet::new();
    for i in 0..5 {
        transactions.insert(id_of(&partner.earn(&format!("u-{i}"), 10 + i).await["transactionId"]));
    }
    receiver.wait_for_posts(3, Duration::from_secs(30)).await;
    let (status, failing) = partner.get("/v1/webhooks").await;
    assert_eq!(status, 200, "{failing}");
    assert_eq!(failing["status"], "ACTIVE", "{failing}");
    assert!(
        failing["lastError"].as_str().is_some_and(|e| !e.is_empty()),
        "lastError while failing: {failing}"
    );
    assert!(failing["failingSince"].is_string(), "{failing}");
    assert!(failing.get("secret").is_none(), "{failing}");
    let through_while_failing = failing["deliveredThrough"].as_u64().unwrap();

    // More events while it fails; it keeps failing for 20 s in all.
    for i in 5..10 {
        transactions.insert(id_of(&partner.earn(&format!("u-{i}"), 10 + i).await["transactionId"]));
    }
    tokio::time::sleep(Duration::from_secs(15)).await;
    let posts_while_failing = receiver.deliveries().len();
    assert!(receiver.delivered_ids().is_empty());
    receiver.set_mode(Mode::Ok);

    let delivered = receiver.wait_for_delivered(10, DELIVERY_DEADLINE).await;
    assert_eq!(delivered.len(), 10, "{delivered:?}");
    let events = receiver.delivered_events();
    let got: BTreeSet<String> = events.iter().map(|e| id_of(&e["data"]["transactionId"])).collect();
    assert_eq!(got, transactions, "every committed earn, once each by id");
    assert_deliveries_signed(&receiver, &secret, &partner.id);
    let duplicates = assert_duplicates_identical(&receiver);
    eprintln!(
        "{posts_while_failing} POSTs answered 500, then {} in all; {duplicates} duplicate arrivals, all with the same id and body",
        receiver.deliveries().len()
    );
    assert!(duplicates > 0, "the failed POSTs' events arrived again");

    // Recovered: no error, delivered through the last event.
    let last = events.iter().map(|e| e["sequence"].as_u64().unwrap()).max().unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    let recovered = loop {
        let (status, state) = partner.get("/v1/webhooks").await;
        assert_eq!(status, 200, "{state}");
        if state["deliveredThrough"].as_u64() >= Some(last) {
            break state;
        }
        assert!(Instant::now() < until, "deliveredThrough never reached {last}: {state}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(through_while_failing < last);
    assert_eq!(
        (&recovered["lastError"], &recovered["failingSince"]),
        (&Value::Null, &Value::Null),
        "{recovered}"
    );
    let _ = stack.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_endpoint_does_not_slow_another_partners_deliveries() {
    // Each POST to the hanging endpoint waits out its whole deadline: 10 s.
    let timeout_ms: u64 = 10_000;
    let stack = Stack::start(&[("WEBHOOK_TIMEOUT_MS", "10000"), ("WEBHOOK_MAX_BACKOFF_SECONDS", "2")]).await;
    let a = stack.partner("events-hang-a").await;
    let b = stack.partner("events-hang-b").await;
    let hanging = WebhookReceiver::start_in(Mode::Hang).await;
    let prompt = WebhookReceiver::start().await;
    a.registered(&hanging.url, &["points.earned"]).await;
    let secret_b = b.registered(&prompt.url, &["points.earned"]).await;

    // A's first event reaches its endpoint, which hangs.
    a.earn("a-0", 1).await;
    hanging.wait_for_posts(1, Duration::from_secs(30)).await;
    let a_hung_at = Instant::now();

    // B's events, committed one every 500 ms over 12 s (longer than one of A's deadlines), and more
    // of A's in between.
    let mut committed: BTreeMap<String, Instant> = BTreeMap::new();
    for i in 0..24 {
        let receipt = b.earn(&format!("b-{i}"), 1 + i).await;
        committed.insert(id_of(&receipt["transactionId"]), Instant::now());
        if i % 6 == 0 {
            a.earn(&format!("a-{}", i + 1), 1).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    prompt.wait_for_delivered(committed.len(), DELIVERY_DEADLINE).await;
    let mut delays: Vec<Duration> = Vec::new();
    for event in prompt.delivered_events() {
        let tx = id_of(&event["data"]["transactionId"]);
        let at = prompt.delivered_ids()[event["id"].as_str().unwrap()];
        delays.push(at.saturating_duration_since(committed[&tx]));
    }
    delays.sort();
    let a_posts = hanging.deliveries();
    let a_span = a_posts
        .last()
        .unwrap()
        .arrived
        .saturating_duration_since(a_posts[0].arrived);
    eprintln!(
        "partner B: {} events, commit → delivery median {:?}, max {:?}; partner A: {} POSTs to the hanging endpoint over {:?} (each held until the {timeout_ms} ms deadline), hung since {:?} ago",
        delays.len(),
        delays[delays.len() / 2],
        delays.last().unwrap(),
        a_posts.len(),
        a_span,
        a_hung_at.elapsed()
    );
    assert_eq!(delays.len(), committed.len());
    // Well below one of A's deadlines: B never waited for A.
    assert!(
        *delays.last().unwrap() < Duration::from_millis(timeout_ms / 2),
        "B's slowest delivery took {:?} while A hung (deadline {timeout_ms} ms)",
        delays.last().unwrap()
    );
    assert!(hanging.delivered_ids().is_empty());
    assert_deliveries_signed(&prompt, &secret_b, &b.id);
    let _ = stack.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_routes_register_show_replace_rotate_and_remove() {
    let stack = Stack::start(&[]).await;
    let partner = stack.partner("events-routes").await;
    let receiver = WebhookReceiver::start().await;

    // Nothing registered yet.
    for (method, path) in [
        (reqwest::Method::GET, "/v1/webhooks"),
        (reqwest::Method::DELETE, "/v1/webhooks"),
        (reqwest::Method::POST, "/v1/webhooks/rotate-secret"),
    ] {
        let (status, body) = partner.call(method.clone(), path, None, None).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (404, Some("NOT_FOUND")),
            "{method} {path}: {body}"
        );
    }

    // New: 201 with the secret, shown this once.
    let (status, created) = partner.register(&receiver.url, &["points.earned", "points.used"]).await;
    assert_eq!(status, 201, "{created}");
    let first_secret = created["secret"].as_str().unwrap().to_owned();
    assert_secret(&first_secret);
    assert_eq!(
        (&created["url"], &created["events"], &created["status"]),
        (
            &json!(receiver.url),
            &json!(["points.earned", "points.used"]),
            &json!("ACTIVE")
        ),
        "{created}"
    );
    let (status, shown) = partner.get("/v1/webhooks").await;
    assert_eq!(status, 200, "{shown}");
    assert!(shown.get("secret").is_none(), "GET never shows the secret: {shown}");
    let shown_keys: BTreeSet<String> = shown.as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        shown_keys,
        keys(&[
            "url",
            "events",
            "status",
            "createdAt",
            "updatedAt",
            "deliveredThrough",
            "failingSince",
            "nextAttemptAt",
            "lastError"
        ]),
        "{shown}"
    );
    assert_eq!(
        (&shown["url"], &shown["status"], &shown["createdAt"]),
        (&created["url"], &json!("ACTIVE"), &created["createdAt"])
    );
    assert!(
        shown["deliveredThrough"].is_u64() && shown["nextAttemptAt"].is_string(),
        "{shown}"
    );

    // Replaced: 200 without a secret; the secret and createdAt are kept.
    let (status, replaced) = partner.register(&receiver.url, &["points.earned"]).await;
    assert_eq!(status, 200, "{replaced}");
    assert!(replaced.get("secret").is_none(), "{replaced}");
    assert_eq!(
        (&replaced["events"], &replaced["createdAt"]),
        (&json!(["points.earned"]), &created["createdAt"])
    );
    assert!(
        replaced["updatedAt"].as_str() >= created["updatedAt"].as_str(),
        "{replaced}"
    );

    partner.earn("u-1", 5).await;
    receiver.wait_for_delivered(1, DELIVERY_DEADLINE).await;
    assert_deliveries_signed(&receiver, &first_secret, &partner.id);

    // Rotated: a new secret; the old one stops verifying at once.
    let (status, rotated) = partner.post("/v1/webhooks/rotate-secret", json!({})).await;
    assert_eq!(status, 200, "{rotated}");
    let rotated_keys: Vec<&String> = rotated.as_object().unwrap().keys().collect();
    assert_eq!(rotated_keys, ["secret"], "{rotated}");
    let second_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_secret(&second_secret);
    assert_ne!(second_secret, first_secret);
    let before = receiver.deliveries().len();
    partner.earn("u-2", 6).await;
    receiver.wait_for_delivered(2, DELIVERY_DEADLINE).await;
    for delivery in &receiver.deliveries()[before..] {
        assert!(
            verify_with_python(&second_secret, delivery),
            "signed with the new secret"
        );
        assert!(
            !verify_with_python(&first_secret, delivery),
            "the old secret no longer verifies"
        );
    }

    // Removed: 204 without a body; nothing more is delivered; the pull API still has everything.
    let (status, body) = partner.call(reqwest::Method::DELETE, "/v1/webhooks", None, None).await;
    assert_eq!((status, &body), (204, &Value::Null));
    let (status, body) = partner.get("/v1/webhooks").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("NOT_FOUND")), "{body}");
    let posts = receiver.deliveries().len();
    partner.earn("u-3", 7).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(receiver.deliveries().len(), posts, "no delivery after DELETE");
    let pulled = partner.pull_all(0, 1000).await;
    assert_eq!(of_type(&pulled, "points.earned").len(), 3, "{pulled:#?}");

    // A new registration after DELETE is new: 201 and another secret.
    let third = partner.registered(&receiver.url, &["points.earned"]).await;
    assert!(third != first_secret && third != second_secret);

    // The pull route's parameters.
    for query in ["bogus=1", "limit=0", "limit=1001", "after=-1", "after=x", "limit=1.5"] {
        let (status, body) = partner.get(&format!("/v1/events?{query}")).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("INVALID_REQUEST")),
            "{query}: {body}"
        );
    }
    let (status, page) = partner.get("/v1/events?limit=1").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["events"].as_array().map(Vec::len), Some(1), "{page}");
    assert_eq!(page["next"], page["events"][0]["sequence"]);
    let last = pulled.last().unwrap()["sequence"].as_u64().unwrap();
    let (status, page) = partner.get(&format!("/v1/events?after={last}")).await;
    assert_eq!((status, &page), (200, &json!({"events": [], "next": last})));
    let _ = stack.running.stop().await;
}
