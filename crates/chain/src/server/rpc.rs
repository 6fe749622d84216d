//! The bitcoind JSON-RPC subset: what `lightning-block-sync`, `bdk_bitcoind_rpc` and LDK's
//! broadcaster/fee estimator call, with bitcoind's error codes and HTTP statuses (401 without
//! valid basic auth, 404 for an unknown method, 500 for other errors, 200 otherwise).

use std::str::FromStr;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bitcoin::consensus::encode::{deserialize, serialize_hex};
use bitcoin::{Address, BlockHash, OutPoint, Transaction, Txid};
use serde_json::{Value, json};

use super::Shared;
use crate::chain::ChainError;
use crate::json::{address_of, btc, chainwork_hex, core_header, core_script_type, core_tx};
use crate::state::Found;

/// bitcoind's RPC error codes used here.
const RPC_MISC_ERROR: i64 = -1;
const RPC_TYPE_ERROR: i64 = -3;
const RPC_INVALID_ADDRESS_OR_KEY: i64 = -5;
const RPC_INVALID_PARAMETER: i64 = -8;
const RPC_DESERIALIZATION_ERROR: i64 = -22;
const RPC_METHOD_NOT_FOUND: i64 = -32601;
const RPC_PARSE_ERROR: i64 = -32700;
const RPC_INVALID_REQUEST: i64 = -32600;

struct RpcError {
    code: i64,
    message: String,
}

fn err(code: i64, message: impl Into<String>) -> RpcError {
    RpcError {
        code,
        message: message.into(),
    }
}

type RpcResult = Result<Value, RpcError>;

pub(super) async fn handle(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| subtle_eq(v.as_bytes(), s.auth_header.as_bytes()));
    if !authorized {
        let mut resp = StatusCode::UNAUTHORIZED.into_response();
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"jsonrpc\""),
        );
        return resp;
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => {
            return reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                Value::Null,
                Err(err(RPC_PARSE_ERROR, "Parse error")),
            );
        }
    };
    if let Value::Array(batch) = request {
        // Batches always answer 200 with one reply per call.
        let replies: Vec<Value> = batch.iter().map(|r| one(&s, r).1).collect();
        return (StatusCode::OK, axum::Json(Value::Array(replies))).into_response();
    }
    let (status, value) = one(&s, &request);
    (status, axum::Json(value)).into_response()
}

/// Constant-time comparison of the presented credentials.
fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn reply(status: StatusCode, id: Value, result: RpcResult) -> Response {
    let (_, v) = envelope(id, result);
    (status, axum::Json(v)).into_response()
}

fn envelope(id: Value, result: RpcResult) -> (StatusCode, Value) {
    match result {
        Ok(v) => (
            StatusCode::OK,
            json!({ "result": v, "error": null, "id": id }),
        ),
        Err(e) => {
            let status = if e.code == RPC_METHOD_NOT_FOUND {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            (
                status,
                json!({ "result": null, "error": { "code": e.code, "message": e.message }, "id": id }),
            )
        }
    }
}

fn one(s: &Shared, request: &Value) -> (StatusCode, Value) {
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let Some(method) = request.get("method").and_then(Value::as_str) else {
        return envelope(id, Err(err(RPC_INVALID_REQUEST, "Method must be a string")));
    };
    let params = match request.get("params") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return envelope(id, Err(err(RPC_INVALID_REQUEST, "Params must be an array"))),
    };
    envelope(id, dispatch(s, method, &Params(params)))
}

struct Params(Vec<Value>);

impl Params {
    fn get(&self, i: usize) -> Option<&Value> {
        self.0.get(i).filter(|v| !v.is_null())
    }

