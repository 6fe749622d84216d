//! The node's status, channels and stats ([`NodeInfo`]): `getinfo` and `listpeerchannels`.

use async_trait::async_trait;
use serde_json::json;

use satchel_domain::NodePubkey;
use satchel_lightning::{
    ChannelInfo, ChannelState, LnError, NodeInfo, NodeInfoData, NodeStats, NodeStatus,
};

use super::ClnBackend;
use crate::onion::parse_scid;
use crate::rpc::{ClnMsat, ListPeerChannels, PeerChannel};

/// Where a channel `listpeerchannels` lists is in its life; `None` for channels that are
/// closed (on chain, or a unilateral close under way: CLN lists them until it forgets them)
/// or in a state this adapter does not know.
pub(crate) fn channel_state(state: &str, peer_connected: Option<bool>) -> Option<ChannelState> {
    Some(match state {
        "CHANNELD_NORMAL" | "CHANNELD_AWAITING_SPLICE" if peer_connected == Some(false) => {
            ChannelState::Inactive
        }
        "CHANNELD_NORMAL" | "CHANNELD_AWAITING_SPLICE" => ChannelState::Active,
        "OPENINGD"
        | "CHANNELD_AWAITING_LOCKIN"
        | "DUALOPEND_OPEN_INIT"
        | "DUALOPEND_OPEN_COMMITTED"
        | "DUALOPEND_OPEN_COMMIT_READY"
        | "DUALOPEND_AWAITING_LOCKIN" => ChannelState::Pending,
        "CHANNELD_SHUTTING_DOWN" | "CLOSINGD_SIGEXCHANGE" | "CLOSINGD_COMPLETE" => {
            ChannelState::Closing
        }
        _ => return None,
    })
}

/// A `listpeerchannels` entry for the operator (`None`: closed, or no channel id yet).
pub(crate) fn channel_info(c: &PeerChannel) -> Result<Option<ChannelInfo>, LnError> {
    let Some(state) = channel_state(&c.state, c.peer_connected) else {
        return Ok(None);
    };
    let Some(channel_id) = c.channel_id.clone() else {
        return Ok(None);
    };
    let peer = NodePubkey::from_hex(&c.peer_id).ok_or_else(|| {
        LnError::Transport(format!("listpeerchannels: bad peer_id {:?}", c.peer_id))
    })?;
    let short_channel_id = match &c.short_channel_id {
        Some(s) => Some(parse_scid(s).ok_or_else(|| {
            LnError::Transport(format!("listpeerchannels: bad short_channel_id {s:?}"))
        })?),
        None => None,
    };
    let msat = |m: Option<ClnMsat>| m.map_or(0, |m| m.0);
    Ok(Some(ChannelInfo {
        channel_id,
        short_channel_id,
        peer,
        capacity_sats: msat(c.total_msat) / 1000,
        local_balance_msat: msat(c.spendable_msat),
        remote_balance_msat: msat(c.receivable_msat),
        state,
        confirmations: None,
    }))
}

/// Channel counts and balances for metrics: active; inactive = ready but the peer is away, or
/// still opening; closing channels are neither, and their balances are not counted.
pub(crate) fn channel_stats(channels: &[ChannelInfo]) -> NodeStats {
    let live = || channels.iter().filter(|c| c.state != ChannelState::Closing);
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    let active = live().filter(|c| c.state == ChannelState::Active).count();
    NodeStats {
        channels_active: Some(count(active)),
        channels_inactive: Some(count(live().count() - active)),
        local_balance_msat: Some(
            live()
                .map(|c| c.local_balance_msat)
                .fold(0, u64::saturating_add),
        ),
        remote_balance_msat: Some(
            live()
                .map(|c| c.remote_balance_msat)
                .fold(0, u64::saturating_add),
        ),
        block_height: None,
        sync_lag_secs: None,
    }
}

/// On-chain commands are not wired to Core Lightning yet: "not supported by this backend".
impl satchel_lightning::NodeAdmin for ClnBackend {}

#[async_trait]
impl NodeInfo for ClnBackend {
    /// `getinfo`: its `blockheight`; synced unless it carries `warning_bitcoind_sync` or
    /// `warning_lightningd_sync`.
    async fn node_status(&self) -> Result<NodeStatus, LnError> {
        let gi = self.getinfo().await?;
        Ok(NodeStatus {
            block_height: Some(gi.blockheight),
            synced: Some(
                gi.warning_bitcoind_sync.is_none() && gi.warning_lightningd_sync.is_none(),
            ),
        })
    }

