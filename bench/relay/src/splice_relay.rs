//! The monoio relay with splice(2) in place of a user-space buffer: `relay-monoio --splice MODE`
//! (docs/splice.md). Per connection pair and direction one pipe, socket → pipe → socket, so the
//! bytes stay in the kernel's pages: what the receiving socket holds is passed to the pipe and on
//! to the sending socket by reference, never copied into (or out of) this process. Three ways to
//! drive it:
//!
//! - `poll`: the sockets are non-blocking and splice(2) is called directly with
//!   `SPLICE_F_NONBLOCK`; when a socket is not ready the task waits on an io_uring poll (monoio's
//!   `readable` / `writable`). HAProxy's model (epoll + splice), on monoio's ring.
//! - `uring`: `IORING_OP_SPLICE` through monoio's `splice` feature. The kernel never issues a
//!   splice SQE non-blocking (io_uring/splice.c): each one runs in an io-wq worker thread, so a
//!   direction waiting for bytes is a kernel thread blocked in the socket's read.
//! - `auto`: HAProxy's `splice-auto` idea, with the threshold measured (docs/splice.md). Copy, as
//!   the copy relay does, until one read brings at least `AUTO_MIN` bytes; then splice as `poll`
//!   does until `AUTO_SMALL` splices in a row bring less than that, and copy again.
//!
//! Pipes are the default size (64 KiB, 16 slots); one splice asks for that much.

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;

use monoio::io::splice::{SpliceDestination, SpliceSource};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;
use monoio::net::tcp::{TcpOwnedReadHalf, TcpOwnedWriteHalf};

use crate::{BUF_SIZE, Splice};

/// Bytes asked of one splice into the pipe: a default pipe's capacity.
const PIPE_LEN: usize = 64 * 1024;

/// `auto`: a read of at least this many bytes (one that fills the buffer) turns splicing on;
/// below it a splice saves less than its extra syscall costs (docs/splice.md).
const AUTO_MIN: usize = BUF_SIZE;
/// `auto`: this many splices in a row under `AUTO_MIN` turn it off again. More than one, so that
/// a stream of messages a little over a buffer (a full read, then a short tail) stays spliced.
const AUTO_SMALL: u32 = 3;

/// Relays one client/backend pair in `mode` (`Poll`, `Uring` or `Auto`) until both directions
/// are done.
pub async fn pair(client: TcpStream, server: TcpStream, mode: Splice) -> io::Result<()> {
    let fds = [client.as_raw_fd(), server.as_raw_fd()];
    if mode == Splice::Uring {
        // A splice SQE runs blocking in an io-wq worker: on a non-blocking socket it would
        // come back EAGAIN instead of waiting.
        set_nonblocking(&client, false)?;
        set_nonblocking(&server, false)?;
        let (cr, cw) = client.into_split();
        let (sr, sw) = server.into_split();
        let up = monoio::spawn(uring_way(cr, sw, fds));
        uring_way(sr, cw, fds).await;
        up.await;
        return Ok(());
    }
    // Readiness is waited for on a duplicate of each socket (monoio's `readable` / `writable`
    // need the stream, and the halves below own the originals).
    let (cp, sp) = (Rc::new(poller(&client)?), Rc::new(poller(&server)?));
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = Way::new(cr, sw, cp.clone(), sp.clone(), fds);
    let up = monoio::spawn(up.run(mode));
    Way::new(sr, cw, sp, cp, [fds[1], fds[0]]).run(mode).await;
    up.await;
    Ok(())
}

/// One direction: `from` → pipe → `to`.
struct Way {
    from: TcpOwnedReadHalf,
    to: TcpOwnedWriteHalf,
    from_poll: Rc<TcpStream>,
    to_poll: Rc<TcpStream>,
    /// `from`'s and `to`'s descriptors (kept open by the halves).
    fds: [RawFd; 2],
    /// Made on the first splice (an `auto` direction that never reads much has none).
    pipe: Option<Pipe>,
    /// Bytes copied and spliced, and switches from copying to splicing (`auto`), for the line
    /// that `WTGATE_RELAY_STATS=1` prints when the direction ends.
    copied: u64,
    spliced: u64,
    switches: u32,
}

/// Where a phase of a direction ended.
enum End {
    /// `from` reached EOF and everything read has been passed on.
    Eof,
    /// A copy read brought `AUTO_MIN` bytes or more: splice from here.
    Large,
    /// The pipe is empty and the last `AUTO_SMALL` splices were small: copy from here.
    Small,
}

impl Way {
    fn new(
        from: TcpOwnedReadHalf,
        to: TcpOwnedWriteHalf,
        from_poll: Rc<TcpStream>,
        to_poll: Rc<TcpStream>,
        fds: [RawFd; 2],
    ) -> Way {
        Way {
            from,
            to,
            from_poll,
            to_poll,
            fds,
            pipe: None,
            copied: 0,
            spliced: 0,
            switches: 0,
        }
    }

    /// Until EOF (then a half-close) or an error (then both sockets are shut down, which ends
    /// the other direction too).
    async fn run(mut self, mode: Splice) {
        let r = match mode {
            Splice::Auto => self.auto().await,
            _ => self.splice(false).await.map(drop),
        };
        match r {
            Ok(()) => {
                let _ = self.to.shutdown().await;
            }
            Err(_) => shutdown_both(self.fds),
        }
        if std::env::var_os("WTGATE_RELAY_STATS").is_some_and(|v| v == "1") {
            let (c, s, k) = (self.copied, self.spliced, self.switches);
            eprintln!("relay-monoio: direction done: copied {c} spliced {s} switches {k}");
        }
    }

