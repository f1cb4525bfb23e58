//! The SAM template as data: the one description of our queues, tables, functions and events.
//!
//! Local provisioning and the tests read resources from here, so what runs locally cannot drift
//! from what `template.yaml` deploys. The template is read into typed structs when it is loaded
//! (`document`), so a resource the runner would misread (an API event without its `Path`, a
//! redrive policy without its count) is an error then, naming the resource and the key. Only the
//! intrinsics the template uses are resolved (`!Ref`, `!Sub` with `${Name}`,
//! `!GetAtt X.Arn|QueueUrl|QueueName`); the others load, and resolving one is an error.

mod database;
mod document;
mod values;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

pub use database::{DatabaseUser, POOL_SETTING, connections_at_most};
use document::{Body, Document, Event, EventInvokeConfig, Resource, ScheduleProperties};
pub use values::Expr;

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read template {path}: {source}")]
    Read { path: String, source: std::io::Error },
    /// Not YAML, or not a SAM template (a resource without `Type`); the error names the key and
    /// the line.
    #[error("template: {0}")]
    Yaml(#[from] yaml_serde::Error),
    /// A resource's properties are not shaped as its type's are (an API event without `Path`):
    /// where (a resource, an event, a key) and what.
    #[error("template: {at}: {source}")]
    Shape { at: String, source: yaml_serde::Error },
    #[error("template: {0}")]
    Invalid(String),
    /// A parameter without a `Default` that was given no value: deployments must choose it.
    #[error("template parameter {0} has no default and no value was given (--param {0}=VALUE)")]
    NoValue(String),
}

/// Where the resources of a template live once created: the values intrinsics resolve to.
#[derive(Debug, Clone)]
pub struct Placement {
    pub region: String,
    pub account_id: String,
    /// Base URL of the SQS endpoint; a queue's URL is `{sqs_base}/{account}/{name}` unless the
    /// emulator reported another one for it in `queue_urls` (name → URL).
    pub sqs_base: String,
    pub queue_urls: BTreeMap<String, String>,
}

impl Placement {
    pub fn local(endpoint: &str, region: &str) -> Self {
        Self {
            region: region.to_owned(),
            account_id: "000000000000".to_owned(),
            sqs_base: endpoint.trim_end_matches('/').to_owned(),
            queue_urls: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueueSpec {
    pub logical_id: String,
    pub name: String,
    pub visibility_timeout: Option<i64>,
    pub message_retention: Option<i64>,
    /// Logical id of the dead-letter queue and the receive count that sends a message there.
    pub redrive: Option<(String, i64)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KeySpec {
    pub attribute: String,
    pub key_type: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IndexSpec {
    pub name: String,
    pub keys: Vec<KeySpec>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TableSpec {
    pub logical_id: String,
    pub name: String,
    /// (attribute name, type: S, N or B)
    pub attributes: Vec<(String, String)>,
    pub keys: Vec<KeySpec>,
    pub global_indexes: Vec<IndexSpec>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiRoute {
    pub method: String,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SqsSource {
    pub queue_logical_id: String,
    pub batch_size: i64,
    pub batching_window_secs: i64,
    pub report_batch_item_failures: bool,
    pub maximum_concurrency: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FunctionSpec {
    pub logical_id: String,
    pub binary: String,
    pub environment: BTreeMap<String, String>,
    /// Variables the template gives the function from a parameter that has no value here (no
    /// `Default`, no override): variable → parameter. They are left out of `environment`; a local
    /// run supplies them from its own environment.
    pub unresolved: BTreeMap<String, String>,
    pub routes: Vec<ApiRoute>,
    pub sqs_sources: Vec<SqsSource>,
    pub schedules: Vec<ScheduleSpec>,
    /// Logical ids of the SNS topics it subscribes to (`SNS` events).
    pub sns_topics: Vec<String>,
    /// `ReservedConcurrentExecutions` with this deployment's parameters; `None` reserves nothing.
    pub reserved_concurrency: Option<u32>,
    /// What becomes of an asynchronous invocation (a schedule's) that fails.
    pub on_async_failure: AsyncFailure,
    /// `MemorySize` (its own, else `Globals`, else Lambda's default 128): what a GB-second is
    /// billed on.
    pub memory_mb: u32,
}

/// `EventInvokeConfig`: how many times Lambda retries a failed asynchronous invocation (2 unless
/// set), and the queue its failure record then goes to (`OnFailure` of type SQS, by logical id).
#[derive(Debug, Clone, PartialEq)]
pub struct AsyncFailure {
    pub retries: u32,
    pub queue_logical_id: Option<String>,
}

/// A `Schedule` (EventBridge rule) or `ScheduleV2` (EventBridge Scheduler) event of a function.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleSpec {
    /// The event's key in `Events` (e.g. `EveryMinute`).
    pub name: String,
    /// The expression as the template resolves it, e.g. `rate(1 minute)`.
    pub expression: String,
    pub rate: Duration,
    pub enabled: bool,
}

/// The period of an EventBridge `rate(N unit)` expression, with EventBridge's rules: N is a whole
/// number ≥ 1 and the unit (minute, hour, day) is singular exactly when N is 1. `cron(...)` and
/// `at(...)` are refused: the local runner reproduces only rates.
pub fn parse_rate(expression: &str) -> Result<Duration, TemplateError> {
    rate_period(expression).map_err(TemplateError::Invalid)
}

fn rate_period(expression: &str) -> Result<Duration, String> {
    let invalid = |why: &str| {
        format!(
            "schedule {expression:?}: {why}; the local runner supports only rate() schedules \
             (rate(1 minute|hour|day), rate(N minutes|hours|days) for N > 1)"
        )
    };
    let inner = expression
        .strip_prefix("rate(")
        .and_then(|rest| rest.strip_suffix(')'))
        .ok_or_else(|| invalid("not a rate expression"))?;
    let (value, unit) = inner
        .split_once(' ')
        .ok_or_else(|| invalid("expected rate(value unit)"))?;
    // Digits only: `u64::from_str` would also take `+1`, which EventBridge does not.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("the value must be a whole number"));
    }
    let value: u64 = value.parse().map_err(|_| invalid("the value is too large"))?;
    if value == 0 {
        return Err(invalid("the value must be at least 1"));
    }
    let (seconds, plural) = match unit {
        "minute" => (60, false),
        "minutes" => (60, true),
        "hour" => (3_600, false),
        "hours" => (3_600, true),
        "day" => (86_400, false),
        "days" => (86_400, true),
        _ => return Err(invalid("the unit must be minute(s), hour(s) or day(s)")),
    };
    if plural != (value > 1) {
        return Err(invalid("the unit is singular for 1 and plural otherwise"));
    }
    value
        .checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| invalid("the value is too large"))
}

/// The REST API and the authorizer in front of every route.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiSpec {
    pub logical_id: String,
    pub stage: String,
    pub authorizer: Option<AuthorizerSpec>,
    /// `Auth.ApiKeyRequired`: every method needs an API Gateway API key of a usage plan. Only with
    /// `ApiKeySourceType: AUTHORIZER` (the key is the authorizer's `usageIdentifierKey`), since a
    /// HEADER source would read the `X-API-KEY` header the partners' own keys travel in.
    pub api_key_required: bool,
    /// `GatewayResponses`, by response type (`UNAUTHORIZED`, `THROTTLED`, …).
    pub gateway_responses: BTreeMap<String, GatewayResponseSpec>,
    /// The whole stage's limit (`MethodSettings` for `/*` and `*`).
    pub stage_throttle: Option<ThrottleSpec>,
    /// Each usage-plan key's limit (the `AWS::ApiGateway::UsagePlan` of this API's stage): with
    /// `ApiKeySourceType: AUTHORIZER`, per partner.
    pub key_throttle: Option<ThrottleSpec>,
}

/// API Gateway's token bucket: `rate` requests per second refill a bucket of `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThrottleSpec {
    pub rate: f64,
    pub burst: u32,
}

/// How API Gateway answers one of its own response types.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayResponseSpec {
    /// The status, where the template sets one (else the response type's own).
    pub status: Option<u16>,
    /// Static headers (`'value'` in the template).
    pub headers: Vec<(String, String)>,
    /// The `application/json` template, static text with `$context.…` variables.
    pub json_template: Option<String>,
}

/// A REQUEST Lambda authorizer whose identity source is one header.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthorizerSpec {
    pub name: String,
    pub function_logical_id: String,
    pub identity_header: String,
    /// API Gateway's result cache TTL (0 disables caching).
    pub reauthorize_every_secs: i64,
}

/// A template parameter override given as `NAME=VALUE` on a command line.
pub fn parse_param(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))
}

