//! The alarm as CloudWatch writes it into the SNS message, and the Discord message made of it.

use serde::{Deserialize, Serialize};

/// A CloudWatch alarm's state change: the JSON body of the SNS message CloudWatch publishes
/// (fields AWS documents; anything else is ignored, anything missing is left out of the message).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct AlarmChange {
    pub alarm_name: String,
    pub alarm_description: Option<String>,
    #[serde(rename = "AWSAccountId")]
    pub aws_account_id: Option<String>,
    pub new_state_value: String,
    pub new_state_reason: Option<String>,
    pub old_state_value: Option<String>,
    pub state_change_time: Option<String>,
    pub alarm_arn: Option<String>,
    pub trigger: Option<Trigger>,
}

/// What the alarm watches and how it decides.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Trigger {
    pub metric_name: Option<String>,
    pub namespace: Option<String>,
    pub statistic: Option<String>,
    pub extended_statistic: Option<String>,
    pub dimensions: Vec<Dimension>,
    pub period: Option<u64>,
    pub evaluation_periods: Option<u64>,
    pub comparison_operator: Option<String>,
    pub threshold: Option<f64>,
    /// Metric-math alarms name their expressions here instead of one metric.
    pub metrics: Vec<MathMetric>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Dimension {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct MathMetric {
    pub id: String,
    pub expression: Option<String>,
    pub label: Option<String>,
    pub metric_stat: Option<serde_json::Value>,
}

/// One SNS message to pass on: an alarm, or any other text published to the topic.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    Alarm(Box<AlarmChange>),
    Text { subject: Option<String>, message: String },
}

impl Notice {
    /// An SNS message's subject and body: an alarm when the body is CloudWatch's JSON.
    pub fn from_sns(subject: Option<String>, message: &str) -> Self {
        match serde_json::from_str::<AlarmChange>(message) {
            Ok(alarm) if !alarm.alarm_name.is_empty() && !alarm.new_state_value.is_empty() => {
                Self::Alarm(Box::new(alarm))
            }
            _ => Self::Text {
                subject,
                message: message.to_owned(),
            },
        }
    }
}

