//! Campaigns a partner manages through the runner (template.yaml's API) on the real stack: listed
//! by status page by page, changed (name, end, quantity, paused) while a sale runs, without a
//! coupon over the quantity or a 202 lost, and only by their partner.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use integration_tests::{PartnerApi, api_key, as_id, queue_with_dlq, runner_config, serve, sqs, unique};
use serde_json::{Value, json};

/// A runner on a queue pair of its own: a runner that stops takes the messages it received with
/// it until their visibility timeout, so tests running beside each other must not share one.
async fn partner_api(prefix: &str) -> PartnerApi {
    let (queue, dlq) = queue_with_dlq(&sqs().await, 30).await;
    let config = runner_config(&[
        ("ISSUE_QUEUE_URL", queue),
        ("ISSUE_DLQ_URL", dlq),
        ("DB_MAX_CONNECTIONS", "8".to_owned()),
    ]);
    PartnerApi::on(prefix, serve(config).await).await
}

async fn call(api: &PartnerApi, method: reqwest::Method, path: &str, key: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = api
        .http
        .request(method, format!("{}{path}", api.running.base_url))
        .header("X-API-KEY", key)
        .timeout(Duration::from_secs(30));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let res = request.send().await.expect("the runner answers");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn create(api: &PartnerApi, quantity: u64, starts_in: chrono::Duration) -> u64 {
    let now = chrono::Utc::now();
    let (status, created) = call(
        api,
        reqwest::Method::POST,
        "/v1/campaigns",
        &api.key,
        Some(json!({"name": "managed", "totalQuantity": quantity,
            "issueStartsAt": now + starts_in, "issueEndsAt": now + chrono::Duration::hours(2),
            "couponExpiresAt": now + chrono::Duration::days(7), "discount": {"type": "AMOUNT", "value": 100}})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    as_id(&created["campaignId"]).expect("a campaign id")
}

async fn change(api: &PartnerApi, campaign: u64, body: Value) -> (u16, Value) {
    call(
        api,
        reqwest::Method::PATCH,
        &format!("/v1/campaigns/{campaign}"),
        &api.key,
        Some(body),
    )
    .await
}

async fn issue(api: &PartnerApi, campaign: u64, user: &str) -> (u16, Value) {
    let path = format!("/v1/campaigns/{campaign}/issues");
    call(
        api,
        reqwest::Method::POST,
        &path,
        &api.key,
        Some(json!({"userId": user})),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changes_race_a_live_sale_without_a_coupon_over_the_quantity_or_a_202_lost() {
    const USERS: usize = 400;
    let api = std::sync::Arc::new(partner_api("managing").await);
    let campaign = create(&api, 50, chrono::Duration::minutes(-1)).await;

    let sale = {
        let api = api.clone();
        tokio::spawn(async move {
            let mut calls = Vec::new();
            for i in 0..USERS {
                let api = api.clone();
                calls.push(tokio::spawn(async move {
                    let user = format!("u{i}");
                    (user.clone(), issue(&api, campaign, &user).await)
                }));
                if i % 25 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            let mut answers = Vec::new();
            for call in calls {
                answers.push(call.await.unwrap());
            }
            answers
        })
    };
    // Meanwhile: pause, resume, lower (perhaps below what is taken by then), raise.
    let mut changes = Vec::new();
    for body in [
        json!({"paused": true}),
        json!({"paused": false}),
        json!({"totalQuantity": 20}),
        json!({"totalQuantity": 120, "name": "more"}),
        json!({"issueEndsAt": chrono::Utc::now() + chrono::Duration::hours(3)}),
    ] {
        let (status, answer) = change(&api, campaign, body.clone()).await;
        assert!(
            status == 200 || (status == 409 && answer["error"] == "BELOW_RESERVED"),
            "{body} → {status} {answer}"
        );
        changes.push(status);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let answers = sale.await.unwrap();
    let mut winners = HashSet::new();
    for (user, (status, body)) in &answers {
        match status {
            202 => assert!(winners.insert(user.clone())),
            410 => assert_eq!(body["error"], "SOLD_OUT"),
            423 => assert_eq!(body["error"], "PAUSED"),
            other => panic!("{user}: unexpected {other} {body}"),
        }
    }
    let (status, view) = call(
        &api,
        reqwest::Method::GET,
        &format!("/v1/campaigns/{campaign}"),
        &api.key,
        None,
    )
    .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(
        (view["name"].as_str(), view["totalQuantity"].as_u64()),
        (Some("more"), Some(120)),
        "{view}"
    );
    assert!(winners.len() <= 120, "{} places for 120", winners.len());
    assert_eq!(view["reserved"].as_u64(), Some(winners.len() as u64), "{view}");

    // Every 202 ends ISSUED: the writer records exactly the winners, none refused.
    let deadline = Instant::now() + Duration::from_secs(60);
    let coupons: HashSet<String> = loop {
        let users: Vec<String> = sqlx::query_scalar("SELECT user_id FROM coupons WHERE campaign_id = ?")
            .bind(campaign)
            .fetch_all(&api.pool)
            .await
            .unwrap();
        if users.len() >= winners.len() || Instant::now() > deadline {
            break users.into_iter().collect();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(coupons, winners, "changes: {changes:?}");
    let refused: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM coupon_rejections WHERE campaign_id = ?")
        .bind(campaign)
        .fetch_one(&api.pool)
        .await
        .unwrap();
    assert_eq!(refused, 0, "no accepted request was refused by MySQL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_lists_and_changes_its_own_campaigns_only() {
    let api = partner_api("listing").await;
    let scheduled = create(&api, 5, chrono::Duration::hours(1)).await;
    let open = create(&api, 5, chrono::Duration::minutes(-1)).await;
    let paused = create(&api, 5, chrono::Duration::minutes(-1)).await;
    assert_eq!(issue(&api, paused, "early").await.0, 202);

    let (status, body) = change(&api, paused, json!({"paused": true})).await;
    assert_eq!(
        (status, &body["status"], &body["paused"]),
        (200, &json!("PAUSED"), &json!(true)),
        "{body}"
    );
    let (status, body) = issue(&api, paused, "late").await;
    assert_eq!((status, &body["error"]), (423, &json!("PAUSED")), "{body}");
    let (status, body) = issue(&api, paused, "early").await;
    assert_eq!(status, 409, "a holder is still answered: {body}");

    let list = |query: &str| {
        let path = format!("/v1/campaigns{query}");
        let api = &api;
        async move {
            let (status, body) = call(api, reqwest::Method::GET, &path, &api.key, None).await;
            assert_eq!(status, 200, "{path}: {body}");
            let ids: Vec<u64> = body["campaigns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| as_id(&c["campaignId"]).unwrap())
                .collect();
            (ids, body["nextCursor"].as_str().map(str::to_owned))
        }
    };
    assert_eq!(list("").await, (vec![paused, open, scheduled], None));
    assert_eq!(list("?status=PAUSED").await.0, vec![paused]);
    assert_eq!(list("?status=OPEN").await.0, vec![open]);
    assert_eq!(list("?status=SCHEDULED").await.0, vec![scheduled]);
    assert_eq!(list("?status=ENDED").await.0, Vec::<u64>::new());
    // Page by page, each cursor where the last page stopped.
    let (first, cursor) = list("?limit=2").await;
    assert_eq!(
        (first, cursor.as_deref()),
        (vec![paused, open], Some(open.to_string().as_str()))
    );
    assert_eq!(
        list(&format!("?limit=2&cursor={}", cursor.unwrap())).await,
        (vec![scheduled], None)
    );

    // What a change may not do is refused, naming the field; nothing changes.
    for (body, status, field) in [
        (json!({}), 400, "body"),
        (json!({"totalQuantity": 0}), 400, "totalQuantity"),
        (json!({"issueEndsAt": "2000-01-01T00:00:00Z"}), 400, "issueEndsAt"),
        (json!({"paused": null}), 400, "paused"),
        (json!({"totalQuantity": 5, "color": "red"}), 400, "color"),
    ] {
        let (got, answer) = change(&api, open, body.clone()).await;
        assert_eq!(
            (got, answer["field"].as_str()),
            (status, Some(field)),
            "{body}: {answer}"
        );
    }
    assert_eq!(issue(&api, open, "a").await.0, 202);
    assert_eq!(issue(&api, open, "b").await.0, 202);
    let (status, body) = change(&api, open, json!({"totalQuantity": 1})).await;
    assert_eq!(
        (status, &body["error"], &body["field"]),
        (409, &json!("BELOW_RESERVED"), &json!("totalQuantity")),
        "{body}"
    );
    assert_eq!(change(&api, open, json!({"totalQuantity": 2})).await.0, 200);
    assert_eq!(issue(&api, open, "c").await.0, 410, "2 of 2 taken");

    // Another partner's campaign is not found, as an unknown one.
    let stranger = api_key(&unique("stranger")).await;
    let path = format!("/v1/campaigns/{open}");
    let (status, _) = call(
        &api,
        reqwest::Method::PATCH,
        &path,
        &stranger,
        Some(json!({"paused": true})),
    )
    .await;
    assert_eq!(status, 404);
    let (status, body) = call(&api, reqwest::Method::GET, "/v1/campaigns", &stranger, None).await;
    assert_eq!(
        (status, body["campaigns"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{body}"
    );
    let (status, body) = call(&api, reqwest::Method::GET, "/v1/campaigns?sort=id", &api.key, None).await;
    assert_eq!((status, body["field"].as_str()), (400, Some("query")), "{body}");
}
