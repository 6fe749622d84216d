//! A fake Core Lightning for tests.
//!
//! [`FakeCln`] answers the JSON-RPC methods [`satchel_cln::ClnBackend`] uses with CLN's method
//! names, parameter names (unknown or missing parameters are refused as `lightningd` does, with
//! `-32602`), result field names and error objects (codes from CLN's `jsonrpc_errors.h`). It is
//! served on a unix socket ([`FakeCln::serve_socket`]) and as CLNRest over HTTPS with a rune
//! check ([`FakeCln::serve_rest`]).
//!
//! Money really moves: every invoice, payment and route is delegated to a real
//! [`LightningBackend`] (in Satchel's tests, the LDK node of the in-process devnet), and the
//! fake keeps the bookkeeping CLN would keep on top of it: invoices with labels and
//! `pay_index`es (fed by the backend's incoming event stream; a received keysend becomes a
//! `keysend-…` invoice as CLN's keysend plugin makes it), and `sendpay` parts with statuses,
//! amounts sent and stored failures.
//!
//! # Releases
//!
//! The fake plays one Core Lightning release ([`FakeOptions`], given to
//! [`FakeCln::start_with`]; [`FakeCln::start`] plays v27.03 with deprecated APIs allowed).
//! `getinfo` reports it (`"v24.11"`), and what the release offers follows CLN's schemas:
//!
//! * methods: `getroutes` from v24.08; `xpay` and the askrene layer commands
//!   (`askrene-create-layer`, `askrene-update-channel`, `askrene-disable-node`,
//!   `askrene-remove-layer`) from v24.11; `pay` and `getroute` deprecated in v26.06 (refused
//!   with `-32601` `Command "pay" is deprecated` when `deprecated_apis` is off) and gone from
//!   v27.03. A method the release lacks is refused as `lightningd` refuses any unknown one
//!   (`-32601`, `Unknown command '<method>'`);
//! * parameters added later than the release are unknown parameters (`-32602`): `xpay`
//!   `maxdelay` (v25.02), `payer_note` (v26.04), `label` and `localinvreqid` (v26.06);
//!   `getroutes` `maxdelay` (v25.02) and `maxparts` (v25.09); `listsendpays`
//!   `index`/`start`/`limit` (v23.11); `sendonion total_amount_msat` (v25.05);
//! * `getroutes` layers: `auto.localchans` and `auto.sourcefree` always, `auto.include_fees`
//!   from v26.04, `auto.no_mpp_support` from v25.02 (deprecated in v26.06, so refused when
//!   `deprecated_apis` is off, and after v27.03), else only layers that exist (`xpay`'s own
//!   persistent `xpay` layer exists from v24.11, as xpay makes it at startup);
//! * `getroutes` hops: before v26.06 `{short_channel_id_dir, next_node_id, amount_msat,
//!   delay}`; from v26.06 `{short_channel_id_dir, node_id_in, node_id_out, amount_in_msat,
//!   amount_out_msat, cltv_in, cltv_out}`, plus the three old fields while `deprecated_apis`
//!   is on and the release is older than v27.06;
//! * `askrene-create-layer` lists `node_biases` from v25.12 and `impressions` from v26.09.
//!
//! # Where the fake knowingly differs from CLN
//!
//! `createonion` returns an opaque blob only this fake can read (not a Sphinx onion),
//! `sendonion` forwards only keysend onions (it reads the final hop's payload and has the
//! backend send that keysend, so the backend picks the actual route and fee), `getroute` asks
//! the backend for its route and counts delays from [`FAKE_BLOCKHEIGHT`], and `pay` makes
//! one part per attempt. `getinfo`'s height and sync warning and `listpeerchannels` are the
//! backend's (`node_status`, `list_channels`; a ready channel whose peer is away shows as
//! `CHANNELD_NORMAL` with `peer_connected: false`, an opening one as
//! `CHANNELD_AWAITING_LOCKIN`, a closing one as `CHANNELD_SHUTTING_DOWN`), unless the test
//! set channels ([`FakeCln::set_channels`]).
//!
//! `getroutes` returns one path: the first of the backend's routes (`query_routes`) that no
//! applied layer rules out (a channel direction disabled with `askrene-update-channel
//! enabled=false`, or a path through a node disabled with `askrene-disable-node`). Its amounts
//! and CLTVs are derived from that route's fees and expiries, and our own first channel is
//! always free and without delay, whether or not `auto.sourcefree` is asked for (the backend's
//! routes carry no fee for it). Other `askrene-update-channel` fields (fees, HTLC limits,
//! CLTV delta) are kept and listed but do not change routes; `maxparts` and
//! `auto.no_mpp_support` change nothing (there is only one path anyway);
//! `auto.localchans` changes nothing. Errors: `215` when the amount exceeds what all our
//! channels ([`FakeCln::set_channels`], if set) can send, `205` when there is no route or
//! layers rule out every route, `206` when the path's fee exceeds `maxfee_msat` or its delay
//! `maxdelay`. Only routes from our own node are found (another `source` is refused). The
//! probability is a constant.
//!
//! `xpay` pays bolt11 invoices only (no offers, bolt12 invoices or BIP353 names) and never
//! a part of one (`partial_msat` below the amount is refused). It first routes like
//! `getroutes` with the caller's layers plus `auto.localchans`, `auto.sourcefree` and `xpay`
//! (a failure there is xpay's answer: `Failed: <getroutes message>` with getroutes' code), then
//! the backend makes the payment in one attempt, recorded as one `sendpay` part (so
//! `listsendpays` and `waitsendpay` see it). An already paid hash is refused up front (`219`),
//! as is a hash with a pending part (`200`). A destination that refuses the payment gives
//! `203`; any other failure `209` (`Failed after 1 attempts. ...`, or for a backend timeout
//! CLN's `Timed out after after 1 attempts. ...`), with a summary of the attempt that is the
//! fake's own wording after the attempt count.

mod askrene;
mod server;
mod versions;
mod xpay;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};
use tokio::sync::Notify;
use tokio::time::Instant;

use satchel_domain::{
    Bolt11, CustomRecords, FailureReason, KEYSEND_PREIMAGE_TLV, Msat, NodePubkey, PaymentHash,
    Preimage, now_secs,
};
use satchel_lightning::{
    ChannelInfo, ChannelState, IncomingEvent, IncomingKind, LightningBackend, LnError, NewInvoice,
    PayOutcome, PayRequest, PayTarget, PaymentLookup, Route,
};

use satchel_cln::onion::{
    TLV_AMT_TO_FORWARD, format_scid, parse_payload, parse_scid, read_bigsize, read_truncated,
};
use satchel_cln::rpc;
use satchel_cln::{KEYSEND_LABEL_PREFIX, KEYSEND_MESSAGE_TLV};

pub use server::{FakeRest, FakeRestConfig, FakeSocket};
pub use versions::FakeOptions;

/// The block height the fake reports (`getinfo`) and counts `getroute` delays from. The devnet
/// has no chain: its best block is the genesis block.
pub const FAKE_BLOCKHEIGHT: u32 = 0;
/// CLN's default invoice expiry, seconds.
const DEFAULT_EXPIRY: u64 = 604_800;
/// How long the fake lets the backend try a keysend from `sendonion`.
const SENDONION_TIMEOUT: Duration = Duration::from_secs(60);
/// The onion's routing-info size (BOLT 4): hop payloads plus one HMAC each must fit.
const ONION_ROUTING_INFO: usize = 1300;

/// A channel of ours, as the test tells the fake (for `listpeerchannels`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeChannel {
    /// The peer.
    pub peer_id: NodePubkey,
    /// Short channel id.
    pub short_channel_id: u64,
    /// What we can send now.
    pub spendable_msat: u64,
    /// What we can receive now.
    pub receivable_msat: u64,
    /// Channel size.
    pub total_msat: u64,
}

/// Where the fake gets our channels from.
pub type ChannelsFn = Arc<dyn Fn() -> Vec<FakeChannel> + Send + Sync>;

/// A transport fault to inject into the next call of a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Close the connection without running the command.
    DropRequest,
    /// Run the command, then close the connection without answering.
    DropResponse,
    /// Answer with bytes that are not JSON (after running the command).
    Garbage,
}

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcFailure {
    /// Code.
    pub code: i64,
    /// Message.
    pub message: String,
    /// Data.
    pub data: Option<Value>,
}

impl RpcFailure {
    fn new(code: i64, message: impl Into<String>) -> RpcFailure {
        RpcFailure {
            code,
            message: message.into(),
            data: None,
        }
    }

    fn params(message: impl Into<String>) -> RpcFailure {
        RpcFailure::new(rpc::JSONRPC2_INVALID_PARAMS, message)
    }

    fn with_data(mut self, data: Value) -> RpcFailure {
        self.data = Some(data);
        self
    }

    /// As a JSON-RPC error object.
    pub fn to_json(&self) -> Value {
        let mut o = json!({ "code": self.code, "message": self.message });
        if let Some(d) = &self.data {
            o["data"] = d.clone();
        }
        o
    }
}

