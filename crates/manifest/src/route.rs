//! Route patterns: which requests a worker serves, by host and path.
//!
//! A pattern is `HOST[/PATH]`. `HOST` is a name (`api.example.com`) or a
//! wildcard over its subdomains (`*.example.com`); `PATH` starts with `/` and
//! may end with `*`, which matches any rest, the empty one included
//! (`example.com/api/*` serves `/api/` and `/api/todos/1`, not `/api`). No
//! path means every path. When several patterns match a request, the most
//! specific wins: an exact host over a wildcard one, then the longer host,
//! then the longer path, then an exact path over a prefix.

use std::fmt;
use std::str::FromStr;

/// A parsed route pattern.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RoutePattern {
    /// The host, lowercase; for a wildcard, the suffix after `*`
    /// (`.example.com`).
    host: String,
    wildcard_host: bool,
    /// The path, up to the `*` if there is one.
    path: String,
    prefix: bool,
}

impl RoutePattern {
    /// Whether a request for `host` (lowercase, without a port) and `path`
    /// falls under this pattern.
    pub fn matches(&self, host: &str, path: &str) -> bool {
        let host_matches = if self.wildcard_host {
            host.len() > self.host.len() && host.ends_with(&self.host)
        } else {
            host == self.host
        };
        host_matches
            && if self.prefix {
                path.starts_with(&self.path)
            } else {
                path == self.path
            }
    }

    /// The host part: whether it is a wildcard, and the host (for a
    /// wildcard, the suffix after `*`, e.g. `.example.com`).
    pub fn host(&self) -> (bool, &str) {
        (self.wildcard_host, &self.host)
    }

    /// How specific the pattern is: of two patterns matching one request,
    /// the greater key wins.
    pub fn specificity(&self) -> (bool, usize, usize, bool) {
        (
            !self.wildcard_host,
            self.host.len(),
            self.path.len(),
            !self.prefix,
        )
    }
}

impl fmt::Display for RoutePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard_host {
            f.write_str("*")?;
        }
        write!(f, "{}{}", self.host, self.path)?;
        if self.prefix {
            f.write_str("*")?;
        }
        Ok(())
    }
}

impl FromStr for RoutePattern {
    type Err = String;

    fn from_str(text: &str) -> Result<RoutePattern, String> {
        if text.contains("://") {
            return Err("leave out the scheme: a route serves http and https alike".into());
        }
        let (host, path) = match text.find('/') {
            Some(slash) => (&text[..slash], &text[slash..]),
            None => (text, "/*"),
        };
        let host = host.to_ascii_lowercase();
        let (wildcard_host, name) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, host.as_str()),
        };
        if name.is_empty() {
            return Err("the host is empty".into());
        }
        if name.contains(':') {
            return Err("leave out the port: routes match the host name alone".into());
        }
        let valid_label = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if !name.split('.').all(valid_label) {
            return Err(format!(
                "{name:?} is not a host name (`*` may only start it, as in `*.example.com`)"
            ));
        }
        let (path, prefix) = match path.strip_suffix('*') {
            Some(rest) => (rest, true),
            None => (path, false),
        };
        if path.contains('*') {
            return Err("`*` may only end the path".into());
        }
        if path.contains(['?', '#']) || path.contains(char::is_whitespace) {
            return Err("the path may not contain a query, a fragment or spaces".into());
        }
        Ok(RoutePattern {
            host: if wildcard_host {
                format!(".{name}")
            } else {
                name.to_string()
            },
            wildcard_host,
            path: path.to_string(),
            prefix,
        })
    }
}

/// The host a request is for: the `Host` header (or the URI's authority),
/// lowercase, without port or trailing dot.
pub fn request_host<B>(request: &http::Request<B>) -> String {
    let raw = request
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .unwrap_or("");
    let host = if raw.starts_with('[') {
        // An IPv6 literal: keep the brackets' content.
        raw.split(']').next().unwrap_or("").trim_start_matches('[')
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, _)| h)
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hosts_lose_port_case_and_trailing_dot() {
        let request = |host: &str| {
            http::Request::builder()
                .header("host", host)
                .body(())
                .unwrap()
        };
        assert_eq!(
            request_host(&request("Api.Example.com:8080")),
            "api.example.com"
        );
        assert_eq!(request_host(&request("example.com.")), "example.com");
        assert_eq!(request_host(&request("[::1]:8080")), "::1");
        let no_header = http::Request::builder()
            .uri("http://h.example:1/x")
            .body(())
            .unwrap();
        assert_eq!(request_host(&no_header), "h.example");
    }

    use super::*;

    fn route(text: &str) -> RoutePattern {
        text.parse().unwrap()
    }

    #[test]
    fn hosts_and_paths_match_as_documented() {
        let api = route("example.com/api/*");
        assert!(api.matches("example.com", "/api/"));
        assert!(api.matches("example.com", "/api/todos/1"));
        assert!(!api.matches("example.com", "/api"));
        assert!(!api.matches("www.example.com", "/api/x"));

        let all = route("Example.com");
        assert_eq!(all.to_string(), "example.com/*");
        assert!(all.matches("example.com", "/"));

        let exact = route("example.com/health");
        assert!(exact.matches("example.com", "/health"));
        assert!(!exact.matches("example.com", "/health/x"));

        let wild = route("*.example.com/*");
        assert!(wild.matches("a.example.com", "/x"));
        assert!(wild.matches("a.b.example.com", "/x"));
        assert!(!wild.matches("example.com", "/x"));
        assert!(!wild.matches("badexample.com", "/x"));
        assert_eq!(wild.to_string(), "*.example.com/*");
    }

    #[test]
    fn the_most_specific_pattern_ranks_highest() {
        let mut patterns = [
            route("*.example.com/*"),
            route("api.example.com/*"),
            route("api.example.com/v1/*"),
            route("api.example.com/v1/health"),
            route("*.api.example.com/*"),
        ];
        patterns.sort_by_key(|p| std::cmp::Reverse(p.specificity()));
        let order: Vec<String> = patterns.iter().map(ToString::to_string).collect();
        assert_eq!(
            order,
            [
                "api.example.com/v1/health",
                "api.example.com/v1/*",
                "api.example.com/*",
                "*.api.example.com/*",
                "*.example.com/*",
            ]
        );
    }

    #[test]
    fn bad_patterns_say_why() {
        for (text, why) in [
            ("https://example.com/*", "scheme"),
            ("example.com:8080/*", "port"),
            ("exa*mple.com/*", "not a host"),
            ("example.com/a*/b", "only end"),
            ("/api/*", "host is empty"),
            ("example.com/a?b", "query"),
        ] {
            let error = text.parse::<RoutePattern>().unwrap_err();
            assert!(error.contains(why), "{text}: {error}");
        }
    }
}
