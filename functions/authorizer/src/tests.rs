use std::sync::atomic::Ordering;

use fcfs_shared::api_keys::create_key;
use fcfs_shared::fakes::MemoryApiKeys;

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

fn short(allow_ms: u64) -> CacheSettings {
    CacheSettings {
        allow_ttl: Duration::from_millis(allow_ms),
        deny_ttl: Duration::from_millis(allow_ms),
        max_entries: 100,
    }
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
    let response = auth.handle(event(Some(&key))).await.unwrap();
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
}

#[tokio::test]
async fn cached_decisions_cost_one_lookup() {
    let (auth, key, _) = with_key("acme").await;
    for _ in 0..100 {
        assert!(matches!(auth.decide(&key, "r").await, Decision::Allow(_)));
    }
    assert_eq!(auth.store().finds.load(Ordering::Relaxed), 1);
    // Unknown but well-formed keys are remembered too.
    let unknown = format!("{}{}", fcfs_shared::api_keys::KEY_PREFIX, "A".repeat(43));
    for _ in 0..100 {
        assert_eq!(auth.decide(&unknown, "r").await, Decision::Deny);
    }
    assert_eq!(auth.store().finds.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn malformed_empty_and_huge_headers_are_denied_without_a_lookup() {
    let (auth, key, _) = with_key("acme").await;
    for bad in [String::new(), "nope".into(), format!("{key}x"), "k".repeat(10 * 1024)] {
        let response = auth.handle(event(Some(&bad))).await.unwrap();
        assert_eq!(response.policy_document.statement[0].effect, IamPolicyEffect::Deny);
        assert_eq!(response.context, json!({}));
    }
    assert_eq!(auth.store().finds.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_missing_header_is_unauthorized() {
    let (auth, _, _) = with_key("acme").await;
    let err = auth.handle(event(None)).await.unwrap_err();
    assert_eq!(err.to_string(), "Unauthorized");
}

#[tokio::test]
async fn revocation_takes_effect_when_the_cache_entry_expires() {
    let store = MemoryApiKeys::default();
    let (secret, record) = create_key(&store, "acme", None, Utc::now()).await.unwrap();
    let auth = KeyAuthorizer::new(store, short(300));
    assert!(matches!(auth.decide(secret.expose(), "r").await, Decision::Allow(_)));
    fcfs_shared::api_keys::revoke_key(auth.store(), &record.display_id)
        .await
        .unwrap();
    // Still within the TTL: the cached decision stands (the documented revocation delay).
    assert!(matches!(auth.decide(secret.expose(), "r").await, Decision::Allow(_)));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(auth.decide(secret.expose(), "r").await, Decision::Deny);
}

#[tokio::test]
async fn expired_keys_are_denied() {
    let store = MemoryApiKeys::default();
    let soon = Utc::now() + chrono::Duration::milliseconds(200);
    let (secret, _) = create_key(&store, "acme", Some(soon), Utc::now()).await.unwrap();
    let auth = KeyAuthorizer::new(store, CacheSettings::default());
    assert!(matches!(auth.decide(secret.expose(), "r").await, Decision::Allow(_)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The cached record is re-checked on every hit.
    assert_eq!(auth.decide(secret.expose(), "r").await, Decision::Deny);
}

#[tokio::test]
async fn an_unreachable_table_denies_and_is_not_cached() {
    let (auth, key, _) = with_key("acme").await;
    auth.store().failing.store(true, Ordering::SeqCst);
    assert_eq!(auth.decide(&key, "r").await, Decision::Deny);
    auth.store().failing.store(false, Ordering::SeqCst);
    assert!(matches!(auth.decide(&key, "r").await, Decision::Allow(_)));
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
    });
    // Without a usable ARN nothing is allowed.
    let response = policy(allow, Some("garbage"), "r");
    assert_eq!(response.policy_document.statement[0].effect, IamPolicyEffect::Deny);
}
