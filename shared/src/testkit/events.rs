//! Partner events in memory: the outbox rows, the cursors and the webhook endpoints as the MySQL
//! adapter keeps them (`adapters::mysql::events`), with the same rules — sequences given in id
//! order to the rows that have none, a lease only when free, `delivered_through` never moved back
//! by a settle (only by a rewind), pruning only sequenced rows. Beside them: a webhook transport
//! that records every POST and answers as scripted, a secret box that only tags (not crypto), a
//! URL vetting that allows all but what it is told to refuse, and a bus that records what it
//! publishes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::events::domain::{Delivery, DeliveryFailure, Event, NewEvent, Registration, UrlProblem};
use crate::events::ports::{EventBus, EventLog, SecretBox, UrlVetting, WebhookTransport, Webhooks};
use crate::kernel::Unavailable;

/// One `partner_events` row.
#[derive(Debug, Clone)]
struct Row {
    id: u64,
    event: NewEvent,
    sequence: Option<u64>,
}

/// One `webhook_endpoints` row.
#[derive(Debug, Clone)]
struct Endpoint {
    registration: Registration,
    sealed_secret: Vec<u8>,
    delivery: Delivery,
    leased_until: Option<DateTime<Utc>>,
}

#[derive(Default)]
struct Tables {
    rows: Vec<Row>,
    last_id: u64,
    /// `event_cursors`: `sequence` and `eventbridge` start at 0, as the migration inserts them.
    cursors: HashMap<String, u64>,
    endpoints: BTreeMap<String, Endpoint>,
}

/// The events' tables in memory: `EventLog` and `Webhooks` over one set of rows.
#[derive(Default)]
pub struct MemoryEvents {
    tables: Mutex<Tables>,
    /// Every lease asked for (taken or not), to count the relay's work.
    pub lease_calls: AtomicU64,
}

impl MemoryEvents {
    /// Records events as a committed outbox write does: an event whose `once_key` is already
    /// recorded is skipped (`INSERT IGNORE` on the unique key).
    pub fn append(&self, events: impl IntoIterator<Item = NewEvent>) {
        let mut t = self.tables.lock().unwrap();
        for event in events {
            if event.once_key.is_some() && t.rows.iter().any(|r| r.event.once_key == event.once_key) {
                continue;
            }
            t.last_id += 1;
            let id = t.last_id;
            t.rows.push(Row {
                id,
                event,
                sequence: None,
            });
        }
    }

    /// How many rows the outbox holds (sequenced or not).
    pub fn rows(&self) -> usize {
        self.tables.lock().unwrap().rows.len()
    }

    /// The rows' (id, sequence), in id order.
    pub fn sequences(&self) -> Vec<(u64, Option<u64>)> {
        self.tables
            .lock()
            .unwrap()
            .rows
            .iter()
            .map(|r| (r.id, r.sequence))
            .collect()
    }

    /// Until when the partner's delivery is leased (`None` when free or not registered).
    pub fn leased_until(&self, partner: &str) -> Option<DateTime<Utc>> {
        self.tables
            .lock()
            .unwrap()
            .endpoints
            .get(partner)
            .and_then(|e| e.leased_until)
    }

    fn event_of(row: &Row, sequence: u64) -> Event {
        Event::from_record(
            row.id,
            sequence,
            row.event.kind,
            row.event.partner_id.clone(),
            row.event.occurred_at,
            row.event.data.clone(),
        )
    }

    /// The sequenced rows `keep` selects with a sequence after `after`, in sequence, at most `limit`.
    fn read(&self, after: u64, limit: u32, keep: impl Fn(&Row) -> bool) -> Vec<Event> {
        let t = self.tables.lock().unwrap();
        let mut events: Vec<Event> = t
            .rows
            .iter()
            .filter(|r| keep(r))
            .filter_map(|r| r.sequence.filter(|s| *s > after).map(|s| Self::event_of(r, s)))
            .collect();
        events.sort_by_key(|e| e.sequence);
        events.truncate(limit as usize);
        events
    }

