//! The expiry sweep's transaction: wallets taken with `SKIP LOCKED`, their due lots expired by the
//! ledger's own `expire`.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::{MySql, QueryBuilder};

use super::super::{events, utc};
use crate::events::catalog;
use crate::points::domain::Lot;
use crate::points::ledger::{self, LotChange, PlannedEntry, Side};

/// Expires the due lots of those of `wallets` no write holds (skipped, not waited for: the
/// sweep never waits on a live write, so it cannot deadlock with one), at most `max_lots`.
pub(super) async fn expire_wallets(
    pool: &sqlx::MySqlPool,
    wallets: &[u64],
    now: DateTime<Utc>,
    max_lots: u32,
) -> Result<(u64, HashSet<u64>), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut lock =
        QueryBuilder::<MySql>::new("SELECT id, partner_id, user_id, balance FROM point_wallets WHERE id IN (");
    let mut ids = lock.separated(", ");
    for id in wallets {
        ids.push_bind(id);
    }
    lock.push(") ORDER BY id FOR UPDATE SKIP LOCKED");
    let locked: Vec<(u64, String, String, u64)> = lock.build_query_as().fetch_all(&mut *tx).await?;
    let locked_ids: HashSet<u64> = locked.iter().map(|w| w.0).collect();
    if locked.is_empty() {
        return Ok((0, locked_ids));
    }
    let mut due =
        QueryBuilder::<MySql>::new("SELECT id, wallet_id, remaining, expires_at FROM point_lots WHERE wallet_id IN (");
    let mut ids = due.separated(", ");
    for (id, ..) in &locked {
        ids.push_bind(id);
    }
    due.push(") AND remaining > 0 AND expires_at <= ")
        .push_bind(now.naive_utc())
        .push(" ORDER BY wallet_id, expires_at, id LIMIT ")
        .push_bind(max_lots);
    let lots: Vec<(u64, u64, u64, chrono::NaiveDateTime)> = due.build_query_as().fetch_all(&mut *tx).await?;
    if lots.is_empty() {
        return Ok((0, locked_ids));
    }
    let mut by_wallet: BTreeMap<u64, Vec<Lot>> = BTreeMap::new();
    for &(id, wallet, remaining, expires_at) in &lots {
        by_wallet.entry(wallet).or_default().push(Lot {
            id,
            remaining,
            expires_at: utc(expires_at),
        });
    }
    // The ledger's own expiry, wallet by wallet: what every write does first.
    let owners: BTreeMap<u64, (String, String, u64)> =
        locked.into_iter().map(|(id, p, u, b)| (id, (p, u, b))).collect();
    let mut entries: Vec<(u64, &str, &str, PlannedEntry)> = Vec::with_capacity(lots.len());
    let mut changes: Vec<LotChange> = Vec::with_capacity(lots.len());
    let mut balances: Vec<(u64, u64)> = Vec::with_capacity(by_wallet.len());
    for (wallet, due) in &by_wallet {
        // The lots were selected by the locked wallets' ids, so each has its owner.
        let Some((partner, user, balance)) = owners.get(wallet) else {
            return Err(sqlx::Error::Protocol(format!(
                "due lots of wallet {wallet}, which is not locked"
            )));
        };
        let (expiring, expired, after) = ledger::expire(Side::Own, *balance, due);
        entries.extend(
            expiring
                .into_iter()
                .map(|e| (*wallet, partner.as_str(), user.as_str(), e)),
        );
        changes.extend(expired);
        balances.push((*wallet, after));
    }
    let mut history = QueryBuilder::<MySql>::new(
        "INSERT INTO point_transactions (wallet_id, partner_id, user_id, kind, amount, balance_after, lot_id, created_at) ",
    );
    history.push_values(&entries, |mut row, (wallet, partner, user, entry)| {
        row.push_bind(wallet)
            .push_bind(partner)
            .push_bind(user)
            .push_bind(entry.movement.as_str())
            .push_bind(entry.amount)
            .push_bind(entry.balance_after)
            .push_bind(entry.lot_id)
            .push_bind(now.naive_utc());
    });
    history.build().execute(&mut *tx).await?;
    let events: Vec<_> = entries
        .iter()
        .filter_map(|(_, partner, user, entry)| catalog::ledger_entry(partner, entry, user, None, "NULL", "NULL", now))
        .map(|(event, _)| event)
        .collect();
    events::append(&mut tx, &events).await?;
    let mut expire = QueryBuilder::<MySql>::new("UPDATE point_lots SET remaining = 0, expired = expired + CASE id");
    for c in &changes {
        expire
            .push(" WHEN ")
            .push_bind(c.id)
            .push(" THEN ")
            .push_bind(c.expired);
    }
    expire.push(" END WHERE id IN (");
    let mut ids = expire.separated(", ");
    for c in &changes {
        ids.push_bind(c.id);
    }
    expire.push(")");
    expire.build().execute(&mut *tx).await?;
    let mut update = QueryBuilder::<MySql>::new("UPDATE point_wallets SET balance = CASE id");
    for (id, balance) in &balances {
        update.push(" WHEN ").push_bind(id).push(" THEN ").push_bind(balance);
    }
    update
        .push(" END, updated_at = ")
        .push_bind(now.naive_utc())
        .push(" WHERE id IN (");
    let mut ids = update.separated(", ");
    for (id, _) in &balances {
        ids.push_bind(id);
    }
    update.push(")");
    update.build().execute(&mut *tx).await?;
    tx.commit().await?;
    Ok((lots.len() as u64, locked_ids))
}
