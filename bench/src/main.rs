//! `make bench`: every figure beside a yardstick measured in the same run, medians of several runs,
//! correctness checked after each load (a fast wrong result is reported as a failure). Writes
//! `docs/benchmarks.md` and the latency plot `docs/benchmarks-latency.png`.

mod bill;
mod checkout;
mod coupons;
mod events;
mod grading;
mod points;
mod report;
mod stack;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use authorizer::{CacheSettings, Decision, KeyAuthorizer};
use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use clap::Parser;
use fcfs_shared::adapters::mysql::MySqlStore;
use fcfs_shared::issuance::domain::Reservation;
use fcfs_shared::kernel::UserId;
use issue_writer::IssueWriter;
use local_runner::Running;
use report::Report;
use stack::{Load, Services, WrkRun, env, median, start_runner, start_runner_with, wrk};

/// The same allocator as `fcfs-runner`, whose code the bench serves in-process.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "fcfs-bench",
    about = "Benchmarks of fcfs-coupons against this machine's own limits"
)]
struct Args {
    /// Runs per measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Connections for the flash-sale mix (it is also run once at 64 and 256).
    #[arg(long, default_value_t = 128)]
    connections: u32,
    /// Markdown report to rewrite.
    #[arg(long, default_value = "docs/benchmarks.md")]
    out: std::path::PathBuf,
    /// Only these scenarios (authorizer, mix, accepted, writer, drain, coupons, checkout, points, grading); for working on one.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Write the table's rows as JSON here instead of a report, and skip the mix's extra
    /// connection counts and sold-out runs: how the bench measures its LocalStack comparison rows
    /// in a child process whose environment points SQS at LocalStack.
    #[arg(long)]
    rows_out: Option<std::path::PathBuf>,
}

/// `make bench` sets these: an environment file whose SQS is LocalStack, and LocalStack's label.
const COMPARE_ENV: &str = "FCFS_BENCH_COMPARE_ENV";
const COMPARE_LABEL: &str = "FCFS_BENCH_COMPARE_LABEL";
/// The comparison rows: the SQS-bound scenarios, one run each.
const COMPARED: &str = "mix,accepted,writer,drain";

/// The template's logical id of the event relay.
const EVENT_RELAY: &str = "EventRelayFunction";
const COUPONS: u32 = 10_000;
const MIX_REQUESTS: u64 = 200_000;
const MIX_USERS: u64 = 100_000;
const ACCEPTED_REQUESTS: u64 = 30_000;
const BATCH: usize = 10_000;

