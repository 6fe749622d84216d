//! Satchel's [LND](https://github.com/lightningnetwork/lnd) backend, over LND's REST API.
//!
//! [`LndRest`] implements every Satchel backend trait ([`satchel_lightning::LightningBackend`])
//! with plain HTTPS + JSON (no gRPC, no protoc). **Requires LND 0.16 or newer** (routerrpc
//! `/v2/router/send` and `/v2/router/track`, invoicesrpc `/v2/invoices/cancel` and
//! `/v2/invoices/lookup` (0.16), keysend through
//! `dest_custom_records`), started with `--accept-keysend` to receive keysends.
//!
//! ```no_run
//! use std::path::Path;
//! use std::sync::Arc;
//! use satchel_domain::Network;
//! use satchel_lightning::LightningBackend;
//! use satchel_lnd::{LndConfig, LndRest};
//!
//! # async fn wire() -> Result<(), satchel_lnd::LndError> {
//! let config = LndConfig::from_files(
//!     "https://127.0.0.1:8080",
//!     Some(Path::new("/root/.lnd/tls.cert")),
//!     Path::new("/root/.lnd/data/chain/bitcoin/mainnet/admin.macaroon"),
//!     Network::Bitcoin,
//! )?;
//! // Checks the connection, the macaroon, the network and LND's version.
//! let backend: Arc<dyn LightningBackend> = Arc::new(LndRest::connect(config).await?);
//! # let _ = backend;
//! # Ok(())
//! # }
//! ```
//!
//! # Mapping
//!
//! | Satchel | LND REST |
//! |---|---|
//! | `node_info` | `GET /v1/getinfo` (cached after the first success) |
//! | `create_invoice` | `POST /v1/invoices` with our `r_preimage`, `value_msat`, `memo` or `description_hash`, `expiry`, `private: true` (route hints for private channels). The same preimage twice returns LND's existing invoice. |
//! | `lookup_invoice` | `GET /v2/invoices/lookup?payment_hash={base64}`: `OPEN`/`ACCEPTED` → open (an `OPEN` invoice past its expiry → cancelled), `SETTLED` → settled (`amt_paid_msat`, `settle_date`), `CANCELED` → cancelled; not found → `None` |
//! | `cancel_invoice` | `POST /v2/invoices/cancel`; "unable to locate invoice" and "invoice already settled" are not errors |
//! | `events_after` | `settle_index` as `seq`; `GET /v1/invoices` scan + `GET /v1/invoices/subscribe?settle_index=` (see `events` below) |
//! | `pay` | `POST /v2/router/send` (`no_inflight_updates`, `allow_self_payment`, `fee_limit_msat`, `timeout_seconds`; keysend: `dest`, `amt_msat`, `payment_hash`, `dest_custom_records` with 5482373484 = preimage, `final_cltv_delta` 40) |
//! | `lookup_payment` | first message of `GET /v2/router/track/{hash base64url}`; "payment isn't initiated" (code 5) → not found |
//! | `node_status` | `GET /v1/getinfo`: `block_height`, `synced_to_chain` |
//! | `list_channels` | `GET /v1/channels` (open: `active` → active, else inactive) and `GET /v1/channels/pending` (`pending_open_channels` → pending, `waiting_close_channels` → closing); the channel id is LND's `channel_point`, the short channel id `chan_id`; balances are LND's whole-sat `local_balance`/`remote_balance` less each side's reserve (`local_constraints`/`remote_constraints.chan_reserve_sat`) |
//! | `node_stats` | the two above: active channels; inactive = open but inactive + opening (closing ones are not counted, nor their balances); sync lag 0 while `synced_to_chain`, else now − `best_header_timestamp` |
//! | `query_routes` | `GET /v1/graph/routes/{pubkey}/{sats}` (or `/0?amt_msat=` for sub-sat amounts) with `fee_limit.fixed_msat` = max(amount, 100 sat); "unable to find a path" → no routes |
//!
//! # Errors
//!
//! Connection, TLS, timeouts, broken streams, non-LND answers (a proxy's 502 page) and LND's
//! catch-all errors (gRPC code 2, which the gateway sends as HTTP 500, is how most LND errors
//! arrive) are [`satchel_lightning::LnError::Transport`]: the effect is unknown. A refused
//! macaroon, a locked wallet or a starting node are `Transport` too (operator problems; a
//! payment stays pending and resolves once LND answers again). Explicit refusals (gRPC
//! InvalidArgument/NotFound/AlreadyExists/FailedPrecondition, HTTP 4xx) are `Rejected`, as are
//! LND's validation errors on invoice creation.
//!
//! # Payments
//!
//! `pay` never sends a hash twice on its own: if LND refuses the send because the hash is in
//! flight or paid (gRPC AlreadyExists, "payment is in transition", "invoice is already paid"),
//! it follows that payment with `track` instead. Any other refusal is `Rejected` only when a
//! lookup confirms LND has no payment with that hash; otherwise the existing payment's state is
//! reported. When neither a final state nor a refusal arrives within `timeout + 3 s`, `pay`
//! looks the payment up once and answers `InFlight` (LND keeps paying: closing the stream does
//! not cancel a payment).
//!
//! # Incoming events
//!
//! `seq` is LND's `settle_index` (assigned when an invoice settles, strictly increasing). A
//! background task per [`LndRest`] keeps a buffer of settled invoices, started from the first
//! cursor `events_after` is asked for:
//!
//! * a persisted cursor `N > 0` (Satchel restarting): `GET /v1/invoices/subscribe?settle_index=N`,
//!   whose replay delivers every invoice settled after `N`, in order, then live settlements. The
//!   first answer waits until the replay has been quiet for 300 ms. No scan.
//! * cursor `0` (a fresh install, or a replay from the start): LND's subscription cannot replay
//!   from 0 (`settle_index=0` means "no replay"), so the task pages through
//!   `GET /v1/invoices?index_offset=…&num_max_invoices=500` once, then subscribes with replay
//!   from the highest `settle_index` found. While nothing has settled yet it keeps a live-only
//!   subscription as a signal and lists again when it stands, on every announced settlement and
//!   every 10 s.
//!
//! Answers are prefixes of a buffer that only grows in `settle_index` order, so a consumer that
//! advances its cursor never skips an event; a broken subscription is reopened from the last
//! `settle_index` seen; a cursor older than the buffer (replay) restarts the feed from it. The
//! buffer stops reading LND at 100,000 unconsumed events. `events_after` returns
//! `Err(Transport)` while LND cannot be reached. Received keysends (`is_keysend`) carry the
//! sender's preimage (`r_preimage`) and the custom records of their settled HTLCs (map keys are
//! decimal strings, values base64), without 5482373484.
//!
//! LND claims every keysend it accepts (`--accept-keysend`): Satchel's
//! [`satchel_lightning::IncomingPolicy`] cannot be consulted before claiming, so keysends that
//! name no wallet end up in `sys:unclaimed`.
//!
//! A fake LND for tests (LND's REST API over HTTPS on top of any Satchel backend) lives in the
//! dev-only crate `satchel-fakes` (`satchel_fakes::lnd`), so this crate carries no server code.
#![deny(missing_docs)]

