//! `sam local`, AWS's own emulation, running the functions' real Lambda binaries in SAM's container
//! (podman here; README, "SAM local"; `scripts/sam_local.sh prepare` made everything ready):
//! - every sample event in `events/` through `sam local invoke`, against the real stack, answered
//!   as the in-process event tests (`runner/tests/events.rs`) expect;
//! - one scripted partner session through `sam local start-api` (with the template's REQUEST
//!   authorizer) and through the runner, which must answer alike: the same statuses, content types,
//!   `Retry-After` and bodies (ids and times aside). Where SAM's emulation is not API Gateway, the
//!   runner follows API Gateway and the test accepts exactly the difference the README documents.
//!
//! Every wait has a deadline; SAM's children are stopped when a test ends, even by a panic.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use integration_tests::{api_key, as_id, env, repo_root, sqs, unique};
use serde_json::{Value, json};

/// SAM runs one container per invocation on 2 cores: one test at a time, and nothing else drains
/// the issue queue while the sample events are checked.
static SAM: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long one `sam local invoke` may take (a cold SAM CLI start plus a container).
const INVOKE_DEADLINE: Duration = Duration::from_secs(120);

fn state_dir() -> PathBuf {
    std::env::var("FCFS_STATE_DIR").map_or_else(|_| repo_root().join(".local"), PathBuf::from)
}

fn script() -> PathBuf {
    repo_root().join("scripts/sam_local.sh")
}

fn sample(name: &str) -> Value {
    let path = repo_root().join("events").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// Waits for `child` until `deadline`; kills it past that.
fn wait_until(child: &mut Child, deadline: Instant, what: &str) -> std::process::ExitStatus {
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish in time");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `sam local invoke FUNCTION` with `event` (through scripts/sam_local.sh, which adds the build
/// template, podman's socket and the stack's --env-vars unless `env_vars` names a file): the
/// function's answer, and SAM's log.
fn invoke(function: &str, event: &Value, env_vars: Option<&Path>) -> (Value, String) {
    let dir = std::env::temp_dir().join(unique("fcfs-sam"));
    std::fs::create_dir_all(&dir).unwrap();
    let event_path = dir.join("event.json");
    std::fs::write(&event_path, event.to_string()).unwrap();
    let (out, err) = (dir.join("stdout"), dir.join("stderr"));
    let mut command = Command::new("bash");
    command
        .arg(script())
        .args(["invoke", function, "-e"])
        .arg(&event_path)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap());
    if let Some(file) = env_vars {
        command.arg("--env-vars").arg(file);
    }
    let mut child = command.spawn().expect("bash runs scripts/sam_local.sh");
    let status = wait_until(
        &mut child,
        Instant::now() + INVOKE_DEADLINE,
        &format!("sam local invoke {function}"),
    );
    let stdout = std::fs::read_to_string(&out).unwrap();
    let log = std::fs::read_to_string(&err).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        status.success(),
        "sam local invoke {function}: {status}\n{stdout}\n{log}"
    );
    // SAM prints the function's answer as the last line of its standard output.
    let answer = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("sam local invoke {function}: no JSON answer\n{stdout}\n{log}"));
    (answer, log)
}

/// An API Gateway proxy answer as a function returns it: status and JSON body.
fn http_answer(function: &str, answer: &Value, log: &str) -> (u16, Value) {
    let status = answer["statusCode"]
        .as_u64()
        .unwrap_or_else(|| panic!("{function}: not a proxy answer: {answer}\n{log}"));
    let body = serde_json::from_str(answer["body"].as_str().unwrap_or("null")).unwrap_or(Value::Null);
    (status as u16, body)
}

/// A proxy sample event for `partner` with `path` (and its parameters) and `body`.
fn proxy(name: &str, partner: &str) -> Value {
    let mut event = sample(name);
    event["requestContext"]["authorizer"]["partnerId"] = partner.into();
    event["requestContext"]["authorizer"]["principalId"] = partner.into();
    event
}

fn with_path(mut event: Value, from: &str, to: &str, param: &str, value: &str) -> Value {
    let path = event["path"].as_str().unwrap().replacen(from, to, 1);
    event["path"] = path.into();
    event["pathParameters"][param] = value.into();
    event
}

