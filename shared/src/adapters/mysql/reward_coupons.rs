//! Issuance's storage of reward grants (`RewardCoupons`), inside the granting context's
//! transaction: the campaign's counter row locked (the one every writer of its coupons locks
//! first), the users who hold one read, `issuance::domain::grant_coupons` decides, and the
//! coupons and the counter are written. A coupon another transaction wrote meanwhile makes the
//! insert a duplicate: a conflict, and the caller starts over seeing it.

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::{MySql, MySqlConnection, QueryBuilder};

use super::{MySqlOutbox, MySqlStore, campaign_kind, tx_error, utc};
use crate::events::catalog;
use crate::events::ports::Outbox;
use crate::issuance::domain::{CampaignId, CouponGrant, GrantableCampaign, grant_coupons};
use crate::issuance::ports::RewardCoupons;
use crate::kernel::{TxError, UserId};

#[async_trait]
impl RewardCoupons<MySqlConnection> for MySqlStore {
    async fn grant_coupons(
        &self,
        tx: &mut MySqlConnection,
        partner: &str,
        campaign: CampaignId,
        users: &[UserId],
        now: DateTime<Utc>,
    ) -> Result<Vec<CouponGrant>, TxError> {
        let row: Option<(String, String, u32, u32, NaiveDateTime)> = sqlx::query_as(
            "SELECT partner_id, kind, total_quantity, issued_count, coupon_expires_at FROM campaigns \
             WHERE id = ? FOR UPDATE",
        )
        .bind(campaign)
        .fetch_optional(&mut *tx)
        .await
        .map_err(tx_error)?;
        let names: Vec<&str> = users.iter().map(UserId::as_str).collect();
        let Some((owner, kind, total, issued, expires_at)) = row else {
            return Ok(grant_coupons(None, partner, &names, &HashSet::new()));
        };
        let mut read = QueryBuilder::<MySql>::new("SELECT user_id FROM coupons WHERE campaign_id = ");
        read.push_bind(campaign).push(" AND user_id IN (");
        let mut list = read.separated(", ");
        for user in &names {
            list.push_bind(*user);
        }
        read.push(")");
        let holders: Vec<String> = if names.is_empty() {
            Vec::new()
        } else {
            read.build_query_scalar().fetch_all(&mut *tx).await.map_err(tx_error)?
        };
        let holders: HashSet<&str> = holders.iter().map(String::as_str).collect();
        let found = GrantableCampaign {
            owner: &owner,
            kind: campaign_kind(&kind).map_err(tx_error)?,
            room: total.saturating_sub(issued),
        };
        let grants = grant_coupons(Some(found), partner, &names, &holders);
        let granted: Vec<&str> = names
            .iter()
            .zip(&grants)
            .filter(|(_, g)| **g == CouponGrant::Granted)
            .map(|(u, _)| *u)
            .collect();
        if granted.is_empty() {
            return Ok(grants);
        }
        let mut insert = QueryBuilder::<MySql>::new(
            "INSERT INTO coupons (campaign_id, partner_id, user_id, status, issue_rank, request_id, issued_at, expires_at) ",
        );
        insert.push_values(granted.iter().enumerate(), |mut row, (i, user)| {
            row.push_bind(campaign)
                .push_bind(partner)
                .push_bind(*user)
                .push_bind("ISSUED")
                .push_bind(issued + i as u32 + 1)
                .push_bind(uuid::Uuid::new_v4().hyphenated().to_string())
                .push_bind(now.naive_utc())
                .push_bind(expires_at);
        });
        insert.build().execute(&mut *tx).await.map_err(tx_error)?;
        let mut ids = QueryBuilder::<MySql>::new("SELECT user_id, id FROM coupons WHERE campaign_id = ");
        ids.push_bind(campaign).push(" AND user_id IN (");
        let mut list = ids.separated(", ");
        for user in &granted {
            list.push_bind(*user);
        }
        ids.push(")");
        let made: Vec<(String, u64)> = ids.build_query_as().fetch_all(&mut *tx).await.map_err(tx_error)?;
        let events: Vec<_> = made
            .iter()
            .map(|(user, id)| catalog::coupon_issued(partner, *id, campaign, user, now, utc(expires_at), now))
            .collect();
        MySqlOutbox.append(tx, &events).await.map_err(TxError::Unavailable)?;
        sqlx::query("UPDATE campaigns SET issued_count = issued_count + ? WHERE id = ?")
            .bind(granted.len() as u32)
            .bind(campaign)
            .execute(&mut *tx)
            .await
            .map_err(tx_error)?;
        Ok(grants)
    }
}
