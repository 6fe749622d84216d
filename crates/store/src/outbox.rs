//! Webhook subscriptions and the event outbox.
//!
//! An event row — and one delivery row per subscribed webhook — is written by [`emit`] inside the
//! same transaction as the ledger change it reports, so an event exists if and only if the change
//! committed. Deliveries are then claimed with a lease (`next_attempt_at` pushed forward), so a
//! crash mid-delivery only means the lease expires and the delivery is tried again: at least once.

use satchel_domain::{
    AccountId, AttemptId, DeliveryId, EventId, EventName, LnTxId, RequestId, WalletId, WebhookId,
    WtxId,
};

use crate::db::{Conn, Row};
use crate::{Store, StoreError, args};

/// Subscribes to every current and future event.
pub const DEFAULT_ALL: &str = "default_all";

/// A webhook subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRecord {
    /// Id (`iwh_…`).
    pub id: WebhookId,
    /// Owner.
    pub account_id: AccountId,
    /// Where to POST.
    pub endpoint_url: String,
    /// Event names, or `["default_all"]`.
    pub events: Vec<String>,
    /// HMAC-SHA256 key for `X-LNPay-Signature`.
    pub secret: Option<String>,
    /// Deleted subscriptions are inactive.
    pub active: bool,
    /// Unix seconds.
    pub created_at: i64,
}

impl WebhookRecord {
    /// Whether this subscription receives `e`.
    pub fn wants(&self, e: EventName) -> bool {
        self.active
            && self
                .events
                .iter()
                .any(|n| n == DEFAULT_ALL || n == e.name())
    }
}

const WEBHOOK_COLS: &str = "id, account_id, endpoint_url, events, secret, active, created_at";

fn webhook_row(r: &Row, o: usize) -> Result<WebhookRecord, StoreError> {
    let events: Vec<String> = serde_json::from_str(&r.text(o + 3)?)
        .map_err(|e| StoreError::Corrupt(format!("webhook events: {e}")))?;
    Ok(WebhookRecord {
        id: WebhookId::from_db(r.text(o)?),
        account_id: AccountId::from_db(r.text(o + 1)?),
        endpoint_url: r.text(o + 2)?,
        events,
        secret: r.opt_text(o + 4)?,
        active: r.flag(o + 5)?,
        created_at: r.i64(o + 6)?,
    })
}

/// An event in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// Id (`evt_…`).
    pub id: EventId,
    /// Owner.
    pub account_id: AccountId,
    /// Which event.
    pub name: EventName,
    /// Unix seconds.
    pub created_at: i64,
    /// Wallet concerned.
    pub wallet_id: Option<WalletId>,
    /// WTX reported, if any.
    pub wtx_id: Option<WtxId>,
    /// lnTx reported, if any.
    pub lntx_id: Option<LnTxId>,
    /// The wallet's balance right after the change (msat), as the payload shows it.
    pub balance_msat: Option<i64>,
    /// The rendered JSON body, frozen at first delivery so retries are byte-identical.
    pub body: Option<String>,
    /// The API request that caused the event, if one did (its `X-Request-Id`); deliveries
    /// send it as `X-Request-Id`, or the event id when there is none.
    pub request_id: Option<RequestId>,
}

pub(crate) const EVENT_COLS: &str =
    "id, account_id, name, created_at, wallet_id, wtx_id, lntx_id, balance_msat, body, request_id";

pub(crate) fn event_row(r: &Row, o: usize) -> Result<EventRecord, StoreError> {
    let name = r.text(o + 2)?;
    Ok(EventRecord {
        id: EventId::from_db(r.text(o)?),
        account_id: AccountId::from_db(r.text(o + 1)?),
        name: EventName::from_name(&name)
            .ok_or_else(|| StoreError::Corrupt(format!("event {name}")))?,
        created_at: r.i64(o + 3)?,
        wallet_id: r.opt_text(o + 4)?.map(WalletId::from_db),
        wtx_id: r.opt_text(o + 5)?.map(WtxId::from_db),
        lntx_id: r.opt_text(o + 6)?.map(LnTxId::from_db),
        balance_msat: r.opt_i64(o + 7)?,
        body: r.opt_text(o + 8)?,
        request_id: r.opt_text(o + 9)?.as_deref().and_then(RequestId::from_db),
    })
}

