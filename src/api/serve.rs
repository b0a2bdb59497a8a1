//! The HTTP/1.1 server loop: accepts connections and serves the router on each.
//!
//! It stands in for `axum::serve` to set what that leaves at hyper's defaults:
//! - **Read buffer of 8 KiB** (`max_buf_size`, `server.max_head_bytes`). Before each read hyper
//!   makes room for 8 KiB more, so a request that arrives in two reads leaves a 16 KiB buffer
//!   behind, kept for as long as the connection streams: with many open session streams that
//!   is most of the server's memory per connection (README, Performance). The cost is a limit on a
//!   request's head (status line and headers; larger heads get `431`), which a proxy adding
//!   large headers may need raised, and bodies read that much at a time.
//! - **A time limit on a request's head** (`server.header_timeout_ms`): a client that opens a
//!   connection and trickles its headers does not hold it forever. hyper runs the same clock
//!   while a kept-alive connection waits for its next request, so this is the idle timeout too.
//!   The body has its own limit (`server.body_timeout_ms`).
//! - `TCP_NODELAY`: an NDJSON event is a small write that must leave at once.
//!
//! [`listen`] binds with a longer accept queue than tokio's default.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpSocket};

/// hyper's smallest read buffer.
const MIN_READ_BUFFER: usize = 8 * 1024;

/// How each connection is served.
#[derive(Debug, Clone, Copy)]
pub struct Connections {
    /// The largest request head read (and the read buffer's size); at least 8 KiB.
    pub max_head_bytes: usize,
    /// How long a request's head may take to arrive; zero sets no limit.
    pub header_timeout: Duration,
}

/// Connections the kernel holds for `accept` (it caps this at `net.core.somaxconn`, 4096 by
/// default). With tokio's 1,024, open-loop bursts of new sessions overflowed the queue (the
/// kernel's `ListenOverflows` counter rose): the clients' SYNs were dropped and retried seconds
/// later. At 4,096 the same runs overflowed nothing (README, Performance).
const ACCEPT_QUEUE: u32 = 4096;

/// A listener on `addr` (`host:port`; port 0 picks a free one) with an accept queue of
/// `ACCEPT_QUEUE`. Each address the host resolves to is tried in turn, as `bind` does (so
/// `localhost` still works where IPv6 is off).
pub async fn listen(addr: &str) -> std::io::Result<TcpListener> {
    let listen_on = |addr: std::net::SocketAddr| {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(ACCEPT_QUEUE)
    };
    let mut failure = None;
    for addr in tokio::net::lookup_host(addr).await? {
        match listen_on(addr) {
            Ok(listener) => return Ok(listener),
            Err(error) => failure = Some(error),
        }
    }
    Err(failure.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the host resolves to no address",
        )
    }))
}

/// Serves `router` on `listener` until `stop` resolves, then stops accepting, lets each
/// connection finish the response it is writing, and returns once every connection has closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    connections: Connections,
    stop: impl Future<Output = ()>,
) {
    let Connections {
        max_head_bytes,
        header_timeout,
    } = connections;
    let mut http = http1::Builder::new();
    http.max_buf_size(max_head_bytes.max(MIN_READ_BUFFER))
        .timer(TokioTimer::new())
        .header_read_timeout((!header_timeout.is_zero()).then_some(header_timeout));
    let connections = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    refused(error).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(router.clone());
        let connection = connections.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.shutdown().await;
}

/// When and how a server stops serving.
pub struct Draining {
    pub lifecycle: super::Lifecycle,
    /// How long the listener keeps accepting after the shutdown signal, with readiness 503, so
    /// that the load balancer notices before connections are refused.
    pub delay: Duration,
    /// How much longer open connections get before they are dropped.
    pub timeout: Duration,
}

/// Serves `router` until `shutdown` resolves; then `draining.lifecycle` starts draining (and
/// `announce` says so in the log), the listener closes after `draining.delay`, and connections
/// still open `draining.timeout` later are dropped.
pub async fn serve_until_drained(
    listener: TcpListener,
    router: Router,
    connections: Connections,
    draining: Draining,
    shutdown: impl Future<Output = ()>,
    announce: impl FnOnce(),
) {
    let Draining {
        lifecycle,
        delay,
        timeout,
    } = draining;
    let stuck = {
        let lifecycle = lifecycle.clone();
        async move {
            lifecycle.draining().await;
            tokio::time::sleep(delay + timeout).await;
        }
    };
    let stop = async move {
        shutdown.await;
        lifecycle.start_draining();
        announce();
        tokio::time::sleep(delay).await;
    };
    tokio::select! {
        () = serve(listener, router, connections, stop) => {}
        () = stuck => {
            tracing::warn!(
                "connections still open after the shutdown timeout; no longer waiting for them"
            );
        }
    }
}

/// After a failed accept. A connection the client gave up on before it was accepted is nothing
/// to report; anything else (most often: out of file descriptors) is, and the loop waits a
/// second (as `axum::serve` does) instead of spinning on it and flooding the log.
async fn refused(error: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(%error, "cannot accept connections; trying again in a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
