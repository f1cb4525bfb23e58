//! The SQS batch writer: reservations → coupon rows, in chunks, reporting partial failures.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use fcfs_shared::config::{Settings, StartupError};
use fcfs_shared::db::{MAX_ROWS_PER_INSERT, MySqlStore};
use fcfs_shared::domain::Reservation;
use fcfs_shared::ports::CouponBook;
use futures_util::StreamExt;

pub const DEFAULT_CHUNK_SIZE: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    /// A record without a message id cannot be reported alone; an empty identifier would fail the
    /// batch anyway, so fail it explicitly (every write is idempotent, the retry is safe).
    #[error("record {0} has no message id")]
    MissingMessageId(usize),
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchSummary {
    pub received: usize,
    pub inserted: u64,
    pub duplicates: u64,
    pub malformed: usize,
    pub failed: usize,
}

pub const DEFAULT_PARALLEL_CHUNKS: usize = 2;

pub struct IssueWriter<B> {
    book: B,
    chunk_size: usize,
    parallel_chunks: usize,
}

impl IssueWriter<MySqlStore> {
    /// The deployed function: MySQL at `DATABASE_URL`, chunks of `WRITER_CHUNK_SIZE`, up to
    /// `WRITER_PARALLEL_CHUNKS` of them at once (each on its own connection of the pool).
    pub async fn from_settings(settings: &Settings) -> Result<Self, StartupError> {
        let pool = fcfs_shared::db::connect_with(settings).await?;
        Ok(Self::new(
            MySqlStore::new(pool),
            settings.or("WRITER_CHUNK_SIZE", DEFAULT_CHUNK_SIZE)?,
        )
        .with_parallel_chunks(settings.or("WRITER_PARALLEL_CHUNKS", DEFAULT_PARALLEL_CHUNKS)?))
    }
}

impl<B: CouponBook> IssueWriter<B> {
    /// `chunk_size` is clamped to what one INSERT may carry under MySQL's placeholder limit.
    pub fn new(book: B, chunk_size: usize) -> Self {
        Self {
            book,
            chunk_size: chunk_size.clamp(1, MAX_ROWS_PER_INSERT),
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
    ) -> (
        &'a [(String, Reservation)],
        Result<fcfs_shared::ports::ChunkRecord, fcfs_shared::ports::Unavailable>,
    ) {
        let reservations: Vec<Reservation> = chunk.iter().map(|(_, r)| r.clone()).collect();
        (chunk, self.book.record(&reservations).await)
    }

    pub async fn handle(&self, event: SqsEvent) -> Result<(SqsBatchResponse, BatchSummary), WriterError> {
        let mut summary = BatchSummary {
            received: event.records.len(),
            ..Default::default()
        };
        let mut failures: Vec<String> = Vec::new();
        let mut valid: Vec<(String, Reservation)> = Vec::with_capacity(event.records.len());
        for (i, record) in event.records.into_iter().enumerate() {
            let id = match record.message_id {
                Some(id) if !id.is_empty() => id,
                _ => return Err(WriterError::MissingMessageId(i)),
            };
            match serde_json::from_str::<Reservation>(record.body.as_deref().unwrap_or_default()) {
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
        let mut response = SqsBatchResponse::default();
        response.batch_item_failures = failures
            .into_iter()
            .map(|id| {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                failure
            })
            .collect();
        Ok((response, summary))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lambda_events::event::sqs::SqsMessage;
    use chrono::Utc;
    use fcfs_shared::domain::UserId;
    use fcfs_shared::fakes::MemoryCouponBook;

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

    fn event(bodies: Vec<String>) -> SqsEvent {
        let mut event = SqsEvent::default();
        event.records = bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| {
                let mut m = SqsMessage::default();
                m.message_id = Some(format!("m{i}"));
                m.body = Some(body);
                m
            })
            .collect();
        event
    }

    fn book() -> MemoryCouponBook {
        let book = MemoryCouponBook::default();
        book.known_campaigns.lock().unwrap().extend([1, 2]);
        book
    }

    fn failed_ids(r: &SqsBatchResponse) -> Vec<&str> {
        r.batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect()
    }

    #[tokio::test]
    async fn writes_in_chunks_and_is_idempotent() {
        let writer = IssueWriter::new(book(), 3);
        let bodies: Vec<String> = (0..7)
            .map(|i| serde_json::to_string(&reservation(1 + i % 2, &format!("u{i}"))).unwrap())
            .collect();
        let (response, summary) = writer.handle(event(bodies.clone())).await.unwrap();
        assert!(response.batch_item_failures.is_empty());
        assert_eq!((summary.inserted, summary.duplicates), (7, 0));
        assert_eq!(*writer.book.chunk_sizes.lock().unwrap(), [3, 3, 1]);
        let (_, again) = writer.handle(event(bodies)).await.unwrap();
        assert_eq!((again.inserted, again.duplicates), (0, 7));
        assert_eq!(writer.book.rows.lock().unwrap().len(), 7);
    }

    #[tokio::test]
    async fn duplicates_inside_one_batch_write_once() {
        let writer = IssueWriter::new(book(), 100);
        let body = serde_json::to_string(&reservation(1, "same")).unwrap();
        let (response, summary) = writer.handle(event(vec![body.clone(), body])).await.unwrap();
        assert!(response.batch_item_failures.is_empty());
        assert_eq!((summary.inserted, summary.duplicates), (1, 1));
    }

    #[tokio::test]
    async fn poison_and_failed_chunks_are_reported_by_their_message_ids() {
        // Chunks written one by one or concurrently report the same messages.
        for parallel in [1, 3] {
            let writer = IssueWriter::new(book(), 2).with_parallel_chunks(parallel);
            *writer.book.fail_chunk_with_user.lock().unwrap() = Some(UserId::parse("boom").unwrap());
            let bodies = vec![
                serde_json::to_string(&reservation(1, "a")).unwrap(),    // m0
                "{not json".to_owned(),                                  // m1
                serde_json::to_string(&reservation(9, "x")).unwrap(),    // m2: unknown campaign
                serde_json::to_string(&reservation(2, "boom")).unwrap(), // m3: its chunk fails
                serde_json::to_string(&reservation(2, "c")).unwrap(),    // m4
                serde_json::to_string(&reservation(2, "d")).unwrap(),    // m5
            ];
            let (response, summary) = writer.handle(event(bodies)).await.unwrap();
            let mut failed = failed_ids(&response);
            failed.sort_unstable();
            // Sorted by campaign: [a(1)], then chunks [a, boom] / [c, d] / [x]: the chunk with "boom" fails.
            assert_eq!(failed, ["m0", "m1", "m2", "m3"]);
            assert!(
                response
                    .batch_item_failures
                    .iter()
                    .all(|f| !f.item_identifier.is_empty())
            );
            assert_eq!((summary.malformed, summary.inserted), (1, 2));
        }
    }

    #[tokio::test]
    async fn a_record_without_id_fails_the_batch_instead_of_sending_an_empty_identifier() {
        let writer = IssueWriter::new(book(), 10);
        let mut e = event(vec!["{}".into()]);
        e.records[0].message_id = None;
        assert!(writer.handle(e).await.is_err());
    }

    #[test]
    fn chunk_size_respects_the_placeholder_limit() {
        assert_eq!(IssueWriter::new(book(), 1_000_000).chunk_size(), 65_535 / 8);
        assert_eq!(IssueWriter::new(book(), 0).chunk_size(), 1);
    }
}
