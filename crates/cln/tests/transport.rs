#![allow(clippy::unwrap_used, clippy::expect_used)]

//! The two transports on their own: JSON-RPC framing on the unix socket, CLNRest's rune check
//! and the pinned TLS certificate. The fake here runs on the scripted backend (no devnet).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use satchel_cln::{
    ClnBackend, ClnConfig, ClnError, ClnTransport, RestTransport, RpcError, SocketTransport,
};
use satchel_domain::Network;
use satchel_fakes::cln::{FakeCln, FakeRestConfig};
use satchel_lightning::{Invoices, LnError, NodeInfo};
use satchel_scripted::ScriptedBackend;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixListener;

const T: Duration = Duration::from_secs(5);

fn scripted_fake() -> (Arc<ScriptedBackend>, FakeCln) {
    let backend = Arc::new(ScriptedBackend::new(Network::Regtest, [7; 32]));
    let fake = FakeCln::start(backend.clone());
    (backend, fake)
}

/// Reads one JSON object from a raw stream (test side).
async fn read_request(stream: &mut tokio::net::UnixStream) -> Value {
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "client closed before sending a request");
        buf.extend_from_slice(&chunk[..n]);
        if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
            return v;
        }
    }
}

/// A hand-written `lightningd` stand-in: checks the request's framing and answers in
/// fragments, with a notification first and CLN's blank-line terminator.
#[tokio::test]
async fn socket_json_rpc_framing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lightning-rpc");
    let listener = UnixListener::bind(&path).unwrap();
    let server = tokio::spawn(async move {
        // 1: a result, fragmented, after a notification.
        let (mut s, _) = listener.accept().await.unwrap();
        let req = read_request(&mut s).await;
        assert_eq!(req["jsonrpc"], "2.0");
        assert!(req["id"].is_u64(), "numeric id: {req}");
        assert_eq!(req["method"], "getinfo");
        assert!(req["params"].is_object(), "params are named: {req}");
        let id = req["id"].clone();
        let note = br#"{"jsonrpc":"2.0","method":"log","params":{"level":"info","message":"hi"}}"#;
        s.write_all(note).await.unwrap();
        let response = serde_json::to_vec(&json!({
            "jsonrpc": "2.0",
            "id": id,
            "result": {"id": "02aa", "nested": {"s": "}{\"", "n": [1, 2]}}
        }))
        .unwrap();
        for chunk in response.chunks(7) {
            s.write_all(chunk).await.unwrap();
            s.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // The client may already have hung up: it has a complete object.
        let _ = s.write_all(b"\n\n").await;

        // 2: an error object with data.
        let (mut s, _) = listener.accept().await.unwrap();
        let req = read_request(&mut s).await;
        assert_eq!(req["params"], json!({"label": "x", "status": "unpaid"}));
        let resp = json!({"jsonrpc": "2.0", "id": req["id"], "error": {
            "code": 906, "message": "Invoice status is paid not unpaid",
            "data": {"current_status": "paid", "expected_status": "unpaid"}}});
        let _ = s.write_all(format!("{resp}\n\n").as_bytes()).await;

        // 3: an answer for another id.
        let (mut s, _) = listener.accept().await.unwrap();
        let req = read_request(&mut s).await;
        let other = req["id"].as_u64().unwrap() + 1000;
        let resp = json!({"jsonrpc": "2.0", "id": other, "result": {}});
        let _ = s.write_all(format!("{resp}\n\n").as_bytes()).await;

        // 4: closed mid-response.
        let (mut s, _) = listener.accept().await.unwrap();
        let _ = read_request(&mut s).await;
        s.write_all(br#"{"jsonrpc":"2.0","id":4,"res"#)
            .await
            .unwrap();
        drop(s);

        // 5: garbage.
        let (mut s, _) = listener.accept().await.unwrap();
        let _ = read_request(&mut s).await;
        s.write_all(b"<html>502</html>\n\n").await.unwrap();

        // 6: never answers.
        let (mut s, _) = listener.accept().await.unwrap();
        let _ = read_request(&mut s).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(s);
    });

    let rpc = SocketTransport::new(&path);
    let got = rpc.call("getinfo", json!({}), T).await.unwrap();
    assert_eq!(
        got,
        json!({"id": "02aa", "nested": {"s": "}{\"", "n": [1, 2]}})
    );

    let err = rpc
        .call("delinvoice", json!({"label": "x", "status": "unpaid"}), T)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        RpcError::Rpc {
            code: 906,
            message: "Invoice status is paid not unpaid".to_owned(),
            data: Some(json!({"current_status": "paid", "expected_status": "unpaid"})),
        }
    );

    let err = rpc.call("getinfo", json!({}), T).await.unwrap_err();
    assert!(
        matches!(err, RpcError::Transport(ref m) if m.contains("expected")),
        "{err:?}"
    );
    let err = rpc.call("getinfo", json!({}), T).await.unwrap_err();
    assert!(
        matches!(err, RpcError::Transport(ref m) if m.contains("closed")),
        "{err:?}"
    );
    let err = rpc.call("getinfo", json!({}), T).await.unwrap_err();
    assert!(
        matches!(err, RpcError::Transport(ref m) if m.contains("malformed")),
        "{err:?}"
    );
    let err = rpc
        .call("getinfo", json!({}), Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RpcError::Transport(ref m) if m.contains("no response")),
        "{err:?}"
    );
    server.await.unwrap();

    // Nobody listening: a transport error, not a panic or a hang.
    drop(dir);
    let err = rpc.call("getinfo", json!({}), T).await.unwrap_err();
    assert!(matches!(err, RpcError::Transport(_)), "{err:?}");
}

