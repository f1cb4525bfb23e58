//! The partners context's storage: the overrides an operator set (`partner_limits`, written
//! only here). A partner without a row has the defaults.

use async_trait::async_trait;

use super::{MySqlStore, unavailable};
use crate::kernel::Unavailable;
use crate::partners::domain::LimitOverrides;
use crate::partners::ports::PartnerLimitStore;

#[async_trait]
impl PartnerLimitStore for MySqlStore {
    async fn overrides(&self, partner: &str) -> Result<LimitOverrides, Unavailable> {
        self.timed(async {
            let row: Option<(Option<u32>, Option<u64>, Option<u64>)> = sqlx::query_as(
                "SELECT live_campaigns, orders_per_month, idempotency_records FROM partner_limits WHERE partner_id = ?",
            )
            .bind(partner)
            .fetch_optional(&self.db().await?)
            .await
            .map_err(unavailable)?;
            Ok(row
                .map(
                    |(live_campaigns, orders_per_month, idempotency_records)| LimitOverrides {
                        live_campaigns,
                        orders_per_month,
                        idempotency_records,
                    },
                )
                .unwrap_or_default())
        })
        .await
    }

    async fn set_overrides(&self, partner: &str, overrides: LimitOverrides) -> Result<(), Unavailable> {
        self.timed(async {
            sqlx::query(
                "INSERT INTO partner_limits (partner_id, live_campaigns, orders_per_month, idempotency_records) \
                 VALUES (?, ?, ?, ?) ON DUPLICATE KEY UPDATE live_campaigns = VALUES(live_campaigns), \
                 orders_per_month = VALUES(orders_per_month), idempotency_records = VALUES(idempotency_records)",
            )
            .bind(partner)
            .bind(overrides.live_campaigns)
            .bind(overrides.orders_per_month)
            .bind(overrides.idempotency_records)
            .execute(&self.db().await?)
            .await
            .map_err(unavailable)?;
            Ok(())
        })
        .await
    }
}
