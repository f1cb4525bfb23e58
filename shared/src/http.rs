//! The API's transport contract, shared by the HTTP functions: request parsing that never panics,
//! and the one mapping of every failure, whichever context it comes from, to a status code and the
//! JSON body `{"error": CODE, "message": text, "field"?: name}` (a repeated issue request's 409
//! adds the first answer). Transient failures answer 503
//! with `Retry-After`; permanent ones a 4xx with their own code.

use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::checkout::CheckoutError;
use crate::coupons::CouponError;
use crate::events::EventsError;
use crate::grading::GradingError;
use crate::issuance::domain::{IssueStatus, Place};
use crate::issuance::{IssuanceError, IssueState};
use crate::kernel::{InvalidField, Unavailable};
use crate::points::PointsError;

mod codes;
pub use codes::{ErrorCode, GATEWAY_ANSWERS, GatewayAnswer, Retry, errors_markdown};

/// Seconds a client should wait before retrying after a 503.
pub const RETRY_AFTER_SECS: u32 = 1;

/// Every failure an API function answers with: the request itself (before any use case runs) or a
/// context's error.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidField(#[from] InvalidField),
    #[error("{0}")]
    InvalidBody(String),
    /// A body field JSON deserialization refused: missing, unknown, of the wrong type or value.
    #[error("{field}: {message}")]
    InvalidBodyField { field: String, message: String },
    #[error("request body exceeds {0} bytes")]
    PayloadTooLarge(usize),
    #[error("the request carries no authorized partner")]
    Unauthenticated,
    #[error("the API key has expired")]
    KeyExpired,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error(transparent)]
    Issuance(#[from] IssuanceError),
    #[error(transparent)]
    Coupons(#[from] CouponError),
    #[error(transparent)]
    Points(#[from] PointsError),
    #[error(transparent)]
    Grading(#[from] GradingError),
    #[error(transparent)]
    Checkout(#[from] CheckoutError),
    #[error(transparent)]
    Events(#[from] EventsError),
}

/// How a failure shows on the wire.
struct Problem {
    code: ErrorCode,
    field: Option<String>,
    /// More fields of the answer (a repeated issue request's first answer).
    details: serde_json::Map<String, serde_json::Value>,
    /// What went wrong behind us, for the log only; the client sees a generic message.
    backend: Option<String>,
}

impl Problem {
    fn new(code: ErrorCode) -> Self {
        Self {
            code,
            field: None,
            details: serde_json::Map::new(),
            backend: None,
        }
    }

    /// 422 `LIMIT_EXCEEDED`, the limit's name as `field`: a partner's quota, not a retry later.
    fn limit(e: &crate::partners::domain::LimitExceeded) -> Self {
        Self {
            field: Some(e.limit.as_str().into()),
            ..Self::new(ErrorCode::LimitExceeded)
        }
    }

    fn invalid(field: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            ..Self::new(ErrorCode::InvalidRequest)
        }
    }

    fn unavailable(detail: String) -> Self {
        Self {
            backend: Some(detail),
            ..Self::new(ErrorCode::Unavailable)
        }
    }
}

impl ApiError {
    /// The one mapping to HTTP.
    fn problem(&self) -> Problem {
        use CheckoutError as K;
        use CouponError as C;
        use GradingError as G;
        use IssuanceError as I;
        use PointsError as P;
        match self {
            Self::InvalidField(f) | Self::Issuance(I::Invalid(f)) => Problem::invalid(f.field),
            Self::InvalidBodyField { field, .. } => Problem::invalid(field.as_str()),
            // A message without an id reaches the writer, never an HTTP route; it is bad input.
            Self::InvalidBody(_) | Self::Issuance(I::MessageWithoutId(_)) => Problem::new(ErrorCode::InvalidRequest),
            Self::PayloadTooLarge(_) => Problem::new(ErrorCode::PayloadTooLarge),
            Self::Unauthenticated => Problem::new(ErrorCode::Unauthorized),
            Self::KeyExpired => Problem::new(ErrorCode::KeyExpired),
            Self::NotFound(_) | Self::Issuance(I::CampaignNotFound) => Problem::new(ErrorCode::NotFound),
            Self::Issuance(I::AlreadyIssued { place, state }) => Problem {
                details: repeated_issue(place, state.as_ref()),
                ..Problem::new(ErrorCode::AlreadyIssued)
            },
            Self::Issuance(I::SoldOut) => Problem::new(ErrorCode::SoldOut),
            Self::Issuance(I::Paused) => Problem::new(ErrorCode::Paused),
            Self::Issuance(I::BelowReserved { .. }) => Problem {
                field: Some("totalQuantity".into()),
                ..Problem::new(ErrorCode::BelowReserved)
            },
            Self::Issuance(I::ChangeInProgress) => Problem::new(ErrorCode::ChangeInProgress),
            Self::Issuance(I::NotOpen) => Problem::new(ErrorCode::NotOpen),
            Self::Issuance(I::Ended) => Problem::new(ErrorCode::Ended),
            Self::Issuance(I::NotOnSale) => Problem::new(ErrorCode::NotOnSale),
            Self::Issuance(I::LimitExceeded(e)) => Problem::limit(e),
            // Not a backend detail: which campaign cannot sell, so the partner can tell the operator.
            Self::Issuance(I::Unprimed(_)) => Problem::new(ErrorCode::Unavailable),
            Self::Issuance(I::Unavailable(e)) => Problem::unavailable(e.to_string()),
            Self::Coupons(C::Invalid(f)) => Problem::invalid(f.field),
            Self::Coupons(C::NotFound) => Problem::new(ErrorCode::NotFound),
            Self::Coupons(C::AlreadyUsed) => Problem::new(ErrorCode::AlreadyUsed),
            Self::Coupons(C::NotUsed) => Problem::new(ErrorCode::NotUsed),
            Self::Coupons(C::Expired) => Problem::new(ErrorCode::Expired),
            Self::Coupons(C::Held) => Problem::new(ErrorCode::CouponHeld),
            Self::Coupons(C::Unavailable(e)) => Problem::unavailable(e.to_string()),
            Self::Points(P::Invalid(f)) => Problem::invalid(f.field),
            Self::Points(P::InsufficientPoints) => Problem::new(ErrorCode::InsufficientPoints),
            Self::Points(P::NotCancellable) => Problem::new(ErrorCode::NotCancellable),
            Self::Points(P::TransactionNotFound) => Problem::new(ErrorCode::NotFound),
            Self::Points(P::IdempotencyKeyReused) => Problem::new(ErrorCode::IdempotencyKeyReused),
            Self::Points(P::InProgress) => Problem::new(ErrorCode::InProgress),
            Self::Points(P::LimitExceeded(e)) => Problem::limit(e),
            Self::Points(P::Unavailable(e)) => Problem::unavailable(e.to_string()),
            Self::Grading(G::Invalid(f)) => Problem::invalid(f.field),
            Self::Grading(G::InvalidOrder(o)) => Problem::invalid(format!("orders[{}].{}", o.index, o.field)),
            Self::Grading(G::TooManyOrders(_)) => Problem::invalid("orders"),
            Self::Grading(G::OrderConflict(_)) => Problem::new(ErrorCode::OrderConflict),
            Self::Grading(G::LimitExceeded(e)) => Problem::limit(e),
            Self::Grading(G::UnknownCampaign { .. }) => Problem {
                field: Some("tiers.couponCampaignId".into()),
                ..Problem::new(ErrorCode::UnknownCampaign)
            },
            Self::Grading(G::NotRewardCampaign { .. }) => Problem {
                field: Some("tiers.couponCampaignId".into()),
                ..Problem::new(ErrorCode::NotRewardCampaign)
            },
            Self::Grading(G::NoPolicy) => Problem::new(ErrorCode::NoPolicy),
            Self::Grading(G::PolicyNotSet) => Problem::new(ErrorCode::NotFound),
            Self::Grading(G::MonthNotEnded(_)) => Problem {
                field: Some("month".into()),
                ..Problem::new(ErrorCode::MonthNotEnded)
            },
            Self::Grading(G::RunNotFound | G::NoFinishedRun) => Problem::new(ErrorCode::NotFound),
            Self::Grading(G::Unavailable(e)) => Problem::unavailable(e.to_string()),
            Self::Checkout(K::Invalid(f)) => Problem::invalid(f.field),
            Self::Checkout(K::HoldNotFound) => Problem::new(ErrorCode::NotFound),
            Self::Checkout(K::Coupon(C::NotFound)) => Problem {
                field: Some("couponId".into()),
                ..Problem::new(ErrorCode::NotFound)
            },
            Self::Checkout(K::Coupon(C::AlreadyUsed)) => Problem::new(ErrorCode::AlreadyUsed),
            Self::Checkout(K::Coupon(C::Held)) => Problem::new(ErrorCode::CouponHeld),
            Self::Checkout(K::Coupon(C::Expired)) => Problem::new(ErrorCode::Expired),
            Self::Checkout(K::Coupon(C::NotUsed | C::Invalid(_))) => Problem::new(ErrorCode::InvalidRequest),
            Self::Checkout(K::Coupon(C::Unavailable(e))) => Problem::unavailable(e.to_string()),
            Self::Checkout(K::InsufficientPoints) => Problem::new(ErrorCode::InsufficientPoints),
            Self::Checkout(K::OrderHeld) => Problem {
                field: Some("orderId".into()),
                ..Problem::new(ErrorCode::OrderHeld)
            },
            Self::Checkout(K::HoldExpired) => Problem::new(ErrorCode::HoldExpired),
            Self::Checkout(K::HoldConfirmed) => Problem::new(ErrorCode::HoldConfirmed),
            Self::Checkout(K::HoldReleased) => Problem::new(ErrorCode::HoldReleased),
            Self::Checkout(K::Unavailable(e)) => Problem::unavailable(e.to_string()),
            Self::Events(EventsError::Invalid(f)) => Problem::invalid(f.field),
            Self::Events(EventsError::UrlRefused(_)) => Problem {
                field: Some("url".into()),
                ..Problem::new(ErrorCode::WebhookUrlRefused)
            },
            Self::Events(EventsError::NotRegistered) => Problem::new(ErrorCode::NotFound),
            Self::Events(EventsError::Unavailable(e)) => Problem::unavailable(e.to_string()),
        }
    }

    pub fn into_response(self) -> Response<Body> {
        let problem = self.problem();
        let message = match &problem.backend {
            // Backend details stay in the logs, not in the answer.
            Some(detail) => {
                tracing::error!(code = problem.code.as_str(), %detail, "backing service unavailable");
                "temporarily unavailable, retry later".to_owned()
            }
            None => self.to_string(),
        };
        let mut body = serde_json::Map::new();
        body.insert("error".into(), problem.code.as_str().into());
        body.insert("message".into(), message.into());
        if let Some(field) = problem.field {
            body.insert("field".into(), field.into());
        }
        body.extend(problem.details);
        let body = serde_json::Value::Object(body);
        let status = problem.code.status();
        let mut response = json(status, &body);
        if problem.code.retry() == Retry::AfterRetryAfter {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
    }
}

/// Where a user's coupon of a campaign stands, as the status route answers it: `status`, with the
/// coupon's id once `ISSUED` and the reason once `REJECTED`.
pub fn issue_state_fields(state: &IssueState) -> serde_json::Map<String, serde_json::Value> {
    let (status, detail) = match state {
        IssueState::Issued { coupon_id } => (IssueStatus::Issued, Some(("couponId", coupon_id.to_string()))),
        IssueState::Pending => (IssueStatus::Pending, None),
        IssueState::Rejected(reason) => (IssueStatus::Rejected, Some(("reason", reason.as_str().to_owned()))),
        IssueState::None => (IssueStatus::None, None),
    };
    let mut fields = serde_json::Map::new();
    fields.insert("status".into(), serde_json::json!(status));
    if let Some((name, value)) = detail {
        fields.insert(name.into(), value.into());
    }
    fields
}

/// A repeated issue request's answer carries the first one's: its `requestId` and `rank` (when the
/// place knows them) and where the coupon stands now.
fn repeated_issue(place: &Place, state: Option<&IssueState>) -> serde_json::Map<String, serde_json::Value> {
    let mut fields = serde_json::Map::new();
    if let Some(request) = place.request_id {
        fields.insert("requestId".into(), request.to_string().into());
    }
    if let Some(rank) = place.rank {
        fields.insert("rank".into(), rank.into());
    }
    if let Some(state) = state {
        fields.extend(issue_state_fields(state));
    }
    fields
}

impl From<Unavailable> for ApiError {
    fn from(e: Unavailable) -> Self {
        Self::Issuance(IssuanceError::Unavailable(e))
    }
}

/// Counts an answer in `fcfs_http_requests_total` (route, method, status) and its time in
/// `fcfs_http_request_duration_seconds` (route, method). The route is the template's resource path
/// API Gateway names in the request context (`/v1/campaigns/{campaignId}`), never the raw path, so
/// ids do not multiply the series.
pub fn observe(req: &Request, response: &Response<Body>, started: std::time::Instant) {
    let route = matched_template(req).unwrap_or("unknown").to_owned();
    let method = req.method().as_str().to_owned();
    metrics::counter!(
        "fcfs_http_requests_total",
        "route" => route.clone(),
        "method" => method.clone(),
        "status" => response.status().as_str().to_owned()
    )
    .increment(1);
    metrics::histogram!("fcfs_http_request_duration_seconds", "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
}

/// The route template API Gateway matched this request to (`/v1/campaigns/{campaignId}`), as
/// `template.yaml` declares it: the proxy event's `resource`, which lambda_http exposes as the REST
/// request context's `resource_path` (the local runner fills both, as API Gateway does).
pub fn matched_template(req: &Request) -> Option<&str> {
    match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV1(ctx)) => ctx.resource_path.as_deref(),
        _ => None,
    }
}

/// Which of a function's `routes` (method, path template as `template.yaml` declares it, and the
/// function's name for it) this request is. A function dispatches on this and never reads the raw
/// path: the route was matched once, by API Gateway or the local runner, against the template.
pub fn route<R: Copy>(req: &Request, routes: &[(&str, &str, R)]) -> Option<R> {
    let method = req.method().as_str();
    let template = matched_template(req)?;
    routes
        .iter()
        .find(|(m, t, _)| *m == method && *t == template)
        .map(|(_, _, name)| *name)
}

pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let body = serde_json::to_string(value).unwrap_or_else(|_| r#"{"error":"INTERNAL"}"#.to_owned());
    let mut response = Response::new(Body::Text(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The authorizer context's field with the key's expiry (RFC 3339), when it has one.
pub const KEY_EXPIRES_AT: &str = "keyExpiresAt";

/// The partner the authorizer vouched for (`requestContext.authorizer.partnerId`). Every route
/// sits behind the authorizer, so a request without one never reached us through API Gateway:
/// it is refused rather than given some default owner. API Gateway answers from a cached Allow
/// for `ReauthorizeEvery`, so a key's expiry is enforced here, to the millisecond.
pub fn partner_id(req: &Request) -> Result<String, ApiError> {
    partner_id_at(req, chrono::Utc::now())
}

pub fn partner_id_at(req: &Request, now: chrono::DateTime<chrono::Utc>) -> Result<String, ApiError> {
    let Some(RequestContext::ApiGatewayV1(ctx)) = req.request_context_ref() else {
        return Err(ApiError::Unauthenticated);
    };
    let fields = &ctx.authorizer.fields;
    let Some(serde_json::Value::String(id)) = fields.get("partnerId").filter(|id| id.as_str() != Some("")) else {
        return Err(ApiError::Unauthenticated);
    };
    match fields.get(KEY_EXPIRES_AT) {
        None | Some(serde_json::Value::Null) => Ok(id.clone()),
        Some(serde_json::Value::String(at)) => match chrono::DateTime::parse_from_rfc3339(at) {
            Ok(at) if now < at => Ok(id.clone()),
            Ok(_) => Err(ApiError::KeyExpired),
            // Only our authorizer writes the context: what it cannot have written is refused.
            Err(_) => Err(ApiError::Unauthenticated),
        },
        Some(_) => Err(ApiError::Unauthenticated),
    }
}

pub fn path_param(req: &Request, name: &'static str) -> Option<String> {
    req.path_parameters_ref().and_then(|p| p.first(name)).map(str::to_owned)
}

/// Parses a JSON body of at most `max_bytes`, naming the offending field on failure.
pub fn json_body<T: DeserializeOwned>(req: &Request, max_bytes: usize) -> Result<T, ApiError> {
    let bytes: &[u8] = req.body().as_ref();
    if bytes.len() > max_bytes {
        return Err(ApiError::PayloadTooLarge(max_bytes));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::InvalidBody("a JSON body is required".into()));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            // serde_json calls some type errors syntax errors (a number or null where an enum's
            // name belongs): a body that is valid JSON is judged again from its value, which
            // names the field.
            if let Ok(json) = serde_json::from_slice::<serde_json::Value>(bytes)
                && let Err(e) = serde_path_to_error::deserialize::<_, T>(json)
            {
                return field_error(&e.path().to_string(), e.into_inner().to_string());
            }
            return ApiError::InvalidBody(format!("body is not valid JSON: {inner}"));
        }
        field_error(&path, inner.to_string())
    })?;
    // One JSON value and nothing after it but whitespace.
    de.end()
        .map_err(|e| ApiError::InvalidBody(format!("body is not valid JSON: {e}")))?;
    Ok(value)
}

/// The body member a deserialization error is about: serde names a missing or unknown field
/// only in its message.
fn field_error(path: &str, message: String) -> ApiError {
    let named = message.split('`').nth(1).filter(|_| message.contains(" field `"));
    let field = match (path, named) {
        (".", Some(name)) => name.to_owned(),
        (".", None) => "body".to_owned(),
        (p, Some(name)) if message.starts_with("missing") => format!("{p}.{name}"),
        (p, _) => p.to_owned(),
    };
    ApiError::InvalidBodyField { field, message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Body1 {
        user_id: String,
        nested: Option<Inner>,
    }
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        value: u32,
    }

    fn req(body: &str) -> Request {
        Request::new(Body::Text(body.to_owned()))
    }

    fn message(body: &str) -> String {
        json_body::<Body1>(&req(body), 100).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_field() {
        assert!(message("{}").starts_with("userId: missing field"));
        assert!(message(r#"{"userId":1}"#).starts_with("userId: invalid type"));
        assert!(message(r#"{"userId":"a","x":1}"#).starts_with("x: unknown field"));
        assert!(message(r#"{"userId":"a","nested":{"value":"no"}}"#).starts_with("nested.value: invalid type"));
        assert!(message("not json").starts_with("body is not valid JSON"));
        let answer = json_body::<Body1>(&req(r#"{"userId":"a","nested":{"value":"no"}}"#), 100)
            .unwrap_err()
            .into_response();
        let Body::Text(answer) = answer.body() else { panic!() };
        assert!(answer.contains(r#""field":"nested.value""#), "{answer}");
        assert!(message("").contains("required"));
        assert!(matches!(
            json_body::<Body1>(&req(&" ".repeat(101)), 100),
            Err(ApiError::PayloadTooLarge(100))
        ));
    }

    #[test]
    fn unavailable_answers_503_with_retry_after_and_no_details() {
        let r = ApiError::from(Unavailable::new("sqs", "secret host down")).into_response();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        let Body::Text(body) = r.body() else { panic!() };
        assert!(!body.contains("secret"));
        assert!(body.contains(r#""error":"UNAVAILABLE""#));
    }

    #[test]
    fn permanent_domain_errors_have_their_own_codes_and_no_retry_after() {
        for (e, status, code) in [
            (
                IssuanceError::AlreadyIssued {
                    place: Place::default(),
                    state: None,
                },
                409,
                "ALREADY_ISSUED",
            ),
            (IssuanceError::SoldOut, 410, "SOLD_OUT"),
            (IssuanceError::NotOpen, 422, "NOT_OPEN"),
            (IssuanceError::Ended, 422, "ENDED"),
            (IssuanceError::NotOnSale, 422, "NOT_ON_SALE"),
            (IssuanceError::CampaignNotFound, 404, "NOT_FOUND"),
        ] {
            let r = ApiError::from(e).into_response();
            assert_eq!(r.status(), status);
            assert!(r.headers().get(header::RETRY_AFTER).is_none());
            let Body::Text(body) = r.body() else { panic!() };
            assert!(body.contains(code), "{body}");
        }
        let invalid = ApiError::from(IssuanceError::Invalid(InvalidField::new(
            "issueStartsAt",
            "out of range",
        )));
        let Body::Text(body) = invalid.into_response().into_body() else {
            panic!()
        };
        assert!(body.contains(r#""field":"issueStartsAt""#), "{body}");
        let unprimed = ApiError::from(IssuanceError::Unprimed(7)).into_response();
        assert_eq!(unprimed.status(), 503);
        assert_eq!(unprimed.headers()[header::RETRY_AFTER], "1");
        let Body::Text(body) = unprimed.into_body() else {
            panic!()
        };
        assert!(
            body.contains("campaign 7 cannot issue now"),
            "the body names the campaign: {body}"
        );
    }

    #[test]
    fn a_repeated_issue_request_is_answered_with_the_first_answer() {
        let request = uuid::Uuid::now_v7();
        let answer = |state| {
            let r = ApiError::from(IssuanceError::AlreadyIssued {
                place: Place::of(request, 7),
                state,
            })
            .into_response();
            assert_eq!(r.status(), 409);
            let Body::Text(body) = r.into_body() else { panic!() };
            serde_json::from_str::<serde_json::Value>(&body).unwrap()
        };
        let issued = answer(Some(IssueState::Issued { coupon_id: 12 }));
        assert_eq!(issued["error"], "ALREADY_ISSUED");
        assert_eq!(issued["requestId"], request.to_string());
        assert_eq!(issued["rank"], 7);
        assert_eq!(issued["status"], "ISSUED");
        assert_eq!(issued["couponId"], "12");
        assert_eq!(answer(Some(IssueState::Pending))["status"], "PENDING");
        assert!(answer(None).get("status").is_none(), "Redis did not say");
    }

    #[test]
    fn the_mapping_answers_503_exactly_for_what_the_context_calls_transient() {
        for e in [
            IssuanceError::Invalid(InvalidField::new("x", "y")),
            IssuanceError::CampaignNotFound,
            IssuanceError::AlreadyIssued {
                place: Place::default(),
                state: None,
            },
            IssuanceError::SoldOut,
            IssuanceError::NotOpen,
            IssuanceError::Ended,
            IssuanceError::NotOnSale,
            IssuanceError::Unprimed(1),
            IssuanceError::MessageWithoutId(0),
            IssuanceError::Unavailable(Unavailable::new("redis", "down")),
        ] {
            let transient = e.is_transient();
            let status = ApiError::from(e).problem().code.status();
            assert_eq!(status == StatusCode::SERVICE_UNAVAILABLE, transient, "{status}");
        }
    }

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Route {
        Get,
        Use,
        CancelUse,
    }

    const ROUTES: &[(&str, &str, Route)] = &[
        ("GET", "/v1/coupons/{couponId}", Route::Get),
        ("POST", "/v1/coupons/{couponId}/use", Route::Use),
        ("POST", "/v1/coupons/{couponId}/cancel-use", Route::CancelUse),
    ];

    fn routed(method: &str, template: Option<&str>, path: &str) -> Request {
        let mut req = crate::testkit::gateway_request(method, "/", &[("couponId", "7")], "", Some("acme"));
        *req.uri_mut() = path.parse().unwrap();
        let Some(RequestContext::ApiGatewayV1(mut ctx)) = req.request_context_ref().cloned() else {
            panic!("a REST request")
        };
        ctx.resource_path = template.map(str::to_owned);
        req.with_request_context(RequestContext::ApiGatewayV1(ctx))
    }

    #[test]
    fn the_route_is_the_matched_template_and_method_never_the_path() {
        let cancel = routed(
            "POST",
            Some("/v1/coupons/{couponId}/cancel-use"),
            "/v1/coupons/7/cancel-use",
        );
        assert_eq!(matched_template(&cancel), Some("/v1/coupons/{couponId}/cancel-use"));
        assert_eq!(route(&cancel, ROUTES), Some(Route::CancelUse));
        // The path is not read: only what the gateway matched counts.
        let odd = routed("POST", Some("/v1/coupons/{couponId}/use"), "/v1/coupons/7/cancel-use");
        assert_eq!(route(&odd, ROUTES), Some(Route::Use));
        // A template of this function with another method, or another function's template.
        assert_eq!(
            route(&routed("GET", Some("/v1/coupons/{couponId}/use"), "/x"), ROUTES),
            None
        );
        assert_eq!(
            route(&routed("GET", Some("/v1/coupons/{couponId}/x"), "/x"), ROUTES),
            None
        );
        assert_eq!(
            route(&routed("GET", Some("/v1/users/{userId}/coupons"), "/x"), ROUTES),
            None
        );
    }

    #[test]
    fn a_request_without_a_matched_template_is_no_route() {
        let bare = routed("GET", None, "/v1/coupons/7");
        assert_eq!(matched_template(&bare), None);
        assert_eq!(route(&bare, ROUTES), None);
    }

    #[test]
    fn partner_comes_from_the_authorizer_context_only() {
        assert!(matches!(partner_id(&req("")), Err(ApiError::Unauthenticated)));
        assert_eq!(ApiError::Unauthenticated.into_response().status(), 401);
        let r = crate::testkit::gateway_request(
            "GET",
            "/v1/campaigns/{campaignId}",
            &[("campaignId", "7")],
            "",
            Some("acme"),
        );
        assert_eq!(partner_id(&r).unwrap(), "acme");
        assert_eq!(path_param(&r, "campaignId").as_deref(), Some("7"));
    }

    #[test]
    fn an_expired_key_is_refused_though_api_gateway_cached_its_allow() {
        let now = chrono::Utc::now();
        let with_expiry = |at: serde_json::Value| {
            let r = crate::testkit::gateway_request("GET", "/v1/coupons", &[], "", Some("acme"));
            let Some(RequestContext::ApiGatewayV1(mut ctx)) = r.request_context_ref().cloned() else {
                panic!("a REST API request")
            };
            ctx.authorizer.fields.insert(KEY_EXPIRES_AT.into(), at);
            r.with_request_context(RequestContext::ApiGatewayV1(ctx))
        };
        let at = |d: chrono::Duration| (now + d).to_rfc3339_opts(chrono::SecondsFormat::Millis, true).into();
        let ms = chrono::Duration::milliseconds(1);
        assert_eq!(partner_id_at(&with_expiry(at(ms)), now).unwrap(), "acme");
        assert!(matches!(
            partner_id_at(&with_expiry(at(chrono::Duration::zero())), now),
            Err(ApiError::KeyExpired)
        ));
        assert!(matches!(
            partner_id_at(&with_expiry(at(-ms)), now),
            Err(ApiError::KeyExpired)
        ));
        assert_eq!(ApiError::KeyExpired.into_response().status(), 403);
        for forged in [
            serde_json::json!("tomorrow"),
            serde_json::json!(17),
            serde_json::json!({}),
        ] {
            assert!(matches!(
                partner_id_at(&with_expiry(forged), now),
                Err(ApiError::Unauthenticated)
            ));
        }
        assert_eq!(
            partner_id_at(&with_expiry(serde_json::Value::Null), now).unwrap(),
            "acme"
        );
    }
}
