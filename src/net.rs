//! The thin I/O shell: everything wtgate asks of its async runtime (monoio on io_uring) besides
//! starting it (`engine/shard_thread.rs`): a cloneable socket handle, connecting, timers,
//! spawning, blocking work, channels to the other shards, background tasks, and read buffers.
//! Nothing else in the crate names the runtime, so replacing it means replacing this file and the
//! shard thread.
//!
//! **Owned buffers.** io_uring reads into and writes from memory the kernel holds on to until the
//! operation completes, even when the future that started it is dropped; monoio therefore takes
//! buffers by value and hands them back with the result (a dropped operation keeps its buffer until
//! the kernel is done, then frees it). [`InBuf`] lends its pooled buffer to each read and write
//! this way, so nothing is copied, and heads go out as owned `Vec`s ([`Sock::write_vec`]).
//!
//! **Dropped reads lose bytes.** A read whose future is dropped may still complete in the kernel,
//! and what it read is gone. So a pending read is only ever dropped where its connection ends
//! anyway (see [`crate::proxy`]); in particular, the tunnel's idle limit is a watchdog that shuts
//! the sockets, not a timeout around each read.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_lite::future;
use monoio::buf::{IoBuf, SliceMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::time::TimeDriver;
use monoio::{IoUringDriver, Runtime, RuntimeBuilder};

mod splice;
pub mod tls;
pub use splice::{PIPE_LEN, Pipe, PipePool, yield_once};

/// An accepted or connected TCP stream, as the runtime hands it over.
pub use monoio::net::TcpStream;

type ReadHalf = OwnedReadHalf<TcpStream>;
type WriteHalf = OwnedWriteHalf<TcpStream>;

/// A TCP connection that one task may read while another writes to it (the client socket: the
/// body pump reads while the response relay writes), and that other places keep a clone of to
/// shut it down (the shard's table of open connections, the pool).
///
/// monoio's `read` and `write` take `&mut self` for as long as the operation runs, so the stream
/// is split into its two halves (monoio's own `into_split`, which declares them independent), and
/// each half sits in a `Cell` of its own. An operation *takes* its half out for its duration and a
/// [`Lent`] guard puts it back when the operation ends or its future is dropped. No `RefCell` is
/// borrowed across an `.await`, so no task can ever find a borrow held by another: by
/// construction, a second reader (or writer) at the same time finds the cell empty and gets an
/// error, never a panic. The proxy never does that — each socket is read by the one task that owns
/// its connection, and written by at most one future at a time — so the error is a safety net.
#[derive(Clone)]
pub struct Sock(Rc<Halves>);

struct Halves {
    reader: Cell<Option<ReadHalf>>,
    writer: Cell<Option<WriteHalf>>,
    /// The descriptor, for shutdown(2) and peeks. It stays open as long as this struct lives: the
    /// halves own it, and a lent half always comes back (or is leaked along with its guard).
    fd: RawFd,
    /// Set once splice(2) has made the socket non-blocking (the ring's operations do not mind).
    nonblocking: Cell<bool>,
    /// Set once a TLS handshake on it is done (`tls::handshake`): from then on every read and
    /// write goes through it. Boxed: a plain connection pays one pointer.
    tls: std::cell::OnceCell<Box<tls::TlsState>>,
}

/// A half taken out of its cell for one operation; dropping the guard puts it back.
struct Lent<'a, H> {
    home: &'a Cell<Option<H>>,
    half: Option<H>,
}

impl<'a, H> Lent<'a, H> {
    fn take(home: &'a Cell<Option<H>>) -> Lent<'a, H> {
        Lent {
            home,
            half: home.take(),
        }
    }
}

impl<H> Drop for Lent<'_, H> {
    fn drop(&mut self) {
        if let Some(half) = self.half.take() {
            self.home.set(Some(half));
        }
    }
}

fn busy() -> io::Error {
    io::Error::other("another operation of the same kind is in flight on this socket")
}

