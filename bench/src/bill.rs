//! The bill: what a flash sale asks of each AWS service, counted in the run (never assumed), and
//! what that costs at the published us-east-1 prices of `bench/aws-prices.json`.
//!
//! Counted around one run of a scenario, from the services themselves:
//! - Redis: `INFO commandstats` (calls per command; a script's own calls are counted too, though
//!   ElastiCache bills the script as one request), `INFO stats` (bytes in and out) and `INFO cpu`
//!   (the main thread's CPU). ECPUs as ElastiCache Serverless counts them: a simple command is 1
//!   ECPU (per KB moved), and a request that takes more vCPU time takes proportionally more —
//!   measured here as Redis's CPU over the CPU of one GET (with its network round, as a request
//!   costs), timed with `redis-benchmark` in the same run ([`simple_command_cpu`]);
//! - SQS: the runner's `fcfs_sqs_requests_total` (every attempt of every client: the issue API's
//!   sends, the pollers that stand for Lambda's event source mappings, recovery);
//! - Lambda: the runner's `fcfs_function_invocations_total` and `fcfs_function_duration_seconds`
//!   (each invocation's wall time, what Lambda bills, at the function's `MemorySize`);
//! - Aurora: MariaDB's `Handler_write/update/delete` (rows written to tables, server-wide; its
//!   temporary tables count apart, in `Handler_tmp_*`) and
//!   `Innodb_os_log_written` (Aurora writes only its log; a write I/O is up to 4 KiB of it). The
//!   sales run without the relay, so a snapshot first sequences what waits, as the relay would:
//!   each event's own row is written there, from the chunk's packed row, and belongs to the sale;
//! - EventBridge: partner events recorded (each is one custom event on the bus);
//! - CPU: the bench process's own (the runner: gateway and functions in-process).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use fcfs_shared::adapters::mysql::MySqlStore;
use fcfs_shared::events::ports::EventLog;
use fcfs_shared::events::relay::SEQUENCE_BATCH;

use crate::events::WAITING_EVENTS;
use crate::stack::{Services, repo_root};

/// One moment's counters.
pub struct Snapshot {
    redis_commands: BTreeMap<String, (u64, u64)>,
    redis_bytes: u64,
    metrics: String,
    innodb: BTreeMap<String, u64>,
    /// Partner events recorded so far: sequenced, or waiting in rows of their own or packed.
    events_recorded: u64,
    cpu_seconds: f64,
    redis_cpu: f64,
}

/// Seconds of CPU Redis's main thread has used (what a request costs it, commands and I/O alike).
async fn redis_cpu(redis: &mut redis::aio::MultiplexedConnection) -> Result<f64> {
    let cpu: String = redis::cmd("INFO").arg("cpu").query_async(redis).await?;
    let field = |name: &str| info_field::<f64>(&cpu, name);
    match (field("used_cpu_user_main_thread"), field("used_cpu_sys_main_thread")) {
        (Some(user), Some(sys)) => Ok(user + sys),
        _ => Ok(field("used_cpu_user").unwrap_or(0.0) + field("used_cpu_sys").unwrap_or(0.0)),
    }
}

