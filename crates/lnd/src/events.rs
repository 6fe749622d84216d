//! The replayable stream of settled invoices, on top of LND's invoice subscription.
//!
//! Satchel's `seq` is LND's `settle_index` (assigned when an invoice settles, strictly
//! increasing). LND offers two ways to read settled invoices:
//!
//! * `GET /v1/invoices/subscribe?settle_index=N`: first replays every invoice settled with
//!   `settle_index > N` (in settle order), then streams live adds and settles. There is no
//!   marker where the replay ends, and `settle_index=0` replays *nothing* (LND's backwards
//!   compatibility rule), so it cannot start "from the beginning".
//! * `GET /v1/invoices?index_offset=…&num_max_invoices=…`: pages through all invoices by
//!   `add_index`; settled invoices carry their `settle_index`.
//!
//! A background task per [`crate::LndRest`] keeps a buffer of settled invoices covering every
//! `settle_index` from the first cursor asked for:
//!
//! * cursor `0`: one full `ListInvoices` scan, then a subscription from the highest
//!   `settle_index` found (the replay covers anything settled during the scan). While LND has no
//!   settled invoice at all the subscription is live-only and serves as a signal: the task
//!   lists the invoices again once it stands, on every announced settlement and every
//!   [`EMPTY_RESCAN`], until the first settlement; from then on it subscribes with replay.
//! * cursor `N > 0` (a restart resuming from the persisted cursor): a subscription from `N`;
//!   LND's replay fills the buffer. The first answer after a (re)start waits until the
//!   subscription has been quiet for [`QUIET`] (at most [`SYNC_WAIT`]) so that a resumed
//!   consumer sees the backlog at once.
//!
//! The buffer only ever grows by appending events with a higher `settle_index` in the order LND
//! delivers them, and answers are prefixes of it, so a consumer that advances its cursor over an
//! answer can never skip an event. A broken subscription is reopened from the last
//! `settle_index` seen. Asking for a cursor older than the buffer restarts the feed from it.

use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Unbounded};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use reqwest::Method;
use satchel_lightning::{IncomingEvent, LnError};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::rest::{CallError, Rest};
use crate::wire::{Invoice, ListInvoiceResponse, incoming_event};

/// Quiet time after which a replaying subscription is considered caught up.
pub(crate) const QUIET: Duration = Duration::from_millis(300);
/// Longest a first answer after a (re)start waits for the feed to catch up.
pub(crate) const SYNC_WAIT: Duration = Duration::from_secs(60);
/// Rescan interval while LND has no settled invoice (live-only subscription).
pub(crate) const EMPTY_RESCAN: Duration = Duration::from_secs(10);
/// `ListInvoices` page size.
const PAGE: usize = 500;
/// Events kept below the latest cursor, for cheap replays.
const KEEP_BEHIND: u64 = 1_000;
/// The task stops reading LND when this many events wait for the consumer.
const MAX_BUFFER: usize = 100_000;
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

struct FeedState {
    generation: u64,
    task: Option<JoinHandle<()>>,
    /// Every settled invoice with `base < settle_index <= head` is in `events`.
    base: u64,
    head: u64,
    events: BTreeMap<u64, IncomingEvent>,
    synced: bool,
    sync_deadline: Instant,
    error: Option<String>,
}

pub(crate) struct Feed {
    rest: Arc<Rest>,
    st: Mutex<FeedState>,
    /// New events, sync reached, or an error.
    changed: Notify,
    /// The buffer shrank.
    space: Notify,
}

enum FollowEnd {
    /// Something settled while following from 0: follow from its `settle_index` instead.
    Resubscribe,
    /// The subscription failed or ended.
    Broken(String),
    /// A newer generation replaced this task.
    Stale,
}

fn describe(e: CallError) -> String {
    match e.into_ln() {
        LnError::Transport(m) | LnError::Rejected(m) => m,
        LnError::NotSupported => "not supported".to_owned(),
    }
}

