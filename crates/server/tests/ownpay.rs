//! Paying our own invoices: a withdraw pays exactly the invoice it was given. One of our invoices
//! with any field rewritten (and its checksum recomputed, so the text parses) is somebody else's
//! invoice: it is refused or sent to the node like any outside invoice, never settled internally
//! at the amount we stored. Each scenario runs on SQLite and Postgres and ends with a clean audit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::str::FromStr as _;

use bitcoin::hashes::{Hash as _, sha256};
use bitcoin::secp256k1::{Secp256k1, SecretKey};
use common::{TestServer, WalletKeys, on_each_db};
use lightning::types::features::Bolt11InvoiceFeatures;
use lightning_invoice::{
    Currency, Description, ExpiryTime, MinFinalCltvExpiryDelta, PayeePubKey, PaymentSecret,
    PositiveTimestamp, PrivateRoute, RawBolt11Invoice, RawTaggedField, RouteHint, RouteHintHop,
    RoutingFees, Sha256, SiPrefix, SignedRawBolt11Invoice, TaggedField,
};
use reqwest::StatusCode;
use satchel_domain::{Bolt11, PaymentHash};
use satchel_lightning::{InvoiceState, Invoices as _};
use serde_json::json;

/// The stored invoice's amount: what an internal settlement would debit.
const STORED_SATS: u64 = 20_000;
/// What the payer holds.
const FUNDS_SATS: u64 = 50_000;

/// Re-encodes `text` after `edit` changed its fields, keeping the original signature (the
/// checksum is recomputed; the signature then recovers to some other key).
fn rewrite(text: &str, edit: impl FnOnce(&mut RawBolt11Invoice)) -> String {
    let (mut raw, _, sig) = SignedRawBolt11Invoice::from_str(text).unwrap().into_parts();
    edit(&mut raw);
    raw.sign::<_, ()>(|_| Ok(sig.0)).unwrap().to_string()
}

/// Re-encodes `text` after `edit`, signed by a stranger's key (a valid invoice of the
/// stranger's, carrying whatever `edit` left in it, e.g. our payment hash).
fn resign_as_stranger(text: &str, edit: impl FnOnce(&mut RawBolt11Invoice)) -> String {
    let (mut raw, _, _) = SignedRawBolt11Invoice::from_str(text).unwrap().into_parts();
    edit(&mut raw);
    let key = SecretKey::from_slice(&[0x42; 32]).unwrap();
    let secp = Secp256k1::new();
    raw.sign::<_, ()>(|msg| Ok(secp.sign_ecdsa_recoverable(msg, &key)))
        .unwrap()
        .to_string()
}

fn set_amount_msat(raw: &mut RawBolt11Invoice, msat: Option<u64>) {
    match msat {
        // 1 nBTC = 100 msat.
        Some(m) => {
            assert_eq!(m % 100, 0);
            raw.hrp.raw_amount = Some(m / 100);
            raw.hrp.si_prefix = Some(SiPrefix::Nano);
        }
        None => {
            raw.hrp.raw_amount = None;
            raw.hrp.si_prefix = None;
        }
    }
}

/// Replaces the first field `pick` selects with `field` (appends it if none).
fn replace_field(
    raw: &mut RawBolt11Invoice,
    pick: impl Fn(&TaggedField) -> bool,
    field: TaggedField,
) {
    let fields = &mut raw.data.tagged_fields;
    match fields
        .iter()
        .position(|f| matches!(f, RawTaggedField::KnownSemantics(k) if pick(k)))
    {
        Some(i) => fields[i] = RawTaggedField::KnownSemantics(field),
        None => fields.push(RawTaggedField::KnownSemantics(field)),
    }
}

fn drop_field(raw: &mut RawBolt11Invoice, pick: impl Fn(&TaggedField) -> bool) {
    raw.data
        .tagged_fields
        .retain(|f| !matches!(f, RawTaggedField::KnownSemantics(k) if pick(k)));
}

fn stranger_pubkey() -> bitcoin::secp256k1::PublicKey {
    let key = SecretKey::from_slice(&[0x43; 32]).unwrap();
    bitcoin::secp256k1::PublicKey::from_secret_key(&Secp256k1::new(), &key)
}

