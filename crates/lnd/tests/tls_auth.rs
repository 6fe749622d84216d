#![allow(clippy::unwrap_used, clippy::expect_used)]

//! Certificate pinning, macaroons and the connection check, against the fake LND over the
//! scripted backend (no money needed).

use std::sync::Arc;

use base64::Engine as _;
use satchel_domain::Network;
use satchel_fakes::lnd::{FakeLnd, FakeOptions, Fault, self_signed_cert};
use satchel_lightning::{LightningBackend, LnError, NodeInfo};
use satchel_lnd::{LndConfig, LndError, LndRest, load_macaroon, macaroon_hex};
use satchel_scripted::ScriptedBackend;

fn backend() -> Arc<dyn LightningBackend> {
    Arc::new(ScriptedBackend::new(Network::Regtest, [7u8; 32]))
}

async fn fake() -> FakeLnd {
    FakeLnd::start(backend()).await.unwrap()
}

fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

#[tokio::test]
async fn pinned_certificate_is_accepted_in_every_form() {
    let fake = fake().await;
    let lnd = LndRest::connect(fake.config(Network::Regtest))
        .await
        .unwrap();
    let info = lnd.node_info().await.unwrap();
    assert_eq!(info.network, Network::Regtest);
    assert_eq!(info.alias, "satchel-scripted");
    // Hex and base64 of the DER (as some connection strings carry it), with a trailing slash.
    let der = pem_der(fake.cert_pem());
    for cert in [
        hex::encode(&der),
        base64::engine::general_purpose::STANDARD.encode(&der),
    ] {
        let cfg = LndConfig::new(
            format!("{}/", fake.url()),
            Some(cert),
            fake.macaroon_hex(),
            Network::Regtest,
        );
        LndRest::connect(cfg).await.unwrap();
    }
}

#[tokio::test]
async fn another_certificate_is_refused() {
    let fake = fake().await;
    // Another self-signed certificate for the same names: the handshake fails.
    let (other, _) = self_signed_cert().unwrap();
    let cfg = LndConfig::new(
        fake.url(),
        Some(other),
        fake.macaroon_hex(),
        Network::Regtest,
    );
    let res = LndRest::new(cfg).unwrap().node_info().await;
    assert!(
        matches!(&res, Err(LnError::Transport(m)) if m.contains("not the configured LND tls.cert")),
        "{res:?}"
    );
    // Without pinning, the system roots do not know LND's self-signed CA-as-leaf certificate.
    let cfg = LndConfig::new(fake.url(), None, fake.macaroon_hex(), Network::Regtest);
    let res = LndRest::new(cfg).unwrap().node_info().await;
    assert!(
        matches!(&res, Err(LnError::Transport(m)) if m.contains("CaUsedAsEndEntity")),
        "{res:?}"
    );
    // The right one still works.
    LndRest::connect(fake.config(Network::Regtest))
        .await
        .unwrap();
}

#[tokio::test]
async fn same_key_other_certificate_is_refused() {
    // A fake restarted with a new certificate (LND regenerated tls.cert): the old pin fails.
    let old = fake().await;
    let pinned = old.cert_pem().to_owned();
    let new = FakeLnd::start_with(
        backend(),
        FakeOptions {
            macaroon_hex: Some(old.macaroon_hex().to_owned()),
            ..FakeOptions::default()
        },
    )
    .await
    .unwrap();
    let cfg = LndConfig::new(
        new.url(),
        Some(pinned),
        new.macaroon_hex(),
        Network::Regtest,
    );
    assert!(matches!(
        LndRest::connect(cfg).await,
        Err(LndError::Node(LnError::Transport(_)))
    ));
}

