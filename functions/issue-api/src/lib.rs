//! First-come-first-served issuance: `POST /v1/campaigns/{campaignId}/issues` and
//! `GET /v1/campaigns/{campaignId}/issues/{userId}`.
//!
//! Redis decides (one script: window, duplicate, stock), SQS records, MySQL is only read for
//! campaign metadata, which is cached here so a rejection costs one Redis round trip.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use fcfs_shared::api::{self, ApiError};
use fcfs_shared::config::{Settings, StartupError};
use fcfs_shared::db::MySqlStore;
use fcfs_shared::domain::{CampaignId, IssueDecision, IssueStatus, Reservation, UserId};
use fcfs_shared::ports::{CampaignCatalog, IssueLedger, ReservationQueue};
use fcfs_shared::redis_ledger::RedisIssueLedger;
use fcfs_shared::sqs_queue::SqsReservationQueue;
use lambda_http::http::{Method, StatusCode};
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

/// Campaign metadata the hot path needs; a campaign never changes owner, so caching is safe.
#[derive(Clone)]
struct CampaignOwner {
    partner_id: String,
}

/// Known campaigns stay cached for minutes; unknown ids only briefly (a flood of unknown ids must
/// not become a flood of MySQL reads, and a campaign created a moment later must become visible).
struct OwnerExpiry;

impl moka::Expiry<CampaignId, Option<Arc<CampaignOwner>>> for OwnerExpiry {
    fn expire_after_create(
        &self,
        _id: &CampaignId,
        owner: &Option<Arc<CampaignOwner>>,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(if owner.is_some() {
            Duration::from_secs(600)
        } else {
            Duration::from_secs(2)
        })
    }
}

pub struct IssueApi<C, L, Q> {
    catalog: C,
    ledger: L,
    queue: Q,
    owners: moka::future::Cache<CampaignId, Option<Arc<CampaignOwner>>>,
}

impl IssueApi<MySqlStore, RedisIssueLedger, SqsReservationQueue> {
    /// The deployed function: MySQL at `DATABASE_URL`, Redis at `REDIS_URL`, the queue at
    /// `ISSUE_QUEUE_URL`.
    pub async fn from_settings(settings: &Settings, sdk: &aws_config::SdkConfig) -> Result<Self, StartupError> {
        let pool = fcfs_shared::db::connect_with(settings).await?;
        let ledger = RedisIssueLedger::connect(&settings.required("REDIS_URL")?).await?;
        let queue = SqsReservationQueue::new(aws_sdk_sqs::Client::new(sdk), settings.required("ISSUE_QUEUE_URL")?);
        Ok(Self::new(MySqlStore::new(pool), ledger, queue))
    }
}

impl<C: CampaignCatalog, L: IssueLedger, Q: ReservationQueue> IssueApi<C, L, Q> {
    pub fn new(catalog: C, ledger: L, queue: Q) -> Self {
        Self {
            catalog,
            ledger,
            queue,
            owners: moka::future::Cache::builder()
                .max_capacity(100_000)
                .expire_after(OwnerExpiry)
                .build(),
        }
    }

    pub async fn handle(&self, req: Request) -> Response<Body> {
        let result = match (req.method(), api::path_param(&req, "userId")) {
            (&Method::POST, None) => self.issue(&req).await,
            (&Method::GET, Some(user)) => self.status(&req, &user).await,
            _ => Err(ApiError::NotFound("route")),
        };
        result.unwrap_or_else(ApiError::into_response)
    }

