//! Integration tests of the store, each run on SQLite and on Postgres.

// Test code: panicking on an unexpected error is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use satchel_domain::{
    AccountId, JobId, KeyHash, KeyRole, LnTxId, Msat, PaymentStatus, Preimage, WalletId, WtxId,
    WtxType,
};
use satchel_store::{
    CreditOutcome, Direction, InternalPayError, JobRecord, JobStatus, KeysendCredit,
    PaymentStateError, ReserveError, TransferError,
};
use satchel_testkit::db::TestDb;
use sqlx::Connection as _;

const LIMIT: Duration = Duration::from_secs(60);

/// Runs a raw statement against the test database, bypassing the store (to corrupt it).
async fn raw_exec(url: &str, sql: &'static str) {
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
        c.close().await.unwrap();
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
        c.close().await.unwrap();
    }
}

// ------------------------------------------------------------------ connections

/// Postgres connections that died while idle in the pool (a Postgres restart, an operator's
/// `pg_terminate_backend`) are found out and replaced before they are handed out again, for
/// reads and writes alike: no request fails because of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_connections_killed_while_idle_are_replaced() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let store = connect(&db.url).await;
    let acct = account(&store).await;
    let w = wallet(&store, &acct).await;
    assert!(store.wallet(&w).await.unwrap().is_some());
    // Idle past the ping threshold, then every other connection to this database is killed.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    raw_exec(
        &db.url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .await;
    for _ in 0..20 {
        assert!(store.wallet(&w).await.unwrap().is_some());
    }
    let w2 = wallet(&store, &acct).await;
    assert!(store.wallet(&w2).await.unwrap().is_some());
}

// ------------------------------------------------------------------ accounts, keys, wallets

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn accounts_keys_and_wallets() {
    for (kind, db) in TestDb::all().await {
        let store = connect(&db.url).await;
        assert_eq!(store.account_count().await.unwrap(), 0, "[{kind}]");

        let acct = AccountId::generate();
        let (sak, sak_new) = new_key(KeyRole::Secret);
        let (pak, pak_new) = new_key(KeyRole::Public);
        store
            .create_account(&acct, "alice", NOW, &[sak_new, pak_new])
            .await
            .unwrap();
        assert_eq!(store.account_count().await.unwrap(), 1, "[{kind}]");
        // Same account id twice is a constraint violation.
        assert!(
            store
                .create_account(&acct, "again", NOW, &[])
                .await
                .is_err(),
            "[{kind}]"
        );

        let k = store.find_key(&sak.hash()).await.unwrap().unwrap();
        assert_eq!(k.account_id, acct, "[{kind}]");
        assert_eq!(k.role, KeyRole::Secret, "[{kind}]");
        assert_eq!(k.prefix, "sak", "[{kind}]");
        assert_eq!(k.wallet_id, None, "[{kind}]");
        assert!(!k.suspended, "[{kind}]");
        assert_eq!(
            store.find_key(&pak.hash()).await.unwrap().unwrap().role,
            KeyRole::Public
        );
        assert!(
            store
                .find_key(&KeyHash::of("sak_nope"))
                .await
                .unwrap()
                .is_none(),
            "[{kind}]"
        );

        // Wallets created at increasing times; list is newest first.
        let mut ids = Vec::new();
        let mut wallet_keys = Vec::new();
        for i in 0..5 {
            let id = WalletId::generate();
            let (wk, wk_new) = new_key(KeyRole::WalletInvoice);
            let rec = store
                .create_wallet(&satchel_store::NewWallet {
                    id: id.clone(),
                    account_id: acct.clone(),
                    user_label: format!("w{i}"),
                    node_id: node(),
                    now: NOW + i,
                    keys: vec![wk_new],
                })
                .await
                .unwrap();
            assert_eq!(rec.user_label, format!("w{i}"), "[{kind}]");
            assert_eq!(rec.balance, Msat::ZERO, "[{kind}]");
            assert_eq!(rec.wtx_count, 0, "[{kind}]");
            assert!(rec.active, "[{kind}]");
            assert_eq!(rec.created_at, NOW + i, "[{kind}]");
            ids.push(id);
            wallet_keys.push(wk);
        }
        let wk = store
            .find_key(&wallet_keys[2].hash())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(wk.wallet_id.as_ref(), Some(&ids[2]), "[{kind}]");
        assert_eq!(wk.role, KeyRole::WalletInvoice, "[{kind}]");
        assert_eq!(wk.prefix, "waki", "[{kind}]");

        assert!(
            store
                .set_key_suspended(&wallet_keys[2].hash(), true)
                .await
                .unwrap()
        );
        assert!(
            store
                .find_key(&wallet_keys[2].hash())
                .await
                .unwrap()
                .unwrap()
                .suspended
        );
        assert!(
            !store
                .set_key_suspended(&KeyHash::of("nope"), true)
                .await
                .unwrap()
        );

        let w = store.wallet(&ids[3]).await.unwrap().unwrap();
        assert_eq!(w.account_id, acct, "[{kind}]");
        assert_eq!(w.node_id, node(), "[{kind}]");
        assert!(
            store.wallet(&WalletId::generate()).await.unwrap().is_none(),
            "[{kind}]"
        );

        // Another account's wallets never show up.
        let other = account(&store).await;
        let _ = wallet_at(&store, &other, NOW + 100).await;

        let (list, total) = store.list_wallets(&acct, 0, 100).await.unwrap();
        assert_eq!(total, 5, "[{kind}]");
        let listed: Vec<_> = list.iter().map(|w| w.id.clone()).collect();
        let mut expected = ids.clone();
        expected.reverse();
        assert_eq!(listed, expected, "[{kind}] newest first");

        let (page, total) = store.list_wallets(&acct, 1, 2).await.unwrap();
        assert_eq!(total, 5, "[{kind}]");
        assert_eq!(
            page.iter().map(|w| w.id.clone()).collect::<Vec<_>>(),
            expected[1..3].to_vec()
        );
        let (page, total) = store.list_wallets(&acct, 10, 2).await.unwrap();
        assert!(page.is_empty(), "[{kind}]");
        assert_eq!(total, 5, "[{kind}]");
        let (list, total) = store
            .list_wallets(&AccountId::generate(), 0, 10)
            .await
            .unwrap();
        assert!(list.is_empty() && total == 0, "[{kind}]");

        // Same created_at: ordered by id descending (a stable order for paging).
        let acct2 = account(&store).await;
        let mut same = Vec::new();
        for _ in 0..4 {
            same.push(wallet_at(&store, &acct2, NOW).await);
        }
        same.sort();
        same.reverse();
        let (list, _) = store.list_wallets(&acct2, 0, 10).await.unwrap();
        assert_eq!(
            list.into_iter().map(|w| w.id).collect::<Vec<_>>(),
            same,
            "[{kind}]"
        );

        assert_eq!(store.account_count().await.unwrap(), 3, "[{kind}]");
        let rep = assert_clean(kind, &store).await;
        assert_eq!(rep.wallets, 10, "[{kind}]");
        assert_eq!(rep.liabilities_msat, 0, "[{kind}]");
        store.close().await;
    }
}

