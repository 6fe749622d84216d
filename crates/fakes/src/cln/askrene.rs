//! askrene, as the fake plays it: `getroutes` over the backend's routes, and the layers
//! (`askrene-create-layer`, `askrene-update-channel`, `askrene-disable-node`,
//! `askrene-remove-layer`) that take channel directions and nodes out of them.

use serde_json::{Map, Value, json};

use satchel_domain::NodePubkey;
use satchel_lightning::Route;

use super::{FakeCln, Params, RpcFailure, backend_failure, lock};
use satchel_cln::onion::{format_scid, parse_scid};
use satchel_cln::rpc;

/// The most blocks of delay `getroutes` allows (its default `maxdelay`).
pub(super) const MAX_DELAY: u32 = 2016;
/// CLN's `PAY_USER_ERROR`.
pub(super) const PAY_USER_ERROR: i64 = 217;
/// What `getroutes` says when the source's channels cannot carry the amount at all.
const NO_USABLE_PATHS: &str = "We could not find a usable set of paths.";
/// The success probability the fake reports for its one path.
const PROBABILITY_PPM: u64 = 990_000;

/// A channel direction: short channel id and direction bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Scidd {
    scid: u64,
    dir: u8,
}

impl Scidd {
    fn parse(s: &str) -> Option<Scidd> {
        let (scid, dir) = s.split_once('/')?;
        let dir = match dir {
            "0" => 0,
            "1" => 1,
            _ => return None,
        };
        Some(Scidd {
            scid: parse_scid(scid)?,
            dir,
        })
    }

    fn fmt(self) -> String {
        format!("{}/{}", format_scid(self.scid), self.dir)
    }
}

/// What `askrene-update-channel` changed for one channel direction (the fields it was given,
/// merged over earlier updates).
#[derive(Debug, Clone, Copy)]
struct ChannelUpdate {
    scidd: Scidd,
    enabled: Option<bool>,
    htlc_minimum_msat: Option<u64>,
    htlc_maximum_msat: Option<u64>,
    fee_base_msat: Option<u64>,
    fee_proportional_millionths: Option<u64>,
    cltv_expiry_delta: Option<u64>,
}

/// A layer: what it disables.
#[derive(Debug, Clone, Default)]
pub(super) struct Layer {
    persistent: bool,
    disabled_nodes: Vec<NodePubkey>,
    updates: Vec<ChannelUpdate>,
}

impl Layer {
    pub(super) fn persistent() -> Layer {
        Layer {
            persistent: true,
            ..Layer::default()
        }
    }

    /// Whether this layer says anything about `scidd`'s use (`Some(false)`: disabled).
    fn enabled(&self, scidd: Scidd) -> Option<bool> {
        self.updates
            .iter()
            .find(|u| u.scidd == scidd)
            .and_then(|u| u.enabled)
    }
}

/// One hop of a `getroutes` path: the channel from `node_in` to `node_out`.
#[derive(Debug, Clone)]
pub(super) struct Hop {
    scidd: Scidd,
    node_in: NodePubkey,
    node_out: NodePubkey,
    /// What `node_in` must receive to send `amount_out` over this channel.
    amount_in: u64,
    /// What crosses this channel (arrives at `node_out`).
    pub(super) amount_out: u64,
    cltv_in: u32,
    cltv_out: u32,
}

impl Hop {
    /// The channel direction, `scid/dir`.
    pub(super) fn scidd_text(&self) -> String {
        self.scidd.fmt()
    }
}

/// The one path the fake's `getroutes` returns.
#[derive(Debug, Clone)]
pub(super) struct FoundRoute {
    pub(super) hops: Vec<Hop>,
    delivered: u64,
    final_cltv: u32,
}

impl FoundRoute {
    /// `scid->scid->...`, as askrene names a path in its explanations.
    fn path_text(&self) -> String {
        self.hops
            .iter()
            .map(|h| format_scid(h.scidd.scid))
            .collect::<Vec<_>>()
            .join("->")
    }

    fn fee(&self) -> u64 {
        self.hops
            .first()
            .map_or(0, |h| h.amount_in.saturating_sub(self.delivered))
    }
}

