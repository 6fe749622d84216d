//! The Esplora REST subset used by `lightning-transaction-sync` and `bdk_esplora`, with
//! Esplora's plain-text errors (404 "Transaction not found" / "Block not found", 400 for bad
//! input).

use std::collections::BTreeMap;
use std::str::FromStr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bitcoin::consensus::encode::{deserialize, serialize, serialize_hex};
use bitcoin::hashes::sha256;
use bitcoin::{Address, BlockHash, MerkleBlock, OutPoint, Transaction, Txid};
use serde_json::{Value, json};

use super::{Shared, body_text};
use crate::chain::ChainError;
use crate::json::{esplora_block, esplora_status, esplora_tx, merkle_branch};
use crate::state::{Entry, Found, State as ChainState, script_hash};

/// Esplora's page sizes.
const CHAIN_TXS_PER_PAGE: usize = 25;
const MEMPOOL_TXS_PER_PAGE: usize = 50;
const BLOCKS_PER_PAGE: usize = 10;

pub(super) fn router() -> Router<Shared> {
    Router::new()
        .route("/blocks/tip/hash", get(tip_hash))
        .route("/blocks/tip/height", get(tip_height))
        .route("/blocks", get(blocks_recent))
        .route("/blocks/{start}", get(blocks_from))
        .route("/block-height/{height}", get(block_at_height))
        .route("/block/{hash}", get(block))
        .route("/block/{hash}/header", get(block_header))
        .route("/block/{hash}/status", get(block_status))
        .route("/block/{hash}/txids", get(block_txids))
        .route("/block/{hash}/txid/{index}", get(block_txid))
        .route("/block/{hash}/txs", get(block_txs_first))
        .route("/block/{hash}/txs/{start}", get(block_txs))
        .route("/block/{hash}/raw", get(block_raw))
        .route("/tx", axum::routing::post(post_tx))
        .route("/tx/{txid}", get(tx))
        .route("/tx/{txid}/hex", get(tx_hex))
        .route("/tx/{txid}/raw", get(tx_raw))
        .route("/tx/{txid}/status", get(tx_status))
        .route("/tx/{txid}/merkle-proof", get(tx_merkle_proof))
        .route("/tx/{txid}/merkleblock-proof", get(tx_merkleblock_proof))
        .route("/tx/{txid}/outspend/{vout}", get(tx_outspend))
        .route("/tx/{txid}/outspends", get(tx_outspends))
        .route("/address/{addr}", get(addr_stats))
        .route("/address/{addr}/txs", get(addr_txs))
        .route("/address/{addr}/txs/chain", get(addr_txs_chain_first))
        .route("/address/{addr}/txs/chain/{last}", get(addr_txs_chain))
        .route("/address/{addr}/txs/mempool", get(addr_txs_mempool))
        .route("/address/{addr}/utxo", get(addr_utxo))
        .route("/scripthash/{hash}", get(sh_stats))
        .route("/scripthash/{hash}/txs", get(sh_txs))
        .route("/scripthash/{hash}/txs/chain", get(sh_txs_chain_first))
        .route("/scripthash/{hash}/txs/chain/{last}", get(sh_txs_chain))
        .route("/scripthash/{hash}/txs/mempool", get(sh_txs_mempool))
        .route("/scripthash/{hash}/utxo", get(sh_utxo))
        .route("/mempool", get(mempool))
        .route("/mempool/txids", get(mempool_all_txids))
        .route("/mempool/recent", get(mempool_recent))
        .route("/fee-estimates", get(fee_estimates))
}

/// An Esplora error answer: a status and a plain-text message.
pub(super) struct Reject {
    status: StatusCode,
    message: String,
}

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        (self.status, text(self.message)).into_response()
    }
}

type Answer = Result<Response, Reject>;

fn text(body: impl Into<String>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain")], body.into()).into_response()
}

fn json_ok(v: Value) -> Answer {
    Ok(axum::Json(v).into_response())
}