/// The rewrites an attacker can make to one of our invoices, by field.
fn crafted_variants(
    ours: &str,
    our_payee: bitcoin::secp256k1::PublicKey,
) -> Vec<(&'static str, String)> {
    let stored_msat = STORED_SATS * 1000;
    let timestamp = |raw: &RawBolt11Invoice| raw.data.timestamp.as_unix_timestamp();
    let mut features = Bolt11InvoiceFeatures::empty();
    features.set_variable_length_onion_required();
    features.set_payment_secret_required();
    vec![
        (
            "amount up",
            rewrite(ours, |r| set_amount_msat(r, Some(stored_msat * 10))),
        ),
        (
            "amount down (10n)",
            rewrite(ours, |r| set_amount_msat(r, Some(1000))),
        ),
        (
            "amount removed",
            rewrite(ours, |r| set_amount_msat(r, None)),
        ),
        (
            "payee n added: ours",
            rewrite(ours, |r| {
                replace_field(
                    r,
                    |f| matches!(f, TaggedField::PayeePubKey(_)),
                    TaggedField::PayeePubKey(PayeePubKey(our_payee)),
                )
            }),
        ),
        (
            "payee n added: a stranger",
            rewrite(ours, |r| {
                replace_field(
                    r,
                    |f| matches!(f, TaggedField::PayeePubKey(_)),
                    TaggedField::PayeePubKey(PayeePubKey(stranger_pubkey())),
                )
            }),
        ),
        (
            "payee n dropped, amount 10n",
            rewrite(ours, |r| {
                drop_field(r, |f| matches!(f, TaggedField::PayeePubKey(_)));
                set_amount_msat(r, Some(1000));
            }),
        ),
        (
            "description",
            rewrite(ours, |r| {
                replace_field(
                    r,
                    |f| {
                        matches!(
                            f,
                            TaggedField::Description(_) | TaggedField::DescriptionHash(_)
                        )
                    },
                    TaggedField::Description(Description::new("something else".into()).unwrap()),
                )
            }),
        ),
        (
            "description hash",
            rewrite(ours, |r| {
                replace_field(
                    r,
                    |f| {
                        matches!(
                            f,
                            TaggedField::Description(_) | TaggedField::DescriptionHash(_)
                        )
                    },
                    TaggedField::DescriptionHash(Sha256(sha256::Hash::hash(b"other"))),
                )
            }),
        ),
        (
            "our payment hash in a stranger's invoice, 10n",
            resign_as_stranger(ours, |r| set_amount_msat(r, Some(1000))),
        ),
        (
            "our payment hash in a stranger's invoice, same amount",
            resign_as_stranger(ours, |_| {}),
        ),
        (
            "expiry",
            rewrite(ours, |r| {
                replace_field(
                    r,
                    |f| matches!(f, TaggedField::ExpiryTime(_)),
                    TaggedField::ExpiryTime(ExpiryTime::from_seconds(86_400 * 30)),
                )
            }),
        ),
        (
            "network (HRP)",
            rewrite(ours, |r| r.hrp.currency = Currency::Bitcoin),
        ),
        (
            "payment secret",
            rewrite(ours, |r| {
                replace_field(
                    r,
                    |f| matches!(f, TaggedField::PaymentSecret(_)),
                    TaggedField::PaymentSecret(PaymentSecret([9; 32])),
                )
            }),
        ),
        (
            "min_final_cltv",
            rewrite(ours, |r| {
                replace_field(
                    r,
                    |f| matches!(f, TaggedField::MinFinalCltvExpiryDelta(_)),
                    TaggedField::MinFinalCltvExpiryDelta(MinFinalCltvExpiryDelta(400)),
                )
            }),
        ),
        (
            "route hint added",
            rewrite(ours, |r| {
                let hop = RouteHintHop {
                    src_node_id: stranger_pubkey(),
                    short_channel_id: 42,
                    fees: RoutingFees {
                        base_msat: 0,
                        proportional_millionths: 0,
                    },
                    cltv_expiry_delta: 40,
                    htlc_minimum_msat: None,
                    htlc_maximum_msat: None,
                };
                r.data.tagged_fields.push(RawTaggedField::KnownSemantics(
                    TaggedField::PrivateRoute(PrivateRoute::new(RouteHint(vec![hop])).unwrap()),
                ));
            }),
        ),
        (
            "feature bits",
            rewrite(ours, |r| {
                let mut f = features.clone();
                let current = r.data.tagged_fields.iter().find_map(|t| match t {
                    RawTaggedField::KnownSemantics(TaggedField::Features(f)) => Some(f.clone()),
                    _ => None,
                });
                if current.as_ref() == Some(&f) {
                    f.set_basic_mpp_optional();
                }
                replace_field(
                    r,
                    |t| matches!(t, TaggedField::Features(_)),
                    TaggedField::Features(f),
                )
            }),
        ),
        (
            "timestamp",
            rewrite(ours, |r| {
                r.data.timestamp =
                    PositiveTimestamp::from_unix_timestamp(timestamp(r) - 60).unwrap()
            }),
        ),
    ]
}

