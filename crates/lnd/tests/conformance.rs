#![allow(clippy::unwrap_used, clippy::expect_used)]

//! The backend conformance suite (`satchel_testkit::conformance`) against
//! LndRest → fake LND (HTTPS, LND's REST wire format) → the LDK devnet's node.
//! A "restart" (after every scenario) is a restart of the adapter (Satchel); LND keeps running
//! with its state. The fake keeps LND's own state (invoice indices, payments) in memory, so the
//! node under it is not restarted here: the LDK driver restarts that node and its peers.

mod common;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use common::{AcceptAll, init_tracing};
use satchel_domain::{Network, PaymentHash};
use satchel_fakes::lnd::FakeLnd;
use satchel_ldk::{Devnet, DevnetOptions};
use satchel_lightning::{DevnetControl, InvoiceEvents, LightningBackend};
use satchel_lnd::LndRest;
use satchel_testkit::conformance::{self, Harness};

struct Lnd {
    _dir: tempfile::TempDir,
    devnet: Arc<Devnet>,
    fake: FakeLnd,
    lnd: Arc<LndRest>,
}

#[async_trait]
impl Harness for Lnd {
    fn name(&self) -> String {
        "lnd-rest (fake LND over the LDK devnet)".to_owned()
    }

    fn backend(&self) -> Arc<dyn LightningBackend> {
        self.lnd.clone()
    }

    fn devnet(&self) -> Arc<dyn DevnetControl> {
        self.devnet.clone()
    }

    fn supports_restart(&self) -> bool {
        true
    }

    async fn restart(&mut self) -> Result<(), String> {
        self.lnd =
            Arc::new(LndRest::new(self.fake.config(Network::Regtest)).map_err(|e| e.to_string())?);
        Ok(())
    }

    /// LND (`--accept-keysend`) claims every keysend; it cannot ask Satchel first.
    fn set_policy(&self, _accept: bool) {}

    fn enforces_keysend_policy(&self) -> bool {
        false
    }

    fn send_count(&self, hash: PaymentHash) -> Option<u64> {
        Some(u64::from(self.devnet.node().send_count(hash)))
    }

    fn peer_events(&self, name: &str) -> Option<Arc<dyn InvoiceEvents>> {
        self.devnet.peer(name).map(|n| n as Arc<dyn InvoiceEvents>)
    }
}

/// Scenarios failing because of a known bug outside this crate.
const KNOWN_BUGS: &[(&str, &str)] = &[(
    "keysend_custom_record_types",
    "LDK 0.2 (the node behind the fake) reserves custom TLV 77777 (async payments) and refuses to send it",
)];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lnd_rest_passes_the_suite() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let devnet = Arc::new(
        Devnet::start_with(
            dir.path(),
            DevnetOptions {
                incoming_policy: Some(Arc::new(AcceptAll)),
            },
        )
        .await
        .unwrap(),
    );
    let node: Arc<dyn LightningBackend> = devnet.node();
    let fake = FakeLnd::start(node).await.unwrap();
    let lnd = Arc::new(
        LndRest::connect(fake.config(Network::Regtest))
            .await
            .unwrap(),
    );
    eprintln!("devnet + fake LND started in {:?}", t.elapsed());
    let mut h = Lnd {
        _dir: dir,
        devnet: devnet.clone(),
        fake,
        lnd,
    };
    let result = conformance::run_all_except(&mut h, KNOWN_BUGS).await;
    drop(h);
    devnet.stop().await.unwrap();
    let report = result.unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{report}");
    assert_eq!(
        report.passed().len(),
        conformance::SCENARIOS.len() - KNOWN_BUGS.len()
    );
}

/// Fails only because the LDK node behind the fake rejects custom record type 77777 (see the
/// satchel-ldk conformance test of the same name); passes once that is fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "LDK 0.2, the node behind the fake, reserves custom TLV 77777 and refuses to send it"]
async fn keysend_custom_record_types() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let devnet = Arc::new(
        Devnet::start_with(
            dir.path(),
            DevnetOptions {
                incoming_policy: Some(Arc::new(AcceptAll)),
            },
        )
        .await
        .unwrap(),
    );
    let node: Arc<dyn LightningBackend> = devnet.node();
    let fake = FakeLnd::start(node).await.unwrap();
    let lnd = Arc::new(LndRest::new(fake.config(Network::Regtest)).unwrap());
    let mut h = Lnd {
        _dir: dir,
        devnet: devnet.clone(),
        fake,
        lnd,
    };
    let result = conformance::keysend_custom_record_types(&mut h).await;
    drop(h);
    devnet.stop().await.unwrap();
    result.unwrap_or_else(|e| panic!("{e}"));
}
