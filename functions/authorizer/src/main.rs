use aws_lambda_events::apigw::ApiGatewayCustomAuthorizerRequestTypeRequest;
use fcfs_shared::config::{Settings, aws_sdk_config, init_tracing};
use fcfs_shared::telemetry::Emf;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let emf = Emf::init("authorizer")?;
    let emf = &emf;
    let auth = authorizer::from_settings(&Settings::from_process(), &aws_sdk_config().await)?;
    let auth = &auth;
    run(service_fn(
        move |event: LambdaEvent<ApiGatewayCustomAuthorizerRequestTypeRequest>| async move {
            emf.around(&event.context.request_id, authorizer::handle(auth, event.payload))
                .await
        },
    ))
    .await
}
