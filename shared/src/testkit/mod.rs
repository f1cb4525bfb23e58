//! In-memory implementations of the ports and a hand-moved clock, for unit tests only (integration
//! tests use the real services). Compiled only with the `testkit` feature, which only tests, the
//! runner's tests and the bench enable, so no Lambda binary carries it. The ledger runs
//! `issuance::domain::decide`, the same rule the Redis script implements.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::issuance::domain::{Campaign, CampaignId, IssueDecision, IssueRules, NewCampaign, Reservation, decide};
use crate::issuance::ports::{CampaignCatalog, ChunkRecord, CouponBook, IssueLedger, ReservationQueue};
use crate::kernel::{Clock, Unavailable, UserId};
use crate::keys::domain::{ApiKeyRecord, KeyStatus};
use crate::keys::ports::ApiKeyStore;

mod gateway;
pub use gateway::gateway_request;

/// A valid campaign of `quantity` AMOUNT-5 coupons, open from `opens_at` for an hour, its coupons
/// valid for a day after: the fixture the use-case and handler tests share.
pub fn new_campaign(quantity: u32, opens_at: DateTime<Utc>) -> NewCampaign {
    NewCampaign {
        name: "test campaign".into(),
        total_quantity: quantity,
        issue_starts_at: opens_at,
        issue_ends_at: opens_at + chrono::Duration::hours(1),
        coupon_expires_at: opens_at + chrono::Duration::days(1),
        discount: crate::issuance::domain::Discount {
            kind: crate::issuance::domain::DiscountType::Amount,
            value: 5,
        },
    }
}

/// A clock that moves only when told to: TTLs and time windows are tested without sleeping.
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl Default for ManualClock {
    fn default() -> Self {
        Self(Mutex::new(Utc::now()))
    }
}

impl ManualClock {
    pub fn advance(&self, by: chrono::Duration) {
        *self.0.lock().unwrap() += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

/// Per campaign: its rules, who holds a place (and for which request), how many are reserved.
type CampaignState = (IssueRules, HashMap<UserId, Uuid>, u32);

#[derive(Default)]
pub struct MemoryLedger {
    state: Mutex<HashMap<CampaignId, CampaignState>>,
}

#[async_trait]
impl IssueLedger for MemoryLedger {
    async fn prime(&self, rules: &IssueRules) -> Result<(), Unavailable> {
        let mut state = self.state.lock().unwrap();
        state
            .entry(rules.campaign_id)
            .or_insert_with(|| (*rules, HashMap::new(), 0))
            .0 = *rules;
        Ok(())
    }

    async fn reserve(
        &self,
        id: CampaignId,
        user: &UserId,
        request: Uuid,
        now: DateTime<Utc>,
    ) -> Result<IssueDecision, Unavailable> {
        let mut state = self.state.lock().unwrap();
        let Some((rules, users, count)) = state.get_mut(&id) else {
            return Ok(IssueDecision::Unprimed);
        };
        let decision = decide(rules, now, users.contains_key(user), *count);
        if let IssueDecision::Reserved { rank } = decision {
            users.insert(user.clone(), request);
            *count = rank;
        }
        Ok(decision)
    }

    async fn release(&self, id: CampaignId, user: &UserId, request: Uuid) -> Result<bool, Unavailable> {
        let mut state = self.state.lock().unwrap();
        let Some((_, users, count)) = state.get_mut(&id) else {
            return Ok(false);
        };
        let held = users.get(user) == Some(&request);
        if held {
            users.remove(user);
        }
        if held {
            *count -= 1;
        }
        Ok(held)
    }

    async fn reserved_count(&self, id: CampaignId) -> Result<u64, Unavailable> {
        Ok(self.state.lock().unwrap().get(&id).map_or(0, |s| s.2.into()))
    }

    async fn holds(&self, id: CampaignId, user: &UserId) -> Result<bool, Unavailable> {
        Ok(self
            .state
            .lock()
            .unwrap()
            .get(&id)
            .is_some_and(|s| s.1.contains_key(user)))
    }
}

#[derive(Default)]
pub struct MemoryCatalog {
    campaigns: Mutex<BTreeMap<CampaignId, Campaign>>,
    /// Coupons written: (campaign, user) → coupon id.
    pub coupons: Mutex<HashMap<(CampaignId, UserId), u64>>,
    /// Counts `get` calls, so tests can see what a cache saved.
    pub reads: std::sync::atomic::AtomicU64,
}

#[async_trait]
impl CampaignCatalog for MemoryCatalog {
    async fn create(&self, partner_id: &str, c: &NewCampaign) -> Result<Campaign, Unavailable> {
        let mut campaigns = self.campaigns.lock().unwrap();
        let id = campaigns.keys().next_back().copied().unwrap_or(0) + 1;
        let campaign = Campaign {
            id,
            partner_id: partner_id.to_owned(),
            name: c.name.clone(),
            total_quantity: c.total_quantity,
            issue_starts_at: c.issue_starts_at,
            issue_ends_at: c.issue_ends_at,
            coupon_expires_at: c.coupon_expires_at,
            discount: c.discount,
            created_at: Utc::now(),
        };
        campaigns.insert(id, campaign.clone());
        Ok(campaign)
    }

    async fn discard(&self, id: CampaignId) -> Result<(), Unavailable> {
        self.campaigns.lock().unwrap().remove(&id);
        Ok(())
    }

    async fn get(&self, id: CampaignId) -> Result<Option<Campaign>, Unavailable> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        Ok(self.campaigns.lock().unwrap().get(&id).cloned())
    }

    async fn issued_count(&self, id: CampaignId) -> Result<u64, Unavailable> {
        Ok(self.coupons.lock().unwrap().keys().filter(|(c, _)| *c == id).count() as u64)
    }

    async fn coupon_of(&self, id: CampaignId, user: &UserId) -> Result<Option<u64>, Unavailable> {
        Ok(self.coupons.lock().unwrap().get(&(id, user.clone())).copied())
    }
}

/// A queue that records what it is given, or fails while `failing` is set.
#[derive(Default)]
pub struct MemoryQueue {
    pub sent: Mutex<Vec<Reservation>>,
    pub failing: AtomicBool,
}

#[async_trait]
impl ReservationQueue for MemoryQueue {
    async fn enqueue(&self, reservation: &Reservation) -> Result<(), Unavailable> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(Unavailable::new("sqs", "queue is down (test)"));
        }
        self.sent.lock().unwrap().push(reservation.clone());
        Ok(())
    }
}

