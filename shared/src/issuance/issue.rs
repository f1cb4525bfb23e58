//! The flash-sale use case: Redis decides (one script: window, duplicate, stock), the queue
//! carries each reservation to the writer, and a reservation whose message cannot be sent is
//! given back in its own request's name. Campaign ownership is cached here, so a rejection costs
//! one Redis round trip.

use std::sync::Arc;
use std::time::Duration;

use super::domain::{CampaignId, IssueDecision, Reservation};
use super::error::IssuanceError;
use super::ports::{CampaignCatalog, IssueLedger, ReservationQueue};
use crate::kernel::{Clock, SystemClock, Unavailable, UserId};

/// A request Redis accepted and the queue now carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    pub request_id: uuid::Uuid,
    /// The user's place in the order of acceptance (1 = first).
    pub rank: u32,
}

/// Where a user's coupon of a campaign stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueState {
    /// The coupon row is written.
    Issued {
        coupon_id: u64,
    },
    /// Redis holds the user's place; the writer has not recorded it yet.
    Pending,
    None,
}

/// How long campaign ownership is trusted. Known campaigns stay for minutes (a campaign never
/// changes owner); unknown ids only briefly, so a flood of unknown ids is not a flood of MySQL
/// reads and a campaign created a moment later soon becomes visible.
const KNOWN_OWNER_TTL: Duration = Duration::from_secs(600);
const UNKNOWN_OWNER_TTL: Duration = Duration::from_secs(2);
const MAX_CACHED_OWNERS: u64 = 100_000;

/// The owning partner of a campaign, or `None` for an unknown id.
type Owner = Option<Arc<str>>;

struct OwnerExpiry;

impl moka::Expiry<CampaignId, Owner> for OwnerExpiry {
    fn expire_after_create(&self, _id: &CampaignId, owner: &Owner, _now: std::time::Instant) -> Option<Duration> {
        Some(if owner.is_some() {
            KNOWN_OWNER_TTL
        } else {
            UNKNOWN_OWNER_TTL
        })
    }
}

pub struct Issuance<C, L, Q> {
    catalog: C,
    ledger: L,
    queue: Q,
    clock: Arc<dyn Clock>,
    owners: moka::future::Cache<CampaignId, Owner>,
}

impl<C: CampaignCatalog, L: IssueLedger, Q: ReservationQueue> Issuance<C, L, Q> {
    pub fn new(catalog: C, ledger: L, queue: Q) -> Self {
        Self {
            catalog,
            ledger,
            queue,
            clock: Arc::new(SystemClock),
            owners: moka::future::Cache::builder()
                .max_capacity(MAX_CACHED_OWNERS)
                .expire_after(OwnerExpiry)
                .build(),
        }
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn catalog(&self) -> &C {
        &self.catalog
    }

    pub fn ledger(&self) -> &L {
        &self.ledger
    }

    pub fn queue(&self) -> &Q {
        &self.queue
    }

    /// The campaign, if it exists and belongs to `partner`; another partner's is "not found", so
    /// its existence does not leak.
    async fn owned(&self, partner: &str, campaign: CampaignId) -> Result<(), IssuanceError> {
        // Concurrent misses for one id share a single load: the first second of a flash sale
        // must not send every caller to MySQL.
        let owner = self
            .owners
            .try_get_with(campaign, async {
                let found = self.catalog.get(campaign).await?;
                Ok::<_, Unavailable>(found.map(|c| Arc::from(c.partner_id)))
            })
            .await
            .map_err(|e| Unavailable::clone(&e))?;
        match owner {
            Some(owner) if &*owner == partner => Ok(()),
            _ => Err(IssuanceError::CampaignNotFound),
        }
    }

    /// One user asks for one coupon of `partner`'s campaign.
    pub async fn issue(&self, partner: &str, campaign: CampaignId, user: &UserId) -> Result<Accepted, IssuanceError> {
        self.owned(partner, campaign).await?;
        let now = self.clock.now();
        let request_id = uuid::Uuid::now_v7();
        let decision = match self.ledger.reserve(campaign, user, request_id, now).await {
            Ok(decision) => decision,
            Err(e) => {
                // A timed-out script may still have reserved: undo in this request's name only.
                self.compensate(campaign, user, request_id).await;
                return Err(e.into());
            }
        };
        let rank = match decision {
            IssueDecision::Reserved { rank } => rank,
            IssueDecision::AlreadyIssued => return Err(IssuanceError::AlreadyIssued),
            IssueDecision::SoldOut => return Err(IssuanceError::SoldOut),
            IssueDecision::NotOpen => return Err(IssuanceError::NotOpen),
            IssueDecision::Ended => return Err(IssuanceError::Ended),
            IssueDecision::Unprimed => {
                tracing::error!(
                    campaign_id = campaign,
                    "no issue rules in Redis: run `fcfs-admin rebuild-ledger`"
                );
                return Err(IssuanceError::Unprimed(campaign));
            }
        };
        let reservation = Reservation {
            request_id,
            campaign_id: campaign,
            partner_id: partner.to_owned(),
            user_id: user.clone(),
            rank,
            reserved_at: now,
        };
        if let Err(enqueue_error) = self.queue.enqueue(&reservation).await {
            // No message, no coupon: give the place back so the quantity is not leaked.
            self.compensate(campaign, user, request_id).await;
            return Err(enqueue_error.into());
        }
        Ok(Accepted { request_id, rank })
    }

    async fn compensate(&self, campaign: CampaignId, user: &UserId, request_id: uuid::Uuid) {
        match self.ledger.release(campaign, user, request_id).await {
            Ok(released) => {
                tracing::warn!(campaign_id = campaign, %request_id, released, "request failed; reservation compensated")
            }
            Err(release_error) => tracing::error!(
                campaign_id = campaign,
                %request_id,
                user_id = user.as_str(),
                %release_error,
                "compensation failed: a place may be held without a message; reconcile with `fcfs-admin rebuild-ledger`"
            ),
        }
    }

    /// Where `user`'s coupon of `partner`'s campaign stands: written, held in Redis, or neither.
    pub async fn status(
        &self,
        partner: &str,
        campaign: CampaignId,
        user: &UserId,
    ) -> Result<IssueState, IssuanceError> {
        self.owned(partner, campaign).await?;
        Ok(match self.catalog.coupon_of(campaign, user).await? {
            Some(coupon_id) => IssueState::Issued { coupon_id },
            None if self.ledger.holds(campaign, user).await? => IssueState::Pending,
            None => IssueState::None,
        })
    }
}

#[cfg(test)]
mod tests;