fn bad_request(msg: impl Into<String>) -> Reject {
    Reject {
        status: StatusCode::BAD_REQUEST,
        message: msg.into(),
    }
}

fn not_found(msg: &str) -> Reject {
    Reject {
        status: StatusCode::NOT_FOUND,
        message: msg.to_string(),
    }
}

fn parse<T: FromStr>(s: &str) -> Result<T, Reject> {
    T::from_str(s).map_err(|_| bad_request("Invalid hex string"))
}

fn with_block<R>(
    s: &Shared,
    hash: &str,
    f: impl FnOnce(&ChainState, &Entry) -> R,
) -> Result<R, Reject> {
    let hash: BlockHash = parse(hash)?;
    s.chain
        .with_state(|st| st.entry_by_hash(&hash).map(|e| f(st, e)))
        .ok_or_else(|| not_found("Block not found"))
}

fn with_tx<R>(
    s: &Shared,
    txid: &str,
    f: impl FnOnce(&ChainState, &Found<'_>) -> R,
) -> Result<R, Reject> {
    let txid: Txid = parse(txid)?;
    s.chain
        .with_state(|st| st.find_tx(&txid).map(|found| f(st, &found)))
        .ok_or_else(|| not_found("Transaction not found"))
}

fn tx_json(st: &ChainState, found: &Found<'_>) -> Value {
    match found {
        Found::Confirmed { tx, entry, .. } => esplora_tx(st, tx, Some(entry)),
        Found::Mempool(e) => esplora_tx(st, &e.tx, None),
    }
}

async fn tip_hash(State(s): State<Shared>) -> Response {
    text(s.chain.tip().hash.to_string())
}

async fn tip_height(State(s): State<Shared>) -> Response {
    text(s.chain.tip().height.to_string())
}

fn blocks_page(s: &Shared, start: Option<u32>) -> Answer {
    let v = s.chain.with_state(|st| {
        let start = start.unwrap_or(st.height()).min(st.height());
        (0..=start)
            .rev()
            .take(BLOCKS_PER_PAGE)
            .filter_map(|h| st.entries.get(h as usize))
            .map(esplora_block)
            .collect::<Vec<_>>()
    });
    json_ok(json!(v))
}

async fn blocks_recent(State(s): State<Shared>) -> Answer {
    blocks_page(&s, None)
}

async fn blocks_from(State(s): State<Shared>, Path(start): Path<String>) -> Answer {
    let start = start
        .parse::<u32>()
        .map_err(|_| bad_request("Invalid height"))?;
    blocks_page(&s, Some(start))
}

async fn block_at_height(State(s): State<Shared>, Path(h): Path<String>) -> Answer {
    let h = h
        .parse::<usize>()
        .map_err(|_| bad_request("Invalid height"))?;
    s.chain
        .with_state(|st| st.entries.get(h).map(|e| text(e.hash.to_string())))
        .ok_or_else(|| not_found("Block not found"))
}

async fn block(State(s): State<Shared>, Path(hash): Path<String>) -> Answer {
    json_ok(with_block(&s, &hash, |_, e| esplora_block(e))?)
}

async fn block_header(State(s): State<Shared>, Path(hash): Path<String>) -> Answer {
    Ok(text(with_block(&s, &hash, |_, e| {
        serialize_hex(&e.block.header)
    })?))
}

async fn block_status(State(s): State<Shared>, Path(hash): Path<String>) -> Answer {
    let hash_v: BlockHash = parse(&hash)?;
    let v = s.chain.with_state(|st| match st.by_hash.get(&hash_v) {
        Some(h) => {
            let next = st.entries.get(*h as usize + 1).map(|e| e.hash.to_string());
            json!({ "in_best_chain": true, "height": h, "next_best": next })
        }
        None => json!({ "in_best_chain": false }),
    });
    json_ok(v)
}

async fn block_txids(State(s): State<Shared>, Path(hash): Path<String>) -> Answer {
    json_ok(with_block(&s, &hash, |_, e| {
        json!(
            e.block
                .txdata
                .iter()
                .map(|t| t.compute_txid().to_string())
                .collect::<Vec<_>>()
        )
    })?)
}

async fn block_txid(
    State(s): State<Shared>,
    Path((hash, index)): Path<(String, String)>,
) -> Answer {
    let index = index
        .parse::<usize>()
        .map_err(|_| bad_request("Invalid index"))?;
    with_block(&s, &hash, |_, e| {
        e.block
            .txdata
            .get(index)
            .map(|t| text(t.compute_txid().to_string()))
    })?
    .ok_or_else(|| not_found("Transaction not found"))
}

fn block_txs_page(s: &Shared, hash: &str, start: usize) -> Answer {
    if !start.is_multiple_of(CHAIN_TXS_PER_PAGE) {
        return Err(bad_request("start index must be a multipication of 25"));
    }
    json_ok(with_block(s, hash, |st, e| {
        json!(
            e.block
                .txdata
                .iter()
                .skip(start)
                .take(CHAIN_TXS_PER_PAGE)
                .map(|t| esplora_tx(st, t, st.is_active(&e.hash).then_some(e)))
                .collect::<Vec<_>>()
        )
    })?)
}

async fn block_txs_first(State(s): State<Shared>, Path(hash): Path<String>) -> Answer {
    block_txs_page(&s, &hash, 0)
}

async fn block_txs(State(s): State<Shared>, Path((hash, start)): Path<(String, String)>) -> Answer {
    let start = start
        .parse::<usize>()
        .map_err(|_| bad_request("Invalid start index"))?;
    block_txs_page(&s, &hash, start)
}

async fn block_raw(State(s): State<Shared>, Path(hash): Path<String>) -> Answer {
    let bytes = with_block(&s, &hash, |_, e| serialize(&e.block))?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

async fn post_tx(State(s): State<Shared>, body: Bytes) -> Answer {
    let hex_str = body_text(&body);
    let tx: Transaction = hex::decode(&hex_str)
        .ok()
        .and_then(|b| deserialize(&b).ok())
        .ok_or_else(|| {
            bad_request(
                "sendrawtransaction RPC error: {\"code\":-22,\"message\":\"TX decode failed\"}",
            )
        })?;
    match s.chain.send_transaction(tx) {
        Ok(txid) => Ok(text(txid.to_string())),
        Err(ChainError::Tx(e)) => Err(bad_request(format!(
            "sendrawtransaction RPC error: {}",
            json!({ "code": e.rpc_code(), "message": e.to_string() })
        ))),
        Err(e) => {
            tracing::warn!(error = %e, "broadcast failed");
            Err(Reject {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: "Internal error".to_string(),
            })
        }
    }
}

async fn tx(State(s): State<Shared>, Path(txid): Path<String>) -> Answer {
    json_ok(with_tx(&s, &txid, tx_json)?)
}

async fn tx_hex(State(s): State<Shared>, Path(txid): Path<String>) -> Answer {
    Ok(text(with_tx(&s, &txid, |_, f| serialize_hex(f.tx()))?))
}

async fn tx_raw(State(s): State<Shared>, Path(txid): Path<String>) -> Answer {
    let bytes = with_tx(&s, &txid, |_, f| serialize(f.tx()))?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

async fn tx_status(State(s): State<Shared>, Path(txid): Path<String>) -> Answer {
    json_ok(with_tx(&s, &txid, |_, f| match f {
        Found::Confirmed { entry, .. } => esplora_status(Some(entry)),
        Found::Mempool(_) => esplora_status(None),
    })?)
}

async fn tx_merkle_proof(State(s): State<Shared>, Path(txid): Path<String>) -> Answer {
    let v = with_tx(&s, &txid, |_, f| match f {
        Found::Confirmed { entry, index, .. } => {
            let txids: Vec<Txid> = entry
                .block
                .txdata
                .iter()
                .map(|t| t.compute_txid())
                .collect();
            let merkle: Vec<String> = merkle_branch(&txids, *index)
                .iter()
                .map(|t| t.to_string())
                .collect();
            Some(json!({ "block_height": entry.height, "merkle": merkle, "pos": index }))
        }
        Found::Mempool(_) => None,
    })?;
    v.map(|v| axum::Json(v).into_response())
        .ok_or_else(|| not_found("Transaction not found"))
}

async fn tx_merkleblock_proof(State(s): State<Shared>, Path(txid): Path<String>) -> Answer {
    let wanted: Txid = parse(&txid)?;
    let v = with_tx(&s, &txid, |_, f| match f {
        Found::Confirmed { entry, .. } => Some(serialize_hex(
            &MerkleBlock::from_block_with_predicate(&entry.block, |t| *t == wanted),
        )),
        Found::Mempool(_) => None,
    })?;
    v.map(text)
        .ok_or_else(|| not_found("Transaction not found"))
}

fn outspend_json(st: &ChainState, op: &OutPoint) -> Value {
    match st.spender(op) {
        None => json!({ "spent": false }),
        Some(sp) => {
            let entry = sp.height.and_then(|h| st.entries.get(h as usize));
            json!({ "spent": true, "txid": sp.txid.to_string(), "vin": sp.vin, "status": esplora_status(entry) })
        }
    }
}

async fn tx_outspend(
    State(s): State<Shared>,
    Path((txid, vout)): Path<(String, String)>,
) -> Answer {
    let txid: Txid = parse(&txid)?;
    let vout = vout
        .parse::<u32>()
        .map_err(|_| bad_request("Invalid vout"))?;
    json_ok(
        s.chain
            .with_state(|st| outspend_json(st, &OutPoint { txid, vout })),
    )
}

async fn tx_outspends(State(s): State<Shared>, Path(txid): Path<String>) -> Answer {
    let txid_v: Txid = parse(&txid)?;
    json_ok(with_tx(&s, &txid, |st, f| {
        json!(
            (0..f.tx().output.len() as u32)
                .map(|vout| outspend_json(st, &OutPoint { txid: txid_v, vout }))
                .collect::<Vec<_>>()
        )
    })?)
}

// --- addresses and script hashes ------------------------------------------------------------

fn addr_hash(addr: &str) -> Result<(sha256::Hash, bitcoin::ScriptBuf), Reject> {
    let a = Address::from_str(addr)
        .ok()
        .and_then(|a| a.require_network(bitcoin::Network::Regtest).ok())
        .ok_or_else(|| bad_request("Invalid Bitcoin address"))?;
    let script = a.script_pubkey();
    Ok((script_hash(&script), script))
}

fn sh_hash(hash: &str) -> Result<sha256::Hash, Reject> {
    parse(hash)
}

/// Confirmed txids touching the script, newest first.
fn chain_txids(st: &ChainState, sh: &sha256::Hash) -> Vec<Txid> {
    st.script_index
        .get(sh)
        .map(|v| v.iter().rev().copied().collect())
        .unwrap_or_default()
}

/// Mempool transactions touching the script (funding it or spending from it), newest first.
fn mempool_txids(st: &ChainState, sh: &sha256::Hash) -> Vec<Txid> {
    st.mempool
        .order
        .iter()
        .rev()
        .filter(|txid| {
            st.mempool.entries.get(*txid).is_some_and(|e| {
                e.tx.output
                    .iter()
                    .any(|o| script_hash(&o.script_pubkey) == *sh)
                    || e.tx.input.iter().any(|i| {
                        st.output(&i.previous_output)
                            .is_some_and(|o| script_hash(&o.script_pubkey) == *sh)
                    })
            })
        })
        .copied()
        .collect()
}

fn txs_json(st: &ChainState, txids: impl IntoIterator<Item = Txid>) -> Vec<Value> {
    txids
        .into_iter()
        .filter_map(|t| st.find_tx(&t).map(|f| tx_json(st, &f)))
        .collect()
}

fn txs_first_page(s: &Shared, sh: sha256::Hash) -> Answer {
    json_ok(s.chain.with_state(|st| {
        let mut ids: Vec<Txid> = mempool_txids(st, &sh)
            .into_iter()
            .take(MEMPOOL_TXS_PER_PAGE)
            .collect();
        ids.extend(chain_txids(st, &sh).into_iter().take(CHAIN_TXS_PER_PAGE));
        json!(txs_json(st, ids))
    }))
}

fn txs_chain_page(s: &Shared, sh: sha256::Hash, last: Option<&str>) -> Answer {
    let last: Option<Txid> = last.map(parse).transpose()?;
    json_ok(s.chain.with_state(|st| {
        let ids = chain_txids(st, &sh);
        let skip = match last {
            Some(l) => ids
                .iter()
                .position(|t| *t == l)
                .map(|p| p + 1)
                .unwrap_or(ids.len()),
            None => 0,
        };
        json!(txs_json(
            st,
            ids.into_iter().skip(skip).take(CHAIN_TXS_PER_PAGE)
        ))
    }))
}

fn txs_mempool_page(s: &Shared, sh: sha256::Hash) -> Answer {
    json_ok(s.chain.with_state(|st| {
        json!(txs_json(
            st,
            mempool_txids(st, &sh)
                .into_iter()
                .take(MEMPOOL_TXS_PER_PAGE)
        ))
    }))
}

fn utxo_json(s: &Shared, sh: sha256::Hash) -> Answer {
    json_ok(s.chain.with_state(|st| {
        let mut out = Vec::new();
        let mut push = |txid: Txid, vout: usize, value: u64, entry: Option<&Entry>| {
            out.push(json!({ "txid": txid.to_string(), "vout": vout, "status": esplora_status(entry), "value": value }));
        };
        for txid in chain_txids(st, &sh) {
            let Some(Found::Confirmed { tx, entry, .. }) = st.find_tx(&txid) else { continue };
            for (vout, o) in tx.output.iter().enumerate() {
                let op = OutPoint { txid, vout: vout as u32 };
                if script_hash(&o.script_pubkey) == sh && st.utxos.contains_key(&op) && !st.mempool.spent.contains_key(&op) {
                    push(txid, vout, o.value.to_sat(), Some(entry));
                }
            }
        }
        for txid in mempool_txids(st, &sh) {
            let Some(e) = st.mempool.entries.get(&txid) else { continue };
            for (vout, o) in e.tx.output.iter().enumerate() {
                let op = OutPoint { txid, vout: vout as u32 };
                if script_hash(&o.script_pubkey) == sh && !st.mempool.spent.contains_key(&op) {
                    push(txid, vout, o.value.to_sat(), None);
                }
            }
        }
        json!(out)
    }))
}

/// Esplora's `chain_stats` / `mempool_stats` for a script.
fn stats(st: &ChainState, sh: &sha256::Hash, txids: &[Txid]) -> Value {
    let (mut funded_n, mut funded_sum, mut spent_n, mut spent_sum) = (0u64, 0u64, 0u64, 0u64);
    for txid in txids {
        let Some(found) = st.find_tx(txid) else {
            continue;
        };
        let tx = found.tx();
        for o in &tx.output {
            if script_hash(&o.script_pubkey) == *sh {
                funded_n += 1;
                funded_sum += o.value.to_sat();
            }
        }
        for i in &tx.input {
            if let Some(o) = st.output(&i.previous_output)
                && script_hash(&o.script_pubkey) == *sh
            {
                spent_n += 1;
                spent_sum += o.value.to_sat();
            }
        }
    }
    json!({
        "funded_txo_count": funded_n,
        "funded_txo_sum": funded_sum,
        "spent_txo_count": spent_n,
        "spent_txo_sum": spent_sum,
        "tx_count": txids.len(),
    })
}

fn stats_json(s: &Shared, sh: sha256::Hash, address: Option<String>) -> Answer {
    json_ok(s.chain.with_state(|st| {
        let mut v = json!({
            "chain_stats": stats(st, &sh, &chain_txids(st, &sh)),
            "mempool_stats": stats(st, &sh, &mempool_txids(st, &sh)),
        });
        match address {
            Some(a) => v["address"] = json!(a),
            None => v["scripthash"] = json!(sh.to_string()),
        }
        v
    }))
}

async fn addr_stats(State(s): State<Shared>, Path(addr): Path<String>) -> Answer {
    let (sh, _) = addr_hash(&addr)?;
    stats_json(&s, sh, Some(addr))
}
async fn addr_txs(State(s): State<Shared>, Path(addr): Path<String>) -> Answer {
    txs_first_page(&s, addr_hash(&addr)?.0)
}
async fn addr_txs_chain_first(State(s): State<Shared>, Path(addr): Path<String>) -> Answer {
    txs_chain_page(&s, addr_hash(&addr)?.0, None)
}
async fn addr_txs_chain(
    State(s): State<Shared>,
    Path((addr, last)): Path<(String, String)>,
) -> Answer {
    txs_chain_page(&s, addr_hash(&addr)?.0, Some(&last))
}
async fn addr_txs_mempool(State(s): State<Shared>, Path(addr): Path<String>) -> Answer {
    txs_mempool_page(&s, addr_hash(&addr)?.0)
}
async fn addr_utxo(State(s): State<Shared>, Path(addr): Path<String>) -> Answer {
    utxo_json(&s, addr_hash(&addr)?.0)
}
async fn sh_stats(State(s): State<Shared>, Path(hash): Path<String>) -> Answer {
    stats_json(&s, sh_hash(&hash)?, None)
}
async fn sh_txs(State(s): State<Shared>, Path(hash): Path<String>) -> Answer {
    txs_first_page(&s, sh_hash(&hash)?)
}
async fn sh_txs_chain_first(State(s): State<Shared>, Path(hash): Path<String>) -> Answer {
    txs_chain_page(&s, sh_hash(&hash)?, None)
}
async fn sh_txs_chain(
    State(s): State<Shared>,
    Path((hash, last)): Path<(String, String)>,
) -> Answer {
    txs_chain_page(&s, sh_hash(&hash)?, Some(&last))
}
async fn sh_txs_mempool(State(s): State<Shared>, Path(hash): Path<String>) -> Answer {
    txs_mempool_page(&s, sh_hash(&hash)?)
}
async fn sh_utxo(State(s): State<Shared>, Path(hash): Path<String>) -> Answer {
    utxo_json(&s, sh_hash(&hash)?)
}

// --- mempool and fees -----------------------------------------------------------------------

async fn mempool(State(s): State<Shared>) -> Answer {
    json_ok(s.chain.with_state(|st| {
        let m = &st.mempool;
        json!({
            "count": m.entries.len(),
            "vsize": m.entries.values().map(|e| e.vsize).sum::<u64>(),
            "total_fee": m.entries.values().map(|e| e.fee_sats).sum::<u64>(),
            "fee_histogram": [],
        })
    }))
}

async fn mempool_all_txids(State(s): State<Shared>) -> Answer {
    json_ok(s.chain.with_state(|st| {
        json!(
            st.mempool
                .order
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
        )
    }))
}

async fn mempool_recent(State(s): State<Shared>) -> Answer {
    json_ok(s.chain.with_state(|st| {
        json!(
            st.mempool
                .order
                .iter()
                .rev()
                .take(10)
                .filter_map(|t| st.mempool.entries.get(t))
                .map(|e| json!({
                    "txid": e.txid.to_string(),
                    "fee": e.fee_sats,
                    "vsize": e.vsize,
                    "value": e.tx.output.iter().map(|o| o.value.to_sat()).sum::<u64>(),
                }))
                .collect::<Vec<_>>()
        )
    }))
}

async fn fee_estimates(State(s): State<Shared>) -> Answer {
    let rate = s.chain.config().fee_rate_sat_per_vb as f64;
    let targets = (1..=25).chain([144, 504, 1008]);
    let map: BTreeMap<String, f64> = targets.map(|t: u32| (t.to_string(), rate)).collect();
    json_ok(json!(map))
}
