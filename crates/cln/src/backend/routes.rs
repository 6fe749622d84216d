//! Route finding: `getroutes` (askrene, v24.11+) or `getroute` before, in one shape.
//!
//! Keysends ([`super::keysend`]) take their path from here, and [`Routes::query_routes`]
//! shows the same route in LND's `queryroutes` form.

use async_trait::async_trait;
use serde_json::json;

use satchel_domain::{Msat, NodePubkey};
use satchel_lightning::{LnError, NodeInfo as _, Route, RouteHop, Routes};

use super::{ClnBackend, ln_error, msat, parse};
use crate::onion::parse_scid;
use crate::rpc::{self, ClnMsat, GetRoute, GetRoutes, RouteEntry};
use crate::transport::RpcError;
use crate::version::ClnVersion;

/// The final CLTV delta `queryroutes` asks `getroutes` for (`getroute`'s default).
const QUERY_FINAL_CLTV: u32 = 9;
/// The fee `queryroutes` lets a route cost at most: the amount itself, or this much when
/// that is more (LND's `queryroutes` has no limit; a route dearer than this is not worth
/// showing).
const QUERY_MIN_MAXFEE_MSAT: u64 = 1_000_000;

impl ClnBackend {
    /// A route for `amount` to `dest_hex` that avoids `exclude` (`getroute`) or what `layer`
    /// disables (`getroutes`), with a final CLTV delta of `final_cltv` and a fee of at most
    /// `max_fee` (`getroutes` only; the keysend checks the fee of either itself).
    pub(super) async fn find_route(
        &self,
        dest_hex: &str,
        amount: Msat,
        max_fee: Msat,
        final_cltv: u32,
        exclude: &[String],
        layer: Option<&str>,
    ) -> Result<RouteAnswer, LnError> {
        let version = self.version().await?;
        let (method, params) = if version.routes_with_getroutes() {
            // askrene: our own channels as they are now, free to use, one path only.
            let mut layers = vec!["auto.localchans", "auto.sourcefree"];
            let mut params = json!({
                "source": self.node_info().await?.pubkey.to_hex(),
                "destination": dest_hex,
                "amount_msat": amount.as_msat(),
                "maxfee_msat": max_fee.as_msat(),
                "final_cltv": final_cltv,
            });
            if version >= ClnVersion::MAXPARTS {
                params["maxparts"] = json!(1);
            } else {
                layers.push("auto.no_mpp_support");
            }
            layers.extend(layer);
            params["layers"] = json!(layers);
            ("getroutes", params)
        } else {
            (
                "getroute",
                json!({
                    "id": dest_hex,
                    "amount_msat": amount.as_msat(),
                    "riskfactor": 1,
                    "cltv": final_cltv,
                    "fuzzpercent": 0,
                    "exclude": exclude,
                }),
            )
        };
        match self.rpc.call(method, params, self.request_timeout).await {
            Ok(v) if method == "getroutes" => {
                Ok(RouteAnswer::Found(route_entries(parse::<GetRoutes>(
                    method, v,
                )?)?))
            }
            Ok(v) => Ok(RouteAnswer::Found(parse::<GetRoute>(method, v)?.route)),
            Err(RpcError::Rpc { code, message, .. }) => {
                if code == rpc::JSONRPC2_METHOD_NOT_FOUND {
                    self.forget_version();
                }
                Ok(RouteAnswer::Refused { code, message })
            }
            Err(e) => Err(ln_error(e)),
        }
    }
}

/// What `getroute`/`getroutes` answered.
pub(super) enum RouteAnswer {
    /// A route, in `getroute`'s shape (empty: none).
    Found(Vec<RouteEntry>),
    /// An error object.
    Refused {
        /// CLN's error code.
        code: i64,
        /// Its message.
        message: String,
    },
}

