//! Issuance: campaigns, the first-come-first-served decision, reservations, and their recording.

pub mod campaigns;
pub mod domain;
pub mod error;
pub mod issue;
pub mod ports;
pub mod writer;

pub use campaigns::{CampaignSummary, Campaigns};
pub use error::IssuanceError;
pub use issue::{Accepted, Issuance, IssueState};
pub use writer::{BatchSummary, Message, ReservationWriter, Written};
