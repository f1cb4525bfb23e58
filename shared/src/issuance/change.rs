//! Managing a live campaign: what a partner may change (`PATCH /v1/campaigns/{id}`), what state a
//! campaign is in, and the rules Redis holds while a change is on its way. Pure rules, run by the
//! MySQL storage under the campaign's row lock and by the fakes alike.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::domain::{Campaign, CampaignId, IssueRules, campaign_name, total_quantity};
use crate::kernel::{DEFAULT_PAGE, InvalidField, page_limit, rfc3339, storable_instant, whole_number};

/// How far ahead an earlier end must still be: a reservation decided just before the change, on
/// a Lambda whose clock is a little ahead, still falls inside the window the writer checks.
/// To stop at once, pause.
pub const MIN_END_NOTICE: Duration = Duration::seconds(1);

/// A partner's change to its campaign (the `PATCH` body): every field optional, at least one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CampaignChange {
    #[serde(default, deserialize_with = "present")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "optional_instant")]
    pub issue_ends_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "optional_quantity")]
    pub total_quantity: Option<u32>,
    #[serde(default, deserialize_with = "present")]
    pub paused: Option<bool>,
}

/// A field may be absent, never `null`: the contract has no null for it.
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

fn optional_instant<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    rfc3339(d).map(Some)
}

fn optional_quantity<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    whole_number(d).map(Some)
}

/// Why a change cannot be made to the campaign as it stands now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeRefused {
    Invalid(InvalidField),
    /// `totalQuantity` below the places already taken (or coupons already written).
    BelowReserved {
        reserved: u64,
    },
}

impl From<InvalidField> for ChangeRefused {
    fn from(e: InvalidField) -> Self {
        Self::Invalid(e)
    }
}

impl CampaignChange {
    /// The shape alone: at least one field, each within its bounds.
    pub fn validate(self) -> Result<Self, InvalidField> {
        if self == Self::default() {
            return Err(InvalidField::new(
                "body",
                "give at least one of name, issueEndsAt, totalQuantity, paused",
            ));
        }
        let name = self.name.as_deref().map(campaign_name).transpose()?;
        if let Some(quantity) = self.total_quantity {
            total_quantity(quantity)?;
        }
        if let Some(ends) = self.issue_ends_at {
            storable_instant("issueEndsAt", ends)?;
        }
        Ok(Self { name, ..self })
    }

    /// `campaign` with this change made at `now`, where `taken` places (or written coupons) must
    /// still fit the quantity. The window stays a window inside the coupons' life, and an end
    /// moved earlier is at least `MIN_END_NOTICE` ahead.
    pub fn applied_to(&self, campaign: &Campaign, taken: u64, now: DateTime<Utc>) -> Result<Campaign, ChangeRefused> {
        let mut next = campaign.clone();
        if let Some(name) = &self.name {
            next.name = campaign_name(name)?;
        }
        if let Some(quantity) = self.total_quantity {
            next.total_quantity = total_quantity(quantity)?;
            if u64::from(quantity) < taken {
                return Err(ChangeRefused::BelowReserved { reserved: taken });
            }
        }
        if let Some(ends) = self.issue_ends_at {
            let ends = storable_instant("issueEndsAt", ends)?;
            if ends <= campaign.issue_starts_at {
                return Err(InvalidField::new("issueEndsAt", "must be after issueStartsAt").into());
            }
            if ends > campaign.coupon_expires_at {
                return Err(InvalidField::new("issueEndsAt", "must not be after couponExpiresAt").into());
            }
            if ends < campaign.issue_ends_at && ends < now + MIN_END_NOTICE {
                return Err(InvalidField::new(
                    "issueEndsAt",
                    "an earlier end must be at least a second from now; to stop at once, pause the campaign",
                )
                .into());
            }
            next.issue_ends_at = ends;
        }
        if let Some(paused) = self.paused {
            next.paused = paused;
        }
        Ok(next)
    }
}

/// The rules Redis holds while a change is on its way: the stricter of before and after in every
/// field (the smaller quantity, the earlier end, paused if either is). Set before MySQL changes
/// and replaced by the new rules after, so no moment of the change lets Redis hand out a place
/// that either version of the campaign would refuse.
pub fn strictest(before: &IssueRules, after: &IssueRules) -> IssueRules {
    IssueRules {
        total_quantity: before.total_quantity.min(after.total_quantity),
        issue_ends_at: before.issue_ends_at.min(after.issue_ends_at),
        paused: before.paused || after.paused,
        ..after.clone()
    }
}