/// The yardstick of one ECPU: Redis's CPU seconds per GET (a simple command: 1 ECPU), from
/// 200,000 GETs by `redis-benchmark` (50 clients, one command per round trip, as the runner sends).
pub async fn simple_command_cpu(services: &Services) -> Result<f64> {
    const GETS: u32 = 200_000;
    let mut redis = services.redis.clone();
    let (host, port) = crate::stack::redis_host_port()?;
    let before = redis_cpu(&mut redis).await?;
    let out = tokio::process::Command::new("redis-benchmark")
        .args([
            "-h",
            &host,
            "-p",
            &port,
            "-c",
            "50",
            "-n",
            &GETS.to_string(),
            "-q",
            "-t",
            "get",
        ])
        .output()
        .await
        .context("cannot run redis-benchmark")?;
    anyhow::ensure!(
        out.status.success(),
        "redis-benchmark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let used = redis_cpu(&mut redis).await? - before;
    anyhow::ensure!(used > 0.0, "Redis reported no CPU for {GETS} GETs");
    Ok(used / f64::from(GETS))
}

impl Snapshot {
    pub async fn take(services: &Services, runner_base: &str) -> Result<Self> {
        sequence_waiting_events(services).await?;
        let mut redis = services.redis.clone();
        let redis_cpu = redis_cpu(&mut redis).await?;
        let commandstats: String = redis::cmd("INFO").arg("commandstats").query_async(&mut redis).await?;
        let stats: String = redis::cmd("INFO").arg("stats").query_async(&mut redis).await?;
        let metrics = services
            .http
            .get(format!("{runner_base}/metrics"))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        let innodb: Vec<(String, String)> = sqlx::query_as(
            "SHOW GLOBAL STATUS WHERE Variable_name IN \
             ('Handler_write', 'Handler_update', 'Handler_delete', 'Innodb_os_log_written')",
        )
        .fetch_all(&services.pool)
        .await?;
        // The sequence given plus what waits: an event committed since the sequencing above counts
        // in this window too, once.
        let events_recorded: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT CAST((SELECT position FROM event_cursors WHERE name = 'sequence') + {WAITING_EVENTS} AS SIGNED)",
        )))
        .fetch_one(&services.pool)
        .await?;
        Ok(Self {
            redis_commands: command_stats(&commandstats),
            redis_bytes: info_field::<u64>(&stats, "total_net_input_bytes").unwrap_or(0)
                + info_field::<u64>(&stats, "total_net_output_bytes").unwrap_or(0),
            metrics,
            innodb: innodb
                .into_iter()
                .filter_map(|(name, value)| Some((name, value.parse().ok()?)))
                .collect(),
            events_recorded: events_recorded.max(0).unsigned_abs(),
            cpu_seconds: process_cpu_seconds()?,
            redis_cpu,
        })
    }
}

/// Sequences every waiting event, in the relay's transactions (at most 10 minutes): the rows the
/// relay writes for a sale's events are the sale's.
async fn sequence_waiting_events(services: &Services) -> Result<()> {
    let log = MySqlStore::new(services.pool.clone()).with_timeout(Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut sequenced = 0u64;
    loop {
        let n = log
            .sequence(SEQUENCE_BATCH)
            .await
            .context("sequencing the waiting events")?;
        sequenced += u64::from(n);
        if n == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "events still waiting after 10 minutes ({sequenced} sequenced)"
        );
        if sequenced % 100_000 < u64::from(n) {
            eprintln!("[bench]   the bill: {sequenced} waiting events sequenced, as the relay would");
        }
    }
}

/// `cmdstat_evalsha:calls=12,usec=34,…` → evalsha → (calls, µs).
fn command_stats(info: &str) -> BTreeMap<String, (u64, u64)> {
    info.lines()
        .filter_map(|line| {
            let (name, fields) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |key: &str| {
                fields
                    .split(',')
                    .find_map(|f| f.strip_prefix(key)?.strip_prefix('=')?.parse::<u64>().ok())
            };
            Some((name.to_owned(), (field("calls")?, field("usec")?)))
        })
        .collect()
}

fn info_field<T: std::str::FromStr>(info: &str, name: &str) -> Option<T> {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
}

/// User + system CPU of this process, from `/proc/self/stat` (in USER_HZ = 100 ticks per second).
fn process_cpu_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The command name may hold spaces; the fields after its closing parenthesis do not.
    let after = stat.rsplit_once(')').context("/proc/self/stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name and state.
    Ok((ticks(11) + ticks(12)) / 100.0)
}

/// `name{label="value",…} number` lines of a Prometheus page → value of `label` → number.
fn series(page: &str, name: &str, label: &str) -> BTreeMap<String, f64> {
    let prefix = format!("{name}{{");
    let wanted = format!("{label}=\"");
    page.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let (labels, value) = rest.rsplit_once("} ")?;
            let start = labels.find(&wanted)? + wanted.len();
            let end = labels[start..].find('"')? + start;
            Some((labels[start..end].to_owned(), value.trim().parse::<f64>().ok()?))
        })
        .fold(BTreeMap::new(), |mut all, (key, value)| {
            *all.entry(key).or_default() += value;
            all
        })
}

