//! Everything the checkout context answers besides success; transient failures apart.

use crate::coupons::CouponError;
use crate::kernel::{InvalidField, TxError, Unavailable};
use crate::points::PointsError;

#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("{0}")]
    Invalid(#[from] InvalidField),
    /// Unknown, or another partner's: indistinguishable on purpose.
    #[error("hold not found")]
    HoldNotFound,
    /// The coupon's own refusal: not found (or not the user's), used, held, expired.
    #[error(transparent)]
    Coupon(CouponError),
    #[error("the wallet holds fewer spendable points than asked")]
    InsufficientPoints,
    #[error("the order has a live hold made with a different request")]
    OrderHeld,
    #[error("the hold has ended; nothing was changed")]
    HoldExpired,
    #[error("the hold was confirmed; it cannot be released")]
    HoldConfirmed,
    #[error("the hold was released; it cannot be confirmed")]
    HoldReleased,
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

impl From<CouponError> for CheckoutError {
    fn from(e: CouponError) -> Self {
        match e {
            CouponError::Unavailable(u) => Self::Unavailable(u),
            CouponError::Invalid(f) => Self::Invalid(f),
            other => Self::Coupon(other),
        }
    }
}

impl From<PointsError> for CheckoutError {
    fn from(e: PointsError) -> Self {
        match e {
            PointsError::InsufficientPoints => Self::InsufficientPoints,
            PointsError::Invalid(f) => Self::Invalid(f),
            PointsError::Unavailable(u) => Self::Unavailable(u),
            other => Self::Unavailable(Unavailable::new("points", other)),
        }
    }
}

impl From<TxError> for CheckoutError {
    fn from(e: TxError) -> Self {
        match e {
            TxError::Unavailable(u) => Self::Unavailable(u),
            TxError::Conflict(cause) => Self::Unavailable(Unavailable::new("mysql", cause)),
        }
    }
}

impl CheckoutError {
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}
