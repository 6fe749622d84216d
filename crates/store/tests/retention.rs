//! Event retention (`Store::prune_events`), on both databases: exactly the old events whose
//! webhook deliveries are all finished go, with those deliveries and their attempts; recent
//! events, events with a pending delivery and events whose delivery finished recently stay.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use satchel_domain::{AttemptId, EventName, WebhookId};
use satchel_store::{AttemptOutcome, AttemptRecord, DEFAULT_ALL, Store, WebhookRecord};
use satchel_testkit::db::TestDb;

async fn count(store: &Store, hook: &WebhookId) -> usize {
    store.deliveries(hook, 0, 1000).await.unwrap().0.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prunes_exactly_the_old_finished_rows() {
    for (kind, db) in TestDb::all().await {
        let store = connect(&db.url).await;
        let acct = account(&store).await;
        // A wallet without webhooks: its events are recorded all the same (live streams).
        let quiet = wallet(&store, &acct).await;
        assert!(store.wallet_event_head(&quiet).await.unwrap() > 0, "{kind}");

        let hook = WebhookRecord {
            id: WebhookId::generate(),
            account_id: acct.clone(),
            endpoint_url: "https://example.com/hook".into(),
            events: vec![DEFAULT_ALL.into()],
            secret: None,
            active: true,
            created_at: NOW,
        };
        assert!(store.create_webhook(&hook, 10).await.unwrap());
        // Old events (at NOW): a wallet created, three deposits (invoices don't raise events).
        let w = wallet(&store, &acct).await;
        for _ in 0..3 {
            deposit(&store, &acct, &w, sat(10)).await;
        }
        // A recent one (after the cutoff).
        let other = wallet(&store, &acct).await;
        let mut t = transfer_cmd(&acct, &w, &other, sat(1));
        t.now = NOW + 1_000;
        store.transfer(&t).await.unwrap();

        let (list, total) = store.deliveries(&hook.id, 0, 100).await.unwrap();
        // w created + 3 receives + other created + transfer out + transfer in.
        assert_eq!(total, 7, "{kind}");
        let by_name = |n: EventName| {
            list.iter()
                .filter(|(_, e)| *e == n)
                .map(|(d, _)| d.id.clone())
                .collect::<Vec<_>>()
        };
        let receives = by_name(EventName::WalletReceive);
        let created = by_name(EventName::WalletCreated);
        assert_eq!((receives.len(), created.len()), (3, 2), "{kind}");
        let finish = |d: &satchel_domain::DeliveryId, at: i64, outcome| {
            let a = AttemptRecord {
                id: AttemptId::generate(),
                delivery_id: d.clone(),
                at,
                duration_ms: 5,
                status_code: Some(200),
                error: None,
                response_excerpt: None,
            };
            let store = store.clone();
            async move { store.finish_attempt(&a, outcome).await.unwrap() }
        };
        // receive 0: delivered long ago; receive 1: dead long ago; receive 2: still pending.
        finish(&receives[0], NOW + 10, AttemptOutcome::Delivered).await;
        finish(&receives[1], NOW + 10, AttemptOutcome::Dead).await;
        // Both wallet_created deliveries (newest first: `other`'s, then `w`'s): delivered,
        // `w`'s only recently.
        finish(&created[0], NOW + 10, AttemptOutcome::Delivered).await;
        finish(&created[1], NOW + 900, AttemptOutcome::Delivered).await;

        let cutoff = NOW + 500;
        let before_head = store.wallet_event_head(&w).await.unwrap();
        // Small batches: the worker calls again while a batch comes back full.
        let mut pruned = Vec::new();
        loop {
            let p = store.prune_events(cutoff, 1).await.unwrap();
            if p.events == 0 {
                break;
            }
            pruned.push(p);
        }
        let events: u64 = pruned.iter().map(|p| p.events).sum();
        let deliveries: u64 = pruned.iter().map(|p| p.deliveries).sum();
        let attempts: u64 = pruned.iter().map(|p| p.attempts).sum();
        // Gone: receive 0, receive 1, created[0], and the quiet wallet's creation (no
        // delivery). Kept: receive 2 (pending), created[1] (finished recently), the transfer.
        assert_eq!((events, deliveries, attempts), (4, 3, 3), "{kind}");
        assert_eq!(count(&store, &hook.id).await, 4, "{kind}");
        let left = store.deliveries(&hook.id, 0, 100).await.unwrap().0;
        assert!(left.iter().any(|(d, _)| d.id == receives[2]));
        assert!(left.iter().any(|(d, _)| d.id == created[1]));
        assert!(
            !left
                .iter()
                .any(|(d, _)| d.id == receives[0] || d.id == receives[1])
        );
        assert_eq!(store.wallet_event_head(&quiet).await.unwrap(), 0, "{kind}");
        // What was kept is still readable in order; the high-water mark covers what went.
        let rest = store.wallet_events_after(&w, 0, 100).await.unwrap();
        // w's creation (its delivery finished recently), receive 2 (pending), the transfer.
        assert_eq!(rest.len(), 3, "{kind}: {rest:?}");
        assert!(rest.windows(2).all(|p| p[0].0 < p[1].0));
        assert_eq!(store.wallet_event_head(&w).await.unwrap(), before_head);
        let mark = store.events_pruned_upto().await.unwrap();
        assert!(
            mark > 0 && mark < before_head,
            "{kind}: {mark} {before_head}"
        );
        // Nothing more to do at this cutoff.
        assert_eq!(store.prune_events(cutoff, 100).await.unwrap().events, 0);
        assert_clean(kind, &store).await;
    }
}
