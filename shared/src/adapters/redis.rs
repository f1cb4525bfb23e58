//! The issue ledger on Redis (ElastiCache): one Lua script decides each request atomically and, in
//! the same step, records the place it hands out as pending until its message is on the queue.
//!
//! Keys of one campaign share the hash tag `{id}` so every script touches one cluster slot:
//! `cpn:{42}:rules` (owner, quantity, window, when the state expires), `cpn:{42}:users` (hash:
//! user → request id holding the place), `cpn:{42}:count`, `cpn:{42}:pending` (hash: request id →
//! "rank reservedAtMs user", places whose message is not known to be sent) and `cpn:{42}:outcomes`
//! (hash: user → what the writer committed, "c<couponId>" or "r<REASON>"). Every key of a campaign
//! expires a day after its coupons do. `cpn:live` (a sorted set of campaign ids by that expiry,
//! outside any campaign's slot, never touched by a script) is what recovery walks.
//!
//! So the same code runs on one server and on a Redis Cluster (`RedisSettings::cluster`): every
//! script and multi-key command names keys of one campaign only (one slot, no CROSSSLOT), there
//! is no MULTI, `cpn:live` is only ever touched by single-key commands, and whole hashes are read
//! with HSCAN, which goes to the node owning the key (never SCAN over a keyspace).
//!
//! Every call has a deadline (`RedisSettings`): a Redis that hangs ends in `Unavailable`, which
//! the API answers with 503, never in a request that outlives its function.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use redis::IntoConnectionInfo;
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use uuid::Uuid;

use crate::config::{ConfigError, Settings};
use crate::issuance::domain::{
    CampaignId, CampaignKind, Holder, IssueDecision, IssueRules, Outcome, PendingReservation, Place, RejectionReason,
};
use crate::issuance::ports::{Amendment, HealTurn, IssueLedger, Standing};
use crate::kernel::{Unavailable, UserId};

/// Owner, kind (a `REWARD` campaign is never on sale), window, duplicate, paused, then stock; the counter is checked before it is raised, so it never
/// exceeds the quantity, not even for an instant. State partly lost (evicted, flushed) is
/// unprimed, never a fresh start: a primed campaign always has its counter, and places counted
/// always have their holders (`heal` rebuilds them from MySQL). The place is recorded as pending in the same
/// step, so no crash can leave a place held without a trace. Mirrors `domain::decide`.
/// A user who holds a place gets back what holds it (`Place::encode`: request id and rank), so a
/// repeated request is answered as the first was. "Not open" comes with when it opens; every
/// other answer is a number.
/// KEYS: rules, users, count, pending. ARGV: user, now (epoch ms), request id, partner.
const RESERVE: &str = r"
local rules = redis.call('HMGET', KEYS[1], 'quantity', 'startsAt', 'endsAt', 'partner', 'expiresAt', 'kind', 'paused')
if not rules[1] or not rules[4] then return -4 end
if rules[4] ~= ARGV[4] then return -5 end
if rules[6] == 'REWARD' then return -6 end
local now = tonumber(ARGV[2])
if now < tonumber(rules[2]) then return {-3, tonumber(rules[2])} end
if now >= tonumber(rules[3]) then return -2 end
local count = redis.call('GET', KEYS[3])
if not count then return -4 end
count = tonumber(count)
if count > 0 and redis.call('EXISTS', KEYS[2]) == 0 then return -4 end
local held = redis.call('HGET', KEYS[2], ARGV[1])
if held then return held end
if rules[7] == '1' then return -7 end
if count >= tonumber(rules[1]) then return 0 end
local rank = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3] .. ' ' .. rank)
redis.call('HSET', KEYS[4], ARGV[3], rank .. ' ' .. ARGV[2] .. ' ' .. ARGV[1])
if rules[5] then
  if rank == 1 then
    redis.call('PEXPIREAT', KEYS[2], rules[5])
    redis.call('PEXPIREAT', KEYS[3], rules[5])
  end
  if redis.call('HLEN', KEYS[4]) == 1 then redis.call('PEXPIREAT', KEYS[4], rules[5]) end
end
return rank
";

