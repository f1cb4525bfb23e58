//! The database connection budget: how many MySQL connections the stack's functions can hold at
//! once. Aurora refuses connections past its `max_connections` (90 on a db.t4g.medium, 1,000 on a
//! db.r6g.large), and a refused connection is a 503 on every MySQL route, so the most the
//! functions can open is checked against `DatabaseMaxConnections` by `tests/template_contract.rs`
//! (the template's defaults) and by `fcfs-admin preflight` (a deploy's parameters, the account's
//! concurrency).

use crate::{Template, TemplateError};

/// Variables that mean "this function talks to MySQL".
const DATABASE_SETTINGS: &[&str] = &["DATABASE_SECRET_ARN", "DATABASE_URL"];

/// The pool size per instance, which every function that uses MySQL must state.
pub const POOL_SETTING: &str = "DB_MAX_CONNECTIONS";

/// A function that uses MySQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseUser {
    pub function: String,
    /// Connections one instance may hold (its pool's size).
    pub per_instance: u32,
    /// Instances that can run at once: its reservation or, for a function fed only by SQS, its
    /// event sources' `MaximumConcurrency`, whichever is lower. `None`: bounded only by the
    /// account's unreserved concurrency, which it shares with every function without a bound.
    pub instances: Option<u32>,
}

/// The most connections `users` can hold at once when the functions without a bound share
/// `shared_instances` executions: each bounded function its instances × pool; the unbounded
/// ones together at most `shared_instances` instances, each with at most the largest of their
/// pools.
pub fn connections_at_most(users: &[DatabaseUser], shared_instances: u32) -> u64 {
    let bounded: u64 = users
        .iter()
        .filter_map(|u| u.instances.map(|n| u64::from(n) * u64::from(u.per_instance)))
        .sum();
    let largest_unbounded_pool = users
        .iter()
        .filter(|u| u.instances.is_none())
        .map(|u| u64::from(u.per_instance))
        .max()
        .unwrap_or(0);
    bounded + largest_unbounded_pool * u64::from(shared_instances)
}

impl Template {
    /// Every function that uses MySQL, with its pool and how many of it can run at once.
    pub fn database_users(&self) -> Result<Vec<DatabaseUser>, TemplateError> {
        let mut users = Vec::new();
        for function in self.functions()? {
            let given = |name: &str| function.environment.contains_key(name) || function.unresolved.contains_key(name);
            if !DATABASE_SETTINGS.iter().any(|s| given(s)) {
                continue;
            }
            let id = &function.logical_id;
            let per_instance = function
                .environment
                .get(POOL_SETTING)
                .ok_or_else(|| {
                    TemplateError::Invalid(format!(
                        "{id} uses the database and does not state its pool size ({POOL_SETTING})"
                    ))
                })?
                .parse::<u32>()
                .map_err(|e| TemplateError::Invalid(format!("{id}: {POOL_SETTING}: {e}")))?;
            let only_sqs = !function.sqs_sources.is_empty()
                && function.routes.is_empty()
                && function.schedules.is_empty()
                && function.sns_topics.is_empty();
            let by_sources = only_sqs
                .then(|| {
                    function
                        .sqs_sources
                        .iter()
                        .map(|s| s.maximum_concurrency.and_then(|c| u32::try_from(c).ok()))
                        .sum::<Option<u32>>()
                })
                .flatten();
            let instances = match (function.reserved_concurrency, by_sources) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            users.push(DatabaseUser {
                function: id.clone(),
                per_instance,
                instances,
            });
        }
        Ok(users)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(per_instance: u32, instances: Option<u32>) -> DatabaseUser {
        DatabaseUser {
            function: "F".into(),
            per_instance,
            instances,
        }
    }

    #[test]
    fn bounded_functions_count_each_instance_and_unbounded_ones_share_the_pool() {
        let users = [user(1, Some(400)), user(2, Some(5)), user(1, None), user(2, None)];
        // 400 + 10, and at most 900 unreserved executions each holding up to 2.
        assert_eq!(connections_at_most(&users, 900), 410 + 1_800);
        assert_eq!(connections_at_most(&users[..2], 900), 410);
        assert_eq!(connections_at_most(&[], 900), 0);
    }
}
