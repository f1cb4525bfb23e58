//! The local runner: serves `template.yaml` on one machine as API Gateway, its Lambda authorizer
//! and the SQS event source mappings would, calling the functions' own handler code in-process.
//!
//! Everything it serves comes from the template: routes (`Api` events), the authorizer
//! (`Auth.DefaultAuthorizer`), pollers (`SQS` events), schedules (`Schedule`/`ScheduleV2` events
//! with a `rate()`), each function's environment. What the template declares and the runner cannot
//! reproduce is an error at start, never ignored.

pub mod functions;
mod gateway;
mod gateway_responses;
pub mod metrics;
mod poller;
mod scheduler;
mod throttle;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use aws_sdk_sqs::error::DisplayErrorContext;
use fcfs_shared::config::{ConfigError, Settings, StartupError};
use fcfs_template::{ApiSpec, POOL_SETTING, Placement, Template, TemplateError};

pub use functions::{AuthorizerFunction, HttpFunction, LocalFunction, ScheduledFunction, SnsFunction, SqsFunction};
pub use gateway::method_arn;

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("function {function}: {source}")]
    Function {
        function: String,
        source: functions::BuildError,
    },
    #[error("queue {name}: {detail} (is the stack up / the template deployed with this Stage?)")]
    Queue { name: String, detail: String },
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    InvalidSetting(String),
    #[error("function {function} has no Schedule event (functions with one: {scheduled:?})")]
    NoSchedule { function: String, scheduled: Vec<String> },
    #[error("function {function} failed: {error}")]
    Invocation { function: String, error: String },
    #[error(
        "function {function} needs {variable}, which the template takes from parameter {parameter}; \
         it has no default: set {variable} in the runner's environment (.local/env) or pass --param {parameter}=VALUE"
    )]
    NoParameterValue {
        function: String,
        variable: String,
        parameter: String,
    },
}

/// Replaces the rate of every schedule (seconds, fractions allowed), so a local run or a test
/// need not wait for `rate(1 hour)`.
pub const SCHEDULE_RATE_ENV: &str = "FCFS_SCHEDULE_RATE_SECS";
/// Functions (logical ids, comma-separated) whose schedules fire at the runner's start, as for a
/// stack that has long been up: the event relay, which serves continuously on AWS, so a local
/// stack delivers events at once instead of a minute after each start.
pub const SCHEDULE_START_NOW_ENV: &str = "FCFS_SCHEDULE_START_NOW";

/// How often the queues' depths are read, in seconds (fractions allowed; default
/// [`metrics::QUEUE_WATCH_EVERY`]), so an alert test need not wait for the default.
pub const QUEUE_WATCH_ENV: &str = "FCFS_QUEUE_WATCH_SECS";

pub struct RunnerConfig {
    pub template: PathBuf,
    /// Template parameter overrides (`Stage=local`, …).
    pub params: BTreeMap<String, String>,
    /// The runner's environment. It overrides what the template gives a function, so any variable
    /// can be changed locally without editing the template.
    pub env: BTreeMap<String, String>,
    /// API Gateway's throttling as the template sets it (the stage's rate and each partner's):
    /// on, as on AWS, unless a load test measures more than one partner may send.
    pub throttle: bool,
}

impl RunnerConfig {
    /// The template at `template`, no parameter overrides, this process's environment, throttled.
    pub fn from_process(template: PathBuf) -> Self {
        Self {
            template,
            params: BTreeMap::new(),
            env: std::env::vars().collect(),
            throttle: true,
        }
    }

    /// Without the template's throttling: for load that one partner could not send on AWS.
    pub fn unthrottled(mut self) -> Self {
        self.throttle = false;
        self
    }
}

/// A runner serving in the background of this process (tests, the bench).
pub struct Running {
    pub base_url: String,
    pub stats: Arc<Stats>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops as Ctrl-C would (in-flight requests, batches and scheduled invocations finish) and
    /// waits for it.
    pub async fn stop(self) -> std::io::Result<()> {
        let _ = self.stop.send(());
        self.task.await.map_err(std::io::Error::other)?
    }
}

/// A route of the API: method, path template (`/v1/campaigns/{campaignId}`) and its function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub method: String,
    pub path: String,
    pub function: String,
}

/// An SQS event source mapping as the runner polls it.
#[derive(Debug, Clone)]
pub struct EventSource {
    pub function: String,
    pub queue_logical_id: String,
    pub queue_url: String,
    pub queue_arn: String,
    pub batch_size: usize,
    pub batching_window: Duration,
    pub report_batch_item_failures: bool,
    pub max_concurrency: usize,
}