/// Only the request that made a reservation can give it back: a repeated release, or the release
/// of a request whose outcome is unknown, never takes away another request's place. The place
/// holds `<request id> <rank>` (or, written by older builds, the bare request id).
/// The counter's value before it goes down is kept as the highest rank handed out (`top`), since
/// ranks above the new counter are still held. KEYS: users, count, pending, top. ARGV: user,
/// request id.
const RELEASE: &str = r"
redis.call('HDEL', KEYS[3], ARGV[2])
local held = redis.call('HGET', KEYS[1], ARGV[1])
if held and (held == ARGV[2] or string.sub(held, 1, #ARGV[2] + 1) == ARGV[2] .. ' ') then
  redis.call('HDEL', KEYS[1], ARGV[1])
  local count = tonumber(redis.call('GET', KEYS[2]) or '0')
  if count > tonumber(redis.call('GET', KEYS[4]) or '0') then
    redis.call('SET', KEYS[4], count)
    local ttl = redis.call('PTTL', KEYS[2])
    if ttl > 0 then redis.call('PEXPIRE', KEYS[4], ttl) end
  end
  redis.call('DECR', KEYS[2])
  return 1
end
return 0
";

/// One round trip for the status endpoint. Lua turns nil into the end of an array, so absent
/// values come back as empty strings. KEYS: rules, users, outcomes. ARGV: user.
const STANDING: &str = r"
return {
  redis.call('HGET', KEYS[1], 'partner') or '',
  redis.call('HEXISTS', KEYS[2], ARGV[1]),
  redis.call('HGET', KEYS[3], ARGV[1]) or ''
}
";

/// KEYS: outcomes, rules. ARGV: user, outcome, user, outcome, …
const RECORD_OUTCOMES: &str = r"
for i = 1, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
local expires = redis.call('HGET', KEYS[2], 'expiresAt')
if expires then redis.call('PEXPIREAT', KEYS[1], expires) end
return #ARGV / 2
";

/// The rules and their expiry in one step, so rules never outlive their campaign's window,
/// whatever fails after; then the counter at 0 unless it exists, so a primed campaign always has
/// one (its absence means lost state). KEYS: rules, count. ARGV: expires at (ms), field, value, …
const PRIME: &str = r"
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], 0, 'NX', 'PXAT', ARGV[1])
return 1
";

/// The sorted set of campaigns whose state is live, scored by when it expires.
pub const LIVE_CAMPAIGNS_KEY: &str = "cpn:live";

/// The issue script's source, for yardsticks that run it without the service around it (the bench
/// loads it into Redis and drives it with `redis-benchmark`). KEYS: rules, users, count, pending;
/// ARGV: user, now (epoch ms), request id, partner.
pub fn reserve_script_source() -> &'static str {
    RESERVE
}

pub fn rules_key(id: CampaignId) -> String {
    format!("cpn:{{{id}}}:rules")
}
pub fn users_key(id: CampaignId) -> String {
    format!("cpn:{{{id}}}:users")
}
pub fn count_key(id: CampaignId) -> String {
    format!("cpn:{{{id}}}:count")
}
/// The highest rank handed out, where a place given back (or a heal) lowered the counter below it:
/// a quantity may not go under it.
pub fn top_key(id: CampaignId) -> String {
    format!("cpn:{{{id}}}:top")
}
pub fn pending_key(id: CampaignId) -> String {
    format!("cpn:{{{id}}}:pending")
}
pub fn outcomes_key(id: CampaignId) -> String {
    format!("cpn:{{{id}}}:outcomes")
}

/// How a written outcome is kept in the outcomes hash.
pub fn encode_outcome(outcome: Outcome) -> String {
    match outcome {
        Outcome::Issued { coupon_id } => format!("c{coupon_id}"),
        Outcome::Rejected(reason) => format!("r{}", reason.as_str()),
    }
}

pub fn decode_outcome(raw: &str) -> Option<Outcome> {
    if let Some(id) = raw.strip_prefix('c') {
        return id.parse().ok().map(|coupon_id| Outcome::Issued { coupon_id });
    }
    raw.strip_prefix('r')
        .and_then(RejectionReason::parse)
        .map(Outcome::Rejected)
}

/// Parses a pending record (`rank reservedAtMs user`; the user last, so the format never depends
/// on which characters a user id may hold).
fn decode_pending(request: &str, raw: &str) -> Option<PendingReservation> {
    let mut parts = raw.splitn(3, ' ');
    let rank = parts.next()?.parse().ok()?;
    let ms: i64 = parts.next()?.parse().ok()?;
    let user = UserId::parse(parts.next()?).ok()?;
    Some(PendingReservation {
        request_id: request.parse().ok()?,
        user_id: user,
        rank,
        reserved_at: Utc.timestamp_millis_opt(ms).single()?,
    })
}

