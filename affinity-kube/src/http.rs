//! HTTP endpoints: health probes and Prometheus metrics.
//!
//! Plain hyper 1 servers; each binds its address up front so that a bad
//! `--bind-address` or `--metrics-address` fails at start, not later.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, lookup_host};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::metrics::Metrics;

type Body = Full<Bytes>;

const TEXT: &str = "text/plain; charset=utf-8";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Readiness flag shared with the controller: ready once the PV cache has synced.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// A flag that starts not ready.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the controller ready or not ready.
    pub fn set_ready(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    /// Whether the controller is ready.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Starting an HTTP server failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error("binding {address}: {source}")]
    Bind {
        /// The address as given.
        address: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The address is not `host:port`, `[ipv6]:port` or `:port`.
    #[error("invalid address {address}: {reason}")]
    InvalidAddress {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The host name could not be resolved.
    #[error("resolving {address}: {source}")]
    Resolve {
        /// The address as given.
        address: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The host name resolved to no address.
    #[error("resolving {address}: no addresses found")]
    NoAddresses {
        /// The address as given.
        address: String,
    },
}

/// Binds `address` now (so a bad address fails at start) and returns the bound address and a
/// future that serves `/healthz` and `/readyz` until `shutdown` is cancelled.
pub async fn bind_health(
    address: &str,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, impl Future<Output = ()> + Send + 'static), ServeError> {
    let (listener, local) = bind(address).await?;
    info!(address = %local, "serving health probes");
    let handler = move |request: &Request<Incoming>| match request.uri().path() {
        "/healthz" => get_only(request, || text(StatusCode::OK, "ok")),
        "/readyz" => get_only(request, || {
            if readiness.is_ready() {
                text(StatusCode::OK, "ok")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready: PV cache not synced")
            }
        }),
        _ => text(StatusCode::NOT_FOUND, "not found"),
    };
    Ok((local, serve(listener, handler, shutdown)))
}

/// Binds `address` now (so a bad address fails at start) and returns the bound address and a
/// future that serves `/metrics` until `shutdown` is cancelled.
pub async fn bind_metrics(
    address: &str,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, impl Future<Output = ()> + Send + 'static), ServeError> {
    let (listener, local) = bind(address).await?;
    info!(address = %local, "serving metrics");
    let handler = move |request: &Request<Incoming>| match request.uri().path() {
        "/metrics" => get_only(request, || respond(StatusCode::OK, OPENMETRICS, metrics.encode())),
        _ => text(StatusCode::NOT_FOUND, "not found"),
    };
    Ok((local, serve(listener, handler, shutdown)))
}

/// Accepts connections until `shutdown`, each served in its own task.
async fn serve<H>(listener: TcpListener, handler: H, shutdown: CancellationToken)
where
    H: Fn(&Request<Incoming>) -> Response<Body> + Clone + Send + Sync + 'static,
{
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    warn!(%err, "accepting HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let response = handler(&request);
                async move { Ok::<_, Infallible>(response) }
            });
            // The timer enables hyper's default header read timeout against idle clients.
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(err) = result {
                debug!(%err, "HTTP connection failed");
            }
        });
    }
}

/// Binds `host:port`, `[ipv6]:port` or `:port` (all interfaces).
async fn bind(address: &str) -> Result<(TcpListener, SocketAddr), ServeError> {
    let candidates: Vec<SocketAddr> = match address.strip_prefix(':') {
        Some(port) => {
            let port = port.parse::<u16>().map_err(|err| ServeError::InvalidAddress {
                address: address.to_owned(),
                reason: format!("port: {err}"),
            })?;
            vec![SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))]
        }
        None => lookup_host(address)
            .await
            .map_err(|source| ServeError::Resolve {
                address: address.to_owned(),
                source,
            })?
            .collect(),
    };
    let mut last_error = None;
    for candidate in candidates {
        let error = match TcpListener::bind(candidate).await {
            Ok(listener) => return local_addr(listener, address),
            Err(err) => err,
        };
        // `[::]` fails on hosts without IPv6; all IPv4 interfaces is the closest match.
        if candidate.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) && error.kind() != io::ErrorKind::AddrInUse {
            let fallback = SocketAddr::from((Ipv4Addr::UNSPECIFIED, candidate.port()));
            warn!(%error, %fallback, "binding {candidate} failed, falling back to IPv4");
            match TcpListener::bind(fallback).await {
                Ok(listener) => return local_addr(listener, address),
                Err(err) => last_error = Some(err),
            }
        } else {
            last_error = Some(error);
        }
    }
    Err(match last_error {
        Some(source) => ServeError::Bind {
            address: address.to_owned(),
            source,
        },
        None => ServeError::NoAddresses {
            address: address.to_owned(),
        },
    })
}

