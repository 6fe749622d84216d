//! The HTTP listener: our own accept loop over hyper, because `axum::serve` has no header,
//! idle or body timeout and no connection cap. One client used to take the server down:
//! idle and header-trickling connections were never closed, and about 20,000 of them ran the
//! process out of file descriptors (`accept error: Too many open files`).
//!
//! Every connection is watched:
//! - **idle timeout**: no request in progress and no byte of a new one for `idle_timeout`
//!   (a fresh connection too) => closed;
//! - **header timeout**: the first byte of a request head arrived `header_timeout` ago and the
//!   head is still incomplete => closed;
//! - **body timeout**: a request body not fully received `body_timeout` after its head =>
//!   the body read fails ([`satchel_api::http::BodyTimedOut`], answered 408, connection closed).
//!
//! Connections are capped, in total (`max_connections`, derived from the file-descriptor
//! limit with headroom for the database, the node and files) and per client address
//! (`max_connections_per_ip`; IPv6 per /64; trusted proxies are exempt). At the total cap a new
//! connection evicts the connection that has been idle longest (no request in progress), so
//! held idle connections cannot lock out a real request; only if every connection is busy is
//! the new one refused. A refused connection gets a one-shot 503 and is closed at once, so
//! it never holds a descriptor.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use satchel_api::http::BodyTimedOut;
use satchel_api::http::throttle::TrustedProxies;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tower::ServiceExt as _;

/// Connection limits and timeouts of the listener.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    /// Idle connection (between requests, or before the first) closed after this.
    pub idle_timeout: Duration,
    /// A request head must be complete this long after its first byte.
    pub header_timeout: Duration,
    /// A request body must be complete this long after its head.
    pub body_timeout: Duration,
    /// Open connections at most; `None`: derived from the file-descriptor limit
    /// ([`default_max_connections`]).
    pub max_connections: Option<usize>,
    /// Open connections per client address (IPv6: per /64) at most; trusted proxies exempt.
    pub max_connections_per_ip: usize,
    /// Peers exempt from the per-address cap (they carry many clients).
    pub trusted_proxies: TrustedProxies,
}

