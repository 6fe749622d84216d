//! The broadcaster: hands LDK's transactions to the chain source from a background task.
//!
//! LDK calls [`BroadcasterInterface::broadcast_transactions`] synchronously (sometimes with its
//! locks held), so the call only queues the transactions; a task sends them in order
//! (`sendrawtransaction` or Esplora's `POST /tx`). A refusal is logged with the txid and
//! dropped: LDK rebroadcasts what still matters (claims, commitment transactions) on its own
//! timers, and a transaction the chain already has is not an error worth more than a debug line.
//! The devnet's synthetic funding transactions (their input does not exist) are not sent.

use bitcoin::Transaction;
use lightning::chain::chaininterface::BroadcasterInterface;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::chain_source::ChainClient;

/// The node's [`BroadcasterInterface`].
pub struct ChainBroadcaster {
    node: String,
    queue: Option<mpsc::UnboundedSender<Transaction>>,
}

impl ChainBroadcaster {
    /// No chain: what LDK asks to broadcast is only logged (chainless development mode).
    pub(crate) fn none(node: &str) -> ChainBroadcaster {
        ChainBroadcaster {
            node: node.to_owned(),
            queue: None,
        }
    }

    /// Broadcasts through `client`; the returned task does the sending (abort it at stop).
    pub(crate) fn spawn(node: &str, client: ChainClient) -> (ChainBroadcaster, JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Transaction>();
        let name = node.to_owned();
        let task = tokio::spawn(async move {
            while let Some(tx) = rx.recv().await {
                let txid = tx.compute_txid();
                match client.broadcast(&tx).await {
                    Ok(()) => tracing::debug!(node = %name, %txid, "broadcast a transaction"),
                    Err(e) if e.already_known => {
                        tracing::debug!(node = %name, %txid, error = %e.message, "transaction already known to the chain");
                    }
                    Err(e) => {
                        tracing::warn!(node = %name, %txid, error = %e.message, "broadcast refused")
                    }
                }
            }
        });
        (
            ChainBroadcaster {
                node: node.to_owned(),
                queue: Some(tx),
            },
            task,
        )
    }
}

impl BroadcasterInterface for ChainBroadcaster {
    fn broadcast_transactions(&self, txs: &[&Transaction]) {
        for tx in txs {
            let txid = tx.compute_txid();
            if crate::support::is_synthetic_funding(tx) {
                tracing::debug!(node = %self.node, %txid, "not broadcasting a synthetic funding transaction");
                continue;
            }
            match &self.queue {
                Some(q) => {
                    if q.send((*tx).clone()).is_err() {
                        tracing::warn!(node = %self.node, %txid, "not broadcasting: the node is stopping");
                    }
                }
                None => {
                    tracing::debug!(node = %self.node, %txid, "not broadcasting (no chain)");
                }
            }
        }
    }
}
