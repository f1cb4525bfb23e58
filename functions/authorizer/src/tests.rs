use std::sync::atomic::Ordering;

use chrono::Utc;
use fcfs_shared::keys::create_key;
use fcfs_shared::keys::domain::ApiKeyRecord;
use fcfs_shared::testkit::MemoryApiKeys;

use super::*;

const ARN: &str = "arn:aws:execute-api:eu-west-1:123456789012:abc123/dev/POST/v1/campaigns/7/issues";

fn event(key: Option<&str>) -> ApiGatewayCustomAuthorizerRequestTypeRequest {
    let mut e = ApiGatewayCustomAuthorizerRequestTypeRequest::default();
    e.method_arn = Some(ARN.to_owned());
    e.request_context.request_id = Some("req-1".to_owned());
    if let Some(key) = key {
        e.headers.insert(API_KEY_HEADER, key.parse().unwrap());
    }
    e
}

async fn with_key(partner: &str) -> (KeyAuthorizer<MemoryApiKeys>, String, ApiKeyRecord) {
    let store = MemoryApiKeys::default();
    let (secret, record) = create_key(&store, partner, None, Utc::now()).await.unwrap();
    (
        KeyAuthorizer::new(store, CacheSettings::default()),
        secret.expose().to_owned(),
        record,
    )
}

#[tokio::test]
async fn a_valid_key_is_allowed_api_wide_with_its_partner() {
    let (auth, key, record) = with_key("acme").await;
    let response = handle(&auth, event(Some(&key))).await.unwrap();
    let statement = &response.policy_document.statement[0];
    assert_eq!(statement.effect, IamPolicyEffect::Allow);
    assert_eq!(
        statement.resource,
        vec!["arn:aws:execute-api:eu-west-1:123456789012:abc123/dev/*"]
    );
    assert_eq!(statement.action, vec!["execute-api:Invoke"]);
    assert_eq!(
        response.context,
        json!({"partnerId": "acme", "keyId": record.display_id})
    );
    assert_eq!(response.principal_id.as_deref(), Some("acme"));
    assert_eq!(
        response.usage_identifier_key,
        Some(fcfs_shared::keys::domain::usage_identifier_key("acme"))
    );
}

#[tokio::test]
async fn a_key_store_failure_is_an_error_not_a_deny_and_nothing_is_remembered() {
    let (auth, key, _) = with_key("acme").await;
    auth.store().failing.store(true, Ordering::SeqCst);
    let err = handle(&auth, event(Some(&key))).await.unwrap_err();
    assert!(matches!(err, AuthorizerError::KeyStoreUnavailable));
    let diagnostic = lambda_runtime::Diagnostic::from(err);
    assert_ne!(diagnostic.error_message, "Unauthorized", "API Gateway would answer 401");
    auth.store().failing.store(false, Ordering::SeqCst);
    let response = handle(&auth, event(Some(&key))).await.unwrap();
    assert_eq!(response.policy_document.statement[0].effect, IamPolicyEffect::Allow);
}

#[test]
fn the_lookup_deadline_is_at_most_a_second() {
    let settings = |v: &str| Settings::new([("AUTH_LOOKUP_TIMEOUT_MS".to_owned(), v.to_owned())].into());
    assert_eq!(
        lookup_timeout(&Settings::default()).unwrap(),
        Duration::from_millis(800)
    );
    assert_eq!(lookup_timeout(&settings("1000")).unwrap(), Duration::from_secs(1));
    for bad in ["1001", "0", "soon"] {
        assert!(lookup_timeout(&settings(bad)).is_err(), "{bad}");
    }
}

#[tokio::test]
async fn malformed_empty_and_huge_headers_are_denied_without_a_lookup() {
    let (auth, key, _) = with_key("acme").await;
    for bad in [String::new(), "nope".into(), format!("{key}x"), "k".repeat(10 * 1024)] {
        let response = handle(&auth, event(Some(&bad))).await.unwrap();
        assert_eq!(response.policy_document.statement[0].effect, IamPolicyEffect::Deny);
        assert_eq!(response.context, json!({}));
        assert_eq!(response.usage_identifier_key, None);
    }
    assert_eq!(auth.store().finds.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_missing_header_is_unauthorized() {
    let (auth, _, _) = with_key("acme").await;
    let err = handle(&auth, event(None)).await.unwrap_err();
    assert_eq!(err.to_string(), "Unauthorized");
}

#[test]
fn the_resource_covers_the_whole_stage() {
    assert_eq!(
        api_wide_resource("arn:aws:execute-api:r:1:api/local/GET/v1/x").as_deref(),
        Some("arn:aws:execute-api:r:1:api/local/*")
    );
    assert_eq!(api_wide_resource("garbage"), None);
    let allow = Decision::Allow(Principal {
        partner_id: "p".into(),
        key_id: "k".into(),
        expires_at: None,
    });
    // Without a usable ARN nothing is allowed.
    let response = policy(allow, Some("garbage"), "r");
    assert_eq!(response.policy_document.statement[0].effect, IamPolicyEffect::Deny);
}

#[tokio::test]
async fn an_allow_carries_the_keys_expiry_for_the_functions_to_enforce() {
    let store = MemoryApiKeys::default();
    let expires = Utc::now() + chrono::Duration::hours(1);
    let (secret, record) = create_key(&store, "acme", Some(expires), Utc::now()).await.unwrap();
    let auth = KeyAuthorizer::new(store, CacheSettings::default());
    let response = handle(&auth, event(Some(secret.expose()))).await.unwrap();
    assert_eq!(
        response.context,
        json!({
            "partnerId": "acme", "keyId": record.display_id,
            "keyExpiresAt": expires.to_rfc3339_opts(SecondsFormat::Millis, true)
        })
    );
}