impl Default for ListenerSettings {
    fn default() -> Self {
        ListenerSettings {
            idle_timeout: Duration::from_secs(60),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: None,
            max_connections_per_ip: 256,
            trusted_proxies: TrustedProxies::default(),
        }
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (each connection is a descriptor; the
/// usual soft default of 1,024 is far below what the hard limit allows). Returns the soft limit
/// in force afterwards (`None`: unlimited or unknown).
pub fn raise_fd_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let current = getrlimit(Resource::Nofile);
        if let (Some(soft), Some(hard)) = (current.current, current.maximum)
            && soft < hard
        {
            let raised = Rlimit {
                current: Some(hard),
                maximum: Some(hard),
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => tracing::debug!(from = soft, to = hard, "raised the open-file limit"),
                Err(e) => {
                    tracing::warn!(error = %e, soft, hard, "could not raise the open-file limit")
                }
            }
        }
        getrlimit(Resource::Nofile).current
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The soft file-descriptor limit now in force (`None`: unlimited or unknown).
pub fn fd_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        rustix::process::getrlimit(rustix::process::Resource::Nofile).current
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Connections allowed by default for a soft descriptor limit: the limit minus headroom for
/// everything else the process opens (database pool, node sockets, data files, the listener),
/// an eighth of the limit but at least 256, and at most 50,000 (each connection also costs
/// memory). With the hard limit of 20,000 of the test machine: 17,500.
pub fn default_max_connections(fd_soft_limit: Option<u64>) -> usize {
    const MAX: u64 = 50_000;
    let Some(soft) = fd_soft_limit else {
        return MAX as usize;
    };
    let headroom = (soft / 8).max(256);
    usize::try_from(soft.saturating_sub(headroom).clamp(16, MAX)).unwrap_or(16)
}

/// The per-address key: IPv4 as is, IPv6 by its /64.
fn addr_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

/// Milliseconds since the listener started; 0 means "not set" in the atomics below.
#[derive(Debug, Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn now_ms(self) -> u64 {
        u64::try_from(self.0.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

/// What the watchdog and the eviction need to know about one connection.
struct ConnState {
    /// Requests being handled (HTTP/2 may have several).
    in_flight: AtomicU32,
    /// When the connection last became idle (accepted, or its last response produced).
    idle_since_ms: AtomicU64,
    /// When the first byte arrived while idle (a request head started); 0: none.
    head_started_ms: AtomicU64,
    /// Wakes the watchdog to re-arm (a head started, a request ended).
    rearm: Notify,
    /// Tells the connection to close now (evicted).
    evict: Notify,
}

struct Table {
    total: usize,
    per_addr: HashMap<IpAddr, usize>,
    live: HashMap<u64, Arc<ConnState>>,
    next_id: u64,
}

struct Shared {
    settings: ListenerSettings,
    max_connections: usize,
    clock: Clock,
    table: Mutex<Table>,
    /// Notified when the last connection closes (shutdown waits for it).
    drained: Notify,
}

/// Why a connection was not admitted.
enum Refusal {
    PerAddress,
    Full,
}

impl Shared {
    /// Admits a connection from `peer`, evicting the longest-idle one at the total cap.
    fn admit(&self, peer: IpAddr) -> Result<(u64, Arc<ConnState>), Refusal> {
        let now = self.clock.now_ms();
        let key = addr_key(peer);
        let exempt = self.settings.trusted_proxies.contains(peer);
        let mut t = self.table.lock().map_err(|_| Refusal::Full)?;
        if !exempt
            && t.per_addr.get(&key).copied().unwrap_or(0) >= self.settings.max_connections_per_ip
        {
            return Err(Refusal::PerAddress);
        }
        if t.total >= self.max_connections && !Self::evict_longest_idle(&mut t) {
            return Err(Refusal::Full);
        }
        let id = t.next_id;
        t.next_id += 1;
        t.total += 1;
        *t.per_addr.entry(key).or_insert(0) += 1;
        let state = Arc::new(ConnState {
            in_flight: AtomicU32::new(0),
            idle_since_ms: AtomicU64::new(now),
            head_started_ms: AtomicU64::new(0),
            rearm: Notify::new(),
            evict: Notify::new(),
        });
        t.live.insert(id, state.clone());
        Ok((id, state))
    }

    /// Tells the connection idle longest to close; false if every connection is busy. It leaves
    /// `live` at once (so it is not picked twice) and releases its count when its task ends.
    fn evict_longest_idle(t: &mut Table) -> bool {
        let victim = t
            .live
            .iter()
            .filter(|(_, c)| c.in_flight.load(Ordering::Acquire) == 0)
            .min_by_key(|(_, c)| c.idle_since_ms.load(Ordering::Relaxed))
            .map(|(id, _)| *id);
        match victim.and_then(|id| t.live.remove(&id)) {
            Some(c) => {
                c.evict.notify_one();
                true
            }
            None => false,
        }
    }

    fn release(&self, id: u64, peer: IpAddr) {
        let Ok(mut t) = self.table.lock() else {
            return;
        };
        t.live.remove(&id);
        t.total = t.total.saturating_sub(1);
        let key = addr_key(peer);
        if let Some(n) = t.per_addr.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                t.per_addr.remove(&key);
            }
        }
        if t.total == 0 {
            self.drained.notify_waiters();
        }
    }

    fn open_connections(&self) -> usize {
        self.table.lock().map(|t| t.total).unwrap_or(0)
    }
}

/// Serves `app` on `listener` until `shutdown` turns true, then stops accepting, lets the
/// connections finish their requests (idle ones close at once) and returns when all are
/// closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    settings: ListenerSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let max_connections = settings
        .max_connections
        .unwrap_or_else(|| default_max_connections(fd_limit()));
    tracing::info!(
        max_connections,
        max_connections_per_ip = settings.max_connections_per_ip,
        idle_timeout_secs = settings.idle_timeout.as_secs_f64(),
        header_timeout_secs = settings.header_timeout.as_secs_f64(),
        body_timeout_secs = settings.body_timeout.as_secs_f64(),
        "HTTP connection limits"
    );
    let shared = Arc::new(Shared {
        settings,
        max_connections,
        clock: Clock(Instant::now()),
        table: Mutex::new(Table {
            total: 0,
            per_addr: HashMap::new(),
            live: HashMap::new(),
            next_id: 0,
        }),
        drained: Notify::new(),
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut last_accept_error: Option<Instant> = None;
    loop {
        if *shutdown.borrow() {
            break;
        }
        let accepted = tokio::select! {
            _ = shutdown.changed() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors (or another transient error): free one by closing the
                // longest-idle connection, and do not spin.
                if last_accept_error.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                    tracing::warn!(error = %e, open = shared.open_connections(), "accept failed");
                    last_accept_error = Some(Instant::now());
                }
                if let Ok(mut t) = shared.table.lock() {
                    Shared::evict_longest_idle(&mut t);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        match shared.admit(peer.ip()) {
            Ok((id, state)) => {
                let shared = shared.clone();
                let builder = builder.clone();
                let app = app.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    serve_connection(&builder, stream, peer, app, &shared, state, shutdown).await;
                    shared.release(id, peer.ip());
                });
            }
            Err(refusal) => refuse(stream, peer, refusal),
        }
    }
    drop(listener);
    // Drain: every connection task saw the shutdown and closes when its requests are done.
    loop {
        let drained = shared.drained.notified();
        if shared.open_connections() == 0 {
            break;
        }
        drained.await;
    }
}

/// A fixed 503 in LNPay's envelope, written without waiting (a fresh socket's send buffer is
/// empty), then the socket is closed.
fn refuse(stream: TcpStream, peer: SocketAddr, why: Refusal) {
    const BODY: &str = r#"{"name":"Service Unavailable","message":"Too many connections. Please retry later.","code":0,"status":503}"#;
    let (what, retry) = match why {
        Refusal::PerAddress => ("per-address connection cap reached", 5),
        Refusal::Full => ("connection cap reached and no connection idle", 1),
    };
    tracing::debug!(client = %peer, "{what}; connection refused");
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json; charset=UTF-8\r\n\
         retry-after: {retry}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = stream.try_write(response.as_bytes());
    drop(stream);
}

async fn serve_connection(
    builder: &auto::Builder<TokioExecutor>,
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    shared: &Shared,
    state: Arc<ConnState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let clock = shared.clock;
    let settings = &shared.settings;
    let io = TokioIo::new(Watched {
        inner: stream,
        state: state.clone(),
        clock,
    });
    let body_timeout = settings.body_timeout;
    let svc_state = state.clone();
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let guard = InFlight::start(svc_state.clone(), clock);
        req.extensions_mut().insert(ConnectInfo(peer));
        let req = req.map(|body| {
            if body.is_end_stream() {
                Body::new(body)
            } else {
                Body::new(DeadlineBody::new(body, body_timeout))
            }
        });
        let app = app.clone();
        async move {
            let response = app.oneshot(req).await;
            // A streamed response (live events) keeps its request in progress until its body
            // ends: the idle timeout and the cap's eviction are for idle connections only.
            response.map(|r| {
                if r.body().size_hint().exact().is_some() {
                    drop(guard);
                    r
                } else {
                    r.map(|inner| {
                        Body::new(Streaming {
                            inner,
                            _guard: guard,
                        })
                    })
                }
            })
        }
    });
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut closing = *shutdown.borrow();
    if closing {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        let deadline = next_deadline(&state, settings, clock);
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(client = %peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = state.evict.notified() => {
                tracing::debug!(client = %peer, "idle connection evicted (connection cap)");
                return;
            }
            _ = state.rearm.notified() => {}
            _ = shutdown.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep_until(deadline) => {
                if let Some(why) = expired(&state, settings, clock) {
                    tracing::debug!(client = %peer, "{why}; connection closed");
                    return;
                }
            }
        }
    }
}

