//! Key administration, the use cases the operator CLI runs: create, list, revoke.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};

use super::domain::{
    ApiKeyRecord, ApiKeySecret, KEY_PREFIX, KEY_RANDOM_BYTES, KeyStatus, digest, hex_lower, random_bytes,
    validate_partner,
};
use super::error::KeyError;
use super::ports::ApiKeyStore;

/// Creates a key for `partner_id`; the returned secret is the only copy of the plaintext.
pub async fn create_key(
    store: &dyn ApiKeyStore,
    partner_id: &str,
    expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(ApiKeySecret, ApiKeyRecord), KeyError> {
    validate_partner(partner_id)?;
    if let Some(at) = expires_at.filter(|at| *at <= now) {
        return Err(KeyError::ExpiryInPast(at));
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
pub async fn list_keys(store: &dyn ApiKeyStore, partner_id: &str) -> Result<Vec<ApiKeyRecord>, KeyError> {
    validate_partner(partner_id)?;
    let mut keys = store.by_partner(partner_id).await?;
    if keys.is_empty() {
        return Err(KeyError::UnknownPartner(partner_id.to_owned()));
    }
    keys.sort_by(|a, b| (a.created_at, &a.display_id).cmp(&(b.created_at, &b.display_id)));
    Ok(keys)
}

/// Revokes the key; revoking a revoked key is not an error. Returns the key as it was before.
pub async fn revoke_key(store: &dyn ApiKeyStore, display_id: &str) -> Result<ApiKeyRecord, KeyError> {
    let key = store
        .by_display_id(display_id)
        .await?
        .ok_or_else(|| KeyError::UnknownKey(display_id.to_owned()))?;
    if key.status != KeyStatus::Revoked {
        store.revoke(&key.key_hash).await?;
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::domain::{KEY_LEN, KEY_PREFIX, lookup_hash};
    use crate::testkit::MemoryApiKeys;

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

    #[tokio::test]
    async fn list_and_revoke_name_unknown_partners_and_keys() {
        let store = MemoryApiKeys::default();
        let now = Utc::now();
        assert!(matches!(
            list_keys(&store, "ghost").await,
            Err(KeyError::UnknownPartner(_))
        ));
        assert!(matches!(
            create_key(&store, "bad partner", None, now).await,
            Err(KeyError::InvalidPartner(_))
        ));
        assert!(matches!(
            create_key(&store, "acme", Some(now), now).await,
            Err(KeyError::ExpiryInPast(_))
        ));
        let (_, key) = create_key(&store, "acme", None, now).await.unwrap();
        assert!(matches!(
            revoke_key(&store, "ak_nope").await,
            Err(KeyError::UnknownKey(_))
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
}
