//! `WebhookTransport` over HTTPS (reqwest). A partner chooses the URL, so the client is built to
//! go only where `UrlPolicy` allows: its own DNS resolver drops every address the policy refuses
//! (checked at each connect, so a host re-pointed at 169.254.169.254 after registration is still
//! refused), an IP-literal host (which reqwest connects to without resolving) is checked before
//! sending, redirects are not followed (a 302 could point anywhere), and no proxy is used (one
//! would resolve the host itself, out of the resolver's sight).

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::CONTENT_TYPE;
use reqwest::redirect::Policy;

use crate::events::address::{CheckedUrl, UrlPolicy, UrlRefusal};
use crate::events::domain::DeliveryFailure;
use crate::events::ports::WebhookTransport;
use crate::kernel::Unavailable;

pub const SIGNATURE_HEADER: &str = "X-FCFS-Signature";
pub const USER_AGENT: &str = "fcfs-coupons-webhooks/1";

/// How long registration waits for a host to resolve before refusing it.
pub const RESOLVE_DEADLINE: Duration = Duration::from_secs(2);

type BoxError = Box<dyn StdError + Send + Sync>;

pub struct HttpWebhookTransport {
    http: reqwest::Client,
    policy: UrlPolicy,
}

impl HttpWebhookTransport {
    /// A transport giving each POST `timeout` (connect, send and the answer's head together).
    pub fn new(policy: UrlPolicy, timeout: Duration) -> Result<Self, Unavailable> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(Policy::none())
            .no_proxy()
            .user_agent(USER_AGENT)
            .dns_resolver(PolicyResolver { policy })
            .build()
            // No fallback to a default client: it would have none of the checks above.
            .map_err(|e| Unavailable::new("webhooks", e))?;
        Ok(Self { http, policy })
    }
}

#[async_trait]
impl WebhookTransport for HttpWebhookTransport {
    async fn post(&self, url: &str, body: &str, signature: &str) -> Result<(), DeliveryFailure> {
        // Checked again at each delivery: the policy may be stricter than at registration, and
        // this is where an IP-literal host is judged (reqwest does not resolve it).
        let checked = self
            .policy
            .check_url(url)
            .map_err(|refusal| DeliveryFailure::Refused(format!("url {refusal}")))?;
        let response = self
            .http
            .post(checked.as_str())
            .header(CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .body(body.to_owned())
            .send()
            .await
            .map_err(failure)?;
        // The answer's body is not read: nothing in it matters, and it could be endless.
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(DeliveryFailure::Status(status.as_u16()))
        }
    }
}

/// Whether `url`'s host (a name or a literal) resolves, within [`RESOLVE_DEADLINE`], only to
/// addresses `policy` allows: registration's check. Stricter than a delivery's resolver, which
/// connects to the allowed addresses among several: a registration with any refused address is
/// refused outright, so a partner learns of it now rather than from failing deliveries.
pub async fn check_resolves(policy: &UrlPolicy, url: &CheckedUrl) -> Result<(), UrlRefusal> {
    if let Some(ip) = url.ip_literal() {
        return if policy.allows(ip) {
            Ok(())
        } else {
            Err(UrlRefusal::NotPublic(ip))
        };
    }
    let lookup = tokio::net::lookup_host((url.host(), url.port()));
    let addrs: Vec<SocketAddr> = match tokio::time::timeout(RESOLVE_DEADLINE, lookup).await {
        Ok(Ok(addrs)) => addrs.collect(),
        Ok(Err(_)) | Err(_) => return Err(UrlRefusal::DoesNotResolve),
    };
    if addrs.is_empty() {
        return Err(UrlRefusal::DoesNotResolve);
    }
    match addrs.iter().find(|addr| !policy.allows(addr.ip())) {
        Some(refused) => Err(UrlRefusal::NotPublic(refused.ip())),
        None => Ok(()),
    }
}

/// The client's resolver: the system's answer, less every address the policy refuses.
struct PolicyResolver {
    policy: UrlPolicy,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let allowed = allowed_addrs(policy, &host).await?;
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// `host`'s addresses that `policy` allows (port 0: reqwest sets the URL's port); an error when
/// none are.
async fn allowed_addrs(policy: UrlPolicy, host: &str) -> Result<Vec<SocketAddr>, BoxError> {
    let allowed: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
        .await?
        .filter(|addr| policy.allows(addr.ip()))
        .collect();
    if allowed.is_empty() {
        return Err(Box::new(NoAllowedAddress { host: host.to_owned() }));
    }
    Ok(allowed)
}

/// The resolver's refusal, found again in the send error's sources to answer `Refused`.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves to no public address")]
struct NoAllowedAddress {
    host: String,
}

fn failure(err: reqwest::Error) -> DeliveryFailure {
    let mut source: Option<&(dyn StdError + 'static)> = Some(&err);
    while let Some(current) = source {
        if let Some(refused) = current.downcast_ref::<NoAllowedAddress>() {
            return DeliveryFailure::Refused(refused.to_string());
        }
        source = current.source();
    }
    if err.is_timeout() {
        return DeliveryFailure::Timeout;
    }
    // Without the URL: its query may hold a partner's token, and the text is stored and shown.
    DeliveryFailure::Connect(describe(&err.without_url()))
}

/// The error and its causes, `outer: inner: …`, skipping a cause that repeats its parent's text.
fn describe(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut last = text.clone();
    let mut source = err.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !last.ends_with(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        last = line;
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests;
