//! Process configuration: environment variables, SDK clients and logging, set up the same way by
//! every function so that one variable (`AWS_ENDPOINT_URL`) moves them all between AWS and a local stack.

use aws_config::BehaviorVersion;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is required")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// What a function is configured with: its environment. On Lambda that is the process
/// environment; the local runner hands each function the variables `template.yaml` gives it.
///
/// Every name asked for is recorded ([`Settings::names_read`]), so a test can prove from the code
/// which variables a function reads, and that the template gives it no other.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    vars: std::collections::BTreeMap<String, String>,
    /// Shared by clones: a function's constructors may each take their own copy.
    read: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<&'static str>>>,
}

impl Settings {
    pub fn from_process() -> Self {
        Self::new(std::env::vars().collect())
    }

    pub fn new(vars: std::collections::BTreeMap<String, String>) -> Self {
        Self {
            vars,
            read: Default::default(),
        }
    }

    fn get(&self, name: &'static str) -> Option<&str> {
        self.read.lock().unwrap_or_else(|e| e.into_inner()).insert(name);
        self.vars.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// Every variable asked for so far, through [`required`](Self::required),
    /// [`optional`](Self::optional) or [`or`](Self::or), set or not.
    pub fn names_read(&self) -> std::collections::BTreeSet<&'static str> {
        self.read.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A variable that may be absent (or empty).
    pub fn optional(&self, name: &'static str) -> Option<String> {
        self.get(name).map(str::to_owned)
    }

    pub fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.get(name).map(str::to_owned).ok_or(ConfigError::Missing(name))
    }

    pub fn or<T: std::str::FromStr>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(name) {
            Some(v) => v.parse().map_err(|e: T::Err| ConfigError::Invalid {
                name,
                reason: e.to_string(),
            }),
            None => Ok(default),
        }
    }
}

/// Why a function could not start: its configuration, or a service it connects to at start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Unavailable(#[from] crate::kernel::Unavailable),
    #[error("metrics recorder: {0}")]
    Telemetry(String),
}

/// SDK configuration from the standard chain; `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_SQS`, …)
/// points every client at a local emulator.
pub async fn aws_sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

/// The SQS endpoint of a local stack, from `var` (an environment): `AWS_ENDPOINT_URL_SQS` when SQS
/// runs on its own emulator (as the SDK itself prefers it), else `AWS_ENDPOINT_URL`.
pub fn local_sqs_endpoint(var: impl Fn(&str) -> Option<String>) -> Option<String> {
    var("AWS_ENDPOINT_URL_SQS")
        .filter(|v| !v.is_empty())
        .or_else(|| var("AWS_ENDPOINT_URL"))
}

/// Structured JSON logs (CloudWatch parses them) on stdout; `RUST_LOG` sets the level.
pub fn init_tracing() {
    init_tracing_to(std::io::stdout);
}

/// The same logs to another writer (a command whose stdout is its answer logs to stderr).
pub fn init_tracing_to<W>(writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_target(false)
        .with_writer(writer)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_are_recorded_set_or_not_and_shared_by_clones() {
        let settings = Settings::new([("A".to_owned(), "1".to_owned())].into());
        let copy = settings.clone();
        assert_eq!(copy.or("A", 0).unwrap(), 1);
        assert!(settings.required("B").is_err());
        assert_eq!(settings.or("C", 7).unwrap(), 7);
        assert_eq!(settings.names_read(), ["A", "B", "C"].into());
        assert!(Settings::default().names_read().is_empty());
    }
}