fn progress(step: &str) {
    eprintln!("[bench] {step}");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    fcfs_shared::config::init_tracing();
    let started = Instant::now();
    let services = Services::connect().await?;
    let mut report = Report::new(args.runs, args.connections);
    let want = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);

    if want("authorizer") {
        progress("authorizer: cached decisions in-process, then cold lookups against DynamoDB");
        authorizer(&services, &mut report).await?;
    }

    // The event relay publishes every coupon's event to the bus, which locally is LocalStack on
    // these same 2 cores (about half a core for a minute after each sale); on AWS it is its own
    // function and a managed bus. It runs only in the events scenario, which measures it.
    let runner = start_runner(|app| {
        for schedule in &mut app.schedules {
            if schedule.function == EVENT_RELAY {
                schedule.enabled = false;
            }
        }
    })
    .await?;
    let key = services.new_key("bench-partner").await?;
    // What each AWS service is asked for, per scenario (the bill).
    let mut usages = Vec::new();

    if want("mix") {
        progress("yardstick: the runner answering a trivial route (API Gateway's 403 for an unknown path)");
        let mut trivial = Vec::new();
        for run in 0..args.runs {
            let r = wrk(
                &Load {
                    base: &runner.base_url,
                    connections: args.connections,
                    max_secs: 5,
                    mode: "get",
                    path: "/bench/trivial",
                    key: "-",
                    users: 0,
                    limit: 0,
                    prefix: "-",
                },
                &runner.stats,
            )
            .await?;
            progress(&format!(
                "  run {}: {:.0} req/s, p99 {:.2} ms",
                run + 1,
                r.rate(),
                r.p(99.0)
            ));
            trivial.push(r);
        }

        progress("yardstick: Redis running the issue script (EVALSHA, redis-benchmark, 50 clients)");
        let mut evalsha = Vec::new();
        for run in 0..args.runs {
            let rate = evalsha_rate(&services, run).await?;
            progress(&format!("  run {}: {rate:.0} EVALSHA/s", run + 1));
            evalsha.push(rate);
        }

        progress(&format!(
            "flash-sale mix: {MIX_REQUESTS} requests from {MIX_USERS} users for {COUPONS} coupons, {} connections",
            args.connections
        ));
        let mut mix = Vec::new();
        for run in 0..args.runs {
            let before = bill::Snapshot::take(&services, &runner.base_url).await?;
            let m = flash_mix(&services, &runner, &key, args.connections, run).await?;
            if run == 0 {
                let after = bill::Snapshot::take(&services, &runner.base_url).await?;
                let label = "flash-sale mix (10,000 coupons)";
                usages.push(bill::Usage::between(
                    label,
                    &before,
                    &after,
                    m.wrk.requests,
                    m.wrk.counts.s2xx,
                )?);
            }
            mix.push(m);
        }
        let mut other_connections = Vec::new();
        let extra_connections: &[u32] = if args.rows_out.is_some() { &[] } else { &[64, 256] };
        for &connections in extra_connections {
            progress(&format!("flash-sale mix at {connections} connections (one run)"));
            other_connections.push((connections, flash_mix(&services, &runner, &key, connections, 9).await?));
        }
        progress("rejection path: the same mix on a sold-out campaign (no SQS traffic)");
        let mut sold_out = Vec::new();
        let sold_out_runs = if args.rows_out.is_some() { 0 } else { args.runs };
        for run in 0..sold_out_runs {
            let before = bill::Snapshot::take(&services, &runner.base_url).await?;
            let m = flash_mix_of(
                &services,
                &runner,
                &key,
                args.connections,
                20 + run,
                1,
                MIX_REQUESTS / 2,
            )
            .await?;
            if run == 0 {
                let after = bill::Snapshot::take(&services, &runner.base_url).await?;
                usages.push(bill::Usage::between(
                    "sold out",
                    &before,
                    &after,
                    m.wrk.requests,
                    m.wrk.counts.s2xx,
                )?);
            }
            sold_out.push(m);
        }
        report.flash_mix(&trivial, &evalsha, &mix, &other_connections, &sold_out);
    }

    if want("accepted") {
        progress("yardstick: the SQS emulator's SendMessage rate from one client (64 in flight)");
        let mut sends = Vec::new();
        for run in 0..args.runs {
            let rate = sqs_send_rate(&services).await?;
            progress(&format!("  run {}: {rate:.0} SendMessage/s", run + 1));
            sends.push(rate);
        }
        progress(&format!(
            "accepted path: {ACCEPTED_REQUESTS} requests, each a new user (every one enqueues)"
        ));
        let mut accepted = Vec::new();
        for run in 0..args.runs {
            let before = bill::Snapshot::take(&services, &runner.base_url).await?;
            let a = accepted_path(&services, &runner, &key, run).await?;
            if run == 0 {
                let after = bill::Snapshot::take(&services, &runner.base_url).await?;
                let (requests, accepted) = (a.wrk.requests, a.wrk.counts.s2xx);
                usages.push(bill::Usage::between(
                    "accepted (every request a new user)",
                    &before,
                    &after,
                    requests,
                    accepted,
                )?);
            }
            accepted.push(a);
        }
        report.accepted(&sends, &accepted);
    }

    let mut writer_rates = Vec::new();
    if want("writer") || want("drain") {
        progress("writer: one 10,000-message SQS event into the handler, and a raw multi-row INSERT of the same rows");
        let mut raw_rates = Vec::new();
        for run in 0..args.runs {
            let (w, r) = writer(&services, &runner, &key).await?;
            progress(&format!(
                "  run {}: writer {w:.0} rows/s, raw INSERT {r:.0} rows/s",
                run + 1
            ));
            writer_rates.push(w);
            raw_rates.push(r);
        }
        report.writer(&writer_rates, &raw_rates);
    }
    if want("events") {
        progress(&format!(
            "events: the flash-sale mix with a webhook for coupon.issued at a local receiver; commit → delivery of all {COUPONS} events"
        ));
        // Webhooks only: the bus is the relay's other cursor, at its own pace, and locally it is
        // LocalStack on these 2 cores, hundreds of thousands of events behind after the sales
        // above ran without the relay (about 2,400 a second: minutes of a core).
        let runner = start_runner_with(&[("EVENT_BUS_NAME", "")], |_| {}).await?;
        events::catch_up(&services.pool, Duration::from_secs(300), false).await?;
        let (url, received) = events::receiver().await?;
        // A fresh registration starts after the last event sequenced (the earlier scenarios'
        // included); one an interrupted bench left would keep its old position.
        events::unregister(&runner.base_url, &key).await?;
        events::register(&runner.base_url, &key, &url).await?;
        let mut runs = Vec::new();
        for run in 0..args.runs {
            let campaign = services.create_campaign(&runner.base_url, &key, COUPONS).await?;
            let mix = flash_mix_on(
                &services,
                &runner,
                &key,
                args.connections,
                40 + run,
                campaign,
                COUPONS,
                MIX_REQUESTS,
            )
            .await?;
            match events::measure(
                &received,
                campaign,
                COUPONS.into(),
                Duration::from_secs(180),
                mix.wrk.rate(),
            )
            .await
            {
                Ok(r) => {
                    progress(&format!(
                        "  run {}: {} events at {:.0} events/s, commit → delivery p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; the sale {:.0} req/s; receiver {:.0} events/s",
                        run + 1,
                        r.events,
                        r.rate,
                        r.p50_ms,
                        r.p99_ms,
                        r.max_ms,
                        r.mix_rate,
                        r.yardstick
                    ));
                    runs.push(r);
                }
                Err(e) => {
                    progress(&format!("  run {}: WRONG: {e}", run + 1));
                    report.failures += 1;
                }
            }
        }
        events::unregister(&runner.base_url, &key).await?;
        runner.stop().await?;
        report.events(&runs);
    }
    runner.stop().await?;
    if !usages.is_empty() && args.rows_out.is_none() {
        progress("the bill: one ECPU's worth of Redis CPU (redis-benchmark GET)");
        let simple_cpu = bill::simple_command_cpu(&services).await?;
        report.bill(&usages, &bill::Prices::load()?, simple_cpu);
    }

    if want("drain") {
        let mut drains = Vec::new();
        for (fill, what) in [
            (
                Fill::ThroughAdapter,
                format!("{DRAIN_PACKED_ROWS} reservations enqueued at once through the issue API's queue adapter"),
            ),
            (Fill::OnePerMessage, format!("{BATCH} messages of one reservation each")),
        ] {
            progress(&format!("drain: {what} → rows through the runner's poller"));
            let mut runs = Vec::new();
            for run in 0..args.runs {
                let d = drain(&services, &key, fill).await?;
                progress(&format!(
                    "  run {}: {:.0} rows/s ({} rows in {} messages)",
                    run + 1,
                    d.rate,
                    d.rows,
                    d.messages
                ));
                runs.push(d);
            }
            drains.push((fill, runs));
        }
        report.drain(&drains, median(&mut writer_rates.clone()));
    }

    if want("coupons") {
        progress(&format!(
            "coupons: uses over many coupons, attempts on one hot coupon, and a bare FOR UPDATE + UPDATE on one row ({} connections)",
            coupons::WORKERS
        ));
        let mut runs = Vec::new();
        for run in 0..args.runs {
            let r = coupons::run(run).await?;
            progress(&format!(
                "  run {}: many {:.0} uses/s, hot {:.0} attempts/s, bare row {:.0} txn/s",
                run + 1,
                r.many,
                r.hot,
                r.yardstick
            ));
            runs.push(r);
        }
        report.coupons(&runs);
    }

    if want("checkout") {
        progress(&format!(
            "checkout: a hold of a coupon and points then its confirm, over many coupons and wallets, and a bare FOR UPDATE + UPDATE on one row ({} connections)",
            coupons::WORKERS
        ));
        let mut runs = Vec::new();
        for run in 0..args.runs {
            let r = checkout::run(run).await?;
            progress(&format!(
                "  run {}: {:.0} holds+confirms/s, bare row {:.0} txn/s",
                run + 1,
                r.holds,
                r.yardstick
            ));
            runs.push(r);
        }
        report.checkout(&runs);
    }

    if want("points") {
        progress(&format!(
            "points: uses on one hot wallet and over {} wallets, and a bare FOR UPDATE + UPDATE on one wallet row ({} connections)",
            points::WALLETS,
            coupons::WORKERS
        ));
        let mut runs = Vec::new();
        for run in 0..args.runs {
            let r = points::run(run).await?;
            progress(&format!(
                "  run {}: hot {:.0} uses/s, spread {:.0} uses/s, bare row {:.0} txn/s, lock retries {}",
                run + 1,
                r.hot,
                r.spread,
                r.yardstick,
                r.lock_retries
            ));
            runs.push(r);
        }
        report.points(&runs);
    }

    if want("grading") {
        let services = Services::connect().await?;
        let partner = format!("bench-grading-{}", uuid::Uuid::new_v4().simple());
        let key = services.new_key(&partner).await?;
        progress(&format!(
            "grading: {} orders of {} users, the whole run through the API, beside a bare GROUP BY over the same rows",
            grading::ORDERS,
            grading::USERS
        ));
        let loaded = grading::load(&services, &partner).await?;
        progress(&format!("  orders loaded in {loaded:.1} s"));
        let mut runs = Vec::new();
        for run in 0..args.runs {
            let r = grading::run(&services, &partner, &key).await?;
            progress(&format!(
                "  run {}: {:.2} s end to end (run {} ms), bare GROUP BY {:.2} s, {} users, {} rewards; live p99 {:.1} ms alone, {:.1} ms during, {} errors",
                run + 1,
                r.seconds,
                r.run_ms,
                r.yardstick,
                r.users,
                r.rewards,
                r.live_alone_p99,
                r.live_during_p99,
                r.live_errors
            ));
            runs.push(r);
        }
        report.grading(&runs, loaded);
    }

    if let Some(path) = &args.rows_out {
        std::fs::write(path, report.rows_json()?)?;
        if report.failures > 0 {
            bail!("{} run(s) produced a wrong result", report.failures);
        }
        return Ok(());
    }
    if let Ok(env_file) = std::env::var(COMPARE_ENV) {
        compare_on_localstack(&args, &env_file, &mut report).await?;
    }

    report.elapsed = started.elapsed();
    report.write(&args.out)?;
    println!("{}", report.table());
    // The sales above ran without the relay: leave the stack as the bench found it, every event
    // on the bus (else the next relay, `make up`'s or a test's, spends minutes catching up first).
    if std::env::var("EVENT_BUS_NAME").is_ok_and(|name| !name.trim().is_empty()) {
        progress("leaving the stack as it was: the event relay puts what the sales recorded on the bus");
        let relay = start_runner(|_| {}).await?;
        events::catch_up(&services.pool, Duration::from_secs(900), true).await?;
        relay.stop().await?;
    }
    progress(&format!(
        "done in {:.0} s; wrote {}",
        started.elapsed().as_secs_f64(),
        args.out.display()
    ));
    if report.failures > 0 {
        bail!(
            "{} run(s) produced a wrong result: see {}",
            report.failures,
            args.out.display()
        );
    }
    Ok(())
}

