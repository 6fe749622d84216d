//! The loopback HTTP server: bitcoind JSON-RPC at `/` (basic auth, cookie file) and Esplora
//! REST under `/esplora`, on one listener.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::routing::post;
use base64::Engine;
use tokio::sync::oneshot;

use crate::chain::Chain;

mod esplora;
mod rpc;

/// Largest request body (a raw transaction or a JSON-RPC call): 4 MB, a block's worth.
const MAX_BODY_BYTES: usize = 4_000_000;

/// What a bitcoind RPC client needs to authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcCredentials {
    pub user: String,
    pub password: String,
    /// `user:password` in a 0600 file, as bitcoind's `.cookie`.
    pub cookie_file: PathBuf,
}

impl RpcCredentials {
    /// `base64(user:password)`, the form `lightning-block-sync`'s `RpcClient::new` takes.
    pub fn basic_auth_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", self.user, self.password))
    }
}

#[derive(Clone)]
pub(crate) struct Shared {
    pub chain: Chain,
    /// The exact `Authorization` header value accepted.
    pub auth_header: String,
}

/// A running server; stops when dropped.
pub struct ChainServer {
    /// bitcoind JSON-RPC endpoint, e.g. `http://127.0.0.1:PORT/`.
    pub rpc_url: String,
    /// Esplora base URL, e.g. `http://127.0.0.1:PORT/esplora`.
    pub esplora_url: String,
    pub credentials: RpcCredentials,
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
}

impl ChainServer {
    /// Serves `chain` on `addr` (use port 0 for a free port). Writes a fresh cookie
    /// (`__cookie__:<random>`) into the chain's directory.
    pub async fn start(chain: Chain, addr: SocketAddr) -> std::io::Result<ChainServer> {
        let password = hex::encode(rand::random::<[u8; 32]>());
        let user = "__cookie__".to_string();
        let cookie_file = chain.dir().join(".cookie");
        let _ = fs::remove_file(&cookie_file);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&cookie_file)?;
        f.write_all(format!("{user}:{password}").as_bytes())?;
        let credentials = RpcCredentials {
            user,
            password,
            cookie_file,
        };
        let shared = Shared {
            chain,
            auth_header: format!("Basic {}", credentials.basic_auth_base64()),
        };
        let app = Router::new()
            .route("/", post(rpc::handle))
            .route("/wallet/{name}", post(rpc::handle))
            .nest("/esplora", esplora::router())
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(shared);
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "chain server stopped");
            }
        });
        Ok(ChainServer {
            rpc_url: format!("http://{addr}/"),
            esplora_url: format!("http://{addr}/esplora"),
            credentials,
            addr,
            shutdown: Some(tx),
        })
    }
}

impl Drop for ChainServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub(crate) fn body_text(body: &Bytes) -> String {
    String::from_utf8_lossy(body).trim().to_string()
}
