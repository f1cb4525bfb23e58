//! Issuance's coupon book on MySQL (`CouponBook`): a chunk of reservations becomes coupons,
//! rejections and their events in one transaction, never more coupons than a campaign's quantity.
//!
//! Chunks of one campaign share its counter row (`campaigns.issued_count`). A chunk whose shares
//! all fit in the room a read without a lock shows is written first and locks its counter rows
//! last, to check that the campaigns are unchanged and the shares still fit, and to count: chunks
//! of one campaign insert side by side and take turns only for the count and the commit. A chunk
//! that could overflow a campaign, or finds one changed under the lock, is written with its
//! counter rows locked from its first read, so the room decides who gets the last coupons.

use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::{Connection, MySql, MySqlConnection, QueryBuilder};

use super::{
    ER_LOCK_DEADLOCK, MAX_ROWS_PER_INSERT, MySqlStore, campaign_kind, coupon_insert, error_number, events, unavailable,
    utc,
};
use crate::events::catalog;
use crate::issuance::domain::{
    CampaignId, CampaignKind, CampaignTerms, Outcome, RejectionReason, Reservation, allot, could_overflow,
};
use crate::issuance::ports::{ChunkRecord, CouponBook};
use crate::kernel::{Unavailable, UserId};

/// One campaign's row as the writer reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CampaignRow {
    partner_id: String,
    kind: CampaignKind,
    total_quantity: u32,
    issued_count: u32,
    issue_starts_at: DateTime<Utc>,
    issue_ends_at: DateTime<Utc>,
    expires_at: NaiveDateTime,
}

impl CampaignRow {
    fn room(&self) -> u32 {
        self.total_quantity.saturating_sub(self.issued_count)
    }

    /// Everything a share's allotment and rows are made of: the row but its count.
    fn same_terms(&self, other: &Self) -> bool {
        Self {
            issued_count: other.issued_count,
            ..self.clone()
        } == *other
    }

    fn terms(&self) -> CampaignTerms<'_> {
        CampaignTerms {
            owner: &self.partner_id,
            kind: self.kind,
            total_quantity: self.total_quantity,
            issue_starts_at: self.issue_starts_at,
            issue_ends_at: self.issue_ends_at,
        }
    }
}

type Campaigns = HashMap<CampaignId, CampaignRow>;
/// A chunk's reservations by campaign, in ascending campaign order (the one global order).
type Shares<'c> = BTreeMap<CampaignId, Vec<&'c Reservation>>;

/// Reads the campaigns' rows; `lock`: `FOR UPDATE`, in ascending id order, held to the commit.
async fn read_campaigns(
    conn: &mut MySqlConnection,
    ids: impl Iterator<Item = CampaignId>,
    lock: bool,
) -> Result<Campaigns, sqlx::Error> {
    let mut read = QueryBuilder::<MySql>::new(
        "SELECT id, partner_id, kind, total_quantity, issued_count, issue_starts_at, issue_ends_at, coupon_expires_at \
         FROM campaigns WHERE id IN (",
    );
    let mut list = read.separated(", ");
    for id in ids {
        list.push_bind(id);
    }
    read.push(if lock { ") ORDER BY id FOR UPDATE" } else { ")" });
    type Row = (
        CampaignId,
        String,
        String,
        u32,
        u32,
        NaiveDateTime,
        NaiveDateTime,
        NaiveDateTime,
    );
    let mut campaigns = Campaigns::new();
    for (id, partner_id, kind, total_quantity, issued_count, starts_at, ends_at, expires_at) in
        read.build_query_as::<Row>().fetch_all(&mut *conn).await?
    {
        let row = CampaignRow {
            partner_id,
            kind: campaign_kind(&kind)?,
            total_quantity,
            issued_count,
            issue_starts_at: utc(starts_at),
            issue_ends_at: utc(ends_at),
            expires_at,
        };
        campaigns.insert(id, row);
    }
    Ok(campaigns)
}

/// Whether every share fits its campaign's room (a share of an unknown campaign writes nothing).
fn shares_fit(shares: &Shares<'_>, campaigns: &Campaigns) -> bool {
    shares
        .iter()
        .all(|(id, rows)| campaigns.get(id).is_none_or(|c| !could_overflow(rows.len(), c.room())))
}