impl Sock {
    pub fn new(stream: TcpStream) -> Sock {
        let fd = stream.as_raw_fd();
        let (reader, writer) = stream.into_split();
        Sock(Rc::new(Halves {
            reader: Cell::new(Some(reader)),
            writer: Cell::new(Some(writer)),
            fd,
            nonblocking: Cell::new(false),
            tls: std::cell::OnceCell::new(),
        }))
    }

    /// The descriptor, non-blocking from here on, for splice(2). monoio's io_uring reads, writes
    /// and polls work the same on a non-blocking socket; the flag stays for the socket's life.
    fn splice_fd(&self) -> RawFd {
        if !self.0.nonblocking.replace(true) {
            // SAFETY: fcntl(2) on a descriptor this handle keeps open; it touches no memory.
            unsafe {
                let flags = libc::fcntl(self.0.fd, libc::F_GETFL);
                if flags >= 0 {
                    libc::fcntl(self.0.fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
                }
            }
        }
        self.0.fd
    }

    /// One read into `buf` (one recv on the ring): what is there, or the next bytes to come.
    async fn read_into(&self, buf: SliceMut<Box<[u8]>>) -> (io::Result<usize>, Box<[u8]>) {
        if let Some(state) = self.0.tls.get() {
            let (begin, end) = (buf.begin(), buf.end());
            // Boxed, so that a plain connection's task is not sized by the TLS read's state.
            return Box::pin(tls::read(self, state, buf.into_inner(), begin, end)).await;
        }
        let mut lent = Lent::take(&self.0.reader);
        let Some(half) = lent.half.as_mut() else {
            return (Err(busy()), buf.into_inner());
        };
        let (r, buf) = half.read(buf).await;
        (r, buf.into_inner())
    }

    /// Waits until the socket has bytes to read (or EOF, or an error), without taking any: one poll
    /// on the ring, and no buffer held meanwhile. On TLS, until a read would find plaintext (or
    /// the end).
    pub(crate) async fn readable(&self) -> io::Result<()> {
        if let Some(state) = self.0.tls.get() {
            return Box::pin(tls::readable(self, state)).await;
        }
        self.readable_raw().await
    }

    /// `readable` of the socket itself, TLS or not.
    async fn readable_raw(&self) -> io::Result<()> {
        let lent = Lent::take(&self.0.reader);
        let Some(half) = lent.half.as_ref() else {
            return Err(busy());
        };
        // SAFETY: a shared reference to the stream inside the read half, which this task holds
        // exclusively (taken out of its cell). The write half may meanwhile be in a write whose
        // future was made from a `&mut` to the same stream; monoio's ops use that reference only
        // to clone the descriptor when they are created, and monoio's own halves make the same
        // shared access (`peer_addr`) while the other half writes.
        let stream = unsafe { &*half.0.get() };
        stream.readable(true).await
    }

    /// Waits until the socket has room to write (or an error): one poll on the ring.
    async fn writable(&self) -> io::Result<()> {
        let lent = Lent::take(&self.0.writer);
        let Some(half) = lent.half.as_ref() else {
            return Err(busy());
        };
        // SAFETY: as in `readable`, with the halves' roles swapped: this task holds the write
        // half exclusively, and monoio's ops use the stream only to clone its descriptor.
        let stream = unsafe { &*half.0.get() };
        stream.writable(true).await
    }

    /// Writes all of `buf`, handing it back with the result (encrypted, on TLS).
    pub async fn write_all<B: IoBuf>(&self, buf: B) -> (io::Result<()>, B) {
        if let Some(state) = self.0.tls.get() {
            return Box::pin(tls::write_all(self, state, buf)).await;
        }
        self.write_raw(buf).await
    }

    /// `write_all` to the socket itself, TLS or not.
    async fn write_raw<B: IoBuf>(&self, buf: B) -> (io::Result<()>, B) {
        let mut lent = Lent::take(&self.0.writer);
        let Some(half) = lent.half.as_mut() else {
            return (Err(busy()), buf);
        };
        let (r, buf) = half.write_all(buf).await;
        (r.map(|_| ()), buf)
    }

    /// Writes all of `v`, which is lent to the write and comes back; if the write is given up (its
    /// future dropped, the connection ending), `v` is left empty.
    pub async fn write_vec(&self, v: &mut Vec<u8>) -> io::Result<()> {
        let (r, back) = self.write_all(std::mem::take(v)).await;
        *v = back;
        r
    }

    /// Sends FIN: the peer reads EOF, and can still send to us. On TLS, `close_notify` first.
    pub fn shutdown_write(&self) {
        self.tls_goodbye();
        let _ = socket_shutdown(self.0.fd, libc::SHUT_WR);
    }

    /// Closes both directions at once, even if other clones of this handle are still alive: a
    /// pending read on it completes (with EOF), which is how a connection's task learns it is over.
    pub fn shutdown_both(&self) {
        self.tls_goodbye();
        let _ = socket_shutdown(self.0.fd, libc::SHUT_RDWR);
    }

    /// What an idle backend connection holds, looked at without taking it (a non-blocking peek
    /// of up to `peek.len()` bytes, which land in `peek`): a pooled connection is fit for reuse
    /// only if [`Quiet::Quiet`].
    pub fn quiet(&self, peek: &mut [u8]) -> Quiet {
        // SAFETY: recv into `peek`, a valid buffer of peek.len() bytes borrowed for the call, on
        // a descriptor this handle keeps open.
        let n = unsafe {
            libc::recv(
                self.0.fd,
                peek.as_mut_ptr().cast(),
                peek.len(),
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        match n {
            0 => Quiet::Closed,
            n if n > 0 => Quiet::Spoke(n as usize),
            _ if io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock => Quiet::Quiet,
            _ => Quiet::Closed,
        }
    }
}

/// What [`Sock::quiet`] found on an idle connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quiet {
    /// Nothing to read, still open.
    Quiet,
    /// The peer closed (or reset) it.
    Closed,
    /// The peer sent bytes nobody asked for (this many were peeked, at most the buffer).
    Spoke(usize),
}

fn socket_shutdown(fd: RawFd, how: libc::c_int) -> io::Result<()> {
    // SAFETY: shutdown(2) on a descriptor; it does not touch memory.
    if unsafe { libc::shutdown(fd, how) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Runs `f`, failing with `TimedOut` if it takes longer than `d` (`f` is then dropped: see the
/// module doc on dropped reads). One entry in monoio's timer wheel, nothing allocated.
///
/// Not an `async fn`: that would store `f` twice (as its argument and as the awaited future) in
/// every connection's task, and a connection task is sized by its largest state.
pub fn timeout<T, F: Future<Output = io::Result<T>>>(d: Duration, f: F) -> Timeout<F> {
    Timeout(monoio::time::timeout(d, f))
}

/// The future of [`timeout`].
pub struct Timeout<F>(monoio::time::Timeout<F>);

impl<T, F: Future<Output = io::Result<T>>> Future for Timeout<F> {
    type Output = io::Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        // SAFETY: structural pinning of the only field: `Timeout` never moves it out, has no
        // `Drop` of its own, and is `Unpin` only when the field is.
        let inner = unsafe { self.map_unchecked_mut(|t| &mut t.0) };
        match inner.poll(cx) {
            Poll::Ready(Ok(r)) => Poll::Ready(r),
            Poll::Ready(Err(_)) => Poll::Ready(Err(io::ErrorKind::TimedOut.into())),
            Poll::Pending => Poll::Pending,
        }
    }
}

pub async fn sleep(d: Duration) {
    monoio::time::sleep(d).await;
}

/// Runs `f` on this shard's thread, on its own, until it ends.
pub fn spawn(f: impl Future<Output = ()> + 'static) {
    drop(monoio::spawn(f));
}

/// Runs `f` off the shard's thread (a resolver lookup, say) and waits for its result; an error if
/// no thread could be started for it.
pub async fn spawn_blocking<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> io::Result<R> {
    monoio::spawn_blocking(f)
        .await
        .map_err(|_| io::Error::other("no thread could be started for a blocking call"))
}

/// Where `spawn_blocking` runs its work: a thread per call. Only re-resolutions of backend host
/// names use it, a few per failing backend and check interval, so a pool of idle threads would
/// cost more than it saves.
pub struct ThreadPerCall;

impl monoio::blocking::ThreadPool for ThreadPerCall {
    fn schedule_task(&self, task: monoio::blocking::BlockingTask) {
        // If the thread cannot start, the closure and the task in it are dropped, and monoio
        // hands the waiter `Canceled`.
        let _ = std::thread::Builder::new()
            .name("wtgate-blocking".into())
            .spawn(move || task.run());
    }
}

/// Connects to `addr` within `limit`, with Nagle off (a proxy writes whole messages).
pub async fn connect(addr: std::net::SocketAddr, limit: Duration) -> io::Result<Sock> {
    let stream = timeout(limit, TcpStream::connect_addr(addr)).await?;
    let _ = stream.set_nodelay(true);
    Ok(Sock::new(stream))
}

/// A shard-local signal that any number of tasks can wait for: once ([`Signal::wait`], ready
/// for good after the first [`Signal::fire`]) or for its next firing ([`Signal::next`]).
#[derive(Default)]
pub struct Signal {
    fired: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
}

impl Signal {
    pub fn fire(&self) {
        self.fired.set(self.fired.get() + 1);
        for w in self.waiters.take() {
            w.wake();
        }
    }

    /// Ends once the signal has fired, at any time.
    pub async fn wait(&self) {
        self.fired_after(0).await
    }

    /// Ends at the next firing after this call.
    pub fn next(&self) -> impl Future<Output = ()> + '_ {
        self.fired_after(self.fired.get())
    }

    fn fired_after(&self, seen: u64) -> impl Future<Output = ()> + '_ {
        future::poll_fn(move |cx| {
            if self.fired.get() != seen {
                return Poll::Ready(());
            }
            let mut waiters = self.waiters.borrow_mut();
            if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                waiters.push(cx.waker().clone());
            }
            Poll::Pending
        })
    }
}

/// Tasks that run as long as the shard does (gossip, checks, the pool sweeper) and end, all of
/// them, when it stops: nothing of a shard outlives its runtime.
#[derive(Default)]
pub struct Background {
    stop: Rc<Signal>,
    tasks: Vec<monoio::task::JoinHandle<()>>,
}

impl Background {
    pub fn spawn(&mut self, f: impl Future<Output = ()> + 'static) {
        let stop = self.stop.clone();
        // `f` goes into the combinator as it is: wrapped in an async block, it would be stored
        // twice in the task.
        let stopped = async move { stop.wait().await };
        self.tasks.push(monoio::spawn(future::or(f, stopped)));
    }

