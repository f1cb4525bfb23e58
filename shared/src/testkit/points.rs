//! Point wallets in memory: the tables the MySQL records keep (wallets, lots, entries,
//! allocations, idempotency keys) as maps, written by applying the plan `points::ledger::plan`
//! makes, exactly as the MySQL records persist it. No rule of the ledger is written here.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};

use crate::coupons::domain::OrderId;
use crate::kernel::{TxError, Unavailable, UserId};
use crate::partners::domain::{Limit, admit};
use crate::points::PointsError;
use crate::points::domain::{
    Allocation, Entry, HOLD_REASON, HeldPoints, HistoryQuery, IdempotencyKey, Lot, Operation, Outcome, Receipt,
    TransactionId, UsePoints, first_active_key_day, hold_ended, keys_expire_before,
};
use crate::points::ledger::{self, Answer, CancelTarget, Locked, Plan, Related, Side, WalletState};
use crate::points::ports::{Applied, PointGrant, PointGrants, PointHolds, PointRecords};

#[derive(Default)]
pub struct MemoryPoints {
    pub state: Mutex<Tables>,
    /// Each `expire_batch` call's `max_lots`.
    pub batches: Mutex<Vec<u32>>,
}

#[derive(Debug, Clone)]
struct WalletRow {
    partner: String,
    user: String,
    balance: u64,
}

#[derive(Debug, Clone)]
struct LotRow {
    wallet: u64,
    remaining: u64,
    expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
struct EntryRow {
    wallet: u64,
    entry: Entry,
}

/// The records' tables. Ids are handed out in one sequence per table, as AUTO_INCREMENT does.
#[derive(Default, Clone)]
pub struct Tables {
    /// Partner → default validity of earned points, in days.
    pub policies: HashMap<String, u32>,
    wallets: BTreeMap<u64, WalletRow>,
    lots: BTreeMap<u64, LotRow>,
    entries: BTreeMap<TransactionId, EntryRow>,
    /// Entry → what it drew.
    allocations: HashMap<TransactionId, Vec<Allocation>>,
    /// (partner, key) → the request's fingerprint, its answer and when it was recorded.
    keys: HashMap<(String, String), (String, Outcome, DateTime<Utc>)>,
    /// (partner, UTC day) → records of the partner's requests made that day.
    key_counts: BTreeMap<(String, NaiveDate), u64>,
    /// Held uses: entry → (wallet, amount, the hold's end).
    held: BTreeMap<TransactionId, (u64, u64, DateTime<Utc>)>,
    next_wallet: u64,
    next_lot: u64,
    next_entry: u64,
}

impl Tables {
    fn wallet_of(&self, partner: &str, user: &str) -> Option<u64> {
        self.wallets
            .iter()
            .find(|(_, w)| w.partner == partner && w.user == user)
            .map(|(id, _)| *id)
    }

    /// The wallet, created if new (as the records create it before they lock it).
    fn ensure_wallet(&mut self, partner: &str, user: &UserId) -> u64 {
        if let Some(id) = self.wallet_of(partner, user.as_str()) {
            return id;
        }
        self.next_wallet += 1;
        let row = WalletRow {
            partner: partner.to_owned(),
            user: user.as_str().to_owned(),
            balance: 0,
        };
        self.wallets.insert(self.next_wallet, row);
        self.next_wallet
    }

    fn live_lots(&self, wallet: u64) -> Vec<Lot> {
        self.lots
            .iter()
            .filter(|(_, l)| l.wallet == wallet && l.remaining > 0)
            .map(|(id, l)| Lot {
                id: *id,
                remaining: l.remaining,
                expires_at: l.expires_at,
            })
            .collect()
    }

    fn state_of(&self, wallet: u64) -> WalletState {
        WalletState {
            balance: self.wallets[&wallet].balance,
            lots: self.live_lots(wallet),
        }
    }

