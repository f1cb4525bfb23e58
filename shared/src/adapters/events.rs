//! The events context's ports that are not MySQL's: the secret box keyed from Secrets Manager
//! (read on first use), URL vetting by the address policy and DNS, the EventBridge bus, and the
//! services as the events functions run them.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_eventbridge::error::DisplayErrorContext;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use futures_util::TryStreamExt;
use tokio::sync::OnceCell;

use super::mysql::{self, MySqlStore};
use super::secret_box::SealedSecrets;
use super::webhook_http::{HttpWebhookTransport, check_resolves};
use crate::config::{Settings, StartupError};
use crate::events::address::{UrlPolicy, UrlRefusal};
use crate::events::domain::{Event, RetryPolicy, UrlProblem};
use crate::events::ports::{EventBus, SecretBox, UrlVetting};
use crate::events::relay::{EventRelay, RelaySettings};
use crate::events::service::WebhookService;
use crate::kernel::Unavailable;

/// How long reading the sealing key may take.
const KEY_DEADLINE: Duration = Duration::from_secs(3);
/// How long one PutEvents call may take.
const PUT_EVENTS_DEADLINE: Duration = Duration::from_secs(5);
/// PutEvents takes at most 10 entries per call.
const PUT_EVENTS_MAX: usize = 10;
/// PutEvents calls one relay has in flight (EventBridge's quota is thousands a second).
const PUT_EVENTS_IN_FLIGHT: usize = 8;
/// Attempts of the entries a PutEvents call failed.
const PUT_EVENTS_ATTEMPTS: u32 = 3;
/// The `Source` of every event on the bus, for rules to match on.
pub const EVENT_SOURCE: &str = "fcfs-coupons";

/// `SealedSecrets` keyed by the Secrets Manager secret `EVENTS_KEY_SECRET`, read on first use
/// (a function starts without a network call) and kept; a failed read is retried by the next use.
pub struct KeyedSecrets {
    client: aws_sdk_secretsmanager::Client,
    secret_id: String,
    sealed: OnceCell<SealedSecrets>,
}

impl KeyedSecrets {
    pub fn new(client: aws_sdk_secretsmanager::Client, secret_id: String) -> Self {
        Self {
            client,
            secret_id,
            sealed: OnceCell::new(),
        }
    }

    async fn key(&self) -> Result<&SealedSecrets, Unavailable> {
        self.sealed
            .get_or_try_init(|| SealedSecrets::from_secrets_manager(&self.client, &self.secret_id, KEY_DEADLINE))
            .await
    }
}

#[async_trait]
impl SecretBox for KeyedSecrets {
    async fn seal(&self, secret: &str) -> Result<Vec<u8>, Unavailable> {
        self.key().await?.seal(secret).await
    }

    async fn open(&self, sealed: &[u8]) -> Result<String, Unavailable> {
        self.key().await?.open(sealed).await
    }
}

/// A URL passes when the address policy allows its form and every address its host resolves to.
#[derive(Debug, Clone, Copy)]
pub struct PolicyVetting(pub UrlPolicy);

#[async_trait]
impl UrlVetting for PolicyVetting {
    async fn vet(&self, url: &str) -> Result<(), UrlProblem> {
        // Its form first, as the most permissive policy judges it: what fails there is no URL
        // for deliveries anywhere (400); what only this deployment's policy refuses is a 422.
        let lenient = UrlPolicy { allow_loopback: true };
        match lenient.check_url(url) {
            Ok(_) | Err(UrlRefusal::NotPublic(_)) => {}
            Err(malformed) => return Err(UrlProblem::Malformed(malformed.to_string())),
        }
        let checked = self.0.check_url(url).map_err(|e| UrlProblem::Refused(e.to_string()))?;
        check_resolves(&self.0, &checked)
            .await
            .map_err(|e| UrlProblem::Refused(e.to_string()))
    }
}

/// The stack's EventBridge bus: each event an entry (`Source` fcfs-coupons, `DetailType` its
/// type, `Detail` its envelope), ten per call, the entries a call failed sent again.
pub struct EventBridgeBus {
    client: aws_sdk_eventbridge::Client,
    bus_name: String,
}

impl EventBridgeBus {
    pub fn new(client: aws_sdk_eventbridge::Client, bus_name: String) -> Self {
        Self { client, bus_name }
    }

