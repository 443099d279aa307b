//! TLS on a [`Sock`]: the server side of a handshake, then every read of the socket decrypts and
//! every write encrypts through the connection's rustls state, so the proxy above reads and
//! writes plaintext as on any socket.
//!
//! rustls is sans-IO here: this file moves ciphertext between the ring and rustls' buffers. A
//! read lends its destination buffer to the ring for the ciphertext, hands that to rustls, then
//! takes the plaintext out into the same buffer: no buffer of its own while the connection idles.
//! Ciphertext rustls has no room for yet (a burst beyond its 16 KiB plaintext buffer) waits in a
//! stash that is empty, with no capacity, almost always.
//!
//! The reader never writes: what rustls wants to send besides a response (a TLS 1.3 key update,
//! say) goes out with the next write; a fatal alert and `close_notify` go out with one
//! non-blocking send, only while no write is in flight, so records never interleave.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::sync::Arc;

use monoio::buf::{IoBuf, SliceMut};
use monoio::io::AsyncReadRent;
use rustls::{HandshakeKind, ProtocolVersion, ServerConfig, ServerConnection};

use super::{InBuf, Lent, Sock, busy};
use crate::metrics::ShardStats;
use crate::tls::{FirstBytes, first_bytes};

/// rustls' received-plaintext buffer (its default limit): no more ciphertext is handed over while
/// this much plaintext waits to be read.
const PLAIN_LIMIT: usize = 16 * 1024;

/// A connection's TLS state once its handshake is done.
pub(super) struct TlsState {
    conn: RefCell<ServerConnection>,
    stash: RefCell<Vec<u8>>,
    stats: Arc<ShardStats>,
}

/// How a handshake ended, when it did not.
#[derive(Debug)]
pub enum HandshakeError {
    /// The client sent a plain HTTP request to the TLS port.
    PlainHttp,
    /// The first bytes were neither TLS nor HTTP.
    NotTls,
    /// The client closed (or reset) before the handshake ended.
    Closed,
    /// The client offered ALPN protocols without `http/1.1` (an `h2`-only client).
    NoAlpn,
    /// No certificate for the client's name (`--tls-strict-sni`), or none it can verify.
    NoCertificate,
    /// The client ended the handshake with an alert of its own (it did not trust the
    /// certificate, say).
    ClientAlert(rustls::AlertDescription),
    /// Any other TLS failure: a bad or unsupported hello, a version or cipher too old, a bad
    /// record; rustls sent the client an alert.
    Protocol(rustls::Error),
}

impl HandshakeError {
    /// The reasons, as `/metrics` labels them (`index` order).
    pub const NAMES: [&str; 7] = [
        "plain_http",
        "not_tls",
        "closed",
        "no_alpn",
        "no_certificate",
        "client_alert",
        "protocol",
    ];

    pub fn index(&self) -> usize {
        match self {
            HandshakeError::PlainHttp => 0,
            HandshakeError::NotTls => 1,
            HandshakeError::Closed => 2,
            HandshakeError::NoAlpn => 3,
            HandshakeError::NoCertificate => 4,
            HandshakeError::ClientAlert(_) => 5,
            HandshakeError::Protocol(_) => 6,
        }
    }

    fn from_tls(e: rustls::Error) -> HandshakeError {
        match e {
            rustls::Error::NoApplicationProtocol => HandshakeError::NoAlpn,
            rustls::Error::AlertReceived(alert) => HandshakeError::ClientAlert(alert),
            rustls::Error::General(ref why) if why.contains("no server certificate") => {
                HandshakeError::NoCertificate
            }
            e => HandshakeError::Protocol(e),
        }
    }
}

/// What a finished handshake agreed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    pub tls13: bool,
    pub resumed: bool,
}

impl Agreed {
    /// Its place among `/metrics`' handshake counters: TLS 1.2 full, 1.2 resumed, 1.3 full, 1.3
    /// resumed.
    pub fn index(self) -> usize {
        usize::from(self.tls13) * 2 + usize::from(self.resumed)
    }
}

