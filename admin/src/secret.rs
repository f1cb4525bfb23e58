//! `fcfs-admin database-secret`: a database URL stored as a Secrets Manager secret in RDS's JSON
//! form, the only way the functions take database credentials. Locally `scripts/stack.sh` makes
//! one on the emulator; on AWS, Aurora's managed secret is used instead (or this, for a database
//! whose secret RDS does not manage).

use std::str::FromStr;

use anyhow::{Context, Result};
use aws_sdk_secretsmanager::Client;
use sqlx::ConnectOptions;
use sqlx::mysql::MySqlConnectOptions;

/// Creates the secret `name`, or puts a new value into it, and returns its ARN.
pub async fn put(client: &Client, name: &str, database_url: &str) -> Result<String> {
    let options = MySqlConnectOptions::from_str(database_url).context("DATABASE_URL is not a mysql:// URL")?;
    let url = options.to_url_lossy();
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    let value = serde_json::json!({
        "engine": "mysql",
        "host": url.host_str().context("DATABASE_URL has no host")?,
        "port": url.port().unwrap_or(3306),
        "username": decode(url.username()),
        "password": decode(url.password().unwrap_or_default()),
        "dbname": url.path().trim_start_matches('/'),
    })
    .to_string();
    let existing = client.describe_secret().secret_id(name).send().await;
    let arn = match existing {
        Ok(found) => {
            client
                .put_secret_value()
                .secret_id(name)
                .secret_string(&value)
                .send()
                .await
                .context("cannot put the new secret value")?;
            found.arn.context("the secret has no ARN")?
        }
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            client
                .create_secret()
                .name(name)
                .description("fcfs-coupons database credentials (RDS JSON form)")
                .secret_string(&value)
                .send()
                .await
                .context("cannot create the secret")?
                .arn
                .context("the new secret has no ARN")?
        }
        Err(e) => {
            anyhow::bail!(
                "cannot read the secret: {}",
                aws_sdk_secretsmanager::error::DisplayErrorContext(e)
            );
        }
    };
    Ok(arn)
}
