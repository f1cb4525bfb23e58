//! One owner per table: every SQL statement that writes a table (INSERT, UPDATE, DELETE,
//! REPLACE) in the product's code sits in that table's owning context's storage code. Another
//! context asks the owner through its port (`RewardCoupons`, `PointGrants`), never with its own
//! SQL. Reads the sources; needs no service.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Storage files, by context.
const STORAGE: &[(&str, &str)] = &[
    ("shared/src/adapters/mysql.rs", "issuance"),
    ("shared/src/adapters/mysql/coupon_book.rs", "issuance"),
    ("shared/src/adapters/mysql/reward_coupons.rs", "issuance"),
    ("shared/src/adapters/mysql/campaigns.rs", "issuance"),
    ("shared/src/adapters/mysql/coupons.rs", "coupons"),
    ("shared/src/adapters/mysql/coupons/", "coupons"),
    ("shared/src/adapters/mysql/checkout.rs", "checkout"),
    ("shared/src/adapters/mysql/points.rs", "points"),
    ("shared/src/adapters/mysql/points/", "points"),
    ("shared/src/adapters/mysql/grading.rs", "grading"),
    ("shared/src/adapters/mysql/grading/", "grading"),
    ("shared/src/adapters/mysql/partners.rs", "partners"),
];

/// Tables, by the contexts that may write them (coupons: issuance creates them, the coupons
/// context moves a coupon through its lifecycle).
fn owners(table: &str) -> &'static [&'static str] {
    match table {
        "campaigns" | "coupon_rejections" => &["issuance"],
        "coupons" => &["issuance", "coupons"],
        "coupon_history" => &["coupons"],
        t if t.starts_with("point_") || t == "idempotency_keys" || t == "idempotency_counts" => &["points"],
        "orders" | "order_counts" | "grading_policies" | "grading_runs" | "grading_steps" | "user_grades"
        | "grade_rewards" => &["grading"],
        "partner_limits" => &["partners"],
        "checkout_holds" => &["checkout"],
        _ => &[],
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn sources(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
}

/// The tables a source writes: the word after INSERT [IGNORE] INTO, REPLACE INTO, DELETE FROM, or
/// UPDATE (but not ON DUPLICATE KEY UPDATE, which names columns).
fn written_tables(text: &str) -> Vec<String> {
    let words: Vec<&str> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .collect();
    let mut tables = Vec::new();
    for (i, w) in words.iter().enumerate() {
        let next = |n: usize| words.get(i + n).copied().unwrap_or("");
        let table = match *w {
            "INSERT" if next(1) == "IGNORE" && next(2) == "INTO" => next(3),
            "INSERT" | "REPLACE" if next(1) == "INTO" => next(2),
            "DELETE" if next(1) == "FROM" => next(2),
            "UPDATE" if i > 0 && words[i - 1] != "KEY" => next(1),
            _ => continue,
        };
        if table.chars().all(|c| c.is_ascii_lowercase() || c == '_') && !table.is_empty() {
            tables.push(table.to_owned());
        }
    }
    tables
}

#[test]
fn every_table_is_written_only_by_its_owners_storage_code() {
    let root = root();
    let mut files = Vec::new();
    for dir in ["shared/src", "admin/src", "runner/src", "functions"] {
        sources(&root.join(dir), &mut files);
    }
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut wrong = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&root).unwrap().to_string_lossy().replace('\\', "/");
        let text = std::fs::read_to_string(file).unwrap();
        let context = STORAGE
            .iter()
            .find(|(prefix, _)| relative == *prefix || (prefix.ends_with('/') && relative.starts_with(prefix)))
            .map(|(_, c)| *c);
        for table in written_tables(&text) {
            if owners(&table).is_empty() {
                continue;
            }
            seen.entry(table.clone()).or_default().push(relative.clone());
            if !context.is_some_and(|c| owners(&table).contains(&c)) {
                wrong.push(format!("{relative} writes {table} (owned by {:?})", owners(&table)));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "tables written outside their owner's storage:\n{}",
        wrong.join("\n")
    );
    // The check looked at the real code: every owned table is written somewhere it found.
    for table in [
        "campaigns",
        "coupons",
        "point_wallets",
        "point_transactions",
        "idempotency_keys",
        "grade_rewards",
        "partner_limits",
    ] {
        assert!(seen.contains_key(table), "no write of {table} found: {seen:?}");
    }
}

#[test]
fn the_scan_finds_writes_and_skips_upsert_columns() {
    let sql = "INSERT IGNORE INTO coupons (a) VALUES (1) ON DUPLICATE KEY UPDATE a = 1; \
               UPDATE campaigns SET x = 1; DELETE FROM orders; REPLACE INTO point_lots";
    assert_eq!(written_tables(sql), ["coupons", "campaigns", "orders", "point_lots"]);
}
