//! Turns at rebuilding a campaign whose state Redis lost (flushed, evicted, a new cache): the
//! first request to find it unprimed marks when the loss was seen, and once `grace` has passed
//! since then, one caller at a time (a lock with a deadline) may rebuild it from MySQL.

use chrono::{DateTime, Utc};

use super::{RedisIssueLedger, count_key, rules_key, users_key};
use crate::issuance::domain::CampaignId;
use crate::issuance::ports::HealTurn;
use crate::kernel::Unavailable;

/// How long one rebuild may hold its turn; a caller that died with it frees it then.
const TURN_MS: u64 = 30_000;
/// How long the first sighting of a loss is kept (a heal ends it sooner).
const SIGHTING_MS: u64 = 3_600_000;

/// KEYS: rules, users, count, lost, healing. ARGV: now (ms), grace (ms), token, turn (ms),
/// sighting (ms). `intact` also clears a stale sighting.
pub(super) const HEAL_TURN: &str = r"
local count = redis.call('GET', KEYS[3])
if redis.call('EXISTS', KEYS[1]) == 1 and count and (tonumber(count) == 0 or redis.call('EXISTS', KEYS[2]) == 1) then
  redis.call('DEL', KEYS[4])
  return 'intact'
end
redis.call('SET', KEYS[4], ARGV[1], 'NX', 'PX', ARGV[5])
local seen = tonumber(redis.call('GET', KEYS[4]))
if tonumber(ARGV[1]) - seen < tonumber(ARGV[2]) then return 'wait' end
if not redis.call('SET', KEYS[5], ARGV[3], 'NX', 'PX', ARGV[4]) then return 'busy' end
return 'go'
";

pub(super) fn lost_key(id: CampaignId) -> String {
    format!("cpn:{{{id}}}:lost")
}

pub(super) fn healing_key(id: CampaignId) -> String {
    format!("cpn:{{{id}}}:healing")
}

impl RedisIssueLedger {
    pub(super) async fn take_heal_turn(
        &self,
        id: CampaignId,
        now: DateTime<Utc>,
        grace: std::time::Duration,
    ) -> Result<HealTurn, Unavailable> {
        let mut invocation = self.heal_turn.prepare_invoke();
        invocation
            .key(rules_key(id))
            .key(users_key(id))
            .key(count_key(id))
            .key(lost_key(id))
            .key(healing_key(id))
            .arg(now.timestamp_millis())
            .arg(grace.as_millis() as u64)
            .arg(uuid::Uuid::new_v4().to_string())
            .arg(TURN_MS)
            .arg(SIGHTING_MS);
        let answer: String = self.invoke(&invocation).await?;
        Ok(match answer.as_str() {
            "intact" => HealTurn::Intact,
            "wait" => HealTurn::Wait,
            "busy" => HealTurn::Busy,
            _ => HealTurn::Go,
        })
    }

    pub(super) async fn finish_heal(&self, id: CampaignId, rebuilt: bool) -> Result<(), Unavailable> {
        let mut del = redis::cmd("DEL");
        del.arg(healing_key(id));
        if rebuilt {
            del.arg(lost_key(id));
        }
        self.query::<()>(&del).await
    }
}