    /// Ends every task (each at its next await) and waits until they have.
    pub async fn stop(self) {
        self.stop.fire();
        for task in self.tasks {
            task.await;
        }
    }
}

/// One shard's end of the channels between shards: its inbox, and a way into every other's.
pub struct MeshEnd<T> {
    inbox: flume::Receiver<T>,
    others: Vec<flume::Sender<T>>,
}

/// The channels between `n` shards, `room` messages each: one inbox per shard that all the others
/// send to (bounded, MPSC, woken across threads through monoio's `sync` support).
pub fn mesh<T>(n: usize, room: usize) -> Vec<MeshEnd<T>> {
    let (senders, inboxes): (Vec<_>, Vec<_>) = (0..n).map(|_| flume::bounded(room)).unzip();
    inboxes
        .into_iter()
        .enumerate()
        .map(|(me, inbox)| MeshEnd {
            inbox,
            others: (senders.iter().enumerate())
                .filter(|&(peer, _)| peer != me)
                .map(|(_, s)| s.clone())
                .collect(),
        })
        .collect()
}

impl<T: Copy + Send + 'static> MeshEnd<T> {
    /// The sending side, and the receiving one.
    pub fn split(self) -> (Peers<T>, Inbox<T>) {
        let peers = self.others.into_iter().map(|tx| Peer {
            tx,
            backlog: RefCell::new(VecDeque::new()),
        });
        let peers = Peers(Rc::new(PeersInner {
            peers: peers.collect(),
            flusher: Cell::new(None),
        }));
        (peers, Inbox(self.inbox))
    }
}

