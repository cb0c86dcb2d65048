//! Which rule serves a request: the host table, and the internal routes answered before it.

use foldhash::{HashMap, HashMapExt};
use std::fmt;

use http::{HeaderMap, Method, Uri};

/// A request's host, normalized once: port stripped, lower-cased, trailing dot dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host(String);

impl Host {
    /// The host of a request: the URI authority (HTTP/2 `:authority`, or an absolute-form
    /// HTTP/1.1 target, which RFC 9112 §3.2.2 says takes precedence) or else the `Host`
    /// header. As RFC 9112 §3.2 requires, a request with more than one `Host` header, or one
    /// whose value is not a host and optional port, is refused whatever the URI says.
    pub fn of_request(uri: &Uri, headers: &HeaderMap) -> Result<Host, HostError> {
        let mut host_headers = headers.get_all(http::header::HOST).iter();
        let header = host_headers.next();
        if host_headers.next().is_some() {
            return Err(HostError::Repeated);
        }
        let header = header
            .map(|value| match value.to_str() {
                Ok(text) if text.is_empty() || is_uri_host(text.as_bytes()) => Ok(text),
                _ => Err(HostError::Invalid),
            })
            .transpose()?;
        let raw = match uri.authority() {
            Some(authority) => authority.as_str(),
            None => header.ok_or(HostError::Missing)?,
        };
        Host::parse(raw).ok_or(HostError::Missing)
    }

    /// Normalizes `Example.COM:8080`, `example.com.` or `[::1]:80`; `None` when nothing is left.
    pub fn parse(raw: &str) -> Option<Host> {
        let raw = raw.trim();
        let without_userinfo = raw.rsplit_once('@').map_or(raw, |(_, host)| host);
        let name = if let Some(bracketed) = without_userinfo.strip_prefix('[') {
            // An IPv6 literal keeps its brackets, as it appears in URLs.
            let end = bracketed.find(']')?;
            &without_userinfo[..end + 2]
        } else {
            match without_userinfo.rsplit_once(':') {
                Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
                _ => without_userinfo,
            }
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.is_empty() {
            return None;
        }
        Some(Host(name.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a request has no usable host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostError {
    Missing,
    Repeated,
    Invalid,
}

/// `uri-host [ ":" port ]` (RFC 9112 §3.2): an IP literal in brackets or a registered name
/// (RFC 3986 §3.2.2), then digits after a colon, if any.
fn is_uri_host(text: &[u8]) -> bool {
    let (host_ok, port) = match text.strip_prefix(b"[") {
        Some(literal) => match memchr::memchr(b']', literal) {
            Some(end) => (
                end > 0 && literal[..end].iter().all(|&b| is_literal_byte(b)),
                &literal[end + 1..],
            ),
            None => return false,
        },
        None => {
            let (name, port) = match memchr::memrchr(b':', text) {
                Some(colon) => text.split_at(colon),
                None => (text, &b""[..]),
            };
            (name.iter().all(|&b| is_reg_name_byte(b)), port)
        }
    };
    host_ok
        && match port.split_first() {
            None => true,
            Some((b':', digits)) => digits.iter().all(u8::is_ascii_digit),
            Some(_) => false,
        }
}

/// `unreserved / pct-encoded / sub-delims` (RFC 3986 §3.2.2), the percent sign standing for
/// a pct-encoded octet.
fn is_reg_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(&b)
}

/// What an IPv6 address or an `IPvFuture` literal is made of (RFC 3986 §3.2.2).
fn is_literal_byte(b: u8) -> bool {
    is_reg_name_byte(b) || b == b':'
}

/// A rule's hostname: an exact name, or `*.suffix` for any subdomain of `suffix`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    Exact(String),
    Wildcard(String),
}

impl HostPattern {
    pub fn parse(written: &str) -> Result<HostPattern, String> {
        let invalid = |why: &str| format!("hostname {written:?} {why}");
        let lowered = written.trim().to_ascii_lowercase();
        let name = lowered.strip_suffix('.').unwrap_or(&lowered);
        let (wildcard, name) = match name.strip_prefix("*.") {
            Some(suffix) => (true, suffix),
            None => (false, name),
        };
        if name.is_empty() {
            return Err(invalid("is empty"));
        }
        if name.contains('*') {
            return Err(invalid(
                "may use * only as its whole first label, as in *.example.com",
            ));
        }
        if name.split('.').any(str::is_empty) {
            return Err(invalid("has an empty label"));
        }
        let allowed = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.';
        if !name.bytes().all(allowed) {
            return Err(invalid(
                "may hold only letters, digits, '-', '_' and '.' (no port, no scheme)",
            ));
        }
        Ok(if wildcard {
            HostPattern::Wildcard(name.to_owned())
        } else {
            HostPattern::Exact(name.to_owned())
        })
    }
}

impl HostPattern {
    /// A function name derived from the hostname: its first label (`hello.localhost` → `hello`).
    pub fn function_name(&self) -> String {
        let (HostPattern::Exact(name) | HostPattern::Wildcard(name)) = self;
        name.split('.').next().unwrap_or(name).to_owned()
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Wildcard(suffix) => write!(f, "*.{suffix}"),
        }
    }
}

/// What a rule matches: a host (or any), a path prefix (or any path), methods (or any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteKey {
    pub host: Option<HostPattern>,
    /// `/orders`: that path and everything under it. Normalized: one leading slash, none
    /// trailing.
    pub path_prefix: Option<String>,
    /// Upper-case method names; `None` for any.
    pub methods: Option<Vec<Method>>,
}

impl RouteKey {
    fn prefix(&self) -> &str {
        self.path_prefix.as_deref().unwrap_or("")
    }

