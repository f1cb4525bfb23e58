//! What a function prints for CloudWatch is valid Embedded Metric Format: the issue API, over
//! in-memory fakes, with the recorder its `main.rs` installs on Lambda. Its own test binary: the
//! recorder is process-wide.

use std::path::PathBuf;
use std::sync::Arc;

use campaign_api::CampaignApi;
use fcfs_shared::telemetry::{Emf, NAMESPACE};
use fcfs_shared::testkit::{MemoryCatalog, MemoryLedger, MemoryQueue};
use issue_api::IssueApi;
use serde_json::Value;

fn http(name: &str) -> lambda_http::Request {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../events").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    lambda_http::request::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// CloudWatch's units (PutMetricData's `StandardUnit`).
const UNITS: &[&str] = &[
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// The rules of the EMF specification a document must follow; the metric names it carries.
fn check_emf(doc: &Value) -> Vec<String> {
    let aws = &doc["_aws"];
    assert!(
        aws["Timestamp"].as_u64().is_some_and(|t| t > 1_700_000_000_000),
        "{doc}"
    );
    let directives = aws["CloudWatchMetrics"].as_array().expect("CloudWatchMetrics");
    assert!(!directives.is_empty(), "{doc}");
    let mut names = Vec::new();
    for directive in directives {
        assert_eq!(directive["Namespace"], NAMESPACE, "{doc}");
        for set in directive["Dimensions"].as_array().expect("Dimensions") {
            let set = set.as_array().expect("a dimension set");
            assert!(set.len() <= 30, "{doc}");
            for dimension in set {
                let name = dimension.as_str().expect("a dimension name");
                assert!(
                    doc[name].is_string(),
                    "dimension {name} has a string value at the root: {doc}"
                );
            }
        }
        for metric in directive["Metrics"].as_array().expect("Metrics") {
            let name = metric["Name"].as_str().expect("a metric name");
            let value = &doc[name];
            assert!(
                value.is_number() || value.as_array().is_some_and(|a| a.iter().all(Value::is_number)),
                "metric {name} has a number at the root: {doc}"
            );
            if let Some(unit) = metric.get("Unit") {
                assert!(UNITS.contains(&unit.as_str().unwrap_or("")), "unit {unit} of {name}");
            }
            names.push(name.to_owned());
        }
    }
    names
}

#[tokio::test]
async fn a_functions_metrics_are_valid_emf_with_its_request_id() {
    let emf = Emf::init("issue-api").unwrap();
    let catalog = Arc::new(MemoryCatalog::default());
    let ledger = Arc::new(MemoryLedger::default());
    let campaigns = CampaignApi::new(catalog.clone(), ledger.clone());
    assert_eq!(campaigns.handle(http("campaign-api-create.json")).await.status(), 201);
    let issues = IssueApi::new(catalog, ledger, MemoryQueue::default());
    assert_eq!(issues.handle(http("issue-api-issue.json")).await.status(), 202);
    assert_eq!(issues.handle(http("issue-api-issue.json")).await.status(), 409);

    let mut out = Vec::new();
    emf.flush_to("request-1", &mut out);
    let text = String::from_utf8(out).unwrap();
    let docs: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(!docs.is_empty(), "nothing written");
    let mut names = Vec::new();
    for doc in &docs {
        names.extend(check_emf(doc));
        assert_eq!(
            doc["requestId"], "request-1",
            "the request id joins metrics and logs: {doc}"
        );
        assert_eq!(doc["function"], "issue-api", "{doc}");
    }
    for expected in [
        "fcfs_issue_decisions_total",
        "fcfs_http_requests_total",
        "fcfs_http_request_duration_seconds",
    ] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {text}");
    }
    let decisions: Vec<&Value> = docs
        .iter()
        .filter(|d| d.get("fcfs_issue_decisions_total").is_some())
        .collect();
    let by_outcome = |outcome: &str| {
        decisions
            .iter()
            .find(|d| d["outcome"] == outcome)
            .map(|d| d["fcfs_issue_decisions_total"].clone())
    };
    assert_eq!(by_outcome("reserved"), Some(1.into()), "{text}");
    assert_eq!(by_outcome("already_issued"), Some(1.into()), "{text}");
}
