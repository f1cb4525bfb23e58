//! The authorizer against the DynamoDB emulator, and what its decisions let a partner do with the
//! campaign and issue functions on the real stack.

use authorizer::{API_KEY_HEADER, CacheSettings, KeyAuthorizer};
use aws_lambda_events::apigw::{ApiGatewayCustomAuthorizerRequestTypeRequest, ApiGatewayCustomAuthorizerResponse};
use aws_lambda_events::iam::IamPolicyEffect;
use campaign_api::CampaignApi;
use chrono::Utc;
use fcfs_shared::adapters::dynamodb::DynamoApiKeys;
use fcfs_shared::adapters::mysql::MySqlStore;
use fcfs_shared::adapters::redis::RedisIssueLedger;
use fcfs_shared::adapters::sqs::SqsReservationQueue;
use fcfs_shared::keys::create_key;
use fcfs_shared::testkit::gateway_request;
use integration_tests::{capture_logs, dynamodb, env, mysql, reply, sqs, unique};
use issue_api::IssueApi;
use serde_json::json;

const ARN: &str = "arn:aws:execute-api:us-east-1:000000000000:local/local/GET/v1/campaigns/1";

async fn keys() -> DynamoApiKeys {
    DynamoApiKeys::new(dynamodb().await, env("API_KEYS_TABLE"))
}

fn event(key: Option<&str>, request_id: &str) -> ApiGatewayCustomAuthorizerRequestTypeRequest {
    let mut e = ApiGatewayCustomAuthorizerRequestTypeRequest::default();
    e.method_arn = Some(ARN.to_owned());
    e.request_context.request_id = Some(request_id.to_owned());
    if let Some(key) = key {
        e.headers.insert(API_KEY_HEADER, key.parse().expect("header value"));
    }
    e
}

fn allowed(response: &ApiGatewayCustomAuthorizerResponse) -> bool {
    response.policy_document.statement[0].effect == IamPolicyEffect::Allow
}

/// A fresh key for a fresh partner, straight into the emulator's table.
async fn new_key(partner: &str) -> String {
    let (secret, _) = create_key(&keys().await, partner, None, Utc::now()).await.unwrap();
    secret.expose().to_owned()
}

#[tokio::test]
async fn a_cached_key_costs_one_dynamodb_read_for_many_requests() {
    let partner = unique("cached");
    let key = new_key(&partner).await;
    let auth = KeyAuthorizer::new(keys().await, CacheSettings::default());
    for i in 0..500 {
        let response = authorizer::handle(&auth, event(Some(&key), &format!("r{i}")))
            .await
            .unwrap();
        assert!(allowed(&response));
        assert_eq!(response.context["partnerId"], partner.as_str());
    }
    assert_eq!(auth.store().lookups(), 1);
}

#[tokio::test]
async fn unknown_malformed_empty_and_huge_keys_are_denied() {
    let auth = KeyAuthorizer::new(keys().await, CacheSettings::default());
    let unknown = format!("fcfs_{}", "Z".repeat(43));
    let cases = [
        unknown.clone(),
        "not-a-key".into(),
        String::new(),
        "k".repeat(10 * 1024),
    ];
    for (i, key) in cases.iter().enumerate() {
        let response = authorizer::handle(&auth, event(Some(key), &format!("r{i}")))
            .await
            .unwrap();
        assert!(!allowed(&response), "case {i} allowed");
        assert_eq!(response.context, json!({}));
    }
    // Only the well-formed unknown key was looked up; repeating it hits the negative cache.
    for _ in 0..50 {
        assert!(!allowed(
            &authorizer::handle(&auth, event(Some(&unknown), "again")).await.unwrap()
        ));
    }
    assert_eq!(auth.store().lookups(), 1);
    assert_eq!(
        authorizer::handle(&auth, event(None, "none"))
            .await
            .unwrap_err()
            .to_string(),
        "Unauthorized"
    );
}