type RpcResult = Result<Value, RpcFailure>;

#[derive(Debug, Clone)]
struct Paid {
    pay_index: u64,
    amount_received_msat: u64,
    paid_at: i64,
}

#[derive(Debug, Clone)]
struct InvRec {
    label: String,
    description: String,
    payment_hash: PaymentHash,
    preimage: Option<Preimage>,
    bolt11: Option<String>,
    payment_secret: Option<String>,
    amount_msat: Option<u64>,
    expires_at: i64,
    created_index: u64,
    paid: Option<Paid>,
}

impl InvRec {
    fn status(&self, now: i64) -> &'static str {
        if self.paid.is_some() {
            "paid"
        } else if self.expires_at <= now {
            "expired"
        } else {
            "unpaid"
        }
    }

    fn to_json(&self, now: i64) -> Value {
        let mut o = Map::new();
        o.insert("label".into(), json!(self.label));
        if let Some(b) = &self.bolt11 {
            o.insert("bolt11".into(), json!(b));
        }
        o.insert("payment_hash".into(), json!(self.payment_hash.to_hex()));
        if let Some(a) = self.amount_msat {
            o.insert("amount_msat".into(), json!(a));
        }
        o.insert("status".into(), json!(self.status(now)));
        o.insert("description".into(), json!(self.description));
        o.insert("expires_at".into(), json!(self.expires_at));
        o.insert("created_index".into(), json!(self.created_index));
        if let Some(p) = &self.paid {
            o.insert("updated_index".into(), json!(p.pay_index));
            o.insert("pay_index".into(), json!(p.pay_index));
            o.insert("amount_received_msat".into(), json!(p.amount_received_msat));
            o.insert("paid_at".into(), json!(p.paid_at));
            if let Some(pre) = &self.preimage {
                o.insert("payment_preimage".into(), json!(pre.to_hex()));
            }
        }
        Value::Object(o)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PartStatus {
    Pending,
    Complete,
    Failed,
}

impl PartStatus {
    fn name(self) -> &'static str {
        match self {
            PartStatus::Pending => "pending",
            PartStatus::Complete => "complete",
            PartStatus::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone)]
struct Part {
    id: u64,
    groupid: u64,
    partid: u64,
    payment_hash: PaymentHash,
    status: PartStatus,
    amount_msat: u64,
    amount_sent_msat: u64,
    destination: String,
    created_at: i64,
    completed_at: Option<i64>,
    preimage: Option<Preimage>,
    bolt11: Option<String>,
    label: Option<String>,
    /// The stored error `waitsendpay` returns for a failed part.
    failure: Option<RpcFailure>,
    /// Why the backend failed it.
    reason: Option<FailureReason>,
}

impl Part {
    fn to_json(&self) -> Value {
        let mut o = Map::new();
        o.insert("created_index".into(), json!(self.id));
        o.insert("id".into(), json!(self.id));
        o.insert("payment_hash".into(), json!(self.payment_hash.to_hex()));
        o.insert("groupid".into(), json!(self.groupid));
        o.insert("partid".into(), json!(self.partid));
        o.insert("destination".into(), json!(self.destination));
        o.insert("amount_msat".into(), json!(self.amount_msat));
        o.insert("amount_sent_msat".into(), json!(self.amount_sent_msat));
        o.insert("created_at".into(), json!(self.created_at));
        if let Some(t) = self.completed_at {
            o.insert("completed_at".into(), json!(t));
        }
        o.insert("status".into(), json!(self.status.name()));
        if let Some(p) = &self.preimage {
            o.insert("payment_preimage".into(), json!(p.to_hex()));
        }
        if let Some(l) = &self.label {
            o.insert("label".into(), json!(l));
        }
        if let Some(b) = &self.bolt11 {
            o.insert("bolt11".into(), json!(b));
        }
        Value::Object(o)
    }

    /// `pay`'s success result.
    fn pay_result(&self) -> Value {
        json!({
            "payment_preimage": self.preimage.map(|p| p.to_hex()),
            "destination": self.destination,
            "payment_hash": self.payment_hash.to_hex(),
            "created_at": self.created_at,
            "parts": 1,
            "amount_msat": self.amount_msat,
            "amount_sent_msat": self.amount_sent_msat,
            "status": "complete",
        })
    }
}

#[derive(Default)]
struct State {
    invoices: Vec<InvRec>,
    next_invoice_index: u64,
    parts: Vec<Part>,
    next_part_id: u64,
    event_cursor: u64,
    /// `datastore`: key path -> (generation, value bytes).
    datastore: BTreeMap<Vec<String>, (u64, Vec<u8>)>,
    /// askrene's layers, by name.
    layers: BTreeMap<String, askrene::Layer>,
}

impl State {
    fn invoice_by_label(&self, label: &str) -> Option<&InvRec> {
        self.invoices.iter().find(|i| i.label == label)
    }

    fn invoice_by_hash(&self, hash: &PaymentHash) -> Option<&InvRec> {
        self.invoices.iter().find(|i| i.payment_hash == *hash)
    }

    fn next_groupid(&self, hash: &PaymentHash) -> u64 {
        self.parts
            .iter()
            .filter(|p| p.payment_hash == *hash)
            .map(|p| p.groupid)
            .max()
            .map_or(1, |g| g + 1)
    }

    fn part_mut(&mut self, id: u64) -> Option<&mut Part> {
        self.parts.iter_mut().find(|p| p.id == id)
    }

    fn apply_event(&mut self, ev: &IncomingEvent) {
        let paid_with = |amount: Msat, at: i64| Paid {
            pay_index: ev.seq,
            amount_received_msat: amount.as_msat(),
            paid_at: at,
        };
        match &ev.kind {
            IncomingKind::InvoiceSettled {
                payment_hash,
                amount_received,
                settled_at_secs,
            } => {
                if let Some(inv) = self
                    .invoices
                    .iter_mut()
                    .find(|i| i.payment_hash == *payment_hash)
                {
                    if inv.paid.is_none() {
                        inv.paid = Some(paid_with(*amount_received, *settled_at_secs));
                    }
                } else {
                    // Paid on the node but not made through us (or deleted): CLN would list it.
                    self.next_invoice_index += 1;
                    self.invoices.push(InvRec {
                        label: payment_hash.to_hex(),
                        description: String::new(),
                        payment_hash: *payment_hash,
                        preimage: None,
                        bolt11: None,
                        payment_secret: None,
                        amount_msat: None,
                        expires_at: *settled_at_secs,
                        created_index: self.next_invoice_index,
                        paid: Some(paid_with(*amount_received, *settled_at_secs)),
                    });
                }
            }
            IncomingKind::KeysendReceived {
                payment_hash,
                preimage,
                amount_received,
                custom_records,
                settled_at_secs,
            } => {
                // CLN's keysend plugin: an invoice labelled keysend-<time>, description
                // "keysend" or "keysend: <chat message>". Other TLVs are not kept.
                let description = match custom_records.0.get(&KEYSEND_MESSAGE_TLV) {
                    Some(m) => format!("keysend: {}", String::from_utf8_lossy(m)),
                    None => "keysend".to_owned(),
                };
                self.next_invoice_index += 1;
                self.invoices.push(InvRec {
                    label: format!(
                        "{KEYSEND_LABEL_PREFIX}{}.{:09}",
                        settled_at_secs, self.next_invoice_index
                    ),
                    description,
                    payment_hash: *payment_hash,
                    preimage: Some(*preimage),
                    bolt11: None,
                    payment_secret: None,
                    amount_msat: Some(amount_received.as_msat()),
                    expires_at: settled_at_secs.saturating_add(3600),
                    created_index: self.next_invoice_index,
                    paid: Some(paid_with(*amount_received, *settled_at_secs)),
                });
            }
        }
        self.event_cursor = self.event_cursor.max(ev.seq);
    }
}

struct Inner {
    backend: Arc<dyn LightningBackend>,
    options: FakeOptions,
    channels: Mutex<Option<ChannelsFn>>,
    state: Mutex<State>,
    changed: Notify,
    calls: Mutex<HashMap<String, u64>>,
    faults: Mutex<HashMap<String, VecDeque<Fault>>>,
    /// Calls recorded since [`FakeCln::record`] (`None`: not recording).
    captures: Mutex<Option<Vec<Call>>>,
}

/// One JSON-RPC call as the fake saw it, for contract tests ([`FakeCln::record`]).
#[derive(Debug, Clone)]
pub struct Call {
    /// The method.
    pub method: String,
    /// The parameters as sent.
    pub params: Value,
    /// The result, or the error object.
    pub result: Result<Value, Value>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A fake `lightningd`. Cheap to clone; all clones share one node.
#[derive(Clone)]
pub struct FakeCln {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FakeCln {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeCln").finish_non_exhaustive()
    }
}

/// The parameters of one call, checked against the method's parameter names.
struct Params(Map<String, Value>);

impl Params {
    fn new(params: Value, allowed: &[&str]) -> Result<Params, RpcFailure> {
        let map = match params {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            Value::Array(a) if a.is_empty() => Map::new(),
            _ => {
                return Err(RpcFailure::params(
                    "the fake only takes named (object) parameters",
                ));
            }
        };
        if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(versions::unknown_param(unknown));
        }
        Ok(Params(map))
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    fn require(&self, name: &str) -> Result<&Value, RpcFailure> {
        self.get(name)
            .ok_or_else(|| RpcFailure::params(format!("missing required parameter: {name}")))
    }

    fn bad(name: &str, what: &str, v: &Value) -> RpcFailure {
        RpcFailure::params(format!("{name}: should be {what}: invalid token '{v}'"))
    }

    fn string(&self, name: &str) -> Result<Option<String>, RpcFailure> {
        self.get(name)
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(Params::bad(name, "a string", other)),
            })
            .transpose()
    }

    fn req_string(&self, name: &str) -> Result<String, RpcFailure> {
        self.require(name)?;
        self.string(name)?
            .ok_or_else(|| RpcFailure::params(format!("missing required parameter: {name}")))
    }

    fn u64(&self, name: &str) -> Result<Option<u64>, RpcFailure> {
        self.get(name)
            .map(|v| match v {
                Value::Number(n) => n.as_u64().ok_or_else(|| Params::bad(name, "an integer", v)),
                Value::String(s) => s.parse().map_err(|_| Params::bad(name, "an integer", v)),
                other => Err(Params::bad(name, "an integer", other)),
            })
            .transpose()
    }

    fn number(&self, name: &str) -> Result<Option<f64>, RpcFailure> {
        self.get(name)
            .map(|v| match v {
                Value::Number(n) => n.as_f64().ok_or_else(|| Params::bad(name, "a number", v)),
                Value::String(s) => s.parse().map_err(|_| Params::bad(name, "a number", v)),
                other => Err(Params::bad(name, "a number", other)),
            })
            .transpose()
    }

    fn bool(&self, name: &str) -> Result<Option<bool>, RpcFailure> {
        self.get(name)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| Params::bad(name, "'true' or 'false'", v))
            })
            .transpose()
    }

    /// A `msat` parameter: an integer (msat) or a string `Nmsat` / `Nsat`.
    fn msat(&self, name: &str) -> Result<Option<u64>, RpcFailure> {
        self.get(name)
            .map(|v| {
                let bad = || Params::bad(name, "a millisatoshi amount", v);
                match v {
                    Value::Number(n) => n.as_u64().ok_or_else(bad),
                    Value::String(s) => {
                        if let Some(m) = s.strip_suffix("msat") {
                            m.parse().map_err(|_| bad())
                        } else if let Some(sat) = s.strip_suffix("sat") {
                            sat.parse::<u64>()
                                .ok()
                                .and_then(|x| x.checked_mul(1000))
                                .ok_or_else(bad)
                        } else {
                            s.parse().map_err(|_| bad())
                        }
                    }
                    _ => Err(bad()),
                }
            })
            .transpose()
    }

    fn hash(&self, name: &str) -> Result<Option<PaymentHash>, RpcFailure> {
        self.string(name)?
            .map(|s| {
                PaymentHash::from_hex(&s).ok_or_else(|| {
                    RpcFailure::params(format!(
                        "{name}: should be a 32 byte hex value: invalid token '\"{s}\"'"
                    ))
                })
            })
            .transpose()
    }

    fn pubkey(&self, name: &str) -> Result<Option<NodePubkey>, RpcFailure> {
        self.string(name)?
            .map(|s| {
                NodePubkey::from_hex(&s).ok_or_else(|| {
                    RpcFailure::params(format!(
                        "{name}: should be a node id: invalid token '\"{s}\"'"
                    ))
                })
            })
            .transpose()
    }
}

