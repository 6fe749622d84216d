//! Live events of a wallet as Server-Sent Events: `GET /v1/wallet/:key/events`.
//!
//! Each event is
//! ```text
//! id: <seq>
//! event: <name>            (wallet_receive, wallet_send, wallet_transfer_in, …)
//! data: <JSON>             (exactly the webhook body: {id, created_at, event, data})
//! ```
//! `id` is the outbox's `seq`: increasing along one wallet's stream, and what a client sends
//! back as `Last-Event-ID` to resume. A resume from an id older than retention keeps gets one
//! `event: reset` first (then the stream goes on from the wallet's latest event), so the
//! client knows to re-read the wallet and its history.
//!
//! **How events reach readers.** The [`EventHub`] keeps, for each wallet someone is watching,
//! one broadcast channel and the `seq` last published on it. A transaction that wrote events
//! rings the store's [`EventBell`] after commit with the
//! wallets concerned; the hub reads those wallets' new events once (one statement), renders
//! each once, and broadcasts it: readers never touch the database while they keep up, and
//! payments never wait for readers (the ring is an atomic load when nobody watches, and a
//! broadcast send never blocks). Each connection's task forwards its channel into the response
//! through a small buffer; a reader that stops reading fills it, its channel overflows
//! (`Lagged`), and when it reads again it catches up from the outbox from its own last `seq`,
//! then continues live, skipping what it already sent. Events of other processes sharing the
//! database are found by polling the outbox for watched wallets every `poll` (1 s): LISTEN/NOTIFY
//! would serialise every committing payment on Postgres' notify queue lock.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use satchel_domain::WalletId;
use satchel_service::events::{EventsConfig, StreamStart, StreamTicket};
use satchel_service::outbox::{BellListener, EventBell, Outbox};
use satchel_service::records::EventRecord;
use satchel_service::{ServiceError, Services};
use tokio::sync::{broadcast, mpsc, watch};

use crate::http::ApiError;
use crate::routes::{Authed, Seg, error_response};

/// Counter: times a live reader fell behind its wallet's channel and caught up from the
/// outbox. Metric name.
pub const CATCH_UPS_TOTAL: &str = "satchel_events_catch_ups_total";
/// Gauge: live event streams open in this process. Metric name.
pub const STREAMS_OPEN: &str = "satchel_events_streams_open";

/// Events read from the outbox per statement.
const PAGE: u64 = 200;
/// Watched wallets per outbox statement.
const WALLETS_PER_READ: usize = 50;
/// Events queued per connection between its task and the response body.
const CONNECTION_BUFFER: usize = 16;
/// Longest `Last-Event-ID` accepted (an `i64` in decimal).
const MAX_LAST_EVENT_ID_LEN: usize = 19;

/// One rendered event.
#[derive(Debug, Clone)]
pub struct LiveEvent {
    /// Outbox `seq` (the SSE `id`).
    pub seq: i64,
    /// Event name (the SSE `event`).
    pub name: &'static str,
    /// The webhook body (the SSE `data`).
    pub body: Arc<str>,
}

struct Slot {
    tx: broadcast::Sender<Arc<LiveEvent>>,
    cursor: i64,
    readers: usize,
}

/// Feeds live events to the streams of this process (see the module docs).
pub struct EventHub {
    outbox: Outbox,
    cfg: EventsConfig,
    bell: Arc<EventBell>,
    slots: Mutex<HashMap<WalletId, Slot>>,
    /// Flips to true on shutdown: every stream ends.
    closing: watch::Receiver<bool>,
    /// The sender of `closing` when the hub made its own (no shutdown signal given).
    _own_closing: Option<watch::Sender<bool>>,
    _listening: BellListener,
}

impl std::fmt::Debug for EventHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHub").field("cfg", &self.cfg).finish()
    }
}

/// Renders an event as its webhook body: the frozen body if a delivery already froze it.
async fn body_of(outbox: &Outbox, e: &EventRecord) -> Result<String, ServiceError> {
    match &e.body {
        Some(b) => Ok(b.clone()),
        None => crate::webhooks::render(outbox, e).await,
    }
}

