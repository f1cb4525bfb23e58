//! Everything the coupons context answers besides success; transient failures apart.

use crate::kernel::{InvalidField, Unavailable};

#[derive(Debug, thiserror::Error)]
pub enum CouponError {
    #[error("{0}")]
    Invalid(#[from] InvalidField),
    /// Unknown, another partner's, or another user's: indistinguishable on purpose.
    #[error("coupon not found")]
    NotFound,
    #[error("the coupon was used by another order")]
    AlreadyUsed,
    #[error("the coupon is held for another order being paid")]
    Held,
    #[error("the coupon has expired")]
    Expired,
    #[error("the coupon is not used by this order")]
    NotUsed,
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

impl CouponError {
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}
