//! Recovery, run every minute: a place the reserve script recorded as pending whose message was
//! never known to be sent (the process died between the decision and the send, the send's outcome
//! was unknown, or its pending record was not cleared) is sent again once it is older than a grace
//! period. The writer is idempotent, so a second message for a place that was delivered after all
//! costs nothing. A place that can no longer be sent (its campaign's rules are gone, or its coupons
//! have expired) is given back instead, and logged.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::domain::{PendingReservation, Reservation};
use super::error::IssuanceError;
use super::ports::{IssueLedger, ReservationQueue};
use crate::kernel::{Clock, SystemClock};

/// How old a pending place must be before recovery sends it (`RECOVERY_GRACE_SECS`): well above
/// the issue path's own deadline, so a request still in flight is never raced.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(60);
/// Places handled per campaign and run, so one run stays within its function's timeout; the next
/// run takes the rest.
pub const MAX_PLACES_PER_CAMPAIGN: usize = 5_000;

/// What one run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoverySummary {
    pub campaigns: usize,
    /// Pending places seen, young ones included.
    pub pending: usize,
    pub resent: usize,
    pub released: usize,
    /// Sends or releases that failed this time (tried again next run).
    pub failed: usize,
}

pub struct Recovery<L, Q> {
    ledger: L,
    queue: Q,
    clock: Arc<dyn Clock>,
    grace: Duration,
}

