//! The events context's storage on MySQL: the outbox (`partner_events`, written inside the
//! effect's own transaction through `Outbox`), the relay's sequencer and cursors
//! (`event_cursors`), and the partners' webhook endpoints with their delivery state
//! (`webhook_endpoints`). Nothing else writes these tables.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::mysql::MySqlRow;
use sqlx::{MySql, MySqlConnection, QueryBuilder, Row};

use super::packed_events::{PACKED_TYPE, pack, unpack};
use super::{MySqlStore, unavailable, utc};
use crate::events::domain::{Delivery, Event, EventType, NewEvent, Registration};
use crate::events::ports::{EventLog, Outbox, Webhooks};
use crate::kernel::Unavailable;

/// The outbox inside another context's MySQL transaction.
#[derive(Debug, Clone, Copy, Default)]
pub struct MySqlOutbox;

#[async_trait]
impl Outbox<MySqlConnection> for MySqlOutbox {
    async fn append(&self, tx: &mut MySqlConnection, events: &[NewEvent]) -> Result<(), Unavailable> {
        append(tx, events).await.map_err(unavailable)
    }
}

/// Records `events` in the caller's transaction: a partner's many events as packed rows (see
/// `packed_events`), the others as rows of their own. `IGNORE` skips only a repeated `once_key`
/// (a packed event's, when the sequencer expands it): every value is checked by the domain before
/// it gets here.
pub(crate) async fn append(tx: &mut MySqlConnection, events: &[NewEvent]) -> Result<(), sqlx::Error> {
    let (singles, packed) = pack(events).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    if !singles.is_empty() {
        let mut insert = QueryBuilder::<MySql>::new(
            "INSERT IGNORE INTO partner_events (partner_id, type, subject, once_key, occurred_at, data) ",
        );
        insert.push_values(singles, |mut row, e| {
            row.push_bind(&e.partner_id)
                .push_bind(e.kind.as_str())
                .push_bind(&e.subject)
                .push_bind(e.once_key.as_deref())
                .push_bind(e.occurred_at.naive_utc())
                .push_bind(e.data.to_string());
        });
        insert.build().execute(&mut *tx).await?;
    }
    if !packed.is_empty() {
        let mut insert = QueryBuilder::<MySql>::new(
            "INSERT INTO partner_events (partner_id, type, subject, once_key, occurred_at, data) ",
        );
        insert.push_values(packed, |mut row, p| {
            row.push_bind(p.partner_id)
                .push_bind(PACKED_TYPE)
                .push_bind(p.events.to_string())
                .push_bind(None::<String>)
                .push_bind(p.occurred_at.naive_utc())
                .push_bind(p.data);
        });
        insert.build().execute(&mut *tx).await?;
    }
    Ok(())
}

/// The same insert as text, for a multi-statement batch that cannot carry bind parameters (the
/// points ledger's). `literal` turns text into a literal no value can end; each event's `ids`
/// name the fields of its data set from session variables (`("transactionId", "@t")`).
pub(crate) fn append_statement(
    events: &[(NewEvent, Vec<(&'static str, &'static str)>)],
    literal: impl Fn(&str) -> String,
) -> Option<String> {
    if events.is_empty() {
        return None;
    }
    let rows: Vec<String> = events
        .iter()
        .map(|(e, ids)| {
            let mut data = literal(&e.data.to_string());
            for (field, variable) in ids {
                data = format!("JSON_SET({data}, '$.{field}', CAST({variable} AS CHAR))");
            }
            format!(
                "({}, {}, {}, {}, '{}', {data})",
                literal(&e.partner_id),
                literal(e.kind.as_str()),
                literal(&e.subject),
                e.once_key.as_deref().map_or_else(|| "NULL".to_owned(), &literal),
                e.occurred_at.naive_utc().format("%Y-%m-%d %H:%M:%S%.3f"),
            )
        })
        .collect();
    Some(format!(
        "INSERT IGNORE INTO partner_events (partner_id, type, subject, once_key, occurred_at, data) VALUES {}",
        rows.join(", ")
    ))
}

