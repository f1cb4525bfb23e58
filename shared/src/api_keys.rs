//! Partner API keys: how a key looks, how it is stored (only its SHA-256 digest), and the key
//! administration the operator CLI runs. The authorizer only ever looks a digest up.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ports::{ApiKeyStore, Unavailable};

/// Every key starts with this, so a leaked key is recognisable (secret scanners, logs review).
pub const KEY_PREFIX: &str = "fcfs_";
/// Random bytes behind the prefix: 256 bits from the OS CSPRNG.
const KEY_RANDOM_BYTES: usize = 32;
/// Prefix + 43 URL-safe base64 characters.
pub const KEY_LEN: usize = KEY_PREFIX.len() + (KEY_RANDOM_BYTES * 4).div_ceil(3);
const PARTNER_ID_MAX: usize = 64;

/// A plaintext key: exists only between its creation and the moment it is printed to its owner.
/// It is deliberately not `Debug`/`Display`, so it cannot slip into a log line.
pub struct ApiKeySecret(String);

impl ApiKeySecret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KeyStatus {
    Active,
    Revoked,
}

impl KeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "ACTIVE",
            Self::Revoked => "REVOKED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ACTIVE" => Some(Self::Active),
            "REVOKED" => Some(Self::Revoked),
            _ => None,
        }
    }
}

/// What the key table holds for one key. No plaintext: `key_hash` is the SHA-256 digest (hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub key_hash: String,
    pub partner_id: String,
    /// Short, non-secret name of the key for listings and revocation.
    pub display_id: String,
    pub status: KeyStatus,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl ApiKeyRecord {
    /// Active and not past its expiry.
    pub fn is_usable(&self, now: DateTime<Utc>) -> bool {
        self.status == KeyStatus::Active && self.expires_at.is_none_or(|at| now < at)
    }
}

/// The lookup key of a presented key. Only well-formed keys are hashed: anything else (empty,
/// oversized, foreign characters) is refused before it costs a table read.
pub fn lookup_hash(presented: &str) -> Option<String> {
    let well_formed = presented.len() == KEY_LEN
        && presented.starts_with(KEY_PREFIX)
        && presented[KEY_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then(|| digest(presented))
}

fn digest(key: &str) -> String {
    hex_lower(&Sha256::digest(key.as_bytes()))
}

fn hex_lower(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut hex = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

#[derive(Debug, thiserror::Error)]
pub enum KeyAdminError {
    #[error("invalid partner id {0:?}: use 1-{PARTNER_ID_MAX} letters, digits, '.', '_' or '-'")]
    InvalidPartner(String),
    #[error("partner {0:?} has no API keys")]
    UnknownPartner(String),
    #[error("no API key has display id {0:?}")]
    UnknownKey(String),
    #[error("expiry {0} is not in the future")]
    ExpiryInPast(DateTime<Utc>),
    #[error("the system random generator failed: {0}")]
    Random(String),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

fn validate_partner(partner_id: &str) -> Result<(), KeyAdminError> {
    let ok = !partner_id.is_empty()
        && partner_id.len() <= PARTNER_ID_MAX
        && partner_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(KeyAdminError::InvalidPartner(partner_id.to_owned()))
    }
}

fn random_bytes<const N: usize>() -> Result<[u8; N], KeyAdminError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| KeyAdminError::Random(e.to_string()))?;
    Ok(bytes)
}

