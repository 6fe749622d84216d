//! The backend conformance suite: one set of scenarios, written only against the traits of this
//! crate, that every Lightning backend must pass (the scripted simulation and the embedded LDK
//! node today; LND or Core Lightning later).
//!
//! A backend is plugged in through a [`Harness`]: it hands out the backend under test, the
//! outside world around it ([`DevnetControl`]), and the few knobs where backends legitimately
//! differ (whether the peers are distinct nodes, whether the node enforces the incoming keysend
//! policy, whether it survives a restart, how a simulation is told what the network would do).
//!
//! The scenarios assume the development network's topology:
//!
//! ```text
//!  alice ──▶ us ──▶ hub ──▶ carol
//! ```
//!
//! `alice` pays us and is paid by us directly (no routing fee); `carol` is reached only through
//! `hub`, which charges [`HUB_FEE_BASE_MSAT`] + [`HUB_FEE_PPM`] ([`hub_fee`]). A simulated backend
//! follows the same rules through [`Harness::before_send`].
//!
//! Every scenario is a `pub async fn` returning `Err(message)` on the first broken expectation
//! (it never panics), and can be called on its own. [`run_all`] runs them in order and collects
//! a [`Report`]. Scenarios leave the backend usable for the next one; they never assume a fresh
//! node (cursors are taken from the node's current state).
//!
//! A backend that keeps state ([`Harness::supports_restart`]) is restarted after *every*
//! scenario of [`run_all`], not only in `restart_midway`: what the scenarios did must look the
//! same afterwards ([`restart_keeps_state`]: our events, every invoice and payment the suite
//! touched, what the peers received, channel balances). State that only breaks on reading it
//! back (a record written by one scenario that the next start cannot load) is found right after
//! the scenario that wrote it.
//!
//! Scenarios use tokio timers: run them inside a tokio runtime (a multi-threaded one for backends
//! that drive their own tasks, such as the LDK devnet).

use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use satchel_domain::{
    Bolt11, CustomRecords, FailureReason, KEYSEND_PREIMAGE_TLV, Msat, Network, NodePubkey,
    PaymentHash, Preimage,
};
use sha2::{Digest, Sha256};

use crate::{
    DevnetControl, IncomingEvent, IncomingKind, IncomingPolicy, InvoiceEvents, InvoiceState,
    Invoices, LightningBackend, LnError, NewInvoice, NodeInfo, NodeInfoData, PayOutcome,
    PayRequest, PayTarget, PaymentLookup, Payments, Route, Routes,
};

/// The hub's base forwarding fee, msat.
pub const HUB_FEE_BASE_MSAT: u64 = 1000;
/// The hub's proportional forwarding fee, parts per million.
pub const HUB_FEE_PPM: u64 = 1000;

/// Longest time the suite waits for something asynchronous (an event, a balance to settle).
const WAIT: Duration = Duration::from_secs(10);
/// How long the suite watches for something that must *not* happen (a duplicate event).
const QUIET: Duration = Duration::from_millis(300);
/// Timeout of the payments the suite sends.
const PAY_TIMEOUT: Duration = Duration::from_secs(30);
/// An amount no devnet channel can carry (0.2 BTC; our channels hold 10M sat each).
const TOO_LARGE_SATS: u64 = 20_000_000;
/// The routing TLV naming a wallet (LNPay).
const WALLET_TLV: u64 = 696_969;

/// The hub's fee for forwarding `amount`: `1000 msat + 1000 ppm` (rounded down, as LDK does).
pub fn hub_fee(amount: Msat) -> Result<Msat, String> {
    let proportional = amount
        .as_msat()
        .checked_mul(HUB_FEE_PPM)
        .map(|x| x / 1_000_000)
        .ok_or("fee overflow")?;
    msat(HUB_FEE_BASE_MSAT.saturating_add(proportional))
}

/// Where a payment the suite is about to send goes, in the devnet's topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendPath {
    /// To `alice` over our direct channel: no routing fee.
    Direct,
    /// To `carol` through the hub: the hub's fee ([`hub_fee`] of the amount).
    ViaHub,
    /// More than our channels can carry: must fail (`InsufficientBalance` or `NoRoute`).
    Unpayable,
}

impl SendPath {
    /// The routing fee a payment of `amount` along this path costs (`None` for an unpayable
    /// one).
    pub fn fee(self, amount: Msat) -> Result<Option<Msat>, String> {
        match self {
            SendPath::Direct => Ok(Some(Msat::ZERO)),
            SendPath::ViaHub => hub_fee(amount).map(Some),
            SendPath::Unpayable => Ok(None),
        }
    }
}

/// A backend under test plus its outside world.
#[async_trait]
pub trait Harness: Send + Sync {
    /// Name used in reports (`scripted`, `ldk-devnet`).
    fn name(&self) -> String;

    /// The backend under test. Fetched again after [`Harness::restart`]: a restart may replace
    /// it.
    fn backend(&self) -> Arc<dyn LightningBackend>;

    /// The outside world (`alice`, `hub`, `carol`).
    fn devnet(&self) -> Arc<dyn DevnetControl>;

    /// Whether the backend keeps its state across [`Harness::restart`] (an in-memory
    /// simulation does not). [`run_all`] restarts such a backend after every scenario.
    fn supports_restart(&self) -> bool;

    /// Stops the backend and starts it again on the same state: everything the harness
    /// persists (the node, and the devnet peers where they are part of the harness). The
    /// keysend policy last set with [`Harness::set_policy`] stays in force.
    async fn restart(&mut self) -> Result<(), String>;

    /// Sets the incoming keysend policy: `true` accepts every keysend, `false` refuses all.
    /// Backends that do not consult a policy ignore it (see
    /// [`Harness::enforces_keysend_policy`]).
    fn set_policy(&self, accept: bool);

    /// Whether the node refuses keysends the policy refuses (the scripted simulation accepts
    /// everything).
    fn enforces_keysend_policy(&self) -> bool {
        true
    }

    /// Whether `alice`, `hub` and `carol` are distinct nodes (the scripted simulation has one
    /// outside node answering to all three names).
    fn distinct_peers(&self) -> bool {
        true
    }

    /// Called just before the suite asks the backend to pay `hash` (`amount` delivered along
    /// `path`). A simulated backend scripts what the devnet would do (route fee, or a failure
    /// for an unpayable amount); a backend on a real network does nothing.
    fn before_send(&self, _hash: PaymentHash, _amount: Msat, _path: SendPath) {}

    /// How many times the backend actually sent `hash` (idempotent replays not counted), if it
    /// can tell.
    fn send_count(&self, _hash: PaymentHash) -> Option<u64> {
        None
    }

    /// The incoming event stream of peer `name`, if the outside world can show what a peer
    /// received (the scripted simulation cannot).
    fn peer_events(&self, _name: &str) -> Option<Arc<dyn InvoiceEvents>> {
        None
    }

    /// Whether a payment that failed before anything left the node (no route, amount too large)
    /// may look up `NotFound` after a restart instead of `Failed`: a node that keeps no record
    /// of an attempt it never made (Core Lightning), with the failure remembered only in the
    /// adapter's memory. Harmless to Satchel: a failure it booked is never asked about again,
    /// and one it did not book is re-sent, which `pay`'s idempotency makes safe.
    fn forgets_unsent_failures_on_restart(&self) -> bool {
        false
    }
}

/// A switchable [`IncomingPolicy`] for harnesses: accepts every keysend while on, refuses all
/// while off. Share one through an `Arc` and flip it with [`SwitchPolicy::set`].
#[derive(Debug)]
pub struct SwitchPolicy {
    accept: AtomicBool,
}

impl SwitchPolicy {
    /// A policy that starts accepting (`true`) or refusing.
    pub fn new(accept: bool) -> SwitchPolicy {
        SwitchPolicy {
            accept: AtomicBool::new(accept),
        }
    }

    /// Accept (`true`) or refuse from now on.
    pub fn set(&self, accept: bool) {
        self.accept.store(accept, Ordering::SeqCst);
    }

