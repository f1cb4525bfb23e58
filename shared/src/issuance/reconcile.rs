//! Reconcile, as a pure comparison: what Redis holds for a campaign (places, counter, pending,
//! written outcomes) against what MySQL recorded (coupons, rejections, counters). Each difference
//! says whether it is safe to repair without knowing what is still in flight; `fcfs-admin
//! reconcile --repair` applies only those.

use std::collections::{HashMap, HashSet};

use super::domain::{Outcome, RejectionReason};

/// The campaign as Redis holds it.
#[derive(Debug, Default, Clone)]
pub struct LedgerView {
    pub has_rules: bool,
    pub count: u64,
    /// user → request holding the place ("restored" for places rebuilt from MySQL).
    pub holders: HashMap<String, String>,
    /// Users of places whose message is not known to be sent.
    pub pending: HashSet<String>,
    pub outcomes: HashMap<String, Outcome>,
}

/// The campaign as MySQL recorded it.
#[derive(Debug, Default, Clone)]
pub struct RecordView {
    /// A `REWARD` campaign is never on sale: Redis holds its rules only, and its coupons (granted
    /// by grading) have no place there.
    pub on_sale: bool,
    pub quantity: u64,
    pub issued_count: u64,
    pub rejected_count: u64,
    /// user → coupon id.
    pub coupons: HashMap<String, u64>,
    pub rejections: HashMap<String, RejectionReason>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// Redis holds state for a campaign MySQL does not have (a create whose priming failed
    /// half-way and whose clean-up failed too): its rules would accept requests for nothing.
    /// Repair: remove it from Redis.
    StateWithoutCampaign,
    /// Redis has no rules for the campaign: nothing can be issued. Repair: prime them from MySQL.
    RulesMissing,
    /// MySQL's counters disagree with its rows. Repair: recount under the counter row's lock.
    CountersOff {
        issued_count: u64,
        coupons: u64,
        rejected_count: u64,
        rejections: u64,
    },
    /// Users with a coupon whom Redis does not hold (Redis lost them, e.g. in a failover): they
    /// could be sold a second place. Repair: hold them.
    CouponsNotHeld { users: Vec<String> },
    /// Users with a coupon whose outcome Redis does not know (status falls back to MySQL).
    /// Repair: record it.
    OutcomesMissing { users: Vec<String> },
    /// Redis's counter is not its number of holders. Repair (after the holds above): set it.
    CountOff { count: u64, holders: u64 },
    /// Places held in Redis with no coupon, no rejection and no pending record: their message is
    /// on the queue, in the DLQ, or lost. Not repaired: with the queue and DLQ empty, they are
    /// lost places an operator may release.
    HeldWithoutRecord { users: Vec<String> },
    /// More coupons than the quantity. Never repaired automatically (coupons may be in use).
    OverIssued { coupons: u64, quantity: u64 },
}

impl Difference {
    pub fn repairable(&self) -> bool {
        !matches!(self, Self::HeldWithoutRecord { .. } | Self::OverIssued { .. })
    }
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let some = |users: &[String]| {
            let shown: Vec<&str> = users.iter().take(5).map(String::as_str).collect();
            let more = users.len().saturating_sub(shown.len());
            if more > 0 {
                format!("{} (and {more} more)", shown.join(", "))
            } else {
                shown.join(", ")
            }
        };
        match self {
            Self::StateWithoutCampaign => write!(
                f,
                "Redis holds state for a campaign MySQL does not have (its requests would be accepted for nothing)"
            ),
            Self::RulesMissing => write!(f, "Redis holds no issue rules"),
            Self::CountersOff {
                issued_count,
                coupons,
                rejected_count,
                rejections,
            } => write!(
                f,
                "MySQL counters off: issued_count {issued_count} for {coupons} coupons, rejected_count {rejected_count} for {rejections} rejections"
            ),
            Self::CouponsNotHeld { users } => write!(
                f,
                "{} users hold a coupon but no place in Redis: {}",
                users.len(),
                some(users)
            ),
            Self::OutcomesMissing { users } => write!(
                f,
                "{} coupons unknown to Redis's status answers: {}",
                users.len(),
                some(users)
            ),
            Self::CountOff { count, holders } => write!(f, "Redis counter {count} for {holders} holders"),
            Self::HeldWithoutRecord { users } => write!(
                f,
                "{} places held in Redis with no coupon, rejection or pending record (queued, in the DLQ, or lost): {}",
                users.len(),
                some(users)
            ),
            Self::OverIssued { coupons, quantity } => write!(f, "{coupons} coupons for a quantity of {quantity}"),
        }
    }
}

/// Every difference between the two views, in the order repairs must be applied. `record` is
/// `None` when MySQL does not hold the campaign: then anything Redis keeps of it is a leftover.
pub fn compare_with(ledger: &LedgerView, record: Option<&RecordView>) -> Vec<Difference> {
    match record {
        Some(record) => compare(ledger, record),
        None if ledger.is_empty() => Vec::new(),
        None => vec![Difference::StateWithoutCampaign],
    }
}

impl LedgerView {
    /// Redis keeps nothing of the campaign.
    pub fn is_empty(&self) -> bool {
        !self.has_rules
            && self.count == 0
            && self.holders.is_empty()
            && self.pending.is_empty()
            && self.outcomes.is_empty()
    }
}

