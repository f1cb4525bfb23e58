//! `fcfs-admin preflight`: before a deploy or a big sale, the account's limits against what the
//! stack asks for, with numbers. Lambda keeps at least 100 executions unreserved, so the stack's
//! reservations must fit in the account's unreserved concurrency minus 100 (plus what the stack
//! itself reserves already, on a redeploy); a sale is served at most at the lowest of API
//! Gateway's account throttle, the stage's and one partner's usage plan. And the most MySQL
//! connections the functions can hold at once must fit `DatabaseMaxConnections`
//! (`fcfs_template::connections_at_most`: functions without a reservation share what the account
//! leaves unreserved).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use anyhow::{Context, Result, anyhow};
use aws_sdk_lambda::error::DisplayErrorContext;

/// Executions Lambda never lets reservations take (AWS: "UnreservedConcurrentExecution below its
/// minimum value of [100]").
pub const UNRESERVED_MINIMUM: i64 = 100;

/// What the account says (Lambda's GetAccountSettings, API Gateway's GetAccount).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Account {
    pub concurrency_limit: i64,
    /// The limit minus every function's reserved concurrency, this stack's included.
    pub unreserved: i64,
    /// Requests per second and burst API Gateway allows the whole account in this region.
    pub gateway_rate: f64,
    pub gateway_burst: i64,
}

/// What the stack asks for: each reservation parameter's value, what the stack's functions
/// reserve now (0 before the first deploy), and its throttles.
#[derive(Debug, Clone, PartialEq)]
pub struct Stack {
    pub reservations: BTreeMap<String, i64>,
    pub reserved_now: i64,
    pub stage_rate: f64,
    pub partner_rate: f64,
    pub database_users: Vec<fcfs_template::DatabaseUser>,
    pub database_max_connections: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    /// Executions the reservations take (`-1`: none).
    pub needed: i64,
    /// What the reservations may take: unreserved + the stack's own − 100.
    pub available: i64,
    pub concurrency_limit: i64,
    /// The rate a sale can be served at (requests per second), and what bounds it.
    pub sale_rate: f64,
    pub bound_by: &'static str,
    pub partner_rate: f64,
    /// The most MySQL connections the functions can hold at once, and what the database allows.
    pub database_connections: u64,
    pub database_max_connections: u64,
}

impl Assessment {
    /// Without reservations the stack fits any account.
    pub fn fits(&self) -> bool {
        self.reservations_fit() && self.database_fits()
    }

    pub fn reservations_fit(&self) -> bool {
        self.needed == 0 || self.needed <= self.available
    }

    pub fn database_fits(&self) -> bool {
        self.database_connections <= self.database_max_connections
    }
}

pub fn assess(account: Account, stack: &Stack) -> Assessment {
    let needed: i64 = stack.reservations.values().filter(|r| **r > 0).sum();
    let available = account.unreserved + stack.reserved_now - UNRESERVED_MINIMUM;
    let (sale_rate, bound_by) = if account.gateway_rate < stack.stage_rate {
        (account.gateway_rate, "API Gateway's account throttle")
    } else {
        (stack.stage_rate, "the stage's throttle (StageThrottleRate)")
    };
    // Functions without a reservation share what is left unreserved once the stack's are taken.
    let shared = (account.unreserved + stack.reserved_now - needed).clamp(0, i64::from(u32::MAX));
    let database_connections =
        fcfs_template::connections_at_most(&stack.database_users, u32::try_from(shared).unwrap_or(u32::MAX));
    Assessment {
        database_connections,
        database_max_connections: stack.database_max_connections,
        needed,
        available,
        concurrency_limit: account.concurrency_limit,
        sale_rate,
        bound_by,
        partner_rate: stack.partner_rate.min(sale_rate),
    }
}

impl fmt::Display for Assessment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Lambda: the stack reserves {} executions; the account can give {} (its limit {}, \
             {UNRESERVED_MINIMUM} of which stay unreserved, others' reservations excluded)",
            self.needed, self.available, self.concurrency_limit
        )?;
        if self.reservations_fit() {
            writeln!(f, "  fits, with {} to spare", self.available - self.needed)?;
        } else {
            writeln!(
                f,
                "  does NOT fit: {} short. Ask AWS for a higher concurrency quota, or set reservations to -1 \
                 (<Function>ReservedConcurrency) until it is raised",
                self.needed - self.available
            )?;
        }
        writeln!(
            f,
            "MySQL: the functions can hold at most {} connections at once (reservations × DB_MAX_CONNECTIONS, \
             functions without one sharing the unreserved executions); DatabaseMaxConnections is {}",
            self.database_connections, self.database_max_connections
        )?;
        if !self.database_fits() {
            writeln!(
                f,
                "  does NOT hold: {} over. Under load every MySQL route would answer 503: lower the reservations \
                 of the database-using functions, or use a larger instance class and raise DatabaseMaxConnections",
                self.database_connections - self.database_max_connections
            )?;
        }
        writeln!(
            f,
            "API: a sale can be served at up to {} requests/s in all, bounded by {}; one partner at up to {} \
             requests/s (its usage plan); above them API Gateway answers 429",
            self.sale_rate, self.bound_by, self.partner_rate
        )
    }
}

