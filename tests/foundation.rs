//! The local stack, service by service, over real connections.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::QueueAttributeName;
use integration_tests::{dynamodb, env, mysql, queue_arn, receive, redis, sqs, template, unique};

#[tokio::test]
async fn redis_runs_a_script_atomically() {
    let mut conn = redis().await;
    let key = format!("test:{{{}}}:n", unique("script"));
    let script = redis::Script::new(
        r"
        local n = redis.call('INCRBY', KEYS[1], ARGV[1])
        redis.call('EXPIRE', KEYS[1], 60)
        return n * 2",
    );
    let first: i64 = script.key(&key).arg(3).invoke_async(&mut conn).await.unwrap();
    let second: i64 = script.key(&key).arg(4).invoke_async(&mut conn).await.unwrap();
    assert_eq!((first, second), (6, 14));
}

#[tokio::test]
async fn mariadb_has_every_migration_and_keeps_a_row() {
    let pool = mysql().await;
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success = 1 ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap();
    let expected: Vec<i64> = fcfs_shared::adapters::mysql::MIGRATOR
        .iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(applied, expected, "every migration in migrations/ is applied");

    let partner = unique("partner");
    let id = sqlx::query(
        "INSERT INTO campaigns (partner_id, name, total_quantity, issue_starts_at, issue_ends_at, coupon_expires_at, \
         discount_type, discount_value) VALUES (?, 'foundation', 7, NOW(3), NOW(3), NOW(3), 'AMOUNT', 100)",
    )
    .bind(&partner)
    .execute(&pool)
    .await
    .unwrap()
    .last_insert_id();
    let (name, quantity): (String, u32) =
        sqlx::query_as("SELECT name, total_quantity FROM campaigns WHERE id = ? AND partner_id = ?")
            .bind(id)
            .bind(&partner)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((name.as_str(), quantity), ("foundation", 7));
    sqlx::query("DELETE FROM campaigns WHERE id = ?")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
}

async fn create_queue(
    client: &aws_sdk_sqs::Client,
    name: &str,
    attributes: HashMap<QueueAttributeName, String>,
) -> String {
    client
        .create_queue()
        .queue_name(name)
        .set_attributes(Some(attributes))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap()
}

#[tokio::test]
async fn sqs_sends_receives_and_deletes() {
    let client = sqs().await;
    let url = create_queue(&client, &unique("fcfs-test"), HashMap::new()).await;
    client
        .send_message()
        .queue_url(&url)
        .message_body("hello")
        .send()
        .await
        .unwrap();
    let received = receive(&client, &url, 5).await;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].body(), Some("hello"));
    client
        .delete_message()
        .queue_url(&url)
        .receipt_handle(received[0].receipt_handle().unwrap())
        .send()
        .await
        .unwrap();
    let after = client
        .receive_message()
        .queue_url(&url)
        .visibility_timeout(0)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    assert!(after.is_empty(), "a deleted message does not come back");
    client.delete_queue().queue_url(&url).send().await.unwrap();
}

#[tokio::test]
async fn sqs_moves_a_message_to_the_dlq_after_max_receive_count() {
    // The same maxReceiveCount as the template's queue, on throwaway queues so no other test's
    // messages interfere; visibility 0 lets each failed receive return at once.
    let max_receive = template()
        .queues()
        .unwrap()
        .into_iter()
        .find_map(|q| q.redrive.map(|(_, n)| n))
        .expect("the template declares a redrive policy");
    let client = sqs().await;
    let dlq_url = create_queue(&client, &unique("fcfs-test-dlq"), HashMap::new()).await;
    let dlq_arn = queue_arn(&client, &dlq_url).await;
    let url = create_queue(
        &client,
        &unique("fcfs-test-main"),
        HashMap::from([
            (QueueAttributeName::VisibilityTimeout, "0".to_owned()),
            (
                QueueAttributeName::RedrivePolicy,
                serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive}).to_string(),
            ),
        ]),
    )
    .await;
    client
        .send_message()
        .queue_url(&url)
        .message_body("poison")
        .send()
        .await
        .unwrap();

    let mut receives = 0;
    for _ in 0..max_receive + 3 {
        if receive(&client, &url, 1).await.is_empty() {
            break;
        }
        receives += 1;
    }
    assert_eq!(
        receives, max_receive,
        "received exactly maxReceiveCount times before the redrive"
    );
    let dead = receive(&client, &dlq_url, 5).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body(), Some("poison"));
    for u in [url, dlq_url] {
        client.delete_queue().queue_url(u).send().await.unwrap();
    }
}

