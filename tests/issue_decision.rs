//! The issue decision exists twice: the Lua script the Redis ledger runs (`RESERVE` in
//! shared/src/adapters/redis.rs) and `issuance::domain::decide`, which the in-memory ledger of the
//! unit tests runs. Nothing else ties them together, so this drives the script on real Redis and
//! `decide` with the same inputs and requires the same decision every time, and requires the
//! script's writes to be exactly the ones that decision implies.
//!
//! The cases are the cartesian product of every boundary (window, owner, kind, duplicate, stock,
//! pending places), with the free values (quantity, window length, where inside it, how far over
//! the quantity) drawn from a seeded PRNG, plus cases drawn wholly at random, plus unprimed
//! campaigns. The seed is printed; `ISSUE_DECISION_SEED=<seed>` replays a run.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use fcfs_shared::adapters::redis::{
    LIVE_CAMPAIGNS_KEY, RedisIssueLedger, count_key, outcomes_key, pending_key, rules_key, users_key,
};
use fcfs_shared::issuance::domain::{CampaignId, CampaignKind, IssueDecision, IssueRules, Place, decide};
use fcfs_shared::issuance::ports::IssueLedger;
use fcfs_shared::kernel::UserId;
use futures_util::StreamExt;
use integration_tests::RedisDeployment;
use uuid::Uuid;

const OWNER: &str = "decision-owner";
/// Another partner altogether, and one whose name differs from the owner's only in case: a
/// comparison under a case-insensitive collation (MySQL's default) would let it through.
const STRANGERS: [&str; 2] = ["decision-stranger", "DECISION-OWNER"];
const CALLER: &str = "caller";
const YEAR_MS: i64 = 365 * 86_400_000;
const RANDOM_CASES: usize = 400;
/// Cases in flight at once: enough to keep the run to a second or two, few enough not to crowd
/// the Redis that other tests of the same run share.
const IN_FLIGHT: usize = 32;
/// The whole run, set-up and clean-up aside: far above its usual second or two.
const DEADLINE: Duration = Duration::from_secs(60);
/// A safety net on the keys a case writes itself, should the clean-up never run (a killed
/// process); distinct from any expiry the script sets, so a change by the script shows.
const SET_UP_TTL_MS: i64 = 3_600_000;

/// xorshift64: small, and the same sequence from the same seed on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform enough in `lo..=hi` for the small ranges drawn here.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }

    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.next() as usize % items.len()]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Window {
    BeforeStart,
    AtStart,
    Inside,
    BeforeEnd,
    AtEnd,
    After,
}

const WINDOWS: [Window; 6] = [
    Window::BeforeStart,
    Window::AtStart,
    Window::Inside,
    Window::BeforeEnd,
    Window::AtEnd,
    Window::After,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stock {
    /// No counter yet: no place was ever handed out.
    NoCounter,
    Below,
    Full,
    /// More places than the quantity: what a failover that lost reservations can leave.
    Over,
}

const STOCKS: [Stock; 4] = [Stock::NoCounter, Stock::Below, Stock::Full, Stock::Over];

/// One request against one campaign state, in the values both sides are given.
#[derive(Debug, Clone)]
struct Case {
    name: String,
    /// None: the campaign was never primed.
    rules: Option<IssueRules>,
    partner: &'static str,
    now: DateTime<Utc>,
    /// The caller already holds a place (in an earlier request's name).
    holds: bool,
    /// The counter; None when it does not exist (read as 0).
    counter: Option<u32>,
    /// Every holder's request is still pending, beside one whose holder a failover lost.
    pending: bool,
}

impl Case {
    fn reserved(&self) -> u32 {
        self.counter.unwrap_or(0)
    }

    fn expected(&self) -> IssueDecision {
        match &self.rules {
            Some(rules) => decide(
                rules,
                self.partner,
                self.now,
                self.holds.then(caller_place),
                self.reserved(),
            ),
            None => IssueDecision::Unprimed,
        }
    }
}

/// The place the caller holds when a case says it does: a repeated request is answered with it.
fn caller_place() -> Place {
    Place::of(Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0001), 3)
}

fn millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).expect("a representable instant")
}

/// Rules with a window of `length` ms starting near `base`, in whole milliseconds as the ledger
/// keeps them (its campaign id is set when the case runs).
fn rules(rng: &mut Rng, base: i64, length: i64, quantity: u32, kind: CampaignKind) -> IssueRules {
    let starts = base + rng.range(-86_400_000, 86_400_000);
    IssueRules {
        campaign_id: 0,
        partner_id: OWNER.into(),
        total_quantity: quantity,
        issue_starts_at: millis(starts),
        issue_ends_at: millis(starts + length),
        coupon_expires_at: millis(starts + length + 86_400_000),
        kind,
        // The callers draw whether it is paused.
        paused: false,
    }
}

