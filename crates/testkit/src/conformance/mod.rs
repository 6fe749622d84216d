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

use satchel_lightning::{
    DevnetControl, IncomingEvent, IncomingKind, IncomingPolicy, InvoiceEvents, InvoiceState,
    Invoices, LightningBackend, LnError, NewInvoice, NodeInfo, NodeInfoData, PayOutcome,
    PayRequest, PayTarget, PaymentLookup, Payments, Route, Routes,
};

#[macro_use]
mod support;
mod invoices;
mod keysend;
mod payments;
mod restart;
mod tracking;

pub use invoices::{
    amountless_invoice, cancelled_invoice_is_unpayable, invoice_create_and_lookup, node_identity,
    outside_pays_our_invoice,
};
pub use keysend::{
    keysend_custom_record_types, keysend_in_follows_policy, keysend_out_with_custom_records,
};
pub use payments::{
    amount_too_large, fee_limit_too_low, pay_alice_direct, pay_carol_via_hub,
    pay_twice_is_idempotent, query_routes, unknown_hash,
};
pub use restart::restart_midway;
use support::*;
use tracking::*;

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
