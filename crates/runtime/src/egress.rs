//! Where guests' outbound requests may connect, and the connection itself.
//!
//! A worker's allow-list says which *names* it may call; the node's
//! [`AddressPolicy`] says which *addresses* any worker may reach: by default
//! no loopback, private, link-local (cloud metadata) or other special-purpose
//! address. The check is made on the addresses the name resolves to, and the
//! connection goes to an address that passed it: a name that resolves to a
//! public address once and to 127.0.0.1 the next time (DNS rebinding) gets
//! nothing, since Verge resolves it once and connects to what it checked.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Scheme;
use http_body_util::BodyExt;
pub use ipnet::IpNet;
use tokio::net::TcpStream;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody};

/// Which addresses workers may connect to, whatever names resolve to.
#[derive(Clone, Debug, Default)]
pub struct AddressPolicy {
    /// Special-purpose networks the operator lets workers reach.
    allowed: Arc<[IpNet]>,
    /// Loopback is reachable (`verge dev`, where local services are the
    /// point).
    loopback: bool,
}

impl AddressPolicy {
    /// Public addresses, plus the networks in `allowed`, plus loopback when
    /// `loopback` is set.
    pub fn new(allowed: Vec<IpNet>, loopback: bool) -> AddressPolicy {
        AddressPolicy {
            allowed: allowed.into(),
            loopback,
        }
    }

    /// Why a worker may not connect to `ip`, or `None` if it may.
    pub fn refuses(&self, ip: IpAddr) -> Option<SpecialPurpose> {
        let ip = ip.to_canonical();
        let kind = SpecialPurpose::of(ip)?;
        let allowed = (self.loopback && kind == SpecialPurpose::Loopback)
            || self.allowed.iter().any(|net| net.contains(&ip));
        (!allowed).then_some(kind)
    }
}

/// A kind of address that is not global unicast (RFC 6890 and its
/// successors), which workers do not reach unless the operator says so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecialPurpose {
    Loopback,
    /// RFC 1918 and IPv6 unique local addresses.
    Private,
    /// 169.254.0.0/16 (where clouds serve instance metadata) and fe80::/10.
    LinkLocal,
    /// 100.64.0.0/10, carrier-grade NAT.
    SharedAddressSpace,
    Unspecified,
    Multicast,
    Broadcast,
    /// Documentation, benchmarking, protocol assignments, transition
    /// mechanisms and reserved space.
    Reserved,
}

impl SpecialPurpose {
    /// The kind of `ip` (already canonical), or `None` for a public
    /// address.
    fn of(ip: IpAddr) -> Option<SpecialPurpose> {
        match ip {
            IpAddr::V4(ip) => Self::of_v4(ip),
            IpAddr::V6(ip) => Self::of_v6(ip),
        }
    }

    fn of_v4(ip: Ipv4Addr) -> Option<SpecialPurpose> {
        use SpecialPurpose::*;
        let [a, b, c, _] = ip.octets();
        Some(match (a, b, c) {
            _ if ip.is_broadcast() => Broadcast,
            (0, ..) => Unspecified,
            (127, ..) => Loopback,
            (10, ..) | (172, 16..=31, _) | (192, 168, _) => Private,
            (169, 254, _) => LinkLocal,
            (100, 64..=127, _) => SharedAddressSpace,
            (224..=239, ..) => Multicast,
            // Protocol assignments, documentation, the 6to4 relay,
            // benchmarking, and the old class E.
            (192, 0, 0) | (192, 0, 2) | (192, 88, 99) | (198, 51, 100) | (203, 0, 113) => Reserved,
            (198, 18..=19, _) | (240..=255, ..) => Reserved,
            _ => return None,
        })
    }

    fn of_v6(ip: Ipv6Addr) -> Option<SpecialPurpose> {
        use SpecialPurpose::*;
        let s = ip.segments();
        if ip.is_unspecified() {
            return Some(Unspecified);
        }
        if ip.is_loopback() {
            return Some(Loopback);
        }
        // NAT64 (64:ff9b::/96): the IPv4 address it stands for decides.
        if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
            let [a, b] = s[6].to_be_bytes();
            let [c, d] = s[7].to_be_bytes();
            return Self::of_v4(Ipv4Addr::new(a, b, c, d));
        }
        Some(match s[0] {
            0xfc00..=0xfdff => Private,
            0xfe80..=0xfebf => LinkLocal,
            0xff00..=0xffff => Multicast,
            // Inside 2000::/3, the global unicast space: protocol
            // assignments (Teredo among them), documentation, 6to4.
            0x2001 if s[1] < 0x0200 || s[1] == 0x0db8 => Reserved,
            0x2002 => Reserved,
            0x3fff if s[1] < 0x1000 => Reserved,
            0x2000..=0x3fff => return None,
            // Everything else is unallocated or reserved (IPv4-compatible
            // addresses, the discard prefix, site-local ...).
            _ => Reserved,
        })
    }
}