fn backend_failure(e: &LnError) -> RpcFailure {
    RpcFailure::new(-1, e.to_string())
}

fn random_hex32() -> String {
    Preimage::random().to_hex()
}

/// The fake's `createonion` blob.
#[derive(serde::Serialize, serde::Deserialize)]
struct FakeOnion {
    assocdata: String,
    hops: Vec<FakeOnionHop>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct FakeOnionHop {
    pubkey: String,
    payload: String,
}

const FAKE_ONION_MAGIC: &str = "5a7c4e1f";

impl FakeCln {
    /// A fake node on `backend` playing the default release ([`FakeOptions::default`]: v27.03,
    /// deprecated APIs allowed). Starts mirroring the backend's incoming events (paid invoices
    /// and keysends) into CLN's invoice table; must run inside a tokio runtime.
    pub fn start(backend: Arc<dyn LightningBackend>) -> FakeCln {
        FakeCln::start_with(backend, FakeOptions::default())
    }

    /// Like [`FakeCln::start`], playing the release `options` says.
    pub fn start_with(backend: Arc<dyn LightningBackend>, options: FakeOptions) -> FakeCln {
        let mut state = State::default();
        if options.has_xpay_layer() {
            state
                .layers
                .insert("xpay".to_owned(), askrene::Layer::persistent());
        }
        let inner = Arc::new(Inner {
            backend,
            options,
            channels: Mutex::new(None),
            state: Mutex::new(state),
            changed: Notify::new(),
            calls: Mutex::new(HashMap::new()),
            faults: Mutex::new(HashMap::new()),
            captures: Mutex::new(None),
        });
        tokio::spawn(mirror_events(Arc::downgrade(&inner)));
        FakeCln { inner }
    }

    /// The release the fake plays.
    pub fn options(&self) -> FakeOptions {
        self.inner.options
    }

    /// Where `listpeerchannels` gets our channels from (none if never set).
    pub fn set_channels(&self, channels: ChannelsFn) {
        *lock(&self.inner.channels) = Some(channels);
    }

    /// Drops the channels a test set: `listpeerchannels` lists the backend's again.
    pub fn clear_channels(&self) {
        *lock(&self.inner.channels) = None;
    }

    /// Makes the next call of `method` fail with `fault` (each injection applies once).
    pub fn inject_fault(&self, method: &str, fault: Fault) {
        lock(&self.inner.faults)
            .entry(method.to_owned())
            .or_default()
            .push_back(fault);
    }

    pub(crate) fn take_fault(&self, method: &str) -> Option<Fault> {
        lock(&self.inner.faults).get_mut(method)?.pop_front()
    }

    /// Starts recording every call (method, parameters, result), dropping anything recorded
    /// before.
    pub fn record(&self) {
        *lock(&self.inner.captures) = Some(Vec::new());
    }

    /// The calls recorded since [`FakeCln::record`] (finished ones, in the order they
    /// finished).
    pub fn captures(&self) -> Vec<Call> {
        lock(&self.inner.captures).clone().unwrap_or_default()
    }

    /// How many times `method` has been run.
    pub fn calls(&self, method: &str) -> u64 {
        lock(&self.inner.calls).get(method).copied().unwrap_or(0)
    }