/// A shard's inbox of messages from the other shards.
pub struct Inbox<T>(flume::Receiver<T>);

impl<T> Inbox<T> {
    /// The next message; `None` once no other shard can send any more.
    pub async fn recv(&self) -> Option<T> {
        self.0.recv_async().await.ok()
    }
}

/// Channels to every other shard of the engine, for messages of type `T`.
#[derive(Clone)]
pub struct Peers<T>(Rc<PeersInner<T>>);

struct PeersInner<T> {
    peers: Vec<Peer<T>>,
    /// The task of [`Peers::flush_backlogs`], while it waits for a backlog.
    flusher: Cell<Option<Waker>>,
}

struct Peer<T> {
    tx: flume::Sender<T>,
    /// Messages that found the peer's inbox full, in order; sent before any later one.
    backlog: RefCell<VecDeque<T>>,
}

impl<T: Copy + Send + 'static> Peers<T> {
    /// Sends `msg` to every other shard. A full inbox (a burst of messages) must not lose one, nor
    /// let a later message overtake it (a stale `Down` after an `Up` would stick): it waits in
    /// that peer's backlog, which [`Peers::flush_backlogs`] sends on in order as room comes.
    pub fn broadcast(&self, msg: T) {
        for peer in &self.0.peers {
            let mut backlog = peer.backlog.borrow_mut();
            if !backlog.is_empty() {
                backlog.push_back(msg);
                continue;
            }
            if let Err(flume::TrySendError::Full(msg)) = peer.tx.try_send(msg) {
                backlog.push_back(msg);
                if let Some(w) = self.0.flusher.take() {
                    w.wake();
                }
            }
        }
    }

    /// Sends the backlogs on as the peers make room, for as long as the shard runs.
    pub async fn flush_backlogs(&self) {
        loop {
            future::poll_fn(|cx| {
                let pending = self.0.peers.iter().any(|p| !p.backlog.borrow().is_empty());
                if pending {
                    return Poll::Ready(());
                }
                self.0.flusher.set(Some(cx.waker().clone()));
                Poll::Pending
            })
            .await;
            for peer in &self.0.peers {
                loop {
                    // No borrow is held across the send: `broadcast` appends meanwhile.
                    let next = peer.backlog.borrow().front().copied();
                    let Some(msg) = next else { break };
                    if peer.tx.send_async(msg).await.is_err() {
                        // That shard has stopped: nothing more reaches it.
                        peer.backlog.borrow_mut().clear();
                        break;
                    }
                    peer.backlog.borrow_mut().pop_front();
                }
            }
        }
    }
}

