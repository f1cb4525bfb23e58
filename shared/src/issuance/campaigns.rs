//! Campaign use cases: create one (recorded in the catalog, then primed in the ledger so Redis
//! can decide alone), read one with its live counters, list a partner's, and change one while it
//! sells.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::change::{CampaignChange, CampaignQuery, CampaignStatus, strictest};
use super::domain::{Campaign, CampaignId, IssueRules, NewCampaign};
use super::error::IssuanceError;
use super::ports::{Amendment, CampaignCatalog, IssueLedger};
use crate::partners::ports::{DefaultLimits, PartnerLimitStore};

/// A campaign and how far its issuance has got.
#[derive(Debug, Clone, PartialEq)]
pub struct CampaignSummary {
    pub campaign: Campaign,
    /// Places Redis has handed out.
    pub reserved: u64,
    /// Coupons the database has recorded.
    pub issued: u64,
}

pub struct Campaigns<C, L> {
    catalog: C,
    ledger: L,
    /// The partners context's port: how many live campaigns each partner may hold.
    limits: Arc<dyn PartnerLimitStore>,
}

impl<C: CampaignCatalog, L: IssueLedger> Campaigns<C, L> {
    /// Every partner with the default limits until `with_limits` names their store.
    pub fn new(catalog: C, ledger: L) -> Self {
        Self {
            catalog,
            ledger,
            limits: Arc::new(DefaultLimits),
        }
    }

    pub fn with_limits(mut self, limits: Arc<dyn PartnerLimitStore>) -> Self {
        self.limits = limits;
        self
    }

    pub fn ledger(&self) -> &L {
        &self.ledger
    }

    /// Validates, records and primes a campaign for `partner`.
    pub async fn create(&self, partner: &str, campaign: NewCampaign) -> Result<CampaignSummary, IssuanceError> {
        let campaign = campaign.validate()?;
        let max_live = self.limits.limits(partner).await?.live_campaigns;
        let created = self.catalog.create(partner, &campaign, max_live).await?;
        if let Err(e) = self.ledger.prime(&IssueRules::from(&created)).await {
            // A campaign exists in both stores or in neither, so the client's retry is clean. The
            // rules may have landed although priming failed (a timeout, or a failure between
            // its commands): they go first, since Redis alone decides a request, and rules
            // without a campaign would accept requests for nothing.
            if let Err(discard) = self.ledger.discard(created.id).await {
                tracing::error!(
                    campaign_id = created.id, %discard,
                    "its rules may be left in Redis: `fcfs-admin reconcile --repair` removes them"
                );
            }
            if let Err(discard) = self.catalog.discard(created.id).await {
                tracing::error!(campaign_id = created.id, %discard, "unprimed campaign left behind");
            }
            return Err(e.into());
        }
        tracing::info!(campaign_id = created.id, partner_id = %partner, quantity = created.total_quantity, "campaign created");
        Ok(CampaignSummary {
            campaign: created,
            reserved: 0,
            issued: 0,
        })
    }

    /// The partner's campaign; another partner's is "not found", so its existence does not leak.
    pub async fn get(&self, partner: &str, id: CampaignId) -> Result<CampaignSummary, IssuanceError> {
        let campaign = match self.catalog.get(id).await? {
            Some(c) if c.partner_id == partner => c,
            _ => return Err(IssuanceError::CampaignNotFound),
        };
        let reserved = self.ledger.reserved_count(id).await?;
        let issued = self.catalog.issued_count(id).await?;
        Ok(CampaignSummary {
            campaign,
            reserved,
            issued,
        })
    }
}

/// One page of a partner's campaigns, and where the next starts.
#[derive(Debug, Clone, PartialEq)]
pub struct CampaignPage {
    /// Newest first, each with its coupons written.
    pub campaigns: Vec<(Campaign, u64)>,
    pub next: Option<CampaignId>,
}

/// Rows read for one page at most: a status few campaigns have answers a short page with a
/// cursor rather than a long scan.
const MAX_SCANNED_PAGES: usize = 10;

