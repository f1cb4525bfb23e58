//! Domain and adapters shared by every fcfs-coupons function and tool.

pub mod api;
pub mod config;
pub mod db;
pub mod domain;
pub mod fakes;
pub mod ports;
pub mod redis_ledger;
pub mod sqs_queue;
pub mod template;
