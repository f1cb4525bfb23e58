//! API Gateway (REST, proxy integration) as the functions see it: route matching, the REQUEST
//! authorizer with its result cache, the proxy event, and API Gateway's own error answers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use aws_lambda_events::apigw::{
    ApiGatewayCustomAuthorizerRequestTypeRequest, ApiGatewayCustomAuthorizerResponse, ApiGatewayProxyRequest,
    ApiGatewayProxyRequestContext,
};
use aws_lambda_events::iam::IamPolicyEffect;
use aws_lambda_events::query_map::QueryMap;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use axum::response::Response;
use base64::Engine;
use lambda_http::request::LambdaRequest;

use crate::functions::{AuthorizerFunction, HttpFunction, LocalFunction};
use crate::gateway_responses::{GatewayResponses, Kind};
use crate::metrics::FunctionMeter;
use crate::throttle::Throttles;
use crate::{LocalApp, Stats};

/// API Gateway's payload limit.
const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;
const ACCOUNT_ID: &str = "000000000000";
const API_ID: &str = "local";

enum Segment {
    Literal(String),
    Param(String),
}

struct Route {
    method: Method,
    resource: String,
    segments: Vec<Segment>,
    function: Arc<dyn HttpFunction>,
    /// The function's logical id, for its metrics.
    function_id: String,
    meter: FunctionMeter,
}

impl Route {
    /// Path parameters if a request path, split by `path_parts`, matches this route's template.
    fn matches(&self, method: &Method, parts: &[&str]) -> Option<HashMap<String, String>> {
        if method != self.method || parts.len() != self.segments.len() {
            return None;
        }
        let mut params = HashMap::new();
        for (segment, &part) in self.segments.iter().zip(parts) {
            match segment {
                Segment::Literal(l) if l == part => {}
                Segment::Param(name) if !part.is_empty() => {
                    let value = percent_encoding::percent_decode_str(part).decode_utf8().ok()?;
                    params.insert(name.clone(), value.into_owned());
                }
                _ => return None,
            }
        }
        Some(params)
    }
}

/// A request path's segments, split once for every route it is matched against.
fn path_parts(path: &str) -> Vec<&str> {
    path.trim_matches('/').split('/').collect()
}

struct Authorizer {
    function: Arc<dyn AuthorizerFunction>,
    function_id: String,
    meter: FunctionMeter,
    header: HeaderName,
    /// API Gateway's result cache, keyed by the identity value; `None` when `ReauthorizeEvery` is 0.
    cache: Option<moka::future::Cache<String, Arc<ApiGatewayCustomAuthorizerResponse>>>,
}

struct Gateway {
    routes: Vec<Route>,
    authorizer: Option<Authorizer>,
    stage: String,
    region: String,
    stats: Arc<Stats>,
    responses: GatewayResponses,
    throttles: Throttles,
}

pub(crate) fn router(app: &LocalApp) -> axum::Router {
    // Before the functions' meters are registered, so they are the installed recorder's.
    crate::metrics::recorder();
    let http = |id: &str| match app.functions.get(id) {
        Some(LocalFunction::Http(f)) => f.clone(),
        _ => unreachable!("checked by check_kinds"),
    };
    let routes = app
        .routes
        .iter()
        .map(|r| Route {
            method: r.method.parse().unwrap_or(Method::GET),
            resource: r.path.clone(),
            segments: r
                .path
                .trim_matches('/')
                .split('/')
                .map(|s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Some(name) => Segment::Param(name.to_owned()),
                    None => Segment::Literal(s.to_owned()),
                })
                .collect(),
            function: http(&r.function),
            function_id: r.function.clone(),
            meter: FunctionMeter::new(&r.function),
        })
        .collect();
    let authorizer = app.api.authorizer.as_ref().map(|spec| Authorizer {
        function: match app.functions.get(&spec.function_logical_id) {
            Some(LocalFunction::Authorizer(f)) => f.clone(),
            _ => unreachable!("checked by check_kinds"),
        },
        function_id: spec.function_logical_id.clone(),
        meter: FunctionMeter::new(&spec.function_logical_id),
        header: HeaderName::from_bytes(spec.identity_header.to_ascii_lowercase().as_bytes())
            .unwrap_or(HeaderName::from_static("x-api-key")),
        cache: (spec.reauthorize_every_secs > 0).then(|| {
            moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(spec.reauthorize_every_secs as u64))
                .build()
        }),
    });
    let gateway = Gateway {
        routes,
        authorizer,
        stage: app.api.stage.clone(),
        region: app.region.clone(),
        stats: app.stats.clone(),
        responses: GatewayResponses::new(app.api.gateway_responses.clone()),
        throttles: if app.throttle {
            Throttles::new(app.api.stage_throttle, app.api.key_throttle)
        } else {
            Throttles::none()
        },
    };
    axum::Router::new()
        .route("/metrics", axum::routing::get(crate::metrics::page))
        .route("/dashboard", axum::routing::get(crate::metrics::dashboard))
        .fallback(serve)
        .with_state(Arc::new(gateway))
}