/// The SQS-bound scenarios again, once, in a child bench whose SQS is LocalStack (the environment
/// file `make bench` wrote for it), so the report keeps a LocalStack row beside each fauxqs one.
async fn compare_on_localstack(args: &Args, env_file: &str, report: &mut Report) -> Result<()> {
    let label = std::env::var(COMPARE_LABEL).unwrap_or_else(|_| "LocalStack".into());
    progress(&format!(
        "comparison: {COMPARED} once more with SQS on {label} (a child bench)"
    ));
    let text = std::fs::read_to_string(env_file).with_context(|| format!("cannot read {env_file}"))?;
    let rows_out = std::env::temp_dir().join(format!("fcfs-bench-rows-{}.json", std::process::id()));
    let mut child = tokio::process::Command::new(std::env::current_exe()?);
    child
        .args(["--runs", "1", "--only", COMPARED, "--connections"])
        .arg(args.connections.to_string())
        .arg("--rows-out")
        .arg(&rows_out)
        .env_remove("AWS_ENDPOINT_URL_SQS")
        .env_remove(COMPARE_ENV)
        .env("FCFS_SQS_EMULATOR", &label);
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        if let Some((name, value)) = line.split_once('=')
            && name != "PATH"
        {
            child.env(name, value);
        }
    }
    let status = child.status().await.context("cannot start the comparison bench")?;
    let rows: Vec<report::Row> = match std::fs::read_to_string(&rows_out) {
        Ok(json) => serde_json::from_str(&json)?,
        Err(_) => Vec::new(),
    };
    let _ = std::fs::remove_file(&rows_out);
    let failures = usize::from(!status.success());
    report.add_rows(
        rows,
        &label,
        failures,
        &format!(
            "### On LocalStack\n\nThe rows naming {label} come from one run of `{COMPARED}` in a child bench \
             whose SQS is LocalStack (its queues provisioned by `make bench` into `{env_file}`){}.\n\n",
            if status.success() {
                ""
            } else {
                "; **that child failed: see its output above**"
            }
        ),
    );
    Ok(())
}

