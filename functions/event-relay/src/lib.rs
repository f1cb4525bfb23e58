//! The event relay, run by a schedule every minute: each invocation relays for
//! `EVENT_RELAY_RUN_SECONDS` (default 60), so events reach partners within a second of their
//! commit with no gap between runs (the next starts while this one finishes its deliveries;
//! leases keep each partner's deliveries to one relay).

use std::time::Duration;

use fcfs_shared::adapters::events::relay_from;
use fcfs_shared::adapters::mysql::MySqlStore;
use fcfs_shared::config::{Settings, StartupError};
use fcfs_shared::events::ports::{EventLog, Webhooks};
use fcfs_shared::events::relay::{EventRelay, RelaySummary};

pub struct EventRelayFunction<W, L> {
    relay: EventRelay<W, L>,
    run_for: Duration,
}

impl EventRelayFunction<MySqlStore, MySqlStore> {
    pub fn from_settings(settings: &Settings, sdk: &aws_config::SdkConfig) -> Result<Self, StartupError> {
        let run_for = Duration::from_secs(settings.or("EVENT_RELAY_RUN_SECONDS", 60_u64)?);
        Ok(Self::new(relay_from(settings, sdk)?, run_for))
    }
}

impl<W: Webhooks + 'static, L: EventLog + 'static> EventRelayFunction<W, L> {
    pub fn new(relay: EventRelay<W, L>, run_for: Duration) -> Self {
        Self { relay, run_for }
    }

    /// One scheduled invocation (the event's content is not needed).
    pub async fn handle(&self, _event: serde_json::Value) -> RelaySummary {
        let summary = self.relay.run(self.run_for).await;
        tracing::info!(?summary, "event relay run finished");
        summary
    }
}
