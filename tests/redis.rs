//! The issue ledger on each Redis deployment it is built for: one server, a 3-master Redis
//! Cluster (ElastiCache cluster mode), a server that speaks only TLS, and a 3-master cluster that
//! speaks only TLS and announces its nodes by hostname (ElastiCache Serverless). Every operation
//! the functions and the admin use runs on campaigns whose keys lie on every node of a cluster, so
//! a script or command that crosses slots (CROSSSLOT) or goes to the wrong node (MOVED) fails here.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use chrono::Utc;
use fcfs_shared::adapters::redis::{
    LIVE_CAMPAIGNS_KEY, RedisIssueLedger, RedisSettings, count_key, outcomes_key, pending_key, rules_key, users_key,
};
use fcfs_shared::issuance::domain::{
    CampaignId, CampaignKind, Holder, IssueDecision, IssueRules, Outcome, Place, RejectionReason,
};
use fcfs_shared::issuance::ports::IssueLedger;
use fcfs_shared::kernel::UserId;
use integration_tests::{RedisDeployment, env};
use uuid::Uuid;

/// A connection to the one node `url` names, not the cluster client (TLS, trusting the private CA,
/// for a `rediss://` URL).
async fn node_at(url: &str) -> redis::aio::MultiplexedConnection {
    let client = if url.starts_with("rediss://") {
        redis::Client::build_with_tls(url, RedisDeployment::tls_certificates())
    } else {
        redis::Client::open(url)
    };
    client
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("the cluster node at {url} answers: {e}"))
}

async fn cluster_node(cluster: RedisDeployment) -> redis::aio::MultiplexedConnection {
    node_at(&cluster.url()).await
}

/// The cluster's masters by the slot ranges they serve, read from `CLUSTER NODES` on the node
/// the URL names (a connection to that node only: these commands are answered by any node).
async fn masters_by_slot(conn: &mut redis::aio::MultiplexedConnection) -> Vec<(u16, u16, String)> {
    let nodes: String = redis::cmd("CLUSTER").arg("NODES").query_async(conn).await.unwrap();
    let mut ranges = Vec::new();
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() < 9 || !fields[2].contains("master") {
            continue;
        }
        for range in &fields[8..] {
            let (start, end) = range.split_once('-').unwrap_or((range, range));
            if let (Ok(start), Ok(end)) = (start.parse(), end.parse()) {
                ranges.push((start, end, fields[1].to_owned()));
            }
        }
    }
    ranges
}

/// Fresh campaign ids, at least one on each master of the cluster (by the slot of their hash tag).
async fn campaigns_on_every_node(cluster: RedisDeployment) -> Vec<CampaignId> {
    let mut conn = cluster_node(cluster).await;
    let masters = masters_by_slot(&mut conn).await;
    let nodes: BTreeSet<&String> = masters.iter().map(|(_, _, node)| node).collect();
    assert!(nodes.len() >= 3, "the local cluster has 3 masters: {masters:?}");
    let mut chosen: HashMap<&String, CampaignId> = HashMap::new();
    for id in fresh_id()..fresh_id() + 1_000 {
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(rules_key(id))
            .query_async(&mut conn)
            .await
            .unwrap();
        let (_, _, node) = masters
            .iter()
            .find(|(start, end, _)| (*start..=*end).contains(&slot))
            .unwrap_or_else(|| panic!("slot {slot} is served by no master: {masters:?}"));
        chosen.entry(node).or_insert(id);
        if chosen.len() == nodes.len() {
            break;
        }
    }
    assert_eq!(chosen.len(), nodes.len(), "campaign ids on every master: {chosen:?}");
    chosen.into_values().collect()
}

/// Campaign ids far above any the database hands out, different for every call.
fn fresh_id() -> CampaignId {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    (Utc::now().timestamp_micros() as u64) * 1_000
        + NEXT.fetch_add(10_000, std::sync::atomic::Ordering::Relaxed) % 1_000_000
}

fn rules(id: CampaignId, quantity: u32) -> IssueRules {
    // Whole milliseconds, as the ledger keeps them.
    let now = chrono::DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap();
    IssueRules {
        campaign_id: id,
        partner_id: "ledger-test".into(),
        total_quantity: quantity,
        issue_starts_at: now - chrono::Duration::minutes(1),
        issue_ends_at: now + chrono::Duration::hours(1),
        coupon_expires_at: now + chrono::Duration::days(1),
        kind: CampaignKind::Sale,
        paused: false,
    }
}

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

