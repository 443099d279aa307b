//! The admin listener's accepting thread: connections wait here, read without blocking, until
//! their whole request has arrived; only then does one get a thread of its own to be answered.
//!
//! A client that connects and sends nothing, or half a head, holds one entry of a bounded list
//! ([`MAX_WAITING`], [`MAX_WAITING_PER_CLIENT`] from one address) and no thread. When a newcomer
//! finds the list full, the longest-waiting connection (of its own address first) is closed to
//! make room, so a flood of silent connections — even from loopback, the operator's own address —
//! delays no request that arrives whole: the newest connection is the one kept. Requests being
//! answered count against [`MAX_ANSWERING`], and only they take threads.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{Ctx, MAX_BODY, Reply, Request, respond};
use crate::h1::{self, BodyFramer, RequestHead};

/// Connections whose request has not all arrived, held at once; at the cap the one that has
/// waited longest is closed for the newcomer. (No config option: far above what operators,
/// scrapers and status pages open, and each costs a socket and its buffer, no thread.)
pub const MAX_WAITING: usize = 256;
/// Of those, from one client address; at the cap that address's longest-waiting one is closed.
pub const MAX_WAITING_PER_CLIENT: usize = 32;
/// Requests answered at once, each on a short-lived thread; a whole request over the cap is
/// answered 503 at once. Only whole requests count, so silent connections never take a slot.
pub const MAX_ANSWERING: usize = 64;
/// Time from the connect to the last byte of the request.
const REQUEST_LIMIT: Duration = Duration::from_secs(10);
/// Time an answer gets to be taken by its client.
const WRITE_LIMIT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (EMFILE and friends), instead of spinning on it.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `listener` until `stop` is set (and the listener shut down, which wakes the wait).
pub(super) fn run(listener: &TcpListener, ctx: &Arc<Ctx>, stop: &AtomicBool) {
    if let Err(e) = listener.set_nonblocking(true) {
        eprintln!("wtgate: admin listener: {e}");
        return;
    }
    let answering = Arc::new(AtomicUsize::new(0));
    let mut waiting = Waiting::default();
    loop {
        let listener_ready = match waiting.wait(listener) {
            Ok(ready) => ready,
            Err(e) => {
                eprintln!("wtgate: admin listener: poll failed: {e}");
                std::thread::sleep(ACCEPT_BACKOFF);
                false
            }
        };
        if stop.load(Ordering::SeqCst) {
            return;
        }
        // Bytes that came in are read before newcomers can push anyone out.
        for done in waiting.read_ready() {
            dispatch(done, ctx, &answering);
        }
        waiting.expire(Instant::now());
        if listener_ready {
            for done in accept_all(listener, &mut waiting) {
                dispatch(done, ctx, &answering);
            }
        }
    }
}

/// Accepts every connection the listener has queued (at most [`MAX_WAITING`] per round, so
/// that the waiting ones are read in between); returns the requests already whole.
fn accept_all(listener: &TcpListener, waiting: &mut Waiting) -> Vec<Conn> {
    let mut done = Vec::new();
    for _ in 0..MAX_WAITING {
        match listener.accept() {
            Ok((stream, peer)) => done.extend(waiting.admit(stream, peer)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("wtgate: admin listener: accept failed: {e}");
                // Out of descriptors: the longest-waiting connection gives its own back.
                done.extend(waiting.evict(0));
                std::thread::sleep(ACCEPT_BACKOFF);
                break;
            }
        }
    }
    done
}

/// A connection and what it has sent so far.
struct Conn {
    stream: TcpStream,
    peer: IpAddr,
    deadline: Instant,
    partial: Partial,
}

/// The connections waiting for their request, the longest-waiting first.
#[derive(Default)]
struct Waiting {
    conns: VecDeque<Conn>,
}

