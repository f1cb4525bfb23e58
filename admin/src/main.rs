//! `fcfs-admin`: the operator's command line. Works against a local stack and real AWS alike:
//! endpoints come from `AWS_ENDPOINT_URL` and `DATABASE_URL`.

mod keys;
mod provision;

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
    /// Rebuild Redis's issue state (rules, holders, counter) from MySQL, after Redis lost it.
    /// Run it only with the issue queue drained: in-flight reservations are not in MySQL yet.
    RebuildLedger {
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: String,
        #[arg(long, env = "REDIS_URL")]
        redis_url: String,
        /// Only this campaign (default: every campaign).
        #[arg(long)]
        campaign: Option<u64>,
    },
    /// Partner API keys: create, list, revoke.
    Keys {
        /// The key table (template resource ApiKeysTable).
        #[arg(long, env = "API_KEYS_TABLE", global = true)]
        table: Option<String>,
        #[command(subcommand)]
        command: keys::KeysCommand,
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
        Command::Migrate { database_url } => {
            let pool = fcfs_shared::adapters::mysql::connect(&database_url, 1)
                .await
                .context("cannot connect to the database")?;
            fcfs_shared::adapters::mysql::migrate(&pool)
                .await
                .context("migration failed")?;
            eprintln!("migrations applied");
        }
        Command::RebuildLedger {
            database_url,
            redis_url,
            campaign,
        } => {
            use fcfs_shared::issuance::ports::CampaignCatalog;
            let store = fcfs_shared::adapters::mysql::MySqlStore::new(
                fcfs_shared::adapters::mysql::connect(&database_url, 2)
                    .await
                    .context("cannot connect to the database")?,
            );
            let ledger = fcfs_shared::adapters::redis::RedisIssueLedger::connect(&redis_url).await?;
            let ids = match campaign {
                Some(id) => vec![id],
                None => store.campaign_ids().await?,
            };
            for (n, id) in ids.iter().enumerate() {
                let Some(c) = store.get(*id).await? else {
                    bail!("campaign {id} does not exist");
                };
                let holders = store.holders(*id).await?;
                let restored = ledger.restore(&(&c).into(), &holders).await?;
                eprintln!("[{}/{}] campaign {id}: {restored} holders restored", n + 1, ids.len());
            }
        }
        Command::Keys { table, command } => {
            let Some(table) = table else {
                bail!("the key table is not set: pass --table or set API_KEYS_TABLE (in .local/env after `make up`)");
            };
            keys::run(&table, command).await?;
        }
        Command::Provision { template, params } => {
            let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") else {
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
