//! Packets that arrive before the connection can take them.
//!
//! When we offer, the answerer starts its ICE checks as soon as it has sent
//! its answer, and the checks travel straight over UDP while the answer
//! goes round through the signaling server: the first ones often arrive
//! before we have applied the answer. webrtc-rs's ICE agent drops a binding
//! request while it does not know the remote's credentials ("password is
//! empty"), although it could answer it (the request is checked against our
//! own password), and the answerer then waits for its retransmit timer: 500
//! ms with aiortc, ~50-100 ms with Chromium.
//!
//! A peer whose ICE finishes first sends its DTLS ClientHello at once
//! (Chromium does), and webrtc-rs drops DTLS that arrives before its own ICE
//! is connected, so the handshake waited for the peer's retransmission.
//!
//! Likewise the side whose DTLS handshake completes first starts sending
//! SRTP at once (our video pump primes a new peer with its last key frame),
//! and the other side drops what arrives before it has set its SRTP keys
//! ("remote_srtp_context is not set yet"): the first key frame was lost and
//! the first picture waited for the next one.
//!
//! And webrtc-rs's driver flushes what its event handling wrote only on its
//! next wake: when ICE connects, the DTLS ClientHello waited for the next
//! connectivity-check tick (up to 5 ms) before it left. The runtime's timer
//! can be cut short ([`Gate::kick`]) so that the driver flushes at once.
//!
//! So each peer connection gets its own runtime whose UDP sockets hold
//! binding requests until the remote description is applied
//! ([`Gate::described`]), DTLS until ICE is connected
//! ([`Gate::ice_connected`]), and RTP and RTCP until the connection is up
//! ([`Gate::connected`]), then hand them over as if they had just arrived.
//!
//! With the `fault-injection` feature, the gate can also drop every
//! datagram of its connection both ways ([`Gate::set_blocked`]), which is
//! what a path that is gone looks like to ICE, or only those of the
//! sockets it has now ([`Gate::retire_sockets`]), which is what a changed
//! address looks like: the sockets an ICE restart binds afresh work. For
//! tests of ICE restart.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, RecvMeta, Runtime,
    TokioRuntime, Transmit,
};

/// Binding requests held per socket at most; more are dropped as before.
const MAX_HELD_CHECKS: usize = 32;
/// DTLS and media datagrams held per socket at most: a 720p key frame and
/// the reports around it.
const MAX_HELD_MEDIA: usize = 256;
/// A held datagram older than this is stale (a check was retransmitted).
const MAX_AGE: Duration = Duration::from_secs(5);
/// Held DTLS goes to webrtc-rs after this even if we never heard that ICE
/// connected, so that holding can never stall a handshake for good.
const DTLS_HOLD: Duration = Duration::from_millis(200);
/// The STUN magic cookie (RFC 5389).
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];

/// Whether `datagram` is a STUN Binding request.
fn is_binding_request(datagram: &[u8]) -> bool {
    datagram.len() >= 20 && datagram[..2] == [0x00, 0x01] && datagram[4..8] == MAGIC_COOKIE
}

/// Whether `datagram` is DTLS (RFC 7983: first byte 20 to 63).
fn is_dtls(datagram: &[u8]) -> bool {
    datagram.len() >= 13 && (20..=63).contains(&datagram[0])
}

/// Whether `datagram` is RTP or RTCP (RFC 7983: first byte 128 to 191).
fn is_rtp_or_rtcp(datagram: &[u8]) -> bool {
    datagram.len() >= 12 && (128..=191).contains(&datagram[0])
}

/// How far a peer connection is, and so what its sockets may hand over.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Stage {
    /// Nothing yet: binding requests wait.
    Closed = 0,
    /// The remote description is applied: DTLS, RTP and RTCP wait.
    Described = 1,
    /// ICE is connected (DTLS starts): RTP and RTCP wait.
    IceConnected = 2,
    /// The connection is up: everything passes.
    Open = 3,
}

impl Stage {
    /// The stage `datagram` waits for (STUN responses, DTLS and anything
    /// else never wait).
    fn needed_by(datagram: &[u8]) -> Stage {
        if is_binding_request(datagram) {
            Stage::Described
        } else if is_dtls(datagram) {
            Stage::IceConnected
        } else if is_rtp_or_rtcp(datagram) {
            Stage::Open
        } else {
            Stage::Closed
        }
    }

    fn from_u8(v: u8) -> Stage {
        match v {
            0 => Stage::Closed,
            1 => Stage::Described,
            2 => Stage::IceConnected,
            _ => Stage::Open,
        }
    }
}

