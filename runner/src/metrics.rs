//! The runner's metrics: the functions record through the `metrics` facade, and here, unlike on
//! Lambda, a Prometheus recorder collects them for `GET /metrics` on the runner's own port
//! (outside `/v1`, no key: it is bound to 127.0.0.1 like everything else).

use std::sync::OnceLock;
use std::time::Duration;

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, QueueAttributeName};

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
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            // The dashboard times its rates by this rather than the browser's clock, which a
            // headless screenshot fast-forwards.
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            headers.insert("x-scraped-at-ms", HeaderValue::from(now_ms as u64));
            response
        }
        None => (StatusCode::SERVICE_UNAVAILABLE, "no metrics recorder").into_response(),
    }
}

/// `GET /dashboard`: one page, no external resources, that polls `/metrics` every 2 s and draws
/// requests/s by status, issue decisions/s, p50/p99, queue depths and writer rows/s.
pub async fn dashboard() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        include_str!("dashboard.html"),
    )
        .into_response()
}

/// How often the queues' depths are read, unless `FCFS_QUEUE_WATCH_SECS` says otherwise.
pub const QUEUE_WATCH_EVERY: Duration = Duration::from_secs(5);
/// The deadline of one read.
const QUEUE_READ_DEADLINE: Duration = Duration::from_secs(2);

/// A queue whose depth the runner reports.
pub(crate) struct WatchedQueue {
    pub name: String,
    pub url: String,
    /// An event source polls it: the poller reports its oldest message's age as it receives
    /// (see [`record_oldest_age`]). A peek here would count as a receive and could send the
    /// message to the DLQ early.
    pub consumed: bool,
}

/// Every `every`, each queue's messages as `fcfs_queue_messages{queue, state}` (gauge; `state`:
/// `visible`, waiting to be received, or `in_flight`, received and not yet deleted), what SQS
/// publishes to CloudWatch by itself on AWS. For a queue no event source consumes (a DLQ), also
/// `fcfs_queue_oldest_message_age_seconds{queue}`, read by peeking at up to ten of its messages.
/// Until `stop`.
pub(crate) async fn watch_queues(
    sqs: aws_sdk_sqs::Client,
    queues: Vec<WatchedQueue>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        for queue in &queues {
            read_depth(&sqs, queue).await;
            if !queue.consumed {
                peek_oldest_age(&sqs, queue).await;
            }
        }
        tokio::select! {
            _ = stop.changed() => {}
            _ = tokio::time::sleep(every) => {}
        }
    }
}

async fn read_depth(sqs: &aws_sdk_sqs::Client, queue: &WatchedQueue) {
    let name = &queue.name;
    let read = sqs
        .get_queue_attributes()
        .queue_url(&queue.url)
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
                    ::metrics::gauge!("fcfs_queue_messages", "queue" => name.clone(), "state" => state).set(count);
                }
            }
        }
        Ok(Err(e)) => {
            tracing::warn!(queue = name, error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "queue depth not read")
        }
        Err(_) => tracing::warn!(queue = name, "queue depth not read within {QUEUE_READ_DEADLINE:?}"),
    }
}

/// Receives up to ten messages without hiding them (visibility timeout 0) and reports the oldest
/// one's age; 0 when none came back.
async fn peek_oldest_age(sqs: &aws_sdk_sqs::Client, queue: &WatchedQueue) {
    let peek = sqs
        .receive_message()
        .queue_url(&queue.url)
        .max_number_of_messages(10)
        .visibility_timeout(0)
        .wait_time_seconds(0)
        .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
        .send();
    match tokio::time::timeout(QUEUE_READ_DEADLINE, peek).await {
        Ok(Ok(out)) => record_oldest_age(&queue.name, out.messages()),
        Ok(Err(e)) => {
            tracing::warn!(queue = queue.name, error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "queue not peeked")
        }
        Err(_) => tracing::warn!(queue = queue.name, "queue not peeked within {QUEUE_READ_DEADLINE:?}"),
    }
}

/// `fcfs_queue_oldest_message_age_seconds{queue}`: the age of the oldest of `messages` (by their
/// `SentTimestamp`), 0 for none. SQS computes it over the whole queue for CloudWatch; locally it
/// is the oldest a receive returned, which on a backlog is the head of the queue.
pub(crate) fn record_oldest_age(queue: &str, messages: &[Message]) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let oldest_ms = messages
        .iter()
        .filter_map(|m| {
            m.attributes()?
                .get(&MessageSystemAttributeName::SentTimestamp)?
                .parse::<i64>()
                .ok()
        })
        .min();
    let age = oldest_ms.map_or(0.0, |sent| (now_ms - sent).max(0) as f64 / 1000.0);
    ::metrics::gauge!("fcfs_queue_oldest_message_age_seconds", "queue" => queue.to_owned()).set(age);
}

/// One invocation of `function` (its logical id) that ran for `elapsed`: Lambda's `Invocations`
/// and `Duration`, what Lambda bills (the bench's bill reads them).
pub(crate) fn function_invoked(function: &str, elapsed: Duration) {
    FunctionMeter::new(function).invoked(elapsed);
}

/// `function_invoked`'s series of one function, registered once: the gateway invokes a function
/// per request, and a lookup by labels in the registry per request is time the trivial route does
/// not spend. Made after `recorder()` has run, so the handles are the installed recorder's.
#[derive(Clone)]
pub(crate) struct FunctionMeter {
    invocations: ::metrics::Counter,
    duration: ::metrics::Histogram,
}

impl FunctionMeter {
    pub(crate) fn new(function: &str) -> Self {
        Self {
            invocations: ::metrics::counter!("fcfs_function_invocations_total", "function" => function.to_owned()),
            duration: ::metrics::histogram!("fcfs_function_duration_seconds", "function" => function.to_owned()),
        }
    }

    pub(crate) fn invoked(&self, elapsed: Duration) {
        self.invocations.increment(1);
        self.duration.record(elapsed.as_secs_f64());
    }
}

/// An invocation that failed (a handler error or a crash): Lambda's `Errors` of the function,
/// labelled with its logical id (observability/alerts.yml, `FunctionErrors`).
pub(crate) fn function_failed(function: &str) {
    ::metrics::counter!("fcfs_function_errors_total", "function" => function.to_owned()).increment(1);
}

/// An invocation refused for want of concurrency: Lambda's `Throttles` (`FunctionThrottled`).
pub(crate) fn function_throttled(function: &str) {
    ::metrics::counter!("fcfs_function_throttles_total", "function" => function.to_owned()).increment(1);
}
