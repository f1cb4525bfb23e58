//! `fcfs-admin limits`: show and set how much of the shared system one partner may hold.

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use fcfs_shared::adapters::mysql::{MySqlStore, connect};
use fcfs_shared::kernel::is_partner_id;
use fcfs_shared::partners::domain::LimitOverrides;
use fcfs_shared::partners::ports::PartnerLimitStore;

use crate::throttle::Rate;

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
        /// Idempotency-Key records of point writes kept at once (each kept 30 days; a point write
        /// past it: 422 LIMIT_EXCEEDED).
        #[arg(long, value_parser = parse_setting::<u64>)]
        idempotency_records: Option<Setting<u64>>,
        /// Requests per second (with --burst), enforced by API Gateway (429 above): the partner
        /// gets a usage plan of its own on the API's stages; `default` puts it back under the
        /// stack's plan. Needs --usage-plan-id.
        #[arg(long, value_parser = parse_setting::<f64>, requires = "usage_plan_id")]
        rate: Option<Setting<f64>>,
        /// Requests at once above the rate, with --rate N.
        #[arg(long)]
        burst: Option<i32>,
        /// The stack's usage plan (stack output UsagePlanId).
        #[arg(long, env = "USAGE_PLAN_ID")]
        usage_plan_id: Option<String>,
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
        rate: Some(rate),
        burst,
        usage_plan_id: Some(plan),
        ..
    } = &command
    {
        let rate = match (*rate, *burst) {
            (Setting::Default, _) => Rate::Shared,
            (Setting::Value(rate), Some(burst)) if rate > 0.0 && rate.is_finite() && burst >= 1 => {
                Rate::Own { rate, burst }
            }
            _ => bail!("--rate N needs --burst M (N > 0 requests per second, M ≥ 1), or --rate default"),
        };
        let sdk = fcfs_shared::config::aws_sdk_config().await;
        let now = crate::throttle::set(&sdk, plan, &partner, rate).await?;
        eprintln!("requests of {partner} are throttled by usage plan {now}");
    }
    if let LimitsCommand::Set {
        live_campaigns,
        orders_per_month,
        idempotency_records,
        ..
    } = command
    {
        let current = store.overrides(&partner).await?;
        let next = LimitOverrides {
            live_campaigns: applied(current.live_campaigns, live_campaigns),
            orders_per_month: applied(current.orders_per_month, orders_per_month),
            idempotency_records: applied(current.idempotency_records, idempotency_records),
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
            "idempotencyRecords": overrides.idempotency_records,
        },
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