/// A Discord webhook's JSON body (`content` and `embeds`, within Discord's length limits).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DiscordMessage {
    pub username: String,
    pub content: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub embeds: Vec<Embed>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Embed {
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub description: String,
    pub color: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<Field>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Field {
    pub name: String,
    pub value: String,
    pub inline: bool,
}

const USERNAME: &str = "fcfs-coupons alerts";
// Discord refuses a message over these (https://discord.com/developers/docs/resources/message).
const MAX_TITLE: usize = 256;
const MAX_DESCRIPTION: usize = 4096;
const MAX_FIELD: usize = 1024;
const MAX_CONTENT: usize = 2000;
/// An embed's title, description, field names and values together.
const MAX_EMBED_TOTAL: usize = 6000;

const RED: u32 = 0xE7_4C_3C;
const GREEN: u32 = 0x2E_CC_71;
const GREY: u32 = 0x95_A5_A6;

impl DiscordMessage {
    pub fn for_notice(notice: &Notice) -> Self {
        match notice {
            Notice::Alarm(alarm) => Self::for_alarm(alarm),
            Notice::Text { subject, message } => Self {
                username: USERNAME.to_owned(),
                content: cut(
                    &match subject {
                        Some(s) if !s.is_empty() => format!("**{s}**\n{message}"),
                        _ => message.clone(),
                    },
                    MAX_CONTENT,
                ),
                embeds: Vec::new(),
            },
        }
    }

    /// Title: the state and the alarm's name; description: what it means (the alarm's
    /// description) and CloudWatch's reason; fields: the metric, how bad (statistic, comparison,
    /// threshold, period), where (region, account) and the state before; a link to the alarm.
    pub fn for_alarm(alarm: &AlarmChange) -> Self {
        let (icon, color) = match alarm.new_state_value.as_str() {
            "ALARM" => ("🔴", RED),
            "OK" => ("✅", GREEN),
            _ => ("⚪", GREY),
        };
        let region = alarm.alarm_arn.as_deref().and_then(arn_region);
        let mut description = alarm.alarm_description.clone().unwrap_or_default();
        if let Some(reason) = &alarm.new_state_reason {
            if !description.is_empty() {
                description.push_str("\n\n");
            }
            description.push_str(reason);
        }
        let mut fields = Vec::new();
        if let Some(trigger) = &alarm.trigger {
            if let Some(what) = trigger.what() {
                fields.push(field("What", &what, false));
            }
            if let Some(bad) = trigger.how_bad() {
                fields.push(field("How bad", &bad, false));
            }
        }
        let mut place = Vec::new();
        if let Some(region) = region {
            place.push(region.to_owned());
        }
        if let Some(account) = &alarm.aws_account_id {
            place.push(format!("account {account}"));
        }
        if !place.is_empty() {
            fields.push(field("Where", &place.join(" · "), true));
        }
        if let Some(old) = &alarm.old_state_value {
            fields.push(field("Was", old, true));
        }
        let title = cut(
            &format!("{icon} {}: {}", alarm.new_state_value, alarm.alarm_name),
            MAX_TITLE,
        );
        // The description gets what the title and fields leave of the embed's total.
        let used: usize = title.chars().count()
            + fields
                .iter()
                .map(|f| f.name.chars().count() + f.value.chars().count())
                .sum::<usize>();
        let description = cut(&description, MAX_DESCRIPTION.min(MAX_EMBED_TOTAL.saturating_sub(used)));
        Self {
            username: USERNAME.to_owned(),
            content: String::new(),
            embeds: vec![Embed {
                title,
                url: region.map(|r| console_link(r, &alarm.alarm_name)),
                description,
                color,
                timestamp: alarm.state_change_time.as_deref().and_then(iso_time),
                fields,
            }],
        }
    }
}

impl Trigger {
    fn what(&self) -> Option<String> {
        if let (Some(namespace), Some(metric)) = (&self.namespace, &self.metric_name) {
            let dims: Vec<String> = self
                .dimensions
                .iter()
                .map(|d| format!("{}={}", d.name, d.value))
                .collect();
            return Some(if dims.is_empty() {
                format!("{namespace} {metric}")
            } else {
                format!("{namespace} {metric} ({})", dims.join(", "))
            });
        }
        let shown: Vec<String> = self
            .metrics
            .iter()
            .filter_map(|m| {
                m.expression
                    .as_ref()
                    .map(|e| format!("{} = {e}", m.label.as_deref().unwrap_or(&m.id)))
            })
            .collect();
        (!shown.is_empty()).then(|| shown.join("; "))
    }

    fn how_bad(&self) -> Option<String> {
        let threshold = self.threshold?;
        let comparison = match self.comparison_operator.as_deref() {
            Some("GreaterThanThreshold") => ">",
            Some("GreaterThanOrEqualToThreshold") => "≥",
            Some("LessThanThreshold") => "<",
            Some("LessThanOrEqualToThreshold") => "≤",
            Some(other) => other,
            None => "vs",
        };
        let statistic = self
            .extended_statistic
            .as_deref()
            .or(self.statistic.as_deref())
            .map(|s| format!("{} ", s.to_lowercase()))
            .unwrap_or_default();
        let mut text = format!("{statistic}{comparison} {threshold}");
        if let Some(period) = self.period {
            text.push_str(&format!(" over {period} s"));
        }
        if let Some(n) = self.evaluation_periods.filter(|n| *n > 1) {
            text.push_str(&format!(" for {n} periods"));
        }
        Some(text)
    }
}

fn field(name: &str, value: &str, inline: bool) -> Field {
    Field {
        name: name.to_owned(),
        value: cut(value, MAX_FIELD),
        inline,
    }
}

/// At most `max` characters, an ellipsis marking a cut.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    if max == 0 {
        return String::new();
    }
    let mut out: String = text.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// The region of `arn:aws:cloudwatch:REGION:ACCOUNT:alarm:NAME`.
fn arn_region(arn: &str) -> Option<&str> {
    arn.split(':').nth(3).filter(|r| !r.is_empty())
}

/// The alarm's page in the CloudWatch console.
pub fn console_link(region: &str, alarm_name: &str) -> String {
    let name: String = percent_encoding::utf8_percent_encode(alarm_name, percent_encoding::NON_ALPHANUMERIC).collect();
    format!("https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}#alarmsV2:alarm/{name}")
}