async fn authorizer(services: &Services, report: &mut Report) -> Result<()> {
    let keys = fcfs_shared::adapters::dynamodb::DynamoApiKeys::new(services.dynamodb.clone(), env("API_KEYS_TABLE")?);
    let auth = KeyAuthorizer::new(keys, CacheSettings::default());
    let key = services.new_key("bench-auth").await?;
    if !matches!(auth.decide(&key, "warm").await, Ok(Decision::Allow(_))) {
        bail!("WRONG RESULT: the authorizer denied a valid key");
    }
    const CACHED: usize = 1_000_000;
    let mut samples = Vec::with_capacity(CACHED);
    let all = Instant::now();
    for _ in 0..CACHED {
        let t = Instant::now();
        let decision = auth.decide(&key, "bench").await;
        samples.push(t.elapsed().as_nanos() as u64);
        if !matches!(decision, Ok(Decision::Allow(_))) {
            bail!("WRONG RESULT: a cached decision denied a valid key");
        }
    }
    let rate = CACHED as f64 / all.elapsed().as_secs_f64();
    samples.sort_unstable();
    let pct = |p: f64| samples[((samples.len() as f64 * p / 100.0) as usize).min(samples.len() - 1)] as f64 / 1000.0;
    let (p50, p99, p999) = (pct(50.0), pct(99.0), pct(99.9));
    if auth.store().lookups() != 1 {
        bail!(
            "WRONG RESULT: {} DynamoDB reads for one cached key",
            auth.store().lookups()
        );
    }
    const COLD: usize = 200;
    let mut fresh = Vec::with_capacity(COLD);
    for _ in 0..COLD {
        fresh.push(services.new_key("bench-auth-cold").await?);
    }
    let mut cold = Vec::with_capacity(COLD);
    for key in &fresh {
        let t = Instant::now();
        let decision = auth.decide(key, "cold").await;
        cold.push(t.elapsed().as_secs_f64() * 1000.0);
        if !matches!(decision, Ok(Decision::Allow(_))) {
            bail!("WRONG RESULT: a cold lookup denied a valid key");
        }
    }
    cold.sort_by(|a, b| a.total_cmp(b));
    let cold_p50 = cold[COLD / 2];
    let cold_p99 = cold[COLD * 99 / 100];
    progress(&format!(
        "  cached: {rate:.0} decisions/s, p50 {p50:.2} µs, p99 {p99:.2} µs, p99.9 {p999:.2} µs; cold: p50 {cold_p50:.2} ms, p99 {cold_p99:.2} ms"
    ));
    report.authorizer(rate, p50, p99, p999, cold_p50, cold_p99, auth.store().lookups());
    Ok(())
}

