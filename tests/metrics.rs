//! The runner's `GET /metrics` (Prometheus text format) after a small flash sale through the API
//! reports exactly the decisions the sale made. Its own test binary: the recorder is process-wide,
//! so no other test's requests are counted.

use std::collections::BTreeMap;
use std::time::Duration;

use integration_tests::PartnerApi;
use serde_json::{Value, json};

const QUANTITY: usize = 50;

async fn issue(api: &PartnerApi, campaign: u64, user: &str) -> u16 {
    api.http
        .post(format!("{}/v1/campaigns/{campaign}/issues", api.running.base_url))
        .header("X-API-KEY", &api.key)
        .json(&json!({ "userId": user }))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("the runner answers")
        .status()
        .as_u16()
}

/// `name{label="value"} n` lines of one metric, by label value.
fn counts(page: &str, name: &str, label: &str) -> BTreeMap<String, u64> {
    page.lines()
        .filter_map(|line| line.strip_prefix(name)?.strip_prefix('{'))
        .filter_map(|rest| {
            let (labels, value) = rest.split_once("} ")?;
            let wanted = labels
                .split(',')
                .find_map(|l| l.strip_prefix(&format!("{label}=\"")))?
                .trim_end_matches('"');
            Some((wanted.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_a_flash_sale_report_exactly_its_decisions() {
    let api = PartnerApi::start("metrics", 4).await;
    let created: Value = api
        .http
        .post(format!("{}/v1/campaigns", api.running.base_url))
        .header("X-API-KEY", &api.key)
        .json(&json!({
            "name": "metrics", "totalQuantity": QUANTITY,
            "issueStartsAt": "2020-01-01T00:00:00Z", "issueEndsAt": "2099-01-01T00:00:00Z",
            "couponExpiresAt": "2099-12-31T00:00:00Z", "discount": {"type": "AMOUNT", "value": 100}
        }))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let campaign = created["campaignId"].as_u64().expect("a campaign id");

    // 60 users for 50 coupons, then 10 of the winners again, then 3 requests for no campaign.
    let mut answers = BTreeMap::<u16, u64>::new();
    for i in 0..60 {
        *answers
            .entry(issue(&api, campaign, &format!("u{i}")).await)
            .or_default() += 1;
    }
    for i in 0..10 {
        *answers
            .entry(issue(&api, campaign, &format!("u{i}")).await)
            .or_default() += 1;
    }
    for i in 0..3 {
        *answers
            .entry(issue(&api, 999_999_999_999, &format!("x{i}")).await)
            .or_default() += 1;
    }
    assert_eq!(answers, BTreeMap::from([(202, 50), (404, 3), (409, 10), (410, 10)]));

    let page = api
        .http
        .get(format!("{}/metrics", api.running.base_url))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    let decisions = counts(&page, "fcfs_issue_decisions_total", "outcome");
    let expected: BTreeMap<String, u64> = [
        ("reserved", 50),
        ("sold_out", 10),
        ("already_issued", 10),
        ("not_found", 3),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(decisions, expected, "{page}");
    assert!(
        counts(&page, "fcfs_compensations_total", "result").is_empty(),
        "nothing failed, so nothing was compensated: {page}"
    );
}