// ------------------------------------------------------------------ incoming

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invoice_credit_is_idempotent() {
    for (kind, db) in TestDb::all().await {
        let store = connect(&db.url).await;
        let acct = account(&store).await;
        let w = wallet(&store, &acct).await;

        let (inv_id, hash) = invoice(&store, &acct, &w, sat(5000)).await;
        let inv = store.incoming_by_hash(&hash).await.unwrap().unwrap();
        assert_eq!(inv.id, inv_id, "[{kind}]");
        assert_eq!(inv.direction, Direction::Incoming, "[{kind}]");
        assert!(!inv.settled, "[{kind}]");
        assert_eq!(inv.status, None, "[{kind}]");

        // The node reports a little more than asked (allowed by BOLT11): the wallet is credited
        // the whole sats of it, the sub-sat rest goes to the operator's revenue account.
        let received = msat(5_000_123);
        let credited = msat(5_000_000);
        let wtx_id = WtxId::generate();
        let out = store
            .credit_invoice(&hash, received, NOW + 5, &wtx_id)
            .await
            .unwrap();
        let CreditOutcome::Credited(wtx) = out else {
            panic!("[{kind}] not credited: {out:?}")
        };
        assert_eq!(wtx.id, wtx_id, "[{kind}]");
        assert_eq!(wtx.amount_msat, 5_000_000, "[{kind}]");
        assert_eq!(wtx.wtx_type, WtxType::LnDeposit, "[{kind}]");
        assert_eq!(wtx.wallet.id, w, "[{kind}]");
        assert_eq!(wtx.wallet.balance, credited, "[{kind}]");
        assert_eq!(wtx.wallet.wtx_count, 1, "[{kind}]");
        let lntx = wtx.lntx.clone().unwrap();
        assert_eq!(lntx.id, inv_id, "[{kind}]");
        assert!(lntx.settled, "[{kind}]");
        assert_eq!(lntx.settled_at, Some(NOW + 5), "[{kind}]");
        assert_eq!(lntx.amount, received, "[{kind}]");
        assert_eq!(balance(&store, &w).await, 5_000_000, "[{kind}]");
        assert_eq!(store.audit().await.unwrap().revenue_msat, 123, "[{kind}]");
        assert_eq!(
            store.wtx(&wtx_id).await.unwrap().unwrap().id,
            wtx_id,
            "[{kind}]"
        );

        // Replays change nothing (even with a different amount or WTX id).
        for _ in 0..3 {
            let again = store
                .credit_invoice(&hash, received, NOW + 6, &WtxId::generate())
                .await;
            assert_eq!(again.unwrap(), CreditOutcome::AlreadyCredited, "[{kind}]");
        }
        let again = store
            .credit_invoice(&hash, sat(9999), NOW + 6, &WtxId::generate())
            .await;
        assert_eq!(again.unwrap(), CreditOutcome::AlreadyCredited, "[{kind}]");
        assert_eq!(balance(&store, &w).await, 5_000_000, "[{kind}]");
        assert_eq!(wtx_count(&store, &w).await, 1, "[{kind}]");
        let (list, total) = store.list_wtxs(&acct, Some(&w), 0, 10).await.unwrap();
        assert_eq!((list.len(), total), (1, 1), "[{kind}]");

        // A settlement nobody can claim goes to sys:unclaimed, once.
        let unknown = random_hash();
        let out = store
            .credit_invoice(&unknown, sat(77), NOW, &WtxId::generate())
            .await
            .unwrap();
        assert_eq!(out, CreditOutcome::Unclaimed, "[{kind}]");
        for _ in 0..3 {
            let out = store
                .credit_invoice(&unknown, sat(77), NOW, &WtxId::generate())
                .await;
            assert_eq!(out.unwrap(), CreditOutcome::AlreadyCredited, "[{kind}]");
        }
        assert!(
            store.incoming_by_hash(&unknown).await.unwrap().is_none(),
            "[{kind}]"
        );

        let rep = assert_clean(kind, &store).await;
        assert_eq!(rep.liabilities_msat, 5_000_000, "[{kind}]");
        assert_eq!(rep.revenue_msat, 123, "[{kind}]");
        assert_eq!(rep.unclaimed_msat, 77_000, "[{kind}]");
        assert_eq!(rep.in_flight_msat, 0, "[{kind}]");
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keysend_credit() {
    for (kind, db) in TestDb::all().await {
        let store = connect(&db.url).await;
        let acct = account(&store).await;
        let w = wallet(&store, &acct).await;

        let ks = |wallet: Option<WalletId>, amount: Msat| {
            let preimage = Preimage::random();
            KeysendCredit {
                lntx_id: LnTxId::generate(),
                wtx_id: WtxId::generate(),
                wallet_id: wallet,
                payment_hash: preimage.hash(),
                preimage,
                amount,
                custom_records: "{\"696969\":\"x\"}".into(),
                memo: "keysend".into(),
                node_id: node(),
                dest_pubkey: pubkey(),
                settled_at: NOW,
            }
        };

        let k = ks(Some(w.clone()), sat(21));
        let out = store.credit_keysend(&k).await.unwrap();
        let CreditOutcome::Credited(wtx) = out else {
            panic!("[{kind}] {out:?}")
        };
        assert_eq!(wtx.id, k.wtx_id, "[{kind}]");
        assert_eq!(wtx.amount_msat, 21_000, "[{kind}]");
        assert_eq!(wtx.wtx_type, WtxType::LnDeposit, "[{kind}]");
        let lntx = wtx.lntx.unwrap();
        assert!(lntx.is_keysend && lntx.settled, "[{kind}]");
        assert_eq!(lntx.account_id, acct, "[{kind}]");
        assert_eq!(balance(&store, &w).await, 21_000, "[{kind}]");
        // Replays (even with fresh ids) change nothing.
        for _ in 0..2 {
            let mut again = k.clone();
            again.lntx_id = LnTxId::generate();
            again.wtx_id = WtxId::generate();
            assert_eq!(
                store.credit_keysend(&again).await.unwrap(),
                CreditOutcome::AlreadyCredited
            );
        }
        assert_eq!(balance(&store, &w).await, 21_000, "[{kind}]");
        assert_eq!(wtx_count(&store, &w).await, 1, "[{kind}]");

        // Routed to a wallet that does not exist, or to none: unclaimed, once.
        for target in [Some(WalletId::generate()), None] {
            let k = ks(target, sat(5));
            assert_eq!(
                store.credit_keysend(&k).await.unwrap(),
                CreditOutcome::Unclaimed
            );
            assert_eq!(
                store.credit_keysend(&k).await.unwrap(),
                CreditOutcome::AlreadyCredited
            );
            let rec = store.lntx(&k.lntx_id).await.unwrap().unwrap();
            assert_eq!(rec.wallet_id, None, "[{kind}]");
        }
        // A keysend record is not an invoice anyone can pay internally.
        let err = store
            .pay_internal(&internal_cmd(&acct, &w, k.payment_hash))
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            InternalPayError::AlreadyPaid | InternalPayError::NotInternal
        ));

        let rep = assert_clean(kind, &store).await;
        assert_eq!(rep.unclaimed_msat, 10_000, "[{kind}]");
        assert_eq!(rep.liabilities_msat, 21_000, "[{kind}]");
        store.close().await;
    }
}

// ------------------------------------------------------------------ transfers

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transfers() {
    for (kind, db) in TestDb::all().await {
        let store = connect(&db.url).await;
        let acct = account(&store).await;
        let a = wallet(&store, &acct).await;
        let b = wallet(&store, &acct).await;
        deposit(&store, &acct, &a, sat(1000)).await;

        let cmd = transfer_cmd(&acct, &a, &b, msat(300_000));
        let done = store.transfer(&cmd).await.unwrap();
        assert_eq!(done.wtx_out.id, cmd.wtx_out_id, "[{kind}]");
        assert_eq!(done.wtx_out.amount_msat, -300_000, "[{kind}]");
        assert_eq!(done.wtx_out.wtx_type, WtxType::LnTransferOut, "[{kind}]");
        assert_eq!(done.wtx_out.wallet.id, a, "[{kind}]");
        assert_eq!(done.wtx_in.id, cmd.wtx_in_id, "[{kind}]");
        assert_eq!(done.wtx_in.amount_msat, 300_000, "[{kind}]");
        assert_eq!(done.wtx_in.wtx_type, WtxType::LnTransferIn, "[{kind}]");
        assert_eq!(done.wtx_in.wallet.id, b, "[{kind}]");
        assert!(done.wtx_in.lntx.is_none(), "[{kind}]");
        assert_eq!(balance(&store, &a).await, 700_000, "[{kind}]");
        assert_eq!(balance(&store, &b).await, 300_000, "[{kind}]");
        assert_eq!(wtx_count(&store, &a).await, 2, "[{kind}]");
        assert_eq!(wtx_count(&store, &b).await, 1, "[{kind}]");
        // The answer is built from what was written, not re-read: it must equal a fresh read.
        assert_eq!(
            store.wtx(&cmd.wtx_out_id).await.unwrap().as_ref(),
            Some(&done.wtx_out),
            "[{kind}]"
        );
        assert_eq!(
            store.wtx(&cmd.wtx_in_id).await.unwrap().as_ref(),
            Some(&done.wtx_in),
            "[{kind}]"
        );

        // Insufficient: refused, nothing written.
        let cmd = transfer_cmd(&acct, &a, &b, msat(701_000));
        let err = store.transfer(&cmd).await.unwrap_err();
        assert!(
            matches!(err, TransferError::InsufficientBalance),
            "[{kind}] {err:?}"
        );
        assert!(
            store.wtx(&cmd.wtx_out_id).await.unwrap().is_none(),
            "[{kind}]"
        );
        assert!(
            store.wtx(&cmd.wtx_in_id).await.unwrap().is_none(),
            "[{kind}]"
        );
        assert_eq!(balance(&store, &a).await, 700_000, "[{kind}]");
        assert_eq!(balance(&store, &b).await, 300_000, "[{kind}]");
        assert_eq!(wtx_count(&store, &a).await, 2, "[{kind}]");
        // Exactly the whole balance is fine.
        store
            .transfer(&transfer_cmd(&acct, &a, &b, msat(700_000)))
            .await
            .unwrap();
        assert_eq!(balance(&store, &a).await, 0, "[{kind}]");
        assert_eq!(balance(&store, &b).await, 1_000_000, "[{kind}]");

        let err = store
            .transfer(&transfer_cmd(&acct, &b, &b, sat(1)))
            .await
            .unwrap_err();
        assert!(matches!(err, TransferError::SameWallet), "[{kind}] {err:?}");

        // Foreign or unknown wallets on either side.
        let mallory = account(&store).await;
        let m = wallet(&store, &mallory).await;
        deposit(&store, &mallory, &m, sat(50)).await;
        let err = store
            .transfer(&transfer_cmd(&mallory, &b, &m, sat(1)))
            .await
            .unwrap_err();
        assert!(
            matches!(err, TransferError::SourceNotFound),
            "[{kind}] {err:?}"
        );
        let err = store
            .transfer(&transfer_cmd(&acct, &b, &m, sat(1)))
            .await
            .unwrap_err();
        assert!(
            matches!(err, TransferError::DestNotFound),
            "[{kind}] {err:?}"
        );
        let err = store
            .transfer(&transfer_cmd(&acct, &m, &b, sat(1)))
            .await
            .unwrap_err();
        assert!(
            matches!(err, TransferError::SourceNotFound),
            "[{kind}] {err:?}"
        );
        let ghost = WalletId::generate();
        let err = store
            .transfer(&transfer_cmd(&acct, &ghost, &b, sat(1)))
            .await
            .unwrap_err();
        assert!(
            matches!(err, TransferError::SourceNotFound),
            "[{kind}] {err:?}"
        );
        let err = store
            .transfer(&transfer_cmd(&acct, &b, &ghost, sat(1)))
            .await
            .unwrap_err();
        assert!(
            matches!(err, TransferError::DestNotFound),
            "[{kind}] {err:?}"
        );
        assert_eq!(balance(&store, &b).await, 1_000_000, "[{kind}]");
        assert_eq!(balance(&store, &m).await, 50_000, "[{kind}]");

        // Account-wide history, newest first.
        let (list, total) = store.list_wtxs(&acct, None, 0, 100).await.unwrap();
        assert_eq!(total, 5, "[{kind}]");
        assert_eq!(list.len(), 5, "[{kind}]");
        assert_eq!(list[0].wtx_type, WtxType::LnTransferIn, "[{kind}]");
        assert_eq!(list[4].wtx_type, WtxType::LnDeposit, "[{kind}]");
        // A wallet of another account lists nothing.
        let (list, total) = store.list_wtxs(&acct, Some(&m), 0, 100).await.unwrap();
        assert!(list.is_empty() && total == 0, "[{kind}]");

        let rep = assert_clean(kind, &store).await;
        assert_eq!(rep.liabilities_msat, 1_050_000, "[{kind}]");
        store.close().await;
    }
}

