//! An SQS event source mapping: long-poll, gather a batch (up to `BatchSize`, at most
//! `MaximumBatchingWindowInSeconds` after its first message, and, as Lambda, no more than an
//! invocation's 6 MB payload), invoke, delete what succeeded.
//! Messages reported in `batchItemFailures`, and every message of a failed invocation, are left
//! on the queue: they return after the visibility timeout and, past `maxReceiveCount`, the queue's
//! redrive policy moves them to the DLQ.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName};
use tokio::sync::watch;

use crate::functions::SqsFunction;
use crate::{EventSource, Stats};

/// Long polls stay short so a shutdown is noticed within this time; a receive is never abandoned
/// midway, since messages it took would stay invisible until their visibility timeout.
const POLL_WAIT_SECS: i32 = 2;
const SQS_MAX_RECEIVE: usize = 10;
/// Lambda invokes a batch once its payload reaches 6 MB, before `BatchSize` or the window. A
/// message's share of the event is its body plus about this much (ids, receipt handle, digests,
/// attributes, ARN): the cap stops gathering a little early rather than late.
const LAMBDA_PAYLOAD_LIMIT: usize = 6 * 1024 * 1024;
const EVENT_BYTES_PER_MESSAGE: usize = 1_024;
/// Gathering stops past this mark: one more receive (ten messages of at most 256 KiB each) still
/// stays within the limit.
const PAYLOAD_MARK: usize = LAMBDA_PAYLOAD_LIMIT - SQS_MAX_RECEIVE * (256 * 1024 + EVENT_BYTES_PER_MESSAGE);

pub(crate) struct Poller {
    pub function: Arc<dyn SqsFunction>,
    pub sqs: aws_sdk_sqs::Client,
    pub source: EventSource,
    pub region: String,
    pub stats: Arc<Stats>,
    pub worker: usize,
}

pub(crate) async fn run(poller: Poller, stop: watch::Receiver<bool>) {
    tracing::info!(
        function = poller.source.function,
        queue = poller.source.queue_url,
        worker = poller.worker,
        batch_size = poller.source.batch_size,
        "polling"
    );
    while !*stop.borrow() {
        let batch = poller.gather(&stop).await;
        if !batch.is_empty() {
            poller.process(batch).await;
        }
    }
}

impl Poller {
    async fn gather(&self, stop: &watch::Receiver<bool>) -> Vec<Message> {
        let mut batch: Vec<Message> = Vec::new();
        let mut payload = 0;
        let mut window_ends: Option<Instant> = None;
        while !*stop.borrow() && batch.len() < self.source.batch_size && payload < PAYLOAD_MARK {
            let wait = match window_ends {
                None => POLL_WAIT_SECS,
                Some(end) => end.saturating_duration_since(Instant::now()).as_secs() as i32,
            };
            let want = (self.source.batch_size - batch.len()).min(SQS_MAX_RECEIVE);
            let received = self
                .sqs
                .receive_message()
                .queue_url(&self.source.queue_url)
                .max_number_of_messages(want as i32)
                .wait_time_seconds(wait)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await;
            let got = match received {
                Ok(out) => out.messages.unwrap_or_default(),
                Err(e) => {
                    tracing::warn!(queue = self.source.queue_url, error = %DisplayErrorContext(e), "receive failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if batch.is_empty() {
                        continue;
                    }
                    break;
                }
            };
            let got_count = got.len();
            if batch.is_empty() {
                // The first receive of a batch: on a backlog, the head of the queue.
                crate::metrics::record_oldest_age(crate::queue_name(&self.source.queue_url), &got);
            }
            payload += got
                .iter()
                .map(|m| m.body.as_deref().map_or(0, str::len) + EVENT_BYTES_PER_MESSAGE)
                .sum::<usize>();
            batch.extend(got);
            if batch.is_empty() {
                continue;
            }
            let end = *window_ends.get_or_insert_with(|| Instant::now() + self.source.batching_window);
            let now = Instant::now();
            if now >= end {
                break;
            }
            if got_count < want && wait == 0 {
                // The queue gave what it had: let more arrive rather than poll it for each message
                // (a flash sale's trickle made five pollers call the emulator thousands of times a
                // second for one message each, as much CPU as the requests themselves).
                tokio::time::sleep((end - now).min(Duration::from_millis(50))).await;
            }
        }
        batch
    }

