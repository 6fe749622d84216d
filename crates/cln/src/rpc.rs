//! The parts of CLN's JSON-RPC results that the backend reads, and CLN's error codes.
//!
//! Field names follow CLN's JSON schemas (`doc/schemas/*.json`). Amount fields (`*_msat`) are
//! JSON integers since CLN 23.x; the older `"1234msat"` string form is accepted as well.
//!
//! Public so that the fake `lightningd` of Satchel's tests (`satchel-fakes`) answers with the
//! very codes and field names this backend reads.

use serde::{Deserialize, Deserializer};

/// `pay`/`sendpay`/`waitsendpay`: payment is already in progress (or `waitsendpay` timed out).
pub const PAY_IN_PROGRESS: i64 = 200;
/// A payment with this hash already succeeded with a different amount or destination.
pub const PAY_RHASH_ALREADY_USED: i64 = 201;
/// The onion could not be parsed by a hop.
pub const PAY_UNPARSEABLE_ONION: i64 = 202;
/// The destination failed the payment permanently (unknown hash, wrong amount, ...).
pub const PAY_DESTINATION_PERM_FAIL: i64 = 203;
/// A node on the route failed the payment; another route may work.
pub const PAY_TRY_OTHER_ROUTE: i64 = 204;
/// No route found.
pub const PAY_ROUTE_NOT_FOUND: i64 = 205;
/// Every route found costs more than the fee limit.
pub const PAY_ROUTE_TOO_EXPENSIVE: i64 = 206;
/// The invoice expired.
pub const PAY_INVOICE_EXPIRED: i64 = 207;
/// `waitsendpay`: no such payment.
pub const PAY_NO_SUCH_PAYMENT: i64 = 208;
/// Unspecified payment error.
pub const PAY_UNSPECIFIED_ERROR: i64 = 209;
/// `pay` gave up: ran out of routes, or `retry_for` elapsed.
pub const PAY_STOPPED_RETRYING: i64 = 210;
/// askrene (`getroutes`, so `xpay` too): our channels together cannot send the amount.
pub const PAY_INSUFFICIENT_FUNDS: i64 = 215;
/// `xpay`: the invoice has already been paid (by an earlier payment of ours).
pub const PAY_INVOICE_ALREADY_PAID: i64 = 219;
/// askrene: not enough capacity into the destination.
pub const PAY_DESTINATION_CAPACITY: i64 = 220;
/// `invoice`: the label is taken.
pub const INVOICE_LABEL_ALREADY_EXISTS: i64 = 900;
/// `invoice`: the preimage (payment hash) is taken.
pub const INVOICE_PREIMAGE_ALREADY_EXISTS: i64 = 901;
/// `waitanyinvoice`: the timeout passed with no newly paid invoice.
pub const INVOICE_WAIT_TIMED_OUT: i64 = 904;
/// `delinvoice`: no invoice with that label.
pub const INVOICE_NOT_FOUND: i64 = 905;
/// `delinvoice`: the invoice is not in the given status.
pub const INVOICE_STATUS_UNEXPECTED: i64 = 906;
/// JSON-RPC: invalid parameters.
pub const JSONRPC2_INVALID_PARAMS: i64 = -32602;
/// JSON-RPC: unknown method.
pub const JSONRPC2_METHOD_NOT_FOUND: i64 = -32601;

/// An amount in millisatoshi, as CLN prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClnMsat(pub u64);

