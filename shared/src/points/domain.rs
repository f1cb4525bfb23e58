//! Point rules, pure: what a request may ask, which lots a use draws from (first-expiring-first),
//! what a cancel puts back and what expires instead, the fingerprint an `Idempotency-Key` is bound
//! to, and the outcome replayed to a retry.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Days, NaiveDate, NaiveTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::coupons::domain::OrderId;
use crate::kernel::{DEFAULT_PAGE, InvalidField, UserId, page_limit, rfc3339, storable_instant, whole_number};

pub type TransactionId = u64;
pub type LotId = u64;

/// Any amount a request names: 1 to this.
pub const MAX_AMOUNT: u64 = 1_000_000_000;
pub const MAX_REASON_CHARS: usize = 255;
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 128;
/// The next expiry dates a balance shows.
pub const EXPIRING_SHOWN: usize = 5;
/// Validity of earned points when neither the request nor the partner's policy says.
pub const DEFAULT_VALIDITY_DAYS: u32 = 365;
/// The longest validity an earn or a partner's policy may give.
pub const MAX_VALIDITY_DAYS: u32 = 3_650;

/// What a history entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Movement {
    Earn,
    Use,
    UseCancel,
    Expire,
    TransferOut,
    TransferIn,
}

impl Movement {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Earn => "EARN",
            Self::Use => "USE",
            Self::UseCancel => "USE_CANCEL",
            Self::Expire => "EXPIRE",
            Self::TransferOut => "TRANSFER_OUT",
            Self::TransferIn => "TRANSFER_IN",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [
            Self::Earn,
            Self::Use,
            Self::UseCancel,
            Self::Expire,
            Self::TransferOut,
            Self::TransferIn,
        ]
        .into_iter()
        .find(|m| m.as_str() == raw)
    }
}

/// The client's `Idempotency-Key`: 1–128 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const HEADER: &'static str = "Idempotency-Key";

    pub fn parse(raw: Option<&str>) -> Result<Self, InvalidField> {
        let raw = raw.ok_or_else(|| InvalidField::new(Self::HEADER, "this header is required on every POST"))?;
        if raw.is_empty() || raw.len() > MAX_IDEMPOTENCY_KEY_CHARS || !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidField::new(
                Self::HEADER,
                "must be 1-128 visible ASCII characters",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Days a key's record is kept after the UTC day it was made: a retry within them replays the
/// first answer; after them the key is free again and its record is pruned by the expiry sweep.
pub const KEY_RETENTION_DAYS: u32 = 30;
/// Counter rows per partner and day the storage spreads a partner's new records over, so that
/// writes to different wallets rarely wait on one counter.
pub const KEY_COUNTER_SHARDS: u8 = 16;

/// Key records are kept and counted by the UTC day they were made: those of this day and after
/// are active at `now` (they count against the partner's limit of idempotency records).
pub fn first_active_key_day(now: DateTime<Utc>) -> NaiveDate {
    now.date_naive() - Days::new(u64::from(KEY_RETENTION_DAYS))
}

/// Records made before this instant are past their retention: pruned, and counted no more.
pub fn keys_expire_before(now: DateTime<Utc>) -> DateTime<Utc> {
    first_active_key_day(now).and_time(NaiveTime::MIN).and_utc()
}

impl IdempotencyKey {
    /// The counter row of the day this key's record is counted in: the key's FNV-1a hash (stable
    /// across builds and processes, unlike std's hasher), over `KEY_COUNTER_SHARDS` rows.
    pub fn counter_shard(&self) -> u8 {
        let hash = self.0.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        (hash % u64::from(KEY_COUNTER_SHARDS)) as u8
    }
}

fn amount_in_range(field: &'static str, amount: u64) -> Result<u64, InvalidField> {
    if (1..=MAX_AMOUNT).contains(&amount) {
        Ok(amount)
    } else {
        Err(InvalidField::new(
            field,
            "must be a whole number from 1 to 1,000,000,000",
        ))
    }
}

fn reason_in_range(reason: &str) -> Result<(), InvalidField> {
    if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS || reason.chars().any(char::is_control) {
        return Err(InvalidField::new(
            "reason",
            "must be 1-255 characters without control characters",
        ));
    }
    Ok(())
}

/// `POST /v1/users/{userId}/points/earn`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EarnPoints {
    #[serde(deserialize_with = "whole_number")]
    pub amount: u64,
    pub reason: String,
    #[serde(default, deserialize_with = "optional_rfc3339")]
    pub expires_at: Option<DateTime<Utc>>,
}

fn optional_rfc3339<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    rfc3339(d).map(Some)
}

