//! The reservation queue on SQS.
//!
//! Concurrent enqueues from one process are grouped into one call (group commit): a request waits
//! only for its own message's outcome, so a failed message is still compensated by exactly the
//! requests it carried. With one request at a time (a Lambda instance) every call carries one
//! message of one reservation, as before. Where many requests share a process (the local runner,
//! a container), those waiting together are packed: a message body is then a JSON array of up to
//! 100 reservations, up to ten such messages per `SendMessageBatch` (the writer reads both forms).
//! That divides the messages to send, receive and delete — the cost every SQS emulator and SQS's
//! own per-request price grow with — by the pack size (issue 17: the writer's poller drained at the
//! emulator's receive rate, in messages).
//!
//! Every send is one attempt under a deadline, and its failure is classified: certainly not sent
//! (the connection was refused, the request could not be built, SQS answered an error for it) or
//! outcome unknown (a timeout, a lost or unreadable response). SDK retries are off here, because
//! a retry that fails cleanly after an attempt that timed out would hide that the first attempt
//! may have been delivered; recovery re-sends what stays pending instead.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::error::{DisplayErrorContext, SdkError};
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::issuance::domain::Reservation;
use crate::issuance::ports::{ReservationQueue, SendError};
use crate::kernel::Unavailable;

/// An SQS client that counts every request it sends, each attempt as SQS bills it, in
/// `fcfs_sqs_requests_total{operation}` (the bench's bill reads it; on Lambda it goes out as EMF).
pub fn client(sdk: &aws_config::SdkConfig) -> aws_sdk_sqs::Client {
    let config = aws_sdk_sqs::config::Builder::from(sdk)
        .interceptor(CountRequests)
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

#[derive(Debug)]
struct CountRequests;

impl aws_sdk_sqs::config::Intercept for CountRequests {
    fn name(&self) -> &'static str {
        "CountRequests"
    }

    fn read_before_transmit(
        &self,
        context: &aws_sdk_sqs::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _: &aws_sdk_sqs::config::RuntimeComponents,
        _: &mut aws_sdk_sqs::config::ConfigBag,
    ) -> Result<(), aws_sdk_sqs::error::BoxError> {
        // SQS's JSON protocol names the operation in this header (`AmazonSQS.SendMessage`).
        let operation = context
            .request()
            .headers()
            .get("x-amz-target")
            .and_then(|target| target.strip_prefix("AmazonSQS."))
            .unwrap_or("Other");
        metrics::counter!("fcfs_sqs_requests_total", "operation" => operation.to_owned()).increment(1);
        Ok(())
    }
}

/// Deadline of one send (`SQS_SEND_TIMEOUT_MS`, default 2000): connecting, sending, answering.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_millis(2000);

/// Whether a failed call may have reached SQS. Only failures that happen before a byte leaves
/// (a request that cannot be built, a refused connection) or an error answer from SQS itself are
/// "not sent"; everything else may have been delivered.
pub fn classify<E, R>(error: SdkError<E, R>) -> SendError
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let not_sent = match &error {
        SdkError::ConstructionFailure(_) | SdkError::ServiceError(_) => true,
        SdkError::DispatchFailure(failure) => failure.is_user() || refused(&error),
        _ => false,
    };
    let cause = Unavailable::new("sqs", DisplayErrorContext(error));
    if not_sent {
        SendError::NotSent(cause)
    } else {
        SendError::Unknown(cause)
    }
}

/// A refused connection anywhere in the error's chain: nothing was sent.
fn refused(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        current = e.source();
    }
    false
}

/// SQS's limit on entries per batch.
const MAX_BATCH: usize = 10;
/// Batches in flight at once; while all are busy, new messages gather into fuller batches. Few
/// enough that a burst packs (the bench's burst of 100,000 reservations went out at 16 per message
/// with 16 in flight, at 74 with 4 and every group packed), enough that a reservation waits for
/// little more than the call before it.
const MAX_BATCHES_IN_FLIGHT: usize = 4;
/// Reservations gathered into one call at most: packs of up to 100 per entry.
const MAX_GATHER: usize = 1_000;
/// Bytes of reservation bodies gathered into one call at most, below SQS's 256 KiB per message and
/// per batch (the larger 1 MiB limit of 2025 is not on every emulator), with room for the arrays'
/// brackets and commas.
const MAX_GATHER_BYTES: usize = 240 * 1024;

