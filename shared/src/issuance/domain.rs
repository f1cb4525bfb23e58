//! Issuance rules, pure: campaigns, their validation, the issue decision and the reservation
//! that carries an accepted request to the writer.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::kernel::{InvalidField, UserId, rfc3339, storable_instant, whole_number};

pub const MAX_TOTAL_QUANTITY: u32 = 10_000_000;
pub const MAX_NAME_CHARS: usize = 200;

pub type CampaignId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DiscountType {
    Amount,
    Percent,
}

impl DiscountType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Amount => "AMOUNT",
            Self::Percent => "PERCENT",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "AMOUNT" => Some(Self::Amount),
            "PERCENT" => Some(Self::Percent),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discount {
    #[serde(rename = "type")]
    pub kind: DiscountType,
    #[serde(deserialize_with = "whole_number")]
    pub value: u64,
}

/// A campaign as a partner asks for it (the `POST /v1/campaigns` body); `validate` before use.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewCampaign {
    pub name: String,
    #[serde(deserialize_with = "whole_number")]
    pub total_quantity: u32,
    #[serde(deserialize_with = "rfc3339")]
    pub issue_starts_at: DateTime<Utc>,
    #[serde(deserialize_with = "rfc3339")]
    pub issue_ends_at: DateTime<Utc>,
    #[serde(deserialize_with = "rfc3339")]
    pub coupon_expires_at: DateTime<Utc>,
    pub discount: Discount,
}