/// What a `getroutes` (or xpay's routing) asks for.
pub(super) struct RouteQuery<'a> {
    pub(super) dest: NodePubkey,
    pub(super) amount: u64,
    pub(super) layers: &'a [String],
    pub(super) maxfee: u64,
    pub(super) final_cltv: u32,
    pub(super) maxdelay: u32,
}

/// The path of a backend route (LND vocabulary) with CLN's hop semantics: `hops[i]` of the
/// backend route is the channel into `hops[i].pub_key`, which charges `hops[i].fee` for its own
/// forward (over channel `i+1`) and sends with absolute CLTV `hops[i].expiry`; the first hop
/// is our own channel, free and without delay (`auto.sourcefree`). Amounts and CLTVs are
/// computed back from the destination, so each hop's `amount_out`/`cltv_out` is the next
/// hop's `amount_in`/`cltv_in` exactly.
fn cln_path(ours: NodePubkey, r: &Route, delivered: u64, final_cltv: u32) -> Vec<Hop> {
    let n = r.hops.len();
    let node = |i: usize| if i == 0 { ours } else { r.hops[i - 1].pub_key };
    // Absolute expiry of the HTLC over channel i.
    let expiry = |i: usize| {
        if i == 0 {
            r.total_time_lock
        } else {
            r.hops[i - 1].expiry
        }
    };
    let mut hops = Vec::with_capacity(n);
    let (mut out, mut cltv_out) = (delivered, final_cltv);
    for i in (0..n).rev() {
        let (fee, delta) = if i == 0 {
            (0, 0)
        } else {
            (
                r.hops[i - 1].fee.as_msat(),
                expiry(i - 1).saturating_sub(expiry(i)),
            )
        };
        let (node_in, node_out) = (node(i), node(i + 1));
        let hop = Hop {
            scidd: Scidd {
                scid: r.hops[i].chan_id,
                dir: u8::from(node_in.0 > node_out.0),
            },
            node_in,
            node_out,
            amount_in: out.saturating_add(fee),
            amount_out: out,
            cltv_in: cltv_out.saturating_add(delta),
            cltv_out,
        };
        out = hop.amount_in;
        cltv_out = hop.cltv_in;
        hops.push(hop);
    }
    hops.reverse();
    hops
}

/// Routing fees of a backend route (what intermediate nodes charge; our own channel is free).
fn route_fees(r: &Route) -> u64 {
    let n = r.hops.len();
    r.hops
        .iter()
        .take(n.saturating_sub(1))
        .map(|h| h.fee.as_msat())
        .sum()
}

fn unknown_layer(name: &str, v: &Value) -> RpcFailure {
    RpcFailure::params(format!("{name}: Unknown layer: invalid token '{v}'"))
}

impl Params {
    fn u32(&self, name: &str) -> Result<Option<u32>, RpcFailure> {
        self.u64(name)?
            .map(|x| {
                u32::try_from(x).map_err(|_| {
                    Params::bad(
                        name,
                        "an unsigned 32 bit integer",
                        self.get(name).unwrap_or(&Value::Null),
                    )
                })
            })
            .transpose()
    }

    fn scidd(&self, name: &str) -> Result<Option<Scidd>, RpcFailure> {
        self.get(name)
            .map(|v| {
                v.as_str()
                    .and_then(Scidd::parse)
                    .ok_or_else(|| Params::bad(name, "a short_channel_id_dir", v))
            })
            .transpose()
    }

    /// An array of strings (xpay's `layers`).
    pub(super) fn strings(&self, name: &str) -> Result<Option<Vec<String>>, RpcFailure> {
        self.get(name)
            .map(|v| match v {
                Value::Array(a) => a
                    .iter()
                    .map(|x| {
                        x.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| Params::bad(name, "a string", x))
                    })
                    .collect(),
                other => Err(Params::bad(name, "an array", other)),
            })
            .transpose()
    }
}

impl FakeCln {
    /// Checks `getroutes` layer names as askrene does: the automatic layers this release
    /// knows, or an existing layer.
    pub(super) fn check_layers(&self, name: &str, layers: &[String]) -> Result<(), RpcFailure> {
        let opts = self.options();
        let st = self.state();
        for l in layers {
            let ok = match opts.auto_layer_ok(l) {
                Some(ok) => ok,
                None => st.layers.contains_key(l),
            };
            if !ok {
                return Err(RpcFailure::params(format!(
                    "{name}: unknown layer: invalid token '{}'",
                    json!(l)
                )));
            }
        }
        Ok(())
    }

