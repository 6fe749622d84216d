#![allow(clippy::unwrap_used, clippy::expect_used)]

//! The backend conformance suite (`satchel_testkit::conformance`) against the scripted
//! simulation. The simulation plays the devnet's topology: `before_send` scripts the fee the
//! hub would charge (or the failure of an unpayable amount); its one outside node answers to
//! alice, hub and carol; it accepts every keysend. In memory it keeps nothing across a restart;
//! with a state file (as `satchel serve --backend scripted` runs it) it is restarted after every
//! scenario and must come back with everything.

use std::sync::Arc;

use async_trait::async_trait;
use satchel_domain::{FailureReason, Msat, Network, PaymentHash};
use satchel_lightning::{DevnetControl, LightningBackend};
use satchel_scripted::{Script, ScriptedBackend};
use satchel_testkit::conformance::{self, Harness, SendPath};

struct Scripted {
    node: Arc<ScriptedBackend>,
    /// The state file's directory, for a persisted node.
    dir: Option<tempfile::TempDir>,
}

const SEED: [u8; 32] = [42u8; 32];

impl Scripted {
    fn new() -> Scripted {
        Scripted {
            node: Arc::new(ScriptedBackend::new(Network::Regtest, SEED)),
            dir: None,
        }
    }

    fn persisted() -> Scripted {
        let dir = tempfile::tempdir().unwrap();
        let node = ScriptedBackend::open(Network::Regtest, SEED, dir.path().join("node.json"));
        Scripted {
            node: Arc::new(node.unwrap()),
            dir: Some(dir),
        }
    }
}

#[async_trait]
impl Harness for Scripted {
    fn name(&self) -> String {
        "scripted".to_owned()
    }

    fn backend(&self) -> Arc<dyn LightningBackend> {
        self.node.clone()
    }

    fn devnet(&self) -> Arc<dyn DevnetControl> {
        self.node.clone()
    }

    fn supports_restart(&self) -> bool {
        self.dir.is_some()
    }

    async fn restart(&mut self) -> Result<(), String> {
        let path = self
            .node
            .state_path()
            .ok_or("the scripted backend keeps its state in memory only")?
            .to_owned();
        // A new process reads the file; the old node must not write after that.
        let old = std::mem::replace(
            &mut self.node,
            Arc::new(ScriptedBackend::new(Network::Regtest, SEED)),
        );
        if Arc::strong_count(&old) != 1 {
            return Err("the old node is still in use".to_owned());
        }
        drop(old);
        self.node = Arc::new(
            ScriptedBackend::open(Network::Regtest, SEED, path)
                .map_err(|e| format!("reopening the scripted node: {e}"))?,
        );
        Ok(())
    }

    fn set_policy(&self, _accept: bool) {}

    fn enforces_keysend_policy(&self) -> bool {
        false
    }

    fn distinct_peers(&self) -> bool {
        false
    }

    fn before_send(&self, hash: PaymentHash, amount: Msat, path: SendPath) {
        let script = match path.fee(amount) {
            Ok(Some(fee)) => Script::Succeed { fee },
            Ok(None) => Script::Fail(FailureReason::InsufficientBalance),
            Err(e) => panic!("fee of {amount}: {e}"),
        };
        self.node.script(hash, script);
    }

    fn send_count(&self, hash: PaymentHash) -> Option<u64> {
        Some(u64::try_from(self.node.pay_count(hash)).unwrap())
    }
}

#[tokio::test]
async fn scripted_passes_the_suite() {
    let mut h = Scripted::new();
    let report = conformance::run_all(&mut h)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{report}");
    assert_eq!(report.skipped(), ["restart_midway"]);
    assert_eq!(report.passed().len(), conformance::SCENARIOS.len() - 1);
}

/// With a state file: restarted after every scenario (and in `restart_midway`), nothing lost.
#[tokio::test]
async fn persisted_scripted_passes_the_suite_restarted_after_every_scenario() {
    let mut h = Scripted::persisted();
    let t = std::time::Instant::now();
    let report = conformance::run_all(&mut h)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{report}\n(with restarts: {:?})", t.elapsed());
    assert!(report.skipped().is_empty(), "{report}");
    assert_eq!(report.passed().len(), conformance::SCENARIOS.len());
}

#[tokio::test]
async fn scripted_cannot_restart() {
    let mut h = Scripted::new();
    let err = conformance::run_one(&mut h, "restart_midway")
        .await
        .unwrap_err();
    assert!(err.contains("does not support restarts"), "{err}");
    assert!(
        conformance::run_one(&mut h, "no_such_scenario")
            .await
            .unwrap_err()
            .contains("no scenario")
    );
}

/// Each scenario also passes on its own, on a fresh backend.
macro_rules! each_scenario {
    ($($name:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let mut h = Scripted::new();
                conformance::$name(&mut h).await.unwrap_or_else(|e| panic!("{e}"));
            }
        )+

        #[test]
        fn every_scenario_has_a_test() {
            let mut listed: Vec<&str> = vec![$(stringify!($name)),+, "restart_midway"];
            listed.sort_unstable();
            let mut all = conformance::SCENARIOS.to_vec();
            all.sort_unstable();
            assert_eq!(listed, all);
        }
    };
}

each_scenario!(
    node_identity,
    invoice_create_and_lookup,
    outside_pays_our_invoice,
    amountless_invoice,
    cancelled_invoice_is_unpayable,
    pay_alice_direct,
    pay_carol_via_hub,
    pay_twice_is_idempotent,
    keysend_out_with_custom_records,
    keysend_custom_record_types,
    keysend_in_follows_policy,
    fee_limit_too_low,
    amount_too_large,
    unknown_hash,
    query_routes,
);
