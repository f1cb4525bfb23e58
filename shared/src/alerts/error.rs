use std::time::Duration;

/// Why one post to the webhook did not land.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum DeliveryFailure {
    /// 429: Discord says when to come back (`Retry-After`), if it does.
    #[error("rate limited by the webhook (retry after {retry_after:?})")]
    RateLimited { retry_after: Option<Duration> },
    /// 5xx: the webhook's side failed; a later try may land.
    #[error("the webhook answered {status}")]
    Server { status: u16 },
    /// No answer within the deadline, or no connection.
    #[error("the webhook did not answer: {0}")]
    Unreachable(String),
    /// Another 4xx: the message or the URL is wrong; retrying cannot help.
    #[error("the webhook refused the message with {status}: {body}")]
    Rejected { status: u16, body: String },
    /// The webhook URL could not be read or is not a URL.
    #[error("no usable webhook URL: {0}")]
    Misconfigured(String),
}

impl DeliveryFailure {
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. } | Self::Server { .. } | Self::Unreachable(_)
        )
    }
}

/// What the notifier reports: an invocation that returns this fails, so Lambda retries it and
/// counts it in the function's `Errors`.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AlertError {
    #[error("{undelivered} of {total} alert(s) not delivered to Discord after {attempts} attempt(s): {last}")]
    Undelivered {
        undelivered: usize,
        total: usize,
        attempts: u32,
        last: DeliveryFailure,
    },
}
