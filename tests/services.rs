//! The private servers of `integration_tests::services` do what fault tests rely on, against the
//! real binaries: what survives a SIGKILL, what a restart from a snapshot brings back, what a
//! paused server does, and that a spawned runner serves and dies.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use integration_tests::services::{Persistence, PrivateMariaDb, PrivateRedis, RunnerProcess};
use redis::AsyncCommands;

const ANSWER: Duration = Duration::from_secs(5);

async fn get(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> Option<String> {
    conn.get(key).await.expect("GET answers")
}

#[tokio::test]
async fn redis_with_aof_keeps_every_acknowledged_write_across_sigkill() {
    let started = Instant::now();
    let mut redis = PrivateRedis::start(Persistence::AppendOnlyAlways).await;
    eprintln!("PrivateRedis::start(AppendOnlyAlways) took {:?}", started.elapsed());
    let mut conn = redis.connection(ANSWER).await;
    for i in 0..200 {
        let () = conn.set(format!("k{i}"), i).await.unwrap();
    }
    let () = conn.incr("counter", 200).await.unwrap();

    redis.kill();
    assert!(
        TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], redis.port()))).is_err(),
        "nothing listens after the kill"
    );
    let started = Instant::now();
    redis.restart().await;
    eprintln!("PrivateRedis::restart took {:?}", started.elapsed());

    let mut conn = redis.connection(ANSWER).await;
    for i in 0..200 {
        assert_eq!(get(&mut conn, &format!("k{i}")).await, Some(i.to_string()));
    }
    assert_eq!(get(&mut conn, "counter").await.as_deref(), Some("200"));
}

#[tokio::test]
async fn redis_without_persistence_comes_back_empty_even_after_a_snapshot() {
    let mut redis = PrivateRedis::start(Persistence::None).await;
    let mut conn = redis.connection(ANSWER).await;
    let () = conn.set("a", "1").await.unwrap();
    let snapshot = redis.snapshot().await;

    redis.kill();
    redis.restart().await;
    let mut conn = redis.connection(ANSWER).await;
    assert_eq!(get(&mut conn, "a").await, None, "nothing was persisted");

    redis.restart_from(&snapshot).await;
    let mut conn = redis.connection(ANSWER).await;
    assert_eq!(get(&mut conn, "a").await.as_deref(), Some("1"));
    redis.restart().await;
    let mut conn = redis.connection(ANSWER).await;
    assert_eq!(
        get(&mut conn, "a").await,
        None,
        "still nothing persisted after restart_from"
    );
}

#[tokio::test]
async fn redis_restarted_from_a_snapshot_has_exactly_the_older_data_and_keeps_new_writes() {
    let mut redis = PrivateRedis::start(Persistence::AppendOnlyAlways).await;
    let mut conn = redis.connection(ANSWER).await;
    let () = conn.set("before", "1").await.unwrap();
    let () = conn.set("changed", "old").await.unwrap();
    let snapshot = redis.snapshot().await;
    let () = conn.set("after", "2").await.unwrap();
    let () = conn.set("changed", "new").await.unwrap();
    let () = conn.del("before").await.unwrap();

    let started = Instant::now();
    redis.restart_from(&snapshot).await;
    eprintln!("PrivateRedis::restart_from took {:?}", started.elapsed());
    let mut conn = redis.connection(ANSWER).await;
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut conn).await.unwrap();
    let mut keys = keys;
    keys.sort();
    assert_eq!(keys, ["before", "changed"], "exactly the snapshot's keys");
    assert_eq!(get(&mut conn, "before").await.as_deref(), Some("1"));
    assert_eq!(get(&mut conn, "changed").await.as_deref(), Some("old"));

    // Writes right after restart_from returns are in the AOF: they survive a kill.
    let () = conn.set("later", "3").await.unwrap();
    let () = conn.set("changed", "newer").await.unwrap();
    redis.kill();
    redis.restart().await;
    let mut conn = redis.connection(ANSWER).await;
    assert_eq!(get(&mut conn, "before").await.as_deref(), Some("1"));
    assert_eq!(get(&mut conn, "later").await.as_deref(), Some("3"));
    assert_eq!(get(&mut conn, "changed").await.as_deref(), Some("newer"));
    assert_eq!(
        get(&mut conn, "after").await,
        None,
        "the write after the snapshot stays gone"
    );

    // The same snapshot can be used again.
    redis.restart_from(&snapshot).await;
    let mut conn = redis.connection(ANSWER).await;
    assert_eq!(get(&mut conn, "later").await, None);
    assert_eq!(get(&mut conn, "changed").await.as_deref(), Some("old"));
}

