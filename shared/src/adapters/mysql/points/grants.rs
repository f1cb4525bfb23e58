//! The points ledger's storage of grants (`PointGrants`), inside the granting context's
//! transaction: wallets created if new and locked in user order with their live lots,
//! `points::ledger::earn` planned for each, and every plan persisted together in a handful of
//! set-based statements (a chunk grants up to a thousand users), each EARN with its key's record.
//! A key recorded already is not granted again; one another transaction records meanwhile makes
//! the key's insert a duplicate: a conflict, and the caller starts over seeing it.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{MySql, MySqlConnection, QueryBuilder};

use super::super::{MySqlOutbox, MySqlStore, tx_error, utc};
use crate::events::catalog;
use crate::events::ports::Outbox;
use crate::kernel::{TxError, Unavailable};
use crate::points::domain::{Lot, Movement, TransactionId};
use crate::points::ledger::{self, Plan, WalletState};
use crate::points::ports::{PointGrant, PointGrants};

/// A wallet a grant writes to, locked.
struct Granting<'g> {
    grant: &'g PointGrant,
    wallet: u64,
    plan: Plan,
}

#[async_trait]
impl PointGrants<MySqlConnection> for MySqlStore {
    async fn grant_points(
        &self,
        tx: &mut MySqlConnection,
        partner: &str,
        grants: &[PointGrant],
        now: DateTime<Utc>,
    ) -> Result<Vec<TransactionId>, TxError> {
        if grants.is_empty() {
            return Ok(Vec::new());
        }
        let recorded = recorded_keys(tx, partner, grants).await?;
        let mut todo: Vec<&PointGrant> = grants
            .iter()
            .filter(|g| !recorded.contains_key(g.key.as_str()))
            .collect();
        todo.sort_by(|a, b| a.user.cmp(&b.user));
        let mut made: HashMap<&str, TransactionId> = HashMap::new();
        if !todo.is_empty() {
            let granting = lock_and_plan(tx, partner, &todo, now).await?;
            made = persist(tx, partner, &granting, now).await?;
        }
        grants
            .iter()
            .map(|g| {
                let key = g.key.as_str();
                recorded.get(key).or_else(|| made.get(key)).copied().ok_or_else(|| {
                    TxError::Unavailable(Unavailable::new("mysql", format!("grant {key} left no entry")))
                })
            })
            .collect()
    }
}

/// Keys of `grants` recorded already, with their EARN entries; a key recorded for another
/// request is an error, never a second grant.
async fn recorded_keys(
    tx: &mut MySqlConnection,
    partner: &str,
    grants: &[PointGrant],
) -> Result<HashMap<String, TransactionId>, TxError> {
    let mut lookup = QueryBuilder::<MySql>::new(
        "SELECT idempotency_key, request_hash, transaction_id FROM idempotency_keys WHERE partner_id = ",
    );
    lookup.push_bind(partner).push(" AND idempotency_key IN (");
    let mut list = lookup.separated(", ");
    for g in grants {
        list.push_bind(g.key.as_str());
    }
    lookup.push(")");
    let rows: Vec<(String, String, Option<u64>)> =
        lookup.build_query_as().fetch_all(&mut *tx).await.map_err(tx_error)?;
    let fingerprints: HashMap<&str, String> = grants
        .iter()
        .map(|g| (g.key.as_str(), g.operation().fingerprint()))
        .collect();
    let mut recorded = HashMap::new();
    for (key, hash, transaction) in rows {
        match (fingerprints.get(key.as_str()), transaction) {
            (Some(expected), Some(transaction)) if *expected == hash => {
                recorded.insert(key, transaction);
            }
            _ => {
                let detail = format!("idempotency key {key} is recorded for another request");
                return Err(TxError::Unavailable(Unavailable::new("mysql", detail)));
            }
        }
    }
    Ok(recorded)
}

