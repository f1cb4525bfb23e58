use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use fcfs_shared::config::{Settings, aws_sdk_config, init_tracing};
use fcfs_shared::telemetry::Emf;
use issue_writer::IssueWriter;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let emf = Emf::init("issue-writer")?;
    let emf = &emf;
    let writer = IssueWriter::from_settings(&Settings::from_process(), &aws_sdk_config().await).await?;
    let writer = &writer;
    run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let (response, summary) = emf
            .around(&event.context.request_id, writer.handle(event.payload))
            .await?;
        tracing::info!(?summary, "batch written");
        Ok::<SqsBatchResponse, Error>(response)
    }))
    .await
}
