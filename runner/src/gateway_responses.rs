//! API Gateway's own answers (no route, no or a denied key, a body too large, a rate exceeded, a
//! failed authorizer or function): the template's `GatewayResponses` where it sets one, else
//! API Gateway's built-in answer, picked as API Gateway picks them (the response type, then
//! `DEFAULT_4XX` / `DEFAULT_5XX`).

use std::collections::BTreeMap;

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use fcfs_template::GatewayResponseSpec;

/// The response types the runner answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    MissingAuthenticationToken,
    Unauthorized,
    AccessDenied,
    RequestTooLarge,
    Throttled,
    AuthorizerConfigurationError,
    /// The function crashed (API Gateway's `INTEGRATION_FAILURE`, a `DEFAULT_5XX`).
    IntegrationFailure,
}

impl Kind {
    pub(crate) fn response_type(self) -> &'static str {
        match self {
            Self::MissingAuthenticationToken => "MISSING_AUTHENTICATION_TOKEN",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::AccessDenied => "ACCESS_DENIED",
            Self::RequestTooLarge => "REQUEST_TOO_LARGE",
            Self::Throttled => "THROTTLED",
            Self::AuthorizerConfigurationError => "AUTHORIZER_CONFIGURATION_ERROR",
            Self::IntegrationFailure => "INTEGRATION_FAILURE",
        }
    }

    /// API Gateway's built-in status, body and `x-amzn-ErrorType`.
    fn built_in(self) -> (StatusCode, serde_json::Value, &'static str) {
        use serde_json::json;
        match self {
            Self::MissingAuthenticationToken => (
                StatusCode::FORBIDDEN,
                json!({"message": "Missing Authentication Token"}),
                "MissingAuthenticationTokenException",
            ),
            Self::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                json!({"message": "Unauthorized"}),
                "UnauthorizedException",
            ),
            Self::AccessDenied => (
                StatusCode::FORBIDDEN,
                json!({"Message": "User is not authorized to access this resource with an explicit deny"}),
                "AccessDeniedException",
            ),
            Self::RequestTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"message": "Request Too Long"}),
                "RequestTooLongException",
            ),
            Self::Throttled => (
                StatusCode::TOO_MANY_REQUESTS,
                json!({"message": "Too Many Requests"}),
                "TooManyRequestsException",
            ),
            Self::AuthorizerConfigurationError => (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"message": null}),
                "AuthorizerConfigurationException",
            ),
            Self::IntegrationFailure => (
                StatusCode::BAD_GATEWAY,
                json!({"message": "Internal server error"}),
                "InternalServerErrorException",
            ),
        }
    }
}

/// The template's `GatewayResponses`.
pub(crate) struct GatewayResponses(BTreeMap<String, GatewayResponseSpec>);

impl GatewayResponses {
    pub(crate) fn new(specs: BTreeMap<String, GatewayResponseSpec>) -> Self {
        Self(specs)
    }

    pub(crate) fn answer(&self, kind: Kind, request_id: &str) -> Response {
        let (status, body, error_type) = kind.built_in();
        let fallback = if status.is_client_error() {
            "DEFAULT_4XX"
        } else {
            "DEFAULT_5XX"
        };
        let spec = self.0.get(kind.response_type()).or_else(|| self.0.get(fallback));
        let status = spec
            .and_then(|s| s.status)
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(status);
        // Static text: API Gateway fills in `$context` variables and nothing else.
        let body = match spec.and_then(|s| s.json_template.as_deref()) {
            Some(template) => template.replace("$context.requestId", request_id),
            None => body.to_string(),
        };
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert("x-amzn-errortype", HeaderValue::from_static(error_type));
        for (name, value) in spec.map_or(&[][..], |s| s.headers.as_slice()) {
            if let (Ok(name), Ok(value)) = (
                HeaderName::try_from(name.as_str()),
                HeaderValue::try_from(value.as_str()),
            ) {
                headers.insert(name, value);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(status: Option<u16>, template: &str) -> GatewayResponseSpec {
        GatewayResponseSpec {
            status,
            headers: vec![("Retry-After".into(), "1".into())],
            json_template: Some(template.into()),
        }
    }

    #[tokio::test]
    async fn the_template_answers_where_it_sets_a_response_and_api_gateway_elsewhere() {
        let responses = GatewayResponses::new(BTreeMap::from([
            (
                "MISSING_AUTHENTICATION_TOKEN".to_owned(),
                spec(Some(404), r#"{"error":"NOT_FOUND","requestId":"$context.requestId"}"#),
            ),
            ("DEFAULT_5XX".to_owned(), spec(None, r#"{"error":"INTERNAL"}"#)),
        ]));
        let body = |r: Response| async move {
            let bytes = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
            String::from_utf8(bytes.to_vec()).unwrap()
        };
        let missing = responses.answer(Kind::MissingAuthenticationToken, "req-1");
        assert_eq!(missing.status(), 404);
        assert_eq!(missing.headers()["retry-after"], "1");
        assert_eq!(body(missing).await, r#"{"error":"NOT_FOUND","requestId":"req-1"}"#);
        let crashed = responses.answer(Kind::IntegrationFailure, "req-2");
        assert_eq!(crashed.status(), 502, "DEFAULT_5XX keeps the type's status");
        assert_eq!(body(crashed).await, r#"{"error":"INTERNAL"}"#);
        let denied = responses.answer(Kind::Unauthorized, "req-3");
        assert_eq!(denied.status(), 401);
        assert_eq!(body(denied).await, r#"{"message":"Unauthorized"}"#, "not set: built in");
    }
}
