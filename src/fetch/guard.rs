//! The private-network guard: a feed, a redirect or a stored move must not
//! steer the poller to an address the operator did not name.
//!
//! Loopback, private (RFC 1918), link-local, unique-local, shared (CGNAT),
//! unspecified, multicast and reserved addresses, and their IPv4-mapped and
//! NAT64 forms, are reached only for hosts written literally in the config's
//! source URLs. The check is on the address a name resolves to (a reqwest
//! DNS resolver), so a public name pointing at 10.0.0.5 is refused like the
//! literal; IP literals, which reqwest connects to without resolving, are
//! checked before each request.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, RwLock};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// The refusal: `host` is not named in the config and reaches `addr`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refused: {host} is {addr}, a private or local address, and only hosts named in the \
     config's source urls may be ([poll] allow_private_networks = true turns this guard off)"
)]
pub struct Refused {
    /// The host as the URL wrote it.
    pub host: String,
    /// The private address it is or resolved to.
    pub addr: IpAddr,
}

/// Which hosts may be private: those named in the config. Shared by the
/// fetcher and its resolver, and replaced when the config is reloaded.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    named: Arc<RwLock<HashSet<String>>>,
}

impl Guard {
    /// A guard letting through the hosts of `urls` (the configured sources).
    pub fn new<'a>(urls: impl IntoIterator<Item = &'a Url>) -> Self {
        let guard = Self::default();
        guard.name_hosts(urls);
        guard
    }

    /// Replaces the named hosts with those of `urls`.
    pub fn name_hosts<'a>(&self, urls: impl IntoIterator<Item = &'a Url>) {
        let hosts = urls
            .into_iter()
            .filter_map(|url| url.host_str().map(host_key))
            .collect();
        *self.named.write().unwrap_or_else(|e| e.into_inner()) = hosts;
    }

    fn is_named(&self, host: &str) -> bool {
        self.named
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&host_key(host))
    }

    /// Checks a URL whose host is an IP literal (reqwest does not resolve
    /// those, so the resolver never sees them). Names pass here and are
    /// checked when they resolve.
    pub fn check_url(&self, url: &Url) -> Result<(), Refused> {
        let addr = match url.host() {
            Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
            Some(Host::Domain(_)) | None => return Ok(()),
        };
        let host = url.host_str().unwrap_or_default();
        if is_private(addr) && !self.is_named(host) {
            return Err(Refused {
                host: host.to_string(),
                addr,
            });
        }
        Ok(())
    }

    /// The addresses of `host` this guard lets through: all of them for a
    /// named host, else the public ones; a refusal when nothing is left.
    fn filter(&self, host: &str, addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, Refused> {
        if self.is_named(host) {
            return Ok(addrs);
        }
        let first_private = addrs.iter().map(SocketAddr::ip).find(|ip| is_private(*ip));
        let public: Vec<SocketAddr> = addrs.into_iter().filter(|a| !is_private(a.ip())).collect();
        match (public.is_empty(), first_private) {
            (true, Some(addr)) => Err(Refused {
                host: host.to_string(),
                addr,
            }),
            _ => Ok(public),
        }
    }
}

/// Hosts compare without case and without IPv6 brackets.
fn host_key(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase()
}

/// The resolver reqwest uses when the guard is on: the system's resolver,
/// then [`Guard`]'s filter.
#[derive(Debug)]
pub(super) struct GuardedResolver(pub(super) Guard);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.0.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed = guard.filter(&host, addrs)?;
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// Whether `ip` is an address a stranger's feed must not reach: anything
/// but a public unicast address.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => is_private_v6(v6),
    }
}

fn is_private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || a == 0 // "this network", 0.0.0.0/8
        || ip.is_loopback() // 127.0.0.0/8
        || ip.is_private() // 10/8, 172.16/12, 192.168/16
        || ip.is_link_local() // 169.254/16
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT), 100.64/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments, 192.0.0.0/24
        || (a == 198 && (b == 18 || b == 19)) // benchmarking, 198.18/15
        || ip.is_multicast() // 224/4
        || a >= 240 // reserved 240/4 and broadcast
}

