//! Legacy LNPay data: a wallet imported with its `w_` id and `wa_`/`wi_`/`wr_` keys works through
//! the API, and its imported balance is booked so the audit stays exact.
#![allow(clippy::unwrap_used)]
mod common;

use common::on_each_db;
use reqwest::StatusCode;
use satchel_domain::{KeyHash, Msat};
use satchel_service::wallets::{ImportWallet, import_wallet};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn legacy_wallet_ids_and_keys() {
    on_each_db(|s| async move {
        let store = s.running().store.clone();
        let account = store
            .find_key(&KeyHash::of(&s.sak))
            .await
            .unwrap()
            .unwrap()
            .account_id;
        let w = import_wallet(
            &store,
            ImportWallet {
                account_id: account,
                id: "w_jhnRR8uSQUZfPM".into(),
                user_label: "legacy".into(),
                keys: vec![
                    "wa_Opnn4kGOGBMnfCLFXtsDnjTb".into(),
                    "wi_legacyInvoiceKey1".into(),
                    "wr_legacyReadKey1".into(),
                ],
                opening_balance: Msat::from_sats(500).unwrap(),
                node_id: satchel_service::ServiceConfig::default().node_id,
            },
        )
        .await
        .unwrap();
        assert_eq!(w.id.as_str(), "w_jhnRR8uSQUZfPM");

        // sak by legacy id, pak by legacy keys.
        let r = s.get(&s.sak, "/wallet/w_jhnRR8uSQUZfPM").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json["balance"], 500);
        let r = s.get(&s.pak, "/wallet/wa_Opnn4kGOGBMnfCLFXtsDnjTb").await;
        assert_eq!(r.json["id"], "w_jhnRR8uSQUZfPM");
        let r = s.get(&s.pak, "/wallet/wr_legacyReadKey1").await;
        assert_eq!(r.status, StatusCode::OK);
        let r = s.get(&s.pak, "/wallet/wi_legacyInvoiceKey1").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.json["message"],
            "wi_ access key provided does not permission to do this: wallet_read"
        );
        let r = s
            .post(
                &s.pak,
                "/wallet/wi_legacyInvoiceKey1/invoice",
                json!({"num_satoshis": 5}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

        // The imported balance is history too.
        let r = s
            .get(&s.pak, "/wallet/wa_Opnn4kGOGBMnfCLFXtsDnjTb/transactions")
            .await;
        assert_eq!(r.json[0]["wtxType"]["name"], "balance_roll_up");
        assert_eq!(r.json[0]["num_satoshis"], 500);

        // And it can be spent.
        let inv = s.external_invoice(100, "legacy spend");
        let r = s
            .post(
                &s.pak,
                "/wallet/wa_Opnn4kGOGBMnfCLFXtsDnjTb/withdraw",
                json!({"payment_request": inv.as_str(), "fee_limit_msat": 0}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.json["wal"]["balance"], 400);

        // Importing the same id twice fails without writing anything.
        let again = import_wallet(
            &store,
            ImportWallet {
                account_id: store
                    .find_key(&KeyHash::of(&s.sak))
                    .await
                    .unwrap()
                    .unwrap()
                    .account_id,
                id: "w_jhnRR8uSQUZfPM".into(),
                user_label: "dup".into(),
                keys: vec![],
                opening_balance: Msat::from_sats(1).unwrap(),
                node_id: satchel_service::ServiceConfig::default().node_id,
            },
        )
        .await;
        assert!(again.is_err());
        s
    })
    .await;
}