impl EventHub {
    /// A hub over the `outbox`; streams end when `shutdown` flips (never, if `None`).
    /// [`EventHub::run`] must be spawned for live delivery.
    pub fn new(
        outbox: Outbox,
        cfg: EventsConfig,
        shutdown: Option<watch::Receiver<bool>>,
    ) -> Arc<EventHub> {
        let (closing, own) = match shutdown {
            Some(rx) => (rx, None),
            None => {
                let (tx, rx) = watch::channel(false);
                (rx, Some(tx))
            }
        };
        let bell = outbox.bell();
        let listening = bell.listen();
        Arc::new(EventHub {
            outbox,
            cfg,
            bell,
            slots: Mutex::new(HashMap::new()),
            closing,
            _own_closing: own,
            _listening: listening,
        })
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<WalletId, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes new events: at once for wallets rung by this process's commits, every `poll`
    /// for all watched wallets (other processes' commits). Returns on shutdown.
    pub async fn run(self: Arc<Self>) {
        let mut closing = self.closing.clone();
        loop {
            let only = tokio::select! {
                _ = closing.changed() => return,
                _ = self.bell.rung() => Some(self.bell.take()),
                _ = tokio::time::sleep(self.cfg.poll) => None,
            };
            if let Err(e) = self.publish(only.as_ref()).await {
                tracing::warn!(error = %e, "reading new events for live streams failed");
            }
        }
    }

    /// Reads and broadcasts the new events of the watched wallets (of those in `only`, if given).
    async fn publish(
        &self,
        only: Option<&std::collections::HashSet<String>>,
    ) -> Result<(), ServiceError> {
        let cursors: Vec<(WalletId, i64)> = self
            .slots()
            .iter()
            .filter(|(w, _)| only.is_none_or(|o| o.contains(w.as_str())))
            .map(|(w, s)| (w.clone(), s.cursor))
            .collect();
        for chunk in cursors.chunks(WALLETS_PER_READ) {
            let mut chunk = chunk.to_vec();
            loop {
                let page = self.outbox.wallets_events_after(&chunk, PAGE).await?;
                let full = u64::try_from(page.len()).unwrap_or(0) >= PAGE;
                for (seq, e) in page {
                    let Some(wallet) = e.wallet_id.clone() else {
                        continue;
                    };
                    if let Some(c) = chunk.iter_mut().find(|(w, _)| *w == wallet) {
                        c.1 = c.1.max(seq);
                    }
                    let body = match body_of(&self.outbox, &e).await {
                        Ok(b) => b,
                        Err(err) => {
                            tracing::error!(error = %err, event = %e.id, "rendering an event for live streams failed");
                            continue;
                        }
                    };
                    let ev = Arc::new(LiveEvent {
                        seq,
                        name: e.name.name(),
                        body: body.into(),
                    });
                    let mut slots = self.slots();
                    if let Some(s) = slots.get_mut(&wallet)
                        && seq > s.cursor
                    {
                        s.cursor = seq;
                        // No receiver is fine: readers come and go.
                        let _ = s.tx.send(ev);
                    }
                }
                if !full {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Joins `wallet`'s channel (creating it, at the wallet's latest event, for its first reader).
    async fn subscribe(self: &Arc<Self>, wallet: &WalletId) -> Result<Subscription, ServiceError> {
        if let Some(s) = self.slots().get_mut(wallet) {
            s.readers += 1;
            return Ok(Subscription {
                rx: s.tx.subscribe(),
                hub: self.clone(),
                wallet: wallet.clone(),
            });
        }
        let head = self.outbox.wallet_event_head(wallet).await?;
        let mut slots = self.slots();
        let s = slots.entry(wallet.clone()).or_insert_with(|| Slot {
            tx: broadcast::channel(self.cfg.channel_capacity.max(1)).0,
            cursor: head,
            readers: 0,
        });
        s.readers += 1;
        Ok(Subscription {
            rx: s.tx.subscribe(),
            hub: self.clone(),
            wallet: wallet.clone(),
        })
    }

    /// The SSE response of an admitted stream.
    pub async fn stream(self: &Arc<Self>, ticket: StreamTicket) -> Result<Response, ServiceError> {
        let sub = self.subscribe(&ticket.wallet_id).await?;
        let (tx, rx) = mpsc::channel::<Event>(CONNECTION_BUFFER);
        let hub = self.clone();
        tokio::spawn(async move {
            let mut closing = hub.closing.clone();
            if *closing.borrow() {
                return;
            }
            metrics::gauge!(STREAMS_OPEN).increment(1.0);
            let _open = OpenStream;
            tokio::select! {
                _ = closing.changed() => {}
                r = forward(&hub.outbox, ticket, sub, &tx) => {
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "live event stream ended");
                    }
                }
            }
        });
        let body = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
        });
        let mut resp = Sse::new(body)
            .keep_alive(KeepAlive::new().interval(self.cfg.keep_alive))
            .into_response();
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        // Tells nginx not to buffer the stream.
        h.insert("x-accel-buffering", HeaderValue::from_static("no"));
        Ok(resp)
    }
}

