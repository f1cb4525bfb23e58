//! Grading's records in memory: orders, policies, runs with their steps, grades and reward
//! records as maps. A chunk is written by the same `grading::chunk::write_chunk` the MySQL
//! records run, its coupons granted by the in-memory catalog and its points by the in-memory
//! ledger, through the same ports; the rules (tiers, what is due, the grant) are the domain's.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{MemoryCatalog, MemoryPoints};
use crate::grading::GradingError;
use crate::grading::chunk::{ChunkStores, write_chunk};
use crate::grading::domain::{
    ChunkCount, GradedUser, Month, Order, OrderChange, OrderStatus, PartitionTask, PartitionWork, Policy, RewardKind,
    RewardRecord, Run, RunId, RunStatus, UserGrade, check_reward_campaign,
};
use crate::grading::ports::{ChunkTables, GradingRecords, OrdersRecorded, PartitionQueue, PlannedRun};
use crate::issuance::ports::CampaignCatalog;
use crate::kernel::{TxError, Unavailable, UserId};
use crate::partners::domain::{Limit, admit};
use crate::points::domain::DEFAULT_VALIDITY_DAYS;
use crate::points::ports::PointRecords;

/// Grading's records, granting through `catalog` (coupons) and `points`.
#[derive(Default)]
pub struct MemoryGrading {
    pub catalog: Arc<MemoryCatalog>,
    pub points: Arc<MemoryPoints>,
    state: Mutex<GradingTables>,
}

#[derive(Default)]
struct GradingTables {
    orders: BTreeMap<(String, String), Order>,
    policies: BTreeMap<String, Policy>,
    runs: BTreeMap<RunId, (Run, Policy)>,
    /// (run, partition) → (users graded, rewards granted, done).
    steps: BTreeMap<(RunId, u32), (u64, u64, bool)>,
    /// (partner, month, user) → (grade, paid).
    grades: BTreeMap<(String, Month, UserId), (Option<String>, u64)>,
    rewards: BTreeMap<(String, Month, UserId, RewardKind), RewardRecord>,
}

impl MemoryGrading {
    pub fn new(catalog: Arc<MemoryCatalog>, points: Arc<MemoryPoints>) -> Self {
        Self {
            catalog,
            points,
            state: Mutex::default(),
        }
    }

    /// Every reward record of the partner's month, by user and kind.
    pub fn rewards(&self, partner: &str, month: Month) -> Vec<RewardRecord> {
        let state = self.state.lock().unwrap();
        state
            .rewards
            .iter()
            .filter(|((p, m, ..), _)| p == partner && *m == month)
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// Forgets that a step is done, as a worker that died before its last chunk leaves it.
    pub fn reopen_step(&self, task: PartitionTask) {
        let mut state = self.state.lock().unwrap();
        if let Some(step) = state.steps.get_mut(&(task.run_id, task.partition)) {
            step.2 = false;
        }
    }
}

#[async_trait]
impl GradingRecords for MemoryGrading {
    async fn record_orders(
        &self,
        partner: &str,
        orders: &[Order],
        max_per_month: u64,
    ) -> Result<OrdersRecorded, GradingError> {
        let mut state = self.state.lock().unwrap();
        let mut recorded = OrdersRecorded::default();
        let mut new_by_month: BTreeMap<Month, u64> = BTreeMap::new();
        let mut seen = HashSet::new();
        let mut writes = Vec::new();
        for o in orders {
            match o.change_from(state.orders.get(&(partner.to_owned(), o.order_id.clone()))) {
                OrderChange::New if seen.insert(o.order_id.as_str()) => {
                    recorded.recorded += 1;
                    *new_by_month.entry(o.month()).or_default() += 1;
                    writes.push(o);
                }
                OrderChange::New | OrderChange::Unchanged | OrderChange::Stale => recorded.unchanged += 1,
                OrderChange::Apply => {
                    recorded.updated += 1;
                    writes.push(o);
                }
                OrderChange::Conflict => return Err(GradingError::OrderConflict(o.order_id.clone())),
            }
        }
        for (month, new) in new_by_month {
            let held = state
                .orders
                .iter()
                .filter(|((p, _), o)| p == partner && o.month() == month)
                .count() as u64;
            admit(Limit::OrdersPerMonth, max_per_month, held + new)?;
        }
        for o in writes {
            state.orders.insert((partner.to_owned(), o.order_id.clone()), o.clone());
        }
        Ok(recorded)
    }

    async fn set_policy(&self, partner: &str, policy: &Policy) -> Result<(), GradingError> {
        for tier in &policy.tiers {
            if let Some(campaign) = tier.coupon_campaign_id {
                check_reward_campaign(tier, partner, self.catalog.get(campaign).await?.as_ref())?;
            }
        }
        let mut state = self.state.lock().unwrap();
        state.policies.insert(partner.to_owned(), policy.clone());
        Ok(())
    }

