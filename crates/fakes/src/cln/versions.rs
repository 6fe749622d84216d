//! Which Core Lightning release the fake plays, and what that release offers.
//!
//! Facts from CLN's JSON schemas (`added` / `deprecated` of each method and parameter) and
//! `lightningd/jsonrpc.c` (how a missing or deprecated command is refused).

use serde_json::Value;

use super::RpcFailure;
use satchel_cln::{ClnVersion, rpc};

/// The release the fake emulates ([`super::FakeCln::start_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FakeOptions {
    /// The release: `getinfo` reports it, and methods, parameters, layers and result fields
    /// are offered as that release offers them.
    pub version: ClnVersion,
    /// `allow-deprecated-apis` (CLN's default is `true`). With `false`, deprecated commands
    /// and the deprecated `auto.no_mpp_support` layer are refused, and deprecated result fields
    /// are left out.
    pub deprecated_apis: bool,
}

impl Default for FakeOptions {
    /// v27.03 (`pay` and `getroute` removed), deprecated APIs allowed.
    fn default() -> FakeOptions {
        FakeOptions {
            version: ClnVersion::REMOVES_PAY,
            deprecated_apis: true,
        }
    }
}

/// v23.11: `listsendpays` `index` / `start` / `limit`.
const V23_11: ClnVersion = ClnVersion::new(23, 11);
/// v24.08: `getroutes` (askrene).
pub(super) const GETROUTES: ClnVersion = ClnVersion::new(24, 8);
/// v25.02: the `auto.no_mpp_support` layer.
const NO_MPP_LAYER: ClnVersion = ClnVersion::new(25, 2);
/// v25.05: `sendonion total_amount_msat`.
const V25_05: ClnVersion = ClnVersion::new(25, 5);
/// v26.04: `xpay payer_note`, the `auto.include_fees` layer.
pub(super) const V26_04: ClnVersion = ClnVersion::new(26, 4);

/// Methods that appeared after the oldest release the fake plays, with their release.
const METHODS_ADDED: [(&str, ClnVersion); 6] = [
    ("getroutes", GETROUTES),
    ("xpay", ClnVersion::XPAY),
    ("askrene-create-layer", ClnVersion::XPAY),
    ("askrene-update-channel", ClnVersion::XPAY),
    ("askrene-disable-node", ClnVersion::XPAY),
    ("askrene-remove-layer", ClnVersion::XPAY),
];

/// Methods deprecated in v26.06 and removed in v27.03 (that the fake implements).
const METHODS_DEPRECATED: [&str; 2] = ["pay", "getroute"];

/// Parameters that appeared after v23.08 (`added` in the method's schema).
const PARAMS_ADDED: [(&str, &str, ClnVersion); 10] = [
    ("xpay", "maxdelay", ClnVersion::MAXDELAY),
    ("xpay", "payer_note", V26_04),
    ("xpay", "label", ClnVersion::DEPRECATES_PAY),
    ("xpay", "localinvreqid", ClnVersion::DEPRECATES_PAY),
    ("getroutes", "maxdelay", ClnVersion::MAXDELAY),
    ("getroutes", "maxparts", ClnVersion::MAXPARTS),
    ("listsendpays", "index", V23_11),
    ("listsendpays", "start", V23_11),
    ("listsendpays", "limit", V23_11),
    ("sendonion", "total_amount_msat", V25_05),
];

/// How `lightningd` refuses a parameter it does not know.
pub(super) fn unknown_param(name: &str) -> RpcFailure {
    RpcFailure::params(format!(
        "unknown parameter: {name}, this may be caused by a failure to autodetect \
         key=value-style parameters. Please try using the -k flag and explicit \
         key=value pairs of parameters."
    ))
}

/// Whether a feature deprecated in `start` and dropped after `end` is accepted (CLN's
/// `deprecated_ok`: before `start` always; from `start` through `end` only with deprecated
/// APIs allowed; after `end` never).
fn deprecated_ok(o: FakeOptions, start: ClnVersion, end: ClnVersion) -> bool {
    o.version < start || (o.version <= end && o.deprecated_apis)
}

impl FakeOptions {
    /// How this release refuses `method` before looking at its parameters (`None`: it runs
    /// it). Methods the fake does not implement at all are refused later, the same way.
    pub(super) fn refuse_method(self, method: &str, params: &Value) -> Option<RpcFailure> {
        let unknown = || {
            RpcFailure::new(
                rpc::JSONRPC2_METHOD_NOT_FOUND,
                format!("Unknown command '{method}'"),
            )
        };
        if METHODS_ADDED
            .iter()
            .any(|(m, v)| *m == method && self.version < *v)
        {
            return Some(unknown());
        }
        if METHODS_DEPRECATED.contains(&method) {
            if self.version >= ClnVersion::REMOVES_PAY {
                return Some(unknown());
            }
            if self.version >= ClnVersion::DEPRECATES_PAY && !self.deprecated_apis {
                // lightningd quotes the method token as it came (a JSON string).
                return Some(RpcFailure::new(
                    rpc::JSONRPC2_METHOD_NOT_FOUND,
                    format!("Command \"{method}\" is deprecated"),
                ));
            }
        }
        if let Value::Object(map) = params
            && let Some((_, name, _)) = PARAMS_ADDED
                .iter()
                .find(|(m, p, v)| *m == method && self.version < *v && map.contains_key(*p))
        {
            return Some(unknown_param(name));
        }
        None
    }

    /// Whether `getroutes` knows the automatic layer `name` (`None`: not an `auto.` layer this
    /// fake knows).
    pub(super) fn auto_layer_ok(self, name: &str) -> Option<bool> {
        match name {
            "auto.localchans" | "auto.sourcefree" => Some(true),
            "auto.include_fees" => Some(self.version >= V26_04),
            // Added in v25.02; deprecated in v26.06 (use `maxparts=1`), gone after v27.03.
            "auto.no_mpp_support" => Some(
                self.version >= NO_MPP_LAYER
                    && deprecated_ok(self, ClnVersion::DEPRECATES_PAY, ClnVersion::REMOVES_PAY),
            ),
            _ => None,
        }
    }

    /// Whether `getroutes` hops carry `node_id_in`/`node_id_out`, `amount_in_msat`/
    /// `amount_out_msat`, `cltv_in`/`cltv_out` (v26.06).
    pub(super) fn new_hop_fields(self) -> bool {
        self.version >= ClnVersion::DEPRECATES_PAY
    }

    /// Whether `getroutes` hops carry `next_node_id`, `amount_msat`, `delay`: always before
    /// v26.06, then only with deprecated APIs allowed, and not from v27.06.
    pub(super) fn old_hop_fields(self) -> bool {
        self.version < ClnVersion::DEPRECATES_PAY
            || (self.deprecated_apis && self.version < ClnVersion::REMOVES_OLD_HOP_FIELDS)
    }

    /// Whether `askrene-create-layer` lists `node_biases` (v25.12) and `impressions` (v26.09).
    pub(super) fn layer_fields(self) -> (bool, bool) {
        (
            self.version >= ClnVersion::new(25, 12),
            self.version >= ClnVersion::new(26, 9),
        )
    }

    /// Whether xpay's persistent `xpay` layer exists (xpay makes it at startup).
    pub(super) fn has_xpay_layer(self) -> bool {
        self.version.has_xpay()
    }
}
