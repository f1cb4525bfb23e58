//! Monthly grades: a partner's orders (`POST /v1/orders`), its grading policy (tiers by a user's
//! paid total in a month, each with an optional coupon and points), and the run that grades every
//! user of a month. A run is planned into partitions of users (a stable hash of the user id), one
//! SQS message each; a worker grades one partition with set-based SQL in short chunks and marks
//! its step done with its last chunk. No heartbeats: an unfinished partition's message comes back.

pub mod chunk;
pub mod domain;
pub mod error;
pub mod generate;
pub mod ports;
pub mod service;

pub use error::GradingError;
pub use service::GradingService;
