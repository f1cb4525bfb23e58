//! What issuance needs from the outside world, as traits: the Redis, SQS and MySQL adapters
//! implement them in production, the testkit's in-memory fakes in unit tests.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::change::CampaignChange;
use super::domain::{
    Campaign, CampaignId, CouponGrant, Holder, IssueDecision, IssueRules, NewCampaign, Outcome, PendingReservation,
    RejectionReason, Reservation,
};
use super::error::IssuanceError;
use crate::kernel::{TxError, Unavailable, UserId};

/// Coupons of `REWARD` campaigns granted by another context inside its own transaction `Tx` (a
/// grading chunk), so the grant commits or rolls back with the grant's record there. Only the
/// issuance context's storage writes campaigns and coupons; this is how others ask it to.
#[async_trait]
pub trait RewardCoupons<Tx: Send>: Send + Sync {
    /// One coupon of `campaign` for each of `users` (`issuance::domain::grant_coupons` decides,
    /// under the campaign's counter row lock), in the order given; one answer per user.
    async fn grant_coupons(
        &self,
        tx: &mut Tx,
        partner: &str,
        campaign: CampaignId,
        users: &[UserId],
        now: DateTime<Utc>,
    ) -> Result<Vec<CouponGrant>, TxError>;
}

/// Campaigns as the database records them.
#[async_trait]
pub trait CampaignCatalog: Send + Sync {
    /// Records the campaign unless the partner would then have more than `max_live` campaigns
    /// whose issue window has not ended (`partners::domain::admit` decides, under a lock on the
    /// partner's live campaigns, so concurrent creates cannot both pass): `LimitExceeded`.
    async fn create(&self, partner_id: &str, campaign: &NewCampaign, max_live: u32) -> Result<Campaign, IssuanceError>;
    /// Removes a campaign that could not be made issuable (no coupon can exist for it yet).
    async fn discard(&self, id: CampaignId) -> Result<(), Unavailable>;
    /// Any partner's campaign: callers check ownership.
    async fn get(&self, id: CampaignId) -> Result<Option<Campaign>, Unavailable>;
    /// Coupon rows written for the campaign.
    async fn issued_count(&self, id: CampaignId) -> Result<u64, Unavailable>;
    /// What the writer recorded for the user in the campaign: a coupon, a rejection, or nothing.
    async fn outcome_of(&self, id: CampaignId, user: &UserId) -> Result<Option<Outcome>, Unavailable>;
    /// Users holding a coupon of the campaign, with its id and the request that won it: what a
    /// lost ledger is rebuilt from.
    async fn holders(&self, id: CampaignId) -> Result<Vec<Holder>, Unavailable>;
    /// Makes `change` to the partner's campaign under its row lock, with the coupons written as
    /// what the quantity must still hold (`CampaignChange::applied_to` decides); another
    /// partner's campaign is not found.
    async fn change(
        &self,
        partner: &str,
        id: CampaignId,
        change: &CampaignChange,
        now: DateTime<Utc>,
    ) -> Result<Campaign, IssuanceError>;
    /// The partner's campaigns with ids below `before` (all when `None`), newest first, at most
    /// `limit`, each with its coupons written.
    async fn page(
        &self,
        partner: &str,
        before: Option<CampaignId>,
        limit: u32,
    ) -> Result<Vec<(Campaign, u64)>, Unavailable>;
}

/// What `IssueLedger::amend` did: `change::amendment` decides.
pub use super::change::Amendment;

/// What the ledger knows of one user's place in a campaign (the status endpoint's first source).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    /// The campaign's owner, if the ledger holds its rules.
    pub owner: Option<String>,
    /// The user holds a place.
    pub held: bool,
    /// The writer's outcome, once it has committed and told the ledger.
    pub outcome: Option<Outcome>,
}

/// Whether a caller may rebuild a campaign's lost state now (`IssueLedger::heal_turn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealTurn {
    /// Nothing is lost (another caller rebuilt it): reserve again.
    Intact,
    /// The loss was seen less than the grace ago: a reservation sent just before it may not show
    /// in the queue's counts yet.
    Wait,
    /// Another caller is rebuilding it.
    Busy,
    /// This caller's turn: rebuild, then `end_heal`.
    Go,
}

