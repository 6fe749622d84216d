//! Client addresses and the throttle of failed authentications.
//!
//! Wrong keys used to run at 7,000–9,400 per second with nothing in the way. Every presented
//! key that turns out unknown ([`super::error::RejectedCredential`] on the response) is counted
//! against the client's address; once an address has used up its failures for the window,
//! its requests that carry a key are answered 429 with `Retry-After` until the window ends,
//! without looking the key up, even when it is a correct key (a guesser who finds the key
//! must not learn it before the window ends, and the database is spared the lookups).
//! Requests without a key are not counted nor refused here: they guess nothing.
//!
//! The client address is the TCP peer, unless the peer is a configured trusted proxy: then it
//! is the rightmost `X-Forwarded-For` entry that is not itself a trusted proxy. IPv6 clients
//! are counted per /64, the block one host usually controls.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;

use super::auth_header::extract_api_key;
use super::error::{ApiError, RejectedCredential};

/// Addresses whose `X-Forwarded-For` is believed (reverse proxies in front of Satchel).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Arc<Vec<IpNet>>);

impl TrustedProxies {
    /// Parses addresses (`10.0.0.1`) and networks (`10.0.0.0/8`, `fd00::/8`).
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<TrustedProxies, String> {
        let mut nets = Vec::with_capacity(items.len());
        for item in items {
            let text = item.as_ref().trim();
            if text.is_empty() {
                continue;
            }
            let net = IpNet::from_str(text)
                .or_else(|_| IpAddr::from_str(text).map(IpNet::from))
                .map_err(|_| format!("trusted proxy {text:?} is not an IP address or network"))?;
            nets.push(net);
        }
        Ok(TrustedProxies(Arc::new(nets)))
    }