// ------------------------------------------------------------------ outgoing payments

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reserve_then_settle_with_fee() {
    for (kind, db) in TestDb::all().await {
        let store = connect(&db.url).await;
        let acct = account(&store).await;
        let w = wallet(&store, &acct).await;
        deposit(&store, &acct, &w, sat(10_000)).await;

        let hash = random_hash();
        let cmd = reserve_cmd(&acct, &w, hash, sat(1000), sat(50));
        let p = store.reserve_payment(&cmd).await.unwrap();
        assert_eq!(p.id, cmd.lntx_id, "[{kind}]");
        assert_eq!(p.status, Some(PaymentStatus::Reserved), "[{kind}]");
        assert_eq!(p.direction, Direction::Outgoing, "[{kind}]");
        assert_eq!(p.amount, sat(1000), "[{kind}]");
        assert_eq!(p.fee_limit, sat(50), "[{kind}]");
        assert_eq!(balance(&store, &w).await, 8_950_000, "[{kind}]");
        // Reserving writes no WTX: history = balance + live reserve.
        assert_eq!(wtx_count(&store, &w).await, 1, "[{kind}]");
        let rep = assert_clean(kind, &store).await;
        assert_eq!(rep.in_flight_msat, 1_050_000, "[{kind}]");
        assert_eq!(store.live_payments().await.unwrap().len(), 1, "[{kind}]");
        assert_eq!(
            store.outgoing_by_hash(&hash).await.unwrap().unwrap().id,
            p.id,
            "[{kind}]"
        );

        let live = [PaymentStatus::Reserved];
        assert!(
            store
                .mark_payment(&p.id, &live, PaymentStatus::Dispatched, NOW)
                .await
                .unwrap()
        );
        assert!(
            !store
                .mark_payment(&p.id, &live, PaymentStatus::Dispatched, NOW)
                .await
                .unwrap()
        );
        assert!(
            store
                .mark_payment(
                    &p.id,
                    &[PaymentStatus::Succeeded],
                    PaymentStatus::Failed,
                    NOW
                )
                .await
                .is_err()
        );

        let s = settle_cmd(&p.id, msat(7_123));
        let done = store.settle_payment(&s).await.unwrap();
        assert!(done.newly_settled, "[{kind}]");
        assert_eq!(done.wtx.id, s.wtx_id, "[{kind}]");
        assert_eq!(done.wtx.amount_msat, -1_000_000, "[{kind}]");
        assert_eq!(done.wtx.wtx_type, WtxType::LnWithdrawal, "[{kind}]");
        let fee_wtx = done.fee_wtx.clone().unwrap();
        assert_eq!(fee_wtx.id, s.fee_wtx_id, "[{kind}]");
        // The 7,123 msat fee is charged as 8 sats; 877 msat are the operator's revenue.
        assert_eq!(fee_wtx.amount_msat, -8_000, "[{kind}]");
        assert_eq!(fee_wtx.wtx_type, WtxType::NetworkFee, "[{kind}]");
        assert_eq!(
            balance(&store, &w).await,
            10_000_000 - 1_000_000 - 8_000,
            "[{kind}]"
        );
        assert_eq!(wtx_count(&store, &w).await, 3, "[{kind}]");
        let rec = store.lntx(&p.id).await.unwrap().unwrap();
        assert_eq!(rec.status, Some(PaymentStatus::Succeeded), "[{kind}]");
        assert!(rec.settled, "[{kind}]");
        assert_eq!(rec.fee, msat(7_123), "[{kind}]");
        assert_eq!(rec.preimage, Some(s.preimage), "[{kind}]");
        let booked = store.wtxs_of_lntx(&p.id).await.unwrap();
        assert_eq!(
            booked.iter().map(|w| w.id.clone()).collect::<Vec<_>>(),
            vec![s.wtx_id.clone(), s.fee_wtx_id.clone()]
        );
        assert!(store.live_payments().await.unwrap().is_empty(), "[{kind}]");
        let rep = assert_clean(kind, &store).await;
        assert_eq!(rep.in_flight_msat, 0, "[{kind}]");

        // Settling again (a replayed event) changes nothing and returns the same WTXs.
        let again = store
            .settle_payment(&settle_cmd(&p.id, msat(9_000)))
            .await
            .unwrap();
        assert!(!again.newly_settled, "[{kind}]");
        assert_eq!(again.wtx.id, s.wtx_id, "[{kind}]");
        assert_eq!(
            again.fee_wtx.map(|w| w.id),
            Some(s.fee_wtx_id.clone()),
            "[{kind}]"
        );
        assert_eq!(balance(&store, &w).await, 8_992_000, "[{kind}]");
        // It can never fail now.
        let err = store
            .fail_payment(&p.id, "FAILURE_REASON_NO_ROUTE", NOW)
            .await
            .unwrap_err();
        assert!(
            matches!(err, PaymentStateError::AlreadySucceeded),
            "[{kind}] {err:?}"
        );
        assert_eq!(balance(&store, &w).await, 8_992_000, "[{kind}]");
        assert_eq!(
            store.lntx(&p.id).await.unwrap().unwrap().status,
            Some(PaymentStatus::Succeeded)
        );

        // Zero fee: no network_fee WTX.
        let p2 = store
            .reserve_payment(&reserve_cmd(&acct, &w, random_hash(), sat(10), sat(1)))
            .await
            .unwrap();
        let done = store
            .settle_payment(&settle_cmd(&p2.id, Msat::ZERO))
            .await
            .unwrap();
        assert!(done.fee_wtx.is_none(), "[{kind}]");
        assert_eq!(balance(&store, &w).await, 8_982_000, "[{kind}]");

        // Fee above the limit: the wallet pays only the limit, the operator the rest.
        let p3 = store
            .reserve_payment(&reserve_cmd(&acct, &w, random_hash(), sat(10), sat(2)))
            .await
            .unwrap();
        let done = store
            .settle_payment(&settle_cmd(&p3.id, sat(5)))
            .await
            .unwrap();
        assert_eq!(done.fee_wtx.unwrap().amount_msat, -2_000, "[{kind}]");
        assert_eq!(balance(&store, &w).await, 8_982_000 - 12_000, "[{kind}]");

        let err = store
            .settle_payment(&settle_cmd(&LnTxId::generate(), Msat::ZERO))
            .await
            .unwrap_err();
        assert!(
            matches!(err, PaymentStateError::NotFound),
            "[{kind}] {err:?}"
        );
        let rep = assert_clean(kind, &store).await;
        assert_eq!(rep.unclaimed_msat, -3_000, "[{kind}]");
        // Only the first fee had a sub-sat part: 8,000 charged for 7,123.
        assert_eq!(rep.revenue_msat, 877, "[{kind}]");
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reserve_then_fail_refunds() {
    for (kind, db) in TestDb::all().await {
        let store = connect(&db.url).await;
        let acct = account(&store).await;
        let w = wallet(&store, &acct).await;
        deposit(&store, &acct, &w, msat(2_345_000)).await;

        let p = store
            .reserve_payment(&reserve_cmd(
                &acct,
                &w,
                random_hash(),
                msat(1_000_001),
                msat(3_333),
            ))
            .await
            .unwrap();
        // The reserve is the 1,003,334 msat worst case rounded up to the sat.
        assert_eq!(balance(&store, &w).await, 2_345_000 - 1_004_000, "[{kind}]");
        assert!(
            store
                .mark_payment(
                    &p.id,
                    &[PaymentStatus::Reserved],
                    PaymentStatus::Dispatched,
                    NOW
                )
                .await
                .unwrap()
        );
        assert!(
            store
                .mark_payment(
                    &p.id,
                    &[PaymentStatus::Dispatched],
                    PaymentStatus::Unknown,
                    NOW
                )
                .await
                .unwrap()
        );
        assert_clean(kind, &store).await;

        let rec = store
            .fail_payment(&p.id, "FAILURE_REASON_NO_ROUTE", NOW + 2)
            .await
            .unwrap();
        assert_eq!(rec.status, Some(PaymentStatus::Failed), "[{kind}]");
        assert_eq!(
            rec.failure_reason.as_deref(),
            Some("FAILURE_REASON_NO_ROUTE"),
            "[{kind}]"
        );
        assert_eq!(balance(&store, &w).await, 2_345_000, "[{kind}]");
        assert_eq!(wtx_count(&store, &w).await, 1, "[{kind}]");
        assert!(
            store.wtxs_of_lntx(&p.id).await.unwrap().is_empty(),
            "[{kind}]"
        );

        // Failing again is a no-op that reports the stored state.
        let again = store
            .fail_payment(&p.id, "FAILURE_REASON_TIMEOUT", NOW + 3)
            .await
            .unwrap();
        assert_eq!(
            again.failure_reason.as_deref(),
            Some("FAILURE_REASON_NO_ROUTE"),
            "[{kind}]"
        );
        assert_eq!(balance(&store, &w).await, 2_345_000, "[{kind}]");

        // A success after a failure is refused.
        let err = store
            .settle_payment(&settle_cmd(&p.id, Msat::ZERO))
            .await
            .unwrap_err();
        assert!(
            matches!(err, PaymentStateError::AlreadyFailed),
            "[{kind}] {err:?}"
        );
        assert_eq!(balance(&store, &w).await, 2_345_000, "[{kind}]");
        // And a failed payment cannot be revived.
        assert!(
            !store
                .mark_payment(
                    &p.id,
                    &[PaymentStatus::Reserved, PaymentStatus::Unknown],
                    PaymentStatus::Dispatched,
                    NOW
                )
                .await
                .unwrap()
        );

        let err = store
            .fail_payment(&LnTxId::generate(), "x", NOW)
            .await
            .unwrap_err();
        assert!(
            matches!(err, PaymentStateError::NotFound),
            "[{kind}] {err:?}"
        );
        let rep = assert_clean(kind, &store).await;
        assert_eq!(rep.in_flight_msat, 0, "[{kind}]");
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reserve_rules() {
    for (kind, db) in TestDb::all().await {
        let store = connect(&db.url).await;
        let acct = account(&store).await;
        let w = wallet(&store, &acct).await;
        deposit(&store, &acct, &w, sat(1000)).await;

        // amount + fee limit must fit.
        let err = store
            .reserve_payment(&reserve_cmd(&acct, &w, random_hash(), sat(990), sat(11)))
            .await
            .unwrap_err();
        let ReserveError::InsufficientBalance(b) = err else {
            panic!("[{kind}] {err:?}")
        };
        assert_eq!(b, sat(1000), "[{kind}]");
        assert_eq!(balance(&store, &w).await, 1_000_000, "[{kind}]");
        assert!(store.live_payments().await.unwrap().is_empty(), "[{kind}]");

        let hash = random_hash();
        let first = store
            .reserve_payment(&reserve_cmd(&acct, &w, hash, sat(500), sat(10)))
            .await
            .unwrap();
        // The same hash while the first is live: in flight (naming the live payment).
        let err = store
            .reserve_payment(&reserve_cmd(&acct, &w, hash, sat(1), Msat::ZERO))
            .await
            .unwrap_err();
        let ReserveError::InFlight(id) = err else {
            panic!("[{kind}] {err:?}")
        };
        assert_eq!(id, first.id, "[{kind}]");
        assert_eq!(balance(&store, &w).await, 490_000, "[{kind}]");
        store
            .settle_payment(&settle_cmd(&first.id, sat(1)))
            .await
            .unwrap();
        assert_eq!(balance(&store, &w).await, 499_000, "[{kind}]");
        // After success: paid.
        let err = store
            .reserve_payment(&reserve_cmd(&acct, &w, hash, sat(1), Msat::ZERO))
            .await
            .unwrap_err();
        assert!(matches!(err, ReserveError::AlreadyPaid), "[{kind}] {err:?}");

        // After failure: allowed again.
        let hash2 = random_hash();
        let p = store
            .reserve_payment(&reserve_cmd(&acct, &w, hash2, sat(100), sat(5)))
            .await
            .unwrap();
        store
            .fail_payment(&p.id, "FAILURE_REASON_NO_ROUTE", NOW)
            .await
            .unwrap();
        let retry = store
            .reserve_payment(&reserve_cmd(&acct, &w, hash2, sat(100), sat(5)))
            .await
            .unwrap();
        assert_ne!(retry.id, p.id, "[{kind}]");
        assert_eq!(
            store.outgoing_by_hash(&hash2).await.unwrap().unwrap().id,
            retry.id,
            "[{kind}]"
        );
        assert_eq!(balance(&store, &w).await, 499_000 - 105_000, "[{kind}]");

        // Unknown or foreign wallet.
        let err = store
            .reserve_payment(&reserve_cmd(
                &acct,
                &WalletId::generate(),
                random_hash(),
                sat(1),
                Msat::ZERO,
            ))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ReserveError::WalletNotFound),
            "[{kind}] {err:?}"
        );
        let other = account(&store).await;
        let err = store
            .reserve_payment(&reserve_cmd(&other, &w, random_hash(), sat(1), Msat::ZERO))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ReserveError::WalletNotFound),
            "[{kind}] {err:?}"
        );

        // A hash of one of our invoices that the node already settled is paid.
        let payee = wallet(&store, &acct).await;
        let (_, paid_hash) = invoice(&store, &acct, &payee, sat(3)).await;
        store
            .credit_invoice(&paid_hash, sat(3), NOW, &WtxId::generate())
            .await
            .unwrap();
        let err = store
            .reserve_payment(&reserve_cmd(&acct, &w, paid_hash, sat(3), Msat::ZERO))
            .await
            .unwrap_err();
        assert!(matches!(err, ReserveError::AlreadyPaid), "[{kind}] {err:?}");

        let rep = assert_clean(kind, &store).await;
        assert_eq!(rep.in_flight_msat, 105_000, "[{kind}]");
        store.close().await;
    }
}

