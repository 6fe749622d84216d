//! Wallets in whole sats (issue 18): sub-sat amounts the node reports are rounded (credits
//! down, charges up) with the remainder in `sys:revenue`, so a wallet's history, added up in
//! the sats it shows, equals its balance; and the upgrade sweep of databases an older version
//! left with msat remainders. Each test on SQLite and on Postgres.

// Test code: panicking on an unexpected error is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use satchel_domain::{
    AccountId, LnTxId, PaymentStatus, Preimage, WalletId, WtxId, WtxType, sats_floor,
};
use satchel_store::schema::SATS_VERSION;
use satchel_store::{CreditOutcome, KeysendCredit, Store, TransferError};
use satchel_testkit::db::TestDb;
use sqlx::Connection as _;

/// Runs raw SQL against the test database, bypassing the store (as an older version wrote).
async fn raw(url: &str, sql: &str) {
    // `raw_sql` wants a `'static` text; a test can afford to leak it.
    let sql: &'static str = Box::leak(sql.to_owned().into_boxed_str());
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

/// The sum of the `num_satoshis` a wallet's history shows (each rounded toward −∞).
async fn history_sats(store: &Store, acct: &AccountId, w: &WalletId) -> i64 {
    let (wtxs, total) = store.list_wtxs(acct, Some(w), 0, 10_000).await.unwrap();
    assert_eq!(wtxs.len() as u64, total);
    wtxs.iter().map(|t| sats_floor(t.amount_msat)).sum()
}

/// The invariant: history in sats == balance in sats, and the balance is whole sats.
async fn assert_adds_up(kind: &str, store: &Store, acct: &AccountId, w: &WalletId) -> i64 {
    let b = balance(store, w).await;
    assert_eq!(b % 1000, 0, "[{kind}] balance {b} msat is not whole sats");
    assert_eq!(
        history_sats(store, acct, w).await * 1000,
        b,
        "[{kind}] history does not add up to the balance"
    );
    b
}

async fn revenue(store: &Store) -> i64 {
    store.audit().await.unwrap().revenue_msat
}

/// The scenario in the ledger: 40 withdrawals of 500 sats each paying a 1,500 msat
/// routing fee. Each fee is charged as 2 sats; the 500 msat above the real fee go to the
/// revenue account; the history adds up to the balance after every payment.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sub_sat_fees_round_up_and_history_adds_up() {
    for (kind, db) in TestDb::all().await {
        let store = connect(&db.url).await;
        let acct = account(&store).await;
        let w = wallet(&store, &acct).await;
        deposit(&store, &acct, &w, sat(30_000)).await;
        let rev0 = revenue(&store).await;
        for i in 0..40 {
            let p = store
                .reserve_payment(&reserve_cmd(&acct, &w, random_hash(), sat(500), sat(25)))
                .await
                .unwrap();
            // Reserved: amount + limit, whole sats; history still adds up with the reserve.
            assert_eq!(
                history_sats(&store, &acct, &w).await * 1000,
                balance(&store, &w).await + 525_000,
                "[{kind}] {i}"
            );
            let s = store
                .settle_payment(&settle_cmd(&p.id, msat(1_500)))
                .await
                .unwrap();
            assert_eq!(s.wtx.amount_msat, -500_000, "[{kind}]");
            assert_eq!(s.fee_wtx.unwrap().amount_msat, -2_000, "[{kind}]");
            // The lnTx keeps the fee the node really paid.
            let rec = store.lntx(&p.id).await.unwrap().unwrap();
            assert_eq!(rec.fee, msat(1_500), "[{kind}]");
            assert_adds_up(kind, &store, &acct, &w).await;
        }
        assert_eq!(balance(&store, &w).await, (30_000 - 40 * 502) * 1000);
        assert_eq!(revenue(&store).await - rev0, 40 * 500, "[{kind}]");
        assert_clean(kind, &store).await;
        store.close().await;
    }
}

