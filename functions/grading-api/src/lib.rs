//! Grading over HTTP, mapped to the grading context's `GradingService`:
//! `POST /v1/orders`, `PUT /v1/grading/policy`, `POST /v1/grading/runs`,
//! `GET /v1/grading/runs/{runId}` and `GET /v1/users/{userId}/grade`.

use fcfs_shared::adapters::mysql::MySqlStore;
use fcfs_shared::adapters::sqs::SqsPartitionQueue;
use fcfs_shared::config::{Settings, StartupError};
use fcfs_shared::grading::GradingService;
use fcfs_shared::grading::domain::{Month, OrderInput, Policy, RunId};
use fcfs_shared::grading::ports::{GradingRecords, PartitionQueue};
use fcfs_shared::http::{self as api, ApiError};
use fcfs_shared::kernel::{InvalidField, UserId};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::{Deserialize, Serialize};

/// 1,000 orders of a few hundred bytes each.
pub const MAX_ORDERS_BODY_BYTES: usize = 512 * 1024;
pub const MAX_BODY_BYTES: usize = 16 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrdersBody {
    orders: Vec<OrderInput>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OrdersView {
    recorded: usize,
    updated: usize,
    unchanged: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunBody {
    month: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StartedView {
    #[serde(with = "fcfs_shared::kernel::id_text")]
    run_id: RunId,
    /// The partitions this request sent (again): all of a new run, those not done of an old one.
    pending_partitions: Vec<u32>,
}

#[derive(Clone, Copy)]
enum Route {
    Orders,
    Policy,
    ReadPolicy,
    StartRun,
    Run,
    Grade,
}

/// This function's routes as `template.yaml` declares them (method, path template): it dispatches
/// on the one API Gateway (or the local runner) matched, never on the path again.
const ROUTES: &[(&str, &str, Route)] = &[
    ("POST", "/v1/orders", Route::Orders),
    ("PUT", "/v1/grading/policy", Route::Policy),
    ("GET", "/v1/grading/policy", Route::ReadPolicy),
    ("POST", "/v1/grading/runs", Route::StartRun),
    ("GET", "/v1/grading/runs/{runId}", Route::Run),
    ("GET", "/v1/users/{userId}/grade", Route::Grade),
];

pub struct GradingApi<R, Q> {
    grading: GradingService<R, Q>,
}

impl GradingApi<MySqlStore, SqsPartitionQueue> {
    /// MySQL (credentials from Secrets Manager, opened on first use), the grading queue at
    /// `GRADING_QUEUE_URL`, `GRADING_PARTITIONS` partitions per run (default 64).
    pub fn from_settings(settings: &Settings, sdk: &aws_config::SdkConfig) -> Result<Self, StartupError> {
        Ok(Self::new(fcfs_shared::adapters::grading_service_from(settings, sdk)?))
    }
}

impl<R: GradingRecords, Q: PartitionQueue> GradingApi<R, Q> {
    pub fn new(grading: GradingService<R, Q>) -> Self {
        Self { grading }
    }

    pub async fn handle(&self, req: Request) -> Response<Body> {
        let started = std::time::Instant::now();
        let result = match api::route(&req, ROUTES) {
            Some(Route::Orders) => self.orders(&req).await,
            Some(Route::Policy) => self.policy(&req).await,
            Some(Route::ReadPolicy) => self.read_policy(&req).await,
            Some(Route::StartRun) => self.start_run(&req).await,
            Some(Route::Run) => self.run(&req).await,
            Some(Route::Grade) => self.grade(&req).await,
            None => Err(ApiError::NotFound("route")),
        };
        let response = result.unwrap_or_else(ApiError::into_response);
        api::observe(&req, &response, started);
        response
    }

    async fn orders(&self, req: &Request) -> Result<Response<Body>, ApiError> {
        let partner = api::partner_id(req)?;
        let body = api::json_body::<OrdersBody>(req, MAX_ORDERS_BODY_BYTES)?;
        let recorded = self.grading.record_orders(&partner, body.orders).await?;
        Ok(api::json(
            StatusCode::OK,
            &OrdersView {
                recorded: recorded.recorded,
                updated: recorded.updated,
                unchanged: recorded.unchanged,
            },
        ))
    }

    async fn policy(&self, req: &Request) -> Result<Response<Body>, ApiError> {
        let partner = api::partner_id(req)?;
        let policy = api::json_body::<Policy>(req, MAX_BODY_BYTES)?;
        let policy = self.grading.set_policy(&partner, policy).await?;
        Ok(api::json(StatusCode::OK, &policy))
    }

    async fn read_policy(&self, req: &Request) -> Result<Response<Body>, ApiError> {
        let partner = api::partner_id(req)?;
        Ok(api::json(StatusCode::OK, &self.grading.policy(&partner).await?))
    }

    async fn start_run(&self, req: &Request) -> Result<Response<Body>, ApiError> {
        let partner = api::partner_id(req)?;
        let body = api::json_body::<RunBody>(req, MAX_BODY_BYTES)?;
        let month = Month::parse(&body.month)?;
        let run = self.grading.start_run(&partner, month).await?;
        let started = StartedView {
            run_id: run.run_id,
            pending_partitions: run.pending_partitions,
        };
        Ok(api::json(StatusCode::ACCEPTED, &started))
    }

    async fn run(&self, req: &Request) -> Result<Response<Body>, ApiError> {
        let partner = api::partner_id(req)?;
        let run: RunId = api::path_param(req, "runId")
            .and_then(|id| fcfs_shared::kernel::digits(&id))
            .ok_or(ApiError::NotFound("grading run"))?;
        Ok(api::json(StatusCode::OK, &self.grading.run(&partner, run).await?))
    }

    async fn grade(&self, req: &Request) -> Result<Response<Body>, ApiError> {
        let partner = api::partner_id(req)?;
        let user = UserId::parse(&api::path_param(req, "userId").unwrap_or_default())?;
        let month = match req.query_string_parameters_ref().and_then(|q| q.first("month")) {
            Some(text) => Some(Month::parse(text)?),
            None => None,
        };
        if req
            .query_string_parameters_ref()
            .is_some_and(|q| q.iter().any(|(k, _)| k != "month"))
        {
            return Err(InvalidField::new("query", "only month is accepted").into());
        }
        Ok(api::json(
            StatusCode::OK,
            &self.grading.user_grade(&partner, user, month).await?,
        ))
    }
}