    fn matches(&self, method: &Method, path: &str) -> bool {
        let prefix = self.prefix();
        let path_matches = path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        path_matches && self.methods.as_ref().is_none_or(|m| m.contains(method))
    }

    /// Whether a request could match both `self` and `other`: the same host and prefix, and
    /// methods in common.
    pub fn overlaps(&self, other: &RouteKey) -> bool {
        let methods_meet = match (&self.methods, &other.methods) {
            (Some(mine), Some(theirs)) => mine.iter().any(|m| theirs.contains(m)),
            _ => true,
        };
        self.host == other.host && self.prefix() == other.prefix() && methods_meet
    }
}

impl fmt::Display for RouteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Some(host) => write!(f, "{host}")?,
            None => f.write_str("(any host)")?,
        }
        match self.path_prefix.as_deref() {
            Some("") => f.write_str(" /")?,
            Some(prefix) => write!(f, " {prefix}")?,
            None => {}
        }
        if let Some(methods) = &self.methods {
            let names: Vec<&str> = methods.iter().map(Method::as_str).collect();
            write!(f, " [{}]", names.join(" "))?;
        }
        Ok(())
    }
}

/// Rules in the order they are tried: the host first (exact, then the longest wildcard, then
/// rules for any host), then the longest path prefix, then the methods. The host maps hash
/// with foldhash, several times cheaper than SipHash per lookup: their keys come from the
/// configuration, so a request's host can only probe them, never grow them.
#[derive(Debug)]
pub struct RouteTable<T> {
    exact: HashMap<String, Vec<usize>>,
    wildcard: HashMap<String, Vec<usize>>,
    any_host: Vec<usize>,
    keys: Vec<RouteKey>,
    routes: Vec<T>,
}

impl<T> RouteTable<T> {
    /// Builds the table; keys are assumed not to overlap (the config rejects that).
    pub fn new(entries: impl IntoIterator<Item = (RouteKey, T)>) -> Self {
        let mut table = RouteTable {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            any_host: Vec::new(),
            keys: Vec::new(),
            routes: Vec::new(),
        };
        for (key, route) in entries {
            let index = table.routes.len();
            let candidates = match &key.host {
                Some(HostPattern::Exact(name)) => table.exact.entry(name.clone()).or_default(),
                Some(HostPattern::Wildcard(suffix)) => {
                    table.wildcard.entry(suffix.clone()).or_default()
                }
                None => &mut table.any_host,
            };
            candidates.push(index);
            table.keys.push(key);
            table.routes.push(route);
        }
        let keys = &table.keys;
        let longest_prefix_first = |a: &usize, b: &usize| {
            let length = |i: &usize| keys[*i].prefix().len();
            length(b).cmp(&length(a))
        };
        for candidates in table
            .exact
            .values_mut()
            .chain(table.wildcard.values_mut())
            .chain([&mut table.any_host])
        {
            candidates.sort_by(longest_prefix_first);
        }
        table
    }

