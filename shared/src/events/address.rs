//! Which webhook URLs and addresses deliveries may reach. A partner chooses the URL, so without
//! these checks a webhook could make the relay POST into our own network (SSRF): the instance
//! metadata service, a database, an admin port. Registration checks the URL and what its host
//! resolves to; the transport checks again at every connect (DNS can change in between).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

/// The longest URL a registration may have (the contract's 2048 chars).
pub const MAX_URL_CHARS: usize = 2048;

/// IPv4 ranges that are not globally routable unicast (IANA's special-purpose registry, RFC 6890
/// and successors): (network, prefix length).
const NON_PUBLIC_V4: [(Ipv4Addr, u8); 14] = [
    (Ipv4Addr::new(0, 0, 0, 0), 8),       // "this network", incl. unspecified
    (Ipv4Addr::new(10, 0, 0, 0), 8),      // private
    (Ipv4Addr::new(100, 64, 0, 0), 10),   // carrier-grade NAT (shared address space)
    (Ipv4Addr::new(127, 0, 0, 0), 8),     // loopback
    (Ipv4Addr::new(169, 254, 0, 0), 16),  // link-local, incl. the metadata service 169.254.169.254
    (Ipv4Addr::new(172, 16, 0, 0), 12),   // private
    (Ipv4Addr::new(192, 0, 0, 0), 24),    // IETF protocol assignments (incl. DS-Lite, NAT64 discovery)
    (Ipv4Addr::new(192, 0, 2, 0), 24),    // documentation
    (Ipv4Addr::new(192, 88, 99, 0), 24),  // deprecated 6to4 relay anycast
    (Ipv4Addr::new(192, 168, 0, 0), 16),  // private
    (Ipv4Addr::new(198, 18, 0, 0), 15),   // benchmarking
    (Ipv4Addr::new(198, 51, 100, 0), 24), // documentation
    (Ipv4Addr::new(203, 0, 113, 0), 24),  // documentation
    (Ipv4Addr::new(224, 0, 0, 0), 3),     // multicast 224/4 and reserved 240/4, incl. broadcast
];

/// Ranges inside the global unicast space 2000::/3 that are still not a partner's server.
const NON_PUBLIC_V6_IN_GLOBAL: [(Ipv6Addr, u8); 4] = [
    // IETF protocol assignments: Teredo (an IPv4 tunnel), benchmarking 2001:2::/48, ORCHID.
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23),
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32), // documentation
    // 6to4 (deprecated by RFC 7526): relayed to an embedded IPv4 address, which may be private.
    (Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16),
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20), // documentation (RFC 9637)
];

/// NAT64's well-known prefix 64:ff9b::/96: the last 32 bits are the IPv4 address reached.
const NAT64: (Ipv6Addr, u8) = (Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96);

/// Whether `ip` is a globally routable unicast address, one a partner's server may have.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    !NON_PUBLIC_V4
        .iter()
        .any(|&(net, len)| in_prefix(ip.to_bits().into(), net.to_bits().into(), len, 32))
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    // IPv4-mapped (::ffff:a.b.c.d) and IPv4-compatible (::a.b.c.d) addresses reach the IPv4
    // address on a dual-stack socket: judged by it (`::` and `::1` land in 0/8, refused).
    if let Some(v4) = ip.to_ipv4() {
        return is_public_v4(v4);
    }
    let bits = ip.to_bits();
    if in_prefix(bits, NAT64.0.to_bits(), NAT64.1, 128) {
        // The low 32 bits, by construction of the prefix.
        return is_public_v4(Ipv4Addr::from_bits(bits as u32));
    }
    // Everything outside 2000::/3 is reserved, unique-local (fc00::/7), link-local (fe80::/10),
    // site-local, multicast (ff00::/8), discard-only (100::/64), local-use NAT64 (64:ff9b:1::/48).
    let global_unicast = in_prefix(bits, Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0).to_bits(), 3, 128);
    global_unicast
        && !NON_PUBLIC_V6_IN_GLOBAL
            .iter()
            .any(|&(net, len)| in_prefix(bits, net.to_bits(), len, 128))
}

