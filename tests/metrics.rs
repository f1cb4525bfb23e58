//! The runner's `GET /metrics` (Prometheus text format) after a small flash sale through the API
//! reports exactly the decisions the sale made. Its own test binary: the recorder is process-wide,
//! so no other test's requests are counted.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use integration_tests::{PartnerApi, template};
use serde_json::{Value, json};

const QUANTITY: usize = 50;

async fn issue(api: &PartnerApi, campaign: u64, user: &str) -> u16 {
    issue_raw(api, &campaign.to_string(), json!({ "userId": user }).to_string()).await
}

/// An issue request with any campaign path segment and body.
async fn issue_raw(api: &PartnerApi, campaign: &str, body: String) -> u16 {
    api.http
        .post(format!("{}/v1/campaigns/{campaign}/issues", api.running.base_url))
        .header("X-API-KEY", &api.key)
        .header("Content-Type", "application/json")
        .body(body)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("the runner answers")
        .status()
        .as_u16()
}

/// The series of one metric: each one's labels and value.
fn series(page: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    page.lines()
        .filter_map(|line| line.strip_prefix(name)?.strip_prefix('{'))
        .filter_map(|rest| {
            let (labels, value) = rest.split_once("} ")?;
            let labels = labels
                .split(',')
                .filter_map(|l| {
                    let (k, v) = l.split_once('=')?;
                    Some((k.to_owned(), v.trim_matches('"').to_owned()))
                })
                .collect();
            Some((labels, value.trim().parse().ok()?))
        })
        .collect()
}

/// One metric's values by the value of `label`, over the series whose other labels match `with`.
fn counts(page: &str, name: &str, label: &str, with: &[(&str, &str)]) -> BTreeMap<String, u64> {
    series(page, name)
        .into_iter()
        .filter(|(labels, _)| with.iter().all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v)))
        .filter_map(|(labels, value)| Some((labels.get(label)?.clone(), value as u64)))
        .collect()
}

async fn scrape(api: &PartnerApi) -> String {
    let page = api
        .http
        .get(format!("{}/metrics", api.running.base_url))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    page.text().await.unwrap()
}

fn named(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
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
    let campaign = integration_tests::as_id(&created["campaignId"]).expect("a campaign id");

    // 60 users for 50 coupons, then 10 of the winners again, then 3 requests for no campaign.
    let mut answers = BTreeMap::<u16, u64>::new();
    for i in 0..60 {
        *answers
            .entry(issue(&api, campaign, &format!("u{i}")).await)
            .or_default() += 1;
    }
    // Past the second in which an instance repeats "sold out" from memory: a holder's retry
    // within it would hear 410 (README, "A sold-out sale costs almost nothing").
    tokio::time::sleep(Duration::from_millis(1100)).await;
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
    // And requests refused before Redis is asked: a malformed user id, a body that is not JSON,
    // a campaign id that is not a number.
    let refused = [
        issue_raw(&api, &campaign.to_string(), json!({"userId": ""}).to_string()).await,
        issue_raw(&api, &campaign.to_string(), "{not json".to_owned()).await,
        issue_raw(&api, "abc", json!({"userId": "u1"}).to_string()).await,
    ];
    assert_eq!(refused, [400, 400, 404]);
    assert_eq!(answers, BTreeMap::from([(202, 50), (404, 3), (409, 10), (410, 10)]));

    let page = scrape(&api).await;
    assert_eq!(
        counts(&page, "fcfs_issue_decisions_total", "outcome", &[]),
        named(&[
            ("reserved", 50),
            ("sold_out", 10),
            ("already_issued", 10),
            ("not_found", 4),
            ("invalid", 2)
        ]),
        "{page}"
    );
    assert_eq!(
        counts(
            &page,
            "fcfs_http_requests_total",
            "status",
            &[("route", "/v1/campaigns/{campaignId}/issues"), ("method", "POST")]
        ),
        named(&[("202", 50), ("400", 2), ("404", 4), ("409", 10), ("410", 10)]),
        "every answer counted by its route's template path: {page}"
    );
    assert_eq!(
        counts(
            &page,
            "fcfs_http_requests_total",
            "status",
            &[("route", "/v1/campaigns")]
        ),
        named(&[("201", 1)])
    );
    // The first "sold out" came from Redis; the next ones within its second from memory.
    let remembered: f64 = page
        .lines()
        .find_map(|line| line.strip_prefix("fcfs_issue_answers_from_memory_total "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(
        (1.0..=9.0).contains(&remembered),
        "{remembered} answers from memory: {page}"
    );
    assert!(
        counts(&page, "fcfs_compensations_total", "result", &[]).is_empty(),
        "nothing failed, so nothing was compensated: {page}"
    );
    assert!(
        page.contains("fcfs_http_request_duration_seconds_bucket{"),
        "latency is a histogram with buckets: {page}"
    );

    // The runner's poller hands the 50 reservations to the writer.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let page = scrape(&api).await;
        let rows = counts(&page, "fcfs_writer_rows_total", "result", &[]);
        if rows.get("inserted") == Some(&50) {
            assert_eq!(rows.get("rejected"), Some(&0), "{page}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the writer did not record 50 rows within 60 s: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Every queue of the template, and its DLQ, has its depth and its oldest message's age reported
    // (the issue queue's by its poller, the DLQs' by a peek).
    let queues: Vec<String> = template().queues().unwrap().into_iter().map(|q| q.name).collect();
    assert!(queues.len() >= 2, "the issue queue and its DLQ: {queues:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = scrape(&api).await;
        let ages = series(&page, "fcfs_queue_oldest_message_age_seconds");
        let reported: Vec<String> = queues
            .iter()
            .filter(|q| counts(&page, "fcfs_queue_messages", "state", &[("queue", q.as_str())]).contains_key("visible"))
            .filter(|q| {
                ages.iter()
                    .any(|(labels, age)| labels.get("queue") == Some(*q) && *age >= 0.0)
            })
            .cloned()
            .collect();
        if reported == queues {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "queue depths and ages of {queues:?} not all reported within 30 s; reported: {reported:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
