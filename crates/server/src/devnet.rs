//! `/devnet/...`: drive the development network from outside (pay our invoices, make outside
//! invoices, send keysends to us; mine, reorg and fund on its chain). Mounted only when a
//! development backend runs, and answers only loopback clients.

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
use satchel_lightning::{DevnetControl, LnError, NodeInfoData, PayOutcome};
use serde::{Deserialize, Serialize};

#[derive(Clone)]
struct DevState {
    devnet: Arc<dyn DevnetControl>,
    node: NodeInfoData,
}

/// A peer in `GET /devnet/info`.
#[derive(Serialize, Deserialize, Debug)]
pub struct PeerInfo {
    /// Name.
    pub name: String,
    /// Pubkey.
    pub pubkey: String,
    /// Sendable msat.
    pub outbound_msat: u64,
    /// Receivable msat.
    pub inbound_msat: u64,
}

/// `GET /devnet/info`.
#[derive(Serialize, Deserialize, Debug)]
pub struct DevInfo {
    /// Backend kind.
    pub backend: String,
    /// Network.
    pub network: String,
    /// Our node.
    pub node_pubkey: String,
    /// Peers.
    pub peers: Vec<PeerInfo>,
    /// The devnet chain's best block (absent for a devnet without a chain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<TipInfo>,
}

/// A chain's best block.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TipInfo {
    /// Height.
    pub height: u32,
    /// Block hash.
    pub hash: String,
}

/// `POST /devnet/mine` and `POST /devnet/reorg`.
#[derive(Deserialize, Serialize, Debug)]
pub struct BlocksReq {
    /// How many blocks to mine (reorg: to replace).
    pub blocks: u32,
}

/// The answer to `POST /devnet/mine` and `POST /devnet/reorg`.
#[derive(Deserialize, Serialize, Debug)]
pub struct BlocksResp {
    /// The new blocks' hashes, oldest first.
    pub blocks: Vec<String>,
    /// The best block afterwards.
    pub tip: Option<TipInfo>,
}

/// `POST /devnet/fund`.
#[derive(Deserialize, Serialize, Debug)]
pub struct FundReq {
    /// A regtest address.
    pub address: String,
    /// Amount in sats.
    pub sats: u64,
}

/// The answer to `POST /devnet/fund`.
#[derive(Deserialize, Serialize, Debug)]
pub struct FundResp {
    /// The faucet's transaction (in the mempool; the auto-miner confirms it shortly).
    pub txid: String,
    /// The best block when it was sent.
    pub tip: Option<TipInfo>,
}

/// `POST /devnet/invoice`.
#[derive(Deserialize, Serialize, Debug)]
pub struct InvoiceReq {
    /// Peer that issues the invoice.
    pub node: String,
    /// Amount (0 = amountless).
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
    /// Destination pubkey.
    pub to: String,
    /// Amount.
    pub sats: u64,
    /// TLV records.
    #[serde(default)]
    pub tlv: BTreeMap<u64, String>,
}

fn ln_err(e: LnError) -> ApiError {
    match e {
        LnError::Rejected(m) => ApiError::bad_request(m),
        LnError::NotSupported => ApiError::bad_request("this devnet backend has no chain"),
        other => ApiError::internal(other),
    }
}

fn msat(sats: u64) -> Result<Msat, ApiError> {
    Msat::from_sats(sats).map_err(|_| ApiError::bad_request("sats too large"))
}

fn outcome_json(o: &PayOutcome) -> serde_json::Value {
    match o {
        PayOutcome::Succeeded { preimage, fee } => {
            serde_json::json!({ "status": "succeeded", "preimage": preimage.to_hex(), "fee_msat": fee.as_msat() })
        }
        PayOutcome::Failed(r) => {
            serde_json::json!({ "status": "failed", "failure_reason": r.lnd_name() })
        }
        PayOutcome::InFlight => serde_json::json!({ "status": "in_flight" }),
    }
}

async fn tip(s: &DevState) -> Result<Option<TipInfo>, ApiError> {
    Ok(s.devnet
        .chain_tip()
        .await
        .map_err(ln_err)?
        .map(|t| TipInfo {
            height: t.height,
            hash: t.hash,
        }))
}

