//! Point wallets in memory, with the context's own rules (`allocate`, `split_cancel`) and the
//! idempotency contract (a key replays its outcome, or is refused for another request).

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::kernel::{Unavailable, UserId};
use crate::points::PointsError;
use crate::points::domain::{
    Allocation, Entry, HistoryQuery, IdempotencyKey, Lot, Movement, Operation, Outcome, Receipt, Refusal,
    TransactionId, allocate, split_cancel,
};
use crate::points::ports::{Applied, PointRecords};

#[derive(Default)]
pub struct MemoryPoints {
    pub state: Mutex<Ledger>,
    /// Each `expire_batch` call's `max_lots`.
    pub batches: Mutex<Vec<u32>>,
}

#[derive(Default)]
pub struct Ledger {
    /// (partner, user) → lots (all, spent ones included) and history, oldest first.
    pub wallets: HashMap<(String, String), (Vec<Lot>, Vec<Entry>)>,
    pub policies: HashMap<String, u32>,
    keys: HashMap<(String, String), (String, Outcome)>,
    /// transaction → (partner, user, what it drew).
    drawn: HashMap<TransactionId, (String, String, Vec<Allocation>)>,
    next_id: u64,
}

impl Ledger {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn balance(&self, owner: &(String, String)) -> u64 {
        self.wallets
            .get(owner)
            .map_or(0, |(lots, _)| lots.iter().map(|l| l.remaining).sum())
    }

    /// Appends an entry; its id.
    fn record(&mut self, owner: &(String, String), movement: Movement, amount: i64, now: DateTime<Utc>) -> u64 {
        let id = self.id();
        let balance_after = self.balance(owner);
        self.wallets.entry(owner.clone()).or_default().1.push(Entry {
            transaction_id: id,
            movement,
            amount,
            balance_after,
            reason: None,
            order_id: None,
            related_transaction_id: None,
            cancelled_by: None,
            created_at: now,
        });
        id
    }

    fn expire_due(&mut self, owner: &(String, String), now: DateTime<Utc>) {
        let due: Vec<u64> = self.wallets.get_mut(owner).map_or_else(Vec::new, |(lots, _)| {
            lots.iter_mut()
                .filter(|l| l.is_due(now) && l.remaining > 0)
                .map(|l| std::mem::take(&mut l.remaining))
                .collect()
        });
        for amount in due {
            self.record(owner, Movement::Expire, -(amount as i64), now);
        }
    }

    fn take(&mut self, owner: &(String, String), amount: u64, now: DateTime<Utc>) -> Option<Vec<Allocation>> {
        let lots = &mut self.wallets.get_mut(owner)?.0;
        let drawn = allocate(lots, amount, now)?;
        for a in &drawn {
            if let Some(lot) = lots.iter_mut().find(|l| l.id == a.lot_id) {
                lot.remaining -= a.amount;
            }
        }
        Some(drawn)
    }

