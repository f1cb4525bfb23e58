//! EventBridge schedules: every enabled `Schedule`/`ScheduleV2` event invokes its function every
//! `rate`, the first time one `rate` after start (as a new EventBridge rule does; at start for the
//! functions `FCFS_SCHEDULE_START_NOW` names), with the
//! "Scheduled Event" EventBridge sends.
//!
//! A schedule's invocations overlap up to the function's reserved concurrency (one where it
//! reserves none): a tick that finds that many still running is skipped and logged, not queued,
//! so a slow function is never invoked back to back to catch up (on AWS the reservation throttles
//! it; both count as a throttle). The event relay reserves 2: each run lasts its minute, and the
//! next starts while the last finishes its deliveries, as on AWS.
//!
//! A schedule's invocation is asynchronous, as on AWS: a failed attempt (an error or a crash) is
//! retried up to the function's `MaximumRetryAttempts` with the same event, and when every attempt
//! failed, Lambda's failure record goes to its `OnFailure` queue (the alerts DLQ, whose alert
//! reaches the team). AWS waits a minute, then two, between attempts; here a second, then two.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::ScheduleSource;
use crate::functions::ScheduledFunction;

/// The waits before the second and the third attempt of a failed invocation.
const RETRY_DELAYS: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(2)];

/// Deadline of sending a failure record.
const SEND_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub(crate) struct Schedule {
    pub function: Arc<dyn ScheduledFunction>,
    pub source: ScheduleSource,
    pub region: String,
    pub account_id: String,
    /// Where failure records are sent (`source.on_failure_queue`); `None` in unit tests.
    pub sqs: Option<aws_sdk_sqs::Client>,
}

/// The event EventBridge sends a rule's target when the schedule fires.
pub(crate) fn scheduled_event(schedule: &Schedule, time: DateTime<Utc>) -> Value {
    let Schedule {
        source,
        region,
        account_id,
        ..
    } = schedule;
    json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account_id,
        "time": time.to_rfc3339_opts(SecondsFormat::Secs, true),
        "region": region,
        "resources": [format!("arn:aws:events:{region}:{account_id}:rule/{}-{}", source.function, source.name)],
        "detail": {},
    })
}

/// Invokes the function once now (one attempt, no retry: `--invoke`) and logs the outcome with
/// what it returned.
pub(crate) async fn invoke(schedule: &Schedule) -> Result<Value, String> {
    attempt(schedule, scheduled_event(schedule, Utc::now())).await
}

/// One attempt, on a task of its own: a panic is a crashed Lambda, i.e. a failed attempt. A
/// failure counts in `fcfs_function_errors_total`.
async fn attempt(schedule: &Schedule, event: Value) -> Result<Value, String> {
    let started = Instant::now();
    let function = schedule.function.clone();
    let task = tokio::spawn(async move { function.invoke(event).await });
    // Stopping the runner mid-run of a continuous function stops the function too (see `run`).
    let _stop_with_caller = AbortOnDrop(task.abort_handle());
    let outcome = match task.await {
        Ok(outcome) => outcome,
        Err(crash) => Err(format!("the function crashed: {crash}")),
    };
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    let ScheduleSource { function, name, .. } = &schedule.source;
    crate::metrics::function_invoked(function, started.elapsed());
    match &outcome {
        Ok(result) => {
            tracing::info!(function, schedule = name, duration_ms, ok = true, %result, "scheduled invocation")
        }
        Err(error) => {
            crate::metrics::function_failed(function);
            tracing::error!(function, schedule = name, duration_ms, ok = false, %error, "scheduled invocation")
        }
    }
    outcome
}

