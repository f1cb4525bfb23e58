//! Recording reservations, the writer's use case: a delivery of queued reservations becomes coupon
//! rows, in chunks of one transaction each, and every message that could not be recorded is named
//! so that it alone is delivered again (and, after too many deliveries, set aside in the DLQ).

use futures_util::StreamExt;

use super::domain::Reservation;
use super::error::IssuanceError;
use super::ports::{ChunkRecord, CouponBook, MAX_CHUNK_ROWS};
use crate::kernel::Unavailable;

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
    pub malformed: usize,
    pub failed: usize,
}

pub const DEFAULT_PARALLEL_CHUNKS: usize = 2;

pub struct ReservationWriter<B> {
    book: B,
    chunk_size: usize,
    parallel_chunks: usize,
}

impl<B: CouponBook> ReservationWriter<B> {
    /// `chunk_size` is clamped to what one chunk may carry (`MAX_CHUNK_ROWS`).
    pub fn new(book: B, chunk_size: usize) -> Self {
        Self {
            book,
            chunk_size: chunk_size.clamp(1, MAX_CHUNK_ROWS),
            parallel_chunks: 1,
        }
    }

    /// Chunks written concurrently. The database does the work of a chunk on one core, so a
    /// second chunk in flight uses the other. Deadlock-free: a chunk's transaction inserts its
    /// rows first and only then updates campaign counters, in ascending campaign order, so no
    /// transaction holds a counter while it waits for rows.
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
            match serde_json::from_str::<Reservation>(message.body.as_deref().unwrap_or_default()) {
                Ok(r) => valid.push((id, r)),
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
        for (chunk, outcome) in written {
            match outcome {
                Ok(record) => {
                    summary.inserted += record.inserted;
                    let written = (chunk.len() - record.rejected.len()) as u64;
                    summary.duplicates += written - record.inserted;
                    for &i in &record.rejected {
                        tracing::warn!(message_id = %chunk[i].0, campaign_id = chunk[i].1.campaign_id, "reservation for an unknown campaign");
                        failures.push(chunk[i].0.clone());
                    }
                    summary.failed += record.rejected.len();
                }
                Err(e) => {
                    tracing::error!(error = %e, rows = chunk.len(), "chunk write failed; its messages will be retried");
                    summary.failed += chunk.len();
                    failures.extend(chunk.iter().map(|(id, _)| id.clone()));
                }
            }
        }
        Ok(Written {
            failed: failures,
            summary,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    use crate::kernel::UserId;
    use crate::testkit::MemoryCouponBook;

    fn reservation(campaign: u64, user: &str) -> Reservation {
        Reservation {
            request_id: uuid::Uuid::now_v7(),
            campaign_id: campaign,
            partner_id: "p".into(),
            user_id: UserId::parse(user).unwrap(),
            rank: 1,
            reserved_at: Utc::now(),
        }
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
        book.known_campaigns.lock().unwrap().extend([1, 2]);
        book
    }

    fn failed_ids(r: &Written) -> Vec<&str> {
        r.failed.iter().map(String::as_str).collect()
    }

    #[tokio::test]
    async fn writes_in_chunks_and_is_idempotent() {
        let writer = ReservationWriter::new(book(), 3);
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
        let writer = ReservationWriter::new(book(), 100);
        let body = serde_json::to_string(&reservation(1, "same")).unwrap();
        let written = writer.record(event(vec![body.clone(), body])).await.unwrap();
        assert!(written.failed.is_empty());
        assert_eq!((written.summary.inserted, written.summary.duplicates), (1, 1));
    }

    #[tokio::test]
    async fn poison_and_failed_chunks_are_reported_by_their_message_ids() {
        // Chunks written one by one or concurrently report the same messages.
        for parallel in [1, 3] {
            let writer = ReservationWriter::new(book(), 2).with_parallel_chunks(parallel);
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
    async fn a_record_without_id_fails_the_batch_instead_of_sending_an_empty_identifier() {
        let writer = ReservationWriter::new(book(), 10);
        let mut e = event(vec!["{}".into()]);
        e[0].id = None;
        assert!(writer.record(e).await.is_err());
    }

    #[test]
    fn chunk_size_respects_the_placeholder_limit() {
        assert_eq!(ReservationWriter::new(book(), 1_000_000).chunk_size(), 65_535 / 8);
        assert_eq!(ReservationWriter::new(book(), 0).chunk_size(), 1);
    }
}
