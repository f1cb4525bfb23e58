//! Authorization by API key, the authorizer's use case: a presented key → a partner, or no.
//!
//! The key is hashed (SHA-256) and looked up; an active, unexpired key allows, anything else
//! denies. A bounded TTL cache stands between requests and the key table and also remembers
//! unknown keys briefly, so a flood of bad keys costs one read per key, not one per request.
//!
//! A failed read is neither allow nor deny: it is an error, never cached here. API Gateway caches
//! a Deny policy like an Allow one (`ReauthorizeEvery`), so answering Deny for a key-store blip
//! would lock a partner out for minutes; an authorizer that fails makes API Gateway answer 500
//! and cache nothing, and the next request asks again (still fail closed: nothing is allowed).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::domain::{ApiKeyRecord, lookup_hash};
use super::ports::ApiKeyStore;
use crate::kernel::{Clock, SystemClock, Unavailable};

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

/// Who a key speaks for: the context handed to the functions behind the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub partner_id: String,
    pub key_id: String,
    /// Handed on with the decision: API Gateway caches an Allow for `ReauthorizeEvery`, so the
    /// functions refuse the key themselves once this passes (see `http::partner_id`).
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow(Principal),
    Deny,
}

/// A looked-up key (`record: None`: no such key), shared by every request that presents it, and
/// when it was read by the use case's clock.
#[derive(Clone)]
struct CachedKey {
    record: Option<Arc<ApiKeyRecord>>,
    read_at: DateTime<Utc>,
}

impl CachedKey {
    fn usable(&self, now: DateTime<Utc>) -> bool {
        self.record.as_ref().is_some_and(|k| k.is_usable(now))
    }

    fn ttl(&self, settings: &CacheSettings) -> Duration {
        if self.usable(self.read_at) {
            settings.allow_ttl
        } else {
            settings.deny_ttl
        }
    }
}

/// Evicts entries in real time so memory stays bounded; freshness itself is judged by the use
/// case's clock on every hit.
struct KeyExpiry(CacheSettings);

impl moka::Expiry<String, CachedKey> for KeyExpiry {
    fn expire_after_create(&self, _hash: &String, key: &CachedKey, _now: std::time::Instant) -> Option<Duration> {
        Some(key.ttl(&self.0))
    }
}

pub struct KeyAuthorizer<S> {
    store: S,
    settings: CacheSettings,
    clock: Arc<dyn Clock>,
    keys: moka::future::Cache<String, CachedKey>,
}

