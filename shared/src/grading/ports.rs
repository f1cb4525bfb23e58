use async_trait::async_trait;

use super::domain::{Month, Order, PartitionSummary, PartitionTask, Policy, Run, RunId, UserGrade};
use super::error::GradingError;
use crate::kernel::Unavailable;

/// What recording a call's orders did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OrdersRecorded {
    pub recorded: usize,
    /// Sent before with the same content: nothing changed.
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
    /// Records new orders; an order id already there with the same content is unchanged, with
    /// other content `OrderConflict` (and nothing of the call is recorded).
    async fn record_orders(&self, partner: &str, orders: &[Order]) -> Result<OrdersRecorded, GradingError>;

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

    /// Grades one partition: aggregates its users' paid orders of the run's month, writes grades
    /// and rewards in short chunks, and marks the step done with the last chunk. A done step is
    /// skipped; a half-done one resumes without granting anything twice.
    async fn grade_partition(&self, task: PartitionTask) -> Result<PartitionSummary, GradingError>;

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

/// The grading queue: one message per partition.
#[async_trait]
pub trait PartitionQueue: Send + Sync {
    async fn send_partitions(&self, tasks: &[PartitionTask]) -> Result<(), Unavailable>;
}
