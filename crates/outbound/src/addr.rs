//! Which IP addresses an outbound request may connect to.
//!
//! IPv4 is refused by range (everything not listed is public). IPv6 is an allow-list: only global
//! unicast (`2000::/3`) minus its special blocks, because most of the rest of the space is local
//! or reserved. IPv6 forms that carry an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64
//! `64:ff9b::/96`, 6to4 `2002::/16`) are judged by the IPv4 address they reach.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is not public.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `0.0.0.0/8`, `::` (Linux connects these to the local host).
    Unspecified,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// RFC 1918: `10/8`, `172.16/12`, `192.168/16`.
    Private,
    /// Carrier-grade NAT, `100.64.0.0/10`.
    SharedCgnat,
    /// `169.254.0.0/16` (cloud metadata lives here), `fe80::/10`.
    LinkLocal,
    /// Deprecated IPv6 site-local, `fec0::/10`.
    SiteLocal,
    /// IPv6 unique-local, `fc00::/7`.
    UniqueLocal,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `240.0.0.0/4` including the broadcast address.
    Reserved,
    /// Documentation and benchmarking ranges; IETF protocol assignments (`192.0.0.0/24`,
    /// `192.88.99.0/24`, `2001::/23`, `100::/64`, NAT64 local-use `64:ff9b:1::/48`).
    Special,
    /// Deprecated IPv4-compatible IPv6 (`::a.b.c.d`): never a real destination.
    Ipv4Compatible,
    /// IPv6 outside global unicast `2000::/3`.
    NotGlobal,
}

impl Refusal {
    /// A short description (`"loopback"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Unspecified => "unspecified",
            Refusal::Loopback => "loopback",
            Refusal::Private => "private",
            Refusal::SharedCgnat => "carrier-grade NAT",
            Refusal::LinkLocal => "link-local",
            Refusal::SiteLocal => "site-local",
            Refusal::UniqueLocal => "unique-local",
            Refusal::Multicast => "multicast",
            Refusal::Reserved => "reserved",
            Refusal::Special => "special-purpose",
            Refusal::Ipv4Compatible => "IPv4-compatible",
            Refusal::NotGlobal => "non-global",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `None` for a public address; otherwise why it is refused.
pub fn refusal(ip: IpAddr) -> Option<Refusal> {
    match ip {
        IpAddr::V4(v4) => refusal_v4(v4),
        IpAddr::V6(v6) => refusal_v6(v6),
    }
}

/// True for an address an outbound request may reach.
pub fn is_public(ip: IpAddr) -> bool {
    refusal(ip).is_none()
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn refusal_v4(ip: Ipv4Addr) -> Option<Refusal> {
    const TABLE: &[([u8; 4], u32, Refusal)] = &[
        ([0, 0, 0, 0], 8, Refusal::Unspecified),
        ([10, 0, 0, 0], 8, Refusal::Private),
        ([100, 64, 0, 0], 10, Refusal::SharedCgnat),
        ([127, 0, 0, 0], 8, Refusal::Loopback),
        ([169, 254, 0, 0], 16, Refusal::LinkLocal),
        ([172, 16, 0, 0], 12, Refusal::Private),
        ([192, 0, 0, 0], 24, Refusal::Special),
        ([192, 0, 2, 0], 24, Refusal::Special),
        ([192, 88, 99, 0], 24, Refusal::Special),
        ([192, 168, 0, 0], 16, Refusal::Private),
        ([198, 18, 0, 0], 15, Refusal::Special),
        ([198, 51, 100, 0], 24, Refusal::Special),
        ([203, 0, 113, 0], 24, Refusal::Special),
        ([224, 0, 0, 0], 4, Refusal::Multicast),
        ([240, 0, 0, 0], 4, Refusal::Reserved),
    ];
    TABLE
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, why)| *why)
}

fn in_v6(ip: Ipv6Addr, net: Ipv6Addr, prefix: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
    u128::from(ip) & mask == u128::from(net) & mask
}

fn v6(s: [u16; 8]) -> Ipv6Addr {
    Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7])
}

