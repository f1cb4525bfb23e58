//! Recording reservations, the writer's use case: a delivery of queued reservations becomes coupon
//! rows, in chunks of one transaction each, never more than a campaign's quantity (the surplus is
//! recorded as rejected, with its reason); every message that could not be recorded is named so
//! that it alone is delivered again (and, after too many deliveries, set aside in the DLQ). After
//! the commit, the ledger learns each user's outcome, so status polls are answered from Redis.

use std::collections::BTreeMap;

use futures_util::StreamExt;

use super::domain::{CampaignId, Outcome, Reservation};
use super::error::IssuanceError;
use super::ports::{ChunkRecord, CouponBook, IssueLedger, MAX_CHUNK_ROWS};
use crate::kernel::{Unavailable, UserId};

/// One delivered message: its queue id and body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub id: Option<String>,
    pub body: Option<String>,
}

/// What a delivery came to: the ids to deliver again, and the counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    pub failed: Vec<String>,
    pub summary: BatchSummary,
}

pub const DEFAULT_CHUNK_SIZE: usize = 1000;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchSummary {
    pub received: usize,
    pub inserted: u64,
    pub duplicates: u64,
    /// Reservations recorded as rejected (over the quantity, or not the owner's): each one means
    /// Redis handed out a place the database refused, which an operator must hear about.
    pub rejected: usize,
    pub malformed: usize,
    pub failed: usize,
}

pub const DEFAULT_PARALLEL_CHUNKS: usize = 2;

pub struct ReservationWriter<B, L> {
    book: B,
    ledger: L,
    chunk_size: usize,
    parallel_chunks: usize,
}

impl<B: CouponBook, L: IssueLedger> ReservationWriter<B, L> {
    /// `chunk_size` is clamped to what one chunk may carry (`MAX_CHUNK_ROWS`).
    pub fn new(book: B, ledger: L, chunk_size: usize) -> Self {
        Self {
            book,
            ledger,
            chunk_size: chunk_size.clamp(1, MAX_CHUNK_ROWS),
            parallel_chunks: 1,
        }
    }

