//! Point wallets over HTTP, mapped to the points context's `PointsService`:
//! `POST /v1/users/{userId}/points/earn`, `POST /v1/users/{userId}/points/use`,
//! `POST /v1/points/transactions/{transactionId}/cancel`, `POST /v1/points/transfers`,
//! `GET /v1/users/{userId}/points` and `GET /v1/users/{userId}/points/history`.
//! Every POST needs an `Idempotency-Key`.

use chrono::{DateTime, Utc};
use fcfs_shared::adapters::mysql::{self, MySqlStore};
use fcfs_shared::config::{Settings, StartupError};
use fcfs_shared::http::{self as api, ApiError};
use fcfs_shared::kernel::{InvalidField, UserId};
use fcfs_shared::points::PointsService;
use fcfs_shared::points::domain::{
    DEFAULT_VALIDITY_DAYS, EarnPoints, Entry, HistoryQuery, IdempotencyKey, MAX_VALIDITY_DAYS, Movement, Receipt,
    TransactionId, TransferPoints, UsePoints, encode_cursor,
};
use fcfs_shared::points::ports::PointRecords;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;

pub const MAX_BODY_BYTES: usize = 4 * 1024;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EntryView {
    #[serde(with = "fcfs_shared::kernel::id_text")]
    transaction_id: TransactionId,
    #[serde(rename = "type")]
    movement: Movement,
    amount: i64,
    balance_after: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    order_id: Option<String>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "fcfs_shared::kernel::id_text::optional"
    )]
    related_transaction_id: Option<TransactionId>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "fcfs_shared::kernel::id_text::optional"
    )]
    cancelled_by: Option<TransactionId>,
    created_at: DateTime<Utc>,
}

