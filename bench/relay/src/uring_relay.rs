//! The relay as one hand-written io_uring event loop on the `io-uring` crate 0.7, no runtime:
//!
//! - the ring is set up `SINGLE_ISSUER | DEFER_TASKRUN` (completions are posted only when this
//!   thread enters the kernel to wait for them: no task-work interrupts), falling back to
//!   `COOP_TASKRUN` and then to no flags on older kernels; the choice is logged;
//! - one multishot accept on the listener for the life of the process;
//! - per connection and direction, one multishot recv (armed once, not once per read) that picks
//!   16 KiB buffers from a provided-buffer ring (`IORING_REGISTER_PBUF_RING`) shared by all
//!   connections;
//! - each received buffer goes to the peer socket in a send SQE (one send in flight per direction,
//!   so bytes stay in order; a short send is resubmitted for the rest) and back to the buffer ring
//!   once sent;
//! - every SQE made while handling a turn's completions goes to the kernel in the one
//!   `submit_and_wait(1)` that starts the next turn.
//!
//! Flow control: a direction whose peer does not keep up holds at most `HIGH_WATER` buffers; past
//! that its multishot recv is cancelled and re-armed once the queue has drained to `LOW_WATER`.
//! When the shared buffers run out a recv ends with `ENOBUFS`. The direction then reads once into
//! a buffer of its own (allocated the first time), and waits for either that one to be sent or the
//! shared ring to get buffers back before it re-arms. The own buffer is what keeps a shared pool
//! from deadlocking: without it, buffers all queued towards peers that have stopped reading until
//! they can write (an echo server, say) would starve exactly the directions that would unblock
//! them.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{IntoRawFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::{BufRingEntry, Fd};
use io_uring::{IoUring, cqueue, opcode, squeue};

use crate::{Args, BUF_SIZE};

/// Buffers in the provided-buffer ring (a power of two): 16 MiB of 16 KiB buffers. The tests set
/// `WTGATE_RELAY_URING_BUFS` (a power of two, 1 to 32768) lower, to run out of buffers on purpose.
const NBUFS: u16 = 1024;

fn nbufs() -> io::Result<u16> {
    let Ok(v) = std::env::var("WTGATE_RELAY_URING_BUFS") else {
        return Ok(NBUFS);
    };
    match v.parse::<u16>() {
        Ok(n) if n.is_power_of_two() && n <= 32768 => Ok(n),
        _ => Err(io::Error::other(format!(
            "WTGATE_RELAY_URING_BUFS={v}: not a power of two from 1 to 32768"
        ))),
    }
}
/// The buffer group id of that ring.
const BGID: u16 = 0;
/// SQ entries; the CQ gets four times as many (multishot recvs post many CQEs per SQE).
const SQ_ENTRIES: u32 = 1024;
/// A direction with this many buffers queued stops receiving until it is down to `LOW_WATER`.
const HIGH_WATER: usize = 16;
const LOW_WATER: usize = 4;

/// `user_data` of the multishot accept.
const UD_ACCEPT: u64 = u64::MAX;
/// `user_data` of SQEs whose completion needs no handling (closes).
const UD_IGNORE: u64 = u64::MAX - 1;
/// The buffer id that stands for a direction's own buffer in its queue (ring ids are < 32768).
const OWN: u16 = u16::MAX;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Connect = 0,
    Recv = 1,
    Send = 2,
    Shutdown = 3,
    Cancel = 4,
    /// A single-shot recv into the direction's own buffer.
    RecvOwn = 5,
}

/// `user_data` of a connection's op: generation (32 bits) | slot (27 bits) | op (4) | direction (1).
fn ud(slot: usize, generation: u32, op: Op, dir: usize) -> u64 {
    (u64::from(generation) << 32) | ((slot as u64) << 5) | ((op as u64) << 1) | dir as u64
}

fn ud_parts(ud: u64) -> (usize, u32, Op, usize) {
    let op = match (ud >> 1) & 0xf {
        0 => Op::Connect,
        1 => Op::Recv,
        2 => Op::Send,
        3 => Op::Shutdown,
        4 => Op::Cancel,
        _ => Op::RecvOwn,
    };
    (
        ((ud >> 5) & 0x7ff_ffff) as usize,
        (ud >> 32) as u32,
        op,
        (ud & 1) as usize,
    )
}