/// The fake reads requests object by object like lightningd: several on one connection,
/// without delimiters, answered by id; bad requests get JSON-RPC errors.
#[tokio::test]
async fn fake_socket_speaks_lightningd_framing() {
    let (_backend, fake) = scripted_fake();
    let dir = tempfile::tempdir().unwrap();
    let sock = fake
        .serve_socket(dir.path().join("lightning-rpc"))
        .await
        .unwrap();
    let mut s = tokio::net::UnixStream::connect(sock.path()).await.unwrap();
    // Two requests back to back, no separator, the second split in two writes.
    s.write_all(
        br#"{"jsonrpc":"2.0","id":"a","method":"getinfo","params":{}}{"jsonrpc":"2.0","id":"#,
    )
    .await
    .unwrap();
    s.write_all(br#"7,"method":"nosuch","params":{}}"#)
        .await
        .unwrap();
    s.write_all(br#"{"id":8,"method":"getinfo","params":{}}"#)
        .await
        .unwrap();
    s.write_all(br#"{"jsonrpc":"2.0","id":9,"method":"getinfo","params":{"bogus":1}}"#)
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut answers: Vec<Value> = Vec::new();
    while answers.len() < 4 {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(T, s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8(buf.clone()).unwrap();
        answers = text
            .split("\n\n")
            .filter(|p| !p.trim().is_empty())
            .filter_map(|p| serde_json::from_str(p).ok())
            .collect();
    }
    let by_id = |id: Value| answers.iter().find(|a| a["id"] == id).cloned().unwrap();
    assert!(by_id(json!("a"))["result"]["id"].is_string());
    assert_eq!(by_id(json!("a"))["result"]["network"], "regtest");
    assert_eq!(by_id(json!(7))["error"]["code"], -32601);
    assert_eq!(by_id(json!(8))["error"]["code"], -32600);
    assert_eq!(by_id(json!(9))["error"]["code"], -32602);
    assert!(
        by_id(json!(9))["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("unknown parameter: bogus")
    );
}

#[tokio::test]
async fn rest_rune_is_checked() {
    let (backend, fake) = scripted_fake();
    let certs = self_signed();
    let rest = fake
        .serve_rest(FakeRestConfig {
            rune: RUNE.to_owned(),
            cert_pem: certs.cert_pem.clone(),
            key_pem: certs.key_pem.clone(),
        })
        .await
        .unwrap();

    // The right rune.
    let ok = ClnBackend::connect(&ClnConfig::rest(
        rest.url(),
        RUNE,
        certs.cert_pem.clone(),
        Network::Regtest,
    ))
    .await
    .unwrap();
    assert_eq!(ok.node_info().await.unwrap().pubkey, backend.pubkey());

    // A wrong rune: refused before anything runs.
    let calls = fake.calls("getinfo");
    let err = ClnBackend::connect(&ClnConfig::rest(
        rest.url(),
        "bm90IGEgcnVuZQ==",
        certs.cert_pem.clone(),
        Network::Regtest,
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(&err, ClnError::Node(LnError::Rejected(m)) if m.contains("rune")),
        "{err:?}"
    );
    assert_eq!(fake.calls("getinfo"), calls, "a refused call must not run");
    let wrong = ClnBackend::new(&ClnConfig::rest(
        rest.url(),
        "bm90IGEgcnVuZQ==",
        certs.cert_pem.clone(),
        Network::Regtest,
    ))
    .unwrap();
    let err = wrong
        .create_invoice(new_invoice(Some(sats(1)), "x"))
        .await
        .unwrap_err();
    assert!(matches!(err, LnError::Rejected(_)), "{err:?}");
    assert_eq!(fake.calls("invoice"), 0);

    // At the transport level: 401 is Unauthorized, and a missing rune (403) as well.
    let raw = RestTransport::new(&rest.url(), "bm90IGEgcnVuZQ==", &certs.cert_pem).unwrap();
    assert!(matches!(
        raw.call("getinfo", json!({}), T).await,
        Err(RpcError::Unauthorized(m)) if m.contains("401")
    ));
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(
            satchel_cln::transport::pinned_tls_config(&certs.cert_pem).unwrap(),
        )
        .build()
        .unwrap();
    let resp = client
        .post(format!("{}/v1/getinfo", rest.url()))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);

    // CLNRest passes JSON-RPC errors through (500 + error object).
    let rpc = RestTransport::new(&rest.url(), RUNE, &certs.cert_pem).unwrap();
    assert!(matches!(
        rpc.call("nosuch", json!({}), T).await,
        Err(RpcError::Rpc { code: -32601, .. })
    ));
    assert!(matches!(
        rpc.call("listinvoices", json!({"bogus": true}), T).await,
        Err(RpcError::Rpc { code: -32602, .. })
    ));
}

#[tokio::test]
async fn rest_tls_pins_the_certificate() {
    let (backend, fake) = scripted_fake();
    let (ca, server) = cln_style_certs();
    let rest = fake
        .serve_rest(FakeRestConfig {
            rune: RUNE.to_owned(),
            cert_pem: server.cert_pem.clone(),
            key_pem: server.key_pem.clone(),
        })
        .await
        .unwrap();
    let connect = |pem: String| {
        let url = rest.url();
        async move { ClnBackend::connect(&ClnConfig::rest(url, RUNE, pem, Network::Regtest)).await }
    };

    // The server's own certificate (CLN's server.pem): accepted although it is for the names
    // `cln`/`localhost`, not 127.0.0.1, and issued by a CA nobody trusts.
    let b = connect(server.cert_pem.clone()).await.unwrap();
    assert_eq!(b.node_info().await.unwrap().pubkey, backend.pubkey());

    // Another certificate: the handshake fails and nothing runs.
    let calls = fake.calls("getinfo");
    let other = self_signed();
    let err = connect(other.cert_pem).await.unwrap_err();
    assert!(
        matches!(&err, ClnError::Node(LnError::Transport(_))),
        "{err:?}"
    );
    // The CA that signed the server certificate is not a pin of the server certificate.
    let err = connect(ca.cert_pem.clone()).await.unwrap_err();
    assert!(
        matches!(&err, ClnError::Node(LnError::Transport(_))),
        "{err:?}"
    );
    assert_eq!(fake.calls("getinfo"), calls);
    // A bundle containing the right certificate works.
    let bundle = format!("{}{}", ca.cert_pem, server.cert_pem);
    connect(bundle).await.unwrap();

    // Configuration errors.
    assert!(matches!(
        RestTransport::new(&rest.url(), RUNE, "not a pem"),
        Err(ClnError::Config(_))
    ));
    assert!(matches!(
        RestTransport::new(&rest.url().replace("https", "http"), RUNE, &server.cert_pem),
        Err(ClnError::Config(_))
    ));
    assert!(matches!(
        RestTransport::new(&rest.url(), " ", &server.cert_pem),
        Err(ClnError::Config(_))
    ));
}

#[tokio::test]
async fn connect_checks_the_network() {
    let (_backend, fake) = scripted_fake();
    let dir = tempfile::tempdir().unwrap();
    let sock = fake
        .serve_socket(dir.path().join("lightning-rpc"))
        .await
        .unwrap();
    let err = ClnBackend::connect(&ClnConfig::socket(sock.path(), Network::Bitcoin))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClnError::WrongNetwork { node, .. } if node == "regtest"),
        "{err:?}"
    );
    let ok = ClnBackend::connect(&ClnConfig::socket(sock.path(), Network::Regtest))
        .await
        .unwrap();
    assert_eq!(ok.node_info().await.unwrap().network, Network::Regtest);
    // Nothing listening.
    let err = ClnBackend::connect(&ClnConfig::socket(
        dir.path().join("nope"),
        Network::Regtest,
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(&err, ClnError::Node(LnError::Transport(_))),
        "{err:?}"
    );
}
