//! [`ClnBackend`]: Satchel's backend traits on Core Lightning's JSON-RPC.
//!
//! This module holds the backend itself and how it talks to `lightningd`: the configuration
//! and transport it is built from, one JSON-RPC call and the parsing of its result, `getinfo`
//! and the node's release (which decides the payment and routing commands). Each trait is
//! carried out in a module of its own:
//!
//! * [`node`]: node status, channels and stats (`getinfo`, `listpeerchannels`);
//! * [`invoices`]: creating, cancelling, taking and looking up invoices;
//! * [`events`]: paid invoices and received keysends as incoming events (`waitanyinvoice`);
//! * [`payments`]: paying (`xpay`/`pay`), idempotency per payment hash, and what became of a
//!   payment (`listsendpays`);
//! * [`keysend`]: keysends with our own preimage (`createonion`/`sendonion`), route by route;
//! * [`routes`]: route finding (`getroutes`/`getroute`) for keysends and `queryroutes`.

mod events;
mod invoices;
mod keysend;
mod node;
mod payments;
mod routes;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::{OnceCell, watch};
use tokio::time::Instant;

use satchel_domain::{FailureReason, Msat, Network, PaymentHash};
use satchel_lightning::{LnError, NodeInfo as _, NodeInfoData};

use crate::rpc::{ClnMsat, GetInfo};
use crate::transport::{ClnTransport, RestTransport, RpcError, SocketTransport};
use crate::version::ClnVersion;
use crate::{ClnConfig, ClnConnection, ClnError};

/// Final CLTV delta of our keysends (what LND uses; above LDK's and CLN's minimums).
pub const KEYSEND_FINAL_CLTV: u32 = 40;
/// How long the release `getinfo` reported is trusted before it is asked again (an operator may
/// upgrade CLN under a running Satchel; a command the node does not know also drops it).
const VERSION_TTL: Duration = Duration::from_secs(60);
/// What an unreadable `getinfo` version (a custom build string) is taken for: the newest
/// release known, whose commands (`xpay`, `getroutes`) exist on every release from v24.11.
const ASSUMED_VERSION: ClnVersion = ClnVersion::REMOVES_PAY;
/// `datastore` key under which cancelled invoices are remembered: `[.., <payment hash hex>]`.
pub const CANCELLED_DATASTORE_KEY: [&str; 2] = ["satchel", "cancelled-invoices"];
/// Label prefix of our invoices.
pub const INVOICE_LABEL_PREFIX: &str = "satchel-";
/// Label prefix of the invoices CLN's keysend plugin creates for received keysends.
pub const KEYSEND_LABEL_PREFIX: &str = "keysend-";
/// The TLV type of a keysend chat message (WhatSat / Sphinx); CLN's keysend plugin puts it in
/// the description as `keysend: <message>`.
pub const KEYSEND_MESSAGE_TLV: u64 = 34_349_334;

/// The label of Satchel's invoice for `hash`.
pub fn invoice_label(hash: &PaymentHash) -> String {
    format!("{INVOICE_LABEL_PREFIX}{}", hash.to_hex())
}