    /// What the records lock for `operation`: (the own wallet, a transfer's receiver) and the
    /// ledger's view of them.
    fn lock(&mut self, partner: &str, operation: &Operation) -> (Option<u64>, Option<u64>, Locked) {
        let (own, receiver, target) = match operation {
            Operation::Earn { user, .. } => (Some(self.ensure_wallet(partner, user)), None, None),
            Operation::Use { user, .. } => (self.wallet_of(partner, user.as_str()), None, None),
            Operation::Transfer { request } => {
                let receiver = self.ensure_wallet(partner, &request.to_user_id);
                (
                    self.wallet_of(partner, request.from_user_id.as_str()),
                    Some(receiver),
                    None,
                )
            }
            Operation::Cancel { transaction } => match self.entries.get(transaction) {
                Some(row) if self.wallets[&row.wallet].partner == partner => {
                    let drawn = self.allocations.get(transaction).cloned().unwrap_or_default();
                    let target = CancelTarget {
                        movement: row.entry.movement,
                        amount: row.entry.amount.unsigned_abs(),
                        cancelled: row.entry.cancelled_by.is_some(),
                        held: self.held.contains_key(transaction),
                        drawn: drawn
                            .into_iter()
                            .map(|a| (a, self.lots.get(&a.lot_id).map_or(0, |l| l.remaining)))
                            .collect(),
                    };
                    (Some(row.wallet), None, Some(target))
                }
                _ => (None, None, None),
            },
        };
        let locked = Locked {
            wallet: own.map(|w| self.state_of(w)),
            receiver: receiver.map(|w| self.state_of(w)),
            target,
        };
        (own, receiver, locked)
    }

    fn append(&mut self, wallet: u64, mut entry: Entry) -> TransactionId {
        self.next_entry += 1;
        entry.transaction_id = self.next_entry;
        self.entries.insert(self.next_entry, EntryRow { wallet, entry });
        self.next_entry
    }

    /// Writes `plan` as the MySQL records persist it; the ids of the principal entries.
    fn persist(&mut self, plan: &Plan, own: u64, receiver: Option<u64>, now: DateTime<Utc>) -> HashMap<Side, u64> {
        let wallet_of = |side: Side| match side {
            Side::Own => own,
            Side::Receiver => receiver.unwrap_or(own),
        };
        let mut principals: HashMap<Side, TransactionId> = HashMap::new();
        let mut links: Vec<(TransactionId, Side)> = Vec::new();
        for planned in &plan.entries {
            let related = match planned.related {
                Some(Related::Transaction(id)) => Some(id),
                Some(Related::Principal(side)) => principals.get(&side).copied(),
                None => None,
            };
            let entry = Entry {
                transaction_id: 0,
                movement: planned.movement,
                amount: planned.amount,
                balance_after: planned.balance_after,
                reason: planned.reason.clone(),
                order_id: planned.order_id.clone(),
                related_transaction_id: related,
                cancelled_by: None,
                created_at: now,
            };
            let id = self.append(wallet_of(planned.side), entry);
            if planned.principal {
                principals.insert(planned.side, id);
            }
            if let (Some(Related::Principal(side)), None) = (planned.related, related) {
                links.push((id, side));
            }
        }
        for (id, side) in links {
            let linked = principals.get(&side).copied();
            if let Some(row) = self.entries.get_mut(&id) {
                row.entry.related_transaction_id = linked;
            }
        }
        for new in &plan.new_lots {
            self.next_lot += 1;
            let row = LotRow {
                wallet: wallet_of(new.side),
                remaining: new.amount,
                expires_at: new.expires_at,
            };
            self.lots.insert(self.next_lot, row);
        }
        if !plan.drawn.is_empty()
            && let Some(id) = principals.get(&Side::Own)
        {
            self.allocations.insert(*id, plan.drawn.clone());
        }
        if let (Some(cancelled), Some(by)) = (plan.cancels, principals.get(&Side::Own))
            && let Some(row) = self.entries.get_mut(&cancelled)
        {
            row.entry.cancelled_by = Some(*by);
        }
        for change in &plan.lots {
            if let Some(lot) = self.lots.get_mut(&change.id) {
                lot.remaining = change.remaining;
            }
        }
        for (side, balance) in &plan.balances {
            if let Some(wallet) = self.wallets.get_mut(&wallet_of(*side)) {
                wallet.balance = *balance;
            }
        }
        principals
    }

    fn run(&mut self, partner: &str, operation: &Operation, now: DateTime<Utc>) -> Outcome {
        let (mut own, mut receiver, mut locked) = self.lock(partner, operation);
        // Points held by a hold that has ended are the wallet's again before it writes.
        let ended: Vec<TransactionId> = self
            .held
            .iter()
            .filter(|(_, (wallet, _, end))| [own, receiver].contains(&Some(*wallet)) && hold_ended(*end, now))
            .map(|(t, _)| *t)
            .collect();
        if !ended.is_empty() {
            for transaction in ended {
                self.release_held(partner, transaction, now);
            }
            (own, receiver, locked) = self.lock(partner, operation);
        }
        let plan = ledger::plan(operation, locked, now);
        match plan.answer {
            Answer::Refused(refusal) => Outcome::Refused(refusal),
            Answer::Done { balance, to_balance } => {
                let own = own.expect("a write the ledger did names a wallet");
                let made = self.persist(&plan, own, receiver, now);
                Outcome::Done(Receipt {
                    transaction_id: made[&Side::Own],
                    balance,
                    to_transaction_id: made.get(&Side::Receiver).copied(),
                    to_balance,
                })
            }
        }
    }

