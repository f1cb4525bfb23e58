//! The reservation queue on SQS.

use async_trait::async_trait;

use crate::domain::Reservation;
use crate::ports::{ReservationQueue, Unavailable};

#[derive(Clone)]
pub struct SqsReservationQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsReservationQueue {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }
}

#[async_trait]
impl ReservationQueue for SqsReservationQueue {
    async fn enqueue(&self, reservation: &Reservation) -> Result<(), Unavailable> {
        let body = serde_json::to_string(reservation).map_err(|e| Unavailable::new("sqs", e))?;
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .send()
            .await
            .map_err(|e| Unavailable::new("sqs", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        Ok(())
    }
}
