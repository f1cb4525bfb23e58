//! The points context's use cases, over its port: any trigger (HTTP, a schedule) calls these.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::domain::{
    Balance, DEFAULT_VALIDITY_DAYS, EarnPoints, Entry, HistoryQuery, IdempotencyKey, Operation, Outcome, Receipt,
    TransactionId, TransferPoints, UsePoints,
};
use super::error::PointsError;
use super::ports::{Applied, PointRecords};
use crate::kernel::{Clock, SystemClock, UserId, sweep_in_chunks};
use crate::partners::ports::{DefaultLimits, PartnerLimitStore};

pub use crate::kernel::SweepSummary;

/// A page of a wallet's history.
#[derive(Debug)]
pub struct HistoryPage {
    pub entries: Vec<Entry>,
    /// The last entry's id when more follow.
    pub next: Option<TransactionId>,
}

pub struct PointsService<R> {
    records: R,
    clock: Arc<dyn Clock>,
    default_validity_days: u32,
    /// The partners context's port: how many key records each partner may keep.
    limits: Arc<dyn PartnerLimitStore>,
}

impl<R: PointRecords> PointsService<R> {
    pub fn new(records: R) -> Self {
        Self {
            records,
            clock: Arc::new(SystemClock),
            default_validity_days: DEFAULT_VALIDITY_DAYS,
            limits: Arc::new(DefaultLimits),
        }
    }

