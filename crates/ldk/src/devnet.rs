//! [`Devnet`]: our node plus `alice`, `hub` and `carol`, all in this process.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use satchel_domain::{Bolt11, CustomRecords, Msat, NodePubkey, PaymentHash, Preimage};
use satchel_lightning::{
    DevnetControl, DevnetPeer, IncomingPolicy, Invoices, LnError, NewInvoice, PayOutcome,
    PayRequest, PayTarget, Payments,
};

use crate::LdkError;
use crate::node::{GraphEdge, LdkConfig, LdkNode};

/// Peer names of the devnet.
pub const DEVNET_PEERS: [&str; 3] = ["alice", "hub", "carol"];

/// Channel sizes (sats) and what the funder pushes to the other side (msat).
const ALICE_US_SATS: u64 = 10_000_000;
const ALICE_US_PUSH_MSAT: u64 = 5_000_000_000;
const US_HUB_SATS: u64 = 10_000_000;
const US_HUB_PUSH_MSAT: u64 = 1_000_000_000;
const HUB_CAROL_SATS: u64 = 10_000_000;
const HUB_CAROL_PUSH_MSAT: u64 = 1_000_000_000;

/// The hub's forwarding policy.
pub(crate) const HUB_FEE_BASE_MSAT: u32 = 1000;
pub(crate) const HUB_FEE_PPM: u32 = 1000;

/// How long outside payments may take before `outside_pay`/`outside_keysend` give up waiting.
const OUTSIDE_PAY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long start waits for the channels to become usable.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long existing channels get to become usable again before a replacement is opened.
const REPLACE_AFTER: Duration = Duration::from_secs(5);

/// Options of [`Devnet::start_with`].
#[derive(Clone, Default)]
pub struct DevnetOptions {
    /// Policy for keysends arriving at our node, in force from the first event handled (events
    /// that LDK replays at start included). Can also be set later on [`Devnet::node`].
    pub incoming_policy: Option<Arc<dyn IncomingPolicy>>,
}

/// Accepts every keysend (the devnet peers are wallets of their own).
struct AcceptAll;

#[async_trait]
impl IncomingPolicy for AcceptAll {
    async fn accept_keysend(&self, _records: &CustomRecords) -> bool {
        true
    }
}

/// The development network: our node (`satchel`) plus three LDK peers in this process, over
/// loopback, with zero-conf channels funded by synthetic transactions (no chain):
///
/// ```text
///  alice ──10M sat (5M pushed to us)──▶ satchel ──10M sat (1M pushed)──▶ hub ──10M sat (1M pushed)──▶ carol
/// ```
///
/// The hub charges 1000 msat + 1000 ppm and forwards into private channels. Channels are
/// created on the first start and persisted under the data directory (one subdirectory per
/// node); later starts reload them and reconnect. All channels are unannounced; the devnet
/// injects the topology into every node's network graph so that our router can reach carol.
pub struct Devnet {
    dir: PathBuf,
    node: Arc<LdkNode>,
    alice: Arc<LdkNode>,
    hub: Arc<LdkNode>,
    carol: Arc<LdkNode>,
}

impl std::fmt::Debug for Devnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Devnet")
            .field("dir", &self.dir)
            .field("node", &self.node.pubkey())
            .finish_non_exhaustive()
    }
}

fn config(dir: &Path, name: &str) -> LdkConfig {
    let mut c = LdkConfig::new(dir.join(name));
    c.alias = name.to_owned();
    c
}

impl Devnet {
    /// Starts the devnet under `data_dir` (created if missing): our node in
    /// `data_dir/satchel`, the peers in `data_dir/{alice,hub,carol}`. Returns once every
    /// channel is usable. Must run inside a tokio runtime.
    pub async fn start(data_dir: &Path) -> Result<Devnet, LdkError> {
        Devnet::start_with(data_dir, DevnetOptions::default()).await
    }