    /// The backend the fake delegates to.
    pub fn backend(&self) -> &Arc<dyn LightningBackend> {
        &self.inner.backend
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    fn notify(&self) {
        self.inner.changed.notify_waiters();
    }

    /// Waits until `check` returns something or `deadline` passes (`None` = forever).
    async fn wait_for<T>(
        &self,
        deadline: Option<Instant>,
        mut check: impl FnMut(&State) -> Option<T>,
    ) -> Option<T> {
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(v) = check(&self.state()) {
                return Some(v);
            }
            match deadline {
                Some(d) => {
                    if tokio::time::timeout_at(d, notified).await.is_err() {
                        return check(&self.state());
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Runs one JSON-RPC command.
    pub async fn handle(&self, method: &str, params: Value) -> RpcResult {
        *lock(&self.inner.calls)
            .entry(method.to_owned())
            .or_default() += 1;
        if lock(&self.inner.captures).is_none() {
            return self.run(method, params).await;
        }
        let result = self.run(method, params.clone()).await;
        if let Some(c) = lock(&self.inner.captures).as_mut() {
            c.push(Call {
                method: method.to_owned(),
                params,
                result: match &result {
                    Ok(v) => Ok(v.clone()),
                    Err(e) => Err(e.to_json()),
                },
            });
        }
        result
    }

    async fn run(&self, method: &str, params: Value) -> RpcResult {
        if let Some(refused) = self.options().refuse_method(method, &params) {
            return Err(refused);
        }
        match method {
            "getinfo" => self.getinfo(Params::new(params, &[])?).await,
            "invoice" => {
                self.invoice(Params::new(
                    params,
                    &[
                        "amount_msat",
                        "label",
                        "description",
                        "expiry",
                        "fallbacks",
                        "preimage",
                        "exposeprivatechannels",
                        "cltv",
                        "deschashonly",
                    ],
                )?)
                .await
            }
            "listinvoices" => self.listinvoices(&Params::new(
                params,
                &[
                    "label",
                    "invstring",
                    "payment_hash",
                    "offer_id",
                    "index",
                    "start",
                    "limit",
                ],
            )?),
            "delinvoice" => {
                self.delinvoice(Params::new(params, &["label", "status", "desconly"])?)
                    .await
            }
            "waitanyinvoice" => {
                self.waitanyinvoice(Params::new(params, &["lastpay_index", "timeout"])?)
                    .await
            }
            "pay" => {
                self.pay(Params::new(
                    params,
                    &[
                        "bolt11",
                        "amount_msat",
                        "label",
                        "riskfactor",
                        "maxfeepercent",
                        "retry_for",
                        "maxdelay",
                        "exemptfee",
                        "localinvreqid",
                        "exclude",
                        "maxfee",
                        "description",
                        "partial_msat",
                    ],
                )?)
                .await
            }
            "listsendpays" => self.listsendpays(&Params::new(
                params,
                &[
                    "bolt11",
                    "payment_hash",
                    "status",
                    "index",
                    "start",
                    "limit",
                ],
            )?),
            "waitsendpay" => {
                self.waitsendpay(Params::new(
                    params,
                    &["payment_hash", "timeout", "partid", "groupid"],
                )?)
                .await
            }
            "getroute" => {
                self.getroute(Params::new(
                    params,
                    &[
                        "id",
                        "amount_msat",
                        "riskfactor",
                        "cltv",
                        "fromid",
                        "fuzzpercent",
                        "exclude",
                        "maxhops",
                    ],
                )?)
                .await
            }
            "createonion" => self.createonion(&Params::new(
                params,
                &["hops", "assocdata", "session_key", "onion_size"],
            )?),
            "sendonion" => {
                self.sendonion(Params::new(
                    params,
                    &[
                        "onion",
                        "first_hop",
                        "payment_hash",
                        "label",
                        "shared_secrets",
                        "partid",
                        "bolt11",
                        "amount_msat",
                        "destination",
                        "localinvreqid",
                        "groupid",
                        "description",
                        "total_amount_msat",
                    ],
                )?)
                .await
            }
            "listpeerchannels" => self.listpeerchannels(&Params::new(params, &["id"])?).await,
            "datastore" => self.datastore(&Params::new(
                params,
                &["key", "string", "hex", "mode", "generation"],
            )?),
            "listdatastore" => self.listdatastore(&Params::new(params, &["key"])?),
            "getroutes" => {
                self.getroutes(Params::new(
                    params,
                    &[
                        "source",
                        "destination",
                        "amount_msat",
                        "layers",
                        "maxfee_msat",
                        "final_cltv",
                        "maxdelay",
                        "maxparts",
                    ],
                )?)
                .await
            }
            "xpay" => {
                self.xpay(Params::new(
                    params,
                    &[
                        "invstring",
                        "amount_msat",
                        "maxfee",
                        "layers",
                        "retry_for",
                        "partial_msat",
                        "maxdelay",
                        "payer_note",
                        "label",
                        "localinvreqid",
                    ],
                )?)
                .await
            }
            "askrene-create-layer" => {
                self.askrene_create_layer(&Params::new(params, &["layer", "persistent"])?)
            }
            "askrene-update-channel" => self.askrene_update_channel(&Params::new(
                params,
                &[
                    "layer",
                    "short_channel_id_dir",
                    "enabled",
                    "htlc_minimum_msat",
                    "htlc_maximum_msat",
                    "fee_base_msat",
                    "fee_proportional_millionths",
                    "cltv_expiry_delta",
                ],
            )?),
            "askrene-disable-node" => {
                self.askrene_disable_node(&Params::new(params, &["layer", "node"])?)
            }
            "askrene-remove-layer" => self.askrene_remove_layer(&Params::new(params, &["layer"])?),
            _ => Err(RpcFailure::new(
                rpc::JSONRPC2_METHOD_NOT_FOUND,
                format!("Unknown command '{method}'"),
            )),
        }
    }

    /// Our channels: the test's ([`FakeCln::set_channels`], all ready and connected) if it set
    /// some, else the backend's (none if it cannot list them).
    async fn our_channels(&self) -> Result<Vec<ChannelInfo>, RpcFailure> {
        let scripted = lock(&self.inner.channels).as_ref().map(|f| f());
        if let Some(chans) = scripted {
            return Ok(chans
                .into_iter()
                .map(|c| ChannelInfo {
                    // A stand-in id, stable per channel.
                    channel_id: hex::encode(Sha256::digest(c.short_channel_id.to_be_bytes())),
                    short_channel_id: Some(c.short_channel_id),
                    peer: c.peer_id,
                    capacity_sats: c.total_msat / 1000,
                    local_balance_msat: c.spendable_msat,
                    remote_balance_msat: c.receivable_msat,
                    state: ChannelState::Active,
                    confirmations: None,
                })
                .collect());
        }
        match self.inner.backend.list_channels().await {
            Ok(c) => Ok(c),
            Err(LnError::NotSupported) => Ok(Vec::new()),
            Err(e) => Err(backend_failure(&e)),
        }
    }

    /// The node's identity, its height (the backend's, else [`FAKE_BLOCKHEIGHT`]), a sync
    /// warning when the backend says it is not synced, and channel counts.
    async fn getinfo(&self, _p: Params) -> RpcResult {
        let info = self
            .inner
            .backend
            .node_info()
            .await
            .map_err(|e| backend_failure(&e))?;
        let status = self
            .inner
            .backend
            .node_status()
            .await
            .map_err(|e| backend_failure(&e))?;
        let channels = self.our_channels().await?;
        let count = |st: ChannelState| channels.iter().filter(|c| c.state == st).count();
        let peers: std::collections::BTreeSet<String> =
            channels.iter().map(|c| c.peer.to_hex()).collect();
        let mut out = json!({
            "id": info.pubkey.to_hex(),
            "alias": info.alias,
            "color": "5a7c4e",
            "num_peers": peers.len(),
            "num_pending_channels": count(ChannelState::Pending),
            "num_active_channels": count(ChannelState::Active),
            "num_inactive_channels": count(ChannelState::Inactive),
            "address": [],
            "binding": [],
            "version": self.options().version.to_string(),
            "blockheight": status.block_height.unwrap_or(FAKE_BLOCKHEIGHT),
            "network": info.network.name(),
            "fees_collected_msat": 0,
            "lightning-dir": format!("/satchel-fake/{}", info.network.name()),
            "our_features": {
                "init": "08a0000a0a69a2",
                "node": "88a0000a0a69a2",
                "channel": "",
                "invoice": "02000002024100",
            },
        });
        if status.synced == Some(false) {
            out["warning_lightningd_sync"] = json!("Still loading latest blocks from bitcoind.");
        }
        Ok(out)
    }

    async fn invoice(&self, p: Params) -> RpcResult {
        let amount = match p.require("amount_msat")? {
            Value::String(s) if s == "any" => None,
            _ => Some(p.msat("amount_msat")?.unwrap_or(0)),
        };
        let label = match p.require("label")? {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => return Err(Params::bad("label", "a string or number", other)),
        };
        let description = p.req_string("description")?;
        let expiry = p.u64("expiry")?.unwrap_or(DEFAULT_EXPIRY);
        let preimage = match p.string("preimage")? {
            Some(s) => Preimage::from_hex(&s).ok_or_else(|| {
                RpcFailure::params(format!(
                    "preimage: should be a 32 byte hex value: invalid token '\"{s}\"'"
                ))
            })?,
            None => Preimage::random(),
        };
        let deschashonly = p.bool("deschashonly")?.unwrap_or(false);
        let hash = preimage.hash();
        {
            let st = self.state();
            if st.invoice_by_label(&label).is_some() {
                return Err(RpcFailure::new(
                    rpc::INVOICE_LABEL_ALREADY_EXISTS,
                    format!("Duplicate label '{label}'"),
                ));
            }
            if st.invoice_by_hash(&hash).is_some() {
                return Err(RpcFailure::new(
                    rpc::INVOICE_PREIMAGE_ALREADY_EXISTS,
                    "preimage already used",
                ));
            }
        }
        let amount = amount
            .map(|a| {
                Msat::from_msat(a).map_err(|e| RpcFailure::params(format!("amount_msat: {e}")))
            })
            .transpose()?;
        let description_hash =
            deschashonly.then(|| <[u8; 32]>::from(Sha256::digest(description.as_bytes())));
        let bolt11 = self
            .inner
            .backend
            .create_invoice(NewInvoice {
                amount,
                memo: description.clone(),
                description_hash,
                expiry_secs: u32::try_from(expiry).unwrap_or(u32::MAX),
                preimage,
            })
            .await
            .map_err(|e| backend_failure(&e))?;
        let mut st = self.state();
        if st.invoice_by_label(&label).is_some() {
            return Err(RpcFailure::new(
                rpc::INVOICE_LABEL_ALREADY_EXISTS,
                format!("Duplicate label '{label}'"),
            ));
        }
        st.next_invoice_index += 1;
        let rec = InvRec {
            label,
            description,
            payment_hash: hash,
            preimage: Some(preimage),
            bolt11: Some(bolt11.as_str().to_owned()),
            payment_secret: Some(hex::encode(bolt11.payment_secret())),
            amount_msat: amount.map(Msat::as_msat),
            expires_at: bolt11.expires_at_secs(),
            created_index: st.next_invoice_index,
            paid: None,
        };
        let out = json!({
            "payment_hash": hash.to_hex(),
            "expires_at": rec.expires_at,
            "bolt11": rec.bolt11,
            "payment_secret": rec.payment_secret,
            "created_index": rec.created_index,
        });
        st.invoices.push(rec);
        Ok(out)
    }

    fn listinvoices(&self, p: &Params) -> RpcResult {
        let label = match p.get("label") {
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => p.string("label")?,
        };
        let invstring = p.string("invstring")?;
        let hash = p.hash("payment_hash")?;
        let filters = [label.is_some(), invstring.is_some(), hash.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if filters > 1 || (filters == 1 && p.get("offer_id").is_some()) {
            return Err(RpcFailure::params(
                "Can only specify one of {label}, {invstring}, {payment_hash} or {offer_id}",
            ));
        }
        let start = p.u64("start")?.unwrap_or(0);
        let limit = p
            .u64("limit")?
            .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
        let now = now_secs();
        let st = self.state();
        let invoices: Vec<Value> = st
            .invoices
            .iter()
            .filter(|i| label.as_ref().is_none_or(|l| i.label == *l))
            .filter(|i| {
                invstring
                    .as_ref()
                    .is_none_or(|s| i.bolt11.as_ref() == Some(s))
            })
            .filter(|i| hash.is_none_or(|h| i.payment_hash == h))
            .filter(|i| i.created_index >= start)
            .take(limit)
            .map(|i| i.to_json(now))
            .collect();
        Ok(json!({ "invoices": invoices }))
    }

    async fn delinvoice(&self, p: Params) -> RpcResult {
        let label = match p.require("label")? {
            Value::Number(n) => n.to_string(),
            _ => p.req_string("label")?,
        };
        let status = p.req_string("status")?;
        if !["paid", "expired", "unpaid"].contains(&status.as_str()) {
            return Err(RpcFailure::params(format!(
                "status: should be an invoice status: invalid token '\"{status}\"'"
            )));
        }
        let now = now_secs();
        let rec = {
            let st = self.state();
            let Some(rec) = st.invoice_by_label(&label) else {
                return Err(RpcFailure::new(rpc::INVOICE_NOT_FOUND, "Unknown invoice"));
            };
            let current = rec.status(now);
            if current != status {
                return Err(RpcFailure::new(
                    rpc::INVOICE_STATUS_UNEXPECTED,
                    format!("Invoice status is {current} not {status}"),
                )
                .with_data(json!({ "current_status": current, "expected_status": status })));
            }
            rec.clone()
        };
        if status == "unpaid" {
            // `lightningd` judges the status and deletes in one step, where an HTLC pays the
            // invoice: one the node already accepted makes the invoice paid, even if its
            // settlement has not reached this fake's invoice list yet.
            let take = self
                .inner
                .backend
                .take_for_internal(rec.payment_hash)
                .await
                .map_err(|e| backend_failure(&e))?;
            if take == satchel_lightning::InternalTake::NodePaid {
                return Err(RpcFailure::new(
                    rpc::INVOICE_STATUS_UNEXPECTED,
                    "Invoice status is paid not unpaid",
                )
                .with_data(json!({ "current_status": "paid", "expected_status": status })));
            }
            self.inner
                .backend
                .cancel_invoice(rec.payment_hash)
                .await
                .map_err(|e| backend_failure(&e))?;
        }
        self.state().invoices.retain(|i| i.label != label);
        self.notify();
        Ok(rec.to_json(now))
    }

    async fn waitanyinvoice(&self, p: Params) -> RpcResult {
        let last = p.u64("lastpay_index")?.unwrap_or(0);
        let deadline = p
            .u64("timeout")?
            .map(|t| Instant::now() + Duration::from_secs(t));
        let now = now_secs();
        let found = self
            .wait_for(deadline, |st| {
                st.invoices
                    .iter()
                    .filter(|i| i.paid.as_ref().is_some_and(|p| p.pay_index > last))
                    .min_by_key(|i| i.paid.as_ref().map_or(u64::MAX, |p| p.pay_index))
                    .map(|i| i.to_json(now))
            })
            .await;
        found.ok_or_else(|| RpcFailure::new(rpc::INVOICE_WAIT_TIMED_OUT, "Timed out"))
    }

    /// Records a new pending part (built by `make` from its id and group) and returns its id.
    fn new_part(&self, hash: &PaymentHash, make: impl FnOnce(u64, u64) -> Part) -> u64 {
        let mut st = self.state();
        st.next_part_id += 1;
        let id = st.next_part_id;
        let groupid = st.next_groupid(hash);
        st.parts.push(make(id, groupid));
        drop(st);
        self.notify();
        id
    }

    /// Records a pending part for paying `invoice` (one attempt: part 1 of a new group, as
    /// `pay` and `xpay` make it here) and has the backend pay it. Returns the part and the
    /// backend's answer; the caller settles the part.
    async fn send_bolt11_part(
        &self,
        invoice: &Bolt11,
        amount: u64,
        fee_limit: u64,
        retry_for: u64,
        label: Option<String>,
    ) -> Result<(u64, Result<PayOutcome, LnError>), RpcFailure> {
        let amount_m = Msat::from_msat(amount).map_err(|e| RpcFailure::params(e.to_string()))?;
        let fee_m = Msat::from_msat(fee_limit).map_err(|e| RpcFailure::params(e.to_string()))?;
        let hash = invoice.payment_hash();
        let dest = invoice.payee().to_hex();
        let id = self.new_part(&hash, |id, groupid| Part {
            id,
            groupid,
            partid: 1,
            payment_hash: hash,
            status: PartStatus::Pending,
            amount_msat: amount,
            amount_sent_msat: amount,
            destination: dest,
            created_at: now_secs(),
            completed_at: None,
            preimage: None,
            bolt11: Some(invoice.as_str().to_owned()),
            label,
            failure: None,
            reason: None,
        });
        let outcome = self
            .inner
            .backend
            .pay(PayRequest {
                target: PayTarget::Bolt11 {
                    invoice: invoice.clone(),
                    amount: amount_m,
                },
                fee_limit: fee_m,
                timeout: Duration::from_secs(retry_for),
            })
            .await;
        Ok((id, outcome))
    }

    /// Our node and the backend's routes for `amount_msat` to `dest` (what `getroute` and
    /// `getroutes` print in their own shapes).
    async fn backend_routes(
        &self,
        dest: NodePubkey,
        amount_msat: u64,
    ) -> Result<(NodePubkey, Vec<Route>), RpcFailure> {
        let amount = Msat::from_msat(amount_msat).map_err(|e| RpcFailure::params(e.to_string()))?;
        let ours = self
            .inner
            .backend
            .node_info()
            .await
            .map_err(|e| backend_failure(&e))?
            .pubkey;
        let routes = self
            .inner
            .backend
            .query_routes(dest, amount)
            .await
            .map_err(|e| backend_failure(&e))?;
        Ok((ours, routes))
    }

    /// Applies the backend's answer to part `id`.
    fn settle_part(
        &self,
        id: u64,
        outcome: &Result<PayOutcome, LnError>,
        remove_unsent: bool,
        erring_node: &str,
    ) -> PartFate {
        let unsent = matches!(
            outcome,
            Ok(PayOutcome::Failed(
                FailureReason::NoRoute | FailureReason::InsufficientBalance
            )) | Err(LnError::Rejected(_) | LnError::NotSupported)
        );
        let now = now_secs();
        let mut st = self.state();
        let fate = if unsent && remove_unsent {
            st.parts.retain(|p| p.id != id);
            PartFate::Removed
        } else {
            let failed_with = match outcome {
                Ok(PayOutcome::Failed(r)) => Some(*r),
                Err(LnError::Rejected(_) | LnError::NotSupported) => Some(FailureReason::Error),
                _ => None,
            };
            match (st.part_mut(id), outcome, failed_with) {
                (None, _, _) => PartFate::Removed,
                (Some(p), Ok(PayOutcome::Succeeded { preimage, fee }), _) => {
                    p.status = PartStatus::Complete;
                    p.preimage = Some(*preimage);
                    p.amount_sent_msat = p.amount_msat.saturating_add(fee.as_msat());
                    p.completed_at = Some(now);
                    PartFate::Final
                }
                (Some(p), _, Some(reason)) => {
                    p.status = PartStatus::Failed;
                    p.failure = Some(part_failure(p, reason, erring_node));
                    p.reason = Some(reason);
                    p.completed_at = Some(now);
                    PartFate::Final
                }
                (Some(_), _, None) => PartFate::Pending,
            }
        };
        drop(st);
        self.notify();
        fate
    }

    /// Follows a part the backend reported in flight until it is final.
    fn spawn_resolver(&self, id: u64, hash: PaymentHash, erring_node: String) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let Some(inner) = weak.upgrade() else { return };
                let fake = FakeCln { inner };
                let outcome = match fake.inner.backend.lookup_payment(hash).await {
                    Ok(PaymentLookup::Succeeded { preimage, fee }) => {
                        PayOutcome::Succeeded { preimage, fee }
                    }
                    Ok(PaymentLookup::Failed(r)) => PayOutcome::Failed(r),
                    _ => continue,
                };
                fake.settle_part(id, &Ok(outcome), false, &erring_node);
                return;
            }
        });
    }

    async fn wait_part_final(&self, id: u64, deadline: Option<Instant>) -> Option<Part> {
        self.wait_for(deadline, |st| {
            st.parts
                .iter()
                .find(|p| p.id == id && p.status != PartStatus::Pending)
                .cloned()
        })
        .await
    }

    async fn pay(&self, p: Params) -> RpcResult {
        let text = p.req_string("bolt11")?;
        let invoice =
            Bolt11::parse(&text).map_err(|e| RpcFailure::params(format!("Invalid bolt11: {e}")))?;
        let info = self
            .inner
            .backend
            .node_info()
            .await
            .map_err(|e| backend_failure(&e))?;
        if invoice.network() != info.network {
            return Err(RpcFailure::params(format!(
                "Invalid bolt11: invoice is for {}, not {}",
                invoice.network().name(),
                info.network.name()
            )));
        }
        let maxfee = p.msat("maxfee")?;
        if maxfee.is_some() && (p.get("maxfeepercent").is_some() || p.get("exemptfee").is_some()) {
            return Err(RpcFailure::params(
                "If you specify maxfee, cannot specify maxfeepercent or exemptfee.",
            ));
        }
        let amount = match (invoice.amount(), p.msat("amount_msat")?) {
            (Some(_), Some(_)) => {
                return Err(RpcFailure::params("amount_msat parameter unnecessary"));
            }
            (None, None) => return Err(RpcFailure::params("amount_msat parameter required")),
            (Some(a), None) => a.as_msat(),
            (None, Some(a)) => a,
        };
        if invoice.description_hash().is_some() && p.get("description").is_none() {
            return Err(RpcFailure::params(
                "bolt11 has a description_hash: description parameter required",
            ));
        }
        if invoice.is_expired_at(now_secs()) {
            return Err(RpcFailure::new(rpc::PAY_INVOICE_EXPIRED, "Invoice expired"));
        }
        let pct = p.number("maxfeepercent")?.unwrap_or(0.5);
        let exempt = p.msat("exemptfee")?.unwrap_or(5000);
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let fee_limit = maxfee.unwrap_or_else(|| exempt.max((amount as f64 * pct / 100.0) as u64));
        let retry_for = p.u64("retry_for")?.unwrap_or(60);
        let label = p.string("label")?;
        let hash = invoice.payment_hash();
        let dest = invoice.payee().to_hex();
        {
            // The pay plugin looks at earlier payments of this hash first.
            let st = self.state();
            let mine = || st.parts.iter().filter(|x| x.payment_hash == hash);
            if let Some(done) = mine().find(|x| x.status == PartStatus::Complete) {
                return Ok(done.pay_result());
            }
            if mine().any(|x| x.status == PartStatus::Pending) {
                return Err(RpcFailure::new(
                    rpc::PAY_IN_PROGRESS,
                    "There already is a payment with this payment_hash in progress",
                ));
            }
        }
        let amount_m = Msat::from_msat(amount).map_err(|e| RpcFailure::params(e.to_string()))?;
        let (id, outcome) = self
            .send_bolt11_part(&invoice, amount, fee_limit, retry_for, label.clone())
            .await?;
        match self.settle_part(id, &outcome, true, &dest) {
            PartFate::Removed => {
                return Err(match outcome {
                    Ok(_) => {
                        let cheapest = self
                            .inner
                            .backend
                            .query_routes(invoice.payee(), amount_m)
                            .await
                            .ok()
                            .and_then(|r| r.first().map(|r| r.total_fees.as_msat()));
                        match cheapest {
                            Some(fee) if fee > fee_limit => RpcFailure::new(
                                rpc::PAY_ROUTE_TOO_EXPENSIVE,
                                format!(
                                    "Fee exceeds our fee budget: {fee}msat > {fee_limit}msat, \
                                     discarding route"
                                ),
                            ),
                            _ => RpcFailure::new(
                                rpc::PAY_STOPPED_RETRYING,
                                "Ran out of routes to try after 1 attempt: see `paystatus`",
                            ),
                        }
                    }
                    Err(e) => backend_failure(&e),
                });
            }
            PartFate::Pending => self.spawn_resolver(id, hash, dest.clone()),
            PartFate::Final => {}
        }
        let part = self
            .wait_part_final(id, None)
            .await
            .ok_or_else(|| RpcFailure::new(-1, "payment vanished"))?;
        match part.status {
            PartStatus::Complete => Ok(part.pay_result()),
            _ => Err(pay_error(
                part.reason.unwrap_or(FailureReason::Error),
                &part,
            )),
        }
    }

    fn listsendpays(&self, p: &Params) -> RpcResult {
        let bolt11 = p.string("bolt11")?;
        let hash = p.hash("payment_hash")?;
        if bolt11.is_some() && hash.is_some() {
            return Err(RpcFailure::params(
                "Can only specify one of {bolt11} or {payment_hash}",
            ));
        }
        let hash = match bolt11 {
            Some(b) => Some(
                Bolt11::parse(&b)
                    .map_err(|e| RpcFailure::params(format!("Invalid bolt11: {e}")))?
                    .payment_hash(),
            ),
            None => hash,
        };
        let status = p.string("status")?;
        let start = p.u64("start")?.unwrap_or(0);
        let limit = p
            .u64("limit")?
            .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
        let st = self.state();
        let payments: Vec<Value> = st
            .parts
            .iter()
            .filter(|x| hash.is_none_or(|h| x.payment_hash == h))
            .filter(|x| status.as_deref().is_none_or(|s| x.status.name() == s))
            .filter(|x| x.id >= start)
            .take(limit)
            .map(Part::to_json)
            .collect();
        Ok(json!({ "payments": payments }))
    }

    async fn waitsendpay(&self, p: Params) -> RpcResult {
        let hash = p
            .hash("payment_hash")?
            .ok_or_else(|| RpcFailure::params("missing required parameter: payment_hash"))?;
        let partid = p.u64("partid")?.unwrap_or(0);
        let groupid = p.u64("groupid")?;
        let deadline = p
            .u64("timeout")?
            .map(|t| Instant::now() + Duration::from_secs(t));
        let id = {
            let st = self.state();
            let group = groupid.or_else(|| {
                st.parts
                    .iter()
                    .filter(|x| x.payment_hash == hash)
                    .map(|x| x.groupid)
                    .max()
            });
            st.parts
                .iter()
                .find(|x| x.payment_hash == hash && x.partid == partid && Some(x.groupid) == group)
                .map(|x| x.id)
        };
        let Some(id) = id else {
            return Err(RpcFailure::new(
                rpc::PAY_NO_SUCH_PAYMENT,
                format!("Never attempted payment part {partid}"),
            ));
        };
        match self.wait_part_final(id, deadline).await {
            None => Err(RpcFailure::new(
                rpc::PAY_IN_PROGRESS,
                "Timed out while waiting",
            )),
            Some(part) if part.status == PartStatus::Complete => Ok(part.to_json()),
            Some(part) => Err(part
                .failure
                .clone()
                .unwrap_or_else(|| RpcFailure::new(rpc::PAY_UNSPECIFIED_ERROR, "failed"))),
        }
    }

    async fn getroute(&self, p: Params) -> RpcResult {
        let dest = p
            .pubkey("id")?
            .ok_or_else(|| RpcFailure::params("missing required parameter: id"))?;
        let amount = p
            .msat("amount_msat")?
            .ok_or_else(|| RpcFailure::params("missing required parameter: amount_msat"))?;
        p.require("riskfactor")?;
        p.number("riskfactor")?;
        p.number("fuzzpercent")?;
        p.u64("cltv")?;
        p.u64("maxhops")?;
        if p.get("fromid").is_some() {
            return Err(RpcFailure::params("the fake routes only from our own node"));
        }
        let exclude: Vec<String> = match p.get("exclude") {
            None => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| Params::bad("exclude", "an array of strings", v))
                })
                .collect::<Result<_, _>>()?,
            Some(other) => return Err(Params::bad("exclude", "an array", other)),
        };
        let (ours, routes) = self.backend_routes(dest, amount).await?;
        routes
            .iter()
            .map(|r| cln_route(ours, r))
            .find(|hops| !hops.iter().any(|h| excluded(&exclude, h)))
            .map(|hops| json!({ "route": hops }))
            .ok_or_else(|| RpcFailure::new(rpc::PAY_ROUTE_NOT_FOUND, "Could not find a route"))
    }

