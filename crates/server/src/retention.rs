//! The retention worker: deletes webhook events (with their finished deliveries and attempts)
//! older than `event_retention_days`, in small batches so no transaction holds locks (or
//! SQLite's writer) for long. Only finished rows go: an event with a delivery still pending or
//! changed within the retention stays. `Idempotency-Key` rows have their own purge (`app.rs`),
//! by their expiry.

use std::time::Duration;

use satchel_service::events::{EventService, PRUNE_BATCH};
use tokio::sync::watch;

/// Pause between batches while a backlog is being deleted (lets other writers in).
const BACKLOG_PAUSE: Duration = Duration::from_millis(100);
/// Pause once no backlog is left.
const IDLE_PAUSE: Duration = Duration::from_secs(300);

/// Runs until `shutdown` flips.
pub async fn run(events: EventService, mut shutdown: watch::Receiver<bool>) {
    loop {
        let pause = match events.prune_once().await {
            Ok(n) if n >= PRUNE_BATCH => BACKLOG_PAUSE,
            Ok(_) => IDLE_PAUSE,
            Err(e) => {
                tracing::error!(error = %e, "pruning old events failed");
                IDLE_PAUSE
            }
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}
