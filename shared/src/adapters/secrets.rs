//! Database credentials from AWS Secrets Manager, read once per process and kept in memory, so no
//! password sits in a template parameter or an environment variable. The secret is RDS's JSON
//! form: `username` and `password` (all that Aurora's managed master secret holds), and optionally
//! `host`, `port`, `dbname` (secrets made for an application user usually carry them).

use std::time::Duration;

use aws_sdk_secretsmanager::error::DisplayErrorContext;
use serde::Deserialize;

use crate::kernel::Unavailable;

/// The fields of an RDS database secret the connection needs (others, like `engine`, are ignored).
#[derive(Clone, Deserialize, PartialEq, Eq)]
pub struct DatabaseSecret {
    pub username: String,
    pub password: String,
    /// Absent from Aurora's managed secrets: `DATABASE_HOST`, `DATABASE_PORT` and
    /// `DATABASE_NAME` give what the secret lacks.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default, deserialize_with = "port_number_or_text")]
    pub port: Option<u16>,
    #[serde(default)]
    pub dbname: Option<String>,
}

// The password must never reach a log line through `{:?}`.
impl std::fmt::Debug for DatabaseSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSecret")
            .field("username", &self.username)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("dbname", &self.dbname)
            .finish_non_exhaustive()
    }
}

/// RDS writes the port as a number; hand-made secrets often have it as text.
fn port_number_or_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Port {
        Number(u16),
        Text(String),
    }
    // `null` is an absent port, as for host and dbname.
    match Option::<Port>::deserialize(d)? {
        None => Ok(None),
        Some(Port::Number(n)) => Ok(Some(n)),
        Some(Port::Text(t)) => t.trim().parse().map(Some).map_err(serde::de::Error::custom),
    }
}

impl DatabaseSecret {
    /// The secret's JSON text. The error names the problem, never the text (it holds a password).
    pub fn parse(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| {
            format!(
                "the database secret is not RDS JSON (username, password, and optionally host, port, dbname): {} at column {}",
                e.classify_as_str(),
                e.column()
            )
        })
    }
}

trait Classify {
    fn classify_as_str(&self) -> &'static str;
}

impl Classify for serde_json::Error {
    fn classify_as_str(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax => "invalid JSON",
            serde_json::error::Category::Data => "a field is missing or has the wrong type",
            serde_json::error::Category::Eof => "truncated JSON",
        }
    }
}

/// Reads and parses the secret `arn` within `deadline`. Every failure is `Unavailable`: a secret
/// that cannot be read now may be readable on the next request (an endpoint or IAM being fixed),
/// and the function must answer 503 meanwhile, not fail to start.
pub async fn fetch_database_secret(
    client: &aws_sdk_secretsmanager::Client,
    arn: &str,
    deadline: Duration,
) -> Result<DatabaseSecret, Unavailable> {
    let read = client.get_secret_value().secret_id(arn).send();
    let output = tokio::time::timeout(deadline, read)
        .await
        .map_err(|_| {
            Unavailable::new(
                "secretsmanager",
                format!("no answer within {} ms", deadline.as_millis()),
            )
        })?
        .map_err(|e| Unavailable::new("secretsmanager", DisplayErrorContext(e)))?;
    let text = output
        .secret_string()
        .ok_or_else(|| Unavailable::new("secretsmanager", format!("secret {arn} has no string value")))?;
    DatabaseSecret::parse(text).map_err(|e| Unavailable::new("secretsmanager", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rds_hand_made_and_aurora_managed_secrets_parse() {
        let rds = DatabaseSecret::parse(
            r#"{"username":"admin","password":"p@ss:/word","engine":"mysql","host":"db.cluster-x.eu-west-1.rds.amazonaws.com","port":3306,"dbname":"fcfs","dbClusterIdentifier":"db"}"#,
        )
        .unwrap();
        assert_eq!(rds.port, Some(3306));
        assert_eq!(rds.dbname.as_deref(), Some("fcfs"));
        assert_eq!(rds.password, "p@ss:/word");
        let hand_made =
            DatabaseSecret::parse(r#"{"username":"admin","password":"x","host":"h","port":"3307"}"#).unwrap();
        assert_eq!((hand_made.port, hand_made.dbname), (Some(3307), None));
        let aurora_managed = DatabaseSecret::parse(r#"{"username":"admin","password":"x"}"#).unwrap();
        assert_eq!((aurora_managed.host, aurora_managed.port), (None, None));
    }

    #[test]
    fn a_broken_secret_is_explained_without_its_text() {
        for broken in [
            r#"{"password":"hunter2"}"#,
            r#"{"username":"a","password":"hunter2","port":"x"}"#,
            r#"{"username":"a","password":"hunter2""#,
        ] {
            let err = DatabaseSecret::parse(broken).unwrap_err();
            assert!(err.contains("not RDS JSON"), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
        let secret = DatabaseSecret::parse(r#"{"username":"a","password":"hunter2","host":"h"}"#).unwrap();
        assert!(!format!("{secret:?}").contains("hunter2"));
    }
}