impl<C: CampaignCatalog, L: IssueLedger> Campaigns<C, L> {
    /// The partner's campaigns, newest first, `query.status` ones only (`CampaignStatus::of` at
    /// `now`), keyset-paginated by id.
    pub async fn list(
        &self,
        partner: &str,
        query: &CampaignQuery,
        now: DateTime<Utc>,
    ) -> Result<CampaignPage, IssuanceError> {
        let limit = query.limit as usize;
        let mut campaigns = Vec::with_capacity(limit);
        let mut before = query.before;
        for _ in 0..MAX_SCANNED_PAGES {
            let rows = self.catalog.page(partner, before, query.limit).await?;
            let exhausted = rows.len() < limit;
            for (campaign, issued) in rows {
                before = Some(campaign.id);
                if query.status.is_none_or(|s| s == CampaignStatus::of(&campaign, now)) {
                    campaigns.push((campaign, issued));
                    if campaigns.len() == limit {
                        return Ok(CampaignPage {
                            campaigns,
                            next: before,
                        });
                    }
                }
            }
            if exhausted {
                return Ok(CampaignPage { campaigns, next: None });
            }
        }
        Ok(CampaignPage {
            campaigns,
            next: before,
        })
    }

    /// Changes the partner's campaign, also while it sells. Redis first holds the stricter of
    /// the old and the new rules (`change::strictest`, refusing a quantity below the places
    /// taken in the same atomic step), then MySQL records the change under the campaign's row
    /// lock, then Redis takes the new rules: no moment lets Redis give a place that either
    /// version refuses, and MySQL's cap (the writer's last guard) is never below the places
    /// Redis gave. One change of a campaign at a time (`ChangeInProgress`).
    pub async fn change(
        &self,
        partner: &str,
        id: CampaignId,
        change: CampaignChange,
        now: DateTime<Utc>,
    ) -> Result<CampaignSummary, IssuanceError> {
        let change = change.validate()?;
        // Another partner's campaign is not found before anything, its turn included.
        self.owned(partner, id).await?;
        let Some(turn) = self.ledger.change_turn(id).await? else {
            return Err(IssuanceError::ChangeInProgress);
        };
        let result = self.change_in_turn(partner, id, &change, now, &turn).await;
        if let Err(e) = self.ledger.end_change_turn(id, &turn).await {
            tracing::warn!(campaign_id = id, error = %e, "change turn not ended; it expires by itself");
        }
        result
    }

    async fn owned(&self, partner: &str, id: CampaignId) -> Result<Campaign, IssuanceError> {
        match self.catalog.get(id).await? {
            Some(c) if c.partner_id == partner => Ok(c),
            _ => Err(IssuanceError::CampaignNotFound),
        }
    }