impl NewCampaign {
    pub fn validate(self) -> Result<Self, InvalidField> {
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
            return Err(InvalidField::new("name", "must be 1-200 characters"));
        }
        if !(1..=MAX_TOTAL_QUANTITY).contains(&self.total_quantity) {
            return Err(InvalidField::new("totalQuantity", "must be between 1 and 10000000"));
        }
        storable_instant("issueStartsAt", self.issue_starts_at)?;
        storable_instant("issueEndsAt", self.issue_ends_at)?;
        storable_instant("couponExpiresAt", self.coupon_expires_at)?;
        if self.issue_ends_at <= self.issue_starts_at {
            return Err(InvalidField::new("issueEndsAt", "must be after issueStartsAt"));
        }
        if self.coupon_expires_at < self.issue_ends_at {
            return Err(InvalidField::new("couponExpiresAt", "must not be before issueEndsAt"));
        }
        match self.discount.kind {
            DiscountType::Percent if !(1..=100).contains(&self.discount.value) => {
                return Err(InvalidField::new("discount.value", "a PERCENT discount must be 1-100"));
            }
            DiscountType::Amount if self.discount.value == 0 => {
                return Err(InvalidField::new(
                    "discount.value",
                    "an AMOUNT discount must be positive",
                ));
            }
            _ => {}
        }
        Ok(Self {
            name: name.to_owned(),
            ..self
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Campaign {
    pub id: CampaignId,
    pub partner_id: String,
    pub name: String,
    pub total_quantity: u32,
    pub issue_starts_at: DateTime<Utc>,
    pub issue_ends_at: DateTime<Utc>,
    pub coupon_expires_at: DateTime<Utc>,
    pub discount: Discount,
    pub created_at: DateTime<Utc>,
}

/// What the issue script needs to decide alone, in one round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IssueRules {
    pub campaign_id: CampaignId,
    pub total_quantity: u32,
    pub issue_starts_at: DateTime<Utc>,
    pub issue_ends_at: DateTime<Utc>,
}

impl From<&Campaign> for IssueRules {
    fn from(c: &Campaign) -> Self {
        Self {
            campaign_id: c.id,
            total_quantity: c.total_quantity,
            issue_starts_at: c.issue_starts_at,
            issue_ends_at: c.issue_ends_at,
        }
    }
}

/// The issue script's answer for one (campaign, user).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueDecision {
    /// The user now holds the `rank`-th reservation.
    Reserved {
        rank: u32,
    },
    AlreadyIssued,
    SoldOut,
    NotOpen,
    Ended,
    /// Redis holds no rules for the campaign (never primed, or Redis lost its state).
    Unprimed,
}

/// The decision rule the Redis script implements, as plain code: the in-memory ledger used by unit
/// tests runs exactly this, so the script and the tests agree on one specification.
pub fn decide(rules: &IssueRules, now: DateTime<Utc>, already_holds: bool, reserved: u32) -> IssueDecision {
    if now < rules.issue_starts_at {
        IssueDecision::NotOpen
    } else if now >= rules.issue_ends_at {
        IssueDecision::Ended
    } else if already_holds {
        IssueDecision::AlreadyIssued
    } else if reserved >= rules.total_quantity {
        IssueDecision::SoldOut
    } else {
        IssueDecision::Reserved { rank: reserved + 1 }
    }
}

/// One accepted request on its way from the issue API to the writer (the SQS message body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Reservation {
    pub request_id: uuid::Uuid,
    pub campaign_id: CampaignId,
    pub partner_id: String,
    pub user_id: UserId,
    pub rank: u32,
    pub reserved_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum IssueStatus {
    Pending,
    Issued,
    None,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn rules() -> IssueRules {
        let now = Utc::now();
        IssueRules {
            campaign_id: 1,
            total_quantity: 2,
            issue_starts_at: now - Duration::hours(1),
            issue_ends_at: now + Duration::hours(1),
        }
    }

    #[test]
    fn decision_order_window_then_duplicate_then_stock() {
        let r = rules();
        let now = Utc::now();
        assert_eq!(
            decide(&r, r.issue_starts_at - Duration::seconds(1), false, 0),
            IssueDecision::NotOpen
        );
        assert_eq!(decide(&r, r.issue_ends_at, false, 0), IssueDecision::Ended);
        assert_eq!(decide(&r, now, true, 2), IssueDecision::AlreadyIssued);
        assert_eq!(decide(&r, now, false, 2), IssueDecision::SoldOut);
        assert_eq!(decide(&r, now, false, 1), IssueDecision::Reserved { rank: 2 });
    }

    fn campaign() -> NewCampaign {
        let now = Utc::now();
        NewCampaign {
            name: " Black Friday ".into(),
            total_quantity: 1000,
            issue_starts_at: now,
            issue_ends_at: now + Duration::hours(1),
            coupon_expires_at: now + Duration::days(30),
            discount: Discount {
                kind: DiscountType::Percent,
                value: 10,
            },
        }
    }

    #[test]
    fn campaign_validation_names_the_field() {
        assert_eq!(campaign().validate().unwrap().name, "Black Friday");
        let field = |c: NewCampaign| c.validate().unwrap_err().field;
        assert_eq!(
            field(NewCampaign {
                total_quantity: 0,
                ..campaign()
            }),
            "totalQuantity"
        );
        assert_eq!(
            field(NewCampaign {
                total_quantity: 10_000_001,
                ..campaign()
            }),
            "totalQuantity"
        );
        let c = campaign();
        assert_eq!(
            field(NewCampaign {
                issue_ends_at: c.issue_starts_at,
                ..c.clone()
            }),
            "issueEndsAt"
        );
        assert_eq!(
            field(NewCampaign {
                coupon_expires_at: c.issue_starts_at,
                ..c.clone()
            }),
            "couponExpiresAt"
        );
        assert_eq!(
            field(NewCampaign {
                name: "  ".into(),
                ..c.clone()
            }),
            "name"
        );
        let pct = Discount {
            kind: DiscountType::Percent,
            value: 101,
        };
        assert_eq!(
            field(NewCampaign {
                discount: pct,
                ..c.clone()
            }),
            "discount.value"
        );
        // Valid RFC 3339, but MySQL's DATETIME cannot hold it: refused before any write.
        assert_eq!(
            field(NewCampaign {
                issue_starts_at: "0001-01-01T00:00:00Z".parse().unwrap(),
                ..c.clone()
            }),
            "issueStartsAt"
        );
    }

    #[test]
    fn reservation_message_shape() {
        let json = serde_json::json!({
            "requestId": "0190a3c4-0000-7000-8000-000000000000", "campaignId": 42, "partnerId": "p",
            "userId": "u1", "rank": 7, "reservedAt": "2026-11-23T00:00:00Z"
        });
        let r: Reservation = serde_json::from_value(json.clone()).unwrap();
        assert_eq!((r.campaign_id, r.rank, r.user_id.as_str()), (42, 7, "u1"));
        assert_eq!(serde_json::to_value(&r).unwrap()["userId"], "u1");
        let mut extra = json;
        extra["surprise"] = 1.into();
        assert!(serde_json::from_value::<Reservation>(extra).is_err());
        let mut bad_user = serde_json::to_value(&r).unwrap();
        bad_user["userId"] = "x".repeat(65).into();
        assert!(serde_json::from_value::<Reservation>(bad_user).is_err());
    }
}