/// What amending a campaign's rules did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Amendment {
    Applied,
    /// The ledger's state of the campaign is lost or partly lost (or it was never primed):
    /// nothing to amend; a heal rebuilds it from MySQL.
    Absent,
    /// More places are taken than the new quantity (or a higher rank was handed out): nothing
    /// changed.
    BelowReserved {
        reserved: u64,
    },
    /// The caller's change turn lapsed (another change may hold it now): nothing changed.
    TurnLost,
}

/// Whether the ledger may take rules of `quantity` (the amend script implements this rule, the
/// in-memory ledger runs it): only within the caller's turn, never on lost state (`places`
/// `None`), and never below the places taken, which are the counter or, where a place given back
/// left a gap under it, the highest rank handed out (the writer refuses a rank above the quantity).
/// `places`: (counter, highest rank kept).
pub fn amendment(turn_held: bool, places: Option<(u64, u64)>, quantity: u32) -> Amendment {
    if !turn_held {
        return Amendment::TurnLost;
    }
    match places {
        None => Amendment::Absent,
        Some((count, top)) if count.max(top) > u64::from(quantity) => Amendment::BelowReserved {
            reserved: count.max(top),
        },
        Some(_) => Amendment::Applied,
    }
}

/// Where a campaign stands at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum CampaignStatus {
    /// Before `issueStartsAt`.
    Scheduled,
    Open,
    /// Paused by the partner, before its end.
    Paused,
    /// From `issueEndsAt` on.
    Ended,
}

impl CampaignStatus {
    pub fn of(campaign: &Campaign, now: DateTime<Utc>) -> Self {
        if now >= campaign.issue_ends_at {
            Self::Ended
        } else if campaign.paused {
            Self::Paused
        } else if now < campaign.issue_starts_at {
            Self::Scheduled
        } else {
            Self::Open
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "SCHEDULED" => Some(Self::Scheduled),
            "OPEN" => Some(Self::Open),
            "PAUSED" => Some(Self::Paused),
            "ENDED" => Some(Self::Ended),
            _ => None,
        }
    }
}

/// `GET /v1/campaigns` query: an optional status, a page size, and the cursor a page gave (the
/// id its listing stopped at).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignQuery {
    pub status: Option<CampaignStatus>,
    pub limit: u32,
    pub before: Option<CampaignId>,
}

