//! A deterministic, in-memory Lightning backend whose payment outcomes are chosen by the caller.
//!
//! [`ScriptedBackend`] is used by tests and by `satchel serve` until a real embedded node exists.
//! It moves no money. What it does do for real:
//!
//! * it signs genuine BOLT11 invoices (regtest invoices start with `lnbcrt`) with a node key
//!   derived from a seed, so [`Bolt11::parse`] accepts them and their payee is
//!   [`ScriptedBackend::pubkey`];
//! * it simulates one other node, "carol" ([`ScriptedBackend::external_pubkey`]), whose invoices
//!   ([`ScriptedBackend::external_invoice`]) our node can pay, and an outside world that pays
//!   our invoices ([`ScriptedBackend::pay_our_invoice`]) or keysends to us
//!   ([`ScriptedBackend::receive_keysend`]).
//!
//! # Payment contract
//!
//! [`Payments::pay`] is idempotent per payment hash: while a payment with that hash is in flight or
//! succeeded, `pay` sends nothing and reports the recorded state. Only after a definite failure
//! may the hash be sent again. Each actual send increments [`ScriptedBackend::pay_count`].
//!
//! Before anything is sent, `pay` rejects (`Err(LnError::Rejected)`, nothing recorded, nothing
//! counted) an invoice for another network, a zero amount, an amount below the invoice amount,
//! and keysend custom records with a type below 65536 or equal to the keysend preimage type.
//!
//! A send then goes where a real node would send it:
//!
//! * an invoice whose payee is our own node: a self-payment. If the invoice is one of ours and
//!   payable (open, not expired) it is settled exactly as [`ScriptedBackend::pay_our_invoice`]
//!   would (an [`IncomingKind::InvoiceSettled`] event is appended) and the payment succeeds with
//!   fee 0; otherwise it fails with [`FailureReason::IncorrectPaymentDetails`]. Scripts are not
//!   consulted;
//! * a keysend to our own node: an [`IncomingKind::KeysendReceived`] event is appended and the
//!   payment succeeds with fee 0. Scripts are not consulted;
//! * an invoice made by [`ScriptedBackend::external_invoice`] / [`ScriptedBackend::external_invoice_at`]:
//!   fails with [`FailureReason::IncorrectPaymentDetails`] if expired, otherwise follows the
//!   [`Script`] for the hash (consumed by this send) or the default script; success reveals the
//!   invoice's preimage;
//! * a keysend to any other node: follows the script; success reveals the keysend's preimage;
//! * any other invoice (its preimage is unknown, so it can never succeed): fails with
//!   [`FailureReason::NoRoute`].
//!
//! A routing fee above `fee_limit` is never paid: a scripted success whose fee exceeds the
//! payment's fee limit (including one given later through [`ScriptedBackend::complete`]) becomes
//! a [`FailureReason::NoRoute`] failure, which is how a real node behaves when the limit is too
//! low.
//!
//! The incoming event stream numbers events from 1 without gaps and never forgets them.
//!
//! # Persistence
//!
//! [`ScriptedBackend::new`] keeps everything in memory. [`ScriptedBackend::open`] plays a node
//! that keeps its own state, as a real node does: it loads a JSON state file if one exists and
//! rewrites it atomically (temporary file, fsync, rename) after every change that matters
//! (invoices and their states, carol's invoices, payment records, incoming events, scripts and
//! the default script), *before* the change is reported to the caller. A process killed at any
//! moment therefore restarts with a node that remembers everything it told anyone: a payment
//! whose `pay` returned is known to [`Payments::lookup_payment`], an outside payment that
//! returned is in the event stream. A `pay` call blocked on a [`Script::Hang`] is not resumed
//! after a restart (the payment stays in flight until completed or released). If the file cannot
//! be written, `pay` answers `Err(LnError::Transport)` (the outcome is unknown to the caller) and
//! other changes are logged; the next successful write catches the file up.

#![deny(missing_docs)]

mod devnet;

pub use devnet::SCRIPTED_PEERS;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bitcoin::hashes::{Hash as _, sha256};
use bitcoin::secp256k1::{All, PublicKey, Secp256k1, SecretKey};
use lightning_invoice::{
    Bolt11InvoiceDescription, Currency, Description, InvoiceBuilder, PaymentSecret,
};
use satchel_domain::{
    Bolt11, CustomRecords, FailureReason, Msat, Network, NodePubkey, PaymentHash, Preimage,
    now_secs,
};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use satchel_lightning::{
    IncomingEvent, IncomingKind, InternalTake, InvoiceEvents, InvoiceState, Invoices, LnError,
    NewInvoice, NodeInfo, NodeInfoData, NodeStats, PayOutcome, PayRequest, PayTarget,
    PaymentLookup, Payments, Route, RouteHop, Routes,
};

/// Alias reported by [`NodeInfo::node_info`].
pub const SCRIPTED_ALIAS: &str = "satchel-scripted";

/// Short channel id of the single simulated channel used by [`Routes::query_routes`]
/// (block 1, transaction 0, output 0).
pub const SCRIPTED_CHAN_ID: u64 = 1 << 40;

/// CLTV delta of our invoices and of the simulated routes.
pub const SCRIPTED_CLTV_DELTA: u32 = 144;

/// Longest description a BOLT11 invoice can carry, in bytes.
const MAX_DESCRIPTION_BYTES: usize = 639;

/// What happens when our node sends a payment (see the module docs for which payments follow
/// scripts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Script {
    /// `pay` returns `Succeeded` at once (or `Failed(NoRoute)` if `fee` exceeds the fee limit).
    Succeed {
        /// Routing fee paid.
        fee: Msat,
    },
    /// `pay` returns `Failed(reason)` at once.
    Fail(FailureReason),
    /// `pay` returns `InFlight`; the payment stays in flight until [`ScriptedBackend::complete`]
    /// resolves it, or [`ScriptedBackend::release`] makes it succeed with `fee`.
    PendingThenSucceed {
        /// Routing fee paid when released.
        fee: Msat,
    },
    /// `pay` returns `InFlight`; the payment stays in flight until [`ScriptedBackend::complete`].
    Unknown,
    /// `pay` returns `Err(LnError::Transport)`, but the payment did happen as `then` says:
    /// a lookup reports `then`'s result (`Succeed` -> succeeded, `Fail` -> failed, anything
    /// pending -> in flight).
    TransportError {
        /// What really happened.
        then: Box<Script>,
    },
    /// `pay` blocks (the payment is in flight) until [`ScriptedBackend::complete`] or
    /// [`ScriptedBackend::release`] is called for the hash, for at most the request's timeout;
    /// it then reports the payment's state (`InFlight` if still unresolved). `release` applies
    /// `then`.
    Hang {
        /// Outcome applied by [`ScriptedBackend::release`].
        then: Box<Script>,
    },
}

/// How a test resolves an in-flight payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// The payment succeeded with this routing fee (a fee above the payment's limit turns into a
    /// `NoRoute` failure).
    Succeed {
        /// Routing fee paid.
        fee: Msat,
    },
    /// The payment definitely failed.
    Fail(FailureReason),
}