// ------------------------------------------------------------------ internal payments

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pay_internal_invoice() {
    for (kind, db) in TestDb::all().await {
        let store = connect(&db.url).await;
        let acct = account(&store).await;
        let payer = wallet(&store, &acct).await;
        let payee_acct = account(&store).await;
        let payee = wallet(&store, &payee_acct).await;
        deposit(&store, &acct, &payer, sat(1000)).await;

        let (inv_id, hash) = invoice(&store, &payee_acct, &payee, sat(300)).await;
        let cmd = internal_cmd(&acct, &payer, hash);
        let paid = store.pay_internal(&cmd).await.unwrap();
        assert_eq!(paid.payer_wtx.id, cmd.payer_wtx_id, "[{kind}]");
        assert_eq!(paid.payer_wtx.amount_msat, -300_000, "[{kind}]");
        assert_eq!(paid.payer_wtx.wtx_type, WtxType::LnWithdrawal, "[{kind}]");
        assert_eq!(paid.payer_wtx.wallet.id, payer, "[{kind}]");
        assert_eq!(paid.payee_wtx.id, cmd.payee_wtx_id, "[{kind}]");
        assert_eq!(paid.payee_wtx.amount_msat, 300_000, "[{kind}]");
        assert_eq!(paid.payee_wtx.wtx_type, WtxType::LnDeposit, "[{kind}]");
        assert_eq!(paid.payee_wtx.wallet.id, payee, "[{kind}]");
        // Built from what was written, not re-read: equal to a fresh read.
        for w in [&paid.payer_wtx, &paid.payee_wtx] {
            assert_eq!(
                store.wtx(&w.id).await.unwrap().as_ref(),
                Some(w),
                "[{kind}]"
            );
        }
        // Paying an invoice of one's own wallet: both entries on one wallet, nothing moves.
        let (_, own_hash) = invoice(&store, &acct, &payer, sat(10)).await;
        let own = store
            .pay_internal(&internal_cmd(&acct, &payer, own_hash))
            .await
            .unwrap();
        for w in [&own.payer_wtx, &own.payee_wtx] {
            assert_eq!(
                store.wtx(&w.id).await.unwrap().as_ref(),
                Some(w),
                "[{kind}]"
            );
        }
        assert_eq!(balance(&store, &payer).await, 700_000, "[{kind}]");
        assert_eq!(balance(&store, &payee).await, 300_000, "[{kind}]");
        let inv = store.lntx(&inv_id).await.unwrap().unwrap();
        assert!(inv.settled, "[{kind}]");
        let out = store.lntx(&cmd.out_lntx_id).await.unwrap().unwrap();
        assert_eq!(out.status, Some(PaymentStatus::Succeeded), "[{kind}]");
        assert_eq!(out.direction, Direction::Outgoing, "[{kind}]");
        assert_eq!(out.fee, Msat::ZERO, "[{kind}]");
        assert!(out.preimage.is_some(), "[{kind}]");
        assert_eq!(
            store.outgoing_by_hash(&hash).await.unwrap().unwrap().id,
            cmd.out_lntx_id
        );
        // Settling the internal payment again is an idempotent no-op.
        let again = store
            .settle_payment(&settle_cmd(&cmd.out_lntx_id, Msat::ZERO))
            .await
            .unwrap();
        assert!(!again.newly_settled, "[{kind}]");
        assert_eq!(again.wtx.id, cmd.payer_wtx_id, "[{kind}]");

        // Paid: by anyone, internally or over Lightning.
        let other = wallet(&store, &acct).await;
        deposit(&store, &acct, &other, sat(1000)).await;
        let err = store
            .pay_internal(&internal_cmd(&acct, &payer, hash))
            .await
            .unwrap_err();
        assert!(
            matches!(err, InternalPayError::AlreadyPaid),
            "[{kind}] {err:?}"
        );
        let err = store
            .pay_internal(&internal_cmd(&acct, &other, hash))
            .await
            .unwrap_err();
        assert!(
            matches!(err, InternalPayError::AlreadyPaid),
            "[{kind}] {err:?}"
        );
        let err = store
            .reserve_payment(&reserve_cmd(&acct, &other, hash, sat(300), sat(10)))
            .await
            .unwrap_err();
        assert!(matches!(err, ReserveError::AlreadyPaid), "[{kind}] {err:?}");
        assert_eq!(balance(&store, &other).await, 1_000_000, "[{kind}]");

        // The node also got paid for it (someone outside paid the same invoice): unclaimed.
        let out = store
            .credit_invoice(&hash, sat(300), NOW + 10, &WtxId::generate())
            .await
            .unwrap();
        assert_eq!(out, CreditOutcome::Unclaimed, "[{kind}]");
        let out = store
            .credit_invoice(&hash, sat(300), NOW + 10, &WtxId::generate())
            .await
            .unwrap();
        assert_eq!(out, CreditOutcome::AlreadyCredited, "[{kind}]");
        assert_eq!(balance(&store, &payee).await, 300_000, "[{kind}]");
        let rep = assert_clean(kind, &store).await;
        assert_eq!(rep.unclaimed_msat, 300_000, "[{kind}]");

        // Refusals.
        let err = store
            .pay_internal(&internal_cmd(&acct, &payer, random_hash()))
            .await
            .unwrap_err();
        assert!(
            matches!(err, InternalPayError::NotInternal),
            "[{kind}] {err:?}"
        );
        let (_, expired) = invoice_expiring(&store, &payee_acct, &payee, sat(1), NOW).await;
        let err = store
            .pay_internal(&internal_cmd(&acct, &payer, expired))
            .await
            .unwrap_err();
        assert!(matches!(err, InternalPayError::Expired), "[{kind}] {err:?}");
        let (_, zero) = invoice(&store, &payee_acct, &payee, Msat::ZERO).await;
        let err = store
            .pay_internal(&internal_cmd(&acct, &payer, zero))
            .await
            .unwrap_err();
        assert!(
            matches!(err, InternalPayError::ZeroAmount),
            "[{kind}] {err:?}"
        );
        let (_, big) = invoice(&store, &payee_acct, &payee, sat(701)).await;
        let err = store
            .pay_internal(&internal_cmd(&acct, &payer, big))
            .await
            .unwrap_err();
        let InternalPayError::InsufficientBalance(b) = err else {
            panic!("[{kind}] {err:?}")
        };
        assert_eq!(b, sat(700), "[{kind}]");
        let err = store
            .pay_internal(&internal_cmd(&payee_acct, &payer, big))
            .await
            .unwrap_err();
        assert!(
            matches!(err, InternalPayError::WalletNotFound),
            "[{kind}] {err:?}"
        );
        let err = store
            .pay_internal(&internal_cmd(&acct, &WalletId::generate(), big))
            .await
            .unwrap_err();
        assert!(
            matches!(err, InternalPayError::WalletNotFound),
            "[{kind}] {err:?}"
        );
        // Nothing of that was written.
        assert!(
            !store.incoming_by_hash(&big).await.unwrap().unwrap().settled,
            "[{kind}]"
        );
        assert_eq!(balance(&store, &payer).await, 700_000, "[{kind}]");

        // A live external attempt of our own invoice blocks paying it internally, and the other
        // way round.
        let (_, h) = invoice(&store, &payee_acct, &payee, sat(50)).await;
        let p = store
            .reserve_payment(&reserve_cmd(&acct, &other, h, sat(50), sat(1)))
            .await
            .unwrap();
        let err = store
            .pay_internal(&internal_cmd(&acct, &payer, h))
            .await
            .unwrap_err();
        assert!(
            matches!(err, InternalPayError::AlreadyPaid),
            "[{kind}] {err:?}"
        );
        store
            .fail_payment(&p.id, "FAILURE_REASON_INCORRECT_PAYMENT_DETAILS", NOW)
            .await
            .unwrap();
        store
            .pay_internal(&internal_cmd(&acct, &payer, h))
            .await
            .unwrap();
        assert_eq!(balance(&store, &payer).await, 650_000, "[{kind}]");
        assert_eq!(balance(&store, &other).await, 1_000_000, "[{kind}]");

        // Paying an invoice of one's own wallet moves nothing but is booked.
        let (_, own) = invoice(&store, &acct, &payer, sat(10)).await;
        store
            .pay_internal(&internal_cmd(&acct, &payer, own))
            .await
            .unwrap();
        assert_eq!(balance(&store, &payer).await, 650_000, "[{kind}]");

        assert_clean(kind, &store).await;
        store.close().await;
    }
}