    /// The current setting.
    pub fn get(&self) -> bool {
        self.accept.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl IncomingPolicy for SwitchPolicy {
    async fn accept_keysend(&self, _records: &CustomRecords) -> bool {
        self.get()
    }
}

// ------------------------------------------------------------------------------------ report

/// How a scenario ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every expectation held.
    Passed,
    /// The first broken expectation.
    Failed(String),
    /// Not run, and why (not supported by this backend, or a known bug).
    Skipped(String),
}

/// One scenario's result.
#[derive(Debug, Clone)]
pub struct ScenarioResult {
    /// Scenario name (see [`SCENARIOS`]).
    pub name: &'static str,
    /// How it ended.
    pub outcome: Outcome,
    /// How long it took.
    pub elapsed: Duration,
}

/// The results of a run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The harness's name.
    pub backend: String,
    /// One entry per scenario, in the order run.
    pub results: Vec<ScenarioResult>,
}

impl Report {
    /// The failed scenarios with their messages.
    pub fn failures(&self) -> Vec<(&'static str, &str)> {
        self.results
            .iter()
            .filter_map(|r| match &r.outcome {
                Outcome::Failed(m) => Some((r.name, m.as_str())),
                _ => None,
            })
            .collect()
    }

    /// Names of the scenarios that passed.
    pub fn passed(&self) -> Vec<&'static str> {
        self.results
            .iter()
            .filter(|r| r.outcome == Outcome::Passed)
            .map(|r| r.name)
            .collect()
    }

    /// Names of the scenarios that were skipped.
    pub fn skipped(&self) -> Vec<&'static str> {
        self.results
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Skipped(_)))
            .map(|r| r.name)
            .collect()
    }

    /// Whether nothing failed.
    pub fn is_ok(&self) -> bool {
        self.failures().is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "conformance of {}:", self.backend)?;
        for r in &self.results {
            let ms = r.elapsed.as_millis();
            match &r.outcome {
                Outcome::Passed => writeln!(f, "  ok      {:<36} {ms:>6} ms", r.name)?,
                Outcome::Failed(m) => writeln!(f, "  FAILED  {:<36} {ms:>6} ms: {m}", r.name)?,
                Outcome::Skipped(why) => writeln!(f, "  skipped {:<36}           {why}", r.name)?,
            }
        }
        let total: Duration = self.results.iter().map(|r| r.elapsed).sum();
        write!(
            f,
            "  {} passed, {} failed, {} skipped in {} ms",
            self.passed().len(),
            self.failures().len(),
            self.skipped().len(),
            total.as_millis()
        )
    }
}

// ------------------------------------------------------------------------------------ running

/// Every scenario, in the order [`run_all`] runs them. `restart_midway` sits in the middle so
/// that the scenarios after it run on a restarted node.
pub const SCENARIOS: [&str; 16] = [
    "node_identity",
    "invoice_create_and_lookup",
    "outside_pays_our_invoice",
    "amountless_invoice",
    "cancelled_invoice_is_unpayable",
    "pay_alice_direct",
    "pay_carol_via_hub",
    "restart_midway",
    "pay_twice_is_idempotent",
    "keysend_out_with_custom_records",
    "keysend_custom_record_types",
    "keysend_in_follows_policy",
    "fee_limit_too_low",
    "amount_too_large",
    "unknown_hash",
    "query_routes",
];

/// Runs the scenario called `name` (one of [`SCENARIOS`]).
pub async fn run_one<H: Harness + ?Sized>(h: &mut H, name: &str) -> Result<(), String> {
    match name {
        "node_identity" => node_identity(h).await,
        "invoice_create_and_lookup" => invoice_create_and_lookup(h).await,
        "outside_pays_our_invoice" => outside_pays_our_invoice(h).await,
        "amountless_invoice" => amountless_invoice(h).await,
        "cancelled_invoice_is_unpayable" => cancelled_invoice_is_unpayable(h).await,
        "pay_alice_direct" => pay_alice_direct(h).await,
        "pay_carol_via_hub" => pay_carol_via_hub(h).await,
        "restart_midway" => restart_midway(h).await,
        "pay_twice_is_idempotent" => pay_twice_is_idempotent(h).await,
        "keysend_out_with_custom_records" => keysend_out_with_custom_records(h).await,
        "keysend_custom_record_types" => keysend_custom_record_types(h).await,
        "keysend_in_follows_policy" => keysend_in_follows_policy(h).await,
        "fee_limit_too_low" => fee_limit_too_low(h).await,
        "amount_too_large" => amount_too_large(h).await,
        "unknown_hash" => unknown_hash(h).await,
        "query_routes" => query_routes(h).await,
        other => Err(format!("no scenario called {other:?}")),
    }
}

/// Runs every scenario in order and collects the results. `Ok` if none failed, otherwise `Err`
/// with the rendered report.
pub async fn run_all<H: Harness + ?Sized>(h: &mut H) -> Result<Report, String> {
    run_all_except(h, &[]).await
}

/// [`run_all`], skipping the scenarios listed in `known` (name, reason, e.g. a known bug that
/// has its own ignored test).
pub async fn run_all_except<H: Harness + ?Sized>(
    h: &mut H,
    known: &[(&str, &str)],
) -> Result<Report, String> {
    let mut report = Report {
        backend: h.name(),
        results: Vec::new(),
    };
    // Every hash the scenarios touch, so that each restart can check all of them.
    let mut tracked = Tracked::new(h);
    let h = &mut tracked;
    for name in SCENARIOS {
        let started = tokio::time::Instant::now();
        let outcome = if let Some((_, why)) = known.iter().find(|(n, _)| *n == name) {
            Outcome::Skipped((*why).to_owned())
        } else if name == "restart_midway" && !h.supports_restart() {
            Outcome::Skipped(format!("{} keeps no state across a restart", h.name()))
        } else {
            match run_one(h, name).await {
                Ok(()) if h.supports_restart() => match restart_keeps_state(h).await {
                    Ok(()) => Outcome::Passed,
                    Err(m) => Outcome::Failed(format!("restart after the scenario: {m}")),
                },
                Ok(()) => Outcome::Passed,
                Err(m) => Outcome::Failed(m),
            }
        };
        report.results.push(ScenarioResult {
            name,
            outcome,
            elapsed: started.elapsed(),
        });
    }
    if report.is_ok() {
        Ok(report)
    } else {
        Err(report.to_string())
    }
}

// ------------------------------------------------------------------------------------ restarts

/// The hashes scenarios touched: invoices they created, cancelled or looked up, payments they
/// sent or looked up.
#[derive(Debug, Default)]
struct Seen {
    invoices: BTreeSet<PaymentHash>,
    payments: BTreeSet<PaymentHash>,
}

fn lock_seen(seen: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(|e| e.into_inner())
}

/// A backend that notes every hash it is asked about, then forwards.
struct Recorder {
    inner: Arc<dyn LightningBackend>,
    seen: Arc<Mutex<Seen>>,
}

impl Recorder {
    fn invoice(&self, hash: PaymentHash) {
        lock_seen(&self.seen).invoices.insert(hash);
    }

    fn payment(&self, hash: PaymentHash) {
        lock_seen(&self.seen).payments.insert(hash);
    }
}

#[async_trait]
impl NodeInfo for Recorder {
    async fn node_info(&self) -> Result<NodeInfoData, LnError> {
        self.inner.node_info().await
    }

    async fn node_stats(&self) -> Result<crate::NodeStats, LnError> {
        self.inner.node_stats().await
    }
}

#[async_trait]
impl Invoices for Recorder {
    async fn create_invoice(&self, req: NewInvoice) -> Result<Bolt11, LnError> {
        self.invoice(req.preimage.hash());
        self.inner.create_invoice(req).await
    }

    async fn cancel_invoice(&self, hash: PaymentHash) -> Result<(), LnError> {
        self.invoice(hash);
        self.inner.cancel_invoice(hash).await
    }

    async fn cancel_invoices(&self, hashes: &[PaymentHash]) -> Result<(), LnError> {
        for hash in hashes {
            self.invoice(*hash);
        }
        self.inner.cancel_invoices(hashes).await
    }

    async fn lookup_invoice(&self, hash: PaymentHash) -> Result<Option<InvoiceState>, LnError> {
        self.invoice(hash);
        self.inner.lookup_invoice(hash).await
    }
}

#[async_trait]
impl Payments for Recorder {
    async fn pay(&self, req: PayRequest) -> Result<PayOutcome, LnError> {
        self.payment(req.target.payment_hash());
        self.inner.pay(req).await
    }

    async fn lookup_payment(&self, hash: PaymentHash) -> Result<PaymentLookup, LnError> {
        self.payment(hash);
        self.inner.lookup_payment(hash).await
    }
}

#[async_trait]
impl InvoiceEvents for Recorder {
    async fn events_after(
        &self,
        after: u64,
        limit: usize,
        wait: Duration,
    ) -> Result<Vec<IncomingEvent>, LnError> {
        self.inner.events_after(after, limit, wait).await
    }
}

