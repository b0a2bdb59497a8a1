//! Where a webhook may go (SSRF). A customer chooses the URL, so without a check it could make
//! the service call its own network: an admin port on loopback, a database on a private
//! address, the cloud's metadata service at 169.254.169.254 handing out credentials.
//!
//! Unless `webhooks.allow_private_targets`, a URL is refused at registration when its host
//! resolves to any address that is not public, and at every connection the resolver hands the
//! HTTP client only public addresses: a name that resolved to a public address when it was
//! registered and to 127.0.0.1 later (DNS rebinding) is refused then, because the address
//! checked is the address connected to. Unless `webhooks.allow_insecure_http`, only `https`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why a URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("not a URL: {0}")]
    Malformed(String),
    #[error("the scheme must be https (http only where webhooks.allow_insecure_http)")]
    Scheme,
    #[error("credentials in a URL would be sent in clear in every message's logs; not allowed")]
    Credentials,
    #[error("{0} cannot be resolved")]
    Unresolved(String),
    /// The address is kept for the service's own use, never shown: a tenant must not learn
    /// what the service's network resolves names to.
    #[error(
        "{host} is not allowed: it is, or resolves to, an address that is not public (loopback, \
         private, link-local, unique-local and metadata addresses are refused)"
    )]
    NotPublic { host: String, address: IpAddr },
}

/// What a target may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Targets {
    pub allow_insecure_http: bool,
    pub allow_private: bool,
}

impl Targets {
    /// Checks a URL's form (scheme, no credentials, an IP literal's address); not its name's
    /// addresses, which [`Targets::check_resolved`] does.
    pub fn check_form(&self, url: &str) -> Result<Url, TargetError> {
        let parsed = Url::parse(url).map_err(|e| TargetError::Malformed(e.to_string()))?;
        match parsed.scheme() {
            "https" => {}
            "http" if self.allow_insecure_http => {}
            _ => return Err(TargetError::Scheme),
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(TargetError::Credentials);
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| TargetError::Malformed("no host".to_owned()))?;
        if let Some(address) = literal(host) {
            self.check_address(host, address)?;
        }
        Ok(parsed)
    }

    /// Checks the URL's form and every address its host resolves to now.
    pub async fn check_resolved(&self, url: &str) -> Result<Url, TargetError> {
        let parsed = self.check_form(url)?;
        let host = parsed.host_str().unwrap_or_default().to_owned();
        if literal(&host).is_some() || self.allow_private {
            return Ok(parsed);
        }
        let port = parsed.port_or_known_default().unwrap_or(443);
        let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|_| TargetError::Unresolved(host.clone()))?
            .collect();
        if addresses.is_empty() {
            return Err(TargetError::Unresolved(host));
        }
        for address in addresses {
            self.check_address(&host, address.ip())?;
        }
        Ok(parsed)
    }

    fn check_address(&self, host: &str, address: IpAddr) -> Result<(), TargetError> {
        if self.allow_private || is_public(address) {
            Ok(())
        } else {
            Err(TargetError::NotPublic {
                host: host.to_owned(),
                address,
            })
        }
    }
}

/// The address of a host that is an IP literal (`[::1]` included).
fn literal(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Whether `address` is on the public internet: not loopback, private (RFC 1918), shared
/// (100.64/10, where some clouds put their metadata service), link-local (169.254/16, the
/// metadata service of most clouds), unspecified, broadcast, multicast, documentation or
/// benchmarking ranges, nor IPv6's loopback, unique-local (fc00::/7), link-local (fe80::/10),
/// or an IPv4 address mapped or translated into IPv6 that is one of those.
pub fn is_public(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let segments = v6.segments();
            // 64:ff9b::/96, NAT64: the IPv4 address is in the last 32 bits.
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [.., high, low] = segments;
                return is_public_v4(Ipv4Addr::from((u32::from(high) << 16) | u32::from(low)));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (segments[0] & 0xfe00) == 0xfc00
                || (segments[0] & 0xffc0) == 0xfe80
                || (segments[0] == 0x2001 && segments[1] == 0x0db8))
        }
    }
}

fn is_public_v4(v4: Ipv4Addr) -> bool {
    let [a, b, ..] = v4.octets();
    !(v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || v4.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240)
}

/// The HTTP client's resolver: the system's, with every address that is not public removed
/// unless private targets are allowed, so the client can only connect to an address that
/// passed the check.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|address| allow_private || is_public(address.ip()))
                .collect();
            if allowed.is_empty() {
                let error: Box<dyn std::error::Error + Send + Sync> = match found.first() {
                    Some(address) => Box::new(TargetError::NotPublic {
                        host,
                        address: address.ip(),
                    }),
                    None => Box::new(TargetError::Unresolved(host)),
                };
                return Err(error);
            }
            let addresses: Addrs = Box::new(allowed.into_iter());
            Ok(addresses)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: Targets = Targets {
        allow_insecure_http: false,
        allow_private: false,
    };

    #[test]
    fn only_public_addresses_pass() {
        for address in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.100.100.200",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(!is_public(address.parse().unwrap()), "{address}");
        }
        for address in ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(address.parse().unwrap()), "{address}");
        }
    }

    #[test]
    fn forms_are_checked_before_any_lookup() {
        assert_eq!(
            STRICT.check_form("http://example.com/hook"),
            Err(TargetError::Scheme)
        );
        assert_eq!(
            STRICT.check_form("https://user:pw@example.com/"),
            Err(TargetError::Credentials)
        );
        assert!(matches!(
            STRICT.check_form("https://169.254.169.254/latest/meta-data"),
            Err(TargetError::NotPublic { .. })
        ));
        assert!(matches!(
            STRICT.check_form("https://[::1]:8443/"),
            Err(TargetError::NotPublic { .. })
        ));
        assert!(matches!(
            STRICT.check_form("not a url"),
            Err(TargetError::Malformed(_))
        ));
        assert!(STRICT.check_form("https://example.com/hook").is_ok());
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused_at_registration_and_connection() {
        let refused = STRICT.check_resolved("https://localhost:8443/hook").await;
        let resolver = GuardedResolver {
            allow_private: false,
        };
        let connected = resolver.resolve("localhost".parse().unwrap()).await;
        let laptop = GuardedResolver {
            allow_private: true,
        };
        let allowed = laptop.resolve("localhost".parse().unwrap()).await;

        assert!(
            matches!(refused, Err(TargetError::NotPublic { .. })),
            "{refused:?}"
        );
        let error = connected.err().expect("no address is handed out");
        assert!(error.to_string().contains("is not allowed"), "{error}");
        assert!(allowed.unwrap().next().unwrap().ip().is_loopback());
    }
}