impl Feed {
    pub(crate) fn new(rest: Arc<Rest>) -> Feed {
        Feed {
            rest,
            st: Mutex::new(FeedState {
                generation: 0,
                task: None,
                base: 0,
                head: 0,
                events: BTreeMap::new(),
                synced: false,
                sync_deadline: Instant::now(),
                error: None,
            }),
            changed: Notify::new(),
            space: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, FeedState> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops the background task.
    pub(crate) fn stop(&self) {
        let mut st = self.lock();
        st.generation = st.generation.wrapping_add(1);
        if let Some(t) = st.task.take() {
            t.abort();
        }
    }

    pub(crate) async fn events_after(
        self: &Arc<Self>,
        after: u64,
        limit: usize,
        wait: Duration,
    ) -> Result<Vec<IncomingEvent>, LnError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let until = {
                let mut st = self.lock();
                let dead = st.task.as_ref().is_none_or(JoinHandle::is_finished);
                if dead || after < st.base {
                    self.restart(&mut st, after);
                }
                let events: Vec<IncomingEvent> = st
                    .events
                    .range((Excluded(after), Unbounded))
                    .take(limit)
                    .map(|(_, e)| e.clone())
                    .collect();
                self.prune(&mut st, after);
                if !events.is_empty() {
                    return Ok(events);
                }
                if !st.synced
                    && let Some(e) = &st.error
                {
                    return Err(LnError::Transport(e.clone()));
                }
                let until = if st.synced {
                    deadline
                } else {
                    deadline.max(st.sync_deadline)
                };
                if Instant::now() >= until {
                    return match &st.error {
                        Some(e) => Err(LnError::Transport(e.clone())),
                        None => Ok(Vec::new()),
                    };
                }
                until
            };
            let _ = tokio::time::timeout_at(until, notified).await;
        }
    }

    fn restart(self: &Arc<Self>, st: &mut FeedState, from: u64) {
        if let Some(t) = st.task.take() {
            t.abort();
        }
        st.generation = st.generation.wrapping_add(1);
        st.base = from;
        st.head = from;
        st.events.clear();
        st.synced = false;
        st.sync_deadline = Instant::now() + SYNC_WAIT;
        st.error = None;
        let feed = Arc::clone(self);
        let generation = st.generation;
        st.task = Some(tokio::spawn(async move {
            feed.run(generation, from).await;
        }));
        self.space.notify_waiters();
    }

    /// Forgets events well below the consumer's cursor.
    fn prune(&self, st: &mut FeedState, after: u64) {
        let cut = after.min(st.head).saturating_sub(KEEP_BEHIND);
        if cut > st.base {
            st.events = st.events.split_off(&(cut + 1));
            st.base = cut;
            self.space.notify_waiters();
        }
    }

    fn update(&self, generation: u64, f: impl FnOnce(&mut FeedState)) -> bool {
        let mut st = self.lock();
        if st.generation != generation {
            return false;
        }
        f(&mut st);
        drop(st);
        self.changed.notify_waiters();
        true
    }

    fn set_error(&self, generation: u64, e: String) {
        tracing::warn!(error = %e, "LND invoice subscription");
        self.update(generation, |st| st.error = Some(e));
    }

    fn set_healthy(&self, generation: u64, synced: bool) {
        self.update(generation, |st| {
            st.error = None;
            st.synced |= synced;
        });
    }

    /// Appends events (sorted, all above the current head); waits while the buffer is full.
    /// Returns the new head, or `None` if this task is stale.
    async fn publish(&self, generation: u64, events: Vec<IncomingEvent>) -> Option<u64> {
        let mut pending = events.into_iter().peekable();
        loop {
            let space = self.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            {
                // As many as fit, in one step: a reader sees all of them or none.
                let mut st = self.lock();
                if st.generation != generation {
                    return None;
                }
                let mut added = false;
                while st.events.len() < MAX_BUFFER {
                    let Some(ev) = pending.next() else { break };
                    if ev.seq > st.head {
                        st.head = ev.seq;
                        st.events.insert(ev.seq, ev);
                        added = true;
                    }
                }
                let head = st.head;
                drop(st);
                if added {
                    self.changed.notify_waiters();
                }
                if pending.peek().is_none() {
                    return Some(head);
                }
            }
            space.await;
        }
    }

