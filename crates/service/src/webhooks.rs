//! Webhook subscriptions (LNPay only offered them in its dashboard; Satchel has an API) and the
//! rules deliveries follow: retry schedule and target-address policy.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use satchel_domain::{DeliveryId, EventName, WebhookId, now_secs};
use satchel_store::{AttemptRecord, DEFAULT_ALL, DeliveryRecord, WebhookRecord};

use crate::auth::Caller;
use crate::{Ctx, ServiceError};

/// When failed deliveries are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// First retry delay (seconds); doubles each attempt.
    pub first_retry_secs: i64,
    /// Longest pause between two attempts.
    pub max_retry_secs: i64,
    /// How long after the event a delivery keeps being retried before it is marked dead.
    pub window_secs: i64,
}

impl Default for RetryPolicy {
    /// 10 s, 20 s, 40 s … capped at 1 h, for up to 24 h.
    fn default() -> Self {
        RetryPolicy {
            first_retry_secs: 10,
            max_retry_secs: 3600,
            window_secs: 24 * 3600,
        }
    }
}

impl RetryPolicy {
    /// When to try again after `attempts` failed requests, or `None` when the window is over
    /// (the delivery is then dead).
    pub fn next_attempt_at(&self, created_at: i64, attempts: i64, now: i64) -> Option<i64> {
        let shift = u32::try_from(attempts.clamp(1, 20) - 1).unwrap_or(0);
        let delay = self
            .first_retry_secs
            .saturating_mul(1i64 << shift)
            .min(self.max_retry_secs)
            .max(1);
        let at = now.saturating_add(delay);
        (at < created_at.saturating_add(self.window_secs)).then_some(at)
    }
}

/// True for addresses a webhook must not reach unless the operator allows it: loopback,
/// private, link-local, unspecified, multicast, carrier-grade NAT, unique-local v6.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || o[0] == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Resolves a webhook URL's host and checks every address against the policy.
pub async fn check_target(url: &str, allow_private: bool) -> Result<Vec<SocketAddr>, ServiceError> {
    let bad = |m: &str| ServiceError::Invalid(format!("endpoint_url {m}"));
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("must be an http(s) URL"))?;
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return Err(bad("must use http or https")),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let hostport = authority.rsplit('@').next().unwrap_or("");
    if hostport.is_empty() {
        return Err(bad("has no host"));
    }
    let (host, port) = if let Some(stripped) = hostport.strip_prefix('[') {
        let (h, rest) = stripped
            .split_once(']')
            .ok_or_else(|| bad("has a malformed IPv6 host"))?;
        let port = match rest.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad("has a bad port"))?,
            None => default_port,
        };
        (h.to_owned(), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| bad("has a bad port"))?),
            None => (hostport.to_owned(), default_port),
        }
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|_| bad("host does not resolve"))?
        .collect();
    if addrs.is_empty() {
        return Err(bad("host does not resolve"));
    }
    if !allow_private && addrs.iter().any(|a| is_private(a.ip())) {
        return Err(bad(
            "resolves to a loopback, private or link-local address, which this server does not allow",
        ));
    }
    Ok(addrs)
}

/// A subscription request.
#[derive(Debug, Clone, Default)]
pub struct NewWebhook {
    /// Where to POST.
    pub endpoint_url: String,
    /// Event names.
    pub events: Vec<String>,
    /// All current and future events.
    pub default_all: bool,
    /// HMAC key for `X-LNPay-Signature`.
    pub secret: Option<String>,
}

/// A delivery with its attempts (the delivery log).
#[derive(Debug, Clone)]
pub struct DeliveryLog {
    /// The delivery.
    pub delivery: DeliveryRecord,
    /// Its event's name.
    pub event: EventName,
    /// Its HTTP requests, oldest first.
    pub attempts: Vec<AttemptRecord>,
}

/// Webhook subscriptions.
#[derive(Clone)]
pub struct WebhookService {
    ctx: Arc<Ctx>,
}

impl WebhookService {
    pub(crate) fn new(ctx: Arc<Ctx>) -> WebhookService {
        WebhookService { ctx }
    }

    fn secret_only(&self, c: &Caller) -> Result<(), ServiceError> {
        if c.role == satchel_domain::KeyRole::Secret {
            Ok(())
        } else {
            Err(ServiceError::SecretKeyRequired)
        }
    }