/// How to reach Redis, and the deadlines of every call. The issue path makes at most two calls
/// (reserve, then mark sent or release) beside one SQS send (2 s), so with the defaults a request
/// that meets a hung Redis ends within 7 s, under the issue function's `Timeout` of 10 s. The
/// answer deadline is not tighter because a process serving many requests at once (the local
/// runner, a burst in one container) queues commands on one connection, and that wait counts too.
///
/// The URL says whether the connection is encrypted: `redis://` plain, `rediss://` TLS (the
/// server's certificate checked against Mozilla's roots, which ElastiCache's chain to, or against
/// `tls_ca_file`). `cluster` says whether it is one server or a Redis Cluster (ElastiCache cluster
/// mode, ElastiCache Serverless); the URL is then any node, or the configuration endpoint.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// A command's answer (`REDIS_TIMEOUT_MS`, default 2000).
    pub response_timeout: Duration,
    /// Opening a connection (`REDIS_CONNECT_TIMEOUT_MS`, default 500).
    pub connect_timeout: Duration,
    /// A Redis Cluster, reached through the cluster client that follows MOVED and ASK
    /// (`REDIS_CLUSTER`, default false).
    pub cluster: bool,
    /// A PEM file of the CA(s) that a `rediss://` server's certificate must chain to, instead of
    /// the public roots: a private CA, as the local TLS Redis has (`REDIS_TLS_CA_FILE`). Ignored
    /// for a plain `redis://` URL.
    pub tls_ca_file: Option<PathBuf>,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            response_timeout: Duration::from_millis(2000),
            connect_timeout: Duration::from_millis(500),
            cluster: false,
            tls_ca_file: None,
        }
    }
}

impl RedisSettings {
    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        let default = Self::default();
        Ok(Self {
            response_timeout: Duration::from_millis(
                settings.or("REDIS_TIMEOUT_MS", default.response_timeout.as_millis() as u64)?,
            ),
            connect_timeout: Duration::from_millis(
                settings.or("REDIS_CONNECT_TIMEOUT_MS", default.connect_timeout.as_millis() as u64)?,
            ),
            cluster: settings.or("REDIS_CLUSTER", false)?,
            tls_ca_file: settings.optional("REDIS_TLS_CA_FILE").map(PathBuf::from),
        })
    }

    /// The most one call may take: connecting, then answering.
    fn deadline(&self) -> Duration {
        self.response_timeout + self.connect_timeout
    }
}

/// One server (a connection manager that reconnects in the background) or a cluster (a client
/// that routes each command to the node owning its key's slot and follows MOVED/ASK).
#[derive(Clone)]
#[allow(clippy::large_enum_variant, reason = "a few per process, made once")]
enum Client {
    Single(redis::Client),
    Cluster(redis::cluster::ClusterClient),
}

/// The open connection of either kind: every command and script is written once against this.
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

/// redis's rustls client takes the process's default crypto provider, and with both ring (sqlx)
/// and aws-lc-rs (the AWS SDK) linked, rustls cannot pick one by itself: ring, unless another
/// part of the process installed one first. Idempotent; the ledger calls it for `rediss://` URLs,
/// other TLS clients of redis in the process (tests) may too.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn open_client(url: &str, settings: &RedisSettings) -> Result<Client, Unavailable> {
    let info = url.into_connection_info().map_err(unavailable)?;
    let tls = matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. });
    let certificates =
        match (&settings.tls_ca_file, tls) {
            (Some(path), true) => Some(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(std::fs::read(path).map_err(|e| {
                    Unavailable::new("redis", format!("cannot read the CA file {}: {e}", path.display()))
                })?),
            }),
            _ => None,
        };
    if tls {
        install_crypto_provider();
    }
    if settings.cluster {
        let mut builder = redis::cluster::ClusterClientBuilder::new([info])
            .connection_timeout(settings.connect_timeout)
            .response_timeout(settings.response_timeout)
            // A redirection after a failover or a resharding is followed; more is left to the
            // deadline and the caller.
            .retries(2);
        if let Some(certificates) = certificates {
            builder = builder.certs(certificates);
        }
        return Ok(Client::Cluster(builder.build().map_err(unavailable)?));
    }
    Ok(Client::Single(
        match certificates {
            Some(certificates) => redis::Client::build_with_tls(info, certificates),
            None => redis::Client::open(info),
        }
        .map_err(unavailable)?,
    ))
}

