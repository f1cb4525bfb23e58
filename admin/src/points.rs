//! `fcfs-admin points`: prove every wallet's balance is explained by its lots and history, and set
//! a partner's default validity of earned points.

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use fcfs_shared::adapters::mysql::{MySqlStore, connect};
use fcfs_shared::points::domain::MAX_VALIDITY_DAYS;

#[derive(Subcommand)]
pub enum PointsCommand {
    /// Check that every wallet's balance equals the sum of its lots' remainders and the sum of
    /// its history, and that every lot's amount equals what is left, what expired and what uses
    /// and transfers not cancelled drew from it. Prints a JSON report; exits with 2 if anything
    /// disagrees.
    Verify {
        /// Only this partner's wallets (default: every partner's).
        #[arg(long)]
        partner: Option<String>,
    },
    /// Set how many days the partner's earned points stay valid when an earn gives no expiresAt.
    Policy {
        #[arg(long)]
        partner: String,
        #[arg(long)]
        validity_days: u32,
    },
}

pub async fn run(database_url: &str, command: PointsCommand) -> Result<()> {
    let store = MySqlStore::new(
        connect(database_url, 1)
            .await
            .context("cannot connect to the database")?,
    )
    // A verify reads every wallet: far longer than one API call's deadline.
    .with_timeout(std::time::Duration::from_secs(3600));
    match command {
        PointsCommand::Verify { partner } => {
            eprintln!("verifying {} wallets…", partner.as_deref().unwrap_or("every partner's"));
            let audit = store.verify_points(partner.as_deref()).await?;
            println!("{}", serde_json::to_string_pretty(&audit)?);
            if !audit.is_clean() {
                eprintln!("wallets, lots or history disagree (first 100 of each kind above)");
                std::process::exit(2);
            }
            eprintln!(
                "{} wallets verify: balance = Σ lot remainders = Σ history; {} checkout holds hold {} points, each a live use",
                audit.wallets, audit.holds, audit.held_points
            );
        }
        PointsCommand::Policy { partner, validity_days } => {
            if !(1..=MAX_VALIDITY_DAYS).contains(&validity_days) {
                bail!("--validity-days must be 1-{MAX_VALIDITY_DAYS}");
            }
            store.set_validity_days(&partner, validity_days).await?;
            eprintln!("points earned for {partner} now stay valid {validity_days} days unless an earn says otherwise");
        }
    }
    Ok(())
}
