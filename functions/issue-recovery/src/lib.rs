//! The recovery function: an EventBridge schedule (every minute) mapped to the issuance context's
//! `Recovery` use case; its summary is the invocation's result.

use std::time::Duration;

use fcfs_shared::adapters::redis::RedisIssueLedger;
use fcfs_shared::adapters::sqs::{DEFAULT_SEND_TIMEOUT, SqsReservationQueue};
use fcfs_shared::config::{Settings, StartupError};
use fcfs_shared::issuance::ports::{IssueLedger, ReservationQueue};
use fcfs_shared::issuance::recovery::DEFAULT_GRACE;
use fcfs_shared::issuance::{IssuanceError, Recovery, RecoverySummary};

pub struct IssueRecovery<L, Q> {
    recovery: Recovery<L, Q>,
}

impl IssueRecovery<RedisIssueLedger, SqsReservationQueue> {
    /// The deployed function: Redis at `REDIS_URL`, the queue at `ISSUE_QUEUE_URL`, places older
    /// than `RECOVERY_GRACE_SECS` (default 60) re-sent.
    pub async fn from_settings(settings: &Settings, sdk: &aws_config::SdkConfig) -> Result<Self, StartupError> {
        let ledger = RedisIssueLedger::from_settings(settings)?;
        let send_timeout = settings.or("SQS_SEND_TIMEOUT_MS", DEFAULT_SEND_TIMEOUT.as_millis() as u64)?;
        let queue = SqsReservationQueue::with_timeout(
            fcfs_shared::adapters::sqs::client(sdk),
            settings.required("ISSUE_QUEUE_URL")?,
            Duration::from_millis(send_timeout),
        );
        let grace = settings.or("RECOVERY_GRACE_SECS", DEFAULT_GRACE.as_secs())?;
        Ok(Self::new(
            Recovery::new(ledger, queue).with_grace(Duration::from_secs(grace)),
        ))
    }
}

impl<L: IssueLedger, Q: ReservationQueue> IssueRecovery<L, Q> {
    pub fn new(recovery: Recovery<L, Q>) -> Self {
        Self { recovery }
    }

    /// One run; the scheduled event carries nothing the run needs.
    pub async fn handle(&self, _event: serde_json::Value) -> Result<RecoverySummary, IssuanceError> {
        self.recovery.run().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use fcfs_shared::issuance::ports::{CampaignCatalog, IssueLedger};
    use fcfs_shared::kernel::{Clock, UserId};
    use fcfs_shared::testkit::{ManualClock, MemoryCatalog, MemoryLedger, MemoryQueue, new_campaign};

    use super::*;

    #[tokio::test]
    async fn a_scheduled_event_runs_recovery_and_answers_its_summary() {
        let clock = Arc::new(ManualClock::default());
        let ledger = Arc::new(MemoryLedger::default());
        let catalog = MemoryCatalog::default();
        let campaign = catalog
            .create(
                "p",
                &new_campaign(5, clock.now() - chrono::Duration::minutes(1)),
                u32::MAX,
            )
            .await
            .unwrap();
        ledger.prime(&(&campaign).into()).await.unwrap();
        // A place taken by a process that died before sending.
        let user = UserId::parse("u").unwrap();
        ledger
            .reserve(campaign.id, "p", &user, uuid::Uuid::now_v7(), clock.now())
            .await
            .unwrap();
        clock.advance(chrono::Duration::minutes(2));
        let queue = Arc::new(MemoryQueue::default());
        let function = IssueRecovery::new(Recovery::new(ledger, queue.clone()).with_clock(clock));
        let event = serde_json::json!({"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}});
        let summary = function.handle(event).await.unwrap();
        assert_eq!(summary.resent, 1);
        assert_eq!(queue.sent.lock().unwrap()[0].user_id, user);
    }
}