    fn run(&mut self, partner: &str, operation: &Operation, now: DateTime<Utc>) -> Outcome {
        let owner = |user: &UserId| (partner.to_owned(), user.as_str().to_owned());
        let done = |ledger: &Self, id, who: &(String, String)| {
            Outcome::Done(Receipt {
                transaction_id: id,
                balance: ledger.balance(who),
                to_transaction_id: None,
                to_balance: None,
            })
        };
        match operation {
            Operation::Earn {
                user,
                request,
                expires_at,
            } => {
                let who = owner(user);
                self.expire_due(&who, now);
                let lot = self.id();
                self.wallets.entry(who.clone()).or_default().0.push(Lot {
                    id: lot,
                    remaining: request.amount,
                    expires_at: *expires_at,
                });
                let id = self.record(&who, Movement::Earn, request.amount as i64, now);
                done(self, id, &who)
            }
            Operation::Use { user, request } => {
                let who = owner(user);
                let Some(drawn) = self.take(&who, request.amount, now) else {
                    return Outcome::Refused(Refusal::InsufficientPoints);
                };
                self.expire_due(&who, now);
                let id = self.record(&who, Movement::Use, -(request.amount as i64), now);
                self.drawn.insert(id, (who.0.clone(), who.1.clone(), drawn));
                done(self, id, &who)
            }
            Operation::Cancel { transaction } => {
                let Some((p, user, drawn)) = self.drawn.get(transaction).cloned() else {
                    return Outcome::Refused(Refusal::TransactionNotFound);
                };
                if p != partner {
                    return Outcome::Refused(Refusal::TransactionNotFound);
                }
                let who = (p, user);
                self.drawn.remove(transaction);
                let (back, _lapsed) = split_cancel(&drawn, now);
                if let Some((lots, _)) = self.wallets.get_mut(&who) {
                    for a in back {
                        if let Some(lot) = lots.iter_mut().find(|l| l.id == a.lot_id) {
                            lot.remaining += a.amount;
                        }
                    }
                }
                let id = self.record(
                    &who,
                    Movement::UseCancel,
                    drawn.iter().map(|a| a.amount as i64).sum(),
                    now,
                );
                done(self, id, &who)
            }
            Operation::Transfer { request } => {
                let (from, to) = (owner(&request.from_user_id), owner(&request.to_user_id));
                let Some(drawn) = self.take(&from, request.amount, now) else {
                    return Outcome::Refused(Refusal::InsufficientPoints);
                };
                for a in &drawn {
                    let lot = self.id();
                    self.wallets.entry(to.clone()).or_default().0.push(Lot {
                        id: lot,
                        remaining: a.amount,
                        expires_at: a.expires_at,
                    });
                }
                let out = self.record(&from, Movement::TransferOut, -(request.amount as i64), now);
                let into = self.record(&to, Movement::TransferIn, request.amount as i64, now);
                Outcome::Done(Receipt {
                    transaction_id: out,
                    balance: self.balance(&from),
                    to_transaction_id: Some(into),
                    to_balance: Some(self.balance(&to)),
                })
            }
        }
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
    ) -> Result<Applied, PointsError> {
        let mut ledger = self.state.lock().unwrap();
        let fingerprint = operation.fingerprint();
        let slot = (partner.to_owned(), key.as_str().to_owned());
        if let Some((hash, outcome)) = ledger.keys.get(&slot) {
            if *hash != fingerprint {
                return Err(PointsError::IdempotencyKeyReused);
            }
            return Ok(Applied {
                outcome: outcome.clone(),
                replayed: true,
            });
        }
        let outcome = ledger.run(partner, operation, now);
        ledger.keys.insert(slot, (fingerprint, outcome.clone()));
        Ok(Applied {
            outcome,
            replayed: false,
        })
    }

    async fn validity_days(&self, partner: &str) -> Result<Option<u32>, Unavailable> {
        Ok(self.state.lock().unwrap().policies.get(partner).copied())
    }

    async fn lots(&self, partner: &str, user: &UserId) -> Result<Vec<Lot>, Unavailable> {
        let ledger = self.state.lock().unwrap();
        let owner = (partner.to_owned(), user.as_str().to_owned());
        Ok(ledger.wallets.get(&owner).map_or_else(Vec::new, |(lots, _)| {
            lots.iter().filter(|l| l.remaining > 0).copied().collect()
        }))
    }

    async fn history(&self, partner: &str, user: &UserId, query: &HistoryQuery) -> Result<Vec<Entry>, Unavailable> {
        let ledger = self.state.lock().unwrap();
        let owner = (partner.to_owned(), user.as_str().to_owned());
        Ok(ledger.wallets.get(&owner).map_or_else(Vec::new, |(_, entries)| {
            entries
                .iter()
                .rev()
                .filter(|e| query.before.is_none_or(|b| e.transaction_id < b))
                .take(query.limit as usize + 1)
                .cloned()
                .collect()
        }))
    }

    async fn expire_batch(&self, now: DateTime<Utc>, max_lots: u32) -> Result<u64, Unavailable> {
        self.batches.lock().unwrap().push(max_lots);
        let mut ledger = self.state.lock().unwrap();
        let mut expired = Vec::new();
        for (owner, (lots, _)) in ledger.wallets.iter_mut() {
            for lot in lots.iter_mut().filter(|l| l.is_due(now) && l.remaining > 0) {
                if expired.len() < max_lots as usize {
                    expired.push((owner.clone(), std::mem::take(&mut lot.remaining)));
                }
            }
        }
        for (owner, amount) in &expired {
            ledger.record(owner, Movement::Expire, -(*amount as i64), now);
        }
        Ok(expired.len() as u64)
    }
}