/// Gives the waiting rows, in id order, the sequences after `last`: a row of its own its next
/// one, a packed row's events the next ones in their order (expanded into rows of their own,
/// the packed row deleted). Rows are taken until `max` events are reached, a packed row whole.
/// How many sequences were given (some may be gaps: a packed event whose `once_key` is recorded).
async fn sequence_waiting(tx: &mut MySqlConnection, last: u64, max: u32) -> Result<u64, sqlx::Error> {
    // Forced: with the LIMIT a placeholder, the optimizer walks the primary key in id order,
    // filtering for NULL, through every sequenced row before the first waiting one (2.4 million
    // rows and 2 s a batch here); the key on (sequence, id) starts at them.
    let waiting: Vec<(u64, String, String)> = sqlx::query_as(
        "SELECT id, type, subject FROM partner_events FORCE INDEX (idx_partner_events_unsequenced) \
         WHERE sequence IS NULL ORDER BY id LIMIT ?",
    )
    .bind(max)
    .fetch_all(&mut *tx)
    .await?;
    let mut taken = Vec::new();
    let mut events = 0_u64;
    for (id, kind, subject) in waiting {
        if events >= u64::from(max) {
            break;
        }
        let packed = kind == PACKED_TYPE;
        events += if packed {
            subject
                .parse::<u64>()
                .map_err(|e| sqlx::Error::Decode(format!("packed row {id}: {e}").into()))?
        } else {
            1
        };
        taken.push((id, packed));
    }
    let packed_ids: Vec<u64> = taken.iter().filter(|(_, p)| *p).map(|(id, _)| *id).collect();
    let mut packed_rows: HashMap<u64, Vec<NewEvent>> = HashMap::new();
    if !packed_ids.is_empty() {
        for (id, partner, data) in with_ids(
            "SELECT id, partner_id, data FROM partner_events WHERE id IN (",
            &packed_ids,
        )
        .build_query_as::<(u64, String, String)>()
        .fetch_all(&mut *tx)
        .await?
        {
            let events = unpack(&partner, &data).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
            packed_rows.insert(id, events);
        }
    }
    let mut next = last;
    let mut singles = Vec::new();
    let mut expanded = Vec::new();
    for (id, packed) in &taken {
        if *packed {
            for event in packed_rows.remove(id).unwrap_or_default() {
                next += 1;
                expanded.push((event, next));
            }
        } else {
            next += 1;
            singles.push((*id, next));
        }
    }
    if !singles.is_empty() {
        let mut update = QueryBuilder::<MySql>::new("UPDATE partner_events SET sequence = CASE id");
        for (id, sequence) in &singles {
            update.push(" WHEN ").push_bind(*id).push(" THEN ").push_bind(*sequence);
        }
        update.push(" END WHERE id IN (");
        let mut list = update.separated(", ");
        for (id, _) in &singles {
            list.push_bind(*id);
        }
        update.push(")");
        update.build().execute(&mut *tx).await?;
    }
    // At most `max` and one packed row's events: a few statements at most.
    for part in expanded.chunks(EXPANDED_ROWS_PER_INSERT) {
        let mut insert = QueryBuilder::<MySql>::new(
            "INSERT IGNORE INTO partner_events (partner_id, type, subject, once_key, occurred_at, data, sequence) ",
        );
        insert.push_values(part, |mut row, (e, sequence)| {
            row.push_bind(&e.partner_id)
                .push_bind(e.kind.as_str())
                .push_bind(&e.subject)
                .push_bind(e.once_key.as_deref())
                .push_bind(e.occurred_at.naive_utc())
                .push_bind(e.data.to_string())
                .push_bind(*sequence);
        });
        insert.build().execute(&mut *tx).await?;
    }
    if !packed_ids.is_empty() {
        with_ids("DELETE FROM partner_events WHERE id IN (", &packed_ids)
            .build()
            .execute(&mut *tx)
            .await?;
    }
    Ok(next - last)
}

/// `head` (ending in `IN (`) with `ids` bound and the list closed.
fn with_ids(head: &'static str, ids: &[u64]) -> QueryBuilder<MySql> {
    let mut query = QueryBuilder::new(head);
    let mut list = query.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    query.push(")");
    query
}

