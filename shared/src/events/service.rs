//! The events context's use cases for partners and operators, over its ports: the webhook
//! registration, the pull API and the replay (`WebhookService`). The relay that sequences,
//! publishes and delivers is `relay::EventRelay`. Any trigger (HTTP, the admin CLI) calls these.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use serde::Serialize;

use super::domain::{Delivery, Event, EventType, Registration, UrlProblem};
use super::error::EventsError;
use super::ports::{EventLog, SecretBox, UrlVetting, Webhooks};
use super::signature;
use crate::kernel::{Clock, InvalidField, SystemClock};

/// The most events one pull returns.
pub const MAX_PULL_LIMIT: u32 = 1000;
pub const DEFAULT_PULL_LIMIT: u32 = 100;
/// The longest URL a registration may name.
pub const MAX_URL_CHARS: usize = 2048;

/// A registration as asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterWebhook {
    pub url: String,
    pub events: Vec<EventType>,
}

impl RegisterWebhook {
    /// One to all eleven types, each once.
    pub fn validate(self) -> Result<Self, InvalidField> {
        if self.events.is_empty() {
            return Err(InvalidField::new("events", "must name at least one event type"));
        }
        let distinct: HashSet<_> = self.events.iter().collect();
        if distinct.len() != self.events.len() {
            return Err(InvalidField::new("events", "must not repeat a type"));
        }
        if self.url.chars().count() > MAX_URL_CHARS {
            return Err(InvalidField::new("url", "must be at most 2048 characters"));
        }
        Ok(self)
    }
}

/// The registration as `GET /v1/webhooks` shows it (never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookView {
    pub registration: Registration,
    pub delivery: Delivery,
}

/// The pull API's query: `after` (a sequence, default 0) and `limit` (1–1000, default 100).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullQuery {
    pub after: u64,
    pub limit: u32,
}

impl PullQuery {
    pub fn parse<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, InvalidField> {
        let mut query = Self {
            after: 0,
            limit: DEFAULT_PULL_LIMIT,
        };
        for (name, value) in pairs {
            match name {
                "after" => {
                    query.after = crate::kernel::digits(value)
                        .ok_or_else(|| InvalidField::new("after", "must be a sequence number (0 or more)"))?;
                }
                "limit" => {
                    query.limit = crate::kernel::digits(value)
                        .filter(|n| (1..=MAX_PULL_LIMIT).contains(n))
                        .ok_or_else(|| InvalidField::new("limit", "must be 1-1000"))?;
                }
                _ => return Err(InvalidField::new("query", "only after and limit are accepted")),
            }
        }
        Ok(query)
    }
}

/// A page of the pull API: the events, and where the next page starts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventPage {
    pub events: Vec<Event>,
    pub next: u64,
}

pub struct WebhookService<W, L, S, V> {
    webhooks: W,
    log: L,
    secrets: S,
    vetting: V,
    clock: Arc<dyn Clock>,
}

impl<W: Webhooks, L: EventLog, S: SecretBox, V: UrlVetting> WebhookService<W, L, S, V> {
    pub fn new(webhooks: W, log: L, secrets: S, vetting: V) -> Self {
        Self {
            webhooks,
            log,
            secrets,
            vetting,
            clock: Arc::new(SystemClock),
        }
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now().trunc_subsecs(3)
    }

    /// Creates or replaces the partner's registration after vetting its URL. A new one gets a
    /// secret (answered this once) and starts with the events sequenced after now; a replaced one
    /// keeps its secret and position.
    pub async fn register(
        &self,
        partner: &str,
        request: RegisterWebhook,
    ) -> Result<(WebhookView, Option<String>), EventsError> {
        let request = request.validate()?;
        match self.vetting.vet(&request.url).await {
            Ok(()) => {}
            Err(UrlProblem::Malformed(why)) => return Err(InvalidField::new("url", why).into()),
            Err(UrlProblem::Refused(why)) => return Err(EventsError::UrlRefused(why)),
        }
        let now = self.now();
        let secret = signature::new_secret()?;
        let sealed = self.secrets.seal(&secret).await?;
        let start_after = self.log.last_sequence().await?;
        let registration = Registration {
            partner_id: partner.to_owned(),
            url: request.url,
            events: request.events,
            created_at: now,
            updated_at: now,
        };
        let created = self.webhooks.register(&registration, &sealed, start_after).await?;
        let view = self.view(partner).await?;
        Ok((view, created.then_some(secret)))
    }

    pub async fn view(&self, partner: &str) -> Result<WebhookView, EventsError> {
        let (registration, delivery) = self.webhooks.find(partner).await?.ok_or(EventsError::NotRegistered)?;
        Ok(WebhookView { registration, delivery })
    }

    pub async fn remove(&self, partner: &str) -> Result<(), EventsError> {
        if self.webhooks.remove(partner).await? {
            Ok(())
        } else {
            Err(EventsError::NotRegistered)
        }
    }

    /// A new secret, which signs every delivery from now on; the old one no longer does.
    pub async fn rotate_secret(&self, partner: &str) -> Result<String, EventsError> {
        let secret = signature::new_secret()?;
        let sealed = self.secrets.seal(&secret).await?;
        if self.webhooks.replace_secret(partner, &sealed, self.now()).await? {
            Ok(secret)
        } else {
            Err(EventsError::NotRegistered)
        }
    }

    /// The partner's events after `after`, in sequence.
    pub async fn pull(&self, partner: &str, query: PullQuery) -> Result<EventPage, EventsError> {
        let events = self.log.partner_events(partner, query.after, query.limit).await?;
        let next = events.last().map_or(query.after, |e| e.sequence);
        Ok(EventPage { events, next })
    }

    /// Re-sends the partner's events from the first at or after `since`, resuming paused
    /// deliveries (`fcfs-admin events replay`). The sequence it resumes after.
    pub async fn replay(&self, partner: &str, since: DateTime<Utc>) -> Result<u64, EventsError> {
        replay(&self.webhooks, &self.log, partner, since, self.now()).await
    }
}

/// Rewinds the partner's deliveries to the first event at or after `since` and resumes them (an
/// operator's replay after an endpoint came back). The sequence delivery resumes after.
pub async fn replay(
    webhooks: &impl Webhooks,
    log: &impl EventLog,
    partner: &str,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<u64, EventsError> {
    let from = log.sequence_before(partner, since).await?;
    if webhooks.rewind(partner, from, now).await? {
        Ok(from)
    } else {
        Err(EventsError::NotRegistered)
    }
}