// ------------------------------------------------------------------ jobs and cursors

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_and_cursors() {
    for (kind, db) in TestDb::all().await {
        let store = connect(&db.url).await;
        let acct = account(&store).await;
        let w = wallet(&store, &acct).await;
        let job = |created_at: i64| JobRecord {
            id: JobId::generate(),
            account_id: acct.clone(),
            wallet_id: w.clone(),
            kind: "keysend".into(),
            request: "{\"num_satoshis\":1}".into(),
            status: JobStatus::Queued,
            result_wtx_id: None,
            error: None,
            created_at,
            updated_at: created_at,
        };
        let (j1, j2, j3) = (job(NOW + 2), job(NOW + 1), job(NOW + 3));
        for j in [&j1, &j2, &j3] {
            store.insert_job(j).await.unwrap();
        }
        assert!(
            store.insert_job(&j1).await.is_err(),
            "[{kind}] duplicate id"
        );
        assert_eq!(store.job(&j1.id).await.unwrap().unwrap(), j1, "[{kind}]");
        assert!(
            store.job(&JobId::generate()).await.unwrap().is_none(),
            "[{kind}]"
        );
        let queued: Vec<_> = store
            .queued_jobs()
            .await
            .unwrap()
            .into_iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(
            queued,
            vec![j2.id.clone(), j1.id.clone(), j3.id.clone()],
            "[{kind}] oldest first"
        );

        let wtx = WtxId::generate();
        store
            .finish_job(&j1.id, JobStatus::Succeeded, Some(&wtx), None, NOW + 9)
            .await
            .unwrap();
        store
            .finish_job(&j2.id, JobStatus::Failed, None, Some("no route"), NOW + 9)
            .await
            .unwrap();
        // Finishing again is a no-op.
        store
            .finish_job(&j1.id, JobStatus::Failed, None, Some("late"), NOW + 10)
            .await
            .unwrap();
        let r1 = store.job(&j1.id).await.unwrap().unwrap();
        assert_eq!(r1.status, JobStatus::Succeeded, "[{kind}]");
        assert_eq!(r1.result_wtx_id, Some(wtx), "[{kind}]");
        assert_eq!(r1.error, None, "[{kind}]");
        assert_eq!(r1.updated_at, NOW + 9, "[{kind}]");
        let r2 = store.job(&j2.id).await.unwrap().unwrap();
        assert_eq!(r2.status, JobStatus::Failed, "[{kind}]");
        assert_eq!(r2.error.as_deref(), Some("no route"), "[{kind}]");
        let queued: Vec<_> = store
            .queued_jobs()
            .await
            .unwrap()
            .into_iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(queued, vec![j3.id.clone()], "[{kind}]");

        assert_eq!(store.cursor("invoices").await.unwrap(), 0, "[{kind}]");
        store.set_cursor("invoices", 5).await.unwrap();
        assert_eq!(store.cursor("invoices").await.unwrap(), 5, "[{kind}]");
        store.set_cursor("invoices", 3).await.unwrap();
        assert_eq!(
            store.cursor("invoices").await.unwrap(),
            5,
            "[{kind}] never backwards"
        );
        store.set_cursor("invoices", 5).await.unwrap();
        store.set_cursor("invoices", 42).await.unwrap();
        assert_eq!(store.cursor("invoices").await.unwrap(), 42, "[{kind}]");
        store.set_cursor("payments", 0).await.unwrap();
        assert_eq!(store.cursor("payments").await.unwrap(), 0, "[{kind}]");
        store.set_cursor("payments", 1).await.unwrap();
        assert_eq!(store.cursor("payments").await.unwrap(), 1, "[{kind}]");
        assert_eq!(store.cursor("invoices").await.unwrap(), 42, "[{kind}]");
        assert!(store.set_cursor("x", u64::MAX).await.is_err(), "[{kind}]");
        store.close().await;
    }
}