mod backend;
mod config;
mod events;
mod rest;
mod tls;
mod wire;

use std::sync::Arc;

use reqwest::Method;
use satchel_domain::{Network, NodePubkey};
use satchel_lightning::{LnError, NodeInfoData};
use tokio::sync::OnceCell;

pub use config::{LndConfig, load_macaroon, load_tls_cert, macaroon_hex};

/// Oldest LND release this backend is written for.
pub const MIN_LND_VERSION: (u32, u32, u32) = (0, 16, 0);

/// Errors setting up an [`LndRest`].
#[derive(Debug, thiserror::Error)]
pub enum LndError {
    /// Invalid settings.
    #[error("LND configuration: {0}")]
    Config(String),
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// LND could not be reached or refused us.
    #[error("LND: {0}")]
    Node(#[from] LnError),
    /// LND is reachable but not usable by Satchel (wrong network, too old).
    #[error("LND: {0}")]
    Incompatible(String),
}

/// Facts from `GetInfo` beyond [`NodeInfoData`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LndInfo {
    /// LND's version string, e.g. `0.18.4-beta commit=v0.18.4-beta`.
    pub version: String,
    /// Current block height.
    pub block_height: u32,
}

/// An LND node, spoken to over REST. Create it inside a tokio runtime; it spawns one background
/// task (the invoice subscription) on the first `events_after` call, stopped when dropped.
pub struct LndRest {
    rest: Arc<rest::Rest>,
    network: Network,
    feed: Arc<events::Feed>,
    info: OnceCell<NodeInfoData>,
}