#[tokio::test]
async fn dynamodb_rejects_a_conditional_put_on_an_existing_key() {
    let template = template();
    let table = template
        .tables()
        .unwrap()
        .into_iter()
        .next()
        .expect("the template declares a table");
    let hash_key = &table.keys.iter().find(|k| k.key_type == "HASH").unwrap().attribute;
    let client = dynamodb().await;
    let key = unique("conditional");
    let put = || {
        client
            .put_item()
            .table_name(&table.name)
            .item(hash_key, AttributeValue::S(key.clone()))
            .item("partnerId", AttributeValue::S("p".into()))
            .item("displayId", AttributeValue::S(key.clone()))
            .condition_expression("attribute_not_exists(#k)")
            .expression_attribute_names("#k", hash_key)
    };
    put().send().await.expect("the first put succeeds");
    let err = put().send().await.expect_err("the second put is rejected");
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_conditional_check_failed_exception()),
        "rejected by its condition, got {err:?}"
    );
    client
        .delete_item()
        .table_name(&table.name)
        .key(hash_key, AttributeValue::S(key))
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn every_queue_and_table_in_the_template_is_provisioned() {
    let template = template();
    let client = sqs().await;
    let queues = template.queues().unwrap();
    assert!(!queues.is_empty());
    for queue in &queues {
        let url = client
            .get_queue_url()
            .queue_name(&queue.name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("queue {} is not provisioned: {e:?}", queue.name))
            .queue_url
            .unwrap();
        let attributes = client
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap();
        if let Some(v) = queue.visibility_timeout {
            assert_eq!(
                attributes[&QueueAttributeName::VisibilityTimeout],
                v.to_string(),
                "{}",
                queue.name
            );
        }
        if let Some((target, count)) = &queue.redrive {
            let policy: serde_json::Value =
                serde_json::from_str(&attributes[&QueueAttributeName::RedrivePolicy]).unwrap();
            let target_name = template.physical_name(target).unwrap();
            assert!(
                policy["deadLetterTargetArn"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!(":{target_name}")),
                "{} redrives to {target_name}: {policy}",
                queue.name
            );
            assert_eq!(
                policy["maxReceiveCount"].to_string().trim_matches('"'),
                count.to_string()
            );
        }
    }
    let dynamodb = dynamodb().await;
    let tables = template.tables().unwrap();
    assert!(!tables.is_empty());
    for table in &tables {
        let described = dynamodb
            .describe_table()
            .table_name(&table.name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("table {} is not provisioned: {e:?}", table.name))
            .table
            .unwrap();
        let keys: Vec<(String, String)> = described
            .key_schema()
            .iter()
            .map(|k| (k.attribute_name().to_owned(), k.key_type().as_str().to_owned()))
            .collect();
        let expected: Vec<(String, String)> = table
            .keys
            .iter()
            .map(|k| (k.attribute.clone(), k.key_type.clone()))
            .collect();
        assert_eq!(keys, expected, "key schema of {}", table.name);
        let mut indexes: Vec<String> = described
            .global_secondary_indexes()
            .iter()
            .filter_map(|i| i.index_name().map(str::to_owned))
            .collect();
        indexes.sort();
        let mut expected: Vec<String> = table.global_indexes.iter().map(|i| i.name.clone()).collect();
        expected.sort();
        assert_eq!(indexes, expected, "global indexes of {}", table.name);
    }
    assert_eq!(env("FCFS_STAGE"), integration_tests::stage());
}