fn refusal_v6(ip: Ipv6Addr) -> Option<Refusal> {
    let bits = u128::from(ip);
    let low_v4 = Ipv4Addr::from(u32::try_from(bits & 0xffff_ffff).unwrap_or(0));
    if ip.is_unspecified() {
        return Some(Refusal::Unspecified);
    }
    if ip.is_loopback() {
        return Some(Refusal::Loopback);
    }
    // ::ffff:a.b.c.d reaches a.b.c.d itself.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return refusal_v4(v4);
    }
    // ::a.b.c.d (deprecated): report what it embeds, refuse it either way.
    if in_v6(ip, Ipv6Addr::UNSPECIFIED, 96) {
        return Some(refusal_v4(low_v4).unwrap_or(Refusal::Ipv4Compatible));
    }
    // NAT64 well-known prefix: a translator forwards to the embedded IPv4 address.
    if in_v6(ip, v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0]), 96) {
        return refusal_v4(low_v4);
    }
    // 6to4: 2002:AABB:CCDD::/48 is routed to AA.BB.CC.DD.
    if in_v6(ip, v6([0x2002, 0, 0, 0, 0, 0, 0, 0]), 16) {
        let embedded = Ipv4Addr::from(u32::try_from((bits >> 80) & 0xffff_ffff).unwrap_or(0));
        return refusal_v4(embedded);
    }
    let table: [(Ipv6Addr, u32, Refusal); 9] = [
        (v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0]), 48, Refusal::Special),
        (v6([0x100, 0, 0, 0, 0, 0, 0, 0]), 64, Refusal::Special),
        (v6([0x2001, 0, 0, 0, 0, 0, 0, 0]), 23, Refusal::Special),
        (v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0]), 32, Refusal::Special),
        (v6([0x3fff, 0, 0, 0, 0, 0, 0, 0]), 20, Refusal::Special),
        (v6([0xfc00, 0, 0, 0, 0, 0, 0, 0]), 7, Refusal::UniqueLocal),
        (v6([0xfe80, 0, 0, 0, 0, 0, 0, 0]), 10, Refusal::LinkLocal),
        (v6([0xfec0, 0, 0, 0, 0, 0, 0, 0]), 10, Refusal::SiteLocal),
        (v6([0xff00, 0, 0, 0, 0, 0, 0, 0]), 8, Refusal::Multicast),
    ];
    if let Some((_, _, why)) = table.iter().find(|(net, p, _)| in_v6(ip, *net, *p)) {
        return Some(*why);
    }
    // Global unicast is the only space left that may be public.
    (!in_v6(ip, v6([0x2000, 0, 0, 0, 0, 0, 0, 0]), 3)).then_some(Refusal::NotGlobal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn why(s: &str) -> Option<Refusal> {
        refusal(s.parse().unwrap_or_else(|_| panic!("bad test address {s}")))
    }

    #[test]
    fn every_refused_range() {
        use Refusal::*;
        let cases: &[(&str, Refusal)] = &[
            // IPv4
            ("0.0.0.0", Unspecified),
            ("0.255.255.255", Unspecified),
            ("127.0.0.1", Loopback),
            ("127.255.255.254", Loopback),
            ("10.0.0.1", Private),
            ("10.255.255.255", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("192.168.0.1", Private),
            ("192.168.255.255", Private),
            ("100.64.0.1", SharedCgnat),
            ("100.127.255.255", SharedCgnat),
            ("169.254.169.254", LinkLocal),
            ("169.254.0.1", LinkLocal),
            ("224.0.0.1", Multicast),
            ("239.255.255.250", Multicast),
            ("240.0.0.1", Reserved),
            ("255.255.255.255", Reserved),
            ("192.0.0.8", Special),
            ("192.0.2.1", Special),
            ("198.51.100.7", Special),
            ("203.0.113.9", Special),
            ("198.18.0.1", Special),
            ("198.19.255.255", Special),
            ("192.88.99.1", Special),
            // IPv6
            ("::", Unspecified),
            ("::1", Loopback),
            ("fe80::1", LinkLocal),
            ("febf::1", LinkLocal),
            ("fec0::1", SiteLocal),
            ("feff::1", SiteLocal),
            ("fc00::1", UniqueLocal),
            ("fd00::2", UniqueLocal),
            ("ff02::1", Multicast),
            ("ff0e::1", Multicast),
            ("2001:db8::1", Special),
            ("2001::1", Special),      // Teredo
            ("2001:2::1", Special),    // benchmarking
            ("2001:10::1", Special),   // ORCHID
            ("100::1", Special),       // discard-only
            ("64:ff9b:1::1", Special), // local-use NAT64
            ("3fff::1", Special),      // documentation (RFC 9637)
            ("5f00::1", NotGlobal),    // SRv6 SIDs
            ("4000::1", NotGlobal),
            ("::ffff:0:7f00:1", NotGlobal), // SIIT IPv4-translated
            // IPv6 forms embedding a refused IPv4 address.
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:7f00:1", Loopback),
            ("::ffff:169.254.169.254", LinkLocal),
            ("::ffff:10.0.0.1", Private),
            ("::ffff:0.0.0.0", Unspecified),
            ("::127.0.0.1", Loopback),
            ("::10.1.2.3", Private),
            ("::8.8.8.8", Ipv4Compatible),
            ("::2", Unspecified), // embeds 0.0.0.2
            ("::1.2.3.4", Ipv4Compatible),
            ("64:ff9b::7f00:1", Loopback),
            ("64:ff9b::a9fe:a9fe", LinkLocal),
            ("64:ff9b::c0a8:1", Private),
            ("64:ff9b::6440:1", SharedCgnat),
            ("2002:7f00:1::", Loopback),
            ("2002:7f00:1::1", Loopback),
            ("2002:a9fe:a9fe::", LinkLocal),
            ("2002:0a00:0001::", Private),
            ("2002:c0a8:0101:1::1", Private),
            ("2002::", Unspecified),
            ("2002:e000:1::", Multicast),
        ];
        for (a, expected) in cases {
            assert_eq!(why(a), Some(*expected), "{a}");
            assert!(!is_public(a.parse().unwrap_or_else(|_| panic!("{a}"))));
        }
    }

    #[test]
    fn public_addresses_pass() {
        for a in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "169.253.255.255",
            "192.0.1.1",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "11.0.0.1",
            "126.255.255.255",
            "128.0.0.1",
            "2606:4700::1111",
            "2a00:1450:4001:80b::200e",
            "2001:4860:4860::8888",
            "2001:200::1",
            "3ffe::1",
            "64:ff9b::808:808",
            "::ffff:8.8.8.8",
            "2002:808:808::1",
        ] {
            assert_eq!(why(a), None, "{a}");
        }
    }
}