impl EarnPoints {
    /// `now` bounds `expiresAt`: after now, at most `MAX_VALIDITY_DAYS` ahead.
    pub fn validate(self, now: DateTime<Utc>) -> Result<Self, InvalidField> {
        amount_in_range("amount", self.amount)?;
        reason_in_range(&self.reason)?;
        if let Some(at) = self.expires_at {
            storable_instant("expiresAt", at)?;
            if at <= now || at > now + chrono::Duration::days(i64::from(MAX_VALIDITY_DAYS)) {
                return Err(InvalidField::new(
                    "expiresAt",
                    "must be in the future, at most 3,650 days ahead",
                ));
            }
        }
        Ok(self)
    }
}

/// `POST /v1/users/{userId}/points/use`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UsePoints {
    #[serde(deserialize_with = "whole_number")]
    pub amount: u64,
    pub order_id: OrderId,
    #[serde(default)]
    pub reason: Option<String>,
}

impl UsePoints {
    pub fn validate(self) -> Result<Self, InvalidField> {
        amount_in_range("amount", self.amount)?;
        if let Some(reason) = &self.reason {
            reason_in_range(reason)?;
        }
        Ok(self)
    }
}

/// `POST /v1/points/transfers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TransferPoints {
    pub from_user_id: UserId,
    pub to_user_id: UserId,
    #[serde(deserialize_with = "whole_number")]
    pub amount: u64,
}

impl TransferPoints {
    pub fn validate(self) -> Result<Self, InvalidField> {
        amount_in_range("amount", self.amount)?;
        if self.from_user_id == self.to_user_id {
            return Err(InvalidField::new("toUserId", "must differ from fromUserId"));
        }
        Ok(self)
    }
}

/// One write to wallets, as the records apply it under an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    Earn {
        user: UserId,
        request: EarnPoints,
        /// The request's `expiresAt`, or now plus the partner's validity.
        expires_at: DateTime<Utc>,
    },
    Use {
        user: UserId,
        request: UsePoints,
    },
    Cancel {
        transaction: TransactionId,
    },
    Transfer {
        request: TransferPoints,
    },
}

impl Operation {
    /// SHA-256 (hex) of the operation as the client asked it, never of what the server derived
    /// (a default expiry computed on a retry differs from the first one): what an idempotency key
    /// is bound to.
    pub fn fingerprint(&self) -> String {
        let asked = match self {
            Self::Earn { user, request, .. } => serde_json::json!(["earn", user, request]),
            Self::Use { user, request } => serde_json::json!(["use", user, request]),
            Self::Cancel { transaction } => serde_json::json!(["cancel", transaction]),
            Self::Transfer { request } => serde_json::json!(["transfer", request]),
        };
        let digest = Sha256::digest(asked.to_string().as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// What a write answered; stored with its idempotency key and replayed to every retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    Done(Receipt),
    Refused(Refusal),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    #[serde(with = "crate::kernel::id_text")]
    pub transaction_id: TransactionId,
    /// The wallet's balance after the write (the sender's, for a transfer).
    pub balance: u64,
    /// A transfer's receiving side.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::kernel::id_text::optional"
    )]
    pub to_transaction_id: Option<TransactionId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_balance: Option<u64>,
}

/// A write the rules refused; nothing changed but the idempotency record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Refusal {
    InsufficientPoints,
    NotCancellable,
    TransactionNotFound,
}

