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

    async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        params: Value,
    ) -> Result<T, WalletError> {
        let failed = |what: String| WalletError::ChainSource(format!("bitcoind {method}: {what}"));
        let resp = self
            .http
            .post(&self.url)
            .basic_auth(&self.user, Some(&self.password))
            .json(&json!({ "jsonrpc": "1.0", "id": "satchel-wallet", "method": method, "params": params }))
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = resp.status();
        // bitcoind answers RPC errors with a 4xx/5xx status and a JSON body; other statuses
        // (401 on bad credentials) come with no JSON.
        let body: Value = resp
            .json()
            .await
            .map_err(|e| failed(format!("HTTP {status}: {e}")))?;
        if let Some(err) = body.get("error").filter(|e| !e.is_null()) {
            return Err(failed(err.to_string()));
        }
        let result = body.get("result").cloned().unwrap_or(Value::Null);
        serde_json::from_value(result).map_err(|e| failed(format!("unexpected answer: {e}")))
    }

    pub(crate) async fn block_count(&self) -> Result<u32, WalletError> {
        self.call("getblockcount", json!([])).await
    }

    pub(crate) async fn block_hash(&self, height: u32) -> Result<BlockHash, WalletError> {
        self.call("getblockhash", json!([height])).await
    }

    pub(crate) async fn block(&self, hash: &BlockHash) -> Result<Block, WalletError> {
        let hex: String = self.call("getblock", json!([hash, 0])).await?;
        deserialize_hex(&hex)
            .map_err(|e| WalletError::ChainSource(format!("bitcoind getblock: bad block: {e}")))
    }

    pub(crate) async fn mempool_txids(&self) -> Result<HashSet<Txid>, WalletError> {
        let txids: Vec<Txid> = self.call("getrawmempool", json!([])).await?;
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
            // -5: no such mempool or blockchain transaction.
            Err(WalletError::ChainSource(msg)) if msg.contains("\"code\":-5") => Ok(None),
            Err(e) => Err(e),
        }
    }
}
