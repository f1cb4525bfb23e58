//! Domain and adapters shared by every fcfs-coupons function and tool.

pub mod config;
pub mod db;
pub mod template;
