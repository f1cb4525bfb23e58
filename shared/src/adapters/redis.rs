//! The issue ledger on Redis (ElastiCache): one Lua script decides each request atomically.
//!
//! Keys of one campaign share the hash tag `{id}` so the script touches one cluster slot:
//! `cpn:{42}:rules` (quantity and window), `cpn:{42}:users` (hash: user → request id holding the
//! place), `cpn:{42}:count`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use uuid::Uuid;

use crate::issuance::domain::{CampaignId, IssueDecision, IssueRules};
use crate::issuance::ports::IssueLedger;
use crate::kernel::{Unavailable, UserId};

/// Window first, then duplicate, then stock; the counter is checked before it is raised, so it
/// never exceeds the quantity, not even for an instant. Mirrors `domain::decide`.
const RESERVE: &str = r"
local rules = redis.call('HMGET', KEYS[1], 'quantity', 'startsAt', 'endsAt')
if not rules[1] then return -4 end
local now = tonumber(ARGV[2])
if now < tonumber(rules[2]) then return -3 end
if now >= tonumber(rules[3]) then return -2 end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return -1 end
local count = tonumber(redis.call('GET', KEYS[3]) or '0')
if count >= tonumber(rules[1]) then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return redis.call('INCR', KEYS[3])
";

/// Only the request that made a reservation can give it back: a repeated release, or the release
/// of a request whose outcome is unknown, never takes away another request's place.
const RELEASE: &str = r"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('DECR', KEYS[2])
  return 1
end
return 0
";

/// Rebuilds a campaign's state from what MySQL recorded (after Redis lost it).
const RESTORE: &str = r"
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('HSET', KEYS[1], 'quantity', ARGV[1], 'startsAt', ARGV[2], 'endsAt', ARGV[3])
for i = 4, #ARGV do redis.call('HSET', KEYS[2], ARGV[i], 'restored') end
redis.call('SET', KEYS[3], #ARGV - 3)
return #ARGV - 3
";

/// The issue script's source, for yardsticks that run it without the service around it (the bench
/// loads it into Redis and drives it with `redis-benchmark`). KEYS: rules, users, count; ARGV: user,
/// now (epoch ms), request id.
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

#[derive(Clone)]
pub struct RedisIssueLedger {
    conn: ConnectionManager,
    reserve: redis::Script,
    release: redis::Script,
    restore: redis::Script,
}

fn unavailable(e: redis::RedisError) -> Unavailable {
    Unavailable::new("redis", e)
}

impl RedisIssueLedger {
    pub async fn connect(url: &str) -> Result<Self, Unavailable> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        // Generous: a timed-out script may still have run, and then the caller must compensate.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(std::time::Duration::from_secs(5)))
            .set_connection_timeout(Some(std::time::Duration::from_secs(2)));
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(unavailable)?;
        Ok(Self {
            conn,
            reserve: redis::Script::new(RESERVE),
            release: redis::Script::new(RELEASE),
            restore: redis::Script::new(RESTORE),
        })
    }

    /// Replaces the campaign's state with the given holders (the users MySQL has coupons for).
    /// Only correct when no reservation is in flight, i.e. the issue queue is drained.
    pub async fn restore(&self, rules: &IssueRules, holders: &[String]) -> Result<u64, Unavailable> {
        let id = rules.campaign_id;
        let mut invocation = self.restore.prepare_invoke();
        invocation
            .key(rules_key(id))
            .key(users_key(id))
            .key(count_key(id))
            .arg(rules.total_quantity)
            .arg(rules.issue_starts_at.timestamp_millis())
            .arg(rules.issue_ends_at.timestamp_millis());
        for holder in holders {
            invocation.arg(holder);
        }
        invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }
}

#[async_trait]
impl IssueLedger for RedisIssueLedger {
    async fn prime(&self, rules: &IssueRules) -> Result<(), Unavailable> {
        let id = rules.campaign_id;
        redis::cmd("HSET")
            .arg(rules_key(id))
            .arg("quantity")
            .arg(rules.total_quantity)
            .arg("startsAt")
            .arg(rules.issue_starts_at.timestamp_millis())
            .arg("endsAt")
            .arg(rules.issue_ends_at.timestamp_millis())
            .exec_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    async fn reserve(
        &self,
        id: CampaignId,
        user: &UserId,
        request: Uuid,
        now: DateTime<Utc>,
    ) -> Result<IssueDecision, Unavailable> {
        let answer: i64 = self
            .reserve
            .key(rules_key(id))
            .key(users_key(id))
            .key(count_key(id))
            .arg(user.as_str())
            .arg(now.timestamp_millis())
            .arg(request.to_string())
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(match answer {
            -4 => IssueDecision::Unprimed,
            -3 => IssueDecision::NotOpen,
            -2 => IssueDecision::Ended,
            -1 => IssueDecision::AlreadyIssued,
            0 => IssueDecision::SoldOut,
            rank => IssueDecision::Reserved {
                rank: u32::try_from(rank).map_err(|_| Unavailable::new("redis", format!("rank {rank}")))?,
            },
        })
    }

    async fn release(&self, id: CampaignId, user: &UserId, request: Uuid) -> Result<bool, Unavailable> {
        let undone: i64 = self
            .release
            .key(users_key(id))
            .key(count_key(id))
            .arg(user.as_str())
            .arg(request.to_string())
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(undone == 1)
    }

    async fn reserved_count(&self, id: CampaignId) -> Result<u64, Unavailable> {
        let count: Option<u64> = redis::cmd("GET")
            .arg(count_key(id))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(count.unwrap_or(0))
    }

    async fn holds(&self, id: CampaignId, user: &UserId) -> Result<bool, Unavailable> {
        redis::cmd("HEXISTS")
            .arg(users_key(id))
            .arg(user.as_str())
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }
}
