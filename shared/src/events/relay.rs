//! The outbox's relay (`EventRelay`): gives committed events their sequence, publishes them to
//! the bus, delivers each partner's webhooks under a lease, and prunes what retention let go.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use serde::Serialize;
use tokio::task::JoinSet;

use super::domain::{
    AfterAttempt, Delivery, Event, MAX_EVENTS_PER_DELIVERY, Registration, RetryPolicy, after_attempt, delivery_body,
};
use super::ports::{EventBus, EventLog, SecretBox, WebhookTransport, Webhooks};
use super::signature;
use crate::kernel::{Clock, SystemClock, Unavailable};

/// How the relay runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelaySettings {
    pub retry: RetryPolicy,
    /// How long one POST may take (the transport's deadline), and so how long a lease lasts past it.
    pub post_timeout: Duration,
    /// How long the relay waits between rounds when a round found nothing to do.
    pub idle: Duration,
    pub retention: chrono::Duration,
    /// Partners delivered to at once (each its own task: a hanging endpoint holds only its own).
    pub max_partners_in_flight: usize,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            post_timeout: Duration::from_secs(5),
            idle: Duration::from_millis(200),
            retention: chrono::Duration::days(7),
            max_partners_in_flight: 64,
        }
    }
}

/// What one run of the relay did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RelaySummary {
    pub sequenced: u64,
    pub published: u64,
    pub deliveries: u64,
    pub delivered_events: u64,
    pub failed_deliveries: u64,
    pub paused: u64,
    pub pruned: u64,
}

/// The outbox's relay: gives committed events their sequence, publishes them to the bus, and
/// delivers each partner's to its webhook. Every step is safe to repeat: a crash between a POST
/// and its bookkeeping re-sends the same events (with the same ids) next time.
pub struct EventRelay<W, L> {
    webhooks: Arc<W>,
    log: Arc<L>,
    secrets: Arc<dyn SecretBox>,
    transport: Arc<dyn WebhookTransport>,
    bus: Option<Arc<dyn EventBus>>,
    settings: RelaySettings,
    clock: Arc<dyn Clock>,
}

/// How many events the sequencer takes per transaction.
pub const SEQUENCE_BATCH: u32 = 1000;
/// Sequencing transactions one round may run.
const SEQUENCE_BATCHES_PER_ROUND: u32 = 10;
/// How many events one publishing round reads.
const PUBLISH_BATCH: u32 = 500;
/// How many events one pruning statement deletes.
const PRUNE_BATCH: u32 = 1000;
pub const EVENTBRIDGE_CURSOR: &str = "eventbridge";

