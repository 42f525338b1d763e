//! The control plane's HTTP sockets: plain or HTTPS, each connection counted
//! against [`HTTP_CONNECTIONS_MAX`], TLS handshakes bounded by
//! [`HTTPS_HANDSHAKE_TIMEOUT`] and run off the accept loop so one slow
//! client cannot hold the others.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::shard::tls::TlsAcceptor;

/// HTTP connections served at once, per endpoint (management, Prometheus);
/// a client past it waits in the kernel's accept queue.
pub const HTTP_CONNECTIONS_MAX: usize = 1024;

/// An HTTPS client must finish its handshake this soon after the accept.
pub const HTTPS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepted connections waiting to be served (after their handshake).
const ACCEPTED_QUEUE: usize = 64;

/// A connection's byte stream, plain or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// The peer of an HTTP request (the `guest`-is-loopback-only rule needs it).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// What axum serves from: connections accepted on one or more sockets.
pub struct Listener {
    accepted: mpsc::Receiver<(Counted, SocketAddr)>,
    local: SocketAddr,
}

impl Listener {
    /// Starts accepting on `sockets` (already bound, non-blocking) in tasks
    /// of the current runtime; with `tls`, each connection's handshake first.
    pub fn start(sockets: Vec<std::net::TcpListener>, tls: Option<Arc<TlsAcceptor>>) -> io::Result<Listener> {
        let (send, accepted) = mpsc::channel(ACCEPTED_QUEUE);
        let slots = Arc::new(Semaphore::new(HTTP_CONNECTIONS_MAX));
        let mut local = None;
        for socket in sockets {
            local.get_or_insert(socket.local_addr()?);
            let socket = TcpListener::from_std(socket)?;
            tokio::spawn(accept_loop(socket, tls.clone(), Arc::clone(&slots), send.clone()));
        }
        let local = local.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no socket"))?;
        Ok(Listener { accepted, local })
    }
}

async fn accept_loop(
    socket: TcpListener,
    tls: Option<Arc<TlsAcceptor>>,
    slots: Arc<Semaphore>,
    send: mpsc::Sender<(Counted, SocketAddr)>,
) {
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let (stream, peer) = match socket.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and friends: back off rather than spin.
                tracing::warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let send = send.clone();
        match &tls {
            None => {
                let counted = Counted { inner: Box::new(stream), _permit: permit };
                if send.send((counted, peer)).await.is_err() {
                    return;
                }
            }
            Some(tls) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.current_config());
                tokio::spawn(async move {
                    match tokio::time::timeout(HTTPS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let counted = Counted { inner: Box::new(stream), _permit: permit };
                            let _ = send.send((counted, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "HTTPS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "HTTPS handshake timed out"),
                    }
                });
            }
        }
    }
}

impl axum::serve::Listener for Listener {
    type Io = Counted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Counted, SocketAddr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // Every accept loop ended (the runtime is going away): wait for
            // the shutdown that ends the server.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Listener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Listener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

/// A connection holding one of the [`HTTP_CONNECTIONS_MAX`] places until
/// it is dropped.
pub struct Counted {
    inner: Box<dyn Stream>,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