/// The stack's side from the template and the parameters the deploy will be given.
fn stack_from(template: &Path, overrides: &BTreeMap<String, String>) -> Result<(Stack, Vec<String>)> {
    let template = fcfs_template::Template::load(
        template,
        overrides,
        fcfs_template::Placement::local("https://sqs.invalid", "us-east-1"),
    )
    .context("cannot read the template")?;
    let number = |name: &str| -> Result<f64> {
        template
            .parameter(name)
            .with_context(|| format!("the template has no value for {name}"))?
            .parse()
            .with_context(|| format!("{name} is not a number"))
    };
    let mut reservations = BTreeMap::new();
    for (name, value) in template.parameters() {
        if name.ends_with("ReservedConcurrency") {
            let value: i64 = value
                .parse()
                .with_context(|| format!("{name}={value} is not a number"))?;
            reservations.insert(name.clone(), value);
        }
    }
    let stage = template.parameter("Stage").unwrap_or("dev").to_owned();
    // Every function is named fcfs-<Stage>-<binary> (FunctionName in template.yaml).
    let names = template
        .functions()?
        .into_iter()
        .map(|f| format!("fcfs-{stage}-{}", f.binary))
        .collect();
    let stack = Stack {
        reservations,
        reserved_now: 0,
        stage_rate: number("StageThrottleRate")?,
        partner_rate: number("PartnerThrottleRate")?,
        database_users: template.database_users()?,
        database_max_connections: number("DatabaseMaxConnections")? as u64,
    };
    Ok((stack, names))
}

