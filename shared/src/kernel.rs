//! The shared kernel: the few domain primitives every context speaks in (a partner's user, a
//! field that failed validation, the failure of a backing service), and the bounds of what the
//! database can store, so each context validates before it writes.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

pub const MAX_USER_ID_CHARS: usize = 64;

/// The most any money amount may be (an order, an AMOUNT discount): far above any real order, a
/// month's sums stay exact, and every amount is an exact JSON number in JavaScript too
/// (at most 2^53 − 1).
pub const MAX_MONEY_AMOUNT: u64 = 1_000_000_000_000;
const _: () = assert!(MAX_MONEY_AMOUNT < (1 << 53));

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
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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

/// A write made inside a caller's transaction (another context's, which owns the transaction and
/// commits it) that could not finish. The caller rolls its whole transaction back either way.
#[derive(Debug, thiserror::Error)]
pub enum TxError {
    /// A deadlock, a lock wait past its limit, or a unique key another writer took first: the
    /// caller starts its transaction over, and the new one sees what the other committed.
    #[error("write conflict, start over: {0}")]
    Conflict(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// Ids in JSON bodies are decimal strings (`"42"`): a JSON number past 2^53 − 1 loses digits in
/// JavaScript, and ids are u64 from 1. Reading also takes a number, so callers and records that
/// wrote one still read. Use as `#[serde(with = "crate::kernel::id_text")]`.
pub mod id_text {
    use serde::de::{Error, Unexpected, Visitor};

    pub fn serialize<S: serde::Serializer>(id: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(id)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        d.deserialize_any(IdVisitor)
    }

    struct IdVisitor;

    impl Visitor<'_> for IdVisitor {
        type Value = u64;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an id: a whole number as a decimal string")
        }

        fn visit_u64<E: Error>(self, v: u64) -> Result<u64, E> {
            if v == 0 {
                return Err(E::invalid_value(Unexpected::Unsigned(v), &self));
            }
            Ok(v)
        }

        fn visit_i64<E: Error>(self, v: i64) -> Result<u64, E> {
            let v = u64::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))?;
            self.visit_u64(v)
        }

        /// A whole number JSON spells `5.0` (JSON Schema's integer 5), as `whole_number` reads.
        fn visit_f64<E: Error>(self, v: f64) -> Result<u64, E> {
            if v.fract() == 0.0 && (1.0..18_446_744_073_709_551_616.0).contains(&v) {
                self.visit_u64(v as u64)
            } else {
                Err(E::invalid_value(Unexpected::Float(v), &self))
            }
        }

        /// As the contract's pattern `^[1-9][0-9]{0,18}$`: no sign, no leading zero, and at most
        /// 19 digits (so every such string is a u64).
        fn visit_str<E: Error>(self, v: &str) -> Result<u64, E> {
            let canonical = (1..=19).contains(&v.len()) && !v.starts_with('0') && v.bytes().all(|b| b.is_ascii_digit());
            canonical
                .then(|| v.parse().ok())
                .flatten()
                .ok_or_else(|| E::invalid_value(Unexpected::Str(v), &self))
        }
    }

    struct Id(u64);

    impl<'de> serde::Deserialize<'de> for Id {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(IdVisitor).map(Id)
        }
    }

    /// The same for an optional id (`null` or absent: none).
    /// An optional id that, when present, must be an id (`null` is refused, as the contract
    /// has no null): `#[serde(default, deserialize_with = "crate::kernel::id_text::present")]`.
    pub fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        deserialize(d).map(Some)
    }

    pub mod optional {
        pub fn serialize<S: serde::Serializer>(id: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
            match id {
                Some(id) => s.collect_str(id),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
            Ok(<Option<super::Id> as serde::Deserialize>::deserialize(d)?.map(|id| id.0))
        }
    }
}

/// [`whole_number`] for an optional field (`#[serde(default, deserialize_with = …)]`).
pub fn optional_whole_number<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    whole_number(deserializer).map(Some)
}

