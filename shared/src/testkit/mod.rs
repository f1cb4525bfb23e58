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

use crate::coupons::CouponError;
use crate::coupons::domain::{
    CancelUse, Coupon, CouponId, CouponQuery, CouponStatus, UseCoupon, decide_cancel, decide_use,
};
use crate::coupons::ports::CouponRecords;
use crate::issuance::IssuanceError;
use crate::issuance::change::{CampaignChange, amendment};
use crate::issuance::domain::{
    Campaign, CampaignId, CampaignKind, CampaignTerms, CouponGrant, GrantableCampaign, Holder, IssueDecision,
    IssueRules, NewCampaign, Outcome, PendingReservation, Place, Reservation, allot, decide, grant_coupons,
};
use crate::issuance::ports::{
    Amendment, CampaignCatalog, ChunkRecord, CouponBook, HealTurn, IssueLedger, ReservationQueue, RewardCoupons,
    SendError, Standing,
};
use crate::kernel::{Clock, TxError, Unavailable, UserId};
use crate::keys::domain::{ApiKeyRecord, KeyStatus};
use crate::keys::ports::ApiKeyStore;
use crate::partners::domain::{Limit, LimitOverrides, admit};
use crate::partners::ports::PartnerLimitStore;

mod checkout;
mod events;
mod gateway;
mod grading;
mod points;
pub mod points_cases;
pub use checkout::MemoryCheckout;
pub use events::{Answer, MemoryEvents, PlainSecrets, Post, RecordingBus, RecordingTransport, ScriptedVetting};
pub use gateway::gateway_request;
pub use grading::{MemoryGrading, MemoryPartitionQueue, granted_coupons};
pub use points::{MemoryPoints, Tables};

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
        kind: CampaignKind::Sale,
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
    pub fn at(now: DateTime<Utc>) -> Self {
        Self(Mutex::new(now))
    }

    pub fn advance(&self, by: chrono::Duration) {
        *self.0.lock().unwrap() += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

/// One campaign's live state, as the Redis keys hold it.
struct CampaignState {
    rules: IssueRules,
    users: HashMap<UserId, Place>,
    count: u32,
    /// The highest rank handed out, where a place given back lowered the counter below it.
    top: u32,
    pending: HashMap<Uuid, PendingReservation>,
}

/// The ledger in memory. `failing` makes every call fail, as an unreachable Redis would.
#[derive(Default)]
pub struct MemoryLedger {
    state: Mutex<HashMap<CampaignId, CampaignState>>,
    /// Kept apart from the rest, as Redis keeps them in their own key.
    outcomes: Mutex<HashMap<(CampaignId, UserId), Outcome>>,
    pub failing: AtomicBool,
    /// `prime` stores the rules and then fails, as a Redis that times out after running the
    /// command, or fails between its commands, does.
    pub prime_lands_then_fails: AtomicBool,
    /// Lost campaigns: when the loss was first seen, and whether a caller holds the turn.
    heals: Mutex<HashMap<CampaignId, (DateTime<Utc>, bool)>>,
    /// Campaigns a change holds the turn of.
    pub change_turns: Mutex<HashSet<CampaignId>>,
}

impl MemoryLedger {
    fn check(&self) -> Result<(), Unavailable> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(Unavailable::new("redis", "ledger is unreachable (test)"));
        }
        Ok(())
    }

    /// The outcome the writer told the ledger about.
    pub fn outcome(&self, id: CampaignId, user: &UserId) -> Option<Outcome> {
        self.outcomes.lock().unwrap().get(&(id, user.clone())).copied()
    }

    /// Forgets a campaign entirely, as a Redis that lost its state would.
    pub fn forget(&self, id: CampaignId) {
        self.state.lock().unwrap().remove(&id);
        self.outcomes.lock().unwrap().retain(|(c, _), _| *c != id);
    }
}

#[async_trait]
impl IssueLedger for MemoryLedger {
    async fn prime(&self, rules: &IssueRules) -> Result<(), Unavailable> {
        self.check()?;
        let mut state = self.state.lock().unwrap();
        state
            .entry(rules.campaign_id)
            .or_insert_with(|| CampaignState {
                rules: rules.clone(),
                users: HashMap::new(),
                count: 0,
                top: 0,
                pending: HashMap::new(),
            })
            .rules = rules.clone();
        if self.prime_lands_then_fails.load(Ordering::SeqCst) {
            return Err(Unavailable::new(
                "redis",
                "no answer after the rules were stored (test)",
            ));
        }
        Ok(())
    }

