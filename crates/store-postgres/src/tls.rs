//! TLS to PostgreSQL with rustls, as libpq's `sslmode` and `sslrootcert`
//! ask.
//!
//! | `sslmode` | TLS | the server's certificate |
//! | --- | --- | --- |
//! | `disable` | never | - |
//! | `allow`, `prefer` (the default) | when the server offers it | not checked |
//! | `require` | always | not checked, unless `sslrootcert` is given (then as `verify-ca`) |
//! | `verify-ca` | always | signed by a trusted root |
//! | `verify-full` | always | signed by a trusted root and issued for the host |
//!
//! Trusted roots are the certificates in the PEM file `sslrootcert` names,
//! or the Mozilla roots (webpki-roots) without one or with
//! `sslrootcert=system`. tokio-postgres does not know the verifying modes
//! or `sslrootcert`: they are taken out of the URL before it is parsed.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

use crate::connect::ConnectError;

/// How much of the server's certificate is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verify {
    Nothing,
    Chain,
    ChainAndName,
}

/// What the URL asked for, and the URL without what tokio-postgres would
/// refuse.
#[derive(Debug)]
pub(crate) struct TlsRequest {
    pub(crate) url: String,
    pub(crate) mode: SslMode,
    pub(crate) verify: Verify,
    pub(crate) roots: Option<PathBuf>,
}

const MODES: &str = "disable, allow, prefer, require, verify-ca or verify-full";

/// Takes `sslmode` and `sslrootcert` out of `url` (URL or key=value form).
pub(crate) fn split(url: &str) -> Result<TlsRequest, ConnectError> {
    let mut mode = None;
    let mut roots = None;
    let url = if let Some((base, query)) = url
        .split_once('?')
        .filter(|_| url.starts_with("postgres://") || url.starts_with("postgresql://"))
    {
        let mut kept = form_urlencoded::Serializer::new(String::new());
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "sslmode" => mode = Some(value.into_owned()),
                "sslrootcert" => roots = Some(value.into_owned()),
                _ => {
                    kept.append_pair(&key, &value);
                }
            }
        }
        let kept = kept.finish();
        if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{kept}")
        }
    } else if url.contains("://") {
        url.to_string()
    } else {
        let mut kept = Vec::new();
        for word in url.split_whitespace() {
            match word.split_once('=') {
                Some(("sslmode", value)) => mode = Some(value.trim_matches('\'').to_string()),
                Some(("sslrootcert", value)) => roots = Some(value.trim_matches('\'').to_string()),
                _ => kept.push(word),
            }
        }
        kept.join(" ")
    };
    let roots = roots.filter(|r| r != "system").map(PathBuf::from);
    let (mode, verify) = match mode.as_deref().unwrap_or("prefer") {
        "disable" => (SslMode::Disable, Verify::Nothing),
        "allow" | "prefer" => (SslMode::Prefer, Verify::Nothing),
        // As libpq: a root certificate given makes `require` check it.
        "require" if roots.is_some() => (SslMode::Require, Verify::Chain),
        "require" => (SslMode::Require, Verify::Nothing),
        "verify-ca" => (SslMode::Require, Verify::Chain),
        "verify-full" => (SslMode::Require, Verify::ChainAndName),
        other => {
            return Err(ConnectError::refused(
                format!("the store URL's sslmode is {other:?}"),
                format!("use one of {MODES} (docs/cluster.md explains them)"),
            ));
        }
    };
    Ok(TlsRequest {
        url,
        mode,
        verify,
        roots,
    })
}

/// A connector for tokio-postgres and deadpool, built from a request.
#[derive(Clone)]
pub(crate) struct Rustls {
    config: Arc<rustls::ClientConfig>,
}

