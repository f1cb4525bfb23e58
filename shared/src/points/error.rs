//! Everything the points context answers besides success; transient failures apart.

use super::domain::Refusal;
use crate::kernel::{InvalidField, Unavailable};

#[derive(Debug, thiserror::Error)]
pub enum PointsError {
    #[error("{0}")]
    Invalid(#[from] InvalidField),
    #[error("the wallet holds fewer spendable points than asked")]
    InsufficientPoints,
    #[error("only a USE not yet cancelled can be cancelled")]
    NotCancellable,
    /// Unknown, or another partner's: indistinguishable on purpose.
    #[error("transaction not found")]
    TransactionNotFound,
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyKeyReused,
    #[error("a request with this Idempotency-Key is still in progress; retry later")]
    InProgress,
    #[error(transparent)]
    LimitExceeded(#[from] crate::partners::domain::LimitExceeded),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

impl From<Refusal> for PointsError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::InsufficientPoints => Self::InsufficientPoints,
            Refusal::NotCancellable => Self::NotCancellable,
            Refusal::TransactionNotFound => Self::TransactionNotFound,
        }
    }
}

impl PointsError {
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}