/// Every sample event through `sam local invoke`, each in SAM's container against the stack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_event_runs_in_sams_container() {
    let _one_at_a_time = SAM.lock().await;
    let partner = unique("sam-events");
    let mut checked = Vec::new();

    // The authorizer: the placeholder key is malformed, denied without a lookup; a real key of the
    // table is allowed with its partner in the context.
    let (answer, log) = invoke("AuthorizerFunction", &sample("authorizer.json"), None);
    assert_eq!(
        answer["policyDocument"]["Statement"][0]["Effect"], "Deny",
        "{answer}\n{log}"
    );
    let mut event = sample("authorizer.json");
    let key = api_key(&partner).await;
    event["headers"]["X-API-KEY"] = key.clone().into();
    event["multiValueHeaders"]["X-API-KEY"] = json!([key]);
    let (answer, log) = invoke("AuthorizerFunction", &event, None);
    assert_eq!(
        answer["policyDocument"]["Statement"][0]["Effect"], "Allow",
        "{answer}\n{log}"
    );
    assert_eq!(answer["context"]["partnerId"], partner.as_str(), "{answer}");
    checked.push("authorizer.json");

    // A campaign, read back; a place in it, its status.
    let (answer, log) = invoke(
        "CampaignApiFunction",
        &proxy("campaign-api-create.json", &partner),
        None,
    );
    let (status, created) = http_answer("CampaignApiFunction", &answer, &log);
    assert_eq!(status, 201, "{created}\n{log}");
    assert_eq!(created["partnerId"], partner.as_str(), "{created}");
    let campaign = created["campaignId"].as_str().expect("a string id").to_owned();
    as_id(&created["campaignId"]).expect("a decimal id");
    checked.push("campaign-api-create.json");
    let event = with_path(
        proxy("campaign-api-get.json", &partner),
        "/1",
        &format!("/{campaign}"),
        "campaignId",
        &campaign,
    );
    let (answer, log) = invoke("CampaignApiFunction", &event, None);
    let (status, got) = http_answer("CampaignApiFunction", &answer, &log);
    assert_eq!((status, &got["campaignId"]), (200, &json!(campaign)), "{got}\n{log}");
    checked.push("campaign-api-get.json");

    let event = with_path(
        proxy("issue-api-issue.json", &partner),
        "/1/",
        &format!("/{campaign}/"),
        "campaignId",
        &campaign,
    );
    let (answer, log) = invoke("IssueApiFunction", &event, None);
    let (status, issued) = http_answer("IssueApiFunction", &answer, &log);
    assert_eq!(
        (status, issued["status"].as_str()),
        (202, Some("PENDING")),
        "{issued}\n{log}"
    );
    checked.push("issue-api-issue.json");
    let status_event = with_path(
        proxy("issue-api-status.json", &partner),
        "/1/",
        &format!("/{campaign}/"),
        "campaignId",
        &campaign,
    );
    // Nothing polls the queue under SAM: the place stays pending until the writer runs (unless a
    // runner of another test run on the same stack polls it meanwhile: then it is issued).
    let (answer, log) = invoke("IssueApiFunction", &status_event, None);
    let (status, state) = http_answer("IssueApiFunction", &answer, &log);
    assert!(
        status == 200 && (state["status"] == "PENDING" || state["status"] == "ISSUED"),
        "{state}\n{log}"
    );
    checked.push("issue-api-status.json");

    // The writer, with the sample's two reservations made this campaign's: alice's is the place
    // just taken (its request id and rank), bob's a second one. Nothing fails; alice is ISSUED.
    let mut event = sample("issue-writer.json");
    let records = event["Records"].as_array_mut().unwrap();
    assert_eq!(records.len(), 2, "the sample carries two reservations");
    for record in records.iter_mut() {
        let mut reservation: Value = serde_json::from_str(record["body"].as_str().unwrap()).unwrap();
        reservation["campaignId"] = campaign.parse::<u64>().unwrap().into();
        reservation["partnerId"] = partner.as_str().into();
        reservation["reservedAt"] = chrono::Utc::now()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            .into();
        if reservation["userId"] == "alice" {
            reservation["requestId"] = issued["requestId"].clone();
            reservation["rank"] = issued["rank"].clone();
        } else {
            reservation["requestId"] = uuid::Uuid::now_v7().to_string().into();
            reservation["rank"] = 2.into();
        }
        record["body"] = reservation.to_string().into();
    }
    let (answer, log) = invoke("IssueWriterFunction", &event, None);
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}\n{log}");
    checked.push("issue-writer.json");
    let (answer, log) = invoke("IssueApiFunction", &status_event, None);
    let (status, state) = http_answer("IssueApiFunction", &answer, &log);
    assert_eq!(
        (status, state["status"].as_str()),
        (200, Some("ISSUED")),
        "{state}\n{log}"
    );
    let coupon = state["couponId"].as_str().expect("a coupon id").to_owned();

    let event = with_path(
        proxy("coupon-api-use.json", &partner),
        "/1/",
        &format!("/{coupon}/"),
        "couponId",
        &coupon,
    );
    let (answer, log) = invoke("CouponApiFunction", &event, None);
    let (status, used) = http_answer("CouponApiFunction", &answer, &log);
    assert_eq!(
        (status, used["couponId"].as_str()),
        (200, Some(coupon.as_str())),
        "{used}\n{log}"
    );
    assert_eq!(used["status"], "USED", "{used}");
    checked.push("coupon-api-use.json");

    // Points: alice earns 500 (the earn route, same function), then the sample's use: 201 with
    // the balance left, a retry replays it, and without Idempotency-Key it is 400.
    let use_event = proxy("points-api-use.json", &partner);
    let used_amount = serde_json::from_str::<Value>(use_event["body"].as_str().unwrap()).unwrap()["amount"]
        .as_u64()
        .unwrap();
    let mut earn = use_event.clone();
    earn["path"] = "/v1/users/alice/points/earn".into();
    earn["resource"] = "/v1/users/{userId}/points/earn".into();
    earn["requestContext"]["resourcePath"] = "/v1/users/{userId}/points/earn".into();
    earn["requestContext"]["path"] = "/local/v1/users/alice/points/earn".into();
    earn["headers"]["Idempotency-Key"] = "earn-1".into();
    earn["multiValueHeaders"]["Idempotency-Key"] = json!(["earn-1"]);
    earn["body"] = json!({"amount": 500, "reason": "signup"}).to_string().into();
    let (answer, log) = invoke("PointsApiFunction", &earn, None);
    let (status, earned) = http_answer("PointsApiFunction", &answer, &log);
    assert_eq!(
        (status, earned["balance"].as_u64()),
        (201, Some(500)),
        "{earned}\n{log}"
    );
    let (answer, log) = invoke("PointsApiFunction", &use_event, None);
    let first = http_answer("PointsApiFunction", &answer, &log);
    assert_eq!(
        (first.0, first.1["balance"].as_u64()),
        (201, Some(500 - used_amount)),
        "{}\n{log}",
        first.1
    );
    let (answer, log) = invoke("PointsApiFunction", &use_event, None);
    assert_eq!(
        http_answer("PointsApiFunction", &answer, &log),
        first,
        "a retry replays"
    );
    let mut without_key = use_event.clone();
    without_key["headers"]
        .as_object_mut()
        .unwrap()
        .remove("Idempotency-Key");
    without_key["multiValueHeaders"]
        .as_object_mut()
        .unwrap()
        .remove("Idempotency-Key");
    let (answer, log) = invoke("PointsApiFunction", &without_key, None);
    let (status, body) = http_answer("PointsApiFunction", &answer, &log);
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("Idempotency-Key")),
        "{body}\n{log}"
    );
    checked.push("points-api-use.json");

    // The scheduled functions answer their summaries (other tests' rows may be swept too).
    let (answer, log) = invoke("IssueRecoveryFunction", &sample("issue-recovery.json"), None);
    assert!(
        answer["campaigns"].is_u64() && answer["resent"].is_u64(),
        "{answer}\n{log}"
    );
    checked.push("issue-recovery.json");
    let (answer, log) = invoke("CouponExpiryFunction", &sample("coupon-expiry.json"), None);
    assert!(answer["chunks"].as_u64() >= Some(1), "{answer}\n{log}");
    checked.push("coupon-expiry.json");
    let (answer, log) = invoke("PointsExpiryFunction", &sample("points-expiry.json"), None);
    assert!(
        answer["lots"]["chunks"].as_u64() >= Some(1) && answer["idempotencyRecords"]["chunks"].as_u64() >= Some(1),
        "{answer}\n{log}"
    );
    checked.push("points-expiry.json");

    // The notifier posts AWS's sample alarm to a webhook (here a local one, its URL in a secret of
    // its own: --env-vars of this test, the stack's values with DISCORD_WEBHOOK_SECRET changed).
    let (url, posts) = webhook().await;
    let secret = unique("fcfs-sam-discord-webhook");
    aws_sdk_secretsmanager::Client::new(&fcfs_shared::config::aws_sdk_config().await)
        .create_secret()
        .name(&secret)
        .secret_string(&url)
        .send()
        .await
        .expect("the secret is created");
    let own = env_vars_with(&[("DISCORD_WEBHOOK_SECRET", &secret)]);
    let (_, log) =
        tokio::task::block_in_place(|| invoke("AlertNotifierFunction", &sample("alert-notifier.json"), Some(&own)));
    let _ = std::fs::remove_file(&own);
    let posted = posts.lock().unwrap().clone();
    assert_eq!(posted.len(), 1, "{log}");
    assert_eq!(
        posted[0]["embeds"][0]["title"], "🔴 ALARM: fcfs-prod-issue-dlq-not-empty",
        "{log}"
    );
    checked.push("alert-notifier.json");

    let mut files: Vec<String> = std::fs::read_dir(repo_root().join("events"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    checked.sort();
    assert_eq!(files, checked, "every sample event is invoked here");
}

/// The functions' --env-vars as scripts/sam_local.sh writes them from the stack's environment, with
/// `overrides` for every function: a file of the test's own.
fn env_vars_with(overrides: &[(&str, &str)]) -> PathBuf {
    let path = state_dir().join("sam-build/env-vars.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (scripts/sam_local.sh prepare writes it)", path.display()));
    let mut env_vars: Value = serde_json::from_str(&text).unwrap();
    for variables in env_vars.as_object_mut().unwrap().values_mut() {
        for (name, value) in overrides {
            variables[*name] = (*value).into();
        }
    }
    let own = std::env::temp_dir().join(format!("{}.json", unique("fcfs-sam-env")));
    std::fs::write(&own, env_vars.to_string()).unwrap();
    own
}