/// Expanded events per INSERT: 7 placeholders each, within MySQL's 65,535.
const EXPANDED_ROWS_PER_INSERT: usize = 5000;

const EVENT_COLUMNS: &str = "id, type, partner_id, occurred_at, data, sequence";

/// A partner's events after a sequence (binds: the partner twice, then the sequence), as a seek on
/// (partner_id, sequence). Written as a range on `partner_id` because with `partner_id = ?` MariaDB
/// may choose `ref` on the key's first part and test `sequence > ?` on every entry of the
/// partner's history from its first (seen: 300 ms a batch for a partner with 3 million events).
const PARTNER_AFTER: &str = "FORCE INDEX (idx_partner_events_partner) \
     WHERE partner_id >= ? AND partner_id <= ? AND sequence > ?";

fn event_from(row: &MySqlRow) -> Result<Event, sqlx::Error> {
    let kind: String = row.try_get("type")?;
    let data: String = row.try_get("data")?;
    Ok(Event::from_record(
        row.try_get("id")?,
        row.try_get("sequence")?,
        EventType::parse(&kind).ok_or_else(|| sqlx::Error::Decode(format!("event type {kind}").into()))?,
        row.try_get("partner_id")?,
        utc(row.try_get("occurred_at")?),
        serde_json::from_str(&data).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
    ))
}

#[async_trait]
impl EventLog for MySqlStore {
    async fn sequence(&self, max: u32) -> Result<u32, Unavailable> {
        self.timed(async {
            let mut conn = self.db().await?.acquire().await.map_err(unavailable)?;
            // READ COMMITTED: the plain read below sees every committed row and locks no gap, so
            // producers' inserts never wait on the sequencer.
            sqlx::query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
                .execute(&mut *conn)
                .await
                .map_err(unavailable)?;
            let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(unavailable)?;
            let last: u64 = sqlx::query_scalar("SELECT position FROM event_cursors WHERE name = 'sequence' FOR UPDATE")
                .fetch_one(&mut *tx)
                .await
                .map_err(unavailable)?;
            let count = sequence_waiting(&mut tx, last, max).await.map_err(unavailable)?;
            if count == 0 {
                return Ok(0);
            }
            sqlx::query("UPDATE event_cursors SET position = ? WHERE name = 'sequence'")
                .bind(last + count)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            tx.commit().await.map_err(unavailable)?;
            Ok(u32::try_from(count).unwrap_or(u32::MAX))
        })
        .await
    }

    async fn partner_events(&self, partner: &str, after: u64, limit: u32) -> Result<Vec<Event>, Unavailable> {
        self.timed(async {
            let sql = sqlx::AssertSqlSafe(format!(
                "SELECT {EVENT_COLUMNS} FROM partner_events {PARTNER_AFTER} ORDER BY partner_id, sequence LIMIT ?"
            ));
            let rows = sqlx::query(sql)
                .bind(partner)
                .bind(partner)
                .bind(after)
                .bind(limit)
                .fetch_all(&self.db().await?)
                .await
                .map_err(unavailable)?;
            rows.iter()
                .map(event_from)
                .collect::<Result<_, _>>()
                .map_err(unavailable)
        })
        .await
    }

    async fn all_events(&self, after: u64, limit: u32) -> Result<Vec<Event>, Unavailable> {
        self.timed(async {
            let sql = sqlx::AssertSqlSafe(format!(
                "SELECT {EVENT_COLUMNS} FROM partner_events WHERE sequence > ? ORDER BY sequence LIMIT ?"
            ));
            let rows = sqlx::query(sql)
                .bind(after)
                .bind(limit)
                .fetch_all(&self.db().await?)
                .await
                .map_err(unavailable)?;
            rows.iter()
                .map(event_from)
                .collect::<Result<_, _>>()
                .map_err(unavailable)
        })
        .await
    }

    async fn cursor(&self, name: &str) -> Result<u64, Unavailable> {
        self.timed(async {
            let position: Option<u64> = sqlx::query_scalar("SELECT position FROM event_cursors WHERE name = ?")
                .bind(name)
                .fetch_optional(&self.db().await?)
                .await
                .map_err(unavailable)?;
            Ok(position.unwrap_or(0))
        })
        .await
    }

