//! Property tests of every decoder of outside data in `fcfs-shared`: path, query, header and body
//! inputs of the API, the messages and events the functions consume (reservations, grading
//! partitions, alarms), and what the adapters read back (Redis outcomes, the database secret).
//!
//! For each decoder: (a) any input (arbitrary Unicode, bytes read as UTF-8, ASCII, JSON built from
//! a small grammar with the type's real field names and values of any JSON type) gives an answer,
//! never a panic, and an error names the field the API promises; (b) at the edges of every range
//! it accepts (lengths, numbers, years, timestamps at MySQL's and chrono's limits) it accepts
//! exactly inside and refuses outside; (c) what an encoder writes decodes back to the same value.
//!
//! The defects these properties found are the regression tests at the end of the file, each with
//! its input (all fixed since).
//!
//! 256 cases a property. The seed is fixed, so that a run never fails on a case another run did
//! not draw; set `PROPTEST_RNG_SEED` to explore others. Nothing is written to
//! `proptest-regressions/`.

use std::collections::BTreeSet;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use fcfs_shared::adapters::discord::DiscordWebhook;
use fcfs_shared::adapters::redis::{decode_outcome, encode_outcome};
use fcfs_shared::adapters::secrets::DatabaseSecret;
use fcfs_shared::alerts::domain::{AlarmChange, DiscordMessage, Notice};
use fcfs_shared::alerts::error::DeliveryFailure;
use fcfs_shared::alerts::ports::ChatWebhook;
use fcfs_shared::coupons::domain::{
    CancelUse, CouponQuery, CouponStatus, Cursor, MAX_ORDER_AMOUNT, MAX_ORDER_ID_CHARS, UseCoupon,
};
use fcfs_shared::grading::domain::{
    MAX_TIERS, Month, OrderInput, OrderStatus, PartitionTask, Policy, RewardKind, RunStatus,
};
use fcfs_shared::http::{ApiError, KEY_EXPIRES_AT, json_body, partner_id, partner_id_at};
use fcfs_shared::issuance::domain::{
    CampaignKind, DiscountType, MAX_NAME_CHARS, MAX_TOTAL_QUANTITY, NewCampaign, Outcome, RejectionReason, Reservation,
};
use fcfs_shared::issuance::{IssuanceError, Message, ReservationWriter};
use fcfs_shared::kernel::{
    MAX_MONEY_AMOUNT, MAX_PAGE, MAX_USER_ID_CHARS, UserId, page_limit, rfc3339, storable_instant, whole_number,
};
use fcfs_shared::keys::domain::{KEY_LEN, KEY_PREFIX, KeyStatus, lookup_hash};
use fcfs_shared::points::domain::{
    EarnPoints, HistoryQuery, IdempotencyKey, MAX_AMOUNT, MAX_IDEMPOTENCY_KEY_CHARS, MAX_REASON_CHARS,
    MAX_VALIDITY_DAYS, Movement, Refusal, TransferPoints, UsePoints, encode_cursor,
};
use fcfs_shared::testkit::{MemoryCouponBook, MemoryLedger};
use futures_util::FutureExt as _;
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt as _};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use serde::Deserialize;

// ---------------------------------------------------------------------------------------------
// Configuration and the bounds the properties check against.

fn config() -> ProptestConfig {
    let mut config = ProptestConfig::with_cases(256);
    config.failure_persistence = None;
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(0x0fc5_c042);
    }
    config
}

/// 1000-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z, MySQL `DATETIME`'s range, in epoch ms.
const MYSQL_MIN_MS: i64 = -30_610_224_000_000;
const MYSQL_MAX_MS: i64 = 253_402_300_799_999;
/// The body limit the campaign, grading and points functions pass to `json_body`.
const MAX_BODY: usize = 16 * 1024;

fn chrono_min_ms() -> i64 {
    DateTime::<Utc>::MIN_UTC.timestamp_millis()
}

fn chrono_max_ms() -> i64 {
    DateTime::<Utc>::MAX_UTC.timestamp_millis()
}

fn at_ms(millis: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(millis)
}

/// A fixed "now" for validations that take one.
fn now() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_800_000_000_123).unwrap_or_default()
}

fn is_user_id(text: &str) -> bool {
    (1..=MAX_USER_ID_CHARS).contains(&text.chars().count())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

fn is_visible_ascii(text: &str, max: usize) -> bool {
    (1..=max).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_graphic())
}

fn quoted(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

fn object(pairs: &[(String, String)]) -> String {
    let members: Vec<String> = pairs.iter().map(|(k, v)| format!("{}:{v}", quoted(k))).collect();
    format!("{{{}}}", members.join(","))
}

fn request(body: &str) -> Request {
    Request::new(Body::Text(body.to_owned()))
}

/// The field a body error names, without the index of an array body: `[3].amount` → `amount`.
fn without_index(field: &str) -> &str {
    field
        .strip_prefix('[')
        .and_then(|rest| rest.split_once(']'))
        .filter(|(index, _)| !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()))
        .map_or(field, |(_, rest)| rest.strip_prefix('.').unwrap_or(rest))
}

/// Its first segment: `discount.value` → `discount`.
fn field_root(field: &str) -> &str {
    field.split(['.', '[']).next().unwrap_or(field)
}

/// A body error names the body, a field of the type, a key the body carries (an unknown one), or
/// an element of an array body (`[0]`: a repeated field of the element).
///
/// One kind of valid JSON is answered "body is not valid JSON" naming no field: a number beyond
/// f64 (`1e400`), which serde_json cannot read as a value at all (see
/// `a_valid_json_body_with_a_wrong_enum_value_or_a_huge_number_names_its_field`). It is
/// tolerated here, for a type with number or enum fields (`enums`); no other "not JSON" answer is.
fn names_a_field(error: &ApiError, known: &[&str], keys: &BTreeSet<String>, enums: bool) -> Result<(), String> {
    match error {
        ApiError::InvalidBodyField { field, .. } => {
            // An unknown key is named as sent, whatever characters it holds.
            let element = without_index(field);
            let root = field_root(element);
            let names_element = element.is_empty() && field.starts_with('[');
            if names_element || root == "body" || known.contains(&root) || keys.contains(root) || keys.contains(element)
            {
                Ok(())
            } else {
                Err(format!("names {field:?}, neither a field nor a key sent: {error}"))
            }
        }
        ApiError::InvalidBody(message)
            if message.contains("number out of range") || (enums && message.contains("expected value")) =>
        {
            Ok(())
        }
        ApiError::InvalidBody(_) => Err(format!("a JSON body refused as not JSON: {error}")),
        other => Err(format!("unexpected error {other:?}")),
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies: text, JSON from a small grammar, bodies with a type's real fields, date-times.

/// Any text: arbitrary Unicode, printable Unicode, bytes read as UTF-8, ASCII, and text near the
/// alphabets the decoders accept (ids, numbers).
fn text() -> BoxedStrategy<String> {
    prop_oneof![
        any::<String>(),
        "\\PC*",
        prop::collection::vec(any::<u8>(), 0..80).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        "[ -~]{0,80}",
        "[A-Za-z0-9_.:+\\- ]{0,70}",
        "[0-9+\\-.eE ]{0,24}",
    ]
    .boxed()
}

/// Numbers at every bound a decoder knows, and any integer or finite float.
const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1",
    "-1",
    "0.0",
    "-0.0",
    "1.0",
    "1.5",
    "0.5e1",
    "7e0",
    "1E2",
    "1e-2",
    "100",
    "101",
    "255",
    "256",
    "65535",
    "65536",
    "4294967295",
    "4294967296",
    "4294967295.0",
    "9007199254740992",
    "9007199254740993",
    "18446744073709551615",
    "18446744073709551616",
    "18446744073709551615.0",
    "-9223372036854775808",
    "-9223372036854775809",
    "1000000000",
    "1000000001",
    "10000000",
    "10000001",
    "1000000000000",
    "1000000000001",
    "1000000000000000",
    "1000000000000001",
    "1e300",
    "1e400",
    "-1e400",
];

fn json_number() -> BoxedStrategy<String> {
    prop_oneof![
        prop::sample::select(NUMBERS).prop_map(str::to_owned),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        (0u64..2_000).prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(|f| format!("{f:e}")),
    ]
    .boxed()
}

/// Every field name of every decoded type, so that generated objects hit real fields.
const FIELD_NAMES: &[&str] = &[
    "userId",
    "orderId",
    "orderAmount",
    "amount",
    "reason",
    "expiresAt",
    "fromUserId",
    "toUserId",
    "name",
    "totalQuantity",
    "issueStartsAt",
    "issueEndsAt",
    "couponExpiresAt",
    "discount",
    "type",
    "value",
    "kind",
    "schemaVersion",
    "requestId",
    "campaignId",
    "partnerId",
    "rank",
    "reservedAt",
    "status",
    "orderedAt",
    "tiers",
    "grade",
    "minAmount",
    "couponCampaignId",
    "points",
    "runId",
    "partition",
    "username",
    "password",
    "host",
    "port",
    "dbname",
    "AlarmName",
    "NewStateValue",
    "Trigger",
];

fn json_key() -> BoxedStrategy<String> {
    prop_oneof![
        3 => prop::sample::select(FIELD_NAMES).prop_map(str::to_owned),
        1 => prop::sample::select(&["", "a`b", "userid", "UserId", "x"][..]).prop_map(str::to_owned),
        1 => text(),
    ]
    .boxed()
}

fn json_leaf() -> BoxedStrategy<String> {
    prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        json_number(),
        text().prop_map(|t| quoted(&t)),
        date_time().prop_map(|d| quoted(&d.text())),
    ]
    .boxed()
}

/// Any JSON value, nested up to three levels.
fn json_value() -> BoxedStrategy<String> {
    json_leaf()
        .prop_recursive(3, 24, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(|items| format!("[{}]", items.join(","))),
                prop::collection::vec((json_key(), inner), 0..5).prop_map(|pairs| object(&pairs)),
            ]
        })
        .boxed()
}

/// A field's value: usually one from `good` (valid or at an edge), else any JSON value.
fn loose(good: BoxedStrategy<String>) -> BoxedStrategy<String> {
    prop_oneof![3 => good, 1 => json_value()].boxed()
}

/// A JSON object with a type's fields, each present nine times in ten with a `loose` value,
/// sometimes one more member (unknown, or a repeated field) anywhere; with the keys it carries.
fn body(fields: Vec<(&'static str, BoxedStrategy<String>)>) -> BoxedStrategy<(String, BTreeSet<String>)> {
    let members: Vec<BoxedStrategy<Option<(String, String)>>> = fields
        .into_iter()
        .map(|(name, good)| prop::option::weighted(0.9, loose(good).prop_map(move |v| (name.to_owned(), v))).boxed())
        .collect();
    let extra = prop::option::weighted(0.15, (json_key(), json_value()));
    (members, extra, any::<prop::sample::Index>())
        .prop_map(|(members, extra, at)| {
            let mut pairs: Vec<(String, String)> = members.into_iter().flatten().collect();
            if let Some(member) = extra {
                pairs.insert(at.index(pairs.len() + 1), member);
            }
            let keys = pairs.iter().map(|(k, _)| k.clone()).collect();
            (object(&pairs), keys)
        })
        .boxed()
}

fn string_of(strategy: impl Strategy<Value = String> + 'static) -> BoxedStrategy<String> {
    strategy.prop_map(|s| quoted(&s)).boxed()
}

fn number_in(edges: &'static [&'static str], range: std::ops::RangeInclusive<u64>) -> BoxedStrategy<String> {
    prop_oneof![
        prop::sample::select(edges).prop_map(str::to_owned),
        range.prop_map(|n| n.to_string()),
    ]
    .boxed()
}

