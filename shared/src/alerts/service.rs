//! The notifier's use case: every notice of an SNS delivery posted, each retried with backoff.

use std::time::Duration;

use super::domain::{DiscordMessage, Notice};
use super::error::{AlertError, DeliveryFailure};
use super::ports::ChatWebhook;

/// How hard to try one message: `attempts` posts in all, waiting `first_delay`, then twice as
/// long each time, at most `max_delay` (or what a 429 asks, within `max_delay`).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Five posts over at most ~15 s: within the function's 30 s timeout with each post's 5 s
    /// deadline counted, and SNS's own retries of a failed invocation come on top.
    fn default() -> Self {
        Self {
            attempts: 5,
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(4),
        }
    }
}

impl RetryPolicy {
    fn delay(&self, retry: u32, failure: &DeliveryFailure) -> Duration {
        let backoff = self.first_delay.saturating_mul(2u32.saturating_pow(retry));
        let wanted = match failure {
            DeliveryFailure::RateLimited {
                retry_after: Some(after),
            } => *after,
            _ => backoff,
        };
        wanted.min(self.max_delay)
    }
}

pub struct AlertNotifier<W> {
    webhook: W,
    retry: RetryPolicy,
}

impl<W: ChatWebhook> AlertNotifier<W> {
    pub fn new(webhook: W, retry: RetryPolicy) -> Self {
        Self { webhook, retry }
    }

    /// Posts every notice; fails if any could not be delivered (after trying all of them), so
    /// the invocation fails loudly: an error log, `fcfs_alert_deliveries_total{result="failed"}`,
    /// the function's `Errors` metric and Lambda's retries.
    pub async fn notify(&self, notices: &[Notice]) -> Result<usize, AlertError> {
        let mut failed = None;
        let mut undelivered = 0;
        for notice in notices {
            let message = DiscordMessage::for_notice(notice);
            match self.deliver(&message).await {
                Ok(attempts) => {
                    metrics::counter!("fcfs_alert_deliveries_total", "result" => "delivered").increment(1);
                    tracing::info!(
                        attempts,
                        title = message.embeds.first().map(|e| e.title.as_str()),
                        "alert delivered"
                    );
                }
                Err((attempts, failure)) => {
                    metrics::counter!("fcfs_alert_deliveries_total", "result" => "failed").increment(1);
                    tracing::error!(attempts, error = %failure, message = ?message, "alert NOT delivered");
                    undelivered += 1;
                    failed = Some((attempts, failure));
                }
            }
        }
        match failed {
            None => Ok(notices.len()),
            Some((attempts, last)) => Err(AlertError::Undelivered {
                undelivered,
                total: notices.len(),
                attempts,
                last,
            }),
        }
    }

    /// The number of posts it took, or the last failure and how many were made.
    async fn deliver(&self, message: &DiscordMessage) -> Result<u32, (u32, DeliveryFailure)> {
        let mut attempt = 1;
        loop {
            match self.webhook.post(message).await {
                Ok(()) => return Ok(attempt),
                Err(failure) if failure.is_transient() && attempt < self.retry.attempts => {
                    let wait = self.retry.delay(attempt - 1, &failure);
                    tracing::warn!(attempt, error = %failure, wait_ms = wait.as_millis() as u64, "alert post failed: retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(failure) => return Err((attempt, failure)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;

    /// Answers from a script, then succeeds; records what it was sent.
    #[derive(Default)]
    struct ScriptedWebhook {
        answers: Mutex<Vec<DeliveryFailure>>,
        posts: Mutex<Vec<(std::time::Instant, DiscordMessage)>>,
    }

    #[async_trait]
    impl ChatWebhook for ScriptedWebhook {
        async fn post(&self, message: &DiscordMessage) -> Result<(), DeliveryFailure> {
            self.posts
                .lock()
                .unwrap()
                .push((std::time::Instant::now(), message.clone()));
            let mut answers = self.answers.lock().unwrap();
            if answers.is_empty() {
                Ok(())
            } else {
                Err(answers.remove(0))
            }
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            attempts: 4,
            first_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
        }
    }

    fn notice() -> Notice {
        Notice::Text {
            subject: Some("s".into()),
            message: "m".into(),
        }
    }

    fn gaps(webhook: &ScriptedWebhook) -> Vec<Duration> {
        let posts = webhook.posts.lock().unwrap();
        posts.windows(2).map(|w| w[1].0 - w[0].0).collect()
    }

    #[tokio::test]
    async fn a_busy_webhook_is_retried_with_growing_waits_and_what_a_429_asks() {
        let webhook = ScriptedWebhook::default();
        *webhook.answers.lock().unwrap() = vec![
            DeliveryFailure::RateLimited {
                retry_after: Some(Duration::from_millis(150)),
            },
            DeliveryFailure::Server { status: 500 },
            DeliveryFailure::Unreachable("timeout".into()),
        ];
        let notifier = AlertNotifier::new(webhook, policy());
        assert_eq!(notifier.notify(&[notice()]).await, Ok(1));
        let gaps = gaps(&notifier.webhook);
        assert_eq!(gaps.len(), 3, "four posts");
        assert!(gaps[0] >= Duration::from_millis(150), "the 429's Retry-After: {gaps:?}");
        assert!(gaps[1] >= Duration::from_millis(40), "backoff doubles: {gaps:?}");
        assert!(gaps[2] >= Duration::from_millis(80), "and doubles again: {gaps:?}");
        assert!(gaps.iter().all(|g| *g < Duration::from_millis(600)), "capped: {gaps:?}");
    }

    #[tokio::test]
    async fn a_webhook_that_keeps_failing_fails_the_invocation_after_every_attempt() {
        let webhook = ScriptedWebhook::default();
        *webhook.answers.lock().unwrap() = vec![DeliveryFailure::Server { status: 500 }; 10];
        let notifier = AlertNotifier::new(webhook, policy());
        let err = notifier.notify(&[notice()]).await.unwrap_err();
        assert_eq!(
            err,
            AlertError::Undelivered {
                undelivered: 1,
                total: 1,
                attempts: 4,
                last: DeliveryFailure::Server { status: 500 }
            }
        );
        assert_eq!(notifier.webhook.posts.lock().unwrap().len(), 4);
    }

    #[tokio::test]
    async fn a_refused_message_is_not_retried_and_the_other_notices_still_go() {
        let webhook = ScriptedWebhook::default();
        *webhook.answers.lock().unwrap() = vec![DeliveryFailure::Rejected {
            status: 400,
            body: "bad embed".into(),
        }];
        let notifier = AlertNotifier::new(webhook, policy());
        let err = notifier.notify(&[notice(), notice()]).await.unwrap_err();
        assert!(
            matches!(
                err,
                AlertError::Undelivered {
                    undelivered: 1,
                    total: 2,
                    attempts: 1,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(notifier.webhook.posts.lock().unwrap().len(), 2, "one post each");
    }
}