/// The live issuance state: decides, in one atomic step, whether a user gets a coupon, and keeps
/// every place it hands out recorded until its message is on the queue.
#[async_trait]
pub trait IssueLedger: Send + Sync {
    /// Stores what the decision needs; called when a campaign is created.
    async fn prime(&self, rules: &IssueRules) -> Result<(), Unavailable>;
    /// The rules the ledger holds for the campaign.
    async fn rules(&self, id: CampaignId) -> Result<Option<IssueRules>, Unavailable>;
    /// Decides for `request` of `partner`; a reservation is held in that request's name and, in
    /// the same atomic step, recorded as pending (its message not yet known to be sent).
    async fn reserve(
        &self,
        id: CampaignId,
        partner: &str,
        user: &UserId,
        request: Uuid,
        now: DateTime<Utc>,
    ) -> Result<IssueDecision, Unavailable>;
    /// The message of `request` is on the queue: it is no longer pending.
    async fn mark_sent(&self, id: CampaignId, request: Uuid) -> Result<(), Unavailable>;
    /// Undoes the reservation `request` made, if it made one, pending record included (its message
    /// was certainly not sent, or can never be); true if a place was given back.
    async fn release(&self, id: CampaignId, user: &UserId, request: Uuid) -> Result<bool, Unavailable>;
    async fn reserved_count(&self, id: CampaignId) -> Result<u64, Unavailable>;
    async fn standing(&self, id: CampaignId, user: &UserId) -> Result<Standing, Unavailable>;
    /// What the writer committed for these users (after its commit), so status polls need no MySQL.
    async fn record_outcomes(&self, id: CampaignId, outcomes: &[(UserId, Outcome)]) -> Result<(), Unavailable>;
    /// Campaigns whose state is still kept (recovery walks them).
    async fn live_campaigns(&self) -> Result<Vec<CampaignId>, Unavailable>;
    /// Removes everything the ledger keeps of a campaign the catalog does not hold: a create whose
    /// priming failed (its rules may have landed anyway), or rules left behind by one.
    async fn discard(&self, id: CampaignId) -> Result<(), Unavailable>;
    /// Up to `limit` pending reservations of the campaign, oldest first.
    async fn pending(&self, id: CampaignId, limit: usize) -> Result<Vec<PendingReservation>, Unavailable>;
    /// Notes when the campaign's state was first seen lost and, once `grace` has passed since, gives
    /// one caller at a time the turn to rebuild it.
    async fn heal_turn(
        &self,
        id: CampaignId,
        now: DateTime<Utc>,
        grace: std::time::Duration,
    ) -> Result<HealTurn, Unavailable>;
    /// Rebuilds the campaign's state: its holders (from MySQL, with their coupons) and its pending
    /// places hold places, the counter is their number, and the rules come back last. Only
    /// correct with no reservation on its way. Returns the places held.
    async fn rebuild(&self, rules: &IssueRules, holders: &[Holder]) -> Result<u64, Unavailable>;
    /// Ends a turn: its lock, and when the state was `rebuilt`, the loss's sighting.
    async fn end_heal(&self, id: CampaignId, rebuilt: bool) -> Result<(), Unavailable>;
    /// Replaces the campaign's changeable rules in one atomic step, within the change `turn`,
    /// unless more places are taken than their quantity; never on a campaign whose state is lost
    /// or partly lost (`Absent`: a heal rebuilds it).
    async fn amend(&self, rules: &IssueRules, turn: &str) -> Result<Amendment, Unavailable>;
    /// One change of a campaign at a time: a turn (its token) with a deadline, or `None` while
    /// another holds it.
    async fn change_turn(&self, id: CampaignId) -> Result<Option<String>, Unavailable>;
    async fn end_change_turn(&self, id: CampaignId, token: &str) -> Result<(), Unavailable>;
}

/// Why a message did not certainly reach the queue.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    /// The queue certainly did not take it (refused connection, an error answer for the entry).
    #[error("not sent: {0}")]
    NotSent(Unavailable),
    /// It may or may not be on the queue (a timeout, a lost response): never a reason to give the
    /// place back, since a sent message would then sell it twice.
    #[error("outcome unknown: {0}")]
    Unknown(Unavailable),
}

/// Carries reservations to the writer.
#[async_trait]
pub trait ReservationQueue: Send + Sync {
    async fn enqueue(&self, reservation: &Reservation) -> Result<(), SendError>;
    /// Reservations on their way: messages in the queue and its dead-letter queue (visible, in
    /// flight or delayed), by the queue's approximate counts.
    async fn in_flight(&self) -> Result<u64, Unavailable>;
}

/// What recording one chunk of reservations did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ChunkRecord {
    /// Coupon rows inserted.
    pub inserted: u64,
    /// Reservations whose user already held a coupon (redeliveries, repeats in the chunk).
    pub duplicates: u64,
    /// Positions in the chunk recorded as rejected, with why: done, never retried.
    pub rejected: Vec<(usize, RejectionReason)>,
    /// Positions whose campaign does not exist: they can never be written.
    pub unknown_campaign: Vec<usize>,
    /// The committed outcome of every user of the chunk's known campaigns.
    pub outcomes: Vec<(CampaignId, UserId, Outcome)>,
}

/// The most reservations one chunk may carry: one multi-row INSERT of 8 columns each under
/// MySQL's limit of 65,535 placeholders per statement.
pub const MAX_CHUNK_ROWS: usize = 65_535 / 8;

/// Writes coupons: one transaction per chunk, multi-row inserts, idempotent per (campaign, user),
/// never more coupons than a campaign's quantity.
#[async_trait]
pub trait CouponBook: Send + Sync {
    async fn record(&self, chunk: &[Reservation]) -> Result<ChunkRecord, Unavailable>;
}

