use async_trait::async_trait;

use super::domain::DiscordMessage;
use super::error::DeliveryFailure;

/// Where alerts are posted: a Discord webhook (`adapters::discord`).
#[async_trait]
pub trait ChatWebhook: Send + Sync {
    /// One attempt, within its own deadline.
    async fn post(&self, message: &DiscordMessage) -> Result<(), DeliveryFailure>;
}
