//! The functions the template names, by their `BuildProperties.Binary`, built in-process from the
//! same constructors their Lambda `main.rs` uses.

use std::sync::Arc;

use alert_notifier::AlertNotifierFunction;
use async_trait::async_trait;
use authorizer::KeyAuthorizer;
use aws_lambda_events::apigw::{ApiGatewayCustomAuthorizerRequestTypeRequest, ApiGatewayCustomAuthorizerResponse};
use aws_lambda_events::sns::SnsEvent;
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use campaign_api::CampaignApi;
use coupon_api::CouponApi;
use coupon_expiry::CouponExpiry;
use event_relay::EventRelayFunction;
use events_api::EventsApi;
use fcfs_shared::alerts::ports::ChatWebhook;
use fcfs_shared::config::{Settings, StartupError};
use fcfs_shared::coupons::ports::CouponRecords;
use fcfs_shared::events::ports::{EventLog, SecretBox, UrlVetting, Webhooks};
use fcfs_shared::grading::ports::{GradingRecords, PartitionQueue};
use fcfs_shared::issuance::ports::{CampaignCatalog, CouponBook, IssueLedger, ReservationQueue};
use fcfs_shared::keys::ports::ApiKeyStore;
use fcfs_shared::points::ports::PointRecords;
use grading_api::GradingApi;
use grading_scheduler::GradingScheduler;
use grading_worker::GradingWorker;
use issue_api::IssueApi;
use issue_recovery::IssueRecovery;
use issue_writer::IssueWriter;
use lambda_http::{Body, Request, Response};
use points_api::PointsApi;
use points_expiry::PointsExpiry;

/// A function invoked through API Gateway's proxy integration.
#[async_trait]
pub trait HttpFunction: Send + Sync {
    async fn invoke(&self, request: Request) -> Response<Body>;
}

/// A function invoked by an SQS event source mapping. An error fails the whole batch.
#[async_trait]
pub trait SqsFunction: Send + Sync {
    async fn invoke(&self, event: SqsEvent) -> Result<SqsBatchResponse, String>;
}

/// A function invoked by an EventBridge schedule (its event is a "Scheduled Event").
#[async_trait]
pub trait ScheduledFunction: Send + Sync {
    async fn invoke(&self, event: serde_json::Value) -> Result<serde_json::Value, String>;
}

/// A function subscribed to an SNS topic. The runner delivers no SNS messages (locally,
/// Alertmanager posts alerts itself); tests and `--invoke` call it directly.
#[async_trait]
pub trait SnsFunction: Send + Sync {
    async fn invoke(&self, event: SnsEvent) -> Result<(), String>;
}

/// A REQUEST authorizer. An error whose message is `Unauthorized` is API Gateway's 401.
#[async_trait]
pub trait AuthorizerFunction: Send + Sync {
    async fn invoke(
        &self,
        event: ApiGatewayCustomAuthorizerRequestTypeRequest,
    ) -> Result<ApiGatewayCustomAuthorizerResponse, String>;
}

#[derive(Clone)]
pub enum LocalFunction {
    Http(Arc<dyn HttpFunction>),
    Sqs(Arc<dyn SqsFunction>),
    Authorizer(Arc<dyn AuthorizerFunction>),
    Scheduled(Arc<dyn ScheduledFunction>),
    Sns(Arc<dyn SnsFunction>),
}

impl LocalFunction {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Http(_) => "http",
            Self::Sqs(_) => "sqs",
            Self::Authorizer(_) => "authorizer",
            Self::Scheduled(_) => "scheduled",
            Self::Sns(_) => "sns",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("no function binary {0:?} is known to the local runner (known: {BINARIES:?})")]
    UnknownBinary(String),
    #[error(transparent)]
    Startup(#[from] StartupError),
}

/// Every binary the workspace deploys; a template function naming another cannot run locally.
pub const BINARIES: &[&str] = &[
    "authorizer",
    "campaign-api",
    "issue-api",
    "issue-writer",
    "issue-recovery",
    "coupon-api",
    "coupon-expiry",
    "points-api",
    "points-expiry",
    "alert-notifier",
    "grading-api",
    "grading-worker",
    "grading-scheduler",
    "events-api",
    "event-relay",
];

pub async fn build(
    binary: &str,
    settings: &Settings,
    sdk: &aws_config::SdkConfig,
) -> Result<LocalFunction, BuildError> {
    Ok(match binary {
        "authorizer" => LocalFunction::Authorizer(Arc::new(authorizer::from_settings(settings, sdk)?)),
        "campaign-api" => LocalFunction::Http(Arc::new(CampaignApi::from_settings(settings, sdk).await?)),
        "issue-api" => LocalFunction::Http(Arc::new(IssueApi::from_settings(settings, sdk).await?)),
        "issue-writer" => LocalFunction::Sqs(Arc::new(IssueWriter::from_settings(settings, sdk).await?)),
        "issue-recovery" => LocalFunction::Scheduled(Arc::new(IssueRecovery::from_settings(settings, sdk).await?)),
        "coupon-api" => LocalFunction::Http(Arc::new(CouponApi::from_settings(settings, sdk)?)),
        "coupon-expiry" => LocalFunction::Scheduled(Arc::new(CouponExpiry::from_settings(settings, sdk)?)),
        "points-api" => LocalFunction::Http(Arc::new(PointsApi::from_settings(settings, sdk)?)),
        "points-expiry" => LocalFunction::Scheduled(Arc::new(PointsExpiry::from_settings(settings, sdk)?)),
        "grading-api" => LocalFunction::Http(Arc::new(GradingApi::from_settings(settings, sdk)?)),
        "grading-worker" => LocalFunction::Sqs(Arc::new(GradingWorker::from_settings(settings, sdk)?)),
        "grading-scheduler" => LocalFunction::Scheduled(Arc::new(GradingScheduler::from_settings(settings, sdk)?)),
        "events-api" => LocalFunction::Http(Arc::new(EventsApi::from_settings(settings, sdk)?)),
        "event-relay" => LocalFunction::Scheduled(Arc::new(EventRelayFunction::from_settings(settings, sdk)?)),
        "alert-notifier" => LocalFunction::Sns(Arc::new(AlertNotifierFunction::from_settings(settings, sdk)?)),
        other => return Err(BuildError::UnknownBinary(other.to_owned())),
    })
}

