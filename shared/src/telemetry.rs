//! What the code measures, described once for every recorder (units and help), and the recorder
//! a function installs on Lambda: CloudWatch Embedded Metric Format (EMF), one JSON document per
//! invocation on stdout, which CloudWatch Logs turns into metrics in namespace `fcfs` with the
//! dimension `function`. The local runner installs a Prometheus recorder instead (`runner/`).

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

use crate::config::StartupError;

pub const NAMESPACE: &str = "fcfs";

/// Units and help of every metric, for whichever recorder is installed (call after installing it).
pub fn describe() {
    for (name, help) in [
        ("fcfs_http_requests_total", "API answers by route, method and status"),
        ("fcfs_issue_decisions_total", "issue requests by outcome"),
        (
            "fcfs_issue_answers_from_memory_total",
            "issue requests refused from an instance's memory of Redis's last refusal, without Redis",
        ),
        (
            "fcfs_compensations_total",
            "places given back after a failed request, by result",
        ),
        ("fcfs_coupon_uses_total", "coupon use requests by outcome"),
        ("fcfs_points_writes_total", "points writes by operation and outcome"),
        (
            "fcfs_points_lock_retries_total",
            "points writes retried after a deadlock or lock-wait timeout",
        ),
        (
            "fcfs_points_lock_failures_total",
            "points writes that failed on a lock conflict after their last attempt",
        ),
        ("fcfs_authorizer_decisions_total", "authorizer decisions by result"),
        (
            "fcfs_authorizer_key_reads_total",
            "key-store reads (authorizer cache misses)",
        ),
        ("fcfs_writer_rows_total", "reservations the writer handled, by result"),
        (
            "fcfs_writer_chunks_locked_first_total",
            "writer chunks written with their campaigns' counter rows locked from the first read",
        ),
        (
            "fcfs_recovery_places_total",
            "pending places recovery handled, by result",
        ),
        ("fcfs_alert_deliveries_total", "alerts posted to Discord, by result"),
        (
            "fcfs_sqs_requests_total",
            "requests sent to SQS (each attempt), by operation",
        ),
    ] {
        describe_counter!(name, Unit::Count, help);
    }
    describe_histogram!(
        "fcfs_http_request_duration_seconds",
        Unit::Seconds,
        "time of an API answer inside its function"
    );
    describe_histogram!("fcfs_writer_batch_size", Unit::Count, "messages per writer delivery");
    describe_histogram!(
        "fcfs_writer_batch_duration_seconds",
        Unit::Seconds,
        "time the writer took for one delivery"
    );
    describe_gauge!("fcfs_queue_messages", Unit::Count, "messages in a queue, by state");
    describe_gauge!(
        "fcfs_queue_oldest_message_age_seconds",
        Unit::Seconds,
        "age of the oldest message a receive or peek of the queue returned"
    );
}

/// A function's EMF recorder. Lambda runs one invocation at a time per instance: `flush` after
/// each writes that invocation's metrics, with its request id, so a log line and the metrics of
/// one request join on it.
pub struct Emf(&'static metrics_cloudwatch_embedded::Collector);

impl Emf {
    /// Installs the recorder for `function` (the `function` dimension of every metric).
    pub fn init(function: &'static str) -> Result<Self, StartupError> {
        let collector = metrics_cloudwatch_embedded::Builder::new()
            .cloudwatch_namespace(NAMESPACE)
            .with_dimension("function", function)
            .init()
            .map_err(|e| StartupError::Telemetry(e.to_string()))?;
        describe();
        Ok(Self(collector))
    }

    /// Runs one invocation's `work`, then writes what it recorded under its request id.
    pub async fn around<T>(&self, request_id: &str, work: impl std::future::Future<Output = T>) -> T {
        let out = work.await;
        self.flush(request_id);
        out
    }

    /// `around` for an API Gateway request: the request id from its Lambda context.
    pub async fn around_http<F, Fut>(
        &self,
        req: lambda_http::Request,
        handle: F,
    ) -> lambda_http::Response<lambda_http::Body>
    where
        F: FnOnce(lambda_http::Request) -> Fut,
        Fut: std::future::Future<Output = lambda_http::Response<lambda_http::Body>>,
    {
        use lambda_http::RequestExt;
        let request_id = req
            .lambda_context_ref()
            .map(|c| c.request_id.clone())
            .unwrap_or_default();
        self.around(&request_id, handle(req)).await
    }

    /// Writes what this invocation recorded to stdout (nothing if it recorded nothing).
    pub fn flush(&self, request_id: &str) {
        self.flush_to(request_id, std::io::stdout().lock());
    }

    pub fn flush_to(&self, request_id: &str, writer: impl std::io::Write) {
        if let Err(e) = self.0.set_property("requestId", request_id).flush(writer) {
            tracing::warn!(error = %e, "metrics not written");
        }
    }
}