fn delta(after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

/// What one scenario's run asked of each service.
pub struct Usage {
    pub label: String,
    pub requests: u64,
    pub accepted: u64,
    redis_calls: BTreeMap<String, (u64, f64)>,
    /// Seconds of Redis's main thread.
    redis_cpu: f64,
    redis_kb: f64,
    sqs: BTreeMap<String, f64>,
    /// function → (invocations, seconds, memory MB)
    lambda: BTreeMap<String, (f64, f64, u32)>,
    cpu_seconds: f64,
    rows_written: u64,
    log_bytes: u64,
    events: u64,
}

impl Usage {
    /// ECPUs: Redis's CPU in GETs' worth (`simple_cpu`, seconds per GET), at least 1 per KB moved.
    fn ecpus(&self, simple_cpu: f64) -> f64 {
        (self.redis_cpu / simple_cpu).max(self.redis_kb)
    }

    pub fn between(label: &str, before: &Snapshot, after: &Snapshot, requests: u64, accepted: i64) -> Result<Self> {
        let redis_calls: BTreeMap<String, (u64, f64)> = after
            .redis_commands
            .iter()
            .filter_map(|(name, (calls, usec))| {
                let (calls0, usec0) = before.redis_commands.get(name).copied().unwrap_or((0, 0));
                let calls = calls.checked_sub(calls0).filter(|c| *c > 0)?;
                Some((name.clone(), (calls, usec.saturating_sub(usec0) as f64 / calls as f64)))
            })
            .collect();
        let redis_kb = after.redis_bytes.saturating_sub(before.redis_bytes) as f64 / 1024.0;
        let sqs = delta(
            &series(&after.metrics, "fcfs_sqs_requests_total", "operation"),
            &series(&before.metrics, "fcfs_sqs_requests_total", "operation"),
        );
        let invocations = delta(
            &series(&after.metrics, "fcfs_function_invocations_total", "function"),
            &series(&before.metrics, "fcfs_function_invocations_total", "function"),
        );
        let seconds = delta(
            &series(&after.metrics, "fcfs_function_duration_seconds_sum", "function"),
            &series(&before.metrics, "fcfs_function_duration_seconds_sum", "function"),
        );
        // Scheduled functions cost by the hour whatever the traffic: only functions that API
        // Gateway or a queue invokes are billed per request.
        let memory = request_driven_memory()?;
        let lambda = invocations
            .into_iter()
            .filter_map(|(function, count)| {
                let secs = seconds.get(&function).copied().unwrap_or(0.0);
                let mb = *memory.get(&function)?;
                Some((function, (count, secs, mb)))
            })
            .collect();
        let innodb = |name: &str| {
            after
                .innodb
                .get(name)
                .copied()
                .unwrap_or(0)
                .saturating_sub(before.innodb.get(name).copied().unwrap_or(0))
        };
        Ok(Self {
            label: label.to_owned(),
            requests,
            accepted: accepted.max(0).unsigned_abs(),
            redis_calls,
            redis_cpu: after.redis_cpu - before.redis_cpu,
            redis_kb,
            sqs,
            lambda,
            cpu_seconds: after.cpu_seconds - before.cpu_seconds,
            rows_written: innodb("Handler_write") + innodb("Handler_update") + innodb("Handler_delete"),
            log_bytes: innodb("Innodb_os_log_written"),
            events: after.events_recorded.saturating_sub(before.events_recorded),
        })
    }
}

/// `MemorySize` of each function that runs on demand (no schedule): routes, the authorizer, queues.
fn request_driven_memory() -> Result<BTreeMap<String, u32>> {
    let template = fcfs_template::Template::load(
        &repo_root().join("template.yaml"),
        &BTreeMap::new(),
        fcfs_template::Placement::local("http://127.0.0.1:1", "us-east-1"),
    )?;
    Ok(template
        .functions()?
        .into_iter()
        .filter(|f| f.schedules.is_empty())
        .map(|f| (f.logical_id, f.memory_mb))
        .collect())
}

/// `bench/aws-prices.json`: USD per unit, with where each came from and when.
pub struct Prices {
    retrieved: String,
    values: BTreeMap<String, f64>,
}

impl Prices {
    pub fn load() -> Result<Self> {
        let path = repo_root().join("bench/aws-prices.json");
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path)?).with_context(|| format!("{}", path.display()))?;
        let values = doc["prices"]
            .as_object()
            .context("aws-prices.json: prices")?
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v["usd"].as_f64()?)))
            .collect();
        Ok(Self {
            retrieved: doc["retrieved"].as_str().unwrap_or("?").to_owned(),
            values,
        })
    }

    fn usd(&self, name: &str) -> f64 {
        self.values.get(name).copied().unwrap_or(f64::NAN)
    }
}