/// Every other way a wallet's balance moves, with amounts that are not whole sats.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sub_sat_amounts_everywhere_keep_wallets_whole() {
    for (kind, db) in TestDb::all().await {
        let store = connect(&db.url).await;
        let acct = account(&store).await;
        let w = wallet(&store, &acct).await;
        let w2 = wallet(&store, &acct).await;
        let rev0 = revenue(&store).await;

        // An amountless invoice paid with 1,500 msat: 1 sat credited, 500 msat to revenue.
        let (inv, hash) = invoice(&store, &acct, &w, msat(0)).await;
        let CreditOutcome::Credited(wtx) = store
            .credit_invoice(&hash, msat(1_500), NOW, &WtxId::generate())
            .await
            .unwrap()
        else {
            panic!("[{kind}] not credited");
        };
        assert_eq!(wtx.amount_msat, 1_000, "[{kind}]");
        // The lnTx records what the node received.
        assert_eq!(store.lntx(&inv).await.unwrap().unwrap().amount, msat(1_500));
        // An overpaid invoice (10 sats asked, 10,999 msat paid).
        let (_, hash) = invoice(&store, &acct, &w, sat(10)).await;
        store
            .credit_invoice(&hash, msat(10_999), NOW, &WtxId::generate())
            .await
            .unwrap();
        // A keysend of 2,999 msat.
        let out = store
            .credit_keysend(&KeysendCredit {
                lntx_id: LnTxId::generate(),
                wtx_id: WtxId::generate(),
                wallet_id: Some(w.clone()),
                payment_hash: random_hash(),
                preimage: Preimage::random(),
                amount: msat(2_999),
                custom_records: "{}".into(),
                memo: "ks".into(),
                node_id: node(),
                dest_pubkey: pubkey(),
                settled_at: NOW,
            })
            .await
            .unwrap();
        assert!(matches!(out, CreditOutcome::Credited(ref t) if t.amount_msat == 2_000));
        assert_eq!(balance(&store, &w).await, 13_000, "[{kind}]");
        assert_eq!(revenue(&store).await - rev0, 500 + 999 + 999, "[{kind}]");
        assert_adds_up(kind, &store, &acct, &w).await;

        // A payment of a sub-sat amount (1,500 msat) with a 1,100 msat limit: the reserve is
        // 3 sats (2,600 rounded up); a 1,000 msat fee makes 2,500 msat charged as 3 sats,
        // shown as 2 (the amount rounded up) + 1.
        let p = store
            .reserve_payment(&reserve_cmd(
                &acct,
                &w,
                random_hash(),
                msat(1_500),
                msat(1_100),
            ))
            .await
            .unwrap();
        assert_eq!(balance(&store, &w).await, 10_000, "[{kind}]");
        let s = store
            .settle_payment(&settle_cmd(&p.id, msat(1_000)))
            .await
            .unwrap();
        assert_eq!(s.wtx.amount_msat, -2_000, "[{kind}]");
        assert_eq!(s.fee_wtx.unwrap().amount_msat, -1_000, "[{kind}]");
        assert_eq!(balance(&store, &w).await, 10_000, "[{kind}]");
        assert_eq!(revenue(&store).await - rev0, 2_498 + 500, "[{kind}]");
        assert_adds_up(kind, &store, &acct, &w).await;

        // A failed payment of a sub-sat amount gives the whole-sat reserve back.
        let p = store
            .reserve_payment(&reserve_cmd(&acct, &w, random_hash(), msat(1_500), msat(0)))
            .await
            .unwrap();
        assert_eq!(balance(&store, &w).await, 8_000, "[{kind}]");
        store
            .fail_payment(&p.id, "FAILURE_REASON_NO_ROUTE", NOW)
            .await
            .unwrap();
        assert_eq!(balance(&store, &w).await, 10_000, "[{kind}]");

        // A fee equal to the limit, with a sub-sat limit: never more than the reserve.
        let p = store
            .reserve_payment(&reserve_cmd(&acct, &w, random_hash(), sat(5), msat(1_001)))
            .await
            .unwrap();
        assert_eq!(balance(&store, &w).await, 3_000, "[{kind}]");
        let s = store
            .settle_payment(&settle_cmd(&p.id, msat(1_001)))
            .await
            .unwrap();
        assert_eq!(s.fee_wtx.unwrap().amount_msat, -2_000, "[{kind}]");
        assert_eq!(balance(&store, &w).await, 3_000, "[{kind}]");
        assert_adds_up(kind, &store, &acct, &w).await;

        // A transfer of a sub-sat amount is refused and writes nothing (the API only ever
        // transfers whole sats; the ledger refuses anything else).
        let count = wtx_count(&store, &w).await;
        let r = store
            .transfer(&transfer_cmd(&acct, &w, &w2, msat(1_500)))
            .await;
        assert!(matches!(r, Err(TransferError::Store(_))), "[{kind}] {r:?}");
        assert_eq!(balance(&store, &w).await, 3_000, "[{kind}]");
        assert_eq!(balance(&store, &w2).await, 0, "[{kind}]");
        assert_eq!(wtx_count(&store, &w).await, count, "[{kind}]");
        store
            .transfer(&transfer_cmd(&acct, &w, &w2, sat(2)))
            .await
            .unwrap();
        assert_adds_up(kind, &store, &acct, &w).await;
        assert_adds_up(kind, &store, &acct, &w2).await;
        assert_clean(kind, &store).await;
        store.close().await;
    }
}

