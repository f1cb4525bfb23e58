//! The monthly grading run end to end: 1,000,000 orders of 30,000 users, a run started through
//! the API and followed until DONE (planner → 64 SQS messages → the runner's grading workers →
//! grades and VIP/GOLD points in chunk transactions), beside the same run's yardstick: one bare
//! `SELECT user_id, SUM(amount) … GROUP BY user_id` over the same rows. Each run grades the month
//! afresh (the previous run, its grades and its points are deleted first).

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use fcfs_shared::adapters::mysql::MySqlStore;
use fcfs_shared::grading::domain::Month;
use fcfs_shared::grading::generate::OrderGenerator;
use serde_json::{Value, json};

use crate::stack::{Services, start_runner};

pub const USERS: u32 = 30_000;
pub const ORDERS: usize = 1_000_000;
const MONTH: &str = "2026-10";

pub struct GradingRun {
    /// From the POST to the GET that saw DONE, seconds.
    pub seconds: f64,
    /// p99 of the live load (issues and grade reads, 8 clients), ms: alone, then during the run.
    pub live_alone_p99: f64,
    pub live_during_p99: f64,
    pub live_errors: u64,
    /// The run's own startedAt → finishedAt.
    pub run_ms: u64,
    pub yardstick: f64,
    pub users: u64,
    pub rewards: u64,
}

pub async fn load(services: &Services, partner: &str) -> Result<f64> {
    let started = Instant::now();
    let store = MySqlStore::new(services.pool.clone()).with_timeout(Duration::from_secs(120));
    let orders: Vec<_> = OrderGenerator::new(Month::parse(MONTH)?, USERS, 1)
        .take(ORDERS)
        .collect();
    for part in orders.chunks(50_000) {
        store.load_orders(partner, part).await?;
    }
    Ok(started.elapsed().as_secs_f64())
}

async fn forget(services: &Services, partner: &str) -> Result<()> {
    for statement in [
        "DELETE s FROM grading_steps s JOIN grading_runs r ON r.id = s.run_id WHERE r.partner_id = ?",
        "DELETE FROM grading_runs WHERE partner_id = ?",
        "DELETE FROM user_grades WHERE partner_id = ?",
        "DELETE FROM grade_rewards WHERE partner_id = ?",
        "DELETE l FROM point_lots l JOIN point_wallets w ON w.id = l.wallet_id WHERE w.partner_id = ?",
        "DELETE FROM point_transactions WHERE partner_id = ?",
        "DELETE FROM point_wallets WHERE partner_id = ?",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .bind(partner)
            .execute(&services.pool)
            .await?;
    }
    Ok(())
}