/// Creates the wallets that are new, locks them all (user order: `todo` is sorted) with their
/// live lots, and plans each grant's EARN.
async fn lock_and_plan<'g>(
    tx: &mut MySqlConnection,
    partner: &str,
    todo: &[&'g PointGrant],
    now: DateTime<Utc>,
) -> Result<Vec<Granting<'g>>, TxError> {
    let mut ensure =
        QueryBuilder::<MySql>::new("INSERT INTO point_wallets (partner_id, user_id, balance, updated_at) ");
    ensure.push_values(todo, |mut row, g| {
        row.push_bind(partner)
            .push_bind(g.user.as_str())
            .push_bind(0u64)
            .push_bind(now.naive_utc());
    });
    ensure.push(" ON DUPLICATE KEY UPDATE id = id");
    ensure.build().execute(&mut *tx).await.map_err(tx_error)?;
    let mut lock = QueryBuilder::<MySql>::new("SELECT user_id, id, balance FROM point_wallets WHERE partner_id = ");
    lock.push_bind(partner).push(" AND user_id IN (");
    let mut list = lock.separated(", ");
    for g in todo {
        list.push_bind(g.user.as_str());
    }
    lock.push(") ORDER BY user_id FOR UPDATE");
    let wallets: HashMap<String, (u64, u64)> = lock
        .build_query_as::<(String, u64, u64)>()
        .fetch_all(&mut *tx)
        .await
        .map_err(tx_error)?
        .into_iter()
        .map(|(user, id, balance)| (user, (id, balance)))
        .collect();
    // Lots change only under their wallet's lock, which this transaction now holds.
    let mut read = QueryBuilder::<MySql>::new(
        "SELECT wallet_id, id, remaining, expires_at FROM point_lots WHERE remaining > 0 AND wallet_id IN (",
    );
    let mut list = read.separated(", ");
    for (id, _) in wallets.values() {
        list.push_bind(*id);
    }
    read.push(") FOR UPDATE");
    let mut lots: BTreeMap<u64, Vec<Lot>> = BTreeMap::new();
    let rows: Vec<(u64, u64, u64, chrono::NaiveDateTime)> =
        read.build_query_as().fetch_all(&mut *tx).await.map_err(tx_error)?;
    for (wallet, id, remaining, expires_at) in rows {
        lots.entry(wallet).or_default().push(Lot {
            id,
            remaining,
            expires_at: utc(expires_at),
        });
    }
    todo.iter()
        .map(|g| {
            let &(wallet, balance) = wallets.get(g.user.as_str()).ok_or_else(|| {
                TxError::Unavailable(Unavailable::new(
                    "mysql",
                    format!("wallet of {} not created", g.user.as_str()),
                ))
            })?;
            let mut state = WalletState {
                balance,
                lots: lots.remove(&wallet).unwrap_or_default(),
            };
            let plan = ledger::earn(&mut state, g.amount, &g.reason, g.expires_at, now);
            Ok(Granting { grant: g, wallet, plan })
        })
        .collect()
}