    async fn rules(&self, id: CampaignId) -> Result<Option<IssueRules>, Unavailable> {
        self.check()?;
        Ok(self.state.lock().unwrap().get(&id).map(|s| s.rules.clone()))
    }

    async fn reserve(
        &self,
        id: CampaignId,
        partner: &str,
        user: &UserId,
        request: Uuid,
        now: DateTime<Utc>,
    ) -> Result<IssueDecision, Unavailable> {
        self.check()?;
        let mut state = self.state.lock().unwrap();
        let Some(s) = state.get_mut(&id) else {
            return Ok(IssueDecision::Unprimed);
        };
        let decision = decide(&s.rules, partner, now, s.users.get(user).copied(), s.count);
        if let IssueDecision::Reserved { rank } = decision {
            s.users.insert(user.clone(), Place::of(request, rank));
            s.count = rank;
            s.pending.insert(
                request,
                PendingReservation {
                    request_id: request,
                    user_id: user.clone(),
                    rank,
                    reserved_at: now,
                },
            );
        }
        Ok(decision)
    }

    async fn mark_sent(&self, id: CampaignId, request: Uuid) -> Result<(), Unavailable> {
        self.check()?;
        if let Some(s) = self.state.lock().unwrap().get_mut(&id) {
            s.pending.remove(&request);
        }
        Ok(())
    }

    async fn release(&self, id: CampaignId, user: &UserId, request: Uuid) -> Result<bool, Unavailable> {
        self.check()?;
        let mut state = self.state.lock().unwrap();
        let Some(s) = state.get_mut(&id) else {
            return Ok(false);
        };
        s.pending.remove(&request);
        let held = s.users.get(user).and_then(|p| p.request_id) == Some(request);
        if held {
            s.users.remove(user);
            s.top = s.top.max(s.count);
            s.count -= 1;
        }
        Ok(held)
    }

    async fn reserved_count(&self, id: CampaignId) -> Result<u64, Unavailable> {
        self.check()?;
        Ok(self.state.lock().unwrap().get(&id).map_or(0, |s| s.count.into()))
    }

    async fn standing(&self, id: CampaignId, user: &UserId) -> Result<Standing, Unavailable> {
        self.check()?;
        let state = self.state.lock().unwrap();
        Ok(Standing {
            owner: state.get(&id).map(|s| s.rules.partner_id.clone()),
            held: state.get(&id).is_some_and(|s| s.users.contains_key(user)),
            outcome: self.outcome(id, user),
        })
    }

    async fn record_outcomes(&self, id: CampaignId, outcomes: &[(UserId, Outcome)]) -> Result<(), Unavailable> {
        self.check()?;
        self.outcomes
            .lock()
            .unwrap()
            .extend(outcomes.iter().map(|(u, o)| ((id, u.clone()), *o)));
        Ok(())
    }

    async fn live_campaigns(&self) -> Result<Vec<CampaignId>, Unavailable> {
        self.check()?;
        let mut ids: Vec<_> = self.state.lock().unwrap().keys().copied().collect();
        ids.sort_unstable();
        Ok(ids)
    }

    async fn discard(&self, id: CampaignId) -> Result<(), Unavailable> {
        self.check()?;
        self.forget(id);
        Ok(())
    }

    async fn pending(&self, id: CampaignId, limit: usize) -> Result<Vec<PendingReservation>, Unavailable> {
        self.check()?;
        let state = self.state.lock().unwrap();
        let mut places: Vec<_> = state
            .get(&id)
            .map(|s| s.pending.values().cloned().collect())
            .unwrap_or_default();
        places.sort_by_key(|p| (p.reserved_at, p.rank));
        places.truncate(limit);
        Ok(places)
    }

    async fn heal_turn(
        &self,
        id: CampaignId,
        now: DateTime<Utc>,
        grace: std::time::Duration,
    ) -> Result<HealTurn, Unavailable> {
        self.check()?;
        let mut heals = self.heals.lock().unwrap();
        if self.state.lock().unwrap().contains_key(&id) {
            heals.remove(&id);
            return Ok(HealTurn::Intact);
        }
        let (seen, taken) = heals.entry(id).or_insert((now, false));
        let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
        Ok(if now - *seen < grace {
            HealTurn::Wait
        } else if *taken {
            HealTurn::Busy
        } else {
            *taken = true;
            HealTurn::Go
        })
    }

