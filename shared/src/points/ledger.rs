//! The points ledger's arithmetic, pure: what one write does to the wallets it holds, as a plan of
//! rows to write and the answer to give. The MySQL records lock, read, run [`plan`] and persist the
//! plan; the in-memory fake applies the same plan to its maps. Nothing here knows either.
//!
//! Every write first expires its wallets' lots past their time (an EXPIRE entry each, before
//! anything else, so the history reads in order and the balance it answers is what is spendable);
//! refusals change nothing, not even that.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::domain::{Allocation, Lot, LotId, Movement, Operation, Refusal, TransactionId, allocate, split_cancel};

/// A wallet as a write sees it under its lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletState {
    /// The stored balance: lots past their time still count until a write or the sweep expires them.
    pub balance: u64,
    /// Its lots with points left, in any order.
    pub lots: Vec<Lot>,
}

/// The entry a cancel names, as the write reads it under the wallet's lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelTarget {
    pub movement: Movement,
    /// What it took from the balance (positive).
    pub amount: u64,
    pub cancelled: bool,
    /// A checkout hold holds it: only the hold's confirm or release settles it, never a cancel
    /// (the release cancels it as the hold, with this false).
    pub held: bool,
    /// What it drew, each with what its lot holds now (a lot drawn empty holds 0 and is not
    /// among the wallet's lots).
    pub drawn: Vec<(Allocation, u64)>,
}

/// What a write found under its locks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Locked {
    /// The wallet the operation names: the earner's, the user's, the cancelled use's, a
    /// transfer's sender. `None` when it has none.
    pub wallet: Option<WalletState>,
    /// A transfer's receiving wallet (created before the write).
    pub receiver: Option<WalletState>,
    /// A cancel's entry: `None` when it is unknown or another partner's.
    pub target: Option<CancelTarget>,
}

/// Which of the write's wallets a row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// The wallet the operation names.
    Own,
    /// A transfer's receiving wallet.
    Receiver,
}

/// What an entry points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Related {
    /// An entry written before (a cancelled use).
    Transaction(TransactionId),
    /// The principal entry of one side of this write (made before or after this one).
    Principal(Side),
}

/// A history entry to append; its id is made by the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedEntry {
    pub side: Side,
    pub movement: Movement,
    /// The change to the balance (negative for USE, EXPIRE, TRANSFER_OUT).
    pub amount: i64,
    pub balance_after: u64,
    pub reason: Option<String>,
    pub order_id: Option<String>,
    pub related: Option<Related>,
    /// The lot an EXPIRE entry expired.
    pub lot_id: Option<LotId>,
    /// The write's own entry on its side: the receipt names its id, new lots and allocations
    /// hang off it.
    pub principal: bool,
}

impl PlannedEntry {
    fn new(side: Side, movement: Movement, amount: i64, balance_after: u64) -> Self {
        Self {
            side,
            movement,
            amount,
            balance_after,
            reason: None,
            order_id: None,
            related: None,
            lot_id: None,
            principal: false,
        }
    }
}

/// A lot's new state: what is left, and what this write added to its amount and its expired total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LotChange {
    pub id: LotId,
    pub remaining: u64,
    pub expired: u64,
    /// Points a transfer added to a lot of the same expiry (its amount grows with its remainder).
    pub added: u64,
}

/// A lot the write creates, made by its side's principal entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewLot {
    pub side: Side,
    pub amount: u64,
    pub expires_at: DateTime<Utc>,
}

/// What the write answers, once the store knows the ids it made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Refused(Refusal),
    /// The balances after the write: the own wallet's, and a transfer's receiver's.
    Done {
        balance: u64,
        to_balance: Option<u64>,
    },
}

/// Everything one write changes, in the order it must be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub answer: Answer,
    pub entries: Vec<PlannedEntry>,
    /// At most one change per lot (its last remainder, every expiry summed).
    pub lots: Vec<LotChange>,
    pub new_lots: Vec<NewLot>,
    /// What the own principal entry drew (a use, a transfer).
    pub drawn: Vec<Allocation>,
    /// The use this write cancels: marked cancelled by the own principal entry.
    pub cancels: Option<TransactionId>,
    /// The wallets' new balances.
    pub balances: Vec<(Side, u64)>,
}

impl Plan {
    fn refused(refusal: Refusal) -> Self {
        Self {
            answer: Answer::Refused(refusal),
            entries: Vec::new(),
            lots: Vec::new(),
            new_lots: Vec::new(),
            drawn: Vec::new(),
            cancels: None,
            balances: Vec::new(),
        }
    }

