//! API Gateway REQUEST authorizer. The `X-API-KEY` header is hashed (SHA-256) and looked up in the
//! key table; an active, unexpired key is allowed for the whole API with the context
//! `{partnerId, keyId}`, anything else is denied.
//!
//! Two caches stand between a request and DynamoDB: API Gateway's own (`ReauthorizeEvery`) and this
//! process's bounded TTL cache, which also remembers unknown keys briefly so a flood of bad keys
//! costs one read per key, not one per request. A revoked key stops working within the sum of the
//! two TTLs. The table unreachable means deny: this authorizer fails closed.

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::apigw::{
    ApiGatewayCustomAuthorizerPolicy, ApiGatewayCustomAuthorizerRequestTypeRequest, ApiGatewayCustomAuthorizerResponse,
};
use aws_lambda_events::iam::{IamPolicyEffect, IamPolicyStatement};
use chrono::Utc;
use fcfs_shared::api_keys::{ApiKeyRecord, lookup_hash};
use fcfs_shared::config::{ConfigError, Settings, StartupError};
use fcfs_shared::dynamo_keys::DynamoApiKeys;
use fcfs_shared::ports::ApiKeyStore;
use serde_json::json;

/// The header API Gateway is configured to pass as the identity source.
pub const API_KEY_HEADER: &str = "x-api-key";

#[derive(Debug, thiserror::Error)]
pub enum AuthorizerError {
    /// API Gateway answers 401 when an authorizer fails with exactly this message.
    #[error("Unauthorized")]
    Unauthorized,
}

impl From<AuthorizerError> for lambda_runtime::Diagnostic {
    fn from(e: AuthorizerError) -> Self {
        Self {
            error_type: "Unauthorized".to_owned(),
            error_message: e.to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct CacheSettings {
    /// How long a known key's record is trusted before it is read again.
    pub allow_ttl: Duration,
    /// How long an unknown or unusable key is remembered.
    pub deny_ttl: Duration,
    pub max_entries: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            allow_ttl: Duration::from_secs(60),
            deny_ttl: Duration::from_secs(10),
            max_entries: 100_000,
        }
    }
}

impl CacheSettings {
    /// `AUTH_CACHE_TTL_SECS` (default 60), `AUTH_NEGATIVE_CACHE_TTL_SECS` (10),
    /// `AUTH_CACHE_MAX_ENTRIES` (100,000).
    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        let d = Self::default();
        Ok(Self {
            allow_ttl: Duration::from_secs(settings.or("AUTH_CACHE_TTL_SECS", d.allow_ttl.as_secs())?),
            deny_ttl: Duration::from_secs(settings.or("AUTH_NEGATIVE_CACHE_TTL_SECS", d.deny_ttl.as_secs())?),
            max_entries: settings.or("AUTH_CACHE_MAX_ENTRIES", d.max_entries)?,
        })
    }
}

/// Who a key speaks for: the context handed to the functions behind the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub partner_id: String,
    pub key_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow(Principal),
    Deny,
}

/// A looked-up key (`None`: no such key), shared by every request that presents it.
type CachedKey = Option<Arc<ApiKeyRecord>>;

struct KeyExpiry(CacheSettings);

impl moka::Expiry<String, CachedKey> for KeyExpiry {
    fn expire_after_create(&self, _hash: &String, key: &CachedKey, _now: std::time::Instant) -> Option<Duration> {
        let usable = key.as_ref().is_some_and(|k| k.is_usable(Utc::now()));
        Some(if usable { self.0.allow_ttl } else { self.0.deny_ttl })
    }
}

impl KeyAuthorizer<DynamoApiKeys> {
    /// The deployed authorizer: the key table `API_KEYS_TABLE` and the cache settings.
    pub fn from_settings(settings: &Settings, sdk: &aws_config::SdkConfig) -> Result<Self, StartupError> {
        let keys = DynamoApiKeys::new(aws_sdk_dynamodb::Client::new(sdk), settings.required("API_KEYS_TABLE")?);
        Ok(Self::new(keys, CacheSettings::from_settings(settings)?))
    }
}

pub struct KeyAuthorizer<S> {
    store: S,
    keys: moka::future::Cache<String, CachedKey>,
}

