use alert_notifier::AlertNotifierFunction;
use aws_lambda_events::sns::SnsEvent;
use fcfs_shared::config::{Settings, aws_sdk_config, init_tracing};
use fcfs_shared::telemetry::Emf;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let emf = Emf::init("alert-notifier")?;
    let emf = &emf;
    let notifier = AlertNotifierFunction::from_settings(&Settings::from_process(), &aws_sdk_config().await)?;
    let notifier = &notifier;
    run(service_fn(move |event: LambdaEvent<SnsEvent>| async move {
        emf.around(&event.context.request_id, notifier.handle(event.payload))
            .await?;
        Ok::<(), Error>(())
    }))
    .await
}