/// Dollars per line of the bill for one run's usage.
struct Dollars {
    api_gateway: f64,
    lambda_requests: f64,
    lambda_duration: f64,
    sqs: f64,
    redis: f64,
    aurora_io: f64,
    events: f64,
}

impl Dollars {
    fn of(u: &Usage, p: &Prices, simple_cpu: f64) -> Self {
        let invocations: f64 = u.lambda.values().map(|(n, _, _)| n).sum();
        // Lambda bills each invocation's duration rounded up to the millisecond: at least 1 ms.
        let gb_seconds: f64 = u
            .lambda
            .values()
            .map(|(n, secs, mb)| secs.max(n * 0.001) * f64::from(*mb) / 1024.0)
            .sum();
        Self {
            api_gateway: u.requests as f64 * p.usd("api_gateway_rest_request"),
            lambda_requests: invocations * p.usd("lambda_request"),
            lambda_duration: gb_seconds * p.usd("lambda_gb_second_arm64"),
            sqs: u.sqs.values().sum::<f64>() * p.usd("sqs_standard_request"),
            redis: u.ecpus(simple_cpu) * p.usd("elasticache_serverless_valkey_ecpu"),
            aurora_io: (u.log_bytes as f64 / 4096.0).ceil() * p.usd("aurora_io_request"),
            events: u.events as f64 * p.usd("eventbridge_custom_event"),
        }
    }

    fn total(&self) -> f64 {
        self.api_gateway
            + self.lambda_requests
            + self.lambda_duration
            + self.sqs
            + self.redis
            + self.aurora_io
            + self.events
    }

    fn scaled(&self, by: f64) -> Self {
        Self {
            api_gateway: self.api_gateway * by,
            lambda_requests: self.lambda_requests * by,
            lambda_duration: self.lambda_duration * by,
            sqs: self.sqs * by,
            redis: self.redis * by,
            aurora_io: self.aurora_io * by,
            events: self.events * by,
        }
    }

    fn plus(&self, other: &Self) -> Self {
        Self {
            api_gateway: self.api_gateway + other.api_gateway,
            lambda_requests: self.lambda_requests + other.lambda_requests,
            lambda_duration: self.lambda_duration + other.lambda_duration,
            sqs: self.sqs + other.sqs,
            redis: self.redis + other.redis,
            aurora_io: self.aurora_io + other.aurora_io,
            events: self.events + other.events,
        }
    }
}