/// A request id as API Gateway's look (a UUID): a random prefix drawn once per process and a
/// counter, so no request waits on the kernel's random source (a UUID v4 per request was 1.5 % of
/// the runner's samples on the sold-out path).
fn request_id() -> String {
    static PREFIX: std::sync::OnceLock<[u8; 8]> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| uuid::Uuid::new_v4().as_u64_pair().0.to_be_bytes());
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(prefix);
    bytes[8..].copy_from_slice(&NEXT.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
    id.hyphenated()
        .encode_lower(&mut uuid::Uuid::encode_buffer())
        .to_owned()
}

/// `arn:aws:execute-api:{region}:{account}:{api}/{stage}/{METHOD}{path}`, as API Gateway passes it
/// to an authorizer.
pub fn method_arn(region: &str, stage: &str, method: &str, path: &str) -> String {
    format!("arn:aws:execute-api:{region}:{ACCOUNT_ID}:{API_ID}/{stage}/{method}{path}")
}

async fn serve(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let started = Instant::now();
    let request_id = request_id();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let mut response = gw.answer(request, &request_id, peer).await;
    if let Ok(id) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-amzn-requestid", id);
    }
    gw.stats.requests.fetch_add(1, Ordering::Relaxed);
    tracing::info!(
        request_id,
        method = %method,
        path,
        status = response.status().as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    response
}