/// Creates a key for `partner_id`; the returned secret is the only copy of the plaintext.
pub async fn create_key(
    store: &dyn ApiKeyStore,
    partner_id: &str,
    expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(ApiKeySecret, ApiKeyRecord), KeyAdminError> {
    validate_partner(partner_id)?;
    if let Some(at) = expires_at.filter(|at| *at <= now) {
        return Err(KeyAdminError::ExpiryInPast(at));
    }
    let secret = format!(
        "{KEY_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(random_bytes::<KEY_RANDOM_BYTES>()?)
    );
    // Independent of the key, so a listing reveals nothing about it.
    let display_id = format!("ak_{}", hex_lower(&random_bytes::<6>()?));
    let record = ApiKeyRecord {
        key_hash: digest(&secret),
        partner_id: partner_id.to_owned(),
        display_id,
        status: KeyStatus::Active,
        created_at: now,
        expires_at,
    };
    store.insert(&record).await?;
    Ok((ApiKeySecret(secret), record))
}

/// The partner's keys, oldest first. A partner with none is reported as unknown: partners exist
/// only through their keys.
pub async fn list_keys(store: &dyn ApiKeyStore, partner_id: &str) -> Result<Vec<ApiKeyRecord>, KeyAdminError> {
    validate_partner(partner_id)?;
    let mut keys = store.by_partner(partner_id).await?;
    if keys.is_empty() {
        return Err(KeyAdminError::UnknownPartner(partner_id.to_owned()));
    }
    keys.sort_by(|a, b| (a.created_at, &a.display_id).cmp(&(b.created_at, &b.display_id)));
    Ok(keys)
}

/// Revokes the key; revoking a revoked key is not an error. Returns the key as it was before.
pub async fn revoke_key(store: &dyn ApiKeyStore, display_id: &str) -> Result<ApiKeyRecord, KeyAdminError> {
    let key = store
        .by_display_id(display_id)
        .await?
        .ok_or_else(|| KeyAdminError::UnknownKey(display_id.to_owned()))?;
    if key.status != KeyStatus::Revoked {
        store.revoke(&key.key_hash).await?;
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::MemoryApiKeys;

    #[tokio::test]
    async fn created_keys_are_long_random_and_stored_only_as_digests() {
        let store = MemoryApiKeys::default();
        let now = Utc::now();
        let (a, ra) = create_key(&store, "acme", None, now).await.unwrap();
        let (b, _) = create_key(&store, "acme", None, now).await.unwrap();
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.expose().len(), KEY_LEN);
        assert!(a.expose().starts_with(KEY_PREFIX));
        assert_eq!(lookup_hash(a.expose()).as_deref(), Some(ra.key_hash.as_str()));
        assert_eq!(ra.key_hash.len(), 64);
        assert!(!ra.key_hash.contains(&a.expose()[KEY_PREFIX.len()..]));
        assert!(!ra.display_id.is_empty() && !a.expose().contains(&ra.display_id[3..]));
        assert!(ra.is_usable(now));
    }

    #[test]
    fn malformed_keys_have_no_lookup_hash() {
        let good = format!("{KEY_PREFIX}{}", "a".repeat(KEY_LEN - KEY_PREFIX.len()));
        assert!(lookup_hash(&good).is_some());
        for bad in [
            String::new(),
            "fcfs_short".into(),
            good.replace('a', "+"),
            good.replacen("fcfs_", "abcd_", 1),
            format!("{good}a"),
            "x".repeat(10_000),
        ] {
            assert_eq!(lookup_hash(&bad), None, "{bad:.20}");
        }
    }

    #[tokio::test]
    async fn list_and_revoke_name_unknown_partners_and_keys() {
        let store = MemoryApiKeys::default();
        let now = Utc::now();
        assert!(matches!(
            list_keys(&store, "ghost").await,
            Err(KeyAdminError::UnknownPartner(_))
        ));
        assert!(matches!(
            create_key(&store, "bad partner", None, now).await,
            Err(KeyAdminError::InvalidPartner(_))
        ));
        assert!(matches!(
            create_key(&store, "acme", Some(now), now).await,
            Err(KeyAdminError::ExpiryInPast(_))
        ));
        let (_, key) = create_key(&store, "acme", None, now).await.unwrap();
        assert!(matches!(
            revoke_key(&store, "ak_nope").await,
            Err(KeyAdminError::UnknownKey(_))
        ));
        revoke_key(&store, &key.display_id).await.unwrap();
        let listed = list_keys(&store, "acme").await.unwrap();
        assert_eq!(listed[0].status, KeyStatus::Revoked);
        assert!(!listed[0].is_usable(now));
        // Idempotent.
        assert_eq!(
            revoke_key(&store, &key.display_id).await.unwrap().status,
            KeyStatus::Revoked
        );
    }

    #[test]
    fn expired_keys_are_not_usable() {
        let now = Utc::now();
        let key = ApiKeyRecord {
            key_hash: "h".into(),
            partner_id: "p".into(),
            display_id: "d".into(),
            status: KeyStatus::Active,
            created_at: now,
            expires_at: Some(now),
        };
        assert!(!key.is_usable(now));
        assert!(key.is_usable(now - chrono::Duration::seconds(1)));
    }
}
