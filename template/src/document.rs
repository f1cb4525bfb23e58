//! `template.yaml` as typed structs: the parts of a SAM template the runner, fcfs-admin and the
//! tests read, checked for shape when the template is loaded. What a resource's `Properties` hold
//! depends on its `Type`, so they are read in a second step, by type; a resource of another type
//! keeps only its type. Everything else in the template (policies, conditions, outputs) is skipped.
//!
//! Shape errors (a key missing or of the wrong kind) are found here; whether the local runner can
//! reproduce what is declared (an authorizer kind, a schedule expression) is decided where the
//! runner asks for it, so fcfs-admin can still provision queues from a template the runner cannot
//! serve.

use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use yaml_serde::Value;

use crate::TemplateError;
use crate::values::{Expr, Literal, Ordered};

pub(crate) const QUEUE: &str = "AWS::SQS::Queue";
pub(crate) const TABLE: &str = "AWS::DynamoDB::Table";
pub(crate) const FUNCTION: &str = "AWS::Serverless::Function";
pub(crate) const API: &str = "AWS::Serverless::Api";
pub(crate) const USAGE_PLAN: &str = "AWS::ApiGateway::UsagePlan";

/// The methods SAM accepts in an `Api` event (`any` is every method).
const METHODS: [&str; 8] = ["get", "post", "put", "delete", "patch", "head", "options", "any"];

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Document {
    #[serde(default)]
    pub parameters: Ordered<Parameter>,
    #[serde(default)]
    pub globals: Globals,
    #[serde(default)]
    pub resources: Ordered<RawResource>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Parameter {
    pub default: Option<Literal>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Globals {
    #[serde(default)]
    pub function: FunctionGlobals,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct FunctionGlobals {
    #[serde(default)]
    pub environment: Environment,
    pub memory_size: Option<u32>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Environment {
    #[serde(default)]
    pub variables: Ordered<Expr>,
}

/// A resource before its type is known: its properties are read once it is.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RawResource {
    #[serde(rename = "Type")]
    pub kind: Literal,
    #[serde(default)]
    pub properties: Value,
    #[serde(default)]
    pub metadata: Value,
}

pub(crate) struct Resource {
    pub logical_id: String,
    pub kind: String,
    pub body: Body,
}

pub(crate) enum Body {
    Queue(QueueProperties),
    Table(TableProperties),
    Api(ApiProperties),
    UsagePlan(UsagePlanProperties),
    Function(Function),
    /// A type nothing here reads beyond its name.
    Other,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct QueueProperties {
    pub queue_name: Option<Expr>,
    pub visibility_timeout: Option<Expr>,
    pub message_retention_period: Option<Expr>,
    pub redrive_policy: Option<RedrivePolicy>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RedrivePolicy {
    pub dead_letter_target_arn: Expr,
    pub max_receive_count: Expr,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct TableProperties {
    pub table_name: Option<Expr>,
    #[serde(default)]
    pub attribute_definitions: Vec<AttributeDefinition>,
    #[serde(default)]
    pub key_schema: Vec<KeyElement>,
    #[serde(default)]
    pub global_secondary_indexes: Vec<GlobalIndex>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct AttributeDefinition {
    pub attribute_name: Literal,
    pub attribute_type: Literal,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct KeyElement {
    pub attribute_name: Literal,
    pub key_type: Literal,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct GlobalIndex {
    pub index_name: Literal,
    #[serde(default)]
    pub key_schema: Vec<KeyElement>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ApiProperties {
    pub stage_name: Expr,
    pub api_key_source_type: Option<Expr>,
    pub auth: Option<ApiAuth>,
    #[serde(default)]
    pub gateway_responses: Ordered<GatewayResponseDefinition>,
    #[serde(default)]
    pub method_settings: Vec<MethodSetting>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct MethodSetting {
    pub resource_path: Option<Expr>,
    pub http_method: Option<Expr>,
    pub throttling_rate_limit: Option<Expr>,
    pub throttling_burst_limit: Option<Expr>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct UsagePlanProperties {
    #[serde(default)]
    pub api_stages: Vec<UsagePlanStage>,
    pub throttle: Option<UsagePlanThrottle>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct UsagePlanStage {
    pub api_id: Expr,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct UsagePlanThrottle {
    pub rate_limit: Option<Expr>,
    pub burst_limit: Option<Expr>,
}

/// SAM's Gateway Response Object.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct GatewayResponseDefinition {
    pub status_code: Option<Expr>,
    pub response_parameters: Option<GatewayResponseParameters>,
    #[serde(default)]
    pub response_templates: Ordered<Expr>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct GatewayResponseParameters {
    #[serde(default)]
    pub headers: Ordered<Expr>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ApiAuth {
    pub default_authorizer: Option<Literal>,
    pub api_key_required: Option<Expr>,
    #[serde(default)]
    pub authorizers: Ordered<AuthorizerDefinition>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct AuthorizerDefinition {
    pub function_payload_type: Option<Literal>,
    pub function_arn: Option<Expr>,
    pub identity: Option<Identity>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Identity {
    #[serde(default)]
    pub headers: Vec<Literal>,
    pub query_strings: Option<IgnoredAny>,
    pub stage_variables: Option<IgnoredAny>,
    pub context: Option<IgnoredAny>,
    pub reauthorize_every: Option<Expr>,
}

impl Identity {
    /// The identity sources besides headers that are declared.
    pub fn other_sources(&self) -> impl Iterator<Item = &'static str> {
        [
            ("QueryStrings", self.query_strings.is_some()),
            ("StageVariables", self.stage_variables.is_some()),
            ("Context", self.context.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, declared)| declared.then_some(name))
    }
}

pub(crate) struct Function {
    /// `Metadata.BuildProperties.Binary`: the workspace binary cargo-lambda builds.
    pub binary: Option<String>,
    pub variables: Ordered<Expr>,
    pub events: Vec<(String, Event)>,
    pub reserved_concurrency: Option<Expr>,
    pub event_invoke_config: Option<EventInvokeConfig>,
    pub memory_size: Option<u32>,
}

/// How Lambda treats the function's asynchronous invocations (schedules, SNS).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct EventInvokeConfig {
    pub maximum_retry_attempts: Option<Expr>,
    pub destination_config: Option<DestinationConfig>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DestinationConfig {
    pub on_failure: Option<Destination>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Destination {
    #[serde(rename = "Type")]
    pub kind: Option<Literal>,
    pub destination: Expr,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct FunctionProperties {
    #[serde(default)]
    environment: Environment,
    #[serde(default)]
    events: Ordered<RawEvent>,
    reserved_concurrent_executions: Option<Expr>,
    event_invoke_config: Option<EventInvokeConfig>,
    memory_size: Option<u32>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct FunctionMetadata {
    #[serde(default)]
    build_properties: BuildProperties,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BuildProperties {
    binary: Option<Literal>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawEvent {
    #[serde(rename = "Type")]
    kind: Literal,
    #[serde(default)]
    properties: Value,
}

pub(crate) enum Event {
    Api(ApiEvent),
    Sqs(SqsEvent),
    Sns(SnsEvent),
    /// `kind` is `Schedule` or `ScheduleV2`; `expression` is the one its kind names.
    Schedule {
        kind: &'static str,
        expression: Expr,
        properties: ScheduleProperties,
    },
    /// An event type nothing here reads (S3, DynamoDB...), by name.
    Other(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ApiEvent {
    pub path: Literal,
    pub method: Literal,
    pub auth: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct SqsEvent {
    pub queue: Expr,
    pub batch_size: Option<Expr>,
    pub maximum_batching_window_in_seconds: Option<Expr>,
    #[serde(default)]
    pub function_response_types: Vec<Literal>,
    pub scaling_config: Option<ScalingConfig>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ScalingConfig {
    pub maximum_concurrency: Option<Expr>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct SnsEvent {
    pub topic: Expr,
}

/// The properties of both schedule kinds: `Schedule` (an EventBridge rule) has `Schedule` and
/// `Enabled`; `ScheduleV2` (EventBridge Scheduler) has `ScheduleExpression`, `StartDate` and
/// `EndDate`; both have `State` and `Input`. Which belong to which kind is checked where the runner
/// reads them, with what it cannot honour.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ScheduleProperties {
    schedule: Option<Expr>,
    schedule_expression: Option<Expr>,
    pub enabled: Option<Expr>,
    pub state: Option<Expr>,
    pub input: Option<IgnoredAny>,
    pub start_date: Option<IgnoredAny>,
    pub end_date: Option<IgnoredAny>,
}

/// Reads `value` as a `T`; on failure, says where: `at` (a resource, an event), then the key
/// inside it when the error is deeper than `value` itself.
/// (A `Value` has no line numbers left, hence the path.)
fn typed<T: DeserializeOwned>(at: &str, value: Value) -> Result<T, TemplateError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let at = match path.as_str() {
            "." => at.to_owned(),
            inner => format!("{at}: {inner}"),
        };
        TemplateError::Shape {
            at,
            source: e.into_inner(),
        }
    })
}

impl Resource {
    pub fn read(logical_id: String, raw: RawResource) -> Result<Self, TemplateError> {
        let at = logical_id.as_str();
        let body = match raw.kind.as_str() {
            QUEUE => Body::Queue(typed(at, raw.properties)?),
            TABLE => Body::Table(typed(at, raw.properties)?),
            API => Body::Api(typed(at, raw.properties)?),
            USAGE_PLAN => Body::UsagePlan(typed(at, raw.properties)?),
            FUNCTION => Body::Function(Function::read(at, raw.properties, raw.metadata)?),
            _ => Body::Other,
        };
        Ok(Self {
            kind: raw.kind.0,
            body,
            logical_id,
        })
    }
}

impl Function {
    fn read(id: &str, properties: Value, metadata: Value) -> Result<Self, TemplateError> {
        let properties: FunctionProperties = typed(id, properties)?;
        let metadata: FunctionMetadata = typed(&format!("{id}: Metadata"), metadata)?;
        let events = properties
            .events
            .0
            .into_iter()
            .map(|(name, raw)| Ok((name.clone(), Event::read(&format!("{id}: event {name}"), raw)?)))
            .collect::<Result<_, TemplateError>>()?;
        Ok(Self {
            binary: metadata.build_properties.binary.map(|b| b.0),
            variables: properties.environment.variables,
            events,
            reserved_concurrency: properties.reserved_concurrent_executions,
            event_invoke_config: properties.event_invoke_config,
            memory_size: properties.memory_size,
        })
    }
}

impl Event {
    fn read(at: &str, raw: RawEvent) -> Result<Self, TemplateError> {
        let at = format!("{at} ({})", raw.kind);
        Ok(match raw.kind.as_str() {
            "Api" => {
                let event: ApiEvent = typed(&at, raw.properties)?;
                event.check(&at)?;
                Self::Api(event)
            }
            "SQS" => Self::Sqs(typed(&at, raw.properties)?),
            "SNS" => Self::Sns(typed(&at, raw.properties)?),
            "Schedule" | "ScheduleV2" => {
                let (kind, key) = match raw.kind.as_str() {
                    "Schedule" => ("Schedule", "Schedule"),
                    _ => ("ScheduleV2", "ScheduleExpression"),
                };
                let mut properties: ScheduleProperties = typed(&at, raw.properties)?;
                let expression = match kind {
                    "Schedule" => properties.schedule.take(),
                    _ => properties.schedule_expression.take(),
                };
                let expression =
                    expression.ok_or_else(|| TemplateError::Invalid(format!("{at}: missing field `{key}`")))?;
                Self::Schedule {
                    kind,
                    expression,
                    properties,
                }
            }
            other => Self::Other(other.to_owned()),
        })
    }
}

impl ApiEvent {
    /// A route API Gateway would refuse to deploy is refused here, before any request is served.
    fn check(&self, at: &str) -> Result<(), TemplateError> {
        let invalid = |what: String| Err(TemplateError::Invalid(format!("{at}: {what}")));
        let method = self.method.as_str();
        if !METHODS.contains(&method.to_ascii_lowercase().as_str()) {
            return invalid(format!("Method {method:?} is not an HTTP method"));
        }
        let path = self.path.as_str();
        if !path.starts_with('/') {
            return invalid(format!("Path {path:?} must start with /"));
        }
        // A variable is a whole segment: `/v1/{id}`, never `/v1/x{id}`.
        if let Some(bad) = path.split('/').find(|s| s.contains(['{', '}']) && !is_variable(s)) {
            return invalid(format!("Path {path:?}: segment {bad:?} is not a {{variable}}"));
        }
        Ok(())
    }
}

/// `{name}` or `{name+}` (greedy).
pub(crate) fn is_variable(segment: &str) -> bool {
    segment
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .is_some_and(|name| !name.is_empty() && !name.contains(['{', '}']))
}
