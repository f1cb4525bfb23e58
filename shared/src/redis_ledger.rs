//! The issue ledger on Redis (ElastiCache): one Lua script decides each request atomically.
//!
//! Keys of one campaign share the hash tag `{id}` so the script touches one cluster slot:
//! `cpn:{42}:rules` (quantity and window), `cpn:{42}:users` (who holds one), `cpn:{42}:count`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;

use crate::domain::{CampaignId, IssueDecision, IssueRules, UserId};
use crate::ports::{IssueLedger, Unavailable};

/// Window first, then duplicate, then stock; the counter is checked before it is raised, so it
/// never exceeds the quantity, not even for an instant. Mirrors `domain::decide`.
const RESERVE: &str = r"
local rules = redis.call('HMGET', KEYS[1], 'quantity', 'startsAt', 'endsAt')
if not rules[1] then return -4 end
local now = tonumber(ARGV[2])
if now < tonumber(rules[2]) then return -3 end
if now >= tonumber(rules[3]) then return -2 end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return -1 end
local count = tonumber(redis.call('GET', KEYS[3]) or '0')
if count >= tonumber(rules[1]) then return 0 end
redis.call('SADD', KEYS[2], ARGV[1])
return redis.call('INCR', KEYS[3])
";

/// Only a user who holds a reservation gives it back, so a repeated release cannot lower the count.
const RELEASE: &str = r"
if redis.call('SREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('DECR', KEYS[2])
  return 1
end
return 0
";

/// Rebuilds a campaign's state from what MySQL recorded (after Redis lost it).
const RESTORE: &str = r"
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('HSET', KEYS[1], 'quantity', ARGV[1], 'startsAt', ARGV[2], 'endsAt', ARGV[3])
for i = 4, #ARGV do redis.call('SADD', KEYS[2], ARGV[i]) end
redis.call('SET', KEYS[3], #ARGV - 3)
return #ARGV - 3
";

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
        let conn = ConnectionManager::new(client).await.map_err(unavailable)?;
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
        invocation.invoke_async(&mut self.conn.clone()).await.map_err(unavailable)
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

    async fn reserve(&self, id: CampaignId, user: &UserId, now: DateTime<Utc>) -> Result<IssueDecision, Unavailable> {
        let answer: i64 = self
            .reserve
            .key(rules_key(id))
            .key(users_key(id))
            .key(count_key(id))
            .arg(user.as_str())
            .arg(now.timestamp_millis())
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

    async fn release(&self, id: CampaignId, user: &UserId) -> Result<bool, Unavailable> {
        let undone: i64 = self
            .release
            .key(users_key(id))
            .key(count_key(id))
            .arg(user.as_str())
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
        redis::cmd("SISMEMBER")
            .arg(users_key(id))
            .arg(user.as_str())
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }
}
