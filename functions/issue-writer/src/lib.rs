//! The SQS batch writer: an SQS event mapped to the issuance context's `ReservationWriter`, and
//! the messages it could not record mapped back to a partial batch response.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use fcfs_shared::adapters::mysql::{self, MySqlStore};
use fcfs_shared::adapters::redis::RedisIssueLedger;
use fcfs_shared::config::{Settings, StartupError};
use fcfs_shared::issuance::ports::{CouponBook, IssueLedger};
use fcfs_shared::issuance::{BatchSummary, IssuanceError, Message, ReservationWriter};

pub use fcfs_shared::issuance::writer::{DEFAULT_CHUNK_SIZE, DEFAULT_PARALLEL_CHUNKS};

pub struct IssueWriter<B, L> {
    writer: ReservationWriter<B, L>,
}

impl IssueWriter<MySqlStore, RedisIssueLedger> {
    /// The deployed function: MySQL at `DATABASE_URL` (each chunk's transaction under
    /// `MYSQL_TIMEOUT_MS`), chunks of `WRITER_CHUNK_SIZE`, up to `WRITER_PARALLEL_CHUNKS` of them at
    /// once (each on its own connection of the pool); outcomes told to Redis at `REDIS_URL`.
    pub async fn from_settings(settings: &Settings, sdk: &aws_config::SdkConfig) -> Result<Self, StartupError> {
        Ok(Self::new(
            mysql::store_from(settings, sdk)?,
            RedisIssueLedger::from_settings(settings)?,
            settings.or("WRITER_CHUNK_SIZE", DEFAULT_CHUNK_SIZE)?,
        )
        .with_parallel_chunks(settings.or("WRITER_PARALLEL_CHUNKS", DEFAULT_PARALLEL_CHUNKS)?))
    }
}

impl<B: CouponBook, L: IssueLedger> IssueWriter<B, L> {
    /// `chunk_size` is clamped to what one chunk may carry.
    pub fn new(book: B, ledger: L, chunk_size: usize) -> Self {
        Self {
            writer: ReservationWriter::new(book, ledger, chunk_size),
        }
    }

    /// Chunks written concurrently (see `ReservationWriter::with_parallel_chunks`).
    pub fn with_parallel_chunks(self, parallel_chunks: usize) -> Self {
        Self {
            writer: self.writer.with_parallel_chunks(parallel_chunks),
        }
    }

    pub async fn handle(&self, event: SqsEvent) -> Result<(SqsBatchResponse, BatchSummary), IssuanceError> {
        let messages = event
            .records
            .into_iter()
            .map(|record| Message {
                id: record.message_id,
                body: record.body,
            })
            .collect();
        let written = self.writer.record(messages).await?;
        let mut response = SqsBatchResponse::default();
        response.batch_item_failures = written
            .failed
            .into_iter()
            .map(|id| {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                failure
            })
            .collect();
        Ok((response, written.summary))
    }
}

#[cfg(test)]
mod tests {
    use aws_lambda_events::event::sqs::SqsMessage;
    use fcfs_shared::testkit::{MemoryCouponBook, MemoryLedger};

    use super::*;

    fn message(id: Option<&str>, body: &str) -> SqsMessage {
        let mut m = SqsMessage::default();
        m.message_id = id.map(str::to_owned);
        m.body = Some(body.to_owned());
        m
    }

    #[tokio::test]
    async fn unrecorded_messages_become_batch_item_failures_by_message_id() {
        let writer = IssueWriter::new(MemoryCouponBook::default(), MemoryLedger::default(), 10);
        let mut event = SqsEvent::default();
        event.records = vec![message(Some("poison"), "{not json")];
        let (response, summary) = writer.handle(event).await.unwrap();
        let ids: Vec<_> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!((ids, summary.malformed), (vec!["poison"], 1));
    }

    #[tokio::test]
    async fn a_record_without_id_fails_the_whole_batch() {
        let writer = IssueWriter::new(MemoryCouponBook::default(), MemoryLedger::default(), 10);
        let mut event = SqsEvent::default();
        event.records = vec![message(None, "{}")];
        assert!(writer.handle(event).await.is_err());
    }
}
