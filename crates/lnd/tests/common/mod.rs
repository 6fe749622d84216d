#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

//! LndRest → fake LND (HTTPS, LND's wire format) → the LDK devnet's node, where money moves.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use satchel_domain::{Bolt11, CustomRecords, Msat, Network, NodePubkey, Preimage};
use satchel_fakes::lnd::FakeLnd;
use satchel_ldk::{Devnet, DevnetOptions};
use satchel_lightning::{
    IncomingEvent, IncomingPolicy, InvoiceEvents, LightningBackend, NewInvoice, PayRequest,
    PayTarget,
};
use satchel_lnd::LndRest;

pub fn sats(n: u64) -> Msat {
    Msat::from_sats(n).unwrap()
}

pub fn msat(n: u64) -> Msat {
    Msat::from_msat(n).unwrap()
}

/// The hub's fee for forwarding `amount_msat`: 1000 msat + 1000 ppm.
pub fn hub_fee(amount_msat: u64) -> Msat {
    msat(1000 + amount_msat * 1000 / 1_000_000)
}

pub fn new_invoice(amount: Option<Msat>, memo: &str) -> NewInvoice {
    NewInvoice {
        amount,
        memo: memo.to_owned(),
        description_hash: None,
        expiry_secs: 3600,
        preimage: Preimage::random(),
    }
}

pub fn pay_invoice(invoice: &Bolt11, fee_limit: Msat) -> PayRequest {
    PayRequest {
        target: PayTarget::Bolt11 {
            invoice: invoice.clone(),
            amount: invoice.amount().unwrap(),
        },
        fee_limit,
        timeout: Duration::from_secs(20),
    }
}

pub fn keysend(
    dest: NodePubkey,
    amount: Msat,
    records: CustomRecords,
    fee_limit: Msat,
) -> PayRequest {
    PayRequest {
        target: PayTarget::Keysend {
            dest,
            amount,
            preimage: Preimage::random(),
            custom_records: records,
        },
        fee_limit,
        timeout: Duration::from_secs(20),
    }
}

pub fn records(pairs: &[(u64, &str)]) -> CustomRecords {
    CustomRecords(
        pairs
            .iter()
            .map(|(t, v)| (*t, v.as_bytes().to_vec()))
            .collect(),
    )
}

/// LND with `--accept-keysend`: every keysend is claimed.
pub struct AcceptAll;

#[async_trait]
impl IncomingPolicy for AcceptAll {
    async fn accept_keysend(&self, _records: &CustomRecords) -> bool {
        true
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub devnet: Arc<Devnet>,
    pub fake: FakeLnd,
    pub lnd: LndRest,
}

impl Env {
    pub async fn start() -> Env {
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
        let lnd = LndRest::connect(fake.config(Network::Regtest))
            .await
            .unwrap();
        eprintln!("devnet + fake LND started in {:?}", t.elapsed());
        Env {
            dir,
            devnet,
            fake,
            lnd,
        }
    }

    /// A fresh adapter on the same LND (Satchel restarted).
    pub fn client(&self) -> LndRest {
        LndRest::new(self.fake.config(Network::Regtest)).unwrap()
    }

    pub async fn stop(self) {
        let Env {
            dir,
            devnet,
            fake,
            lnd,
        } = self;
        drop(lnd);
        drop(fake);
        devnet.stop().await.unwrap();
        drop(dir);
    }
}

/// Reads events after `after` until `n` arrived (or `timeout` passed), then checks that no more
/// follow within a short quiet time.
pub async fn wait_events(
    b: &dyn InvoiceEvents,
    after: u64,
    n: usize,
    timeout: Duration,
) -> Vec<IncomingEvent> {
    let deadline = Instant::now() + timeout;
    let mut got: Vec<IncomingEvent> = Vec::new();
    while got.len() < n {
        let now = Instant::now();
        assert!(
            now < deadline,
            "expected {n} events after {after}, got {got:?}"
        );
        let cursor = got.last().map_or(after, |e| e.seq);
        let page = b.events_after(cursor, 100, deadline - now).await.unwrap();
        got.extend(page);
    }
    let more = b
        .events_after(
            got.last().map_or(after, |e| e.seq),
            100,
            Duration::from_millis(300),
        )
        .await
        .unwrap();
    assert!(more.is_empty(), "unexpected extra events {more:?}");
    got
}

/// Polls `f` until it returns `Some`, at most `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met in {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