    async fn rebuild(&self, rules: &IssueRules, holders: &[Holder]) -> Result<u64, Unavailable> {
        self.check()?;
        let mut state = self.state.lock().unwrap();
        let pending = state.remove(&rules.campaign_id).map(|s| s.pending).unwrap_or_default();
        let mut users: HashMap<UserId, Place> = holders
            .iter()
            .filter_map(|h| Some((UserId::parse(&h.user_id).ok()?, h.place)))
            .collect();
        users.extend(
            pending
                .values()
                .map(|p| (p.user_id.clone(), Place::of(p.request_id, p.rank))),
        );
        let count = users.len() as u32;
        let top = users.values().filter_map(|p| p.rank).max().unwrap_or(0);
        state.insert(
            rules.campaign_id,
            CampaignState {
                rules: rules.clone(),
                users,
                count,
                top,
                pending,
            },
        );
        Ok(u64::from(count))
    }

    async fn end_heal(&self, id: CampaignId, rebuilt: bool) -> Result<(), Unavailable> {
        let mut heals = self.heals.lock().unwrap();
        if rebuilt {
            heals.remove(&id);
        } else if let Some((_, taken)) = heals.get_mut(&id) {
            *taken = false;
        }
        Ok(())
    }

    async fn amend(&self, rules: &IssueRules, turn: &str) -> Result<Amendment, Unavailable> {
        self.check()?;
        let id = rules.campaign_id;
        let turn_held = self.change_turns.lock().unwrap().contains(&id) && turn == id.to_string();
        let mut state = self.state.lock().unwrap();
        let s = state.get_mut(&id);
        let places = s.as_ref().map(|s| (u64::from(s.count), u64::from(s.top)));
        let decided = amendment(turn_held, places, rules.total_quantity);
        if let (Amendment::Applied, Some(s)) = (decided, s) {
            s.rules.total_quantity = rules.total_quantity;
            s.rules.issue_ends_at = rules.issue_ends_at;
            s.rules.paused = rules.paused;
        }
        Ok(decided)
    }

    async fn change_turn(&self, id: CampaignId) -> Result<Option<String>, Unavailable> {
        self.check()?;
        let mut turns = self.change_turns.lock().unwrap();
        Ok(turns.insert(id).then(|| id.to_string()))
    }

    async fn end_change_turn(&self, id: CampaignId, _token: &str) -> Result<(), Unavailable> {
        self.change_turns.lock().unwrap().remove(&id);
        Ok(())
    }
}

/// Partner limits kept in memory, as `partner_limits` keeps them.
#[derive(Default)]
pub struct MemoryPartnerLimits(Mutex<HashMap<String, LimitOverrides>>);

#[async_trait]
impl PartnerLimitStore for MemoryPartnerLimits {
    async fn overrides(&self, partner: &str) -> Result<LimitOverrides, Unavailable> {
        Ok(self.0.lock().unwrap().get(partner).copied().unwrap_or_default())
    }
    async fn set_overrides(&self, partner: &str, overrides: LimitOverrides) -> Result<(), Unavailable> {
        self.0.lock().unwrap().insert(partner.to_owned(), overrides);
        Ok(())
    }
}

#[derive(Default)]
pub struct MemoryCatalog {
    campaigns: Mutex<BTreeMap<CampaignId, Campaign>>,
    /// What the writer recorded: (campaign, user) → coupon or rejection.
    pub outcomes: Mutex<HashMap<(CampaignId, UserId), Outcome>>,
    /// Counts `get` calls, so tests can see what a cache saved.
    pub reads: std::sync::atomic::AtomicU64,
}

#[async_trait]
impl CampaignCatalog for MemoryCatalog {
    async fn create(&self, partner_id: &str, c: &NewCampaign, max_live: u32) -> Result<Campaign, IssuanceError> {
        let mut campaigns = self.campaigns.lock().unwrap();
        let now = Utc::now();
        let live = campaigns
            .values()
            .filter(|k| k.partner_id == partner_id && k.issue_ends_at > now)
            .count();
        let would_be = live as u64 + u64::from(c.issue_ends_at > now);
        admit(Limit::LiveCampaigns, max_live.into(), would_be)?;
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
            kind: c.kind,
            created_at: Utc::now(),
            paused: false,
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
        let outcomes = self.outcomes.lock().unwrap();
        Ok(outcomes
            .iter()
            .filter(|((c, _), o)| *c == id && matches!(o, Outcome::Issued { .. }))
            .count() as u64)
    }

