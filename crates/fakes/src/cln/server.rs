//! The fake's two front doors: `lightningd`'s unix socket and CLNRest.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::{FakeCln, Fault, RpcFailure};
use satchel_cln::transport::ObjectReader;

/// The fake's unix socket; stops accepting (and removes the socket file) when dropped.
#[derive(Debug)]
pub struct FakeSocket {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl FakeSocket {
    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for FakeSocket {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// How the fake CLNRest is set up.
#[derive(Debug, Clone)]
pub struct FakeRestConfig {
    /// The only rune accepted.
    pub rune: String,
    /// The server certificate (PEM).
    pub cert_pem: String,
    /// Its private key (PEM).
    pub key_pem: String,
}

/// The fake CLNRest server on `127.0.0.1`; stops when dropped.
#[derive(Debug)]
pub struct FakeRest {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl FakeRest {
    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }
}

impl Drop for FakeRest {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What to send back on the socket.
enum Reply {
    Json(Value),
    Garbage,
    Close,
}

impl FakeCln {
    /// Serves JSON-RPC 2.0 on a unix socket at `path`, framed like `lightningd`: requests are
    /// read object by object (no delimiter needed), several per connection and handled
    /// concurrently; each response is followed by `"\n\n"`.
    pub async fn serve_socket(&self, path: impl AsRef<Path>) -> std::io::Result<FakeSocket> {
        let path = path.as_ref().to_path_buf();
        let listener = UnixListener::bind(&path)?;
        let fake = self.clone();
        let task = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(serve_connection(fake.clone(), stream));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        });
        Ok(FakeSocket { path, task })
    }

    /// Serves CLNRest (`POST /v1/<method>`, `Rune` header, `201` + result, `500` + error
    /// object, `401`/`403` for a wrong/missing rune) over TLS on `127.0.0.1` (a free port).
    pub async fn serve_rest(&self, config: FakeRestConfig) -> std::io::Result<FakeRest> {
        let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
        let certs = CertificateDer::pem_slice_iter(config.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(config.key_pem.as_bytes())
            .map_err(|e| invalid(e.to_string()))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| invalid(e.to_string()))?;
        let tcp = TcpListener::bind("127.0.0.1:0").await?;
        let addr = tcp.local_addr()?;
        let listener = TlsListener {
            tcp,
            acceptor: TlsAcceptor::from(Arc::new(tls)),
        };
        let app = Router::new()
            .route("/v1/{method}", post(rest_call))
            .with_state(RestState {
                fake: self.clone(),
                rune: Arc::from(config.rune.as_str()),
            });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeRest { addr, task })
    }
}

async fn serve_connection(fake: FakeCln, stream: UnixStream) {
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Reply>();
    let writer = tokio::spawn(async move {
        while let Some(reply) = rx.recv().await {
            let bytes = match reply {
                Reply::Json(v) => {
                    let mut b = serde_json::to_vec(&v).unwrap_or_default();
                    b.extend_from_slice(b"\n\n");
                    b
                }
                Reply::Garbage => {
                    let _ = wr
                        .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":<html>oops\n\n")
                        .await;
                    let _ = wr.shutdown().await;
                    return;
                }
                Reply::Close => {
                    let _ = wr.shutdown().await;
                    return;
                }
            };
            if wr.write_all(&bytes).await.is_err() {
                return;
            }
        }
    });
    let mut reader = ObjectReader::default();
    while let Ok(request) = reader.next(&mut rd).await {
        let fake = fake.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(socket_reply(&fake, request).await);
        });
    }
    drop(tx);
    let _ = writer.await;
}

async fn socket_reply(fake: &FakeCln, request: Value) -> Reply {
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let envelope = |body: Result<Value, RpcFailure>| {
        Reply::Json(match body {
            Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
            Err(e) => json!({ "jsonrpc": "2.0", "id": id, "error": e.to_json() }),
        })
    };
    if !(id.is_string() || id.is_number()) {
        return envelope(Err(RpcFailure::new(
            -32600,
            "Expected string/primitive for id",
        )));
    }
    if request.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return envelope(Err(RpcFailure::new(
            -32600,
            "jsonrpc: \"2.0\" must be specified in the request",
        )));
    }
    let Some(method) = request.get("method").and_then(Value::as_str) else {
        return envelope(Err(RpcFailure::new(-32600, "Expected string for method")));
    };
    let params = request.get("params").cloned().unwrap_or_else(|| json!({}));
    let fault = fake.take_fault(method);
    if fault == Some(Fault::DropRequest) {
        return Reply::Close;
    }
    let result = fake.handle(method, params).await;
    match fault {
        Some(Fault::DropResponse) => Reply::Close,
        Some(Fault::Garbage) => Reply::Garbage,
        _ => envelope(result),
    }
}

#[derive(Clone)]
struct RestState {
    fake: FakeCln,
    rune: Arc<str>,
}

async fn rest_call(
    State(state): State<RestState>,
    UrlPath(method): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match headers.get("rune").map(|v| v.to_str()) {
        None => {
            return (
                StatusCode::FORBIDDEN,
                axum::Json(json!({ "code": 403, "message": "Not authorized: Missing rune" })),
            )
                .into_response();
        }
        Some(Ok(r)) if r == &*state.rune => {}
        Some(_) => {
            return (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({
                    "code": 1502,
                    "message": "Not authorized: Not derived from master",
                })),
            )
                .into_response();
        }
    }
    let params: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return (
                    StatusCode::BAD_REQUEST,
                    axum::Json(json!({ "code": -32700, "message": e.to_string() })),
                )
                    .into_response();
            }
        }
    };
    let fault = state.fake.take_fault(&method);
    if fault == Some(Fault::DropRequest) {
        return broken_response();
    }
    let result = state.fake.handle(&method, params).await;
    match fault {
        Some(Fault::DropResponse) => broken_response(),
        Some(Fault::Garbage) => (StatusCode::CREATED, "<html>bad gateway</html>").into_response(),
        _ => match result {
            Ok(v) => (StatusCode::CREATED, axum::Json(v)).into_response(),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(e.to_json())).into_response(),
        },
    }
}

/// A response whose body breaks off: the client sees the connection fail mid-answer.
fn broken_response() -> Response {
    let stream = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("connection dropped"))
    });
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = StatusCode::CREATED;
    response.headers_mut().insert(
        header::CONTENT_LENGTH,
        header::HeaderValue::from_static("100"),
    );
    response
}

/// TCP + TLS handshake, for `axum::serve`.
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            // A client that refuses our certificate ends here; keep accepting.
            if let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(5), self.acceptor.accept(stream)).await
            {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
