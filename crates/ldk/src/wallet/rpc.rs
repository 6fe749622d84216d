//! The wallet's bitcoind path: a small async JSON-RPC client and a block walk that feeds BDK's
//! block-emission API ([`bdk_wallet::Wallet::apply_block_connected_to`],
//! [`bdk_wallet::Wallet::apply_unconfirmed_txs`], [`bdk_wallet::Wallet::apply_evicted_txs`]).
//!
//! Why not `bdk_bitcoind_rpc`: its `Emitter` drives `bitcoincore-rpc`'s blocking client, which
//! would need a thread of its own beside our tokio runtime. The walk below uses the same calls
//! (`getblockhash`, `getblock` at verbosity 0, `getrawmempool`, `getrawtransaction`).

use std::collections::HashSet;
use std::time::Duration;

use bitcoin::consensus::encode::deserialize_hex;
use bitcoin::{Block, BlockHash, Transaction, Txid};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::WalletError;

/// How long one RPC call may take.
const RPC_TIMEOUT: Duration = Duration::from_secs(60);

/// bitcoind's error code for "no such mempool or blockchain transaction".
const RPC_INVALID_ADDRESS_OR_KEY: i64 = -5;

/// How one call failed.
#[derive(Debug, thiserror::Error)]
enum RpcError {
    /// No answer, or not a JSON-RPC answer.
    #[error("{0}")]
    Transport(String),
    /// bitcoind's own error.
    #[error("error {code}: {message}")]
    Rpc { code: i64, message: String },
}

/// A JSON-RPC reply: `result` or `error`.
#[derive(Debug, serde::Deserialize)]
struct Reply {
    result: Option<Value>,
    error: Option<ReplyError>,
}

#[derive(Debug, serde::Deserialize)]
struct ReplyError {
    code: i64,
    message: String,
}

/// A bitcoind JSON-RPC endpoint with basic auth.
#[derive(Debug, Clone)]
pub(crate) struct RpcClient {
    http: reqwest::Client,
    url: String,
    user: String,
    password: String,
}

impl RpcClient {
    pub(crate) fn new(url: &str, user: &str, password: &str) -> Result<RpcClient, WalletError> {
        let http = reqwest::Client::builder()
            .timeout(RPC_TIMEOUT)
            .build()
            .map_err(|e| WalletError::ChainSource(format!("cannot build RPC client: {e}")))?;
        Ok(RpcClient {
            http,
            url: url.to_owned(),
            user: user.to_owned(),
            password: password.to_owned(),
        })
    }

    async fn call<T: DeserializeOwned>(&self, method: &str, params: Value) -> Result<T, RpcError> {
        let resp = self
            .http
            .post(&self.url)
            .basic_auth(&self.user, Some(&self.password))
            .json(&json!({ "jsonrpc": "1.0", "id": "satchel-wallet", "method": method, "params": params }))
            .send()
            .await
            .map_err(|e| RpcError::Transport(e.to_string()))?;
        let status = resp.status();
        // bitcoind answers RPC errors with a 4xx/5xx status and a JSON body; other statuses
        // (401 on bad credentials) come with no JSON.
        let reply: Reply = resp
            .json()
            .await
            .map_err(|e| RpcError::Transport(format!("HTTP {status}: {e}")))?;
        if let Some(err) = reply.error {
            return Err(RpcError::Rpc {
                code: err.code,
                message: err.message,
            });
        }
        serde_json::from_value(reply.result.unwrap_or(Value::Null))
            .map_err(|e| RpcError::Transport(format!("unexpected answer: {e}")))
    }

    async fn call_or_fail<T: DeserializeOwned>(
        &self,
        method: &str,
        params: Value,
    ) -> Result<T, WalletError> {
        self.call(method, params)
            .await
            .map_err(|e| WalletError::ChainSource(format!("bitcoind {method}: {e}")))
    }

    pub(crate) async fn block_count(&self) -> Result<u32, WalletError> {
        self.call_or_fail("getblockcount", json!([])).await
    }

    pub(crate) async fn block_hash(&self, height: u32) -> Result<BlockHash, WalletError> {
        self.call_or_fail("getblockhash", json!([height])).await
    }

    pub(crate) async fn block(&self, hash: &BlockHash) -> Result<Block, WalletError> {
        let hex: String = self.call_or_fail("getblock", json!([hash, 0])).await?;
        deserialize_hex(&hex)
            .map_err(|e| WalletError::ChainSource(format!("bitcoind getblock: bad block: {e}")))
    }

    pub(crate) async fn mempool_txids(&self) -> Result<HashSet<Txid>, WalletError> {
        let txids: Vec<Txid> = self.call_or_fail("getrawmempool", json!([])).await?;
        Ok(txids.into_iter().collect())
    }

    /// The transaction, or `None` when bitcoind no longer has it (mined or evicted since
    /// `getrawmempool`; the next sync sees where it went).
    pub(crate) async fn transaction(
        &self,
        txid: &Txid,
    ) -> Result<Option<Transaction>, WalletError> {
        match self
            .call::<String>("getrawtransaction", json!([txid, 0]))
            .await
        {
            Ok(hex) => deserialize_hex(&hex).map(Some).map_err(|e| {
                WalletError::ChainSource(format!("bitcoind getrawtransaction: bad tx: {e}"))
            }),
            Err(RpcError::Rpc {
                code: RPC_INVALID_ADDRESS_OR_KEY,
                ..
            }) => Ok(None),
            Err(e) => Err(WalletError::ChainSource(format!(
                "bitcoind getrawtransaction: {e}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn replies_carry_a_result_or_an_error() {
        let ok: Reply = serde_json::from_str(r#"{"result":7,"error":null,"id":"x"}"#).unwrap();
        assert_eq!(ok.result, Some(json!(7)));
        assert!(ok.error.is_none());
        let err: Reply = serde_json::from_str(
            r#"{"result":null,"error":{"code":-5,"message":"No such mempool or blockchain transaction"},"id":"x"}"#,
        )
        .unwrap();
        let e = err.error.unwrap();
        assert_eq!(
            (e.code, e.message.as_str()),
            (
                RPC_INVALID_ADDRESS_OR_KEY,
                "No such mempool or blockchain transaction"
            )
        );
    }
}
