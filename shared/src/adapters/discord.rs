//! `ChatWebhook` on a Discord webhook whose URL sits in a Secrets Manager secret (the URL is a
//! credential: whoever has it can post). The secret holds the URL itself, or JSON `{"url": …}`;
//! it is read at the first post and kept for the life of the process, so a fixed secret is
//! picked up by the next cold start.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_secretsmanager::error::DisplayErrorContext;
use reqwest::StatusCode;
use tokio::sync::OnceCell;

use crate::alerts::domain::DiscordMessage;
use crate::alerts::error::DeliveryFailure;
use crate::alerts::ports::ChatWebhook;

/// One post's deadline, and the secret read's.
const POST_DEADLINE: Duration = Duration::from_secs(5);
const SECRET_DEADLINE: Duration = Duration::from_secs(3);

pub struct DiscordWebhook {
    http: reqwest::Client,
    source: UrlSource,
    url: OnceCell<String>,
}

enum UrlSource {
    Secret {
        client: aws_sdk_secretsmanager::Client,
        secret_id: String,
    },
    Fixed(String),
}

impl DiscordWebhook {
    /// The webhook whose URL is the value of secret `secret_id` (a name or an ARN).
    pub fn from_secret(client: aws_sdk_secretsmanager::Client, secret_id: &str) -> Self {
        Self::with_source(UrlSource::Secret {
            client,
            secret_id: secret_id.to_owned(),
        })
    }

    /// A webhook at a known URL (tests).
    pub fn at(url: &str) -> Self {
        Self::with_source(UrlSource::Fixed(url.to_owned()))
    }

    fn with_source(source: UrlSource) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(POST_DEADLINE)
                .build()
                .unwrap_or_default(),
            source,
            url: OnceCell::new(),
        }
    }

    async fn url(&self) -> Result<&str, DeliveryFailure> {
        self.url
            .get_or_try_init(|| async {
                match &self.source {
                    UrlSource::Fixed(url) => parse_url(url),
                    UrlSource::Secret { client, secret_id } => read_secret(client, secret_id).await,
                }
            })
            .await
            .map(String::as_str)
    }
}

async fn read_secret(client: &aws_sdk_secretsmanager::Client, secret_id: &str) -> Result<String, DeliveryFailure> {
    let read = client.get_secret_value().secret_id(secret_id).send();
    let output = tokio::time::timeout(SECRET_DEADLINE, read)
        .await
        .map_err(|_| DeliveryFailure::Unreachable(format!("secret {secret_id}: no answer within {SECRET_DEADLINE:?}")))?
        .map_err(|e| DeliveryFailure::Misconfigured(format!("secret {secret_id}: {}", DisplayErrorContext(e))))?;
    let text = output.secret_string().unwrap_or_default().trim();
    let url = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(json) => json.get("url").and_then(|u| u.as_str()).unwrap_or_default().to_owned(),
        Err(_) => text.to_owned(),
    };
    parse_url(&url).map_err(|_| {
        DeliveryFailure::Misconfigured(format!(
            "secret {secret_id} does not hold a webhook URL: put one with `aws secretsmanager put-secret-value --secret-id {secret_id} --secret-string https://discord.com/api/webhooks/…`"
        ))
    })
}

/// An http(s) URL; the error never repeats the text (it may be a credential).
fn parse_url(text: &str) -> Result<String, DeliveryFailure> {
    match reqwest::Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "https" | "http") && url.host().is_some() => Ok(url.into()),
        _ => Err(DeliveryFailure::Misconfigured(
            "the webhook URL is not an http(s) URL".into(),
        )),
    }
}

#[async_trait]
impl ChatWebhook for DiscordWebhook {
    async fn post(&self, message: &DiscordMessage) -> Result<(), DeliveryFailure> {
        let url = self.url().await?;
        let response = self
            .http
            .post(url)
            .json(message)
            .send()
            .await
            // reqwest's error names the URL; the URL is a credential.
            .map_err(|e| DeliveryFailure::Unreachable(e.without_url().to_string()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(DeliveryFailure::RateLimited {
                retry_after: retry_after(&response),
            });
        }
        if status.is_server_error() {
            return Err(DeliveryFailure::Server {
                status: status.as_u16(),
            });
        }
        let body = response.text().await.unwrap_or_default();
        Err(DeliveryFailure::Rejected {
            status: status.as_u16(),
            body: body.chars().take(500).collect(),
        })
    }
}

/// Discord's `Retry-After` header, in seconds (fractions allowed).
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
}