/// State of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Not delivered yet; will be (re)tried at `next_attempt_at`.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Gave up (24 h of retries, or the webhook was deleted).
    Dead,
}

impl DeliveryStatus {
    fn code(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Dead => "dead",
        }
    }
    fn from_code(s: &str) -> Option<DeliveryStatus> {
        Some(match s {
            "pending" => DeliveryStatus::Pending,
            "delivered" => DeliveryStatus::Delivered,
            "dead" => DeliveryStatus::Dead,
            _ => return None,
        })
    }
    /// Wire name.
    pub fn name(self) -> &'static str {
        self.code()
    }
}

/// One event to one webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    /// Id (`iwhd_…`).
    pub id: DeliveryId,
    /// Event.
    pub event_id: EventId,
    /// Webhook.
    pub webhook_id: WebhookId,
    /// State.
    pub status: DeliveryStatus,
    /// HTTP requests made so far.
    pub attempts: i64,
    /// When it is due (or when its lease ends).
    pub next_attempt_at: i64,
    /// Unix seconds (start of its retry window).
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// Last HTTP status received.
    pub last_status: Option<i64>,
    /// Last transport error.
    pub last_error: Option<String>,
}

const DELIVERY_COLS: &str = "d.id, d.event_id, d.webhook_id, d.status, d.attempts, d.next_attempt_at, \
    d.created_at, d.updated_at, d.last_status, d.last_error";

fn delivery_row(r: &Row, o: usize) -> Result<DeliveryRecord, StoreError> {
    let status = r.text(o + 3)?;
    Ok(DeliveryRecord {
        id: DeliveryId::from_db(r.text(o)?),
        event_id: EventId::from_db(r.text(o + 1)?),
        webhook_id: WebhookId::from_db(r.text(o + 2)?),
        status: DeliveryStatus::from_code(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("delivery {status}")))?,
        attempts: r.i64(o + 4)?,
        next_attempt_at: r.i64(o + 5)?,
        created_at: r.i64(o + 6)?,
        updated_at: r.i64(o + 7)?,
        last_status: r.opt_i64(o + 8)?,
        last_error: r.opt_text(o + 9)?,
    })
}

/// One HTTP request of a delivery (the delivery log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    /// Id (`iwhr_…`), sent as `X-LNPay-HookId`.
    pub id: AttemptId,
    /// Delivery.
    pub delivery_id: DeliveryId,
    /// Unix seconds.
    pub at: i64,
    /// How long the request took.
    pub duration_ms: i64,
    /// HTTP status, if the receiver answered.
    pub status_code: Option<i64>,
    /// Transport error, if it did not.
    pub error: Option<String>,
    /// First bytes of the response body.
    pub response_excerpt: Option<String>,
}

/// A delivery claimed for an attempt, with what is needed to make it.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    /// The delivery.
    pub delivery: DeliveryRecord,
    /// Its webhook.
    pub webhook: WebhookRecord,
    /// Its event.
    pub event: EventRecord,
}

/// What an attempt leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// 2xx: done.
    Delivered,
    /// Try again at this unix second.
    Retry(i64),
    /// Give up.
    Dead,
}

/// An event to record inside the caller's transaction.
pub(crate) struct Emit<'a> {
    pub name: EventName,
    pub account_id: &'a str,
    pub wallet_id: &'a WalletId,
    pub wtx_id: Option<&'a WtxId>,
    pub lntx_id: Option<&'a LnTxId>,
    pub now: i64,
    /// The wallet's balance as this transaction leaves it, when the caller already has it
    /// (the ledger does); otherwise it is read.
    pub balance_msat: Option<i64>,
}

