//! The sample events in `events/` (for `cargo lambda invoke`) stay valid: each one deserializes the
//! way the Lambda runtime would and is accepted by its function, here over in-memory fakes.

use std::path::PathBuf;

use alert_notifier::AlertNotifierFunction;
use authorizer::{CacheSettings, KeyAuthorizer, api_wide_resource};
use aws_lambda_events::apigw::ApiGatewayCustomAuthorizerRequestTypeRequest;
use aws_lambda_events::iam::IamPolicyEffect;
use aws_lambda_events::sns::SnsEvent;
use aws_lambda_events::sqs::SqsEvent;
use campaign_api::CampaignApi;
use coupon_api::CouponApi;
use coupon_expiry::CouponExpiry;
use fcfs_shared::alerts::domain::DiscordMessage;
use fcfs_shared::alerts::error::DeliveryFailure;
use fcfs_shared::alerts::ports::ChatWebhook;
use fcfs_shared::alerts::service::{AlertNotifier, RetryPolicy};
use fcfs_shared::coupons::CouponService;
use fcfs_shared::points::PointsService;
use fcfs_shared::points::domain::{EarnPoints, IdempotencyKey};
use fcfs_shared::testkit::{
    MemoryApiKeys, MemoryCatalog, MemoryCouponBook, MemoryCoupons, MemoryLedger, MemoryPoints, MemoryQueue,
    coupon_fixture,
};
use issue_api::IssueApi;
use issue_writer::IssueWriter;
use lambda_http::Body;
use points_api::PointsApi;
use points_expiry::PointsExpiry;
use std::sync::Arc;

fn event(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../events").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn http(name: &str) -> lambda_http::Request {
    lambda_http::request::from_str(&event(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn reply(res: lambda_http::Response<Body>) -> (u16, serde_json::Value) {
    let Body::Text(text) = res.body() else {
        panic!("text body")
    };
    (res.status().as_u16(), serde_json::from_str(text).unwrap())
}

#[test]
fn every_sample_event_is_checked_here() {
    let mut files: Vec<String> = std::fs::read_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../events"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "alert-notifier.json",
            "authorizer.json",
            "campaign-api-create.json",
            "campaign-api-get.json",
            "coupon-api-use.json",
            "coupon-expiry.json",
            "issue-api-issue.json",
            "issue-api-status.json",
            "issue-recovery.json",
            "issue-writer.json",
            "points-api-use.json",
            "points-expiry.json"
        ]
    );
}

/// Records what would be posted to Discord.
#[derive(Default)]
struct RecordingWebhook(std::sync::Mutex<Vec<DiscordMessage>>);

#[async_trait::async_trait]
impl ChatWebhook for &RecordingWebhook {
    async fn post(&self, message: &DiscordMessage) -> Result<(), DeliveryFailure> {
        self.0.lock().unwrap().push(message.clone());
        Ok(())
    }
}

#[tokio::test]
async fn alert_notifier_event() {
    let e: SnsEvent = serde_json::from_str(&event("alert-notifier.json")).unwrap();
    let webhook = RecordingWebhook::default();
    let notifier = AlertNotifierFunction::new(AlertNotifier::new(&webhook, RetryPolicy::default()));
    assert_eq!(notifier.handle(e).await, Ok(1));
    let posted = webhook.0.lock().unwrap();
    assert_eq!(posted[0].embeds[0].title, "🔴 ALARM: fcfs-prod-issue-dlq-not-empty");
}

#[tokio::test]
async fn authorizer_event() {
    let e: ApiGatewayCustomAuthorizerRequestTypeRequest = serde_json::from_str(&event("authorizer.json")).unwrap();
    assert!(api_wide_resource(e.method_arn.as_deref().unwrap()).is_some());
    assert!(e.headers.contains_key("x-api-key"));
    // The placeholder key is not a key: denied without a lookup.
    let auth = KeyAuthorizer::new(MemoryApiKeys::default(), CacheSettings::default());
    let response = authorizer::handle(&auth, e).await.unwrap();
    assert_eq!(response.policy_document.statement[0].effect, IamPolicyEffect::Deny);
}

#[tokio::test]
async fn campaign_and_issue_events() {
    let catalog = Arc::new(MemoryCatalog::default());
    let ledger = Arc::new(MemoryLedger::default());
    let campaigns = CampaignApi::new(catalog.clone(), ledger.clone());
    let (status, created) = reply(campaigns.handle(http("campaign-api-create.json")).await);
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        (
            created["campaignId"].as_str().and_then(|id| id.parse::<u64>().ok()),
            created["partnerId"].as_str()
        ),
        (Some(1), Some("demo-partner"))
    );
    let (status, got) = reply(campaigns.handle(http("campaign-api-get.json")).await);
    assert_eq!(status, 200, "{got}");

    let issues = IssueApi::new(catalog, ledger, MemoryQueue::default());
    let (status, issued) = reply(issues.handle(http("issue-api-issue.json")).await);
    assert_eq!(status, 202, "{issued}");
    let (status, state) = reply(issues.handle(http("issue-api-status.json")).await);
    assert_eq!((status, state["status"].as_str()), (200, Some("PENDING")), "{state}");
}