impl Refusal {
    const ALL: [Self; 3] = [
        Self::InsufficientPoints,
        Self::NotCancellable,
        Self::TransactionNotFound,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InsufficientPoints => "INSUFFICIENT_POINTS",
            Self::NotCancellable => "NOT_CANCELLABLE",
            Self::TransactionNotFound => "TRANSACTION_NOT_FOUND",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == raw)
    }
}

/// A lot with points left, as a write sees it under the wallet's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lot {
    pub id: LotId,
    pub remaining: u64,
    pub expires_at: DateTime<Utc>,
}

impl Lot {
    pub fn is_due(&self, now: DateTime<Utc>) -> bool {
        self.expires_at <= now
    }
}

/// Points drawn from (or given back to) one lot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    pub lot_id: LotId,
    pub amount: u64,
    pub expires_at: DateTime<Utc>,
}

/// The lots `amount` is drawn from, first-expiring-first (ties by lot id), skipping lots past
/// their time; `None` if the spendable lots do not hold enough.
pub fn allocate(lots: &[Lot], amount: u64, now: DateTime<Utc>) -> Option<Vec<Allocation>> {
    let mut spendable: Vec<&Lot> = lots.iter().filter(|l| !l.is_due(now) && l.remaining > 0).collect();
    spendable.sort_by_key(|l| (l.expires_at, l.id));
    let mut left = amount;
    let mut drawn = Vec::new();
    for lot in spendable {
        if left == 0 {
            break;
        }
        let take = lot.remaining.min(left);
        drawn.push(Allocation {
            lot_id: lot.id,
            amount: take,
            expires_at: lot.expires_at,
        });
        left -= take;
    }
    (left == 0).then_some(drawn)
}

/// A cancelled use's allocations split into what goes back to its lot and what expires at once,
/// because its lot's time has passed meanwhile.
pub fn split_cancel(allocations: &[Allocation], now: DateTime<Utc>) -> (Vec<Allocation>, Vec<Allocation>) {
    allocations.iter().partition(|a| a.expires_at > now)
}

/// The balance as a reader sees it: only lots not yet past their time.
pub fn spendable(lots: &[Lot], now: DateTime<Utc>) -> u64 {
    lots.iter().filter(|l| !l.is_due(now)).map(|l| l.remaining).sum()
}

/// Points a checkout hold holds: the hold's USE entry and what it drew, until the hold ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldPoints {
    pub transaction_id: TransactionId,
    pub amount: u64,
    pub expires_at: DateTime<Utc>,
    pub drawn: Vec<Allocation>,
}

impl HeldPoints {
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        !hold_ended(self.expires_at, now)
    }
}

/// What a held use's entry says about itself in the history.
pub const HOLD_REASON: &str = "checkout hold";

/// A hold ends at its `expiresAt`: from that instant on, what it held is the wallet's again.
pub fn hold_ended(expires_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    now >= expires_at
}

/// A hold past its end counts as released at once, before the write or sweep that releases it:
/// what it drew from lots still in their time is spendable again (the cancel that releases it
/// gives exactly that back, and expires the rest).
pub fn released_by_lapsed_holds(holds: &[HeldPoints], now: DateTime<Utc>) -> Vec<Lot> {
    holds
        .iter()
        .filter(|h| !h.is_live(now))
        .flat_map(|h| split_cancel(&h.drawn, now).0)
        .map(|a| Lot {
            id: a.lot_id,
            remaining: a.amount,
            expires_at: a.expires_at,
        })
        .collect()
}

/// A wallet as `GET /v1/users/{userId}/points` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Balance {
    /// What the user can spend now (`available`; the name every earlier client reads).
    pub balance: u64,
    pub available: u64,
    /// Points held by checkout holds not yet ended: spent if the order is paid, back if not.
    pub held: u64,
    pub expiring: Vec<Expiring>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Expiring {
    pub amount: u64,
    pub expires_at: DateTime<Utc>,
}

