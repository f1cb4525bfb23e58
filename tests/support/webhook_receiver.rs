//! A partner's webhook endpoint for the events tests: an HTTP server on 127.0.0.1 (a port the
//! kernel picks) that records every delivery as it arrived (raw body bytes, headers, instant) and
//! answers as the test has switched it: 200, 500, or never (the connection hangs until the sender
//! gives up). Every wait has a deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;

/// How the receiver answers the next deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 200 at once: delivered.
    Ok,
    /// 500 at once: the sender must retry.
    Fail,
    /// Never answers (the request is recorded, then held open): the sender's deadline must end it.
    Hang,
}

/// One POST as it arrived.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub body: Bytes,
    /// Header names lowercased; a repeated header keeps its last value.
    pub headers: BTreeMap<String, String>,
    pub arrived: Instant,
    /// What the receiver answered (`None`: it hung).
    pub answered: Option<u16>,
}

impl Delivery {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }

    pub fn signature(&self) -> Option<&str> {
        self.header("x-fcfs-signature")
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The envelopes it carried.
    pub fn events(&self) -> Vec<Value> {
        self.json()["events"].as_array().cloned().unwrap_or_default()
    }
}

#[derive(Default)]
struct Inner {
    mode: Option<Mode>,
    deliveries: Vec<Delivery>,
}

type Shared = Arc<Mutex<Inner>>;

/// The server; it stops when dropped.
pub struct WebhookReceiver {
    pub url: String,
    pub port: u16,
    state: Shared,
    notify: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WebhookReceiver {
    /// A receiver answering 200, listening on 127.0.0.1, path `/hooks`.
    pub async fn start() -> Self {
        Self::start_in(Mode::Ok).await
    }

    pub async fn start_in(mode: Mode) -> Self {
        let state: Shared = Arc::new(Mutex::new(Inner {
            mode: Some(mode),
            deliveries: Vec::new(),
        }));
        let notify = Arc::new(tokio::sync::Notify::new());
        let app = axum::Router::new()
            .route("/hooks", post(receive))
            .with_state((state.clone(), notify.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port on 127.0.0.1");
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://127.0.0.1:{port}/hooks"),
            port,
            state,
            notify,
            task,
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = Some(mode);
    }

    pub fn mode(&self) -> Mode {
        self.state.lock().unwrap().mode.unwrap_or(Mode::Ok)
    }

    /// Every POST so far, in arrival order (answered or not).
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.state.lock().unwrap().deliveries.clone()
    }

    /// Every envelope of every POST so far, with the instant its POST arrived and the answer it
    /// got, duplicates included.
    pub fn events(&self) -> Vec<(Value, Instant, Option<u16>)> {
        self.deliveries()
            .iter()
            .flat_map(|d| d.events().into_iter().map(move |e| (e, d.arrived, d.answered)))
            .collect()
    }

    /// The distinct event ids that arrived in a POST answered 200 (delivered), with the first
    /// such arrival.
    pub fn delivered_ids(&self) -> BTreeMap<String, Instant> {
        let mut ids = BTreeMap::new();
        for (event, at, answered) in self.events() {
            if answered != Some(200) {
                continue;
            }
            if let Some(id) = event["id"].as_str() {
                ids.entry(id.to_owned()).or_insert(at);
            }
        }
        ids
    }

    /// The distinct event ids that arrived at all, whatever the answer.
    pub fn seen_ids(&self) -> BTreeSet<String> {
        self.events()
            .iter()
            .filter_map(|(e, _, _)| e["id"].as_str().map(str::to_owned))
            .collect()
    }

    /// The first delivered envelope of each id (in arrival order).
    pub fn delivered_events(&self) -> Vec<Value> {
        let mut seen = BTreeSet::new();
        self.events()
            .into_iter()
            .filter(|(_, _, answered)| *answered == Some(200))
            .filter_map(|(e, _, _)| {
                let id = e["id"].as_str()?.to_owned();
                seen.insert(id).then_some(e)
            })
            .collect()
    }

    /// Waits until `pred` holds of the deliveries, or the deadline passes: `Ok` with them, or
    /// `Err` with what arrived by then.
    pub async fn wait_until(
        &self,
        deadline: Duration,
        mut pred: impl FnMut(&[Delivery]) -> bool,
    ) -> Result<Vec<Delivery>, Vec<Delivery>> {
        let until = Instant::now() + deadline;
        loop {
            let notified = self.notify.notified();
            let now = self.deliveries();
            if pred(&now) {
                return Ok(now);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(now);
            }
            // Woken by the next arrival, or every 100 ms whatever happens.
            let _ = tokio::time::timeout(left.min(Duration::from_millis(100)), notified).await;
        }
    }

    /// Waits (at most `deadline`) until at least `n` distinct event ids were delivered (answered
    /// 200); panics with what arrived otherwise.
    pub async fn wait_for_delivered(&self, n: usize, deadline: Duration) -> BTreeMap<String, Instant> {
        let waited = self.wait_until(deadline, |_| self.delivered_ids().len() >= n).await;
        if let Err(got) = waited {
            panic!(
                "{} of {n} distinct events delivered within {deadline:?}; arrived: {:?}",
                self.delivered_ids().len(),
                got.iter()
                    .map(|d| String::from_utf8_lossy(&d.body).into_owned())
                    .collect::<Vec<_>>()
            );
        }
        self.delivered_ids()
    }

    /// Waits (at most `deadline`) until delivered events satisfy `pred`; the delivered envelopes
    /// (first of each id), or a panic naming `what`.
    pub async fn wait_for_events(&self, what: &str, deadline: Duration, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let waited = self.wait_until(deadline, |_| pred(&self.delivered_events())).await;
        if waited.is_err() {
            panic!(
                "{what}: not delivered within {deadline:?}; delivered: {:#?}",
                self.delivered_events()
            );
        }
        self.delivered_events()
    }

    /// Waits (at most `deadline`) until at least `n` POSTs arrived, whatever was answered.
    pub async fn wait_for_posts(&self, n: usize, deadline: Duration) -> Vec<Delivery> {
        match self.wait_until(deadline, |d| d.len() >= n).await {
            Ok(d) => d,
            Err(d) => panic!("{} of {n} POSTs arrived within {deadline:?}", d.len()),
        }
    }
}

async fn receive(
    State((state, notify)): State<(Shared, Arc<tokio::sync::Notify>)>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let arrived = Instant::now();
    let mode = state.lock().unwrap().mode.unwrap_or(Mode::Ok);
    let answered = match mode {
        Mode::Ok => Some(200),
        Mode::Fail => Some(500),
        Mode::Hang => None,
    };
    let headers = headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    state.lock().unwrap().deliveries.push(Delivery {
        body,
        headers,
        arrived,
        answered,
    });
    notify.notify_waiters();
    match answered {
        Some(code) => StatusCode::from_u16(code).unwrap(),
        None => {
            // Held open far longer than any sender's deadline; the sender hangs up first.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK
        }
    }
}

/// Runs the independent verifier (`tests/support/verify_webhook.py`, Python's stdlib only) on one
/// delivery: true when the signature is valid for `secret` within 300 s.
pub fn verify_with_python(secret: &str, delivery: &Delivery) -> bool {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let script = crate::repo_root().join("tests/support/verify_webhook.py");
    let signature = delivery.signature().unwrap_or("");
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(secret)
        .arg(signature)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs the verifier");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&delivery.body)
        .expect("the body goes to the verifier");
    let out = child.wait_with_output().expect("the verifier ends");
    match out.status.code() {
        Some(0) => true,
        Some(1) => false,
        other => panic!(
            "the verifier failed ({other:?}): {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}