async fn evalsha_rate(services: &Services, run: usize) -> Result<f64> {
    let mut redis = services.redis.clone();
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(fcfs_shared::adapters::redis::reserve_script_source())
        .query_async(&mut redis)
        .await?;
    // A campaign id no real campaign uses; open window, the same quantity as the mix.
    let id = 9_000_000_000_u64 + std::process::id() as u64 * 10 + run as u64;
    let (rules, users, count, pending) = (
        fcfs_shared::adapters::redis::rules_key(id),
        fcfs_shared::adapters::redis::users_key(id),
        fcfs_shared::adapters::redis::count_key(id),
        fcfs_shared::adapters::redis::pending_key(id),
    );
    redis::cmd("DEL")
        .arg(&users)
        .arg(&count)
        .arg(&pending)
        .exec_async(&mut redis)
        .await?;
    redis::cmd("HSET")
        .arg(&rules)
        .arg(&[
            "quantity",
            &COUPONS.to_string(),
            "startsAt",
            "0",
            "endsAt",
            "99999999999999",
            "partner",
            "bench",
            "expiresAt",
            "99999999999999",
        ])
        .exec_async(&mut redis)
        .await?;
    // As priming leaves it: a campaign without its counter is unprimed to the script.
    redis::cmd("SET").arg(&count).arg(0).exec_async(&mut redis).await?;
    let (host, port) = stack::redis_host_port()?;
    let now = chrono::Utc::now().timestamp_millis().to_string();
    let out = tokio::process::Command::new("redis-benchmark")
        .args([
            "-h", &host, "-p", &port, "-c", "50", "-n", "200000", "-r", "100000", "-q",
        ])
        .args([
            "EVALSHA",
            &sha,
            "4",
            &rules,
            &users,
            &count,
            &pending,
            "u:__rand_int__",
            &now,
            // The request id: one pending field, overwritten, as if every send succeeded at once.
            "bench-request",
            "bench",
        ])
        .output()
        .await
        .context("cannot run redis-benchmark")?;
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
    let rate = text
        .lines()
        .filter_map(|l| {
            l.split(" requests per second")
                .next()?
                .rsplit(' ')
                .next()?
                .parse::<f64>()
                .ok()
        })
        .next_back()
        .with_context(|| format!("redis-benchmark printed no rate: {text}"))?;
    let (reserved, holders) = services.reserved(id).await?;
    if reserved != holders || reserved > COUPONS as i64 {
        bail!("WRONG RESULT: the script issued {reserved} for {holders} holders (quantity {COUPONS})");
    }
    redis::cmd("DEL")
        .arg(&rules)
        .arg(&users)
        .arg(&count)
        .arg(&pending)
        .exec_async(&mut redis)
        .await?;
    Ok(rate)
}