    async fn auto(&mut self) -> io::Result<()> {
        let mut buf = Vec::with_capacity(BUF_SIZE);
        loop {
            let (r, b) = self.copy(buf).await;
            buf = b;
            if let End::Eof = r? {
                return Ok(());
            }
            self.switches += 1;
            if let End::Eof = self.splice(true).await? {
                return Ok(());
            }
        }
    }

    /// Reads into `buf` and writes it out, until EOF or a read of `AUTO_MIN` bytes or more.
    async fn copy(&mut self, mut buf: Vec<u8>) -> (io::Result<End>, Vec<u8>) {
        loop {
            let (r, b) = self.from.read(buf).await;
            buf = b;
            let n = match r {
                Ok(0) => return (Ok(End::Eof), buf),
                Ok(n) => n,
                Err(e) => return (Err(e), buf),
            };
            let (r, b) = self.to.write_all(buf).await;
            buf = b;
            buf.clear();
            if let Err(e) = r {
                return (Err(e), buf);
            }
            self.copied += n as u64;
            if n >= AUTO_MIN {
                return (Ok(End::Large), buf);
            }
        }
    }

    /// Splices until EOF; with `auto`, only until the stream turns small (`End::Small`). The
    /// pipe is emptied after every splice into it, so it is empty whenever this returns `Ok`.
    async fn splice(&mut self, auto: bool) -> io::Result<End> {
        let pipe = match self.pipe.take() {
            Some(p) => p,
            None => Pipe::new()?,
        };
        let pipe = &*self.pipe.insert(pipe);
        // `auto` comes here after a large read, so more is likely queued: try before polling.
        let mut ready = auto;
        let mut small = 0;
        loop {
            if !ready {
                self.from_poll.readable(true).await?;
            }
            let n = match splice_nb(self.fds[0], pipe.w.as_raw_fd(), PIPE_LEN) {
                Ok(0) => return Ok(End::Eof),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready = false;
                    continue;
                }
                Err(e) => return Err(e),
            };
            drain(pipe, n, self.fds[1], &self.to_poll).await?;
            self.spliced += n as u64;
            // Less than a buffer's worth most likely took all there was: wait for more before
            // the next splice rather than try one that finds nothing.
            ready = n >= BUF_SIZE;
            small = if n < AUTO_MIN { small + 1 } else { 0 };
            if auto && small >= AUTO_SMALL {
                return Ok(End::Small);
            }
        }
    }
}

/// Splices the `n` bytes the pipe holds out to `to`.
async fn drain(pipe: &Pipe, mut n: usize, to: RawFd, to_poll: &TcpStream) -> io::Result<()> {
    while n > 0 {
        match splice_nb(pipe.r.as_raw_fd(), to, n) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(k) => n -= k,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => to_poll.writable(true).await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One direction with `IORING_OP_SPLICE` SQEs, until EOF (then a half-close) or an error (then
/// both sockets are shut down).
async fn uring_way(mut from: TcpOwnedReadHalf, mut to: TcpOwnedWriteHalf, fds: [RawFd; 2]) {
    let r: io::Result<()> = async {
        let (mut pr, mut pw) = monoio::net::unix::new_pipe()?;
        loop {
            let n = from.splice_to_pipe(&mut pw, PIPE_LEN as u32).await?;
            if n == 0 {
                return Ok(());
            }
            let mut left = n;
            while left > 0 {
                match to.splice_from_pipe(&mut pr, left).await? {
                    0 => return Err(io::ErrorKind::WriteZero.into()),
                    k => left -= k,
                }
            }
        }
    }
    .await;
    match r {
        Ok(()) => {
            let _ = to.shutdown().await;
        }
        Err(_) => shutdown_both(fds),
    }
}

/// The two ends of a non-blocking pipe.
struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into the array it is given, which has room for
        // exactly two.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 just created both descriptors; nothing else owns them.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(Pipe { r, w })
    }
}

/// splice(2) of up to `len` bytes, never waiting: `WouldBlock` when `from` has nothing or `to`
/// has no room.
fn splice_nb(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    let none = std::ptr::null_mut();
    // SAFETY: splice(2) between descriptors this relay holds open, without offsets (null: sockets
    // and pipes have none); it reads and writes no memory of this process.
    let n = unsafe { libc::splice(from, none, to, none, len, flags) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `s`'s descriptor, borrowed for as long as `s` lives.
fn borrow(s: &TcpStream) -> BorrowedFd<'_> {
    // SAFETY: the descriptor is `s`'s and stays open while `s` (and so the borrow) lives.
    unsafe { BorrowedFd::borrow_raw(s.as_raw_fd()) }
}

fn set_nonblocking(s: &TcpStream, on: bool) -> io::Result<()> {
    socket2::SockRef::from(&borrow(s)).set_nonblocking(on)
}

/// A second monoio stream on a duplicate of `s`'s descriptor, to wait for readiness on; `s` is
/// made non-blocking (the flag belongs to the socket both descriptors share).
fn poller(s: &TcpStream) -> io::Result<TcpStream> {
    set_nonblocking(s, true)?;
    let dup = borrow(s).try_clone_to_owned()?;
    TcpStream::from_std(std::net::TcpStream::from(dup))
}

/// Shuts both sockets of a pair down (each direction's end on an error).
pub(crate) fn shutdown_both(fds: [RawFd; 2]) {
    for fd in fds {
        // SAFETY: the descriptors are held open by the pair's halves, which live as long as the
        // directions that call this.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let _ = socket2::SockRef::from(&fd).shutdown(Shutdown::Both);
    }
}