impl<L: IssueLedger, Q: ReservationQueue> Recovery<L, Q> {
    pub fn new(ledger: L, queue: Q) -> Self {
        Self {
            ledger,
            queue,
            clock: Arc::new(SystemClock),
            grace: DEFAULT_GRACE,
        }
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// One pass over every live campaign.
    pub async fn run(&self) -> Result<RecoverySummary, IssuanceError> {
        let now = self.clock.now();
        let due = now - chrono::Duration::from_std(self.grace).unwrap_or(chrono::Duration::MAX);
        let mut summary = RecoverySummary::default();
        for campaign in self.ledger.live_campaigns().await? {
            summary.campaigns += 1;
            let places = self.ledger.pending(campaign, MAX_PLACES_PER_CAMPAIGN).await?;
            summary.pending += places.len();
            let places: Vec<PendingReservation> = places.into_iter().filter(|p| p.reserved_at <= due).collect();
            if places.is_empty() {
                continue;
            }
            let rules = self.ledger.rules(campaign).await?;
            for place in places {
                let sendable = rules.as_ref().filter(|r| now < r.coupon_expires_at);
                let Some(rules) = sendable else {
                    match self.ledger.release(campaign, &place.user_id, place.request_id).await {
                        Ok(_) => {
                            summary.released += 1;
                            tracing::error!(
                                campaign_id = campaign,
                                request_id = %place.request_id,
                                user_id = place.user_id.as_str(),
                                "a pending place can no longer be sent (campaign rules gone or coupons expired); released"
                            );
                        }
                        Err(e) => {
                            summary.failed += 1;
                            tracing::warn!(campaign_id = campaign, request_id = %place.request_id, error = %e, "release failed; next run tries again");
                        }
                    }
                    continue;
                };
                let reservation = Reservation::new(
                    place.request_id,
                    campaign,
                    &rules.partner_id,
                    place.user_id.clone(),
                    place.rank,
                    place.reserved_at,
                );
                match self.queue.enqueue(&reservation).await {
                    Ok(()) => {
                        summary.resent += 1;
                        tracing::warn!(
                            campaign_id = campaign,
                            request_id = %place.request_id,
                            user_id = place.user_id.as_str(),
                            age_ms = (now - place.reserved_at).num_milliseconds(),
                            "pending place re-sent"
                        );
                        if let Err(e) = self.ledger.mark_sent(campaign, place.request_id).await {
                            tracing::warn!(campaign_id = campaign, request_id = %place.request_id, error = %e, "re-sent, but still pending: the next run sends it again (harmless)");
                        }
                    }
                    Err(e) => {
                        // Not sent, or unknown: either way it stays pending for the next run.
                        summary.failed += 1;
                        tracing::warn!(campaign_id = campaign, request_id = %place.request_id, error = %e, "re-send failed; next run tries again");
                    }
                }
            }
        }
        for (result, places) in [
            ("resent", summary.resent),
            ("released", summary.released),
            ("failed", summary.failed),
        ] {
            metrics::counter!("fcfs_recovery_places_total", "result" => result).increment(places as u64);
        }
        if summary.resent + summary.released + summary.failed > 0 {
            tracing::warn!(?summary, "recovery run");
        } else {
            tracing::info!(?summary, "recovery run");
        }
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration as Span;

    use super::*;
    use crate::issuance::Issuance;
    use crate::issuance::ports::{CampaignCatalog, IssueLedger};
    use crate::kernel::UserId;
    use crate::testkit::{ManualClock, MemoryCatalog, MemoryLedger, MemoryQueue, QueueFault, new_campaign};

    struct World {
        issuance: Issuance<Arc<MemoryCatalog>, Arc<MemoryLedger>, Arc<MemoryQueue>>,
        recovery: Recovery<Arc<MemoryLedger>, Arc<MemoryQueue>>,
        ledger: Arc<MemoryLedger>,
        queue: Arc<MemoryQueue>,
        clock: Arc<ManualClock>,
        campaign: u64,
    }

    async fn world() -> World {
        let clock = Arc::new(ManualClock::default());
        let (catalog, ledger, queue) = (
            Arc::new(MemoryCatalog::default()),
            Arc::new(MemoryLedger::default()),
            Arc::new(MemoryQueue::default()),
        );
        let campaign = catalog
            .create("p1", &new_campaign(10, clock.now() - Span::minutes(1)), u32::MAX)
            .await
            .unwrap();
        ledger.prime(&(&campaign).into()).await.unwrap();
        World {
            issuance: Issuance::new(catalog, ledger.clone(), queue.clone()).with_clock(clock.clone()),
            recovery: Recovery::new(ledger.clone(), queue.clone()).with_clock(clock.clone()),
            ledger,
            queue,
            clock,
            campaign: campaign.id,
        }
    }

    fn user(u: &str) -> UserId {
        UserId::parse(u).unwrap()
    }

    #[tokio::test]
    async fn a_place_whose_send_outcome_was_unknown_is_kept_and_re_sent_after_the_grace() {
        let w = world().await;
        w.queue.fail_with(QueueFault::LoseResponse);
        let accepted = w.issuance.issue("p1", w.campaign, &user("a")).await.unwrap();
        w.queue.fail_with(QueueFault::None);
        assert_eq!(w.ledger.reserved_count(w.campaign).await.unwrap(), 1, "not given back");
        assert_eq!(
            w.recovery.run().await.unwrap().resent,
            0,
            "too young: may still be in flight"
        );
        w.clock.advance(Span::seconds(61));
        let summary = w.recovery.run().await.unwrap();
        assert_eq!((summary.resent, summary.released, summary.pending), (1, 0, 1));
        let sent = w.queue.sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 2, "the lost-response send and the re-send");
        assert_eq!(sent[1], sent[0], "the same reservation, so the writer writes it once");
        assert_eq!(sent[1].request_id, accepted.request_id);
        assert_eq!(
            w.recovery.run().await.unwrap().pending,
            0,
            "re-sent places are no longer pending"
        );
    }

    #[tokio::test]
    async fn a_sent_place_is_not_pending_and_a_refused_one_is_given_back_at_once() {
        let w = world().await;
        w.issuance.issue("p1", w.campaign, &user("a")).await.unwrap();
        w.queue.fail_with(QueueFault::Refuse);
        assert!(w.issuance.issue("p1", w.campaign, &user("b")).await.is_err());
        w.clock.advance(Span::minutes(5));
        let summary = w.recovery.run().await.unwrap();
        assert_eq!((summary.pending, summary.resent), (0, 0));
        assert_eq!(w.ledger.reserved_count(w.campaign).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_failed_re_send_stays_pending_and_an_expired_campaign_releases() {
        let w = world().await;
        w.queue.fail_with(QueueFault::LoseResponse);
        w.issuance.issue("p1", w.campaign, &user("a")).await.unwrap();
        w.queue.fail_with(QueueFault::Refuse);
        w.clock.advance(Span::minutes(2));
        assert_eq!(w.recovery.run().await.unwrap().failed, 1);
        assert_eq!(
            w.ledger.pending(w.campaign, 10).await.unwrap().len(),
            1,
            "still pending"
        );
        // The campaign's coupons expire (the fixture's: a day after opening): sending is pointless.
        w.clock.advance(Span::days(2));
        let summary = w.recovery.run().await.unwrap();
        assert_eq!(summary.released, 1);
        assert_eq!(w.ledger.reserved_count(w.campaign).await.unwrap(), 0);
    }
}
