//! Operator commands over the issue ledger: `reconcile` (compare Redis with MySQL, repair what is
//! safe), `rebuild-ledger` (replace Redis's state from MySQL, only with the queues drained) and
//! `recover` (one recovery run now, as the scheduled function does every minute).

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use aws_sdk_sqs::types::QueueAttributeName;
use fcfs_shared::adapters::mysql::MySqlStore;
use fcfs_shared::adapters::redis::{RedisIssueLedger, RedisSettings};
use fcfs_shared::adapters::sqs::SqsReservationQueue;
use fcfs_shared::issuance::domain::{CampaignId, CampaignKind, IssueRules, Outcome, RejectionReason};
use fcfs_shared::issuance::ports::{CampaignCatalog, IssueLedger};
use fcfs_shared::issuance::reconcile::{Difference, LedgerView, RecordView, compare_with};
use fcfs_shared::issuance::{Recovery, RecoverySummary};
use fcfs_shared::kernel::UserId;

/// Where Redis is: the same variables the functions read.
#[derive(clap::Args, Debug, Clone)]
pub struct RedisArgs {
    /// `redis://` or `rediss://` (TLS); with --redis-cluster, any node of the cluster.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: String,
    /// REDIS_URL is a node (or the configuration endpoint) of a Redis Cluster.
    #[arg(long, env = "REDIS_CLUSTER")]
    pub redis_cluster: bool,
    /// PEM file of the CA a `rediss://` server's certificate chains to (default: public roots).
    #[arg(long, env = "REDIS_TLS_CA_FILE")]
    pub redis_tls_ca_file: Option<PathBuf>,
}

impl RedisArgs {
    fn ledger(&self, response_timeout: Duration) -> Result<RedisIssueLedger> {
        Ok(RedisIssueLedger::with_settings(
            &self.redis_url,
            RedisSettings {
                response_timeout,
                cluster: self.redis_cluster,
                tls_ca_file: self.redis_tls_ca_file.clone(),
                ..RedisSettings::default()
            },
        )?)
    }
}

pub struct Stores {
    pub store: MySqlStore,
    pub ledger: RedisIssueLedger,
}

impl Stores {
    pub async fn connect(database_url: &str, redis: &RedisArgs) -> Result<Self> {
        let pool = fcfs_shared::adapters::mysql::connect(database_url, 2)
            .await
            .context("cannot connect to the database")?;
        // Reconcile reads whole campaigns: generous deadlines, this is not a request path.
        let store = MySqlStore::new(pool).with_timeout(Duration::from_secs(120));
        let ledger = redis.ledger(Duration::from_secs(30))?;
        ledger.reserved_count(0).await.context("cannot reach Redis")?;
        Ok(Self { store, ledger })
    }

    async fn campaigns(&self, only: Option<CampaignId>) -> Result<Vec<CampaignId>> {
        Ok(match only {
            Some(id) => vec![id],
            None => self.store.campaign_ids().await?,
        })
    }

    async fn rules(&self, id: CampaignId) -> Result<IssueRules> {
        let campaign = self
            .store
            .get(id)
            .await?
            .with_context(|| format!("campaign {id} does not exist"))?;
        Ok((&campaign).into())
    }

    /// What Redis keeps of the campaign, whether or not MySQL has it.
    async fn ledger_view(&self, id: CampaignId) -> Result<LedgerView> {
        let pending: HashSet<String> = self
            .ledger
            .pending(id, usize::MAX)
            .await?
            .into_iter()
            .map(|p| p.user_id.as_str().to_owned())
            .collect();
        Ok(LedgerView {
            has_rules: self.ledger.rules(id).await?.is_some(),
            count: self.ledger.reserved_count(id).await?,
            holders: self.ledger.holders(id).await?,
            pending,
            outcomes: self.ledger.outcomes(id).await?,
        })
    }

    async fn record_view(&self, rules: &IssueRules) -> Result<RecordView> {
        let id = rules.campaign_id;
        let counts = self.store.counts(id).await?;
        Ok(RecordView {
            on_sale: rules.kind == CampaignKind::Sale,
            quantity: rules.total_quantity.into(),
            issued_count: counts.issued_count,
            rejected_count: counts.rejected_count,
            coupons: self
                .store
                .holders(id)
                .await?
                .into_iter()
                .map(|h| (h.user_id, h.coupon_id))
                .collect(),
            rejections: self
                .store
                .rejections(id)
                .await?
                .into_iter()
                .filter_map(|(user, reason)| Some((user, RejectionReason::parse(&reason)?)))
                .collect(),
        })
    }

    async fn repair(
        &self,
        id: CampaignId,
        rules: Option<&IssueRules>,
        difference: &Difference,
        record: Option<&RecordView>,
    ) -> Result<()> {
        let rules = match (difference, rules) {
            (Difference::StateWithoutCampaign, _) => return Ok(self.ledger.discard(id).await?),
            (_, Some(rules)) => rules,
            (_, None) => bail!("campaign {id}: {difference}, but MySQL does not have it"),
        };
        match difference {
            Difference::StateWithoutCampaign => {}
            Difference::RulesMissing => self.ledger.prime(rules).await?,
            Difference::CountersOff { .. } => {
                self.store.settle_counts(id).await?;
            }
            Difference::CouponsNotHeld { users } => self.ledger.hold(id, users).await?,
            Difference::OutcomesMissing { users } => {
                let outcomes: Vec<(UserId, Outcome)> = users
                    .iter()
                    .filter_map(|u| {
                        let coupon_id = *record?.coupons.get(u)?;
                        Some((UserId::parse(u).ok()?, Outcome::Issued { coupon_id }))
                    })
                    .collect();
                self.ledger.record_outcomes(id, &outcomes).await?;
            }
            Difference::CountOff { .. } => {
                self.ledger.settle_count(rules).await?;
            }
            Difference::HeldWithoutRecord { .. } | Difference::OverIssued { .. } => {}
        }
        Ok(())
    }

