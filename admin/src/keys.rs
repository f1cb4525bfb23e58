//! `fcfs-admin keys …`: partner API keys in the key table (`API_KEYS_TABLE`), on AWS or locally.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use clap::Subcommand;
use fcfs_shared::adapters::dynamodb::DynamoApiKeys;
use fcfs_shared::keys;
use fcfs_shared::keys::domain::KeyStatus;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key for a partner and print it, alone, on stdout. It is shown this once: only its
    /// SHA-256 digest is stored.
    Create {
        #[arg(long)]
        partner: String,
        /// The API's usage plan (stack output UsagePlanId): also registers the partner's usage-plan
        /// key there (see `register-usage`). Without it, only the key is created.
        #[arg(long, env = "USAGE_PLAN_ID")]
        usage_plan_id: Option<String>,
        /// Expiry (RFC 3339, e.g. 2027-01-31T00:00:00Z); default: never.
        #[arg(long, conflicts_with = "expires_in_days")]
        expires_at: Option<DateTime<Utc>>,
        /// Expiry as a number of days from now.
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// List a partner's keys: display id, status, created, expires (never the keys).
    List {
        #[arg(long)]
        partner: String,
    },
    /// Revoke a key by its display id. Cached authorizations end within the authorizer's TTLs.
    Revoke { display_id: String },
    /// Register a partner in the API's usage plan, idempotently: an API Gateway API key whose
    /// value is the partner's usage identifier key (what the authorizer returns), in the plan.
    /// The API requires one (ApiKeyRequired), so a partner without it is answered 403.
    RegisterUsage {
        #[arg(long)]
        partner: String,
        #[arg(long, env = "USAGE_PLAN_ID")]
        usage_plan_id: String,
    },
}

pub async fn run(table: &str, command: KeysCommand) -> Result<()> {
    let sdk = fcfs_shared::config::aws_sdk_config().await;
    let store = DynamoApiKeys::new(aws_sdk_dynamodb::Client::new(&sdk), table);
    let now = Utc::now();
    match command {
        KeysCommand::Create {
            partner,
            usage_plan_id,
            expires_at,
            expires_in_days,
        } => {
            // First, so a partner never holds a key the API answers 403 to for want of a plan key.
            if let Some(plan) = usage_plan_id {
                register_usage(&sdk, &plan, &partner).await?;
            }
            let expires_at = expires_at.or(expires_in_days.map(|d| now + chrono::Duration::days(d.into())));
            let (secret, key) = keys::create_key(&store, &partner, expires_at, now)
                .await
                .context("cannot create the key")?;
            eprintln!(
                "created key {} for partner {} (expires: {}); it is shown only now",
                key.display_id,
                key.partner_id,
                expires_at.map_or("never".to_owned(), |t| t.to_rfc3339())
            );
            println!("{}", secret.expose());
        }
        KeysCommand::List { partner } => {
            let keys = keys::list_keys(&store, &partner).await.context("cannot list keys")?;
            println!("{:<16} {:<8} {:<25} EXPIRES", "DISPLAY_ID", "STATUS", "CREATED");
            for key in keys {
                let status = match key.status {
                    KeyStatus::Active if !key.is_usable(now) => "EXPIRED",
                    s => s.as_str(),
                };
                println!(
                    "{:<16} {:<8} {:<25} {}",
                    key.display_id,
                    status,
                    key.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    key.expires_at.map_or("never".to_owned(), |t| t
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                );
            }
        }
        KeysCommand::RegisterUsage { partner, usage_plan_id } => {
            register_usage(&sdk, &usage_plan_id, &partner).await?;
        }
        KeysCommand::Revoke { display_id } => {
            let key = keys::revoke_key(&store, &display_id)
                .await
                .context("cannot revoke the key")?;
            if key.status == KeyStatus::Revoked {
                eprintln!("key {display_id} of partner {} was already revoked", key.partner_id);
            } else {
                eprintln!(
                    "revoked key {display_id} of partner {}; authorizer caches drop it within their TTLs",
                    key.partner_id
                );
            }
        }
    }
    Ok(())
}

/// The id of the partner's usage-plan key in API Gateway (an API key whose value is the partner's
/// usage identifier key), created if it does not exist.
pub async fn usage_key_id(apigateway: &aws_sdk_apigateway::Client, partner: &str) -> Result<String> {
    let value = keys::domain::usage_identifier_key(partner);
    // The key's name is its value: unique per partner, and found again by name.
    let existing = apigateway
        .get_api_keys()
        .name_query(&value)
        .include_values(true)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!(aws_sdk_apigateway::error::DisplayErrorContext(e)))
        .context("cannot list API Gateway API keys")?;
    let found = existing
        .items()
        .iter()
        .find(|k| k.name() == Some(value.as_str()) && k.value() == Some(value.as_str()));
    Ok(match found {
        Some(key) => {
            if key.enabled() {
                eprintln!("usage key of partner {partner} exists");
            } else {
                eprintln!("warning: the usage key of partner {partner} exists but is disabled in API Gateway");
            }
            key.id().context("API key without an id")?.to_owned()
        }
        None => {
            let created = apigateway
                .create_api_key()
                .name(&value)
                .value(&value)
                .enabled(true)
                .description(format!("fcfs-coupons usage-plan key of partner {partner}"))
                .send()
                .await
                .map_err(|e| anyhow::anyhow!(aws_sdk_apigateway::error::DisplayErrorContext(e)))
                .context("cannot create the usage key")?;
            eprintln!("usage key of partner {partner} created");
            created.id().context("CreateApiKey returned no id")?.to_owned()
        }
    })
}

/// Puts the partner's usage identifier key in the usage plan as an API key of that value, creating
/// the key if it does not exist and adding it to the plan if it is not there. Safe to repeat.
pub async fn register_usage(sdk: &aws_config::SdkConfig, usage_plan_id: &str, partner: &str) -> Result<()> {
    let apigateway = aws_sdk_apigateway::Client::new(sdk);
    let key_id = usage_key_id(&apigateway, partner).await?;
    match apigateway
        .create_usage_plan_key()
        .usage_plan_id(usage_plan_id)
        .key_id(&key_id)
        .key_type("API_KEY")
        .send()
        .await
    {
        Ok(_) => eprintln!("usage key of partner {partner} added to usage plan {usage_plan_id}"),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_conflict_exception()) => {
            eprintln!("usage key of partner {partner} is already in usage plan {usage_plan_id}");
        }
        Err(e) => {
            return Err(anyhow::anyhow!(aws_sdk_apigateway::error::DisplayErrorContext(e)))
                .with_context(|| format!("cannot add the usage key to usage plan {usage_plan_id}"));
        }
    }
    Ok(())
}
