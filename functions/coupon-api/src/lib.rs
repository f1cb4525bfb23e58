//! Coupons over HTTP, mapped to the coupons context's `CouponService`:
//! `GET /v1/users/{userId}/coupons`, `GET /v1/coupons/{couponId}`,
//! `POST /v1/coupons/{couponId}/use` and `POST /v1/coupons/{couponId}/cancel-use`; and checkout
//! (`checkout`), where coupons are spent two-phase with points: the same function, since a
//! checkout is where a coupon is used.

mod checkout;

use std::sync::Arc;

pub use checkout::{CheckoutRoute, CheckoutRoutes};
use chrono::{DateTime, Utc};
use fcfs_shared::adapters::mysql::{self, MySqlStore};
use fcfs_shared::checkout::CheckoutService;
use fcfs_shared::config::{Settings, StartupError};
use fcfs_shared::coupons::CouponService;
use fcfs_shared::coupons::domain::{CancelUse, Coupon, CouponId, CouponQuery, CouponStatus, UseCoupon};
use fcfs_shared::coupons::ports::CouponRecords;
use fcfs_shared::http::{self as api, ApiError};
use fcfs_shared::issuance::domain::{CampaignId, Discount};
use fcfs_shared::kernel::UserId;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;

pub const MAX_BODY_BYTES: usize = 4 * 1024;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CouponView {
    #[serde(with = "fcfs_shared::kernel::id_text")]
    coupon_id: CouponId,
    #[serde(with = "fcfs_shared::kernel::id_text")]
    campaign_id: CampaignId,
    campaign_name: String,
    user_id: String,
    status: CouponStatus,
    discount: Discount,
    issued_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    used_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    order_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    discount_amount: Option<u64>,
}

