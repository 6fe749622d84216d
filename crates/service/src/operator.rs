//! The operator's use cases: node and channels, unresolved payments and their manual
//! resolution, the audit, accounts. One implementation for every front end: the `satchel
//! payments` / `audit` / `account` commands (run against the database, no node) call the free
//! functions here, and the operator API and console (against a running server) call
//! [`OperatorService`], which calls the same functions.
//!
//! Nothing here is reachable with an API key: the API layer guards it with the operator cookie.

use std::sync::Arc;

use satchel_domain::{LnTxId, Msat, NodePubkey, Preimage, WtxId, now_secs};
use satchel_lightning::{ChannelInfo, LnError, NodeInfoData, NodeStatus, OnchainBalance};
use satchel_store::{
    AccountSummary, AuditReport, LnTxRecord, ManualResolution, OperatorAction, PaymentStateError,
    Store,
};

use crate::wallets::NewAccount;
use crate::{Ctx, ServiceError};

/// Longest `reason` kept in the audit trail.
pub const MAX_REASON_LEN: usize = 500;
/// Longest operator name.
pub const MAX_OPERATOR_LEN: usize = 64;
/// Longest account label.
pub const MAX_LABEL_LEN: usize = 100;

/// How a stuck payment ended, per the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveOutcome {
    /// The node paid it: book it with the fee it actually paid. The preimage is the proof.
    Succeeded {
        /// Proof of payment.
        preimage: Preimage,
        /// Routing fee paid.
        fee: Msat,
    },
    /// It cannot have gone out: refund the reserve.
    Failed,
}

/// A checked manual resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveRequest {
    /// The payment.
    pub lntx_id: LnTxId,
    /// The outcome.
    pub outcome: ResolveOutcome,
    /// Who (kept in the audit trail).
    pub operator: String,
    /// Why (kept in the audit trail).
    pub reason: String,
}

fn invalid(msg: impl Into<String>) -> ServiceError {
    ServiceError::Invalid(msg.into())
}

impl ResolveRequest {
    /// Parses the operator's input, as the CLI flags and the API/console forms give it:
    /// `outcome` is `succeeded` or `failed`; `succeeded` needs the preimage (64 hex characters);
    /// the reason must say something; all text is bounded.
    pub fn parse(
        lntx_id: &str,
        outcome: &str,
        preimage: Option<&str>,
        fee_msat: u64,
        operator: &str,
        reason: &str,
    ) -> Result<ResolveRequest, ServiceError> {
        let lntx_id =
            LnTxId::parse(lntx_id.trim()).map_err(|e| invalid(format!("payment id: {e}")))?;
        let outcome = match outcome.trim() {
            "succeeded" => {
                let p = preimage.map(str::trim).unwrap_or_default();
                if p.is_empty() {
                    return Err(invalid("a succeeded payment needs its preimage as proof"));
                }
                let preimage = Preimage::from_hex(p)
                    .ok_or_else(|| invalid("the preimage must be 64 hex characters"))?;
                let fee = Msat::from_msat(fee_msat).map_err(|e| invalid(format!("fee: {e}")))?;
                ResolveOutcome::Succeeded { preimage, fee }
            }
            "failed" => ResolveOutcome::Failed,
            _ => return Err(invalid("the outcome must be succeeded or failed")),
        };
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(invalid("the reason must say why"));
        }
        if reason.chars().count() > MAX_REASON_LEN {
            return Err(invalid(format!(
                "the reason is longer than {MAX_REASON_LEN} characters"
            )));
        }
        let operator = operator.trim();
        let operator = if operator.is_empty() {
            "operator"
        } else {
            operator
        };
        if operator.chars().count() > MAX_OPERATOR_LEN {
            return Err(invalid(format!(
                "the operator name is longer than {MAX_OPERATOR_LEN} characters"
            )));
        }
        Ok(ResolveRequest {
            lntx_id,
            outcome,
            operator: operator.to_owned(),
            reason: reason.to_owned(),
        })
    }
}

fn state_error(e: PaymentStateError) -> ServiceError {
    match e {
        PaymentStateError::NotFound => ServiceError::NotFound(e.to_string()),
        PaymentStateError::AlreadyFailed
        | PaymentStateError::AlreadySucceeded
        | PaymentStateError::BadProof => ServiceError::Invalid(e.to_string()),
        PaymentStateError::Store(s) => s.into(),
    }
}