    /// The held use cancelled by the ledger's cancel, as the records release a hold.
    fn release_held(&mut self, partner: &str, transaction: TransactionId, now: DateTime<Utc>) {
        if self.held.remove(&transaction).is_some() {
            self.run(partner, &Operation::Cancel { transaction }, now);
        }
    }

    fn partner_of(&self, transaction: TransactionId) -> Option<String> {
        let wallet = self.entries.get(&transaction)?.wallet;
        Some(self.wallets[&wallet].partner.clone())
    }

    /// Expires up to `max_lots` due lots, wallet by wallet in id order, as the sweep does.
    fn expire(&mut self, now: DateTime<Utc>, max_lots: u32) -> u64 {
        let mut left = max_lots as usize;
        let mut expired = 0;
        let wallets: Vec<u64> = self.wallets.keys().copied().collect();
        for wallet in wallets {
            let mut due = ledger::due_lots(&self.live_lots(wallet), now);
            due.truncate(left);
            if due.is_empty() {
                continue;
            }
            let (entries, changes, balance) = ledger::expire(Side::Own, self.wallets[&wallet].balance, &due);
            let plan = Plan {
                answer: Answer::Done {
                    balance,
                    to_balance: None,
                },
                entries,
                lots: changes,
                new_lots: Vec::new(),
                drawn: Vec::new(),
                cancels: None,
                balances: vec![(Side::Own, balance)],
            };
            self.persist(&plan, wallet, None, now);
            left -= due.len();
            expired += due.len() as u64;
        }
        expired
    }
}

#[async_trait]
impl PointRecords for MemoryPoints {
    async fn apply(
        &self,
        partner: &str,
        key: &IdempotencyKey,
        operation: &Operation,
        now: DateTime<Utc>,
        records_allowed: u64,
    ) -> Result<Applied, PointsError> {
        let mut tables = self.state.lock().unwrap();
        let fingerprint = operation.fingerprint();
        let slot = (partner.to_owned(), key.as_str().to_owned());
        if let Some((hash, outcome, _)) = tables.keys.get(&slot) {
            if *hash != fingerprint {
                return Err(PointsError::IdempotencyKeyReused);
            }
            return Ok(Applied {
                outcome: outcome.clone(),
                replayed: true,
            });
        }
        let active: u64 = tables
            .key_counts
            .range((partner.to_owned(), first_active_key_day(now))..)
            .take_while(|((p, _), _)| p == partner)
            .map(|(_, records)| records)
            .sum();
        admit(Limit::IdempotencyRecords, records_allowed, active + 1)?;
        let outcome = tables.run(partner, operation, now);
        tables.keys.insert(slot, (fingerprint, outcome.clone(), now));
        *tables
            .key_counts
            .entry((partner.to_owned(), now.date_naive()))
            .or_default() += 1;
        Ok(Applied {
            outcome,
            replayed: false,
        })
    }

    async fn validity_days(&self, partner: &str) -> Result<Option<u32>, Unavailable> {
        Ok(self.state.lock().unwrap().policies.get(partner).copied())
    }

    async fn lots(&self, partner: &str, user: &UserId) -> Result<Vec<Lot>, Unavailable> {
        let tables = self.state.lock().unwrap();
        let mut lots = tables
            .wallet_of(partner, user.as_str())
            .map_or_else(Vec::new, |w| tables.live_lots(w));
        lots.sort_by_key(|l| (l.expires_at, l.id));
        Ok(lots)
    }

    async fn holds(&self, partner: &str, user: &UserId) -> Result<Vec<HeldPoints>, Unavailable> {
        let tables = self.state.lock().unwrap();
        let wallet = tables.wallet_of(partner, user.as_str());
        Ok(tables
            .held
            .iter()
            .filter(|(_, (w, _, _))| Some(*w) == wallet)
            .map(|(t, (_, amount, end))| HeldPoints {
                transaction_id: *t,
                amount: *amount,
                expires_at: *end,
                drawn: tables.allocations.get(t).cloned().unwrap_or_default(),
            })
            .collect())
    }

