//! The runner's metrics: the functions record through the `metrics` facade, and here, unlike on
//! Lambda, a Prometheus recorder collects them for `GET /metrics` on the runner's own port
//! (outside `/v1`, no key: it is bound to 127.0.0.1 like everything else).

use std::sync::OnceLock;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's recorder, installed by the first runner of the process (a recorder is global:
/// every runner a process starts shares it). `None` if something else installed one first.
pub fn recorder() -> Option<&'static PrometheusHandle> {
    RECORDER
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "another metrics recorder is installed: GET /metrics will answer 503");
                None
            }
        })
        .as_ref()
}

/// `GET /metrics`: Prometheus's text format.
pub async fn page() -> Response {
    match recorder() {
        Some(handle) => {
            handle.run_upkeep();
            let mut response = handle.render().into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            response
        }
        None => (StatusCode::SERVICE_UNAVAILABLE, "no metrics recorder").into_response(),
    }
}