/// A coupon book with a unique (campaign, user) key, known campaigns, and chunks that can be made
/// to fail.
#[derive(Default)]
pub struct MemoryCouponBook {
    pub rows: Mutex<HashMap<(CampaignId, UserId), Reservation>>,
    pub known_campaigns: Mutex<HashSet<CampaignId>>,
    pub chunk_sizes: Mutex<Vec<usize>>,
    /// A chunk containing this user fails as a whole, as a failed transaction would.
    pub fail_chunk_with_user: Mutex<Option<UserId>>,
}

#[async_trait]
impl CouponBook for MemoryCouponBook {
    async fn record(&self, chunk: &[Reservation]) -> Result<ChunkRecord, Unavailable> {
        self.chunk_sizes.lock().unwrap().push(chunk.len());
        if let Some(bad) = self.fail_chunk_with_user.lock().unwrap().as_ref()
            && chunk.iter().any(|r| &r.user_id == bad)
        {
            return Err(Unavailable::new("mysql", "chunk failed (test)"));
        }
        let known = self.known_campaigns.lock().unwrap();
        let mut rows = self.rows.lock().unwrap();
        let mut record = ChunkRecord::default();
        for (i, r) in chunk.iter().enumerate() {
            if !known.contains(&r.campaign_id) {
                record.rejected.push(i);
            } else if let std::collections::hash_map::Entry::Vacant(row) =
                rows.entry((r.campaign_id, r.user_id.clone()))
            {
                row.insert(r.clone());
                record.inserted += 1;
            }
        }
        Ok(record)
    }
}

/// A key table keyed by digest; counts `find` calls and can be made unreachable.
#[derive(Default)]
pub struct MemoryApiKeys {
    keys: Mutex<BTreeMap<String, ApiKeyRecord>>,
    pub finds: std::sync::atomic::AtomicU64,
    pub failing: AtomicBool,
}

impl MemoryApiKeys {
    fn check(&self) -> Result<(), Unavailable> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(Unavailable::new("dynamodb", "table is unreachable (test)"));
        }
        Ok(())
    }
}

#[async_trait]
impl ApiKeyStore for MemoryApiKeys {
    async fn find(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>, Unavailable> {
        self.finds.fetch_add(1, Ordering::Relaxed);
        self.check()?;
        Ok(self.keys.lock().unwrap().get(key_hash).cloned())
    }

    async fn insert(&self, key: &ApiKeyRecord) -> Result<(), Unavailable> {
        self.check()?;
        self.keys
            .lock()
            .unwrap()
            .entry(key.key_hash.clone())
            .or_insert_with(|| key.clone());
        Ok(())
    }

    async fn by_partner(&self, partner_id: &str) -> Result<Vec<ApiKeyRecord>, Unavailable> {
        self.check()?;
        let keys = self.keys.lock().unwrap();
        Ok(keys.values().filter(|k| k.partner_id == partner_id).cloned().collect())
    }

    async fn by_display_id(&self, display_id: &str) -> Result<Option<ApiKeyRecord>, Unavailable> {
        self.check()?;
        let keys = self.keys.lock().unwrap();
        Ok(keys.values().find(|k| k.display_id == display_id).cloned())
    }

    async fn revoke(&self, key_hash: &str) -> Result<(), Unavailable> {
        self.check()?;
        if let Some(key) = self.keys.lock().unwrap().get_mut(key_hash) {
            key.status = KeyStatus::Revoked;
        }
        Ok(())
    }
}
