//! Coupons after issuance: a partner's user spends a coupon on an order (exactly once, under a row
//! lock), gets it back when the order is cancelled, lists their coupons, and expired coupons are
//! retired by a sweep.

pub mod domain;
pub mod error;
pub mod ports;
pub mod service;

pub use crate::kernel::SweepSummary;
pub use error::CouponError;
pub use service::CouponService;
