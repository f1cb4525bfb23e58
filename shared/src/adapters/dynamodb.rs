//! The API key table on DynamoDB: hash key `keyHash`, GSIs `by-partner` (partnerId, displayId) and
//! `by-display-id` (displayId), as `template.yaml` declares them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};

use crate::kernel::Unavailable;
use crate::keys::domain::{ApiKeyRecord, KeyStatus};
use crate::keys::ports::ApiKeyStore;

type Item = HashMap<String, AttributeValue>;

/// Default deadline of one key lookup: the authorizer's answer must come well inside a second.
pub const DEFAULT_LOOKUP_TIMEOUT: Duration = Duration::from_millis(800);

pub struct DynamoApiKeys {
    client: aws_sdk_dynamodb::Client,
    table: String,
    lookups: AtomicU64,
    lookup_timeout: Duration,
}

impl DynamoApiKeys {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            lookups: AtomicU64::new(0),
            lookup_timeout: DEFAULT_LOOKUP_TIMEOUT,
        }
    }

    /// The deadline of one `find`, the authorizer's only call: SDK retries included, since a
    /// paused or unreachable table otherwise holds the request until API Gateway gives up.
    pub fn with_lookup_timeout(mut self, timeout: Duration) -> Self {
        self.lookup_timeout = timeout;
        self
    }

    /// Reads of a single key (`find`) sent to DynamoDB so far: what the authorizer's cache saves
    /// shows here.
    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }

    async fn query_index(&self, index: &str, attribute: &str, value: &str) -> Result<Vec<ApiKeyRecord>, Unavailable> {
        let items: Vec<Item> = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(index)
            .key_condition_expression("#k = :v")
            .expression_attribute_names("#k", attribute)
            .expression_attribute_values(":v", AttributeValue::S(value.to_owned()))
            .into_paginator()
            .items()
            .send()
            .collect::<Result<_, _>>()
            .await
            .map_err(unavailable)?;
        items.iter().map(from_item).collect()
    }
}

fn unavailable<E: std::error::Error + 'static>(e: E) -> Unavailable {
    Unavailable::new("dynamodb", DisplayErrorContext(e))
}

fn text<'a>(item: &'a Item, name: &str) -> Result<&'a str, Unavailable> {
    match item.get(name) {
        Some(AttributeValue::S(s)) => Ok(s),
        _ => Err(Unavailable::new(
            "dynamodb",
            format!("key item without string attribute {name}"),
        )),
    }
}

fn time(item: &Item, name: &str) -> Result<DateTime<Utc>, Unavailable> {
    DateTime::parse_from_rfc3339(text(item, name)?)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| Unavailable::new("dynamodb", format!("key item attribute {name}: {e}")))
}

/// A damaged item is an error, not "no key": the authorizer then fails closed.
fn from_item(item: &Item) -> Result<ApiKeyRecord, Unavailable> {
    let status = text(item, "status")?;
    Ok(ApiKeyRecord {
        key_hash: text(item, "keyHash")?.to_owned(),
        partner_id: text(item, "partnerId")?.to_owned(),
        display_id: text(item, "displayId")?.to_owned(),
        status: KeyStatus::parse(status)
            .ok_or_else(|| Unavailable::new("dynamodb", format!("key item with unknown status {status:?}")))?,
        created_at: time(item, "createdAt")?,
        expires_at: item
            .contains_key("expiresAt")
            .then(|| time(item, "expiresAt"))
            .transpose()?,
    })
}

fn to_item(key: &ApiKeyRecord) -> Item {
    let s = |v: &str| AttributeValue::S(v.to_owned());
    let mut item = Item::from([
        ("keyHash".to_owned(), s(&key.key_hash)),
        ("partnerId".to_owned(), s(&key.partner_id)),
        ("displayId".to_owned(), s(&key.display_id)),
        ("status".to_owned(), s(key.status.as_str())),
        ("createdAt".to_owned(), s(&key.created_at.to_rfc3339())),
    ]);
    if let Some(at) = key.expires_at {
        item.insert("expiresAt".to_owned(), s(&at.to_rfc3339()));
    }
    item
}

#[async_trait]
impl ApiKeyStore for DynamoApiKeys {
    async fn find(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>, Unavailable> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let read = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("keyHash", AttributeValue::S(key_hash.to_owned()))
            .send();
        let output = tokio::time::timeout(self.lookup_timeout, read)
            .await
            .map_err(|_| {
                Unavailable::new(
                    "dynamodb",
                    format!("no answer within {} ms", self.lookup_timeout.as_millis()),
                )
            })?
            .map_err(unavailable)?;
        output.item.as_ref().map(from_item).transpose()
    }

    async fn insert(&self, key: &ApiKeyRecord) -> Result<(), Unavailable> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(key)))
            .condition_expression("attribute_not_exists(keyHash)")
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn by_partner(&self, partner_id: &str) -> Result<Vec<ApiKeyRecord>, Unavailable> {
        self.query_index("by-partner", "partnerId", partner_id).await
    }

    async fn by_display_id(&self, display_id: &str) -> Result<Option<ApiKeyRecord>, Unavailable> {
        Ok(self
            .query_index("by-display-id", "displayId", display_id)
            .await?
            .into_iter()
            .next())
    }

    async fn revoke(&self, key_hash: &str) -> Result<(), Unavailable> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("keyHash", AttributeValue::S(key_hash.to_owned()))
            .update_expression("SET #s = :revoked")
            .condition_expression("attribute_exists(keyHash)")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":revoked", AttributeValue::S(KeyStatus::Revoked.as_str().to_owned()))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_round_trip() {
        let now = DateTime::parse_from_rfc3339("2026-11-23T10:00:00.123Z")
            .unwrap()
            .to_utc();
        let mut key = ApiKeyRecord {
            key_hash: "ab".repeat(32),
            partner_id: "acme".into(),
            display_id: "ak_0123456789ab".into(),
            status: KeyStatus::Active,
            created_at: now,
            expires_at: None,
        };
        assert_eq!(from_item(&to_item(&key)).unwrap(), key);
        key.expires_at = Some(now + chrono::Duration::days(30));
        key.status = KeyStatus::Revoked;
        assert_eq!(from_item(&to_item(&key)).unwrap(), key);
        let mut broken = to_item(&key);
        broken.insert("status".into(), AttributeValue::S("MAYBE".into()));
        assert!(from_item(&broken).is_err());
    }
}