fn parse_fee(fee: Option<&str>) -> Result<Msat, String> {
    match fee.map(str::trim) {
        None | Some("") => Ok(Msat::ZERO),
        Some(f) => f
            .parse::<u64>()
            .ok()
            .and_then(|v| Msat::from_msat(v).ok())
            .ok_or_else(|| format!("bad fee in msat: {f:?}")),
    }
}

fn parse_reason(reason: Option<&str>) -> Result<FailureReason, String> {
    let r = reason.map(str::trim).unwrap_or("").to_ascii_uppercase();
    FailureReason::from_lnd_name(&r).ok_or_else(|| {
        format!(
            "unknown failure reason {r:?} (NO_ROUTE, INSUFFICIENT_BALANCE, \
             INCORRECT_PAYMENT_DETAILS, TIMEOUT, ERROR)"
        )
    })
}

impl FromStr for Script {
    type Err = String;

    /// `succeed[:<fee_msat>]`, `fail:<REASON>` (`NO_ROUTE`, `FAILURE_REASON_TIMEOUT`, ...),
    /// `unknown`, `pending[:<fee_msat>]` ([`Script::PendingThenSucceed`]) or
    /// `transport:<script>` ([`Script::TransportError`]).
    fn from_str(spec: &str) -> Result<Script, String> {
        let spec = spec.trim();
        let (kind, arg) = match spec.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (spec, None),
        };
        match kind.trim().to_ascii_lowercase().as_str() {
            "succeed" => Ok(Script::Succeed {
                fee: parse_fee(arg)?,
            }),
            "fail" => Ok(Script::Fail(parse_reason(arg)?)),
            "unknown" if arg.is_none() => Ok(Script::Unknown),
            "pending" => Ok(Script::PendingThenSucceed {
                fee: parse_fee(arg)?,
            }),
            "transport" => Ok(Script::TransportError {
                then: Box::new(arg.unwrap_or("succeed").parse()?),
            }),
            _ => Err(format!(
                "bad script {spec:?} (succeed:<fee_msat> | fail:<REASON> | unknown | \
                 pending:<fee_msat> | transport:<script>)"
            )),
        }
    }
}

impl FromStr for Completion {
    type Err = String;

    /// `succeed[:<fee_msat>]` or `fail:<REASON>`.
    fn from_str(spec: &str) -> Result<Completion, String> {
        match spec.trim().parse::<Script>()? {
            Script::Succeed { fee } => Ok(Completion::Succeed { fee }),
            Script::Fail(reason) => Ok(Completion::Fail(reason)),
            _ => Err(format!(
                "bad completion {spec:?} (succeed:<fee_msat> | fail:<REASON>)"
            )),
        }
    }
}

/// One of our invoices.
struct OwnInvoice {
    bolt11: Bolt11,
    preimage: Preimage,
    state: InvoiceState,
}

/// The node's record of an outgoing payment hash.
struct PaymentRecord {
    /// `InFlight`, `Succeeded` or `Failed`.
    state: PayOutcome,
    /// Preimage revealed on success, if the destination knows one.
    success_preimage: Option<Preimage>,
    /// Fee limit of the latest attempt.
    fee_limit: Msat,
    /// What [`ScriptedBackend::release`] applies to an in-flight payment.
    plan: Option<Script>,
    /// A `pay` call is blocked on this payment ([`Script::Hang`]).
    hanging: bool,
    /// How many times the hash was sent.
    sends: usize,
}

#[derive(Default)]
struct State {
    default_script: Option<Script>,
    scripts: HashMap<PaymentHash, Script>,
    invoices: HashMap<PaymentHash, OwnInvoice>,
    external: HashMap<PaymentHash, Preimage>,
    payments: HashMap<PaymentHash, PaymentRecord>,
    events: Vec<IncomingEvent>,
}

impl State {
    fn push_event(&mut self, kind: IncomingKind) {
        let seq = u64::try_from(self.events.len())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        self.events.push(IncomingEvent { seq, kind });
    }

    fn default_script(&self) -> Script {
        self.default_script
            .clone()
            .unwrap_or(Script::Succeed { fee: Msat::ZERO })
    }

    /// Settles one of our invoices paid by someone (an outside payer or ourselves).
    fn settle_own(
        &mut self,
        hash: PaymentHash,
        amount: Option<Msat>,
        now: i64,
    ) -> Result<Preimage, String> {
        let inv = self
            .invoices
            .get_mut(&hash)
            .ok_or_else(|| format!("unknown invoice {hash}"))?;
        match inv.state {
            InvoiceState::Open if inv.bolt11.is_expired_at(now) => {
                return Err("invoice expired".to_owned());
            }
            InvoiceState::Open => {}
            InvoiceState::Settled { .. } => return Err("invoice already paid".to_owned()),
            InvoiceState::Canceled => return Err("invoice canceled".to_owned()),
        }
        let invoice_amount = inv.bolt11.amount();
        let amount = amount
            .or(invoice_amount)
            .ok_or_else(|| "amount required for an amountless invoice".to_owned())?;
        if amount.is_zero() {
            return Err("amount must be positive".to_owned());
        }
        if invoice_amount.is_some_and(|a| amount < a) {
            return Err("amount below the invoice amount".to_owned());
        }
        inv.state = InvoiceState::Settled {
            amount_received: amount,
            settled_at_secs: now,
        };
        let preimage = inv.preimage;
        self.push_event(IncomingKind::InvoiceSettled {
            payment_hash: hash,
            amount_received: amount,
            settled_at_secs: now,
        });
        Ok(preimage)
    }
}

/// Result of evaluating a [`Script`].
struct Resolution {
    state: PayOutcome,
    plan: Option<Script>,
    transport_error: bool,
    hang: bool,
}

fn succeed(preimage: Option<Preimage>, fee: Msat, fee_limit: Msat) -> PayOutcome {
    match preimage {
        Some(preimage) if fee <= fee_limit => PayOutcome::Succeeded { preimage, fee },
        _ => PayOutcome::Failed(FailureReason::NoRoute),
    }
}

fn resolve(script: Script, preimage: Option<Preimage>, fee_limit: Msat) -> Resolution {
    let settled = |state| Resolution {
        state,
        plan: None,
        transport_error: false,
        hang: false,
    };
    match script {
        Script::Succeed { fee } => settled(succeed(preimage, fee, fee_limit)),
        Script::Fail(reason) => settled(PayOutcome::Failed(reason)),
        Script::PendingThenSucceed { fee } => Resolution {
            state: PayOutcome::InFlight,
            plan: Some(Script::Succeed { fee }),
            transport_error: false,
            hang: false,
        },
        Script::Unknown => settled(PayOutcome::InFlight),
        Script::TransportError { then } => {
            let mut r = resolve(*then, preimage, fee_limit);
            r.transport_error = true;
            // The caller gets its error at once; a nested hang only means "in flight".
            r.hang = false;
            r
        }
        Script::Hang { then } => Resolution {
            state: PayOutcome::InFlight,
            plan: Some(*then),
            transport_error: false,
            hang: true,
        },
    }
}