/// Deserializes a non-negative integer that JSON may spell `5` or `5.0`: JSON has one number type
/// and JSON Schema (the API's contract) counts `5.0` as the integer 5. A fraction, a negative or a
/// value past `T` is refused, naming the value.
pub fn whole_number<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    use serde::de::{Error, Unexpected, Visitor};

    struct Whole<T>(std::marker::PhantomData<T>);

    impl<T: TryFrom<u64>> Visitor<'_> for Whole<T> {
        type Value = T;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a whole number from 0 to {}", std::any::type_name::<T>())
        }

        fn visit_u64<E: Error>(self, v: u64) -> Result<T, E> {
            T::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
        }

        fn visit_i64<E: Error>(self, v: i64) -> Result<T, E> {
            let unsigned = u64::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))?;
            self.visit_u64(unsigned)
        }

        fn visit_f64<E: Error>(self, v: f64) -> Result<T, E> {
            // 2^64 is exactly representable; anything below it with no fraction converts exactly.
            if v.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&v) {
                self.visit_u64(v as u64)
            } else {
                Err(E::invalid_value(Unexpected::Float(v), &self))
            }
        }
    }

    deserializer.deserialize_any(Whole(std::marker::PhantomData))
}

/// Years a date-time may be written in. Whatever its offset (at most ±23:59), such a date-time
/// lies inside MySQL's `DATETIME` range once in UTC, and the contract can say it with a pattern.
pub const WRITTEN_YEARS: std::ops::RangeInclusive<u32> = 1001..=9998;

/// Deserializes an RFC 3339 `date-time` as JSON Schema's `format: date-time` defines it (date and
/// time separated by `T`; chrono's own parser also takes a space, which the contract does not),
/// written in one of `WRITTEN_YEARS`.
pub fn rfc3339<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
    use serde::de::{Error, Unexpected};
    let text = String::deserialize(deserializer)?;
    let expected = format!(
        "an RFC 3339 date-time such as 2026-11-27T00:00:00Z, in a year from {} to {}",
        WRITTEN_YEARS.start(),
        WRITTEN_YEARS.end()
    );
    let expected = &expected.as_str();
    let year = text.get(..4).and_then(|y| y.parse::<u32>().ok());
    if !matches!(text.as_bytes().get(10), Some(b'T' | b't')) || !year.is_some_and(|y| WRITTEN_YEARS.contains(&y)) {
        return Err(D::Error::invalid_value(Unexpected::Str(&text), expected));
    }
    DateTime::parse_from_rfc3339(&text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|_| D::Error::invalid_value(Unexpected::Str(&text), expected))
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

/// A whole number written as the contract writes one: ASCII digits only (`str::parse` also takes
/// a leading `+`, which no pattern of the API allows); `None` for anything else or an overflow.
pub fn digits<T: std::str::FromStr>(raw: &str) -> Option<T> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

/// The longest partner id (the `partner_id` columns are `VARCHAR(64)`).
pub const PARTNER_ID_MAX: usize = 64;