fn local_addr(listener: TcpListener, address: &str) -> Result<(TcpListener, SocketAddr), ServeError> {
    let local = listener.local_addr().map_err(|source| ServeError::Bind {
        address: address.to_owned(),
        source,
    })?;
    Ok((listener, local))
}

/// Answers GET and HEAD (hyper drops the body for HEAD) with `respond`, other methods with 405.
fn get_only(request: &Request<Incoming>, respond: impl FnOnce() -> Response<Body>) -> Response<Body> {
    if request.method() == Method::GET || request.method() == Method::HEAD {
        respond()
    } else {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        response
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    respond(status, TEXT, body)
}

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;
    use crate::metrics::OperationKind as Operation;

    struct Reply {
        status: u16,
        head: String,
        body: String,
    }

    /// One raw HTTP/1.1 request on a fresh connection; blocking std I/O keeps
    /// the test free of extra tokio features.
    async fn request(address: SocketAddr, method: &str, path: &str) -> Reply {
        let request = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        let raw = tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(address).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            stream.write_all(request.as_bytes()).unwrap();
            let mut raw = String::new();
            stream.read_to_string(&mut raw).unwrap();
            raw
        })
        .await
        .unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        Reply {
            status,
            head: head.to_ascii_lowercase(),
            body: body.to_owned(),
        }
    }

    #[tokio::test]
    async fn health_and_readiness() {
        let readiness = Readiness::new();
        let shutdown = CancellationToken::new();
        let (address, server) = bind_health("127.0.0.1:0", readiness.clone(), shutdown.clone())
            .await
            .unwrap();
        let server = tokio::spawn(server);

        let healthz = request(address, "GET", "/healthz").await;
        assert_eq!((healthz.status, healthz.body.as_str()), (200, "ok"));
        let readyz = request(address, "GET", "/readyz").await;
        assert_eq!(
            (readyz.status, readyz.body.as_str()),
            (503, "not ready: PV cache not synced")
        );

        readiness.set_ready(true);
        let readyz = request(address, "GET", "/readyz").await;
        assert_eq!((readyz.status, readyz.body.as_str()), (200, "ok"));
        let head = request(address, "HEAD", "/readyz").await;
        assert_eq!((head.status, head.body.as_str()), (200, ""));

        assert_eq!(request(address, "GET", "/metrics").await.status, 404);
        let post = request(address, "POST", "/healthz").await;
        assert_eq!(post.status, 405);
        assert!(post.head.contains("allow: get, head"), "{}", post.head);

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap();
        // The listener is gone once the server returned.
        assert!(std::net::TcpStream::connect(address).is_err());
    }

    #[tokio::test]
    async fn metrics_endpoint() {
        let metrics = Arc::new(Metrics::new());
        metrics.record_operation(Operation::ReplacePv, Duration::from_millis(5), true);
        let shutdown = CancellationToken::new();
        let (address, server) = bind_metrics("127.0.0.1:0", metrics, shutdown.clone())
            .await
            .unwrap();
        let server = tokio::spawn(server);

        let reply = request(address, "GET", "/metrics").await;
        assert_eq!(reply.status, 200);
        assert!(
            reply.head.contains(&format!("content-type: {OPENMETRICS}")),
            "{}",
            reply.head
        );
        assert!(
            reply
                .body
                .lines()
                .any(|l| l == r#"linstor_affinity_controller_operations_total{operation="ReplacePV"} 1"#),
            "{}",
            reply.body
        );
        assert!(reply.body.ends_with("# EOF\n"));
        assert_eq!(request(address, "GET", "/healthz").await.status, 404);
        assert_eq!(request(address, "DELETE", "/metrics").await.status, 405);

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn addresses() {
        let shutdown = CancellationToken::new();
        for bad in ["not an address", ":notaport", "127.0.0.1:99999", "127.0.0.1"] {
            let err = bind_health(bad, Readiness::new(), shutdown.clone())
                .await
                .err()
                .unwrap();
            assert!(err.to_string().contains(bad), "{err}");
        }
        let (address, _server) = bind_health("localhost:0", Readiness::new(), shutdown.clone())
            .await
            .unwrap();
        assert!(address.ip().is_loopback());
        // `:port` means all interfaces, IPv6 or, without it, IPv4.
        let (address, _server) = bind_health(":0", Readiness::new(), shutdown.clone())
            .await
            .unwrap();
        assert!(address.ip().is_unspecified() && address.port() != 0, "{address}");
        let (address, _server) = bind_health("[::]:0", Readiness::new(), shutdown).await.unwrap();
        assert!(address.ip().is_unspecified(), "{address}");
    }

    #[tokio::test]
    async fn port_in_use_is_a_bind_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap().to_string();
        let err = bind_metrics(&address, Arc::new(Metrics::new()), CancellationToken::new())
            .await
            .err()
            .unwrap();
        assert!(
            matches!(&err, ServeError::Bind { address: a, .. } if *a == address),
            "{err}"
        );
    }
}
