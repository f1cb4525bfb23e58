//! Campaign use cases: create one (recorded in the catalog, then primed in the ledger so Redis
//! can decide alone) and read one with its live counters.

use std::sync::Arc;

use super::domain::{Campaign, CampaignId, IssueRules, NewCampaign};
use super::error::IssuanceError;
use super::ports::{CampaignCatalog, IssueLedger};
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

#[cfg(test)]
mod tests {
    use chrono::{Duration, Utc};

    use super::*;
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
        assert_eq!(decision, IssueDecision::NotOpen);
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
