//! Everything the events context answers besides success; transient failures apart.

use crate::kernel::{InvalidField, Unavailable};

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("{0}")]
    Invalid(#[from] InvalidField),
    /// The webhook URL may not be delivered to (not https, or a non-public address).
    #[error("url refused: {0}")]
    UrlRefused(String),
    /// The partner has no webhook registration.
    #[error("no webhook registration")]
    NotRegistered,
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

impl EventsError {
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}
