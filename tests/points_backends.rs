//! The points ledger on its two backends: every scenario of `testkit::points_cases` runs on the
//! real MariaDB and on the in-memory fake, and the two must agree on every answer, the resulting
//! lots and the whole history (ids compared by order of appearance). The fake applies the same
//! plan MySQL persists; this is what keeps it honest, so the unit tests that run on it test the
//! ledger that runs.
//!
//! One test in its own binary: its sweep step expires whatever is due in the shared database at
//! the scenario's clock, which must not race other tests' wallets.

use chrono::{DateTime, SubsecRound, Utc};
use fcfs_shared::adapters::mysql::MySqlStore;
use fcfs_shared::testkit::MemoryPoints;
use fcfs_shared::testkit::points_cases::{CASES, run_case};
use integration_tests::{mysql, unique};

#[tokio::test]
async fn every_scenario_has_the_same_answers_lots_and_history_on_mysql_and_on_the_fake() {
    let store = MySqlStore::new(mysql().await).with_timeout(std::time::Duration::from_secs(20));
    let partner = unique("backends");
    let start: DateTime<Utc> = Utc::now().trunc_subsecs(3);
    for (n, case) in CASES.iter().enumerate() {
        let run = format!("c{n}");
        let on_mysql = run_case(store.clone(), case, &partner, &run, start).await;
        let in_memory = run_case(MemoryPoints::default(), case, &partner, &run, start).await;
        assert_eq!(on_mysql.answers, in_memory.answers, "{}: answers", case.name);
        for (db, fake) in on_mysql.wallets.iter().zip(&in_memory.wallets) {
            assert_eq!(db, fake, "{}: wallet {}", case.name, db.0);
        }
        assert!(
            on_mysql.wallets.iter().any(|(_, _, history)| !history.is_empty()),
            "{}: the scenario wrote something",
            case.name
        );
    }
    let audit = store.verify_points(Some(&partner)).await.expect("the audit runs");
    assert!(audit.is_clean(), "{audit:?}");
}