/// A local webhook recording what it is sent (answers 204, as Discord does).
async fn webhook() -> (String, Arc<Mutex<Vec<Value>>>) {
    let posts: Arc<Mutex<Vec<Value>>> = Arc::default();
    let app = axum::Router::new()
        .route(
            "/api/webhooks/3/token",
            axum::routing::post(
                |axum::extract::State(posts): axum::extract::State<Arc<Mutex<Vec<Value>>>>,
                 axum::Json(body): axum::Json<Value>| async move {
                    posts.lock().unwrap().push(body);
                    axum::http::StatusCode::NO_CONTENT
                },
            ),
        )
        .with_state(posts.clone());
    // Where SAM's containers reach this machine: the address of podman's bridge (the script keeps
    // it up), not 127.0.0.1, which is each container's own.
    let host = std::fs::read_to_string(state_dir().join("sam-build/host-address"))
        .expect("scripts/sam_local.sh prepare wrote it");
    let listener = tokio::net::TcpListener::bind((host.trim(), 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/api/webhooks/3/token"), posts)
}

/// One answer of the session: what the test compares, and how long it took.
#[derive(Debug)]
struct Exchange {
    step: String,
    status: u16,
    content_type: Option<String>,
    retry_after: Option<String>,
    body: Value,
    elapsed: Duration,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Sam,
    Runner,
}

/// A partner's client of one API (SAM's or the runner's), recording every answer.
struct Client {
    side: Side,
    http: reqwest::Client,
    base: String,
    key: String,
    answers: Vec<Exchange>,
}

/// What to send: a method, a path, and optionally a JSON body and extra headers.
struct Call<'a> {
    method: &'a str,
    path: String,
    body: Option<Value>,
    headers: Vec<(&'a str, String)>,
    key: Key,
}

#[derive(Clone, Copy)]
enum Key {
    Partner,
    Missing,
    Wrong,
}

fn call(method: &str, path: impl Into<String>) -> Call<'_> {
    Call {
        method,
        path: path.into(),
        body: None,
        headers: Vec::new(),
        key: Key::Partner,
    }
}

impl<'a> Call<'a> {
    fn json(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }
    fn header(mut self, name: &'a str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
    fn key(mut self, key: Key) -> Self {
        self.key = key;
        self
    }
}

impl Client {
    /// Sends `call`; records the answer under `step` unless `step` is empty (a poll).
    async fn send(&mut self, step: &str, call: Call<'_>) -> Value {
        let method = reqwest::Method::from_bytes(call.method.as_bytes()).unwrap();
        let mut request = self
            .http
            .request(method, format!("{}{}", self.base, call.path))
            .timeout(INVOKE_DEADLINE);
        match call.key {
            Key::Partner => request = request.header("X-API-KEY", &self.key),
            Key::Missing => {}
            // Well-formed, in no table.
            Key::Wrong => request = request.header("X-API-KEY", format!("fcfs_{}", "x".repeat(43))),
        }
        for (name, value) in &call.headers {
            request = request.header(*name, value);
        }
        if let Some(body) = &call.body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let started = Instant::now();
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{:?} {step}: {e}", self.side));
        let elapsed = started.elapsed();
        let status = response.status().as_u16();
        let header = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
        let (content_type, retry_after) = (header("content-type"), header("retry-after"));
        let text = response.text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !step.is_empty() {
            self.answers.push(Exchange {
                step: step.to_owned(),
                status,
                content_type,
                retry_after,
                body: body.clone(),
                elapsed,
            });
        }
        body
    }

    /// SAM polls no queue: a batch of the messages `function` would be given by its event source
    /// mapping (at most `batch_size`, its `BatchSize`) is received here and passed to it through
    /// `sam local invoke`, then deleted unless reported as failed, as Lambda's poller does. The
    /// runner polls its queues itself.
    async fn drain(&self, queue_url: &str, function: &str, batch_size: i32) {
        if self.side == Side::Runner {
            return;
        }
        let sqs = sqs().await;
        let mut messages = Vec::new();
        while (messages.len() as i32) < batch_size {
            let received = sqs
                .receive_message()
                .queue_url(queue_url)
                .max_number_of_messages((batch_size - messages.len() as i32).min(10))
                .wait_time_seconds(if messages.is_empty() { 1 } else { 0 })
                .send()
                .await
                .expect("SQS answers receive")
                .messages
                .unwrap_or_default();
            if received.is_empty() {
                break;
            }
            messages.extend(received);
        }
        if messages.is_empty() {
            return;
        }
        let event = serde_json::to_value(integration_tests::sqs_event(&messages)).unwrap();
        let (answer, log) = tokio::task::block_in_place(|| invoke(function, &event, None));
        let failed: Vec<&str> = answer["batchItemFailures"]
            .as_array()
            .unwrap_or_else(|| panic!("{function}: {answer}\n{log}"))
            .iter()
            .filter_map(|f| f["itemIdentifier"].as_str())
            .collect();
        for message in &messages {
            if !failed.contains(&message.message_id().unwrap_or_default()) {
                sqs.delete_message()
                    .queue_url(queue_url)
                    .receipt_handle(message.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
    }
}

/// The scripted session: a partner's day, with bad inputs and gateway refusals among it.
async fn partner_session(client: &mut Client) {
    const DEADLINE: Duration = Duration::from_secs(120);
    let campaign_body = json!({"name":"spring sale","totalQuantity":100,"issueStartsAt":"2020-01-01T00:00:00Z",
        "issueEndsAt":"2099-01-01T00:00:00Z","couponExpiresAt":"2099-12-31T00:00:00Z",
        "discount":{"type":"AMOUNT","value":1000}});
    client
        .send("no key", call("GET", "/v1/campaigns").key(Key::Missing))
        .await;
    client
        .send("wrong key", call("GET", "/v1/campaigns").key(Key::Wrong))
        .await;
    client.send("no such route", call("GET", "/v1/nowhere")).await;
    client.send("no such method", call("DELETE", "/v1/campaigns")).await;
    let mut bad = campaign_body.clone();
    bad["totalQuantity"] = 0.into();
    client
        .send("create: bad quantity", call("POST", "/v1/campaigns").json(bad))
        .await;
    let created = client
        .send("create", call("POST", "/v1/campaigns").json(campaign_body))
        .await;
    let campaign = created["campaignId"]
        .as_str()
        .unwrap_or_else(|| panic!("{:?}: {created}", client.side))
        .to_owned();
    client
        .send("get", call("GET", format!("/v1/campaigns/{campaign}")))
        .await;
    client
        .send("list open", call("GET", "/v1/campaigns?status=OPEN&limit=10"))
        .await;
    client
        .send("list: bad limit", call("GET", "/v1/campaigns?limit=0"))
        .await;
    client
        .send(
            "change",
            call("PATCH", format!("/v1/campaigns/{campaign}"))
                .json(json!({"totalQuantity":150,"name":"spring sale, extended"})),
        )
        .await;
    client
        .send("get: unknown campaign", call("GET", "/v1/campaigns/999999999999"))
        .await;
    let issues = format!("/v1/campaigns/{campaign}/issues");
    client
        .send("issue", call("POST", issues.as_str()).json(json!({"userId":"alice"})))
        .await;
    client
        .send(
            "issue: bad body",
            call("POST", issues.as_str()).json(json!({"user":"alice"})),
        )
        .await;
    client
        .send("status: nobody", call("GET", format!("{issues}/bob")))
        .await;
    // Until the writer has run (SAM: driven from here), alice's place is pending.
    let deadline = Instant::now() + DEADLINE;
    loop {
        // Up to 100 of the writer's 10,000 at once: queued messages of other tests go along.
        client.drain(&env("ISSUE_QUEUE_URL"), "IssueWriterFunction", 100).await;
        let state = client.send("", call("GET", format!("{issues}/alice"))).await;
        if state["status"] == "ISSUED" {
            break;
        }
        assert!(Instant::now() < deadline, "{:?}: alice is still {state}", client.side);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let state = client
        .send("status: issued", call("GET", format!("{issues}/alice")))
        .await;
    let coupon = state["couponId"].as_str().unwrap().to_owned();
    client
        .send(
            "issue again",
            call("POST", issues.as_str()).json(json!({"userId":"alice"})),
        )
        .await;

    let coupons = format!("/v1/coupons/{coupon}");
    let order = json!({"userId":"alice","orderId":"order-1","orderAmount":5000});
    client
        .send("coupon use", call("POST", format!("{coupons}/use")).json(order.clone()))
        .await;
    client
        .send("coupon use again", call("POST", format!("{coupons}/use")).json(order))
        .await;
    client
        .send(
            "coupon use: bad amount",
            call("POST", format!("{coupons}/use")).json(json!({"userId":"alice","orderId":"order-1","orderAmount":-1})),
        )
        .await;
    client
        .send(
            "coupon cancel",
            call("POST", format!("{coupons}/cancel-use")).json(json!({"userId":"alice","orderId":"order-1"})),
        )
        .await;
    client.send("coupon get", call("GET", coupons.as_str())).await;
    client
        .send("user coupons", call("GET", "/v1/users/alice/coupons"))
        .await;

    let points = |user: &str, what: &str| format!("/v1/users/{user}/points{what}");
    client
        .send(
            "points earn",
            call("POST", points("alice", "/earn"))
                .header("Idempotency-Key", "earn-1")
                .json(json!({"amount":500,"reason":"welcome"})),
        )
        .await;
    client
        .send(
            "points earn replayed",
            call("POST", points("alice", "/earn"))
                .header("Idempotency-Key", "earn-1")
                .json(json!({"amount":500,"reason":"welcome"})),
        )
        .await;
    client
        .send(
            "points use",
            call("POST", points("alice", "/use"))
                .header("Idempotency-Key", "use-1")
                .json(json!({"amount":200,"orderId":"order-2","reason":"checkout"})),
        )
        .await;
    client
        .send(
            "points use: no key",
            call("POST", points("alice", "/use")).json(json!({"amount":200,"orderId":"order-2","reason":"checkout"})),
        )
        .await;
    client
        .send(
            "points use: too much",
            call("POST", points("alice", "/use"))
                .header("Idempotency-Key", "use-2")
                .json(json!({"amount":100000,"orderId":"order-3","reason":"checkout"})),
        )
        .await;
    client
        .send(
            "points transfer",
            call("POST", "/v1/points/transfers")
                .header("Idempotency-Key", "transfer-1")
                .json(json!({"fromUserId":"alice","toUserId":"bob","amount":100})),
        )
        .await;
    client.send("points balance", call("GET", points("alice", ""))).await;
    client
        .send("points history", call("GET", points("bob", "/history")))
        .await;

    client
        .send(
            "orders",
            call("POST", "/v1/orders").json(json!({"orders":[{"orderId":"order-3","userId":"alice","amount":1500000,
                "status":"PAID","orderedAt":"2026-10-05T10:00:00Z"}]})),
        )
        .await;
    client
        .send("orders: bad", call("POST", "/v1/orders").json(json!({"orders":"none"})))
        .await;
    client
        .send(
            "grading policy",
            call("PUT", "/v1/grading/policy").json(json!({"tiers":[{"grade":"GOLD","minAmount":1000000,"points":100},
                {"grade":"BASIC","minAmount":0}]})),
        )
        .await;
    let run = client
        .send(
            "grading run",
            call("POST", "/v1/grading/runs").json(json!({"month":"2026-10"})),
        )
        .await;
    let run = run["runId"]
        .as_str()
        .unwrap_or_else(|| panic!("{:?}: {run}", client.side))
        .to_owned();
    let deadline = Instant::now() + DEADLINE;
    loop {
        // The worker's BatchSize: one partition per invocation.
        client
            .drain(&env("GRADING_QUEUE_URL"), "GradingWorkerFunction", 1)
            .await;
        let state = client.send("", call("GET", format!("/v1/grading/runs/{run}"))).await;
        if state["status"] == "DONE" {
            break;
        }
        assert!(Instant::now() < deadline, "{:?}: the run is still {state}", client.side);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    client
        .send("grading run done", call("GET", format!("/v1/grading/runs/{run}")))
        .await;
    client
        .send("grade", call("GET", "/v1/users/alice/grade?month=2026-10"))
        .await;
    client
        .send("grade: bad month", call("GET", "/v1/users/alice/grade?month=October"))
        .await;
}

/// Fields whose values differ from run to run (as in tests/quickstart.rs).
const VARYING: &[&str] = &[
    "campaignId",
    "partnerId",
    "couponId",
    "transactionId",
    "toTransactionId",
    "relatedTransactionId",
    "runId",
    "requestId",
    "keyId",
    "createdAt",
    "usedAt",
    "startedAt",
    "finishedAt",
    "durationMs",
    "expiresAt",
    "issuedAt",
    "nextCursor",
];

/// `value` with every varying field's value replaced by its JSON kind, and the partner's name
/// by a placeholder wherever it appears in a string.
fn normalized(value: &Value, partner: &str) -> Value {
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| {
                    let v = if VARYING.contains(&k.as_str()) {
                        json!(format!(
                            "<{}>",
                            match v {
                                Value::String(_) => "string",
                                Value::Number(_) => "number",
                                Value::Null => "null",
                                _ => "other",
                            }
                        ))
                    } else {
                        normalized(v, partner)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| normalized(v, partner)).collect()),
        Value::String(s) => Value::String(s.replace(partner, "<partner>")),
        other => other.clone(),
    }
}

/// What SAM's local API Gateway answers itself where API Gateway answers the template's
/// `GatewayResponses` (README, "SAM local": SAM CLI does not apply gateway responses). The
/// runner answers as API Gateway does; the status is the same.
fn sam_gateway_answer(status: u16, body: &Value) -> bool {
    let message = match status {
        401 => "Unauthorized",
        403 => {
            return body == &json!({"message": "User is not authorized to access this resource"})
                || body == &json!({"message": "Missing Authentication Token"});
        }
        _ => return false,
    };
    body == &json!({ "message": message })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `sam local start-api` (scripts/sam_local.sh) as a child, stopped when dropped.
struct SamApi {
    child: Child,
    log: PathBuf,
    base_url: String,
}

impl SamApi {
    fn start(env_vars: &Path) -> Self {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("{}.log", unique("fcfs-sam-api")));
        let child = Command::new("bash")
            .arg(script())
            .arg("start-api")
            .arg("--env-vars")
            .arg(env_vars)
            .env("FCFS_SAM_PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("bash runs scripts/sam_local.sh");
        let api = Self {
            child,
            log,
            base_url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sam local start-api did not listen within 120 s:\n{}",
                api.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        api
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for SamApi {
    fn drop(&mut self) {
        // SAM stops on TERM (the script exec'd it); KILL after 10 s.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_file(&self.log);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One partner session through `sam local start-api` and through the runner: the same statuses,
/// content types, `Retry-After` and bodies (ids and times aside), but for the answers API Gateway
/// itself gives, which SAM does not emulate (README, "SAM local").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runner_answers_a_partner_session_as_sam_local_does() {
    let _one_at_a_time = SAM.lock().await;

    // A grading run in 4 partitions, not the template's 64: under SAM this test drives the worker
    // through `sam local invoke`, one container per batch. Both sides alike.
    let env_vars = env_vars_with(&[("GRADING_PARTITIONS", "4")]);
    let sam = tokio::task::block_in_place(|| SamApi::start(&env_vars));
    let sam_partner = unique("sam-session");
    let mut on_sam = Client {
        side: Side::Sam,
        http: reqwest::Client::new(),
        base: sam.base_url.clone(),
        key: api_key(&sam_partner).await,
        answers: Vec::new(),
    };
    partner_session(&mut on_sam).await;
    let sam_log = sam.log_text();
    drop(sam);
    let _ = std::fs::remove_file(&env_vars);

    let runner = integration_tests::PartnerApi::on(
        "runner-session",
        integration_tests::serve(integration_tests::runner_config(&[("GRADING_PARTITIONS", "4".into())])).await,
    )
    .await;
    let mut on_runner = Client {
        side: Side::Runner,
        http: reqwest::Client::new(),
        base: runner.running.base_url.clone(),
        key: runner.key.clone(),
        answers: Vec::new(),
    };
    partner_session(&mut on_runner).await;
    runner.running.stop().await.unwrap();

    let mut differences = Vec::new();
    let mut tolerated = Vec::new();
    println!("{:<26} {:>6} {:>9} {:>9}", "step", "status", "SAM ms", "runner ms");
    for (s, r) in on_sam.answers.iter().zip(&on_runner.answers) {
        assert_eq!(s.step, r.step);
        println!(
            "{:<26} {:>6} {:>9.1} {:>9.1}",
            s.step,
            r.status,
            s.elapsed.as_secs_f64() * 1000.0,
            r.elapsed.as_secs_f64() * 1000.0
        );
        let (sb, rb) = (normalized(&s.body, &sam_partner), normalized(&r.body, &runner.partner));
        let mut why = Vec::new();
        if s.status != r.status {
            why.push(format!("status SAM {} runner {}", s.status, r.status));
        }
        let media = |ct: &Option<String>| {
            ct.as_deref()
                .map(|c| c.split(';').next().unwrap().trim().to_ascii_lowercase())
        };
        if media(&s.content_type) != media(&r.content_type) {
            why.push(format!(
                "content type SAM {:?} runner {:?}",
                s.content_type, r.content_type
            ));
        }
        if s.retry_after != r.retry_after {
            why.push(format!(
                "Retry-After SAM {:?} runner {:?}",
                s.retry_after, r.retry_after
            ));
        }
        if sb != rb {
            if s.status == r.status && sam_gateway_answer(s.status, &s.body) && r.body["requestId"].is_string() {
                tolerated.push(format!(
                    "{}: SAM {} / runner (API Gateway's, from the template) {}",
                    s.step, s.body, r.body
                ));
            } else {
                why.push(format!("body SAM {sb} runner {rb}"));
            }
        }
        if !why.is_empty() {
            differences.push(format!("{}: {}", s.step, why.join("; ")));
        }
    }
    assert_eq!(on_sam.answers.len(), on_runner.answers.len());
    // The first four answers are the gateway's own (no function runs); from the fifth on each SAM
    // request runs the authorizer's container, then the function's.
    let millis = |answers: &[Exchange]| {
        let mut ms: Vec<f64> = answers[4..].iter().map(|a| a.elapsed.as_secs_f64() * 1000.0).collect();
        let first = ms[0];
        ms.sort_by(f64::total_cmp);
        (first, ms[ms.len() / 2])
    };
    let ((sam_first, sam_median), (runner_first, runner_median)) =
        (millis(&on_sam.answers), millis(&on_runner.answers));
    println!(
        "per request: SAM first {sam_first:.0} ms, median {sam_median:.0} ms; runner first {runner_first:.1} ms, median {runner_median:.1} ms"
    );
    println!("tolerated (documented) differences:\n  {}", tolerated.join("\n  "));
    assert!(
        differences.is_empty(),
        "SAM local and the runner differ:\n  {}\n\nSAM's log:\n{sam_log}",
        differences.join("\n  ")
    );
    assert_eq!(
        tolerated.len(),
        4,
        "exactly the gateway's own answers differ: {tolerated:#?}"
    );
}
