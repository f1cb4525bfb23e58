//! Checkout over HTTP, mapped to the checkout context's `CheckoutService`:
//! `POST /v1/checkout/preview`, `POST /v1/checkout/holds`, `GET /v1/checkout/holds/{holdId}`,
//! `POST /v1/checkout/holds/{holdId}/confirm` and `…/release`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fcfs_shared::checkout::CheckoutService;
use fcfs_shared::checkout::domain::{Hold, HoldId, HoldStatus, PlaceHold, PreviewCheckout};
use fcfs_shared::checkout::ports::CheckoutRecords;
use fcfs_shared::coupons::domain::CouponId;
use fcfs_shared::coupons::ports::CouponRecords;
use fcfs_shared::http::{self as api, ApiError};
use fcfs_shared::points::ports::PointRecords;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Serialize;

use super::MAX_BODY_BYTES;

#[derive(Debug, Clone, Copy)]
pub enum CheckoutRoute {
    Preview,
    Place,
    Get,
    Confirm,
    Release,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HoldView {
    #[serde(with = "fcfs_shared::kernel::id_text")]
    hold_id: HoldId,
    order_id: String,
    user_id: String,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "fcfs_shared::kernel::id_text::optional"
    )]
    coupon_id: Option<CouponId>,
    status: HoldStatus,
    order_amount: u64,
    discount: u64,
    points: u64,
    payable: u64,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "fcfs_shared::kernel::id_text::optional"
    )]
    points_transaction_id: Option<u64>,
    expires_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    settled_at: Option<DateTime<Utc>>,
}

impl HoldView {
    fn new(hold: Hold, now: DateTime<Utc>) -> Self {
        Self {
            status: hold.status(now),
            payable: hold.payable(),
            hold_id: hold.id,
            order_id: hold.order_id,
            user_id: hold.user_id,
            coupon_id: hold.coupon_id,
            order_amount: hold.order_amount,
            discount: hold.discount,
            points: hold.points,
            points_transaction_id: hold.points_transaction,
            expires_at: hold.expires_at,
            created_at: hold.created_at,
            settled_at: hold.settled_at,
        }
    }
}

/// The checkout routes of this function, whatever stores serve them.
#[async_trait]
pub trait CheckoutRoutes: Send + Sync {
    async fn answer(&self, route: CheckoutRoute, req: &Request) -> Result<Response<Body>, ApiError>;
}

#[async_trait]
impl<H: CheckoutRecords, C: CouponRecords, P: PointRecords> CheckoutRoutes for CheckoutService<H, C, P> {
    async fn answer(&self, route: CheckoutRoute, req: &Request) -> Result<Response<Body>, ApiError> {
        let partner = api::partner_id(req)?;
        let hold_id = || {
            api::path_param(req, "holdId")
                .and_then(|raw| fcfs_shared::kernel::digits::<HoldId>(&raw))
                .ok_or(ApiError::NotFound("hold"))
        };
        let view = |hold: Hold| api::json(StatusCode::OK, &HoldView::new(hold, self.now()));
        Ok(match route {
            CheckoutRoute::Preview => {
                let request = api::json_body::<PreviewCheckout>(req, MAX_BODY_BYTES)?;
                api::json(StatusCode::OK, &self.preview(&partner, request).await?)
            }
            CheckoutRoute::Place => {
                let request = api::json_body::<PlaceHold>(req, MAX_BODY_BYTES)?;
                let (hold, created) = self.place(&partner, request).await?;
                let status = if created { StatusCode::CREATED } else { StatusCode::OK };
                api::json(status, &HoldView::new(hold, self.now()))
            }
            CheckoutRoute::Get => view(self.get(&partner, hold_id()?).await?),
            CheckoutRoute::Confirm => view(self.confirm(&partner, hold_id()?).await?),
            CheckoutRoute::Release => view(self.release(&partner, hold_id()?).await?),
        })
    }
}