fn user_id_text() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "[A-Za-z0-9_.:-]{1,64}",
        1 => "[a-z]{64,65}",
        1 => text(),
    ]
    .boxed()
}

fn order_id_text() -> BoxedStrategy<String> {
    prop_oneof![4 => "[!-~]{1,130}", 1 => text()].boxed()
}

/// The parts of an RFC 3339-like date-time: years around every bound a decoder knows (0,
/// 999-1001, 1999-2000, 9998-10000), the separator among `T`, `t` and a space, an offset up to
/// ±23:59 or `Z`/`z`, a fraction of 1-9 digits or none.
#[derive(Debug, Clone)]
struct DateParts {
    year: u32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    fraction: Option<String>,
    separator: char,
    /// Minutes east of UTC; `None` is `Z` (or `z` when `lower_z`).
    offset: Option<i32>,
    lower_z: bool,
}

impl DateParts {
    fn text(&self) -> String {
        let fraction = self.fraction.as_ref().map(|f| format!(".{f}")).unwrap_or_default();
        let offset = match self.offset {
            None if self.lower_z => "z".to_owned(),
            None => "Z".to_owned(),
            Some(m) => format!(
                "{}{:02}:{:02}",
                if m < 0 { '-' } else { '+' },
                m.abs() / 60,
                m.abs() % 60
            ),
        };
        format!(
            "{:04}-{:02}-{:02}{}{:02}:{:02}:{:02}{fraction}{offset}",
            self.year, self.month, self.day, self.separator, self.hour, self.minute, self.second
        )
    }

    /// The instant it names.
    fn instant(&self) -> Option<DateTime<Utc>> {
        let nanos = match &self.fraction {
            Some(f) => format!("{f:0<9}").parse().ok()?,
            None => 0,
        };
        let local = NaiveDate::from_ymd_opt(i32::try_from(self.year).ok()?, self.month, self.day)?.and_hms_nano_opt(
            self.hour,
            self.minute,
            self.second,
            nanos,
        )?;
        let utc = local.checked_sub_signed(Duration::minutes(i64::from(self.offset.unwrap_or(0))))?;
        Some(Utc.from_utc_datetime(&utc))
    }

    fn written_t(&self) -> bool {
        matches!(self.separator, 'T' | 't')
    }
}

const EDGE_YEARS: &[u32] = &[
    0, 1, 999, 1000, 1001, 1002, 1999, 2000, 2001, 2026, 9997, 9998, 9999, 10_000,
];

fn date_time() -> BoxedStrategy<DateParts> {
    (
        prop_oneof![prop::sample::select(EDGE_YEARS), 0u32..=10_001],
        (1u32..=12, 1u32..=28, 0u32..=23, 0u32..=59, 0u32..=59),
        prop::option::of("[0-9]{1,9}"),
        prop::sample::select(&['T', 't', ' '][..]),
        prop::option::of(prop_oneof![Just(1439), Just(-1439), Just(0), -1439i32..=1439]),
        any::<bool>(),
    )
        .prop_map(
            |(year, (month, day, hour, minute, second), fraction, separator, offset, lower_z)| DateParts {
                year,
                month,
                day,
                hour,
                minute,
                second,
                fraction,
                separator,
                offset,
                lower_z,
            },
        )
        .boxed()
}

/// Epoch milliseconds: anywhere in chrono's range, and within a few seconds of MySQL's bounds.
fn millis() -> BoxedStrategy<i64> {
    prop_oneof![
        chrono_min_ms()..=chrono_max_ms(),
        (MYSQL_MIN_MS - 5_000)..=(MYSQL_MIN_MS + 5_000),
        (MYSQL_MAX_MS - 5_000)..=(MYSQL_MAX_MS + 5_000),
        prop::sample::select(vec![
            MYSQL_MIN_MS - 1,
            MYSQL_MIN_MS,
            MYSQL_MAX_MS,
            MYSQL_MAX_MS + 1,
            chrono_min_ms(),
            chrono_max_ms(),
            0,
        ]),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------------------------
// Bodies of each request type: their real fields, values near their edges.

fn use_coupon_body() -> BoxedStrategy<(String, BTreeSet<String>)> {
    body(vec![
        ("userId", string_of(user_id_text())),
        ("orderId", string_of(order_id_text())),
        (
            "orderAmount",
            number_in(&["0", "1000000000000", "1000000000001", "1000000000000.0"], 0..=2_000),
        ),
    ])
}

fn date_time_json() -> BoxedStrategy<String> {
    date_time().prop_map(|d| quoted(&d.text())).boxed()
}

fn earn_body() -> BoxedStrategy<(String, BTreeSet<String>)> {
    let soon = prop_oneof![
        Just(Duration::zero()),
        Just(Duration::milliseconds(1)),
        Just(Duration::days(i64::from(MAX_VALIDITY_DAYS))),
        Just(Duration::days(i64::from(MAX_VALIDITY_DAYS)) + Duration::milliseconds(1)),
        (-10i64..=4_000).prop_map(Duration::days),
    ]
    .prop_map(|ahead| quoted(&(now() + ahead).to_rfc3339()));
    body(vec![
        ("amount", number_in(&["0", "1000000000", "1000000001"], 0..=2_000)),
        ("reason", string_of(prop_oneof!["[a-zé ]{0,260}", text()])),
        ("expiresAt", prop_oneof![soon, date_time_json()].boxed()),
    ])
}

fn use_points_body() -> BoxedStrategy<(String, BTreeSet<String>)> {
    body(vec![
        ("amount", number_in(&["0", "1000000000", "1000000001"], 0..=2_000)),
        ("orderId", string_of(order_id_text())),
        ("reason", string_of(prop_oneof!["[a-zé ]{0,260}", text()])),
    ])
}

fn transfer_body() -> BoxedStrategy<(String, BTreeSet<String>)> {
    body(vec![
        (
            "fromUserId",
            string_of(prop_oneof![Just("a".to_owned()), user_id_text()]),
        ),
        ("toUserId", string_of(prop_oneof![Just("a".to_owned()), user_id_text()])),
        ("amount", number_in(&["0", "1000000000", "1000000001"], 0..=2_000)),
    ])
}

fn campaign_body() -> BoxedStrategy<(String, BTreeSet<String>)> {
    let discount = body(vec![
        (
            "type",
            string_of(prop_oneof![
                Just("AMOUNT".to_owned()),
                Just("PERCENT".to_owned()),
                text()
            ]),
        ),
        (
            "value",
            number_in(&["0", "1", "100", "101", "18446744073709551615"], 0..=200),
        ),
    ])
    .prop_map(|(text, _)| text)
    .boxed();
    let date = prop_oneof![
        (-3i64..=3).prop_map(|h| quoted(&(now() + Duration::hours(h)).to_rfc3339())),
        date_time_json(),
    ]
    .boxed();
    body(vec![
        ("name", string_of(prop_oneof![" {0,2}[a-zé]{0,202} {0,2}", text()])),
        (
            "totalQuantity",
            number_in(&["0", "1", "10000000", "10000001", "4294967295", "4294967296"], 0..=100),
        ),
        ("issueStartsAt", date.clone()),
        ("issueEndsAt", date.clone()),
        ("couponExpiresAt", date),
        ("discount", discount),
        (
            "kind",
            string_of(prop_oneof![Just("SALE".to_owned()), Just("REWARD".to_owned()), text()]),
        ),
    ])
}

fn reservation_body() -> BoxedStrategy<(String, BTreeSet<String>)> {
    body(vec![
        ("schemaVersion", number_in(&["1", "2", "-1"], 0..=3)),
        (
            "requestId",
            string_of(prop_oneof![
                any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).hyphenated().to_string()),
                text()
            ]),
        ),
        ("campaignId", number_in(&["1", "2", "3", "18446744073709551616"], 0..=4)),
        ("partnerId", string_of(prop_oneof![Just("p".to_owned()), text()])),
        ("userId", string_of(user_id_text())),
        ("rank", number_in(&["0", "4294967295", "4294967296"], 0..=10)),
        (
            "reservedAt",
            prop_oneof![
                date_time_json(),
                // Beyond four digits of years, chrono reads a signed year: every year it holds.
                prop::sample::select(
                    &[
                        "-0001-01-01T00:00:00Z",
                        "0999-12-31T23:59:59.999Z",
                        "1000-01-01T00:00:00Z",
                        "9999-12-31T23:59:59.999Z",
                        "+10000-01-01T00:00:00Z",
                        "+100000-01-01T00:00:00Z",
                        "+262142-12-31T23:59:59Z",
                    ][..]
                )
                .prop_map(quoted),
            ]
            .boxed(),
        ),
    ])
}

fn order_body() -> BoxedStrategy<(String, BTreeSet<String>)> {
    body(vec![
        ("orderId", string_of(prop_oneof!["[!-~]{1,66}", text()])),
        ("userId", string_of(user_id_text())),
        (
            "amount",
            number_in(&["0", "1000000000000", "1000000000001", "1.5"], 0..=2_000),
        ),
        (
            "status",
            string_of(prop_oneof![
                Just("PAID".to_owned()),
                Just("CANCELLED".to_owned()),
                text()
            ]),
        ),
        ("orderedAt", date_time_json()),
    ])
}

fn tier_body() -> BoxedStrategy<String> {
    body(vec![
        ("grade", string_of(prop_oneof!["[A-Za-z0-9_-]{1,33}", text()])),
        (
            "minAmount",
            number_in(&["0", "1000000000000000", "1000000000000001"], 0..=5),
        ),
        ("couponCampaignId", number_in(&["0", "1", "null"], 0..=3)),
        (
            "points",
            number_in(&["0", "1", "1000000000", "1000000001", "null"], 0..=3),
        ),
    ])
    .prop_map(|(text, _)| text)
    .boxed()
}

fn policy_body() -> BoxedStrategy<(String, BTreeSet<String>)> {
    let tiers = prop::collection::vec(tier_body(), 0..=MAX_TIERS + 1)
        .prop_map(|tiers| format!("[{}]", tiers.join(",")))
        .boxed();
    body(vec![("tiers", tiers)])
}

// ---------------------------------------------------------------------------------------------
// Local types carrying the kernel's serde helpers (their unit tests' shape).

#[derive(Debug, Deserialize)]
struct WholeU64 {
    #[serde(deserialize_with = "whole_number")]
    q: u64,
}

#[derive(Debug, Deserialize)]
struct WholeU32 {
    #[serde(deserialize_with = "whole_number")]
    q: u32,
}

#[derive(Debug, Deserialize)]
struct At {
    #[serde(deserialize_with = "rfc3339")]
    at: DateTime<Utc>,
}

/// The largest n that serde_json reads exactly when written `n.0` (`n0` < 2^53).
const EXACT_WITH_A_FRACTION_DIGIT: u64 = ((1 << 53) - 1) / 10;