    async fn outcome_of(&self, id: CampaignId, user: &UserId) -> Result<Option<Outcome>, Unavailable> {
        Ok(self.outcomes.lock().unwrap().get(&(id, user.clone())).copied())
    }

    async fn holders(&self, id: CampaignId) -> Result<Vec<Holder>, Unavailable> {
        let outcomes = self.outcomes.lock().unwrap();
        Ok(outcomes
            .iter()
            .filter_map(|((c, user), o)| match o {
                // The fake records no requests: its holders come back without theirs.
                Outcome::Issued { coupon_id } if *c == id => Some(Holder {
                    user_id: user.as_str().to_owned(),
                    coupon_id: *coupon_id,
                    place: Place::default(),
                }),
                _ => None,
            })
            .collect())
    }

    async fn change(
        &self,
        partner: &str,
        id: CampaignId,
        change: &CampaignChange,
        now: DateTime<Utc>,
    ) -> Result<Campaign, IssuanceError> {
        let issued = self.issued_count(id).await?;
        let mut campaigns = self.campaigns.lock().unwrap();
        let campaign = match campaigns.get_mut(&id) {
            Some(c) if c.partner_id == partner => c,
            _ => return Err(IssuanceError::CampaignNotFound),
        };
        *campaign = change.applied_to(campaign, issued, now)?;
        Ok(campaign.clone())
    }

    async fn page(
        &self,
        partner: &str,
        before: Option<CampaignId>,
        limit: u32,
    ) -> Result<Vec<(Campaign, u64)>, Unavailable> {
        let page: Vec<Campaign> = self
            .campaigns
            .lock()
            .unwrap()
            .values()
            .rev()
            .filter(|c| c.partner_id == partner && before.is_none_or(|b| c.id < b))
            .take(limit as usize)
            .cloned()
            .collect();
        let mut counted = Vec::with_capacity(page.len());
        for campaign in page {
            let issued = self.issued_count(campaign.id).await?;
            counted.push((campaign, issued));
        }
        Ok(counted)
    }
}

/// Reward grants in memory: a granted coupon is an `Issued` outcome, as the writer's are.
#[async_trait]
impl RewardCoupons<()> for MemoryCatalog {
    async fn grant_coupons(
        &self,
        _: &mut (),
        partner: &str,
        campaign: CampaignId,
        users: &[UserId],
        _: DateTime<Utc>,
    ) -> Result<Vec<CouponGrant>, TxError> {
        let found = self.campaigns.lock().unwrap().get(&campaign).cloned();
        let mut outcomes = self.outcomes.lock().unwrap();
        let holders: HashSet<UserId> = outcomes
            .iter()
            .filter(|((c, _), o)| *c == campaign && matches!(o, Outcome::Issued { .. }))
            .map(|((_, u), _)| u.clone())
            .collect();
        let held: HashSet<&str> = holders.iter().map(UserId::as_str).collect();
        let names: Vec<&str> = users.iter().map(UserId::as_str).collect();
        let grantable = found.as_ref().map(|c| GrantableCampaign {
            owner: &c.partner_id,
            kind: c.kind,
            room: c.total_quantity.saturating_sub(holders.len() as u32),
        });
        let grants = grant_coupons(grantable, partner, &names, &held);
        let mut next = outcomes.len() as u64;
        for (user, grant) in users.iter().zip(&grants) {
            if *grant == CouponGrant::Granted {
                next += 1;
                outcomes.insert((campaign, user.clone()), Outcome::Issued { coupon_id: next });
            }
        }
        Ok(grants)
    }
}

/// How a `MemoryQueue` fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueFault {
    #[default]
    None,
    /// Refuses every message: certainly not sent.
    Refuse,
    /// Takes every message but reports an unknown outcome, as a lost response would.
    LoseResponse,
}

/// A queue that records what it is given, or fails as `fault` says.
#[derive(Default)]
pub struct MemoryQueue {
    pub sent: Mutex<Vec<Reservation>>,
    pub fault: Mutex<QueueFault>,
    /// What `in_flight` answers: messages the writer has not taken yet.
    pub in_flight: std::sync::atomic::AtomicU64,
}