async fn info(State(s): State<DevState>) -> Result<Json<DevInfo>, ApiError> {
    let peers = s.devnet.peers().await.map_err(ln_err)?;
    let chain = tip(&s).await?;
    Ok(Json(DevInfo {
        backend: s.devnet.kind().into(),
        network: s.node.network.name().into(),
        node_pubkey: s.node.pubkey.to_hex(),
        peers: peers
            .into_iter()
            .map(|p| PeerInfo {
                name: p.name,
                pubkey: p.pubkey.to_hex(),
                outbound_msat: p.outbound_msat,
                inbound_msat: p.inbound_msat,
            })
            .collect(),
        chain,
    }))
}

async fn mine(
    State(s): State<DevState>,
    Json(r): Json<BlocksReq>,
) -> Result<Json<BlocksResp>, ApiError> {
    let blocks = s.devnet.mine(r.blocks).await.map_err(ln_err)?;
    Ok(Json(BlocksResp {
        blocks,
        tip: tip(&s).await?,
    }))
}

async fn reorg(
    State(s): State<DevState>,
    Json(r): Json<BlocksReq>,
) -> Result<Json<BlocksResp>, ApiError> {
    let blocks = s.devnet.reorg(r.blocks).await.map_err(ln_err)?;
    Ok(Json(BlocksResp {
        blocks,
        tip: tip(&s).await?,
    }))
}

async fn fund(
    State(s): State<DevState>,
    Json(r): Json<FundReq>,
) -> Result<Json<FundResp>, ApiError> {
    let txid = s.devnet.fund(&r.address, r.sats).await.map_err(ln_err)?;
    Ok(Json(FundResp {
        txid,
        tip: tip(&s).await?,
    }))
}

async fn invoice(
    State(s): State<DevState>,
    Json(r): Json<InvoiceReq>,
) -> Result<Response, ApiError> {
    let amount = if r.sats == 0 {
        None
    } else {
        Some(msat(r.sats)?)
    };
    let b = s
        .devnet
        .outside_invoice(
            &r.node,
            amount,
            r.memo.as_deref().unwrap_or("devnet invoice"),
        )
        .await
        .map_err(ln_err)?;
    Ok(Json(serde_json::json!({ "payment_request": b.as_str(), "payment_hash": b.payment_hash().to_hex() }))
        .into_response())
}

async fn pay(State(s): State<DevState>, Json(r): Json<PayReq>) -> Result<Response, ApiError> {
    let b = Bolt11::parse(&r.payment_request).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let amount = r.sats.map(msat).transpose()?;
    let o = s
        .devnet
        .outside_pay(&r.node, &b, amount)
        .await
        .map_err(ln_err)?;
    let mut body = outcome_json(&o);
    body["payment_hash"] = serde_json::Value::String(b.payment_hash().to_hex());
    Ok(Json(body).into_response())
}

async fn keysend(
    State(s): State<DevState>,
    Json(r): Json<KeysendReq>,
) -> Result<Response, ApiError> {
    let to = NodePubkey::parse(r.to.trim())
        .map_err(|_| ApiError::bad_request("`to` must be a node pubkey"))?;
    let records = CustomRecords(
        r.tlv
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect(),
    );
    let (hash, o) = s
        .devnet
        .outside_keysend(&r.node, to, msat(r.sats)?, records)
        .await
        .map_err(ln_err)?;
    let mut body = outcome_json(&o);
    body["payment_hash"] = serde_json::Value::String(hash.to_hex());
    Ok(Json(body).into_response())
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
pub fn router(devnet: Arc<dyn DevnetControl>, node: NodeInfoData) -> Router {
    Router::new()
        .route("/devnet/info", get(info))
        .route("/devnet/invoice", post(invoice))
        .route("/devnet/pay", post(pay))
        .route("/devnet/keysend", post(keysend))
        .route("/devnet/mine", post(mine))
        .route("/devnet/reorg", post(reorg))
        .route("/devnet/fund", post(fund))
        .with_state(DevState { devnet, node })
        .layer(axum::middleware::from_fn(loopback_only))
}
