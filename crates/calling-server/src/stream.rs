//! One accepted connection, plain or TLS, with a limit on what may be
//! read from it before the login, and the bytes the HTTP layer read past
//! the request put back in front.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// The transport under a connection.
pub(crate) enum Io {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP (boxed: rustls' state is large and most servers run
    /// one kind only).
    Tls(Box<TlsStream<TcpStream>>),
}

/// A connection with bytes put back in front and an optional limit on
/// what may still be read from it.
pub(crate) struct Stream {
    ahead: Vec<u8>,
    pos: usize,
    io: Io,
    /// Bytes that may still be read from `io`; `None`: no limit.
    budget: Option<usize>,
}

/// The error a read past [`Stream::limit_reads`]'s budget fails with.
#[derive(Debug, thiserror::Error)]
#[error("read limit reached")]
pub(crate) struct ReadLimit;

/// Whether `e` is a read past the budget.
pub(crate) fn is_read_limit(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<ReadLimit>())
}

impl Stream {
    pub(crate) fn new(io: Io) -> Self {
        Stream {
            ahead: Vec::new(),
            pos: 0,
            io,
            budget: None,
        }
    }

    /// From now on at most `bytes` more may be read from the connection
    /// (the read-ahead already taken not counted); reads past them fail
    /// with [`ReadLimit`], and nothing beyond is taken from the socket.
    pub(crate) fn limit_reads(&mut self, bytes: usize) {
        self.budget = Some(bytes);
    }

    /// Lifts the limit of [`Stream::limit_reads`].
    pub(crate) fn unlimit_reads(&mut self) {
        self.budget = None;
    }

    /// Whether the limit of [`Stream::limit_reads`] was reached.
    pub(crate) fn limit_reached(&self) -> bool {
        self.budget == Some(0)
    }

    /// Reads and throws away what the peer still sends, past any limit,
    /// until it stops for a moment, `within` is over or `max_bytes` are
    /// gone, so that closing the socket then sends a FIN, not the reset
    /// that unread data makes (which could make the peer lose the answers
    /// written before). The bounds keep a peer that writes on and on from
    /// making the server read for it: that one gets the reset.
    pub(crate) async fn discard_input(&mut self, within: std::time::Duration, max_bytes: usize) {
        use tokio::io::AsyncReadExt;
        const QUIET: std::time::Duration = std::time::Duration::from_millis(100);
        // On the heap: this future is part of every connection's task,
        // whose size is that of its largest state.
        let mut sink = vec![0u8; 1024];
        let mut left = max_bytes;
        let _ = tokio::time::timeout(within, async {
            while left > 0 {
                let read = match &mut self.io {
                    Io::Plain(s) => tokio::time::timeout(QUIET, s.read(&mut sink)).await,
                    Io::Tls(s) => tokio::time::timeout(QUIET, s.read(&mut sink)).await,
                };
                match read {
                    Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
                    _ => break,
                }
            }
        })
        .await;
    }

    /// Puts `bytes` in front of what is read next: what the HTTP layer
    /// read past the request (a pipelined login, say).
    pub(crate) fn put_back(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut ahead = bytes.to_vec();
        ahead.extend_from_slice(&self.ahead[self.pos..]);
        self.ahead = ahead;
        self.pos = 0;
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.ahead.len() {
            let n = (this.ahead.len() - this.pos).min(buf.remaining());
            buf.put_slice(&this.ahead[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.ahead.len() {
                // Free the read-ahead: idle connections should stay small.
                this.ahead = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        let Some(budget) = this.budget else {
            return this.io.poll_read_into(cx, buf);
        };
        if budget == 0 {
            return Poll::Ready(Err(io::Error::other(ReadLimit)));
        }
        // Read no more than the budget: through a small buffer of our own,
        // as `buf` may be larger (this happens only before a login).
        let mut chunk = [0u8; 1024];
        let n = budget.min(buf.remaining()).min(chunk.len());
        let mut limited = ReadBuf::new(&mut chunk[..n]);
        match this.io.poll_read_into(cx, &mut limited) {
            Poll::Ready(Ok(())) => {
                let got = limited.filled();
                this.budget = Some(budget - got.len());
                buf.put_slice(got);
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl Io {
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