    fn createonion(&self, p: &Params) -> RpcResult {
        let hops = match p.require("hops")? {
            Value::Array(a) if !a.is_empty() => a.clone(),
            other => return Err(Params::bad("hops", "a non-empty array", other)),
        };
        let assocdata = p.req_string("assocdata")?;
        if hex::decode(&assocdata).is_err() {
            return Err(RpcFailure::params("assocdata: should be hex"));
        }
        let mut out = Vec::with_capacity(hops.len());
        let mut routing_info = 0usize;
        for (i, hop) in hops.iter().enumerate() {
            let pubkey = hop
                .get("pubkey")
                .and_then(Value::as_str)
                .filter(|s| NodePubkey::from_hex(s).is_some())
                .ok_or_else(|| RpcFailure::params(format!("hops[{i}]: pubkey invalid")))?;
            let payload_hex = hop
                .get("payload")
                .and_then(Value::as_str)
                .ok_or_else(|| RpcFailure::params(format!("hops[{i}]: payload missing")))?;
            let payload = hex::decode(payload_hex)
                .map_err(|_| RpcFailure::params(format!("hops[{i}]: payload not hex")))?;
            let prefixed = read_bigsize(&payload)
                .is_some_and(|(len, rest)| usize::try_from(len).ok() == Some(rest.len()));
            if !prefixed {
                return Err(RpcFailure::params(format!(
                    "hops[{i}] payload is not prefixed with length!"
                )));
            }
            routing_info += payload.len() + 32;
            out.push(FakeOnionHop {
                pubkey: pubkey.to_owned(),
                payload: payload_hex.to_owned(),
            });
        }
        if routing_info > ONION_ROUTING_INFO {
            return Err(RpcFailure::params(
                "Payloads exceed maximum onion packet size.",
            ));
        }
        let blob = serde_json::to_vec(&FakeOnion {
            assocdata,
            hops: out,
        })
        .map_err(|e| RpcFailure::new(-1, e.to_string()))?;
        let secrets: Vec<String> = (0..hops.len()).map(|_| random_hex32()).collect();
        Ok(json!({
            "onion": format!("{FAKE_ONION_MAGIC}{}", hex::encode(blob)),
            "shared_secrets": secrets,
        }))
    }