/// The ledger, connected on first use: a function starts (and answers 503) while Redis is down,
/// and reconnects by itself when it is back.
#[derive(Clone)]
pub struct RedisIssueLedger {
    client: Client,
    settings: RedisSettings,
    conn: Arc<tokio::sync::OnceCell<Connection>>,
    reserve: Arc<redis::Script>,
    release: Arc<redis::Script>,
    standing: Arc<redis::Script>,
    record_outcomes: Arc<redis::Script>,
    prime: Arc<redis::Script>,
    heal_turn: Arc<redis::Script>,
    amend: Arc<redis::Script>,
    free_turn: Arc<redis::Script>,
}

mod amend;
mod heal;

fn unavailable(e: redis::RedisError) -> Unavailable {
    Unavailable::new("redis", e)
}

impl RedisIssueLedger {
    /// A ledger at `url` (one server) with the default deadlines; fails only on a malformed URL.
    pub fn new(url: &str) -> Result<Self, Unavailable> {
        Self::with_settings(url, RedisSettings::default())
    }

    /// Fails only on a malformed URL or an unreadable CA file; connects on first use.
    pub fn with_settings(url: &str, settings: RedisSettings) -> Result<Self, Unavailable> {
        Ok(Self {
            client: open_client(url, &settings)?,
            settings,
            conn: Arc::default(),
            reserve: Arc::new(redis::Script::new(RESERVE)),
            release: Arc::new(redis::Script::new(RELEASE)),
            standing: Arc::new(redis::Script::new(STANDING)),
            record_outcomes: Arc::new(redis::Script::new(RECORD_OUTCOMES)),
            prime: Arc::new(redis::Script::new(PRIME)),
            heal_turn: Arc::new(redis::Script::new(heal::HEAL_TURN)),
            amend: Arc::new(redis::Script::new(amend::AMEND)),
            free_turn: Arc::new(redis::Script::new(amend::FREE_TURN)),
        })
    }

    /// `REDIS_URL` and the rest of `RedisSettings`.
    pub fn from_settings(settings: &Settings) -> Result<Self, crate::config::StartupError> {
        Ok(Self::with_settings(
            &settings.required("REDIS_URL")?,
            RedisSettings::from_settings(settings)?,
        )?)
    }

    /// A ledger that has answered once (tools and tests that want a clear error at start).
    pub async fn connect(url: &str) -> Result<Self, Unavailable> {
        let ledger = Self::new(url)?;
        ledger.connection().await?;
        Ok(ledger)
    }

