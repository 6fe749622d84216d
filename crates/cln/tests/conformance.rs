#![allow(clippy::unwrap_used, clippy::expect_used)]

//! The backend conformance suite (`satchel_testkit::conformance`) against `ClnBackend` on the
//! fake CLN on the LDK devnet, on both transports and on each emulated release: v23.08 (`pay`,
//! `getroute`), v24.11 (`xpay`, `getroute`), v26.06 with deprecated APIs off (`pay`/`getroute`
//! refused; `getroutes` prints only the new hop fields) and v27.03 (`pay`/`getroute` removed).
//! `tests/contracts.rs` runs the suite on v25.02 too (`getroutes` with the old hop fields). A "restart" (after every scenario) is a
//! restart of Satchel's side: a new `ClnBackend` instance on the same (still running) node, as
//! when Satchel restarts next to a CLN that keeps running. The fake keeps CLN's own state in
//! memory, so the node under it is not restarted here: the LDK driver restarts that node and
//! its peers.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use common::Env;
use satchel_cln::{ClnBackend, ClnVersion};
use satchel_domain::PaymentHash;
use satchel_fakes::cln::FakeOptions;
use satchel_lightning::{DevnetControl, InvoiceEvents, LightningBackend};
use satchel_testkit::conformance::{self, Harness};

struct Cln {
    env: Env,
    kind: &'static str,
    options: FakeOptions,
    backend: Arc<ClnBackend>,
}

#[async_trait]
impl Harness for Cln {
    fn name(&self) -> String {
        format!(
            "cln-fake-{}-{}{}",
            self.kind,
            self.options.version,
            if self.options.deprecated_apis {
                ""
            } else {
                "-no-deprecated"
            }
        )
    }

    fn backend(&self) -> Arc<dyn LightningBackend> {
        self.backend.clone()
    }

    fn devnet(&self) -> Arc<dyn DevnetControl> {
        self.env.devnet.clone()
    }

    fn supports_restart(&self) -> bool {
        true
    }

    async fn restart(&mut self) -> Result<(), String> {
        self.backend = Arc::new(self.env.backend(self.kind).await);
        Ok(())
    }

    /// CLN's keysend plugin accepts every keysend; there is no policy hook.
    fn set_policy(&self, _accept: bool) {}

    fn enforces_keysend_policy(&self) -> bool {
        false
    }

    fn send_count(&self, hash: PaymentHash) -> Option<u64> {
        Some(u64::from(self.env.devnet.node().send_count(hash)))
    }

    /// CLN records no attempt for a payment that failed before `sendpay`/`sendonion` (no
    /// route, too large); `ClnBackend` remembers those failures in memory only
    /// (`unsent_failures`), so after a restart of Satchel's side they look up `NotFound`.
    fn forgets_unsent_failures_on_restart(&self) -> bool {
        true
    }

    fn peer_events(&self, name: &str) -> Option<Arc<dyn InvoiceEvents>> {
        self.env
            .devnet
            .peer(name)
            .map(|n| n as Arc<dyn InvoiceEvents>)
    }
}

/// Scenarios CLN cannot pass, with the reason (each is covered by its own test or documented
/// in the crate docs).
const KNOWN: &[(&str, &str)] = &[
    (
        "invoice_create_and_lookup",
        "CLN cannot make an invoice from a bare description hash (only deschashonly of a \
         description it is given); tested in devnet.rs::invoices_create_lookup_cancel",
    ),
    (
        "keysend_in_follows_policy",
        "CLN does not expose a received keysend's custom TLVs (only the 34349334 message); \
         tested in devnet.rs::incoming_payments_replay_and_resume_after_restart",
    ),
    (
        "keysend_custom_record_types",
        "LDK 0.2 under the fake reserves custom TLV 77777 (async payments) \
         (crates/ldk/src/backend.rs)",
    ),
];

async fn run(kind: &'static str, options: FakeOptions) {
    let env = Env::start_with(options).await;
    let backend = Arc::new(env.backend(kind).await);
    let mut h = Cln {
        env,
        kind,
        options,
        backend,
    };
    let result = conformance::run_all_except(&mut h, KNOWN).await;
    h.env.stop().await;
    let report = result.unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{report}");
    assert_eq!(report.skipped().len(), KNOWN.len());
    assert_eq!(
        report.passed().len(),
        conformance::SCENARIOS.len() - KNOWN.len()
    );
}

fn release(major: u32, minor: u32, deprecated_apis: bool) -> FakeOptions {
    FakeOptions {
        version: ClnVersion::new(major, minor),
        deprecated_apis,
    }
}

/// v27.03 (`pay`/`getroute` removed), on the unix socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cln_socket_passes_the_suite() {
    run("socket", release(27, 3, true)).await;
}

/// v23.08, the oldest supported (`pay`/`getroute`), on CLNRest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cln_rest_passes_the_suite() {
    run("rest", release(23, 8, true)).await;
}

/// v24.11: the first with `xpay`; routes still from `getroute`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cln_v24_11_passes_the_suite() {
    run("socket", release(24, 11, true)).await;
}

/// v26.06 started with `allow-deprecated-apis=false`: `pay`/`getroute` refused, `getroutes`
/// prints only the new hop fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cln_v26_06_without_deprecated_apis_passes_the_suite() {
    run("socket", release(26, 6, false)).await;
}
