use crate::kernel::{InvalidField, Unavailable};

use super::domain::InvalidOrder;

#[derive(Debug, thiserror::Error)]
pub enum GradingError {
    #[error("{0}")]
    Invalid(#[from] InvalidField),
    #[error("orders[{}].{}: {}", .0.index, .0.field, .0.reason)]
    InvalidOrder(InvalidOrder),
    /// An order id sent before with other facts (user, amount, order time), or a status change no
    /// order may take (`Order::change_from`).
    #[error("order {0} was recorded before with different content, or cannot take that status")]
    OrderConflict(String),
    #[error("a call may carry at most {0} orders")]
    TooManyOrders(usize),
    /// A tier names a campaign of another partner, or none.
    #[error("tier {grade}: campaign {campaign_id} is not one of the partner's campaigns")]
    UnknownCampaign { grade: String, campaign_id: u64 },
    /// A tier names a `SALE` campaign: its places are promised to the sale's callers.
    #[error("tier {grade}: campaign {campaign_id} is on sale; a reward needs a campaign of kind REWARD")]
    NotRewardCampaign { grade: String, campaign_id: u64 },
    /// A run needs the partner's policy first (`PUT /v1/grading/policy`).
    #[error("no grading policy: PUT /v1/grading/policy first")]
    NoPolicy,
    /// The policy read before any was set (404 `NOT_FOUND`).
    #[error("no grading policy has been set: PUT /v1/grading/policy")]
    PolicyNotSet,
    /// A run asked for a month that has not ended: its orders are not all in, and a run is final.
    #[error("{0} has not ended: a month is graded once it is over (from the 1st of the next, UTC)")]
    MonthNotEnded(super::domain::Month),
    #[error("grading run not found")]
    RunNotFound,
    /// A grade asked for without a month before any run of the partner finished.
    #[error("no grading run has finished yet: ask for a month (?month=YYYY-MM)")]
    NoFinishedRun,
    /// Recording the call's orders would take the partner past its orders of one month.
    #[error(transparent)]
    LimitExceeded(#[from] crate::partners::domain::LimitExceeded),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

impl GradingError {
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}
