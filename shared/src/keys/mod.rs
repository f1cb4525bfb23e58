//! API keys: how partners are identified, administered by the operator CLI and checked by the
//! authorizer.

pub mod admin;
pub mod authorize;
pub mod domain;
pub mod error;
pub mod ports;

pub use admin::{create_key, list_keys, revoke_key};
pub use authorize::{CacheSettings, Decision, KeyAuthorizer, Principal};
pub use error::KeyError;
