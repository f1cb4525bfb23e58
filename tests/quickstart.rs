//! `docs/quickstart.md` stays true: every shell block in it runs, in order, against the runner
//! serving template.yaml (with `fcfs-admin` on `PATH`), and each answer must match the block shown
//! after it. Ids, times, request ids and partition lists may differ (they are checked to be
//! there, of the same JSON kind); everything else must be equal. `<!-- keep NAME = field -->` after an answer passes a
//! field of it (or `the output`) to the following blocks as `$NAME`; `until it matches` retries the
//! command (every 300 ms, at most 60 s) while the writer or the grading workers catch up.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use integration_tests::{repo_root, unique};
use serde_json::Value;

/// Fields whose values differ from run to run.
const VARYING: &[&str] = &[
    "campaignId",
    "partnerId",
    "couponId",
    "transactionId",
    "pointsTransactionId",
    "holdId",
    "settledAt",
    "runId",
    "requestId",
    "createdAt",
    "usedAt",
    "startedAt",
    "finishedAt",
    "durationMs",
    "expiresAt",
    "issuedAt",
    "pendingPartitions",
    "partitionsDone",
    "partitionsTotal",
];

struct Step {
    command: String,
    /// The info string and text of the block shown after the command.
    answer: Option<(String, String)>,
    keep: Vec<(String, String)>,
    until_it_matches: bool,
}

fn steps(markdown: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut lines = markdown.lines();
    while let Some(line) = lines.next() {
        if let Some(info) = line.strip_prefix("```") {
            let body: Vec<&str> = lines.by_ref().take_while(|l| !l.starts_with("```")).collect();
            let body = body.join("\n");
            match info.trim() {
                "sh" => steps.push(Step {
                    command: body,
                    answer: None,
                    keep: Vec::new(),
                    until_it_matches: false,
                }),
                "sh setup" => {}
                kind => {
                    let step = steps.last_mut().expect("an answer follows a command");
                    assert!(step.answer.is_none(), "two answers for: {}", step.command);
                    step.answer = Some((kind.to_owned(), body));
                }
            }
        } else if let Some(directive) = line.trim().strip_prefix("<!--").and_then(|d| d.strip_suffix("-->")) {
            let step = steps.last_mut().expect("a directive follows a command");
            for part in directive.split(';').map(str::trim) {
                if part == "until it matches" {
                    step.until_it_matches = true;
                } else if let Some(keep) = part.strip_prefix("keep ") {
                    let (name, field) = keep.split_once('=').expect("keep NAME = field");
                    step.keep.push((name.trim().to_owned(), field.trim().to_owned()));
                } else {
                    panic!("unknown directive {part:?}");
                }
            }
        }
    }
    steps
}

/// Where `actual` differs from `expected` (None: it matches).
fn difference(expected: &Value, actual: &Value, at: &str) -> Option<String> {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            let (ek, ak): (Vec<_>, Vec<_>) = (e.keys().collect(), a.keys().collect());
            if ek != ak {
                return Some(format!("{at}: fields {ek:?}, answered {ak:?}"));
            }
            e.iter().find_map(|(k, v)| {
                if !VARYING.contains(&k.as_str()) {
                    difference(v, &a[k], &format!("{at}.{k}"))
                } else if std::mem::discriminant(v) != std::mem::discriminant(&a[k]) {
                    // Its value may differ, its kind (a string id, a number) may not.
                    Some(format!("{at}.{k}: shown {v}, answered {}", a[k]))
                } else {
                    None
                }
            })
        }
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => e
            .iter()
            .zip(a)
            .enumerate()
            .find_map(|(i, (e, a))| difference(e, a, &format!("{at}[{i}]"))),
        _ if expected == actual => None,
        _ => Some(format!("{at}: shown {expected}, answered {actual}")),
    }
}

fn matches(kind: &str, shown: &str, output: &str) -> Result<(), String> {
    match kind {
        "json" => {
            let expected: Value =
                serde_json::from_str(shown).map_err(|e| format!("the shown answer is not JSON: {e}"))?;
            let actual: Value =
                serde_json::from_str(output).map_err(|e| format!("the answer is not JSON ({e}): {output}"))?;
            difference(&expected, &actual, "answer").map_or(Ok(()), Err)
        }
        _ => {
            let prefix = shown.trim().trim_end_matches('…');
            if output.trim().starts_with(prefix) {
                Ok(())
            } else {
                Err(format!("shown {shown:?}, answered {output:?}"))
            }
        }
    }
}

fn run(command: &str, env: &BTreeMap<String, String>) -> String {
    let out = std::process::Command::new("bash")
        .arg("-euo")
        .arg("pipefail")
        .arg("-c")
        .arg(command)
        .envs(env)
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "{command}\nexited {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_runs_as_written() {
    let text = std::fs::read_to_string(repo_root().join("docs/quickstart.md")).unwrap();
    let steps = steps(&text);
    assert!(steps.len() >= 10, "{} commands", steps.len());
    let running = integration_tests::runner_with_db_connections(8).await;
    let admin_dir = integration_tests::services::workspace_binary("fcfs-admin")
        .parent()
        .expect("a directory")
        .to_path_buf();
    let mut env = BTreeMap::from([
        ("API".to_owned(), running.base_url.clone()),
        ("PARTNER".to_owned(), unique("quickstart")),
        (
            "PATH".to_owned(),
            format!("{}:{}", admin_dir.display(), std::env::var("PATH").unwrap_or_default()),
        ),
    ]);
    for step in &steps {
        let deadline = Instant::now() + Duration::from_secs(60);
        let output = loop {
            let output = tokio::task::block_in_place(|| run(&step.command, &env));
            let verdict = match &step.answer {
                Some((kind, shown)) => matches(kind, shown, &output),
                None => Ok(()),
            };
            match verdict {
                Ok(()) => break output,
                Err(_) if step.until_it_matches && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(e) => panic!("{}\n{e}\nthe whole answer: {output}", step.command),
            }
        };
        // Shown when the test fails: what each command answered, to correct the document from.
        eprintln!("$ {}\n{output}", step.command);
        for (name, field) in &step.keep {
            let value = if field == "the output" {
                output.trim().to_owned()
            } else {
                let answer: Value = serde_json::from_str(&output).unwrap();
                match &answer[field.as_str()] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                }
            };
            env.insert(name.clone(), value);
        }
    }
    running.stop().await.unwrap();
}
