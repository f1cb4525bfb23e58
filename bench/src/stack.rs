//! The pieces every scenario uses: the local runner (in-process), the services behind it, wrk,
//! and the correctness checks that decide whether a run counts.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use local_runner::{LocalApp, RunnerConfig, Running, Stats};
use serde::Deserialize;
use serde_json::json;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn env(name: &str) -> Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set: run through `make bench`"))
}

/// `REDIS_URL`'s host and port, as `redis-benchmark -h … -p …` takes them.
pub fn redis_host_port() -> Result<(String, String)> {
    let url = env("REDIS_URL")?;
    let hostport = url.trim_start_matches("redis://").trim_end_matches('/');
    let (host, port) = hostport.split_once(':').unwrap_or((hostport, "6379"));
    Ok((host.to_owned(), port.to_owned()))
}

pub struct Services {
    pub pool: sqlx::MySqlPool,
    pub redis: redis::aio::MultiplexedConnection,
    pub sqs: aws_sdk_sqs::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub http: reqwest::Client,
}

impl Services {
    pub async fn connect() -> Result<Self> {
        let sdk = fcfs_shared::config::aws_sdk_config().await;
        Ok(Self {
            pool: fcfs_shared::adapters::mysql::connect(&env("DATABASE_URL")?, 4).await?,
            redis: redis::Client::open(env("REDIS_URL")?)?
                .get_multiplexed_async_connection()
                .await?,
            sqs: aws_sdk_sqs::Client::new(&sdk),
            dynamodb: aws_sdk_dynamodb::Client::new(&sdk),
            http: reqwest::Client::new(),
        })
    }

    pub async fn new_key(&self, partner: &str) -> Result<String> {
        let keys = fcfs_shared::adapters::dynamodb::DynamoApiKeys::new(self.dynamodb.clone(), env("API_KEYS_TABLE")?);
        let (secret, _) = fcfs_shared::keys::create_key(&keys, partner, None, chrono::Utc::now()).await?;
        Ok(secret.expose().to_owned())
    }

    /// A campaign open now, created through the API the way a partner would.
    pub async fn create_campaign(&self, base: &str, key: &str, quantity: u32) -> Result<u64> {
        let now = chrono::Utc::now();
        let body = json!({
            "name": "bench", "totalQuantity": quantity,
            "issueStartsAt": now - chrono::Duration::minutes(1), "issueEndsAt": now + chrono::Duration::hours(2),
            "couponExpiresAt": now + chrono::Duration::days(7), "discount": {"type": "AMOUNT", "value": 1000}
        });
        let res = self
            .http
            .post(format!("{base}/v1/campaigns"))
            .header("X-API-KEY", key)
            .json(&body)
            .send()
            .await?;
        let status = res.status();
        let created: serde_json::Value = res.json().await?;
        if status != 201 {
            bail!("campaign creation failed: {status} {created}");
        }
        created["campaignId"]
            .as_str()
            .and_then(|id| id.parse::<u64>().ok())
            .context("campaignId")
    }

    /// (rows, distinct users, campaigns.issued_count)
    pub async fn recorded(&self, campaign: u64) -> Result<(i64, i64, i64)> {
        let (rows, distinct): (i64, i64) =
            sqlx::query_as("SELECT COUNT(*), COUNT(DISTINCT user_id) FROM coupons WHERE campaign_id = ?")
                .bind(campaign)
                .fetch_one(&self.pool)
                .await?;
        let (issued,): (i64,) = sqlx::query_as("SELECT CAST(issued_count AS SIGNED) FROM campaigns WHERE id = ?")
            .bind(campaign)
            .fetch_one(&self.pool)
            .await?;
        Ok((rows, distinct, issued))
    }

    /// (Redis counter, Redis holders)
    pub async fn reserved(&self, campaign: u64) -> Result<(i64, i64)> {
        let mut redis = self.redis.clone();
        let count: Option<i64> = redis::cmd("GET")
            .arg(fcfs_shared::adapters::redis::count_key(campaign))
            .query_async(&mut redis)
            .await?;
        let holders: i64 = redis::cmd("HLEN")
            .arg(fcfs_shared::adapters::redis::users_key(campaign))
            .query_async(&mut redis)
            .await?;
        Ok((count.unwrap_or(0), holders))
    }