pub async fn run(services: &Services, partner: &str, key: &str) -> Result<GradingRun> {
    forget(services, partner).await?;
    // The yardstick first, on the same rows (and a warm buffer pool for both).
    let started = Instant::now();
    let totals: Vec<(String, u64)> = sqlx::query_as(
        "SELECT user_id, CAST(SUM(amount) AS UNSIGNED) FROM orders WHERE partner_id = ? AND order_month = 202610 \
         AND status = 'PAID' GROUP BY user_id",
    )
    .bind(partner)
    .fetch_all(&services.pool)
    .await?;
    let yardstick = started.elapsed().as_secs_f64();

    let runner = start_runner(|_| {}).await?;
    let base = runner.base_url.clone();
    let http = &services.http;
    let policy = json!({"tiers": [
        {"grade": "BASIC", "minAmount": 0},
        {"grade": "SILVER", "minAmount": 1_000_000},
        {"grade": "GOLD", "minAmount": 3_000_000, "points": 500},
        {"grade": "VIP", "minAmount": 6_000_000, "points": 2000}
    ]});
    let put = http
        .put(format!("{base}/v1/grading/policy"))
        .header("X-API-KEY", key)
        .json(&policy)
        .send()
        .await?;
    if put.status() != 200 {
        bail!("policy not set: {}", put.text().await?);
    }
    let campaign = services.create_campaign(&base, key, 10_000_000).await?;
    let (alone, alone_errors) = live_load(http, &base, key, campaign, "alone", async {
        tokio::time::sleep(Duration::from_secs(4)).await;
    })
    .await;
    let started = Instant::now();
    let post = http
        .post(format!("{base}/v1/grading/runs"))
        .header("X-API-KEY", key)
        .json(&json!({"month": MONTH}))
        .send()
        .await?;
    let body: Value = post.json().await?;
    let Some(run) = body["runId"].as_str().and_then(|id| id.parse::<u64>().ok()) else {
        bail!("no run started: {body}");
    };
    let deadline = started + Duration::from_secs(600);
    let follow = async {
        loop {
            let body: Value = http
                .get(format!("{base}/v1/grading/runs/{run}"))
                .header("X-API-KEY", key)
                .send()
                .await?
                .json()
                .await?;
            if body["status"] == "DONE" {
                return Ok::<Value, anyhow::Error>(body);
            }
            if body["status"] == "FAILED" || Instant::now() > deadline {
                bail!("the run did not finish: {body}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let (finished, (during, during_errors)) = {
        let done = std::sync::Arc::new(tokio::sync::Notify::new());
        let signal = done.clone();
        let follow = async move {
            let r = follow.await;
            signal.notify_waiters();
            r
        };
        let notified = done.notified();
        tokio::join!(follow, live_load(http, &base, key, campaign, "during", notified))
    };
    let done = finished?;
    let seconds = started.elapsed().as_secs_f64();
    runner.stop().await?;
    let users = done["usersGraded"].as_u64().unwrap_or_default();
    if users != totals.len() as u64 {
        bail!("WRONG RESULT: {users} users graded, {} have paid orders", totals.len());
    }
    let expected_rewards = totals.iter().filter(|(_, paid)| *paid >= 3_000_000).count() as u64;
    let rewards = done["rewardsGranted"].as_u64().unwrap_or_default();
    if rewards != expected_rewards {
        bail!("WRONG RESULT: {rewards} rewards granted, {expected_rewards} users are GOLD or VIP");
    }
    Ok(GradingRun {
        seconds,
        live_alone_p99: p99(alone),
        live_during_p99: p99(during),
        live_errors: alone_errors + during_errors,
        run_ms: done["durationMs"].as_u64().unwrap_or_default(),
        yardstick,
        users,
        rewards,
    })
}

fn p99(mut samples: Vec<Duration>) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort();
    samples[(samples.len() * 99 / 100).min(samples.len() - 1)].as_secs_f64() * 1000.0
}

/// Eight clients, each alternating an issue request (a new user) and a grade read, until `until`
/// resolves: every answer's time, and how many were not 202/200.
async fn live_load(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    campaign: u64,
    label: &str,
    until: impl std::future::Future<Output = ()>,
) -> (Vec<Duration>, u64) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let (http, base, key, stop, label) = (
                http.clone(),
                base.to_owned(),
                key.to_owned(),
                stop.clone(),
                label.to_owned(),
            );
            tokio::spawn(async move {
                let (mut times, mut errors) = (Vec::new(), 0u64);
                let mut i = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    let t = Instant::now();
                    let issue = http
                        .post(format!("{base}/v1/campaigns/{campaign}/issues"))
                        .header("X-API-KEY", &key)
                        .json(&json!({"userId": format!("live-{label}-{c}-{i}")}))
                        .send()
                        .await;
                    times.push(t.elapsed());
                    if !matches!(&issue, Ok(r) if r.status() == 202) {
                        errors += 1;
                    }
                    let t = Instant::now();
                    let user = OrderGenerator::user_id(i % USERS);
                    let grade = http
                        .get(format!("{base}/v1/users/{user}/grade?month={MONTH}"))
                        .header("X-API-KEY", &key)
                        .send()
                        .await;
                    times.push(t.elapsed());
                    if !matches!(&grade, Ok(r) if r.status() == 200) {
                        errors += 1;
                    }
                }
                (times, errors)
            })
        })
        .collect();
    until.await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut times, mut errors) = (Vec::new(), 0);
    for client in clients {
        if let Ok((t, e)) = client.await {
            times.extend(t);
            errors += e;
        }
    }
    (times, errors)
}