    async fn change_in_turn(
        &self,
        partner: &str,
        id: CampaignId,
        change: &CampaignChange,
        now: DateTime<Utc>,
        turn: &str,
    ) -> Result<CampaignSummary, IssuanceError> {
        // Read again in the turn: the row as the previous change left it.
        let current = self.owned(partner, id).await?;
        // A change the campaign's rules refuse touches nothing. The places taken are the ledger's
        // to judge, atomically, in the amend below (MySQL judges the coupons written).
        let target = change.applied_to(&current, 0, now)?;
        let before = IssueRules::from(&current);
        match self
            .ledger
            .amend(&strictest(&before, &IssueRules::from(&target)), turn)
            .await?
        {
            Amendment::Applied => {}
            Amendment::BelowReserved { reserved } => return Err(IssuanceError::BelowReserved { reserved }),
            // Lost state is rebuilt from MySQL by the issue path; changing MySQL meanwhile could
            // take its cap below places still on their way. Retry once it is back.
            Amendment::Absent => return Err(IssuanceError::Unprimed(id)),
            Amendment::TurnLost => return Err(IssuanceError::ChangeInProgress),
        }
        let changed = match self.catalog.change(partner, id, change, now).await {
            Ok(changed) => changed,
            // Refused for certain: Redis goes back to the rules MySQL still holds.
            Err(
                e @ (IssuanceError::Invalid(_) | IssuanceError::BelowReserved { .. } | IssuanceError::CampaignNotFound),
            ) => {
                let _ = self.ledger.amend(&before, turn).await;
                return Err(e);
            }
            // Perhaps made (a commit cut by its deadline): the stricter rules stay, which is
            // safe, and the caller's retry makes the same change and ends it.
            Err(e) => return Err(e),
        };
        // A failure here leaves Redis stricter than MySQL, never looser: the caller's retry
        // makes the same change again and ends it.
        match self.ledger.amend(&IssueRules::from(&changed), turn).await? {
            Amendment::Applied | Amendment::Absent => {}
            Amendment::TurnLost => return Err(IssuanceError::ChangeInProgress),
            Amendment::BelowReserved { reserved } => return Err(IssuanceError::BelowReserved { reserved }),
        }
        tracing::info!(campaign_id = id, partner_id = %partner, ?change, "campaign changed");
        Ok(CampaignSummary {
            reserved: self.ledger.reserved_count(id).await?,
            issued: self.catalog.issued_count(id).await?,
            campaign: changed,
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, Utc};

    use super::*;
    use crate::issuance::change::{CampaignChange, CampaignQuery, CampaignStatus};
    use crate::issuance::domain::{Discount, DiscountType, IssueDecision};
    use crate::kernel::UserId;
    use crate::testkit::{MemoryCatalog, MemoryLedger};

    fn campaign(quantity: u32) -> NewCampaign {
        let now = Utc::now();
        NewCampaign {
            name: "Black Friday".into(),
            total_quantity: quantity,
            issue_starts_at: now + Duration::hours(1),
            issue_ends_at: now + Duration::hours(2),
            coupon_expires_at: now + Duration::days(30),
            discount: Discount {
                kind: DiscountType::Percent,
                value: 10,
            },
            kind: Default::default(),
        }
    }

    #[tokio::test]
    async fn create_primes_the_ledger_and_get_is_scoped_to_the_partner() {
        let campaigns = Campaigns::new(MemoryCatalog::default(), MemoryLedger::default());
        let created = campaigns.create("p1", campaign(1000)).await.unwrap();
        assert_eq!((created.reserved, created.issued), (0, 0));
        let id = created.campaign.id;
        assert_eq!(campaigns.get("p1", id).await.unwrap().campaign, created.campaign);
        assert!(matches!(
            campaigns.get("p2", id).await,
            Err(IssuanceError::CampaignNotFound)
        ));
        assert!(matches!(
            campaigns.get("p1", id + 1).await,
            Err(IssuanceError::CampaignNotFound)
        ));
        // Primed: the ledger decides for it (an unprimed campaign would answer Unprimed).
        let user = UserId::parse("u").unwrap();
        let decision = campaigns
            .ledger()
            .reserve(id, "p1", &user, uuid::Uuid::nil(), Utc::now())
            .await
            .unwrap();
        assert!(matches!(decision, IssueDecision::NotOpen { .. }));
    }

    #[tokio::test]
    async fn a_campaign_whose_priming_failed_is_in_neither_store() {
        let catalog = std::sync::Arc::new(MemoryCatalog::default());
        let ledger = std::sync::Arc::new(MemoryLedger::default());
        let campaigns = Campaigns::new(catalog.clone(), ledger.clone());
        ledger
            .prime_lands_then_fails
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let err = campaigns.create("p1", campaign(10)).await.unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(catalog.get(1).await.unwrap().is_none(), "not in the catalog");
        assert!(ledger.rules(1).await.unwrap().is_none(), "not in the ledger");
        let user = UserId::parse("u").unwrap();
        let decision = ledger
            .reserve(1, "p1", &user, uuid::Uuid::nil(), Utc::now())
            .await
            .unwrap();
        assert_eq!(decision, IssueDecision::Unprimed, "nothing accepts requests for it");
    }

    #[tokio::test]
    async fn a_partner_at_its_live_campaign_limit_is_refused_and_another_is_not() {
        use crate::partners::domain::{Limit, LimitOverrides};
        let limits = std::sync::Arc::new(crate::testkit::MemoryPartnerLimits::default());
        let overrides = LimitOverrides {
            live_campaigns: Some(2),
            ..LimitOverrides::default()
        };
        limits.set_overrides("p1", overrides).await.unwrap();
        let ledger = std::sync::Arc::new(MemoryLedger::default());
        let campaigns = Campaigns::new(MemoryCatalog::default(), ledger.clone()).with_limits(limits);
        for _ in 0..2 {
            campaigns.create("p1", campaign(10)).await.unwrap();
        }
        match campaigns.create("p1", campaign(10)).await {
            Err(IssuanceError::LimitExceeded(e)) => {
                assert_eq!((e.limit, e.allowed, e.would_be), (Limit::LiveCampaigns, 2, 3))
            }
            other => panic!("refused, not {other:?}"),
        }
        assert!(
            ledger.rules(3).await.unwrap().is_none(),
            "nothing primed for the refused one"
        );
        let other = campaigns.create("p2", campaign(10)).await.unwrap();
        assert_eq!(other.campaign.id, 3, "another partner is unaffected");
    }

    fn open(quantity: u32) -> NewCampaign {
        NewCampaign {
            issue_starts_at: Utc::now() - Duration::hours(1),
            ..campaign(quantity)
        }
    }

    #[tokio::test]
    async fn a_change_reaches_both_stores_and_a_paused_campaign_gives_no_place() {
        let ledger = std::sync::Arc::new(MemoryLedger::default());
        let campaigns = Campaigns::new(MemoryCatalog::default(), ledger.clone());
        let id = campaigns.create("p1", open(2)).await.unwrap().campaign.id;
        let user = |u: &str| UserId::parse(u).unwrap();
        let reserve = |u: &'static str| {
            let ledger = ledger.clone();
            async move {
                ledger
                    .reserve(id, "p1", &user(u), uuid::Uuid::now_v7(), Utc::now())
                    .await
                    .unwrap()
            }
        };
        assert_eq!(reserve("a").await, IssueDecision::Reserved { rank: 1 });
        let pause = CampaignChange {
            paused: Some(true),
            total_quantity: Some(3),
            name: Some(" Cyber Monday ".into()),
            ..CampaignChange::default()
        };
        let changed = campaigns.change("p1", id, pause, Utc::now()).await.unwrap();
        assert_eq!(
            (
                changed.campaign.name.as_str(),
                changed.campaign.total_quantity,
                changed.campaign.paused
            ),
            ("Cyber Monday", 3, true)
        );
        assert_eq!(changed.reserved, 1);
        assert_eq!(
            campaigns.get("p1", id).await.unwrap().campaign,
            changed.campaign,
            "MySQL has it"
        );
        assert_eq!(reserve("b").await, IssueDecision::Paused);
        assert!(
            matches!(reserve("a").await, IssueDecision::AlreadyIssued(_)),
            "a holder is answered"
        );
        let resume = CampaignChange {
            paused: Some(false),
            ..CampaignChange::default()
        };
        campaigns.change("p1", id, resume, Utc::now()).await.unwrap();
        for (u, rank) in [("b", 2), ("c", 3)] {
            assert_eq!(reserve(u).await, IssueDecision::Reserved { rank });
        }
        assert_eq!(
            reserve("d").await,
            IssueDecision::SoldOut,
            "the raised quantity, exactly"
        );
    }

    #[tokio::test]
    async fn a_quantity_below_the_places_taken_changes_nothing() {
        let ledger = std::sync::Arc::new(MemoryLedger::default());
        let campaigns = Campaigns::new(MemoryCatalog::default(), ledger.clone());
        let id = campaigns.create("p1", open(5)).await.unwrap().campaign.id;
        for u in ["a", "b", "c"] {
            let user = UserId::parse(u).unwrap();
            ledger
                .reserve(id, "p1", &user, uuid::Uuid::now_v7(), Utc::now())
                .await
                .unwrap();
        }
        let fewer = |n| CampaignChange {
            total_quantity: Some(n),
            paused: Some(true),
            ..CampaignChange::default()
        };
        assert!(matches!(
            campaigns.change("p1", id, fewer(2), Utc::now()).await,
            Err(IssuanceError::BelowReserved { reserved: 3 })
        ));
        let unchanged = campaigns.get("p1", id).await.unwrap().campaign;
        assert_eq!((unchanged.total_quantity, unchanged.paused), (5, false));
        assert_eq!(ledger.rules(id).await.unwrap().unwrap().total_quantity, 5);
        assert_eq!(
            campaigns
                .change("p1", id, fewer(3), Utc::now())
                .await
                .unwrap()
                .campaign
                .total_quantity,
            3
        );
        assert!(matches!(
            campaigns.change("p2", id, fewer(4), Utc::now()).await,
            Err(IssuanceError::CampaignNotFound)
        ));
        ledger.change_turns.lock().unwrap().insert(id);
        assert!(matches!(
            campaigns.change("p1", id, fewer(4), Utc::now()).await,
            Err(IssuanceError::ChangeInProgress)
        ));
        assert!(
            matches!(
                campaigns.change("p2", id, fewer(4), Utc::now()).await,
                Err(IssuanceError::CampaignNotFound)
            ),
            "another partner learns nothing of a change being made"
        );
    }

    #[tokio::test]
    async fn a_place_given_back_below_a_higher_rank_still_bounds_the_quantity() {
        let ledger = std::sync::Arc::new(MemoryLedger::default());
        let campaigns = Campaigns::new(MemoryCatalog::default(), ledger.clone());
        let id = campaigns.create("p1", open(5)).await.unwrap().campaign.id;
        let mut requests = Vec::new();
        for u in ["a", "b", "c"] {
            let request = uuid::Uuid::now_v7();
            let user = UserId::parse(u).unwrap();
            ledger.reserve(id, "p1", &user, request, Utc::now()).await.unwrap();
            requests.push((user, request));
        }
        // b's place (rank 2) is given back: 2 held, but rank 3 is on its way to the writer.
        assert!(ledger.release(id, &requests[1].0, requests[1].1).await.unwrap());
        let two = CampaignChange {
            total_quantity: Some(2),
            ..CampaignChange::default()
        };
        assert!(matches!(
            campaigns.change("p1", id, two, Utc::now()).await,
            Err(IssuanceError::BelowReserved { reserved: 3 })
        ));
    }

    #[tokio::test]
    async fn a_campaign_whose_redis_state_is_lost_is_not_changed_until_it_is_rebuilt() {
        let ledger = std::sync::Arc::new(MemoryLedger::default());
        let campaigns = Campaigns::new(MemoryCatalog::default(), ledger.clone());
        let id = campaigns.create("p1", open(5)).await.unwrap().campaign.id;
        ledger.forget(id);
        let fewer = CampaignChange {
            total_quantity: Some(1),
            ..CampaignChange::default()
        };
        assert!(matches!(
            campaigns.change("p1", id, fewer, Utc::now()).await,
            Err(IssuanceError::Unprimed(_))
        ));
        assert_eq!(
            campaigns.get("p1", id).await.unwrap().campaign.total_quantity,
            5,
            "MySQL unchanged"
        );
        assert!(ledger.change_turns.lock().unwrap().is_empty(), "the turn is given back");
    }

    #[tokio::test]
    async fn the_list_is_the_partners_newest_first_by_status_page_by_page() {
        let campaigns = Campaigns::new(MemoryCatalog::default(), MemoryLedger::default());
        for i in 0..5 {
            let c = if i % 2 == 0 { open(1) } else { campaign(1) };
            campaigns.create("p1", c).await.unwrap();
        }
        campaigns.create("p2", open(1)).await.unwrap();
        let query = |status, limit, before| CampaignQuery { status, limit, before };
        let ids = |page: &CampaignPage| page.campaigns.iter().map(|(c, _)| c.id).collect::<Vec<_>>();
        let first = campaigns.list("p1", &query(None, 3, None), Utc::now()).await.unwrap();
        assert_eq!((ids(&first), first.next), (vec![5, 4, 3], Some(3)));
        let rest = campaigns
            .list("p1", &query(None, 3, first.next), Utc::now())
            .await
            .unwrap();
        assert_eq!((ids(&rest), rest.next), (vec![2, 1], None));
        let open_ones = campaigns
            .list("p1", &query(Some(CampaignStatus::Open), 2, None), Utc::now())
            .await
            .unwrap();
        assert_eq!(ids(&open_ones), vec![5, 3]);
        let scheduled = campaigns
            .list("p1", &query(Some(CampaignStatus::Scheduled), 10, None), Utc::now())
            .await
            .unwrap();
        assert_eq!((ids(&scheduled), scheduled.next), (vec![4, 2], None));
    }

    #[tokio::test]
    async fn invalid_campaigns_are_refused_before_any_write() {
        let catalog = std::sync::Arc::new(MemoryCatalog::default());
        let campaigns = Campaigns::new(catalog.clone(), MemoryLedger::default());
        let err = campaigns.create("p1", campaign(0)).await.unwrap_err();
        assert!(
            matches!(&err, IssuanceError::Invalid(f) if f.field == "totalQuantity"),
            "{err}"
        );
        assert!(!err.is_transient());
        assert!(catalog.get(1).await.unwrap().is_none(), "nothing was recorded");
    }
}
