//! What key administration and the authorizer need from the key table.

use async_trait::async_trait;

use super::domain::ApiKeyRecord;
use crate::kernel::Unavailable;

/// Partner API keys, addressed by the SHA-256 digest of the key.
#[async_trait]
pub trait ApiKeyStore: Send + Sync {
    async fn find(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>, Unavailable>;
    /// Stores a new key; never overwrites one.
    async fn insert(&self, key: &ApiKeyRecord) -> Result<(), Unavailable>;
    async fn by_partner(&self, partner_id: &str) -> Result<Vec<ApiKeyRecord>, Unavailable>;
    async fn by_display_id(&self, display_id: &str) -> Result<Option<ApiKeyRecord>, Unavailable>;
    async fn revoke(&self, key_hash: &str) -> Result<(), Unavailable>;
}
