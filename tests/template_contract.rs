//! The template gives each function exactly what it uses, proved from the code:
//!
//! - **Variables**: each function is built through the runner's own constructors
//!   (`functions::build`, the ones its Lambda `main.rs` uses) with exactly the variables the
//!   template gives it, and `Settings` records every name the code asks for. Every variable it is
//!   given must be read (exceptions below, by name, with their reason), and every one it requires
//!   must be given (the build fails otherwise).
//! - **Network**: a function is in the VPC exactly when its code reads Redis or MySQL settings.
//! - **Permissions**: each function's policy statements equal the table below (action and
//!   resource), written out in the template (no SAM policy templates, whose grants are wider than
//!   they read), with no `*` action or resource.
//!
//! SAM adds managed policies to each role it generates: AWSLambdaBasicExecutionRole (logs) to all,
//! AWSLambdaVPCAccessExecutionRole (ENIs, `*` by nature) to VPC functions, and
//! AWSLambdaSQSQueueExecutionRole (receive/delete on `*`) to the writer for its event source. They
//! are seen in the SAM transform's output, not here (README, "Deploying to AWS").

use std::collections::BTreeSet;

use fcfs_shared::config::Settings;
use integration_tests::{env, repo_root, template};
use yaml_serde::Value;

/// Variables a function is given but does not read through `Settings`: (function or "*", name, why).
const NOT_READ_BY_THE_CODE: &[(&str, &str, &str)] = &[
    (
        "*",
        "RUST_LOG",
        "read by the tracing subscriber's EnvFilter (config::init_tracing), not through Settings",
    ),
    (
        "IssueWriterFunction",
        "ISSUE_QUEUE_URL",
        "the queue the writer consumes: read by the local runner, to move its poller with the senders",
    ),
];

/// Settings that mean "this function talks to Redis or MySQL", so it must run in the VPC.
const VPC_SETTINGS: &[&str] = &["REDIS_URL", "DATABASE_URL", "DATABASE_SECRET_ARN"];