impl std::fmt::Debug for LndRest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LndRest")
            .field("network", &self.network)
            .finish_non_exhaustive()
    }
}

impl Drop for LndRest {
    fn drop(&mut self) {
        self.feed.stop();
    }
}

fn network_of(name: &str) -> Option<Network> {
    Some(match name {
        "mainnet" | "bitcoin" => Network::Bitcoin,
        "testnet" | "testnet3" | "testnet4" => Network::Testnet,
        "signet" => Network::Signet,
        "regtest" | "simnet" => Network::Regtest,
        _ => return None,
    })
}

impl LndRest {
    /// Builds the client. Makes no request (see [`LndRest::connect`]).
    pub fn new(config: LndConfig) -> Result<LndRest, LndError> {
        let rest = Arc::new(rest::Rest::new(&config)?);
        Ok(LndRest {
            feed: Arc::new(events::Feed::new(rest.clone())),
            rest,
            network: config.network,
            info: OnceCell::new(),
        })
    }

    /// Builds the client and checks the node: reachable with this certificate and macaroon,
    /// on the configured network, LND 0.16 or newer.
    pub async fn connect(config: LndConfig) -> Result<LndRest, LndError> {
        let lnd = LndRest::new(config)?;
        lnd.check().await?;
        Ok(lnd)
    }

    /// Asks LND for its info and checks network and version (and caches the node info).
    pub async fn check(&self) -> Result<LndInfo, LndError> {
        let (info, extra) = self.fetch_info().await?;
        if info.network != self.network {
            return Err(LndError::Incompatible(format!(
                "the node runs on {}, Satchel is configured for {}",
                info.network.name(),
                self.network.name()
            )));
        }
        match wire::parse_version(&extra.version) {
            Some(v) if v >= MIN_LND_VERSION => {}
            Some(_) => {
                return Err(LndError::Incompatible(format!(
                    "LND {} is too old; Satchel needs 0.16 or newer",
                    extra.version
                )));
            }
            None => tracing::warn!(version = %extra.version, "cannot parse LND's version"),
        }
        let _ = self.info.set(info);
        Ok(extra)
    }

    /// The network this client was configured for.
    pub fn network(&self) -> Network {
        self.network
    }

    /// `GET /v1/getinfo` as LND sends it.
    async fn get_info(&self) -> Result<wire::GetInfo, LnError> {
        self.rest
            .call(Method::GET, "/v1/getinfo", None)
            .await
            .map_err(rest::CallError::into_ln)
    }

    async fn fetch_info(&self) -> Result<(NodeInfoData, LndInfo), LnError> {
        let gi = self.get_info().await?;
        let pubkey = NodePubkey::from_hex(&gi.identity_pubkey).ok_or_else(|| {
            LnError::Transport(format!(
                "LND getinfo: bad identity_pubkey {:?}",
                gi.identity_pubkey
            ))
        })?;
        let network = match gi.chains.first() {
            Some(c) => network_of(&c.network).ok_or_else(|| {
                LnError::Transport(format!("LND getinfo: unknown network {:?}", c.network))
            })?,
            None => self.network,
        };
        Ok((
            NodeInfoData {
                pubkey,
                network,
                alias: gi.alias,
            },
            LndInfo {
                version: gi.version,
                block_height: gi.block_height,
            },
        ))
    }
}
