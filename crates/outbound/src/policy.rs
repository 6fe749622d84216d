//! Where outbound requests may connect: every address is checked, IP literals and every address
//! a name resolves to, each time a connection is made (so DNS rebinding cannot slip through).

use std::fmt;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use crate::OutboundError;
use crate::addr::{Refusal, refusal};
use crate::target::Target;

/// A boxed lookup result.
pub type Lookup = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>>;

/// Name resolution. Production uses [`SystemResolver`]; the trait lets tests answer names
/// themselves (e.g. a name that turns into 127.0.0.1 after it passed a check).
pub trait Resolver: Send + Sync + 'static {
    /// Every address of `host` (a domain name, never an IP literal).
    fn lookup(&self, host: String) -> Lookup;
}

/// The operating system's resolver (`getaddrinfo`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn lookup(&self, host: String) -> Lookup {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .map(|a| a.ip())
                .collect())
        })
    }
}

/// The address rule and the resolver it applies to.
#[derive(Clone)]
pub struct AddressPolicy {
    allow_private: bool,
    resolver: Arc<dyn Resolver>,
}

impl fmt::Debug for AddressPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AddressPolicy")
            .field("allow_private", &self.allow_private)
            .finish_non_exhaustive()
    }
}

impl Default for AddressPolicy {
    /// Public addresses only, system resolver.
    fn default() -> Self {
        AddressPolicy::new(false)
    }
}

/// `localhost` and `*.localhost` (RFC 6761) name the local host whatever DNS says.
fn is_localhost_name(host: &str) -> bool {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    h == "localhost" || h.ends_with(".localhost")
}

impl AddressPolicy {
    /// `allow_private`: the operator's override, which lets requests reach loopback, private
    /// and every other non-public address (tests, or receivers on the same network).
    pub fn new(allow_private: bool) -> AddressPolicy {
        AddressPolicy {
            allow_private,
            resolver: Arc::new(SystemResolver),
        }
    }

    /// The same rule with another resolver.
    #[must_use]
    pub fn with_resolver(mut self, resolver: Arc<dyn Resolver>) -> AddressPolicy {
        self.resolver = resolver;
        self
    }

    /// Whether the override is on.
    pub fn allows_private(&self) -> bool {
        self.allow_private
    }

    fn check(&self, host: &str, addr: IpAddr) -> Result<(), OutboundError> {
        match refusal(addr) {
            Some(why) if !self.allow_private => Err(OutboundError::Refused {
                host: host.to_owned(),
                addr,
                why,
            }),
            _ => Ok(()),
        }
    }

    /// Checks the address of an IP-literal target (the connector skips the resolver for
    /// those). A named target passes here; its addresses are checked when resolved.
    pub fn check_literal(&self, target: &Target) -> Result<(), OutboundError> {
        match target.literal_ip() {
            Some(ip) => self.check(target.host_str(), ip),
            None => Ok(()),
        }
    }

    /// Every address `target` may connect to, each one checked (all must pass).
    pub async fn resolve(&self, target: &Target) -> Result<Vec<IpAddr>, OutboundError> {
        match target.literal_ip() {
            Some(ip) => {
                self.check(target.host_str(), ip)?;
                Ok(vec![ip])
            }
            None => self.resolve_name(target.host_str()).await,
        }
    }

    /// Resolves a host name and checks every address. An address-shaped name is taken as the
    /// address, as the connector would.
    pub async fn resolve_name(&self, host: &str) -> Result<Vec<IpAddr>, OutboundError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            self.check(host, ip)?;
            return Ok(vec![ip]);
        }
        if !self.allow_private && is_localhost_name(host) {
            return Err(OutboundError::Refused {
                host: host.to_owned(),
                addr: IpAddr::from([127, 0, 0, 1]),
                why: Refusal::Loopback,
            });
        }
        let addrs = self
            .resolver
            .lookup(host.to_owned())
            .await
            .map_err(|_| OutboundError::Unresolvable(host.to_owned()))?;
        if addrs.is_empty() {
            return Err(OutboundError::Unresolvable(host.to_owned()));
        }
        for a in &addrs {
            self.check(host, *a)?;
        }
        Ok(addrs)
    }
}