    async fn run(self: Arc<Self>, generation: u64, from: u64) {
        let mut head = from;
        let mut scan = from == 0;
        let mut backoff = MIN_BACKOFF;
        loop {
            if scan {
                match self.scan(head).await {
                    Ok(events) => {
                        match self.publish(generation, events).await {
                            Some(h) => head = h,
                            None => return,
                        }
                        self.set_healthy(generation, true);
                    }
                    Err(e) => {
                        self.set_error(generation, e);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            }
            let before = head;
            let since = Instant::now();
            match self.follow(generation, &mut head).await {
                FollowEnd::Stale => return,
                FollowEnd::Resubscribe => scan = false,
                FollowEnd::Broken(e) => {
                    if head > before || since.elapsed() > MAX_BACKOFF {
                        backoff = MIN_BACKOFF;
                    }
                    self.set_error(generation, e);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    scan = head == 0;
                }
            }
        }
    }

    /// Every settled invoice with `settle_index > head`, in settle order.
    async fn scan(&self, head: u64) -> Result<Vec<IncomingEvent>, String> {
        let mut offset = 0u64;
        let mut found = Vec::new();
        loop {
            let page: ListInvoiceResponse = self
                .rest
                .call(
                    Method::GET,
                    &format!("/v1/invoices?index_offset={offset}&num_max_invoices={PAGE}"),
                    None,
                )
                .await
                .map_err(describe)?;
            for inv in &page.invoices {
                match incoming_event(inv) {
                    Ok(Some(ev)) if ev.seq > head => found.push(ev),
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "skipping an LND invoice we cannot read"),
                }
            }
            let last = page
                .invoices
                .iter()
                .map(|i| i.add_index)
                .max()
                .unwrap_or(0)
                .max(page.last_index_offset);
            if page.invoices.len() < PAGE || last <= offset {
                break;
            }
            offset = last;
        }
        found.sort_by_key(|e| e.seq);
        found.dedup_by_key(|e| e.seq);
        Ok(found)
    }

    /// Follows the subscription from `head` until it breaks.
    ///
    /// From `head == 0` LND replays nothing, so there the subscription only says *when* to
    /// look: the task lists the invoices once the subscription stands (after [`QUIET`]),
    /// whenever a settlement is announced, and every [`EMPTY_RESCAN`]; as soon as something has
    /// settled it resubscribes from that `settle_index`, from which LND's replay is complete.
    async fn follow(&self, generation: u64, head: &mut u64) -> FollowEnd {
        let from = *head;
        let live_only = from == 0;
        let path = if live_only {
            "/v1/invoices/subscribe".to_owned()
        } else {
            format!("/v1/invoices/subscribe?settle_index={from}")
        };
        let quiet = tokio::time::sleep(QUIET);
        tokio::pin!(quiet);
        let mut quiet_armed = true;
        let rescan = tokio::time::sleep(QUIET);
        tokio::pin!(rescan);
        let open = self.rest.stream(Method::GET, &path, None);
        tokio::pin!(open);
        let mut stream = loop {
            tokio::select! {
                r = &mut open => match r {
                    Ok(s) => break s,
                    Err(e) => return FollowEnd::Broken(describe(e)),
                },
                () = &mut quiet, if quiet_armed => {
                    // No failure so far: LND may hold the headers back until the first
                    // message. Nothing replayed within QUIET: caught up.
                    quiet_armed = false;
                    self.set_healthy(generation, true);
                }
                () = &mut rescan, if live_only => {
                    match self.look(generation, head).await {
                        Ok(true) => return FollowEnd::Resubscribe,
                        Ok(false) => rescan.as_mut().reset(Instant::now() + EMPTY_RESCAN),
                        Err(end) => return end,
                    }
                }
            }
        };
        self.set_healthy(generation, false);
        loop {
            tokio::select! {
                line = stream.next::<Invoice>() => match line {
                    Ok(Some(inv)) => {
                        match incoming_event(&inv) {
                            Ok(Some(_)) if live_only => match self.look(generation, head).await {
                                Ok(true) => return FollowEnd::Resubscribe,
                                Ok(false) => {}
                                Err(end) => return end,
                            },
                            Ok(Some(ev)) if ev.seq > *head => {
                                match self.publish(generation, vec![ev]).await {
                                    Some(h) => *head = h,
                                    None => return FollowEnd::Stale,
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::error!(error = %e, "skipping an LND invoice we cannot read");
                            }
                        }
                        if quiet_armed {
                            quiet.as_mut().reset(Instant::now() + QUIET);
                        }
                    }
                    Ok(None) => {
                        return FollowEnd::Broken("LND closed the invoice subscription".to_owned());
                    }
                    Err(e) => return FollowEnd::Broken(describe(e)),
                },
                () = &mut quiet, if quiet_armed => {
                    quiet_armed = false;
                    self.set_healthy(generation, true);
                }
                () = &mut rescan, if live_only => {
                    match self.look(generation, head).await {
                        Ok(true) => return FollowEnd::Resubscribe,
                        Ok(false) => rescan.as_mut().reset(Instant::now() + EMPTY_RESCAN),
                        Err(end) => return end,
                    }
                }
            }
        }
    }

    /// Lists the invoices and publishes what settled after `head`; `true` once anything has
    /// settled at all.
    async fn look(&self, generation: u64, head: &mut u64) -> Result<bool, FollowEnd> {
        let events = self.scan(*head).await.map_err(FollowEnd::Broken)?;
        match self.publish(generation, events).await {
            Some(h) => *head = h,
            None => return Err(FollowEnd::Stale),
        }
        Ok(*head > 0)
    }
}
