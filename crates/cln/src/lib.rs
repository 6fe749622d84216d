//! Satchel's Core Lightning backend.
//!
//! [`ClnBackend`] implements Satchel's backend traits ([`satchel_lightning::LightningBackend`])
//! on a Core Lightning (CLN) node, reached through either of two transports behind one trait
//! ([`ClnTransport`]):
//!
//! * **unix socket** ([`SocketTransport`]): JSON-RPC 2.0 on `lightningd`'s
//!   `<lightning-dir>/<network>/lightning-rpc`; same host only, full access;
//! * **CLNRest** ([`RestTransport`]): `POST https://host:port/v1/<method>` with the params as the
//!   JSON body and a `Rune: <rune>` header, CLN's self-signed certificate pinned.
//!
//! ```no_run
//! use std::sync::Arc;
//! use satchel_cln::{ClnBackend, ClnConfig};
//! use satchel_domain::Network;
//! use satchel_lightning::LightningBackend;
//!
//! async fn wire() -> Result<Arc<dyn LightningBackend>, satchel_cln::ClnError> {
//!     let config = ClnConfig::rest(
//!         "https://127.0.0.1:3010",
//!         std::fs::read_to_string("rune.txt").unwrap_or_default(),
//!         std::fs::read_to_string("/root/.lightning/regtest/server.pem").unwrap_or_default(),
//!         Network::Regtest,
//!     );
//!     // or: ClnConfig::socket("/root/.lightning/regtest/lightning-rpc", Network::Regtest)
//!     Ok(Arc::new(ClnBackend::connect(&config).await?))
//! }
//! ```
//!
//! # Node requirements
//!
//! **Core Lightning v23.08 or newer** ([`ClnVersion::MIN_SUPPORTED`]; `connect` refuses older
//! releases), up to v27.03, the newest the contract tests cover. v23.08 is the floor for what
//! this crate relies on:
//! integer `*_msat` fields everywhere (the `"…msat"` strings are still parsed), `listpeerchannels`
//! (23.02), `created_index`/`groupid` bookkeeping in `listsendpays`, CLNRest (first shipped in
//! 23.08; rewritten in Rust in 24.08 with the same `POST /v1/<method>` + `Rune` interface) and
//! the repeatable `accept-htlc-tlv-type` option. Everything else used (`invoice` with
//! `preimage`/`deschashonly`, `waitanyinvoice` with `lastpay_index`/`timeout`, `pay` with
//! `maxfee`/`retry_for`, `getroute`, `createonion`/`sendonion`/`waitsendpay`, `delinvoice`) is
//! older.
//!
//! **Commands by release.** The backend reads the release from `getinfo`'s `version` (asked
//! again after a minute, or at once when the node does not know a command, as after an
//! upgrade or a downgrade; an unreadable custom version string is taken as the newest):
//!
//! | release | BOLT11 payment | keysend route, `queryroutes` |
//! |---|---|---|
//! | v23.08 – v24.08 | `pay` | `getroute` (exclusions as its `exclude`) |
//! | v24.11 | `xpay` | `getroute` (its `getroutes` cannot be asked for one path) |
//! | v25.02 – v25.05 | `xpay` | `getroutes` + the `auto.no_mpp_support` layer (one path); exclusions in an askrene layer |
//! | v25.09 – | `xpay` | `getroutes maxparts=1`; exclusions in an askrene layer |
//!
//! CLN deprecated `pay`, `getroute` and `keysend` in v26.06 and removes them in v27.03;
//! **`allow-deprecated-apis=false` is fine** for Satchel on v24.11 and newer (it never calls a
//! deprecated command or sends a deprecated field there, and reads `getroutes`' hop fields in
//! both their old and new forms). On v23.08 – v24.08 it must stay `true` (the default), as
//! those releases have no successors to `pay`/`getroute`.
//!
//! Node options:
//! * `accept-htlc-tlv-type=<type>` (repeat the option per type) for every **even** custom TLV
//!   type that senders may put in keysends to us, or CLN fails those HTLCs ("it's OK to be
//!   odd"). Of the usual ones, 112111100 and 112111100102 (podcast wallet routing) and 34349334
//!   (chat message) are even; 696969 and 7629169 are odd and need nothing.
//! * The `keysend` plugin must be enabled (it is by default) to receive keysends.
//! * CLNRest: `clnrest-port=3010` (and `clnrest-host`, `clnrest-protocol=https`, the default);
//!   create a rune with `lightning-cli createrune` (restrict it to the methods listed below if
//!   you like). Give Satchel CLNRest's `server.pem` (not `ca.pem`).
//!
//! Methods called: `getinfo`, `invoice`, `listinvoices`, `delinvoice`, `datastore`,
//! `listdatastore`, `waitanyinvoice`, `xpay` (or `pay`), `listsendpays`, `waitsendpay`,
//! `getroutes`, `askrene-create-layer`, `askrene-update-channel`, `askrene-disable-node`,
//! `askrene-remove-layer` (or `getroute`), `createonion`, `sendonion`, `listpeerchannels` (a
//! restricted rune must allow these).
//!
//! # How Satchel's contracts map onto CLN
//!
//! * **Node status and channels** (operator API, `/metrics`): `node_status` is `getinfo`'s
//!   `blockheight`, synced unless it carries `warning_bitcoind_sync` or
//!   `warning_lightningd_sync`. `list_channels` is `listpeerchannels`: `CHANNELD_NORMAL` (or
//!   `CHANNELD_AWAITING_SPLICE`) is active, inactive when `peer_connected` is false; the
//!   `OPENINGD`/`…AWAITING_LOCKIN`/`DUALOPEND_OPEN_…` states are pending;
//!   `CHANNELD_SHUTTING_DOWN`, `CLOSINGD_SIGEXCHANGE` and `CLOSINGD_COMPLETE` are closing;
//!   closed channels (`AWAITING_UNILATERAL`, `FUNDING_SPEND_SEEN`, `ONCHAIN`) and entries with
//!   no `channel_id` yet are left out. Balances are `spendable_msat`/`receivable_msat` (reserve
//!   and in-flight HTLCs already excluded), capacity `total_msat`. `node_stats` counts active
//!   channels, and as inactive the inactive and pending ones (closing ones are neither, and
//!   their balances are not summed). Sync lag is not reported: `getinfo` names no block time.
//! * **Invoices** are created with Satchel's preimage (`invoice preimage=…`) and the label
//!   `satchel-<payment hash hex>`, so a retry finds the first invoice (CLN refuses the duplicate
//!   label/preimage with 900/901 and the backend returns the existing one). `cancel_invoice`
//!   deletes the unpaid invoice (`delinvoice status=unpaid`); CLN has no cancelled state, so
//!   the backend first records the cancellation in CLN's `datastore` under
//!   `["satchel","cancelled-invoices",<hash>]`, and `lookup_invoice` answers `Canceled` for a
//!   hash that is no longer listed but recorded there (one small entry per cancelled invoice,
//!   never pruned). `unpaid`→Open, `paid`→Settled, `expired`→Canceled.
//! * **Description hashes**: CLN's `invoice` cannot take a bare hash; it hashes a description
//!   it is given (`deschashonly`). When Satchel passes a `description_hash` equal to
//!   SHA-256(memo) the invoice is made that way; any other hash is `Rejected` with an
//!   explanation (the LNURL case, where only the hash is known, is not supported).
//! * **Incoming events** come from `waitanyinvoice lastpay_index=<cursor> timeout=<secs>`:
//!   Satchel's event `seq` *is* CLN's `pay_index`, so the cursor Satchel persists resumes
//!   exactly after a restart of Satchel or of CLN; replays return the same events.
//! * **Received keysends** appear as paid invoices labelled `keysend-…` created by CLN's keysend
//!   plugin, with the sender's preimage. CLN does not expose the sender's custom TLVs through
//!   `listinvoices`/`waitanyinvoice`; only a chat message (TLV 34349334) survives, as the
//!   description `keysend: <message>`, and is passed on as that record. So **routing TLVs
//!   (696969 …) of incoming keysends are lost**: such keysends land in the configured default
//!   keysend wallet or as unclaimed. Getting them needs an `htlc_accepted` hook plugin, as does
//!   Satchel's [`satchel_lightning::IncomingPolicy`] (CLN's keysend plugin accepts every
//!   keysend without asking).
//! * **Paying an invoice**: `xpay invstring maxfee=<fee limit msat> retry_for=<timeout secs>`
//!   (`pay bolt11 …` with the same limits before v24.11), plus `amount_msat` for amountless
//!   invoices; CLN pays exactly the invoice amount, so a different amount is `Rejected`.
//!   Both record their attempts in `listsendpays`, which lookups read. Idempotency: before sending, `listsendpays
//!   payment_hash=…` — complete → the earlier success, pending → wait for it, failed or none →
//!   send; `pay` calls for one hash are serialised in-process and a `pay` still running in
//!   `lightningd` after its caller stopped waiting is never duplicated. The command runs in a
//!   task, so `pay` returns `InFlight` after `timeout` + 5 s while CLN carries on.
//! * **Keysend with Satchel's preimage**: CLN's `keysend` command draws its own random preimage,
//!   so the payment would carry a hash Satchel does not know: lookups by Satchel's hash would
//!   say `NotFound` and a recovery would send a second payment. The backend therefore builds the
//!   keysend itself: a route (`getroutes` from v25.02 with our channels as they are now and
//!   free to use — layers `auto.localchans`, `auto.sourcefree` — one path, `maxfee_msat` = the
//!   fee limit; `getroute` with `fuzzpercent=0` before), final CLTV 40, a `createonion` whose final
//!   payload has `amt_to_forward`, `outgoing_cltv_value`, TLV 5482373484 = Satchel's preimage
//!   and the custom records, `sendonion` under Satchel's payment hash and `waitsendpay`. The
//!   route's fee is checked against the fee limit before anything is sent; a failing channel
//!   (or node) is excluded and the next route tried until the timeout: with `getroute` in its
//!   `exclude`, with `getroutes` in an askrene layer of this payment
//!   (`satchel-keysend-<hash>-<nanos>`, disabled with `askrene-update-channel enabled=false` or
//!   `askrene-disable-node`), removed when the keysend ends (a layer left behind by a crash
//!   only holds exclusions and is not persistent). Limits: one path per attempt (no
//!   multi-part keysend), and CLN's own `keysend` retry logic and route hints are not used.
//! * **Lookups** aggregate `listsendpays`: any `complete` part → Succeeded (preimage, fee =
//!   Σ`amount_sent_msat` − Σ`amount_msat` of the completed attempt), else any `pending` →
//!   InFlight, else `failed` → Failed (reason from `waitsendpay` on the last failed part,
//!   which returns its stored error), else NotFound. A payment CLN refused before any HTLC
//!   left (no route within the fee limit, amount too large) leaves no trace in `listsendpays`;
//!   the failure this process reported for it is remembered in memory and returned instead of
//!   NotFound until the hash is paid again (after a restart such a hash looks up NotFound,
//!   which is true: nothing was ever sent).
//! * **Failure reasons**: 203 (destination refused) and 207 (expired) → IncorrectPaymentDetails;
//!   204/205/206/220 → NoRoute; 215 (askrene: our channels cannot carry it) →
//!   InsufficientBalance; `pay`'s 210 → Timeout when the message speaks of a timeout/deadline,
//!   otherwise NoRoute ("Ran out of routes to try"); `xpay`'s 209 → Timeout for "Timed out
//!   after …", NoRoute for "Failed after N attempts … routing failed", otherwise Error; 219
//!   (already paid) with no success of ours in `listsendpays` → `Rejected`; NoRoute becomes InsufficientBalance when
//!   the amount exceeds the sum of `spendable_msat` over our normal channels
//!   (`listpeerchannels`). An error code is only taken as a failure after a fresh
//!   `listsendpays` shows nothing pending or complete; transport errors are `Transport`.
//!
//! # Known gaps
//!
//! * Incoming keysends: custom TLVs other than the 34349334 message are not visible, and
//!   Satchel's [`satchel_lightning::IncomingPolicy`] is not consulted (see above).
//! * Invoices with a bare description hash cannot be created (see above). Paying an invoice
//!   that carries only a description hash: CLN's `pay` asks for the `description` parameter
//!   in recent versions, which Satchel does not have; such payments come back `Rejected`
//!   (nothing sent).
//! * Keysends go over one path per attempt (no multi-part), cannot go to our own node, and
//!   use `getroute`, not `pay`'s route finding (no MPP, no channel hints).
//! * `pay` cannot overpay an invoice (CLN pays the invoice amount exactly).
//! * One `datastore` entry per cancelled invoice is kept forever.
//!
//! A fake `lightningd` for tests lives in the dev-only crate `satchel-fakes`
//! (`satchel_fakes::cln`). What it shares with this backend is public here on purpose, so that
//! it is not copied: CLN's error codes and result shapes ([`rpc`]), hop payloads ([`onion`]),
//! the release table ([`version`]) and the socket framing ([`transport::ObjectReader`]).
#![deny(missing_docs)]

