//! Partner events during a flash sale: a webhook registered for the bench partner's
//! `coupon.issued`, the flash-sale mix run, and every coupon's event awaited at a local receiver.
//! Measured: events per second from the first commit to the last arrival, and each event's delay
//! from its commit (`occurredAt`, taken in the writer's chunk transaction) to its arrival. The
//! yardstick is the receiver's own rate: 100-event POSTs sent back to back on one connection, the
//! most one partner's deliveries (one POST at a time, in order) could reach here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

/// What one run measured.
pub struct EventsRun {
    pub events: u64,
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mix_rate: f64,
    pub yardstick: f64,
}

/// First arrival of each event id, and every event's envelope.
#[derive(Default)]
pub struct Received {
    first: HashMap<String, (DateTime<Utc>, Value)>,
    posts: u64,
}

async fn receive(State(received): State<Arc<Mutex<Received>>>, body: Bytes) -> &'static str {
    let now = Utc::now();
    if let Ok(value) = serde_json::from_slice::<Value>(&body) {
        let mut received = received.lock().unwrap_or_else(|e| e.into_inner());
        received.posts += 1;
        for event in value["events"].as_array().into_iter().flatten() {
            if let Some(id) = event["id"].as_str() {
                received.first.entry(id.to_owned()).or_insert((now, event.clone()));
            }
        }
    }
    "ok"
}

/// A receiver on 127.0.0.1: its URL and what it received.
pub async fn receiver() -> Result<(String, Arc<Mutex<Received>>)> {
    let received = Arc::new(Mutex::new(Received::default()));
    let app = Router::new()
        .route("/hooks", post(receive))
        .with_state(Arc::clone(&received));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hooks", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, received))
}

/// Registers `url` for the partner's `coupon.issued` (replacing any registration).
pub async fn register(base: &str, key: &str, url: &str) -> Result<()> {
    let client = reqwest::Client::new();
    let answer = client
        .put(format!("{base}/v1/webhooks"))
        .header("x-api-key", key)
        .json(&json!({ "url": url, "events": ["coupon.issued"] }))
        .send()
        .await?;
    if !answer.status().is_success() {
        bail!("registering the webhook: {} {}", answer.status(), answer.text().await?);
    }
    Ok(())
}

pub async fn unregister(base: &str, key: &str) -> Result<()> {
    reqwest::Client::new()
        .delete(format!("{base}/v1/webhooks"))
        .header("x-api-key", key)
        .send()
        .await?;
    Ok(())
}

/// Events committed and not yet sequenced, as a scalar subquery: a packed outbox row (a chunk's
/// many events) holds as many as its `subject` says.
pub const WAITING_EVENTS: &str = "(SELECT COALESCE(SUM(IF(type = 'packed', CAST(subject AS UNSIGNED), 1)), 0) \
     FROM partner_events WHERE sequence IS NULL)";

/// Waits (at most `deadline`) until the relay has sequenced every event the earlier scenarios
/// left (their sales ran with the relay off) and, with `bus`, put every one on the bus.
pub async fn catch_up(pool: &sqlx::MySqlPool, deadline: Duration, bus: bool) -> Result<()> {
    let started = Instant::now();
    loop {
        let (unsequenced, unpublished): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT CAST({WAITING_EVENTS} AS SIGNED), \
             CAST((SELECT position FROM event_cursors WHERE name = 'sequence') AS SIGNED) \
             - CAST((SELECT position FROM event_cursors WHERE name = 'eventbridge') AS SIGNED)",
        )))
        .fetch_one(pool)
        .await?;
        let unpublished = if bus { unpublished.max(0) } else { 0 };
        if unsequenced == 0 && unpublished == 0 {
            return Ok(());
        }
        if started.elapsed() >= deadline {
            bail!("after {deadline:?}: {unsequenced} events still to sequence, {unpublished} to put on the bus");
        }
        eprintln!("[bench]   the relay catching up: {unsequenced} events to sequence, {unpublished} to put on the bus");
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

/// Waits (at most `deadline`) for `expected` distinct `coupon.issued` events of `campaign`, then
/// measures them. `mix_rate`: the sale's own request rate in this run.
pub async fn measure(
    received: &Arc<Mutex<Received>>,
    campaign: u64,
    expected: u64,
    deadline: Duration,
    mix_rate: f64,
) -> Result<EventsRun> {
    let campaign = campaign.to_string();
    let started = Instant::now();
    let issued = loop {
        let issued: Vec<(DateTime<Utc>, Value)> = {
            let received = received.lock().unwrap_or_else(|e| e.into_inner());
            received
                .first
                .values()
                .filter(|(_, e)| e["type"] == "coupon.issued" && e["data"]["campaignId"] == campaign.as_str())
                .cloned()
                .collect()
        };
        if issued.len() as u64 >= expected || started.elapsed() >= deadline {
            break issued;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut coupons: Vec<&str> = issued
        .iter()
        .filter_map(|(_, e)| e["data"]["couponId"].as_str())
        .collect();
    coupons.sort_unstable();
    coupons.dedup();
    if issued.len() as u64 != expected || coupons.len() as u64 != expected {
        bail!(
            "{} coupon.issued events ({} distinct coupons) arrived within {deadline:?}; {expected} coupons were issued",
            issued.len(),
            coupons.len()
        );
    }
    let mut delays_ms = Vec::with_capacity(issued.len());
    let (mut first_commit, mut last_arrival) = (None::<DateTime<Utc>>, None::<DateTime<Utc>>);
    for (arrived, event) in &issued {
        let committed: DateTime<Utc> = event["occurredAt"]
            .as_str()
            .context("an event without occurredAt")?
            .parse()?;
        delays_ms.push((*arrived - committed).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        first_commit = Some(first_commit.map_or(committed, |f| f.min(committed)));
        last_arrival = Some(last_arrival.map_or(*arrived, |l| l.max(*arrived)));
    }
    delays_ms.sort_by(f64::total_cmp);
    let at = |q: f64| delays_ms[((delays_ms.len() as f64 * q).ceil() as usize).clamp(1, delays_ms.len()) - 1];
    let span = match (first_commit, last_arrival) {
        (Some(f), Some(l)) => (l - f).num_microseconds().unwrap_or(1).max(1) as f64 / 1e6,
        _ => 1.0,
    };
    Ok(EventsRun {
        events: expected,
        rate: expected as f64 / span,
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: at(1.0),
        mix_rate,
        yardstick: post_rate().await?,
    })
}

/// The yardstick: 100-event bodies (a delivery's size) POSTed one after another for 3 s on one
/// connection to a receiver like the one above; events per second.
async fn post_rate() -> Result<f64> {
    let (url, _received) = receiver().await?;
    let event = json!({"id": "evt_1", "type": "coupon.issued", "partnerId": "bench", "occurredAt": "2026-12-03T00:00:00.000Z",
        "sequence": 1, "data": {"couponId": "1", "campaignId": "1", "userId": "u", "issuedAt": "2026-12-03T00:00:00.000Z",
        "expiresAt": "2026-12-31T00:00:00.000Z"}});
    let body = json!({ "events": vec![event; 100] }).to_string();
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut posts = 0_u64;
    while started.elapsed() < Duration::from_secs(3) {
        client
            .post(&url)
            .header("content-type", "application/json")
            .header("x-fcfs-signature", "t=0,v1=00")
            .body(body.clone())
            .send()
            .await?
            .error_for_status()?;
        posts += 1;
    }
    Ok(posts as f64 * 100.0 / started.elapsed().as_secs_f64())
}