impl fmt::Display for SpecialPurpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SpecialPurpose::Loopback => "a loopback address",
            SpecialPurpose::Private => "a private address",
            SpecialPurpose::LinkLocal => {
                "a link-local address (where clouds serve instance metadata)"
            }
            SpecialPurpose::SharedAddressSpace => "a carrier-grade NAT address",
            SpecialPurpose::Unspecified => "the unspecified address",
            SpecialPurpose::Multicast => "a multicast address",
            SpecialPurpose::Broadcast => "the broadcast address",
            SpecialPurpose::Reserved => "a reserved or special-purpose address",
        })
    }
}

/// Why a request was not sent: the address its host resolved to, which the
/// policy refuses, or a failure on the way.
pub(crate) enum SendError {
    Prohibited {
        address: IpAddr,
        kind: SpecialPurpose,
    },
    Failed(HttpError),
}

impl From<HttpError> for SendError {
    fn from(e: HttpError) -> SendError {
        SendError::Failed(e)
    }
}

pub(crate) type Sent = (
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
);

/// Sends `request` (absolute URI, `Host` set) over HTTP/1.1, to an address
/// of its host that `policy` allows.
pub(crate) async fn send(
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
    policy: &AddressPolicy,
) -> Result<Sent, SendError> {
    let uri = request.uri();
    let tls = match uri.scheme() {
        Some(s) if *s == Scheme::HTTPS => true,
        Some(s) if *s == Scheme::HTTP => false,
        _ => return Err(HttpError::HttpProtocolError.into()),
    };
    let authority = uri.authority().ok_or(HttpError::HttpRequestUriInvalid)?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let host = host.to_string();
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let timeouts = options.unwrap_or_default();
    let connect_timeout = timeouts.connect_timeout.unwrap_or(Duration::MAX);

    let connecting = async {
        let addresses = resolve(&host, port).await?;
        let stream = connect(&addresses, policy).await?;
        Ok::<_, SendError>(stream)
    };
    let stream = within(connect_timeout, HttpError::ConnectionTimeout, connecting).await?;
    let io: Box<dyn Io> = if tls {
        let name = rustls::pki_types::ServerName::try_from(host.as_str())
            .map_err(|_| HttpError::TlsProtocolError)?
            .to_owned();
        let tls = tokio_rustls::TlsConnector::from(tls_config());
        let stream = within(connect_timeout, HttpError::ConnectionTimeout, async {
            tls.connect(name, stream)
                .await
                .map_err(|e| SendError::Failed(tls_error(e)))
        })
        .await?;
        Box::new(stream)
    } else {
        Box::new(stream)
    };
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(HttpError::from)?;

    // Origin form on the wire: the scheme and host are for proxies.
    let origin = uri_origin_form(request.uri());
    *request.uri_mut() = origin;
    let first_byte = timeouts.first_byte_timeout.unwrap_or(Duration::MAX);
    let between_bytes = timeouts.between_bytes_timeout;

    // Drive the connection while waiting for the response head; it keeps
    // running (the future handed back) while the guest reads the body.
    let mut connection = Box::pin(connection);
    let response = sender.send_request(request);
    let response = within(first_byte, HttpError::ConnectionReadTimeout, async {
        tokio::pin!(response);
        tokio::select! {
            response = &mut response => response.map_err(|e| SendError::Failed(e.into())),
            ended = &mut connection => {
                // The connection ended before the head arrived: the send
                // fails with the reason, or reports what is left.
                ended.map_err(|e| SendError::Failed(e.into()))?;
                response.await.map_err(|e| SendError::Failed(e.into()))
            }
        }
    })
    .await?;
    let response = response.map(|body| match between_bytes {
        Some(limit) => Paced::new(body, limit).boxed_unsync(),
        None => body.map_err(HttpError::from).boxed_unsync(),
    });
    let io = async move { connection.await.map_err(HttpError::from) };
    Ok((response, Box::new(io)))
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

/// `future`, or `error` once `limit` has passed.
async fn within<T>(
    limit: Duration,
    error: HttpError,
    future: impl Future<Output = Result<T, SendError>>,
) -> Result<T, SendError> {
    if limit == Duration::MAX {
        return future.await;
    }
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or(Err(SendError::Failed(error)))
}

/// The addresses of `host`: itself when it is an IP literal.
async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, SendError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let found = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| HttpError::DnsError {
            rcode: Some(e.to_string()),
            info_code: None,
        })?;
    let found: Vec<SocketAddr> = found.collect();
    if found.is_empty() {
        return Err(HttpError::DestinationNotFound.into());
    }
    Ok(found)
}

/// A connection to the first of `addresses` that `policy` allows and that
/// answers; if the policy allows none, why the first was refused.
async fn connect(addresses: &[SocketAddr], policy: &AddressPolicy) -> Result<TcpStream, SendError> {
    let mut last = None;
    for address in addresses {
        if let Some(kind) = policy.refuses(address.ip()) {
            last.get_or_insert(SendError::Prohibited {
                address: address.ip(),
                kind,
            });
            continue;
        }
        match TcpStream::connect(address).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => {
                let error = match e.kind() {
                    std::io::ErrorKind::ConnectionRefused => HttpError::ConnectionRefused,
                    _ => HttpError::Connect(e),
                };
                last = Some(SendError::Failed(error));
            }
        }
    }
    Err(last.unwrap_or(SendError::Failed(HttpError::DestinationNotFound)))
}

