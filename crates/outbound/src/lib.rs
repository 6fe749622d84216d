//! Requests to URLs that users control (webhooks; later LNURL), made safe against SSRF.
//!
//! - [`Target`]: one URL parser, the WHATWG one the client sends with; http(s) only, no
//!   credentials. Store its normalized serialization and send to exactly that.
//! - [`addr`]: which addresses are public. Loopback, private, link-local, unique-local,
//!   site-local, CGNAT, multicast, unspecified, reserved and special-purpose ranges are refused,
//!   and so are IPv6 forms embedding such IPv4 addresses (mapped, compatible, NAT64, 6to4).
//! - [`AddressPolicy`]: applies that rule to every address a request would connect to (IP
//!   literals, and every address a name resolves to), unless the operator allows private ones.
//! - [`OutboundClient`]: checks at connect time, no redirects or proxies, bounded time and size.

pub mod addr;
mod client;
mod policy;
mod target;

use std::net::IpAddr;
use std::time::Duration;

pub use addr::{Refusal, is_public, refusal};
pub use client::{Limits, OutboundClient, Reply};
pub use policy::{AddressPolicy, Lookup, Resolver, SystemResolver};
pub use target::{MAX_URL_LEN, Target, TargetError};

fn refused_message(host: &str, addr: &IpAddr, why: Refusal) -> String {
    let what = if host.trim_start_matches('[').trim_end_matches(']') == addr.to_string() {
        format!("{addr} is a {why} address")
    } else {
        format!("{host} is {addr}, a {why} address")
    };
    format!(
        "{what}; requests to loopback, private, link-local and other non-public addresses are refused"
    )
}

/// Why an outbound request was not made or did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    /// The URL is not acceptable.
    #[error("{0}")]
    Target(#[from] TargetError),
    /// The host is or resolves to an address the policy refuses.
    #[error("{}", refused_message(host, addr, *why))]
    Refused {
        /// Host as in the URL.
        host: String,
        /// The refused address.
        addr: IpAddr,
        /// Its class.
        why: Refusal,
    },
    /// The name has no addresses.
    #[error("host {0} does not resolve")]
    Unresolvable(String),
    /// No complete answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Connection or protocol failure.
    #[error("{0}")]
    Transport(String),
    /// The client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}
