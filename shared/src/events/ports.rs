//! What the events context needs from the outside: the outbox (written by every context's storage
//! inside its own transaction), the log read in sequence, the partners' webhook registrations and
//! their delivery state, the webhook transport, the secret box, and the EventBridge bus.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::domain::{Delivery, DeliveryFailure, Event, NewEvent, Registration, UrlProblem};
use crate::kernel::Unavailable;

/// The outbox, inside the caller's transaction `Tx`: the events commit with the effect or not at
/// all. An event with a `once_key` already recorded is skipped (a redelivered message's repeat).
#[async_trait]
pub trait Outbox<Tx: Send>: Send + Sync {
    async fn append(&self, tx: &mut Tx, events: &[NewEvent]) -> Result<(), Unavailable>;
}

/// The recorded events, read in sequence, and the relay's bookkeeping.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// Gives the next sequence numbers to about `max` committed events that have none, in the
    /// order of their outbox ids (one short transaction; one relay at a time holds the counter):
    /// fewer only when no more are waiting, and more by at most one outbox row's packed events.
    /// How many sequences were given.
    async fn sequence(&self, max: u32) -> Result<u32, Unavailable>;

    /// The partner's events after `after`, in sequence, at most `limit`.
    async fn partner_events(&self, partner: &str, after: u64, limit: u32) -> Result<Vec<Event>, Unavailable>;

    /// All partners' events after `after`, in sequence, at most `limit` (EventBridge's feed).
    async fn all_events(&self, after: u64, limit: u32) -> Result<Vec<Event>, Unavailable>;

    /// The position of a named cursor (0 before its first move).
    async fn cursor(&self, name: &str) -> Result<u64, Unavailable>;

    async fn move_cursor(&self, name: &str, to: u64) -> Result<(), Unavailable>;

    /// The highest sequence given so far (0 for none).
    async fn last_sequence(&self) -> Result<u64, Unavailable>;

    /// The last sequence before the partner's first event at or after `since` (for a replay).
    async fn sequence_before(&self, partner: &str, since: DateTime<Utc>) -> Result<u64, Unavailable>;

    /// Deletes up to `max` sequenced events that occurred before `before`; how many.
    async fn prune(&self, before: DateTime<Utc>, max: u32) -> Result<u64, Unavailable>;
}

/// The partners' webhook registrations and their delivery state (one row per partner).
#[async_trait]
pub trait Webhooks: Send + Sync {
    /// Creates or replaces the partner's registration. A new one starts after the last sequence
    /// given (`start_after`); a replaced one keeps its secret (`sealed_secret` is used only when
    /// new) and position, and its deliveries start over from there at once (a partner who fixed
    /// its endpoint resumes paused deliveries by registering it again). Whether it was new.
    async fn register(
        &self,
        registration: &Registration,
        sealed_secret: &[u8],
        start_after: u64,
    ) -> Result<bool, Unavailable>;
    async fn find(&self, partner: &str) -> Result<Option<(Registration, Delivery)>, Unavailable>;
    async fn sealed_secret(&self, partner: &str) -> Result<Option<Vec<u8>>, Unavailable>;
    async fn replace_secret(
        &self,
        partner: &str,
        sealed_secret: &[u8],
        now: DateTime<Utc>,
    ) -> Result<bool, Unavailable>;
    async fn remove(&self, partner: &str) -> Result<bool, Unavailable>;

    /// Partners whose deliveries are due at `now` (not paused, next attempt reached, not leased),
    /// at most `max`.
    async fn due(&self, now: DateTime<Utc>, max: u32) -> Result<Vec<String>, Unavailable>;
    /// Takes the partner's delivery lease until `until` if no one holds it: the registration and
    /// state, or `None` if another relay holds it (or the registration is gone).
    async fn lease(
        &self,
        partner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<(Registration, Delivery)>, Unavailable>;
    /// Extends the lease this relay holds (`held`: the end it was given, its token) to `until`;
    /// false if the lease is no longer that one (it lapsed and another relay took it, or a
    /// replay ended it): the relay stops delivering to the partner.
    async fn renew(&self, partner: &str, held: DateTime<Utc>, until: DateTime<Utc>) -> Result<bool, Unavailable>;
    /// Ends the lease `held` with the delivery's new state; false (nothing written) if the lease
    /// is no longer that one.
    async fn settle(&self, partner: &str, held: DateTime<Utc>, state: &Delivery) -> Result<bool, Unavailable>;
    /// Moves the partner's position back to `to`, resumes paused deliveries and ends any lease
    /// (a relay delivering meanwhile writes nothing over it): a replay.
    async fn rewind(&self, partner: &str, to: u64, now: DateTime<Utc>) -> Result<bool, Unavailable>;
}

/// Whether a webhook URL may be registered: its form, and every address its host resolves to
/// (checked again at each connect by the transport). `Err` names why not.
#[async_trait]
pub trait UrlVetting: Send + Sync {
    async fn vet(&self, url: &str) -> Result<(), UrlProblem>;
}

/// One POST of a delivery.
#[async_trait]
pub trait WebhookTransport: Send + Sync {
    /// POSTs `body` (JSON) to `url` with the `X-FCFS-Signature` header `signature`, within the
    /// transport's deadline. `Ok` for a 2xx answer.
    async fn post(&self, url: &str, body: &str, signature: &str) -> Result<(), DeliveryFailure>;
}

/// Signing secrets at rest: sealed (encrypted and authenticated) under a key from Secrets Manager,
/// so a database dump alone does not reveal them.
#[async_trait]
pub trait SecretBox: Send + Sync {
    async fn seal(&self, secret: &str) -> Result<Vec<u8>, Unavailable>;
    async fn open(&self, sealed: &[u8]) -> Result<String, Unavailable>;
}

/// An EventBridge bus (or nothing, where none is configured).
#[async_trait]
pub trait EventBus: Send + Sync {
    /// Publishes the events (at most 10 per call, failed entries retried); `Err` leaves the
    /// caller's cursor before them.
    async fn publish(&self, events: &[Event]) -> Result<(), Unavailable>;
}