/// Every difference between the two views, in the order repairs must be applied.
pub fn compare(ledger: &LedgerView, record: &RecordView) -> Vec<Difference> {
    let mut differences = Vec::new();
    if !ledger.has_rules {
        differences.push(Difference::RulesMissing);
    }
    let (coupons, rejections) = (record.coupons.len() as u64, record.rejections.len() as u64);
    if record.issued_count != coupons || record.rejected_count != rejections {
        differences.push(Difference::CountersOff {
            issued_count: record.issued_count,
            coupons,
            rejected_count: record.rejected_count,
            rejections,
        });
    }
    let sorted = |mut users: Vec<String>| {
        users.sort();
        users
    };
    let on_sale_coupons = || record.coupons.iter().filter(|_| record.on_sale);
    let not_held = sorted(
        on_sale_coupons()
            .map(|(u, _)| u)
            .filter(|u| !ledger.holders.contains_key(*u))
            .cloned()
            .collect(),
    );
    let holders_after = ledger.holders.len() as u64 + not_held.len() as u64;
    if !not_held.is_empty() {
        differences.push(Difference::CouponsNotHeld { users: not_held });
    }
    let unknown = sorted(
        on_sale_coupons()
            .filter(|(u, id)| ledger.outcomes.get(*u) != Some(&Outcome::Issued { coupon_id: **id }))
            .map(|(u, _)| u.clone())
            .collect(),
    );
    if !unknown.is_empty() {
        differences.push(Difference::OutcomesMissing { users: unknown });
    }
    if ledger.count != holders_after {
        differences.push(Difference::CountOff {
            count: ledger.count,
            holders: holders_after,
        });
    }
    let unrecorded = sorted(
        ledger
            .holders
            .keys()
            .filter(|u| {
                !record.coupons.contains_key(*u) && !record.rejections.contains_key(*u) && !ledger.pending.contains(*u)
            })
            .cloned()
            .collect(),
    );
    if !unrecorded.is_empty() {
        differences.push(Difference::HeldWithoutRecord { users: unrecorded });
    }
    if coupons > record.quantity {
        differences.push(Difference::OverIssued {
            coupons,
            quantity: record.quantity,
        });
    }
    differences
}

#[cfg(test)]
mod tests {
    use super::*;

    fn views() -> (LedgerView, RecordView) {
        let ledger = LedgerView {
            has_rules: true,
            count: 3,
            holders: HashMap::from([
                ("a".into(), "r1".into()),
                ("b".into(), "r2".into()),
                ("p".into(), "r3".into()),
            ]),
            pending: HashSet::from(["p".into()]),
            outcomes: HashMap::from([
                ("a".into(), Outcome::Issued { coupon_id: 1 }),
                ("b".into(), Outcome::Issued { coupon_id: 2 }),
            ]),
        };
        let record = RecordView {
            on_sale: true,
            quantity: 3,
            issued_count: 2,
            rejected_count: 0,
            coupons: HashMap::from([("a".into(), 1), ("b".into(), 2)]),
            rejections: HashMap::new(),
        };
        (ledger, record)
    }

    #[test]
    fn agreeing_views_have_no_difference() {
        let (ledger, record) = views();
        assert_eq!(compare(&ledger, &record), []);
    }

    #[test]
    fn a_lost_holder_a_wrong_counter_and_an_unrecorded_place_are_found() {
        let (mut ledger, mut record) = views();
        ledger.holders.remove("b");
        ledger.outcomes.remove("b");
        ledger.holders.insert("ghost".into(), "r9".into());
        record.issued_count = 5;
        let found = compare(&ledger, &record);
        assert_eq!(
            found,
            [
                Difference::CountersOff {
                    issued_count: 5,
                    coupons: 2,
                    rejected_count: 0,
                    rejections: 0
                },
                Difference::CouponsNotHeld {
                    users: vec!["b".into()]
                },
                Difference::OutcomesMissing {
                    users: vec!["b".into()]
                },
                Difference::CountOff { count: 3, holders: 4 },
                Difference::HeldWithoutRecord {
                    users: vec!["ghost".into()]
                },
            ]
        );
        assert!(found[..4].iter().all(Difference::repairable));
        assert!(!found[4].repairable());
    }

    #[test]
    fn a_reward_campaigns_coupons_need_no_place_in_redis() {
        let (mut ledger, mut record) = views();
        record.on_sale = false;
        ledger.holders.clear();
        ledger.pending.clear();
        ledger.outcomes.clear();
        ledger.count = 0;
        assert_eq!(compare(&ledger, &record), []);
        record.coupons.insert("c".into(), 3);
        record.coupons.insert("d".into(), 4);
        record.issued_count = 4;
        assert_eq!(
            compare(&ledger, &record),
            [Difference::OverIssued {
                coupons: 4,
                quantity: 3
            }]
        );
    }

    #[test]
    fn state_of_a_campaign_mysql_does_not_have_is_a_leftover_to_remove() {
        let (mut ledger, record) = views();
        assert_eq!(compare_with(&ledger, Some(&record)), compare(&ledger, &record));
        assert_eq!(compare_with(&ledger, None), [Difference::StateWithoutCampaign]);
        assert!(Difference::StateWithoutCampaign.repairable());
        ledger = LedgerView {
            has_rules: true,
            ..LedgerView::default()
        };
        assert_eq!(
            compare_with(&ledger, None),
            [Difference::StateWithoutCampaign],
            "rules alone accept requests"
        );
        assert_eq!(
            compare_with(&LedgerView::default(), None),
            [],
            "nothing kept, nothing to do"
        );
    }
}
