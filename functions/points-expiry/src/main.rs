use fcfs_shared::config::{Settings, aws_sdk_config, init_tracing};
use fcfs_shared::telemetry::Emf;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use points_expiry::PointsExpiry;

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let emf = Emf::init("points-expiry")?;
    let emf = &emf;
    let expiry = PointsExpiry::from_settings(&Settings::from_process(), &aws_sdk_config().await)?;
    let expiry = &expiry;
    run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        let summary = emf
            .around(&event.context.request_id, expiry.handle(event.payload))
            .await?;
        Ok::<serde_json::Value, Error>(serde_json::to_value(summary)?)
    }))
    .await
}
