//! The local runner over real HTTP, with the real stack behind it: what template.yaml declares is
//! what it serves, the authorizer behaves as API Gateway's, the pollers as SQS event sources.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::types::QueueAttributeName;
use integration_tests::{
    api_key, max_receive_count, queue_arn, queue_with_dlq, receive, repo_root, sqs, template, unique,
};
use local_runner::{
    LocalApp, LocalFunction, RunnerConfig, RunnerError, Running, SCHEDULE_RATE_ENV, ScheduleSource, ScheduledFunction,
    SqsFunction,
};
use serde_json::{Value, json};

fn config(template: std::path::PathBuf) -> RunnerConfig {
    RunnerConfig::from_process(template)
}

async fn load() -> LocalApp {
    LocalApp::load(&config(repo_root().join("template.yaml")))
        .await
        .expect("the runner loads template.yaml")
}

async fn start(app: LocalApp) -> Running {
    app.start().await.expect("the runner serves")
}

async fn call(req: reqwest::RequestBuilder) -> (u16, Value) {
    let res = req.send().await.expect("the runner answers");
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn campaign_body(quantity: u32) -> Value {
    let now = chrono::Utc::now();
    json!({
        "name": "runner", "totalQuantity": quantity,
        "issueStartsAt": now - chrono::Duration::minutes(1), "issueEndsAt": now + chrono::Duration::hours(1),
        "couponExpiresAt": now + chrono::Duration::days(7), "discount": {"type": "AMOUNT", "value": 500}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_and_event_source_of_the_template_is_served() {
    let template = template();
    let app = load().await;
    let declared_routes: BTreeSet<(String, String, String)> = template
        .functions()
        .unwrap()
        .iter()
        .flat_map(|f| {
            f.routes
                .iter()
                .map(|r| (r.method.clone(), r.path.clone(), f.logical_id.clone()))
        })
        .collect();
    let served_routes: BTreeSet<(String, String, String)> = app
        .routes
        .iter()
        .map(|r| (r.method.clone(), r.path.clone(), r.function.clone()))
        .collect();
    assert_eq!(served_routes, declared_routes);
    assert!(!served_routes.is_empty());
    let declared_sources: BTreeSet<(String, String, usize)> = template
        .functions()
        .unwrap()
        .iter()
        .flat_map(|f| {
            f.sqs_sources
                .iter()
                .map(|s| (f.logical_id.clone(), s.queue_logical_id.clone(), s.batch_size as usize))
        })
        .collect();
    let served_sources: BTreeSet<(String, String, usize)> = app
        .sources
        .iter()
        .map(|s| (s.function.clone(), s.queue_logical_id.clone(), s.batch_size))
        .collect();
    assert_eq!(served_sources, declared_sources);
    let declared_schedules: BTreeSet<(String, String, String, bool)> = template
        .functions()
        .unwrap()
        .iter()
        .flat_map(|f| {
            f.schedules
                .iter()
                .map(|s| (f.logical_id.clone(), s.name.clone(), s.expression.clone(), s.enabled))
        })
        .collect();
    let served_schedules: BTreeSet<(String, String, String, bool)> = app
        .schedules
        .iter()
        .map(|s| (s.function.clone(), s.name.clone(), s.expression.clone(), s.enabled))
        .collect();
    assert_eq!(served_schedules, declared_schedules);
    assert_eq!(app.api.authorizer, template.api().unwrap().authorizer);

    // Each route reaches its function: the answer is the function's JSON error contract, not
    // API Gateway's.
    let routes = app.routes.clone();
    let running = start(app).await;
    let client = reqwest::Client::new();
    let key = api_key(&unique("routes")).await;
    for route in routes {
        let path = route
            .path
            .replace("{campaignId}", "999999999")
            .replace("{userId}", "nobody");
        let url = format!("{}{path}", running.base_url);
        let req = client
            .request(route.method.parse().unwrap(), url)
            .header("X-API-KEY", &key)
            .body("{}");
        let (status, body) = call(req).await;
        assert!(
            body.get("error").is_some() || status < 300,
            "{} {path} did not reach {}: {status} {body}",
            route.method,
            route.function
        );
    }
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_template_the_runner_cannot_honour_fails_to_load() {
    let text = std::fs::read_to_string(repo_root().join("template.yaml")).unwrap();
    let dir = std::env::temp_dir().join(unique("runner-template"));
    std::fs::create_dir_all(&dir).unwrap();
    let unknown_binary = text.replace("Binary: issue-writer", "Binary: mystery-writer");
    let schedule = text.replace(
        "        IssueRequests:\n          Type: SQS",
        "        Nightly:\n          Type: Schedule\n          Properties:\n            Schedule: rate(1 day)\n        IssueRequests:\n          Type: SQS",
    );
    assert_ne!(schedule, text, "the template changed shape: update this test");
    let cron = schedule.replace("rate(1 day)", "cron(0 3 * * ? *)");
    for (name, changed, expected) in [
        ("binary.yaml", unknown_binary, "mystery-writer"),
        (
            "schedule.yaml",
            schedule,
            "Schedule Nightly (rate(1 day)): function IssueWriterFunction is Some(\"sqs\"), a scheduled function is needed",
        ),
        ("cron.yaml", cron, "the local runner supports only rate() schedules"),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, changed).unwrap();
        let err = LocalApp::load(&config(path))
            .await
            .err()
            .expect("load must fail")
            .to_string();
        assert!(err.contains(expected), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_answers_its_json_401_and_403s_and_caches_the_authorizer() {
    let running = start(load().await).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/campaigns/1", running.base_url);

    // The gateway's own answers are the template's GatewayResponses: JSON with a code and the
    // request's id, as docs/errors.md lists them.
    let answer = |kind: &str| {
        let answer = fcfs_shared::http::GATEWAY_ANSWERS
            .iter()
            .find(|a| a.response_type == kind)
            .expect("a gateway answer");
        (answer.status, answer.code.as_str(), answer.message)
    };
    let gateway = |request: reqwest::RequestBuilder| async move {
        let response = request.send().await.expect("the runner answers");
        let request_id = response.headers()["x-amzn-requestid"].to_str().unwrap().to_owned();
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.expect("JSON");
        assert_eq!(body["requestId"], request_id.as_str(), "{body}");
        (
            status,
            body["error"].as_str().unwrap_or_default().to_owned(),
            body["message"].clone(),
        )
    };
    let (status, code, message) = answer("UNAUTHORIZED");
    assert!(message.contains("X-API-KEY"), "a hint where the key goes: {message}");
    for request in [
        client.get(&url),
        client.get(&url).header("X-API-KEY", ""),
        client
            .get(&url)
            .header("Authorization", "Bearer fcfs_a-key-in-the-wrong-place"),
    ] {
        assert_eq!(gateway(request).await, (status, code.to_owned(), json!(message)));
    }
    assert_eq!(running.stats.authorizer_invocations.load(Ordering::Relaxed), 0);

    let (status, code, message) = answer("ACCESS_DENIED");
    assert_eq!(
        gateway(client.get(&url).header("X-API-KEY", "fcfs_not-a-real-key")).await,
        (status, code.to_owned(), json!(message))
    );

    let (status, code, message) = answer("MISSING_AUTHENTICATION_TOKEN");
    assert_eq!((status, code), (403, "ROUTE_NOT_FOUND"));
    assert_eq!(
        gateway(client.get(format!("{}/v1/nowhere", running.base_url))).await,
        (status, code.to_owned(), json!(message))
    );
    // A known path with a method the template does not declare is unknown too.
    assert_eq!(gateway(client.delete(&url)).await.0, 403);

    let key = api_key(&unique("cache")).await;
    let before = running.stats.authorizer_invocations.load(Ordering::Relaxed);
    for i in 0..50 {
        // Different routes share the cached decision (the policy covers the whole stage).
        let url = if i % 2 == 0 {
            format!("{}/v1/campaigns/{i}", running.base_url)
        } else {
            format!("{}/v1/campaigns/{i}/issues/u{i}", running.base_url)
        };
        let (status, body) = call(client.get(url).header("X-API-KEY", &key)).await;
        assert_eq!((status, &body["error"]), (404, &json!("NOT_FOUND")), "{body}");
    }
    assert_eq!(running.stats.authorizer_invocations.load(Ordering::Relaxed) - before, 1);
    running.stop().await.unwrap();
}

/// Each partner has its own bucket of the usage plan's rate and burst (the template's
/// `PartnerThrottleRate`/`PartnerThrottleBurst`, small here): past it the gateway answers 429
/// `THROTTLED` with `Retry-After`, before any function runs, while another partner is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_over_its_rate_is_throttled_and_another_is_not() {
    let mut config = config(repo_root().join("template.yaml"));
    for (name, value) in [("PartnerThrottleRate", "2"), ("PartnerThrottleBurst", "5")] {
        config.params.insert(name.to_owned(), value.to_owned());
    }
    let running = start(LocalApp::load(&config).await.expect("the runner loads")).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/campaigns/1", running.base_url);
    let (eager, calm) = (api_key(&unique("eager")).await, api_key(&unique("calm")).await);
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let response = client.get(&url).header("X-API-KEY", &eager).send().await.unwrap();
        let status = response.status().as_u16();
        if status == 429 {
            assert_eq!(response.headers()["retry-after"], "1");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"], "THROTTLED", "{body}");
        }
        statuses.push(status);
    }
    // 12 requests in well under a second: the burst of 5 (perhaps one refilled token) pass.
    let passed = statuses.iter().filter(|s| **s == 404).count();
    assert!((5..=7).contains(&passed), "{statuses:?}");
    assert_eq!(
        passed + statuses.iter().filter(|s| **s == 429).count(),
        12,
        "{statuses:?}"
    );
    assert_eq!(&statuses[..5], &[404; 5], "the burst first: {statuses:?}");
    for _ in 0..5 {
        let (status, body) = call(client.get(&url).header("X-API-KEY", &calm)).await;
        assert_eq!(status, 404, "another partner has its own bucket: {body}");
    }
    running.stop().await.unwrap();
}

/// API Gateway (and the runner, as it) answers from the cached Allow for `ReauthorizeEvery`
/// (300 s here): the key's expiry travels in the context and the function refuses it on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_key_is_refused_while_its_allow_is_still_cached() {
    let running = start(load().await).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/campaigns/1", running.base_url);
    let keys = fcfs_shared::adapters::dynamodb::DynamoApiKeys::new(
        integration_tests::dynamodb().await,
        integration_tests::env("API_KEYS_TABLE"),
    );
    let expires = chrono::Utc::now() + chrono::Duration::seconds(2);
    let (secret, _) = fcfs_shared::keys::create_key(&keys, &unique("expiring"), Some(expires), chrono::Utc::now())
        .await
        .unwrap();
    let (status, body) = call(client.get(&url).header("X-API-KEY", secret.expose())).await;
    assert_eq!(
        (status, &body["error"]),
        (404, &json!("NOT_FOUND")),
        "allowed before: {body}"
    );
    let wait = (expires - chrono::Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(50);
    assert!(wait < Duration::from_secs(3), "the wait is bounded: {wait:?}");
    tokio::time::sleep(wait).await;
    let before = running.stats.authorizer_invocations.load(Ordering::Relaxed);
    let (status, body) = call(client.get(&url).header("X-API-KEY", secret.expose())).await;
    assert_eq!((status, &body["error"]), (403, &json!("KEY_EXPIRED")), "{body}");
    assert_eq!(
        running.stats.authorizer_invocations.load(Ordering::Relaxed),
        before,
        "answered from the cached Allow"
    );
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_issue_and_the_poller_writes_the_coupon() {
    let running = start(load().await).await;
    let client = reqwest::Client::new();
    let key = api_key(&unique("e2e")).await;
    let (status, created) = call(
        client
            .post(format!("{}/v1/campaigns", running.base_url))
            .header("X-API-KEY", &key)
            .json(&campaign_body(3)),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = integration_tests::as_id(&created["campaignId"]).unwrap();
    let issues = format!("{}/v1/campaigns/{id}/issues", running.base_url);
    let (status, issued) = call(
        client
            .post(&issues)
            .header("X-API-KEY", &key)
            .json(&json!({"userId": "alice"})),
    )
    .await;
    assert_eq!((status, &issued["status"]), (202, &json!("PENDING")), "{issued}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = call(client.get(format!("{issues}/alice")).header("X-API-KEY", &key)).await;
        assert_eq!(status, 200, "{body}");
        if body["status"] == "ISSUED" {
            assert!(body["couponId"].is_string(), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "still {body} after 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, campaign) = call(
        client
            .get(format!("{}/v1/campaigns/{id}", running.base_url))
            .header("X-API-KEY", &key),
    )
    .await;
    assert_eq!(
        (campaign["reserved"].as_u64(), campaign["issued"].as_u64()),
        (Some(1), Some(1)),
        "{campaign}"
    );
    running.stop().await.unwrap();
}

/// Fails every message whose body says "poison"; remembers how often it saw each body.
#[derive(Default)]
struct Picky {
    seen: std::sync::Mutex<Vec<String>>,
}

#[async_trait]
impl SqsFunction for Picky {
    async fn invoke(&self, event: SqsEvent) -> Result<SqsBatchResponse, String> {
        let mut response = SqsBatchResponse::default();
        for record in event.records {
            let body = record.body.unwrap_or_default();
            self.seen.lock().unwrap().push(body.clone());
            if body.contains("poison") {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = record.message_id.unwrap();
                response.batch_item_failures.push(failure);
            }
        }
        Ok(response)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reported_failure_returns_and_ends_in_the_dlq() {
    let sqs = sqs().await;
    let max_receive = max_receive_count();
    // Visibility must outlast the template's 1 s batching window plus the handling, or a message
    // still being handled comes back and is delivered twice (seen once on a loaded machine).
    let (queue, dlq) = queue_with_dlq(&sqs, 3).await;
    let arn = queue_arn(&sqs, &queue).await;

    let mut app = load().await;
    let picky = Arc::new(Picky::default());
    let writer = "IssueWriterFunction".to_owned();
    app.replace_function(&writer, LocalFunction::Sqs(picky.clone()))
        .unwrap();
    app.set_source_queue(&writer, &queue, &arn);
    let running = start(app).await;

    for body in ["good", "poison"] {
        sqs.send_message()
            .queue_url(&queue)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let dead = loop {
        let got = receive(&sqs, &dlq, 1).await;
        if !got.is_empty() {
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "nothing reached the DLQ; seen: {:?}",
            picky.seen.lock().unwrap()
        );
    };
    running.stop().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body.as_deref(), Some("poison"));
    let seen = picky.seen.lock().unwrap().clone();
    assert_eq!(
        seen.iter().filter(|b| *b == "good").count(),
        1,
        "the good message is deleted once handled: {seen:?}"
    );
    assert_eq!(
        seen.iter().filter(|b| *b == "poison").count() as i64,
        max_receive,
        "the failed message came back until maxReceiveCount: {seen:?}"
    );
    let left = sqs
        .get_queue_attributes()
        .queue_url(&queue)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .unwrap();
    assert_eq!(
        left.attributes.unwrap()[&QueueAttributeName::ApproximateNumberOfMessages],
        "0"
    );
}

/// A scheduled function that keeps every event it gets and answers with their count.
#[derive(Default)]
struct Recovery {
    events: Mutex<Vec<Value>>,
}

impl Recovery {
    fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }
}

#[async_trait]
impl ScheduledFunction for Recovery {
    async fn invoke(&self, event: Value) -> Result<Value, String> {
        let mut events = self.events.lock().unwrap();
        events.push(event);
        Ok(json!({"invocation": events.len()}))
    }
}

/// template.yaml plus a function on two schedules, one disabled. Its binary is one the runner will
/// never build, so the test's fake stands in for it.
fn template_with_a_schedule() -> std::path::PathBuf {
    let text = std::fs::read_to_string(repo_root().join("template.yaml")).unwrap();
    let probe = "Resources:\n  ScheduleProbeFunction:\n    Type: AWS::Serverless::Function\n    Metadata:\n      \
                 BuildProperties:\n        Binary: schedule-probe\n    Properties:\n      CodeUri: .\n      Events:\n        \
                 EveryMinute:\n          Type: Schedule\n          Properties:\n            Schedule: rate(1 minute)\n        \
                 Nightly:\n          Type: ScheduleV2\n          Properties:\n            ScheduleExpression: rate(1 day)\n            \
                 State: DISABLED\n";
    let changed = text.replacen("Resources:\n", probe, 1);
    assert_ne!(changed, text, "the template changed shape: update this test");
    let dir = std::env::temp_dir().join(unique("runner-schedule"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("template.yaml");
    std::fs::write(&path, changed).unwrap();
    path
}

async fn load_with_recovery(rate_secs: &str) -> Result<(LocalApp, Arc<Recovery>), RunnerError> {
    let mut config = config(template_with_a_schedule());
    config.env.insert(SCHEDULE_RATE_ENV.to_owned(), rate_secs.to_owned());
    let recovery = Arc::new(Recovery::default());
    let provided = BTreeMap::from([("schedule-probe".to_owned(), LocalFunction::Scheduled(recovery.clone()))]);
    let app = LocalApp::load_with(&config, provided).await?;
    Ok((app, recovery))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_fires_on_its_rate_until_the_runner_stops() {
    let (app, recovery) = load_with_recovery("0.2").await.expect("the runner loads");
    let rate = Duration::from_millis(200);
    // The template's own schedules (recovery) come along; the probe's are the ones checked here.
    let probe: Vec<ScheduleSource> = app
        .schedules
        .iter()
        .filter(|s| s.function == "ScheduleProbeFunction")
        .cloned()
        .collect();
    assert_eq!(
        probe,
        [
            ScheduleSource {
                function: "ScheduleProbeFunction".into(),
                name: "EveryMinute".into(),
                expression: "rate(1 minute)".into(),
                rate,
                enabled: true,
                retries: 2,
                on_failure_queue: None,
                starts_now: false,
                concurrency: 1,
            },
            ScheduleSource {
                function: "ScheduleProbeFunction".into(),
                name: "Nightly".into(),
                expression: "rate(1 day)".into(),
                rate,
                enabled: false,
                retries: 2,
                on_failure_queue: None,
                starts_now: false,
                concurrency: 1,
            },
        ]
    );

    // Once, now, as --invoke does: the function's answer comes back, its event is EventBridge's.
    let answer = app.invoke_schedule("ScheduleProbeFunction").await.unwrap();
    assert_eq!(answer, json!({"invocation": 1}));
    let event = recovery.events()[0].clone();
    let region = event["region"].as_str().unwrap().to_owned();
    assert_eq!(
        (
            &event["detail-type"],
            &event["source"],
            &event["account"],
            &event["detail"]
        ),
        (
            &json!("Scheduled Event"),
            &json!("aws.events"),
            &json!("000000000000"),
            &json!({})
        ),
        "{event}"
    );
    let every_minute = json!([format!(
        "arn:aws:events:{region}:000000000000:rule/ScheduleProbeFunction-EveryMinute"
    )]);
    assert_eq!(event["resources"], every_minute);
    let err = app.invoke_schedule("IssueWriterFunction").await.unwrap_err();
    assert!(
        matches!(&err, RunnerError::NoSchedule { scheduled, .. } if scheduled.iter().any(|f| f == "ScheduleProbeFunction")),
        "{err}"
    );

    // Served: the enabled schedule fires every 0.2 s, the disabled one never.
    let started = Instant::now();
    let running = start(app).await;
    let deadline = started + Duration::from_secs(20);
    while recovery.events().len() < 4 {
        assert!(
            Instant::now() < deadline,
            "{} invocations after 20 s",
            recovery.events().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        started.elapsed() >= rate * 3,
        "three scheduled invocations came too early: {:?}",
        started.elapsed()
    );
    running.stop().await.unwrap();
    let events = recovery.events();
    assert!(events.iter().all(|e| e["resources"] == every_minute), "{events:?}");
    let ids: BTreeSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len(), "each event has its own id");
    tokio::time::sleep(rate * 3).await;
    assert_eq!(
        recovery.events().len(),
        events.len(),
        "nothing fires after the runner stopped"
    );
}

#[tokio::test]
async fn a_schedule_rate_override_must_be_a_positive_number_of_seconds() {
    for bad in ["0", "-1", "soon", ""] {
        let err = load_with_recovery(bad).await.err().expect("load must fail").to_string();
        assert!(
            err.contains(SCHEDULE_RATE_ENV) && err.contains("greater than 0"),
            "{bad:?}: {err}"
        );
    }
}

/// RedisUrl has no default (a deployment must choose it): locally REDIS_URL comes from the
/// environment or `--param RedisUrl=…`, and without either the runner names the parameter.
#[tokio::test]
async fn a_parameter_without_default_comes_from_the_environment_or_a_param() {
    let mut config = config(repo_root().join("template.yaml"));
    let redis_url = config.env.remove("REDIS_URL").expect("REDIS_URL is set for the tests");
    let err = LocalApp::load(&config).await.err().expect("no Redis URL anywhere");
    let text = err.to_string();
    assert!(
        matches!(&err, RunnerError::NoParameterValue { variable, parameter, .. } if variable == "REDIS_URL" && parameter == "RedisUrl"),
        "{text}"
    );
    assert!(text.contains("--param RedisUrl=VALUE"), "{text}");
    config.params.insert("RedisUrl".to_owned(), redis_url);
    let app = LocalApp::load(&config).await.expect("--param RedisUrl is enough");
    assert!(app.environments.values().any(|env| env.contains_key("REDIS_URL")));
}
