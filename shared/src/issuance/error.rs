//! Everything issuance can answer besides success. Permanent outcomes (bad input, a rule of the
//! domain) are kept apart from transient ones (a backing service down or slow), so a client is
//! told to retry only when a retry can succeed.

use super::domain::{CampaignId, Place};
use super::issue::IssueState;
use crate::kernel::{InvalidField, Unavailable};

#[derive(Debug, thiserror::Error)]
pub enum IssuanceError {
    #[error("{0}")]
    Invalid(#[from] InvalidField),
    /// Unknown, or another partner's: the two are indistinguishable on purpose.
    #[error("campaign not found")]
    CampaignNotFound,
    /// A repeated request: answered with the place the first one took and where it stands now
    /// (`None` when Redis could not say).
    #[error("this user already holds a coupon of this campaign")]
    AlreadyIssued { place: Place, state: Option<IssueState> },
    #[error("the campaign is paused: no new places until it is resumed")]
    Paused,
    #[error("no coupons are left")]
    SoldOut,
    #[error("issuance has not started yet")]
    NotOpen,
    #[error("issuance has ended")]
    Ended,
    /// A `REWARD` campaign: its coupons are granted by grading policies, never issued to callers.
    #[error("this campaign is not on sale: its coupons are granted as rewards only")]
    NotOnSale,
    /// Redis holds no (or only part of the) state of the campaign: lost (flushed, evicted, a new
    /// cache) or never primed. Issuing resumes by itself once it is rebuilt from MySQL
    /// (`Issuance::heal`), so the caller retries.
    #[error("campaign {0} cannot issue now: its state in Redis is missing and is being rebuilt from MySQL; retry")]
    Unprimed(CampaignId),
    /// A quantity below the places already taken.
    #[error("totalQuantity: {reserved} places are already taken; the quantity cannot go below them")]
    BelowReserved { reserved: u64 },
    /// Another change of the same campaign is being made; changes of one campaign go one at a time.
    #[error("another change of this campaign is being made: retry when it is done")]
    ChangeInProgress,
    /// Creating the campaign would take the partner past its limit of live campaigns.
    #[error(transparent)]
    LimitExceeded(#[from] crate::partners::domain::LimitExceeded),
    /// A delivered message without an id cannot be reported alone, and an empty identifier would
    /// fail the batch anyway: the whole delivery fails explicitly (every write is idempotent, so
    /// the redelivery is safe).
    #[error("message {0} of the delivery has no id")]
    MessageWithoutId(usize),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

impl From<super::change::ChangeRefused> for IssuanceError {
    fn from(refused: super::change::ChangeRefused) -> Self {
        match refused {
            super::change::ChangeRefused::Invalid(e) => Self::Invalid(e),
            super::change::ChangeRefused::BelowReserved { reserved } => Self::BelowReserved { reserved },
        }
    }
}

impl IssuanceError {
    /// A retry may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unprimed(_) | Self::Unavailable(_))
    }
}