    /// Chunks written concurrently. The database does the work of a chunk on one core, so a
    /// second chunk in flight uses the other. Chunks of one campaign insert side by side and take
    /// turns on its counter row only to count and commit; a chunk that could overflow holds it
    /// from its first read (see the MySQL coupon book).
    pub fn with_parallel_chunks(mut self, parallel_chunks: usize) -> Self {
        self.parallel_chunks = parallel_chunks.max(1);
        self
    }

    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    async fn write_chunk<'a>(
        &self,
        chunk: &'a [(String, Reservation)],
    ) -> (&'a [(String, Reservation)], Result<ChunkRecord, Unavailable>) {
        let reservations: Vec<Reservation> = chunk.iter().map(|(_, r)| r.clone()).collect();
        (chunk, self.book.record(&reservations).await)
    }

    /// Records one delivery of messages; returns the ids of those to deliver again (never an
    /// empty one) and what was done.
    pub async fn record(&self, messages: Vec<Message>) -> Result<Written, IssuanceError> {
        let started = std::time::Instant::now();
        let written = self.record_untimed(messages).await?;
        let s = &written.summary;
        for (result, rows) in [
            ("inserted", s.inserted),
            ("duplicate", s.duplicates),
            ("rejected", s.rejected as u64),
            ("malformed", s.malformed as u64),
            ("failed", s.failed as u64),
        ] {
            metrics::counter!("fcfs_writer_rows_total", "result" => result).increment(rows);
        }
        metrics::histogram!("fcfs_writer_batch_size").record(s.received as f64);
        metrics::histogram!("fcfs_writer_batch_duration_seconds").record(started.elapsed().as_secs_f64());
        Ok(written)
    }

    async fn record_untimed(&self, messages: Vec<Message>) -> Result<Written, IssuanceError> {
        let mut summary = BatchSummary {
            received: messages.len(),
            ..Default::default()
        };
        let mut failures: Vec<String> = Vec::new();
        let mut valid: Vec<(String, Reservation)> = Vec::with_capacity(messages.len());
        for (i, message) in messages.into_iter().enumerate() {
            let id = match message.id {
                Some(id) if !id.is_empty() => id,
                _ => return Err(IssuanceError::MessageWithoutId(i)),
            };
            // Judged alone: a message that cannot be recorded fails by itself, before any chunk,
            // so the rest of the delivery is recorded on this delivery.
            // A pack's valid reservations are recorded even when another of it is not: the message
            // fails for the invalid one, and its redelivery finds the rest recorded.
            match parse_body(message.body.as_deref().unwrap_or_default()) {
                Ok(reservations) => {
                    let mut invalid = false;
                    for (i, r) in reservations.into_iter().enumerate() {
                        match r.check() {
                            Ok(()) => valid.push((id.clone(), r)),
                            Err(e) => {
                                tracing::warn!(message_id = %id, reservation = i, error = %e, "invalid reservation");
                                invalid = true;
                            }
                        }
                    }
                    if invalid {
                        summary.malformed += 1;
                        failures.push(id);
                    }
                }
                Err(e) => {
                    tracing::warn!(message_id = %id, error = %e, "malformed reservation message");
                    summary.malformed += 1;
                    failures.push(id);
                }
            }
        }
        // Grouping a campaign's rows together keeps each chunk to few counter updates.
        valid.sort_by_key(|(_, r)| r.campaign_id);
        // Futures collected first, so their lifetimes are concrete (a closure handed to the stream
        // would need a higher-ranked one, which the Send bound of the handler cannot prove).
        let chunks: Vec<_> = valid
            .chunks(self.chunk_size)
            .map(|chunk| self.write_chunk(chunk))
            .collect();
        let written: Vec<_> = futures_util::stream::iter(chunks)
            .buffered(self.parallel_chunks)
            .collect()
            .await;
        let mut outcomes: BTreeMap<CampaignId, Vec<(UserId, Outcome)>> = BTreeMap::new();
        for (chunk, outcome) in written {
            match outcome {
                Ok(record) => {
                    summary.inserted += record.inserted;
                    summary.duplicates += record.duplicates;
                    // The record's indexes are positions in this chunk, so each is found.
                    for (message_id, r, reason) in record
                        .rejected
                        .iter()
                        .filter_map(|&(i, reason)| chunk.get(i).map(|(m, r)| (m, r, reason)))
                    {
                        tracing::error!(
                            message_id = %message_id,
                            campaign_id = r.campaign_id,
                            partner_id = %r.partner_id,
                            user_id = r.user_id.as_str(),
                            request_id = %r.request_id,
                            rank = r.rank,
                            reason = reason.as_str(),
                            "reservation rejected by the database; kept as REJECTED"
                        );
                    }
                    summary.rejected += record.rejected.len();
                    for (message_id, r) in record.unknown_campaign.iter().filter_map(|&i| chunk.get(i)) {
                        tracing::warn!(message_id = %message_id, campaign_id = r.campaign_id, "reservation for an unknown campaign");
                        failures.push(message_id.clone());
                    }
                    summary.failed += record.unknown_campaign.len();
                    for (campaign, user, outcome) in record.outcomes {
                        outcomes.entry(campaign).or_default().push((user, outcome));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, rows = chunk.len(), "chunk write failed; its messages will be retried");
                    summary.failed += chunk.len();
                    failures.extend(chunk.iter().map(|(id, _)| id.clone()));
                }
            }
        }
        for (campaign, outcomes) in outcomes {
            if let Err(e) = self.ledger.record_outcomes(campaign, &outcomes).await {
                // Committed is committed: status falls back to MySQL for these users.
                tracing::warn!(campaign_id = campaign, error = %e, "outcomes not recorded in the ledger");
            }
        }
        // A packed message whose rows fell into several failed chunks is still one message to retry.
        let mut seen = std::collections::HashSet::new();
        failures.retain(|id| seen.insert(id.clone()));
        Ok(Written {
            failed: failures,
            summary,
        })
    }
}

/// A message's reservations: a body is one reservation (a JSON object, as a Lambda instance always
/// sends) or a pack of them (a JSON array, as the SQS adapter sends when more than ten requests
/// of one process wait at once). A pack is recorded, or retried, as one message.
fn parse_body(body: &str) -> Result<Vec<Reservation>, BodyError> {
    let reservations: Vec<Reservation> = if body.trim_start().starts_with('[') {
        serde_json::from_str(body)?
    } else {
        vec![serde_json::from_str(body)?]
    };
    if reservations.is_empty() {
        return Err(BodyError::Empty);
    }
    Ok(reservations)
}

