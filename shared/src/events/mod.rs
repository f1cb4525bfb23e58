//! Partner events: every outcome a partner cares about (a coupon issued, used, expired; points
//! earned, used, moved; a grading run done), recorded in the same transaction as the effect (a
//! transactional outbox, `ports::Outbox`), given a sequence in commit order by the relay, and
//! delivered by push (signed webhooks, EventBridge) and by pull (`GET /v1/events`).

pub mod address;
pub mod catalog;
pub mod domain;
pub mod error;
pub mod ports;
pub mod relay;
pub mod service;
pub mod signature;
#[cfg(test)]
mod tests;

pub use error::EventsError;