    /// Whether this ledger talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.client, Client::Cluster(_))
    }

    /// The shared connection, opened on first use within the call deadline.
    async fn connection(&self) -> Result<Connection, Unavailable> {
        let opening = self.conn.get_or_try_init(|| async {
            match &self.client {
                Client::Single(client) => {
                    let config = redis::aio::ConnectionManagerConfig::new()
                        .set_response_timeout(Some(self.settings.response_timeout))
                        .set_connection_timeout(Some(self.settings.connect_timeout))
                        // Reconnects happen in the background; a caller never waits through a series.
                        .set_number_of_retries(1);
                    ConnectionManager::new_with_config(client.clone(), config)
                        .await
                        .map(Connection::Single)
                }
                // Learns the slot map from the node it was given, then connects to every
                // primary; a node that fails later is reconnected by the client on its own.
                Client::Cluster(client) => client.get_async_connection().await.map(Connection::Cluster),
            }
            .map_err(unavailable)
        });
        let conn = tokio::time::timeout(self.settings.deadline(), opening)
            .await
            .map_err(|_| Unavailable::new("redis", "no connection within the deadline"))??;
        Ok(conn.clone())
    }

    /// Runs one call under the deadline: a hung server or a connection stuck half-open ends here.
    async fn timed<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, redis::RedisError>>,
    ) -> Result<T, Unavailable> {
        match tokio::time::timeout(self.settings.deadline(), call).await {
            Ok(result) => result.map_err(unavailable),
            Err(_) => Err(Unavailable::new(
                "redis",
                format!("no answer within {:?}", self.settings.deadline()),
            )),
        }
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, Unavailable> {
        let mut conn = self.connection().await?;
        self.timed(cmd.query_async(&mut conn)).await
    }

    async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, Unavailable> {
        let mut conn = self.connection().await?;
        self.timed(invocation.invoke_async(&mut conn)).await
    }

    /// Sets the campaign's users hash and counter from what MySQL recorded (after Redis lost
    /// them): the holders of `coupons` (with their written outcome), plus the users of places still
    /// pending, which keep their request. Only correct while no reservation is in flight, i.e. with
    /// the issue queue and its DLQ drained. Returns the reserved count it set.
    pub async fn restore(&self, rules: &IssueRules, coupons: &[Holder]) -> Result<u64, Unavailable> {
        let id = rules.campaign_id;
        let pending = self.pending(id, usize::MAX).await?;
        // The counter first: without it every request is unprimed until the rules are back,
        // last, so no place is handed out from a half-rebuilt state.
        self.query::<()>(
            redis::cmd("DEL")
                .arg(count_key(id))
                .arg(users_key(id))
                .arg(outcomes_key(id)),
        )
        .await?;
        for chunk in coupons.chunks(1000) {
            let mut hold = redis::cmd("HSET");
            hold.arg(users_key(id));
            let mut marks = Vec::with_capacity(chunk.len());
            for holder in chunk {
                hold.arg(&holder.user_id).arg(holder.place.encode());
                marks.push((
                    holder.user_id.clone(),
                    encode_outcome(Outcome::Issued {
                        coupon_id: holder.coupon_id,
                    }),
                ));
            }
            self.query::<()>(&hold).await?;
            self.mark_encoded(id, &marks).await?;
        }
        for place in &pending {
            self.query::<()>(
                redis::cmd("HSET")
                    .arg(users_key(id))
                    .arg(place.user_id.as_str())
                    .arg(Place::of(place.request_id, place.rank).encode()),
            )
            .await?;
        }
        let held = self.settle_count(rules).await?;
        // Ranks survive the loss in MySQL and in the pending places: a quantity may not go under
        // the highest of them, though fewer places may be held now.
        let top = coupons
            .iter()
            .filter_map(|h| h.place.rank)
            .chain(pending.iter().map(|p| p.rank))
            .max()
            .unwrap_or(0);
        self.raise_top(rules, top.into()).await?;
        self.prime(rules).await?;
        Ok(held)
    }

    /// Sets the counter to the number of holders (and gives both the campaign's expiry).
    pub async fn settle_count(&self, rules: &IssueRules) -> Result<u64, Unavailable> {
        let id = rules.campaign_id;
        let before: Option<u64> = self.query(redis::cmd("GET").arg(count_key(id))).await?;
        self.raise_top(rules, before.unwrap_or(0)).await?;
        let holders: u64 = self.query(redis::cmd("HLEN").arg(users_key(id))).await?;
        let expires = rules.state_expires_at(Utc::now()).timestamp_millis();
        self.query::<()>(
            redis::cmd("SET")
                .arg(count_key(id))
                .arg(holders)
                .arg("PXAT")
                .arg(expires),
        )
        .await?;
        self.query::<()>(redis::cmd("PEXPIREAT").arg(users_key(id)).arg(expires))
            .await?;
        Ok(holders)
    }

    /// Keeps `rank` as the highest rank handed out if it is higher than the one kept.
    async fn raise_top(&self, rules: &IssueRules, rank: u64) -> Result<(), Unavailable> {
        let id = rules.campaign_id;
        let top: Option<u64> = self.query(redis::cmd("GET").arg(top_key(id))).await?;
        if rank > top.unwrap_or(0) {
            let expires = rules.state_expires_at(Utc::now()).timestamp_millis();
            self.query::<()>(redis::cmd("SET").arg(top_key(id)).arg(rank).arg("PXAT").arg(expires))
                .await?;
        }
        Ok(())
    }

    /// Gives `users` a place (in no request's name), as MySQL says they hold a coupon.
    pub async fn hold(&self, id: CampaignId, users: &[String]) -> Result<(), Unavailable> {
        for chunk in users.chunks(1000) {
            let mut hold = redis::cmd("HSET");
            hold.arg(users_key(id));
            for user in chunk {
                hold.arg(user).arg(Place::default().encode());
            }
            self.query::<()>(&hold).await?;
        }
        Ok(())
    }

    /// Every holder of the campaign: user → the place as stored (`Place::decode` reads it).
    pub async fn holders(&self, id: CampaignId) -> Result<HashMap<String, String>, Unavailable> {
        self.scan_hash(&users_key(id)).await
    }

    /// Every written outcome Redis knows for the campaign.
    pub async fn outcomes(&self, id: CampaignId) -> Result<HashMap<String, Outcome>, Unavailable> {
        Ok(self
            .scan_hash(&outcomes_key(id))
            .await?
            .into_iter()
            .filter_map(|(user, raw)| decode_outcome(&raw).map(|o| (user, o)))
            .collect())
    }

    /// A whole hash, read in pages so a campaign of millions never blocks Redis in one command.
    async fn scan_hash(&self, key: &str) -> Result<HashMap<String, String>, Unavailable> {
        let mut all = HashMap::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, page): (u64, Vec<(String, String)>) = self
                .query(redis::cmd("HSCAN").arg(key).arg(cursor).arg("COUNT").arg(1000))
                .await?;
            all.extend(page);
            if next == 0 {
                return Ok(all);
            }
            cursor = next;
        }
    }

    async fn mark_encoded(&self, id: CampaignId, marks: &[(String, String)]) -> Result<(), Unavailable> {
        for chunk in marks.chunks(1000) {
            let mut invocation = self.record_outcomes.prepare_invoke();
            invocation.key(outcomes_key(id)).key(rules_key(id));
            for (user, mark) in chunk {
                invocation.arg(user).arg(mark);
            }
            self.invoke::<u64>(&invocation).await?;
        }
        Ok(())
    }
}