pub async fn run(template: &Path, overrides: &BTreeMap<String, String>) -> Result<bool> {
    let (mut stack, functions) = stack_from(template, overrides)?;
    let sdk = fcfs_shared::config::aws_sdk_config().await;
    let lambda = aws_sdk_lambda::Client::new(&sdk);
    let settings = lambda
        .get_account_settings()
        .send()
        .await
        .map_err(|e| anyhow!(DisplayErrorContext(e)))
        .context("cannot read Lambda's account settings")?;
    let limit = settings
        .account_limit()
        .context("GetAccountSettings returned no account limit")?;
    for name in &functions {
        match lambda.get_function_concurrency().function_name(name).send().await {
            Ok(found) => stack.reserved_now += i64::from(found.reserved_concurrent_executions().unwrap_or(0)),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) => {}
            Err(e) => {
                return Err(anyhow!(DisplayErrorContext(e)))
                    .with_context(|| format!("cannot read {name}'s reservation"));
            }
        }
    }
    let gateway = aws_sdk_apigateway::Client::new(&sdk)
        .get_account()
        .send()
        .await
        .map_err(|e| anyhow!(aws_sdk_apigateway::error::DisplayErrorContext(e)))
        .context("cannot read API Gateway's account settings")?;
    let throttle = gateway.throttle_settings();
    let account = Account {
        concurrency_limit: i64::from(limit.concurrent_executions()),
        unreserved: limit.unreserved_concurrent_executions().map_or(0, i64::from),
        gateway_rate: throttle.map_or(10_000.0, |t| t.rate_limit()),
        gateway_burst: throttle.map_or(5_000, |t| i64::from(t.burst_limit())),
    };
    let assessment = assess(account, &stack);
    eprint!("{assessment}");
    println!(
        "{}",
        serde_json::json!({
            "fits": assessment.fits(),
            "reservations": stack.reservations,
            "reservedNeeded": assessment.needed,
            "reservedAvailable": assessment.available,
            "reservedByTheStackNow": stack.reserved_now,
            "concurrencyLimit": account.concurrency_limit,
            "unreservedNow": account.unreserved,
            "gatewayAccountRate": account.gateway_rate,
            "gatewayAccountBurst": account.gateway_burst,
            "saleRate": assessment.sale_rate,
            "partnerRate": assessment.partner_rate,
            "databaseConnectionsAtMost": assessment.database_connections,
            "databaseMaxConnections": assessment.database_max_connections,
            "databaseFits": assessment.database_fits(),
        })
    );
    Ok(assessment.fits())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_template() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml")
    }

    /// A new account as AWS's documentation describes one with a lowered quota: a limit of 10,
    /// nothing reserved. GetAccountSettings then answers ConcurrentExecutions 10,
    /// UnreservedConcurrentExecutions 10; API Gateway's GetAccount, rateLimit 10000 and burstLimit
    /// 5000 (recorded answers: the shapes of the AWS CLI examples of both calls).
    const NEW_ACCOUNT: Account = Account {
        concurrency_limit: 10,
        unreserved: 10,
        gateway_rate: 10_000.0,
        gateway_burst: 5_000,
    };
    /// The default quota: 1,000 executions, nothing reserved.
    const DEFAULT_ACCOUNT: Account = Account {
        concurrency_limit: 1_000,
        unreserved: 1_000,
        ..NEW_ACCOUNT
    };

    #[test]
    fn the_default_reservations_fit_the_default_quota_and_not_a_new_accounts() {
        let (stack, functions) = stack_from(&repo_template(), &BTreeMap::new()).unwrap();
        assert_eq!(functions.len(), 15, "{functions:?}");
        assert_eq!(
            stack.reservations.len(),
            15,
            "one per function: {:?}",
            stack.reservations
        );
        let default = assess(DEFAULT_ACCOUNT, &stack);
        assert_eq!((default.needed, default.available), (701, 900));
        assert!(default.fits());
        // 591 one-connection instances, the writer's 5 × 2 and the relay's 2 × 4: within a
        // db.r6g.large's budget.
        assert_eq!(
            (default.database_connections, default.database_max_connections),
            (609, 900)
        );
        let new = assess(NEW_ACCOUNT, &stack);
        assert!(!new.fits(), "{new}");
        assert!(new.to_string().contains("does NOT fit: 791 short"), "{new}");
    }

    #[test]
    fn with_every_reservation_at_minus_one_even_a_new_account_fits() {
        let (defaults, _) = stack_from(&repo_template(), &BTreeMap::new()).unwrap();
        let none: BTreeMap<String, String> = defaults
            .reservations
            .keys()
            .map(|name| (name.clone(), "-1".to_owned()))
            .collect();
        let (stack, _) = stack_from(&repo_template(), &none).unwrap();
        // A limit of 10 leaves nothing above the 100 Lambda keeps: only "no reservation" fits.
        let new = assess(NEW_ACCOUNT, &stack);
        assert_eq!(new.needed, 0);
        assert!(new.available < 0 && new.fits(), "{new}");
        let one = BTreeMap::from([("RecoveryReservedConcurrency".to_owned(), "1".to_owned())]);
        let (stack, _) = stack_from(&repo_template(), &none.into_iter().chain(one).collect()).unwrap();
        assert!(!assess(NEW_ACCOUNT, &stack).fits(), "one reservation is too many there");
    }

    #[test]
    fn connections_past_the_database_budget_do_not_hold() {
        // A db.t4g.medium: 90 connections, 80 of them the stack's.
        let small = BTreeMap::from([("DatabaseMaxConnections".to_owned(), "80".to_owned())]);
        let (stack, _) = stack_from(&repo_template(), &small).unwrap();
        let over = assess(DEFAULT_ACCOUNT, &stack);
        assert!(over.reservations_fit() && !over.fits(), "{over}");
        assert!(over.to_string().contains("does NOT hold: 529 over"), "{over}");
        // Without reservations, the APIs and sweeps share the account's 1,000 executions (one
        // connection each); the writer and the grading workers stay bounded by their event
        // sources' MaximumConcurrency (5 × 2 and 8 × 1).
        let (defaults, _) = stack_from(&repo_template(), &BTreeMap::new()).unwrap();
        let none: BTreeMap<String, String> = defaults
            .reservations
            .keys()
            .map(|name| (name.clone(), "-1".to_owned()))
            .collect();
        let (stack, _) = stack_from(&repo_template(), &none).unwrap();
        // The relay's pool (4) is the largest of those sharing them.
        assert_eq!(assess(DEFAULT_ACCOUNT, &stack).database_connections, 4 * 1_000 + 10 + 8);
        // A new account's 10 executions cannot overrun even a small database.
        let (stack, _) = stack_from(&repo_template(), &none.into_iter().chain(small).collect()).unwrap();
        let new = assess(NEW_ACCOUNT, &stack);
        assert!(new.fits(), "{new}");
    }

    #[test]
    fn a_redeploy_counts_what_the_stack_reserves_already() {
        let (mut stack, _) = stack_from(&repo_template(), &BTreeMap::new()).unwrap();
        let deployed = Account {
            unreserved: 1_000 - 689,
            ..DEFAULT_ACCOUNT
        };
        assert!(!assess(deployed, &stack).fits(), "as if nothing were the stack's");
        stack.reserved_now = 689;
        assert!(assess(deployed, &stack).fits());
    }

    #[test]
    fn a_sale_is_served_at_the_lowest_throttle() {
        let (stack, _) = stack_from(&repo_template(), &BTreeMap::new()).unwrap();
        let default = assess(DEFAULT_ACCOUNT, &stack);
        assert_eq!((default.sale_rate, default.partner_rate), (2_000.0, 500.0));
        let newer_region = Account {
            gateway_rate: 1_000.0,
            ..DEFAULT_ACCOUNT
        };
        let bounded = assess(newer_region, &stack);
        assert_eq!(
            (bounded.sale_rate, bounded.bound_by),
            (1_000.0, "API Gateway's account throttle")
        );
    }
}
