//! One accepted connection, plain or TLS, with the bytes already read to
//! route it put back in front.
//!
//! A TLS stream cannot be peeked, so routing reads the request line and
//! this type replays it to whoever reads next (tungstenite's handshake or
//! the plain HTTP answer).

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

/// A connection with replayable read-ahead.
pub(crate) struct Stream {
    ahead: Vec<u8>,
    pos: usize,
    io: Io,
}

impl Stream {
    pub(crate) fn new(io: Io) -> Self {
        Stream {
            ahead: Vec::new(),
            pos: 0,
            io,
        }
    }

    /// Bytes read so far but not yet consumed.
    pub(crate) fn ahead(&self) -> &[u8] {
        &self.ahead[self.pos..]
    }

    /// Reads more bytes into the read-ahead, without consuming any;
    /// returns how many arrived (0 at end of stream).
    pub(crate) async fn fill(&mut self, max: usize) -> io::Result<usize> {
        use tokio::io::AsyncReadExt;
        let mut chunk = vec![0u8; max];
        let n = match &mut self.io {
            Io::Plain(s) => s.read(&mut chunk).await?,
            Io::Tls(s) => s.read(&mut chunk).await?,
        };
        self.ahead.extend_from_slice(&chunk[..n]);
        Ok(n)
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
        match &mut this.io {
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