/// The issue script's "not open" answer: `{-3, startsAt}` (epoch ms).
fn not_open_until(answer: &[redis::Value]) -> Result<IssueDecision, Unavailable> {
    let opens_at = match answer {
        [redis::Value::Int(-3), redis::Value::Int(starts)] => Utc.timestamp_millis_opt(*starts).single(),
        _ => None,
    };
    opens_at
        .map(|opens_at| IssueDecision::NotOpen { opens_at })
        .ok_or_else(|| Unavailable::new("redis", format!("issue script answered {answer:?}")))
}

fn rules_from(id: CampaignId, fields: &HashMap<String, String>) -> Option<IssueRules> {
    let millis =
        |name: &str| -> Option<DateTime<Utc>> { Utc.timestamp_millis_opt(fields.get(name)?.parse().ok()?).single() };
    Some(IssueRules {
        campaign_id: id,
        partner_id: fields.get("partner")?.clone(),
        total_quantity: fields.get("quantity")?.parse().ok()?,
        issue_starts_at: millis("startsAt")?,
        issue_ends_at: millis("endsAt")?,
        coupon_expires_at: millis("couponExpiresAt")?,
        // Rules primed before campaigns had kinds were all on sale.
        kind: fields
            .get("kind")
            .map_or(Some(CampaignKind::Sale), |k| CampaignKind::parse(k))?,
        // Rules primed before campaigns could be paused were not.
        paused: fields.get("paused").is_some_and(|p| p == "1"),
    })
}

#[async_trait]
impl IssueLedger for RedisIssueLedger {
    async fn prime(&self, rules: &IssueRules) -> Result<(), Unavailable> {
        let id = rules.campaign_id;
        let expires = rules.state_expires_at(Utc::now()).timestamp_millis();
        // Listed before its rules make it reservable: `cpn:live` lives in another slot (another
        // node of a cluster), so the two cannot be one atomic step, and this order means a crash
        // between them leaves at worst a listed campaign without places, never places that
        // recovery would not walk.
        self.query::<()>(redis::cmd("ZADD").arg(LIVE_CAMPAIGNS_KEY).arg(expires).arg(id))
            .await?;
        let mut invocation = self.prime.prepare_invoke();
        invocation
            .key(rules_key(id))
            .key(count_key(id))
            .arg(expires)
            .arg("quantity")
            .arg(rules.total_quantity)
            .arg("startsAt")
            .arg(rules.issue_starts_at.timestamp_millis())
            .arg("endsAt")
            .arg(rules.issue_ends_at.timestamp_millis())
            .arg("partner")
            .arg(&rules.partner_id)
            .arg("couponExpiresAt")
            .arg(rules.coupon_expires_at.timestamp_millis())
            .arg("expiresAt")
            .arg(expires)
            .arg("kind")
            .arg(rules.kind.as_str())
            .arg("paused")
            .arg(u8::from(rules.paused));
        self.invoke::<()>(&invocation).await
    }