/// Lambda's `MemorySize` when a template sets none.
const LAMBDA_DEFAULT_MEMORY_MB: u32 = 128;

pub struct Template {
    /// In document order.
    resources: Vec<Resource>,
    /// `Globals.Function.Environment.Variables`: every function's, before its own.
    global_variables: Vec<(String, Expr)>,
    /// `Globals.Function.MemorySize`.
    global_memory_mb: Option<u32>,
    /// Every parameter with a value: its default or an override.
    parameters: BTreeMap<String, String>,
    /// Every parameter the template declares, with a value or not.
    declared: BTreeSet<String>,
    placement: Placement,
}

impl Template {
    pub fn load(
        path: &Path,
        overrides: &BTreeMap<String, String>,
        placement: Placement,
    ) -> Result<Self, TemplateError> {
        let text = std::fs::read_to_string(path).map_err(|source| TemplateError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, overrides, placement)
    }

    pub fn parse(
        text: &str,
        overrides: &BTreeMap<String, String>,
        placement: Placement,
    ) -> Result<Self, TemplateError> {
        let document: Document = yaml_serde::from_str(text)?;
        let mut parameters = BTreeMap::new();
        let mut declared = BTreeSet::new();
        for (name, spec) in document.parameters.0 {
            if let Some(default) = spec.default {
                parameters.insert(name.clone(), default.0);
            }
            declared.insert(name);
        }
        for (name, value) in overrides {
            if !declared.contains(name) {
                return Err(TemplateError::Invalid(format!("unknown parameter {name}")));
            }
            parameters.insert(name.clone(), value.clone());
        }
        let resources = document
            .resources
            .0
            .into_iter()
            .map(|(id, raw)| Resource::read(id, raw))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            resources,
            global_variables: document.globals.function.environment.variables.0,
            global_memory_mb: document.globals.function.memory_size,
            parameters,
            declared,
            placement,
        })
    }

    /// Records the URLs the emulator gave the queues, for every later resolution.
    pub fn set_queue_urls(&mut self, urls: BTreeMap<String, String>) {
        self.placement.queue_urls = urls;
    }

    fn resource(&self, logical_id: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.logical_id == logical_id)
    }

    fn resource_type(&self, logical_id: &str) -> Option<&str> {
        self.resource(logical_id).map(|r| r.kind.as_str())
    }

    /// Every parameter with a value (its default or an override).
    pub fn parameters(&self) -> &BTreeMap<String, String> {
        &self.parameters
    }

    /// One parameter's value, if it has one.
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters.get(name).map(String::as_str)
    }

    /// The physical name a resource gets: its name property resolved, or the logical id.
    pub fn physical_name(&self, logical_id: &str) -> Result<String, TemplateError> {
        let resource = self
            .resource(logical_id)
            .ok_or_else(|| TemplateError::Invalid(format!("no resource {logical_id}")))?;
        let name = match &resource.body {
            Body::Queue(queue) => queue.queue_name.as_ref(),
            Body::Table(table) => table.table_name.as_ref(),
            _ => None,
        };
        match name {
            Some(name) => self.resolve(name),
            None => Ok(logical_id.to_owned()),
        }
    }

    fn queue_url(&self, name: &str) -> String {
        if let Some(url) = self.placement.queue_urls.get(name) {
            return url.clone();
        }
        format!("{}/{}/{}", self.placement.sqs_base, self.placement.account_id, name)
    }

    fn arn(&self, service: &str, name: &str) -> String {
        let Placement { region, account_id, .. } = &self.placement;
        match service {
            "dynamodb" => format!("arn:aws:dynamodb:{region}:{account_id}:table/{name}"),
            _ => format!("arn:aws:{service}:{region}:{account_id}:{name}"),
        }
    }

    fn ref_value(&self, name: &str) -> Result<String, TemplateError> {
        match name {
            "AWS::Region" => return Ok(self.placement.region.clone()),
            "AWS::AccountId" => return Ok(self.placement.account_id.clone()),
            "AWS::StackName" => return Ok("fcfs-coupons".into()),
            _ => {}
        }
        if let Some(value) = self.parameters.get(name) {
            return Ok(value.clone());
        }
        if self.declared.contains(name) {
            return Err(TemplateError::NoValue(name.to_owned()));
        }
        let physical = self.physical_name(name)?;
        Ok(match self.resource_type(name) {
            Some(document::QUEUE) => self.queue_url(&physical),
            _ => physical,
        })
    }

    fn get_att(&self, logical_id: &str, attribute: &str) -> Result<String, TemplateError> {
        let physical = self.physical_name(logical_id)?;
        match (self.resource_type(logical_id), attribute) {
            (Some(document::QUEUE), "Arn") => Ok(self.arn("sqs", &physical)),
            (Some(document::QUEUE), "QueueUrl") => Ok(self.queue_url(&physical)),
            (Some(document::QUEUE), "QueueName") => Ok(physical),
            (Some(document::TABLE), "Arn") => Ok(self.arn("dynamodb", &physical)),
            (kind, _) => Err(TemplateError::Invalid(format!(
                "!GetAtt {logical_id}.{attribute} is not supported locally (type {kind:?})"
            ))),
        }
    }

    fn substitute(&self, pattern: &str) -> Result<String, TemplateError> {
        let mut out = String::new();
        let mut rest = pattern;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..]
                .find('}')
                .ok_or_else(|| TemplateError::Invalid(format!("unclosed ${{ in !Sub {pattern}")))?;
            let name = &rest[start + 2..start + end];
            let value = match name.split_once('.') {
                Some((id, att)) if !name.starts_with("AWS::") => self.get_att(id, att)?,
                _ => self.ref_value(name)?,
            };
            out.push_str(&value);
            rest = &rest[start + end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Resolves a property value to a string, evaluating the intrinsics we use.
    pub fn resolve(&self, value: &Expr) -> Result<String, TemplateError> {
        match value {
            Expr::Literal(text) => Ok(text.clone()),
            Expr::Ref(name) => self.ref_value(name),
            Expr::Sub(pattern) => self.substitute(pattern),
            Expr::GetAtt { resource, attribute } => self.get_att(resource, attribute),
            Expr::If { .. } => Err(TemplateError::Invalid(
                "intrinsic !If is not supported locally".to_owned(),
            )),
            Expr::Unsupported(name) => Err(TemplateError::Invalid(format!(
                "intrinsic {name} is not supported locally"
            ))),
        }
    }

    fn resolve_i64(&self, value: &Expr) -> Result<i64, TemplateError> {
        self.resolve(value)?
            .parse::<i64>()
            .map_err(|e| TemplateError::Invalid(format!("expected a number: {e}")))
    }

    fn resolve_int(&self, value: Option<&Expr>) -> Result<Option<i64>, TemplateError> {
        value.map(|v| self.resolve_i64(v)).transpose()
    }

    pub fn queues(&self) -> Result<Vec<QueueSpec>, TemplateError> {
        let mut queues = Vec::new();
        for resource in &self.resources {
            let Body::Queue(props) = &resource.body else { continue };
            let id = &resource.logical_id;
            let redrive = match &props.redrive_policy {
                Some(policy) => {
                    let target = policy.dead_letter_target_arn.referenced_id().ok_or_else(|| {
                        TemplateError::Invalid(format!("{id}: redrive target must reference a queue"))
                    })?;
                    let count = self.resolve_i64(&policy.max_receive_count)?;
                    Some((target.to_owned(), count))
                }
                None => None,
            };
            queues.push(QueueSpec {
                name: self.physical_name(id)?,
                visibility_timeout: self.resolve_int(props.visibility_timeout.as_ref())?,
                message_retention: self.resolve_int(props.message_retention_period.as_ref())?,
                redrive,
                logical_id: id.clone(),
            });
        }
        Ok(queues)
    }

    pub fn tables(&self) -> Result<Vec<TableSpec>, TemplateError> {
        let keys = |schema: &[document::KeyElement]| -> Vec<KeySpec> {
            schema
                .iter()
                .map(|k| KeySpec {
                    attribute: k.attribute_name.0.clone(),
                    key_type: k.key_type.0.clone(),
                })
                .collect()
        };
        let mut tables = Vec::new();
        for resource in &self.resources {
            let Body::Table(props) = &resource.body else { continue };
            tables.push(TableSpec {
                name: self.physical_name(&resource.logical_id)?,
                attributes: props
                    .attribute_definitions
                    .iter()
                    .map(|a| (a.attribute_name.0.clone(), a.attribute_type.0.clone()))
                    .collect(),
                keys: keys(&props.key_schema),
                global_indexes: props
                    .global_secondary_indexes
                    .iter()
                    .map(|i| IndexSpec {
                        name: i.index_name.0.clone(),
                        keys: keys(&i.key_schema),
                    })
                    .collect(),
                logical_id: resource.logical_id.clone(),
            });
        }
        Ok(tables)
    }

    /// The template's one `AWS::Serverless::Api`. Anything about it a local runner could not
    /// reproduce (several APIs, other authorizer kinds) is an error, not silently ignored.
    pub fn api(&self) -> Result<ApiSpec, TemplateError> {
        let apis: Vec<(&String, &document::ApiProperties)> = self
            .resources
            .iter()
            .filter_map(|r| match &r.body {
                Body::Api(props) => Some((&r.logical_id, props)),
                _ => None,
            })
            .collect();
        let [(logical_id, props)] = apis.as_slice() else {
            let ids: Vec<&String> = apis.iter().map(|(id, _)| *id).collect();
            return Err(TemplateError::Invalid(format!(
                "expected exactly one AWS::Serverless::Api, found {ids:?}"
            )));
        };
        let stage = self.resolve(&props.stage_name)?;
        let auth = props.auth.as_ref();
        let authorizer = match auth.and_then(|a| a.default_authorizer.as_ref()) {
            None => None,
            Some(name) => {
                let spec = auth
                    .and_then(|a| a.authorizers.get(name.as_str()))
                    .ok_or_else(|| TemplateError::Invalid(format!("authorizer {name} is not declared")))?;
                let payload = spec.function_payload_type.as_ref().map_or("", |p| p.as_str());
                if payload != "REQUEST" {
                    return Err(TemplateError::Invalid(format!(
                        "authorizer {name}: FunctionPayloadType {payload:?} is not supported locally (REQUEST only)"
                    )));
                }
                let identity = spec.identity.as_ref();
                let headers = identity.map_or(&[][..], |i| i.headers.as_slice());
                let [header] = headers else {
                    return Err(TemplateError::Invalid(format!(
                        "authorizer {name}: exactly one identity header is supported locally"
                    )));
                };
                if let Some(other) = identity.and_then(|i| i.other_sources().next()) {
                    return Err(TemplateError::Invalid(format!(
                        "authorizer {name}: identity source {other} is not supported locally"
                    )));
                }
                Some(AuthorizerSpec {
                    function_logical_id: spec
                        .function_arn
                        .as_ref()
                        .and_then(Expr::referenced_id)
                        .ok_or_else(|| TemplateError::Invalid(format!("authorizer {name}: FunctionArn")))?
                        .to_owned(),
                    identity_header: header.0.clone(),
                    reauthorize_every_secs: self
                        .resolve_int(identity.and_then(|i| i.reauthorize_every.as_ref()))?
                        .unwrap_or(300),
                    name: name.0.clone(),
                })
            }
        };
        let api_key_required = match auth.and_then(|a| a.api_key_required.as_ref()) {
            None => false,
            Some(v) => match self.resolve(v)?.as_str() {
                "true" => true,
                "false" => false,
                other => {
                    return Err(TemplateError::Invalid(format!(
                        "{logical_id}: Auth.ApiKeyRequired must be true or false, got {other:?}"
                    )));
                }
            },
        };
        if api_key_required {
            let source = props
                .api_key_source_type
                .as_ref()
                .map(|v| self.resolve(v))
                .transpose()?;
            if source.as_deref() != Some("AUTHORIZER") || authorizer.is_none() {
                return Err(TemplateError::Invalid(format!(
                    "{logical_id}: Auth.ApiKeyRequired is supported locally only with ApiKeySourceType \
                     AUTHORIZER and a DefaultAuthorizer (got {source:?})"
                )));
            }
        }
        let mut gateway_responses = BTreeMap::new();
        for (kind, definition) in props.gateway_responses.iter() {
            let at = |what: &str| format!("{logical_id}: GatewayResponses.{kind}.{what}");
            let status = match &definition.status_code {
                None => None,
                Some(code) => Some(
                    self.resolve(code)?
                        .parse::<u16>()
                        .map_err(|e| TemplateError::Invalid(format!("{}: {e}", at("StatusCode"))))?,
                ),
            };
            let mut headers = Vec::new();
            if let Some(parameters) = &definition.response_parameters {
                for (name, value) in parameters.headers.iter() {
                    let value = self.resolve(value)?;
                    // A static value is quoted; a mapping from the request is not served locally.
                    let literal = value
                        .strip_prefix('\'')
                        .and_then(|v| v.strip_suffix('\''))
                        .ok_or_else(|| {
                            TemplateError::Invalid(format!(
                                "{}: only static values ('…') are supported locally, got {value:?}",
                                at(&format!("Headers.{name}"))
                            ))
                        })?;
                    headers.push((name.to_owned(), literal.to_owned()));
                }
            }
            let json_template = definition
                .response_templates
                .get("application/json")
                .map(|t| self.resolve(t))
                .transpose()?;
            gateway_responses.insert(
                kind.to_owned(),
                GatewayResponseSpec {
                    status,
                    headers,
                    json_template,
                },
            );
        }
        let mut stage_throttle = None;
        for setting in &props.method_settings {
            let resolve = |v: Option<&Expr>| v.map(|v| self.resolve(v)).transpose();
            let whole_stage = resolve(setting.resource_path.as_ref())?.as_deref() == Some("/*")
                && resolve(setting.http_method.as_ref())?.as_deref() == Some("*");
            if whole_stage {
                stage_throttle = self.throttle(
                    &format!("{logical_id}: MethodSettings"),
                    setting.throttling_rate_limit.as_ref(),
                    setting.throttling_burst_limit.as_ref(),
                )?;
            }
        }
        let mut key_throttle = None;
        for resource in &self.resources {
            let Body::UsagePlan(plan) = &resource.body else {
                continue;
            };
            let ours = plan
                .api_stages
                .iter()
                .any(|s| s.api_id.referenced_id() == Some(logical_id.as_str()));
            if let (true, Some(throttle)) = (ours, &plan.throttle) {
                key_throttle = self.throttle(
                    &format!("{}: Throttle", resource.logical_id),
                    throttle.rate_limit.as_ref(),
                    throttle.burst_limit.as_ref(),
                )?;
            }
        }
        Ok(ApiSpec {
            logical_id: (*logical_id).clone(),
            stage,
            authorizer,
            api_key_required,
            gateway_responses,
            stage_throttle,
            key_throttle,
        })
    }

    /// A rate and a burst, both given and positive, or no limit.
    fn throttle(
        &self,
        at: &str,
        rate: Option<&Expr>,
        burst: Option<&Expr>,
    ) -> Result<Option<ThrottleSpec>, TemplateError> {
        let (Some(rate), Some(burst)) = (rate, burst) else {
            return Ok(None);
        };
        let rate: f64 = self
            .resolve(rate)?
            .parse()
            .map_err(|e| TemplateError::Invalid(format!("{at}: rate: {e}")))?;
        let burst =
            u32::try_from(self.resolve_i64(burst)?).map_err(|e| TemplateError::Invalid(format!("{at}: burst: {e}")))?;
        if !(rate > 0.0 && rate.is_finite()) || burst == 0 {
            return Err(TemplateError::Invalid(format!(
                "{at}: rate {rate} and burst {burst} must be positive"
            )));
        }
        Ok(Some(ThrottleSpec { rate, burst }))
    }

    pub fn functions(&self) -> Result<Vec<FunctionSpec>, TemplateError> {
        let mut functions = Vec::new();
        for resource in &self.resources {
            let Body::Function(function) = &resource.body else {
                continue;
            };
            let id = &resource.logical_id;
            let mut environment = BTreeMap::new();
            let mut unresolved = BTreeMap::new();
            let variables = self.global_variables.iter().map(|(k, v)| (k.as_str(), v));
            for (k, v) in variables.chain(function.variables.iter()) {
                match self.resolve(v) {
                    Ok(value) => {
                        unresolved.remove(k);
                        environment.insert(k.to_owned(), value);
                    }
                    Err(TemplateError::NoValue(parameter)) => {
                        environment.remove(k);
                        unresolved.insert(k.to_owned(), parameter);
                    }
                    Err(e) => return Err(e),
                }
            }
            let binary = function
                .binary
                .clone()
                .ok_or_else(|| TemplateError::Invalid(format!("{id}: Metadata.BuildProperties.Binary missing")))?;
            let mut routes = Vec::new();
            let mut sqs_sources = Vec::new();
            let mut schedules = Vec::new();
            let mut sns_topics = Vec::new();
            for (name, event) in &function.events {
                match event {
                    Event::Api(api) => {
                        let unsupported = |what: &str| {
                            Err(TemplateError::Invalid(format!(
                                "{id}: Api event {name}: {what} is not supported locally"
                            )))
                        };
                        if api.auth.is_some() {
                            return unsupported("per-route Auth");
                        }
                        let method = api.method.as_str().to_uppercase();
                        // The local gateway matches one method per route and one segment per
                        // variable; it would never route these.
                        if method == "ANY" {
                            return unsupported("Method any");
                        }
                        if api.path.as_str().contains("+}") {
                            return unsupported("a greedy path variable ({name+})");
                        }
                        routes.push(ApiRoute {
                            method,
                            path: api.path.0.clone(),
                        });
                    }
                    Event::Sqs(sqs) => sqs_sources.push(SqsSource {
                        queue_logical_id: sqs
                            .queue
                            .referenced_id()
                            .ok_or_else(|| TemplateError::Invalid(format!("{id}: SQS event without a queue")))?
                            .to_owned(),
                        batch_size: self.resolve_int(sqs.batch_size.as_ref())?.unwrap_or(10),
                        batching_window_secs: self
                            .resolve_int(sqs.maximum_batching_window_in_seconds.as_ref())?
                            .unwrap_or(0),
                        report_batch_item_failures: sqs
                            .function_response_types
                            .iter()
                            .any(|t| t.as_str() == "ReportBatchItemFailures"),
                        maximum_concurrency: self
                            .resolve_int(sqs.scaling_config.as_ref().and_then(|s| s.maximum_concurrency.as_ref()))?,
                    }),
                    Event::Sns(sns) => sns_topics.push(
                        sns.topic
                            .referenced_id()
                            .ok_or_else(|| TemplateError::Invalid(format!("{id}: SNS event without a topic")))?
                            .to_owned(),
                    ),
                    Event::Schedule {
                        kind,
                        expression,
                        properties,
                    } => schedules.push(self.schedule(id, name, kind, expression, properties)?),
                    Event::Other(kind) => {
                        return Err(TemplateError::Invalid(format!(
                            "{id}: event type {kind:?} is not supported locally"
                        )));
                    }
                }
            }
            let reserved_concurrency = self.reservation(id, function.reserved_concurrency.as_ref())?;
            let on_async_failure = self.async_failure(id, function.event_invoke_config.as_ref())?;
            functions.push(FunctionSpec {
                reserved_concurrency,
                on_async_failure,
                memory_mb: function
                    .memory_size
                    .or(self.global_memory_mb)
                    .unwrap_or(LAMBDA_DEFAULT_MEMORY_MB),
                logical_id: id.clone(),
                binary,
                environment,
                unresolved,
                routes,
                sqs_sources,
                schedules,
                sns_topics,
            });
        }
        Ok(functions)
    }

    /// A function's `ReservedConcurrentExecutions`: a number, `!Ref P`, or the template's way of
    /// making one optional, `!If [ReserveX, !Ref P, !Ref AWS::NoValue]`, whose condition is that
    /// P is not -1 (`tests/template_contract.rs` holds every function to that shape). -1 and
    /// `AWS::NoValue` reserve nothing.
    fn reservation(&self, id: &str, value: Option<&Expr>) -> Result<Option<u32>, TemplateError> {
        let value = match value {
            None => return Ok(None),
            Some(Expr::If { then, otherwise, .. }) if **otherwise == Expr::Ref("AWS::NoValue".to_owned()) => then,
            Some(value) => value,
        };
        let reserved = self
            .resolve_i64(value)
            .map_err(|e| TemplateError::Invalid(format!("{id}: ReservedConcurrentExecutions: {e}")))?;
        match reserved {
            -1 => Ok(None),
            n => u32::try_from(n).map(Some).map_err(|_| {
                TemplateError::Invalid(format!("{id}: ReservedConcurrentExecutions {n} is not a concurrency"))
            }),
        }
    }

    fn async_failure(&self, id: &str, config: Option<&EventInvokeConfig>) -> Result<AsyncFailure, TemplateError> {
        let invalid = |what: String| TemplateError::Invalid(format!("{id}: EventInvokeConfig: {what}"));
        let retries = match config.and_then(|c| c.maximum_retry_attempts.as_ref()) {
            None => 2,
            Some(value) => match self.resolve_i64(value)? {
                n @ 0..=2 => n as u32,
                n => return Err(invalid(format!("MaximumRetryAttempts {n} is not 0, 1 or 2"))),
            },
        };
        let destination = config
            .and_then(|c| c.destination_config.as_ref())
            .and_then(|d| d.on_failure.as_ref());
        let queue_logical_id = match destination {
            None => None,
            Some(d) if d.kind.as_ref().is_some_and(|k| k.as_str() != "SQS") => None,
            Some(d) => match &d.destination {
                Expr::GetAtt { resource, attribute } if attribute == "Arn" && self.is_queue(resource) => {
                    Some(resource.clone())
                }
                other => return Err(invalid(format!("OnFailure {other:?} is not !GetAtt <a queue>.Arn"))),
            },
        };
        Ok(AsyncFailure {
            retries,
            queue_logical_id,
        })
    }

    fn is_queue(&self, logical_id: &str) -> bool {
        self.resource(logical_id)
            .is_some_and(|r| matches!(r.body, Body::Queue(_)))
    }

    /// A `Schedule` or `ScheduleV2` event (`kind`) named `name` of function `id`.
    fn schedule(
        &self,
        id: &str,
        name: &str,
        kind: &str,
        expression: &Expr,
        props: &ScheduleProperties,
    ) -> Result<ScheduleSpec, TemplateError> {
        let context = |what: String| TemplateError::Invalid(format!("{id}: {kind} event {name}: {what}"));
        let unsupported: &[(&str, bool)] = match kind {
            "Schedule" => &[("Input", props.input.is_some())],
            _ => &[
                ("Input", props.input.is_some()),
                ("StartDate", props.start_date.is_some()),
                ("EndDate", props.end_date.is_some()),
            ],
        };
        // These change what the function receives or when it runs; the runner cannot honour them.
        if let Some((p, _)) = unsupported.iter().find(|(_, set)| *set) {
            return Err(context(format!("{p} is not supported locally")));
        }
        let expression = self.resolve(expression)?;
        let rate = rate_period(&expression).map_err(context)?;
        let enabled = match (&props.enabled, &props.state) {
            (Some(_), Some(_)) => return Err(context("Enabled and State cannot both be set".into())),
            (Some(_), None) if kind != "Schedule" => {
                return Err(context("Enabled is not a ScheduleV2 property".into()));
            }
            (Some(enabled), None) => match self.resolve(enabled)?.as_str() {
                "true" => true,
                "false" => false,
                other => return Err(context(format!("Enabled must be true or false, got {other:?}"))),
            },
            (None, Some(state)) => match self.resolve(state)?.as_str() {
                "ENABLED" => true,
                "DISABLED" => false,
                other => return Err(context(format!("State {other:?} is not supported locally"))),
            },
            (None, None) => true,
        };
        Ok(ScheduleSpec {
            name: name.to_owned(),
            expression,
            rate,
            enabled,
        })
    }

    /// Environment variables that functions take from resources (queue URLs, table names), as the
    /// function environments in the template name them.
    pub fn resource_environment(&self) -> Result<BTreeMap<String, String>, TemplateError> {
        let mut env = BTreeMap::new();
        let owns = self.resources.iter().filter_map(|r| match &r.body {
            Body::Function(f) => Some(f.variables.iter()),
            _ => None,
        });
        let globals = self.global_variables.iter().map(|(k, v)| (k.as_str(), v));
        for (k, v) in globals.chain(owns.flatten()) {
            let from_resource = match v {
                Expr::Ref(name) => !self.declared.contains(name) && !name.starts_with("AWS::"),
                // A name built from the stage (`fcfs-${Stage}-discord-webhook`), or an attribute.
                Expr::Sub(_) | Expr::GetAtt { .. } => true,
                Expr::Literal(_) | Expr::If { .. } | Expr::Unsupported(_) => false,
            };
            if from_resource {
                env.insert(k.to_owned(), self.resolve(v)?);
            }
        }
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = include_str!("../../template.yaml");

    fn template(stage: &str) -> Template {
        let overrides = BTreeMap::from([("Stage".to_owned(), stage.to_owned())]);
        Template::parse(
            TEMPLATE,
            &overrides,
            Placement::local("http://127.0.0.1:4566", "us-east-1"),
        )
        .unwrap()
    }

    #[test]
    fn queues_resolve_names_and_redrive() {
        let queues = template("t1").queues().unwrap();
        let main = queues.iter().find(|q| q.logical_id == "IssueQueue").unwrap();
        assert_eq!(main.name, "fcfs-t1-issue-requests");
        assert_eq!(main.redrive, Some(("IssueDeadLetterQueue".to_owned(), 5)));
        let dlq = queues.iter().find(|q| q.logical_id == "IssueDeadLetterQueue").unwrap();
        assert_eq!(dlq.name, "fcfs-t1-issue-requests-dlq");
        assert_eq!(dlq.redrive, None);
    }

    #[test]
    fn function_environment_resolves_queue_urls() {
        let env = template("t2").resource_environment().unwrap();
        assert_eq!(
            env.get("ISSUE_QUEUE_URL").map(String::as_str),
            Some("http://127.0.0.1:4566/000000000000/fcfs-t2-issue-requests")
        );
        assert!(!env.contains_key("REDIS_URL"), "parameters are not resources");
    }

    #[test]
    fn reservations_and_on_failure_destinations_are_read() {
        let functions = template("t9").functions().unwrap();
        let find = |id: &str| functions.iter().find(|f| f.logical_id == id).unwrap();
        let scheduler = find("GradingSchedulerFunction");
        assert_eq!(scheduler.reserved_concurrency, Some(1));
        assert_eq!(
            scheduler.on_async_failure,
            AsyncFailure {
                retries: 2,
                queue_logical_id: Some("AlertDeadLetterQueue".to_owned())
            }
        );
        assert_eq!(find("IssueApiFunction").reserved_concurrency, Some(400));
        // MemorySize: the function's own, else the Globals'.
        assert_eq!(find("AuthorizerFunction").memory_mb, 128);
        assert_eq!(find("IssueWriterFunction").memory_mb, 512);
        assert_eq!(find("IssueApiFunction").memory_mb, 256);
        assert_eq!(
            find("AuthorizerFunction").on_async_failure,
            AsyncFailure {
                retries: 2,
                queue_logical_id: None
            },
            "invoked synchronously only: Lambda's defaults"
        );
        let overrides = BTreeMap::from([("IssueApiReservedConcurrency".to_owned(), "-1".to_owned())]);
        let none = Template::parse(
            TEMPLATE,
            &overrides,
            Placement::local("http://127.0.0.1:4566", "us-east-1"),
        )
        .unwrap()
        .functions()
        .unwrap();
        let issue = none.iter().find(|f| f.logical_id == "IssueApiFunction").unwrap();
        assert_eq!(issue.reserved_concurrency, None, "-1 reserves nothing");
    }

    #[test]
    fn sqs_event_source_is_read() {
        let functions = template("t3").functions().unwrap();
        let writer = functions.iter().find(|f| f.binary == "issue-writer").unwrap();
        let source = &writer.sqs_sources[0];
        assert_eq!(source.queue_logical_id, "IssueQueue");
        assert_eq!(source.batch_size, 10_000);
        assert!(source.report_batch_item_failures);
        assert_eq!(source.maximum_concurrency, Some(5));
    }

    #[test]
    fn api_and_authorizer_are_read() {
        let t = template("t4");
        let api = t.api().unwrap();
        assert_eq!(api.stage, "t4");
        let auth = api.authorizer.unwrap();
        assert_eq!(auth.function_logical_id, "AuthorizerFunction");
        assert_eq!(auth.identity_header, "X-API-KEY");
        assert_eq!(auth.reauthorize_every_secs, 300);
        let unsupported = TEMPLATE.replace("FunctionPayloadType: REQUEST", "FunctionPayloadType: TOKEN");
        let t = Template::parse(&unsupported, &BTreeMap::new(), Placement::local("http://x", "r")).unwrap();
        assert!(t.api().unwrap_err().to_string().contains("not supported locally"));
    }

    #[test]
    fn variables_from_parameters_without_a_default_are_reported_not_invented() {
        let functions = template("t5").functions().unwrap();
        let writer = functions.iter().find(|f| f.binary == "issue-writer").unwrap();
        assert_eq!(writer.unresolved.get("REDIS_URL").map(String::as_str), Some("RedisUrl"));
        assert_eq!(
            writer.unresolved.get("DATABASE_SECRET_ARN").map(String::as_str),
            Some("DatabaseSecretArn")
        );
        assert!(!writer.environment.contains_key("REDIS_URL"));
        // A parameter with a default resolves as before.
        assert_eq!(
            writer.environment.get("REDIS_CLUSTER").map(String::as_str),
            Some("false")
        );
        let overrides = BTreeMap::from([("RedisUrl".to_owned(), "rediss://cache:6379".to_owned())]);
        let t = Template::parse(TEMPLATE, &overrides, Placement::local("http://x", "us-east-1")).unwrap();
        let writer = t
            .functions()
            .unwrap()
            .into_iter()
            .find(|f| f.binary == "issue-writer")
            .unwrap();
        assert_eq!(
            writer.environment.get("REDIS_URL").map(String::as_str),
            Some("rediss://cache:6379")
        );
        assert!(!writer.unresolved.contains_key("REDIS_URL"));
        // Anywhere else, a missing value is an error that names the parameter.
        let err = t.resolve(&yaml_serde::from_str("!Ref VpcId").unwrap()).unwrap_err();
        assert!(matches!(&err, TemplateError::NoValue(p) if p == "VpcId"), "{err}");
    }

    #[test]
    fn api_keys_are_required_from_the_authorizer_only() {
        assert!(template("t6").api().unwrap().api_key_required);
        let header = TEMPLATE.replace("ApiKeySourceType: AUTHORIZER", "ApiKeySourceType: HEADER");
        assert_ne!(header, TEMPLATE);
        let t = Template::parse(&header, &BTreeMap::new(), Placement::local("http://x", "r")).unwrap();
        let err = t.api().unwrap_err().to_string();
        assert!(
            err.contains("ApiKeyRequired is supported locally only with ApiKeySourceType AUTHORIZER"),
            "{err}"
        );
        let optional = TEMPLATE.replace("ApiKeyRequired: true", "ApiKeyRequired: false");
        let t = Template::parse(&optional, &BTreeMap::new(), Placement::local("http://x", "r")).unwrap();
        assert!(!t.api().unwrap().api_key_required);
    }

    #[test]
    fn unknown_parameter_is_rejected() {
        let overrides = BTreeMap::from([("Nope".to_owned(), "x".to_owned())]);
        let err = Template::parse(TEMPLATE, &overrides, Placement::local("http://x", "us-east-1"))
            .err()
            .unwrap();
        assert!(err.to_string().contains("unknown parameter Nope"));
    }

    /// A one-function template whose `Events` are `events` (YAML, indented for the mapping).
    fn schedules(events: &str) -> Result<Vec<ScheduleSpec>, TemplateError> {
        let text = format!(
            "Parameters:\n  RecoveryRate:\n    Type: String\n    Default: rate(5 minutes)\n\
             Resources:\n  IssueRecoveryFunction:\n    Type: AWS::Serverless::Function\n\
             \x20   Metadata: {{BuildProperties: {{Binary: issue-recovery}}}}\n\
             \x20   Properties:\n      Events:\n{events}"
        );
        let t = Template::parse(&text, &BTreeMap::new(), Placement::local("http://x", "us-east-1"))?;
        Ok(t.functions()?.remove(0).schedules)
    }

    fn one(expression: &str) -> Result<ScheduleSpec, TemplateError> {
        let events = format!(
            "        Tick:\n          Type: Schedule\n          Properties:\n            Schedule: {expression}\n"
        );
        schedules(&events).map(|mut s| s.remove(0))
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn rate_units() {
        assert_eq!(parse_rate("rate(1 minute)").unwrap(), MINUTE);
        assert_eq!(parse_rate("rate(5 minutes)").unwrap(), 5 * MINUTE);
        assert_eq!(parse_rate("rate(1 hour)").unwrap(), 60 * MINUTE);
        assert_eq!(parse_rate("rate(2 hours)").unwrap(), 120 * MINUTE);
        assert_eq!(parse_rate("rate(1 day)").unwrap(), 24 * 60 * MINUTE);
        assert_eq!(parse_rate("rate(7 days)").unwrap(), 7 * 24 * 60 * MINUTE);
    }

    #[test]
    fn rate_unit_is_singular_exactly_for_one() {
        for bad in [
            "rate(1 minutes)",
            "rate(5 minute)",
            "rate(1 hours)",
            "rate(2 hour)",
            "rate(1 days)",
            "rate(3 day)",
        ] {
            let err = parse_rate(bad).unwrap_err().to_string();
            assert!(err.contains("singular for 1 and plural otherwise"), "{bad}: {err}");
        }
    }

    #[test]
    fn rate_value_is_a_whole_number_of_at_least_one() {
        assert!(
            parse_rate("rate(0 minutes)")
                .unwrap_err()
                .to_string()
                .contains("at least 1")
        );
        assert!(parse_rate("rate(0 minute)").is_err());
        for bad in [
            "rate(-1 minutes)",
            "rate(+2 minutes)",
            "rate(1.5 hours)",
            "rate( minutes)",
            "rate(minutes)",
            "rate(2  minutes)",
            "rate(2 seconds)",
            "rate(2 weeks)",
            "rate(99999999999999999999 days)",
            "rate(999999999999999999 days)",
            "rate(2 minutes",
            "Rate(2 minutes)",
        ] {
            let err = parse_rate(bad).unwrap_err().to_string();
            assert!(err.contains("supports only rate() schedules"), "{bad}: {err}");
        }
    }

    #[test]
    fn cron_and_at_are_refused() {
        for expression in ["cron(0 12 * * ? *)", "at(2030-01-01T00:00:00)"] {
            let err = parse_rate(expression).unwrap_err();
            assert!(matches!(err, TemplateError::Invalid(_)));
            assert!(err.to_string().contains("supports only rate() schedules"), "{err}");
        }
        let err = one("cron(0/5 * * * ? *)").unwrap_err().to_string();
        assert!(
            err.contains("IssueRecoveryFunction: Schedule event Tick") && err.contains("only rate()"),
            "{err}"
        );
    }

    #[test]
    fn schedule_event_is_read() {
        let s = one("rate(1 minute)").unwrap();
        assert_eq!(
            s,
            ScheduleSpec {
                name: "Tick".into(),
                expression: "rate(1 minute)".into(),
                rate: MINUTE,
                enabled: true
            }
        );
        // The expression may come from a parameter, through !Ref or !Sub.
        assert_eq!(one("!Ref RecoveryRate").unwrap().rate, 5 * MINUTE);
        assert_eq!(one("!Sub \"${RecoveryRate}\"").unwrap().expression, "rate(5 minutes)");
    }

    #[test]
    fn schedule_can_be_disabled() {
        let events = |extra: &str| {
            format!(
                "        Tick:\n          Type: Schedule\n          Properties:\n            Schedule: rate(1 hour)\n{extra}"
            )
        };
        let enabled = |extra: &str| schedules(&events(extra)).map(|s| s[0].enabled);
        assert!(!enabled("            Enabled: false\n").unwrap());
        assert!(enabled("            Enabled: true\n").unwrap());
        assert!(!enabled("            State: DISABLED\n").unwrap());
        assert!(enabled("            State: ENABLED\n").unwrap());
        let both = enabled("            Enabled: true\n            State: ENABLED\n").unwrap_err();
        assert!(both.to_string().contains("cannot both be set"), "{both}");
        let not_bool = enabled("            Enabled: sometimes\n").unwrap_err();
        assert!(not_bool.to_string().contains("true or false"), "{not_bool}");
    }

    #[test]
    fn schedule_v2_reads_its_expression_and_state() {
        let events = "        Hourly:\n          Type: ScheduleV2\n          Properties:\n            ScheduleExpression: rate(1 hour)\n\
                      \x20       Off:\n          Type: ScheduleV2\n          Properties:\n            ScheduleExpression: rate(3 days)\n            State: DISABLED\n";
        let got = schedules(events).unwrap();
        assert_eq!(
            got.iter()
                .map(|s| (s.name.as_str(), s.rate, s.enabled))
                .collect::<Vec<_>>(),
            [("Hourly", 60 * MINUTE, true), ("Off", 3 * 24 * 60 * MINUTE, false)]
        );
    }

    #[test]
    fn schedule_properties_the_runner_cannot_honour_are_refused() {
        let input = "        Tick:\n          Type: Schedule\n          Properties:\n            Schedule: rate(1 hour)\n            Input: '{\"a\": 1}'\n";
        assert!(
            schedules(input)
                .unwrap_err()
                .to_string()
                .contains("Input is not supported locally")
        );
        let missing = "        Tick:\n          Type: Schedule\n          Properties:\n            Enabled: true\n";
        let err = schedules(missing).unwrap_err().to_string();
        assert!(
            err.contains("IssueRecoveryFunction: event Tick (Schedule): missing field `Schedule`"),
            "{err}"
        );
    }

    /// A template of `resources` (YAML, indented as `Resources`' entries) with a `Stage` parameter.
    fn load(resources: &str) -> Result<Template, TemplateError> {
        let text = format!("Parameters:\n  Stage:\n    Type: String\n    Default: t\nResources:\n{resources}");
        Template::parse(&text, &BTreeMap::new(), Placement::local("http://x", "us-east-1"))
    }

    /// One function, `ApiFunction` (binary `api`), whose one event `Route` has these properties.
    fn route(properties: &str) -> Result<Template, TemplateError> {
        load(&format!(
            "  ApiFunction:\n    Type: AWS::Serverless::Function\n    Metadata: {{BuildProperties: {{Binary: api}}}}\n\
             \x20   Properties:\n      Events:\n        Route:\n          Type: Api\n          Properties:\n{properties}"
        ))
    }

    fn load_error(result: Result<Template, TemplateError>) -> String {
        match result {
            Ok(_) => panic!("the template loaded"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn an_api_event_without_method_or_path_does_not_load() {
        let err = load_error(route("            Path: /v1/things\n"));
        assert!(
            err.contains("ApiFunction: event Route (Api)") && err.contains("missing field `Method`"),
            "{err}"
        );
        let err = load_error(route("            Method: get\n"));
        assert!(
            err.contains("ApiFunction: event Route (Api)") && err.contains("missing field `Path`"),
            "{err}"
        );
        // Present but empty is no better than missing.
        let err = load_error(route("            Path: /v1/things\n            Method: \"\"\n"));
        assert!(
            err.contains("ApiFunction") && err.contains("Method \"\" is not an HTTP method"),
            "{err}"
        );
        let err = load_error(route("            Path: \"\"\n            Method: get\n"));
        assert!(
            err.contains("ApiFunction") && err.contains("Path \"\" must start with /"),
            "{err}"
        );
        let t = route("            Path: /v1/things/{thingId}\n            Method: get\n").unwrap();
        let routes = &t.functions().unwrap()[0].routes;
        assert_eq!(
            routes,
            &[ApiRoute {
                method: "GET".into(),
                path: "/v1/things/{thingId}".into()
            }]
        );
    }

    #[test]
    fn malformed_api_events_do_not_load() {
        for (properties, expected) in [
            (
                "Path: /v1/things\n            Method: fetch",
                "Method \"fetch\" is not an HTTP method",
            ),
            (
                "Path: v1/things\n            Method: get",
                "Path \"v1/things\" must start with /",
            ),
            (
                "Path: /v1/x{id}\n            Method: get",
                "segment \"x{id}\" is not a {variable}",
            ),
            (
                "Path: /v1/{}\n            Method: get",
                "segment \"{}\" is not a {variable}",
            ),
            // SAM builds the API from these before CloudFormation resolves anything.
            ("Path: !Ref Stage\n            Method: get", "!Ref is not accepted here"),
            (
                "Path: /v1/things\n            Method: [get, post]",
                "expected a scalar written out",
            ),
        ] {
            let err = load_error(route(&format!("            {properties}\n")));
            assert!(
                err.contains("ApiFunction: event Route (Api)") && err.contains(expected),
                "{err}"
            );
        }
    }

    #[test]
    fn routes_the_local_gateway_cannot_serve_are_refused_when_read() {
        for (properties, expected) in [
            (
                "Path: /v1/things\n            Method: any",
                "Method any is not supported locally",
            ),
            ("Path: /v1/{proxy+}\n            Method: get", "greedy path variable"),
            (
                "Path: /v1/things\n            Method: get\n            Auth: {ApiKeyRequired: false}",
                "per-route Auth is not supported locally",
            ),
        ] {
            // Well-formed: fcfs-admin can still provision from such a template.
            let t = route(&format!("            {properties}\n")).unwrap();
            let err = t.functions().unwrap_err().to_string();
            assert!(
                err.contains("ApiFunction: Api event Route") && err.contains(expected),
                "{err}"
            );
        }
    }

    #[test]
    fn other_malformed_resources_do_not_load_and_name_the_resource() {
        let queue = |properties: &str| {
            load(&format!(
                "  Jobs:\n    Type: AWS::SQS::Queue\n    Properties:\n      QueueName: jobs\n{properties}"
            ))
        };
        for (result, expected) in [
            (
                load("  Jobs:\n    Properties: {}\n"),
                "Resources.Jobs: missing field `Type`",
            ),
            (
                load("  Jobs:\n    Type: AWS::SQS::Queue\n  Jobs:\n    Type: AWS::SQS::Queue\n"),
                "Jobs is written twice",
            ),
            (
                queue("      RedrivePolicy:\n        deadLetterTargetArn: !GetAtt Dead.Arn\n"),
                "Jobs: RedrivePolicy: missing field `maxReceiveCount`",
            ),
            (
                queue("      VisibilityTimeout: !GetAtt Dead\n"),
                "!GetAtt Dead: expected Resource.Attribute",
            ),
            (
                queue("      VisibilityTimeout: {Ref: Stage, Extra: 1}\n"),
                "an intrinsic function is a mapping of one key",
            ),
            (
                queue("      VisibilityTimeout: {Seconds: 30}\n"),
                "found a mapping with key Seconds",
            ),
            (
                load(
                    "  Worker:\n    Type: AWS::Serverless::Function\n    Properties:\n      Events:\n        Jobs:\n          Type: SQS\n          Properties: {BatchSize: 5}\n",
                ),
                "Worker: event Jobs (SQS): missing field `Queue`",
            ),
            (
                load("  Api:\n    Type: AWS::Serverless::Api\n    Properties: {Name: x}\n"),
                "Api: missing field `StageName`",
            ),
        ] {
            let err = load_error(result);
            assert!(err.contains(expected), "expected {expected:?} in: {err}");
        }
    }

    #[test]
    fn every_short_form_intrinsic_loads_and_only_ref_sub_getatt_resolve() {
        let tags = [
            "!Ref Stage",
            "!Sub x-${Stage}",
            "!GetAtt Jobs.Arn",
            "!If [Prod, a, !Ref AWS::NoValue]",
            "!Equals [!Ref Stage, prod]",
            "!Select [0, !GetAZs '']",
            "!Split [',', 'a,b']",
            "!Join ['', [a, !Ref Stage]]",
            "!FindInMap [M, K, V]",
            "!Not [!Equals [a, b]]",
            "!And [!Condition Prod, !Condition Big]",
            "!Or [!Condition Prod, !Condition Big]",
            "!ImportValue other-stack-queue",
            "!GetAZs us-east-1",
            "!Base64 text",
            "!Cidr [10.0.0.0/16, 4, 8]",
            "!Sub ['x-${Name}', {Name: !Ref Stage}]",
        ];
        let variables: String = tags
            .iter()
            .enumerate()
            .map(|(i, tag)| format!("          V{i:02}: {tag}\n"))
            .collect();
        let template = |variables: &str| {
            load(&format!(
                "  Jobs:\n    Type: AWS::SQS::Queue\n    Properties: {{QueueName: !Sub 'jobs-${{Stage}}'}}\n\
                 \x20 Worker:\n    Type: AWS::Serverless::Function\n    Metadata: {{BuildProperties: {{Binary: worker}}}}\n\
                 \x20   Properties:\n      Policies: [!If [Prod, {{Statement: []}}, !Ref AWS::NoValue]]\n\
                 \x20     Environment:\n        Variables:\n{variables}"
            ))
        };
        let t = template(&variables).unwrap();
        let err = t.functions().unwrap_err().to_string();
        assert!(err.contains("intrinsic !If is not supported locally"), "{err}");
        for (i, tag) in tags.iter().enumerate().skip(3) {
            let t = template(&format!("          V: {tag}\n")).unwrap();
            let err = t.functions().unwrap_err().to_string();
            let name = tag.split([' ', '[']).next().unwrap();
            assert!(err.contains(&format!("intrinsic {name}")), "{i}: {tag}: {err}");
        }
        let t = template(&variables.lines().take(3).map(|l| format!("{l}\n")).collect::<String>()).unwrap();
        let env = &t.functions().unwrap()[0].environment;
        assert_eq!(
            env.values().map(String::as_str).collect::<Vec<_>>(),
            ["t", "x-t", "arn:aws:sqs:us-east-1:000000000000:jobs-t"]
        );
    }

    #[test]
    fn long_form_intrinsics_resolve_as_the_short_ones() {
        let t = load(
            "  Jobs:\n    Type: AWS::SQS::Queue\n    Properties:\n      QueueName: {\"Fn::Sub\": \"jobs-${Stage}\"}\n\
             \x20 Worker:\n    Type: AWS::Serverless::Function\n    Metadata: {BuildProperties: {Binary: worker}}\n\
             \x20   Properties:\n      Environment:\n        Variables:\n\
             \x20         A: {Ref: Jobs}\n          B: {\"Fn::GetAtt\": [Jobs, Arn]}\n          C: !GetAtt [Jobs, QueueName]\n\
             \x20         D: 42\n          E: true\n",
        )
        .unwrap();
        let env = &t.functions().unwrap()[0].environment;
        assert_eq!(
            env.values().map(String::as_str).collect::<Vec<_>>(),
            [
                "http://x/000000000000/jobs-t",
                "arn:aws:sqs:us-east-1:000000000000:jobs-t",
                "jobs-t",
                "42",
                "true"
            ]
        );
    }
}
