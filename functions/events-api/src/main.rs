use events_api::EventsApi;
use fcfs_shared::config::{Settings, aws_sdk_config, init_tracing};
use fcfs_shared::telemetry::Emf;
use lambda_http::{Error, Request, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let emf = Emf::init("events-api")?;
    let emf = &emf;
    let api = EventsApi::from_settings(&Settings::from_process(), &aws_sdk_config().await)?;
    let api = &api;
    run(service_fn(move |req: Request| async move {
        Ok::<_, Error>(emf.around_http(req, |req| api.handle(req)).await)
    }))
    .await
}
