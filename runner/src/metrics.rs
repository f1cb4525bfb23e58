//! The runner's metrics: the functions record through the `metrics` facade, and here, unlike on
//! Lambda, a Prometheus recorder collects them for `GET /metrics` on the runner's own port
//! (outside `/v1`, no key: it is bound to 127.0.0.1 like everything else).

use std::sync::OnceLock;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's recorder, installed by the first runner of the process (a recorder is global:
/// every runner a process starts shares it). `None` if something else installed one first.
pub fn recorder() -> Option<&'static PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            match PrometheusBuilder::new()
                // Histograms with buckets, so Prometheus can take quantiles across series
                // (`histogram_quantile`): durations from 1 ms to 10 s, batch sizes from 1 to 10,000.
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".into()),
                    &[
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    ],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("fcfs_writer_batch_size".into()),
                        &[1.0, 10.0, 100.0, 1_000.0, 10_000.0],
                    )
                })
                .and_then(|b| b.install_recorder())
            {
                Ok(handle) => Some(handle),
                Err(e) => {
                    tracing::warn!(error = %e, "another metrics recorder is installed: GET /metrics will answer 503");
                    None
                }
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
