//! Creates on an emulator the queues and tables `template.yaml` declares, idempotently.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType,
};
use aws_sdk_sqs::types::QueueAttributeName;
use fcfs_template::{KeySpec, Placement, QueueSpec, Template};

pub async fn provision(
    template_path: &Path,
    params: &BTreeMap<String, String>,
    endpoint: &str,
) -> Result<BTreeMap<String, String>> {
    let sdk = fcfs_shared::config::aws_sdk_config().await;
    let region = sdk
        .region()
        .map(|r| r.to_string())
        .unwrap_or_else(|| "us-east-1".into());
    let mut template = Template::load(template_path, params, Placement::local(endpoint, &region))?;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);

    // Dead-letter queues first: a redrive policy names its target's ARN.
    let mut queues = template.queues()?;
    queues.sort_by_key(|q| q.redrive.is_some());
    let mut arns = BTreeMap::new();
    let mut urls = BTreeMap::new();
    for queue in &queues {
        let (url, arn) = ensure_queue(&sqs, queue, &arns).await?;
        arns.insert(queue.logical_id.clone(), arn);
        urls.insert(queue.name.clone(), url);
    }
    template.set_queue_urls(urls);
    for table in template.tables()? {
        ensure_table(&dynamodb, &table).await?;
    }
    let env = template.resource_environment()?;
    // The events' sealing key and bus, named as the template names them for the functions.
    if let Some(name) = env.get("EVENTS_KEY_SECRET") {
        ensure_key_secret(&aws_sdk_secretsmanager::Client::new(&sdk), name).await?;
    }
    if let Some(name) = env.get("EVENT_BUS_NAME") {
        ensure_event_bus(&aws_sdk_eventbridge::Client::new(&sdk), name).await?;
    }
    Ok(env)
}

/// Where the local stack keeps the sealing key's material (`scripts/stack.sh`): beside MariaDB's
/// data, which holds what it sealed, so an emulator that forgets its secrets gets the same key.
const KEY_MATERIAL_FILE_ENV: &str = "FCFS_EVENTS_KEY_MATERIAL_FILE";

/// A secret of random key material (as the template's `GenerateSecretString` makes), kept if it
/// exists: a new value would leave every sealed signing secret unopenable. Created from
/// `FCFS_EVENTS_KEY_MATERIAL_FILE` when that is set.
async fn ensure_key_secret(client: &aws_sdk_secretsmanager::Client, name: &str) -> Result<()> {
    match client.describe_secret().secret_id(name).send().await {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            let material = match std::env::var_os(KEY_MATERIAL_FILE_ENV) {
                Some(path) => std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {KEY_MATERIAL_FILE_ENV} ({})", path.to_string_lossy()))?
                    .trim()
                    .to_owned(),
                None => client
                    .get_random_password()
                    .password_length(64)
                    .exclude_punctuation(true)
                    .send()
                    .await
                    .context("cannot generate the key material")?
                    .random_password
                    .context("no random password")?,
            };
            anyhow::ensure!(
                material.len() >= 32,
                "the sealing key's material is shorter than 32 characters"
            );
            client
                .create_secret()
                .name(name)
                .description("Seals partners' webhook signing secrets in the database (fcfs-coupons events)")
                .secret_string(material)
                .send()
                .await
                .with_context(|| format!("cannot create secret {name}"))?;
            Ok(())
        }
        Err(e) => anyhow::bail!(
            "cannot read secret {name}: {}",
            aws_sdk_secretsmanager::error::DisplayErrorContext(e)
        ),
    }
}

async fn ensure_event_bus(client: &aws_sdk_eventbridge::Client, name: &str) -> Result<()> {
    match client.describe_event_bus().name(name).send().await {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            client
                .create_event_bus()
                .name(name)
                .send()
                .await
                .with_context(|| format!("cannot create event bus {name}"))?;
            Ok(())
        }
        Err(e) => anyhow::bail!(
            "cannot read event bus {name}: {}",
            aws_sdk_eventbridge::error::DisplayErrorContext(e)
        ),
    }
}

async fn ensure_queue(
    sqs: &aws_sdk_sqs::Client,
    queue: &QueueSpec,
    arns: &BTreeMap<String, String>,
) -> Result<(String, String)> {
    let mut attributes = BTreeMap::new();
    if let Some(v) = queue.visibility_timeout {
        attributes.insert(QueueAttributeName::VisibilityTimeout, v.to_string());
    }
    if let Some(v) = queue.message_retention {
        attributes.insert(QueueAttributeName::MessageRetentionPeriod, v.to_string());
    }
    if let Some((target, count)) = &queue.redrive {
        let arn = arns
            .get(target)
            .with_context(|| format!("{}: dead-letter queue {target} is not a queue", queue.logical_id))?;
        attributes.insert(
            QueueAttributeName::RedrivePolicy,
            serde_json::json!({"deadLetterTargetArn": arn, "maxReceiveCount": count}).to_string(),
        );
    }
    // CreateQueue answers with the existing URL when the queue exists; SetQueueAttributes then
    // brings an older queue in line with the template.
    let url = match sqs
        .create_queue()
        .queue_name(&queue.name)
        .set_attributes(Some(attributes.clone().into_iter().collect()))
        .send()
        .await
    {
        Ok(out) => out.queue_url.context("CreateQueue returned no URL")?,
        Err(_) => {
            let url = sqs
                .get_queue_url()
                .queue_name(&queue.name)
                .send()
                .await
                .with_context(|| format!("cannot create or find queue {}", queue.name))?
                .queue_url
                .context("GetQueueUrl returned no URL")?;
            sqs.set_queue_attributes()
                .queue_url(&url)
                .set_attributes(Some(attributes.into_iter().collect()))
                .send()
                .await
                .with_context(|| format!("cannot update queue {}", queue.name))?;
            url
        }
    };
    let arn = fcfs_shared::adapters::sqs::queue_arn(sqs, &url)
        .await
        .with_context(|| format!("cannot read queue {}", queue.name))?;
    eprintln!("queue {} ready: {url}", queue.name);
    Ok((url, arn))
}

fn key_schema(keys: &[KeySpec]) -> Result<Vec<KeySchemaElement>> {
    keys.iter()
        .map(|k| {
            Ok(KeySchemaElement::builder()
                .attribute_name(&k.attribute)
                .key_type(KeyType::from(k.key_type.as_str()))
                .build()?)
        })
        .collect()
}

async fn ensure_table(dynamodb: &aws_sdk_dynamodb::Client, table: &fcfs_template::TableSpec) -> Result<()> {
    if dynamodb.describe_table().table_name(&table.name).send().await.is_ok() {
        eprintln!("table {} exists", table.name);
        return Ok(());
    }
    let mut request = dynamodb
        .create_table()
        .table_name(&table.name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_key_schema(Some(key_schema(&table.keys)?));
    for (name, kind) in &table.attributes {
        request = request.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::from(kind.as_str()))
                .build()?,
        );
    }
    for index in &table.global_indexes {
        request = request.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(&index.name)
                .set_key_schema(Some(key_schema(&index.keys)?))
                .projection(Projection::builder().projection_type(ProjectionType::All).build())
                .build()?,
        );
    }
    match request.send().await {
        Ok(_) => eprintln!("table {} created", table.name),
        // Another provisioner may have won the race since DescribeTable.
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception()) => {}
        Err(e) => return Err(e).with_context(|| format!("cannot create table {}", table.name)),
    }
    Ok(())
}