/// What a chunk's writes did before its counters were counted.
#[derive(Default)]
struct Written<'c> {
    record: ChunkRecord,
    /// Per campaign: coupons inserted, rejections newly recorded.
    counts: Vec<(CampaignId, u64, u64)>,
    /// Users whose coupon id the chunk did not read inside its transaction (duplicates,
    /// rejections): read after the commit, for Redis's status answers.
    unread: Shares<'c>,
    rejected_users: Vec<(CampaignId, &'c Reservation, RejectionReason)>,
}

impl MySqlStore {
    async fn record_chunk(&self, chunk: &[Reservation]) -> Result<ChunkRecord, Unavailable> {
        if chunk.is_empty() {
            return Ok(ChunkRecord::default());
        }
        let mut shares = Shares::new();
        for r in chunk {
            shares.entry(r.campaign_id).or_default().push(r);
        }
        let pool = self.db().await?;
        let mut conn = pool.acquire().await.map_err(unavailable)?;
        // Outside a transaction, so that the chunk's later plain reads are not held to it.
        let seen = read_campaigns(&mut conn, shares.keys().copied(), false)
            .await
            .map_err(unavailable)?;
        let mut written = None;
        if shares_fit(&shares, &seen) {
            match self.write_then_lock(&mut conn, chunk, &shares, &seen).await {
                Ok(done) => written = done,
                // Inserting beside another chunk, then waiting for a counter row that chunk's
                // turn holds, can close a cycle with a chunk written under the lock: InnoDB rolls
                // one back, and under the lock it cannot meet another.
                Err(e) if error_number(&e) == Some(ER_LOCK_DEADLOCK) => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        let (written, campaigns) = match written {
            Some(done) => done,
            None => {
                metrics::counter!("fcfs_writer_chunks_locked_first_total").increment(1);
                self.lock_then_write(&mut conn, chunk, &shares)
                    .await
                    .map_err(unavailable)?
            }
        };
        drop(conn);
        Ok(self.complete(written, &campaigns).await)
    }

    /// Writes the shares on campaigns read without a lock, then locks the counter rows: commits
    /// if every campaign's terms are the same and its share still fits the room (`allot` then
    /// makes the same allotment as under the lock, with no holders to read), else rolls back.
    async fn write_then_lock<'c>(
        &self,
        conn: &mut MySqlConnection,
        chunk: &'c [Reservation],
        shares: &Shares<'c>,
        seen: &Campaigns,
    ) -> Result<Option<(Written<'c>, Campaigns)>, sqlx::Error> {
        let mut tx = conn.begin().await?;
        let written = write_shares(&mut tx, chunk, shares, seen).await?;
        let locked = read_campaigns(&mut tx, shares.keys().copied(), true).await?;
        let unchanged = shares.iter().all(|(id, share)| match (seen.get(id), locked.get(id)) {
            (Some(before), Some(now)) => before.same_terms(now) && !could_overflow(share.len(), now.room()),
            (None, None) => true,
            _ => false,
        });
        if !unchanged {
            tx.rollback().await?;
            return Ok(None);
        }
        count(&mut tx, &written.counts).await?;
        tx.commit().await?;
        Ok(Some((written, locked)))
    }

    /// Locks the counter rows first, then writes the shares and counts them.
    async fn lock_then_write<'c>(
        &self,
        conn: &mut MySqlConnection,
        chunk: &'c [Reservation],
        shares: &Shares<'c>,
    ) -> Result<(Written<'c>, Campaigns), sqlx::Error> {
        let mut tx = conn.begin().await?;
        let locked = read_campaigns(&mut tx, shares.keys().copied(), true).await?;
        let written = write_shares(&mut tx, chunk, shares, &locked).await?;
        count(&mut tx, &written.counts).await?;
        tx.commit().await?;
        Ok((written, locked))
    }

    /// After the commit: the other users' outcomes, for Redis's status answers.
    async fn complete(&self, written: Written<'_>, campaigns: &Campaigns) -> ChunkRecord {
        let Written {
            mut record,
            unread,
            rejected_users,
            ..
        } = written;
        record.rejected.sort_unstable();
        // Read outside the locks. Committed is committed: if this read fails, status falls back
        // to MySQL.
        if !unread.is_empty() {
            match self.coupon_ids(&unread, campaigns).await {
                Ok(outcomes) => record.outcomes.extend(outcomes),
                Err(e) => tracing::warn!(error = %e, "chunk committed; some coupon ids could not be read back"),
            }
        }
        let issued: HashSet<(CampaignId, &UserId)> = record.outcomes.iter().map(|(c, u, _)| (*c, u)).collect();
        let mut rejections = Vec::new();
        for (campaign_id, r, why) in rejected_users {
            if !issued.contains(&(campaign_id, &r.user_id)) {
                rejections.push((campaign_id, r.user_id.clone(), Outcome::Rejected(why)));
            }
        }
        record.outcomes.extend(rejections);
        record
    }