/// Spare values a shard reuses instead of allocating them anew (read buffers, heads), that a
/// burst does not leave behind for good: [`FreeList::decay`], called every few hundred
/// milliseconds, frees as many as were never taken since its last call.
pub struct FreeList<T> {
    free: RefCell<Vec<T>>,
    /// The fewest spares there were since the last [`FreeList::decay`]: that many were not needed.
    low: Cell<usize>,
}

impl<T> Default for FreeList<T> {
    fn default() -> Self {
        FreeList {
            free: RefCell::new(Vec::new()),
            low: Cell::new(0),
        }
    }
}

impl<T> FreeList<T> {
    pub fn take(&self) -> Option<T> {
        let mut free = self.free.borrow_mut();
        let value = free.pop();
        self.low.set(self.low.get().min(free.len()));
        value
    }

    /// Keeps `value` for reuse if fewer than `max` are kept; false if it was dropped.
    pub fn give(&self, value: T, max: usize) -> bool {
        let mut free = self.free.borrow_mut();
        let kept = free.len() < max;
        if kept {
            free.push(value);
        }
        kept
    }

    /// Frees the spares that were not needed since the last call; true if any were.
    pub fn decay(&self) -> bool {
        let mut free = self.free.borrow_mut();
        let unused = self.low.get().min(free.len());
        if unused > 0 {
            let keep = free.len() - unused;
            free.truncate(keep);
            free.shrink_to_fit();
        }
        self.low.set(free.len());
        unused > 0
    }