/// The stage of one peer connection, shared by its sockets.
pub(super) struct Gate {
    stage: AtomicU8,
    sockets: Mutex<Vec<Weak<GatedSocket>>>,
    /// Ends the driver's current (or next) timer early.
    kick: Arc<tokio::sync::Notify>,
    /// Drop everything sent and received (a broken path, for tests).
    #[cfg(feature = "fault-injection")]
    blocked: std::sync::atomic::AtomicBool,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            stage: AtomicU8::new(Stage::Closed as u8),
            sockets: Mutex::default(),
            kick: Arc::default(),
            #[cfg(feature = "fault-injection")]
            blocked: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Gate {
    /// Wakes the connection's driver at once, so that it sends what its
    /// last events queued (a permit is kept if it is not waiting yet).
    pub(super) fn kick(&self) {
        self.kick.notify_one();
    }

    /// The remote description is applied: hand over the held checks.
    pub(super) fn described(&self) {
        self.advance(Stage::Described);
    }

    /// ICE is connected and DTLS starts: hand over the held DTLS.
    pub(super) fn ice_connected(&self) {
        self.advance(Stage::IceConnected);
    }

    /// The connection is up (DTLS done, SRTP keys set): hand over the
    /// held media too, and hold nothing from now on.
    pub(super) fn connected(&self) {
        self.advance(Stage::Open);
    }

    fn advance(&self, to: Stage) {
        if self.stage.fetch_max(to as u8, Ordering::SeqCst) >= to as u8 {
            return;
        }
        let sockets = self.sockets.lock().unwrap_or_else(PoisonError::into_inner);
        for socket in sockets.iter().filter_map(Weak::upgrade) {
            let waker = socket.held().waker.take();
            if let Some(w) = waker {
                w.wake();
            }
        }
    }

    fn stage(&self) -> Stage {
        Stage::from_u8(self.stage.load(Ordering::SeqCst))
    }

    /// Drops every datagram of this connection from now on, both ways
    /// (`true`), or passes them again. Sockets bound later (an ICE restart
    /// rebinds them) are blocked too.
    #[cfg(feature = "fault-injection")]
    pub(super) fn set_blocked(&self, blocked: bool) {
        self.blocked.store(blocked, Ordering::SeqCst);
    }

    /// Drops every datagram of the sockets bound so far, for good; sockets
    /// bound later pass.
    #[cfg(feature = "fault-injection")]
    pub(super) fn retire_sockets(&self) {
        let sockets = self.sockets.lock().unwrap_or_else(PoisonError::into_inner);
        for socket in sockets.iter().filter_map(Weak::upgrade) {
            socket.retired.store(true, Ordering::SeqCst);
        }
    }

    fn blocked(&self) -> bool {
        #[cfg(feature = "fault-injection")]
        {
            self.blocked.load(Ordering::SeqCst)
        }
        #[cfg(not(feature = "fault-injection"))]
        {
            false
        }
    }
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("stage", &self.stage())
            .finish()
    }
}

/// One held datagram: the stage it waits for, when it came, its bytes.
type Waiting = (Stage, Instant, Vec<u8>, RecvMeta);

#[derive(Default)]
struct Held {
    /// In arrival order.
    queue: VecDeque<Waiting>,
    checks: usize,
    media: usize,
    /// The waker of the last receive that found nothing: woken when the
    /// gate advances.
    waker: Option<Waker>,
}

impl Held {
    /// Holds `datagram` until `stage`, unless its kind's room is full.
    fn hold(&mut self, stage: Stage, datagram: &[u8], meta: RecvMeta) {
        let (count, max) = if stage == Stage::Described {
            (&mut self.checks, MAX_HELD_CHECKS)
        } else {
            (&mut self.media, MAX_HELD_MEDIA)
        };
        if *count < max {
            *count += 1;
            self.queue
                .push_back((stage, Instant::now(), datagram.to_vec(), meta));
        }
    }

    /// Whether the held `waiting` may go at `stage`.
    fn may_go((needed, at, ..): &Waiting, stage: Stage) -> bool {
        *needed <= stage || (*needed == Stage::IceConnected && at.elapsed() >= DTLS_HOLD)
    }

    /// Takes the first held datagram that may go at `stage`.
    fn take(&mut self, stage: Stage) -> Option<Waiting> {
        let i = self.queue.iter().position(|w| Self::may_go(w, stage))?;
        let waiting = self.queue.remove(i)?;
        if waiting.0 == Stage::Described {
            self.checks -= 1;
        } else {
            self.media -= 1;
        }
        Some(waiting)
    }

    /// Whether something held may go at `stage`.
    fn ready(&self, stage: Stage) -> bool {
        self.queue.iter().any(|w| Self::may_go(w, stage))
    }
}

