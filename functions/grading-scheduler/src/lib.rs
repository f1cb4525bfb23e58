//! The monthly schedule mapped to `GradingService::start_previous_month`: one run per partner with
//! a policy, for the month before the event's time. The template fires it daily (`rate(1 day)`:
//! the local runner reproduces rates, not cron) and it acts on the first day of a month (UTC)
//! only. A run already there is returned as it is (and dispatched again if its planner never
//! finished), so a repeated event (Lambda's retries) starts nothing twice.

use chrono::{DateTime, Datelike, Utc};
use fcfs_shared::adapters::mysql::MySqlStore;
use fcfs_shared::adapters::sqs::SqsPartitionQueue;
use fcfs_shared::config::{Settings, StartupError};
use fcfs_shared::grading::domain::RunId;
use fcfs_shared::grading::ports::{GradingRecords, PartitionQueue};
use fcfs_shared::grading::{GradingError, GradingService};
use serde::Serialize;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Started {
    pub month: Option<String>,
    pub runs: Vec<RunId>,
}

pub struct GradingScheduler<R, Q> {
    grading: GradingService<R, Q>,
}

impl GradingScheduler<MySqlStore, SqsPartitionQueue> {
    pub fn from_settings(settings: &Settings, sdk: &aws_config::SdkConfig) -> Result<Self, StartupError> {
        Ok(Self::new(fcfs_shared::adapters::grading_service_from(settings, sdk)?))
    }
}

impl<R: GradingRecords, Q: PartitionQueue> GradingScheduler<R, Q> {
    pub fn new(grading: GradingService<R, Q>) -> Self {
        Self { grading }
    }

    /// The event's `time` (EventBridge's), else now, decides the day and the previous month.
    pub async fn handle(&self, event: serde_json::Value) -> Result<Started, GradingError> {
        let now = event
            .get("time")
            .and_then(|t| t.as_str())
            .and_then(|t| t.parse::<DateTime<Utc>>().ok())
            .unwrap_or_else(Utc::now);
        if now.day() != 1 {
            return Ok(Started {
                month: None,
                runs: Vec::new(),
            });
        }
        let runs = self.grading.start_previous_month(now).await?;
        Ok(Started {
            month: runs.first().map(|r| r.month.to_string()),
            runs: runs.iter().map(|r| r.run_id).collect(),
        })
    }
}