#[tokio::test]
async fn wrong_macaroon_is_an_error() {
    let fake = fake().await;
    let cfg = LndConfig::new(
        fake.url(),
        Some(fake.cert_pem().to_owned()),
        "00".repeat(32),
        Network::Regtest,
    );
    let lnd = LndRest::new(cfg.clone()).unwrap();
    let res = lnd.node_info().await;
    match &res {
        Err(LnError::Transport(m)) => assert!(m.contains("macaroon"), "{m}"),
        other => panic!("expected a transport error, got {other:?}"),
    }
    use satchel_lightning::{InvoiceEvents, Invoices, Payments};
    let hash = satchel_domain::Preimage::random().hash();
    assert!(matches!(
        lnd.lookup_invoice(hash).await,
        Err(LnError::Transport(_))
    ));
    assert!(matches!(
        lnd.lookup_payment(hash).await,
        Err(LnError::Transport(_))
    ));
    assert!(matches!(
        lnd.events_after(0, 10, std::time::Duration::from_secs(1))
            .await,
        Err(LnError::Transport(_))
    ));
    assert!(matches!(
        LndRest::connect(cfg).await,
        Err(LndError::Node(LnError::Transport(_)))
    ));
}

#[tokio::test]
async fn connect_checks_network_and_version() {
    let fake = fake().await;
    let res = LndRest::connect(fake.config(Network::Bitcoin)).await;
    assert!(matches!(res, Err(LndError::Incompatible(_))), "{res:?}");

    let old = FakeLnd::start_with(
        backend(),
        FakeOptions {
            version: Some("0.14.3-beta commit=v0.14.3-beta".to_owned()),
            ..FakeOptions::default()
        },
    )
    .await
    .unwrap();
    let res = LndRest::connect(old.config(Network::Regtest)).await;
    assert!(matches!(res, Err(LndError::Incompatible(_))), "{res:?}");

    // A proxy error page once: Transport, then fine again.
    fake.inject("/v1/getinfo", Fault::Http500);
    let lnd = LndRest::new(fake.config(Network::Regtest)).unwrap();
    assert!(matches!(lnd.node_info().await, Err(LnError::Transport(_))));
    let info = lnd.check().await.unwrap();
    assert!(info.version.starts_with("0.18"));
}

#[test]
fn configuration_helpers() {
    assert!(matches!(macaroon_hex("not hex"), Err(LndError::Config(_))));
    assert!(matches!(macaroon_hex(""), Err(LndError::Config(_))));
    assert_eq!(macaroon_hex(" 0201ABcd \n").unwrap(), "0201abcd");
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("admin.macaroon");
    std::fs::write(&bin, [0x02u8, 0x01, 0x03, 0xff, 0x00]).unwrap();
    assert_eq!(load_macaroon(&bin).unwrap(), "020103ff00");
    let text = dir.path().join("admin.macaroon.hex");
    std::fs::write(&text, "020103FF00\n").unwrap();
    assert_eq!(load_macaroon(&text).unwrap(), "020103ff00");
    assert!(matches!(
        load_macaroon(&dir.path().join("missing")),
        Err(LndError::Io { .. })
    ));
    let cert = dir.path().join("tls.cert");
    let (pem, _) = self_signed_cert().unwrap();
    std::fs::write(&cert, &pem).unwrap();
    let cfg = LndConfig::from_files(
        "https://127.0.0.1:8080",
        Some(&cert),
        &bin,
        Network::Regtest,
    )
    .unwrap();
    assert_eq!(cfg.tls_cert_pem.as_deref(), Some(pem.as_str()));
    assert_eq!(cfg.macaroon_hex, "020103ff00");
    // Secrets stay out of debug output.
    assert!(!format!("{cfg:?}").contains("020103ff00"));
    assert!(LndRest::new(cfg).is_ok());
    let bad = LndConfig::new("127.0.0.1:8080", None, "00", Network::Regtest);
    assert!(matches!(LndRest::new(bad), Err(LndError::Config(_))));
    let bad = LndConfig::new(
        "https://127.0.0.1:8080",
        Some("garbage".to_owned()),
        "00",
        Network::Regtest,
    );
    assert!(matches!(LndRest::new(bad), Err(LndError::Config(_))));
}