    async fn history(&self, partner: &str, user: &UserId, query: &HistoryQuery) -> Result<Vec<Entry>, Unavailable> {
        let tables = self.state.lock().unwrap();
        let Some(wallet) = tables.wallet_of(partner, user.as_str()) else {
            return Ok(Vec::new());
        };
        Ok(tables
            .entries
            .values()
            .rev()
            .filter(|row| row.wallet == wallet && query.before.is_none_or(|b| row.entry.transaction_id < b))
            .take(query.limit as usize + 1)
            .map(|row| row.entry.clone())
            .collect())
    }

    async fn expire_batch(&self, now: DateTime<Utc>, max_lots: u32) -> Result<u64, Unavailable> {
        self.batches.lock().unwrap().push(max_lots);
        Ok(self.state.lock().unwrap().expire(now, max_lots))
    }

    async fn prune_keys(&self, now: DateTime<Utc>, max_records: u32) -> Result<u64, Unavailable> {
        let mut tables = self.state.lock().unwrap();
        let mut due: Vec<(DateTime<Utc>, (String, String))> = tables
            .keys
            .iter()
            .filter(|(_, (_, _, made))| *made < keys_expire_before(now))
            .map(|(slot, (_, _, made))| (*made, slot.clone()))
            .collect();
        due.sort();
        due.truncate(max_records as usize);
        for (_, slot) in &due {
            tables.keys.remove(slot);
        }
        let first_day = first_active_key_day(now);
        tables.key_counts.retain(|(_, day), _| *day >= first_day);
        Ok(due.len() as u64)
    }
}

/// Grants in memory: each an EARN planned by the ledger and written as the MySQL records write it,
/// with its key's record; a key recorded already is not granted again.
#[async_trait]
impl PointGrants<()> for MemoryPoints {
    async fn grant_points(
        &self,
        _: &mut (),
        partner: &str,
        grants: &[PointGrant],
        now: DateTime<Utc>,
    ) -> Result<Vec<TransactionId>, TxError> {
        let mut tables = self.state.lock().unwrap();
        let mut made = Vec::with_capacity(grants.len());
        for grant in grants {
            let slot = (partner.to_owned(), grant.key.as_str().to_owned());
            if let Some((_, Outcome::Done(receipt), _)) = tables.keys.get(&slot) {
                made.push(receipt.transaction_id);
                continue;
            }
            let operation = grant.operation();
            let Outcome::Done(receipt) = tables.run(partner, &operation, now) else {
                return Err(TxError::Unavailable(Unavailable::new("memory", "an earn was refused")));
            };
            made.push(receipt.transaction_id);
            tables
                .keys
                .insert(slot, (operation.fingerprint(), Outcome::Done(receipt), now));
        }
        Ok(made)
    }
}

/// Holds in memory: a held use planned by the ledger, released by its cancel.
#[async_trait]
impl PointHolds<()> for MemoryPoints {
    async fn hold_points(
        &self,
        _: &mut (),
        partner: &str,
        user: &UserId,
        amount: u64,
        order: &OrderId,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Result<TransactionId, PointsError>, TxError> {
        let mut tables = self.state.lock().unwrap();
        let Some(wallet) = tables.wallet_of(partner, user.as_str()) else {
            return Ok(Err(PointsError::InsufficientPoints));
        };
        let operation = Operation::Use {
            user: user.clone(),
            request: UsePoints {
                amount,
                order_id: order.clone(),
                reason: Some(HOLD_REASON.to_owned()),
            },
        };
        match tables.run(partner, &operation, now) {
            Outcome::Refused(refusal) => Ok(Err(refusal.into())),
            Outcome::Done(receipt) => {
                tables.held.insert(receipt.transaction_id, (wallet, amount, until));
                Ok(Ok(receipt.transaction_id))
            }
        }
    }

    async fn confirm_points_hold(&self, _: &mut (), transaction: TransactionId) -> Result<bool, TxError> {
        Ok(self.state.lock().unwrap().held.remove(&transaction).is_some())
    }

    async fn release_points_hold(
        &self,
        _: &mut (),
        transaction: TransactionId,
        now: DateTime<Utc>,
    ) -> Result<(), TxError> {
        let mut tables = self.state.lock().unwrap();
        if let Some(partner) = tables.partner_of(transaction) {
            tables.release_held(&partner, transaction, now);
        }
        Ok(())
    }
}

impl MemoryPoints {
    /// Every history entry of the user's wallet, oldest first (for comparing backends).
    pub fn entries(&self, partner: &str, user: &str) -> Vec<Entry> {
        let tables = self.state.lock().unwrap();
        let wallet = tables.wallet_of(partner, user);
        tables
            .entries
            .values()
            .filter(|row| Some(row.wallet) == wallet)
            .map(|row| row.entry.clone())
            .collect()
    }
}
