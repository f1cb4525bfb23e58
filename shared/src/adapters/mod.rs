//! The contexts' ports implemented, grouped by technology.

pub mod discord;
pub mod dynamodb;
pub mod events;
pub mod mysql;
pub mod redis;
pub mod secret_box;
pub mod secrets;
pub mod sqs;
pub mod webhook_http;

/// The grading context as every grading function runs it: MySQL (credentials from Secrets Manager,
/// opened on first use), the grading queue at `GRADING_QUEUE_URL`, `GRADING_PARTITIONS` partitions
/// per run (default 64).
pub fn grading_service_from(
    settings: &crate::config::Settings,
    sdk: &aws_config::SdkConfig,
) -> Result<crate::grading::GradingService<mysql::MySqlStore, sqs::SqsPartitionQueue>, crate::config::StartupError> {
    let queue = sqs::SqsPartitionQueue::new(sqs::client(sdk), settings.required("GRADING_QUEUE_URL")?);
    let store = mysql::store_from(settings, sdk)?;
    Ok(crate::grading::GradingService::new(store.clone(), queue)
        .with_partitions(settings.or("GRADING_PARTITIONS", crate::grading::domain::DEFAULT_PARTITIONS)?)
        // The same store answers the partners context's port: each partner's limits.
        .with_limits(std::sync::Arc::new(store)))
}