    async fn policy(&self, partner: &str) -> Result<Option<Policy>, Unavailable> {
        Ok(self.state.lock().unwrap().policies.get(partner).cloned())
    }

    async fn partners_with_policy(&self) -> Result<Vec<String>, Unavailable> {
        Ok(self.state.lock().unwrap().policies.keys().cloned().collect())
    }

    async fn plan_run(
        &self,
        partner: &str,
        month: Month,
        partitions: u32,
        policy: &Policy,
    ) -> Result<PlannedRun, Unavailable> {
        let mut state = self.state.lock().unwrap();
        if let Some((run, _)) = state
            .runs
            .values()
            .find(|(r, _)| r.partner_id == partner && r.month == month)
        {
            return Ok(PlannedRun {
                run: run.clone(),
                created: false,
            });
        }
        let run_id = state.runs.keys().next_back().copied().unwrap_or(0) + 1;
        let run = Run {
            run_id,
            month,
            status: RunStatus::Running,
            partitions_done: 0,
            partitions_total: partitions,
            users_graded: 0,
            rewards_granted: 0,
            started_at: Utc::now(),
            finished_at: None,
            duration_ms: None,
            pending_partitions: Vec::new(),
            partner_id: partner.to_owned(),
            dispatched: false,
        };
        state.runs.insert(run_id, (run.clone(), policy.clone()));
        for p in 0..partitions {
            state.steps.insert((run_id, p), (0, 0, false));
        }
        Ok(PlannedRun { run, created: true })
    }

    async fn pending_partitions(&self, run: RunId) -> Result<Vec<u32>, Unavailable> {
        let state = self.state.lock().unwrap();
        Ok(state
            .steps
            .iter()
            .filter(|((r, _), step)| *r == run && !step.2)
            .map(|((_, p), _)| *p)
            .collect())
    }

    async fn mark_dispatched(&self, run: RunId) -> Result<(), Unavailable> {
        if let Some((run, _)) = self.state.lock().unwrap().runs.get_mut(&run) {
            run.dispatched = true;
        }
        Ok(())
    }

    async fn run(&self, partner: &str, run: RunId) -> Result<Option<Run>, Unavailable> {
        let state = self.state.lock().unwrap();
        Ok(state
            .runs
            .get(&run)
            .filter(|(r, _)| r.partner_id == partner)
            .map(|(r, _)| r.clone()))
    }

    async fn partition(&self, task: PartitionTask) -> Result<Option<PartitionWork>, Unavailable> {
        let work = {
            let state = self.state.lock().unwrap();
            let (Some((run, policy)), Some(step)) = (
                state.runs.get(&task.run_id),
                state.steps.get(&(task.run_id, task.partition)),
            ) else {
                return Ok(None);
            };
            PartitionWork {
                partner: run.partner_id.clone(),
                month: run.month,
                policy: policy.clone(),
                partitions: run.partitions_total,
                validity_days: DEFAULT_VALIDITY_DAYS,
                done: step.2,
            }
        };
        let days = self.points.validity_days(&work.partner).await?;
        Ok(Some(PartitionWork {
            validity_days: days.unwrap_or(DEFAULT_VALIDITY_DAYS),
            ..work
        }))
    }

    async fn paid_totals(&self, work: &PartitionWork, buckets: (u32, u32)) -> Result<Vec<(UserId, u64)>, Unavailable> {
        let state = self.state.lock().unwrap();
        let mut totals: BTreeMap<UserId, u64> = BTreeMap::new();
        for ((partner, _), o) in &state.orders {
            let in_partition = (buckets.0..=buckets.1).contains(&o.bucket());
            if *partner == work.partner && o.month() == work.month && in_partition && o.status == OrderStatus::Paid {
                *totals.entry(o.user_id.clone()).or_default() += o.amount;
            }
        }
        Ok(totals.into_iter().collect())
    }

    async fn record_chunk(
        &self,
        task: PartitionTask,
        work: &PartitionWork,
        users: &[GradedUser],
        last: Option<u64>,
    ) -> Result<ChunkCount, GradingError> {
        let stores = ChunkStores {
            grading: self,
            coupons: &*self.catalog,
            points: &*self.points,
        };
        write_chunk(&mut (), &stores, task, work, users, last, Utc::now())
            .await
            .map_err(|e| match e {
                TxError::Unavailable(e) => GradingError::Unavailable(e),
                TxError::Conflict(e) => GradingError::Unavailable(Unavailable::new("memory", e)),
            })
    }