pub struct MixRun {
    pub wrk: WrkRun,
    pub drain_lag: Duration,
    pub verdict: Result<(), String>,
}

async fn flash_mix(services: &Services, runner: &Running, key: &str, connections: u32, run: usize) -> Result<MixRun> {
    flash_mix_of(services, runner, key, connections, run, COUPONS, MIX_REQUESTS).await
}

async fn flash_mix_of(
    services: &Services,
    runner: &Running,
    key: &str,
    connections: u32,
    run: usize,
    coupons: u32,
    requests: u64,
) -> Result<MixRun> {
    let campaign = services.create_campaign(&runner.base_url, key, coupons).await?;
    flash_mix_on(services, runner, key, connections, run, campaign, coupons, requests).await
}

#[allow(clippy::too_many_arguments)]
async fn flash_mix_on(
    services: &Services,
    runner: &Running,
    key: &str,
    connections: u32,
    run: usize,
    campaign: u64,
    coupons: u32,
    requests: u64,
) -> Result<MixRun> {
    let path = format!("/v1/campaigns/{campaign}/issues");
    let prefix = format!("m{run}u");
    let accepted_before = runner.stats.successes.load(Ordering::Relaxed);
    let r = wrk(
        &Load {
            base: &runner.base_url,
            connections,
            max_secs: 180,
            mode: "mix",
            path: &path,
            key,
            users: MIX_USERS,
            limit: requests,
            prefix: &prefix,
        },
        &runner.stats,
    )
    .await?;
    // 202s as the server answered them: wrk stops reading its last in-flight answers.
    let accepted = (runner.stats.successes.load(Ordering::Relaxed) - accepted_before) as i64;
    let verdict = services
        .verify(campaign, coupons as i64, accepted, true, Duration::from_secs(180))
        .await;
    let (drain_lag, verdict) = match verdict {
        Ok(lag) if r.errors == 0 && r.counts.s5xx == 0 => (lag, Ok(())),
        Ok(lag) => (lag, Err(format!("{} socket errors, {} 5xx", r.errors, r.counts.s5xx))),
        Err(e) => (Duration::ZERO, Err(e.to_string())),
    };
    progress(&format!(
        "  run {} ({connections} conn): {} requests, {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms; 202 {} / 409 {} / 410 {}; rows complete {:.1} s after the load; {}",
        run + 1,
        r.requests,
        r.rate(),
        r.p(50.0),
        r.p(99.0),
        r.counts.s2xx,
        r.counts.s409,
        r.counts.s410,
        drain_lag.as_secs_f64(),
        match &verdict {
            Ok(()) => "correct".to_owned(),
            Err(e) => e.clone(),
        }
    ));
    Ok(MixRun {
        wrk: r,
        drain_lag,
        verdict,
    })
}

async fn throwaway_queue(services: &Services, prefix: &str, visibility: u32) -> Result<(String, String)> {
    let url = services
        .sqs
        .create_queue()
        .queue_name(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()))
        .attributes(QueueAttributeName::VisibilityTimeout, visibility.to_string())
        .send()
        .await?
        .queue_url
        .context("queue url")?;
    let arn = fcfs_shared::adapters::sqs::queue_arn(&services.sqs, &url).await?;
    Ok((url, arn))
}

