//! Partner API keys, pure: how a key looks, how it is stored (only its SHA-256 digest), when it
//! is usable.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::KeyError;

/// Every key starts with this, so a leaked key is recognisable (secret scanners, logs review).
pub const KEY_PREFIX: &str = "fcfs_";
/// Random bytes behind the prefix: 256 bits from the OS CSPRNG.
pub(super) const KEY_RANDOM_BYTES: usize = 32;
/// Prefix + 43 URL-safe base64 characters.
pub const KEY_LEN: usize = KEY_PREFIX.len() + (KEY_RANDOM_BYTES * 4).div_ceil(3);
pub use crate::kernel::PARTNER_ID_MAX;

/// A plaintext key: exists only between its creation and the moment it is printed to its owner.
/// It is deliberately not `Debug`/`Display`, so it cannot slip into a log line.
pub struct ApiKeySecret(pub(super) String);

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

/// The value of the partner's API Gateway API key in the stage's usage plan, which the authorizer
/// returns as `usageIdentifierKey` (`ApiKeySourceType: AUTHORIZER`), so API Gateway throttles per
/// partner, whichever of the partner's keys is presented. Derived from the partner id alone: it is
/// an identifier, not a secret (with that source type no client can present it), and needs no
/// storage. 64 hex characters behind a prefix: API Gateway wants at least 20.
pub fn usage_identifier_key(partner_id: &str) -> String {
    format!("fcfs-partner-{}", digest(&format!("usage-plan:{partner_id}")))
}

pub(super) fn digest(key: &str) -> String {
    hex_lower(&Sha256::digest(key.as_bytes()))
}

pub(super) fn hex_lower(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut hex = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

pub(super) fn validate_partner(partner_id: &str) -> Result<(), KeyError> {
    if crate::kernel::is_partner_id(partner_id) {
        Ok(())
    } else {
        Err(KeyError::InvalidPartner(partner_id.to_owned()))
    }
}

pub(super) fn random_bytes<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_partners_usage_key_is_stable_distinct_and_long_enough() {
        let acme = usage_identifier_key("acme");
        assert_eq!(acme, usage_identifier_key("acme"));
        assert_ne!(acme, usage_identifier_key("acme2"));
        assert!(acme.starts_with("fcfs-partner-") && acme.len() == 13 + 64, "{acme}");
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