/// A `Schedule`/`ScheduleV2` event as the runner fires it.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleSource {
    pub function: String,
    /// The event's key in the function's `Events`.
    pub name: String,
    /// As the template writes it (`rate(1 minute)`); `rate` may differ, see [`SCHEDULE_RATE_ENV`].
    pub expression: String,
    pub rate: Duration,
    /// Disabled schedules are not fired, but `invoke_schedule` and `--invoke` still run them.
    pub enabled: bool,
    /// Attempts after a failed one (`EventInvokeConfig.MaximumRetryAttempts`, Lambda's 2 unless
    /// set), and the queue URL the failure record then goes to (its `OnFailure` destination).
    pub retries: u32,
    pub on_failure_queue: Option<String>,
    /// Fired first at start rather than one `rate` later (see [`SCHEDULE_START_NOW_ENV`]).
    pub starts_now: bool,
    /// Invocations that may run at once: the function's `ReservedConcurrentExecutions`, else 1
    /// (the scheduler runs a reservation of 0 as 1).
    pub concurrency: u32,
}

/// Counters for tests and the bench.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU64,
    /// Function answers that were 2xx, counted even when the client stopped waiting (the function
    /// runs to the end, as a Lambda invocation does).
    pub successes: AtomicU64,
    /// Function invocations running now.
    pub in_flight: AtomicU64,
    pub authorizer_invocations: AtomicU64,
    pub batches: AtomicU64,
    pub messages_deleted: AtomicU64,
}

/// Lambda's default for SQS event sources without `ScalingConfig` is far above what one machine
/// needs; two concurrent batches keep a local queue moving. Also the instances one in-process
/// function without an event source stands for, when sizing its database pool.
const DEFAULT_LOCAL_CONCURRENCY: usize = 2;

pub struct LocalApp {
    pub api: ApiSpec,
    /// Whether the gateway throttles as the template says (`RunnerConfig::throttle`).
    pub throttle: bool,
    pub routes: Vec<RouteSpec>,
    pub sources: Vec<EventSource>,
    pub schedules: Vec<ScheduleSource>,
    pub functions: BTreeMap<String, LocalFunction>,
    /// Each function's environment as the runner built it.
    pub environments: BTreeMap<String, BTreeMap<String, String>>,
    region: String,
    account_id: String,
    sqs: aws_sdk_sqs::Client,
    /// Every queue of the template (name, URL), for the depth gauges.
    queues: Vec<(String, String)>,
    queue_watch_every: Duration,
    stats: Arc<Stats>,
}

impl LocalApp {
    pub async fn load(config: &RunnerConfig) -> Result<Self, RunnerError> {
        Self::load_with(config, BTreeMap::new()).await
    }