async fn sqs_send_rate(services: &Services) -> Result<f64> {
    const IN_FLIGHT: usize = 64;
    const PER_TASK: usize = 32;
    let (url, _) = throwaway_queue(services, "bench-send", 30).await?;
    let body = serde_json::to_string(&reservation(1, "bench-partner", "yardstick", 1))?;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..IN_FLIGHT {
        let (sqs, url, body) = (services.sqs.clone(), url.clone(), body.clone());
        tasks.spawn(async move {
            for _ in 0..PER_TASK {
                sqs.send_message().queue_url(&url).message_body(&body).send().await?;
            }
            Ok::<_, aws_sdk_sqs::Error>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let rate = (IN_FLIGHT * PER_TASK) as f64 / started.elapsed().as_secs_f64();
    services.sqs.delete_queue().queue_url(&url).send().await?;
    Ok(rate)
}

pub struct AcceptedRun {
    pub wrk: WrkRun,
    pub verdict: Result<(), String>,
}

async fn accepted_path(services: &Services, runner: &Running, key: &str, run: usize) -> Result<AcceptedRun> {
    let campaign = services.create_campaign(&runner.base_url, key, 1_000_000).await?;
    let path = format!("/v1/campaigns/{campaign}/issues");
    let prefix = format!("a{run}");
    let accepted_before = runner.stats.successes.load(Ordering::Relaxed);
    let r = wrk(
        &Load {
            base: &runner.base_url,
            connections: 64,
            max_secs: 120,
            mode: "unique",
            path: &path,
            key,
            users: 0,
            limit: ACCEPTED_REQUESTS,
            prefix: &prefix,
        },
        &runner.stats,
    )
    .await?;
    let accepted = (runner.stats.successes.load(Ordering::Relaxed) - accepted_before) as i64;
    let c = &r.counts;
    let refused = c.s409 + c.s410 + c.s401 + c.s403 + c.s5xx + c.sother;
    let verdict = match services
        .verify(campaign, accepted, accepted, true, Duration::from_secs(120))
        .await
    {
        Ok(_) if refused == 0 && r.errors == 0 => Ok(()),
        Ok(_) => Err(format!("{refused} requests not accepted, {} errors", r.errors)),
        Err(e) => Err(e.to_string()),
    };
    progress(&format!(
        "  run {}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms; {}",
        run + 1,
        r.rate(),
        r.p(50.0),
        r.p(99.0),
        match &verdict {
            Ok(()) => "correct".to_owned(),
            Err(e) => e.clone(),
        }
    ));
    Ok(AcceptedRun { wrk: r, verdict })
}

fn reservation(campaign: u64, partner: &str, user: &str, rank: u32) -> Reservation {
    Reservation::new(
        uuid::Uuid::now_v7(),
        campaign,
        partner,
        UserId::parse(user).expect("bench user ids are valid"),
        rank,
        chrono::Utc::now(),
    )
}

fn reservations(campaign: u64) -> Vec<Reservation> {
    reservations_of(campaign, BATCH)
}

fn reservations_of(campaign: u64, count: usize) -> Vec<Reservation> {
    (1..=count as u32)
        .map(|i| reservation(campaign, "bench-partner", &format!("w{i}"), i))
        .collect()
}

/// (writer rows/s, raw INSERT rows/s), each on a fresh campaign.
async fn writer(services: &Services, runner: &Running, key: &str) -> Result<(f64, f64)> {
    let campaign = services.create_campaign(&runner.base_url, key, BATCH as u32).await?;
    let mut event = SqsEvent::default();
    event.records = reservations(campaign)
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut m = SqsMessage::default();
            m.message_id = Some(format!("msg-{i}"));
            m.body = Some(serde_json::to_string(r).expect("serializable"));
            m
        })
        .collect();
    // The writer as deployed: it also tells Redis each user's outcome after its commit.
    let ledger = fcfs_shared::adapters::redis::RedisIssueLedger::new(&env("REDIS_URL")?)?;
    let settings = fcfs_shared::config::Settings::from_process();
    let chunk_size = settings.or("WRITER_CHUNK_SIZE", issue_writer::DEFAULT_CHUNK_SIZE)?;
    let writer = IssueWriter::new(MySqlStore::new(services.pool.clone()), ledger, chunk_size)
        .with_parallel_chunks(settings.or("WRITER_PARALLEL_CHUNKS", issue_writer::DEFAULT_PARALLEL_CHUNKS)?);
    let started = Instant::now();
    let (response, _) = writer.handle(event).await?;
    let writer_rate = BATCH as f64 / started.elapsed().as_secs_f64();
    let (rows, distinct, issued) = services.recorded(campaign).await?;
    if !response.batch_item_failures.is_empty() || rows != BATCH as i64 || distinct != rows || issued != rows {
        bail!("WRONG RESULT: writer left rows {rows}, distinct {distinct}, issued {issued}");
    }

    let raw_campaign = services.create_campaign(&runner.base_url, key, BATCH as u32).await?;
    let rows = reservations(raw_campaign);
    let mut conn = services.pool.acquire().await?;
    let expires = chrono::Utc::now().naive_utc() + chrono::Duration::days(7);
    let started = Instant::now();
    for chunk in rows.chunks(chunk_size) {
        // The writer's statement without its transaction, IGNORE and counter update.
        let mut insert = fcfs_shared::adapters::mysql::coupon_insert(false, chunk, expires);
        insert.build().execute(&mut *conn).await?;
    }
    let raw_rate = BATCH as f64 / started.elapsed().as_secs_f64();

    Ok((writer_rate, raw_rate))
}

/// One drain: reservations queued on a fresh queue first, then a runner whose writer poller drains
/// it, timed from the runner's start until MySQL holds every row.
pub struct DrainRun {
    pub rows: usize,
    pub messages: u64,
    pub rate: f64,
}

/// How a drain's queue is filled: one reservation per message as a Lambda instance sends them
/// (`SendMessageBatch` of ten), or every reservation at once through the issue API's own queue
/// adapter, which packs what waits together (as a busy runner or container does).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    OnePerMessage,
    ThroughAdapter,
}