    /// Every partner with the default limits until this names their store.
    pub fn with_limits(mut self, limits: Arc<dyn PartnerLimitStore>) -> Self {
        self.limits = limits;
        self
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Validity of earned points for partners without their own policy.
    pub fn with_default_validity_days(mut self, days: u32) -> Self {
        self.default_validity_days = days;
        self
    }

    pub fn records(&self) -> &R {
        &self.records
    }

    /// The clock's time at the database's precision (milliseconds), so an answer computed now
    /// equals the one read back later.
    pub fn now(&self) -> DateTime<Utc> {
        chrono::SubsecRound::trunc_subsecs(self.clock.now(), 3)
    }

    /// Counted in `fcfs_points_writes_total` by operation and outcome (`done`, `replayed`, the
    /// refusal, or the error).
    async fn apply(&self, partner: &str, key: &IdempotencyKey, operation: Operation) -> Result<Receipt, PointsError> {
        let kind = match &operation {
            Operation::Earn { .. } => "earn",
            Operation::Use { .. } => "use",
            Operation::Cancel { .. } => "cancel",
            Operation::Transfer { .. } => "transfer",
        };
        let applied = match self.limits.limits(partner).await {
            Ok(limits) => {
                self.records
                    .apply(partner, key, &operation, self.now(), limits.idempotency_records)
                    .await
            }
            Err(e) => Err(e.into()),
        };
        let outcome = match &applied {
            Ok(a) if a.replayed => "replayed",
            Ok(Applied {
                outcome: Outcome::Done(_),
                ..
            }) => "done",
            Ok(Applied {
                outcome: Outcome::Refused(r),
                ..
            }) => r.as_str(),
            Err(PointsError::IdempotencyKeyReused) => "IDEMPOTENCY_KEY_REUSED",
            Err(PointsError::InProgress) => "IN_PROGRESS",
            Err(PointsError::LimitExceeded(_)) => "LIMIT_EXCEEDED",
            Err(_) => "UNAVAILABLE",
        };
        metrics::counter!("fcfs_points_writes_total", "operation" => kind, "outcome" => outcome).increment(1);
        let applied = applied?;
        tracing::info!(
            partner_id = partner,
            idempotency_key = key.as_str(),
            replayed = applied.replayed,
            outcome = ?applied.outcome,
            "points write"
        );
        match applied.outcome {
            Outcome::Done(receipt) => Ok(receipt),
            Outcome::Refused(refusal) => Err(refusal.into()),
        }
    }

    pub async fn earn(
        &self,
        partner: &str,
        user: UserId,
        key: &IdempotencyKey,
        request: EarnPoints,
    ) -> Result<Receipt, PointsError> {
        let now = self.now();
        let request = request.validate(now)?;
        let expires_at = match request.expires_at {
            Some(at) => at,
            None => {
                let days = self.records.validity_days(partner).await?;
                now + chrono::Duration::days(i64::from(days.unwrap_or(self.default_validity_days)))
            }
        };
        self.apply(
            partner,
            key,
            Operation::Earn {
                user,
                request,
                expires_at,
            },
        )
        .await
    }

    pub async fn use_points(
        &self,
        partner: &str,
        user: UserId,
        key: &IdempotencyKey,
        request: UsePoints,
    ) -> Result<Receipt, PointsError> {
        let request = request.validate()?;
        self.apply(partner, key, Operation::Use { user, request }).await
    }

    pub async fn cancel(
        &self,
        partner: &str,
        transaction: TransactionId,
        key: &IdempotencyKey,
    ) -> Result<Receipt, PointsError> {
        self.apply(partner, key, Operation::Cancel { transaction }).await
    }

    pub async fn transfer(
        &self,
        partner: &str,
        key: &IdempotencyKey,
        request: TransferPoints,
    ) -> Result<Receipt, PointsError> {
        let request = request.validate()?;
        self.apply(partner, key, Operation::Transfer { request }).await
    }

    /// What the user can spend now (lots past their time never count, swept or not) and the next
    /// expiry dates.
    pub async fn balance(&self, partner: &str, user: &UserId) -> Result<Balance, PointsError> {
        let lots = self.records.lots(partner, user).await?;
        let holds = self.records.holds(partner, user).await?;
        Ok(Balance::of(&lots, &holds, self.now()))
    }

    pub async fn history(
        &self,
        partner: &str,
        user: &UserId,
        query: &HistoryQuery,
    ) -> Result<HistoryPage, PointsError> {
        let mut entries = self.records.history(partner, user, query).await?;
        let next = if entries.len() > query.limit as usize {
            entries.truncate(query.limit as usize);
            entries.last().map(|e| e.transaction_id)
        } else {
            None
        };
        Ok(HistoryPage { entries, next })
    }

    /// Expires lots past their time, at most `chunk` (≤ 1,000) per transaction, until none is
    /// left or `budget` is spent.
    pub async fn sweep_expired(&self, chunk: u32, budget: Duration) -> Result<SweepSummary, PointsError> {
        let now = self.now();
        Ok(sweep_in_chunks("point expiry", chunk, budget, |lots| {
            self.records.expire_batch(now, lots)
        })
        .await?)
    }

    /// Deletes Idempotency-Key records past their retention (`domain::KEY_RETENTION_DAYS`),
    /// oldest first, at most `chunk` (≤ 1,000) per transaction, until none is left or `budget`
    /// is spent. A retry with a pruned key is a new request.
    pub async fn prune_keys(&self, chunk: u32, budget: Duration) -> Result<SweepSummary, PointsError> {
        let now = self.now();
        Ok(sweep_in_chunks("idempotency records", chunk, budget, |records| {
            self.records.prune_keys(now, records)
        })
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::points::domain::{Movement, TransferPoints};
    use crate::testkit::{ManualClock, MemoryPoints};

    fn user(name: &str) -> UserId {
        UserId::parse(name).unwrap()
    }

    fn key(k: &str) -> IdempotencyKey {
        IdempotencyKey::parse(Some(k)).unwrap()
    }

    fn earn(amount: u64) -> EarnPoints {
        EarnPoints {
            amount,
            reason: "r".into(),
            expires_at: None,
        }
    }

    fn spend(amount: u64, order: &str) -> UsePoints {
        UsePoints {
            amount,
            order_id: order.to_owned().try_into().unwrap(),
            reason: None,
        }
    }

    fn service() -> (PointsService<MemoryPoints>, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::default());
        let service = PointsService::new(MemoryPoints::default())
            .with_clock(clock.clone())
            .with_default_validity_days(30);
        (service, clock)
    }

    #[tokio::test]
    async fn earned_points_expire_after_the_request_then_the_partner_then_the_default_validity() {
        let (service, _) = service();
        service.records().state.lock().unwrap().policies.insert("p".into(), 7);
        let now = service.now();
        service.earn("p", user("a"), &key("1"), earn(1)).await.unwrap();
        service.earn("q", user("a"), &key("1"), earn(1)).await.unwrap();
        let asked = now + chrono::Duration::days(100);
        let explicit = EarnPoints {
            expires_at: Some(asked),
            ..earn(1)
        };
        service.earn("q", user("b"), &key("2"), explicit).await.unwrap();
        let expiry =
            async |partner: &str, who: &str| service.records().lots(partner, &user(who)).await.unwrap()[0].expires_at;
        assert_eq!(expiry("p", "a").await, now + chrono::Duration::days(7));
        assert_eq!(expiry("q", "a").await, now + chrono::Duration::days(30));
        assert_eq!(expiry("q", "b").await, asked);
    }

    #[tokio::test]
    async fn a_key_replays_its_first_answer_even_after_the_default_expiry_moved_and_refuses_another_request() {
        let (service, clock) = service();
        let first = service.earn("p", user("a"), &key("k"), earn(5)).await.unwrap();
        clock.advance(chrono::Duration::hours(1));
        let again = service.earn("p", user("a"), &key("k"), earn(5)).await.unwrap();
        assert_eq!(first, again);
        assert_eq!(service.balance("p", &user("a")).await.unwrap().balance, 5, "one effect");
        assert!(matches!(
            service.earn("p", user("a"), &key("k"), earn(6)).await,
            Err(PointsError::IdempotencyKeyReused)
        ));
        // Keys are the partner's own.
        assert!(service.earn("q", user("a"), &key("k"), earn(6)).await.is_ok());
    }

    #[tokio::test]
    async fn refusals_are_the_contexts_errors_and_are_replayed_too() {
        let (service, _) = service();
        service.earn("p", user("a"), &key("e"), earn(3)).await.unwrap();
        for _ in 0..2 {
            assert!(matches!(
                service.use_points("p", user("a"), &key("u"), spend(4, "o")).await,
                Err(PointsError::InsufficientPoints)
            ));
        }
        let used = service
            .use_points("p", user("a"), &key("u2"), spend(3, "o"))
            .await
            .unwrap();
        assert_eq!(used.balance, 0);
        assert!(matches!(
            service.cancel("q", used.transaction_id, &key("c")).await,
            Err(PointsError::TransactionNotFound)
        ));
        assert_eq!(
            service
                .cancel("p", used.transaction_id, &key("c"))
                .await
                .unwrap()
                .balance,
            3
        );
        let transfer = TransferPoints {
            from_user_id: user("a"),
            to_user_id: user("a"),
            amount: 1,
        };
        assert!(matches!(
            service.transfer("p", &key("t"), transfer).await,
            Err(PointsError::Invalid(f)) if f.field == "toUserId"
        ));
    }

    #[tokio::test]
    async fn expired_points_are_never_spendable_even_before_the_sweep() {
        let (service, clock) = service();
        service.earn("p", user("a"), &key("e"), earn(10)).await.unwrap();
        clock.advance(chrono::Duration::days(31));
        assert_eq!(service.balance("p", &user("a")).await.unwrap().balance, 0);
        assert!(matches!(
            service.use_points("p", user("a"), &key("u"), spend(1, "o")).await,
            Err(PointsError::InsufficientPoints)
        ));
    }

    #[tokio::test]
    async fn a_partner_keeps_at_most_its_limit_of_key_records_until_they_are_pruned() {
        use crate::partners::domain::{Limit, LimitOverrides};
        let limits = Arc::new(crate::testkit::MemoryPartnerLimits::default());
        let two = LimitOverrides {
            idempotency_records: Some(2),
            ..LimitOverrides::default()
        };
        limits.set_overrides("p", two).await.unwrap();
        let (service, clock) = service();
        let service = service.with_limits(limits);
        let first = service.earn("p", user("a"), &key("k1"), earn(1)).await.unwrap();
        service.earn("p", user("a"), &key("k2"), earn(1)).await.unwrap();
        match service.earn("p", user("a"), &key("k3"), earn(1)).await {
            Err(PointsError::LimitExceeded(e)) => {
                assert_eq!((e.limit, e.allowed, e.would_be), (Limit::IdempotencyRecords, 2, 3))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            service.earn("p", user("a"), &key("k1"), earn(1)).await.unwrap(),
            first,
            "a committed key still replays"
        );
        assert_eq!(service.balance("p", &user("a")).await.unwrap().balance, 2);
        service
            .earn("q", user("a"), &key("k3"), earn(1))
            .await
            .expect("another partner is not limited by p's records");

        // A day short of the retention the records still count; past it they are pruned.
        clock.advance(chrono::Duration::days(i64::from(
            super::super::domain::KEY_RETENTION_DAYS,
        )));
        assert_eq!(
            service
                .prune_keys(1_000, Duration::from_secs(10))
                .await
                .unwrap()
                .expired,
            0
        );
        assert!(matches!(
            service.earn("p", user("a"), &key("k3"), earn(1)).await,
            Err(PointsError::LimitExceeded(_))
        ));
        clock.advance(chrono::Duration::days(1));
        assert_eq!(
            service
                .prune_keys(1_000, Duration::from_secs(10))
                .await
                .unwrap()
                .expired,
            3
        );
        service.earn("p", user("a"), &key("k3"), earn(1)).await.unwrap();
        let again = service.earn("p", user("a"), &key("k1"), earn(1)).await.unwrap();
        assert_ne!(again, first, "a pruned key is a new request");
    }

    #[tokio::test]
    async fn history_pages_walk_every_entry_once_newest_first() {
        let (service, _) = service();
        for i in 0..5 {
            service
                .earn("p", user("a"), &key(&format!("e{i}")), earn(1))
                .await
                .unwrap();
        }
        let mut query = HistoryQuery::parse([("limit", "2")]).unwrap();
        let mut seen = Vec::new();
        loop {
            let page = service.history("p", &user("a"), &query).await.unwrap();
            seen.extend(page.entries.iter().map(|e| (e.transaction_id, e.movement)));
            match page.next {
                Some(next) => query.before = Some(next),
                None => break,
            }
        }
        let ids: Vec<u64> = seen.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids.len(), 5);
        assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
        assert!(seen.iter().all(|(_, m)| *m == Movement::Earn));
    }

    #[tokio::test]
    async fn the_sweep_works_in_chunks_of_at_most_a_thousand_until_none_is_left() {
        let (service, clock) = service();
        for i in 0..2_100 {
            service
                .earn("p", user(&format!("u{}", i % 7)), &key(&format!("e{i}")), earn(1))
                .await
                .unwrap();
        }
        clock.advance(chrono::Duration::days(31));
        let summary = service.sweep_expired(5_000, Duration::from_secs(60)).await.unwrap();
        assert_eq!((summary.expired, summary.chunks), (2_100, 3));
        assert_eq!(*service.records().batches.lock().unwrap(), vec![1_000; 3]);
    }
}