impl Balance {
    /// From the wallet's lots with points left and its holds: what is spendable now (lapsed
    /// holds count as released), what live holds hold, and the next `EXPIRING_SHOWN` expiry dates
    /// of what is spendable with how much expires on each.
    pub fn of(lots: &[Lot], holds: &[HeldPoints], now: DateTime<Utc>) -> Self {
        let mut lots = lots.to_vec();
        lots.extend(released_by_lapsed_holds(holds, now));
        let mut expiring: Vec<Expiring> = Vec::new();
        let mut live: Vec<&Lot> = lots.iter().filter(|l| !l.is_due(now) && l.remaining > 0).collect();
        live.sort_by_key(|l| (l.expires_at, l.id));
        for lot in live {
            if let Some(last) = expiring.last_mut().filter(|last| last.expires_at == lot.expires_at) {
                last.amount += lot.remaining;
            } else if expiring.len() == EXPIRING_SHOWN {
                break;
            } else {
                expiring.push(Expiring {
                    amount: lot.remaining,
                    expires_at: lot.expires_at,
                });
            }
        }
        let available = spendable(&lots, now);
        Self {
            balance: available,
            available,
            held: holds.iter().filter(|h| h.is_live(now)).map(|h| h.amount).sum(),
            expiring,
        }
    }
}

/// One history entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub transaction_id: TransactionId,
    pub movement: Movement,
    /// The change to the balance (negative for USE, EXPIRE, TRANSFER_OUT).
    pub amount: i64,
    pub balance_after: u64,
    pub reason: Option<String>,
    pub order_id: Option<String>,
    pub related_transaction_id: Option<TransactionId>,
    pub cancelled_by: Option<TransactionId>,
    pub created_at: DateTime<Utc>,
}

/// `GET /v1/users/{userId}/points/history` query: newest first, resuming below `before`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryQuery {
    pub limit: u32,
    pub before: Option<TransactionId>,
}

impl HistoryQuery {
    pub fn parse<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, InvalidField> {
        let mut query = Self {
            limit: DEFAULT_PAGE,
            before: None,
        };
        for (name, value) in params {
            match name {
                "limit" => query.limit = page_limit(value)?,
                "cursor" => query.before = Some(decode_cursor(value)?),
                _ => return Err(InvalidField::new("query", format!("unknown parameter {name}"))),
            }
        }
        Ok(query)
    }
}

/// Opaque to clients: URL-safe base64 of the last entry's transaction id.
pub fn encode_cursor(last: TransactionId) -> String {
    URL_SAFE_NO_PAD.encode(format!("t{last}"))
}

