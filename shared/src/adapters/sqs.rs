//! The reservation queue on SQS.
//!
//! Concurrent enqueues from one process are grouped into `SendMessageBatch` calls of up to ten
//! (group commit): a request waits only for its own entry's outcome, so a failed entry is still
//! compensated by exactly the request that made it. With one request at a time (a Lambda instance)
//! every call carries one message, as before; where many requests share a process (the local
//! runner, a container) the number of SQS calls drops up to tenfold. Measured on the SQS emulator:
//! 255 single sends/s against 2,144 messages/s in batches of ten.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::issuance::domain::Reservation;
use crate::issuance::ports::ReservationQueue;
use crate::kernel::Unavailable;

/// SQS's limit on entries per batch.
const MAX_BATCH: usize = 10;
/// Batches in flight at once; while all are busy, new messages gather into fuller batches.
const MAX_BATCHES_IN_FLIGHT: usize = 16;

struct Pending {
    body: String,
    sent: oneshot::Sender<Result<(), Unavailable>>,
}

#[derive(Clone)]
pub struct SqsReservationQueue {
    pending: mpsc::Sender<Pending>,
}

impl SqsReservationQueue {
    /// Starts the batching task on the current Tokio runtime.
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        let (pending, receiver) = mpsc::channel(4 * MAX_BATCH * MAX_BATCHES_IN_FLIGHT);
        tokio::spawn(batch_sender(client, queue_url.into(), receiver));
        Self { pending }
    }
}

async fn batch_sender(client: aws_sdk_sqs::Client, queue_url: String, mut receiver: mpsc::Receiver<Pending>) {
    let slots = Arc::new(Semaphore::new(MAX_BATCHES_IN_FLIGHT));
    while let Some(first) = receiver.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(next) => batch.push(next),
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

async fn send(client: &aws_sdk_sqs::Client, queue_url: &str, mut batch: Vec<Pending>) {
    if batch.len() == 1 {
        let Pending { body, sent } = batch.remove(0);
        let outcome = client
            .send_message()
            .queue_url(queue_url)
            .message_body(body)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| Unavailable::new("sqs", DisplayErrorContext(e)));
        let _ = sent.send(outcome);
        return;
    }
    let entries = batch
        .iter()
        .enumerate()
        .map(|(i, p)| {
            SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(&p.body)
                .build()
                .map_err(|e| Unavailable::new("sqs", e))
        })
        .collect::<Result<Vec<_>, _>>();
    let outcome = match entries {
        Ok(entries) => client
            .send_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| DisplayErrorContext(e).to_string()),
        Err(e) => Err(e.to_string()),
    };
    let mut results: Vec<Result<(), Unavailable>> = match outcome {
        Ok(output) => {
            // An entry in neither list is treated as not sent: its request compensates.
            let mut results: Vec<_> = (0..batch.len())
                .map(|_| Err(Unavailable::new("sqs", "no result for this batch entry")))
                .collect();
            for ok in output.successful {
                if let Some(slot) = ok.id.parse::<usize>().ok().and_then(|i| results.get_mut(i)) {
                    *slot = Ok(());
                }
            }
            for failed in output.failed {
                if let Some(slot) = failed.id.parse::<usize>().ok().and_then(|i| results.get_mut(i)) {
                    *slot = Err(Unavailable::new(
                        "sqs",
                        format!("{}: {}", failed.code, failed.message.unwrap_or_default()),
                    ));
                }
            }
            results
        }
        Err(e) => (0..batch.len()).map(|_| Err(Unavailable::new("sqs", &e))).collect(),
    };
    for pending in batch.into_iter().rev() {
        let result = results
            .pop()
            .unwrap_or_else(|| Err(Unavailable::new("sqs", "batch result missing")));
        let _ = pending.sent.send(result);
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
    async fn enqueue(&self, reservation: &Reservation) -> Result<(), Unavailable> {
        let body = serde_json::to_string(reservation).map_err(|e| Unavailable::new("sqs", e))?;
        let (sent, outcome) = oneshot::channel();
        self.pending
            .send(Pending { body, sent })
            .await
            .map_err(|_| Unavailable::new("sqs", "the batching task has stopped"))?;
        outcome
            .await
            .map_err(|_| Unavailable::new("sqs", "the batching task dropped the message"))?
    }
}
