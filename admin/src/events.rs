//! `fcfs-admin events`: an operator's view of a partner's webhook deliveries, and the replay that
//! re-sends from a point in time and resumes paused deliveries.

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use fcfs_shared::adapters::mysql::{MySqlStore, connect};
use fcfs_shared::events::ports::Webhooks;
use fcfs_shared::events::service::replay;

#[derive(Subcommand)]
pub enum EventsCommand {
    /// Re-send the partner's events from the first that occurred at or after --since (RFC 3339,
    /// e.g. 2026-12-03T00:00:00Z) and resume its deliveries if they were paused. The relay sends
    /// them in order within a second; the partner drops the ones it had by their ids.
    Replay {
        #[arg(long)]
        partner: String,
        #[arg(long)]
        since: String,
    },
    /// Where the partner's webhook deliveries stand (JSON).
    Status {
        #[arg(long)]
        partner: String,
    },
}

pub async fn run(database_url: &str, command: EventsCommand) -> Result<()> {
    let store = MySqlStore::new(
        connect(database_url, 1)
            .await
            .context("cannot connect to the database")?,
    );
    match command {
        EventsCommand::Replay { partner, since } => {
            let since = chrono::DateTime::parse_from_rfc3339(&since)
                .with_context(|| format!("--since {since:?} is not an RFC 3339 instant (e.g. 2026-12-03T00:00:00Z)"))?
                .with_timezone(&chrono::Utc);
            match replay(&store, &store, &partner, since, chrono::Utc::now()).await {
                Ok(after) => eprintln!(
                    "{partner}: deliveries resume after sequence {after} (the first event at or after {})",
                    since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                ),
                Err(fcfs_shared::events::EventsError::NotRegistered) => {
                    bail!("{partner} has no webhook registration")
                }
                Err(e) => return Err(e.into()),
            }
        }
        EventsCommand::Status { partner } => {
            let Some((registration, delivery)) = store.find(&partner).await? else {
                bail!("{partner} has no webhook registration");
            };
            let status = serde_json::json!({
                "partnerId": registration.partner_id,
                "url": registration.url,
                "events": registration.events,
                "status": if delivery.paused_at.is_some() { "PAUSED" } else { "ACTIVE" },
                "deliveredThrough": delivery.delivered_through,
                "failingSince": delivery.failing_since,
                "attempts": delivery.attempts,
                "nextAttemptAt": delivery.next_attempt_at,
                "pausedAt": delivery.paused_at,
                "lastError": delivery.last_error,
            });
            println!("{}", serde_json::to_string_pretty(&status)?);
        }
    }
    Ok(())
}