impl Gateway {
    async fn answer(&self, request: Request, request_id: &str, peer: SocketAddr) -> Response {
        let (parts, body) = request.into_parts();
        let path_parts = path_parts(parts.uri.path());
        let Some((route, params)) = self
            .routes
            .iter()
            .find_map(|r| r.matches(&parts.method, &path_parts).map(|p| (r, p)))
        else {
            return self.responses.answer(Kind::MissingAuthenticationToken, request_id);
        };
        if !self.throttles.stage_admits() {
            return self.responses.answer(Kind::Throttled, request_id);
        }
        let arn = method_arn(&self.region, &self.stage, parts.method.as_str(), parts.uri.path());
        let context = match &self.authorizer {
            None => None,
            Some(auth) => match self.authorize(auth, &parts, route, &params, &arn, request_id).await {
                Ok(context) => Some(context),
                Err(denied) => return denied,
            },
        };
        // The usage plan meters the key the authorizer returned (one per partner).
        let key = context.as_ref().and_then(|c| c.usage_identifier_key.as_deref());
        if key.is_some_and(|key| !self.throttles.key_admits(key)) {
            return self.responses.answer(Kind::Throttled, request_id);
        }
        let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
            Ok(b) => b,
            Err(_) => {
                return self.responses.answer(Kind::RequestTooLarge, request_id);
            }
        };
        let event = self.proxy_event(&parts, route, params, body, context.as_deref(), request_id, peer);
        let http_request: lambda_http::Request = LambdaRequest::ApiGatewayV1(event).into();
        let function = route.function.clone();
        let meter = route.meter.clone();
        let stats = self.stats.clone();
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        // Spawned, so the invocation completes even if the client goes away; a panicking function
        // is a crashed Lambda: API Gateway answers 502.
        let invocation = tokio::spawn(async move {
            let started = std::time::Instant::now();
            let response = function.invoke(http_request).await;
            meter.invoked(started.elapsed());
            if response.status().is_success() {
                stats.successes.fetch_add(1, Ordering::Relaxed);
            }
            stats.in_flight.fetch_sub(1, Ordering::Relaxed);
            response
        });
        match invocation.await {
            Ok(response) => into_axum(response),
            Err(e) => {
                self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
                crate::metrics::function_failed(&route.function_id);
                tracing::error!(request_id, error = %e, "function failed");
                self.responses.answer(Kind::IntegrationFailure, request_id)
            }
        }
    }

    /// Runs the authorizer as API Gateway does; `Ok` carries the context for the function.
    async fn authorize(
        &self,
        auth: &Authorizer,
        parts: &axum::http::request::Parts,
        route: &Route,
        params: &HashMap<String, String>,
        arn: &str,
        request_id: &str,
    ) -> Result<Arc<ApiGatewayCustomAuthorizerResponse>, Response> {
        let unauthorized = || self.responses.answer(Kind::Unauthorized, request_id);
        let headers = &parts.headers;
        // A missing or empty identity source is refused without invoking the authorizer.
        let identity = match headers.get(&auth.header).map(|v| v.to_str()) {
            Some(Ok(v)) if !v.is_empty() => v.to_owned(),
            Some(Err(_)) => String::from_utf8_lossy(headers[&auth.header].as_bytes()).into_owned(),
            _ => return Err(unauthorized()),
        };
        let invoke = async {
            self.stats.authorizer_invocations.fetch_add(1, Ordering::Relaxed);
            let mut event = ApiGatewayCustomAuthorizerRequestTypeRequest::default();
            event.type_ = Some("REQUEST".to_owned());
            event.method_arn = Some(arn.to_owned());
            // As in the proxy event: `resource` is the route's template, `path` the request's.
            event.resource = Some(route.resource.clone());
            event.path = Some(parts.uri.path().to_owned());
            event.http_method = Some(parts.method.clone());
            event.headers = headers.clone();
            event.path_parameters = params.clone();
            event.query_string_parameters = query_map(parts.uri.query());
            event.request_context.request_id = Some(request_id.to_owned());
            event.request_context.resource_path = Some(route.resource.clone());
            event.request_context.stage = Some(self.stage.clone());
            event.request_context.http_method = Some(parts.method.clone());
            event.request_context.apiid = Some(API_ID.to_owned());
            event.request_context.account_id = Some(ACCOUNT_ID.to_owned());
            let started = std::time::Instant::now();
            let outcome = auth.function.invoke(event).await.map(Arc::new);
            auth.meter.invoked(started.elapsed());
            outcome
        };
        let outcome = match &auth.cache {
            Some(cache) => cache.try_get_with(identity, invoke).await.map_err(|e| (*e).clone()),
            None => invoke.await,
        };
        let response = match outcome {
            Ok(r) => r,
            Err(message) if message == "Unauthorized" => return Err(unauthorized()),
            Err(message) => {
                crate::metrics::function_failed(&auth.function_id);
                tracing::error!(request_id, error = %message, "authorizer failed");
                return Err(self.responses.answer(Kind::AuthorizerConfigurationError, request_id));
            }
        };
        if policy_allows(&response, arn) {
            Ok(response)
        } else {
            Err(self.responses.answer(Kind::AccessDenied, request_id))
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn proxy_event(
        &self,
        parts: &axum::http::request::Parts,
        route: &Route,
        params: HashMap<String, String>,
        body: Bytes,
        authorizer: Option<&ApiGatewayCustomAuthorizerResponse>,
        request_id: &str,
        peer: SocketAddr,
    ) -> ApiGatewayProxyRequest {
        let path = parts.uri.path().to_owned();
        let mut context = ApiGatewayProxyRequestContext::default();
        context.account_id = Some(ACCOUNT_ID.to_owned());
        context.apiid = Some(API_ID.to_owned());
        context.stage = Some(self.stage.clone());
        context.request_id = Some(request_id.to_owned());
        context.resource_path = Some(route.resource.clone());
        context.path = Some(format!("/{}{path}", self.stage));
        context.http_method = parts.method.clone();
        context.protocol = Some(format!("{:?}", parts.version));
        context.request_time_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        context.identity.source_ip = Some(peer.ip().to_string());
        context.identity.user_agent = parts
            .headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if let Some(auth) = authorizer {
            if let serde_json::Value::Object(fields) = &auth.context {
                context
                    .authorizer
                    .fields
                    .extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            if let Some(principal) = &auth.principal_id {
                context
                    .authorizer
                    .fields
                    .insert("principalId".to_owned(), principal.clone().into());
            }
        }
        // Without binary media types, API Gateway passes text; other bytes arrive base64-encoded.
        let (body, is_base64_encoded) = match std::str::from_utf8(&body) {
            _ if body.is_empty() => (None, false),
            Ok(text) => (Some(text.to_owned()), false),
            Err(_) => (Some(base64::engine::general_purpose::STANDARD.encode(&body)), true),
        };
        let mut single = HeaderMap::new();
        for (name, value) in &parts.headers {
            single.insert(name.clone(), value.clone());
        }
        let mut event = ApiGatewayProxyRequest::default();
        event.resource = Some(route.resource.clone());
        event.path = Some(path);
        event.http_method = parts.method.clone();
        event.headers = single;
        event.multi_value_headers = parts.headers.clone();
        event.query_string_parameters = query_map(parts.uri.query());
        event.multi_value_query_string_parameters = query_map(parts.uri.query());
        event.path_parameters = params;
        event.request_context = context;
        event.body = body;
        event.is_base64_encoded = is_base64_encoded;
        event
    }
}

fn query_map(query: Option<&str>) -> QueryMap {
    let mut map: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        map.entry(k.into_owned()).or_default().push(v.into_owned());
    }
    QueryMap::from(map)
}

/// IAM evaluation as API Gateway applies an authorizer's policy to one method ARN: an explicit
/// Deny wins, otherwise some Allow must match.
fn policy_allows(response: &ApiGatewayCustomAuthorizerResponse, arn: &str) -> bool {
    let mut allowed = false;
    for statement in &response.policy_document.statement {
        let action = statement
            .action
            .iter()
            .any(|a| matches!(a.as_str(), "*" | "execute-api:*" | "execute-api:Invoke"));
        let resource = statement.resource.iter().any(|pattern| glob(pattern, arn));
        if action && resource {
            match statement.effect {
                IamPolicyEffect::Deny => return false,
                IamPolicyEffect::Allow => allowed = true,
                _ => {}
            }
        }
    }
    allowed
}

/// IAM resource wildcards: `*` any run of characters, `?` one character.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn into_axum(response: lambda_http::Response<lambda_http::Body>) -> Response {
    let (parts, body) = response.into_parts();
    let bytes = match body {
        lambda_http::Body::Empty => Bytes::new(),
        lambda_http::Body::Text(t) => Bytes::from(t),
        lambda_http::Body::Binary(b) => Bytes::from(b),
        _ => Bytes::new(),
    };
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_distinct_uuids() {
        let (a, b) = (request_id(), request_id());
        assert_ne!(a, b);
        for id in [a, b] {
            let parsed = uuid::Uuid::parse_str(&id).unwrap();
            assert_eq!(parsed.get_version_num(), 4);
            assert_eq!(parsed.hyphenated().to_string(), id);
        }
    }

    #[test]
    fn globs_follow_iam() {
        assert!(glob("arn:x:api/local/*", "arn:x:api/local/GET/v1/campaigns/1"));
        assert!(glob("*", "anything"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("arn:x:api/dev/*", "arn:x:api/local/GET/v1"));
        assert!(!glob("a?c", "ac"));
    }

    #[test]
    fn routes_match_templates() {
        struct Nothing;
        #[async_trait::async_trait]
        impl HttpFunction for Nothing {
            async fn invoke(&self, _: lambda_http::Request) -> lambda_http::Response<lambda_http::Body> {
                unreachable!()
            }
        }
        let route = Route {
            method: Method::GET,
            resource: "/v1/campaigns/{campaignId}/issues/{userId}".into(),
            segments: vec![
                Segment::Literal("v1".into()),
                Segment::Literal("campaigns".into()),
                Segment::Param("campaignId".into()),
                Segment::Literal("issues".into()),
                Segment::Param("userId".into()),
            ],
            function: Arc::new(Nothing),
            function_id: "Nothing".into(),
            meter: FunctionMeter::new("Nothing"),
        };
        let params = route
            .matches(&Method::GET, &path_parts("/v1/campaigns/7/issues/u%2D1"))
            .unwrap();
        assert_eq!(params["campaignId"], "7");
        assert_eq!(params["userId"], "u-1");
        assert!(
            route
                .matches(&Method::POST, &path_parts("/v1/campaigns/7/issues/u"))
                .is_none()
        );
        assert!(
            route
                .matches(&Method::GET, &path_parts("/v1/campaigns/7/issues"))
                .is_none()
        );
        assert!(
            route
                .matches(&Method::GET, &path_parts("/v1/campaigns//issues/u"))
                .is_none()
        );
    }
}