/// Every ledger operation on one campaign: reserve (to sold out), duplicates, standing, the
/// pending scan, mark sent, release, outcomes, holders, restore.
async fn exercise(ledger: &RedisIssueLedger, id: CampaignId) {
    let rules = rules(id, 3);
    ledger.prime(&rules).await.unwrap();
    assert_eq!(ledger.rules(id).await.unwrap(), Some(rules.clone()));
    let now = Utc::now();
    let requests: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    let mut decisions = Vec::new();
    for (i, request) in requests.iter().enumerate() {
        decisions.push(
            ledger
                .reserve(id, "ledger-test", &user(&format!("u{i}")), *request, now)
                .await
                .unwrap(),
        );
    }
    assert_eq!(
        decisions,
        [
            IssueDecision::Reserved { rank: 1 },
            IssueDecision::Reserved { rank: 2 },
            IssueDecision::Reserved { rank: 3 },
            IssueDecision::SoldOut
        ]
    );
    assert_eq!(
        ledger
            .reserve(id, "ledger-test", &user("u0"), Uuid::now_v7(), now)
            .await
            .unwrap(),
        IssueDecision::AlreadyIssued(Place::of(requests[0], 1)),
        "a repeated request gets the first one's place"
    );
    assert_eq!(
        ledger
            .reserve(id, "someone-else", &user("u9"), Uuid::now_v7(), now)
            .await
            .unwrap(),
        IssueDecision::NotOwner
    );
    assert_eq!(ledger.reserved_count(id).await.unwrap(), 3);
    // A reward campaign is never on sale; its owner is told so, anyone else "not found".
    // A fresh id: the cluster test's campaigns are neighbours, so `id + 1` may be one of them.
    let reward_id = fresh_id();
    let reward = IssueRules {
        campaign_id: reward_id,
        kind: CampaignKind::Reward,
        ..rules.clone()
    };
    ledger.prime(&reward).await.unwrap();
    assert_eq!(ledger.rules(reward_id).await.unwrap(), Some(reward));
    for (partner, decision) in [
        ("ledger-test", IssueDecision::NotOnSale),
        ("someone-else", IssueDecision::NotOwner),
    ] {
        let answer = ledger
            .reserve(reward_id, partner, &user("u0"), Uuid::now_v7(), now)
            .await
            .unwrap();
        assert_eq!(answer, decision);
    }
    assert_eq!(ledger.reserved_count(reward_id).await.unwrap(), 0);

    let pending = ledger.pending(id, usize::MAX).await.unwrap();
    assert_eq!(pending.iter().map(|p| p.rank).collect::<Vec<_>>(), [1, 2, 3]);
    ledger.mark_sent(id, requests[0]).await.unwrap();
    assert!(ledger.release(id, &user("u2"), requests[2]).await.unwrap());
    assert!(
        !ledger.release(id, &user("u2"), requests[2]).await.unwrap(),
        "released once"
    );
    let pending = ledger.pending(id, usize::MAX).await.unwrap();
    assert_eq!(pending.iter().map(|p| p.request_id).collect::<Vec<_>>(), [requests[1]]);
    assert_eq!(ledger.reserved_count(id).await.unwrap(), 2);

    let issued = Outcome::Issued { coupon_id: 7 };
    let rejected = Outcome::Rejected(RejectionReason::OverQuantity);
    ledger
        .record_outcomes(id, &[(user("u0"), issued), (user("u1"), rejected)])
        .await
        .unwrap();
    let standing = ledger.standing(id, &user("u0")).await.unwrap();
    assert_eq!(
        (standing.owner.as_deref(), standing.held, standing.outcome),
        (Some("ledger-test"), true, Some(issued))
    );
    assert!(!ledger.standing(id, &user("u2")).await.unwrap().held);
    assert_eq!(
        ledger.outcomes(id).await.unwrap(),
        HashMap::from([("u0".to_owned(), issued), ("u1".to_owned(), rejected)])
    );
    let holders = ledger.holders(id).await.unwrap();
    assert_eq!(
        holders.keys().collect::<BTreeSet<_>>(),
        BTreeSet::from([&"u0".to_owned(), &"u1".to_owned()])
    );

    // The admin's rebuild: DEL of three keys of the campaign, then the holders from "MySQL"
    // (u0's coupon) and the place still pending (u1's request).
    let u0 = Holder {
        user_id: "u0".to_owned(),
        coupon_id: 7,
        place: Place::of(requests[0], 1),
    };
    assert_eq!(ledger.restore(&rules, &[u0]).await.unwrap(), 2);
    let holders = ledger.holders(id).await.unwrap();
    assert_eq!(Place::decode(&holders["u0"]), Place::of(requests[0], 1));
    assert_eq!(Place::decode(&holders["u1"]), Place::of(requests[1], 2));
    assert_eq!(
        ledger.outcomes(id).await.unwrap(),
        HashMap::from([("u0".to_owned(), issued)])
    );
}