    /// The campaign and its owner, if it exists and belongs to the caller; another partner's is
    /// "not found", so its existence does not leak.
    async fn owned_campaign(&self, req: &Request) -> Result<(CampaignId, String), ApiError> {
        let partner = api::partner_id(req)?;
        let id: CampaignId = api::path_param(req, "campaignId")
            .and_then(|raw| raw.parse().ok())
            .ok_or(ApiError::NotFound("campaign"))?;
        // Concurrent misses for one id share a single load: the first second of a flash sale
        // must not send every caller to MySQL.
        let owner = self
            .owners
            .try_get_with(id, async {
                let campaign = self.catalog.get(id).await?;
                Ok::<_, fcfs_shared::ports::Unavailable>(campaign.map(|c| {
                    Arc::new(CampaignOwner {
                        partner_id: c.partner_id,
                    })
                }))
            })
            .await
            .map_err(|e| fcfs_shared::ports::Unavailable::new(e.service, &e.detail))?
            .ok_or(ApiError::NotFound("campaign"))?;
        if owner.partner_id != partner {
            return Err(ApiError::NotFound("campaign"));
        }
        Ok((id, partner))
    }

    async fn issue(&self, req: &Request) -> Result<Response<Body>, ApiError> {
        let (campaign_id, partner_id) = self.owned_campaign(req).await?;
        let body: IssueBody = api::json_body(req, MAX_BODY_BYTES)?;
        let user = UserId::parse(&body.user_id)?;
        let now = Utc::now();
        let request_id = uuid::Uuid::now_v7();
        let decision = match self.ledger.reserve(campaign_id, &user, request_id, now).await {
            Ok(decision) => decision,
            Err(e) => {
                // A timed-out script may still have reserved: undo in this request's name only.
                self.compensate(campaign_id, &user, request_id).await;
                return Err(e.into());
            }
        };
        let rank = match decision {
            IssueDecision::Reserved { rank } => rank,
            IssueDecision::AlreadyIssued => return Err(ApiError::AlreadyIssued),
            IssueDecision::SoldOut => return Err(ApiError::SoldOut),
            IssueDecision::NotOpen => return Err(ApiError::NotOpen),
            IssueDecision::Ended => return Err(ApiError::Ended),
            IssueDecision::Unprimed => {
                tracing::error!(campaign_id, "no issue rules in Redis: run `fcfs-admin rebuild-ledger`");
                return Err(fcfs_shared::ports::Unavailable::new("redis", "campaign not primed").into());
            }
        };
        let reservation = Reservation {
            request_id,
            campaign_id,
            partner_id,
            user_id: user,
            rank,
            reserved_at: now,
        };
        if let Err(enqueue_error) = self.queue.enqueue(&reservation).await {
            // No message, no coupon: give the place back so the quantity is not leaked.
            self.compensate(campaign_id, &reservation.user_id, request_id).await;
            return Err(enqueue_error.into());
        }
        Ok(api::json(
            StatusCode::ACCEPTED,
            &json!({"requestId": reservation.request_id, "status": "PENDING", "rank": rank}),
        ))
    }

    async fn compensate(&self, campaign_id: CampaignId, user: &UserId, request_id: uuid::Uuid) {
        match self.ledger.release(campaign_id, user, request_id).await {
            Ok(released) => {
                tracing::warn!(campaign_id, %request_id, released, "request failed; reservation compensated")
            }
            Err(release_error) => tracing::error!(
                campaign_id,
                %request_id,
                user_id = user.as_str(),
                %release_error,
                "compensation failed: a place may be held without a message; reconcile with `fcfs-admin rebuild-ledger`"
            ),
        }
    }

    async fn status(&self, req: &Request, raw_user: &str) -> Result<Response<Body>, ApiError> {
        let (campaign_id, _) = self.owned_campaign(req).await?;
        let user = UserId::parse(raw_user)?;
        let body = match self.catalog.coupon_of(campaign_id, &user).await? {
            Some(coupon) => json!({"status": IssueStatus::Issued, "couponId": coupon.to_string()}),
            None if self.ledger.holds(campaign_id, &user).await? => json!({"status": IssueStatus::Pending}),
            None => json!({"status": IssueStatus::None}),
        };
        Ok(api::json(StatusCode::OK, &body))
    }
}

#[cfg(test)]
mod tests;
