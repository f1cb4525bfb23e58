//! Issuance: campaigns, the first-come-first-served decision, reservations, their recording, and
//! the recovery of places whose message never went.

pub mod campaigns;
pub mod change;
pub mod domain;
pub mod error;
pub mod issue;
pub mod ports;
pub mod reconcile;
pub mod recovery;
pub mod writer;

pub use campaigns::{CampaignSummary, Campaigns};
pub use error::IssuanceError;
pub use issue::{Accepted, HEAL_GRACE, Issuance, IssueState, MAX_REJECTION_MEMORY};
pub use recovery::{Recovery, RecoverySummary};
pub use writer::{BatchSummary, Message, ReservationWriter, Written};