    fn cursor_at(t: &Tables, name: &str) -> u64 {
        t.cursors.get(name).copied().unwrap_or(0)
    }
}

#[async_trait]
impl EventLog for MemoryEvents {
    async fn sequence(&self, max: u32) -> Result<u32, Unavailable> {
        let mut t = self.tables.lock().unwrap();
        let last = Self::cursor_at(&t, "sequence");
        let mut count = 0_u32;
        // Rows are kept in id order, as `ORDER BY id` reads them.
        for row in t.rows.iter_mut().filter(|r| r.sequence.is_none()).take(max as usize) {
            count += 1;
            row.sequence = Some(last + u64::from(count));
        }
        if count > 0 {
            t.cursors.insert("sequence".into(), last + u64::from(count));
        }
        Ok(count)
    }

    async fn partner_events(&self, partner: &str, after: u64, limit: u32) -> Result<Vec<Event>, Unavailable> {
        Ok(self.read(after, limit, |r| r.event.partner_id == partner))
    }

    async fn all_events(&self, after: u64, limit: u32) -> Result<Vec<Event>, Unavailable> {
        Ok(self.read(after, limit, |_| true))
    }

    async fn cursor(&self, name: &str) -> Result<u64, Unavailable> {
        Ok(Self::cursor_at(&self.tables.lock().unwrap(), name))
    }

    async fn move_cursor(&self, name: &str, to: u64) -> Result<(), Unavailable> {
        self.tables.lock().unwrap().cursors.insert(name.to_owned(), to);
        Ok(())
    }

    async fn last_sequence(&self) -> Result<u64, Unavailable> {
        self.cursor("sequence").await
    }

    async fn sequence_before(&self, partner: &str, since: DateTime<Utc>) -> Result<u64, Unavailable> {
        let t = self.tables.lock().unwrap();
        let first = t
            .rows
            .iter()
            .filter(|r| r.event.partner_id == partner && r.event.occurred_at >= since)
            .filter_map(|r| r.sequence)
            .min();
        Ok(match first {
            Some(first) => first.saturating_sub(1),
            None => Self::cursor_at(&t, "sequence"),
        })
    }

    async fn prune(&self, before: DateTime<Utc>, max: u32) -> Result<u64, Unavailable> {
        let mut t = self.tables.lock().unwrap();
        let mut old: Vec<(DateTime<Utc>, u64)> = t
            .rows
            .iter()
            .filter(|r| r.sequence.is_some() && r.event.occurred_at < before)
            .map(|r| (r.event.occurred_at, r.id))
            .collect();
        old.sort();
        old.truncate(max as usize);
        t.rows.retain(|r| !old.iter().any(|(_, id)| *id == r.id));
        Ok(old.len() as u64)
    }
}

#[async_trait]
impl Webhooks for MemoryEvents {
    async fn register(
        &self,
        registration: &Registration,
        sealed_secret: &[u8],
        start_after: u64,
    ) -> Result<bool, Unavailable> {
        let mut t = self.tables.lock().unwrap();
        if let Some(existing) = t.endpoints.get_mut(&registration.partner_id) {
            // Only the URL, the types and `updated_at` change; the secret, position and
            // `created_at` stay.
            existing.registration.url.clone_from(&registration.url);
            existing.registration.events.clone_from(&registration.events);
            existing.registration.updated_at = registration.updated_at;
            return Ok(false);
        }
        t.endpoints.insert(
            registration.partner_id.clone(),
            Endpoint {
                registration: registration.clone(),
                sealed_secret: sealed_secret.to_vec(),
                delivery: Delivery {
                    delivered_through: start_after,
                    failing_since: None,
                    attempts: 0,
                    next_attempt_at: registration.created_at,
                    paused_at: None,
                    last_error: None,
                },
                leased_until: None,
            },
        );
        Ok(true)
    }

    async fn find(&self, partner: &str) -> Result<Option<(Registration, Delivery)>, Unavailable> {
        let t = self.tables.lock().unwrap();
        Ok(t.endpoints
            .get(partner)
            .map(|e| (e.registration.clone(), e.delivery.clone())))
    }

