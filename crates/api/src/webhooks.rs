//! Webhook delivery: renders outbox events in LNPay's payload shape and POSTs them.
//!
//! Body `{id: evt_…, created_at, event: {type, name, display_name}, data: {wtx|wal}}`; headers
//! `X-LNPay-Event`, `X-LNPay-HookId` (one per HTTP request), `User-Agent: LNPay-HookBot`,
//! `X-Request-Id` (the API request that caused the event, else the event id) and, with a
//! secret, `X-LNPay-Signature` = lowercase hex HMAC-SHA256 of the raw body.
//!
//! At least once: a delivery is leased, attempted, then marked delivered or rescheduled with
//! exponential backoff for up to 24 hours, then dead. Each attempt runs in its own task with a
//! timeout; at most a few requests per webhook are in flight, so one slow or dead receiver never
//! holds up the others (and never a payment: delivery is entirely off the payment path).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use satchel_domain::{AttemptId, WebhookId, now_secs};
use satchel_outbound::{AddressPolicy, Limits, OutboundClient, OutboundError, Target};
use satchel_service::ServiceError;
use satchel_service::outbox::{EventSubject, Outbox};
use satchel_service::records::{AttemptOutcome, AttemptRecord, DueDelivery, EventRecord};
use satchel_service::webhooks::RetryPolicy;
use serde::Serialize;
use serde_json::value::RawValue;
use sha2::Sha256;
use tokio::sync::Semaphore;
use tracing::Instrument as _;

use crate::dto::{LnTxDto, WalletDto, WtxDto};

/// `User-Agent` of deliveries (what LNPay sent; receivers may filter on it).
pub const USER_AGENT: &str = "LNPay-HookBot";

/// Counter: webhook delivery attempts, by `outcome`: `delivered` (2xx), `retry` (will be tried
/// again) or `dead` (given up). Metric name.
pub const DELIVERIES_TOTAL: &str = "satchel_webhook_deliveries_total";

#[derive(Serialize)]
struct EventMeta {
    r#type: &'static str,
    name: &'static str,
    display_name: &'static str,
}

#[derive(Serialize)]
struct Envelope<D: Serialize> {
    id: String,
    created_at: i64,
    event: EventMeta,
    data: D,
}

#[derive(Serialize)]
struct WalData {
    wal: WalletDto,
}

#[derive(Serialize)]
struct WtxData {
    wtx: WtxDto,
}

#[derive(Serialize)]
#[allow(non_snake_case)]
struct SendFailureData {
    spontaneous: i64,
    wal: WalletDto,
    failureReason: String,
    passThru: Box<RawValue>,
    lnTx: LnTxDto,
}

fn unrenderable(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Internal(e.to_string())
}

/// Renders an event's JSON body. `wal.balance` is the balance right after the change.
pub async fn render(outbox: &Outbox, e: &EventRecord) -> Result<String, ServiceError> {
    let meta = EventMeta {
        r#type: e.name.kind(),
        name: e.name.name(),
        display_name: e.name.display_name(),
    };
    let id = e.id.to_string();
    let created_at = e.created_at;
    let text = match outbox.subject(e).await? {
        EventSubject::Wallet(w) => serde_json::to_string(&Envelope {
            id,
            created_at,
            event: meta,
            data: WalData {
                wal: WalletDto::from(&w),
            },
        }),
        EventSubject::SendFailure { lntx: l, wallet: w } => {
            let pass_thru = RawValue::from_string(l.pass_thru.clone()).map_err(unrenderable)?;
            serde_json::to_string(&Envelope {
                id,
                created_at,
                event: meta,
                data: SendFailureData {
                    spontaneous: i64::from(l.is_keysend),
                    wal: WalletDto::from(&w),
                    failureReason: l.failure_reason.clone().unwrap_or_default(),
                    passThru: pass_thru,
                    lnTx: LnTxDto::nested(&l),
                },
            })
        }
        EventSubject::Wtx(wtx) => serde_json::to_string(&Envelope {
            id,
            created_at,
            event: meta,
            data: WtxData {
                wtx: WtxDto::from(&wtx),
            },
        }),
    };
    text.map_err(unrenderable)
}