/// A UDP socket that holds what its connection cannot take yet.
struct GatedSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    gate: Arc<Gate>,
    held: Mutex<Held>,
    /// Its address is gone, for tests (see [`Gate::retire_sockets`]).
    #[cfg(feature = "fault-injection")]
    retired: std::sync::atomic::AtomicBool,
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
    /// Whether everything this socket sends or receives is lost.
    fn cut(&self) -> bool {
        #[cfg(feature = "fault-injection")]
        if self.retired.load(Ordering::SeqCst) {
            return true;
        }
        self.gate.blocked()
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A held datagram whose stage has come, copied into `bufs[0]`.
    fn replay(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta]) -> Option<usize> {
        let stage = self.gate.stage();
        let mut held = self.held();
        while let Some((_, at, data, mut m)) = held.take(stage) {
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
        if self.cut() {
            // Sent, as far as the sender can tell, and lost on the way.
            return Poll::Ready(Ok(transmit.contents.len()));
        }
        self.inner.poll_send(cx, transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            if self.cut() {
                match self.inner.poll_recv(cx, bufs, meta) {
                    Poll::Ready(Ok(_)) => continue,
                    other => return other,
                }
            }
            if let Some(n) = self.replay(bufs, meta) {
                return Poll::Ready(Ok(n));
            }
            if self.gate.stage() == Stage::Open {
                return self.inner.poll_recv(cx, bufs, meta);
            }
            // One datagram at a time until open, so that holding one never
            // means moving the others of a batch.
            let (Some(buf), Some(m)) = (bufs.first_mut(), meta.first_mut()) else {
                return self.inner.poll_recv(cx, bufs, meta);
            };
            match self
                .inner
                .poll_recv(cx, std::slice::from_mut(buf), std::slice::from_mut(m))
            {
                Poll::Ready(Ok(n)) if n >= 1 => {
                    let len = m.len.min(buf.len());
                    let needed = Stage::needed_by(&buf[..len]);
                    // A GRO batch (stride below len) is several datagrams:
                    // it passes as it is.
                    if m.stride == m.len && needed > self.gate.stage() {
                        self.held().hold(needed, &buf[..len], *m);
                        tracing::trace!(from = %m.addr, ?needed, "datagram held until the connection can take it");
                        continue;
                    }
                    return Poll::Ready(Ok(n));
                }
                Poll::Pending => {
                    let mut held = self.held();
                    held.waker = Some(cx.waker().clone());
                    // The gate may have advanced before the waker was in place.
                    if held.ready(self.gate.stage()) {
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
            #[cfg(feature = "fault-injection")]
            retired: std::sync::atomic::AtomicBool::new(false),
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
        // The driver's loop timer (the only sleep of a connection's driver
        // that we use): a kick ends it early, and the driver handles a
        // timeout with nothing due as a no-op before it flushes its writes.
        let timer = self.inner.sleep(duration);
        let kick = self.gate.kick.clone();
        Box::pin(async move {
            tokio::select! {
                () = timer => {}
                () = kick.notified() => {}
            }
        })
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
    async fn early_checks_wait_for_the_description_and_media_for_the_connection() {
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

        // Described while a receive waits: the held check is handed over.
        let waiting = {
            let socket = socket.clone();
            tokio::spawn(async move { next(socket.as_ref(), Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        gate.described();
        assert_eq!(waiting.await.unwrap(), Some(request.clone()));

        // Described: checks pass straight through, media waits.
        let rtp = [0x80u8, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9, 42];
        peer.send_to(&rtp, to).await.unwrap();
        request[8] = 8;
        peer.send_to(&request, to).await.unwrap();
        assert_eq!(
            next(socket.as_ref(), Duration::from_secs(5)).await,
            Some(request)
        );
        assert_eq!(
            next(socket.as_ref(), Duration::from_millis(100)).await,
            None
        );

        // ICE connected: DTLS comes, media still waits.
        let dtls = [22u8; 20];
        peer.send_to(&dtls, to).await.unwrap();
        assert_eq!(
            next(socket.as_ref(), Duration::from_millis(100)).await,
            None
        );
        gate.ice_connected();
        assert_eq!(
            next(socket.as_ref(), Duration::from_secs(5))
                .await
                .as_deref(),
            Some(&dtls[..])
        );
        assert_eq!(
            next(socket.as_ref(), Duration::from_millis(100)).await,
            None
        );

        // Connected: the held media comes, then everything passes.
        gate.connected();
        assert_eq!(
            next(socket.as_ref(), Duration::from_secs(5))
                .await
                .as_deref(),
            Some(&rtp[..])
        );
        peer.send_to(&rtp[..12], to).await.unwrap();
        assert_eq!(
            next(socket.as_ref(), Duration::from_secs(5))
                .await
                .as_deref(),
            Some(&rtp[..12])
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
        // RFC 7983: DTLS 20-63, RTP/RTCP 128-191.
        assert_eq!(Stage::needed_by(&request), Stage::Described);
        assert_eq!(Stage::needed_by(&response), Stage::Closed);
        assert_eq!(Stage::needed_by(&[22u8; 40]), Stage::IceConnected);
        assert_eq!(Stage::needed_by(&[0x80u8; 40]), Stage::Open);
        assert_eq!(Stage::needed_by(&[0xbfu8; 40]), Stage::Open);
        assert_eq!(Stage::needed_by(&[0xc0u8; 40]), Stage::Closed);
        assert!(!is_binding_request(&request[..19]));
        let mut no_cookie = request.clone();
        no_cookie[4] = 0;
        assert!(!is_binding_request(&no_cookie));
    }
}