impl<S: ApiKeyStore> KeyAuthorizer<S> {
    pub fn new(store: S, settings: CacheSettings) -> Self {
        Self {
            store,
            settings,
            clock: Arc::new(SystemClock),
            keys: moka::future::Cache::builder()
                .max_capacity(settings.max_entries)
                .expire_after(KeyExpiry(settings))
                .build(),
        }
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    async fn cached(&self, hash: &String, now: DateTime<Utc>) -> Result<CachedKey, Arc<Unavailable>> {
        let load = || async {
            metrics::counter!("fcfs_authorizer_key_reads_total").increment(1);
            Ok(CachedKey {
                record: self.store.find(hash).await?.map(Arc::new),
                read_at: now,
            })
        };
        let key = self.keys.try_get_with_by_ref(hash, load()).await?;
        let age = (now - key.read_at).to_std().unwrap_or_default();
        if age < key.ttl(&self.settings) {
            return Ok(key);
        }
        self.keys.invalidate(hash).await;
        self.keys.try_get_with_by_ref(hash, load()).await
    }

    /// The decision for a presented key. Malformed keys are denied without a lookup; concurrent
    /// misses for one key share a single read; a failed read is an error and is not cached; the
    /// expiry of a cached key is checked again on every hit.
    pub async fn decide(&self, presented: &str, request_id: &str) -> Result<Decision, Unavailable> {
        let Some(hash) = lookup_hash(presented) else {
            tracing::info!(request_id, "denied: malformed API key");
            return Ok(Decision::Deny);
        };
        let now = self.clock.now();
        let decision = self.decide_cached(&hash, now, request_id).await;
        let result = match &decision {
            Ok(Decision::Allow(_)) => "allow",
            Ok(Decision::Deny) => "deny",
            Err(_) => "error",
        };
        metrics::counter!("fcfs_authorizer_decisions_total", "result" => result).increment(1);
        decision
    }

    async fn decide_cached(
        &self,
        hash: &String,
        now: DateTime<Utc>,
        request_id: &str,
    ) -> Result<Decision, Unavailable> {
        match self.cached(hash, now).await {
            Ok(CachedKey { record: Some(key), .. }) if key.is_usable(now) => Ok(Decision::Allow(Principal {
                partner_id: key.partner_id.clone(),
                key_id: key.display_id.clone(),
                expires_at: key.expires_at,
            })),
            Ok(CachedKey { record: Some(key), .. }) => {
                tracing::info!(request_id, key_id = %key.display_id, status = key.status.as_str(), "denied: key revoked or expired");
                Ok(Decision::Deny)
            }
            Ok(CachedKey { record: None, .. }) => {
                tracing::info!(request_id, "denied: unknown API key");
                Ok(Decision::Deny)
            }
            Err(e) => {
                tracing::error!(request_id, service = e.service, detail = %e.detail, "API key lookup failed: no decision (the request fails, nothing is cached)");
                Err((*e).clone())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::keys::admin::{create_key, revoke_key};
    use crate::keys::domain::KEY_PREFIX;
    use crate::testkit::{ManualClock, MemoryApiKeys};

    async fn with_key(partner: &str) -> (KeyAuthorizer<MemoryApiKeys>, String) {
        let store = MemoryApiKeys::default();
        let (secret, _) = create_key(&store, partner, None, Utc::now()).await.unwrap();
        (
            KeyAuthorizer::new(store, CacheSettings::default()),
            secret.expose().to_owned(),
        )
    }

    #[tokio::test]
    async fn cached_decisions_cost_one_lookup() {
        let (auth, key) = with_key("acme").await;
        for _ in 0..100 {
            assert!(matches!(auth.decide(&key, "r").await, Ok(Decision::Allow(_))));
        }
        assert_eq!(auth.store().finds.load(Ordering::Relaxed), 1);
        // Unknown but well-formed keys are remembered too.
        let unknown = format!("{KEY_PREFIX}{}", "A".repeat(43));
        for _ in 0..100 {
            assert_eq!(auth.decide(&unknown, "r").await, Ok(Decision::Deny));
        }
        assert_eq!(auth.store().finds.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn malformed_keys_are_denied_without_a_lookup() {
        let (auth, key) = with_key("acme").await;
        for bad in [String::new(), "nope".into(), format!("{key}x"), "k".repeat(10 * 1024)] {
            assert_eq!(auth.decide(&bad, "r").await, Ok(Decision::Deny));
        }
        assert_eq!(auth.store().finds.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn revocation_takes_effect_when_the_cached_record_is_older_than_its_ttl() {
        let clock = Arc::new(ManualClock::default());
        let store = MemoryApiKeys::default();
        let (secret, record) = create_key(&store, "acme", None, clock.now()).await.unwrap();
        let auth = KeyAuthorizer::new(store, CacheSettings::default()).with_clock(clock.clone());
        assert!(matches!(
            auth.decide(secret.expose(), "r").await,
            Ok(Decision::Allow(_))
        ));
        revoke_key(auth.store(), &record.display_id).await.unwrap();
        // Within the TTL the cached decision stands (the documented revocation delay)…
        clock.advance(chrono::Duration::seconds(59));
        assert!(matches!(
            auth.decide(secret.expose(), "r").await,
            Ok(Decision::Allow(_))
        ));
        // …and once the record is older than the TTL it is read again.
        clock.advance(chrono::Duration::seconds(2));
        assert_eq!(auth.decide(secret.expose(), "r").await, Ok(Decision::Deny));
        assert_eq!(auth.store().finds.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn expired_keys_are_denied_even_from_the_cache() {
        let clock = Arc::new(ManualClock::default());
        let store = MemoryApiKeys::default();
        let expires = clock.now() + chrono::Duration::seconds(5);
        let (secret, _) = create_key(&store, "acme", Some(expires), clock.now()).await.unwrap();
        let auth = KeyAuthorizer::new(store, CacheSettings::default()).with_clock(clock.clone());
        assert!(matches!(
            auth.decide(secret.expose(), "r").await,
            Ok(Decision::Allow(_))
        ));
        clock.advance(chrono::Duration::seconds(5));
        assert_eq!(auth.decide(secret.expose(), "r").await, Ok(Decision::Deny));
        assert_eq!(
            auth.store().finds.load(Ordering::Relaxed),
            1,
            "decided from the cached record"
        );
    }

    #[tokio::test]
    async fn an_unreachable_table_is_an_error_that_is_not_cached() {
        let (auth, key) = with_key("acme").await;
        auth.store().failing.store(true, Ordering::SeqCst);
        let err = auth.decide(&key, "r").await.unwrap_err();
        assert_eq!(err.service, "dynamodb");
        auth.store().failing.store(false, Ordering::SeqCst);
        assert!(matches!(auth.decide(&key, "r").await, Ok(Decision::Allow(_))));
        assert_eq!(
            auth.store().finds.load(Ordering::Relaxed),
            2,
            "the failure was not remembered"
        );
    }
}