/// Runs the server side of a handshake on `sock`, which has not spoken TLS yet; `buf` holds what
/// was read from it so far (after a PROXY header). On success every later read and write of
/// `sock` goes through TLS, and `buf` is empty.
pub async fn handshake(
    sock: &Sock,
    buf: &mut InBuf,
    config: Arc<ServerConfig>,
    stats: Arc<ShardStats>,
) -> Result<Agreed, HandshakeError> {
    let mut conn = ServerConnection::new(config).map_err(HandshakeError::Protocol)?;
    conn.set_buffer_limit(None);
    let mut looked = false;
    loop {
        if !buf.is_empty() && !looked {
            match first_bytes(buf.data()) {
                FirstBytes::Tls => looked = true,
                FirstBytes::Unknown => {}
                FirstBytes::PlainHttp => return Err(HandshakeError::PlainHttp),
                FirstBytes::Garbage => return Err(HandshakeError::NotTls),
            }
        }
        let fed = if looked {
            feed_hello(&mut conn, buf)
        } else {
            Ok(())
        };
        // An alert for a failed handshake goes out too, before the error is returned.
        send_pending(sock, &mut conn).await?;
        fed?;
        if !conn.is_handshaking() {
            break;
        }
        match buf.read_idle(sock).await {
            Ok(n) if n > 0 => {}
            _ => return Err(HandshakeError::Closed),
        }
    }
    let agreed = Agreed {
        tls13: conn.protocol_version() == Some(ProtocolVersion::TLSv1_3),
        resumed: conn.handshake_kind() == Some(HandshakeKind::Resumed),
    };
    // Records that came right after the handshake (a request sent with the client's Finished)
    // are ciphertext: they wait in the stash for the first read.
    let stash = buf.data().to_vec();
    buf.consume(stash.len());
    buf.release();
    let state = TlsState {
        conn: RefCell::new(conn),
        stash: RefCell::new(stash),
        stats,
    };
    // A Sock is made TLS once, here, right after the handshake on it.
    let _ = sock.0.tls.set(Box::new(state));
    Ok(agreed)
}

/// Hands rustls the handshake bytes in `buf`.
fn feed_hello(conn: &mut ServerConnection, buf: &mut InBuf) -> Result<(), HandshakeError> {
    let took = crate::tls::feed_handshake(conn, buf.data()).map_err(HandshakeError::from_tls)?;
    buf.consume(took);
    Ok(())
}

/// Writes out what rustls has to send (handshake flights, tickets, an alert).
async fn send_pending(sock: &Sock, conn: &mut ServerConnection) -> Result<(), HandshakeError> {
    while conn.wants_write() {
        let mut out = Vec::new();
        if conn.write_tls(&mut out).is_err() {
            return Err(HandshakeError::Closed);
        }
        if sock.write_raw(out).await.0.is_err() {
            return Err(HandshakeError::Closed);
        }
    }
    Ok(())
}

