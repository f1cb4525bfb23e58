//! `fcfs-admin`: the operator's command line. Works against a local stack and real AWS alike:
//! endpoints come from `AWS_ENDPOINT_URL` and `DATABASE_URL`.

mod events;
mod grading;
mod keys;
mod ledger;
mod limits;
mod points;
mod preflight;
mod provision;
mod secret;
mod throttle;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "fcfs-admin", version, about = "fcfs-coupons operator CLI")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply the sqlx migrations in migrations/ to DATABASE_URL.
    Migrate {
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: String,
    },
    /// Compare Redis's issue state (places, counter, pending, outcomes) with MySQL's records
    /// (coupons, rejections, counters) per campaign and print the differences; with --repair, fix
    /// those that are safe to fix while the sale goes on. Exits with 2 if differences remain.
    Reconcile {
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: String,
        #[command(flatten)]
        redis: ledger::RedisArgs,
        /// Only this campaign (default: every campaign).
        #[arg(long)]
        campaign: Option<u64>,
        #[arg(long)]
        repair: bool,
    },
    /// Replace Redis's issue state (rules, holders, counter, outcomes) with what MySQL recorded,
    /// after Redis lost it. Places still pending keep their request. Refuses while the issue
    /// queue or its DLQ holds messages (their places would be sold again) unless --force.
    RebuildLedger {
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: String,
        #[command(flatten)]
        redis: ledger::RedisArgs,
        /// The issue queue (template resource IssueQueue); its DLQ is found from its redrive policy.
        #[arg(long, env = "ISSUE_QUEUE_URL")]
        queue_url: String,
        /// Only this campaign (default: every campaign).
        #[arg(long)]
        campaign: Option<u64>,
        /// Rebuild although messages are queued.
        #[arg(long)]
        force: bool,
    },
    /// One recovery run now (the scheduled function runs one every minute): re-send places
    /// pending longer than the grace, release those that can no longer be sent. Prints a summary.
    Recover {
        #[command(flatten)]
        redis: ledger::RedisArgs,
        #[arg(long, env = "ISSUE_QUEUE_URL")]
        queue_url: String,
        /// Seconds a place must have been pending (requests younger may still be sending).
        #[arg(long, env = "RECOVERY_GRACE_SECS", default_value_t = 60)]
        grace_secs: u64,
    },
    /// Partner API keys: create, list, revoke.
    Keys {
        /// The key table (template resource ApiKeysTable).
        #[arg(long, env = "API_KEYS_TABLE", global = true)]
        table: Option<String>,
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Store DATABASE_URL's credentials as a Secrets Manager secret in RDS's JSON form (username,
    /// password, host, port, dbname), creating it or putting a new value; prints
    /// DATABASE_SECRET_ARN=<arn>. The functions read credentials only from such a secret.
    DatabaseSecret {
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: String,
        /// The secret's name.
        #[arg(long)]
        name: String,
    },
    /// Point wallets: verify that balances are explained by lots and history; set a partner's
    /// default validity of earned points.
    Points {
        #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
        database_url: Option<String>,
        #[command(subcommand)]
        command: points::PointsCommand,
    },
    /// Partners' events: a webhook's delivery status; replay from a time (resumes paused deliveries).
    Events {
        #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
        database_url: Option<String>,
        #[command(subcommand)]
        command: events::EventsCommand,
    },
    /// Partners' limits: how many live campaigns and orders a month one partner may hold.
    Limits {
        #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
        database_url: Option<String>,
        #[command(subcommand)]
        command: limits::LimitsCommand,
    },
    /// Partners' orders: generate a realistic month of them (load tests, the bench).
    Orders {
        #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
        database_url: Option<String>,
        #[command(subcommand)]
        command: grading::OrdersCommand,
    },
    /// Monthly grading: start a month's run and follow it.
    Grading {
        #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
        database_url: Option<String>,
        #[command(subcommand)]
        command: grading::GradingCommand,
    },
    /// Before a deploy or a big sale: whether the account's Lambda concurrency fits the stack's
    /// reservations and what request rate API Gateway lets a sale reach, with numbers (stderr),
    /// and the same as JSON (stdout). Exits with 1 when the stack cannot deploy.
    Preflight {
        #[arg(long, default_value = "template.yaml")]
        template: PathBuf,
        /// The parameters the deploy will be given, NAME=VALUE (repeatable).
        #[arg(long = "param", value_parser = fcfs_template::parse_param)]
        params: Vec<(String, String)>,
    },
    /// Create the queues and tables template.yaml declares, on the endpoint AWS_ENDPOINT_URL names
    /// (meant for local emulators; on AWS, `sam deploy` creates them). Idempotent. Prints the
    /// resource variables functions read (KEY=value), for .local/env.
    Provision {
        #[arg(long, default_value = "template.yaml")]
        template: PathBuf,
        /// Template parameter override, NAME=VALUE (repeatable).
        #[arg(long = "param", value_parser = fcfs_template::parse_param)]
        params: Vec<(String, String)>,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::DatabaseSecret { database_url, name } => {
            let sdk = fcfs_shared::config::aws_sdk_config().await;
            let arn = secret::put(&aws_sdk_secretsmanager::Client::new(&sdk), &name, &database_url).await?;
            println!("DATABASE_SECRET_ARN={arn}");
        }
        Command::Migrate { database_url } => {
            let pool = fcfs_shared::adapters::mysql::connect(&database_url, 1)
                .await
                .context("cannot connect to the database")?;
            fcfs_shared::adapters::mysql::migrate(&pool)
                .await
                .context("migration failed")?;
            eprintln!("migrations applied");
        }
        Command::Reconcile {
            database_url,
            redis,
            campaign,
            repair,
        } => {
            let stores = ledger::Stores::connect(&database_url, &redis).await?;
            let remaining = stores.reconcile(campaign, repair).await?;
            if remaining > 0 {
                eprintln!("{remaining} difference(s) remain");
                std::process::exit(2);
            }
        }
        Command::RebuildLedger {
            database_url,
            redis,
            queue_url,
            campaign,
            force,
        } => {
            let sqs = aws_sdk_sqs::Client::new(&fcfs_shared::config::aws_sdk_config().await);
            if force {
                eprintln!("--force: not checking the queues");
            } else {
                ledger::ensure_drained(&sqs, &queue_url).await?;
            }
            let stores = ledger::Stores::connect(&database_url, &redis).await?;
            stores.rebuild(campaign).await?;
        }
        Command::Recover {
            redis,
            queue_url,
            grace_secs,
        } => {
            let summary = ledger::recover(&redis, &queue_url, std::time::Duration::from_secs(grace_secs)).await?;
            println!("{}", serde_json::to_string(&summary)?);
        }
        Command::Keys { table, command } => {
            let Some(table) = table else {
                bail!("the key table is not set: pass --table or set API_KEYS_TABLE (in .local/env after `make up`)");
            };
            keys::run(&table, command).await?;
        }
        Command::Events { database_url, command } => {
            let Some(database_url) = database_url else {
                bail!(
                    "the database is not set: pass --database-url or set DATABASE_URL (in .local/env after `make up`)"
                );
            };
            events::run(&database_url, command).await?;
        }
        Command::Points { database_url, command } => {
            let Some(database_url) = database_url else {
                bail!(
                    "the database is not set: pass --database-url or set DATABASE_URL (in .local/env after `make up`)"
                );
            };
            points::run(&database_url, command).await?;
        }
        Command::Limits { database_url, command } => {
            let Some(database_url) = database_url else {
                bail!(
                    "the database is not set: pass --database-url or set DATABASE_URL (in .local/env after `make up`)"
                );
            };
            limits::run(&database_url, command).await?;
        }
        Command::Orders { database_url, command } => {
            let Some(database_url) = database_url else {
                bail!(
                    "the database is not set: pass --database-url or set DATABASE_URL (in .local/env after `make up`)"
                );
            };
            grading::orders(&database_url, command).await?;
        }
        Command::Grading { database_url, command } => {
            let Some(database_url) = database_url else {
                bail!(
                    "the database is not set: pass --database-url or set DATABASE_URL (in .local/env after `make up`)"
                );
            };
            grading::grading(&database_url, command).await?;
        }
        Command::Preflight { template, params } => {
            let params: BTreeMap<_, _> = params.into_iter().collect();
            if !preflight::run(&template, &params).await? {
                std::process::exit(1);
            }
        }
        Command::Provision { template, params } => {
            // Queue URLs are built on SQS's endpoint, which may be another emulator than the rest's.
            let Some(endpoint) = fcfs_shared::config::local_sqs_endpoint(|name| std::env::var(name).ok()) else {
                bail!(
                    "AWS_ENDPOINT_URL is not set: provision creates resources on a local emulator only (use `sam deploy` for AWS)"
                );
            };
            let params: BTreeMap<_, _> = params.into_iter().collect();
            let env = provision::provision(&template, &params, &endpoint).await?;
            for (k, v) in env {
                println!("{k}={v}");
            }
        }
    }
    Ok(())
}