    /// [`Devnet::start`] with options.
    pub async fn start_with(data_dir: &Path, opts: DevnetOptions) -> Result<Devnet, LdkError> {
        satchel_lightning::fs_private::ensure_private_dir(data_dir)?;
        let accept_all: Arc<dyn IncomingPolicy> = Arc::new(AcceptAll);
        let mut started: Vec<Arc<LdkNode>> = Vec::new();
        let result = async {
            let mut ours = config(data_dir, "satchel");
            ours.incoming_policy = opts.incoming_policy.clone();
            let node = LdkNode::start(ours).await?;
            started.push(Arc::clone(&node));
            let mut c = config(data_dir, "alice");
            c.incoming_policy = Some(Arc::clone(&accept_all));
            let alice = LdkNode::start(c).await?;
            started.push(Arc::clone(&alice));
            let mut c = config(data_dir, "hub");
            c.incoming_policy = Some(Arc::clone(&accept_all));
            c.forwarding_fee_base_msat = HUB_FEE_BASE_MSAT;
            c.forwarding_fee_proportional_millionths = HUB_FEE_PPM;
            c.accept_forwards_to_priv_channels = true;
            let hub = LdkNode::start(c).await?;
            started.push(Arc::clone(&hub));
            let mut c = config(data_dir, "carol");
            c.incoming_policy = Some(Arc::clone(&accept_all));
            let carol = LdkNode::start(c).await?;
            started.push(Arc::clone(&carol));
            let devnet = Devnet {
                dir: data_dir.to_path_buf(),
                node,
                alice,
                hub,
                carol,
            };
            devnet.wire_up().await?;
            Ok(devnet)
        }
        .await;
        if result.is_err() {
            for n in started {
                let _ = n.stop().await;
            }
        }
        result
    }

