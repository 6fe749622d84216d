//! `GET /v1/nodes` and `GET /v1/node/:id` (LNPay spec §4.7, §6.6; secret key only).

#![allow(non_snake_case)]

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use satchel_domain::Network;
use satchel_service::Services;
use satchel_service::nodes::NodeView;
use serde::Serialize;

use crate::http::{ApiError, Lnpay};
use crate::routes::{AppState, Authed, Seg, api_error};

/// An empty JSON object (`passThru` of a node: nothing is stored with it).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EmptyObject {}

/// LNPay's LnNode, in its key order. What the backend cannot tell is `null`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LnNodeDto {
    /// Node id (`lnod_…`).
    pub id: String,
    /// Unknown (`null`): the backend does not say when the node was set up.
    pub created_at: Option<i64>,
    /// The node's alias.
    pub alias: String,
    /// Unknown (`null`): on-chain funds are not exposed by the backend.
    pub onchain_confirmed_sats: Option<i64>,
    /// Unknown (`null`).
    pub onchain_unconfirmed_sats: Option<i64>,
    /// Unknown (`null`).
    pub onchain_total_sats: Option<i64>,
    /// Unknown (`null`).
    pub onchain_nextaddr: Option<String>,
    /// `mainnet`, `testnet`, `signet` or `regtest`.
    pub network: &'static str,
    /// The node's public key.
    pub default_pubkey: String,
    /// Unknown (`null`): the backend does not say where the node listens.
    pub uri: Option<String>,
    /// Unknown (`null`).
    pub host: Option<String>,
    /// Unknown (`null`).
    pub rpc_port: Option<i64>,
    /// Unknown (`null`).
    pub rest_port: Option<i64>,
    /// Unknown (`null`).
    pub ln_port: Option<i64>,
    /// `null`: Satchel charges no fees into a fee wallet.
    pub fee_wallet_id: Option<String>,
    /// The wallet keysends naming no wallet land in (`default_keysend_wallet`), if set.
    pub keysend_wallet_id: Option<String>,
    /// Always `{}`.
    pub passThru: EmptyObject,
}

impl From<&NodeView> for LnNodeDto {
    fn from(n: &NodeView) -> LnNodeDto {
        LnNodeDto {
            id: n.id.to_string(),
            created_at: None,
            alias: n.alias.clone(),
            onchain_confirmed_sats: None,
            onchain_unconfirmed_sats: None,
            onchain_total_sats: None,
            onchain_nextaddr: None,
            network: match n.network {
                Network::Bitcoin => "mainnet",
                other => other.name(),
            },
            default_pubkey: n.pubkey.to_hex(),
            uri: None,
            host: None,
            rpc_port: None,
            rest_port: None,
            ln_port: None,
            fee_wallet_id: None,
            keysend_wallet_id: n.keysend_wallet_id.as_ref().map(ToString::to_string),
            passThru: EmptyObject {},
        }
    }
}

#[utoipa::path(
    get, path = "/v1/nodes", tag = "node",
    description = "The account's nodes (secret key): this server's one node.",
    responses((status = 200, description = "The nodes", body = Vec<LnNodeDto>, content_type = "application/json")),
)]
pub(crate) async fn list(
    State(s): State<Services>,
    Authed(c): Authed,
) -> Result<Response, ApiError> {
    let nodes = s.nodes.list(&c).await.map_err(api_error)?;
    Ok(Lnpay::ok(nodes.iter().map(LnNodeDto::from).collect::<Vec<_>>()).into_response())
}

#[utoipa::path(
    get, path = "/v1/node/{node}", tag = "node",
    description = "One node (secret key): `default` or this node's id. Any other id answers 200 with a `null` body, as LNPay did.",
    params(("node" = String, Path, description = "`default` or this node's id")),
    responses((status = 200, description = "The node, or null", body = Option<LnNodeDto>, content_type = "application/json")),
)]
pub(crate) async fn get_node(
    State(s): State<Services>,
    Authed(c): Authed,
    Seg(id): Seg,
) -> Result<Response, ApiError> {
    let node = s.nodes.get(&c, &id).await.map_err(api_error)?;
    Ok(Lnpay::ok(node.as_ref().map(LnNodeDto::from)).into_response())
}

/// The node routes, merged into the v1 router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/nodes", get(list))
        .route("/node/{node}", get(get_node))
}
