//! What a deployment relies on, tried on the local stack: database credentials that come only from
//! (the local emulator's) Secrets Manager, and functions whose start survives a missing secret.

use std::time::Duration;

use campaign_api::CampaignApi;
use fcfs_shared::config::{Settings, aws_sdk_config};
use fcfs_shared::testkit::gateway_request;
use integration_tests::services::{LambdaBinary, Persistence, PrivateMariaDb, PrivateRedis, RunnerProcess};
use integration_tests::{env, reply, repo_root, unique};
use serde_json::{Value, json};

fn new_campaign() -> Value {
    let now = chrono::Utc::now();
    json!({
        "name": "from-secret", "totalQuantity": 10,
        "issueStartsAt": now, "issueEndsAt": now + chrono::Duration::hours(1),
        "couponExpiresAt": now + chrono::Duration::days(7), "discount": {"type": "AMOUNT", "value": 100}
    })
}

/// The RDS JSON form of the stack's `DATABASE_URL`.
fn secret_value() -> String {
    let url = reqwest::Url::parse(&env("DATABASE_URL")).expect("DATABASE_URL is a URL");
    json!({
        "engine": "mysql", "host": url.host_str().unwrap(), "port": url.port().unwrap_or(3306),
        "username": url.username(), "password": url.password().unwrap_or_default(),
        "dbname": url.path().trim_start_matches('/'),
    })
    .to_string()
}

/// A function configured with a secret that does not exist yet starts, answers 503 with
/// Retry-After, and serves normally once the secret exists: no restart, no URL, no password in
/// its settings.
#[tokio::test]
async fn a_function_reads_database_credentials_from_secrets_manager_when_they_appear() {
    let sdk = aws_sdk_config().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
    let name = unique("fcfs-test-database");
    let settings = Settings::new(
        [
            ("DATABASE_SECRET_ARN", name.as_str()),
            ("DATABASE_SSL_MODE", "DISABLED"),
            ("MYSQL_TIMEOUT_MS", "3000"),
            ("REDIS_URL", &env("REDIS_URL")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    );
    let api = CampaignApi::from_settings(&settings, &sdk)
        .await
        .expect("starts without reaching Secrets Manager or MySQL");
    let partner = unique("secret");
    let create = || gateway_request("POST", "/v1/campaigns", &[], new_campaign().to_string(), Some(&partner));

    let response = api.handle(create()).await;
    assert_eq!(response.status(), 503, "{:?}", reply(response));
    let response = api.handle(create()).await;
    assert!(response.headers().contains_key("retry-after"));

    secrets
        .create_secret()
        .name(&name)
        .secret_string(secret_value())
        .send()
        .await
        .expect("create the secret");
    let (status, body) = reply(api.handle(create()).await);
    assert_eq!(status, 201, "{body}");
}

/// The local runner serves the template with no `DATABASE_URL` at all (empty counts as unset):
/// every MySQL user takes its credentials from `DATABASE_SECRET_ARN`, the secret the stack
/// scripts put on the local Secrets Manager.
#[tokio::test]
async fn the_runner_serves_with_credentials_only_from_the_local_secret() {
    env("DATABASE_SECRET_ARN");
    let runner = RunnerProcess::spawn(&[("DATABASE_URL".to_owned(), String::new())]).await;
    let partner = unique("runner-secret");
    let key = integration_tests::api_key(&partner).await;
    let response = reqwest::Client::new()
        .post(format!("{}/v1/campaigns", runner.base_url()))
        .header("X-API-KEY", &key)
        .json(&new_campaign())
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .unwrap_or_else(|e| panic!("no answer: {e}\n{}", runner.log_tail(30)));
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 201, "{body}\n{}", runner.log_tail(30));
    assert!(
        runner
            .log_tail(200)
            .contains("database credentials read from Secrets Manager"),
        "{}",
        runner.log_tail(30)
    );
}

/// `DATABASE_SSL_MODE` is applied, not just parsed: the local MariaDB speaks no TLS, so a store
/// that must verify the server (as the template asks on AWS) refuses to talk to it.
#[tokio::test]
async fn a_database_that_cannot_prove_itself_is_not_used() {
    let sdk = aws_sdk_config().await;
    let settings = |mode: &str| {
        Settings::new(
            [
                ("DATABASE_URL", env("DATABASE_URL")),
                ("DATABASE_SSL_MODE", mode.to_owned()),
                ("REDIS_URL", env("REDIS_URL")),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        )
    };
    let partner = unique("tls");
    let create = || gateway_request("POST", "/v1/campaigns", &[], new_campaign().to_string(), Some(&partner));
    let verifying = CampaignApi::from_settings(&settings("VERIFY_IDENTITY"), &sdk)
        .await
        .unwrap();
    assert_eq!(verifying.handle(create()).await.status(), 503);
    let plain = CampaignApi::from_settings(&settings("DISABLED"), &sdk).await.unwrap();
    assert_eq!(plain.handle(create()).await.status(), 201);
}

/// The campaign function's real Lambda binary, started while its database is down (as a cold start
/// during an outage would be): it starts, answers 503 with Retry-After instead of failing its
/// init (which API Gateway would show as 502), and serves once the database is back, without a
/// restart. The same for Redis stopped under a warm instance.
#[tokio::test]
async fn a_lambda_binary_started_during_an_outage_answers_503_and_recovers() {
    let mut db = PrivateMariaDb::start().await;
    let mut redis = PrivateRedis::start(Persistence::None).await;
    db.kill();
    let envs: Vec<(String, String)> = [
        ("DATABASE_URL", db.url()),
        ("DATABASE_SSL_MODE", "DISABLED".into()),
        ("MYSQL_TIMEOUT_MS", "2000".into()),
        ("REDIS_URL", redis.url()),
        ("REDIS_TIMEOUT_MS", "1000".into()),
        ("REDIS_CONNECT_TIMEOUT_MS", "300".into()),
        ("AWS_REGION", env("AWS_REGION")),
        ("RUST_LOG", "info".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut function = LambdaBinary::start("campaign-api", &envs).await;
    let event_text = std::fs::read_to_string(repo_root().join("events/campaign-api-create.json")).unwrap();
    let mut event: Value = serde_json::from_str(&event_text).unwrap();
    event["body"] = new_campaign().to_string().into();
    event["requestContext"]["authorizer"]["partnerId"] = unique("cold").into();

    let status = |answer: &Value| answer["statusCode"].as_u64().unwrap_or_else(|| panic!("{answer}"));
    let retry_after = |answer: &Value| {
        answer["headers"].get("retry-after").is_some() || answer["multiValueHeaders"].get("retry-after").is_some()
    };

    // MySQL down from before the start.
    let answer = function.invoke(&event).await;
    assert_eq!(status(&answer), 503, "{answer}\n{}", function.log_tail(20));
    assert!(retry_after(&answer), "{answer}");
    db.restart().await;
    let answer = function.invoke(&event).await;
    assert_eq!(status(&answer), 201, "{answer}\n{}", function.log_tail(20));

    // Redis down under the warm instance.
    redis.kill();
    let answer = function.invoke(&event).await;
    assert_eq!(status(&answer), 503, "{answer}\n{}", function.log_tail(20));
    assert!(retry_after(&answer), "{answer}");
    redis.restart().await;
    let mut answer = function.invoke(&event).await;
    // The connection manager reconnects in the background; give it a few tries, each bounded.
    for _ in 0..20 {
        if status(&answer) == 201 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        answer = function.invoke(&event).await;
    }
    assert_eq!(status(&answer), 201, "{answer}\n{}", function.log_tail(20));
    function.assert_running();
}