fn instant(rng: &mut Rng, rules: &IssueRules, window: Window) -> DateTime<Utc> {
    let (starts, ends) = (
        rules.issue_starts_at.timestamp_millis(),
        rules.issue_ends_at.timestamp_millis(),
    );
    millis(match window {
        Window::BeforeStart => starts - 1,
        Window::AtStart => starts,
        Window::Inside => rng.range(starts, ends - 1),
        Window::BeforeEnd => ends - 1,
        Window::AtEnd => ends,
        Window::After => ends + rng.range(1, 3_600_000),
    })
}

fn counter(rng: &mut Rng, quantity: u32, stock: Stock) -> Option<u32> {
    let quantity = i64::from(quantity);
    match stock {
        Stock::NoCounter => None,
        Stock::Below => Some(rng.range(0, quantity - 1) as u32),
        Stock::Full => Some(quantity as u32),
        Stock::Over => Some(rng.range(quantity + 1, quantity + 3) as u32),
    }
}

/// A window length: 1 and 2 ms (where the boundaries coincide), or anything up to a day.
fn length(rng: &mut Rng) -> i64 {
    match rng.range(0, 3) {
        0 => 1,
        1 => 2,
        _ => rng.range(3, 86_400_000),
    }
}

fn cases(seed: u64) -> Vec<Case> {
    let mut rng = Rng(seed);
    // Drawn too, not read from the clock, so that a seed replays the very same instants: within
    // a few years of 2026, windows past and future alike (the script is given `now`, it never
    // reads Redis's clock).
    let base = 1_767_225_600_000 + rng.range(-2 * YEAR_MS, 2 * YEAR_MS);
    let mut cases = Vec::new();
    for window in WINDOWS {
        for owner in [true, false] {
            for kind in [CampaignKind::Sale, CampaignKind::Reward] {
                for holds in [false, true] {
                    for stock in STOCKS {
                        for pending in [false, true] {
                            // Which stranger is drawn: over 192 cases both come up (and the
                            // mutant check fails if the near-miss never did).
                            let partner = if owner { OWNER } else { rng.pick(&STRANGERS) };
                            let quantity = rng.range(1, 5) as u32;
                            let length = length(&mut rng);
                            let rules = IssueRules {
                                paused: rng.coin(),
                                ..rules(&mut rng, base, length, quantity, kind)
                            };
                            cases.push(Case {
                                name: format!(
                                    "product #{}: {window:?}, {partner}, {kind:?}, holds {holds}, {stock:?}, pending {pending}",
                                    cases.len()
                                ),
                                now: instant(&mut rng, &rules, window),
                                counter: counter(&mut rng, quantity, stock),
                                rules: Some(rules),
                                partner,
                                holds,
                                pending,
                            });
                        }
                    }
                }
            }
        }
    }
    // Weighted to the owner of a sale, the only caller who gets past the first two checks.
    for i in 0..RANDOM_CASES {
        let quantity = rng.range(1, 5) as u32;
        let length = length(&mut rng);
        let kind = rng.pick(&[
            CampaignKind::Sale,
            CampaignKind::Sale,
            CampaignKind::Sale,
            CampaignKind::Reward,
        ]);
        let rules = IssueRules {
            paused: rng.coin(),
            ..rules(&mut rng, base, length, quantity, kind)
        };
        let now = if rng.coin() {
            let window = rng.pick(&WINDOWS);
            instant(&mut rng, &rules, window)
        } else {
            let (starts, ends) = (
                rules.issue_starts_at.timestamp_millis(),
                rules.issue_ends_at.timestamp_millis(),
            );
            millis(rng.range(starts - 3, ends + 3))
        };
        let reserved = rng.range(0, i64::from(quantity) + 3) as u32;
        cases.push(Case {
            name: format!("random #{i}"),
            now,
            counter: (reserved > 0 || rng.coin()).then_some(reserved),
            rules: Some(rules),
            partner: rng.pick(&[OWNER, OWNER, OWNER, STRANGERS[0], STRANGERS[1]]),
            holds: rng.coin(),
            pending: rng.coin(),
        });
    }
    // Redis without the campaign's rules, whatever else it still holds.
    for partner in [OWNER, STRANGERS[0]] {
        for holds in [false, true] {
            for pending in [false, true] {
                cases.push(Case {
                    name: format!("unprimed #{}: {partner}, holds {holds}, pending {pending}", cases.len()),
                    rules: None,
                    partner,
                    now: millis(base),
                    holds,
                    counter: Some(u32::from(holds)),
                    pending,
                });
            }
        }
    }
    cases
}