#[tokio::test]
async fn an_unreachable_table_fails_the_authorizer_and_logs_the_request() {
    let key = new_key(&unique("down")).await;
    let sdk = fcfs_shared::config::aws_sdk_config().await;
    let down = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&sdk)
            .endpoint_url("http://127.0.0.1:9")
            .build(),
    );
    let auth = KeyAuthorizer::new(
        DynamoApiKeys::new(down, env("API_KEYS_TABLE")),
        CacheSettings::default(),
    );
    let (logs, _guard) = capture_logs();
    let started = std::time::Instant::now();
    let err = authorizer::handle(&auth, event(Some(&key), "req-down-42"))
        .await
        .unwrap_err();
    // An error, not a Deny: API Gateway answers 500 and caches nothing.
    assert!(matches!(err, authorizer::AuthorizerError::KeyStoreUnavailable));
    assert!(
        started.elapsed() < authorizer::MAX_LOOKUP_TIMEOUT * 2,
        "{:?}",
        started.elapsed()
    );
    let logs = logs.text();
    let line = logs
        .lines()
        .find(|l| l.contains("lookup failed"))
        .unwrap_or_else(|| panic!("no error logged: {logs}"));
    assert!(
        line.contains(r#""level":"ERROR""#) && line.contains("req-down-42"),
        "{line}"
    );
    assert!(!line.contains(&key), "the key must not be logged");
}

/// Partner A, holding a valid key, learns nothing of partner B's campaign: every route answers
/// exactly as for a campaign that does not exist.
#[tokio::test]
async fn one_partner_cannot_see_or_touch_anothers_campaign() {
    let (a, b) = (unique("partner-a"), unique("partner-b"));
    let (key_a, key_b) = (new_key(&a).await, new_key(&b).await);
    let auth = KeyAuthorizer::new(keys().await, CacheSettings::default());
    let partner_of = async |key: &str| {
        let response = authorizer::handle(&auth, event(Some(key), "iso")).await.unwrap();
        assert!(allowed(&response));
        response.context["partnerId"].as_str().unwrap().to_owned()
    };
    let (as_a, as_b) = (partner_of(&key_a).await, partner_of(&key_b).await);
    assert_eq!((as_a.as_str(), as_b.as_str()), (a.as_str(), b.as_str()));

    let store = MySqlStore::new(mysql().await);
    let ledger = RedisIssueLedger::connect(&env("REDIS_URL")).await.unwrap();
    let campaigns = CampaignApi::new(store.clone(), ledger.clone());
    let queue = SqsReservationQueue::new(sqs().await, env("ISSUE_QUEUE_URL"));
    let issues = IssueApi::new(store, ledger, queue);
    let now = Utc::now();
    let body = json!({
        "name": "b only", "totalQuantity": 5,
        "issueStartsAt": now - chrono::Duration::minutes(1), "issueEndsAt": now + chrono::Duration::hours(1),
        "couponExpiresAt": now + chrono::Duration::days(7), "discount": {"type": "PERCENT", "value": 10}
    });
    let (status, created) = reply(
        campaigns
            .handle(gateway_request(
                "POST",
                "/v1/campaigns",
                &[],
                body.to_string(),
                Some(&as_b),
            ))
            .await,
    );
    assert_eq!(status, 201, "{created}");
    let id = created["campaignId"].as_str().expect("a campaign id").to_owned();
    let missing = "999999999999";
    let user = json!({"userId": "u1"}).to_string();

    for campaign in [id.as_str(), missing] {
        let got = reply(
            campaigns
                .handle(gateway_request(
                    "GET",
                    "/v1/campaigns/{campaignId}",
                    &[("campaignId", campaign)],
                    "",
                    Some(&as_a),
                ))
                .await,
        );
        let issued = reply(
            issues
                .handle(gateway_request(
                    "POST",
                    "/v1/campaigns/{campaignId}/issues",
                    &[("campaignId", campaign)],
                    user.clone(),
                    Some(&as_a),
                ))
                .await,
        );
        let status = reply(
            issues
                .handle(gateway_request(
                    "GET",
                    "/v1/campaigns/{campaignId}/issues/{userId}",
                    &[("campaignId", campaign), ("userId", "u1")],
                    "",
                    Some(&as_a),
                ))
                .await,
        );
        for (what, (code, body)) in [("read", got), ("issue", issued), ("status", status)] {
            assert_eq!(code, 404, "{what} of campaign {campaign}: {body}");
            assert_eq!(body, json!({"error": "NOT_FOUND", "message": "campaign not found"}));
        }
    }
    // A's attempt changed nothing; B still sees its untouched campaign.
    let (status, seen) = reply(
        campaigns
            .handle(gateway_request(
                "GET",
                "/v1/campaigns/{campaignId}",
                &[("campaignId", &id)],
                "",
                Some(&as_b),
            ))
            .await,
    );
    assert_eq!((status, seen["reserved"].as_u64()), (200, Some(0)), "{seen}");
}
