//! Core Lightning's release numbers, and which RPC each release offers.
//!
//! The adapter picks its commands from the version `getinfo` reports: CLN deprecated `pay`,
//! `getroute` and `keysend` in v26.06 and removes them in v27.03 (and a node started with
//! `allow-deprecated-apis=false` refuses them already), while their successors only exist from
//! v24.11 on. Releases are `vYY.MM` (`v24.11`, `v24.11.1`, `v25.02rc1`, `v24.11-modded`).
//!
//! Public so that the fake `lightningd` of Satchel's tests (`satchel-fakes`) plays a release
//! with the same table of which release offers what.

use std::fmt;

/// A Core Lightning release, `vMAJOR.MINOR` (the point release does not change the RPC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClnVersion {
    /// Year of the release (`24` in `v24.11`).
    pub major: u32,
    /// Month of the release (`11` in `v24.11`).
    pub minor: u32,
}

impl ClnVersion {
    /// v23.08: the oldest release the adapter supports.
    pub const MIN_SUPPORTED: ClnVersion = ClnVersion::new(23, 8);
    /// v24.11: `xpay`, and askrene's layers (`askrene-create-layer`, `askrene-update-channel`,
    /// `askrene-disable-node`, `askrene-remove-layer`) that `getroutes` needs to exclude a
    /// failing channel.
    pub const XPAY: ClnVersion = ClnVersion::new(24, 11);
    /// v25.02: `maxdelay` on `xpay` and `getroutes`, and the `auto.no_mpp_support` layer: the
    /// first release where `getroutes` can be asked for a single path (a keysend has one).
    pub const MAXDELAY: ClnVersion = ClnVersion::new(25, 2);
    /// Where routes come from `getroutes` rather than `getroute` (see [`ClnVersion::MAXDELAY`]).
    pub const GETROUTES_ONE_PATH: ClnVersion = ClnVersion::MAXDELAY;
    /// v25.09: `getroutes maxparts` (before it, the `auto.no_mpp_support` layer asks for one
    /// path; that layer is deprecated from v26.06).
    pub const MAXPARTS: ClnVersion = ClnVersion::new(25, 9);
    /// v26.06: `pay`, `getroute`, `keysend` and `getroutes`' old hop fields (`amount_msat`,
    /// `next_node_id`, `delay`) deprecated; `getroutes` hops gain `node_id_in`/`node_id_out`,
    /// `amount_in_msat`/`amount_out_msat`, `cltv_in`/`cltv_out`; `xkeysend` added.
    pub const DEPRECATES_PAY: ClnVersion = ClnVersion::new(26, 6);
    /// v27.03: `pay`, `getroute` and `keysend` removed.
    pub const REMOVES_PAY: ClnVersion = ClnVersion::new(27, 3);
    /// v27.06: `getroutes`' old hop fields removed.
    pub const REMOVES_OLD_HOP_FIELDS: ClnVersion = ClnVersion::new(27, 6);

    /// `vMAJOR.MINOR`.
    pub const fn new(major: u32, minor: u32) -> ClnVersion {
        ClnVersion { major, minor }
    }

    /// The release in `getinfo`'s `version`: `v24.11`, `v24.11.1`, `v25.02rc1`,
    /// `v24.11-17-gabcdef-modded`, `24.11`. `None` for anything else (a custom build string).
    pub fn parse(s: &str) -> Option<ClnVersion> {
        let s = s.trim();
        let s = s.strip_prefix('v').unwrap_or(s);
        let (major, rest) = s.split_once('.')?;
        let minor_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        if major.is_empty() || !major.bytes().all(|b| b.is_ascii_digit()) || minor_len == 0 {
            return None;
        }
        let minor = rest.get(..minor_len)?;
        Some(ClnVersion::new(major.parse().ok()?, minor.parse().ok()?))
    }

    /// Whether this release has `xpay` (and the askrene layer commands).
    pub fn has_xpay(self) -> bool {
        self >= ClnVersion::XPAY
    }

    /// Whether keysend routes and `queryroutes` use `getroutes` (one path) on this release.
    pub fn routes_with_getroutes(self) -> bool {
        self >= ClnVersion::GETROUTES_ONE_PATH
    }

    /// Whether this release still has `pay`/`getroute`/`keysend` at all (deprecated APIs
    /// allowed).
    pub fn has_pay(self) -> bool {
        self < ClnVersion::REMOVES_PAY
    }
}

impl fmt::Display for ClnVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{:02}", self.major, self.minor)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_release_strings() {
        for (s, v) in [
            ("v23.08", (23, 8)),
            ("v24.11.1", (24, 11)),
            ("v25.02rc1", (25, 2)),
            ("v24.11-17-gabcdef-modded", (24, 11)),
            ("26.06", (26, 6)),
            (" v27.03 ", (27, 3)),
        ] {
            assert_eq!(ClnVersion::parse(s), Some(ClnVersion::new(v.0, v.1)), "{s}");
        }
        for s in ["", "v", "vx.y", "v24", "v24.", "satchel", ".11"] {
            assert_eq!(ClnVersion::parse(s), None, "{s}");
        }
        assert_eq!(ClnVersion::new(24, 8).to_string(), "v24.08");
        assert!(ClnVersion::new(24, 11).has_xpay());
        assert!(!ClnVersion::new(24, 8).has_xpay());
        assert!(!ClnVersion::new(24, 11).routes_with_getroutes());
        assert!(ClnVersion::new(25, 2).routes_with_getroutes());
        assert!(ClnVersion::new(26, 6).has_pay());
        assert!(!ClnVersion::new(27, 3).has_pay());
    }
}
