//! The thin I/O shell over glommio sockets: a cloneable socket handle, timeouts, a read buffer.
//!
//! A `Sock` can be read by one task while another writes to it (glommio keeps separate read and
//! write sources per stream); the `RefCell` is only borrowed inside a single `poll_*` call, never
//! across an `.await`, so the two halves never collide.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::future;
use futures_lite::io::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

#[derive(Clone)]
pub struct Sock(Rc<RefCell<TcpStream>>);

impl Sock {
    pub fn new(stream: TcpStream) -> Sock {
        Sock(Rc::new(RefCell::new(stream)))
    }

    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        future::poll_fn(|cx| Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)).await
    }

    pub async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let n = future::poll_fn(|cx| Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, buf))
                .await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Sends FIN: the peer reads EOF, and can still send to us.
    pub fn shutdown_write(&self) {
        let _ = socket_shutdown(self.fd(), Shutdown::Write);
    }

    /// Closes both directions at once, even if other clones of this handle are still alive.
    pub fn shutdown_both(&self) {
        let _ = socket_shutdown(self.fd(), Shutdown::Both);
    }

    fn fd(&self) -> i32 {
        self.0.borrow().as_raw_fd()
    }

    /// True if the peer has neither closed nor sent anything: a pooled connection fit for reuse.
    pub fn is_idle_and_open(&self) -> bool {
        let mut byte = [0u8; 1];
        // SAFETY: recv into a valid one-byte buffer owned by this frame.
        let n = unsafe {
            libc::recv(
                self.fd(),
                byte.as_mut_ptr().cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
    }
}

fn socket_shutdown(fd: i32, how: Shutdown) -> io::Result<()> {
    let how = match how {
        Shutdown::Read => libc::SHUT_RD,
        Shutdown::Write => libc::SHUT_WR,
        Shutdown::Both => libc::SHUT_RDWR,
    };
    // SAFETY: shutdown(2) on a descriptor; it does not touch memory.
    if unsafe { libc::shutdown(fd, how) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Runs `f`, failing with `TimedOut` if it takes longer than `d`.
pub async fn timeout<T>(d: Duration, f: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    future::or(f, async {
        glommio::timer::sleep(d).await;
        Err(io::ErrorKind::TimedOut.into())
    })
    .await
}

/// A fixed-capacity read buffer: bytes `start..end` are unread input.
pub struct InBuf {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl InBuf {
    pub fn with_capacity(cap: usize) -> InBuf {
        InBuf {
            buf: vec![0; cap].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.end - self.start);
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    pub fn is_full(&self) -> bool {
        self.start == 0 && self.end == self.buf.len()
    }

    /// Reads once from `sock` after the unread bytes; 0 means EOF (or a full buffer, which callers
    /// rule out with `is_full`).
    pub async fn read_from(&mut self, sock: &Sock) -> io::Result<usize> {
        if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = sock.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbuf_consumes_and_resets() {
        let mut b = InBuf::with_capacity(8);
        b.buf[..5].copy_from_slice(b"hello");
        b.end = 5;
        b.consume(2);
        assert_eq!(b.data(), b"llo");
        b.consume(3);
        assert!(b.is_empty());
        assert_eq!((b.start, b.end), (0, 0));
    }
}
