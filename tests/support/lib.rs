//! Helpers for integration tests. They talk to real services over real connections; the endpoints
//! come from the environment that `make test` writes to `.local/env`. A missing service or variable
//! fails a test, never skips it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use fcfs_shared::adapters::redis::{RedisIssueLedger, RedisSettings};
use fcfs_template::{Placement, Template};

pub mod services;
pub mod webhook_receiver;

pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests through `make test` (or source .local/env after `make up`)")
    })
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn stage() -> String {
    std::env::var("FCFS_STAGE").unwrap_or_else(|_| "local".into())
}

/// The template with the stage the local stack was provisioned for.
pub fn template() -> Template {
    let overrides = BTreeMap::from([("Stage".to_owned(), stage())]);
    Template::load(
        &repo_root().join("template.yaml"),
        &overrides,
        Placement::local(&sqs_endpoint(), &env("AWS_REGION")),
    )
    .expect("template.yaml loads")
}

/// Where SQS is: its own emulator (`AWS_ENDPOINT_URL_SQS`, FCFS_AWS=fauxqs) or LocalStack.
pub fn sqs_endpoint() -> String {
    env("AWS_ENDPOINT_URL");
    fcfs_shared::config::local_sqs_endpoint(|name| std::env::var(name).ok()).expect("AWS_ENDPOINT_URL is set")
}

pub async fn sqs() -> aws_sdk_sqs::Client {
    env("AWS_ENDPOINT_URL");
    aws_sdk_sqs::Client::new(&fcfs_shared::config::aws_sdk_config().await)
}

pub async fn dynamodb() -> aws_sdk_dynamodb::Client {
    env("AWS_ENDPOINT_URL");
    aws_sdk_dynamodb::Client::new(&fcfs_shared::config::aws_sdk_config().await)
}

/// A fresh API key for `partner`, straight into the shared key table (`API_KEYS_TABLE`).
pub async fn api_key(partner: &str) -> String {
    let keys = fcfs_shared::adapters::dynamodb::DynamoApiKeys::new(dynamodb().await, env("API_KEYS_TABLE"));
    let (secret, _) = fcfs_shared::keys::create_key(&keys, partner, None, chrono::Utc::now())
        .await
        .expect("a key in the emulator's table");
    secret.expose().to_owned()
}

pub async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(env("REDIS_URL"))
        .expect("REDIS_URL is a redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("Redis answers at REDIS_URL")
}

/// The local Redis deployments the ledger is proven on, all started by `scripts/stack.sh services`:
/// the server the functions use (`REDIS_URL`), a 3-master Redis Cluster (`REDIS_CLUSTER_URL`,
/// as ElastiCache cluster mode), a server that speaks only TLS (`REDIS_TLS_URL`, its private
/// CA in `REDIS_TLS_CA_FILE`) and a 3-master cluster that speaks only TLS and announces its nodes
/// by hostname (`REDIS_TLS_CLUSTER_URL`, the same CA), as ElastiCache Serverless serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisDeployment {
    Single,
    Cluster,
    Tls,
    TlsCluster,
}

impl RedisDeployment {
    pub fn url(self) -> String {
        env(match self {
            Self::Single => "REDIS_URL",
            Self::Cluster => "REDIS_CLUSTER_URL",
            Self::Tls => "REDIS_TLS_URL",
            Self::TlsCluster => "REDIS_TLS_CLUSTER_URL",
        })
    }

    pub fn is_cluster(self) -> bool {
        matches!(self, Self::Cluster | Self::TlsCluster)
    }

    pub fn is_tls(self) -> bool {
        matches!(self, Self::Tls | Self::TlsCluster)
    }

