//! Recording a call's orders: what is recorded under its ids is locked and read, each order is
//! judged against it by `Order::change_from`, and the plan is written (new orders inserted,
//! status changes applied, the month counters raised by the new ones), all in one transaction.

use std::collections::{BTreeSet, HashMap, HashSet};

use sqlx::{MySql, QueryBuilder};

use super::{count_orders, order_insert};
use crate::adapters::mysql::{ER_DUP_ENTRY, ER_LOCK_DEADLOCK, MySqlStore, error_number, unavailable, utc};
use crate::grading::GradingError;
use crate::grading::domain::{Order, OrderChange, OrderStatus};
use crate::grading::ports::OrdersRecorded;
use crate::kernel::UserId;

/// Attempts at a call that meets another call recording the same new ids (one of them waits,
/// then finds them recorded, or loses a deadlock) before it answers 503.
const ATTEMPTS: usize = 3;

pub(super) async fn record(
    store: &MySqlStore,
    partner: &str,
    orders: &[Order],
    max_per_month: u64,
) -> Result<OrdersRecorded, GradingError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match record_once(store, partner, orders, max_per_month).await {
            Err(Raced(e)) if attempt < ATTEMPTS => {
                tracing::info!(attempt, error = %e, "orders raced another call: again")
            }
            Err(Raced(e)) => return Err(unavailable(e).into()),
            Ok(outcome) => return outcome,
        }
    }
}

/// Another call recorded one of the new ids first, or the two deadlocked: start over.
struct Raced(sqlx::Error);

type Planned = Result<OrdersRecorded, GradingError>;

async fn record_once(
    store: &MySqlStore,
    partner: &str,
    orders: &[Order],
    max_per_month: u64,
) -> Result<Planned, Raced> {
    let pool = match store.db().await {
        Ok(pool) => pool,
        Err(e) => return Ok(Err(e.into())),
    };
    let fail = |e: sqlx::Error| -> Result<Planned, Raced> {
        match error_number(&e) {
            Some(ER_LOCK_DEADLOCK | ER_DUP_ENTRY) => Err(Raced(e)),
            _ => Ok(Err(unavailable(e).into())),
        }
    };
    let mut tx = match pool.begin().await {
        Ok(tx) => tx,
        Err(e) => return fail(e),
    };
    // Ids in key order: two calls lock their common orders in one order.
    let ids: BTreeSet<&str> = orders.iter().map(|o| o.order_id.as_str()).collect();
    let mut read = QueryBuilder::<MySql>::new(
        "SELECT order_id, user_id, amount, status, ordered_at, status_changed_at FROM orders WHERE partner_id = ",
    );
    read.push_bind(partner).push(" AND order_id IN (");
    let mut list = read.separated(", ");
    for id in &ids {
        list.push_bind(*id);
    }
    read.push(") ORDER BY order_id FOR UPDATE");
    type Row = (
        String,
        String,
        u64,
        String,
        chrono::NaiveDateTime,
        chrono::NaiveDateTime,
    );
    let rows: Vec<Row> = match read.build_query_as().fetch_all(&mut *tx).await {
        Ok(rows) => rows,
        Err(e) => return fail(e),
    };
    let mut recorded = HashMap::new();
    for (id, user, amount, status, ordered_at, changed_at) in rows {
        let (Ok(user_id), Some(status)) = (UserId::parse(&user), OrderStatus::parse(&status)) else {
            return fail(sqlx::Error::Decode(
                format!("order {id}: user {user:?}, status {status:?}").into(),
            ));
        };
        let order = Order {
            order_id: id.clone(),
            user_id,
            amount,
            status,
            ordered_at: utc(ordered_at),
            status_changed_at: utc(changed_at),
        };
        recorded.insert(id, order);
    }

    let mut outcome = OrdersRecorded::default();
    let (mut new, mut changed) = (Vec::new(), Vec::new());
    let mut seen = HashSet::new();
    for o in orders {
        match o.change_from(recorded.get(&o.order_id)) {
            OrderChange::New if seen.insert(o.order_id.as_str()) => new.push(o),
            OrderChange::New | OrderChange::Unchanged | OrderChange::Stale => outcome.unchanged += 1,
            OrderChange::Apply => changed.push(o),
            OrderChange::Conflict => return Ok(Err(GradingError::OrderConflict(o.order_id.clone()))),
        }
    }

    if !new.is_empty() {
        let inserted = match order_insert(partner, new.iter().copied())
            .build()
            .execute(&mut *tx)
            .await
        {
            Ok(done) => done.rows_affected() as usize,
            Err(e) => return fail(e),
        };
        if inserted < new.len() {
            return Err(Raced(sqlx::Error::Protocol(format!(
                "{} of {} new orders were recorded by another call meanwhile",
                new.len() - inserted,
                new.len()
            ))));
        }
    }
    for o in &changed {
        let update =
            sqlx::query("UPDATE orders SET status = ?, status_changed_at = ? WHERE partner_id = ? AND order_id = ?")
                .bind(o.status.as_str())
                .bind(o.status_changed_at.naive_utc())
                .bind(partner)
                .bind(&o.order_id)
                .execute(&mut *tx)
                .await;
        if let Err(e) = update {
            return fail(e);
        }
    }
    let mut new_by_month = std::collections::BTreeMap::new();
    for o in &new {
        *new_by_month.entry(o.month().number()).or_default() += 1;
    }
    if let Err(e) = count_orders(&mut tx, partner, &new_by_month, max_per_month).await {
        return Ok(Err(e));
    }
    if let Err(e) = tx.commit().await {
        return fail(e);
    }
    outcome.recorded = new.len();
    outcome.updated = changed.len();
    Ok(Ok(outcome))
}
