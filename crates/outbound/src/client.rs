//! The HTTP client for requests to URLs that users give us.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::OutboundError;
use crate::policy::AddressPolicy;
use crate::target::Target;

/// Bounds of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The whole request: connecting, sending, and reading the answer.
    pub timeout: Duration,
    /// Connecting (DNS and TCP and TLS).
    pub connect_timeout: Duration,
    /// Bytes of the response body read; the rest is never read (the connection is dropped).
    pub max_response_bytes: usize,
}

impl Default for Limits {
    /// 10 s in total, 5 s to connect, 64 KiB of body.
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            max_response_bytes: 64 * 1024,
        }
    }
}

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// The first [`Limits::max_response_bytes`] bytes of the body.
    pub body: Vec<u8>,
    /// Whether the body was longer than that.
    pub truncated: bool,
}

/// The connector asks this for every name it connects to, at connect time; every address is
/// checked, so a name that passed an earlier check and now points inside is refused.
struct CheckingResolver(AddressPolicy);

impl Resolve for CheckingResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let ips = policy.resolve_name(&host).await?;
            let addrs: Addrs = Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// HTTP client that only reaches addresses its [`AddressPolicy`] allows.
///
/// - Targets are [`Target`]s, parsed by the same WHATWG parser the client sends with.
/// - IP-literal hosts (which the connector never resolves) are checked before each request;
///   names are checked by the client's resolver each time a connection is made.
/// - No redirects, no proxies (a proxy would resolve the name itself), no cookies.
/// - Bounded time ([`Limits::timeout`]) and response size ([`Limits::max_response_bytes`]).
#[derive(Clone)]
pub struct OutboundClient {
    http: reqwest::Client,
    policy: AddressPolicy,
    limits: Limits,
}

impl std::fmt::Debug for OutboundClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundClient")
            .field("policy", &self.policy)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Finds our own refusal inside a transport error (the resolver's error is wrapped by the
/// connector and the client).
fn refusal_in(e: &reqwest::Error) -> Option<OutboundError> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(ours) = err.downcast_ref::<OutboundError>() {
            return Some(ours.clone());
        }
        cur = err.source();
    }
    None
}

/// A transport error with its causes (reqwest's own message is only "error sending request").
fn describe(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(err) = cur {
        out.push_str(": ");
        out.push_str(&err.to_string());
        cur = err.source();
    }
    out
}

impl OutboundClient {
    /// A client with this policy, these limits, and this `User-Agent`.
    pub fn new(
        policy: AddressPolicy,
        limits: Limits,
        user_agent: &str,
    ) -> Result<OutboundClient, OutboundError> {
        let http = reqwest::Client::builder()
            .user_agent(user_agent)
            .timeout(limits.timeout)
            .connect_timeout(limits.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .referer(false)
            .http1_only()
            .dns_resolver(Arc::new(CheckingResolver(policy.clone())))
            .build()
            .map_err(|e| OutboundError::Build(describe(&e)))?;
        Ok(OutboundClient {
            http,
            policy,
            limits,
        })
    }

    /// The address policy (for checks ahead of a request, e.g. when a URL is registered).
    pub fn policy(&self) -> &AddressPolicy {
        &self.policy
    }

    /// The limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// GET `target`.
    pub async fn get(
        &self,
        target: &Target,
        headers: &[(&str, &str)],
    ) -> Result<Reply, OutboundError> {
        self.send(reqwest::Method::GET, target, headers, None).await
    }

    /// POST `body` to `target`.
    pub async fn post(
        &self,
        target: &Target,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Reply, OutboundError> {
        self.send(reqwest::Method::POST, target, headers, Some(body))
            .await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        target: &Target,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Reply, OutboundError> {
        self.policy.check_literal(target)?;
        let mut req = self.http.request(method, target.url().clone());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let max = self.limits.max_response_bytes;
        let exchange = async move {
            let mut resp = req.send().await?;
            let status = resp.status().as_u16();
            let mut body = Vec::new();
            let mut truncated = false;
            while let Some(chunk) = resp.chunk().await? {
                let room = max.saturating_sub(body.len());
                if chunk.len() > room {
                    body.extend_from_slice(&chunk[..room]);
                    truncated = true;
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            Ok::<Reply, reqwest::Error>(Reply {
                status,
                body,
                truncated,
            })
        };
        match tokio::time::timeout(self.limits.timeout, exchange).await {
            Err(_) => Err(OutboundError::Timeout(self.limits.timeout)),
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) if e.is_timeout() => Err(OutboundError::Timeout(self.limits.timeout)),
            Ok(Err(e)) => {
                Err(refusal_in(&e).unwrap_or_else(|| OutboundError::Transport(describe(&e))))
            }
        }
    }
}