struct Pending {
    body: String,
    sent: oneshot::Sender<Result<(), SendError>>,
}

#[derive(Clone)]
pub struct SqsReservationQueue {
    pending: mpsc::Sender<Pending>,
    /// For the queue's counts (`in_flight`), with the sends' deadline.
    client: aws_sdk_sqs::Client,
    queue_url: String,
    dead_letter_url: Option<String>,
}

impl SqsReservationQueue {
    /// Starts the batching task on the current Tokio runtime; sends have `DEFAULT_SEND_TIMEOUT`.
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self::with_timeout(client, queue_url, DEFAULT_SEND_TIMEOUT)
    }

    /// Each send is one attempt of at most `timeout`.
    pub fn with_timeout(client: aws_sdk_sqs::Client, queue_url: impl Into<String>, timeout: Duration) -> Self {
        let config = client
            .config()
            .to_builder()
            .retry_config(aws_sdk_sqs::config::retry::RetryConfig::disabled())
            .timeout_config(
                aws_sdk_sqs::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(timeout.min(Duration::from_secs(1)))
                    .operation_timeout(timeout)
                    .build(),
            )
            .build();
        let client = aws_sdk_sqs::Client::from_conf(config);
        let queue_url = queue_url.into();
        // Room for a full gather, so a burst packs instead of waiting at the channel.
        let (pending, receiver) = mpsc::channel(MAX_GATHER);
        tokio::spawn(batch_sender(client.clone(), queue_url.clone(), receiver));
        Self {
            pending,
            client,
            queue_url,
            dead_letter_url: None,
        }
    }

    /// The queue's dead-letter queue, whose messages count as on their way too (`in_flight`).
    pub fn with_dead_letter_queue(mut self, url: impl Into<String>) -> Self {
        self.dead_letter_url = Some(url.into());
        self
    }
}

/// Messages in the queue at `url`: visible, in flight (received, not deleted) and delayed, by
/// SQS's approximate counts.
pub async fn messages_in(client: &aws_sdk_sqs::Client, url: &str) -> Result<u64, Unavailable> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let counts = [
        A::ApproximateNumberOfMessages,
        A::ApproximateNumberOfMessagesNotVisible,
        A::ApproximateNumberOfMessagesDelayed,
    ];
    let attributes = client
        .get_queue_attributes()
        .queue_url(url)
        .set_attribute_names(Some(counts.to_vec()))
        .send()
        .await
        .map_err(|e| Unavailable::new("sqs", DisplayErrorContext(e).to_string()))?
        .attributes
        .unwrap_or_default();
    Ok(counts
        .iter()
        .filter_map(|a| attributes.get(a)?.parse::<u64>().ok())
        .sum())
}