/// Whether the top `len` of `width` bits of `ip` and `net` agree.
fn in_prefix(ip: u128, net: u128, len: u8, width: u32) -> bool {
    let shift = width.saturating_sub(u32::from(len));
    ip.checked_shr(shift).unwrap_or(0) == net.checked_shr(shift).unwrap_or(0)
}

/// Why a webhook URL is refused (the 422 `WEBHOOK_URL_REFUSED` on field `url` shows the text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefusal {
    #[error("must be at most {MAX_URL_CHARS} characters")]
    TooLong,
    #[error("must be an absolute URL ({0})")]
    NotAbsolute(url::ParseError),
    #[error("must use https")]
    NotHttps,
    #[error("must use http or https")]
    NotHttp,
    #[error("must have a host")]
    NoHost,
    #[error("must not contain a user name or password")]
    UserInfo,
    /// The address stays out of the message: naming what an internal host name resolves to would
    /// tell a partner about our network.
    #[error("host is or resolves to an address that is not public")]
    NotPublic(IpAddr),
    #[error("host does not resolve")]
    DoesNotResolve,
}

/// A URL that passed [`UrlPolicy::check_url`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedUrl(Url);

impl CheckedUrl {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn url(&self) -> &Url {
        &self.0
    }

    /// The host as DNS sees it, or an IP literal without brackets.
    pub fn host(&self) -> String {
        match self.0.host() {
            Some(Host::Ipv6(ip)) => ip.to_string(),
            Some(host) => host.to_string(),
            None => String::new(),
        }
    }

    /// The host when it is an address, which is connected to without a DNS lookup.
    pub fn ip_literal(&self) -> Option<IpAddr> {
        match self.0.host()? {
            Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
            Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
            Host::Domain(_) => None,
        }
    }

    /// The port connected to (the scheme's default when the URL names none).
    pub fn port(&self) -> u16 {
        self.0.port_or_known_default().unwrap_or(443)
    }
}

/// What webhook URLs may point at. `allow_loopback` (`WEBHOOK_ALLOW_LOOPBACK`, local runs and
/// tests only) lets plain http and loopback addresses through; nothing else non-public.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UrlPolicy {
    pub allow_loopback: bool,
}

impl UrlPolicy {
    /// Whether deliveries may connect to `ip`.
    pub fn allows(&self, ip: IpAddr) -> bool {
        is_public(ip) || (self.allow_loopback && is_loopback(ip))
    }

    /// Checks the URL's form, and its host when that is an IP literal (a host name is checked by
    /// resolving it: the webhook transport's `check_resolves`).
    pub fn check_url(&self, raw: &str) -> Result<CheckedUrl, UrlRefusal> {
        if raw.chars().count() > MAX_URL_CHARS {
            return Err(UrlRefusal::TooLong);
        }
        // The same parser reqwest uses, so `http://0x7f.1/` is judged as the 127.0.0.1 it reaches.
        let url = Url::parse(raw).map_err(UrlRefusal::NotAbsolute)?;
        match (url.scheme(), self.allow_loopback) {
            ("https", _) | ("http", true) => {}
            (_, false) => return Err(UrlRefusal::NotHttps),
            (_, true) => return Err(UrlRefusal::NotHttp),
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(UrlRefusal::NoHost);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlRefusal::UserInfo);
        }
        let checked = CheckedUrl(url);
        match checked.ip_literal() {
            Some(ip) if !self.allows(ip) => Err(UrlRefusal::NotPublic(ip)),
            _ => Ok(checked),
        }
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(raw: &str) -> IpAddr {
        raw.parse().unwrap()
    }