mod backend;
pub mod onion;
pub mod rpc;
pub mod transport;
pub mod version;

use std::path::PathBuf;
use std::time::Duration;

use satchel_domain::Network;
use satchel_lightning::LnError;

pub use backend::{
    CANCELLED_DATASTORE_KEY, ClnBackend, INVOICE_LABEL_PREFIX, KEYSEND_FINAL_CLTV,
    KEYSEND_LABEL_PREFIX, KEYSEND_MESSAGE_TLV, invoice_label,
};
pub use transport::{ClnTransport, RestTransport, RpcError, SocketTransport};
pub use version::ClnVersion;

/// How long ordinary calls may take (long waits add their own duration to it).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How to reach `lightningd`.
#[derive(Clone)]
pub enum ClnConnection {
    /// JSON-RPC 2.0 over the unix socket `<lightning-dir>/<network>/lightning-rpc`.
    Socket {
        /// The socket path.
        path: PathBuf,
    },
    /// CLNRest over HTTPS.
    Rest {
        /// Base URL, `https://host:port` (CLNRest's `clnrest-port`).
        url: String,
        /// The rune (`lightning-cli createrune`), sent in the `Rune` header.
        rune: String,
        /// CLNRest's certificate, PEM (`<lightning-dir>/<network>/server.pem`). The connection
        /// is accepted only if the server presents exactly this certificate.
        tls_cert_pem: String,
    },
}

