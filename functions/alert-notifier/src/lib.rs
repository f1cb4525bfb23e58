//! An SNS delivery (CloudWatch alarms publish to the alert topic) mapped to the alerts context's
//! `notify`, and its result back: an error fails the invocation, which Lambda retries.

use aws_lambda_events::sns::SnsEvent;
use fcfs_shared::adapters::discord::DiscordWebhook;
use fcfs_shared::alerts::domain::Notice;
use fcfs_shared::alerts::error::AlertError;
use fcfs_shared::alerts::ports::ChatWebhook;
use fcfs_shared::alerts::service::{AlertNotifier, RetryPolicy};
use fcfs_shared::config::{Settings, StartupError};

pub struct AlertNotifierFunction<W> {
    notifier: AlertNotifier<W>,
}

impl AlertNotifierFunction<DiscordWebhook> {
    /// The webhook URL is the value of secret `DISCORD_WEBHOOK_SECRET` (name or ARN), read at
    /// the first alert, never at start: a missing secret fails an alert loudly, not the deploy.
    pub fn from_settings(settings: &Settings, sdk: &aws_config::SdkConfig) -> Result<Self, StartupError> {
        let secret = settings.required("DISCORD_WEBHOOK_SECRET")?;
        let webhook = DiscordWebhook::from_secret(aws_sdk_secretsmanager::Client::new(sdk), &secret);
        Ok(Self::new(AlertNotifier::new(webhook, RetryPolicy::default())))
    }
}

impl<W: ChatWebhook> AlertNotifierFunction<W> {
    pub fn new(notifier: AlertNotifier<W>) -> Self {
        Self { notifier }
    }

    /// Every record's message posted; the count posted.
    pub async fn handle(&self, event: SnsEvent) -> Result<usize, AlertError> {
        let notices: Vec<Notice> = event
            .records
            .into_iter()
            .map(|record| Notice::from_sns(record.sns.subject, &record.sns.message))
            .collect();
        self.notifier.notify(&notices).await
    }
}
