//! A sale that heals itself. When Redis has lost a campaign's state (flushed, evicted, a new
//! cache), the request that finds it unprimed rebuilds it from MySQL, under three conditions that
//! keep every 202 ISSUED and no campaign over its quantity:
//! - the loss was first seen at least `heal_grace` ago: a reservation sent just before it shows
//!   in the queue's counts by then (SQS's counts are approximate);
//! - no reservation of any campaign is on its way (the issue queue and its DLQ are empty): MySQL
//!   then holds every place Redis handed out, and the rebuilt counter counts them all;
//! - one caller at a time (a lock in Redis with a deadline).
//!
//! Meanwhile every request answers 503 with `Retry-After`, naming the campaign. The rebuild puts
//! the holders back, then the counter, then the rules: until the counter is back nothing is sold.

use super::Issuance;
use crate::issuance::domain::{CampaignId, IssueRules};
use crate::issuance::error::IssuanceError;
use crate::issuance::ports::{CampaignCatalog, HealTurn, IssueLedger, ReservationQueue};

/// Default `heal_grace`.
pub const HEAL_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

impl<C: CampaignCatalog, L: IssueLedger, Q: ReservationQueue> Issuance<C, L, Q> {
    /// Rebuilds `partner`'s unprimed campaign when its turn and the queue allow; `Ok(true)` when
    /// the campaign can be asked again (rebuilt now, or by another caller meanwhile).
    pub(super) async fn heal(
        &self,
        partner: &str,
        campaign: CampaignId,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, IssuanceError> {
        let turn = self.ledger.heal_turn(campaign, now, self.heal_grace).await?;
        match turn {
            HealTurn::Intact => return Ok(true),
            HealTurn::Wait | HealTurn::Busy => return Ok(false),
            HealTurn::Go => {}
        }
        let healed = self.rebuild(partner, campaign).await;
        // The turn ends either way; a failed end frees itself at the lock's deadline.
        let rebuilt = matches!(healed, Ok(true));
        if let Err(e) = self.ledger.end_heal(campaign, rebuilt).await {
            tracing::warn!(campaign_id = campaign, error = %e, "heal turn not ended; it expires by itself");
        }
        healed
    }

    async fn rebuild(&self, partner: &str, campaign: CampaignId) -> Result<bool, IssuanceError> {
        let in_flight = self.queue.in_flight().await?;
        if in_flight > 0 {
            tracing::warn!(
                campaign_id = campaign,
                in_flight,
                "campaign state lost in Redis: waiting for the reservations on their way before rebuilding it"
            );
            return Ok(false);
        }
        // A partner's change of the campaign and a rebuild exclude each other: a rebuild writes
        // the rules it read from MySQL, which a change committed meanwhile would contradict.
        let Some(turn) = self.ledger.change_turn(campaign).await? else {
            return Ok(false);
        };
        let rebuilt = self.rebuild_in_turn(partner, campaign).await;
        if let Err(e) = self.ledger.end_change_turn(campaign, &turn).await {
            tracing::warn!(campaign_id = campaign, error = %e, "change turn not ended; it expires by itself");
        }
        rebuilt
    }

    async fn rebuild_in_turn(&self, partner: &str, campaign: CampaignId) -> Result<bool, IssuanceError> {
        let Some(found) = self.catalog.get(campaign).await? else {
            return Err(IssuanceError::CampaignNotFound);
        };
        if found.partner_id != partner {
            return Err(IssuanceError::CampaignNotFound);
        }
        let holders = self.catalog.holders(campaign).await?;
        let held = self.ledger.rebuild(&IssueRules::from(&found), &holders).await?;
        metrics::counter!("fcfs_ledger_heals_total").increment(1);
        tracing::warn!(
            campaign_id = campaign,
            coupons = holders.len(),
            held,
            "campaign state lost in Redis: rebuilt from MySQL"
        );
        Ok(true)
    }
}