    #[allow(clippy::too_many_lines)]
    async fn sendonion(&self, p: Params) -> RpcResult {
        let onion = p.req_string("onion")?;
        let first_hop = p.require("first_hop")?.clone();
        let hash = p
            .hash("payment_hash")?
            .ok_or_else(|| RpcFailure::params("missing required parameter: payment_hash"))?;
        let label = p.string("label")?;
        let partid = p.u64("partid")?.unwrap_or(0);
        let amount_param = p.msat("amount_msat")?;
        let destination = p.pubkey("destination")?;
        let bolt11 = p.string("bolt11")?;
        let fake: FakeOnion = onion
            .strip_prefix(FAKE_ONION_MAGIC)
            .and_then(|h| hex::decode(h).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| RpcFailure::params("onion: not an onion made by this node"))?;
        let first_id = first_hop
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| RpcFailure::params("first_hop: id missing"))?;
        let first_amount = first_hop
            .get("amount_msat")
            .and_then(Value::as_u64)
            .ok_or_else(|| RpcFailure::params("first_hop: amount_msat missing"))?;
        first_hop
            .get("delay")
            .and_then(Value::as_u64)
            .ok_or_else(|| RpcFailure::params("first_hop: delay missing"))?;
        let (Some(hop0), Some(last)) = (fake.hops.first(), fake.hops.last()) else {
            return Err(RpcFailure::params("onion: no hops"));
        };
        if !hop0.pubkey.eq_ignore_ascii_case(first_id) {
            return Err(RpcFailure::params(
                "first_hop.id is not the onion's first hop",
            ));
        }
        if fake.assocdata != hash.to_hex() {
            return Err(RpcFailure::params(
                "onion assocdata does not commit to payment_hash",
            ));
        }
        let dest = NodePubkey::from_hex(&last.pubkey)
            .ok_or_else(|| RpcFailure::params("onion: bad final pubkey"))?;
        let tlvs = hex::decode(&last.payload)
            .ok()
            .and_then(|b| parse_payload(&b))
            .ok_or_else(|| RpcFailure::params("onion: bad final payload"))?;
        let final_amount = tlvs
            .get(&TLV_AMT_TO_FORWARD)
            .and_then(|v| read_truncated(v))
            .ok_or_else(|| RpcFailure::params("onion: final payload without amount"))?;
        let preimage = tlvs
            .get(&KEYSEND_PREIMAGE_TLV)
            .and_then(|v| <[u8; 32]>::try_from(v.as_slice()).ok())
            .map(Preimage)
            .filter(|pre| pre.hash() == hash)
            .ok_or_else(|| {
                RpcFailure::params("the fake forwards only keysend onions for this payment_hash")
            })?;
        for hop in &fake.hops[..fake.hops.len() - 1] {
            let ok = hex::decode(&hop.payload)
                .ok()
                .and_then(|b| parse_payload(&b))
                .is_some_and(|t| t.contains_key(&2) && t.contains_key(&4) && t.contains_key(&6));
            if !ok {
                return Err(RpcFailure::params("onion: bad forwarding payload"));
            }
        }
        let records = CustomRecords(
            tlvs.iter()
                .filter(|(t, _)| **t >= 65_536 && **t != KEYSEND_PREIMAGE_TLV)
                .map(|(t, v)| (*t, v.clone()))
                .collect::<BTreeMap<_, _>>(),
        );
        let fee_limit = first_amount.checked_sub(final_amount).ok_or_else(|| {
            RpcFailure::params("first_hop.amount_msat below the amount delivered")
        })?;
        {
            let st = self.state();
            let mine = || {
                st.parts
                    .iter()
                    .filter(|x| x.payment_hash == hash && x.partid == partid)
            };
            if let Some(done) = mine().find(|x| x.status == PartStatus::Complete) {
                if done.amount_msat == amount_param.unwrap_or(final_amount) {
                    return Ok(done.to_json());
                }
                return Err(RpcFailure::new(
                    rpc::PAY_RHASH_ALREADY_USED,
                    format!("Already succeeded with amount {}msat", done.amount_msat),
                ));
            }
            if mine().any(|x| x.status == PartStatus::Pending) {
                return Err(RpcFailure::new(
                    rpc::PAY_IN_PROGRESS,
                    "Already have pending payment with this payment_hash and partid",
                ));
            }
        }
        let dest_hex = destination.unwrap_or(dest).to_hex();
        let id = self.new_part(&hash, |id, groupid| Part {
            id,
            groupid,
            partid,
            payment_hash: hash,
            status: PartStatus::Pending,
            amount_msat: amount_param.unwrap_or(final_amount),
            amount_sent_msat: first_amount,
            destination: dest_hex.clone(),
            created_at: now_secs(),
            completed_at: None,
            preimage: None,
            bolt11,
            label,
            failure: None,
            reason: None,
        });
        let part = self
            .state()
            .parts
            .iter()
            .find(|x| x.id == id)
            .map(Part::to_json);
        let (Ok(amount_m), Ok(fee_m)) = (Msat::from_msat(final_amount), Msat::from_msat(fee_limit))
        else {
            return Err(RpcFailure::params("amount out of range"));
        };
        let me = self.clone();
        let erring = hop0.pubkey.clone();
        tokio::spawn(async move {
            let outcome = me
                .inner
                .backend
                .pay(PayRequest {
                    target: PayTarget::Keysend {
                        dest,
                        amount: amount_m,
                        preimage,
                        custom_records: records,
                    },
                    fee_limit: fee_m,
                    timeout: SENDONION_TIMEOUT,
                })
                .await;
            if me.settle_part(id, &outcome, false, &erring) == PartFate::Pending {
                me.spawn_resolver(id, hash, erring);
            }
        });
        let mut out = part.unwrap_or_default();
        out["message"] = json!("Monitor status with listpays or waitsendpay");
        Ok(out)
    }

    fn datastore(&self, p: &Params) -> RpcResult {
        let key = datastore_key(p.require("key")?)?;
        let value = match (p.string("string")?, p.string("hex")?) {
            (Some(s), None) => s.into_bytes(),
            (None, Some(h)) => hex::decode(&h).map_err(|_| RpcFailure::params("hex: invalid"))?,
            _ => return Err(RpcFailure::params("Must have either string or hex")),
        };
        let mode = p
            .string("mode")?
            .unwrap_or_else(|| "must-create".to_owned());
        if p.get("generation").is_some() {
            return Err(RpcFailure::params("the fake does not take generation"));
        }
        let mut st = self.state();
        let existing = st.datastore.get(&key).cloned();
        let (generation, bytes) = match (mode.as_str(), existing) {
            ("must-create", Some(_)) => {
                return Err(RpcFailure::new(1202, "Key already exists"));
            }
            ("must-replace" | "must-append", None) => {
                return Err(RpcFailure::new(1203, "Key does not exist"));
            }
            ("must-create" | "must-replace" | "create-or-replace", e) => {
                (e.map_or(0, |(g, _)| g + 1), value)
            }
            ("must-append" | "create-or-append", e) => {
                let (g, mut old) = e.unwrap_or((0, Vec::new()));
                old.extend_from_slice(&value);
                (g + 1, old)
            }
            (other, _) => {
                return Err(RpcFailure::params(format!(
                    "mode: should be a valid mode: invalid token '\"{other}\"'"
                )));
            }
        };
        st.datastore
            .insert(key.clone(), (generation, bytes.clone()));
        Ok(datastore_entry(&key, generation, &bytes))
    }

    fn listdatastore(&self, p: &Params) -> RpcResult {
        let prefix = match p.get("key") {
            Some(k) => datastore_key(k)?,
            None => Vec::new(),
        };
        let st = self.state();
        let mut out = Vec::new();
        let mut dirs: Vec<Vec<String>> = Vec::new();
        for (key, (generation, bytes)) in st.datastore.range(prefix.clone()..) {
            if !key.starts_with(&prefix) {
                break;
            }
            if key.len() == prefix.len() || (prefix.is_empty() && key.len() == 1) {
                out.push(datastore_entry(key, *generation, bytes));
            } else {
                // A deeper key shows as its child directory, without a value.
                let dir = key[..=prefix.len()].to_vec();
                if !dirs.contains(&dir) {
                    out.push(json!({ "key": dir }));
                    dirs.push(dir);
                }
            }
        }
        Ok(json!({ "datastore": out }))
    }

    async fn listpeerchannels(&self, p: &Params) -> RpcResult {
        let peer = p.pubkey("id")?;
        let ours = self
            .inner
            .backend
            .node_info()
            .await
            .map_err(|e| backend_failure(&e))?
            .pubkey
            .to_hex();
        let channels = self.our_channels().await?;
        let out: Vec<Value> = channels
            .iter()
            .filter(|c| peer.is_none_or(|id| c.peer == id))
            .map(|c| {
                let state = match c.state {
                    ChannelState::Active | ChannelState::Inactive => "CHANNELD_NORMAL",
                    ChannelState::Pending => "CHANNELD_AWAITING_LOCKIN",
                    ChannelState::Closing => "CHANNELD_SHUTTING_DOWN",
                };
                let mut o = json!({
                    "peer_id": c.peer.to_hex(),
                    "peer_connected": c.state != ChannelState::Inactive,
                    "state": state,
                    "channel_id": c.channel_id,
                    "private": true,
                    "opener": "local",
                    "features": ["option_static_remotekey", "option_anchors"],
                    "total_msat": c.capacity_sats.saturating_mul(1000),
                    "to_us_msat": c.local_balance_msat,
                    "spendable_msat": c.local_balance_msat,
                    "receivable_msat": c.remote_balance_msat,
                });
                if let Some(scid) = c.short_channel_id {
                    o["short_channel_id"] = json!(format_scid(scid));
                    o["direction"] = json!(u32::from(ours > c.peer.to_hex()));
                }
                o
            })
            .collect();
        Ok(json!({ "channels": out }))
    }
}

