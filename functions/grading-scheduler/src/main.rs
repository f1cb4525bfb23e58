use fcfs_shared::config::{Settings, aws_sdk_config, init_tracing};
use fcfs_shared::telemetry::Emf;
use grading_scheduler::GradingScheduler;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let emf = Emf::init("grading-scheduler")?;
    let emf = &emf;
    let scheduler = GradingScheduler::from_settings(&Settings::from_process(), &aws_sdk_config().await)?;
    let scheduler = &scheduler;
    run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        let started = emf
            .around(&event.context.request_id, scheduler.handle(event.payload))
            .await?;
        Ok::<serde_json::Value, Error>(serde_json::to_value(started)?)
    }))
    .await
}
