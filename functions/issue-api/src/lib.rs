//! First-come-first-served issuance over HTTP: `POST /v1/campaigns/{campaignId}/issues` and
//! `GET /v1/campaigns/{campaignId}/issues/{userId}`, mapped to the issuance context's `Issuance`
//! use case (Redis decides, SQS records; see `fcfs_shared::issuance::issue`).

use fcfs_shared::adapters::mysql::{self, MySqlStore};
use fcfs_shared::adapters::redis::RedisIssueLedger;
use fcfs_shared::adapters::sqs::DEFAULT_SEND_TIMEOUT;
use fcfs_shared::adapters::sqs::SqsReservationQueue;
use fcfs_shared::config::{ConfigError, Settings, StartupError};
use fcfs_shared::http::{self as api, ApiError};
use fcfs_shared::issuance::domain::{CampaignId, IssueStatus};
use fcfs_shared::issuance::ports::{CampaignCatalog, IssueLedger, ReservationQueue};
use fcfs_shared::issuance::{HEAL_GRACE, Issuance, MAX_REJECTION_MEMORY};
use fcfs_shared::kernel::UserId;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use serde_json::json;

/// The issue body is one short field; anything larger is not a real client.
pub const MAX_BODY_BYTES: usize = 1024;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IssueBody {
    user_id: String,
}

#[derive(Clone, Copy)]
enum Route {
    Issue,
    Status,
}

/// This function's routes as `template.yaml` declares them (method, path template): it dispatches
/// on the one API Gateway (or the local runner) matched, never on the path again.
const ROUTES: &[(&str, &str, Route)] = &[
    ("POST", "/v1/campaigns/{campaignId}/issues", Route::Issue),
    ("GET", "/v1/campaigns/{campaignId}/issues/{userId}", Route::Status),
];

pub struct IssueApi<C, L, Q> {
    issuance: Issuance<C, L, Q>,
}

impl IssueApi<MySqlStore, RedisIssueLedger, SqsReservationQueue> {
    /// The deployed function: Redis at `REDIS_URL`, the queue at `ISSUE_QUEUE_URL` (sends under
    /// `SQS_SEND_TIMEOUT_MS`; with `ISSUE_DLQ_URL`, counted before a lost campaign is rebuilt,
    /// `ISSUE_HEAL_GRACE_MS` after the loss is seen), and MySQL at `DATABASE_URL` for what Redis
    /// cannot answer. Nothing is
    /// connected at start: an issue request needs only Redis and SQS, so the function starts and
    /// issues with MySQL down, and a thousand cold instances open no MySQL connection.
    pub async fn from_settings(settings: &Settings, sdk: &aws_config::SdkConfig) -> Result<Self, StartupError> {
        let store = mysql::store_from(settings, sdk)?;
        let ledger = RedisIssueLedger::from_settings(settings)?;
        let send_timeout = settings.or("SQS_SEND_TIMEOUT_MS", DEFAULT_SEND_TIMEOUT.as_millis() as u64)?;
        let mut queue = SqsReservationQueue::with_timeout(
            fcfs_shared::adapters::sqs::client(sdk),
            settings.required("ISSUE_QUEUE_URL")?,
            std::time::Duration::from_millis(send_timeout),
        );
        // The template gives it; without it only the queue itself is counted.
        if let Some(dlq) = settings.optional("ISSUE_DLQ_URL") {
            queue = queue.with_dead_letter_queue(dlq);
        }
        let grace = settings.or("ISSUE_HEAL_GRACE_MS", HEAL_GRACE.as_millis() as u64)?;
        let memory = rejection_memory(settings)?;
        Ok(Self {
            issuance: Issuance::new(store, ledger, queue)
                .with_heal_grace(std::time::Duration::from_millis(grace))
                .with_rejection_memory(memory),
        })
    }
}

/// `ISSUE_REJECTION_MEMORY_MS`: how long this instance repeats Redis's "sold out", "not open" or
/// "ended" for a campaign without asking Redis again (0 never; at most 1,000, the default).
fn rejection_memory(settings: &Settings) -> Result<std::time::Duration, StartupError> {
    let most = MAX_REJECTION_MEMORY.as_millis() as u64;
    let millis = settings.or("ISSUE_REJECTION_MEMORY_MS", most)?;
    if millis > most {
        return Err(ConfigError::Invalid {
            name: "ISSUE_REJECTION_MEMORY_MS",
            reason: format!("{millis} ms is above the {most} ms a refusal may be repeated"),
        }
        .into());
    }
    Ok(std::time::Duration::from_millis(millis))
}

impl<C: CampaignCatalog, L: IssueLedger, Q: ReservationQueue> IssueApi<C, L, Q> {
    pub fn new(catalog: C, ledger: L, queue: Q) -> Self {
        Self {
            issuance: Issuance::new(catalog, ledger, queue),
        }
    }

    pub fn issuance(&self) -> &Issuance<C, L, Q> {
        &self.issuance
    }

    pub async fn handle(&self, req: Request) -> Response<Body> {
        let started = std::time::Instant::now();
        let result = match api::route(&req, ROUTES) {
            Some(Route::Issue) => self.issue(&req).await,
            Some(Route::Status) => self.status(&req).await,
            None => Err(ApiError::NotFound("route")),
        };
        let response = result.unwrap_or_else(ApiError::into_response);
        api::observe(&req, &response, started);
        response
    }

    /// The caller's partner and the campaign id in the path (a malformed id is "not found").
    fn target(req: &Request) -> Result<(String, CampaignId), ApiError> {
        let partner = api::partner_id(req)?;
        let campaign = api::path_param(req, "campaignId")
            .and_then(|raw| fcfs_shared::kernel::digits(&raw))
            .ok_or(ApiError::NotFound("campaign"))?;
        Ok((partner, campaign))
    }

    async fn issue(&self, req: &Request) -> Result<Response<Body>, ApiError> {
        let read = Self::target(req).and_then(|(partner, campaign)| {
            let body: IssueBody = api::json_body(req, MAX_BODY_BYTES)?;
            Ok((partner, campaign, UserId::parse(&body.user_id)?))
        });
        let (partner, campaign, user) =
            read.inspect_err(|e| self.issuance.refused_unread(matches!(e, ApiError::NotFound(_))))?;
        let accepted = self.issuance.issue(&partner, campaign, &user).await?;
        Ok(api::json(
            StatusCode::ACCEPTED,
            &json!({"requestId": accepted.request_id, "status": IssueStatus::Pending, "rank": accepted.rank}),
        ))
    }

    async fn status(&self, req: &Request) -> Result<Response<Body>, ApiError> {
        let (partner, campaign) = Self::target(req)?;
        let user = UserId::parse(&api::path_param(req, "userId").unwrap_or_default())?;
        let state = self.issuance.status(&partner, campaign, &user).await?;
        Ok(api::json(StatusCode::OK, &api::issue_state_fields(&state)))
    }
}

#[cfg(test)]
mod tests;