/// Payments still holding a reserve (reserved, dispatched or unknown), oldest first.
pub async fn unresolved_payments(store: &Store) -> Result<Vec<LnTxRecord>, ServiceError> {
    Ok(store.live_payments().await?)
}

/// Resolves a stuck payment by hand, with its audit-trail entry (one transaction). Only once
/// the node has been checked: `Succeeded` books the payment with its fee, `Failed` refunds.
pub async fn resolve_payment(
    store: &Store,
    req: &ResolveRequest,
) -> Result<LnTxRecord, ServiceError> {
    let resolution = match &req.outcome {
        ResolveOutcome::Succeeded { preimage, fee } => ManualResolution::Succeeded {
            preimage: *preimage,
            fee: *fee,
            wtx_id: WtxId::generate(),
            fee_wtx_id: WtxId::generate(),
        },
        ResolveOutcome::Failed => ManualResolution::Failed,
    };
    store
        .resolve_payment(
            &req.lntx_id,
            &resolution,
            &req.operator,
            &req.reason,
            now_secs(),
        )
        .await
        .map_err(state_error)
}

/// The operator audit trail, newest first.
pub async fn operator_actions(
    store: &Store,
    limit: u64,
) -> Result<Vec<OperatorAction>, ServiceError> {
    Ok(store.operator_actions(limit).await?)
}

/// Recomputes every balance from the ledger (see [`Store::audit`]).
pub async fn audit(store: &Store) -> Result<AuditReport, ServiceError> {
    Ok(store.audit().await?)
}

/// The node as the operator sees it.
#[derive(Debug, Clone)]
pub struct NodeOverview {
    /// Identity.
    pub info: NodeInfoData,
    /// Chain view (fields unknown to the backend are `None`).
    pub status: NodeStatus,
    /// The configured backend (`devnet`, `scripted`, `lnd`, `cln`).
    pub backend: &'static str,
}

/// The operator's use cases against a running server.
#[derive(Clone)]
pub struct OperatorService {
    ctx: Arc<Ctx>,
}

fn node_error(e: LnError) -> ServiceError {
    match e {
        LnError::NotSupported => {
            ServiceError::NotSupported("this Lightning backend cannot report that yet".to_owned())
        }
        other => ServiceError::Internal(format!("node: {other}")),
    }
}

fn parse_pubkey(s: &str) -> Result<NodePubkey, ServiceError> {
    NodePubkey::parse(s.trim()).map_err(|e| invalid(format!("bad node pubkey: {e}")))
}

/// Errors of the operator's node commands: what the node refused before doing anything is the
/// operator's input error (4xx), the rest as [`node_error`].
fn admin_error(e: LnError) -> ServiceError {
    match e {
        LnError::Rejected(msg) => invalid(msg),
        LnError::NotSupported => ServiceError::NotSupported(
            "this Lightning backend does not support on-chain commands".to_owned(),
        ),
        other => node_error(other),
    }
}

impl OperatorService {
    /// The service.
    pub fn new(ctx: Arc<Ctx>) -> OperatorService {
        OperatorService { ctx }
    }

    /// Node identity and chain view.
    pub async fn node(&self) -> Result<NodeOverview, ServiceError> {
        let status = self.ctx.ln.node_status().await.map_err(node_error)?;
        Ok(NodeOverview {
            info: self.ctx.node.clone(),
            status,
            backend: self.ctx.cfg.backend_name,
        })
    }

    /// Our channels.
    pub async fn channels(&self) -> Result<Vec<ChannelInfo>, ServiceError> {
        self.ctx.ln.list_channels().await.map_err(node_error)
    }

    /// A fresh receive address of the node's on-chain wallet.
    pub async fn onchain_address(&self) -> Result<String, ServiceError> {
        self.ctx.ln.onchain_address().await.map_err(admin_error)
    }

    /// The node's on-chain wallet balance.
    pub async fn onchain_balance(&self) -> Result<OnchainBalance, ServiceError> {
        self.ctx.ln.onchain_balance().await.map_err(admin_error)
    }

    /// Pays `amount_sats` on chain from the node's wallet; returns the txid. Zero is refused
    /// here, before the node is asked; what the node refuses (bad address, dust, more than the
    /// wallet holds) is the operator's error too, and nothing was sent.
    pub async fn onchain_send(
        &self,
        address: &str,
        amount_sats: u64,
    ) -> Result<String, ServiceError> {
        if amount_sats == 0 {
            return Err(invalid("the amount must be positive"));
        }
        if address.trim().is_empty() {
            return Err(invalid("an address is required"));
        }
        self.ctx
            .ln
            .onchain_send(address.trim(), amount_sats)
            .await
            .map_err(admin_error)
    }

