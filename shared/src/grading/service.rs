//! The grading use cases: record orders, set the policy, start (plan) a run, grade a partition,
//! read a run and a user's grade.

use super::domain::{
    DEFAULT_PARTITIONS, MAX_ORDERS_PER_CALL, Month, Order, OrderInput, PartitionSummary, PartitionTask, Policy, Run,
    RunId, UserGrade,
};
use super::error::GradingError;
use super::ports::{GradingRecords, OrdersRecorded, PartitionQueue};
use crate::kernel::UserId;

pub struct GradingService<R, Q> {
    records: R,
    queue: Q,
    partitions: u32,
}

impl<R: GradingRecords, Q: PartitionQueue> GradingService<R, Q> {
    pub fn new(records: R, queue: Q) -> Self {
        Self {
            records,
            queue,
            partitions: DEFAULT_PARTITIONS,
        }
    }

    /// Partitions per run (1 to [`super::domain::BUCKETS`]).
    pub fn with_partitions(mut self, partitions: u32) -> Self {
        self.partitions = partitions.clamp(1, super::domain::BUCKETS);
        self
    }

    pub fn records(&self) -> &R {
        &self.records
    }

    pub async fn record_orders(&self, partner: &str, inputs: Vec<OrderInput>) -> Result<OrdersRecorded, GradingError> {
        if inputs.len() > MAX_ORDERS_PER_CALL {
            return Err(GradingError::TooManyOrders(MAX_ORDERS_PER_CALL));
        }
        if inputs.is_empty() {
            return Err(crate::kernel::InvalidField::new("orders", "at least one order").into());
        }
        let orders: Vec<Order> = inputs
            .into_iter()
            .enumerate()
            .map(|(i, o)| o.validate(i))
            .collect::<Result<_, _>>()
            .map_err(GradingError::InvalidOrder)?;
        // One id twice in one call with different content is a conflict within the call.
        let mut seen = std::collections::HashMap::new();
        for o in &orders {
            if let Some(previous) = seen.insert(o.order_id.as_str(), o)
                && previous != o
            {
                return Err(GradingError::OrderConflict(o.order_id.clone()));
            }
        }
        self.records.record_orders(partner, &orders).await
    }

    pub async fn set_policy(&self, partner: &str, policy: Policy) -> Result<Policy, GradingError> {
        let policy = policy.validate()?;
        self.records.set_policy(partner, &policy).await?;
        Ok(policy)
    }

    /// The run of (partner, month): created and dispatched (one message per partition) if new; an
    /// existing run is returned as it is, and dispatched again if its planner never finished
    /// sending (a worker skips partitions already done).
    pub async fn start_run(&self, partner: &str, month: Month) -> Result<Run, GradingError> {
        let policy = self.records.policy(partner).await?.ok_or(GradingError::NoPolicy)?;
        let planned = self.records.plan_run(partner, month, self.partitions, &policy).await?;
        let mut run = planned.run;
        if !run.dispatched {
            let pending = self.records.pending_partitions(run.run_id).await?;
            let tasks: Vec<PartitionTask> = pending
                .into_iter()
                .map(|partition| PartitionTask {
                    run_id: run.run_id,
                    partition,
                })
                .collect();
            self.queue.send_partitions(&tasks).await?;
            self.records.mark_dispatched(run.run_id).await?;
            run.dispatched = true;
            tracing::info!(run = run.run_id, %month, partitions = tasks.len(), created = planned.created, "grading run dispatched");
        }
        Ok(run)
    }

    /// Starts the previous month's run for every partner with a policy (the monthly schedule).
    pub async fn start_previous_month(&self, now: chrono::DateTime<chrono::Utc>) -> Result<Vec<Run>, GradingError> {
        let month = Month::of(now).previous();
        let mut runs = Vec::new();
        for partner in self.records.partners_with_policy().await? {
            runs.push(self.start_run(&partner, month).await?);
        }
        Ok(runs)
    }

    pub async fn grade_partition(&self, task: PartitionTask) -> Result<PartitionSummary, GradingError> {
        self.records.grade_partition(task).await
    }

    pub async fn run(&self, partner: &str, run: RunId) -> Result<Run, GradingError> {
        self.records.run(partner, run).await?.ok_or(GradingError::RunNotFound)
    }

    /// Never waits for a running batch: committed grades only. `None` month: the last month a
    /// run of the partner finished. A user without paid orders in it has no grade (`grade` null).
    pub async fn user_grade(
        &self,
        partner: &str,
        user: UserId,
        month: Option<Month>,
    ) -> Result<UserGrade, GradingError> {
        self.records
            .user_grade(partner, user.as_str(), month)
            .await?
            .ok_or(GradingError::NoFinishedRun)
    }
}
