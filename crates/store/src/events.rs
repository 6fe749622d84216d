//! The outbox as a per-wallet event stream (live events over SSE), and its retention.
//!
//! Every user-visible change to a wallet writes an `events` row in the transaction of the change
//! (see [`crate::outbox`]), whether or not a webhook wants it, so a reader can resume from its
//! last `seq` after any gap. Per wallet, `seq` order is commit order: an event row is inserted
//! after the wallet's balance update, while the transaction holds that wallet's row lock (on
//! SQLite: the single writer), so no later-committing transaction can take a lower `seq` for
//! the same wallet. Across wallets no such order holds on Postgres (sequence values are taken
//! before commit), which is why readers keep one cursor per wallet.
//!
//! [`EventBell`] tells this process's event hub, after commit, which wallets got events, so
//! readers need no polling for events written here. Another process's events are found by the
//! hub's low-frequency poll.
//!
//! Storage differs by database. Postgres indexes events by `(wallet_id, seq)`. SQLite does not:
//! with group commit every dirty page costs a WAL frame per batch, and that index put each
//! event of a batch on its own leaf page. There the wallet's row keeps `last_event_seq` (its
//! page is already dirty from the balance update) for [`Store::wallet_event_head`], and reads
//! after a cursor scan the `seq` range from the lowest cursor: cheap for readers near the head,
//! proportional to the events since the cursor for one resuming from far back (retention
//! bounds that).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use satchel_domain::WalletId;
use tokio::sync::Notify;

use crate::db::{Arg, Conn};
use crate::outbox::{EVENT_COLS, EventRecord, event_row};
use crate::{Store, StoreError, args};

/// Name of the cursor (in `cursors`) holding the highest event `seq` retention deleted: a
/// reader resuming from below it may have missed events.
pub const PRUNED_CURSOR: &str = "events_pruned_seq";

/// Wakes the event hub after a transaction that wrote events commits.
///
/// Costs a payment one atomic load while nobody watches; otherwise a short mutex hold to add
/// wallet ids to a set, and a [`Notify`] permit (rings coalesce while the hub is busy).
#[derive(Debug, Default)]
pub struct EventBell {
    watching: AtomicUsize,
    dirty: Mutex<HashSet<String>>,
    notify: Notify,
}

impl EventBell {
    /// Marks that a hub is listening (while the guard lives): only then are rings recorded.
    pub fn listen(self: &Arc<Self>) -> BellListener {
        self.watching.fetch_add(1, Ordering::AcqRel);
        BellListener(self.clone())
    }

    /// After a commit: these wallets have new events.
    pub(crate) fn ring(&self, wallets: &[String]) {
        if wallets.is_empty() || self.watching.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut d = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
        d.extend(wallets.iter().cloned());
        drop(d);
        self.notify.notify_one();
    }

    /// Waits until something rang since the last [`EventBell::take`].
    pub async fn rung(&self) {
        self.notify.notified().await;
    }

