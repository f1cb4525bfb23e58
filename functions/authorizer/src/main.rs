use authorizer::{CacheSettings, KeyAuthorizer};
use aws_lambda_events::apigw::ApiGatewayCustomAuthorizerRequestTypeRequest;
use fcfs_shared::config::{aws_sdk_config, init_tracing, required_env};
use fcfs_shared::dynamo_keys::DynamoApiKeys;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let sdk = aws_sdk_config().await;
    let keys = DynamoApiKeys::new(aws_sdk_dynamodb::Client::new(&sdk), required_env("API_KEYS_TABLE")?);
    let authorizer = KeyAuthorizer::new(keys, CacheSettings::from_env()?);
    let authorizer = &authorizer;
    run(service_fn(
        move |event: LambdaEvent<ApiGatewayCustomAuthorizerRequestTypeRequest>| async move {
            authorizer.handle(event.payload).await
        },
    ))
    .await
}