/// What `whole_number` should make of a JSON value: a non-negative integer, written with or
/// without a zero fraction, that fits `max`.
fn whole_model(json: &str, max: u64) -> Option<u64> {
    let serde_json::Value::Number(n) = serde_json::from_str::<serde_json::Value>(json).ok()? else {
        return None;
    };
    let whole = if let Some(u) = n.as_u64() {
        Some(u)
    } else if let Some(i) = n.as_i64() {
        u64::try_from(i).ok()
    } else {
        let f = n.as_f64()?;
        (f.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&f)).then_some(f as u64)
    };
    whole.filter(|w| *w <= max)
}

/// A query's parameters: real names (and unknown ones), values valid, at an edge, or anything.
fn query_params(names: &'static [&'static str], good: BoxedStrategy<String>) -> BoxedStrategy<Vec<(String, String)>> {
    let name = prop_oneof![
        4 => prop::sample::select(names).prop_map(str::to_owned),
        1 => text(),
    ];
    let value = prop_oneof![2 => good, 1 => text()];
    prop::collection::vec((name, value), 0..5).boxed()
}

fn query_values() -> BoxedStrategy<String> {
    prop_oneof![
        prop::sample::select(&["ISSUED", "USED", "EXPIRED", "0", "1", "100", "101", "-1", "+5", ""][..])
            .prop_map(str::to_owned),
        any::<u64>().prop_map(|n| n.to_string()),
        (millis(), any::<u64>()).prop_map(|(m, id)| URL_SAFE_NO_PAD.encode(format!("{m}.{id}"))),
        any::<u64>().prop_map(encode_cursor),
        prop::collection::vec(any::<u8>(), 0..24).prop_map(|b| URL_SAFE_NO_PAD.encode(b)),
    ]
    .boxed()
}

fn alarm_json() -> BoxedStrategy<String> {
    let long = prop_oneof!["[a-z ]{0,40}", "[a-z]{1000,1100}", "x{4100}", text()].boxed();
    let string = loose(string_of(long.clone()));
    let dimension = body(vec![
        ("name", string_of(long.clone())),
        ("value", string_of(long.clone())),
    ])
    .prop_map(|(t, _)| t)
    .boxed();
    let metric = body(vec![
        ("Id", string_of(long.clone())),
        ("Expression", string_of(long.clone())),
        ("Label", string_of(long.clone())),
        ("MetricStat", json_value()),
    ])
    .prop_map(|(t, _)| t)
    .boxed();
    let trigger = body(vec![
        ("MetricName", string.clone()),
        ("Namespace", string.clone()),
        ("Statistic", string.clone()),
        ("ExtendedStatistic", string.clone()),
        (
            "Dimensions",
            prop::collection::vec(dimension, 0..4)
                .prop_map(|d| format!("[{}]", d.join(",")))
                .boxed(),
        ),
        ("Period", json_number()),
        ("EvaluationPeriods", json_number()),
        (
            "ComparisonOperator",
            string_of(prop_oneof![
                Just("GreaterThanThreshold".to_owned()),
                Just("LessThanOrEqualToThreshold".to_owned()),
                long.clone()
            ]),
        ),
        ("Threshold", json_number()),
        (
            "Metrics",
            prop::collection::vec(metric, 0..3)
                .prop_map(|m| format!("[{}]", m.join(",")))
                .boxed(),
        ),
    ])
    .prop_map(|(t, _)| t)
    .boxed();
    body(vec![
        ("AlarmName", string.clone()),
        ("AlarmDescription", string.clone()),
        ("AWSAccountId", string.clone()),
        (
            "NewStateValue",
            string_of(prop_oneof![
                Just("ALARM".to_owned()),
                Just("OK".to_owned()),
                Just("INSUFFICIENT_DATA".to_owned()),
                long.clone()
            ]),
        ),
        ("NewStateReason", string.clone()),
        ("OldStateValue", string.clone()),
        (
            "StateChangeTime",
            string_of(prop_oneof![
                Just("2026-11-23T10:05:00.123+0000".to_owned()),
                date_time().prop_map(|d| d.text()),
                text()
            ]),
        ),
        (
            "AlarmArn",
            string_of(prop_oneof![
                Just("arn:aws:cloudwatch:us-east-1:123456789012:alarm:x".to_owned()),
                long
            ]),
        ),
        ("Trigger", trigger),
    ])
    .prop_map(|(t, _)| t)
    .boxed()
}

/// Discord's per-part limits (characters): title 256, description 4096, field value 1024,
/// content 2000; and an embed's timestamp is RFC 3339.
fn within_discord_part_limits(message: &DiscordMessage) -> Result<(), String> {
    let chars = |s: &str| s.chars().count();
    if chars(&message.content) > 2000 {
        return Err(format!("content of {} characters", chars(&message.content)));
    }
    for embed in &message.embeds {
        if chars(&embed.title) > 256 || chars(&embed.description) > 4096 {
            return Err(format!(
                "title {} / description {} characters",
                chars(&embed.title),
                chars(&embed.description)
            ));
        }
        if let Some(field) = embed
            .fields
            .iter()
            .find(|f| chars(&f.value) > 1024 || chars(&f.name) > 256)
        {
            return Err(format!("field {} of {} characters", field.name, chars(&field.value)));
        }
        if let Some(at) = &embed.timestamp
            && DateTime::parse_from_rfc3339(at).is_err()
        {
            return Err(format!("timestamp {at:?} is not RFC 3339"));
        }
    }
    Ok(())
}

fn embed_chars(message: &DiscordMessage) -> usize {
    message
        .embeds
        .iter()
        .map(|e| {
            e.title.chars().count()
                + e.description.chars().count()
                + e.fields
                    .iter()
                    .map(|f| f.name.chars().count() + f.value.chars().count())
                    .sum::<usize>()
        })
        .sum()
}

/// A writer on an in-memory book of campaigns 1 to 3 (partner `p`, 100 coupons each), chunks of 4;
/// and its book.
fn writer() -> (
    ReservationWriter<Arc<MemoryCouponBook>, MemoryLedger>,
    Arc<MemoryCouponBook>,
) {
    let book = Arc::new(MemoryCouponBook::default());
    if let Ok(mut campaigns) = book.campaigns.lock() {
        campaigns.extend((1..=3).map(|id| (id, ("p".to_owned(), 100))));
    }
    (
        ReservationWriter::new(Arc::clone(&book), MemoryLedger::default(), 4),
        book,
    )
}

/// Whether the writer takes a body: one reservation (an object) or a non-empty pack (an array),
/// each of them within what the issue API writes (`Reservation::check`).
fn writer_takes(body: &str) -> bool {
    let decoded = if body.trim_start().starts_with('[') {
        serde_json::from_str::<Vec<Reservation>>(body).ok()
    } else {
        serde_json::from_str::<Reservation>(body).ok().map(|r| vec![r])
    };
    decoded.is_some_and(|rs| !rs.is_empty() && rs.iter().all(|r| r.check().is_ok()))
}