    pub(super) fn askrene_create_layer(&self, p: &Params) -> super::RpcResult {
        let name = p.req_string("layer")?;
        let persistent = p.bool("persistent")?.unwrap_or(false);
        if name.starts_with("auto.") {
            return Err(RpcFailure::params("Cannot create auto layer"));
        }
        let mut st = self.state();
        if st.layers.contains_key(&name) && !persistent {
            return Err(RpcFailure::params("Layer already exists"));
        }
        let layer = st
            .layers
            .entry(name.clone())
            .or_insert_with(|| Layer {
                persistent,
                ..Layer::default()
            })
            .clone();
        drop(st);
        Ok(json!({ "layers": [self.layer_json(&name, &layer)] }))
    }

    /// A layer as `askrene-create-layer` lists it, with the fields this release has.
    fn layer_json(&self, name: &str, layer: &Layer) -> Value {
        let (node_biases, impressions) = self.options().layer_fields();
        let mut o = Map::new();
        o.insert("layer".into(), json!(name));
        o.insert("persistent".into(), json!(layer.persistent));
        o.insert(
            "disabled_nodes".into(),
            json!(
                layer
                    .disabled_nodes
                    .iter()
                    .map(NodePubkey::to_hex)
                    .collect::<Vec<_>>()
            ),
        );
        o.insert("created_channels".into(), json!([]));
        let updates: Vec<Value> = layer
            .updates
            .iter()
            .map(|u| {
                // The schema's channel_updates have no `enabled` (CLN prints it anyway).
                let mut x = Map::new();
                x.insert("short_channel_id_dir".into(), json!(u.scidd.fmt()));
                for (k, v) in [
                    ("htlc_minimum_msat", u.htlc_minimum_msat),
                    ("htlc_maximum_msat", u.htlc_maximum_msat),
                    ("fee_base_msat", u.fee_base_msat),
                    ("fee_proportional_millionths", u.fee_proportional_millionths),
                    ("delay", u.cltv_expiry_delta),
                ] {
                    if let Some(v) = v {
                        x.insert(k.into(), json!(v));
                    }
                }
                Value::Object(x)
            })
            .collect();
        o.insert("channel_updates".into(), json!(updates));
        o.insert("constraints".into(), json!([]));
        if impressions {
            o.insert("impressions".into(), json!([]));
        }
        o.insert("biases".into(), json!([]));
        if node_biases {
            o.insert("node_biases".into(), json!([]));
        }
        Value::Object(o)
    }

    /// The `layer` parameter, which must name an existing layer.
    fn known_layer(&self, p: &Params) -> Result<String, RpcFailure> {
        let name = p.req_string("layer")?;
        if self.state().layers.contains_key(&name) {
            Ok(name)
        } else {
            Err(unknown_layer("layer", &json!(name)))
        }
    }

    pub(super) fn askrene_update_channel(&self, p: &Params) -> super::RpcResult {
        let name = self.known_layer(p)?;
        p.require("short_channel_id_dir")?;
        let scidd = p.scidd("short_channel_id_dir")?.ok_or_else(|| {
            RpcFailure::params("missing required parameter: short_channel_id_dir")
        })?;
        let update = ChannelUpdate {
            scidd,
            enabled: p.bool("enabled")?,
            htlc_minimum_msat: p.msat("htlc_minimum_msat")?,
            htlc_maximum_msat: p.msat("htlc_maximum_msat")?,
            fee_base_msat: p.msat("fee_base_msat")?,
            fee_proportional_millionths: p.u32("fee_proportional_millionths")?.map(u64::from),
            cltv_expiry_delta: match p.u64("cltv_expiry_delta")? {
                Some(d) if d > u64::from(u16::MAX) => {
                    return Err(Params::bad(
                        "cltv_expiry_delta",
                        "a 16 bit integer",
                        p.get("cltv_expiry_delta").unwrap_or(&Value::Null),
                    ));
                }
                d => d,
            },
        };
        let mut st = self.state();
        if let Some(layer) = st.layers.get_mut(&name) {
            match layer.updates.iter_mut().find(|u| u.scidd == scidd) {
                Some(u) => {
                    u.enabled = update.enabled.or(u.enabled);
                    u.htlc_minimum_msat = update.htlc_minimum_msat.or(u.htlc_minimum_msat);
                    u.htlc_maximum_msat = update.htlc_maximum_msat.or(u.htlc_maximum_msat);
                    u.fee_base_msat = update.fee_base_msat.or(u.fee_base_msat);
                    u.fee_proportional_millionths = update
                        .fee_proportional_millionths
                        .or(u.fee_proportional_millionths);
                    u.cltv_expiry_delta = update.cltv_expiry_delta.or(u.cltv_expiry_delta);
                }
                None => layer.updates.push(update),
            }
        }
        Ok(json!({}))
    }

