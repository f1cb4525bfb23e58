//! Partner events (issue 28) beyond the webhook itself, through the runner and the real tools:
//!
//! - The EventBridge bus on LocalStack: a rule of the test's own on `EVENT_BUS_NAME` (source
//!   `fcfs-coupons`, `detail.partnerId` the test's partner) targeting an SQS queue of its own; every
//!   event the partner's operations produced arrives on that queue with `DetailType` its type,
//!   `Source` fcfs-coupons and `Detail` exactly the envelope the pull API answers.
//! - Pause and replay through the CLI: an endpoint answering 500 until the relay gives up and
//!   pauses the partner (and stops POSTing); then the endpoint answers 200 and the real
//!   `fcfs-admin events replay` resumes it: every event delivered, `GET /v1/webhooks` and
//!   `fcfs-admin events status` ACTIVE. A replay for a partner without a registration fails naming
//!   it.
//!
//! The tests of this file run at once, each with a runner whose relay serves every partner of the
//! shared database (a relay leases any due partner). So every runner here has the same retry
//! knobs: `WEBHOOK_MAX_BACKOFF_SECONDS=1` and `WEBHOOK_GIVE_UP_SECONDS=3`, and whichever relay
//! makes an attempt on the failing partner of the pause test applies the same rule. (A runner of
//! another binary run at the same time against the same database, with the default 24 h give-up,
//! would only delay the pause: the attempts it takes retry, those ours take pause. Conversely our
//! 3 s give-up would pause another binary's failing partner, so these binaries are not meant to run
//! side by side; `cargo test` runs them one after the other.)
//!
//! Every wait has a deadline. `fcfs_shared::events` is used only to set the bus test's stage (its
//! cursors, through the events context's own store): what is checked goes through the API, the
//! bus and the CLI.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, SubsecRound, Utc};
use fcfs_shared::adapters::mysql::MySqlStore;
use fcfs_shared::events::ports::EventLog;
use fcfs_shared::events::relay::EVENTBRIDGE_CURSOR;
use futures_util::FutureExt;
use integration_tests::services::workspace_binary;
use integration_tests::webhook_receiver::{Mode, WebhookReceiver, verify_with_python};
use integration_tests::{api_key, env, queue_arn, queue_with_dlq, receive, runner_config, serve, sqs, unique};
use serde_json::{Value, json};

/// Deliveries happen within seconds of the commit; these bounds leave room for a loaded machine.
const DEADLINE: Duration = Duration::from_secs(60);

/// How long the bus test waits in all for the events earlier test files recorded to go out on
/// the bus before its own (the cursor must also move at least once every `DEADLINE`).
const BUS_BACKLOG_LIMIT: Duration = Duration::from_secs(20 * 60);

/// The retry knobs every runner of this file has (see the module's comment).
const MAX_BACKOFF_SECONDS: &str = "1";
const GIVE_UP_SECONDS: &str = "3";

/// A runner of the test's own: private issue and grading queues, the file's retry knobs.
struct Stack {
    running: local_runner::Running,
    http: reqwest::Client,
}

