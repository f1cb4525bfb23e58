use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use fcfs_shared::config::{Settings, aws_sdk_config, init_tracing};
use fcfs_shared::telemetry::Emf;
use grading_worker::GradingWorker;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let emf = Emf::init("grading-worker")?;
    let emf = &emf;
    let worker = GradingWorker::from_settings(&Settings::from_process(), &aws_sdk_config().await)?;
    let worker = &worker;
    run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<SqsBatchResponse, Error>(
            emf.around(&event.context.request_id, worker.handle(event.payload))
                .await,
        )
    }))
    .await
}
