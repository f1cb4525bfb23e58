//! The table, `docs/benchmarks.md` and the latency plot.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use plotters::prelude::*;

use crate::stack::{WrkRun, median, repo_root};
use crate::{AcceptedRun, MixRun};

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Row {
    what: String,
    figure: String,
    yardstick: String,
    ratio: String,
    target: String,
    verdict: String,
}

pub struct Report {
    runs: usize,
    connections: u32,
    /// The SQS emulator the SQS-bound figures were measured on (`FCFS_SQS_EMULATOR`).
    sqs: String,
    rows: Vec<Row>,
    details: String,
    /// (label, percentiles µs) for the plot.
    curves: Vec<(String, Vec<(f64, u64)>)>,
    pub failures: usize,
    pub elapsed: Duration,
}

fn verdict(met: bool) -> String {
    if met { "met".into() } else { "**not met**".into() }
}

/// The run whose rate is the median, for its latency figures.
fn median_run<T>(runs: &[T], rate: impl Fn(&T) -> f64) -> &T {
    let mut order: Vec<&T> = runs.iter().collect();
    order.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
    order[order.len() / 2]
}

impl Report {
    pub fn new(runs: usize, connections: u32) -> Self {
        Self {
            runs,
            connections,
            sqs: std::env::var("FCFS_SQS_EMULATOR")
                .unwrap_or_else(|_| "the SQS emulator at AWS_ENDPOINT_URL(_SQS)".into()),
            rows: Vec::new(),
            details: String::new(),
            curves: Vec::new(),
            failures: 0,
            elapsed: Duration::ZERO,
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn authorizer(&mut self, rate: f64, p50: f64, p99: f64, p999: f64, cold_p50: f64, cold_p99: f64, reads: u64) {
        self.rows.push(Row {
            what: "authorizer, cached decision (in-process)".into(),
            figure: format!("{rate:.0} decisions/s, p50 {p50:.2} µs, p99 {p99:.2} µs"),
            yardstick: "—".into(),
            ratio: "—".into(),
            target: "p99 < 50 µs".into(),
            verdict: verdict(p99 < 50.0),
        });
        self.rows.push(Row {
            what: "authorizer, cold lookup (DynamoDB emulator)".into(),
            figure: format!("p50 {cold_p50:.2} ms, p99 {cold_p99:.2} ms"),
            yardstick: "—".into(),
            ratio: "—".into(),
            target: "report".into(),
            verdict: "—".into(),
        });
        let _ = writeln!(
            self.details,
            "### Authorizer\n\n1,000,000 decisions for one key through `KeyAuthorizer::decide` (hash, cache hit, expiry \
             check), timed one by one: {rate:.0}/s, p50 {p50:.2} µs, p99 {p99:.2} µs, p99.9 {p999:.2} µs. DynamoDB reads \
             during them: {reads} (the first, warming one). Cold: 200 fresh keys, each decided once (a `GetItem` on the \
             emulator): p50 {cold_p50:.2} ms, p99 {cold_p99:.2} ms.\n"
        );
    }

    pub fn flash_mix(
        &mut self,
        trivial: &[WrkRun],
        evalsha: &[f64],
        mix: &[MixRun],
        others: &[(u32, MixRun)],
        sold_out: &[MixRun],
    ) {
        let mut rates: Vec<f64> = mix.iter().map(|m| m.wrk.rate()).collect();
        let mut p99s: Vec<f64> = mix.iter().map(|m| m.wrk.p(99.0)).collect();
        let mut trivial_rates: Vec<f64> = trivial.iter().map(WrkRun::rate).collect();
        let (rate, p99) = (median(&mut rates), median(&mut p99s));
        let trivial_rate = median(&mut trivial_rates);
        let evalsha_rate = median(&mut evalsha.to_vec());
        let wrong: Vec<&String> = mix
            .iter()
            .chain(others.iter().map(|(_, m)| m))
            .chain(sold_out)
            .filter_map(|m| m.verdict.as_ref().err())
            .collect();
        self.failures += wrong.len();
        let met = wrong.is_empty() && p99 <= 10.0 && rate >= 0.7 * trivial_rate;
        self.rows.push(Row {
            what: format!(
                "issue API, flash-sale mix ({} connections; SQS: {})",
                self.connections, self.sqs
            ),
            figure: format!("{rate:.0} req/s, p99 {p99:.2} ms"),
            yardstick: format!("trivial route {trivial_rate:.0} req/s; Redis EVALSHA {evalsha_rate:.0}/s"),
            ratio: format!(
                "{:.0}% of trivial; {:.0}% of EVALSHA",
                100.0 * rate / trivial_rate,
                100.0 * rate / evalsha_rate
            ),
            target: "≥ 70% of trivial, p99 ≤ 10 ms".into(),
            verdict: if wrong.is_empty() {
                verdict(met)
            } else {
                "**WRONG RESULT**".into()
            },
        });
        if !sold_out.is_empty() {
            let mut rejected: Vec<f64> = sold_out.iter().map(|m| m.wrk.rate()).collect();
            let mut rejected_p99: Vec<f64> = sold_out.iter().map(|m| m.wrk.p(99.0)).collect();
            let (rejected, rejected_p99) = (median(&mut rejected), median(&mut rejected_p99));
            self.rows.push(Row {
                what: format!(
                    "issue API, rejection path only ({} connections; sold out, no SQS)",
                    self.connections
                ),
                figure: format!("{rejected:.0} req/s, p99 {rejected_p99:.2} ms"),
                yardstick: format!("trivial route {trivial_rate:.0} req/s"),
                ratio: format!("{:.0}% of trivial", 100.0 * rejected / trivial_rate),
                target: "≥ 80% of trivial".into(),
                verdict: verdict(rejected >= 0.8 * trivial_rate),
            });
        }
        let d = &mut self.details;
        let _ = writeln!(
            d,
            "### Flash-sale mix\n\nEach run: a new campaign of 10,000 coupons, {} requests `POST /v1/campaigns/{{id}}/issues` \
             with a random user among 100,000, through the runner with the authorizer on (one key, cached), wrk with one \
             thread. After the load the bench waits for the writer's pollers to record every coupon, then checks: rows = \
             10,000 = distinct users = `issued_count` = Redis counter = Redis holders = 202 answers.\n",
            crate::MIX_REQUESTS
        );
        let _ = writeln!(
            d,
            "| run | connections | requests | req/s | p50 ms | p99 ms | p99.9 ms | 202 | 409 | 410 | rows complete after load | result |"
        );
        let _ = writeln!(
            d,
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        );
        let numbered = mix
            .iter()
            .enumerate()
            .map(|(i, m)| (format!("{}", i + 1), self.connections, m))
            .chain(others.iter().map(|(c, m)| ("extra".to_owned(), *c, m)))
            .chain(sold_out.iter().map(|m| ("sold out".to_owned(), self.connections, m)));
        for (label, connections, m) in numbered {
            let w = &m.wrk;
            let _ = writeln!(
                d,
                "| {label} | {connections} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {:.1} s | {} |",
                w.requests,
                w.rate(),
                w.p(50.0),
                w.p(99.0),
                w.p(99.9),
                w.counts.s2xx,
                w.counts.s409,
                w.counts.s410,
                m.drain_lag.as_secs_f64(),
                match &m.verdict {
                    Ok(()) => "correct".to_owned(),
                    Err(e) => format!("**{e}**"),
                }
            );
        }
        let _ = writeln!(
            d,
            "\nYardsticks in the same run: the runner answering an unknown path (API Gateway's 403, no authorizer, no \
             function), {} runs of 5 s: {}; Redis running the issue script itself (`redis-benchmark -c 50 -n 200000 -r \
             100000 EVALSHA`, same quantity): {} EVALSHA/s.\n",
            trivial.len(),
            trivial
                .iter()
                .map(|t| format!("{:.0} req/s (p99 {:.2} ms)", t.rate(), t.p(99.0)))
                .collect::<Vec<_>>()
                .join(", "),
            evalsha.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ")
        );
        let m = median_run(mix, |m| m.wrk.rate());
        self.curves.push((
            format!("flash-sale mix, {} conn", self.connections),
            m.wrk.percentiles.clone(),
        ));
        let t = median_run(trivial, WrkRun::rate);
        self.curves.push(("trivial route".into(), t.percentiles.clone()));
    }

    pub fn accepted(&mut self, sends: &[f64], runs: &[AcceptedRun]) {
        let mut rates: Vec<f64> = runs.iter().map(|r| r.wrk.rate()).collect();
        let rate = median(&mut rates);
        let send = median(&mut sends.to_vec());
        let wrong = runs.iter().filter(|r| r.verdict.is_err()).count();
        self.failures += wrong;
        let m = median_run(runs, |r| r.wrk.rate());
        self.rows.push(Row {
            what: format!("issue API, accepted path only (64 connections; SQS: {})", self.sqs),
            figure: format!("{rate:.0} req/s, p99 {:.2} ms", m.wrk.p(99.0)),
            yardstick: format!("SQS emulator SendMessage {send:.0}/s (one client, 64 in flight)"),
            ratio: format!("{:.0}%", 100.0 * rate / send),
            target: "≥ 10,000 req/s".into(),
            verdict: if wrong == 0 {
                verdict(rate >= 10_000.0)
            } else {
                "**WRONG RESULT**".into()
            },
        });
        let _ = writeln!(
            self.details,
            "### Accepted path\n\nEach run: a campaign of 1,000,000 coupons, {} requests each from a new user, so every one \
             reserves in Redis and sends one SQS message before answering 202. Runs: {}. Checked after the drain: rows = \
             202 answers = Redis counter.\n\nYardstick: SendMessage of the same body from one SDK client, 64 in flight, \
             2,048 messages: {}.\n",
            crate::ACCEPTED_REQUESTS,
            runs.iter()
                .map(|r| format!(
                    "{:.0} req/s p99 {:.2} ms ({})",
                    r.wrk.rate(),
                    r.wrk.p(99.0),
                    match &r.verdict {
                        Ok(()) => "correct".to_owned(),
                        Err(e) => format!("**{e}**"),
                    }
                ))
                .collect::<Vec<_>>()
                .join("; "),
            sends.iter().map(|r| format!("{r:.0}/s")).collect::<Vec<_>>().join(", ")
        );
        self.curves
            .push(("accepted path, 64 conn".into(), m.wrk.percentiles.clone()));
    }

    pub fn writer(&mut self, writer: &[f64], raw: &[f64]) {
        let (w, r) = (median(&mut writer.to_vec()), median(&mut raw.to_vec()));
        self.rows.push(Row {
            what: "writer, one 10,000-message event".into(),
            figure: format!("{w:.0} rows/s"),
            yardstick: format!("raw multi-row INSERT, one connection: {r:.0} rows/s"),
            ratio: format!("{:.0}%", 100.0 * w / r),
            target: "≥ 90% of raw".into(),
            verdict: verdict(w >= 0.9 * r),
        });
        let _ = writeln!(
            self.details,
            "### Writer\n\nEach run: one `SqsEvent` of 10,000 reservations (JSON bodies) straight into \
             `IssueWriter::handle` (chunks of 1,000: `INSERT IGNORE`, the chunk's events as one packed outbox row and the \
             `issued_count` update in one transaction per chunk) on a fresh campaign; checked: 10,000 rows, 10,000 distinct users, `issued_count` 10,000. Yardstick: \
             the same 10,000 rows as plain 1,000-row `INSERT`s on one connection, autocommit.\n\nWriter: {} rows/s. Raw: \
             {} rows/s.\n",
            writer.iter().map(|v| format!("{v:.0}")).collect::<Vec<_>>().join(", "),
            raw.iter().map(|v| format!("{v:.0}")).collect::<Vec<_>>().join(", ")
        );
    }

    pub fn drain(&mut self, drains: &[(crate::Fill, Vec<crate::DrainRun>)], writer: f64) {
        let mut text = String::from(
            "### Drain\n\nEach run: reservations queued on a fresh queue first, then a runner started whose writer \
             poller (batch ≤ 10,000 messages and ≤ an invocation's 6 MB, window 1 s, 5 concurrent batches, as in the \
             template and as Lambda) drains it; timed from the runner's start until MySQL holds every row, checked as \
             above (rows = distinct users = `issued_count`).\n\n",
        );
        for (fill, runs) in drains {
            let d = median(&mut runs.iter().map(|r| r.rate).collect::<Vec<_>>());
            let first = &runs[0];
            let per_message = first.rows as f64 / first.messages.max(1) as f64;
            let (what, target, met): (String, &str, _) = match fill {
                crate::Fill::ThroughAdapter => (
                    format!(
                        "drain, {} reservations enqueued at once through the issue API's queue adapter ({} messages, {per_message:.0} per message; SQS: {})",
                        first.rows, first.messages, self.sqs
                    ),
                    "≥ 50,000 rows/s",
                    Some(d >= 50_000.0),
                ),
                crate::Fill::OnePerMessage => (
                    format!(
                        "drain, {} messages of one reservation each (as Lambda sends them; SQS: {})",
                        first.rows, self.sqs
                    ),
                    "report",
                    None,
                ),
            };
            self.rows.push(Row {
                what,
                figure: format!("{d:.0} rows/s"),
                yardstick: format!("writer above: {writer:.0} rows/s"),
                ratio: format!("{:.1}%", 100.0 * d / writer),
                target: target.into(),
                verdict: met.map_or_else(|| "—".into(), verdict),
            });
            let _ = writeln!(
                text,
                "- {}: {} rows/s.",
                match fill {
                    crate::Fill::ThroughAdapter => format!(
                        "{} reservations handed to `SqsReservationQueue` all at once (a flash sale's burst in one \
                         process), which packs what waits together ({} messages)",
                        first.rows, first.messages
                    ),
                    crate::Fill::OnePerMessage => {
                        format!(
                            "{} messages of one reservation, sent ten per `SendMessageBatch`",
                            first.rows
                        )
                    }
                },
                runs.iter()
                    .map(|r| format!("{:.0}", r.rate))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        text.push('\n');
        self.details.push_str(&text);
    }

    pub fn coupons(&mut self, runs: &[crate::coupons::CouponRun]) {
        let pick = |f: fn(&crate::coupons::CouponRun) -> f64| median(&mut runs.iter().map(f).collect::<Vec<_>>());
        let (bare, many, hot) = (pick(|r| r.yardstick), pick(|r| r.many), pick(|r| r.hot));
        let yardstick = format!("bare `SELECT … FOR UPDATE` + `UPDATE` on one row: {bare:.0} txn/s");
        self.rows.push(Row {
            what: "coupon uses, many coupons (16 connections)".into(),
            figure: format!("{many:.0} uses/s"),
            yardstick: yardstick.clone(),
            ratio: format!("{:.0}%", 100.0 * many / bare),
            target: "report".into(),
            verdict: "—".into(),
        });
        self.rows.push(Row {
            what: "coupon use attempts, one hot coupon (16 connections)".into(),
            figure: format!("{hot:.0} attempts/s"),
            yardstick,
            ratio: format!("{:.0}%", 100.0 * hot / bare),
            target: "report".into(),
            verdict: "—".into(),
        });
        let list = |f: fn(&crate::coupons::CouponRun) -> f64| {
            runs.iter()
                .map(|r| format!("{:.0}", f(r)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            self.details,
            "### Coupon use

`CouponService` on MySQL in-process, 16 workers with a connection each, 3 s per scenario.              Many coupons: each worker uses its own coupons (each use: the coupon row locked, the campaign read, the row              updated and a history row written, one transaction): {} uses/s. One hot coupon: every worker tries to use              the same coupon with its own order; the winner cancels it (a second transaction), the others get              `ALREADY_USED` after waiting for the lock; checked: the history holds as many uses as cancels (±1): {}              attempts/s. Yardstick: `SELECT id … FOR UPDATE` + `UPDATE` of one row per transaction, same 16              connections: {} txn/s.\n",
            list(|r| r.many),
            list(|r| r.hot),
            list(|r| r.yardstick)
        );
    }

    pub fn checkout(&mut self, runs: &[crate::checkout::CheckoutRun]) {
        let pick = |f: fn(&crate::checkout::CheckoutRun) -> f64| median(&mut runs.iter().map(f).collect::<Vec<_>>());
        let (bare, holds) = (pick(|r| r.yardstick), pick(|r| r.holds));
        self.rows.push(Row {
            what: "checkout holds + confirms, many coupons and wallets (16 connections)".into(),
            figure: format!("{holds:.0} holds+confirms/s"),
            yardstick: format!("bare `SELECT … FOR UPDATE` + `UPDATE` on one row: {bare:.0} txn/s"),
            ratio: format!("{:.0}%", 100.0 * holds / bare),
            target: "report".into(),
            verdict: "—".into(),
        });
        let list = |f: fn(&crate::checkout::CheckoutRun) -> f64| {
            runs.iter()
                .map(|r| format!("{:.0}", f(r)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            self.details,
            "### Checkout holds\n\n`CheckoutService` on MySQL in-process, 16 workers with a connection each, 3 s. Each \
             operation holds one user's coupon and 300 of their points for an order (one transaction: the hold row \
             inserted, the wallet and its lots locked and a USE written, the coupon locked and marked) and confirms it \
             (a second: the hold, the wallet, the coupon locked; the coupon USED with its history): {} holds+confirms/s. \
             The wallets verify afterwards. Yardstick: `SELECT id … FOR UPDATE` + `UPDATE` of one row per \
             transaction, same 16 connections: {} txn/s (a hold and its confirm are two transactions of three \
             locked rows each).\n",
            list(|r| r.holds),
            list(|r| r.yardstick)
        );
    }

    pub fn events(&mut self, runs: &[crate::events::EventsRun]) {
        if runs.is_empty() {
            return;
        }
        let pick = |f: fn(&crate::events::EventsRun) -> f64| median(&mut runs.iter().map(f).collect::<Vec<_>>());
        let (rate, p99, yardstick) = (pick(|r| r.rate), pick(|r| r.p99_ms), pick(|r| r.yardstick));
        self.rows.push(Row {
            what: "partner events during the flash sale: coupon.issued, commit → local webhook".into(),
            figure: format!("{rate:.0} events/s, p99 {p99:.0} ms"),
            yardstick: format!("the receiver, 100-event POSTs back to back: {yardstick:.0} events/s"),
            ratio: format!("{:.0}%", 100.0 * rate / yardstick),
            target: "p99 ≤ 2 s".into(),
            verdict: verdict(p99 <= 2000.0),
        });
        let list = |f: fn(&crate::events::EventsRun) -> f64| {
            runs.iter()
                .map(|r| format!("{:.0}", f(r)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            self.details,
            "### Partner events

A runner of its own with the event relay on (webhooks only: the bus, LocalStack here, is the \
             relay's other cursor and pace), which first sequences what the sales above left; then a webhook for the \
             bench partner's `coupon.issued` at a receiver on 127.0.0.1, and the flash-sale mix; every one of the 10,000 coupons' events must arrive (once per coupon), or the run fails. \
             Events/s from the first commit to the last arrival: {}; delay from commit (`occurredAt`, in the writer's chunk \
             transaction) to arrival, p50 {} ms, p99 {} ms, max {} ms. The sale's own rate in these runs: {} req/s (the \
             mix row above ran without a webhook). Yardstick: the receiver taking 100-event POSTs one after another on \
             one connection: {} events/s.\n",
            list(|r| r.rate),
            list(|r| r.p50_ms),
            list(|r| r.p99_ms),
            list(|r| r.max_ms),
            list(|r| r.mix_rate),
            list(|r| r.yardstick)
        );
    }

    pub fn grading(&mut self, runs: &[crate::grading::GradingRun], loaded: f64) {
        let pick = |f: fn(&crate::grading::GradingRun) -> f64| median(&mut runs.iter().map(f).collect::<Vec<_>>());
        let (whole, bare) = (pick(|r| r.seconds), pick(|r| r.yardstick));
        self.rows.push(Row {
            what: "grading run, 1,000,000 orders / 30,000 users (API → 64 partitions → workers → DONE)".into(),
            figure: format!("{whole:.2} s"),
            yardstick: format!("bare `SELECT user_id, SUM(amount) … GROUP BY user_id`, same rows: {bare:.2} s"),
            ratio: format!("{:.1}×", whole / bare),
            target: "≤ 5 s".into(),
            verdict: verdict(whole <= 5.0),
        });
        let (alone, during) = (pick(|r| r.live_alone_p99), pick(|r| r.live_during_p99));
        let errors: u64 = runs.iter().map(|r| r.live_errors).sum();
        self.rows.push(Row {
            what: "live API during the grading run (issues + grade reads, 8 clients)".into(),
            figure: format!("p99 {during:.1} ms, {errors} errors"),
            yardstick: format!("same load without the run: p99 {alone:.1} ms"),
            ratio: format!("{:.1}×", during / alone.max(0.001)),
            target: "no errors, p99 ≤ 1.5× without the run".into(),
            verdict: verdict(errors == 0 && during <= 1.5 * alone),
        });
        let list = |f: fn(&crate::grading::GradingRun) -> String| runs.iter().map(f).collect::<Vec<_>>().join(", ");
        let _ = writeln!(
            self.details,
            "### Grading run

1,000,000 generated orders (5 % cancelled) of 30,000 users in one month, loaded once in {loaded:.1} s \
             (`load_orders`, 5,000-row INSERTs). Each run deletes the previous run's grades and points, starts \
             a runner, sets a four-tier policy (GOLD 500 points, VIP 2,000), posts the run and polls it every \
             20 ms until DONE: {} s end to end (the run's own durationMs: {} ms). Every user with paid orders \
             graded ({} users) and every GOLD/VIP rewarded once ({} rewards), checked against the yardstick's \
             rows. Yardstick: the bare aggregate over the same rows, {} s. Live load (8 clients, each \
             alternating an issue for a new user and a grade read) for 4 s alone, then all through the run: \
             p99 {} ms alone, {} ms during the run.\n",
            list(|r| format!("{:.2}", r.seconds)),
            list(|r| r.run_ms.to_string()),
            list(|r| r.users.to_string()),
            list(|r| r.rewards.to_string()),
            list(|r| format!("{:.2}", r.yardstick)),
            list(|r| format!("{:.1}", r.live_alone_p99)),
            list(|r| format!("{:.1}", r.live_during_p99)),
        );
    }

    pub fn points(&mut self, runs: &[crate::points::PointsRun]) {
        let pick = |f: fn(&crate::points::PointsRun) -> f64| median(&mut runs.iter().map(f).collect::<Vec<_>>());
        let (bare, hot, spread) = (pick(|r| r.yardstick), pick(|r| r.hot), pick(|r| r.spread));
        let retries: u64 = runs.iter().map(|r| r.lock_retries).sum();
        let yardstick = format!("bare `SELECT … FOR UPDATE` + `UPDATE` on one wallet row: {bare:.0} txn/s");
        self.rows.push(Row {
            what: "point uses, one hot wallet (16 connections)".into(),
            figure: format!("{hot:.0} uses/s"),
            yardstick: yardstick.clone(),
            ratio: format!("{:.0}%", 100.0 * hot / bare),
            target: "≥ 60% of the bare row, 0 lock retries".into(),
            verdict: verdict(hot >= 0.6 * bare && retries == 0),
        });
        self.rows.push(Row {
            what: "point uses, 10,000 wallets (16 connections)".into(),
            figure: format!("{spread:.0} uses/s"),
            yardstick,
            ratio: format!("{:.0}%", 100.0 * spread / bare),
            target: "report".into(),
            verdict: "—".into(),
        });
        let list = |f: fn(&crate::points::PointsRun) -> f64| {
            runs.iter()
                .map(|r| format!("{:.0}", f(r)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            self.details,
            "### Point uses

`PointsService` on MySQL in-process, 16 workers with a connection each, 3 s per scenario, 1 point \
             per use, each under its own Idempotency-Key. A use is one transaction: the wallet row locked, its lots \
             read, the USE entry and its allocation written, lot and wallet updated in one statement, the key's \
             record inserted. One hot wallet: {} uses/s. 10,000 wallets: {} uses/s. Yardstick: `SELECT … FOR \
             UPDATE` + `UPDATE` of the hot wallet's row per transaction, same connections: {} txn/s. After each \
             run every wallet verifies (balance = Σ lots = Σ history); deadlock or lock-wait retries over all \
             runs: {retries}.\n",
            list(|r| r.hot),
            list(|r| r.spread),
            list(|r| r.yardstick)
        );
    }

    /// The rows so far, for a parent bench to show beside its own (`--rows-out`).
    /// What each AWS service was asked for, and its price (`bill::section`).
    pub fn bill(&mut self, usages: &[crate::bill::Usage], prices: &crate::bill::Prices, simple_cpu: f64) {
        let (section, sale) = crate::bill::section(usages, prices, simple_cpu);
        if let Some(total) = sale {
            self.rows.push(Row {
                what: "the bill: a 100,000-coupon sale with 1,000,000 requests (us-east-1, per-request prices)".into(),
                figure: format!("${total:.2}"),
                yardstick: "API Gateway REST alone: $3.50".into(),
                ratio: format!("{:.0}% is API Gateway", 100.0 * 3.5 / total),
                target: "report".into(),
                verdict: "—".into(),
            });
        }
        self.details.push_str(&section);
    }

    pub fn rows_json(&self) -> Result<String> {
        Ok(serde_json::to_string(&self.rows)?)
    }

    /// Rows measured by a child bench on another emulator (those naming it), with what it found wrong.
    pub fn add_rows(&mut self, rows: Vec<Row>, emulator: &str, failures: usize, note: &str) {
        self.failures += failures;
        self.rows.extend(rows.into_iter().filter(|r| r.what.contains(emulator)));
        self.details.push_str(note);
    }

    pub fn table(&self) -> String {
        let mut t = String::from(
            "| what | figure (median) | yardstick in the same run | ratio | target (2 cores) | verdict |\n| --- | --- | --- | --- | --- | --- |\n",
        );
        for r in &self.rows {
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {} | {} |",
                r.what, r.figure, r.yardstick, r.ratio, r.target, r.verdict
            );
        }
        t
    }

    pub fn write(&self, out: &Path) -> Result<()> {
        let png = out.with_file_name("benchmarks-latency.png");
        self.plot(&png)?;
        let machine = machine();
        let mut md = String::new();
        let _ = writeln!(
            md,
            "# Benchmarks\n\n_Written by `make bench` (`bench/`); do not edit by hand: the analysis at the end comes from \
             `bench/analysis.md`._\n\n- When: {} UTC; the whole bench took {:.0} s.\n- Machine: {machine}.\n- Command: \
             `make bench` (= `scripts/bench.sh`: services up, `cargo build --release -p fcfs-bench`, then \
             `fcfs-bench --runs {} --connections {}`). Load generator: wrk 4.1 (`bench/lua/load.lua`), one thread; the \
             runner, Redis, MariaDB, LocalStack and the SQS emulator share the same 2 cores with it.\n- SQS: {} \
             (`FCFS_AWS`; each SQS-bound row names its emulator, and the rows marked LocalStack were measured on it \
             in the same run, one run each).\n- Every figure is the median of {} \
             runs and is printed beside a yardstick measured in the same run.\n",
            chrono::Utc::now().format("%Y-%m-%d %H:%M"),
            self.elapsed.as_secs_f64(),
            self.runs,
            self.connections,
            self.sqs,
            self.runs
        );
        md.push_str(&self.table());
        md.push('\n');
        if self.failures > 0 {
            let _ = writeln!(
                md,
                "**{} run(s) produced a wrong result; their speed does not count.**\n",
                self.failures
            );
        }
        let _ = writeln!(md, "![latency percentiles](benchmarks-latency.png)\n");
        md.push_str("## Details\n\n");
        md.push_str(&self.details);
        let _ = writeln!(md, "### Latency percentiles (median run, ms)\n");
        let _ = writeln!(
            md,
            "| percentile | {} |",
            self.curves.iter().map(|c| c.0.as_str()).collect::<Vec<_>>().join(" | ")
        );
        let _ = writeln!(md, "| --- |{}", " --- |".repeat(self.curves.len()));
        if let Some((_, first)) = self.curves.first() {
            for (i, (p, _)) in first.iter().enumerate() {
                let cells: Vec<String> = self
                    .curves
                    .iter()
                    .map(|(_, c)| {
                        c.get(i)
                            .map_or("—".into(), |(_, us)| format!("{:.2}", *us as f64 / 1000.0))
                    })
                    .collect();
                let _ = writeln!(md, "| p{p} | {} |", cells.join(" | "));
            }
        }
        md.push_str(
            "\n## What comparable systems published (other hardware, for context only)\n\n\
             - Spring + Redis SADD/INCR + RabbitMQ consumer: ~4,300 RPS at p95 225 ms.\n\
             - Redis sorted-set queue + 1 s scheduler: 2,670 TPS at p95 46.5 ms.\n\
             - JDBC batch insert (JdbcTemplate): 100,000 rows in 3.64 s, ~27,000 rows/s.\n\n",
        );
        if let Ok(analysis) = std::fs::read_to_string(repo_root().join("bench/analysis.md")) {
            md.push_str(&analysis);
        }
        std::fs::create_dir_all(out.parent().unwrap_or(Path::new(".")))?;
        std::fs::write(out, md).with_context(|| format!("cannot write {}", out.display()))?;
        Ok(())
    }

    fn plot(&self, png: &Path) -> Result<()> {
        let font = std::fs::read("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
            .context("the plot needs DejaVu Sans (Debian fonts-dejavu-core; scripts/install.sh installs it)")?;
        plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(font.into_boxed_slice()))
            .map_err(|_| anyhow::anyhow!("cannot load the font"))?;
        let labels: Vec<f64> = self
            .curves
            .first()
            .map(|c| c.1.iter().map(|p| p.0).collect())
            .unwrap_or_default();
        let max_ms = self
            .curves
            .iter()
            .flat_map(|c| c.1.iter().map(|p| p.1 as f64 / 1000.0))
            .fold(1.0_f64, f64::max);
        let root = BitMapBackend::new(png, (1000, 600)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Latency by percentile (median run; log scale)", ("sans-serif", 24))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(
                0f64..(labels.len().max(2) - 1) as f64,
                (0.01f64..max_ms * 1.5).log_scale(),
            )?;
        chart
            .configure_mesh()
            .x_labels(labels.len())
            .x_label_formatter(&|x| {
                labels
                    .get(x.round() as usize)
                    .map_or(String::new(), |p| format!("p{p}"))
            })
            .y_desc("latency (ms)")
            .x_desc("percentile")
            .label_style(("sans-serif", 14))
            .draw()?;
        let colors = [RED, BLUE, GREEN, MAGENTA];
        for (i, (name, points)) in self.curves.iter().enumerate() {
            let color = colors[i % colors.len()];
            chart
                .draw_series(LineSeries::new(
                    points
                        .iter()
                        .enumerate()
                        .map(|(x, (_, us))| (x as f64, (*us as f64 / 1000.0).max(0.01))),
                    color.stroke_width(2),
                ))?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
        root.present()?;
        Ok(())
    }
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    format!(
        "{model}, {cores} cores, {mem_gib:.1} GiB RAM, {}",
        std::env::consts::ARCH
    )
}