#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("not a reservation: {0}")]
    Json(#[from] serde_json::Error),
    #[error("an empty pack")]
    Empty,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    use crate::issuance::domain::RejectionReason;
    use crate::testkit::{MemoryCouponBook, MemoryLedger};

    fn reservation(campaign: u64, user: &str) -> Reservation {
        Reservation::new(
            uuid::Uuid::now_v7(),
            campaign,
            "p",
            UserId::parse(user).unwrap(),
            1,
            Utc::now(),
        )
    }

    fn event(bodies: Vec<String>) -> Vec<Message> {
        bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| Message {
                id: Some(format!("m{i}")),
                body: Some(body),
            })
            .collect()
    }

    fn book() -> MemoryCouponBook {
        let book = MemoryCouponBook::default();
        book.campaigns
            .lock()
            .unwrap()
            .extend([(1, ("p".into(), 100)), (2, ("p".into(), 100))]);
        book
    }

    fn writer(chunk_size: usize) -> ReservationWriter<MemoryCouponBook, MemoryLedger> {
        ReservationWriter::new(book(), MemoryLedger::default(), chunk_size)
    }

    fn failed_ids(r: &Written) -> Vec<&str> {
        r.failed.iter().map(String::as_str).collect()
    }

    #[tokio::test]
    async fn writes_in_chunks_and_is_idempotent() {
        let writer = writer(3);
        let bodies: Vec<String> = (0..7)
            .map(|i| serde_json::to_string(&reservation(1 + i % 2, &format!("u{i}"))).unwrap())
            .collect();
        let written = writer.record(event(bodies.clone())).await.unwrap();
        assert!(written.failed.is_empty());
        assert_eq!((written.summary.inserted, written.summary.duplicates), (7, 0));
        assert_eq!(*writer.book.chunk_sizes.lock().unwrap(), [3, 3, 1]);
        let again = writer.record(event(bodies)).await.unwrap();
        assert_eq!((again.summary.inserted, again.summary.duplicates), (0, 7));
        assert_eq!(writer.book.rows.lock().unwrap().len(), 7);
    }

    #[tokio::test]
    async fn duplicates_inside_one_batch_write_once() {
        let writer = writer(100);
        let body = serde_json::to_string(&reservation(1, "same")).unwrap();
        let written = writer.record(event(vec![body.clone(), body])).await.unwrap();
        assert!(written.failed.is_empty());
        assert_eq!((written.summary.inserted, written.summary.duplicates), (1, 1));
    }

    #[tokio::test]
    async fn poison_and_failed_chunks_are_reported_by_their_message_ids() {
        // Chunks written one by one or concurrently report the same messages.
        for parallel in [1, 3] {
            let writer = writer(2).with_parallel_chunks(parallel);
            *writer.book.fail_chunk_with_user.lock().unwrap() = Some(UserId::parse("boom").unwrap());
            let bodies = vec![
                serde_json::to_string(&reservation(1, "a")).unwrap(),    // m0
                "{not json".to_owned(),                                  // m1
                serde_json::to_string(&reservation(9, "x")).unwrap(),    // m2: unknown campaign
                serde_json::to_string(&reservation(2, "boom")).unwrap(), // m3: its chunk fails
                serde_json::to_string(&reservation(2, "c")).unwrap(),    // m4
                serde_json::to_string(&reservation(2, "d")).unwrap(),    // m5
            ];
            let written = writer.record(event(bodies)).await.unwrap();
            let mut failed = failed_ids(&written);
            failed.sort_unstable();
            // Sorted by campaign: [a(1)], then chunks [a, boom] / [c, d] / [x]: the chunk with "boom" fails.
            assert_eq!(failed, ["m0", "m1", "m2", "m3"]);
            assert!(written.failed.iter().all(|id| !id.is_empty()));
            assert_eq!((written.summary.malformed, written.summary.inserted), (1, 2));
        }
    }

    #[tokio::test]
    async fn a_packed_message_is_recorded_row_by_row_and_retried_once_as_a_whole() {
        let writer = writer(2);
        *writer.book.fail_chunk_with_user.lock().unwrap() = Some(UserId::parse("boom").unwrap());
        let pack = |users: &[(u64, &str)]| {
            let rows: Vec<Reservation> = users.iter().map(|(c, u)| reservation(*c, u)).collect();
            serde_json::to_string(&rows).unwrap()
        };
        let bodies = vec![
            pack(&[(1, "a"), (1, "b"), (2, "c")]),                // m0: recorded
            pack(&[(2, "d"), (2, "boom"), (2, "e"), (2, "f")]),   // m1: its rows span a failing chunk
            serde_json::to_string(&reservation(1, "g")).unwrap(), // m2: a single reservation
            " [".to_owned(),                                      // m3: a broken pack
        ];
        let written = writer.record(event(bodies)).await.unwrap();
        // m1's rows fell into two chunks ([d, boom] fails, [e, f] commits) yet it is retried once.
        assert_eq!(failed_ids(&written), ["m3", "m1"]);
        assert_eq!((written.summary.inserted, written.summary.malformed), (6, 1));
        assert_eq!(writer.book.rows.lock().unwrap().len(), 6);
        // The redelivery writes what was missing and nothing twice.
        *writer.book.fail_chunk_with_user.lock().unwrap() = None;
        let again = writer
            .record(event(vec![
                pack(&[(1, "a"), (1, "b"), (2, "c")]),
                pack(&[(2, "d"), (2, "boom"), (2, "e"), (2, "f")]),
            ]))
            .await
            .unwrap();
        assert!(again.failed.is_empty());
        assert_eq!(writer.book.rows.lock().unwrap().len(), 8);
    }

    #[tokio::test]
    async fn a_record_without_id_fails_the_batch_instead_of_sending_an_empty_identifier() {
        let writer = writer(10);
        let mut e = event(vec!["{}".into()]);
        e[0].id = None;
        assert!(writer.record(e).await.is_err());
    }

    #[test]
    fn chunk_size_respects_the_placeholder_limit() {
        assert_eq!(writer(1_000_000).chunk_size(), 65_535 / 8);
        assert_eq!(writer(0).chunk_size(), 1);
    }

    #[tokio::test]
    async fn the_surplus_is_rejected_counted_and_told_to_the_ledger() {
        let writer = writer(2);
        writer.book.campaigns.lock().unwrap().insert(3, ("p".into(), 2));
        let mut forged = reservation(3, "forged");
        forged.partner_id = "intruder".into();
        // Ranks handed out twice (a failover lost the counter): more places than the quantity.
        let mut bodies: Vec<String> = (1..=4)
            .map(|i| {
                let mut r = reservation(3, &format!("u{i}"));
                r.rank = if i <= 2 { i } else { i - 2 };
                serde_json::to_string(&r).unwrap()
            })
            .collect();
        bodies.push(serde_json::to_string(&forged).unwrap());
        let written = writer.record(event(bodies.clone())).await.unwrap();
        assert!(written.failed.is_empty(), "rejections are done, not retried");
        assert_eq!((written.summary.inserted, written.summary.rejected), (2, 3));
        let outcome = |user: &str| writer.ledger.outcome(3, &UserId::parse(user).unwrap());
        assert!(matches!(outcome("u1"), Some(Outcome::Issued { .. })));
        assert!(
            matches!(outcome("u2"), Some(Outcome::Issued { .. })),
            "the first chunk took the room"
        );
        assert_eq!(outcome("u3"), Some(Outcome::Rejected(RejectionReason::OverQuantity)));
        assert_eq!(outcome("u4"), Some(Outcome::Rejected(RejectionReason::OverQuantity)));
        assert_eq!(
            outcome("forged"),
            Some(Outcome::Rejected(RejectionReason::PartnerMismatch))
        );
        // Redelivered: nothing more is written, the same answers hold.
        let again = writer.record(event(bodies)).await.unwrap();
        assert_eq!((again.summary.inserted, again.summary.duplicates), (0, 2));
        assert_eq!(writer.book.rows.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn each_message_is_judged_alone_and_the_rest_of_the_delivery_is_recorded() {
        let writer = writer(100);
        let good: Vec<String> = (0..5)
            .map(|i| serde_json::to_string(&reservation(1, &format!("g{i}"))).unwrap())
            .collect();
        let far = chrono::DateTime::<Utc>::from_timestamp_millis(3_093_527_980_800_000).unwrap();
        let beyond = Reservation {
            reserved_at: far,
            ..reservation(1, "late")
        };
        let nil = Reservation {
            request_id: uuid::Uuid::nil(),
            ..reservation(1, "nil")
        };
        // A pack with one invalid reservation: its valid one is recorded, the message retried.
        let pack = serde_json::to_string(&[reservation(2, "packed"), beyond.clone()]).unwrap();
        let mut bodies = good.clone();
        bodies.extend([
            serde_json::to_string(&beyond).unwrap(),
            serde_json::to_string(&nil).unwrap(),
            "[]".to_owned(),
            pack,
        ]);
        let written = writer.record(event(bodies)).await.unwrap();
        assert_eq!(failed_ids(&written), ["m5", "m6", "m7", "m8"]);
        assert_eq!((written.summary.inserted, written.summary.malformed), (6, 4));
        let rows = writer.book.rows.lock().unwrap();
        assert!(rows.contains_key(&(2, UserId::parse("packed").unwrap())));
        assert!(!rows.keys().any(|(_, u)| ["late", "nil"].contains(&u.as_str())));
    }
}