    async fn rules(&self, id: CampaignId) -> Result<Option<IssueRules>, Unavailable> {
        let fields: HashMap<String, String> = self.query(redis::cmd("HGETALL").arg(rules_key(id))).await?;
        Ok(rules_from(id, &fields))
    }

    async fn reserve(
        &self,
        id: CampaignId,
        partner: &str,
        user: &UserId,
        request: Uuid,
        now: DateTime<Utc>,
    ) -> Result<IssueDecision, Unavailable> {
        let mut invocation = self.reserve.prepare_invoke();
        invocation
            .key(rules_key(id))
            .key(users_key(id))
            .key(count_key(id))
            .key(pending_key(id))
            .arg(user.as_str())
            .arg(now.timestamp_millis())
            .arg(request.to_string())
            .arg(partner);
        let answer: redis::Value = self.invoke(&invocation).await?;
        let answer = match answer {
            redis::Value::Int(n) => n,
            redis::Value::Array(not_open) => return not_open_until(&not_open),
            held => {
                let held: String = redis::FromRedisValue::from_redis_value(held)
                    .map_err(|e| Unavailable::new("redis", format!("issue script answered {e}")))?;
                return Ok(IssueDecision::AlreadyIssued(Place::decode(&held)));
            }
        };
        Ok(match answer {
            -7 => IssueDecision::Paused,
            -6 => IssueDecision::NotOnSale,
            -5 => IssueDecision::NotOwner,
            -4 => IssueDecision::Unprimed,
            -2 => IssueDecision::Ended,
            0 => IssueDecision::SoldOut,
            rank => IssueDecision::Reserved {
                rank: u32::try_from(rank).map_err(|_| Unavailable::new("redis", format!("rank {rank}")))?,
            },
        })
    }

    async fn mark_sent(&self, id: CampaignId, request: Uuid) -> Result<(), Unavailable> {
        self.query::<()>(redis::cmd("HDEL").arg(pending_key(id)).arg(request.to_string()))
            .await
    }

    async fn release(&self, id: CampaignId, user: &UserId, request: Uuid) -> Result<bool, Unavailable> {
        let mut invocation = self.release.prepare_invoke();
        invocation
            .key(users_key(id))
            .key(count_key(id))
            .key(pending_key(id))
            .key(top_key(id))
            .arg(user.as_str())
            .arg(request.to_string());
        let undone: i64 = self.invoke(&invocation).await?;
        Ok(undone == 1)
    }

    async fn reserved_count(&self, id: CampaignId) -> Result<u64, Unavailable> {
        let count: Option<u64> = self.query(redis::cmd("GET").arg(count_key(id))).await?;
        Ok(count.unwrap_or(0))
    }

    async fn standing(&self, id: CampaignId, user: &UserId) -> Result<Standing, Unavailable> {
        let mut invocation = self.standing.prepare_invoke();
        invocation
            .key(rules_key(id))
            .key(users_key(id))
            .key(outcomes_key(id))
            .arg(user.as_str());
        let (owner, held, outcome): (String, i64, String) = self.invoke(&invocation).await?;
        Ok(Standing {
            owner: (!owner.is_empty()).then_some(owner),
            held: held == 1,
            outcome: decode_outcome(&outcome),
        })
    }

    async fn record_outcomes(&self, id: CampaignId, outcomes: &[(UserId, Outcome)]) -> Result<(), Unavailable> {
        let marks: Vec<(String, String)> = outcomes
            .iter()
            .map(|(user, outcome)| (user.as_str().to_owned(), encode_outcome(*outcome)))
            .collect();
        self.mark_encoded(id, &marks).await
    }

    async fn live_campaigns(&self) -> Result<Vec<CampaignId>, Unavailable> {
        let now = Utc::now().timestamp_millis();
        self.query::<()>(
            redis::cmd("ZREMRANGEBYSCORE")
                .arg(LIVE_CAMPAIGNS_KEY)
                .arg("-inf")
                .arg(now),
        )
        .await?;
        self.query(redis::cmd("ZRANGE").arg(LIVE_CAMPAIGNS_KEY).arg(0).arg(-1))
            .await
    }

