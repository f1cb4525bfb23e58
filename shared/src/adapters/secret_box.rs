//! `SecretBox` with AES-256-GCM: partners' webhook signing secrets are stored sealed, so a
//! database dump or a replica read alone does not let anyone forge our signatures. The key is the
//! SHA-256 of a string kept in Secrets Manager (`EVENTS_KEY_SECRET`), read once per process.
//! Sealed form: the 12-byte random nonce, then the ciphertext and its 16-byte tag.

use std::time::Duration;

use async_trait::async_trait;
use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use aws_lc_rs::digest::{SHA256, digest};
use aws_sdk_secretsmanager::error::DisplayErrorContext;

use crate::events::ports::SecretBox;
use crate::kernel::Unavailable;

const SERVICE: &str = "secret box";

pub struct SealedSecrets {
    /// Draws a fresh random nonce for every seal: with one key for all partners, a counter would
    /// need coordinating across Lambda instances, and 2^32 random nonces are far off.
    key: RandomizedNonceKey,
}

// The key must never reach a log line through `{:?}`.
impl std::fmt::Debug for SealedSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedSecrets").finish_non_exhaustive()
    }
}

impl SealedSecrets {
    /// The box keyed by SHA-256 of `material` (the string, exactly as stored).
    pub fn from_key_material(material: &str) -> Result<Self, Unavailable> {
        let hashed = digest(&SHA256, material.as_bytes());
        let key = RandomizedNonceKey::new(&AES_256_GCM, hashed.as_ref())
            .map_err(|_| Unavailable::new(SERVICE, "the sealing key could not be built"))?;
        Ok(Self { key })
    }

    /// The box keyed by the string value of secret `secret_id` (a name or an ARN), read within
    /// `deadline`. Every failure is `Unavailable`: the caller answers 503 until it is readable.
    pub async fn from_secrets_manager(
        client: &aws_sdk_secretsmanager::Client,
        secret_id: &str,
        deadline: Duration,
    ) -> Result<Self, Unavailable> {
        let read = client.get_secret_value().secret_id(secret_id).send();
        let output = tokio::time::timeout(deadline, read)
            .await
            .map_err(|_| {
                Unavailable::new(
                    "secretsmanager",
                    format!("no answer within {} ms", deadline.as_millis()),
                )
            })?
            .map_err(|e| Unavailable::new("secretsmanager", DisplayErrorContext(e)))?;
        // Only the secret's name is ever reported, never its value.
        match output.secret_string() {
            Some(material) if !material.is_empty() => Self::from_key_material(material),
            _ => Err(Unavailable::new(
                "secretsmanager",
                format!("secret {secret_id} has no string value"),
            )),
        }
    }
}

#[async_trait]
impl SecretBox for SealedSecrets {
    async fn seal(&self, secret: &str) -> Result<Vec<u8>, Unavailable> {
        let mut in_out = secret.as_bytes().to_vec();
        let nonce = self
            .key
            .seal_in_place_append_tag(Aad::empty(), &mut in_out)
            .map_err(|_| Unavailable::new(SERVICE, "sealing failed"))?;
        let mut sealed = Vec::with_capacity(NONCE_LEN + in_out.len());
        sealed.extend_from_slice(nonce.as_ref());
        sealed.append(&mut in_out);
        Ok(sealed)
    }

    async fn open(&self, sealed: &[u8]) -> Result<String, Unavailable> {
        // Not transient, but the port has no other failure: a secret that does not open (another
        // key, a corrupt row) stops that partner's deliveries with a clear error.
        let refused = || Unavailable::new(SERVICE, "the sealed secret does not open under this key");
        let (nonce, ciphertext) = sealed.split_at_checked(NONCE_LEN).ok_or_else(refused)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| refused())?;
        let mut in_out = ciphertext.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::empty(), &mut in_out)
            .map_err(|_| refused())?;
        String::from_utf8(plain.to_vec()).map_err(|_| refused())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_dGVzdC1zZWNyZXQtMzItYnl0ZXMtZm9yLXZlY3Rvcg";

    #[tokio::test]
    async fn a_sealed_secret_opens_to_itself() {
        let sealed_box = SealedSecrets::from_key_material("key material").unwrap();
        let sealed = sealed_box.seal(SECRET).await.unwrap();
        assert_eq!(sealed.len(), NONCE_LEN + SECRET.len() + 16);
        assert!(!sealed.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()));
        assert_eq!(sealed_box.open(&sealed).await.unwrap(), SECRET);
        // The same key material, in another process, opens it too.
        let again = SealedSecrets::from_key_material("key material").unwrap();
        assert_eq!(again.open(&sealed).await.unwrap(), SECRET);
    }

    #[tokio::test]
    async fn a_flipped_byte_or_another_key_does_not_open() {
        let sealed_box = SealedSecrets::from_key_material("key material").unwrap();
        let sealed = sealed_box.seal(SECRET).await.unwrap();
        for at in [0, NONCE_LEN, sealed.len() - 1] {
            let mut tampered = sealed.clone();
            tampered[at] ^= 0x01;
            assert!(sealed_box.open(&tampered).await.is_err(), "byte {at}");
        }
        let other = SealedSecrets::from_key_material("other material").unwrap();
        assert!(other.open(&sealed).await.is_err());
        assert!(sealed_box.open(&sealed[..NONCE_LEN + 3]).await.is_err());
        assert!(sealed_box.open(&[]).await.is_err());
    }

    #[tokio::test]
    async fn two_seals_of_one_secret_differ() {
        let sealed_box = SealedSecrets::from_key_material("key material").unwrap();
        let first = sealed_box.seal(SECRET).await.unwrap();
        let second = sealed_box.seal(SECRET).await.unwrap();
        assert_ne!(first, second);
        assert_ne!(first[..NONCE_LEN], second[..NONCE_LEN]);
    }

    #[test]
    fn debug_does_not_show_the_key() {
        let sealed_box = SealedSecrets::from_key_material("key material").unwrap();
        assert_eq!(format!("{sealed_box:?}"), "SealedSecrets { .. }");
    }
}
