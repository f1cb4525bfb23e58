//! Partner events over HTTP, mapped to the events context's `WebhookService`:
//! `PUT|GET|DELETE /v1/webhooks`, `POST /v1/webhooks/rotate-secret` and `GET /v1/events`.

use fcfs_shared::adapters::events::{PolicyVetting, webhook_service_from};
use fcfs_shared::adapters::mysql::MySqlStore;
use fcfs_shared::config::{Settings, StartupError};
use fcfs_shared::events::domain::{EventType, instant};
use fcfs_shared::events::ports::{EventLog, SecretBox, UrlVetting, Webhooks};
use fcfs_shared::events::service::{PullQuery, RegisterWebhook, WebhookService, WebhookView};
use fcfs_shared::http::{self as api, ApiError};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::{Deserialize, Serialize};

pub const MAX_BODY_BYTES: usize = 16 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    url: String,
    events: Vec<EventType>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RegistrationView {
    url: String,
    events: Vec<EventType>,
    status: &'static str,
    created_at: String,
    updated_at: String,
    delivered_through: u64,
    failing_since: Option<String>,
    next_attempt_at: String,
    last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

impl RegistrationView {
    fn new(view: WebhookView, secret: Option<String>) -> Self {
        let WebhookView { registration, delivery } = view;
        Self {
            url: registration.url,
            events: registration.events,
            status: if delivery.paused_at.is_some() {
                "PAUSED"
            } else {
                "ACTIVE"
            },
            created_at: instant(registration.created_at),
            updated_at: instant(registration.updated_at),
            delivered_through: delivery.delivered_through,
            failing_since: delivery.failing_since.map(instant),
            next_attempt_at: instant(delivery.next_attempt_at),
            last_error: delivery.last_error,
            secret,
        }
    }
}

#[derive(Serialize)]
struct SecretView {
    secret: String,
}

#[derive(Clone, Copy)]
enum Route {
    Register,
    Show,
    Remove,
    Rotate,
    Pull,
}

/// This function's routes as `template.yaml` declares them.
const ROUTES: &[(&str, &str, Route)] = &[
    ("PUT", "/v1/webhooks", Route::Register),
    ("GET", "/v1/webhooks", Route::Show),
    ("DELETE", "/v1/webhooks", Route::Remove),
    ("POST", "/v1/webhooks/rotate-secret", Route::Rotate),
    ("GET", "/v1/events", Route::Pull),
];

pub struct EventsApi<W, L, S, V> {
    events: WebhookService<W, L, S, V>,
}

impl EventsApi<MySqlStore, MySqlStore, fcfs_shared::adapters::events::KeyedSecrets, PolicyVetting> {
    /// MySQL (credentials from Secrets Manager, opened on first use), the sealing key at
    /// `EVENTS_KEY_SECRET`, `WEBHOOK_ALLOW_LOOPBACK` (local stacks only).
    pub fn from_settings(settings: &Settings, sdk: &aws_config::SdkConfig) -> Result<Self, StartupError> {
        Ok(Self::new(webhook_service_from(settings, sdk)?))
    }
}

impl<W: Webhooks, L: EventLog, S: SecretBox, V: UrlVetting> EventsApi<W, L, S, V> {
    pub fn new(events: WebhookService<W, L, S, V>) -> Self {
        Self { events }
    }

    pub async fn handle(&self, req: Request) -> Response<Body> {
        let started = std::time::Instant::now();
        let result = match api::route(&req, ROUTES) {
            Some(Route::Register) => self.register(&req).await,
            Some(Route::Show) => self.show(&req).await,
            Some(Route::Remove) => self.remove(&req).await,
            Some(Route::Rotate) => self.rotate(&req).await,
            Some(Route::Pull) => self.pull(&req).await,
            None => Err(ApiError::NotFound("route")),
        };
        let response = result.unwrap_or_else(ApiError::into_response);
        api::observe(&req, &response, started);
        response
    }

    async fn register(&self, req: &Request) -> Result<Response<Body>, ApiError> {
        let partner = api::partner_id(req)?;
        let body = api::json_body::<RegisterBody>(req, MAX_BODY_BYTES)?;
        let request = RegisterWebhook {
            url: body.url,
            events: body.events,
        };
        let (view, secret) = self.events.register(&partner, request).await?;
        let status = if secret.is_some() {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok(api::json(status, &RegistrationView::new(view, secret)))
    }

    async fn show(&self, req: &Request) -> Result<Response<Body>, ApiError> {
        let partner = api::partner_id(req)?;
        let view = self.events.view(&partner).await?;
        Ok(api::json(StatusCode::OK, &RegistrationView::new(view, None)))
    }

    async fn remove(&self, req: &Request) -> Result<Response<Body>, ApiError> {
        let partner = api::partner_id(req)?;
        self.events.remove(&partner).await?;
        let mut response = Response::new(Body::Empty);
        *response.status_mut() = StatusCode::NO_CONTENT;
        Ok(response)
    }

    async fn rotate(&self, req: &Request) -> Result<Response<Body>, ApiError> {
        let partner = api::partner_id(req)?;
        let secret = self.events.rotate_secret(&partner).await?;
        Ok(api::json(StatusCode::OK, &SecretView { secret }))
    }

    async fn pull(&self, req: &Request) -> Result<Response<Body>, ApiError> {
        let partner = api::partner_id(req)?;
        let params = req.query_string_parameters_ref();
        let query = PullQuery::parse(params.into_iter().flat_map(|p| p.iter()))?;
        Ok(api::json(StatusCode::OK, &self.events.pull(&partner, query).await?))
    }
}