/// Everything the script may read or write for one campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    rules: HashMap<String, String>,
    users: HashMap<String, String>,
    count: Option<String>,
    pending: HashMap<String, String>,
    /// PEXPIRETIME of users, count, pending (-1: none, -2: no key).
    expiry: [i64; 3],
}

async fn state(conn: &mut redis::aio::MultiplexedConnection, id: CampaignId) -> State {
    type Raw = (
        HashMap<String, String>,
        HashMap<String, String>,
        Option<String>,
        HashMap<String, String>,
        i64,
        i64,
        i64,
    );
    let (rules, users, count, pending, users_expiry, count_expiry, pending_expiry): Raw = redis::pipe()
        .cmd("HGETALL")
        .arg(rules_key(id))
        .cmd("HGETALL")
        .arg(users_key(id))
        .cmd("GET")
        .arg(count_key(id))
        .cmd("HGETALL")
        .arg(pending_key(id))
        .cmd("PEXPIRETIME")
        .arg(users_key(id))
        .cmd("PEXPIRETIME")
        .arg(count_key(id))
        .cmd("PEXPIRETIME")
        .arg(pending_key(id))
        .query_async(conn)
        .await
        .unwrap_or_else(|e| panic!("campaign {id}'s state reads: {e}"));
    State {
        rules,
        users,
        count,
        pending,
        expiry: [users_expiry, count_expiry, pending_expiry],
    }
}

/// Puts the campaign state the case describes in Redis under `id`: the rules through the ledger,
/// the rest written directly, since some of it (over the quantity) the ledger never writes itself.
async fn set_up(ledger: &RedisIssueLedger, conn: &mut redis::aio::MultiplexedConnection, case: &Case, id: CampaignId) {
    let mut pipe = redis::pipe();
    if let Some(rules) = &case.rules {
        ledger.prime(rules).await.expect("rules primed");
        // Off the live list before any place exists: the recovery runs of tests sharing this
        // Redis walk that list, and must never find (and re-send) places of these campaigns.
        // Listed with rules and no places, as here for an instant, is what `prime` allows anyway.
        pipe.cmd("ZREM").arg(LIVE_CAMPAIGNS_KEY).arg(id).ignore();
    }
    // Enough other holders that holders and counter agree, where the counter allows it.
    let others = case.reserved().saturating_sub(u32::from(case.holds));
    // Others' places in the older form (the bare request id), the caller's as the script writes it.
    let mut holders: Vec<(String, Uuid, String)> = (0..others)
        .map(|i| {
            let request = Uuid::now_v7();
            (format!("holder-{i}"), request, request.to_string())
        })
        .collect();
    if case.holds {
        let place = caller_place();
        holders.push((CALLER.into(), place.request_id.unwrap(), place.encode()));
    }
    if !holders.is_empty() {
        let values: Vec<(&String, &String)> = holders.iter().map(|(user, _, value)| (user, value)).collect();
        pipe.cmd("HSET").arg(users_key(id)).arg(&values).ignore();
        pipe.cmd("PEXPIRE").arg(users_key(id)).arg(SET_UP_TTL_MS).ignore();
    }
    if let Some(count) = case.counter {
        pipe.cmd("SET")
            .arg(count_key(id))
            .arg(count)
            .arg("PX")
            .arg(SET_UP_TTL_MS)
            .ignore();
    }
    if case.pending {
        let reserved_at = case.now.timestamp_millis() - 1_000;
        let mut places: Vec<(String, String)> = holders
            .iter()
            .enumerate()
            .map(|(rank, (user, request, _))| (request.to_string(), format!("{} {reserved_at} {user}", rank + 1)))
            .collect();
        places.push((Uuid::now_v7().to_string(), format!("1 {reserved_at} lost-holder")));
        pipe.cmd("HSET").arg(pending_key(id)).arg(&places).ignore();
        pipe.cmd("PEXPIRE").arg(pending_key(id)).arg(SET_UP_TTL_MS).ignore();
    }
    pipe.query_async::<()>(conn)
        .await
        .unwrap_or_else(|e| panic!("{}: set-up of campaign {id}: {e}", case.name));
}

