#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

//! Shared test setup: the LDK devnet, a fake CLN on our devnet node served on a unix socket and
//! as CLNRest, and `ClnBackend`s on both.

use std::sync::Arc;
use std::time::{Duration, Instant};

use satchel_cln::{ClnBackend, ClnConfig};
use satchel_domain::{Bolt11, CustomRecords, Msat, Network, NodePubkey, Preimage};
use satchel_fakes::cln::{FakeChannel, FakeCln, FakeOptions, FakeRest, FakeRestConfig, FakeSocket};
use satchel_ldk::{Devnet, DevnetOptions};
use satchel_lightning::{LightningBackend, NewInvoice, PayRequest, PayTarget};
use satchel_testkit::conformance::SwitchPolicy;

pub const RUNE: &str = "tu7mO0nBBx0NOu9lSOw0-7ibAz_kcVeKeCbZIBdi1lY9MCZtZXRob2Q9Z2V0aW5mbw==";

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

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

/// A certificate and its key, PEM.
#[derive(Clone)]
pub struct Certs {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A self-signed certificate for `localhost` / `127.0.0.1`.
pub fn self_signed() -> Certs {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    Certs {
        cert_pem: ck.cert.pem(),
        key_pem: ck.signing_key.serialize_pem(),
    }
}

/// Like CLN's own setup: a CA (`ca.pem`) and a server certificate it signed (`server.pem`,
/// names `cln` and `localhost`).
pub fn cln_style_certs() -> (Certs, Certs) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "cln Root CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, &ca_key);
    let server_key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["cln".to_owned(), "localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "cln rest");
    let server_cert = params.signed_by(&server_key, &issuer).unwrap();
    (
        Certs {
            cert_pem: ca_cert.pem(),
            key_pem: ca_key.serialize_pem(),
        },
        Certs {
            cert_pem: server_cert.pem(),
            key_pem: server_key.serialize_pem(),
        },
    )
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
            timeout: Duration::from_secs(20),
        },
        preimage,
    )
}

pub fn records(pairs: &[(u64, &str)]) -> CustomRecords {
    CustomRecords(
        pairs
            .iter()
            .map(|(t, v)| (*t, v.as_bytes().to_vec()))
            .collect(),
    )
}

/// The devnet, the fake CLN on our node and its two front doors.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub devnet: Arc<Devnet>,
    pub fake: FakeCln,
    pub socket: FakeSocket,
    pub rest: FakeRest,
    pub certs: Certs,
}

impl Env {
    /// The devnet under a fake CLN of the newest release ([`FakeOptions::default`]).
    pub async fn start() -> Env {
        Env::start_with(FakeOptions::default()).await
    }

    /// The devnet under a fake CLN emulating `options` (release, deprecated APIs).
    pub async fn start_with(options: FakeOptions) -> Env {
        init_tracing();
        let dir = tempfile::tempdir().unwrap();
        let t = Instant::now();
        // CLN's keysend plugin accepts every keysend: so does our node under the fake.
        let devnet = Arc::new(
            Devnet::start_with(
                &dir.path().join("devnet"),
                DevnetOptions {
                    incoming_policy: Some(Arc::new(SwitchPolicy::new(true))),
                },
            )
            .await
            .unwrap(),
        );
        eprintln!("devnet started in {:?}", t.elapsed());
        let node = devnet.node();
        let backend: Arc<dyn LightningBackend> = node.clone();
        let fake = FakeCln::start_with(backend, options);
        fake.set_channels(Arc::new(move || {
            node.list_channels()
                .into_iter()
                .filter(|c| c.usable)
                .map(|c| FakeChannel {
                    peer_id: c.counterparty,
                    short_channel_id: c.outbound_scid.unwrap_or(0),
                    spendable_msat: c.outbound_msat,
                    receivable_msat: c.inbound_msat,
                    total_msat: c.capacity_sats * 1000,
                })
                .collect()
        }));
        let socket = fake
            .serve_socket(dir.path().join("lightning-rpc"))
            .await
            .unwrap();
        let certs = self_signed();
        let rest = fake
            .serve_rest(FakeRestConfig {
                rune: RUNE.to_owned(),
                cert_pem: certs.cert_pem.clone(),
                key_pem: certs.key_pem.clone(),
            })
            .await
            .unwrap();
        Env {
            dir,
            devnet,
            fake,
            socket,
            rest,
            certs,
        }
    }

    pub fn socket_config(&self) -> ClnConfig {
        ClnConfig::socket(self.socket.path(), Network::Regtest)
    }

    pub fn rest_config(&self) -> ClnConfig {
        ClnConfig::rest(
            self.rest.url(),
            RUNE,
            self.certs.cert_pem.clone(),
            Network::Regtest,
        )
    }

    /// A backend on the socket (`"socket"`) or on CLNRest (`"rest"`), checked with `getinfo`.
    pub async fn backend(&self, kind: &str) -> ClnBackend {
        let config = match kind {
            "socket" => self.socket_config(),
            "rest" => self.rest_config(),
            other => panic!("no transport {other}"),
        };
        ClnBackend::connect(&config).await.unwrap()
    }

    pub async fn stop(self) {
        self.devnet.stop().await.unwrap();
    }
}