/// A one-path `getroutes` answer in `getroute`'s shape: for each channel, the node at its far
/// end, what crosses it and the CLTV of the HTLC on it. From v26.06 a hop says so itself
/// (`node_id_out`, `amount_out_msat`, `cltv_out`); before, a hop gives what enters its start
/// node (`amount_msat`, `delay`), so what crosses channel i is what enters hop i + 1, and the
/// path's own `amount_msat` and `final_cltv` for the last channel.
fn route_entries(answer: GetRoutes) -> Result<Vec<RouteEntry>, LnError> {
    let bad = |what: &str| LnError::Transport(format!("getroutes: {what}"));
    let mut routes = answer.routes.into_iter();
    let Some(route) = routes.next() else {
        return Ok(Vec::new());
    };
    if routes.next().is_some() {
        return Err(bad("split the payment although asked for one path"));
    }
    let mut out = Vec::with_capacity(route.path.len());
    for (i, hop) in route.path.iter().enumerate() {
        let next = route.path.get(i + 1);
        let (channel, direction) = hop
            .short_channel_id_dir
            .split_once('/')
            .and_then(|(c, d)| Some((c.to_owned(), d.parse::<u8>().ok()?)))
            .ok_or_else(|| bad("bad short_channel_id_dir"))?;
        let id = hop
            .node_id_out
            .clone()
            .or_else(|| hop.next_node_id.clone())
            .ok_or_else(|| bad("hop without its far node"))?;
        let amount_msat = hop
            .amount_out_msat
            .or_else(|| next.map_or(Some(route.amount_msat), |n| n.amount_msat))
            .ok_or_else(|| bad("hop without amounts"))?;
        let delay = hop
            .cltv_out
            .or_else(|| next.map_or(Some(route.final_cltv), |n| n.delay))
            .ok_or_else(|| bad("hop without CLTVs"))?;
        out.push(RouteEntry {
            id,
            channel,
            direction,
            amount_msat,
            delay,
        });
    }
    Ok(out)
}

#[async_trait]
impl Routes for ClnBackend {
    async fn query_routes(&self, dest: NodePubkey, amount: Msat) -> Result<Vec<Route>, LnError> {
        if amount.is_zero() || dest == self.node_info().await?.pubkey {
            return Ok(Vec::new());
        }
        let height = self.blockheight().await?;
        let max_fee = Msat::from_msat(amount.as_msat().max(QUERY_MIN_MAXFEE_MSAT))
            .map_err(|e| LnError::Rejected(e.to_string()))?;
        let route = match self
            .find_route(&dest.to_hex(), amount, max_fee, QUERY_FINAL_CLTV, &[], None)
            .await?
        {
            RouteAnswer::Found(route) => route,
            RouteAnswer::Refused { code, .. }
                if [
                    rpc::PAY_ROUTE_NOT_FOUND,
                    rpc::PAY_ROUTE_TOO_EXPENSIVE,
                    rpc::PAY_INSUFFICIENT_FUNDS,
                    rpc::PAY_DESTINATION_CAPACITY,
                ]
                .contains(&code) =>
            {
                return Ok(Vec::new());
            }
            RouteAnswer::Refused { code, message } => {
                return Err(LnError::Rejected(format!("{message} (CLN error {code})")));
            }
        };
        let (Some(first), Some(last)) = (route.first(), route.last()) else {
            return Ok(Vec::new());
        };
        let base = height.saturating_add(1);
        let mut hops = Vec::with_capacity(route.len());
        for (i, hop) in route.iter().enumerate() {
            // LND's hop i: the channel into node i; amt_to_forward/expiry are what node i
            // sends on (the final values for the last hop); fee is what node i keeps.
            let (forward, expiry) = match route.get(i + 1) {
                Some(next) => (next.amount_msat.0, base.saturating_add(next.delay)),
                None => (hop.amount_msat.0, base.saturating_add(hop.delay)),
            };
            hops.push(RouteHop {
                chan_id: parse_scid(&hop.channel).ok_or_else(|| {
                    LnError::Transport(format!("getroute: bad channel {:?}", hop.channel))
                })?,
                chan_capacity_sats: 0,
                amt_to_forward: msat(ClnMsat(forward))?,
                fee: msat(ClnMsat(hop.amount_msat.0.saturating_sub(forward)))?,
                expiry,
                pub_key: NodePubkey::from_hex(&hop.id)
                    .ok_or_else(|| LnError::Transport(format!("getroute: bad id {}", hop.id)))?,
            });
        }
        Ok(vec![Route {
            total_time_lock: base.saturating_add(first.delay),
            total_fees: msat(ClnMsat(
                first.amount_msat.0.saturating_sub(last.amount_msat.0),
            ))?,
            total_amt: msat(first.amount_msat)?,
            hops,
        }])
    }
}