    /// A write under way: `finish` gives it its answer.
    fn writing() -> Self {
        Self {
            answer: Answer::Done {
                balance: 0,
                to_balance: None,
            },
            ..Self::refused(Refusal::InsufficientPoints)
        }
    }

    /// Appends `entry`, made as its side's principal.
    fn principal(&mut self, entry: PlannedEntry) {
        self.entries.push(PlannedEntry {
            principal: true,
            ..entry
        });
    }

    fn change(&mut self, change: LotChange) {
        match self.lots.iter_mut().find(|c| c.id == change.id) {
            Some(c) => {
                c.remaining = change.remaining;
                c.expired += change.expired;
                c.added += change.added;
            }
            None => self.lots.push(change),
        }
    }

    /// What `lot` holds now, after the changes planned so far; `before` if none touched it.
    fn remaining(&self, lot: LotId, before: u64) -> u64 {
        self.lots.iter().find(|c| c.id == lot).map_or(before, |c| c.remaining)
    }
}

/// The lots of `lots` past their time, in the order they expire: the sweep and every write expire
/// them alike.
pub fn due_lots(lots: &[Lot], now: DateTime<Utc>) -> Vec<Lot> {
    let mut due: Vec<Lot> = lots
        .iter()
        .filter(|l| l.is_due(now) && l.remaining > 0)
        .copied()
        .collect();
    due.sort_by_key(|l| (l.expires_at, l.id));
    due
}

/// Expiring `due` lots of a wallet whose balance is `balance`: an EXPIRE entry and a change per
/// lot, in order; the balance after. What the expiry sweep writes, and the first step of a write.
pub fn expire(side: Side, balance: u64, due: &[Lot]) -> (Vec<PlannedEntry>, Vec<LotChange>, u64) {
    let mut balance = balance;
    let mut entries = Vec::with_capacity(due.len());
    let mut changes = Vec::with_capacity(due.len());
    for lot in due {
        balance = balance.saturating_sub(lot.remaining);
        changes.push(LotChange {
            id: lot.id,
            remaining: 0,
            expired: lot.remaining,
            added: 0,
        });
        entries.push(PlannedEntry {
            lot_id: Some(lot.id),
            ..PlannedEntry::new(side, Movement::Expire, -(lot.remaining as i64), balance)
        });
    }
    (entries, changes, balance)
}

impl Plan {
    /// Expires the wallet's due lots into the plan; the wallet keeps its live lots and the balance
    /// after.
    fn expire_due(&mut self, side: Side, wallet: &mut WalletState, now: DateTime<Utc>) {
        let due = due_lots(&wallet.lots, now);
        let (entries, changes, balance) = expire(side, wallet.balance, &due);
        self.entries.extend(entries);
        for change in changes {
            self.change(change);
        }
        wallet.balance = balance;
        wallet.lots.retain(|l| !l.is_due(now));
    }

    /// Takes `drawn` from the wallet's lots.
    fn draw(&mut self, wallet: &WalletState, drawn: &[Allocation]) {
        for a in drawn {
            if let Some(lot) = wallet.lots.iter().find(|l| l.id == a.lot_id) {
                let left = self.remaining(lot.id, lot.remaining) - a.amount;
                self.change(LotChange {
                    id: lot.id,
                    remaining: left,
                    expired: 0,
                    added: 0,
                });
            }
        }
        self.drawn = drawn.to_vec();
    }
}