    pub(super) fn askrene_disable_node(&self, p: &Params) -> super::RpcResult {
        let name = self.known_layer(p)?;
        let node = p
            .pubkey("node")?
            .ok_or_else(|| RpcFailure::params("missing required parameter: node"))?;
        let mut st = self.state();
        if let Some(layer) = st.layers.get_mut(&name)
            && !layer.disabled_nodes.contains(&node)
        {
            layer.disabled_nodes.push(node);
        }
        Ok(json!({}))
    }

    pub(super) fn askrene_remove_layer(&self, p: &Params) -> super::RpcResult {
        let name = self.known_layer(p)?;
        self.state().layers.remove(&name);
        Ok(json!({}))
    }

    pub(super) async fn getroutes(&self, p: Params) -> super::RpcResult {
        let source = p
            .pubkey("source")?
            .ok_or_else(|| RpcFailure::params("missing required parameter: source"))?;
        let dest = p
            .pubkey("destination")?
            .ok_or_else(|| RpcFailure::params("missing required parameter: destination"))?;
        let amount = p
            .msat("amount_msat")?
            .ok_or_else(|| RpcFailure::params("missing required parameter: amount_msat"))?;
        p.require("layers")?;
        let layers = p.strings("layers")?.unwrap_or_default();
        self.check_layers("layers", &layers)?;
        let maxfee = p
            .msat("maxfee_msat")?
            .ok_or_else(|| RpcFailure::params("missing required parameter: maxfee_msat"))?;
        let final_cltv = p
            .u32("final_cltv")?
            .ok_or_else(|| RpcFailure::params("missing required parameter: final_cltv"))?;
        let maxdelay = p.u32("maxdelay")?.unwrap_or(MAX_DELAY);
        p.u32("maxparts")?;
        if amount == 0 {
            return Err(RpcFailure::params("amount must be non-zero"));
        }
        if maxdelay > MAX_DELAY {
            return Err(RpcFailure::new(
                PAY_USER_ERROR,
                format!("maximum delay allowed is {MAX_DELAY}"),
            ));
        }
        if source == dest {
            return Err(RpcFailure::params(
                "source and destination must be different",
            ));
        }
        let ours = self
            .inner
            .backend
            .node_info()
            .await
            .map_err(|e| backend_failure(&e))?
            .pubkey;
        if source != ours {
            return Err(RpcFailure::params(
                "the fake routes only from our own node (source)",
            ));
        }
        let found = self
            .find_route(&RouteQuery {
                dest,
                amount,
                layers: &layers,
                maxfee,
                final_cltv,
                maxdelay,
            })
            .await?;
        Ok(self.routes_json(&found))
    }

