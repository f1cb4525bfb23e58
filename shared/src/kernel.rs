//! The shared kernel: the few domain primitives every context speaks in (a partner's user, a
//! field that failed validation, the failure of a backing service), and the bounds of what the
//! database can store, so each context validates before it writes.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

pub const MAX_USER_ID_CHARS: usize = 64;

/// A request field that failed validation: the API names it in its 400 answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidField {
    pub field: &'static str,
    pub reason: String,
}

impl InvalidField {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// A partner's end user, as the partner names them: 1–64 chars of `[A-Za-z0-9_.:-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserId(String);

// Deserialising validates too, so a forged or corrupt message cannot reach the database.
impl TryFrom<String> for UserId {
    type Error = InvalidField;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<UserId> for String {
    fn from(id: UserId) -> Self {
        id.0
    }
}

impl UserId {
    pub fn parse(raw: &str) -> Result<Self, InvalidField> {
        if raw.is_empty() || raw.chars().count() > MAX_USER_ID_CHARS {
            return Err(InvalidField::new("userId", "must be 1-64 characters"));
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
        {
            return Err(InvalidField::new("userId", "may contain only A-Z a-z 0-9 _ . : -"));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A backing service (Redis, SQS, MySQL, DynamoDB) failed or did not answer in time: transient,
/// the caller may retry (the API answers 503 with `Retry-After`). Adapters return only this;
/// everything permanent is decided by a context's rules before an adapter is called.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{service} unavailable: {detail}")]
pub struct Unavailable {
    pub service: &'static str,
    pub detail: String,
}

impl Unavailable {
    pub fn new(service: &'static str, detail: impl std::fmt::Display) -> Self {
        Self {
            service,
            detail: detail.to_string(),
        }
    }
}

/// Where a use case reads the time: the system clock in production, a hand-moved one in tests, so
/// no test depends on a sub-second window of real time.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The range of MySQL's `DATETIME` (what every timestamp column is): a date outside it would be
/// refused by the database after validation passed, so validation refuses it first.
pub fn storable_instant(field: &'static str, at: DateTime<Utc>) -> Result<DateTime<Utc>, InvalidField> {
    let min = NaiveDate::from_ymd_opt(1000, 1, 1).and_then(|d| d.and_hms_opt(0, 0, 0));
    let max = NaiveDate::from_ymd_opt(9999, 12, 31).and_then(|d| d.and_hms_milli_opt(23, 59, 59, 999));
    let naive = at.naive_utc();
    if min.is_some_and(|min| naive < min) || max.is_some_and(|max| naive > max) {
        return Err(InvalidField::new(
            field,
            "must be between 1000-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z",
        ));
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_follow_the_contract() {
        assert!(UserId::parse("user_1.a:b-c").is_ok());
        assert!(UserId::parse(&"a".repeat(64)).is_ok());
        assert_eq!(UserId::parse("").unwrap_err().field, "userId");
        assert!(UserId::parse(&"a".repeat(65)).is_err());
        assert!(UserId::parse("with space").is_err());
        assert!(UserId::parse("ünï").is_err());
    }

    #[test]
    fn instants_outside_mysql_datetime_are_refused() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert!(storable_instant("x", at("0001-01-01T00:00:00Z")).is_err());
        assert!(storable_instant("x", at("0999-12-31T23:59:59Z")).is_err());
        assert!(storable_instant("x", at("1000-01-01T00:00:00Z")).is_ok());
        assert!(storable_instant("x", at("9999-12-31T23:59:59.999Z")).is_ok());
        assert_eq!(
            storable_instant("when", DateTime::<Utc>::MAX_UTC).unwrap_err().field,
            "when"
        );
    }
}