/// Aborts a task when its caller is dropped (a finished task is not affected).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A tick's invocation, as Lambda runs an asynchronous one: the attempt and up to `retries` more
/// with the same event, then the failure record to the `OnFailure` queue.
async fn invoke_async(schedule: &Schedule) {
    let event = scheduled_event(schedule, Utc::now());
    let request_id = uuid::Uuid::new_v4().to_string();
    let mut attempts: u32 = 0;
    loop {
        attempts += 1;
        match attempt(schedule, event.clone()).await {
            Ok(_) => return,
            Err(error) if attempts > schedule.source.retries => {
                return send_failure(schedule, event, &request_id, attempts, &error).await;
            }
            Err(_) => {
                let wait = RETRY_DELAYS[(attempts as usize - 1).min(RETRY_DELAYS.len() - 1)];
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Lambda's record of an asynchronous invocation that failed every attempt (the documented shape
/// of an on-failure destination's message).
fn failure_record(schedule: &Schedule, event: Value, request_id: &str, attempts: u32, error: &str) -> Value {
    let Schedule {
        source,
        region,
        account_id,
        ..
    } = schedule;
    json!({
        "version": "1.0",
        "timestamp": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        "requestContext": {
            "requestId": request_id,
            "functionArn": format!("arn:aws:lambda:{region}:{account_id}:function:{}:$LATEST", source.function),
            "condition": "RetriesExhausted",
            "approximateInvokeCount": attempts,
        },
        "requestPayload": event,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": {"errorMessage": error, "errorType": "Error"},
    })
}

async fn send_failure(schedule: &Schedule, event: Value, request_id: &str, attempts: u32, error: &str) {
    let ScheduleSource { function, name, .. } = &schedule.source;
    let (Some(queue), Some(sqs)) = (&schedule.source.on_failure_queue, &schedule.sqs) else {
        tracing::error!(
            function,
            schedule = name,
            attempts,
            "every attempt failed and there is no on-failure destination"
        );
        return;
    };
    let record = failure_record(schedule, event, request_id, attempts, error);
    let send = sqs
        .send_message()
        .queue_url(queue)
        .message_body(record.to_string())
        .send();
    match tokio::time::timeout(SEND_DEADLINE, send).await {
        Ok(Ok(_)) => tracing::error!(
            function,
            schedule = name,
            attempts,
            queue,
            "every attempt failed: failure record sent"
        ),
        Ok(Err(e)) => tracing::error!(
            function, schedule = name, attempts, queue, error = %aws_sdk_sqs::error::DisplayErrorContext(e),
            "every attempt failed and the failure record could not be sent"
        ),
        Err(_) => tracing::error!(
            function,
            schedule = name,
            attempts,
            queue,
            "every attempt failed and sending the failure record timed out"
        ),
    }
}

/// Fires the schedule until `stop` turns true; an invocation in progress then finishes first.
pub(crate) async fn run(schedule: Schedule, mut stop: watch::Receiver<bool>) {
    let rate = schedule.source.rate;
    tracing::info!(
        function = schedule.source.function,
        schedule = schedule.source.name,
        rate_secs = rate.as_secs_f64(),
        "scheduling"
    );
    let schedule = Arc::new(schedule);
    let first = if schedule.source.starts_now {
        Duration::ZERO
    } else {
        rate
    };
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + first, rate);
    // Ticks missed while the runtime was busy are dropped, not fired in a burst.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut running: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            // A dropped sender is a stop too: nobody is left to ask for one.
            _ = stop.wait_for(|stopped| *stopped) => break,
        }
        let (done, still): (Vec<_>, Vec<_>) = running.into_iter().partition(|task| task.is_finished());
        running = still;
        for task in done {
            finished(&schedule, task).await;
        }
        if running.len() >= schedule.source.concurrency.max(1) as usize {
            crate::metrics::function_throttled(&schedule.source.function);
            tracing::warn!(
                function = schedule.source.function,
                schedule = schedule.source.name,
                "previous invocation still running: tick skipped"
            );
            continue;
        }
        // The invocation runs on its own task so that ticks (and their skips) keep their cadence.
        let schedule = schedule.clone();
        running.push(tokio::spawn(async move { invoke_async(&schedule).await }));
    }
    for task in running {
        if schedule.source.starts_now {
            // A function that serves continuously (the relay: each run lasts its minute) is safe
            // to stop at any point, as a crash would; waiting would hold a stop for a minute.
            task.abort();
        }
        finished(&schedule, task).await;
    }
}

/// Waits for an invocation's task (attempts catch their own panics; this is a last guard).
async fn finished(schedule: &Schedule, task: tokio::task::JoinHandle<()>) {
    match task.await {
        Ok(()) => {}
        Err(e) if e.is_cancelled() => {}
        Err(e) => tracing::error!(
            function = schedule.source.function,
            schedule = schedule.source.name,
            error = %e,
            "scheduled invocation panicked"
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use async_trait::async_trait;
    use tokio::time::Instant;

    use super::*;

    /// Records when each invocation started and ended (in runtime time) and the events it got.
    #[derive(Default)]
    struct Probe {
        takes: Duration,
        started: Mutex<Vec<Duration>>,
        ended: Mutex<Vec<Duration>>,
        events: Mutex<Vec<Value>>,
        origin: Mutex<Option<Instant>>,
    }

    impl Probe {
        fn taking(takes: Duration) -> Arc<Self> {
            let probe = Self {
                takes,
                ..Self::default()
            };
            *probe.origin.lock().unwrap() = Some(Instant::now());
            Arc::new(probe)
        }

        fn since_origin(&self) -> Duration {
            self.origin.lock().unwrap().expect("set").elapsed()
        }

        fn started(&self) -> Vec<u64> {
            self.started.lock().unwrap().iter().map(Duration::as_secs).collect()
        }
    }

    #[async_trait]
    impl ScheduledFunction for Probe {
        async fn invoke(&self, event: Value) -> Result<Value, String> {
            self.started.lock().unwrap().push(self.since_origin());
            self.events.lock().unwrap().push(event);
            tokio::time::sleep(self.takes).await;
            self.ended.lock().unwrap().push(self.since_origin());
            Ok(json!({"recovered": 0}))
        }
    }

    fn schedule(probe: Arc<Probe>, rate_secs: u64) -> Schedule {
        Schedule {
            function: probe,
            source: ScheduleSource {
                function: "IssueRecoveryFunction".into(),
                name: "EveryMinute".into(),
                expression: "rate(1 minute)".into(),
                rate: Duration::from_secs(rate_secs),
                enabled: true,
                retries: 2,
                on_failure_queue: None,
                starts_now: false,
                concurrency: 1,
            },
            region: "eu-west-1".into(),
            account_id: "123456789012".into(),
            sqs: None,
        }
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[tokio::test(start_paused = true)]
    async fn first_invocation_is_one_rate_after_start_then_every_rate() {
        let probe = Probe::taking(secs(1.0));
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(schedule(probe.clone(), 10), stopped));
        tokio::time::sleep(secs(9.5)).await;
        assert!(probe.started().is_empty(), "nothing before one rate");
        tokio::time::sleep(secs(21.0)).await;
        assert_eq!(probe.started(), [10, 20, 30]);
        stop.send(true).unwrap();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_tick_during_an_invocation_is_skipped() {
        // Each invocation outlasts two ticks: 10 runs to 35, 20 and 30 are skipped, 40 runs.
        let probe = Probe::taking(secs(25.0));
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(schedule(probe.clone(), 10), stopped));
        tokio::time::sleep(secs(75.5)).await;
        assert_eq!(probe.started(), [10, 40, 70]);
        stop.send(true).unwrap();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_reservation_of_two_lets_the_next_run_start_while_the_last_finishes() {
        // Each invocation lasts 25 s (as in the test above, where only 10, 40 and 70 run): 10 and
        // 20 overlap, 30 finds both running and is skipped, 40 starts once 10 has ended (35), 50
        // beside it once 20 has (45), and 60 is skipped.
        let probe = Probe::taking(secs(25.0));
        let mut two = schedule(probe.clone(), 10);
        two.source.concurrency = 2;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(two, stopped));
        tokio::time::sleep(secs(65.5)).await;
        assert_eq!(probe.started(), [10, 20, 40, 50]);
        stop.send(true).unwrap();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn stop_lets_the_invocation_in_progress_finish() {
        let probe = Probe::taking(secs(5.0));
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(schedule(probe.clone(), 10), stopped));
        tokio::time::sleep(secs(12.0)).await;
        stop.send(true).unwrap();
        let asked = probe.since_origin();
        task.await.unwrap();
        assert_eq!(probe.ended.lock().unwrap().as_slice(), [secs(15.0)]);
        assert!(probe.since_origin() >= secs(15.0) && asked < secs(15.0));
        tokio::time::sleep(secs(60.0)).await;
        assert_eq!(probe.started(), [10], "nothing runs after the stop");
    }

    #[tokio::test(start_paused = true)]
    async fn stop_before_the_first_tick_invokes_nothing() {
        let probe = Probe::taking(secs(1.0));
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(schedule(probe.clone(), 10), stopped));
        tokio::time::sleep(secs(3.0)).await;
        drop(stop);
        task.await.unwrap();
        assert!(probe.started().is_empty());
    }

    struct Crashing(std::sync::atomic::AtomicUsize);

    #[async_trait]
    impl ScheduledFunction for Crashing {
        async fn invoke(&self, _: Value) -> Result<Value, String> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            panic!("a crashing scheduled function (expected by this test)");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_crashing_invocation_is_retried_twice_and_the_schedule_goes_on() {
        let crashing = Arc::new(Crashing(Default::default()));
        let mut schedule = schedule(Probe::taking(Duration::ZERO), 10);
        schedule.function = crashing.clone();
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(schedule, stopped));
        // Ticks at 10, 20 and 30, each attempted at +0, +1 and +3 s.
        tokio::time::sleep(secs(35.0)).await;
        stop.send(true).unwrap();
        task.await.unwrap();
        assert_eq!(crashing.0.load(std::sync::atomic::Ordering::Relaxed), 9);
    }

    #[test]
    fn the_failure_record_is_lambdas_on_failure_message() {
        let schedule = schedule(Probe::taking(Duration::ZERO), 60);
        let event = json!({"detail-type": "Scheduled Event"});
        let record = failure_record(&schedule, event.clone(), "req-1", 3, "database down");
        let timestamp = record["timestamp"].as_str().unwrap().to_owned();
        assert!(DateTime::parse_from_rfc3339(&timestamp).is_ok(), "{timestamp}");
        assert_eq!(
            record,
            json!({
                "version": "1.0",
                "timestamp": timestamp,
                "requestContext": {
                    "requestId": "req-1",
                    "functionArn": "arn:aws:lambda:eu-west-1:123456789012:function:IssueRecoveryFunction:$LATEST",
                    "condition": "RetriesExhausted",
                    "approximateInvokeCount": 3
                },
                "requestPayload": event,
                "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
                "responsePayload": {"errorMessage": "database down", "errorType": "Error"}
            })
        );
    }

    #[tokio::test]
    async fn the_event_is_eventbridges_scheduled_event() {
        let probe = Probe::taking(Duration::ZERO);
        let schedule = schedule(probe.clone(), 60);
        let time = DateTime::parse_from_rfc3339("2030-05-06T07:08:09.654Z")
            .unwrap()
            .to_utc();
        let event = scheduled_event(&schedule, time);
        let id = event["id"].as_str().unwrap().to_owned();
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
        assert_eq!(
            event,
            json!({
                "version": "0",
                "id": id,
                "detail-type": "Scheduled Event",
                "source": "aws.events",
                "account": "123456789012",
                "time": "2030-05-06T07:08:09Z",
                "region": "eu-west-1",
                "resources": ["arn:aws:events:eu-west-1:123456789012:rule/IssueRecoveryFunction-EveryMinute"],
                "detail": {}
            })
        );
        assert_eq!(invoke(&schedule).await, Ok(json!({"recovered": 0})));
        let sent = probe.events.lock().unwrap()[0].clone();
        assert_ne!(sent["id"], event["id"], "each event has its own id");
        assert_eq!(sent["detail-type"], "Scheduled Event");
    }
}