/// What `operation` does to the wallets it `locked`, at `now`.
pub fn plan(operation: &Operation, locked: Locked, now: DateTime<Utc>) -> Plan {
    match operation {
        Operation::Earn {
            request, expires_at, ..
        } => {
            // The records create the wallet before they lock it: an earn always has one.
            let mut wallet = locked.wallet.unwrap_or(WalletState {
                balance: 0,
                lots: Vec::new(),
            });
            earn(&mut wallet, request.amount, &request.reason, *expires_at, now)
        }
        Operation::Use { request, .. } => {
            let Some(mut wallet) = locked.wallet else {
                return Plan::refused(Refusal::InsufficientPoints);
            };
            // Refused before anything else: a refusal changes nothing.
            let Some(drawn) = allocate(&wallet.lots, request.amount, now) else {
                return Plan::refused(Refusal::InsufficientPoints);
            };
            let mut plan = Plan::writing();
            plan.expire_due(Side::Own, &mut wallet, now);
            wallet.balance -= request.amount;
            plan.principal(PlannedEntry {
                reason: request.reason.clone(),
                order_id: Some(request.order_id.as_str().to_owned()),
                ..PlannedEntry::new(Side::Own, Movement::Use, -(request.amount as i64), wallet.balance)
            });
            plan.draw(&wallet, &drawn);
            plan.finish(&[(Side::Own, wallet.balance)])
        }
        Operation::Cancel { transaction } => match (locked.target, locked.wallet) {
            (Some(target), Some(wallet)) => cancel(*transaction, target, wallet, now),
            _ => Plan::refused(Refusal::TransactionNotFound),
        },
        Operation::Transfer { request } => {
            let Some(mut sender) = locked.wallet else {
                return Plan::refused(Refusal::InsufficientPoints);
            };
            let Some(drawn) = allocate(&sender.lots, request.amount, now) else {
                return Plan::refused(Refusal::InsufficientPoints);
            };
            let mut receiver = locked.receiver.unwrap_or(WalletState {
                balance: 0,
                lots: Vec::new(),
            });
            transfer(&mut sender, &mut receiver, request.amount, &drawn, now)
        }
    }
}

impl Plan {
    fn finish(mut self, balances: &[(Side, u64)]) -> Self {
        self.balances = balances.to_vec();
        let own = balances.iter().find(|(s, _)| *s == Side::Own).map_or(0, |b| b.1);
        let to = balances.iter().find(|(s, _)| *s == Side::Receiver).map(|b| b.1);
        self.answer = Answer::Done {
            balance: own,
            to_balance: to,
        };
        self
    }
}

