//! A sold-out sale costs almost nothing: most of a flash sale's requests arrive after the last
//! coupon is gone, and each would cost a Redis script call to hear "sold out" again. Once Redis
//! has answered a campaign with "sold out", "not open yet" or "ended", this instance repeats that
//! answer from memory, without Redis, for at most its `bound` (a setting, ≤ 1 s). What can change
//! the answer meanwhile is seen after at most that bound:
//! - a place given back (a failed send's compensation), a raised quantity or a resume is offered
//!   again;
//! - "not open" is never repeated past the campaign's start, so opening is never late;
//! - an end moved later reopens the sale.
//!
//! The memory is the instance's own (each warm Lambda instance, the runner's process): nothing
//! is shared, so nothing can be stale for longer than the bound anywhere.
//!
//! What it costs: a user who already holds a place and repeats the request while the campaign is
//! remembered as sold out gets 410 `SOLD_OUT` rather than 409 with its first answer (Redis checks
//! the holder before the stock; memory knows no holders). The status route stays exact, and a
//! bound of 0 turns the memory off.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::issuance::domain::{CampaignId, IssueDecision};
use crate::issuance::error::IssuanceError;

/// The longest a "no" may be repeated from memory, and the default.
pub const MAX_REJECTION_MEMORY: Duration = Duration::from_secs(1);
/// Campaigns remembered at once: more live flash sales than one instance serves.
const MAX_REMEMBERED: u64 = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    SoldOut,
    NotOpen,
    Ended,
}

#[derive(Clone)]
struct Remembered {
    /// Another partner's request for this id must still hear "not found" (from Redis).
    owner: Arc<str>,
    refusal: Refusal,
    until: DateTime<Utc>,
}

pub(super) struct RejectionMemory {
    bound: Duration,
    campaigns: moka::future::Cache<CampaignId, Remembered>,
}

impl RejectionMemory {
    /// `bound` above `MAX_REJECTION_MEMORY` is cut to it.
    pub(super) fn new(bound: Duration) -> Self {
        let bound = bound.min(MAX_REJECTION_MEMORY);
        Self {
            bound,
            // The deadline that counts is `until`, on the use case's clock; this only frees memory.
            campaigns: moka::future::Cache::builder()
                .max_capacity(MAX_REMEMBERED)
                .time_to_live(bound.max(Duration::from_millis(1)))
                .build(),
        }
    }

    /// The answer remembered for `partner`'s request at `now`, if any.
    pub(super) async fn recall(
        &self,
        partner: &str,
        campaign: CampaignId,
        now: DateTime<Utc>,
    ) -> Option<IssuanceError> {
        if self.bound.is_zero() {
            return None;
        }
        let remembered = self.campaigns.get(&campaign).await?;
        if now >= remembered.until || &*remembered.owner != partner {
            return None;
        }
        metrics::counter!("fcfs_issue_answers_from_memory_total").increment(1);
        Some(match remembered.refusal {
            Refusal::SoldOut => IssuanceError::SoldOut,
            Refusal::NotOpen => IssuanceError::NotOpen,
            Refusal::Ended => IssuanceError::Ended,
        })
    }

    /// Remembers Redis's `decision` for `partner`'s campaign, if it is a "no" worth repeating.
    pub(super) async fn note(&self, partner: &str, campaign: CampaignId, decision: IssueDecision, now: DateTime<Utc>) {
        if self.bound.is_zero() {
            return;
        }
        let Ok(bound) = chrono::Duration::from_std(self.bound) else {
            return;
        };
        let (refusal, until) = match decision {
            IssueDecision::SoldOut => (Refusal::SoldOut, now + bound),
            IssueDecision::NotOpen { opens_at } => (Refusal::NotOpen, opens_at.min(now + bound)),
            IssueDecision::Ended => (Refusal::Ended, now + bound),
            _ => return,
        };
        // Concurrent requests that all heard "no" would each write the same entry: the first is
        // enough, and a later write would only stretch the bound.
        if let Some(known) = self.campaigns.get(&campaign).await
            && known.refusal == refusal
            && now < known.until
        {
            return;
        }
        let remembered = Remembered {
            owner: Arc::from(partner),
            refusal,
            until,
        };
        self.campaigns.insert(campaign, remembered).await;
    }
}

#[cfg(test)]
mod tests;
