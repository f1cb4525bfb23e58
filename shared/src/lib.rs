//! Domain and adapters shared by every fcfs-coupons function and tool.

pub mod api;
pub mod api_keys;
pub mod config;
pub mod db;
pub mod domain;
pub mod dynamo_keys;
pub mod fakes;
pub mod ports;
pub mod redis_ledger;
pub mod sqs_queue;
pub mod template;
