//! One chunk of a partition, written in one transaction of the records: the users' grades, then
//! the rewards they are owed and not given yet, granted through the contexts that own them
//! (coupons by issuance, points by the points ledger) inside the same transaction, then each
//! reward's record and the step's counters. Generic over the transaction, so the MySQL records
//! and the in-memory fake run this same sequence.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::domain::{
    ChunkCount, GradedUser, Grant, PartitionTask, PartitionWork, RewardDue, RewardOutcome, RewardRecord, rewards_due,
};
use super::ports::ChunkTables;
use crate::issuance::ports::RewardCoupons;
use crate::kernel::{TxError, UserId};
use crate::points::ports::{PointGrant, PointGrants};

/// The stores a chunk writes through, all inside one transaction `Tx`.
pub struct ChunkStores<'a, G, C, P> {
    pub grading: &'a G,
    pub coupons: &'a C,
    pub points: &'a P,
}

/// Writes `users` (sorted by user id) of `task`; `last`: the partition's user count, with its last
/// chunk. Coupons are granted campaign by campaign in id order, points wallet by wallet in user
/// order: the global orders every writer of those rows keeps.
pub async fn write_chunk<Tx, G, C, P>(
    tx: &mut Tx,
    stores: &ChunkStores<'_, G, C, P>,
    task: PartitionTask,
    work: &PartitionWork,
    users: &[GradedUser],
    last: Option<u64>,
    now: DateTime<Utc>,
) -> Result<ChunkCount, TxError>
where
    Tx: Send,
    G: ChunkTables<Tx>,
    C: RewardCoupons<Tx>,
    P: PointGrants<Tx>,
{
    stores.grading.record_grades(tx, task, work, users, now).await?;
    let mut records = Vec::new();
    if users.iter().any(|u| u.tier.is_some()) {
        let given = stores.grading.rewards_given(tx, work, users).await?;
        let due = rewards_due(users, &given);
        let mut by_campaign: BTreeMap<u64, Vec<&RewardDue>> = BTreeMap::new();
        let mut points: Vec<(&RewardDue, u64)> = Vec::new();
        for reward in &due {
            match reward.grant {
                Grant::Coupon(campaign) => by_campaign.entry(campaign).or_default().push(reward),
                Grant::Points(amount) => points.push((reward, amount)),
            }
        }
        for (campaign, owed) in by_campaign {
            let winners: Vec<UserId> = owed.iter().map(|r| r.user.clone()).collect();
            let grants = stores
                .coupons
                .grant_coupons(tx, &work.partner, campaign, &winners, now)
                .await?;
            records.extend(owed.into_iter().zip(grants).map(|(reward, grant)| RewardRecord {
                due: reward.clone(),
                outcome: grant,
                reference: Some(campaign),
            }));
        }
        points.sort_by(|a, b| a.0.user.cmp(&b.0.user));
        let expires_at = now + chrono::Duration::days(i64::from(work.validity_days));
        let grants: Vec<PointGrant> = points
            .iter()
            .map(|(reward, amount)| PointGrant {
                user: reward.user.clone(),
                key: PartitionWork::points_key(task.run_id, &reward.user),
                amount: *amount,
                reason: work.points_reason(&reward.grade),
                expires_at,
            })
            .collect();
        let entries = stores.points.grant_points(tx, &work.partner, &grants, now).await?;
        records.extend(
            points
                .into_iter()
                .zip(entries)
                .map(|((reward, _), entry)| RewardRecord {
                    due: reward.clone(),
                    outcome: RewardOutcome::Granted,
                    reference: Some(entry),
                }),
        );
        stores.grading.record_rewards(tx, work, &records, now).await?;
    }
    let count = ChunkCount::of(&records);
    stores.grading.count_step(tx, task, count, last, now).await?;
    Ok(count)
}