// ------------------------------------------------------------------ audit

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_detects_corruption() {
    let tampering: [(&str, &'static str); 6] = [
        (
            "wallet balance",
            "UPDATE wallets SET balance_msat = balance_msat + 1",
        ),
        (
            "system balance",
            "UPDATE system_accounts SET balance_msat = balance_msat - 1 WHERE code = 'sys:lightning'",
        ),
        (
            "posting",
            "UPDATE postings SET amount_msat = amount_msat + 1 WHERE txn_id = (SELECT MIN(txn_id) FROM postings)",
        ),
        ("wtx", "DELETE FROM wtxs WHERE wtx_type = 40"),
        (
            "live reserve",
            "UPDATE ln_txs SET status = 'failed' WHERE direction = 'out' AND status = 'reserved'",
        ),
        (
            "orphan posting",
            "INSERT INTO postings (txn_id, account, amount_msat) SELECT MIN(txn_id), 'wal_ghost', 0 FROM postings",
        ),
    ];
    for (what, sql) in tampering {
        for (kind, db) in TestDb::all().await {
            let store = connect(&db.url).await;
            let acct = account(&store).await;
            let [a, b] = [wallet(&store, &acct).await, wallet(&store, &acct).await];
            deposit(&store, &acct, &a, sat(100)).await;
            store
                .transfer(&transfer_cmd(&acct, &a, &b, sat(10)))
                .await
                .unwrap();
            store
                .reserve_payment(&reserve_cmd(&acct, &a, random_hash(), sat(5), sat(1)))
                .await
                .unwrap();
            let p = store
                .reserve_payment(&reserve_cmd(&acct, &b, random_hash(), sat(5), sat(1)))
                .await
                .unwrap();
            store
                .settle_payment(&settle_cmd(&p.id, msat(500)))
                .await
                .unwrap();
            let clean = assert_clean(kind, &store).await;
            assert!(
                clean.transactions >= 5 && clean.postings >= 10,
                "[{kind}] {clean:?}"
            );

            raw_exec(&db.url, sql).await;
            let rep = store.audit().await.unwrap();
            assert!(
                !rep.is_clean(),
                "[{kind}] audit missed tampering with the {what}"
            );
            store.close().await;
        }
    }
}

// ------------------------------------------------------------------ concurrency

async fn timed<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(LIMIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: timed out (deadlock?)"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reserves_never_overdraw() {
    for (kind, db) in TestDb::all().await {
        let store = connect(&db.url).await;
        let acct = account(&store).await;
        let w = wallet(&store, &acct).await;
        deposit(&store, &acct, &w, sat(1000)).await;

        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (store, cmd) = (
                    store.clone(),
                    reserve_cmd(&acct, &w, random_hash(), sat(100), Msat::ZERO),
                );
                tokio::spawn(async move { store.reserve_payment(&cmd).await })
            })
            .collect();
        let results = timed(kind, futures::future::join_all(tasks)).await;
        let (mut ok, mut short) = (0, 0);
        for r in results {
            match r.unwrap() {
                Ok(_) => ok += 1,
                Err(ReserveError::InsufficientBalance(b)) => {
                    assert!(b < sat(100), "[{kind}] refused with {b} available");
                    short += 1;
                }
                Err(e) => panic!("[{kind}] unexpected reserve error: {e:?}"),
            }
        }
        assert_eq!((ok, short), (10, 40), "[{kind}]");
        assert_eq!(balance(&store, &w).await, 0, "[{kind}]");
        assert_eq!(store.live_payments().await.unwrap().len(), 10, "[{kind}]");
        let rep = assert_clean(kind, &store).await;
        assert_eq!(rep.in_flight_msat, 1_000_000, "[{kind}]");
        store.close().await;
    }
}