fn lookup_of(state: &PayOutcome) -> PaymentLookup {
    match state {
        PayOutcome::InFlight => PaymentLookup::InFlight,
        PayOutcome::Succeeded { preimage, fee } => PaymentLookup::Succeeded {
            preimage: *preimage,
            fee: *fee,
        },
        PayOutcome::Failed(reason) => PaymentLookup::Failed(*reason),
    }
}

/// Where a send goes.
enum Destination {
    /// One of our invoices, paid through our own node.
    OwnInvoice { amount: Msat },
    /// A keysend to our own node.
    OwnKeysend {
        preimage: Preimage,
        amount: Msat,
        custom_records: CustomRecords,
    },
    /// Out into the (simulated) network, following the script.
    Scripted { preimage: Preimage },
    /// Fails without consulting the script.
    Fail(FailureReason),
}

/// The deterministic scripted backend. Share it through an `Arc`; every method takes `&self`.
pub struct ScriptedBackend {
    network: Network,
    secp: Secp256k1<All>,
    node_key: SecretKey,
    node_pubkey: NodePubkey,
    carol_key: SecretKey,
    carol_pubkey: NodePubkey,
    state: Mutex<State>,
    /// State file of a persistent backend ([`ScriptedBackend::open`]).
    path: Option<PathBuf>,
    /// Woken whenever an event is appended.
    events_notify: Notify,
    /// Woken whenever an in-flight payment is completed or released.
    payments_notify: Notify,
    /// What [`NodeInfo::list_channels`] reports: set by tests ([`ScriptedBackend::set_channels`]);
    /// a simulation has no channels of its own. Not persisted.
    channels: Mutex<Vec<satchel_lightning::ChannelInfo>>,
    /// What [`NodeInfo::node_stats`] reports (set by tests; nothing by default).
    stats: Mutex<NodeStats>,
}

impl fmt::Debug for ScriptedBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptedBackend")
            .field("network", &self.network)
            .field("pubkey", &self.node_pubkey)
            .finish_non_exhaustive()
    }
}

/// Derives a valid secret key from `sha256(label || seed [|| counter])`.
fn derive_key(label: &[u8], seed: &[u8; 32]) -> SecretKey {
    let mut counter: u32 = 0;
    loop {
        let mut h = Sha256::new();
        h.update(label);
        h.update(seed);
        if counter > 0 {
            h.update(counter.to_be_bytes());
        }
        let bytes: [u8; 32] = h.finalize().into();
        // Fails only for zero or a value >= the curve order (probability ~2^-128).
        if let Ok(key) = SecretKey::from_slice(&bytes) {
            return key;
        }
        counter = counter.wrapping_add(1);
    }
}

fn node_pubkey(secp: &Secp256k1<All>, key: &SecretKey) -> NodePubkey {
    NodePubkey(PublicKey::from_secret_key(secp, key).serialize())
}

/// Cuts a description to what BOLT11 can carry, on a character boundary.
fn truncate_description(memo: &str) -> String {
    let mut end = memo.len().min(MAX_DESCRIPTION_BYTES);
    while !memo.is_char_boundary(end) {
        end -= 1;
    }
    memo[..end].to_owned()
}

fn now_duration() -> Duration {
    Duration::from_secs(u64::try_from(now_secs()).unwrap_or(0))
}

impl ScriptedBackend {
    /// A backend on `network` whose node key is `sha256("satchel-scripted-node" || seed)` and
    /// whose simulated peer "carol" has key `sha256("satchel-scripted-carol" || seed)`.
    pub fn new(network: Network, seed: [u8; 32]) -> ScriptedBackend {
        let secp = Secp256k1::new();
        let node_key = derive_key(b"satchel-scripted-node", &seed);
        let carol_key = derive_key(b"satchel-scripted-carol", &seed);
        ScriptedBackend {
            network,
            node_pubkey: node_pubkey(&secp, &node_key),
            carol_pubkey: node_pubkey(&secp, &carol_key),
            secp,
            node_key,
            carol_key,
            state: Mutex::new(State::default()),
            path: None,
            events_notify: Notify::new(),
            payments_notify: Notify::new(),
            channels: Mutex::new(Vec::new()),
            stats: Mutex::new(NodeStats::default()),
        }
    }

    /// Sets the channels [`NodeInfo::list_channels`] reports (for operator-console tests).
    pub fn set_channels(&self, channels: Vec<satchel_lightning::ChannelInfo>) {
        *self.channels.lock().unwrap_or_else(|e| e.into_inner()) = channels;
    }