/// Counts a stream in [`STREAMS_OPEN`] while it lives.
struct OpenStream;

impl Drop for OpenStream {
    fn drop(&mut self) {
        metrics::gauge!(STREAMS_OPEN).decrement(1.0);
    }
}

/// A reader's place on a wallet's channel; leaving drops the channel with its last reader.
struct Subscription {
    rx: broadcast::Receiver<Arc<LiveEvent>>,
    hub: Arc<EventHub>,
    wallet: WalletId,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut slots = self.hub.slots();
        if let Some(s) = slots.get_mut(&self.wallet) {
            s.readers = s.readers.saturating_sub(1);
            if s.readers == 0 {
                slots.remove(&self.wallet);
            }
        }
    }
}

fn sse_event(e: &LiveEvent) -> Event {
    Event::default()
        .id(e.seq.to_string())
        .event(e.name)
        .data(&*e.body)
}

/// Outbox events of `wallet` after `*cursor`, sent in order; moves the cursor.
async fn catch_up(
    outbox: &Outbox,
    wallet: &WalletId,
    cursor: &mut i64,
    tx: &mpsc::Sender<Event>,
) -> Result<bool, ServiceError> {
    loop {
        let page = outbox.wallet_events_after(wallet, *cursor, PAGE).await?;
        let full = u64::try_from(page.len()).unwrap_or(0) >= PAGE;
        for (seq, e) in page {
            let body = body_of(outbox, &e).await?;
            let ev = LiveEvent {
                seq,
                name: e.name.name(),
                body: body.into(),
            };
            if tx.send(sse_event(&ev)).await.is_err() {
                return Ok(false);
            }
            *cursor = seq;
        }
        if !full {
            return Ok(true);
        }
    }
}

/// One connection: replay from the start point, then live events; catch up from the outbox
/// after falling behind. Returns when the client goes away.
async fn forward(
    outbox: &Outbox,
    ticket: StreamTicket,
    mut sub: Subscription,
    tx: &mpsc::Sender<Event>,
) -> Result<(), ServiceError> {
    let wallet = ticket.wallet_id.clone();
    let mut cursor = match ticket.start {
        StreamStart::After(seq) => seq,
        StreamStart::Reset(head) => {
            let data = serde_json::json!({
                "reason": "events after your Last-Event-ID were deleted by retention; re-read the wallet and its transactions",
                "last_event_id": head,
            });
            let ev = Event::default()
                .id(head.to_string())
                .event("reset")
                .data(data.to_string());
            if tx.send(ev).await.is_err() {
                return Ok(());
            }
            head
        }
    };
    // Subscribed before this read: whatever the channel misses, the outbox has.
    if !catch_up(outbox, &wallet, &mut cursor, tx).await? {
        return Ok(());
    }
    loop {
        // The client leaving shows as the response body (the receiver) being dropped, seen at
        // the next write: at the latest the next keep-alive comment.
        let next = tokio::select! {
            _ = tx.closed() => return Ok(()),
            r = sub.rx.recv() => r,
        };
        match next {
            Ok(ev) => {
                if ev.seq <= cursor {
                    continue;
                }
                if tx.send(sse_event(&ev)).await.is_err() {
                    return Ok(());
                }
                cursor = ev.seq;
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                metrics::counter!(CATCH_UPS_TOTAL).increment(1);
                if !catch_up(outbox, &wallet, &mut cursor, tx).await? {
                    return Ok(());
                }
            }
            Err(broadcast::error::RecvError::Closed) => return Ok(()),
        }
    }
}