/// Transfers and internal payments read their wallets without locking them and leave the
/// check that counts to the ledger's guarded debit. Racing from one wallet, more of them pass
/// the early check than the balance covers (on Postgres); exactly as many as it covers must
/// succeed, the rest be refused as insufficient, and each success answer with the balance it
/// left.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_transfers_and_internal_payments_never_overdraw() {
    for (kind, db) in TestDb::all().await {
        let store = connect(&db.url).await;
        let acct = account(&store).await;
        let [payer, to, payee] = [
            wallet(&store, &acct).await,
            wallet(&store, &acct).await,
            wallet(&store, &acct).await,
        ];
        deposit(&store, &acct, &payer, sat(10)).await;
        let mut hashes = Vec::new();
        for _ in 0..20 {
            hashes.push(invoice(&store, &acct, &payee, sat(1)).await.1);
        }
        let mut transfers = Vec::new();
        let mut payments = Vec::new();
        for hash in hashes {
            let (s, cmd) = (store.clone(), transfer_cmd(&acct, &payer, &to, sat(1)));
            transfers.push(tokio::spawn(async move { s.transfer(&cmd).await }));
            let (s, cmd) = (store.clone(), internal_cmd(&acct, &payer, hash));
            payments.push(tokio::spawn(async move { s.pay_internal(&cmd).await }));
        }
        let (transfers, payments) = timed(kind, async {
            tokio::join!(
                futures::future::join_all(transfers),
                futures::future::join_all(payments)
            )
        })
        .await;
        let mut left_after = Vec::new();
        let mut refused = 0;
        for r in transfers {
            match r.unwrap() {
                Ok(done) => left_after.push(done.wtx_out.wallet.balance.as_i64()),
                Err(TransferError::InsufficientBalance) => refused += 1,
                Err(e) => panic!("[{kind}] unexpected transfer error: {e:?}"),
            }
        }
        for r in payments {
            match r.unwrap() {
                Ok(paid) => left_after.push(paid.payer_wtx.wallet.balance.as_i64()),
                Err(InternalPayError::InsufficientBalance(b)) => {
                    assert!(b < sat(1), "[{kind}] refused with {b} available");
                    refused += 1;
                }
                Err(e) => panic!("[{kind}] unexpected payment error: {e:?}"),
            }
        }
        left_after.sort_unstable();
        let expected: Vec<i64> = (0..10).map(|n| n * 1000).collect();
        assert_eq!(
            left_after, expected,
            "[{kind}] one success per sat, each its own balance"
        );
        assert_eq!(refused, 30, "[{kind}]");
        assert_eq!(balance(&store, &payer).await, 0, "[{kind}]");
        assert_eq!(
            balance(&store, &to).await + balance(&store, &payee).await,
            10_000,
            "[{kind}]"
        );
        assert_clean(kind, &store).await;
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reserves_of_one_hash() {
    for (kind, db) in TestDb::all().await {
        let store = connect(&db.url).await;
        let acct = account(&store).await;
        let ws = wallets(&store, &acct, 8).await;
        for w in &ws {
            deposit(&store, &acct, w, sat(100)).await;
        }
        for round in 0..10 {
            let hash = random_hash();
            let tasks: Vec<_> = ws
                .iter()
                .map(|w| {
                    let (store, cmd) = (
                        store.clone(),
                        reserve_cmd(&acct, w, hash, sat(1), Msat::ZERO),
                    );
                    tokio::spawn(async move { store.reserve_payment(&cmd).await })
                })
                .collect();
            let results = timed(kind, futures::future::join_all(tasks)).await;
            let (mut winners, mut named) = (Vec::new(), Vec::new());
            for r in results {
                match r.unwrap() {
                    Ok(p) => winners.push(p.id),
                    // Refusals name the live payment.
                    Err(ReserveError::InFlight(id)) => named.push(id),
                    Err(e) => panic!("[{kind}] round {round}: unexpected error: {e:?}"),
                }
            }
            assert_eq!(
                winners.len(),
                1,
                "[{kind}] round {round}: one live payment per hash"
            );
            assert!(
                named.iter().all(|id| *id == winners[0]),
                "[{kind}] round {round}: {named:?} vs {winners:?}"
            );
        }
        let rep = assert_clean(kind, &store).await;
        assert_eq!(rep.in_flight_msat, 10_000, "[{kind}]");
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_internal_payments_of_one_invoice() {
    for (kind, db) in TestDb::all().await {
        let store = connect(&db.url).await;
        let acct = account(&store).await;
        let [a, b, payee] = [
            wallet(&store, &acct).await,
            wallet(&store, &acct).await,
            wallet(&store, &acct).await,
        ];
        deposit(&store, &acct, &a, sat(1000)).await;
        deposit(&store, &acct, &b, sat(1000)).await;

        for round in 0..20 {
            let (_, hash) = invoice(&store, &acct, &payee, sat(10)).await;
            let ta = {
                let (store, cmd) = (store.clone(), internal_cmd(&acct, &a, hash));
                tokio::spawn(async move { store.pay_internal(&cmd).await })
            };
            let tb = {
                let (store, cmd) = (store.clone(), internal_cmd(&acct, &b, hash));
                tokio::spawn(async move { store.pay_internal(&cmd).await })
            };
            // A third party tries to pay it over Lightning at the same time.
            let tc = {
                let (store, cmd) = (store.clone(), reserve_cmd(&acct, &b, hash, sat(10), sat(1)));
                tokio::spawn(async move { store.reserve_payment(&cmd).await })
            };
            let (ra, rb, rc) = timed(kind, async { tokio::join!(ta, tb, tc) }).await;
            let mut ok = 0;
            for r in [ra.unwrap(), rb.unwrap()] {
                match r {
                    Ok(_) => ok += 1,
                    Err(InternalPayError::AlreadyPaid) => {}
                    Err(e) => panic!("[{kind}] round {round}: unexpected error: {e:?}"),
                }
            }
            match rc.unwrap() {
                Ok(p) => {
                    // The external attempt won the race: the node will fail it.
                    store
                        .fail_payment(&p.id, "FAILURE_REASON_INCORRECT_PAYMENT_DETAILS", NOW)
                        .await
                        .unwrap();
                    assert_eq!(
                        ok, 0,
                        "[{kind}] round {round}: paid internally while live outside"
                    );
                }
                Err(ReserveError::AlreadyPaid) => {
                    assert_eq!(
                        ok, 1,
                        "[{kind}] round {round}: exactly one internal payment"
                    );
                }
                Err(e) => panic!("[{kind}] round {round}: unexpected reserve error: {e:?}"),
            }
        }
        let total =
            balance(&store, &a).await + balance(&store, &b).await + balance(&store, &payee).await;
        assert_eq!(total, 2_000_000, "[{kind}] money conserved");
        let paid = balance(&store, &payee).await;
        assert_eq!(
            2_000_000 - paid,
            balance(&store, &a).await + balance(&store, &b).await
        );
        assert_clean(kind, &store).await;
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn opposite_transfers_do_not_deadlock() {
    for (kind, db) in TestDb::all().await {
        let store = connect(&db.url).await;
        let acct = account(&store).await;
        let [a, b] = [wallet(&store, &acct).await, wallet(&store, &acct).await];
        deposit(&store, &acct, &a, sat(100)).await;
        deposit(&store, &acct, &b, sat(100)).await;

        let mut tasks = Vec::new();
        for i in 0..200u32 {
            let (from, to) = if i.is_multiple_of(2) {
                (&a, &b)
            } else {
                (&b, &a)
            };
            let (store, cmd) = (store.clone(), transfer_cmd(&acct, from, to, sat(1)));
            tasks.push(tokio::spawn(async move { store.transfer(&cmd).await }));
        }
        let results = timed(kind, futures::future::join_all(tasks)).await;
        let mut ok = 0;
        for r in results {
            match r.unwrap() {
                Ok(_) => ok += 1,
                Err(e) => panic!("[{kind}] transfer failed: {e:?}"),
            }
        }
        assert_eq!(ok, 200, "[{kind}]");
        assert_eq!(
            balance(&store, &a).await + balance(&store, &b).await,
            200_000,
            "[{kind}]"
        );
        assert_eq!(balance(&store, &a).await, 100_000, "[{kind}] 100 each way");
        assert_eq!(wtx_count(&store, &a).await, 201, "[{kind}]");
        assert_clean(kind, &store).await;
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_wallets_at_once() {
    for (kind, db) in TestDb::all().await {
        let store = connect(&db.url).await;
        let acct = account(&store).await;
        let ws = Arc::new(wallets(&store, &acct, 20).await);
        for w in ws.iter() {
            deposit(&store, &acct, w, sat(50)).await;
        }
        let mut tasks = Vec::new();
        for i in 0..20usize {
            let (store, acct, ws) = (store.clone(), acct.clone(), ws.clone());
            tasks.push(tokio::spawn(async move {
                let (mut ok, mut refused) = (0u32, 0u32);
                for j in 0..15usize {
                    // Pseudo-random partners, amounts big enough to run some wallets dry.
                    let to = (i + 1 + (i * 7 + j * 3) % 19) % 20;
                    let amount = sat(((i * 13 + j * 5) % 20 + 1) as u64);
                    match store
                        .transfer(&transfer_cmd(&acct, &ws[i], &ws[to], amount))
                        .await
                    {
                        Ok(_) => ok += 1,
                        Err(TransferError::InsufficientBalance) => refused += 1,
                        Err(e) => panic!("transfer failed: {e:?}"),
                    }
                }
                (ok, refused)
            }));
        }
        let results = timed(kind, futures::future::join_all(tasks)).await;
        let ok: u32 = results.into_iter().map(|r| r.unwrap().0).sum();
        assert!(ok > 0, "[{kind}]");
        let (list, _) = store.list_wallets(&acct, 0, 100).await.unwrap();
        let total: i64 = list.iter().map(|w| w.balance.as_i64()).sum();
        assert_eq!(total, 20 * 50_000, "[{kind}] money conserved");
        let rep = assert_clean(kind, &store).await;
        assert_eq!(rep.liabilities_msat, 1_000_000, "[{kind}]");
        store.close().await;
    }
}

/// Every kind of money movement at once on the same few wallets: deposits, transfers, reserves,
/// settlements and refunds must all go through (no deadlock, no spurious database error).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mixed_operations_on_shared_wallets() {
    for (kind, db) in TestDb::all().await {
        let store = connect(&db.url).await;
        let acct = account(&store).await;
        let ws = Arc::new(wallets(&store, &acct, 3).await);
        for w in ws.iter() {
            deposit(&store, &acct, w, sat(100_000)).await;
        }
        let mut tasks = Vec::new();
        for t in 0..12usize {
            let (store, acct, ws) = (store.clone(), acct.clone(), ws.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..12usize {
                    let w = &ws[(t + i) % 3];
                    match (t + i) % 4 {
                        0 => {
                            deposit(&store, &acct, w, sat(7)).await;
                        }
                        1 => {
                            let to = &ws[(t + i + 1) % 3];
                            store
                                .transfer(&transfer_cmd(&acct, w, to, sat(3)))
                                .await
                                .unwrap();
                        }
                        2 => {
                            let p = store
                                .reserve_payment(&reserve_cmd(
                                    &acct,
                                    w,
                                    random_hash(),
                                    sat(5),
                                    sat(2),
                                ))
                                .await
                                .unwrap();
                            store
                                .settle_payment(&settle_cmd(&p.id, sat(1)))
                                .await
                                .unwrap();
                        }
                        _ => {
                            let p = store
                                .reserve_payment(&reserve_cmd(
                                    &acct,
                                    w,
                                    random_hash(),
                                    sat(5),
                                    sat(2),
                                ))
                                .await
                                .unwrap();
                            store
                                .fail_payment(&p.id, "FAILURE_REASON_NO_ROUTE", NOW)
                                .await
                                .unwrap();
                        }
                    }
                }
            }));
        }
        let results = timed(kind, futures::future::join_all(tasks)).await;
        for r in results {
            if let Err(e) = r {
                panic!("[{kind}] a task failed: {e}");
            }
        }
        // 36 deposits of 7 sat, 36 payments of 5 sat + 1 sat fee, transfers net zero.
        let total: i64 = {
            let mut s = 0;
            for w in ws.iter() {
                s += balance(&store, w).await;
            }
            s
        };
        assert_eq!(total, 300_000_000 + 36 * 7_000 - 36 * 6_000, "[{kind}]");
        let rep = assert_clean(kind, &store).await;
        assert_eq!(rep.in_flight_msat, 0, "[{kind}]");
        store.close().await;
    }
}

/// Replayed node events racing each other credit once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_credit_replays_credit_once() {
    for (kind, db) in TestDb::all().await {
        let store = connect(&db.url).await;
        let acct = account(&store).await;
        let w = wallet(&store, &acct).await;
        for round in 0..10 {
            // Our invoice.
            let (_, hash) = invoice(&store, &acct, &w, sat(10)).await;
            let tasks: Vec<_> = (0..6)
                .map(|_| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        store
                            .credit_invoice(&hash, sat(10), NOW, &WtxId::generate())
                            .await
                    })
                })
                .collect();
            let outs: Vec<_> = timed(kind, futures::future::join_all(tasks))
                .await
                .into_iter()
                .map(|r| r.unwrap().unwrap())
                .collect();
            let credited = outs
                .iter()
                .filter(|o| matches!(o, CreditOutcome::Credited(_)))
                .count();
            assert_eq!(credited, 1, "[{kind}] round {round}: {outs:?}");

            // An unknown hash.
            let unknown = random_hash();
            let tasks: Vec<_> = (0..6)
                .map(|_| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        store
                            .credit_invoice(&unknown, sat(1), NOW, &WtxId::generate())
                            .await
                    })
                })
                .collect();
            let outs: Vec<_> = timed(kind, futures::future::join_all(tasks))
                .await
                .into_iter()
                .map(|r| r.unwrap().unwrap())
                .collect();
            let booked = outs
                .iter()
                .filter(|o| **o == CreditOutcome::Unclaimed)
                .count();
            assert_eq!(booked, 1, "[{kind}] round {round}: {outs:?}");

            // A keysend.
            let preimage = Preimage::random();
            let tasks: Vec<_> = (0..6)
                .map(|_| {
                    let store = store.clone();
                    let k = KeysendCredit {
                        lntx_id: LnTxId::generate(),
                        wtx_id: WtxId::generate(),
                        wallet_id: Some(w.clone()),
                        payment_hash: preimage.hash(),
                        preimage,
                        amount: sat(2),
                        custom_records: "{}".into(),
                        memo: "ks".into(),
                        node_id: node(),
                        dest_pubkey: pubkey(),
                        settled_at: NOW,
                    };
                    tokio::spawn(async move { store.credit_keysend(&k).await })
                })
                .collect();
            let outs: Vec<_> = timed(kind, futures::future::join_all(tasks))
                .await
                .into_iter()
                .map(|r| r.unwrap())
                .collect();
            let credited = outs
                .iter()
                .filter(|o| matches!(o, Ok(CreditOutcome::Credited(_))))
                .count();
            assert_eq!(credited, 1, "[{kind}] round {round}: {outs:?}");
            for o in &outs {
                assert!(
                    matches!(
                        o,
                        Ok(CreditOutcome::Credited(_) | CreditOutcome::AlreadyCredited)
                    ),
                    "[{kind}] round {round}: replayed keysend: {o:?}"
                );
            }
        }
        assert_eq!(balance(&store, &w).await, 10 * 12_000, "[{kind}]");
        let rep = assert_clean(kind, &store).await;
        assert_eq!(rep.unclaimed_msat, 10_000, "[{kind}]");
        store.close().await;
    }
}