impl Waiting {
    /// Waits until the listener or a waiting connection is readable, or the first deadline;
    /// marks the readable connections and says whether the listener is.
    fn wait(&mut self, listener: &TcpListener) -> io::Result<bool> {
        let mut fds: Vec<libc::pollfd> = std::iter::once(listener.as_raw_fd())
            .chain(self.conns.iter().map(|c| c.stream.as_raw_fd()))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let timeout = self.conns.iter().map(|c| c.deadline).min().map_or(-1, |d| {
            let left = d.saturating_duration_since(Instant::now());
            // Rounded up, so that the deadline has passed when the wait ends.
            i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
        });
        let nfds = libc::nfds_t::try_from(fds.len()).unwrap_or(libc::nfds_t::MAX);
        // SAFETY: `fds` is a live, exclusively borrowed buffer of `nfds` initialized pollfd
        // structs for the whole call, which writes only their `revents`.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), nfds, timeout) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            };
        }
        for (conn, fd) in self.conns.iter_mut().zip(&fds[1..]) {
            conn.partial.ready = fd.revents != 0;
        }
        Ok(fds[0].revents != 0)
    }

    /// Reads every connection marked readable; returns those whose request is whole (or whose
    /// answer is an error), and drops those that went away.
    fn read_ready(&mut self) -> Vec<Conn> {
        let mut done = Vec::new();
        let mut i = 0;
        while i < self.conns.len() {
            let conn = &mut self.conns[i];
            if !std::mem::take(&mut conn.partial.ready) {
                i += 1;
                continue;
            }
            match conn.partial.read_from(&mut conn.stream) {
                Step::More => i += 1,
                Step::Gone => drop(self.conns.remove(i)),
                Step::Done => done.extend(self.conns.remove(i)),
            }
        }
        done
    }

    /// Answers 408 to, and closes, the connections whose time is up.
    fn expire(&mut self, now: Instant) {
        self.conns.retain(|c| {
            if c.deadline > now {
                return true;
            }
            let why = format!(
                "the request took too long: send it whole within {} s of connecting",
                REQUEST_LIMIT.as_secs()
            );
            refuse(&c.stream, &Reply::error(408, &why));
            false
        });
    }

    /// Takes a new connection in, first making room if its address, or the list, is at its cap;
    /// returns it at once if its request is already whole.
    fn admit(&mut self, stream: TcpStream, peer: SocketAddr) -> Vec<Conn> {
        let peer = peer.ip().to_canonical();
        let mut done = Vec::new();
        if stream.set_nonblocking(true).is_err() {
            return done;
        }
        let peers: Vec<IpAddr> = self.conns.iter().map(|c| c.peer).collect();
        if let Some(i) = victim(&peers, peer) {
            done.extend(self.evict(i));
        }
        let mut conn = Conn {
            stream,
            peer,
            deadline: Instant::now() + REQUEST_LIMIT,
            partial: Partial::default(),
        };
        // Its request may be there already: nothing is lost by looking.
        match conn.partial.read_from(&mut conn.stream) {
            Step::More => self.conns.push_back(conn),
            Step::Gone => {}
            Step::Done => done.push(conn),
        }
        done
    }

    /// Closes the `i`th connection to make room. One whose request turns out to have arrived
    /// meanwhile is not silent: it is returned, to be answered.
    fn evict(&mut self, i: usize) -> Option<Conn> {
        let mut conn = self.conns.remove(i)?;
        match conn.partial.read_from(&mut conn.stream) {
            Step::Done => Some(conn),
            Step::Gone => None,
            Step::More => {
                let why = "too many connections are waiting to send their request, and this one \
                           had waited longest: send the request as soon as you connect";
                refuse(&conn.stream, &Reply::busy(why));
                None
            }
        }
    }
}

/// Which waiting connection makes room for a newcomer from `peer`, given the waiting ones'
/// addresses, the longest-waiting first: none below the caps; at [`MAX_WAITING_PER_CLIENT`]
/// from `peer`, the longest-waiting of `peer`'s own; at [`MAX_WAITING`], the longest-waiting.
fn victim(waiting: &[IpAddr], peer: IpAddr) -> Option<usize> {
    let mut own = waiting.iter().enumerate().filter(|(_, p)| **p == peer);
    if own.clone().count() >= MAX_WAITING_PER_CLIENT {
        return own.next().map(|(i, _)| i);
    }
    (waiting.len() >= MAX_WAITING).then_some(0)
}

