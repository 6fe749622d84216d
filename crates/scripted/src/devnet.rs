//! [`DevnetControl`] for the scripted backend: the outside world is simulated. `alice` pays and
//! keysends to us; `carol` (and `hub`) issue invoices, which the scripted node pays per its
//! scripts.

use async_trait::async_trait;
use satchel_domain::{Bolt11, CustomRecords, Msat, NodePubkey, PaymentHash, Preimage};

use crate::ScriptedBackend;
use satchel_lightning::{DevnetControl, DevnetPeer, LnError, PayOutcome};

/// Peer names the scripted devnet answers to.
pub const SCRIPTED_PEERS: [&str; 3] = ["alice", "hub", "carol"];

fn check_peer(node: &str) -> Result<(), LnError> {
    if SCRIPTED_PEERS.contains(&node) {
        Ok(())
    } else {
        Err(LnError::Rejected(format!(
            "unknown devnet node {node:?} (known: {})",
            SCRIPTED_PEERS.join(", ")
        )))
    }
}

#[async_trait]
impl DevnetControl for ScriptedBackend {
    fn kind(&self) -> &'static str {
        "scripted"
    }

    async fn peers(&self) -> Result<Vec<DevnetPeer>, LnError> {
        // One simulated outside node stands in for all three names.
        Ok(SCRIPTED_PEERS
            .iter()
            .map(|n| DevnetPeer {
                name: (*n).to_owned(),
                pubkey: self.external_pubkey(),
                outbound_msat: 0,
                inbound_msat: 0,
            })
            .collect())
    }

    async fn outside_invoice(
        &self,
        node: &str,
        amount: Option<Msat>,
        memo: &str,
    ) -> Result<Bolt11, LnError> {
        check_peer(node)?;
        Ok(self.external_invoice(amount, memo, 3600).0)
    }

    async fn outside_pay(
        &self,
        node: &str,
        invoice: &Bolt11,
        amount: Option<Msat>,
    ) -> Result<PayOutcome, LnError> {
        check_peer(node)?;
        let preimage = self.pay_our_invoice(invoice, amount)?;
        Ok(PayOutcome::Succeeded {
            preimage,
            fee: Msat::ZERO,
        })
    }

    async fn outside_keysend(
        &self,
        node: &str,
        dest: NodePubkey,
        amount: Msat,
        records: CustomRecords,
    ) -> Result<(PaymentHash, PayOutcome), LnError> {
        check_peer(node)?;
        if dest != self.pubkey() {
            return Err(LnError::Rejected(
                "the scripted devnet can only keysend to the Satchel node".into(),
            ));
        }
        let preimage = Preimage::random();
        let hash = self.receive_keysend_with(preimage, amount, records);
        Ok((
            hash,
            PayOutcome::Succeeded {
                preimage,
                fee: Msat::ZERO,
            },
        ))
    }
}
