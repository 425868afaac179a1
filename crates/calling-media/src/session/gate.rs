//! Connectivity checks that arrive before the remote description.
//!
//! When we offer, the answerer starts its ICE checks as soon as it has sent
//! its answer, and the checks travel straight over UDP while the answer
//! goes round through the signaling server: the first ones often arrive
//! before we have applied the answer. webrtc-rs's ICE agent drops a binding
//! request while it does not know the remote's credentials ("password is
//! empty"), although it could answer it (the request is checked against our
//! own password), and the answerer then waits for its retransmit timer: 500
//! ms with aiortc, ~50-100 ms with Chromium. So each peer connection gets
//! its own runtime whose UDP sockets hold such requests back until the
//! remote description is applied ([`Gate::open`]), then hand them to the
//! agent as if they had just arrived.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, RecvMeta, Runtime,
    TokioRuntime, Transmit,
};

/// Requests held per socket at most; more are dropped as before.
const MAX_HELD: usize = 32;
/// A held request older than this is stale: the peer has retransmitted it.
const MAX_AGE: Duration = Duration::from_secs(5);
/// The STUN magic cookie (RFC 5389).
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];

/// Whether `datagram` is a STUN Binding request.
fn is_binding_request(datagram: &[u8]) -> bool {
    datagram.len() >= 20 && datagram[..2] == [0x00, 0x01] && datagram[4..8] == MAGIC_COOKIE
}

/// Closed until the remote description of one peer connection is applied.
#[derive(Default)]
pub(super) struct Gate {
    open: AtomicBool,
    sockets: Mutex<Vec<Weak<GatedSocket>>>,
}

impl Gate {
    /// The remote description is applied: replay what was held.
    pub(super) fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
        let sockets = self.sockets.lock().unwrap_or_else(PoisonError::into_inner);
        for socket in sockets.iter().filter_map(Weak::upgrade) {
            let waker = socket.held().waker.take();
            if let Some(w) = waker {
                w.wake();
            }
        }
    }

    fn is_open(&self) -> bool {
        self.open.load(Ordering::SeqCst)
    }
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("open", &self.is_open())
            .finish()
    }
}

#[derive(Default)]
struct Held {
    queue: VecDeque<(Instant, Vec<u8>, RecvMeta)>,
    /// The waker of the last receive that found nothing: woken on open.
    waker: Option<Waker>,
}

/// A UDP socket that holds binding requests while its gate is closed.
struct GatedSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    gate: Arc<Gate>,
    held: Mutex<Held>,
}

impl fmt::Debug for GatedSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatedSocket")
            .field("inner", &self.inner)
            .field("gate", &self.gate)
            .finish()
    }
}

impl GatedSocket {
    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A held request for `bufs[0]`, once the gate is open.
    fn replay(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta]) -> Option<usize> {
        if !self.gate.is_open() {
            return None;
        }
        let mut held = self.held();
        while let Some((at, data, mut m)) = held.queue.pop_front() {
            if at.elapsed() > MAX_AGE {
                continue;
            }
            let (buf, slot) = (bufs.first_mut()?, meta.first_mut()?);
            let n = data.len().min(buf.len());
            buf[..n].copy_from_slice(&data[..n]);
            m.len = n;
            m.stride = n;
            *slot = m;
            return Some(1);
        }
        None
    }
}

impl AsyncUdpSocket for GatedSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn poll_send(&self, cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        self.inner.poll_send(cx, transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            if let Some(n) = self.replay(bufs, meta) {
                return Poll::Ready(Ok(n));
            }
            if self.gate.is_open() {
                return self.inner.poll_recv(cx, bufs, meta);
            }
            // One datagram at a time while closed, so that holding one
            // never means moving the others of a batch.
            let (Some(buf), Some(m)) = (bufs.first_mut(), meta.first_mut()) else {
                return self.inner.poll_recv(cx, bufs, meta);
            };
            match self
                .inner
                .poll_recv(cx, std::slice::from_mut(buf), std::slice::from_mut(m))
            {
                Poll::Ready(Ok(n)) if n >= 1 => {
                    let len = m.len.min(buf.len());
                    let single = m.stride == m.len;
                    if single && is_binding_request(&buf[..len]) && !self.gate.is_open() {
                        let mut held = self.held();
                        if held.queue.len() < MAX_HELD {
                            held.queue
                                .push_back((Instant::now(), buf[..len].to_vec(), *m));
                            tracing::trace!(from = %m.addr, "connectivity check held until the remote description");
                        }
                        continue;
                    }
                    return Poll::Ready(Ok(n));
                }
                Poll::Pending => {
                    let mut held = self.held();
                    held.waker = Some(cx.waker().clone());
                    // The gate may have opened before the waker was in place.
                    if self.gate.is_open() && !held.queue.is_empty() {
                        drop(held);
                        continue;
                    }
                    return Poll::Pending;
                }
                other => return other,
            }
        }
    }

    fn max_gso_segments(&self) -> usize {
        self.inner.max_gso_segments()
    }

    fn max_gro_segments(&self) -> usize {
        self.inner.max_gro_segments()
    }
}

