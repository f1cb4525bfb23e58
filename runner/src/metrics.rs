//! The runner's metrics: the functions record through the `metrics` facade, and here, unlike on
//! Lambda, a Prometheus recorder collects them for `GET /metrics` on the runner's own port
//! (outside `/v1`, no key: it is bound to 127.0.0.1 like everything else).

use std::sync::OnceLock;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;

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

/// How often the queues' depths are read.
pub const QUEUE_WATCH_EVERY: Duration = Duration::from_secs(5);
/// The deadline of one read.
const QUEUE_READ_DEADLINE: Duration = Duration::from_secs(2);

/// Every `QUEUE_WATCH_EVERY`, each queue's messages as `fcfs_queue_messages{queue, state}` (gauge;
/// `state`: `visible`, waiting to be received, or `in_flight`, received and not yet deleted), what
/// SQS publishes to CloudWatch by itself on AWS. Until `stop`.
pub(crate) async fn watch_queues(
    sqs: aws_sdk_sqs::Client,
    queues: Vec<(String, String)>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        for (name, url) in &queues {
            let read = sqs
                .get_queue_attributes()
                .queue_url(url)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                .send();
            match tokio::time::timeout(QUEUE_READ_DEADLINE, read).await {
                Ok(Ok(out)) => {
                    let attributes = out.attributes();
                    for (attribute, state) in [
                        (QueueAttributeName::ApproximateNumberOfMessages, "visible"),
                        (QueueAttributeName::ApproximateNumberOfMessagesNotVisible, "in_flight"),
                    ] {
                        if let Some(count) = attributes
                            .and_then(|a| a.get(&attribute))
                            .and_then(|v| v.parse::<f64>().ok())
                        {
                            ::metrics::gauge!("fcfs_queue_messages", "queue" => name.clone(), "state" => state)
                                .set(count);
                        }
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(queue = name, error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "queue depth not read")
                }
                Err(_) => tracing::warn!(queue = name, "queue depth not read within {QUEUE_READ_DEADLINE:?}"),
            }
        }
        tokio::select! {
            _ = stop.changed() => {}
            _ = tokio::time::sleep(QUEUE_WATCH_EVERY) => {}
        }
    }
}