/// Writes every plan: entries, the EARN ids read back (the wallets are locked: every EARN of
/// theirs from the first id on is one of these), lots, expired lots, balances, keys.
async fn persist<'g>(
    tx: &mut MySqlConnection,
    partner: &str,
    granting: &[Granting<'g>],
    now: DateTime<Utc>,
) -> Result<HashMap<&'g str, TransactionId>, TxError> {
    let mut entries = QueryBuilder::<MySql>::new(
        "INSERT INTO point_transactions (wallet_id, partner_id, user_id, kind, amount, balance_after, reason, \
         lot_id, created_at) ",
    );
    let rows: Vec<(&Granting, &ledger::PlannedEntry)> = granting
        .iter()
        .flat_map(|g| g.plan.entries.iter().map(move |e| (g, e)))
        .collect();
    entries.push_values(&rows, |mut row, (g, e)| {
        row.push_bind(g.wallet)
            .push_bind(partner)
            .push_bind(g.grant.user.as_str())
            .push_bind(e.movement.as_str())
            .push_bind(e.amount)
            .push_bind(e.balance_after)
            .push_bind(e.reason.as_deref())
            .push_bind(e.lot_id)
            .push_bind(now.naive_utc());
    });
    let first = entries
        .build()
        .execute(&mut *tx)
        .await
        .map_err(tx_error)?
        .last_insert_id();
    let mut read = QueryBuilder::<MySql>::new("SELECT wallet_id, id FROM point_transactions WHERE kind = ");
    read.push_bind(Movement::Earn.as_str())
        .push(" AND id >= ")
        .push_bind(first)
        .push(" AND wallet_id IN (");
    let mut list = read.separated(", ");
    for g in granting {
        list.push_bind(g.wallet);
    }
    read.push(")");
    let earned: HashMap<u64, u64> = read
        .build_query_as::<(u64, u64)>()
        .fetch_all(&mut *tx)
        .await
        .map_err(tx_error)?
        .into_iter()
        .collect();
    let earn_of = |g: &Granting| {
        earned.get(&g.wallet).copied().ok_or_else(|| {
            TxError::Unavailable(Unavailable::new(
                "mysql",
                format!("EARN of {} not found", g.grant.user.as_str()),
            ))
        })
    };
    let mut lots = QueryBuilder::<MySql>::new(
        "INSERT INTO point_lots (wallet_id, transaction_id, amount, remaining, expires_at, created_at) ",
    );
    let mut new_lots = Vec::new();
    for g in granting {
        let earn = earn_of(g)?;
        new_lots.extend(g.plan.new_lots.iter().map(|l| (g.wallet, earn, *l)));
    }
    lots.push_values(&new_lots, |mut row, (wallet, earn, lot)| {
        row.push_bind(*wallet)
            .push_bind(*earn)
            .push_bind(lot.amount)
            .push_bind(lot.amount)
            .push_bind(lot.expires_at.naive_utc())
            .push_bind(now.naive_utc());
    });
    lots.build().execute(&mut *tx).await.map_err(tx_error)?;
    let expired: Vec<&ledger::LotChange> = granting.iter().flat_map(|g| &g.plan.lots).collect();
    if !expired.is_empty() {
        let mut update = QueryBuilder::<MySql>::new("UPDATE point_lots SET remaining = CASE id");
        for c in &expired {
            update
                .push(" WHEN ")
                .push_bind(c.id)
                .push(" THEN ")
                .push_bind(c.remaining);
        }
        update.push(" END, expired = expired + CASE id");
        for c in &expired {
            update
                .push(" WHEN ")
                .push_bind(c.id)
                .push(" THEN ")
                .push_bind(c.expired);
        }
        update.push(" END WHERE id IN (");
        let mut list = update.separated(", ");
        for c in &expired {
            list.push_bind(c.id);
        }
        update.push(")");
        update.build().execute(&mut *tx).await.map_err(tx_error)?;
    }
    let mut balances = QueryBuilder::<MySql>::new("UPDATE point_wallets SET updated_at = ");
    balances.push_bind(now.naive_utc()).push(", balance = CASE id");
    for g in granting {
        for (_, balance) in &g.plan.balances {
            balances
                .push(" WHEN ")
                .push_bind(g.wallet)
                .push(" THEN ")
                .push_bind(*balance);
        }
    }
    balances.push(" END WHERE id IN (");
    let mut list = balances.separated(", ");
    for g in granting {
        list.push_bind(g.wallet);
    }
    balances.push(")");
    balances.build().execute(&mut *tx).await.map_err(tx_error)?;
    let mut keys = QueryBuilder::<MySql>::new(
        "INSERT INTO idempotency_keys (partner_id, idempotency_key, request_hash, transaction_id, balance, created_at) ",
    );
    let mut records = Vec::with_capacity(granting.len());
    for g in granting {
        let balance = g.plan.balances.first().map_or(0, |b| b.1);
        records.push((g.grant, earn_of(g)?, balance));
    }
    keys.push_values(&records, |mut row, (grant, earn, balance)| {
        row.push_bind(partner)
            .push_bind(grant.key.as_str())
            .push_bind(grant.operation().fingerprint())
            .push_bind(*earn)
            .push_bind(*balance)
            .push_bind(now.naive_utc());
    });
    keys.build().execute(&mut *tx).await.map_err(tx_error)?;
    // Grants announce as any earn (and any expiry the plans made) does.
    let mut events = Vec::with_capacity(rows.len());
    for (g, e) in &rows {
        if let Some((mut event, ids)) =
            catalog::ledger_entry(partner, e, g.grant.user.as_str(), None, "NULL", "NULL", now)
        {
            if !ids.is_empty()
                && let Some(data) = event.data.as_object_mut()
            {
                data.insert("transactionId".to_owned(), earn_of(g)?.to_string().into());
            }
            events.push(event);
        }
    }
    MySqlOutbox.append(tx, &events).await.map_err(TxError::Unavailable)?;
    Ok(records
        .into_iter()
        .map(|(grant, earn, _)| (grant.key.as_str(), earn))
        .collect())
}