    #[cfg(test)]
    fn kept(&self) -> usize {
        self.free.borrow().len()
    }
}

/// A shard's spare read buffers, all of one size, so that idle connections hold none: a keep-alive
/// connection waiting for its next request costs its socket and its task, not 2 × 32 KiB.
pub struct BufPool {
    size: usize,
    max_free: usize,
    free: FreeList<Box<[u8]>>,
    /// Set when a buffer was freed because the spares were full: memory worth trimming.
    overflowed: Cell<bool>,
}

impl BufPool {
    pub fn new(size: usize, max_free: usize) -> BufPool {
        BufPool {
            size,
            max_free,
            free: FreeList::default(),
            overflowed: Cell::new(false),
        }
    }

    fn take(&self) -> Box<[u8]> {
        self.free
            .take()
            .unwrap_or_else(|| vec![0; self.size].into_boxed_slice())
    }

    /// Frees the spares that no read needed since the last call: a burst's buffers do not stay
    /// for good. True if any were freed.
    pub fn decay(&self) -> bool {
        self.free.decay()
    }

    fn give(&self, buf: Box<[u8]>) {
        if !self.free.give(buf, self.max_free) {
            self.overflowed.set(true);
        }
    }

    /// True once after buffers were freed beyond the spares.
    pub fn take_overflowed(&self) -> bool {
        self.overflowed.replace(false)
    }
}

/// A read buffer taken from a [`BufPool`] when bytes come and given back when drained:
/// bytes `start..end` are unread input.
///
/// Reads and writes lend the buffer to the ring for their duration. Meanwhile this `InBuf` is
/// empty and holds none; should the operation be given up (its connection ending), it stays so —
/// consistent, its unread bytes gone with the connection.
pub struct InBuf {
    pool: Rc<BufPool>,
    buf: Option<Box<[u8]>>,
    start: usize,
    end: usize,
}

impl InBuf {
    pub fn new(pool: Rc<BufPool>) -> InBuf {
        InBuf {
            pool,
            buf: None,
            start: 0,
            end: 0,
        }
    }

    pub fn data(&self) -> &[u8] {
        match &self.buf {
            Some(b) => &b[self.start..self.end],
            None => &[],
        }
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
        self.start == 0 && self.end == self.pool.size
    }

    /// Gives the buffer back to the pool if it holds no unread bytes.
    pub fn release(&mut self) {
        if self.is_empty()
            && let Some(b) = self.buf.take()
        {
            self.pool.give(b);
        }
    }

    /// Takes the buffer (and the unread range) out for an operation; `put_back` returns them.
    fn lend(&mut self) -> (Box<[u8]>, usize, usize) {
        let buf = self.buf.take().unwrap_or_else(|| self.pool.take());
        let range = (self.start, self.end);
        (self.start, self.end) = (0, 0);
        (buf, range.0, range.1)
    }

    fn put_back(&mut self, buf: Box<[u8]>, start: usize, end: usize) {
        self.buf = Some(buf);
        (self.start, self.end) = (start, end);
    }

    /// Reads once from `sock` after the unread bytes; 0 means EOF (or a full buffer, which callers
    /// rule out with `is_full`).
    pub async fn read_from(&mut self, sock: &Sock) -> io::Result<usize> {
        let (mut buf, mut start, mut end) = self.lend();
        if end == buf.len() && start > 0 {
            buf.copy_within(start..end, 0);
            (start, end) = (0, end - start);
        }
        let len = buf.len();
        let (r, buf) = sock.read_into(SliceMut::new(buf, end, len)).await;
        let n = *r.as_ref().unwrap_or(&0);
        self.put_back(buf, start, end + n);
        r
    }

    /// Like `read_from` on an empty buffer, but holds no buffer while it waits: it waits for the
    /// socket to be readable first, and takes a buffer from the pool only once bytes are there.
    pub async fn read_idle(&mut self, sock: &Sock) -> io::Result<usize> {
        if !self.is_empty() {
            return self.read_from(sock).await;
        }
        self.release();
        sock.readable().await?;
        self.read_from(sock).await
    }