impl From<Entry> for EntryView {
    fn from(e: Entry) -> Self {
        Self {
            transaction_id: e.transaction_id,
            movement: e.movement,
            amount: e.amount,
            balance_after: e.balance_after,
            reason: e.reason,
            order_id: e.order_id,
            related_transaction_id: e.related_transaction_id,
            cancelled_by: e.cancelled_by,
            created_at: e.created_at,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HistoryView {
    entries: Vec<EntryView>,
    next_cursor: Option<String>,
}

#[derive(Clone, Copy)]
enum Route {
    Earn,
    Use,
    Cancel,
    Transfer,
    Balance,
    History,
}

/// This function's routes as `template.yaml` declares them (method, path template): it dispatches
/// on the one API Gateway (or the local runner) matched, never on the path again.
const ROUTES: &[(&str, &str, Route)] = &[
    ("POST", "/v1/users/{userId}/points/earn", Route::Earn),
    ("POST", "/v1/users/{userId}/points/use", Route::Use),
    ("POST", "/v1/points/transactions/{transactionId}/cancel", Route::Cancel),
    ("POST", "/v1/points/transfers", Route::Transfer),
    ("GET", "/v1/users/{userId}/points", Route::Balance),
    ("GET", "/v1/users/{userId}/points/history", Route::History),
];

pub struct PointsApi<R> {
    points: PointsService<R>,
}

impl PointsApi<MySqlStore> {
    /// The deployed function: MySQL (credentials from Secrets Manager), opened on first use;
    /// `POINTS_VALIDITY_DAYS` for partners without their own policy.
    pub fn from_settings(settings: &Settings, sdk: &aws_config::SdkConfig) -> Result<Self, StartupError> {
        let days: u32 = settings.or("POINTS_VALIDITY_DAYS", DEFAULT_VALIDITY_DAYS)?;
        if !(1..=MAX_VALIDITY_DAYS).contains(&days) {
            return Err(fcfs_shared::config::ConfigError::Invalid {
                name: "POINTS_VALIDITY_DAYS",
                reason: format!("must be 1-{MAX_VALIDITY_DAYS}"),
            }
            .into());
        }
        let store = mysql::store_from(settings, sdk)?;
        Ok(Self::new(
            PointsService::new(store.clone())
                .with_default_validity_days(days)
                // The same store answers the partners context's port: each partner's limits.
                .with_limits(std::sync::Arc::new(store)),
        ))
    }
}

impl<R: PointRecords> PointsApi<R> {
    pub fn new(points: PointsService<R>) -> Self {
        Self { points }
    }

    pub async fn handle(&self, req: Request) -> Response<Body> {
        let started = std::time::Instant::now();
        let user = api::path_param(&req, "userId").unwrap_or_default();
        let result = match api::route(&req, ROUTES) {
            Some(Route::Earn) => self.earn(&req, &user).await,
            Some(Route::Use) => self.use_points(&req, &user).await,
            Some(Route::Cancel) => self.cancel(&req).await,
            Some(Route::Transfer) => self.transfer(&req).await,
            Some(Route::Balance) => self.balance(&req, &user).await,
            Some(Route::History) => self.history(&req, &user).await,
            None => Err(ApiError::NotFound("route")),
        };
        let response = result.unwrap_or_else(ApiError::into_response);
        api::observe(&req, &response, started);
        response
    }

    async fn earn(&self, req: &Request, user: &str) -> Result<Response<Body>, ApiError> {
        let (partner, key) = (api::partner_id(req)?, idempotency_key(req)?);
        let user = UserId::parse(user)?;
        let request = api::json_body::<EarnPoints>(req, MAX_BODY_BYTES)?;
        Ok(receipt(
            StatusCode::CREATED,
            self.points.earn(&partner, user, &key, request).await?,
        ))
    }

    async fn use_points(&self, req: &Request, user: &str) -> Result<Response<Body>, ApiError> {
        let (partner, key) = (api::partner_id(req)?, idempotency_key(req)?);
        let user = UserId::parse(user)?;
        let request = api::json_body::<UsePoints>(req, MAX_BODY_BYTES)?;
        Ok(receipt(
            StatusCode::CREATED,
            self.points.use_points(&partner, user, &key, request).await?,
        ))
    }

    async fn cancel(&self, req: &Request) -> Result<Response<Body>, ApiError> {
        let (partner, key) = (api::partner_id(req)?, idempotency_key(req)?);
        let transaction: TransactionId = api::path_param(req, "transactionId")
            .and_then(|id| fcfs_shared::kernel::digits(&id))
            .ok_or(ApiError::NotFound("transaction"))?;
        Ok(receipt(
            StatusCode::OK,
            self.points.cancel(&partner, transaction, &key).await?,
        ))
    }

    async fn transfer(&self, req: &Request) -> Result<Response<Body>, ApiError> {
        let (partner, key) = (api::partner_id(req)?, idempotency_key(req)?);
        let request = api::json_body::<TransferPoints>(req, MAX_BODY_BYTES)?;
        Ok(receipt(
            StatusCode::CREATED,
            self.points.transfer(&partner, &key, request).await?,
        ))
    }

    async fn balance(&self, req: &Request, user: &str) -> Result<Response<Body>, ApiError> {
        let partner = api::partner_id(req)?;
        let user = UserId::parse(user)?;
        Ok(api::json(StatusCode::OK, &self.points.balance(&partner, &user).await?))
    }

    async fn history(&self, req: &Request, user: &str) -> Result<Response<Body>, ApiError> {
        let partner = api::partner_id(req)?;
        let user = UserId::parse(user)?;
        let params = req.query_string_parameters_ref();
        let query = HistoryQuery::parse(params.into_iter().flat_map(|p| p.iter()))?;
        let page = self.points.history(&partner, &user, &query).await?;
        Ok(api::json(
            StatusCode::OK,
            &HistoryView {
                entries: page.entries.into_iter().map(EntryView::from).collect(),
                next_cursor: page.next.map(encode_cursor),
            },
        ))
    }
}

fn idempotency_key(req: &Request) -> Result<IdempotencyKey, InvalidField> {
    let header = req.headers().get(IdempotencyKey::HEADER);
    let text = match header {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| InvalidField::new(IdempotencyKey::HEADER, "must be visible ASCII"))?,
        ),
        None => None,
    };
    IdempotencyKey::parse(text)
}

fn receipt(status: StatusCode, receipt: Receipt) -> Response<Body> {
    api::json(status, &receipt)
}