    /// Connects the node to a peer (`pubkey`, `host:port`).
    pub async fn connect_peer(&self, pubkey: &str, addr: &str) -> Result<(), ServiceError> {
        let pubkey = parse_pubkey(pubkey)?;
        self.ctx
            .ln
            .connect_peer(pubkey, addr)
            .await
            .map_err(admin_error)
    }

    /// Opens a channel of `capacity_sats` to a connected peer.
    pub async fn open_channel(
        &self,
        pubkey: &str,
        capacity_sats: u64,
        push_msat: u64,
    ) -> Result<(), ServiceError> {
        let pubkey = parse_pubkey(pubkey)?;
        if capacity_sats == 0 {
            return Err(invalid("the capacity must be positive"));
        }
        self.ctx
            .ln
            .open_channel(pubkey, capacity_sats, push_msat)
            .await
            .map_err(admin_error)
    }

    /// Starts closing one of our channels.
    pub async fn close_channel(&self, channel_id: &str, force: bool) -> Result<(), ServiceError> {
        self.ctx
            .ln
            .close_channel(channel_id.trim(), force)
            .await
            .map_err(admin_error)
    }

    /// See [`unresolved_payments`].
    pub async fn unresolved(&self) -> Result<Vec<LnTxRecord>, ServiceError> {
        unresolved_payments(&self.ctx.store).await
    }

    /// See [`resolve_payment`]. The auth cache holds no balances, so nothing else needs
    /// refreshing.
    pub async fn resolve(&self, req: &ResolveRequest) -> Result<LnTxRecord, ServiceError> {
        resolve_payment(&self.ctx.store, req).await
    }

    /// See [`operator_actions`].
    pub async fn actions(&self, limit: u64) -> Result<Vec<OperatorAction>, ServiceError> {
        operator_actions(&self.ctx.store, limit).await
    }

    /// See [`audit`].
    pub async fn audit(&self) -> Result<AuditReport, ServiceError> {
        audit(&self.ctx.store).await
    }

    /// Accounts, oldest first, with the total.
    pub async fn accounts(
        &self,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<AccountSummary>, u64), ServiceError> {
        Ok(self.ctx.store.list_accounts(offset, limit).await?)
    }

    /// Creates an account (its keys are shown once), as `satchel account create` does.
    pub async fn create_account(&self, label: &str) -> Result<NewAccount, ServiceError> {
        if label.trim().chars().count() > MAX_LABEL_LEN {
            return Err(invalid(format!(
                "the label is longer than {MAX_LABEL_LEN} characters"
            )));
        }
        crate::wallets::create_account(&self.ctx.store, label).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const ID: &str = "lntx_0Vd9IIioOeVsFmbeVXZcEuor";

    #[test]
    fn resolve_requests_are_checked() {
        let ok = ResolveRequest::parse(ID, "failed", None, 0, " ", " why ").unwrap();
        assert_eq!(ok.outcome, ResolveOutcome::Failed);
        assert_eq!(
            (ok.operator.as_str(), ok.reason.as_str()),
            ("operator", "why")
        );
        let p = "ab".repeat(32);
        let s = ResolveRequest::parse(ID, "succeeded", Some(&p), 7, "bob", "x").unwrap();
        assert!(matches!(s.outcome, ResolveOutcome::Succeeded { fee, .. } if fee.as_msat() == 7));
        for (outcome, pre, reason, op) in [
            ("succeeded", None, "x", "bob"),
            ("succeeded", Some("zz"), "x", "bob"),
            ("maybe", None, "x", "bob"),
            ("failed", None, "  ", "bob"),
        ] {
            assert!(ResolveRequest::parse(ID, outcome, pre, 0, op, reason).is_err());
        }
        let long = "r".repeat(MAX_REASON_LEN + 1);
        assert!(ResolveRequest::parse(ID, "failed", None, 0, "bob", &long).is_err());
        let long = "o".repeat(MAX_OPERATOR_LEN + 1);
        assert!(ResolveRequest::parse(ID, "failed", None, 0, &long, "x").is_err());
        assert!(ResolveRequest::parse(" ", "failed", None, 0, "bob", "x").is_err());
    }
}
