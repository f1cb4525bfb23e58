//! `fcfs-admin orders generate` (a realistic month of orders, loaded fast) and
//! `fcfs-admin grading run` (start a month's run, and with --wait follow it to the end).

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use fcfs_shared::adapters::mysql::{MySqlStore, connect};
use fcfs_shared::adapters::sqs::SqsPartitionQueue;
use fcfs_shared::grading::GradingService;
use fcfs_shared::grading::domain::{DEFAULT_PARTITIONS, Month, RunStatus};
use fcfs_shared::grading::generate::OrderGenerator;
use fcfs_shared::grading::ports::GradingRecords;

#[derive(Subcommand)]
pub enum OrdersCommand {
    /// Load a generated month of orders for a partner (multi-row inserts), with a progress bar.
    /// Deterministic for a seed; order ids `o-<month>-<n>`, so a second run adds nothing.
    Generate {
        #[arg(long)]
        partner: String,
        #[arg(long, default_value_t = 30_000)]
        users: u32,
        #[arg(long, default_value_t = 1_000_000)]
        orders: u64,
        /// YYYY-MM.
        #[arg(long)]
        month: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

#[derive(Subcommand)]
pub enum GradingCommand {
    /// Start a month's run (one per partner and month: an existing run is returned) for one
    /// partner, or for every partner with a policy, and print the run ids; with --wait, show
    /// their progress until they finish.
    Run {
        /// Only this partner (default: every partner with a grading policy).
        #[arg(long)]
        partner: Option<String>,
        /// YYYY-MM.
        #[arg(long)]
        month: String,
        #[arg(long)]
        wait: bool,
        /// The grading queue (template resource GradingQueue).
        #[arg(long, env = "GRADING_QUEUE_URL")]
        queue_url: String,
        #[arg(long, env = "GRADING_PARTITIONS", default_value_t = DEFAULT_PARTITIONS)]
        partitions: u32,
        /// Give up waiting after this many seconds (the runs go on).
        #[arg(long, default_value_t = 3600)]
        timeout_secs: u64,
    },
}

async fn store(database_url: &str) -> Result<MySqlStore> {
    Ok(MySqlStore::new(
        connect(database_url, 4)
            .await
            .context("cannot connect to the database")?,
    )
    .with_timeout(Duration::from_secs(600)))
}

/// `[#####     ] 50% label` on one line of stderr.
fn bar(done: u64, total: u64, label: &str) {
    let width = 40;
    let filled = (done.min(total) * width / total.max(1)) as usize;
    eprint!(
        "\r[{}{}] {:>3}% {label}   ",
        "#".repeat(filled),
        " ".repeat(width as usize - filled),
        done.min(total) * 100 / total.max(1)
    );
    let _ = std::io::stderr().flush();
}

pub async fn orders(database_url: &str, command: OrdersCommand) -> Result<()> {
    let OrdersCommand::Generate {
        partner,
        users,
        orders,
        month,
        seed,
    } = command;
    let month = Month::parse(&month).map_err(|e| anyhow::anyhow!("--month: {}", e.reason))?;
    if users == 0 || orders == 0 {
        bail!("--users and --orders must be at least 1");
    }
    let store = store(database_url).await?;
    let started = Instant::now();
    let mut generator = OrderGenerator::new(month, users, seed);
    let (mut made, mut inserted) = (0u64, 0u64);
    // Four bulk inserts in flight keep MariaDB busy while the next batch is generated.
    let batch = 20_000;
    while made < orders {
        let n = batch.min(orders - made);
        let chunk: Vec<_> = generator.by_ref().take(n as usize).collect();
        let parts: Vec<&[_]> = chunk.chunks(chunk.len().div_ceil(4)).collect();
        let loads = parts.iter().map(|part| store.load_orders(&partner, part));
        for loaded in futures_util::future::join_all(loads).await {
            inserted += loaded?;
        }
        made += n;
        let rate = made as f64 / started.elapsed().as_secs_f64().max(0.001);
        bar(made, orders, &format!("{made}/{orders} orders, {rate:.0}/s"));
    }
    eprintln!();
    eprintln!(
        "{inserted} orders inserted ({} already there) for {users} users of {partner} in {month}, in {:.1} s",
        orders - inserted,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

pub async fn grading(database_url: &str, command: GradingCommand) -> Result<()> {
    let GradingCommand::Run {
        partner,
        month,
        wait,
        queue_url,
        partitions,
        timeout_secs,
    } = command;
    let month = Month::parse(&month).map_err(|e| anyhow::anyhow!("--month: {}", e.reason))?;
    let sdk = fcfs_shared::config::aws_sdk_config().await;
    let queue = SqsPartitionQueue::new(aws_sdk_sqs::Client::new(&sdk), queue_url);
    let service = GradingService::new(store(database_url).await?, queue).with_partitions(partitions);
    let partners = match partner {
        Some(p) => vec![p],
        None => service.records().partners_with_policy().await?,
    };
    if partners.is_empty() {
        bail!("no partner has a grading policy (PUT /v1/grading/policy)");
    }
    let mut runs = Vec::new();
    for partner in &partners {
        let run = service.start_run(partner, month).await?;
        println!("{partner} {}", run.run_id);
        runs.push((partner.clone(), run.run_id));
    }
    if !wait {
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    loop {
        let (mut done, mut total, mut users, mut rewards, mut finished) = (0u64, 0u64, 0u64, 0u64, 0usize);
        for (partner, id) in &runs {
            let run = service
                .records()
                .run(partner, *id)
                .await?
                .with_context(|| format!("run {id} disappeared"))?;
            if run.status == RunStatus::Failed {
                eprintln!();
                bail!("run {id} of {partner} failed");
            }
            done += u64::from(run.partitions_done);
            total += u64::from(run.partitions_total);
            users += run.users_graded;
            rewards += run.rewards_granted;
            finished += usize::from(run.status == RunStatus::Done);
        }
        bar(
            done,
            total,
            &format!(
                "{done}/{total} partitions, {users} users graded, {rewards} rewards, {finished}/{} runs done",
                runs.len()
            ),
        );
        if finished == runs.len() {
            eprintln!();
            for (partner, id) in &runs {
                if let Some(run) = service.records().run(partner, *id).await? {
                    eprintln!(
                        "run {id} of {partner} for {month} done: {} users graded, {} rewards granted, {} ms",
                        run.users_graded,
                        run.rewards_granted,
                        run.duration_ms.unwrap_or_default()
                    );
                }
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            eprintln!();
            bail!("runs still going after {timeout_secs} s (they go on)");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
