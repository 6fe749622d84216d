//! Live events of a wallet (`GET /v1/wallet/:key/events`, Server-Sent Events): who may open a
//! stream, how many may be open, and where it starts. The stream itself (the hub that feeds
//! readers after commit, and the SSE framing) lives in the API layer (`satchel_api::events`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use satchel_domain::{AccountId, Permission, WalletId};

use crate::auth::{AuthService, Caller};
use crate::{Ctx, ServiceError};

/// How long events (and their finished webhook deliveries) are kept by default: 30 days, long
/// enough to answer "did you send me that?" about last month and for a client offline over a
/// weekend to resume; the ledger (`wtxs`) keeps the history itself forever.
pub const DEFAULT_EVENT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Events deleted per retention transaction: small, so no lock or SQLite writer turn is long.
pub const PRUNE_BATCH: u64 = 500;

/// Settings of live event streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventsConfig {
    /// Streams open at once in this process, all accounts together.
    pub max_streams: u32,
    /// Streams one account may have open at once in this process.
    pub max_streams_per_account: u32,
    /// A comment line is sent this often when nothing else is, so proxies and browsers keep
    /// the connection.
    pub keep_alive: Duration,
    /// How often the outbox is read for events written by other processes sharing the
    /// database (events written here are pushed at once).
    pub poll: Duration,
    /// Events buffered per watched wallet for readers; a reader further behind catches up
    /// from the outbox.
    pub channel_capacity: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            max_streams: 1_000,
            max_streams_per_account: 20,
            keep_alive: Duration::from_secs(15),
            poll: Duration::from_secs(1),
            channel_capacity: 256,
        }
    }
}

/// Where a stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStart {
    /// After this event `seq` (the client's `Last-Event-ID`, or the wallet's latest event).
    After(i64),
    /// The client's `Last-Event-ID` is older than what retention keeps: events may be lost.
    /// The stream says so (`event: reset`) and goes on after this `seq` (the wallet's latest).
    Reset(i64),
}

/// An admitted stream: the wallet, where it starts, and its place under the caps (released
/// when dropped).
#[derive(Debug)]
pub struct StreamTicket {
    /// The wallet whose events are streamed.
    pub wallet_id: WalletId,
    /// Where the stream starts.
    pub start: StreamStart,
    /// Held while the stream is open.
    pub permit: StreamPermit,
}

#[derive(Debug, Default)]
struct Counts {
    total: u32,
    per_account: HashMap<AccountId, u32>,
}

/// A place under the stream caps.
#[derive(Debug)]
pub struct StreamPermit {
    counts: Arc<Mutex<Counts>>,
    account: AccountId,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_account.get_mut(&self.account) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_account.remove(&self.account);
            }
        }
    }
}

impl EventService {
    /// Deletes one batch of events older than the retention whose webhook deliveries are all
    /// finished; returns how many events it deleted.
    pub async fn prune_once(&self) -> Result<u64, ServiceError> {
        let keep = i64::try_from(self.ctx.cfg.event_retention.as_secs()).unwrap_or(i64::MAX);
        let cutoff = satchel_domain::now_secs().saturating_sub(keep);
        let p = self.ctx.store.prune_events(cutoff, PRUNE_BATCH).await?;
        if p.events > 0 {
            tracing::debug!(
                events = p.events,
                deliveries = p.deliveries,
                attempts = p.attempts,
                "pruned old events"
            );
        }
        Ok(p.events)
    }
}

/// Seconds a refused client is told to wait (`Retry-After`).
const FULL_RETRY_AFTER_SECS: u64 = 5;

/// Opens live event streams.
#[derive(Clone)]
pub struct EventService {
    ctx: Arc<Ctx>,
    auth: AuthService,
    counts: Arc<Mutex<Counts>>,
}

impl EventService {
    pub(crate) fn new(ctx: Arc<Ctx>) -> EventService {
        EventService {
            auth: AuthService::new(ctx.clone()),
            ctx,
            counts: Arc::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> EventsConfig {
        self.ctx.cfg.events
    }

    fn admit(&self, account: &AccountId) -> Result<StreamPermit, ServiceError> {
        let cfg = self.ctx.cfg.events;
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let mine = c.per_account.get(account).copied().unwrap_or(0);
        if c.total >= cfg.max_streams || mine >= cfg.max_streams_per_account {
            return Err(ServiceError::RateLimited {
                retry_after_secs: FULL_RETRY_AFTER_SECS,
            });
        }
        c.total += 1;
        c.per_account.insert(account.clone(), mine + 1);
        Ok(StreamPermit {
            counts: self.counts.clone(),
            account: account.clone(),
        })
    }

    /// Admits a stream of the wallet `path_key` names (permission `wallet_read`; a sak may read
    /// any wallet of its account), resuming after `last_event_id` if given.
    pub async fn open(
        &self,
        caller: &Caller,
        path_key: &str,
        last_event_id: Option<i64>,
    ) -> Result<StreamTicket, ServiceError> {
        let wallet = self
            .auth
            .wallet_for(caller, path_key, Permission::WalletRead)
            .await?;
        let permit = self.admit(&caller.account_id)?;
        let store = &self.ctx.store;
        let start = match last_event_id {
            Some(id) if id < store.events_pruned_upto().await? => {
                StreamStart::Reset(store.wallet_event_head(&wallet.id).await?)
            }
            Some(id) => StreamStart::After(id),
            None => StreamStart::After(store.wallet_event_head(&wallet.id).await?),
        };
        Ok(StreamTicket {
            wallet_id: wallet.id,
            start,
            permit,
        })
    }
}
