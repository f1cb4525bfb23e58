//! What issuance needs from the outside world, as traits: the Redis, SQS and MySQL adapters
//! implement them in production, the testkit's in-memory fakes in unit tests.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::domain::{Campaign, CampaignId, IssueDecision, IssueRules, NewCampaign, Reservation};
use crate::kernel::{Unavailable, UserId};

/// Campaigns as the database records them.
#[async_trait]
pub trait CampaignCatalog: Send + Sync {
    async fn create(&self, partner_id: &str, campaign: &NewCampaign) -> Result<Campaign, Unavailable>;
    /// Removes a campaign that could not be made issuable (no coupon can exist for it yet).
    async fn discard(&self, id: CampaignId) -> Result<(), Unavailable>;
    /// Any partner's campaign: callers check ownership.
    async fn get(&self, id: CampaignId) -> Result<Option<Campaign>, Unavailable>;
    /// Coupon rows written for the campaign.
    async fn issued_count(&self, id: CampaignId) -> Result<u64, Unavailable>;
    /// The coupon the user holds in the campaign, if written.
    async fn coupon_of(&self, id: CampaignId, user: &UserId) -> Result<Option<u64>, Unavailable>;
}

/// The live issuance state: decides, in one atomic step, whether a user gets a coupon.
#[async_trait]
pub trait IssueLedger: Send + Sync {
    /// Stores what the decision needs; called when a campaign is created.
    async fn prime(&self, rules: &IssueRules) -> Result<(), Unavailable>;
    /// Decides for `request`; a reservation is held in that request's name.
    async fn reserve(
        &self,
        id: CampaignId,
        user: &UserId,
        request: Uuid,
        now: DateTime<Utc>,
    ) -> Result<IssueDecision, Unavailable>;
    /// Undoes the reservation `request` made, if it made one (its message could not be enqueued,
    /// or its outcome is unknown); true if one was undone.
    async fn release(&self, id: CampaignId, user: &UserId, request: Uuid) -> Result<bool, Unavailable>;
    async fn reserved_count(&self, id: CampaignId) -> Result<u64, Unavailable>;
    async fn holds(&self, id: CampaignId, user: &UserId) -> Result<bool, Unavailable>;
}

/// Carries reservations to the writer.
#[async_trait]
pub trait ReservationQueue: Send + Sync {
    async fn enqueue(&self, reservation: &Reservation) -> Result<(), Unavailable>;
}

/// What recording one chunk of reservations did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ChunkRecord {
    /// Coupon rows actually inserted (duplicates of existing rows are not counted).
    pub inserted: u64,
    /// Positions in the chunk whose campaign does not exist: they can never be written.
    pub rejected: Vec<usize>,
}

/// The most reservations one chunk may carry: one multi-row INSERT of 8 columns each under
/// MySQL's limit of 65,535 placeholders per statement.
pub const MAX_CHUNK_ROWS: usize = 65_535 / 8;

/// Writes coupons: one transaction per chunk, multi-row inserts, idempotent per (campaign, user).
#[async_trait]
pub trait CouponBook: Send + Sync {
    async fn record(&self, chunk: &[Reservation]) -> Result<ChunkRecord, Unavailable>;
}

/// Shared ownership of one catalog or ledger by several functions (the local runner, tests).
#[async_trait]
impl<T: CampaignCatalog + ?Sized> CampaignCatalog for std::sync::Arc<T> {
    async fn create(&self, partner_id: &str, campaign: &NewCampaign) -> Result<Campaign, Unavailable> {
        (**self).create(partner_id, campaign).await
    }
    async fn discard(&self, id: CampaignId) -> Result<(), Unavailable> {
        (**self).discard(id).await
    }
    async fn get(&self, id: CampaignId) -> Result<Option<Campaign>, Unavailable> {
        (**self).get(id).await
    }
    async fn issued_count(&self, id: CampaignId) -> Result<u64, Unavailable> {
        (**self).issued_count(id).await
    }
    async fn coupon_of(&self, id: CampaignId, user: &UserId) -> Result<Option<u64>, Unavailable> {
        (**self).coupon_of(id, user).await
    }
}

#[async_trait]
impl<T: IssueLedger + ?Sized> IssueLedger for std::sync::Arc<T> {
    async fn prime(&self, rules: &IssueRules) -> Result<(), Unavailable> {
        (**self).prime(rules).await
    }
    async fn reserve(
        &self,
        id: CampaignId,
        user: &UserId,
        request: Uuid,
        now: DateTime<Utc>,
    ) -> Result<IssueDecision, Unavailable> {
        (**self).reserve(id, user, request, now).await
    }
    async fn release(&self, id: CampaignId, user: &UserId, request: Uuid) -> Result<bool, Unavailable> {
        (**self).release(id, user, request).await
    }
    async fn reserved_count(&self, id: CampaignId) -> Result<u64, Unavailable> {
        (**self).reserved_count(id).await
    }
    async fn holds(&self, id: CampaignId, user: &UserId) -> Result<bool, Unavailable> {
        (**self).holds(id, user).await
    }
}
