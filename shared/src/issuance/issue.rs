//! The flash-sale use case: Redis decides (one script: owner, window, duplicate, stock) and, in
//! the same atomic step, records the place as pending; the queue carries each reservation to the
//! writer, and a sent message clears its pending record. A reservation whose message certainly
//! was not sent is given back in its own request's name; one whose send outcome is unknown is
//! kept (recovery re-sends it, the writer is idempotent), so a lost response never sells a place
//! twice. The issue path touches only Redis and SQS: MySQL is asked only about campaigns Redis
//! does not know (unknown ids, or a ledger that lost its state).

use std::sync::Arc;
use std::time::Duration;

use super::domain::{CampaignId, IssueDecision, Outcome, RejectionReason, Reservation};
use super::error::IssuanceError;
use super::ports::{CampaignCatalog, IssueLedger, ReservationQueue, SendError};
use crate::kernel::{Clock, SystemClock, Unavailable, UserId};

/// A request Redis accepted: its message is on the queue, or recorded as pending for recovery.
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
    /// Redis accepted the request, the database refused it (kept, with its reason).
    Rejected(RejectionReason),
    None,
}

impl From<Outcome> for IssueState {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Issued { coupon_id } => Self::Issued { coupon_id },
            Outcome::Rejected(reason) => Self::Rejected(reason),
        }
    }
}

/// How long campaign ownership is trusted. Known campaigns stay for minutes (a campaign never
/// changes owner); unknown ids only briefly, so a flood of unknown ids is not a flood of MySQL
/// reads and a campaign created a moment later soon becomes visible.
const KNOWN_OWNER_TTL: Duration = Duration::from_secs(600);
const UNKNOWN_OWNER_TTL: Duration = Duration::from_secs(2);
const MAX_CACHED_OWNERS: u64 = 100_000;

/// The owning partner of a campaign, or `None` for an unknown id.
/// With when issuance ends: a campaign whose state left Redis after it ended is "ended", not a
/// reason to retry.
type Owner = Option<(Arc<str>, chrono::DateTime<chrono::Utc>)>;

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
    /// How long after a loss is first seen before it is rebuilt (`heal`).
    heal_grace: Duration,
    /// Redis's last "sold out", "not open" or "ended", repeated for a bounded time.
    rejections: memory::RejectionMemory,
}