/// Enough places that the hashes are read in several HSCAN pages (1,000 per page).
async fn many_places(ledger: &RedisIssueLedger, id: CampaignId) {
    const PLACES: u32 = 2_500;
    ledger.prime(&rules(id, PLACES)).await.unwrap();
    let now = Utc::now();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..PLACES {
        let ledger = ledger.clone();
        calls.spawn(async move {
            ledger
                .reserve(id, "ledger-test", &user(&format!("many-{i}")), Uuid::now_v7(), now)
                .await
        });
    }
    let mut ranks = BTreeSet::new();
    while let Some(decision) = calls.join_next().await {
        match decision.unwrap().unwrap() {
            IssueDecision::Reserved { rank } => assert!(ranks.insert(rank)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(ranks, (1..=PLACES).collect());
    assert_eq!(ledger.pending(id, usize::MAX).await.unwrap().len(), PLACES as usize);
    assert_eq!(ledger.holders(id).await.unwrap().len(), PLACES as usize);
    assert_eq!(ledger.pending(id, 10).await.unwrap().len(), 10);
}

/// Runs every operation on `ids` (and one large campaign), then deletes what it wrote, panic or
/// not: the shared Redis is also walked by other tests' recovery runs, which must not find
/// places of campaigns they do not know.
async fn ledger_works_on(redis: RedisDeployment, ids: Vec<CampaignId>) {
    let many = ids.iter().max().copied().unwrap_or_default() + 1_000;
    let all: Vec<CampaignId> = ids.iter().copied().chain([many]).collect();
    let body = tokio::spawn(async move {
        let ledger = redis.ledger(Duration::from_secs(10));
        assert_eq!(ledger.is_cluster(), redis.is_cluster());
        for &id in &ids {
            exercise(&ledger, id).await;
        }
        many_places(&ledger, many).await;
        let live: BTreeSet<CampaignId> = ledger.live_campaigns().await.unwrap().into_iter().collect();
        for id in ids.iter().copied().chain([many]) {
            assert!(live.contains(&id), "campaign {id} is listed live");
        }
    })
    .await;
    for id in all {
        let keys = [
            rules_key(id),
            users_key(id),
            count_key(id),
            pending_key(id),
            outcomes_key(id),
        ];
        redis.run(redis::cmd("DEL").arg(&keys[..])).await;
        redis.run(redis::cmd("ZREM").arg(LIVE_CAMPAIGNS_KEY).arg(id)).await;
    }
    if let Err(e) = body {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test]
async fn the_ledger_works_on_a_redis_cluster_with_campaigns_on_every_node() {
    let ids = campaigns_on_every_node(RedisDeployment::Cluster).await;
    ledger_works_on(RedisDeployment::Cluster, ids.clone()).await;

    // The same node without the cluster client: a campaign whose slot another node serves is
    // answered with MOVED, so the test above did route across nodes.
    let plain = RedisIssueLedger::new(&env("REDIS_CLUSTER_URL")).unwrap();
    let mut moved = 0;
    for &id in &ids {
        if let Err(e) = plain.reserved_count(id).await {
            assert!(e.to_string().to_lowercase().contains("moved"), "{e}");
            moved += 1;
        }
    }
    assert!(
        moved >= ids.len() - 1,
        "only the node's own campaign answers without MOVED"
    );
}

#[tokio::test]
async fn the_ledger_works_over_tls() {
    ledger_works_on(RedisDeployment::Tls, vec![fresh_id(), fresh_id()]).await;
}

/// The host and port of a `redis://` or `rediss://` URL.
fn host_and_port(url: &str) -> (String, u16) {
    let (host, port) = url
        .split_once("://")
        .and_then(|(_, rest)| rest.trim_end_matches('/').rsplit_once(':'))
        .unwrap_or_else(|| panic!("{url} names a host and a port"));
    (host.to_owned(), port.parse().unwrap())
}

/// The ledger on the TLS-only cluster that announces hostnames, as ElastiCache Serverless: the
/// cluster client learns the slot map from the node the URL names, then opens a TLS connection to
/// every master by the hostname the map gives, each checked against the private CA and that name.
#[tokio::test]
async fn the_ledger_works_on_a_tls_cluster_announcing_hostnames_with_campaigns_on_every_node() {
    let cluster = RedisDeployment::TlsCluster;
    let ids = campaigns_on_every_node(cluster).await;
    ledger_works_on(cluster, ids.clone()).await;

    // The same node over TLS without the cluster client: a campaign whose slot another node serves
    // is answered with MOVED to that node by hostname, so the test above followed hostnames.
    let (host, _) = host_and_port(&cluster.url());
    let one_node = RedisIssueLedger::with_settings(
        &cluster.url(),
        RedisSettings {
            cluster: false,
            ..cluster.settings(Duration::from_secs(5))
        },
    )
    .unwrap();
    let mut moved = 0;
    for &id in &ids {
        if let Err(e) = one_node.reserved_count(id).await {
            let text = e.to_string();
            assert!(text.to_lowercase().contains("moved"), "{text}");
            assert!(
                text.contains(&format!(" {host}:")),
                "MOVED names the node by hostname: {text}"
            );
            moved += 1;
        }
    }
    assert!(
        moved >= ids.len() - 1,
        "only the node's own campaign answers without MOVED"
    );
}

/// What makes the local TLS cluster stand for ElastiCache Serverless: every slot is served by a
/// node named by hostname (CLUSTER SLOTS, CLUSTER SHARDS), not by IP; nodes have a TLS port and
/// no plain one; a plain-text client is refused; a client that does not trust the private CA is
/// refused for the certificate; and each node, reached by that hostname over TLS, runs noeviction.
#[tokio::test]
async fn the_tls_cluster_announces_hostnames_and_refuses_plain_text() {
    let cluster = RedisDeployment::TlsCluster;
    let url = cluster.url();
    let (host, _) = host_and_port(&url);
    assert!(url.starts_with("rediss://"), "{url}");
    assert!(
        host.parse::<std::net::IpAddr>().is_err(),
        "the cluster is named by hostname: {url}"
    );
    let mut seed = node_at(&url).await;

    // CLUSTER SLOTS: [start, end, [host, port, id, …], …] for every range.
    let slots: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut seed).await.unwrap();
    let mut covered = 0;
    let mut ports = BTreeSet::new();
    for range in slots {
        let start: i64 = redis::from_redis_value(range[0].clone()).unwrap();
        let end: i64 = redis::from_redis_value(range[1].clone()).unwrap();
        covered += end - start + 1;
        for node in &range[2..] {
            let node: Vec<redis::Value> = redis::from_redis_value(node.clone()).unwrap();
            let endpoint: String = redis::from_redis_value(node[0].clone()).unwrap();
            assert_eq!(endpoint, host, "CLUSTER SLOTS names slots {start}-{end} by hostname");
            ports.insert(redis::from_redis_value::<u16>(node[1].clone()).unwrap());
        }
    }
    assert_eq!(covered, 16_384, "every slot is served");
    assert_eq!(ports.len(), 3, "3 masters: {ports:?}");

    // CLUSTER SHARDS: each node's endpoint is the hostname; its IP is only metadata.
    let shards: Vec<HashMap<String, redis::Value>> = redis::cmd("CLUSTER")
        .arg("SHARDS")
        .query_async(&mut seed)
        .await
        .unwrap();
    assert_eq!(shards.len(), 3, "3 shards");
    for shard in shards {
        let nodes: Vec<HashMap<String, redis::Value>> = redis::from_redis_value(shard["nodes"].clone()).unwrap();
        for node in nodes {
            let field = |name: &str| -> String {
                redis::from_redis_value(node.get(name).cloned().unwrap_or(redis::Value::Nil))
                    .unwrap_or_else(|e| panic!("CLUSTER SHARDS gives a node's {name}: {e}"))
            };
            assert_eq!(field("endpoint"), host, "the preferred endpoint is the hostname");
            assert_eq!(field("hostname"), host);
            let ip: std::net::IpAddr = field("ip").parse().unwrap();
            assert_ne!(field("endpoint"), ip.to_string());
            assert!(ports.contains(&field("tls-port").parse().unwrap()));
            assert!(!node.contains_key("port"), "no plain-text port: {node:?}");
        }
    }

    for &port in &ports {
        // By hostname over TLS, the certificate checked for that name: answers, and keeps every key.
        let mut node = node_at(&format!("rediss://{host}:{port}")).await;
        let policy: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .query_async(&mut node)
            .await
            .unwrap();
        assert_eq!(policy, ["maxmemory-policy", "noeviction"], "node {port}");
        // The same port in plain text: refused within the deadline.
        let plain = format!("redis://{host}:{port}");
        let answer = tokio::time::timeout(Duration::from_secs(5), async {
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(Duration::from_secs(2)));
            let mut conn = redis::Client::open(plain.as_str())?
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await
        })
        .await
        .unwrap_or_else(|_| panic!("{plain} did not answer within 5 s"));
        assert!(answer.is_err(), "a plain-text PING to {plain} is refused: {answer:?}");
    }

    // A cluster client that trusts only the public roots is refused, naming the certificate.
    let untrusting = RedisIssueLedger::with_settings(
        &url,
        RedisSettings {
            tls_ca_file: None,
            ..cluster.settings(Duration::from_secs(2))
        },
    )
    .unwrap();
    let error = untrusting
        .reserved_count(fresh_id())
        .await
        .expect_err("an untrusted certificate is refused");
    assert!(
        error.to_string().to_lowercase().contains("certificate"),
        "the error names the certificate: {error}"
    );
}

#[tokio::test]
async fn the_ledger_works_on_one_server() {
    ledger_works_on(RedisDeployment::Single, vec![fresh_id(), fresh_id()]).await;
}

/// The server's certificate is checked: without the private CA (the public roots only) the TLS
/// Redis is refused, within the deadline, as unavailable.
#[tokio::test]
async fn tls_refuses_a_server_the_roots_do_not_vouch_for() {
    let ledger = RedisIssueLedger::with_settings(
        &env("REDIS_TLS_URL"),
        RedisSettings {
            tls_ca_file: None,
            ..RedisSettings::default()
        },
    )
    .unwrap();
    let started = std::time::Instant::now();
    let error = ledger
        .reserved_count(1)
        .await
        .expect_err("an untrusted certificate is refused");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert!(
        error.to_string().to_lowercase().contains("certificate"),
        "the error names the certificate: {error}"
    );
    // A plain connection to the TLS port gets no answer it can read either.
    let plain_url = env("REDIS_TLS_URL").replacen("rediss://", "redis://", 1);
    assert!(
        RedisIssueLedger::new(&plain_url)
            .unwrap()
            .reserved_count(1)
            .await
            .is_err()
    );
}

/// A full Redis refuses new places (the issue API answers 503) and keeps every place it held:
/// with `noeviction`, as the stack's servers run, nothing of a live campaign is dropped to make
/// room (ElastiCache's default `volatile-lru` would pick exactly these keys: all have a TTL).
#[tokio::test]
async fn a_full_redis_refuses_new_places_and_keeps_the_held_ones() {
    for deployment in [RedisDeployment::Single, RedisDeployment::Tls] {
        let policy = deployment
            .run(redis::cmd("CONFIG").arg("GET").arg("maxmemory-policy"))
            .await;
        assert_eq!(
            redis::from_redis_value::<Vec<String>>(policy).unwrap(),
            ["maxmemory-policy", "noeviction"],
            "the {deployment:?} server of the stack"
        );
    }
    use integration_tests::services::{Persistence, PrivateRedis};
    let private = PrivateRedis::start(Persistence::None).await;
    let mut conn = private.connection(Duration::from_secs(5)).await;
    let ledger = RedisIssueLedger::new(&private.url()).unwrap();
    let id = fresh_id();
    ledger.prime(&rules(id, 1_000)).await.unwrap();
    let now = Utc::now();
    for i in 0..50 {
        let decision = ledger
            .reserve(id, "ledger-test", &user(&format!("h{i}")), Uuid::now_v7(), now)
            .await;
        assert!(matches!(decision, Ok(IssueDecision::Reserved { .. })), "{decision:?}");
    }
    // Another tenant's data, then a limit below what is used: Redis is full. With noeviction
    // nothing is dropped to get under it; every write is refused until memory is freed.
    let filler = "x".repeat(16 * 1024);
    for i in 0..128 {
        let _: () = redis::cmd("SET")
            .arg(format!("filler:{i}"))
            .arg(&filler)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let used: String = redis::cmd("INFO").arg("memory").query_async(&mut conn).await.unwrap();
    let used: u64 = used
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("INFO memory has used_memory");
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("noeviction")
        .arg("maxmemory")
        .arg(used - 1024 * 1024)
        .query_async(&mut conn)
        .await
        .unwrap();
    let put: redis::RedisResult<()> = redis::cmd("SET").arg("one-more").arg("x").query_async(&mut conn).await;
    assert!(put.is_err_and(|e| e.to_string().contains("OOM")), "Redis is full");
    let refused = ledger
        .reserve(id, "ledger-test", &user("late"), Uuid::now_v7(), now)
        .await;
    assert!(
        refused.is_err(),
        "a new place is refused, not made room for: {refused:?}"
    );
    let holders = ledger.holders(id).await.unwrap();
    assert_eq!(holders.len(), 50, "every held place is kept");
    assert_eq!(ledger.reserved_count(id).await.unwrap(), 50);
}

/// A change of the rules (`PATCH /v1/campaigns/{id}`) on the real script: only within its turn,
/// never on lost or partly lost state (which a heal rebuilds), and never below the places taken,
/// counting the highest rank handed out when a place given back left a gap under it.
#[tokio::test]
async fn amending_the_rules_respects_the_turn_the_places_and_lost_state() {
    use fcfs_shared::issuance::ports::Amendment;
    let ledger = RedisIssueLedger::new(&env("REDIS_URL")).unwrap();
    let id = fresh_id();
    let rules = rules(id, 5);
    ledger.prime(&rules).await.unwrap();
    let now = Utc::now();
    let requests: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    for (i, request) in requests.iter().enumerate() {
        let decision = ledger
            .reserve(id, "ledger-test", &user(&format!("a{i}")), *request, now)
            .await
            .unwrap();
        assert_eq!(decision, IssueDecision::Reserved { rank: i as u32 + 1 });
    }
    let with = |quantity| IssueRules {
        total_quantity: quantity,
        ..rules.clone()
    };
    assert_eq!(ledger.amend(&with(4), "no-turn").await.unwrap(), Amendment::TurnLost);
    let turn = ledger.change_turn(id).await.unwrap().expect("a free turn");
    assert_eq!(ledger.change_turn(id).await.unwrap(), None, "one change at a time");
    assert_eq!(
        ledger.amend(&with(2), &turn).await.unwrap(),
        Amendment::BelowReserved { reserved: 3 }
    );
    // The place of rank 2 is given back: 2 held, rank 3 still on its way.
    assert!(ledger.release(id, &user("a1"), requests[1]).await.unwrap());
    assert_eq!(
        ledger.amend(&with(2), &turn).await.unwrap(),
        Amendment::BelowReserved { reserved: 3 }
    );
    assert_eq!(ledger.amend(&with(3), &turn).await.unwrap(), Amendment::Applied);
    assert_eq!(ledger.rules(id).await.unwrap().unwrap().total_quantity, 3);
    // Partly lost (the holders evicted) or lost (the counter): nothing is written.
    let mut conn = integration_tests::redis().await;
    let _: () = redis::cmd("DEL")
        .arg(fcfs_shared::adapters::redis::users_key(id))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(ledger.amend(&with(4), &turn).await.unwrap(), Amendment::Absent);
    let _: () = redis::cmd("DEL")
        .arg(fcfs_shared::adapters::redis::count_key(id))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(ledger.amend(&with(4), &turn).await.unwrap(), Amendment::Absent);
    assert_eq!(ledger.rules(id).await.unwrap().unwrap().total_quantity, 3, "unchanged");
    ledger.end_change_turn(id, &turn).await.unwrap();
    assert!(
        ledger.change_turn(id).await.unwrap().is_some(),
        "the turn is free again"
    );
    ledger.discard(id).await.unwrap();
}
