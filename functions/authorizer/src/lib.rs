//! API Gateway REQUEST authorizer: the `X-API-KEY` header mapped to the keys context's
//! `KeyAuthorizer` (hash, cached lookup, fail closed; see `fcfs_shared::keys::authorize`), and its
//! decision mapped to an IAM policy for the whole API with the context `{partnerId, keyId}`.
//!
//! Two caches stand between a request and DynamoDB: API Gateway's own (`ReauthorizeEvery`) and the
//! use case's bounded TTL cache. A revoked key stops working within the sum of the two TTLs.
//!
//! A key-store failure or timeout (`AUTH_LOOKUP_TIMEOUT_MS`, at most 1 s) is not a Deny: the
//! handler fails, API Gateway answers 500 and caches nothing, so the partner's next request is
//! decided afresh instead of being refused for `ReauthorizeEvery` seconds.
//!
//! Every Allow carries `usageIdentifierKey`, the partner's usage-plan key, so API Gateway
//! throttles per partner (`ApiKeySourceType: AUTHORIZER`).

use std::time::Duration;

use aws_lambda_events::apigw::{
    ApiGatewayCustomAuthorizerPolicy, ApiGatewayCustomAuthorizerRequestTypeRequest, ApiGatewayCustomAuthorizerResponse,
};
use aws_lambda_events::iam::{IamPolicyEffect, IamPolicyStatement};
use chrono::SecondsFormat;
use fcfs_shared::adapters::dynamodb::{DEFAULT_LOOKUP_TIMEOUT, DynamoApiKeys};
use fcfs_shared::config::{ConfigError, Settings, StartupError};
use fcfs_shared::http::KEY_EXPIRES_AT;
use fcfs_shared::keys::domain::usage_identifier_key;
use fcfs_shared::keys::ports::ApiKeyStore;
pub use fcfs_shared::keys::{CacheSettings, Decision, KeyAuthorizer, Principal};
use serde_json::json;

/// The header API Gateway is configured to pass as the identity source.
pub const API_KEY_HEADER: &str = "x-api-key";

/// The longest a key lookup may take (`AUTH_LOOKUP_TIMEOUT_MS`): an authorizer is on every
/// request's path, so a slow key store must fail fast, not hold the request.
pub const MAX_LOOKUP_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum AuthorizerError {
    /// API Gateway answers 401 when an authorizer fails with exactly this message.
    #[error("Unauthorized")]
    Unauthorized,
    /// Any other failure is API Gateway's 500, which it does not cache.
    #[error("key store unavailable")]
    KeyStoreUnavailable,
}

impl From<AuthorizerError> for lambda_runtime::Diagnostic {
    fn from(e: AuthorizerError) -> Self {
        let error_type = match e {
            AuthorizerError::Unauthorized => "Unauthorized",
            AuthorizerError::KeyStoreUnavailable => "KeyStoreUnavailable",
        };
        Self {
            error_type: error_type.to_owned(),
            error_message: e.to_string(),
        }
    }
}

/// `AUTH_LOOKUP_TIMEOUT_MS` (default 800), refused above `MAX_LOOKUP_TIMEOUT`.
pub fn lookup_timeout(settings: &Settings) -> Result<Duration, ConfigError> {
    let millis = settings.or("AUTH_LOOKUP_TIMEOUT_MS", DEFAULT_LOOKUP_TIMEOUT.as_millis() as u64)?;
    if millis == 0 || millis > MAX_LOOKUP_TIMEOUT.as_millis() as u64 {
        return Err(ConfigError::Invalid {
            name: "AUTH_LOOKUP_TIMEOUT_MS",
            reason: format!("{millis} is not between 1 and {}", MAX_LOOKUP_TIMEOUT.as_millis()),
        });
    }
    Ok(Duration::from_millis(millis))
}

/// `AUTH_CACHE_TTL_SECS` (default 60), `AUTH_NEGATIVE_CACHE_TTL_SECS` (10),
/// `AUTH_CACHE_MAX_ENTRIES` (100,000).
pub fn cache_settings(settings: &Settings) -> Result<CacheSettings, ConfigError> {
    let d = CacheSettings::default();
    Ok(CacheSettings {
        allow_ttl: Duration::from_secs(settings.or("AUTH_CACHE_TTL_SECS", d.allow_ttl.as_secs())?),
        deny_ttl: Duration::from_secs(settings.or("AUTH_NEGATIVE_CACHE_TTL_SECS", d.deny_ttl.as_secs())?),
        max_entries: settings.or("AUTH_CACHE_MAX_ENTRIES", d.max_entries)?,
    })
}

/// The deployed authorizer: the key table `API_KEYS_TABLE`, the lookup deadline and the cache
/// settings.
pub fn from_settings(
    settings: &Settings,
    sdk: &aws_config::SdkConfig,
) -> Result<KeyAuthorizer<DynamoApiKeys>, StartupError> {
    let keys = DynamoApiKeys::new(aws_sdk_dynamodb::Client::new(sdk), settings.required("API_KEYS_TABLE")?)
        .with_lookup_timeout(lookup_timeout(settings)?);
    Ok(KeyAuthorizer::new(keys, cache_settings(settings)?))
}

/// The Lambda handler. No header at all is 401 (as API Gateway answers before invoking us when
/// the identity source is missing); a key store that cannot answer is an error (500, not
/// cached); every other outcome is a policy.
pub async fn handle<S: ApiKeyStore>(
    authorizer: &KeyAuthorizer<S>,
    event: ApiGatewayCustomAuthorizerRequestTypeRequest,
) -> Result<ApiGatewayCustomAuthorizerResponse, AuthorizerError> {
    let request_id = event.request_context.request_id.as_deref().unwrap_or("-");
    let Some(header) = event.headers.get(API_KEY_HEADER) else {
        return Err(AuthorizerError::Unauthorized);
    };
    // A header that is not visible ASCII cannot be one of our keys.
    let decision = authorizer
        .decide(header.to_str().unwrap_or_default(), request_id)
        .await
        .map_err(|_| AuthorizerError::KeyStoreUnavailable)?;
    Ok(policy(decision, event.method_arn.as_deref(), request_id))
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
    let mut usage_key = None;
    let (principal, effect, resource, context) = match (decision, resource) {
        (Decision::Allow(p), Some(resource)) => {
            usage_key = Some(usage_identifier_key(&p.partner_id));
            let mut context = json!({"partnerId": p.partner_id, "keyId": p.key_id});
            if let (Some(at), Some(fields)) = (p.expires_at, context.as_object_mut()) {
                fields.insert(
                    KEY_EXPIRES_AT.into(),
                    at.to_rfc3339_opts(SecondsFormat::Millis, true).into(),
                );
            }
            (p.partner_id.clone(), IamPolicyEffect::Allow, resource, context)
        }
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
    response.usage_identifier_key = usage_key;
    response
}

#[cfg(test)]
mod tests;
