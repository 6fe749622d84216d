//! The node endpoints (LNPay spec §6.6): `GET /v1/nodes` and `GET /v1/node/:id`, secret key
//! only. Satchel runs one node, so the list has one entry. Its facts come from the configured
//! backend (`NodeInfo`); what the backend cannot tell (on-chain balances, addresses, host and
//! ports, creation time) is left unknown (`null` on the wire), never made up.

use std::sync::Arc;

use satchel_domain::{Network, NodeId, NodePubkey, WalletId};

use crate::auth::{AuthService, Caller};
use crate::{Ctx, ServiceError};

/// What is known of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// LNPay node id (`lnod_…`, the `node_id` setting).
    pub id: NodeId,
    /// The node's alias.
    pub alias: String,
    /// Its chain.
    pub network: Network,
    /// Its public key.
    pub pubkey: NodePubkey,
    /// The wallet keysends naming no wallet land in (`default_keysend_wallet`).
    pub keysend_wallet_id: Option<WalletId>,
}

/// Node endpoints.
#[derive(Clone)]
pub struct NodeService {
    ctx: Arc<Ctx>,
}

impl NodeService {
    pub(crate) fn new(ctx: Arc<Ctx>) -> NodeService {
        NodeService { ctx }
    }

    async fn ours(&self) -> Result<NodeView, ServiceError> {
        // Asked each time: the alias may change while we run (the backend may cache it).
        let info = self
            .ctx
            .ln
            .node_info()
            .await
            .map_err(|e| ServiceError::Internal(format!("node info: {e}")))?;
        Ok(NodeView {
            id: self.ctx.cfg.node_id.clone(),
            alias: info.alias,
            network: info.network,
            pubkey: info.pubkey,
            keysend_wallet_id: self.ctx.cfg.default_keysend_wallet.clone(),
        })
    }

    /// `GET /v1/nodes`.
    pub async fn list(&self, caller: &Caller) -> Result<Vec<NodeView>, ServiceError> {
        AuthService::new(self.ctx.clone()).require_secret(caller)?;
        Ok(vec![self.ours().await?])
    }

    /// `GET /v1/node/:id`: `default` or our node's id; anything else is `None` (LNPay answered
    /// an unknown id with a `null` body).
    pub async fn get(&self, caller: &Caller, id: &str) -> Result<Option<NodeView>, ServiceError> {
        AuthService::new(self.ctx.clone()).require_secret(caller)?;
        if id == "default" || id == self.ctx.cfg.node_id.as_str() {
            Ok(Some(self.ours().await?))
        } else {
            Ok(None)
        }
    }
}
