//! Webhook subscriptions (LNPay only offered them in its dashboard; Satchel has an API) and the
//! rules deliveries follow: retry schedule and target-address policy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use satchel_domain::{AccountId, DeliveryId, EventName, WebhookId, now_secs};
use satchel_outbound::{AddressPolicy, Target};
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

/// Checks a webhook URL at subscription: parsed with the delivering client's parser, and every
/// address it names or resolves to is public (unless `allow_private`). Returns the normalized URL
/// to store. Delivery checks the addresses again when it connects (DNS may change meanwhile).
pub async fn check_target(url: &str, allow_private: bool) -> Result<Target, ServiceError> {
    let target =
        Target::parse(url).map_err(|e| ServiceError::Invalid(format!("endpoint_url {e}")))?;
    AddressPolicy::new(allow_private)
        .resolve(&target)
        .await
        .map_err(|e| ServiceError::Invalid(format!("endpoint_url refused: {e}")))?;
    Ok(target)
}

/// Per-account limit on redelivery requests: each one is another outbound request and another
/// delivery row, so an unthrottled loop could flood a receiver or the database.
///
/// A generic cell rate algorithm: `per_minute` requests in a burst, then one every
/// `60 s / per_minute`. In memory, per process (a restart or a second process starts afresh).
pub struct RedeliveryLimiter {
    interval: Duration,
    burst: Duration,
    /// Per account: when its bucket is full again ("theoretical arrival time").
    next_free: Mutex<HashMap<AccountId, Instant>>,
}

/// Accounts tracked before idle ones (full buckets) are forgotten.
const LIMITER_PRUNE_AT: usize = 10_000;

impl RedeliveryLimiter {
    /// `per_minute` redeliveries per account per minute (at least 1).
    pub fn new(per_minute: u32) -> RedeliveryLimiter {
        let per_minute = per_minute.max(1);
        let interval = Duration::from_secs(60) / per_minute;
        RedeliveryLimiter {
            interval,
            burst: interval * (per_minute - 1),
            next_free: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request for `account` at `now`, or says how long until one is allowed.
    pub fn take(&self, account: &AccountId, now: Instant) -> Result<(), Duration> {
        let mut map = self.next_free.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= LIMITER_PRUNE_AT {
            map.retain(|_, t| *t > now);
        }
        let tat = map.get(account).copied().unwrap_or(now).max(now);
        let ahead = tat.saturating_duration_since(now);
        if ahead > self.burst {
            return Err(ahead.saturating_sub(self.burst));
        }
        map.insert(account.clone(), tat + self.interval);
        Ok(())
    }
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
    redeliveries: Arc<RedeliveryLimiter>,
}

impl WebhookService {
    pub(crate) fn new(ctx: Arc<Ctx>) -> WebhookService {
        let redeliveries = Arc::new(RedeliveryLimiter::new(
            ctx.cfg.webhook_redeliveries_per_minute,
        ));
        WebhookService { ctx, redeliveries }
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
        if url.len() > satchel_outbound::MAX_URL_LEN {
            return Err(ServiceError::Invalid("Endpoint Url is too long.".into()));
        }
        let target = check_target(&url, self.ctx.cfg.allow_private_webhook_targets).await?;
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
            // Normalized: what delivery parses back is exactly what was checked.
            endpoint_url: target.as_str().to_owned(),
            events,
            secret,
            active: true,
            created_at: now_secs(),
        };
        let max = self.ctx.cfg.webhook_max_per_account;
        if !self.ctx.store.create_webhook(&w, u64::from(max)).await? {
            return Err(ServiceError::Invalid(format!(
                "Webhook limit reached: an account can have at most {max} webhooks. Delete one first."
            )));
        }
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
        self.redeliveries
            .take(&caller.account_id, Instant::now())
            .map_err(|wait| ServiceError::RateLimited {
                // Rounded up: retrying after exactly this many seconds succeeds.
                retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            })?;
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

    #[tokio::test]
    async fn targets() {
        assert!(check_target("http://127.0.0.1:9/x", false).await.is_err());
        assert!(
            check_target("http://127.0.0.1:9\\@8.8.8.8/", false)
                .await
                .is_err()
        );
        assert!(check_target("http://0x7f.1/", false).await.is_err());
        assert!(
            check_target("http://[::ffff:127.0.0.1]/", false)
                .await
                .is_err()
        );
        assert_eq!(
            check_target("http://8.8.8.8:80/a#b", false)
                .await
                .map(|t| t.as_str().to_owned())
                .ok()
                .as_deref(),
            Some("http://8.8.8.8/a")
        );
        assert!(check_target("http://127.0.0.1:9/x", true).await.is_ok());
        assert!(check_target("http://localhost/x", false).await.is_err());
        assert!(check_target("ftp://example.com", true).await.is_err());
        assert!(check_target("http://[::1]:8080/", false).await.is_err());
        assert!(check_target("http://user@10.0.0.1/", false).await.is_err());
        assert!(check_target("not a url", true).await.is_err());
        assert!(check_target("http://u:p@127.0.0.1/", true).await.is_err());
    }

    #[test]
    fn redelivery_limiter_allows_a_burst_then_one_per_interval() {
        let l = RedeliveryLimiter::new(3);
        let a = AccountId::from_db("acct_a".to_owned());
        let b = AccountId::from_db("acct_b".to_owned());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.take(&a, t0), Ok(()));
        }
        // Burst used: the next one is 20 s away (60 s / 3).
        assert_eq!(l.take(&a, t0), Err(Duration::from_secs(20)));
        assert_eq!(
            l.take(&a, t0 + Duration::from_secs(5)),
            Err(Duration::from_secs(15))
        );
        // Other accounts are not affected.
        assert_eq!(l.take(&b, t0), Ok(()));
        assert_eq!(l.take(&a, t0 + Duration::from_secs(20)), Ok(()));
        assert!(l.take(&a, t0 + Duration::from_secs(20)).is_err());
        // After a quiet minute the whole burst is back.
        let later = t0 + Duration::from_secs(120);
        for _ in 0..3 {
            assert_eq!(l.take(&a, later), Ok(()));
        }
        assert!(l.take(&a, later).is_err());
    }
}