fn is_private_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_private_v4(v4);
    }
    let segments = ip.segments();
    // NAT64 (64:ff9b::/96) and the deprecated IPv4-compatible form
    // (::a.b.c.d) carry an IPv4 address in their low 32 bits.
    let embedded = Ipv4Addr::from((u32::from(segments[6]) << 16) | u32::from(segments[7]));
    let nat64 = segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    let compatible = segments[..6] == [0; 6] && !ip.is_loopback() && !ip.is_unspecified();
    if nat64 || compatible {
        return is_private_v4(embedded);
    }
    ip.is_unspecified()
        || ip.is_loopback()
        || (segments[0] & 0xfe00) == 0xfc00 // unique local, fc00::/7
        || (segments[0] & 0xffc0) == 0xfe80 // link-local, fe80::/10
        || (segments[0] & 0xffc0) == 0xfec0 // site-local (deprecated), fec0::/10
        || ip.is_multicast() // ff00::/8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_public_addresses() {
        let check = |text: &str, private: bool| {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(is_private(ip), private, "{text}");
        };
        for text in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.0.0.2",
            "10.0.0.5",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.8",
            "198.18.0.1",
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
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.5",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::10.0.0.5",
            "64:ff9b::a9fe:a9fe",
        ] {
            check(text, true);
        }
        for text in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "192.0.2.1",
            "169.253.0.1",
            "2606:4700::1111",
            "2001:db8::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            check(text, false);
        }
    }

    #[test]
    fn only_named_hosts_may_be_private() {
        let configured = [
            Url::parse("http://127.0.0.1:8000/feed").unwrap(),
            Url::parse("http://Intranet.Example/feed").unwrap(),
            Url::parse("http://[::1]:9000/feed").unwrap(),
        ];
        let guard = Guard::new(&configured);
        let url = |text: &str| Url::parse(text).unwrap();
        assert!(guard.check_url(&url("http://127.0.0.1:9999/other")).is_ok());
        assert!(guard.check_url(&url("http://[::1]/x")).is_ok());
        assert!(guard.check_url(&url("https://8.8.8.8/feed")).is_ok());
        assert!(guard.check_url(&url("https://public.example/feed")).is_ok());
        let refused = guard.check_url(&url("http://127.0.0.2:8000/")).unwrap_err();
        assert_eq!(refused.addr, "127.0.0.2".parse::<IpAddr>().unwrap());
        assert!(refused
            .to_string()
            .starts_with("refused: 127.0.0.2 is 127.0.0.2"));
        // Other spellings of an address are the address.
        assert!(guard.check_url(&url("http://0x7f.0.0.2/")).is_err());
        assert!(guard
            .check_url(&url("http://[::ffff:169.254.169.254]/"))
            .is_err());

        let addr = |text: &str| SocketAddr::new(text.parse().unwrap(), 80);
        assert_eq!(
            guard.filter("intranet.example", vec![addr("10.0.0.5")]),
            Ok(vec![addr("10.0.0.5")])
        );
        assert_eq!(
            guard.filter("mixed.example", vec![addr("10.0.0.5"), addr("8.8.8.8")]),
            Ok(vec![addr("8.8.8.8")])
        );
        assert_eq!(
            guard.filter("rebind.example", vec![addr("169.254.169.254")]),
            Err(Refused {
                host: "rebind.example".into(),
                addr: "169.254.169.254".parse().unwrap()
            })
        );
        guard.name_hosts(&[Url::parse("http://rebind.example/").unwrap()]);
        assert!(guard
            .filter("rebind.example", vec![addr("169.254.169.254")])
            .is_ok());
        assert!(guard.check_url(&url("http://127.0.0.1:8000/feed")).is_err());
    }
}