impl MemoryQueue {
    pub fn fail_with(&self, fault: QueueFault) {
        *self.fault.lock().unwrap() = fault;
    }
}

#[async_trait]
impl ReservationQueue for MemoryQueue {
    async fn enqueue(&self, reservation: &Reservation) -> Result<(), SendError> {
        match *self.fault.lock().unwrap() {
            QueueFault::Refuse => Err(SendError::NotSent(Unavailable::new("sqs", "queue is down (test)"))),
            QueueFault::LoseResponse => {
                self.sent.lock().unwrap().push(reservation.clone());
                Err(SendError::Unknown(Unavailable::new("sqs", "response lost (test)")))
            }
            QueueFault::None => {
                self.sent.lock().unwrap().push(reservation.clone());
                Ok(())
            }
        }
    }

    async fn in_flight(&self) -> Result<u64, Unavailable> {
        Ok(self.in_flight.load(Ordering::SeqCst))
    }
}

/// A campaign's issue window: from its start, until its end (excluded).
pub type IssueWindow = (DateTime<Utc>, DateTime<Utc>);

/// A coupon book with a unique (campaign, user) key, campaigns with an owner and a quantity (the
/// same `allot` rule as MySQL's), and chunks that can be made to fail.
#[derive(Default)]
pub struct MemoryCouponBook {
    pub rows: Mutex<HashMap<(CampaignId, UserId), Reservation>>,
    pub rejections: Mutex<HashMap<(CampaignId, UserId), crate::issuance::domain::RejectionReason>>,
    /// Campaign id → (owner, quantity); every one on sale but those in `rewards`.
    pub campaigns: Mutex<HashMap<CampaignId, (String, u32)>>,
    pub rewards: Mutex<HashSet<CampaignId>>,
    /// Issue windows (start, end) of the campaigns that have one; the others are open always.
    pub windows: Mutex<HashMap<CampaignId, IssueWindow>>,
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
        let campaigns = self.campaigns.lock().unwrap();
        let mut rows = self.rows.lock().unwrap();
        let mut rejections = self.rejections.lock().unwrap();
        let mut record = ChunkRecord::default();
        let mut by_campaign: BTreeMap<CampaignId, Vec<(usize, &Reservation)>> = BTreeMap::new();
        for (i, r) in chunk.iter().enumerate() {
            by_campaign.entry(r.campaign_id).or_default().push((i, r));
        }
        for (id, members) in by_campaign {
            let Some((owner, quantity)) = campaigns.get(&id) else {
                record.unknown_campaign.extend(members.iter().map(|(i, _)| *i));
                continue;
            };
            let written: HashSet<&str> = rows.keys().filter(|(c, _)| *c == id).map(|(_, u)| u.as_str()).collect();
            let issued = written.len() as u32;
            let reservations: Vec<&Reservation> = members.iter().map(|(_, r)| *r).collect();
            let kind = if self.rewards.lock().unwrap().contains(&id) {
                CampaignKind::Reward
            } else {
                CampaignKind::Sale
            };
            let (issue_starts_at, issue_ends_at) = self
                .windows
                .lock()
                .unwrap()
                .get(&id)
                .copied()
                .unwrap_or((DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC));
            let terms = CampaignTerms {
                owner,
                kind,
                total_quantity: *quantity,
                issue_starts_at,
                issue_ends_at,
            };
            let allotment = allot(&reservations, &terms, &written, quantity.saturating_sub(issued));
            let position = |r: &Reservation| members.iter().find(|(_, m)| std::ptr::eq(*m, r)).map(|(i, _)| *i);
            record.duplicates += allotment.duplicates.len() as u64;
            let issue: Vec<Reservation> = allotment.issue.iter().map(|r| (*r).clone()).collect();
            let rejected: Vec<_> = allotment
                .rejected
                .iter()
                .filter_map(|(r, why)| Some((position(r)?, (*r).clone(), *why)))
                .collect();
            drop(written);
            for r in issue {
                rows.insert((id, r.user_id.clone()), r);
                record.inserted += 1;
            }
            for (i, r, why) in rejected {
                rejections.entry((id, r.user_id.clone())).or_insert(why);
                record.rejected.push((i, why));
            }
            let ids: HashMap<&UserId, u64> = rows
                .iter()
                .filter(|((c, _), _)| *c == id)
                .map(|((_, u), r)| (u, r.rank.into()))
                .collect();
            for (_, r) in &members {
                let outcome = match ids.get(&r.user_id) {
                    Some(&coupon_id) => Outcome::Issued { coupon_id },
                    None => match rejections.get(&(id, r.user_id.clone())) {
                        Some(why) => Outcome::Rejected(*why),
                        None => continue,
                    },
                };
                record.outcomes.push((id, r.user_id.clone(), outcome));
            }
        }
        record.rejected.sort_unstable();
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

// ---------------------------------------------------------------------------------------------
// Coupons
// ---------------------------------------------------------------------------------------------

/// Coupons in memory with the context's own rules (a use or cancel changes nothing here: the
/// decision is what is tested); `expire_batch` marks at most `max_rows` per call and records each
/// call's `max_rows` in `batches`.
#[derive(Default)]
pub struct MemoryCoupons {
    pub coupons: Mutex<Vec<Coupon>>,
    pub batches: Mutex<Vec<u32>>,
}

/// An ISSUED coupon of campaign 1 (AMOUNT 5), issued `id` seconds after a fixed instant.
pub fn coupon_fixture(id: u64, partner: &str, user: &str, expires_at: DateTime<Utc>) -> Coupon {
    Coupon {
        id,
        campaign_id: 1,
        campaign_name: "c".into(),
        partner_id: partner.into(),
        user_id: user.into(),
        stored_status: CouponStatus::Issued,
        discount: crate::issuance::domain::Discount {
            kind: crate::issuance::domain::DiscountType::Amount,
            value: 5,
        },
        issued_at: DateTime::from_timestamp(1_800_000_000 + id as i64, 0).unwrap_or_default(),
        expires_at,
        usage: None,
        hold: None,
    }
}

#[async_trait]
impl CouponRecords for MemoryCoupons {
    async fn find(&self, id: CouponId) -> Result<Option<Coupon>, Unavailable> {
        Ok(self.coupons.lock().unwrap().iter().find(|c| c.id == id).cloned())
    }

