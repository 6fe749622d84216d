#![allow(clippy::unwrap_used, clippy::expect_used)]

//! Two bare nodes (no devnet): channel, payments both ways, restart of one side with automatic
//! reconnection, self-payments.

mod common;

use std::time::{Duration, Instant};

use common::*;
use satchel_domain::{CustomRecords, Msat, Network, Preimage};
use satchel_ldk::{LdkConfig, LdkNode};
use satchel_lightning::{
    IncomingKind, InvoiceEvents, Invoices, NodeInfo, PayOutcome, PayRequest, PayTarget, Payments,
};

async fn wait_usable(node: &LdkNode) {
    let t = Instant::now();
    while !node.channels_ready() {
        assert!(t.elapsed() < Duration::from_secs(15), "channel not usable");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn config(dir: &std::path::Path, name: &str) -> LdkConfig {
    let mut c = LdkConfig::new(dir.join(name));
    c.alias = name.to_owned();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pair_pays_both_ways_and_survives_a_restart() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let a = LdkNode::start(config(dir.path(), "a")).await.unwrap();
    let b = LdkNode::start(config(dir.path(), "b")).await.unwrap();
    let info = a.node_info().await.unwrap();
    assert_eq!(info.network, Network::Regtest);
    assert_eq!(info.alias, "a");
    assert_eq!(info.pubkey, a.pubkey());

    // One node per data directory.
    assert!(LdkNode::start(config(dir.path(), "a")).await.is_err());

    a.connect(b.pubkey(), b.listen_addr()).await.unwrap();
    b.open_channel(a.pubkey(), 1_000_000, 400_000_000)
        .await
        .unwrap();
    wait_usable(&a).await;
    wait_usable(&b).await;

    let inv = a
        .create_invoice(new_invoice(Some(sats(1_000)), "a1"))
        .await
        .unwrap();
    // Our invoices are what LDK would make (same route hints), and verify.
    for amount in [
        None,
        Some(1_000),
        Some(1_000_000),
        Some(399_000_000),
        Some(10_000_000_000),
    ] {
        a.check_invoices_against_ldk(amount).unwrap();
        b.check_invoices_against_ldk(amount).unwrap();
    }
    // Our invoices carry route hints; the cheap hash reader must still find the hash.
    assert_eq!(
        satchel_domain::Bolt11::payment_hash_hint(inv.as_str()),
        Some(inv.payment_hash())
    );
    assert!(matches!(
        b.pay(pay_invoice(&inv, Msat::ZERO)).await.unwrap(),
        PayOutcome::Succeeded { .. }
    ));
    let inv = b
        .create_invoice(new_invoice(Some(sats(500)), "b1"))
        .await
        .unwrap();
    assert!(matches!(
        a.pay(pay_invoice(&inv, Msat::ZERO)).await.unwrap(),
        PayOutcome::Succeeded { .. }
    ));
    let a_out = a.list_channels()[0].outbound_msat;

    // Restart a: same key, same channel, same balance; it reconnects to b by itself.
    let addr = a.listen_addr();
    let pubkey = a.pubkey();
    a.stop().await.unwrap();
    a.stop().await.unwrap(); // twice is fine
    let a = LdkNode::start(config(dir.path(), "a")).await.unwrap();
    assert_eq!(a.pubkey(), pubkey);
    assert_eq!(a.listen_addr(), addr, "the remembered port is reused");
    wait_usable(&a).await;
    wait_usable(&b).await;
    assert_eq!(a.list_channels()[0].outbound_msat, a_out);

    let inv = a
        .create_invoice(new_invoice(Some(sats(2_000)), "a2"))
        .await
        .unwrap();
    assert!(matches!(
        b.pay(pay_invoice(&inv, Msat::ZERO)).await.unwrap(),
        PayOutcome::Succeeded { .. }
    ));
    let events = a.events_after(0, 10, Duration::from_secs(5)).await.unwrap();
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);

    // Self-payments settle locally, fee 0, and appear in the incoming stream.
    let req = new_invoice(Some(sats(7)), "self");
    let preimage = req.preimage;
    let own = a.create_invoice(req).await.unwrap();
    assert_eq!(
        a.pay(pay_invoice(&own, Msat::ZERO)).await.unwrap(),
        PayOutcome::Succeeded {
            preimage,
            fee: Msat::ZERO
        }
    );
    assert_eq!(
        a.pay(pay_invoice(&own, Msat::ZERO)).await.unwrap(),
        PayOutcome::Succeeded {
            preimage,
            fee: Msat::ZERO
        }
    );
    let ks = Preimage::random();
    let out = a
        .pay(PayRequest {
            target: PayTarget::Keysend {
                dest: a.pubkey(),
                amount: sats(3),
                preimage: ks,
                custom_records: CustomRecords::default(),
            },
            fee_limit: Msat::ZERO,
            timeout: Duration::from_secs(5),
        })
        .await
        .unwrap();
    assert_eq!(
        out,
        PayOutcome::Succeeded {
            preimage: ks,
            fee: Msat::ZERO
        }
    );
    let events = a.events_after(2, 10, Duration::ZERO).await.unwrap();
    assert_eq!(events.len(), 2);
    assert!(
        matches!(events[0].kind, IncomingKind::InvoiceSettled { payment_hash, .. } if payment_hash == own.payment_hash())
    );
    assert!(
        matches!(events[1].kind, IncomingKind::KeysendReceived { payment_hash, .. } if payment_hash == ks.hash())
    );

    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
