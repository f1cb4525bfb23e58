use anyhow::Context;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use fcfs_shared::config::{env_or, init_tracing};
use fcfs_shared::db::{MySqlStore, connect_from_env};
use issue_writer::{DEFAULT_CHUNK_SIZE, IssueWriter};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let pool = connect_from_env().await.context("cannot connect to MySQL")?;
    let writer = IssueWriter::new(MySqlStore::new(pool), env_or("WRITER_CHUNK_SIZE", DEFAULT_CHUNK_SIZE)?);
    let writer = &writer;
    run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let (response, summary) = writer.handle(event.payload).await?;
        tracing::info!(?summary, "batch written");
        Ok::<SqsBatchResponse, Error>(response)
    }))
    .await
}