    /// The wallets rung for since the last call.
    pub fn take(&self) -> HashSet<String> {
        std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// See [`EventBell::listen`].
#[derive(Debug)]
pub struct BellListener(Arc<EventBell>);

impl Drop for BellListener {
    fn drop(&mut self) {
        self.0.watching.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Wallets with events written in a transaction, rung once it commits.
#[derive(Debug, Default)]
pub struct Pending {
    bell: Option<Arc<EventBell>>,
    wallets: Vec<String>,
}

impl Pending {
    /// For a write transaction of a store with `bell`.
    pub(crate) fn new(bell: Option<Arc<EventBell>>) -> Pending {
        Pending {
            bell,
            wallets: Vec::new(),
        }
    }

    pub(crate) fn note(&mut self, wallet: &str) {
        if self.bell.is_some() && !self.wallets.iter().any(|w| w == wallet) {
            self.wallets.push(wallet.to_owned());
        }
    }

    pub(crate) fn committed(self) {
        if let Some(b) = self.bell {
            b.ring(&self.wallets);
        }
    }
}

/// Rows deleted by one retention batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Events.
    pub events: u64,
    /// Webhook deliveries (all finished).
    pub deliveries: u64,
    /// Their logged attempts.
    pub attempts: u64,
}

impl Store {
    /// This store's bell (see [`EventBell`]).
    pub fn event_bell(&self) -> Arc<EventBell> {
        self.bell.clone()
    }

    /// A wallet's events after `after_seq`, oldest first, at most `limit`.
    pub async fn wallet_events_after(
        &self,
        wallet: &WalletId,
        after_seq: i64,
        limit: u64,
    ) -> Result<Vec<(i64, EventRecord)>, StoreError> {
        self.wallets_events_after(&[(wallet.clone(), after_seq)], limit)
            .await
    }

    /// The events of several wallets, each after its own cursor, in `seq` order, at most
    /// `limit` in all (one statement).
    pub async fn wallets_events_after(
        &self,
        cursors: &[(WalletId, i64)],
        limit: u64,
    ) -> Result<Vec<(i64, EventRecord)>, StoreError> {
        if cursors.is_empty() {
            return Ok(Vec::new());
        }
        let mut cond = String::new();
        let mut a: Vec<Arg> = Vec::with_capacity(cursors.len() * 2 + 1);
        for (i, (w, after)) in cursors.iter().enumerate() {
            if i > 0 {
                cond.push_str(" OR ");
            }
            cond.push_str(&format!(
                "(wallet_id = ${} AND seq > ${})",
                2 * i + 1,
                2 * i + 2
            ));
            a.push(Arg::Text(w.as_str().to_owned()));
            a.push(Arg::I64(*after));
        }
        a.push(Arg::I64(i64::try_from(limit).unwrap_or(i64::MAX)));
        // The lowest cursor bounds a `seq` range scan: SQLite has no per-wallet index (see
        // the module docs), and readers read after recent cursors, so that is the tail.
        let lowest = cursors.iter().map(|(_, s)| *s).min().unwrap_or(0);
        a.push(Arg::I64(lowest));
        let sql = format!(
            "SELECT seq, {EVENT_COLS} FROM events WHERE seq > ${} AND ({cond}) ORDER BY seq LIMIT ${}",
            cursors.len() * 2 + 2,
            cursors.len() * 2 + 1
        );
        let mut c = self.read_conn().await?;
        c.fetch_all(&sql, a)
            .await?
            .iter()
            .map(|r| Ok((r.i64(0)?, event_row(r, 1)?)))
            .collect()
    }

    /// The `seq` of a wallet's latest event (0: none).
    pub async fn wallet_event_head(&self, wallet: &WalletId) -> Result<i64, StoreError> {
        let mut c = self.read_conn().await?;
        let sql = match c.dialect() {
            crate::Dialect::Postgres => "SELECT MAX(seq) FROM events WHERE wallet_id = $1",
            // The wallet's row names its latest event. If retention deleted that one, older
            // events of the wallet can remain only where a delivery still needed them, so the
            // backward scan below it meets few rows.
            crate::Dialect::Sqlite => {
                "SELECT CASE WHEN EXISTS (SELECT 1 FROM events WHERE seq = w.last_event_seq) \
                 THEN w.last_event_seq ELSE (SELECT seq FROM events e WHERE e.wallet_id = w.id \
                 AND e.seq < w.last_event_seq ORDER BY e.seq DESC LIMIT 1) END \
                 FROM wallets w WHERE w.id = $1"
            }
        };
        Ok(c.fetch_opt(sql, args![wallet.as_str()])
            .await?
            .map(|r| r.opt_i64(0))
            .transpose()?
            .flatten()
            .unwrap_or(0))
    }

    /// The highest event `seq` retention has deleted (0: none).
    pub async fn events_pruned_upto(&self) -> Result<i64, StoreError> {
        Ok(i64::try_from(self.cursor(PRUNED_CURSOR).await?).unwrap_or(i64::MAX))
    }

    /// Deletes up to `limit` events created before `cutoff` (unix seconds) that no delivery
    /// still needs — every delivery of theirs is finished (delivered or dead) and last changed
    /// before `cutoff` — with those deliveries and their attempts, in one short transaction.
    /// Returns what it deleted; call again while it deletes a full batch.
    pub async fn prune_events(&self, cutoff: i64, limit: u64) -> Result<Pruned, StoreError> {
        let candidates = "SELECT seq, id FROM events e WHERE e.created_at < $1 AND NOT EXISTS \
             (SELECT 1 FROM deliveries d WHERE d.event_id = e.id \
              AND (d.status = 'pending' OR d.updated_at >= $1)) \
             ORDER BY seq LIMIT $2";
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // Nothing to delete is answered from a read: an idle server makes no write (on SQLite
        // each one is a WAL flush).
        if self
            .read_conn()
            .await?
            .fetch_opt(candidates, args![cutoff, 1])
            .await?
            .is_none()
        {
            return Ok(Pruned::default());
        }
        let mut tx = self.begin_write().await?;
        let rows = tx.fetch_all(candidates, args![cutoff, limit]).await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(Pruned::default());
        }
        let mut max_seq = 0;
        let mut ids = Vec::with_capacity(rows.len());
        for r in &rows {
            max_seq = max_seq.max(r.i64(0)?);
            ids.push(Arg::Text(r.text(1)?));
        }
        let list = (1..=ids.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let attempts = tx
            .exec(
                &format!(
                    "DELETE FROM delivery_attempts WHERE delivery_id IN \
                     (SELECT id FROM deliveries WHERE event_id IN ({list}))"
                ),
                ids.clone(),
            )
            .await?;
        let deliveries = tx
            .exec(
                &format!("DELETE FROM deliveries WHERE event_id IN ({list})"),
                ids.clone(),
            )
            .await?;
        let events = tx
            .exec(&format!("DELETE FROM events WHERE id IN ({list})"), ids)
            .await?;
        tx.exec(
            "INSERT INTO cursors (name, value) VALUES ($1, $2) ON CONFLICT (name) \
             DO UPDATE SET value = excluded.value WHERE cursors.value < excluded.value",
            args![PRUNED_CURSOR, max_seq],
        )
        .await?;
        tx.commit().await?;
        Ok(Pruned {
            events,
            deliveries,
            attempts,
        })
    }
}

/// Records, inside a write transaction, that `wallet` got an event (rung after commit).
pub(crate) fn note(conn: &mut Conn, wallet: &str) {
    conn.note_event(wallet);
}