/// `Last-Event-ID`: absent or empty (no resume), else a decimal event id.
fn last_event_id(h: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(v) = h.get("last-event-id") else {
        return Ok(None);
    };
    let bad = || ApiError::bad_request("Last-Event-ID must be an event id from this stream.");
    let s = v.to_str().map_err(|_| bad())?.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if s.len() > MAX_LAST_EVENT_ID_LEN || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    s.parse::<i64>().map(Some).map_err(|_| bad())
}

/// `GET /v1/wallet/{key}/events`.
#[utoipa::path(
    get, path = "/v1/wallet/{key}/events", tag = "wallets",
    description = "The wallet's live events as Server-Sent Events (`text/event-stream`), for apps that cannot receive webhooks. Each event has `id:` (a cursor, increasing), `event:` (the event name, as in webhooks) and `data:` (the webhook body as JSON). Send `Last-Event-ID` to resume after an event; a resume from before what retention keeps starts with `event: reset`. Comment lines keep the connection alive. Needs wallet_read (a secret key may name any of its wallets). The stream never ends by itself.",
    params(
        ("key" = String, Path, description = "The wallet: one of its access keys (the role must allow wallet_read) or, with the secret key, its id (`wal_…`)"),
        ("Last-Event-ID" = Option<String>, Header, description = "The `id` of the last event received: resume after it"),
    ),
    responses((status = 200, description = "An endless stream of events", body = String, content_type = "text/event-stream")),
)]
pub async fn events(
    State(s): State<Services>,
    State(hub): State<Arc<EventHub>>,
    Authed(c): Authed,
    Seg(key): Seg,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let last = last_event_id(&headers)?;
    let ticket = match s.events.open(&c, &key, last).await {
        Ok(t) => t,
        Err(e) => return Ok(error_response(e)),
    };
    hub.stream(ticket).await.map_err(crate::routes::api_error)
}

/// `GET /ui/wallet/{key}/events`: the wallet page's live events (the same stream as
/// [`events`]). `EventSource` cannot send headers, so the page's own wallet key, which is
/// already the page's address, is in the path; it acts with the permissions a public key
/// presenting that wallet key would have (`AuthService::wallet_page_caller`). An unknown key is
/// counted by the failed-auth throttle like any other.
pub async fn page_events(
    State(s): State<Services>,
    State(hub): State<Arc<EventHub>>,
    axum::extract::Path(key): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if key.len() > crate::ui::MAX_KEY_LEN {
        return Err(ApiError::invalid_credentials());
    }
    let last = last_event_id(&headers)?;
    let caller = match s.auth.wallet_page_caller(&key).await {
        Ok((caller, _role)) => caller,
        Err(e) => {
            let guess = e.class() == satchel_service::ErrorClass::InvalidCredentials;
            let err = crate::routes::api_error(e);
            return Err(if guess {
                err.rejected_credential()
            } else {
                err
            });
        }
    };
    let ticket = match s.events.open(&caller, &key, last).await {
        Ok(t) => t,
        Err(e) => return Ok(error_response(e)),
    };
    hub.stream(ticket).await.map_err(crate::routes::api_error)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn last_event_id_parsing() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert("last-event-id", HeaderValue::from_str(v).unwrap());
            m
        };
        assert_eq!(last_event_id(&HeaderMap::new()).unwrap(), None);
        assert_eq!(last_event_id(&h("")).unwrap(), None);
        assert_eq!(last_event_id(&h(" 42 ")).unwrap(), Some(42));
        assert!(last_event_id(&h("-1")).is_err());
        assert!(last_event_id(&h("1e3")).is_err());
        assert!(last_event_id(&h("99999999999999999999")).is_err());
    }
}
