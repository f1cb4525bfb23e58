//! The events context's use cases over the testkit's in-memory tables, transport, secret box,
//! vetting and bus, on a hand-moved clock: registration and pull (`webhooks`), the relay
//! (`relay`), and the retry rule (`retry`).

mod relay;
mod retry;
mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;

use super::domain::{EventType, NewEvent};
use super::relay::{EventRelay, RelaySettings};
use super::service::{RegisterWebhook, WebhookService};
use crate::kernel::Clock;
use crate::testkit::{ManualClock, MemoryEvents, PlainSecrets, RecordingBus, RecordingTransport, ScriptedVetting};

pub(super) type Service = WebhookService<Arc<MemoryEvents>, Arc<MemoryEvents>, PlainSecrets, Arc<ScriptedVetting>>;

/// The instant every world starts at.
pub(super) fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

/// An event of `kind` for `partner`, its data naming `n`, occurred at `at`.
pub(super) fn event(partner: &str, kind: EventType, n: u64, at: DateTime<Utc>) -> NewEvent {
    NewEvent {
        partner_id: partner.to_owned(),
        kind,
        subject: n.to_string(),
        once_key: None,
        occurred_at: at,
        data: json!({ "n": n }),
    }
}

pub(super) fn url(partner: &str) -> String {
    format!("https://{partner}.example/hook")
}

pub(super) fn request(partner: &str, events: &[EventType]) -> RegisterWebhook {
    RegisterWebhook {
        url: url(partner),
        events: events.to_vec(),
    }
}

/// The POST deadline of every world's transport and relay.
pub(super) const POST_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) struct World {
    pub clock: Arc<ManualClock>,
    pub events: Arc<MemoryEvents>,
    pub vetting: Arc<ScriptedVetting>,
    pub transport: Arc<RecordingTransport>,
    pub bus: Arc<RecordingBus>,
    pub service: Service,
    pub relay: Arc<EventRelay<MemoryEvents, MemoryEvents>>,
}

impl World {
    pub fn new() -> Self {
        let clock = Arc::new(ManualClock::at(t0()));
        let events = Arc::new(MemoryEvents::default());
        let vetting = Arc::new(ScriptedVetting::default());
        let transport = Arc::new(RecordingTransport::new(POST_TIMEOUT));
        let bus = Arc::new(RecordingBus::default());
        let service = WebhookService::new(events.clone(), events.clone(), PlainSecrets, vetting.clone())
            .with_clock(clock.clone());
        let settings = RelaySettings {
            post_timeout: POST_TIMEOUT,
            ..RelaySettings::default()
        };
        let relay = EventRelay::new(
            events.clone(),
            events.clone(),
            Arc::new(PlainSecrets),
            transport.clone(),
            Some(bus.clone()),
            settings,
        )
        .with_clock(clock.clone());
        Self {
            clock,
            events,
            vetting,
            transport,
            bus,
            service,
            relay: Arc::new(relay),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Registers `partner` for `events` at its URL; the secret.
    pub async fn register(&self, partner: &str, events: &[EventType]) -> String {
        let (_, secret) = self.service.register(partner, request(partner, events)).await.unwrap();
        secret.unwrap()
    }

    /// Appends `n` events of `kind` for `partner`, occurred now.
    pub fn append(&self, partner: &str, kind: EventType, n: u64) {
        let now = self.now();
        self.events.append((0..n).map(|i| event(partner, kind, i, now)));
    }

    /// One round of the relay, waiting for the deliveries it starts.
    pub async fn round(&self) -> super::relay::RelaySummary {
        self.relay.run(Duration::ZERO).await
    }

    pub async fn delivery(&self, partner: &str) -> super::domain::Delivery {
        self.service.view(partner).await.unwrap().delivery
    }
}