async fn batch_sender(client: aws_sdk_sqs::Client, queue_url: String, mut receiver: mpsc::Receiver<Pending>) {
    let slots = Arc::new(Semaphore::new(MAX_BATCHES_IN_FLIGHT));
    // A message that would have made the previous call too large starts the next one.
    let mut carried: Option<Pending> = None;
    loop {
        let first = match carried.take() {
            Some(first) => first,
            None => match receiver.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = first.body.len();
        let mut batch = vec![first];
        while batch.len() < MAX_GATHER {
            match receiver.try_recv() {
                Ok(next) if bytes + next.body.len() + 1 > MAX_GATHER_BYTES => {
                    carried = Some(next);
                    break;
                }
                Ok(next) => {
                    bytes += next.body.len() + 1;
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let (client, queue_url) = (client.clone(), queue_url.clone());
        tokio::spawn(async move {
            send(&client, &queue_url, batch).await;
            drop(slot);
        });
    }
}

/// Reservations per packed message at most (about 30 KiB of bodies).
const PACK: usize = 100;

/// The batch's entries: a lone reservation as itself (what a Lambda instance, one request at a
/// time, always sends), else packs of at most [`PACK`], each a JSON array, at most ten entries.
/// Returns each entry's body and how many of the batch (in order) it carries.
fn entries_of(batch: &[Pending]) -> Vec<(String, usize)> {
    if let [one] = batch {
        return vec![(one.body.clone(), 1)];
    }
    let entries = batch.len().div_ceil(PACK).min(MAX_BATCH);
    let per_entry = batch.len().div_ceil(entries);
    batch
        .chunks(per_entry)
        .map(|pack| {
            let mut body = String::with_capacity(pack.iter().map(|p| p.body.len() + 1).sum::<usize>() + 1);
            body.push('[');
            for (i, p) in pack.iter().enumerate() {
                if i > 0 {
                    body.push(',');
                }
                body.push_str(&p.body);
            }
            body.push(']');
            (body, pack.len())
        })
        .collect()
}

async fn send(client: &aws_sdk_sqs::Client, queue_url: &str, mut batch: Vec<Pending>) {
    // `entries_of` alone decides what a message body is, the lone reservation's included.
    let mut entries = entries_of(&batch);
    if batch.len() == 1 {
        let (body, _) = entries.remove(0);
        let Pending { sent, .. } = batch.remove(0);
        let outcome = client
            .send_message()
            .queue_url(queue_url)
            .message_body(body)
            .send()
            .await
            .map(|_| ())
            .map_err(classify);
        let _ = sent.send(outcome);
        return;
    }
    let sizes: Vec<usize> = entries.iter().map(|(_, n)| *n).collect();
    let entries = entries
        .into_iter()
        .enumerate()
        .map(|(i, (body, _))| {
            SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(body)
                .build()
                .map_err(|e| SendError::NotSent(Unavailable::new("sqs", e)))
        })
        .collect::<Result<Vec<_>, _>>();
    let outcome = match entries {
        Ok(entries) => client
            .send_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(classify),
        Err(e) => Err(e),
    };
    let results: Vec<Result<(), SendError>> = match outcome {
        Ok(output) => {
            // An entry in neither list may or may not be on the queue.
            let mut results: Vec<_> = (0..sizes.len())
                .map(|_| {
                    Err(SendError::Unknown(Unavailable::new(
                        "sqs",
                        "no result for this batch entry",
                    )))
                })
                .collect();
            for ok in output.successful {
                if let Some(slot) = ok.id.parse::<usize>().ok().and_then(|i| results.get_mut(i)) {
                    *slot = Ok(());
                }
            }
            for failed in output.failed {
                if let Some(slot) = failed.id.parse::<usize>().ok().and_then(|i| results.get_mut(i)) {
                    *slot = Err(SendError::NotSent(Unavailable::new(
                        "sqs",
                        format!("{}: {}", failed.code, failed.message.unwrap_or_default()),
                    )));
                }
            }
            results
        }
        Err(e) => (0..sizes.len()).map(|_| Err(e.clone())).collect(),
    };
    // Every reservation of an entry shares the entry's outcome, in the order they were packed.
    let mut pending = batch.drain(..);
    for (result, size) in results.into_iter().zip(sizes) {
        for p in pending.by_ref().take(size) {
            let _ = p.sent.send(result.clone());
        }
    }
}

/// The ARN of the queue at `queue_url` (a redrive policy and an event source name queues by ARN).
pub async fn queue_arn(client: &aws_sdk_sqs::Client, queue_url: &str) -> Result<String, Unavailable> {
    use aws_sdk_sqs::types::QueueAttributeName;
    client
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| Unavailable::new("sqs", DisplayErrorContext(e)))?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or_else(|| Unavailable::new("sqs", format!("queue {queue_url} reported no ARN")))
}

#[async_trait]
impl ReservationQueue for SqsReservationQueue {
    async fn enqueue(&self, reservation: &Reservation) -> Result<(), SendError> {
        let not_sent = |detail: &str| SendError::NotSent(Unavailable::new("sqs", detail));
        let body = serde_json::to_string(reservation).map_err(|e| not_sent(&e.to_string()))?;
        let (sent, outcome) = oneshot::channel();
        self.pending
            .send(Pending { body, sent })
            .await
            .map_err(|_| not_sent("the batching task has stopped"))?;
        // A dropped answer means the task died with the message in hand: it may have been sent.
        outcome
            .await
            .map_err(|_| SendError::Unknown(Unavailable::new("sqs", "the batching task dropped the message")))?
    }

    async fn in_flight(&self) -> Result<u64, Unavailable> {
        let mut total = messages_in(&self.client, &self.queue_url).await?;
        if let Some(dlq) = &self.dead_letter_url {
            total += messages_in(&self.client, dlq).await?;
        }
        Ok(total)
    }
}

/// The grading queue: one message per partition of a run, sent ten per `SendMessageBatch`, every
/// batch at once, each call within `timeout`. Any entry not sent fails the whole call: the run
/// stays undispatched and the next request for its month sends again (workers skip done steps).
#[derive(Clone)]
pub struct SqsPartitionQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    timeout: Duration,
}

impl SqsPartitionQueue {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
            timeout: DEFAULT_SEND_TIMEOUT,
        }
    }
}