/// Writes an event, and a delivery for each active webhook of the account that wants it,
/// inside the caller's write transaction.
pub(crate) async fn emit(conn: &mut Conn, e: Emit<'_>) -> Result<(), StoreError> {
    let hooks = active_hooks(conn, e.account_id).await?;
    emit_to(conn, &hooks, e).await
}

/// The account's active subscriptions, as [`emit_to`] takes them.
pub(crate) async fn active_hooks(
    conn: &mut Conn,
    account_id: &str,
) -> Result<Vec<WebhookRecord>, StoreError> {
    let sql = format!("SELECT {WEBHOOK_COLS} FROM webhooks WHERE account_id = $1 AND active = 1");
    conn.fetch_all(&sql, args![account_id])
        .await?
        .iter()
        .map(|r| webhook_row(r, 0))
        .collect()
}

/// [`emit`] with the account's active subscriptions already read.
pub(crate) async fn emit_to(
    conn: &mut Conn,
    hooks: &[WebhookRecord],
    e: Emit<'_>,
) -> Result<(), StoreError> {
    emit_all(conn, &[(e, hooks)]).await
}

/// Writes several events (each with the subscriptions of its account) in one statement, and
/// their deliveries. Every event is recorded, whether or not a webhook wants it: the wallet's
/// live event stream (SSE) reads and resumes from the outbox. One multi-row insert keeps that
/// to one round trip per ledger transaction on Postgres.
pub(crate) async fn emit_all(
    conn: &mut Conn,
    items: &[(Emit<'_>, &[WebhookRecord])],
) -> Result<(), StoreError> {
    if items.is_empty() {
        return Ok(());
    }
    let request_id = crate::request_id::current();
    let mut sql = String::from(
        "INSERT INTO events (id, account_id, name, created_at, wallet_id, wtx_id, lntx_id, \
         balance_msat, request_id) VALUES ",
    );
    let mut values = Vec::with_capacity(items.len() * 9);
    let mut ids = Vec::with_capacity(items.len());
    for (i, (e, _)) in items.iter().enumerate() {
        let balance = match e.balance_msat {
            Some(b) => Some(b),
            None => conn
                .fetch_opt(
                    "SELECT balance_msat FROM wallets WHERE id = $1",
                    args![e.wallet_id.as_str()],
                )
                .await?
                .map(|r| r.i64(0))
                .transpose()?,
        };
        let id = EventId::generate();
        if i > 0 {
            sql.push_str(", ");
        }
        let n = values.len();
        sql.push('(');
        for c in 1..=9 {
            if c > 1 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", n + c));
        }
        sql.push(')');
        values.extend(args![
            id.as_str(),
            e.account_id,
            e.name.name(),
            e.now,
            e.wallet_id.as_str(),
            e.wtx_id.map(WtxId::as_str),
            e.lntx_id.map(LnTxId::as_str),
            balance,
            request_id.as_ref().map(RequestId::as_str)
        ]);
        ids.push(id);
    }
    conn.exec(&sql, values).await?;
    for ((e, hooks), id) in items.iter().zip(&ids) {
        crate::events::note(conn, e.wallet_id.as_str());
        for h in hooks.iter().filter(|h| h.wants(e.name)) {
            insert_delivery(conn, id, &h.id, e.now).await?;
        }
    }
    Ok(())
}

async fn insert_delivery(
    conn: &mut Conn,
    event: &EventId,
    hook: &WebhookId,
    now: i64,
) -> Result<DeliveryId, StoreError> {
    let id = DeliveryId::generate();
    conn.exec(
        "INSERT INTO deliveries (id, event_id, webhook_id, status, attempts, next_attempt_at, created_at, updated_at) \
         VALUES ($1, $2, $3, 'pending', 0, $4, $4, $4)",
        args![id.as_str(), event.as_str(), hook.as_str(), now],
    )
    .await?;
    Ok(id)
}

impl Store {
    /// Records a subscription unless the account already has `max_active` active ones; returns
    /// whether it was written. The count and the insert are one transaction, serialised per
    /// account (SQLite's single writer; on Postgres a lock on the account's row), so concurrent
    /// requests cannot overshoot the cap.
    pub async fn create_webhook(
        &self,
        w: &WebhookRecord,
        max_active: u64,
    ) -> Result<bool, StoreError> {
        let events =
            serde_json::to_string(&w.events).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut tx = self.begin_write().await?;
        let lock = tx.dialect().for_update();
        tx.fetch_opt(
            &format!("SELECT id FROM accounts WHERE id = $1{lock}"),
            args![w.account_id.as_str()],
        )
        .await?;
        let active = tx
            .fetch_one(
                "SELECT COUNT(*) FROM webhooks WHERE account_id = $1 AND active = 1",
                args![w.account_id.as_str()],
            )
            .await?
            .i64(0)?;
        if u64::try_from(active).unwrap_or(u64::MAX) >= max_active {
            tx.commit().await?;
            return Ok(false);
        }
        tx.exec(
            &format!("INSERT INTO webhooks ({WEBHOOK_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"),
            args![
                w.id.as_str(),
                w.account_id.as_str(),
                w.endpoint_url.as_str(),
                events,
                w.secret.clone(),
                w.active,
                w.created_at
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// An account's active subscriptions.
    pub async fn webhooks(&self, account: &AccountId) -> Result<Vec<WebhookRecord>, StoreError> {
        let mut c = self.read_conn().await?;
        let sql = format!(
            "SELECT {WEBHOOK_COLS} FROM webhooks WHERE account_id = $1 AND active = 1 ORDER BY created_at, id"
        );
        c.fetch_all(&sql, args![account.as_str()])
            .await?
            .iter()
            .map(|r| webhook_row(r, 0))
            .collect()
    }

    /// A subscription by id (active or not).
    pub async fn webhook(&self, id: &WebhookId) -> Result<Option<WebhookRecord>, StoreError> {
        let mut c = self.read_conn().await?;
        let sql = format!("SELECT {WEBHOOK_COLS} FROM webhooks WHERE id = $1");
        c.fetch_opt(&sql, args![id.as_str()])
            .await?
            .map(|r| webhook_row(&r, 0))
            .transpose()
    }

    /// Deactivates a subscription; its pending deliveries die. Returns false if not found.
    pub async fn delete_webhook(
        &self,
        account: &AccountId,
        id: &WebhookId,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let n = tx
            .exec(
                "UPDATE webhooks SET active = 0 WHERE id = $1 AND account_id = $2 AND active = 1",
                args![id.as_str(), account.as_str()],
            )
            .await?;
        if n == 1 {
            tx.exec(
                "UPDATE deliveries SET status = 'dead', last_error = 'webhook deleted', updated_at = $1 \
                 WHERE webhook_id = $2 AND status = 'pending'",
                args![now, id.as_str()],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Claims up to `limit` due deliveries, leasing each for `lease_secs` so no other worker
    /// (in this or another process) takes it meanwhile.
    pub async fn claim_due_deliveries(
        &self,
        now: i64,
        limit: u64,
        lease_secs: i64,
        exclude: &[WebhookId],
    ) -> Result<Vec<DueDelivery>, StoreError> {
        // Polled several times a second: when nothing is due, answer from a read so an idle
        // server makes no write transaction (on SQLite each one is a WAL flush).
        if !self.any_delivery_due(now).await? {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        let skip_locked = match tx.dialect() {
            crate::Dialect::Postgres => " FOR UPDATE OF d SKIP LOCKED",
            crate::Dialect::Sqlite => "",
        };
        // Webhooks already at their in-flight limit are skipped so their backlog cannot crowd
        // out other receivers.
        let mut args = args![now, i64::try_from(limit).unwrap_or(i64::MAX)];
        let mut not_in = String::new();
        for (i, w) in exclude.iter().enumerate() {
            not_in.push_str(if i == 0 {
                " AND d.webhook_id NOT IN ("
            } else {
                ", "
            });
            not_in.push_str(&format!("${}", i + 3));
            args.push(crate::db::Arg::Text(w.to_string()));
        }
        if !exclude.is_empty() {
            not_in.push(')');
        }
        // Oldest events first, so a webhook normally sees events in the order they happened.
        let sql = format!(
            "SELECT {DELIVERY_COLS} FROM deliveries d JOIN events e ON e.id = d.event_id \
             WHERE d.status = 'pending' AND d.next_attempt_at <= $1{not_in} \
             ORDER BY d.next_attempt_at, e.seq LIMIT $2{skip_locked}"
        );
        let rows = tx.fetch_all(&sql, args).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let d = delivery_row(&r, 0)?;
            tx.exec(
                "UPDATE deliveries SET next_attempt_at = $1 WHERE id = $2",
                args![now.saturating_add(lease_secs), d.id.as_str()],
            )
            .await?;
            let w = tx
                .fetch_one(
                    &format!("SELECT {WEBHOOK_COLS} FROM webhooks WHERE id = $1"),
                    args![d.webhook_id.as_str()],
                )
                .await?;
            let e = tx
                .fetch_one(
                    &format!("SELECT {EVENT_COLS} FROM events WHERE id = $1"),
                    args![d.event_id.as_str()],
                )
                .await?;
            out.push(DueDelivery {
                delivery: d,
                webhook: webhook_row(&w, 0)?,
                event: event_row(&e, 0)?,
            });
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Whether any delivery is due at `now` (a read; [`Store::claim_due_deliveries`] decides).
    async fn any_delivery_due(&self, now: i64) -> Result<bool, StoreError> {
        let mut c = self.read_conn().await?;
        Ok(c.fetch_opt(
            "SELECT 1 FROM deliveries WHERE status = 'pending' AND next_attempt_at <= $1 LIMIT 1",
            args![now],
        )
        .await?
        .is_some())
    }

    /// Freezes an event's rendered body (first writer wins) and returns the stored one.
    pub async fn set_event_body(&self, id: &EventId, body: &str) -> Result<String, StoreError> {
        let mut tx = self.begin_write().await?;
        tx.exec(
            "UPDATE events SET body = $1 WHERE id = $2 AND body IS NULL",
            args![body, id.as_str()],
        )
        .await?;
        let stored = tx
            .fetch_one("SELECT body FROM events WHERE id = $1", args![id.as_str()])
            .await?
            .text(0)?;
        tx.commit().await?;
        Ok(stored)
    }

    /// Logs an attempt and moves its delivery on. A delivery that was already delivered or
    /// killed meanwhile keeps that state.
    pub async fn finish_attempt(
        &self,
        a: &AttemptRecord,
        outcome: AttemptOutcome,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        tx.exec(
            "INSERT INTO delivery_attempts (id, delivery_id, at, duration_ms, status_code, error, response_excerpt) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            args![
                a.id.as_str(),
                a.delivery_id.as_str(),
                a.at,
                a.duration_ms,
                a.status_code,
                a.error.clone(),
                a.response_excerpt.clone()
            ],
        )
        .await?;
        let (status, next) = match outcome {
            AttemptOutcome::Delivered => (DeliveryStatus::Delivered, a.at),
            AttemptOutcome::Retry(at) => (DeliveryStatus::Pending, at),
            AttemptOutcome::Dead => (DeliveryStatus::Dead, a.at),
        };
        tx.exec(
            "UPDATE deliveries SET status = $1, attempts = attempts + 1, next_attempt_at = $2, updated_at = $3, \
             last_status = $4, last_error = $5 WHERE id = $6 AND status = 'pending'",
            args![status.code(), next, a.at, a.status_code, a.error.clone(), a.delivery_id.as_str()],
        )
        .await?;
        tx.commit().await
    }

    /// A webhook's deliveries, newest first, and their total.
    pub async fn deliveries(
        &self,
        webhook: &WebhookId,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<(DeliveryRecord, EventName)>, u64), StoreError> {
        let mut tx = self.begin_read().await?;
        let total = tx
            .fetch_one(
                "SELECT COUNT(*) FROM deliveries WHERE webhook_id = $1",
                args![webhook.as_str()],
            )
            .await?
            .i64(0)?;
        let sql = format!(
            "SELECT {DELIVERY_COLS}, e.name FROM deliveries d JOIN events e ON e.id = d.event_id \
             WHERE d.webhook_id = $1 ORDER BY d.created_at DESC, d.id DESC LIMIT $2 OFFSET $3"
        );
        let rows = tx
            .fetch_all(
                &sql,
                args![
                    webhook.as_str(),
                    i64::try_from(limit).unwrap_or(i64::MAX),
                    i64::try_from(offset).unwrap_or(i64::MAX)
                ],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let name = r.text(10)?;
            let ev = EventName::from_name(&name)
                .ok_or_else(|| StoreError::Corrupt(format!("event {name}")))?;
            out.push((delivery_row(&r, 0)?, ev));
        }
        tx.commit().await?;
        Ok((out, u64::try_from(total).unwrap_or(0)))
    }

    /// The attempts of a delivery, oldest first.
    pub async fn attempts(&self, delivery: &DeliveryId) -> Result<Vec<AttemptRecord>, StoreError> {
        let mut c = self.read_conn().await?;
        let rows = c
            .fetch_all(
                "SELECT id, delivery_id, at, duration_ms, status_code, error, response_excerpt \
                 FROM delivery_attempts WHERE delivery_id = $1 ORDER BY at, id",
                args![delivery.as_str()],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(AttemptRecord {
                    id: AttemptId::from_db(r.text(0)?),
                    delivery_id: DeliveryId::from_db(r.text(1)?),
                    at: r.i64(2)?,
                    duration_ms: r.i64(3)?,
                    status_code: r.opt_i64(4)?,
                    error: r.opt_text(5)?,
                    response_excerpt: r.opt_text(6)?,
                })
            })
            .collect()
    }

    /// A delivery and the account that owns its webhook.
    pub async fn delivery(
        &self,
        id: &DeliveryId,
    ) -> Result<Option<(DeliveryRecord, AccountId)>, StoreError> {
        let mut c = self.read_conn().await?;
        let sql = format!(
            "SELECT {DELIVERY_COLS}, w.account_id FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id WHERE d.id = $1"
        );
        match c.fetch_opt(&sql, args![id.as_str()]).await? {
            Some(r) => Ok(Some((
                delivery_row(&r, 0)?,
                AccountId::from_db(r.text(10)?),
            ))),
            None => Ok(None),
        }
    }

    /// Queues the same event to the same (active) webhook again as a new delivery.
    pub async fn redeliver(
        &self,
        id: &DeliveryId,
        now: i64,
    ) -> Result<Option<DeliveryRecord>, StoreError> {
        let mut tx = self.begin_write().await?;
        let sql = format!(
            "SELECT {DELIVERY_COLS} FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id \
             WHERE d.id = $1 AND w.active = 1"
        );
        let Some(r) = tx.fetch_opt(&sql, args![id.as_str()]).await? else {
            return Ok(None);
        };
        let d = delivery_row(&r, 0)?;
        let new_id = insert_delivery(&mut tx, &d.event_id, &d.webhook_id, now).await?;
        let r = tx
            .fetch_one(
                &format!("SELECT {DELIVERY_COLS} FROM deliveries d WHERE d.id = $1"),
                args![new_id.as_str()],
            )
            .await?;
        let rec = delivery_row(&r, 0)?;
        tx.commit().await?;
        Ok(Some(rec))
    }

    /// An event by id.
    pub async fn event(&self, id: &EventId) -> Result<Option<EventRecord>, StoreError> {
        let mut c = self.read_conn().await?;
        c.fetch_opt(
            &format!("SELECT {EVENT_COLS} FROM events WHERE id = $1"),
            args![id.as_str()],
        )
        .await?
        .map(|r| event_row(&r, 0))
        .transpose()
    }
}