    async fn move_cursor(&self, name: &str, to: u64) -> Result<(), Unavailable> {
        self.timed(async {
            sqlx::query(
                // Never back: two relays overlapping may publish one batch twice, not move back.
                "INSERT INTO event_cursors (name, position) VALUES (?, ?) \
                 ON DUPLICATE KEY UPDATE position = GREATEST(position, VALUES(position))",
            )
            .bind(name)
            .bind(to)
            .execute(&self.db().await?)
            .await
            .map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn last_sequence(&self) -> Result<u64, Unavailable> {
        self.cursor("sequence").await
    }

    async fn sequence_before(&self, partner: &str, since: DateTime<Utc>) -> Result<u64, Unavailable> {
        let first: Option<u64> = self
            .timed(async {
                sqlx::query_scalar(
                    "SELECT MIN(sequence) FROM partner_events WHERE partner_id = ? AND occurred_at >= ? \
                     AND sequence IS NOT NULL",
                )
                .bind(partner)
                .bind(since.naive_utc())
                .fetch_one(&self.db().await?)
                .await
                .map_err(unavailable)
            })
            .await?;
        match first {
            Some(first) => Ok(first.saturating_sub(1)),
            None => self.last_sequence().await,
        }
    }

    async fn prune(&self, before: DateTime<Utc>, max: u32) -> Result<u64, Unavailable> {
        self.timed(async {
            let done = sqlx::query(
                "DELETE FROM partner_events WHERE occurred_at < ? AND sequence IS NOT NULL ORDER BY occurred_at LIMIT ?",
            )
            .bind(before.naive_utc())
            .bind(max)
            .execute(&self.db().await?)
            .await
            .map_err(unavailable)?;
            Ok(done.rows_affected())
        })
        .await
    }
}

/// Registrations the relay looks at per round (the longest waiting first): far above the partners
/// a stack serves, a bound on one round's read.
const DUE_CANDIDATES: u32 = 10_000;
/// Registrations checked for a pending event per statement.
const DUE_CHECKS_PER_STATEMENT: usize = 100;

const ENDPOINT_COLUMNS: &str = "partner_id, url, event_types, created_at, updated_at, delivered_through, \
     failing_since, attempts, next_attempt_at, paused_at, last_error";

fn endpoint_from(row: &MySqlRow) -> Result<(Registration, Delivery), sqlx::Error> {
    let types: String = row.try_get("event_types")?;
    let events = types
        .split(',')
        .filter(|t| !t.is_empty())
        .map(|t| EventType::parse(t).ok_or_else(|| sqlx::Error::Decode(format!("event type {t}").into())))
        .collect::<Result<_, _>>()?;
    let optional = |column: &str| -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        Ok(row.try_get::<Option<NaiveDateTime>, _>(column)?.map(utc))
    };
    Ok((
        Registration {
            partner_id: row.try_get("partner_id")?,
            url: row.try_get("url")?,
            events,
            created_at: utc(row.try_get("created_at")?),
            updated_at: utc(row.try_get("updated_at")?),
        },
        Delivery {
            delivered_through: row.try_get("delivered_through")?,
            failing_since: optional("failing_since")?,
            attempts: row.try_get("attempts")?,
            next_attempt_at: utc(row.try_get("next_attempt_at")?),
            paused_at: optional("paused_at")?,
            last_error: row.try_get("last_error")?,
        },
    ))
}

fn type_list(types: &[EventType]) -> String {
    types.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(",")
}

#[async_trait]
impl Webhooks for MySqlStore {
    async fn register(
        &self,
        registration: &Registration,
        sealed_secret: &[u8],
        start_after: u64,
    ) -> Result<bool, Unavailable> {
        self.timed(async {
            let pool = self.db().await?;
            // Insert if new (IGNORE: a duplicate key affects no row, whatever the client flags),
            // else replace. ON DUPLICATE KEY UPDATE's count cannot tell: with CLIENT_FOUND_ROWS,
            // which sqlx sets, an unchanged row counts 1, as a new one does.
            let inserted = sqlx::query(
                "INSERT IGNORE INTO webhook_endpoints (partner_id, url, event_types, sealed_secret, created_at, \
                 updated_at, delivered_through, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&registration.partner_id)
            .bind(&registration.url)
            .bind(type_list(&registration.events))
            .bind(sealed_secret)
            .bind(registration.created_at.naive_utc())
            .bind(registration.updated_at.naive_utc())
            .bind(start_after)
            .bind(registration.created_at.naive_utc())
            .execute(&pool)
            .await
            .map_err(unavailable)?
            .rows_affected()
                == 1;
            if !inserted {
                sqlx::query(
                    "UPDATE webhook_endpoints SET url = ?, event_types = ?, updated_at = ?, failing_since = NULL, \
                     attempts = 0, next_attempt_at = ?, paused_at = NULL, last_error = NULL WHERE partner_id = ?",
                )
                .bind(&registration.url)
                .bind(type_list(&registration.events))
                .bind(registration.updated_at.naive_utc())
                .bind(registration.updated_at.naive_utc())
                .bind(&registration.partner_id)
                .execute(&pool)
                .await
                .map_err(unavailable)?;
            }
            Ok(inserted)
        })
        .await
    }

    async fn find(&self, partner: &str) -> Result<Option<(Registration, Delivery)>, Unavailable> {
        self.timed(async {
            let sql = sqlx::AssertSqlSafe(format!(
                "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE partner_id = ?"
            ));
            let row = sqlx::query(sql)
                .bind(partner)
                .fetch_optional(&self.db().await?)
                .await
                .map_err(unavailable)?;
            row.as_ref().map(endpoint_from).transpose().map_err(unavailable)
        })
        .await
    }

    async fn sealed_secret(&self, partner: &str) -> Result<Option<Vec<u8>>, Unavailable> {
        self.timed(async {
            sqlx::query_scalar("SELECT sealed_secret FROM webhook_endpoints WHERE partner_id = ?")
                .bind(partner)
                .fetch_optional(&self.db().await?)
                .await
                .map_err(unavailable)
        })
        .await
    }

    async fn replace_secret(
        &self,
        partner: &str,
        sealed_secret: &[u8],
        now: DateTime<Utc>,
    ) -> Result<bool, Unavailable> {
        self.timed(async {
            let done =
                sqlx::query("UPDATE webhook_endpoints SET sealed_secret = ?, updated_at = ? WHERE partner_id = ?")
                    .bind(sealed_secret)
                    .bind(now.naive_utc())
                    .bind(partner)
                    .execute(&self.db().await?)
                    .await
                    .map_err(unavailable)?;
            Ok(done.rows_affected() == 1)
        })
        .await
    }

    async fn remove(&self, partner: &str) -> Result<bool, Unavailable> {
        self.timed(async {
            let done = sqlx::query("DELETE FROM webhook_endpoints WHERE partner_id = ?")
                .bind(partner)
                .execute(&self.db().await?)
                .await
                .map_err(unavailable)?;
            Ok(done.rows_affected() == 1)
        })
        .await
    }

    async fn due(&self, now: DateTime<Utc>, max: u32) -> Result<Vec<String>, Unavailable> {
        self.timed(async {
            let db = self.db().await?;
            // The registrations whose time has come, then only those with an event past their
            // position: an idle registration is not due, so an idle relay sleeps instead of leasing
            // every partner each round. Two steps because a correlated `EXISTS … sequence >
            // w.delivered_through` is read as a scan of the partner's whole history (the optimizer
            // ranges on `partner_id` alone): millions of rows a round for a busy partner. With the
            // position a constant, each check is one seek on (partner_id, sequence).
            let candidates: Vec<(String, u64)> = sqlx::query_as(
                "SELECT partner_id, delivered_through FROM webhook_endpoints WHERE paused_at IS NULL \
                 AND next_attempt_at <= ? AND (leased_until IS NULL OR leased_until <= ?) \
                 ORDER BY next_attempt_at LIMIT ?",
            )
            .bind(now.naive_utc())
            .bind(now.naive_utc())
            .bind(DUE_CANDIDATES)
            .fetch_all(&db)
            .await
            .map_err(unavailable)?;
            let mut due = Vec::new();
            for chunk in candidates.chunks(DUE_CHECKS_PER_STATEMENT) {
                if due.len() >= max as usize {
                    break;
                }
                let sql = vec![format!("(SELECT partner_id FROM partner_events {PARTNER_AFTER} LIMIT 1)"); chunk.len()]
                    .join(" UNION ALL ");
                let mut checks = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
                for (partner, through) in chunk {
                    checks = checks.bind(partner).bind(partner).bind(*through);
                }
                let pending: HashSet<String> = checks.fetch_all(&db).await.map_err(unavailable)?.into_iter().collect();
                // In the candidates' order: the longest waiting first.
                due.extend(
                    chunk
                        .iter()
                        .filter(|(p, _)| pending.contains(p))
                        .map(|(p, _)| p.clone()),
                );
            }
            due.truncate(max as usize);
            Ok(due)
        })
        .await
    }

    async fn lease(
        &self,
        partner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<(Registration, Delivery)>, Unavailable> {
        self.timed(async {
            let pool = self.db().await?;
            let taken = sqlx::query(
                "UPDATE webhook_endpoints SET leased_until = ? WHERE partner_id = ? \
                 AND (leased_until IS NULL OR leased_until <= ?)",
            )
            .bind(until.naive_utc())
            .bind(partner)
            .bind(now.naive_utc())
            .execute(&pool)
            .await
            .map_err(unavailable)?;
            if taken.rows_affected() != 1 {
                return Ok(None);
            }
            let sql = sqlx::AssertSqlSafe(format!(
                "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE partner_id = ?"
            ));
            let row = sqlx::query(sql)
                .bind(partner)
                .fetch_optional(&pool)
                .await
                .map_err(unavailable)?;
            row.as_ref().map(endpoint_from).transpose().map_err(unavailable)
        })
        .await
    }

    async fn renew(&self, partner: &str, held: DateTime<Utc>, until: DateTime<Utc>) -> Result<bool, Unavailable> {
        self.timed(async {
            let done =
                sqlx::query("UPDATE webhook_endpoints SET leased_until = ? WHERE partner_id = ? AND leased_until = ?")
                    .bind(until.naive_utc())
                    .bind(partner)
                    .bind(held.naive_utc())
                    .execute(&self.db().await?)
                    .await
                    .map_err(unavailable)?;
            Ok(done.rows_affected() == 1)
        })
        .await
    }

    async fn settle(&self, partner: &str, held: DateTime<Utc>, state: &Delivery) -> Result<bool, Unavailable> {
        self.timed(async {
            let done = sqlx::query(
                "UPDATE webhook_endpoints SET delivered_through = ?, failing_since = ?, attempts = ?, \
                 next_attempt_at = ?, paused_at = ?, last_error = ?, leased_until = NULL \
                 WHERE partner_id = ? AND leased_until = ?",
            )
            .bind(state.delivered_through)
            .bind(state.failing_since.map(|t| t.naive_utc()))
            .bind(state.attempts)
            .bind(state.next_attempt_at.naive_utc())
            .bind(state.paused_at.map(|t| t.naive_utc()))
            .bind(
                state
                    .last_error
                    .as_deref()
                    .map(|e| e.chars().take(500).collect::<String>()),
            )
            .bind(partner)
            .bind(held.naive_utc())
            .execute(&self.db().await?)
            .await
            .map_err(unavailable)?;
            Ok(done.rows_affected() == 1)
        })
        .await
    }

    async fn rewind(&self, partner: &str, to: u64, now: DateTime<Utc>) -> Result<bool, Unavailable> {
        self.timed(async {
            let done = sqlx::query(
                "UPDATE webhook_endpoints SET delivered_through = ?, failing_since = NULL, attempts = 0, \
                 next_attempt_at = ?, paused_at = NULL, last_error = NULL, leased_until = NULL WHERE partner_id = ?",
            )
            .bind(to)
            .bind(now.naive_utc())
            .bind(partner)
            .execute(&self.db().await?)
            .await
            .map_err(unavailable)?;
            Ok(done.rows_affected() == 1)
        })
        .await
    }
}
