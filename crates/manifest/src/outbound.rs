//! `[outbound] allow`: the hosts a worker may send HTTP requests to.
//!
//! An entry is `[scheme://]host[:port]`:
//! - `api.example.com` — that host over https (443) or http (80);
//! - `https://api.example.com` — over https only, port 443;
//! - `127.0.0.1:8080`, `http://localhost:3000` — that port;
//! - `*.example.com` — any subdomain (not `example.com` itself);
//! - `host:*` — any port; `*` — any host (use with care).

use std::fmt;
use std::str::FromStr;

/// One parsed `allow` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPattern {
    scheme: Option<Scheme>,
    host: HostMatch,
    port: PortMatch,
    text: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum HostMatch {
    Any,
    /// `*.example.com`: stored as `.example.com`.
    Subdomains(String),
    Exact(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PortMatch {
    Any,
    /// The scheme's default port.
    Default,
    Exact(u16),
}

impl HostPattern {
    /// Whether a request to `scheme://host:port` (port `None` = the
    /// scheme's default) matches this entry.
    pub fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let scheme = match scheme {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            _ => return false,
        };
        if self.scheme.is_some_and(|s| s != scheme) {
            return false;
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let host_ok = match &self.host {
            HostMatch::Any => true,
            HostMatch::Subdomains(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
            HostMatch::Exact(exact) => *exact == host,
        };
        let default_port = match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        };
        let port = port.unwrap_or(default_port);
        let port_ok = match self.port {
            PortMatch::Any => true,
            PortMatch::Default => port == default_port,
            PortMatch::Exact(p) => p == port,
        };
        host_ok && port_ok
    }

    /// Whether any of `patterns` allows a request to `uri`.
    pub fn any_allows(patterns: &[HostPattern], uri: &http::Uri) -> bool {
        let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
            return false;
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        patterns
            .iter()
            .any(|p| p.allows(scheme, host, uri.port_u16()))
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for HostPattern {
    type Err = String;

    fn from_str(text: &str) -> Result<HostPattern, String> {
        let (scheme, rest) = match text.split_once("://") {
            Some(("http", rest)) => (Some(Scheme::Http), rest),
            Some(("https", rest)) => (Some(Scheme::Https), rest),
            Some((other, _)) => {
                return Err(format!(
                    "scheme `{other}` is not supported: use http:// or https://, or none for both"
                ));
            }
            None => (None, text),
        };
        if rest.is_empty() {
            return Err("no host: write a host such as `api.example.com`".into());
        }
        if rest.contains('/') || rest.contains('?') || rest.contains('#') {
            return Err(
                "a path is not allowed here: give the host only, e.g. `api.example.com`".into(),
            );
        }
        let (host, port) = split_port(rest)?;
        let host = host.to_ascii_lowercase();
        let host = if host == "*" {
            HostMatch::Any
        } else if let Some(suffix) = host.strip_prefix("*.") {
            check_host(suffix)?;
            HostMatch::Subdomains(format!(".{suffix}"))
        } else {
            check_host(&host)?;
            HostMatch::Exact(host)
        };
        Ok(HostPattern {
            scheme,
            host,
            port,
            text: text.to_string(),
        })
    }
}

/// Splits `host[:port]`, `[v6]` or `[v6]:port`.
fn split_port(text: &str) -> Result<(String, PortMatch), String> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or("an IPv6 address needs its closing `]`")?;
        (host.to_string(), after.strip_prefix(':'))
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (host.to_string(), Some(port)),
            None => (text.to_string(), None),
        }
    };
    let port = match port {
        None => PortMatch::Default,
        Some("*") => PortMatch::Any,
        Some(p) => PortMatch::Exact(
            p.parse()
                .map_err(|_| format!("`{p}` is not a port: use a number from 1 to 65535 or `*`"))?,
        ),
    };
    Ok((host, port))
}

fn check_host(host: &str) -> Result<(), String> {
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b':');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{host}` is not a host name: use letters, digits, `-` and `.`, with `*.` only at the start"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(pattern: &str, uri: &str) -> bool {
        let pattern: HostPattern = pattern.parse().unwrap();
        HostPattern::any_allows(&[pattern], &uri.parse().unwrap())
    }

    #[test]
    fn a_bare_host_allows_both_schemes_on_default_ports() {
        assert!(allows("api.example.com", "https://api.example.com/v1"));
        assert!(allows("api.example.com", "http://API.example.com/"));
        assert!(!allows("api.example.com", "https://api.example.com:8443/"));
        assert!(!allows(
            "api.example.com",
            "https://evil.com/?api.example.com"
        ));
        assert!(!allows(
            "api.example.com",
            "https://api.example.com.evil.com/"
        ));
    }

    #[test]
    fn schemes_and_ports_narrow() {
        assert!(!allows(
            "https://api.example.com",
            "http://api.example.com/"
        ));
        assert!(allows("127.0.0.1:8080", "http://127.0.0.1:8080/x"));
        assert!(!allows("127.0.0.1:8080", "http://127.0.0.1:8081/x"));
        assert!(allows("localhost:*", "http://localhost:9999/"));
        assert!(allows("[::1]:8080", "http://[::1]:8080/"));
    }

    #[test]
    fn wildcards() {
        assert!(allows("*.example.com", "https://a.b.example.com/"));
        assert!(!allows("*.example.com", "https://example.com/"));
        assert!(!allows("*.example.com", "https://badexample.com/"));
        assert!(allows("*", "https://anything.dev/"));
        assert!(!allows("*", "https://anything.dev:8443/"));
        assert!(allows("*:*", "https://anything.dev:8443/"));
    }

    #[test]
    fn bad_entries_say_why() {
        let err = |s: &str| s.parse::<HostPattern>().unwrap_err();
        assert!(err("ftp://x.com").contains("scheme `ftp`"));
        assert!(err("https://x.com/api").contains("path is not allowed"));
        assert!(err("x.com:http").contains("not a port"));
        assert!(err("bad host.com").contains("not a host name"));
        assert!(err("a.*.com").contains("not a host name"));
        assert!(err("").contains("no host"));
    }
}
