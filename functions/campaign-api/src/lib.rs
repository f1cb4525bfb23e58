//! Campaigns over HTTP: `POST /v1/campaigns`, `GET /v1/campaigns`, `GET` and `PATCH
//! /v1/campaigns/{campaignId}`, mapped to the issuance context's `Campaigns` use cases.

use chrono::{DateTime, Utc};
use fcfs_shared::adapters::mysql::{self, MySqlStore};
use fcfs_shared::adapters::redis::RedisIssueLedger;
use fcfs_shared::config::{Settings, StartupError};
use fcfs_shared::http::{self as api, ApiError};
use fcfs_shared::issuance::campaigns::CampaignPage;
use fcfs_shared::issuance::change::{CampaignChange, CampaignQuery, CampaignStatus};
use fcfs_shared::issuance::domain::{Campaign, CampaignId, CampaignKind, Discount, NewCampaign};
use fcfs_shared::issuance::ports::{CampaignCatalog, IssueLedger};
use fcfs_shared::issuance::{CampaignSummary, Campaigns};
use fcfs_shared::partners::ports::PartnerLimitStore;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Serialize;

pub const MAX_BODY_BYTES: usize = 16 * 1024;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CampaignView {
    #[serde(with = "fcfs_shared::kernel::id_text")]
    campaign_id: CampaignId,
    partner_id: String,
    name: String,
    total_quantity: u32,
    issue_starts_at: DateTime<Utc>,
    issue_ends_at: DateTime<Utc>,
    coupon_expires_at: DateTime<Utc>,
    discount: Discount,
    kind: CampaignKind,
    created_at: DateTime<Utc>,
    paused: bool,
    status: CampaignStatus,
    /// Places taken in Redis: one campaign's read only (a list reads MySQL alone).
    #[serde(skip_serializing_if = "Option::is_none")]
    reserved: Option<u64>,
    issued: u64,
}

