use chrono::{Duration, Utc};
use fcfs_shared::issuance::domain::{Outcome, RejectionReason};
use fcfs_shared::testkit::{MemoryCatalog, MemoryLedger, MemoryQueue, QueueFault, gateway_request, new_campaign};

use super::*;

type Api = IssueApi<MemoryCatalog, MemoryLedger, MemoryQueue>;

async fn api_with_campaign(quantity: u32, starts_in: Duration) -> (Api, String) {
    let catalog = MemoryCatalog::default();
    let ledger = MemoryLedger::default();
    let now = Utc::now();
    let campaign = catalog
        .create("p1", &new_campaign(quantity, now + starts_in), u32::MAX)
        .await
        .unwrap();
    ledger.prime(&(&campaign).into()).await.unwrap();
    (
        IssueApi::new(catalog, ledger, MemoryQueue::default()),
        campaign.id.to_string(),
    )
}

async fn call(api: &Api, id: &str, body: &str, partner: Option<&str>) -> (u16, serde_json::Value) {
    let res = api
        .handle(gateway_request(
            "POST",
            "/v1/campaigns/{campaignId}/issues",
            &[("campaignId", id)],
            body,
            partner,
        ))
        .await;
    let Body::Text(text) = res.body() else {
        panic!("text body")
    };
    (res.status().as_u16(), serde_json::from_str(text).unwrap())
}

fn user(u: &str) -> String {
    json!({"userId": u}).to_string()
}

#[tokio::test]
async fn first_come_first_served_then_duplicate_then_sold_out() {
    let (api, id) = api_with_campaign(2, -Duration::minutes(1)).await;
    let (status, body) = call(&api, &id, &user("a"), Some("p1")).await;
    assert_eq!(
        (status, body["status"].as_str(), body["rank"].as_u64()),
        (202, Some("PENDING"), Some(1))
    );
    assert_eq!(
        call(&api, &id, &user("a"), Some("p1")).await.1["error"],
        "ALREADY_ISSUED"
    );
    assert_eq!(call(&api, &id, &user("b"), Some("p1")).await.0, 202);
    let (status, body) = call(&api, &id, &user("c"), Some("p1")).await;
    assert_eq!((status, body["error"].as_str()), (410, Some("SOLD_OUT")));
    let sent = api.issuance().queue().sent.lock().unwrap();
    assert_eq!(sent.iter().map(|r| r.user_id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(sent[0].partner_id, "p1");
}

#[tokio::test]
async fn window_is_enforced() {
    let (api, id) = api_with_campaign(2, Duration::minutes(5)).await;
    let (status, body) = call(&api, &id, &user("a"), Some("p1")).await;
    assert_eq!((status, body["error"].as_str()), (422, Some("NOT_OPEN")));
}

#[tokio::test]
async fn failed_enqueue_releases_the_reservation() {
    let (api, id) = api_with_campaign(1, -Duration::minutes(1)).await;
    api.issuance().queue().fail_with(QueueFault::Refuse);
    let res = api
        .handle(gateway_request(
            "POST",
            "/v1/campaigns/{campaignId}/issues",
            &[("campaignId", &id)],
            user("a"),
            Some("p1"),
        ))
        .await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "1");
    api.issuance().queue().fail_with(QueueFault::None);
    assert_eq!(
        call(&api, &id, &user("a"), Some("p1")).await.0,
        202,
        "the same user may retry"
    );
}

#[tokio::test]
async fn other_partners_and_unknown_campaigns_are_not_found() {
    let (api, id) = api_with_campaign(1, -Duration::minutes(1)).await;
    assert_eq!(call(&api, &id, &user("a"), Some("p2")).await.0, 404);
    let (status, body) = call(&api, &id, &user("a"), None).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("UNAUTHORIZED")));
    assert_eq!(call(&api, "999", &user("a"), Some("p1")).await.0, 404);
    assert_eq!(call(&api, "abc", &user("a"), Some("p1")).await.0, 404);
}

#[tokio::test]
async fn bad_bodies_are_400_naming_the_field() {
    let (api, id) = api_with_campaign(1, -Duration::minutes(1)).await;
    for (body, field) in [
        ("nope", "body"),
        ("{}", "userId"),
        (r#"{"userId": 5}"#, "userId"),
        (r#"{"userId": "has space"}"#, "userId"),
        (r#"{"userId": "a", "extra": 1}"#, "extra"),
    ] {
        let (status, json) = call(&api, &id, body, Some("p1")).await;
        assert_eq!(status, 400, "{body}");
        assert!(json["message"].as_str().unwrap().contains(field), "{body}: {json}");
    }
    assert_eq!(call(&api, &id, &user(&"x".repeat(2000)), Some("p1")).await.0, 413);
}

#[tokio::test]
async fn status_moves_from_none_to_pending_to_issued() {
    let (api, id) = api_with_campaign(1, -Duration::minutes(1)).await;
    let status = |u: &'static str| {
        let id = id.clone();
        let api = &api;
        async move {
            let res = api
                .handle(gateway_request(
                    "GET",
                    "/v1/campaigns/{campaignId}/issues/{userId}",
                    &[("campaignId", &id), ("userId", u)],
                    "",
                    Some("p1"),
                ))
                .await;
            let Body::Text(text) = res.body() else { panic!() };
            serde_json::from_str::<serde_json::Value>(text).unwrap()
        }
    };
    assert_eq!(status("a").await["status"], "NONE");
    call(&api, &id, &user("a"), Some("p1")).await;
    assert_eq!(status("a").await["status"], "PENDING");
    let campaign: u64 = id.parse().unwrap();
    api.issuance()
        .ledger()
        .record_outcomes(
            campaign,
            &[(UserId::parse("a").unwrap(), Outcome::Issued { coupon_id: 77 })],
        )
        .await
        .unwrap();
    let issued = status("a").await;
    assert_eq!(
        (issued["status"].as_str(), issued["couponId"].as_str()),
        (Some("ISSUED"), Some("77"))
    );
    api.issuance().catalog().outcomes.lock().unwrap().insert(
        (campaign, UserId::parse("r").unwrap()),
        Outcome::Rejected(RejectionReason::OverQuantity),
    );
    let rejected = status("r").await;
    assert_eq!(
        (rejected["status"].as_str(), rejected["reason"].as_str()),
        (Some("REJECTED"), Some("OVER_QUANTITY"))
    );
}