/// webrtc-rs's tokio runtime, with every UDP socket behind one [`Gate`].
pub(super) struct GatedRuntime {
    inner: TokioRuntime,
    gate: Arc<Gate>,
}

impl GatedRuntime {
    /// A runtime for one peer connection, closed until `gate` opens.
    pub(super) fn new(gate: Arc<Gate>) -> Self {
        GatedRuntime {
            inner: TokioRuntime,
            gate,
        }
    }
}

impl fmt::Debug for GatedRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatedRuntime")
            .field("gate", &self.gate)
            .finish()
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl Runtime for GatedRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        self.inner.spawn(future)
    }

    fn spawn_reactor(
        &self,
        reactor_pool_size: usize,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn JoinHandle> {
        self.inner.spawn_reactor(reactor_pool_size, future)
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        let inner = self.inner.wrap_udp_socket(socket)?;
        let gated = Arc::new(GatedSocket {
            inner,
            gate: self.gate.clone(),
            held: Mutex::new(Held::default()),
        });
        self.gate
            .sockets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::downgrade(&gated));
        Ok(gated)
    }

    fn wrap_tcp_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> io::Result<Arc<dyn AsyncTcpListener>> {
        self.inner.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote_addr: SocketAddr,
    ) -> BoxFuture<'a, io::Result<Arc<dyn AsyncTcpStream>>> {
        self.inner.connect_tcp(remote_addr)
    }

    fn resolve_host<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<SocketAddr>>> {
        self.inner.resolve_host(host)
    }

    fn now(&self) -> Instant {
        self.inner.now()
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.inner.sleep(duration)
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        self.inner.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        self.inner.block_on(future)
    }

    fn yield_now(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.inner.yield_now()
    }

    fn name(&self) -> &'static str {
        "tokio (gated)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding_request() -> Vec<u8> {
        let mut request = vec![0u8; 20];
        request[..2].copy_from_slice(&[0x00, 0x01]);
        request[4..8].copy_from_slice(&MAGIC_COOKIE);
        request
    }

    /// The next datagram `socket` hands the ICE agent, if one comes within
    /// `wait`.
    async fn next(socket: &dyn AsyncUdpSocket, wait: Duration) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 1500];
        let mut meta = [RecvMeta::default(); 1];
        let recv = std::future::poll_fn(|cx| {
            let mut bufs = [IoSliceMut::new(&mut buf)];
            socket.poll_recv(cx, &mut bufs, &mut meta)
        });
        match tokio::time::timeout(wait, recv).await {
            Ok(Ok(_)) => Some(buf[..meta[0].len].to_vec()),
            Ok(Err(e)) => panic!("receive failed: {e}"),
            Err(_) => None,
        }
    }

    #[tokio::test]
    async fn early_checks_wait_for_the_remote_description_and_the_rest_passes() {
        let gate = Arc::new(Gate::default());
        let runtime = GatedRuntime::new(gate.clone());
        let std_socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        std_socket.set_nonblocking(true).unwrap();
        let socket = runtime.wrap_udp_socket(std_socket).unwrap();
        let to = socket.local_addr().unwrap();
        let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();

        let mut request = binding_request();
        request[8] = 7; // a transaction id to recognise it by
        peer.send_to(&request, to).await.unwrap();
        peer.send_to(b"\x80not stun", to).await.unwrap();
        // Closed: the check is held, what is not a check passes.
        let passed = next(socket.as_ref(), Duration::from_secs(5)).await;
        assert_eq!(passed.as_deref(), Some(&b"\x80not stun"[..]));
        assert_eq!(
            next(socket.as_ref(), Duration::from_millis(100)).await,
            None
        );

        // Open while a receive waits: the held check is handed over first.
        let waiting = {
            let socket = socket.clone();
            tokio::spawn(async move { next(socket.as_ref(), Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        gate.open();
        assert_eq!(waiting.await.unwrap(), Some(request.clone()));

        // Open: checks pass straight through.
        request[8] = 8;
        peer.send_to(&request, to).await.unwrap();
        assert_eq!(
            next(socket.as_ref(), Duration::from_secs(5)).await,
            Some(request)
        );
    }

    #[test]
    fn only_binding_requests_are_held() {
        let request = binding_request();
        assert!(is_binding_request(&request));
        // A success response, DTLS, RTP and a short datagram pass.
        let mut response = request.clone();
        response[..2].copy_from_slice(&[0x01, 0x01]);
        assert!(!is_binding_request(&response));
        assert!(!is_binding_request(&[22u8; 40]));
        assert!(!is_binding_request(&[0x80u8; 40]));
        assert!(!is_binding_request(&request[..19]));
        let mut no_cookie = request.clone();
        no_cookie[4] = 0;
        assert!(!is_binding_request(&no_cookie));
    }
}