    /// Connects the nodes, opens the channels that do not exist yet, waits until all are
    /// usable and shares the topology.
    async fn wire_up(&self) -> Result<(), LdkError> {
        self.node
            .connect(self.alice.pubkey(), self.alice.listen_addr())
            .await?;
        self.node
            .connect(self.hub.pubkey(), self.hub.listen_addr())
            .await?;
        self.hub
            .connect(self.carol.pubkey(), self.carol.listen_addr())
            .await?;
        // Each pair of the topology needs one usable channel whose peer policy is known. A node
        // killed mid-payment can come back with a channel LDK force-closes on load (its manager
        // was older than its monitors); such a pair gets a fresh channel instead of blocking.
        let pairs: [(&Arc<LdkNode>, &Arc<LdkNode>, u64, u64); 3] = [
            (&self.alice, &self.node, ALICE_US_SATS, ALICE_US_PUSH_MSAT),
            (&self.node, &self.hub, US_HUB_SATS, US_HUB_PUSH_MSAT),
            (&self.hub, &self.carol, HUB_CAROL_SATS, HUB_CAROL_PUSH_MSAT),
        ];
        let has_any = |a: &LdkNode, b: &LdkNode| {
            a.list_channels()
                .iter()
                .any(|c| c.counterparty == b.pubkey())
        };
        let ready = |a: &LdkNode, b: &LdkNode| {
            let side = |x: &LdkNode, y: &LdkNode| {
                x.list_channels()
                    .iter()
                    .any(|c| c.counterparty == y.pubkey() && c.usable && c.forwarding_known)
            };
            side(a, b) && side(b, a)
        };
        for (a, b, sats, push) in pairs {
            if !has_any(a, b) {
                a.open_channel(b.pubkey(), sats, push).await?;
            }
        }
        let start = tokio::time::Instant::now();
        let deadline = start + READY_TIMEOUT;
        let mut replaced = false;
        loop {
            if pairs.iter().all(|(a, b, _, _)| ready(a, b)) {
                break;
            }
            if !replaced && tokio::time::Instant::now() >= start + REPLACE_AFTER {
                replaced = true;
                for (a, b, sats, push) in pairs {
                    if !ready(a, b) {
                        tracing::warn!(
                            "devnet: a channel did not come back usable; opening a replacement"
                        );
                        a.open_channel(b.pubkey(), sats, push).await?;
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(LdkError::Timeout(
                    "devnet channels did not become usable".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.share_topology()
    }

    /// The devnet's gossip: every node learns every node's channel directions.
    pub fn share_topology(&self) -> Result<(), LdkError> {
        let edges: Vec<GraphEdge> = self
            .all_nodes()
            .iter()
            .flat_map(|n| n.local_graph_edges())
            .collect();
        for n in self.all_nodes() {
            n.add_graph_edges(&edges)?;
        }
        Ok(())
    }

    fn all_nodes(&self) -> [&Arc<LdkNode>; 4] {
        [&self.node, &self.alice, &self.hub, &self.carol]
    }

    /// Our node (use it as `Arc<dyn LightningBackend>`).
    pub fn node(&self) -> Arc<LdkNode> {
        Arc::clone(&self.node)
    }

    /// A peer by name (`alice`, `hub`, `carol`).
    pub fn peer(&self, name: &str) -> Option<Arc<LdkNode>> {
        match name {
            "alice" => Some(Arc::clone(&self.alice)),
            "hub" => Some(Arc::clone(&self.hub)),
            "carol" => Some(Arc::clone(&self.carol)),
            _ => None,
        }
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// Stops all four nodes (persisting everything). A new devnet can then be started on the
    /// same directory.
    pub async fn stop(&self) -> Result<(), LdkError> {
        let mut first_err = None;
        for n in [&self.carol, &self.hub, &self.alice, &self.node] {
            if let Err(e) = n.stop().await
                && first_err.is_none()
            {
                first_err = Some(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn peer_or_reject(&self, name: &str) -> Result<Arc<LdkNode>, LnError> {
        self.peer(name).ok_or_else(|| {
            LnError::Rejected(format!(
                "unknown devnet node {name:?} (known: {})",
                DEVNET_PEERS.join(", ")
            ))
        })
    }
}

/// A generous fee limit for the outside world's payments: 1% + 10 sat.
fn outside_fee_limit(amount: Msat) -> Msat {
    Msat::from_msat(amount.as_msat() / 100 + 10_000).unwrap_or(amount)
}

#[async_trait]
impl DevnetControl for Devnet {
    fn kind(&self) -> &'static str {
        "ldk-devnet"
    }

    async fn peers(&self) -> Result<Vec<DevnetPeer>, LnError> {
        Ok(DEVNET_PEERS
            .iter()
            .filter_map(|name| self.peer(name).map(|n| (*name, n)))
            .map(|(name, n)| {
                let chans = n.list_channels();
                DevnetPeer {
                    name: name.to_owned(),
                    pubkey: n.pubkey(),
                    outbound_msat: chans.iter().map(|c| c.outbound_msat).sum(),
                    inbound_msat: chans.iter().map(|c| c.inbound_msat).sum(),
                }
            })
            .collect())
    }

    async fn outside_invoice(
        &self,
        node: &str,
        amount: Option<Msat>,
        memo: &str,
    ) -> Result<Bolt11, LnError> {
        let peer = self.peer_or_reject(node)?;
        let mut end = memo.len().min(639);
        while !memo.is_char_boundary(end) {
            end -= 1;
        }
        peer.create_invoice(NewInvoice {
            amount,
            memo: memo[..end].to_owned(),
            description_hash: None,
            expiry_secs: 3600,
            preimage: Preimage::random(),
        })
        .await
    }

    async fn outside_pay(
        &self,
        node: &str,
        invoice: &Bolt11,
        amount: Option<Msat>,
    ) -> Result<PayOutcome, LnError> {
        let peer = self.peer_or_reject(node)?;
        let amount = amount.or(invoice.amount()).ok_or_else(|| {
            LnError::Rejected("amount required for an amountless invoice".to_owned())
        })?;
        peer.pay(PayRequest {
            target: PayTarget::Bolt11 {
                invoice: invoice.clone(),
                amount,
            },
            fee_limit: outside_fee_limit(amount),
            timeout: OUTSIDE_PAY_TIMEOUT,
        })
        .await
    }

    async fn outside_keysend(
        &self,
        node: &str,
        dest: NodePubkey,
        amount: Msat,
        records: CustomRecords,
    ) -> Result<(PaymentHash, PayOutcome), LnError> {
        let peer = self.peer_or_reject(node)?;
        let preimage = Preimage::random();
        let outcome = peer
            .pay(PayRequest {
                target: PayTarget::Keysend {
                    dest,
                    amount,
                    preimage,
                    custom_records: records,
                },
                fee_limit: outside_fee_limit(amount),
                timeout: OUTSIDE_PAY_TIMEOUT,
            })
            .await?;
        Ok((preimage.hash(), outcome))
    }
}
