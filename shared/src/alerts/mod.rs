//! Alerts that reach people: a CloudWatch alarm's state change, as SNS delivers it, becomes a
//! Discord message (what, where, how bad, a link) posted to the team's webhook, retried with
//! backoff when Discord is busy, and a loud failure when it cannot be delivered.
//!
//! Locally Alertmanager posts to Discord itself (`observability/alertmanager.yml`); this context
//! is what the `alert-notifier` function runs on AWS.

pub mod domain;
pub mod error;
pub mod ports;
pub mod service;
