//! `/devnet/...`: drive the development network from outside (pay our invoices, make outside
//! invoices, send keysends to us). Mounted only when a development backend runs, and answers only
//! loopback clients. With the scripted backend the "peers" are simulated; nothing real moves.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use satchel_api::http::ApiError;
use satchel_domain::{Bolt11, CustomRecords, Msat, NodePubkey};
use satchel_lightning::scripted::ScriptedBackend;
use serde::{Deserialize, Serialize};

/// Peers the development network offers.
pub const PEERS: [&str; 2] = ["alice", "carol"];

#[derive(Clone)]
struct DevState {
    scripted: Arc<ScriptedBackend>,
}

/// `GET /devnet/info`.
#[derive(Serialize, Deserialize, Debug)]
pub struct DevInfo {
    /// Backend name.
    pub backend: String,
    /// Network.
    pub network: String,
    /// Our node.
    pub node_pubkey: String,
    /// Peers by name.
    pub peers: BTreeMap<String, String>,
    /// Caveat for humans.
    pub note: String,
}

/// `POST /devnet/invoice`.
#[derive(Deserialize, Serialize, Debug)]
pub struct InvoiceReq {
    /// Peer that issues the invoice.
    pub node: String,
    /// Amount.
    pub sats: u64,
    /// Memo.
    #[serde(default)]
    pub memo: Option<String>,
}

/// `POST /devnet/pay`.
#[derive(Deserialize, Serialize, Debug)]
pub struct PayReq {
    /// Peer that pays.
    pub node: String,
    /// Our invoice.
    pub payment_request: String,
    /// Amount for amountless invoices.
    #[serde(default)]
    pub sats: Option<u64>,
}

/// `POST /devnet/keysend`.
#[derive(Deserialize, Serialize, Debug)]
pub struct KeysendReq {
    /// Peer that sends.
    pub node: String,
    /// Destination (must be our node for the scripted backend).
    pub to: String,
    /// Amount.
    pub sats: u64,
    /// TLV records.
    #[serde(default)]
    pub tlv: BTreeMap<u64, String>,
}

fn peer(name: &str) -> Result<(), ApiError> {
    if PEERS.contains(&name) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "unknown devnet node {name:?} (known: {})",
            PEERS.join(", ")
        )))
    }
}

fn msat(sats: u64) -> Result<Msat, ApiError> {
    Msat::from_sats(sats).map_err(|_| ApiError::bad_request("sats too large"))
}

async fn info(State(s): State<DevState>) -> Json<DevInfo> {
    let mut peers = BTreeMap::new();
    peers.insert("carol".to_owned(), s.scripted.external_pubkey().to_hex());
    peers.insert("alice".to_owned(), s.scripted.external_pubkey().to_hex());
    Json(DevInfo {
        backend: "scripted".into(),
        network: s.scripted.network().name().into(),
        node_pubkey: s.scripted.pubkey().to_hex(),
        peers,
        note: "scripted backend: payments are simulated, no real Lightning payments happen".into(),
    })
}

async fn invoice(
    State(s): State<DevState>,
    Json(r): Json<InvoiceReq>,
) -> Result<Response, ApiError> {
    peer(&r.node)?;
    let amount = if r.sats == 0 {
        None
    } else {
        Some(msat(r.sats)?)
    };
    let (b, _) =
        s.scripted
            .external_invoice(amount, r.memo.as_deref().unwrap_or("devnet invoice"), 3600);
    Ok(Json(serde_json::json!({ "payment_request": b.as_str(), "payment_hash": b.payment_hash().to_hex() })).into_response())
}

async fn pay(State(s): State<DevState>, Json(r): Json<PayReq>) -> Result<Response, ApiError> {
    peer(&r.node)?;
    let b = Bolt11::parse(&r.payment_request).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let amount = match r.sats {
        Some(v) => Some(msat(v)?),
        None => None,
    };
    s.scripted
        .pay_our_invoice(&b, amount)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(
        Json(serde_json::json!({ "paid": true, "payment_hash": b.payment_hash().to_hex() }))
            .into_response(),
    )
}

async fn keysend(
    State(s): State<DevState>,
    Json(r): Json<KeysendReq>,
) -> Result<Response, ApiError> {
    peer(&r.node)?;
    let to = NodePubkey::from_hex(r.to.trim())
        .ok_or_else(|| ApiError::bad_request("`to` must be a node pubkey"))?;
    if to != s.scripted.pubkey() {
        return Err(ApiError::bad_request(
            "the scripted devnet can only keysend to the Satchel node",
        ));
    }
    let records = CustomRecords(
        r.tlv
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect(),
    );
    let hash = s.scripted.receive_keysend(msat(r.sats)?, records);
    Ok(Json(serde_json::json!({ "payment_hash": hash.to_hex() })).into_response())
}

async fn loopback_only(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    if peer.ip().is_loopback() {
        next.run(req).await
    } else {
        ApiError::not_found_route().into_response()
    }
}

/// Routes under `/devnet`.
pub fn router(scripted: Arc<ScriptedBackend>) -> Router {
    Router::new()
        .route("/devnet/info", get(info))
        .route("/devnet/invoice", post(invoice))
        .route("/devnet/pay", post(pay))
        .route("/devnet/keysend", post(keysend))
        .with_state(DevState { scripted })
        .layer(axum::middleware::from_fn(loopback_only))
}
