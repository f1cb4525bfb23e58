//! The outbox's packed rows: a transaction with many events for one partner (a writer's chunk:
//! one `coupon.issued` per coupon) records them as one `partner_events` row, and the sequencer
//! expands it into one row per event as it gives them their sequence. Each event's row is then
//! written once, already sequenced, instead of written and then updated: the flash sale's writer
//! adds one row per chunk to its coupons, not one per coupon. A packed row is never read as an
//! event (it has no sequence), so readers see only expanded rows.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::events::domain::{EventType, NewEvent};

/// A partner's events in one `append`, from this many on, are packed: below it the expansion
/// would save little over updating the rows' sequence.
pub(super) const PACK_FROM: usize = 16;
/// Events in one packed row at most: bounds the row and the sequencer's transaction.
pub(super) const PACK_AT_MOST: usize = 1000;
/// The `type` of a packed row (no event type is named so). Its `subject` is the number of events
/// it holds, so the sequencer counts them without reading `data`.
pub(super) const PACKED_TYPE: &str = "packed";

/// One packed row.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PackedRow {
    pub partner_id: String,
    pub events: usize,
    /// The first event's instant.
    pub occurred_at: DateTime<Utc>,
    /// The events as a JSON array.
    pub data: String,
}

/// One event inside a packed row.
#[derive(Serialize, Deserialize)]
struct Packed<'e> {
    #[serde(rename = "type")]
    kind: EventType,
    subject: std::borrow::Cow<'e, str>,
    #[serde(rename = "onceKey")]
    once_key: Option<std::borrow::Cow<'e, str>>,
    /// Milliseconds, as the column keeps them.
    #[serde(rename = "occurredAt")]
    occurred_at: String,
    data: std::borrow::Cow<'e, Value>,
}

const INSTANT: &str = "%Y-%m-%d %H:%M:%S%.3f";

/// Splits `events` into the ones recorded as rows of their own and the packed rows (each
/// partner's events keep their order, in rows of at most `PACK_AT_MOST`).
pub(super) fn pack(events: &[NewEvent]) -> Result<(Vec<&NewEvent>, Vec<PackedRow>), serde_json::Error> {
    let mut partners: Vec<(&str, Vec<&NewEvent>)> = Vec::new();
    for e in events {
        match partners.iter_mut().find(|(p, _)| *p == e.partner_id) {
            Some((_, list)) => list.push(e),
            None => partners.push((&e.partner_id, vec![e])),
        }
    }
    let (mut singles, mut packed) = (Vec::new(), Vec::new());
    for (partner, list) in partners {
        if list.len() < PACK_FROM {
            singles.extend(list);
            continue;
        }
        for part in list.chunks(PACK_AT_MOST) {
            let Some(first) = part.first() else { continue };
            let entries: Vec<Packed<'_>> = part
                .iter()
                .map(|e| Packed {
                    kind: e.kind,
                    subject: e.subject.as_str().into(),
                    once_key: e.once_key.as_deref().map(Into::into),
                    occurred_at: e.occurred_at.naive_utc().format(INSTANT).to_string(),
                    data: std::borrow::Cow::Borrowed(&e.data),
                })
                .collect();
            packed.push(PackedRow {
                partner_id: partner.to_owned(),
                events: part.len(),
                occurred_at: first.occurred_at,
                data: serde_json::to_string(&entries)?,
            });
        }
    }
    Ok((singles, packed))
}

/// The events of a packed row of `partner`, in their order.
pub(super) fn unpack(partner: &str, data: &str) -> Result<Vec<NewEvent>, serde_json::Error> {
    let entries: Vec<Packed<'static>> = serde_json::from_str(data)?;
    entries
        .into_iter()
        .map(|p| {
            let at = NaiveDateTime::parse_from_str(&p.occurred_at, INSTANT)
                .map_err(|e| <serde_json::Error as serde::de::Error>::custom(format!("occurredAt: {e}")))?;
            Ok(NewEvent {
                partner_id: partner.to_owned(),
                kind: p.kind,
                subject: p.subject.into_owned(),
                once_key: p.once_key.map(std::borrow::Cow::into_owned),
                occurred_at: at.and_utc(),
                data: p.data.into_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;

    fn event(partner: &str, n: usize) -> NewEvent {
        NewEvent {
            partner_id: partner.to_owned(),
            kind: if n.is_multiple_of(2) {
                EventType::CouponIssued
            } else {
                EventType::CouponRejected
            },
            subject: format!("s{n}"),
            once_key: (!n.is_multiple_of(3)).then(|| format!("k{n}")),
            occurred_at: Utc.timestamp_millis_opt(1_764_900_000_123 + n as i64).unwrap(),
            data: json!({ "n": n, "userId": format!("u\"{n}") }),
        }
    }

    #[test]
    fn a_few_events_stay_rows_of_their_own() {
        let events: Vec<NewEvent> = (0..PACK_FROM - 1).map(|n| event("p", n)).collect();
        let (singles, packed) = pack(&events).unwrap();
        assert_eq!(singles.len(), events.len());
        assert!(packed.is_empty());
    }

    #[test]
    fn many_events_of_a_partner_pack_in_order_and_unpack_the_same() {
        let mut events: Vec<NewEvent> = (0..PACK_AT_MOST + 5).map(|n| event("big", n)).collect();
        events.insert(3, event("small", 7));
        let (singles, packed) = pack(&events).unwrap();
        assert_eq!(singles, vec![&events[3]]);
        assert_eq!(
            packed
                .iter()
                .map(|p| (p.partner_id.as_str(), p.events))
                .collect::<Vec<_>>(),
            vec![("big", PACK_AT_MOST), ("big", 5)]
        );
        let unpacked: Vec<NewEvent> = packed
            .iter()
            .flat_map(|p| unpack(&p.partner_id, &p.data).unwrap())
            .collect();
        let big: Vec<NewEvent> = events.into_iter().filter(|e| e.partner_id == "big").collect();
        assert_eq!(unpacked, big);
        assert_eq!(packed[0].occurred_at, big[0].occurred_at);
    }

    #[test]
    fn a_packed_instant_keeps_the_columns_milliseconds() {
        let mut events: Vec<NewEvent> = (0..PACK_FROM).map(|n| event("p", n)).collect();
        events[0].occurred_at = Utc.timestamp_nanos(1_764_900_000_123_456_789);
        let (_, packed) = pack(&events).unwrap();
        let back = unpack("p", &packed[0].data).unwrap();
        assert_eq!(
            back[0].occurred_at,
            Utc.timestamp_millis_opt(1_764_900_000_123).unwrap()
        );
    }

    #[test]
    fn a_damaged_packed_row_is_an_error_not_a_panic() {
        assert!(unpack("p", "[{\"type\":\"coupon.issued\"}]").is_err());
        assert!(unpack("p", "not json").is_err());
    }
}