/// A partner id: 1-64 letters, digits, `.`, `_` or `-` (what keys are issued for, and so what the
/// authorizer hands on; a message naming anything else was not written by us).
pub fn is_partner_id(raw: &str) -> bool {
    !raw.is_empty()
        && raw.len() <= PARTNER_ID_MAX
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
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

/// Entries of a keyset-paginated list (a user's coupons, a wallet's history) when `limit` is not given.
pub const DEFAULT_PAGE: u32 = 50;
pub const MAX_PAGE: u32 = 100;

/// A list's `limit` query parameter: 1 to `MAX_PAGE`.
pub fn page_limit(raw: &str) -> Result<u32, InvalidField> {
    digits(raw)
        .filter(|l| (1..=MAX_PAGE).contains(l))
        .ok_or_else(|| InvalidField::new("limit", "must be 1-100"))
}

/// Rows (coupons, lots) one expiry transaction changes at most: short enough never to hold long
/// locks against live writes.
pub const MAX_SWEEP_CHUNK: u32 = 1_000;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepSummary {
    pub expired: u64,
    pub chunks: u64,
    pub duration_ms: u64,
    /// The sweep stopped at its time budget; the next run continues.
    pub out_of_time: bool,
}

/// Runs `chunk_of(rows)` (one short transaction that expires at most `rows`, clamped to
/// `MAX_SWEEP_CHUNK`, and says how many it did) until a chunk comes back short or `budget` is
/// spent, logging progress every 100 chunks.
pub async fn sweep_in_chunks<F, Fut>(
    what: &'static str,
    chunk: u32,
    budget: std::time::Duration,
    mut chunk_of: F,
) -> Result<SweepSummary, Unavailable>
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Result<u64, Unavailable>>,
{
    let chunk = chunk.clamp(1, MAX_SWEEP_CHUNK);
    let started = std::time::Instant::now();
    let mut summary = SweepSummary::default();
    loop {
        if started.elapsed() >= budget {
            summary.out_of_time = true;
            break;
        }
        let expired = chunk_of(chunk).await?;
        summary.expired += expired;
        summary.chunks += 1;
        if summary.chunks % 100 == 0 {
            tracing::info!(
                sweep = what,
                expired = summary.expired,
                chunks = summary.chunks,
                "sweep in progress"
            );
        }
        if expired < u64::from(chunk) {
            break;
        }
    }
    summary.duration_ms = started.elapsed().as_millis() as u64;
    tracing::info!(sweep = what, ?summary, "sweep done");
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Ids {
        #[serde(with = "id_text")]
        id: u64,
        #[serde(default, with = "id_text::optional", skip_serializing_if = "Option::is_none")]
        other: Option<u64>,
    }

    #[test]
    fn ids_go_out_as_strings_and_read_either_way() {
        let ids = Ids {
            id: u64::MAX,
            other: Some(7),
        };
        let text = serde_json::to_string(&ids).unwrap();
        assert_eq!(text, r#"{"id":"18446744073709551615","other":"7"}"#);
        let numbers: Ids = serde_json::from_str(r#"{"id":18446744073709551615,"other":7}"#).unwrap();
        assert_eq!(numbers, ids);
        let whole: Ids = serde_json::from_str(r#"{"id":5.0}"#).unwrap();
        assert_eq!(whole.id, 5);
        let longest: Ids = serde_json::from_str(r#"{"id":"9999999999999999999"}"#).unwrap();
        assert_eq!(longest.id, 9_999_999_999_999_999_999);
        let none: Ids = serde_json::from_str(r#"{"id":"1","other":null}"#).unwrap();
        assert_eq!(none.other, None);
        assert_eq!(serde_json::to_string(&none).unwrap(), r#"{"id":"1"}"#);
        for bad in [
            r#"{"id":"-1"}"#,
            r#"{"id":"1e3"}"#,
            r#"{"id":""}"#,
            r#"{"id":-1}"#,
            r#"{"id":"+1"}"#,
        ] {
            assert!(serde_json::from_str::<Ids>(bad).is_err(), "{bad}");
        }
    }

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
    fn whole_numbers_may_be_written_with_a_zero_fraction() {
        #[derive(Deserialize)]
        struct Q {
            #[serde(deserialize_with = "whole_number")]
            q: u32,
        }
        let q = |json: &str| serde_json::from_str::<Q>(json).map(|q| q.q).map_err(|e| e.to_string());
        assert_eq!(q(r#"{"q": 7}"#), Ok(7));
        assert_eq!(q(r#"{"q": 7.0}"#), Ok(7));
        assert_eq!(q(r#"{"q": 7e0}"#), Ok(7));
        for bad in ["7.5", "-1", "-1.0", "4294967296", "1e300", r#""7""#] {
            assert!(q(&format!(r#"{{"q": {bad}}}"#)).is_err(), "{bad}");
        }
    }

    #[test]
    fn date_times_follow_rfc_3339_strictly() {
        #[derive(Deserialize)]
        struct At {
            #[serde(deserialize_with = "rfc3339")]
            at: DateTime<Utc>,
        }
        let at = |s: &str| serde_json::from_str::<At>(&format!(r#"{{"at": "{s}"}}"#)).map(|a| a.at);
        assert_eq!(
            at("2026-11-28T00:00:00+09:00").unwrap(),
            at("2026-11-27T15:00:00Z").unwrap()
        );
        assert!(at("2026-11-27t15:00:00.123z").is_ok());
        assert!(at("1001-01-01T00:00:00+23:59").is_ok());
        assert!(at("9998-12-31T23:59:59.999-23:59").is_ok());
        for bad in [
            "2026-11-27 15:00:00Z",
            "2026-11-27T15:00:00",
            "yesterday",
            "",
            "1000-06-01T00:00:00Z",
            "9999-01-01T00:00:00Z",
            "0001-01-01T00:00:00Z",
        ] {
            assert!(at(bad).is_err(), "{bad}");
        }
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
