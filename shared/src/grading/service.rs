//! The grading use cases: record orders, set the policy, start (plan) a run, grade a partition,
//! read a run and a user's grade.

use super::domain::{
    CHUNK_USERS, DEFAULT_PARTITIONS, GradedUser, MAX_ORDERS_PER_CALL, Month, Order, OrderInput, PartitionSummary,
    PartitionTask, Policy, Run, RunId, RunStatus, UserGrade, grade_users, partition_buckets,
};
use super::error::GradingError;
use super::ports::{GradingRecords, OrdersRecorded, PartitionQueue};
use std::sync::Arc;

use crate::kernel::{Clock, SystemClock, UserId};
use crate::partners::ports::{DefaultLimits, PartnerLimitStore};

pub struct GradingService<R, Q> {
    records: R,
    queue: Q,
    partitions: u32,
    /// The partners context's port: how many orders a month each partner may record.
    limits: Arc<dyn PartnerLimitStore>,
    clock: Arc<dyn Clock>,
}

impl<R: GradingRecords, Q: PartitionQueue> GradingService<R, Q> {
    /// Every partner with the default limits until `with_limits` names their store.
    pub fn new(records: R, queue: Q) -> Self {
        Self {
            records,
            queue,
            partitions: DEFAULT_PARTITIONS,
            limits: Arc::new(DefaultLimits),
            clock: Arc::new(SystemClock),
        }
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn with_limits(mut self, limits: Arc<dyn PartnerLimitStore>) -> Self {
        self.limits = limits;
        self
    }

    /// Partitions per run (1 to [`super::domain::BUCKETS`]).
    pub fn with_partitions(mut self, partitions: u32) -> Self {
        self.partitions = partitions.clamp(1, super::domain::BUCKETS);
        self
    }

    pub fn records(&self) -> &R {
        &self.records
    }

    pub fn queue(&self) -> &Q {
        &self.queue
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
        let max_per_month = self.limits.limits(partner).await?.orders_per_month;
        self.records.record_orders(partner, &orders, max_per_month).await
    }

    /// The partner's policy as it was set (`PolicyNotSet` before the first).
    pub async fn policy(&self, partner: &str) -> Result<Policy, GradingError> {
        self.records.policy(partner).await?.ok_or(GradingError::PolicyNotSet)
    }

    pub async fn set_policy(&self, partner: &str, policy: Policy) -> Result<Policy, GradingError> {
        let policy = policy.validate()?;
        self.records.set_policy(partner, &policy).await?;
        Ok(policy)
    }

    /// The run of (partner, month): created and dispatched (one message per partition) if new.
    /// Asked again, a run not done sends every partition not done again: one whose planner died
    /// before sending, or whose message ended in the grading DLQ, would otherwise never finish. A
    /// worker skips a done partition and resumes a half-done one without granting twice, so a
    /// partition still in flight loses nothing by a second message.
    /// `MonthNotEnded` for a month not over yet: a run is final, and the month's orders (and their
    /// refunds) are not all in before its end.
    pub async fn start_run(&self, partner: &str, month: Month) -> Result<Run, GradingError> {
        if !month.has_ended(self.clock.now()) {
            return Err(GradingError::MonthNotEnded(month));
        }
        let policy = self.records.policy(partner).await?.ok_or(GradingError::NoPolicy)?;
        let planned = self.records.plan_run(partner, month, self.partitions, &policy).await?;
        let mut run = planned.run;
        if run.status != RunStatus::Done {
            run.pending_partitions = self.records.pending_partitions(run.run_id).await?;
            let tasks: Vec<PartitionTask> = run
                .pending_partitions
                .iter()
                .map(|&partition| PartitionTask {
                    run_id: run.run_id,
                    partition,
                })
                .collect();
            self.queue.send_partitions(&tasks).await?;
            if !run.dispatched {
                self.records.mark_dispatched(run.run_id).await?;
                run.dispatched = true;
            }
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

    /// Grades one partition: its users' paid totals of the run's month (one aggregate), their
    /// tiers, then chunks of `CHUNK_USERS` users written in one short transaction each; the last
    /// chunk marks the step done. A done step is skipped; a half-done one resumes without
    /// granting anything twice (a chunk grants only what its users were not given yet).
    pub async fn grade_partition(&self, task: PartitionTask) -> Result<PartitionSummary, GradingError> {
        let skipped = PartitionSummary {
            skipped: true,
            ..PartitionSummary::default()
        };
        let Some(work) = self.records.partition(task).await? else {
            tracing::warn!(
                run = task.run_id,
                partition = task.partition,
                "no such run or step: message dropped"
            );
            return Ok(skipped);
        };
        if work.done {
            return Ok(skipped);
        }
        let buckets = partition_buckets(task.partition, work.partitions);
        let graded = grade_users(self.records.paid_totals(&work, buckets).await?, &work.policy);
        let mut summary = PartitionSummary {
            users_graded: graded.len() as u64,
            ..PartitionSummary::default()
        };
        // An empty partition still has its one (empty) chunk: it marks the step done.
        let chunks: Vec<&[GradedUser]> = if graded.is_empty() {
            vec![&[]]
        } else {
            graded.chunks(CHUNK_USERS).collect()
        };
        let count = chunks.len();
        for (i, chunk) in chunks.into_iter().enumerate() {
            let last = (i + 1 == count).then_some(summary.users_graded);
            let written = self.records.record_chunk(task, &work, chunk, last).await?;
            summary.rewards_granted += written.granted;
            summary.coupons_refused += written.refused;
            summary.chunks += 1;
        }
        Ok(summary)
    }

    pub async fn run(&self, partner: &str, run: RunId) -> Result<Run, GradingError> {
        let mut run = self.records.run(partner, run).await?.ok_or(GradingError::RunNotFound)?;
        if run.status != RunStatus::Done {
            run.pending_partitions = self.records.pending_partitions(run.run_id).await?;
        }
        Ok(run)
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::{Duration, Utc};

    use super::*;
    use crate::grading::domain::{OrderStatus, RewardOutcome, Tier};
    use crate::issuance::domain::CampaignKind;
    use crate::issuance::ports::CampaignCatalog;
    use crate::points::domain::{HistoryQuery, Movement};
    use crate::points::ports::PointRecords;
    use crate::testkit::{
        MemoryCatalog, MemoryGrading, MemoryPartitionQueue, MemoryPoints, granted_coupons, new_campaign,
    };

    struct World {
        grading: GradingService<MemoryGrading, MemoryPartitionQueue>,
        month: Month,
    }

    impl World {
        fn new(partitions: u32) -> Self {
            let records = MemoryGrading::new(Arc::new(MemoryCatalog::default()), Arc::new(MemoryPoints::default()));
            let grading = GradingService::new(records, MemoryPartitionQueue::default()).with_partitions(partitions);
            Self {
                grading,
                month: Month::of(Utc::now()).previous(),
            }
        }

        fn records(&self) -> &MemoryGrading {
            self.grading.records()
        }

        async fn campaign(&self, partner: &str, kind: CampaignKind, quantity: u32) -> u64 {
            let mut campaign = new_campaign(quantity, Utc::now() - Duration::hours(2));
            campaign.kind = kind;
            self.records()
                .catalog
                .create(partner, &campaign, u32::MAX)
                .await
                .unwrap()
                .id
        }

        async fn orders(&self, partner: &str, paid: &[(&str, u64)]) {
            let at = self.month.start() + Duration::days(3);
            let orders = paid
                .iter()
                .enumerate()
                .map(|(i, (user, amount))| OrderInput {
                    order_id: format!("o{i}"),
                    user_id: (*user).into(),
                    amount: *amount,
                    status: OrderStatus::Paid,
                    ordered_at: at,
                    status_changed_at: None,
                })
                .collect();
            self.grading.record_orders(partner, orders).await.unwrap();
        }

        /// Grades every partition sent, as the workers would.
        async fn work(&self) -> u64 {
            let mut granted = 0;
            for task in self.grading.queue().drain() {
                granted += self.grading.grade_partition(task).await.unwrap().rewards_granted;
            }
            granted
        }
    }

    fn tier(grade: &str, min: u64, campaign: Option<u64>, points: Option<u64>) -> Tier {
        Tier {
            grade: grade.into(),
            min_amount: min,
            coupon_campaign_id: campaign,
            points,
        }
    }

    #[tokio::test]
    async fn a_month_is_graded_once_it_has_ended_and_refunds_do_not_count() {
        let world = World::new(2);
        world
            .grading
            .set_policy(
                "p",
                Policy {
                    tiers: vec![tier("GOLD", 1_000, None, None), tier("BASIC", 0, None, None)],
                },
            )
            .await
            .unwrap();
        assert_eq!(world.grading.policy("p").await.unwrap().tiers[0].grade, "GOLD");
        assert!(matches!(
            world.grading.policy("q").await,
            Err(GradingError::PolicyNotSet)
        ));
        let current = Month::of(Utc::now());
        assert!(matches!(
            world.grading.start_run("p", current).await,
            Err(GradingError::MonthNotEnded(m)) if m == current
        ));
        assert!(matches!(
            world.grading.start_run("p", current.next()).await,
            Err(GradingError::MonthNotEnded(_))
        ));

        world.orders("p", &[("a", 1_500), ("b", 1_200)]).await;
        // b's order is refunded; the payment sent again afterwards (a retry) changes nothing.
        let at = world.month.start() + Duration::days(3);
        let order = |status, changed| OrderInput {
            order_id: "o1".into(),
            user_id: "b".into(),
            amount: 1_200,
            status,
            ordered_at: at,
            status_changed_at: changed,
        };
        let refund = order(OrderStatus::Refunded, Some(at + Duration::days(9)));
        let recorded = world.grading.record_orders("p", vec![refund.clone()]).await.unwrap();
        assert_eq!((recorded.updated, recorded.unchanged), (1, 0));
        for resent in [refund, order(OrderStatus::Paid, None)] {
            let again = world.grading.record_orders("p", vec![resent]).await.unwrap();
            assert_eq!((again.recorded, again.updated, again.unchanged), (0, 0, 1));
        }
        let undo = order(OrderStatus::Paid, Some(at + Duration::days(10)));
        assert!(matches!(
            world.grading.record_orders("p", vec![undo]).await,
            Err(GradingError::OrderConflict(id)) if id == "o1"
        ));

        let run = world.grading.start_run("p", world.month).await.unwrap();
        world.work().await;
        assert_eq!(
            world.grading.run("p", run.run_id).await.unwrap().status,
            RunStatus::Done
        );
        let month = Some(world.month);
        let a = world
            .grading
            .user_grade("p", UserId::parse("a").unwrap(), month)
            .await
            .unwrap();
        let b = world
            .grading
            .user_grade("p", UserId::parse("b").unwrap(), month)
            .await
            .unwrap();
        assert_eq!(a.grade.as_deref(), Some("GOLD"));
        assert_ne!(
            b.grade.as_deref(),
            Some("GOLD"),
            "the refunded order is not counted: {b:?}"
        );
    }

    #[tokio::test]
    async fn a_policy_rewards_only_from_the_partners_reward_campaigns() {
        let world = World::new(4);
        let sale = world.campaign("p", CampaignKind::Sale, 10).await;
        let reward = world.campaign("p", CampaignKind::Reward, 10).await;
        let theirs = world.campaign("q", CampaignKind::Reward, 10).await;
        let policy = |campaign| Policy {
            tiers: vec![tier("VIP", 100, Some(campaign), None)],
        };
        assert!(matches!(
            world.grading.set_policy("p", policy(sale)).await,
            Err(GradingError::NotRewardCampaign { campaign_id, .. }) if campaign_id == sale
        ));
        assert!(matches!(
            world.grading.set_policy("p", policy(theirs)).await,
            Err(GradingError::UnknownCampaign { .. })
        ));
        assert!(world.grading.set_policy("p", policy(reward)).await.is_ok());
    }

    #[tokio::test]
    async fn rewards_go_through_issuance_and_the_points_ledger_once_each() {
        let world = World::new(4);
        let reward = world.campaign("p", CampaignKind::Reward, 2).await;
        let policy = Policy {
            tiers: vec![
                tier("VIP", 1_000, Some(reward), Some(50)),
                tier("SILVER", 100, None, Some(5)),
            ],
        };
        world.grading.set_policy("p", policy).await.unwrap();
        world
            .orders("p", &[("a", 2_000), ("b", 1_500), ("c", 1_000), ("d", 150), ("e", 10)])
            .await;
        let run = world.grading.start_run("p", world.month).await.unwrap();
        assert_eq!(run.pending_partitions, [0, 1, 2, 3]);
        // Three VIP coupons due, two places: one refused; four points rewards.
        assert_eq!(world.work().await, 2 + 4);
        let run = world.grading.run("p", run.run_id).await.unwrap();
        assert_eq!(
            (run.status, run.users_graded, run.rewards_granted),
            (RunStatus::Done, 5, 6)
        );
        assert!(run.pending_partitions.is_empty());
        assert_eq!(granted_coupons(&world.records().catalog)[&reward], 2);
        let outcomes: Vec<RewardOutcome> = world
            .records()
            .rewards("p", world.month)
            .iter()
            .map(|r| r.outcome)
            .collect();
        assert_eq!(outcomes.iter().filter(|o| **o == RewardOutcome::SoldOut).count(), 1);
        // Each VIP's grade read lists both rewards, the coupon granted or refused.
        let mut coupon_outcomes = Vec::new();
        for user in ["a", "b", "c"] {
            let grade = world
                .grading
                .user_grade("p", UserId::parse(user).unwrap(), Some(world.month))
                .await
                .unwrap();
            let kinds: Vec<&str> = grade.rewards.iter().map(|r| r.kind).collect();
            assert_eq!(kinds, ["COUPON", "POINTS"], "{grade:?}");
            assert_eq!(grade.rewards[0].campaign_id, Some(reward));
            assert_eq!(
                (grade.rewards[1].points, grade.rewards[1].outcome.as_str()),
                (Some(50), "GRANTED")
            );
            assert!(grade.rewards[1].transaction_id.is_some(), "the EARN entry: {grade:?}");
            coupon_outcomes.push(grade.rewards[0].outcome.clone());
        }
        coupon_outcomes.sort();
        assert_eq!(coupon_outcomes, ["GRANTED", "GRANTED", "SOLD_OUT"]);
        // Points are the ledger's EARNs, with its history.
        let a = UserId::parse("a").unwrap();
        let history = world
            .records()
            .points
            .history(
                "p",
                &a,
                &HistoryQuery {
                    limit: 10,
                    before: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!((history[0].movement, history[0].amount), (Movement::Earn, 50));
        assert_eq!(
            history[0].reason.as_deref(),
            Some(format!("grade VIP for {}", world.month).as_str())
        );
        // A partition graded again (its message redelivered after a crash) grants nothing again.
        for p in 0..4 {
            let task = PartitionTask {
                run_id: run.run_id,
                partition: p,
            };
            world.records().reopen_step(task);
            world.grading.grade_partition(task).await.unwrap();
        }
        assert_eq!(granted_coupons(&world.records().catalog)[&reward], 2);
        let history = world
            .records()
            .points
            .history(
                "p",
                &a,
                &HistoryQuery {
                    limit: 10,
                    before: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(history.len(), 1, "one EARN per run and user");
    }

    #[tokio::test]
    async fn a_run_asked_again_sends_every_partition_not_done_until_it_is_done() {
        let world = World::new(3);
        world
            .grading
            .set_policy(
                "p",
                Policy {
                    tiers: vec![tier("ANY", 1, None, Some(1))],
                },
            )
            .await
            .unwrap();
        world.orders("p", &[("a", 5), ("b", 5), ("c", 5), ("d", 5)]).await;
        let run = world.grading.start_run("p", world.month).await.unwrap();
        // One partition's message is lost (it went to the DLQ): the others are graded.
        let mut sent = world.grading.queue().drain();
        let lost = sent.remove(1);
        for task in sent {
            world.grading.grade_partition(task).await.unwrap();
        }
        let stuck = world.grading.run("p", run.run_id).await.unwrap();
        assert_eq!(
            (stuck.status, stuck.pending_partitions.clone()),
            (RunStatus::Running, vec![lost.partition])
        );
        let again = world.grading.start_run("p", world.month).await.unwrap();
        assert_eq!(
            (again.run_id, again.pending_partitions.clone()),
            (run.run_id, vec![lost.partition])
        );
        assert_eq!(world.grading.queue().drain(), [lost]);
        world.grading.grade_partition(lost).await.unwrap();
        let done = world.grading.run("p", run.run_id).await.unwrap();
        assert_eq!(
            (done.status, done.users_graded, done.rewards_granted),
            (RunStatus::Done, 4, 4)
        );
        // A done run is answered as it is, and sends nothing.
        world.grading.start_run("p", world.month).await.unwrap();
        assert!(world.grading.queue().drain().is_empty());
    }

    #[tokio::test]
    async fn orders_past_the_partners_month_limit_are_refused_whole() {
        use crate::partners::domain::{Limit, LimitOverrides};
        let limits = Arc::new(crate::testkit::MemoryPartnerLimits::default());
        let five = LimitOverrides {
            orders_per_month: Some(5),
            ..LimitOverrides::default()
        };
        limits.set_overrides("p", five).await.unwrap();
        let world = World::new(4);
        let grading = GradingService::new(world.grading.records, MemoryPartitionQueue::default()).with_limits(limits);
        let at = world.month.start() + Duration::days(1);
        let orders = |ids: std::ops::Range<u32>| -> Vec<OrderInput> {
            ids.map(|i| OrderInput {
                status_changed_at: None,
                order_id: format!("o{i}"),
                user_id: "u".into(),
                amount: 1,
                status: OrderStatus::Paid,
                ordered_at: at,
            })
            .collect()
        };
        assert_eq!(grading.record_orders("p", orders(0..4)).await.unwrap().recorded, 4);
        match grading.record_orders("p", orders(2..6)).await {
            Err(GradingError::LimitExceeded(e)) => assert_eq!((e.limit, e.would_be), (Limit::OrdersPerMonth, 6)),
            other => panic!("refused, not {other:?}"),
        }
        let resent = grading.record_orders("p", orders(0..5)).await.unwrap();
        assert_eq!(
            (resent.recorded, resent.unchanged),
            (1, 4),
            "the refused call recorded nothing"
        );
        assert_eq!(grading.record_orders("q", orders(0..10)).await.unwrap().recorded, 10);
    }
}