/// Runs the relay until the process is killed.
pub fn run(args: Args) -> io::Result<()> {
    args.copy_only("relay-uring")?;
    crate::pin(args.core).map_err(io::Error::other)?;
    let (ring, setup) = make_ring()?;
    let listener = crate::listener(args.listen)?;
    let addr = listener.local_addr()?;
    let nbufs = nbufs()?;
    let mut relay = Relay::new(ring, listener.into_raw_fd(), args.backend, nbufs)?;
    crate::announce(
        "relay-uring",
        addr,
        &format!(
            "io-uring 0.7, ring {setup}, {SQ_ENTRIES} SQ / {} CQ entries, multishot accept + \
             multishot recv, buffer ring of {nbufs} × {} KiB",
            SQ_ENTRIES * 4,
            BUF_SIZE / 1024
        ),
    );
    relay.run()
}

/// The ring with the best setup flags this kernel takes, and their names.
fn make_ring() -> io::Result<(IoUring, &'static str)> {
    type Setup = fn(&mut io_uring::Builder);
    let setups: [(&str, Setup); 3] = [
        ("SINGLE_ISSUER|DEFER_TASKRUN", |b| {
            b.setup_single_issuer().setup_defer_taskrun();
        }),
        ("COOP_TASKRUN", |b| {
            b.setup_coop_taskrun();
        }),
        ("no setup flags", |_| {}),
    ];
    let mut last = None;
    for (name, set) in setups {
        let mut b = IoUring::builder();
        b.setup_cqsize(SQ_ENTRIES * 4).setup_submit_all();
        set(&mut b);
        match b.build(SQ_ENTRIES) {
            Ok(ring) => return Ok((ring, name)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("io_uring_setup failed")))
}

/// The provided-buffer ring and the buffers it hands out, both in anonymous mappings that live
/// as long as the `IoUring` they are registered with (the `Relay` drops the ring first).
struct BufRing {
    /// `n` entries the kernel takes buffers from; the tail is in the first entry.
    entries: *mut BufRingEntry,
    /// Buffers, a power of two.
    n: u16,
    /// `n × BUF_SIZE` bytes; buffer `bid` starts at `bid × BUF_SIZE`. Only the kernel reads or
    /// writes these bytes (recv into them, send from them); this process only passes pointers.
    bufs: *mut u8,
    /// Our copy of the tail: entries below it are the kernel's.
    tail: u16,
    /// Buffers given back since the tail was last published.
    dirty: bool,
}

impl BufRing {
    fn new(ring: &IoUring, n: u16) -> io::Result<BufRing> {
        let entries: *mut BufRingEntry = mmap(Self::ring_len(n))?.cast();
        let bufs = match mmap(usize::from(n) * BUF_SIZE) {
            Ok(b) => b,
            Err(e) => {
                munmap(entries.cast(), Self::ring_len(n));
                return Err(e);
            }
        };
        let mut br = BufRing {
            entries,
            n,
            bufs,
            tail: 0,
            dirty: false,
        };
        // SAFETY: `entries` is a page-aligned mapping of n entries that stays mapped until `br` is
        // dropped, and `Relay` drops its `IoUring` (which unregisters it) before `br`.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries as u64, n, BGID, 0)?
        };
        for bid in 0..n {
            br.give(bid);
        }
        br.publish();
        Ok(br)
    }

    fn ring_len(n: u16) -> usize {
        // mmap rounds it up to whole pages and page-aligns it, as the kernel requires.
        usize::from(n) * std::mem::size_of::<BufRingEntry>()
    }

    /// Hands buffer `bid` back to the kernel (visible after `publish`).
    fn give(&mut self, bid: u16) {
        let i = usize::from(self.tail & (self.n - 1));
        // SAFETY: i < n, so the entry is inside the mapping; the kernel only reads entries between
        // its head and the published tail, and this one is at or past our tail, i.e. not yet
        // published (the ring never holds more than n buffers, as there are only n).
        let e = unsafe { &mut *self.entries.add(i) };
        e.set_addr(self.buf(bid) as u64);
        e.set_len(BUF_SIZE as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        self.dirty = true;
    }

    /// Makes the buffers given back since the last call visible to the kernel.
    fn publish(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        // SAFETY: the tail is the u16 at offset 14 of the first entry, inside the mapping and
        // 2-aligned; the kernel reads it atomically, so we write it atomically, with Release so
        // that the entries written before it are visible first.
        unsafe {
            let tail = BufRingEntry::tail(self.entries).cast_mut();
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }

    fn buf(&self, bid: u16) -> *mut u8 {
        // SAFETY: bid < n (the kernel only reports ids we gave it), so the offset is inside
        // the `bufs` mapping.
        unsafe { self.bufs.add(usize::from(bid) * BUF_SIZE) }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        munmap(self.entries.cast(), Self::ring_len(self.n));
        munmap(self.bufs, usize::from(self.n) * BUF_SIZE);
    }
}

fn mmap(len: usize) -> io::Result<*mut u8> {
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing; nothing else
    // is affected. The result is checked against MAP_FAILED.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(p.cast())
}

fn munmap(p: *mut u8, len: usize) {
    // SAFETY: `p` and `len` are those of a mapping made by `mmap` above, unmapped only here.
    unsafe { libc::munmap(p.cast(), len) };
}

/// One direction of a connection: bytes from `fds[d]` to `fds[1 - d]`.
#[derive(Default)]
struct Dir {
    /// Received buffers not yet fully sent: (buffer id, length).
    queue: VecDeque<(u16, u32)>,
    /// Bytes of the front buffer already sent.
    sent: u32,
    /// A send SQE is in flight (at most one, so bytes stay in order).
    sending: bool,
    /// A recv is armed: the multishot one (until its final CQE, without `F_MORE`) or the one into
    /// the own buffer. Never two at once, or bytes could be reordered.
    armed: bool,
    /// The own buffer holds bytes not yet sent, or a recv into it is pending.
    own_busy: bool,
    /// A cancel of that recv has been submitted (flow control).
    cancelling: bool,
    /// The recv ended with ENOBUFS and waits in `starved` for buffers.
    starved: bool,
    /// The source sent FIN.
    eof: bool,
    /// The half-close has been passed on to the destination.
    shut: bool,
}

#[derive(PartialEq, Eq)]
enum State {
    Free,
    Connecting,
    Open,
    /// Reset or failed: both sockets shut down, waiting for the ops in flight to end.
    Closing,
}

struct Conn {
    generation: u32,
    state: State,
    /// 0: client, 1: backend.
    fds: [RawFd; 2],
    dirs: [Dir; 2],
    /// SQEs whose last CQE has not come yet; the slot is reused only at 0.
    inflight: u32,
    /// Each direction's own buffer (`BUF_SIZE` bytes, null until first needed), kept with the slot.
    own: [*mut u8; 2],
}

impl Drop for Conn {
    fn drop(&mut self) {
        for p in self.own {
            if !p.is_null() {
                // SAFETY: `p` came from `Box::into_raw` of a `BUF_SIZE` boxed slice in `recv_own`
                // and is freed only here; conns are dropped after the ring (field order in
                // `Relay`), so no recv into it is pending.
                drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, BUF_SIZE)) });
            }
        }
    }
}