    /// Finds the one path the fake offers for `q`, or fails as askrene fails.
    pub(super) async fn find_route(&self, q: &RouteQuery<'_>) -> Result<FoundRoute, RpcFailure> {
        let channels = lock(&self.inner.channels).as_ref().map(|f| f());
        if let Some(chans) = channels {
            let total: u64 = chans.iter().map(|c| c.spendable_msat).sum();
            if q.amount > total {
                return Err(RpcFailure::new(
                    rpc::PAY_INSUFFICIENT_FUNDS,
                    format!(
                        "{NO_USABLE_PATHS} Total source capacity is only {total}msat (in {} \
                         channels).",
                        chans.len()
                    ),
                ));
            }
        }
        let (ours, routes) = self.backend_routes(q.dest, q.amount).await?;
        let include_fees = q.layers.iter().any(|l| l == "auto.include_fees");
        let mut first_refusal = None;
        for r in routes.iter().filter(|r| !r.hops.is_empty()) {
            let fees = route_fees(r);
            let delivered = if include_fees {
                q.amount.saturating_sub(fees)
            } else {
                q.amount
            };
            let found = FoundRoute {
                hops: cln_path(ours, r, delivered, q.final_cltv),
                delivered,
                final_cltv: q.final_cltv,
            };
            match self.disabled_by_layer(&found, q.layers) {
                Some(why) => {
                    first_refusal.get_or_insert(why);
                }
                None => {
                    if found.fee() > q.maxfee || (include_fees && fees >= q.amount) {
                        return Err(RpcFailure::new(
                            rpc::PAY_ROUTE_TOO_EXPENSIVE,
                            "Could not find route without excessive cost",
                        ));
                    }
                    if found.hops.first().is_some_and(|h| h.cltv_in > q.maxdelay) {
                        return Err(RpcFailure::new(
                            rpc::PAY_ROUTE_TOO_EXPENSIVE,
                            "Could not find route without excessive delays",
                        ));
                    }
                    return Ok(found);
                }
            }
        }
        Err(RpcFailure::new(
            rpc::PAY_ROUTE_NOT_FOUND,
            first_refusal.unwrap_or_else(|| {
                "There is no connection between source and destination at all".to_owned()
            }),
        ))
    }

    /// Why an applied layer rules `route` out (askrene's explanation), if one does.
    fn disabled_by_layer(&self, route: &FoundRoute, layers: &[String]) -> Option<String> {
        let st = self.state();
        let applied: Vec<(&String, &Layer)> = layers
            .iter()
            .filter_map(|l| st.layers.get(l).map(|layer| (l, layer)))
            .collect();
        for hop in &route.hops {
            let mut why = None;
            for (name, layer) in &applied {
                if layer.disabled_nodes.contains(&hop.node_out)
                    || layer.disabled_nodes.contains(&hop.node_in)
                {
                    why = Some(format!("leads to node disabled by layer {name}."));
                } else {
                    match layer.enabled(hop.scidd) {
                        Some(false) => why = Some(format!("marked disabled by layer {name}.")),
                        Some(true) => why = None,
                        None => {}
                    }
                }
            }
            if let Some(why) = why {
                return Some(format!(
                    "{NO_USABLE_PATHS} The shortest path is {}, but {} {why}",
                    route.path_text(),
                    hop.scidd.fmt()
                ));
            }
        }
        None
    }

    /// `getroutes`' result, with the hop fields this release prints.
    fn routes_json(&self, found: &FoundRoute) -> Value {
        let opts = self.options();
        let path: Vec<Value> = found
            .hops
            .iter()
            .map(|h| {
                let mut o = Map::new();
                o.insert("short_channel_id_dir".into(), json!(h.scidd.fmt()));
                if opts.new_hop_fields() {
                    o.insert("node_id_in".into(), json!(h.node_in.to_hex()));
                    o.insert("node_id_out".into(), json!(h.node_out.to_hex()));
                    o.insert("amount_in_msat".into(), json!(h.amount_in));
                    o.insert("amount_out_msat".into(), json!(h.amount_out));
                    o.insert("cltv_in".into(), json!(h.cltv_in));
                    o.insert("cltv_out".into(), json!(h.cltv_out));
                }
                if opts.old_hop_fields() {
                    o.insert("next_node_id".into(), json!(h.node_out.to_hex()));
                    o.insert("amount_msat".into(), json!(h.amount_in));
                    o.insert("delay".into(), json!(h.cltv_in));
                }
                Value::Object(o)
            })
            .collect();
        json!({
            "probability_ppm": PROBABILITY_PPM,
            "routes": [{
                "probability_ppm": PROBABILITY_PPM,
                "amount_msat": found.delivered,
                "final_cltv": found.final_cltv,
                "path": path,
            }],
        })
    }
}