    /// Every campaign MySQL has, and every campaign Redis still lists (a leftover of a create
    /// that failed half-way is only there).
    async fn reconciled_campaigns(&self, only: Option<CampaignId>) -> Result<Vec<CampaignId>> {
        if let Some(id) = only {
            return Ok(vec![id]);
        }
        let mut ids = self.store.campaign_ids().await?;
        ids.extend(self.ledger.live_campaigns().await?);
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// Prints every campaign's differences; repairs the safe ones if asked. Returns how many
    /// differences remain.
    pub async fn reconcile(&self, only: Option<CampaignId>, repair: bool) -> Result<usize> {
        let ids = self.reconciled_campaigns(only).await?;
        let mut remaining = 0;
        for (n, id) in ids.iter().enumerate() {
            // Read once per campaign: every repair below works from the same rules.
            let rules: Option<IssueRules> = self.store.get(*id).await?.as_ref().map(Into::into);
            let ledger = self.ledger_view(*id).await?;
            let record = match &rules {
                Some(rules) => Some(self.record_view(rules).await?),
                None => None,
            };
            let differences = compare_with(&ledger, record.as_ref());
            let mysql = match &record {
                Some(r) => format!(
                    "{} coupons / {} rejected of {}",
                    r.coupons.len(),
                    r.rejections.len(),
                    r.quantity
                ),
                None => "no such campaign".to_owned(),
            };
            let head = format!(
                "[{}/{}] campaign {id}: Redis {} reserved / {} held / {} pending; MySQL {mysql}",
                n + 1,
                ids.len(),
                ledger.count,
                ledger.holders.len(),
                ledger.pending.len(),
            );
            if differences.is_empty() {
                println!("{head}: in agreement");
                continue;
            }
            println!("{head}: {} difference(s)", differences.len());
            for difference in &differences {
                let action = match (repair, difference.repairable()) {
                    (_, false) => "needs an operator",
                    (false, true) => "repairable with --repair",
                    (true, true) => {
                        self.repair(*id, rules.as_ref(), difference, record.as_ref()).await?;
                        "repaired"
                    }
                };
                println!("  - {difference} [{action}]");
                if !(repair && difference.repairable()) {
                    remaining += 1;
                }
            }
        }
        Ok(remaining)
    }

    /// Replaces Redis's state of each campaign with what MySQL recorded.
    pub async fn rebuild(&self, only: Option<CampaignId>) -> Result<()> {
        let ids = self.campaigns(only).await?;
        for (n, id) in ids.iter().enumerate() {
            let rules = self.rules(*id).await?;
            let coupons = self.store.holders(*id).await?;
            let restored = self.ledger.restore(&rules, &coupons).await?;
            eprintln!(
                "[{}/{}] campaign {id}: {} coupons, {restored} places held",
                n + 1,
                ids.len(),
                coupons.len()
            );
        }
        Ok(())
    }
}

/// Messages in the queue (visible, in flight or delayed): the same count a lost campaign's rebuild
/// waits on in the issue API.
async fn messages_in(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<u64> {
    fcfs_shared::adapters::sqs::messages_in(sqs, url)
        .await
        .with_context(|| format!("cannot read queue {url}"))
}

/// The issue queue and its dead-letter queue (from its redrive policy), with their message counts.
pub async fn queued(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Result<Vec<(String, u64)>> {
    let mut found = vec![(queue_url.to_owned(), messages_in(sqs, queue_url).await?)];
    let policy = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send()
        .await?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::RedrivePolicy));
    if let Some(policy) = policy {
        let arn = serde_json::from_str::<serde_json::Value>(&policy)?["deadLetterTargetArn"]
            .as_str()
            .map(str::to_owned)
            .context("the redrive policy names no dead-letter queue")?;
        let name = arn.rsplit(':').next().unwrap_or_default();
        let dlq = sqs
            .get_queue_url()
            .queue_name(name)
            .send()
            .await
            .with_context(|| format!("cannot find the dead-letter queue {name}"))?
            .queue_url
            .context("no URL for the dead-letter queue")?;
        let count = messages_in(sqs, &dlq).await?;
        found.push((dlq, count));
    }
    Ok(found)
}

/// `rebuild-ledger` would drop every reservation still on its way: refuse unless forced.
pub async fn ensure_drained(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Result<()> {
    let busy: Vec<String> = queued(sqs, queue_url)
        .await?
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(url, n)| format!("{url}: {n} messages"))
        .collect();
    if !busy.is_empty() {
        bail!(
            "refusing to rebuild while reservations are on their way (their places would be sold again):\n  {}\nwait for the writer to drain them (or redrive the DLQ), use `fcfs-admin reconcile`, or pass --force",
            busy.join("\n  ")
        );
    }
    Ok(())
}

/// One recovery run now.
pub async fn recover(redis: &RedisArgs, queue_url: &str, grace: Duration) -> Result<RecoverySummary> {
    let sdk = fcfs_shared::config::aws_sdk_config().await;
    let ledger = redis.ledger(RedisSettings::default().response_timeout)?;
    let queue = SqsReservationQueue::new(aws_sdk_sqs::Client::new(&sdk), queue_url);
    Ok(Recovery::new(ledger, queue).with_grace(grace).run().await?)
}