impl<'de> Deserialize<'de> for ClnMsat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(u64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(n) => Ok(ClnMsat(n)),
            Raw::Str(s) => s
                .strip_suffix("msat")
                .unwrap_or(&s)
                .parse::<u64>()
                .map(ClnMsat)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// `getinfo`.
#[derive(Debug, Deserialize)]
pub struct GetInfo {
    /// Node id.
    pub id: String,
    /// Alias.
    #[serde(default)]
    pub alias: Option<String>,
    /// `bitcoin`, `testnet`, `signet`, `regtest`, ...
    pub network: String,
    /// Current block height.
    #[serde(default)]
    pub blockheight: u32,
    /// The release, `v24.11.1` and the like (see [`crate::ClnVersion::parse`]).
    #[serde(default)]
    pub version: Option<String>,
    /// Present while bitcoind is still syncing with the network.
    #[serde(default)]
    pub warning_bitcoind_sync: Option<String>,
    /// Present while lightningd is still catching up with bitcoind.
    #[serde(default)]
    pub warning_lightningd_sync: Option<String>,
}

/// `invoice`.
#[derive(Debug, Deserialize)]
pub struct InvoiceCreated {
    /// The BOLT11 string.
    pub bolt11: String,
    /// Its payment hash.
    pub payment_hash: String,
}

/// `listinvoices`.
#[derive(Debug, Deserialize)]
pub struct ListInvoices {
    /// The invoices.
    pub invoices: Vec<Invoice>,
}

/// One invoice as `listinvoices` and `waitanyinvoice` print it.
#[derive(Debug, Clone, Deserialize)]
pub struct Invoice {
    /// Unique label.
    pub label: String,
    /// `unpaid`, `paid` or `expired`.
    pub status: String,
    /// Payment hash (hex).
    pub payment_hash: String,
    /// BOLT11 string (absent for BOLT12 invoices).
    #[serde(default)]
    pub bolt11: Option<String>,
    /// BOLT12 invoice.
    #[serde(default)]
    pub bolt12: Option<String>,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Unix seconds.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// Amount received (paid only).
    #[serde(default)]
    pub amount_received_msat: Option<ClnMsat>,
    /// Unix seconds (paid only).
    #[serde(default)]
    pub paid_at: Option<i64>,
    /// Position among paid invoices (paid only); strictly increasing, starts at 1.
    #[serde(default)]
    pub pay_index: Option<u64>,
    /// Preimage (paid only).
    #[serde(default)]
    pub payment_preimage: Option<String>,
}

/// `listsendpays`.
#[derive(Debug, Deserialize)]
pub struct ListSendPays {
    /// One entry per part (HTLC) ever sent.
    pub payments: Vec<SendPay>,
}

/// One part of an outgoing payment (`listsendpays`, `sendonion`, `waitsendpay`).
#[derive(Debug, Clone, Deserialize)]
pub struct SendPay {
    /// Unique id.
    #[serde(default)]
    pub id: u64,
    /// Attempt group.
    #[serde(default)]
    pub groupid: Option<u64>,
    /// Part within the group.
    #[serde(default)]
    pub partid: Option<u64>,
    /// `pending`, `failed` or `complete`.
    pub status: String,
    /// Amount delivered to the destination by this part.
    #[serde(default)]
    pub amount_msat: Option<ClnMsat>,
    /// Amount sent (delivered + fees).
    #[serde(default)]
    pub amount_sent_msat: Option<ClnMsat>,
    /// Preimage (complete only).
    #[serde(default)]
    pub payment_preimage: Option<String>,
}

/// `pay`.
#[derive(Debug, Deserialize)]
pub struct PayResult {
    /// Preimage (complete only).
    #[serde(default)]
    pub payment_preimage: Option<String>,
    /// `complete`, `pending` or `failed`.
    pub status: String,
    /// Delivered.
    pub amount_msat: ClnMsat,
    /// Sent, fees included.
    pub amount_sent_msat: ClnMsat,
}

/// `xpay` (v24.11+): only answers on success; every failure is an error object.
#[derive(Debug, Deserialize)]
pub struct XpayResult {
    /// Preimage.
    pub payment_preimage: String,
    /// Delivered.
    pub amount_msat: ClnMsat,
    /// Sent, fees included.
    pub amount_sent_msat: ClnMsat,
}

/// `getroutes` (askrene).
#[derive(Debug, Deserialize)]
pub struct GetRoutes {
    /// The paths that together deliver the amount (one when asked for one part).
    pub routes: Vec<GetRoutesRoute>,
}

/// One path of `getroutes`.
#[derive(Debug, Deserialize)]
pub struct GetRoutesRoute {
    /// What this path delivers to the destination.
    pub amount_msat: ClnMsat,
    /// The CLTV the destination gets (as asked).
    pub final_cltv: u32,
    /// The channels, from ours to the destination's.
    pub path: Vec<GetRoutesHop>,
}

/// One channel of a `getroutes` path. Before v26.06 a hop has `next_node_id`, `amount_msat`
/// and `delay` (what enters the hop's start node); from v26.06 `node_id_out`,
/// `amount_out_msat` and `cltv_out` (what crosses the channel) as well, and the old fields
/// only while deprecated APIs are allowed (removed in v27.06).
#[derive(Debug, Deserialize)]
pub struct GetRoutesHop {
    /// `BLOCKxTXxOUT/DIR`.
    pub short_channel_id_dir: String,
    /// The node at the far end (v26.06+).
    #[serde(default)]
    pub node_id_out: Option<String>,
    /// What crosses the channel (v26.06+).
    #[serde(default)]
    pub amount_out_msat: Option<ClnMsat>,
    /// The CLTV of the HTLC on the channel, relative (v26.06+).
    #[serde(default)]
    pub cltv_out: Option<u32>,
    /// The node at the far end (before v27.06).
    #[serde(default)]
    pub next_node_id: Option<String>,
    /// What the start node must receive (before v27.06).
    #[serde(default)]
    pub amount_msat: Option<ClnMsat>,
    /// The CLTV the start node must receive, relative (before v27.06).
    #[serde(default)]
    pub delay: Option<u32>,
}

/// `getroute`.
#[derive(Debug, Deserialize)]
pub struct GetRoute {
    /// Hops, first (our peer) to last (destination).
    pub route: Vec<RouteEntry>,
}

/// One hop of a `getroute` route.
#[derive(Debug, Clone, Deserialize)]
pub struct RouteEntry {
    /// The node reached by this hop.
    pub id: String,
    /// The channel into it (`BLOCKxTXxOUT`).
    pub channel: String,
    /// Direction bit of the channel.
    #[serde(default)]
    pub direction: u8,
    /// Amount arriving at this node.
    pub amount_msat: ClnMsat,
    /// CLTV arriving at this node, relative to (current block height + 1).
    pub delay: u32,
}

/// `createonion`.
#[derive(Debug, Deserialize)]
pub struct CreateOnion {
    /// The onion (hex).
    pub onion: String,
    /// One shared secret per hop (hex), for decoding errors.
    pub shared_secrets: Vec<String>,
}

/// `listdatastore`.
#[derive(Debug, Deserialize)]
pub struct ListDatastore {
    /// Matching entries.
    pub datastore: Vec<DatastoreEntry>,
}

/// One `datastore` entry.
#[derive(Debug, Deserialize)]
pub struct DatastoreEntry {
    /// Its key path.
    pub key: Vec<String>,
    /// Its value as a string, if it is valid UTF-8.
    #[serde(default)]
    pub string: Option<String>,
}

/// `listpeerchannels`.
#[derive(Debug, Deserialize)]
pub struct ListPeerChannels {
    /// Our channels.
    pub channels: Vec<PeerChannel>,
}

/// One of our channels.
#[derive(Debug, Deserialize)]
pub struct PeerChannel {
    /// The peer.
    #[serde(default)]
    pub peer_id: String,
    /// Whether the peer is connected.
    #[serde(default)]
    pub peer_connected: Option<bool>,
    /// `CHANNELD_NORMAL` when usable.
    pub state: String,
    /// `BLOCKxTXxOUT`, once the funding is locked in.
    #[serde(default)]
    pub short_channel_id: Option<String>,
    /// The channel id (hex), once the funding transaction is known.
    #[serde(default)]
    pub channel_id: Option<String>,
    /// Channel size.
    #[serde(default)]
    pub total_msat: Option<ClnMsat>,
    /// What we can send over it now.
    #[serde(default)]
    pub spendable_msat: Option<ClnMsat>,
    /// What we can receive over it now.
    #[serde(default)]
    pub receivable_msat: Option<ClnMsat>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn msat_accepts_numbers_and_msat_strings() {
        assert_eq!(
            serde_json::from_str::<ClnMsat>("1234").unwrap(),
            ClnMsat(1234)
        );
        assert_eq!(
            serde_json::from_str::<ClnMsat>("\"1234msat\"").unwrap(),
            ClnMsat(1234)
        );
        assert!(serde_json::from_str::<ClnMsat>("\"12sat\"").is_err());
    }
}
