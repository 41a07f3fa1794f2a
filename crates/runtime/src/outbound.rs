//! Outbound HTTP from guests (`wasi:http/outgoing-handler`): which hosts a
//! worker may reach and how many requests it may send per incoming request.
//!
//! The runtime does not know the manifest's syntax for allowed hosts; it
//! asks an [`AllowedHosts`] built by the caller. Every refusal is a value the
//! guest can handle (`HTTP-request-denied`, or an internal error saying the
//! budget is spent) and a line in the request's log that says how to fix it.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use crate::egress::{AddressPolicy, SendError};
use crate::guest_log::{GuestLog, LogStream};

/// Decides whether a worker may send a request to a URI.
#[derive(Clone)]
pub struct AllowedHosts(Arc<dyn Fn(&http::Uri) -> bool + Send + Sync>);

impl AllowedHosts {
    /// No outbound requests at all: the default.
    pub fn none() -> AllowedHosts {
        AllowedHosts(Arc::new(|_| false))
    }

    /// Requests whose URI `allows` accepts.
    pub fn new(allows: impl Fn(&http::Uri) -> bool + Send + Sync + 'static) -> AllowedHosts {
        AllowedHosts(Arc::new(allows))
    }

    fn allows(&self, uri: &http::Uri) -> bool {
        (self.0)(uri)
    }
}

impl Default for AllowedHosts {
    fn default() -> Self {
        AllowedHosts::none()
    }
}

impl fmt::Debug for AllowedHosts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AllowedHosts(..)")
    }
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

/// The `wasi:http` hooks of one instance: the allow-list check, the
/// subrequest budget, then the real request.
pub(crate) struct OutboundPolicy {
    pub(crate) log: GuestLog,
    pub(crate) allowed: AllowedHosts,
    /// The node's rule on which addresses any worker may reach.
    pub(crate) addresses: AddressPolicy,
    /// Requests allowed per incoming request.
    pub(crate) budget: u32,
    /// Requests sent during the current incoming request.
    pub(crate) sent: u32,
}

impl OutboundPolicy {
    /// Logs `line` and fails the request with `error`.
    fn refuse(
        &self,
        request: http::Request<WasiBody>,
        line: String,
        error: HttpError,
    ) -> SendFuture {
        note(&self.log, line);
        Box::new(async move {
            // Take in the body the guest may still be sending before
            // answering: dropping it at once would fail the guest's body
            // writes first, and many clients then report "connection reset"
            // instead of this refusal.
            let drain = async {
                let mut body = request.into_body();
                while let Some(Ok(_)) = body.frame().await {}
            };
            let _ = tokio::time::timeout(DRAIN_REFUSED_BODY, drain).await;
            Err(error)
        })
    }
}

/// Writes `line` to the request's guest log (stderr).
fn note(log: &GuestLog, line: String) {
    let mut stderr = log.stream(LogStream::Stderr);
    let _ = wasmtime_wasi::p2::OutputStream::write(&mut stderr, format!("{line}\n").into());
}

/// How long a refused request's body is read before the refusal is sent.
const DRAIN_REFUSED_BODY: std::time::Duration = std::time::Duration::from_secs(1);

impl WasiHttpHooks for OutboundPolicy {
    /// Small chunks keep what an outgoing body buffers in the host small
    /// (it is charged to the node's memory budget; see `memory`).
    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        crate::memory::BODY_CHUNK
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        let uri = request.uri().clone();
        if !self.allowed.allows(&uri) {
            let host = uri.authority().map_or("?", |a| a.as_str());
            return self.refuse(
                request,
                format!(
                    "verge: outbound request to {uri} denied: {host} is not allowed; \
                     add it to `allow` under [outbound] in verge.toml"
                ),
                HttpError::HttpRequestDenied,
            );
        }
        if self.sent >= self.budget {
            let message = format!(
                "subrequest limit reached: {} outbound requests per request",
                self.budget
            );
            return self.refuse(
                request,
                format!(
                    "verge: outbound request to {uri} refused: {message}; \
                     raise `subrequests` under [limits] in verge.toml"
                ),
                HttpError::InternalError(Some(message)),
            );
        }
        self.sent += 1;
        let addresses = self.addresses.clone();
        let log = self.log.clone();
        Box::new(async move {
            match crate::egress::send(request, options, &addresses).await {
                Ok(sent) => Ok(sent),
                Err(SendError::Prohibited { address, kind }) => {
                    let host = uri.host().unwrap_or("?");
                    note(
                        &log,
                        format!(
                            "verge: outbound request to {uri} denied: {host} resolves to {address}, \
                             {kind}, which this node does not let workers reach; its operator can \
                             allow the network with `outbound_allow_networks` in the node config"
                        ),
                    );
                    Err(HttpError::DestinationIpProhibited)
                }
                Err(SendError::Failed(e)) => Err(e),
            }
        })
    }
}