    async fn list(
        &self,
        partner: &str,
        user: &UserId,
        query: &CouponQuery,
        now: DateTime<Utc>,
    ) -> Result<Vec<Coupon>, Unavailable> {
        let mut found: Vec<Coupon> = self
            .coupons
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.owned_by(partner, user))
            .filter(|c| query.status.is_none_or(|s| c.status(now) == s))
            .filter(|c| query.cursor.is_none_or(|k| (c.issued_at, c.id) < (k.issued_at, k.id)))
            .cloned()
            .collect();
        found.sort_by_key(|c| std::cmp::Reverse((c.issued_at, c.id)));
        found.truncate(query.limit as usize + 1);
        Ok(found)
    }

    async fn use_coupon(
        &self,
        id: CouponId,
        partner: &str,
        request: &UseCoupon,
        now: DateTime<Utc>,
    ) -> Result<Coupon, CouponError> {
        let mut coupons = self.coupons.lock().unwrap();
        let coupon = coupons.iter_mut().find(|c| c.id == id).ok_or(CouponError::NotFound)?;
        decide_use(coupon, partner, request, now)?;
        Ok(coupon.clone())
    }

    async fn cancel_use(
        &self,
        id: CouponId,
        partner: &str,
        request: &CancelUse,
        _now: DateTime<Utc>,
    ) -> Result<Coupon, CouponError> {
        let coupons = self.coupons.lock().unwrap();
        let coupon = coupons.iter().find(|c| c.id == id).ok_or(CouponError::NotFound)?;
        decide_cancel(coupon, partner, request, None)?;
        Ok(coupon.clone())
    }

    async fn expire_batch(&self, now: DateTime<Utc>, max_rows: u32) -> Result<u64, Unavailable> {
        self.batches.lock().unwrap().push(max_rows);
        let mut marked = 0;
        for c in self.coupons.lock().unwrap().iter_mut() {
            if marked < u64::from(max_rows)
                && c.stored_status == CouponStatus::Issued
                && c.expires_at <= now
                && c.live_hold(now).is_none()
            {
                c.stored_status = CouponStatus::Expired;
                marked += 1;
            }
        }
        Ok(marked)
    }
}