/// (function, action, resource as the template writes it, condition the statement depends on).
const PERMISSIONS: &[(&str, &str, &str, Option<&str>)] = &[
    (
        "AuthorizerFunction",
        "dynamodb:GetItem",
        "!GetAtt ApiKeysTable.Arn",
        None,
    ),
    (
        "CampaignApiFunction",
        "secretsmanager:GetSecretValue",
        "!Ref DatabaseSecretArn",
        None,
    ),
    (
        "CampaignApiFunction",
        "kms:Decrypt",
        "!Ref DatabaseSecretKmsKeyArn",
        Some("DatabaseSecretUsesCustomerKey"),
    ),
    ("IssueApiFunction", "sqs:SendMessage", "!GetAtt IssueQueue.Arn", None),
    (
        "IssueApiFunction",
        "sqs:GetQueueAttributes",
        "!GetAtt IssueQueue.Arn",
        None,
    ),
    (
        "IssueApiFunction",
        "sqs:GetQueueAttributes",
        "!GetAtt IssueDeadLetterQueue.Arn",
        None,
    ),
    (
        "IssueApiFunction",
        "secretsmanager:GetSecretValue",
        "!Ref DatabaseSecretArn",
        None,
    ),
    (
        "IssueApiFunction",
        "kms:Decrypt",
        "!Ref DatabaseSecretKmsKeyArn",
        Some("DatabaseSecretUsesCustomerKey"),
    ),
    (
        "IssueWriterFunction",
        "secretsmanager:GetSecretValue",
        "!Ref DatabaseSecretArn",
        None,
    ),
    (
        "IssueWriterFunction",
        "kms:Decrypt",
        "!Ref DatabaseSecretKmsKeyArn",
        Some("DatabaseSecretUsesCustomerKey"),
    ),
    (
        "IssueRecoveryFunction",
        "sqs:SendMessage",
        "!GetAtt IssueQueue.Arn",
        None,
    ),
    (
        "CouponApiFunction",
        "secretsmanager:GetSecretValue",
        "!Ref DatabaseSecretArn",
        None,
    ),
    (
        "CouponApiFunction",
        "kms:Decrypt",
        "!Ref DatabaseSecretKmsKeyArn",
        Some("DatabaseSecretUsesCustomerKey"),
    ),
    (
        "CouponExpiryFunction",
        "secretsmanager:GetSecretValue",
        "!Ref DatabaseSecretArn",
        None,
    ),
    (
        "CouponExpiryFunction",
        "kms:Decrypt",
        "!Ref DatabaseSecretKmsKeyArn",
        Some("DatabaseSecretUsesCustomerKey"),
    ),
    (
        "PointsApiFunction",
        "secretsmanager:GetSecretValue",
        "!Ref DatabaseSecretArn",
        None,
    ),
    (
        "PointsApiFunction",
        "kms:Decrypt",
        "!Ref DatabaseSecretKmsKeyArn",
        Some("DatabaseSecretUsesCustomerKey"),
    ),
    (
        "PointsExpiryFunction",
        "secretsmanager:GetSecretValue",
        "!Ref DatabaseSecretArn",
        None,
    ),
    (
        "PointsExpiryFunction",
        "kms:Decrypt",
        "!Ref DatabaseSecretKmsKeyArn",
        Some("DatabaseSecretUsesCustomerKey"),
    ),
    (
        "GradingApiFunction",
        "sqs:SendMessage",
        "!GetAtt GradingQueue.Arn",
        None,
    ),
    (
        "GradingApiFunction",
        "secretsmanager:GetSecretValue",
        "!Ref DatabaseSecretArn",
        None,
    ),
    (
        "GradingApiFunction",
        "kms:Decrypt",
        "!Ref DatabaseSecretKmsKeyArn",
        Some("DatabaseSecretUsesCustomerKey"),
    ),
    (
        "EventsApiFunction",
        "secretsmanager:GetSecretValue",
        "!Ref EventSigningKeySecret",
        None,
    ),
    (
        "EventsApiFunction",
        "secretsmanager:GetSecretValue",
        "!Ref DatabaseSecretArn",
        None,
    ),
    (
        "EventsApiFunction",
        "kms:Decrypt",
        "!Ref DatabaseSecretKmsKeyArn",
        Some("DatabaseSecretUsesCustomerKey"),
    ),
    (
        "EventRelayFunction",
        "secretsmanager:GetSecretValue",
        "!Ref EventSigningKeySecret",
        None,
    ),
    (
        "EventRelayFunction",
        "events:PutEvents",
        "!GetAtt PartnerEventBus.Arn",
        None,
    ),
    (
        "EventRelayFunction",
        "secretsmanager:GetSecretValue",
        "!Ref DatabaseSecretArn",
        None,
    ),
    (
        "EventRelayFunction",
        "kms:Decrypt",
        "!Ref DatabaseSecretKmsKeyArn",
        Some("DatabaseSecretUsesCustomerKey"),
    ),
    (
        "GradingWorkerFunction",
        "secretsmanager:GetSecretValue",
        "!Ref DatabaseSecretArn",
        None,
    ),
    (
        "GradingWorkerFunction",
        "kms:Decrypt",
        "!Ref DatabaseSecretKmsKeyArn",
        Some("DatabaseSecretUsesCustomerKey"),
    ),
    (
        "GradingSchedulerFunction",
        "sqs:SendMessage",
        "!GetAtt GradingQueue.Arn",
        None,
    ),
    (
        "GradingSchedulerFunction",
        "secretsmanager:GetSecretValue",
        "!Ref DatabaseSecretArn",
        None,
    ),
    (
        "GradingSchedulerFunction",
        "kms:Decrypt",
        "!Ref DatabaseSecretKmsKeyArn",
        Some("DatabaseSecretUsesCustomerKey"),
    ),
    (
        "AlertNotifierFunction",
        "secretsmanager:GetSecretValue",
        "!Ref AlertWebhookSecret",
        None,
    ),
];

fn not_read_reason(function: &str, name: &str) -> Option<&'static str> {
    NOT_READ_BY_THE_CODE
        .iter()
        .find(|(f, n, _)| (*f == "*" || *f == function) && *n == name)
        .map(|(_, _, why)| *why)
}

