//! LDK plumbing: type aliases, logger, seed, synthetic funding.

use std::io::{self, ErrorKind, Write as _};
use std::path::Path;
use std::sync::{Arc, RwLock};

use bitcoin::absolute::LockTime;
use bitcoin::hashes::Hash as _;
use bitcoin::transaction::Version;
use bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness};
use lightning::chain::Filter;
use lightning::chain::chainmonitor::ChainMonitor;
use lightning::ln::channelmanager::ChannelManager;
use lightning::ln::peer_handler::{IgnoringMessageHandler, PeerManager};
use lightning::onion_message::messenger::DefaultMessageRouter;
use lightning::routing::gossip::NetworkGraph;
use lightning::routing::router::DefaultRouter;
use lightning::routing::scoring::{ProbabilisticScorer, ProbabilisticScoringFeeParameters};
use lightning::sign::{InMemorySigner, KeysManager};
use lightning::util::logger::{Level, Logger, Record};
use lightning_net_tokio::SocketDescriptor;
use lightning_persister::fs_store::FilesystemStore;

use crate::broadcast::ChainBroadcaster;
use crate::fees::ChainFeeEstimator;

/// Forwards LDK's log records to `tracing`, tagged with the node's alias.
pub(crate) struct LdkLogger {
    pub(crate) node: String,
}

impl Logger for LdkLogger {
    fn log(&self, record: Record) {
        let node = self.node.as_str();
        let module = record.module_path;
        // LDK's Info level is chatty (every claim, every channel state change): keep it at debug.
        match record.level {
            Level::Error => tracing::error!(target: "ldk", node, module, "{}", record.args),
            Level::Warn => tracing::warn!(target: "ldk", node, module, "{}", record.args),
            Level::Info | Level::Debug => {
                tracing::debug!(target: "ldk", node, module, "{}", record.args)
            }
            Level::Trace | Level::Gossip => {
                tracing::trace!(target: "ldk", node, module, "{}", record.args)
            }
        }
    }
}

pub(crate) type Logr = Arc<LdkLogger>;
pub(crate) type Graph = NetworkGraph<Logr>;
pub(crate) type Scorer = ProbabilisticScorer<Arc<Graph>, Logr>;
pub(crate) type RouterT = DefaultRouter<
    Arc<Graph>,
    Logr,
    Arc<KeysManager>,
    Arc<RwLock<Scorer>>,
    ProbabilisticScoringFeeParameters,
    Scorer,
>;
pub(crate) type MsgRouter = DefaultMessageRouter<Arc<Graph>, Logr, Arc<KeysManager>>;
pub(crate) type ChainMonitorT = ChainMonitor<
    InMemorySigner,
    Arc<dyn Filter + Send + Sync>,
    Arc<ChainBroadcaster>,
    Arc<ChainFeeEstimator>,
    Logr,
    Arc<FilesystemStore>,
    Arc<KeysManager>,
>;
pub(crate) type ChannelManagerT = ChannelManager<
    Arc<ChainMonitorT>,
    Arc<ChainBroadcaster>,
    Arc<KeysManager>,
    Arc<KeysManager>,
    Arc<KeysManager>,
    Arc<ChainFeeEstimator>,
    Arc<RouterT>,
    Arc<MsgRouter>,
    Logr,
>;
/// Sweeps what closed channels leave us (`Event::SpendableOutputs`) into the on-chain wallet.
pub(crate) type SweeperT = lightning::util::sweep::OutputSweeper<
    Arc<ChainBroadcaster>,
    Arc<crate::wallet::OnchainWallet>,
    Arc<ChainFeeEstimator>,
    Arc<dyn Filter + Send + Sync>,
    // The sweeper persists through the async `KVStore`; the file store is a sync one.
    Arc<lightning::util::persist::KVStoreSyncWrapper<Arc<FilesystemStore>>>,
    Logr,
    Arc<KeysManager>,
>;
pub(crate) type PeerManagerT = PeerManager<
    SocketDescriptor,
    Arc<ChannelManagerT>,
    IgnoringMessageHandler,
    IgnoringMessageHandler,
    Logr,
    IgnoringMessageHandler,
    Arc<KeysManager>,
    IgnoringMessageHandler,
>;

/// LDK's `io::Error` (from `bitcoin-io`) as a std one, keeping `NotFound`.
pub(crate) fn std_io(e: lightning::io::Error) -> io::Error {
    if e.kind() == lightning::io::ErrorKind::NotFound {
        io::Error::new(ErrorKind::NotFound, e.to_string())
    } else {
        io::Error::other(e.to_string())
    }
}

/// Reads the node seed (64 hex characters) or creates it on first start.
pub(crate) fn load_or_create_seed(path: &Path) -> io::Result<[u8; 32]> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let mut seed = [0u8; 32];
            hex::decode_to_slice(text.trim(), &mut seed).map_err(|e| {
                io::Error::new(
                    ErrorKind::InvalidData,
                    format!("bad seed in {}: {e}", path.display()),
                )
            })?;
            Ok(seed)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let seed: [u8; 32] = rand::random();
            let tmp = path.with_extension("tmp");
            // 0600 from the start: the seed is the node's every key. Synced before the rename
            // so a crash cannot leave an empty seed behind a node that already used it.
            let mut f = satchel_lightning::fs_private::create_private_file(&tmp)?;
            f.write_all(hex::encode(seed).as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            Ok(seed)
        }
        Err(e) => Err(e),
    }
}

/// The witness of a synthetic funding transaction's input: a signature-sized and a
/// pubkey-sized item of filler bytes, which no real signature or key is.
fn synthetic_witness() -> Witness {
    Witness::from_slice(&[vec![0x30u8; 72], vec![0x02u8; 33]])
}

/// Whether `tx` is a funding transaction made by [`synthetic_funding_tx`] (the broadcaster
/// keeps those off the chain, which would refuse them: their input does not exist).
pub(crate) fn is_synthetic_funding(tx: &Transaction) -> bool {
    let filler = synthetic_witness();
    tx.input.len() == 1 && tx.input[0].witness == filler
}

/// A funding transaction that spends a made-up output. It is never broadcast; LDK only needs
/// it to look like a signed segwit transaction (a non-empty witness on every input).
pub(crate) fn synthetic_funding_tx(value_sats: u64, output_script: ScriptBuf) -> Transaction {
    let txid = Txid::from_byte_array(rand::random());
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint { txid, vout: 0 },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
            witness: synthetic_witness(),
        }],
        output: vec![TxOut {
            value: Amount::from_sat(value_sats),
            script_pubkey: output_script,
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_funding_is_recognised_and_a_signed_spend_is_not() {
        let tx = synthetic_funding_tx(1000, ScriptBuf::new());
        assert!(is_synthetic_funding(&tx));
        let mut real = tx.clone();
        real.input[0].witness = Witness::from_slice(&[vec![0x30u8; 71], vec![0x02u8; 33]]);
        assert!(!is_synthetic_funding(&real));
    }
}
