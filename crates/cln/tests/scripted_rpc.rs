#![allow(clippy::unwrap_used, clippy::expect_used)]

//! `ClnBackend` against a scripted transport: the exact calls it makes (methods, parameter
//! names, onion payloads) and how it reads CLN's answers and error codes, including paths the
//! devnet cannot produce (a route failing mid-way and being excluded, payment timeouts).

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use satchel_cln::onion::{forward_payload, keysend_payload, parse_scid};
use satchel_cln::{ClnBackend, ClnTransport, RpcError};
use satchel_domain::{FailureReason, Network, NodePubkey, Preimage};
use satchel_lightning::{LnError, PayOutcome, PaymentLookup, Payments};
use satchel_scripted::ScriptedBackend;
use serde_json::{Value, json};

type Answer = Result<Value, RpcError>;

/// Answers calls from a script, in order, and records them.
#[derive(Debug, Default)]
struct Script {
    answers: Mutex<VecDeque<(&'static str, Answer)>>,
    calls: Mutex<Vec<(String, Value)>>,
}

impl Script {
    fn new(answers: Vec<(&'static str, Answer)>) -> Arc<Script> {
        Arc::new(Script {
            answers: Mutex::new(answers.into()),
            calls: Mutex::new(Vec::new()),
        })
    }

    fn calls(&self) -> Vec<(String, Value)> {
        self.calls.lock().unwrap().clone()
    }

    fn done(&self) {
        let left = self.answers.lock().unwrap().len();
        assert_eq!(left, 0, "unused answers; calls were {:#?}", self.calls());
    }
}

#[async_trait]
impl ClnTransport for Script {
    async fn call(&self, method: &str, params: Value, _timeout: Duration) -> Answer {
        self.calls
            .lock()
            .unwrap()
            .push((method.to_owned(), params.clone()));
        let (want, answer) = self
            .answers
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| panic!("unscripted call {method} {params}"));
        assert_eq!(method, want, "call {method} {params}");
        answer
    }
}

fn rpc_err(code: i64, message: &str) -> Answer {
    Err(RpcError::Rpc {
        code,
        message: message.to_owned(),
        data: None,
    })
}

const OURS: &str = "02eec7245d6b7d2ccb30380bfbe2a3648cd7a942653f5aa340edcea1f283686619";
const HUB: &str = "0324653eac434488002cc06bbfb7f10fe18991e35f9fe4302dbea6d2353dc0ab1c";
const ALICE: &str = "027f921585f2ac0c7c70e36110adecfd8fd14b8a99bfb3d000a283fcac358fce88";
const CAROL: &str = "03e7156ae33b0a208d0744199163177e909e80176e55d97a2f221ede0f934dd9ad";

/// `getinfo` of the oldest supported release (`pay` and `getroute`).
fn getinfo(height: u32) -> (&'static str, Answer) {
    getinfo_v(height, "v23.08")
}

/// `getinfo` of release `version`.
fn getinfo_v(height: u32, version: &str) -> (&'static str, Answer) {
    (
        "getinfo",
        Ok(
            json!({"id": OURS, "alias": "cln", "network": "regtest", "blockheight": height,
                  "version": version}),
        ),
    )
}

fn backend(script: &Arc<Script>) -> ClnBackend {
    ClnBackend::with_transport(script.clone(), Network::Regtest, Duration::from_secs(5))
}

#[tokio::test]
async fn keysend_builds_the_onion_and_retries_around_a_failed_channel() {
    let carol = NodePubkey::from_hex(CAROL).unwrap();
    let recs = records(&[(7_629_169, "{\"a\":1}"), (112_111_100_102, "wal_x")]);
    let (req, preimage) = keysend(carol, msat(100_000), recs.clone(), msat(2000));
    let hash = preimage.hash().to_hex();
    let route_a = json!({"route": [
        {"id": ALICE, "channel": "100x1x0", "direction": 0, "amount_msat": 100_500, "delay": 50, "style": "tlv"},
        {"id": CAROL, "channel": "300x3x1", "direction": 1, "amount_msat": 100_000, "delay": 40, "style": "tlv"},
    ]});
    let route_b = json!({"route": [
        {"id": HUB, "channel": "200x2x0", "direction": 1, "amount_msat": 101_100, "delay": 46, "style": "tlv"},
        {"id": CAROL, "channel": "400x4x1", "direction": 0, "amount_msat": 100_000, "delay": 40, "style": "tlv"},
    ]});
    let onion = json!({"onion": "00ab", "shared_secrets": ["11".repeat(32), "22".repeat(32)]});
    let pending = json!({"id": 1, "payment_hash": hash, "status": "pending",
        "amount_msat": 100_000, "amount_sent_msat": 101_100, "created_at": 1});
    let complete = json!({"id": 2, "groupid": 2, "partid": 0, "payment_hash": hash,
        "status": "complete", "amount_msat": 100_000, "amount_sent_msat": 101_100,
        "payment_preimage": preimage.to_hex(), "created_at": 1});
    let script = Script::new(vec![
        ("listsendpays", Ok(json!({"payments": []}))),
        getinfo(100),
        getinfo(100),
        ("getroute", Ok(route_a)),
        ("createonion", Ok(onion.clone())),
        ("sendonion", Ok(pending.clone())),
        (
            "waitsendpay",
            Err(RpcError::Rpc {
                code: 204,
                message: "failed: WIRE_TEMPORARY_CHANNEL_FAILURE (reply from remote)".into(),
                data: Some(json!({"erring_index": 1, "failcode": 4103,
                    "erring_node": ALICE, "erring_channel": "300x3x1", "erring_direction": 1})),
            }),
        ),
        getinfo(101),
        ("getroute", Ok(route_b)),
        ("createonion", Ok(onion)),
        ("sendonion", Ok(pending)),
        ("waitsendpay", Ok(complete)),
    ]);
    let cln = backend(&script);
    let out = cln.pay(req).await.unwrap();
    assert_eq!(
        out,
        PayOutcome::Succeeded {
            preimage,
            fee: msat(1100)
        }
    );
    script.done();
    let calls = script.calls();
    let by = |i: usize| &calls[i].1;

    // getroute: exact amount, final CLTV 40, no fuzz; the second excludes the failed channel.
    assert_eq!(
        *by(3),
        json!({"id": CAROL, "amount_msat": 100_000, "riskfactor": 1, "cltv": 40,
               "fuzzpercent": 0, "exclude": []})
    );
    assert_eq!(by(8)["exclude"], json!(["300x3x1/1"]));

    // The onion of the second attempt at height 101: CLTVs are height + 1 + delay.
    let hops = &by(9)["hops"];
    assert_eq!(by(9)["assocdata"], json!(hash));
    assert_eq!(hops[0]["pubkey"], HUB);
    assert_eq!(
        hops[0]["payload"],
        json!(hex::encode(forward_payload(
            100_000,
            102 + 40,
            parse_scid("400x4x1").unwrap()
        )))
    );
    assert_eq!(hops[1]["pubkey"], CAROL);
    assert_eq!(
        hops[1]["payload"],
        json!(hex::encode(keysend_payload(100_000, 142, &preimage, &recs)))
    );
    // sendonion: first hop with the route's relative delay, our payment hash.
    let send = by(10);
    assert_eq!(
        send["first_hop"],
        json!({"id": HUB, "amount_msat": 101_100, "delay": 46})
    );
    assert_eq!(send["payment_hash"], json!(hash));
    assert_eq!(send["destination"], CAROL);
    assert_eq!(send["amount_msat"], 100_000);
    assert_eq!(send["shared_secrets"][1], "22".repeat(32));
    assert_eq!(by(11)["payment_hash"], json!(hash));
}

#[tokio::test]
async fn keysend_fee_above_the_limit_sends_nothing() {
    let carol = NodePubkey::from_hex(CAROL).unwrap();
    let (req, preimage) = keysend(carol, msat(100_000), Default::default(), msat(1099));
    let script = Script::new(vec![
        ("listsendpays", Ok(json!({"payments": []}))),
        getinfo(100),
        getinfo(100),
        (
            "getroute",
            Ok(json!({"route": [
                {"id": HUB, "channel": "200x2x0", "direction": 1, "amount_msat": 101_100, "delay": 46},
                {"id": CAROL, "channel": "400x4x1", "direction": 0, "amount_msat": 100_000, "delay": 40},
            ]})),
        ),
        ("listsendpays", Ok(json!({"payments": []}))),
    ]);
    let cln = backend(&script);
    assert_eq!(
        cln.pay(req).await.unwrap(),
        PayOutcome::Failed(FailureReason::NoRoute)
    );
    // Nothing in CLN, but we know it failed.
    assert_eq!(
        cln.lookup_payment(preimage.hash()).await.unwrap(),
        PaymentLookup::Failed(FailureReason::NoRoute)
    );
    script.done();
}

fn invoice(amount_msat: u64) -> (satchel_domain::Bolt11, Preimage) {
    let s = ScriptedBackend::new(Network::Regtest, [3; 32]);
    s.external_invoice(Some(msat(amount_msat)), "x", 3600)
}

fn failed_part(hash: &str) -> Value {
    json!({"payments": [{"id": 5, "groupid": 1, "partid": 1, "payment_hash": hash,
        "status": "failed", "amount_msat": 1000, "amount_sent_msat": 1010, "created_at": 1}]})
}

#[tokio::test]
async fn pay_errors_map_to_outcomes() {
    let channels = json!({"channels": [
        {"peer_id": HUB, "peer_connected": true, "state": "CHANNELD_NORMAL", "spendable_msat": 5_000_000},
        {"peer_id": ALICE, "peer_connected": false, "state": "CHANNELD_NORMAL", "spendable_msat": 9_000_000},
        {"peer_id": CAROL, "peer_connected": true, "state": "ONCHAIN", "spendable_msat": 9_000_000},
    ]});
    struct Case {
        amount: u64,
        pay: Answer,
        after: Vec<(&'static str, Answer)>,
        want: Result<PayOutcome, &'static str>,
    }
    let cases = |hash: &str, preimage: &Preimage| {
        vec![
            Case {
                amount: 1000,
                pay: Ok(
                    json!({"payment_preimage": preimage.to_hex(), "payment_hash": hash,
                    "status": "complete", "amount_msat": 1000, "amount_sent_msat": 1011,
                    "destination": CAROL, "created_at": 1.5, "parts": 1}),
                ),
                after: vec![],
                want: Ok(PayOutcome::Succeeded {
                    preimage: *preimage,
                    fee: msat(11),
                }),
            },
            Case {
                amount: 1000,
                pay: rpc_err(
                    210,
                    "Ran out of routes to try after 3 attempts: see `paystatus`",
                ),
                after: vec![
                    ("listsendpays", Ok(failed_part(hash))),
                    (
                        "waitsendpay",
                        rpc_err(204, "failed: WIRE_TEMPORARY_CHANNEL_FAILURE"),
                    ),
                    ("listpeerchannels", Ok(channels.clone())),
                ],
                want: Ok(PayOutcome::Failed(FailureReason::NoRoute)),
            },
            Case {
                amount: 6_000_000,
                pay: rpc_err(205, "Could not find a route"),
                after: vec![
                    ("listsendpays", Ok(json!({"payments": []}))),
                    ("listpeerchannels", Ok(channels.clone())),
                ],
                want: Ok(PayOutcome::Failed(FailureReason::InsufficientBalance)),
            },
            Case {
                amount: 1000,
                pay: rpc_err(206, "Fee exceeds our fee budget"),
                after: vec![
                    ("listsendpays", Ok(json!({"payments": []}))),
                    ("listpeerchannels", Ok(channels.clone())),
                ],
                want: Ok(PayOutcome::Failed(FailureReason::NoRoute)),
            },
            Case {
                amount: 1000,
                pay: rpc_err(203, "failed: WIRE_INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS"),
                after: vec![
                    ("listsendpays", Ok(failed_part(hash))),
                    ("waitsendpay", rpc_err(203, "failed")),
                ],
                want: Ok(PayOutcome::Failed(FailureReason::IncorrectPaymentDetails)),
            },
            Case {
                amount: 1000,
                pay: rpc_err(210, "Payment deadline expired, not retrying"),
                after: vec![
                    ("listsendpays", Ok(failed_part(hash))),
                    ("waitsendpay", rpc_err(204, "failed")),
                ],
                want: Ok(PayOutcome::Failed(FailureReason::Timeout)),
            },
            Case {
                amount: 1000,
                pay: rpc_err(207, "Invoice expired"),
                after: vec![("listsendpays", Ok(json!({"payments": []})))],
                want: Ok(PayOutcome::Failed(FailureReason::IncorrectPaymentDetails)),
            },
            Case {
                amount: 1000,
                pay: rpc_err(200, "payment in progress"),
                after: vec![("listsendpays", Ok(json!({"payments": []})))],
                want: Ok(PayOutcome::InFlight),
            },
            Case {
                amount: 1000,
                // An error code, but the payment is in fact pending: in flight, not failed.
                pay: rpc_err(210, "Ran out of routes"),
                after: vec![(
                    "listsendpays",
                    Ok(
                        json!({"payments": [{"id": 6, "groupid": 2, "payment_hash": hash,
                        "status": "pending", "amount_sent_msat": 1010}]}),
                    ),
                )],
                want: Ok(PayOutcome::InFlight),
            },
            Case {
                amount: 1000,
                pay: rpc_err(-32602, "Invalid bolt11: Bad bech32 string"),
                after: vec![("listsendpays", Ok(json!({"payments": []})))],
                want: Err("rejected"),
            },
            Case {
                amount: 1000,
                pay: Err(RpcError::Transport("connection reset".into())),
                after: vec![],
                want: Err("transport"),
            },
        ]
    };
    let n = cases("", &Preimage::random()).len();
    for i in 0..n {
        let (inv, preimage) = invoice(if i == 2 { 6_000_000 } else { 1000 });
        let hash = inv.payment_hash().to_hex();
        let case = cases(&hash, &preimage).remove(i);
        assert_eq!(inv.amount().unwrap().as_msat(), case.amount);
        let mut answers = vec![
            ("listsendpays", Ok(json!({"payments": []}))),
            getinfo(1),
            ("pay", case.pay),
        ];
        answers.extend(case.after);
        let script = Script::new(answers);
        let cln = backend(&script);
        let got = cln.pay(pay_invoice(&inv, msat(50))).await;
        match (case.want, got) {
            (Ok(want), Ok(got)) => assert_eq!(got, want, "case {i}"),
            (Err("rejected"), Err(LnError::Rejected(_))) => {}
            (Err("transport"), Err(LnError::Transport(_))) => {}
            (want, got) => panic!("case {i}: want {want:?}, got {got:?}"),
        }
        script.done();
        // The pay call carried the fee limit and the timeout.
        let calls = script.calls();
        assert_eq!(
            calls[2].1,
            json!({"bolt11": inv.as_str(), "maxfee": 50, "retry_for": 20}),
            "case {i}"
        );
    }
}

#[tokio::test]
async fn pay_of_an_already_paid_hash_sends_nothing() {
    let (inv, preimage) = invoice(1000);
    let hash = inv.payment_hash().to_hex();
    // Two attempts: a failed group, then a complete one of two parts.
    let parts = json!({"payments": [
        {"id": 1, "groupid": 1, "partid": 1, "payment_hash": hash, "status": "failed",
         "amount_msat": 1000, "amount_sent_msat": 1001},
        {"id": 2, "groupid": 2, "partid": 1, "payment_hash": hash, "status": "complete",
         "amount_msat": 600, "amount_sent_msat": 606, "payment_preimage": preimage.to_hex()},
        {"id": 3, "groupid": 2, "partid": 2, "payment_hash": hash, "status": "complete",
         "amount_msat": 400, "amount_sent_msat": 404, "payment_preimage": preimage.to_hex()},
    ]});
    let script = Script::new(vec![("listsendpays", Ok(parts))]);
    let cln = backend(&script);
    assert_eq!(
        cln.pay(pay_invoice(&inv, msat(50))).await.unwrap(),
        PayOutcome::Succeeded {
            preimage,
            fee: msat(10)
        }
    );
    script.done();

    // A different amount than the invoice's is refused before anything is asked.
    let script = Script::new(vec![]);
    let cln = backend(&script);
    let mut req = pay_invoice(&inv, msat(50));
    req.target = satchel_lightning::PayTarget::Bolt11 {
        invoice: inv.clone(),
        amount: msat(2000),
    };
    assert!(matches!(cln.pay(req).await, Err(LnError::Rejected(_))));
    // So is an invoice for another network.
    let main = ScriptedBackend::new(Network::Bitcoin, [3; 32]);
    let (inv, _) = main.external_invoice(Some(msat(1000)), "x", 3600);
    assert!(matches!(
        cln.pay(pay_invoice(&inv, msat(50))).await,
        Err(LnError::Rejected(_))
    ));
    script.done();
}

/// The keysend route of `keysend_builds_the_onion_and_retries_around_a_failed_channel` (via
/// HUB), as `getroutes` prints it before v26.06 (what enters each hop's start node) and from
/// v26.06 with deprecated APIs off (what crosses each channel).
fn getroutes_via_hub(new_fields: bool) -> Value {
    let path = if new_fields {
        json!([
            {"short_channel_id_dir": "200x2x0/1", "node_id_in": OURS, "node_id_out": HUB,
             "amount_in_msat": 101_100, "amount_out_msat": 101_100, "cltv_in": 46, "cltv_out": 46},
            {"short_channel_id_dir": "400x4x1/0", "node_id_in": HUB, "node_id_out": CAROL,
             "amount_in_msat": 101_100, "amount_out_msat": 100_000, "cltv_in": 46, "cltv_out": 40},
        ])
    } else {
        json!([
            {"short_channel_id_dir": "200x2x0/1", "next_node_id": HUB, "amount_msat": 101_100, "delay": 46},
            {"short_channel_id_dir": "400x4x1/0", "next_node_id": CAROL, "amount_msat": 101_100, "delay": 46},
        ])
    };
    json!({"probability_ppm": 900_000, "routes": [
        {"probability_ppm": 900_000, "amount_msat": 100_000, "final_cltv": 40, "path": path}
    ]})
}

/// From v25.02 a keysend routes with `getroutes` (our channels free, one path) and excludes a
/// failed channel or node through an askrene layer of its own, removed at the end; the onion
/// and first hop are the same as with `getroute`, whichever hop fields the node prints.
#[tokio::test]
async fn keysend_on_getroutes_excludes_through_a_layer() {
    for (version, new_fields, blame) in [
        (
            "v25.02",
            false,
            json!({"erring_channel": "300x3x1", "erring_direction": 1}),
        ),
        ("v26.06", true, json!({"erring_node": ALICE})),
    ] {
        let carol = NodePubkey::from_hex(CAROL).unwrap();
        let recs = records(&[(7_629_169, "{\"a\":1}")]);
        let (req, preimage) = keysend(carol, msat(100_000), recs.clone(), msat(2000));
        let hash = preimage.hash().to_hex();
        let onion = json!({"onion": "00ab", "shared_secrets": ["11".repeat(32), "22".repeat(32)]});
        let pending = json!({"id": 1, "payment_hash": hash, "status": "pending",
            "amount_msat": 100_000, "amount_sent_msat": 101_100, "created_at": 1});
        let complete = json!({"id": 2, "groupid": 2, "partid": 0, "payment_hash": hash,
            "status": "complete", "amount_msat": 100_000, "amount_sent_msat": 101_100,
            "payment_preimage": preimage.to_hex(), "created_at": 1});
        let exclusion = if new_fields {
            "askrene-disable-node"
        } else {
            "askrene-update-channel"
        };
        let script = Script::new(vec![
            ("listsendpays", Ok(json!({"payments": []}))),
            getinfo_v(100, version),
            getinfo_v(100, version),
            ("getroutes", Ok(getroutes_via_hub(new_fields))),
            ("createonion", Ok(onion.clone())),
            ("sendonion", Ok(pending.clone())),
            (
                "waitsendpay",
                Err(RpcError::Rpc {
                    code: 204,
                    message: "failed: WIRE_TEMPORARY_CHANNEL_FAILURE (reply from remote)".into(),
                    data: Some(blame.clone()),
                }),
            ),
            ("askrene-create-layer", Ok(json!({"layers": []}))),
            (exclusion, Ok(json!({}))),
            getinfo_v(100, version),
            ("getroutes", Ok(getroutes_via_hub(new_fields))),
            ("createonion", Ok(onion)),
            ("sendonion", Ok(pending)),
            ("waitsendpay", Ok(complete)),
            ("askrene-remove-layer", Ok(json!({}))),
        ]);
        let cln = backend(&script);
        let out = cln.pay(req).await.unwrap();
        assert_eq!(
            out,
            PayOutcome::Succeeded {
                preimage,
                fee: msat(1100)
            },
            "{version}"
        );
        script.done();
        let calls = script.calls();
        let by = |i: usize| &calls[i].1;
        let mut want = json!({"source": OURS, "destination": CAROL, "amount_msat": 100_000,
            "maxfee_msat": 2000, "final_cltv": 40,
            "layers": ["auto.localchans", "auto.sourcefree", "auto.no_mpp_support"]});
        if version >= "v25.09" {
            want["maxparts"] = json!(1);
            want["layers"] = json!(["auto.localchans", "auto.sourcefree"]);
        }
        assert_eq!(*by(3), want, "{version}");
        let layer = by(7)["layer"].as_str().unwrap().to_owned();
        assert!(
            layer.starts_with(&format!("satchel-keysend-{hash}-")),
            "{layer}"
        );
        assert_eq!(by(7), &json!({"layer": layer}));
        if new_fields {
            assert_eq!(by(8), &json!({"layer": layer, "node": ALICE}));
        } else {
            assert_eq!(
                by(8),
                &json!({"layer": layer, "short_channel_id_dir": "300x3x1/1", "enabled": false})
            );
        }
        let mut layers = want["layers"].as_array().unwrap().clone();
        layers.push(json!(layer));
        assert_eq!(by(10)["layers"], json!(layers), "{version}");
        // The onion and the first hop: as from getroute (CLTVs from height 100 + 1).
        let hops = &by(11)["hops"];
        assert_eq!(hops[0]["pubkey"], HUB);
        assert_eq!(
            hops[0]["payload"],
            json!(hex::encode(forward_payload(
                100_000,
                101 + 40,
                parse_scid("400x4x1").unwrap()
            )))
        );
        assert_eq!(
            hops[1]["payload"],
            json!(hex::encode(keysend_payload(100_000, 141, &preimage, &recs)))
        );
        assert_eq!(
            by(12)["first_hop"],
            json!({"id": HUB, "amount_msat": 101_100, "delay": 46})
        );
        assert_eq!(by(14), &json!({"layer": layer}));
    }
}

/// `getroutes`' refusals: no route or too dear → NoRoute (InsufficientBalance when our channels
/// cannot carry the amount at all), 215 → InsufficientBalance; nothing is sent either way.
#[tokio::test]
async fn keysend_on_getroutes_maps_refusals() {
    let channels = json!({"channels": [
        {"peer_id": HUB, "peer_connected": true, "state": "CHANNELD_NORMAL", "spendable_msat": 5_000_000},
    ]});
    let carol = NodePubkey::from_hex(CAROL).unwrap();
    for (amount, answer, after, want) in [
        (
            1000,
            rpc_err(205, "Unable to find a route"),
            vec![("listpeerchannels", Ok(channels.clone()))],
            FailureReason::NoRoute,
        ),
        (
            6_000_000,
            rpc_err(205, "Unable to find a route"),
            vec![("listpeerchannels", Ok(channels.clone()))],
            FailureReason::InsufficientBalance,
        ),
        (
            1000,
            rpc_err(206, "Could not find route without excessive cost"),
            vec![("listpeerchannels", Ok(channels.clone()))],
            FailureReason::NoRoute,
        ),
        (
            1000,
            rpc_err(215, "We don't have enough funds"),
            vec![],
            FailureReason::InsufficientBalance,
        ),
    ] {
        let (req, preimage) = keysend(carol, msat(amount), Default::default(), msat(50));
        let mut answers = vec![
            ("listsendpays", Ok(json!({"payments": []}))),
            getinfo_v(100, "v27.03"),
            getinfo_v(100, "v27.03"),
            ("getroutes", answer),
        ];
        answers.extend(after);
        answers.push(("listsendpays", Ok(json!({"payments": []}))));
        let script = Script::new(answers);
        let cln = backend(&script);
        assert_eq!(cln.pay(req).await.unwrap(), PayOutcome::Failed(want));
        assert_eq!(
            cln.lookup_payment(preimage.hash()).await.unwrap(),
            PaymentLookup::Failed(want)
        );
        script.done();
    }
}

/// From v24.11 an invoice is paid with `xpay` (same fee limit and timeout); its answers and
/// error codes map onto Satchel's outcomes, each only after a fresh `listsendpays`.
#[tokio::test]
async fn xpay_errors_map_to_outcomes() {
    let channels = json!({"channels": [
        {"peer_id": HUB, "peer_connected": true, "state": "CHANNELD_NORMAL", "spendable_msat": 5_000_000},
    ]});
    let none = || ("listsendpays", Ok(json!({"payments": []})));
    for (i, (amount, answer, after, want)) in [
        (
            1000,
            Ok(json!({"amount_msat": 1000, "amount_sent_msat": 1007,
                      "failed_parts": 1, "successful_parts": 1})),
            vec![],
            Ok(PayOutcome::Succeeded {
                preimage: Preimage([0; 32]),
                fee: msat(7),
            }),
        ),
        (
            1000,
            rpc_err(
                209,
                "Timed out after after 3 attempts. Failed: WIRE_TEMPORARY_CHANNEL_FAILURE. ",
            ),
            vec![
                ("__failed", Ok(Value::Null)),
                ("waitsendpay", rpc_err(204, "failed")),
            ],
            Ok(PayOutcome::Failed(FailureReason::Timeout)),
        ),
        (
            1000,
            rpc_err(
                209,
                "Failed after 2 attempts. Then routing failed: Unable to find a route",
            ),
            vec![
                ("__failed", Ok(Value::Null)),
                ("waitsendpay", rpc_err(204, "failed")),
                ("listpeerchannels", Ok(channels.clone())),
            ],
            Ok(PayOutcome::Failed(FailureReason::NoRoute)),
        ),
        (
            6_000_000,
            rpc_err(205, "Failed: Unable to find a route"),
            vec![none(), ("listpeerchannels", Ok(channels.clone()))],
            Ok(PayOutcome::Failed(FailureReason::InsufficientBalance)),
        ),
        (
            1000,
            rpc_err(215, "Failed: We don't have enough funds"),
            vec![none()],
            Ok(PayOutcome::Failed(FailureReason::InsufficientBalance)),
        ),
        (
            1000,
            rpc_err(206, "Failed: Could not find route without excessive cost"),
            vec![none(), ("listpeerchannels", Ok(channels.clone()))],
            Ok(PayOutcome::Failed(FailureReason::NoRoute)),
        ),
        (
            1000,
            rpc_err(203, "Destination said it doesn't know invoice"),
            vec![
                ("__failed", Ok(Value::Null)),
                ("waitsendpay", rpc_err(203, "failed")),
            ],
            Ok(PayOutcome::Failed(FailureReason::IncorrectPaymentDetails)),
        ),
        (
            1000,
            rpc_err(207, "Invoice expired"),
            vec![none()],
            Ok(PayOutcome::Failed(FailureReason::IncorrectPaymentDetails)),
        ),
        (
            1000,
            // Already paid, yet not by us (nothing in listsendpays): refused, nothing sent.
            rpc_err(219, "Already paid"),
            vec![none()],
            Err("rejected"),
        ),
        (
            1000,
            // Any other 209: a failure (nothing went out, nothing is outstanding).
            rpc_err(209, "Could not create payment onion: path too long!"),
            vec![none()],
            Ok(PayOutcome::Failed(FailureReason::Error)),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let (inv, preimage) = invoice(amount);
        let hash = inv.payment_hash().to_hex();
        let answer = answer.map(|mut v: Value| {
            v["payment_preimage"] = json!(preimage.to_hex());
            v
        });
        let mut answers = vec![none(), getinfo_v(1, "v24.11"), ("xpay", answer)];
        for (m, a) in after {
            answers.push(if m == "__failed" {
                ("listsendpays", Ok(failed_part(&hash)))
            } else {
                (m, a)
            });
        }
        let script = Script::new(answers);
        let cln = backend(&script);
        let got = cln.pay(pay_invoice(&inv, msat(50))).await;
        match (want, got) {
            (Ok(PayOutcome::Succeeded { fee, .. }), Ok(got)) => {
                assert_eq!(got, PayOutcome::Succeeded { preimage, fee }, "case {i}");
            }
            (Ok(want), Ok(got)) => assert_eq!(got, want, "case {i}"),
            (Err("rejected"), Err(LnError::Rejected(_))) => {}
            (want, got) => panic!("case {i}: want {want:?}, got {got:?}"),
        }
        script.done();
        assert_eq!(
            script.calls()[2].1,
            json!({"invstring": inv.as_str(), "maxfee": 50, "retry_for": 20}),
            "case {i}"
        );
    }
}

/// A node that no longer knows the command its release promised (downgraded, or a custom
/// build): the version is asked again and the payment made with what the node has; nothing is
/// sent twice.
#[tokio::test]
async fn an_unknown_payment_command_re_reads_the_version() {
    let (inv, preimage) = invoice(1000);
    let script = Script::new(vec![
        ("listsendpays", Ok(json!({"payments": []}))),
        getinfo_v(1, "v27.03"),
        ("xpay", rpc_err(-32601, "Unknown command 'xpay'")),
        getinfo_v(1, "v23.08"),
        (
            "pay",
            Ok(
                json!({"payment_preimage": preimage.to_hex(), "status": "complete",
                      "amount_msat": 1000, "amount_sent_msat": 1001,
                      "payment_hash": inv.payment_hash().to_hex(), "destination": CAROL,
                      "created_at": 1.0, "parts": 1}),
            ),
        ),
    ]);
    let cln = backend(&script);
    assert_eq!(
        cln.pay(pay_invoice(&inv, msat(50))).await.unwrap(),
        PayOutcome::Succeeded {
            preimage,
            fee: msat(1)
        }
    );
    script.done();
}
