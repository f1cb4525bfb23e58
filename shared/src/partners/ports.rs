//! What the partners context needs from storage.

use async_trait::async_trait;

use super::domain::{LimitOverrides, PartnerLimits};
use crate::kernel::Unavailable;

#[async_trait]
pub trait PartnerLimitStore: Send + Sync {
    /// The partner's limits: its overrides over the defaults.
    async fn limits(&self, partner: &str) -> Result<PartnerLimits, Unavailable> {
        Ok(self.overrides(partner).await?.apply())
    }
    async fn overrides(&self, partner: &str) -> Result<LimitOverrides, Unavailable>;
    /// Replaces the partner's overrides (`None` fields go back to the default).
    async fn set_overrides(&self, partner: &str, overrides: LimitOverrides) -> Result<(), Unavailable>;
}

/// No store: every partner has the defaults (unit tests, and tools that never set limits).
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultLimits;

#[async_trait]
impl PartnerLimitStore for DefaultLimits {
    async fn overrides(&self, _partner: &str) -> Result<LimitOverrides, Unavailable> {
        Ok(LimitOverrides::default())
    }
    async fn set_overrides(&self, _partner: &str, _overrides: LimitOverrides) -> Result<(), Unavailable> {
        Err(Unavailable::new("partner limits", "no store to keep them in"))
    }
}

#[async_trait]
impl<T: PartnerLimitStore + ?Sized> PartnerLimitStore for std::sync::Arc<T> {
    async fn overrides(&self, partner: &str) -> Result<LimitOverrides, Unavailable> {
        (**self).overrides(partner).await
    }
    async fn set_overrides(&self, partner: &str, overrides: LimitOverrides) -> Result<(), Unavailable> {
        (**self).set_overrides(partner, overrides).await
    }
}