/// Hands a whole request (or the error answer to a bad one) to a thread of its own, or answers
/// 503 at once when [`MAX_ANSWERING`] are being answered.
fn dispatch(conn: Conn, ctx: &Arc<Ctx>, answering: &Arc<AtomicUsize>) {
    if answering.fetch_add(1, Ordering::SeqCst) >= MAX_ANSWERING {
        answering.fetch_sub(1, Ordering::SeqCst);
        let why = "the admin listener is answering as many requests as it takes: try again";
        refuse(&conn.stream, &Reply::busy(why));
        return;
    }
    let (ctx, count) = (ctx.clone(), answering.clone());
    let spawned = std::thread::Builder::new()
        .name("wtgate-admin-conn".into())
        .spawn(move || {
            answer(conn, &ctx);
            count.fetch_sub(1, Ordering::SeqCst);
        });
    if spawned.is_err() {
        answering.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One whole request: its answer, written with a blocking socket (the client has
/// [`WRITE_LIMIT`] to take it), then the close.
fn answer(conn: Conn, ctx: &Ctx) {
    let Conn {
        mut stream,
        partial,
        ..
    } = conn;
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(WRITE_LIMIT));
    let reply = match partial.finish(stream.local_addr().ok().map(|a| a.ip())) {
        Ok(req) => respond(ctx, &req),
        Err(reply) => reply,
    };
    let _ = stream.write_all(&reply.encode());
    let _ = stream.shutdown(Shutdown::Write);
}

/// An answer written without waiting (it is small, and the socket's buffer is empty), then
/// the close: for refusals made on the accepting thread, which must never block.
fn refuse(stream: &TcpStream, reply: &Reply) {
    let _ = stream.set_nonblocking(true);
    let _ = (&*stream).write_all(&reply.encode());
    let _ = stream.shutdown(Shutdown::Write);
}

/// What reading a connection came to.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// More is to come.
    More,
    /// The request is whole, or bad: [`Partial::finish`] says which.
    Done,
    /// The client went away before sending anything, or the socket failed.
    Gone,
}

/// A request as it arrives: the bytes so far, and how far they were parsed.
#[derive(Default)]
struct Partial {
    buf: Vec<u8>,
    /// Bytes of `buf` already looked at for the end of the head.
    scanned: usize,
    head: Option<(RequestHead, BodyFramer)>,
    /// Bytes of `buf` the body framer has taken, from the end of the head.
    at: usize,
    body: Vec<u8>,
    continued: bool,
    /// The answer to a bad request, once it is known.
    bad: Option<Reply>,
    /// The last wait found the socket readable.
    ready: bool,
}

impl Partial {
    /// Reads what the (non-blocking) socket has, until it would block or the request is done.
    fn read_from(&mut self, stream: &mut TcpStream) -> Step {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk) {
                Ok(0) if self.buf.is_empty() => return Step::Gone,
                Ok(0) => {
                    let part = if self.head.is_some() { "body" } else { "head" };
                    let why = format!("the request {part} was cut short");
                    self.bad = Some(Reply::error(400, &why));
                    return Step::Done;
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    match self.parse(stream) {
                        Ok(false) => {}
                        Ok(true) => return Step::Done,
                        Err(reply) => {
                            self.bad = Some(reply);
                            return Step::Done;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::More,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Step::Gone,
            }
        }
    }

    /// Parses what came: `Ok(true)` once the request is whole.
    fn parse(&mut self, stream: &mut TcpStream) -> Result<bool, Reply> {
        if self.head.is_none() {
            let limits = h1::Limits::default();
            // Only a new line can end the head: parse when one came (or the head is too large,
            // which the parser says), so that a head sent a byte at a time costs no more to
            // read than one sent whole.
            let from = self.scanned.saturating_sub(2);
            let may_end = head_may_end(&self.buf[from..]);
            self.scanned = self.buf.len();
            if !may_end && self.buf.len() <= limits.max_head_bytes {
                return Ok(false);
            }
            match h1::parse_request(&self.buf, &limits) {
                Ok(Some(head)) => {
                    self.at = head.head_len;
                    let framer = BodyFramer::new(head.framing);
                    self.head = Some((head, framer));
                }
                Ok(None) => return Ok(false),
                Err(e) => return Err(Reply::error(e.status(), &e.to_string())),
            }
        }
        let Some((head, framer)) = &mut self.head else {
            return Ok(false);
        };
        let body = &mut self.body;
        let adv = framer
            .advance_with(&self.buf[self.at..], &mut |data: &[u8]| {
                body.extend_from_slice(data)
            })
            .map_err(|e| Reply::error(400, &format!("bad request body: {e}")))?;
        self.at += adv.consumed;
        // Bytes the framer has not taken yet (a chunk-size line cut in two) count too.
        if self.body.len() > MAX_BODY || self.buf.len() - head.head_len > 2 * MAX_BODY {
            return Err(Reply::error(413, "the request body is too large"));
        }
        if !adv.done && head.expect_continue && !self.continued {
            self.continued = true;
            let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        Ok(adv.done)
    }

    /// The whole request, or the answer to a bad one. `local`: the address the client reached.
    fn finish(self, local: Option<IpAddr>) -> Result<Request, Reply> {
        if let Some(reply) = self.bad {
            return Err(reply);
        }
        let Some((head, _)) = self.head else {
            return Err(Reply::error(400, "the request head was cut short"));
        };
        Ok(Request {
            buf: self.buf,
            head,
            body: self.body,
            local,
        })
    }
}

/// Whether `bytes` hold an empty line's end (`\n\n` or `\n\r\n`), which a head ends with.
fn head_may_end(bytes: &[u8]) -> bool {
    bytes
        .windows(2)
        .enumerate()
        .any(|(i, w)| w == b"\n\n" || (w == b"\n\r" && bytes.get(i + 2) == Some(&b'\n')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_can_only_end_after_an_empty_line() {
        assert!(head_may_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(head_may_end(b"\n\n"));
        assert!(head_may_end(b"\n\r\n"));
        assert!(!head_may_end(b"GET / HTTP/1.1\r\nHost: a\r\n"));
        assert!(!head_may_end(b"\n\r"));
        assert!(!head_may_end(b""));
    }

    #[test]
    fn the_longest_waiting_makes_room_from_its_own_address_first() {
        let ip = |i: usize| IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]);
        let me = ip(5000);
        // Below both caps: nobody goes.
        let mut waiting: Vec<IpAddr> = (0..MAX_WAITING - 1).map(ip).collect();
        assert_eq!(victim(&waiting, me), None);
        // The list is full: the longest-waiting, whoever it is.
        waiting.push(ip(1000));
        assert_eq!(victim(&waiting, me), Some(0));
        // A client at its own cap pushes out its own longest-waiting, however full the list.
        let mut waiting: Vec<IpAddr> = (0..10).map(ip).collect();
        waiting.extend(std::iter::repeat_n(me, MAX_WAITING_PER_CLIENT - 1));
        assert_eq!(victim(&waiting, me), None);
        waiting.insert(3, me);
        assert_eq!(victim(&waiting, me), Some(3));
        assert_eq!(
            victim(&waiting, ip(1)),
            None,
            "another client is not at its cap"
        );
    }

    /// A head sent a byte at a time is parsed once whole, and the body after it is taken.
    #[test]
    fn a_request_arriving_in_pieces_is_whole_once_its_body_is() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let raw = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\ndrain";
        let mut p = Partial::default();
        for (i, byte) in raw.iter().enumerate() {
            client.write_all(&[*byte]).unwrap();
            // Blocking reads: each byte is there when `read_from` looks.
            server.set_nonblocking(false).unwrap();
            let mut one = [0u8; 1];
            server.read_exact(&mut one).unwrap();
            p.buf.extend_from_slice(&one);
            let whole = p.parse(&mut server).unwrap();
            assert_eq!(whole, i == raw.len() - 1, "after byte {i}");
        }
        let req = p.finish(None).unwrap();
        assert_eq!(req.body, b"drain");
        assert_eq!(req.method(), b"POST");
    }

    /// A client that waits for `100 Continue` before its body gets it once the head is in.
    #[test]
    fn a_client_that_expects_100_continue_gets_it() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let head =
            b"POST /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n";
        let mut p = Partial {
            buf: head.to_vec(),
            ..Partial::default()
        };
        assert!(!p.parse(&mut server).unwrap());
        let mut interim = [0u8; 25];
        client.read_exact(&mut interim).unwrap();
        assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
        p.buf.extend_from_slice(b"drain");
        assert!(p.parse(&mut server).unwrap());
        assert_eq!(p.finish(None).unwrap().body, b"drain");
    }
}