/// What a delivery sends as `X-Request-Id`: the API request that caused the event, else the
/// event's own id.
fn request_id_of(e: &EventRecord) -> &str {
    e.request_id.as_ref().map_or(e.id.as_str(), |r| r.as_str())
}

/// Lowercase hex HMAC-SHA256 of `body` under `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length; new_from_slice cannot fail for Hmac<Sha256>.
    match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(body);
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// Characters of a receiver's answer kept in the delivery log (`response_excerpt`).
pub const EXCERPT_CHARS: usize = 256;

/// Bytes of a receiver's answer read at most; the rest is never read. Enough for
/// [`EXCERPT_CHARS`] characters of any UTF-8.
const RESPONSE_READ_BYTES: usize = EXCERPT_CHARS * 4;

/// The start of a receiver's answer, as the delivery log shows it.
fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .chars()
        .take(EXCERPT_CHARS)
        .collect()
}

/// Delivery settings.
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// Allow loopback/private targets.
    pub allow_private: bool,
    /// Webhooks being delivered to at once (one request in flight per webhook).
    pub concurrency: usize,
    /// Per-request timeout.
    pub timeout: Duration,
    /// How often to look for due deliveries.
    pub poll: Duration,
    /// Retry schedule.
    pub retry: RetryPolicy,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        DispatcherConfig {
            allow_private: false,
            concurrency: 32,
            timeout: Duration::from_secs(10),
            poll: Duration::from_millis(250),
            retry: RetryPolicy::default(),
        }
    }
}

/// The webhook delivery worker.
pub struct Dispatcher {
    outbox: Outbox,
    http: OutboundClient,
    cfg: DispatcherConfig,
    permits: Arc<Semaphore>,
    busy: Mutex<HashMap<WebhookId, usize>>,
}

/// Lease on a claimed delivery: longer than any request may take.
const LEASE_SECS: i64 = 120;

impl Dispatcher {
    /// A dispatcher over the `outbox`.
    pub fn new(outbox: Outbox, cfg: DispatcherConfig) -> Result<Arc<Dispatcher>, OutboundError> {
        let http = OutboundClient::new(
            AddressPolicy::new(cfg.allow_private),
            Limits {
                timeout: cfg.timeout,
                connect_timeout: cfg.timeout,
                max_response_bytes: RESPONSE_READ_BYTES,
            },
            USER_AGENT,
        )?;
        let permits = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
        Ok(Arc::new(Dispatcher {
            outbox,
            http,
            cfg,
            permits,
            busy: Mutex::new(HashMap::new()),
        }))
    }