pub const DRAIN_PACKED_ROWS: usize = 100_000;

async fn drain(services: &Services, key: &str, fill: Fill) -> Result<DrainRun> {
    let rows = match fill {
        Fill::OnePerMessage => BATCH,
        Fill::ThroughAdapter => DRAIN_PACKED_ROWS,
    };
    let (url, arn) = throwaway_queue(services, "bench-drain", 360).await?;
    // A runner only to create the campaign; the drain's own runner polls the throwaway queue.
    let setup = start_runner(|app| {
        // The writer's poller only: the grading worker's queue carries other messages.
        app.set_source_queue("IssueWriterFunction", &url, &arn);
    })
    .await?;
    let campaign = services.create_campaign(&setup.base_url, key, rows as u32).await?;
    setup.stop().await?;
    let reservations = reservations_of(campaign, rows);
    match fill {
        Fill::OnePerMessage => send_one_per_message(services, &url, &reservations).await?,
        Fill::ThroughAdapter => {
            use fcfs_shared::issuance::ports::ReservationQueue;
            let queue = fcfs_shared::adapters::sqs::SqsReservationQueue::new(services.sqs.clone(), url.clone());
            // Every request of a flash sale's burst waiting on the adapter at once.
            let mut sends = tokio::task::JoinSet::new();
            for r in reservations {
                let queue = queue.clone();
                sends.spawn(async move { queue.enqueue(&r).await });
            }
            while let Some(sent) = sends.join_next().await {
                sent?.map_err(|e| anyhow::anyhow!("enqueue: {e}"))?;
            }
        }
    }
    let messages = queue_depth(services, &url).await?;
    let runner = start_runner(|app| {
        // The writer's poller only: the grading worker's queue carries other messages.
        app.set_source_queue("IssueWriterFunction", &url, &arn);
    })
    .await?;
    let started = Instant::now();
    // Queued directly, never reserved through Redis: only MySQL's side is checked.
    let verdict = services
        .verify(campaign, rows as i64, rows as i64, false, Duration::from_secs(180))
        .await;
    let elapsed = started.elapsed();
    runner.stop().await?;
    services.sqs.delete_queue().queue_url(&url).send().await?;
    verdict?;
    Ok(DrainRun {
        rows,
        messages,
        rate: rows as f64 / elapsed.as_secs_f64(),
    })
}

async fn send_one_per_message(services: &Services, url: &str, reservations: &[Reservation]) -> Result<()> {
    let bodies: Vec<String> = reservations
        .iter()
        .map(|r| serde_json::to_string(r).expect("serializable"))
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    let bodies = Arc::new(bodies);
    for worker in 0..16 {
        let (sqs, url, bodies) = (services.sqs.clone(), url.to_owned(), bodies.clone());
        tasks.spawn(async move {
            for (n, group) in bodies.chunks(10).enumerate().filter(|(n, _)| n % 16 == worker) {
                let entries = group
                    .iter()
                    .enumerate()
                    .map(|(i, b)| {
                        SendMessageBatchRequestEntry::builder()
                            .id(format!("{n}-{i}"))
                            .message_body(b)
                            .build()
                            .expect("id and body set")
                    })
                    .collect();
                sqs.send_message_batch()
                    .queue_url(&url)
                    .set_entries(Some(entries))
                    .send()
                    .await?;
            }
            Ok::<_, aws_sdk_sqs::Error>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

async fn queue_depth(services: &Services, url: &str) -> Result<u64> {
    let attributes = services
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await?;
    attributes
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages))
        .and_then(|v| v.parse().ok())
        .context("the queue reported no depth")
}