/// A `datastore` key: one string or an array of strings.
fn datastore_key(v: &Value) -> Result<Vec<String>, RpcFailure> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(a) if !a.is_empty() => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| Params::bad("key", "a string or array of strings", v))
            })
            .collect(),
        other => Err(Params::bad("key", "a string or array of strings", other)),
    }
}

fn datastore_entry(key: &[String], generation: u64, bytes: &[u8]) -> Value {
    let mut o = json!({ "key": key, "generation": generation, "hex": hex::encode(bytes) });
    if let Ok(s) = std::str::from_utf8(bytes) {
        o["string"] = json!(s);
    }
    o
}

/// What [`FakeCln::settle_part`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PartFate {
    /// Nothing was sent: the part is gone.
    Removed,
    /// Complete or failed.
    Final,
    /// Still in flight.
    Pending,
}

/// The error a failed part leaves for `waitsendpay`.
fn part_failure(part: &Part, reason: FailureReason, erring_node: &str) -> RpcFailure {
    let (code, failcode, name, erring_index) = match reason {
        FailureReason::IncorrectPaymentDetails => (
            rpc::PAY_DESTINATION_PERM_FAIL,
            0x400f,
            "WIRE_INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS",
            1,
        ),
        _ => (
            rpc::PAY_TRY_OTHER_ROUTE,
            0x1007,
            "WIRE_TEMPORARY_CHANNEL_FAILURE",
            0,
        ),
    };
    let erring_node = if code == rpc::PAY_DESTINATION_PERM_FAIL {
        part.destination.clone()
    } else {
        erring_node.to_owned()
    };
    RpcFailure::new(code, format!("failed: {name} (reply from remote)")).with_data(json!({
        "id": part.id,
        "payment_hash": part.payment_hash.to_hex(),
        "destination": part.destination,
        "amount_msat": part.amount_msat,
        "amount_sent_msat": part.amount_sent_msat,
        "created_at": part.created_at,
        "groupid": part.groupid,
        "partid": part.partid,
        "status": "failed",
        "erring_index": erring_index,
        "failcode": failcode,
        "failcodename": name,
        "erring_node": erring_node,
    }))
}