fn uri_origin_form(uri: &http::Uri) -> http::Uri {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    http::Uri::try_from(path).unwrap_or_else(|_| http::Uri::from_static("/"))
}

/// The client side of TLS: the Mozilla roots webpki-roots carries, ring's
/// primitives, TLS 1.2 and 1.3.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| b.with_root_certificates(roots).with_no_client_auth());
            // ring supports the default versions; should it ever not, every
            // TLS request fails instead of the node.
            Arc::new(config.unwrap_or_else(|_| {
                rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .expect("ring supports TLS 1.3")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
            }))
        })
        .clone()
}

fn tls_error(e: std::io::Error) -> HttpError {
    let certificate = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_)));
    if certificate {
        HttpError::TlsCertificateError
    } else {
        HttpError::Tls(e)
    }
}

/// A response body that fails when the upstream sends nothing for `limit`
/// (the guest's `between-bytes-timeout`).
struct Paced {
    body: hyper::body::Incoming,
    limit: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Paced {
    fn new(body: hyper::body::Incoming, limit: Duration) -> Paced {
        Paced {
            body,
            limit,
            timer: Box::pin(tokio::time::sleep(limit)),
        }
    }
}

impl http_body::Body for Paced {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, HttpError>>> {
        match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                let deadline = tokio::time::Instant::now() + self.limit;
                self.timer.as_mut().reset(deadline);
                Poll::Ready(frame.map(|f| f.map_err(HttpError::from)))
            }
            Poll::Pending => {
                ready!(self.timer.as_mut().poll(cx));
                Poll::Ready(Some(Err(HttpError::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn special_purpose_addresses_are_refused_and_public_ones_pass() {
        let policy = AddressPolicy::default();
        for (address, kind) in [
            ("127.0.0.1", SpecialPurpose::Loopback),
            ("127.8.9.10", SpecialPurpose::Loopback),
            ("::1", SpecialPurpose::Loopback),
            ("::ffff:127.0.0.1", SpecialPurpose::Loopback),
            ("64:ff9b::7f00:1", SpecialPurpose::Loopback),
            ("10.1.2.3", SpecialPurpose::Private),
            ("172.31.255.255", SpecialPurpose::Private),
            ("192.168.0.1", SpecialPurpose::Private),
            ("fd00::1", SpecialPurpose::Private),
            ("169.254.169.254", SpecialPurpose::LinkLocal),
            ("fe80::1", SpecialPurpose::LinkLocal),
            ("100.100.100.200", SpecialPurpose::SharedAddressSpace),
            ("0.0.0.0", SpecialPurpose::Unspecified),
            ("::", SpecialPurpose::Unspecified),
            ("224.0.0.1", SpecialPurpose::Multicast),
            ("ff02::1", SpecialPurpose::Multicast),
            ("255.255.255.255", SpecialPurpose::Broadcast),
            ("198.18.0.1", SpecialPurpose::Reserved),
            ("240.0.0.1", SpecialPurpose::Reserved),
            ("2001:db8::1", SpecialPurpose::Reserved),
            ("2002:7f00:1::", SpecialPurpose::Reserved),
            ("2001::1", SpecialPurpose::Reserved),
            ("::127.0.0.1", SpecialPurpose::Reserved),
        ] {
            assert_eq!(policy.refuses(ip(address)), Some(kind), "{address}");
        }
        for address in [
            "93.184.215.14",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "64:ff9b::5db8:d70e",
        ] {
            assert_eq!(policy.refuses(ip(address)), None, "{address}");
        }
    }

    #[test]
    fn operators_open_networks_and_dev_opens_loopback() {
        let policy = AddressPolicy::new(vec!["10.0.0.0/8".parse().unwrap()], false);
        assert_eq!(policy.refuses(ip("10.9.9.9")), None);
        assert_eq!(policy.refuses(ip("::ffff:10.9.9.9")), None);
        assert_eq!(
            policy.refuses(ip("192.168.1.1")),
            Some(SpecialPurpose::Private)
        );
        assert_eq!(
            policy.refuses(ip("127.0.0.1")),
            Some(SpecialPurpose::Loopback)
        );
        let dev = AddressPolicy::new(Vec::new(), true);
        assert_eq!(dev.refuses(ip("127.0.0.1")), None);
        assert_eq!(dev.refuses(ip("::1")), None);
        assert_eq!(
            dev.refuses(ip("169.254.169.254")),
            Some(SpecialPurpose::LinkLocal)
        );
    }

    #[tokio::test]
    async fn the_connection_goes_only_to_an_address_that_passed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let refused = connect(&[address], &AddressPolicy::default()).await;
        assert!(matches!(
            refused,
            Err(SendError::Prohibited {
                kind: SpecialPurpose::Loopback,
                ..
            })
        ));
        let allowed = connect(&[address], &AddressPolicy::new(Vec::new(), true)).await;
        assert!(allowed.is_ok());
    }
}