#[async_trait]
impl crate::grading::ports::PartitionQueue for SqsPartitionQueue {
    async fn send_partitions(&self, tasks: &[crate::grading::domain::PartitionTask]) -> Result<(), Unavailable> {
        let calls = tasks.chunks(MAX_BATCH).map(|group| async move {
            let entries = group
                .iter()
                .enumerate()
                .map(|(i, task)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(serde_json::to_string(task).unwrap_or_default())
                        .build()
                        .map_err(|e| Unavailable::new("sqs", e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let call = self
                .client
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send();
            let output = tokio::time::timeout(self.timeout, call)
                .await
                .map_err(|_| Unavailable::new("sqs", format!("no answer within {:?}", self.timeout)))?
                .map_err(|e| Unavailable::new("sqs", DisplayErrorContext(e)))?;
            match output.failed.first() {
                Some(failed) => Err(Unavailable::new(
                    "sqs",
                    format!("{}: {}", failed.code, failed.message.clone().unwrap_or_default()),
                )),
                None => Ok(()),
            }
        });
        futures_util::future::join_all(calls).await.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(n: usize) -> Vec<Pending> {
        (0..n)
            .map(|i| Pending {
                body: format!("{{\"n\":{i}}}"),
                sent: oneshot::channel().0,
            })
            .collect()
    }

    #[test]
    fn a_lone_reservation_is_sent_as_itself() {
        let entries = entries_of(&pending(1));
        assert_eq!(entries, [("{\"n\":0}".to_owned(), 1)]);
    }

    #[test]
    fn waiting_reservations_are_packed_into_at_most_ten_arrays_in_order() {
        for n in [2, 11, 100, 101, 1_000] {
            let entries = entries_of(&pending(n));
            assert!(entries.len() <= MAX_BATCH, "{n}: {} entries", entries.len());
            assert_eq!(entries.len(), n.div_ceil(PACK), "{n}");
            assert_eq!(entries.iter().map(|(_, size)| size).sum::<usize>(), n);
            let all: Vec<u64> = entries
                .iter()
                .flat_map(|(body, size)| {
                    let pack: Vec<serde_json::Value> = serde_json::from_str(body).expect("a JSON array");
                    assert_eq!(pack.len(), *size);
                    pack.into_iter().map(|v| v["n"].as_u64().unwrap())
                })
                .collect();
            assert_eq!(all, (0..n as u64).collect::<Vec<_>>());
        }
    }
}
