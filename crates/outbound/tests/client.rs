//! The outbound client against real listeners on this host: refused addresses are never
//! connected to (a counting listener sees nothing), names are checked when connecting, no
//! redirects, bounded size and time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use satchel_outbound::{
    AddressPolicy, Limits, Lookup, OutboundClient, OutboundError, Refusal, Resolver, Target,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy)]
enum Answer {
    /// 200 with a short body.
    Ok,
    /// 200 with a body that never ends.
    Endless,
    /// 302 to another port on loopback.
    Redirect(u16),
    /// Never answers.
    Hang,
}

/// A listener on every local address (dual-stack `[::]`, so 127.x, 0.0.0.0, ::1 and the
/// host's own addresses all land here) that counts connections.
struct Listener {
    port: u16,
    hits: Arc<AtomicUsize>,
}

impl Listener {
    async fn start(answer: Answer) -> Listener {
        let l6 = TcpListener::bind("[::]:0").await.unwrap();
        let port = l6.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let mut listeners = vec![l6];
        // Only needed where IPv6 sockets are v6-only; otherwise the port is already taken.
        if let Ok(l4) = TcpListener::bind(("0.0.0.0", port)).await {
            listeners.push(l4);
        }
        for l in listeners {
            let hits = hits.clone();
            tokio::spawn(async move {
                while let Ok((sock, _)) = l.accept().await {
                    hits.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(serve(sock, answer));
                }
            });
        }
        Listener { port, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn serve(mut sock: TcpStream, answer: Answer) {
    let mut buf = vec![0u8; 8192];
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match sock.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let _ = match answer {
        Answer::Ok => {
            sock.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 15\r\nconnection: close\r\n\r\ninternal secret",
            )
            .await
        }
        Answer::Redirect(port) => {
            let r = format!(
                "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:{port}/next\r\ncontent-length: 0\r\n\r\n"
            );
            sock.write_all(r.as_bytes()).await
        }
        Answer::Endless => {
            if sock
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n")
                .await
                .is_err()
            {
                return;
            }
            let chunk = vec![b'x'; 16 * 1024];
            loop {
                if sock.write_all(&chunk).await.is_err() {
                    return;
                }
            }
        }
        Answer::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        }
    };
}

fn client(policy: AddressPolicy, limits: Limits) -> OutboundClient {
    OutboundClient::new(policy, limits, "satchel-test").unwrap()
}

fn limits() -> Limits {
    Limits {
        timeout: Duration::from_secs(3),
        connect_timeout: Duration::from_secs(2),
        max_response_bytes: 1024,
    }
}

/// Loopback and local forms, every one reaching the listener when allowed.
fn local_forms(p: u16) -> Vec<String> {
    [
        "http://127.0.0.1:{p}/",
        "http://127.1:{p}/",
        "http://2130706433:{p}/",
        "http://0x7f.1:{p}/",
        "http://0177.0.0.1:{p}/",
        "http://127.0.0.1.:{p}/",
        "http://127.0.0.2:{p}/",
        "http://0:{p}/",
        "http://0.0.0.0:{p}/",
        "http://[::1]:{p}/",
        "http://[::]:{p}/",
        "http://[::ffff:127.0.0.1]:{p}/",
        "http://[0:0:0:0:0:ffff:7f00:1]:{p}/",
        "http://127.0.0.1:{p}\\@1.2.3.4/",
        "http://[::1]:{p}\\@1.2.3.4/",
        "http://127.0.0.1:{p}#@1.2.3.4/",
        "http://localhost:{p}/",
        "http://LocalHost:{p}/",
    ]
    .iter()
    .map(|u| u.replace("{p}", &p.to_string()))
    .collect()
}

#[tokio::test]
async fn refused_addresses_are_never_connected_to() {
    let l = Listener::start(Answer::Ok).await;
    let c = client(AddressPolicy::new(false), limits());
    let mut forms = local_forms(l.port);
    // Forms that embed loopback but that Linux does not route to it: refused all the same.
    for u in [
        "http://[::127.0.0.1]:{p}/",
        "http://[64:ff9b::7f00:1]:{p}/",
        "http://[2002:7f00:1::]:{p}/",
        "http://[fec0::1]:{p}/",
        "http://169.254.169.254:{p}/",
        "http://[::ffff:a9fe:a9fe]:{p}/",
        "http://[fd00::2]:{p}/",
        "http://a.localhost:{p}/",
        "http://localhost.:{p}/",
    ] {
        forms.push(u.replace("{p}", &l.port.to_string()));
    }
    for u in &forms {
        let t = Target::parse(u).unwrap_or_else(|e| panic!("{u}: {e}"));
        let e = c.post(&t, &[], b"{}".to_vec()).await.unwrap_err();
        assert!(
            matches!(e, OutboundError::Refused { .. }),
            "{u}: expected a refusal, got {e:?}"
        );
        let e = c.policy().resolve(&t).await.unwrap_err();
        assert!(matches!(e, OutboundError::Refused { .. }), "{u}: {e:?}");
    }
    assert_eq!(l.hits(), 0, "the listener was reached");

    // Control: the same forms do reach it when the operator allows private addresses, so the
    // refusals above are not an accident of the test setup. (`localhost` may resolve to ::1
    // and 127.0.0.1; either lands here.)
    let open = client(AddressPolicy::new(true), limits());
    let reachable = local_forms(l.port);
    for u in &reachable {
        let t = Target::parse(u).unwrap();
        let r = open
            .post(&t, &[], b"{}".to_vec())
            .await
            .unwrap_or_else(|e| panic!("{u}: {e}"));
        assert_eq!(r.status, 200, "{u}");
        assert_eq!(r.body, b"internal secret");
    }
    assert_eq!(l.hits(), reachable.len());
}

/// Answers names from a table that can change between lookups.
#[derive(Default)]
struct TableResolver {
    answers: Mutex<HashMap<String, Vec<IpAddr>>>,
    lookups: AtomicUsize,
}

impl TableResolver {
    fn set(&self, name: &str, addrs: &[&str]) {
        self.answers.lock().unwrap().insert(
            name.to_owned(),
            addrs.iter().map(|a| a.parse().unwrap()).collect(),
        );
    }
}

struct Shared(Arc<TableResolver>);

impl Resolver for Shared {
    fn lookup(&self, host: String) -> Lookup {
        self.0.lookups.fetch_add(1, Ordering::SeqCst);
        let r = self.0.answers.lock().unwrap().get(&host).cloned();
        Box::pin(async move {
            r.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such name"))
        })
    }
}

#[tokio::test]
async fn names_are_checked_each_time_a_connection_is_made() {
    let l = Listener::start(Answer::Ok).await;
    let table = Arc::new(TableResolver::default());
    let policy = AddressPolicy::new(false).with_resolver(Arc::new(Shared(table.clone())));
    let c = client(policy.clone(), limits());
    let t = Target::parse(&format!("http://hooks.example:{}/x", l.port)).unwrap();

    // Registration-time check: public.
    table.set("hooks.example", &["93.184.216.34"]);
    assert_eq!(policy.resolve(&t).await.unwrap().len(), 1);
    // Rebound to loopback before the request: refused when connecting.
    table.set("hooks.example", &["127.0.0.1"]);
    let e = c.post(&t, &[], Vec::new()).await.unwrap_err();
    assert!(
        matches!(
            e,
            OutboundError::Refused {
                why: Refusal::Loopback,
                ..
            }
        ),
        "{e:?}"
    );
    // One refused address among public ones refuses the name.
    table.set("hooks.example", &["93.184.216.34", "::ffff:10.0.0.1"]);
    let e = c.post(&t, &[], Vec::new()).await.unwrap_err();
    assert!(
        matches!(
            e,
            OutboundError::Refused {
                why: Refusal::Private,
                ..
            }
        ),
        "{e:?}"
    );
    table.set("hooks.example", &[]);
    let e = c.post(&t, &[], Vec::new()).await.unwrap_err();
    assert!(matches!(e, OutboundError::Unresolvable(_)), "{e:?}");
    assert_eq!(l.hits(), 0);
    assert!(
        table.lookups.load(Ordering::SeqCst) >= 4,
        "the client used the resolver"
    );

    // With the override, the same name reaches the listener through the same resolver.
    table.set("hooks.example", &["127.0.0.1"]);
    let open = client(
        AddressPolicy::new(true).with_resolver(Arc::new(Shared(table.clone()))),
        limits(),
    );
    let r = open.post(&t, &[], Vec::new()).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(l.hits(), 1);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let next = Listener::start(Answer::Ok).await;
    let first = Listener::start(Answer::Redirect(next.port)).await;
    let c = client(AddressPolicy::new(true), limits());
    let t = Target::parse(&format!("http://127.0.0.1:{}/", first.port)).unwrap();
    let r = c.get(&t, &[]).await.unwrap();
    assert_eq!(r.status, 302);
    assert_eq!(first.hits(), 1);
    assert_eq!(next.hits(), 0);
}

#[tokio::test]
async fn response_size_and_time_are_bounded() {
    let endless = Listener::start(Answer::Endless).await;
    let c = client(AddressPolicy::new(true), limits());
    let t = Target::parse(&format!("http://127.0.0.1:{}/", endless.port)).unwrap();
    let started = Instant::now();
    let r = c.post(&t, &[], b"x".to_vec()).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 1024);
    assert!(r.truncated);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    let hang = Listener::start(Answer::Hang).await;
    let quick = client(
        AddressPolicy::new(true),
        Limits {
            timeout: Duration::from_millis(500),
            ..limits()
        },
    );
    let t = Target::parse(&format!("http://127.0.0.1:{}/", hang.port)).unwrap();
    let started = Instant::now();
    let e = quick.post(&t, &[], Vec::new()).await.unwrap_err();
    assert!(matches!(e, OutboundError::Timeout(_)), "{e:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}
