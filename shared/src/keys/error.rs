//! Everything key administration can answer besides success: permanent (a bad partner id, an
//! unknown key, a past expiry) or transient (the key table unreachable).

use chrono::{DateTime, Utc};

use crate::kernel::Unavailable;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("invalid partner id {0:?}: use 1-{max} letters, digits, '.', '_' or '-'", max = super::domain::PARTNER_ID_MAX)]
    InvalidPartner(String),
    #[error("partner {0:?} has no API keys")]
    UnknownPartner(String),
    #[error("no API key has display id {0:?}")]
    UnknownKey(String),
    #[error("expiry {0} is not in the future")]
    ExpiryInPast(DateTime<Utc>),
    #[error("the system random generator failed: {0}")]
    Random(String),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}