/// The report's section: per million requests of each scenario, and a 100,000-coupon sale with
/// 1,000,000 requests made of the sold-out and accepted scenarios' costs.
/// Also gives the sale's total, when both scenarios ran.
pub fn section(usages: &[Usage], prices: &Prices, simple_cpu: f64) -> (String, Option<f64>) {
    let mut d = String::new();
    let _ = writeln!(
        d,
        "### The bill (per million requests, us-east-1)\n\nCounted around the first run of each scenario (see \
         `bench/src/bill.rs` for what is read where), scaled to a million requests, and priced from \
         `bench/aws-prices.json` (retrieved {}): API Gateway REST, Lambda arm64, SQS standard, ElastiCache \
         Serverless Valkey, Aurora Standard I/O, EventBridge custom events. One ECPU: a GET, which took \
         {:.2} µs of Redis's main thread in this run (`redis-benchmark`, 50 clients).\n",
        prices.retrieved,
        simple_cpu * 1e6
    );
    let _ = writeln!(
        d,
        "| per million requests | {} |",
        usages.iter().map(|u| u.label.as_str()).collect::<Vec<_>>().join(" | ")
    );
    let _ = writeln!(d, "| --- |{}", " --- |".repeat(usages.len()));
    let per_million = |u: &Usage| 1e6 / u.requests.max(1) as f64;
    let row = |d: &mut String, what: &str, cell: &dyn Fn(&Usage) -> String| {
        let _ = writeln!(
            d,
            "| {what} | {} |",
            usages.iter().map(cell).collect::<Vec<_>>().join(" | ")
        );
    };
    row(&mut d, "accepted (202)", &|u| {
        format!("{:.0}", u.accepted as f64 * per_million(u))
    });
    row(&mut d, "Redis commands", &|u| {
        let total: u64 = u.redis_calls.values().map(|(c, _)| c).sum();
        format!("{:.0}", total as f64 * per_million(u))
    });
    row(
        &mut d,
        "Redis commands, top 3 (µs/call; a script's own calls included)",
        &|u| {
            let mut top: Vec<_> = u.redis_calls.iter().collect();
            top.sort_by_key(|(_, (calls, _))| std::cmp::Reverse(*calls));
            top.iter()
                .take(3)
                .map(|(name, (calls, per))| format!("{name} {:.0} ({per:.1})", *calls as f64 * per_million(u)))
                .collect::<Vec<_>>()
                .join(", ")
        },
    );
    row(&mut d, "ElastiCache ECPUs (Redis CPU ms; KB moved)", &|u| {
        format!(
            "{:.0} ({:.0} ms; {:.0} KB)",
            u.ecpus(simple_cpu) * per_million(u),
            u.redis_cpu * 1000.0 * per_million(u),
            u.redis_kb * per_million(u)
        )
    });
    row(&mut d, "SQS requests", &|u| {
        let parts: Vec<String> = u
            .sqs
            .iter()
            .map(|(op, n)| format!("{op} {:.0}", n * per_million(u)))
            .collect();
        format!(
            "{:.0} ({})",
            u.sqs.values().sum::<f64>() * per_million(u),
            parts.join(", ")
        )
    });
    row(&mut d, "Lambda invocations (mean ms)", &|u| {
        u.lambda
            .iter()
            .map(|(f, (n, secs, _))| {
                format!(
                    "{} {:.0} ({:.2})",
                    f.trim_end_matches("Function"),
                    n * per_million(u),
                    1000.0 * secs / n.max(1.0)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    });
    row(&mut d, "runner CPU ms per request (gateway + functions)", &|u| {
        format!("{:.3}", 1000.0 * u.cpu_seconds / u.requests.max(1) as f64)
    });
    row(&mut d, "Aurora rows written (log KB)", &|u| {
        format!(
            "{:.0} ({:.0} KB)",
            u.rows_written as f64 * per_million(u),
            u.log_bytes as f64 / 1024.0 * per_million(u)
        )
    });
    row(&mut d, "partner events published", &|u| {
        format!("{:.0}", u.events as f64 * per_million(u))
    });
    let dollars: Vec<Dollars> = usages
        .iter()
        .map(|u| Dollars::of(u, prices, simple_cpu).scaled(per_million(u)))
        .collect();
    let money = |d: &mut String, what: &str, f: &dyn Fn(&Dollars) -> f64| {
        let _ = writeln!(
            d,
            "| {what} | {} |",
            dollars
                .iter()
                .map(|x| format!("${:.4}", f(x)))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    };
    money(&mut d, "$ API Gateway (REST)", &|x| x.api_gateway);
    money(&mut d, "$ Lambda requests", &|x| x.lambda_requests);
    money(&mut d, "$ Lambda duration (arm64)", &|x| x.lambda_duration);
    money(&mut d, "$ SQS", &|x| x.sqs);
    money(&mut d, "$ ElastiCache ECPUs (Valkey)", &|x| x.redis);
    money(&mut d, "$ Aurora I/O (Standard)", &|x| x.aurora_io);
    money(&mut d, "$ EventBridge", &|x| x.events);
    money(&mut d, "**$ total**", &Dollars::total);
    let find = |label: &str| usages.iter().position(|u| u.label.starts_with(label));
    let mut sale_total = None;
    if let (Some(sold_out), Some(accepted)) = (find("sold out"), find("accepted")) {
        // 900,000 requests that find the sale sold out (or are the same users again) and 100,000
        // that each take a coupon.
        let sale = dollars[sold_out].scaled(0.9).plus(&dollars[accepted].scaled(0.1));
        let _ = writeln!(
            d,
            "\n**A 100,000-coupon sale with 1,000,000 requests** (900,000 priced as the sold-out run's, 100,000 as the \
             accepted run's): API Gateway ${:.2}, Lambda ${:.2} (requests) + ${:.2} (duration), SQS ${:.2}, \
             ElastiCache ${:.4}, Aurora I/O ${:.4}, EventBridge ${:.2}: **${:.2}** in all, before the costs by \
             the hour (Aurora's instance, ElastiCache's stored data: at least 100 MB for Valkey).\n",
            sale.api_gateway,
            sale.lambda_requests,
            sale.lambda_duration,
            sale.sqs,
            sale.redis,
            sale.aurora_io,
            sale.events,
            sale.total(),
        );
        sale_total = Some(sale.total());
    }
    (d, sale_total)
}