impl std::fmt::Debug for ClnConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClnConnection::Socket { path } => f.debug_struct("Socket").field("path", path).finish(),
            ClnConnection::Rest { url, .. } => f
                .debug_struct("Rest")
                .field("url", url)
                .field("rune", &"<redacted>")
                .finish_non_exhaustive(),
        }
    }
}

/// Configuration of a [`ClnBackend`].
#[derive(Debug, Clone)]
pub struct ClnConfig {
    /// How to reach the node.
    pub connection: ClnConnection,
    /// The network the node must be on (checked by [`ClnBackend::connect`]; invoices for other
    /// networks are refused).
    pub network: Network,
    /// Timeout of ordinary calls; default [`DEFAULT_REQUEST_TIMEOUT`].
    pub request_timeout: Duration,
}

impl ClnConfig {
    /// The unix socket at `path`.
    pub fn socket(path: impl Into<PathBuf>, network: Network) -> ClnConfig {
        ClnConfig {
            connection: ClnConnection::Socket { path: path.into() },
            network,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// CLNRest at `url` with `rune`, pinning the certificate `tls_cert_pem`.
    pub fn rest(
        url: impl Into<String>,
        rune: impl Into<String>,
        tls_cert_pem: impl Into<String>,
        network: Network,
    ) -> ClnConfig {
        ClnConfig {
            connection: ClnConnection::Rest {
                url: url.into(),
                rune: rune.into(),
                tls_cert_pem: tls_cert_pem.into(),
            },
            network,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// Errors setting up a [`ClnBackend`].
#[derive(Debug, thiserror::Error)]
pub enum ClnError {
    /// The configuration is unusable (bad URL, empty rune, no certificate in the PEM...).
    #[error("CLN configuration: {0}")]
    Config(String),
    /// The node could not be reached or refused us.
    #[error("CLN node: {0}")]
    Node(#[from] LnError),
    /// The node runs a Core Lightning release older than the oldest supported
    /// ([`ClnVersion::MIN_SUPPORTED`]).
    #[error(
        "CLN node runs {found}; Satchel needs Core Lightning {} or newer",
        ClnVersion::MIN_SUPPORTED
    )]
    TooOld {
        /// The release `getinfo` reports.
        found: ClnVersion,
    },
    /// The node runs on another network than configured.
    #[error("CLN node runs on {node}, configured for {}", configured.name())]
    WrongNetwork {
        /// Configured network.
        configured: Network,
        /// What `getinfo` says.
        node: String,
    },
}