impl Stack {
    async fn start() -> Self {
        let sqs = sqs().await;
        let (issue_queue, _) = queue_with_dlq(&sqs, 5).await;
        let (grading_queue, _) = queue_with_dlq(&sqs, 30).await;
        let env: Vec<(&str, String)> = vec![
            ("ISSUE_QUEUE_URL", issue_queue),
            ("GRADING_QUEUE_URL", grading_queue),
            ("WEBHOOK_ALLOW_LOOPBACK", "true".into()),
            ("WEBHOOK_MAX_BACKOFF_SECONDS", MAX_BACKOFF_SECONDS.into()),
            ("WEBHOOK_GIVE_UP_SECONDS", GIVE_UP_SECONDS.into()),
        ];
        Self {
            running: serve(runner_config(&env)).await,
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

    /// A points write, with an Idempotency-Key of its own: its receipt.
    async fn points(&self, path: &str, body: Value) -> Value {
        let (status, receipt) = self
            .call(reqwest::Method::POST, path, Some(body), Some(&unique("idem")))
            .await;
        assert_eq!(status, 201, "{path}: {receipt}");
        receipt
    }

    async fn earn(&self, user: &str, amount: u64) -> Value {
        self.points(
            &format!("/v1/users/{user}/points/earn"),
            json!({"amount": amount, "reason": "events delivery test"}),
        )
        .await
    }

    /// A new registration of `url` for `events`: its secret.
    async fn registered(&self, url: &str, events: &[&str]) -> String {
        let (status, body) = self
            .call(
                reqwest::Method::PUT,
                "/v1/webhooks",
                Some(json!({"url": url, "events": events})),
                None,
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["secret"]
            .as_str()
            .unwrap_or_else(|| panic!("no secret: {body}"))
            .to_owned()
    }

    async fn webhook(&self) -> Value {
        let (status, body) = self.get("/v1/webhooks").await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Every event of the pull API, page by page.
    async fn pull_all(&self) -> Vec<Value> {
        let mut after = 0;
        let mut all = Vec::new();
        for _ in 0..1000 {
            let (status, page) = self.get(&format!("/v1/events?after={after}&limit=1000")).await;
            assert_eq!(status, 200, "{page}");
            let events = page["events"].as_array().unwrap_or_else(|| panic!("{page}")).clone();
            if events.is_empty() {
                return all;
            }
            after = page["next"].as_u64().unwrap_or_else(|| panic!("no next: {page}"));
            all.extend(events);
        }
        panic!("the pull API never ran out of pages");
    }

    /// Waits (at most `DEADLINE`) until the pull API has `n` events of the partner (they have
    /// their sequence once the relay has seen them committed): those events.
    async fn wait_pulled(&self, n: usize) -> Vec<Value> {
        let until = Instant::now() + DEADLINE;
        loop {
            let pulled = self.pull_all().await;
            if pulled.len() >= n {
                assert_eq!(pulled.len(), n, "no more events than produced: {pulled:#?}");
                return pulled;
            }
            assert!(
                Instant::now() < until,
                "{} of {n} events pulled within {DEADLINE:?}: {pulled:#?}",
                pulled.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Polls `check` every 200 ms until it answers `Some`, or panics naming `what` at the deadline.
async fn wait_for<T>(what: &str, deadline: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let until = Instant::now() + deadline;
    loop {
        if let Some(done) = check().await {
            return done;
        }
        assert!(Instant::now() < until, "{what}: not within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn by_id(events: &[Value]) -> BTreeMap<String, Value> {
    events
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap_or_else(|| panic!("no id: {e}")).to_owned(),
                e.clone(),
            )
        })
        .collect()
}

/// `fcfs-admin <args>` (the workspace's binary, `DATABASE_URL` from this environment): its exit
/// code, stdout and stderr. Run off the runtime's workers, which serve the in-process runner.
async fn fcfs_admin(args: &[&str]) -> (Option<i32>, String, String) {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let shown = args.join(" ");
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(workspace_binary("fcfs-admin"))
                .args(&args)
                // The error a refusal prints, without anyhow's backtrace.
                .env("RUST_BACKTRACE", "0")
                .output()
                .expect("fcfs-admin runs")
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("fcfs-admin {shown} did not end within 60 s"))
    .expect("fcfs-admin's task");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    eprintln!(
        "fcfs-admin {shown}: {:?}\n  stdout: {stdout}\n  stderr: {stderr}",
        out.status.code()
    );
    (out.status.code(), stdout, stderr)
}

/// A rule on the stack's bus and the queue it targets, on LocalStack.
struct BusTap {
    events: aws_sdk_eventbridge::Client,
    sqs: aws_sdk_sqs::Client,
    bus: String,
    rule: String,
    queue: String,
}

const TARGET_ID: &str = "events-delivery-test-queue";

impl BusTap {
    /// A queue and a rule routing the bus's events of `partner` (source fcfs-coupons) to it.
    async fn create(partner: &str) -> Self {
        let sdk = fcfs_shared::config::aws_sdk_config().await;
        // EventBridge on LocalStack delivers to LocalStack's SQS, whatever emulator the issue
        // queues use in another pass (`AWS_ENDPOINT_URL_SQS`): the queue is made there explicitly.
        let localstack = env("AWS_ENDPOINT_URL");
        let sqs = aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::config::Builder::from(&sdk)
                .endpoint_url(&localstack)
                .build(),
        );
        let events = aws_sdk_eventbridge::Client::from_conf(
            aws_sdk_eventbridge::config::Builder::from(&sdk)
                .endpoint_url(&localstack)
                .build(),
        );
        let bus = env("EVENT_BUS_NAME");
        let queue = sqs
            .create_queue()
            .queue_name(unique("fcfs-it-bus"))
            .send()
            .await
            .expect("LocalStack's SQS creates a queue")
            .queue_url
            .expect("a queue URL");
        let arn = queue_arn(&sqs, &queue).await;
        let rule = unique("fcfs-it-bus");
        let rule_arn = events
            .put_rule()
            .name(&rule)
            .event_bus_name(&bus)
            .event_pattern(json!({"source": ["fcfs-coupons"], "detail": {"partnerId": [partner]}}).to_string())
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "a rule on {bus}: {}",
                    aws_sdk_eventbridge::error::DisplayErrorContext(e)
                )
            })
            .rule_arn
            .expect("the rule's ARN");
        // The queue lets the bus's rule send to it, as AWS requires (LocalStack may not check).
        let policy = json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}}
            }]
        });
        sqs.set_queue_attributes()
            .queue_url(&queue)
            .attributes(aws_sdk_sqs::types::QueueAttributeName::Policy, policy.to_string())
            .send()
            .await
            .expect("the queue's policy");
        let put = events
            .put_targets()
            .rule(&rule)
            .event_bus_name(&bus)
            .targets(
                aws_sdk_eventbridge::types::Target::builder()
                    .id(TARGET_ID)
                    .arn(&arn)
                    .build()
                    .expect("a target"),
            )
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "the rule's target: {}",
                    aws_sdk_eventbridge::error::DisplayErrorContext(e)
                )
            });
        assert_eq!(put.failed_entry_count(), 0, "{put:?}");
        Self {
            events,
            sqs,
            bus,
            rule,
            queue,
        }
    }

    /// Every message received until `done` holds of them (by EventBridge event, each message's
    /// body parsed), or the deadline: each is deleted once read.
    async fn receive_until(
        &self,
        deadline: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) -> Result<Vec<Value>, Vec<Value>> {
        let until = Instant::now() + deadline;
        let mut got = Vec::new();
        loop {
            if done(&got) {
                return Ok(got);
            }
            if Instant::now() >= until {
                return Err(got);
            }
            for message in receive(&self.sqs, &self.queue, 1).await {
                let body = message.body().unwrap_or_default();
                got.push(serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}")));
                if let Some(handle) = message.receipt_handle() {
                    let _ = self
                        .sqs
                        .delete_message()
                        .queue_url(&self.queue)
                        .receipt_handle(handle)
                        .send()
                        .await;
                }
            }
        }
    }

    /// Removes the target, the rule and the queue (best effort, each logged on failure).
    async fn remove(&self) {
        if let Err(e) = self
            .events
            .remove_targets()
            .rule(&self.rule)
            .event_bus_name(&self.bus)
            .ids(TARGET_ID)
            .send()
            .await
        {
            eprintln!("removing the target of {}: {e:?}", self.rule);
        }
        if let Err(e) = self
            .events
            .delete_rule()
            .name(&self.rule)
            .event_bus_name(&self.bus)
            .send()
            .await
        {
            eprintln!("deleting the rule {}: {e:?}", self.rule);
        }
        if let Err(e) = self.sqs.delete_queue().queue_url(&self.queue).send().await {
            eprintln!("deleting the queue {}: {e:?}", self.queue);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_put_on_the_bus_as_the_pull_api_answers_it() {
    let started = Instant::now();
    skip_earlier_events_on_the_bus().await;
    let stack = Stack::start().await;
    let partner = stack.partner("events-bus").await;
    // The rule exists before any of the partner's events does, so none is published unrouted.
    let tap = BusTap::create(&partner.id).await;
    let outcome = AssertUnwindSafe(bus_checks(&partner, &tap)).catch_unwind().await;
    tap.remove().await;
    let _ = stack.running.stop().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    eprintln!("bus test: {:?}", started.elapsed());
}

/// The events context's store, for the bus test's cursors.
async fn event_log() -> MySqlStore {
    MySqlStore::new(integration_tests::mysql().await)
}

/// The events earlier test files recorded in this stack are no concern of the bus test, but the
/// bus takes them in sequence order before its own: in a clean clone's make test, 37,000 waited
/// there, and LocalStack's PutEvents took about 55 events a second on a slow machine. The bus's
/// cursor is moved past every event sequenced so far; a cursor only ever moves forward
/// (`EventLog::move_cursor`), so a relay running meanwhile cannot move it back. Events recorded
/// but not yet sequenced still go out before the test's own.
async fn skip_earlier_events_on_the_bus() {
    let log = event_log().await;
    let sequenced = log.last_sequence().await.unwrap();
    log.move_cursor(EVENTBRIDGE_CURSOR, sequenced).await.unwrap();
}

/// Waits until the relay has put every event up to `sequence` on the bus (its `eventbridge`
/// cursor). The bus is published in sequence order, so events recorded before the test's own go
/// out first. The wait lasts as long as the cursor keeps moving, at most `BUS_BACKLOG_LIMIT`.
async fn bus_cursor_reaches(sequence: u64) {
    let log = event_log().await;
    let started = Instant::now();
    let (mut seen, mut moved) = (None, Instant::now());
    loop {
        let position = log.cursor(EVENTBRIDGE_CURSOR).await.unwrap();
        if position >= sequence {
            eprintln!("bus cursor passed sequence {sequence} after {:?}", started.elapsed());
            return;
        }
        if seen != Some(position) {
            (seen, moved) = (Some(position), Instant::now());
        }
        assert!(
            moved.elapsed() < DEADLINE,
            "the bus cursor stopped at {position} for {DEADLINE:?}, short of {sequence}"
        );
        assert!(
            started.elapsed() < BUS_BACKLOG_LIMIT,
            "the bus cursor is at {position} after {BUS_BACKLOG_LIMIT:?}, short of {sequence}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn bus_checks(partner: &Partner, tap: &BusTap) {
    // Four events of two types: three earns, then a use of some of those points.
    for (i, amount) in [100_u64, 20, 3].into_iter().enumerate() {
        partner.earn(&format!("u-{i}"), amount).await;
    }
    partner
        .points(
            "/v1/users/u-0/points/use",
            json!({"amount": 40, "orderId": "order-bus"}),
        )
        .await;
    let pulled = by_id(&partner.wait_pulled(4).await);
    let kinds: BTreeMap<&str, usize> = pulled.values().fold(BTreeMap::new(), |mut m, e| {
        *m.entry(e["type"].as_str().unwrap()).or_default() += 1;
        m
    });
    assert_eq!(
        kinds,
        BTreeMap::from([("points.earned", 3), ("points.used", 1)]),
        "{pulled:#?}"
    );

    let arrived = |got: &[Value]| -> BTreeSet<String> {
        got.iter()
            .filter_map(|m| m["detail"]["id"].as_str().map(str::to_owned))
            .collect()
    };
    let wanted: BTreeSet<String> = pulled.keys().cloned().collect();
    let last = pulled.values().filter_map(|e| e["sequence"].as_u64()).max().unwrap();
    bus_cursor_reaches(last).await;
    let messages = match tap
        .receive_until(DEADLINE, |got| arrived(got).is_superset(&wanted))
        .await
    {
        Ok(messages) => messages,
        Err(got) => panic!(
            "{} of the {} events reached the queue within {DEADLINE:?}: {got:#?}",
            arrived(&got).intersection(&wanted).count(),
            wanted.len()
        ),
    };
    // Only the rule's events (the partner's), each as the pull API answers it; a second relay
    // publishing the same events again (they share the bus's cursor) sends identical copies.
    assert_eq!(arrived(&messages), wanted, "{messages:#?}");
    for message in &messages {
        let envelope = &message["detail"];
        let id = envelope["id"].as_str().unwrap();
        let expected = &pulled[id];
        assert_eq!(message["source"], "fcfs-coupons", "{message}");
        assert_eq!(message["detail-type"], expected["type"], "{message}");
        assert_eq!(
            envelope, expected,
            "Detail is the pulled envelope (id, sequence, data…)"
        );
        assert_eq!(envelope["partnerId"], json!(partner.id));
    }
    eprintln!(
        "{} events, {} messages on the rule's queue (duplicates identical)",
        wanted.len(),
        messages.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_deliveries_resume_with_every_event_after_a_cli_replay() {
    let started = Instant::now();
    let stack = Stack::start().await;
    let partner = stack.partner("events-replay").await;
    let receiver = WebhookReceiver::start_in(Mode::Fail).await;
    let secret = partner.registered(&receiver.url, &["points.earned"]).await;

    // An instant before the first event (whole seconds in the past, so the database's rounding of
    // occurredAt cannot put an event before it).
    let since = (Utc::now() - chrono::Duration::seconds(2)).trunc_subsecs(0);
    let since_arg = since.to_rfc3339_opts(SecondsFormat::Secs, true);
    for i in 0..4 {
        partner.earn(&format!("u-{i}"), 10 + i).await;
    }

    // Failing for longer than the give-up (3 s, retried every 1–1.25 s): paused.
    let paused = wait_for("PAUSED", DEADLINE, async || {
        let state = partner.webhook().await;
        (state["status"] == "PAUSED").then_some(state)
    })
    .await;
    assert!(
        paused["lastError"].as_str().is_some_and(|e| e.contains("500")),
        "the endpoint's answer is the last error: {paused}"
    );
    assert!(paused["failingSince"].is_string(), "{paused}");
    let posts_when_paused = receiver.deliveries().len();
    assert!(
        posts_when_paused >= 2,
        "retried before pausing: {posts_when_paused} POSTs"
    );
    assert!(receiver.delivered_ids().is_empty());

    // Paused: no relay POSTs any more (every relay retries within 1.25 s while it is not paused).
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        receiver.deliveries().len(),
        posts_when_paused,
        "a POST arrived after the partner was paused"
    );
    assert_eq!(partner.webhook().await["status"], "PAUSED");
    let (code, stdout, _) = fcfs_admin(&["events", "status", "--partner", &partner.id]).await;
    assert_eq!(code, Some(0), "{stdout}");
    let status: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(
        (&status["status"], &status["partnerId"]),
        (&json!("PAUSED"), &json!(partner.id)),
        "{status}"
    );
    assert!(status["pausedAt"].is_string(), "{status}");

    // The endpoint is back; the operator replays from before the first event.
    receiver.set_mode(Mode::Ok);
    let pulled = partner.wait_pulled(4).await;
    let first = pulled.iter().map(|e| e["sequence"].as_u64().unwrap()).min().unwrap();
    let last = pulled.iter().map(|e| e["sequence"].as_u64().unwrap()).max().unwrap();
    let (code, stdout, stderr) =
        fcfs_admin(&["events", "replay", "--partner", &partner.id, "--since", &since_arg]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: deliveries resume after sequence {} ",
            partner.id,
            first - 1
        )),
        "the replay names the partner and where it resumes: {stderr}"
    );

    // Every event delivered, as pulled, signed with the partner's secret.
    receiver.wait_for_delivered(pulled.len(), DEADLINE).await;
    let delivered = by_id(&receiver.delivered_events());
    assert_eq!(delivered, by_id(&pulled), "delivered as the pull API answers them");
    for delivery in receiver.deliveries().iter().filter(|d| d.answered == Some(200)) {
        assert!(verify_with_python(&secret, delivery), "signed with the secret");
    }
    let state = wait_for("deliveredThrough the last event", DEADLINE, async || {
        let state = partner.webhook().await;
        (state["deliveredThrough"].as_u64() >= Some(last)).then_some(state)
    })
    .await;
    assert_eq!(
        (&state["status"], &state["lastError"], &state["failingSince"]),
        (&json!("ACTIVE"), &Value::Null, &Value::Null),
        "{state}"
    );
    let (code, stdout, _) = fcfs_admin(&["events", "status", "--partner", &partner.id]).await;
    assert_eq!(code, Some(0), "{stdout}");
    let status: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(status["status"], "ACTIVE", "{status}");
    assert!(status["deliveredThrough"].as_u64() >= Some(last), "{status}");
    assert_eq!(status["pausedAt"], Value::Null, "{status}");

    // A partner without a registration: refused, named.
    let nobody = unique("events-unregistered");
    let (code, stdout, stderr) = fcfs_admin(&["events", "replay", "--partner", &nobody, "--since", &since_arg]).await;
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}: {stdout}{stderr}");
    assert!(
        stderr.contains(&format!("{nobody} has no webhook registration")),
        "{stderr}"
    );
    let (code, _, stderr) = fcfs_admin(&["events", "status", "--partner", &nobody]).await;
    assert!(code.is_some_and(|c| c != 0) && stderr.contains(&nobody), "{stderr}");

    let _ = stack.running.stop().await;
    eprintln!("replay test: {:?}", started.elapsed());
}