/// When the watchdog must look again: the header deadline if a head started, the idle
/// deadline if idle, else (a request in progress) when the idle timeout would have passed
/// (a request's end re-arms it anyway).
fn next_deadline(state: &ConnState, s: &ListenerSettings, clock: Clock) -> tokio::time::Instant {
    let at_ms = |ms: u64, plus: Duration| {
        tokio::time::Instant::from_std(clock.0 + Duration::from_millis(ms) + plus)
    };
    if state.in_flight.load(Ordering::Acquire) > 0 {
        return tokio::time::Instant::now() + s.idle_timeout;
    }
    match state.head_started_ms.load(Ordering::Acquire) {
        0 => at_ms(state.idle_since_ms.load(Ordering::Acquire), s.idle_timeout),
        started => at_ms(started, s.header_timeout),
    }
}

fn expired(state: &ConnState, s: &ListenerSettings, clock: Clock) -> Option<&'static str> {
    if state.in_flight.load(Ordering::Acquire) > 0 {
        return None;
    }
    let now = clock.now_ms();
    let elapsed = |ms: u64| Duration::from_millis(now.saturating_sub(ms));
    match state.head_started_ms.load(Ordering::Acquire) {
        0 => (elapsed(state.idle_since_ms.load(Ordering::Acquire)) >= s.idle_timeout)
            .then_some("idle timeout"),
        started => (elapsed(started) >= s.header_timeout).then_some("request header timeout"),
    }
}