    /// Subscribes (sak only).
    pub async fn create(
        &self,
        caller: &Caller,
        req: NewWebhook,
    ) -> Result<WebhookRecord, ServiceError> {
        self.secret_only(caller)?;
        let url = req.endpoint_url.trim().to_owned();
        if url.is_empty() {
            return Err(ServiceError::Invalid(
                "Endpoint Url cannot be blank.".into(),
            ));
        }
        if url.len() > 2048 {
            return Err(ServiceError::Invalid("Endpoint Url is too long.".into()));
        }
        check_target(&url, self.ctx.cfg.allow_private_webhook_targets).await?;
        let mut events = Vec::new();
        if req.default_all || req.events.iter().any(|e| e == DEFAULT_ALL) {
            events.push(DEFAULT_ALL.to_owned());
        } else {
            for e in &req.events {
                let e = e.trim();
                if EventName::from_name(e).is_none() {
                    return Err(ServiceError::Invalid(format!(
                        "Unknown event {e}. Known: {}, or default_all.",
                        EventName::ALL
                            .iter()
                            .map(|n| n.name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                if !events.iter().any(|x| x == e) {
                    events.push(e.to_owned());
                }
            }
        }
        if events.is_empty() {
            return Err(ServiceError::Invalid(
                "Give an events list or default_all.".into(),
            ));
        }
        let secret = req.secret.filter(|s| !s.is_empty());
        let w = WebhookRecord {
            id: WebhookId::generate(),
            account_id: caller.account_id.clone(),
            endpoint_url: url,
            events,
            secret,
            active: true,
            created_at: now_secs(),
        };
        self.ctx.store.create_webhook(&w).await?;
        Ok(w)
    }

    /// The account's subscriptions (sak only).
    pub async fn list(&self, caller: &Caller) -> Result<Vec<WebhookRecord>, ServiceError> {
        self.secret_only(caller)?;
        Ok(self.ctx.store.webhooks(&caller.account_id).await?)
    }

    async fn own(&self, caller: &Caller, id: &str) -> Result<WebhookRecord, ServiceError> {
        self.secret_only(caller)?;
        let not_found = || ServiceError::NotFound(format!("Webhook not found: {id}"));
        let id = WebhookId::parse(id).map_err(|_| not_found())?;
        match self.ctx.store.webhook(&id).await? {
            Some(w) if w.account_id == caller.account_id && w.active => Ok(w),
            _ => Err(not_found()),
        }
    }

    /// Unsubscribes; pending deliveries stop.
    pub async fn delete(&self, caller: &Caller, id: &str) -> Result<WebhookRecord, ServiceError> {
        let w = self.own(caller, id).await?;
        self.ctx
            .store
            .delete_webhook(&caller.account_id, &w.id, now_secs())
            .await?;
        Ok(w)
    }

    /// The delivery log of a subscription, newest first.
    pub async fn deliveries(
        &self,
        caller: &Caller,
        id: &str,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<DeliveryLog>, u64), ServiceError> {
        let w = self.own(caller, id).await?;
        let (list, total) = self.ctx.store.deliveries(&w.id, offset, limit).await?;
        let mut out = Vec::with_capacity(list.len());
        for (delivery, event) in list {
            let attempts = self.ctx.store.attempts(&delivery.id).await?;
            out.push(DeliveryLog {
                delivery,
                event,
                attempts,
            });
        }
        Ok((out, total))
    }

    /// Sends a delivery's event again (as a new delivery).
    pub async fn redeliver(
        &self,
        caller: &Caller,
        delivery: &str,
    ) -> Result<DeliveryLog, ServiceError> {
        self.secret_only(caller)?;
        let not_found = || ServiceError::NotFound(format!("Delivery not found: {delivery}"));
        let id = DeliveryId::parse(delivery).map_err(|_| not_found())?;
        match self.ctx.store.delivery(&id).await? {
            Some((_, account)) if account == caller.account_id => {}
            _ => return Err(not_found()),
        }
        let d = self
            .ctx
            .store
            .redeliver(&id, now_secs())
            .await?
            .ok_or_else(not_found)?;
        let event = self
            .ctx
            .store
            .event(&d.event_id)
            .await?
            .map(|e| e.name)
            .ok_or_else(|| ServiceError::Internal("delivery without event".into()))?;
        Ok(DeliveryLog {
            delivery: d,
            event,
            attempts: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_schedule_backs_off_and_stops_after_a_day() {
        let t0 = 1_000_000;
        let p = RetryPolicy::default();
        assert_eq!(p.next_attempt_at(t0, 1, t0), Some(t0 + 10));
        assert_eq!(p.next_attempt_at(t0, 2, t0 + 10), Some(t0 + 30));
        assert_eq!(p.next_attempt_at(t0, 12, t0 + 100), Some(t0 + 100 + 3600));
        assert_eq!(p.next_attempt_at(t0, 30, t0 + 24 * 3600 - 5), None);
    }

    #[test]
    fn private_addresses() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.4",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private(a.parse().unwrap()), "{a}");
        }
        for a in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(!is_private(a.parse().unwrap()), "{a}");
        }
    }

    #[tokio::test]
    async fn targets() {
        assert!(check_target("http://127.0.0.1:9/x", false).await.is_err());
        assert!(check_target("http://127.0.0.1:9/x", true).await.is_ok());
        assert!(check_target("http://localhost/x", false).await.is_err());
        assert!(check_target("ftp://example.com", true).await.is_err());
        assert!(check_target("http://[::1]:8080/", false).await.is_err());
        assert!(check_target("http://user@10.0.0.1/", false).await.is_err());
        assert!(check_target("not a url", true).await.is_err());
    }
}