    /// Claims due deliveries and starts them; returns how many were started. Deliveries of one
    /// webhook run one after another in event order (one task per webhook); different webhooks
    /// run in parallel, so a slow receiver only delays itself.
    pub async fn tick(self: &Arc<Self>) -> Result<usize, ServiceError> {
        let available = self.permits.available_permits();
        if available == 0 {
            return Ok(0);
        }
        let busy: Vec<WebhookId> = {
            let b = self.busy.lock().unwrap_or_else(|e| e.into_inner());
            b.keys().cloned().collect()
        };
        let due = self
            .outbox
            .claim_due_deliveries(
                now_secs(),
                u64::try_from(available).unwrap_or(1),
                LEASE_SECS,
                &busy,
            )
            .await?;
        let n = due.len();
        let mut by_hook: Vec<(WebhookId, Vec<DueDelivery>)> = Vec::new();
        for d in due {
            match by_hook.iter_mut().find(|(h, _)| *h == d.webhook.id) {
                Some((_, list)) => list.push(d),
                None => by_hook.push((d.webhook.id.clone(), vec![d])),
            }
        }
        for (hook, list) in by_hook {
            let Ok(permit) = self.permits.clone().acquire_owned().await else {
                break;
            };
            self.busy
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(hook.clone(), 1);
            let this = self.clone();
            tokio::spawn(async move {
                for d in list {
                    // Its log lines name the request that caused the event (else the event).
                    let span = tracing::info_span!(
                        "webhook",
                        request_id = %request_id_of(&d.event),
                        delivery = %d.delivery.id
                    );
                    this.deliver(d).instrument(span).await;
                }
                this.busy
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&hook);
                drop(permit);
            });
        }
        Ok(n)
    }

    /// Runs until `shutdown` flips.
    pub async fn run(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            let started = match self.tick().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = %e, "webhook dispatcher: claiming deliveries failed");
                    0
                }
            };
            if started == 0 {
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = tokio::time::sleep(self.cfg.poll) => {}
                }
            } else if *shutdown.borrow() {
                return;
            }
        }
    }

    async fn deliver(&self, d: DueDelivery) {
        let body = match &d.event.body {
            Some(b) => Ok(b.clone()),
            None => match render(&self.outbox, &d.event).await {
                Ok(b) => self.outbox.freeze_body(&d.event.id, &b).await,
                Err(e) => Err(e),
            },
        };
        let attempt_id = AttemptId::generate();
        let started = Instant::now();
        let at = now_secs();
        let (status_code, error, excerpt) = match body {
            Err(e) => (None, Some(format!("cannot render event: {e}")), None),
            Ok(body) => self.post(&d, &attempt_id, body).await,
        };
        let ok = status_code.is_some_and(|s| (200..300).contains(&s));
        let attempts = d.delivery.attempts.saturating_add(1);
        let outcome = if ok {
            AttemptOutcome::Delivered
        } else {
            match self
                .cfg
                .retry
                .next_attempt_at(d.delivery.created_at, attempts, at)
            {
                Some(t) => AttemptOutcome::Retry(t),
                None => AttemptOutcome::Dead,
            }
        };
        if !ok {
            tracing::warn!(delivery = %d.delivery.id, status = ?status_code, error = ?error, ?outcome, "webhook delivery failed");
        }
        let label = match outcome {
            AttemptOutcome::Delivered => "delivered",
            AttemptOutcome::Retry(_) => "retry",
            AttemptOutcome::Dead => "dead",
        };
        metrics::counter!(DELIVERIES_TOTAL, "outcome" => label).increment(1);
        let rec = AttemptRecord {
            id: attempt_id,
            delivery_id: d.delivery.id.clone(),
            at,
            duration_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
            status_code,
            error,
            response_excerpt: excerpt,
        };
        if let Err(e) = self.outbox.finish_attempt(&rec, outcome).await {
            tracing::error!(delivery = %d.delivery.id, error = %e, "could not record webhook attempt; it will be retried");
        }
    }

    async fn post(
        &self,
        d: &DueDelivery,
        attempt: &AttemptId,
        body: String,
    ) -> (Option<i64>, Option<String>, Option<String>) {
        // Parsed again from what was stored (normalized at subscription; older rows get the
        // same checks now), and sent to exactly this URL.
        let target = match Target::parse(&d.webhook.endpoint_url) {
            Ok(t) => t,
            Err(e) => return (None, Some(format!("endpoint_url {e}")), None),
        };
        let signature = d
            .webhook
            .secret
            .as_ref()
            .map(|secret| sign(secret, body.as_bytes()));
        let request_id = request_id_of(&d.event);
        let mut headers = vec![
            ("Content-Type", "application/json"),
            ("X-LNPay-Event", d.event.name.name()),
            ("X-LNPay-HookId", attempt.as_str()),
            ("X-Request-Id", request_id),
        ];
        if let Some(sig) = &signature {
            headers.push(("X-LNPay-Signature", sig.as_str()));
        }
        match self.http.post(&target, &headers, body.into_bytes()).await {
            Ok(reply) => (
                Some(i64::from(reply.status)),
                None,
                Some(excerpt(&reply.body)),
            ),
            Err(e) => (None, Some(e.to_string()), None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_lowercase_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn excerpt_is_bounded_in_characters() {
        assert_eq!(excerpt(b"ok"), "ok");
        let long = "\u{e9}".repeat(RESPONSE_READ_BYTES);
        let e = excerpt(&long.as_bytes()[..RESPONSE_READ_BYTES]);
        assert_eq!(e.chars().count(), EXCERPT_CHARS);
        // A multi-byte character cut at the read limit does not break it.
        assert_eq!(excerpt(&[b'a', 0xc3]), "a\u{fffd}");
    }
}