/// Runs one case against the script, checks its answer and writes; returns the case (with its
/// campaign id) and the answer.
async fn run(
    ledger: RedisIssueLedger,
    mut conn: redis::aio::MultiplexedConnection,
    mut case: Case,
    id: CampaignId,
    seed: u64,
) -> (Case, IssueDecision) {
    if let Some(rules) = &mut case.rules {
        rules.campaign_id = id;
    }
    set_up(&ledger, &mut conn, &case, id).await;
    let before = state(&mut conn, id).await;
    let request = Uuid::now_v7();
    let user = UserId::parse(CALLER).unwrap();
    let decision = ledger
        .reserve(id, case.partner, &user, request, case.now)
        .await
        .unwrap_or_else(|e| panic!("{}: the script answers: {e}", case.name));
    let after = state(&mut conn, id).await;
    assert_eq!(
        decision,
        case.expected(),
        "the script (left) and decide (right) disagree (seed {seed}) on {case:#?}"
    );

    let mut expected = before.clone();
    if let IssueDecision::Reserved { rank } = decision {
        // The place, in this request's name; the counter raised to the rank; the place pending.
        expected.users.insert(CALLER.into(), Place::of(request, rank).encode());
        expected.count = Some(rank.to_string());
        expected.pending.insert(
            request.to_string(),
            format!("{rank} {} {CALLER}", case.now.timestamp_millis()),
        );
        // The first place gives the holders and the counter the campaign's expiry, the first
        // pending place gives it to the pending hash.
        let expires: i64 = before.rules["expiresAt"].parse().expect("expiresAt in ms");
        if rank == 1 {
            expected.expiry[0] = expires;
            expected.expiry[1] = expires;
        }
        if before.pending.is_empty() {
            expected.expiry[2] = expires;
        }
    }
    assert_eq!(
        after, expected,
        "the script's writes (left) are not those its answer {decision:?} implies (right) (seed {seed}) on {case:#?}"
    );
    (case, decision)
}

/// The checks `decide` makes, in its order, rewritten as data so that they can be reordered or
/// loosened: the cases must tell every such mutant from the script, or they miss a boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Owner,
    Kind,
    NotOpen,
    Ended,
    Duplicate,
    Paused,
    Stock,
}

const ORDER: [Check; 7] = [
    Check::Owner,
    Check::Kind,
    Check::NotOpen,
    Check::Ended,
    Check::Duplicate,
    Check::Paused,
    Check::Stock,
];

fn not_open(rules: &IssueRules) -> IssueDecision {
    IssueDecision::NotOpen {
        opens_at: rules.issue_starts_at,
    }
}

/// `decide` with its checks in `order`, `loose` compared one step too leniently.
fn mutant(order: &[Check], loose: Option<Check>, case: &Case) -> IssueDecision {
    let rules = case.rules.as_ref().expect("a primed case");
    let lenient = |check| loose == Some(check);
    for &check in order {
        let (fails, decision) = match check {
            Check::Owner if lenient(check) => (
                !rules.partner_id.eq_ignore_ascii_case(case.partner),
                IssueDecision::NotOwner,
            ),
            Check::Owner => (rules.partner_id != case.partner, IssueDecision::NotOwner),
            Check::Kind => (rules.kind == CampaignKind::Reward, IssueDecision::NotOnSale),
            Check::NotOpen if lenient(check) => (case.now <= rules.issue_starts_at, not_open(rules)),
            Check::NotOpen => (case.now < rules.issue_starts_at, not_open(rules)),
            Check::Ended if lenient(check) => (case.now > rules.issue_ends_at, IssueDecision::Ended),
            Check::Ended => (case.now >= rules.issue_ends_at, IssueDecision::Ended),
            Check::Duplicate => (case.holds, IssueDecision::AlreadyIssued(caller_place())),
            Check::Paused => (rules.paused, IssueDecision::Paused),
            Check::Stock if lenient(check) => (case.reserved() > rules.total_quantity, IssueDecision::SoldOut),
            Check::Stock => (case.reserved() >= rules.total_quantity, IssueDecision::SoldOut),
        };
        if fails {
            return decision;
        }
    }
    IssueDecision::Reserved {
        rank: case.reserved() + 1,
    }
}