    /// The private CA the TLS deployments' certificates chain to (`REDIS_TLS_CA_FILE`).
    pub fn tls_certificates() -> redis::TlsCertificates {
        fcfs_shared::adapters::redis::install_crypto_provider();
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(std::fs::read(env("REDIS_TLS_CA_FILE")).expect("REDIS_TLS_CA_FILE is readable")),
        }
    }

    /// The settings a function would be deployed with for this Redis.
    pub fn settings(self, response_timeout: std::time::Duration) -> RedisSettings {
        RedisSettings {
            response_timeout,
            cluster: self.is_cluster(),
            tls_ca_file: self.is_tls().then(|| env("REDIS_TLS_CA_FILE").into()),
            ..RedisSettings::default()
        }
    }

    /// One command on a connection of its own (test set-up and clean-up; the code under test
    /// goes through the ledger).
    pub async fn run(self, cmd: &redis::Cmd) -> redis::Value {
        let url = self.url();
        let answer: redis::RedisResult<redis::Value> = async {
            match self {
                Self::Single => {
                    let mut conn = redis::Client::open(url.as_str())?
                        .get_multiplexed_async_connection()
                        .await?;
                    cmd.query_async(&mut conn).await
                }
                Self::Tls => {
                    let client = redis::Client::build_with_tls(url.as_str(), Self::tls_certificates())?;
                    cmd.query_async(&mut client.get_multiplexed_async_connection().await?)
                        .await
                }
                Self::Cluster => {
                    let client = redis::cluster::ClusterClient::new([url.as_str()])?;
                    cmd.query_async(&mut client.get_async_connection().await?).await
                }
                Self::TlsCluster => {
                    let client = redis::cluster::ClusterClientBuilder::new([url.as_str()])
                        .certs(Self::tls_certificates())
                        .build()?;
                    cmd.query_async(&mut client.get_async_connection().await?).await
                }
            }
        }
        .await;
        answer.unwrap_or_else(|e| panic!("the {self:?} Redis at {url} answers: {e}"))
    }

    pub fn ledger(self, response_timeout: std::time::Duration) -> RedisIssueLedger {
        RedisIssueLedger::with_settings(&self.url(), self.settings(response_timeout))
            .unwrap_or_else(|e| panic!("a ledger for the {self:?} Redis at {}: {e}", self.url()))
    }
}

/// InnoDB's deadlock count since the server started (server-wide): read it before and after.
pub async fn innodb_deadlocks(pool: &sqlx::MySqlPool) -> u64 {
    let (_, value): (String, String) = sqlx::query_as("SHOW GLOBAL STATUS LIKE 'Innodb_deadlocks'")
        .fetch_one(pool)
        .await
        .expect("InnoDB's status");
    value.parse().expect("a count")
}

/// Runs the events' sequencer until no committed event waits (at most 30 s), as the relay would:
/// the outbox's packed rows (a chunk's many events) become one row per event. For a test reading
/// `partner_events` by SQL.
pub async fn sequence_events(pool: &sqlx::MySqlPool) {
    use fcfs_shared::events::ports::EventLog;
    let log = fcfs_shared::adapters::mysql::MySqlStore::new(pool.clone());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while log.sequence(1_000).await.expect("the sequencer") > 0 {
        assert!(std::time::Instant::now() < deadline, "events still waiting after 30 s");
    }
}

/// The runner serving template.yaml in-process, its functions' pools `DB_MAX_CONNECTIONS` large:
/// it stands for many instances of a database-backed API at once.
pub async fn runner_with_db_connections(connections: u32) -> local_runner::Running {
    serve(runner_config(&[("DB_MAX_CONNECTIONS", connections.to_string())])).await
}

/// The runner's configuration as the tests start it: template.yaml, this process's environment
/// with `env` over it, unthrottled (the tests send more than one partner may on AWS).
pub fn runner_config(env: &[(&str, String)]) -> local_runner::RunnerConfig {
    let mut config = local_runner::RunnerConfig::from_process(repo_root().join("template.yaml")).unthrottled();
    for (name, value) in env {
        config.env.insert((*name).to_owned(), value.clone());
    }
    config
}

/// The runner serving `config` in-process.
pub async fn serve(config: local_runner::RunnerConfig) -> local_runner::Running {
    local_runner::LocalApp::load(&config)
        .await
        .expect("the runner loads")
        .start()
        .await
        .expect("the runner serves")
}

/// What a test that drives the API over HTTP stands on: a partner of its own with its API key, the
/// runner serving template.yaml in-process (`runner_with_db_connections`), a client, and a pool
/// on the same database for fixtures and checks.
pub struct PartnerApi {
    pub running: local_runner::Running,
    pub http: reqwest::Client,
    pub key: String,
    pub partner: String,
    pub pool: sqlx::MySqlPool,
}

impl PartnerApi {
    /// A partner named `prefix` plus a unique suffix.
    pub async fn start(prefix: &str, db_connections: u32) -> Self {
        Self::on(prefix, runner_with_db_connections(db_connections).await).await
    }