    /// Like [`ScriptedBackend::new`], but the node keeps its state in the JSON file `path`:
    /// loaded now if it exists, rewritten atomically after every change (see the module docs).
    /// Fails if the file cannot be read or parsed, or belongs to a node with another seed.
    pub fn open(
        network: Network,
        seed: [u8; 32],
        path: PathBuf,
    ) -> Result<ScriptedBackend, std::io::Error> {
        let mut backend = ScriptedBackend::new(network, seed);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let state = persist::decode(&bytes, backend.node_pubkey, network)
                    .map_err(|e| invalid_data(format!("{}: {e}", path.display())))?;
                backend.state = Mutex::new(state);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                persist::write_atomic(
                    &path,
                    &persist::encode(&State::default(), backend.node_pubkey)?,
                )?;
            }
            Err(e) => return Err(e),
        }
        backend.path = Some(path);
        Ok(backend)
    }

    /// The state file, for a backend made by [`ScriptedBackend::open`].
    pub fn state_path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `st` to the state file (persistent backends only). Called with the lock held so
    /// that writes happen in the order of the changes.
    fn save(&self, st: &State) -> Result<(), std::io::Error> {
        match &self.path {
            Some(path) => persist::write_atomic(path, &persist::encode(st, self.node_pubkey)?),
            None => Ok(()),
        }
    }

    /// [`ScriptedBackend::save`] for changes whose callers cannot be told about a failure.
    fn save_or_log(&self, st: &State) {
        if let Err(e) = self.save(st) {
            tracing::error!(error = %e, "scripted node: cannot write its state file");
        }
    }

    /// Payment hashes the node has in flight (pending, unknown or hanging).
    pub fn in_flight_payments(&self) -> Vec<PaymentHash> {
        let st = self.lock();
        let mut v: Vec<PaymentHash> = st
            .payments
            .iter()
            .filter(|(_, p)| p.state == PayOutcome::InFlight)
            .map(|(h, _)| *h)
            .collect();
        v.sort_by_key(|h| h.0);
        v
    }

    /// Our node id (the payee of our invoices).
    pub fn pubkey(&self) -> NodePubkey {
        self.node_pubkey
    }

    /// The network this backend runs on.
    pub fn network(&self) -> Network {
        self.network
    }

    /// The outcome of payments that have no script of their own. Initially
    /// `Script::Succeed { fee: Msat::ZERO }`.
    pub fn set_default_script(&self, s: Script) {
        let mut st = self.lock();
        st.default_script = Some(s);
        self.save_or_log(&st);
    }

    /// The outcome of the next send of `hash` (consumed by that send; later sends use the
    /// default unless scripted again).
    pub fn script(&self, hash: PaymentHash, s: Script) {
        let mut st = self.lock();
        st.scripts.insert(hash, s);
        self.save_or_log(&st);
    }

    /// Resolves an in-flight payment (pending, unknown or hanging) and wakes a `pay` call blocked
    /// on it. Does nothing if the payment was never sent or is already resolved. A success whose
    /// fee exceeds the payment's fee limit becomes a `NoRoute` failure.
    pub fn complete(&self, hash: PaymentHash, c: Completion) {
        {
            let mut st = self.lock();
            let Some(p) = st.payments.get_mut(&hash) else {
                return;
            };
            if p.state != PayOutcome::InFlight {
                return;
            }
            p.state = match c {
                Completion::Succeed { fee } => succeed(p.success_preimage, fee, p.fee_limit),
                Completion::Fail(reason) => PayOutcome::Failed(reason),
            };
            p.plan = None;
            p.hanging = false;
            self.save_or_log(&st);
        }
        self.payments_notify.notify_waiters();
    }

    /// Lets an in-flight payment proceed as scripted: [`Script::PendingThenSucceed`] succeeds
    /// with its fee, [`Script::Hang`] applies its `then` and unblocks the waiting `pay` call,
    /// [`Script::Unknown`] stays in flight (a hanging `pay` returns `InFlight`). Returns `false`
    /// if no payment with this hash is in flight.
    pub fn release(&self, hash: PaymentHash) -> bool {
        {
            let mut st = self.lock();
            let Some(p) = st.payments.get_mut(&hash) else {
                return false;
            };
            if p.state != PayOutcome::InFlight {
                return false;
            }
            if let Some(plan) = p.plan.take() {
                let r = resolve(plan, p.success_preimage, p.fee_limit);
                p.state = r.state;
                p.plan = r.plan;
            }
            p.hanging = false;
            self.save_or_log(&st);
        }
        self.payments_notify.notify_waiters();
        true
    }

    /// How many times `pay` actually sent `hash` (idempotent replays are not counted).
    pub fn pay_count(&self, hash: PaymentHash) -> usize {
        self.lock().payments.get(&hash).map_or(0, |p| p.sends)
    }

    /// Builds and signs an invoice.
    fn build_invoice(
        &self,
        key: &SecretKey,
        hash: PaymentHash,
        amount: Option<Msat>,
        description: Bolt11InvoiceDescription,
        timestamp: Duration,
        expiry_secs: u32,
    ) -> Result<Bolt11, String> {
        let mut builder = InvoiceBuilder::new(Currency::from(self.network.to_bitcoin()));
        if let Some(a) = amount {
            builder = builder.amount_milli_satoshis(a.as_msat());
        }
        let invoice = builder
            .invoice_description(description)
            .payment_hash(sha256::Hash::from_byte_array(hash.0))
            .duration_since_epoch(timestamp)
            .min_final_cltv_expiry_delta(u64::from(SCRIPTED_CLTV_DELTA))
            .payment_secret(PaymentSecret(rand::random()))
            .basic_mpp()
            .expiry_time(Duration::from_secs(u64::from(expiry_secs)))
            .build_signed(|msg| self.secp.sign_ecdsa_recoverable(msg, key))
            .map_err(|e| e.to_string())?;
        Ok(Bolt11::from_invoice(invoice))
    }

    /// An invoice from carol (another node on our network) for a fresh random preimage, with the
    /// current time as timestamp. Payments to it follow scripts; success reveals the returned
    /// preimage. A memo longer than BOLT11 allows (639 bytes) is truncated.
    pub fn external_invoice(
        &self,
        amount: Option<Msat>,
        memo: &str,
        expiry_secs: u32,
    ) -> (Bolt11, Preimage) {
        self.external_invoice_inner(amount, memo, now_duration(), expiry_secs)
    }

    /// Like [`ScriptedBackend::external_invoice`] with an explicit creation time (unix seconds),
    /// e.g. to make an already expired invoice.
    pub fn external_invoice_at(
        &self,
        amount: Option<Msat>,
        memo: &str,
        timestamp_secs: u64,
        expiry_secs: u32,
    ) -> Bolt11 {
        self.external_invoice_inner(
            amount,
            memo,
            Duration::from_secs(timestamp_secs),
            expiry_secs,
        )
        .0
    }

    fn external_invoice_inner(
        &self,
        amount: Option<Msat>,
        memo: &str,
        timestamp: Duration,
        expiry_secs: u32,
    ) -> (Bolt11, Preimage) {
        let preimage = Preimage::random();
        let hash = preimage.hash();
        // Inputs are sanitised so that building cannot fail: the description fits, the
        // timestamp is within BOLT11's 35 bits, the amount (at most 21M BTC) fits in pico-BTC.
        let timestamp = timestamp.min(Duration::from_secs(lightning_invoice::MAX_TIMESTAMP));
        let description = Description::new(truncate_description(memo))
            .map(Bolt11InvoiceDescription::Direct)
            .unwrap_or_else(|_| Bolt11InvoiceDescription::Direct(Description::empty()));
        let bolt11 = match self.build_invoice(
            &self.carol_key,
            hash,
            amount,
            description,
            timestamp,
            expiry_secs,
        ) {
            Ok(b) => b,
            Err(e) => unreachable!("sanitised invoice inputs failed to build: {e}"),
        };
        let mut st = self.lock();
        st.external.insert(hash, preimage);
        self.save_or_log(&st);
        (bolt11, preimage)
    }

    /// Like [`ScriptedBackend::external_invoice`], but committing to `description_hash` (`h`)
    /// instead of a description: what an LNURL-pay service hands out (LUD-06).
    pub fn external_invoice_hashed(
        &self,
        amount: Option<Msat>,
        description_hash: [u8; 32],
        expiry_secs: u32,
    ) -> (Bolt11, Preimage) {
        let preimage = Preimage::random();
        let hash = preimage.hash();
        let description = Bolt11InvoiceDescription::Hash(lightning_invoice::Sha256(
            sha256::Hash::from_byte_array(description_hash),
        ));
        let bolt11 = match self.build_invoice(
            &self.carol_key,
            hash,
            amount,
            description,
            now_duration(),
            expiry_secs,
        ) {
            Ok(b) => b,
            Err(e) => unreachable!("sanitised invoice inputs failed to build: {e}"),
        };
        let mut st = self.lock();
        st.external.insert(hash, preimage);
        self.save_or_log(&st);
        (bolt11, preimage)
    }

    /// An invoice signed by carol's key that carries `hash`, e.g. the hash of one of *our*
    /// invoices (to check that a payer re-wrapping our hash can never make us pay ourselves over
    /// the network). Carol does not know the preimage: paying it on the node fails.
    pub fn external_invoice_with_hash(
        &self,
        hash: PaymentHash,
        amount: Option<Msat>,
        memo: &str,
    ) -> Bolt11 {
        let description = Description::new(truncate_description(memo))
            .map(Bolt11InvoiceDescription::Direct)
            .unwrap_or_else(|_| Bolt11InvoiceDescription::Direct(Description::empty()));
        match self.build_invoice(
            &self.carol_key,
            hash,
            amount,
            description,
            now_duration(),
            3600,
        ) {
            Ok(b) => b,
            Err(e) => unreachable!("sanitised invoice inputs failed to build: {e}"),
        }
    }

    /// Carol's node id (the payee of [`ScriptedBackend::external_invoice`] invoices).
    pub fn external_pubkey(&self) -> NodePubkey {
        self.carol_pubkey
    }

    /// An outside payer pays one of our invoices. The invoice must be ours, open and not expired;
    /// `amount` defaults to the invoice amount (required for an amountless invoice) and may not
    /// be below it. Marks the invoice settled and appends an [`IncomingKind::InvoiceSettled`]
    /// event; anything else is `Err(LnError::Rejected)`.
    pub fn pay_our_invoice(
        &self,
        bolt11: &Bolt11,
        amount: Option<Msat>,
    ) -> Result<Preimage, LnError> {
        let result = {
            let mut st = self.lock();
            let r = st.settle_own(bolt11.payment_hash(), amount, now_secs());
            if r.is_ok() {
                self.save_or_log(&st);
            }
            r
        };
        match result {
            Ok(preimage) => {
                self.events_notify.notify_waiters();
                Ok(preimage)
            }
            Err(e) => Err(LnError::Rejected(e)),
        }
    }

    /// An outside node keysends `amount` to us with a random preimage: appends an
    /// [`IncomingKind::KeysendReceived`] event and returns its payment hash.
    pub fn receive_keysend(&self, amount: Msat, custom_records: CustomRecords) -> PaymentHash {
        self.receive_keysend_with(Preimage::random(), amount, custom_records)
    }

    /// Like [`ScriptedBackend::receive_keysend`] with a preimage chosen by the sender.
    pub fn receive_keysend_with(
        &self,
        preimage: Preimage,
        amount: Msat,
        custom_records: CustomRecords,
    ) -> PaymentHash {
        let hash = preimage.hash();
        {
            let mut st = self.lock();
            st.push_event(IncomingKind::KeysendReceived {
                payment_hash: hash,
                preimage,
                amount_received: amount,
                custom_records,
                settled_at_secs: now_secs(),
            });
            self.save_or_log(&st);
        }
        self.events_notify.notify_waiters();
        hash
    }

    /// Number of incoming events so far (= the seq of the latest one).
    pub fn events_len(&self) -> usize {
        self.lock().events.len()
    }

    /// Validates a payment request and decides where it goes. `Err` means rejected before
    /// sending.
    fn destination(&self, st: &State, target: &PayTarget) -> Result<Destination, LnError> {
        match target {
            PayTarget::Bolt11 { invoice, amount } => {
                if invoice.network() != self.network {
                    return Err(LnError::Rejected(format!(
                        "invoice is for {}, this node runs on {}",
                        invoice.network().name(),
                        self.network.name()
                    )));
                }
                if amount.is_zero() {
                    return Err(LnError::Rejected("amount must be positive".to_owned()));
                }
                if invoice.amount().is_some_and(|a| *amount < a) {
                    return Err(LnError::Rejected(
                        "amount below the invoice amount".to_owned(),
                    ));
                }
                let hash = invoice.payment_hash();
                let payee = invoice.payee();
                if payee == self.node_pubkey {
                    return Ok(Destination::OwnInvoice { amount: *amount });
                }
                match st.external.get(&hash) {
                    Some(preimage) if payee == self.carol_pubkey => {
                        if invoice.is_expired_at(now_secs()) {
                            Ok(Destination::Fail(FailureReason::IncorrectPaymentDetails))
                        } else {
                            Ok(Destination::Scripted {
                                preimage: *preimage,
                            })
                        }
                    }
                    _ => Ok(Destination::Fail(FailureReason::NoRoute)),
                }
            }
            PayTarget::Keysend {
                dest,
                amount,
                preimage,
                custom_records,
            } => {
                satchel_lightning::check_keysend(*amount, custom_records)?;
                if *dest == self.node_pubkey {
                    Ok(Destination::OwnKeysend {
                        preimage: *preimage,
                        amount: *amount,
                        custom_records: custom_records.clone(),
                    })
                } else {
                    Ok(Destination::Scripted {
                        preimage: *preimage,
                    })
                }
            }
        }
    }

    /// `Some(state)` once a hanging payment stopped hanging.
    fn hang_finished(&self, hash: PaymentHash) -> Option<PayOutcome> {
        let st = self.lock();
        match st.payments.get(&hash) {
            Some(p) if p.hanging => None,
            Some(p) => Some(p.state.clone()),
            None => Some(PayOutcome::InFlight),
        }
    }

    /// Blocks until the hanging payment is completed/released or `timeout` passes.
    async fn wait_hanging(&self, hash: PaymentHash, timeout: Duration) -> PayOutcome {
        let deadline = tokio::time::Instant::now().checked_add(timeout);
        loop {
            let notified = self.payments_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(state) = self.hang_finished(hash) {
                return state;
            }
            match deadline {
                Some(d) => {
                    if tokio::time::timeout_at(d, notified).await.is_err() {
                        break;
                    }
                }
                None => notified.await,
            }
        }
        let mut st = self.lock();
        match st.payments.get_mut(&hash) {
            Some(p) => {
                p.hanging = false;
                p.state.clone()
            }
            None => PayOutcome::InFlight,
        }
    }

    fn collect_events(&self, after: u64, limit: usize) -> Vec<IncomingEvent> {
        let st = self.lock();
        // seq n is at index n - 1, so events after `after` start at index `after`.
        let start = usize::try_from(after)
            .unwrap_or(usize::MAX)
            .min(st.events.len());
        st.events[start..].iter().take(limit).cloned().collect()
    }

    fn route_to(&self, dest: NodePubkey, amount: Msat) -> Route {
        Route {
            total_time_lock: SCRIPTED_CLTV_DELTA,
            total_fees: Msat::ZERO,
            total_amt: amount,
            hops: vec![RouteHop {
                chan_id: SCRIPTED_CHAN_ID,
                chan_capacity_sats: 0,
                amt_to_forward: amount,
                fee: Msat::ZERO,
                expiry: SCRIPTED_CLTV_DELTA,
                pub_key: dest,
            }],
        }
    }
}

