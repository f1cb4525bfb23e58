//! `fcfs-admin points verify`: wallets, lots and history that disagree.

use super::super::{MySqlStore, unavailable};
use crate::kernel::Unavailable;

impl MySqlStore {
    /// Wallets, lots and history that disagree: the `fcfs-admin points verify` check. Every
    /// wallet's balance must equal the sum of its lots' remainders and the sum of its history;
    /// every lot's amount must equal what is left, what expired, and what uses and transfers
    /// not cancelled drew from it; every hold's held points must be a USE not cancelled.
    pub async fn verify_points(&self, partner: Option<&str>) -> Result<PointsAudit, Unavailable> {
        let pool = self.db().await?;
        let scope = if partner.is_some() {
            "w.partner_id = ?"
        } else {
            "? IS NULL"
        };
        let wallets: (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM point_wallets w WHERE {scope}"
        )))
        .bind(partner)
        .fetch_one(&pool)
        .await
        .map_err(unavailable)?;
        // Both sums per wallet, each from its own index (lots by wallet, history by wallet).
        let off: Vec<(u64, String, String, u64, i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT w.id, w.partner_id, w.user_id, w.balance, \
             CAST((SELECT COALESCE(SUM(l.remaining), 0) FROM point_lots l WHERE l.wallet_id = w.id) AS SIGNED) AS lots, \
             CAST((SELECT COALESCE(SUM(t.amount), 0) FROM point_transactions t WHERE t.wallet_id = w.id) AS SIGNED) \
             AS history FROM point_wallets w WHERE {scope} HAVING w.balance <> lots OR w.balance <> history \
             ORDER BY w.id LIMIT 100"
        )))
        .bind(partner)
        .fetch_all(&pool)
        .await
        .map_err(unavailable)?;
        let off_allocations: Vec<(u64,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT l.id FROM point_lots l JOIN point_wallets w ON w.id = l.wallet_id \
             LEFT JOIN (SELECT a.lot_id, SUM(a.amount) AS drawn FROM point_allocations a \
                        JOIN point_transactions t ON t.id = a.transaction_id \
                        WHERE t.cancelled_by IS NULL GROUP BY a.lot_id) d ON d.lot_id = l.id \
             WHERE {scope} AND l.amount <> l.remaining + l.expired + COALESCE(d.drawn, 0) ORDER BY l.id LIMIT 100"
        )))
        .bind(partner)
        .fetch_all(&pool)
        .await
        .map_err(unavailable)?;
        // Held points: each hold's row must name a held USE of its wallet, not cancelled, of its amount.
        let held: (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*), CAST(COALESCE(SUM(h.amount), 0) AS SIGNED) FROM point_holds h \
             JOIN point_wallets w ON w.id = h.wallet_id WHERE {scope}"
        )))
        .bind(partner)
        .fetch_one(&pool)
        .await
        .map_err(unavailable)?;
        let holds_off: Vec<(u64,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT h.transaction_id FROM point_holds h JOIN point_wallets w ON w.id = h.wallet_id \
             LEFT JOIN point_transactions t ON t.id = h.transaction_id \
             WHERE {scope} AND (t.id IS NULL OR t.wallet_id <> h.wallet_id OR t.kind <> 'USE' \
             OR t.cancelled_by IS NOT NULL OR t.amount <> -CAST(h.amount AS SIGNED)) \
             ORDER BY h.transaction_id LIMIT 100"
        )))
        .bind(partner)
        .fetch_all(&pool)
        .await
        .map_err(unavailable)?;
        Ok(PointsAudit {
            wallets: wallets.0 as u64,
            holds: held.0 as u64,
            held_points: held.1 as u64,
            holds_not_uses: holds_off.into_iter().map(|(id,)| id).collect(),
            wallets_off: off
                .into_iter()
                .map(
                    |(wallet_id, partner_id, user_id, balance, lots, history)| WalletMismatch {
                        wallet_id,
                        partner_id,
                        user_id,
                        balance,
                        lots,
                        history,
                    },
                )
                .collect(),
            lots_not_allocations: off_allocations.into_iter().map(|(id,)| id).collect(),
        })
    }
}

/// What `verify_points` found (at most 100 of each kind).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PointsAudit {
    pub wallets: u64,
    /// Wallets whose balance is not Σ lot remainders or not Σ history amounts.
    pub wallets_off: Vec<WalletMismatch>,
    /// Lots whose amount is not remaining + expired + what live uses and transfers drew.
    pub lots_not_allocations: Vec<u64>,
    /// Checkout holds holding points, and how many points they hold (counted in the balances
    /// above as the uses they are until released).
    pub holds: u64,
    pub held_points: u64,
    /// Held uses whose entry is missing, cancelled, of another wallet or of another amount.
    pub holds_not_uses: Vec<u64>,
}

impl PointsAudit {
    pub fn is_clean(&self) -> bool {
        self.wallets_off.is_empty() && self.lots_not_allocations.is_empty() && self.holds_not_uses.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WalletMismatch {
    pub wallet_id: u64,
    pub partner_id: String,
    pub user_id: String,
    pub balance: u64,
    /// Σ remaining of its lots.
    pub lots: i64,
    /// Σ amount of its history.
    pub history: i64,
}