    #[test]
    fn public_addresses_are_public() {
        for raw in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.215.14",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.255",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4007:80e::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(is_public(ip(raw)), "{raw} should be public");
        }
    }

    #[test]
    fn non_public_addresses_are_refused() {
        for raw in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.255.254",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.0.1",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "198.19.255.255",
            "192.88.99.1",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "100::1",
            "2001:db8::1",
            "2001::1",
            "2001:2::1",
            "2002:a00:1::1",
            "3fff::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::808:808",
            "fd00:ec2::254",
        ] {
            assert!(!is_public(ip(raw)), "{raw} should not be public");
        }
    }

    #[test]
    fn the_local_setting_allows_loopback_and_nothing_else_non_public() {
        let local = UrlPolicy { allow_loopback: true };
        let aws = UrlPolicy::default();
        for raw in ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"] {
            assert!(local.allows(ip(raw)), "{raw}");
            assert!(!aws.allows(ip(raw)), "{raw}");
        }
        for raw in ["10.0.0.1", "169.254.169.254", "0.0.0.0", "::", "fe80::1"] {
            assert!(!local.allows(ip(raw)), "{raw}");
        }
        assert!(aws.allows(ip("8.8.8.8")) && local.allows(ip("8.8.8.8")));
    }

    #[test]
    fn a_good_https_url_passes() {
        let url = UrlPolicy::default()
            .check_url("https://hooks.example.com:8443/fcfs?x=1")
            .unwrap();
        assert_eq!(url.host(), "hooks.example.com");
        assert_eq!(url.port(), 8443);
        assert_eq!(url.ip_literal(), None);
        assert_eq!(url.as_str(), "https://hooks.example.com:8443/fcfs?x=1");
        let literal = UrlPolicy::default().check_url("https://[2606:4700::1]/").unwrap();
        assert_eq!(literal.host(), "2606:4700::1");
        assert_eq!(literal.port(), 443);
    }

    #[test]
    fn malformed_urls_are_refused_with_the_reason() {
        let aws = UrlPolicy::default();
        let refused = |raw: &str| aws.check_url(raw).unwrap_err();
        assert!(matches!(refused("/relative"), UrlRefusal::NotAbsolute(_)));
        assert!(matches!(refused("not a url"), UrlRefusal::NotAbsolute(_)));
        assert!(matches!(refused("https://"), UrlRefusal::NotAbsolute(_)));
        assert_eq!(refused("http://hooks.example.com/"), UrlRefusal::NotHttps);
        assert_eq!(refused("ftp://hooks.example.com/"), UrlRefusal::NotHttps);
        assert_eq!(refused("https://user:pw@hooks.example.com/"), UrlRefusal::UserInfo);
        assert_eq!(refused("https://user@hooks.example.com/"), UrlRefusal::UserInfo);
        let long = format!("https://hooks.example.com/{}", "a".repeat(MAX_URL_CHARS));
        assert_eq!(refused(&long), UrlRefusal::TooLong);
        assert_eq!(refused(&long).to_string(), "must be at most 2048 characters");
        let local = UrlPolicy { allow_loopback: true };
        assert_eq!(local.check_url("ftp://h/").unwrap_err(), UrlRefusal::NotHttp);
        assert_eq!(local.check_url("mailto:a@b.c").unwrap_err(), UrlRefusal::NotHttp);
        assert!(local.check_url("http://localhost:8080/hook").is_ok());
    }

    #[test]
    fn ip_literal_hosts_are_judged_in_every_spelling() {
        let aws = UrlPolicy::default();
        for raw in [
            "https://127.0.0.1/",
            "https://2130706433/",
            "https://0x7f.1/",
            "https://0177.0.0.1/",
            "https://[::1]/",
            "https://[::ffff:127.0.0.1]/",
            "https://169.254.169.254/latest/meta-data/",
            "https://10.1.2.3:8443/",
            "https://0.0.0.0/",
        ] {
            assert!(matches!(aws.check_url(raw), Err(UrlRefusal::NotPublic(_))), "{raw}");
        }
        let local = UrlPolicy { allow_loopback: true };
        assert!(local.check_url("http://127.0.0.1:9000/").is_ok());
        assert!(local.check_url("http://[::1]:9000/").is_ok());
        assert!(matches!(
            local.check_url("http://10.0.0.1/"),
            Err(UrlRefusal::NotPublic(_))
        ));
        assert_eq!(
            aws.check_url("https://10.0.0.1/").unwrap_err().to_string(),
            "host is or resolves to an address that is not public"
        );
    }
}