struct Relay {
    // Field order is drop order: the ring (which unregisters the buffer ring and cancels every
    // op) before the buffers and the connections' own buffers.
    ring: IoUring,
    bufs: BufRing,
    listen_fd: RawFd,
    backend: socket2::SockAddr,
    conns: Vec<Conn>,
    free: Vec<usize>,
    /// (slot, generation, direction) of recvs that ended with ENOBUFS.
    starved: Vec<(usize, u32, usize)>,
    /// Completions of the current turn, copied out of the CQ.
    cqes: Vec<(u64, i32, u32)>,
    /// SQEs that found the SQ full and the kernel busy, in order.
    backlog: VecDeque<squeue::Entry>,
}

impl Relay {
    fn new(
        ring: IoUring,
        listen_fd: RawFd,
        backend: std::net::SocketAddr,
        nbufs: u16,
    ) -> io::Result<Relay> {
        let bufs = BufRing::new(&ring, nbufs)?;
        Ok(Relay {
            ring,
            bufs,
            listen_fd,
            backend: backend.into(),
            conns: Vec::new(),
            free: Vec::new(),
            starved: Vec::new(),
            cqes: Vec::with_capacity(SQ_ENTRIES as usize * 4),
            backlog: VecDeque::new(),
        })
    }

    fn run(&mut self) -> io::Result<()> {
        self.arm_accept();
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                // CQ overflowed: drain it, then submit again.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => return Err(e),
            }
            let mut cqes = std::mem::take(&mut self.cqes);
            cqes.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            for &(ud, res, flags) in &cqes {
                self.complete(ud, res, flags);
            }
            cqes.clear();
            self.cqes = cqes;
            if self.bufs.dirty {
                self.bufs.publish();
                self.feed_starved();
            }
            self.flush_backlog();
        }
    }

    /// Queues an SQE. A full SQ is flushed to the kernel first; if the kernel takes no more
    /// (EBUSY: completions to reap first), the SQE waits in `backlog` for the next turn.
    fn push(&mut self, e: squeue::Entry) {
        if !self.backlog.is_empty() || !self.try_push(&e) {
            self.backlog.push_back(e);
        }
    }

    /// Puts `e` in the SQ, flushing a full SQ once; false if it still does not fit.
    fn try_push(&mut self, e: &squeue::Entry) -> bool {
        for _ in 0..2 {
            // SAFETY: every SQE made here points only at memory that outlives it: buffers of the
            // buffer ring and the connections' own buffers (both freed only after the ring), the
            // backend address in `self`, or nothing.
            if unsafe { self.ring.submission().push(e) }.is_ok() {
                return true;
            }
            match self.ring.submit() {
                Ok(_) => {}
                Err(err) if matches!(err.raw_os_error(), Some(libc::EBUSY | libc::EINTR)) => {}
                Err(err) => panic!("relay-uring: submit: {err}"),
            }
        }
        false
    }

    /// Moves SQEs left over from a full SQ into it, as far as they fit.
    fn flush_backlog(&mut self) {
        while let Some(e) = self.backlog.pop_front() {
            if !self.try_push(&e) {
                self.backlog.push_front(e);
                return;
            }
        }
    }

    fn arm_accept(&mut self) {
        let e = opcode::AcceptMulti::new(Fd(self.listen_fd))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(UD_ACCEPT);
        self.push(e);
    }

    fn complete(&mut self, ud: u64, res: i32, flags: u32) {
        match ud {
            UD_ACCEPT => return self.accepted(res, flags),
            UD_IGNORE => return,
            _ => {}
        }
        let (slot, generation, op, d) = ud_parts(ud);
        let c = &mut self.conns[slot];
        debug_assert!(c.generation == generation && c.state != State::Free);
        let last = !(op == Op::Recv && cqueue::more(flags));
        if last {
            c.inflight -= 1;
        }
        match op {
            Op::Connect => self.connected(slot, res),
            Op::Recv => self.received(slot, d, res, flags),
            Op::RecvOwn => self.received_own(slot, d, res),
            Op::Send => self.sent(slot, d, res),
            Op::Shutdown => {
                // Passed on; nothing else to do (a peer that is gone already makes ENOTCONN).
            }
            Op::Cancel => {}
        }
        self.settle(slot);
    }

    fn accepted(&mut self, res: i32, flags: u32) {
        // An error (EMFILE, say) ends the multishot accept; it is re-armed at once, as a bench
        // relay has no better answer.
        if !cqueue::more(flags) {
            self.arm_accept();
        }
        if res < 0 {
            eprintln!(
                "relay-uring: accept: {}",
                io::Error::from_raw_os_error(-res)
            );
            return;
        }
        let client = res;
        let backend = match self.backend_socket() {
            Ok(fd) => fd,
            Err(e) => {
                eprintln!("relay-uring: socket: {e}");
                self.close_fd(client);
                return;
            }
        };
        set_nodelay(client);
        let slot = self.free.pop().unwrap_or_else(|| {
            self.conns.push(Conn {
                generation: 0,
                state: State::Free,
                fds: [-1, -1],
                dirs: Default::default(),
                inflight: 0,
                own: [std::ptr::null_mut(); 2],
            });
            self.conns.len() - 1
        });
        let c = &mut self.conns[slot];
        c.state = State::Connecting;
        c.fds = [client, backend];
        c.dirs = Default::default();
        c.inflight = 1;
        let e = opcode::Connect::new(
            Fd(backend),
            self.backend.as_ptr().cast(),
            self.backend.len(),
        )
        .build()
        .user_data(ud(slot, c.generation, Op::Connect, 0));
        self.push(e);
    }

    fn backend_socket(&self) -> io::Result<RawFd> {
        let s = socket2::Socket::new(self.backend.domain(), socket2::Type::STREAM, None)?;
        s.set_tcp_nodelay(true)?;
        Ok(s.into_raw_fd())
    }

    fn connected(&mut self, slot: usize, res: i32) {
        if res < 0 {
            eprintln!(
                "relay-uring: connect to backend: {}",
                io::Error::from_raw_os_error(-res)
            );
            self.abort(slot);
            return;
        }
        self.conns[slot].state = State::Open;
        self.arm_recv(slot, 0);
        self.arm_recv(slot, 1);
    }

    /// Arms the multishot recv of direction `d` unless it is armed, not wanted (EOF, closing),
    /// waiting for buffers, or its queue is above the low-water mark.
    fn arm_recv(&mut self, slot: usize, d: usize) {
        let c = &mut self.conns[slot];
        let dir = &mut c.dirs[d];
        if c.state != State::Open
            || dir.armed
            || dir.eof
            || dir.starved
            || dir.queue.len() > LOW_WATER
        {
            return;
        }
        dir.armed = true;
        c.inflight += 1;
        let e = opcode::RecvMulti::new(Fd(c.fds[d]), BGID)
            .build()
            .user_data(ud(slot, c.generation, Op::Recv, d));
        self.push(e);
    }

    fn received(&mut self, slot: usize, d: usize, res: i32, flags: u32) {
        let c = &mut self.conns[slot];
        let more = cqueue::more(flags);
        let dir = &mut c.dirs[d];
        if !more {
            dir.armed = false;
            dir.cancelling = false;
        }
        if let Some(bid) = cqueue::buffer_select(flags) {
            if res > 0 && c.state == State::Open {
                dir.queue.push_back((bid, res as u32));
            } else {
                self.bufs.give(bid);
            }
        }
        if c.state != State::Open {
            return;
        }
        match res {
            1.. => {
                self.send_next(slot, d);
                let c = &mut self.conns[slot];
                let dir = &mut c.dirs[d];
                if dir.queue.len() >= HIGH_WATER && dir.armed && !dir.cancelling {
                    dir.cancelling = true;
                    c.inflight += 1;
                    let target = ud(slot, c.generation, Op::Recv, d);
                    let e = opcode::AsyncCancel::new(target).build().user_data(ud(
                        slot,
                        c.generation,
                        Op::Cancel,
                        d,
                    ));
                    self.push(e);
                }
            }
            0 => {
                dir.eof = true;
                self.pass_eof(slot, d);
            }
            e if e == -libc::ENOBUFS => {
                if !dir.own_busy && !more {
                    return self.recv_own(slot, d);
                }
                if !dir.starved {
                    dir.starved = true;
                    self.starved.push((slot, c.generation, d));
                }
            }
            e if e == -libc::ECANCELED => {}
            _ => return self.abort(slot),
        }
        if !more {
            self.arm_recv(slot, d);
        }
    }

    /// One recv into the direction's own buffer, after the shared ring ran dry.
    fn recv_own(&mut self, slot: usize, d: usize) {
        let c = &mut self.conns[slot];
        if c.own[d].is_null() {
            c.own[d] = Box::into_raw(vec![0u8; BUF_SIZE].into_boxed_slice()).cast();
        }
        let dir = &mut c.dirs[d];
        dir.armed = true;
        dir.own_busy = true;
        c.inflight += 1;
        let e = opcode::Recv::new(Fd(c.fds[d]), c.own[d], BUF_SIZE as u32)
            .build()
            .user_data(ud(slot, c.generation, Op::RecvOwn, d));
        self.push(e);
    }

    fn received_own(&mut self, slot: usize, d: usize, res: i32) {
        let c = &mut self.conns[slot];
        let dir = &mut c.dirs[d];
        dir.armed = false;
        if res > 0 && c.state == State::Open {
            dir.queue.push_back((OWN, res as u32));
        } else {
            dir.own_busy = false;
        }
        if c.state != State::Open {
            return;
        }
        match res {
            1.. => self.send_next(slot, d),
            0 => {
                dir.eof = true;
                self.pass_eof(slot, d);
            }
            _ => return self.abort(slot),
        }
        self.arm_recv(slot, d);
    }

    /// Sends the rest of the front buffer of direction `d`, if any and no send is in flight.
    fn send_next(&mut self, slot: usize, d: usize) {
        let c = &mut self.conns[slot];
        let dir = &mut c.dirs[d];
        if dir.sending || c.state != State::Open {
            return;
        }
        let Some(&(bid, len)) = dir.queue.front() else {
            return;
        };
        dir.sending = true;
        c.inflight += 1;
        let base = if bid == OWN {
            c.own[d]
        } else {
            self.bufs.buf(bid)
        };
        // SAFETY: `sent < len ≤ BUF_SIZE`, so the pointer stays inside the buffer.
        let p = unsafe { base.add(dir.sent as usize) };
        let e = opcode::Send::new(Fd(c.fds[1 - d]), p, len - dir.sent)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(ud(slot, c.generation, Op::Send, d));
        self.push(e);
    }

    fn sent(&mut self, slot: usize, d: usize, res: i32) {
        let c = &mut self.conns[slot];
        let dir = &mut c.dirs[d];
        dir.sending = false;
        if c.state != State::Open {
            return;
        }
        if res <= 0 {
            // EPIPE, ECONNRESET: the destination is gone. (0 cannot come from a non-empty send.)
            return self.abort(slot);
        }
        dir.sent += res as u32;
        let &(bid, len) = dir
            .queue
            .front()
            .expect("a send completed for an empty queue");
        if dir.sent >= len {
            dir.queue.pop_front();
            dir.sent = 0;
            if bid == OWN {
                dir.own_busy = false;
                dir.starved = false; // it may read into its own buffer again
            } else {
                self.bufs.give(bid);
            }
        }
        if !self.conns[slot].dirs[d].queue.is_empty() {
            self.send_next(slot, d);
        } else {
            self.pass_eof(slot, d);
        }
        self.arm_recv(slot, d);
    }

    /// Once direction `d` has seen EOF and sent everything, shuts the destination's write side.
    fn pass_eof(&mut self, slot: usize, d: usize) {
        let c = &mut self.conns[slot];
        let dir = &mut c.dirs[d];
        if !dir.eof || dir.shut || dir.sending || !dir.queue.is_empty() {
            return;
        }
        dir.shut = true;
        c.inflight += 1;
        let e = opcode::Shutdown::new(Fd(c.fds[1 - d]), libc::SHUT_WR)
            .build()
            .user_data(ud(slot, c.generation, Op::Shutdown, d));
        self.push(e);
    }

    /// A reset, a failed send or connect: both sockets shut down at once, which ends the armed
    /// recvs (they read EOF) and the sends in flight; the slot is freed when they have ended.
    fn abort(&mut self, slot: usize) {
        let c = &mut self.conns[slot];
        if c.state == State::Closing {
            return;
        }
        c.state = State::Closing;
        for fd in c.fds {
            // SAFETY: shutdown(2) on descriptors this slot owns and has not closed yet; it touches
            // no memory.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
    }

    /// Frees the slot once nothing is in flight and both directions are done (or it is closing).
    fn settle(&mut self, slot: usize) {
        let c = &mut self.conns[slot];
        let done = c.state == State::Closing || c.dirs.iter().all(|d| d.shut);
        if c.inflight > 0 || !done || c.state == State::Free {
            return;
        }
        c.state = State::Free;
        c.generation = c.generation.wrapping_add(1);
        let fds = c.fds;
        let bids: Vec<u16> = c
            .dirs
            .iter_mut()
            .flat_map(|d| d.queue.drain(..).map(|(bid, _)| bid))
            .filter(|&bid| bid != OWN)
            .collect();
        for bid in bids {
            self.bufs.give(bid);
        }
        for fd in fds {
            self.close_fd(fd);
        }
        self.free.push(slot);
    }

    fn close_fd(&mut self, fd: RawFd) {
        let e = opcode::Close::new(Fd(fd)).build().user_data(UD_IGNORE);
        self.push(e);
    }

    /// After buffers came back: re-arms the recvs that found none.
    fn feed_starved(&mut self) {
        let starved = std::mem::take(&mut self.starved);
        for (slot, generation, d) in starved {
            let c = &mut self.conns[slot];
            if c.generation == generation && c.dirs[d].starved {
                c.dirs[d].starved = false;
                self.arm_recv(slot, d);
            }
        }
    }
}

fn set_nodelay(fd: RawFd) {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from `one`, which lives across the call.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&raw const one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips() {
        for (slot, generation, op, d) in [
            (0, 0, Op::Connect, 0),
            (7, 3, Op::Recv, 1),
            ((1 << 27) - 1, u32::MAX, Op::Cancel, 1),
            (12345, 77, Op::Send, 0),
            (1, 1, Op::Shutdown, 1),
        ] {
            let u = ud(slot, generation, op, d);
            assert_ne!(u, UD_ACCEPT);
            assert_ne!(u, UD_IGNORE);
            assert_eq!(ud_parts(u), (slot, generation, op, d));
        }
    }
}