#[async_trait]
impl Routes for Recorder {
    async fn query_routes(&self, dest: NodePubkey, amount: Msat) -> Result<Vec<Route>, LnError> {
        self.inner.query_routes(dest, amount).await
    }
}

/// The harness under test, with its backend wrapped in a [`Recorder`].
struct Tracked<'a, H: Harness + ?Sized> {
    inner: &'a mut H,
    seen: Arc<Mutex<Seen>>,
}

impl<'a, H: Harness + ?Sized> Tracked<'a, H> {
    fn new(inner: &'a mut H) -> Tracked<'a, H> {
        Tracked {
            inner,
            seen: Arc::default(),
        }
    }
}

#[async_trait]
impl<H: Harness + ?Sized> Harness for Tracked<'_, H> {
    fn name(&self) -> String {
        self.inner.name()
    }

    fn backend(&self) -> Arc<dyn LightningBackend> {
        Arc::new(Recorder {
            inner: self.inner.backend(),
            seen: Arc::clone(&self.seen),
        })
    }

    fn devnet(&self) -> Arc<dyn DevnetControl> {
        self.inner.devnet()
    }

    fn supports_restart(&self) -> bool {
        self.inner.supports_restart()
    }

    async fn restart(&mut self) -> Result<(), String> {
        self.inner.restart().await
    }

    fn set_policy(&self, accept: bool) {
        self.inner.set_policy(accept);
    }

    fn enforces_keysend_policy(&self) -> bool {
        self.inner.enforces_keysend_policy()
    }

    fn distinct_peers(&self) -> bool {
        self.inner.distinct_peers()
    }

    fn before_send(&self, hash: PaymentHash, amount: Msat, path: SendPath) {
        self.inner.before_send(hash, amount, path);
    }

    fn send_count(&self, hash: PaymentHash) -> Option<u64> {
        self.inner.send_count(hash)
    }

    fn peer_events(&self, name: &str) -> Option<Arc<dyn InvoiceEvents>> {
        self.inner.peer_events(name)
    }

    fn forgets_unsent_failures_on_restart(&self) -> bool {
        self.inner.forgets_unsent_failures_on_restart()
    }
}

/// What a restart must leave exactly as it was.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    /// Our incoming events, from seq 0.
    events: Vec<IncomingEvent>,
    /// Every invoice hash the suite touched, as the backend looks it up.
    invoices: Vec<(PaymentHash, Option<InvoiceState>)>,
    /// Every payment hash the suite touched: the lookup and how often it was sent.
    payments: Vec<(PaymentHash, PaymentLookup, Option<u64>)>,
    /// What each peer received (where the harness can show it), custom records included.
    peer_events: Vec<(&'static str, Vec<IncomingEvent>)>,
    /// The peers' channel balances.
    balances: Balances,
}

async fn snapshot<H: Harness + ?Sized>(h: &H, seen: &Mutex<Seen>) -> Result<Snapshot, String> {
    let (invoice_hashes, payment_hashes) = {
        let seen = lock_seen(seen);
        (seen.invoices.clone(), seen.payments.clone())
    };
    // The inner backend: lookups made here are not the scenarios'.
    let b = h.backend();
    let mut invoices = Vec::with_capacity(invoice_hashes.len());
    for hash in invoice_hashes {
        let state = b.lookup_invoice(hash).await.map_err(ctx("lookup"))?;
        invoices.push((hash, state));
    }
    let mut payments = Vec::with_capacity(payment_hashes.len());
    for hash in payment_hashes {
        let lookup = b
            .lookup_payment(hash)
            .await
            .map_err(ctx("lookup_payment"))?;
        payments.push((hash, lookup, h.send_count(hash)));
    }
    let mut peer_events = Vec::new();
    for name in ["alice", "hub", "carol"] {
        if let Some(events) = h.peer_events(name) {
            peer_events.push((name, all_events(&*events).await?));
        }
    }
    Ok(Snapshot {
        events: all_events(&*b).await?,
        invoices,
        payments,
        peer_events,
        balances: peer_balances(h).await?,
    })
}