/// Every mutant of the rule some case tells apart from what the script answered: a case set
/// that lost a boundary would let the script drift there unseen.
fn assert_cases_discriminate(answered: &[(Case, IssueDecision)]) {
    let primed: Vec<&(Case, IssueDecision)> = answered.iter().filter(|(c, _)| c.rules.is_some()).collect();
    for (case, _) in &primed {
        assert_eq!(
            mutant(&ORDER, None, case),
            case.expected(),
            "the rewritten rule is decide itself, on {case:#?}"
        );
    }
    let mut mutants: Vec<(String, Vec<Check>, Option<Check>)> = Vec::new();
    for i in 0..ORDER.len() - 1 {
        // Not open and ended at once needs a window that ends before it starts, which no
        // campaign has: swapping those two changes nothing.
        if (ORDER[i], ORDER[i + 1]) == (Check::NotOpen, Check::Ended) {
            continue;
        }
        let mut order = ORDER.to_vec();
        order.swap(i, i + 1);
        mutants.push((format!("{:?} swapped with {:?}", ORDER[i], ORDER[i + 1]), order, None));
    }
    for check in [Check::Owner, Check::NotOpen, Check::Ended, Check::Stock] {
        mutants.push((format!("{check:?} loosened"), ORDER.to_vec(), Some(check)));
    }
    for (name, order, loose) in mutants {
        assert!(
            primed
                .iter()
                .any(|(case, answer)| mutant(&order, loose, case) != *answer),
            "no case tells the mutant \"{name}\" from the script: the cases miss a boundary"
        );
    }
}

/// A range of campaign ids of this run's own, far above any the database hands out and apart
/// from those of the other Redis tests (timestamp_micros × 1,000).
fn first_id() -> CampaignId {
    8_000_000_000_000_000_000 + (Utc::now().timestamp_micros() as u64 % 1_000_000_000_000_000) * 1_000
}

fn seed() -> u64 {
    match std::env::var("ISSUE_DECISION_SEED") {
        Ok(raw) => raw.parse().expect("ISSUE_DECISION_SEED is a u64"),
        // Never 0: xorshift stays at 0 forever.
        Err(_) => Utc::now().timestamp_nanos_opt().expect("a clock before 2262") as u64 | 1,
    }
}

#[tokio::test]
async fn the_issue_script_decides_as_decide_does() {
    let seed = seed();
    let cases = cases(seed);
    let first = first_id();
    let ids: Vec<CampaignId> = (first..).take(cases.len()).collect();
    println!(
        "issue_decision: seed {seed} ({} cases; ISSUE_DECISION_SEED={seed} replays them)",
        cases.len()
    );
    let started = std::time::Instant::now();
    let ledger = RedisDeployment::Single.ledger(Duration::from_secs(5));
    let conn = integration_tests::redis().await;
    let body = tokio::spawn({
        let (cases, ids) = (cases.clone(), ids.clone());
        let conn = conn.clone();
        async move {
            let runs = futures_util::stream::iter(cases.into_iter().zip(ids))
                .map(|(case, id)| {
                    let (ledger, conn) = (ledger.clone(), conn.clone());
                    run(ledger, conn, case, id, seed)
                })
                .buffer_unordered(IN_FLIGHT)
                .collect::<Vec<_>>();
            tokio::time::timeout(DEADLINE, runs)
                .await
                .unwrap_or_else(|_| panic!("the cases did not finish within {DEADLINE:?} (seed {seed})"))
        }
    })
    .await;

    // Clean-up, panic or not: nothing of these campaigns stays behind for later runs.
    let mut conn = conn;
    for chunk in ids.chunks(200) {
        let keys: Vec<String> = chunk
            .iter()
            .flat_map(|&id| {
                [
                    rules_key(id),
                    users_key(id),
                    count_key(id),
                    pending_key(id),
                    outcomes_key(id),
                ]
            })
            .collect();
        let mut clean_up = redis::pipe();
        clean_up
            .cmd("DEL")
            .arg(&keys)
            .ignore()
            .cmd("ZREM")
            .arg(LIVE_CAMPAIGNS_KEY)
            .arg(chunk)
            .ignore();
        tokio::time::timeout(Duration::from_secs(10), clean_up.query_async::<()>(&mut conn))
            .await
            .expect("clean-up within 10 s")
            .expect("clean-up");
    }
    let answered = match body {
        Ok(answered) => answered,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };

    assert_eq!(answered.len(), cases.len());
    assert_cases_discriminate(&answered);
    let mut tally: HashMap<String, usize> = HashMap::new();
    for (_, decision) in &answered {
        let kind = match decision {
            IssueDecision::Reserved { .. } => "Reserved".to_owned(),
            other => format!("{other:?}"),
        };
        *tally.entry(kind).or_default() += 1;
    }
    let mut tally: Vec<_> = tally.into_iter().collect();
    tally.sort();
    println!(
        "issue_decision: {} cases agree in {:?}: {tally:?}",
        answered.len(),
        started.elapsed()
    );
}