impl<W: Webhooks + 'static, L: EventLog + 'static> EventRelay<W, L> {
    pub fn new(
        webhooks: Arc<W>,
        log: Arc<L>,
        secrets: Arc<dyn SecretBox>,
        transport: Arc<dyn WebhookTransport>,
        bus: Option<Arc<dyn EventBus>>,
        settings: RelaySettings,
    ) -> Self {
        Self {
            webhooks,
            log,
            secrets,
            transport,
            bus,
            settings,
            clock: Arc::new(SystemClock),
        }
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Runs rounds until `run_for` has passed (a scheduled invocation's share of its interval),
    /// then waits for the deliveries in flight. A failing dependency ends the round, not the run.
    pub async fn run(&self, run_for: Duration) -> RelaySummary {
        let started = tokio::time::Instant::now();
        // The bus has its own cursor and its own pace (a slow bus holds back no webhook).
        let (mut summary, published) =
            tokio::join!(self.deliver_for(run_for, started), self.publish_for(run_for, started));
        summary.published = published;
        summary
    }

    /// Publishes to the bus until `run_for` has passed; how many events.
    async fn publish_for(&self, run_for: Duration, started: tokio::time::Instant) -> u64 {
        if self.bus.is_none() {
            return 0;
        }
        let mut published = 0;
        loop {
            let n = match self.publish().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "publishing to the event bus failed; retried next round");
                    0
                }
            };
            published += n;
            if started.elapsed() >= run_for {
                return published;
            }
            if n == 0 {
                tokio::time::sleep(self.settings.idle).await;
            }
        }
    }

    /// Sequences, delivers and prunes until `run_for` has passed, then waits for the deliveries
    /// in flight.
    async fn deliver_for(&self, run_for: Duration, started: tokio::time::Instant) -> RelaySummary {
        let mut summary = RelaySummary::default();
        let mut in_flight: JoinSet<(String, DeliveryOutcome)> = JoinSet::new();
        let mut busy: HashSet<String> = HashSet::new();
        let mut last_prune: Option<tokio::time::Instant> = None;
        loop {
            let worked = match self.round(&mut summary, &mut in_flight, &mut busy).await {
                Ok(worked) => worked,
                Err(e) => {
                    tracing::warn!(error = %e, "event relay round failed; the next round retries");
                    false
                }
            };
            if last_prune.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                last_prune = Some(tokio::time::Instant::now());
                match self.prune().await {
                    Ok(n) => summary.pruned += n,
                    Err(e) => tracing::warn!(error = %e, "pruning old events failed"),
                }
            }
            while let Some(done) = in_flight.try_join_next() {
                Self::count(done, &mut summary, &mut busy);
            }
            if started.elapsed() >= run_for {
                break;
            }
            if !worked {
                // Wake early when a delivery ends, so its partner's next batch goes at once.
                tokio::select! {
                    Some(done) = in_flight.join_next() => Self::count(done, &mut summary, &mut busy),
                    () = tokio::time::sleep(self.settings.idle) => {}
                }
            }
        }
        while let Some(done) = in_flight.join_next().await {
            Self::count(done, &mut summary, &mut busy);
        }
        summary
    }

    fn count(
        done: Result<(String, DeliveryOutcome), tokio::task::JoinError>,
        summary: &mut RelaySummary,
        busy: &mut HashSet<String>,
    ) {
        let Ok((partner, outcome)) = done else {
            return;
        };
        busy.remove(&partner);
        match outcome {
            DeliveryOutcome::Nothing => {}
            DeliveryOutcome::Delivered(n) => {
                summary.deliveries += 1;
                summary.delivered_events += n;
            }
            DeliveryOutcome::Failed => summary.failed_deliveries += 1,
            DeliveryOutcome::Paused => {
                summary.failed_deliveries += 1;
                summary.paused += 1;
            }
        }
    }

    /// One round: sequence, start the due partners' deliveries. Whether it did anything.
    async fn round(
        &self,
        summary: &mut RelaySummary,
        in_flight: &mut JoinSet<(String, DeliveryOutcome)>,
        busy: &mut HashSet<String>,
    ) -> Result<bool, Unavailable> {
        // A burst (a flash sale's chunks) is sequenced in a few transactions of a batch each.
        let mut sequenced = 0;
        for _ in 0..SEQUENCE_BATCHES_PER_ROUND {
            let n = self.log.sequence(SEQUENCE_BATCH).await?;
            sequenced += n;
            if n < SEQUENCE_BATCH {
                break;
            }
        }
        summary.sequenced += u64::from(sequenced);
        let room = self.settings.max_partners_in_flight.saturating_sub(busy.len());
        let mut started = 0;
        if room > 0 {
            let now = self.clock.now();
            let due = self
                .webhooks
                .due(now, u32::try_from(room + busy.len()).unwrap_or(u32::MAX))
                .await?;
            let free: Vec<String> = due.into_iter().filter(|p| !busy.contains(p)).take(room).collect();
            for partner in free {
                busy.insert(partner.clone());
                started += 1;
                let delivery = PartnerDelivery {
                    webhooks: Arc::clone(&self.webhooks),
                    log: Arc::clone(&self.log),
                    secrets: Arc::clone(&self.secrets),
                    transport: Arc::clone(&self.transport),
                    settings: self.settings,
                    clock: Arc::clone(&self.clock),
                };
                in_flight.spawn(async move {
                    let outcome = delivery.deliver(&partner).await;
                    (partner, outcome)
                });
            }
        }
        Ok(sequenced > 0 || started > 0)
    }

    /// Publishes the events after the bus's cursor, then moves it. Nothing without a bus.
    async fn publish(&self) -> Result<u64, Unavailable> {
        let Some(bus) = &self.bus else {
            return Ok(0);
        };
        let after = self.log.cursor(EVENTBRIDGE_CURSOR).await?;
        let events = self.log.all_events(after, PUBLISH_BATCH).await?;
        let Some(last) = events.last().map(|e| e.sequence) else {
            return Ok(0);
        };
        bus.publish(&events).await?;
        self.log.move_cursor(EVENTBRIDGE_CURSOR, last).await?;
        Ok(events.len() as u64)
    }

    async fn prune(&self) -> Result<u64, Unavailable> {
        let before = self.clock.now() - self.settings.retention;
        let mut pruned = 0;
        // Bounded chunks, each its own short statement, so no lock is held for long.
        for _ in 0..10 {
            let n = self.log.prune(before, PRUNE_BATCH).await?;
            pruned += n;
            if n < u64::from(PRUNE_BATCH) {
                break;
            }
        }
        Ok(pruned)
    }
}

enum DeliveryOutcome {
    Nothing,
    Delivered(u64),
    Failed,
    Paused,
}

/// One partner's delivery, run as its own task.
struct PartnerDelivery<W, L> {
    webhooks: Arc<W>,
    log: Arc<L>,
    secrets: Arc<dyn SecretBox>,
    transport: Arc<dyn WebhookTransport>,
    settings: RelaySettings,
    clock: Arc<dyn Clock>,
}

/// Batches one lease may deliver before the partner waits for the next round.
const BATCHES_PER_LEASE: u32 = 20;
/// How long a lease outlasts its POST's deadline.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

