//! An SQS delivery of partition messages mapped to the grading context's `grade_partition`, one
//! after the other; a message that failed is reported in `batchItemFailures` and comes back after
//! the visibility timeout (past `maxReceiveCount`, the grading DLQ). A malformed message is
//! reported too: it can never succeed, and the DLQ alert says so.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use fcfs_shared::adapters::mysql::MySqlStore;
use fcfs_shared::adapters::sqs::SqsPartitionQueue;
use fcfs_shared::config::{Settings, StartupError};
use fcfs_shared::grading::GradingService;
use fcfs_shared::grading::domain::PartitionTask;
use fcfs_shared::grading::ports::{GradingRecords, PartitionQueue};

pub struct GradingWorker<R, Q> {
    grading: GradingService<R, Q>,
}

impl GradingWorker<MySqlStore, SqsPartitionQueue> {
    pub fn from_settings(settings: &Settings, sdk: &aws_config::SdkConfig) -> Result<Self, StartupError> {
        // The worker sends nothing: the queue is the port's other half, pointed at its own queue.
        Ok(Self::new(fcfs_shared::adapters::grading_service_from(settings, sdk)?))
    }
}

impl<R: GradingRecords, Q: PartitionQueue> GradingWorker<R, Q> {
    pub fn new(grading: GradingService<R, Q>) -> Self {
        Self { grading }
    }

    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        let mut response = SqsBatchResponse::default();
        for record in event.records {
            let id = record.message_id.clone().unwrap_or_default();
            let task = record
                .body
                .as_deref()
                .and_then(|body| serde_json::from_str::<PartitionTask>(body).ok());
            let outcome = match task {
                None => Err("not a partition message".to_owned()),
                Some(task) => match self.grading.grade_partition(task).await {
                    Ok(summary) => {
                        tracing::info!(
                            run = task.run_id,
                            partition = task.partition,
                            ?summary,
                            "partition graded"
                        );
                        Ok(())
                    }
                    Err(e) => Err(e.to_string()),
                },
            };
            if let Err(error) = outcome {
                tracing::error!(message = id, %error, "partition not graded: the message comes back");
                // An empty identifier would fail the whole batch: such a record is skipped.
                if !id.is_empty() {
                    let mut failure = BatchItemFailure::default();
                    failure.item_identifier = id;
                    response.batch_item_failures.push(failure);
                }
            }
        }
        response
    }
}