    /// `listpeerchannels`, closed channels left out (see [`channel_state`]).
    async fn list_channels(&self) -> Result<Vec<ChannelInfo>, LnError> {
        let list: ListPeerChannels = self.call_as("listpeerchannels", json!({})).await?;
        let mut out = Vec::with_capacity(list.channels.len());
        for c in &list.channels {
            if let Some(info) = channel_info(c)? {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// `getinfo` and `listpeerchannels`. No sync lag: CLN's `getinfo` names no block time.
    async fn node_stats(&self) -> Result<NodeStats, LnError> {
        let (gi, channels) = tokio::try_join!(self.getinfo(), self.list_channels())?;
        Ok(NodeStats {
            block_height: Some(u64::from(gi.blockheight)),
            ..channel_stats(&channels)
        })
    }

    async fn node_info(&self) -> Result<NodeInfoData, LnError> {
        self.info
            .get_or_try_init(|| async {
                let gi = self.getinfo().await?;
                let pubkey = NodePubkey::from_hex(&gi.id)
                    .ok_or_else(|| LnError::Transport(format!("getinfo: bad id {}", gi.id)))?;
                Ok(NodeInfoData {
                    pubkey,
                    network: gi.network.parse().unwrap_or(self.network),
                    alias: gi.alias.unwrap_or_default(),
                })
            })
            .await
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn channels_from_listpeerchannels() {
        let peer = "02".to_owned() + &"11".repeat(32);
        let list: ListPeerChannels = serde_json::from_value(json!({"channels": [
            {"peer_id": peer, "peer_connected": true, "state": "CHANNELD_NORMAL",
             "short_channel_id": "103x1x0", "channel_id": "aa", "total_msat": 1_000_000_000u64,
             "to_us_msat": 400_000_000u64, "spendable_msat": 390_000_000u64,
             "receivable_msat": "580000000msat"},
            {"peer_id": peer, "peer_connected": false, "state": "CHANNELD_NORMAL",
             "channel_id": "bb", "total_msat": 5_000_000u64, "spendable_msat": 1_000u64},
            {"peer_id": peer, "peer_connected": true, "state": "DUALOPEND_AWAITING_LOCKIN",
             "channel_id": "cc", "total_msat": 2_000_000u64, "spendable_msat": 7_000u64},
            {"peer_id": peer, "peer_connected": true, "state": "CLOSINGD_COMPLETE",
             "channel_id": "dd", "total_msat": 9_000_000u64, "spendable_msat": 9_000u64},
            {"peer_id": peer, "peer_connected": false, "state": "ONCHAIN", "channel_id": "ee"},
            {"peer_id": peer, "peer_connected": true, "state": "OPENINGD"},
        ]}))
        .unwrap();
        let infos: Vec<ChannelInfo> = list
            .channels
            .iter()
            .filter_map(|c| channel_info(c).unwrap())
            .collect();
        let states: Vec<ChannelState> = infos.iter().map(|c| c.state).collect();
        assert_eq!(
            states,
            [
                ChannelState::Active,
                ChannelState::Inactive,
                ChannelState::Pending,
                ChannelState::Closing
            ]
        );
        assert_eq!(infos[0].short_channel_id, Some((103 << 40) | (1 << 16)));
        assert_eq!(infos[0].capacity_sats, 1_000_000);
        assert_eq!(infos[0].local_balance_msat, 390_000_000);
        assert_eq!(infos[0].remote_balance_msat, 580_000_000);
        assert_eq!(infos[1].short_channel_id, None);
        let stats = channel_stats(&infos);
        assert_eq!(stats.channels_active, Some(1));
        assert_eq!(stats.channels_inactive, Some(2));
        assert_eq!(stats.local_balance_msat, Some(390_000_000 + 1_000 + 7_000));
        let bad: PeerChannel = serde_json::from_value(
            json!({"peer_id": "zz", "state": "CHANNELD_NORMAL", "channel_id": "aa"}),
        )
        .unwrap();
        assert!(matches!(channel_info(&bad), Err(LnError::Transport(_))));
    }
}