/// The error `pay` ends with.
fn pay_error(reason: FailureReason, part: &Part) -> RpcFailure {
    match reason {
        FailureReason::IncorrectPaymentDetails => part.failure.clone().unwrap_or_else(|| {
            RpcFailure::new(rpc::PAY_DESTINATION_PERM_FAIL, "Destination failed")
        }),
        FailureReason::Timeout => RpcFailure::new(
            rpc::PAY_STOPPED_RETRYING,
            "Payment timed out: retry_for expired",
        ),
        FailureReason::NoRoute | FailureReason::InsufficientBalance => RpcFailure::new(
            rpc::PAY_STOPPED_RETRYING,
            "Ran out of routes to try after 1 attempt: see `paystatus`",
        ),
        FailureReason::Error => RpcFailure::new(rpc::PAY_UNSPECIFIED_ERROR, "Payment failed"),
    }
}

/// A backend route (LND vocabulary) as `getroute` prints it.
fn cln_route(ours: NodePubkey, r: &Route) -> Vec<Value> {
    let base = FAKE_BLOCKHEIGHT.saturating_add(1);
    r.hops
        .iter()
        .enumerate()
        .map(|(i, hop)| {
            let source = if i == 0 { ours } else { r.hops[i - 1].pub_key };
            let arriving_cltv = if i == 0 {
                r.total_time_lock
            } else {
                r.hops[i - 1].expiry
            };
            json!({
                "id": hop.pub_key.to_hex(),
                "channel": format_scid(hop.chan_id),
                "direction": u8::from(source.0 > hop.pub_key.0),
                "amount_msat": hop.amt_to_forward.as_msat().saturating_add(hop.fee.as_msat()),
                "delay": arriving_cltv.saturating_sub(base),
                "style": "tlv",
            })
        })
        .collect()
}

/// Whether a `getroute` hop uses an excluded channel (`scid/dir`) or node.
fn excluded(exclude: &[String], hop: &Value) -> bool {
    let id = hop.get("id").and_then(Value::as_str).unwrap_or_default();
    let chan = hop
        .get("channel")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let dir = hop.get("direction").and_then(Value::as_u64).unwrap_or(0);
    exclude.iter().any(|e| match e.split_once('/') {
        Some((scid, d)) => {
            parse_scid(scid).is_some()
                && parse_scid(scid) == parse_scid(chan)
                && d.parse::<u64>().ok() == Some(dir)
        }
        None => e.eq_ignore_ascii_case(id),
    })
}

/// Feeds the backend's incoming events into the invoice table, for as long as the fake lives.
async fn mirror_events(inner: Weak<Inner>) {
    loop {
        let (backend, cursor) = {
            let Some(inner) = inner.upgrade() else { return };
            let cursor = lock(&inner.state).event_cursor;
            (Arc::clone(&inner.backend), cursor)
        };
        match backend
            .events_after(cursor, 100, Duration::from_millis(500))
            .await
        {
            Ok(events) if !events.is_empty() => {
                let Some(inner) = inner.upgrade() else { return };
                {
                    let mut st = lock(&inner.state);
                    for ev in &events {
                        if ev.seq > st.event_cursor {
                            st.apply_event(ev);
                        }
                    }
                }
                inner.changed.notify_waiters();
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
