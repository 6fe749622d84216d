//! A wallet's event head and reads after a cursor, on both databases, across the migration that
//! took SQLite's per-wallet event index away (the head then lives on the wallet's row, kept by
//! a trigger, and reads scan the `seq` tail): events written before it keep their heads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use satchel_store::Store;
use satchel_testkit::db::TestDb;

/// The schema before that migration (the last one).
const BEFORE: i64 = 14;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_and_cursors_survive_the_upgrade() {
    for (kind, db) in TestDb::all().await {
        let old = Store::connect_at_schema(&db.url, BEFORE).await.unwrap();
        let acct = account(&old).await;
        let a = wallet(&old, &acct).await;
        let b = wallet(&old, &acct).await;
        let idle = wallet(&old, &acct).await;
        deposit(&old, &acct, &a, sat(10)).await;
        let old_a = old.wallet_events_after(&a, 0, 100).await.unwrap();
        let old_idle = old.wallet_events_after(&idle, 0, 100).await.unwrap();
        assert_eq!((old_a.len(), old_idle.len()), (2, 1), "{kind}");
        drop(old);

        let store = connect(&db.url).await;
        // Heads of events written before the upgrade.
        let head_a = store.wallet_event_head(&a).await.unwrap();
        assert_eq!(head_a, old_a[1].0, "{kind}");
        let head_idle = store.wallet_event_head(&idle).await.unwrap();
        assert_eq!(head_idle, old_idle[0].0, "{kind}");
        let head_b = store.wallet_event_head(&b).await.unwrap();
        assert!(head_b > 0 && head_b < head_idle, "{kind}");

        // New events move the heads of their wallets only.
        store
            .transfer(&transfer_cmd(&acct, &a, &b, sat(3)))
            .await
            .unwrap();
        let new_a = store.wallet_event_head(&a).await.unwrap();
        let new_b = store.wallet_event_head(&b).await.unwrap();
        assert!(new_a > head_a && new_b > head_b, "{kind}");
        assert_eq!(
            store.wallet_event_head(&idle).await.unwrap(),
            head_idle,
            "{kind}"
        );

        // Reads after per-wallet cursors: each wallet's own events after its cursor, in order.
        let got = store
            .wallets_events_after(
                &[
                    (a.clone(), head_a),
                    (b.clone(), 0),
                    (idle.clone(), head_idle),
                ],
                100,
            )
            .await
            .unwrap();
        let seqs: Vec<i64> = got.iter().map(|(s, _)| *s).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{kind}: {seqs:?}");
        let of = |w: &satchel_domain::WalletId| {
            got.iter()
                .filter(|(_, e)| e.wallet_id.as_ref() == Some(w))
                .map(|(s, _)| *s)
                .collect::<Vec<_>>()
        };
        assert_eq!(of(&a), vec![new_a], "{kind}");
        assert_eq!(of(&b), vec![head_b, new_b], "{kind}");
        assert!(of(&idle).is_empty(), "{kind}");
        assert_eq!(got.len(), 3, "{kind}");
        // A wallet with no events at all (unknown here) has head 0.
        let none = satchel_domain::WalletId::generate();
        assert_eq!(store.wallet_event_head(&none).await.unwrap(), 0, "{kind}");
        assert_clean(kind, &store).await;
    }
}