    /// Writes the first `n` unread bytes to `sock` (they stay unread: callers `consume` them).
    pub async fn write_to(&mut self, sock: &Sock, n: usize) -> io::Result<()> {
        debug_assert!(n <= self.end - self.start);
        if n == 0 {
            return Ok(());
        }
        let (buf, start, end) = self.lend();
        let (r, slice) = sock.write_all(buf.slice(start..start + n)).await;
        self.put_back(slice.into_inner(), start, end);
        r
    }
}

impl Drop for InBuf {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            self.pool.give(b);
        }
    }
}

/// Submission queue entries per ring (monoio's default). Operations in flight are not bounded by
/// it, only how many are handed to the kernel at once; monoio submits early when it fills.
pub const RING_ENTRIES: u32 = 1024;

/// The ring setups tried in order, best first, with the name logged for the one taken.
/// `COOP_TASKRUN` (5.19) runs completions' task work when the thread next enters the kernel
/// instead of interrupting it (glommio's rings lacked it: an IPI per completion from another
/// core); `SINGLE_ISSUER` (6.0) and `DEFER_TASKRUN` (6.1) go further: completions are processed
/// only when this thread asks for them, in one batch per turn of the runtime.
const RING_SETUPS: [(&str, bool, bool, bool); 4] = [
    // (name, coop_taskrun, single_issuer, defer_taskrun)
    ("COOP_TASKRUN|SINGLE_ISSUER|DEFER_TASKRUN", true, true, true),
    ("COOP_TASKRUN|SINGLE_ISSUER", true, true, false),
    ("COOP_TASKRUN", true, false, false),
    ("no setup flags", false, false, false),
];

pub type ShardRuntime = Runtime<TimeDriver<IoUringDriver>>;

/// A runtime for this thread (a shard's, or the bench's generator and backend), on the best ring setup the kernel takes, and that setup's name.
pub fn runtime() -> std::io::Result<(ShardRuntime, &'static str)> {
    let mut last_err = None;
    for (name, coop, single, defer) in RING_SETUPS {
        // monoio 0.2 builds on io-uring 0.6, hence the renamed dependency.
        let mut ring = io_uring_06::IoUring::builder();
        if coop {
            ring.setup_coop_taskrun();
        }
        if single {
            ring.setup_single_issuer();
        }
        if defer {
            ring.setup_defer_taskrun();
        }
        let built = RuntimeBuilder::<IoUringDriver>::new()
            .with_entries(RING_ENTRIES)
            .uring_builder(ring)
            .attach_thread_pool(Box::new(ThreadPerCall))
            .enable_timer()
            .build();
        match built {
            Ok(rt) => return Ok((rt, name)),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| std::io::Error::other("no io_uring setup worked")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spare_buffers_no_read_needed_go_back() {
        let pool = BufPool::new(8, 16);
        let bufs: Vec<_> = (0..3).map(|_| pool.take()).collect();
        bufs.into_iter().for_each(|b| pool.give(b));
        assert!(
            !pool.decay(),
            "the burst's spares were all in use since the last decay"
        );
        let one = pool.take();
        pool.give(one);
        assert!(pool.decay(), "two spares were not needed since");
        assert_eq!(pool.free.kept(), 1);
        assert!(pool.decay());
        assert_eq!(pool.free.kept(), 0);
        assert!(!pool.decay());
    }

    #[test]
    fn inbuf_consumes_and_resets() {
        let pool = Rc::new(BufPool::new(8, 4));
        let mut b = InBuf::new(pool.clone());
        b.buf = Some(pool.take());
        b.buf.as_mut().unwrap()[..5].copy_from_slice(b"hello");
        b.end = 5;
        b.consume(2);
        assert_eq!(b.data(), b"llo");
        b.consume(3);
        assert!(b.is_empty());
        assert_eq!((b.start, b.end), (0, 0));
        b.release();
        assert!(b.buf.is_none());
        assert_eq!(pool.free.kept(), 1);
    }
}
