//! The contexts' ports implemented, grouped by technology.

pub mod discord;
pub mod dynamodb;
pub mod mysql;
pub mod redis;
pub mod secrets;
pub mod sqs;
