use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::domain::{
    ChunkCount, GradedUser, Month, Order, PartitionTask, PartitionWork, Policy, RewardKind, RewardRecord, Run, RunId,
    UserGrade,
};
use super::error::GradingError;
use crate::kernel::{TxError, Unavailable, UserId};

/// What recording a call's orders did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OrdersRecorded {
    pub recorded: usize,
    /// Recorded before and now cancelled or refunded (`Order::change_from`: `Apply`).
    pub updated: usize,
    /// Sent before with the same status, or a status older than the recorded one: nothing changed.
    pub unchanged: usize,
}

/// A run as the planner finds or creates it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRun {
    pub run: Run,
    /// Created by this call (not an earlier request for the month).
    pub created: bool,
}

#[async_trait]
pub trait GradingRecords: Send + Sync {
    /// Records new orders and the status changes of recorded ones, each as `Order::change_from`
    /// decides against what is recorded under its id; one `Conflict` is `OrderConflict` (and
    /// nothing of the call is recorded). `LimitExceeded` (and
    /// nothing recorded) when a month would then hold more than `max_per_month` of the partner's
    /// orders (`partners::domain::admit` decides).
    async fn record_orders(
        &self,
        partner: &str,
        orders: &[Order],
        max_per_month: u64,
    ) -> Result<OrdersRecorded, GradingError>;

    /// `UnknownCampaign` if a tier's campaign is not the partner's.
    async fn set_policy(&self, partner: &str, policy: &Policy) -> Result<(), GradingError>;
    async fn policy(&self, partner: &str) -> Result<Option<Policy>, Unavailable>;
    /// Partners with a policy (the monthly schedule).
    async fn partners_with_policy(&self) -> Result<Vec<String>, Unavailable>;

    /// The run of (partner, month), created with its `partitions` steps and a copy of the
    /// policy if there is none yet (one run per partner and month, whoever asks first).
    async fn plan_run(
        &self,
        partner: &str,
        month: Month,
        partitions: u32,
        policy: &Policy,
    ) -> Result<PlannedRun, Unavailable>;
    /// The partitions of a run whose steps are not done.
    async fn pending_partitions(&self, run: RunId) -> Result<Vec<u32>, Unavailable>;
    async fn mark_dispatched(&self, run: RunId) -> Result<(), Unavailable>;
    async fn run(&self, partner: &str, run: RunId) -> Result<Option<Run>, Unavailable>;

    /// What grading `task` needs of its run and step; `None` for an unknown run or step.
    async fn partition(&self, task: PartitionTask) -> Result<Option<PartitionWork>, Unavailable>;

    /// Each user's paid total in the run's month, over the buckets `[first, last]`, in user order:
    /// a consistent read, no locks.
    async fn paid_totals(&self, work: &PartitionWork, buckets: (u32, u32)) -> Result<Vec<(UserId, u64)>, Unavailable>;

    /// Records one chunk of graded users in one short transaction (`grading::chunk::write_chunk`),
    /// started over after a conflict; `last`: the partition's user count, with its last chunk,
    /// which marks the step done.
    async fn record_chunk(
        &self,
        task: PartitionTask,
        work: &PartitionWork,
        users: &[GradedUser],
        last: Option<u64>,
    ) -> Result<ChunkCount, GradingError>;

    /// The user's grade for `month`, or for the last month a run of the partner finished (grade
    /// `None` and paid 0 for a user without paid orders in it); `None` only without a month and
    /// before any run finished.
    async fn user_grade(
        &self,
        partner: &str,
        user: &str,
        month: Option<Month>,
    ) -> Result<Option<UserGrade>, Unavailable>;
}

/// Grading's own tables as a chunk writes them, inside its transaction `Tx`.
#[async_trait]
pub trait ChunkTables<Tx: Send>: Send + Sync {
    /// The users' grades for the run's month, replacing an earlier run's.
    async fn record_grades(
        &self,
        tx: &mut Tx,
        task: PartitionTask,
        work: &PartitionWork,
        users: &[GradedUser],
        now: DateTime<Utc>,
    ) -> Result<(), TxError>;

    /// The rewards of the month already recorded for `users`.
    async fn rewards_given(
        &self,
        tx: &mut Tx,
        work: &PartitionWork,
        users: &[GradedUser],
    ) -> Result<HashSet<(UserId, RewardKind)>, TxError>;

    /// One record per user and kind: a second for the same is a conflict (the chunk starts over).
    async fn record_rewards(
        &self,
        tx: &mut Tx,
        work: &PartitionWork,
        rewards: &[RewardRecord],
        now: DateTime<Utc>,
    ) -> Result<(), TxError>;

    /// Adds the chunk to its step; `last` (the partition's user count) marks the step done and
    /// adds it to the run, which is done with its last step.
    async fn count_step(
        &self,
        tx: &mut Tx,
        task: PartitionTask,
        count: ChunkCount,
        last: Option<u64>,
        now: DateTime<Utc>,
    ) -> Result<(), TxError>;
}

/// The grading queue: one message per partition.
#[async_trait]
pub trait PartitionQueue: Send + Sync {
    async fn send_partitions(&self, tasks: &[PartitionTask]) -> Result<(), Unavailable>;
}