impl Rustls {
    pub(crate) fn new(request: &TlsRequest) -> Result<Rustls, ConnectError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let webpki = match request.verify {
            Verify::Nothing => None,
            Verify::Chain | Verify::ChainAndName => {
                let roots = Arc::new(roots(request.roots.as_ref())?);
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .map_err(|e| {
                        ConnectError::refused(
                            format!("cannot check the PostgreSQL server's certificate: {e}"),
                            "give sslrootcert=PATH to a PEM file of the CA that signed it",
                        )
                    })?;
                Some((webpki, request.verify == Verify::ChainAndName))
            }
        };
        let verifier = Arc::new(Verifier {
            provider: provider.clone(),
            webpki,
        });
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ConnectError::refused(format!("TLS: {e}"), "report this as a bug"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Rustls {
            config: Arc::new(config),
        })
    }
}

/// The trusted roots: the PEM file's certificates, or the Mozilla roots.
fn roots(path: Option<&PathBuf>) -> Result<rustls::RootCertStore, ConnectError> {
    let mut store = rustls::RootCertStore::empty();
    let Some(path) = path else {
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        return Ok(store);
    };
    let refused = |why: String| {
        ConnectError::refused(
            format!("sslrootcert {}: {why}", path.display()),
            "point sslrootcert at a PEM file holding the CA certificate that signed the server's",
        )
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| refused(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| refused(e.to_string()))?;
    if certificates.is_empty() {
        return Err(refused("no certificate in it".into()));
    }
    for certificate in certificates {
        store.add(certificate).map_err(|e| refused(e.to_string()))?;
    }
    Ok(store)
}

/// Checks the server's certificate as far as the mode asks: not at all
/// (`prefer`, `require`: encrypted, the certificate taken as it is, as libpq
/// does), its chain (`verify-ca`: signed by a trusted root, any name), or
/// its chain and name (`verify-full`). The handshake's signatures are
/// checked whatever the mode.
#[derive(Debug)]
struct Verifier {
    provider: Arc<CryptoProvider>,
    /// The chain's verifier, and whether the name must match.
    webpki: Option<(Arc<WebPkiServerVerifier>, bool)>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some((webpki, check_name)) = &self.webpki else {
            return Ok(ServerCertVerified::assertion());
        };
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl<S> MakeTlsConnect<S> for Rustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type TlsConnect = Connect;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, host: &str) -> Result<Connect, Self::Error> {
        Ok(Connect {
            config: self.config.clone(),
            name: ServerName::try_from(host.to_string())?,
        })
    }
}

/// One connection's handshake.
pub(crate) struct Connect {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

type Handshake<S> = Pin<Box<dyn Future<Output = io::Result<Stream<S>>> + Send>>;

impl<S> TlsConnect<S> for Connect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type Error = io::Error;
    type Future = Handshake<S>;

    fn connect(self, stream: S) -> Handshake<S> {
        let connector = tokio_rustls::TlsConnector::from(self.config);
        Box::pin(async move {
            let stream = connector.connect(self.name, stream).await?;
            Ok(Stream(Box::new(stream)))
        })
    }
}

/// A TLS connection to the server.
pub(crate) struct Stream<S>(Box<tokio_rustls::client::TlsStream<S>>);

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for Stream<S> {
    /// None: SCRAM then runs without channel binding, as with libpq's
    /// default `channel_binding=prefer` against a server without it.
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ssl_keys_leave_the_url_and_set_the_mode() {
        let r = split("postgres://u@db/verge?sslmode=verify-full&application_name=x").unwrap();
        assert_eq!(r.url, "postgres://u@db/verge?application_name=x");
        assert_eq!((r.mode, r.verify), (SslMode::Require, Verify::ChainAndName));
        let r = split("postgres://u@db/verge").unwrap();
        assert_eq!((r.mode, r.verify), (SslMode::Prefer, Verify::Nothing));
        let r = split("postgres://u@db/v?sslmode=require&sslrootcert=%2Fca.pem").unwrap();
        assert_eq!(r.url, "postgres://u@db/v");
        assert_eq!(r.verify, Verify::Chain);
        assert_eq!(r.roots, Some(PathBuf::from("/ca.pem")));
        let r = split("host=db user=u sslmode=disable").unwrap();
        assert_eq!(r.url, "host=db user=u");
        assert_eq!(r.mode, SslMode::Disable);
        let e = split("postgres://db/v?sslmode=strict").unwrap_err();
        assert!(e.to_string().contains("\"strict\""), "{e}");
    }
}