    fn str(&self, i: usize, name: &str) -> Result<&str, RpcError> {
        match self.get(i) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(err(
                RPC_TYPE_ERROR,
                format!("JSON value of type for {name} is not of expected type string"),
            )),
            None => Err(err(
                RPC_MISC_ERROR,
                format!("missing required parameter {name}"),
            )),
        }
    }

    fn u64(&self, i: usize, name: &str) -> Result<u64, RpcError> {
        match self.get(i) {
            Some(v) => v.as_u64().ok_or_else(|| {
                err(
                    RPC_TYPE_ERROR,
                    format!("{name} must be a non-negative integer"),
                )
            }),
            None => Err(err(
                RPC_MISC_ERROR,
                format!("missing required parameter {name}"),
            )),
        }
    }

    fn opt_u64(&self, i: usize, default: u64) -> Result<u64, RpcError> {
        match self.get(i) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(u64::from(*b)),
            Some(v) => v
                .as_u64()
                .ok_or_else(|| err(RPC_TYPE_ERROR, "expected a number")),
        }
    }

    fn opt_bool(&self, i: usize, default: bool) -> Result<bool, RpcError> {
        match self.get(i) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            // bitcoind accepts 0/1 for verbose flags.
            Some(v) => v
                .as_u64()
                .map(|n| n != 0)
                .ok_or_else(|| err(RPC_TYPE_ERROR, "expected a bool")),
        }
    }

    fn hash<T: FromStr>(&self, i: usize, name: &str) -> Result<T, RpcError> {
        let s = self.str(i, name)?;
        if s.len() != 64 {
            return Err(err(
                RPC_INVALID_PARAMETER,
                format!("{name} must be of length 64 (not {}, for '{s}')", s.len()),
            ));
        }
        T::from_str(s).map_err(|_| {
            err(
                RPC_INVALID_PARAMETER,
                format!("{name} must be hexadecimal string (not '{s}')"),
            )
        })
    }
}

fn block_not_found() -> RpcError {
    err(RPC_INVALID_ADDRESS_OR_KEY, "Block not found")
}

fn decode_tx(hex_str: &str) -> Result<Transaction, RpcError> {
    hex::decode(hex_str)
        .ok()
        .and_then(|b| deserialize::<Transaction>(&b).ok())
        .ok_or_else(|| {
            err(
                RPC_DESERIALIZATION_ERROR,
                "TX decode failed. Make sure the tx has at least one input.",
            )
        })
}

