//! A test LNURL-pay service (LUD-06/LUD-16) on loopback, for the tests that pay addresses:
//! `/.well-known/lnurlp/<user>` and `/lnurlp/<user>` serve a payRequest whose callback
//! (`/cb/<user>?k=v`) answers invoices of the scripted backend's outside node ("carol"),
//! committing to the metadata. Some users misbehave on purpose: `wrongamt`, `wronghash`,
//! `othernet` (a mainnet invoice), `redirect` and `cbredirect` (302), `big` (a 100 KiB answer),
//! `down` (`{"status":"ERROR"}`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode as AxStatus;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bitcoin::hashes::{Hash as _, sha256};
use bitcoin::secp256k1::{Secp256k1, SecretKey};
use lightning_invoice::{Currency, InvoiceBuilder, PaymentSecret};
use satchel_domain::Msat;
use satchel_lightning::{Invoices, NewInvoice};
use satchel_scripted::ScriptedBackend;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const MIN_MSAT: u64 = 1_000;
pub const MAX_MSAT: u64 = 500_000;
pub const COMMENT_ALLOWED: u64 = 20;

/// What the test LNURL server saw.
#[derive(Default)]
pub struct Seen {
    pub requests: usize,
    pub callbacks: Vec<HashMap<String, String>>,
}

/// Who issues the service's invoices.
#[derive(Clone)]
pub enum Issuer {
    /// The scripted backend's outside node.
    Scripted(Arc<ScriptedBackend>),
    /// A real node (the devnet's carol).
    Node(Arc<dyn Invoices>),
}

impl Issuer {
    async fn invoice(&self, amount_msat: u64, description_hash: [u8; 32]) -> String {
        let amount = Msat::from_msat(amount_msat).unwrap();
        match self {
            Issuer::Scripted(s) => s
                .external_invoice_hashed(Some(amount), description_hash, 600)
                .0
                .to_string(),
            Issuer::Node(n) => n
                .create_invoice(NewInvoice {
                    amount: Some(amount),
                    memo: String::new(),
                    description_hash: Some(description_hash),
                    expiry_secs: 600,
                    preimage: satchel_domain::Preimage::random(),
                })
                .await
                .unwrap()
                .to_string(),
        }
    }
}

#[derive(Clone)]
pub struct Lnurl {
    pub issuer: Issuer,
    pub base: String,
    pub seen: Arc<Mutex<Seen>>,
}

pub fn metadata(user: &str, host: &str) -> String {
    json!([
        ["text/plain", format!("Pay {user}")],
        ["text/identifier", format!("{user}@{host}")]
    ])
    .to_string()
}

impl Lnurl {
    pub fn host(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    pub fn pay_request(&self, user: &str) -> Value {
        json!({
            "callback": format!("{}/cb/{user}?k=v", self.base),
            "maxSendable": MAX_MSAT,
            "minSendable": MIN_MSAT,
            "metadata": metadata(user, self.host()),
            "commentAllowed": COMMENT_ALLOWED,
            "tag": "payRequest",
        })
    }

    pub fn address(&self, user: &str) -> String {
        format!("{user}@{}", self.host())
    }
}

async fn well_known(State(s): State<Lnurl>, Path(user): Path<String>) -> Response {
    s.seen.lock().unwrap().requests += 1;
    match user.as_str() {
        "redirect" => (
            AxStatus::FOUND,
            [("location", format!("{}/.well-known/lnurlp/alice", s.base))],
        )
            .into_response(),
        "big" => {
            let mut pr = s.pay_request(&user);
            pr["padding"] = Value::String("x".repeat(100 * 1024));
            axum::Json(pr).into_response()
        }
        "down" => axum::Json(json!({"status": "ERROR", "reason": "Service down"})).into_response(),
        _ => axum::Json(s.pay_request(&user)).into_response(),
    }
}

/// A mainnet invoice (we run on regtest) with the right amount and description hash.
fn mainnet_invoice(amount_msat: u64, description_hash: [u8; 32]) -> String {
    let key = SecretKey::from_slice(&[0x42; 32]).unwrap();
    let secp = Secp256k1::new();
    InvoiceBuilder::new(Currency::Bitcoin)
        .amount_milli_satoshis(amount_msat)
        .description_hash(sha256::Hash::from_byte_array(description_hash))
        .payment_hash(sha256::Hash::from_byte_array([9; 32]))
        .payment_secret(PaymentSecret([3; 32]))
        .current_timestamp()
        .min_final_cltv_expiry_delta(18)
        .build_signed(|m| secp.sign_ecdsa_recoverable(m, &key))
        .unwrap()
        .to_string()
}

async fn callback(
    State(s): State<Lnurl>,
    Path(user): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    {
        let mut seen = s.seen.lock().unwrap();
        seen.requests += 1;
        seen.callbacks.push(q.clone());
    }
    let amount: u64 = q.get("amount").and_then(|a| a.parse().ok()).unwrap_or(0);
    let hash: [u8; 32] = Sha256::digest(metadata(&user, s.host()).as_bytes()).into();
    let pr = match user.as_str() {
        "wrongamt" => s.issuer.invoice(amount + 1000, hash).await,
        "wronghash" => s.issuer.invoice(amount, [7; 32]).await,
        "othernet" => mainnet_invoice(amount, hash),
        "cbredirect" => {
            return (
                AxStatus::FOUND,
                [("location", format!("{}/cb/alice", s.base))],
            )
                .into_response();
        }
        _ => s.issuer.invoice(amount, hash).await,
    };
    axum::Json(json!({"pr": pr, "routes": []})).into_response()
}

/// Starts the test LNURL server on loopback.
pub async fn lnurl_server(scripted: Arc<ScriptedBackend>) -> Lnurl {
    lnurl_server_with(Issuer::Scripted(scripted)).await
}

/// Starts the test LNURL server on loopback with this invoice issuer.
pub async fn lnurl_server_with(issuer: Issuer) -> Lnurl {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = Lnurl {
        issuer,
        base,
        seen: Arc::default(),
    };
    let app = Router::new()
        .route("/.well-known/lnurlp/{user}", get(well_known))
        .route("/lnurlp/{user}", get(well_known))
        .route("/cb/{user}", get(callback))
        .with_state(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    state
}