    async fn coupon_ids(
        &self,
        shares: &Shares<'_>,
        campaigns: &Campaigns,
    ) -> Result<Vec<(CampaignId, UserId, Outcome)>, Unavailable> {
        let pool = self.db().await?;
        let mut outcomes = Vec::new();
        for (campaign_id, rows) in shares {
            if !campaigns.contains_key(campaign_id) {
                continue;
            }
            let coupons = issued_ids(&pool, *campaign_id, rows).await.map_err(unavailable)?;
            let mut seen = HashSet::new();
            for r in rows {
                if let Some(&coupon_id) = coupons.get(r.user_id.as_str())
                    && seen.insert(r.user_id.as_str())
                {
                    outcomes.push((*campaign_id, r.user_id.clone(), Outcome::Issued { coupon_id }));
                }
            }
        }
        Ok(outcomes)
    }
}

/// Each share's allotment (`allot`, on `campaigns` as read) written: coupons, rejections and
/// their events; the counters are the caller's.
async fn write_shares<'c>(
    tx: &mut MySqlConnection,
    chunk: &'c [Reservation],
    shares: &Shares<'c>,
    campaigns: &Campaigns,
) -> Result<Written<'c>, sqlx::Error> {
    // Positions by address: the domain rule hands back references into the chunk.
    let base = chunk.as_ptr() as usize;
    let at = |r: &Reservation| (r as *const Reservation as usize - base) / std::mem::size_of::<Reservation>();
    let mut written = Written::default();
    let mut new_events = Vec::new();
    // Recorded after the events. The order inside the transaction changes nothing that commits;
    // last, a rejection's key is where a crash test holds a chunk with all else written.
    let mut rejections = Vec::new();
    let recorded_at = Utc::now();
    for (campaign_id, rows) in shares {
        let Some(campaign) = campaigns.get(campaign_id) else {
            written.record.unknown_campaign.extend(rows.iter().map(|r| at(r)));
            continue;
        };
        // Who already holds a coupon, needed only when the share could overflow the room (then
        // the counter row is locked from the first read): otherwise every reservation fits and
        // `INSERT IGNORE` skips the redeliveries. A plain read sees every committed coupon here:
        // the transaction's reads before it locked. A chunk inserting beside it without the
        // counter row has not counted yet: it counts once this one commits, against the room
        // left then.
        let holders: Vec<String> = if could_overflow(rows.len(), campaign.room()) {
            let mut existing = QueryBuilder::<MySql>::new("SELECT user_id FROM coupons WHERE campaign_id = ");
            existing.push_bind(*campaign_id).push(" AND user_id IN (");
            let mut users = existing.separated(", ");
            for r in rows {
                users.push_bind(r.user_id.as_str());
            }
            existing.push(")");
            existing.build_query_scalar().fetch_all(&mut *tx).await?
        } else {
            Vec::new()
        };
        let holders: HashSet<&str> = holders.iter().map(String::as_str).collect();
        let allotment = allot(rows, &campaign.terms(), &holders, campaign.room());
        written.record.duplicates += allotment.duplicates.len() as u64;

        let mut inserted = 0;
        if !allotment.issue.is_empty() {
            let mut issue = allotment.issue.clone();
            // Key order inside the statement keeps concurrent inserts from deadlocking on gap locks.
            issue.sort_by(|a, b| a.user_id.cmp(&b.user_id));
            inserted = coupon_insert(true, issue, campaign.expires_at)
                .build()
                .execute(&mut *tx)
                .await?
                .rows_affected();
            // Rows the IGNORE skipped belong to users who already hold a coupon.
            written.record.duplicates += (allotment.issue.len() as u64).saturating_sub(inserted);
            let ids = issued_ids(&mut *tx, *campaign_id, &allotment.issue).await?;
            // What these users now have is known here: Redis is told after the commit.
            let mut seen = HashSet::new();
            for r in &allotment.issue {
                if let Some(&coupon_id) = ids.get(r.user_id.as_str())
                    && seen.insert(r.user_id.as_str())
                {
                    written
                        .record
                        .outcomes
                        .push((*campaign_id, r.user_id.clone(), Outcome::Issued { coupon_id }));
                }
            }
            let expires_at = utc(campaign.expires_at);
            // One event per coupon: a user who already held one keeps its first event.
            new_events.extend(allotment.issue.iter().filter_map(|r| {
                ids.get(r.user_id.as_str()).map(|id| {
                    catalog::coupon_issued(
                        &r.partner_id,
                        *id,
                        r.campaign_id,
                        r.user_id.as_str(),
                        r.reserved_at,
                        expires_at,
                        recorded_at,
                    )
                })
            }));
        }
        for (r, why) in &allotment.rejected {
            new_events.push(catalog::coupon_rejected(r, *why, recorded_at));
            written.record.rejected.push((at(r), *why));
            written.rejected_users.push((*campaign_id, r, *why));
        }
        if !allotment.rejected.is_empty() {
            rejections.push((*campaign_id, allotment.rejected));
        }
        written.counts.push((*campaign_id, inserted, 0));
        written.record.inserted += inserted;
        let known: HashSet<&str> = written
            .record
            .outcomes
            .iter()
            .filter(|(c, _, _)| c == campaign_id)
            .map(|(_, u, _)| u.as_str())
            .collect();
        let rest: Vec<&Reservation> = rows
            .iter()
            .copied()
            .filter(|r| !known.contains(r.user_id.as_str()))
            .collect();
        if !rest.is_empty() {
            written.unread.insert(*campaign_id, rest);
        }
    }
    // The chunk's events commit with its coupons and rejections, or not at all (the events
    // context's outbox insert, with its error kept whole: a deadlock there is told apart).
    events::append(tx, &new_events).await?;
    for (campaign_id, rejected) in rejections {
        let newly_rejected = record_rejections(&mut *tx, &rejected).await?;
        if let Some(counts) = written.counts.iter_mut().find(|(c, _, _)| *c == campaign_id) {
            counts.2 = newly_rejected;
        }
    }
    Ok(written)
}