impl CampaignQuery {
    /// From the query string's parameters; unknown ones are refused, so a typo is not ignored.
    pub fn parse<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, InvalidField> {
        let mut query = Self {
            status: None,
            limit: DEFAULT_PAGE,
            before: None,
        };
        for (name, value) in params {
            match name {
                "status" => {
                    query.status = Some(
                        CampaignStatus::parse(value)
                            .ok_or_else(|| InvalidField::new("status", "must be SCHEDULED, OPEN, PAUSED or ENDED"))?,
                    )
                }
                "limit" => query.limit = page_limit(value)?,
                "cursor" => {
                    query.before = Some(
                        crate::kernel::digits::<CampaignId>(value)
                            .filter(|id| *id > 0)
                            .ok_or_else(|| InvalidField::new("cursor", "not a cursor this route gave"))?,
                    )
                }
                _ => return Err(InvalidField::new("query", format!("unknown parameter {name}"))),
            }
        }
        Ok(query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issuance::domain::{CampaignKind, Discount, DiscountType};

    fn campaign(now: DateTime<Utc>) -> Campaign {
        Campaign {
            id: 1,
            partner_id: "p".into(),
            name: "sale".into(),
            total_quantity: 100,
            issue_starts_at: now - Duration::hours(1),
            issue_ends_at: now + Duration::hours(1),
            coupon_expires_at: now + Duration::days(1),
            discount: Discount {
                kind: DiscountType::Amount,
                value: 1,
            },
            kind: CampaignKind::Sale,
            created_at: now - Duration::days(1),
            paused: false,
        }
    }

    fn field(refused: ChangeRefused) -> &'static str {
        match refused {
            ChangeRefused::Invalid(f) => f.field,
            ChangeRefused::BelowReserved { .. } => "below reserved",
        }
    }

    #[test]
    fn a_change_keeps_the_window_inside_the_coupons_life_and_the_quantity_above_what_is_taken() {
        let now = Utc::now();
        let c = campaign(now);
        let change = |f: fn(&mut CampaignChange)| {
            let mut change = CampaignChange::default();
            f(&mut change);
            change
        };
        let longer = change(|c| c.issue_ends_at = Some(Utc::now() + Duration::hours(5)));
        assert_eq!(
            longer.applied_to(&c, 0, now).unwrap().issue_ends_at,
            longer.issue_ends_at.unwrap()
        );
        let past_expiry = change(|c| c.issue_ends_at = Some(Utc::now() + Duration::days(2)));
        assert_eq!(field(past_expiry.applied_to(&c, 0, now).unwrap_err()), "issueEndsAt");
        let before_start = change(|c| c.issue_ends_at = Some(Utc::now() - Duration::hours(2)));
        assert_eq!(field(before_start.applied_to(&c, 0, now).unwrap_err()), "issueEndsAt");
        let too_soon = CampaignChange {
            issue_ends_at: Some(now + Duration::milliseconds(500)),
            ..CampaignChange::default()
        };
        assert_eq!(field(too_soon.applied_to(&c, 0, now).unwrap_err()), "issueEndsAt");
        let soon = CampaignChange {
            issue_ends_at: Some(now + MIN_END_NOTICE),
            ..CampaignChange::default()
        };
        assert!(soon.applied_to(&c, 0, now).is_ok(), "a second's notice is enough");
        let fewer = change(|c| c.total_quantity = Some(40));
        assert_eq!(fewer.applied_to(&c, 40, now).unwrap().total_quantity, 40);
        assert_eq!(
            fewer.applied_to(&c, 41, now).unwrap_err(),
            ChangeRefused::BelowReserved { reserved: 41 }
        );
        let paused = change(|c| c.paused = Some(true));
        let next = paused.applied_to(&c, 0, now).unwrap();
        assert!(next.paused);
        assert_eq!(CampaignStatus::of(&next, now), CampaignStatus::Paused);
        assert_eq!(CampaignStatus::of(&c, now), CampaignStatus::Open);
        assert_eq!(CampaignStatus::of(&c, c.issue_ends_at), CampaignStatus::Ended);
        assert_eq!(
            CampaignStatus::of(&c, c.issue_starts_at - Duration::seconds(1)),
            CampaignStatus::Scheduled
        );
    }

    #[test]
    fn an_empty_change_or_a_bad_field_is_refused_by_its_shape() {
        assert_eq!(CampaignChange::default().validate().unwrap_err().field, "body");
        let blank = CampaignChange {
            name: Some("  ".into()),
            ..CampaignChange::default()
        };
        assert_eq!(blank.validate().unwrap_err().field, "name");
        let zero = CampaignChange {
            total_quantity: Some(0),
            ..CampaignChange::default()
        };
        assert_eq!(zero.validate().unwrap_err().field, "totalQuantity");
        for body in [
            r#"{"paused":true,"extra":1}"#,
            r#"{"paused":null}"#,
            r#"{"name":null,"paused":true}"#,
        ] {
            assert!(serde_json::from_str::<CampaignChange>(body).is_err(), "{body}");
        }
        let change: CampaignChange = serde_json::from_str(r#"{"totalQuantity":5.0}"#).unwrap();
        assert_eq!(change.total_quantity, Some(5));
    }

    #[test]
    fn rules_are_amended_in_the_turn_on_live_state_above_the_places_taken() {
        assert_eq!(amendment(false, Some((0, 0)), 5), Amendment::TurnLost);
        assert_eq!(amendment(true, None, 5), Amendment::Absent);
        assert_eq!(amendment(true, Some((5, 0)), 5), Amendment::Applied);
        assert_eq!(
            amendment(true, Some((6, 0)), 5),
            Amendment::BelowReserved { reserved: 6 }
        );
        assert_eq!(
            amendment(true, Some((4, 6)), 5),
            Amendment::BelowReserved { reserved: 6 },
            "a rank above the counter still counts"
        );
    }

    #[test]
    fn the_list_query_names_what_it_refuses() {
        let q = CampaignQuery::parse([("status", "OPEN"), ("limit", "10"), ("cursor", "42")]).unwrap();
        assert_eq!(
            (q.status, q.limit, q.before),
            (Some(CampaignStatus::Open), 10, Some(42))
        );
        assert_eq!(CampaignQuery::parse([]).unwrap().limit, DEFAULT_PAGE);
        for (name, value, field) in [
            ("status", "open", "status"),
            ("limit", "0", "limit"),
            ("cursor", "x", "cursor"),
            ("cursor", "0", "cursor"),
            ("sort", "id", "query"),
        ] {
            assert_eq!(
                CampaignQuery::parse([(name, value)]).unwrap_err().field,
                field,
                "{name}={value}"
            );
        }
    }

    #[test]
    fn while_a_change_is_on_its_way_redis_holds_the_stricter_of_both() {
        let now = Utc::now();
        let before = IssueRules::from(&campaign(now));
        let after = IssueRules {
            total_quantity: 200,
            issue_ends_at: before.issue_ends_at - Duration::minutes(30),
            paused: true,
            ..before.clone()
        };
        let strict = strictest(&before, &after);
        assert_eq!(strict.total_quantity, 100);
        assert_eq!(strict.issue_ends_at, after.issue_ends_at);
        assert!(strict.paused);
        assert_eq!(strictest(&after, &before), strict, "whichever way the change goes");
    }
}
