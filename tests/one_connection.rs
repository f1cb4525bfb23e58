//! Every route and pass works with one MySQL connection per function. The template gives each
//! database-using function except the writer a pool of one (`DB_MAX_CONNECTIONS: "1"`), since a
//! Lambda instance serves one request at a time, and the database budget counts on it
//! (`tests/template_contract.rs`). A code path that held one connection while asking for a second
//! would wait out the pool's acquire timeout and answer 503: this session, run in order through
//! the runner with every pool at one, would see it. (The writer is given one chunk in flight, the
//! one connection's worth; the template gives it two of each.)

use std::time::{Duration, Instant};

use integration_tests::{PartnerApi, queue_with_dlq, runner_config, serve, sqs, unique};
use reqwest::Method;
use serde_json::{Value, json};

async fn call(api: &PartnerApi, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = api
        .http
        .request(method.clone(), format!("{}{path}", api.running.base_url))
        .header("X-API-KEY", &api.key)
        .timeout(Duration::from_secs(30));
    if method == Method::POST {
        request = request.header("Idempotency-Key", unique("key"));
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let res = request.send().await.expect("the runner answers");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Polls `path` until `done` holds of its body, for at most 60 s.
async fn until(api: &PartnerApi, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = call(api, Method::GET, path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        if done(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{path} still {body} after 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_partner_session_runs_on_one_connection_per_function() {
    // Queues of its own: no other test's backlog stands before this session's messages. The
    // runner shares one function's pool among its concurrent batches, so those are kept to the
    // template's minimum (two, sharing the one connection).
    let (issue_queue, _) = queue_with_dlq(&sqs().await, 30).await;
    let (grading_queue, _) = queue_with_dlq(&sqs().await, 30).await;
    let mut config = runner_config(&[
        ("DB_MAX_CONNECTIONS", "1".to_owned()),
        ("WRITER_PARALLEL_CHUNKS", "1".to_owned()),
        ("ISSUE_QUEUE_URL", issue_queue),
        ("GRADING_QUEUE_URL", grading_queue),
    ]);
    for parameter in ["WriterMaxConcurrency", "GradingWorkerMaxConcurrency"] {
        config.params.insert(parameter.to_owned(), "2".to_owned());
    }
    let api = PartnerApi::on("one-connection", serve(config).await).await;
    let now = chrono::Utc::now();
    let expect = |step: &str, (status, body): (u16, Value), want: u16| -> Value {
        assert_eq!(status, want, "{step}: {body}");
        body
    };

    let campaign = json!({
        "name": "one connection", "totalQuantity": 5,
        "issueStartsAt": now - chrono::Duration::minutes(1), "issueEndsAt": now + chrono::Duration::hours(1),
        "couponExpiresAt": now + chrono::Duration::days(7), "discount": {"type": "AMOUNT", "value": 100}
    });
    let created = expect(
        "create",
        call(&api, Method::POST, "/v1/campaigns", Some(campaign)).await,
        201,
    );
    let id = integration_tests::as_id(&created["campaignId"]).expect("a campaign id");
    expect(
        "read",
        call(&api, Method::GET, &format!("/v1/campaigns/{id}"), None).await,
        200,
    );
    expect(
        "issue",
        call(
            &api,
            Method::POST,
            &format!("/v1/campaigns/{id}/issues"),
            Some(json!({"userId": "ann"})),
        )
        .await,
        202,
    );
    let issued = until(&api, &format!("/v1/campaigns/{id}/issues/ann"), |b| {
        b["status"] == "ISSUED"
    })
    .await;
    let coupon: u64 = issued["couponId"]
        .as_str()
        .and_then(|c| c.parse().ok())
        .expect("a coupon id");
    expect(
        "coupons",
        call(&api, Method::GET, "/v1/users/ann/coupons", None).await,
        200,
    );
    expect(
        "coupon",
        call(&api, Method::GET, &format!("/v1/coupons/{coupon}"), None).await,
        200,
    );
    let order = json!({"userId": "ann", "orderId": "o-1", "orderAmount": 5_000});
    expect(
        "use",
        call(&api, Method::POST, &format!("/v1/coupons/{coupon}/use"), Some(order)).await,
        200,
    );
    let cancel = json!({"userId": "ann", "orderId": "o-1"});
    expect(
        "cancel-use",
        call(
            &api,
            Method::POST,
            &format!("/v1/coupons/{coupon}/cancel-use"),
            Some(cancel),
        )
        .await,
        200,
    );

    let earn = json!({"amount": 300, "reason": "welcome"});
    expect(
        "earn",
        call(&api, Method::POST, "/v1/users/ann/points/earn", Some(earn)).await,
        201,
    );
    let spend = json!({"amount": 100, "orderId": "o-2", "reason": "checkout"});
    let used = expect(
        "use points",
        call(&api, Method::POST, "/v1/users/ann/points/use", Some(spend)).await,
        201,
    );
    let transaction = integration_tests::as_id(&used["transactionId"]).expect("a transaction id");
    expect(
        "cancel points",
        call(
            &api,
            Method::POST,
            &format!("/v1/points/transactions/{transaction}/cancel"),
            None,
        )
        .await,
        200,
    );
    let gift = json!({"fromUserId": "ann", "toUserId": "bob", "amount": 50});
    expect(
        "transfer",
        call(&api, Method::POST, "/v1/points/transfers", Some(gift)).await,
        201,
    );
    let balance = expect(
        "balance",
        call(&api, Method::GET, "/v1/users/bob/points", None).await,
        200,
    );
    assert_eq!(balance["balance"], 50, "{balance}");
    expect(
        "history",
        call(&api, Method::GET, "/v1/users/ann/points/history", None).await,
        200,
    );

    let paid = json!({"orders": [{"orderId": "o-3", "userId": "ann", "amount": 2_000_000, "status": "PAID",
        "orderedAt": "2026-10-15T12:00:00Z"}]});
    expect("orders", call(&api, Method::POST, "/v1/orders", Some(paid)).await, 200);
    let policy =
        json!({"tiers": [{"grade": "BASIC", "minAmount": 0}, {"grade": "GOLD", "minAmount": 1_000_000, "points": 10}]});
    expect(
        "policy",
        call(&api, Method::PUT, "/v1/grading/policy", Some(policy)).await,
        200,
    );
    let run = expect(
        "grading run",
        call(
            &api,
            Method::POST,
            "/v1/grading/runs",
            Some(json!({"month": "2026-10"})),
        )
        .await,
        202,
    );
    let run = integration_tests::as_id(&run["runId"]).expect("a run id");
    let done = until(&api, &format!("/v1/grading/runs/{run}"), |b| b["status"] != "RUNNING").await;
    assert_eq!(done["status"], "DONE", "{done}");
    let grade = expect(
        "grade",
        call(&api, Method::GET, "/v1/users/ann/grade?month=2026-10", None).await,
        200,
    );
    assert_eq!(grade["grade"], "GOLD", "{grade}");
    api.running.stop().await.unwrap();
}