#[tokio::test]
async fn a_paused_redis_accepts_connections_but_answers_nothing_until_resumed() {
    let mut redis = PrivateRedis::start(Persistence::None).await;
    let timeout = Duration::from_millis(300);
    let mut conn = redis.connection(timeout).await;
    let () = conn.set("k", "v").await.unwrap();

    redis.pause();
    // The kernel still completes the handshake: to a client the server looks up, but hangs.
    TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], redis.port())), ANSWER)
        .expect("a paused server's port accepts connections");
    let started = Instant::now();
    let err = conn
        .get::<_, Option<String>>("k")
        .await
        .expect_err("a paused server does not answer");
    assert!(err.is_timeout(), "a timeout, not {err:?}");
    assert!(started.elapsed() >= timeout, "it waited the response timeout");

    redis.resume();
    // The same connection works again: the late answer to the timed-out GET is discarded.
    assert_eq!(get(&mut conn, "k").await.as_deref(), Some("v"));
    let () = conn.set("k", "w").await.unwrap();
    assert_eq!(get(&mut conn, "k").await.as_deref(), Some("w"));

    // Dropping a paused server works too.
    redis.pause();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_is_migrated_keeps_committed_rows_across_sigkill_and_is_private() {
    let started = Instant::now();
    let (mut db, other) = tokio::join!(PrivateMariaDb::start(), PrivateMariaDb::start());
    eprintln!("two PrivateMariaDb::start at once took {:?}", started.elapsed());
    let started = Instant::now();
    let third = PrivateMariaDb::start().await;
    eprintln!("PrivateMariaDb::start took {:?}", started.elapsed());
    drop(third);

    let pool = fcfs_shared::adapters::mysql::connect(&db.url(), 2).await.unwrap();
    let mut tables: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(table_name AS CHAR) FROM information_schema.tables WHERE table_schema = 'fcfs'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    tables.sort();
    // Every table a migration creates, and sqlx's own: taken from the migrations, so a new table
    // needs no edit here.
    let mut created: Vec<String> = fcfs_shared::adapters::mysql::MIGRATOR
        .iter()
        .flat_map(|m| {
            let sql = m.sql.as_str().to_owned();
            sql.split("CREATE TABLE ")
                .skip(1)
                .filter_map(|rest| rest.split_whitespace().next().map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .chain(["_sqlx_migrations".to_owned()])
        .collect();
    created.sort();
    assert!(created.len() > 15, "{created:?}");
    assert_eq!(tables, created);
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success = 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(applied, fcfs_shared::adapters::mysql::MIGRATOR.iter().count() as i64);

    sqlx::query("CREATE TABLE probe (id INT PRIMARY KEY) ENGINE=InnoDB")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO probe VALUES (1)")
        .execute(&pool)
        .await
        .unwrap();
    // A transaction still open when the server dies: crash recovery rolls it back.
    let mut open = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO probe VALUES (2)")
        .execute(&mut *open)
        .await
        .unwrap();

    db.kill();
    drop(open);
    pool.close().await;
    let started = Instant::now();
    db.restart().await;
    eprintln!("PrivateMariaDb::restart after SIGKILL took {:?}", started.elapsed());

    let pool = fcfs_shared::adapters::mysql::connect(&db.url(), 2).await.unwrap();
    let ids: Vec<i32> = sqlx::query_scalar("SELECT id FROM probe ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(ids, [1], "the committed row, not the uncommitted one");

    let other_pool = fcfs_shared::adapters::mysql::connect(&other.url(), 2).await.unwrap();
    let probe: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'fcfs' AND table_name = 'probe'",
    )
    .fetch_one(&other_pool)
    .await
    .unwrap();
    assert_eq!(probe, 0, "the other instance has its own data");
}

#[tokio::test]
async fn a_runner_process_serves_until_killed() {
    let started = Instant::now();
    let mut runner = RunnerProcess::spawn(&[]).await;
    eprintln!("RunnerProcess::spawn took {:?}", started.elapsed());

    let client = reqwest::Client::builder().timeout(ANSWER).build().unwrap();
    let res = client
        .get(format!("{}/nope", runner.base_url()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("the runner answers: {e}; its log:\n{}", runner.log_tail(20)));
    assert!(
        res.status().is_client_error(),
        "an unknown route is refused, got {}",
        res.status()
    );

    runner.kill();
    // The client's kept-alive connection sees the kill (an incomplete message, not a refusal)...
    client
        .get(format!("{}/nope", runner.base_url()))
        .send()
        .await
        .expect_err("a killed runner does not answer");
    // ...and a new connection is refused: nothing listens any more.
    let refused = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], runner.port())))
        .expect_err("nothing listens after the kill");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
}

/// The stack's own Redis (`REDIS_URL`, what the runner uses) keeps an append-only file, so the
/// campaigns of a `make up` still sell after `make down` and the next `make up` (that a Redis
/// started so keeps its writes across a SIGKILL is the AOF test above).
#[tokio::test]
async fn the_stacks_redis_keeps_an_append_only_file() {
    let mut conn = integration_tests::redis().await;
    let config: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendonly")
        .query_async(&mut conn)
        .await
        .expect("CONFIG GET answers");
    assert_eq!(config, ["appendonly", "yes"]);
}