    /// As [`load`](Self::load), but a function whose binary is a key of `provided` is that
    /// function instead of one built from the workspace: a test's fake, or a binary the runner
    /// does not build (yet). The template's events still decide which kind it must be.
    pub async fn load_with(
        config: &RunnerConfig,
        provided: BTreeMap<String, LocalFunction>,
    ) -> Result<Self, RunnerError> {
        let sdk = fcfs_shared::config::aws_sdk_config().await;
        let region = sdk.region().map_or_else(|| "us-east-1".to_owned(), |r| r.to_string());
        let endpoint = fcfs_shared::config::local_sqs_endpoint(|name| config.env.get(name).cloned())
            .unwrap_or_else(|| format!("https://sqs.{region}.amazonaws.com"));
        let mut params = config.params.clone();
        if let Some(stage) = config.env.get("FCFS_STAGE") {
            params.entry("Stage".to_owned()).or_insert_with(|| stage.clone());
        }
        let placement = Placement::local(&endpoint, &region);
        let account_id = placement.account_id.clone();
        let mut template = Template::load(&config.template, &params, placement)?;
        let rate_override = seconds_setting(config, SCHEDULE_RATE_ENV)?;
        let starts_now: Vec<&str> = config
            .env
            .get(SCHEDULE_START_NOW_ENV)
            .map(|list| list.split(',').map(str::trim).collect())
            .unwrap_or_default();
        let queue_watch_every = seconds_setting(config, QUEUE_WATCH_ENV)?.unwrap_or(metrics::QUEUE_WATCH_EVERY);
        let sqs = fcfs_shared::adapters::sqs::client(&sdk);

        // Queues are found by name where the SDK points (the emulator, or a deployed stack).
        let mut queue_urls = BTreeMap::new();
        let mut queues = HashMap::new();
        let mut watched = Vec::new();
        for queue in template.queues()? {
            let (url, arn) = locate_queue(&sqs, &queue.name).await?;
            watched.push((queue.name.clone(), url.clone()));
            queue_urls.insert(queue.name.clone(), url.clone());
            queues.insert(queue.logical_id.clone(), (url, arn));
        }
        template.set_queue_urls(queue_urls);

        let api = template.api()?;
        let specs = template.functions()?;
        let mut functions = BTreeMap::new();
        let mut environments = BTreeMap::new();
        let mut routes = Vec::new();
        let mut sources = Vec::new();
        let mut schedules = Vec::new();
        for spec in &specs {
            let mut env = spec.environment.clone();
            for source in &spec.sqs_sources {
                let (template_url, arn) = queues.get(&source.queue_logical_id).cloned().ok_or_else(|| {
                    RunnerError::Unsupported(format!(
                        "{}: event source queue {} is not a queue of the template",
                        spec.logical_id, source.queue_logical_id
                    ))
                })?;
                // A variable holding this queue's URL, set in the runner's environment, moves the
                // poller too (e.g. to a queue of a deployed stack).
                let url = spec
                    .environment
                    .iter()
                    .find(|(_, v)| **v == template_url)
                    .and_then(|(k, _)| config.env.get(k).cloned())
                    .unwrap_or(template_url);
                let max_concurrency = source
                    .maximum_concurrency
                    .map_or(DEFAULT_LOCAL_CONCURRENCY, |c| c.max(1) as usize);
                // One Lambda instance per concurrent batch, each with its own pool (default 2
                // connections): in one process that is one pool as large as all of them.
                let per_instance: usize = env
                    .get(POOL_SETTING)
                    .or(config.env.get(POOL_SETTING))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(2);
                env.insert(POOL_SETTING.to_owned(), (per_instance * max_concurrency).to_string());
                sources.push(EventSource {
                    function: spec.logical_id.clone(),
                    queue_logical_id: source.queue_logical_id.clone(),
                    queue_url: url,
                    queue_arn: arn,
                    batch_size: source.batch_size.max(1) as usize,
                    batching_window: Duration::from_secs(source.batching_window_secs.max(0) as u64),
                    report_batch_item_failures: source.report_batch_item_failures,
                    max_concurrency,
                });
            }
            if spec.sqs_sources.is_empty() {
                // Requests (or scheduled passes) of one function run concurrently in this process,
                // standing for DEFAULT_LOCAL_CONCURRENCY instances: one pool as large as theirs.
                if let Some(per_instance) = env.get(POOL_SETTING).and_then(|v| v.parse::<usize>().ok()) {
                    env.insert(
                        POOL_SETTING.to_owned(),
                        (per_instance * DEFAULT_LOCAL_CONCURRENCY).to_string(),
                    );
                }
            }
            env.extend(config.env.iter().map(|(k, v)| (k.clone(), v.clone())));
            // Variables from parameters without a value here (no default: a deployment must choose
            // them) come from the runner's environment; one the function requires and does not
            // get is an error naming the parameter.
            for (variable, parameter) in &spec.unresolved {
                if !env.contains_key(variable) {
                    tracing::warn!(
                        function = spec.logical_id,
                        variable,
                        parameter,
                        "template parameter has no default and the environment does not set the variable"
                    );
                }
            }
            let function = match provided.get(&spec.binary) {
                Some(function) => function.clone(),
                None => functions::build(&spec.binary, &Settings::new(env.clone()), &sdk)
                    .await
                    .map_err(|source| match &source {
                        functions::BuildError::Startup(StartupError::Config(ConfigError::Missing(name)))
                            if spec.unresolved.contains_key(*name) =>
                        {
                            RunnerError::NoParameterValue {
                                function: spec.logical_id.clone(),
                                variable: (*name).to_owned(),
                                parameter: spec.unresolved[*name].clone(),
                            }
                        }
                        _ => RunnerError::Function {
                            function: spec.logical_id.clone(),
                            source,
                        },
                    })?,
            };
            schedules.extend(spec.schedules.iter().map(|s| {
                ScheduleSource {
                    function: spec.logical_id.clone(),
                    name: s.name.clone(),
                    expression: s.expression.clone(),
                    rate: rate_override.unwrap_or(s.rate),
                    enabled: s.enabled,
                    retries: spec.on_async_failure.retries,
                    on_failure_queue: spec
                        .on_async_failure
                        .queue_logical_id
                        .as_ref()
                        .and_then(|id| queues.get(id))
                        .map(|(url, _)| url.clone()),
                    starts_now: starts_now.contains(&spec.logical_id.as_str()),
                    concurrency: spec.reserved_concurrency.unwrap_or(1),
                }
            }));
            for route in &spec.routes {
                routes.push(RouteSpec {
                    method: route.method.clone(),
                    path: route.path.clone(),
                    function: spec.logical_id.clone(),
                });
            }
            if !spec.sns_topics.is_empty() {
                if function.kind() != "sns" {
                    return Err(RunnerError::Unsupported(format!(
                        "SNS {}: function {} is {:?}, an sns function is needed",
                        spec.sns_topics.join(", "),
                        spec.logical_id,
                        function.kind()
                    )));
                }
                tracing::info!(
                    function = spec.logical_id,
                    topics = ?spec.sns_topics,
                    "SNS is not emulated: locally Alertmanager posts the alerts (observability/alertmanager.yml)"
                );
            }
            environments.insert(spec.logical_id.clone(), env);
            functions.insert(spec.logical_id.clone(), function);
        }
        let app = Self {
            throttle: config.throttle,
            api,
            routes,
            sources,
            schedules,
            functions,
            environments,
            region,
            account_id,
            sqs,
            queues: watched,
            queue_watch_every,
            stats: Arc::default(),
        };
        app.check_kinds()?;
        Ok(app)
    }