/// Restarts the backend and checks that it still sees everything the suite did before, the
/// same way (our events with their seqs, every touched invoice and payment, each peer's
/// received payments with their custom records, channel balances). The state is taken once it
/// stopped moving (HTLCs of the last scenario resolved), and compared until it matches or
/// [`WAIT`] passes (channels take a moment to come back after a restart).
async fn restart_keeps_state<H: Harness + ?Sized>(h: &mut Tracked<'_, H>) -> Result<(), String> {
    let seen = Arc::clone(&h.seen);
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut before = snapshot(&*h.inner, &seen).await?;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let again = snapshot(&*h.inner, &seen).await?;
        if again == before {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "the state never settled before the restart: {before:?} then {again:?}"
            ));
        }
        before = again;
    }
    h.restart().await?;
    let forgets = h.forgets_unsent_failures_on_restart();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut after = snapshot(&*h.inner, &seen).await?;
        if forgets {
            forgive_unsent_failures(&before, &mut after);
        }
        if after == before {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(describe_difference(&before, &after));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// [`Harness::forgets_unsent_failures_on_restart`]: a definite failure that became `NotFound`
/// (sent as often as before) is taken as unchanged.
fn forgive_unsent_failures(before: &Snapshot, after: &mut Snapshot) {
    for (b, a) in before.payments.iter().zip(after.payments.iter_mut()) {
        if b.0 == a.0
            && matches!(b.1, PaymentLookup::Failed(_))
            && a.1 == PaymentLookup::NotFound
            && b.2 == a.2
        {
            a.1 = b.1.clone();
        }
    }
}

/// The parts of two snapshots that differ, for the failure message.
fn describe_difference(before: &Snapshot, after: &Snapshot) -> String {
    let mut out = Vec::new();
    if before.events != after.events {
        out.push(format!(
            "our events: {:?} became {:?}",
            before.events, after.events
        ));
    }
    for (b, a) in before.invoices.iter().zip(&after.invoices) {
        if b != a {
            out.push(format!("invoice {}: {:?} became {:?}", b.0, b.1, a.1));
        }
    }
    for (b, a) in before.payments.iter().zip(&after.payments) {
        if b != a {
            out.push(format!(
                "payment {}: {:?} (sent {:?}) became {:?} (sent {:?})",
                b.0, b.1, b.2, a.1, a.2
            ));
        }
    }
    if before.peer_events != after.peer_events {
        out.push(format!(
            "peer events: {:?} became {:?}",
            before.peer_events, after.peer_events
        ));
    }
    if before.balances != after.balances {
        out.push(format!(
            "peer balances: {:?} became {:?}",
            before.balances, after.balances
        ));
    }
    format!("not the same after the restart: {}", out.join("; "))
}

// ------------------------------------------------------------------------------------ helpers

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

macro_rules! ensure_eq {
    ($got:expr, $want:expr, $($msg:tt)+) => {{
        let (got, want) = (&$got, &$want);
        if got != want {
            let what = format!($($msg)+);
            return Err(format!("{what}: expected {want:?}, got {got:?}"));
        }
    }};
}

fn msat(n: u64) -> Result<Msat, String> {
    Msat::from_msat(n).map_err(|e| format!("bad amount {n} msat: {e}"))
}

fn sats(n: u64) -> Result<Msat, String> {
    Msat::from_sats(n).map_err(|e| format!("bad amount {n} sat: {e}"))
}

fn ctx(what: &'static str) -> impl FnOnce(LnError) -> String {
    move |e| format!("{what}: {e}")
}

fn sha256(preimage: &Preimage) -> [u8; 32] {
    Sha256::digest(preimage.0).into()
}

fn new_invoice(amount: Option<Msat>, memo: &str) -> NewInvoice {
    NewInvoice {
        amount,
        memo: memo.to_owned(),
        description_hash: None,
        expiry_secs: 3600,
        preimage: Preimage::random(),
    }
}

fn pay_bolt11(invoice: &Bolt11, fee_limit: Msat) -> Result<PayRequest, String> {
    let amount = invoice
        .amount()
        .ok_or("the suite pays only invoices with an amount")?;
    Ok(PayRequest {
        target: PayTarget::Bolt11 {
            invoice: invoice.clone(),
            amount,
        },
        fee_limit,
        timeout: PAY_TIMEOUT,
    })
}

fn keysend(
    dest: NodePubkey,
    amount: Msat,
    records: CustomRecords,
    fee_limit: Msat,
) -> (PayRequest, Preimage) {
    let preimage = Preimage::random();
    (
        PayRequest {
            target: PayTarget::Keysend {
                dest,
                amount,
                preimage,
                custom_records: records,
            },
            fee_limit,
            timeout: PAY_TIMEOUT,
        },
        preimage,
    )
}

fn records(pairs: &[(u64, &str)]) -> CustomRecords {
    CustomRecords(
        pairs
            .iter()
            .map(|(t, v)| (*t, v.as_bytes().to_vec()))
            .collect(),
    )
}

/// Pays (after telling the harness where the payment goes).
async fn pay<H: Harness + ?Sized>(
    h: &H,
    req: PayRequest,
    path: SendPath,
) -> Result<PayOutcome, String> {
    h.before_send(req.target.payment_hash(), req.target.amount(), path);
    h.backend().pay(req).await.map_err(ctx("pay"))
}

/// Checks a success: the preimage proves payment and the fee is what the path costs and within
/// the limit. Returns the fee.
fn check_success(
    outcome: &PayOutcome,
    hash: PaymentHash,
    amount: Msat,
    fee_limit: Msat,
    path: SendPath,
    what: &str,
) -> Result<(Preimage, Msat), String> {
    let PayOutcome::Succeeded { preimage, fee } = outcome else {
        return Err(format!("{what}: expected Succeeded, got {outcome:?}"));
    };
    ensure!(
        sha256(preimage) == hash.0,
        "{what}: sha256(preimage) != payment hash {hash}"
    );
    ensure!(
        *fee <= fee_limit,
        "{what}: fee {fee} msat exceeds the limit {fee_limit} msat"
    );
    if let Some(expected) = path.fee(amount)? {
        ensure_eq!(*fee, expected, "{what}: routing fee");
    }
    if path == SendPath::ViaHub {
        ensure!(
            !fee.is_zero(),
            "{what}: a payment through the hub paid no fee"
        );
    }
    Ok((*preimage, *fee))
}

async fn our_pubkey<H: Harness + ?Sized>(h: &H) -> Result<NodePubkey, String> {
    Ok(h.backend()
        .node_info()
        .await
        .map_err(ctx("node_info"))?
        .pubkey)
}

async fn peer_pubkey<H: Harness + ?Sized>(h: &H, name: &str) -> Result<NodePubkey, String> {
    h.devnet()
        .peers()
        .await
        .map_err(ctx("peers"))?
        .into_iter()
        .find(|p| p.name == name)
        .map(|p| p.pubkey)
        .ok_or_else(|| format!("the devnet has no peer {name:?}"))
}

/// Every event of the backend (or of a peer), oldest first.
async fn all_events(b: &dyn InvoiceEvents) -> Result<Vec<IncomingEvent>, String> {
    let mut out: Vec<IncomingEvent> = Vec::new();
    loop {
        let after = out.last().map_or(0, |e| e.seq);
        let page = b
            .events_after(after, 500, Duration::ZERO)
            .await
            .map_err(ctx("events_after"))?;
        if page.is_empty() {
            return Ok(out);
        }
        for e in page {
            ensure!(
                e.seq > out.last().map_or(0, |l| l.seq),
                "event seqs not strictly increasing: {} after {:?}",
                e.seq,
                out.last().map(|l| l.seq)
            );
            out.push(e);
        }
    }
}

async fn last_seq(b: &dyn InvoiceEvents) -> Result<u64, String> {
    Ok(all_events(b).await?.last().map_or(0, |e| e.seq))
}

/// Waits until at least `n` events exist after `after`; returns exactly those (fails if more
/// arrive within a short quiet period).
async fn expect_new_events(
    b: &dyn LightningBackend,
    after: u64,
    n: usize,
) -> Result<Vec<IncomingEvent>, String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut got = Vec::new();
    while got.len() < n {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(format!(
                "expected {n} new event(s) after seq {after}, got {}: {got:?}",
                got.len()
            ));
        }
        got = b
            .events_after(after, 100, deadline - now)
            .await
            .map_err(ctx("events_after"))?;
    }
    tokio::time::sleep(QUIET).await;
    let again = b
        .events_after(after, 100, Duration::ZERO)
        .await
        .map_err(ctx("events_after"))?;
    ensure!(
        again.len() == n,
        "expected exactly {n} new event(s) after seq {after}, got {}: {again:?}",
        again.len()
    );
    ensure_eq!(again, got, "events after seq {after} changed between reads");
    Ok(again)
}

/// Watches for a short while that no event appears after `after`.
async fn expect_no_new_events(
    b: &dyn LightningBackend,
    after: u64,
    what: &str,
) -> Result<(), String> {
    let got = b
        .events_after(after, 100, QUIET)
        .await
        .map_err(ctx("events_after"))?;
    ensure!(
        got.is_empty(),
        "{what}: expected no new event after seq {after}, got {got:?}"
    );
    Ok(())
}

/// The peers' channel balances: (name, outbound msat, inbound msat).
type Balances = Vec<(String, u64, u64)>;

async fn peer_balances<H: Harness + ?Sized>(h: &H) -> Result<Balances, String> {
    Ok(h.devnet()
        .peers()
        .await
        .map_err(ctx("peers"))?
        .into_iter()
        .map(|p| (p.name, p.outbound_msat, p.inbound_msat))
        .collect())
}

/// Peer balances once they stopped moving (HTLCs of earlier payments fully resolved).
async fn settled_balances<H: Harness + ?Sized>(h: &H) -> Result<Balances, String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = peer_balances(h).await?;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = peer_balances(h).await?;
        if now == last {
            return Ok(now);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "peer balances never settled: {last:?} then {now:?}"
            ));
        }
        last = now;
    }
}