impl<S: ApiKeyStore> KeyAuthorizer<S> {
    pub fn new(store: S, cache: CacheSettings) -> Self {
        Self {
            store,
            keys: moka::future::Cache::builder()
                .max_capacity(cache.max_entries)
                .expire_after(KeyExpiry(cache))
                .build(),
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// The decision for a presented key. Malformed keys are denied without a lookup; concurrent
    /// misses for one key share a single read; a failed read denies and is not cached.
    pub async fn decide(&self, presented: &str, request_id: &str) -> Decision {
        let Some(hash) = lookup_hash(presented) else {
            tracing::info!(request_id, "denied: malformed API key");
            return Decision::Deny;
        };
        let looked_up = self
            .keys
            .try_get_with_by_ref(&hash, async { Ok(self.store.find(&hash).await?.map(Arc::new)) })
            .await;
        match looked_up {
            Ok(Some(key)) if key.is_usable(Utc::now()) => Decision::Allow(Principal {
                partner_id: key.partner_id.clone(),
                key_id: key.display_id.clone(),
            }),
            Ok(Some(key)) => {
                tracing::info!(request_id, key_id = %key.display_id, status = key.status.as_str(), "denied: key revoked or expired");
                Decision::Deny
            }
            Ok(None) => {
                tracing::info!(request_id, "denied: unknown API key");
                Decision::Deny
            }
            Err(e) => {
                let e: &fcfs_shared::ports::Unavailable = &e;
                tracing::error!(request_id, service = e.service, detail = %e.detail, "API key lookup failed: denied (fail closed)");
                Decision::Deny
            }
        }
    }

    /// The Lambda handler. No header at all is 401 (as API Gateway answers before invoking us when
    /// the identity source is missing); every other outcome is a policy.
    pub async fn handle(
        &self,
        event: ApiGatewayCustomAuthorizerRequestTypeRequest,
    ) -> Result<ApiGatewayCustomAuthorizerResponse, AuthorizerError> {
        let request_id = event.request_context.request_id.as_deref().unwrap_or("-");
        let Some(header) = event.headers.get(API_KEY_HEADER) else {
            return Err(AuthorizerError::Unauthorized);
        };
        // A header that is not visible ASCII cannot be one of our keys.
        let decision = self.decide(header.to_str().unwrap_or_default(), request_id).await;
        Ok(policy(decision, event.method_arn.as_deref(), request_id))
    }
}

/// `arn:aws:execute-api:region:account:api/stage/*`: every route of the API's stage, so that
/// API Gateway's cached decision serves every route, not only the one first called.
pub fn api_wide_resource(method_arn: &str) -> Option<String> {
    let mut parts = method_arn.splitn(3, '/');
    let (api, stage) = (parts.next()?, parts.next()?);
    (api.starts_with("arn:") && !stage.is_empty()).then(|| format!("{api}/{stage}/*"))
}

pub fn policy(decision: Decision, method_arn: Option<&str>, request_id: &str) -> ApiGatewayCustomAuthorizerResponse {
    let resource = method_arn.and_then(api_wide_resource);
    let (principal, effect, resource, context) = match (decision, resource) {
        (Decision::Allow(p), Some(resource)) => (
            p.partner_id.clone(),
            IamPolicyEffect::Allow,
            resource,
            json!({"partnerId": p.partner_id, "keyId": p.key_id}),
        ),
        (decision, resource) => {
            if matches!(decision, Decision::Allow(_)) {
                tracing::error!(request_id, method_arn, "unrecognised methodArn: denied");
            }
            let resource = resource.unwrap_or_else(|| "*".to_owned());
            ("anonymous".to_owned(), IamPolicyEffect::Deny, resource, json!({}))
        }
    };
    let mut statement = IamPolicyStatement::default();
    statement.action = vec!["execute-api:Invoke".to_owned()];
    statement.effect = effect;
    statement.resource = vec![resource];
    let mut document = ApiGatewayCustomAuthorizerPolicy::default();
    document.version = Some("2012-10-17".to_owned());
    document.statement = vec![statement];
    let mut response = ApiGatewayCustomAuthorizerResponse::default();
    response.principal_id = Some(principal);
    response.policy_document = document;
    response.context = context;
    response
}

#[cfg(test)]
mod tests;