    fn event(&self, batch: &[Message]) -> SqsEvent {
        let records = batch
            .iter()
            .map(|m| {
                let mut record = SqsMessage::default();
                record.message_id = m.message_id.clone();
                record.receipt_handle = m.receipt_handle.clone();
                record.body = m.body.clone();
                record.md5_of_body = m.md5_of_body.clone();
                record.attributes = m
                    .attributes
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.as_str().to_owned(), v.clone()))
                    .collect();
                record.event_source = Some("aws:sqs".to_owned());
                record.event_source_arn = Some(self.source.queue_arn.clone());
                record.aws_region = Some(self.region.clone());
                record
            })
            .collect();
        let mut event = SqsEvent::default();
        event.records = records;
        event
    }

    async fn process(&self, batch: Vec<Message>) {
        let started = Instant::now();
        let outcome = self.function.invoke(self.event(&batch)).await;
        crate::metrics::function_invoked(&self.source.function, started.elapsed());
        let ids: HashSet<&str> = batch.iter().filter_map(|m| m.message_id.as_deref()).collect();
        let keep: Option<HashSet<String>> = match outcome {
            Err(error) => {
                crate::metrics::function_failed(&self.source.function);
                tracing::error!(function = self.source.function, size = batch.len(), %error, "batch failed: every message stays");
                None
            }
            Ok(_) if !self.source.report_batch_item_failures => Some(HashSet::new()),
            Ok(response) => {
                let failed: HashSet<String> = response
                    .batch_item_failures
                    .into_iter()
                    .map(|f| f.item_identifier)
                    .collect();
                // As Lambda: an empty or unknown identifier fails the whole batch.
                if failed.iter().any(|id| !ids.contains(id.as_str())) {
                    tracing::error!(
                        function = self.source.function,
                        "batchItemFailures names a message not in the batch: every message stays"
                    );
                    None
                } else {
                    Some(failed)
                }
            }
        };
        let Some(keep) = keep else { return };
        let done: Vec<&Message> = batch
            .iter()
            .filter(|m| !m.message_id.as_deref().is_some_and(|id| keep.contains(id)))
            .collect();
        let deleted = self.delete(&done).await;
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats.messages_deleted.fetch_add(deleted as u64, Ordering::Relaxed);
        tracing::info!(
            function = self.source.function,
            worker = self.worker,
            size = batch.len(),
            failed = keep.len(),
            deleted,
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            "batch"
        );
    }

    /// Deletes in groups of ten, a few groups at a time; returns how many were deleted.
    async fn delete(&self, messages: &[&Message]) -> usize {
        let mut deleted = 0;
        for wave in messages.chunks(SQS_MAX_RECEIVE * 8) {
            let calls = wave.chunks(SQS_MAX_RECEIVE).map(|group| {
                let entries: Vec<DeleteMessageBatchRequestEntry> = group
                    .iter()
                    .enumerate()
                    .filter_map(|(i, m)| {
                        DeleteMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(m.receipt_handle.clone()?)
                            .build()
                            .ok()
                    })
                    .collect();
                self.sqs
                    .delete_message_batch()
                    .queue_url(&self.source.queue_url)
                    .set_entries(Some(entries))
                    .send()
            });
            for result in futures_util::future::join_all(calls).await {
                match result {
                    Ok(out) => {
                        deleted += out.successful.len();
                        for failed in out.failed {
                            tracing::warn!(code = failed.code, "delete failed: the message will be delivered again");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %DisplayErrorContext(e), "delete failed: the messages will be delivered again")
                    }
                }
            }
        }
        deleted
    }
}
