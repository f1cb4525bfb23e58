//! A campaign's rules changed while it sells (`PATCH /v1/campaigns/{id}`): one atomic step that
//! refuses a quantity below the places taken, and a turn so changes of one campaign go one at a
//! time.

use super::{RedisIssueLedger, count_key, rules_key, top_key, users_key};
use crate::issuance::domain::{CampaignId, IssueRules};
use crate::issuance::ports::Amendment;
use crate::kernel::Unavailable;

/// How long one change may hold its turn; a caller that died with it frees it then.
const TURN_MS: u64 = 10_000;

/// Sets the rules' changeable fields when `change::amendment` allows, which this mirrors: in the
/// caller's turn only (a change whose turn lapsed must not overwrite the next one's), never on
/// lost or partly lost state (the issue script's own test: no rules, no counter, or places
/// counted without their holders; creating rules would make a lost campaign look fresh), never
/// below max(counter, highest rank kept).
/// KEYS: rules, count, users, top, turn. ARGV: quantity, endsAt (ms), paused, turn token.
/// Answers {0} applied, {1} absent, {2, taken} below, {3} the turn is not the caller's.
pub(super) const AMEND: &str = r"
if redis.call('GET', KEYS[5]) ~= ARGV[4] then return {3} end
local count = redis.call('GET', KEYS[2])
if redis.call('EXISTS', KEYS[1]) == 0 or not count then return {1} end
count = tonumber(count)
if count > 0 and redis.call('EXISTS', KEYS[3]) == 0 then return {1} end
local taken = math.max(count, tonumber(redis.call('GET', KEYS[4]) or '0'))
if taken > tonumber(ARGV[1]) then return {2, taken} end
redis.call('HSET', KEYS[1], 'quantity', ARGV[1], 'endsAt', ARGV[2], 'paused', ARGV[3])
return {0}
";

pub(super) fn changing_key(id: CampaignId) -> String {
    format!("cpn:{{{id}}}:changing")
}

impl RedisIssueLedger {
    pub(super) async fn amend_rules(&self, rules: &IssueRules, turn: &str) -> Result<Amendment, Unavailable> {
        let id = rules.campaign_id;
        let mut invocation = self.amend.prepare_invoke();
        invocation
            .key(rules_key(id))
            .key(count_key(id))
            .key(users_key(id))
            .key(top_key(id))
            .key(changing_key(id))
            .arg(rules.total_quantity)
            .arg(rules.issue_ends_at.timestamp_millis())
            .arg(u8::from(rules.paused))
            .arg(turn);
        let answer: Vec<u64> = self.invoke(&invocation).await?;
        Ok(match answer.as_slice() {
            [0] => Amendment::Applied,
            [1] => Amendment::Absent,
            [2, reserved] => Amendment::BelowReserved { reserved: *reserved },
            [3] => Amendment::TurnLost,
            other => return Err(Unavailable::new("redis", format!("amend answered {other:?}"))),
        })
    }

    pub(super) async fn take_change_turn(&self, id: CampaignId) -> Result<Option<String>, Unavailable> {
        let token = uuid::Uuid::new_v4().to_string();
        let taken: Option<String> = self
            .query(
                redis::cmd("SET")
                    .arg(changing_key(id))
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(TURN_MS),
            )
            .await?;
        Ok(taken.map(|_| token))
    }

    /// Frees the turn only if it is still this caller's (one that outlived its deadline must not
    /// free the next caller's).
    pub(super) async fn free_change_turn(&self, id: CampaignId, token: &str) -> Result<(), Unavailable> {
        let mut invocation = self.free_turn.prepare_invoke();
        invocation.key(changing_key(id)).arg(token);
        self.invoke::<i64>(&invocation).await.map(|_| ())
    }
}

/// KEYS: the turn. ARGV: its token.
pub(super) const FREE_TURN: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";