/// The rejections kept (`coupon_rejections`): how many were new.
async fn record_rejections(
    tx: &mut MySqlConnection,
    rejected: &[(&Reservation, RejectionReason)],
) -> Result<u64, sqlx::Error> {
    let mut reject = QueryBuilder::<MySql>::new(
        "INSERT IGNORE INTO coupon_rejections \
         (campaign_id, partner_id, user_id, request_id, issue_rank, reserved_at, reason) ",
    );
    reject.push_values(rejected, |mut row, (r, why)| {
        row.push_bind(r.campaign_id)
            .push_bind(&r.partner_id)
            .push_bind(r.user_id.as_str())
            .push_bind(r.request_id.hyphenated().to_string())
            .push_bind(r.rank)
            .push_bind(r.reserved_at.naive_utc())
            .push_bind(why.as_str());
    });
    Ok(reject.build().execute(&mut *tx).await?.rows_affected())
}

/// The counters of what the shares wrote, on counter rows the transaction holds.
async fn count(tx: &mut MySqlConnection, counts: &[(CampaignId, u64, u64)]) -> Result<(), sqlx::Error> {
    for (campaign_id, inserted, newly_rejected) in counts {
        if *inserted > 0 || *newly_rejected > 0 {
            sqlx::query(
                "UPDATE campaigns SET issued_count = issued_count + ?, rejected_count = rejected_count + ? WHERE id = ?",
            )
            .bind(inserted)
            .bind(newly_rejected)
            .bind(campaign_id)
            .execute(&mut *tx)
            .await?;
        }
    }
    Ok(())
}

/// The coupon ids of `users` in the campaign.
async fn issued_ids<'e>(
    db: impl sqlx::Executor<'e, Database = MySql>,
    campaign_id: CampaignId,
    users: &[&Reservation],
) -> Result<HashMap<String, u64>, sqlx::Error> {
    let mut lookup = QueryBuilder::<MySql>::new("SELECT user_id, id FROM coupons WHERE campaign_id = ");
    lookup.push_bind(campaign_id).push(" AND user_id IN (");
    let mut list = lookup.separated(", ");
    for r in users {
        list.push_bind(r.user_id.as_str());
    }
    lookup.push(")");
    Ok(lookup
        .build_query_as::<(String, u64)>()
        .fetch_all(db)
        .await?
        .into_iter()
        .collect())
}

#[async_trait]
impl CouponBook for MySqlStore {
    async fn record(&self, chunk: &[Reservation]) -> Result<ChunkRecord, Unavailable> {
        assert!(
            chunk.len() <= MAX_ROWS_PER_INSERT,
            "chunk exceeds the placeholder limit"
        );
        self.timed(self.record_chunk(chunk)).await
    }
}
