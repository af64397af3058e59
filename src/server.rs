//! Serving HTTP/1.1 (with upgrades) on a TCP listener: a bounded, resilient accept loop and graceful
//! shutdown.
//!
//! Shutdown: when the `shutdown` future completes the loop stops accepting, tells the service (which
//! closes its sessions with a close packet), asks every connection to finish gracefully, and waits for
//! them up to [`ServeOptions::shutdown_grace`].
//!
//! Every connection holds a permit of the connection limit for its whole life, upgraded ones too:
//! each request carries the permit as a [`ConnectionGuard`] in its extensions, and a WebSocket
//! session keeps it after hyper's connection task has handed the upgraded connection over and
//! ended. So WebSockets count against [`ServeOptions::max_connections`], and shutdown waits for
//! them.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{Semaphore, watch};

use crate::engineio::ConnectionGuard;
use crate::engineio::error::Body;

/// An HTTP application the server can run: the Engine.IO endpoint, or a router in front of it.
pub trait Service: Clone + Send + Sync + 'static {
    /// Answers one request from `remote`.
    fn call(
        &self,
        req: Request<Incoming>,
        remote: SocketAddr,
    ) -> impl Future<Output = Response<Body>> + Send;

    /// The server is shutting down: close sessions (with a close packet) so clients know.
    fn shutdown(&self) {}
}

impl<H: crate::engineio::Handler> Service for crate::engineio::EngineIo<H> {
    async fn call(&self, req: Request<Incoming>, remote: SocketAddr) -> Response<Body> {
        if self.matches(req.uri().path()) {
            self.handle(req, Some(remote)).await
        } else {
            not_found()
        }
    }

    fn shutdown(&self) {
        self.close_all(crate::engineio::CloseReason::ServerShutdown);
    }
}

/// A plain 404 response.
pub fn not_found() -> Response<Body> {
    let mut res = Response::new(Body::default());
    *res.status_mut() = StatusCode::NOT_FOUND;
    res
}

/// Accept-loop options.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServeOptions {
    /// The most TCP connections served at once, WebSockets included for their whole life; further
    /// ones wait in the backlog. Default 100 000.
    pub max_connections: usize,
    /// How long shutdown waits for connections to finish. Default 5 s.
    pub shutdown_grace: Duration,
    /// How long a client may take to send a request's headers. Default 30 s.
    pub header_read_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            max_connections: 100_000,
            shutdown_grace: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(30),
        }
    }
}

/// Binds a listener with a deep accept backlog (1 024; the standard library's 128 turns bursts of
/// handshakes into one-second SYN retries).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Serves `service` on `listener` until `shutdown` completes, then shuts down gracefully.
pub async fn serve<S: Service>(
    listener: TcpListener,
    service: S,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let limit = Arc::new(Semaphore::new(options.max_connections));
    let (stop_tx, stop_rx) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = limit.clone().acquire_owned() => permit.map_err(io::Error::other)?,
        };
        let (stream, remote) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    handle_accept_error(err).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let mut stop_rx = stop_rx.clone();
        let header_timeout = options.header_read_timeout;
        tokio::spawn(async move {
            // Shared by the connection and any WebSocket it is upgraded to.
            let guard = ConnectionGuard::new(permit);
            let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(guard.clone());
                let service = service.clone();
                async move { Ok::<_, Infallible>(service.call(req, remote).await) }
            });
            let conn = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(err) = res {
                        tracing::debug!(%err, %remote, "connection error");
                    }
                }
                _ = stop_rx.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down");
    service.shutdown();
    let _ = stop_tx.send(());
    // Every connection (and every WebSocket) holds a permit; wait until all are back.
    let all = u32::try_from(options.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(options.shutdown_grace, limit.acquire_many(all)).await;
    Ok(())
}

async fn handle_accept_error(err: io::Error) {
    // Per-connection errors (the peer reset before accept) are harmless; running out of file
    // descriptors is not, and retrying at once would spin.
    if matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::warn!(%err, "accept failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
