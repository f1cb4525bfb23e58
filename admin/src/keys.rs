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
}

pub async fn run(table: &str, command: KeysCommand) -> Result<()> {
    let sdk = fcfs_shared::config::aws_sdk_config().await;
    let store = DynamoApiKeys::new(aws_sdk_dynamodb::Client::new(&sdk), table);
    let now = Utc::now();
    match command {
        KeysCommand::Create {
            partner,
            expires_at,
            expires_in_days,
        } => {
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