impl<W: Webhooks, L: EventLog> PartnerDelivery<W, L> {
    async fn deliver(&self, partner: &str) -> DeliveryOutcome {
        match self.deliver_leased(partner).await {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::warn!(partner, error = %e, "webhook delivery could not run; the lease lapses and it is retried");
                DeliveryOutcome::Nothing
            }
        }
    }

    async fn deliver_leased(&self, partner: &str) -> Result<DeliveryOutcome, Unavailable> {
        let now = self.clock.now();
        let mut held = self.lease_end(now);
        let Some((registration, mut state)) = self.webhooks.lease(partner, now, held).await? else {
            return Ok(DeliveryOutcome::Nothing);
        };
        let mut delivered = 0_u64;
        let mut secret: Option<String> = None;
        for batch in 0..BATCHES_PER_LEASE {
            if batch > 0 {
                let until = self.lease_end(self.clock.now());
                if !self.webhooks.renew(partner, held, until).await? {
                    tracing::info!(partner, "webhook lease ended by a replay or lapsed; stopping here");
                    return Ok(DeliveryOutcome::Nothing);
                }
                held = until;
            }
            let events = self
                .log
                .partner_events(partner, state.delivered_through, MAX_EVENTS_PER_DELIVERY as u32)
                .await?;
            let Some(last) = events.last().map(|e| e.sequence) else {
                break;
            };
            let wanted: Vec<Event> = events
                .into_iter()
                .filter(|e| registration.events.contains(&e.kind))
                .collect();
            let outcome = if wanted.is_empty() {
                Ok(last)
            } else {
                self.post(&registration, &mut secret, &wanted).await?.map(|()| last)
            };
            let now = self.clock.now();
            match after_attempt(
                &state,
                outcome.as_ref().map(|last| *last),
                now,
                self.settings.retry,
                rand_unit(),
            ) {
                AfterAttempt::Delivered(next) => {
                    delivered += wanted.len() as u64;
                    state = next;
                    metrics::counter!("fcfs_webhook_events_delivered_total").increment(wanted.len() as u64);
                }
                AfterAttempt::RetryLater(next) => {
                    metrics::counter!("fcfs_webhook_deliveries_failed_total").increment(1);
                    tracing::warn!(
                        partner,
                        error = next.last_error.as_deref().unwrap_or(""),
                        attempts = next.attempts,
                        "webhook delivery failed; retried later"
                    );
                    self.settle(partner, held, &next).await?;
                    return Ok(DeliveryOutcome::Failed);
                }
                AfterAttempt::Paused(next) => {
                    metrics::counter!("fcfs_webhook_deliveries_failed_total").increment(1);
                    metrics::counter!("fcfs_webhook_partners_paused_total").increment(1);
                    tracing::error!(
                        partner,
                        error = next.last_error.as_deref().unwrap_or(""),
                        "webhook deliveries paused after failing for the whole retry period; `fcfs-admin events replay` resumes them"
                    );
                    self.settle(partner, held, &next).await?;
                    return Ok(DeliveryOutcome::Paused);
                }
            }
        }
        self.settle(partner, held, &state).await?;
        Ok(if delivered > 0 {
            DeliveryOutcome::Delivered(delivered)
        } else {
            DeliveryOutcome::Nothing
        })
    }

    /// Writes the delivery's state under the lease `held`; a replay that ended the lease meanwhile
    /// wins (its position stands, these events go again).
    async fn settle(&self, partner: &str, held: DateTime<Utc>, state: &Delivery) -> Result<(), Unavailable> {
        if !self.webhooks.settle(partner, held, state).await? {
            tracing::info!(
                partner,
                "webhook lease ended by a replay or lapsed; its state was not written"
            );
        }
        Ok(())
    }

    /// A lease covers one batch (its POST's deadline and a margin for the bookkeeping) and is
    /// renewed before the next: a relay that dies holds its partners back only that long.
    fn lease_end(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let lease = self.settings.post_timeout + LEASE_MARGIN;
        // At the database's precision: the end is also the lease's token, compared as stored.
        (now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(60))).trunc_subsecs(3)
    }

    /// Signs and POSTs the events: `Ok(Err)` is the endpoint's failure, `Err` ours.
    /// The secret is read once per lease (`secret` keeps it): a rotation signs from the next.
    async fn post(
        &self,
        registration: &Registration,
        secret: &mut Option<String>,
        events: &[Event],
    ) -> Result<Result<(), super::domain::DeliveryFailure>, Unavailable> {
        let secret = match secret {
            Some(secret) => secret,
            None => {
                let sealed = self
                    .webhooks
                    .sealed_secret(&registration.partner_id)
                    .await?
                    .ok_or_else(|| Unavailable::new("mysql", "the registration went away during its delivery"))?;
                match self.secrets.open(&sealed).await {
                    Ok(opened) => secret.insert(opened),
                    Err(e) => return Ok(Err(super::domain::DeliveryFailure::Unsigned(e.to_string()))),
                }
            }
        };
        let body = delivery_body(events);
        let header = signature::sign(secret, self.clock.now().timestamp(), &body);
        Ok(self.transport.post(&registration.url, &body, &header).await)
    }
}

/// A jitter in [0, 1) from the OS's randomness (no seeded generator to share between tasks).
fn rand_unit() -> f64 {
    let mut bytes = [0_u8; 4];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.5;
    }
    f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0)
}