mod heal;
mod memory;
pub use heal::HEAL_GRACE;
pub use memory::MAX_REJECTION_MEMORY;

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
            heal_grace: HEAL_GRACE,
            rejections: memory::RejectionMemory::new(MAX_REJECTION_MEMORY),
        }
    }

    /// How long an instance repeats Redis's "sold out", "not open" or "ended" for a campaign
    /// without asking it (default and at most `MAX_REJECTION_MEMORY`; zero never repeats).
    pub fn with_rejection_memory(mut self, bound: Duration) -> Self {
        self.rejections = memory::RejectionMemory::new(bound);
        self
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// How long after a lost campaign state is first seen before a request rebuilds it
    /// (default `HEAL_GRACE`).
    pub fn with_heal_grace(mut self, grace: Duration) -> Self {
        self.heal_grace = grace;
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

    /// Asked only when Redis holds no rules for the campaign: whether it exists and belongs to
    /// `partner` (another partner's is "not found", so its existence does not leak); if so, when
    /// its issuance ends.
    async fn owned(&self, partner: &str, campaign: CampaignId) -> Result<chrono::DateTime<chrono::Utc>, IssuanceError> {
        // Concurrent misses for one id share a single load: a flood of unknown ids must not send
        // every caller to MySQL.
        let owner = self
            .owners
            .try_get_with(campaign, async {
                let found = self.catalog.get(campaign).await?;
                Ok::<_, Unavailable>(found.map(|c| (Arc::from(c.partner_id), c.issue_ends_at)))
            })
            .await
            .map_err(|e| Unavailable::clone(&e))?;
        match owner {
            Some((owner, ends_at)) if &*owner == partner => Ok(ends_at),
            _ => Err(IssuanceError::CampaignNotFound),
        }
    }

    /// One user asks for one coupon of `partner`'s campaign. Counted by outcome in
    /// `fcfs_issue_decisions_total`.
    pub async fn issue(&self, partner: &str, campaign: CampaignId, user: &UserId) -> Result<Accepted, IssuanceError> {
        let result = self.decide_and_send(partner, campaign, user).await;
        let outcome = match &result {
            Ok(_) => "reserved",
            Err(IssuanceError::AlreadyIssued { .. }) => "already_issued",
            Err(IssuanceError::SoldOut) => "sold_out",
            Err(IssuanceError::Paused) => "paused",
            Err(IssuanceError::NotOpen) => "not_open",
            Err(IssuanceError::Ended) => "ended",
            Err(IssuanceError::NotOnSale) => "not_on_sale",
            Err(IssuanceError::CampaignNotFound) => "not_found",
            Err(
                IssuanceError::Invalid(_)
                | IssuanceError::MessageWithoutId(_)
                | IssuanceError::LimitExceeded(_)
                | IssuanceError::BelowReserved { .. },
            ) => "invalid",
            Err(IssuanceError::ChangeInProgress) => "unavailable",
            Err(IssuanceError::Unprimed(_) | IssuanceError::Unavailable(_)) => "unavailable",
        };
        metrics::counter!("fcfs_issue_decisions_total", "outcome" => outcome).increment(1);
        result
    }

    /// An issue request refused before it could be asked (`issue`): a malformed campaign id in
    /// its path (`not_found`, as an unknown one) or a malformed body or user id (`invalid`).
    /// Counted with the decisions, so `fcfs_issue_decisions_total` counts every issue request.
    pub fn refused_unread(&self, campaign_not_found: bool) {
        let outcome = if campaign_not_found { "not_found" } else { "invalid" };
        metrics::counter!("fcfs_issue_decisions_total", "outcome" => outcome).increment(1);
    }

    async fn decide_and_send(
        &self,
        partner: &str,
        campaign: CampaignId,
        user: &UserId,
    ) -> Result<Accepted, IssuanceError> {
        let now = self.clock.now();
        if let Some(refused) = self.rejections.recall(partner, campaign, now).await {
            return Err(refused);
        }
        let request_id = uuid::Uuid::now_v7();
        let mut asked_again = false;
        let decision = loop {
            let decision = match self.ledger.reserve(campaign, partner, user, request_id, now).await {
                Ok(decision) => decision,
                Err(e) => {
                    // A timed-out script may still have reserved: undo in this request's name only.
                    self.compensate(campaign, user, request_id).await;
                    return Err(e.into());
                }
            };
            if decision != IssueDecision::Unprimed || asked_again {
                break decision;
            }
            // Redis keeps a campaign's state until a day after its coupons expire: past that,
            // the campaign has long ended, which is the answer. The end is read again before it
            // is answered: the partner may have moved it since it was cached.
            if now >= self.owned(partner, campaign).await? {
                self.owners.invalidate(&campaign).await;
                if now >= self.owned(partner, campaign).await? {
                    return Err(IssuanceError::Ended);
                }
            }
            if !self.heal(partner, campaign, now).await? {
                return Err(IssuanceError::Unprimed(campaign));
            }
            asked_again = true;
        };
        self.rejections.note(partner, campaign, decision, now).await;
        let rank = match decision {
            IssueDecision::Reserved { rank } => rank,
            IssueDecision::AlreadyIssued(place) => {
                let state = self.standing_of(campaign, user).await;
                return Err(IssuanceError::AlreadyIssued { place, state });
            }
            IssueDecision::SoldOut => return Err(IssuanceError::SoldOut),
            IssueDecision::Paused => return Err(IssuanceError::Paused),
            IssueDecision::NotOpen { .. } => return Err(IssuanceError::NotOpen),
            IssueDecision::Ended => return Err(IssuanceError::Ended),
            IssueDecision::NotOwner => return Err(IssuanceError::CampaignNotFound),
            IssueDecision::NotOnSale => return Err(IssuanceError::NotOnSale),
            IssueDecision::Unprimed => return Err(IssuanceError::Unprimed(campaign)),
        };
        let reservation = Reservation::new(request_id, campaign, partner, user.clone(), rank, now);
        match self.queue.enqueue(&reservation).await {
            Ok(()) => {
                if let Err(e) = self.ledger.mark_sent(campaign, request_id).await {
                    // Still pending in Redis: recovery sends it again, which the writer absorbs.
                    tracing::warn!(campaign_id = campaign, %request_id, error = %e, "sent, but its pending record stays");
                }
            }
            Err(SendError::NotSent(e)) => {
                // No message, no coupon: give the place back so the quantity is not leaked.
                self.compensate(campaign, user, request_id).await;
                return Err(e.into());
            }
            Err(SendError::Unknown(e)) => {
                // The message may be on the queue: giving the place back could sell it twice.
                // It stays pending; recovery delivers it if it was not sent.
                tracing::warn!(campaign_id = campaign, %request_id, error = %e, "send outcome unknown; recovery will deliver the reservation");
            }
        }
        Ok(Accepted { request_id, rank })
    }

    /// Where a place Redis just reported held stands, from Redis alone (a repeated request must
    /// not reach MySQL): `None` if Redis does not answer.
    async fn standing_of(&self, campaign: CampaignId, user: &UserId) -> Option<IssueState> {
        let standing = self.ledger.standing(campaign, user).await.ok()?;
        Some(match standing.outcome {
            Some(outcome) => outcome.into(),
            None if standing.held => IssueState::Pending,
            None => IssueState::None,
        })
    }

    async fn compensate(&self, campaign: CampaignId, user: &UserId, request_id: uuid::Uuid) {
        match self.ledger.release(campaign, user, request_id).await {
            Ok(released) => {
                metrics::counter!("fcfs_compensations_total", "result" => "done").increment(1);
                tracing::warn!(campaign_id = campaign, %request_id, released, "request failed; reservation compensated")
            }
            Err(release_error) => {
                metrics::counter!("fcfs_compensations_total", "result" => "failed").increment(1);
                tracing::error!(
                campaign_id = campaign,
                %request_id,
                user_id = user.as_str(),
                %release_error,
                "compensation failed: if the place was taken it stays pending, and recovery delivers it"
                )
            }
        }
    }

    /// Where `user`'s coupon of `partner`'s campaign stands: from Redis when it knows (the writer
    /// tells it what it committed), from MySQL otherwise.
    pub async fn status(
        &self,
        partner: &str,
        campaign: CampaignId,
        user: &UserId,
    ) -> Result<IssueState, IssuanceError> {
        let standing = match self.ledger.standing(campaign, user).await {
            Ok(standing) => standing,
            Err(e) => {
                // Without Redis a written outcome is still known; "pending" or "none" is not.
                self.owned(partner, campaign).await?;
                return match self.catalog.outcome_of(campaign, user).await? {
                    Some(outcome) => Ok(outcome.into()),
                    None => Err(e.into()),
                };
            }
        };
        match standing.owner.as_deref() {
            Some(owner) if owner != partner => return Err(IssuanceError::CampaignNotFound),
            Some(_) => {}
            None => {
                self.owned(partner, campaign).await?;
            }
        }
        if let Some(outcome) = standing.outcome {
            return Ok(outcome.into());
        }
        if standing.held {
            return Ok(IssueState::Pending);
        }
        Ok(self
            .catalog
            .outcome_of(campaign, user)
            .await?
            .map_or(IssueState::None, IssueState::from))
    }
}

#[cfg(test)]
mod tests;
