//! A partner managing its campaigns: a change made under the campaign's row lock (the domain's
//! `CampaignChange::applied_to` decides), and the partner's campaigns page by page.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{CAMPAIGN_COLUMNS, MySqlStore, campaign_from_row, unavailable};
use crate::issuance::IssuanceError;
use crate::issuance::change::CampaignChange;
use crate::issuance::domain::{Campaign, CampaignId};
use crate::kernel::Unavailable;

impl MySqlStore {
    /// Locks the campaign's row, lets the domain apply the change to it (the coupons written must
    /// still fit the quantity), writes the result.
    pub(super) async fn change_campaign(
        &self,
        partner: &str,
        id: CampaignId,
        change: &CampaignChange,
        now: DateTime<Utc>,
    ) -> Result<Campaign, IssuanceError> {
        let mut tx = self.db().await?.begin().await.map_err(unavailable)?;
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {CAMPAIGN_COLUMNS}, issued_count FROM campaigns WHERE id = ? FOR UPDATE"
        ));
        let row = sqlx::query(sql)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?;
        let Some(row) = row else {
            return Err(IssuanceError::CampaignNotFound);
        };
        let current = campaign_from_row(&row).map_err(unavailable)?;
        if current.partner_id != partner {
            return Err(IssuanceError::CampaignNotFound);
        }
        let issued: u32 = row.try_get("issued_count").map_err(unavailable)?;
        let next = change.applied_to(&current, issued.into(), now)?;
        sqlx::query("UPDATE campaigns SET name = ?, total_quantity = ?, issue_ends_at = ?, paused = ? WHERE id = ?")
            .bind(&next.name)
            .bind(next.total_quantity)
            .bind(next.issue_ends_at.naive_utc())
            .bind(next.paused)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(next)
    }

    /// Keyset on the (partner_id, id) index, newest first.
    pub(super) async fn campaign_page(
        &self,
        partner: &str,
        before: Option<CampaignId>,
        limit: u32,
    ) -> Result<Vec<(Campaign, u64)>, Unavailable> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {CAMPAIGN_COLUMNS}, issued_count FROM campaigns WHERE partner_id = ? AND id < ? \
             ORDER BY id DESC LIMIT ?"
        ));
        let rows = sqlx::query(sql)
            .bind(partner)
            .bind(before.unwrap_or(u64::MAX))
            .bind(limit)
            .fetch_all(&self.db().await?)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|row| {
                let issued: u32 = row.try_get("issued_count")?;
                Ok((campaign_from_row(row)?, u64::from(issued)))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(unavailable)
    }
}