impl CouponView {
    fn new(c: Coupon, now: DateTime<Utc>) -> Self {
        let status = c.status(now);
        let usage = c.usage;
        Self {
            coupon_id: c.id,
            campaign_id: c.campaign_id,
            campaign_name: c.campaign_name,
            user_id: c.user_id,
            status,
            discount: c.discount,
            issued_at: c.issued_at,
            expires_at: c.expires_at,
            used_at: usage.as_ref().map(|u| u.used_at),
            order_id: usage.as_ref().map(|u| u.order_id.clone()),
            discount_amount: usage.as_ref().map(|u| u.discount_amount),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PageView {
    coupons: Vec<CouponView>,
    next_cursor: Option<String>,
}

#[derive(Clone, Copy)]
enum Route {
    List,
    Get,
    Use,
    CancelUse,
    Checkout(CheckoutRoute),
}

/// This function's routes as `template.yaml` declares them (method, path template): it dispatches
/// on the one API Gateway (or the local runner) matched, never on the path again.
const ROUTES: &[(&str, &str, Route)] = &[
    ("GET", "/v1/users/{userId}/coupons", Route::List),
    ("GET", "/v1/coupons/{couponId}", Route::Get),
    ("POST", "/v1/coupons/{couponId}/use", Route::Use),
    ("POST", "/v1/coupons/{couponId}/cancel-use", Route::CancelUse),
    ("POST", "/v1/checkout/preview", Route::Checkout(CheckoutRoute::Preview)),
    ("POST", "/v1/checkout/holds", Route::Checkout(CheckoutRoute::Place)),
    (
        "GET",
        "/v1/checkout/holds/{holdId}",
        Route::Checkout(CheckoutRoute::Get),
    ),
    (
        "POST",
        "/v1/checkout/holds/{holdId}/confirm",
        Route::Checkout(CheckoutRoute::Confirm),
    ),
    (
        "POST",
        "/v1/checkout/holds/{holdId}/release",
        Route::Checkout(CheckoutRoute::Release),
    ),
];

pub struct CouponApi<R> {
    coupons: CouponService<R>,
    /// The checkout routes; without them (a coupons-only test) they answer 404.
    checkout: Option<Arc<dyn CheckoutRoutes>>,
}

impl CouponApi<MySqlStore> {
    /// The deployed function: MySQL (credentials from Secrets Manager), opened on first use.
    pub fn from_settings(settings: &Settings, sdk: &aws_config::SdkConfig) -> Result<Self, StartupError> {
        let store = mysql::store_from(settings, sdk)?;
        let checkout = CheckoutService::new(store.clone(), store.clone(), store.clone());
        Ok(Self::new(CouponService::new(store)).with_checkout(Arc::new(checkout)))
    }
}

impl<R: CouponRecords> CouponApi<R> {
    pub fn new(coupons: CouponService<R>) -> Self {
        Self {
            coupons,
            checkout: None,
        }
    }

    pub fn with_checkout(mut self, checkout: Arc<dyn CheckoutRoutes>) -> Self {
        self.checkout = Some(checkout);
        self
    }

    pub async fn handle(&self, req: Request) -> Response<Body> {
        let started = std::time::Instant::now();
        let user = api::path_param(&req, "userId").unwrap_or_default();
        let coupon = api::path_param(&req, "couponId").unwrap_or_default();
        let result = match api::route(&req, ROUTES) {
            Some(Route::List) => self.list(&req, &user).await,
            Some(Route::Get) => self.get(&req, &coupon).await,
            Some(Route::Use) => self.use_coupon(&req, &coupon).await,
            Some(Route::CancelUse) => self.cancel_use(&req, &coupon).await,
            Some(Route::Checkout(route)) => match &self.checkout {
                Some(checkout) => checkout.answer(route, &req).await,
                None => Err(ApiError::NotFound("route")),
            },
            None => Err(ApiError::NotFound("route")),
        };
        let response = result.unwrap_or_else(ApiError::into_response);
        api::observe(&req, &response, started);
        response
    }

    fn view(&self, coupon: Coupon) -> Response<Body> {
        api::json(StatusCode::OK, &CouponView::new(coupon, self.coupons.now()))
    }

    async fn list(&self, req: &Request, user: &str) -> Result<Response<Body>, ApiError> {
        let partner = api::partner_id(req)?;
        let user = UserId::parse(user)?;
        let params = req.query_string_parameters_ref();
        let query = CouponQuery::parse(params.into_iter().flat_map(|p| p.iter()))?;
        let page = self.coupons.list(&partner, &user, &query).await?;
        let now = self.coupons.now();
        Ok(api::json(
            StatusCode::OK,
            &PageView {
                coupons: page.coupons.into_iter().map(|c| CouponView::new(c, now)).collect(),
                next_cursor: page.next.map(|c| c.encode()),
            },
        ))
    }

    async fn get(&self, req: &Request, raw_id: &str) -> Result<Response<Body>, ApiError> {
        let partner = api::partner_id(req)?;
        let id: CouponId = fcfs_shared::kernel::digits(raw_id).ok_or(ApiError::NotFound("coupon"))?;
        Ok(self.view(self.coupons.get(&partner, id).await?))
    }

    async fn use_coupon(&self, req: &Request, raw_id: &str) -> Result<Response<Body>, ApiError> {
        let partner = api::partner_id(req)?;
        let id: CouponId = fcfs_shared::kernel::digits(raw_id).ok_or(ApiError::NotFound("coupon"))?;
        let request = api::json_body::<UseCoupon>(req, MAX_BODY_BYTES)?;
        Ok(self.view(self.coupons.use_coupon(&partner, id, request).await?))
    }

    async fn cancel_use(&self, req: &Request, raw_id: &str) -> Result<Response<Body>, ApiError> {
        let partner = api::partner_id(req)?;
        let id: CouponId = fcfs_shared::kernel::digits(raw_id).ok_or(ApiError::NotFound("coupon"))?;
        let request = api::json_body::<CancelUse>(req, MAX_BODY_BYTES)?;
        Ok(self.view(self.coupons.cancel_use(&partner, id, request).await?))
    }
}