/// The audit reads one consistent snapshot: running it while money moves finds nothing wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_during_load_is_clean() {
    for (kind, db) in TestDb::all().await {
        let store = connect(&db.url).await;
        let acct = account(&store).await;
        let ws = Arc::new(wallets(&store, &acct, 4).await);
        for w in ws.iter() {
            deposit(&store, &acct, w, sat(10_000)).await;
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut workers = Vec::new();
        for t in 0..4usize {
            let (store, acct, ws, stop) = (store.clone(), acct.clone(), ws.clone(), stop.clone());
            workers.push(tokio::spawn(async move {
                let mut i = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let w = &ws[(t + i) % 4];
                    let p = store
                        .reserve_payment(&reserve_cmd(&acct, w, random_hash(), sat(1), sat(1)))
                        .await
                        .unwrap();
                    deposit(&store, &acct, &ws[(t + i + 1) % 4], sat(1)).await;
                    if i.is_multiple_of(2) {
                        store
                            .settle_payment(&settle_cmd(&p.id, msat(10)))
                            .await
                            .unwrap();
                    } else {
                        store
                            .fail_payment(&p.id, "FAILURE_REASON_NO_ROUTE", NOW)
                            .await
                            .unwrap();
                    }
                    store
                        .transfer(&transfer_cmd(&acct, w, &ws[(t + i + 2) % 4], sat(1)))
                        .await
                        .unwrap();
                    i += 1;
                }
            }));
        }
        let audits = async {
            for n in 0..25 {
                let rep = store.audit().await.unwrap();
                assert!(
                    rep.is_clean(),
                    "[{kind}] audit {n} under load: {:#?}",
                    rep.problems
                );
            }
        };
        timed(kind, audits).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in timed(kind, futures::future::join_all(workers)).await {
            w.unwrap();
        }
        assert_clean(kind, &store).await;
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_databases_are_isolated() {
    let a = TestDb::all().await;
    let b = TestDb::all().await;
    for ((ka, da), (kb, dbb)) in a.iter().zip(b.iter()) {
        assert_eq!(ka, kb);
        assert_eq!(da.kind(), *ka);
        assert_ne!(da.url, dbb.url, "[{ka}]");
        let sa = connect(&da.url).await;
        let sb = connect(&dbb.url).await;
        account(&sa).await;
        assert_eq!(sa.account_count().await.unwrap(), 1, "[{ka}]");
        assert_eq!(sb.account_count().await.unwrap(), 0, "[{ka}]");
        sa.close().await;
        sb.close().await;
    }
    if std::env::var("SATCHEL_SKIP_PG").as_deref() != Ok("1") {
        assert_eq!(
            a.len(),
            2,
            "Postgres must be tested unless SATCHEL_SKIP_PG=1"
        );
    }
}

/// Cursors advanced from several tasks at once (e.g. two processes sharing Postgres) end at the
/// maximum, and no call fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_cursor_updates() {
    for (kind, db) in TestDb::all().await {
        let store = connect(&db.url).await;
        for round in 0..10u64 {
            let name = format!("cursor{round}");
            let tasks: Vec<_> = (1..=8u64)
                .map(|v| {
                    let (store, name) = (store.clone(), name.clone());
                    tokio::spawn(async move { store.set_cursor(&name, v * 10 + round).await })
                })
                .collect();
            for r in timed(kind, futures::future::join_all(tasks)).await {
                r.unwrap()
                    .unwrap_or_else(|e| panic!("[{kind}] round {round}: set_cursor: {e}"));
            }
            assert_eq!(
                store.cursor(&name).await.unwrap(),
                80 + round,
                "[{kind}] round {round}"
            );
        }
        store.close().await;
    }
}