#[tokio::test]
async fn issue_writer_event() {
    let e: SqsEvent = serde_json::from_str(&event("issue-writer.json")).unwrap();
    let book = MemoryCouponBook::default();
    book.campaigns.lock().unwrap().insert(1, ("demo-partner".into(), 1000));
    let (response, summary) = IssueWriter::new(book, MemoryLedger::default(), 1000)
        .handle(e)
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty());
    assert_eq!((summary.received, summary.inserted), (2, 2));
}

#[tokio::test]
async fn issue_recovery_event() {
    let e: serde_json::Value = serde_json::from_str(&event("issue-recovery.json")).unwrap();
    assert_eq!(e["detail-type"], "Scheduled Event");
    let ledger = Arc::new(MemoryLedger::default());
    let recovery =
        issue_recovery::IssueRecovery::new(fcfs_shared::issuance::Recovery::new(ledger, MemoryQueue::default()));
    let summary = recovery.handle(e).await.unwrap();
    assert_eq!((summary.campaigns, summary.resent), (0, 0));
}

#[tokio::test]
async fn coupon_use_event() {
    let coupons = MemoryCoupons::default();
    let later = chrono::Utc::now() + chrono::Duration::days(1);
    *coupons.coupons.lock().unwrap() = vec![coupon_fixture(1, "demo-partner", "alice", later)];
    let api = CouponApi::new(CouponService::new(coupons));
    let (status, body) = reply(api.handle(http("coupon-api-use.json")).await);
    assert_eq!(
        (status, body["couponId"].as_str().and_then(|id| id.parse::<u64>().ok())),
        (200, Some(1)),
        "{body}"
    );
}

#[tokio::test]
async fn coupon_expiry_event() {
    let expiry = CouponExpiry::new(
        CouponService::new(MemoryCoupons::default()),
        1000,
        std::time::Duration::from_secs(10),
    );
    let e: serde_json::Value = serde_json::from_str(&event("coupon-expiry.json")).unwrap();
    assert_eq!(expiry.handle(e).await.unwrap().coupons.chunks, 1);
}

#[tokio::test]
async fn points_use_event() {
    let points = PointsService::new(MemoryPoints::default());
    let earn = EarnPoints {
        amount: 500,
        reason: "signup".into(),
        expires_at: None,
    };
    let alice = fcfs_shared::kernel::UserId::parse("alice").unwrap();
    let key = IdempotencyKey::parse(Some("earn-1")).unwrap();
    points.earn("demo-partner", alice, &key, earn).await.unwrap();
    let api = PointsApi::new(points);
    let first = reply(api.handle(http("points-api-use.json")).await);
    assert_eq!((first.0, first.1["balance"].as_u64()), (201, Some(200)), "{}", first.1);
    assert_eq!(
        reply(api.handle(http("points-api-use.json")).await),
        first,
        "a retry replays"
    );
    let mut without_key = http("points-api-use.json");
    without_key.headers_mut().remove("Idempotency-Key");
    let (status, body) = reply(api.handle(without_key).await);
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("Idempotency-Key")),
        "{body}"
    );
}

#[tokio::test]
async fn points_expiry_event() {
    let expiry = PointsExpiry::new(
        PointsService::new(MemoryPoints::default()),
        1000,
        std::time::Duration::from_secs(10),
    );
    let e: serde_json::Value = serde_json::from_str(&event("points-expiry.json")).unwrap();
    let sweep = expiry.handle(e).await.unwrap();
    assert_eq!((sweep.lots.chunks, sweep.idempotency_records.chunks), (1, 1));
}