    /// The rules go first: once they are gone the campaign is `Unprimed` to every request, whatever
    /// of the rest a failure leaves (one slot, so one `DEL` for all of them on a cluster too).
    async fn discard(&self, id: CampaignId) -> Result<(), Unavailable> {
        self.query::<()>(
            redis::cmd("DEL")
                .arg(rules_key(id))
                .arg(users_key(id))
                .arg(count_key(id))
                .arg(pending_key(id))
                .arg(outcomes_key(id))
                .arg(heal::lost_key(id))
                .arg(heal::healing_key(id))
                .arg(amend::changing_key(id))
                .arg(top_key(id)),
        )
        .await?;
        self.query::<()>(redis::cmd("ZREM").arg(LIVE_CAMPAIGNS_KEY).arg(id))
            .await
    }

    async fn amend(&self, rules: &IssueRules, turn: &str) -> Result<Amendment, Unavailable> {
        self.amend_rules(rules, turn).await
    }

    async fn change_turn(&self, id: CampaignId) -> Result<Option<String>, Unavailable> {
        self.take_change_turn(id).await
    }

    async fn end_change_turn(&self, id: CampaignId, token: &str) -> Result<(), Unavailable> {
        self.free_change_turn(id, token).await
    }

    async fn heal_turn(&self, id: CampaignId, now: DateTime<Utc>, grace: Duration) -> Result<HealTurn, Unavailable> {
        self.take_heal_turn(id, now, grace).await
    }

    async fn rebuild(&self, rules: &IssueRules, holders: &[Holder]) -> Result<u64, Unavailable> {
        self.restore(rules, holders).await
    }

    async fn end_heal(&self, id: CampaignId, rebuilt: bool) -> Result<(), Unavailable> {
        self.finish_heal(id, rebuilt).await
    }

    async fn pending(&self, id: CampaignId, limit: usize) -> Result<Vec<PendingReservation>, Unavailable> {
        let raw = self.scan_hash(&pending_key(id)).await?;
        let mut places: Vec<PendingReservation> = Vec::with_capacity(raw.len());
        for (request, value) in raw {
            match decode_pending(&request, &value) {
                Some(place) => places.push(place),
                None => tracing::error!(
                    campaign_id = id,
                    request,
                    value,
                    "unreadable pending record left in place"
                ),
            }
        }
        places.sort_by_key(|p| (p.reserved_at, p.rank));
        places.truncate(limit);
        Ok(places)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_and_pending_records_round_trip() {
        for outcome in [
            Outcome::Issued { coupon_id: 42 },
            Outcome::Rejected(RejectionReason::OverQuantity),
            Outcome::Rejected(RejectionReason::PartnerMismatch),
        ] {
            assert_eq!(decode_outcome(&encode_outcome(outcome)), Some(outcome));
        }
        assert_eq!(decode_outcome(""), None);
        let request = Uuid::now_v7();
        let place = decode_pending(&request.to_string(), "7 1700000000123 user:with.colons").unwrap();
        assert_eq!(
            (place.rank, place.user_id.as_str(), place.reserved_at.timestamp_millis()),
            (7, "user:with.colons", 1_700_000_000_123)
        );
        assert!(decode_pending("not-a-uuid", "7 1 u").is_none());
    }

    fn settings(vars: &[(&str, &str)]) -> Settings {
        Settings::new(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn cluster_and_tls_settings_come_from_the_environment() {
        let plain = RedisSettings::from_settings(&settings(&[])).unwrap();
        assert!(!plain.cluster && plain.tls_ca_file.is_none());
        let set = RedisSettings::from_settings(&settings(&[
            ("REDIS_CLUSTER", "true"),
            ("REDIS_TLS_CA_FILE", "/etc/ca.pem"),
        ]))
        .unwrap();
        assert!(set.cluster);
        assert_eq!(set.tls_ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert!(RedisSettings::from_settings(&settings(&[("REDIS_CLUSTER", "yes")])).is_err());

        // The CA file matters only for rediss://, where a missing one is an error at start.
        let missing = RedisSettings {
            cluster: true,
            tls_ca_file: Some(PathBuf::from("/nonexistent/ca.pem")),
            ..RedisSettings::default()
        };
        assert!(RedisIssueLedger::with_settings("redis://127.0.0.1:1", missing.clone()).is_ok());
        let error = RedisIssueLedger::with_settings("rediss://127.0.0.1:1", missing)
            .err()
            .expect("an unreadable CA file is refused");
        assert!(error.to_string().contains("/nonexistent/ca.pem"), "{error}");
    }
}
