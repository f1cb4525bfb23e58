//! The fcfs-coupons domain, by bounded context, and the adapters that connect it to AWS.
//!
//! - `alerts`: alarms turned into Discord messages (the `alert-notifier` function).
//! - `kernel`: what every context speaks in (a user id, a field that failed validation, a
//!   backing service that is unavailable, the clock).
//! - One folder per context (`issuance`, `keys`, `coupons`, `points`, `grading`, `partners`):
//!   `domain` (pure rules, no I/O), `ports` (the traits it needs from the outside), its error
//!   enum, and its use cases, plain async methods any trigger can call.
//! - `adapters`: the ports implemented, one module per technology.
//! - `http`: the API's transport contract, the one mapping of every context's errors to HTTP.
//! - `config`: a function's settings, SDK configuration and logging.
//! - `testkit` (feature `testkit`, tests only): in-memory fakes of the ports and a manual clock.

pub mod adapters;
pub mod alerts;
pub mod checkout;
pub mod config;
pub mod coupons;
pub mod events;
pub mod grading;
pub mod http;
pub mod issuance;
pub mod kernel;
pub mod keys;
pub mod partners;
pub mod points;
pub mod telemetry;
#[cfg(any(test, feature = "testkit"))]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "fakes and cases for tests only: a panic there is a failed test"
)]
pub mod testkit;
