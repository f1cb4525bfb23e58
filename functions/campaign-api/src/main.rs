use anyhow::Context;
use campaign_api::CampaignApi;
use fcfs_shared::config::{init_tracing, required_env};
use fcfs_shared::db::{MySqlStore, connect_from_env};
use fcfs_shared::redis_ledger::RedisIssueLedger;
use lambda_http::{Error, Request, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let pool = connect_from_env().await.context("cannot connect to MySQL")?;
    let ledger = RedisIssueLedger::connect(&required_env("REDIS_URL")?).await?;
    let api = CampaignApi::new(MySqlStore::new(pool), ledger);
    let api = &api;
    run(service_fn(move |req: Request| async move {
        Ok::<_, Error>(api.handle(req).await)
    }))
    .await
}