/// An EARN of `amount` into a new lot expiring at `expires_at`: also what a grading reward grants.
pub fn earn(
    wallet: &mut WalletState,
    amount: u64,
    reason: &str,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Plan {
    let mut plan = Plan::writing();
    plan.expire_due(Side::Own, wallet, now);
    wallet.balance += amount;
    plan.principal(PlannedEntry {
        reason: Some(reason.to_owned()),
        ..PlannedEntry::new(Side::Own, Movement::Earn, amount as i64, wallet.balance)
    });
    plan.new_lots.push(NewLot {
        side: Side::Own,
        amount,
        expires_at,
    });
    plan.finish(&[(Side::Own, wallet.balance)])
}

/// A use cancelled: what it drew goes back to its lots, except from lots whose time has passed
/// meanwhile: that part expires at once (an EXPIRE entry each, after the USE_CANCEL).
fn cancel(transaction: TransactionId, target: CancelTarget, mut wallet: WalletState, now: DateTime<Utc>) -> Plan {
    if target.movement != Movement::Use || target.cancelled || target.held {
        return Plan::refused(Refusal::NotCancellable);
    }
    let mut plan = Plan::writing();
    plan.expire_due(Side::Own, &mut wallet, now);
    let allocations: Vec<Allocation> = target.drawn.iter().map(|(a, _)| *a).collect();
    let held_before = |lot: LotId| target.drawn.iter().find(|(a, _)| a.lot_id == lot).map_or(0, |d| d.1);
    let (back, lapsed) = split_cancel(&allocations, now);
    for a in &lapsed {
        let remaining = plan.remaining(a.lot_id, held_before(a.lot_id));
        plan.change(LotChange {
            id: a.lot_id,
            remaining,
            expired: a.amount,
            added: 0,
        });
    }
    for a in &back {
        let remaining = plan.remaining(a.lot_id, held_before(a.lot_id)) + a.amount;
        plan.change(LotChange {
            id: a.lot_id,
            remaining,
            expired: 0,
            added: 0,
        });
    }
    wallet.balance += target.amount;
    plan.principal(PlannedEntry {
        related: Some(Related::Transaction(transaction)),
        ..PlannedEntry::new(Side::Own, Movement::UseCancel, target.amount as i64, wallet.balance)
    });
    for a in &lapsed {
        wallet.balance -= a.amount;
        plan.entries.push(PlannedEntry {
            lot_id: Some(a.lot_id),
            related: Some(Related::Principal(Side::Own)),
            ..PlannedEntry::new(Side::Own, Movement::Expire, -(a.amount as i64), wallet.balance)
        });
    }
    plan.cancels = Some(transaction);
    plan.finish(&[(Side::Own, wallet.balance)])
}

/// The receiver's lots keep the sender's expiry dates: what is drawn per date joins the receiver's
/// live lot of that date, or makes a new one (so transfers back and forth do not pile up lots
/// that every later write of the wallet reads under its lock).
fn transfer(
    sender: &mut WalletState,
    receiver: &mut WalletState,
    amount: u64,
    drawn: &[Allocation],
    now: DateTime<Utc>,
) -> Plan {
    let mut plan = Plan::writing();
    plan.expire_due(Side::Own, sender, now);
    plan.expire_due(Side::Receiver, receiver, now);
    sender.balance -= amount;
    receiver.balance += amount;
    plan.principal(PlannedEntry {
        related: Some(Related::Principal(Side::Receiver)),
        ..PlannedEntry::new(Side::Own, Movement::TransferOut, -(amount as i64), sender.balance)
    });
    plan.principal(PlannedEntry {
        related: Some(Related::Principal(Side::Own)),
        ..PlannedEntry::new(Side::Receiver, Movement::TransferIn, amount as i64, receiver.balance)
    });
    let mut by_date: BTreeMap<DateTime<Utc>, u64> = BTreeMap::new();
    for a in drawn {
        *by_date.entry(a.expires_at).or_default() += a.amount;
    }
    for (expires_at, amount) in by_date {
        match receiver.lots.iter().find(|l| l.expires_at == expires_at) {
            Some(lot) => {
                let remaining = plan.remaining(lot.id, lot.remaining) + amount;
                plan.change(LotChange {
                    id: lot.id,
                    remaining,
                    expired: 0,
                    added: amount,
                });
            }
            None => plan.new_lots.push(NewLot {
                side: Side::Receiver,
                amount,
                expires_at,
            }),
        }
    }
    plan.draw(sender, drawn);
    plan.finish(&[(Side::Own, sender.balance), (Side::Receiver, receiver.balance)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::UserId;
    use crate::points::domain::{TransferPoints, UsePoints};

    fn at(days: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap() + chrono::Duration::days(days)
    }

    fn lot(id: LotId, remaining: u64, expires_in_days: i64) -> Lot {
        Lot {
            id,
            remaining,
            expires_at: at(expires_in_days),
        }
    }

    fn wallet(lots: &[Lot]) -> WalletState {
        WalletState {
            balance: lots.iter().map(|l| l.remaining).sum(),
            lots: lots.to_vec(),
        }
    }

    fn user(name: &str) -> UserId {
        UserId::parse(name).unwrap()
    }

    #[test]
    fn a_use_expires_due_lots_first_then_draws_first_expiring_first() {
        let use_points = Operation::Use {
            user: user("a"),
            request: UsePoints {
                amount: 12,
                order_id: "o".to_owned().try_into().unwrap(),
                reason: None,
            },
        };
        let locked = Locked {
            wallet: Some(wallet(&[lot(1, 10, 5), lot(2, 4, -1), lot(3, 10, 2)])),
            ..Locked::default()
        };
        let plan = plan(&use_points, locked, at(0));
        let kinds: Vec<_> = plan
            .entries
            .iter()
            .map(|e| (e.movement, e.amount, e.balance_after))
            .collect();
        assert_eq!(kinds, [(Movement::Expire, -4, 20), (Movement::Use, -12, 8)]);
        let lots: Vec<_> = plan.lots.iter().map(|c| (c.id, c.remaining, c.expired)).collect();
        assert_eq!(lots, [(2, 0, 4), (3, 0, 0), (1, 8, 0)]);
        assert_eq!(
            plan.answer,
            Answer::Done {
                balance: 8,
                to_balance: None
            }
        );
        assert_eq!(plan.balances, [(Side::Own, 8)]);
        let refused = super::plan(
            &use_points,
            Locked {
                wallet: Some(wallet(&[lot(1, 11, 5), lot(2, 4, -1)])),
                ..Locked::default()
            },
            at(0),
        );
        assert_eq!(refused.answer, Answer::Refused(Refusal::InsufficientPoints));
        assert!(
            refused.entries.is_empty() && refused.lots.is_empty(),
            "a refusal changes nothing"
        );
    }

    #[test]
    fn a_cancel_puts_back_into_live_lots_and_expires_what_lapsed_in_one_change_per_lot() {
        // Lot 1 lapsed since the use: its remainder expires first, then what the use drew of it.
        let target = CancelTarget {
            movement: Movement::Use,
            amount: 7,
            cancelled: false,
            held: false,
            drawn: vec![
                (
                    Allocation {
                        lot_id: 1,
                        amount: 5,
                        expires_at: at(-1),
                    },
                    3,
                ),
                (
                    Allocation {
                        lot_id: 2,
                        amount: 2,
                        expires_at: at(4),
                    },
                    0,
                ),
            ],
        };
        let locked = Locked {
            wallet: Some(wallet(&[lot(1, 3, -1)])),
            target: Some(target.clone()),
            ..Locked::default()
        };
        let plan = plan(&Operation::Cancel { transaction: 9 }, locked.clone(), at(0));
        let kinds: Vec<_> = plan
            .entries
            .iter()
            .map(|e| (e.movement, e.amount, e.balance_after, e.related))
            .collect();
        assert_eq!(
            kinds,
            [
                (Movement::Expire, -3, 0, None),
                (Movement::UseCancel, 7, 7, Some(Related::Transaction(9))),
                (Movement::Expire, -5, 2, Some(Related::Principal(Side::Own))),
            ]
        );
        let lots: Vec<_> = plan.lots.iter().map(|c| (c.id, c.remaining, c.expired)).collect();
        assert_eq!(lots, [(1, 0, 8), (2, 2, 0)]);
        assert_eq!(
            (plan.cancels, plan.answer),
            (
                Some(9),
                Answer::Done {
                    balance: 2,
                    to_balance: None
                }
            )
        );
        for refused in [
            CancelTarget {
                cancelled: true,
                ..target.clone()
            },
            CancelTarget {
                held: true,
                ..target.clone()
            },
            CancelTarget {
                movement: Movement::Earn,
                ..target
            },
        ] {
            let locked = Locked {
                target: Some(refused),
                ..locked.clone()
            };
            let plan = super::plan(&Operation::Cancel { transaction: 9 }, locked, at(0));
            assert_eq!(plan.answer, Answer::Refused(Refusal::NotCancellable));
        }
        let unknown = super::plan(&Operation::Cancel { transaction: 9 }, Locked::default(), at(0));
        assert_eq!(unknown.answer, Answer::Refused(Refusal::TransactionNotFound));
    }

    #[test]
    fn a_transfer_keeps_the_senders_dates_joining_the_receivers_lot_of_the_same_date() {
        let transfer = Operation::Transfer {
            request: TransferPoints {
                from_user_id: user("a"),
                to_user_id: user("b"),
                amount: 15,
            },
        };
        let locked = Locked {
            wallet: Some(wallet(&[lot(1, 10, 3), lot(2, 10, 8)])),
            receiver: Some(wallet(&[lot(7, 1, 3), lot(8, 2, -2)])),
            ..Locked::default()
        };
        let plan = plan(&transfer, locked, at(0));
        let kinds: Vec<_> = plan
            .entries
            .iter()
            .map(|e| (e.side, e.movement, e.amount, e.principal))
            .collect();
        assert_eq!(
            kinds,
            [
                (Side::Receiver, Movement::Expire, -2, false),
                (Side::Own, Movement::TransferOut, -15, true),
                (Side::Receiver, Movement::TransferIn, 15, true),
            ]
        );
        let lots: Vec<_> = plan
            .lots
            .iter()
            .map(|c| (c.id, c.remaining, c.expired, c.added))
            .collect();
        assert_eq!(lots, [(8, 0, 2, 0), (7, 11, 0, 10), (1, 0, 0, 0), (2, 5, 0, 0)]);
        assert_eq!(
            plan.new_lots,
            [NewLot {
                side: Side::Receiver,
                amount: 5,
                expires_at: at(8)
            }]
        );
        assert_eq!(
            plan.answer,
            Answer::Done {
                balance: 5,
                to_balance: Some(16)
            }
        );
    }

    #[test]
    fn the_sweep_and_a_write_expire_alike() {
        let lots = [lot(3, 5, -1), lot(1, 2, -3), lot(2, 9, 4)];
        let due = due_lots(&lots, at(0));
        assert_eq!(due.iter().map(|l| l.id).collect::<Vec<_>>(), [1, 3], "oldest first");
        let (entries, changes, balance) = expire(Side::Own, 16, &due);
        assert_eq!(balance, 9);
        assert_eq!(entries.iter().map(|e| e.balance_after).collect::<Vec<_>>(), [14, 9]);
        assert_eq!(changes.iter().map(|c| c.expired).collect::<Vec<_>>(), [2, 5]);
        let mut earner = wallet(&lots);
        let earned = earn(&mut earner, 1, "r", at(9), at(0));
        assert_eq!(earned.entries[..2], entries[..]);
    }
}