    async fn sealed_secret(&self, partner: &str) -> Result<Option<Vec<u8>>, Unavailable> {
        let t = self.tables.lock().unwrap();
        Ok(t.endpoints.get(partner).map(|e| e.sealed_secret.clone()))
    }

    async fn replace_secret(
        &self,
        partner: &str,
        sealed_secret: &[u8],
        now: DateTime<Utc>,
    ) -> Result<bool, Unavailable> {
        let mut t = self.tables.lock().unwrap();
        let Some(e) = t.endpoints.get_mut(partner) else {
            return Ok(false);
        };
        e.sealed_secret = sealed_secret.to_vec();
        e.registration.updated_at = now;
        Ok(true)
    }

    async fn remove(&self, partner: &str) -> Result<bool, Unavailable> {
        Ok(self.tables.lock().unwrap().endpoints.remove(partner).is_some())
    }

    async fn due(&self, now: DateTime<Utc>, max: u32) -> Result<Vec<String>, Unavailable> {
        let t = self.tables.lock().unwrap();
        // As the SQL: only partners with a sequenced event past their position.
        let pending = |partner: &str, through: u64| {
            t.rows
                .iter()
                .any(|r| r.event.partner_id == partner && r.sequence.is_some_and(|s| s > through))
        };
        let mut due: Vec<(DateTime<Utc>, String)> = t
            .endpoints
            .iter()
            .filter(|(p, e)| {
                e.delivery.paused_at.is_none()
                    && e.delivery.next_attempt_at <= now
                    && e.leased_until.is_none_or(|until| until <= now)
                    && pending(p, e.delivery.delivered_through)
            })
            .map(|(p, e)| (e.delivery.next_attempt_at, p.clone()))
            .collect();
        due.sort();
        Ok(due.into_iter().take(max as usize).map(|(_, p)| p).collect())
    }