fn dispatch(s: &Shared, method: &str, p: &Params) -> RpcResult {
    let chain = &s.chain;
    let fee_rate = chain.config().fee_rate_sat_per_vb;
    match method {
        "getblockchaininfo" => Ok(chain.with_state(|st| {
            let tip = st.tip();
            json!({
                "chain": "regtest",
                "blocks": tip.height,
                "headers": tip.height,
                "bestblockhash": tip.hash.to_string(),
                "difficulty": tip.block.header.difficulty_float(),
                "time": tip.block.header.time,
                "mediantime": tip.mtp,
                "verificationprogress": 1,
                "initialblockdownload": false,
                "chainwork": chainwork_hex(tip),
                "size_on_disk": 0,
                "pruned": false,
                "warnings": "",
            })
        })),
        "getblockcount" => Ok(json!(chain.tip().height)),
        "getbestblockhash" => Ok(json!(chain.tip().hash.to_string())),
        "getblockhash" => {
            let h = p.u64(0, "height")?;
            chain.with_state(|st| {
                st.entries
                    .get(h as usize)
                    .map(|e| json!(e.hash.to_string()))
                    .ok_or_else(|| err(RPC_INVALID_PARAMETER, "Block height out of range"))
            })
        }
        "getblockheader" => {
            let hash: BlockHash = p.hash(0, "blockhash")?;
            let verbose = p.opt_bool(1, true)?;
            chain.with_state(|st| {
                let e = st.entry_by_hash(&hash).ok_or_else(block_not_found)?;
                Ok(if verbose {
                    core_header(st, e)
                } else {
                    json!(serialize_hex(&e.block.header))
                })
            })
        }
        "getblock" => {
            let hash: BlockHash = p.hash(0, "blockhash")?;
            let verbosity = p.opt_u64(1, 1)?;
            chain.with_state(|st| {
                let e = st.entry_by_hash(&hash).ok_or_else(block_not_found)?;
                if verbosity == 0 {
                    return Ok(json!(serialize_hex(&e.block)));
                }
                let mut v = core_header(st, e);
                v["size"] = json!(e.block.total_size());
                v["strippedsize"] = json!(
                    e.block
                        .weight()
                        .to_wu()
                        .saturating_sub(e.block.total_size() as u64)
                        / 3
                );
                v["weight"] = json!(e.block.weight().to_wu());
                v["tx"] = if verbosity == 1 {
                    json!(
                        e.block
                            .txdata
                            .iter()
                            .map(|t| t.compute_txid().to_string())
                            .collect::<Vec<_>>()
                    )
                } else {
                    json!(e.block.txdata.iter().map(core_tx).collect::<Vec<_>>())
                };
                Ok(v)
            })
        }
        "getrawtransaction" => {
            let txid: Txid = p.hash(0, "txid")?;
            let verbose = p.opt_u64(1, 0)? != 0;
            chain.with_state(|st| {
                let found = st.find_tx(&txid).ok_or_else(|| {
                    err(RPC_INVALID_ADDRESS_OR_KEY, "No such mempool or blockchain transaction. Use gettransaction for wallet transactions.")
                })?;
                if !verbose {
                    return Ok(json!(serialize_hex(found.tx())));
                }
                let mut v = core_tx(found.tx());
                if let Found::Confirmed { entry, .. } = found {
                    v["blockhash"] = json!(entry.hash.to_string());
                    v["confirmations"] = json!(st.height() - entry.height + 1);
                    v["time"] = json!(entry.block.header.time);
                    v["blocktime"] = json!(entry.block.header.time);
                }
                Ok(v)
            })
        }
        "sendrawtransaction" => {
            let tx = decode_tx(p.str(0, "hexstring")?)?;
            match chain.send_transaction(tx) {
                Ok(txid) => Ok(json!(txid.to_string())),
                Err(ChainError::Tx(e)) => Err(err(e.rpc_code(), e.to_string())),
                Err(e) => Err(err(RPC_MISC_ERROR, e.to_string())),
            }
        }
        "testmempoolaccept" => {
            let Some(Value::Array(raw)) = p.get(0) else {
                return Err(err(RPC_TYPE_ERROR, "rawtxs must be an array"));
            };
            let mut out = Vec::with_capacity(raw.len());
            for r in raw {
                let tx = decode_tx(r.as_str().unwrap_or_default())?;
                let mut v = json!({
                    "txid": tx.compute_txid().to_string(),
                    "wtxid": tx.compute_wtxid().to_string(),
                });
                match chain.test_accept(&tx) {
                    Ok((fee, vsize)) => {
                        v["allowed"] = json!(true);
                        v["vsize"] = json!(vsize);
                        v["fees"] = json!({ "base": btc(fee) });
                    }
                    Err(e) => {
                        v["allowed"] = json!(false);
                        v["reject-reason"] = json!(e.to_string());
                    }
                }
                out.push(v);
            }
            Ok(Value::Array(out))
        }
        "estimatesmartfee" => {
            let target = p.u64(0, "conf_target")?;
            // BTC/kvB.
            Ok(json!({ "feerate": btc(fee_rate * 1000), "blocks": target.clamp(1, 1008) }))
        }
        "getmempoolinfo" => Ok(chain.with_state(|st| {
            let m = &st.mempool;
            json!({
                "loaded": true,
                "size": m.entries.len(),
                "bytes": m.entries.values().map(|e| e.vsize).sum::<u64>(),
                "usage": m.entries.values().map(|e| e.weight).sum::<u64>(),
                "total_fee": btc(m.entries.values().map(|e| e.fee_sats).sum::<u64>()),
                "maxmempool": 300_000_000,
                "mempoolminfee": btc(1000),
                "minrelaytxfee": btc(1000),
                "incrementalrelayfee": btc(1000),
                "unbroadcastcount": 0,
                "fullrbf": true,
            })
        })),
        "getrawmempool" => {
            let verbose = p.opt_bool(0, false)?;
            Ok(chain.with_state(|st| {
                if !verbose {
                    return json!(
                        st.mempool
                            .order
                            .iter()
                            .map(|t| t.to_string())
                            .collect::<Vec<_>>()
                    );
                }
                let mut map = serde_json::Map::new();
                for txid in &st.mempool.order {
                    map.insert(txid.to_string(), mempool_entry(st, txid));
                }
                Value::Object(map)
            }))
        }
        "getmempoolentry" => {
            let txid: Txid = p.hash(0, "txid")?;
            chain.with_state(|st| {
                if st.mempool.entries.contains_key(&txid) {
                    Ok(mempool_entry(st, &txid))
                } else {
                    Err(err(
                        RPC_INVALID_ADDRESS_OR_KEY,
                        "Transaction not in mempool",
                    ))
                }
            })
        }
        "gettxout" => {
            let txid: Txid = p.hash(0, "txid")?;
            let vout = p.u64(1, "n")?;
            let include_mempool = p.opt_bool(2, true)?;
            let op = OutPoint {
                txid,
                vout: u32::try_from(vout).unwrap_or(u32::MAX),
            };
            Ok(chain.with_state(|st| {
                let tip = st.tip();
                let (coin, confirmations) = match st.utxos.get(&op) {
                    Some(c) => {
                        if include_mempool && st.mempool.spent.contains_key(&op) {
                            return Value::Null;
                        }
                        (c.clone(), st.height() - c.height + 1)
                    }
                    None if include_mempool => {
                        let Some(e) = st.mempool.entries.get(&txid) else {
                            return Value::Null;
                        };
                        if st.mempool.spent.contains_key(&op) {
                            return Value::Null;
                        }
                        let Some(out) = e.tx.output.get(op.vout as usize) else {
                            return Value::Null;
                        };
                        (
                            crate::validate::Coin {
                                output: out.clone(),
                                height: 0,
                                is_coinbase: false,
                            },
                            0,
                        )
                    }
                    None => return Value::Null,
                };
                let spk = &coin.output.script_pubkey;
                let mut script = json!({
                    "asm": spk.to_asm_string(),
                    "hex": hex::encode(spk.as_bytes()),
                    "type": core_script_type(spk),
                });
                if let Some(a) = address_of(spk) {
                    script["address"] = json!(a);
                }
                json!({
                    "bestblock": tip.hash.to_string(),
                    "confirmations": confirmations,
                    "value": btc(coin.output.value.to_sat()),
                    "scriptPubKey": script,
                    "coinbase": coin.is_coinbase,
                })
            }))
        }
        "getnetworkinfo" => Ok(json!({
            "version": 260000,
            "subversion": "/Satoshi:26.0.0(satchel-chain)/",
            "protocolversion": 70016,
            "localservices": "0000000000000409",
            "localrelay": true,
            "timeoffset": 0,
            "networkactive": true,
            "connections": 0,
            "connections_in": 0,
            "connections_out": 0,
            "networks": [],
            "relayfee": btc(1000),
            "incrementalfee": btc(1000),
            "localaddresses": [],
            "warnings": "",
        })),
        "getdifficulty" => {
            Ok(chain.with_state(|st| json!(st.tip().block.header.difficulty_float())))
        }
        "uptime" => Ok(json!(0)),
        "generatetoaddress" => {
            let n = p.u64(0, "nblocks")?;
            let addr = p.str(1, "address")?;
            let addr = Address::from_str(addr)
                .ok()
                .and_then(|a| a.require_network(bitcoin::Network::Regtest).ok())
                .ok_or_else(|| err(RPC_INVALID_ADDRESS_OR_KEY, "Error: Invalid address"))?;
            let n =
                u32::try_from(n).map_err(|_| err(RPC_INVALID_PARAMETER, "nblocks too large"))?;
            chain
                .mine(n, Some(&addr))
                .map(|hashes| json!(hashes.iter().map(|h| h.to_string()).collect::<Vec<_>>()))
                .map_err(|e| err(RPC_MISC_ERROR, e.to_string()))
        }
        _ => Err(err(RPC_METHOD_NOT_FOUND, "Method not found")),
    }
}

fn mempool_entry(st: &crate::state::State, txid: &Txid) -> Value {
    let Some(e) = st.mempool.entries.get(txid) else {
        return Value::Null;
    };
    let depends: Vec<String> =
        e.tx.input
            .iter()
            .map(|i| i.previous_output.txid)
            .filter(|t| st.mempool.entries.contains_key(t))
            .map(|t| t.to_string())
            .collect();
    let spentby: Vec<String> = (0..e.tx.output.len() as u32)
        .filter_map(|vout| st.mempool.spent.get(&OutPoint { txid: *txid, vout }))
        .map(|(t, _)| t.to_string())
        .collect();
    json!({
        "vsize": e.vsize,
        "weight": e.weight,
        "time": e.time_secs,
        "height": e.height,
        "descendantcount": st.mempool.with_descendants([*txid]).len(),
        "ancestorcount": 1 + depends.len(),
        "wtxid": e.tx.compute_wtxid().to_string(),
        "fees": { "base": btc(e.fee_sats), "modified": btc(e.fee_sats), "ancestor": btc(e.fee_sats), "descendant": btc(e.fee_sats) },
        "depends": depends,
        "spentby": spentby,
        "bip125-replaceable": true,
        "unbroadcast": false,
    })
}