    /// Routes need HTTP functions, event sources SQS functions, schedules scheduled functions, the
    /// authorizer an authorizer.
    fn check_kinds(&self) -> Result<(), RunnerError> {
        let kind = |id: &str| self.functions.get(id).map(LocalFunction::kind);
        let mut expected: Vec<(&str, &str, String)> = Vec::new();
        expected.extend(
            self.routes
                .iter()
                .map(|r| (r.function.as_str(), "http", format!("{} {}", r.method, r.path))),
        );
        expected.extend(
            self.sources
                .iter()
                .map(|s| (s.function.as_str(), "sqs", format!("SQS {}", s.queue_logical_id))),
        );
        expected.extend(self.schedules.iter().map(|s| {
            (
                s.function.as_str(),
                "scheduled",
                format!("Schedule {} ({})", s.name, s.expression),
            )
        }));
        if let Some(auth) = &self.api.authorizer {
            expected.push((
                auth.function_logical_id.as_str(),
                "authorizer",
                format!("authorizer {}", auth.name),
            ));
        }
        for (function, want, what) in expected {
            match kind(function) {
                Some(k) if k == want => {}
                other => {
                    return Err(RunnerError::Unsupported(format!(
                        "{what}: function {function} is {other:?}, a {want} function is needed"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Swaps a function for another implementation (tests: a handler that fails on purpose).
    pub fn replace_function(&mut self, logical_id: &str, function: LocalFunction) -> Result<(), RunnerError> {
        let slot = self
            .functions
            .get_mut(logical_id)
            .ok_or_else(|| RunnerError::Unsupported(format!("no function {logical_id}")))?;
        *slot = function;
        self.check_kinds()
    }

    /// Points an event source at another queue (tests: a throwaway queue pair). Its gauges then
    /// carry that queue's name; see [`watch_queue`](Self::watch_queue) for its DLQ.
    pub fn set_source_queue(&mut self, function: &str, queue_url: &str, queue_arn: &str) {
        for source in self.sources.iter_mut().filter(|s| s.function == function) {
            for watched in self.queues.iter_mut().filter(|(_, url)| *url == source.queue_url) {
                *watched = (queue_name(queue_url).to_owned(), queue_url.to_owned());
            }
            source.queue_url = queue_url.to_owned();
            source.queue_arn = queue_arn.to_owned();
        }
    }

    /// Sends the failure records of a function's scheduled invocations to another queue (tests: a
    /// throwaway queue instead of the stage's alerts DLQ).
    pub fn set_failure_queue(&mut self, function: &str, queue_url: &str) {
        for schedule in self.schedules.iter_mut().filter(|s| s.function == function) {
            schedule.on_failure_queue = Some(queue_url.to_owned());
        }
    }

    /// Also reports this queue's depth (and, if no event source consumes it, its oldest message's
    /// age): tests watch the DLQ of their throwaway pair.
    pub fn watch_queue(&mut self, queue_url: &str) {
        if !self.queues.iter().any(|(_, url)| url == queue_url) {
            self.queues
                .push((queue_name(queue_url).to_owned(), queue_url.to_owned()));
        }
    }

    /// Invokes the function once now with a Scheduled Event of its schedule (the first enabled
    /// one, else the first), as `fcfs-runner --invoke` does, and returns what it returned.
    pub async fn invoke_schedule(&self, function_logical_id: &str) -> Result<serde_json::Value, RunnerError> {
        let own: Vec<&ScheduleSource> = self
            .schedules
            .iter()
            .filter(|s| s.function == function_logical_id)
            .collect();
        let Some(source) = own.iter().find(|s| s.enabled).or(own.first()) else {
            let mut scheduled: Vec<String> = self.schedules.iter().map(|s| s.function.clone()).collect();
            scheduled.dedup();
            return Err(RunnerError::NoSchedule {
                function: function_logical_id.to_owned(),
                scheduled,
            });
        };
        scheduler::invoke(&self.schedule(source))
            .await
            .map_err(|error| RunnerError::Invocation {
                function: function_logical_id.to_owned(),
                error,
            })
    }

    fn schedule(&self, source: &ScheduleSource) -> scheduler::Schedule {
        let Some(LocalFunction::Scheduled(function)) = self.functions.get(&source.function) else {
            unreachable!("checked by check_kinds");
        };
        scheduler::Schedule {
            function: function.clone(),
            source: source.clone(),
            region: self.region.clone(),
            account_id: self.account_id.clone(),
            sqs: Some(self.sqs.clone()),
        }
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Serves on a free port of 127.0.0.1 in the background.
    pub async fn start(self) -> std::io::Result<Running> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stats = self.stats();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(self.serve(listener, async move {
            let _ = stopped.await;
        }));
        Ok(Running {
            base_url: format!("http://{addr}"),
            stats,
            stop,
            task,
        })
    }

    /// Serves until `shutdown` resolves, then stops accepting, finishes in-flight requests, batches
    /// and scheduled invocations, and returns.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        // Pollers and schedules: they all stop on `stop`, each finishing the work it has started.
        let mut background = tokio::task::JoinSet::new();
        for source in &self.sources {
            let Some(LocalFunction::Sqs(function)) = self.functions.get(&source.function) else {
                unreachable!("checked by check_kinds");
            };
            for worker in 0..source.max_concurrency {
                background.spawn(poller::run(
                    poller::Poller {
                        function: function.clone(),
                        sqs: self.sqs.clone(),
                        source: source.clone(),
                        region: self.region.clone(),
                        stats: self.stats.clone(),
                        worker,
                    },
                    stopped.clone(),
                ));
            }
        }
        for source in self.schedules.iter().filter(|s| s.enabled) {
            background.spawn(scheduler::run(self.schedule(source), stopped.clone()));
        }
        let consumed: HashSet<&str> = self.sources.iter().map(|s| s.queue_url.as_str()).collect();
        let watched = self
            .queues
            .iter()
            .map(|(name, url)| metrics::WatchedQueue {
                name: name.clone(),
                url: url.clone(),
                consumed: consumed.contains(url.as_str()),
            })
            .collect();
        background.spawn(metrics::watch_queues(
            self.sqs.clone(),
            watched,
            self.queue_watch_every,
            stopped.clone(),
        ));
        let router = gateway::router(&self);
        let served = axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                shutdown.await;
                tracing::info!(
                    "shutting down: no new requests; finishing in-flight requests, batches and scheduled invocations"
                );
            })
            .await;
        let _ = stop.send(true);
        while background.join_next().await.is_some() {}
        tracing::info!("runner stopped");
        served
    }
}

/// An SQS queue URL ends with the queue's name.
pub(crate) fn queue_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

/// A setting of a number of seconds from the runner's environment, if set.
fn seconds_setting(config: &RunnerConfig, variable: &str) -> Result<Option<Duration>, RunnerError> {
    let Some(value) = config.env.get(variable) else {
        return Ok(None);
    };
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|secs| *secs > 0.0)
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .map(Some)
        .ok_or_else(|| {
            RunnerError::InvalidSetting(format!(
                "{variable}={value:?}: expected a number of seconds greater than 0"
            ))
        })
}

async fn locate_queue(sqs: &aws_sdk_sqs::Client, name: &str) -> Result<(String, String), RunnerError> {
    let error = |detail: String| RunnerError::Queue {
        name: name.to_owned(),
        detail,
    };
    let url = sqs
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .map_err(|e| error(DisplayErrorContext(e).to_string()))?
        .queue_url
        .ok_or_else(|| error("no URL returned".into()))?;
    let arn = fcfs_shared::adapters::sqs::queue_arn(sqs, &url)
        .await
        .map_err(|e| error(e.detail))?;
    Ok((url, arn))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A route the gateway could only get wrong (no method) stops the start, naming the function,
    /// its event and the missing key, before any queue is looked up.
    #[tokio::test]
    async fn an_api_event_without_its_method_stops_the_start() {
        let template = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml")).unwrap();
        let broken = template.replacen("            Method: post\n", "", 1);
        assert_ne!(broken, template);
        let path = std::env::temp_dir().join(format!("fcfs-runner-no-method-{}.yaml", std::process::id()));
        std::fs::write(&path, broken).unwrap();
        let config = RunnerConfig {
            template: path.clone(),
            params: BTreeMap::new(),
            env: BTreeMap::new(),
            throttle: true,
        };
        let result = LocalApp::load(&config).await;
        std::fs::remove_file(&path).unwrap();
        let err = result.err().expect("the runner refuses to start").to_string();
        assert!(
            err.contains("CampaignApiFunction: event CreateCampaign (Api): missing field `Method`"),
            "{err}"
        );
    }

    /// An API Gateway proxy request for `route` (`resource` and path parameters filled in as API
    /// Gateway fills them) with no authorizer context: a handler it reaches answers 401 before
    /// any I/O.
    fn gateway_request(route: &fcfs_template::ApiRoute, path: &str) -> lambda_http::Request {
        let mut event = aws_lambda_events::apigw::ApiGatewayProxyRequest::default();
        event.http_method = route.method.parse().unwrap();
        event.resource = Some(route.path.clone());
        event.request_context.resource_path = Some(route.path.clone());
        event.path = Some(path.to_owned());
        event.path_parameters = route
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| (name.to_owned(), "7".to_owned()))
            .collect();
        lambda_http::request::LambdaRequest::ApiGatewayV1(event).into()
    }

    /// Routing lives once: every route of template.yaml reaches a handler of its function, and a
    /// route of another function is not found there, whatever the raw path says.
    #[tokio::test]
    async fn each_function_serves_exactly_its_template_routes() {
        let template = Template::load(
            std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml")),
            &BTreeMap::new(),
            Placement::local("http://127.0.0.1:1", "us-east-1"),
        )
        .unwrap();
        let specs = template.functions().unwrap();
        let routes: Vec<(&str, &fcfs_template::ApiRoute)> = specs
            .iter()
            .flat_map(|f| f.routes.iter().map(move |r| (f.logical_id.as_str(), r)))
            .collect();
        assert!(!routes.is_empty(), "template.yaml declares routes");
        let sdk = fcfs_shared::config::aws_sdk_config().await;
        for spec in specs.iter().filter(|f| !f.routes.is_empty()) {
            let mut env = spec.environment.clone();
            // Nothing is connected at build time; these are never reached.
            env.insert("REDIS_URL".into(), "redis://127.0.0.1:1".into());
            env.insert(
                "DATABASE_SECRET_ARN".into(),
                "arn:aws:secretsmanager:us-east-1:000000000000:secret:unused".into(),
            );
            let Ok(LocalFunction::Http(function)) = functions::build(&spec.binary, &Settings::new(env), &sdk).await
            else {
                panic!("{}: an HTTP function", spec.logical_id)
            };
            for (owner, route) in &routes {
                // The raw path is another route's: only the matched template may count.
                let response = function.invoke(gateway_request(route, "/v1/coupons/7/use")).await;
                let status = response.status().as_u16();
                let lambda_http::Body::Text(body) = response.body() else {
                    panic!("a text body")
                };
                let what = format!(
                    "{} {} on {}: {status} {body}",
                    route.method, route.path, spec.logical_id
                );
                if *owner == spec.logical_id {
                    assert_eq!(status, 401, "{what}");
                } else {
                    assert_eq!(
                        (status, body.as_str()),
                        (404, r#"{"error":"NOT_FOUND","message":"route not found"}"#),
                        "{what}"
                    );
                }
            }
        }
    }
}
