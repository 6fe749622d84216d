//! Outbound URLs, parsed once with the parser the client sends with.
//!
//! A hand-rolled host split once disagreed with the client about `http://127.0.0.1:1\@1.2.3.4/`
//! (the client's WHATWG parser reads `\` as `/`, so the host was 127.0.0.1). A [`Target`] is a
//! `reqwest::Url` (WHATWG), checked, and the very value the request is sent to: whoever stores
//! one stores [`Target::as_str`], its normalized serialization, and parses that back.

use std::fmt;
use std::net::IpAddr;

use reqwest::Url;

/// Longest accepted URL (input and normalized form).
pub const MAX_URL_LEN: usize = 2048;

/// Why a URL cannot be a target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Not a URL at all.
    #[error("is not a valid URL ({0})")]
    Unparsable(String),
    /// Only http and https.
    #[error("must use http or https")]
    Scheme,
    /// `user:pass@host`: credentials in a URL end up in logs, and `@` is the classic trick to
    /// make a URL look like it goes elsewhere.
    #[error("must not contain credentials (user:password@)")]
    Credentials,
    /// No host.
    #[error("has no host")]
    NoHost,
    /// Port 0.
    #[error("has an invalid port")]
    Port,
    /// Over [`MAX_URL_LEN`].
    #[error("is too long (at most {MAX_URL_LEN} characters)")]
    TooLong,
}

/// An http(s) URL without credentials, normalized by the WHATWG parser.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    url: Url,
}

impl Target {
    /// Parses and checks `input`. The fragment is dropped (it is never sent).
    pub fn parse(input: &str) -> Result<Target, TargetError> {
        if input.len() > MAX_URL_LEN {
            return Err(TargetError::TooLong);
        }
        let mut url = Url::parse(input).map_err(|e| TargetError::Unparsable(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(TargetError::Scheme);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(TargetError::Credentials);
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(TargetError::NoHost);
        }
        if url.port() == Some(0) {
            return Err(TargetError::Port);
        }
        url.set_fragment(None);
        if url.as_str().len() > MAX_URL_LEN {
            return Err(TargetError::TooLong);
        }
        Ok(Target { url })
    }

    /// The normalized URL (what to store and show).
    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    /// The URL the request goes to.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The host as it appears in the URL (IPv6 in brackets).
    pub fn host_str(&self) -> &str {
        self.url.host_str().unwrap_or_default()
    }

    /// The port connected to.
    pub fn port(&self) -> u16 {
        self.url.port_or_known_default().unwrap_or(80)
    }

    /// The address the HTTP connector connects to without any DNS lookup, if the host is one.
    ///
    /// This mirrors the connector (hyper-util): it strips IPv6 brackets and tries the standard
    /// IPv4/IPv6 parsers, and only otherwise asks the resolver. So whatever skips the resolver
    /// is exactly what this returns, and must be checked before sending.
    pub fn literal_ip(&self) -> Option<IpAddr> {
        let host = self.host_str();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        host.parse::<IpAddr>().ok()
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Target({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Target::parse(s).ok().and_then(|t| t.literal_ip())
    }

    #[test]
    fn numeric_hosts_are_normalized_to_the_address_connected_to() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        for u in [
            "http://127.0.0.1/",
            "http://127.1/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://0x7f000001/",
            "http://017700000001/",
            "http://127.000.000.001/",
            "http://0x7f.0x0.0x0.0x1/",
            "http://127.0.0.1./",
            "http://%31%32%37.0.0.1/",
            "http://127\u{3002}0\u{3002}0\u{3002}1/",
            "http://\u{ff11}\u{ff12}\u{ff17}.0.0.1/",
            "http://127.0.0.1:80\\@1.2.3.4/",
            "http://127.0.0.1#@1.2.3.4/",
            "http://127.0.0.1?@1.2.3.4/",
            "http:127.0.0.1/",
            "http:/127.0.0.1/",
            "http:\\\\127.0.0.1\\",
            "HTTP://127.0.0.1/",
            " http://127.0.0.1/ ",
            "http://127.0.\t0.1/",
        ] {
            assert_eq!(ip(u), Some(lo), "{u}");
        }
        assert_eq!(
            ip("http://[::ffff:127.0.0.1]/"),
            "::ffff:7f00:1".parse().ok()
        );
        assert_eq!(ip("http://[::127.0.0.1]/"), "::7f00:1".parse().ok());
        assert_eq!(ip("http://0/"), "0.0.0.0".parse().ok());
        assert_eq!(ip("http://example.com/"), None);
    }

    #[test]
    fn backslash_trick_keeps_the_real_host() {
        let t =
            Target::parse("http://127.0.0.1:18999\\@1.2.3.4/").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.host_str(), "127.0.0.1");
        assert_eq!(t.port(), 18999);
        assert_eq!(t.as_str(), "http://127.0.0.1:18999/@1.2.3.4/");
    }

    #[test]
    fn refused_forms() {
        for (u, e) in [
            ("ftp://example.com/", TargetError::Scheme),
            ("file:///etc/passwd", TargetError::Scheme),
            ("gopher://127.0.0.1:70/_x", TargetError::Scheme),
            ("ws://example.com/", TargetError::Scheme),
            ("javascript:alert(1)", TargetError::Scheme),
            ("data:text/plain,x", TargetError::Scheme),
            ("http://user:pw@example.com/", TargetError::Credentials),
            ("http://1.2.3.4@127.0.0.1/", TargetError::Credentials),
            ("http://user@example.com/", TargetError::Credentials),
            ("http://:pw@example.com/", TargetError::Credentials),
            ("http://example.com:0/", TargetError::Port),
        ] {
            assert_eq!(Target::parse(u).err(), Some(e), "{u}");
        }
        for u in [
            "not a url",
            "//127.0.0.1/",
            "http://",
            "http://[::1%25lo]/",
            "http://[::1/",
            "http://exa mple.com/",
            "http://example.com:99999/",
            "http://1.2.3.4.5/",
            "http://256.0.0.1/",
        ] {
            assert!(
                matches!(Target::parse(u), Err(TargetError::Unparsable(_))),
                "{u}: {:?}",
                Target::parse(u)
            );
        }
        let long = format!("http://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(Target::parse(&long).err(), Some(TargetError::TooLong));
    }

    #[test]
    fn fragment_dropped_and_serialization_is_stable() {
        let t =
            Target::parse("HTTPS://Example.COM:443/a b?q=1#frag").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.as_str(), "https://example.com/a%20b?q=1");
        let again = Target::parse(t.as_str()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again, t);
    }
}