    /// Waits until MySQL holds `expected` rows for the campaign (the pollers drain behind the
    /// load), then checks every invariant. `Err` names what is wrong: such a run is a failure.
    /// `through_redis`: the coupons were reserved by the issue API (Redis counters must agree),
    /// not queued directly.
    pub async fn verify(
        &self,
        campaign: u64,
        expected: i64,
        accepted: i64,
        through_redis: bool,
        deadline: Duration,
    ) -> Result<Duration> {
        let started = Instant::now();
        loop {
            let (rows, _, _) = self.recorded(campaign).await?;
            if rows >= expected || started.elapsed() > deadline {
                break;
            }
            // Fine enough for a drain of a fifth of a second.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let drained = started.elapsed();
        let (rows, distinct, issued) = self.recorded(campaign).await?;
        let (count, holders) = if through_redis {
            self.reserved(campaign).await?
        } else {
            (expected, expected)
        };
        let facts = format!(
            "expected {expected}, 2xx answers {accepted}, rows {rows}, distinct users {distinct}, issued_count {issued}, redis count {count}, redis holders {holders}"
        );
        if [rows, distinct, issued, count, holders, accepted]
            .iter()
            .any(|v| *v != expected)
        {
            bail!("WRONG RESULT: {facts}");
        }
        Ok(drained)
    }
}

/// The local runner as `make up` runs it but unthrottled, in-process on a free port; `adjust` may
/// re-point a poller.
pub async fn start_runner(adjust: impl FnOnce(&mut LocalApp)) -> Result<Running> {
    start_runner_with(&[], adjust).await
}

/// As [`start_runner`], with variables set for every function over the template's (empty unsets).
pub async fn start_runner_with(env: &[(&str, &str)], adjust: impl FnOnce(&mut LocalApp)) -> Result<Running> {
    // Unthrottled: the bench measures the machine, far past one partner's rate on AWS.
    let mut config = RunnerConfig::from_process(repo_root().join("template.yaml")).unthrottled();
    config
        .env
        .extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let mut app = LocalApp::load(&config).await?;
    adjust(&mut app);
    Ok(app.start().await?)
}

#[derive(Debug, Clone, Deserialize)]
pub struct Counts {
    pub s2xx: i64,
    pub s409: i64,
    pub s410: i64,
    pub s403: i64,
    pub s401: i64,
    pub s5xx: i64,
    pub sother: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WrkRun {
    pub requests: u64,
    pub duration_us: u64,
    pub errors: u64,
    pub counts: Counts,
    pub max_us: u64,
    pub mean_us: f64,
    /// (percentile, µs)
    pub percentiles: Vec<(f64, u64)>,
}

impl WrkRun {
    pub fn rate(&self) -> f64 {
        self.requests as f64 / (self.duration_us as f64 / 1e6)
    }

    pub fn p(&self, percentile: f64) -> f64 {
        self.percentiles
            .iter()
            .find(|(p, _)| (*p - percentile).abs() < 1e-9)
            .map_or(f64::NAN, |(_, us)| *us as f64 / 1000.0)
    }
}

pub struct Load<'a> {
    pub base: &'a str,
    pub connections: u32,
    pub max_secs: u32,
    pub mode: &'a str,
    pub path: &'a str,
    pub key: &'a str,
    pub users: u64,
    pub limit: u64,
    pub prefix: &'a str,
}

/// One wrk run (one thread: the other core serves). With a `limit`, the run ends once the runner
/// has answered that many requests: wrk's own clock would run to `-d` even after its script stops
/// sending, so it is interrupted (SIGINT makes wrk print its results, timed to that moment).
pub async fn wrk(load: &Load<'_>, stats: &Stats) -> Result<WrkRun> {
    let script = repo_root().join("bench/lua/load.lua");
    let baseline = stats.requests.load(Ordering::Relaxed);
    let mut child = tokio::process::Command::new("wrk")
        .arg("-t1")
        .arg(format!("-c{}", load.connections))
        .arg(format!("-d{}s", load.max_secs))
        .args(["--timeout", "10s", "-s"])
        .arg(&script)
        .arg(load.base)
        .arg("--")
        .args([load.mode, load.path, load.key])
        .arg(load.users.to_string())
        .arg(load.limit.to_string())
        .arg(load.prefix)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot run wrk (scripts/install.sh installs it with FCFS_BENCH=1)")?;
    if load.limit > 0 {
        let pid = child.id().context("wrk exited at once")?;
        while child.try_wait()?.is_none() {
            if stats.requests.load(Ordering::Relaxed) - baseline >= load.limit {
                tokio::process::Command::new("kill")
                    .args(["-INT", &pid.to_string()])
                    .status()
                    .await?;
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let output = child.wait_with_output().await?;
    // Invocations wrk stopped waiting for still run to their end: let them, so the counters that
    // decide correctness are final.
    while stats.in_flight.load(Ordering::Relaxed) > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().rev().find(|l| l.starts_with('{')).with_context(|| {
        format!(
            "wrk printed no result: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    Ok(serde_json::from_str(line)?)
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}