#[async_trait]
impl<C: CampaignCatalog, L: IssueLedger> HttpFunction for CampaignApi<C, L> {
    async fn invoke(&self, request: Request) -> Response<Body> {
        self.handle(request).await
    }
}

#[async_trait]
impl<C: CampaignCatalog, L: IssueLedger, Q: ReservationQueue> HttpFunction for IssueApi<C, L, Q> {
    async fn invoke(&self, request: Request) -> Response<Body> {
        self.handle(request).await
    }
}

#[async_trait]
impl<W: Webhooks, L: EventLog, S: SecretBox, V: UrlVetting> HttpFunction for EventsApi<W, L, S, V> {
    async fn invoke(&self, request: Request) -> Response<Body> {
        self.handle(request).await
    }
}

#[async_trait]
impl<W: Webhooks + 'static, L: EventLog + 'static> ScheduledFunction for EventRelayFunction<W, L> {
    async fn invoke(&self, event: serde_json::Value) -> Result<serde_json::Value, String> {
        serde_json::to_value(self.handle(event).await).map_err(|e| e.to_string())
    }
}

#[async_trait]
impl<R: CouponRecords> HttpFunction for CouponApi<R> {
    async fn invoke(&self, request: Request) -> Response<Body> {
        self.handle(request).await
    }
}

#[async_trait]
impl<R: CouponRecords> ScheduledFunction for CouponExpiry<R> {
    async fn invoke(&self, event: serde_json::Value) -> Result<serde_json::Value, String> {
        let summary = self.handle(event).await.map_err(|e| e.to_string())?;
        serde_json::to_value(summary).map_err(|e| e.to_string())
    }
}

#[async_trait]
impl<R: PointRecords> HttpFunction for PointsApi<R> {
    async fn invoke(&self, request: Request) -> Response<Body> {
        self.handle(request).await
    }
}

#[async_trait]
impl<R: PointRecords> ScheduledFunction for PointsExpiry<R> {
    async fn invoke(&self, event: serde_json::Value) -> Result<serde_json::Value, String> {
        let summary = self.handle(event).await.map_err(|e| e.to_string())?;
        serde_json::to_value(summary).map_err(|e| e.to_string())
    }
}

#[async_trait]
impl<B: CouponBook, L: IssueLedger> SqsFunction for IssueWriter<B, L> {
    async fn invoke(&self, event: SqsEvent) -> Result<SqsBatchResponse, String> {
        let (response, summary) = self.handle(event).await.map_err(|e| e.to_string())?;
        tracing::info!(?summary, "batch written");
        Ok(response)
    }
}

#[async_trait]
impl<S: ApiKeyStore> AuthorizerFunction for KeyAuthorizer<S> {
    async fn invoke(
        &self,
        event: ApiGatewayCustomAuthorizerRequestTypeRequest,
    ) -> Result<ApiGatewayCustomAuthorizerResponse, String> {
        authorizer::handle(self, event).await.map_err(|e| e.to_string())
    }
}

#[async_trait]
impl<L: IssueLedger, Q: ReservationQueue> ScheduledFunction for IssueRecovery<L, Q> {
    async fn invoke(&self, event: serde_json::Value) -> Result<serde_json::Value, String> {
        let summary = self.handle(event).await.map_err(|e| e.to_string())?;
        serde_json::to_value(summary).map_err(|e| e.to_string())
    }
}

#[async_trait]
impl<W: ChatWebhook> SnsFunction for AlertNotifierFunction<W> {
    async fn invoke(&self, event: SnsEvent) -> Result<(), String> {
        self.handle(event).await.map(|_| ()).map_err(|e| e.to_string())
    }
}

#[async_trait]
impl<R: GradingRecords, Q: PartitionQueue> HttpFunction for GradingApi<R, Q> {
    async fn invoke(&self, request: Request) -> Response<Body> {
        self.handle(request).await
    }
}

#[async_trait]
impl<R: GradingRecords, Q: PartitionQueue> SqsFunction for GradingWorker<R, Q> {
    async fn invoke(&self, event: SqsEvent) -> Result<SqsBatchResponse, String> {
        Ok(self.handle(event).await)
    }
}

#[async_trait]
impl<R: GradingRecords, Q: PartitionQueue> ScheduledFunction for GradingScheduler<R, Q> {
    async fn invoke(&self, event: serde_json::Value) -> Result<serde_json::Value, String> {
        let started = self.handle(event).await.map_err(|e| e.to_string())?;
        serde_json::to_value(started).map_err(|e| e.to_string())
    }
}