/// Counts a request in progress on its connection for as long as it lives.
struct InFlight {
    state: Arc<ConnState>,
    clock: Clock,
}

impl InFlight {
    fn start(state: Arc<ConnState>, clock: Clock) -> InFlight {
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        // The head is complete: the header timeout no longer applies.
        state.head_started_ms.store(0, Ordering::Release);
        InFlight { state, clock }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.state.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.state
                .idle_since_ms
                .store(self.clock.now_ms(), Ordering::Release);
            self.state.rearm.notify_one();
        }
    }
}

/// The connection's socket, noting when a request head starts (the first byte read while no
/// request is in progress).
struct Watched {
    inner: TcpStream,
    state: Arc<ConnState>,
    clock: Clock,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let s = &self.state;
            if s.in_flight.load(Ordering::Acquire) == 0
                && s.head_started_ms.load(Ordering::Acquire) == 0
            {
                s.head_started_ms
                    .store(self.clock.now_ms(), Ordering::Release);
                s.rearm.notify_one();
            }
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A request body that fails with [`BodyTimedOut`] if it is not complete by its deadline
/// (a total, not per-chunk, limit: a trickle of one byte per second cannot extend it).
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl DeadlineBody {
    fn new(inner: Incoming, timeout: Duration) -> DeadlineBody {
        DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl HttpBody for DeadlineBody {
    type Data = axum::body::Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(BoxError::from))),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimedOut)))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A streamed response body that holds its request's [`InFlight`] guard until it ends.
struct Streaming {
    inner: Body,
    _guard: InFlight,
}

impl HttpBody for Streaming {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_cap_leaves_headroom() {
        assert_eq!(default_max_connections(Some(20_000)), 17_500);
        assert_eq!(default_max_connections(Some(1_024)), 768);
        assert_eq!(default_max_connections(Some(256)), 16);
        assert_eq!(default_max_connections(Some(1 << 20)), 50_000);
        assert_eq!(default_max_connections(None), 50_000);
    }

    #[test]
    fn ipv6_counted_per_64() {
        assert_eq!(
            addr_key("2001:db8:1:2:3:4:5:6".parse().unwrap()),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            addr_key("::ffff:10.0.0.1".parse().unwrap()),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
    }
}
