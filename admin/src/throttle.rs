//! A partner's request rate, set where API Gateway enforces it: a usage plan. The stack's plan
//! (`PartnerUsagePlan`, its throttle the template's `PartnerThrottleRate`/`Burst`) throttles every
//! partner alike; a partner with a rate of its own gets a plan of its own on the same API stages,
//! and its usage-plan key moves there (API Gateway allows a key in one plan per stage).

use anyhow::{Context, Result, anyhow};
use aws_sdk_apigateway::Client;
use aws_sdk_apigateway::error::DisplayErrorContext;
use aws_sdk_apigateway::types::{Op, PatchOperation, ThrottleSettings, UsagePlan};

/// What `limits set --rate` asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// Requests per second and burst.
    Own { rate: f64, burst: i32 },
    /// Back to the stack's plan.
    Shared,
}

fn own_plan_name(shared: &UsagePlan, partner: &str) -> String {
    format!("{}-partner-{partner}", shared.name().unwrap_or("fcfs"))
}

async fn plan_named(apigateway: &Client, name: &str) -> Result<Option<UsagePlan>> {
    let mut position = None;
    loop {
        let page = apigateway
            .get_usage_plans()
            .set_position(position)
            .limit(500)
            .send()
            .await
            .map_err(|e| anyhow!(DisplayErrorContext(e)))
            .context("cannot list usage plans")?;
        if let Some(plan) = page.items().iter().find(|p| p.name() == Some(name)) {
            return Ok(Some(plan.clone()));
        }
        match page.position() {
            Some(next) if !page.items().is_empty() => position = Some(next.to_owned()),
            _ => return Ok(None),
        }
    }
}

/// Adds the key to the plan; already there is fine.
async fn add_key(apigateway: &Client, plan: &str, key: &str) -> Result<()> {
    match apigateway
        .create_usage_plan_key()
        .usage_plan_id(plan)
        .key_id(key)
        .key_type("API_KEY")
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_conflict_exception()) => Ok(()),
        Err(e) => {
            Err(anyhow!(DisplayErrorContext(e))).with_context(|| format!("cannot add the key to usage plan {plan}"))
        }
    }
}

/// Whether the key is in the plan.
async fn in_plan(apigateway: &Client, plan: &str, key: &str) -> Result<bool> {
    let mut position = None;
    loop {
        let page = apigateway
            .get_usage_plan_keys()
            .usage_plan_id(plan)
            .set_position(position)
            .limit(500)
            .send()
            .await
            .map_err(|e| anyhow!(DisplayErrorContext(e)))
            .with_context(|| format!("cannot list the keys of usage plan {plan}"))?;
        if page.items().iter().any(|k| k.id() == Some(key)) {
            return Ok(true);
        }
        match page.position() {
            Some(next) if !page.items().is_empty() => position = Some(next.to_owned()),
            _ => return Ok(false),
        }
    }
}

/// Removes the key from the plan if it is there (looked up first: LocalStack answers a key not in
/// the plan with an internal error where AWS answers NotFound).
async fn remove_key(apigateway: &Client, plan: &str, key: &str) -> Result<()> {
    if !in_plan(apigateway, plan, key).await? {
        return Ok(());
    }
    apigateway
        .delete_usage_plan_key()
        .usage_plan_id(plan)
        .key_id(key)
        .send()
        .await
        .map_err(|e| anyhow!(DisplayErrorContext(e)))
        .with_context(|| format!("cannot remove the key from usage plan {plan}"))?;
    Ok(())
}

/// Puts the partner under `rate`; returns the id of the plan that now throttles it. The key
/// leaves one plan before it joins the other (API Gateway refuses a key in two plans of one
/// stage), so for the instant between the two calls the partner's requests are refused (403).
pub async fn set(sdk: &aws_config::SdkConfig, shared_plan_id: &str, partner: &str, rate: Rate) -> Result<String> {
    let apigateway = Client::new(sdk);
    let key = super::keys::usage_key_id(&apigateway, partner).await?;
    let shared = apigateway
        .get_usage_plan()
        .usage_plan_id(shared_plan_id)
        .send()
        .await
        .map_err(|e| anyhow!(DisplayErrorContext(e)))
        .with_context(|| format!("cannot read usage plan {shared_plan_id}"))?;
    let shared = UsagePlan::builder()
        .set_id(shared.id)
        .set_name(shared.name)
        .set_api_stages(shared.api_stages)
        .build();
    let name = own_plan_name(&shared, partner);
    let own = plan_named(&apigateway, &name).await?;
    match rate {
        Rate::Own { rate, burst } => {
            let own_id = match own.and_then(|p| p.id) {
                Some(id) => {
                    // Both limits in one call: the plan never holds one new and one old.
                    let replace = |path: &str, value: String| {
                        PatchOperation::builder()
                            .op(Op::Replace)
                            .path(path)
                            .value(value)
                            .build()
                    };
                    apigateway
                        .update_usage_plan()
                        .usage_plan_id(&id)
                        .patch_operations(replace("/throttle/rateLimit", rate.to_string()))
                        .patch_operations(replace("/throttle/burstLimit", burst.to_string()))
                        .send()
                        .await
                        .map_err(|e| anyhow!(DisplayErrorContext(e)))
                        .with_context(|| format!("cannot change the throttle of usage plan {id}"))?;
                    id
                }
                None => apigateway
                    .create_usage_plan()
                    .name(&name)
                    .description(format!("fcfs-coupons: partner {partner}'s own request rate"))
                    .set_api_stages(Some(shared.api_stages().to_vec()))
                    .throttle(ThrottleSettings::builder().rate_limit(rate).burst_limit(burst).build())
                    .send()
                    .await
                    .map_err(|e| anyhow!(DisplayErrorContext(e)))
                    .context("cannot create the partner's usage plan")?
                    .id
                    .context("CreateUsagePlan returned no id")?,
            };
            remove_key(&apigateway, shared_plan_id, &key).await?;
            add_key(&apigateway, &own_id, &key).await?;
            Ok(own_id)
        }
        Rate::Shared => {
            if let Some(own_id) = own.and_then(|p| p.id) {
                remove_key(&apigateway, &own_id, &key).await?;
                add_key(&apigateway, shared_plan_id, &key).await?;
                // A plan is deleted once no stage is attached to it.
                for stage in shared.api_stages() {
                    let (Some(api), Some(stage)) = (stage.api_id(), stage.stage()) else {
                        continue;
                    };
                    apigateway
                        .update_usage_plan()
                        .usage_plan_id(&own_id)
                        .patch_operations(
                            PatchOperation::builder()
                                .op(Op::Remove)
                                .path("/apiStages")
                                .value(format!("{api}:{stage}"))
                                .build(),
                        )
                        .send()
                        .await
                        .map_err(|e| anyhow!(DisplayErrorContext(e)))
                        .with_context(|| format!("cannot detach the stage from usage plan {own_id}"))?;
                }
                apigateway
                    .delete_usage_plan()
                    .usage_plan_id(&own_id)
                    .send()
                    .await
                    .map_err(|e| anyhow!(DisplayErrorContext(e)))
                    .with_context(|| format!("cannot delete usage plan {own_id}"))?;
            } else {
                add_key(&apigateway, shared_plan_id, &key).await?;
            }
            Ok(shared_plan_id.to_owned())
        }
    }
}