    pub fn lookup(&self, host: &Host, method: &Method, path: &str) -> Option<&T> {
        let first = |candidates: &Vec<usize>| {
            candidates
                .iter()
                .find(|&&i| self.keys[i].matches(method, path))
                .map(|&i| &self.routes[i])
        };
        let name = host.as_str();
        if let Some(route) = self.exact.get(name).and_then(first) {
            return Some(route);
        }
        // Walk the parent domains from the longest: a.b.example.com → b.example.com → …
        let mut rest = name;
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(route) = self.wildcard.get(parent).and_then(first) {
                return Some(route);
            }
            rest = parent;
        }
        first(&self.any_host)
    }

    pub fn routes(&self) -> &[T] {
        &self.routes
    }
}

/// Routes lrp answers itself, before any host lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InternalRoute {
    Ping,
    Healthz,
    Metrics,
}

/// `GET|HEAD {prefix}/ping`, `/healthz` and `/metrics`; with a prefix, bare `/ping` is a
/// function's.
pub fn internal_route(prefix: &str, method: &Method, path: &str) -> Option<InternalRoute> {
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    match path.strip_prefix(prefix)? {
        "/ping" => Some(InternalRoute::Ping),
        "/healthz" => Some(InternalRoute::Healthz),
        "/metrics" => Some(InternalRoute::Metrics),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(raw: &str) -> Option<String> {
        Host::parse(raw).map(|h| h.0)
    }

    #[test]
    fn host_is_normalized() {
        assert_eq!(host("Service-1").as_deref(), Some("service-1"));
        assert_eq!(host("service-1:8080").as_deref(), Some("service-1"));
        assert_eq!(host("Example.COM.:443").as_deref(), Some("example.com"));
        assert_eq!(host("[::1]:8080").as_deref(), Some("[::1]"));
        assert_eq!(host("[::1]").as_deref(), Some("[::1]"));
        assert_eq!(host("127.0.0.1:80").as_deref(), Some("127.0.0.1"));
        assert_eq!(host(""), None);
        assert_eq!(host(":80"), None);
        assert_eq!(host("[::1"), None);
    }

    #[test]
    fn host_comes_from_authority_before_the_host_header() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::HOST, "from-header:80".parse().unwrap());
        let origin_form: Uri = "/path".parse().unwrap();
        let absolute: Uri = "http://From-Authority:81/path".parse().unwrap();
        assert_eq!(
            Host::of_request(&origin_form, &headers).unwrap().as_str(),
            "from-header"
        );
        assert_eq!(
            Host::of_request(&absolute, &headers).unwrap().as_str(),
            "from-authority"
        );
        assert_eq!(
            Host::of_request(&origin_form, &HeaderMap::new()),
            Err(HostError::Missing)
        );
    }

    #[test]
    fn repeated_or_invalid_host_headers_are_refused() {
        let origin_form: Uri = "/path".parse().unwrap();
        let absolute: Uri = "http://a/path".parse().unwrap();
        let mut two = HeaderMap::new();
        two.append(http::header::HOST, "a".parse().unwrap());
        two.append(http::header::HOST, "other".parse().unwrap());
        assert_eq!(
            Host::of_request(&origin_form, &two),
            Err(HostError::Repeated)
        );
        assert_eq!(Host::of_request(&absolute, &two), Err(HostError::Repeated));
        for invalid in [
            "a b", "user@a", "a/b", "a:port", "a:80:81", "[::1", "[]", "[::1]x", "a?", "a#b",
            "a\\b",
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(http::header::HOST, invalid.parse().unwrap());
            assert_eq!(
                Host::of_request(&origin_form, &headers),
                Err(HostError::Invalid),
                "{invalid:?}"
            );
        }
        for valid in [
            "a",
            "a:80",
            "[::1]:8080",
            "127.0.0.1",
            "xn--bcher-kva.example",
            "[v1.fe80::a+en1]",
            "a:",
            "my_service",
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(http::header::HOST, valid.parse().unwrap());
            assert!(Host::of_request(&origin_form, &headers).is_ok(), "{valid}");
        }
    }

    #[test]
    fn patterns_validate_and_normalize() {
        assert_eq!(
            HostPattern::parse("Foo.Example.com.").unwrap(),
            HostPattern::Exact("foo.example.com".into())
        );
        assert_eq!(
            HostPattern::parse("*.Example.com").unwrap(),
            HostPattern::Wildcard("example.com".into())
        );
        for bad in ["", "*", "a.*.b", "a..b", "a:80", "http://a", "a b", "*."] {
            assert!(
                HostPattern::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    fn key(host: Option<&str>, prefix: Option<&str>, methods: &[Method]) -> RouteKey {
        RouteKey {
            host: host.map(|h| HostPattern::parse(h).unwrap()),
            path_prefix: prefix.map(str::to_owned),
            methods: (!methods.is_empty()).then(|| methods.to_vec()),
        }
    }

    #[test]
    fn exact_beats_wildcard_and_the_most_specific_wildcard_wins() {
        let table = RouteTable::new([
            (key(Some("*.example.com"), None, &[]), "any"),
            (key(Some("*.api.example.com"), None, &[]), "api"),
            (key(Some("www.api.example.com"), None, &[]), "www"),
        ]);
        let lookup = |raw: &str| {
            table
                .lookup(&Host::parse(raw).unwrap(), &Method::GET, "/")
                .copied()
        };
        assert_eq!(lookup("www.api.example.com"), Some("www"));
        assert_eq!(lookup("v1.api.example.com"), Some("api"));
        assert_eq!(lookup("deep.v1.api.example.com"), Some("api"));
        assert_eq!(lookup("api.example.com"), Some("any"));
        assert_eq!(lookup("x.example.com:8080"), Some("any"));
        assert_eq!(lookup("example.com"), None, "a wildcard needs a subdomain");
        assert_eq!(lookup("example.org"), None);
    }

    #[test]
    fn host_first_then_the_longest_prefix_then_methods() {
        let table = RouteTable::new([
            (key(None, Some("/orders"), &[]), "any-host orders"),
            (key(None, Some("/orders/admin"), &[]), "any-host admin"),
            (
                key(Some("api.test"), Some("/orders"), &[Method::POST]),
                "api orders POST",
            ),
            (key(Some("api.test"), None, &[]), "api"),
            (key(Some("*.test"), Some("/users"), &[]), "wildcard users"),
        ]);
        let lookup = |host: &str, method: Method, path: &str| {
            table
                .lookup(&Host::parse(host).unwrap(), &method, path)
                .copied()
        };
        // The exact host's rules come first; among them the longest prefix, if its method fits.
        assert_eq!(
            lookup("api.test", Method::POST, "/orders/1"),
            Some("api orders POST")
        );
        assert_eq!(lookup("api.test", Method::GET, "/orders/1"), Some("api"));
        // Nothing for the exact host matches this path: the wildcard host's rules are next.
        assert_eq!(
            lookup("web.test", Method::GET, "/users"),
            Some("wildcard users")
        );
        assert_eq!(
            lookup("web.test", Method::GET, "/usersx"),
            None,
            "prefixes end at a /"
        );
        // Then the rules for any host, longest prefix first.
        assert_eq!(
            lookup("web.test", Method::GET, "/orders/admin/x"),
            Some("any-host admin")
        );
        assert_eq!(
            lookup("other", Method::DELETE, "/orders"),
            Some("any-host orders")
        );
        assert_eq!(lookup("other", Method::GET, "/"), None);
    }

    #[test]
    fn keys_overlap_when_a_request_could_match_both() {
        let get = [Method::GET];
        assert!(key(Some("a"), Some("/x"), &[]).overlaps(&key(Some("a"), Some("/x"), &get)));
        assert!(!key(Some("a"), Some("/x"), &get).overlaps(&key(
            Some("a"),
            Some("/x"),
            &[Method::POST]
        )));
        assert!(!key(Some("a"), Some("/x"), &[]).overlaps(&key(Some("a"), Some("/y"), &[])));
        assert!(!key(Some("a"), None, &[]).overlaps(&key(None, None, &[])));
    }

    #[test]
    fn internal_routes_follow_the_prefix() {
        let get = Method::GET;
        assert_eq!(internal_route("", &get, "/ping"), Some(InternalRoute::Ping));
        assert_eq!(
            internal_route("", &Method::HEAD, "/healthz"),
            Some(InternalRoute::Healthz)
        );
        assert_eq!(internal_route("", &Method::POST, "/ping"), None);
        assert_eq!(internal_route("", &get, "/ping/"), None);
        assert_eq!(
            internal_route("/__x__", &get, "/__x__/ping"),
            Some(InternalRoute::Ping)
        );
        assert_eq!(internal_route("/__x__", &get, "/ping"), None);
        assert_eq!(internal_route("/__x__", &get, "/__x__ping"), None);
    }
}