    async fn lease(
        &self,
        partner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<(Registration, Delivery)>, Unavailable> {
        self.lease_calls.fetch_add(1, Ordering::SeqCst);
        let mut t = self.tables.lock().unwrap();
        let Some(e) = t.endpoints.get_mut(partner) else {
            return Ok(None);
        };
        if e.leased_until.is_some_and(|held| held > now) {
            return Ok(None);
        }
        e.leased_until = Some(until);
        Ok(Some((e.registration.clone(), e.delivery.clone())))
    }

    async fn renew(&self, partner: &str, held: DateTime<Utc>, until: DateTime<Utc>) -> Result<bool, Unavailable> {
        match self.tables.lock().unwrap().endpoints.get_mut(partner) {
            Some(e) if e.leased_until == Some(held) => {
                e.leased_until = Some(until);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn settle(&self, partner: &str, held: DateTime<Utc>, state: &Delivery) -> Result<bool, Unavailable> {
        let mut t = self.tables.lock().unwrap();
        match t.endpoints.get_mut(partner) {
            Some(e) if e.leased_until == Some(held) => {
                e.delivery = Delivery {
                    last_error: state.last_error.as_ref().map(|m| m.chars().take(500).collect()),
                    ..state.clone()
                };
                e.leased_until = None;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn rewind(&self, partner: &str, to: u64, now: DateTime<Utc>) -> Result<bool, Unavailable> {
        let mut t = self.tables.lock().unwrap();
        let Some(e) = t.endpoints.get_mut(partner) else {
            return Ok(false);
        };
        e.delivery = Delivery {
            delivered_through: to,
            failing_since: None,
            attempts: 0,
            next_attempt_at: now,
            paused_at: None,
            last_error: None,
        };
        e.leased_until = None;
        Ok(true)
    }
}

/// The tables shared with the test that inspects them (`Arc<MemoryEvents>`) answer as themselves.
#[async_trait]
impl EventLog for Arc<MemoryEvents> {
    async fn sequence(&self, max: u32) -> Result<u32, Unavailable> {
        self.as_ref().sequence(max).await
    }

    async fn partner_events(&self, partner: &str, after: u64, limit: u32) -> Result<Vec<Event>, Unavailable> {
        self.as_ref().partner_events(partner, after, limit).await
    }

    async fn all_events(&self, after: u64, limit: u32) -> Result<Vec<Event>, Unavailable> {
        self.as_ref().all_events(after, limit).await
    }

    async fn cursor(&self, name: &str) -> Result<u64, Unavailable> {
        self.as_ref().cursor(name).await
    }

    async fn move_cursor(&self, name: &str, to: u64) -> Result<(), Unavailable> {
        self.as_ref().move_cursor(name, to).await
    }

    async fn last_sequence(&self) -> Result<u64, Unavailable> {
        self.as_ref().last_sequence().await
    }

    async fn sequence_before(&self, partner: &str, since: DateTime<Utc>) -> Result<u64, Unavailable> {
        self.as_ref().sequence_before(partner, since).await
    }

    async fn prune(&self, before: DateTime<Utc>, max: u32) -> Result<u64, Unavailable> {
        self.as_ref().prune(before, max).await
    }
}

#[async_trait]
impl Webhooks for Arc<MemoryEvents> {
    async fn register(
        &self,
        registration: &Registration,
        sealed_secret: &[u8],
        start_after: u64,
    ) -> Result<bool, Unavailable> {
        self.as_ref().register(registration, sealed_secret, start_after).await
    }

    async fn find(&self, partner: &str) -> Result<Option<(Registration, Delivery)>, Unavailable> {
        self.as_ref().find(partner).await
    }

    async fn sealed_secret(&self, partner: &str) -> Result<Option<Vec<u8>>, Unavailable> {
        self.as_ref().sealed_secret(partner).await
    }

    async fn replace_secret(
        &self,
        partner: &str,
        sealed_secret: &[u8],
        now: DateTime<Utc>,
    ) -> Result<bool, Unavailable> {
        self.as_ref().replace_secret(partner, sealed_secret, now).await
    }

    async fn remove(&self, partner: &str) -> Result<bool, Unavailable> {
        self.as_ref().remove(partner).await
    }

    async fn due(&self, now: DateTime<Utc>, max: u32) -> Result<Vec<String>, Unavailable> {
        self.as_ref().due(now, max).await
    }

    async fn lease(
        &self,
        partner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<(Registration, Delivery)>, Unavailable> {
        self.as_ref().lease(partner, now, until).await
    }

    async fn renew(&self, partner: &str, held: DateTime<Utc>, until: DateTime<Utc>) -> Result<bool, Unavailable> {
        self.as_ref().renew(partner, held, until).await
    }

    async fn settle(&self, partner: &str, held: DateTime<Utc>, state: &Delivery) -> Result<bool, Unavailable> {
        self.as_ref().settle(partner, held, state).await
    }

    async fn rewind(&self, partner: &str, to: u64, now: DateTime<Utc>) -> Result<bool, Unavailable> {
        self.as_ref().rewind(partner, to, now).await
    }
}

/// How the recording transport answers a POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A 2xx.
    Ok,
    /// A non-2xx answer.
    Status(u16),
    /// No answer: the POST waits out the transport's deadline (tokio time, so a paused-time test
    /// moves past it at once) and fails with `Timeout`.
    Hang,
}

/// One POST as the transport received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Post {
    pub url: String,
    pub body: String,
    pub signature: String,
}

/// A webhook transport that records every POST (when it starts) and answers from a script (first),
/// else the URL's answer, else the default (`Ok` unless set).
pub struct RecordingTransport {
    posts: Mutex<Vec<Post>>,
    script: Mutex<VecDeque<Answer>>,
    by_url: Mutex<HashMap<String, Answer>>,
    default: Mutex<Answer>,
    /// The deadline a hanging POST waits out.
    pub timeout: Duration,
    in_flight: AtomicUsize,
}

impl RecordingTransport {
    pub fn new(timeout: Duration) -> Self {
        Self {
            posts: Mutex::default(),
            script: Mutex::default(),
            by_url: Mutex::default(),
            default: Mutex::new(Answer::Ok),
            timeout,
            in_flight: AtomicUsize::new(0),
        }
    }

    /// The answer to every POST the script and the URL answers do not cover.
    pub fn answer(&self, answer: Answer) {
        *self.default.lock().unwrap() = answer;
    }

    /// The answer to every POST to `url` the script does not cover.
    pub fn answer_url(&self, url: &str, answer: Answer) {
        self.by_url.lock().unwrap().insert(url.to_owned(), answer);
    }

    /// Answers to the next POSTs, in order, whatever their URL.
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.script.lock().unwrap().extend(answers);
    }

    pub fn posts(&self) -> Vec<Post> {
        self.posts.lock().unwrap().clone()
    }

    pub fn posts_to(&self, url: &str) -> Vec<Post> {
        self.posts
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.url == url)
            .cloned()
            .collect()
    }

    /// POSTs started and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl WebhookTransport for RecordingTransport {
    async fn post(&self, url: &str, body: &str, signature: &str) -> Result<(), DeliveryFailure> {
        self.posts.lock().unwrap().push(Post {
            url: url.to_owned(),
            body: body.to_owned(),
            signature: signature.to_owned(),
        });
        let scripted = self.script.lock().unwrap().pop_front();
        let answer = scripted
            .or_else(|| self.by_url.lock().unwrap().get(url).cloned())
            .unwrap_or_else(|| self.default.lock().unwrap().clone());
        match answer {
            Answer::Ok => Ok(()),
            Answer::Status(code) => Err(DeliveryFailure::Status(code)),
            Answer::Hang => {
                self.in_flight.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(self.timeout).await;
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                Err(DeliveryFailure::Timeout)
            }
        }
    }
}

/// A secret box that only tags the secret, reversibly. NOT encryption: it stands for the sealing
/// box in tests, where what matters is that the service seals and opens, not how.
#[derive(Debug, Default, Clone, Copy)]
pub struct PlainSecrets;

const PLAIN_TAG: &[u8] = b"plain:";

#[async_trait]
impl SecretBox for PlainSecrets {
    async fn seal(&self, secret: &str) -> Result<Vec<u8>, Unavailable> {
        Ok([PLAIN_TAG, secret.as_bytes()].concat())
    }

    async fn open(&self, sealed: &[u8]) -> Result<String, Unavailable> {
        sealed
            .strip_prefix(PLAIN_TAG)
            .and_then(|s| String::from_utf8(s.to_vec()).ok())
            .ok_or_else(|| Unavailable::new("secrets", "not sealed by PlainSecrets (test)"))
    }
}

/// URL vetting that allows every URL but those it was told to refuse.
#[derive(Default)]
pub struct ScriptedVetting(Mutex<HashMap<String, UrlProblem>>);

impl ScriptedVetting {
    pub fn refuse(&self, url: &str, problem: UrlProblem) {
        self.0.lock().unwrap().insert(url.to_owned(), problem);
    }
}

#[async_trait]
impl UrlVetting for ScriptedVetting {
    async fn vet(&self, url: &str) -> Result<(), UrlProblem> {
        self.0.lock().unwrap().get(url).cloned().map_or(Ok(()), Err)
    }
}

#[async_trait]
impl UrlVetting for Arc<ScriptedVetting> {
    async fn vet(&self, url: &str) -> Result<(), UrlProblem> {
        self.as_ref().vet(url).await
    }
}

/// A bus that records each publish's events; `failing` makes every publish fail.
#[derive(Default)]
pub struct RecordingBus {
    published: Mutex<Vec<Vec<Event>>>,
    pub failing: AtomicBool,
}

impl RecordingBus {
    /// Each successful publish's events.
    pub fn published(&self) -> Vec<Vec<Event>> {
        self.published.lock().unwrap().clone()
    }
}

#[async_trait]
impl EventBus for RecordingBus {
    async fn publish(&self, events: &[Event]) -> Result<(), Unavailable> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(Unavailable::new("eventbridge", "bus is unreachable (test)"));
        }
        self.published.lock().unwrap().push(events.to_vec());
        Ok(())
    }
}