/// CloudWatch's `2026-11-23T10:05:00.123+0000` as RFC 3339, which Discord requires.
fn iso_time(text: &str) -> Option<String> {
    chrono::DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| chrono::DateTime::parse_from_rfc3339(text))
        .ok()
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../../../events/alert-notifier.json");

    fn sample_alarm() -> AlarmChange {
        let event: serde_json::Value = serde_json::from_str(SAMPLE).unwrap();
        let message = event["Records"][0]["Sns"]["Message"].as_str().unwrap();
        match Notice::from_sns(None, message) {
            Notice::Alarm(alarm) => *alarm,
            other => panic!("not an alarm: {other:?}"),
        }
    }

    #[test]
    fn an_alarm_becomes_an_embed_saying_what_where_how_bad_with_a_link() {
        let message = DiscordMessage::for_alarm(&sample_alarm());
        let embed = &message.embeds[0];
        assert_eq!(embed.title, "🔴 ALARM: fcfs-prod-issue-dlq-not-empty");
        assert_eq!(embed.color, RED);
        assert_eq!(
            embed.url.as_deref(),
            Some(
                "https://us-east-1.console.aws.amazon.com/cloudwatch/home?region=us-east-1#alarmsV2:alarm/fcfs%2Dprod%2Dissue%2Ddlq%2Dnot%2Dempty"
            )
        );
        assert!(
            embed.description.starts_with("Messages that failed every delivery"),
            "{embed:?}"
        );
        assert!(embed.description.contains("Threshold Crossed"), "{embed:?}");
        assert_eq!(embed.timestamp.as_deref(), Some("2026-11-23T10:05:00.123Z"));
        let fields: Vec<(&str, &str)> = embed
            .fields
            .iter()
            .map(|f| (f.name.as_str(), f.value.as_str()))
            .collect();
        assert_eq!(
            fields,
            [
                (
                    "What",
                    "AWS/SQS ApproximateNumberOfMessagesVisible (QueueName=fcfs-prod-issue-requests-dlq)"
                ),
                ("How bad", "maximum > 0 over 60 s"),
                ("Where", "us-east-1 · account 123456789012"),
                ("Was", "OK")
            ]
        );
    }

    #[test]
    fn a_recovery_is_green_and_a_math_alarm_shows_its_expression() {
        let mut alarm = sample_alarm();
        alarm.new_state_value = "OK".into();
        alarm.trigger = Some(Trigger {
            metrics: vec![MathMetric {
                id: "e1".into(),
                expression: Some("m1/1000".into()),
                label: Some("issue p99 (s)".into()),
                metric_stat: None,
            }],
            comparison_operator: Some("GreaterThanThreshold".into()),
            threshold: Some(0.5),
            ..Trigger::default()
        });
        let embed = &DiscordMessage::for_alarm(&alarm).embeds[0];
        assert_eq!(embed.color, GREEN);
        assert!(embed.title.starts_with("✅ OK: "));
        assert_eq!(embed.fields[0].value, "issue p99 (s) = m1/1000");
        assert_eq!(embed.fields[1].value, "> 0.5");
    }

    #[test]
    fn other_messages_pass_as_text_and_nothing_exceeds_discords_limits() {
        let notice = Notice::from_sns(Some("hello".into()), &"x".repeat(5000));
        let message = DiscordMessage::for_notice(&notice);
        assert!(message.embeds.is_empty());
        assert!(message.content.starts_with("**hello**\nxxx"));
        assert_eq!(message.content.chars().count(), MAX_CONTENT);
        let mut alarm = sample_alarm();
        alarm.alarm_name = "n".repeat(400);
        alarm.alarm_description = Some("d".repeat(5000));
        let embed = &DiscordMessage::for_alarm(&alarm).embeds[0];
        assert_eq!(embed.title.chars().count(), MAX_TITLE);
        assert_eq!(embed.description.chars().count(), MAX_DESCRIPTION);
        // A JSON message that is not an alarm stays text.
        assert!(matches!(Notice::from_sns(None, r#"{"a":1}"#), Notice::Text { .. }));
    }
}