impl TlsState {
    /// Plaintext rustls holds, into `dst`: `None` if it holds none (and the stream goes on).
    fn take_plain(&self, dst: &mut [u8]) -> Option<io::Result<usize>> {
        let mut conn = self.conn.borrow_mut();
        match conn.reader().read(dst) {
            Ok(n) => Some(Ok(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                // The client closed its TCP connection without close_notify: an end like any
                // other for HTTP, whose messages carry their own length; counted.
                ShardStats::count(&self.stats.tls_unclean_ends);
                Some(Ok(0))
            }
            Err(e) => Some(Err(e)),
        }
    }

    /// Hands `ciphertext` to rustls and decrypts it, as much as its plaintext buffer takes;
    /// returns how many bytes it took. An empty `ciphertext` is the socket's EOF.
    fn feed(&self, mut ciphertext: &[u8]) -> io::Result<usize> {
        let len = ciphertext.len();
        let mut conn = self.conn.borrow_mut();
        loop {
            let took = match conn.read_tls(&mut ciphertext) {
                Ok(n) => n,
                // Backpressure: its plaintext buffer is full.
                Err(e) if e.kind() == io::ErrorKind::Other => break,
                Err(e) => return Err(e),
            };
            let state = match conn.process_new_packets() {
                Ok(state) => state,
                Err(e) => {
                    drop(conn);
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            };
            // A TLS 1.2 server has nothing to say unasked but the `no_renegotiation` warning
            // rustls answers a renegotiating ClientHello with; the client would then wait for a
            // handshake that never comes: the warning goes out and the connection ends, as
            // HAProxy ends it.
            if conn.wants_write() && conn.protocol_version() == Some(ProtocolVersion::TLSv1_2) {
                let why = "the client tried to renegotiate (refused)";
                return Err(io::Error::new(io::ErrorKind::InvalidData, why));
            }
            if ciphertext.is_empty() || took == 0 || state.plaintext_bytes_to_read() >= PLAIN_LIMIT
            {
                break;
            }
        }
        Ok(len - ciphertext.len())
    }

    /// Feeds the stash; false if it was empty.
    fn feed_stash(&self) -> io::Result<bool> {
        let stash = std::mem::take(&mut *self.stash.borrow_mut());
        if stash.is_empty() {
            return Ok(false);
        }
        let took = self.feed(&stash)?;
        if took < stash.len() {
            let mut rest = stash;
            rest.drain(..took);
            *self.stash.borrow_mut() = rest;
        }
        Ok(true)
    }

    /// Whether a read would find something without waiting for the socket: plaintext, stashed
    /// ciphertext, or the end of the stream.
    fn has_pending(&self) -> bool {
        if !self.stash.borrow().is_empty() {
            return true;
        }
        match self.conn.borrow_mut().process_new_packets() {
            Ok(s) => s.plaintext_bytes_to_read() > 0 || s.peer_has_closed(),
            Err(_) => true,
        }
    }

    /// Encrypts `plain` into records, ready to send.
    fn seal(&self, plain: &[u8]) -> io::Result<Vec<u8>> {
        let mut conn = self.conn.borrow_mut();
        conn.writer().write_all(plain)?;
        let mut out = spare::take();
        while conn.wants_write() {
            conn.write_tls(&mut out)?;
        }
        Ok(out)
    }

    /// `close_notify`, or the alert rustls queued after a fatal error, with one non-blocking send
    /// (the socket's buffer has room for a few dozen bytes, unless the client stopped reading,
    /// and then it does not matter).
    fn send_last(&self, fd: std::os::fd::RawFd, close_notify: bool) {
        let mut conn = self.conn.borrow_mut();
        if close_notify {
            conn.send_close_notify();
        }
        let mut out = Vec::new();
        while conn.wants_write() {
            if conn.write_tls(&mut out).is_err() {
                return;
            }
        }
        if !out.is_empty() {
            // SAFETY: send(2) of `out`, a valid buffer of out.len() bytes, on a descriptor the
            // calling Sock keeps open.
            unsafe {
                libc::send(
                    fd,
                    out.as_ptr().cast(),
                    out.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                );
            }
        }
    }
}

impl Sock {
    /// Whether this connection speaks TLS (its handshake is done).
    pub fn is_tls(&self) -> bool {
        self.0.tls.get().is_some()
    }

    /// TLS before a write-side shutdown: `close_notify`, if no write is in flight.
    pub(super) fn tls_goodbye(&self) {
        if let Some(tls) = self.0.tls.get() {
            self.send_last(tls, true);
        }
    }

    /// [`TlsState::send_last`], unless a write is in flight (its records would interleave).
    fn send_last(&self, tls: &TlsState, close_notify: bool) {
        let writer = self.0.writer.take();
        if writer.is_some() {
            tls.send_last(self.0.fd, close_notify);
        }
        self.0.writer.set(writer);
    }
}

/// A read of the TLS connection `tls` on `sock`: plaintext into `buf[begin..end]`.
pub(super) async fn read(
    sock: &Sock,
    tls: &TlsState,
    mut buf: Box<[u8]>,
    begin: usize,
    end: usize,
) -> (io::Result<usize>, Box<[u8]>) {
    loop {
        if let Some(r) = tls.take_plain(&mut buf[begin..end]) {
            return (r, buf);
        }
        match tls.feed_stash() {
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => return (Err(fatal(sock, tls, e)), buf),
        }
        let mut lent = Lent::take(&sock.0.reader);
        let Some(half) = lent.half.as_mut() else {
            return (Err(busy()), buf);
        };
        let (r, back) = half.read(SliceMut::new(buf, begin, end)).await;
        drop(lent);
        buf = back.into_inner();
        let n = match r {
            Ok(n) => n,
            Err(e) => return (Err(e), buf),
        };
        match tls.feed(&buf[begin..begin + n]) {
            Ok(took) if took < n => tls
                .stash
                .borrow_mut()
                .extend_from_slice(&buf[begin + took..begin + n]),
            Ok(_) => {}
            Err(e) => return (Err(fatal(sock, tls, e)), buf),
        }
    }
}

/// A TLS error ends the connection: the client gets rustls' alert, if it can take it now.
fn fatal(sock: &Sock, tls: &TlsState, e: io::Error) -> io::Error {
    ShardStats::count(&tls.stats.tls_record_errors);
    sock.send_last(tls, false);
    e
}

/// Waits until a read of the TLS connection would find something.
pub(super) async fn readable(sock: &Sock, tls: &TlsState) -> io::Result<()> {
    if tls.has_pending() {
        return Ok(());
    }
    sock.readable_raw().await
}

/// Encrypts and writes all of `buf`, handing it back with the result.
pub(super) async fn write_all<B: IoBuf>(
    sock: &Sock,
    tls: &TlsState,
    buf: B,
) -> (io::Result<()>, B) {
    // SAFETY: `IoBuf` promises `bytes_init` initialised bytes at `read_ptr`, valid while `buf`
    // lives and is not moved out of; the slice is used only by `seal`, before `buf` moves.
    let plain = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
    let out = match tls.seal(plain) {
        Ok(out) => out,
        Err(e) => return (Err(e), buf),
    };
    let (r, out) = sock.write_raw(out).await;
    spare::give(out);
    (r, buf)
}

/// Spare output buffers of this thread's TLS writes: a write's records go out of one, which
/// comes back for the next write, so only writes in flight hold one.
mod spare {
    use std::cell::RefCell;

    /// Room for a 16 KiB record with its header and tag, and some more.
    const SIZE: usize = 17 * 1024;
    const KEEP: usize = 16;
    const KEEP_CAPACITY: usize = 256 * 1024;

    thread_local! {
        static SPARES: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    }

    pub fn take() -> Vec<u8> {
        SPARES
            .with(|s| s.borrow_mut().pop())
            .unwrap_or_else(|| Vec::with_capacity(SIZE))
    }

    pub fn give(mut v: Vec<u8>) {
        if v.capacity() > KEEP_CAPACITY {
            return;
        }
        v.clear();
        SPARES.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < KEEP {
                s.push(v);
            }
        });
    }
}