/// The scripted backend has no on-chain wallet: every operator on-chain command is
/// "not supported by this backend".
impl satchel_lightning::NodeAdmin for ScriptedBackend {}

#[async_trait]
impl NodeInfo for ScriptedBackend {
    async fn node_info(&self) -> Result<NodeInfoData, LnError> {
        Ok(NodeInfoData {
            pubkey: self.node_pubkey,
            network: self.network,
            alias: SCRIPTED_ALIAS.to_owned(),
        })
    }

    /// The channels a test set. (`node_status` keeps the default: a simulation has no chain,
    /// so height and sync state are unknown.)
    async fn list_channels(&self) -> Result<Vec<satchel_lightning::ChannelInfo>, LnError> {
        Ok(self
            .channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone())
    }

    async fn node_stats(&self) -> Result<NodeStats, LnError> {
        Ok(self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

impl ScriptedBackend {
    /// Sets what [`NodeInfo::node_stats`] reports (the scripted node has no channels or chain
    /// of its own; tests script them).
    pub fn set_node_stats(&self, stats: NodeStats) {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner()) = stats;
    }
}

#[async_trait]
impl Invoices for ScriptedBackend {
    async fn create_invoice(&self, req: NewInvoice) -> Result<Bolt11, LnError> {
        let hash = req.preimage.hash();
        if let Some(existing) = self.lock().invoices.get(&hash) {
            return Ok(existing.bolt11.clone());
        }
        let description = match req.description_hash {
            Some(h) => Bolt11InvoiceDescription::Hash(lightning_invoice::Sha256(
                sha256::Hash::from_byte_array(h),
            )),
            None => Bolt11InvoiceDescription::Direct(
                Description::new(req.memo).map_err(|e| LnError::Rejected(e.to_string()))?,
            ),
        };
        let bolt11 = self
            .build_invoice(
                &self.node_key,
                hash,
                req.amount,
                description,
                now_duration(),
                req.expiry_secs,
            )
            .map_err(LnError::Rejected)?;
        let mut st = self.lock();
        // A concurrent call with the same preimage may have won the race: keep its invoice.
        if let Some(existing) = st.invoices.get(&hash) {
            return Ok(existing.bolt11.clone());
        }
        st.invoices.insert(
            hash,
            OwnInvoice {
                bolt11: bolt11.clone(),
                preimage: req.preimage,
                state: InvoiceState::Open,
            },
        );
        // The invoice must survive a restart before anyone can be given it.
        self.save(&st)
            .map_err(|e| LnError::Transport(format!("scripted node state file: {e}")))?;
        Ok(bolt11)
    }

    async fn cancel_invoice(&self, hash: PaymentHash) -> Result<(), LnError> {
        let mut st = self.lock();
        if let Some(inv) = st.invoices.get_mut(&hash)
            && inv.state == InvoiceState::Open
        {
            inv.state = InvoiceState::Canceled;
            self.save(&st)
                .map_err(|e| LnError::Transport(format!("scripted node state file: {e}")))?;
        }
        Ok(())
    }

    /// Cancels under the node's lock, the same lock an outside payment settles under: one
    /// step, like LND's cancel of a settled invoice failing.
    async fn take_for_internal(&self, hash: PaymentHash) -> Result<InternalTake, LnError> {
        let mut st = self.lock();
        match st.invoices.get_mut(&hash) {
            Some(inv) if matches!(inv.state, InvoiceState::Settled { .. }) => {
                Ok(InternalTake::NodePaid)
            }
            Some(inv) if inv.state == InvoiceState::Open => {
                inv.state = InvoiceState::Canceled;
                self.save(&st)
                    .map_err(|e| LnError::Transport(format!("scripted node state file: {e}")))?;
                Ok(InternalTake::Taken)
            }
            _ => Ok(InternalTake::Taken),
        }
    }

    async fn lookup_invoice(&self, hash: PaymentHash) -> Result<Option<InvoiceState>, LnError> {
        let now = now_secs();
        Ok(self.lock().invoices.get(&hash).map(|inv| match inv.state {
            InvoiceState::Open if inv.bolt11.is_expired_at(now) => InvoiceState::Canceled,
            ref s => s.clone(),
        }))
    }
}

#[async_trait]
impl Payments for ScriptedBackend {
    async fn pay(&self, req: PayRequest) -> Result<PayOutcome, LnError> {
        let hash = req.target.payment_hash();
        let (resolution, event, saved) = {
            let mut st = self.lock();
            if let Some(p) = st.payments.get(&hash)
                && !matches!(p.state, PayOutcome::Failed(_))
            {
                // Idempotency: in flight or succeeded, never send twice.
                return Ok(p.state.clone());
            }
            let destination = self.destination(&st, &req.target)?;
            let now = now_secs();
            let (resolution, success_preimage, event) = match destination {
                Destination::OwnInvoice { amount } => {
                    match st.settle_own(hash, Some(amount), now) {
                        Ok(preimage) => (
                            resolve(
                                Script::Succeed { fee: Msat::ZERO },
                                Some(preimage),
                                req.fee_limit,
                            ),
                            Some(preimage),
                            true,
                        ),
                        Err(_) => (
                            resolve(
                                Script::Fail(FailureReason::IncorrectPaymentDetails),
                                None,
                                req.fee_limit,
                            ),
                            None,
                            false,
                        ),
                    }
                }
                Destination::OwnKeysend {
                    preimage,
                    amount,
                    custom_records,
                } => {
                    st.push_event(IncomingKind::KeysendReceived {
                        payment_hash: hash,
                        preimage,
                        amount_received: amount,
                        custom_records,
                        settled_at_secs: now,
                    });
                    (
                        resolve(
                            Script::Succeed { fee: Msat::ZERO },
                            Some(preimage),
                            req.fee_limit,
                        ),
                        Some(preimage),
                        true,
                    )
                }
                Destination::Scripted { preimage } => {
                    let script = match st.scripts.remove(&hash) {
                        Some(s) => s,
                        None => st.default_script(),
                    };
                    (
                        resolve(script, Some(preimage), req.fee_limit),
                        Some(preimage),
                        false,
                    )
                }
                Destination::Fail(reason) => (
                    resolve(Script::Fail(reason), None, req.fee_limit),
                    None,
                    false,
                ),
            };
            let record = st.payments.entry(hash).or_insert(PaymentRecord {
                state: PayOutcome::InFlight,
                success_preimage: None,
                fee_limit: req.fee_limit,
                plan: None,
                hanging: false,
                sends: 0,
            });
            record.state = resolution.state.clone();
            record.success_preimage = success_preimage;
            record.fee_limit = req.fee_limit;
            record.plan = resolution.plan.clone();
            record.hanging = resolution.hang;
            record.sends = record.sends.saturating_add(1);
            // Recorded before anyone hears of the outcome; if that fails the caller cannot know
            // the outcome (the in-memory node did send).
            let saved = self.save(&st);
            (resolution, event, saved)
        };
        if event {
            self.events_notify.notify_waiters();
        }
        if let Err(e) = saved {
            return Err(LnError::Transport(format!("scripted node state file: {e}")));
        }
        if resolution.transport_error {
            return Err(LnError::Transport("scripted transport error".to_owned()));
        }
        if resolution.hang {
            return Ok(self.wait_hanging(hash, req.timeout).await);
        }
        Ok(resolution.state)
    }

    async fn lookup_payment(&self, hash: PaymentHash) -> Result<PaymentLookup, LnError> {
        Ok(self
            .lock()
            .payments
            .get(&hash)
            .map_or(PaymentLookup::NotFound, |p| lookup_of(&p.state)))
    }
}

#[async_trait]
impl InvoiceEvents for ScriptedBackend {
    async fn events_after(
        &self,
        after: u64,
        limit: usize,
        wait: Duration,
    ) -> Result<Vec<IncomingEvent>, LnError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let notified = self.events_notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let events = self.collect_events(after, limit);
        if !events.is_empty() || wait.is_zero() {
            return Ok(events);
        }
        // Either woken by a new event or timed out: check once more either way.
        let _ = tokio::time::timeout(wait, notified).await;
        Ok(self.collect_events(after, limit))
    }
}

#[async_trait]
impl Routes for ScriptedBackend {
    async fn query_routes(&self, dest: NodePubkey, amount: Msat) -> Result<Vec<Route>, LnError> {
        if dest == self.node_pubkey || dest == self.carol_pubkey {
            Ok(vec![self.route_to(dest, amount)])
        } else {
            Ok(Vec::new())
        }
    }
}

fn invalid_data(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

/// The state file: a serde mirror of [`State`] with hex strings and msat integers.
mod persist {
    use std::collections::BTreeMap;
    use std::io::Write as _;
    use std::path::Path;

    use serde::{Deserialize, Serialize};

    use super::*;

    const VERSION: u32 = 1;

    #[derive(Serialize, Deserialize)]
    struct File {
        version: u32,
        /// The node the file belongs to (guards against a changed seed).
        node_pubkey: String,
        default_script: Option<ScriptP>,
        scripts: BTreeMap<String, ScriptP>,
        invoices: BTreeMap<String, InvoiceP>,
        external: BTreeMap<String, String>,
        payments: BTreeMap<String, PaymentP>,
        events: Vec<EventP>,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(tag = "kind", rename_all = "snake_case")]
    enum ScriptP {
        Succeed { fee_msat: u64 },
        Fail { reason: String },
        PendingThenSucceed { fee_msat: u64 },
        Unknown,
        TransportError { then: Box<ScriptP> },
        Hang { then: Box<ScriptP> },
    }

    #[derive(Serialize, Deserialize)]
    struct InvoiceP {
        bolt11: String,
        preimage: String,
        state: InvoiceStateP,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(tag = "kind", rename_all = "snake_case")]
    enum InvoiceStateP {
        Open,
        Settled {
            amount_received_msat: u64,
            settled_at_secs: i64,
        },
        Canceled,
    }

    #[derive(Serialize, Deserialize)]
    struct PaymentP {
        state: OutcomeP,
        success_preimage: Option<String>,
        fee_limit_msat: u64,
        plan: Option<ScriptP>,
        sends: usize,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(tag = "kind", rename_all = "snake_case")]
    enum OutcomeP {
        InFlight,
        Succeeded { preimage: String, fee_msat: u64 },
        Failed { reason: String },
    }

    #[derive(Serialize, Deserialize)]
    struct EventP {
        seq: u64,
        #[serde(flatten)]
        kind: EventKindP,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(tag = "kind", rename_all = "snake_case")]
    enum EventKindP {
        InvoiceSettled {
            payment_hash: String,
            amount_received_msat: u64,
            settled_at_secs: i64,
        },
        KeysendReceived {
            payment_hash: String,
            preimage: String,
            amount_received_msat: u64,
            /// TLV type (decimal) -> hex value.
            custom_records: BTreeMap<String, String>,
            settled_at_secs: i64,
        },
    }

    // ------------------------------------------------------------------ encode

    fn script_p(s: &Script) -> ScriptP {
        match s {
            Script::Succeed { fee } => ScriptP::Succeed {
                fee_msat: fee.as_msat(),
            },
            Script::Fail(r) => ScriptP::Fail {
                reason: r.lnd_name().to_owned(),
            },
            Script::PendingThenSucceed { fee } => ScriptP::PendingThenSucceed {
                fee_msat: fee.as_msat(),
            },
            Script::Unknown => ScriptP::Unknown,
            Script::TransportError { then } => ScriptP::TransportError {
                then: Box::new(script_p(then)),
            },
            Script::Hang { then } => ScriptP::Hang {
                then: Box::new(script_p(then)),
            },
        }
    }

    fn outcome_p(o: &PayOutcome) -> OutcomeP {
        match o {
            PayOutcome::InFlight => OutcomeP::InFlight,
            PayOutcome::Succeeded { preimage, fee } => OutcomeP::Succeeded {
                preimage: preimage.to_hex(),
                fee_msat: fee.as_msat(),
            },
            PayOutcome::Failed(r) => OutcomeP::Failed {
                reason: r.lnd_name().to_owned(),
            },
        }
    }

    fn event_p(e: &IncomingEvent) -> EventP {
        let kind = match &e.kind {
            IncomingKind::InvoiceSettled {
                payment_hash,
                amount_received,
                settled_at_secs,
            } => EventKindP::InvoiceSettled {
                payment_hash: payment_hash.to_hex(),
                amount_received_msat: amount_received.as_msat(),
                settled_at_secs: *settled_at_secs,
            },
            IncomingKind::KeysendReceived {
                payment_hash,
                preimage,
                amount_received,
                custom_records,
                settled_at_secs,
            } => EventKindP::KeysendReceived {
                payment_hash: payment_hash.to_hex(),
                preimage: preimage.to_hex(),
                amount_received_msat: amount_received.as_msat(),
                custom_records: custom_records
                    .0
                    .iter()
                    .map(|(t, v)| (t.to_string(), hex::encode(v)))
                    .collect(),
                settled_at_secs: *settled_at_secs,
            },
        };
        EventP { seq: e.seq, kind }
    }

    /// The state file's bytes.
    pub(super) fn encode(st: &State, node: NodePubkey) -> Result<Vec<u8>, std::io::Error> {
        let file = File {
            version: VERSION,
            node_pubkey: node.to_hex(),
            default_script: st.default_script.as_ref().map(script_p),
            scripts: st
                .scripts
                .iter()
                .map(|(h, s)| (h.to_hex(), script_p(s)))
                .collect(),
            invoices: st
                .invoices
                .iter()
                .map(|(h, inv)| {
                    let state = match &inv.state {
                        InvoiceState::Open => InvoiceStateP::Open,
                        InvoiceState::Settled {
                            amount_received,
                            settled_at_secs,
                        } => InvoiceStateP::Settled {
                            amount_received_msat: amount_received.as_msat(),
                            settled_at_secs: *settled_at_secs,
                        },
                        InvoiceState::Canceled => InvoiceStateP::Canceled,
                    };
                    (
                        h.to_hex(),
                        InvoiceP {
                            bolt11: inv.bolt11.as_str().to_owned(),
                            preimage: inv.preimage.to_hex(),
                            state,
                        },
                    )
                })
                .collect(),
            external: st
                .external
                .iter()
                .map(|(h, p)| (h.to_hex(), p.to_hex()))
                .collect(),
            payments: st
                .payments
                .iter()
                .map(|(h, p)| {
                    (
                        h.to_hex(),
                        PaymentP {
                            state: outcome_p(&p.state),
                            success_preimage: p.success_preimage.map(|x| x.to_hex()),
                            fee_limit_msat: p.fee_limit.as_msat(),
                            plan: p.plan.as_ref().map(script_p),
                            sends: p.sends,
                        },
                    )
                })
                .collect(),
            events: st.events.iter().map(event_p).collect(),
        };
        serde_json::to_vec_pretty(&file).map_err(|e| invalid_data(e.to_string()))
    }

    // ------------------------------------------------------------------ decode

    fn msat(v: u64) -> Result<Msat, String> {
        Msat::from_msat(v).map_err(|e| e.to_string())
    }

    fn hash(s: &str) -> Result<PaymentHash, String> {
        PaymentHash::from_hex(s).ok_or_else(|| format!("bad payment hash {s:?}"))
    }

    fn preimage(s: &str) -> Result<Preimage, String> {
        Preimage::from_hex(s).ok_or_else(|| format!("bad preimage {s:?}"))
    }

    fn reason(s: &str) -> Result<FailureReason, String> {
        FailureReason::from_lnd_name(s).ok_or_else(|| format!("bad failure reason {s:?}"))
    }

    fn script(s: &ScriptP) -> Result<Script, String> {
        Ok(match s {
            ScriptP::Succeed { fee_msat } => Script::Succeed {
                fee: msat(*fee_msat)?,
            },
            ScriptP::Fail { reason: r } => Script::Fail(reason(r)?),
            ScriptP::PendingThenSucceed { fee_msat } => Script::PendingThenSucceed {
                fee: msat(*fee_msat)?,
            },
            ScriptP::Unknown => Script::Unknown,
            ScriptP::TransportError { then } => Script::TransportError {
                then: Box::new(script(then)?),
            },
            ScriptP::Hang { then } => Script::Hang {
                then: Box::new(script(then)?),
            },
        })
    }

    fn outcome(o: &OutcomeP) -> Result<PayOutcome, String> {
        Ok(match o {
            OutcomeP::InFlight => PayOutcome::InFlight,
            OutcomeP::Succeeded {
                preimage: p,
                fee_msat,
            } => PayOutcome::Succeeded {
                preimage: preimage(p)?,
                fee: msat(*fee_msat)?,
            },
            OutcomeP::Failed { reason: r } => PayOutcome::Failed(reason(r)?),
        })
    }

    fn event(e: &EventP) -> Result<IncomingEvent, String> {
        let kind = match &e.kind {
            EventKindP::InvoiceSettled {
                payment_hash,
                amount_received_msat,
                settled_at_secs,
            } => IncomingKind::InvoiceSettled {
                payment_hash: hash(payment_hash)?,
                amount_received: msat(*amount_received_msat)?,
                settled_at_secs: *settled_at_secs,
            },
            EventKindP::KeysendReceived {
                payment_hash,
                preimage: p,
                amount_received_msat,
                custom_records,
                settled_at_secs,
            } => {
                let mut records = CustomRecords::default();
                for (t, v) in custom_records {
                    let t: u64 = t.parse().map_err(|_| format!("bad record type {t:?}"))?;
                    let bytes =
                        hex::decode(v).map_err(|e| format!("bad record value {v:?}: {e}"))?;
                    records.0.insert(t, bytes);
                }
                IncomingKind::KeysendReceived {
                    payment_hash: hash(payment_hash)?,
                    preimage: preimage(p)?,
                    amount_received: msat(*amount_received_msat)?,
                    custom_records: records,
                    settled_at_secs: *settled_at_secs,
                }
            }
        };
        Ok(IncomingEvent { seq: e.seq, kind })
    }

    /// Rebuilds the state from the file's bytes.
    pub(super) fn decode(
        bytes: &[u8],
        node: NodePubkey,
        network: Network,
    ) -> Result<State, String> {
        let file: File = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if file.version != VERSION {
            return Err(format!("unsupported state file version {}", file.version));
        }
        if file.node_pubkey != node.to_hex() {
            return Err(format!(
                "the state file belongs to node {}, not {} (different seed)",
                file.node_pubkey,
                node.to_hex()
            ));
        }
        let mut st = State {
            default_script: file.default_script.as_ref().map(script).transpose()?,
            ..State::default()
        };
        for (h, s) in &file.scripts {
            st.scripts.insert(hash(h)?, script(s)?);
        }
        for (h, inv) in &file.invoices {
            let bolt11 = Bolt11::parse(&inv.bolt11).map_err(|e| e.to_string())?;
            if bolt11.network() != network {
                return Err(format!(
                    "invoice {h} is for {}, this node runs on {}",
                    bolt11.network().name(),
                    network.name()
                ));
            }
            let state = match &inv.state {
                InvoiceStateP::Open => InvoiceState::Open,
                InvoiceStateP::Settled {
                    amount_received_msat,
                    settled_at_secs,
                } => InvoiceState::Settled {
                    amount_received: msat(*amount_received_msat)?,
                    settled_at_secs: *settled_at_secs,
                },
                InvoiceStateP::Canceled => InvoiceState::Canceled,
            };
            st.invoices.insert(
                hash(h)?,
                OwnInvoice {
                    bolt11,
                    preimage: preimage(&inv.preimage)?,
                    state,
                },
            );
        }
        for (h, p) in &file.external {
            st.external.insert(hash(h)?, preimage(p)?);
        }
        for (h, p) in &file.payments {
            st.payments.insert(
                hash(h)?,
                PaymentRecord {
                    state: outcome(&p.state)?,
                    success_preimage: p.success_preimage.as_deref().map(preimage).transpose()?,
                    fee_limit: msat(p.fee_limit_msat)?,
                    plan: p.plan.as_ref().map(script).transpose()?,
                    // No `pay` call survives a restart.
                    hanging: false,
                    sends: p.sends,
                },
            );
        }
        for (i, e) in file.events.iter().enumerate() {
            let ev = event(e)?;
            if usize::try_from(ev.seq).ok() != i.checked_add(1) {
                return Err(format!(
                    "event {} out of sequence at position {}",
                    ev.seq,
                    i + 1
                ));
            }
            st.events.push(ev);
        }
        Ok(st)
    }

    /// Replaces `path` with `bytes` atomically: write a temporary file next to it, fsync it,
    /// rename it over `path`, fsync the directory.
    pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), std::io::Error> {
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp_name);
        {
            let mut f = satchel_lightning::fs_private::create_private_file(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Makes the rename durable; not every platform can open a directory.
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}