    fn entry(&self, event: &Event) -> Result<PutEventsRequestEntry, Unavailable> {
        let detail = serde_json::to_string(event).map_err(|e| Unavailable::new("eventbridge", e))?;
        Ok(PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus_name)
            .source(EVENT_SOURCE)
            .detail_type(event.kind.as_str())
            .detail(detail)
            .build())
    }

    /// One PutEvents call of at most ten events, the entries it failed sent again.
    async fn put(&self, batch: &[Event]) -> Result<(), Unavailable> {
        let mut pending: Vec<PutEventsRequestEntry> = batch.iter().map(|e| self.entry(e)).collect::<Result<_, _>>()?;
        let mut attempt = 0;
        while !pending.is_empty() {
            attempt += 1;
            let call = self.client.put_events().set_entries(Some(pending.clone())).send();
            let output = tokio::time::timeout(PUT_EVENTS_DEADLINE, call)
                .await
                .map_err(|_| Unavailable::new("eventbridge", "PutEvents: no answer within 5 s"))?
                .map_err(|e| Unavailable::new("eventbridge", DisplayErrorContext(e)))?;
            // Results come in the entries' order; an entry with an error code was not put.
            let failed: Vec<PutEventsRequestEntry> = pending
                .iter()
                .zip(output.entries())
                .filter(|(_, result)| result.error_code().is_some())
                .map(|(entry, _)| entry.clone())
                .collect();
            if !failed.is_empty() && attempt >= PUT_EVENTS_ATTEMPTS {
                return Err(Unavailable::new(
                    "eventbridge",
                    format!("{} entries still failed after {attempt} attempts", failed.len()),
                ));
            }
            if !failed.is_empty() {
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
            pending = failed;
        }
        Ok(())
    }
}

#[async_trait]
impl EventBus for EventBridgeBus {
    /// The calls overlap, up to `PUT_EVENTS_IN_FLIGHT`: one after another, a relay's round of 500
    /// waited for 50 answers in a row and the bus fell behind the sales. The bus keeps no order
    /// anyway, and the cursor moves only once every call of the round succeeded, so a failed
    /// call puts its round again (consumers drop repeats by id, as for overlapping runs).
    async fn publish(&self, events: &[Event]) -> Result<(), Unavailable> {
        futures_util::stream::iter(events.chunks(PUT_EVENTS_MAX).map(Ok))
            .try_for_each_concurrent(PUT_EVENTS_IN_FLIGHT, |batch| self.put(batch))
            .await
    }
}

/// `WEBHOOK_ALLOW_LOOPBACK=true` (local stacks only) lets loopback URLs and plain http through.
fn url_policy(settings: &Settings) -> Result<UrlPolicy, StartupError> {
    Ok(UrlPolicy {
        allow_loopback: settings.or("WEBHOOK_ALLOW_LOOPBACK", false)?,
    })
}

fn keyed_secrets(settings: &Settings, sdk: &aws_config::SdkConfig) -> Result<KeyedSecrets, StartupError> {
    Ok(KeyedSecrets::new(
        aws_sdk_secretsmanager::Client::new(sdk),
        settings.required("EVENTS_KEY_SECRET")?,
    ))
}

pub type WebhookApi = WebhookService<MySqlStore, MySqlStore, KeyedSecrets, PolicyVetting>;

/// The events API as its function runs it: MySQL, the sealing key from Secrets Manager.
pub fn webhook_service_from(settings: &Settings, sdk: &aws_config::SdkConfig) -> Result<WebhookApi, StartupError> {
    let store = mysql::store_from(settings, sdk)?;
    Ok(WebhookService::new(
        store.clone(),
        store,
        keyed_secrets(settings, sdk)?,
        PolicyVetting(url_policy(settings)?),
    ))
}

/// The relay as its function runs it. `EVENT_BUS_NAME` (optional): the bus to publish to;
/// `WEBHOOK_TIMEOUT_MS` (5000), `WEBHOOK_MAX_BACKOFF_SECONDS` (600), `WEBHOOK_GIVE_UP_SECONDS`
/// (86400), `EVENTS_RETENTION_DAYS` (7).
pub fn relay_from(
    settings: &Settings,
    sdk: &aws_config::SdkConfig,
) -> Result<EventRelay<MySqlStore, MySqlStore>, StartupError> {
    let store = Arc::new(mysql::store_from(settings, sdk)?);
    let post_timeout = Duration::from_millis(settings.or("WEBHOOK_TIMEOUT_MS", 5000_u64)?);
    let transport = HttpWebhookTransport::new(url_policy(settings)?, post_timeout)?;
    let bus: Option<Arc<dyn EventBus>> = settings
        .optional("EVENT_BUS_NAME")
        .map(|name| Arc::new(EventBridgeBus::new(aws_sdk_eventbridge::Client::new(sdk), name)) as Arc<dyn EventBus>);
    let relay_settings = RelaySettings {
        retry: RetryPolicy {
            max: chrono::Duration::seconds(settings.or("WEBHOOK_MAX_BACKOFF_SECONDS", 600_i64)?),
            give_up: chrono::Duration::seconds(settings.or("WEBHOOK_GIVE_UP_SECONDS", 86_400_i64)?),
            ..RetryPolicy::default()
        },
        post_timeout,
        retention: chrono::Duration::days(settings.or("EVENTS_RETENTION_DAYS", 7_i64)?),
        ..RelaySettings::default()
    };
    Ok(EventRelay::new(
        Arc::clone(&store),
        store,
        Arc::new(keyed_secrets(settings, sdk)?),
        Arc::new(transport),
        bus,
        relay_settings,
    ))
}
