//! `fcfs-admin reconcile`, `rebuild-ledger` and `recover` end to end: the real binary against the
//! shared Redis, MariaDB and SQS emulator, on a campaign of this test's own.

use std::process::{Command, Output};

use fcfs_shared::adapters::mysql::MySqlStore;
use fcfs_shared::adapters::redis::{RedisIssueLedger, users_key};
use fcfs_shared::issuance::domain::{IssueRules, Reservation};
use fcfs_shared::issuance::ports::{CampaignCatalog, CouponBook, IssueLedger};
use fcfs_shared::kernel::UserId;
use fcfs_shared::testkit::new_campaign;
use integration_tests::{env, mysql, queue_with_dlq, redis, sqs, unique};

fn admin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fcfs-admin"))
        .args(args)
        .output()
        .expect("fcfs-admin runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A campaign of three coupons written through the real store and ledger.
async fn written_campaign() -> (MySqlStore, RedisIssueLedger, IssueRules) {
    let store = MySqlStore::new(mysql().await);
    let ledger = RedisIssueLedger::new(&env("REDIS_URL")).unwrap();
    let partner = unique("reconcile");
    let campaign = store
        .create(
            &partner,
            &new_campaign(5, chrono::Utc::now() - chrono::Duration::minutes(1)),
            fcfs_shared::partners::domain::DEFAULT_LIVE_CAMPAIGNS,
        )
        .await
        .unwrap();
    let rules = IssueRules::from(&campaign);
    ledger.prime(&rules).await.unwrap();
    let mut chunk = Vec::new();
    for u in ["a", "b", "c"] {
        let user = UserId::parse(u).unwrap();
        let request = uuid::Uuid::now_v7();
        ledger
            .reserve(campaign.id, &partner, &user, request, chrono::Utc::now())
            .await
            .unwrap();
        ledger.mark_sent(campaign.id, request).await.unwrap();
        chunk.push(Reservation::new(
            request,
            campaign.id,
            &partner,
            user,
            1,
            chrono::Utc::now(),
        ));
    }
    let record = store.record(&chunk).await.unwrap();
    let outcomes: Vec<_> = record.outcomes.iter().map(|(_, u, o)| (u.clone(), *o)).collect();
    ledger.record_outcomes(campaign.id, &outcomes).await.unwrap();
    (store, ledger, rules)
}

#[tokio::test]
async fn reconcile_finds_a_planted_difference_and_repairs_it() {
    let (store, ledger, rules) = written_campaign().await;
    let id = rules.campaign_id.to_string();
    let clean = admin(&["reconcile", "--campaign", &id]);
    assert!(clean.status.success(), "{}", text(&clean));
    assert!(text(&clean).contains("in agreement"), "{}", text(&clean));

    // Plant: Redis forgets a coupon holder (as a failover would), MySQL's counter drifts.
    let mut conn = redis().await;
    let _: () = redis::cmd("HDEL")
        .arg(users_key(rules.campaign_id))
        .arg("b")
        .query_async(&mut conn)
        .await
        .unwrap();
    sqlx::query("UPDATE campaigns SET issued_count = 9 WHERE id = ?")
        .bind(rules.campaign_id)
        .execute(store.pool().expect("a store made with MySqlStore::new"))
        .await
        .unwrap();

    let found = admin(&["reconcile", "--campaign", &id]);
    assert_eq!(found.status.code(), Some(2), "differences remain: {}", text(&found));
    let report = text(&found);
    assert!(report.contains("hold a coupon but no place in Redis: b"), "{report}");
    assert!(report.contains("issued_count 9 for 3 coupons"), "{report}");
    assert!(report.contains("repairable with --repair"), "{report}");

    let repaired = admin(&["reconcile", "--campaign", &id, "--repair"]);
    assert!(repaired.status.success(), "{}", text(&repaired));
    assert!(text(&repaired).contains("[repaired]"), "{}", text(&repaired));
    let again = admin(&["reconcile", "--campaign", &id]);
    assert!(
        again.status.success() && text(&again).contains("in agreement"),
        "{}",
        text(&again)
    );
    assert_eq!(store.counts(rules.campaign_id).await.unwrap().issued_count, 3);
    assert_eq!(ledger.reserved_count(rules.campaign_id).await.unwrap(), 3);
    let standing = ledger
        .standing(rules.campaign_id, &UserId::parse("b").unwrap())
        .await
        .unwrap();
    assert!(standing.held, "b holds its place again: it cannot be sold a second one");
}

#[tokio::test]
async fn rebuild_ledger_refuses_while_messages_are_queued_and_recover_runs_once() {
    let (_, ledger, rules) = written_campaign().await;
    let id = rules.campaign_id.to_string();
    let sqs = sqs().await;
    let (queue, _) = queue_with_dlq(&sqs, 30).await;
    sqs.send_message()
        .queue_url(&queue)
        .message_body("{}")
        .send()
        .await
        .unwrap();
    let refused = admin(&["rebuild-ledger", "--campaign", &id, "--queue-url", &queue]);
    assert!(!refused.status.success());
    assert!(text(&refused).contains("refusing to rebuild"), "{}", text(&refused));
    assert!(text(&refused).contains("1 messages"), "{}", text(&refused));

    let forced = admin(&["rebuild-ledger", "--campaign", &id, "--queue-url", &queue, "--force"]);
    assert!(forced.status.success(), "{}", text(&forced));
    assert!(text(&forced).contains("3 coupons, 3 places held"), "{}", text(&forced));
    assert_eq!(ledger.reserved_count(rules.campaign_id).await.unwrap(), 3);

    // A long grace: this run re-sends nothing that other tests may still be sending.
    let recovered = admin(&["recover", "--queue-url", &queue, "--grace-secs", "3600"]);
    assert!(recovered.status.success(), "{}", text(&recovered));
    let summary: serde_json::Value = serde_json::from_slice(&recovered.stdout).unwrap();
    assert!(summary["campaigns"].as_u64().unwrap() >= 1, "{summary}");
}