    /// A partner named `prefix` plus a unique suffix, on a runner the test configured.
    pub async fn on(prefix: &str, running: local_runner::Running) -> Self {
        let partner = unique(prefix);
        Self {
            running,
            http: reqwest::Client::new(),
            key: api_key(&partner).await,
            partner,
            pool: mysql().await,
        }
    }
}

pub async fn mysql() -> sqlx::MySqlPool {
    fcfs_shared::adapters::mysql::connect(&env("DATABASE_URL"), 20)
        .await
        .expect("MySQL answers at DATABASE_URL")
}

pub async fn queue_arn(client: &aws_sdk_sqs::Client, url: &str) -> String {
    fcfs_shared::adapters::sqs::queue_arn(client, url)
        .await
        .expect("the queue has an ARN")
}

/// Up to ten messages of the queue, long-polling for `wait` seconds.
pub async fn receive(client: &aws_sdk_sqs::Client, url: &str, wait: i32) -> Vec<aws_sdk_sqs::types::Message> {
    client
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .wait_time_seconds(wait)
        .send()
        .await
        .expect("SQS answers receive")
        .messages
        .unwrap_or_default()
}

/// How many reservations issue-queue messages carry: a body is one reservation, or a pack of them
/// (a JSON array) when several requests of one process were sent together.
pub fn reservations_in(messages: &[aws_sdk_sqs::types::Message]) -> usize {
    messages
        .iter()
        .map(
            |m| match serde_json::from_str::<serde_json::Value>(m.body().unwrap_or_default()) {
                Ok(serde_json::Value::Array(pack)) => pack.len(),
                _ => 1,
            },
        )
        .sum()
}

/// A name no other test run uses, for throwaway resources.
/// An id of a JSON body (ids are decimal strings), as a number.
pub fn as_id(value: &serde_json::Value) -> Option<u64> {
    value.as_str()?.parse().ok()
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Status and JSON body of a function's HTTP answer.
pub fn reply(res: lambda_http::Response<lambda_http::Body>) -> (u16, serde_json::Value) {
    let text = match res.body() {
        lambda_http::Body::Text(t) => t.clone(),
        other => panic!("expected a text body, got {other:?}"),
    };
    (res.status().as_u16(), serde_json::from_str(&text).unwrap())
}

/// Log lines written while the returned guard lives (this thread only): for asserting that a
/// failure was logged.
pub fn capture_logs() -> (LogBuffer, tracing::subscriber::DefaultGuard) {
    let buffer = LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(buffer.clone())
        .with_max_level(tracing::Level::INFO)
        .finish();
    (buffer, tracing::subscriber::set_default(subscriber))
}

#[derive(Clone, Default)]
pub struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl LogBuffer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// A fresh queue and its dead-letter queue, with the template's `maxReceiveCount`, so a test never
/// sees another's messages. Returns (queue URL, DLQ URL).
pub async fn queue_with_dlq(client: &aws_sdk_sqs::Client, visibility_timeout: u32) -> (String, String) {
    use aws_sdk_sqs::types::QueueAttributeName;
    let max_receive = max_receive_count();
    let dlq = client
        .create_queue()
        .queue_name(unique("fcfs-it-dlq"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let dlq_arn = queue_arn(client, &dlq).await;
    let queue = client
        .create_queue()
        .queue_name(unique("fcfs-it"))
        .attributes(QueueAttributeName::VisibilityTimeout, visibility_timeout.to_string())
        .attributes(
            QueueAttributeName::RedrivePolicy,
            serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive}).to_string(),
        )
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    (queue, dlq)
}

/// The template's `maxReceiveCount` for the issue queue.
pub fn max_receive_count() -> i64 {
    template()
        .queues()
        .expect("template queues")
        .into_iter()
        .find_map(|q| q.redrive)
        .expect("a queue with a redrive policy")
        .1
}

/// Received messages as the SQS event source hands them to a function.
pub fn sqs_event(messages: &[aws_sdk_sqs::types::Message]) -> aws_lambda_events::event::sqs::SqsEvent {
    let mut event = aws_lambda_events::event::sqs::SqsEvent::default();
    event.records = messages
        .iter()
        .map(|m| {
            let mut record = aws_lambda_events::event::sqs::SqsMessage::default();
            record.message_id = m.message_id().map(str::to_owned);
            record.receipt_handle = m.receipt_handle().map(str::to_owned);
            record.body = m.body().map(str::to_owned);
            record
        })
        .collect();
    event
}