impl CampaignView {
    fn new(c: Campaign, reserved: Option<u64>, issued: u64, now: DateTime<Utc>) -> Self {
        Self {
            campaign_id: c.id,
            status: CampaignStatus::of(&c, now),
            partner_id: c.partner_id,
            name: c.name,
            total_quantity: c.total_quantity,
            issue_starts_at: c.issue_starts_at,
            issue_ends_at: c.issue_ends_at,
            coupon_expires_at: c.coupon_expires_at,
            discount: c.discount,
            kind: c.kind,
            created_at: c.created_at,
            paused: c.paused,
            reserved,
            issued,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CampaignListView {
    campaigns: Vec<CampaignView>,
    next_cursor: Option<String>,
}

impl From<CampaignSummary> for CampaignView {
    fn from(summary: CampaignSummary) -> Self {
        Self::new(
            summary.campaign,
            Some(summary.reserved),
            summary.issued,
            chrono::Utc::now(),
        )
    }
}

impl From<CampaignPage> for CampaignListView {
    fn from(page: CampaignPage) -> Self {
        let now = chrono::Utc::now();
        Self {
            campaigns: page
                .campaigns
                .into_iter()
                .map(|(c, issued)| CampaignView::new(c, None, issued, now))
                .collect(),
            next_cursor: page.next.map(|id| id.to_string()),
        }
    }
}

#[derive(Clone, Copy)]
enum Route {
    Create,
    List,
    Get,
    Change,
}

/// This function's routes as `template.yaml` declares them (method, path template): it dispatches
/// on the one API Gateway (or the local runner) matched, never on the path again.
const ROUTES: &[(&str, &str, Route)] = &[
    ("POST", "/v1/campaigns", Route::Create),
    ("GET", "/v1/campaigns", Route::List),
    ("GET", "/v1/campaigns/{campaignId}", Route::Get),
    ("PATCH", "/v1/campaigns/{campaignId}", Route::Change),
];

pub struct CampaignApi<C, L> {
    campaigns: Campaigns<C, L>,
}

impl CampaignApi<MySqlStore, RedisIssueLedger> {
    /// The deployed function: MySQL at `DATABASE_URL`, Redis at `REDIS_URL`.
    /// Both connect on first use, each call under its deadline.
    pub async fn from_settings(settings: &Settings, sdk: &aws_config::SdkConfig) -> Result<Self, StartupError> {
        let store = mysql::store_from(settings, sdk)?;
        let api = Self::new(store.clone(), RedisIssueLedger::from_settings(settings)?);
        // The same store answers the partners context's port: each partner's limits.
        Ok(api.with_limits(std::sync::Arc::new(store)))
    }
}

impl<C: CampaignCatalog, L: IssueLedger> CampaignApi<C, L> {
    pub fn new(catalog: C, ledger: L) -> Self {
        Self {
            campaigns: Campaigns::new(catalog, ledger),
        }
    }

    /// Each partner's limits from `limits` (by default every partner has the defaults).
    pub fn with_limits(self, limits: std::sync::Arc<dyn PartnerLimitStore>) -> Self {
        Self {
            campaigns: self.campaigns.with_limits(limits),
        }
    }

    pub async fn handle(&self, req: Request) -> Response<Body> {
        let started = std::time::Instant::now();
        let result = match api::route(&req, ROUTES) {
            Some(Route::Create) => self.create(&req).await,
            Some(Route::List) => self.list(&req).await,
            Some(Route::Get) => self.get(&req).await,
            Some(Route::Change) => self.change(&req).await,
            None => Err(ApiError::NotFound("route")),
        };
        let response = result.unwrap_or_else(ApiError::into_response);
        api::observe(&req, &response, started);
        response
    }

    async fn create(&self, req: &Request) -> Result<Response<Body>, ApiError> {
        let partner = api::partner_id(req)?;
        let campaign = api::json_body::<NewCampaign>(req, MAX_BODY_BYTES)?;
        let created = self.campaigns.create(&partner, campaign).await?;
        Ok(api::json(StatusCode::CREATED, &CampaignView::from(created)))
    }

    /// The campaign id in the path: a malformed one is "not found", like an unknown one.
    fn campaign_id(req: &Request) -> Result<CampaignId, ApiError> {
        api::path_param(req, "campaignId")
            .and_then(|raw| fcfs_shared::kernel::digits(&raw))
            .ok_or(ApiError::NotFound("campaign"))
    }

    async fn get(&self, req: &Request) -> Result<Response<Body>, ApiError> {
        let partner = api::partner_id(req)?;
        let id = Self::campaign_id(req)?;
        let summary = self.campaigns.get(&partner, id).await?;
        Ok(api::json(StatusCode::OK, &CampaignView::from(summary)))
    }

    async fn list(&self, req: &Request) -> Result<Response<Body>, ApiError> {
        use lambda_http::RequestExt;
        let partner = api::partner_id(req)?;
        let params = req.query_string_parameters_ref();
        let query = CampaignQuery::parse(params.into_iter().flat_map(|p| p.iter()))?;
        let page = self.campaigns.list(&partner, &query, chrono::Utc::now()).await?;
        Ok(api::json(StatusCode::OK, &CampaignListView::from(page)))
    }

    async fn change(&self, req: &Request) -> Result<Response<Body>, ApiError> {
        let partner = api::partner_id(req)?;
        let id = Self::campaign_id(req)?;
        let change = api::json_body::<CampaignChange>(req, MAX_BODY_BYTES)?;
        let changed = self.campaigns.change(&partner, id, change, chrono::Utc::now()).await?;
        Ok(api::json(StatusCode::OK, &CampaignView::from(changed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fcfs_shared::testkit::{MemoryCatalog, MemoryLedger, gateway_request};
    use serde_json::{Value, json};

    fn body() -> Value {
        json!({
            "name": "Black Friday", "totalQuantity": 1000,
            "issueStartsAt": "2026-11-27T00:00:00Z", "issueEndsAt": "2026-11-28T00:00:00+09:00",
            "couponExpiresAt": "2026-12-31T00:00:00Z", "discount": {"type": "PERCENT", "value": 10}
        })
    }

    async fn call(api: &CampaignApi<MemoryCatalog, MemoryLedger>, req: Request) -> (u16, Value) {
        let res = api.handle(req).await;
        let Body::Text(text) = res.body() else { panic!() };
        (res.status().as_u16(), serde_json::from_str(text).unwrap())
    }

    #[tokio::test]
    async fn create_answers_201_and_get_is_404_for_another_partner() {
        let api = CampaignApi::new(MemoryCatalog::default(), MemoryLedger::default());
        let (status, created) = call(
            &api,
            gateway_request("POST", "/v1/campaigns", &[], body().to_string(), Some("p1")),
        )
        .await;
        assert_eq!(status, 201, "{created}");
        assert_eq!(
            (created["totalQuantity"].as_u64(), created["partnerId"].as_str()),
            (Some(1000), Some("p1"))
        );
        let id = created["campaignId"].as_str().expect("a campaign id").to_owned();
        assert_eq!(created["issueEndsAt"], "2026-11-27T15:00:00Z");
        let (status, got) = call(
            &api,
            gateway_request(
                "GET",
                "/v1/campaigns/{campaignId}",
                &[("campaignId", &id)],
                "",
                Some("p1"),
            ),
        )
        .await;
        assert_eq!(
            (status, got["reserved"].as_u64(), got["issued"].as_u64()),
            (200, Some(0), Some(0))
        );
        assert_eq!(
            call(
                &api,
                gateway_request(
                    "GET",
                    "/v1/campaigns/{campaignId}",
                    &[("campaignId", &id)],
                    "",
                    Some("p2")
                )
            )
            .await
            .0,
            404
        );
        assert_eq!(
            call(
                &api,
                gateway_request(
                    "GET",
                    "/v1/campaigns/{campaignId}",
                    &[("campaignId", "x")],
                    "",
                    Some("p1")
                )
            )
            .await
            .0,
            404
        );
    }

    #[tokio::test]
    async fn invalid_campaigns_are_400_naming_the_field() {
        let api = CampaignApi::new(MemoryCatalog::default(), MemoryLedger::default());
        let cases = [
            ("totalQuantity", json!(0)),
            ("totalQuantity", json!(10_000_001)),
            ("totalQuantity", json!("many")),
            ("issueStartsAt", json!("yesterday")),
            ("issueEndsAt", json!("2026-11-26T00:00:00Z")),
            ("discount", json!({"type": "FREE", "value": 1})),
            ("name", json!("")),
            // Valid RFC 3339, but MySQL's DATETIME cannot hold it: a 400, not a 503 to retry forever.
            ("issueStartsAt", json!("0001-01-01T00:00:00Z")),
        ];
        for (field, value) in cases {
            let mut b = body();
            b[field] = value.clone();
            let (status, err) = call(
                &api,
                gateway_request("POST", "/v1/campaigns", &[], b.to_string(), Some("p1")),
            )
            .await;
            assert_eq!(status, 400, "{field}={value}: {err}");
            assert_eq!(err["error"], "INVALID_REQUEST");
            assert!(err["message"].as_str().unwrap().contains(field), "{field}: {err}");
            assert!(
                err.get("field")
                    .is_none_or(|f| f.as_str().is_some_and(|f| f.starts_with(field))),
                "{err}"
            );
        }
        let mut missing = body();
        missing.as_object_mut().unwrap().remove("couponExpiresAt");
        let (status, err) = call(
            &api,
            gateway_request("POST", "/v1/campaigns", &[], missing.to_string(), Some("p1")),
        )
        .await;
        assert!(status == 400 && err["message"].as_str().unwrap().contains("couponExpiresAt"));
        let huge = json!({"name": "x".repeat(MAX_BODY_BYTES)}).to_string();
        assert_eq!(
            call(&api, gateway_request("POST", "/v1/campaigns", &[], huge, Some("p1")))
                .await
                .0,
            413
        );
    }
}