    /// Whether `ip` is (in) a trusted proxy entry.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The client address of a request, as resolved by [`client_ip`]; inserted as a request
/// extension by [`throttle_auth`] for handlers and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// The client's address: the peer, or, when the peer is a trusted proxy, the rightmost
/// `X-Forwarded-For` entry (over all such headers, in order) that is not a trusted proxy. If
/// every entry is trusted, the leftmost one; an entry that does not parse ends the walk and
/// the last address known good is used.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let mut client = peer.to_canonical();
    if !trusted.contains(client) {
        return client;
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for entry in entries.iter().rev() {
        let Some(ip) = parse_forwarded(entry) else {
            break;
        };
        client = ip;
        if !trusted.contains(ip) {
            break;
        }
    }
    client
}

/// `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]:443`.
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    IpAddr::from_str(entry)
        .or_else(|_| SocketAddr::from_str(entry).map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// The throttle's key for an address: IPv4 as is, IPv6 by its /64.
fn bucket_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

/// Settings of the auth throttle.
#[derive(Debug, Clone)]
pub struct AuthThrottleConfig {
    /// Failed authentications an address may make per window; 0 turns the throttle off.
    pub max_failures: u32,
    /// The window (fixed, starting at an address's first failure).
    pub window: Duration,
    /// Addresses tracked at most (memory bound). When the table is full, addresses not in it
    /// share one overflow entry, so an attacker with more addresses than that is still
    /// throttled, as a group.
    pub max_tracked: usize,
}

impl Default for AuthThrottleConfig {
    fn default() -> Self {
        AuthThrottleConfig {
            max_failures: 20,
            window: Duration::from_secs(60),
            max_tracked: 100_000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

#[derive(Debug)]
struct Table {
    by_addr: HashMap<IpAddr, Window>,
    overflow: Option<Window>,
    last_sweep: Instant,
}

/// Failed-authentication counters per client address (see the module docs).
#[derive(Debug)]
pub struct AuthThrottle {
    cfg: AuthThrottleConfig,
    trusted: TrustedProxies,
    table: Mutex<Table>,
}

impl AuthThrottle {
    /// A throttle with these settings.
    pub fn new(cfg: AuthThrottleConfig, trusted: TrustedProxies) -> AuthThrottle {
        AuthThrottle {
            cfg,
            trusted,
            table: Mutex::new(Table {
                by_addr: HashMap::new(),
                overflow: None,
                last_sweep: Instant::now(),
            }),
        }
    }

    fn live(&self, w: &Window, now: Instant) -> bool {
        now.duration_since(w.started) < self.cfg.window
    }

    /// If `ip` is throttled now: the seconds until its window ends (at least 1).
    pub fn blocked(&self, ip: IpAddr) -> Option<u64> {
        if self.cfg.max_failures == 0 {
            return None;
        }
        let now = Instant::now();
        let key = bucket_key(ip);
        let table = self.table.lock().ok()?;
        let w = match table.by_addr.get(&key) {
            Some(w) => *w,
            None if table.by_addr.len() >= self.cfg.max_tracked => table.overflow?,
            None => return None,
        };
        if w.failures < self.cfg.max_failures || !self.live(&w, now) {
            return None;
        }
        let left = (w.started + self.cfg.window).saturating_duration_since(now);
        Some(left.as_secs() + u64::from(left.subsec_nanos() > 0))
    }

    /// Counts one failed authentication from `ip`.
    pub fn record_failure(&self, ip: IpAddr) {
        if self.cfg.max_failures == 0 {
            return;
        }
        let now = Instant::now();
        let key = bucket_key(ip);
        let Ok(mut table) = self.table.lock() else {
            return;
        };
        if !table.by_addr.contains_key(&key)
            && table.by_addr.len() >= self.cfg.max_tracked
            && now.duration_since(table.last_sweep) >= Duration::from_secs(1)
        {
            // Full: forget the windows that ended (at most once a second: it is a full scan).
            let window = self.cfg.window;
            table
                .by_addr
                .retain(|_, w| now.duration_since(w.started) < window);
            table.last_sweep = now;
        }
        let full = table.by_addr.len() >= self.cfg.max_tracked;
        let slot = if table.by_addr.contains_key(&key) || !full {
            table.by_addr.entry(key).or_insert(Window {
                started: now,
                failures: 0,
            })
        } else {
            table.overflow.get_or_insert(Window {
                started: now,
                failures: 0,
            })
        };
        if now.duration_since(slot.started) >= self.cfg.window {
            *slot = Window {
                started: now,
                failures: 0,
            };
        }
        slot.failures = slot.failures.saturating_add(1);
    }

    /// Number of addresses tracked (tests, metrics).
    pub fn tracked(&self) -> usize {
        self.table.lock().map(|t| t.by_addr.len()).unwrap_or(0)
    }
}

/// Middleware: resolves the client address ([`ClientIp`]), refuses throttled addresses that
/// present a key (429 + `Retry-After`), and counts refused keys. Requests without a peer
/// address (not served by the listener, e.g. in-process tests) pass untouched.
pub async fn throttle_auth(
    State(throttle): State<Arc<AuthThrottle>>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied() else {
        return next.run(req).await;
    };
    let ip = client_ip(peer.ip(), req.headers(), &throttle.trusted);
    req.extensions_mut().insert(ClientIp(ip));
    if extract_api_key(req.headers(), req.uri().query()).is_some()
        && let Some(retry_after_secs) = throttle.blocked(ip)
    {
        tracing::debug!(client = %ip, retry_after_secs, "authentication throttled");
        return ApiError::too_many_requests(retry_after_secs).into_response();
    }
    let response = next.run(req).await;
    if response.extensions().get::<RejectedCredential>().is_some() {
        throttle.record_failure(ip);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn forwarded_for_only_from_trusted_peers() {
        let trusted = TrustedProxies::parse(&["10.0.0.0/8", "192.168.1.1"]).unwrap();
        let h = xff(&["6.6.6.6, 1.2.3.4"]);
        // Untrusted peer: header ignored.
        assert_eq!(client_ip(ip("5.5.5.5"), &h, &trusted), ip("5.5.5.5"));
        // Trusted peer: rightmost entry.
        assert_eq!(client_ip(ip("10.1.2.3"), &h, &trusted), ip("1.2.3.4"));
        // Rightmost untrusted, skipping trusted hops; several headers in order.
        let h = xff(&["6.6.6.6, 1.2.3.4", "10.9.9.9:443, 192.168.1.1"]);
        assert_eq!(client_ip(ip("10.1.2.3"), &h, &trusted), ip("1.2.3.4"));
        // All trusted: leftmost. Garbage: last good address.
        let h = xff(&["10.5.5.5, 10.6.6.6"]);
        assert_eq!(client_ip(ip("10.1.2.3"), &h, &trusted), ip("10.5.5.5"));
        let h = xff(&["1.1.1.1, garbage, 10.6.6.6"]);
        assert_eq!(client_ip(ip("10.1.2.3"), &h, &trusted), ip("10.6.6.6"));
        // No header: the peer. IPv4-mapped peers are canonical.
        assert_eq!(
            client_ip(ip("::ffff:10.1.2.3"), &HeaderMap::new(), &trusted),
            ip("10.1.2.3")
        );
        assert_eq!(
            client_ip(ip("10.1.2.3"), &xff(&["[2001:db8::1]:80"]), &trusted),
            ip("2001:db8::1")
        );
        assert!(TrustedProxies::parse(&["nope"]).is_err());
    }

    #[test]
    fn throttles_per_address_then_forgets() {
        let t = AuthThrottle::new(
            AuthThrottleConfig {
                max_failures: 3,
                window: Duration::from_millis(300),
                max_tracked: 100,
            },
            TrustedProxies::default(),
        );
        let a = ip("1.1.1.1");
        for _ in 0..3 {
            assert_eq!(t.blocked(a), None);
            t.record_failure(a);
        }
        assert_eq!(t.blocked(a), Some(1));
        assert_eq!(t.blocked(ip("1.1.1.2")), None);
        // One /64 is one client.
        for _ in 0..3 {
            t.record_failure(ip("2001:db8:1:2::5"));
        }
        assert!(t.blocked(ip("2001:db8:1:2:ffff::9")).is_some());
        assert_eq!(t.blocked(ip("2001:db8:1:3::5")), None);
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(t.blocked(a), None);
    }

    #[test]
    fn table_is_bounded_and_overflow_is_throttled() {
        let t = AuthThrottle::new(
            AuthThrottleConfig {
                max_failures: 2,
                window: Duration::from_secs(60),
                max_tracked: 4,
            },
            TrustedProxies::default(),
        );
        for i in 0..50u8 {
            t.record_failure(IpAddr::from([10, 0, 0, i]));
        }
        assert_eq!(t.tracked(), 4);
        // The addresses beyond the table share the overflow window, which is used up.
        assert!(t.blocked(ip("10.0.0.200")).is_some());
        // A tracked address with one failure is not blocked.
        assert_eq!(t.blocked(ip("10.0.0.0")), None);
    }

    #[test]
    fn zero_turns_it_off() {
        let t = AuthThrottle::new(
            AuthThrottleConfig {
                max_failures: 0,
                ..Default::default()
            },
            TrustedProxies::default(),
        );
        for _ in 0..100 {
            t.record_failure(ip("1.1.1.1"));
        }
        assert_eq!(t.blocked(ip("1.1.1.1")), None);
        assert_eq!(t.tracked(), 0);
    }
}
