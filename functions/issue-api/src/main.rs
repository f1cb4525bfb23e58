use anyhow::Context;
use fcfs_shared::config::{aws_sdk_config, init_tracing, required_env};
use fcfs_shared::db::{MySqlStore, connect_from_env};
use fcfs_shared::redis_ledger::RedisIssueLedger;
use fcfs_shared::sqs_queue::SqsReservationQueue;
use issue_api::IssueApi;
use lambda_http::{Error, Request, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let sdk = aws_sdk_config().await;
    let pool = connect_from_env().await.context("cannot connect to MySQL")?;
    let ledger = RedisIssueLedger::connect(&required_env("REDIS_URL")?).await?;
    let queue = SqsReservationQueue::new(aws_sdk_sqs::Client::new(&sdk), required_env("ISSUE_QUEUE_URL")?);
    let api = IssueApi::new(MySqlStore::new(pool), ledger, queue);
    let api = &api;
    run(service_fn(move |req: Request| async move {
        Ok::<_, Error>(api.handle(req).await)
    }))
    .await
}
