//! The request id of the HTTP request being served, visible to the store operations it makes.
//!
//! Like the idempotency claim it travels in a task-local rather than as a parameter of every
//! service and store method: the API sets it around each request ([`scope`]); the outbox reads
//! it when it writes an event ([`current`]), so a webhook can name the request that caused it.
//! Spawned tasks do not inherit it; the payment driver carries it over explicitly
//! ([`current`] before the spawn, [`scope`] inside).

use std::future::Future;

use satchel_domain::RequestId;

tokio::task_local! {
    static REQUEST_ID: RequestId;
}

/// Runs `f` with `id` as the current request id.
pub async fn scope<F: Future>(id: RequestId, f: F) -> F::Output {
    REQUEST_ID.scope(id, f).await
}

/// The current request id, if this task serves (or was started by) a request.
pub fn current() -> Option<RequestId> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn visible_inside_the_scope_only() {
        assert!(current().is_none());
        let id = RequestId::parse("abc").unwrap();
        let seen = scope(id.clone(), async { current() }).await;
        assert_eq!(seen, Some(id));
        // A spawned task does not inherit it.
        let spawned = scope(RequestId::generate(), async {
            tokio::spawn(async { current() }).await.unwrap()
        })
        .await;
        assert!(spawned.is_none());
    }
}
