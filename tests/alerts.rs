//! The alert path as `make up` runs it: the runner's `/metrics` → real Prometheus with the project's
//! rule file (`observability/alerts.yml`) → real Alertmanager with the project's configuration
//! (`observability/alertmanager.yml`) → a local HTTP server standing in for Discord's webhook.
//! Only the intervals are shorter than `make up`'s.
//!
//! And the `alert-notifier` function (AWS's path: CloudWatch alarm → SNS → notifier → Discord)
//! with its real webhook adapter, the URL in a Secrets Manager secret, against a local server
//! that answers 429 and 500 before it accepts, or never accepts.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use axum::Json;
use axum::extract::State;
use axum::routing::post;
use integration_tests::{queue_arn, repo_root, runner_config, sqs, unique};
use local_runner::{LocalApp, QUEUE_WATCH_ENV};
use serde_json::Value;

/// What Alertmanager posted to the fake webhook, in order.
type Posts = Arc<Mutex<Vec<Value>>>;

/// A webhook that records every JSON body and answers 204, as Discord does.
async fn fake_discord() -> (String, Posts) {
    let posts: Posts = Arc::default();
    let app = axum::Router::new()
        .route(
            "/api/webhooks/1/token",
            post(|State(posts): State<Posts>, Json(body): Json<Value>| async move {
                posts.lock().unwrap().push(body);
                axum::http::StatusCode::NO_CONTENT
            }),
        )
        .with_state(posts.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/api/webhooks/1/token"), posts)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `observability/FILE` with each `${NAME}` replaced, as scripts/stack.sh renders it.
fn render(file: &str, values: &[(&str, String)]) -> String {
    let mut text = std::fs::read_to_string(repo_root().join("observability").join(file)).unwrap();
    for (name, value) in values {
        text = text.replace(&format!("${{{name}}}"), value);
    }
    assert!(
        !text
            .lines()
            .any(|l| !l.trim_start().starts_with('#') && l.contains("${")),
        "{file}: a placeholder is left: {text}"
    );
    text
}

/// A child process killed when the test ends, passed or not.
struct Service(std::process::Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(program: &str, args: &[String], log: &Path) -> Service {
    let log = std::fs::File::create(log).unwrap();
    Service(
        std::process::Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{program} starts (scripts/install.sh installs it): {e}")),
    )
}

async fn wait_ready(http: &reqwest::Client, url: &str, deadline: Instant) {
    loop {
        if let Ok(r) = http.get(url).timeout(Duration::from_secs(2)).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(Instant::now() < deadline, "{url} not ready in time");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_in_the_dlq_reaches_discord_through_prometheus_and_alertmanager() {
    let (webhook, posts) = fake_discord().await;
    let sqs = sqs().await;
    // A queue pair of the test's own, named like the template's (`…-issue-requests`, `…-dlq`) so
    // the rules' queue patterns match, with a short visibility timeout and maxReceiveCount 2.
    let name = format!("{}-issue-requests", unique("fcfs-alert"));
    let dlq_url = sqs
        .create_queue()
        .queue_name(format!("{name}-dlq"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let dlq_arn = queue_arn(&sqs, &dlq_url).await;
    let queue_url = sqs
        .create_queue()
        .queue_name(&name)
        .attributes(QueueAttributeName::VisibilityTimeout, "1")
        .attributes(
            QueueAttributeName::RedrivePolicy,
            serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}).to_string(),
        )
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let arn = queue_arn(&sqs, &queue_url).await;

    let config = runner_config(&[(QUEUE_WATCH_ENV, "0.5".to_owned())]);
    let mut app = LocalApp::load(&config).await.expect("the runner loads");
    app.set_source_queue("IssueWriterFunction", &queue_url, &arn);
    app.watch_queue(&dlq_url);
    let running = app.start().await.unwrap();
    let runner = running.base_url.trim_start_matches("http://").to_owned();

    let dir = std::env::temp_dir().join(unique("fcfs-alerts"));
    std::fs::create_dir_all(&dir).unwrap();
    let (prometheus_port, alertmanager_port) = (free_port(), free_port());
    let alertmanager = format!("127.0.0.1:{alertmanager_port}");
    std::fs::write(
        dir.join("prometheus.yml"),
        render(
            "prometheus.yml",
            &[
                ("INTERVAL", "1s".into()),
                (
                    "RULES",
                    repo_root().join("observability/alerts.yml").display().to_string(),
                ),
                ("ALERTMANAGER", alertmanager.clone()),
                ("RUNNER", runner),
            ],
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("alertmanager.yml"),
        render(
            "alertmanager.yml",
            &[
                ("RECEIVER", "discord".into()),
                ("GROUP_WAIT", "1s".into()),
                ("GROUP_INTERVAL", "1s".into()),
                ("DISCORD_WEBHOOK_URL", webhook),
            ],
        ),
    )
    .unwrap();
    let path = |p: &str| dir.join(p).display().to_string();
    let _alertmanager = spawn(
        "prometheus-alertmanager",
        &[
            format!("--config.file={}", path("alertmanager.yml")),
            format!("--storage.path={}", path("am-data")),
            format!("--web.listen-address={alertmanager}"),
            "--cluster.listen-address=".into(),
        ],
        &dir.join("alertmanager.log"),
    );
    let _prometheus = spawn(
        "prometheus",
        &[
            format!("--config.file={}", path("prometheus.yml")),
            format!("--storage.tsdb.path={}", path("prom-data")),
            format!("--web.listen-address=127.0.0.1:{prometheus_port}"),
            format!("--web.external-url=http://127.0.0.1:{prometheus_port}"),
        ],
        &dir.join("prometheus.log"),
    );
    let http = reqwest::Client::new();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(120);
    wait_ready(&http, &format!("http://{alertmanager}/-/ready"), deadline).await;
    wait_ready(&http, &format!("http://127.0.0.1:{prometheus_port}/-/ready"), deadline).await;

    // Nothing about our queues before the poison.
    let ours = |post: &Value| post.to_string().contains(&format!("{name}-dlq"));
    assert!(!posts.lock().unwrap().iter().any(ours));

    sqs.send_message()
        .queue_url(&queue_url)
        .message_body("poison: not a reservation")
        .send()
        .await
        .unwrap();
    let alert = loop {
        if let Some(post) = posts.lock().unwrap().iter().find(|p| ours(p)).cloned() {
            break post;
        }
        assert!(
            Instant::now() < deadline,
            "no alert reached the webhook in {:?}; logs in {} (posts so far: {:?})",
            deadline - started,
            dir.display(),
            posts.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    println!(
        "the alert as it arrived, {:.1} s after the poison was sent:\n{}",
        started.elapsed().as_secs_f64(),
        serde_json::to_string_pretty(&alert).unwrap()
    );

    // Discord's webhook shape: embeds with a title, a description and a colour.
    let embed = &alert["embeds"][0];
    let title = embed["title"].as_str().expect("an embed title");
    let description = embed["description"].as_str().expect("an embed description");
    assert!(
        title.contains("DeadLetterQueueNotEmpty") && title.contains("FIRING"),
        "{alert}"
    );
    assert!(title.contains("critical"), "{alert}");
    assert!(description.contains(&format!("`{name}-dlq`")), "{alert}");
    assert!(description.contains("message(s) in dead-letter queue"), "{alert}");
    assert!(
        description.contains(&format!("Graph: http://127.0.0.1:{prometheus_port}/graph?")),
        "a link to the alert's graph: {alert}"
    );
    assert!(embed["color"].as_u64().is_some(), "{alert}");
    // The message really sits in the DLQ: visible, or in flight after the watcher's peek (fauxqs
    // counts a message whose visibility timeout of 0 ran out as in flight until the next receive).
    let depth = sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap();
    let count = |name: &QueueAttributeName| -> u64 {
        depth
            .attributes()
            .and_then(|a| a.get(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name:?} in {depth:?}"))
    };
    assert_eq!(
        count(&QueueAttributeName::ApproximateNumberOfMessages)
            + count(&QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        1
    );

    running.stop().await.unwrap();
    for url in [queue_url, dlq_url] {
        let _ = sqs.delete_queue().queue_url(url).send().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A webhook that answers from a script (status, `Retry-After`), then 204; records when and what.
type Script = Arc<Mutex<(Vec<(u16, Option<&'static str>)>, Vec<(Instant, Value)>)>>;

async fn scripted_discord(answers: Vec<(u16, Option<&'static str>)>) -> (String, Script) {
    let script: Script = Arc::new(Mutex::new((answers, Vec::new())));
    let app = axum::Router::new()
        .route(
            "/api/webhooks/2/token",
            post(|State(script): State<Script>, Json(body): Json<Value>| async move {
                let mut script = script.lock().unwrap();
                script.1.push((Instant::now(), body));
                let (status, retry_after) = if script.0.is_empty() {
                    (204, None)
                } else {
                    script.0.remove(0)
                };
                let mut response = axum::response::Response::new(axum::body::Body::from(
                    r#"{"message":"scripted","retry_after":0.3,"global":false}"#,
                ));
                *response.status_mut() = axum::http::StatusCode::from_u16(status).unwrap();
                if let Some(after) = retry_after {
                    response.headers_mut().insert("retry-after", after.parse().unwrap());
                }
                response
            }),
        )
        .with_state(script.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/api/webhooks/2/token"), script)
}

/// The notifier as its main.rs builds it, reading the webhook URL from a new secret.
async fn notifier_with_webhook(
    url: &str,
) -> (
    alert_notifier::AlertNotifierFunction<fcfs_shared::adapters::discord::DiscordWebhook>,
    String,
) {
    let sdk = fcfs_shared::config::aws_sdk_config().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
    let name = unique("fcfs-discord-webhook");
    secrets
        .create_secret()
        .name(&name)
        .secret_string(url)
        .send()
        .await
        .expect("the secret is created");
    let settings = fcfs_shared::config::Settings::new([("DISCORD_WEBHOOK_SECRET".to_owned(), name.clone())].into());
    (
        alert_notifier::AlertNotifierFunction::from_settings(&settings, &sdk).expect("the notifier starts"),
        name,
    )
}

fn alarm_event() -> aws_lambda_events::sns::SnsEvent {
    let text = std::fs::read_to_string(repo_root().join("events/alert-notifier.json")).unwrap();
    serde_json::from_str(&text).expect("AWS's sample shape parses as an SNS event")
}

#[tokio::test]
async fn the_notifier_posts_a_cloudwatch_alarm_to_discord_through_429_and_500() {
    let (url, script) = scripted_discord(vec![(429, Some("0.3")), (500, None), (502, None)]).await;
    let (notifier, _) = notifier_with_webhook(&url).await;
    let started = Instant::now();
    assert_eq!(notifier.handle(alarm_event()).await, Ok(1));
    let (_, posts) = &*script.lock().unwrap();
    assert_eq!(posts.len(), 4, "429, 500, 502, then accepted");
    let gaps: Vec<Duration> = posts.windows(2).map(|w| w[1].0 - w[0].0).collect();
    assert!(
        gaps[0] >= Duration::from_millis(300),
        "waited as the 429 asked: {gaps:?}"
    );
    assert!(gaps[2] > gaps[1], "backoff grows: {gaps:?}");
    let message = &posts[3].1;
    println!(
        "delivered after {:.1} s:\n{}",
        started.elapsed().as_secs_f64(),
        serde_json::to_string_pretty(message).unwrap()
    );
    let embed = &message["embeds"][0];
    assert_eq!(embed["title"], "🔴 ALARM: fcfs-prod-issue-dlq-not-empty");
    assert!(
        embed["url"]
            .as_str()
            .unwrap()
            .starts_with("https://us-east-1.console.aws.amazon.com/cloudwatch/")
    );
    assert_eq!(embed["fields"][0]["name"], "What");
    assert_eq!(message["username"], "fcfs-coupons alerts");
    assert_eq!(posts[0].1, *message, "every attempt posts the same message");
}

#[tokio::test]
async fn the_notifier_fails_loudly_when_the_webhook_never_accepts() {
    let (url, script) = scripted_discord(vec![(500, None); 10]).await;
    let (notifier, _) = notifier_with_webhook(&url).await;
    let err = notifier.handle(alarm_event()).await.expect_err("the invocation fails");
    assert!(
        err.to_string()
            .contains("1 of 1 alert(s) not delivered to Discord after 5 attempt(s): the webhook answered 500"),
        "{err}"
    );
    assert_eq!(script.lock().unwrap().1.len(), 5);

    // A secret that holds no URL: one clear failure naming the fix, and no post.
    let (notifier, name) = notifier_with_webhook("not a url").await;
    let err = notifier.handle(alarm_event()).await.expect_err("the invocation fails");
    assert!(
        err.to_string()
            .contains(&format!("secret {name} does not hold a webhook URL")),
        "{err}"
    );
}

/// Nothing fails silently locally either: a scheduled invocation is retried as Lambda retries an
/// asynchronous one (twice, with the same event), and when every attempt failed, Lambda's failure
/// record goes to the function's `OnFailure` queue (the template's alerts DLQ, whose not-empty
/// alert reaches the team); every failed attempt counts in `fcfs_function_errors_total`, and a
/// tick skipped while the retries run in `fcfs_function_throttles_total`. The database is a
/// closed port, so the coupon expiry sweep fails every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_invocation_failing_every_attempt_lands_in_its_on_failure_queue() {
    let sqs = sqs().await;
    let failures = sqs
        .create_queue()
        .queue_name(format!("{}-alerts-dlq", unique("fcfs-failures")))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let config = runner_config(&[
        ("DATABASE_URL", "mysql://fcfs:fcfs@127.0.0.1:9/fcfs".to_owned()),
        ("DATABASE_SSL_MODE", "DISABLED".to_owned()),
        (local_runner::SCHEDULE_RATE_ENV, "1".to_owned()),
    ]);
    let mut app = LocalApp::load(&config).await.expect("the runner loads");
    app.set_failure_queue("CouponExpiryFunction", &failures);
    let running = app.start().await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    let record = loop {
        let received = sqs
            .receive_message()
            .queue_url(&failures)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("SQS answers receive");
        if let Some(body) = received.messages().first().and_then(|m| m.body()) {
            break serde_json::from_str::<Value>(body).expect("a JSON failure record");
        }
        assert!(Instant::now() < deadline, "no failure record in 60 s");
    };
    let context = &record["requestContext"];
    assert_eq!(context["condition"], "RetriesExhausted", "{record}");
    assert_eq!(
        context["approximateInvokeCount"], 3,
        "the attempt and two retries: {record}"
    );
    assert!(
        context["functionArn"]
            .as_str()
            .is_some_and(|arn| arn.contains(":function:CouponExpiryFunction")),
        "{record}"
    );
    assert_eq!(record["requestPayload"]["detail-type"], "Scheduled Event", "{record}");
    assert_eq!(record["responseContext"]["functionError"], "Unhandled", "{record}");
    assert!(record["responsePayload"]["errorMessage"].is_string(), "{record}");

    let metrics = reqwest::get(format!("{}/metrics", running.base_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains("function=\"CouponExpiryFunction\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(count("fcfs_function_errors_total") >= 3.0, "{metrics}");
    assert!(count("fcfs_function_throttles_total") >= 1.0, "{metrics}");
    running.stop().await.unwrap();
    sqs.delete_queue().queue_url(&failures).send().await.unwrap();
}