fn decode_cursor(raw: &str) -> Result<TransactionId, InvalidField> {
    let invalid = || InvalidField::new("cursor", "is not a cursor this API returned");
    let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    text.strip_prefix('t')
        .and_then(crate::kernel::digits)
        .ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(days: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap() + chrono::Duration::days(days)
    }

    fn lot(id: LotId, remaining: u64, expires_in_days: i64) -> Lot {
        Lot {
            id,
            remaining,
            expires_at: at(expires_in_days),
        }
    }

    #[test]
    fn a_use_draws_first_expiring_first_and_skips_lots_past_their_time() {
        let now = at(0);
        let lots = [lot(1, 50, 30), lot(2, 20, 10), lot(3, 100, -1), lot(4, 5, 10)];
        let drawn = allocate(&lots, 60, now).unwrap();
        let taken: Vec<_> = drawn.iter().map(|a| (a.lot_id, a.amount)).collect();
        assert_eq!(taken, vec![(2, 20), (4, 5), (1, 35)]);
        assert_eq!(allocate(&lots, 75, now).map(|d| d.len()), Some(3));
        assert!(allocate(&lots, 76, now).is_none(), "the expired lot does not count");
        assert_eq!(spendable(&lots, now), 75);
    }

    #[test]
    fn a_cancel_gives_back_live_lots_and_expires_the_rest() {
        let allocations = [
            Allocation {
                lot_id: 1,
                amount: 10,
                expires_at: at(1),
            },
            Allocation {
                lot_id: 2,
                amount: 5,
                expires_at: at(3),
            },
        ];
        let (back, expired) = split_cancel(&allocations, at(2));
        assert_eq!(back.iter().map(|a| a.lot_id).collect::<Vec<_>>(), vec![2]);
        assert_eq!(expired.iter().map(|a| a.lot_id).collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn a_balance_shows_the_next_five_expiry_dates_merged_by_date() {
        let now = at(0);
        let lots: Vec<Lot> = (1..=8)
            .map(|d| lot(d, 10, d as i64))
            .chain([lot(9, 7, 1), lot(10, 3, -2)])
            .collect();
        let balance = Balance::of(&lots, &[], now);
        assert_eq!(balance.balance, 87);
        let shown: Vec<_> = balance.expiring.iter().map(|e| e.amount).collect();
        assert_eq!(shown, vec![17, 10, 10, 10, 10]);
        assert_eq!(balance.expiring[0].expires_at, at(1));
    }

    #[test]
    fn requests_are_checked() {
        let now = at(0);
        let earn = |amount, reason: &str, expires| EarnPoints {
            amount,
            reason: reason.into(),
            expires_at: expires,
        };
        assert!(earn(1, "r", None).validate(now).is_ok());
        assert!(earn(MAX_AMOUNT, "r", Some(at(3650))).validate(now).is_ok());
        for (bad, field) in [
            (earn(0, "r", None), "amount"),
            (earn(MAX_AMOUNT + 1, "r", None), "amount"),
            (earn(1, "", None), "reason"),
            (earn(1, "r", Some(now)), "expiresAt"),
            (earn(1, "r", Some(at(3651))), "expiresAt"),
        ] {
            assert_eq!(bad.validate(now).unwrap_err().field, field);
        }
        let transfer = TransferPoints {
            from_user_id: UserId::parse("a").unwrap(),
            to_user_id: UserId::parse("a").unwrap(),
            amount: 1,
        };
        assert_eq!(transfer.validate().unwrap_err().field, "toUserId");
        assert!(IdempotencyKey::parse(None).is_err());
        assert!(IdempotencyKey::parse(Some("")).is_err());
        assert!(IdempotencyKey::parse(Some(&"k".repeat(129))).is_err());
        assert!(IdempotencyKey::parse(Some(&"k".repeat(128))).is_ok());
    }

    #[test]
    fn a_fingerprint_covers_what_was_asked_not_what_was_derived() {
        let user = UserId::parse("u").unwrap();
        let request = EarnPoints {
            amount: 5,
            reason: "r".into(),
            expires_at: None,
        };
        let earn = |expires_at| Operation::Earn {
            user: user.clone(),
            request: request.clone(),
            expires_at,
        };
        assert_eq!(earn(at(1)).fingerprint(), earn(at(2)).fingerprint());
        let other = Operation::Earn {
            user: user.clone(),
            request: EarnPoints {
                amount: 6,
                ..request.clone()
            },
            expires_at: at(1),
        };
        assert_ne!(earn(at(1)).fingerprint(), other.fingerprint());
        assert_eq!(earn(at(1)).fingerprint().len(), 64);
    }

    #[test]
    fn outcomes_and_cursors_round_trip() {
        let done = Outcome::Done(Receipt {
            transaction_id: 9,
            balance: 3,
            to_transaction_id: None,
            to_balance: None,
        });
        let text = serde_json::to_string(&done).unwrap();
        assert_eq!(serde_json::from_str::<Outcome>(&text).unwrap(), done);
        let refused = Outcome::Refused(Refusal::InsufficientPoints);
        let text = serde_json::to_string(&refused).unwrap();
        assert_eq!(serde_json::from_str::<Outcome>(&text).unwrap(), refused);
        let q = HistoryQuery::parse([("cursor", encode_cursor(42).as_str()), ("limit", "3")]).unwrap();
        assert_eq!((q.before, q.limit), (Some(42), 3));
        for (name, value) in [("cursor", "x"), ("limit", "0"), ("limit", "101"), ("other", "1")] {
            assert!(HistoryQuery::parse([(name, value)]).is_err(), "{name}={value}");
        }
    }
}