    async fn user_grade(
        &self,
        partner: &str,
        user: &str,
        month: Option<Month>,
    ) -> Result<Option<UserGrade>, Unavailable> {
        let state = self.state.lock().unwrap();
        let month = match month {
            Some(m) => m,
            None => match state
                .runs
                .values()
                .filter(|(r, _)| r.partner_id == partner && r.status == RunStatus::Done)
                .map(|(r, _)| r.month)
                .max()
            {
                Some(m) => m,
                None => return Ok(None),
            },
        };
        let user_id = UserId::parse(user).ok();
        let graded = user_id
            .as_ref()
            .and_then(|u| state.grades.get(&(partner.to_owned(), month, u.clone())).cloned());
        let (grade, paid_amount) = graded.unwrap_or((None, 0));
        let rewards = state
            .rewards
            .iter()
            .filter(|((p, m, u, _), _)| p == partner && *m == month && Some(u) == user_id.as_ref())
            .map(|(_, r)| r.view())
            .collect();
        Ok(Some(UserGrade {
            user_id: user.to_owned(),
            month,
            grade,
            paid_amount,
            rewards,
        }))
    }
}

#[async_trait]
impl ChunkTables<()> for MemoryGrading {
    async fn record_grades(
        &self,
        _: &mut (),
        _: PartitionTask,
        work: &PartitionWork,
        users: &[GradedUser],
        _: DateTime<Utc>,
    ) -> Result<(), TxError> {
        let mut state = self.state.lock().unwrap();
        for g in users {
            let key = (work.partner.clone(), work.month, g.user.clone());
            state.grades.insert(key, (g.grade().map(str::to_owned), g.paid));
        }
        Ok(())
    }

    async fn rewards_given(
        &self,
        _: &mut (),
        work: &PartitionWork,
        users: &[GradedUser],
    ) -> Result<HashSet<(UserId, RewardKind)>, TxError> {
        let state = self.state.lock().unwrap();
        let wanted: HashSet<&UserId> = users.iter().map(|u| &u.user).collect();
        Ok(state
            .rewards
            .keys()
            .filter(|(p, m, u, _)| *p == work.partner && *m == work.month && wanted.contains(u))
            .map(|(_, _, u, k)| (u.clone(), *k))
            .collect())
    }

    async fn record_rewards(
        &self,
        _: &mut (),
        work: &PartitionWork,
        rewards: &[RewardRecord],
        _: DateTime<Utc>,
    ) -> Result<(), TxError> {
        let mut state = self.state.lock().unwrap();
        for r in rewards {
            let key = (work.partner.clone(), work.month, r.due.user.clone(), r.due.grant.kind());
            if state.rewards.insert(key, r.clone()).is_some() {
                return Err(TxError::Conflict("a reward recorded twice".into()));
            }
        }
        Ok(())
    }

    async fn count_step(
        &self,
        _: &mut (),
        task: PartitionTask,
        count: ChunkCount,
        last: Option<u64>,
        now: DateTime<Utc>,
    ) -> Result<(), TxError> {
        let mut state = self.state.lock().unwrap();
        let Some(step) = state.steps.get_mut(&(task.run_id, task.partition)) else {
            return Ok(());
        };
        step.1 += count.granted;
        let Some(users) = last.filter(|_| !step.2) else {
            return Ok(());
        };
        step.0 = users;
        step.2 = true;
        let granted = step.1;
        if let Some((run, _)) = state.runs.get_mut(&task.run_id) {
            run.partitions_done += 1;
            run.users_graded += users;
            run.rewards_granted += granted;
            if run.partitions_done >= run.partitions_total {
                run.status = RunStatus::Done;
                run.finished_at = Some(now);
                run.duration_ms = Some((now - run.started_at).num_milliseconds().max(0) as u64);
            }
        }
        Ok(())
    }
}

/// A grading queue that keeps what it is sent.
#[derive(Default)]
pub struct MemoryPartitionQueue {
    pub sent: Mutex<Vec<PartitionTask>>,
}

#[async_trait]
impl PartitionQueue for MemoryPartitionQueue {
    async fn send_partitions(&self, tasks: &[PartitionTask]) -> Result<(), Unavailable> {
        self.sent.lock().unwrap().extend_from_slice(tasks);
        Ok(())
    }
}

impl MemoryPartitionQueue {
    /// Takes every message sent so far.
    pub fn drain(&self) -> Vec<PartitionTask> {
        std::mem::take(&mut *self.sent.lock().unwrap())
    }
}

/// How many coupons the in-memory catalog granted per campaign (for assertions).
pub fn granted_coupons(catalog: &MemoryCatalog) -> HashMap<u64, usize> {
    let mut counts = HashMap::new();
    for ((campaign, _), outcome) in catalog.outcomes.lock().unwrap().iter() {
        if matches!(outcome, crate::issuance::domain::Outcome::Issued { .. }) {
            *counts.entry(*campaign).or_default() += 1;
        }
    }
    counts
}
