//! `fcfs-admin limits`: show and set how much of the shared system one partner may hold.

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use fcfs_shared::adapters::mysql::{MySqlStore, connect};
use fcfs_shared::kernel::is_partner_id;
use fcfs_shared::partners::domain::LimitOverrides;
use fcfs_shared::partners::ports::PartnerLimitStore;

#[derive(Subcommand)]
pub enum LimitsCommand {
    /// Print the partner's limits (JSON): what applies, and which the operator set.
    Show {
        #[arg(long)]
        partner: String,
    },
    /// Set some of the partner's limits; the others stay as they are. A value of `default` goes
    /// back to the default. Takes effect on the partner's next request.
    Set {
        #[arg(long)]
        partner: String,
        /// Campaigns whose issue window has not ended (POST /v1/campaigns past it: 422 LIMIT_EXCEEDED).
        #[arg(long, value_parser = parse_setting::<u32>)]
        live_campaigns: Option<Setting<u32>>,
        /// Orders recorded per calendar month (POST /v1/orders past it: 422 LIMIT_EXCEEDED).
        #[arg(long, value_parser = parse_setting::<u64>)]
        orders_per_month: Option<Setting<u64>>,
    },
}

#[derive(Debug, Clone, Copy)]
pub enum Setting<T> {
    Value(T),
    Default,
}

fn parse_setting<T: std::str::FromStr>(raw: &str) -> Result<Setting<T>, String> {
    if raw == "default" {
        return Ok(Setting::Default);
    }
    raw.parse()
        .map(Setting::Value)
        .map_err(|_| format!("{raw:?}: a whole number or `default`"))
}

fn applied<T>(current: Option<T>, setting: Option<Setting<T>>) -> Option<T> {
    match setting {
        None => current,
        Some(Setting::Value(v)) => Some(v),
        Some(Setting::Default) => None,
    }
}

pub async fn run(database_url: &str, command: LimitsCommand) -> Result<()> {
    let store = MySqlStore::new(
        connect(database_url, 1)
            .await
            .context("cannot connect to the database")?,
    );
    let partner = match &command {
        LimitsCommand::Show { partner } | LimitsCommand::Set { partner, .. } => partner.clone(),
    };
    if !is_partner_id(&partner) {
        bail!("--partner {partner:?}: 1-64 letters, digits, '.', '_' or '-'");
    }
    if let LimitsCommand::Set {
        live_campaigns,
        orders_per_month,
        ..
    } = command
    {
        let current = store.overrides(&partner).await?;
        let next = LimitOverrides {
            live_campaigns: applied(current.live_campaigns, live_campaigns),
            orders_per_month: applied(current.orders_per_month, orders_per_month),
        };
        store.set_overrides(&partner, next).await?;
        eprintln!("limits of {partner} set");
    }
    let overrides = store.overrides(&partner).await?;
    let report = serde_json::json!({
        "partnerId": partner,
        "limits": overrides.apply(),
        "set": {
            "liveCampaigns": overrides.live_campaigns,
            "ordersPerMonth": overrides.orders_per_month,
        },
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