/// A database an older version left: routing fees charged to the msat (the 40 × 1,500
/// msat), a sub-sat deposit, and a live payment reserved to the msat. Opening it with this
/// version sweeps the remainders into `sys:revenue` with balanced postings, adds a visible
/// rounding correction where the shown history fell short, and the audit is clean. The sweep
/// runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrade_sweeps_msat_remainders() {
    for (kind, db) in TestDb::all().await {
        // The schema as the version before the sweep left it.
        let old = Store::connect_at_schema(&db.url, SATS_VERSION - 1)
            .await
            .unwrap();
        let acct = account(&old).await;
        old.close().await;
        // Wallets and whole-sat deposits as the older version wrote them (in SQL: today's
        // store code reads columns later migrations added).
        let (fees, small, live) = (
            WalletId::generate(),
            WalletId::generate(),
            WalletId::generate(),
        );

        // What the older version wrote for sub-sat amounts, row by row.
        let mut sql = String::new();
        let ln = |sql: &mut String, kind: &str, r: &str, legs: &[(&str, i64)]| {
            sql.push_str(&format!(
                "INSERT INTO ledger_txns (kind, ref, created_at) VALUES ('{kind}', '{r}', {NOW});\n"
            ));
            for (acc, amt) in legs {
                sql.push_str(&format!(
                    "INSERT INTO postings (txn_id, account, amount_msat) VALUES \
                     ((SELECT MAX(id) FROM ledger_txns), '{acc}', {amt});\n\
                     UPDATE system_accounts SET balance_msat = balance_msat + {amt} WHERE code = '{acc}';\n\
                     UPDATE wallets SET balance_msat = balance_msat + {amt} WHERE id = '{acc}';\n"
                ));
            }
        };
        let wtx = |sql: &mut String, w: &WalletId, amt: i64, t: WtxType| {
            sql.push_str(&format!(
                "INSERT INTO wtxs (id, wallet_id, account_id, created_at, amount_msat, wtx_type, \
                 user_label, lntx_id, pass_thru) VALUES ('{}', '{w}', '{acct}', {NOW}, {amt}, {}, \
                 'old', NULL, '{{}}');\n\
                 UPDATE wallets SET wtx_count = wtx_count + 1 WHERE id = '{w}';\n",
                WtxId::generate(),
                t.code()
            ));
        };
        for w in [&fees, &small, &live] {
            sql.push_str(&format!(
                "INSERT INTO wallets (id, account_id, user_label, created_at, updated_at, \
                 balance_msat, wtx_count, status, node_id) VALUES ('{w}', '{acct}', 'old', \
                 {NOW}, {NOW}, 0, 0, 'active', 'lnod_test');\n"
            ));
        }
        for (i, (w, amt)) in [(&fees, 30_000_000), (&live, 10_000)]
            .into_iter()
            .enumerate()
        {
            ln(
                &mut sql,
                "ln_deposit",
                &format!("olddeposit{i}"),
                &[(w.as_str(), amt), ("sys:lightning", -amt)],
            );
            wtx(&mut sql, w, amt, WtxType::LnDeposit);
        }
        // 40 withdrawals of 500 sats, each with a 1,500 msat fee charged to the msat.
        for i in 0..40 {
            ln(
                &mut sql,
                "payment_settle",
                &format!("old{i}"),
                &[(fees.as_str(), -501_500), ("sys:lightning", 501_500)],
            );
            wtx(&mut sql, &fees, -500_000, WtxType::LnWithdrawal);
            wtx(&mut sql, &fees, -1_500, WtxType::NetworkFee);
        }
        // An amountless invoice paid with 1,500 msat, credited to the msat.
        ln(
            &mut sql,
            "ln_deposit",
            "oldsmall",
            &[(small.as_str(), 1_500), ("sys:lightning", -1_500)],
        );
        wtx(&mut sql, &small, 1_500, WtxType::LnDeposit);
        // A live payment of 1,500 msat with a 1,000 msat limit, reserved to the msat.
        let lntx = LnTxId::generate();
        let hash = random_hash();
        sql.push_str(&format!(
            "INSERT INTO ln_txs (id, account_id, wallet_id, created_at, updated_at, direction, \
             node_id, dest_pubkey, payment_request, payment_hash, memo, amount_msat, \
             fee_limit_msat, pass_thru, status) VALUES ('{lntx}', '{acct}', '{live}', {NOW}, \
             {NOW}, 'out', 'lnod_test', '{}', 'lnbcrt1old', '{}', 'old', 1500, 1000, '{{}}', \
             'dispatched');\n",
            pubkey(),
            hash.to_hex()
        ));
        ln(
            &mut sql,
            "payment_reserve",
            lntx.as_str(),
            &[(live.as_str(), -2_500), ("sys:in_flight", 2_500)],
        );
        raw(&db.url, &sql).await;

        // This version opens it: the migration sweeps.
        let store = connect(&db.url).await;
        let rep = assert_clean(kind, &store).await;
        // Revenue: 500 (small's remainder) + 500 (live's remainder) − 500 (the live reserve
        // topped up to 3 sats, paid by the operator).
        assert_eq!(rep.revenue_msat, 500, "[{kind}]");
        assert_eq!(rep.in_flight_msat, 3_000, "[{kind}]");

        // `fees`: the balance was whole (9,940 sats) but its history showed 9,920 (each
        // 1,500 msat fee shown as −2): a visible correction of +20 sats, moving no money.
        assert_eq!(balance(&store, &fees).await, 9_940_000, "[{kind}]");
        assert_adds_up(kind, &store, &acct, &fees).await;
        let (wtxs, _) = store.list_wtxs(&acct, Some(&fees), 0, 1).await.unwrap();
        assert_eq!(wtxs[0].wtx_type, WtxType::BalanceRollUp, "[{kind}]");
        assert_eq!(wtxs[0].amount_msat, 20_000, "[{kind}]");
        // `small`: 1,500 msat → 1 sat; its history (1 sat) already showed that.
        assert_eq!(balance(&store, &small).await, 1_000, "[{kind}]");
        assert_adds_up(kind, &store, &acct, &small).await;
        assert_eq!(wtx_count(&store, &small).await, 1, "[{kind}]");
        // `live`: 10 sats − 2,500 msat reserved = 7,500 msat → 7 sats, reserve now 3 sats.
        assert_eq!(balance(&store, &live).await, 7_000, "[{kind}]");
        assert_eq!(
            history_sats(&store, &acct, &live).await * 1000,
            7_000 + 3_000,
            "[{kind}]"
        );
        // It settles against the whole-sat reserve: 1,500 + 1,000 msat charged as 3 sats.
        let s = store
            .settle_payment(&settle_cmd(&lntx, msat(1_000)))
            .await
            .unwrap();
        assert!(s.newly_settled);
        assert_eq!(
            store.lntx(&lntx).await.unwrap().unwrap().status,
            Some(PaymentStatus::Succeeded)
        );
        assert_adds_up(kind, &store, &acct, &live).await;
        let rep = assert_clean(kind, &store).await;
        assert_eq!(rep.revenue_msat, 500 + 500, "[{kind}]");
        let txns = rep.transactions;
        store.close().await;

        // Opened again: nothing more is swept.
        let store = connect(&db.url).await;
        let rep = assert_clean(kind, &store).await;
        assert_eq!(rep.transactions, txns, "[{kind}]");
        store.close().await;
    }
}