async fn invoice_settled(s: &TestServer, payee: &WalletKeys, hash: PaymentHash) -> bool {
    let r = s
        .get(&s.sak, &format!("/wallet/{}/transactions", payee.waka))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["lnTx"]["r_hash_decoded"] == hash.to_hex() && t["lnTx"]["settled"] == 1)
}

/// Every rewritten field: the withdraw is refused or paid as an outside invoice (which fails on
/// the scripted node: a stranger payee), the payer ends where it started, the payee is not
/// credited, and our invoice stays open on the node and in the ledger. Then the real invoice
/// pays once, at its amount.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rewritten_own_invoice_is_never_settled_internally() {
    on_each_db(|s| async move {
        let payer = s.create_wallet("payer").await;
        let payee = s.create_wallet("payee").await;
        s.fund(&payer, FUNDS_SATS).await;
        let funded = s.balance_msat(&payer).await;
        let lntx = s.invoice(&payee, STORED_SATS).await;
        let ours = lntx["payment_request"].as_str().unwrap().to_owned();
        let genuine = Bolt11::parse(&ours).unwrap();
        let hash = genuine.payment_hash();
        let our_payee = bitcoin::secp256k1::PublicKey::from_slice(&s.scripted.pubkey().0).unwrap();
        for (field, text) in crafted_variants(&ours, our_payee) {
            assert_ne!(text, ours, "{field}: not rewritten");
            // What the text says, if it parses: never our node with our amount.
            if let Ok(b) = Bolt11::parse(&text) {
                assert!(
                    b.payee() != genuine.payee() || b.amount() != genuine.amount(),
                    "{field}: the rewrite kept payee and amount"
                );
            }
            let r = s
                .post(
                    &s.sak,
                    &format!("/wallet/{}/withdraw", payer.waka),
                    json!({ "payment_request": text }),
                )
                .await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{field}: {}", r.text);
            assert_ne!(
                r.json["message"], "invoice is already paid",
                "{field}: {}",
                r.text
            );
            assert_eq!(
                s.balance_msat(&payer).await,
                funded,
                "{field}: payer charged"
            );
            assert_eq!(s.balance_msat(&payee).await, 0, "{field}: payee credited");
            assert!(!invoice_settled(&s, &payee, hash).await, "{field}");
            // Nobody can cancel the invoice on the node by failing to pay it.
            assert_eq!(
                s.scripted.lookup_invoice(hash).await.unwrap(),
                Some(InvoiceState::Open),
                "{field}: our invoice was taken off the node"
            );
        }
        // The invoice as issued: paid once, internally, at its amount.
        let stored_msat = i64::try_from(STORED_SATS * 1000).unwrap();
        let r = s
            .post(
                &s.sak,
                &format!("/wallet/{}/withdraw", payer.waka),
                json!({ "payment_request": ours }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(s.balance_msat(&payer).await, funded - stored_msat);
        assert_eq!(s.balance_msat(&payee).await, stored_msat);
        assert_eq!(
            s.scripted.lookup_invoice(hash).await.unwrap(),
            Some(InvoiceState::Canceled),
            "taken off the node before the internal settlement"
        );
        let again = s
            .post(
                &s.sak,
                &format!("/wallet/{}/withdraw", payer.waka),
                json!({ "payment_request": ours }),
            )
            .await;
        assert_eq!(again.status, StatusCode::BAD_REQUEST, "{}", again.text);
        assert_eq!(s.balance_msat(&payer).await, funded - stored_msat);
        assert_eq!(s.balance_msat(&payee).await, stored_msat);
        assert_eq!(s.running().store.audit().await.unwrap().unclaimed_msat, 0);
        s
    })
    .await;
}

/// Refused internal payments leave the invoice payable from outside (a cancel on the node
/// cannot be undone, so nothing is taken from the node for a payment the ledger refuses).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_internal_payment_leaves_the_invoice_on_the_node() {
    on_each_db(|s| async move {
        let poor = s.create_wallet("poor").await;
        let payee = s.create_wallet("payee").await;
        let lntx = s.invoice(&payee, 1000).await;
        let inv = Bolt11::parse(lntx["payment_request"].as_str().unwrap()).unwrap();
        let r = s
            .post(
                &s.sak,
                &format!("/wallet/{}/withdraw", poor.waka),
                json!({ "payment_request": inv.as_str() }),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        assert_eq!(
            s.scripted.lookup_invoice(inv.payment_hash()).await.unwrap(),
            Some(InvoiceState::Open)
        );
        // And it is still paid from outside, once.
        s.scripted.pay_our_invoice(&inv, None).unwrap();
        s.wait_balance_msat(&payee, 1_000_000).await;
        assert_eq!(s.balance_msat(&poor).await, 0);
        s
    })
    .await;
}
