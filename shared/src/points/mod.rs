//! Points: a wallet per (partner, user) that earns in lots, each with its own expiry, and spends
//! first-expiring-first; uses are cancelled back into exactly the lots they drew from; transfers
//! keep the sender's expiry dates. Every write runs in one short transaction that locks the
//! wallet rows it changes (several in one global order) and commits the client's
//! `Idempotency-Key` with its effect.

pub mod domain;
pub mod error;
pub mod ledger;
pub mod ports;
pub mod service;

pub use error::PointsError;
pub use service::{PointsService, SweepSummary};
