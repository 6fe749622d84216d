//! End-to-end smoke test of the walk-through in the README, on both databases.
mod common;

use common::on_each_db;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fund_pay_transfer_history() {
    on_each_db(|s| async move {
        let a = s.create_wallet("A").await;
        let b = s.create_wallet("B").await;
        s.fund(&a, 1000).await;
        assert_eq!(s.balance(&a).await, 1000);

        let inv = s.external_invoice(100, "to carol");
        let r = s
            .post(
                &s.sak,
                &format!("/wallet/{}/withdraw", a.waka),
                json!({ "payment_request": inv.as_str() }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.json["num_satoshis"], -100);
        assert_eq!(r.json["wtxType"]["name"], "ln_withdrawal");
        assert_eq!(s.balance(&a).await, 900);

        let r = s
            .post(
                &s.sak,
                &format!("/wallet/{}/transfer", a.waka),
                json!({ "dest_wallet_id": b.id, "num_satoshis": 50, "memo": "share" }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(s.balance(&a).await, 850);
        assert_eq!(s.balance(&b).await, 50);

        let r = s
            .get(&s.sak, &format!("/wallet/{}/transactions", a.waka))
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let names: Vec<&str> = r
            .json
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["wtxType"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["ln_transfer_out", "ln_withdrawal", "ln_deposit"]);
        assert_eq!(r.headers["x-pagination-total-count"], "3");
        s
    })
    .await;
}