fn message_body() -> BoxedStrategy<String> {
    let one = reservation_body().prop_map(|(t, _)| t).boxed();
    prop_oneof![
        4 => one.clone(),
        1 => prop::collection::vec(one, 0..4).prop_map(|rs| format!(" [{}]", rs.join(","))),
        1 => json_value(),
        1 => text(),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------------------------
// The kernel: user ids, whole numbers, date-times, MySQL's range, page limits.

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_user_id_is_exactly_1_to_64_of_its_alphabet(raw in text()) {
        let parsed = UserId::parse(&raw);
        prop_assert_eq!(parsed.is_ok(), is_user_id(&raw), "{:?}", raw);
        match parsed {
            Ok(id) => prop_assert_eq!(id.as_str(), raw.as_str()),
            Err(e) => prop_assert_eq!(e.field, "userId"),
        }
        // Deserialising (messages, stored rows) applies the same rule.
        prop_assert_eq!(serde_json::from_str::<UserId>(&quoted(&raw)).is_ok(), is_user_id(&raw));
    }

    #[test]
    fn a_user_id_length_is_accepted_from_1_to_64(
        len in 0usize..=MAX_USER_ID_CHARS + 3,
        fill in "[A-Za-z0-9_.:-]",
        foreign in "[^A-Za-z0-9_.:-]",
        at in any::<prop::sample::Index>(),
    ) {
        let raw = fill.repeat(len);
        prop_assert_eq!(UserId::parse(&raw).is_ok(), (1..=MAX_USER_ID_CHARS).contains(&len));
        // One foreign character anywhere spoils any length.
        let mut spoiled: Vec<char> = raw.chars().collect();
        spoiled.insert(at.index(spoiled.len() + 1), foreign.chars().next().unwrap_or(' '));
        let spoiled: String = spoiled.into_iter().collect();
        prop_assert_eq!(UserId::parse(&spoiled).map_err(|e| e.field), Err("userId"));
    }

    #[test]
    fn any_json_value_as_a_whole_number_fits_or_is_refused(json in json_value()) {
        let body = format!(r#"{{"q":{json}}}"#);
        let wide = serde_json::from_str::<WholeU64>(&body).map(|w| w.q).ok();
        prop_assert_eq!(wide, whole_model(&json, u64::MAX), "{}", json);
        let narrow = serde_json::from_str::<WholeU32>(&body).map(|w| w.q).ok();
        prop_assert_eq!(narrow, whole_model(&json, u64::from(u32::MAX)).and_then(|n| u32::try_from(n).ok()));
    }

    #[test]
    fn a_whole_number_is_taken_up_to_its_types_max_with_or_without_a_zero_fraction(n in prop_oneof![
        any::<u64>(),
        (u64::from(u32::MAX) - 2)..=(u64::from(u32::MAX) + 2),
        (u64::MAX - 2)..=u64::MAX,
        0u64..=2,
        EXACT_WITH_A_FRACTION_DIGIT - 2..=EXACT_WITH_A_FRACTION_DIGIT,
    ]) {
        let wide = |json: String| serde_json::from_str::<WholeU64>(&format!(r#"{{"q":{json}}}"#)).map(|w| w.q).ok();
        let narrow = |json: String| serde_json::from_str::<WholeU32>(&format!(r#"{{"q":{json}}}"#)).map(|w| w.q).ok();
        prop_assert_eq!(wide(n.to_string()), Some(n));
        prop_assert_eq!(narrow(n.to_string()), u32::try_from(n).ok());
        // `n.0` is n wherever serde_json reads it exactly (its default float parsing is exact
        // while the digits, the fraction's included, make an integer below 2^53): far above every
        // bounded field's maximum.
        if n <= EXACT_WITH_A_FRACTION_DIGIT {
            prop_assert_eq!(wide(format!("{n}.0")), Some(n));
            prop_assert_eq!(wide(format!("{n}e0")), Some(n));
            prop_assert_eq!(narrow(format!("{n}.0")), u32::try_from(n).ok());
        }
        // With a fraction (while a float still has one: below 2^52).
        if n < 1 << 52 {
            prop_assert_eq!(wide(format!("{n}.5")), None);
        }
        if n > 0 {
            prop_assert_eq!(wide(format!("-{n}")), None);
            prop_assert_eq!(wide(format!("-{n}.0")), None);
        }
        prop_assert_eq!(wide(quoted(&n.to_string())), None, "a string is no number");
    }

    #[test]
    fn a_date_time_of_any_text_decodes_only_to_an_instant_mysql_can_hold(raw in prop_oneof![
        text(),
        date_time().prop_map(|d| d.text()),
        concat!(
            "[0-9+\\-]{4,7}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}",
            "(\\.[0-9]{1,12})?([Zz]|[+\\-][0-9]{2}:?[0-9]{2})?",
        ),
    ]) {
        if let Ok(at) = serde_json::from_str::<At>(&format!(r#"{{"at":{}}}"#, quoted(&raw))) {
            prop_assert!(storable_instant("at", at.at).is_ok(), "{} → {}", raw, at.at);
        }
    }

    #[test]
    fn a_date_time_is_taken_with_a_t_in_years_1001_to_9998_at_any_offset(parts in date_time()) {
        let decoded = serde_json::from_str::<At>(&format!(r#"{{"at":{}}}"#, quoted(&parts.text()))).map(|a| a.at);
        let expected = (parts.written_t() && (1001..=9998).contains(&parts.year)).then(|| parts.instant()).flatten();
        prop_assert_eq!(decoded.ok(), expected, "{}", parts.text());
    }

    #[test]
    fn an_instant_is_storable_exactly_inside_mysql_datetime(
        millis in millis(),
        nanos in prop_oneof![Just(0u32), 0u32..1_000_000],
    ) {
        let plus_nanos = |at: DateTime<Utc>| at.checked_add_signed(Duration::nanoseconds(i64::from(nanos)));
        let Some(at) = at_ms(millis).and_then(plus_nanos) else {
            return Ok(());
        };
        let inside = (MYSQL_MIN_MS..MYSQL_MAX_MS).contains(&millis) || (millis == MYSQL_MAX_MS && nanos == 0);
        let checked = storable_instant("someField", at);
        prop_assert_eq!(checked.is_ok(), inside, "{}", at);
        prop_assert!(checked.map_or_else(|e| e.field == "someField", |ok| ok == at));
    }

    #[test]
    fn a_page_limit_is_1_to_100(raw in prop_oneof![
        text(),
        (-5i64..=300).prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
    ]) {
        match page_limit(&raw) {
            Ok(limit) => {
                prop_assert!((1..=MAX_PAGE).contains(&limit));
                prop_assert_eq!(raw.parse::<u32>().ok(), Some(limit));
            }
            Err(e) => {
                prop_assert_eq!(e.field, "limit");
                prop_assert!(!raw.parse::<u32>().is_ok_and(|n| (1..=MAX_PAGE).contains(&n)), "{:?}", raw);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Coupons: status, keyset cursor, list query, use and cancel bodies.

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_coupon_status_is_one_of_three_names(raw in prop_oneof![
        text(),
        Just("USED".to_owned()),
        "(ISSUED|USED|EXPIRED)[ a-z]?",
    ]) {
        let known = ["ISSUED", "USED", "EXPIRED"].contains(&raw.as_str());
        match CouponStatus::parse(&raw) {
            Ok(status) => prop_assert_eq!(status.as_str(), raw.as_str()),
            Err(e) => {
                prop_assert!(!known);
                prop_assert_eq!(e.field, "status");
            }
        }
    }

    #[test]
    fn any_cursor_text_is_a_cursor_field_error_or_a_storable_instant(raw in prop_oneof![
        text(),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(|b| URL_SAFE_NO_PAD.encode(b)),
        text().prop_map(|t| URL_SAFE_NO_PAD.encode(t)),
    ]) {
        match Cursor::decode(&raw) {
            Ok(cursor) => prop_assert!(storable_instant("cursor", cursor.issued_at).is_ok()),
            Err(e) => prop_assert_eq!(e.field, "cursor"),
        }
    }

    #[test]
    fn a_cursor_decodes_iff_its_instant_fits_mysql_and_its_id_is_a_u64(
        millis in prop_oneof![millis(), any::<i64>()],
        id in prop_oneof![any::<u64>().prop_map(|n| n.to_string()), Just("18446744073709551616".to_owned()), text()],
    ) {
        let decoded = Cursor::decode(&URL_SAFE_NO_PAD.encode(format!("{millis}.{id}")));
        let fits = (MYSQL_MIN_MS..=MYSQL_MAX_MS).contains(&millis);
        let expected = id.parse::<u64>().ok().filter(|_| fits);
        prop_assert_eq!(decoded.as_ref().ok().map(|c| c.id), expected, "{}.{}", millis, id);
        match decoded {
            Ok(cursor) => prop_assert_eq!(Some(cursor.issued_at), at_ms(millis)),
            Err(e) => prop_assert_eq!(e.field, "cursor"),
        }
    }

    #[test]
    fn a_cursor_round_trips_inside_mysql_datetime_and_is_refused_outside(millis in millis(), id in any::<u64>()) {
        let Some(issued_at) = at_ms(millis) else { return Ok(()) };
        let cursor = Cursor { issued_at, id };
        let decoded = Cursor::decode(&cursor.encode());
        if (MYSQL_MIN_MS..=MYSQL_MAX_MS).contains(&millis) {
            prop_assert_eq!(decoded, Ok(cursor));
        } else {
            prop_assert_eq!(decoded.map_err(|e| e.field), Err("cursor"));
        }
    }

    #[test]
    fn a_coupon_list_query_names_its_first_bad_parameter(
        params in query_params(&["status", "campaignId", "limit", "cursor"], query_values()),
    ) {
        let parsed = CouponQuery::parse(params.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        // The model: each parameter by its own decoder, the first failure wins, the last value counts.
        let mut expected = Ok((None, None, 50, None));
        for (name, value) in &params {
            let Ok((status, campaign, limit, cursor)) = expected else { break };
            expected = match name.as_str() {
                "status" => CouponStatus::parse(value).map(|s| (Some(s), campaign, limit, cursor)).map_err(|e| e.field),
                "campaignId" => {
                    value.parse::<u64>().map(|c| (status, Some(c), limit, cursor)).map_err(|_| "campaignId")
                }
                "limit" => page_limit(value).map(|l| (status, campaign, l, cursor)).map_err(|e| e.field),
                "cursor" => Cursor::decode(value).map(|c| (status, campaign, limit, Some(c))).map_err(|e| e.field),
                _ => Err("query"),
            };
        }
        prop_assert_eq!(
            parsed.map(|q| (q.status, q.campaign_id, q.limit, q.cursor)).map_err(|e| e.field),
            expected
        );
    }

    #[test]
    fn a_use_body_decodes_and_validates_or_names_its_field((json, keys) in use_coupon_body()) {
        match json_body::<UseCoupon>(&request(&json), MAX_BODY) {
            Ok(body) => {
                prop_assert!(is_user_id(body.user_id.as_str()));
                prop_assert!(is_visible_ascii(body.order_id.as_str(), MAX_ORDER_ID_CHARS));
                let amount = body.order_amount;
                match body.validate() {
                    Ok(_) => prop_assert!(amount <= MAX_ORDER_AMOUNT),
                    Err(e) => {
                        prop_assert!(amount > MAX_ORDER_AMOUNT);
                        prop_assert_eq!(e.field, "orderAmount");
                    }
                }
            }
            Err(e) => {
                if let Err(why) = names_a_field(&e, &["userId", "orderId", "orderAmount"], &keys, false) {
                    prop_assert!(false, "{}: {}", json, why);
                }
            }
        }
    }

    #[test]
    fn a_cancel_body_decodes_or_names_its_field((json, keys) in body(vec![
        ("userId", string_of(user_id_text())),
        ("orderId", string_of(order_id_text())),
    ])) {
        match json_body::<CancelUse>(&request(&json), MAX_BODY) {
            Ok(body) => {
                prop_assert!(is_user_id(body.user_id.as_str()));
                prop_assert!(is_visible_ascii(body.order_id.as_str(), MAX_ORDER_ID_CHARS));
            }
            Err(e) => {
                if let Err(why) = names_a_field(&e, &["userId", "orderId"], &keys, false) {
                    prop_assert!(false, "{}: {}", json, why);
                }
            }
        }
    }

    #[test]
    fn an_order_id_is_1_to_128_visible_ascii_and_an_amount_at_most_10_to_the_12(
        len in prop_oneof![0usize..=3, (MAX_ORDER_ID_CHARS - 2)..=(MAX_ORDER_ID_CHARS + 2)],
        fill in "[!-~]",
        amount in prop_oneof![0u64..=3, (MAX_ORDER_AMOUNT - 2)..=(MAX_ORDER_AMOUNT + 2), any::<u64>()],
    ) {
        let order = fill.repeat(len);
        let json = format!(r#"{{"userId":"u","orderId":{},"orderAmount":{amount}}}"#, quoted(&order));
        let decoded = json_body::<UseCoupon>(&request(&json), MAX_BODY);
        prop_assert_eq!(decoded.is_ok(), (1..=MAX_ORDER_ID_CHARS).contains(&len), "{}", json);
        if let Ok(body) = decoded {
            let expected = if amount <= MAX_ORDER_AMOUNT { Ok(amount) } else { Err("orderAmount") };
            prop_assert_eq!(body.validate().map(|b| b.order_amount).map_err(|e| e.field), expected);
        }
        // A space is no visible character.
        let spaced = json_body::<UseCoupon>(&request(r#"{"userId":"u","orderId":"a b","orderAmount":1}"#), MAX_BODY);
        let named = matches!(&spaced, Err(ApiError::InvalidBodyField { field, .. }) if field == "orderId");
        prop_assert!(named, "{:?}", spaced);
    }
}

// ---------------------------------------------------------------------------------------------
// Points: the Idempotency-Key header, movements and refusals as stored, the history query, bodies.

proptest! {
    #![proptest_config(config())]

    #[test]
    fn an_idempotency_key_is_1_to_128_visible_ascii(raw in prop::option::of(prop_oneof![text(), "[!-~]{0,130}"])) {
        let expected = raw.as_deref().is_some_and(|r| is_visible_ascii(r, MAX_IDEMPOTENCY_KEY_CHARS));
        match IdempotencyKey::parse(raw.as_deref()) {
            Ok(key) => {
                prop_assert!(expected);
                prop_assert_eq!(Some(key.as_str()), raw.as_deref());
            }
            Err(e) => {
                prop_assert!(!expected);
                prop_assert_eq!(e.field, IdempotencyKey::HEADER);
            }
        }
    }

    #[test]
    fn an_idempotency_key_length_is_taken_from_1_to_128(
        len in prop_oneof![0usize..=2, 126usize..=130],
        fill in "[!-~]",
    ) {
        let key = fill.repeat(len);
        prop_assert_eq!(IdempotencyKey::parse(Some(&key)).is_ok(), (1..=MAX_IDEMPOTENCY_KEY_CHARS).contains(&len));
    }

    #[test]
    fn stored_movements_and_refusals_parse_only_their_own_names(raw in prop_oneof![
        text(),
        "(EARN|USE|USE_CANCEL|EXPIRE|TRANSFER_OUT|TRANSFER_IN)[ a]?",
        "(INSUFFICIENT_POINTS|NOT_CANCELLABLE|TRANSACTION_NOT_FOUND)[ a]?",
    ]) {
        if let Some(m) = Movement::parse(&raw) {
            prop_assert_eq!(m.as_str(), raw.as_str());
        }
        if let Some(r) = Refusal::parse(&raw) {
            prop_assert_eq!(r.as_str(), raw.as_str());
        }
        for m in [
            Movement::Earn,
            Movement::Use,
            Movement::UseCancel,
            Movement::Expire,
            Movement::TransferOut,
            Movement::TransferIn,
        ] {
            prop_assert_eq!(Movement::parse(m.as_str()), Some(m));
        }
        for r in [Refusal::InsufficientPoints, Refusal::NotCancellable, Refusal::TransactionNotFound] {
            prop_assert_eq!(Refusal::parse(r.as_str()), Some(r));
        }
    }

    #[test]
    fn a_history_query_names_its_first_bad_parameter(params in query_params(&["limit", "cursor"], query_values())) {
        let parsed = HistoryQuery::parse(params.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        let cursor = |raw: &str| -> Option<u64> {
            let text = String::from_utf8(URL_SAFE_NO_PAD.decode(raw).ok()?).ok()?;
            text.strip_prefix('t')?.parse().ok()
        };
        let mut expected = Ok((50, None));
        for (name, value) in &params {
            let Ok((limit, before)) = expected else { break };
            expected = match name.as_str() {
                "limit" => page_limit(value).map(|l| (l, before)).map_err(|e| e.field),
                "cursor" => cursor(value).map(|c| (limit, Some(c))).ok_or("cursor"),
                _ => Err("query"),
            };
        }
        prop_assert_eq!(parsed.map(|q| (q.limit, q.before)).map_err(|e| e.field), expected);
    }

    #[test]
    fn a_history_cursor_round_trips_any_transaction_id(id in any::<u64>()) {
        let q = HistoryQuery::parse([("cursor", encode_cursor(id).as_str())]);
        prop_assert_eq!(q.map(|q| q.before), Ok(Some(id)));
    }

    #[test]
    fn an_earn_body_decodes_and_validates_or_names_its_field((json, keys) in earn_body()) {
        match json_body::<EarnPoints>(&request(&json), MAX_BODY) {
            Ok(body) => match body.clone().validate(now()) {
                Ok(ok) => {
                    prop_assert!((1..=MAX_AMOUNT).contains(&ok.amount));
                    prop_assert!((1..=MAX_REASON_CHARS).contains(&ok.reason.chars().count()));
                    prop_assert!(!ok.reason.chars().any(char::is_control));
                    if let Some(at) = ok.expires_at {
                        prop_assert!(at > now() && at <= now() + Duration::days(i64::from(MAX_VALIDITY_DAYS)));
                    }
                }
                Err(e) => prop_assert!(["amount", "reason", "expiresAt"].contains(&e.field), "{:?}", e),
            },
            Err(e) => {
                if let Err(why) = names_a_field(&e, &["amount", "reason", "expiresAt"], &keys, false) {
                    prop_assert!(false, "{}: {}", json, why);
                }
            }
        }
    }

    #[test]
    fn an_earn_is_taken_for_1_to_10_to_the_9_points_255_characters_and_3650_days(
        amount in prop_oneof![0u64..=2, (MAX_AMOUNT - 1)..=(MAX_AMOUNT + 1)],
        reason_len in prop_oneof![0usize..=2, (MAX_REASON_CHARS - 1)..=(MAX_REASON_CHARS + 1)],
        // Two bytes each: the limit is characters, not bytes.
        fill in "[a-zé]",
        ahead_ms in prop_oneof![
            -1i64..=1,
            Just(i64::from(MAX_VALIDITY_DAYS) * 86_400_000),
            Just(i64::from(MAX_VALIDITY_DAYS) * 86_400_000 + 1),
        ],
    ) {
        let reason = fill.repeat(reason_len);
        let expires = now() + Duration::milliseconds(ahead_ms);
        let json = format!(
            r#"{{"amount":{amount},"reason":{},"expiresAt":{}}}"#,
            quoted(&reason),
            quoted(&expires.to_rfc3339())
        );
        let validated = json_body::<EarnPoints>(&request(&json), MAX_BODY)
            .map_err(|e| e.to_string())
            .and_then(|b| b.validate(now()).map_err(|e| e.field.to_owned()));
        let expected = if !(1..=MAX_AMOUNT).contains(&amount) {
            Err("amount")
        } else if !(1..=MAX_REASON_CHARS).contains(&reason_len) {
            Err("reason")
        } else if ahead_ms <= 0 || ahead_ms > i64::from(MAX_VALIDITY_DAYS) * 86_400_000 {
            Err("expiresAt")
        } else {
            Ok(amount)
        };
        prop_assert_eq!(validated.as_ref().map(|b| b.amount).map_err(String::as_str), expected, "{}", json);
        // One control character anywhere spoils the reason.
        if let Ok(body) = validated {
            let spoiled = EarnPoints { reason: format!("{}\u{85}", body.reason), ..body };
            prop_assert_eq!(spoiled.validate(now()).map_err(|e| e.field), Err("reason"));
        }
    }

    #[test]
    fn a_use_of_points_decodes_and_validates_or_names_its_field((json, keys) in use_points_body()) {
        match json_body::<UsePoints>(&request(&json), MAX_BODY) {
            Ok(body) => match body.validate() {
                Ok(ok) => {
                    prop_assert!((1..=MAX_AMOUNT).contains(&ok.amount));
                    prop_assert!(is_visible_ascii(ok.order_id.as_str(), MAX_ORDER_ID_CHARS));
                }
                Err(e) => prop_assert!(["amount", "reason"].contains(&e.field), "{:?}", e),
            },
            Err(e) => {
                if let Err(why) = names_a_field(&e, &["amount", "orderId", "reason"], &keys, false) {
                    prop_assert!(false, "{}: {}", json, why);
                }
            }
        }
    }

    #[test]
    fn a_transfer_decodes_and_validates_or_names_its_field((json, keys) in transfer_body()) {
        match json_body::<TransferPoints>(&request(&json), MAX_BODY) {
            Ok(body) => {
                let same = body.from_user_id == body.to_user_id;
                match body.validate() {
                    Ok(ok) => {
                        prop_assert!((1..=MAX_AMOUNT).contains(&ok.amount));
                        prop_assert!(!same);
                    }
                    Err(e) => prop_assert!(["amount", "toUserId"].contains(&e.field), "{:?}", e),
                }
            }
            Err(e) => {
                if let Err(why) = names_a_field(&e, &["fromUserId", "toUserId", "amount"], &keys, false) {
                    prop_assert!(false, "{}: {}", json, why);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Issuance: enum names, the campaign body, the reservation message and the writer that reads it.

proptest! {
    #![proptest_config(config())]

    #[test]
    fn issuance_names_parse_only_themselves(raw in prop_oneof![
        text(),
        "(AMOUNT|PERCENT|SALE|REWARD|OVER_QUANTITY|PARTNER_MISMATCH|NOT_ON_SALE)[ a]?",
        "(amount|Sale)",
    ]) {
        if let Some(d) = DiscountType::parse(&raw) {
            prop_assert_eq!(d.as_str(), raw.as_str());
        }
        if let Some(k) = CampaignKind::parse(&raw) {
            prop_assert_eq!(k.as_str(), raw.as_str());
        }
        if let Some(r) = RejectionReason::parse(&raw) {
            prop_assert_eq!(r.as_str(), raw.as_str());
        }
        // The body's serde names agree with the stored names.
        prop_assert_eq!(serde_json::from_str::<DiscountType>(&quoted(&raw)).ok(), DiscountType::parse(&raw));
        prop_assert_eq!(serde_json::from_str::<CampaignKind>(&quoted(&raw)).ok(), CampaignKind::parse(&raw));
        for d in [DiscountType::Amount, DiscountType::Percent] {
            prop_assert_eq!(DiscountType::parse(d.as_str()), Some(d));
        }
        for k in [CampaignKind::Sale, CampaignKind::Reward] {
            prop_assert_eq!(CampaignKind::parse(k.as_str()), Some(k));
        }
        for r in [RejectionReason::OverQuantity, RejectionReason::PartnerMismatch, RejectionReason::NotOnSale] {
            prop_assert_eq!(RejectionReason::parse(r.as_str()), Some(r));
        }
    }

    #[test]
    fn a_campaign_body_decodes_and_validates_or_names_its_field((json, keys) in campaign_body()) {
        let known = ["name", "totalQuantity", "issueStartsAt", "issueEndsAt", "couponExpiresAt", "discount", "kind"];
        match json_body::<NewCampaign>(&request(&json), MAX_BODY) {
            Ok(body) => match body.validate() {
                Ok(c) => {
                    prop_assert_eq!(c.name.trim(), c.name.as_str());
                    prop_assert!((1..=MAX_NAME_CHARS).contains(&c.name.chars().count()));
                    prop_assert!((1..=MAX_TOTAL_QUANTITY).contains(&c.total_quantity));
                    for at in [c.issue_starts_at, c.issue_ends_at, c.coupon_expires_at] {
                        prop_assert!(storable_instant("at", at).is_ok());
                    }
                    prop_assert!(c.issue_starts_at < c.issue_ends_at && c.issue_ends_at <= c.coupon_expires_at);
                    match c.discount.kind {
                        DiscountType::Percent => prop_assert!((1..=100).contains(&c.discount.value)),
                        DiscountType::Amount => prop_assert!(c.discount.value >= 1),
                    }
                }
                Err(e) => prop_assert!(
                    known.contains(&e.field) || e.field == "discount.value",
                    "{:?}", e
                ),
            },
            Err(e) => {
                if let Err(why) = names_a_field(&e, &known, &keys, true) {
                    prop_assert!(false, "{}: {}", json, why);
                }
            }
        }
    }

    #[test]
    fn a_campaign_is_taken_at_its_edges_and_refused_past_them(
        name_len in prop_oneof![0usize..=2, (MAX_NAME_CHARS - 1)..=(MAX_NAME_CHARS + 1)],
        fill in "[a-zé]",
        pad in " {0,3}",
        quantity in prop_oneof![
            0u64..=2,
            u64::from(MAX_TOTAL_QUANTITY - 1)..=u64::from(MAX_TOTAL_QUANTITY + 1),
            Just(u64::from(u32::MAX)),
            Just(u64::from(u32::MAX) + 1),
        ],
        percent in any::<bool>(),
        value in prop_oneof![0u64..=2, 99u64..=101, (MAX_MONEY_AMOUNT - 1)..=(MAX_MONEY_AMOUNT + 1), Just(u64::MAX)],
        ends_after_ms in -1i64..=1,
        expires_after_ms in -1i64..=1,
    ) {
        let starts = now();
        let ends = starts + Duration::milliseconds(ends_after_ms);
        let expires = ends + Duration::milliseconds(expires_after_ms);
        let json = format!(
            concat!(
                r#"{{"name":{},"totalQuantity":{quantity},"issueStartsAt":{},"issueEndsAt":{},"#,
                r#""couponExpiresAt":{},"discount":{{"type":"{}","value":{value}}}}}"#,
            ),
            quoted(&format!("{pad}{}{pad}", fill.repeat(name_len))),
            quoted(&starts.to_rfc3339()),
            quoted(&ends.to_rfc3339()),
            quoted(&expires.to_rfc3339()),
            if percent { "PERCENT" } else { "AMOUNT" },
            quantity = quantity,
            value = value,
        );
        let decoded = json_body::<NewCampaign>(&request(&json), MAX_BODY);
        if quantity > u64::from(u32::MAX) {
            let named = matches!(&decoded, Err(ApiError::InvalidBodyField { field, .. }) if field == "totalQuantity");
            prop_assert!(named, "{:?}", decoded);
            return Ok(());
        }
        let expected = if !(1..=MAX_NAME_CHARS).contains(&name_len) {
            Err("name")
        } else if !(1..=u64::from(MAX_TOTAL_QUANTITY)).contains(&quantity) {
            Err("totalQuantity")
        } else if ends_after_ms <= 0 {
            Err("issueEndsAt")
        } else if expires_after_ms < 0 {
            Err("couponExpiresAt")
        } else if (percent && !(1..=100).contains(&value)) || (!percent && !(1..=MAX_MONEY_AMOUNT).contains(&value)) {
            Err("discount.value")
        } else {
            Ok(fill.repeat(name_len))
        };
        let validated = decoded
            .map_err(|e| e.to_string())
            .and_then(|c| c.validate().map_err(|e| e.field.to_owned()));
        prop_assert_eq!(validated.map(|c| c.name), expected.map_err(str::to_owned), "{}", json);
    }

    #[test]
    fn any_reservation_message_decodes_to_a_valid_user_or_is_refused(json in prop_oneof![
        reservation_body().prop_map(|(t, _)| t),
        json_value(),
        text(),
    ]) {
        if let Ok(r) = serde_json::from_str::<Reservation>(&json) {
            prop_assert!(is_user_id(r.user_id.as_str()));
            let again = serde_json::to_string(&r).unwrap_or_default();
            prop_assert_eq!(serde_json::from_str::<Reservation>(&again).ok(), Some(r));
        }
    }

    #[test]
    fn a_reservation_that_passes_its_check_is_one_the_database_stores((json, _) in reservation_body()) {
        if let Ok(r) = serde_json::from_str::<Reservation>(&json) {
            match r.check() {
                Ok(()) => {
                    prop_assert!(storable_instant("reservedAt", r.reserved_at).is_ok(), "{}", json);
                    prop_assert!(r.rank >= 1 && r.campaign_id >= 1 && r.schema_version >= 1);
                    prop_assert!(!r.request_id.is_nil());
                    let partner_ok = (1..=64).contains(&r.partner_id.len())
                        && r.partner_id
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
                    prop_assert!(partner_ok, "{:?}", r.partner_id);
                }
                Err(e) => {
                    let fields = ["schemaVersion", "requestId", "campaignId", "partnerId", "rank", "reservedAt"];
                    prop_assert!(fields.contains(&e.field), "{:?}", e);
                }
            }
        }
    }

    #[test]
    fn a_reservation_round_trips_through_its_message(
        request_id in any::<u128>(),
        campaign in any::<u64>(),
        partner in text(),
        user in "[A-Za-z0-9_.:-]{1,64}",
        rank in any::<u32>(),
        millis in millis(),
    ) {
        let (Ok(user), Some(at)) = (UserId::parse(&user), at_ms(millis)) else { return Ok(()) };
        let r = Reservation::new(uuid::Uuid::from_u128(request_id), campaign, &partner, user, rank, at);
        let text = serde_json::to_string(&r).unwrap_or_default();
        prop_assert_eq!(serde_json::from_str::<Reservation>(&text).ok(), Some(r.clone()));
        // A pack of them, as the SQS adapter writes more than ten at once.
        let pack = serde_json::to_string(&vec![r.clone(), r.clone()]).unwrap_or_default();
        prop_assert_eq!(serde_json::from_str::<Vec<Reservation>>(&pack).ok(), Some(vec![r.clone(), r]));
    }

    #[test]
    fn the_writer_answers_any_delivery_naming_each_malformed_message(
        bodies in prop::collection::vec(prop::option::weighted(0.95, message_body()), 0..8),
    ) {
        let (writer, book) = writer();
        let messages: Vec<Message> = bodies
            .iter()
            .enumerate()
            .map(|(i, body)| Message { id: Some(format!("m{i}")), body: body.clone() })
            .collect();
        let Some(written) = writer.record(messages).now_or_never() else {
            prop_assert!(false, "the in-memory writer waited on nothing");
            return Ok(());
        };
        let written = written.map_err(|e| TestCaseError::fail(e.to_string()))?;
        // Every message the writer does not take is malformed, alone, and delivered again.
        let refused: Vec<String> = bodies
            .iter()
            .enumerate()
            .filter(|(_, body)| !writer_takes(body.as_deref().unwrap_or_default()))
            .map(|(i, _)| format!("m{i}"))
            .collect();
        prop_assert_eq!(written.summary.received, bodies.len());
        prop_assert_eq!(written.summary.malformed, refused.len());
        for id in &refused {
            prop_assert!(written.failed.contains(id), "{} not retried", id);
        }
        // The book (MySQL in production) is handed only what it can store.
        if let Ok(rows) = book.rows.lock() {
            for r in rows.values() {
                prop_assert!(r.check().is_ok(), "{:?}", r);
                prop_assert!(storable_instant("reservedAt", r.reserved_at).is_ok());
            }
        }
        let unique: BTreeSet<&String> = written.failed.iter().collect();
        prop_assert_eq!(unique.len(), written.failed.len(), "a message named twice");
        let sent: BTreeSet<String> = (0..bodies.len()).map(|i| format!("m{i}")).collect();
        prop_assert!(written.failed.iter().all(|id| sent.contains(id)));
    }

    #[test]
    fn a_delivery_with_a_message_without_id_is_refused_whole(at in 0usize..4, empty in any::<bool>()) {
        let mut messages: Vec<Message> = (0..4)
            .map(|i| Message {
                id: Some(format!("m{i}")),
                body: Some("{}".into()),
            })
            .collect();
        if let Some(m) = messages.get_mut(at) {
            m.id = if empty { Some(String::new()) } else { None };
        }
        let answer = writer().0.record(messages).now_or_never();
        prop_assert!(matches!(answer, Some(Err(IssuanceError::MessageWithoutId(i))) if i == at), "{:?}", answer);
    }
}

// ---------------------------------------------------------------------------------------------
// Grading: months, orders, the policy, run statuses, reward kinds, partition tasks.

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_month_text_is_a_month_field_error_or_a_month_from_2000_to_9998(raw in prop_oneof![
        text(),
        "[0-9+\\- ]{3,5}-[0-9+\\- ]{1,3}",
        "[0-9]{4}-[0-9]{2}",
    ]) {
        match Month::parse(&raw) {
            Ok(month) => {
                prop_assert!((200_001..=999_812).contains(&month.number()), "{} → {}", raw, month);
                prop_assert_eq!(Month::parse(&month.to_string()), Ok(month));
                prop_assert_eq!(Month::from_number(month.number()), Some(month));
            }
            Err(e) => prop_assert_eq!(e.field, "month"),
        }
    }

    #[test]
    fn a_month_is_taken_for_years_2000_to_9998_and_months_1_to_12(
        year in prop_oneof![1995u32..=2002, 9995u32..=9999, 0u32..=9999],
        month in 0u32..=13,
    ) {
        let text = format!("{year:04}-{month:02}");
        let parsed = Month::parse(&text);
        let inside = (2000..=9998).contains(&year) && (1..=12).contains(&month);
        prop_assert_eq!(parsed.is_ok(), inside, "{}", text);
        if let Ok(m) = parsed {
            prop_assert_eq!(m.to_string(), text);
            prop_assert_eq!(i64::from(m.number()), i64::from(year) * 100 + i64::from(month));
            let start = Utc.with_ymd_and_hms(year as i32, month, 1, 0, 0, 0).single();
            prop_assert_eq!(Some(m.start()), start);
            prop_assert_eq!(m.next().previous(), m);
        }
    }

    #[test]
    fn a_stored_month_number_is_a_month_of_years_0_to_9999_or_none(n in prop_oneof![
        any::<i32>(),
        -1_000i32..=1_000,
        999_800i32..=1_000_113,
        200_000i32..=200_013,
    ]) {
        let valid = (0..=9999).contains(&(n / 100)) && (1..=12).contains(&(n % 100));
        match Month::from_number(n) {
            Some(m) => {
                prop_assert!(valid, "{}", n);
                prop_assert_eq!(m.number(), n);
                prop_assert_eq!(m.to_string(), format!("{:04}-{:02}", n / 100, n % 100));
                // Every month has a start, even the one after the last.
                prop_assert!(m.next().start() > m.start());
            }
            None => prop_assert!(!valid, "{}", n),
        }
    }

    #[test]
    fn run_statuses_and_reward_kinds_parse_any_text(raw in prop_oneof![
        text(),
        "(RUNNING|DONE|FAILED|COUPON|POINTS|PAID|CANCELLED)",
    ]) {
        let status = RunStatus::parse(&raw);
        prop_assert!(status.as_str() == raw || status == RunStatus::Running);
        if let Some(kind) = RewardKind::parse(&raw) {
            prop_assert_eq!(kind.as_str(), raw.as_str());
        }
        if let Ok(s) = serde_json::from_str::<OrderStatus>(&quoted(&raw)) {
            prop_assert_eq!(s.as_str(), raw.as_str());
        }
    }

    #[test]
    fn an_order_list_decodes_and_validates_or_names_the_order_and_field(
        orders in prop::collection::vec(order_body(), 0..4),
    ) {
        let json = format!("[{}]", orders.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>().join(","));
        let keys: BTreeSet<String> = orders.iter().flat_map(|(_, k)| k.iter().cloned()).collect();
        let known = ["orderId", "userId", "amount", "status", "orderedAt"];
        match json_body::<Vec<OrderInput>>(&request(&json), 512 * 1024) {
            Ok(inputs) => {
                for (i, input) in inputs.into_iter().enumerate() {
                    match input.validate(i) {
                        Ok(order) => {
                            prop_assert!(is_visible_ascii(&order.order_id, 64));
                            prop_assert!(order.amount <= 1_000_000_000_000);
                            prop_assert_eq!(order.ordered_at.timestamp_subsec_nanos() % 1_000_000, 0);
                            prop_assert!((199_912..=999_901).contains(&order.month().number()), "{}", order.month());
                        }
                        Err(e) => {
                            prop_assert_eq!(e.index, i);
                            prop_assert!(["orderId", "userId", "amount", "orderedAt"].contains(&e.field), "{:?}", e);
                        }
                    }
                }
            }
            Err(e) => {
                if let Err(why) = names_a_field(&e, &known, &keys, true) {
                    prop_assert!(false, "{}: {}", json, why);
                }
            }
        }
    }

    #[test]
    fn an_order_time_is_taken_with_a_t_in_years_2000_to_9998(parts in date_time()) {
        let json = format!(
            r#"{{"orderId":"o","userId":"u","amount":1,"status":"PAID","orderedAt":{}}}"#,
            quoted(&parts.text())
        );
        let decoded = serde_json::from_str::<OrderInput>(&json).map(|o| o.ordered_at);
        let expected = (parts.written_t() && (2000..=9998).contains(&parts.year)).then(|| parts.instant()).flatten();
        prop_assert_eq!(decoded.ok(), expected, "{}", parts.text());
    }

    #[test]
    fn an_order_is_taken_up_to_64_id_characters_and_10_to_the_12(
        id_len in prop_oneof![0usize..=2, 63usize..=65],
        amount in prop_oneof![0u64..=2, 999_999_999_999u64..=1_000_000_000_001],
    ) {
        let json = format!(
            r#"{{"orderId":{},"userId":"u","amount":{amount},"status":"PAID","orderedAt":"2026-10-05T10:00:00Z"}}"#,
            quoted(&"o".repeat(id_len))
        );
        let validated = serde_json::from_str::<OrderInput>(&json)
            .map_err(|e| e.to_string())
            .and_then(|o| o.validate(7).map_err(|e| e.field.to_owned()));
        let expected = if !(1..=64).contains(&id_len) {
            Err("orderId")
        } else if amount > 1_000_000_000_000 {
            Err("amount")
        } else {
            Ok(amount)
        };
        prop_assert_eq!(validated.as_ref().map(|o| o.amount).map_err(String::as_str), expected);
    }

    #[test]
    fn a_policy_decodes_and_validates_or_names_its_field((json, keys) in policy_body()) {
        match json_body::<Policy>(&request(&json), MAX_BODY) {
            Ok(policy) => match policy.validate() {
                Ok(p) => {
                    prop_assert!((1..=MAX_TIERS).contains(&p.tiers.len()));
                    prop_assert!(p.tiers.windows(2).all(|w| matches!(w, [a, b] if a.min_amount > b.min_amount)));
                    let grades: BTreeSet<&str> = p.tiers.iter().map(|t| t.grade.as_str()).collect();
                    prop_assert_eq!(grades.len(), p.tiers.len());
                    for t in &p.tiers {
                        prop_assert!((1..=32).contains(&t.grade.len()));
                        prop_assert!(t.points.is_none_or(|n| (1..=1_000_000_000).contains(&n)));
                        prop_assert_ne!(t.coupon_campaign_id, Some(0));
                        prop_assert!(t.min_amount <= 1_000_000_000_000_000);
                    }
                }
                Err(e) => prop_assert!(
                    ["tiers", "tiers.grade", "tiers.minAmount", "tiers.couponCampaignId", "tiers.points"]
                        .contains(&e.field),
                    "{:?}", e
                ),
            },
            Err(e) => {
                if let Err(why) = names_a_field(&e, &["tiers"], &keys, false) {
                    prop_assert!(false, "{}: {}", json, why);
                }
            }
        }
    }

    #[test]
    fn a_policy_is_taken_at_its_edges_and_refused_past_them(
        tiers in prop_oneof![0usize..=2, (MAX_TIERS - 1)..=(MAX_TIERS + 1)],
        grade_len in prop_oneof![1usize..=2, 31usize..=33],
        points in prop_oneof![Just(None), prop::option::of(prop_oneof![0u64..=1, 999_999_999u64..=1_000_000_001])],
        campaign in prop_oneof![Just(None), Just(Some(0u64)), Just(Some(1u64))],
        top in prop_oneof![Just(1_000_000_000_000_000u64), Just(1_000_000_000_000_001u64), 0u64..=1_000],
    ) {
        let tier = |i: usize| {
            let mut t = serde_json::json!({
                "grade": format!("{}{i:02}", "g".repeat(grade_len.saturating_sub(2))),
                "minAmount": if i == 0 { top } else { i as u64 + 1_000_000 },
            });
            if let (Some(p), Some(obj)) = (points, t.as_object_mut()) {
                obj.insert("points".into(), p.into());
            }
            if let (Some(c), Some(obj)) = (campaign, t.as_object_mut()) {
                obj.insert("couponCampaignId".into(), c.into());
            }
            t
        };
        let json = serde_json::json!({ "tiers": (0..tiers).map(tier).collect::<Vec<_>>() }).to_string();
        let validated = json_body::<Policy>(&request(&json), MAX_BODY)
            .map_err(|e| e.to_string())
            .and_then(|p| p.validate().map_err(|e| e.field.to_owned()));
        let grade_len = grade_len.max(2);
        if campaign == Some(0) && tiers > 0 {
            // Not an id (ids start at 1): refused as the body is read, naming the tier.
            let refused = validated.as_ref().err().is_some_and(|e| e.starts_with("tiers[0].couponCampaignId: "));
            prop_assert!(refused, "{:?}: {}", validated, json);
            return Ok(());
        }
        let expected = if !(1..=MAX_TIERS).contains(&tiers) {
            Err("tiers")
        } else if grade_len > 32 {
            Err("tiers.grade")
        } else if top > 1_000_000_000_000_000 {
            Err("tiers.minAmount")
        } else if points.is_some_and(|p| p == 0 || p > 1_000_000_000) {
            Err("tiers.points")
        } else {
            Ok(tiers)
        };
        prop_assert_eq!(validated.as_ref().map(|p| p.tiers.len()).map_err(String::as_str), expected, "{}", json);
    }

    #[test]
    fn a_partition_task_decodes_or_is_refused(json in prop_oneof![
        body(vec![
            ("runId", number_in(&["0", "18446744073709551615", "18446744073709551616", "-1"], 0..=9)),
            ("partition", number_in(&["0", "4294967295", "4294967296", "-1", "1.0"], 0..=70)),
        ]).prop_map(|(t, _)| t),
        json_value(),
        text(),
    ]) {
        // No panic; what decodes re-encodes to itself.
        if let Ok(task) = serde_json::from_str::<PartitionTask>(&json) {
            let again = serde_json::to_string(&task).unwrap_or_default();
            prop_assert_eq!(serde_json::from_str::<PartitionTask>(&again).ok(), Some(task));
        }
    }

    #[test]
    fn a_partition_task_round_trips_and_its_partition_is_a_u32(
        run_id in any::<u64>(),
        partition in any::<u32>(),
        past in 1u64..=u64::from(u32::MAX),
    ) {
        let task = PartitionTask { run_id, partition };
        let text = serde_json::to_string(&task).unwrap_or_default();
        prop_assert_eq!(serde_json::from_str::<PartitionTask>(&text).ok(), Some(task));
        let too_big = format!(r#"{{"runId":{run_id},"partition":{}}}"#, u64::from(u32::MAX) + past);
        prop_assert!(serde_json::from_str::<PartitionTask>(&too_big).is_err());
        let negative = format!(r#"{{"runId":{run_id},"partition":-{past}}}"#);
        prop_assert!(serde_json::from_str::<PartitionTask>(&negative).is_err());
    }
}

// ---------------------------------------------------------------------------------------------
// Keys, the HTTP transport, alerts and the adapters' decoders.

proptest! {
    #![proptest_config(config())]

    #[test]
    fn only_a_well_formed_key_is_looked_up(raw in prop_oneof![
        text(),
        "fcfs_[A-Za-z0-9_-]{42,44}",
        "fcfs_[A-Za-z0-9_\\-+/=é]{43}",
        "[a-z_]{5}[A-Za-z0-9]{43}",
    ]) {
        let well_formed = raw.len() == KEY_LEN
            && raw
                .strip_prefix(KEY_PREFIX)
                .is_some_and(|rest| rest.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_')));
        match lookup_hash(&raw) {
            Some(hash) => {
                prop_assert!(well_formed, "{:?}", raw);
                let lower_hex = hash.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
                prop_assert!(hash.len() == 64 && lower_hex, "{}", hash);
            }
            None => prop_assert!(!well_formed, "{:?}", raw),
        }
        if let Some(status) = KeyStatus::parse(&raw) {
            prop_assert_eq!(status.as_str(), raw.as_str());
        }
    }

    #[test]
    fn any_body_bytes_get_an_answer_and_only_an_oversized_one_is_too_large(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..300),
            json_value().prop_map(String::into_bytes),
            use_coupon_body().prop_map(|(t, _)| t.into_bytes()),
            " {0,5}".prop_map(String::into_bytes),
        ],
        max in prop_oneof![0usize..=300, Just(MAX_BODY)],
    ) {
        let len = bytes.len();
        let blank = bytes.iter().all(u8::is_ascii_whitespace);
        let req = Request::new(Body::Binary(bytes));
        for answer in [
            json_body::<serde_json::Value>(&req, max).map(|_| ()),
            json_body::<UseCoupon>(&req, max).map(|_| ()),
            json_body::<NewCampaign>(&req, max).map(|_| ()),
            json_body::<Vec<OrderInput>>(&req, max).map(|_| ()),
        ] {
            match answer {
                Err(ApiError::PayloadTooLarge(limit)) => {
                    prop_assert_eq!(limit, max);
                    prop_assert!(len > max);
                }
                Err(ApiError::InvalidBody(_)) | Err(ApiError::InvalidBodyField { .. }) | Ok(()) => {
                    prop_assert!(len <= max);
                }
                Err(other) => prop_assert!(false, "{:?}", other),
            }
            if blank && len <= max {
                prop_assert!(matches!(json_body::<serde_json::Value>(&req, max), Err(ApiError::InvalidBody(_))));
            }
        }
    }

    #[test]
    fn the_partner_is_a_non_empty_string_of_the_authorizer_context(partner in json_value()) {
        let value: serde_json::Value = serde_json::from_str(&partner).unwrap_or_default();
        let mut ctx = lambda_http::aws_lambda_events::apigw::ApiGatewayProxyRequestContext::default();
        ctx.authorizer.fields.insert("partnerId".into(), value.clone());
        let req = request("").with_request_context(RequestContext::ApiGatewayV1(ctx));
        match (partner_id(&req), value) {
            (Ok(id), serde_json::Value::String(sent)) => {
                prop_assert_eq!(&id, &sent);
                prop_assert!(!id.is_empty());
            }
            (Ok(id), other) => prop_assert!(false, "{:?} taken from {:?}", id, other),
            (Err(e), value) => {
                prop_assert!(matches!(e, ApiError::Unauthenticated));
                prop_assert!(value.as_str().is_none_or(str::is_empty), "{:?} refused", value);
            }
        }
    }

    #[test]
    fn a_key_expiry_in_the_authorizer_context_refuses_the_key_from_that_instant(
        expiry in prop_oneof![
            Just(None),
            Just(Some(serde_json::Value::Null)),
            (-2i64..=2).prop_map(|ms| Some((now() + Duration::milliseconds(ms)).to_rfc3339().into())),
            date_time().prop_map(|d| Some(d.text().into())),
            text().prop_map(|t| Some(t.into())),
            json_value().prop_map(|v| serde_json::from_str(&v).ok()),
        ],
    ) {
        let mut ctx = lambda_http::aws_lambda_events::apigw::ApiGatewayProxyRequestContext::default();
        ctx.authorizer.fields.insert("partnerId".into(), "acme".into());
        if let Some(at) = &expiry {
            ctx.authorizer.fields.insert(KEY_EXPIRES_AT.into(), at.clone());
        }
        let req = request("").with_request_context(RequestContext::ApiGatewayV1(ctx));
        let answer = partner_id_at(&req, now());
        let (allowed, expired) = (
            matches!(&answer, Ok(id) if id == "acme"),
            matches!(answer, Err(ApiError::KeyExpired)),
        );
        let refused = matches!(answer, Err(ApiError::Unauthenticated));
        // Absent: no expiry; a date-time: allowed strictly before it; anything else: refused.
        let expected = match &expiry {
            None | Some(serde_json::Value::Null) => (true, false, false),
            Some(serde_json::Value::String(text)) => match DateTime::parse_from_rfc3339(text) {
                Ok(at) if now() < at => (true, false, false),
                Ok(_) => (false, true, false),
                Err(_) => (false, false, true),
            },
            Some(_) => (false, false, true),
        };
        prop_assert_eq!((allowed, expired, refused), expected, "{:?}: {:?}", expiry, answer);
    }

    #[test]
    fn any_sns_message_becomes_a_discord_message_within_each_parts_limit(
        subject in prop::option::of(text()),
        message in prop_oneof![alarm_json(), json_value(), text(), "x{1990,2010}"],
    ) {
        let notice = Notice::from_sns(subject, &message);
        let is_alarm = serde_json::from_str::<AlarmChange>(&message)
            .is_ok_and(|a| !a.alarm_name.is_empty() && !a.new_state_value.is_empty());
        prop_assert_eq!(matches!(notice, Notice::Alarm(_)), is_alarm);
        let discord = DiscordMessage::for_notice(&notice);
        if let Err(why) = within_discord_part_limits(&discord) {
            prop_assert!(false, "{}: {}", message, why);
        }
        prop_assert_eq!(discord.embeds.len(), usize::from(is_alarm));
    }

    #[test]
    fn a_redis_outcome_round_trips_and_any_text_decodes_without_panic(
        raw in prop_oneof![text(), "[cr][A-Z_0-9+]{0,22}"],
        coupon in any::<u64>(),
    ) {
        if let Some(outcome) = decode_outcome(&raw) {
            prop_assert!(raw.starts_with('c') || raw.starts_with('r'));
            prop_assert_eq!(decode_outcome(&encode_outcome(outcome)), Some(outcome));
        }
        for outcome in [
            Outcome::Issued { coupon_id: coupon },
            Outcome::Rejected(RejectionReason::OverQuantity),
            Outcome::Rejected(RejectionReason::PartnerMismatch),
            Outcome::Rejected(RejectionReason::NotOnSale),
        ] {
            prop_assert_eq!(decode_outcome(&encode_outcome(outcome)), Some(outcome));
        }
    }

    #[test]
    fn a_database_secret_decodes_or_says_why_without_repeating_it(
        (json, _) in body(vec![
            ("username", string_of(prop_oneof![Just("admin".to_owned()), text()])),
            ("password", string_of("SECRET[a-z]{8}")),
            ("host", string_of(text())),
            ("port", prop_oneof![
                number_in(&["0", "65535", "65536", "-1", "3306.0"], 0..=70_000),
                string_of(prop_oneof![" ?[0-9]{1,6} ?", text()]),
            ].boxed()),
            ("dbname", string_of(text())),
        ]),
        raw in text(),
    ) {
        for text in [json.as_str(), raw.as_str()] {
            match DatabaseSecret::parse(text) {
                Ok(secret) => {
                    let shown = format!("{secret:?}");
                    prop_assert!(!shown.contains("SECRET"), "{}", shown);
                }
                Err(why) => {
                    prop_assert!(!why.contains("SECRET"), "{}", why);
                    if text.len() > 8 {
                        prop_assert!(!why.contains(text), "{}", why);
                    }
                }
            }
        }
    }

    #[test]
    fn a_database_port_is_0_to_65535_as_a_number_or_text(
        port in prop_oneof![0u64..=3, 65_534u64..=65_537, any::<u32>().prop_map(u64::from)],
        as_text in any::<bool>(),
        pad in " {0,2}",
    ) {
        let written = if as_text { quoted(&format!("{pad}{port}{pad}")) } else { port.to_string() };
        let parsed = DatabaseSecret::parse(&format!(r#"{{"username":"u","password":"p","port":{written}}}"#));
        let expected = u16::try_from(port).ok().map(Some).ok_or(());
        prop_assert_eq!(parsed.map(|s| s.port).map_err(|_| ()), expected, "{}", written);
    }
}

proptest! {
    // Each case builds an HTTP client: fewer of them.
    #![proptest_config(ProptestConfig { cases: 32, ..config() })]

    #[test]
    fn a_webhook_url_that_is_no_http_url_is_misconfigured_and_never_repeated(url in prop_oneof![
        "[^:]{0,40}",
        "(ftp|file|mailto|data|javascript|ws|wss):[a-z/]{0,20}",
    ]) {
        let answer = DiscordWebhook::at(&url).post(&DiscordMessage::default()).now_or_never();
        match answer {
            Some(Err(DeliveryFailure::Misconfigured(why))) => {
                if url.len() >= 8 {
                    prop_assert!(!why.contains(&url), "{}", why);
                }
            }
            other => prop_assert!(false, "{:?} for {:?}", other, url),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Defects found: each is the failing case, kept as a regression test of its fix.

/// A regression test. `Reservation` takes any `reservedAt` chrono can read (years -262143 to
/// 262142), and until 45a7ecd the writer handed it to the coupon book: for a year outside
/// 0..=65535 sqlx's encoder refused it and `QueryBuilder::push_bind` panicked ("Failed to add
/// argument", in `adapters::mysql::coupon_insert` and the rejections' insert), failing the whole
/// delivery every time; years 0-999 and 10000-65535 reached MySQL, which refused the chunk. Such a
/// message is malformed alone, and never reaches the book.
#[test]
fn a_reservation_whose_instant_mysql_cannot_hold_is_malformed() {
    for at in [
        "-0001-01-01T00:00:00Z",
        "+100000-01-01T00:00:00Z",
        "+262142-12-31T23:59:59Z",
        "0999-12-31T23:59:59Z",
    ] {
        let body = format!(
            concat!(
                r#"{{"requestId":"0190a3c4-0000-7000-8000-000000000000","campaignId":1,"partnerId":"p","#,
                r#""userId":"u1","rank":1,"reservedAt":"{at}"}}"#,
            ),
            at = at
        );
        let (writer, book) = writer();
        let message = Message {
            id: Some("m0".into()),
            body: Some(body),
        };
        let written = writer.record(vec![message]).now_or_never();
        let summary = written
            .as_ref()
            .and_then(|w| w.as_ref().ok())
            .map(|w| (w.summary.malformed, w.failed.clone()));
        assert_eq!(summary, Some((1, vec!["m0".to_owned()])), "{at}: {written:?}");
        let reached = book.rows.lock().map(|rows| rows.len()).unwrap_or_default();
        assert_eq!(reached, 0, "{at} reached the book");
    }
}

/// `json_body` reads one JSON value and never checks that the body ends there
/// (`serde_path_to_error::deserialize` without `Deserializer::end`): a body with anything after
/// its value is taken as if it ended, where the contract (and `serde_json::from_slice`) refuses it.
#[test]
fn a_body_with_bytes_after_its_json_value_is_not_json() {
    for body in [
        r#"{"userId":"u","orderId":"o","orderAmount":1} trailing"#,
        r#"{"userId":"u","orderId":"o","orderAmount":1}}"#,
        r#"{"userId":"u","orderId":"o","orderAmount":1},{"x":1}"#,
    ] {
        assert!(
            serde_json::from_str::<serde_json::Value>(body).is_err(),
            "not JSON: {body}"
        );
        let answer = json_body::<UseCoupon>(&request(body), MAX_BODY);
        assert!(matches!(answer, Err(ApiError::InvalidBody(_))), "{body}: {answer:?}");
    }
}

/// `Month::parse` checks the month's text is 2 characters and then `u32::from_str`, which takes
/// a leading `+`: `2026-+1` is the month 2026-01, where the contract's pattern (and the doc
/// "YYYY-MM") refuses it (`GET /v1/users/{userId}/grade?month=2026-+1`, `POST /v1/grading/runs`
/// `{"month":"2026-+1"}` answer for 2026-01 instead of 400).
#[test]
fn a_month_is_only_four_digits_a_dash_and_two_digits() {
    for text in ["2026-+1", "2026-+9"] {
        assert!(
            Month::parse(text).is_err(),
            "{text} → {:?}",
            Month::parse(text).map(|m| m.to_string())
        );
    }
}

/// Each part of the Discord message is cut to its limit, but not their sum: Discord refuses a
/// message whose embeds' title, description, field names and values add up to more than 6000
/// characters (a 400, not retried: the notifier fails on that alert). CloudWatch's own alarms stay
/// far below it (a description is at most 1024 characters, a reason 1023, a name 255); any
/// other JSON message published to the topic in an alarm's shape can pass it.
#[test]
fn an_alarm_message_stays_within_discords_6000_characters() {
    let long = |n: usize| "x".repeat(n);
    let message = serde_json::json!({
        "AlarmName": long(300),
        "AlarmDescription": long(5000),
        "NewStateValue": "ALARM",
        "OldStateValue": long(1100),
        "Trigger": {
            "Namespace": long(600),
            "MetricName": long(600),
            "Threshold": 1.0,
            "ComparisonOperator": long(1100),
        }
    })
    .to_string();
    let discord = DiscordMessage::for_notice(&Notice::from_sns(None, &message));
    assert!(within_discord_part_limits(&discord).is_ok());
    assert!(embed_chars(&discord) <= 6000, "{} characters", embed_chars(&discord));
}

/// The database secret's optional fields: `"host": null` and `"dbname": null` are absent, but
/// `"port": null` is refused ("data did not match any variant"), so a hand-made secret with a
/// null port stops every database call with 503.
#[test]
fn a_null_port_is_an_absent_port() {
    let secret = DatabaseSecret::parse(r#"{"username":"u","password":"p","host":null,"dbname":null,"port":null}"#);
    assert_eq!(secret.map(|s| s.port), Ok(None));
}

/// serde_json reports two kinds of valid JSON as syntax errors: a non-string value of an enum
/// field (`null`, a number, `true`: "expected value") and a number beyond f64 (`1e400`: "number
/// out of range"); `json_body` takes every syntax error for a body that is not JSON, so these
/// answer 400 "body is not valid JSON" naming no field, where every other wrong value names its
/// field (`POST /v1/campaigns` with `"kind": null` or `"discount": {"type": 1, ...}`,
/// `POST /v1/orders` with `"status": null`, `POST .../points/earn` with `"amount": 1e400`).
#[test]
fn a_valid_json_body_with_a_wrong_enum_value_or_a_huge_number_names_its_field() {
    let campaign = |kind: &str, kind_of_discount: &str| {
        format!(
            concat!(
                r#"{{"name":"n","totalQuantity":1,"issueStartsAt":"2026-01-01T00:00:00Z","#,
                r#""issueEndsAt":"2026-01-02T00:00:00Z","couponExpiresAt":"2026-01-03T00:00:00Z","#,
                r#""discount":{{"type":{kind_of_discount},"value":1}},"kind":{kind}}}"#,
            ),
            kind_of_discount = kind_of_discount,
            kind = kind,
        )
    };
    for (body, field) in [
        (campaign("null", r#""AMOUNT""#), "kind"),
        (campaign("1", r#""AMOUNT""#), "kind"),
        (campaign(r#""SALE""#, "true"), "discount.type"),
    ] {
        assert!(
            serde_json::from_str::<serde_json::Value>(&body).is_ok(),
            "valid JSON: {body}"
        );
        let answer = json_body::<NewCampaign>(&request(&body), MAX_BODY);
        let named = matches!(&answer, Err(ApiError::InvalidBodyField { field: f, .. }) if f == field);
        assert!(named, "{body}: {answer:?}");
    }
    let orders = r#"[{"orderId":"o","userId":"u","amount":1,"status":null,"orderedAt":"2026-10-05T10:00:00Z"}]"#;
    let answer = json_body::<Vec<OrderInput>>(&request(orders), MAX_BODY);
    let named = matches!(&answer, Err(ApiError::InvalidBodyField { field, .. }) if field == "[0].status");
    assert!(named, "{orders}: {answer:?}");
    // A number beyond f64 (`1e400`) stays "not valid JSON": serde_json cannot read it as a value
    // at all, so there is no field to name.
    let earn = r#"{"amount":1e400,"reason":"r"}"#;
    let answer = json_body::<EarnPoints>(&request(earn), MAX_BODY);
    assert!(matches!(&answer, Err(ApiError::InvalidBody(_))), "{earn}: {answer:?}");
}