/// Waits until the peer balances equal `want`.
async fn expect_balances<H: Harness + ?Sized>(
    h: &H,
    want: &Balances,
    what: &str,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = peer_balances(h).await?;
        if &now == want {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "{what}: peer balances expected {want:?}, got {now:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether the outside world reports channel balances at all.
fn tracks_balances(b: &Balances) -> bool {
    b.iter().any(|(_, out, inb)| *out > 0 || *inb > 0)
}

/// `b` with peer `name`'s outbound raised and inbound lowered by `received` msat.
fn after_receiving(b: &Balances, name: &str, received: u64) -> Result<Balances, String> {
    let mut out = b.clone();
    let entry = out
        .iter_mut()
        .find(|(n, _, _)| n == name)
        .ok_or_else(|| format!("no balances for peer {name:?}"))?;
    entry.1 = entry.1.checked_add(received).ok_or("balance overflow")?;
    entry.2 = entry.2.checked_sub(received).ok_or("balance underflow")?;
    Ok(out)
}

fn check_sends<H: Harness + ?Sized>(
    h: &H,
    hash: PaymentHash,
    want: u64,
    what: &str,
) -> Result<(), String> {
    if let Some(n) = h.send_count(hash) {
        ensure_eq!(n, want, "{what}: times the payment was sent");
    }
    Ok(())
}

/// The KeysendReceived event of `hash` at peer `name`, if the harness can observe the peer.
async fn peer_keysend<H: Harness + ?Sized>(
    h: &H,
    name: &str,
    hash: PaymentHash,
) -> Result<Option<(Msat, CustomRecords, Preimage)>, String> {
    let Some(events) = h.peer_events(name) else {
        return Ok(None);
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut after = 0;
        loop {
            let page = events
                .events_after(after, 500, Duration::ZERO)
                .await
                .map_err(ctx("peer events_after"))?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for e in page {
                if let IncomingKind::KeysendReceived {
                    payment_hash,
                    preimage,
                    amount_received,
                    custom_records,
                    ..
                } = e.kind
                    && payment_hash == hash
                {
                    return Ok(Some((amount_received, custom_records, preimage)));
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("{name} never received the keysend {hash}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ------------------------------------------------------------------------------------ scenarios

/// Our node's identity and the peers: regtest, three named peers, none of them us; the peers
/// are distinct nodes where the harness says so, otherwise one node under three names.
pub async fn node_identity<H: Harness + ?Sized>(h: &mut H) -> Result<(), String> {
    let info = h.backend().node_info().await.map_err(ctx("node_info"))?;
    ensure_eq!(info.network, Network::Regtest, "network");
    let again = h.backend().node_info().await.map_err(ctx("node_info"))?;
    ensure_eq!(again, info, "node_info is stable");
    let peers = h.devnet().peers().await.map_err(ctx("peers"))?;
    let names: Vec<&str> = peers.iter().map(|p| p.name.as_str()).collect();
    for want in ["alice", "hub", "carol"] {
        ensure!(names.contains(&want), "peer {want} missing from {names:?}");
    }
    for p in &peers {
        ensure!(
            p.pubkey != info.pubkey,
            "peer {} has our own pubkey {}",
            p.name,
            info.pubkey
        );
    }
    let mut keys: Vec<NodePubkey> = peers.iter().map(|p| p.pubkey).collect();
    keys.sort();
    keys.dedup();
    if h.distinct_peers() {
        ensure_eq!(keys.len(), peers.len(), "distinct peer pubkeys");
    } else {
        ensure_eq!(keys.len(), 1, "one simulated outside node");
    }
    let unknown = h
        .devnet()
        .outside_invoice("mallory", Some(sats(1)?), "x")
        .await;
    ensure!(
        matches!(unknown, Err(LnError::Rejected(_))),
        "an unknown peer name must be Rejected, got {unknown:?}"
    );
    Ok(())
}

/// Invoices we issue: amount, description or description hash, payee = our node, lookup Open;
/// creating twice with one preimage gives one invoice; unknown hashes look up as `None`.
pub async fn invoice_create_and_lookup<H: Harness + ?Sized>(h: &mut H) -> Result<(), String> {
    let b = h.backend();
    let me = our_pubkey(h).await?;

    let req = new_invoice(Some(sats(1234)?), "conformance: coffee");
    let hash = req.preimage.hash();
    let inv = b.create_invoice(req.clone()).await.map_err(ctx("create"))?;
    ensure!(
        inv.as_str().starts_with("lnbcrt"),
        "a regtest invoice starts with lnbcrt: {}",
        inv.as_str()
    );
    ensure_eq!(inv.network(), Network::Regtest, "invoice network");
    ensure_eq!(inv.payment_hash(), hash, "payment hash = sha256(preimage)");
    ensure_eq!(inv.amount(), Some(sats(1234)?), "invoice amount");
    ensure_eq!(
        inv.description(),
        Some("conformance: coffee".to_owned()),
        "description"
    );
    ensure_eq!(inv.description_hash(), None, "description hash");
    ensure_eq!(inv.payee(), me, "payee");
    ensure!(
        inv.expires_at_secs() - inv.timestamp_secs() == 3600,
        "expiry: expected 3600 s, got {}",
        inv.expires_at_secs() - inv.timestamp_secs()
    );
    ensure_eq!(
        b.lookup_invoice(hash).await.map_err(ctx("lookup"))?,
        Some(InvoiceState::Open),
        "new invoice state"
    );
    let twice = b.create_invoice(req).await;
    match twice {
        Ok(again) => ensure_eq!(again.as_str(), inv.as_str(), "creating twice"),
        Err(LnError::Rejected(_)) => {}
        Err(e) => return Err(format!("creating twice: {e}")),
    }

    let dh: [u8; 32] = Sha256::digest(b"{\"lnurl\":\"metadata\"}").into();
    let mut req = new_invoice(Some(sats(10)?), "ignored when a hash is given");
    req.description_hash = Some(dh);
    let inv = b.create_invoice(req).await.map_err(ctx("create"))?;
    ensure_eq!(inv.description_hash(), Some(dh), "description hash");
    ensure_eq!(inv.description(), None, "description with a hash");
    ensure_eq!(inv.payee(), me, "payee");

    let req = new_invoice(None, "amountless");
    let hash = req.preimage.hash();
    let inv = b.create_invoice(req).await.map_err(ctx("create"))?;
    ensure_eq!(inv.amount(), None, "amountless invoice amount");
    ensure_eq!(
        b.lookup_invoice(hash).await.map_err(ctx("lookup"))?,
        Some(InvoiceState::Open),
        "amountless invoice state"
    );

    let unknown = Preimage::random().hash();
    ensure_eq!(
        b.lookup_invoice(unknown).await.map_err(ctx("lookup"))?,
        None,
        "unknown invoice"
    );
    Ok(())
}

/// Alice pays our invoice: one `InvoiceSettled` event with the amount, lookup `Settled`, the
/// stream replays identically from 0 and from older cursors, a second payment is refused and
/// books nothing.
pub async fn outside_pays_our_invoice<H: Harness + ?Sized>(h: &mut H) -> Result<(), String> {
    let b = h.backend();
    let cursor = last_seq(&*b).await?;
    let before_all = all_events(&*b).await?;
    let amount = sats(1000)?;
    let inv = b
        .create_invoice(new_invoice(Some(amount), "conformance: paid by alice"))
        .await
        .map_err(ctx("create"))?;
    let hash = inv.payment_hash();
    let out = h
        .devnet()
        .outside_pay("alice", &inv, None)
        .await
        .map_err(ctx("alice pays"))?;
    match &out {
        PayOutcome::Succeeded { preimage, .. } => {
            ensure!(
                sha256(preimage) == hash.0,
                "alice's preimage does not match"
            )
        }
        other => return Err(format!("alice paying our invoice: {other:?}")),
    }
    let events = expect_new_events(&*b, cursor, 1).await?;
    let seq = events[0].seq;
    ensure!(seq > cursor, "new event seq {seq} not after {cursor}");
    match &events[0].kind {
        IncomingKind::InvoiceSettled {
            payment_hash,
            amount_received,
            settled_at_secs,
        } => {
            ensure_eq!(*payment_hash, hash, "settled hash");
            ensure_eq!(*amount_received, amount, "settled amount");
            ensure!(*settled_at_secs > 0, "settled_at_secs {settled_at_secs}");
        }
        other => return Err(format!("expected InvoiceSettled, got {other:?}")),
    }
    match b.lookup_invoice(hash).await.map_err(ctx("lookup"))? {
        Some(InvoiceState::Settled {
            amount_received, ..
        }) => ensure_eq!(amount_received, amount, "lookup amount_received"),
        other => {
            return Err(format!(
                "lookup after payment: expected Settled, got {other:?}"
            ));
        }
    }

    // Replays: from 0, from the old cursor, and nothing after the new event.
    let replay = all_events(&*b).await?;
    let mut want = before_all;
    want.extend(events.iter().cloned());
    ensure_eq!(replay, want, "replay from cursor 0");
    let from_cursor = b
        .events_after(cursor, 100, Duration::ZERO)
        .await
        .map_err(ctx("events_after"))?;
    ensure_eq!(from_cursor, events, "replay from the old cursor");
    let limited = b
        .events_after(0, 1, Duration::ZERO)
        .await
        .map_err(ctx("events_after"))?;
    ensure_eq!(limited.len(), 1, "limit 1");
    ensure_eq!(
        b.events_after(0, 0, Duration::ZERO)
            .await
            .map_err(ctx("events_after"))?
            .len(),
        0,
        "limit 0"
    );
    // An empty stream waits up to `wait`, then answers empty.
    let t = tokio::time::Instant::now();
    let none = b
        .events_after(seq, 10, Duration::from_millis(200))
        .await
        .map_err(ctx("events_after"))?;
    ensure!(none.is_empty(), "events after the last one: {none:?}");
    ensure!(
        t.elapsed() >= Duration::from_millis(150),
        "events_after returned after {:?} instead of waiting",
        t.elapsed()
    );

    // Paying it again (from another peer) is refused and books nothing.
    let again = h.devnet().outside_pay("hub", &inv, None).await;
    ensure!(
        !matches!(again, Ok(PayOutcome::Succeeded { .. })),
        "a settled invoice was paid again: {again:?}"
    );
    expect_no_new_events(&*b, seq, "second payment of a settled invoice").await?;
    Ok(())
}

/// An amountless invoice: refused without an amount, settled with the amount the payer chose.
pub async fn amountless_invoice<H: Harness + ?Sized>(h: &mut H) -> Result<(), String> {
    let b = h.backend();
    let cursor = last_seq(&*b).await?;
    let inv = b
        .create_invoice(new_invoice(None, "conformance: amountless"))
        .await
        .map_err(ctx("create"))?;
    let no_amount = h.devnet().outside_pay("alice", &inv, None).await;
    ensure!(
        matches!(
            no_amount,
            Err(LnError::Rejected(_)) | Ok(PayOutcome::Failed(_))
        ),
        "paying an amountless invoice without an amount: {no_amount:?}"
    );
    let amount = sats(1234)?;
    let out = h
        .devnet()
        .outside_pay("alice", &inv, Some(amount))
        .await
        .map_err(ctx("alice pays"))?;
    ensure!(
        matches!(out, PayOutcome::Succeeded { .. }),
        "alice paying {amount} msat: {out:?}"
    );
    let events = expect_new_events(&*b, cursor, 1).await?;
    match &events[0].kind {
        IncomingKind::InvoiceSettled {
            payment_hash,
            amount_received,
            ..
        } => {
            ensure_eq!(*payment_hash, inv.payment_hash(), "settled hash");
            ensure_eq!(*amount_received, amount, "amount received");
        }
        other => return Err(format!("expected InvoiceSettled, got {other:?}")),
    }
    match b
        .lookup_invoice(inv.payment_hash())
        .await
        .map_err(ctx("lookup"))?
    {
        Some(InvoiceState::Settled {
            amount_received, ..
        }) => ensure_eq!(amount_received, amount, "lookup amount_received"),
        other => return Err(format!("expected Settled, got {other:?}")),
    }
    Ok(())
}

/// A cancelled invoice looks up `Canceled`, cannot be paid and books nothing; cancelling twice
/// or cancelling an unknown hash is fine.
pub async fn cancelled_invoice_is_unpayable<H: Harness + ?Sized>(h: &mut H) -> Result<(), String> {
    let b = h.backend();
    let cursor = last_seq(&*b).await?;
    let inv = b
        .create_invoice(new_invoice(Some(sats(500)?), "conformance: cancel me"))
        .await
        .map_err(ctx("create"))?;
    let hash = inv.payment_hash();
    b.cancel_invoice(hash).await.map_err(ctx("cancel"))?;
    b.cancel_invoice(hash).await.map_err(ctx("cancel twice"))?;
    ensure_eq!(
        b.lookup_invoice(hash).await.map_err(ctx("lookup"))?,
        Some(InvoiceState::Canceled),
        "cancelled invoice state"
    );
    let out = h.devnet().outside_pay("alice", &inv, None).await;
    ensure!(
        !matches!(out, Ok(PayOutcome::Succeeded { .. })),
        "a cancelled invoice was paid: {out:?}"
    );
    expect_no_new_events(&*b, cursor, "payment of a cancelled invoice").await?;
    ensure_eq!(
        b.lookup_invoice(hash).await.map_err(ctx("lookup"))?,
        Some(InvoiceState::Canceled),
        "cancelled invoice state after the attempt"
    );
    b.cancel_invoice(Preimage::random().hash())
        .await
        .map_err(ctx("cancel unknown"))?;
    Ok(())
}

/// We pay alice's invoice over our direct channel: succeeded, no routing fee, the preimage
/// hashes to the payment hash, lookup agrees.
pub async fn pay_alice_direct<H: Harness + ?Sized>(h: &mut H) -> Result<(), String> {
    let amount = sats(2000)?;
    let inv = h
        .devnet()
        .outside_invoice("alice", Some(amount), "conformance: to alice")
        .await
        .map_err(ctx("alice's invoice"))?;
    if h.distinct_peers() {
        ensure_eq!(
            inv.payee(),
            peer_pubkey(h, "alice").await?,
            "alice's invoice payee"
        );
    }
    let limit = sats(10)?;
    let out = pay(h, pay_bolt11(&inv, limit)?, SendPath::Direct).await?;
    let (preimage, fee) = check_success(
        &out,
        inv.payment_hash(),
        amount,
        limit,
        SendPath::Direct,
        "paying alice",
    )?;
    ensure_eq!(
        h.backend()
            .lookup_payment(inv.payment_hash())
            .await
            .map_err(ctx("lookup_payment"))?,
        PaymentLookup::Succeeded { preimage, fee },
        "lookup after paying alice"
    );
    check_sends(h, inv.payment_hash(), 1, "paying alice")
}

/// We pay carol's invoice through the hub: the fee is the hub's (> 0, within the limit), the
/// preimage is carol's, lookup agrees, and carol got exactly the amount.
pub async fn pay_carol_via_hub<H: Harness + ?Sized>(h: &mut H) -> Result<(), String> {
    let amount = sats(10_000)?;
    let inv = h
        .devnet()
        .outside_invoice("carol", Some(amount), "conformance: to carol")
        .await
        .map_err(ctx("carol's invoice"))?;
    ensure_eq!(
        inv.payee(),
        peer_pubkey(h, "carol").await?,
        "carol's invoice payee"
    );
    let before = settled_balances(h).await?;
    let limit = sats(100)?;
    let out = pay(h, pay_bolt11(&inv, limit)?, SendPath::ViaHub).await?;
    let (preimage, fee) = check_success(
        &out,
        inv.payment_hash(),
        amount,
        limit,
        SendPath::ViaHub,
        "paying carol",
    )?;
    ensure_eq!(
        h.backend()
            .lookup_payment(inv.payment_hash())
            .await
            .map_err(ctx("lookup_payment"))?,
        PaymentLookup::Succeeded { preimage, fee },
        "lookup after paying carol"
    );
    check_sends(h, inv.payment_hash(), 1, "paying carol")?;
    if tracks_balances(&before) {
        // Carol got the amount, the hub earned the fee.
        let want = after_receiving(&before, "carol", amount.as_msat())?;
        let want = after_receiving(&want, "hub", fee.as_msat())?;
        expect_balances(h, &want, "carol received the amount, the hub the fee").await?;
    }
    Ok(())
}

/// Paying the same invoice twice sends once: the second call reports the first payment's
/// state, and nothing more leaves the node.
pub async fn pay_twice_is_idempotent<H: Harness + ?Sized>(h: &mut H) -> Result<(), String> {
    let amount = sats(3000)?;
    let inv = h
        .devnet()
        .outside_invoice("carol", Some(amount), "conformance: twice")
        .await
        .map_err(ctx("carol's invoice"))?;
    let limit = sats(100)?;
    let first = pay(h, pay_bolt11(&inv, limit)?, SendPath::ViaHub).await?;
    check_success(
        &first,
        inv.payment_hash(),
        amount,
        limit,
        SendPath::ViaHub,
        "first payment",
    )?;
    let after_first = settled_balances(h).await?;
    let second = pay(h, pay_bolt11(&inv, limit)?, SendPath::ViaHub).await?;
    ensure_eq!(second, first, "second pay of the same hash");
    // A third attempt with another fee limit changes nothing either.
    let third = pay(h, pay_bolt11(&inv, sats(1)?)?, SendPath::ViaHub).await?;
    ensure_eq!(third, first, "third pay of the same hash");
    check_sends(h, inv.payment_hash(), 1, "paying twice")?;
    let lookup = h
        .backend()
        .lookup_payment(inv.payment_hash())
        .await
        .map_err(ctx("lookup_payment"))?;
    match (&first, &lookup) {
        (
            PayOutcome::Succeeded { preimage, fee },
            PaymentLookup::Succeeded {
                preimage: p2,
                fee: f2,
            },
        ) if preimage == p2 && fee == f2 => {}
        _ => return Err(format!("lookup {lookup:?} disagrees with {first:?}")),
    }
    tokio::time::sleep(QUIET).await;
    expect_balances(h, &after_first, "after paying the same invoice again").await
}

/// A keysend to carol (through the hub) with odd and even custom records: succeeded with our
/// preimage and the hub's fee; carol received the amount and exactly our records (no
/// preimage record); record types below 65536 or equal to 5482373484 are rejected before
/// anything is sent.
pub async fn keysend_out_with_custom_records<H: Harness + ?Sized>(h: &mut H) -> Result<(), String> {
    let carol = peer_pubkey(h, "carol").await?;
    let recs = records(&[
        (65_537, "odd"),
        (65_538, "even"),
        (
            7_629_169,
            "{\"podcast\":\"conformance\",\"action\":\"boost\"}",
        ),
        (34_349_334, "hello carol"),
    ]);
    let amount = sats(100)?;
    let limit = sats(10)?;
    let (req, preimage) = keysend(carol, amount, recs.clone(), limit);
    let hash = preimage.hash();
    let out = pay(h, req, SendPath::ViaHub).await?;
    let (got_preimage, fee) = check_success(
        &out,
        hash,
        amount,
        limit,
        SendPath::ViaHub,
        "keysend to carol",
    )?;
    ensure!(
        got_preimage == preimage,
        "keysend success with another preimage"
    );
    ensure_eq!(
        h.backend()
            .lookup_payment(hash)
            .await
            .map_err(ctx("lookup_payment"))?,
        PaymentLookup::Succeeded {
            preimage: got_preimage,
            fee
        },
        "lookup after the keysend"
    );
    check_sends(h, hash, 1, "keysend to carol")?;
    if let Some((received, got_records, their_preimage)) = peer_keysend(h, "carol", hash).await? {
        ensure_eq!(received, amount, "carol received");
        ensure_eq!(got_records, recs, "carol's custom records");
        ensure!(their_preimage == preimage, "carol saw another preimage");
    }

    // Invalid record types: rejected, nothing recorded.
    for bad in [1u64, 65_535, KEYSEND_PREIMAGE_TLV] {
        let (req, preimage) = keysend(carol, amount, records(&[(bad, "x")]), limit);
        let res = h.backend().pay(req).await;
        ensure!(
            matches!(res, Err(LnError::Rejected(_))),
            "custom record type {bad}: expected Rejected, got {res:?}"
        );
        ensure_eq!(
            h.backend()
                .lookup_payment(preimage.hash())
                .await
                .map_err(ctx("lookup_payment"))?,
            PaymentLookup::NotFound,
            "rejected keysend with record type {bad}"
        );
    }
    Ok(())
}

/// Any custom record type from 65536 up (other than 5482373484) can be sent: a keysend to
/// carol carrying a spread of such types succeeds and arrives with all of them.
pub async fn keysend_custom_record_types<H: Harness + ?Sized>(h: &mut H) -> Result<(), String> {
    let carol = peer_pubkey(h, "carol").await?;
    let types: [u64; 8] = [
        65_536,
        65_539,
        70_000,
        77_777,
        100_001,
        696_969,
        112_111_100,
        5_482_373_485,
    ];
    let pairs: Vec<(u64, String)> = types.iter().map(|t| (*t, format!("type {t}"))).collect();
    let recs = CustomRecords(
        pairs
            .iter()
            .map(|(t, v)| (*t, v.as_bytes().to_vec()))
            .collect(),
    );
    let amount = sats(50)?;
    let limit = sats(10)?;
    let (req, preimage) = keysend(carol, amount, recs.clone(), limit);
    let out = pay(h, req, SendPath::ViaHub).await?;
    check_success(
        &out,
        preimage.hash(),
        amount,
        limit,
        SendPath::ViaHub,
        &format!("keysend with record types {types:?}"),
    )?;
    if let Some((_, got, _)) = peer_keysend(h, "carol", preimage.hash()).await? {
        ensure_eq!(got, recs, "carol's custom records");
    }
    Ok(())
}

/// Alice keysends to us: with the policy accepting, one `KeysendReceived` event with her
/// preimage, the amount and her records, odd and even types (without 5482373484); with the
/// policy refusing, a node that enforces it fails the payment and records nothing.
pub async fn keysend_in_follows_policy<H: Harness + ?Sized>(h: &mut H) -> Result<(), String> {
    let me = our_pubkey(h).await?;
    h.set_policy(true);
    let b = h.backend();
    let cursor = last_seq(&*b).await?;
    // A Podcasting 2.0 boost (odd types) plus an even type.
    let recs = records(&[
        (65_538, "even"),
        (WALLET_TLV, "wal_conformance"),
        (7_629_169, "{\"podcast\":\"x\"}"),
    ]);
    let amount = sats(21)?;
    let (hash, out) = h
        .devnet()
        .outside_keysend("alice", me, amount, recs.clone())
        .await
        .map_err(ctx("alice keysends"))?;
    ensure!(
        matches!(out, PayOutcome::Succeeded { .. }),
        "accepted keysend from alice: {out:?}"
    );
    let events = expect_new_events(&*b, cursor, 1).await?;
    match &events[0].kind {
        IncomingKind::KeysendReceived {
            payment_hash,
            preimage,
            amount_received,
            custom_records,
            settled_at_secs,
        } => {
            ensure_eq!(*payment_hash, hash, "keysend hash");
            ensure!(
                sha256(preimage) == hash.0,
                "keysend preimage does not match"
            );
            ensure_eq!(*amount_received, amount, "keysend amount");
            ensure!(
                !custom_records.0.contains_key(&KEYSEND_PREIMAGE_TLV),
                "the preimage record must not be among the custom records"
            );
            ensure_eq!(*custom_records, recs, "keysend custom records");
            ensure!(*settled_at_secs > 0, "settled_at_secs {settled_at_secs}");
        }
        other => return Err(format!("expected KeysendReceived, got {other:?}")),
    }
    let seq = events[0].seq;

    h.set_policy(false);
    let refused = h
        .devnet()
        .outside_keysend("alice", me, amount, recs.clone())
        .await;
    h.set_policy(true);
    let (_, out) = refused.map_err(ctx("alice keysends (refused)"))?;
    if h.enforces_keysend_policy() {
        ensure!(
            matches!(out, PayOutcome::Failed(_)),
            "keysend refused by the policy: expected Failed, got {out:?}"
        );
        expect_no_new_events(&*b, seq, "refused keysend").await?;
    } else {
        ensure!(
            matches!(out, PayOutcome::Succeeded { .. }),
            "a backend without a policy accepts every keysend: {out:?}"
        );
        expect_new_events(&*b, seq, 1).await?;
    }
    Ok(())
}

/// A fee limit below the hub's fee: `Failed(NoRoute)` for an invoice and for a keysend, the
/// lookup agrees, nothing left the node; after that definite failure the same invoice may be
/// paid again with a sufficient limit.
pub async fn fee_limit_too_low<H: Harness + ?Sized>(h: &mut H) -> Result<(), String> {
    let amount = sats(1000)?;
    let inv = h
        .devnet()
        .outside_invoice("carol", Some(amount), "conformance: too cheap")
        .await
        .map_err(ctx("carol's invoice"))?;
    let hash = inv.payment_hash();
    let before = settled_balances(h).await?;
    let out = pay(h, pay_bolt11(&inv, Msat::ZERO)?, SendPath::ViaHub).await?;
    ensure_eq!(
        out,
        PayOutcome::Failed(FailureReason::NoRoute),
        "fee limit 0 via the hub"
    );
    ensure_eq!(
        h.backend()
            .lookup_payment(hash)
            .await
            .map_err(ctx("lookup_payment"))?,
        PaymentLookup::Failed(FailureReason::NoRoute),
        "lookup after fee limit 0"
    );
    // One msat short of the hub's fee, as a keysend.
    let carol = peer_pubkey(h, "carol").await?;
    let short = msat(hub_fee(amount)?.as_msat().saturating_sub(1))?;
    let (req, preimage) = keysend(carol, amount, CustomRecords::default(), short);
    let out = pay(h, req, SendPath::ViaHub).await?;
    ensure_eq!(
        out,
        PayOutcome::Failed(FailureReason::NoRoute),
        "keysend with a fee limit 1 msat below the hub's fee"
    );
    ensure_eq!(
        h.backend()
            .lookup_payment(preimage.hash())
            .await
            .map_err(ctx("lookup_payment"))?,
        PaymentLookup::Failed(FailureReason::NoRoute),
        "lookup of the keysend"
    );
    expect_balances(h, &before, "nothing sent with a too low fee limit").await?;
    // A router that checks the fee limit before sending (CLN's xpay/askrene) sends nothing;
    // one that tries the route (LDK, LND) sends once and gets it back.
    let failed_sends = h.send_count(hash);
    if let Some(n) = failed_sends {
        ensure!(n <= 1, "the too-cheap payment was sent {n} times");
    }

    // After a definite failure, a new attempt is allowed.
    let limit = sats(10)?;
    let out = pay(h, pay_bolt11(&inv, limit)?, SendPath::ViaHub).await?;
    check_success(&out, hash, amount, limit, SendPath::ViaHub, "retry")?;
    check_sends(
        h,
        hash,
        failed_sends.unwrap_or(0) + 1,
        "failed then retried",
    )
}

/// More than our channels can carry: `Failed(InsufficientBalance | NoRoute)` for a keysend and
/// an invoice, the lookup agrees, nothing left the node.
pub async fn amount_too_large<H: Harness + ?Sized>(h: &mut H) -> Result<(), String> {
    let amount = sats(TOO_LARGE_SATS)?;
    let carol = peer_pubkey(h, "carol").await?;
    let before = settled_balances(h).await?;
    let definite = |out: &PayOutcome| {
        matches!(
            out,
            PayOutcome::Failed(FailureReason::InsufficientBalance | FailureReason::NoRoute)
        )
    };

    let (req, preimage) = keysend(carol, amount, CustomRecords::default(), sats(100_000)?);
    let out = pay(h, req, SendPath::Unpayable).await?;
    ensure!(
        definite(&out),
        "keysend of {amount} msat: expected Failed(InsufficientBalance|NoRoute), got {out:?}"
    );
    let lookup = h
        .backend()
        .lookup_payment(preimage.hash())
        .await
        .map_err(ctx("lookup_payment"))?;
    ensure!(
        matches!(lookup, PaymentLookup::Failed(r) if PayOutcome::Failed(r) == out),
        "lookup {lookup:?} disagrees with {out:?}"
    );

    let inv = h
        .devnet()
        .outside_invoice("carol", Some(amount), "conformance: too large")
        .await
        .map_err(ctx("carol's invoice"))?;
    let out = pay(h, pay_bolt11(&inv, sats(100_000)?)?, SendPath::Unpayable).await?;
    ensure!(
        definite(&out),
        "invoice of {amount} msat: expected Failed(InsufficientBalance|NoRoute), got {out:?}"
    );
    let lookup = h
        .backend()
        .lookup_payment(inv.payment_hash())
        .await
        .map_err(ctx("lookup_payment"))?;
    ensure!(
        matches!(lookup, PaymentLookup::Failed(r) if PayOutcome::Failed(r) == out),
        "lookup {lookup:?} disagrees with {out:?}"
    );
    expect_balances(h, &before, "nothing sent for a too large amount").await
}

/// Hashes the node never saw: payment lookup `NotFound`, invoice lookup `None`, cancel is a
/// no-op.
pub async fn unknown_hash<H: Harness + ?Sized>(h: &mut H) -> Result<(), String> {
    let b = h.backend();
    let unknown = Preimage::random().hash();
    ensure_eq!(
        b.lookup_payment(unknown)
            .await
            .map_err(ctx("lookup_payment"))?,
        PaymentLookup::NotFound,
        "payment lookup of an unknown hash"
    );
    ensure_eq!(
        b.lookup_invoice(unknown).await.map_err(ctx("lookup"))?,
        None,
        "invoice lookup of an unknown hash"
    );
    b.cancel_invoice(unknown)
        .await
        .map_err(ctx("cancel unknown"))?;
    ensure_eq!(
        b.lookup_invoice(unknown).await.map_err(ctx("lookup"))?,
        None,
        "invoice lookup after cancelling an unknown hash"
    );
    ensure_eq!(
        b.lookup_payment(unknown)
            .await
            .map_err(ctx("lookup_payment"))?,
        PaymentLookup::NotFound,
        "lookups create nothing"
    );
    Ok(())
}

/// Route queries: a route to carol ends at carol and adds up; a node nobody knows has none.
pub async fn query_routes<H: Harness + ?Sized>(h: &mut H) -> Result<(), String> {
    let carol = peer_pubkey(h, "carol").await?;
    let amount = sats(1000)?;
    let routes = h
        .backend()
        .query_routes(carol, amount)
        .await
        .map_err(ctx("query_routes"))?;
    ensure!(!routes.is_empty(), "no route to carol");
    for r in &routes {
        let last = r.hops.last().ok_or("a route without hops")?;
        ensure_eq!(last.pub_key, carol, "last hop");
        ensure_eq!(last.amt_to_forward, amount, "amount delivered");
        ensure_eq!(
            r.total_amt.as_msat(),
            amount.as_msat().saturating_add(r.total_fees.as_msat()),
            "total_amt = amount + fees"
        );
        let hop_fees: u64 = r.hops.iter().map(|x| x.fee.as_msat()).sum();
        ensure_eq!(hop_fees, r.total_fees.as_msat(), "sum of hop fees");
        if h.distinct_peers() {
            ensure_eq!(r.hops.len(), 2, "hops to carol (via the hub)");
            ensure_eq!(r.hops[0].pub_key, peer_pubkey(h, "hub").await?, "first hop");
            ensure_eq!(r.total_fees, hub_fee(amount)?, "route fee");
        }
    }
    let stranger =
        NodePubkey::from_hex(&format!("02{}", "ab".repeat(32))).ok_or("bad stranger pubkey")?;
    let none = h
        .backend()
        .query_routes(stranger, amount)
        .await
        .map_err(ctx("query_routes"))?;
    ensure!(none.is_empty(), "routes to an unknown node: {none:?}");
    Ok(())
}

/// Restart in the middle: an invoice created before can be paid after and is reported once
/// (with the next seq); a payment made before still looks up `Succeeded` and is not sent again;
/// the events keep their seqs; incoming keysends work again.
pub async fn restart_midway<H: Harness + ?Sized>(h: &mut H) -> Result<(), String> {
    if !h.supports_restart() {
        return Err(format!("{} does not support restarts", h.name()));
    }
    h.set_policy(true);
    let b = h.backend();
    let open_amount = sats(2000)?;
    let open = b
        .create_invoice(new_invoice(
            Some(open_amount),
            "conformance: across a restart",
        ))
        .await
        .map_err(ctx("create"))?;
    let paid_amount = sats(3000)?;
    let paid = h
        .devnet()
        .outside_invoice(
            "carol",
            Some(paid_amount),
            "conformance: paid before restart",
        )
        .await
        .map_err(ctx("carol's invoice"))?;
    let limit = sats(100)?;
    let before_out = pay(h, pay_bolt11(&paid, limit)?, SendPath::ViaHub).await?;
    let (preimage, fee) = check_success(
        &before_out,
        paid.payment_hash(),
        paid_amount,
        limit,
        SendPath::ViaHub,
        "payment before the restart",
    )?;
    let events_before = all_events(&*b).await?;
    let last = events_before.last().map_or(0, |e| e.seq);
    drop(b);

    h.restart().await?;
    let b = h.backend();

    ensure_eq!(
        all_events(&*b).await?,
        events_before,
        "events after the restart"
    );
    ensure_eq!(
        b.lookup_payment(paid.payment_hash())
            .await
            .map_err(ctx("lookup_payment"))?,
        PaymentLookup::Succeeded { preimage, fee },
        "payment made before the restart"
    );
    let again = pay(h, pay_bolt11(&paid, limit)?, SendPath::ViaHub).await?;
    ensure_eq!(again, before_out, "paying it again after the restart");
    check_sends(h, paid.payment_hash(), 1, "paid before the restart")?;
    ensure_eq!(
        b.lookup_invoice(open.payment_hash())
            .await
            .map_err(ctx("lookup"))?,
        Some(InvoiceState::Open),
        "invoice created before the restart"
    );

    let out = h
        .devnet()
        .outside_pay("alice", &open, None)
        .await
        .map_err(ctx("alice pays after the restart"))?;
    ensure!(
        matches!(out, PayOutcome::Succeeded { .. }),
        "alice paying the invoice created before the restart: {out:?}"
    );
    let events = expect_new_events(&*b, last, 1).await?;
    ensure_eq!(
        events[0].seq,
        last + 1,
        "seq of the first event after the restart"
    );
    match &events[0].kind {
        IncomingKind::InvoiceSettled {
            payment_hash,
            amount_received,
            ..
        } => {
            ensure_eq!(*payment_hash, open.payment_hash(), "settled hash");
            ensure_eq!(*amount_received, open_amount, "settled amount");
        }
        other => return Err(format!("expected InvoiceSettled, got {other:?}")),
    }
    let seq = events[0].seq;
    let twice = h.devnet().outside_pay("hub", &open, None).await;
    ensure!(
        !matches!(twice, Ok(PayOutcome::Succeeded { .. })),
        "the invoice was paid twice: {twice:?}"
    );
    expect_no_new_events(&*b, seq, "second payment after the restart").await?;

    // The policy set before the restart is still in force.
    let me = our_pubkey(h).await?;
    let (hash, out) = h
        .devnet()
        .outside_keysend("alice", me, sats(5)?, records(&[(WALLET_TLV, "wal_x")]))
        .await
        .map_err(ctx("keysend after the restart"))?;
    ensure!(
        matches!(out, PayOutcome::Succeeded { .. }),
        "keysend after the restart: {out:?}"
    );
    let events = expect_new_events(&*b, seq, 1).await?;
    ensure!(
        matches!(&events[0].kind, IncomingKind::KeysendReceived { payment_hash, .. } if *payment_hash == hash),
        "expected the keysend, got {:?}",
        events[0]
    );
    Ok(())
}