type RpcOutcome = Result<Value, RpcError>;
type Running =
    Arc<Mutex<HashMap<PaymentHash, (&'static str, watch::Receiver<Option<RpcOutcome>>)>>>;

/// Satchel's Lightning backend on a Core Lightning node. See the crate documentation.
pub struct ClnBackend {
    rpc: Arc<dyn ClnTransport>,
    network: Network,
    request_timeout: Duration,
    info: OnceCell<NodeInfoData>,
    /// The node's release and when `getinfo` said so (see [`VERSION_TTL`]).
    version: Mutex<Option<(ClnVersion, Instant)>>,
    /// Serialises `pay` calls per payment hash within this process.
    hash_locks: Mutex<HashMap<PaymentHash, Arc<tokio::sync::Mutex<()>>>>,
    /// `pay` commands of ours still running in `lightningd`, by payment hash.
    running: Running,
    /// Definite failures we reported for payments of which `lightningd` keeps no trace
    /// (refused before any HTLC left: no route within the fee limit, amount too large). Only
    /// consulted when `listsendpays` knows nothing of the hash.
    unsent_failures: Mutex<HashMap<PaymentHash, FailureReason>>,
}

impl std::fmt::Debug for ClnBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClnBackend")
            .field("rpc", &self.rpc)
            .field("network", &self.network)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An [`RpcError`] of a call that does not move money.
fn ln_error(e: RpcError) -> LnError {
    match e {
        RpcError::Transport(m) => LnError::Transport(m),
        RpcError::Rpc { code, message, .. } => {
            LnError::Rejected(format!("{message} (CLN error {code})"))
        }
        RpcError::Unauthorized(m) => LnError::Rejected(format!("CLNRest refused the rune: {m}")),
    }
}

fn parse<T: DeserializeOwned>(method: &str, v: Value) -> Result<T, LnError> {
    serde_json::from_value(v)
        .map_err(|e| LnError::Transport(format!("{method}: unexpected result: {e}")))
}

fn msat(m: ClnMsat) -> Result<Msat, LnError> {
    Msat::from_msat(m.0).map_err(|e| LnError::Transport(format!("amount {}: {e}", m.0)))
}

/// Whole seconds, rounded up.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl ClnBackend {
    /// A backend on `config`'s connection. Does no I/O; see [`ClnBackend::connect`].
    pub fn new(config: &ClnConfig) -> Result<ClnBackend, ClnError> {
        let rpc: Arc<dyn ClnTransport> = match &config.connection {
            ClnConnection::Socket { path } => Arc::new(SocketTransport::new(path.clone())),
            ClnConnection::Rest {
                url,
                rune,
                tls_cert_pem,
            } => Arc::new(RestTransport::new(url, rune, tls_cert_pem)?),
        };
        Ok(ClnBackend::with_transport(
            rpc,
            config.network,
            config.request_timeout,
        ))
    }

    /// A backend on `config`'s connection, checked: calls `getinfo` and refuses a node on
    /// another network than `config.network`. The node info is cached.
    pub async fn connect(config: &ClnConfig) -> Result<ClnBackend, ClnError> {
        let backend = ClnBackend::new(config)?;
        let gi = backend.getinfo().await?;
        let version = backend.version_of(&gi);
        if version < ClnVersion::MIN_SUPPORTED {
            return Err(ClnError::TooOld { found: version });
        }
        if gi.network.parse::<Network>().ok() != Some(config.network) {
            return Err(ClnError::WrongNetwork {
                configured: config.network,
                node: gi.network,
            });
        }
        backend.node_info().await?;
        Ok(backend)
    }

    /// A backend over any transport (tests, custom transports).
    pub fn with_transport(
        rpc: Arc<dyn ClnTransport>,
        network: Network,
        request_timeout: Duration,
    ) -> ClnBackend {
        ClnBackend {
            rpc,
            network,
            request_timeout,
            info: OnceCell::new(),
            version: Mutex::new(None),
            hash_locks: Mutex::new(HashMap::new()),
            running: Arc::new(Mutex::new(HashMap::new())),
            unsent_failures: Mutex::new(HashMap::new()),
        }
    }

    /// The transport, for raw calls.
    pub fn transport(&self) -> &Arc<dyn ClnTransport> {
        &self.rpc
    }

    async fn call(&self, method: &str, params: Value) -> Result<Value, LnError> {
        self.rpc
            .call(method, params, self.request_timeout)
            .await
            .map_err(ln_error)
    }

    async fn call_as<T: DeserializeOwned>(
        &self,
        method: &str,
        params: Value,
    ) -> Result<T, LnError> {
        parse(method, self.call(method, params).await?)
    }

    /// `getinfo`, noting the node's release.
    async fn getinfo(&self) -> Result<GetInfo, LnError> {
        let gi: GetInfo = self.call_as("getinfo", json!({})).await?;
        self.version_of(&gi);
        Ok(gi)
    }

    /// The release in `gi` (remembered for [`VERSION_TTL`]).
    fn version_of(&self, gi: &GetInfo) -> ClnVersion {
        let version = match gi.version.as_deref().map(|s| (s, ClnVersion::parse(s))) {
            Some((_, Some(v))) => v,
            other => {
                tracing::warn!(
                    version = other.map(|(s, _)| s),
                    assumed = %ASSUMED_VERSION,
                    "cannot read Core Lightning's release from getinfo; assuming the newest"
                );
                ASSUMED_VERSION
            }
        };
        *lock(&self.version) = Some((version, Instant::now()));
        version
    }

    /// The node's release: which payment and routing commands it has.
    async fn version(&self) -> Result<ClnVersion, LnError> {
        let cached = *lock(&self.version);
        match cached {
            Some((v, at)) if at.elapsed() < VERSION_TTL => Ok(v),
            _ => Ok(self.version_of(&self.getinfo().await?)),
        }
    }

    /// Drops the remembered release (the node did not know a command it should have).
    fn forget_version(&self) {
        *lock(&self.version) = None;
    }

    async fn blockheight(&self) -> Result<u32, LnError> {
        Ok(self.getinfo().await?.blockheight)
    }
}
