//! Checkout: a coupon and points held together for an order while it is paid (two phases, as a
//! ledger's pending transfer), then confirmed — the coupon USED, the points a USE, exactly as a
//! one-step use — or released, both back. A hold ends by itself at `expiresAt`: every read sees it
//! released from then on, the next write of its wallet or coupon releases its part, and a sweep
//! releases the rest. The coupon and the points stay their contexts' own: this context asks them
//! through their ports (`CouponHolds`, `PointHolds`) inside its transaction.

pub mod domain;
pub mod error;
pub mod ports;
pub mod service;

pub use error::CheckoutError;
pub use service::CheckoutService;