#[tokio::test]
async fn each_function_is_given_exactly_the_variables_its_code_reads() {
    let sdk = fcfs_shared::config::aws_sdk_config().await;
    let raw = raw_template();
    let mut problems = Vec::new();
    let specs = template().functions().expect("the template's functions");
    assert_eq!(
        specs.len(),
        local_runner::functions::BINARIES.len(),
        "one function per binary"
    );
    for spec in specs {
        let id = spec.logical_id.as_str();
        let mut given = spec.environment.clone();
        // Parameters without a default (RedisUrl, DatabaseSecretArn): their local values.
        for variable in spec.unresolved.keys() {
            given.insert(variable.clone(), env(variable));
        }
        let template_names: BTreeSet<String> = given.keys().cloned().collect();
        let settings = Settings::new(given.clone());
        if let Err(e) = local_runner::functions::build(&spec.binary, &settings, &sdk).await {
            problems.push(format!("{id}: does not start with the template's variables: {e}"));
            continue;
        }
        let read = settings.names_read();
        for name in &template_names {
            let is_read = read.contains(name.as_str());
            match (is_read, not_read_reason(id, name)) {
                (true, Some(_)) => problems.push(format!(
                    "{id}: {name} is read by the code now: remove it from NOT_READ_BY_THE_CODE"
                )),
                (false, None) => problems.push(format!(
                    "{id}: the template gives {name}, which its code never reads (remove it, or say why in NOT_READ_BY_THE_CODE)"
                )),
                _ => {}
            }
        }
        for (function, name, _) in NOT_READ_BY_THE_CODE {
            if *function == id && !template_names.contains(*name) {
                problems.push(format!(
                    "{id}: NOT_READ_BY_THE_CODE names {name}, which the template does not give it"
                ));
            }
        }
        let in_vpc = raw_function(&raw, id).get("VpcConfig").is_some();
        let needs_vpc = VPC_SETTINGS.iter().any(|s| read.contains(s) || given.contains_key(*s));
        if in_vpc != needs_vpc {
            problems.push(format!(
                "{id}: in the VPC: {in_vpc}, but it talks to Redis or MySQL: {needs_vpc}"
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn each_function_has_exactly_the_permissions_of_the_table() {
    let raw = raw_template();
    let mut actual = BTreeSet::new();
    let mut problems = Vec::new();
    for (id, resource) in raw["Resources"].as_mapping().expect("Resources").iter() {
        if resource["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        let id = id.as_str().expect("logical id");
        let policies = resource["Properties"]["Policies"]
            .as_sequence()
            .cloned()
            .unwrap_or_default();
        for policy in policies {
            let (condition, document) = match &policy {
                Value::Tagged(t) if t.tag == "!If" => {
                    let args = t.value.as_sequence().expect("!If [condition, then, else]");
                    assert_eq!(render(&args[2]), "!Ref AWS::NoValue", "{id}: !If else branch");
                    (
                        Some(args[0].as_str().expect("condition name").to_owned()),
                        args[1].clone(),
                    )
                }
                other => (None, other.clone()),
            };
            let Some(statements) = document.get("Statement").and_then(Value::as_sequence) else {
                problems.push(format!(
                    "{id}: policy {} is not written out as statements",
                    render(&policy)
                ));
                continue;
            };
            for statement in statements {
                assert_eq!(statement["Effect"].as_str(), Some("Allow"), "{id}: {statement:?}");
                for action in one_or_many(&statement["Action"]) {
                    for target in one_or_many(&statement["Resource"]) {
                        if action.contains('*') || target.contains('*') {
                            problems.push(format!("{id}: wildcard in {action} on {target}"));
                        }
                        actual.insert((id.to_owned(), action.clone(), target, condition.clone()));
                    }
                }
            }
        }
    }
    let expected: BTreeSet<_> = PERMISSIONS
        .iter()
        .map(|(f, a, r, c)| (f.to_string(), a.to_string(), r.to_string(), c.map(str::to_owned)))
        .collect();
    for extra in actual.difference(&expected) {
        problems.push(format!("granted but not in the table: {extra:?}"));
    }
    for missing in expected.difference(&actual) {
        problems.push(format!("in the table but not granted: {missing:?}"));
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// observability/alerts.yml (Prometheus, locally) and template.yaml's CloudWatch alarms are the
/// same rules: each rule names its alarms and its threshold, and the number its expression compares
/// with, each alarm's `Threshold`, and that label are equal. Every alarm is some rule's, and
/// publishes to the alert topic.
#[test]
fn alert_rules_and_cloudwatch_alarms_have_the_same_thresholds() {
    let text = std::fs::read_to_string(repo_root().join("observability/alerts.yml")).unwrap();
    let rules: Value = yaml_serde::from_str(&text).unwrap();
    let raw = raw_template();
    let mut problems = Vec::new();
    let mut claimed = BTreeSet::new();
    for rule in rules["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules").iter())
    {
        let name = rule["alert"].as_str().expect("an alert name");
        let threshold: f64 = rule["labels"]["threshold"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("{name}: a numeric threshold label"));
        let compared = rule["expr"]
            .as_str()
            .and_then(|e| e.trim().rsplit_once("> "))
            .and_then(|(_, n)| n.trim().parse::<f64>().ok());
        if compared != Some(threshold) {
            problems.push(format!(
                "{name}: the expression compares with {compared:?}, the label says {threshold}"
            ));
        }
        for alarm in rule["labels"]["alarm"].as_str().unwrap_or_default().split_whitespace() {
            claimed.insert(alarm.to_owned());
            let resource = &raw["Resources"][alarm];
            if resource["Type"].as_str() != Some("AWS::CloudWatch::Alarm") {
                problems.push(format!("{name}: {alarm} is not an alarm of the template"));
                continue;
            }
            let properties = &resource["Properties"];
            if properties["Threshold"].as_f64() != Some(threshold) {
                problems.push(format!(
                    "{name}: {alarm}'s Threshold is {:?}, the rule's is {threshold}",
                    properties["Threshold"]
                ));
            }
            if properties["ComparisonOperator"].as_str() != Some("GreaterThanThreshold") {
                problems.push(format!("{name}: {alarm} must compare as the rule does (>)"));
            }
        }
    }
    for (id, resource) in raw["Resources"].as_mapping().expect("Resources") {
        if resource["Type"].as_str() != Some("AWS::CloudWatch::Alarm") {
            continue;
        }
        let id = id.as_str().unwrap_or_default();
        if !claimed.contains(id) {
            problems.push(format!("{id}: no rule of observability/alerts.yml names it"));
        }
        let actions: Vec<String> = resource["Properties"]["AlarmActions"]
            .as_sequence()
            .map(|a| a.iter().map(render).collect())
            .unwrap_or_default();
        if actions != ["!Ref AlertTopic"] {
            problems.push(format!("{id}: AlarmActions {actions:?}, expected the alert topic"));
        }
    }
    assert!(claimed.len() >= 7, "every rule names its alarm: {claimed:?}");
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// The authorizer's decision must never wait longer than API Gateway's patience allows: the
/// issue's contract is a lookup deadline of at most one second.
#[test]
fn the_authorizer_lookup_deadline_is_at_most_one_second() {
    let raw = raw_template();
    let parameter = &raw["Parameters"]["AuthorizerLookupTimeoutMs"];
    let max = parameter["MaxValue"].as_i64().expect("a MaxValue");
    let default = parameter["Default"].as_i64().expect("a Default");
    assert!(max <= 1000 && default <= max, "max {max}, default {default}");
    assert_eq!(
        render(&raw_function(&raw, "AuthorizerFunction")["Environment"]["Variables"]["AUTH_LOOKUP_TIMEOUT_MS"]),
        "!Ref AuthorizerLookupTimeoutMs"
    );
}

/// The arguments of `!Tag [..]`, if `value` is that tag.
fn tagged<'a>(value: &'a Value, tag: &str) -> Option<&'a [Value]> {
    match value {
        Value::Tagged(t) if t.tag == tag => t.value.as_sequence().map(Vec::as_slice),
        _ => None,
    }
}

fn functions(raw: &Value) -> Vec<(String, &Value)> {
    raw["Resources"]
        .as_mapping()
        .expect("Resources")
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some("AWS::Serverless::Function"))
        .map(|(id, r)| (id.as_str().unwrap_or_default().to_owned(), &r["Properties"]))
        .collect()
}

/// A low-quota account (unreserved concurrency must stay ≥ 100) can create the stack with every
/// reservation parameter at -1: then no function reserves anything. Each reservation is
/// `!If [Reserve…, !Ref <parameter>, !Ref AWS::NoValue]`, its condition "the parameter is not -1",
/// and a rule refuses 0 (which would throttle the function completely).
#[test]
fn with_every_reservation_at_minus_one_no_function_reserves_and_none_accepts_zero() {
    let raw = raw_template();
    let zero_refused: BTreeSet<String> = raw["Rules"]["NoReservationOfZero"]["Assertions"]
        .as_sequence()
        .expect("Rules.NoReservationOfZero")
        .iter()
        .filter_map(|a| tagged(&a["Assert"], "!Not"))
        .filter_map(|not| tagged(not.first()?, "!Equals"))
        .filter(|equals| equals.get(1).and_then(Value::as_str) == Some("0"))
        .filter_map(|equals| equals.first().map(render))
        .collect();
    let mut problems = Vec::new();
    let all = functions(&raw);
    for (id, properties) in &all {
        let reserved = &properties["ReservedConcurrentExecutions"];
        if reserved.is_null() {
            continue;
        }
        let Some([condition, then, otherwise]) = tagged(reserved, "!If") else {
            problems.push(format!(
                "{id}: ReservedConcurrentExecutions {} cannot be switched off",
                render(reserved)
            ));
            continue;
        };
        let parameter = render(then);
        let name = parameter.trim_start_matches("!Ref ");
        if render(otherwise) != "!Ref AWS::NoValue" || !parameter.starts_with("!Ref ") {
            problems.push(format!("{id}: reserves {parameter} or {}", render(otherwise)));
        }
        let condition = condition.as_str().unwrap_or_default();
        let off = tagged(&raw["Conditions"][condition], "!Not")
            .and_then(|not| tagged(not.first()?, "!Equals"))
            .map(|equals| equals.iter().map(render).collect::<Vec<_>>());
        if off != Some(vec![parameter.clone(), "-1".to_owned()]) {
            problems.push(format!(
                "{id}: condition {condition} is not \"{name} is not -1\": {off:?}"
            ));
        }
        if raw["Parameters"][name]["MinValue"].as_i64() != Some(-1) {
            problems.push(format!("{id}: {name} must accept -1 and nothing lower"));
        }
        if !zero_refused.contains(&parameter) {
            problems.push(format!("{id}: no rule refuses {name} = 0"));
        }
    }
    assert!(all.len() >= 13, "{} functions", all.len());
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// The most MySQL connections the functions can hold at once (each database-using function's
/// reservation, or its event sources' MaximumConcurrency, times its stated pool) fits
/// `DatabaseMaxConnections` with the defaults, every such function is bounded by them, and no
/// pool is smaller than what one instance uses at once (the writer's chunks in flight). Past the
/// budget Aurora refuses connections and every MySQL route answers 503. `fcfs-admin preflight`
/// runs the same arithmetic (`fcfs_template::connections_at_most`) on a deploy's parameters.
#[test]
fn the_database_connections_the_defaults_allow_fit_the_database_budget() {
    let template = fcfs_template::Template::load(
        &repo_root().join("template.yaml"),
        &Default::default(),
        fcfs_template::Placement::local("https://sqs.invalid", "us-east-1"),
    )
    .expect("template.yaml loads");
    let users = template.database_users().expect("every database user states its pool");
    assert!(users.len() >= 10, "{users:?}");
    let unbounded: Vec<_> = users.iter().filter(|u| u.instances.is_none()).collect();
    assert!(unbounded.is_empty(), "bounded only by the account: {unbounded:?}");
    let budget: u64 = template
        .parameter("DatabaseMaxConnections")
        .expect("a DatabaseMaxConnections parameter with a default")
        .parse()
        .expect("a number");
    let needed = fcfs_template::connections_at_most(&users, 0);
    assert!(
        needed <= budget,
        "{needed} connections at most, DatabaseMaxConnections {budget}: {users:#?}"
    );
    let writer = template
        .functions()
        .unwrap()
        .into_iter()
        .find(|f| f.logical_id == "IssueWriterFunction")
        .expect("the writer");
    let chunks: u32 = writer.environment["WRITER_PARALLEL_CHUNKS"].parse().unwrap();
    let pool = users
        .iter()
        .find(|u| u.function == "IssueWriterFunction")
        .unwrap()
        .per_instance;
    assert!(
        pool >= chunks,
        "the writer's {chunks} chunks in flight would wait for {pool} connection(s)"
    );
}

/// A first create that rolls back must not leave retained resources behind (the retry would fail
/// on their names): `RetainExceptOnCreate`, never `Retain`, and the key table unprotected unless
/// the operator turns protection on (a rolled-back create cannot delete a protected table).
#[test]
fn nothing_is_left_behind_when_the_first_create_rolls_back() {
    let raw = raw_template();
    let mut problems = Vec::new();
    let mut retained = 0;
    for (id, resource) in raw["Resources"].as_mapping().expect("Resources") {
        let id = id.as_str().unwrap_or_default();
        match resource["DeletionPolicy"].as_str() {
            Some("Retain") => problems.push(format!("{id}: DeletionPolicy Retain")),
            Some("RetainExceptOnCreate") => retained += 1,
            _ => {}
        }
        if let Some(protection) = resource["Properties"].get("DeletionProtectionEnabled") {
            let parameter = render(protection);
            let default = raw["Parameters"][parameter.trim_start_matches("!Ref ")]["Default"].as_str();
            if default != Some("false") {
                problems.push(format!("{id}: deletion protection {parameter}, default {default:?}"));
            }
        }
    }
    assert!(retained >= 3, "the queues and the key table are retained on delete");
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// Without `OpenApiVersion`, SAM's deployment also creates a stage named "Stage", with none of
/// the real stage's throttling and outside the usage plan.
#[test]
fn the_api_has_only_its_own_stage() {
    let raw = raw_template();
    for (id, resource) in raw["Resources"].as_mapping().expect("Resources") {
        if resource["Type"].as_str() == Some("AWS::Serverless::Api") {
            let version = resource["Properties"]["OpenApiVersion"]
                .as_str()
                .or(raw["Globals"]["Api"]["OpenApiVersion"].as_str());
            assert!(
                version.is_some_and(|v| v.starts_with("3.")),
                "{id:?}: OpenApiVersion {version:?}"
            );
        }
    }
}

/// Every function runs on the `Architecture` parameter: arm64 (Graviton, the cheaper GB-second)
/// unless a deploy gives x86_64, and no function pins one of its own. A function's own
/// `Architectures` would replace the global one (SAM CLI 1.170's translator merges
/// `Function.Architectures` by replacing; older ones appended, giving two), so none may have one;
/// a plain `AWS::Lambda::Function`, which Globals do not reach, must name the parameter itself.
#[test]
fn every_function_runs_on_the_architecture_parameter() {
    let raw = raw_template();
    let parameter = &raw["Parameters"]["Architecture"];
    assert_eq!(parameter["Type"].as_str(), Some("String"), "{parameter:?}");
    assert_eq!(parameter["Default"].as_str(), Some("arm64"), "{parameter:?}");
    let allowed: BTreeSet<String> = one_or_many(&parameter["AllowedValues"]).into_iter().collect();
    assert_eq!(allowed, BTreeSet::from(["arm64".to_owned(), "x86_64".to_owned()]));
    assert_eq!(
        one_or_many(&raw["Globals"]["Function"]["Architectures"]),
        ["!Ref Architecture"]
    );
    let mut problems = Vec::new();
    let mut functions = 0;
    for (id, resource) in raw["Resources"].as_mapping().expect("Resources") {
        let id = id.as_str().unwrap_or_default();
        let own = resource["Properties"].get("Architectures").map(one_or_many);
        match resource["Type"].as_str() {
            Some("AWS::Serverless::Function") => {
                functions += 1;
                if let Some(own) = own {
                    problems.push(format!("{id}: Architectures {own:?} of its own"));
                }
            }
            Some("AWS::Lambda::Function") => {
                functions += 1;
                if own.as_deref() != Some(&["!Ref Architecture".to_owned()][..]) {
                    problems.push(format!("{id}: Architectures {own:?}, not the parameter"));
                }
            }
            _ => {}
        }
    }
    assert!(functions >= 13, "{functions} functions");
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// An interface endpoint takes at most one subnet per AZ, where the functions' subnets may hold
/// several: the endpoints have a parameter of their own, required by a rule when they are made.
#[test]
fn interface_endpoints_have_subnets_of_their_own() {
    let raw = raw_template();
    let mut endpoints = 0;
    for (id, resource) in raw["Resources"].as_mapping().expect("Resources") {
        let properties = &resource["Properties"];
        if resource["Type"].as_str() != Some("AWS::EC2::VPCEndpoint")
            || properties["VpcEndpointType"].as_str() != Some("Interface")
        {
            continue;
        }
        endpoints += 1;
        assert_eq!(render(&properties["SubnetIds"]), "!Ref EndpointSubnetIds", "{id:?}");
    }
    assert!(endpoints >= 2);
    let rule = &raw["Rules"]["EndpointsHaveTheirSubnets"];
    assert_eq!(
        render(&rule["RuleCondition"]).split_whitespace().collect::<Vec<_>>(),
        ["!Equals", "-", "!Ref", "CreateInterfaceEndpoints", "-", "'true'"]
    );
    let required = rule["Assertions"].as_sequence().expect("assertions").iter().any(|a| {
        tagged(&a["Assert"], "!Not")
            .and_then(|not| tagged(not.first()?, "!EachMemberEquals"))
            .is_some_and(|args| args.first().map(render).as_deref() == Some("!Ref EndpointSubnetIds"))
    });
    assert!(required, "{rule:?}");
}

/// AWS: a queue that feeds a function needs a visibility timeout of at least six times the
/// function's timeout plus the event source's batching window, or messages come back while a
/// slow batch is still being worked on.
#[test]
fn every_queue_feeding_a_function_outlasts_six_timeouts_and_the_window() {
    let raw = raw_template();
    let global_timeout = raw["Globals"]["Function"]["Timeout"].as_i64().expect("Globals timeout");
    let mut checked = 0;
    let mut problems = Vec::new();
    for (id, properties) in functions(&raw) {
        let timeout = properties["Timeout"].as_i64().unwrap_or(global_timeout);
        for (_, event) in properties["Events"].as_mapping().into_iter().flatten() {
            if event["Type"].as_str() != Some("SQS") {
                continue;
            }
            let queue = render(&event["Properties"]["Queue"]);
            let name = queue
                .strip_prefix("!GetAtt ")
                .and_then(|q| q.strip_suffix(".Arn"))
                .unwrap_or_else(|| panic!("{id}: queue {queue}"));
            let window = event["Properties"]["MaximumBatchingWindowInSeconds"]
                .as_i64()
                .unwrap_or(0);
            let visibility = raw["Resources"][name]["Properties"]["VisibilityTimeout"]
                .as_i64()
                .unwrap_or(30);
            let needed = 6 * timeout + window;
            if visibility < needed {
                problems.push(format!(
                    "{name} feeds {id}: visibility {visibility} s < 6 x {timeout} + {window} = {needed}"
                ));
            }
            checked += 1;
        }
    }
    assert!(checked >= 2, "the issue and grading queues");
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// Functions whose Lambda `Errors` are not alarmed, and why.
const ERRORS_NOT_ALARMED: &[(&str, &str)] = &[(
    "AuthorizerFunction",
    "answers every unknown key with the error \"Unauthorized\" (API Gateway's 401 signal), which \
     Lambda counts in Errors; its real failures are API Gateway 500s, which ApiErrorRateAlarm sees",
)];

/// Nothing fails silently: every function's Lambda `Errors` (but those above) and `Throttles`
/// over 5 minutes have an alarm on that function that publishes to the alert topic, raising and
/// clearing.
#[test]
fn every_function_has_errors_and_throttles_alarms() {
    let raw = raw_template();
    let mut alarmed = BTreeSet::new();
    for resource in raw["Resources"].as_mapping().expect("Resources").values() {
        let properties = &resource["Properties"];
        if resource["Type"].as_str() != Some("AWS::CloudWatch::Alarm")
            || properties["Namespace"].as_str() != Some("AWS/Lambda")
            || one_or_many(&properties["AlarmActions"]) != ["!Ref AlertTopic"]
            || one_or_many(&properties["OKActions"]) != ["!Ref AlertTopic"]
            || properties["Statistic"].as_str() != Some("Sum")
            || properties["Threshold"].as_f64() != Some(0.0)
        {
            continue;
        }
        let dimensions = properties["Dimensions"].as_sequence().cloned().unwrap_or_default();
        if let [dimension] = dimensions.as_slice()
            && dimension["Name"].as_str() == Some("FunctionName")
        {
            let function = render(&dimension["Value"]).trim_start_matches("!Ref ").to_owned();
            let metric = properties["MetricName"].as_str().unwrap_or_default().to_owned();
            alarmed.insert((function, metric));
        }
    }
    let mut missing = Vec::new();
    for (id, _) in functions(&raw) {
        for metric in ["Errors", "Throttles"] {
            let excused = metric == "Errors" && ERRORS_NOT_ALARMED.iter().any(|(f, _)| *f == id);
            if !excused && !alarmed.contains(&(id.clone(), metric.to_owned())) {
                missing.push(format!("{id}: no {metric} alarm into the alert topic"));
            }
        }
    }
    assert!(alarmed.len() >= 25, "{alarmed:?}");
    assert!(missing.is_empty(), "\n{}", missing.join("\n"));
}

/// Nothing fails silently: a function invoked asynchronously (a schedule, SNS) whose invocation
/// fails every attempt goes to a queue whose not-empty alarm publishes to the alert topic (a
/// failed day-1 grading start alerts instead of leaving the month ungraded unheard).
#[test]
fn every_asynchronous_invocation_fails_into_an_alarmed_queue() {
    let raw = raw_template();
    let alarmed: BTreeSet<String> = raw["Resources"]
        .as_mapping()
        .expect("Resources")
        .values()
        .filter(|r| r["Type"].as_str() == Some("AWS::CloudWatch::Alarm"))
        .filter(|r| one_or_many(&r["Properties"]["AlarmActions"]) == ["!Ref AlertTopic"])
        .flat_map(|r| r["Properties"]["Dimensions"].as_sequence().cloned().unwrap_or_default())
        .filter(|d| d["Name"].as_str() == Some("QueueName"))
        .filter_map(|d| {
            render(&d["Value"])
                .strip_prefix("!GetAtt ")
                .and_then(|q| q.strip_suffix(".QueueName"))
                .map(str::to_owned)
        })
        .collect();
    let mut asynchronous = 0;
    let mut problems = Vec::new();
    for (id, properties) in functions(&raw) {
        let invoked_async = properties["Events"]
            .as_mapping()
            .into_iter()
            .flatten()
            .any(|(_, e)| matches!(e["Type"].as_str(), Some("Schedule" | "ScheduleV2" | "SNS")));
        if !invoked_async {
            continue;
        }
        asynchronous += 1;
        let on_failure = &properties["EventInvokeConfig"]["DestinationConfig"]["OnFailure"];
        let queue = render(&on_failure["Destination"]);
        let queue = queue.strip_prefix("!GetAtt ").and_then(|q| q.strip_suffix(".Arn"));
        match (on_failure["Type"].as_str(), queue) {
            (Some("SQS"), Some(queue)) if alarmed.contains(queue) => {}
            _ => problems.push(format!("{id}: on failure {on_failure:?}, not a queue with an alarm")),
        }
    }
    assert!(asynchronous >= 5, "4 schedules and the alert notifier: {asynchronous}");
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

fn raw_template() -> Value {
    let text = std::fs::read_to_string(repo_root().join("template.yaml")).expect("template.yaml");
    yaml_serde::from_str(&text).expect("template.yaml is YAML")
}

fn raw_function<'a>(raw: &'a Value, id: &str) -> &'a Value {
    &raw["Resources"][id]["Properties"]
}

/// A value as the template writes it: `!Ref X`, `!GetAtt X.Arn`, a plain string, or YAML.
fn render(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Tagged(t) => format!("{} {}", t.tag, render(&t.value)),
        other => yaml_serde::to_string(other).unwrap_or_default().trim().to_owned(),
    }
}

fn one_or_many(value: &Value) -> Vec<String> {
    match value {
        Value::Sequence(items) => items.iter().map(render).collect(),
        Value::Null => Vec::new(),
        other => vec![render(other)],
    }
}

/// API Gateway's own answers are JSON with a code of docs/errors.md and the request id: the
/// template's `GatewayResponses` are exactly `fcfs_shared::http::GATEWAY_ANSWERS` (the table the
/// errors document is rendered from, and the runner answers from the template).
#[test]
fn the_gateway_answers_json_with_a_code_of_the_errors_table() {
    let template = fcfs_template::Template::load(
        &repo_root().join("template.yaml"),
        &Default::default(),
        fcfs_template::Placement::local("https://sqs.invalid", "us-east-1"),
    )
    .expect("template.yaml loads");
    let responses = template.api().expect("the API").gateway_responses;
    // The status API Gateway gives each type unless the template sets one.
    let built_in = |kind: &str| match kind {
        "UNAUTHORIZED" => 401,
        "ACCESS_DENIED" | "INVALID_API_KEY" | "MISSING_AUTHENTICATION_TOKEN" => 403,
        "REQUEST_TOO_LARGE" => 413,
        "THROTTLED" | "QUOTA_EXCEEDED" => 429,
        "AUTHORIZER_CONFIGURATION_ERROR" | "AUTHORIZER_FAILURE" => 500,
        // A crashed function's INTEGRATION_FAILURE, the common case of DEFAULT_5XX.
        "DEFAULT_5XX" => 502,
        other => panic!("no built-in status known for {other}"),
    };
    let answers = fcfs_shared::http::GATEWAY_ANSWERS;
    let listed: BTreeSet<&str> = answers.iter().map(|a| a.response_type).collect();
    let set: BTreeSet<&str> = responses.keys().map(String::as_str).collect();
    assert_eq!(set, listed);
    for answer in answers {
        let spec = &responses[answer.response_type];
        let kind = answer.response_type;
        assert_eq!(spec.status.unwrap_or(built_in(kind)), answer.status, "{kind}");
        assert_eq!(
            spec.json_template.as_deref(),
            Some(answer.template().as_str()),
            "{kind}"
        );
        let body: serde_json::Value = serde_json::from_str(&answer.template()).expect("JSON");
        assert_eq!(body["error"], answer.code.as_str(), "{kind}");
        let retry_after: Vec<&(String, String)> = spec.headers.iter().filter(|(h, _)| h == "Retry-After").collect();
        if answer.retry_after() {
            assert_eq!(retry_after, [&("Retry-After".to_owned(), "1".to_owned())], "{kind}");
        } else {
            assert!(retry_after.is_empty(), "{kind}");
        }
    }
}
