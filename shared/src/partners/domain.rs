//! Per-partner limits and the admission rule, as pure code.

use serde::Serialize;

/// Campaigns whose issue window has not ended, per partner: each holds Redis memory (its rules,
/// and a place per user up to its quantity) until a day after its coupons expire.
pub const DEFAULT_LIVE_CAMPAIGNS: u32 = 200;
/// Orders recorded per partner and calendar month (grading reads them all once a month).
pub const DEFAULT_ORDERS_PER_MONTH: u64 = 20_000_000;
/// Idempotency-Key records a partner's point writes keep at once (each for
/// `points::domain::KEY_RETENTION_DAYS` days): about 330,000 writes a day.
pub const DEFAULT_IDEMPOTENCY_RECORDS: u64 = 10_000_000;

/// What one partner may hold. Defaults apply where an operator set nothing (`fcfs-admin limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PartnerLimits {
    pub live_campaigns: u32,
    pub orders_per_month: u64,
    pub idempotency_records: u64,
}

impl Default for PartnerLimits {
    fn default() -> Self {
        Self {
            live_campaigns: DEFAULT_LIVE_CAMPAIGNS,
            orders_per_month: DEFAULT_ORDERS_PER_MONTH,
            idempotency_records: DEFAULT_IDEMPOTENCY_RECORDS,
        }
    }
}

/// An operator's settings for one partner; `None` keeps the default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitOverrides {
    pub live_campaigns: Option<u32>,
    pub orders_per_month: Option<u64>,
    pub idempotency_records: Option<u64>,
}

impl LimitOverrides {
    pub fn apply(self) -> PartnerLimits {
        let defaults = PartnerLimits::default();
        PartnerLimits {
            live_campaigns: self.live_campaigns.unwrap_or(defaults.live_campaigns),
            orders_per_month: self.orders_per_month.unwrap_or(defaults.orders_per_month),
            idempotency_records: self.idempotency_records.unwrap_or(defaults.idempotency_records),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    LiveCampaigns,
    OrdersPerMonth,
    IdempotencyRecords,
}

impl Limit {
    /// The limit's name on the wire (the error's `field`) and in `fcfs-admin limits`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LiveCampaigns => "liveCampaigns",
            Self::OrdersPerMonth => "ordersPerMonth",
            Self::IdempotencyRecords => "idempotencyRecords",
        }
    }
}

/// A request that would take a partner past one of its limits: refused whole, nothing written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this partner may hold at most {allowed} {what}; this request would make it {would_be}", what = self.what())]
pub struct LimitExceeded {
    pub limit: Limit,
    pub allowed: u64,
    pub would_be: u64,
}

impl LimitExceeded {
    fn what(&self) -> &'static str {
        match self.limit {
            Limit::LiveCampaigns => "campaigns whose issue window has not ended",
            Limit::OrdersPerMonth => "orders in one month",
            Limit::IdempotencyRecords => "Idempotency-Key records kept at once",
        }
    }
}

/// The one admission rule: a partner holding `would_be` after the request is within `allowed`.
pub fn admit(limit: Limit, allowed: u64, would_be: u64) -> Result<(), LimitExceeded> {
    if would_be <= allowed {
        Ok(())
    } else {
        Err(LimitExceeded {
            limit,
            allowed,
            would_be,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partner_is_admitted_up_to_its_limit_and_not_one_past_it() {
        assert_eq!(admit(Limit::LiveCampaigns, 2, 2), Ok(()));
        let refused = admit(Limit::LiveCampaigns, 2, 3).unwrap_err();
        assert_eq!((refused.allowed, refused.would_be), (2, 3));
        assert!(refused.to_string().contains("at most 2 campaigns"), "{refused}");
        assert_eq!(
            admit(Limit::OrdersPerMonth, 0, 1).unwrap_err().limit.as_str(),
            "ordersPerMonth"
        );
    }

    #[test]
    fn overrides_replace_only_what_they_set() {
        let limits = LimitOverrides {
            live_campaigns: Some(3),
            orders_per_month: None,
            idempotency_records: None,
        }
        .apply();
        assert_eq!(limits.live_campaigns, 3);
        assert_eq!(limits.orders_per_month, DEFAULT_ORDERS_PER_MONTH);
        assert_eq!(LimitOverrides::default().apply(), PartnerLimits::default());
    }
}
