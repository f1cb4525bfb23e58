//! `fcfs-admin keys` end to end: the real binary against the DynamoDB emulator, and the keys it makes
//! checked by the real authorizer.

use std::process::{Command, Output};
use std::sync::Arc;

use authorizer::{CacheSettings, Decision, KeyAuthorizer, Principal};
use fcfs_shared::adapters::dynamodb::DynamoApiKeys;
use fcfs_shared::testkit::ManualClock;
use integration_tests::{dynamodb, env, unique};

fn admin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fcfs-admin"))
        .args(args)
        .env("API_KEYS_TABLE", env("API_KEYS_TABLE"))
        .output()
        .expect("fcfs-admin runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn create_list_authorize_revoke() {
    let partner = unique("cli");
    let created = admin(&["keys", "create", "--partner", &partner]);
    assert!(created.status.success(), "{}", stderr(&created));
    // The key alone on stdout, so `KEY=$(fcfs-admin keys create …)` works.
    let key = stdout(&created).trim_end().to_owned();
    assert_eq!(stdout(&created), format!("{key}\n"));
    assert!(key.starts_with("fcfs_") && key.len() >= 5 + 43, "{key}");

    let listed = admin(&["keys", "list", "--partner", &partner]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let listing = stdout(&listed);
    assert!(!listing.contains(&key) && !listing.contains(&key[5..]), "{listing}");
    let row = listing.lines().nth(1).expect("one key listed");
    let display_id = row.split_whitespace().next().unwrap().to_owned();
    assert!(row.contains("ACTIVE"), "{row}");
    assert!(stderr(&created).contains(&display_id));

    // The cache's freshness is judged by an injected clock: no test waits on a real TTL.
    let clock = Arc::new(ManualClock::default());
    let settings = CacheSettings::default();
    let auth = KeyAuthorizer::new(DynamoApiKeys::new(dynamodb().await, env("API_KEYS_TABLE")), settings)
        .with_clock(clock.clone());
    assert_eq!(
        auth.decide(&key, "t").await,
        Ok(Decision::Allow(Principal {
            partner_id: partner.clone(),
            key_id: display_id.clone(),
            expires_at: None,
        }))
    );

    let revoked = admin(&["keys", "revoke", &display_id]);
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    assert!(
        admin(&["keys", "list", "--partner", &partner])
            .stdout
            .windows(7)
            .any(|w| w == b"REVOKED")
    );
    // Within the TTL the cached decision stands; past it, the revocation is read.
    assert!(matches!(auth.decide(&key, "t").await, Ok(Decision::Allow(_))));
    clock.advance(chrono::Duration::from_std(settings.allow_ttl).unwrap() + chrono::Duration::seconds(1));
    assert_eq!(auth.decide(&key, "t").await, Ok(Decision::Deny));
    // Revoking again is harmless.
    assert!(admin(&["keys", "revoke", &display_id]).status.success());
}

#[test]
fn unknown_partners_and_keys_fail_with_a_clear_message() {
    let ghost = unique("ghost");
    let listed = admin(&["keys", "list", "--partner", &ghost]);
    assert!(!listed.status.success());
    assert!(
        stderr(&listed).contains(&format!("partner \"{ghost}\" has no API keys")),
        "{}",
        stderr(&listed)
    );

    let revoked = admin(&["keys", "revoke", "ak_000000000000"]);
    assert!(!revoked.status.success());
    assert!(
        stderr(&revoked).contains("no API key has display id"),
        "{}",
        stderr(&revoked)
    );

    let bad = admin(&["keys", "create", "--partner", "has space"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("invalid partner id"), "{}", stderr(&bad));
    assert!(stdout(&bad).is_empty());

    let past = admin(&[
        "keys",
        "create",
        "--partner",
        &ghost,
        "--expires-at",
        "2001-01-01T00:00:00Z",
    ]);
    assert!(!past.status.success());
    assert!(stderr(&past).contains("not in the future"), "{}", stderr(&past));
}

#[test]
fn a_missing_table_is_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_fcfs-admin"))
        .args(["keys", "list", "--partner", "x"])
        .env_remove("API_KEYS_TABLE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("API_KEYS_TABLE"), "{}", stderr(&out));
}

/// `keys create --usage-plan-id` puts the partner's usage identifier key (what the authorizer
/// returns) into the usage plan as an API key of that value, and doing it again — another key of
/// the same partner, or `register-usage` — leaves exactly one such key in the plan. Against
/// LocalStack's API Gateway.
#[tokio::test]
async fn a_partner_is_registered_once_in_the_usage_plan() {
    let sdk = fcfs_shared::config::aws_sdk_config().await;
    let gateway = aws_sdk_apigateway::Client::new(&sdk);
    let plan = gateway
        .create_usage_plan()
        .name(unique("plan"))
        .send()
        .await
        .expect("a usage plan on the emulator")
        .id
        .expect("its id");
    let partner = unique("metered");
    let value = fcfs_shared::keys::domain::usage_identifier_key(&partner);
    for args in [
        vec!["keys", "create", "--partner", &partner, "--usage-plan-id", &plan],
        vec!["keys", "create", "--partner", &partner, "--usage-plan-id", &plan],
        vec![
            "keys",
            "register-usage",
            "--partner",
            &partner,
            "--usage-plan-id",
            &plan,
        ],
    ] {
        let run = admin(&args);
        assert!(run.status.success(), "{args:?}: {}", stderr(&run));
    }
    let in_plan = gateway
        .get_usage_plan_keys()
        .usage_plan_id(&plan)
        .send()
        .await
        .expect("the plan's keys")
        .items
        .unwrap_or_default();
    let ours: Vec<_> = in_plan
        .iter()
        .filter(|k| k.value.as_deref() == Some(value.as_str()))
        .collect();
    assert_eq!(ours.len(), 1, "{in_plan:?}");
}

/// `limits set --rate N --burst M` gives the partner a usage plan of its own (its key leaves the
/// stack's plan: API Gateway allows one plan per stage), a second call changes that plan's
/// throttle, and `--rate default` puts the key back and deletes the plan. Against LocalStack's
/// API Gateway (which stores throttles; enforcing them is API Gateway's, on AWS).
#[tokio::test]
async fn a_partners_own_rate_is_a_usage_plan_of_its_own() {
    let sdk = fcfs_shared::config::aws_sdk_config().await;
    let gateway = aws_sdk_apigateway::Client::new(&sdk);
    let shared_name = unique("shared-plan");
    let shared = gateway
        .create_usage_plan()
        .name(&shared_name)
        .send()
        .await
        .expect("a usage plan on the emulator")
        .id
        .expect("its id");
    let partner = unique("throttled");
    let run = admin(&[
        "keys",
        "register-usage",
        "--partner",
        &partner,
        "--usage-plan-id",
        &shared,
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let value = fcfs_shared::keys::domain::usage_identifier_key(&partner);
    let in_plan = async |plan: &str| {
        gateway
            .get_usage_plan_keys()
            .usage_plan_id(plan)
            .send()
            .await
            .expect("the plan's keys")
            .items
            .unwrap_or_default()
            .iter()
            .any(|k| k.value.as_deref() == Some(value.as_str()))
    };
    let own_plan = async || {
        gateway
            .get_usage_plans()
            .limit(500)
            .send()
            .await
            .expect("the plans")
            .items
            .unwrap_or_default()
            .into_iter()
            .find(|p| p.name.as_deref() == Some(format!("{shared_name}-partner-{partner}").as_str()))
    };
    // Whole rates: LocalStack's UpdateUsagePlan parses a patched rate as an integer (AWS takes a double).
    for (rate, burst) in [("5", "2"), ("8", "3")] {
        let args = [
            "limits",
            "set",
            "--partner",
            &partner,
            "--rate",
            rate,
            "--burst",
            burst,
            "--usage-plan-id",
            &shared,
        ];
        let run = admin(&args);
        assert!(run.status.success(), "{args:?}: {}", stderr(&run));
        let own = own_plan().await.expect("the partner's own plan");
        let throttle = own.throttle.clone().expect("a throttle");
        assert_eq!(
            (throttle.rate_limit, throttle.burst_limit),
            (rate.parse().unwrap(), burst.parse().unwrap())
        );
        assert!(
            in_plan(own.id.as_deref().unwrap()).await,
            "the key is in the partner's plan"
        );
        assert!(!in_plan(&shared).await, "and no longer in the stack's");
    }
    let run = admin(&[
        "limits",
        "set",
        "--partner",
        &partner,
        "--rate",
        "default",
        "--usage-plan-id",
        &shared,
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(in_plan(&shared).await, "back in the stack's plan");
    assert!(own_plan().await.is_none(), "the partner's plan is gone");
    let run = admin(&[
        "limits",
        "set",
        "--partner",
        &partner,
        "--rate",
        "5",
        "--usage-plan-id",
        &shared,
    ]);
    assert!(!run.status.success(), "a rate without a burst is refused");
}