/// Shared ownership of one catalog or ledger by several functions (the local runner, tests).
#[async_trait]
impl<T: CampaignCatalog + ?Sized> CampaignCatalog for std::sync::Arc<T> {
    async fn create(&self, partner_id: &str, campaign: &NewCampaign, max_live: u32) -> Result<Campaign, IssuanceError> {
        (**self).create(partner_id, campaign, max_live).await
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
    async fn outcome_of(&self, id: CampaignId, user: &UserId) -> Result<Option<Outcome>, Unavailable> {
        (**self).outcome_of(id, user).await
    }
    async fn holders(&self, id: CampaignId) -> Result<Vec<Holder>, Unavailable> {
        (**self).holders(id).await
    }
    async fn change(
        &self,
        partner: &str,
        id: CampaignId,
        change: &CampaignChange,
        now: DateTime<Utc>,
    ) -> Result<Campaign, IssuanceError> {
        (**self).change(partner, id, change, now).await
    }
    async fn page(
        &self,
        partner: &str,
        before: Option<CampaignId>,
        limit: u32,
    ) -> Result<Vec<(Campaign, u64)>, Unavailable> {
        (**self).page(partner, before, limit).await
    }
}

#[async_trait]
impl<T: IssueLedger + ?Sized> IssueLedger for std::sync::Arc<T> {
    async fn prime(&self, rules: &IssueRules) -> Result<(), Unavailable> {
        (**self).prime(rules).await
    }
    async fn rules(&self, id: CampaignId) -> Result<Option<IssueRules>, Unavailable> {
        (**self).rules(id).await
    }
    async fn reserve(
        &self,
        id: CampaignId,
        partner: &str,
        user: &UserId,
        request: Uuid,
        now: DateTime<Utc>,
    ) -> Result<IssueDecision, Unavailable> {
        (**self).reserve(id, partner, user, request, now).await
    }
    async fn mark_sent(&self, id: CampaignId, request: Uuid) -> Result<(), Unavailable> {
        (**self).mark_sent(id, request).await
    }
    async fn release(&self, id: CampaignId, user: &UserId, request: Uuid) -> Result<bool, Unavailable> {
        (**self).release(id, user, request).await
    }
    async fn reserved_count(&self, id: CampaignId) -> Result<u64, Unavailable> {
        (**self).reserved_count(id).await
    }
    async fn standing(&self, id: CampaignId, user: &UserId) -> Result<Standing, Unavailable> {
        (**self).standing(id, user).await
    }
    async fn record_outcomes(&self, id: CampaignId, outcomes: &[(UserId, Outcome)]) -> Result<(), Unavailable> {
        (**self).record_outcomes(id, outcomes).await
    }
    async fn live_campaigns(&self) -> Result<Vec<CampaignId>, Unavailable> {
        (**self).live_campaigns().await
    }
    async fn discard(&self, id: CampaignId) -> Result<(), Unavailable> {
        (**self).discard(id).await
    }
    async fn pending(&self, id: CampaignId, limit: usize) -> Result<Vec<PendingReservation>, Unavailable> {
        (**self).pending(id, limit).await
    }
    async fn heal_turn(
        &self,
        id: CampaignId,
        now: DateTime<Utc>,
        grace: std::time::Duration,
    ) -> Result<HealTurn, Unavailable> {
        (**self).heal_turn(id, now, grace).await
    }
    async fn rebuild(&self, rules: &IssueRules, holders: &[Holder]) -> Result<u64, Unavailable> {
        (**self).rebuild(rules, holders).await
    }
    async fn end_heal(&self, id: CampaignId, rebuilt: bool) -> Result<(), Unavailable> {
        (**self).end_heal(id, rebuilt).await
    }
    async fn amend(&self, rules: &IssueRules, turn: &str) -> Result<Amendment, Unavailable> {
        (**self).amend(rules, turn).await
    }
    async fn change_turn(&self, id: CampaignId) -> Result<Option<String>, Unavailable> {
        (**self).change_turn(id).await
    }
    async fn end_change_turn(&self, id: CampaignId, token: &str) -> Result<(), Unavailable> {
        (**self).end_change_turn(id, token).await
    }
}

#[async_trait]
impl<T: ReservationQueue + ?Sized> ReservationQueue for std::sync::Arc<T> {
    async fn enqueue(&self, reservation: &Reservation) -> Result<(), SendError> {
        (**self).enqueue(reservation).await
    }
    async fn in_flight(&self) -> Result<u64, Unavailable> {
        (**self).in_flight().await
    }
}

#[async_trait]
impl<T: CouponBook + ?Sized> CouponBook for std::sync::Arc<T> {
    async fn record(&self, chunk: &[Reservation]) -> Result<ChunkRecord, Unavailable> {
        (**self).record(chunk).await
    }
}
